/*
 * model: the broker's state in memory, and the functions that keep it
 * consistent (accounting, allocations, per-host VM lists).
 *
 * This is the bottom of the broker: every module includes it, it includes
 * nothing of the broker. broker_t is the one state object (like Redis's
 * server struct): each module owns the fields its comment names.
 *
 * The broker is one thread. Its loop (broker.c) reads a batch of messages
 * from the clients and workers sockets, lets the modules change the model
 * and stage rows in one open SQLite transaction, commits that transaction,
 * and only then sends what the modules queued: replies to clients, commands
 * to workers, events. A crash before the commit loses nothing a client was
 * told; a crash after it loses only unsent messages, which retries and
 * reconciliation recover.
 *
 * The model is authoritative in memory and mirrored to broker.db:
 *   host  - a worker's host, known by its host id, with capacity, usage and
 *           allocation bitmaps (VM ids, public ports);
 *   env   - a tenant's named group of VMs with a lease and a target state;
 *   vm    - one VM on one host with its allocations and last known state;
 *   op    - a request in flight that waits for workers.
 * Accounting is a pure function of VM state: a VM holds cpu and mem unless
 * it is STOPPED, and disk while it exists (model_vm_set_state keeps the
 * host's sums right).
 */
#ifndef TT_BROKER_MODEL_H
#define TT_BROKER_MODEL_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ha.h"
#include "store.h"
#include "ttproto.h"

#define BROKER_EVLOG 4096            /* events kept in broker.db for event_history */
#define BROKER_EVLOG_AGE (24 * 3600) /* ... for at most this many seconds */

#define BROKER_MAX_ENGINES 8
#define BROKER_MAX_IMAGES 256
#define BROKER_NPORTS (TT_PORT_MAX - TT_PORT_MIN + 1)

#define MODEL_IMAGE_BLOBS_MAX 512 /* 4 lines of "sha256:<64> <size> <file>" */

typedef struct broker_t broker_t;
typedef struct broker_stats_t broker_stats_t;
typedef struct env_t env_t;
typedef struct op_t op_t;
/* admission modules (admq.h, quota.h, evstream.h): opaque here */
typedef struct admq_t admq_t;
typedef struct quotas_t quotas_t;
typedef struct evstream_t evstream_t;

typedef enum { HOST_DOWN = 0, HOST_ONLINE = 1, HOST_SUSPECT = 2 } host_state_t;

typedef struct vm_t vm_t;

typedef struct host_t {
    char id[TT_MAX_NAME + 1];
    zframe_t *routing; /* routing id of the live connection, NULL if none */
    host_state_t state;
    bool draining;
    uint32_t cpu_total; /* what placement uses: the pin where set, else adv_* */
    uint64_t mem_total, disk_total;
    uint32_t adv_cpu; /* what the worker advertised (range-checked) */
    uint64_t adv_mem, adv_disk;
    uint32_t pin_cpu; /* an admin's pin (host set), 0 = not pinned */
    uint64_t pin_mem, pin_disk;
    uint32_t cpu_used;
    uint64_t mem_used, disk_used;
    /* wcmd.c: what the VMs this host was told to destroy held (removed from
     * the model, their sums above gone) until its worker answers that
     * command; placement counts it as used, so no VM is placed on capacity
     * the worker still holds */
    uint32_t cpu_freeing;
    uint64_t mem_freeing, disk_freeing;
    uint32_t vm_count;
    int n_engines, n_images;
    char *engines[BROKER_MAX_ENGINES];
    /* what each of engines[] declared it can do (TT_CAP_*), from the
     * worker's READY; caps_said is false until this broker heard one
     * (memory only: a host is placed on only while online) */
    uint32_t engine_caps[BROKER_MAX_ENGINES];
    bool caps_said;
    char *images[BROKER_MAX_IMAGES];
    char accel[8];        /* the worker's qemu acceleration ("kvm", "tcg", "") */
    char public_address[16]; /* IPv4 that reaches its public ports ("" = unknown) */
    int64_t last_seen;    /* wall clock, for display */
    int64_t last_recv_ms; /* monotonic */
    int64_t last_sent_ms;
    uint8_t vmid_used[65536 / 8];
    uint8_t port_used[(BROKER_NPORTS + 7) / 8];
    uint32_t vmid_cursor, port_cursor;
    vm_t *vms; /* this host's VMs (vm->host_next), kept by model.c */
    /* wcmd.c: the bound on what one batch queues to this host */
    uint64_t cmd_batch;  /* batch_no the count is for */
    size_t cmd_bytes;    /* command bytes queued in that batch */
    bool resync;         /* commands were refused: send every spec again */
    /* its image cache (issue 12), as READY and EVENTs advertise it:
     * 0 = no cache (no catalog image is placed here) */
    uint64_t image_cache_mib, image_cache_used_mib;
    zhashx_t *image_digests; /* blob digests held (keys), NULL = none */
    /* its memory-snapshot templates, as READY and EVENTs advertise them
     * (docs/SNAPSHOTS.md), at most HOST_MAX_TEMPLATES */
    struct host_tmpl_s *tmpl;
    size_t n_tmpl;
    char zap_user[80];       /* CURVE: its key's User-Id ("worker:<host>" or "worker:*") */
    char zap_key[41];        /* CURVE: its key (Z85, ZAP metadata X-Key) */
} host_t;

