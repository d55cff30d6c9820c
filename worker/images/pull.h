/*
 * pull: the worker's catalog images (issue 12). It owns the host's image
 * cache (imgcache.c) and the blob fetcher (imgfetch.c, its own thread) and
 * turns a VmSpec's image_digest / image_kind / image_blobs into a
 * materialized, verified image directory the qemu engine boots like a
 * host-local one (cache/img/<hex>/disk.qcow2, kernel, initrd).
 *
 * Rounds. pull_want() joins the round in progress for that image or
 * starts a new one, and returns its ticket. A round ensures every blob
 * of the image through the fetcher, which re-hashes a cached copy (a
 * corrupted one is deleted and fetched again, never reported done) and
 * fetches a missing one (resuming a .part left by an earlier run, verified
 * before it is renamed into place); room for a missing blob is reserved
 * first (LRU eviction of blobs no VM uses, refused when blobs in use
 * leave no room). When every blob of the round is done the image is
 * materialized; pull_state(ticket) then says READY with its directory, or
 * FAILED with the reason. Twenty VMs of one new image asking together are
 * one round: one fetch of each blob, one verification.
 *
 * Users. pull_acquire() / pull_release() count a VM on every blob of its
 * image (from the image's manifest blob for a directory image), so an
 * eviction never removes the blobs of an image a VM uses.
 *
 * The fetcher's endpoint comes with each spec (VmSpec.blobs_endpoint, the
 * broker's blob server); a new endpoint restarts the fetcher and asks
 * again for the blobs in progress (their .part files resume).
 *
 * Owned by the worker's loop thread; never blocks it (the fetch and the
 * hashing run in the fetcher's thread).
 */
#ifndef TT_WORKER_PULL_H
#define TT_WORKER_PULL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgcache.h"
#include "ttproto.h"

typedef enum { PULL_BUSY = 0, PULL_READY, PULL_FAILED } pull_state_t;

typedef struct {
    const char *dir;        /* the cache directory (made if missing) */
    uint64_t limit;         /* bytes, 0 = no limit */
    const char *curve_cert; /* this host's certificate for the blob server's CURVE, or NULL */
    const char *server_key; /* the blob server's public key (Z85), or NULL */
} pull_opts_t;

typedef struct pull_t pull_t;

pull_t *pull_new(const pull_opts_t *opts, char *err, size_t errlen);
void pull_destroy(pull_t **self_p);

/* Checks the image fields of spec (digest, kind, blobs, endpoint) and
 * joins or starts a round for its image. 0 with *ticket, or -1 with a
 * reason (a bad description, no room in the cache, a fetcher that cannot
 * start). */
int pull_want(pull_t *self, const Ttfleet__VmSpec *spec, uint64_t *ticket, char *err,
              size_t errlen);
/* Where the round of ticket is: BUSY (done/total bytes so far), READY
 * (dir: the materialized image) or FAILED (err). */
pull_state_t pull_state(pull_t *self, const char *digest, uint64_t ticket, uint64_t *done,
                        uint64_t *total, char *dir, size_t dirlen, char *err, size_t errlen);
/* Evicts unused images down to the limit; call after the VMs loaded at
 * start acquired theirs. */
void pull_trim(pull_t *self);
/* Reads the fetcher's events without waiting. True if a round moved. */
bool pull_poll(pull_t *self);
/* Whether any round is in progress (the loop then polls pull_poll). */
bool pull_busy(const pull_t *self);

/* One more / one less VM on every blob of the image. acquire: 0, or -1
 * if the image is not (completely) held. */
int pull_acquire(pull_t *self, const char *image_digest);
void pull_release(pull_t *self, const char *image_digest);

/* cache/img: where materialized images are (the engines' image root for
 * VMs of catalog images). */
const char *pull_img_dir(const pull_t *self);
/* The digests held (sorted), for READY; valid until the next call that
 * changes the cache. */
const char **pull_digests(pull_t *self, size_t *n);
uint64_t pull_used(const pull_t *self);
uint64_t pull_limit(const pull_t *self);
/* True once after the set of digests held changed (fetch, eviction). */
bool pull_changed(pull_t *self);
/* The blob cache itself (imgcache.h): other things in its accounting
 * register there (snapops.h). */
imgcache_t *pull_cache(pull_t *self);
/* Blobs fetched (moved over the network, not just verified) since start. */
uint64_t pull_fetched(const pull_t *self);

#endif
