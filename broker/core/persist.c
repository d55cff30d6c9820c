/*
 * persist: the broker's rows in broker.db.
 *
 * Every write stages into the transaction the loop opened for this batch;
 * nothing here commits. A failed statement sets self->failed, and the loop
 * then rolls the batch back and reloads the model from the file, so memory
 * never drifts from what is on disk.
 *
 * persist_load() rebuilds the model at start: hosts (all down until they
 * say READY), envs, VMs with their allocations and ports, and the
 * idempotency records. Envs caught mid-create are rolled back (broker.c
 * s_recover): their VMs are no longer known, so the READY reconciliation
 * of each host destroys whatever the worker made. A delete removes its
 * rows in the batch that answers it, so there is no "deleting" to finish.
 */
#include "persist.h"
#include "ttblob.h"
#include "ttguest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_fail(broker_t *self, const char *what)
{
    zsys_error("broker.db: %s: %s", what, sqlite3_errmsg(store_db(self->store)));
    self->failed = true;
}

static sqlite3_stmt *s_stmt(broker_t *self, const char *sql)
{
    if (self->failed)
        return NULL;
    if (store_begin(self->store)) {
        s_fail(self, "begin");
        return NULL;
    }
    /* the first row of a request opens its savepoint (persist_savepoint_begin) */
    if (self->req_active && !self->req_savepoint) {
        if (store_savepoint(self->store, "req")) {
            s_fail(self, "savepoint");
            return NULL;
        }
        self->req_savepoint = true;
    }
    sqlite3_stmt *st = store_stmt(self->store, sql);
    if (!st)
        s_fail(self, "prepare");
    self->dirty = true;
    return st;
}

int persist_open(broker_t *self)
{
    if (self->failed)
        return -1;
    if (store_begin(self->store)) {
        s_fail(self, "begin");
        return -1;
    }
    if (self->req_active && !self->req_savepoint) {
        if (store_savepoint(self->store, "req")) {
            s_fail(self, "savepoint");
            return -1;
        }
        self->req_savepoint = true;
    }
    self->dirty = true;
    return 0;
}

static void s_done(broker_t *self, sqlite3_stmt *st, const char *what)
{
    if (store_step_done(self->store, st))
        s_fail(self, what);
}

static void s_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

static char *s_join(char **items, int n)
{
    size_t len = 1;
    for (int i = 0; i < n; i++)
        len += strlen(items[i]) + 1;
    char *out = calloc(1, len);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, items[i]);
    }
    return out;
}

static int s_split(const char *s, char **items, int max)
{
    int n = 0;
    const char *p = s;
    while (p && *p && n < max) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len > 0 && len <= TT_MAX_NAME)
            items[n++] = strndup(p, len);
        p = comma ? comma + 1 : NULL;
    }
    return n;
}

void persist_host(broker_t *self, host_t *h)
{
    sqlite3_stmt *st =
        s_stmt(self, "INSERT INTO hosts (id, cpu_total, mem_total, disk_total, engines, images, "
                     "draining, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
                     "ON CONFLICT (id) DO UPDATE SET cpu_total = ?2, mem_total = ?3, "
                     "disk_total = ?4, engines = ?5, images = ?6, draining = ?7, last_seen = ?8");
    if (!st)
        return;
    char *engines = s_join(h->engines, h->n_engines);
    char *images = s_join(h->images, h->n_images);
    s_text(st, 1, h->id);
    sqlite3_bind_int64(st, 2, h->adv_cpu); /* the pin lives in host_pins */
    sqlite3_bind_int64(st, 3, (sqlite3_int64)h->adv_mem);
    sqlite3_bind_int64(st, 4, (sqlite3_int64)h->adv_disk);
    s_text(st, 5, engines ? engines : "");
    s_text(st, 6, images ? images : "");
    sqlite3_bind_int(st, 7, h->draining);
    sqlite3_bind_int64(st, 8, h->last_seen);
    s_done(self, st, "host");
    free(engines);
    free(images);
}

