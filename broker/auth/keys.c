/*
 * keys: client keys bound by the operator. See keys.h for the design.
 *
 * Rows are staged like every other change (persist_key_*), so a binding is
 * durable before its reply leaves. The ZAP thread hears of a change as soon
 * as the handler runs: for a removal that is the safe order (refusing a
 * moment early costs nothing); an addition honoured a moment before its
 * commit is undone if the commit fails, because a failed batch reloads the
 * model and keys_load sends the whole table again.
 */
#include "keys.h"
#include "persist.h"
#include "reply.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void s_rec_free(void **item)
{
    free(*item);
    *item = NULL;
}

/* The role goes along: auth.c's "events" domain takes admin keys only.
 * (No lookup here: keys_auth_sync calls this while iterating the hash.) */
static void s_auth(broker_t *self, const char *cmd, const char *pub, const char *role)
{
    if (self->auth)
        zstr_sendx(self->auth, cmd, pub, role ? role : "", NULL);
}

void keys_auth_sync(broker_t *self)
{
    if (!self->auth || !self->keys)
        return;
    zstr_sendx(self->auth, "KEY-CLEAR", NULL);
    for (key_rec_t *k = zhashx_first(self->keys); k; k = zhashx_next(self->keys))
        s_auth(self, "KEY-SET", zhashx_cursor(self->keys), k->role);
}

const key_rec_t *keys_find(broker_t *self, const char *pub)
{
    return self->keys && pub ? zhashx_lookup(self->keys, pub) : NULL;
}

void keys_destroy(broker_t *self)
{
    zhashx_destroy(&self->keys);
}

/* Bind pub in memory and stage its row. */
static key_rec_t *s_put(broker_t *self, const char *pub, const char *tenant, const char *role,
                        const char *by)
{
    key_rec_t *k = calloc(1, sizeof *k);
    if (!k)
        return NULL;
    snprintf(k->tenant, sizeof k->tenant, "%s", tenant);
    snprintf(k->role, sizeof k->role, "%s", role);
    snprintf(k->added_by, sizeof k->added_by, "%s", by);
    k->added_at = tt_now();
    zhashx_update(self->keys, pub, k);
    persist_key_put(self, pub, tenant, role, k->added_at, by);
    s_auth(self, "KEY-SET", pub, role);
    return k;
}

/* The public key of a certificate file (zcert format). */
static int s_cert_key(const char *path, char *pub, zcert_t **cert_p, char *err, size_t errlen)
{
    zcert_t *cert = zcert_load(path);
    if (!cert) {
        snprintf(err, errlen, "%.200s is not a CURVE certificate", path);
        return -1;
    }
    snprintf(pub, TT_KEY_LEN + 1, "%s", zcert_public_txt(cert));
    if (cert_p)
        *cert_p = cert;
    else
        zcert_destroy(&cert);
    return 0;
}

/* --import-client-keys: the operator vouches for the directory as it is
 * now; each cert not yet bound is bound by its own metadata, once. */
static void s_import(broker_t *self, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        zsys_warning("keys: cannot read %s for --import-client-keys", dir);
        return;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || (len > 7 && strcmp(e->d_name + len - 7, "_secret") == 0))
            continue;
        char path[1024], pub[TT_KEY_LEN + 1], err[300];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            stat(path, &st) || !S_ISREG(st.st_mode))
            continue;
        zcert_t *cert = NULL;
        if (s_cert_key(path, pub, &cert, err, sizeof err)) {
            zsys_warning("keys: import: %s", err);
            continue;
        }
        const char *tenant = zcert_meta(cert, "tenant");
        const char *role = zcert_meta(cert, "role");
        if (keys_find(self, pub))
            ;
        else if (!tt_name_valid(tenant) || !tt_key_role_valid(role))
            zsys_warning("keys: import: %s has no valid tenant/role metadata; not bound", path);
        else if (s_put(self, pub, tenant, role, "import"))
            zsys_info("keys: import: bound %s (%s) as %s of tenant %s", pub, path, role, tenant);
        zcert_destroy(&cert);
    }
    closedir(d);
}

