/*
 * snapstore: the template store of snapshot.h. Files are fsynced before
 * the directory holding them is renamed into place; meta.json is written
 * and read with jansson.
 */
#define _GNU_SOURCE
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proc.h"
#include "spawn.h"
#include "ttcrash.h"
#include "ttproto.h"

#define S_META "meta.json"
#define S_META_MAX 65536

int snap_guid(char out[SNAP_GUID_LEN])
{
    unsigned char b[16];
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    if (n != (ssize_t)sizeof b)
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, SNAP_GUID_LEN,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

static bool s_name_ok(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (!n || n > max || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
            return false;
    return true;
}

int snapstore_key(const char *image, const char *digest, uint32_t cpu, uint32_t mem_mib,
                  const char *qemu_version, char *key, size_t len, char *err, size_t errlen)
{
    char id[80];
    if (digest && digest[0]) {
        const char *hex = strncmp(digest, "sha256:", 7) == 0 ? digest + 7 : "";
        if (strlen(hex) != 64 || strspn(hex, "0123456789abcdef") != 64) {
            snprintf(err, errlen, "image digest '%.80s' is not sha256:<64 hex>", digest);
            return -1;
        }
        snprintf(id, sizeof id, "%s", hex);
    } else {
        if (!image || !s_name_ok(image, 64)) {
            snprintf(err, errlen, "image name '%.80s' is not [A-Za-z0-9._-]{1,64}",
                     image ? image : "");
            return -1;
        }
        snprintf(id, sizeof id, "local-%s", image);
    }
    if (cpu < 1 || cpu > 1024 || mem_mib < 1 || mem_mib > 16u * 1024 * 1024) {
        snprintf(err, errlen, "cpu %u / mem %u MiB out of range", cpu, mem_mib);
        return -1;
    }
    if (!qemu_version || !qemu_version[0]) {
        snprintf(err, errlen, "the QEMU version is unknown");
        return -1;
    }
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(qemu_version, strlen(qemu_version), md, &mdlen, EVP_sha256(), NULL)) {
        snprintf(err, errlen, "sha256 failed");
        return -1;
    }
    int n = snprintf(key, len, "%s.c%u.m%u.q%02x%02x%02x%02x%02x%02x", id, cpu, mem_mib, md[0],
                     md[1], md[2], md[3], md[4], md[5]);
    if (n < 0 || (size_t)n >= len || (size_t)n >= SNAP_KEY_MAX) {
        snprintf(err, errlen, "template key too long");
        return -1;
    }
    return 0;
}

int snapstore_qemu_version(const char *qemu, char *buf, size_t len, char *err, size_t errlen)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    char *argv[] = {(char *)qemu, "--version", NULL};
    pid_t pid = spawn_child(argv, -1, pfd[1], err, errlen);
    close(pfd[1]);
    if (pid <= 0) {
        close(pfd[0]);
        return -1;
    }
    char out[512];
    memset(out, 0, sizeof out);
    /* it prints less than out holds: a short read (EOF) is the answer */
    size_t got = 0;
    int64_t deadline = tt_mono_ms() + 5000;
    while (got < sizeof out - 1 && !memchr(out, '\n', got)) {
        if (spawn_read_full(pfd[0], out + got, 1, deadline) != 1)
            break;
        got++;
    }
    close(pfd[0]);
    int status = 0;
    if (spawn_wait(pid, 5000, &status)) {
        spawn_kill(pid);
        snprintf(err, errlen, "%s --version did not finish", qemu);
        return -1;
    }
    char *nl = strchr(out, '\n');
    if (nl)
        *nl = 0;
    if (!out[0] || strlen(out) >= len || strlen(out) >= sizeof((snap_tmpl_t *)0)->qemu_version) {
        snprintf(err, errlen, "%s --version printed no usable version line", qemu);
        return -1;
    }
    snprintf(buf, len, "%s", out);
    return 0;
}

