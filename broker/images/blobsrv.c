/*
 * blobsrv: the blob server actor. See blobsrv.h for why it is a thread of
 * its own and how its credit works, schema/PROTOCOL.md for the frames.
 *
 * One iteration of the actor: wait up to 1 s for the pipe or the ROUTER;
 * handle up to 256 peer messages without blocking (each answered at most
 * once, never with more than one chunk); close uploads idle past
 * limits.idle_ms (their .part stays, so the uploader resumes), and every
 * 10 minutes delete the .part files no upload touched for limits.part_ttl
 * (an abandoned push does not hold disk forever). Every frame
 * from a peer is checked before use: frame count, protocol, command,
 * digest format, decimal numbers, chunk bounds, the declared size against
 * max_blob and the grant. An upload's state lives in one table keyed by
 * digest; a PUT from another peer for the same digest is answered BUSY
 * while the owner is active, and takes the upload over at the stored
 * offset once the owner has been silent for limits.takeover_ms (a client
 * that restarted comes back with a new routing id); the previous peer's
 * DATA is then refused with BUSY. A BUSY peer asks again later and, once
 * the blob is complete, gets HAVE: two pushes of one image both succeed.
 */
#include "blobsrv.h"

#include "blobstore.h"
#include "ttblob.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define BATCH 256
#define MAX_FDS 64

struct blobsrv_t {
    zactor_t *actor;
    blobstore_t *store; /* the owner's handle, for blobsrv_stat */
    char endpoint[256];
};

typedef struct {
    char endpoint[256];
    char dir[4096];
    blobsrv_limits_t limits;
} s_args_t;

#define S_GRANT_USERS 8

typedef struct {
    uint64_t max;
    /* who may push it: "" among them = any peer; at most S_GRANT_USERS
     * (a further one replaces the last) */
    char users[S_GRANT_USERS][128];
    int n_users;
    /* a proof of possession: the peer uploads the bytes even when the
     * blob is complete here (no HAVE) */
    bool proof;
} s_grant_t;

typedef struct {
    blobstore_upload_t *u;
    zframe_t *owner;
    char user[128]; /* the owner's ZAP User-Id, "" without CURVE */
    int64_t last;
} s_upload_t;

static bool s_grant_allows(const s_grant_t *g, const char *user)
{
    for (int i = 0; i < g->n_users; i++)
        if (!g->users[i][0] || strcmp(g->users[i], user) == 0)
            return true;
    return false;
}

#define S_KEY_LEN 40 /* a CURVE public key in Z85 */

typedef struct {
    zsock_t *pipe, *router;
    blobstore_t *store;
    blobsrv_limits_t limits;
    zhashx_t *uploads; /* digest -> s_upload_t */
    zhashx_t *grants;  /* digest -> s_grant_t */
    zhashx_t *fgrants; /* "user digest" -> 1: who may fetch what (require_fetch_grant) */
    zhashx_t *worker_keys; /* the worker keys there are (Z85), NULL = not told */
    zhashx_t *fds;     /* digest -> int fd (+1) of complete blobs being read */
    int64_t next_part_sweep;
    char dir[4096]; /* the store's directory, for the free-space reserve */
} s_server_t;

/* 0 when `more` bytes fit above limits.reserve; else NO_SPACE is sent. */
static int s_room(s_server_t *self, zframe_t *id, const char *digest, uint64_t more);

void blobsrv_limits_defaults(blobsrv_limits_t *limits)
{
    memset(limits, 0, sizeof *limits);
    limits->max_blob = 64ull << 30;
    limits->max_chunk = TT_BLOB_CHUNK_MAX;
    limits->credit = TT_BLOB_CREDIT_DEFAULT;
    limits->max_uploads = 32;
    limits->idle_ms = 60000;
    limits->part_ttl = 24 * 3600;
    limits->takeover_ms = 2000;
    snprintf(limits->zap_domain, sizeof limits->zap_domain, "blobs");
}

static void s_upload_free(void **item)
{
    s_upload_t *up = *item;
    if (!up)
        return;
    blobstore_upload_close(&up->u);
    zframe_destroy(&up->owner);
    free(up);
    *item = NULL;
}

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

static void s_fd_free(void **item)
{
    intptr_t fd = (intptr_t)*item - 1;
    if (fd >= 0)
        close((int)fd);
    *item = NULL;
}

