/*
 * ttworker: the per-host daemon of ttfleet.
 *
 * It holds the actual state of this host's VMs (worker.db under --state),
 * talks TTW01 to the broker (session.c), converges VMs to the specs the
 * broker sends (fleet.c, through the engines), reports VMs that die or
 * expire on their own, and destroys VMs whose lease plus a grace period
 * ran out even when the broker is gone, so nothing lives forever.
 *
 * VMs outlive the worker: on SIGINT/SIGTERM it says DISCONNECT and exits,
 * leaving them running; the next start adopts them by pid and start time.
 * The worker is a child subreaper, so VM processes that die while it runs
 * are reaped here and seen as dead within a second.
 *
 * One thread, one poll loop: broker messages, a 1 s tick (liveness,
 * expiry, zombie reaping), a 10 s image rescan, heartbeats, and the timer
 * of the VM stops in flight (fleet.h): a command is submitted when it
 * arrives, every batch of messages ends with one worker.db commit, and a
 * reply leaves when its command finished and was committed. No wait for
 * a VM ever holds the loop, so heartbeats and other commands go on while
 * VMs take their grace to stop.
 */
#define _GNU_SOURCE
#include <czmq.h>
#include <dirent.h>
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "fleet.h"
#include "host.h"
#include "net.h"
#include "session.h"
#include "spawn.h"
#include "ttproto.h"

#define S_TICK_MS 1000
#define S_PROBE_MS 200 /* readiness probes step this often (fleet_probe_tick) */
#define S_SCAN_MS 10000
#define S_DRAIN_MS 2000      /* at a graceful stop: reading the commands already sent */
#define S_DRAIN_QUIET_MS 300 /* ... until the socket is quiet this long */

static volatile sig_atomic_t s_stop = 0;
static bool s_verbose = false;

typedef struct {
    char state[PATH_MAX];
    char images[PATH_MAX];
    char broker[256];
    char host_id[TT_MAX_NAME + 1];
    char engines_buf[256];
    const char *engines[FLEET_MAX_ENGINES];
    int n_engines;
    long long cpu, mem, disk; /* 0 = detect */
    double cpu_ratio, mem_ratio, disk_ratio;
    long long heartbeat_ms, liveness, grace, stop_timeout_ms;
    char vm_user[64]; /* --vm-user, "" = VMs run as the worker */
    uid_t vm_uid;
    gid_t vm_gid;
    long long vm_id_base; /* --vm-id-base */
    char curve_secret[PATH_MAX]; /* this worker's cert (CURVE), "" = plain */
    char broker_key[PATH_MAX];   /* the broker's public cert */
    int net;                     /* net_kind_t */
    bool net_allow_host;
    char netns[256];
    char accel_mode[8];
    char public_address[16]; /* --public-address, "" = by backend */
    char qemu[PATH_MAX];
    char qemu_img[PATH_MAX];
    char image_cache[PATH_MAX]; /* --image-cache, "" = <state>/image-cache, "none" = off */
    long long image_cache_mib;  /* 0 = no limit */
} s_opts_t;

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: ttworker [options]\n"
            "\n"
            "The ttfleet host daemon: runs this host's VMs for a ttbroker.\n"
            "\n"
            "  --state DIR           state directory: worker.db, VM dirs (default\n"
            "                        ttfleet-state/worker)\n"
            "  --broker EP           broker workers endpoint (default tcp://127.0.0.1:5556); a\n"
            "                        broker cluster: EP1,EP2,EP3, tried in turn until the\n"
            "                        leader takes the READY\n"
            "  --host-id ID          host name in the pool (default: the hostname)\n"
            "  --images DIR          images directory (default <state>/images)\n"
            "  --image-cache DIR     cache of catalog images fetched from the broker's blob\n"
            "                        server (default <state>/image-cache; none: no cache,\n"
            "                        catalog images are not placed here)\n"
            "  --image-cache-mib N   size limit of the image cache; least recently used\n"
            "                        images no VM uses are evicted (default 0: no limit)\n"
            "  --cpu N               cpus offered (default: online cpus)\n"
            "  --mem MIB             memory offered (default: MemTotal)\n"
            "  --disk MIB            disk offered (default: size of the state file system)\n"
            "  --cpu-overcommit R    cpu overcommit ratio (default %.1f)\n"
            "  --mem-overcommit R    memory overcommit ratio (default %.1f)\n"
            "  --disk-overcommit R   disk overcommit ratio (default %.1f)\n"
            "  --engines LIST        enabled engines, comma separated: process, hollow, qemu\n"
            "                        (default process,hollow)\n"
            "  --net KIND            network backend: none, user (QEMU user-mode networking,\n"
            "                        host forwards on 127.0.0.1) or nft (bridge ttbr0 with\n"
            "                        10.10.0.1/16, taps/veths, nftables table ip ttfleet)\n"
            "                        (default none)\n"
            "  --netns NAME          run in the network namespace /run/netns/NAME (as made\n"
            "                        by `ip netns add`); the broker endpoint must be\n"
            "                        reachable from there (ipc:// or a routed address)\n"
            "  --net-allow-host-netns  let --net nft change the machine's initial network\n"
            "                        namespace (refused without it)\n"
            "  --public-address IP   the IPv4 address that reaches this host's public ports,\n"
            "                        advertised in READY (default 127.0.0.1 under --net user)\n"
            "  --accel MODE          qemu acceleration: auto (KVM if a bounded probe guest\n"
            "                        runs under it, else TCG), kvm or tcg (default auto)\n"
            "  --qemu PATH           qemu-system-x86_64 to run (default: from PATH)\n"
            "  --heartbeat-ms N      heartbeat interval (default 1000)\n"
            "  --liveness N          silent intervals before reconnecting (default 5)\n"
            "  --expiry-grace SECS   destroy a VM this long after its expiry even without\n"
            "                        the broker (default 300)\n"
            "  --stop-timeout-ms N   SIGTERM grace of a VM before SIGKILL (default 2000)\n"
            "  --vm-user NAME        run VM programs and QEMU as this unprivileged user\n"
            "                        (default: as the worker); images must be readable by it\n"
            "  --vm-id-base N        process VMs without --vm-user: uid/gid 0 of a VM's user\n"
            "                        namespace is N outside, 0..65535 map to N..N+65535\n"
            "                        (default 100000)\n"
            "  --curve-secret CERT   talk CURVE with this worker certificate (CERT and\n"
            "                        CERT_secret, made by `ttctl keygen --role worker`)\n"
            "  --broker-key CERT     the broker's public certificate (with --curve-secret)\n"
            "  --config FILE         read options from FILE first (zconfig/ZPL: the long\n"
            "                        option names as keys, at the top or under `worker`,\n"
            "                        e.g. `worker\\n    stop-timeout-ms = 5000`); flags\n"
            "                        given on the command line override it\n"
            "  --verbose             log heartbeats and every message\n"
            "  --version, --help\n",
            RES_DEFAULT_CPU_RATIO, RES_DEFAULT_MEM_RATIO, RES_DEFAULT_DISK_RATIO);
}

