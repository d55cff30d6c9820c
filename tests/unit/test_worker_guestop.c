/*
 * guestop (worker/guest/guestop.c): the bounds of exec and copy on the worker
 * side, without a broker.
 *
 * - the process backend in the worker's own namespaces (pid 0): stdout
 *   kept to 1 MiB and flagged, stderr apart, exit code and signal, stdin,
 *   a timeout that kills, a command that leaves a child holding its pipes;
 * - guestop_submit / guestop_flush: a VM that is not there, not running, or
 *   on an engine without a guest; an output longer than one piece kept
 *   under an exec_id and read back by offsets, then dropped with its VM;
 *   PUT in order only, a wrong sha256 writes nothing, a right one writes
 *   the file, GET in chunks with size and sha256; transfers per VM bounded;
 * - the qemu backend against a fake guest agent on a unix socket (the
 *   protocol qga.c speaks, running real processes as qemu-ga does): exec
 *   with its output in a session of its own (setsid); past the timeout the
 *   command's process group is killed, a background child and a grandchild
 *   holding the output pipes too, and the partial output comes back; an
 *   agent without setsid runs the command as it is and kills its pid; a
 *   file PUT and GET.
 */
#include "test_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "guestop.h"
#include "ttguest.h"
#include "ttproto.h"

static guestop_config_t s_cfg = {"h1", false, 0, 0, true};

/* ---- the process backend ---- */

static void s_exec(char *const *argv, const char *in, int timeout_ms, guestop_exec_t *r)
{
    engine_process_exec(&s_cfg, 0, 0, argv, in, in ? strlen(in) : 0, timeout_ms, r);
}

static void test_proc_exec(void)
{
    guestop_exec_t r;
    char *big[] = {"sh", "-c", "head -c 2000000 /dev/zero; echo oops >&2; exit 3", NULL};
    s_exec(big, NULL, 10000, &r);
    CHECK(r.status == TTFLEET__STATUS__OK);
    CHECK(r.exit_code == 3 && r.signal == 0);
    CHECK(r.out_len == TT_EXEC_OUTPUT_MAX && r.out_trunc);
    CHECK(r.err_len == 5 && !r.err_trunc && memcmp(r.err, "oops\n", 5) == 0);
    guestop_exec_free(&r);

    char *cat[] = {"cat", NULL};
    s_exec(cat, "some input\n", 10000, &r);
    CHECK(r.status == TTFLEET__STATUS__OK && r.exit_code == 0);
    CHECK(r.out_len == 11 && memcmp(r.out, "some input\n", 11) == 0);
    guestop_exec_free(&r);

    /* a command that does not read its stdin cannot hurt the worker */
    char *t[] = {"true", NULL};
    s_exec(t, "unread", 10000, &r);
    CHECK(r.status == TTFLEET__STATUS__OK && r.exit_code == 0);
    guestop_exec_free(&r);

    int64_t t0 = tt_mono_ms();
    char *slow[] = {"sh", "-c", "echo before; exec sleep 30", NULL};
    s_exec(slow, NULL, 500, &r);
    int64_t took = tt_mono_ms() - t0;
    CHECK(r.status == TTFLEET__STATUS__TIMEOUT);
    CHECK(r.exit_code == -1 && r.signal == 9);
    CHECK(r.out_len == 7 && memcmp(r.out, "before\n", 7) == 0);
    CHECK(took < 4000);
    guestop_exec_free(&r);

    /* a daemon left behind holds the pipes: the answer comes anyway */
    t0 = tt_mono_ms();
    char *bg[] = {"sh", "-c", "sleep 5 & echo hi", NULL};
    s_exec(bg, NULL, 10000, &r);
    CHECK(r.status == TTFLEET__STATUS__OK && r.exit_code == 0);
    CHECK(tt_mono_ms() - t0 < 3000);
    guestop_exec_free(&r);

    char *none[] = {"/no/such/program", NULL};
    s_exec(none, NULL, 10000, &r);
    CHECK(r.status == TTFLEET__STATUS__OK && r.exit_code == 127);
    guestop_exec_free(&r);
}

/* ---- through guestop_submit ---- */

static uint64_t s_op = 1;

/* A WorkerCommand as the broker sends it (packed and unpacked: submit
 * takes an unpacked one and frees it). */
