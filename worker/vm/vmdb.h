/*
 * vmdb: the worker's VM rows in worker.db (schema: worker_migrations).
 *
 * One row per VM the worker holds: the spec it last accepted, its actual
 * state, and the pid + start time of its process. The converge logic
 * changes rows inside one transaction per command (or per tick) and sends
 * its reply only after vmdb_commit() returned 0: a broker never hears
 * "running" for a VM a crash could make the worker forget.
 */
#ifndef TT_WORKER_VMDB_H
#define TT_WORKER_VMDB_H

#include <stddef.h>

#include "vm.h"

typedef struct vmdb_t vmdb_t;

vmdb_t *vmdb_open(const char *path, char *err, size_t errlen);
void vmdb_destroy(vmdb_t **self_p);
/* Record the overcommit ratios (cpu, mem, disk) the worker checks with in
 * the meta table (tools/ttcheck reads them). 0 / -1. */
int vmdb_set_ratios(vmdb_t *self, const double ratios[3]);

/* The highest broker Raft term this worker has seen (meta "broker_term",
 * 0 when none was recorded or the value does not parse). */
uint64_t vmdb_term(vmdb_t *self);
/* Record term (inside the open transaction, if any). 0 / -1. */
int vmdb_set_term(vmdb_t *self, uint64_t term);

int vmdb_begin(vmdb_t *self);
int vmdb_commit(vmdb_t *self);
int vmdb_rollback(vmdb_t *self);
/* One write inside the open transaction, undone alone if it fails:
 * savepoint, then release (keep) or rollback_to (undo and release). */
int vmdb_savepoint(vmdb_t *self);
int vmdb_release(vmdb_t *self);
int vmdb_rollback_to(vmdb_t *self);

/* Insert or update the row of vm. 0 / -1 (e.g. ip or mac held by another
 * row: the schema refuses it). */
int vmdb_put(vmdb_t *self, const vm_t *vm);
int vmdb_delete(vmdb_t *self, uint32_t vm_id);
/* Delete every row (before rewriting them all after a failed commit). */
int vmdb_clear(vmdb_t *self);

/* Call fn for every row, in vm_id order; fn takes ownership of vm (malloc'd).
 * Rows that do not parse are skipped with a log line. 0 / -1. */
int vmdb_load(vmdb_t *self, void (*fn)(vm_t *vm, void *arg), void *arg);

const char *vmdb_errmsg(vmdb_t *self);

/* Ports as stored: "guest:public,guest:public". Parse returns -1 on junk. */
void vmdb_ports_format(const vm_t *vm, char *buf, size_t len);
int vmdb_ports_parse(const char *s, vm_t *vm);

#endif
