/*
 * The fleet's operations in flight (worker/fleet.h): group commit and
 * reply after commit, the timer-driven stop state machine (TERM, grace,
 * KILL) with real process VMs whose program ignores SIGTERM, concurrency
 * across VMs and order on one VM, expiry destroys that wait on the same
 * timer, and the spawn lock that closes the pidfile window of issue 9
 * item 12.
 */
#include "test_util.h"

#include <signal.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "fleet.h"
#include "proc.h"
#include "spawn.h"
#include "ttproto.h"

#define GRACE_MS 1000

static fleet_config_t s_cfg;
static char s_db[1024];

typedef struct {
    Ttfleet__VmSpec spec;
    char ip[32], mac[32];
} s_spec_t;

static void s_spec(s_spec_t *s, uint32_t id, const char *engine, const char *image, int desired)
{
    Ttfleet__VmSpec init = TTFLEET__VM_SPEC__INIT;
    s->spec = init;
    snprintf(s->ip, sizeof s->ip, "10.10.%u.%u", id / 256, id % 256);
    snprintf(s->mac, sizeof s->mac, "52:54:00:00:%02x:%02x", id / 256, id % 256);
    s->spec.vm_id = id;
    s->spec.env = "alice/ci";
    s->spec.image = (char *)image;
    s->spec.engine = (char *)engine;
    s->spec.cpu = 1;
    s->spec.mem_mib = 64;
    s->spec.disk_mib = 64;
    s->spec.ip = s->ip;
    s->spec.mac = s->mac;
    s->spec.expires_at = tt_now() + 3600;
    s->spec.desired = (Ttfleet__VmState)desired;
}

static zframe_t *s_pack(uint64_t op, s_spec_t *specs, size_t n)
{
    Ttfleet__WorkerCommand c = TTFLEET__WORKER_COMMAND__INIT;
    Ttfleet__VmSpec *pp[16];
    for (size_t i = 0; i < n; i++)
        pp[i] = &specs[i].spec;
    c.op_id = op;
    c.n_vms = n;
    c.vms = pp;
    size_t len = ttfleet__worker_command__get_packed_size(&c);
    zframe_t *f = zframe_new(NULL, len);
    ttfleet__worker_command__pack(&c, zframe_data(f));
    return f;
}

static void s_submit(fleet_t *fleet, uint64_t op, s_spec_t *specs, size_t n)
{
    zframe_t *f = s_pack(op, specs, n);
    CHECK(fleet_submit(fleet, zframe_data(f), zframe_size(f)) == 0);
    zframe_destroy(&f);
}

/* The next ready reply (unpacked, caller frees), or NULL. */
/* The next reply; engine calls run on the fleet's threads, so this
 * drives the flush until one is out (bounded: 10 s). */
static Ttfleet__WorkerReply *s_wait_pop(fleet_t *fleet)
{
    zframe_t *f = fleet_pop(fleet);
    for (int64_t t0 = tt_mono_ms(); !f && tt_mono_ms() - t0 < 10000; f = fleet_pop(fleet)) {
        spawn_sleep_ms(5);
        fleet_flush(fleet);
    }
    if (!f)
        return NULL;
    Ttfleet__WorkerReply *r = ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
    return r;
}

/* The next reply that is out now, or NULL. */
static Ttfleet__WorkerReply *s_pop(fleet_t *fleet)
{
    zframe_t *f = fleet_pop(fleet);
    if (!f)
        return NULL;
    Ttfleet__WorkerReply *r = ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
    return r;
}

/* Blocking: one command, its reply status. */
static int s_run(fleet_t *fleet, uint64_t op, s_spec_t *specs, size_t n)
{
    zframe_t *f = s_pack(op, specs, n);
    zframe_t *rf = fleet_command(fleet, zframe_data(f), zframe_size(f));
    zframe_destroy(&f);
    if (!rf)
        return -1;
    Ttfleet__WorkerReply *r = ttfleet__worker_reply__unpack(NULL, zframe_size(rf), zframe_data(rf));
    zframe_destroy(&rf);
    int status = r ? (int)r->status : -1;
    if (r && r->status)
        printf("  op %llu: %s\n", (unsigned long long)op, r->message);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    return status;
}

