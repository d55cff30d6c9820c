/*
 * Tiny helpers shared by the unit tests: CHECK that reports the line and
 * counts failures, a temp directory removed at exit (also when a check
 * fails) so a failed run leaves nothing behind, a tree remover, and the
 * one-line report that turns the count into the exit status.
 */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
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
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Remove the tree at dir (files and folders; it does not follow links or
 * cross mounts). */
__attribute__((unused)) static void s_rmtree(const char *dir)
{
    if (dir && dir[0])
        nftw(dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

__attribute__((unused)) static void s_tmpdir_remove(void)
{
    s_rmtree(s_tmpdir);
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

/* Print the outcome and return the exit status: 0 when every check held. */
__attribute__((unused)) static int s_report(const char *name)
{
    if (s_failures)
        fprintf(stderr, "%s: %d check(s) failed\n", name, s_failures);
    else
        printf("%s: ok\n", name);
    return s_failures ? 1 : 0;
}

#endif
