/*
 * guest_ops: exec and copy through the VM's worker. See guest_ops.h.
 *
 * The request is validated whole before it gets here (ttproto.c with
 * ttguest.c's rules, plus tt_guest_raw_check for NULs the decoder would
 * hide). The handler finds the caller's env (another tenant's env is
 * NOT_FOUND, as everywhere), the one VM the id (and host) names, insists
 * that it is RUNNING (INVALID_STATE otherwise: a stopped or paused VM runs
 * nothing), forwards the EnvExec / EnvCopy unchanged in a WorkerCommand
 * and opens an OP_GUEST op with a deadline of the command's own timeout
 * plus a margin. The op holds the VM by value (host id, VM id), never a
 * pointer to the env or VM: a delete, rm-vm or the reaper may free them
 * while the worker runs the command; a host that goes down fails the op
 * through op_host_down, a deadline through op_tick, both with NULL here.
 * The worker's ExecResult / CopyChunk is relayed into Reply.exec / copy,
 * with its status (GUEST_*, CHECKSUM_MISMATCH, TIMEOUT ...) and message.
 * Each exec and each copy's first chunk leaves an audit row (what, which VM)
 * when it is sent, with status IN_PROGRESS; the answer (the worker's, or the
 * deadline's / host down's) sets the row's outcome to the status the client
 * got. A later chunk that fails leaves a row of its own. Refusals here are
 * answered, not audited.
 */
#include "guest_ops.h"
#include "audit.h"
#include "op.h"
#include "persist.h"
#include "rate.h"
#include "reply.h"
#include "ttguest.h"
#include "wcmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Beyond the command's own timeout: the worker's guest agent connect, the
 * hop to and from the worker. */
#define S_MARGIN_MS 15000
/* A chunk served from memory, or a read of more output. */
#define S_CHUNK_MS 15000
/* A whole file read from or written into the guest (64 MiB at most). */
#define S_FILE_MS 150000

/* The caller's running VM named by (env, vm_id, host), and its host, or a
 * status with the reason in c->msg. */
static int s_target(handler_ctx_t *c, const char *name, uint32_t vm_id, const char *host_id,
                    const char *what, vm_t **vm_p)
{
    env_t *env = model_env_get(c->self, c->tenant, name);
    char msg[256];
    if (!env) {
        snprintf(msg, sizeof msg, "no env named '%s'", name);
        return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    vm_t *vm = NULL;
    int found = 0;
    for (int i = 0; i < env->n_vms; i++)
        if (env->vms[i]->vm_id == vm_id && !env->vms[i]->doomed &&
            (!host_id || !*host_id || strcmp(host_id, env->vms[i]->host->id) == 0)) {
            vm = env->vms[i];
            found++;
        }
    if (found != 1) {
        if (found)
            snprintf(msg, sizeof msg, "VM id %u is on several hosts; name the host", vm_id);
        else
            snprintf(msg, sizeof msg, "env '%s' has no VM %u%s%s", name, vm_id,
                     host_id && *host_id ? " on host " : "", host_id ? host_id : "");
        return handler_fail(c, found ? TTFLEET__STATUS__BAD_REQUEST : TTFLEET__STATUS__NOT_FOUND,
                            msg);
    }
    if (vm->state != TTFLEET__VM_STATE__VM_RUNNING) {
        snprintf(msg, sizeof msg, "VM %u of env '%s' is %s: %s needs it running", vm_id, name,
                 tt_vm_state_name(vm->state), what);
        return handler_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
    }
    host_t *h = vm->host;
    if (!h->routing || h->state == HOST_DOWN) {
        snprintf(msg, sizeof msg, "host %s of VM %u is down", h->id, vm_id);
        return handler_fail(c, TTFLEET__STATUS__UNAVAILABLE, msg);
    }
    *vm_p = vm;
    return 0;
}

/* ---- open copy transfers, per tenant and host ---- */

typedef struct {
    char tenant[TT_MAX_NAME + 1];
    char host[TT_MAX_NAME + 1];
    int64_t last_ms;
} s_xfer_t;

static void s_xfer_destroy(void **item)
{
    free(*item);
    *item = NULL;
}

static bool s_xfer_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > TT_EXEC_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
            return false;
    return true;
}

/* Transfers tenant holds open on host (idle ones are forgotten first),
 * plus its first chunks still waiting for an answer. */
