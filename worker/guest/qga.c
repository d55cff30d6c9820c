/*
 * qga: the QEMU guest agent protocol. See qga.h for the two layers.
 *
 * The parser keeps one growing buffer of unparsed bytes (bounded by
 * QGA_LINE_MAX) and hands out complete lines parsed by jansson. The
 * blocking helpers are a thin loop of poll + read + qga_feed around it, so
 * the event-loop user and the tests run the same parsing code.
 */
#define _GNU_SOURCE
#include "qga.h"

#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ttproto.h"

struct qga_t {
    unsigned char *buf;
    size_t len, cap;
    bool syncing; /* dropping input up to a 0xFF */
    bool failed;
};

qga_t *qga_new(void)
{
    return calloc(1, sizeof(qga_t));
}

void qga_destroy(qga_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free((*self_p)->buf);
    free(*self_p);
    *self_p = NULL;
}

void qga_expect_sync(qga_t *self)
{
    self->syncing = true;
    self->len = 0;
}

int qga_feed(qga_t *self, const void *data, size_t len, char *err, size_t errlen)
{
    if (self->failed) {
        snprintf(err, errlen, "guest agent: an earlier reply was too long");
        return -1;
    }
    const unsigned char *p = data;
    if (self->syncing) {
        const unsigned char *ff = memchr(p, 0xff, len);
        if (!ff)
            return 0;
        self->syncing = false;
        len -= (size_t)(ff + 1 - p);
        p = ff + 1;
    }
    if (len == 0)
        return 0;
    if (self->len + len > QGA_LINE_MAX + 2) {
        /* only fail if no newline in what we hold would shorten it */
        if ((!self->len || !memchr(self->buf, '\n', self->len)) && !memchr(p, '\n', len)) {
            self->failed = true;
            snprintf(err, errlen, "guest agent: a reply is longer than %u bytes", QGA_LINE_MAX);
            return -1;
        }
    }
    if (self->len + len > self->cap) {
        size_t ncap = self->cap ? self->cap : 4096;
        while (ncap < self->len + len)
            ncap *= 2;
        unsigned char *nb = realloc(self->buf, ncap);
        if (!nb) {
            self->failed = true;
            snprintf(err, errlen, "guest agent: out of memory");
            return -1;
        }
        self->buf = nb;
        self->cap = ncap;
    }
    memcpy(self->buf + self->len, p, len);
    self->len += len;
    return 0;
}

json_t *qga_next(qga_t *self)
{
    while (self->len) {
        unsigned char *nl = memchr(self->buf, '\n', self->len);
        if (!nl) {
            if (self->len > QGA_LINE_MAX)
                self->failed = true;
            return NULL;
        }
        size_t n = (size_t)(nl - self->buf);
        json_t *j = n ? json_loadb((const char *)self->buf, n, JSON_REJECT_DUPLICATES, NULL) : NULL;
        memmove(self->buf, nl + 1, self->len - n - 1);
        self->len -= n + 1;
        if (j && json_is_object(j))
            return j;
        json_decref(j);
    }
    return NULL;
}

char *qga_request(const char *command, json_t *args)
{
    json_t *req = json_pack("{s:s}", "execute", command);
    if (args)
        json_object_set_new(req, "arguments", args);
    char *s = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    char *line = NULL;
    if (s && asprintf(&line, "%s\n", s) < 0)
        line = NULL;
    free(s);
    return line;
}

int qga_reply(json_t *reply, json_t **ret, char *err, size_t errlen)
{
    *ret = NULL;
    json_t *r = json_is_object(reply) ? json_object_get(reply, "return") : NULL;
    if (r) {
        *ret = r;
        return 0;
    }
    json_t *e = json_is_object(reply) ? json_object_get(reply, "error") : NULL;
    const char *cls = json_string_value(json_object_get(e, "class"));
    const char *desc = json_string_value(json_object_get(e, "desc"));
    if (e)
        snprintf(err, errlen, "guest agent: %s: %.400s", cls ? cls : "error",
                 desc ? desc : "(no description)");
    else
        snprintf(err, errlen, "guest agent: an answer that is neither return nor error");
    return -1;
}