static Ttfleet__WorkerCommand *s_cmd(Ttfleet__EnvExec *x, Ttfleet__EnvCopy *c)
{
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = s_op++;
    cmd.exec = x;
    cmd.copy = c;
    size_t n = ttfleet__worker_command__get_packed_size(&cmd);
    uint8_t *buf = malloc(n);
    ttfleet__worker_command__pack(&cmd, buf);
    Ttfleet__WorkerCommand *u = ttfleet__worker_command__unpack(NULL, n, buf);
    free(buf);
    return u;
}

/* Submit and wait (bounded) for the answer. */
static Ttfleet__WorkerReply *s_run(guestop_t *g, Ttfleet__EnvExec *x, Ttfleet__EnvCopy *c,
                                   const guestop_vm_t *vm)
{
    guestop_submit(g, s_cmd(x, c), vm);
    int64_t deadline = tt_mono_ms() + 20000;
    while (tt_mono_ms() < deadline) {
        guestop_flush(g, tt_mono_ms());
        zframe_t *f = guestop_pop(g);
        if (f) {
            Ttfleet__WorkerReply *r =
                ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f));
            zframe_destroy(&f);
            return r;
        }
        usleep(5000);
    }
    return NULL;
}

static void s_free(Ttfleet__WorkerReply **r)
{
    if (*r)
        ttfleet__worker_reply__free_unpacked(*r, NULL);
    *r = NULL;
}

static guestop_vm_t s_vm(const char *engine, int state)
{
    guestop_vm_t vm;
    memset(&vm, 0, sizeof vm);
    snprintf(vm.engine, sizeof vm.engine, "%s", engine);
    const engine_t *e = engine_find(engine);
    vm.guest = e ? e->guest : NULL; /* as fleet.c hands it over */
    vm.state = state;
    return vm;
}

static void test_refusals(guestop_t *g)
{
    char *argv[] = {"true"};
    Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
    x.vm_id = 5;
    x.argv = argv;
    x.n_argv = 1;
    Ttfleet__WorkerReply *r = s_run(g, &x, NULL, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__NOT_FOUND);
    s_free(&r);
    guestop_vm_t stopped = s_vm("process", TTFLEET__VM_STATE__VM_STOPPED);
    r = s_run(g, &x, NULL, &stopped);
    CHECK(r && r->status == TTFLEET__STATUS__INVALID_STATE);
    s_free(&r);
    guestop_vm_t hollow = s_vm("hollow", TTFLEET__VM_STATE__VM_RUNNING);
    r = s_run(g, &x, NULL, &hollow);
    CHECK(r && r->status == TTFLEET__STATUS__GUEST_UNREACHABLE);
    s_free(&r);
    /* a process VM without a pid never runs in the worker's namespaces */
    guestop_config_t strict = s_cfg;
    strict.own_ns_for_pid0 = false;
    guestop_t *g2 = guestop_new(&strict);
    guestop_vm_t nopid = s_vm("process", TTFLEET__VM_STATE__VM_RUNNING);
    r = g2 ? s_run(g2, &x, NULL, &nopid) : NULL;
    CHECK(r && r->status == TTFLEET__STATUS__GUEST_UNREACHABLE);
    s_free(&r);
    guestop_destroy(&g2);
    x.n_argv = 0; /* checked again on the worker */
    guestop_vm_t vm = s_vm("process", TTFLEET__VM_STATE__VM_RUNNING);
    r = s_run(g, &x, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST);
    s_free(&r);
}

