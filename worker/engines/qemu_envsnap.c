/*
 * qemu_envsnap: env snapshots and reset on the qemu engine. See
 * qemu_envsnap.h for the files and the order that makes every crash point
 * safe; docs/SNAPSHOTS.md "Env snapshots and reset" for what is tested.
 *
 * A save is the suspend's migration without the quit: the VM is stopped
 * already (the caller stopped every VM of the env first), migration
 * capability x-ignore-shared is off so the whole RAM goes into the stream,
 * and the VM stays stopped after it (the caller resumes all together).
 * A reset is the resume's restore from the snapshot's state file, over a
 * new disk overlay on the snapshot's layer.
 */
#define _GNU_SOURCE
#include "qemu_envsnap.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine_qemu_snap.h"
#include "proc.h"
#include "spawn.h"
#include "ttcrash.h"

#define S_IMG_MS 30000
#define S_QMP_PROBE_MS 500
#define S_META_MAX (256 * 1024)

enum { S_SAVE = 100, S_RESET };
enum { P_NONE = 0, P_WAIT_QMP, P_MIGRATING, P_DONE };

bool qenv_id_ok(const char *id)
{
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > QENV_ID_MAX || id[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", id[i]))
            return false;
    return true;
}

static bool s_shell_safe(const char *p)
{
    if (!p[0])
        return false;
    for (const char *c = p; *c; c++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._+-", *c))
            return false;
    return true;
}

static bool s_running(const vm_t *vm)
{
    return vm->pid && proc_alive(vm->pid, vm->start_time);
}

static int s_path(const engine_ctx_t *ctx, const vm_t *vm, const char *leaf, char *buf, size_t len,
                  char *err, size_t errlen)
{
    if (engine_vm_path(ctx, vm->vm_id, leaf, buf, len) || !s_shell_safe(buf)) {
        snprintf(err, errlen, "vm %u: its path is too long or not of [A-Za-z0-9/._+-]", vm->vm_id);
        return -1;
    }
    return 0;
}

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

static int s_fsync_path(const char *path, char *err, size_t errlen)
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

/* query-status: 1 running, 0 not running (paused, prelaunch, ...), -1 no answer. */
static int s_guest_running(const engine_ctx_t *ctx, const vm_t *vm, char *err, size_t errlen)
{
    char ans[2048];
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"query-status\"}", SNAP_QMP_MS, ans, sizeof ans,
                        err, errlen))
        return -1;
    json_t *j = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
    json_t *r = json_object_get(json_object_get(j, "return"), "running");
    int rc = json_is_boolean(r) ? json_is_true(r) : -1;
    json_decref(j);
    if (rc < 0)
        snprintf(err, errlen, "query-status answered without running: %.200s", ans);
    return rc;
}

int qenv_stop(const engine_ctx_t *ctx, vm_t *vm, bool *was_paused, char *err, size_t errlen)
{
    char marker[4200];
    *was_paused = false;
    if (!s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u is not running", vm->vm_id);
        return -1;
    }
    if (s_path(ctx, vm, "envsnap.stopped", marker, sizeof marker, err, errlen))
        return -1;
    int r = s_guest_running(ctx, vm, err, errlen);
    if (r < 0)
        return -1;
    if (r == 0) {
        *was_paused = true;
        return 0;
    }
    /* the marker before the stop: a crash after it resumes the VM */
    int fd = open(marker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", marker, strerror(errno));
        return -1;
    }
    close(fd);
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"stop\"}", SNAP_QMP_MS, NULL, 0, err, errlen)) {
        unlink(marker);
        return -1;
    }
    return 0;
}

int qenv_cont(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    char marker[4200];
    if (s_path(ctx, vm, "envsnap.stopped", marker, sizeof marker, err, errlen))
        return -1;
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, err, errlen))
        return -1;
    unlink(marker);
    return 0;
}

/* Copy from to to (a new file, fsynced): copy_file_range (a reflink
 * where the file system has them), read/write where it is refused. */
