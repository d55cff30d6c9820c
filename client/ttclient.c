/*
 * ttclient: the 7/MDP client side of ttfleet. See ttclient.h.
 *
 * The shape follows the Majordomo "reliable client": one DEALER socket, one
 * request in flight, a deadline per attempt. When an attempt times out the
 * socket is thrown away with linger 0 and a new one connects, because a
 * reply that arrives late on the old socket would otherwise be read as the
 * answer to whatever is asked next. The request keeps its id across
 * attempts; the broker answers a repeated id with the stored outcome of the
 * first attempt (or IN_PROGRESS while it still runs), so retries are safe
 * for every operation, create included. Replies are still matched by
 * request id, which catches the one case socket replacement cannot: a
 * duplicate reply to an earlier resend on the same socket. The exception is
 * an error reply without any request id, which the broker sends when it
 * could not decode the request: it can only be the answer to ours.
 *
 * Everything that comes back is checked before it is believed: frame count,
 * the empty delimiter, the MDPC01 header, the service name, the body size and
 * that the body decodes. A frame that fails is dropped and remembered for the
 * error message; it does not end the wait, since it may be noise.
 */
#include "ttclient.h"
#include "ttframe.h"

#include <czmq.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "ttguest.h"
#include "ttops.h"
#include "ttproto.h"

#include <openssl/evp.h>

/* Pause before asking again about a request the broker says still runs. */
#define TTCLIENT_MAX_BROKERS 7
/* Pause before the next broker when one says NOT_LEADER and names none. */
#define TTCLIENT_NO_LEADER_PAUSE 250
#define TTCLIENT_IN_PROGRESS_PAUSE 200

struct _ttclient_t {
    char *endpoint;                  /* as given: one endpoint or a comma-separated list */
    char *eps[TTCLIENT_MAX_BROKERS]; /* the list's members (a broker cluster) */
    int n_eps;
    int cur; /* the member asked now */
    char *tenant;
    int timeout;   /* ms per attempt */
    int retries;   /* attempts in all */
    zsock_t *sock; /* NULL until the first call, and after a timeout */
    zpoller_t *poller;
    zcert_t *cert;        /* CURVE: our certificate, NULL for plain TCP */
    char cert_path[4096]; /* its file, for image pushes (the blob server's CURVE) */
    char server_key[41];  /* CURVE: the broker's public key (Z85) */
    char request_id[TT_MAX_REQUEST_ID + 1];
    char dropped[160]; /* why the last dropped reply was dropped */
    char error[512];
    int connect_timeout; /* ms to wait for the first connection; 0: no check */
    bool connected_once; /* a connection to the endpoint was made once */
};

/* What waiting for one reply can end in. */
typedef enum {
    S_GOT_REPLY,
    S_IN_PROGRESS,
    S_TIMED_OUT,
    S_FAILED,
} s_wait_t;

