/*
 * engine_qemu_snap: the qemu engine's memory snapshots (snapshot.h,
 * docs/SNAPSHOTS.md).
 *
 * Saves and restores are QEMU migrations to and from a file through
 * `exec:cat`: a save is `stop` + `migrate "exec:cat > FILE"`, a restore a
 * QEMU started with -incoming defer -S and `migrate-incoming "exec:cat
 * FILE"` + `cont`. A template's RAM is not in its state file: the VM ran
 * with its RAM in a shared file (memory-backend-file,share=on) and the
 * migration capability x-ignore-shared leaves that block out of the
 * stream; a clone maps the same file copy-on-write (share=off), so pages
 * no clone wrote stay shared in the page cache. A suspend streams the whole
 * RAM. Nothing here waits on a migration: begin issues the QMP commands,
 * poll asks query-migrate once and moves one step on.
 *
 * The migration URIs are shell commands QEMU runs with /bin/sh -c, so
 * every path in them must be of [A-Za-z0-9/._+-]; anything else is
 * refused with a reason.
 */
#define _GNU_SOURCE
#include "engine_qemu_snap.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"
#include "spawn.h"
#include "ttcrash.h"

#define S_QUIT_MS 3000
#define S_QMP_PROBE_MS 500
#define S_IMG_MS 30000

enum { P_NONE = 0, P_WAIT_QMP, P_MIGRATING, P_QUITTING, P_FINISH, P_DONE };

static bool s_shell_safe(const char *p)
{
    if (!p[0])
        return false;
    for (const char *c = p; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+-", *c))
            return false;
    return true;
}

static int s_vm_path(const engine_ctx_t *ctx, const vm_t *vm, const char *leaf, char *buf,
                     size_t len, char *err, size_t errlen)
{
    if (engine_vm_path(ctx, vm->vm_id, leaf, buf, len)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    if (!s_shell_safe(buf)) {
        snprintf(err, errlen,
                 "path %.200s holds a character other than [A-Za-z0-9/._+-]: "
                 "snapshots cannot name it to QEMU",
                 buf);
        return -1;
    }
    return 0;
}

/* "<root>/<leaf>" -> root, leaf (each 1024 bytes, as op->dir) */
static void s_split(const char *dir, char *root, char *leaf)
{
    const char *slash = strrchr(dir, '/');
    if (!slash) {
        snprintf(root, 1024, ".");
        snprintf(leaf, 1024, "%s", dir);
        return;
    }
    snprintf(root, 1024, "%.*s", (int)(slash - dir), dir);
    snprintf(leaf, 1024, "%s", slash + 1);
}

static bool s_running(const vm_t *vm)
{
    return vm->pid && proc_alive(vm->pid, vm->start_time);
}

/* One QMP command built by jansson (so every string is escaped). */
static int s_cmd(const engine_ctx_t *ctx, const vm_t *vm, json_t *cmd, int timeout_ms, char *out,
                 size_t outlen, char *err, size_t errlen)
{
    char *text = cmd ? json_dumps(cmd, JSON_COMPACT) : NULL;
    json_decref(cmd);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = engine_qemu_qmp(ctx, vm, text, timeout_ms, out, outlen, err, errlen);
    free(text);
    return rc;
}

static int s_ignore_shared(const engine_ctx_t *ctx, const vm_t *vm, bool on, int timeout_ms,
                           char *err, size_t errlen)
{
    return s_cmd(ctx, vm,
                 json_pack("{s:s, s:{s:[{s:s, s:b}]}}", "execute", "migrate-set-capabilities",
                           "arguments", "capabilities", "capability", "x-ignore-shared", "state",
                           on),
                 timeout_ms, NULL, 0, err, errlen);
}

static int s_migrate(const engine_ctx_t *ctx, const vm_t *vm, const char *verb, const char *file,
                     char *err, size_t errlen)
{
    char uri[4300];
    snprintf(uri, sizeof uri, "exec:cat %s %s", strcmp(verb, "migrate") == 0 ? ">" : "", file);
    return s_cmd(ctx, vm, json_pack("{s:s, s:{s:s}}", "execute", verb, "arguments", "uri", uri),
                 SNAP_QMP_MS, NULL, 0, err, errlen);
}

/* query-migrate's status ("active", "completed", "failed", ...); for a
 * failure its error-desc into why. 0 / -1 (no answer). */
static int s_migration(const engine_ctx_t *ctx, const vm_t *vm, char *status, size_t len, char *why,
                       size_t whylen, char *err, size_t errlen)
{
    char ans[8192];
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"query-migrate\"}", SNAP_QMP_MS, ans, sizeof ans,
                        err, errlen))
        return -1;
    json_t *j = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
    json_t *r = json_object_get(j, "return");
    const char *s = json_string_value(json_object_get(r, "status"));
    const char *d = json_string_value(json_object_get(r, "error-desc"));
    snprintf(status, len, "%s", s ? s : "none");
    snprintf(why, whylen, "%s", d ? d : "");
    json_decref(j);
    return 0;
}

