/*
 * Blobs in a worker's image cache for the unit tests of imgcache and the
 * modules on it: pattern bytes (seed), written where a fetch leaves them.
 * Include after test_util.h (CHECK).
 */
#ifndef TEST_IMGCACHE_H
#define TEST_IMGCACHE_H

#include "imgcache.h"
#include "ttblob.h"

#include <stdio.h>
#include <stdlib.h>

/* size bytes of the seed's pattern (malloc'd, at least one byte). */
__attribute__((unused)) static unsigned char *s_pattern(int seed, size_t size)
{
    unsigned char *data = malloc(size ? size : 1);
    if (!data)
        exit(2);
    for (size_t i = 0; i < size; i++)
        data[i] = (unsigned char)(seed * 31 + i);
    return data;
}

/* Writes size bytes of data to path, checked. */
__attribute__((unused)) static void s_write(const char *path, const unsigned char *data,
                                            size_t size)
{
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(data, 1, size, f) == size);
    if (f)
        fclose(f);
}

/* A blob of size bytes (the seed's pattern) in cache c as a finished
 * fetch leaves it: room reserved, the file written, the blob added. Its
 * digest into digest. */
__attribute__((unused)) static void s_cache_blob(imgcache_t *c, int seed, size_t size, char *digest)
{
    unsigned char *data = s_pattern(seed, size);
    tt_sha256_t *h = tt_sha256_new();
    tt_sha256_update(h, data, size);
    tt_sha256_final(h, digest);
    tt_sha256_destroy(&h);
    char path[4200], err[256];
    CHECK(imgcache_reserve(c, size, err, sizeof err) == 0);
    CHECK(imgcache_path(c, digest, false, path, sizeof path) == 0);
    s_write(path, data, size);
    free(data);
    CHECK(imgcache_add(c, digest, size, err, sizeof err) == 0);
}

#endif
