/*
 * The converge logic (worker/fleet.c) driven with packed WorkerCommands,
 * on the hollow engine (bookkeeping only) plus one real process VM for
 * adoption after a "restart" (fleet destroyed and created again on the
 * same state dir) and death detection.
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "fleet.h"
#include "jobs.h"
#include "proc.h"
#include "ttproto.h"

static fleet_config_t s_cfg;

typedef struct {
    Ttfleet__VmSpec spec;
    Ttfleet__PortMap port;
    Ttfleet__PortMap *ports[1];
    char ip[16], mac[18];
} s_spec_t;

static void s_spec(s_spec_t *s, uint32_t id, const char *engine, int desired)
{
    Ttfleet__VmSpec init = TTFLEET__VM_SPEC__INIT;
    Ttfleet__PortMap pinit = TTFLEET__PORT_MAP__INIT;
    s->spec = init;
    s->port = pinit;
    s->port.guest = 22;
    s->port.public_ = 40000 + id;
    s->ports[0] = &s->port;
    snprintf(s->ip, sizeof s->ip, "10.10.%u.%u", (id >> 8) & 0xffu, id & 0xffu);
    snprintf(s->mac, sizeof s->mac, "52:54:00:00:%02x:%02x", (id >> 8) & 0xffu, id & 0xffu);
    s->spec.vm_id = id;
    s->spec.env = "alice/ci";
    s->spec.image = "sleeper";
    s->spec.engine = (char *)engine;
    s->spec.cpu = 2;
    s->spec.mem_mib = 1024;
    s->spec.disk_mib = 1000;
    s->spec.ip = s->ip;
    s->spec.mac = s->mac;
    s->spec.n_ports = 1;
    s->spec.ports = s->ports;
    s->spec.expires_at = tt_now() + 3600;
    s->spec.desired = (Ttfleet__VmState)desired;
}

/* Runs command c on the fleet; returns the unpacked reply (caller frees),
 * NULL when there is none. */
static Ttfleet__WorkerReply *s_run(fleet_t *fleet, const Ttfleet__WorkerCommand *c)
{
    size_t len = ttfleet__worker_command__get_packed_size(c);
    uint8_t *buf = malloc(len + 1);
    ttfleet__worker_command__pack(c, buf);
    zframe_t *f = fleet_command(fleet, buf, len);
    free(buf);
    Ttfleet__WorkerReply *r =
        f ? ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f)) : NULL;
    zframe_destroy(&f);
    return r;
}

/* Send one command of n specs; returns the unpacked reply (caller frees). */
static Ttfleet__WorkerReply *s_cmd(fleet_t *fleet, uint64_t op, s_spec_t *specs, size_t n)
{
    Ttfleet__WorkerCommand c = TTFLEET__WORKER_COMMAND__INIT;
    Ttfleet__VmSpec *pp[16];
    for (size_t i = 0; i < n; i++)
        pp[i] = &specs[i].spec;
    c.op_id = op;
    c.n_vms = n;
    c.vms = pp;
    Ttfleet__WorkerReply *r = s_run(fleet, &c);
    if (r && r->status)
        printf("  op %llu: %s: %s\n", (unsigned long long)op, tt_status_name(r->status),
               r->message);
    return r;
}

/* One spec under a broker Raft term: the reply's status, its VM's state in
 * *state (-1 when the reply lists none). */
static int s_term_cmd(fleet_t *fleet, uint64_t op, uint64_t term, s_spec_t *s, int *state,
                      char *msg, size_t msglen)
{
    Ttfleet__WorkerCommand c = TTFLEET__WORKER_COMMAND__INIT;
    Ttfleet__VmSpec *pp[1] = {&s->spec};
    c.op_id = op;
    c.term = term;
    c.n_vms = 1;
    c.vms = pp;
    Ttfleet__WorkerReply *r = s_run(fleet, &c);
    if (!r)
        return -1;
    int status = r->status;
    *state = r->n_vms == 1 ? (int)r->vms[0]->state : -1;
    snprintf(msg, msglen, "%s", r->message ? r->message : "");
    CHECK(r->op_id == op);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    return status;
}