/* Rows in worker.db as another connection sees them (committed only). */
static int s_rows(void)
{
    sqlite3 *db;
    int n = -1;
    if (sqlite3_open_v2(s_db, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "SELECT count(*) FROM vms", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            n = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return n;
}

static pid_t s_pidfile(uint32_t id, uint64_t *st)
{
    char path[600];
    pid_t pid = 0;
    snprintf(path, sizeof path, "%s/vms/%u/pid", s_cfg.state_dir, id);
    if (proc_pidfile_read(path, &pid, st))
        return 0;
    return pid;
}

static void s_write(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
    chmod(path, 0755);
}

/* Spawn lock: a "spawner" (a child holding the lock, as the intermediate
 * of a killed worker would) writes the pidfile late; the pidfile reader
 * waits for it instead of finding nothing. */
static void s_test_spawn_lock(const engine_ctx_t *ctx)
{
    char err[256], dir[1200];
    snprintf(dir, sizeof dir, "%s/vms/77", ctx->state_dir);
    mkdir(dir, 0750);
    int lock = engine_spawn_lock(ctx, 77, 1000, err, sizeof err);
    CHECK(lock >= 0);
    pid_t child = fork();
    if (child == 0) {
        /* holds the inherited lock like a spawner; pidfile after 400 ms */
        spawn_sleep_ms(400);
        char path[1400], line[64];
        char state;
        uint64_t st;
        proc_stat_read(getpid(), &state, &st);
        snprintf(path, sizeof path, "%s/pid", dir);
        snprintf(line, sizeof line, "%d %llu\n", (int)getpid(), (unsigned long long)st);
        s_write(path, line);
        close(lock); /* spawner done; it lives on as "the VM" */
        for (;;)
            pause();
    }
    close(lock); /* the worker "dies": only the child holds it now */
    vm_t vm;
    memset(&vm, 0, sizeof vm);
    vm.vm_id = 77;
    pid_t pid = 0;
    uint64_t st = 0;
    int64_t t0 = tt_mono_ms();
    CHECK(engine_pidfile_stray(ctx, &vm, &pid, &st) == 0); /* waited, then found it */
    CHECK(pid == child);
    CHECK(tt_mono_ms() - t0 >= 300);
    /* and a second lock taker is not blocked once the spawner is done */
    lock = engine_spawn_lock(ctx, 77, 100, err, sizeof err);
    CHECK(lock >= 0);
    if (lock >= 0)
        close(lock);
    /* no directory: no spawner can run there */
    CHECK(engine_spawn_lock(ctx, 78, 100, err, sizeof err) == -2);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

int main(void)
{
    const char *state = s_tmpdir_make("ops");
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    char images[600], path[700];
    snprintf(images, sizeof images, "%s/images", state);
    mkdir(images, 0750);
    snprintf(path, sizeof path, "%s/stubborn", images);
    s_write(path, "#!/bin/sh\ntrap '' TERM\nwhile :; do sleep 1; done\n");
    snprintf(path, sizeof path, "%s/polite", images);
    s_write(path, "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 1 & wait $!; done\n");
    char st_dir[600];
    snprintf(st_dir, sizeof st_dir, "%s/state", state);
    mkdir(st_dir, 0750);
    snprintf(s_db, sizeof s_db, "%s/worker.db", st_dir);
    s_cfg = (fleet_config_t){
        .state_dir = st_dir,
        .images_dir = images,
        .host_id = "h1",
        .cap = {{64, 65536, 100000}, 1.0, 1.0, 1.0},
        .engines = {"hollow", "process"},
        .n_engines = 2,
        .expiry_grace = 0,
        .stop_timeout_ms = GRACE_MS,
    };
    char err[256];
    fleet_t *fleet = fleet_new(&s_cfg, err, sizeof err);
    CHECK(fleet != NULL);
    if (!fleet)
        return s_report("unit.worker.ops");

    /* Group commit: three commands, nothing durable or answered before
     * the flush; one flush commits all three and releases their replies. */
    s_spec_t h[3];
    for (int i = 0; i < 3; i++) {
        s_spec(&h[i], (uint32_t)(100 + i), "hollow", "sleeper", TTFLEET__VM_STATE__VM_RUNNING);
        h[i].spec.image = "polite";
        s_submit(fleet, (uint64_t)(1 + i), &h[i], 1);
    }
    CHECK(fleet_pop(fleet) == NULL);
    CHECK(s_rows() == 0);
    for (uint64_t op = 1; op <= 3; op++) {
        Ttfleet__WorkerReply *r = s_wait_pop(fleet);
        CHECK(r && r->op_id == op && r->status == TTFLEET__STATUS__OK && r->n_vms == 1 &&
              r->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING);
        ttfleet__worker_reply__free_unpacked(r, NULL);
    }
    CHECK(s_rows() == 3);
    CHECK(fleet_pop(fleet) == NULL);
    CHECK(fleet_next_ms(fleet) == -1 && fleet_in_flight(fleet) == 0);

    /* Three process VMs that ignore SIGTERM, one that obeys it. */
    s_spec_t v[4];
    for (int i = 0; i < 3; i++)
        s_spec(&v[i], (uint32_t)(10 + i), "process", "stubborn", TTFLEET__VM_STATE__VM_RUNNING);
    s_spec(&v[3], 13, "process", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    CHECK(s_run(fleet, 10, v, 4) == TTFLEET__STATUS__OK);
    pid_t pids[4];
    uint64_t sts[4];
    for (int i = 0; i < 4; i++) {
        pids[i] = s_pidfile((uint32_t)(10 + i), &sts[i]);
        CHECK(pids[i] > 0 && proc_alive(pids[i], sts[i]));
    }
    spawn_sleep_ms(300); /* the programs have set their traps */

    /* Stop the three stubborn ones: TERM now, nothing waits. */
    for (int i = 0; i < 3; i++)
        v[i].spec.desired = TTFLEET__VM_STATE__VM_STOPPED;
    int64_t t0 = tt_mono_ms();
    s_submit(fleet, 11, v, 3);
    CHECK(tt_mono_ms() - t0 < GRACE_MS / 2); /* submitting did not wait */
    fleet_flush(fleet);
    CHECK(fleet_pop(fleet) == NULL);
    CHECK(fleet_next_ms(fleet) > 0 && fleet_in_flight(fleet) == 1);
    /* A later command on a stopping VM waits for it (order on one VM)... */
    s_spec_t again;
    s_spec(&again, 10, "process", "stubborn", TTFLEET__VM_STATE__VM_RUNNING);
    s_submit(fleet, 12, &again, 1);
    /* ...while commands on other VMs go on at once (another tenant). */
    s_spec_t other;
    s_spec(&other, 200, "hollow", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    s_submit(fleet, 13, &other, 1);
    v[3].spec.desired = TTFLEET__VM_STATE__VM_STOPPED; /* the polite one */
    s_submit(fleet, 14, &v[3], 1);
    fleet_flush(fleet);
    /* the stubborn stop and the start queued behind it (the polite stop
     * may be over already) */
    CHECK(fleet_in_flight(fleet) >= 2 && fleet_in_flight(fleet) <= 4); /* + the start of 200 */
    /* the start of 200 runs on the engine threads: the polite stop's
     * reply may come first */
    int64_t polite_ms = -1, stubborn_ms = -1, again_ms = -1;
    Ttfleet__WorkerReply *r = s_wait_pop(fleet);
    if (r && r->op_id == 14) {
        polite_ms = tt_mono_ms() - t0;
        ttfleet__worker_reply__free_unpacked(r, NULL);
        r = s_wait_pop(fleet);
    }
    CHECK(r && r->op_id == 13 && r->status == TTFLEET__STATUS__OK);
    CHECK(stubborn_ms < 0); /* answered while the stubborn stops run */
    ttfleet__worker_reply__free_unpacked(r, NULL);
    /* Drive the timer until the stops are answered. */
    while (tt_mono_ms() - t0 < 4 * GRACE_MS + 3000 && again_ms < 0) {
        int wait = fleet_next_ms(fleet);
        spawn_sleep_ms(wait > 0 ? wait : 10);
        fleet_flush(fleet);
        while ((r = s_pop(fleet))) {
            int64_t at = tt_mono_ms() - t0;
            CHECK(r->status == TTFLEET__STATUS__OK);
            if (r->op_id == 14) {
                polite_ms = at;
                CHECK(r->vms[0]->state == TTFLEET__VM_STATE__VM_STOPPED);
            } else if (r->op_id == 11) {
                stubborn_ms = at;
                CHECK(r->n_vms == 3);
                for (size_t i = 0; i < r->n_vms; i++)
                    CHECK(r->vms[i]->state == TTFLEET__VM_STATE__VM_STOPPED);
                for (int i = 0; i < 3; i++)
                    CHECK(!proc_alive(pids[i], sts[i]));
                CHECK(s_rows() == 3 + 4 + 1); /* committed before the reply */
            } else if (r->op_id == 12) {
                again_ms = at;
                CHECK(stubborn_ms >= 0); /* strictly after the stop of vm 10 */
                CHECK(r->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING);
            }
            ttfleet__worker_reply__free_unpacked(r, NULL);
        }
    }
    printf("  polite stop %lld ms, 3 TERM-ignoring stops %lld ms (grace %d), queued start %lld "
           "ms\n",
           (long long)polite_ms, (long long)stubborn_ms, GRACE_MS, (long long)again_ms);
    CHECK(polite_ms >= 0 && polite_ms < GRACE_MS);               /* TERM obeyed: no grace */
    CHECK(stubborn_ms >= GRACE_MS * 9 / 10);                     /* they got their grace */
    CHECK(stubborn_ms >= 0 && stubborn_ms < 2 * GRACE_MS + 500); /* together, not 3 x */
    CHECK(again_ms >= stubborn_ms);
    CHECK(fleet_in_flight(fleet) == 0 && fleet_next_ms(fleet) == -1);

    /* Expiry of a stubborn VM: destroyed by an op on the same timer; the
     * tick never waits, the event comes once the destroy is committed. */
    uint64_t st10;
    pid_t p10 = s_pidfile(10, &st10);
    CHECK(p10 > 0 && proc_alive(p10, st10));
    spawn_sleep_ms(200);
    again.spec.expires_at = tt_now() - 10;
    CHECK(s_run(fleet, 15, &again, 1) == TTFLEET__STATUS__OK);
    t0 = tt_mono_ms();
    zframe_t *ev = fleet_tick(fleet, tt_now());
    CHECK(tt_mono_ms() - t0 < GRACE_MS / 2);
    CHECK(ev == NULL); /* still stopping */
    CHECK(fleet_in_flight(fleet) == 1);
    bool seen = false;
    while (!seen && tt_mono_ms() - t0 < 2 * GRACE_MS + 3000) {
        spawn_sleep_ms(50);
        fleet_flush(fleet);
        CHECK(fleet_pop(fleet) == NULL); /* no reply: nobody asked */
        ev = fleet_tick(fleet, tt_now());
        if (!ev)
            continue;
        Ttfleet__WorkerEvent *e =
            ttfleet__worker_event__unpack(NULL, zframe_size(ev), zframe_data(ev));
        for (size_t i = 0; e && i < e->n_vms; i++)
            if (e->vms[i]->vm_id == 10 && e->vms[i]->state == TTFLEET__VM_STATE__VM_ABSENT) {
                seen = true;
                CHECK(strcmp(e->vms[i]->env, "alice/ci") == 0);
            }
        ttfleet__worker_event__free_unpacked(e, NULL);
        zframe_destroy(&ev);
    }
    CHECK(seen);
    CHECK(!proc_alive(p10, st10));
    CHECK(s_rows() == 3 + 4 + 1 - 1);

    /* Destroy what is left, blocking form. */
    for (int i = 1; i < 4; i++)
        v[i].spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_run(fleet, 16, &v[1], 3) == TTFLEET__STATUS__OK);

    /* A slow engine call (a spawn held 2 s by the test-only hook) runs off
     * the caller's loop: another VM's command is answered first, and
     * the slow one is still in flight then. */
    setenv("TTFLEET_SPAWN_DELAY_MS", "2000", 1);
    s_spec_t slow, quick;
    s_spec(&slow, 30, "process", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    s_spec(&quick, 31, "hollow", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    s_submit(fleet, 20, &slow, 1);
    s_submit(fleet, 21, &quick, 1);
    r = s_wait_pop(fleet);
    CHECK(r && r->op_id == 21 && r->status == TTFLEET__STATUS__OK);
    ttfleet__worker_reply__free_unpacked(r, NULL);
    CHECK(fleet_in_flight(fleet) == 1);

    /* Bounded queue: FLEET_MAX_OPS_PER_VM commands on VM 30 wait behind
     * the slow start; one more is refused at once, nothing changed. */
    for (int k = 1; k < FLEET_MAX_OPS_PER_VM; k++)
        s_submit(fleet, (uint64_t)(100 + k), &slow, 1);
    CHECK(fleet_pop(fleet) == NULL);
    s_submit(fleet, 99, &slow, 1);
    r = s_pop(fleet);
    CHECK(r && r->op_id == 99 && r->status == TTFLEET__STATUS__WORKER_FAILED && r->message &&
          strstr(r->message, "limit"));
    ttfleet__worker_reply__free_unpacked(r, NULL);
    int answered = 0;
    while ((r = s_wait_pop(fleet))) {
        CHECK(r->status == TTFLEET__STATUS__OK);
        answered++;
        ttfleet__worker_reply__free_unpacked(r, NULL);
        if (answered == FLEET_MAX_OPS_PER_VM)
            break;
    }
    CHECK(answered == FLEET_MAX_OPS_PER_VM);
    unsetenv("TTFLEET_SPAWN_DELAY_MS");

    /* A savepoint per row write: a worker.db write that fails (a trigger
     * another connection adds) fails its own op only; the other op in
     * the same flush is committed and answered OK. */
    sqlite3 *tdb = NULL;
    CHECK(sqlite3_open(s_db, &tdb) == SQLITE_OK &&
          sqlite3_exec(tdb,
                       "CREATE TRIGGER tt_fail BEFORE INSERT ON vms WHEN NEW.vm_id = 41"
                       " BEGIN SELECT RAISE(ABORT, 'injected'); END",
                       NULL, NULL, NULL) == SQLITE_OK);
    int rows_before = s_rows();
    s_spec_t good, bad;
    s_spec(&good, 40, "hollow", "polite", TTFLEET__VM_STATE__VM_STOPPED);
    s_spec(&bad, 41, "hollow", "polite", TTFLEET__VM_STATE__VM_STOPPED);
    s_submit(fleet, 40, &good, 1);
    s_submit(fleet, 41, &bad, 1);
    for (int k = 0; k < 2; k++) {
        r = s_wait_pop(fleet);
        CHECK(r != NULL);
        if (r && r->op_id == 40)
            CHECK(r->status == TTFLEET__STATUS__OK);
        else if (r)
            CHECK(r->op_id == 41 && r->status == TTFLEET__STATUS__WORKER_FAILED);
        ttfleet__worker_reply__free_unpacked(r, NULL);
    }
    CHECK(s_rows() == rows_before + 1);
    CHECK(sqlite3_exec(tdb, "DROP TRIGGER tt_fail", NULL, NULL, NULL) == SQLITE_OK);
    sqlite3_close(tdb);
    zframe_t *tev = fleet_tick(fleet, tt_now());
    zframe_destroy(&tev);
    CHECK(s_rows() == rows_before + 2); /* rewritten from the table */
    s_spec_t left[4] = {slow, quick, good, bad};
    for (int k = 0; k < 4; k++)
        left[k].spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_run(fleet, 50, left, 4) == TTFLEET__STATUS__OK);

    /* An address freed by a delete the worker is still carrying out: a new
     * VM given that address (the broker freed it when the delete was
     * recorded) waits for the destroy instead of failing on the clash. */
    s_spec_t gone, heir;
    s_spec(&gone, 60, "process", "stubborn", TTFLEET__VM_STATE__VM_RUNNING);
    CHECK(s_run(fleet, 60, &gone, 1) == TTFLEET__STATUS__OK);
    spawn_sleep_ms(300); /* its trap is set: the destroy takes the grace */
    gone.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    s_submit(fleet, 61, &gone, 1);
    fleet_flush(fleet);
    s_spec(&heir, 61, "hollow", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    heir.spec.ip = gone.ip; /* same IP and MAC as VM 60 */
    heir.spec.mac = gone.mac;
    s_submit(fleet, 62, &heir, 1);
    for (int k = 0; k < 2; k++) {
        r = s_wait_pop(fleet);
        CHECK(r != NULL);
        if (r && r->op_id == 62 && r->status)
            printf("  op 62: %s\n", r->message);
        CHECK(r && r->status == TTFLEET__STATUS__OK);
        CHECK(r && r->op_id == (uint64_t)(61 + k)); /* the heir after the destroy */
        ttfleet__worker_reply__free_unpacked(r, NULL);
    }
    heir.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_run(fleet, 63, &heir, 1) == TTFLEET__STATUS__OK);

    /* A VM in its stop grace still holds its memory and cpu: a VM that fits
     * only without it is refused at once (NO_CAPACITY), not started over
     * the host's capacity; after the stop it fits. */
    s_spec_t big, late;
    s_spec(&big, 70, "process", "stubborn", TTFLEET__VM_STATE__VM_RUNNING);
    big.spec.mem_mib = 60000;
    CHECK(s_run(fleet, 70, &big, 1) == TTFLEET__STATUS__OK);
    spawn_sleep_ms(300); /* its trap is set: the stop takes the grace */
    big.spec.desired = TTFLEET__VM_STATE__VM_STOPPED;
    int64_t g0 = tt_mono_ms();
    s_submit(fleet, 71, &big, 1);
    fleet_flush(fleet);
    s_spec(&late, 71, "hollow", "polite", TTFLEET__VM_STATE__VM_RUNNING);
    late.spec.mem_mib = 30000;
    s_submit(fleet, 72, &late, 1);
    r = s_wait_pop(fleet);
    CHECK(r && r->op_id == 72 && r->status == TTFLEET__STATUS__NO_CAPACITY &&
          strstr(r->message, "mem"));
    CHECK(tt_mono_ms() - g0 < GRACE_MS); /* refused during the grace, not after it */
    if (r)
        ttfleet__worker_reply__free_unpacked(r, NULL);
    r = s_wait_pop(fleet);
    CHECK(r && r->op_id == 71 && r->status == TTFLEET__STATUS__OK);
    if (r)
        ttfleet__worker_reply__free_unpacked(r, NULL);
    CHECK(s_run(fleet, 73, &late, 1) == TTFLEET__STATUS__OK);
    big.spec.desired = late.spec.desired = TTFLEET__VM_STATE__VM_ABSENT;
    CHECK(s_run(fleet, 74, &big, 1) == TTFLEET__STATUS__OK);
    CHECK(s_run(fleet, 75, &late, 1) == TTFLEET__STATUS__OK);
    fleet_destroy(&fleet);

    engine_ctx_t ctx = {.state_dir = st_dir, .images_dir = images, .stop_timeout_ms = GRACE_MS};
    s_test_spawn_lock(&ctx);
    return s_report("unit.worker.ops");
}
