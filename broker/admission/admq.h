/*
 * admq: the durable admission queue of env creates that could not be
 * placed when they arrived.
 *
 * Order. Every entry has a priority (0..ADMQ_PRIO_MAX, highest first; the
 * caller checks it against the tenant's cap, see quota.h), a round and a
 * sequence number. Entries are kept sorted by (priority desc, round asc,
 * seq asc). The round gives round-robin between tenants at one priority
 * with FIFO inside each tenant, and it is a plain number so the order
 * survives a restart exactly:
 *
 *     round = max(level_round[prio], last_round[prio][tenant] + 1)
 *
 * where level_round is the round of the last entry admitted at that
 * priority. Tenant A pushing a1 a2 a3 and then B pushing b1 gives rounds
 * 1 2 3 and 1, so the order is a1 b1 a2 a3: each tenant gets one entry per
 * round, a tenant that floods the queue only lengthens its own tail.
 *
 * No starvation. Admission walks the queue from the head. The first entry
 * that the caller's fit callback cannot place (ADMQ_NOFIT: no capacity) is
 * the *blocked head*; from then on, capacity is reserved for it:
 *   - an entry behind it may be admitted (backfill) only if, after it, the
 *     pool's aggregate free capacity still covers the blocked head's
 *     totals (cpu, mem, disk, vms) - freed capacity goes to the head first;
 *   - once the head has been blocked for cfg.backfill_s seconds, nothing
 *     behind it is admitted at all (this closes the fragmentation hole:
 *     aggregate room that no single host offers).
 * So once the head is blocked, the capacity in use can only shrink until the
 * head fits: every running env has a lease (at most the tenant's max
 * lifetime), so the head is admitted at most backfill_s + the longest lease
 * after it became the head, however many small requests arrive behind it.
 * An entry refused for reasons of its own tenant (ADMQ_SKIP: e.g. over quota
 * right now) does not take the reservation: it must not block others.
 *
 * Durability. Rows live in broker.db tables `admq` and `admq_rounds`
 * (migration 2 in broker/db/broker_schema.c). Every change is staged into the caller's
 * open transaction (store_begin joins it); admq never commits. If the
 * caller rolls its batch back it must call admq_load() to re-read memory
 * from the file. admq_load() at start rebuilds the same order.
 *
 * Bounds: cfg.max_total entries overall, cfg.max_per_tenant per tenant,
 * max-wait in [cfg.min_wait, cfg.max_wait], a packed request of at most
 * ADMQ_MAX_REQUEST bytes, at most cfg.max_scan entries looked at per
 * admission call (the loop never walks 10,000 entries calling the
 * scheduler).
 *
 * Cost: push O(k) from the tail (k = entries after the new one, small in
 * practice), cancel/remove O(1), position O(n) (a list walk: about 20 us
 * for 10,000 entries), admission O(max_scan) callback calls.
 *
 * Depends on store/ and CZMQ containers only.
 */
#ifndef TT_ADMQ_H
#define TT_ADMQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define ADMQ_PRIO_MAX 99
#define ADMQ_MAX_REQUEST (256 * 1024)
#define ADMQ_NAME_MAX 64

typedef struct admq_t admq_t;

/* Resource totals of one request (or free capacity of the pool). */
typedef struct {
    uint64_t cpu, mem, disk, vms; /* vcpus, MiB, MiB, VM count */
} admq_res_t;

typedef struct admq_entry_t {
    int64_t seq; /* enqueue order, unique, the row key */
    char tenant[ADMQ_NAME_MAX + 1];
    char env[ADMQ_NAME_MAX + 1];
    char request_id[ADMQ_NAME_MAX + 1];
    int priority;
    int64_t round;
    int64_t enqueued_at; /* unix seconds */
    int64_t deadline;    /* unix seconds: max-wait ends here */
    admq_res_t res;
    uint8_t *request; /* the packed EnvCreate (owned) */
    size_t request_len;
    /* in memory only: how often a worker refused it after admission, and
     * the monotonic ms before which admission does not try it again (the
     * caller's back-off; 0 = now) */
    int refusals;
    int64_t retry_at_ms;
    /* private: links, and the position cached for generation pos_gen */
    struct admq_entry_t *prev, *next;
    int pos;
    uint64_t pos_gen;
} admq_entry_t;

typedef struct {
    int max_total;        /* entries overall (default 10000) */
    int max_per_tenant;   /* entries per tenant (default 1000) */
    int64_t min_wait;     /* seconds (default 10) */
    int64_t max_wait;     /* seconds (default 24 h) */
    int64_t default_wait; /* when the request gives 0 (default 1 h) */
    int64_t backfill_s;   /* seconds a blocked head tolerates backfill (default 60) */
    int max_scan;         /* entries looked at per admission call (default 256) */
} admq_config_t;

