/*
 * ops: what each client request does to the model.
 *
 * Reads (show, list, hosts, status) are answered from memory at once.
 * Changes follow one pattern: check the rules, change the model, stage the
 * rows, and either reply at once (delete, rm-vm, extend, update: the worker
 * commands they need are declarative and re-sent at every READY, so the
 * broker's commit is the point of no return) or open an op_t that waits for
 * the workers (create, stop, start, pause, resume: the client must learn
 * whether the VMs really reached the state). Either way the reply is queued
 * and leaves only after the batch's commit.
 *
 * Idempotency: a changing request is recorded under (tenant, request id)
 * with its packed reply. A retry gets that reply again, or IN_PROGRESS while
 * the first attempt runs.
 *
 * Create is all-or-nothing: if a worker refuses, fails, times out or dies,
 * every VM made for the env is destroyed, every allocation freed, the rows
 * deleted, and the client hears why.
 */
#include "broker.h"
#include "ttcrash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a tiny arena for building reply trees ---- */

typedef struct {
    zlistx_t *blocks;
} arena_t;

static void *a_new(arena_t *a, size_t size)
{
    void *p = calloc(1, size);
    if (!p)
        return NULL; /* callers treat NULL as out of memory */
    zlistx_add_end(a->blocks, p);
    return p;
}

static void a_free(arena_t *a)
{
    for (void *p = zlistx_first(a->blocks); p; p = zlistx_next(a->blocks))
        free(p);
    zlistx_destroy(&a->blocks);
}

static arena_t a_make(void)
{
    arena_t a = {zlistx_new()};
    return a;
}


/* ---- building results ---- */

