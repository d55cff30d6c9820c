/*
 * ttguest: the rules for what a tenant hands a guest, shared by ttctl (to
 * fail early with a clear message), the broker (BAD_REQUEST before anything
 * is placed) and the worker (which checks again before use): SSH public
 * keys, user-data and readiness specs, and the bounded console matcher.
 * No I/O; libc and PCRE2.
 */
#define _GNU_SOURCE
#include "ttguest.h"

#include "ttfleet.pb-c.h"

#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Standard base64 (with padding) of exactly len characters into out (room
 * for len / 4 * 3). Bytes decoded, or -1. */
static int s_b64decode(const char *in, size_t len, unsigned char *out)
{
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        const char c = in[i];
        int v = c >= 'A' && c <= 'Z'   ? c - 'A'
                : c >= 'a' && c <= 'z' ? c - 'a' + 26
                : c >= '0' && c <= '9' ? c - '0' + 52
                : c == '+'             ? 62
                : c == '/'             ? 63
                                       : -1;
        if (c == '=') {
            pad++;
            continue;
        }
        if (v < 0 || pad)
            return -1;
        acc = (acc << 6) | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    return pad > 2 ? -1 : (int)o;
}

static const char *s_key_types[] = {"ssh-ed25519",
                                    "ssh-rsa",
                                    "ecdsa-sha2-nistp256",
                                    "ecdsa-sha2-nistp384",
                                    "ecdsa-sha2-nistp521",
                                    "sk-ssh-ed25519@openssh.com",
                                    "sk-ecdsa-sha2-nistp256@openssh.com",
                                    NULL};

int tt_ssh_key_valid(const char *key, char *err, size_t errlen)
{
    size_t len = key ? strlen(key) : 0;
    if (len == 0 || len > TT_SSH_KEY_MAX) {
        snprintf(err, errlen, "SSH public key is empty or longer than %d bytes", TT_SSH_KEY_MAX);
        return -1;
    }
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)key[i] < 0x20 || key[i] == 0x7f) {
            snprintf(err, errlen, "SSH public key has a control character or newline");
            return -1;
        }
    const char *sp = strchr(key, ' ');
    size_t tlen = sp ? (size_t)(sp - key) : len;
    int known = 0;
    for (int i = 0; s_key_types[i]; i++)
        if (strlen(s_key_types[i]) == tlen && memcmp(s_key_types[i], key, tlen) == 0)
            known = 1;
    if (!known || !sp) {
        snprintf(err, errlen,
                 "not an SSH public key: expected 'TYPE BASE64 [COMMENT]' with TYPE one of "
                 "ssh-ed25519, ssh-rsa, ecdsa-sha2-*, sk-*");
        return -1;
    }
    const char *b = sp + 1, *be = strchr(b, ' ');
    size_t blen = be ? (size_t)(be - b) : strlen(b);
    if (blen < 16 || blen % 4) {
        snprintf(err, errlen, "SSH public key: the key data is not base64");
        return -1;
    }
    for (size_t i = 0; i < blen; i++)
        if (!isalnum((unsigned char)b[i]) && b[i] != '+' && b[i] != '/' &&
            !(b[i] == '=' && i >= blen - 2)) {
            snprintf(err, errlen, "SSH public key: the key data is not base64");
            return -1;
        }
    unsigned char *raw = malloc(blen);
    if (!raw) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int n = s_b64decode(b, blen, raw);
    /* the blob is string(type) ...: a 4-byte big-endian length, the type */
    uint32_t tl =
        n >= 4 ? ((uint32_t)raw[0] << 24 | (uint32_t)raw[1] << 16 | (uint32_t)raw[2] << 8 | raw[3])
               : 0;
    int ok = n >= 4 && tl == tlen && (size_t)n >= 4 + tl && memcmp(raw + 4, key, tlen) == 0;
    free(raw);
    if (!ok) {
        snprintf(err, errlen, "SSH public key: the key data does not hold a %.*s key", (int)tlen,
                 key);
        return -1;
    }
    return 0;
}

