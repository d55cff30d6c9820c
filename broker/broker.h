/*
 * broker: ttbroker's loop, its sockets and the group commit; the API that
 * main.c, the unit tests and the fuzzer use.
 *
 * The broker is one thread. Its loop reads a batch of messages from the
 * clients and workers sockets; the handlers change the model and stage rows
 * in one open SQLite transaction (one savepoint per client request);
 * broker_end_batch commits it; only then does outq send what the handlers
 * queued: replies to clients, commands to workers, events. A crash before
 * the commit loses nothing a client was told; a crash after it loses only
 * unsent messages, which retries and reconciliation recover.
 *
 * The file layout and who may include whom: docs/DESIGN.md "Broker and worker layout".
 * broker.c is the top: it includes every module, none includes it.
 */
#ifndef TT_BROKER_H
#define TT_BROKER_H

#include "model.h"
#include "outq.h"

broker_t *broker_new(const broker_config_t *cfg, char *err, size_t errlen);
void broker_destroy(broker_t **self_p);
int broker_run(broker_t *self);
void broker_config_defaults(broker_config_t *cfg);
/* Handle one message from the clients / workers socket (taking it);
 * exposed for tests and fuzzing. */
void broker_handle_client(broker_t *self, zmsg_t **msg_p);
void broker_handle_worker(broker_t *self, zmsg_t **msg_p);
/* End a batch: commit it, or (a statement or the commit failed) roll it
 * back, reload the model and queue INTERNAL to its clients. The loop calls
 * it once per iteration and then sends the queue; tests and fuzzers call it
 * the same way. The ONE place a batch becomes durable (the pipelined
 * commit replaces its body). true if it committed. */
bool broker_end_batch(broker_t *self);

#endif
