/*
 * guestop: exec and copy inside a VM (WorkerCommand.exec / .copy), off the
 * worker's loop.
 *
 * fleet.c hands each such command here with a snapshot of the VM (engine,
 * state, pid and start time of a process VM, the guest agent socket of a
 * qemu VM). What needs the guest runs on guestop's own pool of threads,
 * never on the loop: an exec (minutes, maybe), the write of a finished PUT
 * into the guest, the read of a file for a GET. What needs only memory is
 * answered on the loop at once: the rest of a long output (exec_id and
 * offsets), a PUT chunk appended to its transfer, a GET chunk of a file
 * read already. Replies come out of guestop_pop as packed WorkerReplys.
 *
 * How the guest is reached is its engine's (guest_backend_t below, which
 * engine_t.guest names): the qemu engine's goes through the guest agent
 * (engines/engine_qemu_guest.c), the process engine's through the VM's
 * namespaces (engines/engine_process_guest.c); a VM whose engine has none
 * (hollow) answers GUEST_UNREACHABLE.
 *
 * Bounds, all fixed here so that no guest and no client can make the
 * worker buffer or wait without end:
 *   - an exec keeps at most TT_EXEC_OUTPUT_MAX of stdout and of stderr
 *     (the rest is read and dropped, *_truncated set); each reply carries
 *     at most TT_EXEC_PIECE of each; outputs longer than one piece are kept
 *     GUESTOP_RESULTS_MAX at most (the oldest dropped), GUESTOP_KEEP_MS
 *     each, and dropped with their VM;
 *   - a command is killed at its timeout (process: SIGKILL to its process
 *     group; qemu: the command leads a process group of its own through
 *     the guest's setsid, and `kill -KILL -- -PID` through the agent, which
 *     has no kill of its own, ends that group);
 *   - a transfer holds at most TT_COPY_FILE_MAX bytes; at most
 *     GUESTOP_XFERS_MAX transfers per worker and GUESTOP_XFERS_PER_VM per
 *     VM; one idle for GUESTOP_XFER_IDLE_MS is dropped;
 *   - at most GUESTOP_JOBS_MAX guest jobs queued or running per worker and
 *     GUESTOP_JOBS_PER_VM per VM; beyond, UNAVAILABLE at once;
 *   - guest agent replies are bounded by qga.c (QGA_LINE_MAX a line).
 */
#ifndef TT_WORKER_GUESTOP_H
#define TT_WORKER_GUESTOP_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "ttfleet.pb-c.h"

/* As many threads as jobs: a long command (an exec may run an hour) never
 * makes another job wait for a thread; the broker lets one tenant have at
 * most GUEST_TENANT_HOST_MAX (8) requests waiting for one host, so one
 * tenant holds at most a quarter of a worker's guest jobs. */
#define GUESTOP_JOBS_MAX 32
#define GUESTOP_THREADS GUESTOP_JOBS_MAX
#define GUESTOP_JOBS_PER_VM 4
#define GUESTOP_RESULTS_MAX 16
#define GUESTOP_KEEP_MS (5 * 60 * 1000)
#define GUESTOP_XFERS_MAX 8
#define GUESTOP_XFERS_PER_VM 2
#define GUESTOP_XFER_IDLE_MS (2 * 60 * 1000)
#define GUESTOP_POLL_MS 20 /* how often the loop looks for finished guest jobs */

typedef struct guestop_t guestop_t;

typedef struct {
    const char *host_id; /* borrowed */
    bool drop;           /* run as the VMs' user (process engine) */
    uid_t uid;
    gid_t gid;
    bool own_ns_for_pid0; /* unit tests only: a process VM with pid 0 runs in the
                             worker's own namespaces (ttworker never sets it: there a
                             process VM without a pid is GUEST_UNREACHABLE) */
} guestop_config_t;

typedef struct guest_backend_t guest_backend_t;

/* What the loop knows of the VM a command names (copied). */
typedef struct {
    char engine[65];
    const guest_backend_t *guest; /* its engine's backend, NULL: no guest to enter */
    int state;                    /* Ttfleet__VmState */
    pid_t pid;                    /* process engine: pid 1 of the VM */
    uint64_t start_time;
    char agent_sock[4096]; /* qemu engine: <vm dir>/qga.sock */
} guestop_vm_t;

guestop_t *guestop_new(const guestop_config_t *cfg);
/* Waits for running jobs (each bounded by its timeout), drops the rest. */
void guestop_destroy(guestop_t **self_p);

/* Take cmd (cmd->exec or cmd->copy set); vm NULL when the worker has no
 * such VM. Answers at once or queues a job. */
void guestop_submit(guestop_t *self, Ttfleet__WorkerCommand *cmd, const guestop_vm_t *vm);
/* Reap finished jobs, drop what expired; never blocks. */
void guestop_flush(guestop_t *self, int64_t now_ms);
/* The next packed WorkerReply, or NULL. The caller owns it. */
zframe_t *guestop_pop(guestop_t *self);
/* Jobs queued or running. */
size_t guestop_pending(const guestop_t *self);
/* The VM is gone or going (a stop or destroy began): drop its outputs and
 * transfers; its jobs still running answer GUEST_UNREACHABLE ("stopped or
 * deleted while the command ran"), with the output they had. */
void guestop_vm_gone(guestop_t *self, uint32_t vm_id);
/* Kept outputs and transfers (tests). */
size_t guestop_kept(const guestop_t *self);

/* The result of one exec (and the status and message of a copy). */
typedef struct {
    int status; /* Ttfleet__Status */
    char msg[512];
    int exit_code, signal;
    unsigned char *out, *err; /* malloc'd, at most TT_EXEC_OUTPUT_MAX each */
    size_t out_len, err_len;
    bool out_trunc, err_trunc;
} guestop_exec_t;

void guestop_exec_free(guestop_exec_t *res);

/* An engine's way into its guests. Each function runs on one of guestop's
 * threads with copies of what it needs, bounded by the time it is given. */
struct guest_backend_t {
    /* Optional, on the loop, never waits: TTFLEET__STATUS__OK if a
     * command may go to VM vm_id now, else a status with a reason. */
    int (*check)(const guestop_config_t *cfg, const guestop_vm_t *vm, uint32_t vm_id, char *why,
                 size_t len);
    /* Run argv (NULL-terminated) with stdin in, killed at timeout_ms;
     * output, exit code and status into res (memset by exec). */
    void (*exec)(const guestop_config_t *cfg, const guestop_vm_t *vm, char *const *argv,
                 const void *in, size_t in_len, int timeout_ms, guestop_exec_t *res);
    /* put: write *len bytes of *data to path; else read path into *data
     * (malloc'd) and *len, at most TT_COPY_FILE_MAX. Within file_ms.
     * Status and message into res. */
    void (*file)(const guestop_config_t *cfg, const guestop_vm_t *vm, bool put, const char *path,
                 unsigned char **data, size_t *len, int file_ms, guestop_exec_t *res);
};

#endif
