/*
 * evstream: subscribers by routing id, their filters, and non-blocking
 * sends. See evstream.h for the protocol and the security argument.
 */
#include "evstream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ttproto.h"

typedef struct {
    zframe_t *routing;
    char tenant[TT_MAX_NAME + 1];
    bool admin;
    char env[TT_MAX_NAME + 1];
    int n_topics;
    char *topics[EVSTREAM_MAX_TOPICS];
    int64_t last_seen_ms, last_sent_ms;
    uint64_t dropped;
} sub_t;

typedef struct {
    char tenant[TT_MAX_NAME + 1];
    char env[TT_MAX_NAME + 1];
    char topic[TT_MAX_NAME + 1];
    uint8_t *body;
    size_t len;
} pending_t;

struct evstream_t {
    zsock_t *router;
    evstream_config_t cfg;
    zhashx_t *subs;    /* routing id hex -> sub_t* (owned) */
    zlistx_t *pending; /* pending_t* (owned) */
    evstream_stats_t stats;
};

void evstream_config_defaults(evstream_config_t *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->admin_tenant, sizeof cfg->admin_tenant, "admin");
    cfg->max_subscribers = 1024;
    cfg->queue_max = 1000;
    cfg->heartbeat_ms = 1000;
    cfg->expiry_ms = 10000;
    cfg->pending_max = 10000;
}

static void s_sub_free(void **item)
{
    sub_t *s = *item;
    if (!s)
        return;
    zframe_destroy(&s->routing);
    for (int i = 0; i < s->n_topics; i++)
        free(s->topics[i]);
    free(s);
    *item = NULL;
}

static void s_pending_free(void **item)
{
    pending_t *p = *item;
    if (!p)
        return;
    free(p->body);
    free(p);
    *item = NULL;
}

evstream_t *evstream_new(zsock_t *router, const evstream_config_t *cfg)
{
    evstream_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->router = router;
    if (cfg)
        self->cfg = *cfg;
    else
        evstream_config_defaults(&self->cfg);
    self->subs = zhashx_new();
    self->pending = zlistx_new();
    if (!self->subs || !self->pending) {
        evstream_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->subs, s_sub_free);
    zlistx_set_destructor(self->pending, s_pending_free);
    zsock_set_router_mandatory(router, 1);
    zsock_set_sndhwm(router, self->cfg.queue_max);
    zsock_set_sndtimeo(router, 0);
    return self;
}

void evstream_destroy(evstream_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    evstream_t *self = *self_p;
    zhashx_destroy(&self->subs);
    zlistx_destroy(&self->pending);
    free(self);
    *self_p = NULL;
}

/* Send frames to one subscriber without blocking. 0 sent, 1 dropped (its
 * queue is full), -1 gone. */
