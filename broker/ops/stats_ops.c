/*
 * stats_ops: the admin op broker_stats: stats.c's counters and histograms
 * as a BrokerStats reply (cumulative, Prometheus-style buckets), for
 * ttbench and the gateway's /metrics (docs/GATEWAY.md).
 */
#include "stats_ops.h"
#include "outq.h"
#include "reply.h"
#include "stats.h"

#include <stdlib.h>

/* Cumulative buckets of h into arena-backed arrays. */
static Ttfleet__HistogramBucket **s_buckets(const stats_hist_t *h, const double *le, int n,
                                            Ttfleet__HistogramBucket *store, size_t *n_out)
{
    Ttfleet__HistogramBucket **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    if (!ptrs)
        return NULL;
    uint64_t cum = 0;
    for (int i = 0; i <= n; i++) {
        ttfleet__histogram_bucket__init(&store[i]);
        cum += h->bucket[i];
        store[i].le = i < n ? le[i] : __builtin_inf();
        store[i].count = cum;
        ptrs[i] = &store[i];
    }
    *n_out = (size_t)n + 1;
    return ptrs;
}

int broker_stats(handler_ctx_t *c)
{
    broker_t *self = c->self;
    broker_stats_t *st = self->stats;
    if (!st)
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "no stats (out of memory at start)");
    Ttfleet__BrokerStats bs = TTFLEET__BROKER_STATS__INIT;
    Ttfleet__HistogramBucket commit_b[STATS_N_LAT + 1], batch_b[STATS_N_BATCH + 1];
    bs.commit_latency =
        s_buckets(&st->commit, stats_lat_le, STATS_N_LAT, commit_b, &bs.n_commit_latency);
    bs.commit_latency_sum = st->commit.sum;
    bs.commit_latency_count = st->commit.count;
    bs.batch_size = s_buckets(&st->batch, stats_batch_le, STATS_N_BATCH, batch_b, &bs.n_batch_size);
    bs.batch_size_sum = st->batch.sum;
    bs.batch_size_count = st->batch.count;
    bs.queue_depth = outq_sealed(self);
    bs.started_at = self->started_at;

    /* per op and per (op, status) */
    int n_ops = 0, n_counts = 0;
    for (int op = 1; op < STATS_OPS; op++) {
        if (st->op[op].count)
            n_ops++;
        for (int s = 0; s < STATS_STATUS; s++)
            if (st->requests[op][s])
                n_counts++;
    }
    Ttfleet__OpLatency *ol = calloc((size_t)n_ops + 1, sizeof *ol);
    Ttfleet__OpLatency **olp = calloc((size_t)n_ops + 1, sizeof *olp);
    Ttfleet__HistogramBucket *olb = calloc(((size_t)n_ops + 1) * (STATS_N_LAT + 1), sizeof *olb);
    size_t n_hosts = zhashx_size(st->worker);
    Ttfleet__HostLatency *hl = calloc(n_hosts + 1, sizeof *hl);
    Ttfleet__HostLatency **hlp = calloc(n_hosts + 1, sizeof *hlp);
    Ttfleet__HistogramBucket *hlb = calloc((n_hosts + 1) * (STATS_N_LAT + 1), sizeof *hlb);
    size_t h = 0;
    Ttfleet__RequestCount *rc = calloc((size_t)n_counts + 1, sizeof *rc);
    Ttfleet__RequestCount **rcp = calloc((size_t)n_counts + 1, sizeof *rcp);
    int status = 0, i = 0, j = 0;
    if (!ol || !olp || !olb || !rc || !rcp || !hl || !hlp || !hlb || !bs.commit_latency ||
        !bs.batch_size) {
        status = handler_fail(c, TTFLEET__STATUS__INTERNAL, "out of memory");
        goto out;
    }
    for (int op = 1; op < STATS_OPS; op++) {
        const ProtobufCFieldDescriptor *fd =
            protobuf_c_message_descriptor_get_field(&ttfleet__request__descriptor, (unsigned)op);
        const char *name = fd ? fd->name : "unknown";
        if (st->op[op].count) {
            ttfleet__op_latency__init(&ol[i]);
            ol[i].op = (char *)name;
            ol[i].buckets = s_buckets(&st->op[op], stats_lat_le, STATS_N_LAT,
                                      olb + (size_t)i * (STATS_N_LAT + 1), &ol[i].n_buckets);
            ol[i].sum = st->op[op].sum;
            ol[i].count = st->op[op].count;
            olp[i] = &ol[i];
            i++;
        }
        for (int s = 0; s < STATS_STATUS; s++)
            if (st->requests[op][s]) {
                ttfleet__request_count__init(&rc[j]);
                rc[j].op = (char *)name;
                rc[j].status = (char *)tt_status_name(s);
                rc[j].count = st->requests[op][s];
                rcp[j] = &rc[j];
                j++;
            }
    }
    /* per host: command queued -> its reply */
    for (stats_hist_t *wh = zhashx_first(st->worker); wh && h < n_hosts;
         wh = zhashx_next(st->worker)) {
        ttfleet__host_latency__init(&hl[h]);
        hl[h].host = (char *)zhashx_cursor(st->worker);
        hl[h].buckets = s_buckets(wh, stats_lat_le, STATS_N_LAT, hlb + h * (STATS_N_LAT + 1),
                                  &hl[h].n_buckets);
        hl[h].sum = wh->sum;
        hl[h].count = wh->count;
        hlp[h] = &hl[h];
        h++;
    }
    bs.worker_latency = hlp;
    bs.n_worker_latency = h;
    bs.op_latency = olp;
    bs.n_op_latency = (size_t)i;
    bs.requests_total = rcp;
    bs.n_requests_total = (size_t)j;
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_BROKER_STATS;
    rep.broker_stats = &bs;
    reply_send(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", &rep,
               false);
out:
    for (int k = 0; ol && k < i; k++)
        free(ol[k].buckets);
    free(ol);
    free(olp);
    for (size_t k = 0; hl && k < h; k++)
        free(hl[k].buckets);
    free(hl);
    free(hlp);
    free(hlb);
    free(olb);
    free(rc);
    free(rcp);
    free(bs.commit_latency);
    free(bs.batch_size);
    return status;
}
