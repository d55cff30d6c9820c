/*
 * dispatch: the table of request handlers (Request.op case -> handler and
 * flags) and the one function that runs a validated request through it:
 * idempotency, the admin check, the request's savepoint, the error reply.
 * Depends on env_ops, host_ops, reply, persist and outq.
 */
#ifndef TT_BROKER_DISPATCH_H
#define TT_BROKER_DISPATCH_H

#include "model.h"

void dispatch_request(broker_t *self, zmsg_t *envelope, const char *service, Ttfleet__Request *req,
                      bool admin);

#endif
