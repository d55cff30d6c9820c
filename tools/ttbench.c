/*
 * ttbench: load and scale benchmark of a ttfleet broker.
 *
 *   ttbench [--hosts N] [--producers M] [--seconds S] [--rate R] [--json] ...
 *
 * One run has four parts:
 *   1. a real ttbroker (started here on loopback with a temporary state
 *      dir, or an existing one given by --broker-clients/--broker-workers);
 *   2. N hollow hosts. They share this process (split over --host-threads
 *      threads) but each has its own DEALER socket and speaks the real TTW01
 *      worker protocol: READY with its capacity, engines and inventory,
 *      HEARTBEAT both ways, COMMAND answered with each VM at its desired
 *      state, re-READY after DISCONNECT or broker silence. Each host is a
 *      real fleet_t (worker/fleet.c, the worker's core) on the hollow
 *      engine with its own worker.db (WAL, synchronous=FULL), driven the
 *      way ttworker's session drives it: fleet_submit per COMMAND, one
 *      fleet_flush (group commit) per poll iteration, replies by fleet_pop
 *      only after that commit, fleet_tick every second. A host that got ten
 *      COMMANDs in one iteration pays one fsync.
 *   3. the idle broker's CPU with N hosts heartbeating (/proc/PID/stat
 *      utime+stime over --idle-seconds), when ttbench started the broker;
 *   4. M concurrent producers (DEALER, 7/MDP client) driving, for S seconds,
 *      first a bare ZeroMQ ROUTER that echoes every MDP request without
 *      work (the ceiling of this transport on this machine), then the broker:
 *      by default cycles of create (one hollow VM) / show / delete, or with
 *      --mix create creates only. --rate R starts R cycles (creates) per
 *      second in all; 0 runs every producer flat out (closed loop).
 *
 * Latency is measured per request from send to reply, in microseconds;
 * throughput is completed requests per second of the measured window.
 * Exit status: 0 when the run completed and at least one create succeeded,
 * 1 otherwise, 2 for a usage error.
 */
#include <czmq.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ttframe.h"
#include "ttclient.h"
#include "ttproto.h"
#include "fleet.h"

#define BENCH_MAX_HOSTS 5000
#define BENCH_MAX_PRODUCERS 1000
#define BENCH_IMAGE "bench"
#define BENCH_ENGINE "hollow"
#define BENCH_TENANT "bench"
#define BENCH_DRAIN_MS 10000 /* how long outstanding requests may finish */

typedef struct {
    int hosts, producers, seconds, rate;
    bool json, create_only, spread, keep;
    int host_threads, io_threads;
    int relay_seconds, idle_seconds;
    int heartbeat_ms, liveness;
    int request_ttl;
    int show_probes; /* --mix create: producers that only show envs */
    uint32_t host_cpu;
    const char *clients_ep, *workers_ep; /* external broker */
    const char *admin_tenant;
    char ttbroker[PATH_MAX];
} bench_cfg_t;

static volatile sig_atomic_t s_interrupted;

static void s_on_signal(int sig)
{
    (void)sig;
    s_interrupted = 1;
}

static int64_t s_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- latency samples ---- */

typedef struct {
    uint32_t *us;
    size_t n, alloc;
    uint64_t errors;
    char first_error[160];
} samples_t;

