/*
 * imgcache: the host's image blob cache. See imgcache.h for the layout,
 * the eviction rule and which thread calls what.
 */
#include "imgcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

typedef struct {
    char digest[TT_DIGEST_LEN + 1];
    uint64_t size;
    uint64_t tick; /* last use: larger is more recent */
    int users;
} s_entry_t;

struct imgcache_t {
    char dir[4096], blobs[4096], img[4096];
    uint64_t limit, used, reserved, tick;
    s_entry_t *e;
    size_t n, cap;
    const char **list;
    imgcache_extra_t x; /* other entries in the accounting (templates), x.arg NULL = none */
};

/* A fresh last-use tick: wall-clock nanoseconds (a file's mtime is the
 * tick it had when the worker stopped), strictly increasing. */
static uint64_t s_tick(imgcache_t *self)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    self->tick = now > self->tick ? now : self->tick + 1;
    return self->tick;
}

uint64_t imgcache_tick(imgcache_t *self)
{
    return s_tick(self);
}

void imgcache_set_extra(imgcache_t *self, const imgcache_extra_t *x)
{
    if (x)
        self->x = *x;
    else
        memset(&self->x, 0, sizeof self->x);
}

static uint64_t s_used(const imgcache_t *self)
{
    return self->used + (self->x.arg ? self->x.used(self->x.arg) : 0);
}

static int s_cmp_tick(const void *a, const void *b)
{
    const s_entry_t *x = a, *y = b;
    return x->tick < y->tick ? -1 : x->tick > y->tick;
}

static s_entry_t *s_find(const imgcache_t *self, const char *digest)
{
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->e[i].digest, digest) == 0)
            return &self->e[i];
    return NULL;
}

static int s_push(imgcache_t *self, const char *digest, uint64_t size, uint64_t tick)
{
    if (self->n == self->cap) {
        size_t ncap = self->cap ? self->cap * 2 : 16;
        s_entry_t *ne = realloc(self->e, ncap * sizeof *ne);
        if (!ne)
            return -1;
        self->e = ne;
        self->cap = ncap;
    }
    s_entry_t *en = &self->e[self->n++];
    memset(en, 0, sizeof *en);
    memcpy(en->digest, digest, TT_DIGEST_LEN + 1);
    en->size = size;
    en->tick = tick;
    self->used += size;
    return 0;
}

static void s_touch(const imgcache_t *self, const char *digest)
{
    char path[4200];
    if (imgcache_path(self, digest, false, path, sizeof path) == 0)
        utimensat(AT_FDCWD, path, NULL, 0);
}

static int s_mkdir(const char *p)
{
    return mkdir(p, 0750) == 0 || errno == EEXIST ? 0 : -1;
}

imgcache_t *imgcache_new(const char *dir, uint64_t limit, char *err, size_t errlen)
{
    imgcache_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->limit = limit;
    if (snprintf(self->dir, sizeof self->dir, "%s", dir) >= 3900) {
        snprintf(err, errlen, "image cache path too long");
        free(self);
        return NULL;
    }
    snprintf(self->blobs, sizeof self->blobs, "%.3900s/blobs", self->dir);
    snprintf(self->img, sizeof self->img, "%.3900s/img", self->dir);
    if (s_mkdir(self->dir) || s_mkdir(self->blobs) || s_mkdir(self->img)) {
        snprintf(err, errlen, "cannot make %.3000s: %s", self->blobs, strerror(errno));
        free(self);
        return NULL;
    }
    DIR *d = opendir(self->blobs);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char digest[TT_DIGEST_LEN + 1], path[4200];
        snprintf(digest, sizeof digest, "sha256:%.64s", de->d_name);
        struct stat sb;
        if (strlen(de->d_name) != TT_HEX_LEN || !tt_digest_valid(digest) ||
            snprintf(path, sizeof path, "%s/%s", self->blobs, de->d_name) >= (int)sizeof path ||
            lstat(path, &sb) || !S_ISREG(sb.st_mode))
            continue;
        uint64_t t = (uint64_t)sb.st_mtim.tv_sec * 1000000000ull + (uint64_t)sb.st_mtim.tv_nsec;
        if (s_push(self, digest, (uint64_t)sb.st_size, t))
            break;
    }
    if (d)
        closedir(d);
    /* the mtimes are the ticks: the newest is where s_tick goes on */
    if (self->n)
        qsort(self->e, self->n, sizeof *self->e, s_cmp_tick);
    if (self->n && self->e[self->n - 1].tick > self->tick)
        self->tick = self->e[self->n - 1].tick;
    return self;
}

void imgcache_trim(imgcache_t *self)
{
    char why[256];
    if (imgcache_reserve(self, 0, why, sizeof why) == 0)
        imgcache_unreserve(self, 0);
}

