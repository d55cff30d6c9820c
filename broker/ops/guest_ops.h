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

handler_fn guest_exec, guest_copy;

#endif
