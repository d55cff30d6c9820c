/*
 * pull: catalog images on this host. See pull.h for rounds and users.
 *
 * One entry per image digest seen since start (bounded: S_MAX_IMAGES;
 * the oldest idle entry is reused). An entry remembers the image's blobs
 * (from the spec) and its current round: which blobs are still pending
 * in the fetcher, the bytes each has moved, what was reserved for it and
 * which blobs the round holds (a held blob is acquired for the round, so
 * a reservation made by another image cannot evict it while it is being
 * verified or before its VM takes it). The fetcher dedupes by digest, so
 * two images that share a blob (a kernel) wait on one transfer.
 */
#include "pull.h"
#include "imgcache.h"
#include "imgfetch.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define S_MAX_IMAGES 256
#define S_MAX_BLOBS (TT_MANIFEST_FILES + 1)

typedef struct {
    char digest[TT_DIGEST_LEN + 1];
    char file[16]; /* "" for the manifest or a qcow2 image's one blob */
    uint64_t size;
    uint64_t got;      /* bytes so far in this round */
    uint64_t reserved; /* cache room reserved for it (it was missing) */
    bool pending;      /* asked of the fetcher, no DONE/FAILED yet */
    bool held;         /* acquired for the round */
} s_blob_t;

typedef struct {
    char digest[TT_DIGEST_LEN + 1];
    bool dir_kind;
    size_t n;
    s_blob_t b[S_MAX_BLOBS];
    uint64_t round, done_round; /* tickets: rounds started / finished */
    bool failed;                /* the last finished round */
    char reason[512];
    char path[4200]; /* materialized, when the last round was READY */
    int64_t used_ms; /* for reusing an idle entry */
} s_image_t;

struct pull_t {
    imgcache_t *cache;
    imgfetch_t *fetch;
    char endpoint[256];
    char img_dir[4200]; /* imgcache's img/ */
    char curve_cert[4096];
    char server_key[41];
    s_image_t *img;
    size_t n_img;
    bool changed;
    uint64_t fetched;
};

/* A .part no fetch took up again for S_PART_TTL seconds (its image went
 * elsewhere) is deleted at start: it is not counted in the cache's size. */
#define S_PART_TTL (24 * 3600)
static void s_sweep_parts(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    time_t now = time(NULL);
    while (d && (de = readdir(d))) {
        size_t n = strlen(de->d_name);
        char path[4400];
        struct stat sb;
        if (n != TT_HEX_LEN + 5 || strcmp(de->d_name + TT_HEX_LEN, ".part") != 0 ||
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name) >= (int)sizeof path ||
            lstat(path, &sb) || !S_ISREG(sb.st_mode) || now - sb.st_mtime < S_PART_TTL)
            continue;
        zsys_info("image cache: deleting %s, untouched for %lld s", path,
                  (long long)(now - sb.st_mtime));
        unlink(path);
    }
    if (d)
        closedir(d);
}

pull_t *pull_new(const pull_opts_t *opts, char *err, size_t errlen)
{
    pull_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->img = calloc(S_MAX_IMAGES, sizeof *self->img);
    self->cache = self->img ? imgcache_new(opts->dir, opts->limit, err, errlen) : NULL;
    if (!self->cache) {
        if (!self->img)
            snprintf(err, errlen, "out of memory");
        pull_destroy(&self);
        return NULL;
    }
    snprintf(self->img_dir, sizeof self->img_dir, "%.4000s/img", opts->dir);
    s_sweep_parts(imgcache_blob_dir(self->cache));
    if (opts->curve_cert)
        snprintf(self->curve_cert, sizeof self->curve_cert, "%s", opts->curve_cert);
    if (opts->server_key)
        snprintf(self->server_key, sizeof self->server_key, "%s", opts->server_key);
    self->changed = true;
    return self;
}

