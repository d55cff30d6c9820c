/*
 * image_ops: the image catalog and the blob server's place in the broker.
 * See image_ops.h and docs/IMAGES.md.
 *
 * The catalog is the `images` table of broker.db, read and written in the
 * loop's open transaction (so a row staged by this batch is seen by the
 * next request of the batch, and the request's savepoint takes it back on
 * a refusal). A push is two requests: image_push validates the image's
 * description and grants the blobs the blob server lacks (no row); the
 * client sends them to the blob server (its own thread, never the loop);
 * image_commit checks that every blob is complete and verified there (a
 * stat(2), no round trip) and, for a directory image, that the manifest
 * blob parses and lists exactly the blobs described, and only then writes
 * the one row. So an interrupted push leaves at most a resumable .part on
 * the blob server and nothing in the catalog.
 *
 * Possession: a tenant registers only content it holds. A blob of an
 * image the tenant sees (a pool image or its own) counts as held; any
 * other blob is granted as a proof upload (blobsrv_grant_proof) and listed
 * missing whether or not the server has it, so `missing` tells nothing
 * about other tenants' content, and image_commit accepts it only once a
 * verified upload by the tenant's own key (blobgc_uploaded) proved it.
 *
 * Visibility: owner "" is a pool image (pushed by an admin), any other
 * owner a tenant's private image. A tenant sees and resolves pool images
 * and its own; a name the tenant does not see is NOT_FOUND, the same
 * answer as a name that does not exist.
 */
#include "image_ops.h"
#include "blobgc.h"
#include "blobsrv.h"
#include "catalog.h"
#include "reply.h"
#include "wcmd.h"
#include "ttblob.h"
#include "ttguest.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#define S_MAX_BLOBS (TT_MANIFEST_FILES + 1)

int image_ops_start(broker_t *self, char *err, size_t errlen)
{
    if (!self->cfg.blobs_ep[0])
        return 0;
    blobsrv_limits_t limits;
    blobsrv_limits_defaults(&limits);
    if (self->cfg.max_image)
        limits.max_blob = self->cfg.max_image;
    limits.require_grant = true;
    limits.reserve = self->cfg.blob_reserve;
    char dir[600];
    snprintf(dir, sizeof dir, "%s/blobs", self->cfg.state_dir);
    if (self->curve) {
        /* ZAP domain "blobs" (auth.c): pushes by bound client keys (each
         * digest granted by image_push; the bytes must hash to it), fetches
         * by worker keys only, of digests granted to that host with the
         * specs that name them (wcmd.c) */
        snprintf(limits.curve_secret, sizeof limits.curve_secret, "%s", self->cfg.curve_secret);
        snprintf(limits.zap_domain, sizeof limits.zap_domain, "blobs");
        snprintf(limits.fetch_user_prefix, sizeof limits.fetch_user_prefix, "worker:");
        limits.require_fetch_grant = true;
    }
    self->blobsrv = blobsrv_new(self->cfg.blobs_ep, dir, &limits, err, errlen);
    if (!self->blobsrv)
        return -1;
    zsys_info("blob server on %s", blobsrv_endpoint(self->blobsrv));
    return 0;
}

void image_ops_stop(broker_t *self)
{
    blobsrv_destroy(&self->blobsrv);
}

void *image_ops_sock(broker_t *self)
{
    return self->blobsrv ? blobsrv_sock(self->blobsrv) : NULL;
}

void image_ops_on_blob(broker_t *self)
{
    char digest[TT_DIGEST_LEN + 1], user[128];
    uint64_t size;
    if (!self->blobsrv || blobsrv_recv_from(self->blobsrv, digest, &size, user, sizeof user))
        return;
    blobgc_uploaded(self, digest, user);
    if (self->cfg.verbose)
        zsys_info("blob %s complete (%llu bytes)", digest, (unsigned long long)size);
}

/* ---- validation of an image's description ---- */