static Ttfleet__VmInfo *s_vm_info(arena_t *a, const vm_t *vm)
{
    Ttfleet__VmInfo *vi = a_new(a, sizeof *vi);
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
    vi->n_ports = (size_t)vm->n_ports;
    vi->ports = a_new(a, sizeof(Ttfleet__PortMap *) * (size_t)(vm->n_ports + 1));
    Ttfleet__PortMap *pm = a_new(a, sizeof *pm * (size_t)(vm->n_ports + 1));
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

static Ttfleet__EnvInfo *s_env_info(arena_t *a, const env_t *env, bool with_vms)
{
    Ttfleet__EnvInfo *ei = a_new(a, sizeof *ei);
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
    if (with_vms && env->n_vms) {
        ei->vms = a_new(a, sizeof(Ttfleet__VmInfo *) * (size_t)env->n_vms);
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

static Ttfleet__HostInfo *s_host_info(arena_t *a, const host_t *h)
{
    Ttfleet__HostInfo *hi = a_new(a, sizeof *hi);
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
    hi->vm_count = h->vm_count;
    hi->last_seen = h->last_seen;
    hi->draining = h->draining;
    hi->accel = (char *)h->accel;
    return hi;
}

/* ---- replies and idempotency records ---- */

static void s_req_key(const char *tenant, const char *rid, char *key, size_t len)
{
    snprintf(key, len, "%s\x1f%s", tenant, rid);
}

static request_rec_t *reply_record_find(broker_t *self, const char *tenant, const char *rid)
{
    char key[2 * TT_MAX_REQUEST_ID + 2];
    s_req_key(tenant, rid, key, sizeof key);
    return zhashx_lookup(self->requests, key);
}

/* Answer a retry with the recorded reply. A record of an earlier batch is
 * durable, so the answer survives a failure of this batch. */
static void reply_replay(broker_t *self, zmsg_t *envelope, const char *service,
                         const request_rec_t *rec)
{
    zmsg_t *msg = zmsg_dup(envelope);
    zmsg_addmem(msg, "", 0);
    zmsg_addstr(msg, TT_MDP_CLIENT);
    zmsg_addstr(msg, service);
    zmsg_addmem(msg, rec->reply, rec->len);
    if (rec->batch < self->batch_no)
        broker_queue_durable(self, self->clients, &msg);
    else
        broker_queue(self, self->clients, &msg);
}

void ops_reply(broker_t *self, zmsg_t *envelope, const char *service, const char *tenant,
               const char *rid, int status, const char *message, Ttfleet__Reply *result,
               bool record)
{
    Ttfleet__Reply local = TTFLEET__REPLY__INIT;
    Ttfleet__Reply *rep = result ? result : &local;
    rep->request_id = (char *)(rid ? rid : "");
    rep->status = (Ttfleet__Status)status;
    rep->message = (char *)(message ? message : "");
    size_t len = ttfleet__reply__get_packed_size(rep);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    ttfleet__reply__pack(rep, buf);
    if (self->cfg.verbose && status != TTFLEET__STATUS__OK)
        zsys_info("reply %s/%s: %s %s", tenant ? tenant : "-", rid ? rid : "-",
                  tt_status_name(status), message ? message : "");
    if (record && tenant && rid && *rid) {
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
            rec->reply = malloc(len ? len : 1);
            if (rec->reply)
                memcpy(rec->reply, buf, len);
            rec->len = len;
            rec->done = true;
            rec->batch = self->batch_no;
        }
        persist_request_done(self, tenant, rid, buf, len);
    }
    if (envelope) {
        zmsg_t *msg = zmsg_dup(envelope);
        zmsg_addmem(msg, "", 0);
        zmsg_addstr(msg, TT_MDP_CLIENT);
        zmsg_addstr(msg, service);
        zmsg_addmem(msg, buf, len);
        broker_queue(self, self->clients, &msg);
    }
    free(buf);
}

/* Reply with an env (and its VMs) as the result. */
static void s_reply_env(broker_t *self, zmsg_t *envelope, const char *service,
                        const char *tenant, const char *rid, int status, const char *msg,
                        const env_t *env, bool record)
{
    arena_t a = a_make();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (env) {
        rep.env = s_env_info(&a, env, true);
        if (rep.env)
            rep.result_case = TTFLEET__REPLY__RESULT_ENV;
    }
    ops_reply(self, envelope, service, tenant, rid, status, msg, &rep, record);
    a_free(&a);
}

/* ---- worker commands ---- */

void ops_vm_spec(const vm_t *vm, int desired, Ttfleet__VmSpec *spec, Ttfleet__PortMap *pm_store,
                 Ttfleet__PortMap **pm_ptrs)
{
    char env_key[2 * TT_MAX_NAME + 2];
    ttfleet__vm_spec__init(spec);
    spec->vm_id = vm->vm_id;
    snprintf(env_key, sizeof env_key, "%s/%s", vm->env->tenant, vm->env->name);
    spec->env = strdup(env_key); /* freed by ops_send_command */
    spec->image = (char *)vm->image;
    spec->engine = (char *)vm->engine;
    spec->cpu = vm->cpu;
    spec->mem_mib = vm->mem;
    spec->disk_mib = vm->disk;
    spec->ip = (char *)vm->ip;
    spec->mac = (char *)vm->mac;
    spec->deny_outgoing = vm->env->deny_outgoing;
    spec->expires_at = vm->env->expires_at;
    spec->desired = (Ttfleet__VmState)desired;
    for (int i = 0; i < vm->n_ports; i++) {
        ttfleet__port_map__init(&pm_store[i]);
        pm_store[i].guest = vm->ports[i].guest;
        pm_store[i].public_ = vm->ports[i].public_port;
        pm_ptrs[i] = &pm_store[i];
    }
    spec->n_ports = (size_t)vm->n_ports;
    spec->ports = pm_ptrs;
}

uint64_t ops_send_command(broker_t *self, host_t *host, vm_t **vms, const int *desired, int n)
{
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = ++self->next_op_id;
    cmd.n_vms = (size_t)n;
    cmd.vms = calloc((size_t)n + 1, sizeof *cmd.vms);
    Ttfleet__VmSpec *specs = calloc((size_t)n + 1, sizeof *specs);
    Ttfleet__PortMap *pms = calloc((size_t)n * TT_MAX_PORTS_PER_VM + 1, sizeof *pms);
    Ttfleet__PortMap **pmp = calloc((size_t)n * TT_MAX_PORTS_PER_VM + 1, sizeof *pmp);
    if (cmd.vms && specs && pms && pmp) {
        for (int i = 0; i < n; i++) {
            ops_vm_spec(vms[i], desired ? desired[i] : model_vm_desired(vms[i]), &specs[i],
                        &pms[i * TT_MAX_PORTS_PER_VM], &pmp[i * TT_MAX_PORTS_PER_VM]);
            cmd.vms[i] = &specs[i];
        }
        size_t len = ttfleet__worker_command__get_packed_size(&cmd);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            ttfleet__worker_command__pack(&cmd, buf);
            workers_send(self, host, TT_W_COMMAND, buf, len);
            free(buf);
        }
        for (int i = 0; i < n; i++)
            free(specs[i].env);
    }
    free(cmd.vms);
    free(specs);
    free(pms);
    free(pmp);
    return cmd.op_id;
}

/* Send the desired state of vms[] to their hosts, one command per host,
 * without waiting for the answers (they update VM states as they come). */
static void s_send_specs(broker_t *self, vm_t **vms, int n)
{
    bool *sent = calloc((size_t)n + 1, sizeof *sent);
    vm_t **group = calloc((size_t)n + 1, sizeof *group);
    if (!sent || !group) {
        free(sent);
        free(group);
        return;
    }
    for (int i = 0; i < n; i++) {
        if (sent[i])
            continue;
        host_t *h = vms[i]->host;
        int g = 0;
        for (int j = i; j < n; j++)
            if (!sent[j] && vms[j]->host == h) {
                group[g++] = vms[j];
                sent[j] = true;
            }
        if (h->routing && h->state != HOST_DOWN)
            ops_send_command(self, h, group, NULL, g);
    }
    free(sent);
    free(group);
}

/* ---- ops in flight ---- */

static op_t *s_op_new(broker_t *self, op_kind_t kind, env_t *env, zmsg_t *envelope,
                      const char *service, const char *tenant, const char *rid)
{
    op_t *op = calloc(1, sizeof *op);
    if (!op)
        return NULL;
    op->kind = kind;
    op->env = env;
    op->envelope = envelope ? zmsg_dup(envelope) : NULL;
    snprintf(op->service, sizeof op->service, "%s", service ? service : "");
    snprintf(op->tenant, sizeof op->tenant, "%s", tenant ? tenant : "");
    snprintf(op->request_id, sizeof op->request_id, "%s", rid ? rid : "");
    op->deadline_ms = tt_mono_ms() + self->cfg.worker_timeout_ms;
    op->vms = calloc((size_t)env->n_vms + 1, sizeof *op->vms);
    op->hosts = calloc((size_t)env->n_vms + 1, sizeof *op->hosts);
    op->cmd_ids = calloc((size_t)env->n_vms + 1, sizeof *op->cmd_ids);
    if (!op->vms || !op->hosts || !op->cmd_ids) {
        ops_free(self, &op);
        return NULL;
    }
    for (int i = 0; i < env->n_vms; i++)
        op->vms[op->n_vms++] = env->vms[i];
    if (kind != OP_CONSOLE)
        env->busy = op;
    op->handle = zlistx_add_end(self->all_ops, op);
    if (rid && *rid && kind != OP_CONSOLE) {
        char key[2 * TT_MAX_REQUEST_ID + 2];
        s_req_key(tenant, rid, key, sizeof key);
        request_rec_t *rec = calloc(1, sizeof *rec);
        if (rec) {
            rec->created_at = tt_now();
            rec->batch = self->batch_no;
            zhashx_update(self->requests, key, rec);
        }
        persist_request_begin(self, tenant, rid);
    }
    return op;
}

void ops_free(broker_t *self, op_t **op_p)
{
    op_t *op = *op_p;
    if (!op)
        return;
    for (int i = 0; i < op->n_hosts; i++)
        if (op->cmd_ids[i]) {
            char k[32];
            snprintf(k, sizeof k, "%llu", (unsigned long long)op->cmd_ids[i]);
            zhashx_delete(self->ops, k);
        }
    if (op->env && op->env->busy == op)
        op->env->busy = NULL;
    if (op->handle)
        zlistx_detach(self->all_ops, op->handle);
    zmsg_destroy(&op->envelope);
    free(op->vms);
    free(op->hosts);
    free(op->cmd_ids);
    free(op);
    *op_p = NULL;
}

/* Record a failure of part of an op: the first status wins, messages add up. */
static void s_op_fail(op_t *op, int status, const char *text)
{
    if (op->status == TTFLEET__STATUS__OK)
        op->status = status;
    size_t len = strlen(op->message);
    snprintf(op->message + len, sizeof op->message - len, "%s%s", len ? "; " : "", text);
}

static void s_op_finish(broker_t *self, op_t *op);
static void s_console_done(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply);

/* Send the op's VMs to their hosts, grouped by host, and wait for replies. */
static void s_op_dispatch(broker_t *self, op_t *op)
{
    vm_t **group = calloc((size_t)op->n_vms + 1, sizeof *group);
    bool *done = calloc((size_t)op->n_vms + 1, sizeof *done);
    if (!group || !done) {
        free(group);
        free(done);
        s_op_fail(op, TTFLEET__STATUS__INTERNAL, "out of memory");
        s_op_finish(self, op);
        return;
    }
    for (int i = 0; i < op->n_vms; i++) {
        if (done[i])
            continue;
        host_t *h = op->vms[i]->host;
        int g = 0;
        for (int j = i; j < op->n_vms; j++)
            if (!done[j] && op->vms[j]->host == h) {
                group[g++] = op->vms[j];
                done[j] = true;
            }
        if (!h->routing || h->state == HOST_DOWN) {
            char why[128];
            snprintf(why, sizeof why, "host %s is down", h->id);
            s_op_fail(op, TTFLEET__STATUS__WORKER_FAILED, why);
            continue;
        }
        uint64_t id = ops_send_command(self, h, group, NULL, g);
        op->hosts[op->n_hosts] = h;
        op->cmd_ids[op->n_hosts] = id;
        op->n_hosts++;
        char k[32];
        snprintf(k, sizeof k, "%llu", (unsigned long long)id);
        zhashx_insert(self->ops, k, op);
        op->waiting++;
    }
    free(group);
    free(done);
    if (op->waiting == 0)
        s_op_finish(self, op);
}

/* Destroy what a failed create made and forget the env. */
static void s_env_drop(broker_t *self, env_t *env)
{
    for (int i = 0; i < env->n_vms; i++)
        env->vms[i]->doomed = true;
    s_send_specs(self, env->vms, env->n_vms);
    persist_env_delete(self, env);
    model_env_free(self, &env);
}

static int s_count_at_desired(const env_t *env)
{
    int n = 0;
    for (int i = 0; i < env->n_vms; i++)
        if (env->vms[i]->state == model_vm_desired(env->vms[i]))
            n++;
    return n;
}

/* A create some of whose VMs a worker refused or lost: place those VMs on
 * other hosts and try again, a few rounds at most. The refused copies are
 * destroyed (fire and forget; READY reconciliation catches a lost one).
 * Returns true when a new round was dispatched. */
static bool s_create_replace(broker_t *self, op_t *op)
{
    env_t *env = op->env;
    if (op->kind != OP_CREATE || op->rounds >= 3 || op->status == TTFLEET__STATUS__INTERNAL)
        return false;
    int n_bad = 0;
    for (int i = 0; i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (vm->state == TTFLEET__VM_STATE__VM_RUNNING)
            continue;
        n_bad++;
        bool known = false;
        for (int k = 0; k < op->n_refused; k++)
            known |= op->refused[k] == vm->host;
        if (!known && op->n_refused < 8)
            op->refused[op->n_refused++] = vm->host;
    }
    if (n_bad == 0)
        return false;
    /* first check every failed VM can go somewhere, so a round that cannot
     * succeed changes nothing */
    int moved = 0;
    char why[256] = "";
    for (int i = 0; i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (vm->state == TTFLEET__VM_STATE__VM_RUNNING)
            continue;
        sched_want_t want = {vm->engine, vm->image, vm->cpu, vm->mem, vm->disk,
                             self->cfg.spread, op->refused, op->n_refused};
        int status;
        host_t *to = sched_place(self, &want, &status, why, sizeof why);
        uint32_t vm_id;
        uint64_t mac;
        if (!to || alloc_vm_id(to, &vm_id) || alloc_mac(self, &mac))
            break;
        vm_t *copy = vm;
        int desired = TTFLEET__VM_STATE__VM_ABSENT;
        if (vm->host->routing && vm->host->state != HOST_DOWN)
            ops_send_command(self, vm->host, &copy, &desired, 1);
        if (model_vm_move(self, vm, to, vm_id, mac, env->gports, env->n_gports))
            break;
        model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
        persist_vm_update(self, vm);
        persist_vm_ports(self, vm);
        op->vms[moved++] = vm;
    }
    if (moved != n_bad)
        return false; /* the caller fails the create; everything is undone */
    zsys_info("env %s/%s: %d VM(s) re-placed after: %s", env->tenant, env->name, moved,
              op->message);
    op->rounds++;
    op->n_vms = moved;
    op->n_hosts = 0;
    op->status = TTFLEET__STATUS__OK;
    op->message[0] = 0;
    op->deadline_ms = tt_mono_ms() + self->cfg.worker_timeout_ms;
    s_op_dispatch(self, op);
    return true;
}

static void s_op_finish(broker_t *self, op_t *op)
{
    if (op->kind == OP_CONSOLE) {
        s_console_done(self, op, NULL, NULL);
        return;
    }
    env_t *env = op->env;
    char msg[768];
    if (op->status != TTFLEET__STATUS__OK && s_create_replace(self, op))
        return;
    int at = s_count_at_desired(env);
    if (at != env->n_vms && op->status == TTFLEET__STATUS__OK) {
        op->status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(op->message, sizeof op->message, "%d of %d VMs did not reach the state",
                 env->n_vms - at, env->n_vms);
    }
    env->busy = NULL;
    if (op->kind == OP_CREATE) {
        if (op->status == TTFLEET__STATUS__OK) {
            env->target = TARGET_RUNNING;
            persist_env_update(self, env);
            for (int i = 0; i < env->n_vms; i++) {
                env->vms[i]->active = true;
                persist_vm_update(self, env->vms[i]);
            }
            broker_event(self, "env.created", env, NULL, NULL, "running", NULL);
            s_reply_env(self, op->envelope, op->service, op->tenant, op->request_id,
                        TTFLEET__STATUS__OK, "", env, true);
        } else {
            snprintf(msg, sizeof msg, "create of env '%s' failed: %s; everything made for it "
                                      "was undone", env->name, op->message);
            s_env_drop(self, env);
            ops_reply(self, op->envelope, op->service, op->tenant, op->request_id, op->status,
                      msg, NULL, true);
        }
    } else {
        persist_env_update(self, env);
        for (int i = 0; i < env->n_vms; i++)
            persist_vm_update(self, env->vms[i]);
        const char *state = model_env_state(env);
        broker_event(self, "env.state", env, NULL, NULL, state, NULL);
        if (op->status == TTFLEET__STATUS__OK) {
            s_reply_env(self, op->envelope, op->service, op->tenant, op->request_id,
                        TTFLEET__STATUS__OK, "", env, true);
        } else {
            snprintf(msg, sizeof msg, "env '%s' is %s: %s", env->name, state, op->message);
            s_reply_env(self, op->envelope, op->service, op->tenant, op->request_id,
                        op->status, msg, env, true);
        }
    }
    op->env = NULL;
    ops_free(self, &op);
}

/* The reply to a console op: the worker's tail of the VM's console log. */
static void s_console_done(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply)
{
    vm_t *vm = op->n_vms ? op->vms[0] : NULL;
    if (!reply || reply->status != TTFLEET__STATUS__OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "host %s could not read the console of VM %u: %s",
                 host ? host->id : "?", vm ? vm->vm_id : 0,
                 reply && reply->message && *reply->message ? reply->message
                                                            : op->message[0] ? op->message
                                                                             : "no answer");
        ops_reply(self, op->envelope, op->service, op->tenant, op->request_id,
                  reply ? TTFLEET__STATUS__WORKER_FAILED : op->status, msg, NULL, false);
    } else {
        Ttfleet__ConsoleText ct = TTFLEET__CONSOLE_TEXT__INIT;
        ct.host = host->id;
        ct.vm_id = vm ? vm->vm_id : 0;
        ct.text = reply->console;
        ct.truncated = reply->console_truncated;
        Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
        rep.result_case = TTFLEET__REPLY__RESULT_CONSOLE;
        rep.console = &ct;
        ops_reply(self, op->envelope, op->service, op->tenant, op->request_id,
                  TTFLEET__STATUS__OK, "", &rep, false);
    }
    op->env = NULL;
    ops_free(self, &op);
}