void persist_host_delete(broker_t *self, host_t *h)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM hosts WHERE id = ?1");
    if (!st)
        return;
    s_text(st, 1, h->id);
    s_done(self, st, "delete host");
    persist_host_pin(self, h, true);
}

void persist_host_pin(broker_t *self, const host_t *h, bool drop)
{
    sqlite3_stmt *st = s_stmt(self, drop || !(h->pin_cpu || h->pin_mem || h->pin_disk)
                                        ? "DELETE FROM host_pins WHERE host = ?1"
                                        : "INSERT OR REPLACE INTO host_pins (host, cpu, mem, disk) "
                                          "VALUES (?1, ?2, ?3, ?4)");
    if (!st)
        return;
    s_text(st, 1, h->id);
    if (sqlite3_bind_parameter_count(st) == 4) {
        sqlite3_bind_int64(st, 2, h->pin_cpu);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)h->pin_mem);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)h->pin_disk);
    }
    s_done(self, st, "host pin");
}

static void s_ports_text(const uint32_t *p, int n, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%u", i ? "," : "", p[i]);
}

static int s_ports_parse(const char *s, uint32_t *p, int max)
{
    int n = 0;
    while (s && *s && n < max) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0 || v > 65535)
            break;
        p[n++] = (uint32_t)v;
        s = *end == ',' ? end + 1 : NULL;
    }
    return n;
}

static void s_env_bind(sqlite3_stmt *st, env_t *env)
{
    char ports[TT_MAX_PORTS_PER_VM * 6 + 1];
    s_ports_text(env->gports, env->n_gports, ports, sizeof ports);
    sqlite3_bind_int64(st, 1, env->id);
    s_text(st, 2, env->tenant);
    s_text(st, 3, env->name);
    s_text(st, 4, model_target_name(env->target));
    sqlite3_bind_int64(st, 5, env->created_at);
    sqlite3_bind_int64(st, 6, env->expires_at);
    sqlite3_bind_int64(st, 7, env->lifetime);
    sqlite3_bind_int(st, 8, env->deny_outgoing);
    s_text(st, 9, ports);
    sqlite3_bind_int64(st, 10, env->last_mgmt);
}

