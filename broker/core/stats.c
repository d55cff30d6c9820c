/*
 * stats: counters and histograms of the broker, and the broker_stats op.
 * See stats.h.
 *
 * Histograms keep plain (non-cumulative) bucket counts over fixed bounds
 * and are turned into Prometheus-style cumulative buckets only when asked.
 * Latencies are in microseconds inside, seconds on the wire. A request that
 * an op answers later (a create waits for its worker) is remembered by
 * (tenant, request id) with its op and start time, at most STATS_PENDING
 * of them; past that, such replies count without a latency.
 */
#include "stats.h"

#include <stdlib.h>
#include <string.h>

#define STATS_PENDING 65536

const double stats_lat_le[STATS_N_LAT] = {50e-6,  100e-6, 250e-6, 500e-6, 1e-3,   2.5e-3,
                                          5e-3,   10e-3,  25e-3,  50e-3,  100e-3, 250e-3,
                                          500e-3, 1.0,    2.5,    5.0,    10.0};
const double stats_batch_le[STATS_N_BATCH] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};

typedef struct {
    int op;
    int64_t t0_us;
} pending_t;

static void s_observe(stats_hist_t *h, const double *le, int n, double v)
{
    int i = 0;
    while (i < n && v > le[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}

broker_stats_t *stats_new(void)
{
    broker_stats_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->pending = zhashx_new();
    self->worker = zhashx_new();
    if (!self->pending || !self->worker) {
        zhashx_destroy(&self->pending);
        zhashx_destroy(&self->worker);
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->pending, (zhashx_destructor_fn *)zstr_free);
    zhashx_set_destructor(self->worker, (zhashx_destructor_fn *)zstr_free);
    return self;
}

void stats_destroy(broker_stats_t **self_p)
{
    broker_stats_t *self = *self_p;
    if (!self)
        return;
    zhashx_destroy(&self->pending);
    zhashx_destroy(&self->worker);
    free(self);
    *self_p = NULL;
}

static void s_key(const char *tenant, const char *rid, char *key, size_t len)
{
    snprintf(key, len, "%s\x1f%s", tenant ? tenant : "", rid ? rid : "");
}

void stats_request_begin(broker_t *self, const Ttfleet__Request *req)
{
    broker_stats_t *st = self->stats;
    if (!st)
        return;
    st->cur_op = req->op_case > 0 && req->op_case < STATS_OPS ? (int)req->op_case : 0;
    st->cur_t0_us = zclock_usecs();
    st->cur_replied = false;
}

void stats_request_end(broker_t *self, const Ttfleet__Request *req)
{
    broker_stats_t *st = self->stats;
    if (!st)
        return;
    if (!st->cur_replied && st->cur_op && req->request_id && *req->request_id &&
        zhashx_size(st->pending) < STATS_PENDING) {
        pending_t *p = malloc(sizeof *p);
        if (p) {
            p->op = st->cur_op;
            p->t0_us = st->cur_t0_us;
            char key[2 * TT_MAX_REQUEST_ID + 2];
            s_key(req->tenant, req->request_id, key, sizeof key);
            zhashx_update(st->pending, key, p);
        }
    }
    st->cur_op = 0;
}

void stats_reply(broker_t *self, const char *tenant, const char *rid, int status)
{
    broker_stats_t *st = self->stats;
    if (!st)
        return;
    int op = 0;
    int64_t t0 = 0;
    if (st->cur_op && !st->cur_replied) {
        op = st->cur_op;
        t0 = st->cur_t0_us;
        st->cur_replied = true;
    } else if (!st->cur_op && rid && *rid && zhashx_size(st->pending)) {
        char key[2 * TT_MAX_REQUEST_ID + 2];
        s_key(tenant, rid, key, sizeof key);
        pending_t *p = zhashx_lookup(st->pending, key);
        if (p) {
            op = p->op;
            t0 = p->t0_us;
            zhashx_delete(st->pending, key);
        }
    }
    if (!op)
        return;
    if (status >= 0 && status < STATS_STATUS)
        st->requests[op][status]++;
    s_observe(&st->op[op], stats_lat_le, STATS_N_LAT, (double)(zclock_usecs() - t0) / 1e6);
}

void stats_forget_pending(broker_t *self)
{
    if (self->stats)
        zhashx_purge(self->stats->pending);
}

void stats_commit(broker_t *self, int64_t us)
{
    if (self->stats)
        s_observe(&self->stats->commit, stats_lat_le, STATS_N_LAT, (double)us / 1e6);
}

void stats_batch(broker_t *self, int n)
{
    if (self->stats)
        s_observe(&self->stats->batch, stats_batch_le, STATS_N_BATCH, n);
}

void stats_worker(broker_t *self, const host_t *host, int64_t us)
{
    broker_stats_t *st = self->stats;
    if (!st || !host)
        return;
    stats_hist_t *h = zhashx_lookup(st->worker, host->id);
    if (!h) {
        if (zhashx_size(st->worker) >= STATS_HOSTS || !(h = calloc(1, sizeof *h)))
            return;
        zhashx_insert(st->worker, host->id, h);
    }
    s_observe(h, stats_lat_le, STATS_N_LAT, (double)(us < 0 ? 0 : us) / 1e6);
}

void stats_host_gone(broker_t *self, const char *host_id)
{
    if (self->stats && host_id)
        zhashx_delete(self->stats->worker, host_id);
}
