/*
 * env_ops: what each env request does to the model. See env_ops.h.
 *
 * Reads (show, list) are answered from memory at once. Changes follow one
 * pattern: check the rules and take every allocation first, then change
 * the model, stage the rows, and either reply at once (delete, rm-vm,
 * extend, update: the worker commands they need are declarative and
 * re-sent at every READY, so the broker's commit is the point of no
 * return) or open an op_t that waits for the workers (create, stop, start,
 * pause, resume: the client must learn whether the VMs really reached the
 * state). Either way the reply is queued and leaves only after the batch's
 * commit. A refusal returns a status and leaves nothing changed.
 */
#include "env_ops.h"
#include "image_ops.h"
#include "admq.h"
#include "op.h"
#include "outq.h"
#include "persist.h"
#include "reply.h"
#include "scheduler.h"
#include "ttcrash.h"
#include "usage.h"
#include "wcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The caller's env by name, if it is there and idle; else NULL with the
 * status in *status and the reason in c->msg. */
static env_t *s_env_idle(handler_ctx_t *c, const char *name, int *status)
{
    env_t *env = model_env_get(c->self, c->tenant, name);
    char msg[200];
    if (!env) {
        snprintf(msg, sizeof msg, "no env named '%s'", name);
        *status = handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
        return NULL;
    }
    if (env->busy) {
        snprintf(msg, sizeof msg, "env '%s' is busy (%s); try again when it is done", name,
                 model_env_state(env));
        *status = handler_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        return NULL;
    }
    return env;
}

/* The per image group readiness specs of a create as "IMAGE\tSPEC" lines
 * (NULL when none; validated already: no control characters). */
static char *s_group_ready(const Ttfleet__EnvCreate *cr)
{
    size_t len = 1;
    for (size_t i = 0; i < cr->n_images; i++)
        if (cr->images[i]->ready && *cr->images[i]->ready)
            len += strlen(cr->images[i]->image) + strlen(cr->images[i]->ready) + 2;
    if (len == 1)
        return NULL;
    char *out = malloc(len), *p = out;
    if (!out)
        return NULL;
    for (size_t i = 0; i < cr->n_images; i++)
        if (cr->images[i]->ready && *cr->images[i]->ready)
            p += sprintf(p, "%s\t%s\n", cr->images[i]->image, cr->images[i]->ready);
    *p = '\0';
    return out;
}

/* The resource totals of a create: what quota and queue count. */
static void s_create_totals(const Ttfleet__EnvCreate *cr, admq_res_t *res)
{
    uint64_t vms = 0;
    for (size_t i = 0; i < cr->n_images; i++)
        vms += cr->images[i]->dup ? cr->images[i]->dup : 1;
    res->vms = vms;
    res->cpu = vms * (cr->cpu ? cr->cpu : TT_DEFAULT_CPU);
    res->mem = vms * (cr->mem_mib ? cr->mem_mib : TT_DEFAULT_MEM_MIB);
    res->disk = vms * (cr->disk_mib ? cr->disk_mib : TT_DEFAULT_DISK_MIB);
}

/* A queued env as an EnvInfo (state "queued", its position and deadline). */
static Ttfleet__EnvInfo *s_queued_info(reply_arena_t *a, const admq_entry_t *e, int position)
{
    Ttfleet__EnvInfo *ei = reply_alloc(a, sizeof *ei);
    if (!ei)
        return NULL;
    ttfleet__env_info__init(ei);
    ei->name = (char *)e->env;
    ei->tenant = (char *)e->tenant;
    ei->state = "queued";
    ei->created_at = e->enqueued_at;
    ei->vm_count = (uint32_t)e->res.vms;
    ei->queue_position = (uint32_t)position;
    ei->queue_deadline = e->deadline;
    ei->priority = (uint32_t)e->priority;
    /* its labels, from the EnvCreate it waits with */
    Ttfleet__EnvCreate *cr = ttfleet__env_create__unpack(NULL, e->request_len, e->request);
    if (cr && cr->n_labels && cr->n_labels <= TT_MAX_LABELS &&
        (ei->labels = reply_alloc(a, sizeof(char *) * cr->n_labels))) {
        for (size_t i = 0; i < cr->n_labels; i++) {
            size_t len = strlen(cr->labels[i]);
            char *copy = reply_alloc(a, len + 1);
            if (!copy)
                break;
            memcpy(copy, cr->labels[i], len + 1);
            ei->labels[ei->n_labels++] = copy;
        }
    }
    if (cr)
        ttfleet__env_create__free_unpacked(cr, NULL);
    return ei;
}

static void s_reply_queued(handler_ctx_t *c, int status, const char *msg, const admq_entry_t *e,
                           int position, bool record)
{
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if ((rep.env = s_queued_info(&a, e, position)))
        rep.result_case = TTFLEET__REPLY__RESULT_ENV;
    reply_send(c->self, c->envelope, c->service, c->tenant, c->rid, status, msg, &rep, record);
    reply_arena_free(&a);
}