static int s_xfers_open(broker_t *self, const char *tenant, const char *host)
{
    int n = 0;
    int64_t now = tt_mono_ms();
    if (self->guest_xfers) {
        zlistx_t *gone = zlistx_new();
        if (!gone)
            return GUEST_TENANT_XFERS_MAX; /* out of memory: refuse rather than overbook */
        zlistx_set_destructor(gone, (zlistx_destructor_fn *)zstr_free);
        for (s_xfer_t *x = zhashx_first(self->guest_xfers); x; x = zhashx_next(self->guest_xfers))
            if (now - x->last_ms > GUEST_XFER_IDLE_MS)
                zlistx_add_end(gone, strdup((const char *)zhashx_cursor(self->guest_xfers)));
            else if (strcmp(x->tenant, tenant) == 0 && strcmp(x->host, host) == 0)
                n++;
        for (const char *k = zlistx_first(gone); k; k = zlistx_next(gone))
            zhashx_delete(self->guest_xfers, k);
        zlistx_destroy(&gone);
    }
    for (op_t *op = zlistx_first(self->all_ops); op; op = zlistx_next(self->all_ops))
        if (op->kind == OP_GUEST && op->guest_copy && !op->guest_xfer[0] &&
            strcmp(op->tenant, tenant) == 0 && strcmp(op->console_host, host) == 0)
            n++;
    return n;
}

/* Whether id is a transfer tenant holds open on host (not idle). */
static bool s_xfer_mine(broker_t *self, const char *tenant, const char *host, const char *id)
{
    if (!self->guest_xfers || !s_xfer_id_ok(id))
        return false;
    char key[TT_MAX_NAME + TT_EXEC_ID_LEN + 2];
    snprintf(key, sizeof key, "%s\x1f%s", host, id);
    const s_xfer_t *x = zhashx_lookup(self->guest_xfers, key);
    return x && strcmp(x->tenant, tenant) == 0 && tt_mono_ms() - x->last_ms <= GUEST_XFER_IDLE_MS;
}

/* After a copy chunk's answer: a transfer left open is (re)recorded for
 * its tenant, one that ended or failed is forgotten. */
static void s_xfer_track(broker_t *self, op_t *op, int status, const Ttfleet__WorkerReply *reply)
{
    const char *id = reply && reply->copy && s_xfer_id_ok(reply->copy->transfer_id)
                         ? reply->copy->transfer_id
                         : op->guest_xfer;
    if (!s_xfer_id_ok(id))
        return;
    if (!self->guest_xfers) {
        self->guest_xfers = zhashx_new();
        if (!self->guest_xfers)
            return;
        zhashx_set_destructor(self->guest_xfers, s_xfer_destroy);
    }
    char key[TT_MAX_NAME + TT_EXEC_ID_LEN + 2];
    snprintf(key, sizeof key, "%s\x1f%s", op->console_host, id);
    s_xfer_t *x = zhashx_lookup(self->guest_xfers, key);
    if (x && strcmp(x->tenant, op->tenant) != 0)
        return; /* not this tenant's to change */
    if (status != TTFLEET__STATUS__OK || !reply || !reply->copy || reply->copy->eof) {
        zhashx_delete(self->guest_xfers, key);
        return;
    }
    if (!x) {
        x = calloc(1, sizeof *x);
        if (!x)
            return;
        snprintf(x->tenant, sizeof x->tenant, "%s", op->tenant);
        snprintf(x->host, sizeof x->host, "%s", op->console_host);
        zhashx_insert(self->guest_xfers, key, x);
    }
    x->last_ms = tt_mono_ms();
}

/* The outcome of an audited guest op: into the row written when it was
 * sent, or (a later chunk) a row of its own when it failed. */
static void s_audit_outcome(broker_t *self, op_t *op, int status, const char *msg,
                            const Ttfleet__WorkerReply *reply)
{
    if (!op->audit || (!op->audit_id && status == TTFLEET__STATUS__OK))
        return;
    char buf[AUDIT_MAX_TEXT * 2 + 8];
    snprintf(buf, sizeof buf, "%s", op->audit);
    char *f[5] = {buf, "", "", "", ""};
    for (int i = 1; i < 5; i++) {
        char *sep = strchr(f[i - 1], '\x1f');
        if (!sep)
            break;
        *sep = 0;
        f[i] = sep + 1;
    }
    /* audit_write keeps AUDIT_MAX_TEXT bytes of it */
    char text[1100];
    if (status == TTFLEET__STATUS__OK && reply && reply->exec)
        snprintf(text, sizeof text, "%.400s -> exit %d%s", f[4], reply->exec->exit_code,
                 reply->exec->signal ? " (signal)" : "");
    else
        snprintf(text, sizeof text, "%.400s -> %s%s%.600s", f[4], tt_status_name(status),
                 msg && *msg ? ": " : "", msg ? msg : "");
    if (persist_open(self))
        return;
    if (op->audit_id) {
        if (audit_set_outcome(self->store, op->audit_id, status, text)) {
            zsys_error("broker.db: cannot set the outcome of audit row %lld",
                       (long long)op->audit_id);
            self->failed = true;
        }
        return;
    }
    audit_ctx_t ctx = {f[0], f[1], f[2], f[3]};
    const audit_ctx_t *saved = self->cur_audit;
    self->cur_audit = &ctx;
    reply_audit(self, op->tenant, op->request_id, status, text);
    self->cur_audit = saved;
}

