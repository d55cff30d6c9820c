/*
 * blobstore: content-addressed blob files. See blobstore.h for the layout
 * and the rules that keep a partial file from ever looking complete.
 */
#include "blobstore.h"

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

struct blobstore_t {
    char dir[4096]; /* .../sha256 */
};

struct blobstore_upload_t {
    blobstore_t *store;
    char digest[TT_DIGEST_LEN + 1];
    int fd;
    uint64_t offset, size;
    tt_sha256_t *sha;
};

static int s_mkdir(const char *path)
{
    return mkdir(path, 0750) == 0 || errno == EEXIST ? 0 : -1;
}

blobstore_t *blobstore_new(const char *dir, char *err, size_t errlen)
{
    blobstore_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (snprintf(self->dir, sizeof self->dir, "%s/sha256", dir) >= (int)sizeof self->dir - 80) {
        snprintf(err, errlen, "blob directory path too long");
        free(self);
        return NULL;
    }
    if (s_mkdir(dir) || s_mkdir(self->dir)) {
        snprintf(err, errlen, "cannot make %s: %s", self->dir, strerror(errno));
        free(self);
        return NULL;
    }
    return self;
}

void blobstore_destroy(blobstore_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free(*self_p);
    *self_p = NULL;
}

int blobstore_path(const blobstore_t *self, const char *digest, bool part, char *buf, size_t len)
{
    if (!tt_digest_valid(digest))
        return -1;
    int n = snprintf(buf, len, "%s/%s%s", self->dir, tt_digest_hex(digest), part ? ".part" : "");
    return n > 0 && (size_t)n < len ? 0 : -1;
}

int blobstore_stat(const blobstore_t *self, const char *digest, uint64_t *size, char *err,
                   size_t errlen)
{
    char path[4200];
    if (blobstore_path(self, digest, false, path, sizeof path))
        FAIL("invalid digest: want sha256:<64 lowercase hex>");
    struct stat sb;
    if (stat(path, &sb)) {
        if (errno == ENOENT)
            return 0;
        FAIL("%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        FAIL("%s is not a regular file", path);
    *size = (uint64_t)sb.st_size;
    return 1;
}

int blobstore_open(const blobstore_t *self, const char *digest, uint64_t *size, char *err,
                   size_t errlen)
{
    char path[4200];
    if (blobstore_path(self, digest, false, path, sizeof path))
        FAIL("invalid digest");
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        FAIL("%s", errno == ENOENT ? "no such blob" : strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        FAIL("blob is not a regular file");
    }
    *size = (uint64_t)sb.st_size;
    return fd;
}

int blobstore_remove(blobstore_t *self, const char *digest, char *err, size_t errlen)
{
    char path[4200], part[4200];
    if (blobstore_path(self, digest, false, path, sizeof path) ||
        blobstore_path(self, digest, true, part, sizeof part))
        FAIL("invalid digest");
    if (unlink(path) && errno != ENOENT)
        FAIL("%s: %s", path, strerror(errno));
    if (unlink(part) && errno != ENOENT)
        FAIL("%s: %s", part, strerror(errno));
    return 0;
}

/* Deletes the .part files (part) or the complete blobs (!part) older than
 * max_age seconds that keep does not claim; names that are not ours are
 * never touched. */
static int s_sweep(blobstore_t *self, bool part, int64_t max_age,
                   bool (*keep)(const char *, void *), void *arg, uint64_t *bytes)
{
    DIR *d = opendir(self->dir);
    if (!d)
        return 0;
    int n = 0;
    time_t now = time(NULL);
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        char digest[TT_DIGEST_LEN + 1], path[4200];
        if (part ? len != TT_HEX_LEN + 5 || strcmp(de->d_name + TT_HEX_LEN, ".part") != 0
                 : len != TT_HEX_LEN)
            continue;
        snprintf(digest, sizeof digest, "sha256:%.64s", de->d_name);
        struct stat sb;
        if (!tt_digest_valid(digest) || blobstore_path(self, digest, part, path, sizeof path) ||
            lstat(path, &sb) || !S_ISREG(sb.st_mode) || (int64_t)(now - sb.st_mtime) < max_age ||
            (keep && keep(digest, arg)))
            continue;
        if (unlink(path) == 0) {
            n++;
            if (bytes)
                *bytes += (uint64_t)sb.st_size;
        }
    }
    closedir(d);
    return n;
}

int blobstore_sweep_parts(blobstore_t *self, int64_t max_age, bool (*keep)(const char *, void *),
                          void *arg)
{
    return s_sweep(self, true, max_age, keep, arg, NULL);
}

int blobstore_sweep_blobs(blobstore_t *self, int64_t max_age, bool (*keep)(const char *, void *),
                          void *arg, uint64_t *bytes)
{
    return s_sweep(self, false, max_age, keep, arg, bytes);
}

blobstore_upload_t *blobstore_upload_begin(blobstore_t *self, const char *digest, uint64_t size,
                                           char *err, size_t errlen)
{
    char part[4200];
    if (blobstore_path(self, digest, true, part, sizeof part)) {
        snprintf(err, errlen, "invalid digest: want sha256:<64 lowercase hex>");
        return NULL;
    }
    blobstore_upload_t *u = calloc(1, sizeof *u);
    if (!u || !(u->sha = tt_sha256_new())) {
        free(u);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    u->store = self;
    u->size = size;
    memcpy(u->digest, digest, TT_DIGEST_LEN + 1);
    u->fd = open(part, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    struct stat sb;
    if (u->fd < 0 || fstat(u->fd, &sb) || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "cannot open %s: %s", part, strerror(errno));
        goto fail;
    }
    u->offset = (uint64_t)sb.st_size;
    if (u->offset > size) {
        /* a leftover of another size claim: start again */
        if (ftruncate(u->fd, 0)) {
            snprintf(err, errlen, "truncate %s: %s", part, strerror(errno));
            goto fail;
        }
        u->offset = 0;
    }
    if (u->offset && tt_sha256_fd(u->sha, u->fd, u->offset, err, errlen))
        goto fail;
    return u;
fail:
    blobstore_upload_close(&u);
    return NULL;
}

uint64_t blobstore_upload_offset(const blobstore_upload_t *u)
{
    return u->offset;
}

uint64_t blobstore_upload_size(const blobstore_upload_t *u)
{
    return u->size;
}

const char *blobstore_upload_digest(const blobstore_upload_t *u)
{
    return u->digest;
}

int blobstore_upload_write(blobstore_upload_t *u, uint64_t offset, const void *data, size_t len,
                           char *err, size_t errlen)
{
    if (offset != u->offset)
        FAIL("offset %llu, expected %llu", (unsigned long long)offset,
             (unsigned long long)u->offset);
    if (len > u->size - u->offset)
        FAIL("data past the declared size %llu", (unsigned long long)u->size);
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(u->fd, p + done, len - done, (off_t)(u->offset + done));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* keep the file consistent with the offset we report */
            if (ftruncate(u->fd, (off_t)u->offset)) {
            }
            FAIL("write: %s", strerror(errno));
        }
        done += (size_t)n;
    }
    tt_sha256_update(u->sha, data, len);
    u->offset += len;
    return 0;
}