static void test_long_output(guestop_t *g)
{
    guestop_vm_t vm = s_vm("process", TTFLEET__VM_STATE__VM_RUNNING);
    char *argv[] = {"sh", "-c", "seq 1 100000; seq 1 30000 >&2"};
    Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
    x.vm_id = 7;
    x.argv = argv;
    x.n_argv = 3;
    Ttfleet__WorkerReply *r = s_run(g, &x, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->exec);
    if (!r || !r->exec) {
        s_free(&r);
        return;
    }
    size_t out_size = r->exec->stdout_size, err_size = r->exec->stderr_size;
    CHECK(out_size == 588895 && err_size == 168894);
    CHECK(r->exec->stdout.len == TT_EXEC_PIECE && r->exec->stderr.len == TT_EXEC_PIECE);
    CHECK(strlen(r->exec->exec_id) == TT_EXEC_ID_LEN);
    char id[TT_EXEC_ID_LEN + 1];
    snprintf(id, sizeof id, "%s", r->exec->exec_id);
    size_t got_out = r->exec->stdout.len, got_err = r->exec->stderr.len;
    s_free(&r);
    CHECK(guestop_kept(g) == 1);
    for (int i = 0; i < 20 && (got_out < out_size || got_err < err_size); i++) {
        Ttfleet__EnvExec m = TTFLEET__ENV_EXEC__INIT;
        m.vm_id = 7;
        m.exec_id = id;
        m.stdout_offset = got_out;
        m.stderr_offset = got_err;
        r = s_run(g, &m, NULL, &vm);
        CHECK(r && r->status == TTFLEET__STATUS__OK && r->exec);
        if (!r || !r->exec)
            break;
        CHECK(r->exec->stdout_offset == got_out);
        got_out += r->exec->stdout.len;
        got_err += r->exec->stderr.len;
        s_free(&r);
    }
    CHECK(got_out == out_size && got_err == err_size);
    /* another VM's id cannot read it */
    Ttfleet__EnvExec m = TTFLEET__ENV_EXEC__INIT;
    m.vm_id = 8;
    m.exec_id = id;
    r = s_run(g, &m, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__NOT_FOUND);
    s_free(&r);
    guestop_vm_gone(g, 7);
    CHECK(guestop_kept(g) == 0);
    m.vm_id = 7;
    r = s_run(g, &m, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__NOT_FOUND);
    s_free(&r);
}

static Ttfleet__WorkerReply *s_put(guestop_t *g, const guestop_vm_t *vm, uint32_t vm_id,
                                   const char *path, const char *tid, uint64_t off,
                                   const void *data, size_t len, bool last,
                                   const unsigned char *sha)
{
    Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
    c.vm_id = vm_id;
    c.path = (char *)path;
    c.transfer_id = (char *)tid;
    c.offset = off;
    c.data.data = (uint8_t *)data;
    c.data.len = len;
    c.last = last;
    if (last) {
        c.total_size = off + len;
        c.sha256.data = (uint8_t *)sha;
        c.sha256.len = 32;
    }
    return s_run(g, NULL, &c, vm);
}