/* The env's guest inputs (issue 11), only when it has any. */
static void s_env_guest_insert(broker_t *self, env_t *env)
{
    if (!env->n_ssh_keys && !env->user_data_len && !env->ready && !env->group_ready)
        return;
    sqlite3_stmt *st = s_stmt(self, "INSERT INTO env_guest (env_id, ssh_keys, user_data, "
                                    "ready, group_ready) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!st)
        return;
    size_t kl = 1;
    for (int i = 0; i < env->n_ssh_keys; i++)
        kl += strlen(env->ssh_keys[i]) + 1;
    char *keys = malloc(kl);
    if (!keys) {
        sqlite3_reset(st);
        s_fail(self, "insert env_guest: out of memory");
        return;
    }
    keys[0] = '\0';
    size_t off = 0;
    for (int i = 0; i < env->n_ssh_keys; i++)
        off += (size_t)snprintf(keys + off, kl - off, "%s\n", env->ssh_keys[i]);
    sqlite3_bind_int64(st, 1, env->id);
    sqlite3_bind_text(st, 2, keys, -1, free);
    if (env->user_data_len)
        sqlite3_bind_blob(st, 3, env->user_data, (int)env->user_data_len, SQLITE_TRANSIENT);
    s_text(st, 4, env->ready ? env->ready : "");
    s_text(st, 5, env->group_ready ? env->group_ready : "");
    s_done(self, st, "insert env_guest");
}

void persist_env_insert(broker_t *self, env_t *env)
{
    sqlite3_stmt *st = s_stmt(self, "INSERT INTO envs (id, tenant, name, state, created_at, "
                                    "expires_at, lifetime, deny_outgoing, ports, last_mgmt) "
                                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (!st)
        return;
    s_env_bind(st, env);
    s_done(self, st, "insert env");
    s_env_guest_insert(self, env);
    if (env->n_labels) {
        char text[TT_MAX_LABELS * (TT_MAX_LABEL + 1) + 1];
        model_env_labels_text(env, text, sizeof text);
        st = s_stmt(self, "UPDATE envs SET labels = ?2 WHERE id = ?1");
        if (!st)
            return;
        sqlite3_bind_int64(st, 1, env->id);
        s_text(st, 2, text);
        s_done(self, st, "insert env labels");
    }
    if (env->boot[0]) {
        st = s_stmt(self, "UPDATE envs SET boot = ?2 WHERE id = ?1");
        if (!st)
            return;
        sqlite3_bind_int64(st, 1, env->id);
        s_text(st, 2, env->boot);
        s_done(self, st, "insert env boot");
    }
}

void persist_env_update(broker_t *self, env_t *env)
{
    sqlite3_stmt *st = s_stmt(self, "UPDATE envs SET tenant = ?2, name = ?3, state = ?4, "
                                    "created_at = ?5, expires_at = ?6, lifetime = ?7, "
                                    "deny_outgoing = ?8, ports = ?9, last_mgmt = ?10 "
                                    "WHERE id = ?1");
    if (!st)
        return;
    s_env_bind(st, env);
    s_done(self, st, "update env");
}

void persist_env_delete(broker_t *self, env_t *env)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM envs WHERE id = ?1");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, env->id);
    s_done(self, st, "delete env");
}

static void s_ports_insert(broker_t *self, vm_t *vm);

static void s_vm_bind(sqlite3_stmt *st, vm_t *vm)
{
    sqlite3_bind_int64(st, 1, vm->uid);
    sqlite3_bind_int64(st, 2, vm->env->id);
    s_text(st, 3, vm->host->id);
    sqlite3_bind_int(st, 4, (int)vm->vm_id);
    s_text(st, 5, vm->ip);
    s_text(st, 6, vm->mac);
    s_text(st, 7, vm->image);
    s_text(st, 8, vm->engine);
    sqlite3_bind_int(st, 9, (int)vm->cpu);
    sqlite3_bind_int64(st, 10, vm->mem);
    sqlite3_bind_int64(st, 11, vm->disk);
    sqlite3_bind_int(st, 12, vm->state);
    s_text(st, 13, vm->active ? "active" : "pending");
    s_text(st, 14, vm->image_digest);
    s_text(st, 15, vm->image_kind);
    s_text(st, 16, vm->image_blobs);
}

void persist_vm_insert(broker_t *self, vm_t *vm)
{
    sqlite3_stmt *st =
        s_stmt(self, "INSERT INTO vms (uid, env_id, host, vm_id, ip, mac, image, engine, cpu, "
                     "mem, disk, state, phase, image_digest, image_kind, image_blobs) VALUES (?1, ?2, "
                     "?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)");
    if (!st)
        return;
    s_vm_bind(st, vm);
    s_done(self, st, "insert vm");
    s_ports_insert(self, vm); /* a new VM has no port rows to delete */
}

void persist_vm_update(broker_t *self, vm_t *vm)
{
    sqlite3_stmt *st = s_stmt(self, "UPDATE vms SET env_id = ?2, host = ?3, vm_id = ?4, ip = ?5, "
                                    "mac = ?6, image = ?7, engine = ?8, cpu = ?9, mem = ?10, "
                                    "disk = ?11, state = ?12, phase = ?13, image_digest = ?14, "
                                    "image_kind = ?15, image_blobs = ?16 WHERE uid = ?1");
    if (!st)
        return;
    s_vm_bind(st, vm);
    s_done(self, st, "update vm");
}

void persist_vm_delete(broker_t *self, vm_t *vm)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM vms WHERE uid = ?1");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, vm->uid);
    s_done(self, st, "delete vm");
}

void persist_vm_ports(broker_t *self, vm_t *vm)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM ports WHERE vm_uid = ?1");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, vm->uid);
    s_done(self, st, "delete ports");
    s_ports_insert(self, vm);
}

