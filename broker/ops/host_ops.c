/*
 * host_ops: host and pool requests. See host_ops.h.
 */
#include "host_ops.h"
#include "op.h"
#include "outq.h"
#include "persist.h"
#include "replace.h"
#include "reply.h"
#include "scheduler.h"
#include "stats.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int s_hosts(handler_ctx_t *c, const char *id)
{
    broker_t *self = c->self;
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (id) {
        host_t *h = model_host_get(self, id);
        if (!h) {
            reply_arena_free(&a);
            char msg[128];
            snprintf(msg, sizeof msg, "no host '%s'", id);
            return handler_fail_norec(c, TTFLEET__STATUS__NOT_FOUND, msg);
        }
        rep.result_case = TTFLEET__REPLY__RESULT_HOST;
        rep.host = reply_host_info(&a, h);
    } else {
        Ttfleet__HostInfoList *hl = reply_alloc(&a, sizeof *hl);
        size_t n = zhashx_size(self->hosts);
        if (hl) {
            ttfleet__host_info_list__init(hl);
            hl->hosts = reply_alloc(&a, sizeof(Ttfleet__HostInfo *) * (n + 1));
            zlistx_t *keys = zhashx_keys(self->hosts);
            zlistx_set_comparator(keys, (zlistx_comparator_fn *)strcmp);
            zlistx_sort(keys);
            for (const char *k = zlistx_first(keys); k && hl->hosts; k = zlistx_next(keys)) {
                host_t *h = model_host_get(self, k);
                if (h && (hl->hosts[hl->n_hosts] = reply_host_info(&a, h)))
                    hl->n_hosts++;
            }
            zlistx_destroy(&keys);
        }
        rep.result_case = TTFLEET__REPLY__RESULT_HOSTS;
        rep.hosts = hl;
    }
    reply_ok(c, "", &rep, false);
    reply_arena_free(&a);
    return 0;
}

int host_pool_status(handler_ctx_t *c)
{
    broker_t *self = c->self;
    Ttfleet__PoolStatus ps = TTFLEET__POOL_STATUS__INIT;
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts)) {
        ps.hosts_total++;
        if (h->state == HOST_ONLINE)
            ps.hosts_online++;
        ps.cpu_total += h->cpu_total;
        ps.cpu_used += h->cpu_used;
        ps.mem_total += h->mem_total;
        ps.mem_used += h->mem_used;
        ps.disk_total += h->disk_total;
        ps.disk_used += h->disk_used;
        ps.vms += h->vm_count;
    }
    bool admin = c->admin;
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        if (admin || strcmp(e->tenant, c->tenant) == 0)
            ps.envs++;
    ps.started_at = self->started_at;
    ps.cpu_overcommit = self->cfg.cpu_ratio;
    ps.mem_overcommit = self->cfg.mem_ratio;
    ps.disk_overcommit = self->cfg.disk_ratio;
    ps.admin_tenant = admin ? self->cfg.admin_tenant : "";
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_POOL;
    rep.pool = &ps;
    reply_ok(c, "", &rep, false);
    return 0;
}

