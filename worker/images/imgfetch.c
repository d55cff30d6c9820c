/*
 * imgfetch: the fetcher actor. See imgfetch.h for what "ensure" means.
 *
 * A job per digest moves through
 *     QUEUED -> VERIFY (a cached copy) -> DONE
 *                  \ corrupted: delete, then STAT
 *     QUEUED -> STAT -> REHASH (the .part so far) -> FETCH -> DONE | FAILED
 * Hashing (VERIFY, REHASH) advances one slice per loop turn so one big
 * file never stops the others. In FETCH the job keeps requested - written
 * below credit * chunk; a CHUNK is taken only at exactly the written
 * offset (anything else is a late duplicate of a request asked again and
 * is dropped), so the .part is always a prefix of the blob. The owner's
 * pipe carries only small messages; the data never crosses it.
 */
#include "imgfetch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLICE (8u << 20)
#define BATCH 256
#define PROGRESS_MS 200

typedef enum { P_QUEUED, P_VERIFY, P_STAT, P_REHASH, P_FETCH } s_phase_t;

typedef struct {
    char digest[TT_DIGEST_LEN + 1];
    s_phase_t phase;
    int fd;
    tt_sha256_t *sha;
    uint64_t expect, total, written, requested, hashed, hash_end, fetched;
    uint64_t rate_base;
    int64_t rate_t0, last_reply, last_ask, last_progress, last_event;
    int attempts;
} s_job_t;

struct imgfetch_t {
    zactor_t *actor;
};

typedef struct {
    zsock_t *pipe, *dealer;
    imgfetch_opts_t o;
    zlistx_t *jobs; /* s_job_t*, in arrival order */
    size_t active;
    unsigned char *buf; /* SLICE bytes for hashing */
} s_fetcher_t;

void imgfetch_opts_defaults(imgfetch_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->chunk = TT_BLOB_CHUNK_DEFAULT;
    o->credit = TT_BLOB_CREDIT_DEFAULT;
    o->timeout_ms = 3000;
    o->give_up_ms = 60000;
    o->max_active = 4;
}

static void s_path(s_fetcher_t *self, const char *digest, bool part, char *buf, size_t len)
{
    snprintf(buf, len, "%.4000s/%s%s", self->o.dir, tt_digest_hex(digest), part ? ".part" : "");
}

static void s_send(s_fetcher_t *self, const char *cmd, const char *digest, const char *a,
                   const char *b)
{
    zmsg_t *msg = tt_blob_msg(cmd, digest, a, b, NULL);
    if (!msg)
        return;
    /* never block the actor: a full queue is a lost request the timer asks again */
    zsock_set_sndtimeo(self->dealer, 0);
    zmsg_send(&msg, self->dealer);
    zmsg_destroy(&msg);
}

static void s_job_close(s_fetcher_t *self, s_job_t *job)
{
    if (job->fd >= 0)
        close(job->fd);
    job->fd = -1;
    tt_sha256_destroy(&job->sha);
    if (job->phase != P_QUEUED && self->active)
        self->active--;
}

static void s_remove(s_fetcher_t *self, s_job_t *job)
{
    s_job_close(self, job);
    void *h = zlistx_find(self->jobs, job);
    if (h)
        zlistx_delete(self->jobs, h);
    free(job);
}

static void s_done(s_fetcher_t *self, s_job_t *job)
{
    char sz[24], moved[24];
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)job->total);
    snprintf(moved, sizeof moved, "%llu", (unsigned long long)job->fetched);
    zstr_sendx(self->pipe, "DONE", job->digest, sz, moved, NULL);
    s_remove(self, job);
}

static void s_failed(s_fetcher_t *self, s_job_t *job, const char *reason)
{
    zsys_warning("imgfetch: %s: %s", job->digest, reason);
    zstr_sendx(self->pipe, "FAILED", job->digest, reason, NULL);
    s_remove(self, job);
}

static void s_progress(s_fetcher_t *self, s_job_t *job, bool force)
{
    int64_t now = zclock_mono();
    if (!force && now - job->last_event < PROGRESS_MS)
        return;
    job->last_event = now;
    char got[24], total[24];
    snprintf(got, sizeof got, "%llu", (unsigned long long)job->written);
    snprintf(total, sizeof total, "%llu", (unsigned long long)job->total);
    zstr_sendx(self->pipe, "PROGRESS", job->digest, got, total, NULL);
}