static void s_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* A bad flag value: say which and why, exit 2. */
static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ttworker: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see ttworker --help)\n");
    va_end(ap);
    exit(2);
}

static long long s_int(const char *flag, const char *v, long long lo, long long hi)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < lo || n > hi)
        s_die("invalid %s value '%.40s' (want an integer %lld..%lld)", flag, v, lo, hi);
    return n;
}

static double s_ratio(const char *flag, const char *v)
{
    char *end;
    errno = 0;
    double r = strtod(v, &end);
    if (errno || end == v || *end || !(r >= 0.1 && r <= 100.0))
        s_die("invalid %s value '%.40s' (want a number 0.1..100)", flag, v);
    return r;
}

static void s_copy(const char *flag, char *dst, size_t len, const char *v)
{
    if (!*v || strlen(v) >= len)
        s_die("invalid %s value '%.40s' (empty or too long)", flag, v);
    strcpy(dst, v);
}

static void s_engines(s_opts_t *o, const char *v)
{
    s_copy("--engines", o->engines_buf, sizeof o->engines_buf, v);
    o->n_engines = 0;
    char *save = NULL;
    for (char *t = strtok_r(o->engines_buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!engine_find(t))
            s_die("invalid --engines: unknown engine '%.40s' (known: process, hollow, qemu)", t);
        for (int i = 0; i < o->n_engines; i++)
            if (strcmp(o->engines[i], t) == 0)
                s_die("invalid --engines: engine '%.40s' given twice", t);
        if (o->n_engines == FLEET_MAX_ENGINES)
            s_die("invalid --engines value '%.40s': too many engines", v);
        o->engines[o->n_engines++] = t;
    }
    if (!o->n_engines)
        s_die("invalid --engines value '%.40s': no engine", v);
}

