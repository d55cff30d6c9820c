/*
 * gw: the HTTP side of ttgw — routes, authentication, the REST API over
 * 7/MDP, Server-Sent Events from the broker's events socket, /metrics and
 * the dashboard's static files.
 *
 * libmicrohttpd runs one thread per connection (bounded by max_conns, and
 * by max_conns_per_ip from one address); a request whose headers and body
 * are not whole within request_timeout_ms has its connection shut down by a
 * sweeper thread, so a slow sender cannot keep a slot past that. Every API
 * request makes its own libttclient connection to the broker, so a slow
 * request (an env create that waits for QEMU) holds only its own
 * connection and never delays another. An event stream holds its thread
 * and its SUB socket for as long as the client stays.
 */
#ifndef GW_H
#define GW_H

#include <stdbool.h>
#include <stddef.h>

#include "tokens.h"

typedef struct {
    const char *broker;       /* clients endpoint */
    const char *events;       /* events (PUB) endpoint */
    const char *key;          /* CURVE: our certificate (NULL: plain TCP) */
    const char *broker_key;   /* CURVE: the broker's public certificate */
    const char *admin_tenant; /* tenant the broker treats as admin (no CURVE) */
    int timeout_ms;           /* per attempt */
    int retries;
    size_t max_body; /* bytes of one request body */
    unsigned max_conns;
    unsigned max_conns_per_ip;   /* connections from one address */
    int request_timeout_ms;      /* headers and body of one request must arrive within */
    unsigned max_streams;        /* concurrent /v1/events streams */
    unsigned max_tenant_streams; /* ... of one tenant */
    unsigned max_inflight;       /* API requests of one tenant waiting on the broker */
    int sse_keepalive_ms;
    unsigned event_log_max; /* events kept for Last-Event-ID replay */
    unsigned event_log_age_s;
    unsigned history_interval_s;
    /* the dashboard's charts: a sample every ... */ /* ... and for at most this long */
    tokens_t *tokens;
} gw_config_t;

typedef struct _gw_t gw_t;

/* Starts serving on host:port (port 0 picks one; gw_port() says which).
 * tls_cert/tls_key are PEM text or NULL. Returns NULL with a reason. */
gw_t *gw_start(const gw_config_t *cfg, const char *host, int port, const char *tls_cert,
               const char *tls_key, char *err, size_t errlen);

int gw_port(gw_t *self);

/* Stops accepting, ends event streams, waits for connections; frees. */
void gw_stop(gw_t **self_p);

#endif
