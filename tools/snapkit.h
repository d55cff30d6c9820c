/*
 * snapkit: what the snapshot test (tests/integration/test_snapshot.c) and
 * the snapshot benchmark (tools/snapbench.c) share: the qemu engine with
 * the test guest (tools/mkguest.sh) on the user network, a tiny HTTP
 * client with deadlines, Pss of a process, and a registry of every QEMU
 * started so each is killed on any exit (atexit, SIGINT/SIGTERM/SIGALRM).
 * Header-only, static functions: each program includes it once.
 */
#ifndef TT_TOOLS_SNAPKIT_H
#define TT_TOOLS_SNAPKIT_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "engine_qemu_snap.h"
#include "net.h"
#include "proc.h"
#include "snapshot.h"
#include "spawn.h"
#include "ttproto.h"

#define SK_MAX_PIDS 64

static struct {
    pid_t pid[SK_MAX_PIDS];
    uint64_t st[SK_MAX_PIDS];
    int n;
    char root[256]; /* removed at exit when keep is false */
    bool keep;
    pid_t owner; /* only this process cleans up (not forked children) */
} sk_reg;

static inline void sk_track(const vm_t *vm)
{
    if (vm->pid && sk_reg.n < SK_MAX_PIDS) {
        sk_reg.pid[sk_reg.n] = vm->pid;
        sk_reg.st[sk_reg.n] = vm->start_time;
        sk_reg.n++;
    }
}

/* Any other process to kill at exit (a forked helper). */
static inline void sk_track_pid(pid_t pid)
{
    char state;
    vm_t v;
    memset(&v, 0, sizeof v);
    v.pid = pid;
    if (proc_stat_read(pid, &state, &v.start_time) == 0)
        sk_track(&v);
}

/* async-signal-safe part: SIGKILL every tracked QEMU still alive */
static inline void sk_kill_all(void)
{
    for (int i = 0; i < sk_reg.n; i++)
        if (proc_alive(sk_reg.pid[i], sk_reg.st[i]))
            kill(sk_reg.pid[i], SIGKILL);
}

