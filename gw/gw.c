/*
 * gw: see gw.h. This file is the HTTP front: the route table, matching a
 * request to its route, the token, request deadlines, start and stop; the
 * rest of the gateway is in gw_api.c, gw_events.c and gw_scrape.c
 * (gw_int.h).
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
#include "gw_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "tokens.h"
#include "ttproto.h"

#define S_MAX_DRAIN 4  /* times max_body of a too large body read to its end */
#define S_SWEEP_MS 200 /* how often request deadlines are checked */

/* The routes: one per operation of the registry (schema/ops.def) that has
 * a REST route, built from its row, then the gateway's own. */
static const gw_route_t s_own_routes[] = {
    {"GET", "/v1/whoami", "whoami", NULL, NULL, 0, {0}, {0}, 200, gw_whoami, 0},
    {"GET", "/v1/dashboard", "dashboard_state", NULL, NULL, 0, {0}, {0}, 200, gw_dashboard, 0},
    {"GET", "/v1/events", "events", NULL, NULL, 0, {0}, {"topic", "env"}, 200, gw_events, 0},
    {"GET", "/metrics", "metrics", NULL, NULL, GW_PUBLIC, {0}, {0}, 200, gw_metrics, 0},
    {"GET", "/", "dashboard", NULL, NULL, GW_PUBLIC, {0}, {"token"}, 200, gw_static, 0},
    {"GET", "/*", "dashboard", NULL, NULL, GW_PUBLIC, {0}, {0}, 200, gw_static, 0},
};
#define S_MAX_ROUTES 96
static gw_route_t s_routes[S_MAX_ROUTES];
static size_t s_n_routes;

static void s_routes_build(void)
{
    size_t n = 0;
    for (size_t i = 0; i < tt_ops_n && n < S_MAX_ROUTES; i++) {
        const tt_op_t *op = &tt_ops[i];
        if (!op->method)
            continue;
        gw_route_t *rt = &s_routes[n++];
        *rt = (gw_route_t){op->method, op->path,      op->field, op->field, op->service, 0, {0},
                           {0},        op->ok_status, gw_api,    0};
        if (op->flags & TT_OPF_ADMIN)
            rt->flags |= GW_ADMIN;
        if (op->flags & TT_OPF_BODY)
            rt->flags |= GW_BODY;
        if ((op->flags & TT_OPF_NEED_BODY) == TT_OPF_NEED_BODY)
            rt->flags |= GW_NEED_BODY;
        memcpy(rt->params, op->params, sizeof rt->params);
        memcpy(rt->query, op->query, sizeof rt->query);
    }
    for (size_t i = 0; i < sizeof s_own_routes / sizeof s_own_routes[0] && n < S_MAX_ROUTES; i++)
        s_routes[n++] = s_own_routes[i];
    s_n_routes = n;
}

static int s_unmatched_metric = -1;
atomic_bool gw_stopping;

/* Whether the broker's admin tenant is ours (--admin-tenant): checked on
 * every pool_status ttgw asks as admin (the history sampler, /metrics).
 * While they differ every token request is refused: a user token in the
 * broker's real admin tenant would act in it, and admin ops would go out
 * in a tenant the broker does not treat as admin. */
static atomic_bool s_admin_bad;
static pthread_mutex_t s_admin_lock = PTHREAD_MUTEX_INITIALIZER;
static char s_admin_why[300];

void gw_admin_note(gw_t *gw, const Ttfleet__Reply *pool)
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
static int s_split(gw_request_t *r, char *copy)
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
        if (!*p || r->n_segments == GW_MAX_SEGMENTS)
            return -1;
        r->segments[r->n_segments++] = p;
        p = slash ? slash + 1 : NULL;
    }
    return 0;
}

