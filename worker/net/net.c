/*
 * net: the network backends. See net.h for the picture.
 *
 * The nft backend speaks to the kernel through libnftables (rules and
 * elements, as nft command text in one batch per change: a batch applies
 * whole or not at all) and through nl.c (links and addresses). It never
 * reads command output. A VM has network only if its engine has a NIC to
 * give it: `qemu` (tap) and `process` (veth); hollow VMs are bookkeeping
 * and get nothing.
 */
#define _GNU_SOURCE
#include "net.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <nftables/libnftables.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nl.h"
#include "proc.h"

/* The deny-outgoing bit of a port's mark (the rest is its group). */
#define S_DENY_BIT 0x80000000u
#define S_DENY_HEX "0x80000000"

/* A VM with a NIC this backend gave elements to: the group check of
 * net_vm_add needs to know who holds which group. */
typedef struct {
    uint32_t vm_id, group;
    char env[VM_ENV_MAX];
} s_member_t;

struct net_t {
    net_config_t cfg;
    struct nft_ctx *nft;
    int nl; /* rtnetlink socket in our namespace */
    s_member_t *members;
    size_t n_members, cap_members;
};

/* ---- text buffer ---- */

typedef struct {
    char *s;
    size_t len, cap;
    bool oom;
} s_buf_t;

static void s_add(s_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_add(s_buf_t *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = b->s ? vsnprintf(b->s + b->len, room, fmt, ap) : -2;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 1024;
        while (n >= 0 && cap < b->len + (size_t)n + 1)
            cap *= 2;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->oom = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
}

static char *s_take(s_buf_t *b)
{
    if (b->oom) {
        free(b->s);
        return NULL;
    }
    if (!b->s)
        return strdup("");
    return b->s;
}

/* ---- names ---- */

static const char *s_kinds[] = {"none", "user", "nft"};

const char *net_kind_name(net_kind_t kind)
{
    return kind >= NET_NONE && kind <= NET_NFT ? s_kinds[kind] : "?";
}

int net_kind_parse(const char *name)
{
    for (int i = 0; i <= NET_NFT; i++)
        if (name && strcmp(name, s_kinds[i]) == 0)
            return i;
    return -1;
}

void net_ifname(uint32_t vm_id, char *buf, size_t len)
{
    snprintf(buf, len, "tt%u", vm_id);
}

/* Kernels since 6.x give the initial network namespace a fixed inode
 * (PROC_NET_INIT_INO); older ones allocate it at boot. */
#define S_NET_INIT_INO 0xEFFFFFF9u

bool net_in_host_netns(void)
{
    struct stat a, b;
    if (stat("/proc/self/ns/net", &a))
        return true; /* cannot tell: assume the worst */
    if (a.st_ino == S_NET_INIT_INO)
        return true;
    if (stat("/proc/1/ns/net", &b) == 0)
        return a.st_ino == b.st_ino && a.st_dev == b.st_dev;
    return true; /* pid 1 hidden (a sandbox) and an older kernel: cannot tell */
}

/* The VM's NIC, by what its engine declares: a tap made before start
 * (the engine opens it), a veth moved into its namespace after start. */
static bool s_is_tap(net_caps_fn caps, const vm_t *vm)
{
    return caps && (caps(vm->engine) & TT_CAP_NIC_TAP);
}

static bool s_is_veth(net_caps_fn caps, const vm_t *vm)
{
    return caps && (caps(vm->engine) & TT_CAP_NIC_VETH);
}

static bool s_has_nic(net_caps_fn caps, const vm_t *vm)
{
    return vm && (s_is_tap(caps, vm) || s_is_veth(caps, vm));
}

/* ---- nftables text ---- */

static bool s_has_port(const vm_t *vm, const vm_port_t *p)
{
    for (uint32_t i = 0; i < vm->n_ports; i++)
        if (vm->ports[i].public_port == p->public_port && vm->ports[i].guest == p->guest)
            return true;
    return false;
}

/* The network group of an env: VMs of one env share it, and the bridge
 * and forward rules let a VM reach only VMs of its own group. A hash of
 * "tenant/name" (31 bits, never 0), so the worker needs nothing the spec
 * does not carry; two envs that hash alike on one host are caught by
 * s_collision() and the later VM gets no network. */
uint32_t net_group(const char *env)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)env; *p; p++)
        h = (h ^ *p) * 16777619u;
    h &= ~S_DENY_BIT;
    return h ? h : 1;
}