static void s_sample(samples_t *s, int64_t us)
{
    if (s->n == s->alloc) {
        size_t alloc = s->alloc ? s->alloc * 2 : 4096;
        uint32_t *p = realloc(s->us, alloc * sizeof *p);
        if (!p)
            return;
        s->us = p;
        s->alloc = alloc;
    }
    s->us[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

static void s_sample_error(samples_t *s, const char *what)
{
    if (s->errors++ == 0)
        snprintf(s->first_error, sizeof s->first_error, "%s", what);
}

static int s_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile in ms of sorted samples (nearest rank). */
static double s_quantile(const samples_t *s, double q)
{
    if (!s->n)
        return 0;
    size_t i = (size_t)(q * (double)s->n);
    if (i >= s->n)
        i = s->n - 1;
    return s->us[i] / 1000.0;
}

/* ---- a set of ZeroMQ sockets on epoll ----
 *
 * zmq_poll() walks every socket on every call, and with a thousand hosts in
 * two threads that walk cost ttbench more CPU than the broker spends: on a
 * 2-core machine it would be measured as the broker's slowness. ZMQ_FD is
 * a notification fd per socket: when it turns readable, the socket may have
 * messages; a send can consume the notification, so a socket we sent on is
 * checked again on the next wait without one. Members are indices into the
 * caller's arrays. */
typedef struct {
    int epfd;
    int n;
    uint8_t *pending; /* check without a notification */
    int *ready;       /* indices returned by zset_wait */
} zset_t;

static int zset_init(zset_t *z, int n)
{
    z->epfd = epoll_create1(EPOLL_CLOEXEC);
    z->n = n;
    z->pending = calloc((size_t)n, 1);
    z->ready = calloc((size_t)n + 1, sizeof *z->ready);
    return z->epfd >= 0 && z->pending && z->ready ? 0 : -1;
}

static void zset_fini(zset_t *z)
{
    if (z->epfd >= 0)
        close(z->epfd);
    free(z->pending);
    free(z->ready);
}

/* Watch sock as member i (again, after the caller replaced its socket). */
static void zset_watch(zset_t *z, int i, zsock_t *sock)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
    int fd = zsock_fd(sock);
    if (epoll_ctl(z->epfd, EPOLL_CTL_ADD, fd, &ev) != 0 && errno == EEXIST)
        epoll_ctl(z->epfd, EPOLL_CTL_MOD, fd, &ev);
    z->pending[i] = 1;
}

static void zset_touch(zset_t *z, int i)
{
    z->pending[i] = 1;
}

/* Waits up to timeout_ms; returns how many members to read, in z->ready. */
static int zset_wait(zset_t *z, int timeout_ms)
{
    int k = 0;
    for (int i = 0; i < z->n; i++)
        if (z->pending[i]) {
            z->pending[i] = 0;
            z->ready[k++] = i;
            timeout_ms = 0;
        }
    struct epoll_event evs[256];
    int n = epoll_wait(z->epfd, evs, 256, timeout_ms);
    for (int e = 0; e < n; e++) {
        int i = (int)evs[e].data.u32;
        if (i < z->n && k < z->n && !z->pending[i]) {
            z->pending[i] = 2; /* dedupe within this call */
            z->ready[k++] = i;
        }
    }
    for (int j = 0; j < k; j++)
        z->pending[z->ready[j]] = 0;
    return k;
}

/* ---- hollow hosts: real fleet_t objects ---- */

typedef struct {
    char id[32];
    char dir[PATH_MAX]; /* its worker state dir: the fleet borrows the string */
    zsock_t *sock;
    fleet_t *fleet;    /* worker/fleet.c on the hollow engine, its own worker.db */
    bool submitted;    /* commands submitted since the last flush */
    unsigned connects; /* sockets made so far: a new one must be watched */
    int64_t last_sent_ms, last_recv_ms, last_tick_ms;
    uint64_t commands;
} shost_t;

typedef struct {
    const bench_cfg_t *cfg;
    const char *endpoint;
    const char *state_dir;
    const char *images_dir;
    shost_t *hosts;
    int first, n;
    volatile int *stop;
    int ready; /* hosts opened (for the error path) */
    char error[256];
} hthread_t;

static void s_host_send(shost_t *h, int cmd, zframe_t **body_p)
{
    zmsg_t *msg = ttframe_worker_to(NULL, cmd, NULL, 0);
    if (msg && body_p && *body_p)
        zmsg_append(msg, body_p);
    if (body_p)
        zframe_destroy(body_p);
    if (msg && zmsg_send(&msg, h->sock) != 0)
        zmsg_destroy(&msg);
    h->last_sent_ms = tt_mono_ms();
}

static zframe_t *s_pack(const ProtobufCMessage *m)
{
    return ttframe_pack(m);
}

static void s_host_ready(hthread_t *t, shost_t *h)
{
    (void)t;
    zframe_t *body = fleet_hello(h->fleet);
    if (body)
        s_host_send(h, TT_W_READY, &body);
}

static int s_host_connect(hthread_t *t, shost_t *h)
{
    zsock_destroy(&h->sock);
    h->sock = zsock_new(ZMQ_DEALER);
    h->connects++;
    if (!h->sock)
        return -1;
    zsock_set_linger(h->sock, 0);
    zsock_set_sndhwm(h->sock, 10000);
    zsock_set_rcvhwm(h->sock, 10000);
    if (zsock_connect(h->sock, "%s", t->endpoint) != 0)
        return -1;
    h->last_recv_ms = tt_mono_ms();
    s_host_ready(t, h);
    return 0;
}

static void s_host_recv(hthread_t *t, shost_t *h)
{
    zmsg_t *msg;
    while (h->sock && (msg = zmsg_recv_nowait(zsock_resolve(h->sock)))) {
        h->last_recv_ms = tt_mono_ms();
        ttframe_worker_t w;
        if (ttframe_worker_parse(msg, false, TT_MAX_WORKER_BODY, &w) == 0) {
            if (w.cmd == TT_W_COMMAND && w.body) {
                fleet_submit(h->fleet, zframe_data(w.body), zframe_size(w.body));
                h->submitted = true;
                h->commands++;
            } else if (w.cmd == TT_W_DISCONNECT) {
                zmsg_destroy(&msg);
                s_host_connect(t, h);
                return;
            }
        }
        zmsg_destroy(&msg);
    }
}

/* The worker's group commit: one worker.db transaction for everything
 * submitted since the last flush, then the replies it made durable. */
static void s_host_flush(shost_t *h)
{
    fleet_flush(h->fleet);
    h->submitted = fleet_in_flight(h->fleet) > 0;
    zframe_t *f;
    while ((f = fleet_pop(h->fleet)))
        s_host_send(h, TT_W_REPLY, &f);
}

static void *s_host_thread(void *arg)
{
    hthread_t *t = arg;
    const bench_cfg_t *cfg = t->cfg;
    for (int i = 0; i < t->n; i++) {
        shost_t *h = &t->hosts[i];
        snprintf(h->id, sizeof h->id, "bench-%04d", t->first + i);
        char *path = h->dir, err[256];
        snprintf(h->dir, sizeof h->dir, "%s/%s", t->state_dir, h->id);
        if (mkdir(path, 0700) && errno != EEXIST) {
            snprintf(t->error, sizeof t->error, "mkdir %.120s: %.100s", path, strerror(errno));
            return NULL;
        }
        fleet_config_t fc = {
            .state_dir = path,
            .images_dir = t->images_dir,
            .host_id = h->id,
            .cap = {{cfg->host_cpu, (uint64_t)cfg->host_cpu * 1024,
                     (uint64_t)cfg->host_cpu * 1024},
                    1.0,
                    1.0,
                    1.0},
            .engines = {BENCH_ENGINE},
            .n_engines = 1,
            .expiry_grace = 300,
            .stop_timeout_ms = 2000,
        };
        h->fleet = fleet_new(&fc, err, sizeof err);
        if (!h->fleet) {
            snprintf(t->error, sizeof t->error, "%s: %.200s", h->id, err);
            return NULL;
        }
        if (s_host_connect(t, h)) {
            snprintf(t->error, sizeof t->error, "cannot connect %s to %s", h->id, t->endpoint);
            return NULL;
        }
        t->ready++;
    }
    zset_t set;
    bool ok = zset_init(&set, t->n) == 0;
    for (int i = 0; ok && i < t->n; i++)
        zset_watch(&set, i, t->hosts[i].sock);
    int64_t next_beat = 0;
    while (ok && !*t->stop) {
        int k = zset_wait(&set, 50);
        /* read everything, then one commit per host, then the replies */
        for (int j = 0; j < k; j++) {
            shost_t *h = &t->hosts[set.ready[j]];
            unsigned before = h->connects; /* a new socket may reuse the address */
            s_host_recv(t, h);
            if (h->connects != before)
                zset_watch(&set, set.ready[j], h->sock);
        }
        for (int j = 0; j < k; j++) {
            shost_t *h = &t->hosts[set.ready[j]];
            if (h->submitted) {
                s_host_flush(h);
                zset_touch(&set, set.ready[j]);
            }
        }
        int64_t now = tt_mono_ms();
        if (now >= next_beat) {
            for (int i = 0; i < t->n; i++) {
                shost_t *h = &t->hosts[i];
                if (h->submitted) /* a stop in flight (none on hollow VMs) */
                    s_host_flush(h);
                if (now - h->last_tick_ms >= 1000) {
                    zframe_t *ev = fleet_tick(h->fleet, tt_now());
                    if (ev)
                        s_host_send(h, TT_W_EVENT, &ev);
                    h->last_tick_ms = now;
                }
                if (now - h->last_recv_ms > (int64_t)cfg->heartbeat_ms * cfg->liveness) {
                    s_host_connect(t, h); /* the broker went silent: start over */
                    zset_watch(&set, i, h->sock);
                } else if (now - h->last_sent_ms >= cfg->heartbeat_ms) {
                    s_host_send(h, TT_W_HEARTBEAT, NULL);
                    zset_touch(&set, i);
                }
            }
            next_beat = now + cfg->heartbeat_ms / 4;
        }
    }
    zset_fini(&set);
    for (int i = 0; i < t->n; i++)
        if (t->hosts[i].sock)
            s_host_send(&t->hosts[i], TT_W_DISCONNECT, NULL);
    return NULL;
}

static void s_hosts_free(shost_t *hosts, int n)
{
    for (int i = 0; i < n; i++) {
        zsock_destroy(&hosts[i].sock);
        fleet_destroy(&hosts[i].fleet);
    }
    free(hosts);
}

/* ---- the bare relay: the ceiling ---- */

typedef struct {
    zsock_t *router;
    volatile int *stop;
} relay_t;

static void *s_relay_thread(void *arg)
{
    relay_t *r = arg;
    zmq_pollitem_t item = {zsock_resolve(r->router), 0, ZMQ_POLLIN, 0};
    while (!*r->stop) {
        if (zmq_poll(&item, 1, 50) <= 0)
            continue;
        zmsg_t *msg;
        while ((msg = zmsg_recv_nowait(zsock_resolve(r->router))))
            if (zmsg_send(&msg, r->router) != 0)
                zmsg_destroy(&msg);
    }
    return NULL;
}

/* ---- producers ---- */

enum { OP_CREATE, OP_SHOW, OP_DELETE, OP_RELAY, OP_N };
static const char *const s_op_names[OP_N] = {"create", "show", "delete", "relay"};

typedef struct {
    zsock_t *sock;
    int waiting;     /* op waited for, or -1 when idle */
    int64_t sent_us;
    char env[48];
    char rid[40];
    uint64_t seq;
    bool probe; /* shows an env another producer created, then idles */
    char done_env[48]; /* the last env this producer created (OK) */
    int64_t next_us;   /* probes: not before (50 shows/s each) */
} prod_t;

typedef struct {
    const bench_cfg_t *cfg;
    bool relay;
    const char *endpoint;
    int seconds;
    samples_t ops[OP_N];
    double elapsed_s;
    uint64_t late_starts, unfinished, sent;
} run_t;

static int s_prod_send(run_t *run, prod_t *p, int op, int index)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate create = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    snprintf(p->rid, sizeof p->rid, "%d-%d-%llu-%d", (int)getpid(), index,
             (unsigned long long)p->seq, op);
    req.request_id = p->rid;
    req.tenant = BENCH_TENANT;
    ref.name = p->env;
    if (op == OP_CREATE) {
        ic.image = BENCH_IMAGE;
        ic.dup = 1;
        create.name = p->env;
        create.n_images = 1;
        create.images = &icp;
        create.engine = BENCH_ENGINE;
        create.cpu = 1;
        create.mem_mib = 1;
        create.disk_mib = 1;
        create.spread = run->cfg->spread;
        req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
        req.env_create = &create;
    } else if (op == OP_DELETE) {
        req.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
        req.env_delete = &ref;
    } else {
        req.op_case = TTFLEET__REQUEST__OP_ENV_SHOW;
        req.env_show = &ref;
    }
    zframe_t *body = s_pack(&req.base);
    if (!body)
        return -1;
    zmsg_t *msg = ttframe_mdp_request(TT_SERVICE_ENV, zframe_data(body), zframe_size(body));
    zframe_destroy(&body);
    p->sent_us = s_now_us();
    if (!msg || zmsg_send(&msg, p->sock) != 0) {
        zmsg_destroy(&msg);
        return -1;
    }
    p->waiting = run->relay ? OP_RELAY : op;
    run->sent++;
    return 0;
}

