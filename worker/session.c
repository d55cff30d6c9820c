/*
 * session: DEALER connection with heartbeats. See session.h.
 */
#include "session.h"

#include "ttproto.h"
#include "wire.h"

struct session_t {
    char *endpoint; /* the broker endpoints, comma-separated */
    char *current;  /* the one connected now (inside endpoint) */
    size_t next;    /* offset in endpoint of the one the next connect takes */
    zsock_t *sock;
    int heartbeat_ms;
    int liveness;
    int64_t last_recv; /* monotonic ms */
    int64_t last_send;
    zcert_t *cert;       /* CURVE: our certificate, NULL for plain TCP */
    char server_key[41]; /* CURVE: the broker's public key */
};

void session_set_curve(session_t *self, zcert_t **own_p, const char *server_key)
{
    zcert_destroy(&self->cert);
    self->cert = *own_p;
    *own_p = NULL;
    snprintf(self->server_key, sizeof self->server_key, "%s", server_key);
}

session_t *session_new(const char *endpoint, int heartbeat_ms, int liveness)
{
    session_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->endpoint = strdup(endpoint);
    if (!self->endpoint) {
        free(self);
        return NULL;
    }
    self->heartbeat_ms = heartbeat_ms;
    self->liveness = liveness;
    return self;
}

void session_destroy(session_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    session_t *self = *self_p;
    zsock_destroy(&self->sock);
    zcert_destroy(&self->cert);
    free(self->endpoint);
    free(self->current);
    free(self);
    *self_p = NULL;
}

/* The endpoint list in turn, starting over after the last: a broker that
 * is down or a follower of a Raft cluster (which says DISCONNECT) is left
 * for the next one. One endpoint: always that one. */
static const char *s_next_endpoint(session_t *self)
{
    free(self->current);
    const char *start = self->endpoint + self->next;
    const char *comma = strchr(start, ',');
    size_t len = comma ? (size_t)(comma - start) : strlen(start);
    self->current = strndup(start, len);
    self->next = comma ? (size_t)(comma + 1 - self->endpoint) : 0;
    return self->current;
}

int session_connect(session_t *self)
{
    zsock_destroy(&self->sock);
    const char *ep = s_next_endpoint(self);
    if (!ep)
        return -1;
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->sock)
        return -1;
    /* Drop what is queued when the socket goes: after a reconnect the
     * worker says READY again and the broker re-sends what it wants. A
     * little linger lets the DISCONNECT at shutdown leave. */
    zsock_set_linger(self->sock, 500);
    zsock_set_sndtimeo(self->sock, 0);
    zsock_set_rcvtimeo(self->sock, 0);
    zsock_set_maxmsgsize(self->sock, (int64_t)TT_MAX_WORKER_BODY + 4096);
    if (self->cert) {
        zcert_apply(self->cert, self->sock);
        zsock_set_curve_serverkey(self->sock, self->server_key);
    }
    if (zsock_connect(self->sock, "%s", ep)) {
        zsys_error("connect %s failed: %s", ep, zmq_strerror(zmq_errno()));
        zsock_destroy(&self->sock);
        return -1;
    }
    int64_t now = zclock_mono();
    self->last_recv = now;
    self->last_send = now;
    return 0;
}

zsock_t *session_sock(session_t *self)
{
    return self->sock;
}

int session_send(session_t *self, int cmd, zframe_t **body_p)
{
    zmsg_t *msg = wire_msg(cmd, body_p);
    if (!msg || !self->sock) {
        zmsg_destroy(&msg);
        return -1;
    }
    if (zmsg_send(&msg, self->sock)) {
        zsys_warning("send of command 0x%02x dropped: %s", cmd, zmq_strerror(zmq_errno()));
        zmsg_destroy(&msg);
        return -1;
    }
    self->last_send = zclock_mono();
    return 0;
}

int session_recv(session_t *self, int *cmd, zmsg_t **msg_p)
{
    if (!self->sock)
        return 0;
    zmsg_t *msg = zmsg_recv(self->sock);
    if (!msg)
        return 0;
    /* Any traffic proves the broker is there, even a bad frame. */
    self->last_recv = zclock_mono();
    zframe_t *body;
    char err[160];
    if (wire_parse(msg, cmd, &body, err, sizeof err)) {
        zsys_warning("dropped a message from the broker: %s", err);
        zmsg_destroy(&msg);
        return -1;
    }
    *msg_p = msg;
    return 1;
}

bool session_expired(session_t *self, int64_t now_ms)
{
    return now_ms - self->last_recv > (int64_t)self->heartbeat_ms * self->liveness;
}

void session_heartbeat(session_t *self, int64_t now_ms)
{
    if (now_ms - self->last_send >= self->heartbeat_ms)
        session_send(self, TT_W_HEARTBEAT, NULL);
}

int64_t session_next_ms(session_t *self, int64_t now_ms)
{
    int64_t left = self->last_send + self->heartbeat_ms - now_ms;
    return left > 0 ? left : 0;
}