/* An event about a queued create (no env_t exists for it). */
static void s_queue_event(broker_t *self, const char *kind, const char *tenant, const char *name,
                          const char *message)
{
    env_t tmp;
    memset(&tmp, 0, sizeof tmp);
    snprintf(tmp.tenant, sizeof tmp.tenant, "%s", tenant);
    snprintf(tmp.name, sizeof tmp.name, "%s", name);
    outq_event(self, kind, &tmp, NULL, NULL, "queued", message);
}

void env_ops_queue_event(broker_t *self, const char *kind, const char *tenant, const char *name,
                         const char *message)
{
    s_queue_event(self, kind, tenant, name, message);
}

int env_ops_quota(broker_t *self, const char *tenant, const quota_usage_t *wanted, char *msg,
                  size_t msglen)
{
    quota_t q;
    quotas_get(self->quotas, tenant, &q);
    if (!usage_limited(&q))
        return 0;
    quota_usage_t used;
    usage_of(self, tenant, &used);
    return quota_check(&q, tenant, &used, wanted, NULL, msg, msglen);
}

int env_create_place(broker_t *self, const Ttfleet__EnvCreate *cr, const char *tenant,
                     zmsg_t *envelope, const char *service, const char *rid, bool *settling,
                     char *msg, size_t msglen)
{
    *settling = false;
    int64_t lifetime = cr->lifetime ? (int64_t)cr->lifetime : TT_DEFAULT_LIFETIME;
    const char *engine = cr->engine && *cr->engine ? cr->engine : self->cfg.default_engine;
    uint32_t cpu = cr->cpu ? cr->cpu : TT_DEFAULT_CPU;
    uint32_t mem = cr->mem_mib ? cr->mem_mib : TT_DEFAULT_MEM_MIB;
    uint32_t disk = cr->disk_mib ? cr->disk_mib : TT_DEFAULT_DISK_MIB;
    uint32_t gports[TT_MAX_PORTS_PER_VM];
    int n_gports = 0;
    gports[n_gports++] = 22;
    for (size_t i = 0; i < cr->n_ports; i++) {
        if (cr->ports[i] == 22)
            continue;
        if (n_gports == TT_MAX_PORTS_PER_VM) {
            snprintf(msg, msglen, "too many ports (22 is always added)");
            return TTFLEET__STATUS__BAD_REQUEST;
        }
        gports[n_gports++] = cr->ports[i];
    }

    /* what the engine can do, as the hosts that offer it declared; a host
     * is then chosen among those whose engine declares what the env needs */
    bool said;
    uint32_t caps = model_engine_caps(self, engine, &said);
    uint32_t need = cr->n_ssh_keys || cr->user_data.len ? TT_CAP_BOOTSTRAP : 0;
    if (need && said && !(caps & TT_CAP_BOOTSTRAP)) {
        snprintf(msg, msglen,
                 "engine '%s' cannot bootstrap a guest (SSH keys, user-data): use an engine "
                 "that can (the qemu engine with a cloud-init image)",
                 engine);
        return TTFLEET__STATUS__BAD_REQUEST;
    }
    /* an engine known to run host-local images only: its names are never
     * catalog images */
    bool local_only = said && !(caps & TT_CAP_CATALOG);
    char *group_ready = s_group_ready(cr);

    env_t *env = model_env_new(self, tenant, cr->name);
    if (!env || model_env_set_guest(env, cr->ssh_keys, (int)cr->n_ssh_keys, cr->user_data.data,
                                    cr->user_data.len, cr->ready, group_ready)) {
        free(group_ready);
        model_env_free(self, &env);
        snprintf(msg, msglen, "out of memory");
        *settling = true; /* not an outcome: a retry decides again */
        return TTFLEET__STATUS__INTERNAL;
    }
    free(group_ready);
    env->id = self->next_env_id++;
    env->target = TARGET_CREATING;
    env->created_at = tt_now();
    env->lifetime = lifetime;
    env->expires_at = env->created_at + lifetime;
    env->deny_outgoing = cr->deny_outgoing;
    snprintf(env->boot, sizeof env->boot, "%s", cr->boot ? cr->boot : "");
    model_env_set_labels(env, cr->labels, cr->n_labels);
    env->n_gports = n_gports;
    memcpy(env->gports, gports, sizeof gports);

    int status = TTFLEET__STATUS__OK;
    for (size_t i = 0; i < cr->n_images && status == TTFLEET__STATUS__OK; i++) {
        uint32_t dup = cr->images[i]->dup ? cr->images[i]->dup : 1;
        vm_t cat; /* the catalog image it names, if it does (issue 12) */
        memset(&cat, 0, sizeof cat);
        int catalog =
            local_only ? 0
                       : image_ops_resolve(self, tenant, cr->images[i]->image, &cat, msg, msglen);
        if (catalog < 0) {
            status = TTFLEET__STATUS__INTERNAL;
            break;
        }
        if (!catalog && !tt_name_valid(cr->images[i]->image)) {
            /* NAME:TAG and NAME@sha256: name catalog images only */
            status = local_only ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND;
            if (local_only)
                snprintf(msg, msglen,
                         "image '%.150s': the %.64s engine runs host-local images, named without "
                         "a tag or digest",
                         cr->images[i]->image, engine);
            else
                snprintf(msg, msglen, "no image '%.150s' in the catalog", cr->images[i]->image);
            break;
        }
        for (uint32_t d = 0; d < dup && status == TTFLEET__STATUS__OK; d++) {
            sched_want_t want = {engine,
                                 cr->images[i]->image,
                                 cpu,
                                 mem,
                                 disk,
                                 cr->spread || self->cfg.spread,
                                 NULL,
                                 0,
                                 catalog ? cat.image_blobs : NULL,
                                 need,
                                 cr->boot};
            host_t *host = sched_place(self, &want, &status, msg, msglen);
            if (!host)
                break;
            uint32_t vm_id;
            uint64_t mac;
            if (alloc_vm_id_in_env(host, env, NULL, &vm_id) || alloc_mac(self, &mac)) {
                status = TTFLEET__STATUS__NO_CAPACITY;
                snprintf(msg, msglen, "no free VM id or MAC left on host %s", host->id);
                break;
            }
            vm_t *vm = model_vm_add(self, env, host, vm_id, mac);
            if (!vm) {
                status = TTFLEET__STATUS__INTERNAL;
                snprintf(msg, msglen, "out of memory");
                break;
            }
            vm->uid = self->next_vm_uid++;
            /* a catalog image's VM shows the image's plain name (a tag or
             * digest the create named is its image_digest) */
            snprintf(vm->image, sizeof vm->image, "%s", catalog ? cat.image : want.image);
            if (catalog)
                model_vm_set_image(vm, &cat);
            snprintf(vm->engine, sizeof vm->engine, "%s", engine);
            model_vm_set_hw(vm, cpu, mem, disk);
            model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
            if (alloc_vm_ports(vm, env->gports, env->n_gports)) {
                status = TTFLEET__STATUS__NO_CAPACITY;
                snprintf(msg, msglen, "no free public port left on host %s (%d..%d)", host->id,
                         TT_PORT_MIN, TT_PORT_MAX);
            }
        }
    }
    if (status != TTFLEET__STATUS__OK) {
        model_env_free(self, &env);
        /* Just after a broker start the hosts are still saying READY: "no
         * host" then is not a decision, so it is not recorded and the
         * client's retry (same id) gets the real outcome. */
        *settling = status == TTFLEET__STATUS__UNAVAILABLE &&
                    tt_mono_ms() < self->started_ms + (int64_t)self->cfg.heartbeat_ms *
                                                          (self->cfg.liveness + 1);
        if (*settling)
            snprintf(msg + strlen(msg), msglen - strlen(msg),
                     " (the broker just started and hosts are still reconnecting: retry)");
        return status;
    }
    persist_env_insert(self, env);
    for (int i = 0; i < env->n_vms; i++)
        persist_vm_insert(self, env->vms[i]);
    op_t *op = op_new(self, OP_CREATE, env, envelope, service, tenant, rid);
    if (op && self->admitting)
        op->queued = admq_entry_dup(self->admitting);
    if (!op) {
        /* the savepoint takes the rows back; this takes the model back */
        model_env_free(self, &env);
        snprintf(msg, msglen, "out of memory");
        *settling = true;
        return TTFLEET__STATUS__INTERNAL;
    }
    /* announced with its record, before any event of its VMs */
    outq_event(self, "env.created", env, NULL, NULL, "creating", NULL);
    op_dispatch(self, op);
    return 0;
}