/* Start a cycle (or a lone create) on an idle producer. */
static void s_prod_start(run_t *run, prod_t *p, int index)
{
    p->seq++;
    snprintf(p->env, sizeof p->env, "b%d-%d-%llu", (int)getpid() % 100000, index,
             (unsigned long long)p->seq);
    s_prod_send(run, p, OP_CREATE, index);
}

/* A reply arrived for p: record it and send the next op of its cycle.
 * Returns true when the producer became idle. */
static bool s_prod_reply(run_t *run, prod_t *p, int index, zmsg_t *msg, bool running)
{
    int64_t lat = s_now_us() - p->sent_us;
    int op = p->waiting;
    samples_t *s = &run->ops[op];
    zframe_t *body = zmsg_size(msg) == 4 ? zmsg_last(msg) : NULL;
    if (op == OP_RELAY) {
        s_sample(s, lat);
    } else {
        Ttfleet__Reply *rep =
            body ? ttfleet__reply__unpack(NULL, zframe_size(body), zframe_data(body)) : NULL;
        if (!rep) {
            s_sample_error(s, "undecodable reply");
            return false; /* keep waiting for ours */
        }
        if (strcmp(rep->request_id, p->rid) != 0 && *rep->request_id) {
            ttfleet__reply__free_unpacked(rep, NULL);
            return false; /* a stale reply */
        }
        if (rep->status == TTFLEET__STATUS__OK)
            s_sample(s, lat);
        else {
            char what[160];
            snprintf(what, sizeof what, "%s: %s", tt_status_name(rep->status), rep->message);
            s_sample_error(s, what);
        }
        bool ok = rep->status == TTFLEET__STATUS__OK;
        ttfleet__reply__free_unpacked(rep, NULL);
        if (op == OP_CREATE && ok)
            snprintf(p->done_env, sizeof p->done_env, "%s", p->env);
        /* next op of the cycle; a failed create ends the cycle, and the
         * delete always runs once the create succeeded (even after the
         * window, so the broker is left clean) */
        if (op == OP_CREATE && ok && !run->cfg->create_only) {
            if (running)
                return s_prod_send(run, p, OP_SHOW, index) != 0;
            return s_prod_send(run, p, OP_DELETE, index) != 0;
        }
        if (op == OP_SHOW && !p->probe)
            return s_prod_send(run, p, OP_DELETE, index) != 0;
    }
    p->waiting = -1;
    return true;
}

