/*
 * ttframe: the one home of ttfleet's wire frames.
 *
 * Clients speak 7/MDP (client side, MDPC01) to the broker:
 *   request  [""][MDPC01][service][Request body]           (DEALER/REQ side)
 *   reply    [routing...][""][MDPC01][service][Reply body] (ROUTER side)
 * Workers speak TTW01:
 *   [routing (ROUTER side only)][""][TTW01][command byte][body?]
 * Bodies are protobuf messages packed straight into a frame.
 *
 * Everything that builds or checks one of these frames calls this module:
 * the broker (broker/core/outq.c, broker.c, workers.c), the worker
 * (worker/vm/wire.c), libttclient and ttbench. Depends on CZMQ and the
 * generated protobuf code only.
 */
#ifndef TT_TTFRAME_H
#define TT_TTFRAME_H

#include <czmq.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>

#include "ttproto.h"

/* Pack a protobuf message into a new frame; NULL when out of memory. */
zframe_t *ttframe_pack(const ProtobufCMessage *msg);
/* Pack into a malloc'd buffer (*len set); NULL when out of memory. */
uint8_t *ttframe_pack_buf(const ProtobufCMessage *msg, size_t *len);

/* A client request [""][MDPC01][service][body] (REQ/DEALER side). */
zmsg_t *ttframe_mdp_request(const char *service, const void *body, size_t len);
/* A reply to a client: a copy of envelope (routing frames), then
 * [""][MDPC01][service][body]. NULL if envelope is NULL. */
zmsg_t *ttframe_mdp_reply(zmsg_t *envelope, const char *service, const void *body, size_t len);
/* Check a reply as a DEALER client receives it, [""][MDPC01][service][body]
 * from want_service with a body of at most max_body bytes: 0 with the body
 * frame (borrowed), or -1 with the reason in why. */
int ttframe_mdp_reply_parse(zmsg_t *msg, const char *want_service, size_t max_body, zframe_t **body,
                            char *why, size_t whylen);

/* A TTW01 frame; routing NULL for the worker's (DEALER) side. */
zmsg_t *ttframe_worker_to(zframe_t *routing, int cmd, const void *body, size_t len);
typedef struct {
    zframe_t *routing; /* borrowed; NULL when parsed without routing */
    int cmd;
    zframe_t *body; /* borrowed; NULL if the command has none */
} ttframe_worker_t;
/* Check a TTW01 message; routed says a routing frame comes first. Bodies
 * over max_body are refused. 0 / -1. */
int ttframe_worker_parse(zmsg_t *msg, bool routed, size_t max_body, ttframe_worker_t *out);

/* Send every frame without blocking and destroy the message: a slow peer
 * costs the message, never a stalled loop. 0, or -1 if a frame failed. */
int ttframe_send_nowait(zsock_t *sock, zmsg_t **msg_p);

#endif
