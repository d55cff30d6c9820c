/*
 * rate: a token bucket per tenant for state-changing requests.
 *
 * Each tenant may send `rate` changing requests per second on average and
 * `burst` at once; beyond that the dispatcher answers RATE_LIMITED (not
 * recorded: a retry with the same id is a new decision). The admin role is
 * not limited. Reads are not limited here (they change nothing and cost no
 * fsync). Buckets live in memory only; the table is bounded (full buckets
 * are forgotten when it grows past RATE_MAX_TENANTS), since without CURVE
 * any name can be a tenant. Depends on the model only.
 */
#ifndef TT_BROKER_RATE_H
#define TT_BROKER_RATE_H

#include "model.h"

#define RATE_MAX_TENANTS 10000

/* Take one token of tenant's bucket at now_ms: true if it had one. With
 * cfg.rate == 0 every request passes. On false, *retry_ms says when the
 * next token comes. */
bool rate_take(broker_t *self, const char *tenant, int64_t now_ms, int64_t *retry_ms);
void rate_destroy(broker_t *self);

#endif