#define HOST_MAX_TEMPLATES 1024
typedef struct host_tmpl_s {
    char image[TT_MAX_NAME + 1];
    char digest[80]; /* "" = a host-local image */
    uint32_t cpu, mem_mib, users;
    uint64_t bytes;
    int64_t created;
} host_tmpl_t;

typedef struct {
    uint32_t guest, public_port;
} portmap_t;

struct vm_t {
    int64_t uid;
    env_t *env;
    host_t *host;
    uint32_t vm_id;
    char ip[16];
    char mac[18];
    char image[TT_MAX_NAME + 1];
    char engine[TT_MAX_NAME + 1];
    /* a catalog image (issue 12): its digest, kind and blobs (the
     * catalog's "digest size file" lines), all "" for a host-local image */
    char image_digest[72];
    char image_kind[8];
    char image_blobs[MODEL_IMAGE_BLOBS_MAX];
    uint64_t pull_done, pull_total; /* its host's fetch, while PENDING (not persisted) */
    uint32_t cpu, mem, disk;
    int state;   /* Ttfleet__VmState as the broker knows it */
    bool active; /* phase: confirmed by its worker once */
    int n_ports;
    portmap_t ports[TT_MAX_PORTS_PER_VM];
    bool doomed;                 /* being removed (rm-vm / delete) */
    vm_t *host_prev, *host_next; /* the host's list of VMs */
    /* readiness as its worker last reported it (not persisted: the
     * worker's READY inventory carries it again) */
    bool ready;
    int64_t ready_at;
    char ready_detail[128];
    char boot[12]; /* how it booted, as its worker reported: "snapshot", "cold", "" */
};

typedef enum {
    TARGET_CREATING = 0,
    TARGET_RUNNING,
    TARGET_STOPPED,
    TARGET_PAUSED,
    TARGET_SUSPENDED /* RAM on disk, no process, cpu and mem free */
} env_target_t;

struct env_t {
    int64_t id;
    char tenant[TT_MAX_NAME + 1];
    char name[TT_MAX_NAME + 1];
    env_target_t target;
    int64_t created_at, expires_at, lifetime, last_mgmt;
    bool deny_outgoing;
    int n_gports;
    uint32_t gports[TT_MAX_PORTS_PER_VM];
    int n_vms, cap_vms;
    vm_t **vms;
    op_t *busy; /* the op running on this env, if any */
    /* guest bootstrap and readiness (issue 11), fixed at create, kept in
     * env_guest, sent in every VmSpec */
    char boot[12]; /* EnvCreate.boot ("" = auto), in broker.db (envs.boot) */
    int n_ssh_keys;
    char **ssh_keys;
    uint8_t *user_data;
    size_t user_data_len;
    char *ready;       /* the env's readiness spec ("" = each image's default) */
    char *group_ready; /* per image group: lines "IMAGE\tSPEC\n" */
    /* labels "KEY=VALUE" (validated by tt_labels_check), fixed at create */
    int n_labels;
    char labels[TT_MAX_LABELS][TT_MAX_LABEL + 1];
};

