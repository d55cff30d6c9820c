/*
 * ttproto: the rules of the wire that every ttfleet part shares.
 *
 * Frame constants of the client side (7/MDP, MDPC01) and of our worker
 * protocol (TTW01), size limits, the names of status codes and VM states,
 * and the validators for names that come from outside. Everything here is
 * pure: no sockets, no allocation beyond what protobuf-c does, so the
 * broker, the worker, the client library and the fuzzers share one copy.
 */
#ifndef TTPROTO_H
#define TTPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttfleet.pb-c.h"

#define TT_MDP_CLIENT "MDPC01"
#define TT_WORKER_PROTO "TTW01"

/* Worker protocol commands: the single byte of the third frame. */
#define TT_W_READY 0x01
#define TT_W_COMMAND 0x02
#define TT_W_REPLY 0x03
#define TT_W_HEARTBEAT 0x04
#define TT_W_DISCONNECT 0x05
#define TT_W_EVENT 0x06

/* Private event stream (broker/admission/evstream.h, client ttevents): the second
 * frame of every message is TT_EVENTS_PROTO, the third one command byte. */
#define TT_EVENTS_PROTO "TTE01"
#define TT_E_SUBSCRIBE 0x01
#define TT_E_SUBSCRIBED 0x02
#define TT_E_EVENT 0x03
#define TT_E_HEARTBEAT 0x04
#define TT_E_UNSUBSCRIBE 0x05

#define TT_SERVICE_ENV "tt.env"
#define TT_SERVICE_ADMIN "tt.admin"
#define TT_SERVICE_MMI "mmi.service"

/* Limits on what comes from outside. */
#define TT_MAX_FRAMES 8           /* frames in one client message (after routing) */
#define TT_MAX_BODY (256 * 1024)  /* bytes of one protobuf body */
#define TT_MAX_SOCKET_BODY (4 * TT_MAX_BODY) /* broker's ZMQ_MAXMSGSIZE: over it, no reply */
#define TT_MAX_WORKER_BODY (8 * 1024 * 1024) /* READY with a big inventory */
#define TT_MAX_NAME 64
#define TT_MAX_REQUEST_ID 64
#define TT_MAX_VMS_PER_ENV 500
#define TT_MAX_PORTS_PER_VM 32
#define TT_MAX_IMAGES_PER_ENV 32
#define TT_MAX_LABELS 16      /* labels of one env */
#define TT_MAX_LABEL_KEY 63   /* bytes of a label's key */
#define TT_MAX_LABEL_VALUE 63 /* bytes of a label's value */
#define TT_MAX_LABEL (TT_MAX_LABEL_KEY + 1 + TT_MAX_LABEL_VALUE)
#define TT_MAX_CPU 256
#define TT_MAX_MEM_MIB (1024u * 1024u)       /* 1 TiB */
#define TT_MAX_DISK_MIB (64u * 1024u * 1024u) /* 64 TiB */

/* What a worker may say about its host (the broker clips or refuses
 * beyond these; an admin pin can only be inside them too). */
#define TT_MAX_HOST_CPU 4096
#define TT_MAX_HOST_MEM_MIB (64ull * 1024 * 1024)    /* 64 TiB */
#define TT_MAX_HOST_DISK_MIB (1024ull * 1024 * 1024) /* 1 PiB */
#define TT_MAX_INVENTORY 65533                       /* VM ids 2..65534 */
#define TT_MAX_WORKER_MESSAGE 1024 /* bytes of a VmActual message kept */

#define TT_CONSOLE_DEFAULT (16 * 1024)
#define TT_CONSOLE_MAX (256 * 1024)

#define TT_DEFAULT_CPU 2
#define TT_DEFAULT_MEM_MIB 1024
#define TT_DEFAULT_DISK_MIB 40960
#define TT_DEFAULT_LIFETIME 3600
#define TT_MAX_LIFETIME_USER (6 * 3600)
#define TT_MAX_LIFETIME_ADMIN (30LL * 24 * 3600)

#define TT_PORT_MIN 40000
#define TT_PORT_MAX 59999
#define TT_VMID_MIN 2       /* 10.10.0.0 is the network, 10.10.0.1 the bridge */
#define TT_VMID_MAX 65534   /* 10.10.255.255 is broadcast */