static int s_copy(const char *from, const char *to, char *err, size_t errlen)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (in < 0 || out < 0) {
        snprintf(err, errlen, "copy %s: %s", in < 0 ? from : to, strerror(errno));
        goto fail;
    }
    for (;;) {
        ssize_t n = copy_file_range(in, NULL, out, NULL, 64u << 20, 0);
        if (n == 0)
            break;
        if (n > 0)
            continue;
        if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
            snprintf(err, errlen, "copy %s: %s", from, strerror(errno));
            goto fail;
        }
        char buf[65536];
        ssize_t r;
        while ((r = read(in, buf, sizeof buf)) > 0)
            if (write(out, buf, (size_t)r) != r) {
                snprintf(err, errlen, "write %s: %s", to, strerror(errno));
                goto fail;
            }
        if (r < 0) {
            snprintf(err, errlen, "read %s: %s", from, strerror(errno));
            goto fail;
        }
        break;
    }
    if (fsync(out)) {
        snprintf(err, errlen, "fsync %s: %s", to, strerror(errno));
        goto fail;
    }
    close(in);
    close(out);
    return 0;
fail:
    if (in >= 0)
        close(in);
    if (out >= 0) {
        close(out);
        unlink(to);
    }
    return -1;
}

/* The disk of a stopped VM (QEMU flushed it at the stop) copied to
 * layers/<id>.qcow2 (through a .tmp name); the VM keeps its own file. */
