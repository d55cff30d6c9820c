/*
 * guestop: exec and copy inside a VM. See guestop.h for the contract and
 * the bounds.
 *
 * The loop side (guestop_submit, guestop_flush) owns the tables: kept
 * outputs (s_result_t) and transfers (s_xfer_t). A job (s_job_t) carries
 * copies of everything it needs into a pool thread (jobs.c) and its
 * results back; the loop applies them when it reaps the job.
 *
 * How a guest is entered is the engine's (guest_backend_t,
 * engine_t.guest): guestop checks, queues, bounds and answers; the
 * backend runs on a pool thread with the job's copies.
 */
#define _GNU_SOURCE
#include "guestop.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "jobs.h"
#include "ttguest.h"
#include "ttproto.h"
#include "wire.h"

#define S_FILE_MS 120000 /* a whole file into / out of the guest */

typedef enum { J_EXEC, J_PUT, J_GET } s_kind_t;

typedef struct {
    guestop_config_t cfg; /* host_id borrowed from the owner's config */
    s_kind_t kind;
    uint64_t op_id;
    uint32_t vm_id;
    guestop_vm_t vm;
    char **argv; /* J_EXEC, NULL-terminated */
    unsigned char *in;
    size_t in_len;
    int timeout_ms;
    char *path;          /* J_PUT, J_GET */
    unsigned char *data; /* J_PUT: the file; J_GET: what was read */
    size_t len;
    uint32_t max_bytes; /* J_GET: first chunk wanted */
    uint16_t gone;      /* self->gone[vm_id] at submit: changed = the VM went away */
    int64_t queued_ms;  /* when it was queued: time waiting for a thread counts */
    int file_ms;        /* J_PUT, J_GET: what is left of S_FILE_MS */
    guestop_exec_t ex;  /* J_EXEC result; status and msg of every job */
    unsigned char sha[32];
} s_job_t;

typedef struct {
    char id[TT_EXEC_ID_LEN + 1];
    uint32_t vm_id;
    int64_t expires_ms;
    guestop_exec_t ex;
} s_result_t;

typedef struct {
    char id[TT_EXEC_ID_LEN + 1];
    uint32_t vm_id;
    int dir; /* Ttfleet__CopyDirection */
    char *path;
    unsigned char *buf;
    size_t len, cap;
    unsigned char sha[32]; /* GET */
    int64_t idle_ms;       /* dropped when the monotonic clock passes it */
} s_xfer_t;

struct guestop_t {
    guestop_config_t cfg;
    jobs_t *jobs;
    size_t pending;
    uint8_t *per_vm; /* [TT_VMID_MAX + 1] jobs queued or running */
    uint16_t *gone;  /* [TT_VMID_MAX + 1] times the VM id was removed (guestop_vm_gone) */
    s_result_t *results[GUESTOP_RESULTS_MAX];
    s_xfer_t *xfers[GUESTOP_XFERS_MAX];
    zlist_t *out;
};

/* ---- small helpers ---- */

static int s_new_id(char id[TT_EXEC_ID_LEN + 1])
{
    unsigned char b[TT_EXEC_ID_LEN / 2];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
        return -1;
    for (size_t i = 0; i < sizeof b; i++)
        snprintf(id + 2 * i, 3, "%02x", b[i]);
    return 0;
}

void guestop_exec_free(guestop_exec_t *res)
{
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
    res->out_len = res->err_len = 0;
}

static void s_result_free(s_result_t **r_p)
{
    if (!*r_p)
        return;
    guestop_exec_free(&(*r_p)->ex);
    free(*r_p);
    *r_p = NULL;
}

static void s_xfer_free(s_xfer_t **x_p)
{
    if (!*x_p)
        return;
    free((*x_p)->path);
    free((*x_p)->buf);
    free(*x_p);
    *x_p = NULL;
}