enum {
    O_STATE = 256,
    O_BROKER,
    O_HOST,
    O_IMAGES,
    O_CPU,
    O_MEM,
    O_DISK,
    O_CPUR,
    O_MEMR,
    O_DISKR,
    O_ENGINES,
    O_HB,
    O_LIVE,
    O_GRACE,
    O_STOPTO,
    O_VMUSER,
    O_VMIDBASE,
    O_VERBOSE,
    O_NET,
    O_NETNS,
    O_NETHOST,
    O_ACCEL,
    O_PUBADDR,
    O_QEMU,
    O_VERSION,
    O_HELP,
    O_CURVE,
    O_BKEY,
    O_CONFIG,
    O_ICACHE,
    O_ICACHEMIB
};
static const struct option s_options[] = {
    {"state", required_argument, NULL, O_STATE},
    {"broker", required_argument, NULL, O_BROKER},
    {"host-id", required_argument, NULL, O_HOST},
    {"images", required_argument, NULL, O_IMAGES},
    {"cpu", required_argument, NULL, O_CPU},
    {"mem", required_argument, NULL, O_MEM},
    {"disk", required_argument, NULL, O_DISK},
    {"cpu-overcommit", required_argument, NULL, O_CPUR},
    {"mem-overcommit", required_argument, NULL, O_MEMR},
    {"disk-overcommit", required_argument, NULL, O_DISKR},
    {"engines", required_argument, NULL, O_ENGINES},
    {"heartbeat-ms", required_argument, NULL, O_HB},
    {"liveness", required_argument, NULL, O_LIVE},
    {"expiry-grace", required_argument, NULL, O_GRACE},
    {"stop-timeout-ms", required_argument, NULL, O_STOPTO},
    {"vm-user", required_argument, NULL, O_VMUSER},
    {"vm-id-base", required_argument, NULL, O_VMIDBASE},
    {"verbose", no_argument, NULL, O_VERBOSE},
    {"net", required_argument, NULL, O_NET},
    {"netns", required_argument, NULL, O_NETNS},
    {"net-allow-host-netns", no_argument, NULL, O_NETHOST},
    {"accel", required_argument, NULL, O_ACCEL},
    {"public-address", required_argument, NULL, O_PUBADDR},
    {"qemu", required_argument, NULL, O_QEMU},
    {"curve-secret", required_argument, NULL, O_CURVE},
    {"broker-key", required_argument, NULL, O_BKEY},
    {"config", required_argument, NULL, O_CONFIG},
    {"image-cache", required_argument, NULL, O_ICACHE},
    {"image-cache-mib", required_argument, NULL, O_ICACHEMIB},
    {"version", no_argument, NULL, O_VERSION},
    {"help", no_argument, NULL, O_HELP},
    {NULL, 0, NULL, 0},
};

