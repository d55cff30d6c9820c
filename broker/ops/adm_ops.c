/*
 * adm_ops: quota, queue and audit requests. See adm_ops.h.
 */
#include "adm_ops.h"
#include "admq.h"
#include "audit.h"
#include "persist.h"
#include "reply.h"
#include "usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int adm_quota_set(handler_ctx_t *c)
{
    const Ttfleet__QuotaSet *qs = c->req->quota_set;
    quota_t v = {-1, -1, -1, -1, -1, -1, -1};
    unsigned fields = 0;
#define S_FIELD(src, dst, flag)                                                                    \
    if (qs->src) {                                                                                 \
        v.dst = qs->src->value;                                                                    \
        fields |= flag;                                                                            \
    }
    S_FIELD(envs, envs, QUOTA_F_ENVS)
    S_FIELD(vms, vms, QUOTA_F_VMS)
    S_FIELD(cpu, cpu, QUOTA_F_CPU)
    S_FIELD(mem_mib, mem, QUOTA_F_MEM)
    S_FIELD(disk_mib, disk, QUOTA_F_DISK)
    S_FIELD(max_lifetime, max_lifetime, QUOTA_F_LIFETIME)
    S_FIELD(max_priority, max_priority, QUOTA_F_PRIORITY)
#undef S_FIELD
    char err[300];
    if (quota_validate(&v, fields, err, sizeof err))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, err);
    if (persist_open(c->self))
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "the batch already failed");
    if (quotas_set(c->self->quotas, qs->tenant, &v, fields, tt_now(), err, sizeof err))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, err);
    /* a raised limit may let a waiting entry in */
    c->self->admit_wanted = true;
    char msg[200];
    snprintf(msg, sizeof msg, "quota of tenant %s set", qs->tenant);
    reply_ok(c, msg, NULL, true);
    return 0;
}

static Ttfleet__QuotaInfo *s_quota_info(broker_t *self, reply_arena_t *a, const char *tenant)
{
    Ttfleet__QuotaInfo *qi = reply_alloc(a, sizeof *qi);
    Ttfleet__QuotaUsage *u = reply_alloc(a, sizeof *u);
    char *name = reply_alloc(a, strlen(tenant) + 1);
    if (!qi || !u || !name)
        return NULL;
    strcpy(name, tenant);
    quota_t q;
    quotas_get(self->quotas, tenant, &q);
    quota_usage_t used;
    usage_of(self, tenant, &used);
    ttfleet__quota_info__init(qi);
    ttfleet__quota_usage__init(u);
    qi->tenant = name;
    qi->envs = q.envs;
    qi->vms = q.vms;
    qi->cpu = q.cpu;
    qi->mem_mib = q.mem;
    qi->disk_mib = q.disk;
    qi->max_lifetime = q.max_lifetime;
    qi->max_priority = quotas_priority_cap(self->quotas, tenant, false);
    u->envs = used.envs;
    u->vms = used.vms;
    u->cpu = used.cpu;
    u->mem_mib = used.mem;
    u->disk_mib = used.disk;
    qi->used = u;
    return qi;
}

