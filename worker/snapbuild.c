/*
 * snapbuild: making templates, one at a time, never waiting on the loop.
 * See snapbuild.h.
 */
#define _GNU_SOURCE
#include "snapbuild.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <czmq.h>

#include "jobs.h"
#include "net.h"
#include "probe.h"
#include "ttcrash.h"
#include "wire.h"

enum { B_IDLE = 0, B_PULLING, B_BOOTING, B_PROBING, B_SAVING, B_POLLING, B_FINISHING, B_CLEANING };
enum { J_BOOT = 1, J_SAVE, J_POLL, J_FINISH, J_CLEAN };

typedef struct {
    char image[TT_MAX_NAME + 1];
    char digest[VM_DIGEST_MAX];
    char kind[16];
    uint32_t cpu, mem_mib, disk_mib;
    char ready[TT_READY_MAX + 1];
    char key[SNAP_KEY_MAX];
    Ttfleet__VmSpec *spec; /* a copy, for pull_want (catalog images) */
} s_req_t;

typedef struct {
    const engine_ctx_t *ctx;
    int kind;
    vm_t vm;
    snap_op_t op;
    char dir[1024]; /* the template's temporary directory */
    bool bad_state; /* J_CLEAN: also abort a snapshot op in flight */
    int rc;         /* engine result; J_POLL: the poll's answer */
    char err[256];
} s_job_t;

struct snapbuild_t {
    const engine_ctx_t *ctx;
    snapops_t *ops;
    images_t *images;
    pull_t *pull;
    jobs_t *jobs;
    s_req_t q[SNAPBUILD_QUEUE];
    size_t n;
    int state;
    bool job_out;     /* the job is on the pool (or ran inline: inline_done) */
    bool inline_done; /* no pool thread: the job ran in s_submit */
    bool held_image;  /* pull_acquire of the head request's image */
    s_job_t job;
    uint64_t ticket, reserved;
    probe_t *probe;
    int64_t deadline_ms, next_ms, t0_ms;
    char last[300];
};

static void s_job_run(void *arg)
{
    s_job_t *j = arg;
    const engine_t *e = &engine_qemu;
    j->err[0] = '\0';
    switch (j->kind) {
    case J_BOOT:
        j->rc = e->prepare_disk(j->ctx, &j->vm, j->err, sizeof j->err);
        if (j->rc == 0)
            j->rc = e->template_boot(j->ctx, &j->vm, j->dir, j->err, sizeof j->err);
        break;
    case J_SAVE:
        j->rc = e->template_save(j->ctx, &j->vm, &j->op, j->err, sizeof j->err);
        break;
    case J_POLL:
        j->rc = e->snap_poll(j->ctx, &j->vm, &j->op, j->err, sizeof j->err);
        break;
    case J_FINISH:
        j->rc = e->snap_finish(j->ctx, &j->vm, &j->op, j->err, sizeof j->err);
        break;
    case J_CLEAN: {
        char e2[256];
        if (j->bad_state)
            e->snap_abort(j->ctx, &j->vm, &j->op);
        e->stop(j->ctx, &j->vm, e2, sizeof e2);
        j->rc = e->destroy(j->ctx, &j->vm, j->err, sizeof j->err);
        /* an uncommitted template directory (a committed one was renamed) */
        static const char *const files[] = {"ram", "state", "disk.qcow2", "meta.json"};
        for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
            char path[1200];
            snprintf(path, sizeof path, "%.1100s/%s", j->dir, files[i]);
            unlink(path);
        }
        rmdir(j->dir);
        break;
    }
    }
}

snapbuild_t *snapbuild_new(const engine_ctx_t *ctx, snapops_t *ops, images_t *images, pull_t *pull)
{
    snapbuild_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ctx = ctx;
    self->ops = ops;
    self->images = images;
    self->pull = pull;
    self->jobs = jobs_new(1);
    if (!self->jobs) {
        free(self);
        return NULL;
    }
    return self;
}

