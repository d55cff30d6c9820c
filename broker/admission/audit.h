/*
 * audit: who changed what, kept in broker.db table `audit` (migration 2).
 *
 * One row per state-changing request (env ops, host ops, quota, image ops)
 * with time, tenant, role, the client's key under CURVE, op, target, request
 * id, outcome status and message. A row is written through the transaction
 * the change itself is staged in: audit_write refuses to run outside an open
 * transaction, so a crash either keeps both the change and its row or
 * neither. The broker writes it where it answers a state-changing request
 * (the reply function, once the outcome is known) - also for refusals, so
 * FORBIDDEN and QUOTA_EXCEEDED attempts are on record too.
 *
 * Strings from outside are bounded (AUDIT_MAX_TEXT) before they are stored.
 * Retention: audit_prune deletes rows older than a cutoff, at most `batch`
 * rows per call, so a broker that was down for months does not stall its
 * loop on one huge DELETE (`ttbroker --audit-days`, called from the reaper
 * tick). Queries are bounded by TT_AUDIT_LIMIT_MAX rows, newest first.
 *
 * Depends on store/ and schema/ only.
 */
#ifndef TT_AUDIT_H
#define TT_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define AUDIT_MAX_TEXT 512

typedef struct {
    int64_t id; /* set by query */
    int64_t time;
    const char *tenant;
    const char *role;   /* "user", "admin", "system" (reaper, queue expiry) */
    const char *key;    /* client public key (Z85) under CURVE, "" otherwise */
    const char *op;     /* "env.create", "quota.set", "host.drain", ... */
    const char *target; /* env name, host id, tenant of a quota */
    const char *request_id;
    int status; /* Ttfleet status of the outcome */
    const char *message;
} audit_rec_t;

typedef struct {
    const char *tenant; /* NULL/"" = all */
    const char *env;    /* target filter, NULL/"" = all */
    int64_t since;      /* unix seconds, 0 = no bound */
    int limit;          /* 0 = TT_AUDIT_LIMIT_DEFAULT, capped at TT_AUDIT_LIMIT_MAX */
} audit_filter_t;

/* Stage one row in the caller's open transaction. 0 / -1 with a reason
 * (no open transaction, bad field, store error). */
int audit_write(store_t *store, const audit_rec_t *rec, char *err, size_t errlen);

/* Set the outcome of row id (a row written when a request was sent, whose
 * answer comes later). Stages into the open transaction. 0 / -1. */
int audit_set_outcome(store_t *store, int64_t id, int status, const char *message);

/* Delete at most batch rows with time < cutoff. Returns how many, -1 on
 * error. Stages into the open transaction (or opens one: store_begin). */
int audit_prune(store_t *store, int64_t cutoff, int batch);

/* Rows matching filter, newest first; fn is called for each (strings valid
 * during the call only). Returns the number of rows, -1 on error. */
typedef void(audit_row_fn)(const audit_rec_t *rec, void *arg);
int audit_query(store_t *store, const audit_filter_t *filter, audit_row_fn *fn, void *arg);

#endif