int tt_user_data_valid(const char *data, size_t len, char *err, size_t errlen)
{
    if (len > TT_USER_DATA_MAX) {
        snprintf(err, errlen, "user-data is %zu bytes; at most %d", len, TT_USER_DATA_MAX);
        return -1;
    }
    if (!data || memchr(data, 0, len)) {
        snprintf(err, errlen, "user-data holds a NUL byte");
        return -1;
    }
    if (!(len >= 13 && memcmp(data, "#cloud-config", 13) == 0) &&
        !(len >= 2 && memcmp(data, "#!", 2) == 0)) {
        snprintf(err, errlen, "user-data must start with '#cloud-config' or '#!' (a script)");
        return -1;
    }
    return 0;
}

int tt_ready_parse(const char *text, tt_ready_t *spec, char *err, size_t errlen)
{
    memset(spec, 0, sizeof *spec);
    size_t n = text ? strlen(text) : 0;
    if (n == 0 || n > TT_READY_MAX) {
        snprintf(err, errlen, "ready spec is empty or longer than %d bytes", TT_READY_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f) {
            snprintf(err, errlen, "ready spec holds a control character");
            return -1;
        }
    const char *colon = strchr(text, ':');
    size_t kl = colon ? (size_t)(colon - text) : n;
    const char *arg = colon ? colon + 1 : NULL;
#define S_IS(w) (kl == strlen(w) && memcmp(text, w, kl) == 0)
    if (S_IS("none") || S_IS("ssh") || S_IS("agent") || S_IS("cloud-init")) {
        if (arg) {
            snprintf(err, errlen, "ready spec '%.*s' takes no argument", (int)kl, text);
            return -1;
        }
        spec->kind = S_IS("none")    ? TT_READY_NONE
                     : S_IS("ssh")   ? TT_READY_SSH
                     : S_IS("agent") ? TT_READY_AGENT
                                     : TT_READY_CLOUD_INIT;
        spec->port = spec->kind == TT_READY_SSH ? 22 : 0;
        return 0;
    }
    if (S_IS("tcp") || S_IS("http")) {
        spec->kind = S_IS("tcp") ? TT_READY_TCP : TT_READY_HTTP;
        const char *p = arg ? arg : "";
        char *end = NULL;
        errno = 0;
        long port = (*p >= '0' && *p <= '9') ? strtol(p, &end, 10) : -1;
        if (port < 1 || port > 65535 || errno || (spec->kind == TT_READY_TCP && *end) ||
            (spec->kind == TT_READY_HTTP && *end && *end != '/')) {
            snprintf(err, errlen, "ready spec: expected %s",
                     spec->kind == TT_READY_TCP ? "tcp:PORT (1-65535)"
                                                : "http:PORT[/PATH] (1-65535)");
            return -1;
        }
        spec->port = (uint16_t)port;
        if (spec->kind == TT_READY_HTTP) {
            const char *path = *end ? end : "/";
            for (const char *c = path; *c; c++)
                if (*c == ' ' || (unsigned char)*c >= 0x7f) {
                    snprintf(err, errlen, "ready spec: the http path holds a space or non-ASCII");
                    return -1;
                }
            snprintf(spec->arg, sizeof spec->arg, "%s", path);
        }
        return 0;
    }
    if (S_IS("console")) {
        if (!arg || !*arg) {
            snprintf(err, errlen, "ready spec: expected console:REGEX");
            return -1;
        }
        char m[160];
        tt_console_re_t *re = tt_console_re_new(arg, m, sizeof m);
        if (!re) {
            snprintf(err, errlen, "ready spec: console regex does not compile: %s", m);
            return -1;
        }
        tt_console_re_destroy(&re);
        spec->kind = TT_READY_CONSOLE;
        snprintf(spec->arg, sizeof spec->arg, "%s", arg);
        return 0;
    }
#undef S_IS
    snprintf(err, errlen,
             "unknown ready spec '%.40s': expected none, ssh, tcp:PORT, http:PORT[/PATH], "
             "console:REGEX, agent or cloud-init",
             text);
    return -1;
}

/* A network probe reaches only the VM: its guest port must be one the env
 * exposes (22 always is). Under the user backend any other port would be
 * the host's own 127.0.0.1; the worker refuses it too. */
static int s_ready_port_valid(const struct Ttfleet__EnvCreate *c, const tt_ready_t *r, char *err,
                              size_t errlen)
{
    if (r->kind != TT_READY_TCP && r->kind != TT_READY_HTTP)
        return 0;
    if (r->port == 22)
        return 0;
    for (size_t i = 0; i < c->n_ports; i++)
        if (c->ports[i] == r->port)
            return 0;
    snprintf(err, errlen,
             "ready spec: guest port %u is not one of the env's ports (a probe reaches only the "
             "VM): add it with --port %u",
             (unsigned)r->port, (unsigned)r->port);
    return -1;
}

int tt_guest_create_valid(const struct Ttfleet__EnvCreate *c, char *err, size_t errlen)
{
    char why[256];
    if (c->n_ssh_keys > TT_SSH_KEYS_MAX) {
        snprintf(err, errlen, "%zu SSH keys; at most %d", c->n_ssh_keys, TT_SSH_KEYS_MAX);
        return -1;
    }
    for (size_t i = 0; i < c->n_ssh_keys; i++)
        if (tt_ssh_key_valid(c->ssh_keys[i], why, sizeof why)) {
            snprintf(err, errlen, "ssh key %zu: %s", i + 1, why);
            return -1;
        }
    if (c->user_data.len &&
        tt_user_data_valid((const char *)c->user_data.data, c->user_data.len, err, errlen))
        return -1;
    tt_ready_t r;
    if (c->ready && *c->ready &&
        (tt_ready_parse(c->ready, &r, err, errlen) || s_ready_port_valid(c, &r, err, errlen)))
        return -1;
    for (size_t i = 0; i < c->n_images; i++)
        if (c->images[i]->ready && *c->images[i]->ready &&
            (tt_ready_parse(c->images[i]->ready, &r, why, sizeof why) ||
             s_ready_port_valid(c, &r, why, sizeof why))) {
            snprintf(err, errlen, "image %s: %s", c->images[i]->image, why);
            return -1;
        }
    return 0;
}

/* ---- the console matcher ---- */

struct tt_console_re_t {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mc;
};

#define S_RE_NEST 32         /* nested parentheses */
#define S_RE_DEPTH 1000      /* backtracking depth */
#define S_RE_HEAP_KIB 1024   /* heap for backtracking frames */

tt_console_re_t *tt_console_re_new(const char *pattern, char *err, size_t errlen)
{
    if (!pattern || !*pattern || strlen(pattern) > TT_READY_MAX) {
        snprintf(err, errlen, "empty, or longer than %d bytes", TT_READY_MAX);
        return NULL;
    }
    tt_console_re_t *self = calloc(1, sizeof *self);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!self || !cc) {
        snprintf(err, errlen, "out of memory");
        free(self);
        pcre2_compile_context_free(cc);
        return NULL;
    }
    pcre2_set_max_pattern_length(cc, TT_READY_MAX);
    pcre2_set_parens_nest_limit(cc, S_RE_NEST);
    int code = 0;
    PCRE2_SIZE at = 0;
    self->code = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                               PCRE2_MULTILINE | PCRE2_NEVER_BACKSLASH_C | PCRE2_NEVER_UTF |
                                   PCRE2_NEVER_UCP,
                               &code, &at, cc);
    pcre2_compile_context_free(cc);
    if (!self->code) {
        PCRE2_UCHAR msg[120];
        if (pcre2_get_error_message(code, msg, sizeof msg) < 0)
            snprintf((char *)msg, sizeof msg, "error %d", code);
        snprintf(err, errlen, "%s at offset %zu", (const char *)msg, (size_t)at);
        free(self);
        return NULL;
    }
    self->md = pcre2_match_data_create(1, NULL);
    self->mc = pcre2_match_context_create(NULL);
    if (!self->md || !self->mc) {
        snprintf(err, errlen, "out of memory");
        tt_console_re_destroy(&self);
        return NULL;
    }
    pcre2_set_match_limit(self->mc, TT_CONSOLE_MATCH_LIMIT);
    pcre2_set_depth_limit(self->mc, S_RE_DEPTH);
    pcre2_set_heap_limit(self->mc, S_RE_HEAP_KIB);
    return self;
}

