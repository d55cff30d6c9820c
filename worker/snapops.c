/*
 * snapops: the templates this worker holds, in the image cache's
 * accounting. See snapops.h.
 */
#define _GNU_SOURCE
#include "snapops.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <czmq.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

struct snapops_t {
    char root[1024];
    char qver[128];
    imgcache_t *cache; /* NULL: no limit */
    snapops_entry_t *e;
    size_t n, cap;
    /* templates on disk this QEMU cannot use, and the in-use keys of VMs
     * loaded at start that name no indexed template: kept until snapops_gc */
    bool changed;
};

static snapops_entry_t *s_find(const snapops_t *self, const char *key)
{
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->e[i].t.key, key) == 0)
            return &self->e[i];
    return NULL;
}

static uint64_t s_mtime_ns(const char *path)
{
    struct stat sb;
    if (stat(path, &sb))
        return 0;
    return (uint64_t)sb.st_mtim.tv_sec * 1000000000ull + (uint64_t)sb.st_mtim.tv_nsec;
}

static int s_index(snapops_t *self, const snap_tmpl_t *t)
{
    snapops_entry_t *en = s_find(self, t->key);
    if (!en) {
        if (self->n == self->cap) {
            size_t ncap = self->cap ? self->cap * 2 : 8;
            snapops_entry_t *ne = realloc(self->e, ncap * sizeof *ne);
            if (!ne)
                return -1;
            self->e = ne;
            self->cap = ncap;
        }
        en = &self->e[self->n++];
        memset(en, 0, sizeof *en);
    }
    int users = en->users;
    en->t = *t;
    en->users = users;
    en->bytes = t->ram_bytes + t->state_bytes + t->disk_bytes;
    char dir[1300];
    snprintf(dir, sizeof dir, "%s/%s", self->root, t->key);
    en->tick = s_mtime_ns(dir);
    self->changed = true;
    return 0;
}

static void s_drop_at(snapops_t *self, size_t i)
{
    char err[256];
    if (snapstore_remove(self->root, self->e[i].t.key, err, sizeof err))
        zsys_warning("template %s: %s", self->e[i].t.key, err);
    else
        zsys_info("template %s removed (%llu MiB)", self->e[i].t.key,
                  (unsigned long long)(self->e[i].bytes >> 20));
    self->e[i] = self->e[--self->n];
    self->changed = true;
}

/* ---- the image cache's hooks ---- */

static uint64_t s_x_used(void *arg)
{
    return snapops_bytes(arg);
}

static size_t s_oldest_at(const snapops_t *self)
{
    size_t v = self->n;
    for (size_t i = 0; i < self->n; i++)
        if (self->e[i].users == 0 && (v == self->n || self->e[i].tick < self->e[v].tick))
            v = i;
    return v;
}

static int s_x_oldest(void *arg, uint64_t *tick)
{
    snapops_t *self = arg;
    size_t v = s_oldest_at(self);
    if (v == self->n)
        return -1;
    *tick = self->e[v].tick;
    return 0;
}

static void s_x_evict(void *arg)
{
    snapops_t *self = arg;
    size_t v = s_oldest_at(self);
    if (v < self->n)
        s_drop_at(self, v);
}

static void s_x_blob_gone(void *arg, const char *digest)
{
    snapops_t *self = arg;
    for (size_t i = 0; i < self->n;)
        if (self->e[i].users == 0 && strcmp(self->e[i].t.image_digest, digest) == 0)
            s_drop_at(self, i);
        else
            i++;
}

static int s_list_cb(const snap_tmpl_t *t, void *arg)
{
    snapops_t *self = arg;
    if (t->usable && s_index(self, t))
        return 1;
    if (!t->usable)
        zsys_info("template %s: not usable (%s); removed once no VM uses it", t->key, t->reason);
    return 0;
}

