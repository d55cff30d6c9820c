/*
 * gw_api: responses, broker calls and the REST operations of the gateway
 * (gw_int.h; the request path is described in gw.c).
 */
#include "gw_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dashboard_files.h"
#include "metrics.h"
#include "pbjson.h"
#include "quota.h"
#include "status.h"
#include "ttproto.h"

#define S_MAX_QUERY 8

/* ---- responses ---- */

enum MHD_Result gw_send(gw_request_t *r, int status, const char *type, char *text, size_t len,
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

enum MHD_Result gw_send_json(gw_request_t *r, int status, json_t *body, const char *allow)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    if (!text)
        return MHD_NO;
    return gw_send(r, status, "application/json", text, strlen(text), MHD_RESPMEM_MUST_FREE, allow);
}

enum MHD_Result gw_error(gw_request_t *r, int status, const char *name, const char *request_id,
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
    return gw_send_json(r, status, json_pack("{s:o}", "error", err), NULL);
}

/* ---- broker calls ---- */

ttclient_t *gw_client(gw_t *gw, const char *tenant, char *err, size_t errlen)
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
int gw_call(gw_t *gw, const char *tenant, bool as_admin, const char *service, const char *op_name,
            ProtobufCMessage *op, const char *request_id, Ttfleet__Reply **reply_p, char *err,
            size_t errlen)
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
    ttclient_t *c = gw_client(gw, tenant, err, errlen);
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
    const gw_route_t *route;
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
int gw_query(gw_request_t *r, json_t *obj, const ProtobufCMessageDescriptor *desc, char *bad,
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

const char *gw_header(gw_request_t *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

enum MHD_Result gw_api(gw_t *gw, gw_request_t *r)
{
    const gw_route_t *rt = r->route;
    const char *idem = gw_header(r, "Idempotency-Key");
    if (idem && !tt_request_id_valid(idem))
        return gw_error(r, 400, "BAD_REQUEST", NULL,
                        "Idempotency-Key must be 1..%d printable characters", TT_MAX_REQUEST_ID);

    const ProtobufCFieldDescriptor *opf =
        protobuf_c_message_descriptor_get_field_by_name(&ttfleet__request__descriptor, rt->op);
    const ProtobufCMessageDescriptor *desc = opf->descriptor;

    /* the op's fields as JSON: body, then path parameters, then query */
    json_t *obj;
    if (r->state->len > 0) {
        if (!(rt->flags & GW_BODY))
            return gw_error(r, 400, "BAD_REQUEST", NULL, "%s %s takes no request body", rt->method,
                            rt->path);
        const char *type = gw_header(r, MHD_HTTP_HEADER_CONTENT_TYPE);
        if (type && strncasecmp(type, "application/json", 16) != 0)
            return gw_error(r, 415, "UNSUPPORTED_MEDIA_TYPE", NULL,
                            "the body must be application/json, not %.60s", type);
        json_error_t jerr;
        obj = json_loadb(r->state->body, r->state->len, JSON_REJECT_DUPLICATES, &jerr);
        if (!obj)
            return gw_error(r, 400, "INVALID_JSON", NULL, "malformed JSON at line %d column %d: %s",
                            jerr.line, jerr.column, jerr.text);
        if (!json_is_object(obj)) {
            json_decref(obj);
            return gw_error(r, 400, "INVALID_JSON", NULL, "the body must be a JSON object");
        }
    } else {
        if (rt->flags & GW_NEED_BODY)
            return gw_error(r, 400, "BAD_REQUEST", NULL, "%s %s needs a JSON body", rt->method,
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
            return gw_error(r, 400, "BAD_REQUEST", NULL,
                            "field '%s' comes from the path; leave it out of the body",
                            rt->params[i]);
        }
        json_object_set_new(obj, rt->params[i], json_string(seg ? seg : ""));
        if (!json_object_get(obj, rt->params[i])) {
            json_decref(obj);
            return gw_error(r, 400, "BAD_REQUEST", NULL, "path segment is not UTF-8");
        }
    }
    char bad[600];
    if (gw_query(r, obj, desc, bad, sizeof bad) != 0) {
        json_decref(obj);
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    }
    pbjson_arena_t *arena = pbjson_arena_new();
    ProtobufCMessage *op = arena ? pbjson_decode(desc, obj, arena, bad, sizeof bad) : NULL;
    json_decref(obj);
    if (!op) {
        if (!arena)
            snprintf(bad, sizeof bad, "out of memory");
        pbjson_arena_destroy(&arena);
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    }

    /* who the broker sees */
    bool admin = strcmp(r->role, "admin") == 0;
    const char *tenant = r->tenant;
    if (strcmp(rt->op, "env_list") == 0 && ((Ttfleet__EnvList *)op)->all) {
        if (!admin) {
            pbjson_arena_destroy(&arena);
            return gw_error(r, 403, "FORBIDDEN", NULL, "all=true needs the admin role");
        }
        tenant = gw->cfg.admin_tenant;
    }
    if (rt->flags & GW_ADMIN)
        tenant = gw->cfg.admin_tenant;
    if (strcmp(rt->op, "pool_status") == 0 && admin)
        tenant = gw->cfg.admin_tenant;

    /* per-tenant requests in flight: the token's tenant, whatever tenant
     * the broker sees, so admin-role tokens are bounded too */
    if (quota_take(QUOTA_REQUESTS, r->tenant, gw->cfg.max_inflight) != 0) {
        pbjson_arena_destroy(&arena);
        return gw_error(r, 429, "TOO_MANY_REQUESTS", NULL,
                        "tenant %s has %u requests in flight already", r->tenant,
                        gw->cfg.max_inflight);
    }
    Ttfleet__Reply *reply = NULL;
    char err[600];
    int rc = gw_call(gw, tenant, tenant == gw->cfg.admin_tenant, rt->service, rt->op, op, idem,
                     &reply, err, sizeof err);
    quota_give(QUOTA_REQUESTS, r->tenant);
    pbjson_arena_destroy(&arena);
    if (rc != 0)
        return gw_error(r, 504, "BROKER_TIMEOUT", idem, "%s", err);
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
        ret = gw_error(r, http, name, reply->request_id, "%s",
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
        ret = gw_send_json(r, reply->status == TTFLEET__STATUS__QUEUED ? http : rt->ok_status, body,
                           NULL);
    }
    ttclient_reply_destroy(&reply);
    return ret;
}

/* The token's tenant and role, so a client (the dashboard) knows what it
 * may do without trying and failing. */
enum MHD_Result gw_whoami(gw_t *gw, gw_request_t *r)
{
    char bad[200];
    if (gw_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    return gw_send_json(r, 200, json_pack("{s:s,s:s}", "tenant", r->tenant, "role", r->role), NULL);
}
