/*
 * audit: rows of the `audit` table. Writes go through the store's cached
 * statements into the transaction already open; queries build one of four
 * fixed statements (no SQL is assembled from input: every value is bound).
 */
#include "audit.h"

#include <stdio.h>
#include <string.h>

#include "ttproto.h"

static int s_text_ok(const char *s)
{
    return !s || strlen(s) <= AUDIT_MAX_TEXT;
}

static void s_bind(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s ? s : "", -1, SQLITE_TRANSIENT);
}

int audit_write(store_t *store, const audit_rec_t *rec, char *err, size_t errlen)
{
    if (!store_in_tx(store)) {
        snprintf(err, errlen, "audit: no open transaction: the row must join its change");
        return -1;
    }
    if (!rec->tenant || !*rec->tenant || !rec->op || !*rec->op) {
        snprintf(err, errlen, "audit: tenant and op are required");
        return -1;
    }
    if (!s_text_ok(rec->tenant) || !s_text_ok(rec->role) || !s_text_ok(rec->key) ||
        !s_text_ok(rec->op) || !s_text_ok(rec->target) || !s_text_ok(rec->request_id)) {
        snprintf(err, errlen, "audit: a field is over %d bytes", AUDIT_MAX_TEXT);
        return -1;
    }
    static const char *sql = "INSERT INTO audit (time, tenant, role, key_fp, op, target,"
                             " request_id, status, message) VALUES (?,?,?,?,?,?,?,?,?)";
    sqlite3_stmt *st = store_stmt(store, sql);
    if (!st) {
        snprintf(err, errlen, "audit: %s", store_errmsg(store));
        return -1;
    }
    sqlite3_bind_int64(st, 1, rec->time);
    s_bind(st, 2, rec->tenant);
    s_bind(st, 3, rec->role);
    s_bind(st, 4, rec->key);
    s_bind(st, 5, rec->op);
    s_bind(st, 6, rec->target);
    s_bind(st, 7, rec->request_id);
    sqlite3_bind_int(st, 8, rec->status);
    /* a long message is cut, not refused: the outcome must be recorded */
    const char *m = rec->message ? rec->message : "";
    sqlite3_bind_text(st, 9, m, (int)strnlen(m, AUDIT_MAX_TEXT), SQLITE_TRANSIENT);
    if (store_step_done(store, st)) {
        snprintf(err, errlen, "audit: %s", store_errmsg(store));
        return -1;
    }
    return 0;
}

int audit_set_outcome(store_t *store, int64_t id, int status, const char *message)
{
    if (!store_in_tx(store))
        return -1;
    static const char *sql = "UPDATE audit SET status = ?, message = ? WHERE id = ?";
    sqlite3_stmt *st = store_stmt(store, sql);
    if (!st)
        return -1;
    const char *m = message ? message : "";
    sqlite3_bind_int(st, 1, status);
    sqlite3_bind_text(st, 2, m, (int)strnlen(m, AUDIT_MAX_TEXT), SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, id);
    return store_step_done(store, st);
}

int audit_prune(store_t *store, int64_t cutoff, int batch)
{
    if (batch <= 0)
        return 0;
    static const char *sql = "DELETE FROM audit WHERE id IN"
                             " (SELECT id FROM audit WHERE time < ? ORDER BY time LIMIT ?)";
    sqlite3_stmt *st = NULL;
    if (store_begin(store) || !(st = store_stmt(store, sql)))
        return -1;
    sqlite3_bind_int64(st, 1, cutoff);
    sqlite3_bind_int(st, 2, batch);
    if (store_step_done(store, st))
        return -1;
    return sqlite3_changes(store_db(store));
}

int audit_query(store_t *store, const audit_filter_t *f, audit_row_fn *fn, void *arg)
{
    /* one statement: empty filters match everything ("?1 = ''") */
    static const char *sql =
        "SELECT id, time, tenant, role, key_fp, op, target, request_id, status, message"
        " FROM audit WHERE (?1 = '' OR tenant = ?1) AND (?2 = '' OR target = ?2)"
        " AND time >= ?3 ORDER BY id DESC LIMIT ?4";
    sqlite3_stmt *st = store_stmt(store, sql);
    if (!st)
        return -1;
    int limit = f->limit <= 0 ? TT_AUDIT_LIMIT_DEFAULT : f->limit;
    if (limit > TT_AUDIT_LIMIT_MAX)
        limit = TT_AUDIT_LIMIT_MAX;
    s_bind(st, 1, f->tenant);
    s_bind(st, 2, f->env);
    sqlite3_bind_int64(st, 3, f->since > 0 ? f->since : 0);
    sqlite3_bind_int(st, 4, limit);
    int n = 0, rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        audit_rec_t r = {
            .id = sqlite3_column_int64(st, 0),
            .time = sqlite3_column_int64(st, 1),
            .tenant = (const char *)sqlite3_column_text(st, 2),
            .role = (const char *)sqlite3_column_text(st, 3),
            .key = (const char *)sqlite3_column_text(st, 4),
            .op = (const char *)sqlite3_column_text(st, 5),
            .target = (const char *)sqlite3_column_text(st, 6),
            .request_id = (const char *)sqlite3_column_text(st, 7),
            .status = sqlite3_column_int(st, 8),
            .message = (const char *)sqlite3_column_text(st, 9),
        };
        if (fn)
            fn(&r, arg);
        n++;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? n : -1;
}