static inline int sk_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static inline void sk_cleanup(void)
{
    if (getpid() != sk_reg.owner)
        return;
    sk_kill_all();
    for (int i = 0; i < sk_reg.n; i++)
        spawn_wait_gone(sk_reg.pid[i], sk_reg.st[i], 3000);
    if (sk_reg.root[0] && !sk_reg.keep)
        nftw(sk_reg.root, sk_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

static inline void sk_on_signal(int sig)
{
    static const char msg[] = "snapkit: signal: killing every QEMU started\n";
    ssize_t w = write(2, msg, sizeof msg - 1);
    (void)w;
    if (getpid() != sk_reg.owner) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    sk_kill_all();
    /* not async-signal-safe, but a test process: exit runs sk_cleanup
     * (reap, remove the temporary root) */
    exit(128 + sig);
}

/* The test environment: a temporary root with state/ (the VMs and the
 * template store) and the guest image built under build_dir. */
typedef struct {
    engine_ctx_t ctx;
    char root[256], state[300], images[600], troot[400];
    char qemu[512], qemu_img[512], qver[256];
} sk_env_t;

/* 0, 77 when impossible here (no QEMU, no guest inputs), 1 on error. */
static inline int sk_env_init(sk_env_t *e, const char *source, const char *build, int overall_s)
{
    memset(e, 0, sizeof *e);
    sk_reg.owner = getpid();
    /* czmq (the engine logs through zsys) would install its own SIGINT and
     * SIGTERM handlers on first use, which only set a flag: set it up now
     * without them, so ours below stay */
    zsys_init();
    zsys_handler_set(NULL);
    atexit(sk_cleanup);
    signal(SIGINT, sk_on_signal);
    signal(SIGTERM, sk_on_signal);
    signal(SIGALRM, sk_on_signal);
    alarm((unsigned)overall_s);
    if (spawn_which("qemu-system-x86_64", e->qemu, sizeof e->qemu) ||
        spawn_which("qemu-img", e->qemu_img, sizeof e->qemu_img)) {
        printf("SKIP: qemu-system-x86_64 or qemu-img is not installed\n");
        return 77;
    }
    char err[512];
    if (snapstore_qemu_version(e->qemu, e->qver, sizeof e->qver, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    snprintf(e->images, sizeof e->images, "%s/snapguest", build);
    char out[700], script[700];
    snprintf(out, sizeof out, "%s/guest", e->images);
    snprintf(script, sizeof script, "%s/tools/mkguest.sh", source);
    mkdir(e->images, 0750);
    char *argv[] = {"/bin/sh", script, out, NULL};
    if (spawn_run(argv, 300000, err, sizeof err)) {
        printf("SKIP: tools/mkguest.sh could not build the test guest: %s\n", err);
        return 77;
    }
    snprintf(e->root, sizeof e->root, "/tmp/ttsnap.XXXXXX");
    if (!mkdtemp(e->root)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(sk_reg.root, sizeof sk_reg.root, "%s", e->root);
    snprintf(e->state, sizeof e->state, "%s/state", e->root);
    snprintf(e->troot, sizeof e->troot, "%s/templates", e->state);
    mkdir(e->state, 0750);
    e->ctx.state_dir = e->state;
    e->ctx.images_dir = e->images;
    e->ctx.stop_timeout_ms = 1000;
    e->ctx.qemu = e->qemu;
    e->ctx.qemu_img = e->qemu_img;
    e->ctx.accel = "tcg";
    e->ctx.net = NET_USER;
    e->ctx.qemu_version = e->qver;
    return 0;
}

/* A loopback TCP+UDP port that binds now, from 41000..58999. */
static inline uint16_t sk_free_port(void)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)getpid() * 2654435761u;
    for (int tries = 0; tries < 2000; tries++) {
        seed = seed * 1103515245u + 12345u;
        uint16_t p = (uint16_t)(41000 + (seed >> 8) % 18000);
        bool ok = true;
        for (int u = 0; u < 2 && ok; u++) {
            int fd = socket(AF_INET, u ? SOCK_DGRAM : SOCK_STREAM, 0);
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_port = htons(p),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            ok = fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
            if (fd >= 0)
                close(fd);
        }
        if (ok)
            return p;
    }
    return 0;
}

static inline vm_t sk_vm(uint32_t id, uint32_t mem_mib, uint16_t port)
{
    vm_t vm;
    memset(&vm, 0, sizeof vm);
    vm.vm_id = id;
    snprintf(vm.env, sizeof vm.env, "snap/test");
    snprintf(vm.image, sizeof vm.image, "guest");
    snprintf(vm.engine, sizeof vm.engine, "qemu");
    vm.cpu = 1;
    vm.mem_mib = mem_mib;
    vm.disk_mib = 64;
    snprintf(vm.ip, sizeof vm.ip, "10.10.0.%u", id % 250 + 2);
    snprintf(vm.mac, sizeof vm.mac, "52:54:00:5a:%02x:%02x", (id >> 8) & 0xff, id & 0xff);
    vm.n_ports = 1;
    vm.ports[0].guest = 80;
    vm.ports[0].public_port = port;
    return vm;
}

/* One HTTP/1.0 GET on 127.0.0.1:port within timeout_ms; the body into
 * body. 0 / -1. */
static inline int sk_http(uint16_t port, const char *path, char *body, size_t len, int timeout_ms)
{
    int64_t deadline = tt_mono_ms() + timeout_ms;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[8192];
    size_t got = 0;
    int rc = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) && errno != EINPROGRESS)
        goto out;
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int64_t left = deadline - tt_mono_ms();
    if (left <= 0 || poll(&p, 1, (int)left) != 1)
        goto out;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr)
        goto out;
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: guest\r\n\r\n", path);
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto out;
    for (;;) {
        p.events = POLLIN;
        left = deadline - tt_mono_ms();
        if (left <= 0 || poll(&p, 1, (int)left) != 1)
            goto out;
        ssize_t r = read(fd, buf + got, sizeof buf - 1 - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto out;
        if (r == 0)
            break;
        got += (size_t)r;
        if (got == sizeof buf - 1)
            break;
    }
    buf[got] = 0;
    /* busybox httpd passes a CGI's own headers on, ended by "\n\n" */
    char *b = strstr(buf, "\r\n\r\n"), *b2 = strstr(buf, "\n\n");
    size_t skip = 4;
    if (b2 && (!b || b2 < b)) {
        b = b2;
        skip = 2;
    }
    if (strncmp(buf, "HTTP/1.", 7) != 0 || !b || strncmp(buf + 9, "200", 3) != 0)
        goto out;
    snprintf(body, len, "%s", b + skip);
    rc = 0;
out:
    close(fd);
    return rc;
}

/* Retry sk_http until it answers; ms from now until it did, -1 on timeout. */
static inline int64_t sk_wait_http(uint16_t port, const char *path, char *body, size_t len,
                                   int timeout_ms)
{
    int64_t t0 = tt_mono_ms(), deadline = t0 + timeout_ms;
    while (tt_mono_ms() < deadline) {
        int64_t left = deadline - tt_mono_ms();
        if (sk_http(port, path, body, len, left < 2000 ? (int)left : 2000) == 0)
            return tt_mono_ms() - t0;
        spawn_sleep_ms(20);
    }
    return -1;
}

/* The value of "key V" in a /cgi-bin/state answer into out. 0 / -1. */
static inline int sk_field(const char *body, const char *key, char *out, size_t len)
{
    size_t kl = strlen(key);
    for (const char *l = body; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
        if (strncmp(l, key, kl) == 0 && l[kl] == ' ') {
            const char *v = l + kl + 1;
            size_t n = strcspn(v, "\r\n");
            snprintf(out, len, "%.*s", (int)n, v);
            return 0;
        }
    return -1;
}

/* Drive one snapshot operation to its end: poll every SNAP_POLL_MS, then
 * finish. 0 / -1 with a reason. */
static inline int sk_run(const sk_env_t *e, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    for (;;) {
        int rc = engine_qemu.snap_poll(&e->ctx, vm, op, err, errlen);
        if (rc < 0)
            return -1;
        if (rc == SNAP_DONE)
            return 0;
        if (rc == SNAP_FINISH)
            return engine_qemu.snap_finish(&e->ctx, vm, op, err, errlen) == SNAP_DONE ? 0 : -1;
        spawn_sleep_ms(SNAP_POLL_MS);
    }
}

/* Sum of Pss (kB) of pid from /proc/PID/smaps_rollup, -1 if unreadable. */
static inline long sk_pss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Pss:", 4) == 0) {
            kb = atol(line + 4);
            break;
        }
    fclose(f);
    return kb;
}

/* Pss (kB) of pid's guest RAM: the mapping of exactly mib MiB (the
 * memory backend ram0), -1 if none. */
static inline long sk_ram_pss_kb(pid_t pid, uint32_t mib)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    bool in = false;
    while (fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "Size: %ld kB", &v) == 1)
            in = v == (long)mib * 1024;
        else if (in && sscanf(line, "Pss: %ld kB", &v) == 1) {
            kb = v;
            break;
        }
    }
    fclose(f);
    return kb;
}

static inline long long sk_file_size(const char *path)
{
    struct stat sb;
    return stat(path, &sb) ? -1 : (long long)sb.st_size;
}

#endif
