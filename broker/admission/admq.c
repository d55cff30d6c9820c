/*
 * admq: the admission queue. The order, the reservation rule and the bounds
 * are explained in admq.h; this file keeps one doubly linked list in
 * admission order plus two hashes:
 *   index   "tenant/env" -> entry, for find / cancel / duplicate checks;
 *   tenants "tenant"     -> count of its entries, for the per-tenant cap;
 *   rounds  "prio/tenant"-> the last round given to that tenant at prio.
 * level_round[prio] is the round of the last admitted entry of each level.
 *
 * Every change first stages its row, then changes memory: a failed
 * statement leaves memory as it was (the caller rolls back its batch and
 * calls admq_load, which rebuilds everything from the file).
 */
#include "admq.h"

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttproto.h"

struct admq_t {
    store_t *store;
    admq_config_t cfg;
    admq_entry_t *head, *tail;
    size_t size;
    zhashx_t *index;   /* "tenant/env" -> admq_entry_t* (not owned) */
    zhashx_t *tenants; /* tenant -> (void*)(uintptr_t)count */
    zhashx_t *rounds;  /* "prio/tenant" -> int64_t* (owned) */
    int64_t level_round[ADMQ_PRIO_MAX + 1];
    admq_entry_t *level_tail[ADMQ_PRIO_MAX + 1]; /* last entry of each priority */
    int64_t next_seq;
    int64_t next_deadline; /* earliest deadline in the queue, INT64_MAX if empty */
    const admq_entry_t *blocked;
    int64_t blocked_since;
    uint64_t gen;     /* bumped by every link / unlink */
    uint64_t pos_gen; /* generation the cached positions belong to */
};

void admq_config_defaults(admq_config_t *cfg)
{
    cfg->max_total = 10000;
    cfg->max_per_tenant = 1000;
    cfg->min_wait = 10;
    cfg->max_wait = 24 * 3600;
    cfg->default_wait = 3600;
    cfg->backfill_s = 60;
    cfg->max_scan = 256;
}

static void s_key(char *buf, size_t len, const char *tenant, const char *env)
{
    snprintf(buf, len, "%s/%s", tenant, env);
}

static void s_free_round(void **item)
{
    free(*item);
    *item = NULL;
}

admq_t *admq_new(store_t *store, const admq_config_t *cfg)
{
    admq_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    if (cfg)
        self->cfg = *cfg;
    else
        admq_config_defaults(&self->cfg);
    self->index = zhashx_new();
    self->tenants = zhashx_new();
    self->rounds = zhashx_new();
    if (!self->index || !self->tenants || !self->rounds) {
        admq_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->rounds, s_free_round);
    self->next_seq = 1;
    self->next_deadline = INT64_MAX;
    return self;
}

static void s_clear(admq_t *self)
{
    admq_entry_t *e = self->head;
    while (e) {
        admq_entry_t *next = e->next;
        free(e->request);
        free(e);
        e = next;
    }
    self->head = self->tail = NULL;
    self->size = 0;
    self->blocked = NULL;
    self->next_deadline = INT64_MAX;
    self->gen++;
    zhashx_purge(self->index);
    zhashx_purge(self->tenants);
    zhashx_purge(self->rounds);
    memset(self->level_round, 0, sizeof self->level_round);
    memset(self->level_tail, 0, sizeof self->level_tail);
}

void admq_destroy(admq_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    admq_t *self = *self_p;
    if (self->index)
        s_clear(self);
    zhashx_destroy(&self->index);
    zhashx_destroy(&self->tenants);
    zhashx_destroy(&self->rounds);
    free(self);
    *self_p = NULL;
}

/* a before b in admission order? */
static bool s_before(const admq_entry_t *a, const admq_entry_t *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority;
    if (a->round != b->round)
        return a->round < b->round;
    return a->seq < b->seq;
}

static void s_tenant_add(admq_t *self, const char *tenant, int delta)
{
    uintptr_t n = (uintptr_t)zhashx_lookup(self->tenants, tenant);
    n = (uintptr_t)((intptr_t)n + delta);
    if (n == 0)
        zhashx_delete(self->tenants, tenant);
    else if (zhashx_lookup(self->tenants, tenant))
        zhashx_update(self->tenants, tenant, (void *)n);
    else
        zhashx_insert(self->tenants, tenant, (void *)n);
}

