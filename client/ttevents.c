/*
 * ttevents: the client side of the private event stream (TTE01).
 *
 * One DEALER socket on the events endpoint. The subscription is state the
 * broker keeps in memory only, so the client owns its liveness: it sends a
 * HEARTBEAT every heartbeat_ms the broker announced, and when nothing (not
 * even a broker heartbeat) arrived for expiry_ms it assumes the broker
 * restarted or forgot it, replaces its socket and subscribes again with the
 * same filter. Events lost in such a gap are lost: a client that must not
 * miss a state change (ttctl --wait) polls env show as well.
 */
#include <czmq.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ttclient.h"
#include "ttproto.h"

#define TTEVENTS_MAX_TOPICS 16

struct _ttevents_t {
    ttclient_t *client; /* for CURVE keys only (not owned) */
    char *endpoint;
    char tenant[TT_MAX_NAME + 1];
    zsock_t *sock;
    /* the filter, kept for re-subscribing */
    char *topics[TTEVENTS_MAX_TOPICS];
    size_t n_topics;
    char env[TT_MAX_NAME + 1];
    /* what the broker said */
    char granted[TT_MAX_NAME + 1];
    bool admin;
    int heartbeat_ms, expiry_ms;
    int64_t last_recv_ms, last_sent_ms;
    char error[256];
};

static void s_error(ttevents_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->error, sizeof self->error, fmt, ap);
    va_end(ap);
}

ttevents_t *ttevents_new(ttclient_t *client, const char *endpoint, const char *tenant)
{
    if (!endpoint || !*endpoint || (tenant && *tenant && !tt_name_valid(tenant)))
        return NULL;
    ttevents_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->client = client;
    self->endpoint = strdup(endpoint);
    snprintf(self->tenant, sizeof self->tenant, "%s", tenant ? tenant : "");
    self->heartbeat_ms = 1000;
    self->expiry_ms = 10000;
    if (!self->endpoint) {
        free(self);
        return NULL;
    }
    return self;
}

void ttevents_destroy(ttevents_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ttevents_t *self = *self_p;
    if (self->sock) {
        zstr_sendx(self->sock, TT_EVENTS_PROTO, "\x05", NULL);
        zsock_destroy(&self->sock);
    }
    for (size_t i = 0; i < self->n_topics; i++)
        free(self->topics[i]);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

const char *ttevents_error(ttevents_t *self)
{
    return self->error;
}

const char *ttevents_tenant(ttevents_t *self, bool *admin)
{
    if (admin)
        *admin = self->admin;
    return self->granted;
}

static int s_connect(ttevents_t *self)
{
    zsock_destroy(&self->sock);
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->sock) {
        s_error(self, "cannot create a socket");
        return -1;
    }
    zsock_set_linger(self->sock, 0);
    if (self->client)
        ttclient_curve_apply(self->client, self->sock);
    if (zsock_connect(self->sock, "%s", self->endpoint) != 0) {
        s_error(self, "cannot connect to '%s'", self->endpoint);
        zsock_destroy(&self->sock);
        return -1;
    }
    return 0;
}

static int s_send_subscribe(ttevents_t *self)
{
    Ttfleet__EventSubscribe sub = TTFLEET__EVENT_SUBSCRIBE__INIT;
    sub.topics = self->topics;
    sub.n_topics = self->n_topics;
    sub.env = self->env;
    sub.tenant = self->tenant;
    size_t len = ttfleet__event_subscribe__get_packed_size(&sub);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    ttfleet__event_subscribe__pack(&sub, buf);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, TT_EVENTS_PROTO);
    uint8_t c = TT_E_SUBSCRIBE;
    zmsg_addmem(m, &c, 1);
    zmsg_addmem(m, buf, len);
    free(buf);
    int rc = zmsg_send(&m, self->sock);
    self->last_sent_ms = zclock_mono();
    return rc;
}

/* Wait for one message up to deadline; NULL on timeout. */
static zmsg_t *s_recv(ttevents_t *self, int64_t deadline)
{
    zpoller_t *p = zpoller_new(self->sock, NULL);
    if (!p)
        return NULL;
    int64_t wait = deadline - zclock_mono();
    void *r = zpoller_wait(p, (int)(wait > 0 ? wait : 0));
    zpoller_destroy(&p);
    return r ? zmsg_recv(self->sock) : NULL;
}

/* 0: a message of ours; cmd and (for EVENT/SUBSCRIBED) body set. */
static int s_parse(zmsg_t *m, uint8_t *cmd, zframe_t **body)
{
    size_t n = zmsg_size(m);
    zframe_t *proto = zmsg_first(m);
    zframe_t *c = zmsg_next(m);
    if (n < 2 || n > 4 || !zframe_streq(proto, TT_EVENTS_PROTO) || zframe_size(c) != 1)
        return -1;
    *cmd = zframe_data(c)[0];
    *body = NULL;
    if (*cmd == TT_E_SUBSCRIBED && n == 3)
        *body = zmsg_next(m);
    else if (*cmd == TT_E_EVENT && n == 4) {
        zmsg_next(m); /* topic: the Event repeats it as kind */
        *body = zmsg_next(m);
    } else if (!(*cmd == TT_E_HEARTBEAT && n == 2))
        return -1;
    return 0;
}

