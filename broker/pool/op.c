/*
 * op: ops in flight. See op.h.
 *
 * Create is all-or-nothing: if a worker refuses, fails, times out or dies,
 * every VM made for the env is destroyed, every allocation freed, the rows
 * deleted, and the client hears why (after up to three re-placement rounds
 * by replace.c). Other ops (stop, start, pause, resume) end with the env's
 * VMs in whatever state the workers reported, and the client hears which.
 */
#include "op.h"
#include "admq.h"
#include "outq.h"
#include "persist.h"
#include "replace.h"
#include "reply.h"
#include "stats.h"
#include "wcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ops in flight ---- */

op_t *op_new(broker_t *self, op_kind_t kind, env_t *env, zmsg_t *envelope, const char *service,
             const char *tenant, const char *rid)
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
    op->sent_us = calloc((size_t)env->n_vms + 1, sizeof *op->sent_us);
    if (!op->vms || !op->hosts || !op->cmd_ids || !op->sent_us) {
        op_free(self, &op);
        return NULL;
    }
    for (int i = 0; i < env->n_vms; i++)
        op->vms[op->n_vms++] = env->vms[i];
    if (kind == OP_CONSOLE || kind == OP_GUEST) {
        /* read-only: it keeps nothing that others may free (see op_t) */
        op->n_vms = 0;
        op->env = NULL;
    } else
        env->busy = op;
    op->handle = zlistx_add_end(self->all_ops, op);
    if (rid && *rid && kind != OP_CONSOLE && kind != OP_GUEST)
        reply_record_begin(self, tenant, rid);
    return op;
}

void op_free(broker_t *self, op_t **op_p)
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
    admq_entry_free(&op->queued);
    free(op->audit);
    free(op->vms);
    free(op->hosts);
    free(op->cmd_ids);
    free(op->sent_us);
    free(op);
    *op_p = NULL;
}

/* Record a failure of part of an op: the first status wins, messages add up. */
void op_fail(op_t *op, int status, const char *text)
{
    if (op->status == TTFLEET__STATUS__OK)
        op->status = status;
    size_t len = strlen(op->message);
    snprintf(op->message + len, sizeof op->message - len, "%s%s", len ? "; " : "", text);
}

static void s_op_finish(broker_t *self, op_t *op);

static void s_console_done(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply);

/* Send the op's VMs to their hosts, grouped by host, and wait for replies. */
void op_wait(broker_t *self, op_t *op, host_t *host, uint64_t cmd_id)
{
    op->hosts[op->n_hosts] = host;
    op->cmd_ids[op->n_hosts] = cmd_id;
    op->sent_us[op->n_hosts] = zclock_usecs();
    op->n_hosts++;
    char k[32];
    snprintf(k, sizeof k, "%llu", (unsigned long long)cmd_id);
    zhashx_insert(self->ops, k, op);
    op->waiting++;
}

void op_dispatch(broker_t *self, op_t *op)
{
    vm_t **group = calloc((size_t)op->n_vms + 1, sizeof *group);
    bool *done = calloc((size_t)op->n_vms + 1, sizeof *done);
    if (!group || !done) {
        free(group);
        free(done);
        op_fail(op, TTFLEET__STATUS__INTERNAL, "out of memory");
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
            op_fail(op, TTFLEET__STATUS__WORKER_FAILED, why);
            continue;
        }
        uint64_t cmd_id = wcmd_send(self, h, group, NULL, g);
        if (!cmd_id) {
            char why[160];
            snprintf(why, sizeof why, "host %s has too many commands queued; try again", h->id);
            op_fail(op, TTFLEET__STATUS__UNAVAILABLE, why);
            continue;
        }
        op_wait(self, op, h, cmd_id);
    }
    free(group);
    free(done);
    if (op->waiting == 0)
        s_op_finish(self, op);
}

