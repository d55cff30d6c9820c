/*
 * guest_ops: the handlers of env_exec and env_copy (issue 11): run a
 * command in one VM, move one chunk of a file to or from one VM. Neither
 * changes the broker's state: each is tenant-checked like every env op,
 * needs the VM running and its host up, and opens a read-only op
 * (OP_GUEST, as env_console) that waits for the VM's worker, which does
 * the work off its loop (worker/guest/guestop.c). Depends on handler.h, the
 * model, wcmd, op and reply.
 */
#ifndef TT_BROKER_GUEST_OPS_H
#define TT_BROKER_GUEST_OPS_H

#include "handler.h"

/* Exec / copy requests one tenant may have waiting for one host. */
#define GUEST_TENANT_HOST_MAX 8
/* Copy transfers one tenant may hold open on one host: a quarter of the
 * worker's GUESTOP_XFERS_MAX (8), so one tenant's idle transfers never
 * take all of a host's. A transfer is open from the answer to its first
 * chunk until the chunk that ends it, a failure, or GUEST_XFER_IDLE_MS
 * without a chunk (the worker drops it then too). */
#define GUEST_TENANT_XFERS_MAX 2
#define GUEST_XFER_IDLE_MS (2 * 60 * 1000)

handler_fn guest_exec, guest_copy;

#endif
