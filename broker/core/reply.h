/*
 * reply: what clients are told. Builds the result trees (env, VM, host
 * infos) in a small arena, packs and queues replies, and keeps the
 * idempotency records: a changing request is recorded under (tenant,
 * request id) with its packed reply, and a retry gets that reply again.
 * Depends on the model, persist and outq.
 */
#ifndef TT_BROKER_REPLY_H
#define TT_BROKER_REPLY_H

#include "handler.h"
#include "model.h"

/* Bytes of a reply kept under its request id (24 h); bigger replies are
 * stored as a summary (reply.c: s_stored_copy). */
#define REPLY_MAX_STORED (16 * 1024)

/* A tiny arena for building reply trees: everything is freed at once. */
typedef struct {
    zlistx_t *blocks;
} reply_arena_t;

reply_arena_t reply_arena(void);
/* Zeroed memory from the arena; NULL when out of memory. */
void *reply_alloc(reply_arena_t *a, size_t size);
void reply_arena_free(reply_arena_t *a);
Ttfleet__EnvInfo *reply_env_info(reply_arena_t *a, const env_t *env, bool with_vms);
Ttfleet__HostInfo *reply_host_info(reply_arena_t *a, const host_t *h);

/* Send a reply for a request; record it (idempotency) when record. */
void reply_send(broker_t *self, zmsg_t *envelope, const char *service, const char *tenant,
                const char *rid, int status, const char *message, Ttfleet__Reply *result,
                bool record);
/* A handler's OK answer to its request c, with message ("" for none) and
 * result (NULL for none); returns 0, the handler's "answered". */
int reply_ok(const handler_ctx_t *c, const char *message, Ttfleet__Reply *result, bool record);
/* Reply with an env (and its VMs) as the result. */
void reply_env(broker_t *self, zmsg_t *envelope, const char *service, const char *tenant,
               const char *rid, int status, const char *msg, const env_t *env, bool record);
/* Stage the audit row of (tenant, rid)'s outcome in the batch: with the
 * context its record kept while in progress, else the request being
 * handled (self->cur_audit), else as a system action. reply_send does
 * this for every recorded reply; call it for an outcome that is not
 * recorded yet (QUEUED). */
void reply_audit(broker_t *self, const char *tenant, const char *rid, int status,
                 const char *message);
/* The record of (tenant, rid), NULL if none. */
request_rec_t *reply_record_find(broker_t *self, const char *tenant, const char *rid);
/* Open the record of a request that waits for workers (IN_PROGRESS). */
void reply_record_begin(broker_t *self, const char *tenant, const char *rid);
/* Answer a retry with the recorded reply (durable if an earlier batch
 * committed it). */
void reply_replay(broker_t *self, zmsg_t *envelope, const char *service, const request_rec_t *rec);

#endif
