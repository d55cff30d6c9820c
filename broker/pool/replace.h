/*
 * replace: re-placement. A create some of whose VMs a worker refused or
 * lost gets those VMs placed elsewhere (a few rounds); a draining host's
 * VMs are re-created on others (evacuate). Depends on the model, sched,
 * wcmd, persist and outq; it never dispatches an op itself (op.c does).
 */
#ifndef TT_BROKER_REPLACE_H
#define TT_BROKER_REPLACE_H

#include "model.h"

/* Move the failed VMs of create op to other hosts. true when every one
 * moved and op->vms holds them, ready for op_dispatch; false changes
 * nothing the caller's undo does not remove. */
bool replace_create_round(broker_t *self, op_t *op);
/* Re-create every VM of `from` elsewhere; msg says what happened. */
void replace_evacuate(broker_t *self, host_t *from, char *msg, size_t len);

#endif
