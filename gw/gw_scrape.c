/*
 * gw_scrape: /metrics, the pool's history (the dashboard's charts), the
 * dashboard's state and its files. See gw_int.h.
 */
#include "gw_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dashboard_files.h"
#include "metrics.h"
#include "pbjson.h"
#include "quota.h"
#include "status.h"
#include "ttproto.h"

#define S_SCRAPE_CACHE_MS 2000
#define S_SCRAPE_MAX_ENVS 500

/* ---- /metrics ---- */

static pthread_mutex_t s_scrape_lock = PTHREAD_MUTEX_INITIALIZER;
static char *s_scrape_text;
static size_t s_scrape_len;
static int64_t s_scrape_at;

static void s_label(FILE *f, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

/* One histogram of the broker's stats (cumulative buckets, the last +Inf)
 * in the text format; label is NULL or a name="value" pair's name. */
static void s_write_pb_hist(FILE *f, const char *metric, const char *label, const char *value,
                            Ttfleet__HistogramBucket *const *b, size_t n, double sum,
                            uint64_t count)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s_bucket{", metric);
        if (label) {
            fprintf(f, "%s=\"", label);
            s_label(f, value);
            fprintf(f, "\",");
        }
        if (isinf(b[i]->le))
            fprintf(f, "le=\"+Inf\"} %llu\n", (unsigned long long)b[i]->count);
        else
            fprintf(f, "le=\"%g\"} %llu\n", b[i]->le, (unsigned long long)b[i]->count);
    }
    const char *suffix[] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "%s%s", metric, suffix[k]);
        if (label) {
            fprintf(f, "{%s=\"", label);
            s_label(f, value);
            fprintf(f, "\"}");
        }
        if (k == 0)
            fprintf(f, " %.9g\n", sum);
        else
            fprintf(f, " %llu\n", (unsigned long long)count);
    }
}

/* Broker HA: the Raft series of the member that answered (the leader). */
static void s_write_cluster(FILE *f, const Ttfleet__ClusterStatus *c)
{
    static const char *const roles[] = {"leader", "follower", "candidate", "unavailable"};
    unsigned id = c->id;
    fprintf(f,
            "# HELP ttfleet_raft_term The Raft term this broker is in.\n"
            "# TYPE ttfleet_raft_term gauge\nttfleet_raft_term{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_commit_index The highest Raft entry known committed.\n"
            "# TYPE ttfleet_raft_commit_index gauge\n"
            "ttfleet_raft_commit_index{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_applied_index The highest Raft entry applied to broker.db.\n"
            "# TYPE ttfleet_raft_applied_index gauge\n"
            "ttfleet_raft_applied_index{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_leader_changes_total Times the known Raft leader changed since "
            "this broker started.\n# TYPE ttfleet_raft_leader_changes_total counter\n"
            "ttfleet_raft_leader_changes_total{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_role This broker's Raft role (1 for the role it has).\n"
            "# TYPE ttfleet_raft_role gauge\n",
            id, (unsigned long long)c->term, id, (unsigned long long)c->commit_index, id,
            (unsigned long long)c->applied_index, id, (unsigned long long)c->leader_changes);
    for (int i = 0; i < 4; i++)
        fprintf(f, "ttfleet_raft_role{member=\"%u\",role=\"%s\"} %d\n", id, roles[i],
                c->role && strcmp(c->role, roles[i]) == 0);
    fprintf(f, "# HELP ttfleet_raft_member_match_index The highest Raft entry the leader knows "
               "replicated on each member.\n# TYPE ttfleet_raft_member_match_index gauge\n");
    for (size_t i = 0; i < c->n_members; i++)
        fprintf(f, "ttfleet_raft_member_match_index{member=\"%u\"} %llu\n", c->members[i]->id,
                (unsigned long long)c->members[i]->match_index);
    char idl[16];
    snprintf(idl, sizeof idl, "%u", id);
    fprintf(f, "# HELP ttfleet_raft_apply_latency_seconds A leader's batch handed to Raft to "
               "committed by a majority and applied.\n"
               "# TYPE ttfleet_raft_apply_latency_seconds histogram\n");
    s_write_pb_hist(f, "ttfleet_raft_apply_latency_seconds", "member", idl, c->apply_latency,
                    c->n_apply_latency, c->apply_latency_sum, c->apply_latency_count);
}

