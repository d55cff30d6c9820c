/*
 * op: the life cycle of an op_t, a request in flight that waits for
 * workers: open it (op_new makes the env busy and records the request as
 * in progress), dispatch its VMs to their hosts, collect the answers
 * (op_worker_reply), fail what a dead host or a deadline leaves waiting,
 * and finish: reply, record, and for a failed create try re-placement
 * (replace.c) or undo everything. Depends on the model, reply, wcmd,
 * replace, persist and outq.
 */
#ifndef TT_BROKER_OP_H
#define TT_BROKER_OP_H

#include "model.h"

op_t *op_new(broker_t *self, op_kind_t kind, env_t *env, zmsg_t *envelope, const char *service,
             const char *tenant, const char *rid);
void op_free(broker_t *self, op_t **op_p);
/* Record a failure of part of an op: the first status wins, messages add up. */
void op_fail(op_t *op, int status, const char *text);
/* Send the op's VMs to their hosts, grouped by host, and wait for replies. */
void op_dispatch(broker_t *self, op_t *op);
/* Wait for command cmd_id on host too (the caller queued it). */
void op_wait(broker_t *self, op_t *op, host_t *host, uint64_t cmd_id);
/* Destroy an env's VMs (ABSENT to their hosts), its rows and its model. */
void op_env_drop(broker_t *self, env_t *env);
/* A worker answered a command. */
void op_worker_reply(broker_t *self, host_t *host, Ttfleet__WorkerReply *reply);
/* Host went down: fail what waits for it. */
void op_host_down(broker_t *self, host_t *host);
/* Fail the ops past their deadline. */
void op_tick(broker_t *self, int64_t now_ms);

/* Take a VM's readiness from its worker's report (a reply, an event or the
 * READY inventory); queues vm.ready, and env.ready when the env's last VM
 * becomes ready. Ready is dropped when the VM leaves RUNNING. */
void op_vm_ready(broker_t *self, vm_t *vm, const Ttfleet__VmActual *va);

#endif
