/*
 * host_ops: the handlers of host and pool requests (host list / show /
 * drain / remove, pool status). Depends on the model, sched, persist,
 * reply, replace and outq.
 */
#ifndef TT_BROKER_HOST_OPS_H
#define TT_BROKER_HOST_OPS_H

#include "handler.h"

handler_fn host_list, host_show, host_admin, host_pool_status;

#endif