/* The broker's own series (the admin op broker_stats): group-commit latency
 * and batch sizes, request latency per op, worker command latency per host,
 * replies by op and status, batches waiting for their fsync. */
static void s_write_broker_stats(gw_t *gw, FILE *f)
{
    char err[300];
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *rep = NULL;
    if (gw_call(gw, gw->cfg.admin_tenant, true, "tt.admin", "broker_stats", &empty.base, NULL, &rep,
                err, sizeof err) != 0)
        return;
    if (rep->status == TTFLEET__STATUS__OK &&
        rep->result_case == TTFLEET__REPLY__RESULT_BROKER_STATS && rep->broker_stats) {
        Ttfleet__BrokerStats *st = rep->broker_stats;
        fprintf(f, "# HELP ttfleet_broker_commit_latency_seconds Group commit: COMMIT begun to "
                   "durable (fsync done).\n# TYPE ttfleet_broker_commit_latency_seconds "
                   "histogram\n");
        s_write_pb_hist(f, "ttfleet_broker_commit_latency_seconds", NULL, NULL, st->commit_latency,
                        st->n_commit_latency, st->commit_latency_sum, st->commit_latency_count);
        fprintf(f, "# HELP ttfleet_broker_batch_size Messages read per broker loop batch.\n"
                   "# TYPE ttfleet_broker_batch_size histogram\n");
        s_write_pb_hist(f, "ttfleet_broker_batch_size", NULL, NULL, st->batch_size,
                        st->n_batch_size, st->batch_size_sum, st->batch_size_count);
        fprintf(f, "# HELP ttfleet_broker_request_latency_seconds Request received to reply "
                   "queued inside the broker, by op.\n"
                   "# TYPE ttfleet_broker_request_latency_seconds histogram\n");
        for (size_t i = 0; i < st->n_op_latency; i++)
            s_write_pb_hist(f, "ttfleet_broker_request_latency_seconds", "op",
                            st->op_latency[i]->op, st->op_latency[i]->buckets,
                            st->op_latency[i]->n_buckets, st->op_latency[i]->sum,
                            st->op_latency[i]->count);
        fprintf(f, "# HELP ttfleet_broker_worker_latency_seconds Worker COMMAND sent to its "
                   "REPLY received, by host.\n"
                   "# TYPE ttfleet_broker_worker_latency_seconds histogram\n");
        for (size_t i = 0; i < st->n_worker_latency; i++)
            s_write_pb_hist(f, "ttfleet_broker_worker_latency_seconds", "host",
                            st->worker_latency[i]->host, st->worker_latency[i]->buckets,
                            st->worker_latency[i]->n_buckets, st->worker_latency[i]->sum,
                            st->worker_latency[i]->count);
        fprintf(f, "# HELP ttfleet_broker_requests_total Replies by op and status since the "
                   "broker started.\n# TYPE ttfleet_broker_requests_total counter\n");
        for (size_t i = 0; i < st->n_requests_total; i++) {
            fprintf(f, "ttfleet_broker_requests_total{op=\"");
            s_label(f, st->requests_total[i]->op);
            fprintf(f, "\",status=\"");
            s_label(f, st->requests_total[i]->status);
            fprintf(f, "\"} %llu\n", (unsigned long long)st->requests_total[i]->count);
        }
        fprintf(f,
                "# HELP ttfleet_broker_commit_queue_depth Committed batches waiting for "
                "their fsync.\n# TYPE ttfleet_broker_commit_queue_depth gauge\n"
                "ttfleet_broker_commit_queue_depth %llu\n",
                (unsigned long long)st->queue_depth);
        if (st->cluster)
            s_write_cluster(f, st->cluster);
    }
    ttclient_reply_destroy(&rep);
    /* the admission queue's depth */
    Ttfleet__QueueList ql = TTFLEET__QUEUE_LIST__INIT;
    ql.all = true;
    if (gw_call(gw, gw->cfg.admin_tenant, true, "tt.admin", "queue_list", &ql.base, NULL, &rep, err,
                sizeof err) != 0)
        return;
    if (rep->status == TTFLEET__STATUS__OK && rep->result_case == TTFLEET__REPLY__RESULT_QUEUE &&
        rep->queue) {
        /* how long the longest-waiting create of those listed has waited */
        int64_t now = (int64_t)time(NULL), oldest = now;
        for (size_t i = 0; i < rep->queue->n_entries; i++)
            if (rep->queue->entries[i]->enqueued_at > 0 &&
                rep->queue->entries[i]->enqueued_at < oldest)
                oldest = rep->queue->entries[i]->enqueued_at;
        fprintf(f,
                "# HELP ttfleet_queue_depth Creates waiting in the admission queue.\n"
                "# TYPE ttfleet_queue_depth gauge\nttfleet_queue_depth %u\n"
                "# HELP ttfleet_queue_oldest_wait_seconds How long the create waiting longest "
                "in the admission queue has waited (0: none waits).\n"
                "# TYPE ttfleet_queue_oldest_wait_seconds gauge\n"
                "ttfleet_queue_oldest_wait_seconds %lld\n",
                rep->queue->total, (long long)(now - oldest));
    }
    ttclient_reply_destroy(&rep);
}

