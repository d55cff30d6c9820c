/*
 * gw: see gw.h.
 *
 * One request, step by step:
 *  1. libmicrohttpd calls s_access first with the headers only. A declared
 *     body over max_body is refused right there (413), before it is read.
 *  2. Body chunks are appended to the connection's buffer, still bounded
 *     (a chunked body without Content-Length is cut off the same way).
 *  3. With the whole request in hand the route table (s_routes) is searched
 *     by method and path; a path that no route has is 404, a path with
 *     another method is 405 with Allow.
 *  4. The bearer token is looked up (tokens.c); it names the tenant and the
 *     role. Admin-only routes are refused with 403 for the user role.
 *  5. The route's op (a field name of Request's oneof) is built from the
 *     JSON body, the path's parameters and the query string through pbjson,
 *     so the wire message and the JSON always agree on names and types.
 *  6. A fresh libttclient connection sends it (Idempotency-Key header as
 *     the request id), and the Reply's status picks the HTTP status.
 *
 * The tenant put in the Request is always the token's, never the caller's
 * choice: the body cannot carry one (Request.tenant is not a field of any
 * op message). Admin-only ops go out as the broker's admin tenant. Under
 * CURVE the broker takes the tenant from the gateway's key instead; acting
 * on behalf of the token's tenant then needs the broker-side gateway role
 * described in docs/GATEWAY.md.
 */
#include "gw.h"

#include <czmq.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dashboard_files.h"
#include "metrics.h"
#include "pbjson.h"
#include "quota.h"
#include "status.h"
#include "ttclient.h"
#include "ttops.h"
#include "ttproto.h"

#define S_MAX_SEGMENTS 8
#define S_MAX_QUERY 8
#define S_SSE_BLOCK 8192
#define S_SCRAPE_CACHE_MS 2000
#define S_SCRAPE_MAX_ENVS 500
#define S_MAX_DRAIN 4  /* times max_body of a too large body read to its end */
#define S_SWEEP_MS 200 /* how often request deadlines are checked */

/* route flags */
#define S_ADMIN 1u /* needs the admin role */
#define S_BODY 2u  /* takes a JSON body (optional unless S_NEED_BODY) */
#define S_NEED_BODY 4u
#define S_PUBLIC 8u /* no token needed */

/* One TCP connection, from accept to close: the deadline of the request it
 * is receiving, and of the answer it is sending. The sweeper shuts down the
 * socket of a connection whose request (headers and body) is not complete
 * request_timeout_ms after the connection opened or its previous answer was
 * sent, or whose answer (an event stream excepted) the client has not taken
 * request_timeout_ms after it was ready (a slow reader of pipelined answers
 * would hold the slot for ever); the connection's own thread then sees the
 * end of the stream and libmicrohttpd closes it. */
typedef struct s_sock {
    struct s_sock *prev, *next;
    int fd;
    int64_t start_ms;
    bool receiving; /* the current request is not complete yet */
    bool sending;   /* its answer is ready and not all sent yet (since start_ms) */
    bool cut;       /* the sweeper shut it down */
} s_sock_t;

struct _gw_t {
    gw_config_t cfg;
    struct MHD_Daemon *daemon;
    pthread_mutex_t socks_lock; /* socks, and every s_sock_t's fields */
    s_sock_t *socks;
    pthread_t sweeper;
    bool sweeper_started;
    zsock_t *events_sub; /* the recorder's SUB on cfg.events */
    pthread_t sampler;
    bool sampler_started;
    pthread_t recorder;
    bool recorder_started;
    atomic_bool sweeper_stop;
};

typedef struct {
    char *body;
    size_t len;
    bool too_large;
    size_t drained; /* bytes of a too large body read and dropped */
    int64_t start_ms;
} s_conn_t;

typedef struct s_request s_request_t;
typedef enum MHD_Result (*s_handler_fn)(gw_t *gw, s_request_t *r);

typedef struct {
    const char *method;
    const char *path; /* segments; "*" matches one segment */
    const char *name; /* metrics label; also the op (Request field) */
    const char *op;   /* NULL: a special handler */
    const char *service;
    unsigned flags;
    const char *params[TT_OP_MAX_PARAMS]; /* op fields the "*" segments fill, in order */
    const char *query[TT_OP_MAX_QUERY];   /* op fields the query string may set */
    int ok_status;
    s_handler_fn fn;
    int metric; /* index from metrics_route() */
} s_route_t;

struct s_request {
    struct MHD_Connection *conn;
    s_conn_t *state;
    const s_route_t *route;
    char *segments[S_MAX_SEGMENTS];
    int n_segments;
    char tenant[TT_MAX_NAME + 1];
    char role[16];
    int status;      /* HTTP status sent */
    int retry_after; /* seconds for Retry-After; 0: 1 s on 429/503; -1: none */
};

static enum MHD_Result s_api(gw_t *gw, s_request_t *r);
static enum MHD_Result s_events(gw_t *gw, s_request_t *r);
static enum MHD_Result s_metrics(gw_t *gw, s_request_t *r);
static enum MHD_Result s_static(gw_t *gw, s_request_t *r);
static enum MHD_Result s_whoami(gw_t *gw, s_request_t *r);
static enum MHD_Result s_dashboard(gw_t *gw, s_request_t *r);

/* The routes: one per operation of the registry (schema/ops.def) that has
 * a REST route, built from its row, then the gateway's own. */
static const s_route_t s_own_routes[] = {
    {"GET", "/v1/whoami", "whoami", NULL, NULL, 0, {0}, {0}, 200, s_whoami, 0},
    {"GET", "/v1/dashboard", "dashboard_state", NULL, NULL, 0, {0}, {0}, 200, s_dashboard, 0},
    {"GET", "/v1/events", "events", NULL, NULL, 0, {0}, {"topic", "env"}, 200, s_events, 0},
    {"GET", "/metrics", "metrics", NULL, NULL, S_PUBLIC, {0}, {0}, 200, s_metrics, 0},
    {"GET", "/", "dashboard", NULL, NULL, S_PUBLIC, {0}, {"token"}, 200, s_static, 0},
    {"GET", "/*", "dashboard", NULL, NULL, S_PUBLIC, {0}, {0}, 200, s_static, 0},
};
#define S_MAX_ROUTES 96
static s_route_t s_routes[S_MAX_ROUTES];
static size_t s_n_routes;

static void s_routes_build(void)
{
    size_t n = 0;
    for (size_t i = 0; i < tt_ops_n && n < S_MAX_ROUTES; i++) {
        const tt_op_t *op = &tt_ops[i];
        if (!op->method)
            continue;
        s_route_t *rt = &s_routes[n++];
        *rt = (s_route_t){op->method, op->path,      op->field, op->field, op->service, 0, {0},
                          {0},        op->ok_status, s_api,     0};
        if (op->flags & TT_OPF_ADMIN)
            rt->flags |= S_ADMIN;
        if (op->flags & TT_OPF_BODY)
            rt->flags |= S_BODY;
        if ((op->flags & TT_OPF_NEED_BODY) == TT_OPF_NEED_BODY)
            rt->flags |= S_NEED_BODY;
        memcpy(rt->params, op->params, sizeof rt->params);
        memcpy(rt->query, op->query, sizeof rt->query);
    }
    for (size_t i = 0; i < sizeof s_own_routes / sizeof s_own_routes[0] && n < S_MAX_ROUTES; i++)
        s_routes[n++] = s_own_routes[i];
    s_n_routes = n;
}

static int s_unmatched_metric = -1;
static atomic_uint s_streams;
static atomic_bool s_stopping;

/* Whether the broker's admin tenant is ours (--admin-tenant): checked on
 * every pool_status ttgw asks as admin (the history sampler, /metrics).
 * While they differ every token request is refused: a user token in the
 * broker's real admin tenant would act in it, and admin ops would go out
 * in a tenant the broker does not treat as admin. */
static atomic_bool s_admin_bad;
static pthread_mutex_t s_admin_lock = PTHREAD_MUTEX_INITIALIZER;
static char s_admin_why[300];

static void s_admin_note(gw_t *gw, const Ttfleet__Reply *pool)
{
    if (!pool)
        return;
    char why[300] = "";
    if (pool->status == TTFLEET__STATUS__OK && pool->pool) {
        const char *theirs = pool->pool->admin_tenant ? pool->pool->admin_tenant : "";
        if (!*theirs)
            snprintf(why, sizeof why, "the broker does not treat tenant '%s' as admin",
                     gw->cfg.admin_tenant);
        else if (strcmp(theirs, gw->cfg.admin_tenant) != 0)
            snprintf(why, sizeof why, "the broker's admin tenant is '%s', not '%s'", theirs,
                     gw->cfg.admin_tenant);
    } else if (pool->status == TTFLEET__STATUS__FORBIDDEN) {
        snprintf(why, sizeof why, "the broker refused tenant '%s' the admin role",
                 gw->cfg.admin_tenant);
    } else {
        return; /* no verdict */
    }
    pthread_mutex_lock(&s_admin_lock);
    bool was = atomic_load(&s_admin_bad);
    if (why[0] && (!was || strcmp(why, s_admin_why) != 0))
        fprintf(stderr, "ttgw: %s: refusing every token request until --admin-tenant matches\n",
                why);
    else if (!why[0] && was)
        fprintf(stderr, "ttgw: the broker's admin tenant is '%s' again: serving\n",
                gw->cfg.admin_tenant);
    snprintf(s_admin_why, sizeof s_admin_why, "%s", why);
    atomic_store(&s_admin_bad, why[0] != 0);
    pthread_mutex_unlock(&s_admin_lock);
}

/* ---- responses ---- */

static enum MHD_Result s_send(s_request_t *r, int status, const char *type, char *text, size_t len,
                              enum MHD_ResponseMemoryMode mode, const char *allow)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, text, mode);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (strncmp(type, "application/json", 16) == 0)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    if (status == 401)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"ttgw\"");
    if (status == 405 && allow)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, allow);
    if (r->retry_after > 0 || (r->retry_after == 0 && (status == 429 || status == 503))) {
        char secs[16];
        snprintf(secs, sizeof secs, "%d", r->retry_after > 0 ? r->retry_after : 1);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, secs);
    }
    r->status = status;
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result s_send_json(s_request_t *r, int status, json_t *body, const char *allow)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    return s_send(r, status, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE, allow);
}