static void s_ports_insert(broker_t *self, vm_t *vm)
{
    sqlite3_stmt *st;
    for (int i = 0; i < vm->n_ports; i++) {
        st = s_stmt(self, "INSERT INTO ports (host, public_port, vm_uid, guest_port) "
                          "VALUES (?1, ?2, ?3, ?4)");
        if (!st)
            return;
        s_text(st, 1, vm->host->id);
        sqlite3_bind_int(st, 2, (int)vm->ports[i].public_port);
        sqlite3_bind_int64(st, 3, vm->uid);
        sqlite3_bind_int(st, 4, (int)vm->ports[i].guest);
        s_done(self, st, "insert port");
    }
}

void persist_request_begin(broker_t *self, const char *tenant, const char *rid)
{
    sqlite3_stmt *st = s_stmt(self, "INSERT OR REPLACE INTO requests (tenant, request_id, "
                                    "created_at, reply) VALUES (?1, ?2, ?3, NULL)");
    if (!st)
        return;
    s_text(st, 1, tenant);
    s_text(st, 2, rid);
    sqlite3_bind_int64(st, 3, tt_now());
    s_done(self, st, "insert request");
}

void persist_request_fp(broker_t *self, const char *tenant, const char *rid, const uint8_t *fp)
{
    sqlite3_stmt *st =
        s_stmt(self, "UPDATE requests SET fp = ?3 WHERE tenant = ?1 AND request_id = ?2");
    if (!st)
        return;
    s_text(st, 1, tenant);
    s_text(st, 2, rid);
    sqlite3_bind_blob(st, 3, fp, 20, SQLITE_TRANSIENT);
    s_done(self, st, "request fingerprint");
}

void persist_request_done(broker_t *self, const char *tenant, const char *rid,
                          const uint8_t *reply, size_t len)
{
    sqlite3_stmt *st = s_stmt(self, "INSERT INTO requests (tenant, request_id, created_at, "
                                    "reply) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tenant, "
                                    "request_id) DO UPDATE SET reply = ?4");
    if (!st)
        return;
    s_text(st, 1, tenant);
    s_text(st, 2, rid);
    sqlite3_bind_int64(st, 3, tt_now());
    sqlite3_bind_blob(st, 4, reply, (int)len, SQLITE_TRANSIENT);
    s_done(self, st, "request reply");
}

void persist_requests_prune(broker_t *self, int64_t cutoff)
{
    sqlite3_stmt *st =
        s_stmt(self, "DELETE FROM requests WHERE created_at < ?1 AND reply IS NOT NULL");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, cutoff);
    s_done(self, st, "prune requests");
}

/* ---- the event log ---- */

void persist_event(broker_t *self, uint64_t id, int64_t time, const char *tenant,
                   const uint8_t *body, size_t len)
{
    sqlite3_stmt *st =
        s_stmt(self, "INSERT INTO events (id, time, tenant, body) VALUES (?1, ?2, ?3, ?4)");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
    sqlite3_bind_int64(st, 2, time);
    s_text(st, 3, tenant ? tenant : "");
    sqlite3_bind_blob(st, 4, body, (int)len, SQLITE_TRANSIENT);
    s_done(self, st, "insert event");
    if (id <= BROKER_EVLOG)
        return;
    /* ids only grow, so this keeps at most the newest BROKER_EVLOG */
    st = s_stmt(self, "DELETE FROM events WHERE id <= ?1");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)(id - BROKER_EVLOG));
    s_done(self, st, "trim events");
}

void persist_events_prune(broker_t *self, int64_t cutoff)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM events WHERE time < ?1");
    if (!st)
        return;
    sqlite3_bind_int64(st, 1, cutoff);
    s_done(self, st, "prune events");
}