static uint32_t s_mark(const vm_t *vm)
{
    return net_group(vm->env) | (vm->deny_outgoing ? S_DENY_BIT : 0);
}

/* The elements that bind a VM's bridge port to its MAC, IP and group. */
static void s_port_elements(s_buf_t *b, const vm_t *vm, bool add)
{
    char port[16];
    net_ifname(vm->vm_id, port, sizeof port);
    uint32_t g = net_group(vm->env);
    const char *verb = add ? "add" : "delete";
    s_add(b, "%s element bridge " NET_TABLE " port_mac { \"%s\" . %s }\n", verb, port, vm->mac);
    s_add(b, "%s element bridge " NET_TABLE " port_ip { \"%s\" . %s }\n", verb, port, vm->ip);
    if (add)
        s_add(b, "add element bridge " NET_TABLE " port_grp { \"%s\" : 0x%08x }\n", port,
              s_mark(vm));
    else
        s_add(b, "delete element bridge " NET_TABLE " port_grp { \"%s\" }\n", port);
    /* a denied VM's mark carries the deny bit: both marks are of its group */
    s_add(b, "%s element bridge " NET_TABLE " port_in { \"%s\" . 0x%08x, \"%s\" . 0x%08x }\n", verb,
          port, g, port, g | S_DENY_BIT);
    s_add(b, "%s element ip " NET_TABLE " member { %s . 0x%08x, %s . 0x%08x }\n", verb, vm->ip, g,
          vm->ip, g | S_DENY_BIT);
}

char *net_elements_text(net_caps_fn caps, const vm_t *old, const vm_t *vm)
{
    if (!s_has_nic(caps, old))
        old = NULL;
    if (!s_has_nic(caps, vm))
        vm = NULL;
    s_buf_t b = {0};
    static const char *maps[] = {"tcp_pub", "udp_pub"};
    /* an ip change is another VM: then every element goes */
    bool same_ip = old && vm && strcmp(old->ip, vm->ip) == 0;
    bool same_port = same_ip && old->vm_id == vm->vm_id && strcmp(old->mac, vm->mac) == 0 &&
                     strcmp(old->env, vm->env) == 0;
    for (int m = 0; m < 2; m++) {
        for (uint32_t i = 0; old && i < old->n_ports; i++)
            if (!same_ip || !s_has_port(vm, &old->ports[i]))
                s_add(&b, "delete element ip " NET_TABLE " %s { %u }\n", maps[m],
                      old->ports[i].public_port);
        for (uint32_t i = 0; vm && i < vm->n_ports; i++)
            if (!same_ip || !s_has_port(old, &vm->ports[i]))
                s_add(&b, "add element ip " NET_TABLE " %s { %u : %s . %u }\n", maps[m],
                      vm->ports[i].public_port, vm->ip, vm->ports[i].guest);
    }
    if (same_port) {
        if (old->deny_outgoing != vm->deny_outgoing) {
            char port[16];
            net_ifname(vm->vm_id, port, sizeof port);
            s_add(&b, "delete element bridge " NET_TABLE " port_grp { \"%s\" }\n", port);
            s_add(&b, "add element bridge " NET_TABLE " port_grp { \"%s\" : 0x%08x }\n", port,
                  s_mark(vm));
        }
    } else {
        if (old)
            s_port_elements(&b, old, false);
        if (vm)
            s_port_elements(&b, vm, true);
    }
    return s_take(&b);
}

/* True if vms[i] shares its group with a VM of another env that comes
 * before it (that one keeps the group; vms[i] gets no network). */
static bool s_collision(net_caps_fn caps, vm_t *const *vms, size_t n, size_t i, const char **with)
{
    uint32_t g = net_group(vms[i]->env);
    for (size_t j = 0; j < i && j < n; j++)
        if (s_has_nic(caps, vms[j]) && net_group(vms[j]->env) == g &&
            strcmp(vms[j]->env, vms[i]->env)) {
            if (with)
                *with = vms[j]->env;
            return true;
        }
    return false;
}

