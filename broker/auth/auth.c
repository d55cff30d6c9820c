/*
 * auth: the broker's ZAP handler (ZeroMQ RFC 27) for CURVE.
 *
 * Why not CZMQ's zauth: it keeps one certificate directory for every
 * domain, and the broker needs two allow-lists with different meanings.
 * This actor answers ZAP requests on inproc://zeromq.zap.01:
 *
 *   domain "clients": the client's public key must be bound by the
 *       operator (keys.c, broker.db's keys table). The loop sends the bound
 *       keys through this actor's pipe ("KEY-SET pub", "KEY-DEL pub",
 *       "KEY-CLEAR"); the user id is the Z85 public key itself, and the loop
 *       looks its tenant and role up for every message. A certificate's own
 *       `tenant`/`role` metadata is never read for authorisation: a user
 *       writes those. Files in --client-keys are not bindings; their
 *       metadata is ignored with a warning (ttbroker --import-client-keys
 *       binds them once, on the operator's word).
 *   domain "events": the PUB events socket: a bound key whose role is
 *       admin or gateway (the loop sends it with KEY-SET); every other key is refused,
 *       since a PUB cannot filter per subscriber (tenants use the private
 *       stream, evstream.h). The ZAP metadata carries the key as X-Key.
 *   domain "workers": the key must be in the worker key directory; user id
 *       "worker:<host>" where host is the cert's `host` metadata or "*".
 *   domain "blobs": the blob server (issue 12): a bound client key (a
 *       push) gets the "clients" user id, a worker key the "workers" one.
 *
 * Anything else, an unknown key, or a cert with bad metadata gets 400.
 * Each key directory is re-read when any entry changes: every second its
 * fingerprint (name, inode, size, mtime and ctime in nanoseconds of every
 * file) is compared with the last one, so an in-place edit that keeps the
 * size and the mtime is noticed too (ctime cannot be set back). The pipe is
 * drained before each ZAP request, so a key removed by the loop is refused
 * by the next handshake.
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
    uint64_t fingerprint;
    int64_t checked_ms;
    uint64_t gen;  /* bumped by each load */
    bool clients; /* warn that client cert metadata is ignored */
} keydir_t;

static void s_cert_free(void **item)
{
    zcert_destroy((zcert_t **)item);
}

static uint64_t s_mix(uint64_t h, uint64_t v)
{
    for (int i = 0; i < 8; i++, v >>= 8)
        h = (h ^ (v & 0xff)) * 1099511628211ULL; /* FNV-1a */
    return h;
}

/* A digest of every entry's name, inode, size, mtime and ctime. */
static uint64_t s_keydir_fingerprint(const char *dir)
{
    uint64_t h = 1469598103934665603ULL;
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[1024];
        struct stat st;
        if (e->d_name[0] == '.' ||
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            stat(path, &st))
            continue;
        for (const char *p = e->d_name; *p; p++)
            h = s_mix(h, (uint8_t)*p);
        h = s_mix(h, (uint64_t)st.st_ino);
        h = s_mix(h, (uint64_t)st.st_size);
        h = s_mix(h, (uint64_t)st.st_mtim.tv_sec * 1000000000ULL + (uint64_t)st.st_mtim.tv_nsec);
        h = s_mix(h, (uint64_t)st.st_ctim.tv_sec * 1000000000ULL + (uint64_t)st.st_ctim.tv_nsec);
    }
    closedir(d);
    return h;
}

static void s_keydir_load(keydir_t *kd)
{
    DIR *d = opendir(kd->dir);
    if (!d) {
        /* a directory being replaced is not a revocation of every key:
         * what was read before stays until it can be read again */
        zsys_warning("auth: cannot read key directory %s; keeping the %zu key(s) read before",
                     kd->dir, zhashx_size(kd->certs));
        return;
    }
    kd->gen++;
    zhashx_purge(kd->certs);
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
        if (kd->clients && (zcert_meta(cert, "tenant") || zcert_meta(cert, "role")))
            zsys_warning("auth: %s: the tenant/role written in a client cert are ignored; an "
                         "admin binds the key (ttctl key add %s --tenant T --role R)",
                         path, path);
        zhashx_insert(kd->certs, key, cert);
    }
    closedir(d);
}

static keydir_t *s_keydir_new(const char *dir, bool clients)
{
    keydir_t *kd = calloc(1, sizeof *kd);
    if (!kd)
        return NULL;
    kd->dir = strdup(dir);
    kd->certs = zhashx_new();
    zhashx_set_destructor(kd->certs, s_cert_free);
    kd->clients = clients;
    kd->fingerprint = s_keydir_fingerprint(dir);
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

/* Reads the directory again if it changed; looked at once a second at most. */
static void s_keydir_refresh(keydir_t *kd)
{
    int64_t now = zclock_mono();
    if (now - kd->checked_ms >= 1000) {
        kd->checked_ms = now;
        uint64_t fp = s_keydir_fingerprint(kd->dir);
        if (fp != kd->fingerprint) {
            kd->fingerprint = fp;
            zsys_info("auth: %s changed; re-reading it", kd->dir);
            s_keydir_load(kd);
        }
    }
}

static zcert_t *s_keydir_lookup(keydir_t *kd, const char *key)
{
    s_keydir_refresh(kd);
    return zhashx_lookup(kd->certs, key);
}

/* Tells the loop the worker keys there are now ("WORKER-KEYS" and one frame
 * of 40-character keys end to end), so a connection whose key was removed
 * is cut (workers.c) instead of living on until it reconnects. */
static void s_send_worker_keys(zsock_t *pipe, keydir_t *kd)
{
    size_t n = zhashx_size(kd->certs);
    char *all = malloc(n * TT_KEY_LEN + 1);
    if (!all)
        return;
    size_t k = 0;
    for (zcert_t *c = zhashx_first(kd->certs); c && k < n; c = zhashx_next(kd->certs), k++)
        memcpy(all + k * TT_KEY_LEN, zcert_public_txt(c), TT_KEY_LEN);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "WORKER-KEYS");
    zmsg_addmem(m, all, k * TT_KEY_LEN);
    free(all);
    zmsg_send(&m, pipe);
}