static void s_stat(s_fetcher_t *self, s_job_t *job)
{
    job->phase = P_STAT;
    job->last_reply = zclock_mono();
    s_send(self, TT_B_STAT, job->digest, NULL, NULL);
}

/* Start a queued job: verify a cached copy, or ask the server. */
static void s_start(s_fetcher_t *self, s_job_t *job)
{
    self->active++;
    job->last_progress = job->last_reply = zclock_mono();
    job->sha = tt_sha256_new();
    char path[4200];
    s_path(self, job->digest, false, path, sizeof path);
    struct stat sb;
    job->fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (job->fd >= 0 && fstat(job->fd, &sb) == 0 && S_ISREG(sb.st_mode)) {
        job->phase = P_VERIFY;
        job->total = (uint64_t)sb.st_size;
        job->hashed = 0;
        job->hash_end = job->total;
        return;
    }
    if (job->fd >= 0)
        close(job->fd);
    job->fd = -1;
    s_stat(self, job);
}

/* The job is FETCH and every byte is written: check and publish. */
static void s_finish(s_fetcher_t *self, s_job_t *job)
{
    char got[TT_DIGEST_LEN + 1], part[4200], path[4200];
    tt_sha256_final(job->sha, got);
    s_path(self, job->digest, true, part, sizeof part);
    s_path(self, job->digest, false, path, sizeof path);
    if (strcmp(got, job->digest) != 0) {
        unlink(part);
        if (++job->attempts >= 3)
            return s_failed(self, job, "the fetched data does not match the digest (3 attempts)");
        zsys_warning("imgfetch: %s: fetched data hashes to %s; fetching again", job->digest, got);
        close(job->fd);
        job->fd = -1;
        tt_sha256_destroy(&job->sha);
        job->sha = tt_sha256_new();
        return s_stat(self, job);
    }
    if (fsync(job->fd) || rename(part, path)) {
        char why[256];
        snprintf(why, sizeof why, "cannot commit %.100s: %s", path, strerror(errno));
        return s_failed(self, job, why);
    }
    s_progress(self, job, true);
    s_done(self, job);
}

/* One slice of VERIFY or REHASH. */
static void s_hash_step(s_fetcher_t *self, s_job_t *job)
{
    uint64_t n = job->hash_end - job->hashed < SLICE ? job->hash_end - job->hashed : SLICE;
    char err[256];
    if (n) {
        unsigned char *buf = self->buf;
        ssize_t got = pread(job->fd, buf, (size_t)n, (off_t)job->hashed);
        if (got <= 0) {
            snprintf(err, sizeof err, "read: %s", got ? strerror(errno) : "file shrank");
            return s_failed(self, job, err);
        }
        tt_sha256_update(job->sha, buf, (size_t)got);
        job->hashed += (uint64_t)got;
    }
    if (job->hashed < job->hash_end)
        return;
    if (job->phase == P_VERIFY) {
        char got[TT_DIGEST_LEN + 1];
        tt_sha256_final(job->sha, got);
        if (strcmp(got, job->digest) == 0 && (job->expect == 0 || job->expect == job->total))
            return s_done(self, job);
        char path[4200];
        s_path(self, job->digest, false, path, sizeof path);
        zsys_warning("imgfetch: cached %s is corrupted (hashes to %s); fetching it again",
                     job->digest, got);
        unlink(path);
        close(job->fd);
        job->fd = -1;
        return s_stat(self, job);
    }
    /* REHASH done: fetch the rest */
    job->phase = P_FETCH;
    job->requested = job->written;
    job->rate_base = job->written;
    job->rate_t0 = zclock_mono();
    if (job->written == job->total)
        s_finish(self, job);
}

static void s_pump(s_fetcher_t *self, s_job_t *job)
{
    uint64_t window = (uint64_t)self->o.credit * self->o.chunk;
    int64_t now = zclock_mono();
    while (job->requested < job->total && job->requested - job->written < window) {
        if (self->o.rate_bps) {
            uint64_t allowed =
                self->o.rate_bps * (uint64_t)(now - job->rate_t0) / 1000 + self->o.chunk;
            if (job->requested - job->rate_base >= allowed)
                break;
        }
        uint64_t len = job->total - job->requested < self->o.chunk ? job->total - job->requested
                                                                   : self->o.chunk;
        char off[24], l[24];
        snprintf(off, sizeof off, "%llu", (unsigned long long)job->requested);
        snprintf(l, sizeof l, "%llu", (unsigned long long)len);
        s_send(self, TT_B_GET, job->digest, off, l);
        job->requested += len;
    }
}