void pull_destroy(pull_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pull_t *self = *self_p;
    imgfetch_destroy(&self->fetch);
    imgcache_destroy(&self->cache);
    free(self->img);
    free(self);
    *self_p = NULL;
}

static s_image_t *s_find(pull_t *self, const char *digest)
{
    for (size_t i = 0; i < self->n_img; i++)
        if (strcmp(self->img[i].digest, digest) == 0)
            return &self->img[i];
    return NULL;
}

static bool s_running(const s_image_t *im)
{
    return im->round > im->done_round;
}

/* A new entry: a free slot, else the idle entry used longest ago. */
static s_image_t *s_slot(pull_t *self)
{
    if (self->n_img < S_MAX_IMAGES)
        return &self->img[self->n_img++];
    s_image_t *old = NULL;
    for (size_t i = 0; i < self->n_img; i++)
        if (!s_running(&self->img[i]) && (!old || self->img[i].used_ms < old->used_ms))
            old = &self->img[i];
    return old;
}

static bool s_endpoint_valid(const char *ep)
{
    if (!ep || strlen(ep) >= 256 || (strncmp(ep, "tcp://", 6) && strncmp(ep, "ipc://", 6)))
        return false;
    for (const char *p = ep; *p; p++)
        if (*p <= ' ' || *p > '~')
            return false;
    return true;
}

/* (Re)starts the fetcher on endpoint and asks it again for every blob in
 * progress (their .part files resume). */
static int s_fetcher(pull_t *self, const char *endpoint, char *err, size_t errlen)
{
    if (self->fetch && strcmp(self->endpoint, endpoint) == 0)
        return 0;
    imgfetch_destroy(&self->fetch);
    imgfetch_opts_t o;
    imgfetch_opts_defaults(&o);
    snprintf(o.endpoint, sizeof o.endpoint, "%s", endpoint);
    snprintf(o.dir, sizeof o.dir, "%s", imgcache_blob_dir(self->cache));
    snprintf(o.client_cert, sizeof o.client_cert, "%s", self->curve_cert);
    snprintf(o.server_key, sizeof o.server_key, "%s", self->server_key);
    self->fetch = imgfetch_new(&o, err, errlen);
    if (!self->fetch)
        return -1;
    snprintf(self->endpoint, sizeof self->endpoint, "%s", endpoint);
    zsys_info("image fetcher: blob server %s", endpoint);
    for (size_t i = 0; i < self->n_img; i++)
        for (size_t k = 0; k < self->img[i].n; k++)
            if (self->img[i].b[k].pending)
                imgfetch_ensure(self->fetch, self->img[i].b[k].digest, self->img[i].b[k].size);
    return 0;
}

/* Checks the spec's image description into im (not yet in the table). */
static int s_describe(const Ttfleet__VmSpec *spec, s_image_t *im, char *err, size_t errlen)
{
    memset(im, 0, sizeof *im);
    if (!tt_digest_valid(spec->image_digest)) {
        snprintf(err, errlen, "image digest is not sha256:<64 hex>");
        return -1;
    }
    bool qcow2 = spec->image_kind && strcmp(spec->image_kind, "qcow2") == 0;
    im->dir_kind = spec->image_kind && strcmp(spec->image_kind, "dir") == 0;
    if (!qcow2 && !im->dir_kind) {
        snprintf(err, errlen, "image kind must be qcow2 or dir");
        return -1;
    }
    if (spec->n_image_blobs < 1 || spec->n_image_blobs > S_MAX_BLOBS ||
        (qcow2 && spec->n_image_blobs != 1)) {
        snprintf(err, errlen, "an image has 1 blob (qcow2) or 2..4 (manifest and files)");
        return -1;
    }
    bool self_blob = false;
    for (size_t i = 0; i < spec->n_image_blobs; i++) {
        const Ttfleet__ImageBlob *b = spec->image_blobs[i];
        if (!b || !tt_digest_valid(b->digest) || b->size == 0 || b->size > (1ULL << 40)) {
            snprintf(err, errlen, "image blob %zu: bad digest or size", i);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(im->b[j].digest, b->digest) == 0) {
                snprintf(err, errlen, "image blob %s listed twice", b->digest);
                return -1;
            }
        memcpy(im->b[i].digest, b->digest, TT_DIGEST_LEN + 1);
        snprintf(im->b[i].file, sizeof im->b[i].file, "%s",
                 b->file && strlen(b->file) < sizeof im->b[i].file ? b->file : "");
        im->b[i].size = b->size;
        self_blob |= strcmp(b->digest, spec->image_digest) == 0;
    }
    if (!self_blob) {
        snprintf(err, errlen, "the image's digest is none of its blobs");
        return -1;
    }
    memcpy(im->digest, spec->image_digest, TT_DIGEST_LEN + 1);
    im->n = spec->n_image_blobs;
    return 0;
}

