/*
 * engine: the table of compiled-in engines and the path rule they share.
 *
 * Every engine keeps a VM's files under <state>/vms/<id>; the worker's
 * startup scan uses the same rule to find directories left by a crash.
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>

static const engine_t *const s_engines[] = {&engine_process, &engine_hollow};

const engine_t *engine_find(const char *name)
{
    for (size_t i = 0; i < sizeof s_engines / sizeof *s_engines; i++)
        if (name && strcmp(name, s_engines[i]->name) == 0)
            return s_engines[i];
    return NULL;
}

int engine_vm_path(const engine_ctx_t *ctx, uint32_t vm_id, const char *leaf, char *buf, size_t len)
{
    int n = leaf ? snprintf(buf, len, "%s/vms/%u/%s", ctx->state_dir, vm_id, leaf)
                 : snprintf(buf, len, "%s/vms/%u", ctx->state_dir, vm_id);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}