static void s_job_free(s_job_t *j)
{
    if (!j)
        return;
    for (size_t i = 0; j->argv && j->argv[i]; i++)
        free(j->argv[i]);
    free(j->argv);
    free(j->in);
    free(j->path);
    free(j->data);
    guestop_exec_free(&j->ex);
    free(j);
}

static void s_queue(guestop_t *self, Ttfleet__WorkerReply *rep)
{
    zframe_t *f = wire_pack(&rep->base);
    if (f && zlist_append(self->out, f))
        zframe_destroy(&f);
}

static void s_answer(guestop_t *self, uint64_t op_id, int status, const char *msg)
{
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = (Ttfleet__Status)status;
    rep.message = (char *)msg;
    if (status != TTFLEET__STATUS__OK)
        zsys_info("guest op %llu: %s: %s", (unsigned long long)op_id, tt_status_name(status), msg);
    s_queue(self, &rep);
}

/* An ExecResult with the pieces of ex from the offsets. */
static void s_exec_answer(guestop_t *self, uint64_t op_id, int status, const char *msg,
                          uint32_t vm_id, const guestop_exec_t *ex, const char *id,
                          uint64_t out_off, uint64_t err_off)
{
    Ttfleet__ExecResult er = TTFLEET__EXEC_RESULT__INIT;
    er.host = (char *)self->cfg.host_id;
    er.vm_id = vm_id;
    er.exit_code = ex->exit_code;
    er.signal = ex->signal;
    if (out_off > ex->out_len)
        out_off = ex->out_len;
    if (err_off > ex->err_len)
        err_off = ex->err_len;
    size_t on = ex->out_len - out_off, en = ex->err_len - err_off;
    er.stdout.data = ex->out ? ex->out + out_off : NULL;
    er.stdout.len = on > TT_EXEC_PIECE ? TT_EXEC_PIECE : on;
    er.stderr.data = ex->err ? ex->err + err_off : NULL;
    er.stderr.len = en > TT_EXEC_PIECE ? TT_EXEC_PIECE : en;
    er.stdout_offset = out_off;
    er.stderr_offset = err_off;
    er.stdout_size = ex->out_len;
    er.stderr_size = ex->err_len;
    er.stdout_truncated = ex->out_trunc;
    er.stderr_truncated = ex->err_trunc;
    er.exec_id = (char *)(id ? id : "");
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = (Ttfleet__Status)status;
    rep.message = (char *)msg;
    rep.exec = &er;
    s_queue(self, &rep);
}

/* A GET chunk of x from offset (or the PUT's progress when x is a PUT). */
static void s_copy_answer(guestop_t *self, uint64_t op_id, s_xfer_t *x, uint64_t offset,
                          uint32_t max_bytes)
{
    Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
    cc.transfer_id = x->id;
    cc.offset = offset;
    if (x->dir == TTFLEET__COPY_DIRECTION__COPY_GET) {
        size_t want = max_bytes ? max_bytes : TT_COPY_CHUNK_MAX;
        size_t left = offset < x->len ? x->len - (size_t)offset : 0;
        cc.data.data = left ? x->buf + offset : NULL;
        cc.data.len = left < want ? left : want;
        cc.eof = offset + cc.data.len >= x->len;
        cc.total_size = x->len;
        cc.sha256.data = x->sha;
        cc.sha256.len = 32;
    }
    Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
    rep.op_id = op_id;
    rep.status = TTFLEET__STATUS__OK;
    rep.message = "";
    rep.copy = &cc;
    s_queue(self, &rep);
}

/* ---- the pool side ---- */