void ops_worker_reply(broker_t *self, host_t *host, Ttfleet__WorkerReply *reply)
{
    /* The states are truth whatever op they belong to. */
    for (size_t i = 0; i < reply->n_vms; i++) {
        Ttfleet__VmActual *va = reply->vms[i];
        vm_t *vm = model_vm_find(self, host->id, va->vm_id);
        if (!vm || vm->doomed)
            continue;
        int st = va->state;
        if (st == TTFLEET__VM_STATE__VM_ABSENT)
            st = TTFLEET__VM_STATE__VM_LOST;
        if (st < 0 || st > TTFLEET__VM_STATE__VM_LOST)
            continue;
        if (vm->state != st) {
            const char *env_before = model_env_state(vm->env);
            model_vm_set_state(vm, st);
            if (!vm->env->busy)
                persist_vm_update(self, vm);
            broker_event(self, "vm.state", vm->env, vm, host, tt_vm_state_name(st), va->message);
            const char *env_after = model_env_state(vm->env);
            if (!vm->env->busy && strcmp(env_before, env_after) != 0)
                broker_event(self, "env.state", vm->env, NULL, NULL, env_after, NULL);
        }
    }
    char k[32];
    snprintf(k, sizeof k, "%llu", (unsigned long long)reply->op_id);
    op_t *op = zhashx_lookup(self->ops, k);
    if (!op)
        return; /* a fire-and-forget command, or an op that timed out */
    for (int i = 0; i < op->n_hosts; i++)
        if (op->cmd_ids[i] == reply->op_id) {
            if (op->hosts[i] != host)
                return; /* not the host we asked: ignore */
            op->cmd_ids[i] = 0;
        }
    zhashx_delete(self->ops, k);
    if (op->kind == OP_CONSOLE) {
        s_console_done(self, op, host, reply);
        return;
    }
    if (reply->status != TTFLEET__STATUS__OK) {
        char why[400];
        snprintf(why, sizeof why, "host %s: %s", host->id,
                 reply->message && *reply->message ? reply->message
                                                   : tt_status_name(reply->status));
        int st = reply->status == TTFLEET__STATUS__NO_CAPACITY ? TTFLEET__STATUS__NO_CAPACITY
                                                               : TTFLEET__STATUS__WORKER_FAILED;
        s_op_fail(op, st, why);
    }
    if (--op->waiting <= 0)
        s_op_finish(self, op);
}

