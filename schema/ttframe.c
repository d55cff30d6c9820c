/*
 * ttframe: building and checking MDP and TTW01 frames. See ttframe.h.
 */
#include "ttframe.h"

#include <stdlib.h>
#include <string.h>

zframe_t *ttframe_pack(const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    zframe_t *f = zframe_new(NULL, len);
    if (f && len)
        protobuf_c_message_pack(msg, zframe_data(f));
    return f;
}

uint8_t *ttframe_pack_buf(const ProtobufCMessage *msg, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf)
        protobuf_c_message_pack(msg, buf);
    return buf;
}

/* Appends [""][MDPC01][service][body] to msg and returns it. */
static zmsg_t *s_mdp_append(zmsg_t *msg, const char *service, const void *body, size_t len)
{
    if (!msg)
        return NULL;
    zmsg_addmem(msg, "", 0);
    zmsg_addstr(msg, TT_MDP_CLIENT);
    zmsg_addstr(msg, service);
    zmsg_addmem(msg, body, len);
    return msg;
}

zmsg_t *ttframe_mdp_request(const char *service, const void *body, size_t len)
{
    return s_mdp_append(zmsg_new(), service, body, len);
}

zmsg_t *ttframe_mdp_reply(zmsg_t *envelope, const char *service, const void *body, size_t len)
{
    return envelope ? s_mdp_append(zmsg_dup(envelope), service, body, len) : NULL;
}

int ttframe_mdp_reply_parse(zmsg_t *msg, const char *want_service, size_t max_body, zframe_t **body,
                            char *why, size_t whylen)
{
    if (zmsg_size(msg) != 4) {
        snprintf(why, whylen, "a reply of %zu frames instead of 4", zmsg_size(msg));
        return -1;
    }
    zframe_t *empty = zmsg_first(msg);
    zframe_t *header = zmsg_next(msg);
    zframe_t *service = zmsg_next(msg);
    zframe_t *b = zmsg_next(msg);
    if (zframe_size(empty) != 0) {
        snprintf(why, whylen, "a reply without the empty delimiter");
        return -1;
    }
    if (!zframe_streq(header, TT_MDP_CLIENT)) {
        snprintf(why, whylen, "a reply with a protocol header other than " TT_MDP_CLIENT);
        return -1;
    }
    if (!zframe_streq(service, want_service)) {
        snprintf(why, whylen, "a reply from a service other than %s", want_service);
        return -1;
    }
    if (zframe_size(b) > max_body) {
        snprintf(why, whylen, "a reply body of %zu bytes (limit %zu)", zframe_size(b), max_body);
        return -1;
    }
    *body = b;
    return 0;
}

zmsg_t *ttframe_worker_to(zframe_t *routing, int cmd, const void *body, size_t len)
{
    zmsg_t *msg = zmsg_new();
    if (!msg)
        return NULL;
    if (routing)
        zmsg_append(msg, &(zframe_t *){zframe_dup(routing)});
    zmsg_addmem(msg, "", 0);
    zmsg_addstr(msg, TT_WORKER_PROTO);
    uint8_t c = (uint8_t)cmd;
    zmsg_addmem(msg, &c, 1);
    if (body)
        zmsg_addmem(msg, body, len);
    return msg;
}

int ttframe_worker_parse(zmsg_t *msg, bool routed, size_t max_body, ttframe_worker_t *out)
{
    memset(out, 0, sizeof *out);
    size_t n = zmsg_size(msg);
    size_t base = routed ? 1 : 0;
    if (n < base + 3 || n > base + 4)
        return -1;
    zframe_t *f = zmsg_first(msg);
    if (routed) {
        out->routing = f;
        f = zmsg_next(msg);
    }
    zframe_t *empty = f;
    zframe_t *proto = zmsg_next(msg);
    zframe_t *cmdf = zmsg_next(msg);
    zframe_t *body = zmsg_next(msg);
    if (zframe_size(empty) != 0 || !zframe_streq(proto, TT_WORKER_PROTO) ||
        zframe_size(cmdf) != 1 || (body && zframe_size(body) > max_body))
        return -1;
    out->cmd = zframe_data(cmdf)[0];
    out->body = body;
    return 0;
}

int ttframe_send_nowait(zsock_t *sock, zmsg_t **msg_p)
{
    zmsg_t *msg = *msg_p;
    size_t n = zmsg_size(msg);
    size_t i = 0;
    int rc = 0;
    zframe_t *f;
    while ((f = zmsg_pop(msg))) {
        int flags = ZFRAME_DONTWAIT | (++i < n ? ZFRAME_MORE : 0);
        if (zframe_send(&f, sock, flags) != 0) {
            zframe_destroy(&f);
            rc = -1;
            break;
        }
    }
    zmsg_destroy(msg_p);
    return rc;
}
