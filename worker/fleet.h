/*
 * fleet: the VMs of this host and the logic that converges them.
 *
 * It owns the in-memory table of VMs (indexed by vm_id), worker.db, the
 * images list and the engines, and turns protobuf bodies into protobuf
 * bodies: a WorkerCommand into a WorkerReply, the host into a WorkerHello,
 * a periodic check into a WorkerEvent. It knows nothing of sockets, so
 * the session can reconnect freely and tests can drive it directly.
 *
 * Startup (fleet_new) reconciles worker.db with reality: a VM recorded
 * running is adopted if its pid *and* start time still match, else it is
 * DEAD; a VM directory without a row (a crash mid-create or mid-destroy)
 * is destroyed, including a process its pidfile proves is ours. Nothing
 * that cannot be proven ours is touched.
 *
 * Commands never make the caller wait out a grace period. Each command
 * becomes an op; an op starts when none of its VMs is held by another op
 * (ops on one VM run in arrival order, ops on different VMs overlap). A
 * spec that needs no waiting is applied when its op starts; a spec that
 * stops a running VM walks a small state machine driven by fleet_flush()
 * on the caller's timer (fleet_next_ms()):
 *
 *     TODO --stop_begin (SIGTERM / ACPI)--> STOPPING --gone--> DONE
 *                                              | grace over
 *                                              v
 *                                           KILLING --gone or 2 s--> DONE
 *     TODO --anything else, applied at once---------------------------^
 *       |                                                              ^
 *       '--engine call that may block--> WAITING --job reaped---------'
 *                                          (or on to WAITING again: a new
 *                                           VM's disk, then its start)
 *
 * WAITING: prepare_disk (qemu-img), start (spawn), pause and resume (QMP)
 * run on a pool of engine threads (jobs.c) on a copy of the VM; the loop
 * reaps finished jobs in fleet_flush (fleet_next_ms asks for a 5 ms poll
 * while any is out) and applies their results to the table and worker.db
 * itself. The op holds its VMs meanwhile, so one VM's ops stay in order
 * while other VMs' ops run.
 *
 * Extension point (readiness probes, guest-agent exec/copy): add an
 * S_J_* step to fleet.c's job (the pool function gets only copies and
 * the read-only engine context), submit it with s_ejob_submit() from the
 * spec being applied, and finish the spec in s_ejob_done() on the loop.
 *
 * Bounds: a command beyond FLEET_MAX_OPS unfinished ops, or naming a VM
 * FLEET_MAX_OPS_PER_VM unfinished ops already name, is answered at once
 * with WORKER_FAILED ("... limit ...: refused, nothing changed").
 * Every row write has its own savepoint: one that fails is rolled back
 * alone and fails only the op that made it; the rest of the group commit
 * goes ahead, and the next tick rewrites every row from the table.
 *
 * so 50 VMs that ignore SIGTERM stop in one grace, together, while the
 * caller keeps heartbeating. An op whose specs are all DONE waits for the
 * next commit; every change since the previous commit (any number of ops,
 * ticks) goes into one worker.db transaction, and a reply is released
 * (fleet_pop) only after the commit that made its changes durable: group
 * commit, reply after commit. Expiry destroys are ops too (no reply; their
 * VMs are reported in a later fleet_tick event).
 */
#ifndef TT_WORKER_FLEET_H
#define TT_WORKER_FLEET_H

#include <czmq.h>
#include <stdbool.h>

#include "net.h"
#include "resources.h"

#define FLEET_MAX_ENGINES 8
#define FLEET_MAX_OPS 1024      /* unfinished commands; beyond: refused */
#define FLEET_MAX_OPS_PER_VM 16 /* unfinished commands naming one VM; beyond: refused */

