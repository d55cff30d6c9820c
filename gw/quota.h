/*
 * quota: per-tenant counters of what is in flight in the gateway (API
 * requests waiting on the broker, open event streams), so one greedy tenant
 * cannot take every connection thread or stream slot from the others.
 *
 * quota_take() counts one more for tenant if it stays within limit and
 * returns 0, else -1 (the caller answers 429); quota_give() undoes one take.
 * A fixed table (QUOTA_MAX_TENANTS live tenants at once, entries freed at
 * zero), one mutex; thread-safe.
 */
#ifndef QUOTA_H
#define QUOTA_H

#define QUOTA_MAX_TENANTS 256

typedef enum { QUOTA_REQUESTS, QUOTA_STREAMS, QUOTA_KINDS } quota_kind_t;

int quota_take(quota_kind_t kind, const char *tenant, unsigned limit);
void quota_give(quota_kind_t kind, const char *tenant);

#endif