/* [id][TTB01][cmd][digest][a][b] with a and b optional strings; data, if
 * given, is sent as the last frame instead of b. */
static void s_reply(s_server_t *self, zframe_t *id, const char *cmd, const char *digest,
                    const char *a, const char *b, zframe_t **data)
{
    zmsg_t *msg = tt_blob_msg(cmd, digest, a, b, data);
    if (!msg)
        return;
    zmsg_prepend(msg, &(zframe_t *){zframe_dup(id)});
    /* ROUTER drops, never blocks, on a full peer queue: the peer's timer
     * asks again */
    zmsg_send(&msg, self->router);
}

static void s_error(s_server_t *self, zframe_t *id, const char *digest, const char *code,
                    const char *text)
{
    s_reply(self, id, TT_B_ERROR, digest, code, text, NULL);
}

static void s_u64(char *buf, uint64_t v)
{
    snprintf(buf, 24, "%llu", (unsigned long long)v);
}

static int s_room(s_server_t *self, zframe_t *id, const char *digest, uint64_t more)
{
    if (!self->limits.reserve)
        return 0;
    struct statvfs vfs;
    char err[300];
    if (statvfs(self->dir, &vfs)) {
        snprintf(err, sizeof err, "cannot read the free space: %s", strerror(errno));
        s_error(self, id, digest, TT_BE_INTERNAL, err);
        return -1;
    }
    uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
    if (avail >= self->limits.reserve && avail - self->limits.reserve >= more)
        return 0;
    snprintf(err, sizeof err,
             "the broker's disk has %llu MiB free and keeps %llu MiB for its database; this "
             "needs %llu MiB more: try later or ask the operator",
             (unsigned long long)(avail >> 20), (unsigned long long)(self->limits.reserve >> 20),
             (unsigned long long)((more + (1 << 20) - 1) >> 20));
    s_error(self, id, digest, TT_BE_NO_SPACE, err);
    return -1;
}

static void s_offset(s_server_t *self, zframe_t *id, s_upload_t *up)
{
    char off[24], credit[24];
    s_u64(off, blobstore_upload_offset(up->u));
    s_u64(credit, self->limits.credit);
    s_reply(self, id, TT_B_OFFSET, blobstore_upload_digest(up->u), off, credit, NULL);
}

/* All bytes are in: verify, rename, tell the peer and the owner. */
static void s_commit(s_server_t *self, zframe_t *id, const char *digest)
{
    s_upload_t *up = zhashx_lookup(self->uploads, digest);
    uint64_t size = blobstore_upload_size(up->u);
    char err[256], user[128];
    snprintf(user, sizeof user, "%s", up->user);
    int rc = blobstore_upload_commit(&up->u, err, sizeof err);
    zhashx_delete(self->uploads, digest);
    if (rc) {
        zsys_warning("blobsrv: %s: %s", digest, err);
        s_error(self, id, digest,
                strncmp(err, "digest mismatch", 15) == 0 ? TT_BE_DIGEST_MISMATCH : TT_BE_INTERNAL,
                err);
        return;
    }
    /* the grant stays until the owner revokes it: a second push of the
     * same blob under it gets HAVE (or, for a proof, uploads again) */
    char sz[24];
    s_u64(sz, size);
    /* the owner hears first: a commit sent after DONE finds it queued */
    zstr_sendx(self->pipe, "COMPLETE", digest, sz, user, NULL);
    s_reply(self, id, TT_B_DONE, digest, sz, NULL, NULL);
}