/* Decode base64 text into out (cap bytes). Length, or -1 if it is not
 * base64. *truncated when it did not fit (then cap bytes are kept). */
static long s_b64dec(const char *text, size_t len, unsigned char *out, size_t cap, bool *truncated)
{
    *truncated = false;
    if (len % 4)
        return -1;
    size_t pad = 0;
    if (len && text[len - 1] == '=')
        pad++;
    if (len > 1 && text[len - 2] == '=')
        pad++;
    size_t full = len / 4 * 3 - pad;
    size_t want = full <= cap ? len : (cap / 3 + 1) * 4; /* decode only what fits */
    if (want > len)
        want = len;
    unsigned char *tmp = malloc(want / 4 * 3 + 3);
    if (!tmp)
        return -1;
    int n = EVP_DecodeBlock(tmp, (const unsigned char *)text, (int)want);
    if (n < 0) {
        free(tmp);
        return -1;
    }
    size_t got = (size_t)n;
    if (want == len)
        got -= pad;
    if (got > cap) {
        got = cap;
        *truncated = true;
    }
    if (full > cap)
        *truncated = true;
    memcpy(out, tmp, got);
    free(tmp);
    return (long)got;
}

static int s_b64field(json_t *obj, const char *key, unsigned char **out, size_t *outlen,
                      bool *truncated, char *err, size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    *truncated = false;
    json_t *v = json_object_get(obj, key);
    if (!v)
        return 0;
    if (!json_is_string(v)) {
        snprintf(err, errlen, "guest agent: %s is not a string", key);
        return -1;
    }
    size_t len = json_string_length(v);
    size_t cap = len / 4 * 3 < QGA_OUTPUT_MAX ? len / 4 * 3 : QGA_OUTPUT_MAX;
    *out = malloc(cap + 1);
    if (!*out) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    long n = s_b64dec(json_string_value(v), len, *out, cap, truncated);
    if (n < 0) {
        free(*out);
        *out = NULL;
        snprintf(err, errlen, "guest agent: %s is not base64", key);
        return -1;
    }
    (*out)[n] = 0;
    *outlen = (size_t)n;
    return 0;
}

int qga_exec_status_parse(json_t *ret, qga_exec_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    json_t *ex = json_object_get(ret, "exited");
    if (!json_is_object(ret) || !json_is_boolean(ex)) {
        snprintf(err, errlen, "guest agent: guest-exec-status answer without 'exited'");
        return -1;
    }
    res->exited = json_is_true(ex);
    json_t *code = json_object_get(ret, "exitcode"), *sig = json_object_get(ret, "signal");
    if ((code && !json_is_integer(code)) || (sig && !json_is_integer(sig))) {
        snprintf(err, errlen, "guest agent: exitcode or signal is not an integer");
        return -1;
    }
    json_int_t c = code ? json_integer_value(code) : -1;
    json_int_t s = sig ? json_integer_value(sig) : 0;
    res->exit_code = c < -1 || c > 255 ? -1 : (int)c;
    res->signal = s < 0 || s > 128 ? 0 : (int)s;
    if (s_b64field(ret, "out-data", &res->out, &res->out_len, &res->out_truncated, err, errlen) ||
        s_b64field(ret, "err-data", &res->errb, &res->err_len, &res->err_truncated, err, errlen)) {
        qga_exec_free(res);
        return -1;
    }
    /* qemu-ga itself flags output it cut */
    if (json_is_true(json_object_get(ret, "out-truncated")))
        res->out_truncated = true;
    if (json_is_true(json_object_get(ret, "err-truncated")))
        res->err_truncated = true;
    return 0;
}

void qga_exec_free(qga_exec_t *res)
{
    free(res->out);
    free(res->errb);
    res->out = res->errb = NULL;
    res->out_len = res->err_len = 0;
}