/* Every error: {"error": {"status": NAME, "message": TEXT[, "request_id": ID]}}. */
static enum MHD_Result s_error(s_request_t *r, int status, const char *name, const char *request_id,
                               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static enum MHD_Result s_error(s_request_t *r, int status, const char *name, const char *request_id,
                               const char *fmt, ...)
{
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    json_t *err = json_pack("{s:s,s:s}", "status", name, "message", message);
    if (!err) /* the message was not UTF-8 (it quotes input): say so instead */
        err = json_pack("{s:s,s:s}", "status", name, "message", "(message not UTF-8)");
    if (request_id && *request_id)
        json_object_set_new(err, "request_id", json_string(request_id));
    return s_send_json(r, status, json_pack("{s:o}", "error", err), NULL);
}

/* ---- broker calls ---- */

static ttclient_t *s_client(gw_t *gw, const char *tenant, char *err, size_t errlen)
{
    ttclient_t *c = ttclient_new(gw->cfg.broker, tenant);
    if (!c) {
        snprintf(err, errlen, "cannot create a broker client");
        return NULL;
    }
    ttclient_set_timeout(c, gw->cfg.timeout_ms);
    ttclient_set_retries(c, gw->cfg.retries);
    if (gw->cfg.key && ttclient_set_curve(c, gw->cfg.key, gw->cfg.broker_key) != 0) {
        snprintf(err, errlen, "%s", ttclient_error(c));
        ttclient_destroy(&c);
        return NULL;
    }
    return c;
}

/* Sends op (the Request field named op_name, already filled) and returns
 * 0 with *reply_p, or -1 with the transport error in err. */
/* as_admin: the request acts with the admin role. Under CURVE the broker
 * grants it only to a key bound with the gateway role (Request.on_behalf_admin,
 * docs/GATEWAY.md); without CURVE it ignores the field and goes by the tenant. */
static int s_call(gw_t *gw, const char *tenant, bool as_admin, const char *service,
                  const char *op_name, ProtobufCMessage *op, const char *request_id,
                  Ttfleet__Reply **reply_p, char *err, size_t errlen)
{
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(&ttfleet__request__descriptor, op_name);
    if (!f) {
        snprintf(err, errlen, "no op %s", op_name);
        return -1;
    }
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.on_behalf_admin = as_admin;
    *(ProtobufCMessage **)((char *)&req + f->offset) = op;
    *(uint32_t *)((char *)&req + f->quantifier_offset) = f->id;
    char rid[TT_MAX_REQUEST_ID + 1] = "";
    if (request_id) {
        snprintf(rid, sizeof rid, "%s", request_id);
        req.request_id = rid;
    }
    ttclient_t *c = s_client(gw, tenant, err, errlen);
    if (!c)
        return -1;
    int64_t t0 = tt_mono_ms();
    int rc = ttclient_call(c, service, &req, reply_p);
    metrics_broker(metrics_op(op_name), rc, (double)(tt_mono_ms() - t0) / 1000.0);
    if (rc != 0)
        snprintf(err, errlen, "the broker did not answer: %s", ttclient_error(c));
    ttclient_destroy(&c);
    return rc;
}

/* ---- request building ---- */

typedef struct {
    const s_route_t *route;
    json_t *obj;
    const ProtobufCMessageDescriptor *desc;
    char bad[128];
    int n;
} s_query_t;

static enum MHD_Result s_query_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    s_query_t *q = cls;
    if (++q->n > S_MAX_QUERY) {
        snprintf(q->bad, sizeof q->bad, "too many query parameters");
        return MHD_NO;
    }
    bool known = false;
    for (int i = 0; i < 4 && q->route->query[i]; i++)
        if (strcmp(q->route->query[i], key) == 0)
            known = true;
    if (!known) {
        snprintf(q->bad, sizeof q->bad, "unknown query parameter '%.40s'", key);
        return MHD_NO;
    }
    if (!q->obj || !q->desc)
        return MHD_YES;
    const ProtobufCFieldDescriptor *f =
        protobuf_c_message_descriptor_get_field_by_name(q->desc, key);
    json_t *v;
    if (f && f->type == PROTOBUF_C_TYPE_BOOL) {
        if (!value || strcmp(value, "true") == 0 || strcmp(value, "1") == 0)
            v = json_true();
        else if (strcmp(value, "false") == 0 || strcmp(value, "0") == 0)
            v = json_false();
        else {
            snprintf(q->bad, sizeof q->bad, "query parameter '%s' must be true or false", key);
            return MHD_NO;
        }
    } else {
        v = json_string(value ? value : "");
        if (!v) {
            snprintf(q->bad, sizeof q->bad, "query parameter '%s' is not UTF-8", key);
            return MHD_NO;
        }
    }
    if (f && f->label == PROTOBUF_C_LABEL_REPEATED) {
        /* a repeated field: each occurrence adds one element */
        json_t *arr = json_object_get(q->obj, key);
        if (!json_is_array(arr)) {
            arr = json_array();
            json_object_set_new(q->obj, key, arr);
        }
        json_array_append_new(arr, v);
        return MHD_YES;
    }
    json_object_set_new(q->obj, key, v);
    return MHD_YES;
}

/* Checks the query string of r against its route, copying the values into
 * obj (when given) as fields of desc. Returns 0, or -1 with a reason. */
static int s_query(s_request_t *r, json_t *obj, const ProtobufCMessageDescriptor *desc, char *bad,
                   size_t badlen)
{
    s_query_t q = {.route = r->route, .obj = obj, .desc = desc};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, s_query_arg, &q);
    if (q.bad[0]) {
        snprintf(bad, badlen, "%s", q.bad);
        return -1;
    }
    return 0;
}

static const char *s_header(s_request_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static enum MHD_Result s_api(gw_t *gw, s_request_t *r)
{
    const s_route_t *rt = r->route;
    const char *idem = s_header(r, "Idempotency-Key");
    if (idem && !tt_request_id_valid(idem))
        return s_error(r, 400, "BAD_REQUEST", NULL,
                       "Idempotency-Key must be 1..%d printable characters", TT_MAX_REQUEST_ID);

    const ProtobufCFieldDescriptor *opf =
        protobuf_c_message_descriptor_get_field_by_name(&ttfleet__request__descriptor, rt->op);
    const ProtobufCMessageDescriptor *desc = opf->descriptor;

    /* the op's fields as JSON: body, then path parameters, then query */
    json_t *obj;
    if (r->state->len > 0) {
        if (!(rt->flags & S_BODY))
            return s_error(r, 400, "BAD_REQUEST", NULL, "%s %s takes no request body", rt->method,
                           rt->path);
        const char *type = s_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (type && strncasecmp(type, "application/json", 16) != 0)
            return s_error(r, 415, "UNSUPPORTED_MEDIA_TYPE", NULL,
                           "the body must be application/json, not %.60s", type);
        json_error_t jerr;
        obj = json_loadb(r->state->body, r->state->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj)
            return s_error(r, 400, "INVALID_JSON", NULL, "malformed JSON at line %d column %d: %s",
                           jerr.line, jerr.column, jerr.text);
        if (!json_is_object(obj)) {
            json_decref(obj);
            return s_error(r, 400, "INVALID_JSON", NULL, "the body must be a JSON object");
        }
    } else {
        if (rt->flags & S_NEED_BODY)
            return s_error(r, 400, "BAD_REQUEST", NULL, "%s %s needs a JSON body", rt->method,
                           rt->path);
        obj = json_object();
    }
    for (int i = 0; i < 2 && rt->params[i]; i++) {
        const char *seg = NULL;
        int k = 0;
        /* the i-th "*" of the pattern */
        const char *p = rt->path;
        for (int s = 0; s < r->n_segments; s++) {
            p = strchr(p, '/');
            if (!p)
                break;
            p++;
            if (*p == '*' && k++ == i)
                seg = r->segments[s];
        }
        json_t *have = json_object_get(obj, rt->params[i]);
        if (have && !(json_is_string(have) && seg && strcmp(json_string_value(have), seg) == 0)) {
            json_decref(obj);
            return s_error(r, 400, "BAD_REQUEST", NULL,
                           "field '%s' comes from the path; leave it out of the body",
                           rt->params[i]);
        }
        json_object_set_new(obj, rt->params[i], json_string(seg ? seg : ""));
        if (!json_object_get(obj, rt->params[i])) {
            json_decref(obj);
            return s_error(r, 400, "BAD_REQUEST", NULL, "path segment is not UTF-8");
        }
    }
    char bad[600];
    if (s_query(r, obj, desc, bad, sizeof bad) != 0) {
        json_decref(obj);
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    }
    pbjson_arena_t *arena = pbjson_arena_new();
    ProtobufCMessage *op = arena ? pbjson_decode(desc, obj, arena, bad, sizeof bad) : NULL;
    json_decref(obj);
    if (!op) {
        if (!arena)
            snprintf(bad, sizeof bad, "out of memory");
        pbjson_arena_destroy(&arena);
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    }

    /* who the broker sees */
    bool admin = strcmp(r->role, "admin") == 0;
    const char *tenant = r->tenant;
    if (strcmp(rt->op, "env_list") == 0 && ((Ttfleet__EnvList *)op)->all) {
        if (!admin) {
            pbjson_arena_destroy(&arena);
            return s_error(r, 403, "FORBIDDEN", NULL, "all=true needs the admin role");
        }
        tenant = gw->cfg.admin_tenant;
    }
    if (rt->flags & S_ADMIN)
        tenant = gw->cfg.admin_tenant;
    if (strcmp(rt->op, "pool_status") == 0 && admin)
        tenant = gw->cfg.admin_tenant;

    /* per-tenant requests in flight: the token's tenant, whatever tenant
     * the broker sees, so admin-role tokens are bounded too */
    if (quota_take(QUOTA_REQUESTS, r->tenant, gw->cfg.max_inflight) != 0) {
        pbjson_arena_destroy(&arena);
        return s_error(r, 429, "TOO_MANY_REQUESTS", NULL,
                       "tenant %s has %u requests in flight already", r->tenant,
                       gw->cfg.max_inflight);
    }
    Ttfleet__Reply *reply = NULL;
    char err[600];
    int rc = s_call(gw, tenant, tenant == gw->cfg.admin_tenant, rt->service, rt->op, op, idem,
                    &reply, err, sizeof err);
    quota_give(QUOTA_REQUESTS, r->tenant);
    pbjson_arena_destroy(&arena);
    if (rc != 0)
        return s_error(r, 504, "BROKER_TIMEOUT", idem, "%s", err);
    enum MHD_Result ret;
    int http = gw_status_http(reply->status);
    const char *name = gw_status_name(reply->status);
    if (http == 0) {
        fprintf(stderr, "ttgw: the broker answered status %d, which ttgw does not know\n",
                reply->status);
        http = 500;
    }
    if (reply->status != TTFLEET__STATUS__OK && reply->status != TTFLEET__STATUS__QUEUED) {
        int retry = gw_status_retry_after(reply->status, reply->message);
        r->retry_after = retry > 0 ? retry : -1;
        ret = s_error(r, http, name, reply->request_id, "%s",
                      reply->message && *reply->message ? reply->message : name);
    } else {
        json_t *body = NULL;
        const ProtobufCMessageDescriptor *rd = &ttfleet__reply__descriptor;
        for (unsigned i = 0; i < rd->n_fields; i++) {
            const ProtobufCFieldDescriptor *f = &rd->fields[i];
            if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                *(uint32_t *)((char *)reply + f->quantifier_offset) == f->id) {
                ProtobufCMessage *m = *(ProtobufCMessage **)((char *)reply + f->offset);
                if (m)
                    body = pbjson_encode(m);
            }
        }
        if (!body)
            body = json_object();
        if (reply->message && *reply->message)
            json_object_set_new(body, "message", json_string(reply->message));
        /* a queued create: 202 with the env as the queue holds it (state
         * "queued", queue_position, queue_deadline) */
        ret = s_send_json(r, reply->status == TTFLEET__STATUS__QUEUED ? http : rt->ok_status, body,
                          NULL);
    }
    ttclient_reply_destroy(&reply);
    return ret;
}