static int s_freeze_disk(const engine_ctx_t *ctx, vm_t *vm, const char *id, char *err,
                         size_t errlen)
{
    char dir[4096], disk[4200], layers[4200], layer[4400], tmp[4500];
    if (s_path(ctx, vm, NULL, dir, sizeof dir, err, errlen))
        return -1;
    snprintf(disk, sizeof disk, "%s/disk.qcow2", dir);
    snprintf(layers, sizeof layers, "%s/layers", dir);
    snprintf(layer, sizeof layer, "%s/%s.qcow2", layers, id);
    snprintf(tmp, sizeof tmp, "%s.tmp", layer);
    if (mkdir(layers, 0750) && errno != EEXIST) {
        snprintf(err, errlen, "create %s: %s", layers, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (lstat(layer, &sb) == 0) {
        snprintf(err, errlen, "vm %u already has a disk layer for snapshot '%s'", vm->vm_id, id);
        return -1;
    }
    unlink(tmp);
    if (s_copy(disk, tmp, err, errlen))
        return -1;
    if (rename(tmp, layer)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return s_fsync_path(layers, err, errlen);
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

static int s_state_file(const snap_op_t *op, const vm_t *vm, char *buf, size_t len)
{
    return snprintf(buf, len, "%s/vm%u.state", op->dir, vm->vm_id) >= (int)len ? -1 : 0;
}

int qenv_save_begin(const engine_ctx_t *ctx, vm_t *vm, const char *tmpdir, const char *id,
                    snap_op_t *op, char *err, size_t errlen)
{
    char file[1200], uri[1300];
    s_op_start(op, S_SAVE);
    if (!qenv_id_ok(id)) {
        snprintf(err, errlen, "bad snapshot id");
        return -1;
    }
    if (ctx->vm_user) {
        snprintf(err, errlen,
                 "snapshots do not work with --vm-user: QEMU's migration stream "
                 "could not reach the state directory");
        return -1;
    }
    snprintf(op->dir, sizeof op->dir, "%s", tmpdir);
    if (s_state_file(op, vm, file, sizeof file) || !s_shell_safe(file)) {
        snprintf(err, errlen, "snapshot path %.200s is too long or not of [A-Za-z0-9/._+-]",
                 tmpdir);
        return -1;
    }
    if (!s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u is not running", vm->vm_id);
        return -1;
    }
    int r = s_guest_running(ctx, vm, err, errlen);
    if (r != 0) {
        if (r > 0)
            snprintf(err, errlen, "vm %u runs: stop it first (qenv_stop)", vm->vm_id);
        return -1;
    }
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", file, strerror(errno));
        return -1;
    }
    close(fd);
    if (s_freeze_disk(ctx, vm, id, err, errlen)) {
        unlink(file);
        return -1;
    }
    if (s_cmd(ctx, vm,
              json_pack("{s:s, s:{s:[{s:s, s:b}]}}", "execute", "migrate-set-capabilities",
                        "arguments", "capabilities", "capability", "x-ignore-shared", "state", 0),
              SNAP_QMP_MS, NULL, 0, err, errlen))
        goto fail;
    snprintf(uri, sizeof uri, "exec:cat > %s", file);
    if (s_cmd(ctx, vm, json_pack("{s:s, s:{s:s}}", "execute", "migrate", "arguments", "uri", uri),
              SNAP_QMP_MS, NULL, 0, err, errlen))
        goto fail;
    op->phase = P_MIGRATING;
    tt_crash_point("worker.envsnap_mid_save");
    return 0;
fail:
    qenv_save_abort(ctx, vm, tmpdir, id);
    return -1;
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

/* After migrate_cancel: wait (at most SNAP_QMP_MS) until the migration
 * ended, when QEMU has reaped its `cat`, so the state file is not made
 * again after it is removed. */
static void s_migration_settle(const engine_ctx_t *ctx, const vm_t *vm)
{
    int64_t until = tt_mono_ms() + SNAP_QMP_MS;
    char ans[8192], e2[256];
    while (tt_mono_ms() < until) {
        if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"query-migrate\"}", SNAP_QMP_MS, ans,
                            sizeof ans, e2, sizeof e2))
            return;
        json_t *j = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
        const char *st = json_string_value(json_object_get(json_object_get(j, "return"), "status"));
        bool over = !st || strcmp(st, "cancelled") == 0 || strcmp(st, "failed") == 0 ||
                    strcmp(st, "completed") == 0;
        json_decref(j);
        if (over)
            return;
        spawn_sleep_ms(SNAP_POLL_MS);
    }
}

void qenv_save_abort(const engine_ctx_t *ctx, vm_t *vm, const char *tmpdir, const char *id)
{
    char file[1300], layer[4400], e2[256];
    if (s_running(vm) && engine_qemu_qmp(ctx, vm, "{\"execute\":\"migrate_cancel\"}", SNAP_QMP_MS,
                                         NULL, 0, e2, sizeof e2) == 0)
        s_migration_settle(ctx, vm);
    if (snprintf(file, sizeof file, "%s/vm%u.state", tmpdir, vm->vm_id) < (int)sizeof file)
        unlink(file);
    if (qenv_id_ok(id) && engine_vm_path(ctx, vm->vm_id, "layers", layer, 4096) == 0) {
        size_t l = strlen(layer);
        snprintf(layer + l, sizeof layer - l, "/%s.qcow2", id);
        unlink(layer);
    }
}

int qenv_reset_begin(const engine_ctx_t *ctx, vm_t *vm, const char *root, const char *id,
                     snap_op_t *op, char *err, size_t errlen)
{
    char dir[4096], layer[4400], disk[4200], tmp[4300], file[1200];
    s_op_start(op, S_RESET);
    if (!qenv_id_ok(id)) {
        snprintf(err, errlen, "bad snapshot id");
        return -1;
    }
    if (!ctx->qemu_img) {
        snprintf(err, errlen, "qemu-img is not installed (Debian package qemu-utils)");
        return -1;
    }
    if (snprintf(op->dir, sizeof op->dir, "%s/%s", root, id) >= (int)sizeof op->dir ||
        s_state_file(op, vm, file, sizeof file) || !s_shell_safe(file) ||
        s_path(ctx, vm, NULL, dir, sizeof dir, err, errlen)) {
        snprintf(err, errlen, "snapshot path %.200s is too long or not of [A-Za-z0-9/._+-]", root);
        return -1;
    }
    struct stat sb;
    if (stat(file, &sb) || !S_ISREG(sb.st_mode) || sb.st_size == 0) {
        snprintf(err, errlen, "snapshot '%s' has no state of vm %u", id, vm->vm_id);
        return -1;
    }
    snprintf(layer, sizeof layer, "%s/layers/%s.qcow2", dir, id);
    if (stat(layer, &sb) || !S_ISREG(sb.st_mode)) {
        snprintf(err, errlen, "vm %u has no disk layer of snapshot '%s'", vm->vm_id, id);
        return -1;
    }
    snprintf(disk, sizeof disk, "%s/disk.qcow2", dir);
    snprintf(tmp, sizeof tmp, "%s/disk.reset.qcow2.tmp", dir);
    /* the old QEMU ends first: its disk is replaced under it */
    s_kill(ctx, vm);
    unlink(tmp);
    char *argv[] = {(char *)ctx->qemu_img,
                    "create",
                    "-q",
                    "-f",
                    "qcow2",
                    "-F",
                    "qcow2",
                    "-b",
                    layer,
                    tmp,
                    NULL};
    if (spawn_run(argv, S_IMG_MS, err, errlen)) {
        unlink(tmp);
        return -1;
    }
    /* the disk is the snapshot's from here: a crash leaves the VM stopped
     * on it, which a cold start boots */
    if (rename(tmp, disk) || s_fsync_path(dir, err, errlen)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
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

int qenv_poll(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen)
{
    char ans[8192], e2[256], file[1200], uri[1300];
    bool reset = op->kind == S_RESET;
    if (op->phase == P_DONE)
        return SNAP_DONE;
    if (!s_running(vm)) {
        snprintf(err, errlen, "qemu of vm %u ended during the %s", vm->vm_id,
                 reset ? "reset" : "snapshot");
        goto fail;
    }
    if (tt_mono_ms() > op->deadline_ms) {
        snprintf(err, errlen, "the %s of vm %u did not complete in %d s",
                 reset ? "reset" : "snapshot", vm->vm_id, SNAP_SAVE_MS / 1000);
        goto fail;
    }
    if (op->phase == P_WAIT_QMP) {
        /* the socket may not be there yet: not an error until the deadline */
        if (s_cmd(ctx, vm,
                  json_pack("{s:s, s:{s:[{s:s, s:b}]}}", "execute", "migrate-set-capabilities",
                            "arguments", "capabilities", "capability", "x-ignore-shared", "state",
                            0),
                  S_QMP_PROBE_MS, NULL, 0, e2, sizeof e2))
            return SNAP_PENDING;
        op->incoming_ms = tt_mono_ms();
        if (s_state_file(op, vm, file, sizeof file))
            goto fail;
        snprintf(uri, sizeof uri, "exec:cat %s", file);
        if (s_cmd(
                ctx, vm,
                json_pack("{s:s, s:{s:s}}", "execute", "migrate-incoming", "arguments", "uri", uri),
                SNAP_QMP_MS, NULL, 0, err, errlen))
            goto fail;
        op->phase = P_MIGRATING;
        return SNAP_PENDING;
    }
    if (op->phase != P_MIGRATING) {
        snprintf(err, errlen, "env snapshot operation in an unknown step %d", op->phase);
        goto fail;
    }
    if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"query-migrate\"}", SNAP_QMP_MS, ans, sizeof ans,
                        e2, sizeof e2))
        return SNAP_PENDING; /* a busy QEMU: ask again; the deadline bounds it */
    json_t *j = json_loads(ans, JSON_REJECT_DUPLICATES, NULL);
    json_t *r = json_object_get(j, "return");
    const char *s = json_string_value(json_object_get(r, "status"));
    const char *d = json_string_value(json_object_get(r, "error-desc"));
    char status[64];
    snprintf(status, sizeof status, "%s", s ? s : "none");
    if (strcmp(status, "failed") == 0 || strcmp(status, "cancelled") == 0) {
        snprintf(err, errlen, "migration %s: %.300s", status, d ? d : "no reason given");
        json_decref(j);
        goto fail;
    }
    json_decref(j);
    if (strcmp(status, "completed") != 0)
        return SNAP_PENDING;
    op->migrated_ms = tt_mono_ms();
    if (reset) {
        if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, err, errlen))
            goto fail;
    } else {
        struct stat sb;
        if (s_state_file(op, vm, file, sizeof file) || stat(file, &sb) || sb.st_size == 0) {
            snprintf(err, errlen, "state file of vm %u is missing or empty", vm->vm_id);
            goto fail;
        }
        op->state_bytes = (uint64_t)sb.st_size;
    }
    op->done_ms = tt_mono_ms();
    op->phase = P_DONE;
    return SNAP_DONE;
fail:
    if (reset)
        s_kill(ctx, vm); /* a half-restored guest must never run */
    else if (s_running(vm))
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"migrate_cancel\"}", SNAP_QMP_MS, NULL, 0, e2,
                        sizeof e2);
    op->phase = P_NONE;
    return -1;
}