void ops_host_down(broker_t *self, host_t *host)
{
    /* collect first: finishing an op edits the list */
    zlistx_t *hit = zlistx_new();
    for (op_t *op = zlistx_first(self->all_ops); op; op = zlistx_next(self->all_ops))
        for (int i = 0; i < op->n_hosts; i++)
            if (op->hosts[i] == host && op->cmd_ids[i])
                zlistx_add_end(hit, op);
    for (op_t *op = zlistx_first(hit); op; op = zlistx_next(hit)) {
        for (int i = 0; i < op->n_hosts; i++)
            if (op->hosts[i] == host && op->cmd_ids[i]) {
                char k[32];
                snprintf(k, sizeof k, "%llu", (unsigned long long)op->cmd_ids[i]);
                zhashx_delete(self->ops, k);
                op->cmd_ids[i] = 0;
                op->waiting--;
                char why[128];
                snprintf(why, sizeof why, "host %s went down", host->id);
                s_op_fail(op, TTFLEET__STATUS__WORKER_FAILED, why);
            }
        if (op->waiting <= 0)
            s_op_finish(self, op);
    }
    zlistx_destroy(&hit);
}

void ops_tick(broker_t *self, int64_t now_ms)
{
    zlistx_t *late = zlistx_new();
    for (op_t *op = zlistx_first(self->all_ops); op; op = zlistx_next(self->all_ops))
        if (op->deadline_ms <= now_ms)
            zlistx_add_end(late, op);
    for (op_t *op = zlistx_first(late); op; op = zlistx_next(late)) {
        for (int i = 0; i < op->n_hosts; i++)
            if (op->cmd_ids[i]) {
                char k[32];
                snprintf(k, sizeof k, "%llu", (unsigned long long)op->cmd_ids[i]);
                zhashx_delete(self->ops, k);
                op->cmd_ids[i] = 0;
                char why[128];
                snprintf(why, sizeof why, "host %s did not answer in time", op->hosts[i]->id);
                s_op_fail(op, TTFLEET__STATUS__TIMEOUT, why);
            }
        op->waiting = 0;
        s_op_finish(self, op);
    }
    zlistx_destroy(&late);
}

/* ---- the operations ---- */

/* What a handler sees. A handler returns 0 when it queued its own reply
 * (or opened an op that will), or a Ttfleet status with the reason in
 * msg: then it changed nothing the dispatcher cannot undo (its rows are
 * rolled back to the request's savepoint, its queued output dropped) and
 * the dispatcher sends the error. */
typedef struct {
    broker_t *self;
    zmsg_t *envelope;
    const char *service;
    const Ttfleet__Request *req;
    const char *tenant;
    const char *rid;
    bool admin;
    bool no_record; /* this error is not an outcome: a retry decides again */
    char msg[768];
} ctx_t;

static int s_fail(ctx_t *c, int status, const char *msg)
{
    snprintf(c->msg, sizeof c->msg, "%s", msg);
    return status;
}

static int s_fail_norec(ctx_t *c, int status, const char *msg)
{
    c->no_record = true;
    return s_fail(c, status, msg);
}

/* The caller's env by name, if it is there and idle; else NULL with the
 * status in *status and the reason in c->msg. */
static env_t *s_env_idle(ctx_t *c, const char *name, int *status)
{
    env_t *env = model_env_get(c->self, c->tenant, name);
    char msg[200];
    if (!env) {
        snprintf(msg, sizeof msg, "no env named '%s'", name);
        *status = s_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
        return NULL;
    }
    if (env->busy) {
        snprintf(msg, sizeof msg, "env '%s' is busy (%s); try again when it is done", name,
                 model_env_state(env));
        *status = s_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        return NULL;
    }
    return env;
}