static int s_one(fleet_t *fleet, uint64_t op, s_spec_t *s, int *state)
{
    Ttfleet__WorkerReply *r = s_cmd(fleet, op, s, 1);
    if (!r)
        return -1;
    int status = r->status;
    if (state)
        *state = r->n_vms == 1 ? (int)r->vms[0]->state : -1;
    CHECK(r->op_id == op);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    return status;
}

static Ttfleet__WorkerHello *s_hello(fleet_t *fleet)
{
    zframe_t *f = fleet_hello(fleet);
    Ttfleet__WorkerHello *h = ttfleet__worker_hello__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
    return h;
}

static int s_inventory_state(fleet_t *fleet, uint32_t id)
{
    Ttfleet__WorkerHello *h = s_hello(fleet);
    int state = -1;
    for (size_t i = 0; h && i < h->n_inventory; i++)
        if (h->inventory[i]->vm_id == id)
            state = h->inventory[i]->state;
    ttfleet__worker_hello__free_unpacked(h, NULL);
    return state;
}

static pid_t s_vm_pid(uint32_t id)
{
    char path[512];
    snprintf(path, sizeof path, "%s/vms/%u/pid", s_cfg.state_dir, id);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return pid;
}

static void s_kill_vm10(void)
{
    pid_t pid = s_vm_pid(10);
    if (pid > 0) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
}

/* A readiness probe reaches only the VM: a host service on 127.0.0.1 (a
 * listener this test holds, answering as an HTTP server would) is never
 * dialled for a guest port the VM does not forward, under the user backend
 * and without one; the VM stays not ready and says why, and no byte of the
 * host service's answer reaches ready_detail. With as_public, the listener's
 * port is the VM's own public port for guest port 22 (the broker's choice,
 * which another program or another worker's VM on the machine may hold):
 * a VM whose engine does not forward its ports there (hollow, process, or
 * any engine without the user backend) is not dialled there either. */
static void s_probe_stays_in_vm(fleet_t *fleet, uint64_t op, uint32_t id, const char *kind,
                                bool as_public)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    /* a public port is in the worker's range (40000..59999) */
    for (unsigned i = 0; as_public && i < 500; i++) {
        sa.sin_port = htons((uint16_t)(40000 + (getpid() * 7 + i * 131) % 20000));
        if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0)
            break;
    }
    CHECK((as_public || bind(lfd, (struct sockaddr *)&sa, sizeof sa) == 0) && listen(lfd, 8) == 0 &&
          getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0);
    char ready[64];
    snprintf(ready, sizeof ready, "%s:%u", kind, as_public ? 22u : (unsigned)ntohs(sa.sin_port));
    s_spec_t v;
    s_spec(&v, id, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    if (as_public)
        v.port.public_ = ntohs(sa.sin_port);
    v.spec.cpu = 1;
    v.spec.ready = ready;
    int accepted = 0, ready_seen = 0;
    char detail[256] = "";
    Ttfleet__WorkerReply *r = s_cmd(fleet, op, &v, 1);
    CHECK(r && r->status == 0 && r->n_vms == 1 &&
          r->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING);
    if (r && r->n_vms == 1) {
        ready_seen |= r->vms[0]->ready;
        snprintf(detail, sizeof detail, "%s", r->vms[0]->ready_detail);
    }
    if (r)
        ttfleet__worker_reply__free_unpacked(r, NULL);
    for (int64_t t0 = tt_mono_ms(); tt_mono_ms() - t0 < 2500;) {
        int c = accept(lfd, NULL, NULL);
        if (c >= 0) {
            accepted++;
            if (write(c, "HTTP/1.0 200 host-secret\r\n\r\n", 29) < 0)
                accepted += 0;
            close(c);
        }
        zframe_t *ev = fleet_probe_tick(fleet);
        Ttfleet__WorkerEvent *e =
            ev ? ttfleet__worker_event__unpack(NULL, zframe_size(ev), zframe_data(ev)) : NULL;
        for (size_t i = 0; e && i < e->n_vms; i++)
            if (e->vms[i]->vm_id == id) {
                ready_seen |= e->vms[i]->ready;
                snprintf(detail, sizeof detail, "%s", e->vms[i]->ready_detail);
            }
        if (e)
            ttfleet__worker_event__free_unpacked(e, NULL);
        zframe_destroy(&ev);
        poll(NULL, 0, 50);
    }
    CHECK(accepted == 0);
    CHECK(!ready_seen);
    const char *why = as_public ? "not forwarded on the host" : "not one of this VM's ports";
    CHECK(strstr(detail, why) != NULL);
    CHECK(strstr(detail, "host-secret") == NULL);
    if (accepted || !strstr(detail, why))
        fprintf(stderr, "  %s: accepted %d, detail '%s'\n", ready, accepted, detail);
    close(lfd);
    v.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    int st;
    CHECK(s_one(fleet, op + 1, &v, &st) == 0 && st == TTFLEET__VM_STATE__VM_ABSENT);
}