typedef enum {
    OP_CREATE = 1,
    OP_STOP,
    OP_START,
    OP_PAUSE,
    OP_RESUME,
    OP_SUSPEND,
    OP_CONSOLE, /* read-only: does not make the env busy */
    OP_GUEST,   /* exec / copy (guest_ops.c): as OP_CONSOLE, finished by guest_done */
} op_kind_t;

/* A request in flight: sent to workers, waiting for their replies. */
struct op_t {
    uint64_t id;
    op_kind_t kind;
    env_t *env;
    zmsg_t *envelope; /* client routing frames, NULL for internal ops */
    char service[32];
    char tenant[TT_MAX_NAME + 1];
    char request_id[TT_MAX_REQUEST_ID + 1];
    int waiting; /* worker commands not yet answered */
    int64_t deadline_ms;
    int status; /* worst status seen so far */
    char message[512];
    /* VMs the op commands, with the state each should reach */
    int n_vms;
    vm_t **vms;
    uint64_t *cmd_ids; /* per host command op id, parallel to hosts[] */
    int64_t *sent_us;  /* when each was queued (zclock_usecs), parallel to hosts[] */
    host_t **hosts;
    int n_hosts;
    /* create only: hosts that refused or failed, and re-placement rounds */
    host_t *refused[8];
    int n_refused;
    int rounds;
    /* OP_RESUME of a suspended env: its success is announced as env.resumed */
    bool from_suspend;
    /* create admitted from the admission queue: a copy of its entry (owned),
     * put back in its place when the worker refuses for capacity */
    struct admq_entry_t *queued;
    /* console only: the VM by value. A console op holds no env or VM
     * pointer (it does not make the env busy, so delete, rm-vm, the reaper
     * or evacuate may free them while it waits); its one host pointer is
     * cleared by op_host_down before a host is freed. */
    char console_host[TT_MAX_NAME + 1];
    uint32_t console_vm_id;
    /* OP_GUEST: called with the worker's reply, or with NULL when the host
     * went down or the deadline passed (op->status / op->message say
     * which); it answers the client and frees the op */
    void (*guest_done)(broker_t *self, op_t *op, host_t *host, Ttfleet__WorkerReply *reply);
    /* OP_GUEST: the audit row written when the command was sent (status
     * IN_PROGRESS until the answer sets the outcome), 0 if none; and the
     * audit context and text "op\x1ftarget\x1frole\x1fkey\x1ftext" (owned)
     * for that outcome, or for a row when a later chunk fails */
    int64_t audit_id;
    char *audit;
    /* OP_GUEST copy: the transfer id the request named ("" = a first
     * chunk), for guest_ops' per-tenant count of open transfers */
    bool guest_copy;
    char guest_xfer[33];
    void *handle; /* in all_ops, for O(1) removal */
};

typedef struct {
    int64_t created_at;
    uint64_t batch; /* broker_t.batch_no when recorded: durable once it is past */
    bool done;
    size_t len;
    uint8_t *reply; /* packed Reply, NULL while in progress */
    char *audit;    /* in progress: "op\x1ftarget\x1frole\x1fkey" for its final audit row */
    /* SHA-1 of the request it answers, without its id and tenant (set once
     * the request ran in this process; a record read back from broker.db
     * has none): the same id with another request is refused */
    bool has_fp;
    uint8_t fp[20];
} request_rec_t;

/* Who is asking and what, for the audit row of the request being handled
 * (dispatch.c sets it, reply.c writes it with the outcome). */
typedef struct {
    const char *op;     /* "env.create", "quota.set", ... */
    const char *target; /* env name, host id, tenant of a quota */
    const char *role;   /* "user", "admin", "system" */
    const char *key;    /* the client's CURVE public key (Z85), "" without CURVE */
} audit_ctx_t;