static int s_mkdir(const char *path, char *err, size_t errlen)
{
    if (mkdir(path, 0750) && errno != EEXIST) {
        snprintf(err, errlen, "create %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int snapstore_begin(const char *root, const char *key, char *dir, size_t len, char *err,
                    size_t errlen)
{
    if (!s_name_ok(key, SNAP_KEY_MAX - 1)) {
        snprintf(err, errlen, "invalid template key '%.80s'", key);
        return -1;
    }
    if (s_mkdir(root, err, errlen))
        return -1;
    uint64_t st = 0;
    char state;
    if (proc_stat_read(getpid(), &state, &st)) {
        snprintf(err, errlen, "cannot read this process's start time");
        return -1;
    }
    static unsigned s_seq;
    for (int tries = 0; tries < 100; tries++) {
        int n = snprintf(dir, len, "%s/.tmp.%s.%d.%llu.%u", root, key, (int)getpid(),
                         (unsigned long long)st, __atomic_add_fetch(&s_seq, 1, __ATOMIC_RELAXED));
        if (n < 0 || (size_t)n >= len) {
            snprintf(err, errlen, "template path too long");
            return -1;
        }
        if (mkdir(dir, 0750) == 0)
            return 0;
        if (errno != EEXIST) {
            snprintf(err, errlen, "create %s: %s", dir, strerror(errno));
            return -1;
        }
    }
    snprintf(err, errlen, "no free temporary name under %s", root);
    return -1;
}

static int s_fsync_path(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fsync(fd)) {
        snprintf(err, errlen, "fsync %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int s_size(const char *dir, const char *leaf, uint64_t *size)
{
    char path[4200];
    struct stat sb;
    snprintf(path, sizeof path, "%.4000s/%s", dir, leaf);
    if (lstat(path, &sb) || !S_ISREG(sb.st_mode))
        return -1;
    *size = (uint64_t)sb.st_size;
    return 0;
}

int snapstore_commit(const char *root, const char *tmpdir, snap_tmpl_t *t, char *err, size_t errlen)
{
    static const char *const files[] = {"ram", "state", "disk.qcow2"};
    char path[4200], final[4200];
    if (!s_name_ok(t->key, SNAP_KEY_MAX - 1)) {
        snprintf(err, errlen, "invalid template key");
        return -1;
    }
    if (s_size(tmpdir, "ram", &t->ram_bytes) || s_size(tmpdir, "state", &t->state_bytes) ||
        s_size(tmpdir, "disk.qcow2", &t->disk_bytes)) {
        snprintf(err, errlen, "template %s is missing ram, state or disk.qcow2", tmpdir);
        return -1;
    }
    if (t->ram_bytes != (uint64_t)t->mem_mib << 20) {
        snprintf(err, errlen, "template ram file holds %llu bytes, not %u MiB",
                 (unsigned long long)t->ram_bytes, t->mem_mib);
        return -1;
    }
    if (t->state_bytes == 0) {
        snprintf(err, errlen, "template state file is empty");
        return -1;
    }
    t->created = (int64_t)time(NULL);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%.4000s/%s", tmpdir, files[i]);
        /* the template is read-only from here on: clones map it private */
        chmod(path, 0440);
        if (s_fsync_path(path, err, errlen))
            return -1;
    }
    tt_crash_point("worker.snap_before_meta");
    json_t *m = json_pack("{s:i, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "format", 1,
                          "key", t->key, "image", t->image, "image_digest", t->image_digest, "cpu",
                          (json_int_t)t->cpu, "mem_mib", (json_int_t)t->mem_mib, "qemu_version",
                          t->qemu_version, "ram_bytes", (json_int_t)t->ram_bytes, "state_bytes",
                          (json_int_t)t->state_bytes, "disk_bytes", (json_int_t)t->disk_bytes,
                          "created", (json_int_t)t->created);
    char *text = m ? json_dumps(m, JSON_COMPACT) : NULL;
    json_decref(m);
    if (!text) {
        snprintf(err, errlen, "cannot encode meta.json");
        return -1;
    }
    snprintf(path, sizeof path, "%.4000s/%s", tmpdir, S_META);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0440);
    size_t len = strlen(text);
    bool ok = fd >= 0 && write(fd, text, len) == (ssize_t)len && fsync(fd) == 0;
    int e = errno;
    free(text);
    if (fd >= 0)
        close(fd);
    if (!ok) {
        snprintf(err, errlen, "write %s: %s", path, strerror(e));
        return -1;
    }
    if (s_fsync_path(tmpdir, err, errlen))
        return -1;
    tt_crash_point("worker.snap_before_rename");
    int n = snprintf(final, sizeof final, "%s/%s", root, t->key);
    if (n < 0 || (size_t)n >= sizeof final) {
        snprintf(err, errlen, "template path too long");
        return -1;
    }
    struct stat sb;
    if (lstat(final, &sb) == 0 && snapstore_remove(root, t->key, err, errlen))
        return -1;
    if (rename(tmpdir, final)) {
        snprintf(err, errlen, "rename %s -> %s: %s", tmpdir, final, strerror(errno));
        return -1;
    }
    return s_fsync_path(root, err, errlen);
}

/* Read meta.json of dir into t; -1 if it cannot be read or parsed. */
static int s_meta(const char *dir, snap_tmpl_t *t)
{
    char path[4200];
    snprintf(path, sizeof path, "%.4000s/%s", dir, S_META);
    json_error_t je;
    json_t *m = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
    if (!m) {
        snprintf(t->reason, sizeof t->reason, "meta.json unreadable: %.200s", je.text);
        return -1;
    }
    json_int_t format = 0, cpu = 0, mem = 0, ram = 0, state = 0, disk = 0, created = 0;
    const char *key = NULL, *image = NULL, *digest = NULL, *ver = NULL;
    int rc = json_unpack(m, "{s:I, s:s, s:s, s:s, s:I, s:I, s:s, s:I, s:I, s:I, s:I}", "format",
                         &format, "key", &key, "image", &image, "image_digest", &digest, "cpu",
                         &cpu, "mem_mib", &mem, "qemu_version", &ver, "ram_bytes", &ram,
                         "state_bytes", &state, "disk_bytes", &disk, "created", &created);
    if (rc || format != 1 || cpu < 1 || cpu > 1024 || mem < 1 || mem > 16 * 1024 * 1024 ||
        ram < 0 || state < 0 || disk < 0 || strlen(key) >= sizeof t->key ||
        strlen(image) >= sizeof t->image || strlen(digest) >= sizeof t->image_digest ||
        strlen(ver) >= sizeof t->qemu_version) {
        snprintf(t->reason, sizeof t->reason, "meta.json is not a format 1 template record");
        json_decref(m);
        return -1;
    }
    snprintf(t->key, sizeof t->key, "%s", key);
    snprintf(t->image, sizeof t->image, "%s", image);
    snprintf(t->image_digest, sizeof t->image_digest, "%s", digest);
    snprintf(t->qemu_version, sizeof t->qemu_version, "%s", ver);
    t->cpu = (uint32_t)cpu;
    t->mem_mib = (uint32_t)mem;
    t->ram_bytes = (uint64_t)ram;
    t->state_bytes = (uint64_t)state;
    t->disk_bytes = (uint64_t)disk;
    t->created = (int64_t)created;
    json_decref(m);
    return 0;
}

int snapstore_get(const char *root, const char *key, const char *qemu_version, snap_tmpl_t *t)
{
    memset(t, 0, sizeof *t);
    snprintf(t->key, sizeof t->key, "%s", key);
    if (!s_name_ok(key, SNAP_KEY_MAX - 1)) {
        snprintf(t->reason, sizeof t->reason, "not a template name");
        return -1;
    }
    char dir[4200];
    snprintf(dir, sizeof dir, "%.4000s/%s", root, key);
    struct stat sb;
    if (lstat(dir, &sb) || !S_ISDIR(sb.st_mode)) {
        snprintf(t->reason, sizeof t->reason, "no such template");
        return -1;
    }
    if (s_meta(dir, t))
        return -1;
    uint64_t ram, state, disk;
    if (strcmp(t->key, key) != 0)
        snprintf(t->reason, sizeof t->reason, "meta.json names another key (%s)", t->key);
    else if (!qemu_version || strcmp(t->qemu_version, qemu_version) != 0)
        snprintf(t->reason, sizeof t->reason, "made by another QEMU (%s)", t->qemu_version);
    else if (s_size(dir, "ram", &ram) || ram != t->ram_bytes || ram != (uint64_t)t->mem_mib << 20)
        snprintf(t->reason, sizeof t->reason, "ram file missing or of the wrong size");
    else if (s_size(dir, "state", &state) || state != t->state_bytes || state == 0)
        snprintf(t->reason, sizeof t->reason, "state file missing or of the wrong size");
    else if (s_size(dir, "disk.qcow2", &disk) || disk != t->disk_bytes)
        snprintf(t->reason, sizeof t->reason, "disk missing or changed since the save");
    else
        t->usable = true;
    return 0;
}

int snapstore_list(const char *root, const char *qemu_version,
                   int (*cb)(const snap_tmpl_t *t, void *arg), void *arg)
{
    DIR *d = opendir(root);
    if (!d)
        return errno == ENOENT ? 0 : -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ., .., .tmp.*, .rm.*: never a template */
        snap_tmpl_t t;
        snapstore_get(root, de->d_name, qemu_version, &t);
        n++;
        if (cb && cb(&t, arg))
            break;
    }
    closedir(d);
    return n;
}

static int s_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) && errno != ENOENT ? -1 : 0;
    return unlink(path) && errno != ENOENT ? -1 : 0;
}

