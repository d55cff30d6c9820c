/*
 * fleet: the converge logic. See fleet.h for the picture.
 *
 * One VmSpec is applied by s_converge(): validate, look up the VM, check
 * what may not change, run the resource check if the VM is about to hold
 * cpu and memory it does not hold now, then walk the state machine
 *
 *     (none) -> STOPPED -> RUNNING <-> PAUSED
 *                 ^  DEAD --'  |         |
 *                 '------------'---------'      any -> ABSENT (destroy)
 *
 * with the engine doing the work. Every change of a VM is written to its
 * row in the same transaction as the rest of the command; the reply is
 * packed after the commit. If a commit fails, the table (which follows
 * reality, not the database) is written out whole on the next tick.
 *
 * The table is an array indexed by vm_id (65535 pointers): lookups are
 * direct, and a scan for the resource sums costs microseconds.
 */
#define _GNU_SOURCE
#include "fleet.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "guestop.h"
#include "images.h"
#include "pull.h"
#include "ttblob.h"
#include "jobs.h"
#include "proc.h"
#include "snapbuild.h"
#include "snapops.h"
#include "seed.h"
#include "vmready.h"
#include "spawn.h"
#include "suspend.h"
#include "ttcrash.h"
#include "ttguest.h"
#include "vmdb.h"
#include "wire.h"

#define S_MSG_LEN 256
#define S_POLL_MS 50        /* how often a VM being stopped is looked at */
#define S_KILL_WAIT_MS 2000 /* after SIGKILL, before the blocking stop says why */
#define S_JOB_POLL_MS 5     /* how often the loop looks for finished engine jobs */
#define S_JOB_THREADS 4     /* engine calls that run at once (different VMs) */
#define S_PENDING (-100)    /* s_converge: an engine job carries on with the spec */

/* Where one VM of an op is. */
enum { S_TODO = 0, S_STOPPING, S_KILLING, S_WAITING, S_PULLING, S_DONE };

typedef struct {
    int phase;
    int64_t kill_deadline_ms; /* S_KILLING: monotonic */
    int status, state;        /* outcome, once S_DONE */
    char msg[S_MSG_LEN];
    char env[VM_ENV_MAX]; /* the VM's env and lease for the reply */
    int64_t expires_at;
    uint64_t pull_ticket; /* S_PULLING: the image's round (pull.h) */
    bool pulled;          /* its image is materialized and verified */
    bool pull_held;       /* ... and held for the spec until it is done (no eviction
                             between the round's end and the VM's own hold) */
} s_vmop_t;

/* One command in flight (or a destroy the expiry check made). */
typedef struct s_op_s {
    Ttfleet__WorkerCommand *cmd; /* owned */
    bool internal;               /* expiry: an event, no reply */
    bool started;
    bool persist_failed; /* a worker.db write of this op failed (rolled back alone) */
    size_t left;  /* specs not done */
    s_vmop_t *vs; /* [cmd->n_vms] */
    struct s_op_s *next;
} s_op_t;

typedef struct {
    uint32_t vm_id;
    int64_t expires_at;
    char env[VM_ENV_MAX];
} s_expired_t;

struct fleet_t {
    fleet_config_t cfg;
    engine_ctx_t ctx;
    vmdb_t *db;
    net_t *net;
    images_t *images;
    pull_t *pull;      /* catalog images (issue 12), NULL without --image-cache */
    snapops_t *snap;   /* memory-snapshot templates (snapops.h), NULL without qemu */
    zhashx_t *tmpl_of; /* "vm_id" -> the key of the template the VM was cloned from */
    zhashx_t *restore; /* "vm_id" -> the key a VM being made is to be restored from */
    snapbuild_t *build; /* makes templates (image prepare), NULL without snap */
    vm_t **table;      /* [TT_VMID_MAX + 1] */
    size_t count;
    bool dirty;      /* a commit failed: rewrite every row */
    bool net_resync; /* an exact network change failed: rebuild it whole */
    bool in_tx;      /* a worker.db transaction is open (s_tx) */
    s_op_t *ops;     /* in flight, in arrival order */
    s_op_t **tail;
    size_t n_ops;
    s_op_t *done; /* finished, waiting for the commit */
    s_op_t **done_tail;
    s_op_t **owner; /* [TT_VMID_MAX + 1]: the started op that holds a VM id */
    uint16_t *queued; /* [TT_VMID_MAX + 1]: specs of unfinished ops naming a VM id */
    jobs_t *jobs;     /* the engine calls that may block (S_WAITING) */
    guestop_t *gop;   /* exec and copy (guestop.h): its own threads, no op */
    s_op_t *cur_op;   /* the op whose spec is being applied (s_put blames it) */
    size_t cur_i;
    bool rewrite;     /* a row write was rolled back: rewrite every row next tick */
    char restore_dir[1024]; /* s_snap_take -> s_ejob_submit: the template of an S_J_RESTORE */
    uint32_t *mark; /* [TT_VMID_MAX + 1]: scheduling pass that saw it wanted */
    uint32_t gen;
    zlist_t *out;         /* packed replies ready to send */
    vmready_t *rd;        /* readiness per VM (vmready.h) */
    s_expired_t *expired; /* expiry destroys committed, for the next event */
    size_t n_expired, cap_expired;
    uint64_t term;  /* highest broker Raft term seen (worker.db meta broker_term) */
    size_t n_stale; /* commands refused for an older term (fleet_stale) */
};

/* Memory-snapshot templates (the section at the end). */
static int s_snap_open(fleet_t *self, char *err, size_t errlen);
static void s_snap_close(fleet_t *self);
static void s_snap_vm_loaded(fleet_t *self, uint32_t vm_id);
static void s_snap_vm_gone(fleet_t *self, uint32_t vm_id);
static zframe_t *s_snap_event(fleet_t *self);
static bool s_snap_take(fleet_t *self, const vm_t *vm);
static int s_snap_choose(fleet_t *self, const Ttfleet__VmSpec *spec, char *msg);
static bool s_snap_prepare(fleet_t *self, Ttfleet__WorkerCommand *cmd);

/* A list of VmActual being built for a reply or an event. */
typedef struct {
    Ttfleet__VmActual *items;
    Ttfleet__VmActual **ptrs;
    char (*msgs)[S_MSG_LEN];
    size_t n, cap;
    const vmready_t *rd; /* readiness to fill in, if set */
    zhashx_t *tmpl_of;   /* the fleet's clones (boot kind), if set */
} s_actuals_t;

static int s_actuals_init(s_actuals_t *a, size_t cap)
{
    memset(a, 0, sizeof *a);
    if (cap == 0)
        cap = 1;
    a->items = calloc(cap, sizeof *a->items);
    a->ptrs = calloc(cap, sizeof *a->ptrs);
    a->msgs = calloc(cap, sizeof *a->msgs);
    a->cap = cap;
    return a->items && a->ptrs && a->msgs ? 0 : -1;
}

static void s_actuals_free(s_actuals_t *a)
{
    free(a->items);
    free(a->ptrs);
    free(a->msgs);
    memset(a, 0, sizeof *a);
}

/* Append one entry (cap is sized by the caller); returns its message
 * buffer. env must outlive the packing. */
static char *s_actuals_add(s_actuals_t *a, uint32_t vm_id, int state, const char *env,
                           int64_t expires_at)
{
    Ttfleet__VmActual init = TTFLEET__VM_ACTUAL__INIT;
    Ttfleet__VmActual *it = &a->items[a->n];
    *it = init;
    it->vm_id = vm_id;
    it->state = (Ttfleet__VmState)state;
    it->env = (char *)(env ? env : "");
    it->expires_at = expires_at;
    a->msgs[a->n][0] = 0;
    it->message = a->msgs[a->n];
    a->ptrs[a->n] = it;
    vmready_fill(a->rd, vm_id, it);
    if (a->rd && state != TTFLEET__VM_STATE__VM_ABSENT) { /* a reply, READY or a tick */
        char id[16];
        snprintf(id, sizeof id, "%u", vm_id);
        it->boot = (char *)(a->tmpl_of && zhashx_lookup(a->tmpl_of, id) ? "snapshot" : "cold");
    }
    return a->msgs[a->n++];
}

static const engine_t *s_engine(const vm_t *vm)
{
    return engine_find(vm->engine);
}

static bool s_engine_enabled(const fleet_t *self, const char *name)
{
    for (int i = 0; i < self->cfg.n_engines; i++)
        if (strcmp(self->cfg.engines[i], name) == 0)
            return engine_find(name) != NULL;
    return false;
}

/* Sum of what the VMs hold, leaving out skip_id. */
static void s_usage(const fleet_t *self, uint32_t skip_id, res_t *used)
{
    memset(used, 0, sizeof *used);
    if (!self->count)
        return;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX; id++) {
        const vm_t *vm = self->table[id];
        if (!vm || id == skip_id)
            continue;
        used->disk_mib += vm->disk_mib;
        if (vm_holds_cpu(vm)) {
            used->cpu += vm->cpu;
            used->mem_mib += vm->mem_mib;
        }
    }
}

/* Open the transaction every change until the next commit goes into. */
static void s_tx(fleet_t *self)
{
    if (self->in_tx)
        return;
    if (vmdb_begin(self->db))
        self->dirty = true;
    else
        self->in_tx = true;
}

/* A row write that failed is rolled back alone (a savepoint around it):
 * the op being applied is told its changes were not persisted, the rest
 * of the group commit goes ahead, and the next tick rewrites every row
 * from the table (which follows reality). */
static void s_write_failed(fleet_t *self, uint32_t vm_id)
{
    zsys_error("worker.db: write of vm %u failed: %s", vm_id, vmdb_errmsg(self->db));
    if (self->cur_op)
        self->cur_op->persist_failed = true;
    self->rewrite = true;
}

static void s_put(fleet_t *self, const vm_t *vm)
{
    s_tx(self);
    if (!self->in_tx)
        return; /* dirty: rewritten next tick */
    if (vmdb_savepoint(self->db) || vmdb_put(self->db, vm)) {
        s_write_failed(self, vm->vm_id);
        vmdb_rollback_to(self->db);
    } else if (vmdb_release(self->db)) {
        self->dirty = true;
    }
}

/* If the VM should hold a process and has none, it is DEAD now.
 * True if that changed its state. */
static bool s_refresh(fleet_t *self, vm_t *vm)
{
    const engine_t *eng = s_engine(vm);
    if (!vm_holds_cpu(vm) || (eng && eng->is_alive(&self->ctx, vm)))
        return false;
    zsys_warning("vm %u (%s): process %d is gone, state dead", vm->vm_id, vm->env, (int)vm->pid);
    vm->state = TTFLEET__VM_STATE__VM_DEAD;
    vm->pid = 0;
    vm->start_time = 0;
    s_put(self, vm);
    return true;
}

static void s_from_spec(vm_t *vm, const Ttfleet__VmSpec *spec)
{
    vm->vm_id = spec->vm_id;
    snprintf(vm->env, sizeof vm->env, "%s", spec->env);
    snprintf(vm->image, sizeof vm->image, "%s", spec->image);
    snprintf(vm->engine, sizeof vm->engine, "%s", spec->engine);
    snprintf(vm->image_digest, sizeof vm->image_digest, "%s",
             spec->image_digest && tt_digest_valid(spec->image_digest) ? spec->image_digest : "");
    vm->cpu = spec->cpu;
    vm->mem_mib = spec->mem_mib;
    vm->disk_mib = spec->disk_mib;
    snprintf(vm->ip, sizeof vm->ip, "%s", spec->ip);
    snprintf(vm->mac, sizeof vm->mac, "%s", spec->mac);
    vm->n_ports = (uint32_t)spec->n_ports;
    for (size_t i = 0; i < spec->n_ports; i++) {
        vm->ports[i].guest = spec->ports[i]->guest;
        vm->ports[i].public_port = spec->ports[i]->public_;
    }
    vm->deny_outgoing = spec->deny_outgoing;
    vm->expires_at = spec->expires_at;
}

/* Fields that name what the VM is: changing them means another VM. */
static int s_immutable_ok(const vm_t *vm, const Ttfleet__VmSpec *spec, char *msg)
{
    const char *digest = spec->image_digest ? spec->image_digest : "";
    const char *what = strcmp(vm->image, spec->image)     ? "image"
                       : strcmp(vm->image_digest, digest) ? "image digest"
                       : strcmp(vm->engine, spec->engine) ? "engine"
                       : strcmp(vm->env, spec->env)       ? "env"
                       : strcasecmp(vm->ip, spec->ip)     ? "ip"
                       : strcasecmp(vm->mac, spec->mac)   ? "mac"
                                                          : NULL;
    if (!what)
        return 0;
    snprintf(msg, S_MSG_LEN, "vm %u exists with another %s: destroy it first", vm->vm_id, what);
    return -1;
}

/* Another VM that holds spec's ip or mac (the schema would refuse). */
static const vm_t *s_address_clash(const fleet_t *self, const Ttfleet__VmSpec *spec)
{
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++) {
        const vm_t *vm = self->table[id];
        if (vm && id != spec->vm_id &&
            (strcasecmp(vm->ip, spec->ip) == 0 || strcasecmp(vm->mac, spec->mac) == 0))
            return vm;
    }
    return NULL;
}