/* The pool's series: asks the broker (as the admin tenant) for the pool
 * status, the hosts and every env with its VMs. */
static void s_write_pool(gw_t *gw, FILE *f)
{
    char err[300];
    Ttfleet__Reply *pool = NULL, *hosts = NULL, *envs = NULL;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__EnvList all = TTFLEET__ENV_LIST__INIT;
    all.all = true;
    const char *admin = gw->cfg.admin_tenant;
    bool up = gw_call(gw, admin, true, "tt.admin", "pool_status", &empty.base, NULL, &pool, err,
                      sizeof err) == 0;
    if (up)
        gw_admin_note(gw, pool);
    if (up)
        gw_call(gw, admin, true, "tt.admin", "host_list", &empty.base, NULL, &hosts, err,
                sizeof err);
    if (up)
        gw_call(gw, admin, true, "tt.admin", "env_list", &all.base, NULL, &envs, err, sizeof err);
    fprintf(f,
            "# HELP ttfleet_broker_up 1 if the broker answered this scrape.\n"
            "# TYPE ttfleet_broker_up gauge\nttfleet_broker_up %d\n",
            up ? 1 : 0);
    double ratio[3] = {1, 1, 1};
    if (pool && pool->status == TTFLEET__STATUS__OK && pool->pool) {
        Ttfleet__PoolStatus *p = pool->pool;
        const double got[3] = {p->cpu_overcommit, p->mem_overcommit, p->disk_overcommit};
        for (int k = 0; k < 3; k++)
            if (isfinite(got[k]) && got[k] > 0)
                ratio[k] = got[k];
        fprintf(f,
                "# HELP ttfleet_broker_start_time_seconds When the broker started, unix time.\n"
                "# TYPE ttfleet_broker_start_time_seconds gauge\n"
                "ttfleet_broker_start_time_seconds %lld\n"
                "# HELP ttfleet_pool_overcommit_ratio A host takes VMs up to its capacity "
                "times this ratio, by resource.\n"
                "# TYPE ttfleet_pool_overcommit_ratio gauge\n"
                "ttfleet_pool_overcommit_ratio{resource=\"cpu\"} %g\n"
                "ttfleet_pool_overcommit_ratio{resource=\"memory\"} %g\n"
                "ttfleet_pool_overcommit_ratio{resource=\"disk\"} %g\n",
                (long long)p->started_at, ratio[0], ratio[1], ratio[2]);
    }
    if (hosts && hosts->status == TTFLEET__STATUS__OK && hosts->hosts) {
        Ttfleet__HostInfoList *l = hosts->hosts;
        static const char *states[] = {"online", "suspect", "down"};
        fprintf(f, "# HELP ttfleet_hosts Hosts by state.\n# TYPE ttfleet_hosts gauge\n");
        for (size_t s = 0; s < 3; s++) {
            unsigned n = 0;
            for (size_t i = 0; i < l->n_hosts; i++)
                n += strcmp(l->hosts[i]->state, states[s]) == 0;
            fprintf(f, "ttfleet_hosts{state=\"%s\"} %u\n", states[s], n);
        }
        unsigned draining = 0;
        for (size_t i = 0; i < l->n_hosts; i++)
            draining += l->hosts[i]->draining;
        fprintf(f,
                "# HELP ttfleet_hosts_draining Hosts that take no new placements.\n"
                "# TYPE ttfleet_hosts_draining gauge\nttfleet_hosts_draining %u\n",
                draining);
        /* capacity, allocatable (capacity x the overcommit ratio, what the
         * scheduler places against) and allocated, per host and summed over
         * the online hosts; memory and disk in bytes */
        static const char *res[3][2] = {
            {"cpus", "CPUs"}, {"memory_bytes", "Memory in bytes"}, {"disk_bytes", "Disk in bytes"}};
        static const char *what[3][2] = {
            {"capacity", "the host's capacity"},
            {"allocatable", "capacity times the overcommit ratio, what VMs may take"},
            {"allocated", "taken by the VMs placed"}};
        for (size_t k = 0; k < 3; k++)
            for (size_t w = 0; w < 3; w++) {
                double sum = 0;
                fprintf(f,
                        "# HELP ttfleet_host_%s_%s %s of a host: %s.\n"
                        "# TYPE ttfleet_host_%s_%s gauge\n",
                        what[w][0], res[k][0], res[k][1], what[w][1], what[w][0], res[k][0]);
                for (size_t i = 0; i < l->n_hosts; i++) {
                    Ttfleet__HostInfo *h = l->hosts[i];
                    double cap = k == 0   ? h->cpu_total
                                 : k == 1 ? (double)h->mem_total * 1048576.0
                                          : (double)h->disk_total * 1048576.0;
                    double used = k == 0   ? h->cpu_used
                                  : k == 1 ? (double)h->mem_used * 1048576.0
                                           : (double)h->disk_used * 1048576.0;
                    /* the broker's floor(total x ratio), in the unit it counts in */
                    double unit = k == 0 ? 1 : 1048576.0;
                    double v = w == 0 ? cap : w == 1 ? floor(cap / unit * ratio[k]) * unit : used;
                    fprintf(f, "ttfleet_host_%s_%s{host=\"", what[w][0], res[k][0]);
                    s_label(f, h->id);
                    fprintf(f, "\"} %.0f\n", v);
                    if (strcmp(h->state, "online") == 0)
                        sum += v;
                }
                fprintf(f,
                        "# HELP ttfleet_pool_%s_%s %s of the online hosts, summed: %s.\n"
                        "# TYPE ttfleet_pool_%s_%s gauge\nttfleet_pool_%s_%s %.0f\n",
                        what[w][0], res[k][0], res[k][1], what[w][1], what[w][0], res[k][0],
                        what[w][0], res[k][0], sum);
            }
        fprintf(f,
                "# HELP ttfleet_host_vms VMs placed on a host.\n# TYPE ttfleet_host_vms gauge\n");
        for (size_t i = 0; i < l->n_hosts; i++) {
            fputs("ttfleet_host_vms{host=\"", f);
            s_label(f, l->hosts[i]->id);
            fprintf(f, "\"} %u\n", l->hosts[i]->vm_count);
        }
        fprintf(f, "# HELP ttfleet_host_info A host's state, acceleration and drain flag.\n"
                   "# TYPE ttfleet_host_info gauge\n");
        for (size_t i = 0; i < l->n_hosts; i++) {
            fputs("ttfleet_host_info{host=\"", f);
            s_label(f, l->hosts[i]->id);
            fputs("\",state=\"", f);
            s_label(f, l->hosts[i]->state);
            fputs("\",accel=\"", f);
            s_label(f, l->hosts[i]->accel);
            fprintf(f, "\",draining=\"%s\"} 1\n", l->hosts[i]->draining ? "true" : "false");
        }
    }
    if (envs && envs->status == TTFLEET__STATUS__OK && envs->envs) {
        Ttfleet__EnvInfoList *l = envs->envs;
        static const char *states[] = {"creating", "running",  "stopped",
                                       "paused",   "degraded", "deleting"};
        fprintf(f, "# HELP ttfleet_envs Envs by state.\n# TYPE ttfleet_envs gauge\n");
        for (size_t s = 0; s < 6; s++) {
            unsigned n = 0;
            for (size_t i = 0; i < l->n_envs; i++)
                n += strcmp(l->envs[i]->state, states[s]) == 0;
            fprintf(f, "ttfleet_envs{state=\"%s\"} %u\n", states[s], n);
        }
        /* VMs by state and engine: env_show of each env (bounded) */
        typedef struct {
            char engine[TT_MAX_NAME + 1];
            int state;
            unsigned n;
        } s_count_t;
        s_count_t counts[64];
        size_t n_counts = 0;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < limit; i++) {
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            Ttfleet__Reply *show = NULL;
            if (gw_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                        err, sizeof err) != 0)
                continue;
            if (show->status == TTFLEET__STATUS__OK && show->env)
                for (size_t v = 0; v < show->env->n_vms; v++) {
                    Ttfleet__VmInfo *vm = show->env->vms[v];
                    size_t k;
                    for (k = 0; k < n_counts; k++)
                        if (counts[k].state == (int)vm->state &&
                            strcmp(counts[k].engine, vm->engine) == 0)
                            break;
                    if (k == n_counts && n_counts < 64) {
                        snprintf(counts[k].engine, sizeof counts[k].engine, "%s", vm->engine);
                        counts[k].state = (int)vm->state;
                        counts[k].n = 0;
                        n_counts++;
                    }
                    if (k < 64)
                        counts[k].n++;
                }
            ttclient_reply_destroy(&show);
        }
        fprintf(f, "# HELP ttfleet_vms VMs by state and engine.\n# TYPE ttfleet_vms gauge\n");
        for (size_t k = 0; k < n_counts; k++) {
            fprintf(f, "ttfleet_vms{state=\"%s\",engine=\"", tt_vm_state_name(counts[k].state));
            s_label(f, counts[k].engine);
            fprintf(f, "\"} %u\n", counts[k].n);
        }
    }
    ttclient_reply_destroy(&pool);
    ttclient_reply_destroy(&hosts);
    ttclient_reply_destroy(&envs);
    if (up)
        s_write_broker_stats(gw, f);
}

