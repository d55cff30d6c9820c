/*
 * usage: what a tenant holds and what the pool has free, computed from
 * the model, for the quota checks (quota.h) and queue admission (admq.h).
 *
 * A tenant's usage is counted as the broker accounts hosts: every env and
 * VM that exists (queued creates are not envs yet), disk for every VM, cpu
 * and mem for every VM that is not stopped (model_vm_holds_cpu). It is a
 * walk over the envs, done only for a tenant that has a limit (a tenant
 * without a quota row costs nothing). Depends on the model only.
 */
#ifndef TT_BROKER_USAGE_H
#define TT_BROKER_USAGE_H

#include "admq.h"
#include "model.h"
#include "quota.h"

/* True when q limits envs, VMs, cpu, mem or disk. */
bool usage_limited(const quota_t *q);
void usage_of(broker_t *self, const char *tenant, quota_usage_t *out);
/* Aggregate free capacity (after the overcommit ratios) of the hosts that
 * take new VMs: online and not draining. */
void usage_pool_free(broker_t *self, admq_res_t *out);

#endif
