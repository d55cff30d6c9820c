/*
 * nl: rtnetlink requests on stack buffers. See nl.h.
 *
 * One request at a time: send it with NLM_F_ACK and read until the ack
 * (an NLMSG_ERROR whose error is 0 or -errno). Interface indexes are
 * looked up with RTM_GETLINK, not if_nametoindex(), so they come from the
 * socket's namespace, not the caller's.
 */
#define _GNU_SOURCE
#include "nl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_link.h>
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define S_BUF 4096

typedef struct {
    struct nlmsghdr h;
    char data[S_BUF];
} s_req_t;

static uint32_t s_seq;

static struct rtattr *s_attr(struct nlmsghdr *h, int type, const void *data, size_t len)
{
    struct rtattr *a = (struct rtattr *)((char *)h + NLMSG_ALIGN(h->nlmsg_len));
    a->rta_type = (unsigned short)type;
    a->rta_len = (unsigned short)RTA_LENGTH(len);
    if (len)
        memcpy(RTA_DATA(a), data, len);
    h->nlmsg_len = NLMSG_ALIGN(h->nlmsg_len) + RTA_ALIGN(a->rta_len);
    return a;
}

static void s_nest_end(struct nlmsghdr *h, struct rtattr *nest)
{
    nest->rta_len = (unsigned short)((char *)h + h->nlmsg_len - (char *)nest);
}

static void s_init(s_req_t *r, int type, int flags, size_t payload)
{
    memset(r, 0, sizeof *r);
    r->h.nlmsg_len = (uint32_t)NLMSG_LENGTH(payload);
    r->h.nlmsg_type = (uint16_t)type;
    r->h.nlmsg_flags = (uint16_t)(NLM_F_REQUEST | NLM_F_ACK | flags);
    r->h.nlmsg_seq = ++s_seq;
}

/* Send and wait for the ack. 0 / -1 with errno from the kernel. */
static int s_talk(int fd, s_req_t *r)
{
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(fd, &r->h, r->h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    char buf[S_BUF];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            if (n == 0)
                errno = EIO;
            return -1;
        }
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != r->h.nlmsg_seq || h->nlmsg_type != NLMSG_ERROR)
                continue;
            int e = ((struct nlmsgerr *)NLMSG_DATA(h))->error;
            if (e == 0)
                return 0;
            errno = -e;
            return -1;
        }
    }
}

int nl_open(void)
{
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0)
        return -1;
    struct timeval tv = {2, 0}; /* a kernel answer never takes this long */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

int nl_open_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/net", (int)pid);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int fd = -1, e = 0;
    if (target >= 0 && self >= 0 && setns(target, CLONE_NEWNET) == 0) {
        fd = nl_open();
        e = errno;
        if (setns(self, CLONE_NEWNET)) {
            /* cannot get back: this thread would act in the VM's namespace */
            if (fd >= 0)
                close(fd);
            fd = -1;
            e = errno;
        }
    } else {
        e = errno;
    }
    if (target >= 0)
        close(target);
    if (self >= 0)
        close(self);
    errno = e;
    return fd;
}

static int s_name_ok(const char *name)
{
    if (!name || !*name || strlen(name) >= IFNAMSIZ) {
        errno = EINVAL;
        return -1;
    }
    return 0;
}

static int s_newlink(int fd, const char *name, const char *kind, const char *peer, pid_t peer_pid,
                     const char *peer_mac)
{
    if (s_name_ok(name) || (peer && s_name_ok(peer)))
        return -1;
    s_req_t r;
    s_init(&r, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifinfomsg));
    struct ifinfomsg *ifi = NLMSG_DATA(&r.h);
    ifi->ifi_family = AF_UNSPEC;
    s_attr(&r.h, IFLA_IFNAME, name, strlen(name) + 1);
    struct rtattr *li = s_attr(&r.h, IFLA_LINKINFO, NULL, 0);
    s_attr(&r.h, IFLA_INFO_KIND, kind, strlen(kind));
    if (peer) {
        struct rtattr *data = s_attr(&r.h, IFLA_INFO_DATA, NULL, 0);
        struct rtattr *pi = s_attr(&r.h, VETH_INFO_PEER, NULL, 0);
        struct ifinfomsg pifi = {.ifi_family = AF_UNSPEC};
        /* the peer's ifinfomsg sits in front of its attributes */
        memcpy((char *)&r.h + r.h.nlmsg_len, &pifi, sizeof pifi);
        r.h.nlmsg_len += NLMSG_ALIGN(sizeof pifi);
        s_attr(&r.h, IFLA_IFNAME, peer, strlen(peer) + 1);
        if (peer_pid > 0) {
            uint32_t p = (uint32_t)peer_pid;
            s_attr(&r.h, IFLA_NET_NS_PID, &p, sizeof p);
        }
        unsigned char mac[6];
        if (peer_mac && sscanf(peer_mac, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2],
                               &mac[3], &mac[4], &mac[5]) == 6)
            s_attr(&r.h, IFLA_ADDRESS, mac, sizeof mac);
        s_nest_end(&r.h, pi);
        s_nest_end(&r.h, data);
    }
    s_nest_end(&r.h, li);
    return s_talk(fd, &r);
}

int nl_bridge_add(int fd, const char *name)
{
    return s_newlink(fd, name, "bridge", NULL, 0, NULL);
}

int nl_veth_add(int fd, const char *name, const char *peer_name, pid_t peer_pid,
                const char *peer_mac)
{
    return s_newlink(fd, name, "veth", peer_name, peer_pid, peer_mac);
}