snapops_t *snapops_new(const char *state_dir, const char *qemu_version, imgcache_t *cache,
                       char *err, size_t errlen)
{
    if (!qemu_version || !*qemu_version) {
        snprintf(err, errlen, "templates need the QEMU version");
        return NULL;
    }
    snapops_t *self = calloc(1, sizeof *self);
    if (!self) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (snprintf(self->root, sizeof self->root, "%s/templates", state_dir) >=
        (int)sizeof self->root - SNAP_KEY_MAX - 64) {
        snprintf(err, errlen, "state directory path too long for templates");
        free(self);
        return NULL;
    }
    snprintf(self->qver, sizeof self->qver, "%s", qemu_version);
    if (mkdir(self->root, 0750) && errno != EEXIST) {
        snprintf(err, errlen, "cannot make %s: %s", self->root, strerror(errno));
        free(self);
        return NULL;
    }
    snapstore_gc(self->root, NULL); /* .tmp.* of dead makers, .rm.* leftovers */
    if (snapstore_list(self->root, self->qver, s_list_cb, self) < 0) {
        snprintf(err, errlen, "cannot read %s", self->root);
        snapops_destroy(&self);
        return NULL;
    }
    self->cache = cache;
    if (cache) {
        imgcache_extra_t x = {self, s_x_used, s_x_oldest, s_x_evict, s_x_blob_gone};
        imgcache_set_extra(cache, &x);
    }
    return self;
}

void snapops_destroy(snapops_t **self_p)
{
    snapops_t *self = *self_p;
    if (!self)
        return;
    if (self->cache)
        imgcache_set_extra(self->cache, NULL);
    free(self->e);
    free(self);
    *self_p = NULL;
}

const char *snapops_root(const snapops_t *self)
{
    return self->root;
}

const char *snapops_qemu_version(const snapops_t *self)
{
    return self->qver;
}

int snapops_key(const snapops_t *self, const char *image, const char *digest, uint32_t cpu,
                uint32_t mem_mib, char *key, size_t len, char *err, size_t errlen)
{
    return snapstore_key(image, digest ? digest : "", cpu, mem_mib, self->qver, key, len, err,
                         errlen);
}

const snapops_entry_t *snapops_find(const snapops_t *self, const char *key)
{
    return s_find(self, key);
}

static void s_touch(snapops_t *self, snapops_entry_t *en)
{
    en->tick = self->cache ? imgcache_tick(self->cache) : en->tick + 1;
    char dir[1300];
    snprintf(dir, sizeof dir, "%s/%s", self->root, en->t.key);
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = (time_t)(en->tick / 1000000000ull);
    ts[0].tv_nsec = ts[1].tv_nsec = (long)(en->tick % 1000000000ull);
    if (self->cache)
        utimensat(AT_FDCWD, dir, ts, 0);
}

int snapops_acquire(snapops_t *self, const char *vm_dir, const char *key, char *err, size_t errlen)
{
    snapops_entry_t *en = s_find(self, key);
    if (!en)
        FAIL("no usable template %.160s on this host", key);
    char path[1300], tmp[1320];
    if (snprintf(path, sizeof path, "%s/template", vm_dir) >= (int)sizeof path)
        FAIL("VM directory path too long");
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        FAIL("cannot write %s: %s", tmp, strerror(errno));
    size_t klen = strlen(key);
    bool ok = write(fd, key, klen) == (ssize_t)klen && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
    close(fd);
    if (!ok || rename(tmp, path)) {
        unlink(tmp);
        FAIL("cannot write %s", path);
    }
    en->users++;
    s_touch(self, en);
    self->changed = true; /* users are advertised */
    return 0;
}

void snapops_release(snapops_t *self, const char *key)
{
    snapops_entry_t *en = key && *key ? s_find(self, key) : NULL;
    if (en && en->users > 0) {
        en->users--;
        self->changed = true;
    }
}

void snapops_vm_loaded(snapops_t *self, const char *vm_dir, char *key, size_t len)
{
    key[0] = '\0';
    char path[1300], buf[SNAP_KEY_MAX + 2];
    snprintf(path, sizeof path, "%s/template", vm_dir);
    FILE *f = fopen(path, "re");
    if (!f)
        return;
    if (fgets(buf, sizeof buf, f)) {
        buf[strcspn(buf, "\n")] = '\0';
        snapops_entry_t *en = s_find(self, buf);
        if (en)
            en->users++;
        snprintf(key, len, "%s", buf);
    }
    fclose(f);
}

