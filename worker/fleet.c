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
#include "images.h"
#include "ttcrash.h"
#include "vmdb.h"
#include "wire.h"

#define S_MSG_LEN 256

struct fleet_t {
    fleet_config_t cfg;
    engine_ctx_t ctx;
    vmdb_t *db;
    net_t *net;
    images_t *images;
    vm_t **table; /* [TT_VMID_MAX + 1] */
    size_t count;
    bool dirty;      /* a commit failed: rewrite every row */
    bool net_resync; /* an exact network change failed: rebuild it whole */
};

/* A list of VmActual being built for a reply or an event. */
typedef struct {
    Ttfleet__VmActual *items;
    Ttfleet__VmActual **ptrs;
    char (*msgs)[S_MSG_LEN];
    size_t n, cap;
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

static void s_put(fleet_t *self, const vm_t *vm)
{
    if (vmdb_put(self->db, vm))
        self->dirty = true;
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
    const char *what = strcmp(vm->image, spec->image)     ? "image"
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
    if (vmdb_delete(self->db, vm->vm_id))
        self->dirty = true;
    self->table[vm->vm_id] = NULL;
    self->count--;
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

/* Move vm (which exists, spec already copied in) to the desired state.
 * Returns a status; msg says why on failure. */
static int s_transition(fleet_t *self, vm_t *vm, int desired, bool checked, char *msg)
{
    const engine_t *eng = s_engine(vm);
    char err[200] = "";
    int from = vm->state;
    if (from == desired)
        return TTFLEET__STATUS__OK;

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
        if (eng->prepare_disk(&self->ctx, vm, err, sizeof err) ||
            net_vm_before_start(self->net, vm, err, sizeof err) ||
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

/* Apply one spec. Returns a status; fills *state with the VM's actual
 * state after it and msg on failure. */
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
        *state = TTFLEET__VM_STATE__VM_ABSENT;
        return TTFLEET__STATUS__OK;
    }
    if (!s_engine_enabled(self, spec->engine)) {
        snprintf(msg, S_MSG_LEN, "engine '%s' is not offered by host %s", spec->engine,
                 self->cfg.host_id);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    if (!images_has(self->images, spec->image)) {
        images_rescan(self->images);
        if (!images_has(self->images, spec->image)) {
            snprintf(msg, S_MSG_LEN, "image '%s' is not present on host %s", spec->image,
                     self->cfg.host_id);
            return TTFLEET__STATUS__BAD_REQUEST;
        }
    }
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
        vm = calloc(1, sizeof *vm);
        if (!vm) {
            snprintf(msg, S_MSG_LEN, "out of memory");
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        s_from_spec(vm, spec);
        vm->state = TTFLEET__VM_STATE__VM_STOPPED;
        const engine_t *eng = s_engine(vm);
        if (eng->prepare_disk(&self->ctx, vm, err, sizeof err)) {
            snprintf(msg, S_MSG_LEN, "prepare disk of vm %u: %s", vm->vm_id, err);
            free(vm);
            return TTFLEET__STATUS__WORKER_FAILED;
        }
        self->table[vm->vm_id] = vm;
        self->count++;
        s_put(self, vm);
        if (net_vm_add(self->net, vm, err, sizeof err)) {
            zsys_warning("vm %u: network: %s; rebuilding the network state", vm->vm_id, err);
            self->net_resync = true;
        }
        zsys_info("vm %u (%s): created (%s, %s)", vm->vm_id, vm->env, vm->engine, vm->image);
    }
    int status = s_transition(self, vm, spec->desired, checked, msg);
    *state = vm->state;
    return status;
}

/* Rewrite every row from the table, after a failed commit. */
static void s_flush_all(fleet_t *self)
{
    if (vmdb_begin(self->db) || vmdb_clear(self->db))
        goto fail;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++)
        if (self->table[id] && vmdb_put(self->db, self->table[id]))
            goto fail;
    if (vmdb_commit(self->db))
        goto fail;
    self->dirty = false;
    zsys_info("worker.db rewritten from memory after an earlier failure");
    return;
fail:
    vmdb_rollback(self->db);
    zsys_error("worker.db is still out of date: %s", vmdb_errmsg(self->db));
}

/* Commit the open transaction; on failure remember to rewrite. 0 / -1. */
static int s_commit(fleet_t *self)
{
    if (!self->dirty && vmdb_commit(self->db) == 0)
        return 0;
    vmdb_rollback(self->db);
    self->dirty = true;
    zsys_error("worker.db commit failed: %s", vmdb_errmsg(self->db));
    return -1;
}

/* The crash point between two VMs of a command that moves them to desired. */
static const char *s_mid_point(int desired)
{
    switch (desired) {
    case TTFLEET__VM_STATE__VM_STOPPED:
        return "worker.mid_stop";
    case TTFLEET__VM_STATE__VM_PAUSED:
        return "worker.mid_pause";
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

/* Ask every running VM this command stops or destroys to shut down, so
 * their graceful waits overlap: a command stopping N VMs waits about one
 * stop timeout, not N. */
static void s_stops_begin(fleet_t *self, const Ttfleet__WorkerCommand *cmd)
{
    for (size_t i = 0; i < cmd->n_vms; i++) {
        const Ttfleet__VmSpec *spec = cmd->vms[i];
        vm_t *vm = spec->vm_id >= TT_VMID_MIN && spec->vm_id <= TT_VMID_MAX
                       ? self->table[spec->vm_id]
                       : NULL;
        const engine_t *eng = vm ? s_engine(vm) : NULL;
        if (eng && eng->stop_begin && vm_holds_cpu(vm) &&
            (spec->desired == TTFLEET__VM_STATE__VM_STOPPED ||
             spec->desired == TTFLEET__VM_STATE__VM_ABSENT))
            eng->stop_begin(&self->ctx, vm);
    }
}

zframe_t *fleet_command(fleet_t *self, const byte *body, size_t len)
{
    Ttfleet__WorkerCommand *cmd = ttfleet__worker_command__unpack(NULL, len, body);
    if (!cmd) {
        zsys_warning("COMMAND body does not decode (%zu bytes): dropped", len);
        return NULL;
    }
    Ttfleet__WorkerReply reply = TTFLEET__WORKER_REPLY__INIT;
    reply.op_id = cmd->op_id;
    reply.status = TTFLEET__STATUS__OK;
    char message[S_MSG_LEN + 32] = "";
    s_actuals_t acts;
    if (s_actuals_init(&acts, cmd->n_vms)) {
        reply.status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(message, sizeof message, "out of memory");
        cmd->n_vms = 0;
    }
    bool in_tx = vmdb_begin(self->db) == 0;
    if (!in_tx)
        self->dirty = true;
    s_stops_begin(self, cmd);
    for (size_t i = 0; i < cmd->n_vms; i++) {
        const Ttfleet__VmSpec *spec = cmd->vms[i];
        int state = TTFLEET__VM_STATE__VM_ABSENT, status;
        char msg[S_MSG_LEN] = "";
        bool dup = false;
        for (size_t j = 0; j < i && !dup; j++)
            dup = cmd->vms[j]->vm_id == spec->vm_id;
        if (dup) {
            snprintf(msg, sizeof msg, "vm %u appears twice in one command", spec->vm_id);
            status = TTFLEET__STATUS__BAD_REQUEST;
            const vm_t *vm = spec->vm_id <= TT_VMID_MAX ? self->table[spec->vm_id] : NULL;
            state = vm ? vm->state : TTFLEET__VM_STATE__VM_ABSENT;
        } else {
            status = s_converge(self, spec, &state, msg);
        }
        if (i + 1 < cmd->n_vms) /* between two VMs of one command */
            tt_crash_point(s_mid_point(spec->desired));
        const vm_t *vm = spec->vm_id <= TT_VMID_MAX ? self->table[spec->vm_id] : NULL;
        char *m =
            s_actuals_add(&acts, spec->vm_id, state, vm ? vm->env : "", vm ? vm->expires_at : 0);
        snprintf(m, S_MSG_LEN, "%s", msg);
        if (status != TTFLEET__STATUS__OK) {
            zsys_warning("op %llu: vm %u: %s: %s", (unsigned long long)cmd->op_id, spec->vm_id,
                         tt_status_name(status), msg);
            if (reply.status == TTFLEET__STATUS__OK) {
                reply.status = (Ttfleet__Status)status;
                snprintf(message, sizeof message, "%s", msg);
            }
        }
    }
    if (in_tx && s_commit(self) && reply.status == TTFLEET__STATUS__OK) {
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
    ttfleet__worker_command__free_unpacked(cmd, NULL);
    return frame;
}

zframe_t *fleet_hello(fleet_t *self)
{
    images_rescan(self->images);
    if (vmdb_begin(self->db))
        self->dirty = true;
    s_actuals_t acts;
    if (s_actuals_init(&acts, self->count)) {
        vmdb_rollback(self->db);
        return NULL;
    }
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX && self->count; id++) {
        vm_t *vm = self->table[id];
        if (!vm)
            continue;
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
    hello.n_images = images_count(self->images);
    hello.images = images_names(self->images);
    hello.n_inventory = acts.n;
    hello.inventory = acts.ptrs;
    hello.version = (char *)"ttworker " TTFLEET_VERSION;
    hello.accel = (char *)(self->cfg.accel ? self->cfg.accel : "");
    zframe_t *frame = wire_pack(&hello.base);
    s_actuals_free(&acts);
    return frame;
}

zframe_t *fleet_tick(fleet_t *self, int64_t now)
{
    if (self->dirty)
        s_flush_all(self);
    if (self->net_resync)
        s_net_sync(self);
    if (!self->count)
        return NULL;
    s_actuals_t acts = {0};
    bool in_tx = false;
    for (uint32_t id = TT_VMID_MIN; id <= TT_VMID_MAX; id++) {
        vm_t *vm = self->table[id];
        if (!vm)
            continue;
        bool expired = now > vm->expires_at + self->cfg.expiry_grace;
        bool died = !expired && vm_holds_cpu(vm) && !s_engine(vm)->is_alive(&self->ctx, vm);
        if (!expired && !died)
            continue;
        if (!in_tx) {
            if (s_actuals_init(&acts, self->count))
                return NULL;
            if (vmdb_begin(self->db))
                self->dirty = true;
            in_tx = true;
        }
        if (died) {
            s_refresh(self, vm);
            char *m = s_actuals_add(&acts, vm->vm_id, vm->state, vm->env, vm->expires_at);
            snprintf(m, S_MSG_LEN, "vm process exited on its own");
            continue;
        }
        char msg[S_MSG_LEN] = "";
        zsys_info("vm %u (%s): expired at %lld (+%llds grace), destroying", vm->vm_id, vm->env,
                  (long long)vm->expires_at, (long long)self->cfg.expiry_grace);
        /* The event entry points at vm->env, which s_destroy_vm frees:
         * keep a copy in the message slot's neighbour, the message text. */
        uint32_t vm_id = vm->vm_id;
        int64_t exp = vm->expires_at;
        char env[VM_ENV_MAX];
        snprintf(env, sizeof env, "%s", vm->env);
        if (s_destroy_vm(self, vm, msg)) {
            zsys_error("vm %u: %s", vm_id, msg);
            continue;
        }
        char *m = s_actuals_add(&acts, vm_id, TTFLEET__VM_STATE__VM_ABSENT, "", exp);
        snprintf(m, S_MSG_LEN, "%s", env);
        acts.items[acts.n - 1].env = m;
    }
    if (!in_tx)
        return NULL;
    s_commit(self);
    zframe_t *frame = NULL;
    if (acts.n) {
        Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
        ev.n_vms = acts.n;
        ev.vms = acts.ptrs;
        frame = wire_pack(&ev.base);
    }
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

static void s_reconcile(fleet_t *self)
{
    if (vmdb_begin(self->db))
        self->dirty = true;
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
    self->ctx.images_dir = cfg->images_dir;
    self->ctx.stop_timeout_ms = cfg->stop_timeout_ms;
    self->ctx.qemu = cfg->qemu;
    self->ctx.qemu_img = cfg->qemu_img;
    self->ctx.accel = cfg->accel;
    self->ctx.net = cfg->net.kind;
    self->ctx.vm_user = cfg->vm_user;
    self->ctx.vm_uid = cfg->vm_uid;
    self->ctx.vm_gid = cfg->vm_gid;
    self->table = calloc(TT_VMID_MAX + 1, sizeof *self->table);
    self->images = images_new(cfg->images_dir);
    if (!self->table || !self->images) {
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
    snprintf(path, sizeof path, "%s/worker.db", cfg->state_dir);
    self->db = vmdb_open(path, err, errlen);
    if (!self->db) {
        fleet_destroy(&self);
        return NULL;
    }
    if (vmdb_load(self->db, s_load_one, self)) {
        snprintf(err, errlen, "load %s: %s", path, vmdb_errmsg(self->db));
        fleet_destroy(&self);
        return NULL;
    }
    self->net = net_new(&cfg->net, err, errlen);
    if (!self->net) {
        fleet_destroy(&self);
        return NULL;
    }
    s_reconcile(self);
    if (s_net_sync(self))
        self->net_resync = true; /* tried again every tick */
    return self;
}

void fleet_destroy(fleet_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    fleet_t *self = *self_p;
    if (self->table) {
        for (uint32_t id = 0; id <= TT_VMID_MAX; id++)
            free(self->table[id]);
        free(self->table);
    }
    images_destroy(&self->images);
    net_destroy(&self->net);
    vmdb_destroy(&self->db);
    free(self);
    *self_p = NULL;
}