static int s_fail_fmt(handler_ctx_t *c, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int s_fail_fmt(handler_ctx_t *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    return status;
}

/* Checks an ImagePush: ref, kind, digests, sizes, the size limit. */
static int s_check_push(handler_ctx_t *c, const Ttfleet__ImagePush *p, tt_image_ref_t *ref)
{
    char why[256];
    if (!p)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "image push without a body");
    if (!p->ref || tt_image_ref_parse(p->ref, ref, why, sizeof why))
        return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST, "invalid image name: %s", why);
    if (ref->digest[0])
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            "push NAME[:TAG], not NAME@sha256:... (the digest is the content's)");
    bool qcow2 = p->kind && strcmp(p->kind, "qcow2") == 0;
    bool dir = p->kind && strcmp(p->kind, "dir") == 0;
    if (!qcow2 && !dir)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "image kind must be qcow2 or dir");
    if (!p->digest || !tt_digest_valid(p->digest))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "image digest is not sha256:<64 hex>");
    if (p->n_blobs < 1 || p->n_blobs > S_MAX_BLOBS || (qcow2 && p->n_blobs != 1))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            "an image has 1 blob (qcow2) or 2..4 (manifest and files)");
    uint64_t sum = 0;
    bool image_blob = false;
    for (size_t i = 0; i < p->n_blobs; i++) {
        const Ttfleet__ImageBlob *b = p->blobs[i];
        if (!b || !b->digest || !tt_digest_valid(b->digest))
            return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                                "a blob digest is not sha256:<64 hex>");
        if (b->size > UINT64_MAX - sum)
            return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "blob sizes overflow");
        sum += b->size;
        const char *file = b->file ? b->file : "";
        if (strcmp(b->digest, p->digest) == 0 &&
            (qcow2 ? file[0] == 0 : strcmp(file, "manifest") == 0))
            image_blob = true;
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->blobs[j]->file ? p->blobs[j]->file : "", file) == 0)
                return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "two blobs name one file");
    }
    if (!image_blob)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            qcow2 ? "a qcow2 image's blob must have the image's digest"
                                  : "a directory image needs its manifest blob (the image digest)");
    if (sum != p->size)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            "image size is not the sum of its blobs");
    if (c->self->cfg.max_image && p->size > c->self->cfg.max_image) {
        snprintf(c->msg, sizeof c->msg, "image of %llu bytes is over the limit of %llu MiB",
                 (unsigned long long)p->size,
                 (unsigned long long)(c->self->cfg.max_image >> 20));
        return TTFLEET__STATUS__TOO_LARGE;
    }
    if (p->pool && !c->admin)
        return handler_fail(c, TTFLEET__STATUS__FORBIDDEN,
                            "pool images are pushed by an admin (push --private)");
    const Ttfleet__ImageDefaults *d = p->defaults;
    tt_ready_t spec;
    if (d && d->readiness && *d->readiness &&
        (strlen(d->readiness) >= CATALOG_READINESS_MAX ||
         tt_ready_parse(d->readiness, &spec, why, sizeof why)))
        return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST, "invalid default readiness: %s",
                          strlen(d->readiness) >= CATALOG_READINESS_MAX ? "too long" : why);
    if (d && d->user && *d->user && !tt_name_valid(d->user))
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            "invalid default user (letters, digits, '-', '_', '.')");
    if (d && d->min_disk_mib > TT_MAX_DISK_MIB)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST, "default minimum disk too large");
    if (!c->self->blobsrv)
        return handler_fail(c, TTFLEET__STATUS__UNAVAILABLE,
                            "this broker runs no blob server (--blobs)");
    return 0;
}

/* ---- image_push: grant what the blob server lacks ---- */

