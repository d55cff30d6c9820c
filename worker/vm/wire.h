/*
 * wire: the worker's side of TTW01 (schema/PROTOCOL.md) — building the
 * frames it sends and checking every frame and VmSpec it receives.
 *
 * Nothing from the broker is trusted: frame count, the empty delimiter,
 * the protocol header, the command byte and the body size are checked
 * before anything is decoded, and a decoded VmSpec is range-checked field
 * by field before the converge logic sees it.
 */
#ifndef TT_WORKER_WIRE_H
#define TT_WORKER_WIRE_H

#include <czmq.h>

#include "ttproto.h"

/* Check a message from the broker: [empty][TTW01][cmd][body?]. On success
 * sets *cmd and *body (borrowed from msg, NULL if there is none).
 * 0 / -1 with a reason. */
int wire_parse(zmsg_t *msg, int *cmd, zframe_t **body, char *err, size_t errlen);

/* A message [empty][TTW01][cmd][body]; body may be NULL. Takes ownership
 * of *body_p. */
zmsg_t *wire_msg(int cmd, zframe_t **body_p);

/* Pack a protobuf message into a new frame; NULL on allocation failure. */
zframe_t *wire_pack(const ProtobufCMessage *m);

/* Full check of one VmSpec: vm_id range and desired state always; for a
 * VM that should exist also names, hardware ranges, ip, mac, ports and
 * expiry. 0 / -1 with a reason. */
int wire_spec_validate(const Ttfleet__VmSpec *spec, char *err, size_t errlen);

/* True if s is an IPv4 address in dotted-quad form. */
bool wire_ip_valid(const char *s);
/* True if s is a MAC "xx:xx:xx:xx:xx:xx" (hex, either case). */
bool wire_mac_valid(const char *s);
/* True if s is "tenant/name" or "name" made of valid names. */
bool wire_env_valid(const char *s);

#endif