char *net_table_text(net_caps_fn caps, vm_t *const *vms, size_t n)
{
    s_buf_t b = {0};
    /* add + delete: the delete never fails, so the batch replaces whole */
    s_add(&b,
          "add table ip " NET_TABLE "\n"
          "delete table ip " NET_TABLE "\n"
          "add table bridge " NET_TABLE "\n"
          "delete table bridge " NET_TABLE "\n"
          "table ip " NET_TABLE " {\n"
          "  map tcp_pub { type inet_service : ipv4_addr . inet_service; }\n"
          "  map udp_pub { type inet_service : ipv4_addr . inet_service; }\n"
          "  set member { type ipv4_addr . mark; }\n"
          "  chain pre {\n"
          "    type nat hook prerouting priority dstnat; policy accept;\n"
          "    fib daddr type local dnat ip to tcp dport map @tcp_pub\n"
          "    fib daddr type local dnat ip to udp dport map @udp_pub\n"
          "  }\n"
          "  chain out {\n"
          "    type nat hook output priority -100; policy accept;\n"
          "    fib daddr type local dnat ip to tcp dport map @tcp_pub\n"
          "    fib daddr type local dnat ip to udp dport map @udp_pub\n"
          "  }\n"
          "  chain post {\n"
          "    type nat hook postrouting priority srcnat; policy accept;\n"
          "    ip saddr 10.10.0.0/16 ip daddr != 10.10.0.0/16 masquerade;\n"
          "  }\n"
          /* `fwd` is an nft keyword: the filter chains have longer names.
           * The mark was set by the bridge from the port a packet came
           * in by (never from its addresses). */
          "  chain filter_forward {\n"
          "    type filter hook forward priority filter; policy accept;\n"
          "    iifname \"" NET_BRIDGE "\" ip daddr 10.10.0.0/16 ip daddr . meta mark != "
          "@member drop;\n"
          "    ct state established,related accept\n"
          "    iifname \"" NET_BRIDGE "\" meta mark and " S_DENY_HEX " == " S_DENY_HEX " drop;\n"
          "  }\n"
          /* nothing of this host is a service for its VMs: the bridge
           * address, other local addresses and the namespace's own
           * services are closed to them (public ports are DNAT'ed in
           * prerouting and go through forward) */
          "  chain filter_input {\n"
          "    type filter hook input priority filter; policy accept;\n"
          "    ct state established,related accept\n"
          "    iifname \"" NET_BRIDGE "\" drop;\n"
          "  }\n"
          "}\n"
          /* Every frame a VM port sends: its own MAC, its own IP (and
           * ARP sender), IPv4 or ARP only; a port without elements
           * sends nothing. Between ports, a frame goes only to a port
           * of the sender's group. */
          "table bridge " NET_TABLE " {\n"
          "  set port_mac { type ifname . ether_addr; }\n"
          "  set port_ip { type ifname . ipv4_addr; }\n"
          "  map port_grp { type ifname : mark; }\n"
          "  set port_in { type ifname . mark; }\n"
          "  chain pre {\n"
          "    type filter hook prerouting priority -300; policy accept;\n"
          "    iifname \"tt*\" jump vm_port\n"
          "  }\n"
          "  chain vm_port {\n"
          "    iifname . ether saddr != @port_mac drop\n"
          "    meta mark set iifname map @port_grp\n"
          "    ether type arp iifname . arp saddr ether != @port_mac drop\n"
          "    ether type arp iifname . arp saddr ip != @port_ip drop\n"
          "    ether type arp accept\n"
          "    ether type ip iifname . ip saddr != @port_ip drop\n"
          "    ether type ip accept\n"
          "    drop\n"
          "  }\n"
          "  chain filter_forward {\n"
          "    type filter hook forward priority filter; policy accept;\n"
          "    oifname \"tt*\" oifname . meta mark != @port_in drop\n"
          "  }\n"
          "}\n");
    for (size_t i = 0; i < n; i++) {
        if (s_collision(caps, vms, n, i, NULL))
            continue;
        char *el = net_elements_text(caps, NULL, vms[i]);
        if (!el) {
            b.oom = true;
            break;
        }
        s_add(&b, "%s", el);
        free(el);
    }
    return s_take(&b);
}

/* Run one batch. 0 / -1 with libnftables' message. */
static int s_nft(net_t *self, const char *text, char *err, size_t errlen)
{
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (!*text)
        return 0;
    int rc = nft_run_cmd_from_buffer(self->nft, text);
    const char *msg = nft_ctx_get_error_buffer(self->nft);
    if (rc) {
        /* first line of the error is enough to say why */
        const char *nl = msg ? strchr(msg, '\n') : NULL;
        int len = nl ? (int)(nl - msg) : (msg ? (int)strlen(msg) : 0);
        snprintf(err, errlen, "nftables: %.*s", len > 300 ? 300 : len, msg ? msg : "failed");
    }
    return rc ? -1 : 0;
}

