/*
 * ttclient: the C API for producer applications.
 *
 * A ttclient_t is one connection to a ttbroker's clients endpoint. It speaks
 * the client side of 7/MDP (MDPC01) on a DEALER socket: one request at a
 * time, each with a request id, a per-attempt timeout and automatic retries
 * that reuse the request id, so the broker's idempotency records turn a retry
 * into the first attempt's outcome instead of a second env.
 *
 * Every call that talks to the broker returns 0 when a Reply arrived (the
 * caller then reads reply->status: TTFLEET__STATUS__OK or an error with
 * reply->message) and -1 on a transport failure (no reply after every
 * attempt, a broken frame, an interrupt); ttclient_error() says why. A Reply
 * handed out belongs to the caller, who frees it with ttclient_reply_destroy().
 *
 * A ttclient_t is not thread-safe: use one per thread.
 *
 * libttclient uses CZMQ, which installs SIGINT/SIGTERM handlers the first
 * time a socket is made, unless the application called zsys_handler_set(NULL)
 * before (or runs with ZSYS_SIGHANDLER=false). With CZMQ's handlers, a
 * signal during a call ends it with -1 and the error "interrupted".
 */
#ifndef TTCLIENT_H
#define TTCLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttfleet.pb-c.h"
#include "ttimage.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TTCLIENT_DEFAULT_ENDPOINT "tcp://127.0.0.1:5555"
#define TTCLIENT_DEFAULT_TENANT "default"
#define TTCLIENT_DEFAULT_TIMEOUT 10000 /* ms per attempt */
#define TTCLIENT_DEFAULT_RETRIES 3     /* attempts in all */

typedef struct _ttclient_t ttclient_t;

/* Creates a client for the broker at endpoint (a ZeroMQ endpoint such as
 * "tcp://127.0.0.1:5555"; for a broker cluster the members' clients
 * endpoints, comma-separated, at most 7: a NOT_LEADER reply or no reply sends
 * the same request, same id, to the leader named or the next one) acting as
 * tenant. NULL for either picks the default. Returns NULL if the tenant is
 * not a valid name or the list has an empty member or more than 7. The
 * socket is connected on the first call, so a bad endpoint shows in
 * ttclient_error(). */
ttclient_t *ttclient_new(const char *endpoint, const char *tenant);

/* Destroys the client and its socket; sets *self_p to NULL. */
void ttclient_destroy(ttclient_t **self_p);

/* Time to wait for the reply of one attempt, in ms (at least 1). */
void ttclient_set_timeout(ttclient_t *self, int timeout_ms);

/* When timeout_ms > 0: the first call fails after timeout_ms with "no
 * broker at EP" unless the socket connects to the endpoint (a TCP or IPC
 * connection accepted) by then, instead of after all attempts' reply
 * timeouts; once it connected, calls retry as usual. 0 (the default): no
 * such check. */
void ttclient_set_connect_timeout(ttclient_t *self, int timeout_ms);

/* Attempts in all before a call fails (at least 1). */
void ttclient_set_retries(ttclient_t *self, int retries);

/* Turns CURVE on for every socket the client makes from now on. cert_path
 * names this client's certificate as `ttctl keygen` writes it: cert_path
 * (public, with the tenant and role metadata the broker checks) and
 * cert_path_secret (the secret key); broker_cert_path is the broker's public
 * certificate. Returns 0, or -1 with ttclient_error() naming the file that is
 * missing or unusable (then nothing changes). The broker answers an unknown
 * key with silence, so a refused key shows as "no reply". */
int ttclient_set_curve(ttclient_t *self, const char *cert_path, const char *broker_cert_path);

/* Makes socket (a zsock_t* or a libzmq socket, not yet connected) talk
 * CURVE with the keys given to ttclient_set_curve(), for example a SUB
 * socket on the broker's events endpoint. Does nothing without CURVE. */
void ttclient_curve_apply(ttclient_t *self, void *socket);

/* Why the last call returned -1; "" after a call that succeeded. */
const char *ttclient_error(ttclient_t *self);

/* The request id of the last call (16 hex characters unless the caller set
 * one in the Request). */
const char *ttclient_request_id(ttclient_t *self);

/* Sends req to service and waits for its Reply. Fills req->request_id and
 * req->tenant when they are empty (and puts the caller's values back before
 * returning, so req keeps no pointer into the client). On a timeout the
 * socket is replaced, so a late reply to the old one cannot be confused with
 * the next, and the same request is sent again. Replies whose request id is
 * not ours are dropped (an error reply with no request id at all is taken:
 * the broker could not read ours). A Reply with status IN_PROGRESS makes the client ask
 * again after a short pause, within the same time budget. */
int ttclient_call(ttclient_t *self, const char *service, Ttfleet__Request *req,
                  Ttfleet__Reply **reply_p);

/* Frees a Reply from one of the calls below; sets *reply_p to NULL. */
void ttclient_reply_destroy(Ttfleet__Reply **reply_p);