int image_push(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__ImagePush *p = c->req->image_push;
    tt_image_ref_t ref;
    int st = s_check_push(c, p, &ref);
    if (st)
        return st;
    /* which blobs the tenant sends: content it does not see (pool or its
     * own images) always, held here or not, as a proof upload bound to its
     * key under CURVE; content it sees only when the server lacks it */
    char *missing[S_MAX_BLOBS];
    bool proof[S_MAX_BLOBS];
    const char *all[S_MAX_BLOBS];
    uint64_t sizes[S_MAX_BLOBS], need = 0;
    size_t n = 0;
    for (size_t i = 0; i < p->n_blobs; i++) {
        const char *d = p->blobs[i]->digest;
        all[i] = d;
        sizes[i] = p->blobs[i]->size;
        int seen = catalog_visible_blob(self, c->tenant, d);
        if (seen < 0)
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
        uint64_t have = 0;
        bool complete = blobsrv_stat(self->blobsrv, d, &have) == 1 && have == p->blobs[i]->size;
        if (complete && (seen || blobgc_proven(self, c->tenant, d)))
            continue;
        proof[n] = !seen;
        missing[n++] = p->blobs[i]->digest;
        need += p->blobs[i]->size;
    }
    /* the state filesystem keeps its reserve for broker.db: a push that
     * cannot fit above it is refused before anything is granted (the blob
     * server checks again for each upload and chunk) */
    struct statvfs vfs;
    if (n && self->cfg.blob_reserve && statvfs(self->cfg.state_dir, &vfs) == 0) {
        uint64_t avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
        if (avail < self->cfg.blob_reserve || avail - self->cfg.blob_reserve < need) {
            snprintf(c->msg, sizeof c->msg,
                     "the broker's disk has %llu MiB free and keeps %llu MiB for its database "
                     "(--blob-reserve-mib); this push needs %llu MiB: try later or ask the "
                     "operator",
                     (unsigned long long)(avail >> 20),
                     (unsigned long long)(self->cfg.blob_reserve >> 20),
                     (unsigned long long)((need + (1 << 20) - 1) >> 20));
            c->no_record = true;
            return TTFLEET__STATUS__NO_CAPACITY;
        }
    }
    /* every blob of the image goes in the ledger (charged to a tenant, and
     * safe from the collection until the commit); only the missing ones
     * are granted */
    if ((st = blobgc_reserve(c, p->pool, all, sizes, p->n_blobs, p->size)))
        return st;
    for (size_t i = 0; i < n; i++) {
        uint64_t size = 0;
        for (size_t j = 0; j < p->n_blobs; j++)
            if (p->blobs[j]->digest == missing[i])
                size = p->blobs[j]->size;
        int rc = proof[i] ? blobsrv_grant_proof(self->blobsrv, missing[i], size, self->cur_key)
                          : blobsrv_grant(self->blobsrv, missing[i], size, "");
        if (rc)
            return handler_fail(c, TTFLEET__STATUS__INTERNAL, "cannot grant the upload");
    }
    Ttfleet__ImagePushGrant g = TTFLEET__IMAGE_PUSH_GRANT__INIT;
    g.endpoint = (char *)blobsrv_endpoint(self->blobsrv);
    g.server_key = (char *)(self->curve ? self->public_key : "");
    g.n_missing = n;
    g.missing = missing;
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_PUSH_GRANT;
    rep.push_grant = &g;
    reply_ok(c, "", &rep, false);
    return 0;
}

/* ---- catalog rows ---- */

/* VMs (not being removed) that run r's digest, unless another catalog
 * row keeps that digest (then removing r leaves their image in the
 * catalog). A VM of a catalog image carries the digest it was created
 * with (vm->image_digest, kept in broker.db), so a tag moved to another
 * digest since does not matter. */
static uint32_t s_users(broker_t *self, const catalog_row_t *r)
{
    int others = catalog_digest_others(self, r);
    if (others > 0)
        return 0;
    uint32_t n = 0;
    for (env_t *e = zhashx_first(self->envs); e; e = zhashx_next(self->envs))
        for (int i = 0; i < e->n_vms; i++)
            if (!e->vms[i]->doomed && strcmp(e->vms[i]->image_digest, r->digest) == 0)
                n++;
    return n;
}

