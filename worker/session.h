/*
 * session: the worker's connection to its broker (TTW01 over a DEALER).
 *
 * It owns the socket and the liveness bookkeeping of schema/PROTOCOL.md:
 * the worker heartbeats when it has sent nothing for one interval, and
 * when the broker has been silent for `liveness` intervals (or says
 * DISCONNECT) the socket is thrown away and a new one connects, so no
 * stale queue or half-open TCP connection survives. Reconnecting never
 * touches VMs. The caller sends READY after every (re)connect.
 */
#ifndef TT_WORKER_SESSION_H
#define TT_WORKER_SESSION_H

#include <czmq.h>

typedef struct session_t session_t;

session_t *session_new(const char *endpoint, int heartbeat_ms, int liveness);
void session_destroy(session_t **self_p);

/* (Re)create the socket and connect. 0 / -1. */
/* Use CURVE: own is this worker's certificate (public + secret; the
 * session takes ownership), server_key the broker's public key (Z85). */
void session_set_curve(session_t *self, zcert_t **own_p, const char *server_key);

int session_connect(session_t *self);
zsock_t *session_sock(session_t *self);

/* Send [empty][TTW01][cmd][body]; takes *body_p (may be NULL). Never
 * blocks: a message the socket cannot take now is dropped with a log
 * line. 0 / -1. */
int session_send(session_t *self, int cmd, zframe_t **body_p);

/* Receive one message without waiting. 1 = *cmd and *msg_p set (the body
 * is the fourth frame of msg, or absent), 0 = nothing to read, -1 = a
 * malformed message was dropped. */
int session_recv(session_t *self, int *cmd, zmsg_t **msg_p);

/* True if the broker has been silent for liveness x heartbeat. */
bool session_expired(session_t *self, int64_t now_ms);
/* Send a HEARTBEAT if nothing was sent for one interval. */
void session_heartbeat(session_t *self, int64_t now_ms);
/* Milliseconds until the next heartbeat is due. */
int64_t session_next_ms(session_t *self, int64_t now_ms);

#endif