int host_admin(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const char *id = c->req->op_case == TTFLEET__REQUEST__OP_HOST_DRAIN ? c->req->host_drain->id
                                                                        : c->req->host_remove->id;
    host_t *h = model_host_get(self, id);
    char msg[600];
    if (!h) {
        snprintf(msg, sizeof msg, "no host '%s'", id);
        return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    if (c->req->op_case == TTFLEET__REQUEST__OP_HOST_DRAIN) {
        const Ttfleet__HostDrain *d = c->req->host_drain;
        h->draining = !d->undo;
        persist_host(self, h);
        outq_event(self, d->undo ? "host.undrain" : "host.drain", NULL, NULL, h,
                   d->undo ? "online" : "draining", NULL);
        if (d->evacuate)
            replace_evacuate(self, h, msg, sizeof msg);
        else
            snprintf(msg, sizeof msg, "host %s %s", h->id,
                     d->undo ? "takes placements again" : "is draining: no new placements");
    } else {
        const Ttfleet__HostRemove *r = c->req->host_remove;
        int busy = 0;
        for (vm_t *vm = h->vms; vm; vm = vm->host_next)
            if (vm->env->busy)
                busy++;
        if ((h->vm_count > 0 && !r->force) || busy) {
            snprintf(msg, sizeof msg,
                     busy ? "host %s holds VMs of envs with an operation in flight; try again"
                          : "host %s still holds VMs; evacuate it (host drain --evacuate) or "
                            "use --force to drop them",
                     h->id);
            reply_arena_free(&a);
            return handler_fail(c, TTFLEET__STATUS__INVALID_STATE, msg);
        }
        /* what still waits on this host (console reads: they do not make an
         * env busy) ends now, before the host is freed */
        op_host_down(self, h);
        int dropped = 0;
        while (h->vms) {
            vm_t *vm = h->vms;
            outq_event(self, "vm.state", vm->env, vm, h, "absent", "host removed");
            persist_vm_delete(self, vm);
            model_vm_remove(self, vm);
            dropped++;
        }
        if (h->routing) {
            outq_worker(self, h, TT_W_DISCONNECT, NULL, 0);
            char *hex = zframe_strhex(h->routing);
            if (hex)
                zhashx_delete(self->routes, hex);
            free(hex);
        }
        persist_host_delete(self, h);
        outq_event(self, "host.removed", NULL, NULL, h, "removed", NULL);
        snprintf(msg, sizeof msg,
                 "host %s removed (%d VM(s) dropped); a worker still running "
                 "there joins again when it reconnects",
                 id, dropped);
        stats_host_gone(self, id);
        zhashx_delete(self->hosts, id);
        sched_invalidate(self);
        h = NULL;
    }
    if (h) {
        rep.result_case = TTFLEET__REPLY__RESULT_HOST;
        rep.host = reply_host_info(&a, h);
    }
    reply_ok(c, msg, &rep, true);
    reply_arena_free(&a);
    return 0;
}

/* host set: pin (or unpin) a host's capacity. The pin replaces what the
 * worker advertises for placement, so a compromised or misconfigured
 * worker cannot draw more VMs than the admin allows. A pin below what the
 * host already holds is allowed (nothing is moved); new placements wait
 * until usage falls under it. */
int host_set(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__HostSet *hs = c->req->host_set;
    host_t *h = model_host_get(self, hs->id);
    char msg[300];
    if (!h) {
        snprintf(msg, sizeof msg, "no host '%s'", hs->id);
        return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, msg);
    }
    if (hs->unpin) {
        h->pin_cpu = 0, h->pin_mem = 0, h->pin_disk = 0;
    } else {
        if (hs->cpu)
            h->pin_cpu = hs->cpu;
        if (hs->mem_mib)
            h->pin_mem = hs->mem_mib;
        if (hs->disk_mib)
            h->pin_disk = hs->disk_mib;
    }
    model_host_caps(h);
    persist_host_pin(self, h, false);
    sched_invalidate(self);
    outq_event(self, "host.pinned", NULL, NULL, h, hs->unpin ? "unpinned" : "pinned", NULL);
    snprintf(msg, sizeof msg, "host %s: placement capacity %u cpu, %llu MiB mem, %llu MiB disk%s",
             h->id, h->cpu_total, (unsigned long long)h->mem_total,
             (unsigned long long)h->disk_total, hs->unpin ? " (as advertised)" : " (pinned)");
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_HOST;
    rep.host = reply_host_info(&a, h);
    reply_ok(c, msg, &rep, true);
    reply_arena_free(&a);
    return 0;
}

int host_list(handler_ctx_t *c)
{
    return s_hosts(c, NULL);
}

int host_show(handler_ctx_t *c)
{
    return s_hosts(c, c->req->host_show->id);
}
