/*
 * snapbuild: making templates on this worker (`ttctl image prepare`, and
 * the background template after a cold create). docs/SNAPSHOTS.md.
 *
 * One template is made at a time (requests queue, at most
 * SNAPBUILD_QUEUE; a request for a key that is usable or queued already
 * is done at once). For each: the image is fetched into the cache if it is
 * a catalog image (pull.h), room is reserved in the cache's accounting,
 * a builder VM (id SNAPBUILD_VM_ID, its own directory under vms/) boots
 * cold with its RAM in the template's file (template_boot), its readiness
 * probe (the request's spec, else the image's `ready` file) is stepped
 * until it answers, then template_save, snap_poll and snap_finish commit
 * the template and the builder's directory is removed. Every engine call
 * runs on the builder's own one-thread job pool; snapbuild_step never
 * waits (the probe is non-blocking, a poll is one job).
 *
 * A kill of the worker at any point leaves at most the builder's
 * directory (removed at the next start with its QEMU, as any VM directory
 * without a row) and a .tmp.* template directory (snapstore_gc removes it
 * once its maker is dead): never a usable half template.
 *
 * Limits: the user network backend only (a builder under nft would need
 * an address and a tap of its own); the builder's probe port is a free
 * loopback port the worker picks, not one the broker allocated.
 */
#ifndef TT_WORKER_SNAPBUILD_H
#define TT_WORKER_SNAPBUILD_H

#include <stdbool.h>
#include <stdint.h>

#include "engine.h"
#include "images.h"
#include "pull.h"
#include "snapops.h"

#define SNAPBUILD_VM_ID TT_VMID_MAX /* a worker refuses a VM of this id while it builds */
#define SNAPBUILD_QUEUE 16
#define SNAPBUILD_READY_MS 900000 /* a builder not ready by then fails */

typedef struct snapbuild_t snapbuild_t;

/* ctx, ops, images outlive it; pull may be NULL (no catalog images). */
snapbuild_t *snapbuild_new(const engine_ctx_t *ctx, snapops_t *ops, images_t *images, pull_t *pull);
void snapbuild_destroy(snapbuild_t **self_p);

/* Queue a template of spec's image (image fields, cpu, mem_mib, disk_mib,
 * ready; engine must be qemu). 0 (queued, or already there), or -1 with a
 * reason for the broker (BAD_REQUEST: a bad spec or an engine that cannot
 * snapshot; WORKER_FAILED: the queue is full) in *status. */
int snapbuild_want(snapbuild_t *self, const Ttfleet__VmSpec *spec, int *status, char *err,
                   size_t errlen);
/* Advance; never waits. True when the set of templates changed. */
bool snapbuild_step(snapbuild_t *self, int64_t now_ms);
/* Milliseconds until snapbuild_step has work, -1 when idle. */
int snapbuild_next_ms(const snapbuild_t *self, int64_t now_ms);
/* A builder is running (its VM id is taken). */
bool snapbuild_busy(const snapbuild_t *self);
/* The last outcome, for logs and tests: "" while none. */
const char *snapbuild_last(const snapbuild_t *self);

#endif