static void s_run(run_t *run)
{
    const bench_cfg_t *cfg = run->cfg;
    int m = cfg->producers;
    int probes = cfg->create_only && !run->relay ? cfg->show_probes : 0;
    int all = m + probes;
    uint64_t probe_next = 0;
    prod_t *prods = calloc((size_t)all, sizeof *prods);
    zset_t set;
    if (zset_init(&set, all) || !prods)
        goto done;
    for (int i = 0; i < all; i++) {
        prods[i].probe = i >= m;
        prods[i].sock = zsock_new(ZMQ_DEALER);
        zsock_set_linger(prods[i].sock, 0);
        if (zsock_connect(prods[i].sock, "%s", run->endpoint) != 0)
            goto done;
        prods[i].waiting = -1;
        zset_watch(&set, i, prods[i].sock);
    }
    /* every connection up before the clock starts: 256 connects at once
     * overflow a listen backlog, and a SYN retried after 1 s is not the
     * broker's latency. One MMI request per producer, answered. */
    int warm = 0;
    for (int i = 0; i < all; i++) {
        zmsg_t *msg = ttframe_mdp_request(TT_SERVICE_MMI, TT_SERVICE_ENV, strlen(TT_SERVICE_ENV));
        if (msg && zmsg_send(&msg, prods[i].sock) != 0)
            zmsg_destroy(&msg);
        zset_touch(&set, i);
    }
    for (int64_t until = s_now_us() + 10000000; warm < all && s_now_us() < until;) {
        int k = zset_wait(&set, 100);
        for (int j = 0; j < k; j++) {
            zmsg_t *msg;
            while ((msg = zmsg_recv_nowait(zsock_resolve(prods[set.ready[j]].sock)))) {
                warm++;
                zmsg_destroy(&msg);
            }
        }
    }
    int64_t start = s_now_us(), end = start + (int64_t)run->seconds * 1000000;
    int64_t interval = cfg->rate > 0 ? 1000000 / cfg->rate : 0, next_due = start;
    int64_t drain_end = end + (int64_t)BENCH_DRAIN_MS * 1000;
    int busy = 0;
    for (;;) {
        int64_t now = s_now_us();
        bool running = now < end && !s_interrupted;
        if (!running && (busy == 0 || now >= drain_end))
            break;
        if (running) {
            /* start cycles: every idle producer (rate 0), or on schedule */
            for (int i = 0; i < m && (interval == 0 || next_due <= now); i++) {
                if (prods[i].waiting >= 0)
                    continue;
                if (run->relay) {
                    prods[i].seq++;
                    snprintf(prods[i].env, sizeof prods[i].env, "relay-%d", i);
                    if (s_prod_send(run, &prods[i], OP_SHOW, i) == 0)
                        busy++;
                } else {
                    s_prod_start(run, &prods[i], i);
                    busy++;
                }
                zset_touch(&set, i);
                if (interval)
                    next_due += interval;
            }
            /* show probes (--mix create): each shows an env some creator
             * made, one request in flight each */
            for (int i = m; i < all; i++) {
                if (prods[i].waiting >= 0 || prods[i].next_us > now)
                    continue;
                const prod_t *src = &prods[probe_next++ % (uint64_t)m];
                if (!src->done_env[0])
                    continue;
                prods[i].seq++;
                prods[i].next_us = now + 20000;
                snprintf(prods[i].env, sizeof prods[i].env, "%s", src->done_env);
                if (s_prod_send(run, &prods[i], OP_SHOW, i) == 0) {
                    busy++;
                    zset_touch(&set, i);
                }
            }
            if (interval && next_due <= now - 1000 * 100) {
                /* every producer busy and 100 ms behind: count it, do not
                 * build an unbounded backlog */
                run->late_starts += (uint64_t)((now - next_due) / interval);
                next_due = now;
            }
        }
        int wait_ms = 10;
        if (interval && running) {
            int64_t until = (next_due - now) / 1000;
            wait_ms = until < 0 ? 0 : until < 10 ? (int)until : 10;
        }
        int k = zset_wait(&set, wait_ms);
        for (int j = 0; j < k; j++) {
            int i = set.ready[j];
            uint64_t sent = run->sent;
            zmsg_t *msg;
            while ((msg = zmsg_recv_nowait(zsock_resolve(prods[i].sock)))) {
                if (prods[i].waiting >= 0 &&
                    s_prod_reply(run, &prods[i], i, msg, s_now_us() < end && !s_interrupted))
                    busy--;
                zmsg_destroy(&msg);
            }
            if (run->sent != sent)
                zset_touch(&set, i); /* the next request of the cycle went out */
        }
    }
    run->elapsed_s = (double)(s_now_us() - start) / 1e6;
    if (run->elapsed_s > run->seconds)
        run->elapsed_s = run->seconds; /* the window; the drain is not counted */
    run->unfinished = (uint64_t)busy;
done:
    for (int i = 0; prods && i < all; i++)
        zsock_destroy(&prods[i].sock);
    free(prods);
    zset_fini(&set);
    for (int op = 0; op < OP_N; op++)
        if (run->ops[op].n)
            qsort(run->ops[op].us, run->ops[op].n, sizeof(uint32_t), s_cmp_u32);
}

/* ---- the broker process ---- */

/* n loopback TCP ports that are free now, each different: the sockets that
 * found them stay open until all are found. (ZeroMQ's "tcp://...:*" takes
 * the lowest free port of its range, so it would find the same one again.) */
static int s_free_ports(int *ports, int n)
{
    int fds[8], rc = 0;
    for (int i = 0; i < n && i < 8; i++) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof a;
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fds[i] < 0 || bind(fds[i], (struct sockaddr *)&a, sizeof a) ||
            getsockname(fds[i], (struct sockaddr *)&a, &len))
            rc = -1;
        ports[i] = ntohs(a.sin_port);
    }
    for (int i = 0; i < n && i < 8; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    return rc;
}

