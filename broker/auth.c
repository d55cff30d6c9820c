/*
 * auth: the broker's ZAP handler (ZeroMQ RFC 27) for CURVE.
 *
 * Why not CZMQ's zauth: it keeps one certificate directory for every
 * domain, and the broker needs two allow-lists with different meanings:
 * client keys, whose certificate metadata names a tenant and a role, and
 * worker keys. This actor answers ZAP requests on inproc://zeromq.zap.01:
 *
 *   domain "clients": the client's public key must be in the client key
 *       directory; its cert's `tenant` (a valid name) and `role` (`user` or
 *       `admin`) become the ZAP user id "role:tenant", which the broker
 *       reads from every message (frame metadata "User-Id"). The tenant of a
 *       request is taken from there, never from the body.
 *   domain "workers": the key must be in the worker key directory; user id
 *       "worker:<host>" where host is the cert's `host` metadata or "*".
 *
 * Anything else, an unknown key, or a cert with bad metadata gets 400.
 * Each key directory is re-read when its modification time changes (checked
 * at most once a second), so keys can be added or
 * revoked without a restart.
 */
#include "auth.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A directory of public certificates, by public key. CZMQ's zcertstore
 * asserts when two files hold the same key (a copy such as alice.bak);
 * here a duplicate is skipped with a warning and the broker keeps running. */
typedef struct {
    char *dir;
    zhashx_t *certs; /* public key (Z85) -> zcert_t* */
    struct timespec mtime;
    int64_t checked_ms;
} keydir_t;

static void s_cert_free(void **item)
{
    zcert_destroy((zcert_t **)item);
}

static void s_keydir_load(keydir_t *kd)
{
    zhashx_purge(kd->certs);
    DIR *d = opendir(kd->dir);
    if (!d) {
        zsys_warning("auth: cannot read key directory %s", kd->dir);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || (len > 7 && strcmp(e->d_name + len - 7, "_secret") == 0))
            continue;
        char path[1024];
        if (snprintf(path, sizeof path, "%s/%s", kd->dir, e->d_name) >= (int)sizeof path)
            continue;
        struct stat st;
        if (stat(path, &st) || !S_ISREG(st.st_mode))
            continue;
        zcert_t *cert = zcert_load(path);
        if (!cert) {
            zsys_warning("auth: %s is not a certificate; ignored", path);
            continue;
        }
        const char *key = zcert_public_txt(cert);
        if (zhashx_lookup(kd->certs, key)) {
            zsys_warning("auth: %s repeats a key already loaded from this directory; ignored",
                         path);
            zcert_destroy(&cert);
            continue;
        }
        zhashx_insert(kd->certs, key, cert);
    }
    closedir(d);
}

static keydir_t *s_keydir_new(const char *dir)
{
    keydir_t *kd = calloc(1, sizeof *kd);
    if (!kd)
        return NULL;
    kd->dir = strdup(dir);
    kd->certs = zhashx_new();
    zhashx_set_destructor(kd->certs, s_cert_free);
    struct stat st;
    if (stat(dir, &st) == 0)
        kd->mtime = st.st_mtim;
    s_keydir_load(kd);
    kd->checked_ms = zclock_mono();
    return kd;
}

static void s_keydir_destroy(keydir_t **kd_p)
{
    keydir_t *kd = *kd_p;
    if (!kd)
        return;
    zhashx_destroy(&kd->certs);
    free(kd->dir);
    free(kd);
    *kd_p = NULL;
}

static zcert_t *s_keydir_lookup(keydir_t *kd, const char *key)
{
    int64_t now = zclock_mono();
    if (now - kd->checked_ms >= 1000) {
        kd->checked_ms = now;
        struct stat st;
        if (stat(kd->dir, &st) == 0 && (st.st_mtim.tv_sec != kd->mtime.tv_sec ||
                                         st.st_mtim.tv_nsec != kd->mtime.tv_nsec)) {
            kd->mtime = st.st_mtim;
            s_keydir_load(kd);
        }
    }
    return zhashx_lookup(kd->certs, key);
}

typedef struct {
    keydir_t *clients;
    keydir_t *workers;
    bool verbose;
} auth_t;

/* The ZAP reply. key (Z85, or "") goes into the metadata frame (RFC 27
 * frame 7, ZMTP property format) as "X-Key", so the broker can read it
 * next to User-Id with zframe_meta() and audit which key acted. */
