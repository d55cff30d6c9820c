/*
 * sched: where a VM goes.
 *
 * Constraints first: the host is online and not draining, offers the
 * engine and the image, its engine declares the capabilities the VM needs
 * (a catalog image: TT_CAP_CATALOG and an image cache), and has room for cpu, mem and disk after
 * the overcommit ratios (capacity a worker is still freeing, wcmd.h, counts as used). Among the
 * hosts that pass, best-fit picks the one left with the least free share after placement (it
 * packs hosts, keeping big holes for big VMs); spread picks the one left with the most. Ties go
 * to the lower host id so a placement is reproducible.
 *
 * The scan is linear in hosts: 1,000 hosts cost a few microseconds per VM,
 * which is below the cost of decoding the request.
 */
#include "scheduler.h"

#include <stdio.h>
#include <string.h>

static uint64_t s_cap(uint64_t total, double ratio)
{
    return (uint64_t)((double)total * ratio);
}

/* What placement counts as used on h: the VMs' sums and what its worker is
 * still freeing. */
static uint64_t s_cpu(const host_t *h)
{
    return (uint64_t)h->cpu_used + h->cpu_freeing;
}

static uint64_t s_mem(const host_t *h)
{
    return h->mem_used + h->mem_freeing;
}

static uint64_t s_disk(const host_t *h)
{
    return h->disk_used + h->disk_freeing;
}

/* Which resource a host lacks for cpu/mem/disk more: 0 none, 1 cpu, 2 mem, 3 disk. */
static int s_short(broker_t *self, const host_t *h, uint32_t cpu, uint64_t mem, uint64_t disk)
{
    if (s_cpu(h) + cpu > s_cap(h->cpu_total, self->cfg.cpu_ratio))
        return 1;
    if (s_mem(h) + mem > s_cap(h->mem_total, self->cfg.mem_ratio))
        return 2;
    if (s_disk(h) + disk > s_cap(h->disk_total, self->cfg.disk_ratio))
        return 3;
    return 0;
}

/* ", N of it being freed" when the worker still frees some of it. */
static const char *s_freeing_note(uint64_t freeing, const char *unit, char *buf, size_t len)
{
    if (!freeing)
        return "";
    snprintf(buf, len, " (%llu%s of it still being freed by the worker)",
             (unsigned long long)freeing, unit);
    return buf;
}

bool sched_fits(broker_t *self, const host_t *h, uint32_t cpu, uint64_t mem, uint64_t disk,
                char *msg, size_t msglen)
{
    int which = s_short(self, h, cpu, mem, disk);
    if (which == 0)
        return true;
    if (!msg)
        return false;
    char note[96];
    if (which == 1)
        snprintf(msg, msglen, "not enough cpu on host %s: total %llu, used %llu%s, wanted %u",
                 h->id, (unsigned long long)s_cap(h->cpu_total, self->cfg.cpu_ratio),
                 (unsigned long long)s_cpu(h),
                 s_freeing_note(h->cpu_freeing, "", note, sizeof note), cpu);
    else if (which == 2)
        snprintf(msg, msglen,
                 "not enough mem on host %s: total %llu MiB, used %llu MiB%s, wanted %llu MiB",
                 h->id, (unsigned long long)s_cap(h->mem_total, self->cfg.mem_ratio),
                 (unsigned long long)s_mem(h),
                 s_freeing_note(h->mem_freeing, " MiB", note, sizeof note),
                 (unsigned long long)mem);
    else
        snprintf(msg, msglen,
                 "not enough disk on host %s: total %llu MiB, used %llu MiB%s, wanted %llu MiB",
                 h->id, (unsigned long long)s_cap(h->disk_total, self->cfg.disk_ratio),
                 (unsigned long long)s_disk(h),
                 s_freeing_note(h->disk_freeing, " MiB", note, sizeof note),
                 (unsigned long long)disk);
    return false;
}

static double s_free_share(broker_t *self, const host_t *h, const sched_want_t *w)
{
    double c = (double)s_cap(h->cpu_total, self->cfg.cpu_ratio);
    double m = (double)s_cap(h->mem_total, self->cfg.mem_ratio);
    double d = (double)s_cap(h->disk_total, self->cfg.disk_ratio);
    double fc = c > 0 ? (c - (double)s_cpu(h) - w->cpu) / c : 0;
    double fm = m > 0 ? (m - (double)s_mem(h) - w->mem) / m : 0;
    double fd = d > 0 ? (d - (double)s_disk(h) - w->disk) / d : 0;
    return fc + fm + fd;
}