static void s_kill(const engine_ctx_t *ctx, vm_t *vm)
{
    if (vm->pid && proc_alive(vm->pid, vm->start_time)) {
        kill(vm->pid, SIGKILL);
        spawn_wait_gone(vm->pid, vm->start_time, 2000);
    }
    if (vm->pid)
        engine_qemu_forget(ctx, vm);
}

static void s_op_start(snap_op_t *op, int kind)
{
    op->kind = kind;
    op->phase = P_NONE;
    op->started_ms = tt_mono_ms();
    op->deadline_ms = op->started_ms + SNAP_SAVE_MS;
    op->incoming_ms = op->migrated_ms = op->done_ms = 0;
    op->state_bytes = 0;
}

static int s_need_version(const engine_ctx_t *ctx, char *err, size_t errlen)
{
    if (!ctx->qemu || !ctx->qemu_version || !ctx->qemu_version[0]) {
        snprintf(err, errlen, "snapshots need the QEMU version (qemu --version); none known");
        return -1;
    }
    /* the migration's `cat` runs as QEMU's user, and the state directory
     * is the worker's (0750): passing file descriptors over QMP would lift
     * this */
    if (ctx->vm_user) {
        snprintf(err, errlen,
                 "snapshots do not work with --vm-user: QEMU's migration stream "
                 "could not reach the state directory");
        return -1;
    }
    return 0;
}

/* ---- begin ---- */

int qsnap_template_boot(const engine_ctx_t *ctx, vm_t *vm, const char *dir, char *err,
                        size_t errlen)
{
    char ram[4200];
    if (s_need_version(ctx, err, errlen))
        return -1;
    snprintf(ram, sizeof ram, "%s/ram", dir);
    if (!s_shell_safe(ram)) {
        snprintf(err, errlen, "template path %.200s holds a character other than [A-Za-z0-9/._+-]",
                 dir);
        return -1;
    }
    struct stat sb;
    if (stat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "template directory %.200s does not exist", dir);
        return -1;
    }
    unlink(ram); /* QEMU creates it at the VM's size */
    qemu_boot_t boot = {.kind = QBOOT_TEMPLATE, .ram_file = ram};
    return engine_qemu_spawn(ctx, vm, &boot, err, errlen);
}

/* The VM's RAM is the backend ram0 (query-memdev): a QEMU started with
 * another RAM layout (a plain -m) could be saved but never restored by
 * this engine's command line, so it is refused before anything stops. */
static int s_has_ram0(const engine_ctx_t *ctx, const vm_t *vm, char *err, size_t errlen)
{
    char ans[8192];
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"query-memdev\"}", SNAP_QMP_MS, ans, sizeof ans,
                        err, errlen))
        return -1;
    json_t *j = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
    json_t *list = json_object_get(j, "return"), *m;
    size_t i;
    bool found = false;
    json_array_foreach(list, i, m)
    {
        const char *id = json_string_value(json_object_get(m, "id"));
        found |= id && strcmp(id, "ram0") == 0;
    }
    json_decref(j);
    if (!found) {
        snprintf(err, errlen,
                 "qemu of vm %u runs without the RAM backend ram0 (started by an older "
                 "worker): restart it before a snapshot",
                 vm->vm_id);
        return -1;
    }
    return 0;
}