static pid_t s_start_broker(const bench_cfg_t *cfg, const char *dir, char *clients, char *workers,
                            size_t eplen)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        int ports[3];
        if (s_free_ports(ports, 3))
            return -1;
        int pc = ports[0], pw = ports[1], pe = ports[2];
        snprintf(clients, eplen, "tcp://127.0.0.1:%d", pc);
        snprintf(workers, eplen, "tcp://127.0.0.1:%d", pw);
        char events[64], state[PATH_MAX], log[PATH_MAX], hb[16], live[16], ttl[16];
        snprintf(events, sizeof events, "tcp://127.0.0.1:%d", pe);
        snprintf(state, sizeof state, "%s/broker", dir);
        snprintf(log, sizeof log, "%s/broker.log", dir);
        snprintf(hb, sizeof hb, "%d", cfg->heartbeat_ms);
        snprintf(live, sizeof live, "%d", cfg->liveness);
        snprintf(ttl, sizeof ttl, "%d", cfg->request_ttl);
        char *argv[] = {(char *)cfg->ttbroker, "--state", state, "--clients", clients, "--workers",
                        workers, "--events", events, "--heartbeat-ms", hb, "--liveness", live,
                        "--request-ttl", ttl, "--admin-tenant", (char *)cfg->admin_tenant,
                        "--rate", "0", /* the benchmark measures the loop, not the limit */
                        cfg->spread ? "--spread" : NULL, NULL};
        pid_t pid = fork();
        if (pid < 0)
            return -1;
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
                close(fd);
            }
            execv(argv[0], argv);
            _exit(127);
        }
        /* it answers MMI when it is up; a port taken meanwhile makes it exit */
        ttclient_t *c = ttclient_new(clients, cfg->admin_tenant);
        ttclient_set_timeout(c, 200);
        ttclient_set_retries(c, 1);
        bool up = false, exited = false;
        for (int i = 0; i < 50 && !up && !exited; i++) {
            char code[8];
            up = ttclient_mmi(c, TT_SERVICE_ENV, code, sizeof code) == 0;
            exited = waitpid(pid, NULL, WNOHANG) == pid;
        }
        ttclient_destroy(&c);
        if (up)
            return pid;
        if (!exited) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
        }
    }
    return -1;
}

/* utime + stime of pid in clock ticks, -1 if unreadable. */
static long long s_cpu_ticks(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ... utime is field 14, stime 15 */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static double s_cpu_percent(long long ticks, double seconds)
{
    return seconds > 0 ? 100.0 * (double)ticks / (double)sysconf(_SC_CLK_TCK) / seconds : 0;
}

/* Wait until the broker lists n hosts online. */
static int s_wait_online(const bench_cfg_t *cfg, const char *clients, int n, int timeout_s)
{
    ttclient_t *c = ttclient_new(clients, cfg->admin_tenant);
    if (!c)
        return -1;
    ttclient_set_timeout(c, 2000);
    ttclient_set_retries(c, 1);
    int64_t deadline = tt_mono_ms() + (int64_t)timeout_s * 1000;
    int online = -1;
    while (tt_mono_ms() < deadline && !s_interrupted) {
        Ttfleet__Reply *rep = NULL;
        if (ttclient_pool_status(c, &rep) == 0 && rep->status == TTFLEET__STATUS__OK &&
            rep->pool)
            online = (int)rep->pool->hosts_online;
        ttclient_reply_destroy(&rep);
        if (online >= n)
            break;
        zclock_sleep(200);
    }
    ttclient_destroy(&c);
    return online >= n ? 0 : -1;
}

/* The broker's own figures (admin op broker_stats), NULL if it has none. */
static Ttfleet__Reply *s_broker_stats(const bench_cfg_t *cfg, const char *clients)
{
    ttclient_t *c = ttclient_new(clients, cfg->admin_tenant);
    if (!c)
        return NULL;
    ttclient_set_timeout(c, 5000);
    ttclient_set_retries(c, 1);
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    req.op_case = TTFLEET__REQUEST__OP_BROKER_STATS;
    req.broker_stats = &empty;
    Ttfleet__Reply *rep = NULL;
    if (ttclient_call(c, TT_SERVICE_ADMIN, &req, &rep) || rep->status != TTFLEET__STATUS__OK ||
        rep->result_case != TTFLEET__REPLY__RESULT_BROKER_STATS)
        ttclient_reply_destroy(&rep);
    ttclient_destroy(&c);
    return rep;
}

/* The q quantile of a cumulative histogram: the upper bound of the bucket
 * it falls in (what a bucketed histogram can say). */
static double s_hist_quantile(Ttfleet__HistogramBucket **b, size_t n, uint64_t count, double q)
{
    uint64_t want = (uint64_t)(q * (double)count + 0.5);
    for (size_t i = 0; i < n; i++)
        if (b[i]->count >= want && count)
            return b[i]->le;
    return 0;
}

static void s_print_hist(const char *name, Ttfleet__HistogramBucket **b, size_t n,
                         uint64_t count, double sum, double scale, const char *unit)
{
    printf("  %s: %llu, mean %.2f %s, p50 <= %g, p99 <= %g %s\n", name,
           (unsigned long long)count, count ? sum * scale / (double)count : 0.0, unit,
           s_hist_quantile(b, n, count, 0.5) * scale, s_hist_quantile(b, n, count, 0.99) * scale,
           unit);
    printf("   ");
    uint64_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        if (b[i]->count == prev)
            continue;
        if (isinf(b[i]->le))
            printf(" >:%llu", (unsigned long long)(b[i]->count - prev));
        else
            printf(" <=%g:%llu", b[i]->le * scale, (unsigned long long)(b[i]->count - prev));
        prev = b[i]->count;
    }
    printf("\n");
}

static void s_print_stats(const Ttfleet__BrokerStats *bs)
{
    printf("broker (broker_stats, whole run incl. warm-up):\n");
    s_print_hist("commits (COMMIT began -> durable)", bs->commit_latency, bs->n_commit_latency,
                 bs->commit_latency_count, bs->commit_latency_sum, 1000.0, "ms");
    s_print_hist("batches (messages per loop batch)", bs->batch_size, bs->n_batch_size,
                 bs->batch_size_count, bs->batch_size_sum, 1.0, "msgs");
    for (size_t i = 0; i < bs->n_op_latency; i++) {
        const Ttfleet__OpLatency *o = bs->op_latency[i];
        printf("  op %-12s %9llu, in broker p50 <= %g ms, p99 <= %g ms\n", o->op,
               (unsigned long long)o->count,
               s_hist_quantile(o->buckets, o->n_buckets, o->count, 0.5) * 1000,
               s_hist_quantile(o->buckets, o->n_buckets, o->count, 0.99) * 1000);
    }
}

/* ---- report ---- */

static json_t *s_json_op(const samples_t *s, double secs)
{
    return json_pack("{s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:s}", "ok", (json_int_t)s->n, "errors",
                     (json_int_t)s->errors, "per_s", secs > 0 ? s->n / secs : 0.0, "p50_ms",
                     s_quantile(s, 0.5), "p99_ms", s_quantile(s, 0.99), "p999_ms",
                     s_quantile(s, 0.999), "max_ms", s->n ? s->us[s->n - 1] / 1000.0 : 0.0,
                     "first_error", s->first_error);
}

