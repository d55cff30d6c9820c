/*
 * host_ops: the handlers of host and pool requests (host list / show /
 * drain / remove / set, pool status). Depends on the model, sched, persist,
 * reply, replace, op (to end what waits on a removed host) and outq.
 */
#ifndef TT_BROKER_HOST_OPS_H
#define TT_BROKER_HOST_OPS_H

#include "handler.h"

handler_fn host_list, host_show, host_admin, host_pool_status, host_set;

#endif
