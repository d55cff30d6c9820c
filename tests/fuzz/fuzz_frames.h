/*
 * Shared by the fuzz targets: cut a fuzzer input into ZeroMQ frames.
 * Format: repeated [length: 1 byte][length bytes]; a length of 255 means
 * "the rest of the input". At most 12 frames.
 */
#ifndef FUZZ_FRAMES_H
#define FUZZ_FRAMES_H

#include <czmq.h>
#include <ftw.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The fuzz targets work in a temporary directory; libFuzzer ends with
 * exit(), so an atexit handler removes it (its files and the VM dirs). */
static char fuzz_tmpdir[256];

static int fuzz_rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static void fuzz_tmpdir_remove(void)
{
    if (fuzz_tmpdir[0])
        nftw(fuzz_tmpdir, fuzz_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Remember dir for removal at exit. */
static inline void fuzz_tmpdir_own(const char *dir)
{
    snprintf(fuzz_tmpdir, sizeof fuzz_tmpdir, "%s", dir);
    atexit(fuzz_tmpdir_remove);
}

/* Quiets CZMQ's log and signal handling and makes the target's temporary
 * directory /tmp/ttfuzz-<tag>-XXXXXX, removed at exit; returns its path
 * (static). Aborts when it cannot. */
static inline const char *fuzz_setup(const char *tag)
{
    zsys_init();
    zsys_set_logstream(NULL);
    zsys_handler_set(NULL);
    static char dir[200];
    snprintf(dir, sizeof dir, "/tmp/ttfuzz-%s-XXXXXX", tag);
    if (!mkdtemp(dir))
        abort();
    fuzz_tmpdir_own(dir);
    return dir;
}

static inline zmsg_t *fuzz_frames(const uint8_t *data, size_t size)
{
    zmsg_t *msg = zmsg_new();
    size_t off = 0;
    for (int n = 0; n < 12 && off < size; n++) {
        size_t len = data[off++];
        if (len == 255 || len > size - off)
            len = size - off;
        zmsg_addmem(msg, data + off, len);
        off += len;
    }
    return msg;
}

#endif