static s_job_t *s_find(s_fetcher_t *self, const char *digest)
{
    for (s_job_t *j = zlistx_first(self->jobs); j; j = zlistx_next(self->jobs))
        if (strcmp(j->digest, digest) == 0)
            return j;
    return NULL;
}

static void s_on_size(s_fetcher_t *self, s_job_t *job, const char *sizes)
{
    uint64_t size = 0;
    if (!tt_u64_parse(sizes, &size))
        return s_failed(self, job, "the blob server sent a bad size");
    if (job->expect && job->expect != size) {
        char why[128];
        snprintf(why, sizeof why, "the blob server has %llu bytes, %llu expected",
                 (unsigned long long)size, (unsigned long long)job->expect);
        return s_failed(self, job, why);
    }
    job->total = size;
    char part[4200];
    s_path(self, job->digest, true, part, sizeof part);
    job->fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    struct stat sb;
    if (job->fd < 0 || fstat(job->fd, &sb) || !S_ISREG(sb.st_mode)) {
        char why[256];
        snprintf(why, sizeof why, "cannot open %.100s: %s", part, strerror(errno));
        return s_failed(self, job, why);
    }
    job->written = (uint64_t)sb.st_size;
    if (job->written > size) {
        if (ftruncate(job->fd, 0))
            return s_failed(self, job, "cannot truncate the partial file");
        job->written = 0;
    }
    if (job->written)
        zsys_info("imgfetch: %s: resuming at %llu of %llu bytes", job->digest,
                  (unsigned long long)job->written, (unsigned long long)size);
    job->phase = P_REHASH;
    job->hashed = 0;
    job->hash_end = job->written;
}

static void s_on_chunk(s_fetcher_t *self, s_job_t *job, const char *offs, zframe_t *data)
{
    uint64_t off = 0;
    if (!tt_u64_parse(offs, &off) || off != job->written || !data)
        return; /* a late duplicate */
    size_t len = zframe_size(data);
    if (len == 0 || len > job->total - job->written)
        return s_failed(self, job, "the blob server sent a chunk of the wrong size");
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(job->fd, zframe_data(data) + done, len - done, (off_t)(off + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            char why[128];
            snprintf(why, sizeof why, "write: %s", strerror(errno));
            if (ftruncate(job->fd, (off_t)job->written)) {
            }
            return s_failed(self, job, why);
        }
        done += (size_t)n;
    }
    tt_sha256_update(job->sha, zframe_data(data), len);
    job->written += len;
    job->fetched += len;
    job->last_progress = zclock_mono();
    if (job->written == job->total)
        return s_finish(self, job);
    s_progress(self, job, false);
}

static void s_dealer(s_fetcher_t *self, zmsg_t *msg)
{
    char *proto = zmsg_popstr(msg), *cmd = zmsg_popstr(msg), *digest = zmsg_popstr(msg);
    char *a = zmsg_size(msg) ? zmsg_popstr(msg) : NULL;
    s_job_t *job = NULL;
    if (proto && strcmp(proto, TT_BLOB_PROTO) == 0 && cmd && tt_digest_valid(digest))
        job = s_find(self, digest);
    if (job)
        job->last_reply = zclock_mono();
    if (!job || job->phase == P_QUEUED) {
        /* not ours (any more) */
    } else if (strcmp(cmd, TT_B_SIZE) == 0 && job->phase == P_STAT) {
        s_on_size(self, job, a);
    } else if (strcmp(cmd, TT_B_CHUNK) == 0 && job->phase == P_FETCH) {
        zframe_t *data = zmsg_pop(msg);
        s_on_chunk(self, job, a, data);
        zframe_destroy(&data);
    } else if (strcmp(cmd, TT_B_ERROR) == 0 && (job->phase == P_STAT || job->phase == P_FETCH)) {
        char *text = zmsg_popstr(msg);
        char why[256];
        snprintf(why, sizeof why, "blob server: %.40s: %.180s", a ? a : "?", text ? text : "");
        zstr_free(&text);
        s_failed(self, job, why);
    }
    zstr_free(&proto);
    zstr_free(&cmd);
    zstr_free(&digest);
    zstr_free(&a);
}