int image_ops_resolve(broker_t *self, const char *tenant, const char *image, vm_t *vm, char *msg,
                      size_t msglen)
{
    tt_image_ref_t ref;
    char why[256];
    if (!self->blobsrv || tt_image_ref_parse(image, &ref, why, sizeof why))
        return 0; /* no catalog, or not a catalog name: a host-local image */
    catalog_row_t r;
    int found = catalog_find(self, tenant, &ref, &r);
    if (found < 0) {
        snprintf(msg, msglen, "cannot read the image catalog");
        return -1;
    }
    if (!found)
        return 0;
    if (strlen(r.blobs) >= sizeof vm->image_blobs) {
        snprintf(msg, msglen, "image %s: its blob list is too long", image);
        return -1;
    }
    snprintf(vm->image, sizeof vm->image, "%s", r.name);
    snprintf(vm->image_digest, sizeof vm->image_digest, "%s", r.digest);
    snprintf(vm->image_kind, sizeof vm->image_kind, "%s", r.kind);
    memcpy(vm->image_blobs, r.blobs, strlen(r.blobs) + 1);
    return 1;
}

/* Blobs text "digest size file\n"... -> ImageBlob array in the arena. */
static Ttfleet__ImageInfo *s_info(broker_t *self, reply_arena_t *a, const catalog_row_t *r)
{
    Ttfleet__ImageInfo *ii = reply_alloc(a, sizeof *ii);
    Ttfleet__ImageDefaults *d = reply_alloc(a, sizeof *d);
    Ttfleet__ImageBlob **bl = reply_alloc(a, sizeof *bl * (S_MAX_BLOBS + 1));
    Ttfleet__ImageBlob *bs = reply_alloc(a, sizeof *bs * S_MAX_BLOBS);
    char *text = reply_alloc(a, sizeof *r);
    if (!ii || !d || !bl || !bs || !text)
        return NULL;
    ttfleet__image_info__init(ii);
    ttfleet__image_defaults__init(d);
    memcpy(text, r, sizeof *r);
    const catalog_row_t *t = (const catalog_row_t *)text;
    ii->name = (char *)t->name;
    ii->tag = (char *)t->tag;
    ii->digest = (char *)t->digest;
    ii->kind = (char *)t->kind;
    ii->size = t->size;
    ii->owner = (char *)t->owner;
    ii->created_at = t->created_at;
    d->readiness = (char *)t->readiness;
    d->user = (char *)t->user;
    d->min_disk_mib = t->min_disk_mib;
    ii->defaults = d;
    char *blobs = ((catalog_row_t *)text)->blobs;
    char *save = NULL;
    for (char *line = strtok_r(blobs, "\n", &save); line && ii->n_blobs < S_MAX_BLOBS;
         line = strtok_r(NULL, "\n", &save)) {
        Ttfleet__ImageBlob *b = &bs[ii->n_blobs];
        ttfleet__image_blob__init(b);
        char *sp1 = strchr(line, ' ');
        if (!sp1)
            continue;
        *sp1 = 0;
        char *sp2 = strchr(sp1 + 1, ' ');
        b->digest = line;
        b->size = strtoull(sp1 + 1, NULL, 10);
        b->file = sp2 ? sp2 + 1 : "";
        bl[ii->n_blobs++] = b;
    }
    ii->blobs = bl;
    ii->users = s_users(self, r);
    /* hosts that hold every blob, as they advertised (READY, EVENTs) */
    size_t nh = zhashx_size(self->hosts), k = 0;
    char **hosts = reply_alloc(a, sizeof *hosts * (nh + 1));
    for (host_t *h = zhashx_first(self->hosts); hosts && h; h = zhashx_next(self->hosts))
        if (k < nh && model_host_holds(h, r->blobs))
            hosts[k++] = h->id;
    ii->n_hosts = k;
    /* the hosts' templates of this image (docs/SNAPSHOTS.md) */
    size_t nt = 0;
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
        nt += h->n_tmpl;
    Ttfleet__TemplateInfo **tp = nt ? reply_alloc(a, sizeof *tp * (nt + 1)) : NULL;
    Ttfleet__TemplateInfo *ts = nt ? reply_alloc(a, sizeof *ts * nt) : NULL;
    for (host_t *h = zhashx_first(self->hosts); tp && ts && h; h = zhashx_next(self->hosts))
        for (size_t i = 0; i < h->n_tmpl; i++) {
            const host_tmpl_t *ht = &h->tmpl[i];
            if (strcmp(ht->digest, r->digest) != 0)
                continue;
            Ttfleet__TemplateInfo *ti = &ts[ii->n_templates];
            ttfleet__template_info__init(ti);
            ti->host = h->id;
            ti->image = (char *)ht->image;
            ti->image_digest = (char *)ht->digest;
            ti->cpu = ht->cpu;
            ti->mem_mib = ht->mem_mib;
            ti->bytes = ht->bytes;
            ti->created = ht->created;
            ti->users = ht->users;
            tp[ii->n_templates++] = ti;
        }
    ii->templates = tp;
    ii->hosts = hosts;
    return ii;
}