/* One option's value into o (from the command line or --config). */
static void s_apply(s_opts_t *o, int c, const char *optarg)
{
    switch (c) {
    case O_STATE:
        s_copy("--state", o->state, sizeof o->state, optarg);
        break;
    case O_BROKER:
        s_copy("--broker", o->broker, sizeof o->broker, optarg);
        /* one endpoint, or the members of a Raft cluster, comma-separated */
        for (const char *p = optarg;; p += strcspn(p, ",") + 1) {
            if ((strncmp(p, "tcp://", 6) && strncmp(p, "ipc://", 6) &&
                 strncmp(p, "inproc://", 9)) ||
                strcspn(p, ",") < 7)
                s_die("invalid --broker value '%.80s' (want tcp://, ipc:// or inproc://, or a "
                      "comma-separated list of them)",
                      optarg);
            if (!p[strcspn(p, ",")])
                break;
        }
        break;
    case O_HOST:
        if (!tt_name_valid(optarg))
            s_die("invalid --host-id value '%.80s' (1..64 of [A-Za-z0-9._-], no leading dot)",
                  optarg);
        strcpy(o->host_id, optarg);
        break;
    case O_IMAGES:
        s_copy("--images", o->images, sizeof o->images, optarg);
        break;
    case O_ICACHE:
        s_copy("--image-cache", o->image_cache, sizeof o->image_cache, optarg);
        break;
    case O_ICACHEMIB:
        o->image_cache_mib = s_int("--image-cache-mib", optarg, 0, 1LL << 30);
        break;
    case O_CPU:
        o->cpu = s_int("--cpu", optarg, 1, 1 << 20);
        break;
    case O_MEM:
        o->mem = s_int("--mem", optarg, 1, 1LL << 40);
        break;
    case O_DISK:
        o->disk = s_int("--disk", optarg, 1, 1LL << 50);
        break;
    case O_CPUR:
        o->cpu_ratio = s_ratio("--cpu-overcommit", optarg);
        break;
    case O_MEMR:
        o->mem_ratio = s_ratio("--mem-overcommit", optarg);
        break;
    case O_DISKR:
        o->disk_ratio = s_ratio("--disk-overcommit", optarg);
        break;
    case O_ENGINES:
        s_engines(o, optarg);
        break;
    case O_HB:
        o->heartbeat_ms = s_int("--heartbeat-ms", optarg, 10, 60000);
        break;
    case O_LIVE:
        o->liveness = s_int("--liveness", optarg, 1, 100);
        break;
    case O_GRACE:
        o->grace = s_int("--expiry-grace", optarg, 0, 30LL * 24 * 3600);
        break;
    case O_VMUSER: {
        struct passwd *pw = getpwnam(optarg);
        if (!pw || strlen(optarg) >= sizeof o->vm_user)
            s_die("invalid --vm-user '%.40s': no such user", optarg);
        if (pw->pw_uid == 0)
            s_die("--vm-user '%.40s' is root: give an unprivileged user", optarg);
        snprintf(o->vm_user, sizeof o->vm_user, "%s", optarg);
        o->vm_uid = pw->pw_uid;
        o->vm_gid = pw->pw_gid;
        break;
    }
    case O_VMIDBASE:
        /* the range ends below 2^32 - 1 (the invalid id) */
        o->vm_id_base = s_int("--vm-id-base", optarg, 1, 4294967295LL - 65536 - 1);
        break;
    case O_STOPTO:
        o->stop_timeout_ms = s_int("--stop-timeout-ms", optarg, 0, 60000);
        break;
    case O_VERBOSE:
        s_verbose = true;
        break;
    case O_NET:
        o->net = net_kind_parse(optarg);
        if (o->net < 0)
            s_die("invalid --net value '%.40s' (want none, user or nft)", optarg);
        break;
    case O_NETNS:
        if (!tt_name_valid(optarg))
            s_die("invalid --netns value '%.80s' (a name under /run/netns)", optarg);
        strcpy(o->netns, optarg);
        break;
    case O_NETHOST:
        o->net_allow_host = true;
        break;
    case O_PUBADDR: {
        struct in_addr a;
        if (strlen(optarg) >= sizeof o->public_address || inet_pton(AF_INET, optarg, &a) != 1)
            s_die("invalid --public-address '%.40s' (want an IPv4 address)", optarg);
        strcpy(o->public_address, optarg);
        break;
    }
    case O_ACCEL:
        if (strcmp(optarg, "auto") && strcmp(optarg, "kvm") && strcmp(optarg, "tcg"))
            s_die("invalid --accel value '%.40s' (want auto, kvm or tcg)", optarg);
        strcpy(o->accel_mode, optarg);
        break;
    case O_QEMU:
        s_copy("--qemu", o->qemu, sizeof o->qemu, optarg);
        break;
    case O_CURVE:
        s_copy("--curve-secret", o->curve_secret, sizeof o->curve_secret, optarg);
        break;
    case O_BKEY:
        s_copy("--broker-key", o->broker_key, sizeof o->broker_key, optarg);
        break;
    default:
        break;
    }
}

/* --config FILE: zconfig (ZPL) text whose keys are the long option names,
 * at the top level or under a `worker` section; flags without a value
 * take 1/true/yes or 0/false/no. Read before the command line, so flags
 * override the file. Unknown keys are refused (a typo must not be
 * silently ignored). */
static void s_config(s_opts_t *o, const char *path)
{
    zconfig_t *root = zconfig_load(path);
    if (!root)
        s_die("cannot read --config file '%.200s' (missing or not zconfig/ZPL text)", path);
    zconfig_t *sect = zconfig_locate(root, "worker");
    zconfig_t *first[2] = {zconfig_child(root), sect ? zconfig_child(sect) : NULL};
    for (int pass = 0; pass < 2; pass++)
        for (zconfig_t *k = first[pass]; k; k = zconfig_next(k)) {
            const char *name = zconfig_name(k);
            const char *value = zconfig_value(k);
            if (pass == 0 && strcmp(name, "worker") == 0)
                continue;
            const struct option *opt = NULL;
            for (const struct option *p = s_options; p->name; p++)
                if (strcmp(p->name, name) == 0)
                    opt = p;
            if (!opt || opt->val == O_CONFIG || opt->val == O_HELP || opt->val == O_VERSION)
                s_die("--config %.200s: unknown key '%.60s'", path, name);
            if (opt->has_arg == no_argument) {
                if (!value || !*value || !strcmp(value, "1") || !strcmp(value, "true") ||
                    !strcmp(value, "yes"))
                    s_apply(o, opt->val, NULL);
                else if (strcmp(value, "0") && strcmp(value, "false") && strcmp(value, "no"))
                    s_die("--config %.200s: '%.60s' wants 1/true/yes or 0/false/no", path, name);
                continue;
            }
            if (!value || !*value)
                s_die("--config %.200s: '%.60s' has no value", path, name);
            s_apply(o, opt->val, value);
        }
    zconfig_destroy(&root);
}

