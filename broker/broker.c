/*
 * broker: the loop, the sockets and the group commit.
 *
 * One iteration:
 *   1. wait (bounded by the next timer) until a socket is readable;
 *   2. read up to BATCH messages from clients and workers, without
 *      blocking; each handler changes the model and stages rows into one
 *      transaction, and queues what it wants to send;
 *   3. run the timers (heartbeats, liveness, op deadlines, the reaper,
 *      pruning of old request records);
 *   4. COMMIT once for the whole batch;
 *   5. send the queue: replies, worker commands, events.
 * If the commit (or any statement) fails, nothing queued is sent except an
 * INTERNAL error to each client of the batch, and the model is reloaded
 * from the file: memory never holds what the disk does not.
 *
 * The commit pipeline (broker_run). COMMIT in step 4 only writes the WAL
 * (synchronous=NORMAL); the store's syncer thread fdatasyncs it behind the
 * loop. Step 5 becomes "seal": the batch's queue waits in outq's sealed
 * list with the commit sequence it needs on disk, and the loop goes on
 * reading batch N+1 while batch N syncs. When the syncer reports progress
 * (a pipe in the poll set), every sealed batch whose sequence is durable
 * leaves, oldest first; broker.after_commit and broker.after_send fire
 * there, per committed batch, as they did inline. A batch that committed
 * nothing (reads, heartbeats) still waits behind the batches before it:
 * what it shows may depend on them. COMMIT errors keep the inline path's
 * meaning (s_fail_batch); an fsync error stops the broker (the kernel may
 * have dropped the pages: only a restart knows what is on disk), and the
 * clients' retries meet the idempotency records that survived.
 * Without broker_run (unit tests, fuzzers) each batch syncs inline, and the
 * caller flushes the queue after broker_end_batch as before.
 */
#include "broker.h"
#include "admission.h"
#include "admq.h"
#include "auth.h"
#include "blobgc.h"
#include "broker_schema.h"
#include "cluster_ops.h"
#include "dispatch.h"
#include "evstream.h"
#include "ha.h"
#include "image_ops.h"
#include "keys.h"
#include "op.h"
#include "outq.h"
#include "persist.h"
#include "quota.h"
#include "rate.h"
#include "reaper.h"
#include "reply.h"
#include "scheduler.h"
#include "stats.h"
#include "stats_ops.h"
#include "ttcrash.h"
#include "ttguest.h"
#include "workers.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BATCH 512

/* A client of this batch, remembered so a failed commit can answer it. */
typedef struct {
    zmsg_t *envelope; /* routing frames */
    char service[33];
    bool answered;    /* got a durable answer (a replay): leave it alone */
} batch_client_t;

static void s_batch_client_free(void **item)
{
    batch_client_t *bc = *item;
    if (bc) {
        zmsg_destroy(&bc->envelope);
        free(bc);
        *item = NULL;
    }
}

void broker_config_defaults(broker_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->state_dir, sizeof cfg->state_dir, "ttfleet-state/broker");
    snprintf(cfg->clients_ep, sizeof cfg->clients_ep, "tcp://127.0.0.1:5555");
    snprintf(cfg->workers_ep, sizeof cfg->workers_ep, "tcp://127.0.0.1:5556");
    snprintf(cfg->events_ep, sizeof cfg->events_ep, "tcp://127.0.0.1:5557");
    snprintf(cfg->blobs_ep, sizeof cfg->blobs_ep, "tcp://127.0.0.1:*");
    cfg->max_image = 64ULL << 30;
    cfg->max_tenant_image = 256ULL << 30;
    cfg->blob_gc_grace = 3600;
    cfg->blob_reserve = 1024ULL << 20;
    snprintf(cfg->admin_tenant, sizeof cfg->admin_tenant, "admin");
    snprintf(cfg->default_engine, sizeof cfg->default_engine, "process");
    cfg->heartbeat_ms = 1000;
    cfg->liveness = 5;
    cfg->min_stop_interval = 20;
    cfg->worker_timeout_ms = 60000;
    cfg->request_ttl = 24 * 3600;
    cfg->lease_grace = 300;
    cfg->reap_per_tick = 50;
    cfg->cpu_ratio = 1.0;
    cfg->mem_ratio = 1.0;
    cfg->disk_ratio = 1.0;
    cfg->audit_days = 90;
    cfg->rate = 200;
    cfg->rate_burst = 2000;
    cfg->ha.election_ms = 1000;
    cfg->ha.heartbeat_ms = 100;
    cfg->ha.snapshot_threshold = 1024;
    cfg->ha.snapshot_trailing = 256;
}


/* ---- clients: 7/MDP ---- */

static void s_client_error(broker_t *self, zmsg_t *envelope, const char *service, int status,
                           const char *message)
{
    reply_send(self, envelope, service, NULL, NULL, status, message, NULL, false);
}

/* An error before the request is handled, echoing its request id when the
 * body decodes and carries a valid one, so clients can match the reply. */
static void s_client_error_body(broker_t *self, zmsg_t *envelope, const char *service,
                                zframe_t *body, int status, const char *message)
{
    Ttfleet__Request *req =
        body && zframe_size(body) <= TT_MAX_BODY
            ? ttfleet__request__unpack(NULL, zframe_size(body), zframe_data(body))
            : NULL;
    const char *rid = req && tt_request_id_valid(req->request_id) ? req->request_id : NULL;
    reply_send(self, envelope, service, NULL, rid, status, message, NULL, false);
    if (req)
        ttfleet__request__free_unpacked(req, NULL);
}

/* A follower serves nobody: NOT_LEADER, with the leader's clients endpoint
 * in Reply.leader and the message ("" and "no leader" while none is known),
 * echoing the request id so the client matches it and retries the same id
 * at the leader. */
