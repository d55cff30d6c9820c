/*
 * ttblob: the shared rules of blob transfer (protocol TTB01, see
 * schema/PROTOCOL.md "Blob transfer"), sha256 digests and image manifests.
 *
 * A blob is a file named by its content: "sha256:" + 64 lowercase hex
 * digits. The broker's blob server (broker/images/blobsrv.c), the worker's fetcher
 * (worker/images/imgfetch.c) and the client's pusher (client/ttimage.c) share this
 * one copy of the frame names, limits, validators and the message builder
 * (tt_blob_msg). sha256 is OpenSSL's (libcrypto EVP). Nothing here touches
 * a socket.
 *
 * An image is either one blob (a qcow2 disk) or a directory image: a small
 * text manifest blob naming the blobs of its files (kernel, initrd,
 * disk.qcow2). The manifest's digest is the image's digest, so a
 * directory image is content-addressed as a whole while each file is
 * transferred, resumed and verified like any blob, and two images that
 * share a kernel share its blob. Manifest text (every line ends in '\n'):
 *     ttimage 1
 *     <file> sha256:<hex> <size>      one line per file, names sorted,
 *                                      file in {disk.qcow2, initrd, kernel}
 * A manifest must name a kernel, or a disk.qcow2, or both; an initrd only
 * with a kernel.
 */
#ifndef TTBLOB_H
#define TTBLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TT_BLOB_PROTO "TTB01"
#define TT_DIGEST_PREFIX "sha256:"
#define TT_DIGEST_LEN 71 /* "sha256:" + 64 hex */
#define TT_HEX_LEN 64

/* Chunk sizes a peer may ask for or send. */
#define TT_BLOB_CHUNK_MIN 1
#define TT_BLOB_CHUNK_MAX (1024 * 1024)
#define TT_BLOB_CHUNK_DEFAULT (1024 * 1024)
#define TT_BLOB_CREDIT_DEFAULT 8 /* chunks in flight per transfer (measured best here) */
#define TT_BLOB_CREDIT_MAX 64

/* Commands (frame 1 after "TTB01"). Peer -> server: */
#define TT_B_STAT "STAT"   /* digest                      -> SIZE | ERROR */
#define TT_B_GET "GET"     /* digest offset length        -> CHUNK | ERROR */
#define TT_B_PUT "PUT"     /* digest size                 -> OFFSET | HAVE | ERROR */
#define TT_B_DATA "DATA"   /* digest offset bytes         -> ACK | OFFSET | DONE | ERROR */
#define TT_B_ABORT "ABORT" /* digest                      -> ERROR ABORTED */
/* Server -> peer: */
#define TT_B_SIZE "SIZE"     /* digest size */
#define TT_B_CHUNK "CHUNK"   /* digest offset bytes (empty at the end) */
#define TT_B_OFFSET "OFFSET" /* digest offset credit: send from offset */
#define TT_B_HAVE "HAVE"     /* digest size: already complete */
#define TT_B_ACK "ACK"       /* digest offset: bytes before offset are stored */
#define TT_B_DONE "DONE"     /* digest size: verified and committed */
#define TT_B_ERROR "ERROR"   /* digest code text */

/* Error codes of an ERROR frame. */
#define TT_BE_BAD_REQUEST "BAD_REQUEST"
#define TT_BE_NOT_FOUND "NOT_FOUND"
#define TT_BE_TOO_LARGE "TOO_LARGE"
#define TT_BE_DIGEST_MISMATCH "DIGEST_MISMATCH"
#define TT_BE_FORBIDDEN "FORBIDDEN"
#define TT_BE_BUSY "BUSY"
#define TT_BE_NO_UPLOAD "NO_UPLOAD"
#define TT_BE_ABORTED "ABORTED"
#define TT_BE_INTERNAL "INTERNAL"
#define TT_BE_NO_SPACE "NO_SPACE" /* the server keeps its free-space reserve */

typedef struct _zmsg_t zmsg_t;     /* CZMQ's */
typedef struct _zframe_t zframe_t; /* CZMQ's */

/* A TTB01 message [TTB01][cmd][digest][a][b], a and b optional strings
 * (NULL: no frame); data, if given, is the last frame instead of b and is
 * taken (*data set to NULL). A ROUTER side adds the peer's id in front.
 * NULL when out of memory. */
zmsg_t *tt_blob_msg(const char *cmd, const char *digest, const char *a, const char *b,
                    zframe_t **data);

/* "sha256:" + 64 lowercase hex digits, nothing else. */
bool tt_digest_valid(const char *s);
/* The 64 hex digits of a valid digest (a pointer into s). */
const char *tt_digest_hex(const char *s);
/* A strict unsigned decimal (no sign, no spaces, no overflow). */
bool tt_u64_parse(const char *s, uint64_t *out);

/* Loads libcrypto's configuration once, in the calling thread. Called by
 * the modules that start transfer threads (blobsrv_new, imgfetch_new),
 * so that per-thread state of the one-time load is not left in an actor
 * thread. Safe to call more than once. */
void tt_blob_init(void);

/* Incremental sha256. */
typedef struct tt_sha256_t tt_sha256_t;
tt_sha256_t *tt_sha256_new(void);
void tt_sha256_destroy(tt_sha256_t **self_p);
void tt_sha256_update(tt_sha256_t *self, const void *data, size_t len);
/* Writes "sha256:<hex>" (TT_DIGEST_LEN + 1 bytes) and resets. */
void tt_sha256_final(tt_sha256_t *self, char digest[TT_DIGEST_LEN + 1]);
/* Hashes len bytes of fd from offset 0 into self (resuming a partial
 * file). 0 / -1 with a reason. */
int tt_sha256_fd(tt_sha256_t *self, int fd, uint64_t len, char *err, size_t errlen);
/* The digest and size of a whole file. 0 / -1 with a reason. */
int tt_sha256_file(const char *path, char digest[TT_DIGEST_LEN + 1], uint64_t *size, char *err,
                   size_t errlen);

/* Image manifests (see the top of this file). */
#define TT_MANIFEST_MAGIC "ttimage 1\n"
#define TT_MANIFEST_MAX 4096
#define TT_MANIFEST_FILES 3
typedef struct {
    char name[16];
    char digest[TT_DIGEST_LEN + 1];
    uint64_t size;
} tt_manifest_file_t;
typedef struct {
    size_t n;
    tt_manifest_file_t files[TT_MANIFEST_FILES];
} tt_manifest_t;
/* 0 / -1 with a reason; a manifest that breaks any rule is refused. */
int tt_manifest_parse(const char *text, size_t len, tt_manifest_t *m, char *err, size_t errlen);
/* The canonical text (files sorted by name); returns its length, or -1. */
int tt_manifest_format(const tt_manifest_t *m, char *buf, size_t len);
/* Whether bytes start like a manifest (the magic line). */
bool tt_manifest_is(const void *data, size_t len);

/* Image references: NAME[:TAG] or NAME@sha256:<hex>. NAME is 1..64 of
 * [a-z0-9._-] starting with a letter or digit (no '/': a name never
 * becomes a path), TAG 1..64 of [A-Za-z0-9._-] starting with a letter or
 * digit; a missing tag is "latest". */
typedef struct {
    char name[65];
    char tag[65];
    char digest[TT_DIGEST_LEN + 1]; /* "" unless pinned */
} tt_image_ref_t;
int tt_image_ref_parse(const char *s, tt_image_ref_t *ref, char *err, size_t errlen);

/* The qcow2 magic ("QFI\xfb") at the start of a file. */
bool tt_qcow2_is(const void *data, size_t len);

#endif