/* The token's tenant and role, so a client (the dashboard) knows what it
 * may do without trying and failing. */
static enum MHD_Result s_whoami(gw_t *gw, s_request_t *r)
{
    char bad[200];
    if (s_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    return s_send_json(r, 200, json_pack("{s:s,s:s}", "tenant", r->tenant, "role", r->role), NULL);
}

/* ---- Server-Sent Events ---- */

/* The event log: one subscriber thread (s_recorder) takes every event from
 * the broker's PUB endpoint, gives it the next id and keeps it in a ring of
 * at most cfg.event_log_max events no older than cfg.event_log_age_s; each
 * stream reads the ring from its own position, so a client that reconnects
 * with Last-Event-ID gets what it missed. Ids start at the unix time in ms
 * x 1000 when ttgw starts, so a restarted ttgw's ids are above the ones the
 * last one gave, and a Last-Event-ID it never gave is told apart. */
typedef struct {
    uint64_t id;
    int64_t at_ms; /* tt_mono_ms() when it arrived */
    char tenant[TT_MAX_NAME + 1];
    char env[TT_MAX_NAME + 1];
    char *topic;
    char *block; /* "event: ...\ndata: ...\n\n" */
} s_logged_t;

static pthread_mutex_t s_log_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t s_log_cond;
static s_logged_t *s_evlog;                   /* ring of s_log_cap */
static size_t s_log_cap, s_log_head, s_log_n; /* head: oldest */
static uint64_t s_log_next_id;                /* the id the next event gets */

static void s_logged_free(s_logged_t *e)
{
    free(e->topic);
    free(e->block);
    e->topic = e->block = NULL;
}

/* Drops events past the age bound (under s_log_lock). */
static void s_log_expire(const gw_t *gw, int64_t now_ms)
{
    while (s_log_n &&
           now_ms - s_evlog[s_log_head].at_ms > (int64_t)gw->cfg.event_log_age_s * 1000) {
        s_logged_free(&s_evlog[s_log_head]);
        s_log_head = (s_log_head + 1) % s_log_cap;
        s_log_n--;
    }
}

/* The oldest id the log still holds (the next one when it is empty). */
static uint64_t s_log_first_id(void)
{
    return s_log_n ? s_evlog[s_log_head].id : s_log_next_id;
}

static void s_log_add(gw_t *gw, const char *topic, Ttfleet__Event *ev)
{
    json_t *j = pbjson_encode(&ev->base);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    const char *kind = ev->kind && *ev->kind ? ev->kind : "event";
    size_t blen = text ? strlen(kind) + strlen(text) + 32 : 0;
    char *block = text ? malloc(blen) : NULL;
    if (block)
        snprintf(block, blen, "event: %s\ndata: %s\n\n", kind, text);
    free(text);
    char *t = strdup(topic);
    if (!block || !t || strlen(block) > S_SSE_BLOCK - 64) {
        free(block);
        free(t);
        return;
    }
    pthread_mutex_lock(&s_log_lock);
    int64_t now = tt_mono_ms();
    s_log_expire(gw, now);
    if (s_log_n == s_log_cap) {
        s_logged_free(&s_evlog[s_log_head]);
        s_log_head = (s_log_head + 1) % s_log_cap;
        s_log_n--;
    }
    s_logged_t *e = &s_evlog[(s_log_head + s_log_n) % s_log_cap];
    e->id = s_log_next_id++;
    e->at_ms = now;
    snprintf(e->tenant, sizeof e->tenant, "%s", ev->tenant ? ev->tenant : "");
    snprintf(e->env, sizeof e->env, "%s", ev->env ? ev->env : "");
    e->topic = t;
    e->block = block;
    s_log_n++;
    pthread_cond_broadcast(&s_log_cond);
    pthread_mutex_unlock(&s_log_lock);
}

/* The recorder thread: subscribes to every event (with the gateway's key
 * when CURVE is on) until the gateway stops. */
static void *s_recorder(void *arg)
{
    gw_t *gw = arg;
    while (!atomic_load(&s_stopping)) {
        zmq_pollitem_t item = {zsock_resolve(gw->events_sub), 0, ZMQ_POLLIN, 0};
        int n = zmq_poll(&item, 1, 500);
        if (n > 0) {
            zmsg_t *msg = zmsg_recv(gw->events_sub);
            if (!msg)
                continue;
            zframe_t *topic = zmsg_first(msg), *body = zmsg_next(msg);
            Ttfleet__Event *ev =
                topic && body && zframe_size(topic) <= TT_MAX_NAME
                    ? ttfleet__event__unpack(NULL, zframe_size(body), zframe_data(body))
                    : NULL;
            if (ev) {
                char t[TT_MAX_NAME + 1];
                memcpy(t, zframe_data(topic), zframe_size(topic));
                t[zframe_size(topic)] = '\0';
                s_log_add(gw, t, ev);
                ttfleet__event__free_unpacked(ev, NULL);
            }
            zmsg_destroy(&msg);
        }
        pthread_mutex_lock(&s_log_lock);
        s_log_expire(gw, tt_mono_ms());
        pthread_mutex_unlock(&s_log_lock);
    }
    return NULL;
}

typedef struct {
    gw_t *gw;
    char tenant[TT_MAX_NAME + 1];
    bool admin;
    char env[TT_MAX_NAME + 1];
    char topic[TT_MAX_NAME + 1];
    uint64_t next; /* the id of the next event to look at */
    bool gap;      /* Last-Event-ID older than the log: say so first */
    uint64_t gap_from;
    char buf[S_SSE_BLOCK];
    size_t len, off;
} s_stream_t;

static bool s_stream_sees(const s_stream_t *st, const s_logged_t *e)
{
    if (!st->admin && (!e->tenant[0] || strcmp(e->tenant, st->tenant) != 0))
        return false;
    if (st->env[0] && strcmp(e->env, st->env) != 0)
        return false;
    return strncmp(e->topic, st->topic, strlen(st->topic)) == 0;
}

/* Formats the next event this stream may see into st->buf (with its id),
 * or a comment line after the keepalive interval; returns false when the
 * gateway stops. */
static bool s_stream_next(s_stream_t *st)
{
    int64_t start = tt_mono_ms();
    pthread_mutex_lock(&s_log_lock);
    if (st->gap) {
        st->gap = false;
        st->len = (size_t)snprintf(
            st->buf, sizeof st->buf,
            "event: gap\ndata: {\"last_event_id\":\"%llu\",\"oldest_event_id\":\"%llu\"}\n\n",
            (unsigned long long)st->gap_from, (unsigned long long)s_log_first_id());
        st->off = 0;
        pthread_mutex_unlock(&s_log_lock);
        return true;
    }
    while (!atomic_load(&s_stopping)) {
        uint64_t first = s_log_first_id();
        if (st->next < first)
            st->next = first; /* evicted while this stream was slow */
        while (st->next < s_log_next_id) {
            const s_logged_t *e = &s_evlog[(s_log_head + (st->next - first)) % s_log_cap];
            st->next++;
            if (s_stream_sees(st, e)) {
                st->len = (size_t)snprintf(st->buf, sizeof st->buf, "id: %llu\n%s",
                                           (unsigned long long)e->id, e->block);
                st->off = 0;
                pthread_mutex_unlock(&s_log_lock);
                return true;
            }
        }
        if (tt_mono_ms() - start >= st->gw->cfg.sse_keepalive_ms) {
            pthread_mutex_unlock(&s_log_lock);
            st->len = (size_t)snprintf(st->buf, sizeof st->buf, ": keepalive %lld\n\n",
                                       (long long)tt_now());
            st->off = 0;
            return true;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += 500 * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s_log_cond, &s_log_lock, &until);
    }
    pthread_mutex_unlock(&s_log_lock);
    return false;
}

static ssize_t s_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    s_stream_t *st = cls;
    if (st->off >= st->len) {
        st->len = st->off = 0;
        if (!s_stream_next(st))
            return MHD_CONTENT_READER_END_OF_STREAM;
    }
    size_t n = st->len - st->off;
    if (n > max)
        n = max;
    memcpy(buf, st->buf + st->off, n);
    st->off += n;
    return (ssize_t)n;
}

static void s_stream_free(void *cls)
{
    s_stream_t *st = cls;
    quota_give(QUOTA_STREAMS, st->tenant);
    free(st);
    atomic_fetch_sub(&s_streams, 1);
}

static bool s_topic_valid(const char *s)
{
    if (strlen(s) > TT_MAX_NAME)
        return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '_' || *s == '-'))
            return false;
    return true;
}

