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
 * The one wait a guest controls, the graceful stop, can also be driven
 * without blocking (stop_begin / stop_poll / stop_force, all optional):
 * the worker's loop asks every VM to stop, looks at them on a timer and
 * kills the stragglers at the grace, then calls stop, which finds them
 * gone (fleet.h has the state machine).
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
#include <sys/types.h>

#include "guestop.h"
#include "snapshot.h"
#include "ttproto.h"
#include "vm.h"

/* What every engine needs to know about the host it runs on. */
typedef struct {
    const char *state_dir;  /* absolute; VM dirs are <state_dir>/vms/<id> */
    const char *images_dir; /* absolute */
    const char *image_cache; /* catalog images: <cache>/img/<hex> (pull.c), NULL = none */
    int stop_timeout_ms;    /* SIGTERM / ACPI power-off grace before the hard stop */
    const char *qemu;       /* qemu-system-x86_64, absolute; NULL if none */
    const char *qemu_img;   /* qemu-img, absolute; NULL if none */
    const char *accel;      /* "kvm" or "tcg" (engine_qemu_probe chose) */
    int net;                /* net_kind_t of the worker's network backend */
    const char *vm_user;    /* run VMs as this user (NULL: as the worker, root) */
    uid_t vm_uid;
    gid_t vm_gid;
    /* The first line of `qemu --version` (snapstore_qemu_version): a
     * template is only used by the QEMU that made it. NULL: no snapshots. */
    const char *qemu_version;
    uid_t vm_id_base; /* process VMs without vm_user: uid/gid 0 inside is this id
                         outside (0: VMJAIL_ID_BASE_DEFAULT) */
} engine_ctx_t;

typedef struct {
    const char *name;
    /* What the engine can do (ttproto.h TT_CAP_*): the worker sends it in
     * READY and every decision about an engine, the broker's and the
     * worker's, reads it, never the name. */
    uint32_t caps;
    /* The engine runs qemu-system-x86_64 and qemu-img (ttworker finds them
     * and probes the acceleration when such an engine is offered). */
    bool needs_qemu;
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
    /* Optional (NULL = nothing to do): the VM's ports or deny-outgoing
     * changed from old while it runs or is paused; apply what the engine
     * itself carries (QEMU user-mode host forwards). */
    int (*update)(const engine_ctx_t *ctx, const vm_t *old, vm_t *vm, char *err, size_t errlen);
    /* Optional: ask a running VM to shut down without waiting (sets
     * vm->stop_asked_ms). A command that stops several VMs asks them all
     * first, so their grace periods run together, not one after another. */
    void (*stop_begin)(const engine_ctx_t *ctx, vm_t *vm);
    /* Optional, for the worker's timer-driven stop (fleet.c): called about
     * every 50 ms after stop_begin asked; true once the VM's process is
     * gone (NULL: the fleet checks pid + start time itself). May re-send
     * the polite signal (a pid 1 that installed its handler late). Never
     * waits. */
    bool (*stop_poll)(const engine_ctx_t *ctx, vm_t *vm);
    /* Optional: the grace ran out; kill the VM's process without waiting
     * (NULL: the blocking stop does it). */
    void (*stop_force)(const engine_ctx_t *ctx, vm_t *vm);
    /* exec and copy inside its guests (guestop.h), with TT_CAP_GUEST in
     * caps; NULL when the engine has no guest to enter */
    const guest_backend_t *guest;
    /* Memory snapshots (snapshot.h, docs/SNAPSHOTS.md); all NULL when
     * false. Each begins one operation in op and returns 0 (then
     * snap_poll drives it) or -1 with a reason (nothing changed). All are
     * bounded like start and run on the job pool; snap_poll makes at most
     * a few QMP round trips and never waits for the migration.
     *   template_boot  start vm cold with its RAM in the shared file
     *                  <dir>/ram (dir from snapstore_begin)
     *   template_save  save such a VM as the template op->dir (its QEMU
     *                  ends, its disk moves into the template)
     *   clone_restore  start vm from the template op->dir (vm's disk
     *                  must not exist yet: a copy-on-write overlay is made)
     *   suspend        vm's RAM and device state to its directory; QEMU ends
     *   resume_saved   a suspended vm back
     *   snap_poll      SNAP_PENDING / SNAP_FINISH / SNAP_DONE, or -1 with
     *                  a reason (undone)
     *   snap_finish    after SNAP_FINISH: fsync and rename into place (or
     *                  drop the consumed suspend file); 0 = SNAP_DONE
     *   snap_abort     give up an operation in flight (a restoring QEMU is
     *                  killed; partial files removed)
     *   suspended      vm has a complete suspend file (resume_saved works)
     * (with TT_CAP_SNAPSHOTS in caps) */
    int (*template_boot)(const engine_ctx_t *ctx, vm_t *vm, const char *dir, char *err,
                         size_t errlen);
    int (*template_save)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err,
                         size_t errlen);
    int (*clone_restore)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err,
                         size_t errlen);
    int (*suspend)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
    int (*resume_saved)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
    int (*snap_poll)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
    int (*snap_finish)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);
    void (*snap_abort)(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op);
    bool (*suspended)(const engine_ctx_t *ctx, const vm_t *vm);
    /* At start, after adopt: put in order what an env snapshot or reset
     * cut by a crash left in vm's directory and guest (qemu_envsnap.h);
     * NULL when the engine takes no env snapshots. */
    void (*snap_recover)(const engine_ctx_t *ctx, vm_t *vm);
} engine_t;