int env_create(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvCreate *cr = c->req->env_create;
    char msg[512];
    if (model_env_get(self, c->tenant, cr->name) || admq_find(self->admq, c->tenant, cr->name)) {
        snprintf(msg, sizeof msg, "env '%s' already exists%s", cr->name,
                 model_env_get(self, c->tenant, cr->name) ? "" : " (queued)");
        return handler_fail(c, TTFLEET__STATUS__ALREADY_EXISTS, msg);
    }
    int64_t lifetime = cr->lifetime ? (int64_t)cr->lifetime : TT_DEFAULT_LIFETIME;
    if (lifetime > TT_MAX_LIFETIME_USER && !c->admin) {
        snprintf(msg, sizeof msg, "lifetime %lld s is over %d s (6 h); only admins may ask more",
                 (long long)lifetime, TT_MAX_LIFETIME_USER);
        return handler_fail(c, TTFLEET__STATUS__FORBIDDEN, msg);
    }
    /* quotas: the lifetime, the request alone (never queued when it can
     * never fit), then with what the tenant holds now */
    quota_t q;
    quotas_get(self->quotas, c->tenant, &q);
    if (quota_check_lifetime(&q, c->tenant, lifetime, NULL, msg, sizeof msg))
        return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, msg);
    admq_res_t res;
    s_create_totals(cr, &res);
    quota_usage_t wanted = {1, (int64_t)res.vms, (int64_t)res.cpu, (int64_t)res.mem,
                            (int64_t)res.disk};
    quota_usage_t zero = {0, 0, 0, 0, 0};
    if (quota_check(&q, c->tenant, &zero, &wanted, NULL, msg, sizeof msg))
        return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, msg);
    if (env_ops_quota(self, c->tenant, &wanted, msg, sizeof msg))
        return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, msg);
    int cap = quotas_priority_cap(self->quotas, c->tenant, c->admin);
    if ((int)cr->priority > cap) {
        snprintf(msg, sizeof msg, "priority %u is above the cap %d of tenant %s (quota show)",
                 cr->priority, cap, c->tenant);
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, msg);
    }
    bool settling;
    int status = env_create_place(self, cr, c->tenant, c->envelope, c->service, c->rid, &settling,
                                  msg, sizeof msg);
    if (status == TTFLEET__STATUS__OK)
        return 0;
    if (status != TTFLEET__STATUS__NO_CAPACITY || !cr->queue) {
        c->no_record = settling;
        return handler_fail(c, status, msg);
    }
    /* no room now and the caller asked to wait: into the durable queue;
     * the request id stays in progress until admission, expiry or cancel */
    size_t len = ttfleet__env_create__get_packed_size(cr);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    ttfleet__env_create__pack(cr, buf);
    int position = 0, qstatus = TTFLEET__STATUS__INTERNAL;
    char err[300];
    int rc = persist_open(self);
    if (rc == 0)
        rc = admq_push(self->admq, c->tenant, cr->name, c->rid, (int)cr->priority, tt_now(),
                       cr->max_wait, &res, buf, len, &position, &qstatus, err, sizeof err);
    free(buf);
    if (rc) {
        snprintf(msg + strlen(msg), sizeof msg - strlen(msg), "; not queued: %s", err);
        return handler_fail(c, qstatus, msg);
    }
    const admq_entry_t *e = admq_find(self->admq, c->tenant, cr->name);
    reply_record_begin(self, c->tenant, c->rid);
    char text[640];
    snprintf(text, sizeof text, "queued at position %d (%s)", position, msg);
    reply_audit(self, c->tenant, c->rid, TTFLEET__STATUS__QUEUED, text);
    s_queue_event(self, "env.queued", c->tenant, cr->name, text);
    s_reply_queued(c, TTFLEET__STATUS__QUEUED, text, e, position, false);
    return 0;
}

