/*
 * outq: the bottom layer of the broker: everything it sends, queued.
 *
 * Nothing in the broker writes to a socket while it handles a message:
 * replies, worker commands and events are pushed here and leave only after
 * the batch that produced them committed (broker_end_batch, then
 * outq_flush; in the pipeline, once that commit is durable: outq_seal,
 * outq_unseal). A failed batch drops what it queued, except messages pushed
 * durable (a replay of an outcome an earlier batch committed). A request
 * that fails takes back what it queued (outq_mark / outq_truncate).
 *
 * Every broker module may call down into outq; outq calls nothing of the
 * broker but the model's types and persist_event (an event's row in the
 * event log is staged with the event).
 */
#ifndef TT_BROKER_OUTQ_H
#define TT_BROKER_OUTQ_H

#include "model.h"

/* Queue msg (taking ownership) for sock. */
void outq_push(broker_t *self, zsock_t *sock, zmsg_t **msg_p);
/* Queue an event for the PUB socket (and the private stream), with the
 * next event id, and stage its row in broker.db's event log. */
void outq_event(broker_t *self, const char *kind, env_t *env, vm_t *vm, host_t *host,
                const char *state, const char *message);
/* Queue a TTW01 frame [routing][""][TTW01][cmd][body?] to a host (nothing
 * if it has no connection) or to a bare routing id. */
void outq_worker(broker_t *self, host_t *host, int cmd, const void *body, size_t len);
void outq_worker_raw(broker_t *self, zframe_t *routing, int cmd);
/* Queue a 7/MDP client reply [envelope][""][MDPC01][service][body]. */
void outq_client(broker_t *self, zmsg_t *envelope, const char *service, const void *body,
                 size_t len, bool durable);

size_t outq_mark(broker_t *self);
/* Drop what was queued after mark. */
void outq_truncate(broker_t *self, size_t mark);
/* Drop every message that is not durable (a failed batch). */
void outq_keep_durable(broker_t *self);
/* Send everything without blocking, or drop everything. */
void outq_flush(broker_t *self);
void outq_drop(broker_t *self);
/* Move the whole queue out (to keep it across a reload) and back in. */
zlistx_t *outq_detach_all(broker_t *self);
void outq_attach(broker_t *self, zlistx_t **list_p);
/* The commit pipeline (broker.c). _seal moves everything queued into a
 * sealed batch that may leave once commit seq is durable (committed: this
 * batch itself committed; t0_us: when its commit began). _unseal moves the
 * oldest sealed batch back into the queue if durable >= its seq, in order,
 * so the caller can flush it; false when none is ready. */
void outq_seal(broker_t *self, uint64_t seq, bool committed, int64_t t0_us);
bool outq_unseal(broker_t *self, uint64_t durable, bool *committed, int64_t *t0_us);
size_t outq_sealed(broker_t *self);
void outq_drop_sealed(broker_t *self);

/* Take the next queued message (tests and fuzzers read the output this way). */
zmsg_t *outq_pop(broker_t *self, zsock_t **sock);

#endif