int adm_quota_show(handler_ctx_t *c)
{
    const Ttfleet__QuotaShow *qs = c->req->quota_show;
    const char *tenant = qs->tenant && *qs->tenant ? qs->tenant : c->tenant;
    if ((qs->all || strcmp(tenant, c->tenant) != 0) && !c->admin)
        return handler_fail_norec(c, TTFLEET__STATUS__FORBIDDEN,
                                  "another tenant's quota needs the admin role");
    reply_arena_t a = reply_arena();
    Ttfleet__QuotaInfoList *ql = reply_alloc(&a, sizeof *ql);
    zlistx_t *names = qs->all ? quotas_tenants(c->self->quotas) : NULL;
    size_t n = names ? zlistx_size(names) : 1;
    if (ql) {
        ttfleet__quota_info_list__init(ql);
        ql->quotas = reply_alloc(&a, sizeof(Ttfleet__QuotaInfo *) * (n + 1));
    }
    if (!ql || !ql->quotas || (qs->all && !names)) {
        zlistx_destroy(&names);
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    if (names) {
        for (const char *t = zlistx_first(names); t; t = zlistx_next(names))
            if ((ql->quotas[ql->n_quotas] = s_quota_info(c->self, &a, t)))
                ql->n_quotas++;
    } else if ((ql->quotas[0] = s_quota_info(c->self, &a, tenant)))
        ql->n_quotas = 1;
    zlistx_destroy(&names);
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_QUOTAS;
    rep.quotas = ql;
    reply_ok(c, "", &rep, false);
    reply_arena_free(&a);
    return 0;
}

typedef struct {
    reply_arena_t *a;
    Ttfleet__QueueEntryList *ql;
    size_t max;
    const admq_entry_t *head;
} s_queue_arg_t;

static void s_queue_one(const admq_entry_t *e, int position, void *arg)
{
    s_queue_arg_t *qa = arg;
    if (qa->ql->n_entries >= qa->max)
        return;
    Ttfleet__QueueEntry *qe = reply_alloc(qa->a, sizeof *qe);
    if (!qe)
        return;
    ttfleet__queue_entry__init(qe);
    qe->position = (uint32_t)position;
    qe->tenant = (char *)e->tenant;
    qe->env = (char *)e->env;
    qe->request_id = (char *)e->request_id;
    qe->priority = (uint32_t)e->priority;
    qe->enqueued_at = e->enqueued_at;
    qe->deadline = e->deadline;
    qe->cpu = (uint32_t)e->res.cpu;
    qe->mem_mib = e->res.mem;
    qe->disk_mib = e->res.disk;
    qe->vms = (uint32_t)e->res.vms;
    qe->blocked_head = e == qa->head;
    qa->ql->entries[qa->ql->n_entries++] = qe;
}

int adm_queue_list(handler_ctx_t *c)
{
    bool all = c->req->queue_list->all;
    if (all && !c->admin)
        return handler_fail_norec(c, TTFLEET__STATUS__FORBIDDEN,
                                  "every tenant's queue needs the admin role");
    admq_t *q = c->self->admq;
    size_t n = all ? admq_size(q) : admq_tenant_size(q, c->tenant);
    reply_arena_t a = reply_arena();
    Ttfleet__QueueEntryList *ql = reply_alloc(&a, sizeof *ql);
    if (ql) {
        ttfleet__queue_entry_list__init(ql);
        ql->entries = reply_alloc(&a, sizeof(Ttfleet__QueueEntry *) * (n + 1));
    }
    if (!ql || !ql->entries) {
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    ql->total = (uint32_t)admq_size(q);
    s_queue_arg_t qa = {&a, ql, n, admq_blocked_head(q, NULL)};
    admq_each(q, all ? NULL : c->tenant, s_queue_one, &qa);
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_QUEUE;
    rep.queue = ql;
    reply_ok(c, "", &rep, false);
    reply_arena_free(&a);
    return 0;
}

typedef struct {
    reply_arena_t *a;
    Ttfleet__AuditRecordList *al;
    size_t max;
} s_audit_arg_t;

static char *s_dup(reply_arena_t *a, const char *s)
{
    s = s ? s : "";
    char *d = reply_alloc(a, strlen(s) + 1);
    if (d)
        strcpy(d, s);
    return d ? d : "";
}

static void s_audit_one(const audit_rec_t *r, void *arg)
{
    s_audit_arg_t *aa = arg;
    if (aa->al->n_records >= aa->max)
        return;
    Ttfleet__AuditRecord *ar = reply_alloc(aa->a, sizeof *ar);
    if (!ar)
        return;
    ttfleet__audit_record__init(ar);
    ar->id = r->id;
    ar->time = r->time;
    ar->tenant = s_dup(aa->a, r->tenant);
    ar->role = s_dup(aa->a, r->role);
    ar->key = s_dup(aa->a, r->key);
    ar->op = s_dup(aa->a, r->op);
    ar->target = s_dup(aa->a, r->target);
    ar->request_id = s_dup(aa->a, r->request_id);
    ar->status = (Ttfleet__Status)r->status;
    ar->message = s_dup(aa->a, r->message);
    aa->al->records[aa->al->n_records++] = ar;
}

#define S_EVENTS_MAX 500

typedef struct {
    const char *tenant, *topic, *env;
    Ttfleet__Event **found;
    size_t n;
    bool full; /* a match past S_EVENTS_MAX */
} s_history_t;

/* One logged event, newest first: kept when it matches, until the limit. */
static bool s_history_one(void *arg, const uint8_t *body, size_t len)
{
    s_history_t *h = arg;
    Ttfleet__Event *ev = ttfleet__event__unpack(NULL, len, body);
    if (!ev)
        return true;
    bool keep = strncmp(ev->kind, h->topic, strlen(h->topic)) == 0 &&
                (!*h->env || (strcmp(ev->env, h->env) == 0 && strcmp(ev->tenant, h->tenant) == 0));
    if (keep && h->n == S_EVENTS_MAX) {
        ttfleet__event__free_unpacked(ev, NULL);
        h->full = true;
        return false;
    }
    if (keep)
        h->found[h->n++] = ev;
    else
        ttfleet__event__free_unpacked(ev, NULL);
    return true;
}

int event_history(handler_ctx_t *c)
{
    const Ttfleet__EventQuery *q = c->req->event_history;
    broker_t *self = c->self;
    if (q->all && !c->admin)
        return handler_fail_norec(c, TTFLEET__STATUS__FORBIDDEN,
                                  "every tenant's events need the admin role");
    /* the matching events of broker.db's log, newest first, until S_EVENTS_MAX */
    s_history_t h = {c->tenant, q->topic ? q->topic : "", q->env ? q->env : "", NULL, 0, false};
    h.found = calloc(S_EVENTS_MAX, sizeof *h.found);
    if (!h.found)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    int64_t oldest;
    bool truncated = persist_events_trimmed(self, &oldest) && oldest >= q->since;
    if (persist_events_scan(self, q->since, q->all ? NULL : c->tenant, s_history_one, &h) < 0) {
        for (size_t i = 0; i < h.n; i++)
            ttfleet__event__free_unpacked(h.found[i], NULL);
        free(h.found);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the event log");
    }
    truncated |= h.full;
    Ttfleet__Event **found = h.found;
    size_t n = h.n;
    /* oldest first */
    for (size_t i = 0; i < n / 2; i++) {
        Ttfleet__Event *t = found[i];
        found[i] = found[n - 1 - i];
        found[n - 1 - i] = t;
    }
    Ttfleet__EventList el = TTFLEET__EVENT_LIST__INIT;
    el.events = found;
    el.n_events = n;
    el.truncated = truncated;
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_EVENTS;
    rep.events = &el;
    reply_ok(c, "", &rep, false);
    for (size_t i = 0; i < n; i++)
        ttfleet__event__free_unpacked(found[i], NULL);
    free(found);
    return 0;
}

int adm_audit_query(handler_ctx_t *c)
{
    const Ttfleet__AuditQuery *q = c->req->audit_query;
    audit_filter_t f = {q->tenant, q->env, q->since, (int)q->limit};
    if (!c->admin)
        f.tenant = c->tenant; /* a user sees its own tenant's rows only */
    int limit = f.limit ? f.limit : TT_AUDIT_LIMIT_DEFAULT;
    if (limit > TT_AUDIT_LIMIT_MAX)
        limit = TT_AUDIT_LIMIT_MAX;
    f.limit = limit;
    reply_arena_t a = reply_arena();
    Ttfleet__AuditRecordList *al = reply_alloc(&a, sizeof *al);
    if (al) {
        ttfleet__audit_record_list__init(al);
        al->records = reply_alloc(&a, sizeof(Ttfleet__AuditRecord *) * ((size_t)limit + 1));
    }
    if (!al || !al->records) {
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    s_audit_arg_t aa = {&a, al, (size_t)limit};
    if (audit_query(c->self->store, &f, s_audit_one, &aa) < 0) {
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the audit log");
    }
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_AUDIT;
    rep.audit = al;
    reply_ok(c, "", &rep, false);
    reply_arena_free(&a);
    return 0;
}
