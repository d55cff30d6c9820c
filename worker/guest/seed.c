/*
 * seed: NoCloud seeds. See seed.h for what is in one and why.
 *
 * Text that reaches YAML is written as JSON (YAML's flow style accepts
 * it) by jansson, so a key's comment or a hostname can never break out of
 * its string. The ISO tool runs as a child with a fixed argv and a
 * deadline (spawn_run).
 */
#define _GNU_SOURCE
#include "seed.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "spawn.h"
#include "ttguest.h"

#define S_ISO_MS 20000

int seed_key_valid(const char *key, char *err, size_t errlen)
{
    return tt_ssh_key_valid(key, err, errlen);
}

int seed_user_data_valid(const char *data, size_t len, char *err, size_t errlen)
{
    return tt_user_data_valid(data, len, err, errlen);
}

void seed_hostname(const char *env, uint32_t vm_id, char *buf, size_t len)
{
    const char *name = strrchr(env, '/');
    name = name ? name + 1 : env;
    char base[48];
    size_t o = 0;
    for (size_t i = 0; name[i] && o < sizeof base - 1; i++) {
        char c = (char)tolower((unsigned char)name[i]);
        base[o++] = isalnum((unsigned char)c) ? c : '-';
    }
    while (o && base[o - 1] == '-')
        o--;
    base[o] = 0;
    size_t s = 0;
    while (base[s] == '-')
        s++;
    snprintf(buf, len, "%s-%u", base[s] ? base + s : "vm", vm_id);
}

static int s_read_file(const char *path, size_t max, char **out, size_t *outlen, char *err,
                       size_t errlen)
{
    *out = NULL;
    *outlen = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "open %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(max + 1);
    size_t n = 0;
    while (buf && n <= max) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf || n > max) {
        free(buf);
        snprintf(err, errlen, "%s is missing memory or longer than %zu bytes", path, max);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    return 0;
}

static int s_write_file(const char *path, const char *data, size_t len, char *err, size_t errlen)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.new", path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "path too long: %s", path);
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0) {
        snprintf(err, errlen, "create %s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    if (close(fd) || off < len || rename(tmp, path)) {
        snprintf(err, errlen, "write %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int seed_instance_id(const char *vm_dir, uint32_t vm_id, char *buf, size_t len, char *err,
                     size_t errlen)
{
    char path[4096];
    if (snprintf(path, sizeof path, "%s/instance-id", vm_dir) >= (int)sizeof path) {
        snprintf(err, errlen, "path too long: %s", vm_dir);
        return -1;
    }
    char *text;
    size_t n;
    int rc = s_read_file(path, 128, &text, &n, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        while (n && (text[n - 1] == '\n'))
            text[--n] = 0;
        int ok = n > 0 && n < len;
        for (size_t i = 0; ok && i < n; i++)
            ok = isalnum((unsigned char)text[i]) || text[i] == '-';
        if (ok)
            snprintf(buf, len, "%s", text);
        free(text);
        if (ok)
            return 0;
        /* a damaged file: make a new id (cloud-init sees a new instance) */
    }
    unsigned char r[8];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        snprintf(err, errlen, "getrandom: %s", strerror(errno));
        return -1;
    }
    char id[64];
    snprintf(id, sizeof id, "tt-%u-%02x%02x%02x%02x%02x%02x%02x%02x", vm_id, r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7]);
    char line[80];
    int ln = snprintf(line, sizeof line, "%s\n", id);
    if (s_write_file(path, line, (size_t)ln, err, errlen))
        return -1;
    if (strlen(id) >= len) {
        snprintf(err, errlen, "instance id buffer too small");
        return -1;
    }
    snprintf(buf, len, "%s", id);
    return 0;
}

static char *s_dump(json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    json_decref(j);
    return s;
}

/* head + body + "\n"; takes (frees) body. */
static char *s_join(const char *head, char *body)
{
    char *out = NULL;
    if (!body || asprintf(&out, "%s%s\n", head, body) < 0)
        out = NULL;
    free(body);
    return out;
}

static char *s_base64(const char *data, size_t len)
{
    size_t n = 4 * ((len + 2) / 3);
    char *b = malloc(n + n / 76 + 2);
    if (!b)
        return NULL;
    unsigned char *tmp = malloc(n + 1);
    if (!tmp) {
        free(b);
        return NULL;
    }
    EVP_EncodeBlock(tmp, (const unsigned char *)data, (int)len);
    /* MIME lines of 76 characters */
    size_t o = 0;
    for (size_t i = 0; i < n; i += 76) {
        size_t k = n - i < 76 ? n - i : 76;
        memcpy(b + o, tmp + i, k);
        o += k;
        b[o++] = '\n';
    }
    b[o] = 0;
    free(tmp);
    return b;
}