static enum MHD_Result s_events(gw_t *gw, s_request_t *r)
{
    char bad[200];
    if (s_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    const char *topic = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "topic");
    const char *env = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "env");
    if (topic && !s_topic_valid(topic))
        return s_error(r, 400, "BAD_REQUEST", NULL,
                       "topic must be a prefix such as env. or vm.state");
    if (env && !tt_name_valid(env))
        return s_error(r, 400, "BAD_REQUEST", NULL, "env must be an env name");
    /* Last-Event-ID: the id of the last event the client got (a browser's
     * EventSource sends it when it reconnects) */
    const char *last_h = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Last-Event-ID");
    uint64_t last = 0;
    bool have_last = last_h && *last_h;
    if (have_last) {
        char *end = NULL;
        errno = 0;
        unsigned long long v = strtoull(last_h, &end, 10);
        if (*last_h < '0' || *last_h > '9' || *end || errno || strlen(last_h) > 20)
            return s_error(r, 400, "BAD_REQUEST", NULL,
                           "Last-Event-ID must be the decimal id of an event this gateway sent");
        last = v;
    }
    if (quota_take(QUOTA_STREAMS, r->tenant, gw->cfg.max_tenant_streams) != 0)
        return s_error(r, 429, "TOO_MANY_STREAMS", NULL,
                       "tenant %s has %u event streams open already", r->tenant,
                       gw->cfg.max_tenant_streams);
    if (atomic_fetch_add(&s_streams, 1) >= gw->cfg.max_streams) {
        atomic_fetch_sub(&s_streams, 1);
        quota_give(QUOTA_STREAMS, r->tenant);
        return s_error(r, 503, "TOO_MANY_STREAMS", NULL, "%u event streams are open already",
                       gw->cfg.max_streams);
    }
    s_stream_t *st = calloc(1, sizeof *st);
    if (!st) {
        atomic_fetch_sub(&s_streams, 1);
        quota_give(QUOTA_STREAMS, r->tenant);
        return s_error(r, 500, "INTERNAL", NULL, "out of memory");
    }
    st->gw = gw;
    snprintf(st->tenant, sizeof st->tenant, "%s", r->tenant);
    st->admin = strcmp(r->role, "admin") == 0;
    snprintf(st->env, sizeof st->env, "%s", env ? env : "");
    snprintf(st->topic, sizeof st->topic, "%s", topic ? topic : "");
    pthread_mutex_lock(&s_log_lock);
    st->next = s_log_next_id;
    if (have_last) {
        if (last >= s_log_first_id() - 1 && last < s_log_next_id) {
            st->next = last + 1;
        } else {
            /* older than the log holds, or not an id this ttgw gave (an
             * earlier ttgw's): what is missing cannot be replayed */
            st->gap = true;
            st->gap_from = last;
            st->next = last < s_log_next_id ? s_log_first_id() : s_log_next_id;
        }
    }
    pthread_mutex_unlock(&s_log_lock);
    /* the first block goes out at once, so the client sees the headers */
    st->len = (size_t)snprintf(st->buf, sizeof st->buf, "retry: 2000\n: connected\n\n");
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, S_SSE_BLOCK,
                                                                  s_stream_read, st, s_stream_free);
    if (!resp) {
        s_stream_free(st);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    r->status = 200;
    enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
    MHD_destroy_response(resp);
    return ret;
}

/* ---- /metrics ---- */

static pthread_mutex_t s_scrape_lock = PTHREAD_MUTEX_INITIALIZER;
static char *s_scrape_text;
static size_t s_scrape_len;
static int64_t s_scrape_at;

static void s_label(FILE *f, const char *v)
{
    for (; v && *v; v++) {
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", f);
        else
            fputc(*v, f);
    }
}

/* One histogram of the broker's stats (cumulative buckets, the last +Inf)
 * in the text format; label is NULL or a name="value" pair's name. */
static void s_write_pb_hist(FILE *f, const char *metric, const char *label, const char *value,
                            Ttfleet__HistogramBucket *const *b, size_t n, double sum,
                            uint64_t count)
{
    for (size_t i = 0; i < n; i++) {
        fprintf(f, "%s_bucket{", metric);
        if (label) {
            fprintf(f, "%s=\"", label);
            s_label(f, value);
            fprintf(f, "\",");
        }
        if (isinf(b[i]->le))
            fprintf(f, "le=\"+Inf\"} %llu\n", (unsigned long long)b[i]->count);
        else
            fprintf(f, "le=\"%g\"} %llu\n", b[i]->le, (unsigned long long)b[i]->count);
    }
    const char *suffix[] = {"_sum", "_count"};
    for (int k = 0; k < 2; k++) {
        fprintf(f, "%s%s", metric, suffix[k]);
        if (label) {
            fprintf(f, "{%s=\"", label);
            s_label(f, value);
            fprintf(f, "\"}");
        }
        if (k == 0)
            fprintf(f, " %.9g\n", sum);
        else
            fprintf(f, " %llu\n", (unsigned long long)count);
    }
}

/* Broker HA: the Raft series of the member that answered (the leader). */
static void s_write_cluster(FILE *f, const Ttfleet__ClusterStatus *c)
{
    static const char *const roles[] = {"leader", "follower", "candidate", "unavailable"};
    unsigned id = c->id;
    fprintf(f,
            "# HELP ttfleet_raft_term The Raft term this broker is in.\n"
            "# TYPE ttfleet_raft_term gauge\nttfleet_raft_term{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_commit_index The highest Raft entry known committed.\n"
            "# TYPE ttfleet_raft_commit_index gauge\n"
            "ttfleet_raft_commit_index{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_applied_index The highest Raft entry applied to broker.db.\n"
            "# TYPE ttfleet_raft_applied_index gauge\n"
            "ttfleet_raft_applied_index{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_leader_changes_total Times the known Raft leader changed since "
            "this broker started.\n# TYPE ttfleet_raft_leader_changes_total counter\n"
            "ttfleet_raft_leader_changes_total{member=\"%u\"} %llu\n"
            "# HELP ttfleet_raft_role This broker's Raft role (1 for the role it has).\n"
            "# TYPE ttfleet_raft_role gauge\n",
            id, (unsigned long long)c->term, id, (unsigned long long)c->commit_index, id,
            (unsigned long long)c->applied_index, id, (unsigned long long)c->leader_changes);
    for (int i = 0; i < 4; i++)
        fprintf(f, "ttfleet_raft_role{member=\"%u\",role=\"%s\"} %d\n", id, roles[i],
                c->role && strcmp(c->role, roles[i]) == 0);
    fprintf(f, "# HELP ttfleet_raft_member_match_index The highest Raft entry the leader knows "
               "replicated on each member.\n# TYPE ttfleet_raft_member_match_index gauge\n");
    for (size_t i = 0; i < c->n_members; i++)
        fprintf(f, "ttfleet_raft_member_match_index{member=\"%u\"} %llu\n", c->members[i]->id,
                (unsigned long long)c->members[i]->match_index);
    char idl[16];
    snprintf(idl, sizeof idl, "%u", id);
    fprintf(f, "# HELP ttfleet_raft_apply_latency_seconds A leader's batch handed to Raft to "
               "committed by a majority and applied.\n"
               "# TYPE ttfleet_raft_apply_latency_seconds histogram\n");
    s_write_pb_hist(f, "ttfleet_raft_apply_latency_seconds", "member", idl, c->apply_latency,
                    c->n_apply_latency, c->apply_latency_sum, c->apply_latency_count);
}

/* The broker's own series (the admin op broker_stats): group-commit latency
 * and batch sizes, request latency per op, worker command latency per host,
 * replies by op and status, batches waiting for their fsync. */
static void s_write_broker_stats(gw_t *gw, FILE *f)
{
    char err[300];
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *rep = NULL;
    if (s_call(gw, gw->cfg.admin_tenant, true, "tt.admin", "broker_stats", &empty.base, NULL, &rep,
               err, sizeof err) != 0)
        return;
    if (rep->status == TTFLEET__STATUS__OK &&
        rep->result_case == TTFLEET__REPLY__RESULT_BROKER_STATS && rep->broker_stats) {
        Ttfleet__BrokerStats *st = rep->broker_stats;
        fprintf(f, "# HELP ttfleet_broker_commit_latency_seconds Group commit: COMMIT begun to "
                   "durable (fsync done).\n# TYPE ttfleet_broker_commit_latency_seconds "
                   "histogram\n");
        s_write_pb_hist(f, "ttfleet_broker_commit_latency_seconds", NULL, NULL, st->commit_latency,
                        st->n_commit_latency, st->commit_latency_sum, st->commit_latency_count);
        fprintf(f, "# HELP ttfleet_broker_batch_size Messages read per broker loop batch.\n"
                   "# TYPE ttfleet_broker_batch_size histogram\n");
        s_write_pb_hist(f, "ttfleet_broker_batch_size", NULL, NULL, st->batch_size,
                        st->n_batch_size, st->batch_size_sum, st->batch_size_count);
        fprintf(f, "# HELP ttfleet_broker_request_latency_seconds Request received to reply "
                   "queued inside the broker, by op.\n"
                   "# TYPE ttfleet_broker_request_latency_seconds histogram\n");
        for (size_t i = 0; i < st->n_op_latency; i++)
            s_write_pb_hist(f, "ttfleet_broker_request_latency_seconds", "op",
                            st->op_latency[i]->op, st->op_latency[i]->buckets,
                            st->op_latency[i]->n_buckets, st->op_latency[i]->sum,
                            st->op_latency[i]->count);
        fprintf(f, "# HELP ttfleet_broker_worker_latency_seconds Worker COMMAND sent to its "
                   "REPLY received, by host.\n"
                   "# TYPE ttfleet_broker_worker_latency_seconds histogram\n");
        for (size_t i = 0; i < st->n_worker_latency; i++)
            s_write_pb_hist(f, "ttfleet_broker_worker_latency_seconds", "host",
                            st->worker_latency[i]->host, st->worker_latency[i]->buckets,
                            st->worker_latency[i]->n_buckets, st->worker_latency[i]->sum,
                            st->worker_latency[i]->count);
        fprintf(f, "# HELP ttfleet_broker_requests_total Replies by op and status since the "
                   "broker started.\n# TYPE ttfleet_broker_requests_total counter\n");
        for (size_t i = 0; i < st->n_requests_total; i++) {
            fprintf(f, "ttfleet_broker_requests_total{op=\"");
            s_label(f, st->requests_total[i]->op);
            fprintf(f, "\",status=\"");
            s_label(f, st->requests_total[i]->status);
            fprintf(f, "\"} %llu\n", (unsigned long long)st->requests_total[i]->count);
        }
        fprintf(f,
                "# HELP ttfleet_broker_commit_queue_depth Committed batches waiting for "
                "their fsync.\n# TYPE ttfleet_broker_commit_queue_depth gauge\n"
                "ttfleet_broker_commit_queue_depth %llu\n",
                (unsigned long long)st->queue_depth);
        if (st->cluster)
            s_write_cluster(f, st->cluster);
    }
    ttclient_reply_destroy(&rep);
    /* the admission queue's depth */
    Ttfleet__QueueList ql = TTFLEET__QUEUE_LIST__INIT;
    ql.all = true;
    if (s_call(gw, gw->cfg.admin_tenant, true, "tt.admin", "queue_list", &ql.base, NULL, &rep, err,
               sizeof err) != 0)
        return;
    if (rep->status == TTFLEET__STATUS__OK && rep->result_case == TTFLEET__REPLY__RESULT_QUEUE &&
        rep->queue) {
        /* how long the longest-waiting create of those listed has waited */
        int64_t now = (int64_t)time(NULL), oldest = now;
        for (size_t i = 0; i < rep->queue->n_entries; i++)
            if (rep->queue->entries[i]->enqueued_at > 0 &&
                rep->queue->entries[i]->enqueued_at < oldest)
                oldest = rep->queue->entries[i]->enqueued_at;
        fprintf(f,
                "# HELP ttfleet_queue_depth Creates waiting in the admission queue.\n"
                "# TYPE ttfleet_queue_depth gauge\nttfleet_queue_depth %u\n"
                "# HELP ttfleet_queue_oldest_wait_seconds How long the create waiting longest "
                "in the admission queue has waited (0: none waits).\n"
                "# TYPE ttfleet_queue_oldest_wait_seconds gauge\n"
                "ttfleet_queue_oldest_wait_seconds %lld\n",
                rep->queue->total, (long long)(now - oldest));
    }
    ttclient_reply_destroy(&rep);
}

