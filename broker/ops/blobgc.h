/*
 * blobgc: what the blob store may hold, per tenant, and what it may drop.
 *
 * A push is granted before its bytes arrive and registered only at commit,
 * so a greedy tenant could fill the broker's disk with blobs it never
 * commits, or with ever more private images. This module keeps a ledger
 * of the grants each push got (tenant, digest, size, expiry), refuses a
 * private push whose bytes (the tenant's registered private images plus
 * its grants still open plus this push) pass --max-tenant-image-mib, caps
 * the grants open per tenant and the images per tenant, and every few
 * minutes has the blob server delete complete blobs that no catalog image,
 * no VM (its image_digest / image_blobs) and no open grant names, once they are older than the grace time
 * (--blob-gc-grace). Pool images (admin pushes) are not charged to a
 * tenant. Depends on the model, the store and blobsrv.
 */
#ifndef TT_BROKER_BLOBGC_H
#define TT_BROKER_BLOBGC_H

#include "handler.h"

#define BLOBGC_TENANT_GRANTS 64   /* blobs granted and not committed, per tenant */
#define BLOBGC_TENANT_IMAGES 1000 /* private images (name:tag) per tenant */
#define BLOBGC_GRANT_TTL_S 7200   /* a grant not committed by then is dropped */
#define BLOBGC_TOTAL_GRANTS 100000

/* Before image_push grants the n blobs (digests[i], sizes[i]) it lacks:
 * charges them to the tenant (not for a pool push by an admin) and notes
 * the grants. 0, or a status with the reason in c->msg (nothing noted). */
int blobgc_reserve(handler_ctx_t *c, bool pool, const char *const *digests,
                   const uint64_t *sizes, size_t n, uint64_t image_size);
/* image_commit of a new private (name, tag) of tenant: 0, or QUOTA_EXCEEDED
 * when the tenant has BLOBGC_TENANT_IMAGES already. */
int blobgc_may_register(handler_ctx_t *c, const char *name, const char *tag);
/* A verified upload of digest by the blob server peer user (its ZAP
 * User-Id: the client key under CURVE, "" without): every live grant of
 * that digest to that user is proven (the tenant holds the bytes). */
void blobgc_uploaded(broker_t *self, const char *digest, const char *user);
/* Whether tenant proved it holds digest (blobgc_uploaded since its grant). */
bool blobgc_proven(broker_t *self, const char *tenant, const char *digest);
/* The image's blobs are registered: their grants leave the ledger (and
 * the blob server's grant of a digest no live grant names). */
void blobgc_committed(broker_t *self, const char *tenant, const char *const *digests, size_t n);
/* On the loop's timers: expires grants, runs the collection when due. */
void blobgc_tick(broker_t *self, int64_t now_ms);
/* Runs the collection now (tests, and after many removals). */
void blobgc_collect(broker_t *self);
void blobgc_destroy(broker_t *self);

#endif