static void s_req_free(s_req_t *r)
{
    if (r->spec)
        ttfleet__vm_spec__free_unpacked(r->spec, NULL);
    r->spec = NULL;
}

void snapbuild_destroy(snapbuild_t **self_p)
{
    snapbuild_t *self = *self_p;
    if (!self)
        return;
    /* a job running finishes (bounded); what it leaves is swept at the
     * next start, as after a crash */
    jobs_destroy(&self->jobs, NULL);
    probe_destroy(&self->probe);
    for (size_t i = 0; i < self->n; i++)
        s_req_free(&self->q[i]);
    free(self);
    *self_p = NULL;
}

const char *snapbuild_last(const snapbuild_t *self)
{
    return self->last;
}

bool snapbuild_busy(const snapbuild_t *self)
{
    return self->state != B_IDLE && self->state != B_PULLING;
}

/* A copy of spec through its wire form (pull_want keeps nothing of it). */
static Ttfleet__VmSpec *s_spec_copy(const Ttfleet__VmSpec *spec)
{
    size_t len = ttfleet__vm_spec__get_packed_size(spec);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return NULL;
    ttfleet__vm_spec__pack(spec, buf);
    Ttfleet__VmSpec *c = ttfleet__vm_spec__unpack(NULL, len, buf);
    free(buf);
    return c;
}

int snapbuild_want(snapbuild_t *self, const Ttfleet__VmSpec *spec, int *status, char *err,
                   size_t errlen)
{
    *status = TTFLEET__STATUS__BAD_REQUEST;
    if (!(engine_caps_of(spec->engine ? spec->engine : "") & TT_CAP_SNAPSHOTS)) {
        snprintf(err, errlen, "engine '%s' does not take memory snapshots",
                 spec->engine ? spec->engine : "");
        return -1;
    }
    if (engine_snapshot_check(&engine_qemu, self->ctx, err, errlen))
        return -1;
    if (self->ctx->net != NET_USER) {
        snprintf(err, errlen,
                 "templates are made under the user network backend only (this "
                 "host runs another)");
        return -1;
    }
    if (!spec->image || !tt_name_valid(spec->image)) {
        snprintf(err, errlen, "invalid image name");
        return -1;
    }
    if (spec->cpu < 1 || spec->cpu > TT_MAX_CPU || spec->mem_mib < 16 ||
        spec->mem_mib > TT_MAX_MEM_MIB || spec->disk_mib < 1 || spec->disk_mib > TT_MAX_DISK_MIB) {
        snprintf(err, errlen, "cpu %u, mem %u MiB or disk %u MiB out of range", spec->cpu,
                 spec->mem_mib, spec->disk_mib);
        return -1;
    }
    const char *digest = spec->image_digest ? spec->image_digest : "";
    if (*digest && !self->pull) {
        snprintf(err, errlen, "no image cache on this host: catalog image '%s' cannot be fetched",
                 spec->image);
        return -1;
    }
    if (!*digest && !images_has(self->images, spec->image)) {
        images_rescan(self->images);
        if (!images_has(self->images, spec->image)) {
            snprintf(err, errlen, "image '%s' is not present on this host", spec->image);
            return -1;
        }
    }
    const char *ready = spec->ready ? spec->ready : "";
    tt_ready_t rs;
    if (*ready && tt_ready_parse(ready, &rs, err, errlen))
        return -1;
    char key[SNAP_KEY_MAX];
    if (snapops_key(self->ops, spec->image, digest, spec->cpu, spec->mem_mib, key, sizeof key, err,
                    errlen))
        return -1;
    *status = TTFLEET__STATUS__OK;
    if (snapops_find(self->ops, key))
        return 0;
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->q[i].key, key) == 0)
            return 0;
    if (self->n == SNAPBUILD_QUEUE) {
        *status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(err, errlen, "%d templates are being made already: refused", SNAPBUILD_QUEUE);
        return -1;
    }
    s_req_t *r = &self->q[self->n];
    memset(r, 0, sizeof *r);
    snprintf(r->image, sizeof r->image, "%s", spec->image);
    snprintf(r->digest, sizeof r->digest, "%s", digest);
    snprintf(r->kind, sizeof r->kind, "%s", spec->image_kind ? spec->image_kind : "");
    r->cpu = spec->cpu;
    r->mem_mib = spec->mem_mib;
    r->disk_mib = spec->disk_mib;
    snprintf(r->ready, sizeof r->ready, "%s", ready);
    snprintf(r->key, sizeof r->key, "%s", key);
    if (*digest && !(r->spec = s_spec_copy(spec))) {
        *status = TTFLEET__STATUS__WORKER_FAILED;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    self->n++;
    zsys_info("template %s: queued", key);
    return 0;
}