int persist_events_scan(broker_t *self, int64_t since, const char *tenant,
                        bool (*f)(void *arg, const uint8_t *body, size_t len), void *arg)
{
    sqlite3_stmt *st = store_stmt(self->store, "SELECT body FROM events WHERE time >= ?1 AND "
                                               "(?2 IS NULL OR tenant = ?2) ORDER BY id DESC");
    if (!st)
        return -1;
    sqlite3_bind_int64(st, 1, since);
    if (tenant)
        s_text(st, 2, tenant);
    else
        sqlite3_bind_null(st, 2);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const uint8_t *body = sqlite3_column_blob(st, 0);
        int len = sqlite3_column_bytes(st, 0);
        if (body && len > 0 && !f(arg, body, (size_t)len)) {
            rc = SQLITE_DONE;
            break;
        }
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

bool persist_events_trimmed(broker_t *self, int64_t *oldest)
{
    *oldest = 0;
    sqlite3_stmt *st = store_stmt(self->store, "SELECT id, time FROM events ORDER BY id LIMIT 1");
    if (!st)
        return false;
    bool trimmed;
    if (sqlite3_step(st) == SQLITE_ROW) {
        trimmed = sqlite3_column_int64(st, 0) > 1;
        *oldest = sqlite3_column_int64(st, 1);
    } else
        trimmed = self->next_event_id > 1; /* every event was trimmed */
    sqlite3_reset(st);
    return trimmed;
}

/* The id after every one the log ever gave (AUTOINCREMENT's counter
 * outlives the rows). */
static int s_load_event_id(broker_t *self)
{
    sqlite3_stmt *st = store_stmt(self->store, "SELECT max(coalesce((SELECT seq FROM "
                                               "sqlite_sequence WHERE name = 'events'), 0), "
                                               "coalesce((SELECT max(id) FROM events), 0))");
    if (!st)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        self->next_event_id = (uint64_t)sqlite3_column_int64(st, 0) + 1;
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : -1;
}

/* ---- load ---- */

static int s_load_hosts(broker_t *self)
{
    sqlite3_stmt *st = store_stmt(self->store, "SELECT id, cpu_total, mem_total, disk_total, "
                                               "engines, images, draining, last_seen FROM hosts");
    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        if (!id || !tt_name_valid(id))
            continue;
        host_t *h = model_host_ensure(self, id);
        if (!h)
            return -1;
        h->cpu_total = (uint32_t)sqlite3_column_int64(st, 1);
        h->mem_total = (uint64_t)sqlite3_column_int64(st, 2);
        h->disk_total = (uint64_t)sqlite3_column_int64(st, 3);
        h->n_engines =
            s_split((const char *)sqlite3_column_text(st, 4), h->engines, BROKER_MAX_ENGINES);
        h->n_images =
            s_split((const char *)sqlite3_column_text(st, 5), h->images, BROKER_MAX_IMAGES);
        h->draining = sqlite3_column_int(st, 6) != 0;
        h->last_seen = sqlite3_column_int64(st, 7);
        h->adv_cpu = h->cpu_total, h->adv_mem = h->mem_total, h->adv_disk = h->disk_total;
    }
    sqlite3_reset(st);
    st = store_stmt(self->store, "SELECT host, cpu, mem, disk FROM host_pins");
    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0);
        host_t *h = id ? model_host_get(self, id) : NULL;
        if (!h)
            continue;
        h->pin_cpu = (uint32_t)sqlite3_column_int64(st, 1);
        h->pin_mem = (uint64_t)sqlite3_column_int64(st, 2);
        h->pin_disk = (uint64_t)sqlite3_column_int64(st, 3);
        model_host_caps(h);
    }
    sqlite3_reset(st);
    return 0;
}

