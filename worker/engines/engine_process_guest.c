/*
 * engine_process_guest: exec and copy inside a process VM (the process
 * engine's guest_backend_t; guestop.c runs it on its threads).
 *
 * It enters a VM the way its pid 1 lives (see engine_process.c): the
 * thread opens /proc/<pid>/ns/{pid,net,uts,ipc,mnt,user} and
 * /proc/<pid>/cwd, checking pid *and* start time before and after (a pid
 * reused meanwhile is refused), then forks A, which setns()es into each
 * (the user namespace last; the mount namespace brings the VM's own root)
 * and forks B: B is in the VM's pid namespace, a session leader, the VM's
 * root (or the VMs' user when the worker drops them) in its user
 * namespace, with the capabilities and seccomp filter of vmjail.h, the
 * pipes on 0/1/2 and every other descriptor closed, and execs the command
 * (PATH search). A reports B's pid and, when B ends, its wait status on a
 * pipe, so the worker's loop reaping children (waitpid(-1)) cannot steal
 * the result. stdin is a socketpair written with MSG_NOSIGNAL: a command
 * that exits without reading it cannot raise SIGPIPE in the worker. At the
 * timeout the thread SIGKILLs B's process group; once B's status is in, it
 * reads what is left for at most S_LINGER_MS (a daemon B left behind may
 * hold the pipes). Files: a child C enters the mount namespace (and the
 * user) the same way and opens the path itself, so the guest's view
 * (mounts, symlinks, permissions) decides, never the worker's.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proc.h"
#include "spawn.h"
#include "ttguest.h"
#include "ttproto.h"
#include "vmjail.h"

#define S_LINGER_MS 500     /* output read after the command ended */
#define S_KILL_WAIT_MS 3000 /* after the SIGKILL, for the status */

#define S_NS_N 6
typedef struct {
    int ns[S_NS_N]; /* pid net uts ipc mnt user: user last (it takes the
                       capabilities the others need) */
    int cwd;
    bool userns; /* the VM has a user namespace of its own */
    const struct sock_fprog *filter;
} s_nsfds_t;

static void s_ns_close(s_nsfds_t *f)
{
    for (int i = 0; i < S_NS_N; i++)
        if (f->ns[i] >= 0)
            close(f->ns[i]);
    if (f->cwd >= 0)
        close(f->cwd);
}

/* Open the namespaces of the VM whose pid 1 is pid (started at
 * start_time); pid 0: none (stay in the worker's, unit tests). */
static int s_ns_open(pid_t pid, uint64_t start_time, s_nsfds_t *f, char *err, size_t errlen)
{
    static const char *const names[S_NS_N] = {"pid", "net", "uts", "ipc", "mnt", "user"};
    for (int i = 0; i < S_NS_N; i++)
        f->ns[i] = -1;
    f->cwd = -1;
    f->userns = false;
    f->filter = NULL;
    if (pid == 0)
        return 0;
    if (!proc_alive(pid, start_time)) {
        snprintf(err, errlen, "the VM's process %d is gone", (int)pid);
        return -1;
    }
    uint64_t ns = proc_pidns(pid);
    if (!ns || ns == proc_pidns(getpid())) {
        snprintf(err, errlen, "the VM's process %d has no namespaces of its own", (int)pid);
        return -1;
    }
    char path[64];
    for (int i = 0; i < S_NS_N; i++) {
        snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, names[i]);
        f->ns[i] = open(path, O_RDONLY | O_CLOEXEC);
        if (f->ns[i] < 0) {
            snprintf(err, errlen, "open %s: %s", path, strerror(errno));
            s_ns_close(f);
            return -1;
        }
    }
    /* a VM in the worker's own user namespace (started by a worker that
     * made none) is entered without one */
    struct stat vs, ws;
    if (fstat(f->ns[S_NS_N - 1], &vs) || stat("/proc/self/ns/user", &ws)) {
        snprintf(err, errlen, "user namespace of %d: %s", (int)pid, strerror(errno));
        s_ns_close(f);
        return -1;
    }
    if (vs.st_ino == ws.st_ino && vs.st_dev == ws.st_dev) {
        close(f->ns[S_NS_N - 1]);
        f->ns[S_NS_N - 1] = -1;
    } else {
        f->userns = true;
        f->filter = vmjail_filter(err, errlen);
        if (!f->filter) {
            s_ns_close(f);
            return -1;
        }
    }
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)pid);
    f->cwd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (f->cwd < 0 || !proc_alive(pid, start_time)) {
        snprintf(err, errlen, "the VM's process %d went away while entering it", (int)pid);
        s_ns_close(f);
        return -1;
    }
    return 0;
}

