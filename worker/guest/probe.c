/*
 * probe: readiness probes as small state machines. See probe.h.
 *
 * Every attempt goes IDLE -> (CONNECT -> IO ...) -> IDLE: a network probe
 * connects without blocking, then reads a banner (ssh) or sends a request
 * and reads the status line (http); an agent probe runs a short guest agent
 * conversation through the qga parser (sync, then for cloud-init open/read/
 * close of result.json). Any failure or PROBE_ATTEMPT_MS without an answer
 * ends the attempt; the next starts PROBE_RETRY_MS later. Reads are bounded
 * (a banner or status line of a few hundred bytes; result.json 64 KiB).
 */
#define _GNU_SOURCE
#include "probe.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "qga.h"

#define S_RESULT_JSON "/run/cloud-init/result.json"

typedef enum { S_IDLE, S_CONNECT, S_IO } s_state_t;

struct probe_t {
    probe_spec_t spec;
    probe_target_t target;
    tt_console_re_t *re;
    off_t console_seen; /* console size at the last match that failed, -1 before one */
    bool ready;
    s_state_t state;
    int fd;
    short events;
    int64_t due;      /* next step at the latest */
    int64_t deadline; /* end of this attempt */
    unsigned attempts;
    char buf[512];
    size_t len;
    qga_t *qga;
    int stage; /* agent conversation: 0 sync, 1 open, 2 read, 3 close */
    long long handle;
    uint32_t sync_id;
    char detail[256];
};

probe_t *probe_new(const probe_spec_t *spec, const probe_target_t *target, int64_t now_ms)
{
    probe_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->spec = *spec;
    self->target = *target;
    self->fd = -1;
    self->due = now_ms;
    if (spec->kind == PROBE_CONSOLE) {
        char why[160];
        if (!(self->re = tt_console_re_new(spec->arg, why, sizeof why))) {
            free(self);
            return NULL;
        }
        self->console_seen = -1;
    }
    snprintf(self->detail, sizeof self->detail, "not probed yet");
    return self;
}

static void s_end_attempt(probe_t *self, int64_t now, const char *why)
{
    if (self->fd >= 0)
        close(self->fd);
    self->fd = -1;
    self->events = 0;
    self->state = S_IDLE;
    self->len = 0;
    qga_destroy(&self->qga);
    if (why)
        snprintf(self->detail, sizeof self->detail, "%s", why);
    self->due = now + PROBE_RETRY_MS;
}

void probe_destroy(probe_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    probe_t *self = *self_p;
    s_end_attempt(self, 0, NULL);
    tt_console_re_destroy(&self->re);
    free(self);
    *self_p = NULL;
}

int probe_fd(const probe_t *self, short *events)
{
    *events = self->events;
    return self->fd;
}

int64_t probe_due(const probe_t *self)
{
    return self->due;
}

const char *probe_detail(const probe_t *self)
{
    return self->detail;
}

unsigned probe_attempts(const probe_t *self)
{
    return self->attempts;
}

/* The port to dial for the spec's guest port; 0 when the target maps only
 * its own ports and this is not one of them. */
static uint16_t s_dial_port(const probe_t *self)
{
    for (uint32_t i = 0; i < self->target.n_ports && i < PROBE_MAP_MAX; i++)
        if (self->target.ports[i].guest == self->spec.port)
            return self->target.ports[i].dial;
    return self->target.mapped_only ? 0 : self->spec.port;
}

#define S_OWNER_INODES 16

/* Does process pid hold a TCP socket listening on 127.0.0.1:port or
 * *:port (IPv4, in pid's network namespace)? 1 yes, 0 no. Reads
 * /proc/PID/net/tcp for the listeners' inodes and owners, then /proc/PID/fd
 * for a socket with one of those inodes. Where the fds cannot be read (a
 * worker without CAP_SYS_PTRACE and a QEMU under --vm-user: readlink needs
 * ptrace access), the listener must belong to pid's user instead. */