static int s_load_envs(broker_t *self)
{
    sqlite3_stmt *st =
        store_stmt(self->store, "SELECT id, tenant, name, state, created_at, expires_at, "
                                "lifetime, deny_outgoing, ports, last_mgmt, labels, boot FROM envs");
    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *tenant = (const char *)sqlite3_column_text(st, 1);
        const char *name = (const char *)sqlite3_column_text(st, 2);
        const char *state = (const char *)sqlite3_column_text(st, 3);
        int target = state ? model_target_parse(state) : -1;
        if (!tenant || !name || target < 0) {
            zsys_error("broker.db: env row %lld is damaged; skipped",
                       (long long)sqlite3_column_int64(st, 0));
            continue;
        }
        env_t *env = model_env_new(self, tenant, name);
        if (!env)
            return -1;
        env->id = sqlite3_column_int64(st, 0);
        env->target = (env_target_t)target;
        env->created_at = sqlite3_column_int64(st, 4);
        env->expires_at = sqlite3_column_int64(st, 5);
        env->lifetime = sqlite3_column_int64(st, 6);
        env->deny_outgoing = sqlite3_column_int(st, 7) != 0;
        env->n_gports = s_ports_parse((const char *)sqlite3_column_text(st, 8), env->gports,
                                      TT_MAX_PORTS_PER_VM);
        env->last_mgmt = sqlite3_column_int64(st, 9);
        model_env_set_labels_text(env, (const char *)sqlite3_column_text(st, 10));
        const char *boot = (const char *)sqlite3_column_text(st, 11);
        if (boot && (strcmp(boot, "auto") == 0 || strcmp(boot, "snapshot") == 0 ||
                     strcmp(boot, "cold") == 0))
            snprintf(env->boot, sizeof env->boot, "%s", boot);
        if (env->id >= self->next_env_id)
            self->next_env_id = env->id + 1;
    }
    sqlite3_reset(st);
    return 0;
}

static env_t *s_env_by_id(broker_t *self, int64_t id)
{
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        if (e->id == id)
            return e;
    return NULL;
}

static int s_load_env_guest(broker_t *self)
{
    sqlite3_stmt *st = store_stmt(self->store, "SELECT env_id, ssh_keys, user_data, ready, "
                                               "group_ready FROM env_guest");
    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        env_t *env = s_env_by_id(self, sqlite3_column_int64(st, 0));
        if (!env)
            continue;
        const char *text = (const char *)sqlite3_column_text(st, 1);
        char *keys = strdup(text ? text : "");
        char *argv[TT_SSH_KEYS_MAX];
        int n = 0;
        for (char *save = NULL, *k = keys ? strtok_r(keys, "\n", &save) : NULL;
             k && n < TT_SSH_KEYS_MAX; k = strtok_r(NULL, "\n", &save))
            argv[n++] = k;
        const uint8_t *ud = sqlite3_column_blob(st, 2);
        size_t ud_len = (size_t)sqlite3_column_bytes(st, 2);
        int rc = keys ? model_env_set_guest(env, argv, n, ud, ud_len,
                                            (const char *)sqlite3_column_text(st, 3),
                                            (const char *)sqlite3_column_text(st, 4))
                      : -1;
        free(keys);
        if (rc) {
            sqlite3_reset(st);
            return -1;
        }
    }
    sqlite3_reset(st);
    return 0;
}