static void s_send_image(handler_ctx_t *c, const catalog_row_t *r, bool record)
{
    reply_arena_t a = reply_arena();
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_IMAGE;
    rep.image = s_info(c->self, &a, r);
    reply_ok(c, "", rep.image ? &rep : NULL, record);
    reply_arena_free(&a);
}

/* ---- image_commit: every blob complete -> one row ---- */

static int s_check_manifest(handler_ctx_t *c, const Ttfleet__ImagePush *p)
{
    char path[700];
    snprintf(path, sizeof path, "%s/blobs/sha256/%s", c->self->cfg.state_dir,
             p->digest + strlen(TT_DIGEST_PREFIX));
    FILE *f = fopen(path, "rb");
    char text[TT_MANIFEST_MAX + 1];
    size_t len = f ? fread(text, 1, sizeof text, f) : 0;
    if (f)
        fclose(f);
    tt_manifest_t m;
    char why[256];
    if (!f || len > TT_MANIFEST_MAX || tt_manifest_parse(text, len, &m, why, sizeof why))
        return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST, "the manifest blob is not valid: %s",
                          f ? (len > TT_MANIFEST_MAX ? "too long" : why) : "unreadable");
    if (m.n + 1 != p->n_blobs)
        return handler_fail(c, TTFLEET__STATUS__BAD_REQUEST,
                            "the manifest does not list the image's blobs");
    for (size_t i = 0; i < m.n; i++) {
        bool found = false;
        for (size_t j = 0; j < p->n_blobs && !found; j++)
            found = p->blobs[j]->file && strcmp(p->blobs[j]->file, m.files[i].name) == 0 &&
                    strcmp(p->blobs[j]->digest, m.files[i].digest) == 0 &&
                    p->blobs[j]->size == m.files[i].size;
        if (!found)
            return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST,
                              "the manifest's file '%s' is not among the image's blobs",
                              m.files[i].name);
    }
    return 0;
}

int image_commit(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__ImagePush *p = c->req->image_commit;
    tt_image_ref_t ref;
    int st = s_check_push(c, p, &ref);
    if (st)
        return st;
    /* uploads the blob server finished before its DONE reached the client */
    while (zsock_events(blobsrv_sock(self->blobsrv)) & ZMQ_POLLIN)
        image_ops_on_blob(self);
    for (size_t i = 0; i < p->n_blobs; i++) {
        uint64_t have = 0;
        const char *d = p->blobs[i]->digest;
        int seen = catalog_visible_blob(self, c->tenant, d);
        if (seen < 0)
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
        /* one answer whether the server lacks the blob or this tenant has
         * not uploaded it: nothing about other tenants' content */
        if (blobsrv_stat(self->blobsrv, d, &have) != 1 || have != p->blobs[i]->size ||
            (!seen && !blobgc_proven(self, c->tenant, d)))
            return s_fail_fmt(c, TTFLEET__STATUS__INCOMPLETE,
                              "blob %s was not uploaded by this tenant's push: push it first", d);
    }
    if (strcmp(p->kind, "dir") == 0 && (st = s_check_manifest(c, p)))
        return st;
    if (!p->pool && (st = blobgc_may_register(c, ref.name, ref.tag)))
        return st;
    catalog_row_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.owner, sizeof r.owner, "%s", p->pool ? "" : c->tenant);
    snprintf(r.name, sizeof r.name, "%s", ref.name);
    snprintf(r.tag, sizeof r.tag, "%s", ref.tag);
    snprintf(r.digest, sizeof r.digest, "%s", p->digest);
    snprintf(r.kind, sizeof r.kind, "%s", p->kind);
    r.size = p->size;
    r.created_at = tt_now();
    size_t off = 0;
    for (size_t i = 0; i < p->n_blobs; i++)
        off += (size_t)snprintf(r.blobs + off, sizeof r.blobs - off, "%s %llu %s\n",
                                p->blobs[i]->digest, (unsigned long long)p->blobs[i]->size,
                                p->blobs[i]->file ? p->blobs[i]->file : "");
    const Ttfleet__ImageDefaults *d = p->defaults;
    if (d) { /* checked by s_check_push */
        snprintf(r.readiness, sizeof r.readiness, "%s", d->readiness ? d->readiness : "");
        snprintf(r.user, sizeof r.user, "%s", d->user ? d->user : "");
        r.min_disk_mib = d->min_disk_mib;
    }
    catalog_put(self, &r);
    if (self->failed)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot write the catalog");
    zsys_info("image %s:%s (%s) registered by %s: %s, %llu bytes", r.name, r.tag,
              r.owner[0] ? "private" : "pool", c->tenant, r.digest, (unsigned long long)r.size);
    const char *done[S_MAX_BLOBS];
    for (size_t i = 0; i < p->n_blobs; i++)
        done[i] = p->blobs[i]->digest;
    blobgc_committed(self, c->tenant, done, p->n_blobs);
    s_send_image(c, &r, true);
    return 0;
}