/* A free loopback TCP port (for the builder's probe). 0 if none. */
static uint16_t s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    uint16_t port = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

static void s_submit(snapbuild_t *self, int kind)
{
    self->job.kind = kind;
    self->job.ctx = self->ctx;
    if (jobs_submit(self->jobs, s_job_run, &self->job) == 0) {
        self->job_out = true;
        return;
    }
    /* no thread: run it here (bounded, as every engine call) */
    s_job_run(&self->job);
    self->job_out = true;
    self->inline_done = true;
}

/* The request at the head is over: drop it, release what it held. */
static void s_done(snapbuild_t *self, bool failed, const char *what)
{
    s_req_t *r = &self->q[0];
    snprintf(self->last, sizeof self->last, "template %.160s: %s%.120s", r->key,
             failed ? "failed: " : "", what);
    if (failed)
        zsys_warning("%s", self->last);
    else
        zsys_info("%s", self->last);
    if (self->reserved)
        snapops_unreserve(self->ops, self->reserved);
    self->reserved = 0;
    if (self->held_image)
        pull_release(self->pull, r->digest);
    self->held_image = false;
    probe_destroy(&self->probe);
    s_req_free(r);
    memmove(&self->q[0], &self->q[1], (self->n - 1) * sizeof self->q[0]);
    self->n--;
    self->state = B_IDLE;
}

/* Fail the head request: the builder's QEMU and directory go first. */
static void s_fail(snapbuild_t *self, const char *why)
{
    snprintf(self->last, sizeof self->last, "%.250s", why);
    if (self->state >= B_BOOTING) {
        self->job.bad_state = self->state >= B_SAVING;
        self->state = B_CLEANING;
        s_submit(self, J_CLEAN);
        return;
    }
    s_done(self, true, why);
}

static int s_resolve_ready(snapbuild_t *self, s_req_t *r, tt_ready_t *rs, char *err, size_t errlen)
{
    char text[TT_READY_MAX + 1];
    snprintf(text, sizeof text, "%s", r->ready);
    if (!text[0]) {
        char dir[4200], path[4300];
        if (engine_image_dir(self->ctx, &self->job.vm, dir, sizeof dir) == 0) {
            snprintf(path, sizeof path, "%s/ready", dir);
            FILE *f = fopen(path, "re");
            if (f) {
                if (fgets(text, sizeof text, f))
                    text[strcspn(text, "\r\n")] = '\0';
                fclose(f);
            }
        }
    }
    if (!text[0]) {
        snprintf(err, errlen,
                 "image '%s' has no readiness spec (a template is taken once the "
                 "guest is ready)",
                 r->image);
        return -1;
    }
    if (tt_ready_parse(text, rs, err, errlen))
        return -1;
    if (rs->kind == TT_READY_NONE) {
        snprintf(err, errlen, "readiness 'none' cannot tell when the guest booted");
        return -1;
    }
    return 0;
}

