/*
 * Feeding an in-process broker_t, for the unit tests and fuzz targets that
 * run the real broker without sockets: a worker's frames, a client's
 * request, and the queued output dropped. Nothing here checks a result.
 */
#ifndef TT_TESTS_BROKER_FAKE_H
#define TT_TESTS_BROKER_FAKE_H

#include "broker.h"
#include "outq.h"

#include <stdio.h>
#include <stdlib.h>

/* The defaults, with state in dir and every endpoint on a free loopback
 * port. */
static inline void fake_broker_config(broker_config_t *cfg, const char *dir)
{
    broker_config_defaults(cfg);
    snprintf(cfg->state_dir, sizeof cfg->state_dir, "%s", dir);
    snprintf(cfg->clients_ep, sizeof cfg->clients_ep, "tcp://127.0.0.1:*");
    snprintf(cfg->workers_ep, sizeof cfg->workers_ep, "tcp://127.0.0.1:*");
    snprintf(cfg->events_ep, sizeof cfg->events_ep, "tcp://127.0.0.1:*");
}

/* broker_new, or NULL with the reason on stderr. */
static inline broker_t *fake_broker_new(const broker_config_t *cfg)
{
    char err[256];
    broker_t *b = broker_new(cfg, err, sizeof err);
    if (!b)
        fprintf(stderr, "broker_new: %s\n", err);
    return b;
}

/* One worker message [routing][""][TTW01][cmd][body], body left out when
 * NULL. */
static inline void fake_worker_send(broker_t *b, const char *routing, int cmd, const void *body,
                                    size_t len)
{
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, routing);
    zmsg_addmem(m, "", 0);
    zmsg_addstr(m, TT_WORKER_PROTO);
    uint8_t c = (uint8_t)cmd;
    zmsg_addmem(m, &c, 1);
    if (body)
        zmsg_addmem(m, body, len);
    broker_handle_worker(b, &m);
}

/* One client request [routing][""][MDPC][service][Request]. */
static inline void fake_client_send(broker_t *b, const char *routing, const char *service,
                                    const Ttfleet__Request *req)
{
    size_t len = ttfleet__request__get_packed_size(req);
    uint8_t *buf = malloc(len + 1);
    if (!buf)
        abort();
    ttfleet__request__pack(req, buf);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, routing);
    zmsg_addmem(m, "", 0);
    zmsg_addstr(m, TT_MDP_CLIENT);
    zmsg_addstr(m, service);
    zmsg_addmem(m, buf, len);
    free(buf);
    broker_handle_client(b, &m);
}

/* Drops every queued outgoing message. */
static inline void fake_drain(broker_t *b)
{
    zmsg_t *m;
    while ((m = outq_pop(b, NULL)))
        zmsg_destroy(&m);
}

#endif
