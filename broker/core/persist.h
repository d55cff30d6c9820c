/*
 * persist: the broker's rows in broker.db. Every call stages into the
 * batch's open transaction (inside the current request's savepoint, if
 * one is open); nothing here commits. Depends on the model and store.
 */
#ifndef TT_BROKER_PERSIST_H
#define TT_BROKER_PERSIST_H

#include "model.h"

int persist_load(broker_t *self);
/* Open the batch transaction (and the request's savepoint) for a module
 * that stages rows through store/ itself (admq, quota, audit). 0, or -1
 * when the batch already failed. */
int persist_open(broker_t *self);
void persist_host(broker_t *self, host_t *host);
/* The host's pin row: written, or dropped (drop, or nothing pinned). */
void persist_host_pin(broker_t *self, const host_t *h, bool drop);
void persist_host_delete(broker_t *self, host_t *host);
void persist_env_insert(broker_t *self, env_t *env);
void persist_env_update(broker_t *self, env_t *env);
void persist_env_delete(broker_t *self, env_t *env);
void persist_vm_insert(broker_t *self, vm_t *vm);
void persist_vm_update(broker_t *self, vm_t *vm);
void persist_vm_delete(broker_t *self, vm_t *vm);
void persist_vm_ports(broker_t *self, vm_t *vm);
void persist_request_begin(broker_t *self, const char *tenant, const char *rid);
/* The SHA-1 (20 bytes) of the request a record answers. */
void persist_request_fp(broker_t *self, const char *tenant, const char *rid, const uint8_t *fp);
void persist_request_done(broker_t *self, const char *tenant, const char *rid, const uint8_t *reply,
                          size_t len);
void persist_requests_prune(broker_t *self, int64_t cutoff);

/* The event log (outq_event, event_history): a packed Event with its id,
 * trimming the ids BROKER_EVLOG or more below it; _prune drops the events
 * before cutoff (unix s). */
void persist_event(broker_t *self, uint64_t id, int64_t time, const char *tenant,
                   const uint8_t *body, size_t len);
void persist_events_prune(broker_t *self, int64_t cutoff);
/* f for each logged event at or after since, of tenant (NULL: every
 * tenant), newest first, until it returns false. 0, or -1 on a read error. */
int persist_events_scan(broker_t *self, int64_t since, const char *tenant,
                        bool (*f)(void *arg, const uint8_t *body, size_t len), void *arg);
/* The time of the oldest event in the log and whether older ones were
 * trimmed (false when the log never dropped one). */
bool persist_events_trimmed(broker_t *self, int64_t *oldest);

/* keys.c: a bound client key (insert or replace) and its removal. */
void persist_key_put(broker_t *self, const char *pub, const char *tenant, const char *role,
                     int64_t added_at, const char *added_by);
void persist_key_delete(broker_t *self, const char *pub);

/* One savepoint per client request: _begin remembers that the next row
 * opens it; _end(keep) releases it, or rolls the request's rows back. */
void persist_savepoint_begin(broker_t *self);
void persist_savepoint_end(broker_t *self, bool keep);

/* The image catalog (catalog.c, its one caller): one row per (owner, name, tag). */
typedef struct {
    const char *owner, *name, *tag, *digest, *kind, *blobs, *readiness, *user;
    uint64_t size;
    int64_t created_at;
    uint32_t min_disk_mib;
} persist_image_t;
void persist_image_put(broker_t *self, const persist_image_t *im);
void persist_image_delete(broker_t *self, const char *owner, const char *name, const char *tag);

#endif
