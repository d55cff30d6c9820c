/*
 * qmp: one command per connection, bounded by a deadline. See qmp.h.
 * Every line QEMU writes is parsed by jansson (qmp_line_kind): an object
 * with "return", "error", "event" or the "QMP" greeting. No text matching:
 * an error whose description mentions "return" is still an error.
 */
#define _GNU_SOURCE
#include "qmp.h"

#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ttproto.h"

#define S_LINE_MAX 8192

typedef struct {
    int fd;
    int64_t deadline;
    char buf[S_LINE_MAX];
    size_t len;
} s_conn_t;

/* Next line (without CR LF) into line. 0 / -1 (timeout, EOF, too long). */
static int s_line(s_conn_t *c, char *line, size_t size)
{
    for (;;) {
        char *nl = memchr(c->buf, '\n', c->len);
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            size_t keep = n && c->buf[n - 1] == '\r' ? n - 1 : n;
            if (keep >= size)
                keep = size - 1;
            memcpy(line, c->buf, keep);
            line[keep] = 0;
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return 0;
        }
        if (c->len == sizeof c->buf)
            return -1;
        int64_t left = c->deadline - tt_mono_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = {.fd = c->fd, .events = POLLIN};
        int rc = poll(&p, 1, (int)left);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            return -1;
        ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        c->len += (size_t)n;
    }
}

static int s_send(s_conn_t *c, const char *text)
{
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t n = send(c->fd, text + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            struct pollfd p = {.fd = c->fd, .events = POLLOUT};
            int64_t left = c->deadline - tt_mono_ms();
            if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                return -1;
            continue;
        }
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return 0;
}

int qmp_line_kind(const char *line, size_t len, char *desc, size_t desclen)
{
    if (desc && desclen)
        desc[0] = 0;
    json_t *j = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    int kind = QMP_LINE_OTHER;
    if (json_is_object(j)) {
        json_t *e = json_object_get(j, "error");
        if (json_object_get(j, "return"))
            kind = QMP_LINE_RETURN;
        else if (e) {
            kind = QMP_LINE_ERROR;
            const char *d = json_string_value(json_object_get(e, "desc"));
            if (desc && desclen)
                snprintf(desc, desclen, "%s", d ? d : "error without a description");
        } else if (json_object_get(j, "event"))
            kind = QMP_LINE_EVENT;
        else if (json_is_object(json_object_get(j, "QMP")))
            kind = QMP_LINE_GREETING;
    }
    json_decref(j);
    return kind;
}

/* Read lines until an answer: 0 on "return", -1 on "error" or failure
 * (the error's description replaces line). */
static int s_answer(s_conn_t *c, char *line, size_t size)
{
    for (;;) {
        if (s_line(c, line, size))
            return -1;
        char desc[512];
        int kind = qmp_line_kind(line, strlen(line), desc, sizeof desc);
        if (kind == QMP_LINE_RETURN)
            return 0;
        if (kind == QMP_LINE_ERROR) {
            snprintf(line, size, "%s", desc);
            return -1;
        }
        /* an {"event": ...}, a blank or foreign line: keep reading */
    }
}

int qmp_call(const char *path, const char *command, int timeout_ms, char *out, size_t outlen,
             char *err, size_t errlen)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "QMP socket path too long: %s", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    s_conn_t c;
    c.len = 0;
    c.deadline = tt_mono_ms() + timeout_ms;
    c.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    char line[S_LINE_MAX];
    int rc = -1;
    /* QEMU accepts at once (server,wait=off): a blocking connect is short. */
    if (connect(c.fd, (struct sockaddr *)&sa, sizeof sa)) {
        snprintf(err, errlen, "connect %s: %s", path, strerror(errno));
        goto out;
    }
    if (s_line(&c, line, sizeof line) ||
        qmp_line_kind(line, strlen(line), NULL, 0) != QMP_LINE_GREETING) {
        snprintf(err, errlen, "no QMP greeting on %s", path);
        goto out;
    }
    if (s_send(&c, "{\"execute\":\"qmp_capabilities\"}\n") || s_answer(&c, line, sizeof line)) {
        snprintf(err, errlen, "QMP capabilities negotiation failed on %s", path);
        goto out;
    }
    if (s_send(&c, command) || s_send(&c, "\n")) {
        snprintf(err, errlen, "QMP send failed on %s", path);
        goto out;
    }
    line[0] = 0;
    if (s_answer(&c, line, sizeof line)) {
        snprintf(err, errlen, "QMP %s: %s", command, line[0] ? line : "no answer in time");
        goto out;
    }
    if (out)
        snprintf(out, outlen, "%s", line);
    rc = 0;
out:
    close(c.fd);
    return rc;
}

int qmp_status(const char *path, int timeout_ms, char *status, size_t len, char *err, size_t errlen)
{
    char ans[1024];
    if (qmp_call(path, "{\"execute\":\"query-status\"}", timeout_ms, ans, sizeof ans, err, errlen))
        return -1;
    return qmp_status_parse(ans, strlen(ans), status, len, err, errlen);
}

int qmp_status_parse(const char *line, size_t n, char *status, size_t len, char *err, size_t errlen)
{
    json_t *j = json_loadb(line, n, JSON_REJECT_DUPLICATES, NULL);
    const char *s = json_string_value(json_object_get(json_object_get(j, "return"), "status"));
    int rc = -1;
    if (s && strlen(s) < len) {
        snprintf(status, len, "%s", s);
        rc = 0;
    } else
        snprintf(err, errlen, "QMP query-status: unexpected answer %.*s", (int)(n < 200 ? n : 200),
                 line);
    json_decref(j);
    return rc;
}