static int64_t *s_round_slot(admq_t *self, int prio, const char *tenant)
{
    char key[ADMQ_NAME_MAX + 8];
    snprintf(key, sizeof key, "%d/%s", prio, tenant);
    int64_t *r = zhashx_lookup(self->rounds, key);
    if (!r) {
        r = calloc(1, sizeof *r);
        if (!r)
            return NULL;
        zhashx_insert(self->rounds, key, r);
    }
    return r;
}

/* Link e in order. The search starts at the last entry of e's priority
 * (or of the nearest higher one) and walks back only over entries of e's
 * priority with a later round: O(entries of that level behind e), not
 * O(queue) - a high-priority push does not walk past every low one. */
static void s_link(admq_t *self, admq_entry_t *e)
{
    admq_entry_t *after = self->level_tail[e->priority];
    for (int p = e->priority + 1; !after && p <= ADMQ_PRIO_MAX; p++)
        after = self->level_tail[p];
    while (after && s_before(e, after))
        after = after->prev;
    e->prev = after;
    e->next = after ? after->next : self->head;
    if (e->next)
        e->next->prev = e;
    else
        self->tail = e;
    if (after)
        after->next = e;
    else
        self->head = e;
    admq_entry_t **lt = &self->level_tail[e->priority];
    if (!*lt || s_before(*lt, e))
        *lt = e;
    self->size++;
    self->gen++;
    char key[2 * ADMQ_NAME_MAX + 2];
    s_key(key, sizeof key, e->tenant, e->env);
    zhashx_insert(self->index, key, e);
    s_tenant_add(self, e->tenant, 1);
    if (e->deadline < self->next_deadline)
        self->next_deadline = e->deadline;
}

static void s_unlink_free(admq_t *self, admq_entry_t *e)
{
    if (self->level_tail[e->priority] == e)
        self->level_tail[e->priority] =
            e->prev && e->prev->priority == e->priority ? e->prev : NULL;
    if (e->prev)
        e->prev->next = e->next;
    else
        self->head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        self->tail = e->prev;
    self->size--;
    self->gen++;
    char key[2 * ADMQ_NAME_MAX + 2];
    s_key(key, sizeof key, e->tenant, e->env);
    zhashx_delete(self->index, key);
    s_tenant_add(self, e->tenant, -1);
    if (self->blocked == e)
        self->blocked = NULL;
    free(e->request);
    free(e);
}

int admq_load(admq_t *self, char *err, size_t errlen)
{
    s_clear(self);
    sqlite3 *db = store_db(self->store);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT priority, round FROM admq_rounds", -1, &st, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "admq: %s", sqlite3_errmsg(db));
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        int prio = sqlite3_column_int(st, 0);
        if (prio >= 0 && prio <= ADMQ_PRIO_MAX)
            self->level_round[prio] = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(db,
                           "SELECT seq, tenant, env, request_id, priority, round, enqueued_at,"
                           " deadline, cpu, mem, disk, vms, request FROM admq"
                           " ORDER BY priority DESC, round, seq",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "admq: %s", sqlite3_errmsg(db));
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        admq_entry_t *e = calloc(1, sizeof *e);
        if (!e)
            goto oom;
        e->seq = sqlite3_column_int64(st, 0);
        snprintf(e->tenant, sizeof e->tenant, "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(e->env, sizeof e->env, "%s", (const char *)sqlite3_column_text(st, 2));
        snprintf(e->request_id, sizeof e->request_id, "%s",
                 (const char *)sqlite3_column_text(st, 3));
        e->priority = sqlite3_column_int(st, 4);
        if (e->priority < 0 || e->priority > ADMQ_PRIO_MAX)
            e->priority = 0; /* the table's CHECK forbids it; a hand-edited file must not
                                index out of bounds */
        e->round = sqlite3_column_int64(st, 5);
        e->enqueued_at = sqlite3_column_int64(st, 6);
        e->deadline = sqlite3_column_int64(st, 7);
        e->res.cpu = (uint64_t)sqlite3_column_int64(st, 8);
        e->res.mem = (uint64_t)sqlite3_column_int64(st, 9);
        e->res.disk = (uint64_t)sqlite3_column_int64(st, 10);
        e->res.vms = (uint64_t)sqlite3_column_int64(st, 11);
        int n = sqlite3_column_bytes(st, 12);
        const void *blob = sqlite3_column_blob(st, 12);
        e->request_len = (size_t)n;
        e->request = malloc(n > 0 ? (size_t)n : 1);
        if (!e->request) {
            free(e);
            goto oom;
        }
        if (n > 0)
            memcpy(e->request, blob, (size_t)n);
        /* rows come sorted: append */
        e->prev = self->tail;
        if (self->tail)
            self->tail->next = e;
        else
            self->head = e;
        self->tail = e;
        self->level_tail[e->priority] = e;
        self->size++;
        self->gen++;
        char key[2 * ADMQ_NAME_MAX + 2];
        s_key(key, sizeof key, e->tenant, e->env);
        zhashx_insert(self->index, key, e);
        s_tenant_add(self, e->tenant, 1);
        if (e->deadline < self->next_deadline)
            self->next_deadline = e->deadline;
        int64_t *r = s_round_slot(self, e->priority, e->tenant);
        if (r && e->round > *r)
            *r = e->round;
        if (e->seq >= self->next_seq)
            self->next_seq = e->seq + 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "admq: %s", sqlite3_errmsg(db));
        s_clear(self);
        return -1;
    }
    return 0;
