/*
 * catalog: the rows of the `images` table. See catalog.h.
 */
#include "catalog.h"
#include "persist.h"

#include <stdio.h>
#include <string.h>

#define S_COLS                                                                                     \
    "owner, name, tag, digest, kind, size, blobs, created_at, readiness, user, min_disk_mib"

static void s_row_read(sqlite3_stmt *st, catalog_row_t *r)
{
    memset(r, 0, sizeof *r);
#define S_T(i, f)                                                                                  \
    snprintf(r->f, sizeof r->f, "%s",                                                              \
             sqlite3_column_text(st, i) ? (const char *)sqlite3_column_text(st, i) : "")
    S_T(0, owner);
    S_T(1, name);
    S_T(2, tag);
    S_T(3, digest);
    S_T(4, kind);
    r->size = (uint64_t)sqlite3_column_int64(st, 5);
    S_T(6, blobs);
    r->created_at = sqlite3_column_int64(st, 7);
    S_T(8, readiness);
    S_T(9, user);
    r->min_disk_mib = (uint32_t)sqlite3_column_int64(st, 10);
#undef S_T
}

/* A prepared read with up to four text parameters (NULL ends the list). */
static sqlite3_stmt *s_query(broker_t *self, const char *sql, const char *p1, const char *p2,
                             const char *p3, const char *p4)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(store_db(self->store), sql, -1, &st, NULL) != SQLITE_OK)
        return NULL;
    const char *p[] = {p1, p2, p3, p4};
    for (int i = 0; i < 4 && p[i]; i++)
        sqlite3_bind_text(st, i + 1, p[i], -1, SQLITE_TRANSIENT);
    return st;
}

int catalog_find(broker_t *self, const char *tenant, const tt_image_ref_t *ref, catalog_row_t *r)
{
    const char *sql = ref->digest[0]
                          ? "SELECT " S_COLS " FROM images WHERE name = ?1 AND digest = ?3 AND "
                            "(owner = '' OR owner = ?2) ORDER BY owner = '' LIMIT 1"
                          : "SELECT " S_COLS " FROM images WHERE name = ?1 AND tag = ?3 AND "
                            "(owner = '' OR owner = ?2) ORDER BY owner = '' LIMIT 1";
    sqlite3_stmt *st =
        s_query(self, sql, ref->name, tenant, ref->digest[0] ? ref->digest : ref->tag, NULL);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    int found = rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
    if (found == 1)
        s_row_read(st, r);
    sqlite3_finalize(st);
    return found;
}

int catalog_visible_blob(broker_t *self, const char *tenant, const char *digest)
{
    sqlite3_stmt *st = s_query(self,
                               "SELECT 1 FROM images WHERE (owner = '' OR owner = ?1)"
                               " AND instr(blobs, ?2) > 0 LIMIT 1",
                               tenant, digest, NULL, NULL);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 1 : rc == SQLITE_DONE ? 0 : -1;
}

int catalog_digest_others(broker_t *self, const catalog_row_t *r)
{
    int others = 0;
    sqlite3_stmt *st = s_query(self,
                               "SELECT count(*) FROM images WHERE digest = ?1 AND NOT (owner = ?2 "
                               "AND name = ?3 AND tag = ?4)",
                               r->digest, r->owner, r->name, r->tag);
    if (st && sqlite3_step(st) == SQLITE_ROW)
        others = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return others;
}

int catalog_each(broker_t *self, const char *tenant, bool all, int limit,
                 int (*fn)(void *arg, const catalog_row_t *r), void *arg)
{
    const char *sql = all ? "SELECT " S_COLS " FROM images ORDER BY name, tag, owner LIMIT ?1"
                          : "SELECT " S_COLS " FROM images WHERE owner = '' OR owner = ?2 "
                            "ORDER BY name, tag, owner LIMIT ?1";
    sqlite3_stmt *st = s_query(self, sql, NULL, NULL, NULL, NULL);
    if (!st)
        return -1;
    sqlite3_bind_int(st, 1, limit);
    if (!all)
        sqlite3_bind_text(st, 2, tenant, -1, SQLITE_TRANSIENT);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        catalog_row_t r;
        s_row_read(st, &r);
        if (fn(arg, &r)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

int catalog_tenant_usage(broker_t *self, const char *tenant, uint64_t *bytes, uint64_t *images)
{
    sqlite3_stmt *st =
        s_query(self, "SELECT COALESCE(SUM(size), 0), COUNT(*) FROM images WHERE owner = ?1",
                tenant, NULL, NULL, NULL);
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *bytes = (uint64_t)sqlite3_column_int64(st, 0);
        *images = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

int catalog_tenant_has(broker_t *self, const char *tenant, const char *name, const char *tag,
                       int64_t *count, bool *same)
{
    sqlite3_stmt *st = s_query(self,
                               "SELECT COUNT(*), SUM(name = ?2 AND tag = ?3) FROM images "
                               "WHERE owner = ?1",
                               tenant, name, tag, NULL);
    if (!st)
        return -1;
    *count = 0;
    *same = false;
    if (sqlite3_step(st) == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        *same = sqlite3_column_int64(st, 1) != 0;
    }
    sqlite3_finalize(st);
    return 0;
}

int catalog_each_digest(broker_t *self,
                        void (*fn)(void *arg, const char *digest, const char *blobs), void *arg)
{
    sqlite3_stmt *st = s_query(self, "SELECT digest, blobs FROM images", NULL, NULL, NULL, NULL);
    if (!st)
        return -1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn(arg, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

void catalog_put(broker_t *self, const catalog_row_t *r)
{
    persist_image_t row = {r->owner,     r->name, r->tag,  r->digest,     r->kind,        r->blobs,
                           r->readiness, r->user, r->size, r->created_at, r->min_disk_mib};
    persist_image_put(self, &row);
}

void catalog_delete(broker_t *self, const catalog_row_t *r)
{
    persist_image_delete(self, r->owner, r->name, r->tag);
}
