/*
 * Unit tests of worker/images/imgcache.c: size limit, least-recently-used
 * eviction of unused blobs only, the order kept across a restart,
 * corruption detection, materialized images, the advertised digests.
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "test_imgcache.h"
#include "ttblob.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)

int main(void)
{
    char dir[] = "/tmp/tt-imgcache-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    char err[256];
    imgcache_t *c = imgcache_new(dir, 10 * MIB, err, sizeof err);
    CHECK(c);
    char a[TT_DIGEST_LEN + 1], b[TT_DIGEST_LEN + 1], d3[TT_DIGEST_LEN + 1], d4[TT_DIGEST_LEN + 1];
    s_cache_blob(c, 1, 4 * MIB, a);
    s_cache_blob(c, 2, 4 * MIB, b);
    CHECK(imgcache_used(c) == 8 * MIB);
    CHECK(imgcache_has(c, a) && imgcache_has(c, b));

    /* a is in use: the next blob evicts b (unused) although a is older */
    CHECK(imgcache_acquire(c, a) == 0);
    CHECK(imgcache_acquire(c, "sha256:nothex") == -1);
    s_cache_blob(c, 3, 4 * MIB, d3);
    CHECK(imgcache_has(c, a) && !imgcache_has(c, b) && imgcache_has(c, d3));
    char path[4200];
    imgcache_path(c, b, false, path, sizeof path);
    CHECK(access(path, F_OK) != 0);

    /* both in use: no room, clear reason, nothing evicted */
    CHECK(imgcache_acquire(c, d3) == 0);
    CHECK(imgcache_reserve(c, 4 * MIB, err, sizeof err) == -1 && strstr(err, "in use by VMs"));
    CHECK(imgcache_has(c, a) && imgcache_has(c, d3));
    CHECK(imgcache_reserve(c, 11 * MIB, err, sizeof err) == -1 && strstr(err, "over the image"));

    /* released: least recently used goes first (a was acquired before d3) */
    imgcache_release(c, a);
    imgcache_release(c, d3);
    CHECK(imgcache_users(c, a) == 0);
    CHECK(imgcache_reserve(c, 4 * MIB, err, sizeof err) == 0);
    CHECK(!imgcache_has(c, a) && imgcache_has(c, d3));
    imgcache_unreserve(c, 4 * MIB);

    /* reservations count: two fetches of 4 MiB do not fit beside d3 (4) */
    CHECK(imgcache_reserve(c, 3 * MIB, err, sizeof err) == 0);
    CHECK(imgcache_acquire(c, d3) == 0);
    CHECK(imgcache_reserve(c, 4 * MIB, err, sizeof err) == -1);
    imgcache_unreserve(c, 3 * MIB);
    imgcache_release(c, d3);

    /* digests advertised */
    s_cache_blob(c, 4, 1 * MIB, d4);
    size_t n = 0;
    const char **list = imgcache_digests(c, &n);
    CHECK(n == 2 && strcmp(list[0], list[1]) < 0);

    /* corruption: a flipped byte is found */
    imgcache_path(c, d4, false, path, sizeof path);
    CHECK(imgcache_verify(path, d4, err, sizeof err) == 0);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "X", 1, 4096) == 1);
    close(fd);
    CHECK(imgcache_verify(path, d4, err, sizeof err) == -1 && strstr(err, "corrupted"));
    imgcache_forget(c, d4);
    CHECK(!imgcache_has(c, d4) && access(path, F_OK) != 0);

    /* materialize a qcow2 image and a directory image */
    char out[4200];
    CHECK(imgcache_materialize(c, d3, NULL, out, sizeof out, err, sizeof err) == 0);
    char f[4300];
    snprintf(f, sizeof f, "%s/disk.qcow2", out);
    struct stat sb;
    CHECK(stat(f, &sb) == 0 && sb.st_size == 4 * MIB);
    s_cache_blob(c, 5, 1000, d4);
    tt_manifest_t m = {.n = 2};
    snprintf(m.files[0].name, sizeof m.files[0].name, "initrd");
    memcpy(m.files[0].digest, d4, sizeof d4);
    snprintf(m.files[1].name, sizeof m.files[1].name, "kernel");
    memcpy(m.files[1].digest, d3, sizeof d3);
    const char *img = "sha256:00000000000000000000000000000000000000000000000000000000000000aa";
    CHECK(imgcache_materialize(c, img, &m, out, sizeof out, err, sizeof err) == 0);
    snprintf(f, sizeof f, "%s/kernel", out);
    CHECK(stat(f, &sb) == 0 && sb.st_size == 4 * MIB);
    m.files[0].digest[10] ^= 1; /* a blob not held */
    const char *img2 = "sha256:00000000000000000000000000000000000000000000000000000000000000bb";
    CHECK(imgcache_materialize(c, img2, &m, out, sizeof out, err, sizeof err) == -1);

    /* restart: the index and the LRU order come back from the files */
    imgcache_acquire(c, d4); /* d4 most recent */
    imgcache_release(c, d4);
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    imgcache_path(c, d3, false, path, sizeof path);
    utimensat(AT_FDCWD, path, old, 0);
    imgcache_destroy(&c);
    c = imgcache_new(dir, 10 * MIB, err, sizeof err);
    CHECK(c && imgcache_has(c, d3) && imgcache_has(c, d4));
    CHECK(imgcache_used(c) == 4 * MIB + 1000);
    CHECK(imgcache_reserve(c, 7 * MIB, err, sizeof err) == 0); /* evicts d3, the older */
    CHECK(!imgcache_has(c, d3) && imgcache_has(c, d4));
    imgcache_destroy(&c);

    /* a smaller limit at start evicts down to it once the users are known
     * (imgcache_trim), never a blob in use; a .part is never indexed */
    c = imgcache_new(dir, 0, err, sizeof err);
    char p1[TT_DIGEST_LEN + 1];
    s_cache_blob(c, 6, 2 * MIB, p1);
    imgcache_path(c, "sha256:1111111111111111111111111111111111111111111111111111111111111111",
                  true, path, sizeof path);
    FILE *pf = fopen(path, "wb");
    fputs("partial", pf);
    fclose(pf);
    imgcache_destroy(&c);
    c = imgcache_new(dir, 1 * MIB, err, sizeof err);
    CHECK(c && imgcache_used(c) > 2 * MIB); /* nothing evicted before the users are known */
    CHECK(imgcache_acquire(c, p1) == 0);    /* a VM loaded from worker.db uses p1 */
    imgcache_trim(c);
    CHECK(imgcache_has(c, p1) && imgcache_used(c) == 2 * MIB);
    imgcache_release(c, p1);
    imgcache_trim(c);
    CHECK(imgcache_used(c) <= 1 * MIB);
    CHECK(!imgcache_has(c,
                        "sha256:1111111111111111111111111111111111111111111111111111111111111111"));
    imgcache_destroy(&c);

    s_rmtree(dir);
    return s_report("imgcache");
}