/* ---- list, show, rm, pull ---- */

/* image_list's rows as they are read: each row's ImageInfo in the arena. */
typedef struct {
    broker_t *self;
    reply_arena_t *a;
    Ttfleet__ImageInfo **items;
    size_t n, cap;
} s_list_t;

static int s_list_add(void *arg, const catalog_row_t *r)
{
    s_list_t *l = arg;
    if (l->n == l->cap) {
        Ttfleet__ImageInfo **more = realloc(l->items, sizeof *more * l->cap * 2);
        if (!more)
            return 1;
        l->items = more;
        l->cap *= 2;
    }
    Ttfleet__ImageInfo *ii = s_info(l->self, l->a, r);
    if (ii)
        l->items[l->n++] = ii;
    return 0;
}

int image_list(handler_ctx_t *c)
{
    broker_t *self = c->self;
    bool all = c->req->image_list && c->req->image_list->all;
    if (all && !c->admin)
        return handler_fail_norec(c, TTFLEET__STATUS__FORBIDDEN, "image list --all is for admins");
    reply_arena_t a = reply_arena();
    Ttfleet__ImageInfoList *l = reply_alloc(&a, sizeof *l);
    s_list_t list = {self, &a, malloc(sizeof *list.items * 64), 0, 64};
    if (l)
        ttfleet__image_info_list__init(l);
    if (l && list.items) {
        if (catalog_each(self, c->tenant, all, 10000, s_list_add, &list)) {
            free(list.items);
            reply_arena_free(&a);
            return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
        }
        l->n_images = list.n;
    }
    Ttfleet__Reply rep = TTFLEET__REPLY__INIT;
    rep.result_case = TTFLEET__REPLY__RESULT_IMAGES;
    if (l) {
        l->images = list.items;
        rep.images = l;
    }
    reply_ok(c, "", l ? &rep : NULL, false);
    free(list.items);
    reply_arena_free(&a);
    return 0;
}

/* The row of c->req's ImageRef, or a status with the reason. */
static int s_lookup(handler_ctx_t *c, const Ttfleet__ImageRef *q, catalog_row_t *r)
{
    tt_image_ref_t ref;
    char why[256];
    if (!q || !q->ref || tt_image_ref_parse(q->ref, &ref, why, sizeof why))
        return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST, "invalid image name: %s", why);
    int found = catalog_find(c->self, c->tenant, &ref, r);
    if (found < 0)
        return handler_fail(c, TTFLEET__STATUS__INTERNAL, "cannot read the catalog");
    if (!found)
        return s_fail_fmt(c, TTFLEET__STATUS__NOT_FOUND, "no image '%s'", q->ref);
    return 0;
}

