/*
 * gw_events: the event log of the gateway and its Server-Sent Events
 * streams (GET /v1/events). See gw_int.h.
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

#define S_SSE_BLOCK 8192

static atomic_uint s_streams;

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
    while (!atomic_load(&gw_stopping)) {
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
    while (!atomic_load(&gw_stopping)) {
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

enum MHD_Result gw_events(gw_t *gw, gw_request_t *r)
{
    char bad[200];
    if (gw_query(r, NULL, NULL, bad, sizeof bad) != 0)
        return gw_error(r, 400, "BAD_REQUEST", NULL, "%s", bad);
    const char *topic = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "topic");
    const char *env = MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, "env");
    if (topic && !s_topic_valid(topic))
        return gw_error(r, 400, "BAD_REQUEST", NULL,
                        "topic must be a prefix such as env. or vm.state");
    if (env && !tt_name_valid(env))
        return gw_error(r, 400, "BAD_REQUEST", NULL, "env must be an env name");
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
            return gw_error(r, 400, "BAD_REQUEST", NULL,
                            "Last-Event-ID must be the decimal id of an event this gateway sent");
        last = v;
    }
    if (quota_take(QUOTA_STREAMS, r->tenant, gw->cfg.max_tenant_streams) != 0)
        return gw_error(r, 429, "TOO_MANY_STREAMS", NULL,
                        "tenant %s has %u event streams open already", r->tenant,
                        gw->cfg.max_tenant_streams);
    if (atomic_fetch_add(&s_streams, 1) >= gw->cfg.max_streams) {
        atomic_fetch_sub(&s_streams, 1);
        quota_give(QUOTA_STREAMS, r->tenant);
        return gw_error(r, 503, "TOO_MANY_STREAMS", NULL, "%u event streams are open already",
                        gw->cfg.max_streams);
    }
    s_stream_t *st = calloc(1, sizeof *st);
    if (!st) {
        atomic_fetch_sub(&s_streams, 1);
        quota_give(QUOTA_STREAMS, r->tenant);
        return gw_error(r, 500, "INTERNAL", NULL, "out of memory");
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

/* The event log and its recorder thread. */
int gw_recorder_start(gw_t *self, char *err, size_t errlen)
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
    ttclient_t *keys = gw_client(self, self->cfg.admin_tenant, err, errlen);
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
    if (pthread_create(&self->sampler, NULL, gw_sampler, self) != 0) {
        snprintf(err, errlen, "cannot start the history sampler thread");
        return -1;
    }
    self->sampler_started = true;
    return 0;
}

void gw_events_wake(void)
{
    pthread_mutex_lock(&s_log_lock);
    pthread_cond_broadcast(&s_log_cond);
    pthread_mutex_unlock(&s_log_lock);
}

void gw_events_free(void)
{
    pthread_mutex_lock(&s_log_lock);
    for (size_t i = 0; i < s_log_n; i++)
        s_logged_free(&s_evlog[(s_log_head + i) % s_log_cap]);
    free(s_evlog);
    s_evlog = NULL;
    s_log_n = s_log_head = s_log_cap = 0;
    pthread_mutex_unlock(&s_log_lock);
}