static void s_parse(int argc, char **argv, s_opts_t *o)
{
    strcpy(o->state, "ttfleet-state/worker");
    strcpy(o->broker, "tcp://127.0.0.1:5556");
    o->cpu_ratio = RES_DEFAULT_CPU_RATIO;
    o->mem_ratio = RES_DEFAULT_MEM_RATIO;
    o->disk_ratio = RES_DEFAULT_DISK_RATIO;
    o->heartbeat_ms = 1000;
    o->liveness = 5;
    o->grace = 300;
    o->stop_timeout_ms = 2000;
    o->vm_id_base = 100000;
    s_engines(o, "process,hollow");
    strcpy(o->accel_mode, "auto");
    /* the file first, so every flag given overrides it */
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", s_options, NULL)) != -1)
        if (c == O_CONFIG)
            s_config(o, optarg);
    optind = 1;
    while ((c = getopt_long(argc, argv, "", s_options, NULL)) != -1) {
        switch (c) {
        case O_CONFIG:
            break; /* read first, above */
        case O_VERSION:
            printf("ttworker %s\n", TTFLEET_VERSION);
            exit(0);
        case O_HELP:
            s_usage(stdout);
            exit(0);
        case '?':
        case ':':
            fprintf(stderr, "ttworker: unknown or incomplete option '%s'\n", argv[optind - 1]);
            s_usage(stderr);
            exit(2);
        default:
            s_apply(o, c, optarg);
        }
    }
    if (optind < argc)
        s_die("unexpected argument '%.80s'", argv[optind]);
    if (!o->host_id[0]) {
        char h[256] = "";
        if (gethostname(h, sizeof h - 1) || !tt_name_valid(h))
            s_die("the hostname '%.80s' is not a valid host id: give --host-id", h);
        strcpy(o->host_id, h);
    }
}

/* mkdir -p, then the absolute path (VM processes chdir, so paths given to
 * them must not be relative). */
static int s_make_dir(char *path, size_t len)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0750) && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0750) && errno != EEXIST)
        return -1;
    char abs[PATH_MAX];
    if (!realpath(tmp, abs) || strlen(abs) >= len)
        return -1;
    strcpy(path, abs);
    return 0;
}

static int s_enter_netns(const char *name)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "/run/netns/%s", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET)) {
        fprintf(stderr, "ttworker: cannot enter network namespace %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

/* A Linux kernel for the acceleration probe: the first image that has
 * one, else the newest readable /boot/vmlinuz-*. 0 / -1. */
static int s_probe_kernel(const char *images, char *buf, size_t len)
{
    const char *dirs[] = {images, "/boot"};
    for (int d = 0; d < 2; d++) {
        DIR *dir = opendir(dirs[d]);
        if (!dir)
            continue;
        struct dirent *de;
        buf[0] = 0;
        while ((de = readdir(dir))) {
            char path[PATH_MAX];
            if (d == 0 ? !tt_name_valid(de->d_name) : strncmp(de->d_name, "vmlinuz-", 8) != 0)
                continue;
            if (snprintf(path, sizeof path, d == 0 ? "%s/%s/kernel" : "%s/%s", dirs[d],
                         de->d_name) >= (int)sizeof path ||
                access(path, R_OK))
                continue;
            if (strlen(path) < len && (!buf[0] || strcmp(path, buf) > 0))
                strcpy(buf, path);
        }
        closedir(dir);
        if (buf[0])
            return 0;
    }
    return -1;
}

/* With the qemu engine: find qemu and qemu-img, decide the acceleration.
 * 0 / -1 (said on stderr). */
static int s_qemu_setup(s_opts_t *o, char *accel, size_t len)
{
    bool want = false;
    for (int i = 0; i < o->n_engines; i++)
        want |= engine_find(o->engines[i]) && engine_find(o->engines[i])->needs_qemu;
    if (!want)
        return 0;
    char path[PATH_MAX];
    if (spawn_which(o->qemu[0] ? o->qemu : "qemu-system-x86_64", path, sizeof path)) {
        fprintf(stderr, "ttworker: the qemu engine needs qemu-system-x86_64 (Debian package "
                        "qemu-system-x86) or --qemu PATH\n");
        return -1;
    }
    strcpy(o->qemu, path);
    if (spawn_which("qemu-img", o->qemu_img, sizeof o->qemu_img)) {
        fprintf(stderr, "ttworker: the qemu engine needs qemu-img (Debian package qemu-utils)\n");
        return -1;
    }
    char err[512], kernel[PATH_MAX];
    int64_t t0 = zclock_mono();
    bool have_kernel = s_probe_kernel(o->images, kernel, sizeof kernel) == 0;
    if (engine_qemu_probe(o->qemu, o->accel_mode, o->state, have_kernel ? kernel : NULL, 4000,
                          accel, len, err, sizeof err)) {
        fprintf(stderr, "ttworker: %s\n", err);
        return -1;
    }
    zsys_info("qemu: %s, acceleration %s (%s, decided in %lld ms)", o->qemu, accel, o->accel_mode,
              (long long)(zclock_mono() - t0));
    return 0;
}

static void s_on_signal(int sig)
{
    s_stop = 1;
}

/* Keep 0, 1 and 2 open so no file the worker opens lands on them (a VM's
 * stdio is set up with dup2). */
static void s_std_fds(void)
{
    for (int fd = 0; fd < 3; fd++)
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) < 0)
            exit(1);
}

