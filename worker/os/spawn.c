/*
 * spawn: fork + execv with bounded waits. See spawn.h.
 *
 * Between fork() and exec() only async-signal-safe calls are made: the
 * worker has ZeroMQ threads, and a child of a multi-threaded process may
 * not take a lock another thread held at the fork.
 */
#define _GNU_SOURCE
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "ttproto.h"

#define S_KILL_WAIT_MS 2000
#define S_REPORT_WAIT_MS 5000

void spawn_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void spawn_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

int spawn_read_full(int fd, void *buf, size_t len, int64_t deadline)
{
    size_t got = 0;
    while (got < len) {
        int64_t left = deadline - tt_mono_ms();
        if (left <= 0)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int rc = poll(&pfd, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            return got ? -1 : 0;
        got += (size_t)n;
    }
    return 1;
}

/* In the child: stdio on in/out, report fd on 3 (close-on-exec), nothing
 * else of the worker kept, default signals, then exec. Never returns. */
static void s_exec(char *const argv[], int in_fd, int out_fd, int report_fd)
{
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    int in = in_fd >= 0 ? in_fd : nul;
    int out = out_fd >= 0 ? out_fd : nul;
    /* Lift all of them above 3 first: any may sit on 0..3. */
    int i2 = fcntl(in, F_DUPFD_CLOEXEC, 10);
    int o2 = fcntl(out, F_DUPFD_CLOEXEC, 10);
    int r2 = fcntl(report_fd, F_DUPFD_CLOEXEC, 10);
    if (i2 < 0 || o2 < 0 || r2 < 0 || dup2(i2, 0) < 0 || dup2(o2, 1) < 0 || dup2(o2, 2) < 0 ||
        dup3(r2, 3, O_CLOEXEC) < 0) {
        int e = errno;
        spawn_write_all(r2 >= 0 ? r2 : report_fd, &e, sizeof e);
        _exit(127);
    }
    closefrom(4);
    spawn_reset_signals();
    execv(argv[0], argv);
    int e = errno;
    spawn_write_all(3, &e, sizeof e);
    _exit(127);
}

pid_t spawn_child(char *const argv[], int in_fd, int out_fd, char *err, size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        s_exec(argv, in_fd, out_fd, pfd[1]);
    }
    close(pfd[1]);
    int e = 0;
    int got = spawn_read_full(pfd[0], &e, sizeof e, tt_mono_ms() + S_REPORT_WAIT_MS);
    close(pfd[0]);
    if (got != 0) {
        snprintf(err, errlen, "exec %s: %s", argv[0],
                 got == 1 ? strerror(e) : "no report from the child");
        spawn_kill(pid);
        return -1;
    }
    return pid;
}

int spawn_wait(pid_t pid, int timeout_ms, int *status)
{
    int64_t deadline = tt_mono_ms() + timeout_ms;
    int delay = 1;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid || (r < 0 && errno == ECHILD)) {
            if (status)
                *status = r == pid ? st : 0;
            return 0;
        }
        if (tt_mono_ms() >= deadline)
            return -1;
        spawn_sleep_ms(delay);
        if (delay < 20)
            delay *= 2;
    }
}

void spawn_kill(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    spawn_wait(pid, S_KILL_WAIT_MS, NULL);
}

