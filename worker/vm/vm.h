/*
 * vm: one VM as the worker holds it — the desired spec the broker sent
 * last (identity, hardware, network, lease) plus the actual state and, for
 * engines with a process, the pid and start time that identify it.
 *
 * A plain struct with fixed-size fields: every string was validated on the
 * way in (names are at most 64 chars), so copying never truncates.
 */
#ifndef TT_WORKER_VM_H
#define TT_WORKER_VM_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ttproto.h"

#define VM_ENV_MAX (2 * TT_MAX_NAME + 2) /* "tenant/name" + NUL */
#define VM_DIGEST_MAX 72                 /* "sha256:" + 64 hex + NUL */

typedef struct {
    uint32_t guest;
    uint32_t public_port;
} vm_port_t;

typedef struct {
    uint32_t vm_id;
    char env[VM_ENV_MAX];
    char image[TT_MAX_NAME + 1];
    char engine[TT_MAX_NAME + 1];
    char image_digest[VM_DIGEST_MAX]; /* a catalog image (issue 12), "" = host-local */
    uint32_t cpu;
    uint32_t mem_mib;
    uint32_t disk_mib;
    char ip[16];
    char mac[18];
    uint32_t n_ports;
    vm_port_t ports[TT_MAX_PORTS_PER_VM];
    bool deny_outgoing;
    int64_t expires_at;
    int state;             /* Ttfleet__VmState: actual state */
    pid_t pid;             /* process engines: pid 1 of the VM, 0 if none */
    uint64_t start_time;   /* its /proc start time */
    int64_t stop_asked_ms; /* monotonic time a graceful stop began (not stored; 0 = none) */
    int stop_flags;        /* engine's notes on that stop (not stored) */
} vm_t;

/* True if the VM holds cpu and memory (the resource check counts it). */
static inline bool vm_holds_cpu(const vm_t *vm)
{
    return vm->state == TTFLEET__VM_STATE__VM_RUNNING || vm->state == TTFLEET__VM_STATE__VM_PAUSED;
}

#endif