int qenv_commit(const engine_ctx_t *ctx, const char *root, const char *tmpdir, const char *id,
                const uint32_t *ids, size_t n, uint64_t *bytes, char *err, size_t errlen)
{
    char file[1300], final[1200];
    *bytes = 0;
    if (!qenv_id_ok(id) || n == 0) {
        snprintf(err, errlen, "bad snapshot id or no VM");
        return -1;
    }
    json_t *vms = json_array();
    for (size_t i = 0; vms && i < n; i++) {
        struct stat sb;
        snprintf(file, sizeof file, "%s/vm%u.state", tmpdir, ids[i]);
        if (stat(file, &sb) || sb.st_size == 0) {
            snprintf(err, errlen, "snapshot '%s' lacks the state of vm %u", id, ids[i]);
            json_decref(vms);
            return -1;
        }
        if (s_fsync_path(file, err, errlen)) {
            json_decref(vms);
            return -1;
        }
        uint64_t layer_bytes = 0;
        char layer[4400];
        if (engine_vm_path(ctx, ids[i], "layers", layer, 4096) == 0) {
            size_t l = strlen(layer);
            snprintf(layer + l, sizeof layer - l, "/%s.qcow2", id);
            struct stat lb;
            if (stat(layer, &lb) == 0)
                layer_bytes = (uint64_t)lb.st_blocks * 512;
        }
        *bytes += (uint64_t)sb.st_size + layer_bytes;
        json_array_append_new(vms, json_pack("{s:i, s:I, s:I}", "vm_id", (json_int_t)ids[i],
                                             "state_bytes", (json_int_t)sb.st_size, "layer_bytes",
                                             (json_int_t)layer_bytes));
    }
    json_t *meta = json_pack("{s:i, s:s, s:I, s:I, s:o}", "format", 1, "id", id, "created",
                             (json_int_t)time(NULL), "bytes", (json_int_t)*bytes, "vms", vms);
    snprintf(file, sizeof file, "%s/meta.json", tmpdir);
    if (!meta || json_dump_file(meta, file, JSON_COMPACT)) {
        json_decref(meta);
        snprintf(err, errlen, "write %s", file);
        return -1;
    }
    json_decref(meta);
    if (s_fsync_path(file, err, errlen) || s_fsync_path(tmpdir, err, errlen))
        return -1;
    tt_crash_point("worker.envsnap_before_rename");
    if (snprintf(final, sizeof final, "%s/%s", root, id) >= (int)sizeof final) {
        snprintf(err, errlen, "snapshot path too long");
        return -1;
    }
    struct stat sb;
    if (lstat(final, &sb) == 0) {
        snprintf(err, errlen, "snapshot '%s' exists", id);
        return -1;
    }
    if (rename(tmpdir, final)) {
        snprintf(err, errlen, "rename %s: %s", tmpdir, strerror(errno));
        return -1;
    }
    return s_fsync_path(root, err, errlen);
}