static char *s_user_data(const seed_spec_t *spec, char *err, size_t errlen)
{
    json_t *keys = json_array();
    for (size_t i = 0; i < spec->n_keys; i++)
        json_array_append_new(keys, json_string(spec->keys[i]));
    json_t *cc = json_object();
    json_object_set_new(cc, "ssh_authorized_keys", keys);
    if (!spec->user_data || spec->user_data_len == 0)
        return s_join("#cloud-config\n", s_dump(cc));
    if (spec->n_keys == 0) {
        json_decref(cc);
        char *out = malloc(spec->user_data_len + 1);
        if (out) {
            memcpy(out, spec->user_data, spec->user_data_len);
            out[spec->user_data_len] = 0;
        }
        return out;
    }
    /* later parts merge into earlier ones: append lists, keep dict keys */
    json_t *how = json_array();
    json_t *l = json_object(), *d = json_object();
    json_object_set_new(l, "name", json_string("list"));
    json_object_set_new(l, "settings", json_pack("[s]", "append"));
    json_object_set_new(d, "name", json_string("dict"));
    json_object_set_new(d, "settings", json_pack("[s,s]", "no_replace", "recurse_list"));
    json_array_append_new(how, l);
    json_array_append_new(how, d);
    json_object_set_new(cc, "merge_how", how);
    char *ours = s_dump(cc);
    char *theirs = s_base64(spec->user_data, spec->user_data_len);
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
        memset(r, 0x5a, sizeof r);
    char boundary[64];
    snprintf(boundary, sizeof boundary,
             "==ttfleet-%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x==", r[0], r[1], r[2], r[3],
             r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11]);
    const char *type =
        memcmp(spec->user_data, "#!", 2) == 0 ? "text/x-shellscript" : "text/cloud-config";
    char *out = NULL;
    /* the boundary ('=' and hex) cannot occur in base64 lines or in JSON */
    if (ours && theirs &&
        asprintf(&out,
                 "Content-Type: multipart/mixed; boundary=\"%s\"\n"
                 "MIME-Version: 1.0\n\n"
                 "--%s\n"
                 "Content-Type: %s; charset=\"utf-8\"\n"
                 "Content-Transfer-Encoding: base64\n"
                 "Content-Disposition: attachment; filename=\"tenant\"\n\n"
                 "%s\n"
                 "--%s\n"
                 "Content-Type: text/cloud-config; charset=\"us-ascii\"\n"
                 "Content-Disposition: attachment; filename=\"ttfleet-keys\"\n\n"
                 "#cloud-config\n%s\n\n"
                 "--%s--\n",
                 boundary, boundary, type, theirs, boundary, ours, boundary) < 0)
        out = NULL;
    free(ours);
    free(theirs);
    if (!out)
        snprintf(err, errlen, "out of memory");
    return out;
}

int seed_render(const seed_spec_t *spec, char **meta_data, char **user_data, char **network_config,
                char *err, size_t errlen)
{
    *meta_data = *user_data = *network_config = NULL;
    if (!spec->instance_id || !spec->hostname || !spec->mac ||
        (!spec->dhcp && (!spec->ip || !spec->gateway))) {
        snprintf(err, errlen, "seed: instance id, hostname, MAC and address are required");
        return -1;
    }
    for (size_t i = 0; i < spec->n_keys; i++)
        if (seed_key_valid(spec->keys[i], err, errlen))
            return -1;
    if (spec->user_data && seed_user_data_valid(spec->user_data, spec->user_data_len, err, errlen))
        return -1;
    *meta_data = s_join("", s_dump(json_pack("{s:s,s:s}", "instance-id", spec->instance_id,
                                             "local-hostname", spec->hostname)));
    json_t *nic = json_pack("{s:{s:s}}", "match", "macaddress", spec->mac);
    if (spec->dhcp)
        json_object_set_new(nic, "dhcp4", json_true());
    else {
        char addr[64];
        snprintf(addr, sizeof addr, "%s/%d", spec->ip, spec->prefix);
        json_object_set_new(nic, "dhcp4", json_false());
        json_object_set_new(nic, "addresses", json_pack("[s]", addr));
        json_object_set_new(nic, "routes",
                            json_pack("[{s:s,s:s}]", "to", "0.0.0.0/0", "via", spec->gateway));
    }
    *network_config =
        s_join("", s_dump(json_pack("{s:i,s:{s:o}}", "version", 2, "ethernets", "nic0", nic)));
    *user_data = s_user_data(spec, err, errlen);
    if (!*meta_data || !*network_config || !*user_data) {
        free(*meta_data);
        free(*user_data);
        free(*network_config);
        *meta_data = *user_data = *network_config = NULL;
        snprintf(err, errlen, "seed: out of memory");
        return -1;
    }
    return 0;
}