/* Hosts that offer an (engine, image) pair, cached per pair: matching
 * names is the costly part of a scan over 1,000 hosts. The cache is valid
 * for one generation of the host registry; sched_invalidate() starts a new
 * one whenever a host joins, changes its offer or goes away. */
typedef struct {
    uint64_t gen;
    size_t n;
    host_t **hosts;
} s_offer_t;

static void s_offer_free(void **item)
{
    s_offer_t *o = *item;
    if (o) {
        free(o->hosts);
        free(o);
        *item = NULL;
    }
}

void sched_invalidate(broker_t *self)
{
    self->hosts_gen++;
}

/* image NULL: a catalog image, offered by every host with the engine and
 * an image cache. */
static s_offer_t *s_offer(broker_t *self, const char *engine, const char *image)
{
    if (!self->offers) {
        self->offers = zhashx_new();
        zhashx_set_destructor(self->offers, s_offer_free);
    }
    char key[2 * TT_MAX_NAME + 2];
    snprintf(key, sizeof key, "%s\x1f%s", engine, image ? image : "\x1e");
    s_offer_t *o = zhashx_lookup(self->offers, key);
    if (o && o->gen == self->hosts_gen)
        return o;
    if (!o) {
        if (zhashx_size(self->offers) > 4096)
            zhashx_purge(self->offers); /* bounded: names come from clients */
        o = calloc(1, sizeof *o);
        if (!o)
            return NULL;
        zhashx_insert(self->offers, key, o);
    }
    free(o->hosts);
    o->n = 0;
    o->hosts = calloc(zhashx_size(self->hosts) + 1, sizeof *o->hosts);
    if (!o->hosts) {
        zhashx_delete(self->offers, key);
        return NULL;
    }
    for (host_t *h = zhashx_first(self->hosts); h; h = zhashx_next(self->hosts))
        if (image ? model_host_has(h, engine, image)
                  : h->image_cache_mib > 0 && (model_host_engine_caps(h, engine) & TT_CAP_CATALOG))
            o->hosts[o->n++] = h;
    o->gen = self->hosts_gen;
    return o;
}

/* Does h hold a memory-snapshot template of the VM's image, cpu and mem? */
static bool s_has_template(const host_t *h, const sched_want_t *w)
{
    for (size_t i = 0; i < h->n_tmpl; i++)
        if (h->tmpl[i].cpu == w->cpu && h->tmpl[i].mem_mib == w->mem &&
            strcmp(h->tmpl[i].image, w->image) == 0)
            return true;
    return false;
}