/* Give back the cpu and mem a failed start reserved. */
static void s_unreserve(env_t *env, const bool *reserved)
{
    for (int i = 0; i < env->n_vms; i++)
        if (reserved[i])
            model_vm_set_state(env->vms[i], TTFLEET__VM_STATE__VM_STOPPED);
}

/* 0 if every VM of env runs on an engine its host declares able to take
 * memory snapshots (TT_CAP_SNAPSHOTS); else -1 with the reason in msg. */
static int s_suspend_check(broker_t *self, const env_t *env, char *msg, size_t len)
{
    (void)self;
    for (int i = 0; i < env->n_vms; i++) {
        const vm_t *vm = env->vms[i];
        if (!(model_host_engine_caps(vm->host, vm->engine) & TT_CAP_SNAPSHOTS)) {
            snprintf(msg, len,
                     "cannot suspend env '%s': VM %u runs on engine '%s' of host %s, which "
                     "cannot save a VM's memory (no snapshots capability); use env pause or "
                     "env stop",
                     env->name, vm->vm_id, vm->engine, vm->host->id);
            return -1;
        }
    }
    return 0;
}

/* stop, start, pause, resume, suspend: move every VM of the env to a new
 * target. */
static int s_power(handler_ctx_t *c, op_kind_t kind, const char *name)
{
    broker_t *self = c->self;
    int status;
    env_t *env = s_env_idle(c, name, &status);
    if (!env)
        return status;
    char msg[512];
    env_target_t from_ok1, from_ok2, to;
    const char *verb;
    switch (kind) {
    case OP_STOP:
        from_ok1 = TARGET_RUNNING, from_ok2 = TARGET_PAUSED, to = TARGET_STOPPED, verb = "stop";
        break;
    case OP_START:
        from_ok1 = TARGET_STOPPED, from_ok2 = TARGET_STOPPED, to = TARGET_RUNNING, verb = "start";
        break;
    case OP_PAUSE:
        from_ok1 = TARGET_RUNNING, from_ok2 = TARGET_RUNNING, to = TARGET_PAUSED, verb = "pause";
        break;
    case OP_SUSPEND:
        from_ok1 = TARGET_RUNNING, from_ok2 = TARGET_PAUSED, to = TARGET_SUSPENDED,
        verb = "suspend";
        break;
    default:
        from_ok1 = TARGET_PAUSED, from_ok2 = TARGET_SUSPENDED, to = TARGET_RUNNING, verb = "resume";
        break;
    }
    /* A degraded env may be driven again to the target it already has,
     * which retries the VMs that did not get there. */
    bool retry = env->target == to && strcmp(model_env_state(env), "degraded") == 0;
    /* a suspended env may also be stopped: its saved memory is dropped */
    bool stop_suspended = kind == OP_STOP && env->target == TARGET_SUSPENDED;
    if (env->target != from_ok1 && env->target != from_ok2 && !retry && !stop_suspended) {
        snprintf(msg, sizeof msg, "cannot %s env '%s': it is %s", verb, name, model_env_state(env));
        return handler_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
    }
    if (kind == OP_SUSPEND && s_suspend_check(self, env, msg, sizeof msg))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, msg);
    /* a resume of a suspended env takes its cpu and mem back, as a start */
    bool takes_cpu = kind == OP_START || (kind == OP_RESUME && env->target == TARGET_SUSPENDED);
    int64_t now = tt_now();
    if ((kind == OP_STOP || kind == OP_START) && env->last_mgmt &&
        now - env->last_mgmt < self->cfg.min_stop_interval) {
        snprintf(msg, sizeof msg,
                 "env '%s' was stopped or started %lld s ago; wait %lld s more (at least %d s "
                 "between stop and start)",
                 name, (long long)(now - env->last_mgmt),
                 (long long)(self->cfg.min_stop_interval - (now - env->last_mgmt)),
                 self->cfg.min_stop_interval);
        return handler_fail(c, TTFLEET__STATUS__TOO_SOON, msg);
    }
    /* start reserves cpu and mem on every VM's own host (its disk lives
     * there); reserved[] remembers which, so a failure gives them back */
    if (takes_cpu) {
        quota_usage_t more = {0, 0, 0, 0, 0};
        for (int i = 0; i < env->n_vms; i++)
            if (!model_vm_holds_cpu(env->vms[i])) {
                more.cpu += env->vms[i]->cpu;
                more.mem += env->vms[i]->mem;
            }
        if (env_ops_quota(self, c->tenant, &more, msg, sizeof msg))
            return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, msg);
    }
    bool *reserved = calloc((size_t)env->n_vms + 1, sizeof *reserved);
    if (!reserved)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    for (int i = 0; takes_cpu && i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (model_vm_holds_cpu(vm))
            continue;
        if (!sched_fits(self, vm->host, vm->cpu, vm->mem, 0, msg, sizeof msg)) {
            s_unreserve(env, reserved);
            free(reserved);
            return handler_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
        }
        model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
        reserved[i] = true;
    }
    op_t *op = op_new(self, kind, env, c->envelope, c->service, c->tenant, c->rid);
    if (!op) {
        s_unreserve(env, reserved);
        free(reserved);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    free(reserved);
    op->from_suspend = kind == OP_RESUME && env->target == TARGET_SUSPENDED;
    if (kind == OP_STOP || kind == OP_START)
        env->last_mgmt = now;
    if (kind == OP_STOP || kind == OP_SUSPEND)
        self->admit_wanted = true;
    env->target = to;
    persist_env_update(self, env);
    op_dispatch(self, op);
    return 0;
}

