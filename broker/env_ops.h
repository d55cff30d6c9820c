/*
 * env_ops: the handlers of env requests (create, show, list, stop, start,
 * pause, resume, delete, extend, update, rm-vm, console). See handler.h for
 * the contract and dispatch.c for the table. Depends on the model, sched,
 * persist, reply, wcmd, op and outq.
 */
#ifndef TT_BROKER_ENV_OPS_H
#define TT_BROKER_ENV_OPS_H

#include "handler.h"

handler_fn env_create, env_show, env_list, env_stop, env_start, env_pause, env_resume, env_delete,
    env_extend, env_update, env_rm_vm, env_console;
/* Delete env now (client delete or the reaper); kind is the event. */
void env_ops_delete(broker_t *self, env_t *env, const char *kind);

#endif