static void s_send_ready(session_t *session, fleet_t *fleet, const char *host_id)
{
    zframe_t *hello = fleet_hello(fleet);
    if (!hello) {
        zsys_error("could not build READY");
        return;
    }
    size_t n = fleet_count(fleet);
    if (session_send(session, TT_W_READY, &hello) == 0)
        zsys_info("READY sent as host %s with %zu VM(s)", host_id, n);
}

static void s_handle(session_t *session, fleet_t *fleet, int cmd, zmsg_t *msg, bool *reconnect)
{
    switch (cmd) {
    case TT_W_HEARTBEAT:
        if (s_verbose)
            zsys_debug("heartbeat from broker");
        break;
    case TT_W_DISCONNECT:
        zsys_info("broker said DISCONNECT: reconnecting");
        *reconnect = true;
        break;
    case TT_W_COMMAND: {
        /* queued and started; its reply goes out from s_send_replies once
         * it finished and was committed */
        zframe_t *body = zmsg_last(msg);
        int64_t t0 = zclock_usecs();
        size_t stale = fleet_stale(fleet);
        fleet_submit(fleet, zframe_data(body), zframe_size(body));
        if (fleet_stale(fleet) != stale) {
            /* a deposed leader: its refusal goes out, then the next
             * endpoint (ttworker --broker EP1,EP2,...) */
            zsys_warning("a command from an older broker term (this worker has seen term "
                         "%llu): reconnecting",
                         (unsigned long long)fleet_term(fleet));
            *reconnect = true;
        }
        if (s_verbose)
            zsys_debug("COMMAND submitted in %lld us", (long long)(zclock_usecs() - t0));
        break;
    }
    default:
        zsys_warning("ignored command 0x%02x from the broker (worker-bound only)", cmd);
    }
}

/* Advance the ops in flight, commit once, send every reply that is ready
 * (a reply made while the broker is away is dropped: it re-sends after
 * READY). */