/* The key is named by a VM's template file under <state>/vms. */
static bool s_named_by_vm(const snapops_t *self, const char *key)
{
    char vms[1100];
    snprintf(vms, sizeof vms, "%.1000s/../vms", self->root);
    DIR *d = opendir(vms);
    if (!d)
        return false;
    bool found = false;
    struct dirent *de;
    while (!found && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[1400], buf[SNAP_KEY_MAX + 2];
        snprintf(path, sizeof path, "%s/%.100s/template", vms, de->d_name);
        FILE *f = fopen(path, "re");
        if (!f)
            continue;
        if (fgets(buf, sizeof buf, f)) {
            buf[strcspn(buf, "\n")] = '\0';
            found = strcmp(buf, key) == 0;
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

static int s_gc_cb(const snap_tmpl_t *t, void *arg)
{
    snapops_t *self = arg;
    char err[256];
    if (t->usable || s_named_by_vm(self, t->key))
        return 0;
    if (snapstore_remove(self->root, t->key, err, sizeof err))
        zsys_warning("template %s: %s", t->key, err);
    else
        zsys_info("template %s removed: %s", t->key, t->reason);
    return 0;
}

void snapops_gc(snapops_t *self)
{
    snapstore_list(self->root, self->qver, s_gc_cb, self);
    if (self->cache)
        imgcache_trim(self->cache);
}

int snapops_reserve(snapops_t *self, uint64_t bytes, char *err, size_t errlen)
{
    return self->cache ? imgcache_reserve(self->cache, bytes, err, errlen) : 0;
}

void snapops_unreserve(snapops_t *self, uint64_t bytes)
{
    if (self->cache)
        imgcache_unreserve(self->cache, bytes);
}

int snapops_added(snapops_t *self, const char *key, char *err, size_t errlen)
{
    snap_tmpl_t t;
    if (snapstore_get(self->root, key, self->qver, &t) || !t.usable)
        FAIL("template %.160s: %s", key, t.reason[0] ? t.reason : "not found");
    if (s_index(self, &t))
        FAIL("out of memory");
    snapops_entry_t *en = s_find(self, key);
    if (en)
        s_touch(self, en);
    return 0;
}

int snapops_remove(snapops_t *self, const char *key, char *err, size_t errlen)
{
    for (size_t i = 0; i < self->n; i++)
        if (strcmp(self->e[i].t.key, key) == 0) {
            if (self->e[i].users)
                FAIL("template %.160s is used by %d VM(s)", key, self->e[i].users);
            s_drop_at(self, i);
            return 0;
        }
    FAIL("no template %.160s", key);
}

const snapops_entry_t *snapops_list(const snapops_t *self, size_t *n)
{
    *n = self->n;
    return self->e;
}

uint64_t snapops_bytes(const snapops_t *self)
{
    uint64_t b = 0;
    for (size_t i = 0; i < self->n; i++)
        b += self->e[i].bytes;
    return b;
}

bool snapops_changed(snapops_t *self)
{
    bool c = self->changed;
    self->changed = false;
    return c;
}

int snapops_infos(const snapops_t *self, Ttfleet__TemplateInfo **items,
                  Ttfleet__TemplateInfo ***ptrs, size_t *n)
{
    *items = calloc(self->n + 1, sizeof **items);
    *ptrs = calloc(self->n + 1, sizeof **ptrs);
    *n = 0;
    if (!*items || !*ptrs) {
        free(*items);
        free(*ptrs);
        *items = NULL;
        *ptrs = NULL;
        return -1;
    }
    for (size_t i = 0; i < self->n; i++) {
        Ttfleet__TemplateInfo *ti = &(*items)[i];
        ttfleet__template_info__init(ti);
        const snapops_entry_t *en = &self->e[i];
        ti->host = (char *)"";
        ti->image = (char *)en->t.image;
        ti->image_digest = (char *)en->t.image_digest;
        ti->cpu = en->t.cpu;
        ti->mem_mib = en->t.mem_mib;
        ti->bytes = en->bytes;
        ti->created = en->t.created;
        ti->users = (uint32_t)(en->users > 0 ? en->users : 0);
        (*ptrs)[i] = ti;
    }
    *n = self->n;
    return 0;
}