void imgcache_destroy(imgcache_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->e);
    free((*self_p)->list);
    free(*self_p);
    *self_p = NULL;
}

const char *imgcache_blob_dir(const imgcache_t *self)
{
    return self->blobs;
}

int imgcache_path(const imgcache_t *self, const char *digest, bool part, char *buf, size_t len)
{
    if (!tt_digest_valid(digest))
        return -1;
    int n = snprintf(buf, len, "%s/%s%s", self->blobs, tt_digest_hex(digest), part ? ".part" : "");
    return n > 0 && (size_t)n < len ? 0 : -1;
}

bool imgcache_has(const imgcache_t *self, const char *digest)
{
    return tt_digest_valid(digest) && s_find(self, digest) != NULL;
}

int imgcache_add(imgcache_t *self, const char *digest, uint64_t reserved, char *err, size_t errlen)
{
    imgcache_unreserve(self, reserved);
    char path[4200];
    if (imgcache_path(self, digest, false, path, sizeof path))
        FAIL("invalid digest");
    struct stat sb;
    if (lstat(path, &sb) || !S_ISREG(sb.st_mode))
        FAIL("blob %.20s... is not in the cache", tt_digest_hex(digest));
    s_entry_t *en = s_find(self, digest);
    if (en) {
        self->used -= en->size;
        en->size = (uint64_t)sb.st_size;
        self->used += en->size;
        en->tick = s_tick(self);
        return 0;
    }
    if (s_push(self, digest, (uint64_t)sb.st_size, s_tick(self)))
        FAIL("out of memory");
    return 0;
}

static void s_remove_at(imgcache_t *self, size_t i)
{
    char path[4200], img[4200];
    imgcache_path(self, self->e[i].digest, false, path, sizeof path);
    unlink(path);
    /* a materialized image of this digest goes too (its links keep
     * nothing alive that a running VM has not already opened) */
    snprintf(img, sizeof img, "%.4000s/%s", self->img, tt_digest_hex(self->e[i].digest));
    static const char *files[] = {"disk.qcow2", "kernel", "initrd"};
    for (int k = 0; k < 3; k++) {
        char f[4300];
        snprintf(f, sizeof f, "%s/%s", img, files[k]);
        unlink(f);
    }
    rmdir(img);
    self->used -= self->e[i].size;
    char gone[TT_DIGEST_LEN + 1];
    memcpy(gone, self->e[i].digest, sizeof gone);
    self->e[i] = self->e[--self->n];
    /* what was made from this image (its templates) goes with it */
    if (self->x.arg && self->x.blob_gone)
        self->x.blob_gone(self->x.arg, gone);
}

int imgcache_reserve(imgcache_t *self, uint64_t size, char *err, size_t errlen)
{
    if (self->limit && size > self->limit)
        FAIL("%llu MiB is over the image cache limit of %llu MiB", (unsigned long long)(size >> 20),
             (unsigned long long)(self->limit >> 20));
    while (self->limit && s_used(self) + self->reserved + size > self->limit) {
        size_t victim = self->n;
        for (size_t i = 0; i < self->n; i++)
            if (self->e[i].users == 0 &&
                (victim == self->n || self->e[i].tick < self->e[victim].tick))
                victim = i;
        uint64_t xt = 0;
        bool x = self->x.arg && self->x.oldest(self->x.arg, &xt) == 0;
        if (x && (victim == self->n || xt < self->e[victim].tick)) {
            self->x.evict_oldest(self->x.arg);
            continue;
        }
        if (victim == self->n) {
            uint64_t busy = 0;
            for (size_t i = 0; i < self->n; i++)
                busy += self->e[i].users ? self->e[i].size : 0;
            if (self->x.arg)
                busy += self->x.used(self->x.arg);
            FAIL("image cache full: %llu MiB in use by VMs, %llu MiB being fetched or made, limit "
                 "%llu MiB, %llu MiB wanted",
                 (unsigned long long)(busy >> 20), (unsigned long long)(self->reserved >> 20),
                 (unsigned long long)(self->limit >> 20), (unsigned long long)(size >> 20));
        }
        s_remove_at(self, victim);
    }
    self->reserved += size;
    return 0;
}

void imgcache_unreserve(imgcache_t *self, uint64_t size)
{
    self->reserved = size > self->reserved ? 0 : self->reserved - size;
}

int imgcache_acquire(imgcache_t *self, const char *digest)
{
    s_entry_t *en = tt_digest_valid(digest) ? s_find(self, digest) : NULL;
    if (!en)
        return -1;
    en->users++;
    en->tick = s_tick(self);
    s_touch(self, digest);
    return 0;
}