enum MHD_Result gw_metrics(gw_t *gw, gw_request_t *r)
{
    char bad[200];
    if (gw_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    /* one scrape at a time reads the pool; the result serves every scrape
     * for S_SCRAPE_CACHE_MS, so scrapers cannot load the broker */
    pthread_mutex_lock(&s_scrape_lock);
    if (!s_scrape_text || tt_mono_ms() - s_scrape_at > S_SCRAPE_CACHE_MS) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (f) {
            s_write_pool(gw, f);
            fclose(f);
            free(s_scrape_text);
            s_scrape_text = text;
            s_scrape_len = len;
            s_scrape_at = tt_mono_ms();
        }
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        if (s_scrape_text)
            fwrite(s_scrape_text, 1, s_scrape_len, f);
        metrics_write_gateway(f);
        metrics_write_process(f, TTFLEET_VERSION);
        fclose(f);
    }
    pthread_mutex_unlock(&s_scrape_lock);
    if (!text)
        return MHD_NO;
    return gw_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len,
                   MHD_RESPMEM_MUST_FREE, NULL);
}

/* ---- the pool's history (the dashboard's charts) ---- */

/* One sample every cfg.history_interval_s, the last S_HIST_MAX kept: the
 * pool's allocated and allocatable CPUs and memory, envs and VMs by state,
 * the admission queue. Read from the broker by gw_sampler, a thread of its
 * own, as the admin tenant. */
