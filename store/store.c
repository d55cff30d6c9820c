/*
 * store: SQLite file with pragmas, migrations, a statement cache and
 * explicit transactions. See store.h for the contract.
 */
#include "store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STORE_MAX_STMTS 128

struct store_t {
    sqlite3 *db;
    int version;
    int in_tx;
    struct {
        const char *sql;
        sqlite3_stmt *st;
    } cache[STORE_MAX_STMTS];
    int n_cache;
    char errmsg[512];
};

static void s_set_err(store_t *self, const char *what)
{
    snprintf(self->errmsg, sizeof self->errmsg, "%s: %s", what, sqlite3_errmsg(self->db));
    fprintf(stderr, "store: %s\n", self->errmsg);
}

static int s_migrate(store_t *self, const char *const *migrations, int n, char *err,
                     size_t errlen)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(self->db, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        snprintf(err, errlen, "read user_version: %s", sqlite3_errmsg(self->db));
        sqlite3_finalize(st);
        return -1;
    }
    int version = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (version > n) {
        snprintf(err, errlen,
                 "database schema version %d is newer than this program knows (%d): refusing "
                 "to touch it",
                 version, n);
        return -1;
    }
    if (version == n) {
        self->version = version;
        return 0;
    }
    char *msg = NULL;
    if (sqlite3_exec(self->db, "BEGIN IMMEDIATE", NULL, NULL, &msg) != SQLITE_OK)
        goto fail;
    for (int i = version; i < n; i++) {
        if (sqlite3_exec(self->db, migrations[i], NULL, NULL, &msg) != SQLITE_OK)
            goto fail_rb;
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d", i + 1);
        if (sqlite3_exec(self->db, sql, NULL, NULL, &msg) != SQLITE_OK)
            goto fail_rb;
    }
    if (sqlite3_exec(self->db, "COMMIT", NULL, NULL, &msg) != SQLITE_OK)
        goto fail_rb;
    self->version = n;
    return 0;
fail_rb:
    sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
fail:
    snprintf(err, errlen, "migration: %s", msg ? msg : sqlite3_errmsg(self->db));
    sqlite3_free(msg);
    return -1;
}

store_t *store_open(const char *path, const char *const *migrations, int n_migrations, char *err,
                    size_t errlen)
{
    store_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (sqlite3_open_v2(path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, errlen, "open %s: %s", path,
                 self->db ? sqlite3_errmsg(self->db) : "out of memory");
        store_destroy(&self);
        return NULL;
    }
    sqlite3_busy_timeout(self->db, 5000);
    sqlite3_extended_result_codes(self->db, 1);
    static const char *pragmas = "PRAGMA journal_mode=WAL;"
                                 "PRAGMA synchronous=FULL;"
                                 "PRAGMA foreign_keys=ON;";
    char *msg = NULL;
    if (sqlite3_exec(self->db, pragmas, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, msg ? msg : "pragma failed");
        sqlite3_free(msg);
        store_destroy(&self);
        return NULL;
    }
    if (s_migrate(self, migrations, n_migrations, err, errlen)) {
        store_destroy(&self);
        return NULL;
    }
    return self;
}

void store_destroy(store_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    store_t *self = *self_p;
    for (int i = 0; i < self->n_cache; i++)
        sqlite3_finalize(self->cache[i].st);
    if (self->db)
        sqlite3_close(self->db);
    free(self);
    *self_p = NULL;
}

sqlite3 *store_db(store_t *self)
{
    return self->db;
}

int store_version(store_t *self)
{
    return self->version;
}

const char *store_errmsg(store_t *self)
{
    return self->errmsg;
}

int store_exec(store_t *self, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(self->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(self->errmsg, sizeof self->errmsg, "%s", msg ? msg : "exec failed");
        fprintf(stderr, "store: %s (in: %.60s)\n", self->errmsg, sql);
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

sqlite3_stmt *store_stmt(store_t *self, const char *sql)
{
    for (int i = 0; i < self->n_cache; i++)
        if (self->cache[i].sql == sql) {
            sqlite3_reset(self->cache[i].st);
            sqlite3_clear_bindings(self->cache[i].st);
            return self->cache[i].st;
        }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v3(self->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        s_set_err(self, "prepare");
        return NULL;
    }
    if (self->n_cache < STORE_MAX_STMTS) {
        self->cache[self->n_cache].sql = sql;
        self->cache[self->n_cache].st = st;
        self->n_cache++;
    } else {
        /* Cache full: a programming error (too many distinct statements);
         * fail loudly rather than leak. */
        sqlite3_finalize(st);
        snprintf(self->errmsg, sizeof self->errmsg, "statement cache full");
        return NULL;
    }
    return st;
}

int store_step_done(store_t *self, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        s_set_err(self, "step");
        sqlite3_reset(st);
        return -1;
    }
    sqlite3_reset(st);
    return 0;
}

int store_begin(store_t *self)
{
    if (self->in_tx)
        return 0;
    if (store_exec(self, "BEGIN IMMEDIATE"))
        return -1;
    self->in_tx = 1;
    return 0;
}

int store_commit(store_t *self)
{
    if (!self->in_tx)
        return 0;
    if (store_exec(self, "COMMIT")) {
        /* A failed COMMIT may leave the transaction open (SQLITE_BUSY) or
         * rolled back (disk full); make sure it is closed either way. */
        if (!sqlite3_get_autocommit(self->db))
            sqlite3_exec(self->db, "ROLLBACK", NULL, NULL, NULL);
        self->in_tx = 0;
        return -1;
    }
    self->in_tx = 0;
    return 0;
}

int store_rollback(store_t *self)
{
    if (!self->in_tx)
        return 0;
    self->in_tx = 0;
    if (!sqlite3_get_autocommit(self->db))
        return store_exec(self, "ROLLBACK");
    return 0;
}

int store_in_tx(store_t *self)
{
    return self->in_tx;
}

int store_savepoint(store_t *self, const char *name)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SAVEPOINT %s", name);
    return self->in_tx ? store_exec(self, sql) : -1;
}

int store_release(store_t *self, const char *name)
{
    char sql[96];
    snprintf(sql, sizeof sql, "RELEASE %s", name);
    return self->in_tx ? store_exec(self, sql) : -1;
}

int store_rollback_to(store_t *self, const char *name)
{
    char sql[128];
    snprintf(sql, sizeof sql, "ROLLBACK TO %s; RELEASE %s", name, name);
    return self->in_tx ? store_exec(self, sql) : -1;
}
