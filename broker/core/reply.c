/*
 * reply: result trees, replies and idempotency records. See reply.h.
 *
 * Idempotency: a changing request is recorded under (tenant, request id)
 * with its packed reply. A retry gets that reply again, byte for byte, or
 * IN_PROGRESS while the first attempt runs. A record carries the batch
 * that wrote it: once that batch committed, a replay is durable and
 * survives the failure of a later batch.
 */
#include "reply.h"
#include "audit.h"
#include "stats.h"
#include "outq.h"
#include "persist.h"
#include "ttframe.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a tiny arena for building reply trees ---- */

void *reply_alloc(reply_arena_t *a, size_t size)
{
    void *p = calloc(1, size);
    if (!p)
        return NULL; /* callers treat NULL as out of memory */
    zlistx_add_end(a->blocks, p);
    return p;
}

void reply_arena_free(reply_arena_t *a)
{
    for (void *p = zlistx_first(a->blocks); p; p = zlistx_next(a->blocks))
        free(p);
    zlistx_destroy(&a->blocks);
}

reply_arena_t reply_arena(void)
{
    reply_arena_t a = {zlistx_new()};
    return a;
}

/* ---- building results ---- */

static Ttfleet__VmInfo *s_vm_info(reply_arena_t *a, const vm_t *vm)
{
    Ttfleet__VmInfo *vi = reply_alloc(a, sizeof *vi);
    if (!vi)
        return NULL;
    ttfleet__vm_info__init(vi);
    vi->vm_id = vm->vm_id;
    vi->host = (char *)vm->host->id;
    vi->image = (char *)vm->image;
    vi->engine = (char *)vm->engine;
    vi->ip = (char *)vm->ip;
    vi->mac = (char *)vm->mac;
    vi->cpu = vm->cpu;
    vi->mem_mib = vm->mem;
    vi->disk_mib = vm->disk;
    vi->state = (Ttfleet__VmState)vm->state;
    vi->ready = vm->ready;
    vi->ready_at = vm->ready_at;
    vi->ready_detail = (char *)vm->ready_detail;
    vi->boot = (char *)vm->boot;
    vi->pull_done = vm->pull_done;
    vi->pull_total = vm->pull_total;
    vi->image_digest = (char *)vm->image_digest;
    vi->public_address = vm->host ? (char *)vm->host->public_address : "";
    vi->n_ports = (size_t)vm->n_ports;
    vi->ports = reply_alloc(a, sizeof(Ttfleet__PortMap *) * (size_t)(vm->n_ports + 1));
    Ttfleet__PortMap *pm = reply_alloc(a, sizeof *pm * (size_t)(vm->n_ports + 1));
    if (!vi->ports || !pm)
        return NULL;
    for (int i = 0; i < vm->n_ports; i++) {
        ttfleet__port_map__init(&pm[i]);
        pm[i].guest = vm->ports[i].guest;
        pm[i].public_ = vm->ports[i].public_port;
        vi->ports[i] = &pm[i];
    }
    return vi;
}

Ttfleet__EnvInfo *reply_env_info(reply_arena_t *a, const env_t *env, bool with_vms)
{
    Ttfleet__EnvInfo *ei = reply_alloc(a, sizeof *ei);
    if (!ei)
        return NULL;
    ttfleet__env_info__init(ei);
    ei->name = (char *)env->name;
    ei->tenant = (char *)env->tenant;
    ei->state = (char *)model_env_state(env);
    ei->created_at = env->created_at;
    ei->expires_at = env->expires_at;
    ei->lifetime = (uint64_t)env->lifetime;
    ei->deny_outgoing = env->deny_outgoing;
    ei->vm_count = (uint32_t)env->n_vms;
    ei->n_ports = (size_t)env->n_gports;
    ei->ports = (uint32_t *)env->gports;
    if (env->n_labels && (ei->labels = reply_alloc(a, sizeof(char *) * (size_t)env->n_labels))) {
        for (int i = 0; i < env->n_labels; i++)
            ei->labels[i] = (char *)env->labels[i];
        ei->n_labels = (size_t)env->n_labels;
    }
    if (with_vms && env->n_vms) {
        ei->vms = reply_alloc(a, sizeof(Ttfleet__VmInfo *) * (size_t)env->n_vms);
        if (!ei->vms)
            return NULL;
        for (int i = 0; i < env->n_vms; i++) {
            ei->vms[i] = s_vm_info(a, env->vms[i]);
            if (!ei->vms[i])
                return NULL;
        }
        ei->n_vms = (size_t)env->n_vms;
    }
    return ei;
}

static const char *s_host_state(const host_t *h)
{
    return h->state == HOST_ONLINE ? "online" : h->state == HOST_SUSPECT ? "suspect" : "down";
}

