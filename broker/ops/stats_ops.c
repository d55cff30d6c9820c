/*
 * stats_ops: the admin op broker_stats: stats.c's counters and histograms
 * as a BrokerStats reply (cumulative, Prometheus-style buckets), for
 * ttbench and the gateway's /metrics (docs/GATEWAY.md).
 */
#include "stats_ops.h"
#include "cluster_ops.h"
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
    stats_cluster_t *cl = malloc(sizeof *cl);
    if (cl && stats_cluster(self, cl))
        bs.cluster = &cl->cs;

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
    reply_ok(c, "", &rep, false);
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
    free(cl);
    return status;
}

bool stats_cluster(broker_t *self, stats_cluster_t *out)
{
    ttfleet__cluster_status__init(&out->cs);
    if (!self->ha) {
        out->cs.role = "standalone";
        return false;
    }
    ha_stats(self->ha, &out->st);
    const ha_stats_t *st = &out->st;
    Ttfleet__ClusterStatus *cs = &out->cs;
    cs->id = self->cfg.ha.id;
    cs->role = (char *)ha_role_name(st->role);
    cs->term = st->term;
    cs->commit_index = st->commit_index;
    cs->applied_index = st->applied_index;
    cs->leader_id = st->leader_id;
    cs->leader = "";
    if (st->leader_id && cluster_member_find(self, st->leader_id, &out->lm))
        cs->leader = out->lm.clients;
    cs->leader_changes = st->leader_changes;
    for (int i = 0; i < st->n_peers; i++) {
        Ttfleet__ClusterMember *m = &out->m[i];
        ttfleet__cluster_member__init(m);
        m->id = st->peers[i].id;
        m->raft = (char *)st->peers[i].raft;
        m->clients = cluster_member_find(self, m->id, &out->mm[i]) ? out->mm[i].clients : "";
        m->voter = st->peers[i].voter;
        m->match_index = st->peers[i].match_index;
        out->mp[i] = m;
    }
    cs->n_members = (size_t)st->n_peers;
    cs->members = out->mp;
    uint64_t cum = 0;
    for (int i = 0; i <= HA_N_LAT; i++) {
        ttfleet__histogram_bucket__init(&out->b[i]);
        cum += st->apply_bucket[i];
        out->b[i].le = i < HA_N_LAT ? ha_lat_le[i] : __builtin_inf();
        out->b[i].count = cum;
        out->bp[i] = &out->b[i];
    }
    cs->n_apply_latency = HA_N_LAT + 1;
    cs->apply_latency = out->bp;
    cs->apply_latency_sum = st->apply_sum;
    cs->apply_latency_count = st->apply_count;
    return true;
}

void stats_cluster_reply(broker_t *self, zmsg_t *envelope, const char *service, const char *rid)
{
    stats_cluster_t *cl = malloc(sizeof *cl);
    if (!cl)
        return;
    stats_cluster(self, cl);
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.request_id = (char *)rid;
    rep.status = TTFLEET__STATUS__OK;
    rep.message = "";
    rep.result_case = TTFLEET__REPLY__RESULT_CLUSTER;
    rep.cluster = &cl->cs;
    size_t n = ttfleet__reply__get_packed_size(&rep);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        ttfleet__reply__pack(&rep, buf);
        outq_client(self, envelope, service, buf, n, false);
        free(buf);
    }
    free(cl);
}

int cluster_status(handler_ctx_t *c)
{
    stats_cluster_t *cl = malloc(sizeof *cl);
    if (!cl)
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    stats_cluster(c->self, cl);
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_CLUSTER;
    rep.cluster = &cl->cs;
    reply_ok(c, "", &rep, false);
    free(cl);
    return 0;
}