/* Threads of this process now (/proc/self/task). */
static int s_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

static int s_wait_threads(int at_most, int ms)
{
    int n = s_threads();
    for (int64_t t0 = tt_mono_ms(); n > at_most && tt_mono_ms() - t0 < ms; n = s_threads())
        poll(NULL, 0, 50);
    return n;
}

static void s_job_sleep(void *arg)
{
    poll(NULL, 0, 100);
    __atomic_add_fetch((int *)arg, 1, __ATOMIC_SEQ_CST);
}

/* A pool starts threads when work comes (at most its n), runs it all, and
 * its threads exit after JOBS_IDLE_MS without work. */
static void test_jobs_on_demand(void)
{
    int base = s_threads();
    jobs_t *j = jobs_new(4);
    CHECK(j && s_threads() == base && jobs_threads(j) == 0);
    int ran = 0;
    for (int i = 0; i < 10; i++)
        CHECK(jobs_submit(j, s_job_sleep, &ran) == 0);
    CHECK(jobs_threads(j) >= 1 && jobs_threads(j) <= 4);
    int reaped = 0;
    for (int64_t t0 = tt_mono_ms(); reaped < 10 && tt_mono_ms() - t0 < 5000;)
        if (jobs_reap(j))
            reaped++;
        else
            poll(NULL, 0, 10);
    CHECK(reaped == 10 && __atomic_load_n(&ran, __ATOMIC_SEQ_CST) == 10);
    CHECK(s_wait_threads(base, JOBS_IDLE_MS + 2000) == base && jobs_threads(j) == 0);
    /* work after the threads left starts one again */
    CHECK(jobs_submit(j, s_job_sleep, &ran) == 0 && jobs_threads(j) == 1);
    jobs_destroy(&j, NULL);
    CHECK(s_threads() == base);
}

/* Term fencing: a command from an older broker term (a deposed leader)
 * is answered NOT_LEADER and changes nothing; the highest term survives a
 * restart of the worker (worker.db). */