/* Destroy what a failed create made and forget the env. */
void op_env_drop(broker_t *self, env_t *env)
{
    for (int i = 0; i < env->n_vms; i++)
        env->vms[i]->doomed = true;
    wcmd_send_specs(self, env->vms, env->n_vms);
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

static void s_op_finish(broker_t *self, op_t *op)
{
    if (op->kind == OP_CONSOLE) {
        s_console_done(self, op, NULL, NULL);
        return;
    }
    if (op->kind == OP_GUEST) {
        op->guest_done(self, op, NULL, NULL);
        return;
    }
    env_t *env = op->env;
    char msg[768];
    if (op->status != TTFLEET__STATUS__OK && replace_create_round(self, op)) {
        op_dispatch(self, op);
        return;
    }
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
            outq_event(self, "env.state", env, NULL, NULL, "running", "created");
            /* VMs that became ready while the create ran: env.ready follows
             * the create's end, never comes before it */
            bool all_ready = env->n_vms > 0;
            for (int i = 0; i < env->n_vms; i++)
                all_ready = all_ready && env->vms[i]->ready;
            if (all_ready)
                outq_event(self, "env.ready", env, NULL, NULL, "ready", NULL);
            reply_env(self, op->envelope, op->service, op->tenant, op->request_id,
                      TTFLEET__STATUS__OK, "", env, true);
        } else if (op->queued &&
                   (op->status == TTFLEET__STATUS__NO_CAPACITY ||
                    op->status == TTFLEET__STATUS__UNAVAILABLE) &&
                   self->requeue && self->requeue(self, op->queued, op->message) == 0) {
            /* a capacity refusal is transient (the worker may still be
             * destroying what freed the room): the queued create waits
             * again in its place, its request id still in progress */
            op->queued = NULL;
            op_env_drop(self, env);
        } else {
            snprintf(msg, sizeof msg,
                     "create of env '%s' failed: %s; everything made for it "
                     "was undone",
                     env->name, op->message);
            outq_event(self, "env.failed", env, NULL, NULL, "deleted", msg);
            op_env_drop(self, env);
            reply_send(self, op->envelope, op->service, op->tenant, op->request_id, op->status, msg,
                       NULL, true);
        }
    } else {
        persist_env_update(self, env);
        for (int i = 0; i < env->n_vms; i++)
            persist_vm_update(self, env->vms[i]);
        const char *state = model_env_state(env);
        outq_event(self, "env.state", env, NULL, NULL, state, NULL);
        if (op->status == TTFLEET__STATUS__OK && (op->kind == OP_SUSPEND || op->from_suspend))
            outq_event(self, op->kind == OP_SUSPEND ? "env.suspended" : "env.resumed", env, NULL,
                       NULL, state, NULL);
        if (op->kind == OP_SUSPEND)
            self->admit_wanted = true; /* the cpu and mem the VMs gave back */
        if (op->status == TTFLEET__STATUS__OK) {
            reply_env(self, op->envelope, op->service, op->tenant, op->request_id,
                      TTFLEET__STATUS__OK, "", env, true);
        } else {
            snprintf(msg, sizeof msg, "env '%s' is %s: %s", env->name, state, op->message);
            reply_env(self, op->envelope, op->service, op->tenant, op->request_id, op->status, msg,
                      env, true);
        }
    }
    op->env = NULL;
    op_free(self, &op);
}

/* The reply to a console op: the worker's tail of the VM's console log. */
static void s_console_done(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply)
{
    if (!reply || reply->status != TTFLEET__STATUS__OK) {
        char msg[900];
        snprintf(msg, sizeof msg, "host %s could not read the console of VM %u: %s",
                 op->console_host, op->console_vm_id,
                 reply && reply->message && *reply->message ? reply->message
                 : op->message[0]                           ? op->message
                                                            : "no answer");
        reply_send(self, op->envelope, op->service, op->tenant, op->request_id,
                   reply ? TTFLEET__STATUS__WORKER_FAILED : op->status, msg, NULL, false);
    } else {
        Ttfleet__ConsoleText ct = TTFLEET__CONSOLE_TEXT__INIT;
        ct.host = host->id;
        ct.vm_id = op->console_vm_id;
        ct.text = reply->console;
        ct.truncated = reply->console_truncated;
        Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
        rep.result_case = TTFLEET__REPLY__RESULT_CONSOLE;
        rep.console = &ct;
        reply_send(self, op->envelope, op->service, op->tenant, op->request_id, TTFLEET__STATUS__OK,
                   "", &rep, false);
    }
    op->env = NULL;
    op_free(self, &op);
}