oom:
    sqlite3_finalize(st);
    s_clear(self);
    snprintf(err, errlen, "admq: out of memory");
    return -1;
}

static sqlite3_stmt *s_stmt(admq_t *self, const char *sql)
{
    if (store_begin(self->store))
        return NULL;
    return store_stmt(self->store, sql);
}

/* Writes e's row into the admq table (in the open transaction): 0 / -1. */
static int s_insert_row(admq_t *self, const admq_entry_t *e)
{
    static const char *sql =
        "INSERT INTO admq (seq, tenant, env, request_id, priority, round, enqueued_at, deadline,"
        " cpu, mem, disk, vms, request) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *st = s_stmt(self, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, e->seq);
    sqlite3_bind_text(st, 2, e->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, e->env, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, e->request_id, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, e->priority);
    sqlite3_bind_int64(st, 6, e->round);
    sqlite3_bind_int64(st, 7, e->enqueued_at);
    sqlite3_bind_int64(st, 8, e->deadline);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)e->res.cpu);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)e->res.mem);
    sqlite3_bind_int64(st, 11, (sqlite3_int64)e->res.disk);
    sqlite3_bind_int64(st, 12, (sqlite3_int64)e->res.vms);
    sqlite3_bind_blob(st, 13, e->request, (int)e->request_len, SQLITE_STATIC);
    return store_step_done(self->store, st) ? -1 : 0;
}

int admq_push(admq_t *self, const char *tenant, const char *env, const char *request_id,
              int priority, int64_t now, int64_t max_wait, const admq_res_t *res,
              const uint8_t *request, size_t request_len, int *position, int *status, char *err,
              size_t errlen)
{
    *status = TTFLEET__STATUS__BAD_REQUEST;
    if (!tt_name_valid(tenant) || !tt_name_valid(env)) {
        snprintf(err, errlen, "queue: bad tenant or env name");
        return -1;
    }
    if (!request_id || !tt_request_id_valid(request_id)) {
        snprintf(err, errlen, "queue: bad request id");
        return -1;
    }
    if (priority < 0 || priority > ADMQ_PRIO_MAX) {
        snprintf(err, errlen, "queue: priority %d out of range 0..%d", priority, ADMQ_PRIO_MAX);
        return -1;
    }
    if (max_wait == 0)
        max_wait = self->cfg.default_wait;
    if (max_wait < self->cfg.min_wait || max_wait > self->cfg.max_wait) {
        snprintf(err, errlen, "queue: max-wait %lld s out of range %lld..%lld s",
                 (long long)max_wait, (long long)self->cfg.min_wait, (long long)self->cfg.max_wait);
        return -1;
    }
    if (!request || request_len == 0 || request_len > ADMQ_MAX_REQUEST) {
        snprintf(err, errlen, "queue: request body empty or over %d bytes", ADMQ_MAX_REQUEST);
        return -1;
    }
    if (res->cpu > INT64_MAX || res->mem > INT64_MAX || res->disk > INT64_MAX ||
        res->vms > INT64_MAX) {
        snprintf(err, errlen, "queue: resource totals out of range");
        return -1;
    }
    if (admq_find(self, tenant, env)) {
        *status = TTFLEET__STATUS__ALREADY_EXISTS;
        snprintf(err, errlen, "env %s is already queued", env);
        return -1;
    }
    if (self->size >= (size_t)self->cfg.max_total) {
        *status = TTFLEET__STATUS__QUEUE_FULL;
        snprintf(err, errlen, "admission queue full (%d entries): try again later",
                 self->cfg.max_total);
        return -1;
    }
    if (admq_tenant_size(self, tenant) >= (size_t)self->cfg.max_per_tenant) {
        *status = TTFLEET__STATUS__QUEUE_FULL;
        snprintf(err, errlen, "tenant %s has %d queued creates, the most allowed", tenant,
                 self->cfg.max_per_tenant);
        return -1;
    }
    int64_t *last = s_round_slot(self, priority, tenant);
    admq_entry_t *e = calloc(1, sizeof *e);
    uint8_t *copy = malloc(request_len);
    if (!last || !e || !copy) {
        free(e);
        free(copy);
        *status = TTFLEET__STATUS__INTERNAL;
        snprintf(err, errlen, "queue: out of memory");
        return -1;
    }
    memcpy(copy, request, request_len);
    e->seq = self->next_seq;
    snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
    snprintf(e->env, sizeof e->env, "%s", env);
    snprintf(e->request_id, sizeof e->request_id, "%s", request_id);
    e->priority = priority;
    e->round = self->level_round[priority];
    if (*last + 1 > e->round)
        e->round = *last + 1;
    e->enqueued_at = now;
    e->deadline = now + max_wait;
    e->res = *res;
    e->request = copy;
    e->request_len = request_len;

    if (s_insert_row(self, e))
        goto store_fail;
    self->next_seq++;
    *last = e->round;
    s_link(self, e);
    *position = admq_position(self, tenant, env);
    *status = TTFLEET__STATUS__QUEUED;
    return 0;
store_fail:
    snprintf(err, errlen, "queue: cannot persist: %s", store_errmsg(self->store));
    *status = TTFLEET__STATUS__INTERNAL;
    free(e->request);
    free(e);
    return -1;
}