void admq_config_defaults(admq_config_t *cfg);

/* A queue on store (not owned). cfg NULL = defaults. Call admq_load next. */
admq_t *admq_new(store_t *store, const admq_config_t *cfg);
void admq_destroy(admq_t **self_p);

/* (Re)build memory from broker.db: at start and after a rolled back batch.
 * 0 / -1 with a reason. */
int admq_load(admq_t *self, char *err, size_t errlen);

/* Validate and enqueue. max_wait 0 = the default. The request bytes are
 * copied. Stages an INSERT into the open transaction. 0 and *position
 * (1-based) / -1 with a reason in err; *status is set to the Ttfleet
 * status to answer with (BAD_REQUEST, QUEUE_FULL, ALREADY_EXISTS, INTERNAL). */
int admq_push(admq_t *self, const char *tenant, const char *env, const char *request_id,
              int priority, int64_t now, int64_t max_wait, const admq_res_t *res,
              const uint8_t *request, size_t request_len, int *position, int *status, char *err,
              size_t errlen);

/* A copy of an entry (its request bytes too) that outlives its removal,
 * NULL when out of memory; admq_entry_free frees a copy. */
admq_entry_t *admq_entry_dup(const admq_entry_t *entry);
void admq_entry_free(admq_entry_t **entry_p);
/* Put an admitted entry back (a copy from admq_entry_dup, taken on
 * success) with its own sequence number, priority, round and deadline, so
 * it gets back the place it had, ahead of what came later. Stages an INSERT
 * into the open transaction. 0 and *position / -1 with a reason (the name
 * is queued again, or a store error; the caller keeps the copy). */
int admq_restore(admq_t *self, admq_entry_t *entry, int *position, char *err, size_t errlen);

/* The queued entry of (tenant, env), NULL if none. */
const admq_entry_t *admq_find(admq_t *self, const char *tenant, const char *env);
/* 1-based position of (tenant, env) in admission order, 0 if not queued.
 * Positions are numbered in one walk after a change and cached until the
 * next one, so many shows between two changes cost O(1) each. */
int admq_position(admq_t *self, const char *tenant, const char *env);
/* Every entry of tenant (all when NULL) with its position, in order, in
 * one walk (env list / queue list: O(n) for the whole answer, not per env). */
typedef void(admq_each_fn)(const admq_entry_t *entry, int position, void *arg);
void admq_each(admq_t *self, const char *tenant, admq_each_fn *fn, void *arg);
/* Remove (tenant, env) (env delete cancels a queued create). 0 removed,
 * 1 not queued, -1 store error. */
int admq_cancel(admq_t *self, const char *tenant, const char *env);

size_t admq_size(admq_t *self);
size_t admq_tenant_size(admq_t *self, const char *tenant);
/* Iterate in admission order. */
const admq_entry_t *admq_first(admq_t *self);
const admq_entry_t *admq_next(admq_t *self, const admq_entry_t *e);

typedef enum {
    ADMQ_FIT = 0,   /* the callback admitted it (placed, op started) */
    ADMQ_NOFIT = 1, /* no capacity now: becomes or stays behind the reservation */
    ADMQ_SKIP = 2,  /* not admissible now for its own reasons; keeps no reservation */
    ADMQ_DROP = 3,  /* failed for good (the callback answered it): remove */
} admq_fit_t;

/* Called for each candidate; must account what it admits so the next call
 * sees less free capacity. The entry is removed after FIT/DROP returns. */
typedef admq_fit_t(admq_fit_fn)(const admq_entry_t *entry, void *arg);

/* Admit what fits now, in order, under the reservation rule above. free
 * is the pool's aggregate free capacity before this call. Returns the
 * number admitted (FIT), -1 on a store error. */
int admq_admit(admq_t *self, int64_t now, const admq_res_t *free, admq_fit_fn *fit, void *arg);

/* The blocked head (holds the reservation), NULL if none; and since when
 * it is blocked. For `queue list` and tests. */
const admq_entry_t *admq_blocked_head(admq_t *self, int64_t *since);

/* Called with each entry whose max-wait passed, before it is removed: the
 * broker answers it (QUEUE_EXPIRED with the reason) and emits an event. */
typedef void(admq_expire_fn)(const admq_entry_t *entry, void *arg);
/* The reason a request ends with when its max-wait passed (one wording for
 * the reply, the event and the audit row). */
void admq_expiry_message(const admq_entry_t *entry, char *buf, size_t len);
/* Remove every entry with deadline <= now. Returns how many, -1 on a
 * store error. Cheap when nothing is due (one compare). */
int admq_expired(admq_t *self, int64_t now, admq_expire_fn *fn, void *arg);

#endif
