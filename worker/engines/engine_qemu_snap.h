/*
 * engine_qemu_snap: memory snapshots of the qemu engine (snapshot.h,
 * docs/SNAPSHOTS.md). The functions here are the engine's snapshot
 * operations; the few hooks below are how they start QEMU and talk to it
 * with the same command line and QMP code as a cold start (engine_qemu.c).
 */
#ifndef TT_WORKER_ENGINE_QEMU_SNAP_H
#define TT_WORKER_ENGINE_QEMU_SNAP_H

#include "engine.h"

/* How one QEMU boots. Every qemu VM has its RAM in a memory backend
 * "ram0" (so the device state of any VM names the same RAM block), a
 * vmgenid device and a virtio-rng; what differs: */
enum {
    QBOOT_COLD = 0, /* anonymous RAM (memory-backend-ram), vmgenid auto */
    QBOOT_TEMPLATE, /* RAM in ram_file (created, share=on): a template in the making */
    QBOOT_CLONE,    /* RAM mapped copy-on-write from ram_file (share=off), -incoming defer */
    QBOOT_RESUME,   /* anonymous RAM, -incoming defer (the whole RAM comes from the stream) */
};

typedef struct {
    int kind;
    const char *ram_file; /* TEMPLATE, CLONE */
    const char *vmgenid;  /* a guid, NULL = auto */
} qemu_boot_t;

/* Start vm's QEMU as boot says (NULL = QBOOT_COLD): engine_qemu's start. */
int engine_qemu_spawn(const engine_ctx_t *ctx, vm_t *vm, const qemu_boot_t *boot, char *err,
                      size_t errlen);
/* One QMP command on vm's socket, bounded by timeout_ms (qmp.h). */
int engine_qemu_qmp(const engine_ctx_t *ctx, const vm_t *vm, const char *cmd, int timeout_ms,
                    char *out, size_t outlen, char *err, size_t errlen);
/* vm's QEMU is gone: forget its pid, pidfile and sockets. */
void engine_qemu_forget(const engine_ctx_t *ctx, vm_t *vm);

/* The engine's snapshot operations (engine.h). */
int qsnap_template_boot(const engine_ctx_t *ctx, vm_t *vm, const char *dir, char *err,
                        size_t errlen);
int qsnap_template_save(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
int qsnap_clone_restore(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
int qsnap_suspend(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
int qsnap_resume_saved(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
int qsnap_poll(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
int qsnap_finish(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
void qsnap_abort(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op);
bool qsnap_suspended(const engine_ctx_t *ctx, const vm_t *vm);

#endif
