/*
 * worker_schema: worker.db's migrations, owned by the worker (store/ knows
 * only SQLite). Index i moves PRAGMA user_version i -> i+1; pass both to
 * store_open().
 */
#ifndef TT_WORKER_SCHEMA_H
#define TT_WORKER_SCHEMA_H

extern const char *const worker_migrations[];
extern const int worker_migrations_n;

#endif