/* In a forked child: into the namespaces, the VM's working directory.
 * Async-signal-safe. */
static int s_ns_enter(const s_nsfds_t *f)
{
    for (int i = 0; i < S_NS_N; i++)
        if (f->ns[i] >= 0 && setns(f->ns[i], 0))
            return -1;
    if (f->cwd >= 0 && fchdir(f->cwd))
        return -1;
    return 0;
}

/* In a forked child: the VMs' user, as engine_process does for pid 1 (in
 * the VM's user namespace: its root, or the --vm-user id it maps, with the
 * capability bounding set of vmjail.h). */
static int s_drop(const guestop_config_t *cfg, const s_nsfds_t *f)
{
    if (f->userns && vmjail_bound())
        return -1;
    if (!cfg->drop) {
        if (f->userns && (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0)))
            return -1;
        return 0;
    }
    if (setgroups(0, NULL) || setgid(cfg->gid) || setuid(cfg->uid) ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -1;
    return 0;
}

/* Append up to what fits under TT_EXEC_OUTPUT_MAX; drop (and flag) the rest. */
static void s_keep(unsigned char **buf, size_t *len, bool *trunc, const char *data, size_t n)
{
    size_t room = TT_EXEC_OUTPUT_MAX - *len;
    size_t k = n < room ? n : room;
    if (k < n)
        *trunc = true;
    if (!k)
        return;
    if (!*buf) {
        *buf = malloc(TT_EXEC_OUTPUT_MAX);
        if (!*buf) {
            *trunc = true;
            return;
        }
    }
    memcpy(*buf + *len, data, k);
    *len += k;
}

/* One read of a command's output pipe: kept (bounded), or the pipe closed
 * at EOF / error. */
static void s_drain(int *fd, unsigned char **keep, size_t *len, bool *trunc, char *buf, size_t size)
{
    ssize_t r = read(*fd, buf, size);
    if (r > 0)
        s_keep(keep, len, trunc, buf, (size_t)r);
    else if (r == 0 || errno != EINTR) {
        close(*fd);
        *fd = -1;
    }
}