static bool s_pipe(s_fetcher_t *self)
{
    zmsg_t *msg = zmsg_recv(self->pipe);
    char *cmd = msg ? zmsg_popstr(msg) : NULL;
    bool go = cmd && strcmp(cmd, "$TERM") != 0;
    if (go && strcmp(cmd, "ENSURE") == 0) {
        char *digest = zmsg_popstr(msg), *size = zmsg_popstr(msg);
        uint64_t expect = 0;
        if (tt_digest_valid(digest) && tt_u64_parse(size, &expect) && !s_find(self, digest)) {
            s_job_t *job = calloc(1, sizeof *job);
            if (job) {
                memcpy(job->digest, digest, TT_DIGEST_LEN + 1);
                job->fd = -1;
                job->expect = expect;
                zlistx_add_end(self->jobs, job);
            }
        }
        zstr_free(&digest);
        zstr_free(&size);
    }
    zstr_free(&cmd);
    zmsg_destroy(&msg);
    return go;
}

/* Timers and starts; returns the poll timeout for the next turn. */
static int s_tick(s_fetcher_t *self)
{
    int64_t now = zclock_mono();
    int wait = 100;
    /* a snapshot: a step may remove its own job (and move the cursor) */
    size_t n = zlistx_size(self->jobs), k = 0;
    s_job_t **snap = malloc((n ? n : 1) * sizeof *snap);
    if (!snap)
        return wait;
    for (s_job_t *j = zlistx_first(self->jobs); j && k < n; j = zlistx_next(self->jobs))
        snap[k++] = j;
    for (size_t i = 0; i < k; i++) {
        s_job_t *job = snap[i];
        if (job->phase == P_QUEUED && self->active < self->o.max_active)
            s_start(self, job);
        if (job->phase == P_VERIFY || job->phase == P_REHASH) {
            s_hash_step(self, job);
            wait = 0;
        } else if (job->phase == P_STAT || job->phase == P_FETCH) {
            if (now - job->last_progress > (int64_t)self->o.give_up_ms &&
                now - job->last_reply > (int64_t)self->o.give_up_ms) {
                s_failed(self, job, "the blob server did not answer");
            } else if (now - job->last_reply > (int64_t)self->o.timeout_ms &&
                       now - job->last_ask > (int64_t)self->o.timeout_ms) {
                /* ask again from what is verified */
                job->last_ask = now;
                if (job->phase == P_STAT) {
                    s_send(self, TT_B_STAT, job->digest, NULL, NULL);
                } else {
                    job->requested = job->written;
                    job->rate_base = job->written;
                    job->rate_t0 = now;
                    s_pump(self, job);
                }
            } else if (job->phase == P_FETCH) {
                s_pump(self, job);
            }
        }
    }
    free(snap);
    return wait;
}

static void s_actor(zsock_t *pipe, void *args)
{
    s_fetcher_t self = {.pipe = pipe};
    self.o = *(imgfetch_opts_t *)args;
    free(args);
    self.jobs = zlistx_new();
    self.buf = malloc(SLICE);
    self.dealer = zsock_new(ZMQ_DEALER);
    zsock_signal(pipe, 0);
    char err[256] = "";
    if (!self.dealer || !self.jobs || !self.buf) {
        snprintf(err, sizeof err, "cannot make the fetch socket");
    } else {
        uint32_t hwm = self.o.credit * self.o.max_active * 2 + 64;
        zsock_set_sndhwm(self.dealer, (int)hwm);
        zsock_set_rcvhwm(self.dealer, (int)hwm);
        zsock_set_maxmsgsize(self.dealer, (int64_t)TT_BLOB_CHUNK_MAX + 4096);
        zsock_set_reconnect_ivl(self.dealer, 100);
        zsock_set_reconnect_ivl_max(self.dealer, 2000);
        zsock_set_linger(self.dealer, 0);
        if (self.o.server_key[0]) {
            zcert_t *cert = zcert_load(self.o.client_cert);
            if (!cert) {
                snprintf(err, sizeof err, "cannot load %.200s", self.o.client_cert);
            } else {
                zcert_apply(cert, self.dealer);
                zsock_set_curve_serverkey(self.dealer, self.o.server_key);
                zcert_destroy(&cert);
            }
        }
        if (!err[0] && zsock_connect(self.dealer, "%s", self.o.endpoint) < 0)
            snprintf(err, sizeof err, "cannot connect %.200s", self.o.endpoint);
    }
    zstr_sendx(pipe, err[0] ? "ERROR" : "OK", err, NULL);
    if (!err[0]) {
        zpoller_t *poller = zpoller_new(pipe, self.dealer, NULL);
        bool go = true;
        int wait = 100;
        while (go) {
            void *which = zpoller_wait(poller, wait);
            if (zpoller_terminated(poller))
                break;
            /* every waiting request before any work: ensures of one
             * digest that arrive together become one job */
            (void)which;
            while (go && (zsock_events(pipe) & ZMQ_POLLIN))
                go = s_pipe(&self);
            for (int i = 0; go && i < BATCH; i++) {
                zmsg_t *msg = zmsg_recv_nowait(self.dealer);
                if (!msg)
                    break;
                s_dealer(&self, msg);
                zmsg_destroy(&msg);
            }
            if (go)
                wait = s_tick(&self);
        }
        zpoller_destroy(&poller);
    }
    s_job_t *job;
    while ((job = zlistx_first(self.jobs)))
        s_remove(&self, job); /* .part files stay for the next run */
    zlistx_destroy(&self.jobs);
    zsock_destroy(&self.dealer);
    free(self.buf);
}