/* stop + migrate to file: the common begin of a template save and a
 * suspend. */
static int s_save_begin(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, const char *file,
                        bool ignore_shared, char *err, size_t errlen)
{
    if (!s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u is not running", vm->vm_id);
        return -1;
    }
    if (s_has_ram0(ctx, vm, err, errlen))
        return -1;
    /* the file QEMU's `cat` writes, made here (mode 0640) */
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", file, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    char e2[256];
    if (s_ignore_shared(ctx, vm, ignore_shared, SNAP_QMP_MS, err, errlen) ||
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"stop\"}", SNAP_QMP_MS, NULL, 0, err, errlen))
        goto fail;
    if (s_migrate(ctx, vm, "migrate", file, err, errlen)) {
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, e2, sizeof e2);
        goto fail;
    }
    op->phase = P_MIGRATING;
    tt_crash_point("worker.snap_mid_save");
    return 0;
fail:
    unlink(file);
    return -1;
}

int qsnap_template_save(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    char ram[4200], state[4200];
    s_op_start(op, SNAP_TEMPLATE_SAVE);
    if (s_need_version(ctx, err, errlen))
        return -1;
    snprintf(ram, sizeof ram, "%s/ram", op->dir);
    snprintf(state, sizeof state, "%s/state", op->dir);
    struct stat sb;
    if (!s_shell_safe(state) || stat(ram, &sb) ||
        (uint64_t)sb.st_size != (uint64_t)vm->mem_mib << 20) {
        snprintf(err, errlen,
                 "vm %u was not booted as a template into %.200s (no %u MiB ram file there)",
                 vm->vm_id, op->dir, vm->mem_mib);
        return -1;
    }
    return s_save_begin(ctx, vm, op, state, true, err, errlen);
}

int qsnap_suspend(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    char file[4096];
    s_op_start(op, SNAP_SUSPEND);
    if (s_need_version(ctx, err, errlen) ||
        s_vm_path(ctx, vm, "suspend.partial", file, sizeof file, err, errlen))
        return -1;
    /* the whole RAM goes into the stream, whatever backs it */
    return s_save_begin(ctx, vm, op, file, false, err, errlen);
}