/* The head request's builder VM and template directory; its QEMU boots. */
static void s_begin(snapbuild_t *self)
{
    s_req_t *r = &self->q[0];
    char err[256];
    if (r->digest[0] && self->pull) {
        if (pull_acquire(self->pull, r->digest)) {
            s_done(self, true, "its image left the cache");
            return;
        }
        self->held_image = true;
    }
    if (snapops_find(self->ops, r->key)) {
        s_done(self, false, "already there");
        return;
    }
    uint64_t want = ((uint64_t)r->mem_mib << 20) + (64ull << 20);
    if (snapops_reserve(self->ops, want, err, sizeof err)) {
        s_done(self, true, err);
        return;
    }
    self->reserved = want;
    memset(&self->job, 0, sizeof self->job);
    vm_t *vm = &self->job.vm;
    vm->vm_id = SNAPBUILD_VM_ID;
    snprintf(vm->env, sizeof vm->env, "template/%s", r->image);
    snprintf(vm->image, sizeof vm->image, "%s", r->image);
    snprintf(vm->engine, sizeof vm->engine, "qemu");
    snprintf(vm->image_digest, sizeof vm->image_digest, "%s", r->digest);
    vm->cpu = r->cpu;
    vm->mem_mib = r->mem_mib;
    vm->disk_mib = r->disk_mib;
    snprintf(vm->ip, sizeof vm->ip, "10.10.255.254");
    snprintf(vm->mac, sizeof vm->mac, "52:54:00:ff:ff:fe");
    vm->state = TTFLEET__VM_STATE__VM_STOPPED;
    tt_ready_t rs;
    if (s_resolve_ready(self, r, &rs, err, sizeof err)) {
        s_done(self, true, err);
        return;
    }
    if (rs.kind == TT_READY_SSH || rs.kind == TT_READY_TCP || rs.kind == TT_READY_HTTP) {
        uint16_t port = s_free_port();
        vm->n_ports = 1;
        vm->ports[0].guest = rs.kind == TT_READY_SSH ? 22 : rs.port;
        vm->ports[0].public_port = port;
    }
    probe_target_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.mapped_only = true;
    if (vm->n_ports) {
        t.n_ports = 1;
        t.ports[0].guest = (uint16_t)vm->ports[0].guest;
        t.ports[0].dial = (uint16_t)vm->ports[0].public_port;
    }
    engine_vm_path(self->ctx, vm->vm_id, "console.log", t.console_log, sizeof t.console_log);
    engine_vm_path(self->ctx, vm->vm_id, "qga.sock", t.agent_sock, sizeof t.agent_sock);
    if (snapstore_begin(snapops_root(self->ops), r->key, self->job.dir, sizeof self->job.dir, err,
                        sizeof err)) {
        s_done(self, true, err);
        return;
    }
    self->probe = probe_new(&rs, &t, zclock_mono());
    if (!self->probe) {
        s_done(self, true, "out of memory");
        return;
    }
    self->t0_ms = zclock_mono();
    self->deadline_ms = self->t0_ms + SNAPBUILD_READY_MS;
    self->state = B_BOOTING; /* from here a failure cleans the builder up */
    zsys_info("template %s: builder booting", r->key);
    s_submit(self, J_BOOT);
}

/* A job came back. */
static bool s_reaped(snapbuild_t *self, int64_t now)
{
    s_job_t *j = &self->job;
    char why[300];
    switch (self->state) {
    case B_BOOTING:
        if (j->rc) {
            snprintf(why, sizeof why, "builder boot: %.250s", j->err);
            s_fail(self, why);
            return false;
        }
        self->state = B_PROBING;
        self->next_ms = now;
        return false;
    case B_SAVING:
        if (j->rc) {
            snprintf(why, sizeof why, "save: %.250s", j->err);
            s_fail(self, why);
            return false;
        }
        self->state = B_POLLING;
        self->next_ms = now + SNAP_POLL_MS;
        return false;
    case B_POLLING:
        if (j->rc < 0) {
            snprintf(why, sizeof why, "save: %.250s", j->err);
            s_fail(self, why);
        } else if (j->rc == SNAP_FINISH) {
            self->state = B_FINISHING;
            s_submit(self, J_FINISH);
        } else if (j->rc == SNAP_DONE) {
            self->state = B_FINISHING;
            j->rc = 0;
            return s_reaped(self, now);
        } else {
            self->next_ms = now + SNAP_POLL_MS;
        }
        return false;
    case B_FINISHING: {
        if (j->rc) {
            snprintf(why, sizeof why, "commit: %.250s", j->err);
            s_fail(self, why);
            return false;
        }
        char err[256];
        s_req_t *r = &self->q[0];
        int rc = snapops_added(self->ops, r->key, err, sizeof err);
        /* the builder's directory (its disk moved into the template) goes */
        j->bad_state = false;
        snprintf(why, sizeof why, "made in %lld ms", (long long)(now - self->t0_ms));
        self->state = B_CLEANING;
        snprintf(self->last, sizeof self->last, "%s", rc ? err : why);
        s_submit(self, J_CLEAN);
        return rc == 0;
    }
    case B_CLEANING:
        if (j->rc)
            zsys_warning("template builder: %s", j->err);
        if (strncmp(self->last, "made in", 7) == 0) {
            char last[300];
            snprintf(last, sizeof last, "%s", self->last);
            s_done(self, false, last);
        } else {
            char last[300];
            snprintf(last, sizeof last, "%s", self->last);
            s_done(self, true, last);
        }
        return false;
    }
    return false;
}

