/*
 * guestop: exec and copy inside a VM. See guestop.h for the contract and
 * the bounds.
 *
 * The loop side (guestop_submit, guestop_flush) owns the tables: kept
 * outputs (s_result_t) and transfers (s_xfer_t). A job (s_job_t) carries
 * copies of everything it needs into a pool thread (jobs.c) and its
 * results back; the loop applies them when it reaps the job.
 *
 * The process backend enters a VM the way its pid 1 lives (see
 * engine_process.c): the thread opens /proc/<pid>/ns/{pid,net,uts,ipc,mnt,
 * user} and /proc/<pid>/cwd, checking pid *and* start time before and after
 * (a pid reused meanwhile is refused), then forks A, which setns()es into
 * each (the user namespace last; the mount namespace brings the VM's own
 * root) and forks B: B is in the VM's pid namespace, a session leader, the
 * VM's root (or the VMs' user when the worker drops them) in its user
 * namespace, with the capabilities and seccomp filter of vmjail.h, the
 * pipes on 0/1/2 and every other descriptor closed, and execs the command
 * (PATH search). A reports
 * B's pid and, when B ends, its wait status on a pipe, so the worker's
 * loop reaping children (waitpid(-1)) cannot steal the result. stdin is a
 * socketpair written with MSG_NOSIGNAL: a command that exits without
 * reading it cannot raise SIGPIPE in the worker. At the timeout the thread
 * SIGKILLs B's process group; once B's status is in, it reads what is left
 * for at most S_LINGER_MS (a daemon B left behind may hold the pipes).
 * Files: a child C enters the mount namespace (and the user) the same way
 * and opens the path itself, so the guest's view (mounts, symlinks,
 * permissions) decides, never the worker's.
 */
#define _GNU_SOURCE
#include "guestop.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <openssl/evp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "jobs.h"
#include "proc.h"
#include "qga.h"
#include "spawn.h"
#include "ttguest.h"
#include "ttproto.h"
#include "vmjail.h"
#include "wire.h"

#define S_LINGER_MS 500     /* output read after the command ended */
#define S_KILL_WAIT_MS 3000 /* after the SIGKILL, for the status */
#define S_FILE_MS 120000    /* a whole file into / out of the guest */
#define S_AGENT_CONNECT_MS 5000

typedef enum { J_EXEC, J_PUT, J_GET } s_kind_t;

typedef struct {
    guestop_config_t cfg; /* host_id borrowed from the owner's config */
    s_kind_t kind;
    uint64_t op_id;
    uint32_t vm_id;
    guestop_vm_t vm;
    char **argv; /* J_EXEC, NULL-terminated */
    unsigned char *in;
    size_t in_len;
    int timeout_ms;
    char *path;          /* J_PUT, J_GET */
    unsigned char *data; /* J_PUT: the file; J_GET: what was read */
    size_t len;
    uint32_t max_bytes; /* J_GET: first chunk wanted */
    uint16_t gone;      /* self->gone[vm_id] at submit: changed = the VM went away */
    int64_t queued_ms;  /* when it was queued: time waiting for a thread counts */
    int file_ms;        /* J_PUT, J_GET: what is left of S_FILE_MS */
    guestop_exec_t ex;  /* J_EXEC result; status and msg of every job */
    unsigned char sha[32];
} s_job_t;

typedef struct {
    char id[TT_EXEC_ID_LEN + 1];
    uint32_t vm_id;
    int64_t expires_ms;
    guestop_exec_t ex;
} s_result_t;

typedef struct {
    char id[TT_EXEC_ID_LEN + 1];
    uint32_t vm_id;
    int dir; /* Ttfleet__CopyDirection */
    char *path;
    unsigned char *buf;
    size_t len, cap;
    unsigned char sha[32]; /* GET */
    int64_t idle_ms;       /* dropped when the monotonic clock passes it */
} s_xfer_t;

struct guestop_t {
    guestop_config_t cfg;
    jobs_t *jobs;
    size_t pending;
    uint8_t *per_vm; /* [TT_VMID_MAX + 1] jobs queued or running */
    uint16_t *gone;  /* [TT_VMID_MAX + 1] times the VM id was removed (guestop_vm_gone) */
    s_result_t *results[GUESTOP_RESULTS_MAX];
    s_xfer_t *xfers[GUESTOP_XFERS_MAX];
    zlist_t *out;
};