static void s_not_leader(broker_t *self, zmsg_t *envelope, const char *service, zframe_t *body)
{
    ha_member_t lm;
    const ha_member_t *m =
        self->ha_leader && cluster_member_find(self, self->ha_leader, &lm) ? &lm : NULL;
    char msg[640];
    if (m)
        snprintf(msg, sizeof msg, "not the leader: broker %u leads the cluster, at %s", m->id,
                 m->clients);
    else
        snprintf(msg, sizeof msg,
                 "no leader: this broker (member %u of %d) is not the leader and knows of "
                 "none (no majority reachable, or an election is running); nothing can be "
                 "changed until one is elected: retry",
                 self->cfg.ha.id, self->cfg.ha.n_members);
    Ttfleet__Request *req =
        body && zframe_size(body) <= TT_MAX_BODY
            ? ttfleet__request__unpack(NULL, zframe_size(body), zframe_data(body))
            : NULL;
    Ttfleet__Reply r = TTFLEET__REPLY__INIT;
    r.request_id = req && tt_request_id_valid(req->request_id) ? req->request_id : "";
    r.status = TTFLEET__STATUS__NOT_LEADER;
    r.message = msg;
    r.leader = m ? (char *)m->clients : "";
    size_t n = ttfleet__reply__get_packed_size(&r);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf) {
        ttfleet__reply__pack(&r, buf);
        outq_client(self, envelope, service, buf, n, false);
        free(buf);
    }
    if (req)
        ttfleet__request__free_unpacked(req, NULL);
}

void broker_handle_client(broker_t *self, zmsg_t **msg_p)
{
    batch_client_t *bc = NULL;
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    /* envelope: routing frames up to the empty delimiter */
    zmsg_t *envelope = zmsg_new();
    zframe_t *f;
    int env_frames = 0;
    bool delim = false;
    while ((f = zmsg_pop(msg))) {
        if (zframe_size(f) == 0) {
            zframe_destroy(&f);
            delim = true;
            break;
        }
        zmsg_append(envelope, &f);
        if (++env_frames > 4)
            break;
    }
    if (!delim || env_frames == 0) {
        if (self->cfg.verbose)
            zsys_warning("client message without an envelope; dropped");
        goto out;
    }
    size_t rest = zmsg_size(msg);
    zframe_t *proto = zmsg_first(msg);
    zframe_t *service_f = zmsg_next(msg);
    zframe_t *body = zmsg_next(msg);
    if (!proto || !zframe_streq(proto, TT_MDP_CLIENT)) {
        if (self->cfg.verbose)
            zsys_warning("client message without the MDPC01 header; dropped");
        goto out;
    }
    char service[33] = "";
    if (service_f && zframe_size(service_f) < sizeof service)
        memcpy(service, zframe_data(service_f), zframe_size(service_f));
    /* remember the client in case the batch fails */
    bc = calloc(1, sizeof *bc);
    if (bc) {
        bc->envelope = zmsg_dup(envelope);
        snprintf(bc->service, sizeof bc->service, "%s", *service ? service : "?");
        zlistx_add_end(self->batch_clients, bc);
    }
    self->cur_answered = false;
    if (!service_f || zframe_size(service_f) == 0 || zframe_size(service_f) >= sizeof service) {
        s_client_error(self, envelope, "?", TTFLEET__STATUS__BAD_REQUEST,
                       "missing or too long service name");
        goto out;
    }
    if (rest + (size_t)env_frames + 1 > TT_MAX_FRAMES || rest != 3) {
        s_client_error_body(self, envelope, service, rest == 3 ? body : NULL,
                            TTFLEET__STATUS__BAD_REQUEST,
                            "a request is exactly [empty][MDPC01][service][body]");
        goto out;
    }
    if (strcmp(service, TT_SERVICE_MMI) == 0) {
        char name[64] = "";
        if (zframe_size(body) < sizeof name)
            memcpy(name, zframe_data(body), zframe_size(body));
        const char *code = strcmp(name, TT_SERVICE_ENV) == 0 ||
                                   strcmp(name, TT_SERVICE_ADMIN) == 0 ||
                                   strcmp(name, TT_SERVICE_MMI) == 0
                               ? "200"
                               : "404";
        outq_client(self, envelope, service, code, strlen(code), false);
        goto out;
    }
    if (strncmp(service, "mmi.", 4) == 0) {
        outq_client(self, envelope, service, "501", 3, false);
        goto out;
    }
    if (strcmp(service, TT_SERVICE_ENV) != 0 && strcmp(service, TT_SERVICE_ADMIN) != 0) {
        char m[96];
        snprintf(m, sizeof m, "unknown service '%s': use tt.env, tt.admin or mmi.service",
                 service);
        s_client_error_body(self, envelope, service, body, TTFLEET__STATUS__UNKNOWN_SERVICE, m);
        goto out;
    }
    if (self->ha && !self->ha_serving) {
        /* every member answers cluster_status (its own view); the rest
         * goes to the leader */
        Ttfleet__Request *creq =
            zframe_size(body) <= TT_MAX_BODY
                ? ttfleet__request__unpack(NULL, zframe_size(body), zframe_data(body))
                : NULL;
        if (creq && creq->op_case == TTFLEET__REQUEST__OP_CLUSTER_STATUS &&
            tt_request_id_valid(creq->request_id))
            stats_cluster_reply(self, envelope, service, creq->request_id);
        else
            s_not_leader(self, envelope, service, body);
        if (creq)
            ttfleet__request__free_unpacked(creq, NULL);
        goto out;
    }
    if (zframe_size(body) > TT_MAX_BODY) {
        s_client_error(self, envelope, service, TTFLEET__STATUS__TOO_LARGE,
                       "request body over 256 KiB (TT_MAX_BODY)");
        goto out;
    }
    /* who is asking: from the CURVE key when CURVE is on, else from the body */
    char auth_tenant[TT_MAX_NAME + 1] = "";
    bool admin = false, gateway = false;
    if (self->curve) {
        /* the ZAP user id is the key; its binding is looked up now, so a
         * key removed since the handshake is refused at once (keys.c) */
        const key_rec_t *key = keys_find(self, zframe_meta(body, "User-Id"));
        if (!key) {
            s_client_error_body(self, envelope, service, body,
                                TTFLEET__STATUS__UNAUTHENTICATED,
                                "this connection's key is not bound to a tenant (an admin "
                                "removed it, or never added it: ttctl key add)");
            goto out;
        }
        snprintf(auth_tenant, sizeof auth_tenant, "%s", key->tenant);
        admin = strcmp(key->role, "admin") == 0;
        gateway = strcmp(key->role, "gateway") == 0;
    }
    /* the key itself, for the audit (auth.c puts it in the ZAP metadata) */
    const char *xkey = self->curve ? zframe_meta(body, "X-Key") : NULL;
    snprintf(self->cur_key, sizeof self->cur_key, "%s", xkey && strlen(xkey) == 40 ? xkey : "");
    Ttfleet__Request *req =
        ttfleet__request__unpack(NULL, zframe_size(body), zframe_data(body));
    if (!req) {
        s_client_error(self, envelope, service, TTFLEET__STATUS__BAD_REQUEST,
                       "body is not a valid ttfleet.Request protobuf");
        goto out;
    }
    /* the body's tenant is ignored under CURVE; swap in the key's tenant
     * for the request's life and put the original back before freeing */
    char *body_tenant = req->tenant;
    if (gateway) {
        /* a gateway key acts on behalf of the tenant the request names
         * (docs/GATEWAY.md), with the admin role only when it asks; only
         * gateway keys may do this: for others the body is ignored */
        if (!tt_name_valid(body_tenant)) {
            reply_send(self, envelope, service, NULL,
                       tt_request_id_valid(req->request_id) ? req->request_id : NULL,
                       TTFLEET__STATUS__BAD_REQUEST,
                       "a gateway key must name the acting tenant in Request.tenant", NULL,
                       false);
            ttfleet__request__free_unpacked(req, NULL);
            goto out;
        }
        admin = req->on_behalf_admin;
    } else if (self->curve)
        req->tenant = auth_tenant;
    else
        admin = req->tenant && strcmp(req->tenant, self->cfg.admin_tenant) == 0;
    char err[256];
    /* exec / copy strings reach a guest: a NUL the decoder cut off must
     * not shorten a path or an argument unseen (ttguest.h) */
    bool guest_op = req->op_case == TTFLEET__REQUEST__OP_ENV_EXEC ||
                    req->op_case == TTFLEET__REQUEST__OP_ENV_COPY;
    if (tt_request_validate(req, err, sizeof err) ||
        (guest_op && tt_guest_raw_check(zframe_data(body), zframe_size(body),
                                        TTFLEET__REQUEST__OP_ENV_EXEC,
                                        TTFLEET__REQUEST__OP_ENV_COPY, err, sizeof err))) {
        reply_send(self, envelope, service, NULL,
                  tt_request_id_valid(req->request_id) ? req->request_id : NULL,
                  TTFLEET__STATUS__BAD_REQUEST, err, NULL, false);
    } else {
        stats_request_begin(self, req);
        dispatch_request(self, envelope, service, req, admin);
        stats_request_end(self, req);
    }
    req->tenant = body_tenant;
    ttfleet__request__free_unpacked(req, NULL);
out:
    if (bc && self->cur_answered)
        bc->answered = true;
    self->cur_answered = false;
    zmsg_destroy(&envelope);
    zmsg_destroy(&msg);
}

