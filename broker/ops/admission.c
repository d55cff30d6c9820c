/*
 * admission: queue admission, expiry and audit retention. See admission.h.
 *
 * The fit callback runs the normal create path (env_create_place) with no
 * client envelope: the op it opens answers the stored request id, which
 * stays "in progress" from the QUEUED reply until this final outcome. The
 * callback re-checks the tenant's quota against what it holds now (over:
 * ADMQ_SKIP, the entry waits without taking the reservation) and maps
 * NO_CAPACITY/UNAVAILABLE to ADMQ_NOFIT; any other refusal answers the
 * request id with it (ADMQ_DROP).
 */
#include "admission.h"
#include "admq.h"
#include "audit.h"
#include "env_ops.h"
#include "persist.h"
#include "reply.h"
#include "usage.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A queued create a worker refused after admission waits 250 ms, then
 * twice as long after each further refusal, at most 30 s, before it is
 * tried again: a worker that keeps refusing what the broker thinks fits
 * costs a round trip and an event now and then, not every admission. */
#define S_RETRY_FIRST_MS 250
#define S_RETRY_MAX_MS 30000

static void s_back_off(admq_entry_t *e)
{
    int shift = e->refusals < 8 ? e->refusals : 8;
    int64_t delay = (int64_t)S_RETRY_FIRST_MS << shift;
    e->refusals++;
    e->retry_at_ms = tt_mono_ms() + (delay < S_RETRY_MAX_MS ? delay : S_RETRY_MAX_MS);
}

static admq_fit_t s_fit(const admq_entry_t *e, void *arg)
{
    broker_t *self = arg;
    if (e->retry_at_ms && tt_mono_ms() < e->retry_at_ms)
        return ADMQ_NOFIT; /* backing off: it keeps its reservation */
    char msg[512];
    Ttfleet__EnvCreate *cr = ttfleet__env_create__unpack(NULL, e->request_len, e->request);
    audit_ctx_t actx = {"env.create", e->env, "system", ""};
    const audit_ctx_t *saved = self->cur_audit;
    self->cur_audit = &actx;
    admq_fit_t r;
    if (!cr) {
        reply_send(self, NULL, NULL, e->tenant, e->request_id, TTFLEET__STATUS__INTERNAL,
                   "the queued request could not be read back", NULL, true);
        r = ADMQ_DROP;
        goto out;
    }
    if (model_env_get(self, e->tenant, e->env)) {
        snprintf(msg, sizeof msg, "env '%s' already exists", e->env);
        reply_send(self, NULL, NULL, e->tenant, e->request_id, TTFLEET__STATUS__ALREADY_EXISTS,
                   msg, NULL, true);
        r = ADMQ_DROP;
        goto out;
    }
    quota_usage_t wanted = {1, (int64_t)e->res.vms, (int64_t)e->res.cpu, (int64_t)e->res.mem,
                            (int64_t)e->res.disk};
    if (env_ops_quota(self, e->tenant, &wanted, msg, sizeof msg)) {
        r = ADMQ_SKIP;
        goto out;
    }
    bool settling;
    self->admitting = e;
    int status = env_create_place(self, cr, e->tenant, NULL, TT_SERVICE_ENV, e->request_id,
                                  &settling, msg, sizeof msg);
    self->admitting = NULL;
    if (status == TTFLEET__STATUS__OK && !model_env_get(self, e->tenant, e->env)) {
        /* the create ended at once (no worker took its command): answered,
         * or still queued in its place (admission_requeue) */
        request_rec_t *rec = reply_record_find(self, e->tenant, e->request_id);
        r = rec && rec->done ? ADMQ_DROP : ADMQ_NOFIT;
    } else if (status == TTFLEET__STATUS__OK) {
        env_ops_queue_event(self, "env.admitted", e->tenant, e->env, "admitted from the queue");
        r = ADMQ_FIT;
    } else if (status == TTFLEET__STATUS__NO_CAPACITY || status == TTFLEET__STATUS__UNAVAILABLE ||
               settling)
        r = ADMQ_NOFIT;
    else {
        reply_send(self, NULL, NULL, e->tenant, e->request_id, status, msg, NULL, true);
        r = ADMQ_DROP;
    }
out:
    self->cur_audit = saved;
    if (cr)
        ttfleet__env_create__free_unpacked(cr, NULL);
    return r;
}

