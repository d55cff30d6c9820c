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
 */
#ifndef TT_WORKER_FLEET_H
#define TT_WORKER_FLEET_H

#include <czmq.h>
#include <stdbool.h>

#include "net.h"
#include "resources.h"

#define FLEET_MAX_ENGINES 8

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
    const char *accel; /* "kvm" or "tcg": advertised in READY */
    const char *vm_user; /* unprivileged user the VMs run as, NULL: root */
    uid_t vm_uid;
    gid_t vm_gid;
} fleet_config_t;

typedef struct fleet_t fleet_t;

/* Open worker.db, load and reconcile. NULL with a reason on failure. */
fleet_t *fleet_new(const fleet_config_t *cfg, char *err, size_t errlen);
void fleet_destroy(fleet_t **self_p);

/* A packed WorkerHello (identity, capacity, engines, images, inventory).
 * Rescans images. */
zframe_t *fleet_hello(fleet_t *self);

/* Apply a packed WorkerCommand; returns the packed WorkerReply, or NULL
 * when the body does not decode (there is no op id to answer). */
zframe_t *fleet_command(fleet_t *self, const byte *body, size_t len);

/* The periodic check (call about every second): VMs whose process died
 * become DEAD, VMs past expires_at + grace are destroyed. Returns a packed
 * WorkerEvent listing the changes, or NULL if there were none. */
zframe_t *fleet_tick(fleet_t *self, int64_t now);

/* Rescan the images directory. */
void fleet_rescan_images(fleet_t *self);

/* Number of VMs held (any state). */
size_t fleet_count(const fleet_t *self);

#endif
