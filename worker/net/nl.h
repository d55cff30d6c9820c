/*
 * nl: the few rtnetlink requests the nft network backend needs.
 *
 * Bridges, veth pairs, taps, addresses and a default route, made with
 * netlink messages of our own rather than by running `ip` and reading its
 * output. A netlink socket belongs to the network namespace it was created
 * in: nl_open_ns() makes one inside another namespace (a process VM's) by
 * switching the calling thread there for the socket() call only.
 * Everything works on stack buffers and returns 0 / -1 with errno set
 * (the kernel's answer), so callers can say why.
 */
#ifndef TT_WORKER_NL_H
#define TT_WORKER_NL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A NETLINK_ROUTE socket in the caller's namespace, or in the network
 * namespace of process pid. -1 on failure. */
int nl_open(void);
int nl_open_ns(pid_t pid);

/* Create a bridge. EEXIST if it exists. */
int nl_bridge_add(int fd, const char *name);
/* Create a veth pair: name here, peer named peer_name in the network
 * namespace of peer_pid, with MAC peer_mac ("52:54:00:..", may be NULL). */
int nl_veth_add(int fd, const char *name, const char *peer_name, pid_t peer_pid,
                const char *peer_mac);
/* Create a persistent tap (IFF_TAP | IFF_NO_PI) for QEMU to open by name. */
int nl_tap_add(const char *name);
int nl_link_del(int fd, const char *name);
/* Set the master (bridge ifindex, 0 = leave) and bring the link up. */
int nl_link_up(int fd, const char *name, int master_ifindex);
/* Add an IPv4 address; EEXIST if present. */
int nl_addr_add(int fd, const char *name, const char *ip, int prefix);
/* Add a default route via gw. */
int nl_route_default(int fd, const char *gw);

/* Interface index of name in fd's namespace (0 if none). */
int nl_ifindex(int fd, const char *name);

/* Call fn for every link whose master is master_ifindex. 0 / -1. */
int nl_each_port(int fd, int master_ifindex, void (*fn)(const char *name, void *arg), void *arg);

#endif
