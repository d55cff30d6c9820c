/*
 * ttimage: pushing images to the broker's blob server from libttclient
 * (TTB01, schema/PROTOCOL.md "Blob transfer").
 *
 * An image is a qcow2 file, or a directory holding `kernel` (with an
 * optional `initrd`) and/or `disk.qcow2`; ttimage_inspect says which, and
 * computes the digests (a directory becomes a manifest, see ttblob.h).
 * ttimage_push sends every blob the server lacks with the credit window
 * the server grants, and resumes: after a silence it sends PUT again and
 * continues from the offset the server has verified, so a restarted
 * server or a restarted pusher (the .part stays on the server) costs only
 * the bytes not yet stored. Nothing is registered by a push: the catalog
 * records an image only after every blob of it is complete on the server.
 */
#ifndef TTIMAGE_H
#define TTIMAGE_H

#include <stdint.h>

#include "ttblob.h"

typedef struct {
    uint32_t chunk;         /* bytes per DATA (1 MiB) */
    uint32_t credit;        /* DATA in flight, at most what the server grants (8) */
    uint32_t timeout_ms;    /* silence before PUT is sent again (3 s) */
    uint32_t give_up_ms;    /* silence before the push fails (60 s) */
    uint64_t rate_bps;      /* bytes per second, 0 = unlimited */
    char server_key[41];    /* CURVE: the server's public key (Z85), "" = none */
    char client_cert[4096]; /* CURVE: the client's certificate */
    /* called as bytes are acknowledged; may be NULL */
    void (*progress)(void *arg, const char *digest, uint64_t done, uint64_t total);
    void *arg;
} ttimage_opts_t;

typedef struct {
    char kind[8];                   /* "qcow2" or "dir" */
    char digest[TT_DIGEST_LEN + 1]; /* the image's: the file's, or the manifest's */
    uint64_t size;                  /* bytes of all blobs */
    tt_manifest_t manifest;         /* "dir" */
    char manifest_text[TT_MANIFEST_MAX];
    int manifest_len;
} ttimage_info_t;

void ttimage_opts_defaults(ttimage_opts_t *opts);
/* Classifies and hashes path. 0 / -1 with a reason ("not an image"...). */
int ttimage_inspect(const char *path, ttimage_info_t *info, char *err, size_t errlen);
/* Pushes one file as the blob `digest` (it is not re-hashed here: the
 * server verifies). 0 / -1 with a reason; the reason of a refusal starts
 * with the server's code (TOO_LARGE, DIGEST_MISMATCH, FORBIDDEN...). */
int ttimage_push_file(const ttimage_opts_t *opts, const char *endpoint, const char *path,
                      const char *digest, char *err, size_t errlen);
int ttimage_push_mem(const ttimage_opts_t *opts, const char *endpoint, const void *data,
                     uint64_t size, const char *digest, char *err, size_t errlen);
/* Inspects path and pushes all its blobs (a directory's manifest last).
 * info gets what ttimage_inspect found. 0 / -1 with a reason. */
int ttimage_push(const ttimage_opts_t *opts, const char *endpoint, const char *path,
                 ttimage_info_t *info, char *err, size_t errlen);

#endif
