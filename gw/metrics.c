/*
 * metrics: see metrics.h.
 *
 * Fixed arrays under one mutex: the label sets are closed (routes and ops
 * are registered at start, statuses are the few codes the gateway sends),
 * so a scrape never allocates per series and no input can add a series.
 */
#include "metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

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

/* The fields of /proc/self/stat after the command (which is in parentheses
 * and may itself hold spaces and parentheses): field 3 (state) onwards. */
static int s_proc_stat(char *buf, size_t len, const char **after)
{
    FILE *f = fopen("/proc/self/stat", "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, len - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return -1;
    *after = p + 2;
    return 0;
}

/* The system's boot time in unix seconds (btime in /proc/stat), or -1. */
static long long s_boot_time(void)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return -1;
    char line[256];
    long long bt = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "btime ", 6) == 0) {
            bt = strtoll(line + 6, NULL, 10);
            break;
        }
    fclose(f);
    return bt;
}

int metrics_process_read(metrics_process_t *out)
{
    memset(out, 0, sizeof *out);
    char buf[1024];
    const char *p;
    if (s_proc_stat(buf, sizeof buf, &p) != 0)
        return -1;
    /* from field 3: state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) cutime cstime priority nice threads itrealvalue
     * starttime(22) vsize(23) rss(24) */
    unsigned long long v[22];
    int field = 3, k = 0;
    while (*p && k < 22) {
        while (*p == ' ')
            p++;
        char *end;
        if (field == 3) {
            while (*p && *p != ' ')
                p++;
        } else {
            v[k++] = strtoull(p, &end, 10);
            if (end == p)
                return -1;
            p = end;
        }
        field++;
    }
    if (k < 22)
        return -1;
    /* v[i] holds field i + 4 */
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    long long boot = s_boot_time();
    if (tck <= 0 || page <= 0 || boot < 0)
        return -1;
    out->cpu_seconds = (double)(v[14 - 4] + v[15 - 4]) / (double)tck;
    out->start_time_seconds = (double)boot + (double)v[22 - 4] / (double)tck;
    out->virtual_memory_bytes = v[23 - 4];
    out->resident_memory_bytes = v[24 - 4] * (unsigned long long)page;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            out->open_fds++;
    closedir(d);
    out->open_fds--; /* the directory stream's own descriptor */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        out->max_fds = (unsigned long long)rl.rlim_cur;
    return 0;
}

void metrics_write_process(FILE *f, const char *version)
{
    fprintf(f, "# HELP ttfleet_build_info The running ttgw's version.\n"
               "# TYPE ttfleet_build_info gauge\nttfleet_build_info{version=\"");
    for (const char *c = version; *c; c++)
        if (*c == '\\' || *c == '"')
            fprintf(f, "\\%c", *c);
        else if (*c != '\n')
            fputc(*c, f);
    fputs("\"} 1\n", f);
    metrics_process_t p;
    if (metrics_process_read(&p) != 0)
        return;
    fprintf(f,
            "# HELP process_cpu_seconds_total User and system CPU time spent, in seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n"
            "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
            "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %llu\n"
            "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
            "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n"
            "# HELP process_open_fds Number of open file descriptors.\n"
            "# TYPE process_open_fds gauge\nprocess_open_fds %u\n"
            "# HELP process_start_time_seconds Start time of the process since the unix epoch "
            "in seconds.\n"
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
            p.cpu_seconds, p.resident_memory_bytes, p.virtual_memory_bytes, p.open_fds,
            p.start_time_seconds);
    if (p.max_fds)
        fprintf(f,
                "# HELP process_max_fds Maximum number of open file descriptors.\n"
                "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n",
                p.max_fds);
}