/* ---- links ---- */

static int s_bridge(net_t *self, char *err, size_t errlen)
{
    if (nl_bridge_add(self->nl, NET_BRIDGE) && errno != EEXIST) {
        snprintf(err, errlen, "create bridge %s: %s", NET_BRIDGE, strerror(errno));
        return -1;
    }
    if (nl_addr_add(self->nl, NET_BRIDGE, NET_GATEWAY, NET_PREFIX) && errno != EEXIST) {
        snprintf(err, errlen, "address of %s: %s", NET_BRIDGE, strerror(errno));
        return -1;
    }
    if (nl_link_up(self->nl, NET_BRIDGE, 0)) {
        snprintf(err, errlen, "bring %s up: %s", NET_BRIDGE, strerror(errno));
        return -1;
    }
    int fd = open("/proc/sys/net/ipv4/ip_forward", O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "1\n", 2) != 2) {
        snprintf(err, errlen, "enable ip_forward: %s", strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    /* Frames between two VM ports are judged by the bridge table only: with
     * br_netfilter (often built in, and on by default in every namespace)
     * they would also run through the ip hooks meant for routed traffic.
     * Per namespace; absent without br_netfilter. */
    static const char *calls[] = {"iptables", "ip6tables", "arptables"};
    for (size_t i = 0; i < sizeof calls / sizeof *calls; i++) {
        char path[96];
        snprintf(path, sizeof path, "/proc/sys/net/bridge/bridge-nf-call-%s", calls[i]);
        fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0 && errno == ENOENT)
            continue;
        if (fd < 0 || write(fd, "0\n", 2) != 2) {
            snprintf(err, errlen, "turn off %s: %s", path, strerror(errno));
            if (fd >= 0)
                close(fd);
            return -1;
        }
        close(fd);
    }
    return 0;
}

/* The tap of a QEMU VM: made if missing (persistent, so it outlives QEMU
 * and the worker), on the bridge, up. */
static int s_tap(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    char name[16];
    net_ifname(vm->vm_id, name, sizeof name);
    if (!nl_ifindex(self->nl, name) && nl_tap_add(name) && errno != EBUSY) {
        snprintf(err, errlen, "create tap %s: %s", name, strerror(errno));
        return -1;
    }
    int br = nl_ifindex(self->nl, NET_BRIDGE);
    if (!br || nl_link_up(self->nl, name, br)) {
        snprintf(err, errlen, "attach %s to %s: %s", name, NET_BRIDGE, strerror(errno));
        return -1;
    }
    return 0;
}

/* The veth of a running process VM: host side on the bridge, peer eth0 in
 * the VM's namespace with its address and route. */
static int s_veth(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    char name[16];
    net_ifname(vm->vm_id, name, sizeof name);
    if (vm->pid <= 0 || !proc_alive(vm->pid, vm->start_time)) {
        snprintf(err, errlen, "veth %s: the VM process is not running", name);
        return -1;
    }
    if (nl_ifindex(self->nl, name))
        nl_link_del(self->nl, name); /* left from an earlier run of the VM */
    if (nl_veth_add(self->nl, name, "eth0", vm->pid, vm->mac)) {
        snprintf(err, errlen, "create veth %s: %s", name, strerror(errno));
        return -1;
    }
    int br = nl_ifindex(self->nl, NET_BRIDGE);
    if (!br || nl_link_up(self->nl, name, br)) {
        snprintf(err, errlen, "attach %s to %s: %s", name, NET_BRIDGE, strerror(errno));
        return -1;
    }
    int fd = nl_open_ns(vm->pid);
    if (fd < 0) {
        snprintf(err, errlen, "netlink in the namespace of vm %u: %s", vm->vm_id, strerror(errno));
        return -1;
    }
    int rc = 0;
    const char *step = "address";
    if ((nl_addr_add(fd, "eth0", vm->ip, NET_PREFIX) && errno != EEXIST) ||
        (step = "link up", nl_link_up(fd, "eth0", 0)) ||
        (step = "default route", nl_route_default(fd, NET_GATEWAY) && errno != EEXIST)) {
        snprintf(err, errlen, "vm %u eth0 %s: %s", vm->vm_id, step, strerror(errno));
        rc = -1;
    }
    close(fd);
    return rc;
}