/* Ends im's round: releases what it held, gives back what it reserved
 * and, if every blob is done, materializes the image. */
static void s_round_end(pull_t *self, s_image_t *im)
{
    if (!im->failed) {
        tt_manifest_t m, *mp = NULL;
        char err[300] = "";
        if (im->dir_kind) {
            char path[4200], text[TT_MANIFEST_MAX + 1];
            imgcache_path(self->cache, im->digest, false, path, sizeof path);
            int fd = open(path, O_RDONLY | O_CLOEXEC);
            ssize_t n = fd >= 0 ? read(fd, text, sizeof text) : -1;
            if (fd >= 0)
                close(fd);
            if (n <= 0 || n > TT_MANIFEST_MAX ||
                tt_manifest_parse(text, (size_t)n, &m, err, sizeof err)) {
                im->failed = true;
                snprintf(im->reason, sizeof im->reason, "image %.19s...: manifest: %.200s", im->digest,
                         n > 0 ? err : "unreadable");
            }
            mp = &m;
        }
        if (!im->failed && imgcache_materialize(self->cache, im->digest, mp, im->path,
                                                sizeof im->path, err, sizeof err)) {
            im->failed = true;
            snprintf(im->reason, sizeof im->reason, "materialize image: %.300s", err);
        }
    }
    for (size_t k = 0; k < im->n; k++) {
        if (im->b[k].held)
            imgcache_release(self->cache, im->b[k].digest);
        if (im->b[k].reserved)
            imgcache_unreserve(self->cache, im->b[k].reserved);
        im->b[k].held = false;
        im->b[k].reserved = 0;
        im->b[k].pending = false;
    }
    im->done_round = im->round;
    zsys_info("image %s: %s%s", im->digest, im->failed ? "FAILED: " : "ready in ",
              im->failed ? im->reason : im->path);
}