static int s_port_owned(int pid, uint16_t port)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/net/tcp", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    unsigned long inodes[S_OWNER_INODES];
    unsigned uids[S_OWNER_INODES];
    int n = 0;
    char line[512];
    if (!fgets(line, sizeof line, f)) { /* the header */
        fclose(f);
        return 0;
    }
    while (n < S_OWNER_INODES && fgets(line, sizeof line, f)) {
        unsigned laddr, lport, st, uid;
        unsigned long inode;
        /* sl local rem st tx:rx tr:when retrnsmt uid timeout inode */
        if (sscanf(line, " %*u: %8x:%4x %*8x:%*4x %2x %*x:%*x %*x:%*x %*x %u %*u %lu", &laddr,
                   &lport, &st, &uid, &inode) != 5)
            continue;
        /* the address is printed as the word in memory: network order */
        bool local = ntohl(laddr) == INADDR_LOOPBACK || laddr == 0;
        if (st == 0x0A && lport == port && local && inode) {
            inodes[n] = inode;
            uids[n++] = uid;
        }
    }
    fclose(f);
    if (n == 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    int found = 0;
    bool denied = d == NULL;
    struct dirent *de;
    while (d && !found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char fdpath[600], link[64];
        snprintf(fdpath, sizeof fdpath, "%s/%s", path, de->d_name);
        ssize_t len = readlink(fdpath, link, sizeof link - 1);
        unsigned long inode;
        if (len <= 0) {
            denied |= errno == EACCES || errno == EPERM;
            continue;
        }
        link[len] = 0;
        if (sscanf(link, "socket:[%lu]", &inode) != 1)
            continue;
        for (int i = 0; i < n && !found; i++)
            found = inodes[i] == inode;
    }
    if (d)
        closedir(d);
    if (found || !denied)
        return found;
    struct stat ps;
    snprintf(path, sizeof path, "/proc/%d", pid);
    if (stat(path, &ps) != 0)
        return 0;
    for (int i = 0; i < n; i++)
        if (uids[i] == (unsigned)ps.st_uid)
            return 1;
    return 0;
}

static int s_console(probe_t *self, int64_t now)
{
    int fd = open(self->target.console_log, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        s_end_attempt(self, now, "no console log yet");
        return 0;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        close(fd);
        s_end_attempt(self, now, "console log unreadable");
        return 0;
    }
    if (sb.st_size == self->console_seen) {
        /* nothing new since the last match failed: no need to match again */
        close(fd);
        s_end_attempt(self, now, self->detail[0] ? NULL : "the console does not match yet");
        return 0;
    }
    off_t start = sb.st_size > PROBE_CONSOLE_TAIL ? sb.st_size - PROBE_CONSOLE_TAIL : 0;
    char *tail = malloc(PROBE_CONSOLE_TAIL);
    ssize_t n = tail ? pread(fd, tail, PROBE_CONSOLE_TAIL, start) : -1;
    close(fd);
    /* the match is bounded (tt_console_re_match): a hostile pattern or
     * guest line costs this loop a few ms, not minutes */
    int hit = n > 0 ? tt_console_re_match(self->re, tail, (size_t)n) : 0;
    free(tail);
    self->console_seen = hit == 1 ? -1 : sb.st_size;
    s_end_attempt(self, now,
                  hit == 1    ? NULL
                  : hit < 0   ? "the console regex is too costly to match (PCRE2 match limit): "
                                "simplify it"
                              : "the console does not match yet");
    return hit == 1;
}