int qga_file_read_parse(json_t *ret, unsigned char *buf, size_t *len, size_t cap, bool *eof,
                        char *err, size_t errlen)
{
    json_t *count = json_object_get(ret, "count"), *b = json_object_get(ret, "buf-b64");
    json_t *e = json_object_get(ret, "eof");
    if (!json_is_integer(count) || !json_is_string(b) || !json_is_boolean(e)) {
        snprintf(err, errlen, "guest agent: guest-file-read answer lacks count, buf-b64 or eof");
        return -1;
    }
    bool trunc;
    long n = s_b64dec(json_string_value(b), json_string_length(b), buf + *len, cap - *len, &trunc);
    if (n < 0 || n != json_integer_value(count)) {
        snprintf(err, errlen, "guest agent: guest-file-read data is not base64 of 'count' bytes");
        return -1;
    }
    if (trunc) {
        snprintf(err, errlen, "file is larger than %zu bytes", cap);
        return -1;
    }
    *len += (size_t)n;
    *eof = json_is_true(e);
    return 0;
}

int qga_path_valid(const char *path, char *err, size_t errlen)
{
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || path[0] != '/' || n > 4095) {
        snprintf(err, errlen, "guest path must be absolute and at most 4095 bytes");
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] < 0x20) {
            snprintf(err, errlen, "guest path holds a control character");
            return -1;
        }
    return 0;
}

/* ---- blocking helpers ---- */

struct qga_conn_t {
    int fd;
    qga_t *parser;
};

static int s_send_all(int fd, const void *data, size_t len, int64_t deadline, char *err,
                      size_t errlen)
{
    const char *p = data;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            int64_t left = deadline - tt_mono_ms();
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (left <= 0 || poll(&pf, 1, (int)left) <= 0) {
                snprintf(err, errlen, "guest agent: send timed out");
                return -1;
            }
            continue;
        }
        if (n <= 0) {
            snprintf(err, errlen, "guest agent: send: %s", strerror(errno));
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static json_t *s_wait_reply(qga_conn_t *self, int64_t deadline, char *err, size_t errlen)
{
    unsigned char buf[65536];
    for (;;) {
        json_t *j = qga_next(self->parser);
        if (j)
            return j;
        int64_t left = deadline - tt_mono_ms();
        struct pollfd pf = {.fd = self->fd, .events = POLLIN};
        int rc = left > 0 ? poll(&pf, 1, (int)left) : 0;
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0) {
            snprintf(err, errlen, "guest agent: no answer in time");
            return NULL;
        }
        ssize_t n = read(self->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "guest agent: connection closed");
            return NULL;
        }
        if (qga_feed(self->parser, buf, (size_t)n, err, errlen))
            return NULL;
    }
}

static int s_sync(qga_conn_t *self, int64_t deadline, char *err, size_t errlen)
{
    uint32_t id;
    if (getrandom(&id, sizeof id, 0) != sizeof id)
        id = (uint32_t)tt_mono_ms();
    id &= 0x7fffffff;
    char *req = qga_request("guest-sync-delimited", json_pack("{s:I}", "id", (json_int_t)id));
    /* a 0xFF first resets the agent's parser after a half-sent request */
    int rc = -1;
    qga_expect_sync(self->parser);
    if (req && s_send_all(self->fd, "\xff", 1, deadline, err, errlen) == 0 &&
        s_send_all(self->fd, req, strlen(req), deadline, err, errlen) == 0) {
        for (;;) {
            json_t *j = s_wait_reply(self, deadline, err, errlen), *ret;
            if (!j)
                break;
            int ok = qga_reply(j, &ret, err, errlen) == 0 && json_is_integer(ret) &&
                     json_integer_value(ret) == (json_int_t)id;
            json_decref(j);
            if (ok) {
                rc = 0;
                break;
            }
        }
    }
    free(req);
    return rc;
}

