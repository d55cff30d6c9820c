/*
 * env_ops: the handlers of env requests (create, show, list, stop, start,
 * pause, resume, delete, extend, update, rm-vm, console). See handler.h for
 * the contract and dispatch.c for the table. Depends on the model, sched,
 * persist, reply, wcmd, op and outq.
 */
#ifndef TT_BROKER_ENV_OPS_H
#define TT_BROKER_ENV_OPS_H

#include "handler.h"
#include "quota.h"

handler_fn env_create, env_show, env_list, env_stop, env_start, env_pause, env_resume, env_suspend,
    env_delete, env_extend, env_update, env_rm_vm, env_console;
/* Place and start a create for tenant (the normal path, and queue
 * admission with envelope NULL). 0 when an op was opened; else a status
 * with the reason in msg, nothing changed; *settling when the outcome must
 * not be recorded (a retry decides again). */
int env_create_place(broker_t *self, const Ttfleet__EnvCreate *cr, const char *tenant,
                     zmsg_t *envelope, const char *service, const char *rid, bool *settling,
                     char *msg, size_t msglen);
/* 0 when tenant's usage plus wanted is within its quota, else -1 and msg. */
int env_ops_quota(broker_t *self, const char *tenant, const quota_usage_t *wanted, char *msg,
                  size_t msglen);
/* An event about a queued create (env.queued, env.queue_expired, ...). */
void env_ops_queue_event(broker_t *self, const char *kind, const char *tenant, const char *name,
                         const char *message);
/* Delete env now (client delete or the reaper); kind is the event. */
void env_ops_delete(broker_t *self, env_t *env, const char *kind);

#endif
