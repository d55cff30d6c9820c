/*
 * store: the SQLite layer of ttbroker and ttworker.
 *
 * One file per daemon, opened in WAL mode with synchronous=FULL and foreign
 * keys on. The schema is a list of migrations; PRAGMA user_version records
 * how many have been applied, and store_open() applies the rest in one
 * transaction, so a crash mid-migration leaves the old version intact.
 *
 * Prepared statements are cached by their SQL text pointer (callers pass
 * string literals), so hot paths never re-parse SQL. Transactions are
 * explicit: the broker groups every change of one loop iteration in one
 * store_begin() .. store_commit() pair (group commit) and sends its
 * replies only after the commit is durable (inline, or through the
 * deferred sync and syncer thread below).
 *
 * Depends on SQLite only.
 */
#ifndef TT_STORE_H
#define TT_STORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

typedef struct store_t store_t;

/* Open (creating if needed) the database at path and migrate it.
 * Returns NULL with a reason in err on failure. */
store_t *store_open(const char *path, const char *const *migrations, int n_migrations, char *err,
                    size_t errlen);
void store_destroy(store_t **self_p);

sqlite3 *store_db(store_t *self);
/* user_version after migration. */
int store_version(store_t *self);

/* Run SQL without results. 0 / -1 (the error is logged and kept for store_errmsg). */
int store_exec(store_t *self, const char *sql);
/* A cached, reset statement for sql (which must outlive the store: a literal).
 * NULL on a prepare error. */
sqlite3_stmt *store_stmt(store_t *self, const char *sql);
/* Step a statement that returns no rows (INSERT/UPDATE/DELETE) and reset it.
 * 0 / -1. */
int store_step_done(store_t *self, sqlite3_stmt *st);

int store_begin(store_t *self);
int store_commit(store_t *self);
int store_rollback(store_t *self);
int store_in_tx(store_t *self);
/* Savepoints inside the open transaction (store_begin first): the broker
 * takes one per request, so a request that fails takes back its own rows
 * and nothing of the others in the batch. name must be an SQL identifier.
 * 0 / -1. */
int store_savepoint(store_t *self, const char *name);
/* Keep what was staged since the savepoint (it joins the transaction). */
int store_release(store_t *self, const char *name);
/* Take back what was staged since the savepoint and forget it. */
int store_rollback_to(store_t *self, const char *name);

/* ---- deferred sync: commit now, fsync behind (the broker's pipeline) ----
 *
 * store_defer_sync() switches the file to synchronous=NORMAL: COMMIT then
 * writes the transaction's WAL frames (write(), no fsync) and returns.
 * A transaction is durable once the WAL file has been fdatasync'ed after its
 * COMMIT returned: store_sync() does that inline, or the syncer thread does it
 * behind the caller's back (store_syncer_*), covering every COMMIT that
 * returned before the sync started. SQLite itself still syncs the WAL before
 * each checkpoint and the database after it, so a checkpoint never exposes
 * frames that are not on disk. With the syncer, checkpoints run on the
 * syncer's own connection (PASSIVE, never blocking the writer).
 * The caller must not show anyone what a transaction did before it is
 * durable. 0 / -1 (then the store stays synchronous=FULL). */
int store_defer_sync(store_t *self);
/* fdatasync the WAL: every COMMIT that returned is durable after 0. */
int store_sync(store_t *self);
/* Start the syncer thread (after store_defer_sync). 0 / -1 with err. */
int store_syncer_start(store_t *self, char *err, size_t errlen);
/* Ask for every COMMIT up to the caller's sequence number seq (its own
 * count of returned COMMITs) to become durable. Never blocks on I/O. */
void store_syncer_request(store_t *self, uint64_t seq);
/* A descriptor that turns readable when the durable sequence moved. -1
 * without a syncer. */
int store_syncer_fd(store_t *self);
/* Drain the descriptor; *durable = highest durable seq. -1 when a sync
 * failed (the kernel may have dropped the pages: nothing after the last
 * durable seq can be trusted). */
int store_syncer_poll(store_t *self, uint64_t *durable);
/* Wait until seq is durable (bounded by timeout_ms). 0 / -1. */
int store_syncer_wait(store_t *self, uint64_t seq, int timeout_ms);
/* Stop and join the thread (waits for the sync in flight). */
void store_syncer_stop(store_t *self);

/* Record the daemon's overcommit ratios (cpu, mem, disk) in the meta table
 * (keys cpu_overcommit, mem_overcommit, disk_overcommit; both schemas have
 * it), for tools/ttcheck to read. Outside a transaction it commits at once.
 * 0 / -1. */
int store_meta_ratios(store_t *self, const double ratios[3]);

/* Last error text. */
const char *store_errmsg(store_t *self);

#endif