static void test_copy(guestop_t *g, const char *dir)
{
    guestop_vm_t vm = s_vm("process", TTFLEET__VM_STATE__VM_RUNNING);
    char path[512];
    snprintf(path, sizeof path, "%s/put.bin", dir);
    size_t len = 300 * 1024;
    unsigned char *data = malloc(len), sha[32], bad[32];
    for (size_t i = 0; i < len; i++)
        data[i] = (unsigned char)(i * 7 + 3);
    EVP_Digest(data, len, sha, NULL, EVP_sha256(), NULL);
    memset(bad, 0, sizeof bad);

    /* wrong sha256: nothing written */
    Ttfleet__WorkerReply *r = s_put(g, &vm, 9, path, "", 0, data, 128 * 1024, false, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->copy && strlen(r->copy->transfer_id) == 32);
    char tid[40] = "";
    if (r && r->copy)
        snprintf(tid, sizeof tid, "%s", r->copy->transfer_id);
    s_free(&r);
    r = s_put(g, &vm, 9, path, tid, 0, data, 10, false, NULL); /* out of order */
    CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST);
    s_free(&r);
    r = s_put(g, &vm, 9, path, tid, 128 * 1024, data + 128 * 1024, 128 * 1024, true, bad);
    CHECK(r && r->status == TTFLEET__STATUS__CHECKSUM_MISMATCH);
    s_free(&r);
    CHECK(access(path, F_OK) != 0);
    CHECK(guestop_kept(g) == 0);

    /* right one */
    r = s_put(g, &vm, 9, path, "", 0, data, 128 * 1024, false, NULL);
    snprintf(tid, sizeof tid, "%s", r && r->copy ? r->copy->transfer_id : "");
    s_free(&r);
    r = s_put(g, &vm, 9, path, tid, 128 * 1024, data + 128 * 1024, 128 * 1024, false, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__OK);
    s_free(&r);
    r = s_put(g, &vm, 9, path, tid, 256 * 1024, data + 256 * 1024, len - 256 * 1024, true, sha);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->copy && r->copy->eof &&
          r->copy->total_size == len);
    s_free(&r);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (size_t)sb.st_size == len);

    /* GET in chunks */
    unsigned char *back = calloc(1, len);
    size_t got = 0;
    tid[0] = '\0';
    for (int i = 0; i < 10; i++) {
        Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
        c.vm_id = 9;
        c.path = path;
        c.direction = TTFLEET__COPY_DIRECTION__COPY_GET;
        c.transfer_id = tid;
        c.offset = got;
        c.max_bytes = 100000;
        r = s_run(g, NULL, &c, &vm);
        CHECK(r && r->status == TTFLEET__STATUS__OK && r->copy);
        if (!r || !r->copy)
            break;
        CHECK(r->copy->total_size == len && r->copy->sha256.len == 32 &&
              memcmp(r->copy->sha256.data, sha, 32) == 0);
        CHECK(r->copy->offset == got && got + r->copy->data.len <= len);
        if (got + r->copy->data.len <= len)
            memcpy(back + got, r->copy->data.data, r->copy->data.len);
        got += r->copy->data.len;
        snprintf(tid, sizeof tid, "%s", r->copy->transfer_id);
        bool eof = r->copy->eof;
        s_free(&r);
        if (eof)
            break;
    }
    CHECK(got == len && memcmp(back, data, len) == 0);
    CHECK(guestop_kept(g) == 0); /* the last chunk freed it */
    free(back);

    /* a directory is not a file */
    Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
    c.vm_id = 9;
    c.path = (char *)dir;
    c.direction = TTFLEET__COPY_DIRECTION__COPY_GET;
    r = s_run(g, NULL, &c, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__GUEST_FAILED);
    s_free(&r);

    /* transfers per VM are bounded; gone with the VM */
    for (int i = 0; i < GUESTOP_XFERS_PER_VM; i++) {
        r = s_put(g, &vm, 10, path, "", 0, data, 10, false, NULL);
        CHECK(r && r->status == TTFLEET__STATUS__OK);
        s_free(&r);
    }
    r = s_put(g, &vm, 10, path, "", 0, data, 10, false, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__UNAVAILABLE);
    s_free(&r);
    r = s_put(g, &vm, 11, path, "", 0, data, 10, false, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__OK);
    s_free(&r);
    CHECK(guestop_kept(g) == GUESTOP_XFERS_PER_VM + 1);
    guestop_vm_gone(g, 10);
    guestop_vm_gone(g, 11);
    CHECK(guestop_kept(g) == 0);
    /* idle transfers expire */
    r = s_put(g, &vm, 12, path, "", 0, data, 10, false, NULL);
    s_free(&r);
    CHECK(guestop_kept(g) == 1);
    guestop_flush(g, tt_mono_ms() + GUESTOP_XFER_IDLE_MS + 1);
    CHECK(guestop_kept(g) == 0);
    free(data);
}

/* Jobs are bounded per VM and per host; beyond, UNAVAILABLE at once. */
static void test_job_limits(guestop_t *g)
{
    guestop_vm_t vm = s_vm("process", TTFLEET__VM_STATE__VM_RUNNING);
    char *argv[] = {"sleep", "0.3"};
    Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
    x.argv = argv;
    x.n_argv = 2;
    int n = 0;
    for (uint32_t id = 30; n < GUESTOP_JOBS_MAX; id++)
        for (int k = 0; k < GUESTOP_JOBS_PER_VM && n < GUESTOP_JOBS_MAX; k++, n++) {
            x.vm_id = id;
            guestop_submit(g, s_cmd(&x, NULL), &vm);
        }
    CHECK(guestop_pending(g) == GUESTOP_JOBS_MAX);
    x.vm_id = 30; /* full VM and full host */
    Ttfleet__WorkerReply *r = s_run(g, &x, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__UNAVAILABLE);
    s_free(&r);
    int ok = 0;
    int64_t deadline = tt_mono_ms() + 20000;
    while (ok < GUESTOP_JOBS_MAX && tt_mono_ms() < deadline) {
        guestop_flush(g, tt_mono_ms());
        zframe_t *f;
        while ((f = guestop_pop(g))) {
            r = ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f));
            CHECK(r && r->status == TTFLEET__STATUS__OK && r->exec && r->exec->exit_code == 0);
            ok++;
            s_free(&r);
            zframe_destroy(&f);
        }
        usleep(10000);
    }
    CHECK(ok == GUESTOP_JOBS_MAX && guestop_pending(g) == 0);
}

/* ---- a fake guest agent ---- */