int qsnap_clone_restore(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    s_op_start(op, SNAP_CLONE_RESTORE);
    if (s_need_version(ctx, err, errlen))
        return -1;
    if (!ctx->qemu_img) {
        snprintf(err, errlen, "qemu-img is not installed (Debian package qemu-utils)");
        return -1;
    }
    /* the template: complete, of this QEMU, of the VM's size */
    char root[1024], key[1024];
    s_split(op->dir, root, key);
    snap_tmpl_t t;
    if (snapstore_get(root, key, ctx->qemu_version, &t) || !t.usable) {
        snprintf(err, errlen, "template %.200s is not usable: %s", op->dir, t.reason);
        return -1;
    }
    if (t.cpu != vm->cpu || t.mem_mib != vm->mem_mib) {
        snprintf(err, errlen, "template %s is for %u cpu / %u MiB, vm %u has %u / %u", key, t.cpu,
                 t.mem_mib, vm->vm_id, vm->cpu, vm->mem_mib);
        return -1;
    }
    char ram[1200], base[1200], vms[4096], dir[4096], disk[4096], tmp[4200];
    snprintf(ram, sizeof ram, "%s/ram", op->dir);
    snprintf(base, sizeof base, "%s/disk.qcow2", op->dir);
    snprintf(vms, sizeof vms, "%s/vms", ctx->state_dir);
    if (!s_shell_safe(ram) || s_vm_path(ctx, vm, NULL, dir, sizeof dir, err, errlen) ||
        s_vm_path(ctx, vm, "disk.qcow2", disk, sizeof disk, err, errlen)) {
        if (!s_shell_safe(ram))
            snprintf(err, errlen,
                     "template path %.200s holds a character other than "
                     "[A-Za-z0-9/._+-]",
                     op->dir);
        return -1;
    }
    if ((mkdir(vms, 0750) && errno != EEXIST) || (mkdir(dir, 0750) && errno != EEXIST)) {
        snprintf(err, errlen, "create %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (lstat(disk, &sb) == 0) {
        snprintf(err, errlen, "vm %u already has a disk: a clone starts from the template's",
                 vm->vm_id);
        return -1;
    }
    /* the template's disk as the backing file, at its size (the guest in
     * the template saw that size) */
    snprintf(tmp, sizeof tmp, "%s.new", disk);
    unlink(tmp);
    char *argv[] = {
        (char *)ctx->qemu_img, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base, tmp, NULL};
    if (spawn_run(argv, S_IMG_MS, err, errlen)) {
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, disk)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (!op->vmgenid[0] && snap_guid(op->vmgenid)) {
        snprintf(err, errlen, "no random bytes for a VM generation ID");
        return -1;
    }
    qemu_boot_t boot = {.kind = QBOOT_CLONE, .ram_file = ram, .vmgenid = op->vmgenid};
    if (engine_qemu_spawn(ctx, vm, &boot, err, errlen))
        return -1;
    op->phase = P_WAIT_QMP;
    return 0;
}

bool qsnap_suspended(const engine_ctx_t *ctx, const vm_t *vm)
{
    char file[4096];
    struct stat sb;
    return engine_vm_path(ctx, vm->vm_id, "suspend.state", file, sizeof file) == 0 &&
           stat(file, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size > 0;
}

int qsnap_resume_saved(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    char file[4096];
    s_op_start(op, SNAP_RESUME);
    if (s_need_version(ctx, err, errlen) ||
        s_vm_path(ctx, vm, "suspend.state", file, sizeof file, err, errlen))
        return -1;
    if (s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u is running: nothing to resume", vm->vm_id);
        return -1;
    }
    if (!qsnap_suspended(ctx, vm)) {
        snprintf(err, errlen, "vm %u has no suspend file", vm->vm_id);
        return -1;
    }
    if (!op->vmgenid[0] && snap_guid(op->vmgenid)) {
        snprintf(err, errlen, "no random bytes for a VM generation ID");
        return -1;
    }
    qemu_boot_t boot = {.kind = QBOOT_RESUME, .vmgenid = op->vmgenid};
    if (engine_qemu_spawn(ctx, vm, &boot, err, errlen))
        return -1;
    op->phase = P_WAIT_QMP;
    return 0;
}

/* ---- poll ---- */

static int s_fsync_file(const char *path, char *err, size_t errlen);

/* A suspend's stream is complete and QEMU still runs (stopped): make the
 * file durable under its final name before QEMU is asked to quit, so a
 * crash after QEMU's exit never leaves the memory in a file nothing
 * reads. 0 / -1 (the VM is then given back running by the abort). */
static int s_suspend_commit(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err,
                            size_t errlen)
{
    char dir[4096], from[4200], to[4200];
    struct stat sb;
    if (s_vm_path(ctx, vm, NULL, dir, sizeof dir, err, errlen))
        return -1;
    snprintf(from, sizeof from, "%s/suspend.partial", dir);
    snprintf(to, sizeof to, "%s/suspend.state", dir);
    if (stat(from, &sb) || sb.st_size == 0) {
        snprintf(err, errlen, "suspend file %s is missing or empty", from);
        return -1;
    }
    op->state_bytes = (uint64_t)sb.st_size;
    if (s_fsync_file(from, err, errlen))
        return -1;
    tt_crash_point("worker.snap_suspend_before_rename");
    if (rename(from, to)) {
        snprintf(err, errlen, "rename %s: %s", from, strerror(errno));
        return -1;
    }
    if (s_fsync_file(dir, err, errlen))
        return -1;
    tt_crash_point("worker.snap_suspend_before_quit");
    return 0;
}

/* A restoring QEMU (-incoming defer): once QMP answers, start reading. */
static int s_poll_incoming(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err,
                           size_t errlen)
{
    char file[4200], e2[256];
    if (op->kind == SNAP_CLONE_RESTORE)
        snprintf(file, sizeof file, "%s/state", op->dir);
    else if (s_vm_path(ctx, vm, "suspend.state", file, sizeof file, err, errlen))
        return -1;
    /* the socket may not be there yet: not an error until the deadline */
    if (s_ignore_shared(ctx, vm, op->kind == SNAP_CLONE_RESTORE, S_QMP_PROBE_MS, e2, sizeof e2))
        return SNAP_PENDING;
    op->incoming_ms = tt_mono_ms();
    if (s_migrate(ctx, vm, "migrate-incoming", file, err, errlen))
        return -1;
    op->phase = P_MIGRATING;
    return SNAP_PENDING;
}

int qsnap_poll(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    bool restore = op->kind == SNAP_CLONE_RESTORE || op->kind == SNAP_RESUME;
    char status[64], why[512], e2[256];
    if (op->phase == P_FINISH)
        return SNAP_FINISH;
    if (op->phase == P_DONE)
        return SNAP_DONE;
    if (op->phase == P_QUITTING) {
        waitpid(vm->pid, NULL, WNOHANG);
        if (!s_running(vm)) {
            engine_qemu_forget(ctx, vm);
            op->done_ms = tt_mono_ms();
            op->phase = P_FINISH;
            return SNAP_FINISH;
        }
        if (tt_mono_ms() - op->migrated_ms > S_QUIT_MS)
            kill(vm->pid, SIGKILL); /* saved already: the process only has to end */
        return SNAP_PENDING;
    }
    if (!s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u ended during the %s", vm->vm_id,
                 restore ? "restore" : "save");
        goto fail;
    }
    if (tt_mono_ms() > op->deadline_ms) {
        snprintf(err, errlen, "the %s of vm %u did not complete in %d s",
                 restore ? "restore" : "save", vm->vm_id, SNAP_SAVE_MS / 1000);
        goto fail;
    }
    if (op->phase == P_WAIT_QMP) {
        int rc = s_poll_incoming(ctx, vm, op, err, errlen);
        if (rc < 0)
            goto fail;
        return rc;
    }
    if (op->phase != P_MIGRATING) {
        snprintf(err, errlen, "snapshot operation in an unknown step %d", op->phase);
        goto fail;
    }
    if (s_migration(ctx, vm, status, sizeof status, why, sizeof why, e2, sizeof e2))
        return SNAP_PENDING; /* a busy QEMU: ask again; the deadline bounds it */
    if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
        snprintf(err, errlen, "migration %s: %s", status, why[0] ? why : "no reason given");
        goto fail;
    }
    if (strcmp(status, "completed") != 0)
        return SNAP_PENDING;
    op->migrated_ms = tt_mono_ms();
    if (restore) {
        if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, err, errlen))
            goto fail;
        op->done_ms = tt_mono_ms();
        if (op->kind == SNAP_RESUME) {
            op->phase = P_FINISH;
            return SNAP_FINISH;
        }
        op->phase = P_DONE;
        return SNAP_DONE;
    }
    if (op->kind == SNAP_SUSPEND && s_suspend_commit(ctx, vm, op, err, errlen)) {
        char file[4200];
        if (engine_vm_path(ctx, vm->vm_id, "suspend.state", file, sizeof file) == 0)
            unlink(file);
        goto fail;
    }
    engine_qemu_qmp(ctx, vm, "{\"execute\":\"quit\"}", SNAP_QMP_MS, NULL, 0, e2, sizeof e2);
    op->phase = P_QUITTING;
    return SNAP_PENDING;