#define S_HIST_MAX 2160
#define S_ENV_STATES 7
#define S_VM_STATES 8
static const char *s_env_states[S_ENV_STATES] = {"creating", "running",  "stopped", "paused",
                                                 "degraded", "deleting", "queued"};
typedef struct {
    int64_t t;
    double cpu_used, cpu_alloc, mem_used, mem_alloc; /* CPUs; bytes */
    unsigned envs[S_ENV_STATES];
    unsigned vms[S_VM_STATES]; /* by tt_vm_state_name of the VmState value */
    unsigned queue;
    /* create -> ready: envs whose last VM became ready since the sample
     * before (each counted once), and the mean of their seconds */
    unsigned ready_n;
    double ready_latency;
} s_sample_t;

/* The envs already counted in a ready_latency ("tenant/name/created_at"),
 * emptied when it grows past S_READY_SEEN_MAX (the sampler's thread only). */
#define S_READY_SEEN_MAX 10000
static zhashx_t *s_ready_seen;

static pthread_mutex_t s_hist_lock = PTHREAD_MUTEX_INITIALIZER;
static s_sample_t s_hist[S_HIST_MAX];
static size_t s_hist_head, s_hist_n;

static bool s_sample(gw_t *gw, s_sample_t *out)
{
    char err[300];
    const char *admin = gw->cfg.admin_tenant;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *pool = NULL, *hosts = NULL, *envs = NULL, *q = NULL;
    memset(out, 0, sizeof *out);
    out->t = tt_now();
    if (gw_call(gw, admin, true, "tt.admin", "pool_status", &empty.base, NULL, &pool, err,
                sizeof err) != 0)
        return false;
    gw_admin_note(gw, pool);
    double ratio[2] = {1, 1};
    if (pool->status == TTFLEET__STATUS__OK && pool->pool) {
        if (pool->pool->cpu_overcommit > 0)
            ratio[0] = pool->pool->cpu_overcommit;
        if (pool->pool->mem_overcommit > 0)
            ratio[1] = pool->pool->mem_overcommit;
    }
    ttclient_reply_destroy(&pool);
    if (gw_call(gw, admin, true, "tt.admin", "host_list", &empty.base, NULL, &hosts, err,
                sizeof err) == 0 &&
        hosts->status == TTFLEET__STATUS__OK && hosts->hosts)
        for (size_t i = 0; i < hosts->hosts->n_hosts; i++) {
            Ttfleet__HostInfo *h = hosts->hosts->hosts[i];
            if (strcmp(h->state, "online") != 0)
                continue;
            out->cpu_used += h->cpu_used;
            out->cpu_alloc += floor(h->cpu_total * ratio[0]);
            out->mem_used += (double)h->mem_used * 1048576.0;
            out->mem_alloc += floor((double)h->mem_total * ratio[1]) * 1048576.0;
        }
    ttclient_reply_destroy(&hosts);
    Ttfleet__EnvList all = TTFLEET__ENV_LIST__INIT;
    all.all = true;
    if (gw_call(gw, admin, true, "tt.admin", "env_list", &all.base, NULL, &envs, err, sizeof err) ==
            0 &&
        envs->status == TTFLEET__STATUS__OK && envs->envs) {
        Ttfleet__EnvInfoList *l = envs->envs;
        for (size_t i = 0; i < l->n_envs; i++)
            for (int k = 0; k < S_ENV_STATES; k++)
                if (strcmp(l->envs[i]->state, s_env_states[k]) == 0)
                    out->envs[k]++;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < limit; i++) {
            if (strcmp(l->envs[i]->state, "queued") == 0)
                continue;
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            Ttfleet__Reply *show = NULL;
            if (gw_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                        err, sizeof err) != 0)
                continue;
            if (show->status == TTFLEET__STATUS__OK && show->env) {
                const Ttfleet__EnvInfo *e = show->env;
                int64_t ready_at = 0;
                bool all_ready = e->n_vms > 0;
                for (size_t v = 0; v < e->n_vms; v++) {
                    if ((unsigned)e->vms[v]->state < S_VM_STATES)
                        out->vms[e->vms[v]->state]++;
                    all_ready = all_ready && e->vms[v]->ready;
                    if (e->vms[v]->ready_at > ready_at)
                        ready_at = e->vms[v]->ready_at;
                }
                char key[2 * TT_MAX_NAME + 32];
                snprintf(key, sizeof key, "%s/%s/%lld", e->tenant, e->name,
                         (long long)e->created_at);
                if (all_ready && ready_at >= e->created_at && s_ready_seen &&
                    !zhashx_lookup(s_ready_seen, key)) {
                    if (zhashx_size(s_ready_seen) >= S_READY_SEEN_MAX)
                        zhashx_purge(s_ready_seen);
                    zhashx_insert(s_ready_seen, key, (void *)1);
                    out->ready_latency += (double)(ready_at - e->created_at);
                    out->ready_n++;
                }
            }
            ttclient_reply_destroy(&show);
        }
    }
    ttclient_reply_destroy(&envs);
    Ttfleet__QueueList ql = TTFLEET__QUEUE_LIST__INIT;
    ql.all = true;
    if (gw_call(gw, admin, true, "tt.admin", "queue_list", &ql.base, NULL, &q, err, sizeof err) ==
            0 &&
        q->status == TTFLEET__STATUS__OK && q->queue)
        out->queue = q->queue->total;
    ttclient_reply_destroy(&q);
    if (out->ready_n)
        out->ready_latency /= out->ready_n;
    return true;
}