int seed_build(const seed_spec_t *spec, const char *work_dir, const char *iso_path, char *err,
               size_t errlen)
{
    char tool[4096];
    int xorriso = 0;
    if (spawn_which("genisoimage", tool, sizeof tool)) {
        if (spawn_which("xorriso", tool, sizeof tool)) {
            snprintf(err, errlen,
                     "neither genisoimage nor xorriso is installed (Debian package genisoimage)");
            return -1;
        }
        xorriso = 1;
    }
    char *files[3];
    if (seed_render(spec, &files[0], &files[1], &files[2], err, errlen))
        return -1;
    static const char *names[3] = {"meta-data", "user-data", "network-config"};
    char paths[3][4096], tmp[4200];
    int rc = -1;
    if ((mkdir(work_dir, 0750) && errno != EEXIST) ||
        snprintf(tmp, sizeof tmp, "%s.new", iso_path) >= (int)sizeof tmp) {
        snprintf(err, errlen, "seed: create %s: %s", work_dir, strerror(errno));
        goto out;
    }
    for (int i = 0; i < 3; i++)
        if (snprintf(paths[i], sizeof paths[i], "%s/%s", work_dir, names[i]) >=
                (int)sizeof paths[i] ||
            s_write_file(paths[i], files[i], strlen(files[i]), err, errlen))
            goto out;
    unlink(tmp);
    char *geniso[] = {tool,      "-quiet", "-output", tmp,      "-volid", "cidata",
                      "-joliet", "-rock",  paths[0],  paths[1], paths[2], NULL};
    char *xorr[] = {tool,     "-as", "mkisofs", "-quiet", "-o",     tmp,      "-V",
                    "cidata", "-J",  "-R",      paths[0], paths[1], paths[2], NULL};
    if (spawn_run(xorriso ? xorr : geniso, S_ISO_MS, err, errlen)) {
        unlink(tmp);
        goto out;
    }
    if (rename(tmp, iso_path)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        goto out;
    }
    rc = 0;
out:
    for (int i = 0; i < 3; i++)
        free(files[i]);
    return rc;
}

int seed_inputs_save(const char *vm_dir, const char *const *keys, size_t n_keys,
                     const char *user_data, size_t user_data_len, char *err, size_t errlen)
{
    if (n_keys > SEED_KEYS_MAX) {
        snprintf(err, errlen, "%zu SSH keys; at most %d", n_keys, SEED_KEYS_MAX);
        return -1;
    }
    for (size_t i = 0; i < n_keys; i++)
        if (seed_key_valid(keys[i], err, errlen))
            return -1;
    if (user_data && seed_user_data_valid(user_data, user_data_len, err, errlen))
        return -1;
    char kp[4096], up[4096];
    if (snprintf(kp, sizeof kp, "%s/ssh_keys", vm_dir) >= (int)sizeof kp ||
        snprintf(up, sizeof up, "%s/user-data", vm_dir) >= (int)sizeof up) {
        snprintf(err, errlen, "path too long: %s", vm_dir);
        return -1;
    }
    size_t total = 0;
    for (size_t i = 0; i < n_keys; i++)
        total += strlen(keys[i]) + 1;
    char *text = malloc(total + 1);
    if (!text) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    size_t o = 0;
    for (size_t i = 0; i < n_keys; i++) {
        size_t k = strlen(keys[i]);
        memcpy(text + o, keys[i], k);
        o += k;
        text[o++] = '\n';
    }
    int rc = 0;
    if (n_keys)
        rc = s_write_file(kp, text, o, err, errlen);
    else if (unlink(kp) && errno != ENOENT)
        rc = -1;
    free(text);
    if (rc == 0 && user_data)
        rc = s_write_file(up, user_data, user_data_len, err, errlen);
    else if (rc == 0 && unlink(up) && errno != ENOENT)
        rc = -1;
    if (rc && !err[0])
        snprintf(err, errlen, "seed inputs in %s: %s", vm_dir, strerror(errno));
    return rc;
}

int seed_inputs_load(const char *vm_dir, char ***keys, size_t *n_keys, char **user_data,
                     size_t *user_data_len, char *err, size_t errlen)
{
    *keys = NULL;
    *n_keys = 0;
    *user_data = NULL;
    *user_data_len = 0;
    char kp[4096], up[4096];
    if (snprintf(kp, sizeof kp, "%s/ssh_keys", vm_dir) >= (int)sizeof kp ||
        snprintf(up, sizeof up, "%s/user-data", vm_dir) >= (int)sizeof up) {
        snprintf(err, errlen, "path too long: %s", vm_dir);
        return -1;
    }
    char *text;
    size_t n;
    int rc = s_read_file(kp, (size_t)SEED_KEYS_MAX * (SEED_KEY_MAX + 1), &text, &n, err, errlen);
    if (rc < 0)
        return -1;
    if (rc == 0) {
        char **arr = calloc(SEED_KEYS_MAX, sizeof *arr);
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); arr && line && *n_keys < SEED_KEYS_MAX;
             line = strtok_r(NULL, "\n", &save))
            if (seed_key_valid(line, err, errlen) == 0)
                arr[(*n_keys)++] = strdup(line);
        free(text);
        *keys = arr;
        err[0] = 0;
    }
    rc = s_read_file(up, SEED_USER_DATA_MAX, user_data, user_data_len, err, errlen);
    if (rc < 0) {
        seed_inputs_free(*keys, *n_keys, NULL);
        *keys = NULL;
        *n_keys = 0;
        return -1;
    }
    return 0;
}

void seed_inputs_free(char **keys, size_t n_keys, char *user_data)
{
    for (size_t i = 0; keys && i < n_keys; i++)
        free(keys[i]);
    free(keys);
    free(user_data);
}
