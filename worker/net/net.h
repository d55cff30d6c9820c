/*
 * net: how the VMs of this host reach and are reached from the network.
 *
 * One backend per worker (`ttworker --net none|user|nft`):
 *
 *  - none: a process VM has only lo; a QEMU VM has no NIC.
 *  - user: QEMU user-mode networking (slirp), built by the qemu engine:
 *    each public port is a host forward on 127.0.0.1, and every VM runs
 *    with `restrict=on`: no outgoing network at all (with restrict=off
 *    slirp maps 10.0.2.2 to the host's loopback, which would let a guest
 *    reach host-local services). Needs no root and no namespace. Process VMs get no
 *    network (as with none). Nothing to do here: every call is a no-op.
 *  - nft: one bridge `ttbr0` (10.10.0.1/16), a persistent tap `tt<id>` per
 *    QEMU VM and a veth `tt<id>` per process VM (its peer is `eth0` inside
 *    the VM's network namespace, with the VM's IP, MAC and a default route
 *    via 10.10.0.1), and two nftables tables that we own:
 *    `bridge ttfleet`, for the frames a VM port (tt*) sends, before the
 *    bridge learns from them:
 *      sets port_mac (port . MAC), port_ip (port . IPv4): a frame must
 *          carry its port's MAC, an ARP its MAC and IP as sender, an IPv4
 *          packet its IP as source; anything else (IPv6...) is dropped;
 *      map port_grp: port -> mark = the env's group (net_group) | bit 31
 *          if deny-outgoing: every accepted frame is marked by its port;
 *      set port_in (port . mark): a frame leaves by a VM port only if the
 *          port is of the sender's group;
 *    `ip ttfleet`, for routed traffic:
 *      map tcp_pub, udp_pub: public port -> VM ip . guest port (DNAT on
 *          prerouting and local output, for local destination addresses);
 *      set member (VM ip . mark): a routed packet from a VM to 10.10/16
 *          must go to a VM of its group;
 *      forward: after `ct state established,related accept`, new
 *          connections from a port marked deny-outgoing are dropped, so
 *          inbound connections to a denied VM still work;
 *      input: nothing new from the bridge (no host service for VMs);
 *      masquerade of 10.10.0.0/16 towards anything else.
 *    bridge-nf-call-* are off in our namespace: bridged frames are judged
 *    by the bridge table only.
 *    Per-VM elements are added and deleted exactly by their keys, in one
 *    libnftables batch per change. Worker start rebuilds both tables from
 *    worker.db in one atomic batch and removes stray `tt*` bridge ports.
 *
 * The nft backend changes the network of the namespace it runs in: it
 * refuses the machine's initial network namespace unless told otherwise
 * (`--net-allow-host-netns`). Run the worker inside a namespace made for
 * it (`ttworker --netns NAME` or `ip netns exec NAME ttworker`).
 */
#ifndef TT_WORKER_NET_H
#define TT_WORKER_NET_H

#include <stdbool.h>
#include <stddef.h>

#include "ttproto.h"
#include "vm.h"

typedef enum { NET_NONE = 0, NET_USER = 1, NET_NFT = 2 } net_kind_t;

#define NET_BRIDGE "ttbr0"
#define NET_GATEWAY "10.10.0.1"
#define NET_PREFIX 16
#define NET_TABLE "ttfleet"

/* What the engine called engine can do (TT_CAP_*): the network gives a
 * VM a NIC by TT_CAP_NIC_TAP / TT_CAP_NIC_VETH (the engines wing's
 * engine_caps_of; NULL: no VM has a NIC). */
typedef uint32_t (*net_caps_fn)(const char *engine);

typedef struct {
    net_kind_t kind;
    bool allow_host_netns;
    bool entered_netns; /* the worker moved itself into a named namespace (--netns) */
    net_caps_fn engine_caps;
} net_config_t;

typedef struct net_t net_t;

/* Set the backend up (nft: check the namespace, bridge, ip_forward,
 * libnftables context). NULL with a reason. */
net_t *net_new(const net_config_t *cfg, char *err, size_t errlen);
/* Frees the backend; the bridge, taps and table stay for the VMs. */
void net_destroy(net_t **self_p);

const char *net_kind_name(net_kind_t kind);
/* "none", "user", "nft" -> kind; -1 if unknown. */
int net_kind_parse(const char *name);

/* True if this process runs in the machine's initial network namespace,
 * or if that cannot be told (then the caller must be told otherwise). */
bool net_in_host_netns(void);

/* The interface of a VM on the bridge: "tt<id>". buf >= 16. */
void net_ifname(uint32_t vm_id, char *buf, size_t len);

/* Worker start: make the table, bridge ports and taps match vms (every VM
 * held, n of them). 0 / -1 with a reason. */
int net_reconcile(net_t *self, vm_t *const *vms, size_t n, char *err, size_t errlen);

/* A VM was created: its map and set elements. */
int net_vm_add(net_t *self, const vm_t *vm, char *err, size_t errlen);
/* Before its engine starts it: the tap of a QEMU VM. */
int net_vm_before_start(net_t *self, const vm_t *vm, char *err, size_t errlen);
/* After its engine started it (vm->pid set): the veth of a process VM. */
int net_vm_after_start(net_t *self, const vm_t *vm, char *err, size_t errlen);
/* Its ports or deny-outgoing changed from old to vm: exact element
 * changes, live. */
int net_vm_update(net_t *self, const vm_t *old, const vm_t *vm, char *err, size_t errlen);
/* It is destroyed: its elements, tap or veth. */
int net_vm_remove(net_t *self, const vm_t *vm, char *err, size_t errlen);

/* The network group of an env ("tenant/name"): a VM reaches only VMs of
 * its group (exposed for unit tests). Never 0, bit 31 clear. */
uint32_t net_group(const char *env);

/* The nft text of the whole table for vms (exposed for unit tests).
 * Returns a malloc'd string or NULL. */
char *net_table_text(net_caps_fn caps, vm_t *const *vms, size_t n);
/* The nft text that changes the elements of old into those of vm (either
 * may be NULL: add all / delete all). Malloc'd; "" if nothing changes. */
char *net_elements_text(net_caps_fn caps, const vm_t *old, const vm_t *vm);

#endif