/* It runs what guest-exec asks for, as qemu-ga does: a real process (the
 * program looked up in PATH) in the agent's own process group, its output
 * captured through pipes, reported exited only once it is reaped and both
 * pipes are closed; `kill` and `setsid` are the host's. */
#define S_AGENT_PROCS 16
typedef struct {
    pid_t pid;
    int out, err; /* -1 once closed */
    bool reaped;
    bool nocap; /* no output captured: reaped when a slot is wanted */
    int status;
    char text[2][256];
    size_t len[2];
} s_proc_t;

typedef struct {
    int lfd;
    unsigned char file[4096];
    size_t file_len, read_off;
    bool no_setsid;     /* answer a guest-exec of setsid as an agent without it does */
    int setsid_execs;   /* guest-execs of setsid it ran */
    int setsid_refused; /* ... and refused */
    char last_kill[64]; /* the arguments of the last guest-exec of kill */
    s_proc_t procs[S_AGENT_PROCS];
} s_agent_t;

static void s_send(int fd, json_t *ret)
{
    json_t *j = json_pack("{s:o}", "return", ret);
    char *t = json_dumps(j, JSON_COMPACT);
    size_t n = strlen(t);
    CHECK(write(fd, t, n) == (ssize_t)n && write(fd, "\n", 1) == 1);
    free(t);
    json_decref(j);
}

static void s_send_error(int fd, const char *desc)
{
    json_t *j = json_pack("{s:{s:s,s:s}}", "error", "class", "GenericError", "desc", desc);
    char *t = json_dumps(j, JSON_COMPACT);
    size_t n = strlen(t);
    CHECK(write(fd, t, n) == (ssize_t)n && write(fd, "\n", 1) == 1);
    free(t);
    json_decref(j);
}

static char *s_b64(const void *d, size_t n)
{
    char *o = malloc(4 * ((n + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)o, d, (int)n);
    return o;
}

/* guest-exec: start path with args; its pid, or -1. */
static pid_t s_agent_spawn(s_agent_t *a, const char *path, json_t *args, bool capture)
{
    s_proc_t *pr = NULL;
    for (int i = 0; i < S_AGENT_PROCS; i++)
        if (a->procs[i].nocap && waitpid(a->procs[i].pid, NULL, WNOHANG) == a->procs[i].pid)
            a->procs[i].pid = 0;
    for (int i = 0; i < S_AGENT_PROCS && !pr; i++)
        if (a->procs[i].pid == 0)
            pr = &a->procs[i];
    size_t n = json_array_size(args);
    if (!pr || n > 30)
        return -1;
    char *av[32];
    av[0] = (char *)path;
    for (size_t i = 0; i < n; i++)
        av[i + 1] = (char *)json_string_value(json_array_get(args, i));
    av[n + 1] = NULL;
    int o[2] = {-1, -1}, e[2] = {-1, -1};
    if (capture && (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC)))
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(capture ? o[1] : null, 1);
        dup2(capture ? e[1] : null, 2);
        execvp(path, av);
        _exit(127);
    }
    if (capture) {
        close(o[1]);
        close(e[1]);
        fcntl(o[0], F_SETFL, O_NONBLOCK);
        fcntl(e[0], F_SETFL, O_NONBLOCK);
    }
    if (pid < 0)
        return -1;
    memset(pr, 0, sizeof *pr);
    pr->pid = pid;
    pr->out = o[0];
    pr->err = e[0];
    pr->nocap = !capture;
    return pid;
}