qga_conn_t *qga_open(const char *sock_path, int timeout_ms, char *err, size_t errlen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(sock_path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "guest agent socket path too long");
        return NULL;
    }
    strcpy(sa.sun_path, sock_path);
    qga_conn_t *self = calloc(1, sizeof *self);
    if (!self || !(self->parser = qga_new())) {
        free(self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (self->fd < 0 || connect(self->fd, (struct sockaddr *)&sa, sizeof sa)) {
        snprintf(err, errlen, "guest agent: connect %s: %s", sock_path, strerror(errno));
        qga_close(&self);
        return NULL;
    }
    if (s_sync(self, tt_mono_ms() + timeout_ms, err, errlen)) {
        /* the socket is QEMU's: no answer to the first sync means no agent
         * runs in the guest (an image without one, or not started yet) */
        char why[160];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errlen,
                 "the guest agent did not answer (%s): the image has no guest agent "
                 "(qemu-guest-agent) or it has not started",
                 why);
        qga_close(&self);
        return NULL;
    }
    return self;
}

void qga_close(qga_conn_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    if ((*self_p)->fd >= 0)
        close((*self_p)->fd);
    qga_destroy(&(*self_p)->parser);
    free(*self_p);
    *self_p = NULL;
}

/* One command; *replied tells an agent's refusal (an error reply) from
 * no answer at all. */
static int s_call(qga_conn_t *self, const char *command, json_t *args, int timeout_ms, json_t **ret,
                  bool *replied, char *err, size_t errlen)
{
    *ret = NULL;
    *replied = false;
    int64_t deadline = tt_mono_ms() + timeout_ms;
    char *req = qga_request(command, args);
    if (!req) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = s_send_all(self->fd, req, strlen(req), deadline, err, errlen);
    free(req);
    if (rc)
        return -1;
    json_t *j = s_wait_reply(self, deadline, err, errlen), *r;
    if (!j)
        return -1;
    *replied = true;
    rc = qga_reply(j, &r, err, errlen);
    if (rc == 0)
        *ret = json_incref(r);
    json_decref(j);
    return rc;
}

int qga_call(qga_conn_t *self, const char *command, json_t *args, int timeout_ms, json_t **ret,
             char *err, size_t errlen)
{
    bool replied;
    return s_call(self, command, args, timeout_ms, ret, &replied, err, errlen);
}

