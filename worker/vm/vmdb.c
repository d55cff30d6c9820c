/*
 * vmdb: worker.db rows. See vmdb.h.
 *
 * Rows are read back with the same checks as a VmSpec from the wire: a
 * hand-edited or corrupted row must not become an out-of-range VM.
 */
#include "vmdb.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "ttblob.h"
#include "ttproto.h"
#include "wire.h"
#include "worker_schema.h"

struct vmdb_t {
    store_t *store;
};

vmdb_t *vmdb_open(const char *path, char *err, size_t errlen)
{
    vmdb_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->store = store_open(path, worker_migrations, worker_migrations_n, err, errlen);
    if (!self->store) {
        free(self);
        return NULL;
    }
    return self;
}

int vmdb_set_ratios(vmdb_t *self, const double ratios[3])
{
    return store_meta_ratios(self->store, ratios);
}

uint64_t vmdb_term(vmdb_t *self)
{
    sqlite3_stmt *st = store_stmt(self->store, "SELECT value FROM meta WHERE key = 'broker_term'");
    if (!st)
        return 0;
    uint64_t term = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *v = (const char *)sqlite3_column_text(st, 0);
        char *end = NULL;
        unsigned long long t = v && v[0] >= '0' && v[0] <= '9' ? strtoull(v, &end, 10) : 0;
        if (end && !*end)
            term = t;
    }
    sqlite3_reset(st);
    return term;
}

int vmdb_set_term(vmdb_t *self, uint64_t term)
{
    sqlite3_stmt *st = store_stmt(
        self->store, "INSERT OR REPLACE INTO meta (key, value) VALUES ('broker_term', ?1)");
    if (!st)
        return -1;
    char text[24];
    snprintf(text, sizeof text, "%llu", (unsigned long long)term);
    sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    return store_step_done(self->store, st);
}

void vmdb_destroy(vmdb_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    store_destroy(&(*self_p)->store);
    free(*self_p);
    *self_p = NULL;
}

int vmdb_begin(vmdb_t *self)
{
    return store_begin(self->store);
}

int vmdb_commit(vmdb_t *self)
{
    return store_commit(self->store);
}

int vmdb_rollback(vmdb_t *self)
{
    return store_rollback(self->store);
}

int vmdb_savepoint(vmdb_t *self)
{
    return store_savepoint(self->store, "vmdb_row");
}

int vmdb_release(vmdb_t *self)
{
    return store_release(self->store, "vmdb_row");
}

int vmdb_rollback_to(vmdb_t *self)
{
    return store_rollback_to(self->store, "vmdb_row");
}

const char *vmdb_errmsg(vmdb_t *self)
{
    return store_errmsg(self->store);
}

void vmdb_ports_format(const vm_t *vm, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < vm->n_ports && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%u:%u", i ? "," : "", vm->ports[i].guest,
                                vm->ports[i].public_port);
}

int vmdb_ports_parse(const char *s, vm_t *vm)
{
    vm->n_ports = 0;
    while (s && *s) {
        char *end;
        unsigned long g = strtoul(s, &end, 10);
        if (end == s || *end != ':')
            return -1;
        s = end + 1;
        unsigned long p = strtoul(s, &end, 10);
        if (end == s || (*end && *end != ','))
            return -1;
        if (g < 1 || g > 65535 || (p && (p < TT_PORT_MIN || p > TT_PORT_MAX)) ||
            vm->n_ports >= TT_MAX_PORTS_PER_VM)
            return -1;
        vm->ports[vm->n_ports].guest = (uint32_t)g;
        vm->ports[vm->n_ports].public_port = (uint32_t)p;
        vm->n_ports++;
        s = *end ? end + 1 : end;
    }
    return 0;
}

int vmdb_put(vmdb_t *self, const vm_t *vm)
{
    sqlite3_stmt *st =
        store_stmt(self->store,
                   "INSERT INTO vms (vm_id, env, image, engine, cpu, mem, disk, ip, mac, ports,"
                   " deny_outgoing, expires_at, state, pid, start_time, updated_at, image_digest)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,"
                   " ?17)"
                   " ON CONFLICT (vm_id) DO UPDATE SET env = ?2, image = ?3, engine = ?4, cpu = ?5,"
                   " mem = ?6, disk = ?7, ip = ?8, mac = ?9, ports = ?10, deny_outgoing = ?11,"
                   " expires_at = ?12, state = ?13, pid = ?14, start_time = ?15, updated_at = ?16,"
                   " image_digest = ?17");
    if (!st)
        return -1;
    char ports[TT_MAX_PORTS_PER_VM * 12 + 1];
    vmdb_ports_format(vm, ports, sizeof ports);
    sqlite3_bind_int64(st, 1, vm->vm_id);
    sqlite3_bind_text(st, 2, vm->env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, vm->image, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, vm->engine, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, vm->cpu);
    sqlite3_bind_int64(st, 6, vm->mem_mib);
    sqlite3_bind_int64(st, 7, vm->disk_mib);
    sqlite3_bind_text(st, 8, vm->ip, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, vm->mac, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, ports, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 11, vm->deny_outgoing);
    sqlite3_bind_int64(st, 12, vm->expires_at);
    sqlite3_bind_int(st, 13, vm->state);
    sqlite3_bind_int64(st, 14, vm->pid);
    sqlite3_bind_int64(st, 15, (sqlite3_int64)vm->start_time);
    sqlite3_bind_int64(st, 16, tt_now());
    sqlite3_bind_text(st, 17, vm->image_digest, -1, SQLITE_STATIC);
    return store_step_done(self->store, st);
}

