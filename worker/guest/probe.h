/*
 * probe: is a VM's guest ready? Host-side readiness probes, shaped for an
 * event loop.
 *
 * A ready spec (per env or image group; an image may carry a default in
 * its `ready` file) is one of:
 *     none              ready as soon as it runs
 *     ssh               an SSH-2.0 banner on guest port 22
 *     tcp:PORT          a TCP connection to guest port PORT is accepted
 *     http:PORT[/PATH]  GET /PATH answers 2xx or 3xx
 *     console:REGEX     the (PCRE2, bounded: ttguest.h) REGEX matches the console log tail
 *     agent             the guest agent answers guest-sync-delimited
 *     cloud-init        cloud-init is done (/run/cloud-init/result.json
 *                       exists, read through the guest agent)
 *
 * A probe_t makes attempts, each bounded (PROBE_ATTEMPT_MS), one every
 * PROBE_RETRY_MS, until one succeeds; it never blocks. The loop asks
 * probe_fd() for an fd and events to poll (-1: none) and probe_due() for
 * the latest time to step, and calls probe_step() when the fd is ready or
 * the time has come. probe_step() returns 1 once ready (and stays ready).
 * The caller decides how long to wait overall and drops the probe on
 * stop/pause. Network probes dial target->host: the VM's IP under the nft
 * backend, or 127.0.0.1 and the public port mapped to the guest port under
 * the user backend (target->ports, with target->mapped_only set). A probe
 * reaches only the VM: with mapped_only, a guest port that is not one of the
 * VM's forwarded ports is never dialled (the host's own services listen on
 * 127.0.0.1 too); the attempt fails with a reason that says so. With
 * owner_pid set, a mapped port is dialled only while the listener on it is
 * that process's own socket (read from /proc/PID/net/tcp and /proc/PID/fd
 * at each attempt): a public port the VM's QEMU does not forward (a live
 * port update it could not apply, or another program that took the port
 * first) is never dialled. With unreachable set (a VM whose engine does not forward its public
 * ports, or no network backend), no network probe dials anything.
 */
#ifndef TT_WORKER_PROBE_H
#define TT_WORKER_PROBE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttguest.h"

#define PROBE_SPEC_MAX TT_READY_MAX
#define PROBE_ATTEMPT_MS 3000
#define PROBE_RETRY_MS 1000
#define PROBE_CONSOLE_TAIL 65536
#define PROBE_MAP_MAX 16

/* The spec is schema/ttguest.h's, parsed there (ttctl and the broker check
 * the same way). */
typedef tt_ready_t probe_spec_t;
#define PROBE_NONE TT_READY_NONE
#define PROBE_SSH TT_READY_SSH
#define PROBE_TCP TT_READY_TCP
#define PROBE_HTTP TT_READY_HTTP
#define PROBE_CONSOLE TT_READY_CONSOLE
#define PROBE_AGENT TT_READY_AGENT
#define PROBE_CLOUD_INIT TT_READY_CLOUD_INIT

static inline int probe_spec_parse(const char *text, probe_spec_t *spec, char *err, size_t errlen)
{
    return tt_ready_parse(text, spec, err, errlen);
}

typedef struct {
    char host[64]; /* IPv4 address network probes dial */
    uint32_t n_ports;
    struct {
        uint16_t guest, dial;
    } ports[PROBE_MAP_MAX]; /* guest port -> port to dial */
    bool mapped_only;       /* unmapped guest ports are refused, not dialled as is */
    bool unreachable;       /* nothing on the host reaches the VM: network probes refused */
    int owner_pid;          /* > 0: a mapped port is dialled only while a listening TCP socket
                               on it belongs to this process (the VM's QEMU, whose user
                               networking forwards the ports) */
    char console_log[4096];
    char agent_sock[108];
} probe_target_t;

typedef struct probe_t probe_t;

probe_t *probe_new(const probe_spec_t *spec, const probe_target_t *target, int64_t now_ms);
void probe_destroy(probe_t **self_p);
/* The fd to poll and its events (POLLIN/POLLOUT), or -1. */
int probe_fd(const probe_t *self, short *events);
/* Monotonic ms by which probe_step must be called. */
int64_t probe_due(const probe_t *self);
/* Advance; 1 = ready, 0 = not yet. */
int probe_step(probe_t *self, int64_t now_ms);
/* Why the last attempt failed (for status and the wait's timeout). */
const char *probe_detail(const probe_t *self);
/* Number of attempts made so far. */
unsigned probe_attempts(const probe_t *self);

#endif
