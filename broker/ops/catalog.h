/*
 * catalog: the rows of the image catalog, the `images` table of broker.db.
 * The one module that reads the table and that asks persist to write it;
 * image_ops (the requests) and blobgc (quotas and the collection's keep
 * list) ask it. One row per (owner, name, tag); owner "" is a pool image.
 *
 * Reads run in the loop's open transaction, so a row staged by this batch
 * is seen by the next request of the batch. Functions that read return -1
 * on a database error; nothing here answers a request.
 */
#ifndef TT_BROKER_CATALOG_H
#define TT_BROKER_CATALOG_H

#include "model.h"
#include "ttblob.h"

#define CATALOG_READINESS_MAX 256 /* bytes of a default readiness spec, with its NUL */

typedef struct {
    char owner[TT_MAX_NAME + 1], name[65], tag[65], digest[TT_DIGEST_LEN + 1], kind[8];
    uint64_t size;
    int64_t created_at;
    char blobs[1024]; /* "digest size file\n" per blob */
    char readiness[CATALOG_READINESS_MAX], user[TT_MAX_NAME + 1];
    uint32_t min_disk_mib;
} catalog_row_t;

/* The row ref names as the tenant sees it: its own first, then the pool's.
 * 1 found, 0 not, -1 on a database error. */
int catalog_find(broker_t *self, const char *tenant, const tt_image_ref_t *ref, catalog_row_t *r);

/* Whether digest is a blob of an image tenant sees (a pool image or its
 * own): 1 yes, 0 no, -1 on a database error. */
int catalog_visible_blob(broker_t *self, const char *tenant, const char *digest);

/* Rows other than r that name r's digest (0 on a database error). */
int catalog_digest_others(broker_t *self, const catalog_row_t *r);

/* Calls fn for each row in (name, tag, owner) order, at most limit rows:
 * every row with all, else the pool's and tenant's. fn returns nonzero to
 * stop. 0, or -1 on a database error. */
int catalog_each(broker_t *self, const char *tenant, bool all, int limit,
                 int (*fn)(void *arg, const catalog_row_t *r), void *arg);

/* The tenant's private images: their bytes (each tag counts) and count.
 * 0 / -1. */
int catalog_tenant_usage(broker_t *self, const char *tenant, uint64_t *bytes, uint64_t *images);

/* The tenant's private image count, and whether name:tag is one of them.
 * 0 / -1. */
int catalog_tenant_has(broker_t *self, const char *tenant, const char *name, const char *tag,
                       int64_t *count, bool *same);

/* Calls fn with each row's digest and blobs text (either may be NULL).
 * 0 when every row was read, -1 otherwise (a partial list). */
int catalog_each_digest(broker_t *self,
                        void (*fn)(void *arg, const char *digest, const char *blobs), void *arg);

/* Stages r (insert or replace) / removes the row, in the batch's
 * transaction; self->failed tells a write that failed. */
void catalog_put(broker_t *self, const catalog_row_t *r);
void catalog_delete(broker_t *self, const catalog_row_t *r);

#endif