static int s_create(ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvCreate *cr = c->req->env_create;
    char msg[512];
    if (model_env_get(self, c->tenant, cr->name)) {
        snprintf(msg, sizeof msg, "env '%s' already exists", cr->name);
        return s_fail(c, TTFLEET__STATUS__ALREADY_EXISTS, msg);
    }
    int64_t lifetime = cr->lifetime ? (int64_t)cr->lifetime : TT_DEFAULT_LIFETIME;
    if (lifetime > TT_MAX_LIFETIME_USER && !c->admin) {
        snprintf(msg, sizeof msg, "lifetime %lld s is over %d s (6 h); only admins may ask more",
                 (long long)lifetime, TT_MAX_LIFETIME_USER);
        return s_fail(c, TTFLEET__STATUS__FORBIDDEN, msg);
    }
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
            return s_fail(c, TTFLEET__STATUS__BAD_REQUEST, "too many ports (22 is always added)");
        }
        gports[n_gports++] = cr->ports[i];
    }

    env_t *env = model_env_new(self, c->tenant, cr->name);
    if (!env) {
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    env->id = self->next_env_id++;
    env->target = TARGET_CREATING;
    env->created_at = tt_now();
    env->lifetime = lifetime;
    env->expires_at = env->created_at + lifetime;
    env->deny_outgoing = cr->deny_outgoing;
    env->n_gports = n_gports;
    memcpy(env->gports, gports, sizeof gports);

    int status = TTFLEET__STATUS__OK;
    for (size_t i = 0; i < cr->n_images && status == TTFLEET__STATUS__OK; i++) {
        uint32_t dup = cr->images[i]->dup ? cr->images[i]->dup : 1;
        for (uint32_t d = 0; d < dup && status == TTFLEET__STATUS__OK; d++) {
            sched_want_t want = {engine, cr->images[i]->image, cpu, mem, disk,
                                 cr->spread || self->cfg.spread, NULL, 0};
            host_t *host = sched_place(self, &want, &status, msg, sizeof msg);
            if (!host)
                break;
            uint32_t vm_id;
            uint64_t mac;
            if (alloc_vm_id(host, &vm_id) || alloc_mac(self, &mac)) {
                status = TTFLEET__STATUS__NO_CAPACITY;
                snprintf(msg, sizeof msg, "no free VM id or MAC left on host %s", host->id);
                break;
            }
            vm_t *vm = model_vm_add(self, env, host, vm_id, mac);
            if (!vm) {
                status = TTFLEET__STATUS__INTERNAL;
                snprintf(msg, sizeof msg, "out of memory");
                break;
            }
            vm->uid = self->next_vm_uid++;
            snprintf(vm->image, sizeof vm->image, "%s", want.image);
            snprintf(vm->engine, sizeof vm->engine, "%s", engine);
            model_vm_set_hw(vm, cpu, mem, disk);
            model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
            if (alloc_vm_ports(vm, env->gports, env->n_gports)) {
                status = TTFLEET__STATUS__NO_CAPACITY;
                snprintf(msg, sizeof msg, "no free public port left on host %s (%d..%d)",
                         host->id, TT_PORT_MIN, TT_PORT_MAX);
            }
        }
    }
    if (status != TTFLEET__STATUS__OK) {
        model_env_free(self, &env);
        /* Just after a broker start the hosts are still saying READY: "no
         * host" then is not a decision, so it is not recorded and the
         * client's retry (same id) gets the real outcome. */
        bool settling = status == TTFLEET__STATUS__UNAVAILABLE &&
                        tt_mono_ms() < self->started_ms + (int64_t)self->cfg.heartbeat_ms *
                                                              (self->cfg.liveness + 1);
        if (settling)
            snprintf(msg + strlen(msg), sizeof msg - strlen(msg),
                     " (the broker just started and hosts are still reconnecting: retry)");
        c->no_record = settling;
        return s_fail(c, status, msg);
    }
    persist_env_insert(self, env);
    for (int i = 0; i < env->n_vms; i++)
        persist_vm_insert(self, env->vms[i]);
    op_t *op = s_op_new(self, OP_CREATE, env, c->envelope, c->service, c->tenant, c->rid);
    if (!op) {
        /* the savepoint takes the rows back; this takes the model back */
        model_env_free(self, &env);
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    s_op_dispatch(self, op);
    return 0;
}

/* Give back the cpu and mem a failed start reserved. */
static void s_unreserve(env_t *env, const bool *reserved)
{
    for (int i = 0; i < env->n_vms; i++)
        if (reserved[i])
            model_vm_set_state(env->vms[i], TTFLEET__VM_STATE__VM_STOPPED);
}

/* stop, start, pause, resume: move every VM of the env to a new target. */
static int s_power(ctx_t *c, op_kind_t kind, const char *name)
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
    default:
        from_ok1 = TARGET_PAUSED, from_ok2 = TARGET_PAUSED, to = TARGET_RUNNING, verb = "resume";
        break;
    }
    /* A degraded env may be driven again to the target it already has,
     * which retries the VMs that did not get there. */
    bool retry = env->target == to && strcmp(model_env_state(env), "degraded") == 0;
    if (env->target != from_ok1 && env->target != from_ok2 && !retry) {
        snprintf(msg, sizeof msg, "cannot %s env '%s': it is %s", verb, name,
                 model_env_state(env));
        return s_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
    }
    int64_t now = tt_now();
    if ((kind == OP_STOP || kind == OP_START) && env->last_mgmt &&
        now - env->last_mgmt < self->cfg.min_stop_interval) {
        snprintf(msg, sizeof msg,
                 "env '%s' was stopped or started %lld s ago; wait %lld s more (at least %d s "
                 "between stop and start)",
                 name, (long long)(now - env->last_mgmt),
                 (long long)(self->cfg.min_stop_interval - (now - env->last_mgmt)),
                 self->cfg.min_stop_interval);
        return s_fail(c, TTFLEET__STATUS__TOO_SOON, msg);
    }
    /* start reserves cpu and mem on every VM's own host (its disk lives
     * there); reserved[] remembers which, so a failure gives them back */
    bool *reserved = calloc((size_t)env->n_vms + 1, sizeof *reserved);
    if (!reserved)
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    for (int i = 0; kind == OP_START && i < env->n_vms; i++) {
        vm_t *vm = env->vms[i];
        if (model_vm_holds_cpu(vm))
            continue;
        if (!sched_fits(self, vm->host, vm->cpu, vm->mem, 0, msg, sizeof msg)) {
            s_unreserve(env, reserved);
            free(reserved);
            return s_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
        }
        model_vm_set_state(vm, TTFLEET__VM_STATE__VM_PENDING);
        reserved[i] = true;
    }
    op_t *op = s_op_new(self, kind, env, c->envelope, c->service, c->tenant, c->rid);
    if (!op) {
        s_unreserve(env, reserved);
        free(reserved);
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    free(reserved);
    if (kind == OP_STOP || kind == OP_START)
        env->last_mgmt = now;
    env->target = to;
    persist_env_update(self, env);
    s_op_dispatch(self, op);
    return 0;
}

static void s_delete(broker_t *self, env_t *env, const char *kind)
{
    tt_crash_point(strcmp(kind, "env.expired") == 0 ? "broker.mid_reap" : "broker.mid_delete");
    broker_event(self, kind, env, NULL, NULL, "deleted", NULL);
    s_env_drop(self, env);
}

static int s_extend(ctx_t *c)
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
        return s_fail(c, TTFLEET__STATUS__FORBIDDEN, msg);
    }
    env->lifetime = (int64_t)x->lifetime;
    env->expires_at = env->created_at + env->lifetime;
    persist_env_update(c->self, env);
    s_send_specs(c->self, env->vms, env->n_vms);
    broker_event(c->self, "env.state", env, NULL, NULL, model_env_state(env), "lease changed");
    s_reply_env(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "",
                env, true);
    return 0;
}

