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
/* The worker keys in --worker-keys now (CURVE; n/40 Z85 keys end to end, as
 * the ZAP handler read them): a host connected with a key no longer there
 * is told to DISCONNECT and taken down, and its READY is refused from then
 * on, on the live connection too; the blob server refuses its fetches. */
void workers_keys_update(broker_t *self, const void *keys, size_t n);

#endif
