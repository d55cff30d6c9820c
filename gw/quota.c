/*
 * quota: see quota.h.
 */
#include "quota.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "ttproto.h"

typedef struct {
    char tenant[TT_MAX_NAME + 1];
    unsigned count[QUOTA_KINDS];
} s_entry_t;

static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_entry_t s_table[QUOTA_MAX_TENANTS];

static s_entry_t *s_find(const char *tenant, int create)
{
    s_entry_t *free_slot = NULL;
    for (int i = 0; i < QUOTA_MAX_TENANTS; i++) {
        s_entry_t *e = &s_table[i];
        if (e->tenant[0] && strcmp(e->tenant, tenant) == 0)
            return e;
        if (!e->tenant[0] && !free_slot)
            free_slot = e;
    }
    if (create && free_slot)
        snprintf(free_slot->tenant, sizeof free_slot->tenant, "%s", tenant);
    return create ? free_slot : NULL;
}

int quota_take(quota_kind_t kind, const char *tenant, unsigned limit)
{
    int rc = -1;
    pthread_mutex_lock(&s_lock);
    s_entry_t *e = s_find(tenant, 1);
    if (e && e->count[kind] < limit) {
        e->count[kind]++;
        rc = 0;
    }
    pthread_mutex_unlock(&s_lock);
    return rc;
}

void quota_give(quota_kind_t kind, const char *tenant)
{
    pthread_mutex_lock(&s_lock);
    s_entry_t *e = s_find(tenant, 0);
    if (e && e->count[kind] > 0) {
        e->count[kind]--;
        int live = 0;
        for (int k = 0; k < QUOTA_KINDS; k++)
            live |= e->count[k] != 0;
        if (!live)
            e->tenant[0] = 0;
    }
    pthread_mutex_unlock(&s_lock);
}
