/*
 * quota: per-tenant limits on what a tenant may hold at once.
 *
 * Dimensions: envs, VMs, vcpus, memory MiB, disk MiB (sums over the
 * tenant's envs, counted as the broker accounts them: every VM of every env
 * that exists, queued ones excluded until admitted), the longest lifetime
 * an env may ask for, and the cap of EnvCreate.priority. -1 means no limit.
 * A tenant without a row has no limits and the default priority cap
 * (QUOTA_DEFAULT_PRIO_CAP); admins are not capped in priority.
 *
 * Rows live in broker.db table `quotas` (migration 2). quota_set stages its
 * row into the caller's open transaction and changes memory only once the
 * row is staged; after a rolled back batch the caller calls quota_load.
 * An unknown tenant in quota_set is allowed on purpose: an admin may set a
 * quota before the tenant's first request (tenants are not registered
 * anywhere but in CURVE certificates, which the broker does not list).
 *
 * Checks are pure: quota_check(limits, used, wanted) says whether used +
 * wanted fits, and on refusal fills a quota_refusal_t naming the resource,
 * the used amount, the limit and the amount wanted, with a message such as
 *   "quota exceeded for tenant ci: cpu used 6 + wanted 4 > limit 8".
 * The broker calls it with:
 *   create (submit)      used = 0 first: a request that alone exceeds a limit
 *                        is refused with QUOTA_EXCEEDED, never queued; then
 *                        used = current usage (refused, or queued when the
 *                        create asked for it and only capacity is missing);
 *   queue admission      used = current usage (over: the entry waits, SKIP);
 *   start                wanted = cpu/mem of the VMs that will hold them again;
 *   update               wanted = the growth of cpu/mem/disk;
 *   extend               lifetime against max_lifetime.
 *
 * Depends on store/ and schema/ only.
 */
#ifndef TT_QUOTA_H
#define TT_QUOTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#define QUOTA_UNLIMITED (-1)
#define QUOTA_DEFAULT_PRIO_CAP 10

typedef struct quotas_t quotas_t;

typedef struct {
    int64_t envs, vms, cpu, mem, disk; /* -1 = no limit */
    int64_t max_lifetime;              /* seconds, -1 = no limit */
    int64_t max_priority;              /* -1 = QUOTA_DEFAULT_PRIO_CAP */
} quota_t;

typedef struct {
    int64_t envs, vms, cpu, mem, disk;
} quota_usage_t;

typedef struct {
    const char *resource; /* "envs", "vms", "cpu", "mem", "disk", "lifetime" */
    int64_t used, limit, wanted;
} quota_refusal_t;

/* Which fields of a quota_set change (the others keep their value). */
enum {
    QUOTA_F_ENVS = 1 << 0,
    QUOTA_F_VMS = 1 << 1,
    QUOTA_F_CPU = 1 << 2,
    QUOTA_F_MEM = 1 << 3,
    QUOTA_F_DISK = 1 << 4,
    QUOTA_F_LIFETIME = 1 << 5,
    QUOTA_F_PRIORITY = 1 << 6,
};

quotas_t *quotas_new(store_t *store);
void quotas_destroy(quotas_t **self_p);
/* (Re)read every row. 0 / -1 with a reason. */
int quotas_load(quotas_t *self, char *err, size_t errlen);

/* The tenant's limits (all -1 when it has no row). */
void quotas_get(quotas_t *self, const char *tenant, quota_t *out);
/* The priority cap that applies (admin: the maximum). */
int quotas_priority_cap(quotas_t *self, const char *tenant, bool admin);

/* Validate values (each -1 or 0..bound, lifetime not 0). 0 / -1 + reason. */
int quota_validate(const quota_t *q, unsigned fields, char *err, size_t errlen);
/* Change the fields of tenant's limits; stages an upsert. 0 / -1 + reason
 * (nothing changed on -1). */
int quotas_set(quotas_t *self, const char *tenant, const quota_t *values, unsigned fields,
               int64_t now, char *err, size_t errlen);

/* Tenants with a row, for `quota show --all`; returns a zlistx of strings
 * the caller destroys (NULL on out of memory). */
void *quotas_tenants(quotas_t *self);

/* 0 when used + wanted is within every limit, else -1 with *why filled
 * (may be NULL) and a message naming tenant, resource, used, limit, wanted. */
int quota_check(const quota_t *q, const char *tenant, const quota_usage_t *used,
                const quota_usage_t *wanted, quota_refusal_t *why, char *msg, size_t msglen);
/* 0 when lifetime (seconds) is within max_lifetime, else -1 and message. */
int quota_check_lifetime(const quota_t *q, const char *tenant, int64_t lifetime,
                         quota_refusal_t *why, char *msg, size_t msglen);

#endif