/* ---- small helpers ---- */

static int s_new_id(char id[TT_EXEC_ID_LEN + 1])
{
    unsigned char b[TT_EXEC_ID_LEN / 2];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return -1;
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(id + 2 * i, 3, "%02x", b[i]);
    return 0;
}

void guestop_exec_free(guestop_exec_t *res)
{
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
    res->out_len = res->err_len = 0;
}

static void s_result_free(s_result_t **r_p)
{
    if (!*r_p)
        return;
    guestop_exec_free(&(*r_p)->ex);
    free(*r_p);
    *r_p = NULL;
}

static void s_xfer_free(s_xfer_t **x_p)
{
    if (!*x_p)
        return;
    free((*x_p)->path);
    free((*x_p)->buf);
    free(*x_p);
    *x_p = NULL;
}

static void s_job_free(s_job_t *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->argv && j->argv[i]; i++)
        free(j->argv[i]);
    free(j->argv);
    free(j->in);
    free(j->path);
    free(j->data);
    guestop_exec_free(&j->ex);
    free(j);
}

static void s_queue(guestop_t *self, Ttfleet__WorkerReply *rep)
{
    zframe_t *f = wire_pack(&rep->base);
    if (f && zlist_append(self->out, f))
        zframe_destroy(&f);
}

static void s_answer(guestop_t *self, uint64_t op_id, int status, const char *msg)
{
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = (Ttfleet__Status)status;
    rep.message = (char *)msg;
    if (status != TTFLEET__STATUS__OK)
        zsys_info("guest op %llu: %s: %s", (unsigned long long)op_id, tt_status_name(status), msg);
    s_queue(self, &rep);
}

/* An ExecResult with the pieces of ex from the offsets. */
static void s_exec_answer(guestop_t *self, uint64_t op_id, int status, const char *msg,
                          uint32_t vm_id, const guestop_exec_t *ex, const char *id,
                          uint64_t out_off, uint64_t err_off)
{
    Ttfleet__ExecResult er = TTFLEET__EXEC_RESULT__INIT;
    er.host = (char *)self->cfg.host_id;
    er.vm_id = vm_id;
    er.exit_code = ex->exit_code;
    er.signal = ex->signal;
    if (out_off > ex->out_len)
        out_off = ex->out_len;
    if (err_off > ex->err_len)
        err_off = ex->err_len;
    size_t on = ex->out_len - out_off, en = ex->err_len - err_off;
    er.stdout.data = ex->out ? ex->out + out_off : NULL;
    er.stdout.len = on > TT_EXEC_PIECE ? TT_EXEC_PIECE : on;
    er.stderr.data = ex->err ? ex->err + err_off : NULL;
    er.stderr.len = en > TT_EXEC_PIECE ? TT_EXEC_PIECE : en;
    er.stdout_offset = out_off;
    er.stderr_offset = err_off;
    er.stdout_size = ex->out_len;
    er.stderr_size = ex->err_len;
    er.stdout_truncated = ex->out_trunc;
    er.stderr_truncated = ex->err_trunc;
    er.exec_id = (char *)(id ? id : "");
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = (Ttfleet__Status)status;
    rep.message = (char *)msg;
    rep.exec = &er;
    s_queue(self, &rep);
}

/* A GET chunk of x from offset (or the PUT's progress when x is a PUT). */
static void s_copy_answer(guestop_t *self, uint64_t op_id, s_xfer_t *x, uint64_t offset,
                          uint32_t max_bytes)
{
    Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
    cc.transfer_id = x->id;
    cc.offset = offset;
    if (x->dir == TTFLEET__COPY_DIRECTION__COPY_GET) {
        size_t want = max_bytes ? max_bytes : TT_COPY_CHUNK_MAX;
        size_t left = offset < x->len ? x->len - (size_t)offset : 0;
        cc.data.data = left ? x->buf + offset : NULL;
        cc.data.len = left < want ? left : want;
        cc.eof = offset + cc.data.len >= x->len;
        cc.total_size = x->len;
        cc.sha256.data = x->sha;
        cc.sha256.len = 32;
    }
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = TTFLEET__STATUS__OK;
    rep.message = "";
    rep.copy = &cc;
    s_queue(self, &rep);
}

