/*
 * console: the bounded console log of a VM. See console.h.
 *
 * The logger is forked from the worker, which has ZeroMQ threads: after
 * fork it calls only async-signal-safe functions (read, write, open,
 * rename, fstat, close, _exit), with every path and buffer made before.
 */
#define _GNU_SOURCE
#include "console.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_CHUNK 65536

typedef struct {
    char path[4096];
    char old[4104]; /* path + ".1" */
    char tmp[4104]; /* path + ".n" */
    char oldtmp[4104]; /* path + ".1n": the next console.log.1 before its rename */
    size_t cap;
    char buf[S_CHUNK];
    char copy[S_CHUNK];
} s_logger_t;

static int s_open_log(const char *path, int flags)
{
    return open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | flags, 0640);
}

/* Copy the last `carry` bytes of the file `from` (of size `size`) to `to`;
 * the bytes copied. */
static size_t s_carry(s_logger_t *lg, int from, size_t size, int to)
{
    size_t carry = lg->cap / 4 < CONSOLE_CARRY ? lg->cap / 4 : CONSOLE_CARRY;
    off_t at = size > carry ? (off_t)(size - carry) : 0;
    size_t done = 0;
    for (;;) {
        ssize_t r = pread(from, lg->copy, sizeof lg->copy, at);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        if (write(to, lg->copy, (size_t)r) != r)
            break;
        at += r;
        done += (size_t)r;
    }
    return done;
}

/* The logger's loop: never returns. */
static void s_logger(s_logger_t *lg, int rfd)
{
    int fd = s_open_log(lg->path, O_APPEND);
    struct stat sb;
    size_t size = fd >= 0 && fstat(fd, &sb) == 0 ? (size_t)sb.st_size : 0;
    for (;;) {
        ssize_t n = read(rfd, lg->buf, sizeof lg->buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (fd < 0 || size + (size_t)n > lg->cap) {
            /* console.log never goes missing (a reader may open it any
             * time) and never starts empty (a reader wants its tail): the
             * full file becomes console.log.1 by a second name (given
             * under a temporary name, then renamed over the old .1, so
             * console.log.1 never goes missing either), a fresh one gets
             * the old tail, then replaces console.log in one rename */
            int nfd = s_open_log(lg->tmp, O_TRUNC | O_APPEND);
            size_t carried = 0;
            if (fd >= 0) {
                unlink(lg->oldtmp);
                if (link(lg->path, lg->oldtmp) == 0 && rename(lg->oldtmp, lg->old) != 0)
                    unlink(lg->oldtmp);
                if (nfd >= 0)
                    carried = s_carry(lg, fd, size, nfd);
                close(fd);
            }
            fd = nfd;
            if (fd >= 0 && rename(lg->tmp, lg->path)) {
                close(fd);
                fd = -1;
            }
            size = carried;
        }
        if (fd < 0)
            continue; /* nowhere to write: drop, but keep the VM's pipe drained */
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(fd, lg->buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0)
                break; /* disk full: the bytes are lost, the VM is not stalled */
            off += w;
            size += (size_t)w;
        }
    }
    _exit(0);
}

int console_open_capped(const char *path, size_t cap, char *err, size_t errlen)
{
    if (cap < S_CHUNK)
        cap = S_CHUNK;
    s_logger_t *lg = malloc(sizeof *lg); /* filled here, used by the child */
    if (!lg) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (snprintf(lg->path, sizeof lg->path, "%s", path) >= (int)sizeof lg->path) {
        snprintf(err, errlen, "console path too long");
        free(lg);
        return -1;
    }
    snprintf(lg->old, sizeof lg->old, "%s.1", path);
    snprintf(lg->tmp, sizeof lg->tmp, "%s.n", path);
    snprintf(lg->oldtmp, sizeof lg->oldtmp, "%s.1n", path);
    lg->cap = cap;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "console pipe: %s", strerror(errno));
        free(lg);
        return -1;
    }
    pid_t mid = fork();
    if (mid < 0) {
        snprintf(err, errlen, "console logger fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        free(lg);
        return -1;
    }
    if (mid == 0) {
        setsid();
        if (fork() != 0)
            _exit(0); /* the logger is reparented: the worker never waits for it */
        int r = fcntl(pfd[0], F_DUPFD_CLOEXEC, 3);
        int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (r < 0 || nul < 0)
            _exit(1);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(nul, 2);
        if (r != 3 && (dup3(r, 3, O_CLOEXEC) < 0))
            _exit(1);
        closefrom(4); /* the write end too: EOF comes when the VM is gone */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        for (int sig = 1; sig < NSIG; sig++)
            if (sig != SIGKILL && sig != SIGSTOP)
                signal(sig, SIG_DFL);
        if (lg->path[0] == '/' && chdir("/")) /* hold no directory of the worker's */
            _exit(1);
        signal(SIGHUP, SIG_IGN);
        signal(SIGINT, SIG_IGN);
        s_logger(lg, 3);
    }
    free(lg);
    close(pfd[0]);
    int st;
    while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
        ;
    return pfd[1];
}

int console_open(const char *path, char *err, size_t errlen)
{
    return console_open_capped(path, CONSOLE_CAP, err, errlen);
}