static int s_subscribed(ttevents_t *self, zframe_t *body)
{
    Ttfleet__EventSubscribed *r =
        ttfleet__event_subscribed__unpack(NULL, zframe_size(body), zframe_data(body));
    if (!r) {
        s_error(self, "undecodable SUBSCRIBED from the broker");
        return -1;
    }
    int rc = 0;
    if (r->status != TTFLEET__STATUS__OK) {
        s_error(self, "%s: %s", tt_status_name(r->status), r->message);
        rc = -1;
    } else {
        snprintf(self->granted, sizeof self->granted, "%s", r->tenant);
        self->admin = r->admin;
        if (r->heartbeat_ms >= 100 && r->heartbeat_ms <= 60000)
            self->heartbeat_ms = (int)r->heartbeat_ms;
        if (r->expiry_ms >= 1000 && r->expiry_ms <= 600000)
            self->expiry_ms = (int)r->expiry_ms;
    }
    ttfleet__event_subscribed__free_unpacked(r, NULL);
    return rc;
}

int ttevents_subscribe(ttevents_t *self, const char *const *topics, size_t n_topics,
                       const char *env, int timeout_ms)
{
    self->error[0] = 0;
    if (n_topics > TTEVENTS_MAX_TOPICS) {
        s_error(self, "at most %d topic prefixes", TTEVENTS_MAX_TOPICS);
        return -1;
    }
    if (env && *env && !tt_name_valid(env)) {
        s_error(self, "invalid env name '%.80s'", env);
        return -1;
    }
    for (size_t i = 0; i < self->n_topics; i++)
        free(self->topics[i]);
    self->n_topics = 0;
    for (size_t i = 0; i < n_topics; i++) {
        if (strlen(topics[i]) > TT_MAX_NAME) {
            s_error(self, "topic prefix over %d characters", TT_MAX_NAME);
            return -1;
        }
        if ((self->topics[self->n_topics] = strdup(topics[i])))
            self->n_topics++;
    }
    snprintf(self->env, sizeof self->env, "%s", env ? env : "");
    if (s_connect(self) || s_send_subscribe(self))
        return -1;
    int64_t deadline = zclock_mono() + (timeout_ms > 0 ? timeout_ms : 1);
    while (1) {
        zmsg_t *m = s_recv(self, deadline);
        if (!m) {
            s_error(self, "no answer to SUBSCRIBE from %s within %d ms", self->endpoint,
                    timeout_ms);
            return -1;
        }
        uint8_t cmd;
        zframe_t *body;
        int rc = 1;
        if (s_parse(m, &cmd, &body) == 0 && cmd == TT_E_SUBSCRIBED && body)
            rc = s_subscribed(self, body);
        zmsg_destroy(&m);
        if (rc <= 0) {
            self->last_recv_ms = zclock_mono();
            return rc;
        }
    }
}

Ttfleet__Event *ttevents_recv(ttevents_t *self, int timeout_ms)
{
    self->error[0] = 0;
    if (!self->sock) {
        s_error(self, "not subscribed");
        return NULL;
    }
    int64_t deadline = zclock_mono() + (timeout_ms > 0 ? timeout_ms : 0);
    while (1) {
        int64_t now = zclock_mono();
        if (now - self->last_sent_ms >= self->heartbeat_ms) {
            zstr_sendx(self->sock, TT_EVENTS_PROTO, "\x04", NULL);
            self->last_sent_ms = now;
        }
        if (now - self->last_recv_ms > self->expiry_ms) {
            /* the broker fell silent: a new socket and the same filter */
            if (s_connect(self) || s_send_subscribe(self))
                return NULL;
            self->last_recv_ms = now;
        }
        int64_t until = now + self->heartbeat_ms;
        if (until > deadline)
            until = deadline;
        zmsg_t *m = s_recv(self, until);
        if (!m) {
            if (zclock_mono() >= deadline)
                return NULL;
            continue;
        }
        self->last_recv_ms = zclock_mono();
        uint8_t cmd;
        zframe_t *body;
        Ttfleet__Event *ev = NULL;
        if (s_parse(m, &cmd, &body) == 0) {
            if (cmd == TT_E_EVENT && body && zframe_size(body) <= TT_MAX_BODY)
                ev = ttfleet__event__unpack(NULL, zframe_size(body), zframe_data(body));
            else if (cmd == TT_E_SUBSCRIBED && body)
                s_subscribed(self, body); /* the answer to a re-subscribe */
        }
        zmsg_destroy(&m);
        if (ev)
            return ev;
    }
}