void env_ops_delete(broker_t *self, env_t *env, const char *kind)
{
    tt_crash_point(strcmp(kind, "env.expired") == 0 ? "broker.mid_reap" : "broker.mid_delete");
    outq_event(self, kind, env, NULL, NULL, "deleted", NULL);
    op_env_drop(self, env);
    self->admit_wanted = true;
}

int env_extend(handler_ctx_t *c)
{
    const Ttfleet__EnvExtend *x = c->req->env_extend;
    int status;
    env_t *env = s_env_idle(c, x->name, &status);
    if (!env)
        return status;
    if ((int64_t)x->lifetime > TT_MAX_LIFETIME_USER && !c->admin) {
        char msg[200];
        snprintf(msg, sizeof msg, "lifetime %llu s is over %d s (6 h); only admins may ask more",
                 (unsigned long long)x->lifetime, TT_MAX_LIFETIME_USER);
        return handler_fail(c, TTFLEET__STATUS__FORBIDDEN, msg);
    }
    quota_t q;
    quotas_get(c->self->quotas, c->tenant, &q);
    char qmsg[300];
    if (quota_check_lifetime(&q, c->tenant, (int64_t)x->lifetime, NULL, qmsg, sizeof qmsg))
        return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, qmsg);
    int64_t before = env->expires_at;
    env->lifetime = (int64_t)x->lifetime;
    env->expires_at = env->created_at + env->lifetime;
    persist_env_update(c->self, env);
    /* the specs carry the lease (the worker enforces it): send them only
     * when it changed, so a repeated extend costs the workers nothing */
    if (env->expires_at != before)
        wcmd_send_specs(c->self, env->vms, env->n_vms);
    outq_event(c->self, "env.state", env, NULL, NULL, model_env_state(env), "lease changed");
    reply_env(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env,
              true);
    return 0;
}

