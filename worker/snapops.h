/*
 * snapops: the templates of memory snapshots this worker holds
 * (docs/SNAPSHOTS.md, snapshot.h for the store on disk).
 *
 * The worker keeps one template per (image, cpu, mem, QEMU version) in
 * <state>/templates. This module indexes them, validated against the
 * running QEMU's version line, and puts them into the image cache's
 * accounting (imgcache_set_extra) when the worker has one: their bytes
 * count against --image-cache-mib, they are evicted least recently used
 * first together with the image blobs, a template a VM was cloned from is
 * never evicted (snapops_acquire), and the templates of an image leave
 * with its blob (a new image digest makes a new key; the old template is
 * never used again and goes). Without an image cache they are indexed
 * with no limit.
 *
 * Which template a clone came from is the file <vm dir>/template (its
 * key), written before the clone is started, so a restarted worker knows
 * the templates in use before it removes any (snapops_vm_loaded).
 *
 * Owned by the worker's loop thread; every call is bounded (directory
 * reads of the store, a few small files).
 */
#ifndef TT_WORKER_SNAPOPS_H
#define TT_WORKER_SNAPOPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "imgcache.h"
#include "snapshot.h"
#include "ttfleet.pb-c.h"

typedef struct snapops_t snapops_t;

typedef struct {
    snap_tmpl_t t;
    uint64_t bytes; /* ram + state + disk */
    uint64_t tick;  /* last use (imgcache_tick / the directory's mtime) */
    int users;      /* VMs cloned from it */
} snapops_entry_t;

/* Index <state_dir>/templates for qemu_version (not NULL), into cache's
 * accounting when cache is not NULL. Removes .tmp.* leftovers of dead
 * makers. NULL with a reason. */
snapops_t *snapops_new(const char *state_dir, const char *qemu_version, imgcache_t *cache,
                       char *err, size_t errlen);
void snapops_destroy(snapops_t **self_p);

const char *snapops_root(const snapops_t *self);
const char *snapops_qemu_version(const snapops_t *self);

/* The store key of (image, digest, cpu, mem) with this QEMU. 0 / -1. */
int snapops_key(const snapops_t *self, const char *image, const char *digest, uint32_t cpu,
                uint32_t mem_mib, char *key, size_t len, char *err, size_t errlen);
/* The usable template of key, or NULL. */
const snapops_entry_t *snapops_find(const snapops_t *self, const char *key);

/* A VM is cloned from key (its file <vm_dir>/template is written here
 * first, fsynced): one more user, most recently used. 0 / -1. */
int snapops_acquire(snapops_t *self, const char *vm_dir, const char *key, char *err, size_t errlen);
/* The VM of vm_dir is gone or no longer uses its template. */
void snapops_release(snapops_t *self, const char *key);
/* At start: the VM in vm_dir (loaded from worker.db) holds the template
 * its <vm_dir>/template names, if any; its key into key ("" if none). */
void snapops_vm_loaded(snapops_t *self, const char *vm_dir, char *key, size_t len);
/* After the VMs were loaded: remove the templates this QEMU cannot use
 * that no VM uses, and trim to the cache's limit. */
void snapops_gc(snapops_t *self);

/* Room for a template of about bytes before it is made (evicting the
 * least recently used unused blobs and templates). 0 / -1 with a reason. */
int snapops_reserve(snapops_t *self, uint64_t bytes, char *err, size_t errlen);
void snapops_unreserve(snapops_t *self, uint64_t bytes);
/* A template was committed under key: index it (replacing an older one of
 * the key). 0 / -1 with a reason (it is not usable). */
int snapops_added(snapops_t *self, const char *key, char *err, size_t errlen);
/* Remove the template of key if no VM uses it. 0 / -1 with a reason. */
int snapops_remove(snapops_t *self, const char *key, char *err, size_t errlen);

/* The templates indexed (usable ones only), n into *n; valid until the
 * next call that changes the index. */
const snapops_entry_t *snapops_list(const snapops_t *self, size_t *n);
uint64_t snapops_bytes(const snapops_t *self);
/* The templates as TemplateInfo messages (host ""), for READY and EVENTs:
 * *items and *ptrs are allocated (free both); n into *n. 0 / -1. */
int snapops_infos(const snapops_t *self, Ttfleet__TemplateInfo **items,
                  Ttfleet__TemplateInfo ***ptrs, size_t *n);
/* True once after the set of templates changed. */
bool snapops_changed(snapops_t *self);

#endif