static int s_rmtree(const char *dir)
{
    if (nftw(dir, s_rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) && errno != ENOENT)
        return -1;
    return 0;
}

int snapstore_remove(const char *root, const char *key, char *err, size_t errlen)
{
    if (!s_name_ok(key, SNAP_KEY_MAX - 1)) {
        snprintf(err, errlen, "invalid template key '%.80s'", key);
        return -1;
    }
    char dir[4200], gone[4300];
    snprintf(dir, sizeof dir, "%.4000s/%s", root, key);
    static unsigned s_seq;
    snprintf(gone, sizeof gone, "%s/.rm.%s.%d.%u", root, key, (int)getpid(),
             __atomic_add_fetch(&s_seq, 1, __ATOMIC_RELAXED));
    if (rename(dir, gone)) {
        if (errno == ENOENT)
            return 0;
        snprintf(err, errlen, "rename %s: %s", dir, strerror(errno));
        return -1;
    }
    if (s_rmtree(gone)) {
        snprintf(err, errlen, "remove %s: %s", gone, strerror(errno));
        return -1;
    }
    return 0;
}

/* ".tmp.<key>.<pid>.<start>.<n>": is its maker still running? */
static bool s_tmp_owner_alive(const char *name)
{
    /* the key holds dots: read the last three fields from the end */
    const char *p[3];
    const char *s = name + strlen(name);
    for (int i = 0; i < 3; i++) {
        while (s > name && s[-1] != '.')
            s--;
        if (s == name)
            return false;
        p[i] = s;
        s--;
    }
    long long pid = atoll(p[2]);
    unsigned long long st = strtoull(p[1], NULL, 10);
    return pid > 0 && pid < (1 << 22) && proc_alive((pid_t)pid, st);
}

int snapstore_gc(const char *root, const char *qemu_version)
{
    DIR *d = opendir(root);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *de;
    char path[4400], err[256];
    while ((de = readdir(d))) {
        const char *nm = de->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%.3900s/%.255s", root, nm);
        if (strncmp(nm, ".rm.", 4) == 0 ||
            (strncmp(nm, ".tmp.", 5) == 0 && !s_tmp_owner_alive(nm))) {
            if (s_rmtree(path) == 0)
                n++;
            continue;
        }
        if (nm[0] == '.' || !qemu_version)
            continue;
        snap_tmpl_t t;
        if ((snapstore_get(root, nm, qemu_version, &t) || !t.usable) &&
            snapstore_remove(root, nm, err, sizeof err) == 0)
            n++;
    }
    closedir(d);
    return n;
}