int image_show(handler_ctx_t *c)
{
    catalog_row_t r;
    int st = s_lookup(c, c->req->image_show, &r);
    if (st) {
        c->no_record = true;
        return st;
    }
    s_send_image(c, &r, false);
    return 0;
}

int image_rm(handler_ctx_t *c)
{
    catalog_row_t r;
    int st = s_lookup(c, c->req->image_rm, &r);
    if (st)
        return st;
    if (!r.owner[0] && !c->admin)
        return handler_fail(c, TTFLEET__STATUS__FORBIDDEN, "pool images are removed by an admin");
    uint32_t users = s_users(c->self, &r);
    if (users) {
        snprintf(c->msg, sizeof c->msg, "image %s:%s is used by %u VM(s): delete them first",
                 r.name, r.tag, users);
        return TTFLEET__STATUS__IMAGE_IN_USE;
    }
    catalog_delete(c->self, &r);
    if (c->self->failed)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot write the catalog");
    s_send_image(c, &r, true);
    return 0;
}

/* The start of a fan-out to hosts (image pull, image prepare): the image
 * the tenant names (its row), resolved to what a worker fetches, and room
 * for a list of every host. 0, or the status already answered. */
static int s_fanout_begin(handler_ctx_t *c, const char *ref, catalog_row_t *r, vm_t *img,
                          host_t ***targets)
{
    broker_t *self = c->self;
    Ttfleet__ImageRef q = TTFLEET__IMAGE_REF__INIT;
    q.ref = (char *)ref;
    int st = s_lookup(c, &q, r);
    if (st) {
        c->no_record = true;
        return st;
    }
    memset(img, 0, sizeof *img);
    char msg[256];
    if (image_ops_resolve(self, c->tenant, ref, img, msg, sizeof msg) != 1)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "cannot resolve the image");
    *targets = calloc(zhashx_size(self->hosts) + 1, sizeof **targets);
    if (!*targets)
        return handler_fail_norec(c, TTFLEET__STATUS__INTERNAL, "out of memory");
    return 0;
}

/* Pre-staging: each target host (every online host with an image cache,
 * or the ones named) is asked to fetch the image into its cache. The
 * answer does not wait for the fetches: it is the image as now, whose
 * `hosts` fill in as the hosts advertise the blobs (ttctl image pull
 * polls image show). A named host that is unknown, down or without a
 * cache refuses the whole request; nothing is sent then. */
int image_pull(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__ImagePull *p = c->req->image_pull;
    if (!p || !p->ref)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST, "image pull without a body");
    if (!p->all_hosts && p->n_hosts == 0)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST,
                                  "image pull needs --hosts all or host ids");
    if (p->n_hosts > 1000)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST, "at most 1000 hosts");
    catalog_row_t r;
    vm_t img;
    host_t **targets = NULL;
    int st = s_fanout_begin(c, p->ref, &r, &img, &targets);
    if (st)
        return st;
    size_t nh = zhashx_size(self->hosts);
    size_t n = 0;
    if (p->all_hosts) {
        for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
            if (h->state == HOST_ONLINE && h->routing && h->image_cache_mib > 0)
                targets[n++] = h;
    } else {
        for (size_t i = 0; i < p->n_hosts; i++) {
            host_t *h = p->hosts[i] && tt_name_valid(p->hosts[i])
                            ? model_host_get(self, p->hosts[i])
                            : NULL;
            if (!h || h->state != HOST_ONLINE || !h->routing || h->image_cache_mib == 0) {
                free(targets);
                return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST,
                                  "host '%.64s' is %s: nothing pulled", p->hosts[i] ? p->hosts[i] : "",
                                  !h ? "unknown" : h->image_cache_mib == 0 && h->routing
                                                       ? "without an image cache"
                                                       : "not online");
            }
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = targets[j] == h;
            if (!dup && n < nh)
                targets[n++] = h;
        }
    }
    size_t sent = 0;
    for (size_t i = 0; i < n; i++)
        if (!model_host_holds(targets[i], img.image_blobs) && wcmd_pull(self, targets[i], &img))
            sent++;
    free(targets);
    zsys_info("image %s:%s pull: %zu of %zu host(s) asked to fetch it", r.name, r.tag, sent, n);
    c->no_record = true;
    s_send_image(c, &r, false);
    return 0;
}