Ttfleet__HostInfo *reply_host_info(reply_arena_t *a, const host_t *h)
{
    Ttfleet__HostInfo *hi = reply_alloc(a, sizeof *hi);
    if (!hi)
        return NULL;
    ttfleet__host_info__init(hi);
    hi->id = (char *)h->id;
    hi->state = (char *)s_host_state(h);
    hi->n_engines = (size_t)h->n_engines;
    hi->engines = (char **)h->engines;
    hi->n_images = (size_t)h->n_images;
    hi->images = (char **)h->images;
    hi->cpu_total = h->cpu_total;
    hi->cpu_used = h->cpu_used;
    hi->mem_total = h->mem_total;
    hi->mem_used = h->mem_used;
    hi->disk_total = h->disk_total;
    hi->disk_used = h->disk_used;
    hi->cpu_freeing = h->cpu_freeing;
    hi->mem_freeing_mib = h->mem_freeing;
    hi->disk_freeing_mib = h->disk_freeing;
    hi->vm_count = h->vm_count;
    hi->last_seen = h->last_seen;
    hi->draining = h->draining;
    hi->accel = (char *)h->accel;
    hi->public_address = (char *)h->public_address;
    hi->image_cache_mib = h->image_cache_mib;
    hi->image_cache_used_mib = h->image_cache_used_mib;
    hi->image_blobs = h->image_digests ? (uint32_t)zhashx_size(h->image_digests) : 0;
    hi->pin_cpu = h->pin_cpu;
    hi->pin_mem_mib = h->pin_mem;
    hi->pin_disk_mib = h->pin_disk;
    hi->advertised_cpu = h->adv_cpu;
    hi->advertised_mem_mib = h->adv_mem;
    hi->advertised_disk_mib = h->adv_disk;
    if (h->caps_said && h->n_engines > 0) {
        Ttfleet__EngineCaps **ecs = reply_alloc(a, (size_t)h->n_engines * sizeof *ecs);
        if (!ecs)
            return NULL;
        for (int i = 0; i < h->n_engines; i++) {
            Ttfleet__EngineCaps *ec = reply_alloc(a, sizeof *ec);
            const char **names = reply_alloc(a, 32 * sizeof *names);
            if (!ec || !names)
                return NULL;
            ttfleet__engine_caps__init(ec);
            ec->engine = h->engines[i];
            ec->n_caps = tt_cap_names(h->engine_caps[i], names, 32);
            ec->caps = (char **)names;
            ecs[i] = ec;
        }
        hi->n_engine_caps = (size_t)h->n_engines;
        hi->engine_caps = ecs;
    }
    return hi;
}

/* ---- replies and idempotency records ---- */

static void s_req_key(const char *tenant, const char *rid, char *key, size_t len)
{
    snprintf(key, len, "%s\x1f%s", tenant, rid);
}

request_rec_t *reply_record_find(broker_t *self, const char *tenant, const char *rid)
{
    char key[2 * TT_MAX_REQUEST_ID + 2];
    s_req_key(tenant, rid, key, sizeof key);
    return zhashx_lookup(self->requests, key);
}

/* Answer a retry with the recorded reply. A record of an earlier batch is
 * durable, so the answer survives a failure of this batch. */
void reply_replay(broker_t *self, zmsg_t *envelope, const char *service, const request_rec_t *rec)
{
    outq_client(self, envelope, service, rec->reply, rec->len, rec->batch < self->batch_no);
}

/* The audit context of a request in progress, kept with its record so
 * the final outcome (an op's end, queue admission) is audited like the
 * request that asked for it. */
static char *s_audit_pack(const audit_ctx_t *a)
{
    if (!a)
        return NULL;
    char buf[600];
    snprintf(buf, sizeof buf, "%s\x1f%s\x1f%s\x1f%s", a->op ? a->op : "",
             a->target ? a->target : "", a->role ? a->role : "", a->key ? a->key : "");
    return strdup(buf);
}

void reply_audit(broker_t *self, const char *tenant, const char *rid, int status,
                 const char *message)
{
    if (!tenant || !*tenant)
        return;
    request_rec_t *rec = rid && *rid ? reply_record_find(self, tenant, rid) : NULL;
    audit_ctx_t ctx = {"request", "", "system", ""};
    char buf[600];
    if (rec && !rec->done && rec->audit) {
        /* op \x1f target \x1f role \x1f key */
        snprintf(buf, sizeof buf, "%s", rec->audit);
        char *f[4] = {buf, "", "", ""};
        for (int i = 1; i < 4; i++) {
            char *sep = strchr(f[i - 1], '\x1f');
            if (!sep)
                break;
            *sep = 0;
            f[i] = sep + 1;
        }
        ctx = (audit_ctx_t){f[0], f[1], f[2], f[3]};
    } else if (self->cur_audit)
        ctx = *self->cur_audit;
    if (persist_open(self))
        return;
    audit_rec_t ar = {0,        tt_now(), tenant,     ctx.role, ctx.key,
                      ctx.op,   ctx.target, rid ? rid : "", status, message ? message : ""};
    char err[256];
    if (audit_write(self->store, &ar, err, sizeof err)) {
        zsys_error("broker.db: %s", err);
        self->failed = true; /* a change without its audit row must not commit */
    }
}