void *gw_sampler(void *arg)
{
    gw_t *gw = arg;
    int64_t next = tt_mono_ms();
    if (!s_ready_seen)
        s_ready_seen = zhashx_new();
    /* what was ready before ttgw started is not a latency it saw */
    s_sample_t first;
    if (s_sample(gw, &first))
        next += (int64_t)gw->cfg.history_interval_s * 1000;
    while (!atomic_load(&gw_stopping)) {
        if (tt_mono_ms() < next) {
            usleep(100 * 1000);
            continue;
        }
        next += (int64_t)gw->cfg.history_interval_s * 1000;
        s_sample_t smp;
        if (!s_sample(gw, &smp))
            continue; /* the broker did not answer: a gap in the charts */
        pthread_mutex_lock(&s_hist_lock);
        if (s_hist_n == S_HIST_MAX) {
            s_hist_head = (s_hist_head + 1) % S_HIST_MAX;
            s_hist_n--;
        }
        s_hist[(s_hist_head + s_hist_n) % S_HIST_MAX] = smp;
        s_hist_n++;
        pthread_mutex_unlock(&s_hist_lock);
    }
    return NULL;
}

static json_t *s_history_json(gw_t *gw)
{
    json_t *t = json_array(), *cu = json_array(), *ca = json_array(), *mu = json_array(),
           *ma = json_array(), *qd = json_array(), *envs = json_object(), *vms = json_object(),
           *rl = json_array();
    json_t *es[S_ENV_STATES], *vs[S_VM_STATES];
    for (int k = 0; k < S_ENV_STATES; k++) {
        es[k] = json_array();
        json_object_set_new(envs, s_env_states[k], es[k]);
    }
    for (int k = 0; k < S_VM_STATES; k++) {
        vs[k] = json_array();
        json_object_set_new(vms, tt_vm_state_name(k), vs[k]);
    }
    pthread_mutex_lock(&s_hist_lock);
    for (size_t i = 0; i < s_hist_n; i++) {
        const s_sample_t *x = &s_hist[(s_hist_head + i) % S_HIST_MAX];
        json_array_append_new(t, json_integer(x->t));
        json_array_append_new(cu, json_real(x->cpu_used));
        json_array_append_new(ca, json_real(x->cpu_alloc));
        json_array_append_new(mu, json_real(x->mem_used));
        json_array_append_new(ma, json_real(x->mem_alloc));
        json_array_append_new(qd, json_integer(x->queue));
        json_array_append_new(rl, x->ready_n ? json_real(x->ready_latency) : json_null());
        for (int k = 0; k < S_ENV_STATES; k++)
            json_array_append_new(es[k], json_integer(x->envs[k]));
        for (int k = 0; k < S_VM_STATES; k++)
            json_array_append_new(vs[k], json_integer(x->vms[k]));
    }
    pthread_mutex_unlock(&s_hist_lock);
    return json_pack("{s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "interval_s",
                     gw->cfg.history_interval_s, "t", t, "cpu_used", cu, "cpu_allocatable", ca,
                     "mem_used_bytes", mu, "mem_allocatable_bytes", ma, "queue", qd, "envs", envs,
                     "vms", vms, "ready_latency_s", rl);
}