static void s_put(s_server_t *self, zframe_t *id, const char *digest, const char *sizes,
                  const char *user)
{
    uint64_t size = 0, have = 0;
    char err[256];
    if (!tt_u64_parse(sizes, &size) || size == 0)
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "size must be a decimal > 0");
    if (size > self->limits.max_blob) {
        snprintf(err, sizeof err, "%llu bytes is over the limit of %llu bytes",
                 (unsigned long long)size, (unsigned long long)self->limits.max_blob);
        return s_error(self, id, digest, TT_BE_TOO_LARGE, err);
    }
    /* the grant first: a peer without one learns nothing, not even
     * whether the blob is here */
    s_grant_t *grant = NULL;
    if (self->limits.require_grant) {
        grant = zhashx_lookup(self->grants, digest);
        if (!grant || !s_grant_allows(grant, user))
            return s_error(self, id, digest, TT_BE_FORBIDDEN, "no push of this digest was granted");
        if (size > grant->max)
            return s_error(self, id, digest, TT_BE_TOO_LARGE, "size over the granted size");
    }
    int st = blobstore_stat(self->store, digest, &have, err, sizeof err);
    if (st < 0)
        return s_error(self, id, digest, TT_BE_INTERNAL, err);
    if (st == 1 && !(grant && grant->proof)) {
        char sz[24];
        s_u64(sz, have);
        return s_reply(self, id, TT_B_HAVE, digest, sz, NULL, NULL);
    }
    s_upload_t *up = zhashx_lookup(self->uploads, digest);
    if (up && blobstore_upload_size(up->u) != size) {
        zhashx_delete(self->uploads, digest);
        up = NULL;
    }
    if (!up) {
        if (zhashx_size(self->uploads) >= self->limits.max_uploads)
            return s_error(self, id, digest, TT_BE_BUSY, "too many uploads at once; retry later");
        blobstore_upload_t *u = blobstore_upload_begin(self->store, digest, size, err, sizeof err);
        if (!u)
            return s_error(self, id, digest, TT_BE_INTERNAL, err);
        up = calloc(1, sizeof *up);
        if (!up) {
            blobstore_upload_close(&u);
            return s_error(self, id, digest, TT_BE_INTERNAL, "out of memory");
        }
        up->u = u;
        zhashx_insert(self->uploads, digest, up);
    }
    if (up->owner && !zframe_eq(up->owner, id) &&
        zclock_mono() - up->last < (int64_t)self->limits.takeover_ms)
        return s_error(self, id, digest, TT_BE_BUSY,
                       "another peer is uploading this blob; ask again later");
    /* a proof of possession is uploaded whole by its own user: it never
     * resumes bytes another user (or an upload no longer open) wrote */
    if (grant && grant->proof && blobstore_upload_offset(up->u) > 0 &&
        (!up->owner || strcmp(up->user, user) != 0)) {
        blobstore_upload_abort(&up->u);
        up->u = blobstore_upload_begin(self->store, digest, size, err, sizeof err);
        if (!up->u) {
            zhashx_delete(self->uploads, digest);
            return s_error(self, id, digest, TT_BE_INTERNAL, err);
        }
    }
    if (s_room(self, id, digest, size - blobstore_upload_offset(up->u))) {
        if (!up->owner && blobstore_upload_offset(up->u) == 0) {
            blobstore_upload_abort(&up->u); /* the empty .part it just made */
            zhashx_delete(self->uploads, digest);
        }
        return;
    }
    zframe_destroy(&up->owner);
    up->owner = zframe_dup(id);
    snprintf(up->user, sizeof up->user, "%s", user);
    up->last = zclock_mono();
    if (blobstore_upload_offset(up->u) == size)
        return s_commit(self, id, digest);
    s_offset(self, id, up);
}

static void s_data(s_server_t *self, zframe_t *id, const char *digest, const char *offs,
                   zframe_t *data)
{
    uint64_t off = 0;
    char err[256];
    if (!tt_u64_parse(offs, &off))
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "offset must be a decimal");
    size_t len = zframe_size(data);
    if (len < TT_BLOB_CHUNK_MIN || len > self->limits.max_chunk)
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "chunk size out of bounds");
    s_upload_t *up = zhashx_lookup(self->uploads, digest);
    if (!up)
        return s_error(self, id, digest, TT_BE_NO_UPLOAD, "no upload open: send PUT");
    if (!zframe_eq(up->owner, id))
        return s_error(self, id, digest, TT_BE_BUSY, "another peer took this upload over");
    up->last = zclock_mono();
    if (off != blobstore_upload_offset(up->u))
        return s_offset(self, id, up); /* resync: the peer rewinds */
    if (len > blobstore_upload_size(up->u) - off)
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "data past the declared size");
    if (s_room(self, id, digest, len))
        return; /* the upload stays open: the peer may resume when there is room */
    if (blobstore_upload_write(up->u, off, zframe_data(data), len, err, sizeof err)) {
        zhashx_delete(self->uploads, digest);
        return s_error(self, id, digest, TT_BE_INTERNAL, err);
    }
    if (blobstore_upload_offset(up->u) == blobstore_upload_size(up->u))
        return s_commit(self, id, digest);
    char o[24];
    s_u64(o, blobstore_upload_offset(up->u));
    s_reply(self, id, TT_B_ACK, digest, o, NULL, NULL);
}