typedef struct {
    char state_dir[512];
    char clients_ep[256], workers_ep[256], events_ep[256];
    char events_private_ep[256]; /* evstream ROUTER (tenant-private events), "" = off */
    int audit_days;              /* audit rows kept this long (default 90) */
    char admin_tenant[TT_MAX_NAME + 1];
    char default_engine[TT_MAX_NAME + 1];
    int heartbeat_ms;
    int liveness;
    int min_stop_interval;
    int worker_timeout_ms;
    int64_t request_ttl;
    int64_t lease_grace;
    int reap_per_tick;
    double cpu_ratio, mem_ratio, disk_ratio;
    bool spread;
    bool verbose;
    double rate;    /* rate.c: changing requests per second per tenant (0: no limit) */
    int rate_burst; /* rate.c: bucket size (0: = rate) */
    char curve_secret[512]; /* broker cert (base name; NAME_secret holds the secret) */
    char client_keys[512];  /* dir of client public certs (tenant, role metadata) */
    char worker_keys[512];  /* dir of worker public certs */
    bool insecure;          /* allow plain TCP on a non-loopback endpoint */
    char admin_key[512];    /* keys.c: bind this cert as admin of admin_tenant at start */
    bool import_client_keys; /* keys.c: bind the client_keys certs by their metadata once */
    char blobs_ep[256];      /* image_ops.c: the blob server's endpoint, "" = none */
    uint64_t max_image;      /* image_ops.c: largest image (all blobs), bytes */
    uint64_t max_tenant_image; /* blobgc.c: a tenant's private images and open pushes, bytes */
    int64_t blob_gc_grace;   /* blobgc.c: seconds an unused blob is kept (default 3600) */
    uint64_t blob_reserve;   /* image_ops.c: bytes of free space pushes leave on the state fs */
    ha_config_t ha;          /* broker HA (ha.h); ha.id 0 = a lone broker, no Raft */
} broker_config_t;