int pull_want(pull_t *self, const Ttfleet__VmSpec *spec, uint64_t *ticket, char *err,
              size_t errlen)
{
    s_image_t want;
    if (s_describe(spec, &want, err, errlen))
        return -1;
    if (!s_endpoint_valid(spec->blobs_endpoint)) {
        snprintf(err, errlen, "no valid blobs endpoint for image %s", spec->image_digest);
        return -1;
    }
    s_image_t *im = s_find(self, want.digest);
    if (im && s_running(im)) {
        im->used_ms = zclock_mono();
        *ticket = im->round;
        return 0;
    }
    if (s_fetcher(self, spec->blobs_endpoint, err, errlen))
        return -1;
    if (!im) {
        im = s_slot(self);
        if (!im) {
            snprintf(err, errlen, "too many images being fetched at once");
            return -1;
        }
        *im = want;
    } else {
        uint64_t r = im->round;
        *im = want; /* the spec's description is the catalog's: it wins */
        im->round = im->done_round = r;
    }
    im->used_ms = zclock_mono();
    im->failed = false;
    im->reason[0] = 0;
    im->path[0] = 0;
    im->round++;
    /* hold what is cached (it is verified by the fetcher before DONE),
     * reserve room for what is not */
    for (size_t k = 0; k < im->n; k++) {
        s_blob_t *b = &im->b[k];
        if (imgcache_has(self->cache, b->digest)) {
            b->held = imgcache_acquire(self->cache, b->digest) == 0;
            continue;
        }
        bool shared = false; /* another round reserved for it already */
        for (size_t i = 0; i < self->n_img && !shared; i++)
            for (size_t j = 0; &self->img[i] != im && j < self->img[i].n && !shared; j++)
                shared = self->img[i].b[j].pending && self->img[i].b[j].reserved &&
                         strcmp(self->img[i].b[j].digest, b->digest) == 0;
        if (shared)
            continue;
        char why[300];
        if (imgcache_reserve(self->cache, b->size, why, sizeof why)) {
            snprintf(err, errlen, "image %s: %.300s", im->digest, why);
            im->failed = true;
            snprintf(im->reason, sizeof im->reason, "%.400s", err);
            s_round_end(self, im);
            return -1;
        }
        b->reserved = b->size;
        self->changed = true; /* the reservation may have evicted */
    }
    for (size_t k = 0; k < im->n; k++) {
        im->b[k].pending = true;
        im->b[k].got = 0;
        imgfetch_ensure(self->fetch, im->b[k].digest, im->b[k].size);
    }
    *ticket = im->round;
    return 0;
}

pull_state_t pull_state(pull_t *self, const char *digest, uint64_t ticket, uint64_t *done,
                        uint64_t *total, char *dir, size_t dirlen, char *err, size_t errlen)
{
    s_image_t *im = tt_digest_valid(digest) ? s_find(self, digest) : NULL;
    *done = *total = 0;
    if (!im) {
        snprintf(err, errlen, "image %s: no fetch of it is known", digest);
        return PULL_FAILED;
    }
    for (size_t k = 0; k < im->n; k++) {
        *total += im->b[k].size;
        *done += im->b[k].pending ? im->b[k].got : im->b[k].size;
    }
    if (im->done_round < ticket)
        return PULL_BUSY;
    if (im->failed) {
        snprintf(err, errlen, "%s", im->reason);
        return PULL_FAILED;
    }
    snprintf(dir, dirlen, "%s", im->path);
    return PULL_READY;
}

/* One fetcher event for every round waiting on its digest. */
static void s_event(pull_t *self, const imgfetch_event_t *ev)
{
    if (ev->kind == IMGFETCH_DONE && ev->got)
        self->fetched++;
    if (ev->kind == IMGFETCH_DONE)
        zsys_info("blob %s: done, %llu bytes, %llu fetched", ev->digest,
                  (unsigned long long)ev->total, (unsigned long long)ev->got);
    else if (ev->kind == IMGFETCH_FAILED)
        zsys_warning("blob %s: fetch failed: %s", ev->digest, ev->reason);
    for (size_t i = 0; i < self->n_img; i++) {
        s_image_t *im = &self->img[i];
        bool hit = false;
        for (size_t k = 0; k < im->n; k++) {
            s_blob_t *b = &im->b[k];
            if (!b->pending || strcmp(b->digest, ev->digest) != 0)
                continue;
            hit = true;
            if (ev->kind == IMGFETCH_PROGRESS) {
                b->got = ev->got;
                continue;
            }
            b->pending = false;
            if (ev->kind == IMGFETCH_FAILED) {
                im->failed = true;
                snprintf(im->reason, sizeof im->reason, "fetch of blob %s failed: %.250s", b->digest,
                         ev->reason);
                continue;
            }
            char why[300];
            if (!imgcache_has(self->cache, b->digest) || ev->got) {
                /* new, or fetched again after a corrupted copy */
                if (imgcache_add(self->cache, b->digest, b->reserved, why, sizeof why)) {
                    im->failed = true;
                    snprintf(im->reason, sizeof im->reason, "blob %s: %.300s", b->digest, why);
                }
                b->reserved = 0;
                self->changed = true;
            }
            if (!b->held && !im->failed)
                b->held = imgcache_acquire(self->cache, b->digest) == 0;
        }
        if (!hit || ev->kind == IMGFETCH_PROGRESS)
            continue;
        bool left = false;
        for (size_t k = 0; k < im->n; k++)
            left |= im->b[k].pending;
        if (!left)
            s_round_end(self, im);
    }
}