static int s_send(evstream_t *self, sub_t *sub, const void *const *parts, const size_t *lens, int n)
{
    void *h = zsock_resolve(self->router);
    if (zmq_send(h, zframe_data(sub->routing), zframe_size(sub->routing),
                 ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
        return errno == EAGAIN ? 1 : -1;
    for (int i = 0; i < n; i++)
        if (zmq_send(h, parts[i], lens[i], (i + 1 < n ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0)
            return -1; /* cannot happen once the first frame went: atomic */
    return 0;
}

static int s_send_ctl(evstream_t *self, sub_t *sub, uint8_t cmd, const uint8_t *body, size_t len,
                      int64_t now_ms)
{
    const void *parts[3] = {TT_EVENTS_PROTO, &cmd, body};
    size_t lens[3] = {strlen(TT_EVENTS_PROTO), 1, len};
    int rc = s_send(self, sub, parts, lens, body ? 3 : 2);
    if (rc == 0)
        sub->last_sent_ms = now_ms;
    return rc;
}

/* Answer a SUBSCRIBE (also to a refused one, via a temporary sub_t). */
static void s_subscribed(evstream_t *self, sub_t *sub, int status, const char *message,
                         int64_t now_ms)
{
    Ttfleet__EventSubscribed r = TTFLEET__EVENT_SUBSCRIBED__INIT;
    r.tenant = sub->tenant;
    r.admin = sub->admin;
    r.heartbeat_ms = (uint32_t)self->cfg.heartbeat_ms;
    r.expiry_ms = (uint32_t)self->cfg.expiry_ms;
    r.status = status;
    r.message = (char *)message;
    uint8_t buf[1024];
    size_t len = ttfleet__event_subscribed__get_packed_size(&r);
    if (len > sizeof buf)
        return;
    ttfleet__event_subscribed__pack(&r, buf);
    s_send_ctl(self, sub, TT_E_SUBSCRIBED, buf, len, now_ms);
}

/* The caller's identity: under CURVE the binding of the ZAP user id (the
 * client's public key), from cfg.identify. */
static int s_identity(evstream_t *self, zframe_t *frame, const Ttfleet__EventSubscribe *req,
                      char *tenant, bool *admin, char *err, size_t errlen)
{
    if (self->cfg.curve) {
        const char *user = zframe_meta(frame, "User-Id");
        if (!user || !self->cfg.identify ||
            self->cfg.identify(self->cfg.identify_arg, user, tenant, admin) != 0 ||
            !tt_name_valid(tenant)) {
            snprintf(err, errlen, "no client identity on this connection (key not bound)");
            return -1;
        }
        return 0;
    }
    if (!req || !tt_name_valid(req->tenant)) {
        snprintf(err, errlen, "SUBSCRIBE needs a valid tenant when CURVE is off");
        return -1;
    }
    snprintf(tenant, TT_MAX_NAME + 1, "%s", req->tenant);
    *admin = strcmp(req->tenant, self->cfg.admin_tenant) == 0;
    return 0;
}

static int s_subscribe(evstream_t *self, zframe_t *routing, const char *key, zframe_t *body,
                       int64_t now_ms)
{
    sub_t tmp = {.routing = routing};
    char err[256];
    int status = TTFLEET__STATUS__BAD_REQUEST;
    Ttfleet__EventSubscribe *req = NULL;
    if (zframe_size(body) > 64 * 1024) {
        snprintf(err, sizeof err, "SUBSCRIBE body too large");
        goto refuse;
    }
    req = ttfleet__event_subscribe__unpack(NULL, zframe_size(body), zframe_data(body));
    if (!req) {
        snprintf(err, sizeof err, "undecodable EventSubscribe");
        goto refuse;
    }
    if (req->n_topics > EVSTREAM_MAX_TOPICS) {
        snprintf(err, sizeof err, "at most %d topic prefixes", EVSTREAM_MAX_TOPICS);
        goto refuse;
    }
    for (size_t i = 0; i < req->n_topics; i++)
        if (strlen(req->topics[i]) > TT_MAX_NAME) {
            snprintf(err, sizeof err, "topic prefix over %d characters", TT_MAX_NAME);
            goto refuse;
        }
    if (req->env && *req->env && !tt_name_valid(req->env)) {
        snprintf(err, sizeof err, "invalid env name");
        goto refuse;
    }
    char tenant[TT_MAX_NAME + 1];
    bool admin = false;
    if (s_identity(self, body, req, tenant, &admin, err, sizeof err)) {
        status = TTFLEET__STATUS__FORBIDDEN;
        goto refuse;
    }
    sub_t *sub = zhashx_lookup(self->subs, key);
    if (!sub) {
        if ((int)zhashx_size(self->subs) >= self->cfg.max_subscribers) {
            status = TTFLEET__STATUS__UNAVAILABLE;
            snprintf(err, sizeof err, "too many event subscribers (%d)", self->cfg.max_subscribers);
            goto refuse;
        }
        sub = calloc(1, sizeof *sub);
        if (!sub) {
            status = TTFLEET__STATUS__INTERNAL;
            snprintf(err, sizeof err, "out of memory");
            goto refuse;
        }
        sub->routing = zframe_dup(routing);
        zhashx_insert(self->subs, key, sub);
    } else {
        for (int i = 0; i < sub->n_topics; i++)
            free(sub->topics[i]);
        sub->n_topics = 0;
    }
    snprintf(sub->tenant, sizeof sub->tenant, "%s", tenant);
    sub->admin = admin;
    snprintf(sub->env, sizeof sub->env, "%s", req->env ? req->env : "");
    for (size_t i = 0; i < req->n_topics; i++)
        if ((sub->topics[sub->n_topics] = strdup(req->topics[i])))
            sub->n_topics++;
    sub->last_seen_ms = now_ms;
    ttfleet__event_subscribe__free_unpacked(req, NULL);
    s_subscribed(self, sub, TTFLEET__STATUS__OK, "", now_ms);
    return 0;
refuse:
    if (req)
        ttfleet__event_subscribe__free_unpacked(req, NULL);
    s_subscribed(self, &tmp, status, err, now_ms);
    return -1;
}

int evstream_handle(evstream_t *self, zmsg_t **msg_p, int64_t now_ms)
{
    zmsg_t *msg = *msg_p;
    *msg_p = NULL;
    int rc = -1;
    if (!msg)
        return -1;
    size_t n = zmsg_size(msg);
    zframe_t *routing = zmsg_first(msg);
    zframe_t *proto = zmsg_next(msg);
    zframe_t *cmd = zmsg_next(msg);
    if (n < 3 || n > 4 || !routing || zframe_size(routing) == 0 || zframe_size(routing) > 255 ||
        !zframe_streq(proto, TT_EVENTS_PROTO) || zframe_size(cmd) != 1)
        goto done;
    char *key = zframe_strhex(routing);
    if (!key)
        goto done;
    uint8_t c = zframe_data(cmd)[0];
    sub_t *sub = zhashx_lookup(self->subs, key);
    if (c == TT_E_SUBSCRIBE && n == 4) {
        rc = s_subscribe(self, routing, key, zmsg_next(msg), now_ms);
    } else if (c == TT_E_HEARTBEAT && n == 3) {
        if (sub) {
            /* under CURVE a connection keeps its key: the routing id cannot
             * move to another tenant without a new SUBSCRIBE */
            sub->last_seen_ms = now_ms;
            rc = 0;
        }
    } else if (c == TT_E_UNSUBSCRIBE && n == 3) {
        if (sub)
            zhashx_delete(self->subs, key);
        rc = 0;
    }
    free(key);
done:
    zmsg_destroy(&msg);
    return rc;
}

void evstream_publish(evstream_t *self, const char *tenant, const char *env, const char *topic,
                      const uint8_t *event, size_t len)
{
    if ((int)zlistx_size(self->pending) >= self->cfg.pending_max || !topic ||
        strlen(topic) > TT_MAX_NAME) {
        self->stats.pending_dropped++;
        return;
    }
    pending_t *p = calloc(1, sizeof *p);
    if (!p || !(p->body = malloc(len ? len : 1))) {
        free(p);
        self->stats.pending_dropped++;
        return;
    }
    snprintf(p->tenant, sizeof p->tenant, "%s", tenant ? tenant : "");
    snprintf(p->env, sizeof p->env, "%s", env ? env : "");
    snprintf(p->topic, sizeof p->topic, "%s", topic);
    if (len)
        memcpy(p->body, event, len);
    p->len = len;
    zlistx_add_end(self->pending, p);
}

static bool s_matches(const sub_t *sub, const pending_t *p)
{
    if (!sub->admin && (!p->tenant[0] || strcmp(sub->tenant, p->tenant) != 0))
        return false;
    if (sub->env[0] && strcmp(sub->env, p->env) != 0)
        return false;
    if (sub->n_topics == 0)
        return true;
    for (int i = 0; i < sub->n_topics; i++)
        if (strncmp(p->topic, sub->topics[i], strlen(sub->topics[i])) == 0)
            return true;
    return false;
}

void evstream_flush(evstream_t *self, int64_t now_ms)
{
    zlistx_t *gone = NULL;
    pending_t *p;
    while ((p = zlistx_detach(self->pending, NULL))) {
        uint8_t c = TT_E_EVENT;
        const void *parts[4] = {TT_EVENTS_PROTO, &c, p->topic, p->body};
        size_t lens[4] = {strlen(TT_EVENTS_PROTO), 1, strlen(p->topic), p->len};
        for (sub_t *sub = zhashx_first(self->subs); sub; sub = zhashx_next(self->subs)) {
            if (!s_matches(sub, p))
                continue;
            int rc = s_send(self, sub, parts, lens, 4);
            if (rc == 0) {
                sub->last_sent_ms = now_ms;
                self->stats.sent++;
            } else if (rc == 1) {
                sub->dropped++;
                self->stats.dropped++;
            } else {
                if (!gone && (gone = zlistx_new())) {
                    zlistx_set_duplicator(gone, (czmq_duplicator *)strdup);
                    zlistx_set_destructor(gone, (czmq_destructor *)zstr_free);
                }
                if (gone)
                    zlistx_add_end(gone, (void *)zhashx_cursor(self->subs));
            }
        }
        if (gone) {
            /* delete after the walk: the hash cursor must stay valid */
            for (const char *k = zlistx_first(gone); k; k = zlistx_next(gone))
                zhashx_delete(self->subs, k);
            zlistx_destroy(&gone);
        }
        s_pending_free((void **)&p);
    }
}

void evstream_discard(evstream_t *self)
{
    zlistx_purge(self->pending);
}

void evstream_tick(evstream_t *self, int64_t now_ms)
{
    zlistx_t *gone = zlistx_new();
    if (!gone)
        return;
    zlistx_set_duplicator(gone, (czmq_duplicator *)strdup);
    zlistx_set_destructor(gone, (czmq_destructor *)zstr_free);
    for (sub_t *sub = zhashx_first(self->subs); sub; sub = zhashx_next(self->subs)) {
        const char *key = zhashx_cursor(self->subs);
        if (now_ms - sub->last_seen_ms > self->cfg.expiry_ms) {
            zlistx_add_end(gone, (void *)key);
            continue;
        }
        if (now_ms - sub->last_sent_ms >= self->cfg.heartbeat_ms &&
            s_send_ctl(self, sub, TT_E_HEARTBEAT, NULL, 0, now_ms) < 0)
            zlistx_add_end(gone, (void *)key);
    }
    for (const char *k = zlistx_first(gone); k; k = zlistx_next(gone))
        zhashx_delete(self->subs, k);
    zlistx_destroy(&gone);
}

void evstream_stats(evstream_t *self, evstream_stats_t *out)
{
    *out = self->stats;
    out->subscribers = (int)zhashx_size(self->subs);
}