void op_worker_reply(broker_t *self, host_t *host, Ttfleet__WorkerReply *reply)
{
    /* a destroy answered: what its VMs held is free for placement now */
    if (wcmd_freed(self, host, reply->op_id))
        self->admit_wanted = true;
    /* The states are truth whatever op they belong to. */
    for (size_t i = 0; i < reply->n_vms; i++) {
        Ttfleet__VmActual *va = reply->vms[i];
        vm_t *vm = model_vm_find(self, host->id, va->vm_id);
        if (!vm || vm->doomed)
            continue;
        int st = va->state;
        if (st == TTFLEET__VM_STATE__VM_ABSENT)
            st = TTFLEET__VM_STATE__VM_LOST;
        if (st < 0 || st > TTFLEET__VM_STATE__VM_SUSPENDED)
            continue;
        if (vm->state != st) {
            const char *env_before = model_env_state(vm->env);
            model_vm_set_state(vm, st);
            if (!vm->env->busy)
                persist_vm_update(self, vm);
            outq_event(self, "vm.state", vm->env, vm, host, tt_vm_state_name(st), va->message);
            const char *env_after = model_env_state(vm->env);
            if (!vm->env->busy && strcmp(env_before, env_after) != 0)
                outq_event(self, "env.state", vm->env, NULL, NULL, env_after, NULL);
        }
        op_vm_ready(self, vm, va);
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
            stats_worker(self, host, zclock_usecs() - op->sent_us[i]);
        }
    zhashx_delete(self->ops, k);
    if (op->kind == OP_CONSOLE) {
        s_console_done(self, op, host, reply);
        return;
    }
    if (op->kind == OP_GUEST) {
        op->guest_done(self, op, host, reply);
        return;
    }
    if (reply->status != TTFLEET__STATUS__OK) {
        char why[400];
        snprintf(why, sizeof why, "host %s: %s", host->id,
                 reply->message && *reply->message ? reply->message
                                                   : tt_status_name(reply->status));
        int st = reply->status == TTFLEET__STATUS__NO_CAPACITY ? TTFLEET__STATUS__NO_CAPACITY
                                                               : TTFLEET__STATUS__WORKER_FAILED;
        op_fail(op, st, why);
    }
    if (--op->waiting <= 0)
        s_op_finish(self, op);
}

void op_host_down(broker_t *self, host_t *host)
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
                op_fail(op, TTFLEET__STATUS__WORKER_FAILED, why);
            }
        if (op->waiting <= 0)
            s_op_finish(self, op);
    }
    zlistx_destroy(&hit);
}

void op_tick(broker_t *self, int64_t now_ms)
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
                op_fail(op, TTFLEET__STATUS__TIMEOUT, why);
            }
        op->waiting = 0;
        s_op_finish(self, op);
    }
    zlistx_destroy(&late);
}

/* ---- readiness (issue 11) ---- */

void op_vm_ready(broker_t *self, vm_t *vm, const Ttfleet__VmActual *va)
{
    bool ready = va->ready && vm->state == TTFLEET__VM_STATE__VM_RUNNING;
    if (va->boot && (strcmp(va->boot, "snapshot") == 0 || strcmp(va->boot, "cold") == 0))
        snprintf(vm->boot, sizeof vm->boot, "%s", va->boot);
    if (va->ready_detail && strcmp(va->ready_detail, vm->ready_detail) != 0)
        snprintf(vm->ready_detail, sizeof vm->ready_detail, "%s", va->ready_detail);
    if (ready == vm->ready)
        return;
    vm->ready = ready;
    vm->ready_at = ready ? (va->ready_at > 0 ? va->ready_at : tt_now()) : 0;
    if (!ready)
        return;
    outq_event(self, "vm.ready", vm->env, vm, vm->host, "ready", vm->ready_detail);
    env_t *env = vm->env;
    if (env->target == TARGET_CREATING)
        return; /* the create's end says env.ready */
    for (int i = 0; i < env->n_vms; i++)
        if (!env->vms[i]->ready)
            return;
    outq_event(self, "env.ready", env, NULL, NULL, "ready", NULL);
}