static void s_set_error(ttclient_t *self, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void s_set_error(ttclient_t *self, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(self->error, sizeof self->error, fmt, ap);
    va_end(ap);
}

ttclient_t *ttclient_new(const char *endpoint, const char *tenant)
{
    if (!endpoint || !*endpoint)
        endpoint = TTCLIENT_DEFAULT_ENDPOINT;
    if (!tenant)
        tenant = TTCLIENT_DEFAULT_TENANT;
    if (!tt_name_valid(tenant))
        return NULL;
    ttclient_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->endpoint = strdup(endpoint);
    self->tenant = strdup(tenant);
    if (!self->endpoint || !self->tenant) {
        ttclient_destroy(&self);
        return NULL;
    }
    /* EP1,EP2,...: the members of a broker cluster; none may be empty */
    for (const char *p = endpoint;; p += strcspn(p, ",") + 1) {
        size_t n = strcspn(p, ",");
        if (n == 0 || self->n_eps == TTCLIENT_MAX_BROKERS ||
            !(self->eps[self->n_eps++] = strndup(p, n))) {
            ttclient_destroy(&self);
            return NULL;
        }
        if (!p[n])
            break;
    }
    self->timeout = TTCLIENT_DEFAULT_TIMEOUT;
    self->retries = TTCLIENT_DEFAULT_RETRIES;
    return self;
}

static void s_disconnect(ttclient_t *self)
{
    zpoller_destroy(&self->poller);
    zsock_destroy(&self->sock);
}

void ttclient_destroy(ttclient_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ttclient_t *self = *self_p;
    s_disconnect(self);
    zcert_destroy(&self->cert);
    free(self->endpoint);
    for (int i = 0; i < self->n_eps; i++)
        free(self->eps[i]);
    free(self->tenant);
    free(self);
    *self_p = NULL;
}

void ttclient_set_timeout(ttclient_t *self, int timeout_ms)
{
    self->timeout = timeout_ms > 0 ? timeout_ms : 1;
    if (self->sock)
        zsock_set_sndtimeo(self->sock, self->timeout);
}

void ttclient_set_connect_timeout(ttclient_t *self, int timeout_ms)
{
    self->connect_timeout = timeout_ms > 0 ? timeout_ms : 0;
}

void ttclient_set_retries(ttclient_t *self, int retries)
{
    self->retries = retries > 0 ? retries : 1;
}

/* Loads one certificate for ttclient_set_curve(), saying what is wrong with
 * it in self->error. zcert_load() reads PATH_secret when it exists (it holds
 * both keys), else PATH; it cannot tell a missing file from a broken one,
 * so look first. */
static zcert_t *s_load_cert(ttclient_t *self, const char *what, const char *path, bool secret)
{
    if (!path || !*path) {
        s_set_error(self, "CURVE needs %s", what);
        return NULL;
    }
    if (strlen(path) > 200) { /* zcert_load truncates longer names */
        s_set_error(self, "%s: path longer than 200 characters: %s", what, path);
        return NULL;
    }
    char secret_path[256];
    snprintf(secret_path, sizeof secret_path, "%s_secret", path);
    if (access(path, R_OK) != 0 && (!secret || access(secret_path, R_OK) != 0)) {
        s_set_error(self, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        s_set_error(self, "%s %s is not a CURVE certificate (make one with 'ttctl keygen')", what,
                    path);
        return NULL;
    }
    static const byte zero[32];
    if (secret && memcmp(zcert_secret_key(cert), zero, sizeof zero) == 0) {
        s_set_error(self, "%s %s has no secret key: %s is missing or unreadable", what, path,
                    secret_path);
        zcert_destroy(&cert);
        return NULL;
    }
    return cert;
}

int ttclient_set_curve(ttclient_t *self, const char *cert_path, const char *broker_cert_path)
{
    self->error[0] = '\0';
    if (!zsys_has_curve()) {
        s_set_error(self, "this libzmq was built without CURVE");
        return -1;
    }
    zcert_t *own = s_load_cert(self, "client certificate", cert_path, true);
    if (!own)
        return -1;
    zcert_t *broker = s_load_cert(self, "broker certificate", broker_cert_path, false);
    if (!broker) {
        zcert_destroy(&own);
        return -1;
    }
    zcert_destroy(&self->cert);
    self->cert = own;
    snprintf(self->cert_path, sizeof self->cert_path, "%s", cert_path);
    snprintf(self->server_key, sizeof self->server_key, "%s", zcert_public_txt(broker));
    zcert_destroy(&broker);
    s_disconnect(self); /* the next call connects with the keys */
    return 0;
}

void ttclient_curve_apply(ttclient_t *self, void *socket)
{
    if (!self->cert || !socket)
        return;
    zcert_apply(self->cert, socket);
    zsock_set_curve_serverkey(socket, self->server_key);
}

const char *ttclient_error(ttclient_t *self)
{
    return self->error;
}

const char *ttclient_request_id(ttclient_t *self)
{
    return self->request_id;
}

void ttclient_reply_destroy(Ttfleet__Reply **reply_p)
{
    if (!reply_p || !*reply_p)
        return;
    ttfleet__reply__free_unpacked(*reply_p, NULL);
    *reply_p = NULL;
}

/* With a connect timeout and no connection made yet, the socket is
 * watched (a libzmq socket monitor, set before the connect so no event is
 * missed) until it has connected to the endpoint, at most connect_timeout
 * ms. A refused or silent endpoint then fails at once with "no broker at
 * EP" instead of after every attempt's reply timeout; once connected, the
 * attempts and their timeouts are as usual. Returns the monitor's PAIR
 * socket, NULL when no check is made. */
static zsock_t *s_watch_connect(ttclient_t *self)
{
    if (!self->connect_timeout || self->connected_once)
        return NULL;
    char mon[64];
    snprintf(mon, sizeof mon, "inproc://ttclient-connect-%p", (void *)self);
    if (zmq_socket_monitor(zsock_resolve(self->sock), mon, ZMQ_EVENT_CONNECTED) != 0)
        return NULL; /* no monitor: no early answer, the attempts decide */
    zsock_t *pair = zsock_new(ZMQ_PAIR);
    if (!pair || zsock_connect(pair, "%s", mon) != 0) {
        zsock_destroy(&pair);
        zmq_socket_monitor(zsock_resolve(self->sock), NULL, 0);
        return NULL;
    }
    return pair;
}

static int s_wait_connected(ttclient_t *self, zsock_t **pair_p)
{
    zsock_t *pair = *pair_p;
    if (!pair)
        return 0;
    bool connected = false;
    zsock_set_rcvtimeo(pair, 50);
    int64_t deadline = tt_mono_ms() + self->connect_timeout;
    while (!connected && tt_mono_ms() < deadline) {
        zmsg_t *ev = zmsg_recv(pair);
        zframe_t *f = ev ? zmsg_first(ev) : NULL;
        if (f && zframe_size(f) >= 2) {
            uint16_t id;
            memcpy(&id, zframe_data(f), sizeof id);
            connected = id == ZMQ_EVENT_CONNECTED;
        }
        zmsg_destroy(&ev);
    }
    zmq_socket_monitor(zsock_resolve(self->sock), NULL, 0);
    zsock_destroy(pair_p);
    if (!connected) {
        s_set_error(self, "no broker at %s: nothing accepted a connection within %d ms",
                    self->endpoint, self->connect_timeout);
        return -1;
    }
    self->connected_once = true;
    return 0;
}

static int s_connect(ttclient_t *self)
{
    s_disconnect(self);
    self->sock = zsock_new(ZMQ_DEALER);
    if (!self->sock) {
        s_set_error(self, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        return -1;
    }
    zsock_set_linger(self->sock, 0);
    zsock_set_sndtimeo(self->sock, self->timeout);
    ttclient_curve_apply(self, self->sock);
    zsock_t *watch = s_watch_connect(self);
    if (zsock_connect(self->sock, "%s", self->eps[self->cur]) != 0) {
        s_set_error(self, "cannot connect to '%s': %s", self->eps[self->cur],
                    zmq_strerror(zmq_errno()));
        if (watch)
            zmq_socket_monitor(zsock_resolve(self->sock), NULL, 0);
        zsock_destroy(&watch);
        s_disconnect(self);
        return -1;
    }
    if (s_wait_connected(self, &watch) != 0) {
        s_disconnect(self);
        return -1;
    }
    self->poller = zpoller_new(self->sock, NULL);
    if (!self->poller) {
        s_set_error(self, "cannot create a poller");
        s_disconnect(self);
        return -1;
    }
    return 0;
}

static int s_send(ttclient_t *self, const char *service, const void *body, size_t size)
{
    zmsg_t *msg = ttframe_mdp_request(service, body, size);
    if (!msg || zmsg_send(&msg, self->sock) != 0) {
        zmsg_destroy(&msg);
        return -1;
    }
    return 0;
}

/* Checks the envelope of one reply and takes its body out: NULL (with the
 * reason in self->dropped) when it is not a well-formed reply for service. */
static zframe_t *s_reply_body(ttclient_t *self, zmsg_t *msg, const char *service)
{
    zframe_t *body;
    if (ttframe_mdp_reply_parse(msg, service, TT_MAX_BODY, &body, self->dropped,
                                sizeof self->dropped))
        return NULL;
    zmsg_remove(msg, body);
    return body;
}

/* Waits until deadline for a reply to the request in flight. want_id is the
 * request id to match, or NULL for an MMI request, whose body is a bare code
 * that goes to code/len. */
static s_wait_t s_wait(ttclient_t *self, const char *service, const char *want_id, int64_t deadline,
                       Ttfleet__Reply **reply_p, char *code, size_t len)
{
    for (;;) {
        int64_t remaining = deadline - tt_mono_ms();
        if (remaining <= 0)
            return S_TIMED_OUT;
        void *which = zpoller_wait(self->poller, (int)remaining);
        if (!which) {
            if (zpoller_terminated(self->poller)) {
                s_set_error(self, "interrupted while waiting for %s", self->endpoint);
                return S_FAILED;
            }
            continue;
        }
        zmsg_t *msg = zmsg_recv(self->sock);
        if (!msg) {
            s_set_error(self, "receive failed: %s", zmq_strerror(zmq_errno()));
            return S_FAILED;
        }
        zframe_t *body = s_reply_body(self, msg, service);
        zmsg_destroy(&msg);
        if (!body)
            continue;
        if (!want_id) {
            size_t n = zframe_size(body);
            if (n == 0 || n > 16) {
                snprintf(self->dropped, sizeof self->dropped, "an MMI reply of %zu bytes", n);
                zframe_destroy(&body);
                continue;
            }
            if (len) {
                size_t copy = n < len - 1 ? n : len - 1;
                memcpy(code, zframe_data(body), copy);
                code[copy] = '\0';
            }
            zframe_destroy(&body);
            return S_GOT_REPLY;
        }
        Ttfleet__Reply *reply = ttfleet__reply__unpack(NULL, zframe_size(body), zframe_data(body));
        zframe_destroy(&body);
        if (!reply) {
            snprintf(self->dropped, sizeof self->dropped, "a reply body that does not decode");
            continue;
        }
        /* An error reply without a request id answers a request the broker
         * could not read far enough to learn its id (an unknown service, a
         * broken body): with one request in flight per socket, it is ours. */
        bool anonymous_error = (!reply->request_id || !*reply->request_id) &&
                               reply->status != TTFLEET__STATUS__OK &&
                               reply->status != TTFLEET__STATUS__IN_PROGRESS;
        if (!anonymous_error && (!reply->request_id || strcmp(reply->request_id, want_id) != 0)) {
            /* A late answer to an earlier request: not ours. */
            snprintf(self->dropped, sizeof self->dropped, "a reply to request '%.64s'",
                     reply->request_id ? reply->request_id : "");
            ttfleet__reply__free_unpacked(reply, NULL);
            continue;
        }
        if (reply->status == TTFLEET__STATUS__IN_PROGRESS) {
            ttfleet__reply__free_unpacked(reply, NULL);
            return S_IN_PROGRESS;
        }
        *reply_p = reply;
        return S_GOT_REPLY;
    }
}

/* After NOT_LEADER: the leader it names when that is one of our endpoints,
 * else the next endpoint. true when there is somewhere else to ask (a
 * list, or a leader named); the socket is closed for the new connect. */
static bool s_follow_leader(ttclient_t *self, const Ttfleet__Reply *reply, bool *named)
{
    *named = false;
    if (self->n_eps < 2)
        return false;
    int to = (self->cur + 1) % self->n_eps;
    for (int i = 0; reply->leader && *reply->leader && i < self->n_eps; i++)
        if (strcmp(self->eps[i], reply->leader) == 0 && i != self->cur) {
            to = i;
            *named = true;
        }
    self->cur = to;
    s_disconnect(self);
    return true;
}

/* Sends body to service and waits for the answer, retrying as the header
 * says. With a list of brokers (a cluster), a NOT_LEADER answer sends the
 * same request, same id, to the leader it names (bounded hops, not counted
 * as attempts) or, naming none, to the next broker after a pause (counted);
 * an attempt that times out moves to the next broker too. A retry that
 * reaches the leader meets the idempotency record of the first, so it gets
 * the first answer. Returns 0 with the reply, -1 with self->error set. */
static int s_exchange(ttclient_t *self, const char *service, const void *body, size_t size,
                      const char *want_id, Ttfleet__Reply **reply_p, char *code, size_t len)
{
    self->dropped[0] = '\0';
    bool in_progress = false;
    int hops = 0;
    for (int attempt = 1; attempt <= self->retries; attempt++) {
        if (!self->sock && s_connect(self) != 0)
            return -1;
        int64_t deadline = tt_mono_ms() + self->timeout;
        bool sent = s_send(self, service, body, size) == 0;
        while (sent) {
            s_wait_t rc = s_wait(self, service, want_id, deadline, reply_p, code, len);
            bool named = false;
            bool not_leader = rc == S_GOT_REPLY && reply_p && *reply_p &&
                              (*reply_p)->status == TTFLEET__STATUS__NOT_LEADER;
            bool names = not_leader && (*reply_p)->leader && *(*reply_p)->leader;
            if (not_leader && (attempt < self->retries || (names && hops < 2 * self->n_eps)) &&
                s_follow_leader(self, *reply_p, &named)) {
                snprintf(self->dropped, sizeof self->dropped, "NOT_LEADER: %.120s",
                         (*reply_p)->message ? (*reply_p)->message : "");
                ttfleet__reply__free_unpacked(*reply_p, NULL);
                *reply_p = NULL;
                if (named && hops++ < 2 * self->n_eps)
                    attempt--; /* a redirect, not a failed attempt */
                else
                    zclock_sleep(TTCLIENT_NO_LEADER_PAUSE);
                break;
            }
            if (rc == S_GOT_REPLY)
                return 0;
            if (rc == S_FAILED)
                return -1;
            if (rc == S_TIMED_OUT)
                break;
            /* IN_PROGRESS: the broker is alive and the first attempt still
             * runs; ask again shortly on the same socket. */
            in_progress = true;
            int64_t remaining = deadline - tt_mono_ms();
            if (remaining <= 0)
                break;
            zclock_sleep((int)(remaining < TTCLIENT_IN_PROGRESS_PAUSE
                                   ? remaining
                                   : TTCLIENT_IN_PROGRESS_PAUSE));
            sent = s_send(self, service, body, size) == 0;
        }
        /* No answer on this socket: a fresh one, so nothing late on the old
         * one can be mistaken for the answer to the next attempt; with a
         * list, on the next broker. */
        if (self->sock && self->n_eps > 1)
            self->cur = (self->cur + 1) % self->n_eps;
        s_disconnect(self);
    }
    s_set_error(self, "no reply from %s after %d attempt%s of %d ms%s%s%s", self->endpoint,
                self->retries, self->retries == 1 ? "" : "s", self->timeout,
                in_progress ? " (the broker said the request was still in progress)" : "",
                self->dropped[0] ? "; dropped " : "", self->dropped);
    return -1;
}

static int s_new_request_id(ttclient_t *self)
{
    uint8_t bytes[8];
    if (getrandom(bytes, sizeof bytes, 0) != (ssize_t)sizeof bytes) {
        s_set_error(self, "cannot make a request id: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < sizeof bytes; i++)
        snprintf(self->request_id + 2 * i, 3, "%02x", bytes[i]);
    return 0;
}

int ttclient_call(ttclient_t *self, const char *service, Ttfleet__Request *req,
                  Ttfleet__Reply **reply_p)
{
    self->error[0] = '\0';
    if (!service || !*service || !req || !reply_p) {
        s_set_error(self, "ttclient_call: service, request and reply are required");
        return -1;
    }
    *reply_p = NULL;
    char *caller_id = req->request_id;
    char *caller_tenant = req->tenant;
    if (caller_id && *caller_id) {
        if (!tt_request_id_valid(caller_id)) {
            s_set_error(self, "invalid request id: 1..%d printable characters without spaces",
                        TT_MAX_REQUEST_ID);
            return -1;
        }
        snprintf(self->request_id, sizeof self->request_id, "%s", caller_id);
    } else if (s_new_request_id(self) != 0)
        return -1;
    req->request_id = self->request_id;
    if (!caller_tenant || !*caller_tenant)
        req->tenant = self->tenant;

    size_t size = ttfleet__request__get_packed_size(req);
    uint8_t *body = size <= TT_MAX_BODY ? malloc(size ? size : 1) : NULL;
    if (body)
        ttfleet__request__pack(req, body);
    req->request_id = caller_id;
    req->tenant = caller_tenant;
    if (!body) {
        if (size > TT_MAX_BODY)
            s_set_error(self, "request of %zu bytes is over the limit of %d", size, TT_MAX_BODY);
        else
            s_set_error(self, "out of memory");
        return -1;
    }
    int rc = s_exchange(self, service, body, size, self->request_id, reply_p, NULL, 0);
    free(body);
    return rc;
}

int ttclient_mmi(ttclient_t *self, const char *service, char *code, size_t len)
{
    self->error[0] = '\0';
    self->request_id[0] = '\0';
    if (!service || !code || len == 0) {
        s_set_error(self, "ttclient_mmi: service and a code buffer are required");
        return -1;
    }
    code[0] = '\0';
    return s_exchange(self, TT_SERVICE_MMI, service, strlen(service), NULL, NULL, code, len);
}

/* ---- the registry's operations ----
 *
 * ttclient_op_FIELD() for each row of schema/ops.def is generated at build
 * time (schema/opsgen.py -> ttclient_ops.c) and calls this, which finds the
 * op's Request field and service from the registry and the protocol's
 * descriptors, so a new row needs nothing here. */
int ttclient_op(ttclient_t *self, int op_case, void *msg, Ttfleet__Reply **reply_p)
{
    const tt_op_t *op = tt_op_find(op_case);
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field(&ttfleet__request__descriptor, (unsigned)op_case);
    if (!op || !f || f->type != PROTOBUF_C_TYPE_MESSAGE || !f->descriptor) {
        s_set_error(self, "ttclient_op: %d is not an operation of the registry", op_case);
        return -1;
    }
    const ProtobufCMessageDescriptor *md = f->descriptor;
    void *empty = NULL;
    if (!msg) {
        empty = calloc(1, md->sizeof_message);
        if (!empty) {
            s_set_error(self, "out of memory");
            return -1;
        }
        protobuf_c_message_init(md, empty);
        msg = empty;
    }
    /* a listing of every tenant's rows is an admin request */
    const char *service = op->service;
    const ProtobufCFieldDescriptor *all =
        protobuf_c_message_descriptor_get_field_by_name(md, "all");
    if (all && all->type == PROTOBUF_C_TYPE_BOOL && all->label != PROTOBUF_C_LABEL_REPEATED &&
        *(const protobuf_c_boolean *)((const char *)msg + all->offset))
        service = TT_SERVICE_ADMIN;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = (Ttfleet__Request__OpCase)op_case;
    *(void **)((char *)&req + f->offset) = msg;
    /* an op flagged ONCE is not idempotent (exec, copy): one attempt */
    int retries = self->retries;
    if (op->flags & TT_OPF_ONCE)
        self->retries = 1;
    int rc = ttclient_call(self, service, &req, reply_p);
    self->retries = retries;
    free(empty);
    return rc;
}

/* The convenience calls of ttclient.h: the op's message from the
 * arguments, then the generated request function. */
#define S_STR(s) ((char *)((s) ? (s) : ""))

int ttclient_env_create(ttclient_t *self, Ttfleet__EnvCreate *create, Ttfleet__Reply **reply_p)
{
    return ttclient_op_env_create(self, create, reply_p);
}

#define S_ENV_REF(verb)                                                                            \
    int ttclient_env_##verb(ttclient_t *self, const char *name, Ttfleet__Reply **reply_p)          \
    {                                                                                              \
        Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;                                              \
        ref.name = S_STR(name);                                                                    \
        return ttclient_op_env_##verb(self, &ref, reply_p);                                        \
    }
S_ENV_REF(show)
S_ENV_REF(stop)
S_ENV_REF(start)
S_ENV_REF(pause)
S_ENV_REF(resume)
S_ENV_REF(delete)

int ttclient_env_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p)
{
    Ttfleet__EnvList list = TTFLEET__ENV_LIST__INIT;
    list.all = all;
    return ttclient_op_env_list(self, &list, reply_p);
}

int ttclient_env_extend(ttclient_t *self, const char *name, uint64_t lifetime,
                        Ttfleet__Reply **reply_p)
{
    Ttfleet__EnvExtend extend = TTFLEET__ENV_EXTEND__INIT;
    extend.name = S_STR(name);
    extend.lifetime = lifetime;
    return ttclient_op_env_extend(self, &extend, reply_p);
}

int ttclient_env_update(ttclient_t *self, Ttfleet__EnvUpdate *update, Ttfleet__Reply **reply_p)
{
    return ttclient_op_env_update(self, update, reply_p);
}

int ttclient_env_rm_vm(ttclient_t *self, Ttfleet__EnvRmVm *rm, Ttfleet__Reply **reply_p)
{
    return ttclient_op_env_rm_vm(self, rm, reply_p);
}

int ttclient_env_console(ttclient_t *self, Ttfleet__EnvConsole *q, Ttfleet__Reply **reply_p)
{
    return ttclient_op_env_console(self, q, reply_p);
}

int ttclient_host_list(ttclient_t *self, Ttfleet__Reply **reply_p)
{
    return ttclient_op_host_list(self, NULL, reply_p);
}

int ttclient_host_show(ttclient_t *self, const char *id, Ttfleet__Reply **reply_p)
{
    Ttfleet__HostRef ref = TTFLEET__HOST_REF__INIT;
    ref.id = S_STR(id);
    return ttclient_op_host_show(self, &ref, reply_p);
}

int ttclient_pool_status(ttclient_t *self, Ttfleet__Reply **reply_p)
{
    return ttclient_op_pool_status(self, NULL, reply_p);
}

int ttclient_cluster_status(ttclient_t *self, Ttfleet__Reply **reply_p)
{
    return ttclient_op_cluster_status(self, NULL, reply_p);
}

int ttclient_host_drain(ttclient_t *self, const char *id, bool undo, bool evacuate,
                        Ttfleet__Reply **reply_p)
{
    Ttfleet__HostDrain drain = TTFLEET__HOST_DRAIN__INIT;
    drain.id = S_STR(id);
    drain.undo = undo;
    drain.evacuate = evacuate;
    return ttclient_op_host_drain(self, &drain, reply_p);
}

int ttclient_host_remove(ttclient_t *self, const char *id, bool force, Ttfleet__Reply **reply_p)
{
    Ttfleet__HostRemove rm = TTFLEET__HOST_REMOVE__INIT;
    rm.id = S_STR(id);
    rm.force = force;
    return ttclient_op_host_remove(self, &rm, reply_p);
}

int ttclient_quota_set(ttclient_t *self, Ttfleet__QuotaSet *set, Ttfleet__Reply **reply_p)
{
    return ttclient_op_quota_set(self, set, reply_p);
}

int ttclient_quota_show(ttclient_t *self, const char *tenant, bool all, Ttfleet__Reply **reply_p)
{
    Ttfleet__QuotaShow show = TTFLEET__QUOTA_SHOW__INIT;
    show.tenant = S_STR(tenant);
    show.all = all;
    return ttclient_op_quota_show(self, &show, reply_p);
}

int ttclient_queue_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p)
{
    Ttfleet__QueueList list = TTFLEET__QUEUE_LIST__INIT;
    list.all = all;
    return ttclient_op_queue_list(self, &list, reply_p);
}

int ttclient_audit(ttclient_t *self, Ttfleet__AuditQuery *query, Ttfleet__Reply **reply_p)
{
    return ttclient_op_audit_query(self, query, reply_p);
}

#define S_IMAGE_REF(verb)                                                                          \
    int ttclient_image_##verb(ttclient_t *self, const char *ref, Ttfleet__Reply **reply_p)         \
    {                                                                                              \
        Ttfleet__ImageRef r = TTFLEET__IMAGE_REF__INIT;                                            \
        r.ref = S_STR(ref);                                                                        \
        return ttclient_op_image_##verb(self, &r, reply_p);                                        \
    }
S_IMAGE_REF(show)
S_IMAGE_REF(rm)

int ttclient_image_list(ttclient_t *self, bool all, Ttfleet__Reply **reply_p)
{
    Ttfleet__ImageList l = TTFLEET__IMAGE_LIST__INIT;
    l.all = all;
    return ttclient_op_image_list(self, &l, reply_p);
}

int ttclient_image_pull(ttclient_t *self, Ttfleet__ImagePull *pull, Ttfleet__Reply **reply_p)
{
    return ttclient_op_image_pull(self, pull, reply_p);
}

int ttclient_image_prepare(ttclient_t *self, Ttfleet__ImagePrepare *prepare,
                           Ttfleet__Reply **reply_p)
{
    return ttclient_op_image_prepare(self, prepare, reply_p);
}

int ttclient_image_push(ttclient_t *self, const char *ref, const char *path, bool pool,
                        const Ttfleet__ImageDefaults *defaults, const ttimage_opts_t *opts,
                        Ttfleet__Reply **reply_p)
{
    *reply_p = NULL;
    ttimage_info_t *info = calloc(1, sizeof *info);
    if (!info) {
        s_set_error(self, "out of memory");
        return -1;
    }
    char err[512];
    if (ttimage_inspect(path, info, err, sizeof err)) {
        s_set_error(self, "%s: %s", path, err);
        free(info);
        return -1;
    }
    /* the description: one blob for a qcow2, the manifest and its files for a dir */
    Ttfleet__ImageBlob bs[TT_MANIFEST_FILES + 1];
    Ttfleet__ImageBlob *bl[TT_MANIFEST_FILES + 1];
    size_t n = 0;
    ttfleet__image_blob__init(&bs[n]);
    bs[n].digest = info->digest;
    bs[n].size = strcmp(info->kind, "dir") == 0 ? (uint64_t)info->manifest_len : info->size;
    bs[n].file = strcmp(info->kind, "dir") == 0 ? "manifest" : "";
    bl[n] = &bs[n];
    n++;
    for (size_t i = 0; strcmp(info->kind, "dir") == 0 && i < info->manifest.n; i++, n++) {
        ttfleet__image_blob__init(&bs[n]);
        bs[n].digest = info->manifest.files[i].digest;
        bs[n].size = info->manifest.files[i].size;
        bs[n].file = info->manifest.files[i].name;
        bl[n] = &bs[n];
    }
    Ttfleet__ImagePush p = TTFLEET__IMAGE_PUSH__INIT;
    p.ref = (char *)ref;
    p.kind = info->kind;
    p.digest = info->digest;
    p.size = info->size;
    p.n_blobs = n;
    p.blobs = bl;
    p.pool = pool;
    p.defaults = (Ttfleet__ImageDefaults *)defaults;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_IMAGE_PUSH;
    req.image_push = &p;
    Ttfleet__Reply *grant = NULL;
    int rc = ttclient_call(self, TT_SERVICE_ENV, &req, &grant);
    if (rc || grant->status != TTFLEET__STATUS__OK ||
        grant->result_case != TTFLEET__REPLY__RESULT_PUSH_GRANT) {
        if (!rc && grant->status == TTFLEET__STATUS__OK)
            grant->status = TTFLEET__STATUS__INTERNAL; /* no grant in an OK reply */
        *reply_p = grant;
        free(info);
        return rc;
    }
    ttimage_opts_t o;
    if (opts)
        o = *opts;
    else
        ttimage_opts_defaults(&o);
    if (grant->push_grant->server_key && *grant->push_grant->server_key) {
        snprintf(o.server_key, sizeof o.server_key, "%s", grant->push_grant->server_key);
        if (!o.client_cert[0]) /* the blob server's CURVE: our own key */
            snprintf(o.client_cert, sizeof o.client_cert, "%s", self->cert_path);
    }
    for (size_t m = 0; m < grant->push_grant->n_missing && rc == 0; m++) {
        const char *d = grant->push_grant->missing[m];
        for (size_t i = 0; i < n; i++) {
            if (strcmp(bs[i].digest, d) != 0)
                continue;
            char file[4096];
            if (strcmp(bs[i].file, "manifest") == 0)
                rc = ttimage_push_mem(&o, grant->push_grant->endpoint, info->manifest_text,
                                      (uint64_t)info->manifest_len, d, err, sizeof err);
            else if (!*bs[i].file)
                rc = ttimage_push_file(&o, grant->push_grant->endpoint, path, d, err, sizeof err);
            else if (snprintf(file, sizeof file, "%s/%s", path, bs[i].file) >= (int)sizeof file) {
                snprintf(err, sizeof err, "path too long");
                rc = -1;
            } else
                rc = ttimage_push_file(&o, grant->push_grant->endpoint, file, d, err, sizeof err);
            break;
        }
    }
    ttclient_reply_destroy(&grant);
    if (rc) {
        s_set_error(self, "push of %s failed: %s (nothing was registered; push again to resume)",
                    path, err);
        free(info);
        return -1;
    }
    req.op_case = TTFLEET__REQUEST__OP_IMAGE_COMMIT;
    req.image_commit = &p;
    rc = ttclient_call(self, TT_SERVICE_ENV, &req, reply_p);
    free(info);
    return rc;
}

/* ---- exec and copy (see ttclient.h) ---- */

/* One attempt of timeout_ms: exec and copy are not retried. */
static int s_call_once(ttclient_t *self, Ttfleet__Request *req, int timeout_ms,
                       Ttfleet__Reply **reply_p)
{
    int timeout = self->timeout, retries = self->retries;
    self->timeout = timeout_ms > timeout ? timeout_ms : timeout;
    self->retries = 1;
    int rc = ttclient_call(self, TT_SERVICE_ENV, req, reply_p);
    self->timeout = timeout;
    self->retries = retries;
    return rc;
}

void ttclient_exec_free(ttclient_exec_t *res)
{
    if (!res)
        return;
    free(res->out);
    free(res->err);
    res->out = res->err = NULL;
    res->out_len = res->err_len = 0;
}

/* Append a piece at offset when it continues what we hold. */
static int s_piece(uint8_t **buf, size_t *len, uint64_t size, uint64_t offset,
                   const ProtobufCBinaryData *piece)
{
    if (size > TT_EXEC_OUTPUT_MAX || offset != *len || piece->len > size - offset)
        return -1;
    if (!*buf) {
        *buf = calloc(1, (size_t)size + 1);
        if (!*buf)
            return -1;
    }
    if (piece->len)
        memcpy(*buf + *len, piece->data, piece->len);
    *len += piece->len;
    return 0;
}

static int s_exec_take(ttclient_t *self, ttclient_exec_t *res, const Ttfleet__Reply *reply)
{
    res->status = reply->status;
    snprintf(res->message, sizeof res->message, "%s", reply->message ? reply->message : "");
    if (reply->result_case != TTFLEET__REPLY__RESULT_EXEC)
        return 0;
    const Ttfleet__ExecResult *e = reply->exec;
    snprintf(res->host, sizeof res->host, "%s", e->host ? e->host : "");
    res->exit_code = e->exit_code;
    res->signal = e->signal;
    res->out_truncated = e->stdout_truncated;
    res->err_truncated = e->stderr_truncated;
    if (s_piece(&res->out, &res->out_len, e->stdout_size, e->stdout_offset, &e->stdout) ||
        s_piece(&res->err, &res->err_len, e->stderr_size, e->stderr_offset, &e->stderr)) {
        s_set_error(self, "the broker sent an output piece that does not fit what came before");
        return -1;
    }
    return 0;
}

int ttclient_env_exec(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                      const char *const *argv, size_t argc, const void *in, size_t in_len,
                      uint32_t timeout_s, ttclient_exec_t *res)
{
    self->error[0] = '\0';
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    if (!name || !argv || argc < 1 || argc > TT_EXEC_ARGS_MAX || in_len > TT_EXEC_STDIN_MAX ||
        timeout_s > TT_EXEC_TIMEOUT_MAX) {
        s_set_error(self,
                    "exec needs an env name, 1..%d arguments, stdin of at most %d bytes "
                    "and a timeout of at most %d s",
                    TT_EXEC_ARGS_MAX, TT_EXEC_STDIN_MAX, TT_EXEC_TIMEOUT_MAX);
        return -1;
    }
    Ttfleet__EnvExec x = TTFLEET__ENV_EXEC__INIT;
    x.name = (char *)name;
    x.vm_id = vm_id;
    x.host = (char *)(host ? host : "");
    x.argv = (char **)argv;
    x.n_argv = argc;
    x.stdin.data = (uint8_t *)in;
    x.stdin.len = in ? in_len : 0;
    x.timeout_s = timeout_s;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_ENV_EXEC;
    req.env_exec = &x;
    Ttfleet__Reply *reply = NULL;
    uint32_t t = timeout_s ? timeout_s : TT_EXEC_TIMEOUT_DEFAULT;
    if (s_call_once(self, &req, (int)(t + 30) * 1000, &reply))
        return -1;
    int rc = s_exec_take(self, res, reply);
    char exec_id[TT_EXEC_ID_LEN + 1] = "";
    uint64_t out_size = 0, err_size = 0;
    if (reply->result_case == TTFLEET__REPLY__RESULT_EXEC) {
        snprintf(exec_id, sizeof exec_id, "%s", reply->exec->exec_id ? reply->exec->exec_id : "");
        out_size = reply->exec->stdout_size;
        err_size = reply->exec->stderr_size;
    }
    ttclient_reply_destroy(&reply);
    /* the rest of a long output, 96 KiB of each per request */
    while (rc == 0 && exec_id[0] && (res->out_len < out_size || res->err_len < err_size)) {
        size_t before = res->out_len + res->err_len;
        Ttfleet__EnvExec m = TTFLEET__ENV_EXEC__INIT;
        m.name = (char *)name;
        m.vm_id = vm_id;
        m.host = (char *)(host ? host : "");
        m.exec_id = exec_id;
        m.stdout_offset = res->out_len;
        m.stderr_offset = res->err_len;
        req.env_exec = &m;
        if (s_call_once(self, &req, 30000, &reply)) {
            rc = -1;
            break;
        }
        int status = res->status;
        char message[sizeof res->message];
        snprintf(message, sizeof message, "%s", res->message);
        if (reply->status != TTFLEET__STATUS__OK) {
            snprintf(res->message, sizeof res->message, "reading the rest of the output: %s",
                     reply->message ? reply->message : "");
            res->status = reply->status;
            ttclient_reply_destroy(&reply);
            break;
        }
        rc = s_exec_take(self, res, reply);
        res->status = status; /* the command's, not the read's */
        snprintf(res->message, sizeof res->message, "%s", message);
        ttclient_reply_destroy(&reply);
        if (rc == 0 && res->out_len + res->err_len == before) {
            s_set_error(self, "the output stopped growing at %zu + %zu bytes", res->out_len,
                        res->err_len);
            rc = -1;
        }
    }
    if (rc)
        ttclient_exec_free(res);
    return rc;
}

/* One chunk request; 0 with the reply, a status > 0 (error set, reply
 * freed) or -1. */
static int s_copy_call(ttclient_t *self, Ttfleet__EnvCopy *c, int timeout_ms,
                       Ttfleet__Reply **reply_p)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_ENV_COPY;
    req.env_copy = c;
    if (s_call_once(self, &req, timeout_ms, reply_p))
        return -1;
    Ttfleet__Reply *reply = *reply_p;
    if (reply->status != TTFLEET__STATUS__OK) {
        int st = reply->status > 0 ? reply->status : TTFLEET__STATUS__INTERNAL;
        s_set_error(self, "%s: %s", tt_status_name(reply->status),
                    reply->message && *reply->message ? reply->message : "(no message)");
        ttclient_reply_destroy(reply_p);
        return st;
    }
    if (reply->result_case != TTFLEET__REPLY__RESULT_COPY) {
        s_set_error(self, "the broker answered a copy without a chunk");
        ttclient_reply_destroy(reply_p);
        return TTFLEET__STATUS__INTERNAL;
    }
    return 0;
}

static void s_copy_ref(Ttfleet__EnvCopy *c, const char *name, uint32_t vm_id, const char *host,
                       const char *path, Ttfleet__CopyDirection dir)
{
    c->name = (char *)name;
    c->vm_id = vm_id;
    c->host = (char *)(host ? host : "");
    c->path = (char *)path;
    c->direction = dir;
}

static int s_copy_args(ttclient_t *self, const char *name, const char *path)
{
    char why[256];
    if (!name || !tt_name_valid(name)) {
        s_set_error(self, "invalid env name");
        return -1;
    }
    if (tt_guest_path_valid(path, why, sizeof why)) {
        s_set_error(self, "%s", why);
        return -1;
    }
    return 0;
}

#define S_COPY_WHOLE_MS 180000 /* the chunk that writes or reads the whole file in the guest */
#define S_COPY_CHUNK_MS 30000

int ttclient_env_cp_put(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                        const char *path, const void *data, size_t len)
{
    self->error[0] = '\0';
    if (s_copy_args(self, name, path))
        return -1;
    if (len > TT_COPY_FILE_MAX) {
        s_set_error(self,
                    "TOO_LARGE: the file is %zu bytes; a copy is at most %d (64 MiB); "
                    "nothing was sent",
                    len, TT_COPY_FILE_MAX);
        return TTFLEET__STATUS__TOO_LARGE;
    }
    unsigned char sha[32];
    EVP_Digest(data ? data : (const void *)"", len, sha, NULL, EVP_sha256(), NULL);
    char tid[TT_EXEC_ID_LEN + 1] = "";
    size_t off = 0;
    for (;;) {
        size_t n = len - off > TT_COPY_CHUNK_MAX ? TT_COPY_CHUNK_MAX : len - off;
        bool last = off + n == len;
        Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
        s_copy_ref(&c, name, vm_id, host, path, TTFLEET__COPY_DIRECTION__COPY_PUT);
        c.transfer_id = tid;
        c.offset = off;
        c.data.data = (uint8_t *)data + off;
        c.data.len = n;
        c.last = last;
        if (last) {
            c.total_size = len;
            c.sha256.data = sha;
            c.sha256.len = 32;
        }
        Ttfleet__Reply *reply = NULL;
        int st = s_copy_call(self, &c, last ? S_COPY_WHOLE_MS : S_COPY_CHUNK_MS, &reply);
        if (st)
            return st;
        const Ttfleet__CopyChunk *cc = reply->copy;
        if (last) {
            bool ok = cc->eof && cc->total_size == len && cc->sha256.len == 32 &&
                      memcmp(cc->sha256.data, sha, 32) == 0;
            ttclient_reply_destroy(&reply);
            if (!ok) {
                s_set_error(self, "the worker's answer does not confirm the file's size and "
                                  "sha256");
                return TTFLEET__STATUS__CHECKSUM_MISMATCH;
            }
            return 0;
        }
        if (!cc->transfer_id || strlen(cc->transfer_id) != TT_EXEC_ID_LEN ||
            (tid[0] && strcmp(tid, cc->transfer_id) != 0)) {
            ttclient_reply_destroy(&reply);
            s_set_error(self, "the worker answered a chunk without its transfer id");
            return TTFLEET__STATUS__INTERNAL;
        }
        snprintf(tid, sizeof tid, "%s", cc->transfer_id);
        ttclient_reply_destroy(&reply);
        off += n;
    }
}

int ttclient_env_cp_get(ttclient_t *self, const char *name, uint32_t vm_id, const char *host,
                        const char *path, uint8_t **data, size_t *len)
{
    self->error[0] = '\0';
    *data = NULL;
    *len = 0;
    if (s_copy_args(self, name, path))
        return -1;
    char tid[TT_EXEC_ID_LEN + 1] = "";
    unsigned char sha[32];
    uint8_t *buf = NULL;
    size_t total = 0, off = 0;
    for (;;) {
        Ttfleet__EnvCopy c = TTFLEET__ENV_COPY__INIT;
        s_copy_ref(&c, name, vm_id, host, path, TTFLEET__COPY_DIRECTION__COPY_GET);
        c.transfer_id = tid;
        c.offset = off;
        Ttfleet__Reply *reply = NULL;
        int st = s_copy_call(self, &c, off == 0 ? S_COPY_WHOLE_MS : S_COPY_CHUNK_MS, &reply);
        if (st) {
            free(buf);
            return st;
        }
        const Ttfleet__CopyChunk *cc = reply->copy;
        int bad = 0;
        if (!buf) {
            if (cc->total_size > TT_COPY_FILE_MAX || cc->sha256.len != 32 || !cc->transfer_id ||
                strlen(cc->transfer_id) > TT_EXEC_ID_LEN)
                bad = 1;
            else {
                total = (size_t)cc->total_size;
                memcpy(sha, cc->sha256.data, 32);
                snprintf(tid, sizeof tid, "%s", cc->transfer_id);
                buf = malloc(total + 1);
                if (!buf)
                    bad = 1;
            }
        }
        if (!bad && (cc->offset != off || cc->data.len > total - off || cc->total_size != total ||
                     (!cc->eof && cc->data.len == 0)))
            bad = 1;
        if (bad) {
            ttclient_reply_destroy(&reply);
            free(buf);
            s_set_error(self, "the worker sent a chunk that does not fit the file");
            return TTFLEET__STATUS__INTERNAL;
        }
        if (cc->data.len)
            memcpy(buf + off, cc->data.data, cc->data.len);
        off += cc->data.len;
        bool eof = cc->eof;
        ttclient_reply_destroy(&reply);
        if (eof)
            break;
    }
    unsigned char got[32];
    EVP_Digest(buf, off, got, NULL, EVP_sha256(), NULL);
    if (off != total || memcmp(got, sha, 32) != 0) {
        free(buf);
        s_set_error(self,
                    "CHECKSUM_MISMATCH: the %zu bytes received do not have the file's "
                    "size (%zu) and sha256",
                    off, total);
        return TTFLEET__STATUS__CHECKSUM_MISMATCH;
    }
    buf[off] = 0;
    *data = buf;
    *len = off;
    return 0;
}