/* Sends msg, a Request.op message of the op registry's op_case (a
 * Ttfleet__Request__OpCase of a row of schema/ops.def), to the op's service
 * (tt.admin instead of tt.env when the message has a field `all` that is
 * set); msg NULL sends the message with every field at its default. -1 with
 * ttclient_error() for a case the registry does not have. The typed form of
 * each op, ttclient_op_FIELD(self, msg, reply_p) (ttclient_op_env_show,
 * ttclient_op_key_list, ...), is generated from the registry into
 * ttclient_ops.h, included below: every op of the registry has one. Each
 * retries like ttclient_call(), except an op flagged TT_OPF_ONCE (not
 * idempotent: env_exec, env_copy), which is sent once; ttclient_env_exec and
 * ttclient_env_cp_put/get split and bound those. */
int ttclient_op(ttclient_t *self, int op_case, void *msg, Ttfleet__Reply **reply_p);

/* Convenience calls for the common operations: each fills the op's message
 * from its arguments and calls ttclient_op_FIELD. */
int ttclient_env_create(ttclient_t *self, Ttfleet__EnvCreate *create, Ttfleet__Reply **reply_p);
int ttclient_env_show(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p);
int ttclient_env_stop(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_start(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_pause(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_resume(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_delete(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p);
int ttclient_env_extend(ttclient_t *self, const char *name, uint64_t lifetime,
                        Ttfleet__Reply **reply_p);
int ttclient_env_update(ttclient_t *self, Ttfleet__EnvUpdate *update, Ttfleet__Reply **reply_p);
int ttclient_env_rm_vm(ttclient_t *self, Ttfleet__EnvRmVm *rm, Ttfleet__Reply **reply_p);
/* The tail of a VM's console log (reply->console). */
int ttclient_env_console(ttclient_t *self, Ttfleet__EnvConsole *q, Ttfleet__Reply **reply_p);
int ttclient_host_list(ttclient_t *self, Ttfleet__Reply **reply_p);
int ttclient_host_show(ttclient_t *self, const char *id, Ttfleet__Reply **reply_p);
int ttclient_pool_status(ttclient_t *self, Ttfleet__Reply **reply_p);
/* Broker HA: the answering member's view of its Raft cluster (Reply.cluster;
 * any member answers, a follower too; a lone broker says "standalone"). */
int ttclient_cluster_status(ttclient_t *self, Ttfleet__Reply **reply_p);
/* Drains host id (no new placements) or, with undo, ends the drain; with
 * evacuate also re-creates the host's VMs on other hosts. */
int ttclient_host_drain(ttclient_t *self, const char *id, bool undo, bool evacuate,
                        Ttfleet__Reply **reply_p);
/* Removes host id from the pool; refused while it holds VMs unless force. */
int ttclient_host_remove(ttclient_t *self, const char *id, bool force, Ttfleet__Reply **reply_p);

/* Admission. quota_set: change some limits of tenant (admin); absent
 * limits stay. quota_show: tenant "" or NULL = the caller's own; all = every
 * tenant with a quota (admin). queue_list: the caller's queued creates, all =
 * every tenant's (admin). audit: the audit log, filtered (reply->audit). */
int ttclient_quota_set(ttclient_t *self, Ttfleet__QuotaSet *set, Ttfleet__Reply **reply_p);
int ttclient_quota_show(ttclient_t *self, const char *tenant, bool all,
                        Ttfleet__Reply **reply_p);
int ttclient_queue_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p);
int ttclient_audit(ttclient_t *self, Ttfleet__AuditQuery *query, Ttfleet__Reply **reply_p);

/* Images (issue 12, docs/IMAGES.md). ttclient_image_push inspects path (a
 * qcow2, or a directory with kernel [+ initrd] and/or disk.qcow2), asks
 * the broker which blobs it lacks, sends them to the blob server (resumable,
 * see ttimage.h; opts NULL for the defaults) and commits: the reply is the
 * registered image, or the broker's refusal. -1 (ttclient_error) when the
 * path is not an image or a transfer failed; nothing is registered then.
 * defaults (may be NULL) are the image's: readiness spec, SSH user, minimum
 * disk; the broker checks them before anything is sent. */
int ttclient_image_push(ttclient_t *self, const char *ref, const char *path, bool pool,
                        const Ttfleet__ImageDefaults *defaults, const ttimage_opts_t *opts,
                        Ttfleet__Reply **reply_p);
int ttclient_image_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p);
int ttclient_image_show(ttclient_t *self, const char *ref, Ttfleet__Reply **reply_p);
int ttclient_image_rm(ttclient_t *self, const char *ref, Ttfleet__Reply **reply_p);
int ttclient_image_pull(ttclient_t *self, Ttfleet__ImagePull *pull, Ttfleet__Reply **reply_p);
/* Memory-snapshot templates of an image on hosts (admin); the reply is the
 * image as now: its templates fill in as the hosts make them. */
int ttclient_image_prepare(ttclient_t *self, Ttfleet__ImagePrepare *prepare,
                           Ttfleet__Reply **reply_p);

/* ---- exec and copy inside a VM (PROTOCOL.md "Guests") ----
 * The VM is (name, vm_id) of the caller's env, host NULL or "" unless the
 * env spans hosts and the VM id is on several. None of these calls is
 * retried on a timeout (a second run of a command, or a chunk sent twice,
 * is not the same thing): each waits once, as long as its work may take. */

/* What an exec gave: the broker's status (OK, TIMEOUT: killed at its
 * timeout, GUEST_UNREACHABLE, GUEST_FAILED, NOT_FOUND, INVALID_STATE, ...)
 * and its message, the exit code (-1 and the signal when killed), and the
 * whole of what the worker kept of stdout and stderr (at most 1 MiB each;
 * *_truncated when the command wrote more). */
typedef struct {
    int status;
    char message[512];
    char host[65];
    int exit_code, signal;
    uint8_t *out, *err; /* malloc'd (NUL-terminated for convenience), may be NULL */
    size_t out_len, err_len;
    bool out_truncated, err_truncated;
} ttclient_exec_t;

/* Runs argv (argc 1..64) in the VM with stdin in (may be NULL), killed
 * after timeout_s (0: 60, at most 3600), and reads its output to the end
 * (several requests when it is over 96 KiB). 0 when the broker answered
 * (see res->status), -1 on a transport failure or bad arguments
 * (ttclient_error()). Free res with ttclient_exec_free. */
int ttclient_env_exec(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                      const char *const *argv, size_t argc, const void *in, size_t in_len,
                      uint32_t timeout_s, ttclient_exec_t *res);
void ttclient_exec_free(ttclient_exec_t *res);

/* Writes len bytes (at most 64 MiB) to the absolute path in the VM, in
 * chunks of 128 KiB with the sha256 of the whole on the last; the worker
 * checks it before it writes anything into the guest. GET reads the file
 * (at most 64 MiB) into *data (malloc'd) and checks its sha256 end to end.
 * Both return 0 when done, a Ttfleet status (> 0: CHECKSUM_MISMATCH,
 * TOO_LARGE, NOT_FOUND, GUEST_FAILED, ...) or -1 (transport, bad
 * arguments); ttclient_error() says why. */
int ttclient_env_cp_put(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                        const char *path, const void *data, size_t len);
int ttclient_env_cp_get(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                        const char *path, uint8_t **data, size_t *len);

/* Private event stream (schema/PROTOCOL.md "Events per tenant"): a DEALER
 * on the broker's events endpoint that receives only the caller's tenant's
 * events (every tenant's for an admin key). With CURVE the keys of client
 * (may be NULL: plain TCP, then tenant is sent and taken on trust by a
 * loopback broker) are used. ttevents_subscribe sends SUBSCRIBE with up to
 * 16 topic prefixes and an optional env and waits (timeout_ms) for the
 * answer: 0, or -1 with ttevents_error(). ttevents_recv waits up to
 * timeout_ms for the next event, sends heartbeats meanwhile and subscribes
 * again when the broker fell silent (a restart); NULL on timeout or error
 * (ttevents_error() is "" on a plain timeout). The Event belongs to the
 * caller: ttfleet__event__free_unpacked(ev, NULL). */
typedef struct _ttevents_t ttevents_t;
ttevents_t *ttevents_new(ttclient_t *client, const char *endpoint, const char *tenant);
void ttevents_destroy(ttevents_t **self_p);
int ttevents_subscribe(ttevents_t *self, const char *const *topics, size_t n_topics,
                       const char *env, int timeout_ms);
Ttfleet__Event *ttevents_recv(ttevents_t *self, int timeout_ms);
/* The tenant the broker took for this subscriber, and whether it is admin. */
const char *ttevents_tenant(ttevents_t *self, bool *admin);
const char *ttevents_error(ttevents_t *self);

/* Waits until every VM of env name runs (ready false) or runs and is ready
 * (its --ready probe succeeded; ready true) and the env is "running",
 * polling env show every 250 ms for at most timeout_ms. progress, if not
 * NULL, is called after every poll with the env, how many VMs are there and
 * the ms waited so far. Returns 0 when they all are, 1 when the time ran
 * out, -1 when env show failed (transport: ttclient_error(); a refusal such
 * as NOT_FOUND: the Reply's status and message). *reply_p is the last
 * answer in every case but a transport failure: the caller frees it. */
typedef void (*ttclient_wait_fn)(void *arg, const Ttfleet__EnvInfo *env, size_t done,
                                 int64_t waited_ms);
int ttclient_env_wait(ttclient_t *self, const char *name, bool ready, int timeout_ms,
                      ttclient_wait_fn progress, void *arg, Ttfleet__Reply **reply_p);
/* How many VMs of env run (ready false), or run and are ready. */
size_t ttclient_env_count(const Ttfleet__EnvInfo *env, bool ready);

/* Asks mmi.service whether the broker serves service. Copies the reply code
 * ("200", "404" or "501") into code (NUL-terminated, truncated to len).
 * Returns 0 when an answer arrived, -1 on a transport failure. */
int ttclient_mmi(ttclient_t *self, const char *service, char *code, size_t len);

#include "ttclient_ops.h"

#ifdef __cplusplus
}
#endif

#endif
