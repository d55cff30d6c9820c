/*
 * engine_hollow: VMs that are only bookkeeping.
 *
 * Like Kubernetes' kubemark hollow nodes: a worker can hold thousands of
 * "VMs" that cost a database row each, so the broker, the protocol and the
 * resource accounting can be measured at scale on one machine. Nothing
 * runs, nothing is written to disk, a hollow VM never dies on its own. The
 * broker never picks this engine unless asked to.
 */
#include "engine.h"

static int s_ok(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    vm->pid = 0;
    vm->start_time = 0;
    return 0;
}

static bool s_is_alive(const engine_ctx_t *ctx, const vm_t *vm)
{
    return true;
}

static int s_adopt(const engine_ctx_t *ctx, vm_t *vm)
{
    return 0;
}

const engine_t engine_hollow = {
    .name = "hollow",
    /* runs nothing, so any image will do (benchmarks use catalog images) */
    .caps = TT_CAP_CATALOG,
    .prepare_disk = s_ok,
    .start = s_ok,
    .stop = s_ok,
    .pause = s_ok,
    .resume = s_ok,
    .is_alive = s_is_alive,
    .adopt = s_adopt,
    .destroy = s_ok,
};
