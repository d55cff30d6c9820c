/*
 * qemu_envsnap: env snapshots and reset on the qemu engine
 * (docs/SNAPSHOTS.md "Env snapshots and reset").
 *
 * An env snapshot is a set of running VMs frozen at one instant: the
 * caller stops every VM of the set (qenv_stop), saves each
 * (qenv_save_begin + qenv_poll), commits the snapshot directory
 * (qenv_commit) and only then resumes them all (qenv_cont), so every
 * saved state and disk is of the same moment. A reset (qenv_reset_begin
 * + qenv_poll) brings one VM back to a committed snapshot: its QEMU is
 * replaced by one restored from the snapshot's state over a fresh overlay
 * on the snapshot's disk layer.
 *
 * On disk, for a snapshot id S of VM N:
 *
 *   <root>/S/vmN.state         device state + whole RAM (migration stream)
 *   <root>/S/meta.json         format, id, the VMs, each state's size, created
 *   <vm dir>/layers/S.qcow2    the VM's disk as it was at S (read-only from
 *                              then on: the running disk is an overlay on it)
 *
 * <root> is <state dir>/envsnaps. A snapshot is made in a snapstore
 * temporary directory (<root>/.tmp.S.<pid>.<start>.<n>) and renamed to S
 * once every file is fsynced, so a crash leaves nothing listed half-made;
 * snapstore_gc(root, NULL) removes the leftovers of dead makers.
 *
 * The disk of a stopped VM (QEMU flushed it at the stop) is copied to
 * layers/S.qcow2 (copy_file_range: a reflink where the file system has
 * them; through a .tmp name, fsynced); the running VM keeps writing its
 * own disk.qcow2. QEMU 7.2 cannot switch a live VM to an overlay whose
 * file is later renamed (its block layer reopens files by name when the
 * migration inactivates them, and fails), so the live disk is never moved.
 * A reset replaces disk.qcow2, with QEMU gone, by a new overlay on
 * layers/S.qcow2. qenv_gc_layers removes layers no committed snapshot and
 * no disk chain names (a snapshot cut by a crash, a removed snapshot);
 * qenv_recover runs it and resumes a VM this module stopped (the marker
 * <vm dir>/envsnap.stopped) that is still paused.
 *
 * Every call is bounded (a few QMP round trips, one qemu-img spawn, the
 * copy of the VM's own disk overlay, or fsyncs) and meant for the worker's engine job pool; nothing
 * waits for a migration: qenv_poll asks query-migrate once.
 */
#ifndef TT_WORKER_QEMU_ENVSNAP_H
#define TT_WORKER_QEMU_ENVSNAP_H

#include "engine.h"

#define QENV_ID_MAX 64 /* a snapshot id: 1..64 of [A-Za-z0-9._-], not starting with '.' */

/* Whether id is a valid snapshot id (also a file name). */
bool qenv_id_ok(const char *id);

/* Stop vm's guest (QMP stop) and leave the marker that says this module
 * stopped it. 0 / -1 with a reason. A VM already paused is left as it is
 * (no marker) and *was_paused says so. */
int qenv_stop(const engine_ctx_t *ctx, vm_t *vm, bool *was_paused, char *err, size_t errlen);
/* Resume a VM qenv_stop stopped (QMP cont) and remove the marker. */
int qenv_cont(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen);

/* A stopped VM into the snapshot being made in tmpdir (snapstore_begin
 * under root) with id: the disk is frozen as layers/<id>.qcow2 and the
 * whole RAM and device state streamed to tmpdir/vm<ID>.state. Poll with
 * qenv_poll until SNAP_DONE. op->dir is set to tmpdir. */
int qenv_save_begin(const engine_ctx_t *ctx, vm_t *vm, const char *tmpdir, const char *id,
                    snap_op_t *op, char *err, size_t errlen);

/* Give up vm's part of a snapshot that will not be committed (a save
 * that failed, or another VM's): cancel its migration, remove its state
 * file in tmpdir and its layer. The VM stays stopped: qenv_cont it. */
void qenv_save_abort(const engine_ctx_t *ctx, vm_t *vm, const char *tmpdir, const char *id);

/* Complete the snapshot in tmpdir: every vm<ID>.state of ids[] is there
 * and not empty; writes meta.json, fsyncs, renames it to <root>/<id>.
 * Its size in bytes (states + layers) into *bytes. 0 / -1. */
int qenv_commit(const engine_ctx_t *ctx, const char *root, const char *tmpdir, const char *id,
                const uint32_t *ids, size_t n, uint64_t *bytes, char *err, size_t errlen);

/* Replace vm's QEMU (whatever its state) by one restored from snapshot
 * <root>/<id>: a new disk overlay on layers/<id>.qcow2, QEMU with
 * -incoming defer, migrate-incoming from the state, cont. Poll with
 * qenv_poll until SNAP_DONE; a failure leaves no QEMU running (the VM is
 * stopped, its disk the snapshot's). */
int qenv_reset_begin(const engine_ctx_t *ctx, vm_t *vm, const char *root, const char *id,
                     snap_op_t *op, char *err, size_t errlen);

/* SNAP_PENDING / SNAP_DONE, or -1 with a reason (a failed save resumes
 * nothing: the caller conts every VM it stopped; a failed reset kills the
 * restoring QEMU). */
int qenv_poll(const engine_ctx_t *ctx, vm_t *vm, snap_op_t *op, char *err, size_t errlen);

/* Remove vm's disk layers that neither a committed snapshot under
 * <state dir>/envsnaps nor its disk's backing chain (compared by inode)
 * names, and leftover .tmp copies; nothing but .tmp copies when a link of
 * the chain cannot be read. Only while no snapshot of vm is being made
 * (its layer has no meta.json until the commit). The number removed. */
int qenv_gc_layers(const engine_ctx_t *ctx, const vm_t *vm);

/* After a crash: put vm's disk files and its stopped guest in order (see
 * above). Safe to call on every VM at start. */
void qenv_recover(const engine_ctx_t *ctx, vm_t *vm);

/* Remove snapshot <root>/<id> (its state files; the layers stay with their
 * VMs). 0 / -1. */
int qenv_remove(const char *root, const char *id, char *err, size_t errlen);

/* The snapshot <root>/<id>: its VM ids (up to max) into ids, its size and
 * creation time. The count, or -1 with a reason (none, or damaged). */
int qenv_info(const char *root, const char *id, uint32_t *ids, size_t max, uint64_t *bytes,
              int64_t *created, char *err, size_t errlen);

#endif
