/*
 * scheduler (sched_*): where a VM goes (best-fit or spread over the hosts that pass the
 * constraints). Depends on the model only.
 */
#ifndef TT_BROKER_SCHEDULER_H
#define TT_BROKER_SCHEDULER_H

#include "model.h"

typedef struct {
    const char *engine;
    const char *image;
    uint32_t cpu, mem, disk;
    bool spread;
    host_t *const *exclude; /* hosts not to use (they refused this VM) */
    int n_exclude;
    /* a catalog image (issue 12): any host with an image cache offers it;
     * hosts holding all its blobs are preferred. NULL: a host-local image */
    const char *image_blobs; /* the catalog's "digest size file" lines */
    /* what the host's engine must declare (TT_CAP_*) besides
     * TT_CAP_CATALOG, which a catalog image asks for itself */
    uint32_t caps;
    /* memory snapshots (EnvCreate.boot): "" or "auto" prefers hosts that
     * hold a template of (image, cpu, mem); "snapshot" places only on such
     * hosts when the engine takes snapshots there; "cold" or NULL: neither */
    const char *boot;
} sched_want_t;
/* Choose a host for one VM. NULL with status (NO_CAPACITY / UNAVAILABLE)
 * and a message naming the resource, total, used and wanted. */
host_t *sched_place(broker_t *self, const sched_want_t *want, int *status, char *msg,
                    size_t msglen);
/* The host registry changed (a host joined, changed its offer, went). */
void sched_invalidate(broker_t *self);
/* Would host take cpu/mem more (for start)? */
bool sched_fits(broker_t *self, const host_t *host, uint32_t cpu, uint64_t mem, uint64_t disk,
                char *msg, size_t msglen);

#endif
