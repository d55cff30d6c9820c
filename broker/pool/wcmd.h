/*
 * wcmd: worker commands. Encodes a VM's desired state as a VmSpec and
 * queues COMMANDs (grouped per host, chunked). Depends on the model and
 * outq.
 */
#ifndef TT_BROKER_WCMD_H
#define TT_BROKER_WCMD_H

#include "model.h"

/* Fill a VmSpec for vm with the given desired state (strings borrowed,
 * except spec->env, which the caller frees). */
void wcmd_vm_spec(const vm_t *vm, int desired, Ttfleet__VmSpec *spec, Ttfleet__PortMap *pm_store,
                  Ttfleet__PortMap **pm_ptrs);
/* What one batch may queue to one host. Beyond it commands are refused
 * (wcmd_send returns 0, the op that wanted it fails with UNAVAILABLE at
 * once) and the host is marked for a resync: at the next tick the broker
 * sends every spec it has for the host once (wcmd_resync), which
 * coalesces whatever was refused, since specs are declarative. */
#define WCMD_HOST_BATCH_BYTES (16u * 1024 * 1024)

/* Queue a COMMAND with specs for vms[] on host (desired NULL: each VM's
 * own desired state); returns the command op id, 0 if the host's queue
 * for this batch is full. */
uint64_t wcmd_send(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n);
/* Send the desired state of vms[] to their hosts, one command per host,
 * without waiting for answers. */
void wcmd_send_specs(broker_t *self, vm_t **vms, int n);
/* Queue cmd (already filled, op id included) to host; -1 if refused. */
int wcmd_send_raw(broker_t *self, host_t *host, const Ttfleet__WorkerCommand *cmd);
/* Send every spec the broker has for host (in chunks, outside the bound);
 * READY and the resync of a host whose commands were refused. */
void wcmd_resync(broker_t *self, host_t *host);
/* Queue a console read of vm_id on host; returns the command op id. */
/* Asks host to fetch a catalog image into its cache (image pull): the
 * image fields of image (a vm_t filled by image_ops_resolve). The op id,
 * 0 if it could not be queued. */
uint64_t wcmd_pull(broker_t *self, host_t *host, const vm_t *image);
uint64_t wcmd_console(broker_t *self, host_t *host, uint32_t vm_id, uint32_t max_bytes);
/* Queue an exec or a copy chunk (one of them set, borrowed) for host;
 * returns the command op id, 0 if refused. */
uint64_t wcmd_guest(broker_t *self, host_t *host, Ttfleet__EnvExec *exec, Ttfleet__EnvCopy *copy);

/* Capacity being freed. A command that destroys VMs (desired ABSENT) keeps
 * what the broker accounted for them charged on their host (host_t
 * cpu_freeing etc.) until that host's worker answers the command, whatever
 * the answer: the broker removes a deleted VM from its model at once, but
 * the worker holds its cpu, memory and disk until the VM is gone (a stop
 * grace can take --stop-timeout-ms), and its own resource check would
 * refuse a VM placed there meanwhile. wcmd_freed: host answered op_id (true
 * if that released something: the caller runs admission). Dropped too when
 * the host goes down or says READY (its inventory is reconciled then), and
 * after --worker-timeout-ms without an answer (wcmd_freeing_tick). */
bool wcmd_freed(broker_t *self, const host_t *host, uint64_t op_id);
void wcmd_freeing_drop(broker_t *self, const host_t *host);
/* Holds past their deadline are dropped; true if any was. */
bool wcmd_freeing_tick(broker_t *self, int64_t now_ms);

#endif