static void s_run(void *arg)
{
    s_job_t *j = arg;
    /* the broker's deadline started when the command was sent: time spent
     * waiting for a thread comes off the job's own, so the answer still
     * arrives in time (a transfer that cannot get 1 s, or a command that
     * cannot get half its timeout up to 1 s, is not started: a 1 s
     * timeout after a wait of a few ms still runs) */
    int64_t waited = tt_mono_ms() - j->queued_ms;
    j->file_ms = S_FILE_MS - (int)(waited < S_FILE_MS ? waited : S_FILE_MS);
    int left = j->kind == J_EXEC ? j->timeout_ms - (int)waited : j->file_ms;
    int least = j->kind == J_EXEC ? (j->timeout_ms / 2 < 1000 ? j->timeout_ms / 2 : 1000) : 1000;
    if (left < least || left <= 0) {
        j->ex.status = TTFLEET__STATUS__TIMEOUT;
        j->ex.exit_code = -1;
        snprintf(j->ex.msg, sizeof j->ex.msg,
                 "waited %lld ms for a free guest thread of host %s: not started",
                 (long long)waited, j->cfg.host_id);
        return;
    }
    if (j->kind == J_EXEC)
        j->timeout_ms = left;
    /* the engine's backend (guestop_submit took only VMs that have one) */
    if (j->kind == J_EXEC)
        j->vm.guest->exec(&j->cfg, &j->vm, j->argv, j->in, j->in_len, j->timeout_ms, &j->ex);
    else
        j->vm.guest->file(&j->cfg, &j->vm, j->kind == J_PUT, j->path, &j->data, &j->len, j->file_ms,
                          &j->ex);
    if (j->kind == J_GET && j->ex.status == TTFLEET__STATUS__OK)
        EVP_Digest(j->data ? j->data : (unsigned char *)"", j->len, j->sha, NULL, EVP_sha256(),
                   NULL);
}

/* ---- the loop side ---- */

guestop_t *guestop_new(const guestop_config_t *cfg)
{
    guestop_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->cfg = *cfg;
    self->jobs = jobs_new(GUESTOP_THREADS);
    self->per_vm = calloc(TT_VMID_MAX + 1, 1);
    self->gone = calloc(TT_VMID_MAX + 1, sizeof *self->gone);
    self->out = zlist_new();
    if (!self->jobs || !self->per_vm || !self->gone || !self->out) {
        guestop_destroy(&self);
        return NULL;
    }
    return self;
}

static void s_drop_job(void *arg)
{
    s_job_t *j = arg;
    s_job_free(j);
}

void guestop_destroy(guestop_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    guestop_t *self = *self_p;
    jobs_destroy(&self->jobs, s_drop_job);
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        s_xfer_free(&self->xfers[i]);
    if (self->out) {
        zframe_t *f;
        while ((f = zlist_pop(self->out)))
            zframe_destroy(&f);
        zlist_destroy(&self->out);
    }
    free(self->per_vm);
    free(self->gone);
    free(self);
    *self_p = NULL;
}

static s_xfer_t **s_xfer_find(guestop_t *self, const char *id)
{
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && strcmp(self->xfers[i]->id, id) == 0)
            return &self->xfers[i];
    return NULL;
}

/* A free transfer slot for vm_id, or NULL (limits) with the reason. */
static s_xfer_t **s_xfer_slot(guestop_t *self, uint32_t vm_id, char *why, size_t len)
{
    s_xfer_t **free_slot = NULL;
    int on_vm = 0;
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++) {
        if (!self->xfers[i]) {
            if (!free_slot)
                free_slot = &self->xfers[i];
        } else if (self->xfers[i]->vm_id == vm_id)
            on_vm++;
    }
    if (on_vm >= GUESTOP_XFERS_PER_VM) {
        snprintf(why, len, "VM %u has %d copies in progress (limit %d); try again later", vm_id,
                 on_vm, GUESTOP_XFERS_PER_VM);
        return NULL;
    }
    if (!free_slot)
        snprintf(why, len, "host %s has %d copies in progress (limit); try again later",
                 self->cfg.host_id, GUESTOP_XFERS_MAX);
    return free_slot;
}