int keys_load(broker_t *self, char *err, size_t errlen)
{
    if (!self->keys) {
        self->keys = zhashx_new();
        zhashx_set_destructor(self->keys, s_rec_free);
    }
    zhashx_purge(self->keys);
    sqlite3_stmt *st =
        store_stmt(self->store, "SELECT public, tenant, role, added_at, added_by FROM keys");
    if (!st) {
        snprintf(err, errlen, "cannot read the keys table");
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *pub = (const char *)sqlite3_column_text(st, 0);
        const char *tenant = (const char *)sqlite3_column_text(st, 1);
        const char *role = (const char *)sqlite3_column_text(st, 2);
        const char *by = (const char *)sqlite3_column_text(st, 4);
        if (!tt_key_valid(pub) || !tt_name_valid(tenant) || !tt_key_role_valid(role)) {
            zsys_warning("keys: a row of broker.db's keys table is not valid; ignored");
            continue;
        }
        key_rec_t *k = calloc(1, sizeof *k);
        if (!k)
            break;
        snprintf(k->tenant, sizeof k->tenant, "%s", tenant);
        snprintf(k->role, sizeof k->role, "%s", role);
        snprintf(k->added_by, sizeof k->added_by, "%s", by ? by : "");
        k->added_at = sqlite3_column_int64(st, 3);
        zhashx_update(self->keys, pub, k);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        snprintf(err, errlen, "cannot read the keys table: %s",
                 sqlite3_errmsg(store_db(self->store)));
        return -1;
    }
    if (self->cfg.admin_key[0]) {
        char pub[TT_KEY_LEN + 1];
        if (s_cert_key(self->cfg.admin_key, pub, NULL, err, errlen))
            return -1;
        const key_rec_t *k = keys_find(self, pub);
        if (!k || strcmp(k->role, "admin") != 0 || strcmp(k->tenant, self->cfg.admin_tenant) != 0)
            if (!s_put(self, pub, self->cfg.admin_tenant, "admin", "--admin-key")) {
                snprintf(err, errlen, "out of memory");
                return -1;
            }
    }
    if (self->cfg.import_client_keys && self->cfg.client_keys[0])
        s_import(self, self->cfg.client_keys);
    keys_auth_sync(self);
    return 0;
}

/* ---- handlers ---- */

static void s_caller(handler_ctx_t *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s:%s", c->admin ? "admin" : "user", c->tenant ? c->tenant : "?");
}

static Ttfleet__KeyInfo *s_info(reply_arena_t *a, const char *pub, const key_rec_t *k)
{
    Ttfleet__KeyInfo *i = reply_alloc(a, sizeof *i);
    if (!i)
        return NULL;
    ttfleet__key_info__init(i);
    i->public_key = (char *)pub;
    i->tenant = (char *)k->tenant;
    i->role = (char *)k->role;
    i->added_at = k->added_at;
    i->added_by = (char *)k->added_by;
    return i;
}

/* Reply with one key, or every key when pub is NULL. */
static int s_reply_keys(handler_ctx_t *c, const char *pub, const key_rec_t *one)
{
    reply_arena_t a = reply_arena();
    Ttfleet__KeyInfoList list = TTFLEET__KEY_INFO_LIST__INIT;
    size_t n = pub ? 1 : zhashx_size(c->self->keys);
    list.keys = n ? reply_alloc(&a, n * sizeof *list.keys) : NULL;
    if (n && !list.keys) {
        reply_arena_free(&a);
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    }
    if (pub)
        list.keys[list.n_keys++] = s_info(&a, pub, one);
    else
        for (key_rec_t *k = zhashx_first(c->self->keys); k; k = zhashx_next(c->self->keys))
            list.keys[list.n_keys++] = s_info(&a, zhashx_cursor(c->self->keys), k);
    for (size_t i = 0; i < list.n_keys; i++)
        if (!list.keys[i]) {
            reply_arena_free(&a);
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
        }
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_KEYS;
    rep.keys = &list;
    reply_ok(c, "", &rep, pub != NULL);
    reply_arena_free(&a);
    return 0;
}

int keys_add(handler_ctx_t *c)
{
    const Ttfleet__KeyAdd *a = c->req->key_add;
    const key_rec_t *old = keys_find(c->self, a->public_key);
    if (old) {
        snprintf(c->msg, sizeof c->msg,
                 "key %s is already bound (%s of tenant %s): remove it first to change it",
                 a->public_key, old->role, old->tenant);
        return TTFLEET__STATUS__ALREADY_EXISTS;
    }
    char by[2 * TT_MAX_NAME + 16];
    s_caller(c, by, sizeof by);
    const key_rec_t *k = s_put(c->self, a->public_key, a->tenant, a->role, by);
    if (!k)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    zsys_info("keys: %s bound %s as %s of tenant %s", by, a->public_key, a->role, a->tenant);
    return s_reply_keys(c, a->public_key, k);
}

int keys_list(handler_ctx_t *c)
{
    return s_reply_keys(c, NULL, NULL);
}

int keys_rm(handler_ctx_t *c)
{
    const char *pub = c->req->key_rm->public_key;
    const key_rec_t *k = keys_find(c->self, pub);
    if (!k)
        return handler_fail(c, TTFLEET__STATUS__NOT_FOUND, "no such key is bound");
    key_rec_t copy = *k;
    char by[2 * TT_MAX_NAME + 16];
    s_caller(c, by, sizeof by);
    persist_key_delete(c->self, pub);
    /* the reply shows what was removed; the record outlives the binding */
    zsys_info("keys: %s removed %s (%s of tenant %s)", by, pub, copy.role, copy.tenant);
    int rc = s_reply_keys(c, pub, &copy);
    s_auth(c->self, "KEY-DEL", pub, NULL);
    zhashx_delete(c->self->keys, pub);
    c->self->events_cut = true;
    return rc;
}