struct broker_t {
    broker_config_t cfg;
    store_t *store;
    zsock_t *clients, *workers, *events;
    zhashx_t *hosts;    /* host id -> host_t* */
    zhashx_t *envs;     /* "tenant/name" -> env_t* */
    zhashx_t *routes;   /* routing id hex -> host_t* (not owned) */
    zhashx_t *vm_index; /* "host/vm_id" -> vm_t* (not owned) */
    zhashx_t *ops;      /* command op id (string) -> op_t* (not owned) */
    zhashx_t *requests; /* "tenant\x1frequest id" -> request_rec_t* */
    zlistx_t *outq;     /* queued (socket, zmsg) pairs, sent after commit */
    zlistx_t *all_ops;  /* every op_t in flight (owned) */
    uint8_t *mac_used;  /* 2^24 bits */
    uint32_t mac_cursor;
    uint64_t next_op_id;
    int64_t next_env_id, next_vm_uid;
    int64_t started_at;
    int64_t started_ms; /* monotonic */
    int64_t next_reap_ms, next_beat_ms, next_prune_ms;
    bool dirty;              /* rows staged in the open transaction */
    bool failed;             /* a statement failed in this batch: roll back and reload */
    uint64_t batch_no;       /* the batch being staged; earlier ones are committed */
    uint64_t commit_seq;     /* broker.c: COMMITs that returned */
    bool pipelined;          /* broker_run: the store's syncer makes commits durable behind
                                the loop; each batch's output waits in outq's sealed list */
    zlistx_t *sealed;        /* outq.c: outputs of batches waiting for their commit's fsync */
    struct broker_stats_t *stats; /* stats.c: counters and histograms (broker_stats op) */
    zlistx_t *batch_clients; /* batch_client_t of this batch, for a failed commit */
    bool cur_answered;       /* outq: the request being handled got a durable answer */
    bool req_active;         /* persist: inside persist_savepoint_begin .. _end */
    bool req_savepoint;      /* the request's savepoint is open */
    zactor_t *auth;          /* ZAP handler when CURVE is on */
    zhashx_t *worker_keys;   /* workers.c: the keys in --worker-keys as the ZAP handler
                                last read them (Z85 -> ""); NULL until it said */
    zhashx_t *offers;        /* scheduler.c: (engine, image) -> hosts offering it */
    uint64_t hosts_gen;      /* bumped when the host registry changes */
    zhashx_t *rates;         /* rate.c: tenant -> token bucket */
    bool curve;
    char public_key[41]; /* CURVE: the broker's public key (Z85), for push grants */
    /* admission (admission.c, adm_ops.c; the modules are admq/quota/audit/evstream) */
    admq_t *admq;
    quotas_t *quotas;
    evstream_t *evs;
    zsock_t *events_private; /* the evstream ROUTER, NULL when off */
    /* outq.c: the id the next event gets (persist_load: above every id
     * broker.db's event log ever gave) */
    uint64_t next_event_id;
    bool admit_wanted;       /* capacity was freed: run admission after this request */
    const audit_ctx_t *cur_audit; /* the request being handled, NULL otherwise */
    const struct admq_entry_t *admitting; /* the queue entry being placed, NULL otherwise */
    /* ops/admission.c's admission_requeue, set by broker.c: pool/op.c puts
     * a queued create that a worker refused for capacity back through it
     * (a call upward, so through this pointer rather than an include) */
    int (*requeue)(struct broker_t *self, struct admq_entry_t *entry, const char *why);
    zhashx_t *guest_xfers;   /* guest_ops.c: open copy transfers, "host\x1fid" -> owner */
    zhashx_t *freeing;       /* wcmd.c: destroy command op id -> what it frees on its host */
    char cur_key[41];        /* its CURVE key (from ZAP metadata X-Key) */
    int64_t next_audit_prune;
    zhashx_t *keys;     /* keys.c: bound client keys, Z85 public key -> key_rec_t* */
    bool events_cut;    /* keys.c: a key was removed; drop every events subscriber */
    bool events_down;   /* broker.c: events endpoint unbound, to be bound again */
    char events_bound[256]; /* broker.c: the events endpoint as bound (resolved) */
    struct blobsrv_t *blobsrv; /* image_ops.c: the blob server (its own thread) */
    zhashx_t *blob_grants;     /* blobgc.c: "tenant\x1fdigest" -> open grant */
    int64_t next_blob_gc_ms;   /* blobgc.c */
    /* broker HA (broker.c with ha.h); all unused when cfg.ha.id is 0 */
    struct ha_t *ha;           /* the Raft thread and the leader's changesets */
    bool ha_serving;           /* this broker leads and has loaded the model */
    unsigned ha_leader;        /* the leader's member id as last heard, 0 = none */
    uint64_t ha_term;          /* the Raft term this broker leads in */
    bool ha_broken;            /* a batch could not be shipped: the loop stops */
    struct cluster_pending_t *cluster_pending; /* cluster_ops.c: the change in flight */
};

/* ---- model.c ---- */
host_t *model_host_get(broker_t *self, const char *id);
host_t *model_host_ensure(broker_t *self, const char *id);
bool model_host_has(const host_t *host, const char *engine, const char *image);
bool model_host_has_engine(const host_t *host, const char *engine);
/* Whether host holds every blob of a catalog image (its "digest size
 * file" lines) as it last advertised. */
bool model_host_holds(const host_t *host, const char *blobs);
/* Copies from's catalog image (digest, kind, blobs) onto vm. */
void model_vm_set_image(vm_t *vm, const vm_t *from);
/* Set the totals placement uses from the pin (where set) or adv_*. */
void model_host_caps(host_t *host);
env_t *model_env_get(broker_t *self, const char *tenant, const char *name);
env_t *model_env_new(broker_t *self, const char *tenant, const char *name);
void model_env_free(broker_t *self, env_t **env_p);
vm_t *model_vm_add(broker_t *self, env_t *env, host_t *host, uint32_t vm_id, uint64_t mac);
void model_vm_remove(broker_t *self, vm_t *vm);
vm_t *model_vm_find(broker_t *self, const char *host, uint32_t vm_id);
/* The envs with a VM on host, each once (the caller destroys the list).
 * A host's VMs themselves: for (vm = host->vms; vm; vm = vm->host_next). */
zlistx_t *model_host_envs(const host_t *host);
void model_vm_set_state(vm_t *vm, int state);

