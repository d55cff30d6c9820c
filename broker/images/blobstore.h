/*
 * blobstore: the broker's content-addressed blob files.
 *
 * Layout under the store's directory (STATE/blobs):
 *     sha256/<hex>         a complete blob whose content hashes to <hex>
 *     sha256/<hex>.part    an upload in progress: the bytes received so far
 * A complete name appears only by rename(2) after the digest of the whole
 * .part matched and the data was fsynced, so a reader that finds
 * sha256/<hex> finds the whole verified blob; a crash leaves at most a
 * .part, which the next upload of that digest resumes (its bytes are
 * re-hashed on resume; the final check catches anything the crash spoiled).
 * Paths are built only from validated digests (64 lowercase hex), never
 * from a peer's string.
 *
 * Not thread-aware: the blob server's thread owns the uploads; any thread
 * may call blobstore_stat (a stat(2) of a complete name).
 */
#ifndef TT_BROKER_BLOBSTORE_H
#define TT_BROKER_BLOBSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttblob.h"

typedef struct blobstore_t blobstore_t;
typedef struct blobstore_upload_t blobstore_upload_t;

/* Opens (making it if needed) DIR/sha256. NULL with a reason. */
blobstore_t *blobstore_new(const char *dir, char *err, size_t errlen);
void blobstore_destroy(blobstore_t **self_p);

/* 1 and *size if the complete blob is present, 0 if not, -1 on a bad
 * digest or an I/O error (with a reason). */
int blobstore_stat(const blobstore_t *self, const char *digest, uint64_t *size, char *err,
                   size_t errlen);
/* The path of a blob (complete or not) into buf. 0 / -1. */
int blobstore_path(const blobstore_t *self, const char *digest, bool part, char *buf, size_t len);
/* Opens a complete blob for reading: fd, or -1 with a reason. */
int blobstore_open(const blobstore_t *self, const char *digest, uint64_t *size, char *err,
                   size_t errlen);
/* Deletes a complete blob and its .part. 0 / -1. */
int blobstore_remove(blobstore_t *self, const char *digest, char *err, size_t errlen);

/* Deletes .part files not modified for max_age seconds (abandoned
 * uploads), except those for which keep(digest, arg) is true (open
 * uploads). Returns how many were deleted. */
int blobstore_sweep_parts(blobstore_t *self, int64_t max_age, bool (*keep)(const char *, void *),
                          void *arg);
/* The garbage collection of complete blobs: deletes those not modified for
 * max_age seconds for which keep(digest, arg) is false (no image, VM or
 * live grant names them). Adds the bytes freed to *bytes. Returns how
 * many were deleted. */
int blobstore_sweep_blobs(blobstore_t *self, int64_t max_age, bool (*keep)(const char *, void *),
                          void *arg, uint64_t *bytes);

/* Starts or resumes the upload of digest (size bytes in all): opens its
 * .part, keeps what is there when it is not longer than size, re-hashes
 * it, and returns the upload at that offset. NULL with a reason. */
blobstore_upload_t *blobstore_upload_begin(blobstore_t *self, const char *digest, uint64_t size,
                                           char *err, size_t errlen);
uint64_t blobstore_upload_offset(const blobstore_upload_t *u);
uint64_t blobstore_upload_size(const blobstore_upload_t *u);
const char *blobstore_upload_digest(const blobstore_upload_t *u);
/* Appends len bytes at offset, which must be the upload's offset; never
 * past its size. 0 / -1 with a reason. */
int blobstore_upload_write(blobstore_upload_t *u, uint64_t offset, const void *data, size_t len,
                           char *err, size_t errlen);
/* With all bytes written: checks the digest, fsyncs, renames into place.
 * On a mismatch the .part is deleted. Destroys the upload either way.
 * 0 / -1 with a reason. */
int blobstore_upload_commit(blobstore_upload_t **u_p, char *err, size_t errlen);
/* Closes the upload keeping its .part for a later resume. */
void blobstore_upload_close(blobstore_upload_t **u_p);
/* Closes the upload and deletes its .part. */
void blobstore_upload_abort(blobstore_upload_t **u_p);

#endif
