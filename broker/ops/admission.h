/*
 * admission: the broker side of the admission queue (admq.h). Runs queue
 * admission after every change that frees capacity (delete, stop, rm-vm:
 * self->admit_wanted, checked by the dispatcher) and on the reaper tick
 * (which covers a host coming up, VMs reaching "stopped", a failed create
 * giving its room back); ends entries whose max-wait passed; prunes the
 * audit log (--audit-days). Depends on the model, env_ops, usage, reply,
 * persist and the admission modules.
 */
#ifndef TT_BROKER_ADMISSION_H
#define TT_BROKER_ADMISSION_H

#include "model.h"

/* Admit what fits now, in queue order. */
void admission_run(broker_t *self, int64_t now);
/* Put a queued create that was admitted and then refused for capacity
 * back in its place (entry: a copy from admq_entry_dup, taken on success),
 * with an env.queued event saying why. 0 / -1 (the caller keeps the copy
 * and answers the request). */
int admission_requeue(broker_t *self, struct admq_entry_t *entry, const char *why);
/* The tick: expiry, admission, bounded audit pruning. */
void admission_tick(broker_t *self, int64_t now);
/* "tenant\x1frequest id" of every queued create (the caller destroys the
 * hash): at start these requests are still in progress, not interrupted. */
zhashx_t *admission_queued_requests(broker_t *self);

#endif