static int s_load_vms(broker_t *self)
{
    /* index envs by id for the join */
    zhashx_t *by_id = zhashx_new();
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs)) {
        char k[32];
        snprintf(k, sizeof k, "%lld", (long long)e->id);
        zhashx_insert(by_id, k, e);
    }
    sqlite3_stmt *st = store_stmt(self->store, "SELECT uid, env_id, host, vm_id, mac, image, "
                                               "engine, cpu, mem, disk, state, phase, "
                                               "image_digest, image_kind, image_blobs FROM vms "
                                               "ORDER BY uid");
    if (!st) {
        zhashx_destroy(&by_id);
        return -1;
    }
    while (sqlite3_step(st) == SQLITE_ROW) {
        char k[32];
        snprintf(k, sizeof k, "%lld", (long long)sqlite3_column_int64(st, 1));
        env_t *env = zhashx_lookup(by_id, k);
        const char *hid = (const char *)sqlite3_column_text(st, 2);
        const char *mac_s = (const char *)sqlite3_column_text(st, 4);
        const char *image = (const char *)sqlite3_column_text(st, 5);
        const char *engine = (const char *)sqlite3_column_text(st, 6);
        uint64_t mac;
        host_t *host = hid ? model_host_get(self, hid) : NULL;
        if (!env || !host || !mac_s || alloc_mac_parse(mac_s, &mac) || !image || !engine) {
            zsys_error("broker.db: vm row %lld is damaged; skipped",
                       (long long)sqlite3_column_int64(st, 0));
            continue;
        }
        vm_t *vm = model_vm_add(self, env, host, (uint32_t)sqlite3_column_int(st, 3), mac);
        if (!vm)
            break;
        vm->uid = sqlite3_column_int64(st, 0);
        snprintf(vm->image, sizeof vm->image, "%s", image);
        snprintf(vm->engine, sizeof vm->engine, "%s", engine);
        model_vm_set_hw(vm, (uint32_t)sqlite3_column_int(st, 7),
                        (uint32_t)sqlite3_column_int64(st, 8),
                        (uint32_t)sqlite3_column_int64(st, 9));
        model_vm_set_state(vm, sqlite3_column_int(st, 10));
        const char *phase = (const char *)sqlite3_column_text(st, 11);
        vm->active = phase && strcmp(phase, "active") == 0;
        const char *dg = (const char *)sqlite3_column_text(st, 12);
        const char *kind = (const char *)sqlite3_column_text(st, 13);
        const char *blobs = (const char *)sqlite3_column_text(st, 14);
        if (dg && tt_digest_valid(dg) && kind && blobs && strlen(kind) < sizeof vm->image_kind &&
            strlen(blobs) < sizeof vm->image_blobs) {
            snprintf(vm->image_digest, sizeof vm->image_digest, "%s", dg);
            snprintf(vm->image_kind, sizeof vm->image_kind, "%s", kind);
            snprintf(vm->image_blobs, sizeof vm->image_blobs, "%s", blobs);
        }
        if (vm->uid >= self->next_vm_uid)
            self->next_vm_uid = vm->uid + 1;
    }
    sqlite3_reset(st);
    zhashx_destroy(&by_id);

    st = store_stmt(self->store, "SELECT p.vm_uid, p.public_port, p.guest_port, v.env_id "
                                 "FROM ports p JOIN vms v ON v.uid = p.vm_uid ORDER BY p.rowid");
    if (!st)
        return -1;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t uid = sqlite3_column_int64(st, 0);
        env_t *env = s_env_by_id(self, sqlite3_column_int64(st, 3));
        for (int i = 0; env && i < env->n_vms; i++) {
            vm_t *vm = env->vms[i];
            if (vm->uid != uid || vm->n_ports >= TT_MAX_PORTS_PER_VM)
                continue;
            uint32_t pub = (uint32_t)sqlite3_column_int(st, 1);
            vm->ports[vm->n_ports].public_port = pub;
            vm->ports[vm->n_ports].guest = (uint32_t)sqlite3_column_int(st, 2);
            vm->n_ports++;
            alloc_port_mark(vm->host, pub, true);
        }
    }
    sqlite3_reset(st);
    return 0;
}

static void s_rec_free(void **item)
{
    request_rec_t *rec = *item;
    if (rec) {
        free(rec->reply);
        free(rec->audit);
        free(rec);
        *item = NULL;
    }
}