/* The pool's series: asks the broker (as the admin tenant) for the pool
 * status, the hosts and every env with its VMs. */
static void s_write_pool(gw_t *gw, FILE *f)
{
    char err[300];
    Ttfleet__Reply *pool = NULL, *hosts = NULL, *envs = NULL;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__EnvList all = TTFLEET__ENV_LIST__INIT;
    all.all = true;
    const char *admin = gw->cfg.admin_tenant;
    bool up = s_call(gw, admin, true, "tt.admin", "pool_status", &empty.base, NULL, &pool, err,
                     sizeof err) == 0;
    if (up)
        s_admin_note(gw, pool);
    if (up)
        s_call(gw, admin, true, "tt.admin", "host_list", &empty.base, NULL, &hosts, err,
               sizeof err);
    if (up)
        s_call(gw, admin, true, "tt.admin", "env_list", &all.base, NULL, &envs, err, sizeof err);
    fprintf(f,
            "# HELP ttfleet_broker_up 1 if the broker answered this scrape.\n"
            "# TYPE ttfleet_broker_up gauge\nttfleet_broker_up %d\n",
            up ? 1 : 0);
    double ratio[3] = {1, 1, 1};
    if (pool && pool->status == TTFLEET__STATUS__OK && pool->pool) {
        Ttfleet__PoolStatus *p = pool->pool;
        const double got[3] = {p->cpu_overcommit, p->mem_overcommit, p->disk_overcommit};
        for (int k = 0; k < 3; k++)
            if (isfinite(got[k]) && got[k] > 0)
                ratio[k] = got[k];
        fprintf(f,
                "# HELP ttfleet_broker_start_time_seconds When the broker started, unix time.\n"
                "# TYPE ttfleet_broker_start_time_seconds gauge\n"
                "ttfleet_broker_start_time_seconds %lld\n"
                "# HELP ttfleet_pool_overcommit_ratio A host takes VMs up to its capacity "
                "times this ratio, by resource.\n"
                "# TYPE ttfleet_pool_overcommit_ratio gauge\n"
                "ttfleet_pool_overcommit_ratio{resource=\"cpu\"} %g\n"
                "ttfleet_pool_overcommit_ratio{resource=\"memory\"} %g\n"
                "ttfleet_pool_overcommit_ratio{resource=\"disk\"} %g\n",
                (long long)p->started_at, ratio[0], ratio[1], ratio[2]);
    }
    if (hosts && hosts->status == TTFLEET__STATUS__OK && hosts->hosts) {
        Ttfleet__HostInfoList *l = hosts->hosts;
        static const char *states[] = {"online", "suspect", "down"};
        fprintf(f, "# HELP ttfleet_hosts Hosts by state.\n# TYPE ttfleet_hosts gauge\n");
        for (size_t s = 0; s < 3; s++) {
            unsigned n = 0;
            for (size_t i = 0; i < l->n_hosts; i++)
                n += strcmp(l->hosts[i]->state, states[s]) == 0;
            fprintf(f, "ttfleet_hosts{state=\"%s\"} %u\n", states[s], n);
        }
        unsigned draining = 0;
        for (size_t i = 0; i < l->n_hosts; i++)
            draining += l->hosts[i]->draining;
        fprintf(f,
                "# HELP ttfleet_hosts_draining Hosts that take no new placements.\n"
                "# TYPE ttfleet_hosts_draining gauge\nttfleet_hosts_draining %u\n",
                draining);
        /* capacity, allocatable (capacity x the overcommit ratio, what the
         * scheduler places against) and allocated, per host and summed over
         * the online hosts; memory and disk in bytes */
        static const char *res[3][2] = {
            {"cpus", "CPUs"}, {"memory_bytes", "Memory in bytes"}, {"disk_bytes", "Disk in bytes"}};
        static const char *what[3][2] = {
            {"capacity", "the host's capacity"},
            {"allocatable", "capacity times the overcommit ratio, what VMs may take"},
            {"allocated", "taken by the VMs placed"}};
        for (size_t k = 0; k < 3; k++)
            for (size_t w = 0; w < 3; w++) {
                double sum = 0;
                fprintf(f,
                        "# HELP ttfleet_host_%s_%s %s of a host: %s.\n"
                        "# TYPE ttfleet_host_%s_%s gauge\n",
                        what[w][0], res[k][0], res[k][1], what[w][1], what[w][0], res[k][0]);
                for (size_t i = 0; i < l->n_hosts; i++) {
                    Ttfleet__HostInfo *h = l->hosts[i];
                    double cap = k == 0   ? h->cpu_total
                                 : k == 1 ? (double)h->mem_total * 1048576.0
                                          : (double)h->disk_total * 1048576.0;
                    double used = k == 0   ? h->cpu_used
                                  : k == 1 ? (double)h->mem_used * 1048576.0
                                           : (double)h->disk_used * 1048576.0;
                    /* the broker's floor(total x ratio), in the unit it counts in */
                    double unit = k == 0 ? 1 : 1048576.0;
                    double v = w == 0 ? cap : w == 1 ? floor(cap / unit * ratio[k]) * unit : used;
                    fprintf(f, "ttfleet_host_%s_%s{host=\"", what[w][0], res[k][0]);
                    s_label(f, h->id);
                    fprintf(f, "\"} %.0f\n", v);
                    if (strcmp(h->state, "online") == 0)
                        sum += v;
                }
                fprintf(f,
                        "# HELP ttfleet_pool_%s_%s %s of the online hosts, summed: %s.\n"
                        "# TYPE ttfleet_pool_%s_%s gauge\nttfleet_pool_%s_%s %.0f\n",
                        what[w][0], res[k][0], res[k][1], what[w][1], what[w][0], res[k][0],
                        what[w][0], res[k][0], sum);
            }
        fprintf(f,
                "# HELP ttfleet_host_vms VMs placed on a host.\n# TYPE ttfleet_host_vms gauge\n");
        for (size_t i = 0; i < l->n_hosts; i++) {
            fputs("ttfleet_host_vms{host=\"", f);
            s_label(f, l->hosts[i]->id);
            fprintf(f, "\"} %u\n", l->hosts[i]->vm_count);
        }
        fprintf(f, "# HELP ttfleet_host_info A host's state, acceleration and drain flag.\n"
                   "# TYPE ttfleet_host_info gauge\n");
        for (size_t i = 0; i < l->n_hosts; i++) {
            fputs("ttfleet_host_info{host=\"", f);
            s_label(f, l->hosts[i]->id);
            fputs("\",state=\"", f);
            s_label(f, l->hosts[i]->state);
            fputs("\",accel=\"", f);
            s_label(f, l->hosts[i]->accel);
            fprintf(f, "\",draining=\"%s\"} 1\n", l->hosts[i]->draining ? "true" : "false");
        }
    }
    if (envs && envs->status == TTFLEET__STATUS__OK && envs->envs) {
        Ttfleet__EnvInfoList *l = envs->envs;
        static const char *states[] = {"creating", "running",  "stopped",
                                       "paused",   "degraded", "deleting"};
        fprintf(f, "# HELP ttfleet_envs Envs by state.\n# TYPE ttfleet_envs gauge\n");
        for (size_t s = 0; s < 6; s++) {
            unsigned n = 0;
            for (size_t i = 0; i < l->n_envs; i++)
                n += strcmp(l->envs[i]->state, states[s]) == 0;
            fprintf(f, "ttfleet_envs{state=\"%s\"} %u\n", states[s], n);
        }
        /* VMs by state and engine: env_show of each env (bounded) */
        typedef struct {
            char engine[TT_MAX_NAME + 1];
            int state;
            unsigned n;
        } s_count_t;
        s_count_t counts[64];
        size_t n_counts = 0;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < limit; i++) {
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            Ttfleet__Reply *show = NULL;
            if (s_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                       err, sizeof err) != 0)
                continue;
            if (show->status == TTFLEET__STATUS__OK && show->env)
                for (size_t v = 0; v < show->env->n_vms; v++) {
                    Ttfleet__VmInfo *vm = show->env->vms[v];
                    size_t k;
                    for (k = 0; k < n_counts; k++)
                        if (counts[k].state == (int)vm->state &&
                            strcmp(counts[k].engine, vm->engine) == 0)
                            break;
                    if (k == n_counts && n_counts < 64) {
                        snprintf(counts[k].engine, sizeof counts[k].engine, "%s", vm->engine);
                        counts[k].state = (int)vm->state;
                        counts[k].n = 0;
                        n_counts++;
                    }
                    if (k < 64)
                        counts[k].n++;
                }
            ttclient_reply_destroy(&show);
        }
        fprintf(f, "# HELP ttfleet_vms VMs by state and engine.\n# TYPE ttfleet_vms gauge\n");
        for (size_t k = 0; k < n_counts; k++) {
            fprintf(f, "ttfleet_vms{state=\"%s\",engine=\"", tt_vm_state_name(counts[k].state));
            s_label(f, counts[k].engine);
            fprintf(f, "\"} %u\n", counts[k].n);
        }
    }
    ttclient_reply_destroy(&pool);
    ttclient_reply_destroy(&hosts);
    ttclient_reply_destroy(&envs);
    if (up)
        s_write_broker_stats(gw, f);
}

