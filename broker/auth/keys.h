/*
 * keys: client CURVE keys bound by the operator to a tenant and a role.
 *
 * A key's owner makes the keypair (`ttctl keygen`); only an admin (or the
 * operator at start, `ttbroker --admin-key`) says which tenant and role it
 * has, with `ttctl key add`. The binding lives in broker.db (table keys)
 * and in memory (broker_t.keys); nothing in the key's own certificate is
 * trusted. The ZAP handler (auth.c, its own thread) accepts a client
 * handshake only for a bound key and gives the Z85 public key as the user
 * id; the loop looks the key up for every message (keys_find), so a
 * removal refuses the very next request of a live connection and a role
 * change applies at once. The loop tells the ZAP thread about each change
 * through the actor's pipe ("KEY-SET", "KEY-DEL", "KEY-CLEAR"); no memory is
 * shared between the threads. A removal also asks the loop to drop every
 * events subscriber (broker_t.events_cut): PUB cannot drop one peer, and the
 * others reconnect and subscribe again through a new handshake, which the
 * removed key no longer passes.
 *
 * Depends on the model, persist, reply and the handler contract.
 */
#ifndef TT_BROKER_KEYS_H
#define TT_BROKER_KEYS_H

#include "handler.h"
#include "model.h"

typedef struct {
    char tenant[TT_MAX_NAME + 1];
    char role[8]; /* user, admin, gateway */
    int64_t added_at;
    char added_by[2 * TT_MAX_NAME + 16];
} key_rec_t;

/* Read the keys table into memory, then apply --admin-key and
 * --import-client-keys (staging rows into the open transaction) and send
 * the whole table to the ZAP thread. 0, or -1 with err. */
int keys_load(broker_t *self, char *err, size_t errlen);
/* Send the whole table to the ZAP thread (after it starts). */
void keys_auth_sync(broker_t *self);
/* The binding of a Z85 public key, NULL if it is not bound. */
const key_rec_t *keys_find(broker_t *self, const char *pub);
void keys_destroy(broker_t *self);

/* Handlers (dispatch.c table, all H_ADMIN). */
handler_fn keys_add;
handler_fn keys_list;
handler_fn keys_rm;

#endif