static void test_term_fencing(const char *state)
{
    char dir[512], err[256], msg[512];
    snprintf(dir, sizeof dir, "%s/term", state);
    CHECK(mkdir(dir, 0700) == 0);
    fleet_config_t cfg = s_cfg;
    cfg.state_dir = dir;
    fleet_t *fleet = fleet_new(&cfg, err, sizeof err);
    CHECK(fleet && fleet_term(fleet) == 0);
    if (!fleet)
        return;
    s_spec_t v;
    s_spec(&v, 30, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    int st = -1;
    /* a lone broker (term 0), then a cluster's leader in term 5 */
    CHECK(s_term_cmd(fleet, 1, 0, &v, &st, msg, sizeof msg) == 0 &&
          st == TTFLEET__VM_STATE__VM_RUNNING);
    v.spec.desired = TTFLEET__VM_STATE__VM_STOPPED;
    CHECK(s_term_cmd(fleet, 2, 5, &v, &st, msg, sizeof msg) == 0 &&
          st == TTFLEET__VM_STATE__VM_STOPPED);
    CHECK(fleet_term(fleet) == 5 && fleet_stale(fleet) == 0);
    /* the deposed leader of term 4 (and a lone broker) are refused */
    v.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_term_cmd(fleet, 3, 4, &v, &st, msg, sizeof msg) == TTFLEET__STATUS__NOT_LEADER);
    CHECK(strstr(msg, "term 4") && strstr(msg, "term 5"));
    CHECK(s_term_cmd(fleet, 4, 0, &v, &st, msg, sizeof msg) == TTFLEET__STATUS__NOT_LEADER);
    CHECK(fleet_stale(fleet) == 2 && fleet_term(fleet) == 5);
    CHECK(s_inventory_state(fleet, 30) == TTFLEET__VM_STATE__VM_STOPPED);
    fleet_destroy(&fleet);
    /* a restarted worker still knows term 5 */
    fleet = fleet_new(&cfg, err, sizeof err);
    CHECK(fleet && fleet_term(fleet) == 5);
    if (!fleet)
        return;
    CHECK(s_term_cmd(fleet, 5, 4, &v, &st, msg, sizeof msg) == TTFLEET__STATUS__NOT_LEADER);
    CHECK(s_inventory_state(fleet, 30) == TTFLEET__VM_STATE__VM_STOPPED);
    /* the same term and a newer one are served */
    v.spec.desired = TTFLEET__VM_STATE__VM_RUNNING;
    CHECK(s_term_cmd(fleet, 6, 5, &v, &st, msg, sizeof msg) == 0 &&
          st == TTFLEET__VM_STATE__VM_RUNNING);
    v.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_term_cmd(fleet, 7, 9, &v, &st, msg, sizeof msg) == 0 &&
          st == TTFLEET__VM_STATE__VM_ABSENT);
    CHECK(fleet_term(fleet) == 9);
    fleet_destroy(&fleet);
    fleet = fleet_new(&cfg, err, sizeof err);
    CHECK(fleet && fleet_term(fleet) == 9);
    fleet_destroy(&fleet);
}