static enum MHD_Result s_metrics(gw_t *gw, s_request_t *r)
{
    char bad[200];
    if (s_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    /* one scrape at a time reads the pool; the result serves every scrape
     * for S_SCRAPE_CACHE_MS, so scrapers cannot load the broker */
    pthread_mutex_lock(&s_scrape_lock);
    if (!s_scrape_text || tt_mono_ms() - s_scrape_at > S_SCRAPE_CACHE_MS) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (f) {
            s_write_pool(gw, f);
            fclose(f);
            free(s_scrape_text);
            s_scrape_text = text;
            s_scrape_len = len;
            s_scrape_at = tt_mono_ms();
        }
    }
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f) {
        if (s_scrape_text)
            fwrite(s_scrape_text, 1, s_scrape_len, f);
        metrics_write_gateway(f);
        metrics_write_process(f, TTFLEET_VERSION);
        fclose(f);
    }
    pthread_mutex_unlock(&s_scrape_lock);
    if (!text)
        return MHD_NO;
    return s_send(r, 200, "text/plain; version=0.0.4; charset=utf-8", text, len,
                  MHD_RESPMEM_MUST_FREE, NULL);
}

/* ---- the pool's history (the dashboard's charts) ---- */

/* One sample every cfg.history_interval_s, the last S_HIST_MAX kept: the
 * pool's allocated and allocatable CPUs and memory, envs and VMs by state,
 * the admission queue. Read from the broker by s_sampler, a thread of its
 * own, as the admin tenant. */
#define S_HIST_MAX 2160
#define S_ENV_STATES 7
#define S_VM_STATES 8
static const char *s_env_states[S_ENV_STATES] = {"creating", "running",  "stopped", "paused",
                                                 "degraded", "deleting", "queued"};
typedef struct {
    int64_t t;
    double cpu_used, cpu_alloc, mem_used, mem_alloc; /* CPUs; bytes */
    unsigned envs[S_ENV_STATES];
    unsigned vms[S_VM_STATES]; /* by tt_vm_state_name of the VmState value */
    unsigned queue;
    /* create -> ready: envs whose last VM became ready since the sample
     * before (each counted once), and the mean of their seconds */
    unsigned ready_n;
    double ready_latency;
} s_sample_t;

/* The envs already counted in a ready_latency ("tenant/name/created_at"),
 * emptied when it grows past S_READY_SEEN_MAX (the sampler's thread only). */
#define S_READY_SEEN_MAX 10000
static zhashx_t *s_ready_seen;

static pthread_mutex_t s_hist_lock = PTHREAD_MUTEX_INITIALIZER;
static s_sample_t s_hist[S_HIST_MAX];
static size_t s_hist_head, s_hist_n;

static bool s_sample(gw_t *gw, s_sample_t *out)
{
    char err[300];
    const char *admin = gw->cfg.admin_tenant;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *pool = NULL, *hosts = NULL, *envs = NULL, *q = NULL;
    memset(out, 0, sizeof *out);
    out->t = tt_now();
    if (s_call(gw, admin, true, "tt.admin", "pool_status", &empty.base, NULL, &pool, err,
               sizeof err) != 0)
        return false;
    s_admin_note(gw, pool);
    double ratio[2] = {1, 1};
    if (pool->status == TTFLEET__STATUS__OK && pool->pool) {
        if (pool->pool->cpu_overcommit > 0)
            ratio[0] = pool->pool->cpu_overcommit;
        if (pool->pool->mem_overcommit > 0)
            ratio[1] = pool->pool->mem_overcommit;
    }
    ttclient_reply_destroy(&pool);
    if (s_call(gw, admin, true, "tt.admin", "host_list", &empty.base, NULL, &hosts, err,
               sizeof err) == 0 &&
        hosts->status == TTFLEET__STATUS__OK && hosts->hosts)
        for (size_t i = 0; i < hosts->hosts->n_hosts; i++) {
            Ttfleet__HostInfo *h = hosts->hosts->hosts[i];
            if (strcmp(h->state, "online") != 0)
                continue;
            out->cpu_used += h->cpu_used;
            out->cpu_alloc += floor(h->cpu_total * ratio[0]);
            out->mem_used += (double)h->mem_used * 1048576.0;
            out->mem_alloc += floor((double)h->mem_total * ratio[1]) * 1048576.0;
        }
    ttclient_reply_destroy(&hosts);
    Ttfleet__EnvList all = TTFLEET__ENV_LIST__INIT;
    all.all = true;
    if (s_call(gw, admin, true, "tt.admin", "env_list", &all.base, NULL, &envs, err, sizeof err) ==
            0 &&
        envs->status == TTFLEET__STATUS__OK && envs->envs) {
        Ttfleet__EnvInfoList *l = envs->envs;
        for (size_t i = 0; i < l->n_envs; i++)
            for (int k = 0; k < S_ENV_STATES; k++)
                if (strcmp(l->envs[i]->state, s_env_states[k]) == 0)
                    out->envs[k]++;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < limit; i++) {
            if (strcmp(l->envs[i]->state, "queued") == 0)
                continue;
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            Ttfleet__Reply *show = NULL;
            if (s_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                       err, sizeof err) != 0)
                continue;
            if (show->status == TTFLEET__STATUS__OK && show->env) {
                const Ttfleet__EnvInfo *e = show->env;
                int64_t ready_at = 0;
                bool all_ready = e->n_vms > 0;
                for (size_t v = 0; v < e->n_vms; v++) {
                    if ((unsigned)e->vms[v]->state < S_VM_STATES)
                        out->vms[e->vms[v]->state]++;
                    all_ready = all_ready && e->vms[v]->ready;
                    if (e->vms[v]->ready_at > ready_at)
                        ready_at = e->vms[v]->ready_at;
                }
                char key[2 * TT_MAX_NAME + 32];
                snprintf(key, sizeof key, "%s/%s/%lld", e->tenant, e->name,
                         (long long)e->created_at);
                if (all_ready && ready_at >= e->created_at && s_ready_seen &&
                    !zhashx_lookup(s_ready_seen, key)) {
                    if (zhashx_size(s_ready_seen) >= S_READY_SEEN_MAX)
                        zhashx_purge(s_ready_seen);
                    zhashx_insert(s_ready_seen, key, (void *)1);
                    out->ready_latency += (double)(ready_at - e->created_at);
                    out->ready_n++;
                }
            }
            ttclient_reply_destroy(&show);
        }
    }
    ttclient_reply_destroy(&envs);
    Ttfleet__QueueList ql = TTFLEET__QUEUE_LIST__INIT;
    ql.all = true;
    if (s_call(gw, admin, true, "tt.admin", "queue_list", &ql.base, NULL, &q, err, sizeof err) ==
            0 &&
        q->status == TTFLEET__STATUS__OK && q->queue)
        out->queue = q->queue->total;
    ttclient_reply_destroy(&q);
    if (out->ready_n)
        out->ready_latency /= out->ready_n;
    return true;
}

static void *s_sampler(void *arg)
{
    gw_t *gw = arg;
    int64_t next = tt_mono_ms();
    if (!s_ready_seen)
        s_ready_seen = zhashx_new();
    /* what was ready before ttgw started is not a latency it saw */
    s_sample_t first;
    if (s_sample(gw, &first))
        next += (int64_t)gw->cfg.history_interval_s * 1000;
    while (!atomic_load(&s_stopping)) {
        if (tt_mono_ms() < next) {
            usleep(100 * 1000);
            continue;
        }
        next += (int64_t)gw->cfg.history_interval_s * 1000;
        s_sample_t smp;
        if (!s_sample(gw, &smp))
            continue; /* the broker did not answer: a gap in the charts */
        pthread_mutex_lock(&s_hist_lock);
        if (s_hist_n == S_HIST_MAX) {
            s_hist_head = (s_hist_head + 1) % S_HIST_MAX;
            s_hist_n--;
        }
        s_hist[(s_hist_head + s_hist_n) % S_HIST_MAX] = smp;
        s_hist_n++;
        pthread_mutex_unlock(&s_hist_lock);
    }
    return NULL;
}

static json_t *s_history_json(gw_t *gw)
{
    json_t *t = json_array(), *cu = json_array(), *ca = json_array(), *mu = json_array(),
           *ma = json_array(), *qd = json_array(), *envs = json_object(), *vms = json_object(),
           *rl = json_array();
    json_t *es[S_ENV_STATES], *vs[S_VM_STATES];
    for (int k = 0; k < S_ENV_STATES; k++) {
        es[k] = json_array();
        json_object_set_new(envs, s_env_states[k], es[k]);
    }
    for (int k = 0; k < S_VM_STATES; k++) {
        vs[k] = json_array();
        json_object_set_new(vms, tt_vm_state_name(k), vs[k]);
    }
    pthread_mutex_lock(&s_hist_lock);
    for (size_t i = 0; i < s_hist_n; i++) {
        const s_sample_t *x = &s_hist[(s_hist_head + i) % S_HIST_MAX];
        json_array_append_new(t, json_integer(x->t));
        json_array_append_new(cu, json_real(x->cpu_used));
        json_array_append_new(ca, json_real(x->cpu_alloc));
        json_array_append_new(mu, json_real(x->mem_used));
        json_array_append_new(ma, json_real(x->mem_alloc));
        json_array_append_new(qd, json_integer(x->queue));
        json_array_append_new(rl, x->ready_n ? json_real(x->ready_latency) : json_null());
        for (int k = 0; k < S_ENV_STATES; k++)
            json_array_append_new(es[k], json_integer(x->envs[k]));
        for (int k = 0; k < S_VM_STATES; k++)
            json_array_append_new(vs[k], json_integer(x->vms[k]));
    }
    pthread_mutex_unlock(&s_hist_lock);
    return json_pack("{s:i,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o,s:o}", "interval_s",
                     gw->cfg.history_interval_s, "t", t, "cpu_used", cu, "cpu_allocatable", ca,
                     "mem_used_bytes", mu, "mem_allocatable_bytes", ma, "queue", qd, "envs", envs,
                     "vms", vms, "ready_latency_s", rl);
}

