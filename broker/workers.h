/*
 * workers: the broker's side of TTW01 (READY and reconciliation, REPLY,
 * EVENT, heartbeats and liveness). Calls down into op, wcmd, sched,
 * persist, outq and the model.
 */
#ifndef TT_BROKER_WORKERS_H
#define TT_BROKER_WORKERS_H

#include "model.h"

/* One message from the workers socket (routing id first). */
void workers_handle(broker_t *self, zmsg_t *msg);
void workers_tick(broker_t *self, int64_t now_ms);

#endif
