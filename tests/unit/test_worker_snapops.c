/*
 * Unit tests of worker/snapops.c: memory-snapshot templates in the image
 * cache's accounting. Their bytes count against the limit; they are
 * evicted least recently used first with the blobs, never while a VM uses
 * one; they leave with their image's blob; they are found again after a
 * restart; a template of another QEMU version is removed by gc only once
 * no VM names it.
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "snapops.h"
#include "test_imgcache.h"
#include "ttblob.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MIB (1024 * 1024)

static void s_file(const char *dir, const char *name, size_t size, int seed)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unsigned char *data = s_pattern(seed, size);
    s_write(path, data, size);
    free(data);
}

/* A template of (img, digest, cpu, mem) made as a save makes it: room
 * reserved, files written, committed, indexed. Its key into key. */
static void s_template(snapops_t *s, const char *digest, uint32_t cpu, uint32_t mem, size_t disk,
                       char *key)
{
    char err[256], dir[1024];
    CHECK(snapops_key(s, "img", digest, cpu, mem, key, SNAP_KEY_MAX, err, sizeof err) == 0);
    uint64_t want = ((uint64_t)mem << 20) + disk + 4096;
    CHECK(snapops_reserve(s, want, err, sizeof err) == 0);
    CHECK(snapstore_begin(snapops_root(s), key, dir, sizeof dir, err, sizeof err) == 0);
    s_file(dir, "ram", (size_t)mem << 20, 1);
    s_file(dir, "state", 4096, 2);
    s_file(dir, "disk.qcow2", disk, 3);
    snap_tmpl_t t;
    memset(&t, 0, sizeof t);
    snprintf(t.key, sizeof t.key, "%s", key);
    snprintf(t.image, sizeof t.image, "img");
    snprintf(t.image_digest, sizeof t.image_digest, "%s", digest);
    t.cpu = cpu;
    t.mem_mib = mem;
    snprintf(t.qemu_version, sizeof t.qemu_version, "%s", snapops_qemu_version(s));
    CHECK(snapstore_commit(snapops_root(s), dir, &t, err, sizeof err) == 0);
    snapops_unreserve(s, want);
    CHECK(snapops_added(s, key, err, sizeof err) == 0);
}

static bool s_exists(const snapops_t *s, const char *key)
{
    char path[2048];
    snprintf(path, sizeof path, "%s/%s", snapops_root(s), key);
    return access(path, F_OK) == 0;
}

int main(void)
{
    char base[] = "/tmp/tt-snapops-XXXXXX";
    if (!mkdtemp(base))
        return 2;
    char state[100], cache_dir[100], vmdir[200], err[256];
    snprintf(state, sizeof state, "%s/state", base);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", base);
    snprintf(vmdir, sizeof vmdir, "%s/vms", state);
    mkdir(state, 0750);
    mkdir(vmdir, 0750);
    snprintf(vmdir, sizeof vmdir, "%s/vms/7", state);
    mkdir(vmdir, 0750);

    imgcache_t *c = imgcache_new(cache_dir, 12 * MIB, err, sizeof err);
    CHECK(c);
    char a[TT_DIGEST_LEN + 1], b[TT_DIGEST_LEN + 1];
    s_cache_blob(c, 1, 2 * MIB, a);
    snapops_t *s = snapops_new(state, "QEMU emulator version 1.0", c, err, sizeof err);
    CHECK(s);
    CHECK(snapops_new(state, "", c, err, sizeof err) == NULL && strstr(err, "QEMU version"));

    /* a template counts in the cache's bytes */
    char k1[SNAP_KEY_MAX], k2[SNAP_KEY_MAX];
    s_template(s, a, 1, 3, MIB, k1);
    size_t n = 0;
    const snapops_entry_t *l = snapops_list(s, &n);
    CHECK(n == 1 && l[0].t.cpu == 1 && l[0].t.mem_mib == 3 && l[0].bytes > 4 * MIB);
    CHECK(imgcache_used(c) == 2 * MIB + l[0].bytes);
    CHECK(snapops_changed(s) && !snapops_changed(s));
    Ttfleet__TemplateInfo *ti = NULL, **tp = NULL;
    CHECK(snapops_infos(s, &ti, &tp, &n) == 0 && n == 1 && strcmp(tp[0]->image_digest, a) == 0);
    free(ti);
    free(tp);

    /* a clone holds the second template (its VM directory names it) */
    s_template(s, a, 2, 3, MIB, k2);
    CHECK(snapops_acquire(s, vmdir, k2, err, sizeof err) == 0);
    CHECK(snapops_acquire(s, vmdir, "nope.c1.m1.q000000000000", err, sizeof err) == -1);
    CHECK(snapops_remove(s, k2, err, sizeof err) == -1 && strstr(err, "used by 1 VM"));

    /* a restart finds both; the VM's template file gives the clone back */
    snapops_destroy(&s);
    s = snapops_new(state, "QEMU emulator version 1.0", c, err, sizeof err);
    CHECK(s);
    l = snapops_list(s, &n);
    CHECK(n == 2);
    char key[SNAP_KEY_MAX];
    snapops_vm_loaded(s, vmdir, key, sizeof key);
    CHECK(strcmp(key, k2) == 0 && snapops_find(s, k2) && snapops_find(s, k2)->users == 1);

    /* the blob is in use; room for 4 MiB more: the unused template k1
     * goes, the clone's k2 stays */
    CHECK(imgcache_acquire(c, a) == 0);
    s_cache_blob(c, 2, 4 * MIB, b);
    CHECK(!snapops_find(s, k1) && !s_exists(s, k1));
    CHECK(snapops_find(s, k2) && s_exists(s, k2));
    /* nothing else can go: a clear refusal */
    CHECK(imgcache_acquire(c, b) == 0);
    CHECK(snapops_reserve(s, 8 * MIB, err, sizeof err) == -1 && strstr(err, "image cache full"));

    /* the image's blob leaves once no VM uses it: its templates go with it */
    snapops_release(s, k2);
    imgcache_release(c, a);
    imgcache_forget(c, a);
    CHECK(!snapops_find(s, k2) && !s_exists(s, k2));

    /* another QEMU version: not used; gc removes it only once no VM names it */
    char k3[SNAP_KEY_MAX];
    s_template(s, b, 1, 1, MIB, k3);
    CHECK(snapops_acquire(s, vmdir, k3, err, sizeof err) == 0);
    snapops_destroy(&s);
    s = snapops_new(state, "QEMU emulator version 2.0", c, err, sizeof err);
    CHECK(s);
    snapops_list(s, &n);
    CHECK(n == 0);
    char old[SNAP_KEY_MAX];
    snprintf(old, sizeof old, "%s", k3);
    snapops_gc(s);
    CHECK(s_exists(s, old)); /* vms/7/template names it */
    char tf[1200];
    snprintf(tf, sizeof tf, "%s/template", vmdir);
    unlink(tf);
    snapops_gc(s);
    CHECK(!s_exists(s, old));

    snapops_destroy(&s);
    imgcache_destroy(&c);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "chmod -R u+w %s; rm -rf %s", base, base);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", base);
    return s_report("snapops");
}
