/*
 * stats_ops: the handler of Request.broker_stats (admin). Depends on
 * handler.h, stats, reply and outq.
 */
#ifndef TT_BROKER_STATS_OPS_H
#define TT_BROKER_STATS_OPS_H

#include "handler.h"

handler_fn broker_stats;

#endif