extern const engine_t engine_process;
extern const engine_t engine_hollow;
extern const engine_t engine_qemu;
extern const guest_backend_t engine_process_guest; /* engine_process_guest.c */
extern const guest_backend_t engine_qemu_guest;    /* engine_qemu_guest.c */

/* Run argv in the namespaces of the process VM whose pid 1 is pid (pid 0:
 * in the worker's own, for the unit test only) with stdin, killed at
 * timeout_ms (engine_process_guest.c). */
void engine_process_exec(const guestop_config_t *cfg, pid_t pid, uint64_t start_time,
                         char *const *argv, const void *in, size_t in_len, int timeout_ms,
                         guestop_exec_t *res);

/* 0 if engine e can bootstrap a guest (SSH keys, user-data), else -1 with
 * a reason for the tenant (the broker answers BAD_REQUEST with it). */
int engine_bootstrap_check(const engine_t *e, char *err, size_t errlen);

/* 0 if engine e can take memory snapshots (and ctx knows the QEMU
 * version), else -1 with a reason for the tenant (BAD_REQUEST). */
int engine_snapshot_check(const engine_t *e, const engine_ctx_t *ctx, char *err, size_t errlen);

/* The engine called name, or NULL. */
const engine_t *engine_find(const char *name);
/* The capabilities of the engine called name (TT_CAP_*), 0 if there is
 * no such engine. */
uint32_t engine_caps_of(const char *name);

/* The directory of vm's image: <images_dir>/<image> for a host-local
 * image, <image_cache>/<hex> for a catalog image (issue 12, pull.c
 * materialized and verified it). -1 if it does not fit or the VM's
 * catalog image has no cache on this host. */
int engine_image_dir(const engine_ctx_t *ctx, const vm_t *vm, char *buf, size_t len);

/* "<state_dir>/vms/<id>" (and a leaf if not NULL) into buf; -1 if it does
 * not fit. */
int engine_vm_path(const engine_ctx_t *ctx, uint32_t vm_id, const char *leaf, char *buf,
                   size_t len);

/* Remove <state>/vms/<id> and everything under it (no symlink followed,
 * no mount crossed): the directory moves into <state>/trash at once and a
 * background thread removes it (engine.c, "the trash"). 0 / -1 with a
 * reason. */
int engine_vm_rmdir(const engine_ctx_t *ctx, uint32_t vm_id, char *err, size_t errlen);
/* Queue what an earlier worker left in <state>/trash for removal (start). */
void engine_trash_sweep(const engine_ctx_t *ctx);

/* A process named by the VM's pidfile that is alive but is not the one vm
 * records: started by a worker that died before its commit. 0 and its
 * pid and start time if there is one, else -1. */
int engine_pidfile_stray(const engine_ctx_t *ctx, const vm_t *vm, pid_t *pid, uint64_t *start_time);

/* The spawn lock of a VM (<state>/vms/<id>/spawn.lock, flock). An engine
 * takes it before it forks a spawner and closes the fd when the spawn
 * returned; the spawner (a fork, it never execs) inherits the lock, so the
 * lock is held as long as a spawner runs, even one whose worker was
 * killed. engine_pidfile_stray() takes it first, so it never reads a
 * pidfile a spawner is still about to write. Waits at most timeout_ms.
 * Returns the fd (close it to release), -2 if the VM has no directory (no
 * spawner can run there), -1 on timeout or error (with a reason). */
int engine_spawn_lock(const engine_ctx_t *ctx, uint32_t vm_id, int timeout_ms, char *err,
                      size_t errlen);

/* How long engine_pidfile_stray waits for a spawner of a killed worker. */
#define ENGINE_SPAWN_LOCK_MS 15000

/* Decide how QEMU accelerates: mode "kvm" or "tcg" is taken as given;
 * "auto" is KVM only if /dev/kvm opens *and* probe guests run under KVM
 * within timeout_ms each: a boot sector that enters long mode and writes
 * to the serial port, then (if kernel is not NULL) a Linux kernel that
 * must print its banner on an early console. Else TCG. The probe's files
 * go in work_dir. The choice into accel. 0, or -1 with a reason if qemu
 * cannot run at all. */
int engine_qemu_probe(const char *qemu, const char *mode, const char *work_dir, const char *kernel,
                      int timeout_ms, char *accel, size_t len, char *err, size_t errlen);

#endif