int spawn_run(char *const argv[], int timeout_ms, char *err, size_t errlen)
{
    pid_t pid = spawn_child(argv, -1, -1, err, errlen);
    if (pid < 0)
        return -1;
    int st = 0;
    if (spawn_wait(pid, timeout_ms, &st)) {
        spawn_kill(pid);
        snprintf(err, errlen, "%s timed out after %d ms", argv[0], timeout_ms);
        return -1;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
        return 0;
    if (WIFEXITED(st))
        snprintf(err, errlen, "%s exited with status %d", argv[0], WEXITSTATUS(st));
    else
        snprintf(err, errlen, "%s killed by signal %d", argv[0], WTERMSIG(st));
    return -1;
}

/* Records on the detached spawn's pipe. */
typedef struct {
    int32_t kind; /* 1 = pid, 2 = errno */
    int32_t value;
    uint64_t start_time;
} s_rec_t;

/* The intermediate of spawn_detached: setsid, fork the program, pidfile,
 * report. Never returns. */
static void s_intermediate(char *const argv[], const char *pidfile, int log_fd, int wfd)
{
    s_rec_t r = {2, 0, 0};
    if (setsid() < 0) {
        r.value = errno;
        goto fail;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        r.value = errno;
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r.value = errno;
        goto fail;
    }
    if (pid == 0) {
        close(pfd[0]);
        s_exec(argv, -1, log_fd, pfd[1]);
    }
    close(pfd[1]);
    char state;
    uint64_t start_time;
    if (proc_stat_read(pid, &state, &start_time)) {
        kill(pid, SIGKILL);
        r.value = ESRCH;
        goto fail;
    }
    char line[64];
    size_t n = proc_utoa((uint64_t)pid, line);
    line[n++] = ' ';
    n += proc_utoa(start_time, line + n);
    line[n++] = '\n';
    int fd = open(pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd >= 0) {
        spawn_write_all(fd, line, n);
        close(fd);
    }
    r.kind = 1;
    r.value = pid;
    r.start_time = start_time;
    spawn_write_all(wfd, &r, sizeof r);
    /* Pass on the program's exec result: EOF (exec worked) or its errno. */
    int e;
    if (spawn_read_full(pfd[0], &e, sizeof e, tt_mono_ms() + S_REPORT_WAIT_MS) == 1)
        spawn_write_all(wfd, &e, sizeof e);
    _exit(0);
fail:
    spawn_write_all(wfd, &r, sizeof r);
    _exit(1);
}

int spawn_detached(char *const argv[], const char *pidfile, int log_fd, pid_t *pid,
                   uint64_t *start_time, char *err, size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    pid_t mid = fork();
    if (mid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (mid == 0) {
        close(pfd[0]);
        s_intermediate(argv, pidfile, log_fd, pfd[1]);
    }
    close(pfd[1]);
    int64_t deadline = tt_mono_ms() + S_REPORT_WAIT_MS;
    s_rec_t r;
    int got = spawn_read_full(pfd[0], &r, sizeof r, deadline);
    int e = 0;
    int got2 = got == 1 && r.kind == 1 ? spawn_read_full(pfd[0], &e, sizeof e, deadline) : -1;
    close(pfd[0]);
    spawn_wait(mid, S_KILL_WAIT_MS, NULL);
    if (got != 1 || r.kind != 1) {
        snprintf(err, errlen, "spawn %s: %s", argv[0],
                 got == 1 ? strerror(r.value) : "no answer from the spawner");
        return -1;
    }
    if (got2 != 0) {
        snprintf(err, errlen, "exec %s: %s", argv[0],
                 got2 == 1 ? strerror(e) : "no report from the program");
        if (proc_alive(r.value, r.start_time))
            kill(r.value, SIGKILL);
        unlink(pidfile);
        return -1;
    }
    *pid = r.value;
    *start_time = r.start_time;
    return 0;
}

int spawn_which(const char *name, char *buf, size_t len)
{
    if (strchr(name, '/')) {
        if (access(name, X_OK) || strlen(name) >= len)
            return -1;
        strcpy(buf, name);
        return 0;
    }
    const char *path = getenv("PATH");
    if (!path || !*path)
        path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t dl = colon ? (size_t)(colon - path) : strlen(path);
        if (dl && (size_t)snprintf(buf, len, "%.*s/%s", (int)dl, path, name) < len &&
            access(buf, X_OK) == 0)
            return 0;
        path += dl + (colon ? 1 : 0);
    }
    return -1;
}

int spawn_wait_gone(pid_t pid, uint64_t start_time, int timeout_ms)
{
    int64_t deadline = tt_mono_ms() + timeout_ms;
    for (;;) {
        waitpid(pid, NULL, WNOHANG);
        if (!proc_alive(pid, start_time))
            return 0;
        if (tt_mono_ms() >= deadline)
            return -1;
        spawn_sleep_ms(10);
    }
}

void spawn_reset_signals(void)
{
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
}
