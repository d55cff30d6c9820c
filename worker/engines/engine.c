/*
 * engine: the table of compiled-in engines and the rules they share.
 *
 * Every engine keeps a VM's files under <state>/vms/<id>; the worker's
 * startup scan uses the same rule to find directories left by a crash.
 * Engines that start a process record it in <state>/vms/<id>/pid as
 * "PID STARTTIME", written by the spawner before the worker commits.
 *
 * The pidfile alone left a window (issue 9 item 12): a worker killed
 * right after it forked a spawner, and restarted before that spawner wrote
 * the pidfile, found no pidfile, so it neither adopted nor killed the new
 * process tree, and started a second tree for the same VM. The spawn lock
 * (engine_spawn_lock) closes it: the spawner inherits the lock from the
 * worker and holds it until the pidfile is written and it exits, and every
 * reader of a pidfile takes the lock first.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proc.h"
#include "spawn.h"
#include "ttproto.h"

static const engine_t *const s_engines[] = {&engine_process, &engine_hollow, &engine_qemu};

const engine_t *engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof s_engines / sizeof *s_engines; i++)
        if (name && strcmp(name, s_engines[i]->name) == 0)
            return s_engines[i];
    return NULL;
}

uint32_t engine_caps_of(const char *name)
{
    const engine_t *e = engine_find(name);
    return e ? e->caps : 0;
}

int engine_bootstrap_check(const engine_t *e, char *err, size_t errlen)
{
    if (e && (e->caps & TT_CAP_BOOTSTRAP))
        return 0;
    snprintf(err, errlen,
             "engine '%s' cannot bootstrap a guest (SSH keys, user-data): use the qemu engine "
             "with a cloud-init image",
             e ? e->name : "?");
    return -1;
}

int engine_snapshot_check(const engine_t *e, const engine_ctx_t *ctx, char *err, size_t errlen)
{
    if (!e || !(e->caps & TT_CAP_SNAPSHOTS)) {
        snprintf(err, errlen,
                 "engine '%s' cannot take memory snapshots (suspend, templates, clones): use the "
                 "qemu engine",
                 e ? e->name : "?");
        return -1;
    }
    if (!ctx || !ctx->qemu_version || !ctx->qemu_version[0]) {
        snprintf(err, errlen, "this host does not know its QEMU version: no snapshots here");
        return -1;
    }
    if (ctx->vm_user) {
        snprintf(err, errlen, "snapshots do not work on a host that runs VMs as another user "
                              "(--vm-user): QEMU's migration stream could not reach the state "
                              "directory");
        return -1;
    }
    return 0;
}

int engine_image_dir(const engine_ctx_t *ctx, const vm_t *vm, char *buf, size_t len)
{
    int n;
    if (vm->image_digest[0]) {
        if (!ctx->image_cache || strncmp(vm->image_digest, "sha256:", 7) != 0)
            return -1;
        n = snprintf(buf, len, "%s/%s", ctx->image_cache, vm->image_digest + 7);
    } else {
        n = snprintf(buf, len, "%s/%s", ctx->images_dir, vm->image);
    }
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int engine_vm_path(const engine_ctx_t *ctx, uint32_t vm_id, const char *leaf, char *buf, size_t len)
{
    int n = leaf ? snprintf(buf, len, "%s/vms/%u/%s", ctx->state_dir, vm_id, leaf)
                 : snprintf(buf, len, "%s/vms/%u", ctx->state_dir, vm_id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int s_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    remove(path);
    return 0;
}

/* Remove dir and everything under it: depth first, no symlinks followed,
 * never crossing a mount (the disk holds whatever the VM wrote). 0 / -1. */