fail:
    qsnap_abort(ctx, vm, op);
    return -1;
}

/* ---- finish ---- */

static int s_fsync_file(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd)) {
        snprintf(err, errlen, "fsync %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int qsnap_finish(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    if (op->phase == P_DONE)
        return SNAP_DONE;
    if (op->phase != P_FINISH) {
        snprintf(err, errlen, "snapshot operation not ready to finish (step %d)", op->phase);
        return -1;
    }
    char dir[4096], from[4200], to[4200];
    if (s_vm_path(ctx, vm, NULL, dir, sizeof dir, err, errlen))
        return -1;
    struct stat sb;
    if (op->kind == SNAP_RESUME) {
        /* the VM runs: its suspend file is consumed */
        snprintf(from, sizeof from, "%s/suspend.state", dir);
        unlink(from);
        op->phase = P_DONE;
        return s_fsync_file(dir, err, errlen) ? -1 : SNAP_DONE;
    }
    if (op->kind == SNAP_SUSPEND) {
        /* committed by the poll before QEMU was asked to quit */
        snprintf(to, sizeof to, "%s/suspend.state", dir);
        if (stat(to, &sb) || sb.st_size == 0) {
            snprintf(err, errlen, "suspend file %s is missing or empty", to);
            return -1;
        }
        op->phase = P_DONE;
        return SNAP_DONE;
    }
    if (op->kind != SNAP_TEMPLATE_SAVE) {
        snprintf(err, errlen, "nothing to finish for this operation");
        return -1;
    }
    /* the builder VM's disk becomes the template's base */
    snprintf(from, sizeof from, "%s/disk.qcow2", dir);
    snprintf(to, sizeof to, "%s/disk.qcow2", op->dir);
    if (rename(from, to) && !(errno == ENOENT && stat(to, &sb) == 0)) {
        snprintf(err, errlen, "move %s into the template: %s", from, strerror(errno));
        return -1;
    }
    snap_tmpl_t t;
    memset(&t, 0, sizeof t);
    if (snapstore_key(vm->image, vm->image_digest, vm->cpu, vm->mem_mib, ctx->qemu_version, t.key,
                      sizeof t.key, err, errlen))
        return -1;
    snprintf(t.image, sizeof t.image, "%s", vm->image);
    snprintf(t.image_digest, sizeof t.image_digest, "%s", vm->image_digest);
    snprintf(t.qemu_version, sizeof t.qemu_version, "%s", ctx->qemu_version);
    t.cpu = vm->cpu;
    t.mem_mib = vm->mem_mib;
    char root[1024], leaf[1024];
    s_split(op->dir, root, leaf);
    if (snapstore_commit(root, op->dir, &t, err, errlen))
        return -1;
    op->state_bytes = t.state_bytes;
    /* op->dir now names the complete template (it fits: the temporary
     * name it replaces was longer) */
    char final[sizeof root + SNAP_KEY_MAX + 1];
    snprintf(final, sizeof final, "%s/%s", root, t.key);
    snprintf(op->dir, sizeof op->dir, "%.1023s", final);
    op->phase = P_DONE;
    return SNAP_DONE;
}

void qsnap_abort(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op)
{
    char e2[256], file[4200];
    if (op->kind == SNAP_CLONE_RESTORE || op->kind == SNAP_RESUME) {
        if (op->phase != P_DONE && op->phase != P_FINISH)
            s_kill(ctx, vm); /* a half-restored guest must never run */
    } else if (op->phase == P_MIGRATING && s_running(vm)) {
        /* give the VM back as it was: running */
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"migrate_cancel\"}", SNAP_QMP_MS, NULL, 0, e2,
                        sizeof e2);
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, e2, sizeof e2);
    }
    if (op->kind == SNAP_SUSPEND && op->phase != P_DONE &&
        engine_vm_path(ctx, vm->vm_id, "suspend.partial", file, sizeof file) == 0)
        unlink(file);
    if (op->kind == SNAP_TEMPLATE_SAVE && op->phase != P_DONE) {
        snprintf(file, sizeof file, "%s/state", op->dir);
        unlink(file);
    }
    op->phase = P_NONE;
}