void admission_run(broker_t *self, int64_t now)
{
    self->admit_wanted = false;
    if (!self->admq || admq_size(self->admq) == 0 || self->failed)
        return;
    admq_res_t free_res;
    usage_pool_free(self, &free_res);
    if (persist_open(self))
        return;
    int n = admq_admit(self->admq, now, &free_res, s_fit, self);
    if (n < 0) {
        zsys_error("admission queue: store error");
        self->failed = true;
    } else if (n > 0 && self->cfg.verbose)
        zsys_info("admission: %d queued create(s) admitted", n);
}

int admission_requeue(broker_t *self, admq_entry_t *entry, const char *why)
{
    if (!self->admq || persist_open(self))
        return -1;
    char tenant[ADMQ_NAME_MAX + 1], env[ADMQ_NAME_MAX + 1], err[300];
    snprintf(tenant, sizeof tenant, "%s", entry->tenant);
    snprintf(env, sizeof env, "%s", entry->env);
    int position = 0;
    const admq_entry_t *cur = admq_find(self->admq, tenant, env);
    if (cur && cur->seq == entry->seq) {
        /* refused before admission took it out: it is still in its place */
        position = admq_position(self->admq, tenant, env);
        admq_entry_free(&entry);
        s_back_off((admq_entry_t *)cur);
    } else {
        s_back_off(entry);
        if (admq_restore(self->admq, entry, &position, err, sizeof err)) {
            zsys_warning("admission: cannot put %s/%s back in the queue: %s", tenant, env, err);
            return -1;
        }
    }
    char text[900];
    snprintf(text, sizeof text, "back in the queue at position %d: %s", position, why);
    zsys_info("env %s/%s: %s", tenant, env, text);
    env_ops_queue_event(self, "env.queued", tenant, env, text);
    return 0;
}

static void s_expire(const admq_entry_t *e, void *arg)
{
    broker_t *self = arg;
    char msg[300];
    admq_expiry_message(e, msg, sizeof msg);
    /* a system action: the audit row says so, not the submitter's role */
    request_rec_t *rec = reply_record_find(self, e->tenant, e->request_id);
    if (rec && !rec->done) {
        free(rec->audit);
        rec->audit = NULL;
    }
    audit_ctx_t actx = {"env.create", e->env, "system", ""};
    const audit_ctx_t *saved = self->cur_audit;
    self->cur_audit = &actx;
    reply_send(self, NULL, NULL, e->tenant, e->request_id, TTFLEET__STATUS__QUEUE_EXPIRED, msg,
               NULL, true);
    self->cur_audit = saved;
    env_ops_queue_event(self, "env.queue_expired", e->tenant, e->env, msg);
}

void admission_tick(broker_t *self, int64_t now)
{
    if (!self->admq || self->failed)
        return;
    if (admq_size(self->admq)) {
        if (persist_open(self))
            return;
        if (admq_expired(self->admq, now, s_expire, self) < 0)
            self->failed = true;
        admission_run(self, now);
    }
    if (now >= self->next_audit_prune && self->cfg.audit_days > 0) {
        self->next_audit_prune = now + 60;
        if (persist_open(self))
            return;
        int n = audit_prune(self->store, now - (int64_t)self->cfg.audit_days * 86400, 1000);
        if (n < 0)
            self->failed = true;
        else if (n == 1000)
            self->next_audit_prune = now + 1; /* more to do: keep going, a batch a tick */
    }
}

zhashx_t *admission_queued_requests(broker_t *self)
{
    zhashx_t *h = zhashx_new();
    if (!h || !self->admq)
        return h;
    for (const admq_entry_t *e = admq_first(self->admq); e; e = admq_next(self->admq, e)) {
        char key[2 * ADMQ_NAME_MAX + 2];
        snprintf(key, sizeof key, "%s\x1f%s", e->tenant, e->request_id);
        zhashx_insert(h, key, (void *)e);
    }
    return h;
}
