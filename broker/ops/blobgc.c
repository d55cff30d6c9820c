/*
 * blobgc: the blob store's ledger and garbage collection. See blobgc.h.
 *
 * The ledger is in memory only: after a restart, open grants are gone
 * (the blob server's too), a client's push asks again, and blobs that an
 * interrupted push had completed wait for the collection's grace time.
 * The collection's keep list is built on the loop from the catalog (every
 * catalog image's blobs) and the ledger; the directory walk and the
 * unlinks run in the blob server's thread (blobsrv_gc).
 */
#include "blobgc.h"
#include "blobsrv.h"
#include "catalog.h"
#include "ttblob.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char tenant[TT_MAX_NAME + 1];
    char digest[TT_DIGEST_LEN + 1];
    uint64_t size;
    bool pool; /* an admin's pool push: kept, not charged */
    int64_t expires_ms;
    char user[41]; /* the pushing key (Z85) under CURVE, "" without */
    bool proven;   /* this tenant's user uploaded the bytes since the grant */
} s_grant_t;

static zhashx_t *s_ledger(broker_t *self)
{
    if (!self->blob_grants) {
        self->blob_grants = zhashx_new();
        if (self->blob_grants)
            zhashx_set_destructor(self->blob_grants, (zhashx_destructor_fn *)zstr_free);
    }
    return self->blob_grants;
}

static void s_key(const char *tenant, const char *digest, char *key, size_t len)
{
    snprintf(key, len, "%s\x1f%s", tenant, digest);
}

int blobgc_reserve(handler_ctx_t *c, bool pool, const char *const *digests,
                   const uint64_t *sizes, size_t n, uint64_t image_size)
{
    broker_t *self = c->self;
    zhashx_t *ledger = s_ledger(self);
    if (!ledger)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    bool charged = !(pool && c->admin);
    int64_t now = tt_mono_ms();
    uint64_t open = 0, open_n = 0;
    for (s_grant_t *g = zhashx_first(ledger); g; g = zhashx_next(ledger)) {
        if (strcmp(g->tenant, c->tenant) != 0 || g->pool || g->expires_ms <= now)
            continue;
        bool again = false; /* a digest of this push: counted once, below */
        for (size_t i = 0; i < n && !again; i++)
            again = strcmp(g->digest, digests[i]) == 0;
        if (!again) {
            open += g->size;
            open_n++;
        }
    }
    if (charged) {
        uint64_t have = 0, images = 0, limit = self->cfg.max_tenant_image;
        if (catalog_tenant_usage(self, c->tenant, &have, &images))
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
        if (open_n + n > BLOBGC_TENANT_GRANTS) {
            snprintf(c->msg, sizeof c->msg,
                     "tenant '%s' has %llu blob uploads granted and not committed (at most %d): "
                     "commit or let them expire (%d s)",
                     c->tenant, (unsigned long long)open_n, BLOBGC_TENANT_GRANTS,
                     BLOBGC_GRANT_TTL_S);
            c->no_record = true;
            return TTFLEET__STATUS__QUOTA_EXCEEDED;
        }
        /* the image counts whole (its blobs may be shared, its tag is not) */
        if (limit && have + open + image_size > limit) {
            snprintf(c->msg, sizeof c->msg,
                     "image storage of tenant '%s': used %llu MiB (registered %llu, pushes "
                     "open %llu), limit %llu MiB, wanted %llu MiB",
                     c->tenant, (unsigned long long)((have + open) >> 20),
                     (unsigned long long)(have >> 20), (unsigned long long)(open >> 20),
                     (unsigned long long)(limit >> 20),
                     (unsigned long long)((image_size + (1 << 20) - 1) >> 20));
            c->no_record = true;
            return TTFLEET__STATUS__QUOTA_EXCEEDED;
        }
    }
    if (zhashx_size(ledger) + n > BLOBGC_TOTAL_GRANTS)
        return handler_fail_norec(c, TTFLEET__STATUS__UNAVAILABLE,
                                  "too many image pushes in progress; try again later");
    for (size_t i = 0; i < n; i++) {
        s_grant_t *g = calloc(1, sizeof *g);
        if (!g)
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
        snprintf(g->tenant, sizeof g->tenant, "%s", c->tenant);
        snprintf(g->digest, sizeof g->digest, "%s", digests[i]);
        g->size = sizes[i];
        g->pool = !charged;
        g->expires_ms = now + BLOBGC_GRANT_TTL_S * 1000LL;
        snprintf(g->user, sizeof g->user, "%s", self->cur_key);
        char key[TT_MAX_NAME + TT_DIGEST_LEN + 4];
        s_key(c->tenant, digests[i], key, sizeof key);
        const s_grant_t *old = zhashx_lookup(ledger, key);
        g->proven = old && old->proven && strcmp(old->user, g->user) == 0;
        zhashx_update(ledger, key, g);
    }
    return 0;
}

int blobgc_may_register(handler_ctx_t *c, const char *name, const char *tag)
{
    int64_t count = 0;
    bool same = false;
    if (catalog_tenant_has(c->self, c->tenant, name, tag, &count, &same))
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
    if (!same && count >= BLOBGC_TENANT_IMAGES) {
        snprintf(c->msg, sizeof c->msg,
                 "tenant '%s' has %lld private images (at most %d): remove some first",
                 c->tenant, (long long)count, BLOBGC_TENANT_IMAGES);
        return TTFLEET__STATUS__QUOTA_EXCEEDED;
    }
    return 0;
}

void blobgc_uploaded(broker_t *self, const char *digest, const char *user)
{
    if (!self->blob_grants)
        return;
    int64_t now = tt_mono_ms();
    for (s_grant_t *g = zhashx_first(self->blob_grants); g; g = zhashx_next(self->blob_grants))
        if (g->expires_ms > now && strcmp(g->digest, digest) == 0 &&
            strcmp(g->user, user ? user : "") == 0)
            g->proven = true;
}