static int s_send(probe_t *self, const char *data, size_t len)
{
    ssize_t n = send(self->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    return n == (ssize_t)len ? 0 : -1;
}

static int s_agent_send(probe_t *self, const char *cmd, json_t *args)
{
    char *req = qga_request(cmd, args);
    int rc = req ? s_send(self, req, strlen(req)) : -1;
    free(req);
    return rc;
}

static void s_connect(probe_t *self, int64_t now)
{
    self->attempts++;
    self->deadline = now + PROBE_ATTEMPT_MS;
    self->due = self->deadline;
    self->len = 0;
    self->stage = 0;
    bool unix_sock = self->spec.kind == PROBE_AGENT || self->spec.kind == PROBE_CLOUD_INIT;
    self->fd = socket(unix_sock ? AF_UNIX : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (self->fd < 0) {
        s_end_attempt(self, now, "socket failed");
        return;
    }
    int rc;
    if (unix_sock) {
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", self->target.agent_sock);
        rc = connect(self->fd, (struct sockaddr *)&sa, sizeof sa);
    } else {
        uint16_t dial = s_dial_port(self);
        if (dial == 0) {
            char why[200];
            snprintf(why, sizeof why,
                     "guest port %u is not one of this VM's ports: a probe reaches only the VM "
                     "(add the port to the env)",
                     (unsigned)self->spec.port);
            s_end_attempt(self, now, why);
            return;
        }
        if (self->target.unreachable) {
            s_end_attempt(self, now,
                          "this VM's ports are not forwarded on the host (only QEMU VMs under "
                          "--net user, or VMs under --net nft, are reachable): a network probe "
                          "would reach another program; use console:REGEX, agent or none");
            return;
        }
        if (self->target.owner_pid > 0 && s_port_owned(self->target.owner_pid, dial) != 1) {
            char why[200];
            snprintf(why, sizeof why,
                     "public port %u is not forwarded by this VM's process (its live update "
                     "failed, or another program holds the port): a probe reaches only the VM",
                     (unsigned)dial);
            s_end_attempt(self, now, why);
            return;
        }
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(dial)};
        if (inet_pton(AF_INET, self->target.host, &sa.sin_addr) != 1) {
            s_end_attempt(self, now, "the VM has no IPv4 address to probe");
            return;
        }
        rc = connect(self->fd, (struct sockaddr *)&sa, sizeof sa);
    }
    if (rc && errno != EINPROGRESS) {
        char why[200];
        snprintf(why, sizeof why, "connect: %s", strerror(errno));
        s_end_attempt(self, now, why);
        return;
    }
    self->state = S_CONNECT;
    self->events = POLLOUT;
}

/* The socket connected: what the attempt does next. 1 = ready. */
static int s_connected(probe_t *self, int64_t now)
{
    self->state = S_IO;
    self->events = POLLIN;
    switch (self->spec.kind) {
    case PROBE_TCP:
        s_end_attempt(self, now, NULL);
        return 1;
    case PROBE_SSH:
        return 0;
    case PROBE_HTTP: {
        char req[PROBE_SPEC_MAX + 128];
        int n =
            snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n",
                     self->spec.arg, self->target.host);
        if (s_send(self, req, (size_t)n))
            s_end_attempt(self, now, "http: send failed");
        return 0;
    }
    default: {
        self->qga = qga_new();
        self->sync_id = (uint32_t)(now & 0x7fffffff) ^ self->attempts;
        if (!self->qga) {
            s_end_attempt(self, now, "out of memory");
            return 0;
        }
        qga_expect_sync(self->qga);
        if (s_send(self, "\xff", 1) ||
            s_agent_send(self, "guest-sync-delimited",
                         json_pack("{s:I}", "id", (json_int_t)self->sync_id)))
            s_end_attempt(self, now, "guest agent: send failed");
        return 0;
    }
    }
}

/* A reply in the agent conversation; 1 = ready. */
static int s_agent_reply(probe_t *self, json_t *reply, int64_t now)
{
    json_t *ret;
    char err[300];
    int ok = qga_reply(reply, &ret, err, sizeof err) == 0;
    switch (self->stage) {
    case 0:
        if (!ok || !json_is_integer(ret) || json_integer_value(ret) != (json_int_t)self->sync_id)
            return 0; /* a stale reply: keep reading */
        if (self->spec.kind == PROBE_AGENT) {
            s_end_attempt(self, now, NULL);
            return 1;
        }
        self->stage = 1;
        if (s_agent_send(self, "guest-file-open",
                         json_pack("{s:s,s:s}", "path", S_RESULT_JSON, "mode", "r")))
            s_end_attempt(self, now, "guest agent: send failed");
        return 0;
    case 1:
        if (!ok || !json_is_integer(ret)) {
            s_end_attempt(self, now, "cloud-init has not finished (no result.json)");
            return 0;
        }
        self->handle = json_integer_value(ret);
        self->stage = 2;
        if (s_agent_send(
                self, "guest-file-read",
                json_pack("{s:I,s:i}", "handle", (json_int_t)self->handle, "count", 65536)))
            s_end_attempt(self, now, "guest agent: send failed");
        return 0;
    case 2: {
        unsigned char *buf = malloc(65537);
        size_t len = 0;
        bool eof;
        int good =
            buf && ok && qga_file_read_parse(ret, buf, &len, 65536, &eof, err, sizeof err) == 0;
        json_t *res = good ? json_loadb((const char *)buf, len, 0, NULL) : NULL;
        free(buf);
        s_agent_send(self, "guest-file-close",
                     json_pack("{s:I}", "handle", (json_int_t)self->handle));
        json_t *v1 = json_object_get(res, "v1");
        json_t *errors = json_object_get(v1, "errors");
        if (!json_is_object(v1)) {
            json_decref(res);
            s_end_attempt(self, now, "cloud-init result.json is not readable yet");
            return 0;
        }
        size_t n_err = json_is_array(errors) ? json_array_size(errors) : 0;
        char why[128];
        snprintf(why, sizeof why, "cloud-init done, %zu error(s)", n_err);
        json_decref(res);
        s_end_attempt(self, now, NULL);
        snprintf(self->detail, sizeof self->detail, "%s", why);
        return 1;
    }
    }
    return 0;
}