static void s_del_link(net_t *self, uint32_t vm_id)
{
    char name[16];
    net_ifname(vm_id, name, sizeof name);
    nl_link_del(self->nl, name);
}

/* ---- group members ---- */

static s_member_t *s_member(net_t *self, uint32_t vm_id)
{
    for (size_t i = 0; i < self->n_members; i++)
        if (self->members[i].vm_id == vm_id)
            return &self->members[i];
    return NULL;
}

/* The env of another env whose VMs on this host hold vm's group, or NULL. */
static const char *s_group_taken(net_t *self, const vm_t *vm)
{
    uint32_t g = net_group(vm->env);
    for (size_t i = 0; i < self->n_members; i++)
        if (self->members[i].group == g && strcmp(self->members[i].env, vm->env))
            return self->members[i].env;
    return NULL;
}

static int s_member_add(net_t *self, const vm_t *vm)
{
    if (s_member(self, vm->vm_id))
        return 0;
    if (self->n_members == self->cap_members) {
        size_t cap = self->cap_members ? self->cap_members * 2 : 64;
        s_member_t *m = realloc(self->members, cap * sizeof *m);
        if (!m)
            return -1;
        self->members = m;
        self->cap_members = cap;
    }
    s_member_t *m = &self->members[self->n_members++];
    m->vm_id = vm->vm_id;
    m->group = net_group(vm->env);
    snprintf(m->env, sizeof m->env, "%s", vm->env);
    return 0;
}

static void s_member_del(net_t *self, uint32_t vm_id)
{
    s_member_t *m = s_member(self, vm_id);
    if (m)
        *m = self->members[--self->n_members];
}

/* ---- backend ---- */

net_t *net_new(const net_config_t *cfg, char *err, size_t errlen)
{
    net_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->nl = -1;
    if (cfg->kind != NET_NFT)
        return self;
    if (!cfg->entered_netns && net_in_host_netns() && !cfg->allow_host_netns) {
        snprintf(err, errlen,
                 "--net nft changes the network of the namespace it runs in and this is the "
                 "machine's initial network namespace: run the worker in a namespace made "
                 "for it (--netns NAME or `ip netns exec NAME ttworker`), or give "
                 "--net-allow-host-netns if you mean it");
        goto fail;
    }
    self->nl = nl_open();
    if (self->nl < 0) {
        snprintf(err, errlen, "netlink socket: %s", strerror(errno));
        goto fail;
    }
    self->nft = nft_ctx_new(NFT_CTX_DEFAULT);
    if (!self->nft || nft_ctx_buffer_output(self->nft) || nft_ctx_buffer_error(self->nft)) {
        snprintf(err, errlen, "libnftables context could not be created");
        goto fail;
    }
    if (s_bridge(self, err, errlen))
        goto fail;
    return self;
fail:
    net_destroy(&self);
    return NULL;
}

void net_destroy(net_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    net_t *self = *self_p;
    if (self->nft)
        nft_ctx_free(self->nft);
    if (self->nl >= 0)
        close(self->nl);
    free(self->members);
    free(self);
    *self_p = NULL;
}

typedef struct {
    char names[256][16];
    size_t n;
} s_ports_t;

static void s_collect(const char *name, void *arg)
{
    s_ports_t *p = arg;
    if (p->n < sizeof p->names / sizeof *p->names)
        snprintf(p->names[p->n++], sizeof p->names[0], "%s", name);
}

static const vm_t *s_find(vm_t *const *vms, size_t n, const char *ifname)
{
    char buf[16];
    for (size_t i = 0; i < n; i++) {
        net_ifname(vms[i]->vm_id, buf, sizeof buf);
        if (strcmp(buf, ifname) == 0)
            return vms[i];
    }
    return NULL;
}

