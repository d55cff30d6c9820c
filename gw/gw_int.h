/*
 * gw_int: what the parts of the gateway share (gw.c: the HTTP front, the
 * routes, request deadlines, start and stop; gw_api.c: responses, broker
 * calls and the REST operations; gw_events.c: the event log and its
 * Server-Sent Events streams; gw_scrape.c: /metrics, the pool's history,
 * the dashboard's state and files). Private to gw/.
 */
#ifndef GW_INT_H
#define GW_INT_H

#include "gw.h"

#include <czmq.h>
#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "ttclient.h"
#include "ttops.h"
#include "ttproto.h"

#define GW_MAX_SEGMENTS 8

/* route flags */
#define GW_ADMIN 1u /* needs the admin role */
#define GW_BODY 2u  /* takes a JSON body (optional unless GW_NEED_BODY) */
#define GW_NEED_BODY 4u
#define GW_PUBLIC 8u /* no token needed */

/* One TCP connection, from accept to close: the deadline of the request it
 * is receiving, and of the answer it is sending. The sweeper shuts down the
 * socket of a connection whose request (headers and body) is not complete
 * request_timeout_ms after the connection opened or its previous answer was
 * sent, or whose answer (an event stream excepted) the client has not taken
 * request_timeout_ms after it was ready (a slow reader of pipelined answers
 * would hold the slot for ever); the connection's own thread then sees the
 * end of the stream and libmicrohttpd closes it. */
typedef struct gw_sock {
    struct gw_sock *prev, *next;
    int fd;
    int64_t start_ms;
    bool receiving; /* the current request is not complete yet */
    bool sending;   /* its answer is ready and not all sent yet (since start_ms) */
    bool cut;       /* the sweeper shut it down */
} gw_sock_t;

struct _gw_t {
    gw_config_t cfg;
    struct MHD_Daemon *daemon;
    pthread_mutex_t socks_lock; /* socks, and every gw_sock_t's fields */
    gw_sock_t *socks;
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
} gw_conn_t;

typedef struct gw_request gw_request_t;
typedef enum MHD_Result (*gw_handler_fn)(gw_t *gw, gw_request_t *r);

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
    gw_handler_fn fn;
    int metric; /* index from metrics_route() */
} gw_route_t;

struct gw_request {
    struct MHD_Connection *conn;
    gw_conn_t *state;
    const gw_route_t *route;
    char *segments[GW_MAX_SEGMENTS];
    int n_segments;
    char tenant[TT_MAX_NAME + 1];
    char role[16];
    int status;      /* HTTP status sent */
    int retry_after; /* seconds for Retry-After; 0: 1 s on 429/503; -1: none */
};

/* true from gw_stop on: the threads and streams end */
extern atomic_bool gw_stopping;

/* gw.c: the broker's verdict on our admin tenant, from a pool_status reply */
void gw_admin_note(gw_t *gw, const Ttfleet__Reply *pool);

/* gw_api.c */
enum MHD_Result gw_send(gw_request_t *r, int status, const char *type, char *text, size_t len,
                        enum MHD_ResponseMemoryMode mode, const char *allow);
enum MHD_Result gw_send_json(gw_request_t *r, int status, json_t *body, const char *allow);
/* Every error: {"error": {"status": NAME, "message": TEXT[, "request_id": ID]}}. */
enum MHD_Result gw_error(gw_request_t *r, int status, const char *name, const char *request_id,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
ttclient_t *gw_client(gw_t *gw, const char *tenant, char *err, size_t errlen);
int gw_call(gw_t *gw, const char *tenant, bool as_admin, const char *service, const char *op_name,
            ProtobufCMessage *op, const char *request_id, Ttfleet__Reply **reply_p, char *err,
            size_t errlen);
int gw_query(gw_request_t *r, json_t *obj, const ProtobufCMessageDescriptor *desc, char *bad,
             size_t badlen);
const char *gw_header(gw_request_t *r, const char *name);
enum MHD_Result gw_api(gw_t *gw, gw_request_t *r);
enum MHD_Result gw_whoami(gw_t *gw, gw_request_t *r);

/* gw_events.c: the recorder and the sampler threads start; wake the
 * streams at stop; free the log once every thread ended */
int gw_recorder_start(gw_t *self, char *err, size_t errlen);
enum MHD_Result gw_events(gw_t *gw, gw_request_t *r);
void gw_events_wake(void);
void gw_events_free(void);

/* gw_scrape.c */
enum MHD_Result gw_metrics(gw_t *gw, gw_request_t *r);
enum MHD_Result gw_dashboard(gw_t *gw, gw_request_t *r);
enum MHD_Result gw_static(gw_t *gw, gw_request_t *r);
/* whether name is one of the dashboard's files */
bool gw_static_known(const char *name);
void *gw_sampler(void *arg);
void gw_scrape_free(void);

#endif