int qenv_info(const char *root, const char *id, uint32_t *ids, size_t max, uint64_t *bytes,
              int64_t *created, char *err, size_t errlen)
{
    char file[1300];
    if (!qenv_id_ok(id)) {
        snprintf(err, errlen, "bad snapshot id");
        return -1;
    }
    snprintf(file, sizeof file, "%s/%s/meta.json", root, id);
    json_error_t je;
    json_t *m = json_load_file(file, JSON_REJECT_DUPLICATES, &je);
    if (!m) {
        snprintf(err, errlen, "no snapshot '%s' (%s)", id, je.text);
        return -1;
    }
    const char *mid = json_string_value(json_object_get(m, "id"));
    json_t *vms = json_object_get(m, "vms"), *v;
    int n = -1;
    if (json_integer_value(json_object_get(m, "format")) != 1 || !mid || strcmp(mid, id) != 0 ||
        !json_is_array(vms)) {
        snprintf(err, errlen, "snapshot '%s': meta.json is not a format 1 record of it", id);
        goto out;
    }
    *bytes = (uint64_t)json_integer_value(json_object_get(m, "bytes"));
    *created = (int64_t)json_integer_value(json_object_get(m, "created"));
    size_t i;
    n = 0;
    json_array_foreach(vms, i, v)
    {
        json_int_t vid = json_integer_value(json_object_get(v, "vm_id"));
        json_int_t sz = json_integer_value(json_object_get(v, "state_bytes"));
        struct stat sb;
        snprintf(file, sizeof file, "%s/%s/vm%lld.state", root, id, (long long)vid);
        if (vid <= 0 || vid > 65535 || stat(file, &sb) || sb.st_size != sz) {
            snprintf(err, errlen, "snapshot '%s': the state of vm %lld is missing or damaged", id,
                     (long long)vid);
            n = -1;
            goto out;
        }
        if ((size_t)n < max)
            ids[n] = (uint32_t)vid;
        n++;
    }
out:
    json_decref(m);
    return n;
}

int qenv_remove(const char *root, const char *id, char *err, size_t errlen)
{
    if (!qenv_id_ok(id)) {
        snprintf(err, errlen, "bad snapshot id");
        return -1;
    }
    return snapstore_remove(root, id, err, errlen);
}

/* The backing file named in a qcow2 header (absolute, as this module and
 * the engine write them) into out; -1 if none or unreadable. */
