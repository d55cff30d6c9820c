/*
 * worker_schema: the schema of worker.db as a migration list.
 *
 * Append only: a released migration is never edited, a change is a new
 * entry.
 */
#include "worker_schema.h"

const char *const worker_migrations[] = {
    /* 1: the initial schema */
    "CREATE TABLE vms ("
    "  vm_id INTEGER PRIMARY KEY CHECK (vm_id BETWEEN 2 AND 65534),"
    "  env TEXT NOT NULL,"
    "  image TEXT NOT NULL,"
    "  engine TEXT NOT NULL,"
    "  cpu INTEGER NOT NULL,"
    "  mem INTEGER NOT NULL,"
    "  disk INTEGER NOT NULL,"
    "  ip TEXT NOT NULL UNIQUE,"
    "  mac TEXT NOT NULL UNIQUE,"
    "  ports TEXT NOT NULL DEFAULT '',"
    "  deny_outgoing INTEGER NOT NULL DEFAULT 0,"
    "  expires_at INTEGER NOT NULL,"
    "  state INTEGER NOT NULL,"
    "  pid INTEGER NOT NULL DEFAULT 0,"
    "  start_time INTEGER NOT NULL DEFAULT 0,"
    "  updated_at INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    /* 2: a VM of a catalog image (issue 12) names it by digest ("" = a
     * host-local image of --images) */
    "ALTER TABLE vms ADD COLUMN image_digest TEXT NOT NULL DEFAULT '';",
};
const int worker_migrations_n =
    (int)(sizeof worker_migrations / sizeof *worker_migrations);
