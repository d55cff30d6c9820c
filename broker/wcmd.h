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
/* Queue a COMMAND with specs for vms[] on host (desired NULL: each VM's
 * own desired state); returns the command op id. */
uint64_t wcmd_send(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n);
/* Send the desired state of vms[] to their hosts, one command per host,
 * without waiting for answers. */
void wcmd_send_specs(broker_t *self, vm_t **vms, int n);
/* Queue cmd (already filled, op id included) to host. */
void wcmd_send_raw(broker_t *self, host_t *host, const Ttfleet__WorkerCommand *cmd);
/* Queue a console read of vm_id on host; returns the command op id. */
uint64_t wcmd_console(broker_t *self, host_t *host, uint32_t vm_id, uint32_t max_bytes);

#endif