int env_update(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvUpdate *u = c->req->env_update;
    int status;
    env_t *env = s_env_idle(c, u->name, &status);
    if (!env)
        return status;
    char msg[512];
    bool hw = u->cpu || u->mem_mib || u->disk_mib;
    if (hw) {
        bool stopped = env->target == TARGET_STOPPED;
        for (int i = 0; i < env->n_vms && stopped; i++)
            stopped = env->vms[i]->state == TTFLEET__VM_STATE__VM_STOPPED;
        if (!stopped) {
            snprintf(msg, sizeof msg,
                     "cpu, mem and disk of env '%s' can change only while it is stopped (it is "
                     "%s)",
                     u->name, model_env_state(env));
            return handler_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        }
        quota_usage_t growth = {0, 0, 0, 0, 0};
        for (int i = 0; i < env->n_vms; i++) {
            const vm_t *vm = env->vms[i];
            if (u->cpu > vm->cpu)
                growth.cpu += u->cpu - vm->cpu;
            if (u->mem_mib > vm->mem)
                growth.mem += u->mem_mib - vm->mem;
            if (u->disk_mib > vm->disk)
                growth.disk += u->disk_mib - vm->disk;
        }
        if (env_ops_quota(self, c->tenant, &growth, msg, sizeof msg))
            return handler_fail(c, TTFLEET__STATUS__QUOTA_EXCEEDED, msg);
        /* disk is held while stopped: check the growth of all the env's
         * VMs on a host together (each alone may fit while the sum does
         * not), once per host */
        for (int i = 0; i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            bool seen = false;
            for (int j = 0; j < i && !seen; j++)
                seen = env->vms[j]->host == vm->host;
            uint64_t more = 0;
            for (int j = i; j < env->n_vms && !seen; j++)
                if (env->vms[j]->host == vm->host) {
                    uint32_t disk = u->disk_mib ? u->disk_mib : env->vms[j]->disk;
                    more += disk > env->vms[j]->disk ? disk - env->vms[j]->disk : 0;
                }
            uint32_t cpu = u->cpu ? u->cpu : vm->cpu;
            uint32_t mem = u->mem_mib ? u->mem_mib : vm->mem;
            if (cpu > vm->host->cpu_total || mem > vm->host->mem_total ||
                !sched_fits(self, vm->host, 0, 0, more, msg, sizeof msg)) {
                if (cpu > vm->host->cpu_total || mem > vm->host->mem_total)
                    snprintf(msg, sizeof msg,
                             "host %s can never run a VM of %u cpu / %u MiB: it has %u cpu / "
                             "%llu MiB",
                             vm->host->id, cpu, mem, vm->host->cpu_total,
                             (unsigned long long)vm->host->mem_total);
                return handler_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
            }
        }
    }
    uint32_t gports[TT_MAX_PORTS_PER_VM];
    int n_gports = env->n_gports;
    memcpy(gports, env->gports, sizeof gports);
    if (u->set_ports) {
        n_gports = 0;
        gports[n_gports++] = 22;
        for (size_t i = 0; i < u->n_ports; i++) {
            if (u->ports[i] == 22)
                continue;
            if (n_gports == TT_MAX_PORTS_PER_VM) {
                return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                                    "too many ports (22 is always added)");
            }
            gports[n_gports++] = u->ports[i];
        }
        /* Keep the public port of every guest port that stays; new ones get
         * new ports. All VMs are planned first (next[], fresh[]) and only
         * then changed, so running out of ports on any host gives every
         * port back and fails this request alone. */
        size_t slots = (size_t)env->n_vms * TT_MAX_PORTS_PER_VM + 1;
        portmap_t *next = calloc(slots, sizeof *next);
        bool *fresh = calloc(slots, sizeof *fresh);
        if (!next || !fresh) {
            free(next);
            free(fresh);
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
        }
        int planned = 0;
        for (; planned < env->n_vms; planned++) {
            vm_t *vm = env->vms[planned];
            size_t at = (size_t)planned * TT_MAX_PORTS_PER_VM;
            if (alloc_vm_ports_plan(vm, gports, n_gports, next + at, fresh + at)) {
                snprintf(msg, sizeof msg,
                         "no free public port left on host %s (%d..%d) for env '%s'; nothing "
                         "was changed",
                         vm->host->id, TT_PORT_MIN, TT_PORT_MAX, env->name);
                break;
            }
        }
        if (planned < env->n_vms) {
            /* give back what the plans took, latest first */
            for (int i = planned - 1; i >= 0; i--)
                alloc_vm_ports_unplan(env->vms[i], next + (size_t)i * TT_MAX_PORTS_PER_VM,
                                      fresh + (size_t)i * TT_MAX_PORTS_PER_VM, n_gports);
            free(next);
            free(fresh);
            return handler_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
        }
        for (int i = 0; i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            alloc_vm_ports_apply(vm, next + (size_t)i * TT_MAX_PORTS_PER_VM, n_gports);
            persist_vm_ports(self, vm);
        }
        free(next);
        free(fresh);
        env->n_gports = n_gports;
        memcpy(env->gports, gports, sizeof gports);
    }
    if (hw)
        for (int i = 0; i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            model_vm_set_hw(vm, u->cpu ? u->cpu : vm->cpu, u->mem_mib ? u->mem_mib : vm->mem,
                            u->disk_mib ? u->disk_mib : vm->disk);
            persist_vm_update(self, vm);
        }
    if (u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_DENY)
        env->deny_outgoing = true;
    else if (u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW)
        env->deny_outgoing = false;
    persist_env_update(self, env);
    wcmd_send_specs(self, env->vms, env->n_vms);
    outq_event(self, "env.state", env, NULL, NULL, model_env_state(env), "updated");
    reply_env(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env, true);
    return 0;
}

