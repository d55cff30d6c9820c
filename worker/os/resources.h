/*
 * resources: the worker's own capacity check.
 *
 * The broker places VMs with its view of every host; the worker checks
 * again with the truth, because the broker's view can be stale (another
 * broker restart, a VM that came back after a worker restart). Rules:
 * cpu and memory are held by running and paused VMs; disk by every VM the
 * worker holds in any state. A limit is total x overcommit ratio, rounded
 * down. Pure arithmetic, so it is unit tested on its own.
 */
#ifndef TT_WORKER_RESOURCES_H
#define TT_WORKER_RESOURCES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t cpu;
    uint64_t mem_mib;
    uint64_t disk_mib;
} res_t;

typedef struct {
    res_t total;      /* what the host has (advertised in READY) */
    double cpu_ratio; /* overcommit ratios, >= 1.0 in practice */
    double mem_ratio;
    double disk_ratio;
} res_cap_t;

/* Default overcommit: cpu time is shared well between mostly idle test VMs;
 * memory and disk are not overcommitted. */
#define RES_DEFAULT_CPU_RATIO 4.0
#define RES_DEFAULT_MEM_RATIO 1.0
#define RES_DEFAULT_DISK_RATIO 1.0

/* The usable amounts: total x ratio, rounded down. */
void res_limit(const res_cap_t *cap, res_t *out);

/* 0 if used + want fits the limits of cap for every resource, else -1 with
 * "not enough <resource>: total T (limit L), used U, wanted W" in err. */
int res_check(const res_cap_t *cap, const res_t *used, const res_t *want, char *err, size_t errlen);

#endif
