/*
 * reaper: deletes envs whose lease ran out, a bounded number per tick.
 * Depends on the model and env_ops.
 */
#ifndef TT_BROKER_REAPER_H
#define TT_BROKER_REAPER_H

#include "model.h"

void reaper_run(broker_t *self, int64_t now);

#endif