int env_rm_vm(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvRmVm *r = c->req->env_rm_vm;
    int status;
    env_t *env = s_env_idle(c, r->name, &status);
    if (!env)
        return status;
    char msg[256];
    vm_t **doomed = calloc((size_t)env->n_vms + 1, sizeof *doomed);
    if (!doomed) {
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    int n = 0;
    if (r->n_vm_ids) {
        for (size_t k = 0; k < r->n_vm_ids; k++) {
            int found = 0;
            for (int i = 0; i < env->n_vms; i++) {
                vm_t *vm = env->vms[i];
                if (vm->vm_id == r->vm_ids[k] &&
                    (!r->host || !*r->host || strcmp(r->host, vm->host->id) == 0)) {
                    if (!vm->doomed) {
                        vm->doomed = true;
                        doomed[n++] = vm;
                    }
                    found++;
                }
            }
            if (found == 0 || (found > 1 && (!r->host || !*r->host))) {
                for (int i = 0; i < n; i++)
                    doomed[i]->doomed = false;
                free(doomed);
                if (found == 0)
                    snprintf(msg, sizeof msg, "env '%s' has no VM %u", r->name, r->vm_ids[k]);
                else
                    snprintf(msg, sizeof msg, "VM id %u is on several hosts; name the host",
                             r->vm_ids[k]);
                return handler_fail(
                    c, found ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND, msg);
            }
        }
    } else {
        size_t plen = strlen(r->image_prefix);
        for (int i = 0; i < env->n_vms; i++)
            if (strncmp(env->vms[i]->image, r->image_prefix, plen) == 0) {
                env->vms[i]->doomed = true;
                doomed[n++] = env->vms[i];
            }
        if (n == 0) {
            free(doomed);
            snprintf(msg, sizeof msg, "env '%s' has no VM whose image starts with '%s'", r->name,
                     r->image_prefix);
            return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
        }
    }
    wcmd_send_specs(self, doomed, n);
    for (int i = 0; i < n; i++) {
        outq_event(self, "vm.state", env, doomed[i], doomed[i]->host, "absent", "removed");
        persist_vm_delete(self, doomed[i]);
        model_vm_remove(self, doomed[i]);
    }
    free(doomed);
    self->admit_wanted = true;
    reply_env(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env, true);
    return 0;
}

int env_console(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvConsole *q = c->req->env_console;
    env_t *env = model_env_get(self, c->tenant, q->name);
    char msg[200];
    if (!env) {
        snprintf(msg, sizeof msg, "no env named '%s'", q->name);
        return handler_fail_norec(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    vm_t *vm = NULL;
    int found = 0;
    for (int i = 0; i < env->n_vms; i++)
        if (env->vms[i]->vm_id == q->vm_id &&
            (!q->host || !*q->host || strcmp(q->host, env->vms[i]->host->id) == 0)) {
            vm = env->vms[i];
            found++;
        }
    if (found != 1) {
        if (found)
            snprintf(msg, sizeof msg, "VM id %u is on several hosts; name the host", q->vm_id);
        else
            snprintf(msg, sizeof msg, "env '%s' has no VM %u", q->name, q->vm_id);
        return handler_fail_norec(
            c, found ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND, msg);
    }
    host_t *h = vm->host;
    if (!h->routing || h->state == HOST_DOWN) {
        snprintf(msg, sizeof msg, "host %s of VM %u is down", h->id, vm->vm_id);
        return handler_fail_norec(c, TTFLEET__STATUS__UNAVAILABLE, msg);
    }
    op_t *op = op_new(self, OP_CONSOLE, env, c->envelope, c->service, c->tenant, c->rid);
    if (!op) {
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    snprintf(op->console_host, sizeof op->console_host, "%s", h->id);
    op->console_vm_id = vm->vm_id;
    op->deadline_ms = tt_mono_ms() + 10000;
    uint64_t cmd_id =
        wcmd_console(self, h, vm->vm_id, q->max_bytes ? q->max_bytes : TT_CONSOLE_DEFAULT);
    if (!cmd_id) {
        op_free(self, &op);
        snprintf(msg, sizeof msg, "host %s has too many commands queued; try again", h->id);
        return handler_fail_norec(c, TTFLEET__STATUS__UNAVAILABLE, msg);
    }
    op_wait(self, op, h, cmd_id);
    return 0;
}

static int s_env_cmp(const void *a, const void *b)
{
    const env_t *x = *(env_t *const *)a, *y = *(env_t *const *)b;
    int r = strcmp(x->tenant, y->tenant);
    return r ? r : strcmp(x->name, y->name);
}

typedef struct {
    reply_arena_t *a;
    Ttfleet__EnvInfoList *el;
    size_t max;
    char *const *want; /* EnvList.labels */
    size_t n_want;
} s_list_arg_t;

static void s_list_queued(const admq_entry_t *e, int position, void *arg)
{
    s_list_arg_t *la = arg;
    if (la->el->n_envs >= la->max)
        return;
    Ttfleet__EnvInfo *ei = s_queued_info(la->a, e, position);
    if (!ei)
        return;
    /* the filter: every wanted label among the create's */
    for (size_t k = 0; k < la->n_want; k++) {
        bool found = false;
        for (size_t i = 0; i < ei->n_labels && !found; i++)
            found = strcmp(ei->labels[i], la->want[k]) == 0;
        if (!found)
            return;
    }
    la->el->envs[la->el->n_envs++] = ei;
}

int env_list(handler_ctx_t *c)
{
    broker_t *self = c->self;
    bool all = c->req->env_list->all;
    if (all && !c->admin) {
        return handler_fail_norec(c, TTFLEET__STATUS__FORBIDDEN,
                                  "listing every tenant's envs needs the admin role");
    }
    size_t n = zhashx_size(self->envs);
    env_t **list = calloc(n + 1, sizeof *list);
    reply_arena_t a = reply_arena();
    Ttfleet__EnvInfoList *el = reply_alloc(&a, sizeof *el);
    if (!list || !el) {
        free(list);
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    size_t k = 0;
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        if ((all || strcmp(e->tenant, c->tenant) == 0) &&
            model_env_has_labels(e, c->req->env_list->labels, c->req->env_list->n_labels))
            list[k++] = e;
    qsort(list, k, sizeof *list, s_env_cmp);
    ttfleet__env_info_list__init(el);
    el->envs = reply_alloc(&a, sizeof(Ttfleet__EnvInfo *) * (k + 1));
    for (size_t i = 0; el->envs && i < k; i++)
        if ((el->envs[el->n_envs] = reply_env_info(&a, list[i], false)))
            el->n_envs++;
    /* then the queued creates, in admission order, positions in one walk */
    size_t nq = all ? admq_size(self->admq) : admq_tenant_size(self->admq, c->tenant);
    if (nq && el->envs) {
        Ttfleet__EnvInfo **grown = reply_alloc(&a, sizeof(Ttfleet__EnvInfo *) * (k + nq + 1));
        if (grown) {
            memcpy(grown, el->envs, sizeof(Ttfleet__EnvInfo *) * el->n_envs);
            el->envs = grown;
            s_list_arg_t la = {&a, el, k + nq, c->req->env_list->labels,
                               c->req->env_list->n_labels};
            admq_each(self->admq, all ? NULL : c->tenant, s_list_queued, &la);
        }
    }
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_ENVS;
    rep.envs = el;
    reply_send(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", &rep,
               false);
    reply_arena_free(&a);
    free(list);
    return 0;
}

int env_show(handler_ctx_t *c)
{
    env_t *env = model_env_get(c->self, c->tenant, c->req->env_show->name);
    const admq_entry_t *qe = env ? NULL : admq_find(c->self->admq, c->tenant, c->req->env_show->name);
    if (qe) {
        int position = admq_position(c->self->admq, c->tenant, qe->env);
        s_reply_queued(c, TTFLEET__STATUS__OK, "", qe, position, false);
        return 0;
    }
    if (!env) {
        char msg[160];
        snprintf(msg, sizeof msg, "no env named '%s'", c->req->env_show->name);
        return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    reply_env(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env,
              false);
    return 0;
}

int env_delete(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const char *name = c->req->env_delete->name;
    const admq_entry_t *qe =
        model_env_get(self, c->tenant, name) ? NULL : admq_find(self->admq, c->tenant, name);
    if (qe) {
        /* a queued create: take it out and answer its request id */
        char rid[ADMQ_NAME_MAX + 1];
        snprintf(rid, sizeof rid, "%s", qe->request_id);
        if (persist_open(self) || admq_cancel(self->admq, c->tenant, name) < 0)
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot cancel the queued create");
        char msg[200];
        snprintf(msg, sizeof msg, "the queued create of env '%s' was cancelled by env delete", name);
        /* the waiter's outcome is the create's (its context is lost after a restart) */
        const audit_ctx_t *saved = self->cur_audit;
        audit_ctx_t actx = {"env.create", name, saved ? saved->role : "user",
                            saved ? saved->key : ""};
        self->cur_audit = &actx;
        reply_send(self, NULL, NULL, c->tenant, rid, TTFLEET__STATUS__QUEUE_CANCELLED, msg, NULL,
                   true);
        self->cur_audit = saved;
        s_queue_event(self, "env.queue_cancelled", c->tenant, name, msg);
        reply_send(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, msg,
                   NULL, true);
        self->admit_wanted = true; /* the order behind it changed */
        return 0;
    }
    int status;
    env_t *env = s_env_idle(c, c->req->env_delete->name, &status);
    if (!env)
        return status;
    env_ops_delete(c->self, env, "env.deleted");
    reply_send(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", NULL,
               true);
    return 0;
}

int env_stop(handler_ctx_t *c)
{
    return s_power(c, OP_STOP, c->req->env_stop->name);
}

int env_start(handler_ctx_t *c)
{
    return s_power(c, OP_START, c->req->env_start->name);
}

int env_pause(handler_ctx_t *c)
{
    return s_power(c, OP_PAUSE, c->req->env_pause->name);
}

int env_resume(handler_ctx_t *c)
{
    return s_power(c, OP_RESUME, c->req->env_resume->name);
}

int env_suspend(handler_ctx_t *c)
{
    return s_power(c, OP_SUSPEND, c->req->env_suspend->name);
}
