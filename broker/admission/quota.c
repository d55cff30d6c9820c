/*
 * quota: tenant limits kept in memory (a hash of quota_t by tenant) and
 * mirrored to the `quotas` table. See quota.h for where the broker checks
 * them. The check walks the dimensions in a fixed order so the same
 * request is always refused naming the same resource.
 */
#include <czmq.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quota.h"
#include "ttproto.h"

struct quotas_t {
    store_t *store;
    zhashx_t *rows; /* tenant -> quota_t* (owned) */
};

static void s_free(void **item)
{
    free(*item);
    *item = NULL;
}

quotas_t *quotas_new(store_t *store)
{
    quotas_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->store = store;
    self->rows = zhashx_new();
    if (!self->rows) {
        free(self);
        return NULL;
    }
    zhashx_set_destructor(self->rows, s_free);
    return self;
}

void quotas_destroy(quotas_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zhashx_destroy(&(*self_p)->rows);
    free(*self_p);
    *self_p = NULL;
}

static const quota_t s_none = {-1, -1, -1, -1, -1, -1, -1};

int quotas_load(quotas_t *self, char *err, size_t errlen)
{
    zhashx_purge(self->rows);
    sqlite3 *db = store_db(self->store);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT tenant, envs, vms, cpu, mem, disk, max_lifetime, max_priority"
                           " FROM quotas",
                           -1, &st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "quotas: %s", sqlite3_errmsg(db));
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        quota_t *q = malloc(sizeof *q);
        if (!q)
            break;
        q->envs = sqlite3_column_int64(st, 1);
        q->vms = sqlite3_column_int64(st, 2);
        q->cpu = sqlite3_column_int64(st, 3);
        q->mem = sqlite3_column_int64(st, 4);
        q->disk = sqlite3_column_int64(st, 5);
        q->max_lifetime = sqlite3_column_int64(st, 6);
        q->max_priority = sqlite3_column_int64(st, 7);
        zhashx_update(self->rows, (const char *)sqlite3_column_text(st, 0), q);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "quotas: %s",
                 rc == SQLITE_ROW ? "out of memory" : sqlite3_errmsg(db));
        return -1;
    }
    return 0;
}

void quotas_get(quotas_t *self, const char *tenant, quota_t *out)
{
    const quota_t *q = zhashx_lookup(self->rows, tenant);
    *out = q ? *q : s_none;
}

int quotas_priority_cap(quotas_t *self, const char *tenant, bool admin)
{
    if (admin)
        return TT_PRIO_MAX;
    quota_t q;
    quotas_get(self, tenant, &q);
    return q.max_priority < 0 ? QUOTA_DEFAULT_PRIO_CAP : (int)q.max_priority;
}

static int s_value_ok(int64_t v, int64_t max, const char *what, char *err, size_t errlen)
{
    if (v < -1 || v > max) {
        snprintf(err, errlen, "quota %s %lld out of range: -1 (no limit) or 0..%lld", what,
                 (long long)v, (long long)max);
        return -1;
    }
    return 0;
}

int quota_validate(const quota_t *q, unsigned fields, char *err, size_t errlen)
{
    if (((fields & QUOTA_F_ENVS) && s_value_ok(q->envs, TT_QUOTA_MAX_ENVS, "envs", err, errlen)) ||
        ((fields & QUOTA_F_VMS) && s_value_ok(q->vms, TT_QUOTA_MAX_VMS, "vms", err, errlen)) ||
        ((fields & QUOTA_F_CPU) && s_value_ok(q->cpu, TT_QUOTA_MAX_CPU, "cpu", err, errlen)) ||
        ((fields & QUOTA_F_MEM) && s_value_ok(q->mem, TT_QUOTA_MAX_MEM_MIB, "mem", err, errlen)) ||
        ((fields & QUOTA_F_DISK) &&
         s_value_ok(q->disk, TT_QUOTA_MAX_DISK_MIB, "disk", err, errlen)) ||
        ((fields & QUOTA_F_LIFETIME) &&
         s_value_ok(q->max_lifetime, TT_MAX_LIFETIME_ADMIN, "max-lifetime", err, errlen)) ||
        ((fields & QUOTA_F_PRIORITY) &&
         s_value_ok(q->max_priority, TT_PRIO_MAX, "max-priority", err, errlen)))
        return -1;
    if ((fields & QUOTA_F_LIFETIME) && q->max_lifetime == 0) {
        snprintf(err, errlen, "quota max-lifetime 0 would refuse every env: give 1.. or -1");
        return -1;
    }
    if (!fields) {
        snprintf(err, errlen, "quota set changes nothing: give at least one limit");
        return -1;
    }
    return 0;
}