int nl_tap_add(const char *name)
{
    if (s_name_ok(name))
        return -1;
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    memcpy(ifr.ifr_name, name, strlen(name));
    int rc = ioctl(fd, TUNSETIFF, &ifr) || ioctl(fd, TUNSETPERSIST, 1) ? -1 : 0;
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

int nl_ifindex(int fd, const char *name)
{
    if (s_name_ok(name))
        return 0;
    s_req_t r;
    s_init(&r, RTM_GETLINK, 0, sizeof(struct ifinfomsg));
    r.h.nlmsg_flags = NLM_F_REQUEST;
    s_attr(&r.h, IFLA_IFNAME, name, strlen(name) + 1);
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(fd, &r.h, r.h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return 0;
    char buf[S_BUF * 2];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != r.h.nlmsg_seq)
                continue;
            if (h->nlmsg_type == RTM_NEWLINK)
                return ((struct ifinfomsg *)NLMSG_DATA(h))->ifi_index;
            if (h->nlmsg_type == NLMSG_ERROR) {
                errno = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
                return 0;
            }
        }
    }
}

/* A request of type about the existing link name. -1 (ENODEV) if none. */
static int s_link_req(int fd, const char *name, int type, s_req_t *r)
{
    int idx = nl_ifindex(fd, name);
    if (!idx) {
        errno = ENODEV;
        return -1;
    }
    s_init(r, type, 0, sizeof(struct ifinfomsg));
    struct ifinfomsg *ifi = NLMSG_DATA(&r->h);
    ifi->ifi_family = AF_UNSPEC;
    ifi->ifi_index = idx;
    return 0;
}

int nl_link_del(int fd, const char *name)
{
    s_req_t r;
    if (s_link_req(fd, name, RTM_DELLINK, &r))
        return -1;
    return s_talk(fd, &r);
}

int nl_link_up(int fd, const char *name, int master_ifindex)
{
    s_req_t r;
    if (s_link_req(fd, name, RTM_NEWLINK, &r))
        return -1;
    struct ifinfomsg *ifi = NLMSG_DATA(&r.h);
    ifi->ifi_flags = IFF_UP;
    ifi->ifi_change = IFF_UP;
    if (master_ifindex > 0) {
        uint32_t m = (uint32_t)master_ifindex;
        s_attr(&r.h, IFLA_MASTER, &m, sizeof m);
    }
    return s_talk(fd, &r);
}

int nl_addr_add(int fd, const char *name, const char *ip, int prefix)
{
    struct in_addr a;
    int idx = nl_ifindex(fd, name);
    if (!idx) {
        errno = ENODEV;
        return -1;
    }
    if (inet_pton(AF_INET, ip, &a) != 1 || prefix < 0 || prefix > 32) {
        errno = EINVAL;
        return -1;
    }
    s_req_t r;
    s_init(&r, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct ifaddrmsg));
    struct ifaddrmsg *ifa = NLMSG_DATA(&r.h);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)prefix;
    ifa->ifa_index = (unsigned)idx;
    s_attr(&r.h, IFA_LOCAL, &a, sizeof a);
    s_attr(&r.h, IFA_ADDRESS, &a, sizeof a);
    return s_talk(fd, &r);
}

int nl_route_default(int fd, const char *gw)
{
    struct in_addr a;
    if (inet_pton(AF_INET, gw, &a) != 1) {
        errno = EINVAL;
        return -1;
    }
    s_req_t r;
    s_init(&r, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, sizeof(struct rtmsg));
    struct rtmsg *rt = NLMSG_DATA(&r.h);
    rt->rtm_family = AF_INET;
    rt->rtm_table = RT_TABLE_MAIN;
    rt->rtm_protocol = RTPROT_STATIC;
    rt->rtm_scope = RT_SCOPE_UNIVERSE;
    rt->rtm_type = RTN_UNICAST;
    s_attr(&r.h, RTA_GATEWAY, &a, sizeof a);
    return s_talk(fd, &r);
}

int nl_each_port(int fd, int master_ifindex, void (*fn)(const char *name, void *arg), void *arg)
{
    s_req_t r;
    s_init(&r, RTM_GETLINK, NLM_F_DUMP, sizeof(struct ifinfomsg));
    r.h.nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    struct sockaddr_nl sa = {.nl_family = AF_NETLINK};
    if (sendto(fd, &r.h, r.h.nlmsg_len, 0, (struct sockaddr *)&sa, sizeof sa) < 0)
        return -1;
    char buf[S_BUF * 8];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        for (struct nlmsghdr *h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)n);
             h = NLMSG_NEXT(h, n)) {
            if (h->nlmsg_seq != r.h.nlmsg_seq)
                continue;
            if (h->nlmsg_type == NLMSG_DONE)
                return 0;
            if (h->nlmsg_type == NLMSG_ERROR) {
                errno = -((struct nlmsgerr *)NLMSG_DATA(h))->error;
                return -1;
            }
            if (h->nlmsg_type != RTM_NEWLINK)
                continue;
            struct ifinfomsg *ifi = NLMSG_DATA(h);
            int len = (int)IFLA_PAYLOAD(h);
            const char *name = NULL;
            int master = 0;
            for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
                if (a->rta_type == IFLA_IFNAME)
                    name = RTA_DATA(a);
                else if (a->rta_type == IFLA_MASTER)
                    master = (int)*(uint32_t *)RTA_DATA(a);
            }
            if (name && master == master_ifindex)
                fn(name, arg);
        }
    }
}