bool blobgc_proven(broker_t *self, const char *tenant, const char *digest)
{
    if (!self->blob_grants)
        return false;
    char key[TT_MAX_NAME + TT_DIGEST_LEN + 4];
    s_key(tenant, digest, key, sizeof key);
    const s_grant_t *g = zhashx_lookup(self->blob_grants, key);
    return g && g->proven && g->expires_ms > tt_mono_ms();
}

void blobgc_committed(broker_t *self, const char *tenant, const char *const *digests, size_t n)
{
    if (!self->blob_grants)
        return;
    for (size_t i = 0; i < n; i++) {
        char key[TT_MAX_NAME + TT_DIGEST_LEN + 4];
        s_key(tenant, digests[i], key, sizeof key);
        zhashx_delete(self->blob_grants, key);
        /* the blob server's grant of the digest goes with the last live
         * ledger grant that names it (a proof grant outlives its upload) */
        bool live = false;
        int64_t now = tt_mono_ms();
        for (s_grant_t *g = zhashx_first(self->blob_grants); g && !live;
             g = zhashx_next(self->blob_grants))
            live = g->expires_ms > now && strcmp(g->digest, digests[i]) == 0;
        if (!live && self->blobsrv)
            blobsrv_revoke(self->blobsrv, digests[i]);
    }
}

/* Drops expired grants; revokes a digest at the blob server unless
 * another live grant names it. */
static void s_expire(broker_t *self, int64_t now)
{
    if (!self->blob_grants || !zhashx_size(self->blob_grants))
        return;
    zlistx_t *keys = zhashx_keys(self->blob_grants);
    zhashx_t *live = zhashx_new();
    if (!keys || !live) {
        zlistx_destroy(&keys);
        zhashx_destroy(&live);
        return;
    }
    zlistx_t *gone = zlistx_new();
    zlistx_set_destructor(gone, (zlistx_destructor_fn *)zstr_free);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        s_grant_t *g = zhashx_lookup(self->blob_grants, k);
        if (g->expires_ms > now)
            zhashx_update(live, g->digest, (void *)1);
        else {
            zlistx_add_end(gone, strdup(g->digest));
            zhashx_delete(self->blob_grants, k);
        }
    }
    for (const char *d = zlistx_first(gone); d; d = zlistx_next(gone))
        if (!zhashx_lookup(live, d) && self->blobsrv)
            blobsrv_revoke(self->blobsrv, d);
    zlistx_destroy(&gone);
    zlistx_destroy(&keys);
    zhashx_destroy(&live);
}

/* Adds each digest of a catalog row's blobs text ("digest size file\n"...). */
static void s_keep_blobs(zhashx_t *keep, const char *text)
{
    for (const char *line = text; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        const char *sp = memchr(line, ' ', len);
        if (sp && (size_t)(sp - line) == TT_DIGEST_LEN) {
            char d[TT_DIGEST_LEN + 1];
            memcpy(d, line, TT_DIGEST_LEN);
            d[TT_DIGEST_LEN] = 0;
            if (tt_digest_valid(d))
                zhashx_update(keep, d, (void *)1);
        }
        line = end ? end + 1 : NULL;
    }
}

/* Adds a catalog row's image digest and blobs. */
static void s_keep_row(void *arg, const char *digest, const char *blobs)
{
    zhashx_t *keep = arg;
    if (digest && tt_digest_valid(digest))
        zhashx_update(keep, digest, (void *)1);
    s_keep_blobs(keep, blobs);
}

void blobgc_collect(broker_t *self)
{
    if (!self->blobsrv)
        return;
    zhashx_t *keep = zhashx_new();
    if (!keep)
        return;
    if (catalog_each_digest(self, s_keep_row, keep)) {
        /* a partial list would delete what it missed */
        zsys_warning("blob collection skipped: cannot read the catalog");
        zhashx_destroy(&keep);
        return;
    }
    for (s_grant_t *g = self->blob_grants ? zhashx_first(self->blob_grants) : NULL; g;
         g = zhashx_next(self->blob_grants))
        zhashx_update(keep, g->digest, (void *)1);
    /* a VM's image may have left the catalog (its tag pushed again with
     * other content): what the VM runs stays fetchable for re-placement */
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        for (int i = 0; i < e->n_vms; i++) {
            const vm_t *vm = e->vms[i];
            if (vm->image_digest[0] && tt_digest_valid(vm->image_digest))
                zhashx_update(keep, vm->image_digest, (void *)1);
            s_keep_blobs(keep, vm->image_blobs);
        }
    zlistx_t *keys = zhashx_keys(keep);
    size_t n = keys ? zlistx_size(keys) : 0;
    const char **list = calloc(n + 1, sizeof *list);
    size_t i = 0;
    for (const char *k = keys ? zlistx_first(keys) : NULL; list && k; k = zlistx_next(keys))
        list[i++] = k;
    if (list && keys)
        blobsrv_gc(self->blobsrv, list, i, self->cfg.blob_gc_grace);
    free(list);
    zlistx_destroy(&keys);
    zhashx_destroy(&keep);
}

void blobgc_tick(broker_t *self, int64_t now_ms)
{
    if (!self->blobsrv || now_ms < self->next_blob_gc_ms)
        return;
    s_expire(self, now_ms);
    blobgc_collect(self);
    int64_t every = self->cfg.blob_gc_grace / 2;
    self->next_blob_gc_ms = now_ms + (every < 1 ? 1 : every > 600 ? 600 : every) * 1000;
}

void blobgc_destroy(broker_t *self)
{
    zhashx_destroy(&self->blob_grants);
}