/* The worker's answer (or NULL: host down, deadline) to the client. */
static void s_done(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply)
{
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    char msg[900];
    char *worker_host = NULL;
    int status;
    if (!reply) {
        status = op->status != TTFLEET__STATUS__OK ? op->status : TTFLEET__STATUS__TIMEOUT;
        snprintf(msg, sizeof msg, "exec / copy in VM %u on host %s: %s", op->console_vm_id,
                 op->console_host, op->message[0] ? op->message : "no answer");
    } else {
        status = reply->status;
        snprintf(msg, sizeof msg, "%s", reply->message ? reply->message : "");
        if (status != TTFLEET__STATUS__OK && !msg[0])
            snprintf(msg, sizeof msg, "host %s: %s", host->id, tt_status_name(status));
        if (reply->exec) {
            worker_host = reply->exec->host;
            reply->exec->host = host->id;
            reply->exec->vm_id = op->console_vm_id;
            rep.result_case = TTFLEET__REPLY__RESULT_EXEC;
            rep.exec = reply->exec;
        } else if (reply->copy) {
            rep.result_case = TTFLEET__REPLY__RESULT_COPY;
            rep.copy = reply->copy;
        } else if (status == TTFLEET__STATUS__OK) {
            status = TTFLEET__STATUS__WORKER_FAILED;
            snprintf(msg, sizeof msg, "host %s answered without a result", host->id);
        }
    }
    s_audit_outcome(self, op, status, msg, reply);
    if (op->guest_copy)
        s_xfer_track(self, op, status, reply);
    reply_send(self, op->envelope, op->service, op->tenant, op->request_id, status, msg,
               rep.result_case ? &rep : NULL, false);
    if (reply && reply->exec)
        reply->exec->host = worker_host; /* host->id was borrowed */
    op->env = NULL;
    op_free(self, &op);
}

/* Exec and copy ops of tenant waiting for host. */
static int s_in_flight(broker_t *self, const char *tenant, const char *host_id)
{
    int n = 0;
    for (op_t *op = zlistx_first(self->all_ops); op; op = zlistx_next(self->all_ops))
        if (op->kind == OP_GUEST && strcmp(op->tenant, tenant) == 0 &&
            strcmp(op->console_host, host_id) == 0)
            n++;
    return n;
}

/* Open the op and send the command; 0, or a status in c->msg. */
static int s_forward(handler_ctx_t *c, vm_t *vm, Ttfleet__EnvExec *exec, Ttfleet__EnvCopy *copy,
                     int64_t deadline_ms, char *audit, bool first)
{
    broker_t *self = c->self;
    host_t *h = vm->host;
    /* a worker runs GUESTOP_JOBS_MAX guest jobs at once: one tenant takes
     * at most a quarter of them, so long commands of one tenant never
     * shut the others out of a host */
    int busy = s_in_flight(self, c->tenant, h->id);
    if (busy >= GUEST_TENANT_HOST_MAX) {
        snprintf(c->msg, sizeof c->msg,
                 "tenant '%s' has %d exec / copy requests running on host %s (at most %d): "
                 "wait for one to finish",
                 c->tenant, busy, h->id, GUEST_TENANT_HOST_MAX);
        return TTFLEET__STATUS__RATE_LIMITED;
    }
    if (copy && (!copy->transfer_id || !*copy->transfer_id)) {
        int open = s_xfers_open(self, c->tenant, h->id);
        if (open >= GUEST_TENANT_XFERS_MAX) {
            snprintf(c->msg, sizeof c->msg,
                     "tenant '%s' has %d copies open on host %s (at most %d): finish one, or "
                     "it is dropped after %d s idle",
                     c->tenant, open, h->id, GUEST_TENANT_XFERS_MAX, GUEST_XFER_IDLE_MS / 1000);
            return TTFLEET__STATUS__RATE_LIMITED;
        }
    }
    op_t *op = op_new(self, OP_GUEST, vm->env, c->envelope, c->service, c->tenant, c->rid);
    if (!op)
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    if (copy) {
        op->guest_copy = true;
        snprintf(op->guest_xfer, sizeof op->guest_xfer, "%s",
                 copy->transfer_id ? copy->transfer_id : "");
    }
    snprintf(op->console_host, sizeof op->console_host, "%s", h->id);
    op->console_vm_id = vm->vm_id;
    op->guest_done = s_done;
    op->deadline_ms = tt_mono_ms() + deadline_ms;
    uint64_t cmd_id = wcmd_guest(self, h, exec, copy);
    if (!cmd_id) {
        op_free(self, &op);
        char msg[200];
        snprintf(msg, sizeof msg, "host %s has too many commands queued; try again", h->id);
        return handler_fail(c, TTFLEET__STATUS__UNAVAILABLE, msg);
    }
    op_wait(self, op, h, cmd_id);
    op->audit = audit;
    if (first && audit) {
        /* the row is written now, in the batch that sends the command */
        const char *text = audit;
        for (int i = 0; i < 4 && text; i++)
            text = strchr(text, '\x1f') ? strchr(text, '\x1f') + 1 : NULL;
        reply_audit(self, c->tenant, c->rid, TTFLEET__STATUS__IN_PROGRESS, text ? text : "");
        if (!self->failed)
            op->audit_id = (int64_t)sqlite3_last_insert_rowid(store_db(self->store));
    }
    return 0;
}