/* GET /v1/dashboard: everything the dashboard shows, in one answer: who
 * the token is, the envs it may list with their VMs (an admin: every
 * tenant's), and for an admin the pool (status with the overcommit ratios,
 * hosts) and its history. */
static enum MHD_Result s_dashboard(gw_t *gw, s_request_t *r)
{
    char bad[200], err[300];
    if (s_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return s_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    bool admin = strcmp(r->role, "admin") == 0;
    json_t *out = json_pack("{s:s,s:s}", "tenant", r->tenant, "role", r->role);
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Reply *rep = NULL;
    if (admin) {
        const char *calls[2] = {"pool_status", "host_list"};
        const char *keys[2] = {"pool", "hosts"};
        for (int k = 0; k < 2; k++) {
            if (s_call(gw, r->tenant, true, "tt.admin", calls[k], &empty.base, NULL, &rep, err,
                       sizeof err) != 0) {
                json_decref(out);
                return s_error(r, 504, "BROKER_TIMEOUT", NULL, "%s", err);
            }
            if (rep->status == TTFLEET__STATUS__OK) {
                json_t *j = pbjson_encode(&rep->base);
                json_t *v = json_object_get(j, keys[k]);
                if (v && k == 1) /* a HostInfoList: its array */
                    v = json_object_get(v, "hosts");
                if (v)
                    json_object_set(out, keys[k], v);
                json_decref(j);
            }
            ttclient_reply_destroy(&rep);
        }
        json_object_set_new(out, "history", s_history_json(gw));
    }
    Ttfleet__EnvList list = TTFLEET__ENV_LIST__INIT;
    list.all = admin;
    if (s_call(gw, r->tenant, admin, "tt.env", "env_list", &list.base, NULL, &rep, err,
               sizeof err) != 0) {
        json_decref(out);
        return s_error(r, 504, "BROKER_TIMEOUT", NULL, "%s", err);
    }
    json_t *envs = json_array();
    if (rep->status == TTFLEET__STATUS__OK && rep->envs) {
        Ttfleet__EnvInfoList *l = rep->envs;
        size_t limit = l->n_envs < S_SCRAPE_MAX_ENVS ? l->n_envs : S_SCRAPE_MAX_ENVS;
        for (size_t i = 0; i < l->n_envs; i++) {
            Ttfleet__Reply *show = NULL;
            Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
            ref.name = l->envs[i]->name;
            /* with its VMs (env_show as the env's tenant), up to the bound */
            if (i < limit && strcmp(l->envs[i]->state, "queued") != 0 &&
                s_call(gw, l->envs[i]->tenant, false, "tt.env", "env_show", &ref.base, NULL, &show,
                       err, sizeof err) == 0 &&
                show->status == TTFLEET__STATUS__OK && show->env)
                json_array_append_new(envs, pbjson_encode(&show->env->base));
            else
                json_array_append_new(envs, pbjson_encode(&l->envs[i]->base));
            ttclient_reply_destroy(&show);
        }
    }
    ttclient_reply_destroy(&rep);
    json_object_set_new(out, "envs", envs);
    return s_send_json(r, 200, out, NULL);
}

/* ---- dashboard ---- */

static bool s_static_known(const char *name)
{
    for (size_t i = 0; i < dashboard_n_files; i++)
        if (strcmp(dashboard_files[i].name, name) == 0)
            return true;
    return false;
}

static enum MHD_Result s_static(gw_t *gw, s_request_t *r)
{
    const char *name = r->n_segments == 0 ? "index.html" : r->segments[0];
    if (r->n_segments > 1)
        name = "";
    for (size_t i = 0; i < dashboard_n_files; i++)
        if (strcmp(dashboard_files[i].name, name) == 0) {
            struct MHD_Response *resp = MHD_create_response_from_buffer(
                dashboard_files[i].len, (void *)dashboard_files[i].data, MHD_RESPMEM_PERSISTENT);
            if (!resp)
                return MHD_NO;
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, dashboard_files[i].type);
            MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
            MHD_add_response_header(
                resp, "Content-Security-Policy",
                "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
            MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
            /* /?token=T must not stay in a cache keyed by that URL */
            MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
            r->status = 200;
            enum MHD_Result ret = MHD_queue_response(r->conn, 200, resp);
            MHD_destroy_response(resp);
            return ret;
        }
    return s_error(r, 404, "NOT_FOUND", NULL, "no such page or route");
}

/* ---- dispatch ---- */

static bool s_match(const char *pattern, char **segments, int n)
{
    int k = 0;
    const char *p = pattern;
    if (strcmp(p, "/") == 0)
        return n == 0;
    while (*p == '/') {
        p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (k >= n)
            return false;
        if (!(len == 1 && *p == '*') &&
            (strlen(segments[k]) != len || strncmp(p, segments[k], len) != 0))
            return false;
        k++;
        p += len;
    }
    return k == n;
}

/* Splits url into r->segments (in place, in a copy); -1 if it has too many
 * or empty segments. Percent-decoding was done by libmicrohttpd. */
static int s_split(s_request_t *r, char *copy)
{
    r->n_segments = 0;
    if (copy[0] != '/')
        return -1;
    if (copy[1] == 0)
        return 0;
    char *p = copy + 1;
    while (p) {
        char *slash = strchr(p, '/');
        if (slash)
            *slash = 0;
        if (!*p || r->n_segments == S_MAX_SEGMENTS)
            return -1;
        r->segments[r->n_segments++] = p;
        p = slash ? slash + 1 : NULL;
    }
    return 0;
}

static enum MHD_Result s_dispatch(gw_t *gw, s_request_t *r, const char *url, const char *method)
{
    char copy[1024];
    if (strlen(url) >= sizeof copy)
        return s_error(r, 414, "URI_TOO_LONG", NULL, "the path is over %zu bytes", sizeof copy - 1);
    snprintf(copy, sizeof copy, "%s", url);
    if (s_split(r, copy) != 0)
        return s_error(r, 404, "NOT_FOUND", NULL, "no route for this path");
    char allow[128] = "";
    for (size_t i = 0; i < s_n_routes; i++) {
        const s_route_t *rt = &s_routes[i];
        if (!s_match(rt->path, r->segments, r->n_segments))
            continue;
        if (rt->fn == s_static && r->n_segments == 1 && !s_static_known(r->segments[0]))
            continue;
        /* HEAD only where a GET is cheap and ends: static files, metrics */
        bool get_like =
            strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0 && (rt->flags & S_PUBLIC);
        if (strcmp(rt->method, method) != 0 && !get_like) {
            if (!strstr(allow, rt->method))
                snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s",
                         allow[0] ? ", " : "", rt->method);
            continue;
        }
        r->route = rt;
        if (!(rt->flags & S_PUBLIC)) {
            const char *auth = s_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
            if (!auth)
                return s_error(r, 401, "UNAUTHENTICATED", NULL,
                               "missing Authorization: Bearer TOKEN header");
            if (strncasecmp(auth, "Bearer ", 7) != 0)
                return s_error(r, 401, "UNAUTHENTICATED", NULL,
                               "the Authorization header must be Bearer TOKEN");
            const char *token = auth + 7;
            while (*token == ' ')
                token++;
            if (tokens_lookup(gw->cfg.tokens, token, r->tenant, r->role) != 0)
                return s_error(r, 401, "UNAUTHENTICATED", NULL, "unknown or revoked token");
            if (atomic_load(&s_admin_bad)) {
                char why[300];
                pthread_mutex_lock(&s_admin_lock);
                snprintf(why, sizeof why, "%s", s_admin_why);
                pthread_mutex_unlock(&s_admin_lock);
                return s_error(r, 503, "UNAVAILABLE", NULL,
                               "ttgw is misconfigured: %s (ttgw --admin-tenant must be the "
                               "broker's)",
                               why);
            }
            if ((rt->flags & S_ADMIN) && strcmp(r->role, "admin") != 0)
                return s_error(r, 403, "FORBIDDEN", NULL, "%s needs the admin role", rt->name);
        }
        return rt->fn(gw, r);
    }
    if (allow[0])
        return s_send_json(r, 405,
                           json_pack("{s:{s:s,s:s}}", "error", "status", "METHOD_NOT_ALLOWED",
                                     "message", "method not allowed on this path; see Allow"),
                           allow);
    return s_error(r, 404, "NOT_FOUND", NULL, "no route for this path");
}

/* ---- request deadlines ---- */

/* receiving: a new request may start on conn (its clock starts now);
 * sending: its answer is ready to go (its clock starts now); neither: its
 * request is complete and being answered (no deadline). */
static void s_sock_mark(gw_t *gw, struct MHD_Connection *conn, bool receiving, bool sending)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    s_sock_t *sk = info ? info->socket_context : NULL;
    if (!sk)
        return;
    pthread_mutex_lock(&gw->socks_lock);
    sk->receiving = receiving;
    sk->sending = sending;
    if (receiving || sending)
        sk->start_ms = tt_mono_ms();
    pthread_mutex_unlock(&gw->socks_lock);
}

static void s_notify_conn(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    gw_t *gw = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        s_sock_t *sk = info ? calloc(1, sizeof *sk) : NULL;
        if (!sk) {
            *socket_context = NULL; /* no deadline for it; the idle timeout still holds */
            return;
        }
        sk->fd = info->connect_fd;
        sk->start_ms = tt_mono_ms();
        sk->receiving = true;
        pthread_mutex_lock(&gw->socks_lock);
        sk->next = gw->socks;
        if (gw->socks)
            gw->socks->prev = sk;
        gw->socks = sk;
        pthread_mutex_unlock(&gw->socks_lock);
        *socket_context = sk;
    } else if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
        /* libmicrohttpd closes the descriptor only after this returns, so
         * the sweeper (under the same lock) never shuts down a reused one */
        s_sock_t *sk = *socket_context;
        if (!sk)
            return;
        pthread_mutex_lock(&gw->socks_lock);
        if (sk->prev)
            sk->prev->next = sk->next;
        else
            gw->socks = sk->next;
        if (sk->next)
            sk->next->prev = sk->prev;
        pthread_mutex_unlock(&gw->socks_lock);
        free(sk);
        *socket_context = NULL;
    }
}