static void s_send_replies(session_t *session, fleet_t *fleet)
{
    fleet_flush(fleet);
    zframe_t *reply;
    while ((reply = fleet_pop(fleet)))
        session_send(session, TT_W_REPLY, &reply);
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) /* one line: ttworker's version */
        return printf("ttworker %s\n", TTFLEET_VERSION) < 0;
    s_opts_t *o = calloc(1, sizeof *o);
    if (!o)
        return 1;
    s_parse(argc, argv, o);
    s_std_fds();
    /* Before any thread exists (ZeroMQ's come later), so the whole worker,
     * its sockets and the VMs it starts live in that namespace. */
    if (o->netns[0] && s_enter_netns(o->netns))
        return 1;
    zsys_handler_set(NULL);
    zsys_set_logident("ttworker");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (s_make_dir(o->state, sizeof o->state)) {
        fprintf(stderr, "ttworker: cannot create state directory %s: %s\n", o->state,
                strerror(errno));
        return 1;
    }
    if (!o->images[0])
        snprintf(o->images, sizeof o->images, "%.4000s/images", o->state);
    if (s_make_dir(o->images, sizeof o->images)) {
        fprintf(stderr, "ttworker: cannot create images directory %s: %s\n", o->images,
                strerror(errno));
        return 1;
    }
    if (!o->image_cache[0])
        snprintf(o->image_cache, sizeof o->image_cache, "%.4000s/image-cache", o->state);
    bool image_cache = strcmp(o->image_cache, "none") != 0;
    if (image_cache && s_make_dir(o->image_cache, sizeof o->image_cache)) {
        fprintf(stderr, "ttworker: cannot create image cache directory %s: %s\n", o->image_cache,
                strerror(errno));
        return 1;
    }
    char err[512];
    res_t total;
    if (host_detect(o->state, &total, err, sizeof err)) {
        fprintf(stderr, "ttworker: %s\n", err);
        return 1;
    }
    if (o->cpu)
        total.cpu = (uint64_t)o->cpu;
    if (o->mem)
        total.mem_mib = (uint64_t)o->mem;
    if (o->disk)
        total.disk_mib = (uint64_t)o->disk;
    /* VM processes re-parent to us while we run, so we reap them and see
     * their death at once; after we exit they re-parent to init. */
    char accel[8] = "";
    if (s_qemu_setup(o, accel, sizeof accel))
        return 1;
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
        zsys_warning("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));

    /* the blob server (catalog images) has the broker's key */
    char blobs_key[41] = "";
    if (o->curve_secret[0] && o->broker_key[0]) {
        zcert_t *bk = zcert_load(o->broker_key);
        if (bk)
            snprintf(blobs_key, sizeof blobs_key, "%s", zcert_public_txt(bk));
        zcert_destroy(&bk);
    }
    fleet_config_t cfg = {
        .state_dir = o->state,
        .images_dir = o->images,
        .host_id = o->host_id,
        .cap = {total, o->cpu_ratio, o->mem_ratio, o->disk_ratio},
        .n_engines = o->n_engines,
        .expiry_grace = o->grace,
        .stop_timeout_ms = (int)o->stop_timeout_ms,
        .net = {(net_kind_t)o->net, o->net_allow_host, o->netns[0] != 0},
        .qemu = o->qemu[0] ? o->qemu : NULL,
        .qemu_img = o->qemu_img[0] ? o->qemu_img : NULL,
        .accel = accel[0] ? accel : NULL,
        .public_address = o->public_address[0]       ? o->public_address
                          : o->net == (int)NET_USER ? "127.0.0.1"
                                                    : NULL,
        .vm_user = o->vm_user[0] ? o->vm_user : NULL,
        .vm_uid = o->vm_uid,
        .vm_gid = o->vm_gid,
        .vm_id_base = (uid_t)o->vm_id_base,
        .image_cache = image_cache ? o->image_cache : NULL,
        .image_cache_mib = (uint64_t)o->image_cache_mib,
        .blobs_cert = blobs_key[0] ? o->curve_secret : NULL,
        .blobs_key = blobs_key[0] ? blobs_key : NULL,
    };
    for (int i = 0; i < o->n_engines; i++)
        cfg.engines[i] = o->engines[i];
    fleet_t *fleet = fleet_new(&cfg, err, sizeof err);
    if (!fleet) {
        fprintf(stderr, "ttworker: %s\n", err);
        return 1;
    }
    zsys_info("host %s: %llu cpu, %llu MiB mem, %llu MiB disk; state %s, images %s; network %s; "
              "%zu VM(s)",
              o->host_id, (unsigned long long)total.cpu, (unsigned long long)total.mem_mib,
              (unsigned long long)total.disk_mib, o->state, o->images,
              net_kind_name((net_kind_t)o->net), fleet_count(fleet));

    session_t *session = session_new(o->broker, (int)o->heartbeat_ms, (int)o->liveness);
    if (!session) {
        fprintf(stderr, "ttworker: out of memory\n");
        fleet_destroy(&fleet);
        return 1;
    }
    if (o->curve_secret[0] || o->broker_key[0]) {
        zcert_t *own = o->curve_secret[0] ? zcert_load(o->curve_secret) : NULL;
        zcert_t *broker = o->broker_key[0] ? zcert_load(o->broker_key) : NULL;
        static const byte zero[32];
        if (!own || !broker || memcmp(zcert_secret_key(own), zero, 32) == 0) {
            fprintf(stderr,
                    "ttworker: CURVE needs both --curve-secret (a cert with its _secret file) "
                    "and --broker-key (the broker's public cert); cannot load %s\n",
                    !own      ? (o->curve_secret[0] ? o->curve_secret : "--curve-secret")
                    : !broker ? (o->broker_key[0] ? o->broker_key : "--broker-key")
                              : o->curve_secret);
            zcert_destroy(&own);
            zcert_destroy(&broker);
            session_destroy(&session);
            fleet_destroy(&fleet);
            return 2;
        }
        session_set_curve(session, &own, zcert_public_txt(broker));
        zcert_destroy(&broker);
    }
    zpoller_t *poller = NULL;
    bool reconnect = true;
    int64_t next_tick = zclock_mono() + S_TICK_MS;
    int64_t next_probe = zclock_mono() + S_PROBE_MS;
    int64_t next_scan = zclock_mono() + S_SCAN_MS;
    int rc = 0;
    while (!s_stop) {
        if (reconnect) {
            zpoller_destroy(&poller);
            if (session_connect(session)) {
                rc = 1;
                break;
            }
            poller = zpoller_new(session_sock(session), NULL);
            if (!poller) {
                rc = 1;
                break;
            }
            zsys_info("connecting to broker at %s", o->broker);
            s_send_ready(session, fleet, o->host_id);
            reconnect = false;
        }
        int64_t now = zclock_mono();
        int64_t wait = session_next_ms(session, now);
        if (next_tick - now < wait)
            wait = next_tick - now;
        if (next_probe - now < wait)
            wait = next_probe - now;
        int ops = fleet_next_ms(fleet);
        if (ops >= 0 && ops < wait)
            wait = ops;
        if (wait < 0)
            wait = 0;
        zpoller_wait(poller, (int)wait);
        if (s_stop)
            break;
        for (int k = 0; k < 100 && !reconnect; k++) {
            int cmd;
            zmsg_t *msg = NULL;
            int got = session_recv(session, &cmd, &msg);
            if (got == 0)
                break;
            if (got < 0)
                continue;
            s_handle(session, fleet, cmd, msg, &reconnect);
            zmsg_destroy(&msg);
        }
        /* one commit for the whole batch, then its replies */
        s_send_replies(session, fleet);
        now = zclock_mono();
        if (!reconnect && session_expired(session, now)) {
            zsys_warning("broker silent for %lld ms: reconnecting",
                         (long long)(o->heartbeat_ms * o->liveness));
            reconnect = true;
        }
        if (now >= next_tick) {
            while (waitpid(-1, NULL, WNOHANG) > 0)
                ;
            zframe_t *ev = fleet_tick(fleet, tt_now());
            if (ev)
                session_send(session, TT_W_EVENT, &ev);
            if (!reconnect && (ev = fleet_pull_event(fleet)))
                session_send(session, TT_W_EVENT, &ev);
            s_send_replies(session, fleet);
            next_tick = now + S_TICK_MS;
        }
        if (now >= next_probe) {
            zframe_t *ev = reconnect ? NULL : fleet_probe_tick(fleet);
            if (ev)
                session_send(session, TT_W_EVENT, &ev);
            next_probe = now + S_PROBE_MS;
        }
        if (now >= next_scan) {
            fleet_rescan_images(fleet);
            next_scan = now + S_SCAN_MS;
        }
        if (!reconnect)
            session_heartbeat(session, now);
    }
    /* Commands the broker sent before the signal (the destroys of an env
     * delete it has answered already) may wait in the socket unread: take
     * them, until the socket stays quiet for S_DRAIN_QUIET_MS (S_DRAIN_MS at
     * most), so their ops run in the wait below instead of leaving the VMs
     * running until the next start. */
    if (poller && !reconnect && session_sock(session)) {
        int64_t end = zclock_mono() + S_DRAIN_MS;
        int64_t now;
        while ((now = zclock_mono()) < end) {
            int ms = (int)(end - now < S_DRAIN_QUIET_MS ? end - now : S_DRAIN_QUIET_MS);
            if (!zpoller_wait(poller, ms)) {
                if (zpoller_expired(poller))
                    break; /* quiet: nothing more was sent */
                continue;  /* a signal (another SIGTERM) */
            }
            for (int k = 0; k < 100 && !reconnect; k++) {
                int cmd;
                zmsg_t *msg = NULL;
                int got = session_recv(session, &cmd, &msg);
                if (got == 0)
                    break;
                if (got < 0)
                    continue;
                s_handle(session, fleet, cmd, msg, &reconnect);
                zmsg_destroy(&msg);
            }
            s_send_replies(session, fleet);
            if (reconnect)
                break;
        }
    }
    /* A graceful stop lets the operations in flight finish first (bounded
     * by the stop grace): a VM being stopped or destroyed when the signal
     * came is stopped or destroyed, not left half-way until the next start.
     * Running VMs are left running, as always. */
    if (fleet_in_flight(fleet) > 0) {
        int64_t deadline = zclock_mono() + o->stop_timeout_ms + 5000;
        zsys_info("stopping: finishing %zu operation(s) in flight first",
                  fleet_in_flight(fleet));
        while (fleet_in_flight(fleet) > 0 && zclock_mono() < deadline) {
            int ms = fleet_next_ms(fleet);
            zclock_sleep(ms < 0 || ms > 50 ? 50 : ms);
            if (session_sock(session))
                s_send_replies(session, fleet);
            else
                fleet_flush(fleet);
        }
    }
    if (session_sock(session)) {
        zsys_info("stopping: DISCONNECT sent, VMs left running");
        session_send(session, TT_W_DISCONNECT, NULL);
    }
    zpoller_destroy(&poller);
    session_destroy(&session);
    fleet_destroy(&fleet);
    free(o);
    return rc;
}
