/*
 * auth: the ZAP handler actor (CURVE client and worker keys). Depends on
 * the model's broker_config_t only.
 */
#ifndef TT_BROKER_AUTH_H
#define TT_BROKER_AUTH_H

#include "model.h"

/* args: the broker_config_t */
void auth_actor(zsock_t *pipe, void *args);

#endif
