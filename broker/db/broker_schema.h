/*
 * broker_schema: broker.db's migrations, owned by the broker (store/ knows
 * only SQLite). Index i moves PRAGMA user_version i -> i+1; pass both to
 * store_open().
 */
#ifndef TT_BROKER_SCHEMA_H
#define TT_BROKER_SCHEMA_H

extern const char *const broker_migrations[];
extern const int broker_migrations_n;

#endif