static int s_rmtree(const char *dir, char *err, size_t errlen)
{
    if (nftw(dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) && errno != ENOENT) {
        snprintf(err, errlen, "remove %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (lstat(dir, &sb) == 0) {
        snprintf(err, errlen, "could not remove all of %s", dir);
        return -1;
    }
    return 0;
}

/* ---- the trash ----
 *
 * Walking a VM's directory takes tens of milliseconds (a process VM's
 * root has an overlay's upper and work trees), and the worker's loop
 * destroys VMs: fifty of them in one delete held it past the broker's
 * heartbeat liveness. So engine_vm_rmdir renames <state>/vms/<id> into
 * <state>/trash/ (one rename on the same file system: the VM's path is
 * free at once, a new VM with that id starts clean) and one background
 * thread, started when there is work and gone when there is none, removes
 * what is in the trash. A worker that stops first leaves the rest for
 * engine_trash_sweep at its next start. */
typedef struct s_trash_item {
    struct s_trash_item *next;
    char path[];
} s_trash_item_t;

static pthread_mutex_t s_trash_mu = PTHREAD_MUTEX_INITIALIZER;
static s_trash_item_t *s_trash_head, *s_trash_tail;
static bool s_trash_running;

static void *s_trash_thread(void *arg)
{
    for (;;) {
        pthread_mutex_lock(&s_trash_mu);
        s_trash_item_t *it = s_trash_head;
        if (it) {
            s_trash_head = it->next;
            if (!s_trash_head)
                s_trash_tail = NULL;
        } else {
            s_trash_running = false;
        }
        pthread_mutex_unlock(&s_trash_mu);
        if (!it)
            return NULL;
        char err[256];
        if (s_rmtree(it->path, err, sizeof err))
            zsys_warning("trash: %s", err);
        free(it);
    }
}

/* Queue path for removal; 0 / -1 (not queued: the caller removes it). */
static int s_trash_push(const char *path)
{
    size_t len = strlen(path) + 1;
    s_trash_item_t *it = malloc(sizeof *it + len);
    if (!it)
        return -1;
    it->next = NULL;
    memcpy(it->path, path, len);
    pthread_mutex_lock(&s_trash_mu);
    if (s_trash_tail)
        s_trash_tail->next = it;
    else
        s_trash_head = it;
    s_trash_tail = it;
    int rc = 0;
    if (!s_trash_running) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, s_trash_thread, NULL) == 0) {
            s_trash_running = true;
        } else {
            /* no thread: take it back, the caller removes it inline */
            s_trash_item_t **pp = &s_trash_head;
            while (*pp != it)
                pp = &(*pp)->next;
            *pp = NULL;
            s_trash_tail = s_trash_head;
            while (s_trash_tail && s_trash_tail->next)
                s_trash_tail = s_trash_tail->next;
            free(it);
            rc = -1;
        }
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&s_trash_mu);
    return rc;
}

void engine_trash_sweep(const engine_ctx_t *ctx)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/trash", ctx->state_dir) >= (int)sizeof dir)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char err[256];
        if (s_trash_push(path) && s_rmtree(path, err, sizeof err))
            zsys_warning("trash: %s", err);
    }
    closedir(d);
}

int engine_vm_rmdir(const engine_ctx_t *ctx, uint32_t vm_id, char *err, size_t errlen)
{
    char dir[4096];
    if (engine_vm_path(ctx, vm_id, NULL, dir, sizeof dir)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    static unsigned s_seq;
    char trash[4096], to[4096 + 64];
    if (snprintf(trash, sizeof trash, "%s/trash", ctx->state_dir) < (int)sizeof trash &&
        (mkdir(trash, 0700) == 0 || errno == EEXIST)) {
        snprintf(to, sizeof to, "%s/%u.%lld.%u", trash, vm_id, (long long)tt_mono_ms(),
                 __atomic_add_fetch(&s_seq, 1, __ATOMIC_RELAXED));
        if (rename(dir, to) == 0) {
            if (s_trash_push(to) == 0)
                return 0;
            return s_rmtree(to, err, errlen);
        }
        if (errno == ENOENT)
            return 0;
    }
    /* no trash (another file system, no room for the directory): here */
    return s_rmtree(dir, err, errlen);
}

int engine_spawn_lock(const engine_ctx_t *ctx, uint32_t vm_id, int timeout_ms, char *err,
                      size_t errlen)
{
    char path[4096];
    if (engine_vm_path(ctx, vm_id, "spawn.lock", path, sizeof path)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        if (errno == ENOENT)
            return -2;
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return -1;
    }
    int64_t deadline = tt_mono_ms() + timeout_ms;
    bool said = false;
    while (flock(fd, LOCK_EX | LOCK_NB)) {
        if (errno != EWOULDBLOCK && errno != EINTR) {
            snprintf(err, errlen, "lock %s: %s", path, strerror(errno));
            close(fd);
            return -1;
        }
        if (tt_mono_ms() >= deadline) {
            snprintf(err, errlen, "a spawner of vm %u still holds %s after %d ms", vm_id, path,
                     timeout_ms);
            close(fd);
            return -1;
        }
        if (!said) {
            zsys_warning("vm %u: waiting for the spawner of an earlier worker to finish", vm_id);
            said = true;
        }
        spawn_sleep_ms(10);
    }
    return fd;
}

int engine_pidfile_stray(const engine_ctx_t *ctx, const vm_t *vm, pid_t *pid, uint64_t *start_time)
{
    char pidfile[4096], err[256];
    /* A spawner started by a worker that was killed may not have written
     * the pidfile yet: wait for it, else its VM would run unseen. */
    int lock = engine_spawn_lock(ctx, vm->vm_id, ENGINE_SPAWN_LOCK_MS, err, sizeof err);
    if (lock == -1)
        zsys_error("vm %u: %s", vm->vm_id, err);
    if (lock >= 0)
        close(lock);
    if (engine_vm_path(ctx, vm->vm_id, "pid", pidfile, sizeof pidfile) ||
        proc_pidfile_read(pidfile, pid, start_time))
        return -1;
    if ((*pid != vm->pid || *start_time != vm->start_time) && proc_alive(*pid, *start_time))
        return 0;
    return -1;
}