/* Admission (broker/admission/admq.h, quota.h): the bounds of what a client may ask. */
#define TT_PRIO_MAX 99                       /* EnvCreate.priority 0..99 */
#define TT_QUEUE_WAIT_MAX (7LL * 24 * 3600)  /* EnvCreate.max_wait on the wire */
#define TT_QUOTA_MAX_ENVS 100000LL
#define TT_QUOTA_MAX_VMS 1000000LL
#define TT_QUOTA_MAX_CPU 10000000LL
#define TT_QUOTA_MAX_MEM_MIB (1LL << 40)     /* 1 EiB in MiB: far above any pool */
#define TT_QUOTA_MAX_DISK_MIB (1LL << 40)
#define TT_AUDIT_LIMIT_DEFAULT 100
#define TT_AUDIT_LIMIT_MAX 1000

/* Whether s is a label "KEY=VALUE": KEY 1..63 of [A-Za-z0-9._/-] starting
 * with a letter or digit, VALUE 0..63 of [A-Za-z0-9._-]. */
bool tt_label_valid(const char *s);
/* Checks a label list (each valid, at most TT_MAX_LABELS, keys unique);
 * -1 with the reason in err. */
int tt_labels_check(char *const *labels, size_t n, char *err, size_t errlen);

/* Name of a status code ("NOT_FOUND"), "UNKNOWN" for values out of range. */
const char *tt_status_name(int status);
/* Name of a VM state in lower case ("running"). */
const char *tt_vm_state_name(int state);
/* The broker's "holds cpu" rule: a VM reserves cpu and mem on its host
 * unless it is STOPPED or SUSPENDED (no process; its RAM is on disk):
 * PENDING (being started), DEAD and LOST included, so a VM that comes back
 * (a worker reconnects, a restart) never finds its room given away. Disk is
 * reserved while the VM exists. */
static inline bool tt_vm_state_reserves_cpu(int state)
{
    return state != TTFLEET__VM_STATE__VM_STOPPED && state != TTFLEET__VM_STATE__VM_SUSPENDED;
}

/* Engine capabilities: what an engine can do, declared by the engine
 * (worker/engines/engine_*.c, engine_t.caps), sent by the worker in
 * READY (WorkerHello.engine_caps, by name) and decided on by the broker
 * (placement, create checks) and the worker alike. Nothing decides from an
 * engine's name. */
#define TT_CAP_CATALOG (1u << 0)   /* "catalog": runs catalog images (pulled into the image cache) \
                                    */
#define TT_CAP_BOOTSTRAP (1u << 1) /* "bootstrap": hands a guest SSH keys and user-data (seed) */
#define TT_CAP_GUEST (1u << 2)     /* "guest": exec and copy inside the guest */
#define TT_CAP_SNAPSHOTS (1u << 3) /* "snapshots": memory snapshots, templates, clones */
#define TT_CAP_NIC_TAP (1u << 4)   /* "nic-tap": its NIC is a tap device made before start (nft) */
#define TT_CAP_NIC_VETH (1u << 5)  /* "nic-veth": a veth moved into its netns after start (nft) */
#define TT_CAP_HOSTFWD                                                                             \
    (1u << 6) /* "hostfwd": under --net user it forwards its public ports itself */
#define TT_CAP_ALL ((1u << 7) - 1)
/* The bit a name stands for, 0 for an unknown name (a newer worker's:
 * ignored, so a capability never appears by accident). */
uint32_t tt_cap_parse(const char *name);
/* The names of the bits in caps into names (at most max), in bit order;
 * returns how many. The strings are static. */
size_t tt_cap_names(uint32_t caps, const char **names, size_t max);

/* True if s is a valid env / tenant / image / host name:
 * [A-Za-z0-9._-], 1..64 chars, no leading dot. */
bool tt_name_valid(const char *s);
/* True if s is a CURVE public key in Z85: 40 characters that decode. */
#define TT_KEY_LEN 40
bool tt_key_valid(const char *s);
/* True for the roles an operator may bind a client key to: user, admin, gateway. */
bool tt_key_role_valid(const char *s);
/* True if s is a valid request id: printable ASCII without spaces, 1..64. */
bool tt_request_id_valid(const char *s);

/* IP address of VM id on a host: 10.10.(id/256).(id%256). buf >= 16. */
void tt_vm_ip(uint32_t vm_id, char *buf, size_t len);

/* Validate a decoded Request fully (every field, every range, the op set).
 * Returns 0 or -1 with a human reason in err. It does not check permissions
 * or state: that is the broker's job. */
int tt_request_validate(const Ttfleet__Request *req, char *err, size_t errlen);

/* Current wall clock in unix seconds and monotonic milliseconds. */
int64_t tt_now(void);
int64_t tt_mono_ms(void);

#endif
