/*
 * blobsrv: the broker's blob server, a CZMQ actor with its own thread and
 * its own ROUTER socket on the "blobs" endpoint, speaking TTB01
 * (schema/PROTOCOL.md, "Blob transfer") over a blobstore.
 *
 * Why a thread of its own: a transfer is disk and network work measured in
 * seconds; the broker's loop must never wait on it. The loop talks to the
 * actor only through its pipe (a grant before a push, a COMPLETE event
 * after one) and asks "is digest D complete?" with blobsrv_stat, which is
 * a stat(2) of a complete name and needs no round trip.
 *
 * Flow control is the guide's "chunk pipeline with credit": a fetcher
 * keeps at most `credit` GETs in flight and the server answers each with
 * one chunk, so the server holds no per-fetch state and a fetch resumes
 * from any offset; an uploader keeps at most `credit` DATA frames unacked
 * (OFFSET tells it the credit), and each ACK returns one. High-water marks
 * on the socket bound what one greedy peer can queue.
 *
 * Pipe, owner -> actor: "GRANT" digest max_size user [proof] (needed before
 * a PUT when limits.require_grant, checked before anything else about the
 * digest is told; user "" = any peer, else only the peers whose ZAP User-Id
 * is one granted may push it; proof "1": the peer must upload the bytes
 * even when the blob is complete; a grant lasts until "REVOKE"), "REVOKE"
 * digest (the grant, and the digest's unfinished upload and .part),
 * "FGRANT" digest user (user may fetch it), "WORKER-KEYS" keys (the worker
 * keys there are now, 40-character Z85 keys end to end: a fetch from a
 * worker key not among them is refused, live connection or not), "GC"
 * min_age digest... (delete the complete blobs older than min_age seconds
 * that are not listed, not granted and not being uploaded), "$TERM".
 * Pipe, actor -> owner: "COMPLETE" digest size user, once per verified
 * upload (user: the uploader's ZAP User-Id, "" without CURVE).
 */
#ifndef TT_BROKER_BLOBSRV_H
#define TT_BROKER_BLOBSRV_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
    uint64_t max_blob;       /* largest blob accepted, bytes (default 64 GiB) */
    uint32_t max_chunk;      /* largest chunk sent or accepted (default 1 MiB) */
    uint32_t credit;         /* DATA frames an uploader may have unacked (8) */
    uint32_t max_uploads;    /* uploads open at once (32) */
    uint32_t idle_ms;        /* an upload silent this long is closed, .part kept (60 s) */
    uint32_t takeover_ms;    /* another peer may take an upload over after this silence (2 s) */
    uint32_t part_ttl;       /* an abandoned .part is deleted after this many s (24 h) */
    bool require_grant;      /* PUT only for digests the owner granted */
    /* bytes the store's filesystem keeps free (for the owner's database):
     * a PUT whose remaining bytes, or a DATA chunk, would take the free
     * space under it is refused NO_SPACE (0 = no reserve) */
    uint64_t reserve;
    char curve_secret[4096]; /* the server certificate, "" for no CURVE */
    char zap_domain[64];     /* ZAP domain with CURVE ("blobs") */
    /* With CURVE: STAT and GET only from peers whose ZAP User-Id starts
     * with this (e.g. "worker:"), "" for any authenticated peer. */
    char fetch_user_prefix[32];
    /* STAT and GET only of digests the owner granted to the peer's User-Id
     * (blobsrv_fetch_grant): a host fetches only the images of the VMs it
     * was told to run */
    bool require_fetch_grant;
} blobsrv_limits_t;

typedef struct blobsrv_t blobsrv_t;

void blobsrv_limits_defaults(blobsrv_limits_t *limits);
/* Binds endpoint (e.g. "tcp://127.0.0.1:5558") and serves the blobs under
 * dir. NULL with a reason when the store or the bind fails. */
blobsrv_t *blobsrv_new(const char *endpoint, const char *dir, const blobsrv_limits_t *limits,
                       char *err, size_t errlen);
void blobsrv_destroy(blobsrv_t **self_p);
/* The endpoint as bound (a "*" port resolved). */
const char *blobsrv_endpoint(const blobsrv_t *self);
/* The pipe, for the owner's poller: readable when an event is waiting. */
zsock_t *blobsrv_sock(blobsrv_t *self);
/* Reads one event: 0 with digest (TT_DIGEST_LEN + 1 bytes) and size of a
 * completed upload, -1 if the pipe held nothing valid. */
int blobsrv_recv(blobsrv_t *self, char *digest, uint64_t *size);
/* The same, and the uploader's ZAP User-Id into user ("" without CURVE). */
int blobsrv_recv_from(blobsrv_t *self, char *digest, uint64_t *size, char *user, size_t userlen);
/* 1 and *size if digest is complete, 0 if not, -1 on a bad digest. Any
 * thread; no round trip to the actor. */
int blobsrv_stat(blobsrv_t *self, const char *digest, uint64_t *size);
/* Allows uploads of digest of at most max_size bytes until blobsrv_revoke, by the peer
 * whose ZAP User-Id is user (NULL or "": any peer). 0 / -1. */
int blobsrv_grant(blobsrv_t *self, const char *digest, uint64_t max_size, const char *user);
/* A grant that asks for a proof of possession: the peer must upload the
 * bytes even when the blob is complete here. 0 / -1. */
int blobsrv_grant_proof(blobsrv_t *self, const char *digest, uint64_t max_size, const char *user);
int blobsrv_revoke(blobsrv_t *self, const char *digest);
int blobsrv_worker_keys(blobsrv_t *self, const void *keys, size_t n);
/* Garbage collection in the actor's thread: every complete blob older than
 * min_age seconds that is not among the n digests of keep (and has no
 * grant or open upload) is deleted. Logged there; 0 / -1 (pipe). */
int blobsrv_gc(blobsrv_t *self, const char *const *keep, size_t n, int64_t min_age);
/* Allows the peer whose ZAP User-Id is user to STAT and GET digest (with
 * require_fetch_grant). Kept until the server stops; past 100,000
 * grants all are forgotten (the broker grants again with every spec it
 * sends). 0 / -1. */
int blobsrv_fetch_grant(blobsrv_t *self, const char *digest, const char *user);

#endif