static int s_io(probe_t *self, int64_t now)
{
    char tmp[8192];
    ssize_t n = read(self->fd, tmp, sizeof tmp);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return 0;
    if (n <= 0) {
        s_end_attempt(self, now, n == 0 ? "closed before answering" : strerror(errno));
        return 0;
    }
    if (self->qga) {
        char err[200];
        if (qga_feed(self->qga, tmp, (size_t)n, err, sizeof err)) {
            s_end_attempt(self, now, err);
            return 0;
        }
        json_t *j;
        while (self->state == S_IO && (j = qga_next(self->qga))) {
            int r = s_agent_reply(self, j, now);
            json_decref(j);
            if (r)
                return 1;
        }
        return 0;
    }
    size_t room = sizeof self->buf - 1 - self->len;
    size_t k = (size_t)n < room ? (size_t)n : room;
    memcpy(self->buf + self->len, tmp, k);
    self->len += k;
    self->buf[self->len] = 0;
    char *nl = memchr(self->buf, '\n', self->len);
    if (!nl && self->len < sizeof self->buf - 1)
        return 0;
    int hit = 0;
    if (self->spec.kind == PROBE_SSH)
        hit = strncmp(self->buf, "SSH-2.0-", 8) == 0;
    else {
        int code = 0;
        hit = sscanf(self->buf, "HTTP/1.%*1[01] %3d", &code) == 1 && code >= 200 && code < 400;
    }
    char why[128];
    snprintf(why, sizeof why, "unexpected answer: %.60s", self->buf);
    /* the guest's bytes, shown as printable ASCII only: a control byte
     * would reach a terminal (ttctl watch), and a byte that is not UTF-8
     * makes every reply that carries this VM (an admin's env list too)
     * unreadable to a protobuf client that checks strings (Python) */
    for (char *c = why; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = (unsigned char)*c < 0x20 ? ' ' : '?';
    s_end_attempt(self, now, hit ? NULL : why);
    return hit;
}

int probe_step(probe_t *self, int64_t now)
{
    if (self->ready)
        return 1;
    if (self->spec.kind == PROBE_NONE) {
        self->ready = true;
        return 1;
    }
    if (self->state != S_IDLE && now >= self->deadline) {
        s_end_attempt(self, now, "no answer within the attempt's time");
        return 0;
    }
    int r = 0;
    if (self->state == S_IDLE) {
        if (now < self->due)
            return 0;
        if (self->spec.kind == PROBE_CONSOLE) {
            self->attempts++;
            r = s_console(self, now);
        } else
            s_connect(self, now);
    }
    if (self->state == S_CONNECT) {
        struct pollfd p = {.fd = self->fd, .events = POLLOUT};
        if (poll(&p, 1, 0) == 1) {
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(self->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr) {
                char why[200];
                snprintf(why, sizeof why, "connect: %s", strerror(soerr));
                s_end_attempt(self, now, why);
            } else
                r = s_connected(self, now);
        }
    }
    if (!r && self->state == S_IO) {
        struct pollfd p = {.fd = self->fd, .events = POLLIN};
        while (!r && self->state == S_IO && poll(&p, 1, 0) == 1)
            r = s_io(self, now);
    }
    if (r) {
        self->ready = true;
        if (self->spec.kind != PROBE_CLOUD_INIT)
            snprintf(self->detail, sizeof self->detail, "ready");
    }
    return r;
}