int net_reconcile(net_t *self, vm_t *const *vms, size_t n, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT)
        return 0;
    char *text = net_table_text(self->cfg.engine_caps, vms, n);
    int rc = s_nft(self, text, err, errlen);
    free(text);
    if (rc)
        return -1;
    self->n_members = 0;
    for (size_t i = 0; i < n; i++) {
        const char *with = NULL;
        if (!s_has_nic(self->cfg.engine_caps, vms[i]))
            continue;
        if (s_collision(self->cfg.engine_caps, vms, n, i, &with))
            zsys_warning("vm %u: env %s has the network group of env %s on this host: "
                         "it gets no network",
                         vms[i]->vm_id, vms[i]->env, with);
        else if (s_member_add(self, vms[i])) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
    }
    /* bridge ports: ours are tt<digits>; one without a VM that should
     * have it is a leftover (a crash between destroy and commit) */
    int br = nl_ifindex(self->nl, NET_BRIDGE);
    s_ports_t *ports = calloc(1, sizeof *ports);
    if (!ports) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (br)
        nl_each_port(self->nl, br, s_collect, ports);
    for (size_t i = 0; i < ports->n; i++) {
        const char *name = ports->names[i];
        if (strncmp(name, "tt", 2) || !name[2] ||
            strspn(name + 2, "0123456789") != strlen(name + 2))
            continue;
        const vm_t *vm = s_find(vms, n, name);
        bool keep = vm && (s_is_tap(self->cfg.engine_caps, vm) ||
                           (s_is_veth(self->cfg.engine_caps, vm) && vm_holds_cpu(vm)));
        if (!keep) {
            nl_link_del(self->nl, name);
            fprintf(stderr, "ttworker: net: removed stray link %s\n", name);
        }
    }
    free(ports);
    rc = 0;
    char why[256];
    for (size_t i = 0; i < n; i++) {
        const vm_t *vm = vms[i];
        char name[16];
        net_ifname(vm->vm_id, name, sizeof name);
        int r = 0;
        if (s_is_tap(self->cfg.engine_caps, vm))
            r = s_tap(self, vm, why, sizeof why);
        else if (s_is_veth(self->cfg.engine_caps, vm) && vm_holds_cpu(vm) && vm->pid &&
                 proc_alive(vm->pid, vm->start_time) && !nl_ifindex(self->nl, name))
            r = s_veth(self, vm, why, sizeof why);
        if (r && rc == 0) {
            snprintf(err, errlen, "%s", why);
            rc = -1;
        }
    }
    return rc;
}

int net_vm_add(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT || !s_has_nic(self->cfg.engine_caps, vm))
        return 0;
    const char *with = s_group_taken(self, vm);
    if (with) {
        snprintf(err, errlen, "env %s has the network group of env %s on this host", vm->env, with);
        return -1;
    }
    if (s_member_add(self, vm)) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *text = net_elements_text(self->cfg.engine_caps, NULL, vm);
    int rc = s_nft(self, text, err, errlen);
    free(text);
    return rc;
}

int net_vm_before_start(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT || !s_has_nic(self->cfg.engine_caps, vm))
        return 0;
    if (!s_member(self, vm->vm_id)) {
        const char *with = s_group_taken(self, vm);
        if (with)
            snprintf(err, errlen,
                     "env %s has the network group of env %s on this host: no "
                     "network for vm %u",
                     vm->env, with, vm->vm_id);
        else
            snprintf(err, errlen, "vm %u has no network elements yet (a rebuild is pending)",
                     vm->vm_id);
        return -1;
    }
    if (!s_is_tap(self->cfg.engine_caps, vm))
        return 0;
    return s_tap(self, vm, err, errlen);
}

int net_vm_after_start(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT || !s_is_veth(self->cfg.engine_caps, vm))
        return 0;
    return s_veth(self, vm, err, errlen);
}

int net_vm_update(net_t *self, const vm_t *old, const vm_t *vm, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT ||
        (s_has_nic(self->cfg.engine_caps, vm) && !s_member(self, vm->vm_id)))
        return 0; /* a VM without network (group collision) stays without */
    char *text = net_elements_text(self->cfg.engine_caps, old, vm);
    int rc = s_nft(self, text, err, errlen);
    free(text);
    return rc;
}

int net_vm_remove(net_t *self, const vm_t *vm, char *err, size_t errlen)
{
    if (self->cfg.kind != NET_NFT || !s_has_nic(self->cfg.engine_caps, vm))
        return 0;
    s_del_link(self, vm->vm_id);
    bool had = s_member(self, vm->vm_id) != NULL;
    s_member_del(self, vm->vm_id);
    if (!had)
        return 0; /* it never got elements (group collision) */
    char *text = net_elements_text(self->cfg.engine_caps, vm, NULL);
    int rc = s_nft(self, text, err, errlen);
    free(text);
    return rc;
}