/* The strings are borrowed: they must outlive the fleet. */
typedef struct {
    const char *state_dir;  /* absolute, exists */
    const char *images_dir; /* absolute */
    const char *host_id;
    res_cap_t cap;
    const char *engines[FLEET_MAX_ENGINES]; /* enabled engine names */
    int n_engines;
    int64_t expiry_grace; /* seconds after expires_at before the worker destroys */
    int stop_timeout_ms;
    net_config_t net; /* the network backend (--net) */
    const char *qemu; /* qemu-system-x86_64 and qemu-img (absolute), or NULL */
    const char *qemu_img;
    const char *accel;   /* "kvm" or "tcg": advertised in READY */
    const char *public_address; /* reaches the public ports: advertised in READY */
    const char *vm_user; /* unprivileged user the VMs run as, NULL: root */
    uid_t vm_uid;
    gid_t vm_gid;
    uid_t vm_id_base; /* process VMs: uid/gid 0 inside is this id outside */
    /* catalog images (issue 12, pull.h): the cache directory (NULL: no
     * cache, catalog images are refused), its limit in MiB (0 = none),
     * and the CURVE certificate / blob server key for fetching (NULL:
     * plain) */
    const char *image_cache;
    uint64_t image_cache_mib;
    const char *blobs_cert;
    const char *blobs_key;
} fleet_config_t;

typedef struct fleet_t fleet_t;

/* Open worker.db, load and reconcile. NULL with a reason on failure. */
fleet_t *fleet_new(const fleet_config_t *cfg, char *err, size_t errlen);
void fleet_destroy(fleet_t **self_p);

/* A packed WorkerHello (identity, capacity, engines, images, inventory).
 * Rescans images. */
zframe_t *fleet_hello(fleet_t *self);

/* Queue a packed WorkerCommand and apply what needs no waiting. Nothing
 * is committed or answered yet (see fleet_flush). A command whose term is
 * older than fleet_term() is answered NOT_LEADER and not applied. 0, or
 * -1 when the body does not decode (there is no op id to answer: dropped). */
int fleet_submit(fleet_t *self, const byte *body, size_t len);

/* Advance the stops in flight, start the ops they unblocked, commit
 * everything applied since the last commit in one transaction, and make
 * the replies of the ops that finished ready for fleet_pop. Never waits
 * for a VM. Call after a batch of fleet_submit() and when fleet_next_ms()
 * says. */
void fleet_flush(fleet_t *self);

/* The next packed WorkerReply that is ready (committed), or NULL. The
 * caller owns it. */
zframe_t *fleet_pop(fleet_t *self);

/* Milliseconds until fleet_flush() has timer work (a stop to look at), or
 * -1 if none. */
int fleet_next_ms(const fleet_t *self);

/* The highest broker Raft term seen (kept in worker.db across restarts),
 * and how many commands were refused for carrying an older one (answered
 * NOT_LEADER: they come from a deposed leader). */
uint64_t fleet_term(const fleet_t *self);
size_t fleet_stale(const fleet_t *self);

/* Ops queued or running (not yet finished). */
size_t fleet_in_flight(const fleet_t *self);

/* The blocking form for tests and fuzzing: submit, then flush until this
 * command's reply is ready and return it (NULL when the body does not
 * decode). Waits out stops: never call it from a loop that must stay
 * live. */
zframe_t *fleet_command(fleet_t *self, const byte *body, size_t len);

/* The periodic check (call about every second): VMs whose process died
 * become DEAD, VMs past expires_at + grace get a destroy op. Returns a
 * packed WorkerEvent listing the deaths and the expiry destroys finished
 * (committed) since the last tick, or NULL if there were none. Commits. */
zframe_t *fleet_tick(fleet_t *self, int64_t now);

/* Readiness between ticks (call every ~200 ms): steps the probes of the
 * running VMs no op owns, so a probe's connect, banner and retry are not
 * each a second apart. A packed WorkerEvent of the VMs whose readiness
 * changed, or NULL. Never blocks; commits nothing. */
zframe_t *fleet_probe_tick(fleet_t *self);

/* Catalog images: a packed WorkerEvent with the progress of every VM
 * waiting for its image (VmActual.pull_done/pull_total) and, when the
 * cache's digests changed, the new set; NULL if there is nothing to say.
 * Call on the 1 s tick. */
zframe_t *fleet_pull_event(fleet_t *self);

/* Rescan the images directory. */
void fleet_rescan_images(fleet_t *self);

/* Number of VMs held (any state). */
size_t fleet_count(const fleet_t *self);

#endif
