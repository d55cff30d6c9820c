/*
 * Tiny helpers shared by the worker's unit tests: CHECK that reports the
 * line and counts failures, and a temp directory removed at exit (also
 * when a check fails), so a failed run leaves nothing behind.
 */
#ifndef TEST_WORKER_UTIL_H
#define TEST_WORKER_UTIL_H

#define _GNU_SOURCE
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_failures = 0;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
            s_failures++;                                                                          \
        }                                                                                          \
    } while (0)

static char s_tmpdir[256];

__attribute__((unused)) static int s_rm_entry(const char *path, const struct stat *sb, int flag,
                                              struct FTW *ftw)
{
    remove(path);
    return 0;
}

__attribute__((unused)) static void s_tmpdir_remove(void)
{
    if (s_tmpdir[0])
        nftw(s_tmpdir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Make a fresh temp dir (removed at exit) and return its path. */
__attribute__((unused)) static const char *s_tmpdir_make(const char *tag)
{
    snprintf(s_tmpdir, sizeof s_tmpdir, "/tmp/ttw-%s-XXXXXX", tag);
    if (!mkdtemp(s_tmpdir)) {
        perror("mkdtemp");
        exit(1);
    }
    atexit(s_tmpdir_remove);
    return s_tmpdir;
}

static int s_report(const char *name)
{
    if (s_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", name, s_failures);
    else
        printf("%s: ok\n", name);
    return s_failures ? 1 : 0;
}

#endif