static int s_backing(const char *path, char *out, size_t len)
{
    unsigned char h[20];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = -1;
    if (pread(fd, h, sizeof h, 0) == (ssize_t)sizeof h && memcmp(h, "QFI\xfb", 4) == 0) {
        uint64_t off = 0;
        for (int i = 8; i < 16; i++)
            off = off << 8 | h[i];
        uint32_t n = (uint32_t)h[16] << 24 | (uint32_t)h[17] << 16 | (uint32_t)h[18] << 8 | h[19];
        if (off && n > 0 && n < len && off < (1u << 20) &&
            pread(fd, out, n, (off_t)off) == (ssize_t)n) {
            out[n] = 0;
            rc = 0;
        }
    }
    close(fd);
    return rc;
}

int qenv_gc_layers(const engine_ctx_t *ctx, const vm_t *vm)
{
    char dir[4096], layers[4200], cur[4400], next[4400], snap[4400];
    if (engine_vm_path(ctx, vm->vm_id, NULL, dir, sizeof dir))
        return 0;
    snprintf(layers, sizeof layers, "%s/layers", dir);
    DIR *d = opendir(layers);
    if (!d)
        return 0;
    /* the chain of the VM's disk, by inode (a path may be spelled
     * otherwise): layers a reset put under it stay; when a link of the
     * chain cannot be read, no layer is removed */
    dev_t cdev[16];
    ino_t cino[16];
    int n_chain = 0;
    bool whole = true;
    snprintf(cur, sizeof cur, "%s/disk.qcow2", dir);
    while (s_backing(cur, next, sizeof next) == 0) {
        struct stat cb;
        if (n_chain == 16 || stat(next, &cb)) {
            whole = false;
            break;
        }
        cdev[n_chain] = cb.st_dev;
        cino[n_chain++] = cb.st_ino;
        snprintf(cur, sizeof cur, "%s", next);
    }
    int removed = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t l = strlen(de->d_name);
        if (de->d_name[0] == '.')
            continue;
        bool tmp = l > 4 && strcmp(de->d_name + l - 4, ".tmp") == 0;
        bool keep = false;
        if (!tmp) {
            if (l <= 6 || strcmp(de->d_name + l - 6, ".qcow2") != 0)
                continue;
            snprintf(snap, sizeof snap, "%s/envsnaps/%.*s/meta.json", ctx->state_dir, (int)(l - 6),
                     de->d_name);
            struct stat sb, lb;
            keep = !whole || stat(snap, &sb) == 0 ||
                   fstatat(dirfd(d), de->d_name, &lb, AT_SYMLINK_NOFOLLOW);
            for (int i = 0; !keep && i < n_chain; i++)
                keep = cdev[i] == lb.st_dev && cino[i] == lb.st_ino;
        }
        if (!keep && unlinkat(dirfd(d), de->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    return removed;
}

void qenv_recover(const engine_ctx_t *ctx, vm_t *vm)
{
    char dir[4096], marker[4200], tmp[4300], e2[256];
    if (engine_vm_path(ctx, vm->vm_id, NULL, dir, sizeof dir))
        return;
    snprintf(marker, sizeof marker, "%s/envsnap.stopped", dir);
    snprintf(tmp, sizeof tmp, "%s/disk.reset.qcow2.tmp", dir);
    unlink(tmp);
    /* snapshots cut by a crash: their .tmp.* directories first (their
     * layers have no meta.json then) */
    char root[1200];
    if (snprintf(root, sizeof root, "%s/envsnaps", ctx->state_dir) < (int)sizeof root)
        snapstore_gc(root, NULL);
    int n = qenv_gc_layers(ctx, vm);
    if (n > 0)
        zsys_info("vm %u: removed %d disk layer(s) of no snapshot", vm->vm_id, n);
    /* a VM this module stopped runs again */
    struct stat sb;
    if (stat(marker, &sb) == 0) {
        if (s_running(vm) &&
            engine_qemu_qmp(ctx, vm, "{\"execute\":\"migrate_cancel\"}", SNAP_QMP_MS, NULL, 0, e2,
                            sizeof e2) == 0 &&
            engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", SNAP_QMP_MS, NULL, 0, e2,
                            sizeof e2) == 0)
            zsys_info("vm %u: resumed after an interrupted env snapshot", vm->vm_id);
        if (!s_running(vm) || s_guest_running(ctx, vm, e2, sizeof e2) == 1)
            unlink(marker);
    }
}