admq_entry_t *admq_entry_dup(const admq_entry_t *entry)
{
    admq_entry_t *e = malloc(sizeof *e);
    uint8_t *copy = malloc(entry->request_len ? entry->request_len : 1);
    if (!e || !copy) {
        free(e);
        free(copy);
        return NULL;
    }
    *e = *entry;
    memcpy(copy, entry->request, entry->request_len);
    e->request = copy;
    e->prev = e->next = NULL;
    e->pos = 0;
    e->pos_gen = 0;
    return e;
}

void admq_entry_free(admq_entry_t **entry_p)
{
    if (!*entry_p)
        return;
    free((*entry_p)->request);
    free(*entry_p);
    *entry_p = NULL;
}

int admq_restore(admq_t *self, admq_entry_t *e, int *position, char *err, size_t errlen)
{
    if (admq_find(self, e->tenant, e->env)) {
        snprintf(err, errlen, "env %s is queued again", e->env);
        return -1;
    }
    if (e->priority < 0 || e->priority > ADMQ_PRIO_MAX) {
        snprintf(err, errlen, "queue: priority %d out of range", e->priority);
        return -1;
    }
    if (s_insert_row(self, e)) {
        snprintf(err, errlen, "queue: cannot persist: %s", store_errmsg(self->store));
        return -1;
    }
    s_link(self, e);
    *position = admq_position(self, e->tenant, e->env);
    return 0;
}

const admq_entry_t *admq_find(admq_t *self, const char *tenant, const char *env)
{
    char key[2 * ADMQ_NAME_MAX + 2];
    s_key(key, sizeof key, tenant, env);
    return zhashx_lookup(self->index, key);
}

int admq_position(admq_t *self, const char *tenant, const char *env)
{
    const admq_entry_t *want = admq_find(self, tenant, env);
    if (!want)
        return 0;
    if (self->pos_gen != self->gen || want->pos_gen != self->gen) {
        int pos = 0;
        for (admq_entry_t *e = self->head; e; e = e->next) {
            e->pos = ++pos;
            e->pos_gen = self->gen;
        }
        self->pos_gen = self->gen;
    }
    return want->pos;
}

void admq_expiry_message(const admq_entry_t *e, char *buf, size_t len)
{
    snprintf(buf, len,
             "env %s waited %lld s in the admission queue (its max-wait) and no capacity "
             "freed for it; nothing was created",
             e->env, (long long)(e->deadline - e->enqueued_at));
}

void admq_each(admq_t *self, const char *tenant, admq_each_fn *fn, void *arg)
{
    if (tenant && !admq_tenant_size(self, tenant))
        return;
    int pos = 0;
    for (const admq_entry_t *e = self->head; e; e = e->next) {
        pos++;
        if (!tenant || strcmp(e->tenant, tenant) == 0)
            fn(e, pos, arg);
    }
}

size_t admq_size(admq_t *self)
{
    return self->size;
}

size_t admq_tenant_size(admq_t *self, const char *tenant)
{
    return (size_t)(uintptr_t)zhashx_lookup(self->tenants, tenant);
}

