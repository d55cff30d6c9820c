/*
 * snapshot: memory snapshots of VMs (docs/SNAPSHOTS.md) — the operation
 * in flight that an engine with the `snapshots` capability (engine.h)
 * drives, and the template store on disk.
 *
 * Four operations, each begun by one engine call and then driven by
 * snap_poll until it is no longer SNAP_PENDING:
 *
 *   TEMPLATE_SAVE  a VM booted by template_boot (its RAM in op->dir/ram,
 *                  a shared file) is paused and its device state written
 *                  to op->dir/state with migration capability
 *                  x-ignore-shared (the RAM stays in its file); then QEMU
 *                  quits and snap_finish moves the VM's disk in, writes
 *                  meta.json, fsyncs everything and renames the directory
 *                  into the store (snapstore_commit).
 *   CLONE_RESTORE  a new VM from the template in op->dir: a qcow2 overlay
 *                  over the template's disk, the template's RAM file
 *                  mapped copy-on-write (share=off), -incoming defer,
 *                  migrate-incoming from the state file, then cont.
 *   SUSPEND        a running VM's whole RAM and device state to
 *                  <vm dir>/suspend.state (written as suspend.partial,
 *                  fsynced and renamed by snap_finish); QEMU quits, the
 *                  disk stays.
 *   RESUME         a suspended VM back from <vm dir>/suspend.state; the
 *                  file is removed by snap_finish once the VM runs.
 *
 * Each call is bounded: begin and poll make at most a few QMP round trips
 * (each bounded by SNAP_QMP_MS, a few ms normally) or one spawn, finish
 * fsyncs files (bounded by the disk). The worker runs them on its engine
 * job pool (jobs.h), like start and pause, and re-polls on its timer, so
 * its loop never waits on a save or a restore and no thread is held while
 * a migration runs.
 *
 * A poll answers SNAP_PENDING (poll again in about SNAP_POLL_MS),
 * SNAP_FINISH (QEMU is done: call snap_finish), SNAP_DONE (complete), or
 * -1 with a reason (the operation failed and was undone: a failed restore
 * leaves no QEMU running, a failed save leaves the VM as it was when it
 * can, and never a file that looks complete).
 */
#ifndef TT_WORKER_SNAPSHOT_H
#define TT_WORKER_SNAPSHOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum { SNAP_TEMPLATE_SAVE = 1, SNAP_CLONE_RESTORE, SNAP_SUSPEND, SNAP_RESUME };
enum { SNAP_DONE = 0, SNAP_PENDING = 1, SNAP_FINISH = 2 };

#define SNAP_QMP_MS 2000    /* one QMP round trip, at most */
#define SNAP_POLL_MS 5      /* how often a caller polls */
#define SNAP_SAVE_MS 120000 /* a save or a restore fails after this */
#define SNAP_GUID_LEN 37    /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" + NUL */

typedef struct {
    int kind;  /* SNAP_* */
    int phase; /* the engine's own step */
    /* TEMPLATE_SAVE: the template being made (snapstore_begin);
     * CLONE_RESTORE: the complete template to clone. */
    char dir[1024];
    /* CLONE_RESTORE and RESUME: the VM generation ID the VM gets; begin
     * makes a fresh random one when it is "". */
    char vmgenid[SNAP_GUID_LEN];
    int64_t started_ms;   /* monotonic, set by begin */
    int64_t deadline_ms;  /* the operation fails after it */
    int64_t incoming_ms;  /* a restore: when QMP answered and the stream began */
    int64_t migrated_ms;  /* when the migration completed (0 = not yet) */
    int64_t done_ms;      /* when the VM ran again / QEMU was gone */
    uint64_t state_bytes; /* the state file's size once written */
} snap_op_t;

/* A fresh random RFC 4122 version 4 UUID into out. 0 / -1. */
int snap_guid(char out[SNAP_GUID_LEN]);

/* ---- the template store: <root>/<key>/{ram,state,disk.qcow2,meta.json} ----
 *
 * <root> is <state dir>/templates (templates and VM directories live on
 * one file system, so a template's disk is moved in by rename). A
 * template is made in <root>/.tmp.<key>.<pid>.<start time>.<n> and renamed
 * to <root>/<key> only after every file and directory in it was fsynced:
 * a crash at any point leaves at most a .tmp.* directory, which no lookup
 * reads and snapstore_gc removes once its maker is dead. */

#define SNAP_KEY_MAX 160

typedef struct {
    char key[SNAP_KEY_MAX];
    char image[80];        /* the image's name */
    char image_digest[80]; /* "sha256:..." or "" for a host-local image */
    uint32_t cpu, mem_mib;
    char qemu_version[128]; /* the first line of `qemu --version` */
    uint64_t ram_bytes, state_bytes, disk_bytes;
    int64_t created;  /* unix seconds */
    bool usable;      /* validated: complete and of this QEMU */
    char reason[256]; /* why not, when !usable */
} snap_tmpl_t;

/* The store's key of an image (digest "sha256:HEX" or "" with its name),
 * cpu, mem and QEMU version line: "<image id>.c<cpu>.m<mem>.q<12 hex of
 * sha256(version)>". 0 / -1 if an input is invalid. */
int snapstore_key(const char *image, const char *digest, uint32_t cpu, uint32_t mem_mib,
                  const char *qemu_version, char *key, size_t len, char *err, size_t errlen);

/* The QEMU version line of qemu (runs `qemu --version`, bounded). 0 / -1. */
int snapstore_qemu_version(const char *qemu, char *buf, size_t len, char *err, size_t errlen);

/* Make <root> if needed and a fresh temporary directory for key; its path
 * into dir. 0 / -1. */
int snapstore_begin(const char *root, const char *key, char *dir, size_t len, char *err,
                    size_t errlen);

/* Complete the template in tmpdir: ram, state and disk.qcow2 must be
 * there; writes meta.json from t (sizes are measured here), fsyncs every
 * file and the directory, renames it to <root>/<t->key> (replacing an
 * older one) and fsyncs root. 0 / -1 (tmpdir is left for snapstore_gc). */
int snapstore_commit(const char *root, const char *tmpdir, snap_tmpl_t *t, char *err,
                     size_t errlen);

/* Read and validate <root>/<key> against qemu_version: meta.json parses,
 * the version matches, every file is there with the recorded size. Fills
 * t (t->usable, t->reason). 0 if it was read, -1 if there is no such
 * template (or its meta cannot be read: t->reason says). */
int snapstore_get(const char *root, const char *key, const char *qemu_version, snap_tmpl_t *t);

/* Every template under root (temporary directories are skipped), each
 * validated as snapstore_get; cb returns non-zero to stop. The count
 * listed, or -1 if root cannot be read (0 if it does not exist). */
int snapstore_list(const char *root, const char *qemu_version,
                   int (*cb)(const snap_tmpl_t *t, void *arg), void *arg);

/* Remove <root>/<key>: renamed to a .rm.* name first (so a half-removed
 * template is never found), then deleted. 0 / -1. VMs cloned from it
 * keep running (their RAM mapping holds the file) but cannot start cold
 * again without their disk's backing file: the caller checks it is not in
 * use. */
int snapstore_remove(const char *root, const char *key, char *err, size_t errlen);

/* Remove .tmp.* directories whose maker (pid + start time in the name)
 * is gone, .rm.* leftovers, and, when qemu_version is not NULL, templates
 * that are not usable with it (a template's disk backs its clones' disks:
 * the caller runs this when no clone of those templates exists, as
 * snapstore_remove). The number removed. */
int snapstore_gc(const char *root, const char *qemu_version);

#endif