void imgcache_release(imgcache_t *self, const char *digest)
{
    s_entry_t *en = tt_digest_valid(digest) ? s_find(self, digest) : NULL;
    if (en && en->users > 0)
        en->users--;
}

int imgcache_users(const imgcache_t *self, const char *digest)
{
    s_entry_t *en = tt_digest_valid(digest) ? s_find(self, digest) : NULL;
    return en ? en->users : -1;
}

void imgcache_forget(imgcache_t *self, const char *digest)
{
    for (size_t i = 0; tt_digest_valid(digest) && i < self->n; i++)
        if (strcmp(self->e[i].digest, digest) == 0) {
            s_remove_at(self, i);
            return;
        }
}

static int s_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **imgcache_digests(imgcache_t *self, size_t *n)
{
    free(self->list);
    self->list = calloc(self->n + 1, sizeof *self->list);
    *n = self->list ? self->n : 0;
    for (size_t i = 0; i < *n; i++)
        self->list[i] = self->e[i].digest;
    if (*n)
        qsort(self->list, *n, sizeof *self->list, s_cmp_str);
    return self->list;
}

uint64_t imgcache_used(const imgcache_t *self)
{
    return s_used(self);
}

uint64_t imgcache_limit(const imgcache_t *self)
{
    return self->limit;
}

int imgcache_materialize(imgcache_t *self, const char *image_digest, const tt_manifest_t *manifest,
                         char *out, size_t outlen, char *err, size_t errlen)
{
    if (!tt_digest_valid(image_digest))
        FAIL("invalid digest");
    char dir[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%.4000s/%s", self->img, tt_digest_hex(image_digest));
    if (snprintf(out, outlen, "%s", dir) >= (int)outlen)
        FAIL("path too long");
    tt_manifest_t one = {.n = 1};
    if (!manifest) {
        snprintf(one.files[0].name, sizeof one.files[0].name, "disk.qcow2");
        memcpy(one.files[0].digest, image_digest, TT_DIGEST_LEN + 1);
        manifest = &one;
    }
    /* An existing directory is kept only if every link is still the
     * blob's inode: a blob deleted as corrupted and fetched again is a new
     * inode, and the old link must not boot the corrupted bytes. */
    static const char *files[] = {"disk.qcow2", "kernel", "initrd"};
    struct stat sb;
    if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        bool same = true;
        for (size_t i = 0; i < manifest->n && same; i++) {
            char src[4200], dst[4400];
            struct stat a, b;
            same = imgcache_path(self, manifest->files[i].digest, false, src, sizeof src) == 0 &&
                   snprintf(dst, sizeof dst, "%s/%s", dir, manifest->files[i].name) > 0 &&
                   stat(src, &a) == 0 && stat(dst, &b) == 0 && a.st_ino == b.st_ino &&
                   a.st_dev == b.st_dev;
        }
        if (same)
            return 0;
        for (int k = 0; k < 3; k++) {
            char f[4400];
            snprintf(f, sizeof f, "%s/%s", dir, files[k]);
            unlink(f);
        }
        if (rmdir(dir))
            FAIL("cannot replace %s: %s", dir, strerror(errno));
    }
    snprintf(tmp, sizeof tmp, "%s.new", dir);
    for (int k = 0; k < 3; k++) {
        char f[4400];
        snprintf(f, sizeof f, "%s/%s", tmp, files[k]);
        unlink(f);
    }
    rmdir(tmp);
    if (mkdir(tmp, 0750))
        FAIL("mkdir %s: %s", tmp, strerror(errno));
    for (size_t i = 0; i < manifest->n; i++) {
        char src[4200], dst[4400];
        if (!imgcache_has(self, manifest->files[i].digest) ||
            imgcache_path(self, manifest->files[i].digest, false, src, sizeof src))
            FAIL("image file %s (%.20s...) is not in the cache", manifest->files[i].name,
                 tt_digest_hex(manifest->files[i].digest));
        snprintf(dst, sizeof dst, "%s/%s", tmp, manifest->files[i].name);
        if (link(src, dst))
            FAIL("link %s: %s", dst, strerror(errno));
    }
    if (rename(tmp, dir))
        FAIL("rename %s: %s", dir, strerror(errno));
    return 0;
}

int imgcache_verify(const char *path, const char *digest, char *err, size_t errlen)
{
    char got[TT_DIGEST_LEN + 1];
    uint64_t size = 0;
    if (tt_sha256_file(path, got, &size, err, errlen))
        return -1;
    if (strcmp(got, digest) != 0)
        FAIL("corrupted: %s hashes to %s, not %s", path, got, digest);
    return 0;
}