typedef struct {
    keydir_t *clients; /* NULL without --client-keys: only for warnings */
    keydir_t *workers;
    zhashx_t *bound;   /* client keys the operator bound (keys.c), Z85 -> "" */
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
    /* "blobs" (issue 12): the blob server; a bound client key (pushes)
     * or a worker key (fetches), with the user ids of their own domains */
    if (domain && strcmp(domain, "blobs") == 0) {
        if (zhashx_lookup(self->bound, txt))
            clients = true;
        else
            workers = true;
    }
    if (clients) {
        const char *bound_role = zhashx_lookup(self->bound, txt);
        if (!bound_role) {
            text = self->clients && s_keydir_lookup(self->clients, txt)
                       ? "unknown key: a file in --client-keys is not a binding (ttctl key add)"
                       : "unknown key";
            goto answer;
        }
        if (events && strcmp(bound_role, "admin") != 0) {
            text = "the PUB events socket is for admin keys under CURVE; use the private stream";
            goto answer;
        }
        snprintf(user, sizeof user, "%s", txt);
    } else if (workers) {
        zcert_t *cert = s_keydir_lookup(self->workers, txt);
        if (!cert) {
            text = "unknown key";
            goto answer;
        }
        /* a cert without `host` may be any host; one whose `host` is not a
         * valid name is refused, not widened to "any host" */
        const char *host = zcert_meta(cert, "host");
        if (host && !tt_name_valid(host)) {
            text = "worker cert has an invalid host metadata";
            goto answer;
        }
        snprintf(user, sizeof user, "worker:%s", host ? host : "*");
    } else {
        text = "unknown domain";
        goto answer;
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

/* A command from the loop: the bound client keys. false on $TERM. */
static bool s_pipe(auth_t *self, zsock_t *pipe)
{
    char *cmd = NULL, *pub = NULL, *role = NULL;
    if (zstr_recvx(pipe, &cmd, &pub, &role, NULL) < 1 || !cmd || strcmp(cmd, "$TERM") == 0) {
        zstr_free(&cmd);
        zstr_free(&pub);
        zstr_free(&role);
        return false;
    }
    if (strcmp(cmd, "KEY-CLEAR") == 0)
        zhashx_purge(self->bound);
    else if (strcmp(cmd, "KEY-SET") == 0 && pub)
        /* the value is the key's role as far as the "events" domain cares */
        /* admin and gateway keys may read the PUB (the gateway filters per
         * tenant itself, GATEWAY.md) */
        zhashx_update(self->bound, pub,
                      role && (strcmp(role, "admin") == 0 || strcmp(role, "gateway") == 0)
                          ? "admin"
                          : "");
    else if (strcmp(cmd, "KEY-DEL") == 0 && pub)
        zhashx_delete(self->bound, pub);
    zstr_free(&cmd);
    zstr_free(&pub);
    zstr_free(&role);
    return true;
}

/* args: broker_config_t* */
void auth_actor(zsock_t *pipe, void *args)
{
    const broker_config_t *cfg = args;
    auth_t self = {0};
    self.verbose = cfg->verbose;
    self.clients = cfg->client_keys[0] ? s_keydir_new(cfg->client_keys, true) : NULL;
    self.workers = s_keydir_new(cfg->worker_keys, false);
    self.bound = zhashx_new();
    zsock_t *handler = zsock_new_rep("inproc://zeromq.zap.01");
    if (!handler) {
        zsys_error("auth: cannot bind the ZAP handler");
        s_keydir_destroy(&self.clients);
        s_keydir_destroy(&self.workers);
        zhashx_destroy(&self.bound);
        zsock_signal(pipe, 1);
        return;
    }
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, handler, NULL);
    bool run = true;
    uint64_t sent_gen = 0;
    while (run) {
        /* the worker key directory is looked at every second even with no
         * handshake, so a removed key cuts its live connection */
        s_keydir_refresh(self.workers);
        if (self.workers->gen != sent_gen) {
            sent_gen = self.workers->gen;
            s_send_worker_keys(pipe, self.workers);
        }
        void *which = zpoller_wait(poller, 1000);
        if (!which && zpoller_terminated(poller))
            break;
        /* the loop's key changes first, so a removed key fails the next
         * handshake even when both arrived together */
        while (run && (zsock_events(pipe) & ZMQ_POLLIN))
            run = s_pipe(&self, pipe);
        if (run && (zsock_events(handler) & ZMQ_POLLIN))
            s_handle(&self, handler);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&handler);
    s_keydir_destroy(&self.clients);
    s_keydir_destroy(&self.workers);
    zhashx_destroy(&self.bound);
}