static int s_update(ctx_t *c)
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
            return s_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        }
        /* disk is held while stopped: check the growth on each host */
        for (int i = 0; i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            uint32_t disk = u->disk_mib ? u->disk_mib : vm->disk;
            uint64_t more = disk > vm->disk ? disk - vm->disk : 0;
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
                return s_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
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
                return s_fail(c, TTFLEET__STATUS__BAD_REQUEST, "too many ports (22 is always added)");
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
            return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
        }
        int planned = 0;
        bool ok = true;
        for (int i = 0; i < env->n_vms && ok; i++, planned++) {
            vm_t *vm = env->vms[i];
            portmap_t *nx = next + (size_t)i * TT_MAX_PORTS_PER_VM;
            bool *fr = fresh + (size_t)i * TT_MAX_PORTS_PER_VM;
            for (int g = 0; g < n_gports; g++) {
                nx[g].guest = gports[g];
                nx[g].public_port = 0;
                for (int o = 0; o < vm->n_ports; o++)
                    if (vm->ports[o].guest == gports[g])
                        nx[g].public_port = vm->ports[o].public_port;
            }
            /* free the dropped ones, then take new ones */
            for (int o = 0; o < vm->n_ports; o++) {
                bool kept = false;
                for (int g = 0; g < n_gports; g++)
                    kept |= nx[g].public_port == vm->ports[o].public_port;
                if (!kept)
                    alloc_port_mark(vm->host, vm->ports[o].public_port, false);
            }
            for (int g = 0; g < n_gports && ok; g++)
                if (!nx[g].public_port) {
                    if (alloc_port(vm->host, &nx[g].public_port)) {
                        snprintf(msg, sizeof msg,
                                 "no free public port left on host %s (%d..%d) for env '%s'; "
                                 "nothing was changed",
                                 vm->host->id, TT_PORT_MIN, TT_PORT_MAX, env->name);
                        ok = false;
                    } else
                        fr[g] = true;
                }
        }
        if (!ok) {
            /* give back what the plan took, then take back what it freed */
            for (int i = 0; i < planned; i++)
                for (int g = 0; g < n_gports; g++)
                    if (fresh[(size_t)i * TT_MAX_PORTS_PER_VM + g])
                        alloc_port_mark(env->vms[i]->host,
                                        next[(size_t)i * TT_MAX_PORTS_PER_VM + g].public_port,
                                        false);
            for (int i = 0; i < planned; i++)
                for (int o = 0; o < env->vms[i]->n_ports; o++)
                    alloc_port_mark(env->vms[i]->host, env->vms[i]->ports[o].public_port, true);
            free(next);
            free(fresh);
            return s_fail(c, TTFLEET__STATUS__NO_CAPACITY, msg);
        }
        for (int i = 0; i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            memcpy(vm->ports, next + (size_t)i * TT_MAX_PORTS_PER_VM,
                   sizeof(portmap_t) * TT_MAX_PORTS_PER_VM);
            vm->n_ports = n_gports;
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
    s_send_specs(self, env->vms, env->n_vms);
    broker_event(self, "env.state", env, NULL, NULL, model_env_state(env), "updated");
    s_reply_env(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env,
                true);
    return 0;
}

static int s_rm_vm(ctx_t *c)
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
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
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
                return s_fail(c, found ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND,
                      msg);
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
            return s_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
        }
    }
    s_send_specs(self, doomed, n);
    for (int i = 0; i < n; i++) {
        broker_event(self, "vm.state", env, doomed[i], doomed[i]->host, "absent", "removed");
        persist_vm_delete(self, doomed[i]);
        model_vm_remove(self, doomed[i]);
    }
    free(doomed);
    s_reply_env(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env,
                true);
    return 0;
}

static int s_console(ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__EnvConsole *q = c->req->env_console;
    env_t *env = model_env_get(self, c->tenant, q->name);
    char msg[200];
    if (!env) {
        snprintf(msg, sizeof msg, "no env named '%s'", q->name);
        return s_fail_norec(c, TTFLEET__STATUS__NOT_FOUND, msg);
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
        return s_fail_norec(c, found ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND, msg);
    }
    host_t *h = vm->host;
    if (!h->routing || h->state == HOST_DOWN) {
        snprintf(msg, sizeof msg, "host %s of VM %u is down", h->id, vm->vm_id);
        return s_fail_norec(c, TTFLEET__STATUS__UNAVAILABLE, msg);
    }
    op_t *op = s_op_new(self, OP_CONSOLE, env, c->envelope, c->service, c->tenant, c->rid);
    if (!op) {
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    op->vms[0] = vm;
    op->n_vms = 1;
    op->deadline_ms = tt_mono_ms() + 10000;
    Ttfleet__WorkerCommand cmd = TTFLEET__WORKER_COMMAND__INIT;
    cmd.op_id = ++self->next_op_id;
    cmd.console_vm_id = vm->vm_id;
    cmd.console_max = q->max_bytes ? q->max_bytes : TT_CONSOLE_DEFAULT;
    size_t len = ttfleet__worker_command__get_packed_size(&cmd);
    uint8_t buf[64];
    if (len <= sizeof buf) {
        ttfleet__worker_command__pack(&cmd, buf);
        workers_send(self, h, TT_W_COMMAND, buf, len);
    }
    op->hosts[0] = h;
    op->cmd_ids[0] = cmd.op_id;
    op->n_hosts = 1;
    op->waiting = 1;
    char k[32];
    snprintf(k, sizeof k, "%llu", (unsigned long long)cmd.op_id);
    zhashx_insert(self->ops, k, op);
    return 0;
}

static int s_env_cmp(const void *a, const void *b)
{
    const env_t *x = *(env_t *const *)a, *y = *(env_t *const *)b;
    int r = strcmp(x->tenant, y->tenant);
    return r ? r : strcmp(x->name, y->name);
}

static int s_env_list(ctx_t *c)
{
    broker_t *self = c->self;
    bool all = c->req->env_list->all;
    if (all && !c->admin) {
        return s_fail_norec(c, TTFLEET__STATUS__FORBIDDEN, "listing every tenant's envs needs the admin role");
    }
    size_t n = zhashx_size(self->envs);
    env_t **list = calloc(n + 1, sizeof *list);
    arena_t a = a_make();
    Ttfleet__EnvInfoList *el = a_new(&a, sizeof *el);
    if (!list || !el) {
        free(list);
        a_free(&a);
        return s_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    size_t k = 0;
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        if (all || strcmp(e->tenant, c->tenant) == 0)
            list[k++] = e;
    qsort(list, k, sizeof *list, s_env_cmp);
    ttfleet__env_info_list__init(el);
    el->envs = a_new(&a, sizeof(Ttfleet__EnvInfo *) * (k + 1));
    for (size_t i = 0; el->envs && i < k; i++)
        if ((el->envs[el->n_envs] = s_env_info(&a, list[i], false)))
            el->n_envs++;
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_ENVS;
    rep.envs = el;
    ops_reply(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", &rep,
              false);
    a_free(&a);
    free(list);
    return 0;
}

static int s_hosts(ctx_t *c, const char *id)
{
    broker_t *self = c->self;
    arena_t a = a_make();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (id) {
        host_t *h = model_host_get(self, id);
        if (!h) {
            a_free(&a);
            char msg[128];
            snprintf(msg, sizeof msg, "no host '%s'", id);
            return s_fail_norec(c, TTFLEET__STATUS__NOT_FOUND, msg);
        }
        rep.result_case = TTFLEET__REPLY__RESULT_HOST;
        rep.host = s_host_info(&a, h);
    } else {
        Ttfleet__HostInfoList *hl = a_new(&a, sizeof *hl);
        size_t n = zhashx_size(self->hosts);
        if (hl) {
            ttfleet__host_info_list__init(hl);
            hl->hosts = a_new(&a, sizeof(Ttfleet__HostInfo *) * (n + 1));
            zlistx_t *keys = zhashx_keys(self->hosts);
            zlistx_set_comparator(keys, (zlistx_comparator_fn *)strcmp);
            zlistx_sort(keys);
            for (const char *k = zlistx_first(keys); k && hl->hosts; k = zlistx_next(keys)) {
                host_t *h = model_host_get(self, k);
                if (h && (hl->hosts[hl->n_hosts] = s_host_info(&a, h)))
                    hl->n_hosts++;
            }
            zlistx_destroy(&keys);
        }
        rep.result_case = TTFLEET__REPLY__RESULT_HOSTS;
        rep.hosts = hl;
    }
    ops_reply(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", &rep,
              false);
    a_free(&a);
    return 0;
}

static int s_status(ctx_t *c)
{
    broker_t *self = c->self;
    Ttfleet__PoolStatus ps = TTFLEET__POOL_STATUS__INIT;
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts)) {
        ps.hosts_total++;
        if (h->state == HOST_ONLINE)
            ps.hosts_online++;
        ps.cpu_total += h->cpu_total;
        ps.cpu_used += h->cpu_used;
        ps.mem_total += h->mem_total;
        ps.mem_used += h->mem_used;
        ps.disk_total += h->disk_total;
        ps.disk_used += h->disk_used;
        ps.vms += h->vm_count;
    }
    bool admin = c->admin;
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        if (admin || strcmp(e->tenant, c->tenant) == 0)
            ps.envs++;
    ps.started_at = self->started_at;
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_POOL;
    rep.pool = &ps;
    ops_reply(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", &rep,
              false);
    return 0;
}