/* The readiness spec a VM's group resolves to: its image group's, else the
 * env's, else "" (the worker then uses the image's default). Allocated
 * (the caller frees it); NULL when out of memory. */
char *model_vm_ready_spec(const vm_t *vm);

/* Set an env's guest inputs (copies). 0, or -1 when out of memory. */
/* Sets env's labels (n at most TT_MAX_LABELS, each checked already). */
void model_env_set_labels(env_t *env, char *const *labels, size_t n);
/* Sets env's labels from broker.db's text (one a line); bad lines dropped. */
void model_env_set_labels_text(env_t *env, const char *text);
/* env's labels one a line ("" for none) into buf. */
void model_env_labels_text(const env_t *env, char *buf, size_t len);
/* Whether env has every label of want ("KEY=VALUE"). */
bool model_env_has_labels(const env_t *env, char *const *want, size_t n);
int model_env_set_guest(env_t *env, char *const *keys, int n_keys, const uint8_t *ud,
                        size_t ud_len, const char *ready, const char *group_ready);

/* What engine can do on host (TT_CAP_*), as its worker declared in READY;
 * 0 when host does not offer engine. */
uint32_t model_host_engine_caps(const host_t *host, const char *engine);
/* What engine can do on any host that offers it and declared its
 * capabilities (their union, TT_CAP_*); *said is false when no such host
 * has declared (no host offers engine, or none said READY to this broker
 * yet): then nothing can be concluded before placement. */
uint32_t model_engine_caps(broker_t *self, const char *engine, bool *said);
/* The first engine of host that declares every capability of caps, or NULL. */
const char *model_host_engine_with(const host_t *host, uint32_t caps);
/* Move vm to another host with new allocations (re-placement). The old
 * VM id, MAC and public ports are released. -1 if the new host ran out. */
int model_vm_move(broker_t *self, vm_t *vm, host_t *to, uint32_t vm_id, uint64_t mac,
                  const uint32_t *gports, int n_gports);
void model_vm_set_hw(vm_t *vm, uint32_t cpu, uint32_t mem, uint32_t disk);
bool model_vm_holds_cpu(const vm_t *vm);
int model_vm_desired(const vm_t *vm);
const char *model_env_state(const env_t *env);
const char *model_target_name(env_target_t t);
int model_target_parse(const char *s);
/* allocations */
/* A VM id free on host that no VM of env but skip has on any host, so a VM
 * id names one VM of its env (ttctl env exec ENV ID needs no --host). */
int alloc_vm_id_in_env(host_t *host, const env_t *env, const vm_t *skip, uint32_t *vm_id);
void alloc_vm_id_mark(host_t *host, uint32_t vm_id, bool used);
int alloc_port(host_t *host, uint32_t *port);
void alloc_port_mark(host_t *host, uint32_t port, bool used);
int alloc_mac(broker_t *self, uint64_t *mac);
void alloc_mac_mark(broker_t *self, uint64_t mac, bool used);
void alloc_mac_format(uint64_t mac, char *buf, size_t len);
int alloc_mac_parse(const char *s, uint64_t *mac);
/* Give vm public ports for every guest port of its env. -1 when the host ran out. */
int alloc_vm_ports(vm_t *vm, const uint32_t *gports, int n);
void alloc_vm_ports_release(vm_t *vm);
/* The port-set diff, written once: plan vm's public ports for a new set
 * of guest ports. A guest port that stays keeps its public port, a dropped
 * one is freed, a new one is allocated; next[] gets the map and fresh[g]
 * says which were allocated. Nothing in vm changes. -1 when the host ran
 * out (then this call gave back what it took and freed). */
int alloc_vm_ports_plan(vm_t *vm, const uint32_t *gports, int n, portmap_t *next, bool *fresh);
/* Undo a plan: give back its fresh ports and take vm's old ones again.
 * Undo several plans in the reverse order of planning. */
void alloc_vm_ports_unplan(vm_t *vm, const portmap_t *next, const bool *fresh, int n);
/* Make a plan vm's ports. */
void alloc_vm_ports_apply(vm_t *vm, const portmap_t *next, int n);

#endif
