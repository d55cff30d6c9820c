/*
 * handler: the contract of a client request handler (env_ops.c,
 * host_ops.c), registered in dispatch.c's table.
 *
 * A handler returns 0 when it queued its own reply (or opened an op that
 * will), or a Ttfleet status with the reason in c->msg. A failing handler
 * must have changed nothing in memory (validate and allocate first, then
 * mutate; or undo what it did); the dispatcher then rolls its rows back to
 * the request's savepoint, drops what it queued and sends the error,
 * recorded if the table says the operation records.
 */
#ifndef TT_BROKER_HANDLER_H
#define TT_BROKER_HANDLER_H

#include "model.h"

#include <stdio.h>

typedef struct {
    broker_t *self;
    zmsg_t *envelope;
    const char *service;
    const Ttfleet__Request *req;
    const char *tenant;
    const char *rid;
    bool admin;
    bool no_record; /* this error is not an outcome: a retry decides again */
    char msg[768];
} handler_ctx_t;

typedef int handler_fn(handler_ctx_t *c);

static inline int handler_fail(handler_ctx_t *c, int status, const char *msg)
{
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    return status;
}

static inline int handler_fail_norec(handler_ctx_t *c, int status, const char *msg)
{
    c->no_record = true;
    return handler_fail(c, status, msg);
}

#endif
