/* Micro-benchmark of the admission queue on a real broker.db: with 10,000
 * queued creates from 100 tenants, the time to admit one when capacity
 * frees (admq_admit with the row DELETE and round update staged, then the
 * commit), and the time of admq_position (what `env show` of a queued env
 * adds). Prints p50/p99/max over many runs; asserts only behaviour (the
 * entry admitted is the head, the queue keeps its size). */
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "admq.h"
#include "broker_schema.h"
#include "store.h"

#define QUEUED 10000
#define RUNS 1000

static int s_cmp(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void s_report(const char *what, int64_t *us, int n)
{
    qsort(us, (size_t)n, sizeof *us, s_cmp);
    printf("%-34s p50 %6lld us  p99 %6lld us  max %6lld us  (n=%d, %d queued)\n", what,
           (long long)us[n / 2], (long long)us[(n * 99) / 100], (long long)us[n - 1], n, QUEUED);
}

typedef struct {
    int budget;
    char admitted[160];
} ctx_t;

static admq_fit_t s_fit(const admq_entry_t *e, void *arg)
{
    ctx_t *c = arg;
    if (c->budget <= 0)
        return ADMQ_NOFIT;
    c->budget--;
    snprintf(c->admitted, sizeof c->admitted, "%s/%s", e->tenant, e->env);
    return ADMQ_FIT;
}

static int64_t s_us(void)
{
    return zclock_usecs();
}

int main(void)
{
    char dir[128], path[256], err[256];
    snprintf(dir, sizeof dir, "/tmp/tt-bench-admq-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(dir))
        return 1;
    snprintf(path, sizeof path, "%s/broker.db", dir);
    store_t *s =
        store_open(path, broker_migrations, broker_migrations_n, err, sizeof err);
    if (!s) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    admq_config_t cfg;
    admq_config_defaults(&cfg);
    cfg.max_total = QUEUED + 1;
    admq_t *q = admq_new(s, &cfg);
    if (!q || admq_load(q, err, sizeof err))
        return 1;
    uint8_t body[200];
    memset(body, 7, sizeof body);
    admq_res_t res = {2, 1024, 40960, 1};
    int pos, status, failures = 0;
    int64_t t0 = s_us();
    store_begin(s);
    for (int i = 0; i < QUEUED; i++) {
        char tenant[32], env[32], rid[32];
        snprintf(tenant, sizeof tenant, "t%03d", i % 100);
        snprintf(env, sizeof env, "e%06d", i);
        snprintf(rid, sizeof rid, "r%06d", i);
        if (admq_push(q, tenant, env, rid, i % 3, 1000, 3600, &res, body, sizeof body, &pos,
                      &status, err, sizeof err)) {
            fprintf(stderr, "push: %s\n", err);
            return 1;
        }
    }
    store_commit(s);
    printf("push of %d entries in one transaction: %lld ms\n", QUEUED,
           (long long)(s_us() - t0) / 1000);

    static int64_t admit_us[RUNS], commit_us[RUNS], pos_us[RUNS], pos2_us[RUNS], push_us[RUNS];
    for (int r = 0; r < RUNS; r++) {
        char tenant[32], env[32], rid[32];
        snprintf(tenant, sizeof tenant, "t%03d", r % 100);
        snprintf(env, sizeof env, "n%06d", r);
        snprintf(rid, sizeof rid, "n%06d", r);
        store_begin(s);
        int64_t a = s_us();
        if (admq_push(q, tenant, env, rid, r % 3, 1000 + r, 3600, &res, body, sizeof body, &pos,
                      &status, err, sizeof err))
            failures++;
        push_us[r] = s_us() - a;

        char head[160];
        snprintf(head, sizeof head, "%s/%s", admq_first(q)->tenant, admq_first(q)->env);
        ctx_t c = {.budget = 1};
        admq_res_t free = {2, 1024, 40960, 1};
        a = s_us();
        int n = admq_admit(q, 2000 + r, &free, s_fit, &c);
        admit_us[r] = s_us() - a;
        if (n != 1 || strcmp(c.admitted, head) != 0)
            failures++;
        a = s_us();
        store_commit(s);
        commit_us[r] = s_us() - a;

        /* env show of the last entry: the worst position walk */
        const admq_entry_t *last = NULL;
        for (const admq_entry_t *e = admq_first(q); e; e = admq_next(q, e))
            last = e;
        a = s_us();
        pos = admq_position(q, last->tenant, last->env);
        pos_us[r] = s_us() - a;
        if (pos != (int)admq_size(q))
            failures++;
        /* a second show before the next change: the cached positions */
        const admq_entry_t *mid = admq_first(q);
        for (int k = 0; k < QUEUED / 2 && mid; k++)
            mid = admq_next(q, mid);
        a = s_us();
        pos = admq_position(q, mid->tenant, mid->env);
        pos2_us[r] = s_us() - a;
        if (pos != QUEUED / 2 + 1)
            failures++;
    }
    if (admq_size(q) != QUEUED)
        failures++;
    s_report("push (staged)", push_us, RUNS);
    s_report("admit one (staged)", admit_us, RUNS);
    s_report("commit of the admission (fsync)", commit_us, RUNS);
    s_report("position after a change (walk)", pos_us, RUNS);
    s_report("position, no change since (cached)", pos2_us, RUNS);

    /* restart: load 10,000 rows in order */
    admq_destroy(&q);
    q = admq_new(s, &cfg);
    int64_t a = s_us();
    if (admq_load(q, err, sizeof err) || admq_size(q) != QUEUED)
        failures++;
    printf("load of %zu entries at start: %lld ms\n", admq_size(q), (long long)(s_us() - a) / 1000);
    admq_destroy(&q);
    store_destroy(&s);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup failed\n");
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    return 0;
}