/* ---- life cycle ---- */

static void s_host_free(void **item)
{
    host_t *h = *item;
    if (!h)
        return;
    for (int i = 0; i < h->n_engines; i++)
        free(h->engines[i]);
    for (int i = 0; i < h->n_images; i++)
        free(h->images[i]);
    zhashx_destroy(&h->image_digests);
    free(h->tmpl);
    zframe_destroy(&h->routing);
    free(h);
    *item = NULL;
}

/* Forget the model. Clients waiting on an op get no answer here: their
 * request row has no reply yet, so the reload (or the next start) records
 * the one outcome, "interrupted", and their retry gets exactly that. An
 * answer now would be a second, different outcome for the same id. */
static void s_model_clear(broker_t *self)
{
    op_t *op;
    while ((op = zlistx_first(self->all_ops)))
        op_free(self, &op);
    zlistx_t *envs = zhashx_values(self->envs);
    for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs))
        model_env_free(self, &e);
    zlistx_destroy(&envs);
    zhashx_purge(self->hosts);
    sched_invalidate(self);
    zhashx_purge(self->routes);
    zhashx_purge(self->ops);
    zhashx_purge(self->requests);
    zhashx_purge(self->vm_index);
    if (self->freeing)
        zhashx_purge(self->freeing);
    stats_forget_pending(self);
    memset(self->mac_used, 0, (1u << 24) / 8);
}

/* After a load: finish what a crash interrupted. Envs caught mid-create are
 * rolled back (their VMs become unknown to us, so each host's READY
 * destroys them; a delete needs nothing: its rows go in the batch that
 * answers it); requests without a reply get one that says the attempt was
 * interrupted. */