/* ---- the process backend (pool threads) ---- */

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

void guestop_proc_exec(const guestop_config_t *cfg, pid_t pid, uint64_t start_time,
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
 * *data (at most TT_COPY_FILE_MAX). Status and message in job. */
static void s_proc_file(s_job_t *j)
{
    guestop_exec_t *r = &j->ex;
    s_nsfds_t f;
    char why[300];
    if (s_ns_open(j->vm.pid, j->vm.start_time, &f, why, sizeof why)) {
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
    bool put = j->kind == J_PUT;
    pid_t c = fork();
    if (c < 0) {
        r->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(r->msg, sizeof r->msg, "fork: %s", strerror(errno));
        goto out;
    }
    if (c == 0) {
        int32_t rec[2] = {0, 0};
        int fd = -1;
        if (s_ns_enter(&f) || s_drop(&j->cfg, &f)) {
            rec[1] = 1;
            goto fail;
        }
        rec[1] = 2;
        fd = put ? open(j->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)
                 : open(j->path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            goto fail;
        if (put) {
            rec[1] = 3;
            for (size_t off = 0; off < j->len;) {
                ssize_t w = write(fd, j->data + off, j->len - off);
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
    int64_t deadline = tt_mono_ms() + j->file_ms;
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
            if (j->len + (size_t)n > TT_COPY_FILE_MAX) {
                over = true;
                break;
            }
            if (j->len + (size_t)n > cap) {
                size_t ncap = cap ? cap * 2 : (1u << 20);
                while (ncap < j->len + (size_t)n)
                    ncap *= 2;
                if (ncap > TT_COPY_FILE_MAX)
                    ncap = TT_COPY_FILE_MAX;
                unsigned char *nb = realloc(j->data, ncap);
                if (!nb) {
                    over = true;
                    break;
                }
                j->data = nb;
                cap = ncap;
            }
            memcpy(j->data + j->len, b, (size_t)n);
            j->len += (size_t)n;
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
        snprintf(r->msg, sizeof r->msg, "%s grew over %d bytes (64 MiB) while being read", j->path,
                 TT_COPY_FILE_MAX);
    } else if (late || rec[1] < 0) {
        r->status = TTFLEET__STATUS__TIMEOUT;
        snprintf(r->msg, sizeof r->msg, "%s of %s did not finish within %d s",
                 put ? "write" : "read", j->path, j->file_ms / 1000);
    } else if (rec[1] != 0) {
        bool big = rec[0] == EFBIG;
        r->status = big ? TTFLEET__STATUS__TOO_LARGE : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(r->msg, sizeof r->msg, "%s %s in the guest: %s%s",
                 steps[rec[1] > 0 && rec[1] < 5 ? rec[1] : 0], j->path,
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

/* ---- the qemu backend (guest agent) ---- */

static qga_conn_t *s_agent(s_job_t *j)
{
    char why[300];
    qga_conn_t *c = qga_open(j->vm.agent_sock, S_AGENT_CONNECT_MS, why, sizeof why);
    if (!c) {
        j->ex.status = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(j->ex.msg, sizeof j->ex.msg, "%s", why);
    }
    return c;
}

static void s_agent_exec(s_job_t *j)
{
    j->ex.exit_code = -1;
    qga_conn_t *c = s_agent(j);
    if (!c)
        return;
    int64_t deadline = tt_mono_ms() + j->timeout_ms;
    qga_exec_t qx;
    char why[300];
    if (qga_exec(c, (const char *const *)j->argv, j->in, j->in_len, j->timeout_ms, &qx, why,
                 sizeof why)) {
        bool late = tt_mono_ms() >= deadline - 50;
        j->ex.status = late ? TTFLEET__STATUS__TIMEOUT : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(j->ex.msg, sizeof j->ex.msg, "%s%s", why, late ? " (it may still run)" : "");
    } else {
        /* killed past its timeout: TIMEOUT with what it wrote, as the
         * process backend answers */
        j->ex.status = qx.killed ? TTFLEET__STATUS__TIMEOUT : TTFLEET__STATUS__OK;
        if (qx.killed)
            snprintf(j->ex.msg, sizeof j->ex.msg,
                     "the command ran over its timeout of %d s and was killed (kill -KILL of its "
                     "%s in the guest)",
                     j->timeout_ms / 1000, qx.group ? "process group" : "pid");
        j->ex.exit_code = qx.signal > 0 || qx.killed ? -1 : qx.exit_code;
        j->ex.signal = qx.signal > 0 ? qx.signal : qx.killed ? 9 : 0;
        j->ex.out = qx.out;
        j->ex.out_len = qx.out_len;
        j->ex.out_trunc = qx.out_truncated;
        j->ex.err = qx.errb;
        j->ex.err_len = qx.err_len;
        j->ex.err_trunc = qx.err_truncated;
    }
    qga_close(&c);
}

static void s_agent_file(s_job_t *j)
{
    qga_conn_t *c = s_agent(j);
    if (!c)
        return;
    char why[300];
    unsigned char sha[32];
    int rc = j->kind == J_PUT
                 ? qga_file_put(c, j->path, j->data, j->len, sha, j->file_ms, why, sizeof why)
                 : qga_file_get(c, j->path, &j->data, &j->len, sha, j->file_ms, why, sizeof why);
    if (rc) {
        j->ex.status =
            strstr(why, "larger than") ? TTFLEET__STATUS__TOO_LARGE : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(j->ex.msg, sizeof j->ex.msg, "%s", why);
    } else
        j->ex.status = TTFLEET__STATUS__OK;
    qga_close(&c);
}

/* ---- the pool side ---- */

static void s_run(void *arg)
{
    s_job_t *j = arg;
    bool qemu = strcmp(j->vm.engine, "qemu") == 0;
    /* the broker's deadline started when the command was sent: time spent
     * waiting for a thread comes off the job's own, so the answer still
     * arrives in time (a transfer that cannot get 1 s, or a command that
     * cannot get half its timeout up to 1 s, is not started: a 1 s
     * timeout after a wait of a few ms still runs) */
    int64_t waited = tt_mono_ms() - j->queued_ms;
    j->file_ms = S_FILE_MS - (int)(waited < S_FILE_MS ? waited : S_FILE_MS);
    int left = j->kind == J_EXEC ? j->timeout_ms - (int)waited : j->file_ms;
    int least = j->kind == J_EXEC ? (j->timeout_ms / 2 < 1000 ? j->timeout_ms / 2 : 1000) : 1000;
    if (left < least || left <= 0) {
        j->ex.status = TTFLEET__STATUS__TIMEOUT;
        j->ex.exit_code = -1;
        snprintf(j->ex.msg, sizeof j->ex.msg,
                 "waited %lld ms for a free guest thread of host %s: not started",
                 (long long)waited, j->cfg.host_id);
        return;
    }
    if (j->kind == J_EXEC)
        j->timeout_ms = left;
    if (j->kind == J_EXEC) {
        if (qemu)
            s_agent_exec(j);
        else
            guestop_proc_exec(&j->cfg, j->vm.pid, j->vm.start_time, j->argv, j->in, j->in_len,
                              j->timeout_ms, &j->ex);
    } else if (qemu)
        s_agent_file(j);
    else
        s_proc_file(j);
    if (j->kind == J_GET && j->ex.status == TTFLEET__STATUS__OK)
        EVP_Digest(j->data ? j->data : (unsigned char *)"", j->len, j->sha, NULL, EVP_sha256(),
                   NULL);
}

/* ---- the loop side ---- */

guestop_t *guestop_new(const guestop_config_t *cfg)
{
    guestop_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->jobs = jobs_new(GUESTOP_THREADS);
    self->per_vm = calloc(TT_VMID_MAX + 1, 1);
    self->gone = calloc(TT_VMID_MAX + 1, sizeof *self->gone);
    self->out = zlist_new();
    if (!self->jobs || !self->per_vm || !self->gone || !self->out) {
        guestop_destroy(&self);
        return NULL;
    }
    return self;
}

static void s_drop_job(void *arg)
{
    s_job_t *j = arg;
    s_job_free(j);
}

void guestop_destroy(guestop_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    guestop_t *self = *self_p;
    jobs_destroy(&self->jobs, s_drop_job);
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        s_xfer_free(&self->xfers[i]);
    if (self->out) {
        zframe_t *f;
        while ((f = zlist_pop(self->out)))
            zframe_destroy(&f);
        zlist_destroy(&self->out);
    }
    free(self->per_vm);
    free(self->gone);
    free(self);
    *self_p = NULL;
}

static s_xfer_t **s_xfer_find(guestop_t *self, const char *id)
{
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && strcmp(self->xfers[i]->id, id) == 0)
            return &self->xfers[i];
    return NULL;
}

/* A free transfer slot for vm_id, or NULL (limits) with the reason. */
static s_xfer_t **s_xfer_slot(guestop_t *self, uint32_t vm_id, char *why, size_t len)
{
    s_xfer_t **free_slot = NULL;
    int on_vm = 0;
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++) {
        if (!self->xfers[i]) {
            if (!free_slot)
                free_slot = &self->xfers[i];
        } else if (self->xfers[i]->vm_id == vm_id)
            on_vm++;
    }
    if (on_vm >= GUESTOP_XFERS_PER_VM) {
        snprintf(why, len, "VM %u has %d copies in progress (limit %d); try again later", vm_id,
                 on_vm, GUESTOP_XFERS_PER_VM);
        return NULL;
    }
    if (!free_slot)
        snprintf(why, len, "host %s has %d copies in progress (limit); try again later",
                 self->cfg.host_id, GUESTOP_XFERS_MAX);
    return free_slot;
}

static int s_job_room(guestop_t *self, uint32_t vm_id, char *why, size_t len)
{
    if (self->pending >= GUESTOP_JOBS_MAX) {
        snprintf(why, len, "host %s runs %zu guest operations (limit %d); try again later",
                 self->cfg.host_id, self->pending, GUESTOP_JOBS_MAX);
        return -1;
    }
    if (self->per_vm[vm_id] >= GUESTOP_JOBS_PER_VM) {
        snprintf(why, len, "VM %u runs %u guest operations (limit %d); try again later", vm_id,
                 self->per_vm[vm_id], GUESTOP_JOBS_PER_VM);
        return -1;
    }
    return 0;
}

static void s_job_start(guestop_t *self, s_job_t *j)
{
    j->queued_ms = tt_mono_ms();
    if (jobs_submit(self->jobs, s_run, j)) {
        s_answer(self, j->op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        s_job_free(j);
        return;
    }
    self->pending++;
    self->per_vm[j->vm_id]++;
}

static s_job_t *s_job_new(guestop_t *self, s_kind_t kind, uint64_t op_id, uint32_t vm_id,
                          const guestop_vm_t *vm)
{
    s_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->cfg = self->cfg;
    j->kind = kind;
    j->op_id = op_id;
    j->vm_id = vm_id;
    j->vm = *vm;
    j->gone = self->gone[vm_id];
    return j;
}

static void s_exec_submit(guestop_t *self, uint64_t op_id, const Ttfleet__EnvExec *e,
                          const guestop_vm_t *vm)
{
    char why[256];
    if (e->exec_id && *e->exec_id) {
        for (int i = 0; i < GUESTOP_RESULTS_MAX; i++) {
            s_result_t *r = self->results[i];
            if (r && r->vm_id == e->vm_id && strcmp(r->id, e->exec_id) == 0) {
                s_exec_answer(self, op_id, TTFLEET__STATUS__OK, "", r->vm_id, &r->ex, r->id,
                              e->stdout_offset, e->stderr_offset);
                return;
            }
        }
        snprintf(why, sizeof why,
                 "no output kept under exec_id %s for VM %u (kept %d s after the command)",
                 e->exec_id, e->vm_id, GUESTOP_KEEP_MS / 1000);
        s_answer(self, op_id, TTFLEET__STATUS__NOT_FOUND, why);
        return;
    }
    if (s_job_room(self, e->vm_id, why, sizeof why)) {
        s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
        return;
    }
    s_job_t *j = s_job_new(self, J_EXEC, op_id, e->vm_id, vm);
    if (j) {
        j->argv = calloc(e->n_argv + 1, sizeof *j->argv);
        for (size_t i = 0; j->argv && i < e->n_argv; i++)
            if (!(j->argv[i] = strdup(e->argv[i] ? e->argv[i] : "")))
                break;
        if (e->stdin.len && (j->in = malloc(e->stdin.len))) {
            memcpy(j->in, e->stdin.data, e->stdin.len);
            j->in_len = e->stdin.len;
        }
        j->timeout_ms = (int)(e->timeout_s ? e->timeout_s : TT_EXEC_TIMEOUT_DEFAULT) * 1000;
    }
    if (!j || !j->argv || (e->n_argv && !j->argv[e->n_argv - 1]) || (e->stdin.len && !j->in)) {
        s_job_free(j);
        s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        return;
    }
    s_job_start(self, j);
}

static void s_copy_submit(guestop_t *self, uint64_t op_id, const Ttfleet__EnvCopy *c,
                          const guestop_vm_t *vm, int64_t now)
{
    char why[300];
    bool fresh = !c->transfer_id || !*c->transfer_id;
    s_xfer_t **xp = fresh ? NULL : s_xfer_find(self, c->transfer_id);
    s_xfer_t *x = xp ? *xp : NULL;
    if (!fresh && (!x || x->vm_id != c->vm_id || x->dir != (int)c->direction ||
                   strcmp(x->path, c->path) != 0)) {
        snprintf(why, sizeof why,
                 "no copy %s of %s in progress for VM %u (a copy idle for %d s is dropped)",
                 c->transfer_id, c->path, c->vm_id, GUESTOP_XFER_IDLE_MS / 1000);
        s_answer(self, op_id, TTFLEET__STATUS__NOT_FOUND, why);
        return;
    }
    if (c->direction == TTFLEET__COPY_DIRECTION__COPY_GET) {
        if (x) {
            x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
            s_copy_answer(self, op_id, x, c->offset, c->max_bytes);
            if (c->offset + (c->max_bytes ? c->max_bytes : TT_COPY_CHUNK_MAX) >= x->len)
                s_xfer_free(xp); /* the last chunk went out */
            return;
        }
        if (!s_xfer_slot(self, c->vm_id, why, sizeof why) ||
            s_job_room(self, c->vm_id, why, sizeof why)) {
            s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
            return;
        }
        s_job_t *j = s_job_new(self, J_GET, op_id, c->vm_id, vm);
        if (!j || !(j->path = strdup(c->path))) {
            s_job_free(j);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        j->max_bytes = c->max_bytes;
        s_job_start(self, j);
        return;
    }
    /* PUT */
    if (c->last && s_job_room(self, c->vm_id, why, sizeof why)) {
        s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
        return;
    }
    if (!x) {
        xp = s_xfer_slot(self, c->vm_id, why, sizeof why);
        if (!xp) {
            s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
            return;
        }
        x = calloc(1, sizeof *x);
        if (!x || s_new_id(x->id) || !(x->path = strdup(c->path))) {
            s_xfer_free(&x);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        x->vm_id = c->vm_id;
        x->dir = TTFLEET__COPY_DIRECTION__COPY_PUT;
        *xp = x;
    }
    if (c->offset != x->len) {
        snprintf(why, sizeof why, "chunk at offset %llu, but %zu bytes were received",
                 (unsigned long long)c->offset, x->len);
        s_answer(self, op_id, TTFLEET__STATUS__BAD_REQUEST, why);
        return;
    }
    if (x->len + c->data.len > TT_COPY_FILE_MAX) { /* tt_copy_valid refuses it already */
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__TOO_LARGE, "the file would pass 64 MiB");
        return;
    }
    if (x->len + c->data.len > x->cap) {
        size_t ncap = x->cap ? x->cap : (1u << 20);
        while (ncap < x->len + c->data.len)
            ncap *= 2;
        if (ncap > TT_COPY_FILE_MAX)
            ncap = TT_COPY_FILE_MAX;
        unsigned char *nb = realloc(x->buf, ncap);
        if (!nb) {
            s_xfer_free(xp);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        x->buf = nb;
        x->cap = ncap;
    }
    if (c->data.len)
        memcpy(x->buf + x->len, c->data.data, c->data.len);
    x->len += c->data.len;
    x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
    if (!c->last) {
        s_copy_answer(self, op_id, x, x->len, 0);
        return;
    }
    unsigned char sha[32];
    EVP_Digest(x->buf ? x->buf : (unsigned char *)"", x->len, sha, NULL, EVP_sha256(), NULL);
    if (c->total_size != x->len || memcmp(sha, c->sha256.data, 32) != 0) {
        snprintf(why, sizeof why,
                 "the %zu bytes received for %s do not have the sha256 (or size) given; nothing "
                 "was written",
                 x->len, x->path);
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__CHECKSUM_MISMATCH, why);
        return;
    }
    s_job_t *j = s_job_new(self, J_PUT, op_id, c->vm_id, vm);
    if (!j) {
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        return;
    }
    j->path = x->path;
    j->data = x->buf;
    j->len = x->len;
    memcpy(j->sha, sha, 32);
    x->path = NULL;
    x->buf = NULL;
    s_xfer_free(xp);
    s_job_start(self, j);
}

void guestop_submit(guestop_t *self, Ttfleet__WorkerCommand *cmd, const guestop_vm_t *vm)
{
    char why[300];
    uint64_t op_id = cmd->op_id;
    uint32_t vm_id = cmd->exec ? cmd->exec->vm_id : cmd->copy ? cmd->copy->vm_id : 0;
    int st = TTFLEET__STATUS__OK;
    if (!cmd->exec == !cmd->copy) {
        st = TTFLEET__STATUS__BAD_REQUEST;
        snprintf(why, sizeof why, "give one of exec and copy");
    } else if (cmd->exec ? tt_exec_valid(cmd->exec, why, sizeof why)
                         : tt_copy_valid(cmd->copy, why, sizeof why))
        st = TTFLEET__STATUS__BAD_REQUEST;
    else if (vm_id < TT_VMID_MIN || vm_id > TT_VMID_MAX) {
        st = TTFLEET__STATUS__BAD_REQUEST;
        snprintf(why, sizeof why, "VM id %u out of range", vm_id);
    } else if (!vm) {
        st = TTFLEET__STATUS__NOT_FOUND;
        snprintf(why, sizeof why, "host %s has no VM %u", self->cfg.host_id, vm_id);
    } else if (vm->state != TTFLEET__VM_STATE__VM_RUNNING) {
        st = TTFLEET__STATUS__INVALID_STATE;
        snprintf(why, sizeof why, "VM %u is %s on host %s: exec and copy need it running", vm_id,
                 tt_vm_state_name(vm->state), self->cfg.host_id);
    } else if (strcmp(vm->engine, "process") == 0 && vm->pid <= 0 && !self->cfg.own_ns_for_pid0) {
        st = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(why, sizeof why, "VM %u has no process on host %s", vm_id, self->cfg.host_id);
    } else if (strcmp(vm->engine, "qemu") != 0 && strcmp(vm->engine, "process") != 0) {
        st = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(why, sizeof why, "VM %u runs on engine %s, which has no guest to enter", vm_id,
                 vm->engine);
    }
    if (st == TTFLEET__STATUS__OK) {
        if (cmd->exec)
            s_exec_submit(self, op_id, cmd->exec, vm);
        else
            s_copy_submit(self, op_id, cmd->copy, vm, tt_mono_ms());
    } else
        s_answer(self, op_id, st, why);
    ttfleet__worker_command__free_unpacked(cmd, NULL);
}

/* The loop takes a finished job back. */
static void s_done(guestop_t *self, s_job_t *j, int64_t now)
{
    guestop_exec_t *ex = &j->ex;
    if (j->gone != self->gone[j->vm_id]) {
        /* deleted (or destroyed) while the job ran: say so, keep nothing */
        char why[200];
        snprintf(why, sizeof why, "VM %u on host %s was stopped or deleted while the %s ran",
                 j->vm_id, self->cfg.host_id, j->kind == J_EXEC ? "command" : "copy");
        if (j->kind == J_EXEC) {
            ex->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
            snprintf(ex->msg, sizeof ex->msg, "%s", why);
            s_exec_answer(self, j->op_id, ex->status, ex->msg, j->vm_id, ex, NULL, 0, 0);
        } else
            s_answer(self, j->op_id, TTFLEET__STATUS__GUEST_UNREACHABLE, why);
        return;
    }
    if (j->kind == J_EXEC) {
        const char *id = NULL;
        if (ex->out_len > TT_EXEC_PIECE || ex->err_len > TT_EXEC_PIECE) {
            int slot = 0;
            for (int i = 0; i < GUESTOP_RESULTS_MAX; i++) {
                if (!self->results[i]) {
                    slot = i;
                    break;
                }
                if (self->results[i]->expires_ms < self->results[slot]->expires_ms)
                    slot = i; /* the oldest goes if every slot is taken */
            }
            s_result_free(&self->results[slot]);
            s_result_t *r = calloc(1, sizeof *r);
            if (r && s_new_id(r->id) == 0) {
                r->vm_id = j->vm_id;
                r->expires_ms = now + GUESTOP_KEEP_MS;
                r->ex = *ex; /* takes the buffers */
                j->ex.out = j->ex.err = NULL;
                self->results[slot] = r;
                ex = &r->ex;
                id = r->id;
            } else
                free(r);
        }
        s_exec_answer(self, j->op_id, ex->status, ex->msg, j->vm_id, ex, id, 0, 0);
        return;
    }
    if (ex->status != TTFLEET__STATUS__OK) {
        s_answer(self, j->op_id, ex->status, ex->msg);
        return;
    }
    if (j->kind == J_PUT) {
        Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
        cc.transfer_id = "";
        cc.offset = j->len;
        cc.eof = true;
        cc.total_size = j->len;
        cc.sha256.data = j->sha;
        cc.sha256.len = 32;
        Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
        rep.op_id = j->op_id;
        rep.message = "";
        rep.copy = &cc;
        s_queue(self, &rep);
        return;
    }
    /* GET: keep the file for the chunks that follow */
    char why[300];
    s_xfer_t **xp = s_xfer_slot(self, j->vm_id, why, sizeof why);
    s_xfer_t *x = xp ? calloc(1, sizeof *x) : NULL;
    if (!x || s_new_id(x->id)) {
        free(x);
        s_answer(self, j->op_id, TTFLEET__STATUS__UNAVAILABLE, xp ? "out of memory" : why);
        return;
    }
    x->vm_id = j->vm_id;
    x->dir = TTFLEET__COPY_DIRECTION__COPY_GET;
    x->path = j->path;
    x->buf = j->data;
    x->len = x->cap = j->len;
    memcpy(x->sha, j->sha, 32);
    x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
    j->path = NULL;
    j->data = NULL;
    *xp = x;
    s_copy_answer(self, j->op_id, x, 0, j->max_bytes);
    if ((size_t)(j->max_bytes ? j->max_bytes : TT_COPY_CHUNK_MAX) >= x->len)
        s_xfer_free(xp);
}

void guestop_flush(guestop_t *self, int64_t now_ms)
{
    s_job_t *j;
    while ((j = jobs_reap(self->jobs))) {
        self->pending--;
        if (self->per_vm[j->vm_id])
            self->per_vm[j->vm_id]--;
        s_done(self, j, now_ms);
        s_job_free(j);
    }
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        if (self->results[i] && self->results[i]->expires_ms <= now_ms)
            s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && self->xfers[i]->idle_ms <= now_ms)
            s_xfer_free(&self->xfers[i]);
}

zframe_t *guestop_pop(guestop_t *self)
{
    return zlist_pop(self->out);
}

size_t guestop_pending(const guestop_t *self)
{
    return self->pending;
}

void guestop_vm_gone(guestop_t *self, uint32_t vm_id)
{
    if (vm_id > TT_VMID_MAX)
        return;
    self->gone[vm_id]++;
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        if (self->results[i] && self->results[i]->vm_id == vm_id)
            s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && self->xfers[i]->vm_id == vm_id)
            s_xfer_free(&self->xfers[i]);
}

size_t guestop_kept(const guestop_t *self)
{
    size_t n = 0;
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        n += self->results[i] != NULL;
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        n += self->xfers[i] != NULL;
    return n;
}