/* Re-create every VM of `from` on other hosts with the same spec. The old
 * VM is destroyed (or, if its host is gone, destroyed when it comes back);
 * the new one gets a new VM id, IP, MAC and public ports, announced as an
 * event. Envs with an op in flight are left alone and reported. */
static void s_evacuate(broker_t *self, host_t *from, char *msg, size_t len)
{
    int moved = 0, failed = 0, busy = 0;
    char why[256] = "";
    zlistx_t *envs = zhashx_values(self->envs);
    for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs)) {
        bool has = false;
        for (int i = 0; i < e->n_vms && !has; i++)
            has = e->vms[i]->host == from;
        if (!has)
            continue;
        if (e->busy || e->target == TARGET_CREATING) {
            busy++;
            continue;
        }
        for (int i = 0; i < e->n_vms; i++) {
            vm_t *old = e->vms[i];
            if (old->host != from || old->doomed)
                continue;
            sched_want_t want = {old->engine, old->image, old->cpu, old->mem, old->disk,
                                 self->cfg.spread, NULL, 0};
            int status;
            host_t *to = sched_place(self, &want, &status, why, sizeof why);
            uint32_t vm_id;
            uint64_t mac;
            if (!to || alloc_vm_id(to, &vm_id) || alloc_mac(self, &mac)) {
                failed++;
                continue;
            }
            vm_t *nvm = model_vm_add(self, e, to, vm_id, mac);
            if (!nvm) {
                failed++;
                continue;
            }
            nvm->uid = self->next_vm_uid++;
            snprintf(nvm->image, sizeof nvm->image, "%s", old->image);
            snprintf(nvm->engine, sizeof nvm->engine, "%s", old->engine);
            model_vm_set_hw(nvm, old->cpu, old->mem, old->disk);
            model_vm_set_state(nvm, e->target == TARGET_STOPPED ? TTFLEET__VM_STATE__VM_STOPPED
                                                                : TTFLEET__VM_STATE__VM_PENDING);
            if (alloc_vm_ports(nvm, e->gports, e->n_gports)) {
                model_vm_remove(self, nvm);
                snprintf(why, sizeof why, "no free public port on host %s", to->id);
                failed++;
                continue;
            }
            nvm->active = true;
            persist_vm_insert(self, nvm);
            old->doomed = true;
            s_send_specs(self, &old, 1);
            persist_vm_delete(self, old);
            model_vm_remove(self, old);
            i--; /* the array shifted */
            s_send_specs(self, &nvm, 1);
            char note[160];
            snprintf(note, sizeof note, "moved from host %s: ip %s, mac %s", from->id, nvm->ip,
                     nvm->mac);
            broker_event(self, "vm.moved", e, nvm, to, tt_vm_state_name(nvm->state), note);
            moved++;
        }
        broker_event(self, "env.state", e, NULL, NULL, model_env_state(e), "evacuated");
    }
    zlistx_destroy(&envs);
    snprintf(msg, len, "host %s is draining; %d VM(s) moved, %d could not be placed%s%s%s, %d "
                       "env(s) busy (try again)",
             from->id, moved, failed, failed ? " (" : "", failed ? why : "", failed ? ")" : "",
             busy);
}

static int s_host_admin(ctx_t *c)
{
    broker_t *self = c->self;
    const char *id = c->req->op_case == TTFLEET__REQUEST__OP_HOST_DRAIN ? c->req->host_drain->id
                                                                         : c->req->host_remove->id;
    host_t *h = model_host_get(self, id);
    char msg[600];
    if (!h) {
        snprintf(msg, sizeof msg, "no host '%s'", id);
        return s_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    arena_t a = a_make();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (c->req->op_case == TTFLEET__REQUEST__OP_HOST_DRAIN) {
        const Ttfleet__HostDrain *d = c->req->host_drain;
        h->draining = !d->undo;
        persist_host(self, h);
        broker_event(self, d->undo ? "host.undrain" : "host.drain", NULL, NULL, h,
                     d->undo ? "online" : "draining", NULL);
        if (d->evacuate)
            s_evacuate(self, h, msg, sizeof msg);
        else
            snprintf(msg, sizeof msg, "host %s %s", h->id,
                     d->undo ? "takes placements again" : "is draining: no new placements");
    } else {
        const Ttfleet__HostRemove *r = c->req->host_remove;
        int busy = 0;
        for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
            for (int i = 0; i < e->n_vms; i++)
                if (e->vms[i]->host == h && e->busy)
                    busy++;
        if ((h->vm_count > 0 && !r->force) || busy) {
            snprintf(msg, sizeof msg,
                     busy ? "host %s holds VMs of envs with an operation in flight; try again"
                          : "host %s still holds VMs; evacuate it (host drain --evacuate) or "
                            "use --force to drop them",
                     h->id);
            a_free(&a);
            return s_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        }
        int dropped = 0;
        zlistx_t *envs = zhashx_values(self->envs);
        for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs))
            for (int i = e->n_vms - 1; i >= 0; i--)
                if (e->vms[i]->host == h) {
                    broker_event(self, "vm.state", e, e->vms[i], h, "absent", "host removed");
                    persist_vm_delete(self, e->vms[i]);
                    model_vm_remove(self, e->vms[i]);
                    dropped++;
                }
        zlistx_destroy(&envs);
        if (h->routing) {
            workers_send(self, h, TT_W_DISCONNECT, NULL, 0);
            char *hex = zframe_strhex(h->routing);
            if (hex)
                zhashx_delete(self->routes, hex);
            free(hex);
        }
        persist_host_delete(self, h);
        broker_event(self, "host.removed", NULL, NULL, h, "removed", NULL);
        snprintf(msg, sizeof msg, "host %s removed (%d VM(s) dropped); a worker still running "
                                  "there joins again when it reconnects",
                 id, dropped);
        zhashx_delete(self->hosts, id);
        sched_invalidate(self);
        h = NULL;
    }
    if (h) {
        rep.result_case = TTFLEET__REPLY__RESULT_HOST;
        rep.host = s_host_info(&a, h);
    }
    ops_reply(self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, msg, &rep,
              true);
    a_free(&a);
    return 0;
}