static void *s_sweeper(void *arg)
{
    gw_t *gw = arg;
    while (!atomic_load(&gw->sweeper_stop)) {
        usleep(S_SWEEP_MS * 1000);
        int64_t now = tt_mono_ms();
        unsigned cut = 0;
        pthread_mutex_lock(&gw->socks_lock);
        for (s_sock_t *sk = gw->socks; sk; sk = sk->next)
            if ((sk->receiving || sk->sending) && !sk->cut &&
                now - sk->start_ms > gw->cfg.request_timeout_ms) {
                shutdown(sk->fd, SHUT_RDWR);
                sk->cut = true;
                cut++;
            }
        pthread_mutex_unlock(&gw->socks_lock);
        if (cut) {
            metrics_deadline_cut(cut);
            fprintf(stderr, "ttgw: closed %u connection(s) that did not send a whole request "
                            "or take its answer within %d ms\n",
                    cut, gw->cfg.request_timeout_ms);
        }
    }
    return NULL;
}

static enum MHD_Result s_access(void *cls, struct MHD_Connection *conn, const char *url,
                                const char *method, const char *version, const char *upload_data,
                                size_t *upload_data_size, void **con_cls)
{
    gw_t *gw = cls;
    s_conn_t *st = *con_cls;
    if (!st) {
        st = calloc(1, sizeof *st);
        if (!st)
            return MHD_NO;
        st->start_ms = tt_mono_ms();
        *con_cls = st;
        const char *cl =
            MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (cl && strtoull(cl, NULL, 10) > gw->cfg.max_body)
            st->too_large = true;
        else
            return MHD_YES;
    }
    if (*upload_data_size > 0) {
        /* a body that grows past the limit is read and dropped to its end,
         * then refused: answering mid-upload would make the kernel reset
         * the connection over the unread bytes, losing the answer. But
         * only up to S_MAX_DRAIN times the limit: a chunked body that never
         * ends would hold the connection's thread for ever, so past that
         * the connection is closed without an answer. */
        if (st->too_large || st->len + *upload_data_size > gw->cfg.max_body) {
            st->too_large = true;
            free(st->body);
            st->body = NULL;
            st->len = 0;
            st->drained += *upload_data_size;
            if (st->drained > S_MAX_DRAIN * gw->cfg.max_body)
                return MHD_NO;
        } else {
            char *grown = realloc(st->body, st->len + *upload_data_size + 1);
            if (!grown)
                return MHD_NO;
            st->body = grown;
            memcpy(st->body + st->len, upload_data, *upload_data_size);
            st->len += *upload_data_size;
            st->body[st->len] = 0;
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    *upload_data_size = 0;
    s_sock_mark(gw, conn, false, false);
    s_request_t r = {.conn = conn, .state = st};
    enum MHD_Result ret;
    if (st->too_large)
        ret = s_error(&r, 413, "TOO_LARGE", NULL, "the request body is over %zu bytes",
                      gw->cfg.max_body);
    else
        ret = s_dispatch(gw, &r, url, method);
    /* the answer is queued: the client has request_timeout_ms to take it
     * (an event stream lasts; --max-streams bounds those) */
    if (!r.route || r.route->fn != s_events)
        s_sock_mark(gw, conn, false, true);
    metrics_request(r.route ? r.route->metric : s_unmatched_metric, r.status,
                    (double)(tt_mono_ms() - st->start_ms) / 1000.0);
    return ret;
}

static void s_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                        enum MHD_RequestTerminationCode toe)
{
    /* the next request on this connection has its own deadline from now */
    s_sock_mark(cls, conn, true, false);
    s_conn_t *st = *con_cls;
    if (st) {
        free(st->body);
        free(st);
        *con_cls = NULL;
    }
}

/* Percent-decoding of the path and the query: libmicrohttpd's, except
 * that a value with an escaped NUL (%00) is left as it came, so it cannot
 * be cut short ("/index.html%00.js", "/v1/envs/web%00x") and matches no
 * route or name instead. */
static size_t s_unescape(void *cls, struct MHD_Connection *conn, char *uri)
{
    (void)cls;
    (void)conn;
    for (const char *p = uri; (p = strchr(p, '%')) != NULL; p++)
        if (p[1] == '0' && p[2] == '0')
            return strlen(uri);
    return MHD_http_unescape(uri);
}

static void s_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

static void s_log(void *cls, const char *fmt, va_list ap)
{
    fputs("ttgw: http: ", stderr);
    vfprintf(stderr, fmt, ap);
}

/* The event log and its recorder thread. */
static int s_recorder_start(gw_t *self, char *err, size_t errlen)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s_log_cond, &ca);
    pthread_condattr_destroy(&ca);
    s_log_cap = self->cfg.event_log_max;
    s_evlog = calloc(s_log_cap, sizeof *s_evlog);
    s_log_head = s_log_n = 0;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    s_log_next_id = ((uint64_t)now.tv_sec * 1000 + (uint64_t)now.tv_nsec / 1000000) * 1000;
    if (!s_evlog) {
        snprintf(err, errlen, "out of memory for the event log");
        return -1;
    }
    ttclient_t *keys = s_client(self, self->cfg.admin_tenant, err, errlen);
    if (!keys)
        return -1;
    self->events_sub = zsock_new(ZMQ_SUB);
    if (self->events_sub) {
        ttclient_curve_apply(keys, self->events_sub);
        zsock_set_subscribe(self->events_sub, "");
        zsock_set_rcvhwm(self->events_sub, 100000);
        /* a broker cluster: one SUB connected to every member's events
         * endpoint (only the leader publishes), so a failover needs no
         * reconnect */
        char eps[2048];
        snprintf(eps, sizeof eps, "%s", self->cfg.events);
        char *save = NULL;
        for (char *ep = strtok_r(eps, ",", &save); ep && self->events_sub;
             ep = strtok_r(NULL, ",", &save))
            if (zsock_connect(self->events_sub, "%s", ep) != 0)
                zsock_destroy(&self->events_sub);
    }
    ttclient_destroy(&keys);
    if (!self->events_sub) {
        snprintf(err, errlen, "cannot connect to the broker's events endpoint %s",
                 self->cfg.events);
        return -1;
    }
    if (pthread_create(&self->recorder, NULL, s_recorder, self) != 0) {
        snprintf(err, errlen, "cannot start the event recorder thread");
        return -1;
    }
    self->recorder_started = true;
    if (pthread_create(&self->sampler, NULL, s_sampler, self) != 0) {
        snprintf(err, errlen, "cannot start the history sampler thread");
        return -1;
    }
    self->sampler_started = true;
    return 0;
}

gw_t *gw_start(const gw_config_t *cfg, const char *host, int port, const char *tls_cert,
               const char *tls_key, char *err, size_t errlen)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        snprintf(err, errlen, "listen address '%s' is not an IPv4 address", host);
        return NULL;
    }
    s_routes_build();
    for (size_t i = 0; i < s_n_routes; i++)
        s_routes[i].metric = metrics_route(s_routes[i].name);
    s_unmatched_metric = metrics_route("unmatched");
    gw_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    self->cfg = *cfg;
    pthread_mutex_init(&self->socks_lock, NULL);
    atomic_store(&self->sweeper_stop, false);
    atomic_store(&s_stopping, false);
    unsigned flags =
        MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (tls_cert)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem opts[] = {
        {MHD_OPTION_SOCK_ADDR, 0, &addr},
        {MHD_OPTION_CONNECTION_LIMIT, cfg->max_conns, NULL},
        {MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_conns_per_ip, NULL},
        {MHD_OPTION_CONNECTION_TIMEOUT, 60, NULL},
        {MHD_OPTION_CONNECTION_MEMORY_LIMIT, 64 * 1024, NULL},
        {MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)s_completed, self},
        {MHD_OPTION_NOTIFY_CONNECTION, (intptr_t)s_notify_conn, self},
        {MHD_OPTION_UNESCAPE_CALLBACK, (intptr_t)s_unescape, NULL},
        {tls_cert ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)tls_cert},
        {tls_cert ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)tls_key},
        {MHD_OPTION_END, 0, NULL},
    };
    /* the logger first, so that no message goes to libmicrohttpd's own */
    self->daemon =
        MHD_start_daemon(flags, 0, NULL, NULL, s_access, self, MHD_OPTION_EXTERNAL_LOGGER, s_log,
                         NULL, MHD_OPTION_ARRAY, opts, MHD_OPTION_END);
    if (!self->daemon) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or bad TLS files?)", host, port);
        pthread_mutex_destroy(&self->socks_lock);
        free(self);
        return NULL;
    }
    if (pthread_create(&self->sweeper, NULL, s_sweeper, self) != 0) {
        snprintf(err, errlen, "cannot start the request deadline thread");
        MHD_stop_daemon(self->daemon);
        pthread_mutex_destroy(&self->socks_lock);
        free(self);
        return NULL;
    }
    self->sweeper_started = true;
    if (s_recorder_start(self, err, errlen) != 0) {
        gw_stop(&self);
        return NULL;
    }
    return self;
}

int gw_port(gw_t *self)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(self->daemon, MHD_DAEMON_INFO_BIND_PORT);
    return info ? info->port : -1;
}

void gw_stop(gw_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    gw_t *self = *self_p;
    atomic_store(&s_stopping, true);
    atomic_store(&self->sweeper_stop, true);
    if (self->sweeper_started)
        pthread_join(self->sweeper, NULL);
    pthread_mutex_lock(&s_log_lock);
    pthread_cond_broadcast(&s_log_cond);
    pthread_mutex_unlock(&s_log_lock);
    MHD_stop_daemon(self->daemon);
    if (self->recorder_started)
        pthread_join(self->recorder, NULL);
    if (self->sampler_started)
        pthread_join(self->sampler, NULL);
    pthread_mutex_lock(&s_hist_lock);
    s_hist_head = s_hist_n = 0;
    zhashx_destroy(&s_ready_seen);
    pthread_mutex_unlock(&s_hist_lock);
    zsock_destroy(&self->events_sub);
    pthread_mutex_lock(&s_log_lock);
    for (size_t i = 0; i < s_log_n; i++)
        s_logged_free(&s_evlog[(s_log_head + i) % s_log_cap]);
    free(s_evlog);
    s_evlog = NULL;
    s_log_n = s_log_head = s_log_cap = 0;
    pthread_mutex_unlock(&s_log_lock);
    pthread_mutex_destroy(&self->socks_lock);
    pthread_mutex_lock(&s_scrape_lock);
    free(s_scrape_text);
    s_scrape_text = NULL;
    pthread_mutex_unlock(&s_scrape_lock);
    free(self);
    *self_p = NULL;
}
