/*
 * suspend: a VM's RAM and device state to its directory and back (env
 * suspend / resume, docs/SNAPSHOTS.md "Suspend and resume"), on an
 * engine with TT_CAP_SNAPSHOTS.
 *
 * suspend_run drives one operation (the engine's suspend or resume_saved,
 * then snap_poll every SNAP_POLL_MS until done, then snap_finish) to its
 * end. It is bounded by SNAP_SAVE_MS and meant for the worker's engine job
 * pool (jobs.h), never the loop. The engine makes the suspend file
 * durable under its final name before QEMU is asked to quit, so a crash of
 * the worker at any later point finds it (suspend_present) and the VM is
 * adopted as suspended.
 */
#ifndef TT_WORKER_SUSPEND_H
#define TT_WORKER_SUSPEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine.h"

/* 0 if engine e can suspend and resume VMs, else -1 with the reason. */
int suspend_check(const engine_t *e, const engine_ctx_t *ctx, char *err, size_t errlen);

/* Suspend (resume = false) or resume vm. On success vm's pid is 0 after a
 * suspend, the new QEMU's after a resume; *ms is the operation's time
 * (begin to QEMU gone / the guest running again). 0 / -1 with a reason
 * (the engine undid it: a failed suspend leaves the VM running, a failed
 * resume leaves no process and the suspend file in place). */
int suspend_run(const engine_t *e, const engine_ctx_t *ctx, vm_t *vm, bool resume, int64_t *ms,
                char *err, size_t errlen);

/* vm has a complete suspend file. */
bool suspend_present(const engine_t *e, const engine_ctx_t *ctx, const vm_t *vm);

/* Drop vm's saved memory (a suspended VM that is stopped instead): the
 * suspend file and any partial one are removed. */
void suspend_discard(const engine_ctx_t *ctx, const vm_t *vm);

#endif