int quotas_set(quotas_t *self, const char *tenant, const quota_t *values, unsigned fields,
               int64_t now, char *err, size_t errlen)
{
    if (!tt_name_valid(tenant)) {
        snprintf(err, errlen, "invalid tenant '%.80s'", tenant ? tenant : "");
        return -1;
    }
    if (quota_validate(values, fields, err, errlen))
        return -1;
    quota_t q;
    quotas_get(self, tenant, &q);
    if (fields & QUOTA_F_ENVS)
        q.envs = values->envs;
    if (fields & QUOTA_F_VMS)
        q.vms = values->vms;
    if (fields & QUOTA_F_CPU)
        q.cpu = values->cpu;
    if (fields & QUOTA_F_MEM)
        q.mem = values->mem;
    if (fields & QUOTA_F_DISK)
        q.disk = values->disk;
    if (fields & QUOTA_F_LIFETIME)
        q.max_lifetime = values->max_lifetime;
    if (fields & QUOTA_F_PRIORITY)
        q.max_priority = values->max_priority;
    static const char *sql =
        "INSERT INTO quotas (tenant, envs, vms, cpu, mem, disk, max_lifetime, max_priority,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (tenant) DO UPDATE SET"
        " envs = excluded.envs, vms = excluded.vms, cpu = excluded.cpu, mem = excluded.mem,"
        " disk = excluded.disk, max_lifetime = excluded.max_lifetime,"
        " max_priority = excluded.max_priority, updated_at = excluded.updated_at";
    sqlite3_stmt *st = NULL;
    if (store_begin(self->store) || !(st = store_stmt(self->store, sql))) {
        snprintf(err, errlen, "quota: cannot persist: %s", store_errmsg(self->store));
        return -1;
    }
    sqlite3_bind_text(st, 1, tenant, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, q.envs);
    sqlite3_bind_int64(st, 3, q.vms);
    sqlite3_bind_int64(st, 4, q.cpu);
    sqlite3_bind_int64(st, 5, q.mem);
    sqlite3_bind_int64(st, 6, q.disk);
    sqlite3_bind_int64(st, 7, q.max_lifetime);
    sqlite3_bind_int64(st, 8, q.max_priority);
    sqlite3_bind_int64(st, 9, now);
    if (store_step_done(self->store, st)) {
        snprintf(err, errlen, "quota: cannot persist: %s", store_errmsg(self->store));
        return -1;
    }
    quota_t *row = malloc(sizeof *row);
    if (!row) {
        snprintf(err, errlen, "quota: out of memory");
        return -1;
    }
    *row = q;
    zhashx_update(self->rows, tenant, row);
    return 0;
}

void *quotas_tenants(quotas_t *self)
{
    zlistx_t *keys = zhashx_keys(self->rows);
    if (keys)
        zlistx_sort(keys);
    return keys;
}

static int s_refuse(const char *tenant, const char *resource, int64_t used, int64_t limit,
                    int64_t wanted, quota_refusal_t *why, char *msg, size_t msglen)
{
    if (why) {
        why->resource = resource;
        why->used = used;
        why->limit = limit;
        why->wanted = wanted;
    }
    const char *unit = strcmp(resource, "mem") == 0 || strcmp(resource, "disk") == 0 ? " MiB"
                       : strcmp(resource, "lifetime") == 0                           ? " s"
                                                                                     : "";
    if (strcmp(resource, "lifetime") == 0)
        snprintf(msg, msglen, "quota exceeded for tenant %s: lifetime wanted %lld%s > limit %lld%s",
                 tenant, (long long)wanted, unit, (long long)limit, unit);
    else
        snprintf(msg, msglen,
                 "quota exceeded for tenant %s: %s used %lld%s + wanted %lld%s > limit %lld%s",
                 tenant, resource, (long long)used, unit, (long long)wanted, unit, (long long)limit,
                 unit);
    return -1;
}

int quota_check(const quota_t *q, const char *tenant, const quota_usage_t *used,
                const quota_usage_t *wanted, quota_refusal_t *why, char *msg, size_t msglen)
{
    const struct {
        const char *name;
        int64_t limit, used, wanted;
    } dims[] = {
        {"envs", q->envs, used->envs, wanted->envs}, {"vms", q->vms, used->vms, wanted->vms},
        {"cpu", q->cpu, used->cpu, wanted->cpu},     {"mem", q->mem, used->mem, wanted->mem},
        {"disk", q->disk, used->disk, wanted->disk},
    };
    for (size_t i = 0; i < sizeof dims / sizeof *dims; i++) {
        if (dims[i].limit < 0 || dims[i].wanted <= 0)
            continue; /* no limit, or asks for nothing of it (a shrink never fails) */
        /* used may already be over a lowered limit: any growth is refused */
        if (dims[i].used > dims[i].limit || dims[i].wanted > dims[i].limit - dims[i].used)
            return s_refuse(tenant, dims[i].name, dims[i].used, dims[i].limit, dims[i].wanted, why,
                            msg, msglen);
    }
    return 0;
}

int quota_check_lifetime(const quota_t *q, const char *tenant, int64_t lifetime,
                         quota_refusal_t *why, char *msg, size_t msglen)
{
    if (q->max_lifetime >= 0 && lifetime > q->max_lifetime)
        return s_refuse(tenant, "lifetime", 0, q->max_lifetime, lifetime, why, msg, msglen);
    return 0;
}