host_t *sched_place(broker_t *self, const sched_want_t *want, int *status, char *msg, size_t msglen)
{
    bool wants_tmpl = want->boot && strcmp(want->boot, "cold") != 0;
    bool must_tmpl = want->boot && strcmp(want->boot, "snapshot") == 0;
    int no_tmpl = 0; /* hosts left out for want of a template */
    bool best_tmpl = false;
    host_t *best = NULL;
    double best_score = 0;
    int candidates = 0;
    /* pool sums over the candidate hosts, for the error message */
    uint64_t cpu_t = 0, cpu_u = 0, mem_t = 0, mem_u = 0, disk_t = 0, disk_u = 0;
    uint64_t cpu_f = 0, mem_f = 0, disk_f = 0; /* of used: still being freed */
    int short_of = 0;

    s_offer_t *offer = s_offer(self, want->engine, want->image_blobs ? NULL : want->image);
    bool best_holds = false;
    for (size_t k = 0; offer && k < offer->n; k++) {
        host_t *h = offer->hosts[k];
        if (h->state != HOST_ONLINE || h->draining || !h->routing)
            continue;
        if ((model_host_engine_caps(h, want->engine) & want->caps) != want->caps)
            continue;
        bool excluded = false;
        for (int i = 0; i < want->n_exclude && !excluded; i++)
            excluded = want->exclude[i] == h;
        if (excluded)
            continue;
        bool tmpl = wants_tmpl && s_has_template(h, want);
        if (must_tmpl && !tmpl && (model_host_engine_caps(h, want->engine) & TT_CAP_SNAPSHOTS)) {
            no_tmpl++;
            continue;
        }
        candidates++;
        cpu_t += s_cap(h->cpu_total, self->cfg.cpu_ratio);
        cpu_u += s_cpu(h);
        mem_t += s_cap(h->mem_total, self->cfg.mem_ratio);
        mem_u += s_mem(h);
        disk_t += s_cap(h->disk_total, self->cfg.disk_ratio);
        disk_u += s_disk(h);
        cpu_f += h->cpu_freeing;
        mem_f += h->mem_freeing;
        disk_f += h->disk_freeing;
        int which = s_short(self, h, want->cpu, want->mem, want->disk);
        if (which) {
            /* report the scarcest resource: the first one some host lacks */
            if (!short_of || which < short_of)
                short_of = which;
            continue;
        }
        double score = s_free_share(self, h, want);
        bool better = !best || (want->spread ? score > best_score : score < best_score) ||
                      (score == best_score && strcmp(h->id, best->id) < 0);
        /* a catalog image: hosts that hold it first (no fetch), then fit;
         * under spread, spreading first and holding breaks ties */
        bool holds = want->image_blobs && model_host_holds(h, want->image_blobs);
        if (want->image_blobs && best && holds != best_holds &&
            (!want->spread || score == best_score))
            better = holds;
        /* a template (a restore, not a boot) before everything else */
        if (wants_tmpl && best && tmpl != best_tmpl && (!want->spread || score == best_score))
            better = tmpl;
        if (better) {
            best = h;
            best_score = score;
            best_holds = holds;
            best_tmpl = tmpl;
        }
    }
    if (best)
        return best;
    if (candidates == 0 && no_tmpl) {
        *status = TTFLEET__STATUS__UNAVAILABLE;
        snprintf(msg, msglen,
                 "--boot snapshot: no template of image %s for cpu %u, mem %u MiB on any of the "
                 "%d online host(s) that could take it (ttctl image prepare)",
                 want->image, want->cpu, want->mem, no_tmpl);
        return NULL;
    }
    if (candidates == 0) {
        *status = TTFLEET__STATUS__UNAVAILABLE;
        char need[96] = "";
        const char *names[32];
        size_t n = tt_cap_names(want->caps, names, 32);
        for (size_t i = 0, off = 0; i < n && off < sizeof need; i++)
            off +=
                (size_t)snprintf(need + off, sizeof need - off, "%s%s", i ? "," : " (", names[i]);
        if (n)
            snprintf(need + strlen(need), sizeof need - strlen(need), ")");
        if (want->image_blobs)
            snprintf(msg, msglen,
                     "no online host offers engine '%s' running catalog images with an image "
                     "cache%s (for catalog image '%s')",
                     want->engine, need, want->image);
        else if (n)
            snprintf(msg, msglen, "no online host offers engine '%s'%s with image '%s'",
                     want->engine, need, want->image);
        else
            snprintf(msg, msglen, "no online host offers engine '%s' with image '%s'", want->engine,
                     want->image);
        return NULL;
    }
    *status = TTFLEET__STATUS__NO_CAPACITY;
    char note[96];
    if (short_of == 1)
        snprintf(msg, msglen,
                 "not enough cpu: no single host fits; pool total %llu, used %llu%s, wanted %u",
                 (unsigned long long)cpu_t, (unsigned long long)cpu_u,
                 s_freeing_note(cpu_f, "", note, sizeof note), want->cpu);
    else if (short_of == 2)
        snprintf(msg, msglen,
                 "not enough mem: no single host fits; pool total %llu MiB, used %llu MiB%s, "
                 "wanted %u MiB",
                 (unsigned long long)mem_t, (unsigned long long)mem_u,
                 s_freeing_note(mem_f, " MiB", note, sizeof note), want->mem);
    else
        snprintf(msg, msglen,
                 "not enough disk: no single host fits; pool total %llu MiB, used %llu MiB%s, "
                 "wanted %u MiB",
                 (unsigned long long)disk_t, (unsigned long long)disk_u,
                 s_freeing_note(disk_f, " MiB", note, sizeof note), want->disk);
    return NULL;
}
