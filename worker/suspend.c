/*
 * suspend: see suspend.h.
 */
#define _GNU_SOURCE
#include "suspend.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "snapshot.h"
#include "ttproto.h"

int suspend_check(const engine_t *e, const engine_ctx_t *ctx, char *err, size_t errlen)
{
    if (!e || !(e->caps & TT_CAP_SNAPSHOTS) || !e->suspend || !e->resume_saved || !e->snap_poll ||
        !e->snap_finish || !e->snap_abort || !e->suspended) {
        snprintf(err, errlen, "engine '%s' cannot save a VM's memory (no snapshots capability)",
                 e ? e->name : "?");
        return -1;
    }
    return engine_snapshot_check(e, ctx, err, errlen);
}

int suspend_run(const engine_t *e, const engine_ctx_t *ctx, vm_t *vm, bool resume, int64_t *ms,
                char *err, size_t errlen)
{
    if (suspend_check(e, ctx, err, errlen))
        return -1;
    snap_op_t op;
    memset(&op, 0, sizeof op);
    pid_t was = vm->pid;
    int64_t t0 = zclock_mono();
    int rc =
        resume ? e->resume_saved(ctx, vm, &op, err, errlen) : e->suspend(ctx, vm, &op, err, errlen);
    if (rc)
        return -1;
    for (;;) {
        rc = e->snap_poll(ctx, vm, &op, err, errlen);
        if (rc < 0)
            return -1; /* undone by the engine */
        if (rc == SNAP_DONE)
            break;
        if (rc == SNAP_FINISH) {
            if (e->snap_finish(ctx, vm, &op, err, errlen) < 0) {
                e->snap_abort(ctx, vm, &op);
                return -1;
            }
            break;
        }
        zclock_sleep(SNAP_POLL_MS);
    }
    *ms = zclock_mono() - t0;
    if (!resume && was > 0)
        waitpid(was, NULL, WNOHANG); /* the ended QEMU, when it was our child */
    return 0;
}

bool suspend_present(const engine_t *e, const engine_ctx_t *ctx, const vm_t *vm)
{
    return e && e->suspended && e->suspended(ctx, vm);
}

void suspend_discard(const engine_ctx_t *ctx, const vm_t *vm)
{
    static const char *const leaves[] = {"suspend.state", "suspend.partial"};
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
        char path[4200];
        if (engine_vm_path(ctx, vm->vm_id, leaves[i], path, sizeof path) == 0)
            unlink(path);
    }
}