static int s_load_requests(broker_t *self)
{
    zhashx_set_destructor(self->requests, s_rec_free);
    sqlite3_stmt *st =
        store_stmt(self->store, "SELECT tenant, request_id, created_at, reply, fp FROM requests");
    if (!st)
        return -1;
    int interrupted = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *tenant = (const char *)sqlite3_column_text(st, 0);
        const char *rid = (const char *)sqlite3_column_text(st, 1);
        if (!tenant || !rid)
            continue;
        request_rec_t *rec = calloc(1, sizeof *rec);
        if (!rec)
            return -1;
        rec->created_at = sqlite3_column_int64(st, 2);
        const void *blob = sqlite3_column_blob(st, 3);
        int len = sqlite3_column_bytes(st, 3);
        if (sqlite3_column_type(st, 3) != SQLITE_NULL) {
            rec->done = true;
            rec->len = (size_t)len;
            rec->reply = malloc(len > 0 ? (size_t)len : 1);
            if (len > 0 && rec->reply)
                memcpy(rec->reply, blob, (size_t)len);
        } else
            interrupted++;
        if (sqlite3_column_type(st, 4) == SQLITE_BLOB &&
            sqlite3_column_bytes(st, 4) == (int)sizeof rec->fp) {
            memcpy(rec->fp, sqlite3_column_blob(st, 4), sizeof rec->fp);
            rec->has_fp = true;
        }
        char key[2 * TT_MAX_REQUEST_ID + 2];
        snprintf(key, sizeof key, "%s\x1f%s", tenant, rid);
        zhashx_update(self->requests, key, rec);
    }
    sqlite3_reset(st);
    (void)interrupted;
    return 0;
}

int persist_load(broker_t *self)
{
    self->next_env_id = 1;
    self->next_vm_uid = 1;
    if (s_load_hosts(self) || s_load_envs(self) || s_load_env_guest(self) || s_load_vms(self) ||
        s_load_requests(self) || s_load_event_id(self))
        return -1;
    return 0;
}

void persist_savepoint_begin(broker_t *self)
{
    self->req_active = true;
    self->req_savepoint = false;
}

void persist_savepoint_end(broker_t *self, bool keep)
{
    if (self->req_savepoint) {
        int rc = keep ? store_release(self->store, "req") : store_rollback_to(self->store, "req");
        if (rc)
            s_fail(self, "savepoint");
    }
    self->req_active = false;
    self->req_savepoint = false;
}

void persist_key_put(broker_t *self, const char *pub, const char *tenant, const char *role,
                     int64_t added_at, const char *added_by)
{
    sqlite3_stmt *st = s_stmt(self, "INSERT OR REPLACE INTO keys (public, tenant, role, added_at, "
                                    "added_by) VALUES (?, ?, ?, ?, ?)");
    if (!st)
        return;
    s_text(st, 1, pub);
    s_text(st, 2, tenant);
    s_text(st, 3, role);
    sqlite3_bind_int64(st, 4, added_at);
    s_text(st, 5, added_by);
    s_done(self, st, "insert key");
}

void persist_key_delete(broker_t *self, const char *pub)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM keys WHERE public = ?");
    if (!st)
        return;
    s_text(st, 1, pub);
    s_done(self, st, "delete key");
}

/* ---- images (catalog.c) ---- */

void persist_image_put(broker_t *self, const persist_image_t *im)
{
    sqlite3_stmt *st = s_stmt(self, "INSERT OR REPLACE INTO images (owner, name, tag, digest, "
                                    "kind, size, blobs, created_at, readiness, user, "
                                    "min_disk_mib) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                                    "?10, ?11)");
    if (!st)
        return;
    s_text(st, 1, im->owner);
    s_text(st, 2, im->name);
    s_text(st, 3, im->tag);
    s_text(st, 4, im->digest);
    s_text(st, 5, im->kind);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)im->size);
    s_text(st, 7, im->blobs);
    sqlite3_bind_int64(st, 8, im->created_at);
    s_text(st, 9, im->readiness);
    s_text(st, 10, im->user);
    sqlite3_bind_int64(st, 11, im->min_disk_mib);
    s_done(self, st, "image put");
}

void persist_image_delete(broker_t *self, const char *owner, const char *name, const char *tag)
{
    sqlite3_stmt *st = s_stmt(self, "DELETE FROM images WHERE owner = ?1 AND name = ?2 AND tag = ?3");
    if (!st)
        return;
    s_text(st, 1, owner);
    s_text(st, 2, name);
    s_text(st, 3, tag);
    s_done(self, st, "image delete");
}