static int s_check(fleet_t *self, uint32_t vm_id, const res_t *want, char *msg)
{
    res_t used;
    s_usage(self, vm_id, &used);
    char why[200];
    if (res_check(&self->cfg.cap, &used, want, why, sizeof why) == 0)
        return 0;
    snprintf(msg, S_MSG_LEN, "host %s: %s", self->cfg.host_id, why);
    return -1;
}

static void s_remove(fleet_t *self, vm_t *vm)
{
    s_tx(self);
    if (self->in_tx) {
        if (vmdb_savepoint(self->db) || vmdb_delete(self->db, vm->vm_id)) {
            s_write_failed(self, vm->vm_id);
            vmdb_rollback_to(self->db);
        } else if (vmdb_release(self->db)) {
            self->dirty = true;
        }
    }
    if (vm->image_digest[0] && self->pull)
        pull_release(self->pull, vm->image_digest);
    s_snap_vm_gone(self, vm->vm_id);
    self->table[vm->vm_id] = NULL;
    self->count--;
    if (self->gop)
        guestop_vm_gone(self->gop, vm->vm_id);
    free(vm);
}

/* Destroy a VM and its row. 0 / -1 (then the VM is kept as it is). */
static int s_destroy_vm(fleet_t *self, vm_t *vm, char *msg)
{
    const engine_t *eng = s_engine(vm);
    char err[200] = "";
    if (!eng) {
        snprintf(msg, S_MSG_LEN, "vm %u: unknown engine '%s'", vm->vm_id, vm->engine);
        return -1;
    }
    if (eng->destroy(&self->ctx, vm, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "destroy vm %u: %s", vm->vm_id, err);
        s_put(self, vm); /* pid may have changed */
        return -1;
    }
    if (net_vm_remove(self->net, vm, err, sizeof err)) {
        zsys_warning("vm %u: network cleanup: %s; rebuilding the network state", vm->vm_id, err);
        self->net_resync = true;
    }
    zsys_info("vm %u (%s): destroyed", vm->vm_id, vm->env);
    s_remove(self, vm);
    return 0;
}

/* ---- engine calls off the loop ---- */

/* What an engine job does, in this order; it stops at the first step
 * that fails. */
enum {
    S_J_PREPARE = 1,
    S_J_START = 2,
    S_J_PAUSE = 4,
    S_J_RESUME = 8,
    S_J_RESTORE = 16,
    S_J_SUSPEND = 32, /* RAM and device state to disk, QEMU ends (suspend.h) */
    S_J_WAKE = 64,    /* a suspended VM back from its file */
};

/* One engine job: a copy of the VM the pool thread works on, and where
 * its result goes (spec i of op, which holds the VM until it is done). */
typedef struct {
    const engine_t *eng;
    const engine_ctx_t *ctx; /* read-only, outlives the pool */
    vm_t vm;
    int steps;
    int failed; /* the step that failed, 0 if none */
    char err[200];
    s_op_t *op;
    size_t i;
    bool created; /* a new VM: not in worker.db or the network yet */
    int desired;
    char tmpl_dir[1024]; /* S_J_RESTORE: the template */
    int64_t restore_ms;  /* S_J_RESTORE: begin -> the clone runs */
    int64_t snap_ms;     /* S_J_SUSPEND, S_J_WAKE: the operation's time */
} s_ejob_t;

static int s_restore_run(s_ejob_t *j);

/* Runs on a pool thread: engine calls only, on the job's own copy. */
static void s_ejob_run(void *arg)
{
    s_ejob_t *j = arg;
    static const int order[] = {S_J_PREPARE, S_J_START,  S_J_RESTORE, S_J_WAKE,
                                S_J_PAUSE,   S_J_RESUME, S_J_SUSPEND};
    for (size_t k = 0; k < sizeof order / sizeof *order; k++) {
        if (!(j->steps & order[k]))
            continue;
        if (order[k] == S_J_SUSPEND || order[k] == S_J_WAKE) {
            if (suspend_run(j->eng, j->ctx, &j->vm, order[k] == S_J_WAKE, &j->snap_ms, j->err,
                            sizeof j->err)) {
                j->failed = order[k];
                return;
            }
            continue;
        }
        if (order[k] == S_J_RESTORE) {
            if (s_restore_run(j)) {
                j->failed = S_J_RESTORE;
                return;
            }
            continue;
        }
        int rc = order[k] == S_J_PREPARE ? j->eng->prepare_disk(j->ctx, &j->vm, j->err, sizeof j->err)
                 : order[k] == S_J_START ? j->eng->start(j->ctx, &j->vm, j->err, sizeof j->err)
                 : order[k] == S_J_PAUSE ? j->eng->pause(j->ctx, &j->vm, j->err, sizeof j->err)
                                         : j->eng->resume(j->ctx, &j->vm, j->err, sizeof j->err);
        if (rc) {
            j->failed = order[k];
            return;
        }
    }
}

/* Hand steps for vm to the pool, for the spec being applied. S_PENDING,
 * or 0 when it cannot (no pool, no op: the caller runs them itself). */
static int s_ejob_submit(fleet_t *self, const vm_t *vm, int steps, bool created, int desired)
{
    if (!self->jobs || !self->cur_op)
        return 0;
    s_ejob_t *j = calloc(1, sizeof *j);
    if (!j)
        return 0;
    j->eng = s_engine(vm);
    j->ctx = &self->ctx;
    j->vm = *vm;
    j->steps = steps;
    j->op = self->cur_op;
    j->i = self->cur_i;
    j->created = created;
    j->desired = desired;
    if (steps & S_J_RESTORE)
        snprintf(j->tmpl_dir, sizeof j->tmpl_dir, "%s", self->restore_dir);
    if (jobs_submit(self->jobs, s_ejob_run, j)) {
        free(j);
        return 0;
    }
    self->cur_op->vs[self->cur_i].phase = S_WAITING;
    return S_PENDING;
}

#define S_GO_ON (-101) /* s_suspend_transition: not a suspend or wake, s_transition goes on */

/* The steps of s_transition into or out of VM_SUSPENDED: a running or
 * paused VM is suspended (S_J_SUSPEND), a suspended VM is woken
 * (S_J_WAKE, after the capacity check, as a start) or stopped (its saved
 * memory dropped). A status, S_PENDING, or S_GO_ON for any other step. */
