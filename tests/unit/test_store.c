/* Unit tests of store/: pragmas, migrations, and the UNIQUE constraints that
 * make double allocation impossible. */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "store.h"
#include "broker_schema.h"
#include "worker_schema.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static long long s_pragma(store_t *s, const char *sql)
{
    sqlite3_stmt *st = NULL;
    long long v = -1;
    if (sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static const char *s_text_pragma(store_t *s, const char *sql, char *buf, size_t len)
{
    sqlite3_stmt *st = NULL;
    buf[0] = 0;
    if (sqlite3_prepare_v2(store_db(s), sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        snprintf(buf, len, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return buf;
}

int main(void)
{
    char dir[] = "/tmp/ttstore-test-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    char path[256], err[256], buf[64];
    snprintf(path, sizeof path, "%s/broker.db", dir);

    store_t *s = store_open(path, broker_migrations, broker_migrations_n, err,
                            sizeof err);
    CHECK(s != NULL);
    if (!s) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    CHECK(strcmp(s_text_pragma(s, "PRAGMA journal_mode", buf, sizeof buf), "wal") == 0);
    CHECK(s_pragma(s, "PRAGMA synchronous") == 2); /* FULL */
    CHECK(s_pragma(s, "PRAGMA foreign_keys") == 1);
    CHECK(s_pragma(s, "PRAGMA user_version") == broker_migrations_n);
    CHECK(store_version(s) == broker_migrations_n);

    CHECK(store_exec(s, "INSERT INTO hosts (id, cpu_total, mem_total, disk_total) VALUES "
                        "('h1', 4, 4096, 100000)") == 0);
    CHECK(store_exec(s, "INSERT INTO envs (id, tenant, name, state, created_at, expires_at, "
                        "lifetime, deny_outgoing, ports) VALUES (1, 't', 'e', 'running', 0, 1, "
                        "1, 0, '22')") == 0);
    /* env name unique per tenant */
    CHECK(store_exec(s, "INSERT INTO envs (id, tenant, name, state, created_at, expires_at, "
                        "lifetime, deny_outgoing, ports) VALUES (2, 't', 'e', 'running', 0, 1, "
                        "1, 0, '22')") != 0);
    const char *vm1 = "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                      "mem, disk, state, phase) VALUES (1, 1, 'h1', 2, '10.10.0.2', "
                      "'52:54:00:00:00:01', 'img', 'process', 1, 1, 1, 1, 'active')";
    CHECK(store_exec(s, vm1) == 0);
    /* same VM id on the same host */
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (2, 1, 'h1', 2, '10.10.0.3', "
                        "'52:54:00:00:00:02', 'img', 'process', 1, 1, 1, 1, 'active')") != 0);
    /* same IP on the same host */
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (2, 1, 'h1', 3, '10.10.0.2', "
                        "'52:54:00:00:00:02', 'img', 'process', 1, 1, 1, 1, 'active')") != 0);
    /* same MAC anywhere */
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (2, 1, 'h1', 3, '10.10.0.3', "
                        "'52:54:00:00:00:01', 'img', 'process', 1, 1, 1, 1, 'active')") != 0);
    /* VM id out of range, bad phase, unknown host */
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (3, 1, 'h1', 1, '10.10.0.1', "
                        "'52:54:00:00:00:03', 'img', 'process', 1, 1, 1, 1, 'active')") != 0);
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (3, 1, 'h1', 4, '10.10.0.4', "
                        "'52:54:00:00:00:03', 'img', 'process', 1, 1, 1, 1, 'maybe')") != 0);
    CHECK(store_exec(s, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                        "mem, disk, state, phase) VALUES (3, 1, 'nohost', 4, '10.10.0.4', "
                        "'52:54:00:00:00:03', 'img', 'process', 1, 1, 1, 1, 'active')") != 0);
    /* public ports: unique per host and in range */
    CHECK(store_exec(s, "INSERT INTO ports (host, public_port, vm_uid, guest_port) "
                        "VALUES ('h1', 40000, 1, 22)") == 0);
    CHECK(store_exec(s, "INSERT INTO ports (host, public_port, vm_uid, guest_port) "
                        "VALUES ('h1', 40000, 1, 80)") != 0);
    CHECK(store_exec(s, "INSERT INTO ports (host, public_port, vm_uid, guest_port) "
                        "VALUES ('h1', 39999, 1, 80)") != 0);
    CHECK(store_exec(s, "INSERT INTO ports (host, public_port, vm_uid, guest_port) "
                        "VALUES ('h1', 60000, 1, 80)") != 0);
    /* deleting the env cascades to its VMs and their ports */
    CHECK(store_exec(s, "DELETE FROM envs WHERE id = 1") == 0);
    CHECK(s_pragma(s, "SELECT count(*) FROM vms") == 0);
    CHECK(s_pragma(s, "SELECT count(*) FROM ports") == 0);

    /* transactions: rollback undoes, commit keeps */
    CHECK(store_begin(s) == 0);
    CHECK(store_in_tx(s));
    CHECK(store_exec(s, "INSERT INTO meta VALUES ('a', '1')") == 0);
    CHECK(store_rollback(s) == 0);
    CHECK(s_pragma(s, "SELECT count(*) FROM meta") == 0);
    CHECK(store_begin(s) == 0);
    sqlite3_stmt *st = store_stmt(s, "INSERT INTO meta VALUES (?1, ?2)");
    CHECK(st != NULL);
    sqlite3_bind_text(st, 1, "b", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, "2", -1, SQLITE_STATIC);
    CHECK(store_step_done(s, st) == 0);
    CHECK(store_commit(s) == 0);
    CHECK(s_pragma(s, "SELECT count(*) FROM meta") == 1);
    store_destroy(&s);
    CHECK(s == NULL);

    /* reopen: no migration runs again, data is there */
    s = store_open(path, broker_migrations, broker_migrations_n, err, sizeof err);
    CHECK(s && s_pragma(s, "SELECT count(*) FROM meta") == 1);
    store_destroy(&s);

    /* deferred sync and the syncer: commits return at once, the syncer
     * reports them durable in order, a stop waits for the sync in flight,
     * and the rows are there after a reopen */
    s = store_open(path, broker_migrations, broker_migrations_n, err, sizeof err);
    CHECK(s && store_defer_sync(s) == 0);
    CHECK(s && s_pragma(s, "PRAGMA synchronous") == 1); /* NORMAL: the WAL fsync is ours */
    CHECK(s && store_sync(s) == 0);
    CHECK(s && store_syncer_start(s, err, sizeof err) == 0 && store_syncer_fd(s) >= 0);
    for (int i = 0; s && i < 50; i++) {
        CHECK(store_begin(s) == 0);
        sqlite3_stmt *ins = store_stmt(s, "INSERT INTO meta (key, value) VALUES (?1, 'x')");
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        sqlite3_bind_text(ins, 1, key, -1, SQLITE_TRANSIENT);
        CHECK(store_step_done(s, ins) == 0);
        CHECK(store_commit(s) == 0);
        store_syncer_request(s, (uint64_t)i + 1);
    }
    uint64_t durable = 0;
    CHECK(s && store_syncer_wait(s, 50, 10000) == 0);
    CHECK(s && store_syncer_poll(s, &durable) == 0 && durable == 50);
    if (s)
        store_syncer_stop(s);
    store_destroy(&s);
    s = store_open(path, broker_migrations, broker_migrations_n, err, sizeof err);
    CHECK(s && s_pragma(s, "SELECT count(*) FROM meta") == 51);
    store_destroy(&s);

    /* a file from a newer version is refused, not touched */
    s = store_open(path, broker_migrations, 0, err, sizeof err);
    CHECK(s == NULL && strstr(err, "newer") != NULL);

    /* the worker schema opens too */
    snprintf(path, sizeof path, "%s/worker.db", dir);
    s = store_open(path, worker_migrations, worker_migrations_n, err, sizeof err);
    CHECK(s != NULL);
    store_destroy(&s);

    /* a path that cannot be created gives an error, not a crash */
    s = store_open("/nonexistent-dir/x/broker.db", broker_migrations,
                   broker_migrations_n, err, sizeof err);
    CHECK(s == NULL && strlen(err) > 0);

    const char *files[] = {"broker.db", "broker.db-wal", "broker.db-shm",
                           "worker.db", "worker.db-wal", "worker.db-shm"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    if (rmdir(dir) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
    return s_report("store");
}