void reply_record_begin(broker_t *self, const char *tenant, const char *rid)
{
    char key[2 * TT_MAX_REQUEST_ID + 2];
    s_req_key(tenant, rid, key, sizeof key);
    request_rec_t *old = zhashx_lookup(self->requests, key);
    char *audit = old && !old->done && old->audit ? strdup(old->audit) : s_audit_pack(self->cur_audit);
    request_rec_t *rec = calloc(1, sizeof *rec);
    if (rec) {
        rec->created_at = tt_now();
        rec->batch = self->batch_no;
        rec->audit = audit;
        audit = NULL;
        if (old && old->has_fp) {
            /* still the request it was begun for (a queued create admitted) */
            rec->has_fp = true;
            memcpy(rec->fp, old->fp, sizeof rec->fp);
        }
        zhashx_update(self->requests, key, rec);
    }
    free(audit);
    persist_request_begin(self, tenant, rid);
    if (rec && rec->has_fp)
        persist_request_fp(self, tenant, rid, rec->fp);
}

/* The copy of a reply kept under its request id, bounded: a big result
 * (an env of 500 VMs is ~175 KB) is stored without its VM list, or
 * without a result at all, and says so in its message; the live reply
 * keeps everything. A retry gets the outcome (status, message, env state),
 * which is what idempotency promises; `env show` gives the details. */
static uint8_t *s_stored_copy(Ttfleet__Reply *rep, uint8_t *full, size_t len, size_t *out_len)
{
    *out_len = len;
    if (len <= REPLY_MAX_STORED)
        return full;
    char *message = rep->message;
    char note[900];
    snprintf(note, sizeof note, "%s%s(the stored copy of this reply omits the details: %zu bytes "
             "over %d; see env show)",
             message, *message ? " " : "", len, REPLY_MAX_STORED);
    rep->message = note;
    size_t n_vms = 0;
    if (rep->result_case == TTFLEET__REPLY__RESULT_ENV && rep->env) {
        n_vms = rep->env->n_vms;
        rep->env->n_vms = 0;
    }
    uint8_t *buf = ttframe_pack_buf(&rep->base, out_len);
    if (rep->result_case == TTFLEET__REPLY__RESULT_ENV && rep->env)
        rep->env->n_vms = n_vms;
    if (buf && *out_len > REPLY_MAX_STORED) {
        free(buf);
        Ttfleet__Reply bare = TTFLEET__REPLY__INIT;
        bare.request_id = rep->request_id;
        bare.status = rep->status;
        bare.message = note;
        buf = ttframe_pack_buf(&bare.base, out_len);
    }
    rep->message = message;
    return buf;
}

void reply_send(broker_t *self, zmsg_t *envelope, const char *service, const char *tenant,
                const char *rid, int status, const char *message, Ttfleet__Reply *result,
                bool record)
{
    Ttfleet__Reply local = TTFLEET__REPLY__INIT;
    Ttfleet__Reply *rep = result ? result : &local;
    rep->request_id = (char *)(rid ? rid : "");
    rep->status = (Ttfleet__Status)status;
    rep->message = (char *)(message ? message : "");
    size_t len;
    uint8_t *buf = ttframe_pack_buf(&rep->base, &len);
    if (!buf)
        return;
    stats_reply(self, tenant, rid, status);
    if (self->cfg.verbose && status != TTFLEET__STATUS__OK)
        zsys_info("reply %s/%s: %s %s", tenant ? tenant : "-", rid ? rid : "-",
                  tt_status_name(status), message ? message : "");
    size_t slen = 0;
    uint8_t *stored = record && tenant && rid && *rid ? s_stored_copy(rep, buf, len, &slen) : NULL;
    if (record && tenant && rid && *rid)
        reply_audit(self, tenant, rid, status, message);
    if (stored) {
        char key[2 * TT_MAX_REQUEST_ID + 2];
        s_req_key(tenant, rid, key, sizeof key);
        request_rec_t *rec = zhashx_lookup(self->requests, key);
        if (!rec) {
            rec = calloc(1, sizeof *rec);
            if (rec) {
                rec->created_at = tt_now();
                zhashx_insert(self->requests, key, rec);
            }
        }
        if (rec) {
            free(rec->reply);
            rec->reply = malloc(slen ? slen : 1);
            if (rec->reply)
                memcpy(rec->reply, stored, slen);
            rec->len = slen;
            rec->done = true;
            rec->batch = self->batch_no;
            free(rec->audit);
            rec->audit = NULL;
        }
        persist_request_done(self, tenant, rid, stored, slen);
        if (stored != buf)
            free(stored);
    }
    outq_client(self, envelope, service, buf, len, false);
    free(buf);
}

int reply_ok(const handler_ctx_t *c, const char *message, Ttfleet__Reply *result, bool record)
{
    reply_send(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, message,
               result, record);
    return 0;
}

/* Reply with an env (and its VMs) as the result. */
void reply_env(broker_t *self, zmsg_t *envelope, const char *service, const char *tenant,
               const char *rid, int status, const char *msg, const env_t *env, bool record)
{
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (env) {
        rep.env = reply_env_info(&a, env, true);
        if (rep.env)
            rep.result_case = TTFLEET__REPLY__RESULT_ENV;
    }
    reply_send(self, envelope, service, tenant, rid, status, msg, &rep, record);
    reply_arena_free(&a);
}