static void s_recover(broker_t *self)
{
    zlistx_t *envs = zhashx_values(self->envs);
    for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs))
        if (e->target == TARGET_CREATING) {
            zsys_info("env %s/%s was %s when the broker stopped: removing it", e->tenant, e->name,
                      model_target_name(e->target));
            persist_env_delete(self, e);
            model_env_free(self, &e);
        }
    zlistx_destroy(&envs);
    zhashx_t *queued = admission_queued_requests(self);
    zlistx_t *keys = zhashx_keys(self->requests);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        request_rec_t *rec = zhashx_lookup(self->requests, k);
        if (rec->done || (queued && zhashx_lookup(queued, k)))
            continue; /* a queued create is still in progress, not interrupted */
        const char *sep = strchr(k, '\x1f');
        if (!sep)
            continue;
        char tenant[TT_MAX_NAME + 1];
        snprintf(tenant, sizeof tenant, "%.*s", (int)(sep - k), k);
        reply_send(self, NULL, NULL, tenant, sep + 1, TTFLEET__STATUS__INTERNAL,
                  "interrupted by a broker restart: a create was rolled back; other changes "
                  "may be partly applied, see env show",
                  NULL, true);
    }
    zlistx_destroy(&keys);
    zhashx_destroy(&queued);
    /* every host is down until it says READY again */
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
        h->state = HOST_DOWN;
}

/* evstream's identity of a CURVE subscriber: its key's binding (keys.c),
 * looked up at SUBSCRIBE like a request's. */
static int s_event_identify(void *arg, const char *user_id, char *tenant, bool *admin)
{
    const key_rec_t *k = keys_find((broker_t *)arg, user_id);
    if (!k)
        return -1;
    snprintf(tenant, TT_MAX_NAME + 1, "%s", k->tenant);
    *admin = strcmp(k->role, "admin") == 0;
    return 0;
}

/* The admission modules' memory follows broker.db too. */
static int s_admission_load(broker_t *self, char *err, size_t errlen)
{
    if (admq_load(self->admq, err, errlen))
        return -1;
    return quotas_load(self->quotas, err, errlen);
}

static int s_reload(broker_t *self)
{
    s_model_clear(self);
    self->failed = false;
    self->dirty = false;
    char err[256], kerr[256];
    if (s_admission_load(self, err, sizeof err)) {
        zsys_error("reload: %s", err);
        return -1;
    }
    if (persist_load(self) || keys_load(self, kerr, sizeof kerr))
        return -1;
    s_recover(self);
    if (self->dirty && (store_commit(self->store) || self->failed))
        return -1;
    if (self->dirty)
        self->commit_seq++;
    self->dirty = false;
    return 0;
}

static int s_mkdirs(const char *path)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0700) && errno != EEXIST)
                return -1;
            *p = '/';
        }
    if (mkdir(buf, 0700) && errno != EEXIST)
        return -1;
    return 0;
}

/* True for endpoints that only this machine can reach. */
static bool s_local_endpoint(const char *ep)
{
    if (strncmp(ep, "ipc://", 6) == 0 || strncmp(ep, "inproc://", 9) == 0)
        return true;
    return strncmp(ep, "tcp://127.", 10) == 0 || strncmp(ep, "tcp://localhost:", 16) == 0 ||
           strncmp(ep, "tcp://[::1]:", 12) == 0;
}

/* CURVE on the three sockets, or the loopback-only rule without it. */
static int s_security(broker_t *self, const broker_config_t *cfg, char *err, size_t errlen)
{
    if (!cfg->curve_secret[0]) {
        const char *eps[] = {cfg->clients_ep, cfg->workers_ep, cfg->events_ep,
                             cfg->events_private_ep};
        for (int i = 0; i < 4; i++)
            if (eps[i][0] && !s_local_endpoint(eps[i])) {
                if (!cfg->insecure) {
                    snprintf(err, errlen,
                             "endpoint %s is not loopback and CURVE is off: give --curve-secret "
                             "(see docs/SECURITY.md) or --insecure",
                             eps[i]);
                    return -1;
                }
                zsys_warning("INSECURE: %s accepts anyone who can reach it, and tenants are "
                             "taken on trust",
                             eps[i]);
            }
        return 0;
    }
    if (!cfg->worker_keys[0]) {
        snprintf(err, errlen, "--curve-secret needs --worker-keys DIR");
        return -1;
    }
    zcert_t *cert = zcert_load(cfg->curve_secret);
    if (!cert) {
        snprintf(err, errlen, "cannot load the broker certificate %s (and %s_secret)",
                 cfg->curve_secret, cfg->curve_secret);
        return -1;
    }
    static const uint8_t zero[32];
    if (memcmp(zcert_secret_key(cert), zero, 32) == 0) {
        snprintf(err, errlen, "%s has no secret key: give the broker's own secret cert",
                 cfg->curve_secret);
        zcert_destroy(&cert);
        return -1;
    }
    self->auth = zactor_new(auth_actor, &self->cfg);
    if (!self->auth) {
        zcert_destroy(&cert);
        snprintf(err, errlen, "cannot start the ZAP handler");
        return -1;
    }
    keys_auth_sync(self); /* before any socket is bound */
    /* the PUB cannot know who subscribed: under CURVE it takes admin keys
     * only (ZAP domain "events"); tenants use the private stream */
    zsock_t *socks[4] = {self->clients, self->workers, self->events, self->events_private};
    const char *domains[4] = {"clients", "workers", "events", "clients"};
    for (int i = 0; i < 4; i++) {
        if (!socks[i])
            continue;
        zcert_apply(cert, socks[i]);
        zsock_set_curve_server(socks[i], 1);
        zsock_set_zap_domain(socks[i], domains[i]);
    }
    snprintf(self->public_key, sizeof self->public_key, "%s", zcert_public_txt(cert));
    zcert_destroy(&cert);
    self->curve = true;
    return 0;
}