/* guest-exec-status: exited once reaped and both pipes closed. */
static void s_agent_status(s_agent_t *a, int fd, json_int_t pid)
{
    s_proc_t *pr = NULL;
    for (int i = 0; i < S_AGENT_PROCS && !pr; i++)
        if (pid > 0 && a->procs[i].pid == pid)
            pr = &a->procs[i];
    if (!pr) {
        s_send_error(fd, "Invalid parameter 'pid'");
        return;
    }
    if (!pr->reaped && waitpid(pr->pid, &pr->status, WNOHANG) == pr->pid)
        pr->reaped = true;
    int *fds[2] = {&pr->out, &pr->err};
    for (int k = 0; k < 2; k++) {
        char b[256];
        ssize_t r = -1;
        while (*fds[k] >= 0 && (r = read(*fds[k], b, sizeof b)) != 0) {
            if (r < 0)
                break; /* EAGAIN: still open */
            for (ssize_t i = 0; i < r && pr->len[k] < sizeof pr->text[k]; i++)
                pr->text[k][pr->len[k]++] = b[i];
        }
        if (*fds[k] >= 0 && r == 0) {
            close(*fds[k]);
            *fds[k] = -1;
        }
    }
    if (!pr->reaped || pr->out >= 0 || pr->err >= 0) {
        s_send(fd, json_pack("{s:b}", "exited", 0));
        return;
    }
    char *o = s_b64(pr->text[0], pr->len[0]), *e = s_b64(pr->text[1], pr->len[1]);
    json_t *ret = json_pack("{s:b,s:s,s:s}", "exited", 1, "out-data", o, "err-data", e);
    if (WIFSIGNALED(pr->status))
        json_object_set_new(ret, "signal", json_integer(WTERMSIG(pr->status)));
    else
        json_object_set_new(ret, "exitcode", json_integer(WEXITSTATUS(pr->status)));
    s_send(fd, ret);
    free(o);
    free(e);
    pr->pid = 0;
}

static void s_agent_line(s_agent_t *a, int fd, const char *line)
{
    json_t *j = json_loads(line, 0, NULL);
    if (!j)
        return;
    const char *cmd = json_string_value(json_object_get(j, "execute"));
    json_t *args = json_object_get(j, "arguments");
    if (!cmd) {
    } else if (strcmp(cmd, "guest-sync-delimited") == 0) {
        CHECK(write(fd, "\xff", 1) == 1);
        s_send(fd, json_incref(json_object_get(args, "id")));
    } else if (strcmp(cmd, "guest-exec") == 0) {
        const char *path = json_string_value(json_object_get(args, "path"));
        json_t *av = json_object_get(args, "arg");
        bool capture = json_is_true(json_object_get(args, "capture-output"));
        if (path && strcmp(path, "kill") == 0) {
            a->last_kill[0] = 0;
            for (size_t i = 0; i < json_array_size(av); i++) {
                const char *w = json_string_value(json_array_get(av, i));
                size_t l = strlen(a->last_kill);
                snprintf(a->last_kill + l, sizeof a->last_kill - l, "%s%s", i ? " " : "",
                         w ? w : "?");
            }
        }
        if (path && strcmp(path, "setsid") == 0) {
            a->setsid_execs++;
            if (a->no_setsid) {
                a->setsid_refused++;
                s_send_error(fd, "Guest agent command failed, error was 'Failed to execute child "
                                 "process \xe2\x80\x9csetsid\xe2\x80\x9d (No such file or "
                                 "directory)'");
                json_decref(j);
                return;
            }
        }
        pid_t pid = path ? s_agent_spawn(a, path, av, capture) : -1;
        if (pid > 0)
            s_send(fd, json_pack("{s:i}", "pid", (int)pid));
        else
            s_send_error(fd, "Guest agent command failed");
    } else if (strcmp(cmd, "guest-exec-status") == 0) {
        s_agent_status(a, fd, json_integer_value(json_object_get(args, "pid")));
    } else if (strcmp(cmd, "guest-file-open") == 0) {
        const char *mode = json_string_value(json_object_get(args, "mode"));
        if (mode && mode[0] == 'w')
            a->file_len = 0;
        a->read_off = 0;
        s_send(fd, json_integer(7));
    } else if (strcmp(cmd, "guest-file-write") == 0) {
        const char *b = json_string_value(json_object_get(args, "buf-b64"));
        unsigned char tmp[4096];
        int n = b ? EVP_DecodeBlock(tmp, (const unsigned char *)b, (int)strlen(b)) : 0;
        size_t pad =
            b && strlen(b) >= 2 ? (b[strlen(b) - 1] == '=') + (b[strlen(b) - 2] == '=') : 0;
        n -= (int)pad;
        if (n > 0 && a->file_len + (size_t)n <= sizeof a->file) {
            memcpy(a->file + a->file_len, tmp, (size_t)n);
            a->file_len += (size_t)n;
        }
        s_send(fd, json_pack("{s:i,s:b}", "count", n, "eof", 0));
    } else if (strcmp(cmd, "guest-file-read") == 0) {
        size_t n = a->file_len - a->read_off;
        char *b = s_b64(a->file + a->read_off, n);
        a->read_off += n;
        s_send(fd, json_pack("{s:i,s:s,s:b}", "count", (int)n, "buf-b64", b, "eof", n == 0));
        free(b);
    } else
        s_send(fd, json_object());
    json_decref(j);
}