bool pull_poll(pull_t *self)
{
    bool moved = false;
    for (int k = 0; self->fetch && k < 1000; k++) {
        zsock_t *sock = imgfetch_sock(self->fetch);
        if (!(zsock_events(sock) & ZMQ_POLLIN))
            break;
        imgfetch_event_t ev;
        if (imgfetch_recv(self->fetch, &ev) == 0) {
            s_event(self, &ev);
            moved = true;
        }
    }
    return moved;
}

void pull_trim(pull_t *self)
{
    imgcache_trim(self->cache);
    self->changed = true;
}

bool pull_busy(const pull_t *self)
{
    for (size_t i = 0; i < self->n_img; i++)
        if (s_running(&self->img[i]))
            return true;
    return false;
}

/* The blobs of a held image: the one blob of a qcow2 image, or the
 * manifest and its files. -1 if the image is not held or its manifest
 * does not parse. */
static int s_image_blobs(pull_t *self, const char *digest, char out[][TT_DIGEST_LEN + 1],
                         size_t *n)
{
    *n = 0;
    if (!imgcache_has(self->cache, digest))
        return -1;
    memcpy(out[(*n)++], digest, TT_DIGEST_LEN + 1);
    char path[4200], text[TT_MANIFEST_MAX + 1], why[200];
    imgcache_path(self->cache, digest, false, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t got = read(fd, text, sizeof text);
    close(fd);
    if (got <= 0 || !tt_manifest_is(text, (size_t)got))
        return 0; /* a qcow2 image: its one blob */
    tt_manifest_t m;
    if (got > TT_MANIFEST_MAX || tt_manifest_parse(text, (size_t)got, &m, why, sizeof why))
        return -1;
    for (size_t i = 0; i < m.n; i++)
        memcpy(out[(*n)++], m.files[i].digest, TT_DIGEST_LEN + 1);
    return 0;
}

int pull_acquire(pull_t *self, const char *image_digest)
{
    char blobs[S_MAX_BLOBS][TT_DIGEST_LEN + 1];
    size_t n;
    if (s_image_blobs(self, image_digest, blobs, &n))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (imgcache_acquire(self->cache, blobs[i])) {
            while (i--)
                imgcache_release(self->cache, blobs[i]);
            return -1;
        }
    return 0;
}

void pull_release(pull_t *self, const char *image_digest)
{
    char blobs[S_MAX_BLOBS][TT_DIGEST_LEN + 1];
    size_t n;
    if (s_image_blobs(self, image_digest, blobs, &n))
        return;
    for (size_t i = 0; i < n; i++)
        imgcache_release(self->cache, blobs[i]);
}

const char *pull_img_dir(const pull_t *self)
{
    return self->img_dir;
}

const char **pull_digests(pull_t *self, size_t *n)
{
    return imgcache_digests(self->cache, n);
}

uint64_t pull_used(const pull_t *self)
{
    return imgcache_used(self->cache);
}

uint64_t pull_limit(const pull_t *self)
{
    return imgcache_limit(self->cache);
}

bool pull_changed(pull_t *self)
{
    bool c = self->changed;
    self->changed = false;
    return c;
}

uint64_t pull_fetched(const pull_t *self)
{
    return self->fetched;
}

imgcache_t *pull_cache(pull_t *self)
{
    return self->cache;
}
