/*
 * engine: the table of compiled-in engines and the rules they share.
 *
 * Every engine keeps a VM's files under <state>/vms/<id>; the worker's
 * startup scan uses the same rule to find directories left by a crash.
 * Engines that start a process record it in <state>/vms/<id>/pid as
 * "PID STARTTIME", written by the spawner before the worker commits.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "proc.h"

static const engine_t *const s_engines[] = {&engine_process, &engine_hollow, &engine_qemu};

const engine_t *engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof s_engines / sizeof *s_engines; i++)
        if (name && strcmp(name, s_engines[i]->name) == 0)
            return s_engines[i];
    return NULL;
}

int engine_bootstrap_check(const engine_t *e, char *err, size_t errlen)
{
    if (e && e->bootstraps)
        return 0;
    snprintf(err, errlen,
             "engine '%s' cannot bootstrap a guest (SSH keys, user-data): use the qemu engine "
             "with a cloud-init image",
             e ? e->name : "?");
    return -1;
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

int engine_vm_rmdir(const engine_ctx_t *ctx, uint32_t vm_id, char *err, size_t errlen)
{
    char dir[4096];
    if (engine_vm_path(ctx, vm_id, NULL, dir, sizeof dir)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    /* Depth first, no symlinks followed, never crossing a mount: the disk
     * holds whatever the VM wrote. */
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

int engine_pidfile_stray(const engine_ctx_t *ctx, const vm_t *vm, pid_t *pid, uint64_t *start_time)
{
    char pidfile[4096];
    if (engine_vm_path(ctx, vm->vm_id, "pid", pidfile, sizeof pidfile) ||
        proc_pidfile_read(pidfile, pid, start_time))
        return -1;
    if ((*pid != vm->pid || *start_time != vm->start_time) && proc_alive(*pid, *start_time))
        return 0;
    return -1;
}