static void *s_agent_run(void *arg)
{
    s_agent_t *a = arg;
    for (;;) {
        int fd = accept(a->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;
        char buf[65536];
        size_t have = 0;
        for (;;) {
            ssize_t n = read(fd, buf + have, sizeof buf - have - 1);
            if (n <= 0)
                break;
            have += (size_t)n;
            buf[have] = '\0';
            char *start = buf, *nl;
            while ((nl = memchr(start, '\n', have - (size_t)(start - buf)))) {
                *nl = '\0';
                while (*start == '\xff')
                    start++;
                s_agent_line(a, fd, start);
                start = nl + 1;
            }
            have -= (size_t)(start - buf);
            memmove(buf, start, have);
            if (have >= sizeof buf - 1)
                have = 0;
        }
        close(fd);
    }
}

/* No live process runs `sleep TAG<d>` for a digit d of which (waits up to
 * 2 s: SIGKILLed ones go within ms); kills any that stayed, so a failure
 * leaves nothing behind. */
static bool s_sleepers_gone(const char *tag, const char *which)
{
    bool gone = false;
    for (int i = 0; i < 40 && !gone; i++) {
        if (i)
            usleep(50 * 1000);
        gone = true;
        DIR *d = opendir("/proc");
        for (struct dirent *e; d && (e = readdir(d));) {
            char path[300], buf[128] = {0};
            if (e->d_name[0] < '1' || e->d_name[0] > '9')
                continue;
            snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
            int fd = open(path, O_RDONLY);
            ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
            if (fd >= 0)
                close(fd);
            size_t tl = strlen(tag);
            if (n > 6 && memcmp(buf, "sleep", 6) == 0 && strncmp(buf + 6, tag, tl) == 0 &&
                buf[6 + tl] && strchr(which, buf[6 + tl]) && !buf[7 + tl]) {
                gone = false;
                if (i == 39)
                    kill(atoi(e->d_name), SIGKILL);
            }
        }
        if (d)
            closedir(d);
    }
    return gone;
}

static void test_agent(guestop_t *g, const char *dir)
{
    static s_agent_t a;
    guestop_vm_t vm = s_vm("qemu", TTFLEET__VM_STATE__VM_RUNNING);
    snprintf(vm.agent_sock, sizeof vm.agent_sock, "%s/qga.sock", dir);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    CHECK(strlen(vm.agent_sock) < sizeof sa.sun_path);
    memcpy(sa.sun_path, vm.agent_sock, strlen(vm.agent_sock) + 1);
    a.lfd = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(bind(a.lfd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(a.lfd, 4) == 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, s_agent_run, &a) == 0);
    pthread_detach(t);

    /* the command leads a session of its own (through setsid) */
    char *argv[] = {"/bin/sh", "-c",
                    "echo agent out; echo agent err >&2; "
                    "[ \"$(cut -d' ' -f6 /proc/$$/stat)\" = $$ ] && exit 5; exit 6"};
    Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
    x.vm_id = 20;
    x.argv = argv;
    x.n_argv = 3;
    Ttfleet__WorkerReply *r = s_run(g, &x, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->exec);
    if (r && r->exec) {
        CHECK(r->exec->exit_code == 5);
        CHECK(r->exec->stdout.len == 10 && memcmp(r->exec->stdout.data, "agent out\n", 10) == 0);
        CHECK(r->exec->stderr.len == 10 && memcmp(r->exec->stderr.data, "agent err\n", 10) == 0);
    }
    s_free(&r);
    CHECK(a.setsid_execs == 1);
    /* a program whose name looks like an option is still the program */
    char *dash[] = {"-tt-no-such-program"};
    x.argv = dash;
    x.n_argv = 1;
    r = s_run(g, &x, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->exec && r->exec->exit_code == 127);
    if (r && r->exec)
        CHECK(memmem(r->exec->stderr.data, r->exec->stderr.len, "-tt-no-such-program", 19));
    s_free(&r);
    x.argv = argv;
    x.n_argv = 3;

    const char text[] = "a file through the guest agent\n";
    unsigned char sha[32];
    EVP_Digest(text, sizeof text - 1, sha, NULL, EVP_sha256(), NULL);
    r = s_put(g, &vm, 20, "/etc/motd", "", 0, text, sizeof text - 1, true, sha);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->copy && r->copy->eof);
    s_free(&r);
    CHECK(a.file_len == sizeof text - 1 && memcmp(a.file, text, a.file_len) == 0);
    Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
    c.vm_id = 20;
    c.path = "/etc/motd";
    c.direction = TTFLEET__COPY_DIRECTION__COPY_GET;
    r = s_run(g, NULL, &c, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->copy && r->copy->eof);
    if (r && r->copy) {
        CHECK(r->copy->data.len == sizeof text - 1 &&
              memcmp(r->copy->data.data, text, sizeof text - 1) == 0);
        CHECK(r->copy->sha256.len == 32 && memcmp(r->copy->sha256.data, sha, 32) == 0);
    }
    s_free(&r);

    /* over its timeout, with a background child and a grandchild holding
     * its output pipes (the agent reports the exit only once they close):
     * the guest kills the command's process group, all of it ends, and
     * what it wrote comes back */
    char tree_sh[200], tag[32];
    snprintf(tag, sizeof tag, "1%d", (int)getpid());
    snprintf(tree_sh, sizeof tree_sh, "sh -c 'sleep %s1; :' & sleep %s2 & echo partial; sleep %s3",
             tag, tag, tag);
    char *tree[] = {"/bin/sh", "-c", tree_sh};
    Ttfleet__EnvExec h = TTFLEET__ENV_EXEC__INIT;
    h.vm_id = 20;
    h.argv = tree;
    h.n_argv = 3;
    h.timeout_s = 2; /* the shell writes within it under load too */
    r = s_run(g, &h, NULL, &vm);
    CHECK(r && r->status == TTFLEET__STATUS__TIMEOUT && r->exec);
    if (r && r->status != TTFLEET__STATUS__TIMEOUT)
        fprintf(stderr, "  tree exec: %s: %s\n", tt_status_name(r->status), r->message);
    CHECK(r && r->message && strstr(r->message, "killed") && strstr(r->message, "process group"));
    if (r && r->exec) {
        CHECK(r->exec->signal == 9);
        CHECK(r->exec->stdout.len == 8 && memcmp(r->exec->stdout.data, "partial\n", 8) == 0);
    }
    s_free(&r);
    CHECK(strncmp(a.last_kill, "-KILL -- -", 10) == 0);
    CHECK(s_sleepers_gone(tag, "123"));

    /* an agent that cannot start setsid: the command runs as it is and its
     * pid is killed */
    a.no_setsid = true;
    char one_sh[100];
    snprintf(one_sh, sizeof one_sh, "echo partial; exec sleep %s4", tag);
    char *one[] = {"/bin/sh", "-c", one_sh};
    h.argv = one;
    r = s_run(g, &h, NULL, &vm);
    CHECK(a.setsid_refused == 1);
    CHECK(r && r->status == TTFLEET__STATUS__TIMEOUT && r->exec);
    CHECK(r && r->message && strstr(r->message, "killed") && strstr(r->message, "its pid"));
    if (r && r->exec)
        CHECK(r->exec->stdout.len == 8 && memcmp(r->exec->stdout.data, "partial\n", 8) == 0);
    s_free(&r);
    CHECK(strncmp(a.last_kill, "-KILL -- ", 9) == 0 && a.last_kill[9] >= '1' &&
          a.last_kill[9] <= '9');
    CHECK(s_sleepers_gone(tag, "4"));
    a.no_setsid = false;

    /* no agent: unreachable, quickly */
    guestop_vm_t gone = vm;
    snprintf(gone.agent_sock, sizeof gone.agent_sock, "%s/none.sock", dir);
    r = s_run(g, &x, NULL, &gone);
    CHECK(r && r->status == TTFLEET__STATUS__GUEST_UNREACHABLE);
    s_free(&r);
}

int main(void)
{
    const char *dir = s_tmpdir_make("guestop");
    test_proc_exec();
    guestop_t *g = guestop_new(&s_cfg);
    CHECK(g != NULL);
    if (g) {
        test_refusals(g);
        test_long_output(g);
        test_copy(g, dir);
        test_job_limits(g);
        test_agent(g, dir);
        guestop_destroy(&g);
    }
    return s_report("test_worker_guestop");
}