static void s_abort(s_server_t *self, zframe_t *id, const char *digest)
{
    s_upload_t *up = zhashx_lookup(self->uploads, digest);
    if (up && zframe_eq(up->owner, id)) {
        blobstore_upload_abort(&up->u);
        zhashx_delete(self->uploads, digest);
    }
    s_error(self, id, digest, TT_BE_ABORTED, "upload aborted");
}

static int s_fd(s_server_t *self, const char *digest, uint64_t *size, char *err, size_t errlen)
{
    intptr_t fd = (intptr_t)zhashx_lookup(self->fds, digest) - 1;
    if (fd >= 0) {
        struct stat sb;
        if (fstat((int)fd, &sb) == 0 && sb.st_nlink > 0) {
            *size = (uint64_t)sb.st_size;
            return (int)fd;
        }
        zhashx_delete(self->fds, digest); /* removed meanwhile */
    }
    int nfd = blobstore_open(self->store, digest, size, err, errlen);
    if (nfd < 0)
        return -1;
    if (zhashx_size(self->fds) >= MAX_FDS)
        zhashx_purge(self->fds);
    zhashx_insert(self->fds, digest, (void *)(intptr_t)(nfd + 1));
    return nfd;
}

static void s_get(s_server_t *self, zframe_t *id, const char *digest, const char *offs,
                  const char *lens)
{
    uint64_t off = 0, want = 0, size = 0;
    char err[256];
    if (!tt_u64_parse(offs, &off) || !tt_u64_parse(lens, &want))
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "offset and length are decimals");
    if (want < TT_BLOB_CHUNK_MIN || want > self->limits.max_chunk)
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "length out of bounds");
    int fd = s_fd(self, digest, &size, err, sizeof err);
    if (fd < 0)
        return s_error(self, id, digest, TT_BE_NOT_FOUND, err);
    if (off > size)
        return s_error(self, id, digest, TT_BE_BAD_REQUEST, "offset past the end");
    size_t len = (size_t)(size - off < want ? size - off : want);
    zframe_t *chunk = zframe_new(NULL, len);
    if (!chunk)
        return s_error(self, id, digest, TT_BE_INTERNAL, "out of memory");
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(fd, zframe_data(chunk) + done, len - done, (off_t)(off + done));
        if (n <= 0) {
            zframe_destroy(&chunk);
            return s_error(self, id, digest, TT_BE_INTERNAL, "read failed");
        }
        done += (size_t)n;
    }
    char o[24];
    s_u64(o, off);
    s_reply(self, id, TT_B_CHUNK, digest, o, NULL, &chunk);
}