int tt_console_re_match(tt_console_re_t *self, const char *text, size_t len)
{
    int rc = pcre2_match(self->code, (PCRE2_SPTR)text, len, 0, 0, self->md, self->mc);
    if (rc >= 0)
        return 1;
    return rc == PCRE2_ERROR_NOMATCH ? 0 : -1;
}

void tt_console_re_destroy(tt_console_re_t **self_p)
{
    tt_console_re_t *self = *self_p;
    if (!self)
        return;
    pcre2_code_free(self->code);
    pcre2_match_data_free(self->md);
    pcre2_match_context_free(self->mc);
    free(self);
    *self_p = NULL;
}

/* ---- exec and copy ---- */

int tt_guest_path_valid(const char *path, char *err, size_t errlen)
{
    size_t n = path ? strlen(path) : 0;
    if (n == 0 || path[0] != '/') {
        snprintf(err, errlen, "guest path must be absolute (start with '/')");
        return -1;
    }
    if (n > TT_GUEST_PATH_MAX) {
        snprintf(err, errlen, "guest path is %zu bytes; at most %d", n, TT_GUEST_PATH_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)path[i] < 0x20 || path[i] == 0x7f) {
            snprintf(err, errlen, "guest path holds a control character at byte %zu", i);
            return -1;
        }
    return 0;
}