int blobstore_upload_commit(blobstore_upload_t **u_p, char *err, size_t errlen)
{
    blobstore_upload_t *u = *u_p;
    if (u->offset != u->size) {
        snprintf(err, errlen, "upload incomplete: %llu of %llu bytes",
                 (unsigned long long)u->offset, (unsigned long long)u->size);
        blobstore_upload_close(u_p);
        return -1;
    }
    char got[TT_DIGEST_LEN + 1];
    tt_sha256_final(u->sha, got);
    if (strcmp(got, u->digest) != 0) {
        snprintf(err, errlen, "digest mismatch: the data hashes to %s", got);
        blobstore_upload_abort(u_p);
        return -1;
    }
    char part[4200], path[4200];
    blobstore_path(u->store, u->digest, true, part, sizeof part);
    blobstore_path(u->store, u->digest, false, path, sizeof path);
    if (fsync(u->fd) || rename(part, path)) {
        snprintf(err, errlen, "commit %s: %s", path, strerror(errno));
        blobstore_upload_close(u_p);
        return -1;
    }
    int dfd = open(u->store->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        if (fsync(dfd)) {
        }
        close(dfd);
    }
    blobstore_upload_close(u_p);
    return 0;
}

void blobstore_upload_close(blobstore_upload_t **u_p)
{
    if (!u_p || !*u_p)
        return;
    blobstore_upload_t *u = *u_p;
    if (u->fd >= 0)
        close(u->fd);
    tt_sha256_destroy(&u->sha);
    free(u);
    *u_p = NULL;
}

void blobstore_upload_abort(blobstore_upload_t **u_p)
{
    if (!u_p || !*u_p)
        return;
    char part[4200];
    if (blobstore_path((*u_p)->store, (*u_p)->digest, true, part, sizeof part) == 0)
        unlink(part);
    blobstore_upload_close(u_p);
}