broker_t *broker_new(const broker_config_t *cfg, char *err, size_t errlen)
{
    broker_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    self->hosts = zhashx_new();
    zhashx_set_destructor(self->hosts, s_host_free);
    self->envs = zhashx_new();
    self->routes = zhashx_new();
    self->ops = zhashx_new();
    self->requests = zhashx_new();
    self->vm_index = zhashx_new();
    self->outq = zlistx_new();
    self->all_ops = zlistx_new();
    self->batch_clients = zlistx_new();
    zlistx_set_destructor(self->batch_clients, s_batch_client_free);
    self->batch_no = 1;
    self->stats = stats_new();
    self->mac_used = calloc(1, (1u << 24) / 8);
    self->mac_cursor = (uint32_t)(tt_now() & 0xffff) + 1;
    self->started_at = tt_now();
    self->started_ms = tt_mono_ms();
    if (!self->mac_used || !self->stats) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    if (s_mkdirs(cfg->state_dir)) {
        snprintf(err, errlen, "cannot create state dir %s: %s", cfg->state_dir, strerror(errno));
        goto fail;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/broker.db", cfg->state_dir);
    if (cfg->ha.id) {
        /* with Raft, the log and its snapshots are the truth: broker.db is
         * rebuilt from them (ha.h), never trusted from an earlier run */
        const char *sfx[3] = {"", "-wal", "-shm"};
        for (int i = 0; i < 3; i++) {
            char f[620];
            snprintf(f, sizeof f, "%s%s", path, sfx[i]);
            if (unlink(f) && errno != ENOENT) {
                snprintf(err, errlen, "cannot remove %s to rebuild it from the Raft log: %s", f,
                         strerror(errno));
                goto fail;
            }
        }
    }
    self->store = store_open(path, broker_migrations, broker_migrations_n, err,
                             errlen);
    if (!self->store)
        goto fail;
    const double ratios[3] = {cfg->cpu_ratio, cfg->mem_ratio, cfg->disk_ratio};
    if (store_meta_ratios(self->store, ratios)) {
        snprintf(err, errlen, "cannot write %s: %s", path, store_errmsg(self->store));
        goto fail;
    }
    self->admq = admq_new(self->store, NULL);
    self->requeue = admission_requeue;
    self->quotas = quotas_new(self->store);
    if (!self->admq || !self->quotas || s_admission_load(self, err, errlen))
        goto fail;
    /* a Raft member loads the model when it becomes the leader */
    if (!cfg->ha.id && persist_load(self)) {
        snprintf(err, errlen, "cannot load %s: %s", path, store_errmsg(self->store));
        goto fail;
    }
    if (!cfg->ha.id && keys_load(self, err, errlen))
        goto fail;
    if (!cfg->ha.id)
        s_recover(self);
    if (store_commit(self->store) || self->failed) {
        snprintf(err, errlen, "cannot write %s: %s", path, store_errmsg(self->store));
        goto fail;
    }
    self->dirty = false;
    outq_drop(self); /* nothing to send at start */

    self->clients = zsock_new(ZMQ_ROUTER);
    self->workers = zsock_new(ZMQ_ROUTER);
    self->events = zsock_new(ZMQ_PUB);
    if (cfg->events_private_ep[0])
        self->events_private = zsock_new_router(NULL);
    if (!self->clients || !self->workers || !self->events ||
        (cfg->events_private_ep[0] && !self->events_private)) {
        snprintf(err, errlen, "cannot create sockets");
        goto fail;
    }
    if (s_security(self, cfg, err, errlen))
        goto fail;
    zsock_set_sndhwm(self->clients, 100000);
    zsock_set_rcvhwm(self->clients, 100000);
    zsock_set_sndhwm(self->workers, 100000);
    zsock_set_rcvhwm(self->workers, 100000);
    /* above the app's limit on purpose: a body between the two is read and
     * answered TOO_LARGE (libzmq would drop it and the peer unheard) */
    zsock_set_maxmsgsize(self->clients, TT_MAX_SOCKET_BODY);
    zsock_set_maxmsgsize(self->workers, TT_MAX_WORKER_BODY + 4096);
    zsock_set_linger(self->clients, 0);
    zsock_set_linger(self->workers, 0);
    zsock_set_linger(self->events, 0);
    if (zsock_bind(self->clients, "%s", cfg->clients_ep) < 0) {
        snprintf(err, errlen, "cannot bind clients endpoint %s: %s", cfg->clients_ep,
                 zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zsock_bind(self->workers, "%s", cfg->workers_ep) < 0) {
        snprintf(err, errlen, "cannot bind workers endpoint %s: %s", cfg->workers_ep,
                 zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (zsock_bind(self->events, "%s", cfg->events_ep) < 0) {
        snprintf(err, errlen, "cannot bind events endpoint %s: %s", cfg->events_ep,
                 zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (image_ops_start(self, err, errlen))
        goto fail;
    if (self->events_private) {
        /* tenant-private events (evstream.h): the stream sets its options
         * before the bind; CURVE as on the clients endpoint */
        evstream_config_t ecfg;
        evstream_config_defaults(&ecfg);
        ecfg.curve = self->curve;
        ecfg.identify = s_event_identify;
        ecfg.identify_arg = self;
        snprintf(ecfg.admin_tenant, sizeof ecfg.admin_tenant, "%s", cfg->admin_tenant);
        self->evs = evstream_new(self->events_private, &ecfg);
        zsock_set_linger(self->events_private, 0);
        if (!self->evs || zsock_bind(self->events_private, "%s", cfg->events_private_ep) < 0) {
            snprintf(err, errlen, "cannot bind private events endpoint %s: %s",
                     cfg->events_private_ep, zmq_strerror(zmq_errno()));
            goto fail;
        }
    }
    if (cfg->ha.id && !(self->ha = ha_new(&cfg->ha, path, err, errlen)))
        goto fail;
    return self;
fail:
    broker_destroy(&self);
    return NULL;
}

void broker_destroy(broker_t **self_p)
{
    broker_t *self = *self_p;
    if (!self)
        return;
    if (self->store && self->all_ops)
        s_model_clear(self);
    outq_drop_sealed(self); /* broker_run waited for what it could */
    if (self->outq) {
        if (self->clients)
            outq_flush(self);
        else
            outq_drop(self);
    }
    cluster_ops_drop(self);
    ha_destroy(&self->ha);
    zsock_destroy(&self->clients);
    zsock_destroy(&self->workers);
    zsock_destroy(&self->events);
    image_ops_stop(self);
    blobgc_destroy(self);
    evstream_destroy(&self->evs);
    zsock_destroy(&self->events_private);
    admq_destroy(&self->admq);
    quotas_destroy(&self->quotas);
    zactor_destroy(&self->auth);
    zhashx_destroy(&self->worker_keys);
    keys_destroy(self);
    zhashx_destroy(&self->hosts);
    zhashx_destroy(&self->offers);
    zhashx_destroy(&self->envs);
    zhashx_destroy(&self->routes);
    zhashx_destroy(&self->ops);
    zhashx_destroy(&self->requests);
    zhashx_destroy(&self->guest_xfers);
    zhashx_destroy(&self->freeing);
    zhashx_destroy(&self->vm_index);
    rate_destroy(self);
    zlistx_destroy(&self->outq);
    zlistx_destroy(&self->all_ops);
    zlistx_destroy(&self->batch_clients);
    if (self->store)
        store_rollback(self->store);
    store_destroy(&self->store);
    stats_destroy(&self->stats);
    free(self->mac_used);
    free(self);
    *self_p = NULL;
}

/* A batch could not commit: roll it back, reload the model from the file
 * and answer each client of the batch with INTERNAL on the service it
 * called (tt.env or tt.admin), except those that already hold a durable
 * answer: a retry answered from a record of an earlier, committed batch
 * keeps that answer, since its change did happen. */
static void s_fail_batch(broker_t *self)
{
    store_rollback(self->store);
    zsys_error("commit failed: %s; reloading state from disk", store_errmsg(self->store));
    outq_keep_durable(self);
    for (batch_client_t *bc = zlistx_first(self->batch_clients); bc;
         bc = zlistx_next(self->batch_clients))
        if (!bc->answered)
            s_client_error(self, bc->envelope, bc->service, TTFLEET__STATUS__INTERNAL,
                           "the broker could not persist the change (disk full or I/O error); "
                           "nothing was changed");
    zlistx_t *keep = outq_detach_all(self);
    if (s_reload(self))
        zsys_error("reload failed: the broker keeps running on what it could load");
    outq_drop(self); /* commands from the reload are re-sent at READY */
    outq_attach(self, &keep);
}

void broker_handle_worker(broker_t *self, zmsg_t **msg_p)
{
    workers_handle(self, *msg_p);
    zmsg_destroy(msg_p);
    /* capacity a worker confirmed free goes to the queue at once */
    if (self->admit_wanted)
        admission_run(self, tt_now());
}

bool broker_end_batch(broker_t *self)
{
    bool committed = false;
    int64_t t0 = zclock_usecs();
    bool ship = self->ha && self->ha_serving && (self->dirty || self->failed);
    if (ship)
        ha_hold(self->ha); /* no snapshot between this COMMIT and its entry */
    if (self->dirty || self->failed) {
        tt_crash_point("broker.before_commit");
        if (self->failed || store_commit(self->store))
            s_fail_batch(self);
        else {
            self->commit_seq++;
            committed = true;
            if (!self->pipelined) {
                /* inline: durable before the caller flushes */
                if (store_sync(self->store)) {
                    zsys_error("broker.db: %s", store_errmsg(self->store));
                    s_fail_batch(self);
                    committed = false;
                } else {
                    stats_commit(self, zclock_usecs() - t0);
                    tt_crash_point("broker.after_commit");
                }
            }
        }
        self->dirty = false;
        self->failed = false;
    }
    /* what the batch (or the reload after a failed one) committed becomes
     * its Raft entry; its output waits for it in s_release */
    if (ship && ha_ship(self->ha, self->commit_seq))
        self->ha_broken = true;
    zlistx_purge(self->batch_clients);
    self->batch_no++;
    if (self->pipelined && (committed || zlistx_size(self->outq) > 0)) {
        outq_seal(self, self->commit_seq, committed, t0);
        /* also after a failed batch: its reload may have committed */
        store_syncer_request(self->store, self->commit_seq);
    }
    return committed;
}

/* Send every sealed batch whose commit is durable, oldest first. -1 when
 * the syncer failed: the caller stops. */
static int s_release(broker_t *self)
{
    uint64_t durable = 0;
    if (store_syncer_poll(self->store, &durable)) {
        zsys_error("broker.db: %s: stopping; a restart recovers what is on disk, and "
                   "clients' retries meet the records that survived",
                   store_errmsg(self->store));
        outq_drop_sealed(self);
        return -1;
    }
    if (self->ha) {
        /* durable here and applied by a majority */
        uint64_t bound = ha_bound(self->ha, self->commit_seq);
        if (bound < durable)
            durable = bound;
    }
    bool committed;
    int64_t t0;
    while (outq_unseal(self, durable, &committed, &t0)) {
        if (committed) {
            stats_commit(self, zclock_usecs() - t0);
            tt_crash_point("broker.after_commit");
        }
        bool had_output = zlistx_size(self->outq) > 0;
        outq_flush(self);
        if (had_output && committed)
            tt_crash_point("broker.after_send");
    }
    return 0;
}

static void s_timers(broker_t *self)
{
    int64_t now_ms = tt_mono_ms();
    if (now_ms >= self->next_beat_ms) {
        workers_tick(self, now_ms);
        op_tick(self, now_ms);
        self->next_beat_ms = now_ms + (self->cfg.heartbeat_ms < 250 ? self->cfg.heartbeat_ms : 250);
    }
    blobgc_tick(self, now_ms);
    if (now_ms >= self->next_reap_ms) {
        reaper_run(self, tt_now());
        self->next_reap_ms = now_ms + 1000;
    }
    if (now_ms >= self->next_prune_ms) {
        int64_t cutoff = tt_now() - self->cfg.request_ttl;
        zlistx_t *keys = zhashx_keys(self->requests);
        for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
            request_rec_t *rec = zhashx_lookup(self->requests, k);
            if (rec->done && rec->created_at < cutoff)
                zhashx_delete(self->requests, k);
        }
        zlistx_destroy(&keys);
        persist_requests_prune(self, cutoff);
        persist_events_prune(self, tt_now() - BROKER_EVLOG_AGE);
        self->next_prune_ms = now_ms + 60000;
    }
}

/* The pipeline needs the WAL synced behind the loop; without it (a store
 * that cannot defer), each batch syncs inline as in the unit tests. */
static void s_pipeline_start(broker_t *self)
{
    char err[256] = "";
    if (store_defer_sync(self->store) == 0 &&
        store_syncer_start(self->store, err, sizeof err) == 0) {
        self->pipelined = true;
        return;
    }
    zsys_warning("commit pipeline off (%s): each batch waits for its own fsync",
                 *err ? err : store_errmsg(self->store));
}

/* PUB cannot drop one subscriber, so after a key removal every events
 * connection is dropped: unbinding ends the connections accepted on the
 * endpoint. Subscribers reconnect and subscribe again on their own, each
 * through a new CURVE handshake, which the removed key fails. Binding the
 * port again is retried on the next iterations (the old listener closes in
 * the background); events in that gap are lost, as events to a slow
 * subscriber always may be. */
static void s_events_rebind(broker_t *self)
{
    if (zsock_bind(self->events, "%s", self->events_bound) >= 0) {
        self->events_down = false;
        zsys_info("events: %s bound again", self->events_bound);
    }
}

static void s_events_cut(broker_t *self)
{
    self->events_cut = false;
    if (!self->events || self->events_down)
        return;
    char *ep = zsock_last_endpoint(self->events);
    if (!ep)
        return;
    snprintf(self->events_bound, sizeof self->events_bound, "%s", ep);
    zstr_free(&ep);
    if (zsock_unbind(self->events, "%s", self->events_bound) != 0) {
        zsys_warning("events: cannot unbind %s: %s", self->events_bound,
                     zmq_strerror(zmq_errno()));
        return;
    }
    zsys_info("events: a key was removed; every subscriber of %s is dropped and reconnects",
              self->events_bound);
    self->events_down = true;
    s_events_rebind(self);
}

/* A key removal asked to drop every events subscriber (s_events_cut), or
 * the events endpoint is waiting to be bound again. */
static void s_events_check(broker_t *self)
{
    if (self->events_cut)
        s_events_cut(self);
    else if (self->events_down)
        s_events_rebind(self);
}

/* What the ZAP handler says: the worker keys there are now. */
static void s_on_auth(broker_t *self)
{
    zmsg_t *msg = zmsg_recv_nowait(self->auth);
    if (!msg)
        return;
    char *cmd = zmsg_popstr(msg);
    zframe_t *keys = zmsg_first(msg);
    if (cmd && strcmp(cmd, "WORKER-KEYS") == 0 && keys)
        workers_keys_update(self, zframe_data(keys), zframe_size(keys));
    zstr_free(&cmd);
    zmsg_destroy(&msg);
}

/* A follower takes no worker: DISCONNECT, so the worker tries its next
 * broker endpoint (ttworker --broker EP1,EP2,...). */
static void s_ha_refuse_worker(broker_t *self, zmsg_t *msg)
{
    zframe_t *routing = zmsg_first(msg);
    if (!routing)
        return;
    ha_member_t lm;
    const ha_member_t *m =
        self->ha_leader && cluster_member_find(self, self->ha_leader, &lm) ? &lm : NULL;
    if (self->cfg.verbose)
        zsys_info("ha: a worker is refused: not the leader (the leader's workers endpoint: %s)",
                  m ? m->workers : "none elected");
    outq_worker_raw(self, routing, TT_W_DISCONNECT);
}

/* What the Raft thread said. -1: stop the broker. */
static int s_ha_events(broker_t *self)
{
    ha_event_t ev;
    while (ha_next(self->ha, &ev)) {
        switch (ev.kind) {
        case HA_EV_APPLIED: /* s_release reads ha_bound */
            break;
        case HA_EV_LEADER: {
            /* every earlier entry is applied: load the model as a restart
             * does (leases that ran out while no leader existed get the
             * restart grace), record what the reload repairs, serve */
            self->ha_term = ev.term;
            self->ha_leader = self->cfg.ha.id;
            self->started_at = tt_now();
            self->started_ms = tt_mono_ms();
            if (ha_session_start(self->ha, store_db(self->store))) {
                zsys_error("ha: cannot record changes on broker.db (session extension)");
                return -1;
            }
            ha_hold(self->ha);
            int rc = s_reload(self);
            if (ha_ship(self->ha, self->commit_seq) || rc) {
                zsys_error("ha: cannot load the model from broker.db as the new leader");
                return -1;
            }
            self->ha_serving = true;
            zsys_info("ha: member %u is the leader in term %llu: model loaded (%zu envs, %zu "
                      "hosts), serving",
                      self->cfg.ha.id, (unsigned long long)ev.term, zhashx_size(self->envs),
                      zhashx_size(self->hosts));
            break;
        }
        case HA_EV_MEMBER:
            if (self->ha_serving)
                cluster_ops_done(self, &ev);
            break;
        case HA_EV_FOLLOWER:
            self->ha_leader = ev.leader_id;
            cluster_ops_drop(self);
            if (self->ha_serving) {
                /* nothing of ours is in flight (else HA_EV_FATAL): the file
                 * holds what the cluster applied; the new leader serves */
                self->ha_serving = false;
                ha_session_stop(self->ha);
                s_model_clear(self);
                zsys_warning("ha: member %u is no longer the leader (term %llu); leader now: "
                             "%u (0 = none)",
                             self->cfg.ha.id, (unsigned long long)ev.term, ev.leader_id);
            } else
                zsys_info("ha: the leader is member %u (0 = none) in term %llu", ev.leader_id,
                          (unsigned long long)ev.term);
            break;
        case HA_EV_FATAL:
            zsys_error("ha: %s", ev.msg);
            return -1;
        }
    }
    return 0;
}

int broker_run(broker_t *self)
{
    s_pipeline_start(self);
    int rc = 0;
    if (self->ha && !self->pipelined) {
        zsys_error("ha: Raft needs the commit pipeline (replies wait for their entry), and it "
                   "did not start: stopping");
        return -1;
    }
    /* workers, clients, the syncer's fd (pipelined), the blob server's
     * pipe, the private events socket, the ZAP handler's pipe, the Raft
     * thread's pipe: at most seven */
    zmq_pollitem_t items[7] = {
        {zsock_resolve(self->workers), 0, ZMQ_POLLIN, 0},
        {zsock_resolve(self->clients), 0, ZMQ_POLLIN, 0},
        {NULL, store_syncer_fd(self->store), ZMQ_POLLIN, 0},
        {NULL, 0, ZMQ_POLLIN, 0},
        {NULL, 0, ZMQ_POLLIN, 0},
        {NULL, 0, ZMQ_POLLIN, 0},
        {NULL, 0, ZMQ_POLLIN, 0},
    };
    int n_items = self->pipelined ? 3 : 2;
    if (self->auth) {
        items[n_items].socket = zsock_resolve(self->auth);
        items[n_items].fd = 0;
        items[n_items].events = ZMQ_POLLIN;
        n_items++;
    }
    if (image_ops_sock(self)) { /* the blob server's pipe (image_ops.c) */
        items[n_items].socket = zsock_resolve(image_ops_sock(self));
        items[n_items].fd = 0;
        items[n_items].events = ZMQ_POLLIN;
        n_items++;
    }
    if (self->events_private) {
        /* the private events socket wakes the loop too (read below) */
        items[n_items].socket = zsock_resolve(self->events_private);
        items[n_items].fd = 0;
        items[n_items].events = ZMQ_POLLIN;
        n_items++;
    }
    if (self->ha) {
        items[n_items].socket = NULL;
        items[n_items].fd = ha_fd(self->ha);
        items[n_items].events = ZMQ_POLLIN;
        n_items++;
    }
    while (!zsys_interrupted) {
        int64_t now = tt_mono_ms();
        int64_t wait = self->next_beat_ms - now;
        if (self->ha && !self->ha_serving)
            wait = 250; /* a follower runs no timers (next_beat_ms stays behind): it
                           waits for its sockets and the Raft thread's pipe */
        if (wait < 0)
            wait = 0;
        if (wait > 250)
            wait = 250;
        if (zmq_poll(items, n_items, (long)wait) < 0) {
            if (zmq_errno() == EINTR)
                continue;
            break;
        }
        if (self->ha && (s_ha_events(self) || self->ha_broken)) {
            rc = -1;
            break;
        }
        if (self->pipelined && s_release(self)) {
            rc = -1;
            break;
        }
        /* drain both sockets, alternating, up to BATCH messages */
        int got = 0;
        bool more = true;
        while (more && got < BATCH) {
            more = false;
            zsock_t *socks[2] = {self->workers, self->clients};
            for (int s = 0; s < 2; s++) {
                if (!(zsock_events(socks[s]) & ZMQ_POLLIN))
                    continue;
                zmsg_t *msg = zmsg_recv_nowait(socks[s]);
                if (!msg)
                    continue;
                more = true;
                got++;
                if (socks[s] == self->clients)
                    broker_handle_client(self, &msg);
                else if (self->ha && !self->ha_serving)
                    s_ha_refuse_worker(self, msg);
                else
                    broker_handle_worker(self, &msg);
                zmsg_destroy(&msg);
            }
        }
        /* private event subscribers: bounded, nothing here changes state */
        for (int i = 0; self->evs && i < BATCH; i++) {
            if (!(zsock_events(self->events_private) & ZMQ_POLLIN))
                break;
            zmsg_t *emsg = zmsg_recv_nowait(self->events_private);
            if (!emsg)
                break;
            evstream_handle(self->evs, &emsg, tt_mono_ms());
            zmsg_destroy(&emsg);
        }
        if (self->evs)
            evstream_tick(self->evs, tt_mono_ms());
        if (got)
            stats_batch(self, got);
        while (image_ops_sock(self) && (zsock_events(image_ops_sock(self)) & ZMQ_POLLIN))
            image_ops_on_blob(self);
        while (self->auth && (zsock_events(self->auth) & ZMQ_POLLIN))
            s_on_auth(self);
        if (!self->ha || self->ha_serving)
            s_timers(self); /* a follower reaps nothing and watches no worker */
        bool committed = broker_end_batch(self);
        if (self->pipelined) {
            if (s_release(self)) {
                rc = -1;
                break;
            }
            s_events_check(self);
            continue;
        }
        bool had_output = zlistx_size(self->outq) > 0;
        outq_flush(self);
        s_events_check(self);
        /* only after a batch that changed something: heartbeats and reads
         * are not worth a crash scenario */
        if (had_output && committed)
            tt_crash_point("broker.after_send");
    }
    if (self->pipelined) {
        /* what committed may still leave once it is durable */
        if (rc == 0 && store_syncer_wait(self->store, self->commit_seq, 5000) == 0)
            s_release(self);
        store_syncer_stop(self->store);
        self->pipelined = false;
    }
    return rc;
}