int main(void)
{
    const char *images = getenv("TTFLEET_IMAGES");
    char images_abs[4096];
    if (!images || !realpath(images, images_abs)) {
        fprintf(stderr, "TTFLEET_IMAGES is not set or missing\n");
        return 1;
    }
    const char *state = s_tmpdir_make("fleet");
    atexit(s_kill_vm10);
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    s_cfg = (fleet_config_t){
        .state_dir = state,
        .images_dir = images_abs,
        .host_id = "h1",
        .cap = {{4, 4096, 10000}, 1.0, 1.0, 1.0},
        .engines = {"hollow", "process"},
        .n_engines = 2,
        .expiry_grace = 10,
        .stop_timeout_ms = 2000,
    };
    test_jobs_on_demand();
    /* An idle fleet holds no pool thread (the store's syncer is its one
     * thread), so a process can hold a thousand of them (ttbench). */
    int threads0 = s_threads();
    char err[256];
    fleet_t *fleet = fleet_new(&s_cfg, err, sizeof err);
    CHECK(fleet != NULL);
    if (!fleet)
        return s_report("unit.worker.fleet");
    CHECK(s_threads() <= threads0 + 2);
    if (s_threads() > threads0 + 2)
        fprintf(stderr, "  an idle fleet holds %d threads\n", s_threads() - threads0);

    Ttfleet__WorkerHello *h = s_hello(fleet);
    CHECK(h && strcmp(h->host_id, "h1") == 0 && h->cpu_total == 4 && h->n_engines == 2);
    bool has_sleeper = false, has_ticker = false;
    for (size_t i = 0; h && i < h->n_images; i++) {
        has_sleeper |= strcmp(h->images[i], "sleeper") == 0;
        has_ticker |= strcmp(h->images[i], "ticker") == 0;
    }
    CHECK(has_sleeper && has_ticker && h->n_inventory == 0);
    ttfleet__worker_hello__free_unpacked(h, NULL);

    /* Two hollow VMs fit (2+2 cpu of 4); a third does not. */
    s_spec_t s[3];
    int st;
    s_spec(&s[0], 2, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    s_spec(&s[1], 3, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    Ttfleet__WorkerReply *r = s_cmd(fleet, 1, s, 2);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->n_vms == 2);
    CHECK(r && r->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING &&
          strcmp(r->vms[0]->env, "alice/ci") == 0);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    /* Idempotent: the same command again changes nothing. */
    CHECK(s_one(fleet, 2, &s[0], &st) == TTFLEET__STATUS__OK &&
          st == TTFLEET__VM_STATE__VM_RUNNING);
    s_spec(&s[2], 4, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    CHECK(s_one(fleet, 3, &s[2], &st) == TTFLEET__STATUS__NO_CAPACITY &&
          st == TTFLEET__VM_STATE__VM_ABSENT);
    /* Stopped VMs hold only disk: the third can be created stopped, and
     * started once another stops. */
    s[2].spec.desired = TTFLEET__VM_STATE__VM_STOPPED;
    CHECK(s_one(fleet, 4, &s[2], &st) == 0 && st == TTFLEET__VM_STATE__VM_STOPPED);
    s[2].spec.desired = TTFLEET__VM_STATE__VM_RUNNING;
    CHECK(s_one(fleet, 5, &s[2], &st) == TTFLEET__STATUS__NO_CAPACITY &&
          st == TTFLEET__VM_STATE__VM_STOPPED);
    s[1].spec.desired = TTFLEET__VM_STATE__VM_PAUSED;
    CHECK(s_one(fleet, 6, &s[1], &st) == 0 && st == TTFLEET__VM_STATE__VM_PAUSED);
    CHECK(s_one(fleet, 7, &s[2], &st) == TTFLEET__STATUS__NO_CAPACITY); /* paused holds cpu */
    s[1].spec.desired = TTFLEET__VM_STATE__VM_STOPPED;
    CHECK(s_one(fleet, 8, &s[1], &st) == 0 && st == TTFLEET__VM_STATE__VM_STOPPED);
    CHECK(s_one(fleet, 9, &s[2], &st) == 0 && st == TTFLEET__VM_STATE__VM_RUNNING);
    /* Disk: 3 x 1000 of 10000; a VM of 8000 does not fit. */
    s_spec_t big;
    s_spec(&big, 9, "hollow", TTFLEET__VM_STATE__VM_STOPPED);
    big.spec.disk_mib = 8000;
    CHECK(s_one(fleet, 10, &big, &st) == TTFLEET__STATUS__NO_CAPACITY);

    /* Bad input: reported, never applied. */
    s_spec_t bad;
    s_spec(&bad, 5, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    bad.spec.image = "../../bin/sh";
    CHECK(s_one(fleet, 11, &bad, &st) == TTFLEET__STATUS__BAD_REQUEST);
    s_spec(&bad, 5, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    bad.spec.image = "nope";
    CHECK(s_one(fleet, 12, &bad, &st) == TTFLEET__STATUS__BAD_REQUEST);
    s_spec(&bad, 5, "qemu", TTFLEET__VM_STATE__VM_RUNNING);
    CHECK(s_one(fleet, 13, &bad, &st) == TTFLEET__STATUS__BAD_REQUEST);
    s_spec(&bad, 5, "hollow", 42);
    CHECK(s_one(fleet, 14, &bad, &st) == TTFLEET__STATUS__BAD_REQUEST);
    s_spec(&bad, 2, "hollow", TTFLEET__VM_STATE__VM_RUNNING);
    bad.spec.image = "ticker"; /* another VM under an existing id */
    CHECK(s_one(fleet, 15, &bad, &st) == TTFLEET__STATUS__BAD_REQUEST &&
          st == TTFLEET__VM_STATE__VM_RUNNING);
    s_spec(&bad, 6, "hollow", TTFLEET__VM_STATE__VM_STOPPED);
    strcpy(bad.ip, "10.10.0.2"); /* held by vm 2 */
    CHECK(s_one(fleet, 16, &bad, &st) == TTFLEET__STATUS__WORKER_FAILED);
    s_spec_t dup[2];
    s_spec(&dup[0], 7, "hollow", TTFLEET__VM_STATE__VM_STOPPED);
    s_spec(&dup[1], 7, "hollow", TTFLEET__VM_STATE__VM_STOPPED);
    r = s_cmd(fleet, 17, dup, 2);
    CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST && r->n_vms == 2);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    CHECK(fleet_command(fleet, (const byte *)"\xff\xff\xff", 3) == NULL);

    /* exec through the fleet (guestop.c): a hollow VM has no guest; an
     * argument with a NUL the decoder would cut is refused */
    {
        char *argv[] = {"true", "abc"};
        Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
        x.vm_id = 2;
        x.argv = argv;
        x.n_argv = 2;
        Ttfleet__WorkerCommand c = TTFLEET__WORKER_COMMAND__INIT;
        c.op_id = 40;
        c.exec = &x;
        uint8_t buf[256];
        size_t len = ttfleet__worker_command__pack(&c, buf);
        zframe_t *f = fleet_command(fleet, buf, len);
        Ttfleet__WorkerReply *g =
            f ? ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f)) : NULL;
        CHECK(g && g->op_id == 40 && g->status == TTFLEET__STATUS__GUEST_UNREACHABLE);
        if (g)
            ttfleet__worker_reply__free_unpacked(g, NULL);
        zframe_destroy(&f);
        uint8_t *abc = memmem(buf, len, "abc", 3);
        CHECK(abc != NULL);
        if (abc)
            abc[1] = 0; /* "a\0c" */
        f = fleet_command(fleet, buf, len);
        g = f ? ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f)) : NULL;
        CHECK(g && g->op_id == 40 && g->status != TTFLEET__STATUS__OK &&
              strstr(g->message, "NUL"));
        if (g)
            ttfleet__worker_reply__free_unpacked(g, NULL);
        zframe_destroy(&f);
    }

    /* ABSENT destroys; ABSENT of an unknown VM is fine. */
    s_spec(&s[0], 2, "hollow", TTFLEET__VM_STATE__VM_ABSENT);
    CHECK(s_one(fleet, 18, &s[0], &st) == 0 && st == TTFLEET__VM_STATE__VM_ABSENT);
    CHECK(s_one(fleet, 19, &s[0], &st) == 0 && st == TTFLEET__VM_STATE__VM_ABSENT);
    s_spec(&dup[0], 7, "hollow", TTFLEET__VM_STATE__VM_ABSENT);
    CHECK(s_one(fleet, 20, &dup[0], &st) == 0);

    s_probe_stays_in_vm(fleet, 30, 11, "tcp", false);
    s_probe_stays_in_vm(fleet, 32, 11, "http", false);
    s_probe_stays_in_vm(fleet, 36, 11, "tcp", true);
    s_cfg.net.kind = NET_USER;
    fleet_destroy(&fleet);
    fleet = fleet_new(&s_cfg, err, sizeof err);
    CHECK(fleet != NULL);
    if (!fleet)
        return s_report("unit.worker.fleet");
    s_probe_stays_in_vm(fleet, 34, 11, "http", false);
    s_probe_stays_in_vm(fleet, 38, 11, "http", true);
    s_cfg.net.kind = NET_NONE;

    /* Expiry: vm 3 expired long ago -> destroyed by the tick with an event. */
    s_spec(&s[1], 3, "hollow", TTFLEET__VM_STATE__VM_STOPPED);
    s[1].spec.expires_at = tt_now() - 100;
    CHECK(s_one(fleet, 21, &s[1], &st) == 0);
    zframe_t *ev = fleet_tick(fleet, tt_now());
    CHECK(ev != NULL);
    if (ev) {
        Ttfleet__WorkerEvent *e =
            ttfleet__worker_event__unpack(NULL, zframe_size(ev), zframe_data(ev));
        CHECK(e && e->n_vms == 1 && e->vms[0]->vm_id == 3 &&
              e->vms[0]->state == TTFLEET__VM_STATE__VM_ABSENT &&
              strcmp(e->vms[0]->env, "alice/ci") == 0);
        ttfleet__worker_event__free_unpacked(e, NULL);
        zframe_destroy(&ev);
    }
    CHECK(s_inventory_state(fleet, 3) == -1);
    CHECK(fleet_tick(fleet, tt_now()) == NULL);

    /* A real process VM: survives a fleet "restart", then dies. */
    s_spec_t pv;
    s_spec(&pv, 10, "process", TTFLEET__VM_STATE__VM_RUNNING);
    pv.spec.cpu = 1;
    CHECK(s_one(fleet, 22, &pv, &st) == 0 && st == TTFLEET__VM_STATE__VM_RUNNING);
    pid_t pid = s_vm_pid(10);
    CHECK(pid > 0);
    CHECK(s_wait_threads(threads0 + 2, JOBS_IDLE_MS + 2000) <= threads0 + 2);
    fleet_destroy(&fleet);
    CHECK(pid > 0 && kill(pid, 0) == 0); /* the VM outlives its worker */
    fleet = fleet_new(&s_cfg, err, sizeof err);
    CHECK(fleet != NULL);
    if (!fleet)
        return s_report("unit.worker.fleet");
    CHECK(fleet_count(fleet) == 2);
    CHECK(s_inventory_state(fleet, 10) == TTFLEET__VM_STATE__VM_RUNNING);
    CHECK(s_inventory_state(fleet, 4) == TTFLEET__VM_STATE__VM_RUNNING); /* hollow */
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    ev = fleet_tick(fleet, tt_now());
    CHECK(ev != NULL);
    if (ev) {
        Ttfleet__WorkerEvent *e =
            ttfleet__worker_event__unpack(NULL, zframe_size(ev), zframe_data(ev));
        CHECK(e && e->n_vms == 1 && e->vms[0]->vm_id == 10 &&
              e->vms[0]->state == TTFLEET__VM_STATE__VM_DEAD);
        ttfleet__worker_event__free_unpacked(e, NULL);
        zframe_destroy(&ev);
    }
    /* The broker re-sends the spec: it starts again from its kept disk. */
    CHECK(s_one(fleet, 23, &pv, &st) == 0 && st == TTFLEET__VM_STATE__VM_RUNNING);
    pv.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_one(fleet, 24, &pv, &st) == 0 && st == TTFLEET__VM_STATE__VM_ABSENT);
    char path[512];
    snprintf(path, sizeof path, "%s/vms/10", state);
    CHECK(access(path, F_OK) != 0);
    fleet_destroy(&fleet);

    /* A crash between spawn and commit leaves a VM dir with a pidfile and
     * no row: the next start kills that process and removes the dir. */
    engine_ctx_t ctx = {.state_dir = state, .images_dir = images_abs, .stop_timeout_ms = 2000};
    vm_t stray;
    memset(&stray, 0, sizeof stray);
    stray.vm_id = 20;
    strcpy(stray.image, "sleeper");
    CHECK(engine_process.prepare_disk(&ctx, &stray, err, sizeof err) == 0);
    CHECK(engine_process.start(&ctx, &stray, err, sizeof err) == 0);
    CHECK(proc_alive(stray.pid, stray.start_time));
    fleet = fleet_new(&s_cfg, err, sizeof err);
    CHECK(fleet != NULL);
    CHECK(!proc_alive(stray.pid, stray.start_time));
    snprintf(path, sizeof path, "%s/vms/20", state);
    CHECK(access(path, F_OK) != 0);
    fleet_destroy(&fleet);
    test_term_fencing(state);
    return s_report("unit.worker.fleet");
}
