/*
 * reaper: lease expiry. See reaper.h.
 */
#include "reaper.h"
#include "admission.h"
#include "env_ops.h"
#include "reply.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reaper: delete envs whose lease ran out, a bounded number per tick.
 * Leases that ran out while the broker was down get a grace period from
 * the broker's start instead of being deleted all at once. */
void reaper_run(broker_t *self, int64_t now)
{
    int budget = self->cfg.reap_per_tick;
    zlistx_t *due = zlistx_new();
    for (env_t *e = zhashx_first(self->envs); e && budget > 0; e = zhashx_next(self->envs)) {
        if (e->busy || e->target == TARGET_CREATING)
            continue;
        int64_t deadline = e->expires_at;
        if (deadline < self->started_at + self->cfg.lease_grace && e->expires_at < self->started_at)
            deadline = self->started_at + self->cfg.lease_grace;
        if (now >= deadline) {
            zlistx_add_end(due, e);
            budget--;
        }
    }
    for (env_t *e = zlistx_first(due); e; e = zlistx_next(due)) {
        char msg[200];
        snprintf(msg, sizeof msg, "lease ended at %lld: deleted by the broker's reaper",
                 (long long)e->expires_at);
        zsys_info("env %s/%s expired (lease ended at %lld)", e->tenant, e->name,
                  (long long)e->expires_at);
        /* a system action in the env's tenant: audited like a delete */
        audit_ctx_t actx = {"env.expired", e->name, "system", ""};
        const audit_ctx_t *saved = self->cur_audit;
        self->cur_audit = &actx;
        reply_audit(self, e->tenant, "", TTFLEET__STATUS__OK, msg);
        self->cur_audit = saved;
        env_ops_delete(self, e, "env.expired");
    }
    zlistx_destroy(&due);
    /* the queue: max-wait expiry, admission into what the tick freed (a
     * host up, VMs stopped, failed creates), audit retention */
    admission_tick(self, now);
}