static void s_peer(s_server_t *self, zmsg_t *msg)
{
    zframe_t *id = zmsg_pop(msg);
    size_t n = zmsg_size(msg);
    /* who the ZAP handler said the peer is (CURVE); "" without CURVE */
    zframe_t *first = zmsg_first(msg);
    const char *uid = first ? zframe_meta(first, "User-Id") : NULL;
    char user[128];
    snprintf(user, sizeof user, "%s", uid ? uid : "");
    const char *xk = first ? zframe_meta(first, "X-Key") : NULL;
    char xkey[S_KEY_LEN + 1];
    snprintf(xkey, sizeof xkey, "%s", xk ? xk : "");
    char *proto = zmsg_popstr(msg);
    char *cmd = zmsg_popstr(msg);
    char *digest = zmsg_popstr(msg);
    if (!id || n < 3 || n > 5 || !proto || strcmp(proto, TT_BLOB_PROTO) != 0 || !cmd) {
        if (id && n <= 16)
            s_error(self, id, "", TT_BE_BAD_REQUEST, "want [TTB01][command][digest]...");
        goto out;
    }
    if (!tt_digest_valid(digest)) {
        s_error(self, id, "", TT_BE_BAD_REQUEST, "invalid digest: want sha256:<64 lowercase hex>");
        goto out;
    }
    bool fetch = strcmp(cmd, TT_B_STAT) == 0 || strcmp(cmd, TT_B_GET) == 0;
    const char *pre = self->limits.fetch_user_prefix;
    if (fetch && pre[0] && strncmp(user, pre, strlen(pre)) != 0) {
        s_error(self, id, digest, TT_BE_FORBIDDEN, "this key may not fetch blobs");
        goto out;
    }
    /* a worker whose key was removed keeps its connection until it
     * reconnects; it fetches nothing more on it */
    if (fetch && self->worker_keys && strncmp(user, "worker:", 7) == 0 &&
        !zhashx_lookup(self->worker_keys, xkey)) {
        s_error(self, id, digest, TT_BE_FORBIDDEN, "this worker key was removed");
        goto out;
    }
    if (fetch && self->limits.require_fetch_grant) {
        char key[200];
        snprintf(key, sizeof key, "%s %s", user, digest);
        if (!zhashx_lookup(self->fgrants, key)) {
            s_error(self, id, digest, TT_BE_FORBIDDEN, "no fetch of this digest was granted");
            goto out;
        }
    }
    if (strcmp(cmd, TT_B_STAT) == 0 && n == 3) {
        uint64_t size = 0;
        char err[256];
        int st = blobstore_stat(self->store, digest, &size, err, sizeof err);
        if (st == 1) {
            char sz[24];
            s_u64(sz, size);
            s_reply(self, id, TT_B_SIZE, digest, sz, NULL, NULL);
        } else {
            s_error(self, id, digest, st ? TT_BE_INTERNAL : TT_BE_NOT_FOUND,
                    st ? err : "no such blob");
        }
    } else if (strcmp(cmd, TT_B_GET) == 0 && n == 5) {
        char *off = zmsg_popstr(msg), *len = zmsg_popstr(msg);
        s_get(self, id, digest, off, len);
        zstr_free(&off);
        zstr_free(&len);
    } else if (strcmp(cmd, TT_B_PUT) == 0 && n == 4) {
        char *size = zmsg_popstr(msg);
        s_put(self, id, digest, size, user);
        zstr_free(&size);
    } else if (strcmp(cmd, TT_B_DATA) == 0 && n == 5) {
        char *off = zmsg_popstr(msg);
        zframe_t *data = zmsg_pop(msg);
        s_data(self, id, digest, off, data);
        zstr_free(&off);
        zframe_destroy(&data);
    } else if (strcmp(cmd, TT_B_ABORT) == 0 && n == 3) {
        s_abort(self, id, digest);
    } else {
        s_error(self, id, digest, TT_BE_BAD_REQUEST, "unknown command or wrong frame count");
    }
out:
    zframe_destroy(&id);
    zstr_free(&proto);
    zstr_free(&cmd);
    zstr_free(&digest);
}

/* GC min_age digest...: the listed digests, the granted ones and the open
 * uploads stay; other complete blobs older than min_age go. */
typedef struct {
    s_server_t *server;
    zhashx_t *keep;
} s_gc_t;

static bool s_gc_keep(const char *digest, void *arg)
{
    s_gc_t *gc = arg;
    return zhashx_lookup(gc->keep, digest) || zhashx_lookup(gc->server->grants, digest) ||
           zhashx_lookup(gc->server->uploads, digest);
}

static void s_gc(s_server_t *self, zmsg_t *msg)
{
    char *age = zmsg_popstr(msg);
    uint64_t min_age = 0;
    s_gc_t gc = {self, zhashx_new()};
    if (!gc.keep || !tt_u64_parse(age, &min_age) || min_age > INT64_MAX) {
        zsys_warning("blobsrv: GC without a valid minimum age: nothing deleted");
        zhashx_destroy(&gc.keep);
        zstr_free(&age);
        return;
    }
    zstr_free(&age);
    for (char *d = zmsg_popstr(msg); d; d = zmsg_popstr(msg)) {
        if (tt_digest_valid(d))
            zhashx_update(gc.keep, d, (void *)1);
        zstr_free(&d);
    }
    uint64_t bytes = 0;
    int n = blobstore_sweep_blobs(self->store, (int64_t)min_age, s_gc_keep, &gc, &bytes);
    if (n)
        zsys_info("blobsrv: garbage collection deleted %d blob(s) no image uses (%llu bytes)", n,
                  (unsigned long long)bytes);
    zhashx_destroy(&gc.keep);
}