static char *s_b64enc(const void *data, size_t len)
{
    char *out = malloc(4 * ((len + 2) / 3) + 1);
    if (out)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

/* guest-exec of argv; through setsid when own_group (the guest's setsid
 * does not fork, the agent's child being no group leader: the pid the agent
 * answers leads a new session and process group). */
static int s_spawn(qga_conn_t *self, const char *const *argv, const char *in_b64, bool own_group,
                   int timeout_ms, json_int_t *pid, bool *replied, char *err, size_t errlen)
{
    json_t *arg = json_array();
    size_t first = 1;
    if (own_group) {
        /* setsid takes options up to the first word that is none */
        if (argv[0][0] == '-')
            json_array_append_new(arg, json_string("--"));
        first = 0;
    }
    for (size_t i = first; argv[i]; i++)
        json_array_append_new(arg, json_string(argv[i]));
    json_t *args = json_pack("{s:s,s:b,s:o}", "path", own_group ? "setsid" : argv[0],
                             "capture-output", 1, "arg", arg);
    if (in_b64)
        json_object_set_new(args, "input-data", json_string(in_b64));
    json_t *ret;
    if (s_call(self, "guest-exec", args, timeout_ms, &ret, replied, err, errlen))
        return -1;
    json_t *p = json_object_get(ret, "pid");
    int ok = json_is_integer(p) && json_integer_value(p) > 1;
    *pid = ok ? json_integer_value(p) : 0;
    json_decref(ret);
    if (!ok) {
        snprintf(err, errlen, "guest agent: guest-exec answer without a pid");
        return -1;
    }
    return 0;
}

int qga_exec(qga_conn_t *self, const char *const *argv, const void *in, size_t in_len,
             int timeout_ms, qga_exec_t *res, char *err, size_t errlen)
{
    memset(res, 0, sizeof *res);
    if (!argv || !argv[0] || !argv[0][0]) {
        snprintf(err, errlen, "exec: no command");
        return -1;
    }
    int64_t deadline = tt_mono_ms() + timeout_ms;
    char *in_b64 = NULL;
    if (in && in_len && !(in_b64 = s_b64enc(in, in_len))) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    /* In a process group of its own, so that at the timeout its whole group
     * is killed: children holding the output pipes too (the agent reports
     * an exit only once they close). A guest without setsid (the agent
     * cannot start it) runs the command as it is, and only its pid is
     * killed. */
    json_int_t p;
    bool replied, group = true;
    int rc = s_spawn(self, argv, in_b64, true, timeout_ms, &p, &replied, err, errlen);
    if (rc && replied && strstr(err, "setsid")) {
        group = false;
        int64_t left = deadline - tt_mono_ms();
        rc = left > 0 ? s_spawn(self, argv, in_b64, false, (int)left, &p, &replied, err, errlen)
                      : -1;
        if (left <= 0)
            snprintf(err, errlen, "guest agent: no answer in time");
    }
    free(in_b64);
    if (rc)
        return -1;
    bool kill_sent = false;
    json_t *ret;
    for (int delay = 20;; delay = delay < 200 ? delay * 2 : 200) {
        int64_t left = deadline - tt_mono_ms();
        if (left <= 0 && !kill_sent) {
            /* over its timeout: the guest's own kill (of the process group
             * the command leads, else of its pid), then a last look */
            kill_sent = true;
            char target[32];
            snprintf(target, sizeof target, "%s%lld", group ? "-" : "", (long long)p);
            json_t *kret = NULL;
            char kerr[200];
            if (qga_call(self, "guest-exec",
                         json_pack("{s:s,s:[s,s,s]}", "path", "kill", "arg", "-KILL", "--", target),
                         QGA_KILL_CALL_MS, &kret, kerr, sizeof kerr) == 0)
                json_decref(kret);
            deadline = tt_mono_ms() + QGA_KILL_MS;
            left = QGA_KILL_MS;
        }
        if (left <= 0) {
            snprintf(err, errlen,
                     "exec: the command did not end within %d ms, nor after kill -KILL of its %s "
                     "in the guest",
                     timeout_ms, group ? "process group" : "pid");
            return -1;
        }
        if (qga_call(self, "guest-exec-status", json_pack("{s:I}", "pid", p), (int)left, &ret, err,
                     errlen))
            return -1;
        rc = qga_exec_status_parse(ret, res, err, errlen);
        json_decref(ret);
        if (rc)
            return -1;
        if (res->exited) {
            res->killed = kill_sent;
            res->group = group;
            return 0;
        }
        qga_exec_free(res);
        usleep((useconds_t)delay * 1000);
    }
}

static int s_handle(qga_conn_t *self, const char *path, const char *mode, int timeout_ms,
                    json_int_t *h, char *err, size_t errlen)
{
    if (qga_path_valid(path, err, errlen))
        return -1;
    json_t *ret;
    if (qga_call(self, "guest-file-open", json_pack("{s:s,s:s}", "path", path, "mode", mode),
                 timeout_ms, &ret, err, errlen))
        return -1;
    int ok = json_is_integer(ret);
    *h = ok ? json_integer_value(ret) : -1;
    json_decref(ret);
    if (!ok) {
        snprintf(err, errlen, "guest agent: guest-file-open answer is not a handle");
        return -1;
    }
    return 0;
}

static void s_close_handle(qga_conn_t *self, json_int_t h, int timeout_ms)
{
    json_t *ret;
    char e2[256];
    if (qga_call(self, "guest-file-close", json_pack("{s:I}", "handle", h), timeout_ms, &ret, e2,
                 sizeof e2) == 0)
        json_decref(ret);
}

int qga_file_put(qga_conn_t *self, const char *guest_path, const void *data, size_t len,
                 unsigned char sha[32], int timeout_ms, char *err, size_t errlen)
{
    if (len > QGA_FILE_MAX) {
        snprintf(err, errlen, "file is %zu bytes; at most %u", len, QGA_FILE_MAX);
        return -1;
    }
    int64_t deadline = tt_mono_ms() + timeout_ms;
    json_int_t h;
    if (s_handle(self, guest_path, "w", timeout_ms, &h, err, errlen))
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    int rc = 0;
    for (size_t off = 0; rc == 0 && off < len;) {
        size_t k = len - off < QGA_CHUNK ? len - off : QGA_CHUNK;
        int64_t left = deadline - tt_mono_ms();
        char *b = s_b64enc((const char *)data + off, k);
        json_t *ret = NULL;
        if (left <= 0 || !b) {
            snprintf(err, errlen, "copy: timed out after %zu bytes", off);
            rc = -1;
        } else if (qga_call(self, "guest-file-write",
                            json_pack("{s:I,s:s}", "handle", h, "buf-b64", b), (int)left, &ret, err,
                            errlen))
            rc = -1;
        else if (!json_is_integer(json_object_get(ret, "count")) ||
                 json_integer_value(json_object_get(ret, "count")) != (json_int_t)k) {
            snprintf(err, errlen, "guest agent: short write at %zu", off);
            rc = -1;
        }
        free(b);
        json_decref(ret);
        if (rc == 0) {
            EVP_DigestUpdate(md, (const char *)data + off, k);
            off += k;
        }
    }
    EVP_DigestFinal_ex(md, sha, NULL);
    EVP_MD_CTX_free(md);
    s_close_handle(self, h, 5000);
    return rc;
}

int qga_file_get(qga_conn_t *self, const char *guest_path, unsigned char **data, size_t *len,
                 unsigned char sha[32], int timeout_ms, char *err, size_t errlen)
{
    *data = NULL;
    *len = 0;
    int64_t deadline = tt_mono_ms() + timeout_ms;
    json_int_t h;
    if (s_handle(self, guest_path, "r", timeout_ms, &h, err, errlen))
        return -1;
    size_t cap = 1 << 20, n = 0;
    unsigned char *buf = malloc(cap);
    int rc = buf ? 0 : -1;
    for (bool eof = false; rc == 0 && !eof;) {
        if (cap - n < QGA_CHUNK && cap < QGA_FILE_MAX + 1) {
            size_t ncap = cap * 2 > QGA_FILE_MAX + 1 ? QGA_FILE_MAX + 1 : cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = -1;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        int64_t left = deadline - tt_mono_ms();
        json_t *ret = NULL;
        size_t before = n;
        if (left <= 0) {
            snprintf(err, errlen, "copy: timed out after %zu bytes", n);
            rc = -1;
        } else if (qga_call(self, "guest-file-read",
                            json_pack("{s:I,s:I}", "handle", h, "count", (json_int_t)QGA_CHUNK),
                            (int)left, &ret, err, errlen) ||
                   qga_file_read_parse(ret, buf, &n, cap, &eof, err, errlen))
            rc = -1;
        json_decref(ret);
        if (rc == 0 && n > QGA_FILE_MAX) {
            snprintf(err, errlen, "guest file is larger than %u bytes", QGA_FILE_MAX);
            rc = -1;
        }
        if (rc == 0 && n == before)
            eof = true;
    }
    s_close_handle(self, h, 5000);
    if (rc) {
        free(buf);
        return -1;
    }
    EVP_Digest(buf, n, sha, NULL, EVP_sha256(), NULL);
    *data = buf;
    *len = n;
    return 0;
}

int qga_osinfo(qga_conn_t *self, char *buf, size_t len, int timeout_ms, char *err, size_t errlen)
{
    json_t *ret;
    if (qga_call(self, "guest-get-osinfo", NULL, timeout_ms, &ret, err, errlen))
        return -1;
    const char *s = json_string_value(json_object_get(ret, "pretty-name"));
    if (!s)
        s = json_string_value(json_object_get(ret, "id"));
    snprintf(buf, len, "%s", s ? s : "unknown");
    json_decref(ret);
    return 0;
}
