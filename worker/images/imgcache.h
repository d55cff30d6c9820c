/*
 * imgcache: this host's cache of fetched image blobs, with a size limit
 * and least-recently-used eviction of blobs no VM uses.
 *
 * Layout under the cache directory (ttworker --image-cache DIR):
 *     blobs/<hex>        a complete blob, verified against its digest
 *     blobs/<hex>.part   a fetch in progress (worker/images/imgfetch.c), resumed
 *                        after a restart; never used, never indexed
 *     img/<hex>/...      a materialized image: hard links named like an
 *                        --images entry (disk.qcow2, kernel, initrd), so
 *                        the qemu engine boots it like a host-local image
 * The index (digest, size, last use, users) is memory; last use is also
 * the blob's mtime, so the LRU order survives a restart. A blob with
 * users (imgcache_acquire) is never evicted; imgcache_reserve makes room
 * for a fetch before it starts by evicting unused blobs oldest first, and
 * refuses when the blobs in use leave no room. The digests held are what
 * READY advertises.
 *
 * Owned by one thread (the worker's loop); imgcache_verify is the one
 * slow call and is for another thread (imgfetch verifies before use).
 */
#ifndef TT_WORKER_IMGCACHE_H
#define TT_WORKER_IMGCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttblob.h"

typedef struct imgcache_t imgcache_t;

/* Opens (making) DIR/blobs and DIR/img and indexes the complete blobs.
 * limit is in bytes (0: no limit). NULL with a reason. */
imgcache_t *imgcache_new(const char *dir, uint64_t limit, char *err, size_t errlen);
void imgcache_destroy(imgcache_t **self_p);
/* Evicts unused blobs down to the limit (a limit lowered across a
 * restart). Call once the blobs' users are known (after the VMs of
 * worker.db acquired theirs), never before: a blob in use stays. */
void imgcache_trim(imgcache_t *self);

/* DIR/blobs: where imgfetch writes. */
const char *imgcache_blob_dir(const imgcache_t *self);
/* The path of a blob (part: its .part) into buf. 0 / -1 on a bad digest. */
int imgcache_path(const imgcache_t *self, const char *digest, bool part, char *buf, size_t len);

bool imgcache_has(const imgcache_t *self, const char *digest);
/* Indexes a blob a fetch has just completed (its file is in place) and
 * releases `reserved` bytes of the reservation made for it. 0 / -1. */
int imgcache_add(imgcache_t *self, const char *digest, uint64_t reserved, char *err, size_t errlen);
/* Makes room for size more bytes, evicting unused blobs least recently
 * used first, and holds it until imgcache_add or imgcache_unreserve.
 * -1 with a reason when blobs in use leave no room. */
int imgcache_reserve(imgcache_t *self, uint64_t size, char *err, size_t errlen);
void imgcache_unreserve(imgcache_t *self, uint64_t size);
/* A VM uses the blob: one more user, and it becomes the most recent.
 * -1 if the blob is not held. */
int imgcache_acquire(imgcache_t *self, const char *digest);
void imgcache_release(imgcache_t *self, const char *digest);
int imgcache_users(const imgcache_t *self, const char *digest);
/* Drops a blob from the index and the disk (found corrupted). */
void imgcache_forget(imgcache_t *self, const char *digest);

/* Other things the cache's limit covers (the templates of memory
 * snapshots, worker/snapops.c), in the same least-recently-used order:
 *   used          bytes they hold (counted in imgcache_used and the limit)
 *   oldest        0 and the tick of the least recently used one no VM
 *                 uses, or -1 if there is none
 *   evict_oldest  remove that one
 *   blob_gone     a blob left the cache: drop what was made from it
 * Ticks come from imgcache_tick. x NULL removes them. */
typedef struct {
    void *arg;
    uint64_t (*used)(void *arg);
    int (*oldest)(void *arg, uint64_t *tick);
    void (*evict_oldest)(void *arg);
    void (*blob_gone)(void *arg, const char *digest);
} imgcache_extra_t;
void imgcache_set_extra(imgcache_t *self, const imgcache_extra_t *x);
/* A fresh last-use tick (wall-clock ns, strictly increasing): a file
 * whose mtime is set to it keeps its place in the order across a restart. */
uint64_t imgcache_tick(imgcache_t *self);

/* Digests held, sorted (for READY); *n set. Valid until the next call
 * that changes the cache. */
const char **imgcache_digests(imgcache_t *self, size_t *n);
/* Bytes held: blobs and the extra entries. */
uint64_t imgcache_used(const imgcache_t *self);
uint64_t imgcache_limit(const imgcache_t *self);

/* Makes img/<image hex>/ with a hard link per file: for a qcow2 image
 * (manifest NULL) disk.qcow2 -> blobs/<image hex>; for a directory image
 * each manifest file -> its blob. Every blob must be held. The directory
 * appears by rename, whole; an existing one is rebuilt when a link is no
 * longer the blob's inode (the blob was found corrupted and fetched
 * again). out gets its path. 0 / -1 with a reason. */
int imgcache_materialize(imgcache_t *self, const char *image_digest, const tt_manifest_t *manifest,
                         char *out, size_t outlen, char *err, size_t errlen);

/* Re-hashes path and compares with digest: 0 when it matches, -1 with a
 * reason. Slow (reads the whole file): call it off the loop thread. */
int imgcache_verify(const char *path, const char *digest, char *err, size_t errlen);

#endif