static void s_print_op(const char *name, const samples_t *s, double secs)
{
    printf("  %-7s %9zu ok %6llu err %10.0f/s   p50 %7.2f ms  p99 %7.2f ms  p999 %7.2f ms  max "
           "%7.2f ms\n",
           name, s->n, (unsigned long long)s->errors, secs > 0 ? s->n / secs : 0.0,
           s_quantile(s, 0.5), s_quantile(s, 0.99), s_quantile(s, 0.999),
           s->n ? s->us[s->n - 1] / 1000.0 : 0.0);
    if (s->errors)
        printf("          first error: %s\n", s->first_error);
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: ttbench [options]\n"
            "\n"
            "Benchmarks a ttbroker with N simulated hollow hosts (real TTW01, one DEALER and\n"
            "one worker.db each) and M producers doing env create/show/delete, against a bare\n"
            "ZeroMQ request/reply relay as the ceiling. See docs/BENCHMARKS.md.\n"
            "\n"
            "  --hosts N              simulated hosts, 1..%d (default 100)\n"
            "  --producers M          concurrent producers, 1..%d (default 16)\n"
            "  --seconds S            measured window of each run (default 10)\n"
            "  --rate R               creates (cycles) per second in all; 0 = flat out (default)\n"
            "  --mix cycle|create     create+show+delete cycles (default) or creates only\n"
            "  --spread               ask for spread placement instead of best-fit\n"
            "  --relay-seconds S      window of the relay run (default: --seconds; 0 skips it)\n"
            "  --idle-seconds S       idle broker CPU window (default 5; 0 skips it)\n"
            "  --host-threads T       threads sharing the hosts (default 2)\n"
            "  --io-threads T         ZeroMQ I/O threads of ttbench (default 1)\n"
            "  --host-cpu N           cpus of each host; mem and disk are N GiB (default 1000)\n"
            "  --heartbeat-ms N       heartbeat interval, as the broker's (default 1000)\n"
            "  --liveness N           missed heartbeats before a reconnect (default 5)\n"
            "  --request-ttl SECS     the started broker's --request-ttl (default 600)\n"
            "  --ttbroker PATH        broker binary (default: ../broker/ttbroker from ttbench)\n"
            "  --broker-clients EP    use a running broker: its clients endpoint ...\n"
            "  --broker-workers EP    ... and its workers endpoint (no idle CPU figure)\n"
            "  --admin-tenant NAME    the broker's admin tenant (default admin)\n"
            "  --show-probes N        with --mix create: N more producers that only show\n"
            "                         envs the creators made, 50/s each (default 4: p99 of show under load)\n"
            "  --keep                 keep the temporary directory (state, broker.log)\n"
            "  --json                 print the results as one JSON object\n",
            BENCH_MAX_HOSTS, BENCH_MAX_PRODUCERS);
}