/* Returns false on $TERM. */
static bool s_pipe(s_server_t *self)
{
    zmsg_t *msg = zmsg_recv(self->pipe);
    if (!msg)
        return false;
    char *cmd = zmsg_popstr(msg);
    bool go = true;
    if (!cmd || strcmp(cmd, "$TERM") == 0) {
        go = false;
    } else if (strcmp(cmd, "GRANT") == 0) {
        char *digest = zmsg_popstr(msg), *size = zmsg_popstr(msg), *user = zmsg_popstr(msg);
        char *proof = zmsg_popstr(msg);
        uint64_t v = 0;
        bool ok = tt_digest_valid(digest) && tt_u64_parse(size, &v);
        s_grant_t *g = ok ? zhashx_lookup(self->grants, digest) : NULL;
        if (ok && !g && (g = calloc(1, sizeof *g)) != NULL)
            zhashx_insert(self->grants, digest, g);
        if (g) {
            /* one grant per digest: the largest size, every user asked for */
            if (v > g->max)
                g->max = v;
            g->proof = g->proof || (proof && strcmp(proof, "1") == 0);
            const char *u = user ? user : "";
            bool listed = false;
            for (int i = 0; i < g->n_users; i++)
                listed = listed || strcmp(g->users[i], u) == 0;
            if (!listed) {
                int slot = g->n_users < S_GRANT_USERS ? g->n_users++ : S_GRANT_USERS - 1;
                snprintf(g->users[slot], sizeof g->users[slot], "%s", u);
            }
        }
        zstr_free(&digest);
        zstr_free(&size);
        zstr_free(&user);
        zstr_free(&proof);
    } else if (strcmp(cmd, "FGRANT") == 0) {
        char *digest = zmsg_popstr(msg), *user = zmsg_popstr(msg);
        if (tt_digest_valid(digest) && user && strlen(user) < 128) {
            char key[200];
            snprintf(key, sizeof key, "%s %s", user, digest);
            if (zhashx_size(self->fgrants) >= 100000)
                zhashx_purge(self->fgrants); /* bounded; the broker grants again with each spec */
            zhashx_update(self->fgrants, key, (void *)1);
        }
        zstr_free(&digest);
        zstr_free(&user);
    } else if (strcmp(cmd, "WORKER-KEYS") == 0) {
        zframe_t *f = zmsg_first(msg);
        zhashx_t *set = f ? zhashx_new() : NULL;
        for (size_t i = 0; set && i + S_KEY_LEN <= zframe_size(f); i += S_KEY_LEN) {
            char k[S_KEY_LEN + 1];
            memcpy(k, zframe_data(f) + i, S_KEY_LEN);
            k[S_KEY_LEN] = '\0';
            zhashx_update(set, k, (void *)1);
        }
        if (set) {
            zhashx_destroy(&self->worker_keys);
            self->worker_keys = set;
        }
    } else if (strcmp(cmd, "REVOKE") == 0) {
        char *digest = zmsg_popstr(msg);
        if (digest && tt_digest_valid(digest)) {
            zhashx_delete(self->grants, digest);
            /* no grant, no partial bytes: an unfinished upload's .part goes
             * with the grant that was charged for it */
            s_upload_t *up = zhashx_lookup(self->uploads, digest);
            if (up)
                blobstore_upload_abort(&up->u);
            zhashx_delete(self->uploads, digest);
            char part[4200];
            if (!up && blobstore_path(self->store, digest, true, part, sizeof part) == 0)
                unlink(part);
        }
        zstr_free(&digest);
    } else if (strcmp(cmd, "GC") == 0) {
        s_gc(self, msg);
    }
    zstr_free(&cmd);
    zmsg_destroy(&msg);
    return go;
}

static bool s_open_upload(const char *digest, void *arg)
{
    return zhashx_lookup(((s_server_t *)arg)->uploads, digest) != NULL;
}

static void s_sweep(s_server_t *self)
{
    int64_t now = zclock_mono();
    if (now >= self->next_part_sweep) {
        int n = blobstore_sweep_parts(self->store, self->limits.part_ttl, s_open_upload, self);
        if (n)
            zsys_info("blobsrv: deleted %d abandoned partial uploads", n);
        self->next_part_sweep = now + 600 * 1000;
    }
    zlistx_t *keys = zhashx_keys(self->uploads);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        s_upload_t *up = zhashx_lookup(self->uploads, k);
        if (up && now - up->last > (int64_t)self->limits.idle_ms)
            zhashx_delete(self->uploads, k); /* .part kept */
    }
    zlistx_destroy(&keys);
}

