/*
 * store: SQLite file with pragmas, migrations, a statement cache and
 * explicit transactions. See store.h for the contract.
 */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STORE_MAX_STMTS 128
/* the syncer checkpoints once the WAL holds this many pages (SQLite's own
 * autocheckpoint default) */
#define STORE_CKPT_PAGES 1000

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
    char path[1024];
    /* deferred sync (store_defer_sync) */
    int wal_fd;
    bool deferred;
    /* the syncer thread */
    bool syncer;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t want;   /* highest seq asked for */
    uint64_t synced; /* highest seq durable */
    bool sync_failed;
    bool stop;
    int pipe[2];          /* syncer -> caller: "synced moved" */
    sqlite3 *ck;          /* the syncer's connection, for checkpoints */
    atomic_int wal_pages; /* from the writer's WAL hook */
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
    self->wal_fd = -1;
    self->pipe[0] = self->pipe[1] = -1;
    snprintf(self->path, sizeof self->path, "%s", path);
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
    store_syncer_stop(self);
    if (self->wal_fd >= 0)
        close(self->wal_fd);
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

int store_meta_ratios(store_t *self, const double ratios[3])
{
    static const char *const keys[3] = {"cpu_overcommit", "mem_overcommit", "disk_overcommit"};
    sqlite3_stmt *st = store_stmt(self, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)");
    if (!st)
        return -1;
    for (int i = 0; i < 3; i++) {
        char text[40];
        snprintf(text, sizeof text, "%.17g", ratios[i]);
        sqlite3_bind_text(st, 1, keys[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, text, -1, SQLITE_TRANSIENT);
        if (store_step_done(self, st))
            return -1;
    }
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

/* ---- deferred sync ---- */

int store_defer_sync(store_t *self)
{
    if (self->deferred)
        return 0;
    if (self->in_tx) {
        snprintf(self->errmsg, sizeof self->errmsg, "defer sync: a transaction is open");
        return -1;
    }
    /* a read makes sure the -wal file exists */
    if (store_exec(self, "SELECT count(*) FROM sqlite_master"))
        return -1;
    char wal[1100];
    snprintf(wal, sizeof wal, "%s-wal", self->path);
    self->wal_fd = open(wal, O_RDONLY | O_CLOEXEC);
    if (self->wal_fd < 0) {
        snprintf(self->errmsg, sizeof self->errmsg, "open %.400s: %s", wal, strerror(errno));
        return -1;
    }
    if (store_exec(self, "PRAGMA synchronous=NORMAL")) {
        close(self->wal_fd);
        self->wal_fd = -1;
        return -1;
    }
    self->deferred = true;
    return 0;
}

int store_sync(store_t *self)
{
    if (!self->deferred)
        return 0;
    if (fdatasync(self->wal_fd)) {
        snprintf(self->errmsg, sizeof self->errmsg, "fdatasync %.400s-wal: %s", self->path,
                 strerror(errno));
        return -1;
    }
    return 0;
}

static int s_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
    (void)db;
    (void)name;
    store_t *self = arg;
    atomic_store(&self->wal_pages, pages);
    return SQLITE_OK;
}

static void s_signal(store_t *self)
{
    char b = 1;
    ssize_t n = write(self->pipe[1], &b, 1); /* full pipe: a wake-up is pending anyway */
    (void)n;
}

static void *s_syncer(void *arg)
{
    store_t *self = arg;
    pthread_mutex_lock(&self->mu);
    for (;;) {
        while (!self->stop && !self->sync_failed && self->want <= self->synced)
            pthread_cond_wait(&self->cv, &self->mu);
        if (self->sync_failed || self->want <= self->synced)
            break; /* stop with nothing left to sync, or a failed disk */
        uint64_t target = self->want;
        pthread_mutex_unlock(&self->mu);
        int rc = fdatasync(self->wal_fd);
        int err = errno;
        pthread_mutex_lock(&self->mu);
        if (rc) {
            self->sync_failed = true;
            fprintf(stderr, "store: fdatasync %s-wal: %s\n", self->path, strerror(err));
        } else
            self->synced = target;
        pthread_cond_broadcast(&self->cv);
        pthread_mutex_unlock(&self->mu);
        s_signal(self);
        /* checkpoint here, not in the writer's COMMIT: PASSIVE never waits
         * for the writer, and SQLite syncs the WAL before and the database
         * after it */
        if (!rc && atomic_load(&self->wal_pages) >= STORE_CKPT_PAGES) {
            int log = 0, done = 0;
            if (sqlite3_wal_checkpoint_v2(self->ck, NULL, SQLITE_CHECKPOINT_PASSIVE, &log,
                                          &done) == SQLITE_OK &&
                log == done)
                atomic_store(&self->wal_pages, 0);
        }
        pthread_mutex_lock(&self->mu);
    }
    pthread_mutex_unlock(&self->mu);
    return NULL;
}

int store_syncer_start(store_t *self, char *err, size_t errlen)
{
    if (self->syncer)
        return 0;
    if (!self->deferred) {
        snprintf(err, errlen, "syncer: store_defer_sync first");
        return -1;
    }
    if (sqlite3_open_v2(self->path, &self->ck, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "syncer: open %s: %s", self->path,
                 self->ck ? sqlite3_errmsg(self->ck) : "out of memory");
        sqlite3_close(self->ck);
        self->ck = NULL;
        return -1;
    }
    sqlite3_exec(self->ck, "PRAGMA synchronous=FULL", NULL, NULL, NULL);
    if (pipe2(self->pipe, O_NONBLOCK | O_CLOEXEC)) {
        snprintf(err, errlen, "syncer: pipe: %s", strerror(errno));
        sqlite3_close(self->ck);
        self->ck = NULL;
        return -1;
    }
    pthread_mutex_init(&self->mu, NULL);
    pthread_cond_init(&self->cv, NULL);
    self->want = self->synced = 0;
    self->stop = self->sync_failed = false;
    /* the writer no longer checkpoints in its COMMIT: the hook only counts */
    atomic_store(&self->wal_pages, 0);
    sqlite3_wal_hook(self->db, s_wal_hook, self);
    if (pthread_create(&self->thread, NULL, s_syncer, self)) {
        snprintf(err, errlen, "syncer: cannot start the thread");
        sqlite3_wal_autocheckpoint(self->db, STORE_CKPT_PAGES);
        close(self->pipe[0]);
        close(self->pipe[1]);
        self->pipe[0] = self->pipe[1] = -1;
        sqlite3_close(self->ck);
        self->ck = NULL;
        return -1;
    }
    self->syncer = true;
    return 0;
}

void store_syncer_request(store_t *self, uint64_t seq)
{
    if (!self->syncer)
        return;
    pthread_mutex_lock(&self->mu);
    if (seq > self->want) {
        self->want = seq;
        pthread_cond_broadcast(&self->cv);
    }
    pthread_mutex_unlock(&self->mu);
}

int store_syncer_fd(store_t *self)
{
    return self->syncer ? self->pipe[0] : -1;
}

int store_syncer_poll(store_t *self, uint64_t *durable)
{
    if (!self->syncer)
        return 0;
    char buf[64];
    while (read(self->pipe[0], buf, sizeof buf) > 0)
        ;
    pthread_mutex_lock(&self->mu);
    *durable = self->synced;
    bool failed = self->sync_failed;
    pthread_mutex_unlock(&self->mu);
    if (failed)
        snprintf(self->errmsg, sizeof self->errmsg, "fdatasync of %.400s-wal failed", self->path);
    return failed ? -1 : 0;
}

int store_syncer_wait(store_t *self, uint64_t seq, int timeout_ms)
{
    if (!self->syncer)
        return store_sync(self);
    store_syncer_request(self, seq);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&self->mu);
    int rc = 0;
    while (self->synced < seq && !self->sync_failed && rc == 0)
        rc = pthread_cond_timedwait(&self->cv, &self->mu, &until);
    bool ok = self->synced >= seq;
    pthread_mutex_unlock(&self->mu);
    return ok ? 0 : -1;
}

void store_syncer_stop(store_t *self)
{
    if (!self->syncer)
        return;
    pthread_mutex_lock(&self->mu);
    self->stop = true;
    pthread_cond_broadcast(&self->cv);
    pthread_mutex_unlock(&self->mu);
    pthread_join(self->thread, NULL);
    self->syncer = false;
    sqlite3_wal_autocheckpoint(self->db, STORE_CKPT_PAGES);
    sqlite3_close(self->ck);
    self->ck = NULL;
    close(self->pipe[0]);
    close(self->pipe[1]);
    self->pipe[0] = self->pipe[1] = -1;
    pthread_cond_destroy(&self->cv);
    pthread_mutex_destroy(&self->mu);
}