static int s_job_room(guestop_t *self, uint32_t vm_id, char *why, size_t len)
{
    if (self->pending >= GUESTOP_JOBS_MAX) {
        snprintf(why, len, "host %s runs %zu guest operations (limit %d); try again later",
                 self->cfg.host_id, self->pending, GUESTOP_JOBS_MAX);
        return -1;
    }
    if (self->per_vm[vm_id] >= GUESTOP_JOBS_PER_VM) {
        snprintf(why, len, "VM %u runs %u guest operations (limit %d); try again later", vm_id,
                 self->per_vm[vm_id], GUESTOP_JOBS_PER_VM);
        return -1;
    }
    return 0;
}

static void s_job_start(guestop_t *self, s_job_t *j)
{
    j->queued_ms = tt_mono_ms();
    if (jobs_submit(self->jobs, s_run, j)) {
        s_answer(self, j->op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        s_job_free(j);
        return;
    }
    self->pending++;
    self->per_vm[j->vm_id]++;
}

static s_job_t *s_job_new(guestop_t *self, s_kind_t kind, uint64_t op_id, uint32_t vm_id,
                          const guestop_vm_t *vm)
{
    s_job_t *j = calloc(1, sizeof *j);
    if (!j)
        return NULL;
    j->cfg = self->cfg;
    j->kind = kind;
    j->op_id = op_id;
    j->vm_id = vm_id;
    j->vm = *vm;
    j->gone = self->gone[vm_id];
    return j;
}

static void s_exec_submit(guestop_t *self, uint64_t op_id, const Ttfleet__EnvExec *e,
                          const guestop_vm_t *vm)
{
    char why[256];
    if (e->exec_id && *e->exec_id) {
        for (int i = 0; i < GUESTOP_RESULTS_MAX; i++) {
            s_result_t *r = self->results[i];
            if (r && r->vm_id == e->vm_id && strcmp(r->id, e->exec_id) == 0) {
                s_exec_answer(self, op_id, TTFLEET__STATUS__OK, "", r->vm_id, &r->ex, r->id,
                              e->stdout_offset, e->stderr_offset);
                return;
            }
        }
        snprintf(why, sizeof why,
                 "no output kept under exec_id %s for VM %u (kept %d s after the command)",
                 e->exec_id, e->vm_id, GUESTOP_KEEP_MS / 1000);
        s_answer(self, op_id, TTFLEET__STATUS__NOT_FOUND, why);
        return;
    }
    if (s_job_room(self, e->vm_id, why, sizeof why)) {
        s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
        return;
    }
    s_job_t *j = s_job_new(self, J_EXEC, op_id, e->vm_id, vm);
    if (j) {
        j->argv = calloc(e->n_argv + 1, sizeof *j->argv);
        for (size_t i = 0; j->argv && i < e->n_argv; i++)
            if (!(j->argv[i] = strdup(e->argv[i] ? e->argv[i] : "")))
                break;
        if (e->stdin.len && (j->in = malloc(e->stdin.len))) {
            memcpy(j->in, e->stdin.data, e->stdin.len);
            j->in_len = e->stdin.len;
        }
        j->timeout_ms = (int)(e->timeout_s ? e->timeout_s : TT_EXEC_TIMEOUT_DEFAULT) * 1000;
    }
    if (!j || !j->argv || (e->n_argv && !j->argv[e->n_argv - 1]) || (e->stdin.len && !j->in)) {
        s_job_free(j);
        s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        return;
    }
    s_job_start(self, j);
}

static void s_copy_submit(guestop_t *self, uint64_t op_id, const Ttfleet__EnvCopy *c,
                          const guestop_vm_t *vm, int64_t now)
{
    char why[300];
    bool fresh = !c->transfer_id || !*c->transfer_id;
    s_xfer_t **xp = fresh ? NULL : s_xfer_find(self, c->transfer_id);
    s_xfer_t *x = xp ? *xp : NULL;
    if (!fresh && (!x || x->vm_id != c->vm_id || x->dir != (int)c->direction ||
                   strcmp(x->path, c->path) != 0)) {
        snprintf(why, sizeof why,
                 "no copy %s of %s in progress for VM %u (a copy idle for %d s is dropped)",
                 c->transfer_id, c->path, c->vm_id, GUESTOP_XFER_IDLE_MS / 1000);
        s_answer(self, op_id, TTFLEET__STATUS__NOT_FOUND, why);
        return;
    }
    if (c->direction == TTFLEET__COPY_DIRECTION__COPY_GET) {
        if (x) {
            x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
            s_copy_answer(self, op_id, x, c->offset, c->max_bytes);
            if (c->offset + (c->max_bytes ? c->max_bytes : TT_COPY_CHUNK_MAX) >= x->len)
                s_xfer_free(xp); /* the last chunk went out */
            return;
        }
        if (!s_xfer_slot(self, c->vm_id, why, sizeof why) ||
            s_job_room(self, c->vm_id, why, sizeof why)) {
            s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
            return;
        }
        s_job_t *j = s_job_new(self, J_GET, op_id, c->vm_id, vm);
        if (!j || !(j->path = strdup(c->path))) {
            s_job_free(j);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        j->max_bytes = c->max_bytes;
        s_job_start(self, j);
        return;
    }
    /* PUT */
    if (c->last && s_job_room(self, c->vm_id, why, sizeof why)) {
        s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
        return;
    }
    if (!x) {
        xp = s_xfer_slot(self, c->vm_id, why, sizeof why);
        if (!xp) {
            s_answer(self, op_id, TTFLEET__STATUS__UNAVAILABLE, why);
            return;
        }
        x = calloc(1, sizeof *x);
        if (!x || s_new_id(x->id) || !(x->path = strdup(c->path))) {
            s_xfer_free(&x);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        x->vm_id = c->vm_id;
        x->dir = TTFLEET__COPY_DIRECTION__COPY_PUT;
        *xp = x;
    }
    if (c->offset != x->len) {
        snprintf(why, sizeof why, "chunk at offset %llu, but %zu bytes were received",
                 (unsigned long long)c->offset, x->len);
        s_answer(self, op_id, TTFLEET__STATUS__BAD_REQUEST, why);
        return;
    }
    if (x->len + c->data.len > TT_COPY_FILE_MAX) { /* tt_copy_valid refuses it already */
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__TOO_LARGE, "the file would pass 64 MiB");
        return;
    }
    if (x->len + c->data.len > x->cap) {
        size_t ncap = x->cap ? x->cap : (1u << 20);
        while (ncap < x->len + c->data.len)
            ncap *= 2;
        if (ncap > TT_COPY_FILE_MAX)
            ncap = TT_COPY_FILE_MAX;
        unsigned char *nb = realloc(x->buf, ncap);
        if (!nb) {
            s_xfer_free(xp);
            s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
            return;
        }
        x->buf = nb;
        x->cap = ncap;
    }
    if (c->data.len)
        memcpy(x->buf + x->len, c->data.data, c->data.len);
    x->len += c->data.len;
    x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
    if (!c->last) {
        s_copy_answer(self, op_id, x, x->len, 0);
        return;
    }
    unsigned char sha[32];
    EVP_Digest(x->buf ? x->buf : (unsigned char *)"", x->len, sha, NULL, EVP_sha256(), NULL);
    if (c->total_size != x->len || memcmp(sha, c->sha256.data, 32) != 0) {
        snprintf(why, sizeof why,
                 "the %zu bytes received for %s do not have the sha256 (or size) given; nothing "
                 "was written",
                 x->len, x->path);
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__CHECKSUM_MISMATCH, why);
        return;
    }
    s_job_t *j = s_job_new(self, J_PUT, op_id, c->vm_id, vm);
    if (!j) {
        s_xfer_free(xp);
        s_answer(self, op_id, TTFLEET__STATUS__WORKER_FAILED, "out of memory");
        return;
    }
    j->path = x->path;
    j->data = x->buf;
    j->len = x->len;
    memcpy(j->sha, sha, 32);
    x->path = NULL;
    x->buf = NULL;
    s_xfer_free(xp);
    s_job_start(self, j);
}

void guestop_submit(guestop_t *self, Ttfleet__WorkerCommand *cmd, const guestop_vm_t *vm)
{
    char why[300];
    uint64_t op_id = cmd->op_id;
    uint32_t vm_id = cmd->exec ? cmd->exec->vm_id : cmd->copy ? cmd->copy->vm_id : 0;
    int st = TTFLEET__STATUS__OK;
    if (!cmd->exec == !cmd->copy) {
        st = TTFLEET__STATUS__BAD_REQUEST;
        snprintf(why, sizeof why, "give one of exec and copy");
    } else if (cmd->exec ? tt_exec_valid(cmd->exec, why, sizeof why)
                         : tt_copy_valid(cmd->copy, why, sizeof why))
        st = TTFLEET__STATUS__BAD_REQUEST;
    else if (vm_id < TT_VMID_MIN || vm_id > TT_VMID_MAX) {
        st = TTFLEET__STATUS__BAD_REQUEST;
        snprintf(why, sizeof why, "VM id %u out of range", vm_id);
    } else if (!vm) {
        st = TTFLEET__STATUS__NOT_FOUND;
        snprintf(why, sizeof why, "host %s has no VM %u", self->cfg.host_id, vm_id);
    } else if (vm->state != TTFLEET__VM_STATE__VM_RUNNING) {
        st = TTFLEET__STATUS__INVALID_STATE;
        snprintf(why, sizeof why, "VM %u is %s on host %s: exec and copy need it running", vm_id,
                 tt_vm_state_name(vm->state), self->cfg.host_id);
    } else if (!vm->guest) {
        st = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(why, sizeof why, "VM %u runs on engine %s, which has no guest to enter", vm_id,
                 vm->engine);
    } else if (vm->guest->check) {
        st = vm->guest->check(&self->cfg, vm, vm_id, why, sizeof why);
    }
    if (st == TTFLEET__STATUS__OK) {
        if (cmd->exec)
            s_exec_submit(self, op_id, cmd->exec, vm);
        else
            s_copy_submit(self, op_id, cmd->copy, vm, tt_mono_ms());
    } else
        s_answer(self, op_id, st, why);
    ttfleet__worker_command__free_unpacked(cmd, NULL);
}

/* The loop takes a finished job back. */
static void s_done(guestop_t *self, s_job_t *j, int64_t now)
{
    guestop_exec_t *ex = &j->ex;
    if (j->gone != self->gone[j->vm_id]) {
        /* deleted (or destroyed) while the job ran: say so, keep nothing */
        char why[200];
        snprintf(why, sizeof why, "VM %u on host %s was stopped or deleted while the %s ran",
                 j->vm_id, self->cfg.host_id, j->kind == J_EXEC ? "command" : "copy");
        if (j->kind == J_EXEC) {
            ex->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
            snprintf(ex->msg, sizeof ex->msg, "%s", why);
            s_exec_answer(self, j->op_id, ex->status, ex->msg, j->vm_id, ex, NULL, 0, 0);
        } else
            s_answer(self, j->op_id, TTFLEET__STATUS__GUEST_UNREACHABLE, why);
        return;
    }
    if (j->kind == J_EXEC) {
        const char *id = NULL;
        if (ex->out_len > TT_EXEC_PIECE || ex->err_len > TT_EXEC_PIECE) {
            int slot = 0;
            for (int i = 0; i < GUESTOP_RESULTS_MAX; i++) {
                if (!self->results[i]) {
                    slot = i;
                    break;
                }
                if (self->results[i]->expires_ms < self->results[slot]->expires_ms)
                    slot = i; /* the oldest goes if every slot is taken */
            }
            s_result_free(&self->results[slot]);
            s_result_t *r = calloc(1, sizeof *r);
            if (r && s_new_id(r->id) == 0) {
                r->vm_id = j->vm_id;
                r->expires_ms = now + GUESTOP_KEEP_MS;
                r->ex = *ex; /* takes the buffers */
                j->ex.out = j->ex.err = NULL;
                self->results[slot] = r;
                ex = &r->ex;
                id = r->id;
            } else
                free(r);
        }
        s_exec_answer(self, j->op_id, ex->status, ex->msg, j->vm_id, ex, id, 0, 0);
        return;
    }
    if (ex->status != TTFLEET__STATUS__OK) {
        s_answer(self, j->op_id, ex->status, ex->msg);
        return;
    }
    if (j->kind == J_PUT) {
        Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
        cc.transfer_id = "";
        cc.offset = j->len;
        cc.eof = true;
        cc.total_size = j->len;
        cc.sha256.data = j->sha;
        cc.sha256.len = 32;
        Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
        rep.op_id = j->op_id;
        rep.message = "";
        rep.copy = &cc;
        s_queue(self, &rep);
        return;
    }
    /* GET: keep the file for the chunks that follow */
    char why[300];
    s_xfer_t **xp = s_xfer_slot(self, j->vm_id, why, sizeof why);
    s_xfer_t *x = xp ? calloc(1, sizeof *x) : NULL;
    if (!x || s_new_id(x->id)) {
        free(x);
        s_answer(self, j->op_id, TTFLEET__STATUS__UNAVAILABLE, xp ? "out of memory" : why);
        return;
    }
    x->vm_id = j->vm_id;
    x->dir = TTFLEET__COPY_DIRECTION__COPY_GET;
    x->path = j->path;
    x->buf = j->data;
    x->len = x->cap = j->len;
    memcpy(x->sha, j->sha, 32);
    x->idle_ms = now + GUESTOP_XFER_IDLE_MS;
    j->path = NULL;
    j->data = NULL;
    *xp = x;
    s_copy_answer(self, j->op_id, x, 0, j->max_bytes);
    if ((size_t)(j->max_bytes ? j->max_bytes : TT_COPY_CHUNK_MAX) >= x->len)
        s_xfer_free(xp);
}

void guestop_flush(guestop_t *self, int64_t now_ms)
{
    s_job_t *j;
    while ((j = jobs_reap(self->jobs))) {
        self->pending--;
        if (self->per_vm[j->vm_id])
            self->per_vm[j->vm_id]--;
        s_done(self, j, now_ms);
        s_job_free(j);
    }
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        if (self->results[i] && self->results[i]->expires_ms <= now_ms)
            s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && self->xfers[i]->idle_ms <= now_ms)
            s_xfer_free(&self->xfers[i]);
}

zframe_t *guestop_pop(guestop_t *self)
{
    return zlist_pop(self->out);
}

size_t guestop_pending(const guestop_t *self)
{
    return self->pending;
}

void guestop_vm_gone(guestop_t *self, uint32_t vm_id)
{
    if (vm_id > TT_VMID_MAX)
        return;
    self->gone[vm_id]++;
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        if (self->results[i] && self->results[i]->vm_id == vm_id)
            s_result_free(&self->results[i]);
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        if (self->xfers[i] && self->xfers[i]->vm_id == vm_id)
            s_xfer_free(&self->xfers[i]);
}

size_t guestop_kept(const guestop_t *self)
{
    size_t n = 0;
    for (int i = 0; i < GUESTOP_RESULTS_MAX; i++)
        n += self->results[i] != NULL;
    for (int i = 0; i < GUESTOP_XFERS_MAX; i++)
        n += self->xfers[i] != NULL;
    return n;
}