static int s_suspend_transition(fleet_t *self, vm_t *vm, int desired, bool checked, char *msg)
{
    const engine_t *eng = s_engine(vm);
    char err[200] = "";
    int from = vm->state;
    if (desired == TTFLEET__VM_STATE__VM_SUSPENDED) {
        if (from != TTFLEET__VM_STATE__VM_RUNNING && from != TTFLEET__VM_STATE__VM_PAUSED) {
            snprintf(msg, S_MSG_LEN, "suspend vm %u: it is %s, not running", vm->vm_id,
                     tt_vm_state_name(from));
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        if (suspend_check(eng, &self->ctx, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "suspend vm %u: %s", vm->vm_id, err);
            return TTFLEET__STATUS__BAD_REQUEST;
        }
        if (self->gop)
            guestop_vm_gone(self->gop, vm->vm_id); /* its execs end with its process */
        if (s_ejob_submit(self, vm, S_J_SUSPEND, false, desired))
            return S_PENDING;
        int64_t ms;
        if (suspend_run(eng, &self->ctx, vm, false, &ms, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "suspend vm %u: %s", vm->vm_id, err);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        vm->state = TTFLEET__VM_STATE__VM_SUSPENDED;
        s_put(self, vm);
        return TTFLEET__STATUS__OK;
    }
    if (from != TTFLEET__VM_STATE__VM_SUSPENDED)
        return S_GO_ON;
    if (desired == TTFLEET__VM_STATE__VM_STOPPED) {
        suspend_discard(&self->ctx, vm);
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
        s_put(self, vm);
        zsys_info("vm %u (%s): suspended -> stopped, its saved memory dropped", vm->vm_id, vm->env);
        return TTFLEET__STATUS__OK;
    }
    /* RUNNING or PAUSED: about to hold cpu and memory it does not hold now */
    res_t want = {vm->cpu, vm->mem_mib, 0};
    if (!checked && s_check(self, vm->vm_id, &want, msg))
        return TTFLEET__STATUS__NO_CAPACITY;
    if (suspend_check(eng, &self->ctx, err, sizeof err) ||
        net_vm_before_start(self->net, vm, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "resume vm %u: %s", vm->vm_id, err);
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    if (s_ejob_submit(self, vm,
                      S_J_WAKE | (desired == TTFLEET__VM_STATE__VM_PAUSED ? S_J_PAUSE : 0), false,
                      desired))
        return S_PENDING;
    int64_t ms;
    if (suspend_run(eng, &self->ctx, vm, true, &ms, err, sizeof err) ||
        net_vm_after_start(self->net, vm, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "resume vm %u: %s", vm->vm_id, err);
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    vm->state = TTFLEET__VM_STATE__VM_RUNNING;
    s_put(self, vm);
    return desired == TTFLEET__VM_STATE__VM_RUNNING ? TTFLEET__STATUS__OK : S_GO_ON;
}

/* Move vm (which exists, spec already copied in) to the desired state.
 * Returns a status; msg says why on failure. */
static int s_transition(fleet_t *self, vm_t *vm, int desired, bool checked, char *msg)
{
    const engine_t *eng = s_engine(vm);
    char err[200] = "";
    int from = vm->state;
    if (from == desired)
        return TTFLEET__STATUS__OK;
    int sst = s_suspend_transition(self, vm, desired, checked, msg);
    if (sst != S_GO_ON)
        return sst;
    from = vm->state;

    if (desired == TTFLEET__VM_STATE__VM_STOPPED) {
        if (eng->stop(&self->ctx, vm, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "stop vm %u: %s", vm->vm_id, err);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
        s_put(self, vm);
        return TTFLEET__STATUS__OK;
    }

    if (from == TTFLEET__VM_STATE__VM_PAUSED && desired == TTFLEET__VM_STATE__VM_RUNNING) {
        if (s_ejob_submit(self, vm, S_J_RESUME, false, desired))
            return S_PENDING;
        if (eng->resume(&self->ctx, vm, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "resume vm %u: %s", vm->vm_id, err);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        vm->state = TTFLEET__VM_STATE__VM_RUNNING;
        s_put(self, vm);
        return TTFLEET__STATUS__OK;
    }

    if (from == TTFLEET__VM_STATE__VM_STOPPED || from == TTFLEET__VM_STATE__VM_DEAD) {
        /* About to hold cpu and memory it does not hold now. */
        res_t want = {vm->cpu, vm->mem_mib, 0};
        if (!checked && s_check(self, vm->vm_id, &want, msg))
            return TTFLEET__STATUS__NO_CAPACITY;
        if (from == TTFLEET__VM_STATE__VM_DEAD)
            eng->stop(&self->ctx, vm, err, sizeof err); /* clear leftovers */
        if (s_snap_take(self, vm)) {
            if (net_vm_before_start(self->net, vm, err, sizeof err) == 0 &&
                s_ejob_submit(self, vm,
                              S_J_RESTORE |
                                  (desired == TTFLEET__VM_STATE__VM_PAUSED ? S_J_PAUSE : 0),
                              false, desired))
                return S_PENDING; /* from its template: s_ejob_done carries on */
            s_snap_vm_gone(self, vm->vm_id); /* cold, then */
            err[0] = '\0';
        }
        if (net_vm_before_start(self->net, vm, err, sizeof err) == 0 &&
            s_ejob_submit(self, vm,
                          S_J_PREPARE | S_J_START |
                              (desired == TTFLEET__VM_STATE__VM_PAUSED ? S_J_PAUSE : 0),
                          false, desired))
            return S_PENDING; /* s_ejob_done carries on */
        if (err[0] || eng->prepare_disk(&self->ctx, vm, err, sizeof err) ||
            eng->start(&self->ctx, vm, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "start vm %u: %s", vm->vm_id, err);
            vm->state = TTFLEET__VM_STATE__VM_STOPPED;
            s_put(self, vm);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        if (net_vm_after_start(self->net, vm, err, sizeof err)) {
            char e2[200];
            snprintf(msg, S_MSG_LEN, "network of vm %u: %s", vm->vm_id, err);
            eng->stop(&self->ctx, vm, e2, sizeof e2);
            vm->state = TTFLEET__VM_STATE__VM_STOPPED;
            s_put(self, vm);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        tt_crash_point("worker.after_spawn"); /* started, not yet in worker.db */
        vm->state = TTFLEET__VM_STATE__VM_RUNNING;
        s_put(self, vm);
        zsys_info("vm %u (%s): running, pid %d", vm->vm_id, vm->env, (int)vm->pid);
        if (desired == TTFLEET__VM_STATE__VM_RUNNING)
            return TTFLEET__STATUS__OK;
    }

    /* RUNNING -> PAUSED */
    if (s_ejob_submit(self, vm, S_J_PAUSE, false, desired))
        return S_PENDING;
    if (eng->pause(&self->ctx, vm, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "pause vm %u: %s", vm->vm_id, err);
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    vm->state = TTFLEET__VM_STATE__VM_PAUSED;
    s_put(self, vm);
    return TTFLEET__STATUS__OK;
}

/* Every VM held, for a whole rebuild of the network state. */
static int s_net_sync(fleet_t *self)
{
    vm_t **vms = calloc(self->count + 1, sizeof *vms);
    if (!vms)
        return -1;
    size_t n = 0;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && n < self->count; id++)
        if (self->table[id])
            vms[n++] = self->table[id];
    char err[300];
    int rc = net_reconcile(self->net, vms, n, err, sizeof err);
    if (rc)
        zsys_error("network reconcile: %s", err);
    else
        self->net_resync = false;
    free(vms);
    return rc;
}

/* Ports or deny-outgoing of a VM changed: apply it live, exactly. */
static void s_net_changed(fleet_t *self, const vm_t *old, vm_t *vm)
{
    bool ports = old->n_ports != vm->n_ports ||
                 memcmp(old->ports, vm->ports, vm->n_ports * sizeof *vm->ports) != 0;
    if (!ports && old->deny_outgoing == vm->deny_outgoing)
        return;
    char err[300];
    if (net_vm_update(self->net, old, vm, err, sizeof err)) {
        zsys_warning("vm %u: network update: %s; rebuilding the network state", vm->vm_id, err);
        s_net_sync(self);
    }
    const engine_t *eng = s_engine(vm);
    if (eng && eng->update && vm_holds_cpu(vm) && eng->update(&self->ctx, old, vm, err, sizeof err))
        zsys_warning("vm %u: live update: %s", vm->vm_id, err);
    zsys_info("vm %u (%s): ports/outgoing updated live", vm->vm_id, vm->env);
}

/* A new VM's disk is ready: record it and give it its network. */
static void s_created(fleet_t *self, vm_t *vm)
{
    char err[300];
    s_put(self, vm);
    if (vm->image_digest[0] && self->pull && pull_acquire(self->pull, vm->image_digest))
        zsys_warning("vm %u: image %s is not complete in the cache", vm->vm_id, vm->image_digest);
    if (net_vm_add(self->net, vm, err, sizeof err)) {
        zsys_warning("vm %u: network: %s; rebuilding the network state", vm->vm_id, err);
        self->net_resync = true;
    }
    zsys_info("vm %u (%s): created (%s, %s)", vm->vm_id, vm->env, vm->engine, vm->image);
}

/* Apply one spec. Returns a status (S_PENDING: an engine job carries it
 * on, see s_ejob_done); fills *state with the VM's actual
 * state after it and msg on failure. */
/* Keep the spec's bootstrap inputs (issue 11) in the VM's directory before
 * it is prepared or started, so the engine's seed is built from them on
 * every start. 0, or -1 with the reason in msg (nothing written). */
static int s_guest_save(fleet_t *self, const vm_t *vm, const Ttfleet__VmSpec *spec, char *msg)
{
    char err[200], dir[4096];
    bool any = spec->n_ssh_keys || spec->user_data.len;
    if (any && engine_bootstrap_check(engine_find(spec->engine), err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "vm %u: %s", spec->vm_id, err);
        return -1;
    }
    if (!any && !vm)
        return 0; /* a new VM without inputs: nothing to keep or remove */
    if (engine_vm_path(&self->ctx, spec->vm_id, NULL, dir, sizeof dir)) {
        snprintf(msg, S_MSG_LEN, "vm %u: state path too long", spec->vm_id);
        return -1;
    }
    char *slash = strrchr(dir, '/');
    *slash = '\0';
    int rc = mkdir(dir, 0700); /* <state>/vms */
    *slash = '/';
    if ((rc && errno != EEXIST) || (mkdir(dir, 0700) && errno != EEXIST)) {
        snprintf(msg, S_MSG_LEN, "vm %u: cannot make its directory: %s", spec->vm_id,
                 strerror(errno));
        return -1;
    }
    if (seed_inputs_save(dir, (const char *const *)spec->ssh_keys, spec->n_ssh_keys,
                         (const char *)spec->user_data.data, spec->user_data.len, err,
                         sizeof err)) {
        snprintf(msg, S_MSG_LEN, "vm %u: bootstrap inputs: %s", spec->vm_id, err);
        return -1;
    }
    return 0;
}

static int s_ready_step(fleet_t *self, const vm_t *vm);

/* A new VM of a catalog image: its image must be fetched (or its cached
 * copy verified) and materialized before the VM is made. The first pass
 * joins or starts the image's round and parks the spec (S_PULLING, see
 * s_pull_poll); the pass after a READY round goes on. 0 = go on,
 * S_PENDING, or a status with msg. */
static int s_pull_gate(fleet_t *self, const Ttfleet__VmSpec *spec, char *msg)
{
    char err[300];
    if (!self->pull) {
        snprintf(msg, S_MSG_LEN, "host %s has no image cache (ttworker --image-cache): cannot run "
                 "catalog image '%s'", self->cfg.host_id, spec->image);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    if (!(engine_caps_of(spec->engine) & TT_CAP_CATALOG)) {
        snprintf(msg, S_MSG_LEN, "engine '%s' does not run catalog images", spec->engine);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    s_vmop_t *v = self->cur_op ? &self->cur_op->vs[self->cur_i] : NULL;
    if (v && v->pulled)
        return 0;
    uint64_t ticket;
    if (pull_want(self->pull, spec, &ticket, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "vm %u: image '%s' on host %s: %.150s", spec->vm_id,
                 spec->image, self->cfg.host_id, err);
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    if (!v) { /* the blocking form (tests): no op to park */
        snprintf(msg, S_MSG_LEN, "vm %u: image '%s' is being fetched", spec->vm_id, spec->image);
        return TTFLEET__STATUS__UNAVAILABLE;
    }
    v->phase = S_PULLING;
    v->pull_ticket = ticket;
    return S_PENDING;
}

static int s_converge(fleet_t *self, const Ttfleet__VmSpec *spec, int *state, char *msg)
{
    char err[200];
    vm_t *vm = NULL;
    *state = TTFLEET__VM_STATE__VM_ABSENT;
    if (spec->vm_id >= TT_VMID_MIN && spec->vm_id <= TT_VMID_MAX) {
        vm = self->table[spec->vm_id];
        if (vm) {
            s_refresh(self, vm);
            *state = vm->state;
        }
    }
    if (wire_spec_validate(spec, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "bad spec: %s", err);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    if (spec->desired == TTFLEET__VM_STATE__VM_ABSENT) {
        if (!vm)
            return TTFLEET__STATUS__OK;
        if (s_destroy_vm(self, vm, msg))
            return TTFLEET__STATUS__WORKER_FAILED;
        vmready_forget(self->rd, spec->vm_id);
        *state = TTFLEET__VM_STATE__VM_ABSENT;
        return TTFLEET__STATUS__OK;
    }
    if (!s_engine_enabled(self, spec->engine)) {
        snprintf(msg, S_MSG_LEN, "engine '%s' is not offered by host %s", spec->engine,
                 self->cfg.host_id);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    bool catalog = spec->image_digest && *spec->image_digest;
    if (catalog && !vm) {
        int st = s_pull_gate(self, spec, msg);
        if (st)
            return st;
    } else if (!catalog && !images_has(self->images, spec->image)) {
        images_rescan(self->images);
        if (!images_has(self->images, spec->image)) {
            snprintf(msg, S_MSG_LEN, "image '%s' is not present on host %s", spec->image,
                     self->cfg.host_id);
            return TTFLEET__STATUS__BAD_REQUEST;
        }
    }
    if (s_guest_save(self, vm, spec, msg))
        return TTFLEET__STATUS__BAD_REQUEST;
    vmready_set_spec(self->rd, spec->vm_id, spec->ready);
    bool wants_cpu = spec->desired == TTFLEET__VM_STATE__VM_RUNNING ||
                     spec->desired == TTFLEET__VM_STATE__VM_PAUSED;
    bool checked = false;
    if (vm) {
        if (s_immutable_ok(vm, spec, msg))
            return TTFLEET__STATUS__BAD_REQUEST;
        bool hw =
            vm->cpu != spec->cpu || vm->mem_mib != spec->mem_mib || vm->disk_mib != spec->disk_mib;
        if (hw && vm_holds_cpu(vm)) {
            snprintf(msg, S_MSG_LEN, "vm %u: cpu, memory and disk change only while stopped",
                     vm->vm_id);
            return TTFLEET__STATUS__BAD_REQUEST;
        }
        if (spec->disk_mib > vm->disk_mib) {
            res_t want = {0, 0, spec->disk_mib};
            if (s_check(self, vm->vm_id, &want, msg))
                return TTFLEET__STATUS__NO_CAPACITY;
        }
        vm_t old = *vm;
        s_from_spec(vm, spec);
        s_put(self, vm);
        s_net_changed(self, &old, vm);
    } else {
        const vm_t *other = s_address_clash(self, spec);
        if (other) {
            snprintf(msg, S_MSG_LEN, "ip %s or mac %s is held by vm %u on host %s", spec->ip,
                     spec->mac, other->vm_id, self->cfg.host_id);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        res_t want = {wants_cpu ? spec->cpu : 0, wants_cpu ? spec->mem_mib : 0, spec->disk_mib};
        if (s_check(self, spec->vm_id, &want, msg))
            return TTFLEET__STATUS__NO_CAPACITY;
        checked = true;
        int sst = s_snap_choose(self, spec, msg);
        if (sst)
            return sst;
        vm = calloc(1, sizeof *vm);
        if (!vm) {
            snprintf(msg, S_MSG_LEN, "out of memory");
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        s_from_spec(vm, spec);
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
        const engine_t *eng = s_engine(vm);
        if (self->jobs && self->cur_op) {
            /* held by the op while the pool prepares its disk (it counts
             * in the resource sums already); s_ejob_done records it */
            self->table[vm->vm_id] = vm;
            self->count++;
            if (s_ejob_submit(self, vm, S_J_PREPARE, true, spec->desired))
                return S_PENDING;
            self->table[vm->vm_id] = NULL;
            self->count--;
        }
        if (eng->prepare_disk(&self->ctx, vm, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "prepare disk of vm %u: %s", vm->vm_id, err);
            free(vm);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        self->table[vm->vm_id] = vm;
        self->count++;
        s_created(self, vm);
    }
    int status = s_transition(self, vm, spec->desired, checked, msg);
    s_ready_step(self, vm); /* the reply carries ready (spec none) or its drop */
    *state = vm->state;
    return status;
}

/* Rewrite every row from the table, after a failed commit (no
 * transaction may be open). */
static void s_flush_all(fleet_t *self)
{
    if (vmdb_begin(self->db) || vmdb_clear(self->db))
        goto fail;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++)
        if (self->table[id] && vmdb_put(self->db, self->table[id]))
            goto fail;
    if (vmdb_set_term(self->db, self->term) || vmdb_commit(self->db))
        goto fail;
    self->dirty = false;
    self->rewrite = false;
    zsys_info("worker.db rewritten from memory after an earlier failure");
    return;
fail:
    vmdb_rollback(self->db);
    zsys_error("worker.db is still out of date: %s", vmdb_errmsg(self->db));
}

/* The crash point between two VMs of a command that moves them to desired. */
static const char *s_mid_point(int desired)
{
    switch (desired) {
    case TTFLEET__VM_STATE__VM_STOPPED:
        return "worker.mid_stop";
    case TTFLEET__VM_STATE__VM_PAUSED:
        return "worker.mid_pause";
    case TTFLEET__VM_STATE__VM_SUSPENDED:
        return "worker.mid_suspend";
    case TTFLEET__VM_STATE__VM_ABSENT:
        return "worker.mid_destroy";
    default:
        return "worker.mid_start";
    }
}

/* The last `max` bytes of a VM's console log (engines write it to
 * <state>/vms/<id>/console.log). The path comes from the VM id only, so
 * nothing from outside can point it elsewhere. */
static int s_console_tail(fleet_t *self, uint32_t vm_id, uint32_t max, uint8_t **out, size_t *got,
                          bool *truncated, char *err, size_t errlen)
{
    char path[4096];
    if (vm_id < TT_VMID_MIN || vm_id > TT_VMID_MAX || !self->table[vm_id]) {
        snprintf(err, errlen, "no VM %u on host %s", vm_id, self->cfg.host_id);
        return -1;
    }
    if (max == 0 || max > TT_CONSOLE_MAX)
        max = TT_CONSOLE_DEFAULT;
    if (engine_vm_path(&self->ctx, vm_id, "console.log", path, sizeof path)) {
        snprintf(err, errlen, "VM %u: console path too long", vm_id);
        return -1;
    }
    *out = malloc(max);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    *got = 0;
    *truncated = false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* nothing printed yet */
        snprintf(err, errlen, "open console of VM %u: %s", vm_id, strerror(errno));
        free(*out);
        *out = NULL;
        return -1;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)max ? size - (off_t)max : 0;
    *truncated = from > 0;
    while (from + (off_t)*got < size) {
        ssize_t n = pread(fd, *out + *got, max - *got, from + (off_t)*got);
        if (n <= 0)
            break;
        *got += (size_t)n;
    }
    close(fd);
    return 0;
}

/* ---- operations in flight ---- */

static bool s_in_range(uint32_t id)
{
    return id >= TT_VMID_MIN && id <= TT_VMID_MAX;
}

static s_op_t *s_op_new(Ttfleet__WorkerCommand *cmd, bool internal)
{
    size_t n = cmd->n_vms ? cmd->n_vms : 1;
    s_op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->cmd = cmd;
    op->internal = internal;
    op->left = cmd->n_vms;
    op->vs = calloc(n, sizeof *op->vs);
    if (!op->vs) {
        free(op);
        return NULL;
    }
    return op;
}

static void s_op_free(s_op_t **op_p)
{
    s_op_t *op = *op_p;
    if (!op)
        return;
    ttfleet__worker_command__free_unpacked(op->cmd, NULL);
    free(op->vs);
    free(op);
    *op_p = NULL;
}

/* Spec i of op is done: note its outcome and the VM as it is now. */
static void s_spec_done(fleet_t *self, s_op_t *op, size_t i, int status, int state, const char *msg)
{
    const Ttfleet__VmSpec *spec = op->cmd->vms[i];
    s_vmop_t *v = &op->vs[i];
    if (v->pull_held) {
        pull_release(self->pull, spec->image_digest);
        v->pull_held = false;
    }
    v->phase = S_DONE;
    v->status = status;
    v->state = state;
    snprintf(v->msg, sizeof v->msg, "%s", msg);
    const vm_t *vm = s_in_range(spec->vm_id) ? self->table[spec->vm_id] : NULL;
    if (vm) {
        s_ready_step(self, vm); /* the reply carries ready (spec none) or its drop */
        snprintf(v->env, sizeof v->env, "%s", vm->env);
        v->expires_at = vm->expires_at;
    } else if (!op->internal) {
        v->env[0] = 0; /* as the reply always said for a VM that is gone */
    }
    if (status != TTFLEET__STATUS__OK)
        zsys_warning("op %llu: vm %u: %s: %s", (unsigned long long)op->cmd->op_id, spec->vm_id,
                     tt_status_name(status), msg);
    op->left--;
    if (op->left) /* between two VMs of one command */
        tt_crash_point(s_mid_point(spec->desired));
}

/* Does spec stop a VM whose process runs, with an engine that can stop
 * without waiting? Then it is checked first (a spec that would be refused
 * must not stop anything): 1 = stop it on the timer, 0 = apply it now,
 * -1 = refused (*status, msg). */
static int s_wants_timed_stop(fleet_t *self, const Ttfleet__VmSpec *spec, int *status, char *msg)
{
    if (spec->desired != TTFLEET__VM_STATE__VM_STOPPED &&
        spec->desired != TTFLEET__VM_STATE__VM_ABSENT)
        return 0;
    vm_t *vm = s_in_range(spec->vm_id) ? self->table[spec->vm_id] : NULL;
    const engine_t *eng = vm ? s_engine(vm) : NULL;
    if (!eng || !eng->stop_begin || self->cfg.stop_timeout_ms <= 0 || !vm_holds_cpu(vm))
        return 0;
    if (s_refresh(self, vm)) /* its process is gone already */
        return 0;
    char err[200];
    if (wire_spec_validate(spec, err, sizeof err))
        return 0; /* s_converge says why */
    if (spec->desired == TTFLEET__VM_STATE__VM_STOPPED) {
        if (s_immutable_ok(vm, spec, msg)) {
            *status = TTFLEET__STATUS__BAD_REQUEST;
            return -1;
        }
        if (vm->cpu != spec->cpu || vm->mem_mib != spec->mem_mib ||
            vm->disk_mib != spec->disk_mib) {
            snprintf(msg, S_MSG_LEN, "vm %u: cpu, memory and disk change only while stopped",
                     vm->vm_id);
            *status = TTFLEET__STATUS__BAD_REQUEST;
            return -1;
        }
    }
    return 1;
}

/* Apply spec i now (no wait), or ask its VM to stop and leave it to the
 * timer. */
static void s_spec_begin(fleet_t *self, s_op_t *op, size_t i)
{
    const Ttfleet__VmSpec *spec = op->cmd->vms[i];
    char msg[S_MSG_LEN] = "";
    int status, state;
    for (size_t j = 0; j < i; j++)
        if (op->cmd->vms[j]->vm_id == spec->vm_id) {
            snprintf(msg, sizeof msg, "vm %u appears twice in one command", spec->vm_id);
            const vm_t *vm = s_in_range(spec->vm_id) ? self->table[spec->vm_id] : NULL;
            s_spec_done(self, op, i, TTFLEET__STATUS__BAD_REQUEST,
                        vm ? vm->state : TTFLEET__VM_STATE__VM_ABSENT, msg);
            return;
        }
    int timed = s_wants_timed_stop(self, spec, &status, msg);
    vm_t *vm = s_in_range(spec->vm_id) ? self->table[spec->vm_id] : NULL;
    if (timed >= 0 && vm && self->gop && vm_holds_cpu(vm) &&
        (spec->desired == TTFLEET__VM_STATE__VM_STOPPED ||
         spec->desired == TTFLEET__VM_STATE__VM_ABSENT))
        guestop_vm_gone(self->gop, vm->vm_id); /* its execs end with it: say why */
    if (timed < 0) {
        s_spec_done(self, op, i, status, vm->state, msg);
        return;
    }
    if (timed > 0) {
        s_engine(vm)->stop_begin(&self->ctx, vm);
        if (vm->stop_asked_ms) {
            op->vs[i].phase = S_STOPPING;
            return;
        }
    }
    self->cur_op = op;
    self->cur_i = i;
    status = s_converge(self, spec, &state, msg);
    self->cur_op = NULL;
    if (status != S_PENDING)
        s_spec_done(self, op, i, status, state, msg);
}

/* The VM of spec i is off (or past its kill deadline): the blocking stop
 * finds it gone, then the spec is applied as if it had been stopped. */
static void s_spec_stopped(fleet_t *self, s_op_t *op, size_t i)
{
    const Ttfleet__VmSpec *spec = op->cmd->vms[i];
    vm_t *vm = self->table[spec->vm_id];
    char err[200] = "", msg[S_MSG_LEN] = "";
    int state;
    if (s_engine(vm)->stop(&self->ctx, vm, err, sizeof err)) {
        snprintf(msg, sizeof msg, "stop vm %u: %s", vm->vm_id, err);
        s_put(self, vm);
        s_spec_done(self, op, i, TTFLEET__STATUS__WORKER_FAILED, vm->state, msg);
        return;
    }
    self->cur_op = op;
    self->cur_i = i;
    vm->state = TTFLEET__VM_STATE__VM_STOPPED;
    s_put(self, vm);
    int status = s_converge(self, spec, &state, msg);
    self->cur_op = NULL;
    if (status != S_PENDING)
        s_spec_done(self, op, i, status, state, msg);
}

/* The result of an S_J_SUSPEND or S_J_WAKE job on vm (already copied
 * back from the job): its state and a status, msg on failure. */
static int s_suspend_done(fleet_t *self, const s_ejob_t *j, vm_t *vm, char *msg)
{
    char err[200], e2[200];
    bool wake = j->steps & S_J_WAKE;
    if (j->failed & (S_J_SUSPEND | S_J_WAKE)) {
        snprintf(msg, S_MSG_LEN, "%s vm %u: %s", wake ? "resume" : "suspend", vm->vm_id, j->err);
        if (suspend_present(j->eng, &self->ctx, vm) && !j->eng->is_alive(&self->ctx, vm))
            vm->state = TTFLEET__VM_STATE__VM_SUSPENDED; /* its memory is in the file */
        else if (wake)
            vm->state = TTFLEET__VM_STATE__VM_STOPPED; /* no file, no process: disk kept */
        else if (!j->eng->is_alive(&self->ctx, vm))
            vm->state = TTFLEET__VM_STATE__VM_DEAD;
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    if (!wake) {
        vm->state = TTFLEET__VM_STATE__VM_SUSPENDED;
        zsys_info("vm %u (%s): suspended in %lld ms, its QEMU ended", vm->vm_id, vm->env,
                  (long long)j->snap_ms);
        return TTFLEET__STATUS__OK;
    }
    if (net_vm_after_start(self->net, vm, err, sizeof err)) {
        snprintf(msg, S_MSG_LEN, "network of vm %u: %s", vm->vm_id, err);
        j->eng->stop(&self->ctx, vm, e2, sizeof e2);
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    vm->state = TTFLEET__VM_STATE__VM_RUNNING;
    zsys_info("vm %u (%s): running, resumed from its suspend file in %lld ms, pid %d", vm->vm_id,
              vm->env, (long long)j->snap_ms, (int)vm->pid);
    return TTFLEET__STATUS__OK;
}

/* An engine job finished (on the loop): apply its result to the VM and
 * its row, then carry the spec on (a new VM goes on to start) or finish
 * it. */
static void s_ejob_done(fleet_t *self, s_ejob_t *j)
{
    s_op_t *op = j->op;
    size_t i = j->i;
    vm_t *vm = self->table[j->vm.vm_id]; /* held by op since the job began */
    char msg[S_MSG_LEN] = "", err[200];
    int status = TTFLEET__STATUS__OK;
    self->cur_op = op;
    self->cur_i = i;
    if (j->created) {
        if (j->failed) {
            snprintf(msg, sizeof msg, "prepare disk of vm %u: %s", vm->vm_id, j->err);
            self->table[vm->vm_id] = NULL;
            self->count--;
            free(vm);
            self->cur_op = NULL;
            s_spec_done(self, op, i, TTFLEET__STATUS__WORKER_FAILED, TTFLEET__VM_STATE__VM_ABSENT,
                        msg);
            return;
        }
        *vm = j->vm;
        s_created(self, vm);
        status = s_transition(self, vm, j->desired, true, msg);
        self->cur_op = NULL;
        if (status != S_PENDING)
            s_spec_done(self, op, i, status, vm->state, msg);
        return;
    }
    *vm = j->vm; /* pid, start time: what the engine did */
    if (j->steps & (S_J_START | S_J_RESTORE)) {
        if (j->failed & (S_J_PREPARE | S_J_START | S_J_RESTORE)) {
            snprintf(msg, sizeof msg, "%s vm %u: %s",
                     j->failed == S_J_RESTORE ? "restore" : "start", vm->vm_id, j->err);
            vm->state = TTFLEET__VM_STATE__VM_STOPPED;
            status = TTFLEET__STATUS__WORKER_FAILED;
            if (j->failed == S_J_RESTORE)
                s_snap_vm_gone(self, vm->vm_id); /* a later start boots it cold */
        } else if (net_vm_after_start(self->net, vm, err, sizeof err)) {
            char e2[200];
            snprintf(msg, sizeof msg, "network of vm %u: %s", vm->vm_id, err);
            j->eng->stop(&self->ctx, vm, e2, sizeof e2);
            vm->state = TTFLEET__VM_STATE__VM_STOPPED;
            status = TTFLEET__STATUS__WORKER_FAILED;
        } else {
            tt_crash_point("worker.after_spawn"); /* started, not yet in worker.db */
            vm->state = TTFLEET__VM_STATE__VM_RUNNING;
            if (j->steps & S_J_RESTORE)
                zsys_info("vm %u (%s): running, restored from its template in %lld ms, pid %d",
                          vm->vm_id, vm->env, (long long)j->restore_ms, (int)vm->pid);
            else
                zsys_info("vm %u (%s): running, pid %d", vm->vm_id, vm->env, (int)vm->pid);
        }
    }
    if (j->steps & (S_J_SUSPEND | S_J_WAKE))
        status = s_suspend_done(self, j, vm, msg);
    if (status == TTFLEET__STATUS__OK && (j->steps & (S_J_PAUSE | S_J_RESUME))) {
        bool pause = j->steps & S_J_PAUSE;
        if (j->failed) {
            snprintf(msg, sizeof msg, "%s vm %u: %s", pause ? "pause" : "resume", vm->vm_id,
                     j->err);
            status = TTFLEET__STATUS__WORKER_FAILED;
        } else {
            vm->state = pause ? TTFLEET__VM_STATE__VM_PAUSED : TTFLEET__VM_STATE__VM_RUNNING;
        }
    }
    s_put(self, vm);
    self->cur_op = NULL;
    s_spec_done(self, op, i, status, vm->state, msg);
}

/* One timer step of a VM being stopped. True if it finished. */
static bool s_spec_poll(fleet_t *self, s_op_t *op, size_t i, int64_t now)
{
    s_vmop_t *v = &op->vs[i];
    vm_t *vm = self->table[op->cmd->vms[i]->vm_id];
    const engine_t *eng = s_engine(vm);
    bool gone = eng->stop_poll ? eng->stop_poll(&self->ctx, vm)
                               : !vm->pid || !proc_alive(vm->pid, vm->start_time);
    if (!gone && v->phase == S_STOPPING && now >= vm->stop_asked_ms + self->cfg.stop_timeout_ms) {
        if (!eng->stop_force) {
            gone = true; /* the blocking stop kills it */
        } else {
            zsys_info("vm %u (%s): still running after %d ms, killing it", vm->vm_id, vm->env,
                      self->cfg.stop_timeout_ms);
            eng->stop_force(&self->ctx, vm);
            v->phase = S_KILLING;
            v->kill_deadline_ms = now + S_KILL_WAIT_MS;
        }
    } else if (!gone && v->phase == S_KILLING && now >= v->kill_deadline_ms) {
        gone = true; /* the blocking stop tries once more and says why */
    }
    if (!gone)
        return false;
    s_spec_stopped(self, op, i);
    return true;
}

/* Spec i waits for its image (S_PULLING): on a READY round it is applied
 * again (now past s_pull_gate); a FAILED round fails it with the reason,
 * and the broker places the VM elsewhere. */
static void s_pull_poll(fleet_t *self, s_op_t *op, size_t i)
{
    s_vmop_t *v = &op->vs[i];
    const Ttfleet__VmSpec *spec = op->cmd->vms[i];
    uint64_t done, total;
    char dir[4200], err[300], msg[S_MSG_LEN] = "";
    pull_state_t ps = pull_state(self->pull, spec->image_digest, v->pull_ticket, &done, &total,
                                 dir, sizeof dir, err, sizeof err);
    if (ps == PULL_BUSY)
        return;
    int state = TTFLEET__VM_STATE__VM_ABSENT;
    if (ps == PULL_FAILED) {
        snprintf(msg, sizeof msg, "vm %u: image '%s' on host %s: %.150s", spec->vm_id,
                 spec->image, self->cfg.host_id, err);
        s_spec_done(self, op, i, TTFLEET__STATUS__WORKER_FAILED, state, msg);
        return;
    }
    v->phase = S_TODO;
    v->pulled = true;
    v->pull_held = pull_acquire(self->pull, spec->image_digest) == 0;
    self->cur_op = op;
    self->cur_i = i;
    int status = s_converge(self, spec, &state, msg);
    self->cur_op = NULL;
    if (status != S_PENDING)
        s_spec_done(self, op, i, status, state, msg);
}

/* Claim op's VMs and apply what needs no waiting. */
static void s_op_begin(fleet_t *self, s_op_t *op)
{
    op->started = true;
    for (size_t i = 0; i < op->cmd->n_vms; i++) {
        uint32_t id = op->cmd->vms[i]->vm_id;
        if (s_in_range(id)) {
            self->owner[id] = op;
            const vm_t *vm = self->table[id];
            if (vm) {
                snprintf(op->vs[i].env, sizeof op->vs[i].env, "%s", vm->env);
                op->vs[i].expires_at = vm->expires_at;
            }
        }
    }
    for (size_t i = 0; i < op->cmd->n_vms; i++)
        s_spec_begin(self, op, i);
}

/* Start every queued op none of whose VMs is held by a running op or
 * wanted by an earlier queued one (operations on one VM run in order),
 * and move finished ops to the list that waits for the commit. */
static void s_schedule(fleet_t *self)
{
    bool progress = true;
    while (progress) {
        progress = false;
        self->gen++;
        for (s_op_t *op = self->ops; op; op = op->next) {
            if (op->started)
                continue;
            bool blocked = false;
            for (size_t i = 0; i < op->cmd->n_vms && !blocked; i++) {
                const Ttfleet__VmSpec *spec = op->cmd->vms[i];
                uint32_t id = spec->vm_id;
                blocked = s_in_range(id) && (self->owner[id] || self->mark[id] == self->gen);
                /* A new VM whose address a VM still being stopped or
                 * destroyed by a running op holds (the broker freed it when
                 * the delete was recorded) waits for that op instead of
                 * failing on the clash. */
                if (!blocked && self->n_ops > 1 && s_in_range(id) && !self->table[id] &&
                    spec->desired != TTFLEET__VM_STATE__VM_ABSENT) {
                    const vm_t *other = s_address_clash(self, spec);
                    blocked = other && self->owner[other->vm_id];
                }
            }
            if (blocked) {
                for (size_t i = 0; i < op->cmd->n_vms; i++)
                    if (s_in_range(op->cmd->vms[i]->vm_id))
                        self->mark[op->cmd->vms[i]->vm_id] = self->gen;
                continue;
            }
            s_op_begin(self, op);
        }
        s_op_t **pp = &self->ops;
        while (*pp) {
            s_op_t *op = *pp;
            if (!op->started || op->left) {
                pp = &op->next;
                continue;
            }
            *pp = op->next;
            for (size_t i = 0; i < op->cmd->n_vms; i++)
                if (s_in_range(op->cmd->vms[i]->vm_id)) {
                    self->owner[op->cmd->vms[i]->vm_id] = NULL;
                    if (self->queued[op->cmd->vms[i]->vm_id])
                        self->queued[op->cmd->vms[i]->vm_id]--;
                }
            op->next = NULL;
            *self->done_tail = op;
            self->done_tail = &op->next;
            self->n_ops--;
            progress = true;
        }
    }
    self->tail = &self->ops;
    while (*self->tail)
        self->tail = &(*self->tail)->next;
}

/* The packed reply of a finished command, after its commit. */
static zframe_t *s_op_reply(fleet_t *self, s_op_t *op, bool persisted)
{
    const Ttfleet__WorkerCommand *cmd = op->cmd;
    Ttfleet__WorkerReply reply = TTFLEET__WORKER_REPLY__INIT;
    reply.op_id = cmd->op_id;
    reply.status = TTFLEET__STATUS__OK;
    char message[S_MSG_LEN + 32] = "";
    s_actuals_t acts;
    int arc = s_actuals_init(&acts, cmd->n_vms);
    acts.rd = self->rd;
    acts.tmpl_of = self->tmpl_of;
    if (arc) {
        zsys_error("op %llu: out of memory for its reply", (unsigned long long)cmd->op_id);
        return NULL;
    }
    for (size_t i = 0; i < cmd->n_vms; i++) {
        const s_vmop_t *v = &op->vs[i];
        char *m = s_actuals_add(&acts, cmd->vms[i]->vm_id, v->state, v->env, v->expires_at);
        snprintf(m, S_MSG_LEN, "%s", v->msg);
        if (v->status != TTFLEET__STATUS__OK && reply.status == TTFLEET__STATUS__OK) {
            reply.status = (Ttfleet__Status)v->status;
            snprintf(message, sizeof message, "%s", v->msg);
        }
    }
    if (!persisted && reply.status == TTFLEET__STATUS__OK) {
        reply.status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(message, sizeof message, "host %s could not persist its state", self->cfg.host_id);
    }
    tt_crash_point("worker.before_reply"); /* committed, the broker not told */
    uint8_t *console = NULL;
    if (cmd->console_vm_id) {
        size_t got = 0;
        bool truncated = false;
        if (s_console_tail(self, cmd->console_vm_id, cmd->console_max, &console, &got, &truncated,
                           message, sizeof message) == 0) {
            reply.console.data = console;
            reply.console.len = got;
            reply.console_truncated = truncated;
        } else if (reply.status == TTFLEET__STATUS__OK)
            reply.status = TTFLEET__STATUS__NOT_FOUND;
    }
    reply.message = message;
    reply.n_vms = acts.n;
    reply.vms = acts.ptrs;
    zframe_t *frame = wire_pack(&reply.base);
    free(console);
    s_actuals_free(&acts);
    return frame;
}

/* Commit what was applied since the last commit (one transaction for
 * every command and tick in between), then release the finished ops:
 * replies to the out queue, expiry destroys to the next tick's event.
 * 0 / -1 (a failed commit: their replies say so, the rows are rewritten
 * from the table by the next tick). */
static int s_commit(fleet_t *self)
{
    int rc = 0;
    if (self->in_tx) {
        self->in_tx = false;
        if (self->dirty || vmdb_commit(self->db)) {
            vmdb_rollback(self->db);
            self->dirty = true;
            zsys_error("worker.db commit failed: %s", vmdb_errmsg(self->db));
            rc = -1;
        }
    } else if (self->dirty) {
        rc = -1;
    }
    while (self->done) {
        s_op_t *op = self->done;
        self->done = op->next;
        if (op->internal) {
            for (size_t i = 0; i < op->cmd->n_vms; i++) {
                const s_vmop_t *v = &op->vs[i];
                if (v->status != TTFLEET__STATUS__OK || v->state != TTFLEET__VM_STATE__VM_ABSENT)
                    continue;
                if (self->n_expired == self->cap_expired) {
                    size_t cap = self->cap_expired ? 2 * self->cap_expired : 16;
                    s_expired_t *grown = realloc(self->expired, cap * sizeof *grown);
                    if (!grown)
                        continue;
                    self->expired = grown;
                    self->cap_expired = cap;
                }
                s_expired_t *e = &self->expired[self->n_expired++];
                e->vm_id = op->cmd->vms[i]->vm_id;
                e->expires_at = v->expires_at;
                snprintf(e->env, sizeof e->env, "%s", v->env);
            }
        } else {
            zframe_t *f = s_op_reply(self, op, rc == 0 && !op->persist_failed);
            if (f && zlist_append(self->out, f))
                zframe_destroy(&f);
        }
        s_op_free(&op);
    }
    self->done_tail = &self->done;
    return rc;
}

/* Answer a command at once that was not queued: nothing was changed. */
static void s_refuse_status(fleet_t *self, Ttfleet__WorkerCommand *cmd, Ttfleet__Status status,
                            const char *why)
{
    zsys_warning("op %llu: refused: %s", (unsigned long long)cmd->op_id, why);
    Ttfleet__WorkerReply reply = TTFLEET__WORKER_REPLY__INIT;
    reply.op_id = cmd->op_id;
    reply.status = status;
    reply.message = (char *)why;
    zframe_t *f = wire_pack(&reply.base);
    if (f && zlist_append(self->out, f))
        zframe_destroy(&f);
    ttfleet__worker_command__free_unpacked(cmd, NULL);
}

static void s_refuse(fleet_t *self, Ttfleet__WorkerCommand *cmd, const char *why)
{
    s_refuse_status(self, cmd, TTFLEET__STATUS__WORKER_FAILED, why);
}

/* Term fencing: a command from a Raft term older than the highest this
 * worker has seen comes from a deposed broker leader and is refused
 * (NOT_LEADER, nothing applied); a newer term is recorded in the
 * transaction the command's own changes commit in, so it is on disk
 * before any reply to that term goes out. True if cmd was refused. */
static bool s_term_fenced(fleet_t *self, Ttfleet__WorkerCommand *cmd)
{
    if (cmd->term < self->term) {
        char why[S_MSG_LEN];
        snprintf(why, sizeof why,
                 "command from broker term %llu refused: this worker has seen term %llu (the "
                 "sender is no longer the leader)",
                 (unsigned long long)cmd->term, (unsigned long long)self->term);
        self->n_stale++;
        s_refuse_status(self, cmd, TTFLEET__STATUS__NOT_LEADER, why);
        return true;
    }
    if (cmd->term > self->term) {
        zsys_info("broker term %llu (was %llu)", (unsigned long long)cmd->term,
                  (unsigned long long)self->term);
        self->term = cmd->term;
        s_tx(self);
        if (!self->in_tx || vmdb_set_term(self->db, self->term)) {
            zsys_error("worker.db: cannot record broker term %llu: %s",
                       (unsigned long long)self->term, vmdb_errmsg(self->db));
            self->dirty = true; /* s_flush_all writes it with every row */
        }
    }
    return false;
}

/* Queue an unpacked command (takes it); applies what can be now. A
 * command beyond FLEET_MAX_OPS unfinished ops, or naming a VM that
 * FLEET_MAX_OPS_PER_VM unfinished ops name already, is refused with a
 * reply (WORKER_FAILED, nothing changed). Expiry destroys are never
 * refused (one per VM at most: the tick skips VMs an op holds). */
/* An exec or copy (guestop.h): no VM state changes, so no op and no
 * commit; guestop answers through fleet_flush. */
static void s_guest_submit(fleet_t *self, Ttfleet__WorkerCommand *cmd)
{
    uint32_t id = cmd->exec ? cmd->exec->vm_id : cmd->copy ? cmd->copy->vm_id : 0;
    const vm_t *vm = s_in_range(id) ? self->table[id] : NULL;
    guestop_vm_t snap;
    memset(&snap, 0, sizeof snap);
    if (vm) {
        snprintf(snap.engine, sizeof snap.engine, "%s", vm->engine);
        const engine_t *e = engine_find(vm->engine);
        snap.guest = e ? e->guest : NULL;
        snap.state = vm->state;
        snap.pid = vm->pid;
        snap.start_time = vm->start_time;
        if (engine_vm_path(&self->ctx, id, "qga.sock", snap.agent_sock, sizeof snap.agent_sock))
            snap.agent_sock[0] = '\0';
    }
    guestop_submit(self->gop, cmd, vm ? &snap : NULL);
}

static int s_submit(fleet_t *self, Ttfleet__WorkerCommand *cmd, bool internal)
{
    char why[S_MSG_LEN];
    if (!internal && (cmd->exec || cmd->copy) && self->gop) {
        s_guest_submit(self, cmd);
        return 0;
    }
    if (!internal && self->n_ops >= FLEET_MAX_OPS) {
        snprintf(why, sizeof why, "host %s has %zu commands queued (limit %d): refused, nothing changed",
                 self->cfg.host_id, self->n_ops, FLEET_MAX_OPS);
        s_refuse(self, cmd, why);
        return 0;
    }
    for (size_t i = 0; !internal && i < cmd->n_vms; i++) {
        uint32_t id = cmd->vms[i]->vm_id;
        if (s_in_range(id) && self->queued[id] >= FLEET_MAX_OPS_PER_VM) {
            snprintf(why, sizeof why,
                     "host %s has %u commands queued for vm %u (limit %d): refused, nothing changed",
                     self->cfg.host_id, self->queued[id], id, FLEET_MAX_OPS_PER_VM);
            s_refuse(self, cmd, why);
            return 0;
        }
    }
    for (size_t i = 0; i < cmd->n_vms; i++)
        if (s_in_range(cmd->vms[i]->vm_id))
            self->queued[cmd->vms[i]->vm_id]++;
    s_op_t *op = s_op_new(cmd, internal);
    if (!op) {
        for (size_t i = 0; i < cmd->n_vms; i++)
            if (s_in_range(cmd->vms[i]->vm_id))
                self->queued[cmd->vms[i]->vm_id]--;
        zsys_error("op %llu: out of memory: dropped", (unsigned long long)cmd->op_id);
        ttfleet__worker_command__free_unpacked(cmd, NULL);
        return -1;
    }
    *self->tail = op;
    self->tail = &op->next;
    self->n_ops++;
    s_schedule(self);
    return 0;
}

/* An exec or copy whose strings hold a NUL the decoder cut off is refused
 * (ttguest.h: tt_guest_raw_check); true if cmd was answered so. */
static bool s_guest_nul(fleet_t *self, Ttfleet__WorkerCommand *cmd, const byte *body, size_t len)
{
    char why[S_MSG_LEN];
    if (!(cmd->exec || cmd->copy) ||
        tt_guest_raw_check(body, len, 100, 101, why, sizeof why) == 0)
        return false;
    s_refuse(self, cmd, why);
    return true;
}

int fleet_submit(fleet_t *self, const byte *body, size_t len)
{
    Ttfleet__WorkerCommand *cmd = ttfleet__worker_command__unpack(NULL, len, body);
    if (!cmd) {
        zsys_warning("COMMAND body does not decode (%zu bytes): dropped", len);
        return -1;
    }
    if (s_term_fenced(self, cmd))
        return 0;
    if (s_guest_nul(self, cmd, body, len))
        return 0;
    if (cmd->prepare && s_snap_prepare(self, cmd))
        return 0;
    if (cmd->pull) { /* image pull (issue 12): a round with no VM; the cache's
                        digests tell the broker when it is done */
        char err[300];
        uint64_t ticket;
        if (!self->pull)
            zsys_warning("op %llu: image pull, but this host has no image cache",
                         (unsigned long long)cmd->op_id);
        else if (pull_want(self->pull, cmd->pull, &ticket, err, sizeof err))
            zsys_warning("op %llu: image pull: %s", (unsigned long long)cmd->op_id, err);
        else
            zsys_info("op %llu: pulling image %s", (unsigned long long)cmd->op_id,
                      cmd->pull->image_digest);
    }
    return s_submit(self, cmd, false);
}

void fleet_flush(fleet_t *self)
{
    s_ejob_t *j;
    while (self->jobs && (j = jobs_reap(self->jobs))) {
        s_ejob_done(self, j);
        free(j);
    }
    int64_t now = tt_mono_ms();
    if (self->pull)
        pull_poll(self->pull);
    if (self->build)
        snapbuild_step(self->build, now);
    for (s_op_t *op = self->ops; op; op = op->next)
        for (size_t i = 0; op->started && i < op->cmd->n_vms; i++)
            if (op->vs[i].phase == S_STOPPING || op->vs[i].phase == S_KILLING)
                s_spec_poll(self, op, i, now);
            else if (op->vs[i].phase == S_PULLING)
                s_pull_poll(self, op, i);
    s_schedule(self);
    s_commit(self);
    if (self->gop) {
        guestop_flush(self->gop, now);
        zframe_t *f;
        while ((f = guestop_pop(self->gop)))
            if (zlist_append(self->out, f))
                zframe_destroy(&f);
    }
}

zframe_t *fleet_pop(fleet_t *self)
{
    return zlist_pop(self->out);
}

int fleet_next_ms(const fleet_t *self)
{
    if (self->jobs && jobs_pending(self->jobs))
        return S_JOB_POLL_MS;
    if (self->gop && guestop_pending(self->gop))
        return GUESTOP_POLL_MS;
    for (const s_op_t *op = self->ops; op; op = op->next)
        for (size_t i = 0; op->started && i < op->cmd->n_vms; i++)
            if (op->vs[i].phase == S_STOPPING || op->vs[i].phase == S_KILLING ||
                op->vs[i].phase == S_PULLING)
                return S_POLL_MS;
    if (self->pull && pull_busy(self->pull))
        return S_POLL_MS;
    if (self->build) {
        int ms = snapbuild_next_ms(self->build, tt_mono_ms());
        if (ms >= 0)
            return ms < S_JOB_POLL_MS ? S_JOB_POLL_MS : ms;
    }
    return -1;
}

uint64_t fleet_term(const fleet_t *self)
{
    return self->term;
}

size_t fleet_stale(const fleet_t *self)
{
    return self->n_stale;
}

size_t fleet_in_flight(const fleet_t *self)
{
    return self->n_ops;
}

zframe_t *fleet_command(fleet_t *self, const byte *body, size_t len)
{
    Ttfleet__WorkerCommand *cmd = ttfleet__worker_command__unpack(NULL, len, body);
    if (!cmd) {
        zsys_warning("COMMAND body does not decode (%zu bytes): dropped", len);
        return NULL;
    }
    uint64_t op_id = cmd->op_id;
    if (!s_term_fenced(self, cmd) && !s_guest_nul(self, cmd, body, len) &&
        s_submit(self, cmd, false))
        return NULL;
    /* The blocking form: poll until this op's reply is out (other
     * replies are kept for fleet_pop). */
    for (;;) {
        fleet_flush(self);
        zframe_t *mine = NULL;
        for (zframe_t *f = zlist_first(self->out); f; f = zlist_next(self->out)) {
            Ttfleet__WorkerReply *r =
                ttfleet__worker_reply__unpack(NULL, zframe_size(f), zframe_data(f));
            bool match = r && r->op_id == op_id;
            ttfleet__worker_reply__free_unpacked(r, NULL);
            if (match) {
                mine = f;
                break;
            }
        }
        if (mine) {
            zlist_remove(self->out, mine);
            return mine;
        }
        if (!self->n_ops && !self->done && !(self->gop && guestop_pending(self->gop)))
            return NULL; /* its reply could not be built (out of memory) */
        spawn_sleep_ms(fleet_next_ms(self) > 0 ? 10 : 1);
    }
}

/* The cache limit in MiB as advertised: at least 1 (0 would say "no
 * cache"), UINT32_MAX MiB for "no limit". */
static uint64_t s_cache_mib(const pull_t *pull)
{
    uint64_t lim = pull_limit(pull) >> 20;
    return pull_limit(pull) == 0 ? UINT32_MAX : lim ? lim : 1;
}

zframe_t *fleet_pull_event(fleet_t *self)
{
    if (!self->pull)
        return s_snap_event(self);
    s_actuals_t acts = {0};
    size_t n = 0;
    for (const s_op_t *op = self->ops; op; op = op->next)
        for (size_t i = 0; op->started && i < op->cmd->n_vms; i++)
            n += op->vs[i].phase == S_PULLING;
    if (n && s_actuals_init(&acts, n))
        return NULL;
    for (const s_op_t *op = self->ops; op; op = op->next)
        for (size_t i = 0; op->started && i < op->cmd->n_vms; i++) {
            if (op->vs[i].phase != S_PULLING)
                continue;
            const Ttfleet__VmSpec *spec = op->cmd->vms[i];
            uint64_t done, total;
            char dir[16], err[300];
            pull_state(self->pull, spec->image_digest, op->vs[i].pull_ticket, &done, &total, dir,
                       sizeof dir, err, sizeof err);
            char *m = s_actuals_add(&acts, spec->vm_id, TTFLEET__VM_STATE__VM_ABSENT, spec->env,
                                    spec->expires_at);
            snprintf(m, S_MSG_LEN, "pulling image %s", spec->image);
            acts.items[acts.n - 1].pull_done = done;
            acts.items[acts.n - 1].pull_total = total ? total : 1;
        }
    bool changed = pull_changed(self->pull);
    bool tchanged = self->snap && snapops_changed(self->snap);
    changed |= tchanged;
    zframe_t *frame = NULL;
    if (acts.n || changed) {
        Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
        ev.n_vms = acts.n;
        ev.vms = acts.ptrs;
        Ttfleet__TemplateInfo *ti = NULL, **tp = NULL;
        if (changed) {
            ev.image_digests = (char **)pull_digests(self->pull, &ev.n_image_digests);
            ev.image_cache_mib = s_cache_mib(self->pull);
            ev.image_cache_used_mib = pull_used(self->pull) >> 20;
        }
        if (tchanged && snapops_infos(self->snap, &ti, &tp, &ev.n_templates) == 0) {
            ev.templates = tp;
            ev.templates_set = true;
        }
        frame = wire_pack(&ev.base);
        free(ti);
        free(tp);
    }
    if (n)
        s_actuals_free(&acts);
    return frame;
}

zframe_t *fleet_hello(fleet_t *self)
{
    images_rescan(self->images);
    s_actuals_t acts;
    if (s_actuals_init(&acts, self->count))
        return NULL;
    acts.rd = self->rd;
    acts.tmpl_of = self->tmpl_of;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++) {
        vm_t *vm = self->table[id];
        if (!vm)
            continue;
        if (!self->owner[id]) /* a VM being stopped reports what it is now */
            s_refresh(self, vm);
        s_actuals_add(&acts, vm->vm_id, vm->state, vm->env, vm->expires_at);
    }
    s_commit(self);
    Ttfleet__WorkerHello hello = TTFLEET__WORKER_HELLO__INIT;
    hello.host_id = (char *)self->cfg.host_id;
    hello.cpu_total = (uint32_t)self->cfg.cap.total.cpu;
    hello.mem_total = self->cfg.cap.total.mem_mib;
    hello.disk_total = self->cfg.cap.total.disk_mib;
    hello.n_engines = (size_t)self->cfg.n_engines;
    hello.engines = (char **)self->cfg.engines;
    /* what each engine can do: the broker places by it */
    Ttfleet__EngineCaps ec[FLEET_MAX_ENGINES], *ecp[FLEET_MAX_ENGINES];
    const char *capn[FLEET_MAX_ENGINES][32];
    for (int i = 0; i < self->cfg.n_engines && i < FLEET_MAX_ENGINES; i++) {
        ttfleet__engine_caps__init(&ec[i]);
        ec[i].engine = (char *)self->cfg.engines[i];
        ec[i].n_caps = tt_cap_names(engine_caps_of(self->cfg.engines[i]), capn[i], 32);
        ec[i].caps = (char **)capn[i];
        ecp[i] = &ec[i];
        hello.n_engine_caps = (size_t)i + 1;
    }
    hello.engine_caps = ecp;
    hello.n_images = images_count(self->images);
    hello.images = images_names(self->images);
    hello.n_inventory = acts.n;
    hello.inventory = acts.ptrs;
    hello.version = (char *)"ttworker " TTFLEET_VERSION;
    hello.accel = (char *)(self->cfg.accel ? self->cfg.accel : "");
    hello.public_address = (char *)(self->cfg.public_address ? self->cfg.public_address : "");
    if (self->pull) {
        hello.image_digests = (char **)pull_digests(self->pull, &hello.n_image_digests);
        hello.image_cache_mib = s_cache_mib(self->pull);
        hello.image_cache_used_mib = pull_used(self->pull) >> 20;
        pull_changed(self->pull); /* READY says it all */
    }
    Ttfleet__TemplateInfo *ti = NULL, **tp = NULL;
    if (self->snap && snapops_infos(self->snap, &ti, &tp, &hello.n_templates) == 0) {
        hello.templates = tp;
        snapops_changed(self->snap);
    }
    zframe_t *frame = wire_pack(&hello.base);
    free(ti);
    free(tp);
    s_actuals_free(&acts);
    return frame;
}

/* A destroy command for the given VMs, built as the broker would send it
 * (so it goes through the same queue, checks and stop timer). */
static Ttfleet__WorkerCommand *s_destroy_cmd(fleet_t *self, const uint32_t *ids, size_t n)
{
    Ttfleet__WorkerCommand c = TTFLEET__WORKER_COMMAND__INIT;
    Ttfleet__VmSpec *specs = calloc(n, sizeof *specs);
    Ttfleet__VmSpec **pp = calloc(n, sizeof *pp);
    Ttfleet__PortMap *maps = calloc(n * TT_MAX_PORTS_PER_VM + 1, sizeof *maps);
    Ttfleet__PortMap **mp = calloc(n * TT_MAX_PORTS_PER_VM + 1, sizeof *mp);
    Ttfleet__WorkerCommand *out = NULL;
    if (!specs || !pp || !maps || !mp)
        goto done;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        const vm_t *vm = self->table[ids[i]];
        Ttfleet__VmSpec init = TTFLEET__VM_SPEC__INIT;
        Ttfleet__VmSpec *s = &specs[i];
        *s = init;
        s->vm_id = vm->vm_id;
        s->env = (char *)vm->env;
        s->image = (char *)vm->image;
        s->engine = (char *)vm->engine;
        s->cpu = vm->cpu;
        s->mem_mib = vm->mem_mib;
        s->disk_mib = vm->disk_mib;
        s->ip = (char *)vm->ip;
        s->mac = (char *)vm->mac;
        s->deny_outgoing = vm->deny_outgoing;
        s->expires_at = vm->expires_at;
        s->desired = TTFLEET__VM_STATE__VM_ABSENT;
        s->ports = &mp[m];
        for (uint32_t k = 0; k < vm->n_ports; k++, m++) {
            Ttfleet__PortMap pinit = TTFLEET__PORT_MAP__INIT;
            maps[m] = pinit;
            maps[m].guest = vm->ports[k].guest;
            maps[m].public_ = vm->ports[k].public_port;
            mp[m] = &maps[m];
        }
        s->n_ports = vm->n_ports;
        pp[i] = s;
    }
    c.n_vms = n;
    c.vms = pp;
    zframe_t *f = wire_pack(&c.base);
    if (f)
        out = ttfleet__worker_command__unpack(NULL, zframe_size(f), zframe_data(f));
    zframe_destroy(&f);
done:
    free(specs);
    free(pp);
    free(maps);
    free(mp);
    return out;
}

/* One readiness step for vm (see vmready.h): where to probe is the VM's
 * address under nft, else 127.0.0.1 with its public ports and no other
 * (127.0.0.1 is the host's). Only QEMU's user networking forwards those
 * ports; for another engine or --net none nothing of the VM listens on
 * them (the broker's port may be another program's), so no network probe
 * dials. 1 when its ready changed. */
static int s_ready_step(fleet_t *self, const vm_t *vm)
{
    probe_target_t t;
    memset(&t, 0, sizeof t);
    bool nft = self->ctx.net == NET_NFT;
    snprintf(t.host, sizeof t.host, "%s", nft ? vm->ip : "127.0.0.1");
    t.mapped_only = !nft;
    t.unreachable =
        !nft && !(self->ctx.net == NET_USER && (engine_caps_of(vm->engine) & TT_CAP_HOSTFWD));
    if (!nft && !t.unreachable)
        t.owner_pid = vm->pid; /* only QEMU's own forwards are dialled */
    for (uint32_t i = 0; !nft && i < vm->n_ports && t.n_ports < PROBE_MAP_MAX; i++) {
        t.ports[t.n_ports].guest = (uint16_t)vm->ports[i].guest;
        t.ports[t.n_ports].dial = (uint16_t)vm->ports[i].public_port;
        t.n_ports++;
    }
    engine_vm_path(&self->ctx, vm->vm_id, "console.log", t.console_log, sizeof t.console_log);
    engine_vm_path(&self->ctx, vm->vm_id, "qga.sock", t.agent_sock, sizeof t.agent_sock);
    char image_dir[4200] = "";
    engine_image_dir(&self->ctx, vm, image_dir, sizeof image_dir);
    return vmready_step(self->rd, vm->vm_id, vm->state == TTFLEET__VM_STATE__VM_RUNNING, &t,
                        image_dir, zclock_mono());
}

zframe_t *fleet_tick(fleet_t *self, int64_t now)
{
    s_commit(self);
    if (self->dirty || self->rewrite)
        s_flush_all(self);
    if (self->net_resync)
        s_net_sync(self);
    s_actuals_t acts = {0};
    uint32_t *ids = NULL;
    size_t n_ids = 0;
    if (self->count || self->n_expired) {
        if (s_actuals_init(&acts, 2 * self->count + self->n_expired))
            return NULL;
        acts.rd = self->rd;
    acts.tmpl_of = self->tmpl_of;
        ids = calloc(self->count + 1, sizeof *ids);
        if (!ids) {
            s_actuals_free(&acts);
            return NULL;
        }
    }
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++) {
        vm_t *vm = self->table[id];
        if (!vm || self->owner[id]) /* an op in flight owns it */
            continue;
        bool expired = now > vm->expires_at + self->cfg.expiry_grace;
        if (expired) {
            zsys_info("vm %u (%s): expired at %lld (+%llds grace), destroying", vm->vm_id, vm->env,
                      (long long)vm->expires_at, (long long)self->cfg.expiry_grace);
            ids[n_ids++] = id;
            continue;
        }
        bool died = vm_holds_cpu(vm) && !s_engine(vm)->is_alive(&self->ctx, vm);
        if (died)
            s_refresh(self, vm);
        int changed = s_ready_step(self, vm);
        if (died) {
            char *m = s_actuals_add(&acts, vm->vm_id, vm->state, vm->env, vm->expires_at);
            snprintf(m, S_MSG_LEN, "vm process exited on its own");
        } else if (changed)
            s_actuals_add(&acts, vm->vm_id, vm->state, vm->env, vm->expires_at);
    }
    if (n_ids) {
        Ttfleet__WorkerCommand *cmd = s_destroy_cmd(self, ids, n_ids);
        if (cmd)
            s_submit(self, cmd, true);
    }
    free(ids);
    s_commit(self);
    /* Expiry destroys finished by now (this tick's, or earlier ones that
     * waited for a stop); the message carries the env name too. */
    for (size_t i = 0; i < self->n_expired; i++) {
        s_expired_t *e = &self->expired[i];
        char *m = s_actuals_add(&acts, e->vm_id, TTFLEET__VM_STATE__VM_ABSENT, "", e->expires_at);
        snprintf(m, S_MSG_LEN, "%s", e->env);
        acts.items[acts.n - 1].env = m;
    }
    zframe_t *frame = NULL;
    if (acts.n) {
        Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
        ev.n_vms = acts.n;
        ev.vms = acts.ptrs;
        frame = wire_pack(&ev.base);
    }
    self->n_expired = 0;
    s_actuals_free(&acts);
    return frame;
}

zframe_t *fleet_probe_tick(fleet_t *self)
{
    if (!self->count)
        return NULL;
    s_actuals_t acts = {0};
    bool init = false;
    for (uint32_t id = TT_VMID_MIN, seen = 0; id <= TT_VMID_MAX && seen < self->count; id++) {
        vm_t *vm = self->table[id];
        if (!vm)
            continue;
        seen++;
        if (self->owner[id] || vm->state != TTFLEET__VM_STATE__VM_RUNNING)
            continue; /* an op owns it, or fleet_tick reports what it is */
        if (!s_ready_step(self, vm))
            continue;
        if (!init) {
            if (s_actuals_init(&acts, self->count))
                return NULL;
            acts.rd = self->rd;
    acts.tmpl_of = self->tmpl_of;
            init = true;
        }
        s_actuals_add(&acts, vm->vm_id, vm->state, vm->env, vm->expires_at);
    }
    zframe_t *frame = NULL;
    if (init && acts.n) {
        Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
        ev.n_vms = acts.n;
        ev.vms = acts.ptrs;
        frame = wire_pack(&ev.base);
    }
    if (init)
        s_actuals_free(&acts);
    return frame;
}

void fleet_rescan_images(fleet_t *self)
{
    images_rescan(self->images);
}

size_t fleet_count(const fleet_t *self)
{
    return self->count;
}

static void s_load_one(vm_t *vm, void *arg)
{
    fleet_t *self = arg;
    if (self->table[vm->vm_id]) {
        free(vm);
        return;
    }
    self->table[vm->vm_id] = vm;
    self->count++;
    if (vm->image_digest[0] && self->pull && pull_acquire(self->pull, vm->image_digest))
        zsys_warning("vm %u: its image %s is no longer in the cache", vm->vm_id,
                     vm->image_digest);
    s_snap_vm_loaded(self, vm->vm_id);
}

/* VM directories without a row: leftovers of a crash between creating the
 * directory and committing the row, or between destroying and deleting. */
static void s_sweep_dirs(fleet_t *self)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vms", self->cfg.state_dir);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        char *end;
        unsigned long id = strtoul(de->d_name, &end, 10);
        if (*end || end == de->d_name || id < TT_VMID_MIN || id > TT_VMID_MAX)
            continue;
        if (self->table[id])
            continue;
        vm_t stub;
        memset(&stub, 0, sizeof stub);
        stub.vm_id = (uint32_t)id;
        char err[200];
        zsys_warning("vm %lu: directory without a row, destroying it", id);
        if (engine_process.destroy(&self->ctx, &stub, err, sizeof err))
            zsys_error("vm %lu: %s", id, err);
    }
    closedir(d);
}

/* After a restart, a VM's saved memory decides what it is: with no
 * process and a complete suspend file it is suspended (also when the
 * worker died after the engine committed the file and before worker.db
 * said so); recorded suspended without the file, it is stopped (disk
 * kept). A partial file of a VM without a process is dropped. */
static void s_suspend_adopt(fleet_t *self, const engine_t *eng, vm_t *vm, int was)
{
    if (vm_holds_cpu(vm))
        return; /* running: the engine's adopt dealt with an interrupted suspend */
    bool saved = suspend_present(eng, &self->ctx, vm);
    if (saved && vm->state != TTFLEET__VM_STATE__VM_SUSPENDED) {
        zsys_warning("vm %u (%s): recorded %s, found suspended to its file", vm->vm_id, vm->env,
                     tt_vm_state_name(was));
        vm->state = TTFLEET__VM_STATE__VM_SUSPENDED;
    } else if (!saved && vm->state == TTFLEET__VM_STATE__VM_SUSPENDED) {
        zsys_warning("vm %u (%s): recorded suspended but its suspend file is gone: stopped, "
                     "disk kept",
                     vm->vm_id, vm->env);
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
    }
    if (!saved)
        suspend_discard(&self->ctx, vm);
}

static void s_reconcile(fleet_t *self)
{
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++) {
        vm_t *vm = self->table[id];
        if (!vm)
            continue;
        const engine_t *eng = s_engine(vm);
        int was = vm->state;
        if (!eng) {
            zsys_warning("vm %u: engine '%s' is not compiled in", vm->vm_id, vm->engine);
            if (vm_holds_cpu(vm))
                vm->state = TTFLEET__VM_STATE__VM_DEAD;
        } else if (eng->adopt(&self->ctx, vm) == 0 && vm_holds_cpu(vm)) {
            zsys_info("vm %u (%s): adopted, pid %d", vm->vm_id, vm->env, (int)vm->pid);
        } else if (vm_holds_cpu(vm)) {
            zsys_warning("vm %u (%s): recorded %s but its process is gone: dead", vm->vm_id,
                         vm->env, tt_vm_state_name(was));
            vm->state = TTFLEET__VM_STATE__VM_DEAD;
        }
        if (eng)
            s_suspend_adopt(self, eng, vm, was);
        if (eng && eng->snap_recover)
            eng->snap_recover(&self->ctx, vm);
        s_put(self, vm);
    }
    s_commit(self);
    s_sweep_dirs(self);
}

fleet_t *fleet_new(const fleet_config_t *cfg, char *err, size_t errlen)
{
    fleet_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->ctx.state_dir = cfg->state_dir;
    engine_trash_sweep(&self->ctx);
    self->ctx.images_dir = cfg->images_dir;
    self->ctx.stop_timeout_ms = cfg->stop_timeout_ms;
    self->ctx.qemu = cfg->qemu;
    self->ctx.qemu_img = cfg->qemu_img;
    self->ctx.accel = cfg->accel;
    self->ctx.net = cfg->net.kind;
    self->ctx.vm_user = cfg->vm_user;
    self->ctx.vm_uid = cfg->vm_uid;
    self->ctx.vm_gid = cfg->vm_gid;
    self->ctx.vm_id_base = cfg->vm_id_base;
    self->ctx.qemu_version = cfg->qemu_version;
    self->table = calloc(TT_VMID_MAX + 1, sizeof *self->table);
    self->owner = calloc(TT_VMID_MAX + 1, sizeof *self->owner);
    self->mark = calloc(TT_VMID_MAX + 1, sizeof *self->mark);
    self->queued = calloc(TT_VMID_MAX + 1, sizeof *self->queued);
    self->out = zlist_new();
    self->tail = &self->ops;
    self->done_tail = &self->done;
    self->images = images_new(cfg->images_dir);
    self->rd = vmready_new();
    if (!self->table || !self->owner || !self->mark || !self->queued || !self->out || !self->images ||
        !self->rd) {
        snprintf(err, errlen, "out of memory");
        fleet_destroy(&self);
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/vms", cfg->state_dir);
    if (mkdir(path, 0750) && errno != EEXIST) {
        snprintf(err, errlen, "create %s: %s", path, strerror(errno));
        fleet_destroy(&self);
        return NULL;
    }
    if (cfg->image_cache) {
        pull_opts_t po = {cfg->image_cache, cfg->image_cache_mib << 20, cfg->blobs_cert,
                          cfg->blobs_key};
        self->pull = pull_new(&po, err, errlen);
        if (!self->pull) {
            fleet_destroy(&self);
            return NULL;
        }
        self->ctx.image_cache = pull_img_dir(self->pull);
    }
    if (s_snap_open(self, err, errlen)) {
        fleet_destroy(&self);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/worker.db", cfg->state_dir);
    self->db = vmdb_open(path, err, errlen);
    if (!self->db) {
        fleet_destroy(&self);
        return NULL;
    }
    self->term = vmdb_term(self->db);
    const double ratios[3] = {cfg->cap.cpu_ratio, cfg->cap.mem_ratio, cfg->cap.disk_ratio};
    if (vmdb_set_ratios(self->db, ratios)) {
        snprintf(err, errlen, "write %s: %s", path, vmdb_errmsg(self->db));
        fleet_destroy(&self);
        return NULL;
    }
    if (vmdb_load(self->db, s_load_one, self)) {
        snprintf(err, errlen, "load %s: %s", path, vmdb_errmsg(self->db));
        fleet_destroy(&self);
        return NULL;
    }
    if (self->snap) /* the clones hold their templates now */
        snapops_gc(self->snap);
    if (self->pull) /* the VMs hold their images now: a lowered limit evicts the rest */
        pull_trim(self->pull);
    net_config_t ncfg = cfg->net;
    ncfg.engine_caps = engine_caps_of; /* a VM's NIC is what its engine declares */
    self->net = net_new(&ncfg, err, errlen);
    if (!self->net) {
        fleet_destroy(&self);
        return NULL;
    }
    s_reconcile(self);
    if (s_net_sync(self))
        self->net_resync = true; /* tried again every tick */
    self->jobs = jobs_new(S_JOB_THREADS);
    guestop_config_t gcfg = {cfg->host_id, cfg->vm_user != NULL, cfg->vm_uid, cfg->vm_gid,
                             false};
    self->gop = guestop_new(&gcfg);
    if (!self->jobs || !self->gop) {
        snprintf(err, errlen, "out of memory for the engine and guest job pools");
        fleet_destroy(&self);
        return NULL;
    }
    return self;
}

void fleet_destroy(fleet_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    s_snap_close(*self_p);
    fleet_t *self = *self_p;
    /* engine calls running finish (each is bounded); their results and
     * the queued ones are dropped, as a crash would */
    jobs_destroy(&self->jobs, free);
    guestop_destroy(&self->gop);
    vmready_destroy(&self->rd);
    /* ops in flight are dropped unanswered, as a crash would: the broker
     * re-sends after READY; the transaction is rolled back */
    while (self->ops) {
        s_op_t *op = self->ops;
        self->ops = op->next;
        s_op_free(&op);
    }
    while (self->done) {
        s_op_t *op = self->done;
        self->done = op->next;
        s_op_free(&op);
    }
    if (self->in_tx && self->db && vmdb_commit(self->db)) /* reality, unannounced */
        vmdb_rollback(self->db);
    zframe_t *f;
    while (self->out && (f = zlist_pop(self->out)))
        zframe_destroy(&f);
    zlist_destroy(&self->out);
    free(self->owner);
    free(self->mark);
    free(self->queued);
    free(self->expired);
    if (self->table) {
        for (uint32_t id = 0; id <= TT_VMID_MAX; id++)
            free(self->table[id]);
        free(self->table);
    }
    images_destroy(&self->images);
    pull_destroy(&self->pull);
    net_destroy(&self->net);
    vmdb_destroy(&self->db);
    free(self);
    *self_p = NULL;
}

/* ---- memory-snapshot templates (snapops.h, docs/SNAPSHOTS.md) ---- */

static int s_snap_open(fleet_t *self, char *err, size_t errlen)
{
    if (!self->cfg.qemu_version || !s_engine_enabled(self, "qemu") ||
        !(engine_qemu.caps & TT_CAP_SNAPSHOTS))
        return 0;
    self->tmpl_of = zhashx_new();
    self->restore = zhashx_new();
    if (!self->tmpl_of || !self->restore) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    zhashx_set_destructor(self->tmpl_of, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(self->tmpl_of, (zhashx_duplicator_fn *)strdup);
    zhashx_set_destructor(self->restore, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_duplicator(self->restore, (zhashx_duplicator_fn *)strdup);
    self->snap = snapops_new(self->cfg.state_dir, self->cfg.qemu_version,
                             self->pull ? pull_cache(self->pull) : NULL, err, errlen);
    if (!self->snap)
        return -1;
    self->build = snapbuild_new(&self->ctx, self->snap, self->images, self->pull);
    if (!self->build) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

static void s_snap_close(fleet_t *self)
{
    snapbuild_destroy(&self->build);
    snapops_destroy(&self->snap);
    zhashx_destroy(&self->tmpl_of);
    zhashx_destroy(&self->restore);
}

static void s_snap_vm_loaded(fleet_t *self, uint32_t vm_id)
{
    char dir[4096], key[SNAP_KEY_MAX], id[16];
    if (!self->snap || engine_vm_path(&self->ctx, vm_id, NULL, dir, sizeof dir))
        return;
    snapops_vm_loaded(self->snap, dir, key, sizeof key);
    snprintf(id, sizeof id, "%u", vm_id);
    if (key[0])
        zhashx_update(self->tmpl_of, id, key);
}

static void s_snap_vm_gone(fleet_t *self, uint32_t vm_id)
{
    char id[16];
    snprintf(id, sizeof id, "%u", vm_id);
    const char *key = self->snap ? zhashx_lookup(self->tmpl_of, id) : NULL;
    if (!key)
        return;
    snapops_release(self->snap, key);
    zhashx_delete(self->tmpl_of, id);
    char path[4200];
    if (engine_vm_path(&self->ctx, vm_id, "template", path, sizeof path) == 0)
        unlink(path);
}

/* The templates changed on a worker without an image cache. */
static zframe_t *s_snap_event(fleet_t *self)
{
    if (!self->snap || !snapops_changed(self->snap))
        return NULL;
    Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
    Ttfleet__TemplateInfo *ti = NULL, **tp = NULL;
    if (snapops_infos(self->snap, &ti, &tp, &ev.n_templates))
        return NULL;
    ev.templates = tp;
    ev.templates_set = true;
    zframe_t *frame = wire_pack(&ev.base);
    free(ti);
    free(tp);
    return frame;
}

/* image prepare: queue a template of the command's image. The reply says
 * whether it was taken (the template itself shows in a later EVENT); true
 * when the command was answered here. */
static bool s_snap_prepare(fleet_t *self, Ttfleet__WorkerCommand *cmd)
{
    char err[300] = "";
    int status = TTFLEET__STATUS__OK;
    if (!self->build) {
        status = TTFLEET__STATUS__BAD_REQUEST;
        snprintf(err, sizeof err, "host %s cannot make templates: %s", self->cfg.host_id,
                 !s_engine_enabled(self, "qemu") ? "it does not offer the qemu engine"
                                                 : "its QEMU version is unknown");
    } else if (snapbuild_want(self->build, cmd->prepare, &status, err, sizeof err) == 0) {
        snprintf(err, sizeof err, "template of %s queued on host %s", cmd->prepare->image,
                 self->cfg.host_id);
    }
    zsys_info("op %llu: image prepare: %s", (unsigned long long)cmd->op_id, err);
    Ttfleet__WorkerReply reply = TTFLEET__WORKER_REPLY__INIT;
    reply.op_id = cmd->op_id;
    reply.status = status;
    reply.message = err;
    zframe_t *f = wire_pack(&reply.base);
    if (f && zlist_append(self->out, f))
        zframe_destroy(&f);
    ttfleet__worker_command__free_unpacked(cmd, NULL);
    return true;
}

/* A new VM (spec): from a template or cold (spec->boot: "", auto,
 * snapshot, cold). A usable template of its image, cpu and mem is noted
 * for s_snap_take; with boot snapshot and none, BAD_REQUEST with the
 * reason. With auto and none, a template is queued for the next create
 * when the builder is idle. 0 or a status with msg. */
static int s_snap_choose(fleet_t *self, const Ttfleet__VmSpec *spec, char *msg)
{
    const char *boot = spec->boot ? spec->boot : "";
    if (spec->vm_id == SNAPBUILD_VM_ID && self->build && snapbuild_busy(self->build)) {
        snprintf(msg, S_MSG_LEN, "vm id %u is held by a template builder on host %s: retry",
                 spec->vm_id, self->cfg.host_id);
        return TTFLEET__STATUS__WORKER_FAILED;
    }
    if (strcmp(boot, "cold") == 0 || spec->desired != TTFLEET__VM_STATE__VM_RUNNING)
        return 0;
    bool snaps = engine_caps_of(spec->engine) & TT_CAP_SNAPSHOTS;
    bool can = self->snap && snaps;
    char key[SNAP_KEY_MAX], err[256] = "";
    bool found = can &&
                 snapops_key(self->snap, spec->image, spec->image_digest, spec->cpu, spec->mem_mib,
                             key, sizeof key, err, sizeof err) == 0 &&
                 snapops_find(self->snap, key);
    if (!found) {
        if (strcmp(boot, "snapshot") == 0) {
            if (!can)
                snprintf(msg, S_MSG_LEN, "--boot snapshot: host %s cannot restore %s VMs%s",
                         self->cfg.host_id, spec->engine,
                         snaps ? " (no QEMU version)" : "");
            else
                snprintf(msg, S_MSG_LEN,
                         "--boot snapshot: no template of image %s for cpu %u, mem %u MiB on "
                         "host %s (ttctl image prepare)",
                         spec->image, spec->cpu, spec->mem_mib, self->cfg.host_id);
            return TTFLEET__STATUS__BAD_REQUEST;
        }
        int st;
        if (can && self->build && !snapbuild_busy(self->build) && spec->ready && *spec->ready &&
            snapbuild_want(self->build, spec, &st, err, sizeof err))
            zsys_info("vm %u: no template made in the background: %s", spec->vm_id, err);
        return 0;
    }
    char id[16];
    snprintf(id, sizeof id, "%u", spec->vm_id);
    zhashx_update(self->restore, id, key);
    return 0;
}

/* vm is about to start: if s_snap_choose noted a template for it, take it
 * (its <vm dir>/template names it from here on) and put its directory in
 * self->restore_dir. True to restore, false to boot cold. */
static bool s_snap_take(fleet_t *self, const vm_t *vm)
{
    char id[16], key[SNAP_KEY_MAX], dir[4096], err[256];
    snprintf(id, sizeof id, "%u", vm->vm_id);
    const char *k = self->restore ? zhashx_lookup(self->restore, id) : NULL;
    if (!k)
        return false;
    snprintf(key, sizeof key, "%s", k);
    zhashx_delete(self->restore, id);
    if (engine_vm_path(&self->ctx, vm->vm_id, NULL, dir, sizeof dir) ||
        snapops_acquire(self->snap, dir, key, err, sizeof err)) {
        zsys_warning("vm %u: boots cold: %s", vm->vm_id, err);
        return false;
    }
    zhashx_update(self->tmpl_of, id, key);
    snprintf(self->restore_dir, sizeof self->restore_dir, "%.800s/%s", snapops_root(self->snap),
             key);
    return true;
}

/* On a pool thread: vm from the template j->tmpl_dir (a copy-on-write disk
 * over the template's replaces the one prepare_disk made, nothing was
 * written to it). The migration is polled here every SNAP_POLL_MS, bounded
 * by SNAP_SAVE_MS in snap_poll: this holds one pool thread, never the loop. */
static int s_restore_run(s_ejob_t *j)
{
    char disk[4200];
    if (engine_vm_path(j->ctx, j->vm.vm_id, "disk.qcow2", disk, sizeof disk) == 0)
        unlink(disk);
    snap_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.dir, sizeof op.dir, "%s", j->tmpl_dir);
    int64_t t0 = zclock_mono();
    if (j->eng->clone_restore(j->ctx, &j->vm, &op, j->err, sizeof j->err))
        return -1;
    for (;;) {
        int rc = j->eng->snap_poll(j->ctx, &j->vm, &op, j->err, sizeof j->err);
        if (rc < 0)
            return -1;
        if (rc == SNAP_FINISH) {
            if (j->eng->snap_finish(j->ctx, &j->vm, &op, j->err, sizeof j->err)) {
                j->eng->snap_abort(j->ctx, &j->vm, &op);
                return -1;
            }
            break;
        }
        if (rc == SNAP_DONE)
            break;
        zclock_sleep(SNAP_POLL_MS);
    }
    j->restore_ms = zclock_mono() - t0;
    return 0;
}
