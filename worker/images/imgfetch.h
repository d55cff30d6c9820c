/*
 * imgfetch: the worker's blob fetcher, a CZMQ actor with its own thread
 * and its own DEALER to the broker's blob server (TTB01, see
 * schema/PROTOCOL.md "Blob transfer").
 *
 * The worker's loop asks imgfetch_ensure(digest) and later reads one DONE
 * or FAILED event for it from the pipe (PROGRESS events in between); it
 * never waits on a transfer. What "ensure" does:
 *   - a complete cached copy is re-hashed first (in slices, so other
 *     fetches keep moving); a copy that does not match its digest is
 *     deleted and fetched again: a corrupted copy is never reported DONE;
 *   - otherwise the blob is fetched into <dir>/<hex>.part with up to
 *     `credit` chunk requests in flight (the guide's credit pipeline),
 *     resuming from the .part a previous run left (its bytes re-hashed),
 *     and renamed to <dir>/<hex> only after the whole file's sha256
 *     matched;
 *   - a request with no answer for timeout_ms is asked again from the
 *     verified offset, so a restarted server or a lost message costs a
 *     timeout, not the transfer; no progress for give_up_ms is FAILED.
 * Many ensures of one digest while it is in progress are one job and one
 * event: twenty VMs of one new image fetch it once.
 *
 * Events (pipe, actor -> owner), read with imgfetch_recv:
 *   PROGRESS digest got total | DONE digest size fetched | FAILED digest reason
 */
#ifndef TT_WORKER_IMGFETCH_H
#define TT_WORKER_IMGFETCH_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ttblob.h"

typedef struct {
    char endpoint[256];     /* the broker's blob endpoint */
    char dir[4096];         /* where blobs land (imgcache_blob_dir) */
    uint32_t chunk;         /* bytes per GET (1 MiB) */
    uint32_t credit;        /* GETs in flight per fetch (8) */
    uint32_t timeout_ms;    /* ask again after this silence (3 s) */
    uint32_t give_up_ms;    /* FAILED after this long without progress (60 s) */
    uint32_t max_active;    /* fetches at once; more wait in line (4) */
    uint64_t rate_bps;      /* bytes per second per fetch, 0 = unlimited */
    char server_key[41];    /* CURVE: the blob server's public key (Z85) */
    char client_cert[4096]; /* CURVE: this host's certificate */
} imgfetch_opts_t;

typedef enum { IMGFETCH_PROGRESS, IMGFETCH_DONE, IMGFETCH_FAILED } imgfetch_kind_t;

typedef struct {
    imgfetch_kind_t kind;
    char digest[TT_DIGEST_LEN + 1];
    uint64_t got, total; /* PROGRESS; DONE: total = size, got = bytes moved */
    char reason[256];    /* FAILED */
} imgfetch_event_t;

typedef struct imgfetch_t imgfetch_t;

void imgfetch_opts_defaults(imgfetch_opts_t *opts);
imgfetch_t *imgfetch_new(const imgfetch_opts_t *opts, char *err, size_t errlen);
void imgfetch_destroy(imgfetch_t **self_p);
/* The pipe, for the owner's poller. */
zsock_t *imgfetch_sock(imgfetch_t *self);
/* Asks for digest (size: the expected size, 0 if unknown). 0 / -1 on a
 * bad digest. */
int imgfetch_ensure(imgfetch_t *self, const char *digest, uint64_t size);
/* Reads one event. 0 / -1 if the pipe held nothing valid. */
int imgfetch_recv(imgfetch_t *self, imgfetch_event_t *ev);

#endif