static int s_opt_int(const char *flag, const char *v, long min, long max, int *out)
{
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        fprintf(stderr, "ttbench: %s wants an integer in %ld..%ld, not '%s'\n", flag, min, max, v);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static int s_rm_rf(const char *dir)
{
    pid_t pid = fork();
    if (pid == 0) {
        execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    int st = 0;
    return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0
                                                                                            : -1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) /* one line: ttbench's version */
        return printf("ttbench %s\n", TTFLEET_VERSION) < 0;
    bench_cfg_t cfg = {.hosts = 100, .producers = 16, .seconds = 10, .host_threads = 2,
                       .io_threads = 1, .relay_seconds = -1, .idle_seconds = 5,
                       .heartbeat_ms = 1000, .liveness = 5, .request_ttl = 600,
                       .host_cpu = 1000, .admin_tenant = "admin", .show_probes = 4};
    enum {
        O_HOSTS = 256, O_PRODS, O_SECS, O_RATE, O_JSON, O_MIX, O_SPREAD, O_RELAY, O_IDLE,
        O_HTHREADS, O_IOTHREADS, O_HOSTCPU, O_HB, O_LIVE, O_TTL, O_BROKER, O_BCLIENTS,
        O_BWORKERS, O_ADMIN, O_KEEP, O_PROBES, O_HELP
    };
    static const struct option opts[] = {
        {"hosts", 1, 0, O_HOSTS},          {"producers", 1, 0, O_PRODS},
        {"seconds", 1, 0, O_SECS},         {"rate", 1, 0, O_RATE},
        {"json", 0, 0, O_JSON},            {"mix", 1, 0, O_MIX},
        {"spread", 0, 0, O_SPREAD},        {"relay-seconds", 1, 0, O_RELAY},
        {"idle-seconds", 1, 0, O_IDLE},    {"host-threads", 1, 0, O_HTHREADS},
        {"io-threads", 1, 0, O_IOTHREADS}, {"host-cpu", 1, 0, O_HOSTCPU},
        {"heartbeat-ms", 1, 0, O_HB},      {"liveness", 1, 0, O_LIVE},
        {"request-ttl", 1, 0, O_TTL},      {"ttbroker", 1, 0, O_BROKER},
        {"broker-clients", 1, 0, O_BCLIENTS}, {"broker-workers", 1, 0, O_BWORKERS},
        {"admin-tenant", 1, 0, O_ADMIN},   {"keep", 0, 0, O_KEEP},
        {"show-probes", 1, 0, O_PROBES},
        {"help", 0, 0, O_HELP},            {0, 0, 0, 0}};
    int c, bad = 0, host_cpu = (int)cfg.host_cpu;
    cfg.ttbroker[0] = '\0';
    opterr = 0;
    while (!bad && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case O_HOSTS: bad = s_opt_int("--hosts", optarg, 1, BENCH_MAX_HOSTS, &cfg.hosts); break;
        case O_PRODS:
            bad = s_opt_int("--producers", optarg, 1, BENCH_MAX_PRODUCERS, &cfg.producers);
            break;
        case O_SECS: bad = s_opt_int("--seconds", optarg, 1, 3600, &cfg.seconds); break;
        case O_RATE: bad = s_opt_int("--rate", optarg, 0, 1000000, &cfg.rate); break;
        case O_JSON: cfg.json = true; break;
        case O_MIX:
            if (strcmp(optarg, "create") == 0)
                cfg.create_only = true;
            else if (strcmp(optarg, "cycle") != 0) {
                fprintf(stderr, "ttbench: --mix is cycle or create, not '%s'\n", optarg);
                bad = 1;
            }
            break;
        case O_SPREAD: cfg.spread = true; break;
        case O_RELAY: bad = s_opt_int("--relay-seconds", optarg, 0, 3600, &cfg.relay_seconds); break;
        case O_IDLE: bad = s_opt_int("--idle-seconds", optarg, 0, 3600, &cfg.idle_seconds); break;
        case O_HTHREADS: bad = s_opt_int("--host-threads", optarg, 1, 64, &cfg.host_threads); break;
        case O_IOTHREADS: bad = s_opt_int("--io-threads", optarg, 1, 16, &cfg.io_threads); break;
        case O_HOSTCPU: bad = s_opt_int("--host-cpu", optarg, 1, 100000, &host_cpu); break;
        case O_HB: bad = s_opt_int("--heartbeat-ms", optarg, 10, 60000, &cfg.heartbeat_ms); break;
        case O_LIVE: bad = s_opt_int("--liveness", optarg, 2, 100, &cfg.liveness); break;
        case O_TTL: bad = s_opt_int("--request-ttl", optarg, 1, 30 * 86400, &cfg.request_ttl); break;
        case O_BROKER: snprintf(cfg.ttbroker, sizeof cfg.ttbroker, "%s", optarg); break;
        case O_BCLIENTS: cfg.clients_ep = optarg; break;
        case O_BWORKERS: cfg.workers_ep = optarg; break;
        case O_ADMIN: cfg.admin_tenant = optarg; break;
        case O_PROBES: bad = s_opt_int("--show-probes", optarg, 0, 64, &cfg.show_probes); break;
        case O_KEEP: cfg.keep = true; break;
        case O_HELP: s_usage(stdout); return 0;
        default:
            fprintf(stderr, "ttbench: unknown or incomplete option '%s'\n", argv[optind - 1]);
            bad = 1;
        }
    }
    if (!bad && optind < argc) {
        fprintf(stderr, "ttbench: unexpected argument '%s'\n", argv[optind]);
        bad = 1;
    }
    if (!bad && !cfg.clients_ep != !cfg.workers_ep) {
        fprintf(stderr, "ttbench: give both --broker-clients and --broker-workers, or neither\n");
        bad = 1;
    }
    if (bad) {
        s_usage(stderr);
        return 2;
    }
    cfg.host_cpu = (uint32_t)host_cpu;
    if (cfg.relay_seconds < 0)
        cfg.relay_seconds = cfg.seconds;
    if (cfg.host_threads > cfg.hosts)
        cfg.host_threads = cfg.hosts;
    if (!cfg.ttbroker[0]) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        self[n > 0 ? n : 0] = '\0';
        char *slash = strrchr(self, '/');
        if (slash)
            *slash = '\0';
        snprintf(cfg.ttbroker, sizeof cfg.ttbroker, "%.*s/../broker/ttbroker", PATH_MAX - 32,
                 self);
    }

    /* a thousand hosts need a thousand sockets, connections and databases */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    zsys_handler_set(NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* twice the hosts: a host told to reconnect opens its new socket while
     * ZeroMQ's reaper may still hold the old one (zsock_new asserts when
     * the limit is hit) */
    zsys_set_max_sockets((size_t)(2 * cfg.hosts + 2 * cfg.producers + 64));
    zsys_set_io_threads((size_t)cfg.io_threads);
    zsys_set_logstream(stderr);
    zsys_init();
    /* fleet_t logs each VM it makes: thousands a second here, on stdout */
    zsys_set_logstream(NULL);

    int code = 1;
    char dir[] = "/tmp/ttbench-XXXXXX";
    if (!mkdtemp(dir)) {
        fprintf(stderr, "ttbench: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    char hosts_dir[PATH_MAX];
    snprintf(hosts_dir, sizeof hosts_dir, "%s/hosts", dir);
    mkdir(hosts_dir, 0700);
    /* the hosts' one image: any file named like an image */
    char images_dir[PATH_MAX + 16], image[PATH_MAX + 32];
    snprintf(images_dir, sizeof images_dir, "%s/images", dir);
    mkdir(images_dir, 0700);
    snprintf(image, sizeof image, "%s/%s", images_dir, BENCH_IMAGE);
    FILE *imgf = fopen(image, "w");
    if (imgf)
        fclose(imgf);

    pid_t broker = -1;
    char clients[64], workers[64];
    if (cfg.clients_ep) {
        snprintf(clients, sizeof clients, "%s", cfg.clients_ep);
        snprintf(workers, sizeof workers, "%s", cfg.workers_ep);
    } else if ((broker = s_start_broker(&cfg, dir, clients, workers, sizeof clients)) < 0) {
        fprintf(stderr, "ttbench: cannot start %s (see %s/broker.log)\n", cfg.ttbroker, dir);
        cfg.keep = true;
        goto cleanup_dir;
    }

    volatile int stop_hosts = 0, stop_relay = 0;
    shost_t *hosts = calloc((size_t)cfg.hosts, sizeof *hosts);
    hthread_t *threads = calloc((size_t)cfg.host_threads, sizeof *threads);
    pthread_t *tids = calloc((size_t)cfg.host_threads, sizeof *tids);
    int started = 0;
    if (!hosts || !threads || !tids)
        goto stop;
    int64_t t0 = tt_mono_ms();
    for (int i = 0, first = 0; i < cfg.host_threads; i++) {
        int n = cfg.hosts / cfg.host_threads + (i < cfg.hosts % cfg.host_threads);
        threads[i] = (hthread_t){.cfg = &cfg, .endpoint = workers, .state_dir = hosts_dir,
                                  .images_dir = images_dir,
                                 .hosts = hosts + first, .first = first + 1, .n = n,
                                 .stop = &stop_hosts};
        first += n;
        if (pthread_create(&tids[i], NULL, s_host_thread, &threads[i]) != 0)
            goto stop;
        started++;
    }
    if (s_wait_online(&cfg, clients, cfg.hosts, 60 + cfg.hosts / 10)) {
        fprintf(stderr, "ttbench: the broker did not list %d hosts online in time\n", cfg.hosts);
        for (int i = 0; i < started; i++)
            if (threads[i].error[0])
                fprintf(stderr, "ttbench: %s\n", threads[i].error);
        goto stop;
    }
    double join_s = (tt_mono_ms() - t0) / 1000.0;
    if (!cfg.json)
        printf("ttbench: %d hosts online in %.1f s (broker %s)\n", cfg.hosts, join_s, clients);

    /* idle broker CPU with every host heartbeating */
    double idle_cpu = -1;
    if (broker > 0 && cfg.idle_seconds > 0) {
        zclock_sleep(cfg.heartbeat_ms * 2); /* past the READY burst */
        long long a = s_cpu_ticks(broker);
        int64_t ta = tt_mono_ms();
        for (int i = 0; i < cfg.idle_seconds * 10 && !s_interrupted; i++)
            zclock_sleep(100);
        long long b = s_cpu_ticks(broker);
        if (a >= 0 && b >= 0)
            idle_cpu = s_cpu_percent(b - a, (tt_mono_ms() - ta) / 1000.0);
        if (!cfg.json)
            printf("ttbench: idle broker CPU with %d hosts: %.1f%% of one core\n", cfg.hosts,
                   idle_cpu);
    }

    /* the ceiling: a bare ROUTER echo over the same transport */
    run_t relay = {.cfg = &cfg, .relay = true, .seconds = cfg.relay_seconds};
    if (cfg.relay_seconds > 0 && !s_interrupted) {
        relay_t r = {zsock_new(ZMQ_ROUTER), &stop_relay};
        int port = r.router ? zsock_bind(r.router, "tcp://127.0.0.1:*") : -1;
        char ep[64];
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
        pthread_t rt;
        if (port > 0 && pthread_create(&rt, NULL, s_relay_thread, &r) == 0) {
            zsock_set_sndhwm(r.router, 100000);
            zsock_set_rcvhwm(r.router, 100000);
            relay.endpoint = ep;
            s_run(&relay);
            stop_relay = 1;
            pthread_join(rt, NULL);
        }
        zsock_destroy(&r.router);
    }

    /* the broker under load */
    run_t load = {.cfg = &cfg, .endpoint = clients, .seconds = cfg.seconds};
    long long cpu_a = broker > 0 ? s_cpu_ticks(broker) : -1;
    int64_t cpu_ta = tt_mono_ms();
    if (!s_interrupted)
        s_run(&load);
    long long cpu_b = broker > 0 ? s_cpu_ticks(broker) : -1;
    double load_cpu = cpu_a >= 0 && cpu_b >= 0
                          ? s_cpu_percent(cpu_b - cpu_a, (tt_mono_ms() - cpu_ta) / 1000.0)
                          : -1;

    double relay_rate = relay.elapsed_s > 0 ? relay.ops[OP_RELAY].n / relay.elapsed_s : 0;
    double create_rate = load.elapsed_s > 0 ? load.ops[OP_CREATE].n / load.elapsed_s : 0;
    uint64_t all_ops = load.ops[OP_CREATE].n + load.ops[OP_SHOW].n + load.ops[OP_DELETE].n;
    double all_rate = load.elapsed_s > 0 ? all_ops / load.elapsed_s : 0;
    if (cfg.json) {
        json_t *ops = json_object();
        for (int op = OP_CREATE; op <= OP_DELETE; op++)
            json_object_set_new(ops, s_op_names[op], s_json_op(&load.ops[op], load.elapsed_s));
        json_t *out = json_pack(
            "{s:i, s:i, s:i, s:i, s:s, s:b, s:f, s:f, s:o, s:f, s:f, s:I, s:I, s:o, s:f, s:f, "
            "s:f}",
            "hosts", cfg.hosts, "producers", cfg.producers, "seconds", cfg.seconds, "rate",
            cfg.rate, "mix", cfg.create_only ? "create" : "cycle", "spread", (int)cfg.spread,
            "hosts_join_s", join_s, "idle_broker_cpu_pct", idle_cpu, "ops", ops,
            "requests_per_s", all_rate, "creates_per_s", create_rate, "late_starts",
            (json_int_t)load.late_starts, "unfinished", (json_int_t)load.unfinished, "relay",
            s_json_op(&relay.ops[OP_RELAY], relay.elapsed_s), "relay_per_s", relay_rate,
            "create_vs_relay", relay_rate > 0 ? create_rate / relay_rate : 0.0,
            "load_broker_cpu_pct", load_cpu);
        json_dumpf(out, stdout, JSON_INDENT(2));
        printf("\n");
        json_decref(out);
    } else {
        printf("ttbench: %d producers, %d s, rate %s, mix %s, %s placement\n", cfg.producers,
               cfg.seconds, cfg.rate ? "limited" : "max", cfg.create_only ? "create" : "cycle",
               cfg.spread ? "spread" : "best-fit");
        if (cfg.rate)
            printf("  target  %d creates/s; cycles that could not start on time: %llu\n",
                   cfg.rate, (unsigned long long)load.late_starts);
        for (int op = OP_CREATE; op <= OP_DELETE; op++)
            if (load.ops[op].n || load.ops[op].errors)
                s_print_op(s_op_names[op], &load.ops[op], load.elapsed_s);
        printf("  all     %9llu requests %10.0f/s, broker CPU %.0f%% of one core\n",
               (unsigned long long)all_ops, all_rate, load_cpu);
        if (relay.elapsed_s > 0) {
            s_print_op("relay", &relay.ops[OP_RELAY], relay.elapsed_s);
            printf("  creates/s vs relay requests/s: %.1f%%\n",
                   relay_rate > 0 ? 100.0 * create_rate / relay_rate : 0.0);
        }
        if (load.unfinished)
            printf("  %llu requests had no reply %d s after the window\n",
                   (unsigned long long)load.unfinished, BENCH_DRAIN_MS / 1000);
        Ttfleet__Reply *st = s_interrupted ? NULL : s_broker_stats(&cfg, clients);
        if (st)
            s_print_stats(st->broker_stats);
        else
            printf("broker: no broker_stats (an older broker?)\n");
        ttclient_reply_destroy(&st);
    }
    code = load.ops[OP_CREATE].n > 0 && !s_interrupted ? 0 : 1;
    for (int op = 0; op < OP_N; op++) {
        free(load.ops[op].us);
        free(relay.ops[op].us);
    }

stop:
    stop_hosts = 1;
    for (int i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    if (hosts)
        s_hosts_free(hosts, cfg.hosts);
    free(threads);
    free(tids);
    if (broker > 0) {
        kill(broker, SIGTERM);
        int st;
        int64_t deadline = tt_mono_ms() + 10000;
        while (waitpid(broker, &st, WNOHANG) == 0 && tt_mono_ms() < deadline)
            zclock_sleep(50);
        if (waitpid(broker, &st, WNOHANG) == 0) {
            kill(broker, SIGKILL);
            waitpid(broker, &st, 0);
        }
    }
cleanup_dir:
    if (cfg.keep)
        fprintf(stderr, "ttbench: kept %s\n", dir);
    else
        s_rm_rf(dir);
    return code;
}