/* GET /v1/dashboard: everything the dashboard shows, in one answer: who
 * the token is, the envs it may list with their VMs (an admin: every
 * tenant's), and for an admin the pool (status with the overcommit ratios,
 * hosts) and its history. */
enum MHD_Result gw_dashboard(gw_t *gw, gw_request_t *r)
{
    char bad[200], err[300];
    if (gw_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    bool admin = strcmp(r->role, "admin") == 0;
    json_t *out = json_pack("{s:s,s:s}", "tenant", r->tenant, "role", r->role);
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *rep = NULL;
    if (admin) {
        const char *calls[2] = {"pool_status", "host_list"};
        const char *keys[2] = {"pool", "hosts"};
        for (int k = 0; k < 2; k++) {
            if (gw_call(gw, r->tenant, true, "tt.admin", calls[k], &empty.base, NULL, &rep, err,
                        sizeof err) != 0) {
                json_decref(out);
                return gw_error(r, 504, "BROKER_TIMEOUT", NULL, "%s", err);
            }
            if (rep->status == TTFLEET__STATUS__OK) {
                json_t *j = pbjson_encode(&rep->base);
                json_t *v = json_object_get(j, keys[k]);
                if (v && k == 1) /* a HostInfoList: its array */
                    v = json_object_get(v, "hosts");
                if (v)
                    json_object_set(out, keys[k], v);
                json_decref(j);
            }
            ttclient_reply_destroy(&rep);
        }
        json_object_set_new(out, "history", s_history_json(gw));
    }
    Ttfleet__EnvList list = TTFLEET__ENV_LIST__INIT;
    list.all = admin;
    if (gw_call(gw, r->tenant, admin, "tt.env", "env_list", &list.base, NULL, &rep, err,
                sizeof err) != 0) {
        json_decref(out);
        return gw_error(r, 504, "BROKER_TIMEOUT", NULL, "%s", err);
    }
    json_t *envs = json_array();
    if (rep->status == TTFLEET__STATUS__OK && rep->envs) {
        Ttfleet__EnvInfoList *l = rep->envs;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < l->n_envs; i++) {
            Ttfleet__Reply *show = NULL;
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            /* with its VMs (env_show as the env's tenant), up to the bound */
            if (i < limit && strcmp(l->envs[i]->state, "queued") != 0 &&
                gw_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                        err, sizeof err) == 0 &&
                show->status == TTFLEET__STATUS__OK && show->env)
                json_array_append_new(envs, pbjson_encode(&show->env->base));
            else
                json_array_append_new(envs, pbjson_encode(&l->envs[i]->base));
            ttclient_reply_destroy(&show);
        }
    }
    ttclient_reply_destroy(&rep);
    json_object_set_new(out, "envs", envs);
    return gw_send_json(r, 200, out, NULL);
}