static bool s_hex_id_valid(const char *s)
{
    size_t n = strlen(s);
    if (n != TT_EXEC_ID_LEN)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
    return true;
}

int tt_exec_valid(const struct Ttfleet__EnvExec *e, char *err, size_t errlen)
{
    if (e->timeout_s > TT_EXEC_TIMEOUT_MAX) {
        snprintf(err, errlen, "timeout %u s over %d", e->timeout_s, TT_EXEC_TIMEOUT_MAX);
        return -1;
    }
    if (e->stdin.len > TT_EXEC_STDIN_MAX) {
        snprintf(err, errlen, "stdin of %zu bytes over %d", e->stdin.len, TT_EXEC_STDIN_MAX);
        return -1;
    }
    if (e->exec_id && *e->exec_id) {
        if (!s_hex_id_valid(e->exec_id)) {
            snprintf(err, errlen, "exec_id is not %d lowercase hex digits", TT_EXEC_ID_LEN);
            return -1;
        }
        if (e->n_argv || e->stdin.len) {
            snprintf(err, errlen, "a read of an earlier output (exec_id) takes no argv or stdin");
            return -1;
        }
        if (e->stdout_offset > TT_EXEC_OUTPUT_MAX || e->stderr_offset > TT_EXEC_OUTPUT_MAX) {
            snprintf(err, errlen, "output offset over %d", TT_EXEC_OUTPUT_MAX);
            return -1;
        }
        return 0;
    }
    if (e->stdout_offset || e->stderr_offset) {
        snprintf(err, errlen, "output offsets need an exec_id");
        return -1;
    }
    if (e->n_argv < 1 || e->n_argv > TT_EXEC_ARGS_MAX) {
        snprintf(err, errlen, "argv has %zu strings; give 1..%d", e->n_argv, TT_EXEC_ARGS_MAX);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; i < e->n_argv; i++)
        total += e->argv[i] ? strlen(e->argv[i]) + 1 : 1;
    if (total > TT_EXEC_ARGV_BYTES) {
        snprintf(err, errlen, "argv is %zu bytes in all; at most %d", total, TT_EXEC_ARGV_BYTES);
        return -1;
    }
    if (!e->argv[0] || !*e->argv[0]) {
        snprintf(err, errlen, "argv[0] (the program) is empty");
        return -1;
    }
    return 0;
}