/* A host offers an engine that takes memory snapshots. */
static bool s_host_qemu(const host_t *h)
{
    return model_host_engine_with(h, TT_CAP_SNAPSHOTS) != NULL;
}

/* Memory-snapshot templates (docs/SNAPSHOTS.md): each target host (every
 * online host with an image cache and the qemu engine, or the ones named)
 * is asked to make a template of the image for (cpu, mem). The answer
 * does not wait for them: it is the image as now, whose `templates` fill
 * in as the hosts advertise them (ttctl image prepare polls image show).
 * A named host that is unknown, down, without a cache or without the qemu
 * engine refuses the whole request; nothing is sent then. */
int image_prepare(handler_ctx_t *c)
{
    broker_t *self = c->self;
    const Ttfleet__ImagePrepare *p = c->req->image_prepare;
    if (!p || !p->ref)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST, "image prepare without a body");
    if (!p->all_hosts && p->n_hosts == 0)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST,
                                  "image prepare needs --hosts all or host ids");
    if (p->n_hosts > 1000)
        return handler_fail_norec(c, TTFLEET__STATUS__BAD_REQUEST, "at most 1000 hosts");
    uint32_t cpu = p->cpu ? p->cpu : 2, mem = p->mem_mib ? p->mem_mib : 1024;
    if (cpu > TT_MAX_CPU || mem < 16 || mem > TT_MAX_MEM_MIB)
        return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST,
                          "cpu %u or mem %u MiB out of range (cpu 1..%u, mem 16..%u MiB)", cpu, mem,
                          TT_MAX_CPU, TT_MAX_MEM_MIB);
    catalog_row_t r;
    vm_t img;
    host_t **targets = NULL;
    int st = s_fanout_begin(c, p->ref, &r, &img, &targets);
    if (st)
        return st;
    size_t nh = zhashx_size(self->hosts);
    size_t n = 0;
    if (p->all_hosts) {
        for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
            if (h->state == HOST_ONLINE && h->routing && h->image_cache_mib > 0 && s_host_qemu(h))
                targets[n++] = h;
        if (n == 0) {
            free(targets);
            return handler_fail_norec(c, TTFLEET__STATUS__UNAVAILABLE,
                                      "no online host with an image cache offers the qemu engine");
        }
    } else {
        for (size_t i = 0; i < p->n_hosts; i++) {
            host_t *h = p->hosts[i] && tt_name_valid(p->hosts[i])
                            ? model_host_get(self, p->hosts[i])
                            : NULL;
            const char *why = !h                                      ? "unknown"
                              : h->state != HOST_ONLINE || !h->routing ? "not online"
                              : h->image_cache_mib == 0                ? "without an image cache"
                              : !s_host_qemu(h) ? "without the qemu engine (templates are memory "
                                                  "snapshots of qemu VMs)"
                                                : NULL;
            if (why) {
                free(targets);
                return s_fail_fmt(c, TTFLEET__STATUS__BAD_REQUEST,
                                  "host '%.64s' is %s: nothing prepared",
                                  p->hosts[i] ? p->hosts[i] : "", why);
            }
            bool dup = false;
            for (size_t j = 0; j < n && !dup; j++)
                dup = targets[j] == h;
            if (!dup && n < nh)
                targets[n++] = h;
        }
    }
    uint32_t disk = r.min_disk_mib > 40960 ? r.min_disk_mib : 40960;
    size_t sent = 0;
    for (size_t i = 0; i < n; i++)
        if (wcmd_prepare(self, targets[i], &img, cpu, mem, disk, r.readiness))
            sent++;
    free(targets);
    zsys_info("image %s:%s prepare (cpu %u, mem %u MiB): %zu of %zu host(s) asked", r.name, r.tag,
              cpu, mem, sent, n);
    c->no_record = true;
    s_send_image(c, &r, false);
    return 0;
}