bool snapbuild_step(snapbuild_t *self, int64_t now)
{
    bool changed = false;
    if (self->job_out) {
        if (!self->inline_done && !jobs_reap(self->jobs))
            return false;
        self->inline_done = false;
        self->job_out = false;
        changed |= s_reaped(self, now);
        if (self->job_out)
            return changed;
    }
    if (self->state == B_IDLE && self->n) {
        s_req_t *r = &self->q[0];
        if (r->digest[0]) {
            char err[300];
            if (pull_want(self->pull, r->spec, &self->ticket, err, sizeof err)) {
                s_done(self, true, err);
                return changed;
            }
            self->state = B_PULLING;
        } else {
            s_begin(self);
            return changed;
        }
    }
    if (self->state == B_PULLING) {
        s_req_t *r = &self->q[0];
        uint64_t done, total;
        char dir[4200], err[300];
        pull_state_t ps = pull_state(self->pull, r->digest, self->ticket, &done, &total, dir,
                                     sizeof dir, err, sizeof err);
        if (ps == PULL_FAILED)
            s_done(self, true, err);
        else if (ps == PULL_READY)
            s_begin(self);
        return changed;
    }
    if (self->state == B_PROBING) {
        if (now > self->deadline_ms) {
            char why[300];
            snprintf(why, sizeof why, "the builder was not ready within %d s: %.200s",
                     SNAPBUILD_READY_MS / 1000, probe_detail(self->probe));
            s_fail(self, why);
            return changed;
        }
        if (!engine_qemu.is_alive(self->ctx, &self->job.vm)) {
            s_fail(self, "the builder's QEMU ended before it was ready");
            return changed;
        }
        if (now < probe_due(self->probe) && now < self->next_ms + 200)
            return changed;
        self->next_ms = now;
        if (probe_step(self->probe, now) == 1) {
            zsys_info("template %s: builder ready after %lld ms; saving", self->q[0].key,
                      (long long)(now - self->t0_ms));
            memset(&self->job.op, 0, sizeof self->job.op);
            snprintf(self->job.op.dir, sizeof self->job.op.dir, "%s", self->job.dir);
            self->state = B_SAVING;
            s_submit(self, J_SAVE);
        }
        return changed;
    }
    if (self->state == B_POLLING && now >= self->next_ms)
        s_submit(self, J_POLL);
    return changed;
}

int snapbuild_next_ms(const snapbuild_t *self, int64_t now)
{
    if (self->job_out)
        return SNAP_POLL_MS;
    switch (self->state) {
    case B_IDLE:
        return self->n ? 0 : -1;
    case B_PULLING:
        return 100;
    case B_PROBING: {
        int64_t due = probe_due(self->probe);
        int64_t d = due < now + 200 ? due - now : 200;
        return d < 0 ? 0 : (int)d;
    }
    case B_POLLING:
        return self->next_ms > now ? (int)(self->next_ms - now) : 0;
    }
    return SNAP_POLL_MS;
}