static int s_env_show(ctx_t *c)
{
    env_t *env = model_env_get(c->self, c->tenant, c->req->env_show->name);
    if (!env) {
        char msg[160];
        snprintf(msg, sizeof msg, "no env named '%s'", c->req->env_show->name);
        return s_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    s_reply_env(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", env,
                false);
    return 0;
}

static int s_env_delete(ctx_t *c)
{
    int status;
    env_t *env = s_env_idle(c, c->req->env_delete->name, &status);
    if (!env)
        return status;
    s_delete(c->self, env, "env.deleted");
    ops_reply(c->self, c->envelope, c->service, c->tenant, c->rid, TTFLEET__STATUS__OK, "", NULL,
              true);
    return 0;
}

static int s_env_stop(ctx_t *c)
{
    return s_power(c, OP_STOP, c->req->env_stop->name);
}

static int s_env_start(ctx_t *c)
{
    return s_power(c, OP_START, c->req->env_start->name);
}

static int s_env_pause(ctx_t *c)
{
    return s_power(c, OP_PAUSE, c->req->env_pause->name);
}

static int s_env_resume(ctx_t *c)
{
    return s_power(c, OP_RESUME, c->req->env_resume->name);
}

static int s_host_list(ctx_t *c)
{
    return s_hosts(c, NULL);
}

static int s_host_show(ctx_t *c)
{
    return s_hosts(c, c->req->host_show->id);
}

/* ---- the table of handlers ----
 *
 * One row per Request.op case, in the shape of Redis's commands.def. The
 * dispatcher does what every handler would otherwise repeat:
 *   H_ADMIN  - the caller must hold the admin role (FORBIDDEN otherwise);
 *   H_RECORD - the request changes state: it is idempotent under
 *              (tenant, request id), a retry gets the recorded reply, and
 *              its refusals are recorded too;
 *   H_OP     - it may open an op_t that answers later (informational: the
 *              handler opens it; the flag documents which rows can).
 * A new operation is a handler `static int s_x(ctx_t *c)` above and one row
 * here; nothing else dispatches on op_case. */
enum { H_ADMIN = 1, H_RECORD = 2, H_OP = 4 };

typedef struct {
    int op_case;
    int (*handler)(ctx_t *c);
    unsigned flags;
} handler_def_t;

static const handler_def_t s_handlers[] = {
    {TTFLEET__REQUEST__OP_ENV_CREATE, s_create, H_RECORD | H_OP},
    {TTFLEET__REQUEST__OP_ENV_SHOW, s_env_show, 0},
    {TTFLEET__REQUEST__OP_ENV_LIST, s_env_list, 0},
    {TTFLEET__REQUEST__OP_ENV_STOP, s_env_stop, H_RECORD | H_OP},
    {TTFLEET__REQUEST__OP_ENV_START, s_env_start, H_RECORD | H_OP},
    {TTFLEET__REQUEST__OP_ENV_PAUSE, s_env_pause, H_RECORD | H_OP},
    {TTFLEET__REQUEST__OP_ENV_RESUME, s_env_resume, H_RECORD | H_OP},
    {TTFLEET__REQUEST__OP_ENV_DELETE, s_env_delete, H_RECORD},
    {TTFLEET__REQUEST__OP_ENV_EXTEND, s_extend, H_RECORD},
    {TTFLEET__REQUEST__OP_ENV_UPDATE, s_update, H_RECORD},
    {TTFLEET__REQUEST__OP_ENV_RM_VM, s_rm_vm, H_RECORD},
    {TTFLEET__REQUEST__OP_ENV_CONSOLE, s_console, H_OP},
    {TTFLEET__REQUEST__OP_HOST_LIST, s_host_list, H_ADMIN},
    {TTFLEET__REQUEST__OP_HOST_SHOW, s_host_show, H_ADMIN},
    {TTFLEET__REQUEST__OP_POOL_STATUS, s_status, 0},
    {TTFLEET__REQUEST__OP_HOST_DRAIN, s_host_admin, H_ADMIN | H_RECORD},
    {TTFLEET__REQUEST__OP_HOST_REMOVE, s_host_admin, H_ADMIN | H_RECORD},
};

static const handler_def_t *s_handler_find(int op_case)
{
    for (size_t i = 0; i < sizeof s_handlers / sizeof s_handlers[0]; i++)
        if (s_handlers[i].op_case == op_case)
            return &s_handlers[i];
    return NULL;
}

void ops_handle_request(broker_t *self, zmsg_t *envelope, const char *service,
                        Ttfleet__Request *req, bool admin)
{
    ctx_t c = {self, envelope, service, req, req->tenant, req->request_id, admin, false, ""};
    const handler_def_t *def = s_handler_find(req->op_case);
    if (!def) {
        ops_reply(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__BAD_REQUEST,
                  "request has no known operation", NULL, false);
        return;
    }
    bool record = def->flags & H_RECORD;
    if (record) {
        request_rec_t *rec = reply_record_find(self, c.tenant, c.rid);
        if (rec && rec->done && rec->reply) {
            /* a retry: the first outcome, byte for byte */
            reply_replay(self, envelope, service, rec);
            return;
        }
        if (rec) {
            ops_reply(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__IN_PROGRESS,
                      "a request with this id is still running", NULL, false);
            return;
        }
    }
    if ((def->flags & H_ADMIN) && !admin) {
        ops_reply(self, envelope, service, c.tenant, c.rid, TTFLEET__STATUS__FORBIDDEN,
                  "host operations need the admin role", NULL, record);
        return;
    }
    /* One request, one savepoint: a refusal takes back its own rows and
     * queued output, never another request's. */
    broker_request_begin(self);
    int status = def->handler(&c);
    if (status == 0) {
        broker_request_end(self, true);
        return;
    }
    broker_request_end(self, false);
    ops_reply(self, envelope, service, c.tenant, c.rid, status, c.msg, NULL,
              record && !c.no_record);
}

/* The reaper: delete envs whose lease ran out, a bounded number per tick.
 * Leases that ran out while the broker was down get a grace period from
 * the broker's start instead of being deleted all at once. */
void ops_reap(broker_t *self, int64_t now)
{
    int budget = self->cfg.reap_per_tick;
    zlistx_t *due = zlistx_new();
    for (env_t *e = zhashx_first(self->envs); e && budget > 0; e = zhashx_next(self->envs)) {
        if (e->busy || e->target == TARGET_CREATING)
            continue;
        int64_t deadline = e->expires_at;
        if (deadline < self->started_at + self->cfg.lease_grace &&
            e->expires_at < self->started_at)
            deadline = self->started_at + self->cfg.lease_grace;
        if (now >= deadline) {
            zlistx_add_end(due, e);
            budget--;
        }
    }
    for (env_t *e = zlistx_first(due); e; e = zlistx_next(due)) {
        zsys_info("env %s/%s expired (lease ended at %lld)", e->tenant, e->name,
                  (long long)e->expires_at);
        s_delete(self, e, "env.expired");
    }
    zlistx_destroy(&due);
}