const admq_entry_t *admq_first(admq_t *self)
{
    return self->head;
}

const admq_entry_t *admq_next(admq_t *self, const admq_entry_t *e)
{
    (void)self;
    return e ? e->next : NULL;
}

/* Stage the row's removal and free the entry. */
static int s_remove(admq_t *self, admq_entry_t *e)
{
    static const char *sql = "DELETE FROM admq WHERE seq = ?";
    sqlite3_stmt *st = s_stmt(self, sql);
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, e->seq);
    if (store_step_done(self->store, st))
        return -1;
    s_unlink_free(self, e);
    return 0;
}

int admq_cancel(admq_t *self, const char *tenant, const char *env)
{
    admq_entry_t *e = (admq_entry_t *)admq_find(self, tenant, env);
    if (!e)
        return 1;
    return s_remove(self, e) ? -1 : 0;
}

/* An admitted entry advances its level's round (persisted, so a restart
 * gives a newcomer the same place it would have had). */
static int s_advance_round(admq_t *self, int prio, int64_t round)
{
    if (round <= self->level_round[prio])
        return 0;
    static const char *sql = "INSERT INTO admq_rounds (priority, round) VALUES (?, ?)"
                             " ON CONFLICT (priority) DO UPDATE SET round = excluded.round";
    sqlite3_stmt *st = s_stmt(self, sql);
    if (!st)
        return -1;
    sqlite3_bind_int(st, 1, prio);
    sqlite3_bind_int64(st, 2, round);
    if (store_step_done(self->store, st))
        return -1;
    self->level_round[prio] = round;
    return 0;
}

static bool s_covers(const admq_res_t *free, const admq_res_t *used, const admq_res_t *want,
                     const admq_res_t *reserve)
{
    /* free - used - want >= reserve, without unsigned underflow */
    uint64_t need[4] = {want->cpu + reserve->cpu, want->mem + reserve->mem,
                        want->disk + reserve->disk, want->vms + reserve->vms};
    uint64_t have[4] = {free->cpu, free->mem, free->disk, free->vms};
    uint64_t gone[4] = {used->cpu, used->mem, used->disk, used->vms};
    for (int i = 0; i < 4; i++)
        if (have[i] < gone[i] || have[i] - gone[i] < need[i])
            return false;
    return true;
}

int admq_admit(admq_t *self, int64_t now, const admq_res_t *free, admq_fit_fn *fit, void *arg)
{
    admq_res_t used = {0, 0, 0, 0};
    const admq_entry_t *head = NULL; /* the blocked head of this pass */
    int admitted = 0, scanned = 0;
    admq_entry_t *e = self->head;
    while (e && scanned < self->cfg.max_scan) {
        admq_entry_t *next = e->next;
        scanned++;
        if (head) {
            /* behind a blocked head: backfill only within the window and
             * only from capacity the head does not need */
            if (now - self->blocked_since >= self->cfg.backfill_s)
                break;
            if (!s_covers(free, &used, &e->res, &head->res)) {
                e = next;
                continue;
            }
        }
        admq_fit_t r = fit(e, arg);
        if (r == ADMQ_FIT || r == ADMQ_DROP) {
            if (r == ADMQ_FIT) {
                used.cpu += e->res.cpu;
                used.mem += e->res.mem;
                used.disk += e->res.disk;
                used.vms += e->res.vms;
                admitted++;
                if (s_advance_round(self, e->priority, e->round))
                    return -1;
            }
            if (s_remove(self, e))
                return -1;
        } else if (r == ADMQ_NOFIT && !head) {
            head = e;
            if (self->blocked != e) {
                self->blocked = e;
                self->blocked_since = now;
            }
        }
        e = next;
    }
    if (!head)
        self->blocked = NULL;
    return admitted;
}

const admq_entry_t *admq_blocked_head(admq_t *self, int64_t *since)
{
    if (since)
        *since = self->blocked ? self->blocked_since : 0;
    return self->blocked;
}

int admq_expired(admq_t *self, int64_t now, admq_expire_fn *fn, void *arg)
{
    if (now < self->next_deadline)
        return 0;
    int n = 0;
    int64_t next = INT64_MAX;
    admq_entry_t *e = self->head;
    while (e) {
        admq_entry_t *after = e->next;
        if (e->deadline <= now) {
            if (fn)
                fn(e, arg);
            if (s_remove(self, e))
                return -1;
            n++;
        } else if (e->deadline < next) {
            next = e->deadline;
        }
        e = after;
    }
    self->next_deadline = next;
    return n;
}
