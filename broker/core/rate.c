/*
 * rate: per-tenant token buckets. See rate.h.
 */
#include "rate.h"

#include <stdlib.h>

typedef struct {
    double tokens;
    int64_t last_ms;
} bucket_t;

static void s_refill(const broker_t *self, bucket_t *b, int64_t now_ms)
{
    double burst = self->cfg.rate_burst > 0 ? self->cfg.rate_burst : self->cfg.rate;
    if (now_ms > b->last_ms)
        b->tokens += (double)(now_ms - b->last_ms) * self->cfg.rate / 1000.0;
    if (b->tokens > burst)
        b->tokens = burst;
    b->last_ms = now_ms;
}

/* Forget the buckets that are full again: they hold no state worth keeping. */
static void s_prune(broker_t *self, int64_t now_ms)
{
    double burst = self->cfg.rate_burst > 0 ? self->cfg.rate_burst : self->cfg.rate;
    zlistx_t *keys = zhashx_keys(self->rates);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        bucket_t *b = zhashx_lookup(self->rates, k);
        s_refill(self, b, now_ms);
        if (b->tokens >= burst)
            zhashx_delete(self->rates, k);
    }
    zlistx_destroy(&keys);
}

static void s_bucket_free(void **item)
{
    free(*item);
    *item = NULL;
}

bool rate_take(broker_t *self, const char *tenant, int64_t now_ms, int64_t *retry_ms)
{
    if (self->cfg.rate <= 0)
        return true;
    if (!self->rates) {
        self->rates = zhashx_new();
        if (!self->rates)
            return true;
        zhashx_set_destructor(self->rates, s_bucket_free);
    }
    bucket_t *b = zhashx_lookup(self->rates, tenant);
    if (!b) {
        if (zhashx_size(self->rates) >= RATE_MAX_TENANTS)
            s_prune(self, now_ms);
        if (zhashx_size(self->rates) >= RATE_MAX_TENANTS)
            return true; /* every bucket is in use: fail open, never grow */
        b = calloc(1, sizeof *b);
        if (!b)
            return true;
        b->tokens = self->cfg.rate_burst > 0 ? self->cfg.rate_burst : self->cfg.rate;
        b->last_ms = now_ms;
        zhashx_insert(self->rates, tenant, b);
    }
    s_refill(self, b, now_ms);
    if (b->tokens >= 1.0) {
        b->tokens -= 1.0;
        return true;
    }
    if (retry_ms)
        *retry_ms = (int64_t)((1.0 - b->tokens) * 1000.0 / self->cfg.rate) + 1;
    return false;
}

void rate_destroy(broker_t *self)
{
    zhashx_destroy(&self->rates);
}
