/*
 * engine: how a VM is run. The worker's converge logic speaks only this
 * interface; each engine (engine_process.c, engine_hollow.c) fills one
 * engine_t with its functions.
 *
 * Contract for every function: 0 on success, -1 with a human reason in
 * err. They are synchronous and bounded (a stop waits at most a few
 * seconds), they update vm->pid / vm->start_time but never vm->state: the
 * caller owns the state machine and the database row.
 *
 * Lifecycle: prepare_disk (creates the VM's disk, kept across stop/start)
 * -> start -> [pause <-> resume] -> stop -> start ... -> destroy (stops if
 * needed, deletes the disk). is_alive answers for a VM the caller thinks is
 * running or paused; adopt re-attaches to a VM after a worker restart.
 */
#ifndef TT_WORKER_ENGINE_H
#define TT_WORKER_ENGINE_H

#include <stdbool.h>
#include <stddef.h>

#include "vm.h"

/* What every engine needs to know about the host it runs on. */
typedef struct {
    const char *state_dir;  /* absolute; VM dirs are <state_dir>/vms/<id> */
    const char *images_dir; /* absolute */
    int stop_timeout_ms;    /* SIGTERM grace before SIGKILL */
} engine_ctx_t;

typedef struct {
    const char *name;
    int (*prepare_disk)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
    int (*start)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
    int (*stop)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
    int (*pause)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
    int (*resume)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
    bool (*is_alive)(const engine_ctx_t *ctx, const vm_t *vm);
    /* After a worker restart: 0 if the VM recorded as running/paused still
     * runs (and is ours), -1 if it is dead. Cleans up a crash leftover. */
    int (*adopt)(const engine_ctx_t *ctx, vm_t *vm);
    int (*destroy)(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);
} engine_t;

extern const engine_t engine_process;
extern const engine_t engine_hollow;

/* The engine called name, or NULL. */
const engine_t *engine_find(const char *name);

/* "<state_dir>/vms/<id>" (and a leaf if not NULL) into buf; -1 if it does
 * not fit. */
int engine_vm_path(const engine_ctx_t *ctx, uint32_t vm_id, const char *leaf, char *buf,
                   size_t len);

#endif
