/*
 * ttimage: the pusher. See ttimage.h.
 *
 * One push is one DEALER and this state machine:
 *   PUT sent, waiting ---OFFSET off--> SENDING from off
 *                    ---HAVE/DONE---> done       ---ERROR---> failed
 *   SENDING: keep sent - acked below credit * chunk; ACK raises acked;
 *            DONE ends it; ERROR NO_UPLOAD (the server restarted and lost
 *            the session) sends PUT again; an OFFSET above the last one
 *            rewinds to it (the server missed a chunk), an older or equal
 *            one is a duplicate and is ignored.
 *   ERROR BUSY (another peer pushes this blob, or the server is full):
 *            PUT again every timeout_ms / 2, for up to give_up_ms.
 *   any state: timeout_ms of silence sends PUT again; give_up_ms fails.
 */
#include "ttimage.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

void ttimage_opts_defaults(ttimage_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->chunk = TT_BLOB_CHUNK_DEFAULT;
    o->credit = TT_BLOB_CREDIT_DEFAULT;
    o->timeout_ms = 3000;
    o->give_up_ms = 60000;
}

static int s_head(const char *path, unsigned char *buf, size_t n)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got == (ssize_t)n ? 0 : -1;
}

static bool s_regular(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

int ttimage_inspect(const char *path, ttimage_info_t *info, char *err, size_t errlen)
{
    memset(info, 0, sizeof *info);
    struct stat sb;
    if (!path || stat(path, &sb))
        FAIL("%s: %s", path ? path : "(null)", strerror(errno));
    unsigned char head[4];
    if (S_ISREG(sb.st_mode)) {
        if (s_head(path, head, 4) || !tt_qcow2_is(head, 4))
            FAIL("%s is not an image: want a qcow2 file, or a directory with kernel (+ initrd) "
                 "and/or disk.qcow2",
                 path);
        snprintf(info->kind, sizeof info->kind, "qcow2");
        return tt_sha256_file(path, info->digest, &info->size, err, errlen);
    }
    if (!S_ISDIR(sb.st_mode))
        FAIL("%s is not an image: neither a file nor a directory", path);
    static const char *names[] = {"disk.qcow2", "initrd", "kernel"};
    tt_manifest_t *m = &info->manifest;
    for (int i = 0; i < 3; i++) {
        char f[4200];
        snprintf(f, sizeof f, "%.4000s/%s", path, names[i]);
        if (!s_regular(f))
            continue;
        if (i == 0 && (s_head(f, head, 4) || !tt_qcow2_is(head, 4)))
            FAIL("%.2000s is not an image: its disk.qcow2 is not a qcow2 file", path);
        tt_manifest_file_t *mf = &m->files[m->n];
        snprintf(mf->name, sizeof mf->name, "%s", names[i]);
        if (tt_sha256_file(f, mf->digest, &mf->size, err, errlen))
            return -1;
        info->size += mf->size;
        m->n++;
    }
    info->manifest_len = tt_manifest_format(m, info->manifest_text, sizeof info->manifest_text);
    tt_manifest_t check;
    if (info->manifest_len < 0 ||
        tt_manifest_parse(info->manifest_text, (size_t)info->manifest_len, &check, err, errlen))
        FAIL("%s is not an image: want kernel (+ initrd) and/or a qcow2 disk.qcow2 in it", path);
    snprintf(info->kind, sizeof info->kind, "dir");
    tt_sha256_t *h = tt_sha256_new();
    if (!h)
        FAIL("out of memory");
    tt_sha256_update(h, info->manifest_text, (size_t)info->manifest_len);
    tt_sha256_final(h, info->digest);
    tt_sha256_destroy(&h);
    info->size += (uint64_t)info->manifest_len;
    return 0;
}

typedef struct {
    int fd;
    const unsigned char *mem;
    uint64_t size;
} s_src_t;

static int s_read(const s_src_t *src, uint64_t off, void *buf, size_t len)
{
    if (src->mem) {
        memcpy(buf, src->mem + off, len);
        return 0;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t n = pread(src->fd, (char *)buf + done, len - done, (off_t)(off + done));
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

/* Never blocks (the socket's send timeout is 0): 0, or -1 when the queue
 * is full or no connection takes it, and the caller tries later. */
static int s_send(zsock_t *s, const char *cmd, const char *digest, const char *a, zframe_t **data,
                  const char *b)
{
    zmsg_t *msg = tt_blob_msg(cmd, digest, a, b, data);
    int rc = msg ? zmsg_send(&msg, s) : -1;
    zmsg_destroy(&msg);
    return rc;
}

static void s_put(zsock_t *s, const char *digest, uint64_t size)
{
    char sz[24];
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)size);
    s_send(s, TT_B_PUT, digest, sz, NULL, NULL);
}

static int s_push(const ttimage_opts_t *opts_in, const char *endpoint, const s_src_t *src,
                  const char *digest, char *err, size_t errlen)
{
    ttimage_opts_t o;
    if (opts_in)
        o = *opts_in;
    else
        ttimage_opts_defaults(&o);
    if (o.chunk < TT_BLOB_CHUNK_MIN || o.chunk > TT_BLOB_CHUNK_MAX)
        o.chunk = TT_BLOB_CHUNK_DEFAULT;
    if (o.credit < 1 || o.credit > TT_BLOB_CREDIT_MAX)
        o.credit = TT_BLOB_CREDIT_DEFAULT;
    if (o.timeout_ms < 10)
        o.timeout_ms = 3000;
    if (o.give_up_ms < o.timeout_ms)
        o.give_up_ms = 20 * o.timeout_ms;
    if (!tt_digest_valid(digest))
        FAIL("invalid digest: want sha256:<64 lowercase hex>");
    if (src->size == 0)
        FAIL("empty file: nothing to push");
    zsock_t *s = zsock_new(ZMQ_DEALER);
    if (!s)
        FAIL("cannot make a socket");
    zsock_set_linger(s, 0);
    zsock_set_sndtimeo(s, 0);
    zsock_set_sndhwm(s, 4 * TT_BLOB_CREDIT_MAX);
    zsock_set_maxmsgsize(s, 64 * 1024);
    zsock_set_reconnect_ivl(s, 100);
    zsock_set_reconnect_ivl_max(s, 2000);
    if (o.server_key[0]) {
        zcert_t *cert = zcert_load(o.client_cert);
        if (!cert) {
            zsock_destroy(&s);
            FAIL("cannot load the client certificate %.200s", o.client_cert);
        }
        zcert_apply(cert, s);
        zsock_set_curve_serverkey(s, o.server_key);
        zcert_destroy(&cert);
    }
    if (zsock_connect(s, "%s", endpoint) < 0) {
        zsock_destroy(&s);
        FAIL("cannot connect to %.200s", endpoint);
    }
    unsigned char *buf = malloc(o.chunk);
    enum { WAIT, SENDING } state = WAIT;
    uint64_t sent = 0, acked = 0, rewound = UINT64_MAX, credit = o.credit;
    uint64_t rate_base = 0;
    int64_t now = zclock_mono(), last_reply = now, last_put = now, rate_t0 = now, busy_since = 0;
    int rc = -1;
    bool finished = false;
    if (!buf) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    s_put(s, digest, src->size);
    while (!finished) {
        now = zclock_mono();
        while (state == SENDING && sent < src->size && sent - acked < credit * o.chunk) {
            if (o.rate_bps &&
                sent - rate_base >= o.rate_bps * (uint64_t)(now - rate_t0) / 1000 + o.chunk)
                break;
            size_t len = src->size - sent < o.chunk ? (size_t)(src->size - sent) : o.chunk;
            if (s_read(src, sent, buf, len)) {
                snprintf(err, errlen, "read at %llu: %s", (unsigned long long)sent,
                         strerror(errno));
                goto out;
            }
            zframe_t *f = zframe_new(buf, len);
            char off[24];
            snprintf(off, sizeof off, "%llu", (unsigned long long)sent);
            if (s_send(s, TT_B_DATA, digest, off, &f, NULL))
                break; /* full: the next turn sends it */
            sent += len;
        }
        zpoller_t *p = zpoller_new(s, NULL);
        zpoller_wait(p, o.rate_bps ? 20 : 100);
        bool term = zpoller_terminated(p);
        zpoller_destroy(&p);
        if (term) {
            snprintf(err, errlen, "interrupted");
            goto out;
        }
        zmsg_t *msg;
        while (!finished && (msg = zmsg_recv_nowait(s))) {
            char *proto = zmsg_popstr(msg), *cmd = zmsg_popstr(msg), *d = zmsg_popstr(msg);
            char *a = zmsg_popstr(msg), *b = zmsg_popstr(msg);
            uint64_t v = 0, c = 0;
            if (proto && strcmp(proto, TT_BLOB_PROTO) == 0 && cmd && d && strcmp(d, digest) == 0) {
                last_reply = zclock_mono();
                if (strcmp(cmd, TT_B_OFFSET) == 0 && tt_u64_parse(a, &v) && tt_u64_parse(b, &c)) {
                    if (state == WAIT || rewound == UINT64_MAX || v > rewound) {
                        state = SENDING;
                        sent = acked = v;
                        rewound = v;
                        rate_base = v;
                        rate_t0 = last_reply;
                        credit = c >= 1 && c < o.credit ? c : o.credit;
                        busy_since = 0;
                        if (o.progress)
                            o.progress(o.arg, digest, v, src->size);
                    }
                } else if (strcmp(cmd, TT_B_ACK) == 0 && tt_u64_parse(a, &v)) {
                    if (v > acked && v <= src->size)
                        acked = v;
                    if (o.progress)
                        o.progress(o.arg, digest, acked, src->size);
                } else if (strcmp(cmd, TT_B_DONE) == 0 || strcmp(cmd, TT_B_HAVE) == 0) {
                    if (!tt_u64_parse(a, &v) || v != src->size) {
                        snprintf(err, errlen, "the server holds %s with %s bytes, not %llu", digest,
                                 a ? a : "?", (unsigned long long)src->size);
                    } else {
                        if (o.progress)
                            o.progress(o.arg, digest, src->size, src->size);
                        rc = 0;
                    }
                    finished = true;
                } else if (strcmp(cmd, TT_B_ERROR) == 0) {
                    if (a && strcmp(a, TT_BE_NO_UPLOAD) == 0) {
                        if (last_reply - last_put > (int64_t)o.timeout_ms / 4 || state == SENDING) {
                            s_put(s, digest, src->size);
                            last_put = last_reply;
                            state = WAIT;
                            rewound = UINT64_MAX;
                        }
                    } else if (a && strcmp(a, TT_BE_BUSY) == 0 &&
                               (busy_since == 0 ||
                                last_reply - busy_since < (int64_t)o.give_up_ms)) {
                        /* another push of this blob, or a full server: ask
                         * again soon (HAVE once the other is done) */
                        if (busy_since == 0)
                            busy_since = last_reply;
                        state = WAIT;
                        rewound = UINT64_MAX;
                    } else {
                        snprintf(err, errlen, "%s: %s", a ? a : "ERROR", b ? b : "");
                        finished = true;
                    }
                }
            }
            zstr_free(&proto);
            zstr_free(&cmd);
            zstr_free(&d);
            zstr_free(&a);
            zstr_free(&b);
            zmsg_destroy(&msg);
        }
        now = zclock_mono();
        if (!finished && now - last_reply > (int64_t)o.give_up_ms) {
            snprintf(err, errlen, "the blob server at %.200s did not answer for %u ms", endpoint,
                     o.give_up_ms);
            goto out;
        }
        bool busy_wait = state == WAIT && busy_since && now - last_put > (int64_t)o.timeout_ms / 2;
        if (!finished && (busy_wait || (now - last_reply > (int64_t)o.timeout_ms &&
                                        now - last_put > (int64_t)o.timeout_ms))) {
            s_put(s, digest, src->size);
            last_put = now;
            state = WAIT;
            rewound = UINT64_MAX;
        }
    }
out:
    free(buf);
    zsock_destroy(&s);
    return rc;
}

int ttimage_push_file(const ttimage_opts_t *opts, const char *endpoint, const char *path,
                      const char *digest, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        FAIL("%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        FAIL("%s is not a regular file", path);
    }
    s_src_t src = {.fd = fd, .size = (uint64_t)sb.st_size};
    int rc = s_push(opts, endpoint, &src, digest, err, errlen);
    close(fd);
    return rc;
}

int ttimage_push_mem(const ttimage_opts_t *opts, const char *endpoint, const void *data,
                     uint64_t size, const char *digest, char *err, size_t errlen)
{
    s_src_t src = {.fd = -1, .mem = data, .size = size};
    return s_push(opts, endpoint, &src, digest, err, errlen);
}

int ttimage_push(const ttimage_opts_t *opts, const char *endpoint, const char *path,
                 ttimage_info_t *info, char *err, size_t errlen)
{
    if (ttimage_inspect(path, info, err, errlen))
        return -1;
    if (strcmp(info->kind, "qcow2") == 0)
        return ttimage_push_file(opts, endpoint, path, info->digest, err, errlen);
    for (size_t i = 0; i < info->manifest.n; i++) {
        char f[4200];
        snprintf(f, sizeof f, "%.4000s/%s", path, info->manifest.files[i].name);
        if (ttimage_push_file(opts, endpoint, f, info->manifest.files[i].digest, err, errlen))
            return -1;
    }
    return ttimage_push_mem(opts, endpoint, info->manifest_text, (uint64_t)info->manifest_len,
                            info->digest, err, errlen);
}
