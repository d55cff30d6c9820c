/*
 * usage: tenant usage and pool free capacity from the model. See usage.h.
 */
#include "usage.h"

#include <string.h>

bool usage_limited(const quota_t *q)
{
    return q->envs >= 0 || q->vms >= 0 || q->cpu >= 0 || q->mem >= 0 || q->disk >= 0;
}

void usage_of(broker_t *self, const char *tenant, quota_usage_t *out)
{
    memset(out, 0, sizeof *out);
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs)) {
        if (strcmp(e->tenant, tenant) != 0)
            continue;
        out->envs++;
        for (int i = 0; i < e->n_vms; i++) {
            const vm_t *vm = e->vms[i];
            out->vms++;
            out->disk += vm->disk;
            if (model_vm_holds_cpu(vm)) {
                out->cpu += vm->cpu;
                out->mem += vm->mem;
            }
        }
    }
}

static uint64_t s_left(uint64_t total, double ratio, uint64_t used)
{
    uint64_t cap = (uint64_t)((double)total * ratio);
    return cap > used ? cap - used : 0;
}

void usage_pool_free(broker_t *self, admq_res_t *out)
{
    memset(out, 0, sizeof *out);
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts)) {
        if (h->state != HOST_ONLINE || h->draining)
            continue;
        /* capacity still being freed on the host is not free yet */
        out->cpu += s_left(h->cpu_total, self->cfg.cpu_ratio, h->cpu_used + h->cpu_freeing);
        out->mem += s_left(h->mem_total, self->cfg.mem_ratio, h->mem_used + h->mem_freeing);
        out->disk += s_left(h->disk_total, self->cfg.disk_ratio, h->disk_used + h->disk_freeing);
        out->vms += h->vm_count < 65533 ? 65533 - h->vm_count : 0;
    }
}