int tt_copy_valid(const struct Ttfleet__EnvCopy *c, char *err, size_t errlen)
{
    if (tt_guest_path_valid(c->path, err, errlen))
        return -1;
    if (c->direction != TTFLEET__COPY_DIRECTION__COPY_PUT &&
        c->direction != TTFLEET__COPY_DIRECTION__COPY_GET) {
        snprintf(err, errlen, "unknown copy direction %d", (int)c->direction);
        return -1;
    }
    if (c->transfer_id && *c->transfer_id && !s_hex_id_valid(c->transfer_id)) {
        snprintf(err, errlen, "transfer_id is not %d lowercase hex digits", TT_EXEC_ID_LEN);
        return -1;
    }
    if (c->offset > TT_COPY_FILE_MAX) {
        snprintf(err, errlen, "offset %llu over the file limit of %d bytes",
                 (unsigned long long)c->offset, TT_COPY_FILE_MAX);
        return -1;
    }
    if (c->direction == TTFLEET__COPY_DIRECTION__COPY_GET) {
        if (c->data.len || c->last || c->sha256.len || c->total_size) {
            snprintf(err, errlen, "a GET chunk request carries no data, last, size or sha256");
            return -1;
        }
        if (c->max_bytes > TT_COPY_CHUNK_MAX) {
            snprintf(err, errlen, "max_bytes %u over %d", c->max_bytes, TT_COPY_CHUNK_MAX);
            return -1;
        }
        if (c->offset && !(c->transfer_id && *c->transfer_id)) {
            snprintf(err, errlen, "a GET past offset 0 needs the transfer_id");
            return -1;
        }
        return 0;
    }
    if (c->data.len > TT_COPY_CHUNK_MAX) {
        snprintf(err, errlen, "chunk of %zu bytes over %d", c->data.len, TT_COPY_CHUNK_MAX);
        return -1;
    }
    if (c->offset + c->data.len > TT_COPY_FILE_MAX) {
        snprintf(err, errlen, "file would pass %d bytes (64 MiB): refused", TT_COPY_FILE_MAX);
        return -1;
    }
    if (c->offset && !(c->transfer_id && *c->transfer_id)) {
        snprintf(err, errlen, "a PUT chunk past offset 0 needs the transfer_id");
        return -1;
    }
    if (c->last) {
        if (c->sha256.len != 32) {
            snprintf(err, errlen, "the last PUT chunk needs the file's sha256 (32 bytes, got %zu)",
                     c->sha256.len);
            return -1;
        }
        if (c->total_size != c->offset + c->data.len) {
            snprintf(err, errlen, "total_size %llu is not offset + data (%llu)",
                     (unsigned long long)c->total_size,
                     (unsigned long long)(c->offset + c->data.len));
            return -1;
        }
    } else if (c->sha256.len || c->total_size) {
        snprintf(err, errlen, "sha256 and total_size come with the last PUT chunk only");
        return -1;
    }
    return 0;
}

/* ---- raw wire check for NULs ---- */

static int s_varint(const uint8_t *p, size_t len, size_t *pos, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*pos >= len)
            return -1;
        uint8_t b = p[(*pos)++];
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -1;
}

/* Walk one message; for a length-delimited field `field`, call back. */
typedef int (*s_field_fn)(const uint8_t *data, size_t len, void *arg);

static int s_walk(const uint8_t *p, size_t len, uint32_t field, s_field_fn fn, void *arg)
{
    size_t pos = 0;
    while (pos < len) {
        uint64_t key, v;
        if (s_varint(p, len, &pos, &key))
            return -1;
        uint32_t num = (uint32_t)(key >> 3);
        switch (key & 7) {
        case 0:
            if (s_varint(p, len, &pos, &v))
                return -1;
            break;
        case 1:
            if (len - pos < 8)
                return -1;
            pos += 8;
            break;
        case 5:
            if (len - pos < 4)
                return -1;
            pos += 4;
            break;
        case 2:
            if (s_varint(p, len, &pos, &v) || v > len - pos)
                return -1;
            if (num == field && fn(p + pos, (size_t)v, arg))
                return -1;
            pos += (size_t)v;
            break;
        default:
            return -1; /* groups are not used by proto3 */
        }
    }
    return 0;
}

static int s_no_nul(const uint8_t *data, size_t len, void *arg)
{
    (void)arg;
    return memchr(data, 0, len) ? -1 : 0;
}

static int s_inner_argv(const uint8_t *data, size_t len, void *arg)
{
    (void)arg;
    return s_walk(data, len, 4, s_no_nul, NULL);
}

int tt_guest_raw_check(const uint8_t *body, size_t len, uint32_t exec_field, uint32_t copy_field,
                       char *err, size_t errlen)
{
    if (s_walk(body, len, exec_field, s_inner_argv, NULL) ||
        s_walk(body, len, copy_field, s_inner_argv, NULL)) {
        snprintf(err, errlen, "an exec argument or a copy path holds a NUL byte (or the message "
                              "is malformed)");
        return -1;
    }
    return 0;
}