static void s_actor(zsock_t *pipe, void *args_)
{
    s_args_t *args = args_;
    s_server_t self = {.pipe = pipe, .limits = args->limits};
    snprintf(self.dir, sizeof self.dir, "%s", args->dir);
    char err[256] = "";
    zsock_signal(pipe, 0);
    self.store = blobstore_new(args->dir, err, sizeof err);
    self.uploads = zhashx_new();
    self.grants = zhashx_new();
    self.fds = zhashx_new();
    zhashx_set_destructor(self.uploads, s_upload_free);
    zhashx_set_destructor(self.grants, s_free);
    self.fgrants = zhashx_new();
    zhashx_set_destructor(self.fds, s_fd_free);
    self.router = zsock_new(ZMQ_ROUTER);
    if (self.store && self.router) {
        /* a greedy peer fills at most this many messages per direction */
        zsock_set_sndhwm(self.router, 2 * TT_BLOB_CREDIT_MAX);
        zsock_set_rcvhwm(self.router, 2 * TT_BLOB_CREDIT_MAX);
        zsock_set_maxmsgsize(self.router, (int64_t)self.limits.max_chunk + 4096);
        zsock_set_linger(self.router, 0);
        if (self.limits.curve_secret[0]) {
            zcert_t *cert = zcert_load(self.limits.curve_secret);
            if (!cert) {
                snprintf(err, sizeof err, "cannot load %.200s", self.limits.curve_secret);
            } else {
                zcert_apply(cert, self.router);
                zsock_set_curve_server(self.router, 1);
                zsock_set_zap_domain(self.router, self.limits.zap_domain);
                zcert_destroy(&cert);
            }
        }
        if (!err[0] && zsock_bind(self.router, "%s", args->endpoint) < 0)
            snprintf(err, sizeof err, "cannot bind %.120s: %.100s", args->endpoint,
                     zmq_strerror(zmq_errno()));
    } else if (!err[0]) {
        snprintf(err, sizeof err, "cannot make the blob socket");
    }
    if (err[0]) {
        zstr_sendx(pipe, "ERROR", err, NULL);
    } else {
        const char *ep = zsock_endpoint(self.router);
        zstr_sendx(pipe, "OK", ep ? ep : args->endpoint, NULL);
        zpoller_t *poller = zpoller_new(pipe, self.router, NULL);
        bool go = true;
        while (go) {
            void *which = zpoller_wait(poller, 1000);
            if (zpoller_terminated(poller))
                break;
            if (which == pipe)
                go = s_pipe(&self);
            for (int i = 0; go && i < BATCH; i++) {
                zmsg_t *msg = zmsg_recv_nowait(self.router);
                if (!msg)
                    break;
                s_peer(&self, msg);
                zmsg_destroy(&msg);
            }
            s_sweep(&self);
        }
        zpoller_destroy(&poller);
    }
    zhashx_destroy(&self.uploads);
    zhashx_destroy(&self.grants);
    zhashx_destroy(&self.fgrants);
    zhashx_destroy(&self.worker_keys);
    zhashx_destroy(&self.fds);
    zsock_destroy(&self.router);
    blobstore_destroy(&self.store);
    free(args);
}