imgfetch_t *imgfetch_new(const imgfetch_opts_t *opts, char *err, size_t errlen)
{
    tt_blob_init();
    imgfetch_opts_t *o = malloc(sizeof *o);
    imgfetch_t *self = calloc(1, sizeof *self);
    if (!o || !self) {
        free(o);
        free(self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    *o = *opts;
    if (o->chunk < TT_BLOB_CHUNK_MIN || o->chunk > TT_BLOB_CHUNK_MAX)
        o->chunk = TT_BLOB_CHUNK_DEFAULT;
    if (o->credit < 1 || o->credit > TT_BLOB_CREDIT_MAX)
        o->credit = TT_BLOB_CREDIT_DEFAULT;
    if (o->max_active < 1)
        o->max_active = 4;
    if (o->timeout_ms < 10)
        o->timeout_ms = 3000;
    if (o->give_up_ms < o->timeout_ms)
        o->give_up_ms = 20 * o->timeout_ms;
    self->actor = zactor_new(s_actor, o); /* the actor frees o */
    char *status = self->actor ? zstr_recv(self->actor) : NULL;
    char *text = status ? zstr_recv(self->actor) : NULL;
    if (!status || strcmp(status, "OK") != 0) {
        snprintf(err, errlen, "%s", text && *text ? text : "cannot start the fetcher");
        zstr_free(&status);
        zstr_free(&text);
        imgfetch_destroy(&self);
        return NULL;
    }
    zstr_free(&status);
    zstr_free(&text);
    return self;
}

void imgfetch_destroy(imgfetch_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zactor_destroy(&(*self_p)->actor);
    free(*self_p);
    *self_p = NULL;
}

zsock_t *imgfetch_sock(imgfetch_t *self)
{
    return zactor_sock(self->actor);
}

int imgfetch_ensure(imgfetch_t *self, const char *digest, uint64_t size)
{
    if (!tt_digest_valid(digest))
        return -1;
    char sz[24];
    snprintf(sz, sizeof sz, "%llu", (unsigned long long)size);
    return zstr_sendx(self->actor, "ENSURE", digest, sz, NULL);
}

int imgfetch_recv(imgfetch_t *self, imgfetch_event_t *ev)
{
    memset(ev, 0, sizeof *ev);
    zmsg_t *msg = zmsg_recv(self->actor);
    char *kind = msg ? zmsg_popstr(msg) : NULL;
    char *digest = msg ? zmsg_popstr(msg) : NULL;
    char *a = msg ? zmsg_popstr(msg) : NULL;
    char *b = msg ? zmsg_popstr(msg) : NULL;
    int rc = -1;
    if (kind && tt_digest_valid(digest)) {
        memcpy(ev->digest, digest, TT_DIGEST_LEN + 1);
        if (strcmp(kind, "PROGRESS") == 0 && tt_u64_parse(a, &ev->got) &&
            tt_u64_parse(b, &ev->total)) {
            ev->kind = IMGFETCH_PROGRESS;
            rc = 0;
        } else if (strcmp(kind, "DONE") == 0 && tt_u64_parse(a, &ev->total) &&
                   tt_u64_parse(b, &ev->got)) {
            ev->kind = IMGFETCH_DONE;
            rc = 0;
        } else if (strcmp(kind, "FAILED") == 0) {
            ev->kind = IMGFETCH_FAILED;
            snprintf(ev->reason, sizeof ev->reason, "%s", a ? a : "");
            rc = 0;
        }
    }
    zstr_free(&kind);
    zstr_free(&digest);
    zstr_free(&a);
    zstr_free(&b);
    zmsg_destroy(&msg);
    return rc;
}