static enum MHD_Result s_dispatch(gw_t *gw, gw_request_t *r, const char *url, const char *method)
{
    char copy[1024];
    if (strlen(url) >= sizeof copy)
        return gw_error(r, 414, "URI_TOO_LONG", NULL, "the path is over %zu bytes",
                        sizeof copy - 1);
    snprintf(copy, sizeof copy, "%s", url);
    if (s_split(r, copy) != 0)
        return gw_error(r, 404, "NOT_FOUND", NULL, "no route for this path");
    char allow[128] = "";
    for (size_t i = 0; i < s_n_routes; i++) {
        const gw_route_t *rt = &s_routes[i];
        if (!s_match(rt->path, r->segments, r->n_segments))
            continue;
        if (rt->fn == gw_static && r->n_segments == 1 && !gw_static_known(r->segments[0]))
            continue;
        /* HEAD only where a GET is cheap and ends: static files, metrics */
        bool get_like = strcmp(rt->method, "GET") == 0 && strcmp(method, "HEAD") == 0 &&
                        (rt->flags & GW_PUBLIC);
        if (strcmp(rt->method, method) != 0 && !get_like) {
            if (!strstr(allow, rt->method))
                snprintf(allow + strlen(allow), sizeof allow - strlen(allow), "%s%s",
                         allow[0] ? ", " : "", rt->method);
            continue;
        }
        r->route = rt;
        if (!(rt->flags & GW_PUBLIC)) {
            const char *auth = gw_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
            if (!auth)
                return gw_error(r, 401, "UNAUTHENTICATED", NULL,
                                "missing Authorization: Bearer TOKEN header");
            if (strncasecmp(auth, "Bearer ", 7) != 0)
                return gw_error(r, 401, "UNAUTHENTICATED", NULL,
                                "the Authorization header must be Bearer TOKEN");
            const char *token = auth + 7;
            while (*token == ' ')
                token++;
            if (tokens_lookup(gw->cfg.tokens, token, r->tenant, r->role) != 0)
                return gw_error(r, 401, "UNAUTHENTICATED", NULL, "unknown or revoked token");
            if (atomic_load(&s_admin_bad)) {
                char why[300];
                pthread_mutex_lock(&s_admin_lock);
                snprintf(why, sizeof why, "%s", s_admin_why);
                pthread_mutex_unlock(&s_admin_lock);
                return gw_error(r, 503, "UNAVAILABLE", NULL,
                                "ttgw is misconfigured: %s (ttgw --admin-tenant must be the "
                                "broker's)",
                                why);
            }
            if ((rt->flags & GW_ADMIN) && strcmp(r->role, "admin") != 0)
                return gw_error(r, 403, "FORBIDDEN", NULL, "%s needs the admin role", rt->name);
        }
        return rt->fn(gw, r);
    }
    if (allow[0])
        return gw_send_json(r, 405,
                            json_pack("{s:{s:s,s:s}}", "error", "status", "METHOD_NOT_ALLOWED",
                                      "message", "method not allowed on this path; see Allow"),
                            allow);
    return gw_error(r, 404, "NOT_FOUND", NULL, "no route for this path");
}

/* ---- request deadlines ---- */

/* receiving: a new request may start on conn (its clock starts now);
 * sending: its answer is ready to go (its clock starts now); neither: its
 * request is complete and being answered (no deadline). */
static void s_sock_mark(gw_t *gw, struct MHD_Connection *conn, bool receiving, bool sending)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    gw_sock_t *sk = info ? info->socket_context : NULL;
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
        gw_sock_t *sk = info ? calloc(1, sizeof *sk) : NULL;
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
        gw_sock_t *sk = *socket_context;
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
        for (gw_sock_t *sk = gw->socks; sk; sk = sk->next)
            if ((sk->receiving || sk->sending) && !sk->cut &&
                now - sk->start_ms > gw->cfg.request_timeout_ms) {
                shutdown(sk->fd, SHUT_RDWR);
                sk->cut = true;
                cut++;
            }
        pthread_mutex_unlock(&gw->socks_lock);
        if (cut) {
            metrics_deadline_cut(cut);
            fprintf(stderr,
                    "ttgw: closed %u connection(s) that did not send a whole request "
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
    gw_conn_t *st = *con_cls;
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
    gw_request_t r = {.conn = conn, .state = st};
    enum MHD_Result ret;
    if (st->too_large)
        ret = gw_error(&r, 413, "TOO_LARGE", NULL, "the request body is over %zu bytes",
                       gw->cfg.max_body);
    else
        ret = s_dispatch(gw, &r, url, method);
    /* the answer is queued: the client has request_timeout_ms to take it
     * (an event stream lasts; --max-streams bounds those) */
    if (!r.route || r.route->fn != gw_events)
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
    gw_conn_t *st = *con_cls;
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
    atomic_store(&gw_stopping, false);
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
    if (gw_recorder_start(self, err, errlen) != 0) {
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
    atomic_store(&gw_stopping, true);
    atomic_store(&self->sweeper_stop, true);
    if (self->sweeper_started)
        pthread_join(self->sweeper, NULL);
    gw_events_wake();
    MHD_stop_daemon(self->daemon);
    if (self->recorder_started)
        pthread_join(self->recorder, NULL);
    if (self->sampler_started)
        pthread_join(self->sampler, NULL);
    zsock_destroy(&self->events_sub);
    gw_events_free();
    pthread_mutex_destroy(&self->socks_lock);
    gw_scrape_free();
    free(self);
    *self_p = NULL;
}