int vmdb_delete(vmdb_t *self, uint32_t vm_id)
{
    sqlite3_stmt *st = store_stmt(self->store, "DELETE FROM vms WHERE vm_id = ?1");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, vm_id);
    return store_step_done(self->store, st);
}

int vmdb_clear(vmdb_t *self)
{
    return store_exec(self->store, "DELETE FROM vms");
}

static int s_copy(char *dst, size_t len, const unsigned char *src)
{
    if (!src || strlen((const char *)src) >= len)
        return -1;
    strcpy(dst, (const char *)src);
    return 0;
}

static int s_row(sqlite3_stmt *st, vm_t *vm)
{
    sqlite3_int64 id = sqlite3_column_int64(st, 0);
    if (id < TT_VMID_MIN || id > TT_VMID_MAX)
        return -1;
    vm->vm_id = (uint32_t)id;
    if (s_copy(vm->env, sizeof vm->env, sqlite3_column_text(st, 1)) ||
        s_copy(vm->image, sizeof vm->image, sqlite3_column_text(st, 2)) ||
        s_copy(vm->engine, sizeof vm->engine, sqlite3_column_text(st, 3)) ||
        s_copy(vm->ip, sizeof vm->ip, sqlite3_column_text(st, 7)) ||
        s_copy(vm->mac, sizeof vm->mac, sqlite3_column_text(st, 8)))
        return -1;
    if (!wire_env_valid(vm->env) || !tt_name_valid(vm->image) || !tt_name_valid(vm->engine) ||
        !wire_ip_valid(vm->ip) || !wire_mac_valid(vm->mac))
        return -1;
    sqlite3_int64 cpu = sqlite3_column_int64(st, 4), mem = sqlite3_column_int64(st, 5),
                  disk = sqlite3_column_int64(st, 6);
    if (cpu < 1 || cpu > TT_MAX_CPU || mem < 1 || mem > TT_MAX_MEM_MIB || disk < 1 ||
        disk > TT_MAX_DISK_MIB)
        return -1;
    vm->cpu = (uint32_t)cpu;
    vm->mem_mib = (uint32_t)mem;
    vm->disk_mib = (uint32_t)disk;
    if (vmdb_ports_parse((const char *)sqlite3_column_text(st, 9), vm))
        return -1;
    vm->deny_outgoing = sqlite3_column_int(st, 10) != 0;
    vm->expires_at = sqlite3_column_int64(st, 11);
    int state = sqlite3_column_int(st, 12);
    if (state != TTFLEET__VM_STATE__VM_RUNNING && state != TTFLEET__VM_STATE__VM_STOPPED &&
        state != TTFLEET__VM_STATE__VM_PAUSED && state != TTFLEET__VM_STATE__VM_DEAD &&
        state != TTFLEET__VM_STATE__VM_SUSPENDED)
        return -1;
    vm->state = state;
    sqlite3_int64 pid = sqlite3_column_int64(st, 13);
    vm->pid = pid > 0 && pid <= 4194304 ? (pid_t)pid : 0;
    vm->start_time = (uint64_t)sqlite3_column_int64(st, 14);
    const unsigned char *dg = sqlite3_column_text(st, 15);
    if (dg && *dg && (s_copy(vm->image_digest, sizeof vm->image_digest, dg) ||
                      !tt_digest_valid(vm->image_digest)))
        return -1;
    return 0;
}

int vmdb_load(vmdb_t *self, void (*fn)(vm_t *vm, void *arg), void *arg)
{
    sqlite3_stmt *st =
        store_stmt(self->store, "SELECT vm_id, env, image, engine, cpu, mem, disk, ip, mac,"
                                " ports, deny_outgoing, expires_at, state, pid, start_time,"
                                " image_digest FROM vms ORDER BY vm_id");
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        vm_t *vm = calloc(1, sizeof *vm);
        if (!vm) {
            sqlite3_reset(st);
            return -1;
        }
        if (s_row(st, vm)) {
            fprintf(stderr, "vmdb: skipping malformed row of vm %lld\n",
                    (long long)sqlite3_column_int64(st, 0));
            free(vm);
            continue;
        }
        fn(vm, arg);
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : -1;
}