blobsrv_t *blobsrv_new(const char *endpoint, const char *dir, const blobsrv_limits_t *limits,
                       char *err, size_t errlen)
{
    tt_blob_init();
    blobsrv_t *self = calloc(1, sizeof *self);
    s_args_t *args = calloc(1, sizeof *args);
    if (!self || !args) {
        free(self);
        free(args);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(args->endpoint, sizeof args->endpoint, "%s", endpoint);
    snprintf(args->dir, sizeof args->dir, "%s", dir);
    if (limits)
        args->limits = *limits;
    else
        blobsrv_limits_defaults(&args->limits);
    if (args->limits.max_chunk < TT_BLOB_CHUNK_MIN || args->limits.max_chunk > TT_BLOB_CHUNK_MAX)
        args->limits.max_chunk = TT_BLOB_CHUNK_MAX;
    if (args->limits.credit < 1 || args->limits.credit > TT_BLOB_CREDIT_MAX)
        args->limits.credit = TT_BLOB_CREDIT_DEFAULT;
    self->store = blobstore_new(dir, err, errlen);
    if (!self->store) {
        free(args);
        free(self);
        return NULL;
    }
    self->actor = zactor_new(s_actor, args); /* the actor frees args */
    char *status = self->actor ? zstr_recv(self->actor) : NULL;
    char *text = status ? zstr_recv(self->actor) : NULL;
    if (!status || strcmp(status, "OK") != 0) {
        snprintf(err, errlen, "%s", text ? text : "cannot start the blob server");
        zstr_free(&status);
        zstr_free(&text);
        blobsrv_destroy(&self);
        return NULL;
    }
    snprintf(self->endpoint, sizeof self->endpoint, "%s", text);
    zstr_free(&status);
    zstr_free(&text);
    return self;
}

void blobsrv_destroy(blobsrv_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zactor_destroy(&(*self_p)->actor);
    blobstore_destroy(&(*self_p)->store);
    free(*self_p);
    *self_p = NULL;
}

const char *blobsrv_endpoint(const blobsrv_t *self)
{
    return self->endpoint;
}

zsock_t *blobsrv_sock(blobsrv_t *self)
{
    return zactor_sock(self->actor);
}

int blobsrv_recv(blobsrv_t *self, char *digest, uint64_t *size)
{
    return blobsrv_recv_from(self, digest, size, NULL, 0);
}

int blobsrv_recv_from(blobsrv_t *self, char *digest, uint64_t *size, char *user, size_t userlen)
{
    zmsg_t *msg = zmsg_recv(self->actor);
    char *cmd = msg ? zmsg_popstr(msg) : NULL;
    char *d = msg ? zmsg_popstr(msg) : NULL;
    char *s = msg ? zmsg_popstr(msg) : NULL;
    char *u = msg ? zmsg_popstr(msg) : NULL;
    int rc = -1;
    if (cmd && strcmp(cmd, "COMPLETE") == 0 && tt_digest_valid(d) && tt_u64_parse(s, size)) {
        memcpy(digest, d, TT_DIGEST_LEN + 1);
        if (user && userlen)
            snprintf(user, userlen, "%s", u ? u : "");
        rc = 0;
    }
    zstr_free(&cmd);
    zstr_free(&d);
    zstr_free(&s);
    zstr_free(&u);
    zmsg_destroy(&msg);
    return rc;
}

int blobsrv_stat(blobsrv_t *self, const char *digest, uint64_t *size)
{
    char err[256];
    return blobstore_stat(self->store, digest, size, err, sizeof err);
}

int blobsrv_grant(blobsrv_t *self, const char *digest, uint64_t max_size, const char *user)
{
    if (!tt_digest_valid(digest) || (user && strlen(user) >= 128))
        return -1;
    char sz[24];
    s_u64(sz, max_size);
    return zstr_sendx(self->actor, "GRANT", digest, sz, user ? user : "", NULL);
}

int blobsrv_grant_proof(blobsrv_t *self, const char *digest, uint64_t max_size, const char *user)
{
    if (!tt_digest_valid(digest) || (user && strlen(user) >= 128))
        return -1;
    char sz[24];
    s_u64(sz, max_size);
    return zstr_sendx(self->actor, "GRANT", digest, sz, user ? user : "", "1", NULL);
}

int blobsrv_fetch_grant(blobsrv_t *self, const char *digest, const char *user)
{
    if (!tt_digest_valid(digest) || !user || strlen(user) >= 128)
        return -1;
    return zstr_sendx(self->actor, "FGRANT", digest, user, NULL);
}

int blobsrv_revoke(blobsrv_t *self, const char *digest)
{
    if (!tt_digest_valid(digest))
        return -1;
    return zstr_sendx(self->actor, "REVOKE", digest, NULL);
}

int blobsrv_worker_keys(blobsrv_t *self, const void *keys, size_t n)
{
    zmsg_t *m = zmsg_new();
    if (!m)
        return -1;
    zmsg_addstr(m, "WORKER-KEYS");
    zmsg_addmem(m, keys, n);
    return zmsg_send(&m, self->actor);
}

int blobsrv_gc(blobsrv_t *self, const char *const *keep, size_t n, int64_t min_age)
{
    zmsg_t *msg = min_age >= 0 ? zmsg_new() : NULL;
    if (!msg)
        return -1;
    zmsg_addstr(msg, "GC");
    zmsg_addstrf(msg, "%lld", (long long)min_age);
    for (size_t i = 0; i < n; i++)
        zmsg_addstr(msg, keep[i]);
    return zmsg_send(&msg, self->actor);
}