void engine_process_exec(const guestop_config_t *cfg, pid_t pid, uint64_t start_time,
                         char *const *argv, const void *in, size_t in_len, int timeout_ms,
                         guestop_exec_t *res)
{
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    s_nsfds_t f;
    char why[300];
    if (s_ns_open(pid, start_time, &f, why, sizeof why)) {
        res->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(res->msg, sizeof res->msg, "%s", why);
        return;
    }
    int sin[2] = {-1, -1}, out[2] = {-1, -1}, er[2] = {-1, -1}, st[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sin) || pipe2(out, O_CLOEXEC) ||
        pipe2(er, O_CLOEXEC) || pipe2(st, O_CLOEXEC)) {
        res->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(res->msg, sizeof res->msg, "pipes: %s", strerror(errno));
        goto out;
    }
    static char *const envp[] = {
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", NULL};
    pid_t a = fork();
    if (a < 0) {
        res->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(res->msg, sizeof res->msg, "fork: %s", strerror(errno));
        goto out;
    }
    if (a == 0) {
        int32_t rec[2] = {-1, 0};
        /* only the command's ends: stdin must see EOF when the worker
         * closes its end */
        close(sin[0]);
        close(out[0]);
        close(er[0]);
        close(st[0]);
        if (s_ns_enter(&f)) {
            rec[1] = errno;
            spawn_write_all(st[1], rec, sizeof rec);
            _exit(1);
        }
        pid_t b = fork();
        if (b == 0) {
            setsid();
            if (dup2(sin[1], 0) < 0 || dup2(out[1], 1) < 0 || dup2(er[1], 2) < 0)
                _exit(126);
            close_range(3, ~0U, 0);
            spawn_reset_signals();
            if (s_drop(cfg, &f) || (f.userns && vmjail_confine(f.filter))) {
                static const char m[] = "ttfleet: cannot take the VM's user\n";
                spawn_write_all(2, m, sizeof m - 1);
                _exit(126);
            }
            execvpe(argv[0], argv, envp);
            static const char m[] = "ttfleet: cannot run the command: ";
            spawn_write_all(2, m, sizeof m - 1);
            spawn_write_all(2, argv[0], strlen(argv[0]));
            spawn_write_all(2, "\n", 1);
            _exit(errno == ENOENT ? 127 : 126);
        }
        rec[0] = b > 0 ? b : -1;
        rec[1] = b > 0 ? 0 : errno;
        spawn_write_all(st[1], rec, sizeof rec);
        if (b < 0)
            _exit(1);
        close(sin[1]);
        close(out[1]);
        close(er[1]);
        int ws = 0;
        while (waitpid(b, &ws, 0) < 0 && errno == EINTR)
            ;
        int32_t w = ws;
        spawn_write_all(st[1], &w, sizeof w);
        _exit(0);
    }
    close(sin[1]);
    close(out[1]);
    close(er[1]);
    close(st[1]);
    sin[1] = out[1] = er[1] = st[1] = -1;
    if (!in_len) {
        close(sin[0]);
        sin[0] = -1;
    } else
        shutdown(sin[0], SHUT_RD);
    int64_t now = tt_mono_ms(), deadline = now + timeout_ms, end_by = 0;
    int32_t strec[3];
    size_t st_n = 0, in_off = 0;
    bool killed = false;
    char buf[65536];
    for (;;) {
        now = tt_mono_ms();
        bool have_status = st_n >= sizeof strec;
        pid_t b = st_n >= 8 ? strec[0] : -1;
        if (!killed && !have_status && now >= deadline) {
            if (b > 0) {
                kill(-b, SIGKILL); /* A reports its status */
                kill(b, SIGKILL);
            } else
                kill(a, SIGKILL);
            killed = true;
            end_by = now + S_KILL_WAIT_MS;
        }
        if (have_status && !end_by)
            end_by = now + S_LINGER_MS;
        if (end_by && now >= end_by)
            break;
        struct pollfd p[4];
        int n = 0, io = -1, oo = -1, eo = -1, so = -1;
        if (sin[0] >= 0) {
            p[n] = (struct pollfd){.fd = sin[0], .events = POLLOUT};
            io = n++;
        }
        if (out[0] >= 0) {
            p[n] = (struct pollfd){.fd = out[0], .events = POLLIN};
            oo = n++;
        }
        if (er[0] >= 0) {
            p[n] = (struct pollfd){.fd = er[0], .events = POLLIN};
            eo = n++;
        }
        if (st[0] >= 0) {
            p[n] = (struct pollfd){.fd = st[0], .events = POLLIN};
            so = n++;
        }
        if (n == 0 || (so < 0 && !have_status))
            break;
        int64_t until = end_by ? end_by : deadline;
        int wait = until - now > 100 ? 100 : (int)(until - now);
        if (poll(p, (nfds_t)n, wait < 0 ? 0 : wait) < 0 && errno != EINTR)
            break;
        if (io >= 0 && p[io].revents) {
            ssize_t w = send(sin[0], (const char *)in + in_off, in_len - in_off,
                             MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                in_off += (size_t)w;
            if (w < 0 && errno != EAGAIN && errno != EINTR)
                in_off = in_len;
            if (in_off >= in_len) {
                close(sin[0]);
                sin[0] = -1;
            }
        }
        if (oo >= 0 && p[oo].revents)
            s_drain(&out[0], &res->out, &res->out_len, &res->out_trunc, buf, sizeof buf);
        if (eo >= 0 && p[eo].revents)
            s_drain(&er[0], &res->err, &res->err_len, &res->err_trunc, buf, sizeof buf);
        if (so >= 0 && p[so].revents) {
            ssize_t r = read(st[0], (char *)strec + st_n, sizeof strec - st_n);
            if (r > 0)
                st_n += (size_t)r;
            else if (r == 0 || errno != EINTR) {
                close(st[0]);
                st[0] = -1;
            }
        }
        if (out[0] < 0 && er[0] < 0 && st_n >= sizeof strec)
            break;
    }
    if (!(st_n >= sizeof strec) && st_n >= 8 && strec[0] > 0 && !killed) {
        kill(-strec[0], SIGKILL);
        kill(strec[0], SIGKILL);
    }
    if (st_n < sizeof strec)
        kill(a, SIGKILL); /* hung or gone; with the status in, it exits by itself */
    while (waitpid(a, NULL, 0) < 0 && errno == EINTR)
        ;
    if (st_n >= 8 && strec[0] < 0) {
        res->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(res->msg, sizeof res->msg, "cannot enter the VM's namespaces: %s",
                 strerror(strec[1]));
    } else if (st_n >= sizeof strec) {
        int ws = strec[2];
        if (WIFEXITED(ws))
            res->exit_code = WEXITSTATUS(ws);
        else if (WIFSIGNALED(ws)) {
            res->exit_code = -1;
            res->signal = WTERMSIG(ws);
        }
        res->status = TTFLEET__STATUS__OK;
        if (killed) {
            res->status = TTFLEET__STATUS__TIMEOUT;
            snprintf(res->msg, sizeof res->msg,
                     "the command ran over its timeout of %d s and was killed", timeout_ms / 1000);
        }
    } else {
        res->exit_code = -1;
        res->signal = killed ? SIGKILL : 0;
        res->status = killed ? TTFLEET__STATUS__TIMEOUT : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(res->msg, sizeof res->msg, "%s",
                 killed ? "the command ran over its timeout and was killed"
                        : "the command's status was lost");
    }
out:
    for (int i = 0; i < 2; i++) {
        if (sin[i] >= 0)
            close(sin[i]);
        if (out[i] >= 0)
            close(out[i]);
        if (er[i] >= 0)
            close(er[i]);
        if (st[i] >= 0)
            close(st[i]);
    }
    s_ns_close(&f);
}

/* A file in the VM's mount namespace: PUT writes data, GET reads into
 * *data (at most TT_COPY_FILE_MAX). Status and message in res. */
static void s_file(const guestop_config_t *cfg, const guestop_vm_t *vm, bool put, const char *path,
                   unsigned char **data, size_t *len, int file_ms, guestop_exec_t *r)
{
    s_nsfds_t f;
    char why[300];
    if (s_ns_open(vm->pid, vm->start_time, &f, why, sizeof why)) {
        r->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(r->msg, sizeof r->msg, "%s", why);
        return;
    }
    int dp[2] = {-1, -1}, st[2] = {-1, -1};
    if (pipe2(dp, O_CLOEXEC) || pipe2(st, O_CLOEXEC)) {
        r->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(r->msg, sizeof r->msg, "pipes: %s", strerror(errno));
        goto out;
    }
    pid_t c = fork();
    if (c < 0) {
        r->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(r->msg, sizeof r->msg, "fork: %s", strerror(errno));
        goto out;
    }
    if (c == 0) {
        int32_t rec[2] = {0, 0};
        int fd = -1;
        if (s_ns_enter(&f) || s_drop(cfg, &f)) {
            rec[1] = 1;
            goto fail;
        }
        rec[1] = 2;
        fd = put ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)
                 : open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            goto fail;
        if (put) {
            rec[1] = 3;
            for (size_t off = 0; off < (*len);) {
                ssize_t w = write(fd, (*data) + off, (*len) - off);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0)
                    goto fail;
                off += (size_t)w;
            }
            if (fsync(fd) && errno != EINVAL)
                goto fail;
        } else {
            struct stat sb;
            rec[1] = 4;
            if (fstat(fd, &sb))
                goto fail;
            if (!S_ISREG(sb.st_mode)) {
                errno = EINVAL;
                goto fail;
            }
            if (sb.st_size > TT_COPY_FILE_MAX) {
                errno = EFBIG;
                goto fail;
            }
            fcntl(fd, F_SETFL, 0);
            char b[65536];
            for (;;) {
                ssize_t n = read(fd, b, sizeof b);
                if (n < 0 && errno == EINTR)
                    continue;
                if (n < 0)
                    goto fail;
                if (n == 0)
                    break;
                spawn_write_all(dp[1], b, (size_t)n);
            }
        }
        close(fd);
        close(dp[1]);
        rec[1] = 0;
        spawn_write_all(st[1], rec, sizeof rec);
        _exit(0);
    fail:
        rec[0] = errno;
        close(dp[1]);
        spawn_write_all(st[1], rec, sizeof rec);
        _exit(1);
    }
    close(dp[1]);
    close(st[1]);
    dp[1] = st[1] = -1;
    int64_t deadline = tt_mono_ms() + file_ms;
    bool over = false, late = false;
    if (!put) {
        size_t cap = 0;
        char b[65536];
        for (;;) {
            int64_t left = deadline - tt_mono_ms();
            struct pollfd p = {.fd = dp[0], .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
                late = left <= 0;
                if (late)
                    break;
                if (errno == EINTR)
                    continue;
                break;
            }
            ssize_t n = read(dp[0], b, sizeof b);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            if ((*len) + (size_t)n > TT_COPY_FILE_MAX) {
                over = true;
                break;
            }
            if ((*len) + (size_t)n > cap) {
                size_t ncap = cap ? cap * 2 : (1u << 20);
                while (ncap < (*len) + (size_t)n)
                    ncap *= 2;
                if (ncap > TT_COPY_FILE_MAX)
                    ncap = TT_COPY_FILE_MAX;
                unsigned char *nb = realloc((*data), ncap);
                if (!nb) {
                    over = true;
                    break;
                }
                (*data) = nb;
                cap = ncap;
            }
            memcpy((*data) + (*len), b, (size_t)n);
            (*len) += (size_t)n;
        }
    }
    int32_t rec[2] = {0, -1};
    if (over || late || spawn_read_full(st[0], rec, sizeof rec, deadline))
        kill(c, SIGKILL);
    while (waitpid(c, NULL, 0) < 0 && errno == EINTR)
        ;
    static const char *const steps[] = {"", "entering the VM", "open", "write", "read"};
    if (over) {
        r->status = TTFLEET__STATUS__TOO_LARGE;
        snprintf(r->msg, sizeof r->msg, "%s grew over %d bytes (64 MiB) while being read", path,
                 TT_COPY_FILE_MAX);
    } else if (late || rec[1] < 0) {
        r->status = TTFLEET__STATUS__TIMEOUT;
        snprintf(r->msg, sizeof r->msg, "%s of %s did not finish within %d s",
                 put ? "write" : "read", path, file_ms / 1000);
    } else if (rec[1] != 0) {
        bool big = rec[0] == EFBIG;
        r->status = big ? TTFLEET__STATUS__TOO_LARGE : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(r->msg, sizeof r->msg, "%s %s in the guest: %s%s",
                 steps[rec[1] > 0 && rec[1] < 5 ? rec[1] : 0], path,
                 big ? "the file is over 64 MiB" : strerror(rec[0]),
                 rec[0] == EINVAL ? " (not a regular file)" : "");
    } else
        r->status = TTFLEET__STATUS__OK;
out:
    for (int i = 0; i < 2; i++) {
        if (dp[i] >= 0)
            close(dp[i]);
        if (st[i] >= 0)
            close(st[i]);
    }
    s_ns_close(&f);
}

/* A process VM is entered through its pid 1: one without a process has
 * nothing to enter (except in the unit test, own_ns_for_pid0). */
static int s_check(const guestop_config_t *cfg, const guestop_vm_t *vm, uint32_t vm_id, char *why,
                   size_t len)
{
    if (vm->pid <= 0 && !cfg->own_ns_for_pid0) {
        snprintf(why, len, "VM %u has no process on host %s", vm_id, cfg->host_id);
        return TTFLEET__STATUS__GUEST_UNREACHABLE;
    }
    return TTFLEET__STATUS__OK;
}

static void s_exec(const guestop_config_t *cfg, const guestop_vm_t *vm, char *const *argv,
                   const void *in, size_t in_len, int timeout_ms, guestop_exec_t *res)
{
    engine_process_exec(cfg, vm->pid, vm->start_time, argv, in, in_len, timeout_ms, res);
}

const guest_backend_t engine_process_guest = {
    .check = s_check,
    .exec = s_exec,
    .file = s_file,
};