/* The audit context and text of an exec or copy (dispatch set the op and
 * target: "env.exec" / "env.copy", the env name): what reached which VM,
 * control characters shown as '?'. NULL when out of memory. */
static char *s_audit(handler_ctx_t *c, const vm_t *vm, const char *what, char *const *argv,
                     size_t argc)
{
    char text[400];
    size_t n = (size_t)snprintf(text, sizeof text, "%s in VM %u on host %s:", what, vm->vm_id,
                                vm->host->id);
    for (size_t i = 0; i < argc && n + 2 < sizeof text; i++) {
        text[n++] = ' ';
        for (const char *p = argv[i]; *p && n + 1 < sizeof text; p++)
            text[n++] = (unsigned char)*p < 0x20 || *p == 0x7f ? '?' : *p;
    }
    text[n < sizeof text ? n : sizeof text - 1] = '\0';
    const audit_ctx_t *a = c->self->cur_audit;
    char packed[AUDIT_MAX_TEXT * 2 + 8];
    snprintf(packed, sizeof packed, "%s\x1f%s\x1f%s\x1f%s\x1f%s", a && a->op ? a->op : "request",
             a && a->target ? a->target : "", a && a->role ? a->role : "user",
             a && a->key ? a->key : "", text);
    return strdup(packed);
}

int guest_exec(handler_ctx_t *c)
{
    Ttfleet__EnvExec *q = c->req->env_exec;
    vm_t *vm;
    int st = s_target(c, q->name, q->vm_id, q->host, "exec", &vm);
    if (st)
        return st;
    bool more = q->exec_id && *q->exec_id;
    uint32_t t = q->timeout_s ? q->timeout_s : TT_EXEC_TIMEOUT_DEFAULT;
    char *audit = more ? s_audit(c, vm, "exec more output", NULL, 0)
                       : s_audit(c, vm, "exec", q->argv, q->n_argv);
    st = s_forward(c, vm, q, NULL, more ? S_CHUNK_MS : (int64_t)t * 1000 + S_MARGIN_MS, audit,
                   !more);
    if (st)
        free(audit);
    return st;
}

int guest_copy(handler_ctx_t *c)
{
    Ttfleet__EnvCopy *q = c->req->env_copy;
    vm_t *vm;
    int st = s_target(c, q->name, q->vm_id, q->host, "copy", &vm);
    if (st)
        return st;
    bool get = q->direction == TTFLEET__COPY_DIRECTION__COPY_GET;
    bool whole = get ? q->offset == 0 : q->last;
    bool first = !q->transfer_id || !*q->transfer_id;
    /* each copy's start costs a token of the tenant's rate, as an exec does
     * (its later chunks do not: they are one transfer); so does a chunk
     * naming a transfer this tenant does not hold open on the VM's host
     * (made up, or forgotten), which the worker would refuse */
    bool open = !first && s_xfer_mine(c->self, c->tenant, vm->host->id, q->transfer_id);
    int64_t retry_ms = 0;
    if (!open && !c->admin && !rate_take(c->self, c->tenant, tt_mono_ms(), &retry_ms)) {
        snprintf(c->msg, sizeof c->msg,
                 "tenant '%s' starts copies and other changing requests faster than %g/s "
                 "(burst %d); retry in %lld ms",
                 c->tenant, c->self->cfg.rate,
                 c->self->cfg.rate_burst > 0 ? c->self->cfg.rate_burst : (int)c->self->cfg.rate,
                 (long long)retry_ms);
        c->no_record = true;
        return TTFLEET__STATUS__RATE_LIMITED;
    }
    char *audit = s_audit(c, vm, get ? "copy from" : "copy to", &q->path, 1);
    st = s_forward(c, vm, NULL, q, whole ? S_FILE_MS : S_CHUNK_MS, audit, first);
    if (st)
        free(audit);
    return st;
}