static void s_reply(zsock_t *handler, const char *version, const char *request_id,
                    const char *code, const char *text, const char *user, const char *key)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, version);
    zmsg_addstr(m, request_id);
    zmsg_addstr(m, code);
    zmsg_addstr(m, text);
    zmsg_addstr(m, user);
    size_t klen = key ? strlen(key) : 0;
    if (klen && strcmp(code, "200") == 0) {
        uint8_t meta[1 + 5 + 4 + 64];
        meta[0] = 5;
        memcpy(meta + 1, "X-Key", 5);
        meta[6] = 0, meta[7] = 0, meta[8] = 0, meta[9] = (uint8_t)klen;
        memcpy(meta + 10, key, klen);
        zmsg_addmem(m, meta, 10 + klen);
    } else
        zmsg_addmem(m, "", 0);
    zmsg_send(&m, handler);
}

static void s_handle(auth_t *self, zsock_t *handler)
{
    zmsg_t *req = zmsg_recv(handler);
    if (!req)
        return;
    char *version = zmsg_popstr(req);
    char *request_id = zmsg_popstr(req);
    char *domain = zmsg_popstr(req);
    char *address = zmsg_popstr(req);
    char *identity = zmsg_popstr(req);
    char *mechanism = zmsg_popstr(req);
    zframe_t *key = zmsg_pop(req);
    const char *code = "400", *text = "denied";
    char user[2 * TT_MAX_NAME + 16] = "";
    if (!version || strcmp(version, "1.0") != 0 || !request_id) {
        /* not a ZAP request we can answer properly */
        goto out;
    }
    if (!mechanism || strcmp(mechanism, "CURVE") != 0 || !key || zframe_size(key) != 32) {
        text = "CURVE required";
        goto answer;
    }
    char txt[41];
    zmq_z85_encode(txt, zframe_data(key), 32);
    /* "events": the PUB events socket, admin client keys only (a PUB
     * cannot filter per subscriber; tenants use the private stream) */
    bool events = domain && strcmp(domain, "events") == 0;
    bool clients = domain && (strcmp(domain, "clients") == 0 || events);
    bool workers = domain && strcmp(domain, "workers") == 0;
    keydir_t *store = clients ? self->clients : workers ? self->workers : NULL;
    zcert_t *cert = store ? s_keydir_lookup(store, txt) : NULL;
    if (!cert) {
        text = "unknown key";
        goto answer;
    }
    if (clients) {
        const char *tenant = zcert_meta(cert, "tenant");
        const char *role = zcert_meta(cert, "role");
        if (!tt_name_valid(tenant) || !role ||
            (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0)) {
            text = "client cert lacks valid tenant/role metadata";
            goto answer;
        }
        if (events && strcmp(role, "admin") != 0) {
            text = "the PUB events socket is for admin keys under CURVE; use the private stream";
            goto answer;
        }
        snprintf(user, sizeof user, "%s:%s", role, tenant);
    } else {
        /* a cert without `host` may be any host; one whose `host` is not a
         * valid name is refused, not widened to "any host" */
        const char *host = zcert_meta(cert, "host");
        if (host && !tt_name_valid(host)) {
            text = "worker cert has an invalid host metadata";
            goto answer;
        }
        snprintf(user, sizeof user, "worker:%s", host ? host : "*");
    }
    code = "200";
    text = "OK";
answer:
    if (self->verbose || strcmp(code, "200") != 0)
        zsys_info("auth: %s %s from %s: %s %s", domain ? domain : "?", mechanism ? mechanism : "?",
                  address ? address : "?", code, text);
    s_reply(handler, version, request_id, code, text, user, strcmp(code, "200") == 0 ? txt : "");
out:
    zstr_free(&version);
    zstr_free(&request_id);
    zstr_free(&domain);
    zstr_free(&address);
    zstr_free(&identity);
    zstr_free(&mechanism);
    zframe_destroy(&key);
    zmsg_destroy(&req);
}

/* args: broker_config_t* */
void auth_actor(zsock_t *pipe, void *args)
{
    const broker_config_t *cfg = args;
    auth_t self = {0};
    self.verbose = cfg->verbose;
    self.clients = s_keydir_new(cfg->client_keys);
    self.workers = s_keydir_new(cfg->worker_keys);
    zsock_t *handler = zsock_new_rep("inproc://zeromq.zap.01");
    if (!handler) {
        zsys_error("auth: cannot bind the ZAP handler");
        s_keydir_destroy(&self.clients);
        s_keydir_destroy(&self.workers);
        zsock_signal(pipe, 1);
        return;
    }
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, handler, NULL);
    while (true) {
        void *which = zpoller_wait(poller, -1);
        if (which == handler)
            s_handle(&self, handler);
        else if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            zstr_free(&cmd);
            if (term)
                break;
        } else
            break;
    }
    zpoller_destroy(&poller);
    zsock_destroy(&handler);
    s_keydir_destroy(&self.clients);
    s_keydir_destroy(&self.workers);
}
