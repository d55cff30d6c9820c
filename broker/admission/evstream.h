/*
 * evstream: tenant-private events over a ROUTER socket.
 *
 * Why not PUB: a PUB socket filters on the subscriber's prefix and cannot
 * know who subscribed; under CURVE any valid key could subscribe to "" and
 * read every tenant's events. Here the broker owns a ROUTER socket, knows
 * each subscriber by its routing id, and takes its tenant from the key:
 *
 *   CURVE on:  the ZAP handler (auth.c, domain "clients") accepts only
 *              keys the operator bound and gives the Z85 public key as the
 *              user id; every message carries it (frame metadata
 *              "User-Id"), and cfg.identify (the broker passes keys.c's
 *              binding) turns it into a tenant and a role, at every
 *              SUBSCRIBE. The tenant in the SUBSCRIBE body is ignored.
 *   CURVE off: the broker only runs so on loopback endpoints (or with
 *              --insecure), like the clients endpoint; the tenant is taken
 *              from the SUBSCRIBE body, admin when it is the admin tenant.
 *
 * Frames (a DEALER client; the ROUTER adds the routing id in front):
 *   client -> broker  [TTE01][0x01 SUBSCRIBE][EventSubscribe]
 *                     [TTE01][0x04 HEARTBEAT]
 *                     [TTE01][0x05 UNSUBSCRIBE]
 *   broker -> client  [TTE01][0x02 SUBSCRIBED][EventSubscribed]
 *                     [TTE01][0x03 EVENT][topic][Event]
 *                     [TTE01][0x04 HEARTBEAT]
 * A subscriber receives an event when it is an admin or the event's tenant
 * is its own, and the topic starts with one of its prefixes (none = all),
 * and (when it gave one) the env matches. Host events (no tenant) go to
 * admins only.
 *
 * Liveness: a subscriber that sends nothing (SUBSCRIBE or HEARTBEAT) for
 * expiry_ms is forgotten; the broker sends HEARTBEAT when it sent nothing
 * for heartbeat_ms, so clients can detect a dead broker and re-subscribe.
 *
 * Never blocking the loop: the socket is ROUTER_MANDATORY with SNDHWM =
 * queue_max per subscriber, and every send is non-blocking. A subscriber
 * whose queue is full loses the event (counted per subscriber and in
 * total, reported in its next SUBSCRIBED and by evstream_stats); one that
 * vanished (EHOSTUNREACH) is forgotten.
 *
 * Commit order: evstream_publish only stages the event; the loop calls
 * evstream_flush after its commit (or evstream_discard after a rollback),
 * so no one hears of a change that did not persist. The staging list is
 * bounded by pending_max.
 *
 * Depends on CZMQ/libzmq and schema/ only.
 */
#ifndef TT_EVSTREAM_H
#define TT_EVSTREAM_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "ttproto.h" /* TT_EVENTS_PROTO, TT_E_* */

#define EVSTREAM_MAX_TOPICS 16

typedef struct evstream_t evstream_t;

typedef struct {
    bool curve;            /* tenant from User-Id metadata, through identify */
    /* CURVE: the tenant and role bound to a ZAP user id (a Z85 public key):
     * 0, or -1 when the key is not bound (refused FORBIDDEN). Required
     * under CURVE; role "gateway" keys subscribe as users of their tenant. */
    int (*identify)(void *arg, const char *user_id, char *tenant, bool *admin);
    void *identify_arg;
    char admin_tenant[65]; /* without CURVE: this tenant is admin */
    int max_subscribers;   /* default 1024 */
    int queue_max;         /* messages per subscriber (SNDHWM), default 1000 */
    int heartbeat_ms;      /* default 1000 */
    int expiry_ms;         /* default 10000 */
    int pending_max;       /* events staged before a flush, default 10000 */
} evstream_config_t;

typedef struct {
    int subscribers;
    uint64_t sent, dropped, pending_dropped;
} evstream_stats_t;

void evstream_config_defaults(evstream_config_t *cfg);

/* A stream on router (not owned; create it with zsock_new_router(NULL),
 * call this, then bind: the HWM applies to pipes made after it). */
evstream_t *evstream_new(zsock_t *router, const evstream_config_t *cfg);
void evstream_destroy(evstream_t **self_p);

/* One message read from the router (taken, destroyed). Bad messages are
 * dropped; a bad SUBSCRIBE is answered with a SUBSCRIBED carrying the
 * status. Returns 0, or -1 when the message was refused. */
int evstream_handle(evstream_t *self, zmsg_t **msg_p, int64_t now_ms);

/* Stage an event for tenant ("" or NULL = a pool event, admins only) and
 * env (may be NULL). event is the packed Event (copied). */
void evstream_publish(evstream_t *self, const char *tenant, const char *env, const char *topic,
                      const uint8_t *event, size_t len);
/* Send what is staged (after commit) / forget it (after rollback). */
void evstream_flush(evstream_t *self, int64_t now_ms);
void evstream_discard(evstream_t *self);

/* Expire silent subscribers and send heartbeats. */
void evstream_tick(evstream_t *self, int64_t now_ms);

void evstream_stats(evstream_t *self, evstream_stats_t *out);

#endif