/* ---- dashboard ---- */

bool gw_static_known(const char *name)
{
    for (size_t i = 0; i < dashboard_n_files; i++)
        if (strcmp(dashboard_files[i].name, name) == 0)
            return true;
    return false;
}

enum MHD_Result gw_static(gw_t *gw, gw_request_t *r)
{
    const char *name = r->n_segments == 0 ? "index.html" : r->segments[0];
    if (r->n_segments > 1)
        name = "";
    for (size_t i = 0; i < dashboard_n_files; i++)
        if (strcmp(dashboard_files[i].name, name) == 0) {
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                dashboard_files[i].len, (void *)dashboard_files[i].data, MHD_RESPMEM_PERSISTENT);
            if (!resp)
                return MHD_NO;
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, dashboard_files[i].type);
            MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
            MHD_add_response_header(
                resp, "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
            MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
            /* /?token=T must not stay in a cache keyed by that URL */
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
            r->status = 200;
            enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
            MHD_destroy_response(resp);
            return ret;
        }
    return gw_error(r, 404, "NOT_FOUND", NULL, "no such page or route");
}

void gw_scrape_free(void)
{
    pthread_mutex_lock(&s_hist_lock);
    s_hist_head = s_hist_n = 0;
    zhashx_destroy(&s_ready_seen);
    pthread_mutex_unlock(&s_hist_lock);
    pthread_mutex_lock(&s_scrape_lock);
    free(s_scrape_text);
    s_scrape_text = NULL;
    pthread_mutex_unlock(&s_scrape_lock);
}
