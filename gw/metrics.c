/*
 * metrics: see metrics.h.
 *
 * Fixed arrays under one mutex: the label sets are closed (routes and ops
 * are registered at start, statuses are the few codes the gateway sends),
 * so a scrape never allocates per series and no input can add a series.
 */
#include "metrics.h"

#include <pthread.h>
#include <string.h>

static const double s_buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                   0.25,  0.5,    1,     2.5,  5,     10,   30};
#define S_NBUCKETS (sizeof s_buckets / sizeof s_buckets[0])
#define S_MAX_STATUS 16

typedef struct {
    unsigned long long counts[S_NBUCKETS + 1]; /* last: +Inf */
    double sum;
    unsigned long long n;
} s_hist_t;

typedef struct {
    const char *name;
    int status[S_MAX_STATUS];
    unsigned long long count[S_MAX_STATUS];
    int n_status;
    s_hist_t latency;
    unsigned long long failures; /* ops: calls without a reply */
} s_series_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_series_t s_routes[METRICS_MAX_ROUTES];
static int s_n_routes;
static s_series_t s_ops[METRICS_MAX_ROUTES];
static int s_n_ops;
static unsigned long long s_deadline_cuts;

static int s_register(s_series_t *table, int *n, const char *name)
{
    pthread_mutex_lock(&s_lock);
    int i;
    for (i = 0; i < *n; i++)
        if (strcmp(table[i].name, name) == 0)
            break;
    if (i == *n && *n < METRICS_MAX_ROUTES) {
        table[i].name = name;
        (*n)++;
    }
    if (i >= METRICS_MAX_ROUTES)
        i = -1;
    pthread_mutex_unlock(&s_lock);
    return i;
}

int metrics_route(const char *name)
{
    return s_register(s_routes, &s_n_routes, name);
}

int metrics_op(const char *name)
{
    return s_register(s_ops, &s_n_ops, name);
}

static void s_observe(s_hist_t *h, double seconds)
{
    size_t b = 0;
    while (b < S_NBUCKETS && seconds > s_buckets[b])
        b++;
    h->counts[b]++;
    h->sum += seconds;
    h->n++;
}

void metrics_request(int route, int status, double seconds)
{
    if (route < 0 || route >= METRICS_MAX_ROUTES)
        return;
    pthread_mutex_lock(&s_lock);
    s_series_t *s = &s_routes[route];
    int k;
    for (k = 0; k < s->n_status; k++)
        if (s->status[k] == status)
            break;
    if (k == s->n_status && k < S_MAX_STATUS) {
        s->status[k] = status;
        s->n_status++;
    }
    if (k < S_MAX_STATUS)
        s->count[k]++;
    s_observe(&s->latency, seconds);
    pthread_mutex_unlock(&s_lock);
}

void metrics_broker(int op, int ok, double seconds)
{
    if (op < 0 || op >= METRICS_MAX_ROUTES)
        return;
    pthread_mutex_lock(&s_lock);
    if (ok != 0)
        s_ops[op].failures++;
    s_observe(&s_ops[op].latency, seconds);
    pthread_mutex_unlock(&s_lock);
}

static void s_write_hist(FILE *f, const char *metric, const char *label, const char *value,
                         const s_hist_t *h)
{
    unsigned long long cum = 0;
    for (size_t b = 0; b <= S_NBUCKETS; b++) {
        cum += h->counts[b];
        if (b < S_NBUCKETS)
            fprintf(f, "%s_bucket{%s=\"%s\",le=\"%g\"} %llu\n", metric, label, value, s_buckets[b],
                    cum);
        else
            fprintf(f, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %llu\n", metric, label, value, cum);
    }
    fprintf(f, "%s_sum{%s=\"%s\"} %.6f\n", metric, label, value, h->sum);
    fprintf(f, "%s_count{%s=\"%s\"} %llu\n", metric, label, value, h->n);
}

void metrics_write_gateway(FILE *f)
{
    pthread_mutex_lock(&s_lock);
    fprintf(f, "# HELP ttgw_requests_total HTTP requests answered, by route and status.\n"
               "# TYPE ttgw_requests_total counter\n");
    for (int i = 0; i < s_n_routes; i++)
        for (int k = 0; k < s_routes[i].n_status; k++)
            fprintf(f, "ttgw_requests_total{route=\"%s\",code=\"%d\"} %llu\n", s_routes[i].name,
                    s_routes[i].status[k], s_routes[i].count[k]);
    fprintf(f, "# HELP ttgw_request_duration_seconds Time to answer an HTTP request, by route.\n"
               "# TYPE ttgw_request_duration_seconds histogram\n");
    for (int i = 0; i < s_n_routes; i++)
        if (s_routes[i].latency.n)
            s_write_hist(f, "ttgw_request_duration_seconds", "route", s_routes[i].name,
                         &s_routes[i].latency);
    fprintf(f, "# HELP ttgw_broker_roundtrip_seconds Time from sending a request to the broker "
               "to its reply (retries included), by op.\n"
               "# TYPE ttgw_broker_roundtrip_seconds histogram\n");
    for (int i = 0; i < s_n_ops; i++)
        if (s_ops[i].latency.n)
            s_write_hist(f, "ttgw_broker_roundtrip_seconds", "op", s_ops[i].name,
                         &s_ops[i].latency);
    fprintf(f, "# HELP ttgw_broker_failures_total Broker calls that got no reply, by op.\n"
               "# TYPE ttgw_broker_failures_total counter\n");
    for (int i = 0; i < s_n_ops; i++)
        fprintf(f, "ttgw_broker_failures_total{op=\"%s\"} %llu\n", s_ops[i].name,
                s_ops[i].failures);
    fprintf(f,
            "# HELP ttgw_request_deadline_closed_total Connections closed because their "
            "request did not arrive whole within --request-timeout.\n"
            "# TYPE ttgw_request_deadline_closed_total counter\n"
            "ttgw_request_deadline_closed_total %llu\n",
            s_deadline_cuts);
    pthread_mutex_unlock(&s_lock);
}

void metrics_deadline_cut(unsigned n)
{
    pthread_mutex_lock(&s_lock);
    s_deadline_cuts += n;
    pthread_mutex_unlock(&s_lock);
}
