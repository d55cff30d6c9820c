/*
 * test_snapshot: memory snapshots of the qemu engine (docs/SNAPSHOTS.md)
 * on the test guest (tools/mkguest.sh), user network, TCG.
 *
 *   test_snapshot SOURCE_DIR BUILD_DIR
 *
 * 1. Two guests boot cold at once as template builders (RAM in a shared
 *    file): A (128 MiB) and B (160 MiB, another template key).
 * 2. B's save runs in a child process armed with the crash point
 *    worker.snap_before_rename: the child is SIGKILLed with every file of
 *    the template written and fsynced but not renamed. No template is
 *    found or listed; snapstore_gc removes the leftover.
 * 3. A note is written into A's RAM (a tmpfs file) through HTTP. A's save
 *    runs in a child killed right after it issued the migration (crash
 *    point worker.snap_mid_save): QEMU completes the stream, no template
 *    is usable. Then A (cont) is saved as a template to the end: the store
 *    lists it as usable, its state file is small (the RAM stays in its
 *    file).
 * 4. Three clones restore concurrently on distinct ports: each answers
 *    HTTP, holds A's note, has the VM generation ID it was given (distinct),
 *    logged an RNG reseed for it, reads different urandom bytes, and its
 *    QEMU NIC has its own MAC (the guest still uses the template's MAC: the
 *    identity step changes it, docs/SNAPSHOTS.md).
 * 5. One clone gets a new note, is suspended (its QEMU ends, the port
 *    stops answering, the file is complete) and resumed: it answers again,
 *    with the note and a larger uptime; the suspend file is consumed.
 * 6. A template of another QEMU version is not usable; a damaged one
 *    neither; removal works.
 * 7. Env snapshot and reset (qemu_envsnap.h) of clones 0 and 2 as one
 *    env: a note in each guest's RAM and a pattern on each disk (qemu-io
 *    through the monitor: the test guest mounts no disk); a snapshot whose
 *    maker is killed mid-save (crash point worker.envsnap_mid_save) leaves
 *    nothing listed, qenv_recover resumes both guests and gc removes the
 *    leftover; a snapshot S of both (all stopped, all saved, all resumed);
 *    a new note and pattern; a reset of both to S brings back S's note and
 *    pattern; S is removed and a reset to it refused.
 * Exit 77 = skipped (no QEMU or guest inputs here). Every QEMU started is
 * killed on any exit (snapkit.h).
 */
#include "../../tools/snapkit.h"
#include "qemu_envsnap.h"

static int s_fails;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                        \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static sk_env_t E;

static void s_template_boot(vm_t *vm, char *tdir, size_t len)
{
    char err[512], key[SNAP_KEY_MAX];
    CHECK(snapstore_key(vm->image, vm->image_digest, vm->cpu, vm->mem_mib, E.qver, key, sizeof key,
                        err, sizeof err) == 0,
          "%s", err);
    CHECK(snapstore_begin(E.troot, key, tdir, len, err, sizeof err) == 0, "%s", err);
    CHECK(engine_qemu.prepare_disk(&E.ctx, vm, err, sizeof err) == 0, "%s", err);
    CHECK(engine_qemu.template_boot(&E.ctx, vm, tdir, err, sizeof err) == 0, "%s", err);
    sk_track(vm);
}

static int s_count_usable(const snap_tmpl_t *t, void *arg)
{
    int *n = arg;
    if (t->usable)
        (*n)++;
    return 0;
}

static int s_usable(void)
{
    int n = 0;
    snapstore_list(E.troot, E.qver, s_count_usable, &n);
    return n;
}

/* Step 2: B is made by a child process, the "worker" of its template: it
 * begins the template, boots B, saves it and is killed by the crash point
 * with every file written and fsynced but the directory not renamed. It
 * reports B's QEMU and the directory on a pipe first. */
typedef struct {
    pid_t child;
    int fd;
    vm_t b;
    char tdir[1024];
} s_crash_t;

static void s_crash_start(s_crash_t *k)
{
    int p[2];
    CHECK(pipe(p) == 0, "pipe");
    k->b = sk_vm(2, 160, sk_free_port());
    k->child = fork();
    CHECK(k->child >= 0, "fork");
    if (k->child == 0) {
        close(p[0]);
        setenv("TTFLEET_CRASH_AT", "worker.snap_before_rename", 1);
        vm_t *b = &k->b;
        s_template_boot(b, k->tdir, sizeof k->tdir);
        char line[1200], body[1024], err[512];
        int n = snprintf(line, sizeof line, "%d %llu %s\n", (int)b->pid,
                         (unsigned long long)b->start_time, k->tdir);
        spawn_write_all(p[1], line, (size_t)n);
        if (sk_wait_http(b->ports[0].public_port, "/", body, sizeof body, 400000) < 0)
            _exit(4);
        snap_op_t op;
        memset(&op, 0, sizeof op);
        snprintf(op.dir, sizeof op.dir, "%s", k->tdir);
        if (engine_qemu.template_save(&E.ctx, b, &op, err, sizeof err) ||
            sk_run(&E, b, &op, err, sizeof err))
            fprintf(stderr, "child: %s\n", err);
        _exit(3); /* the crash point should have killed us */
    }
    close(p[1]);
    sk_track_pid(k->child);
    char line[1200];
    memset(line, 0, sizeof line);
    size_t got = 0;
    int64_t deadline = tt_mono_ms() + 60000;
    while (got < sizeof line - 1 && !memchr(line, '\n', got) &&
           spawn_read_full(p[0], line + got, 1, deadline) == 1)
        got++;
    close(p[0]);
    int pid = 0;
    unsigned long long st = 0;
    CHECK(sscanf(line, "%d %llu %1023s", &pid, &st, k->tdir) == 3, "child said '%s'", line);
    k->b.pid = pid;
    k->b.start_time = st;
    sk_track(&k->b);
}

static void s_crash_check(s_crash_t *k)
{
    int status = 0;
    CHECK(spawn_wait(k->child, 500000, &status) == 0, "the saving child did not end");
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL,
          "the saving child was not killed at the crash point (status %d)", status);
    /* the child had QEMU quit before it died: it goes */
    CHECK(spawn_wait_gone(k->b.pid, k->b.start_time, 10000) == 0, "B's QEMU still runs");
    char path[1200];
    snprintf(path, sizeof path, "%s/meta.json", k->tdir);
    CHECK(sk_file_size(path) > 0, "the crash came before meta.json was written");
    snprintf(path, sizeof path, "%s/state", k->tdir);
    CHECK(sk_file_size(path) > 0, "no state file in %s", k->tdir);
    snap_tmpl_t t;
    char key[SNAP_KEY_MAX], err[512];
    CHECK(snapstore_key("guest", "", 1, k->b.mem_mib, E.qver, key, sizeof key, err, sizeof err) ==
              0,
          "%s", err);
    CHECK(snapstore_get(E.troot, key, E.qver, &t) == -1, "a killed save left template %s", key);
    CHECK(s_usable() == 0, "a killed save left a listed template");
    CHECK(snapstore_gc(E.troot, E.qver) == 1, "gc did not remove the killed save's leftover");
    struct stat sb;
    CHECK(stat(k->tdir, &sb) == -1, "%s is still there after gc", k->tdir);
    printf("ok: a save killed before its rename left no usable template; gc removed it\n");
}

typedef struct {
    vm_t vm;
    snap_op_t op;
    char state[2048];
    int64_t t0, restored_ms, http_ms;
} s_clone_t;

/* ---- 7. env snapshot and reset ---- */

/* qemu-io on vm's disk through the monitor; the HMP output into out. */
static int s_qemu_io(vm_t *vm, const char *io, char *out, size_t len)
{
    char cmd[512], err[256];
    snprintf(cmd, sizeof cmd,
             "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":"
             "\"qemu-io virtio0 \\\"%s\\\"\"}}",
             io);
    return engine_qemu_qmp(&E.ctx, vm, cmd, 5000, out, len, err, sizeof err);
}

/* Whether vm's disk holds pattern in its first 4 KiB: QEMU flushes its
 * qcow2 caches, then qemu-io reads the image beside it (-U: shared). */
static bool s_disk_has(vm_t *vm, int pattern)
{
    char io[64], out[2048], disk[1024], err[256];
    if (s_qemu_io(vm, "flush", out, sizeof out) ||
        engine_vm_path(&E.ctx, vm->vm_id, "disk.qcow2", disk, sizeof disk))
        return false;
    snprintf(io, sizeof io, "read -P 0x%02x 0 4k", pattern);
    /* qemu-io sits beside qemu-img (Debian qemu-utils) */
    char qio[600];
    snprintf(qio, sizeof qio, "%s", E.ctx.qemu_img ? E.ctx.qemu_img : "/usr/bin/qemu-img");
    char *slash = strrchr(qio, '/');
    snprintf(slash ? slash + 1 : qio, sizeof qio - (size_t)(slash ? slash + 1 - qio : 0),
             "qemu-io");
    char *argv[] = {qio, "-U", "-r", "-f", "qcow2", "-c", io, disk, NULL};
    return spawn_run(argv, 20000, err, sizeof err) == 0;
}

static void s_mark(vm_t *vm, const char *note, int pattern)
{
    char body[4096], io[64], out[2048], path[128];
    snprintf(path, sizeof path, "/cgi-bin/note?%s", note);
    CHECK(sk_http(vm->ports[0].public_port, path, body, sizeof body, 10000) == 0 &&
              strstr(body, note),
          "vm %u: note %s: %s", vm->vm_id, note, body);
    snprintf(io, sizeof io, "write -P 0x%02x 0 4k", pattern);
    CHECK(s_qemu_io(vm, io, out, sizeof out) == 0, "vm %u: disk write: %s", vm->vm_id, out);
    CHECK(s_disk_has(vm, pattern), "vm %u: pattern 0x%02x not read back", vm->vm_id, pattern);
}

static bool s_has_note(vm_t *vm, const char *note)
{
    char body[4096], v[256];
    return sk_wait_http(vm->ports[0].public_port, "/cgi-bin/state", body, sizeof body, 30000) >=
               0 &&
           sk_field(body, "note", v, sizeof v) == 0 && strcmp(v, note) == 0;
}

/* CPU seconds (user + system) pid has used, -1 if unreadable. */
static double s_cpu_s(pid_t pid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Stop both, save both into a new snapshot id, commit, cont both. */
static int s_take(vm_t **vms, const char *root, const char *id, uint64_t *bytes, char *err,
                  size_t errlen)
{
    char tmp[1024];
    snap_op_t op[2];
    bool paused;
    memset(op, 0, sizeof op);
    if (snapstore_begin(root, id, tmp, sizeof tmp, err, errlen))
        return -1;
    for (int i = 0; i < 2; i++)
        if (qenv_stop(&E.ctx, vms[i], &paused, err, errlen))
            return -1;
    for (int i = 0; i < 2; i++)
        if (qenv_save_begin(&E.ctx, vms[i], tmp, id, &op[i], err, errlen))
            return -1;
    for (int i = 0; i < 2; i++)
        for (;;) {
            int rc = qenv_poll(&E.ctx, vms[i], &op[i], err, errlen);
            if (rc < 0)
                return -1;
            if (rc == SNAP_DONE)
                break;
            spawn_sleep_ms(SNAP_POLL_MS);
        }
    uint32_t ids[2] = {vms[0]->vm_id, vms[1]->vm_id};
    if (qenv_commit(&E.ctx, root, tmp, id, ids, 2, bytes, err, errlen))
        return -1;
    for (int i = 0; i < 2; i++)
        if (qenv_cont(&E.ctx, vms[i], err, errlen))
            return -1;
    return 0;
}

static void s_env_snapshot(vm_t *a, vm_t *b)
{
    char root[600], err[512], body[4096];
    vm_t *vms[2] = {a, b};
    snprintf(root, sizeof root, "%s/envsnaps", E.state);
    CHECK(mkdir(root, 0750) == 0 || errno == EEXIST, "mkdir %s", root);
    for (int i = 0; i < 2; i++)
        s_mark(vms[i], "env-a", 0xaa);

    /* a maker killed mid-save (both VMs stopped, disks copied, both
     * migrations issued: where crash point worker.envsnap_mid_save is):
     * nothing listed, both guests run on, no layer or .tmp left */
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        char tmp[1024];
        snap_op_t cop[2];
        bool paused;
        memset(cop, 0, sizeof cop);
        if (snapstore_begin(root, "crashed", tmp, sizeof tmp, err, sizeof err) ||
            qenv_stop(&E.ctx, a, &paused, err, sizeof err) ||
            qenv_stop(&E.ctx, b, &paused, err, sizeof err) ||
            qenv_save_begin(&E.ctx, a, tmp, "crashed", &cop[0], err, sizeof err) ||
            qenv_save_begin(&E.ctx, b, tmp, "crashed", &cop[1], err, sizeof err)) {
            fprintf(stderr, "snapshot maker: %s\n", err);
            _exit(3);
        }
        raise(SIGKILL);
        _exit(4);
    }
    int status = 0;
    CHECK(spawn_wait(child, 60000, &status) == 0 && WIFSIGNALED(status) &&
              WTERMSIG(status) == SIGKILL,
          "the snapshot maker did not get to its kill (status %d)", status);
    uint32_t ids[4];
    uint64_t bytes = 0;
    int64_t created = 0;
    CHECK(qenv_info(root, "crashed", ids, 4, &bytes, &created, err, sizeof err) == -1,
          "a killed snapshot is listed");
    CHECK(sk_http(a->ports[0].public_port, "/", body, sizeof body, 1500) == -1,
          "a guest the killed maker stopped still answers");
    for (int i = 0; i < 2; i++)
        qenv_recover(&E.ctx, vms[i]);
    for (int i = 0; i < 2; i++) {
        char layer[1024];
        CHECK(s_has_note(vms[i], "env-a") && s_disk_has(vms[i], 0xaa),
              "vm %u does not run on after the killed snapshot", vms[i]->vm_id);
        CHECK(engine_vm_path(&E.ctx, vms[i]->vm_id, "layers/crashed.qcow2", layer, sizeof layer) ==
                      0 &&
                  sk_file_size(layer) < 0,
              "vm %u: the killed snapshot's disk layer is left", vms[i]->vm_id);
    }
    /* qenv_recover ran snapstore_gc: the killed maker's .tmp.* is gone */
    {
        DIR *rd = opendir(root);
        struct dirent *de;
        int left = 0;
        while (rd && (de = readdir(rd)))
            left += strncmp(de->d_name, ".tmp.crashed.", 13) == 0;
        if (rd)
            closedir(rd);
        CHECK(rd && left == 0, "the killed snapshot's .tmp directory is left");
    }
    printf("ok: a snapshot killed mid-save left nothing listed; both guests run on\n");

    /* a save given up: no state file or layer left, the VM runs on */
    {
        char tmp[1024], layer[1024], state[1200];
        snap_op_t gop;
        bool paused;
        memset(&gop, 0, sizeof gop);
        CHECK(snapstore_begin(root, "given-up", tmp, sizeof tmp, err, sizeof err) == 0, "%s", err);
        CHECK(qenv_save_begin(&E.ctx, a, tmp, "given-up", &gop, err, sizeof err) == -1 &&
                  strstr(err, "stop it first"),
              "a save of a running VM: %s", err);
        CHECK(qenv_stop(&E.ctx, a, &paused, err, sizeof err) == 0 && !paused, "%s", err);
        CHECK(qenv_save_begin(&E.ctx, a, tmp, "given-up", &gop, err, sizeof err) == 0, "%s", err);
        CHECK(engine_vm_path(&E.ctx, a->vm_id, "layers/given-up.qcow2", layer, sizeof layer) == 0 &&
                  sk_file_size(layer) > 0,
              "no layer copied");
        qenv_save_abort(&E.ctx, a, tmp, "given-up");
        snprintf(state, sizeof state, "%s/vm%u.state", tmp, a->vm_id);
        CHECK(sk_file_size(layer) < 0 && sk_file_size(state) < 0,
              "an aborted save left its layer or state file");
        CHECK(qenv_cont(&E.ctx, a, err, sizeof err) == 0 && s_has_note(a, "env-a"), "%s", err);
        CHECK(snapstore_gc(root, NULL) == 0 && rmdir(tmp) == 0, "the given-up directory");
    }

    /* snapshot S of both */
    double cpu0 = s_cpu_s(a->pid) + s_cpu_s(b->pid);
    int64_t t0 = tt_mono_ms();
    CHECK(s_take(vms, root, "S", &bytes, err, sizeof err) == 0, "%s", err);
    int64_t snap_ms = tt_mono_ms() - t0;
    double snap_cpu = s_cpu_s(a->pid) + s_cpu_s(b->pid) - cpu0;
    CHECK(qenv_info(root, "S", ids, 4, &bytes, &created, err, sizeof err) == 2 &&
              ids[0] == a->vm_id && ids[1] == b->vm_id,
          "snapshot S: %s", err);
    CHECK(bytes > 2 * (8u << 20), "snapshot S is %llu bytes: no RAM in it",
          (unsigned long long)bytes);
    for (int i = 0; i < 2; i++) {
        CHECK(sk_http(vms[i]->ports[0].public_port, "/", body, sizeof body, 10000) == 0,
              "vm %u does not answer after the snapshot", vms[i]->vm_id);
        s_mark(vms[i], "env-b", 0xbb);
    }
    printf("ok: snapshot S of 2 VMs in %lld ms, %llu bytes; both run on\n", (long long)snap_ms,
           (unsigned long long)bytes);

    /* reset both to S */
    snap_op_t op[2];
    memset(op, 0, sizeof op);
    t0 = tt_mono_ms();
    for (int i = 0; i < 2; i++) {
        CHECK(qenv_reset_begin(&E.ctx, vms[i], root, "S", &op[i], err, sizeof err) == 0, "%s", err);
        sk_track(vms[i]);
    }
    for (int i = 0; i < 2; i++)
        for (;;) {
            int rc = qenv_poll(&E.ctx, vms[i], &op[i], err, sizeof err);
            CHECK(rc >= 0, "reset of vm %u: %s", vms[i]->vm_id, err);
            if (rc != SNAP_PENDING)
                break;
            spawn_sleep_ms(SNAP_POLL_MS);
        }
    int64_t restored_ms = tt_mono_ms() - t0;
    for (int i = 0; i < 2; i++)
        CHECK(s_has_note(vms[i], "env-a"), "vm %u: the reset did not bring back its RAM",
              vms[i]->vm_id);
    int64_t http_ms = tt_mono_ms() - t0;
    double reset_cpu = s_cpu_s(a->pid) + s_cpu_s(b->pid);
    for (int i = 0; i < 2; i++)
        CHECK(s_disk_has(vms[i], 0xaa) && !s_disk_has(vms[i], 0xbb),
              "vm %u: the reset did not bring back its disk", vms[i]->vm_id);
    printf("ok: reset of 2 VMs to S: restored in %lld ms, both answered HTTP with S's note "
           "after %lld ms; S's disk pattern back\n",
           (long long)restored_ms, (long long)http_ms);
    /* twice: a snapshot can be reset to again */
    memset(op, 0, sizeof op);
    s_mark(a, "env-c", 0xcc);
    CHECK(qenv_reset_begin(&E.ctx, a, root, "S", &op[0], err, sizeof err) == 0, "%s", err);
    sk_track(a);
    int rc;
    while ((rc = qenv_poll(&E.ctx, a, &op[0], err, sizeof err)) == SNAP_PENDING)
        spawn_sleep_ms(SNAP_POLL_MS);
    CHECK(rc == SNAP_DONE && s_has_note(a, "env-a") && s_disk_has(a, 0xaa),
          "a second reset to S: %s", err);
    /* removal */
    CHECK(qenv_remove(root, "S", err, sizeof err) == 0, "%s", err);
    CHECK(qenv_info(root, "S", ids, 4, &bytes, &created, err, sizeof err) == -1,
          "a removed snapshot is listed");
    /* its layers are under the reset disks: gc keeps them */
    for (int i = 0; i < 2; i++)
        CHECK(qenv_gc_layers(&E.ctx, vms[i]) == 0 && s_disk_has(vms[i], 0xaa),
              "vm %u: gc removed a layer under its disk", vms[i]->vm_id);
    memset(op, 0, sizeof op);
    CHECK(qenv_reset_begin(&E.ctx, a, root, "S", &op[0], err, sizeof err) == -1 &&
              strstr(err, "no state"),
          "a reset to a removed snapshot: %s", err);
    CHECK(s_has_note(a, "env-a"), "a refused reset stopped the VM");
    CHECK(!qenv_id_ok("../x") && !qenv_id_ok(".x") && !qenv_id_ok("") && qenv_id_ok("a-1.B_2"),
          "snapshot id validation");
    printf("MEASURE env_snapshot_ms=%lld env_snapshot_qemu_cpu_s=%.2f env_reset_restored_ms=%lld "
           "env_reset_http_ms=%lld env_reset_qemu_cpu_s=%.2f vms=2\n",
           (long long)snap_ms, snap_cpu, (long long)restored_ms, (long long)http_ms, reset_cpu);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: test_snapshot SOURCE_DIR BUILD_DIR\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = sk_env_init(&E, argv[1], argv[2], 840);
    if (rc)
        return rc;
    char err[512], body[4096], v[256];

    /* 1. two template builders, cold, at once (B in the child of step 2) */
    char tdir_a[1024];
    vm_t a = sk_vm(1, 128, sk_free_port());
    int64_t t0 = tt_mono_ms();
    s_template_boot(&a, tdir_a, sizeof tdir_a);
    s_crash_t k;
    memset(&k, 0, sizeof k);
    s_crash_start(&k);
    int64_t boot_a = sk_wait_http(a.ports[0].public_port, "/", body, sizeof body, 400000);
    CHECK(boot_a >= 0, "template builder A never answered HTTP");
    CHECK(strstr(body, "ttguest vm 1 ") != NULL, "A answered %s", body);
    printf("ok: builder A answered HTTP after %.1f s cold boot\n",
           (double)(tt_mono_ms() - t0) / 1000);
    printf("MEASURE cold_boot_http_ms=%lld cold_boot_qemu_cpu_s=%.2f\n",
           (long long)(tt_mono_ms() - t0), s_cpu_s(a.pid));

    /* 2. the saving process of B killed mid-save */
    s_crash_check(&k);

    /* 3. save A */
    body[0] = 0;
    CHECK(sk_wait_http(a.ports[0].public_port, "/cgi-bin/note?from-template", body, sizeof body,
                       30000) >= 0 &&
              strstr(body, "note from-template"),
          "note not written: %s", body);
    CHECK(sk_http(a.ports[0].public_port, "/cgi-bin/state", body, sizeof body, 10000) == 0,
          "A's state page");
    char tmpl_mac[64];
    CHECK(sk_field(body, "mac", tmpl_mac, sizeof tmpl_mac) == 0, "no mac in %s", body);
    /* a saving process of A killed right after it issued the migration
     * (crash point worker.snap_mid_save): QEMU finishes writing the state
     * on its own, but nothing renames it into the store */
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
        setenv("TTFLEET_CRASH_AT", "worker.snap_mid_save", 1);
        snap_op_t cop;
        memset(&cop, 0, sizeof cop);
        snprintf(cop.dir, sizeof cop.dir, "%s", tdir_a);
        if (engine_qemu.template_save(&E.ctx, &a, &cop, err, sizeof err))
            fprintf(stderr, "child: %s\n", err);
        _exit(3);
    }
    sk_track_pid(child);
    int status = 0;
    CHECK(spawn_wait(child, 60000, &status) == 0 && WIFSIGNALED(status) &&
              WTERMSIG(status) == SIGKILL,
          "the saving child was not killed mid-save (status %d)", status);
    int64_t until = tt_mono_ms() + 60000;
    while (tt_mono_ms() < until) {
        if (engine_qemu_qmp(&E.ctx, &a, "{\"execute\":\"query-migrate\"}", 2000, body, sizeof body,
                            err, sizeof err) == 0 &&
            !strstr(body, "\"active\"") && !strstr(body, "\"setup\""))
            break;
        spawn_sleep_ms(20);
    }
    CHECK(strstr(body, "\"completed\""), "the orphaned migration: %s", body);
    CHECK(s_usable() == 0, "a save killed mid-migration left a usable template");
    char key_a[SNAP_KEY_MAX];
    CHECK(snapstore_key("guest", "", 1, 128, E.qver, key_a, sizeof key_a, err, sizeof err) == 0,
          "%s", err);
    snap_tmpl_t t;
    CHECK(snapstore_get(E.troot, key_a, E.qver, &t) == -1, "template %s exists", key_a);
    printf("ok: a save killed mid-migration left no usable template\n");

    /* the save again, to the end: QEMU 7.2 refuses a second migration of
     * a VM paused by a completed one until it ran again (cont) */
    CHECK(engine_qemu_qmp(&E.ctx, &a, "{\"execute\":\"cont\"}", 2000, NULL, 0, err, sizeof err) ==
              0,
          "%s", err);
    snap_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.dir, sizeof op.dir, "%s", tdir_a);
    int64_t ts = tt_mono_ms();
    CHECK(engine_qemu.template_save(&E.ctx, &a, &op, err, sizeof err) == 0, "%s", err);
    CHECK(sk_run(&E, &a, &op, err, sizeof err) == 0, "%s", err);
    CHECK(a.pid == 0, "the builder's QEMU is still recorded");
    char tmpl[1024];
    snprintf(tmpl, sizeof tmpl, "%s", op.dir);
    CHECK(snapstore_get(E.troot, strrchr(tmpl, '/') + 1, E.qver, &t) == 0 && t.usable,
          "template %s not usable: %s", tmpl, t.reason);
    CHECK(s_usable() == 1, "the store lists %d usable templates", s_usable());
    CHECK(t.ram_bytes == 128ull << 20, "ram file %llu bytes", (unsigned long long)t.ram_bytes);
    CHECK(t.state_bytes < 16u << 20, "state file %llu bytes: the RAM went into the stream",
          (unsigned long long)t.state_bytes);
    printf("ok: template saved in %lld ms: state %llu bytes, ram %llu bytes\n",
           (long long)(tt_mono_ms() - ts), (unsigned long long)t.state_bytes,
           (unsigned long long)t.ram_bytes);
    CHECK(engine_qemu.destroy(&E.ctx, &a, err, sizeof err) == 0, "%s", err);

    /* 4. three clones at once */
    s_clone_t c[3];
    for (int i = 0; i < 3; i++) {
        memset(&c[i], 0, sizeof c[i]);
        c[i].vm = sk_vm(11 + (uint32_t)i, 128, sk_free_port());
        snprintf(c[i].op.dir, sizeof c[i].op.dir, "%s", tmpl);
        c[i].t0 = tt_mono_ms();
        CHECK(engine_qemu.clone_restore(&E.ctx, &c[i].vm, &c[i].op, err, sizeof err) == 0,
              "clone %d: %s", i, err);
        sk_track(&c[i].vm);
    }
    for (int pending = 3; pending;) {
        pending = 0;
        for (int i = 0; i < 3; i++) {
            if (c[i].restored_ms)
                continue;
            int r = engine_qemu.snap_poll(&E.ctx, &c[i].vm, &c[i].op, err, sizeof err);
            CHECK(r >= 0, "clone %d: %s", i, err);
            if (r == SNAP_DONE)
                c[i].restored_ms = tt_mono_ms() - c[i].t0;
            else
                pending++;
        }
        spawn_sleep_ms(SNAP_POLL_MS);
    }
    for (int i = 0; i < 3; i++) {
        uint16_t port = c[i].vm.ports[0].public_port;
        CHECK(sk_wait_http(port, "/", body, sizeof body, 60000) >= 0, "clone %d: no HTTP", i);
        c[i].http_ms = tt_mono_ms() - c[i].t0;
        CHECK(strstr(body, "ttguest vm 1 "), "clone %d answered %s", i, body);
        CHECK(sk_http(port, "/cgi-bin/state", c[i].state, sizeof c[i].state, 10000) == 0,
              "clone %d: state page", i);
        CHECK(sk_field(c[i].state, "note", v, sizeof v) == 0 && strcmp(v, "from-template") == 0,
              "clone %d lost the template's RAM: %s", i, c[i].state);
        CHECK(sk_field(c[i].state, "forks", v, sizeof v) == 0 && atoi(v) >= 1,
              "clone %d: the guest logged no RNG reseed for its new generation ID: %s", i,
              c[i].state);
        CHECK(sk_field(c[i].state, "mac", v, sizeof v) == 0 && strcmp(v, tmpl_mac) == 0,
              "clone %d: guest MAC %s (the template's is %s): update docs/SNAPSHOTS.md", i, v,
              tmpl_mac);
        CHECK(engine_qemu_qmp(&E.ctx, &c[i].vm, "{\"execute\":\"query-vm-generation-id\"}", 2000,
                              body, sizeof body, err, sizeof err) == 0,
              "%s", err);
        CHECK(strstr(body, c[i].op.vmgenid), "clone %d: generation ID %s, gave %s", i, body,
              c[i].op.vmgenid);
        CHECK(engine_qemu_qmp(&E.ctx, &c[i].vm,
                              "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-"
                              "line\":\"info network\"}}",
                              2000, body, sizeof body, err, sizeof err) == 0,
              "%s", err);
        char want[64];
        snprintf(want, sizeof want, "macaddr=%s", c[i].vm.mac);
        CHECK(strstr(body, want), "clone %d: NIC is not %s: %s", i, c[i].vm.mac, body);
        printf("ok: clone %d restored in %lld ms, HTTP after %lld ms, vmgenid %s\n", i,
               (long long)c[i].restored_ms, (long long)c[i].http_ms, c[i].op.vmgenid);
    }
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++) {
            char ri[64], rj[64];
            CHECK(strcmp(c[i].op.vmgenid, c[j].op.vmgenid) != 0, "clones share a vmgenid");
            CHECK(strcmp(c[i].vm.mac, c[j].vm.mac) != 0, "clones share a MAC");
            CHECK(sk_field(c[i].state, "random", ri, sizeof ri) == 0 &&
                      sk_field(c[j].state, "random", rj, sizeof rj) == 0 && strcmp(ri, rj) != 0,
                  "clones %d and %d read the same urandom bytes", i, j);
        }
    /* the template's files are unchanged by the clones */
    CHECK(snapstore_get(E.troot, strrchr(tmpl, '/') + 1, E.qver, &t) == 0 && t.usable,
          "the template is no longer usable: %s", t.reason);

    /* 5. suspend and resume clone 1 */
    vm_t *s = &c[1].vm;
    uint16_t sport = s->ports[0].public_port;
    CHECK(sk_http(sport, "/cgi-bin/note?before-suspend", body, sizeof body, 10000) == 0,
          "note on clone 1");
    CHECK(sk_http(sport, "/cgi-bin/state", body, sizeof body, 10000) == 0 &&
              sk_field(body, "uptime", v, sizeof v) == 0,
          "clone 1 uptime");
    double up0 = atof(v);
    pid_t spid = s->pid;
    uint64_t sst = s->start_time;
    memset(&op, 0, sizeof op);
    ts = tt_mono_ms();
    CHECK(engine_qemu.suspend(&E.ctx, s, &op, err, sizeof err) == 0, "%s", err);
    CHECK(sk_run(&E, s, &op, err, sizeof err) == 0, "%s", err);
    int64_t suspend_ms = tt_mono_ms() - ts;
    unsigned long long suspend_bytes = op.state_bytes;
    CHECK(!proc_alive(spid, sst) && s->pid == 0, "the suspended clone's QEMU still runs");
    CHECK(engine_qemu.suspended(&E.ctx, s), "no suspend file");
    CHECK(op.state_bytes > 1u << 20, "suspend file of %llu bytes cannot hold the RAM",
          (unsigned long long)op.state_bytes);
    CHECK(sk_http(sport, "/", body, sizeof body, 1000) == -1, "a suspended clone answers");
    memset(&op, 0, sizeof op);
    ts = tt_mono_ms();
    CHECK(engine_qemu.resume_saved(&E.ctx, s, &op, err, sizeof err) == 0, "%s", err);
    sk_track(s);
    CHECK(sk_run(&E, s, &op, err, sizeof err) == 0, "%s", err);
    int64_t resume_ms = tt_mono_ms() - ts;
    CHECK(!engine_qemu.suspended(&E.ctx, s), "the suspend file was not consumed");
    CHECK(sk_wait_http(sport, "/cgi-bin/state", body, sizeof body, 30000) >= 0,
          "the resumed clone does not answer");
    CHECK(sk_field(body, "note", v, sizeof v) == 0 && strcmp(v, "before-suspend") == 0,
          "the resumed clone lost its RAM: %s", body);
    CHECK(sk_field(body, "uptime", v, sizeof v) == 0 && atof(v) >= up0,
          "uptime went back: %s < %.2f", v, up0);
    printf("ok: clone 1 suspended in %lld ms (%llu bytes), resumed in %lld ms, note kept, "
           "uptime %.2f -> %s\n",
           (long long)suspend_ms, suspend_bytes, (long long)resume_ms, up0, v);
    /* the other clones were not disturbed */
    for (int i = 0; i < 3; i += 2)
        CHECK(sk_http(c[i].vm.ports[0].public_port, "/", body, sizeof body, 10000) == 0,
              "clone %d stopped answering", i);
    s_env_snapshot(&c[0].vm, &c[2].vm);
    /* a suspend with nothing running, a resume with nothing suspended */
    for (int i = 0; i < 3; i++)
        CHECK(engine_qemu.destroy(&E.ctx, &c[i].vm, err, sizeof err) == 0, "%s", err);
    vm_t none = sk_vm(40, 128, sk_free_port());
    CHECK(engine_qemu.suspend(&E.ctx, &none, &op, err, sizeof err) == -1, "suspend of nothing");
    CHECK(engine_qemu.resume_saved(&E.ctx, &none, &op, err, sizeof err) == -1 &&
              strstr(err, "no suspend file"),
          "resume of nothing: %s", err);

    /* 6. templates that must not be used */
    snap_tmpl_t t2;
    CHECK(snapstore_get(E.troot, strrchr(tmpl, '/') + 1, "QEMU emulator version 0.0.1", &t2) == 0 &&
              !t2.usable && strstr(t2.reason, "another QEMU"),
          "a template of another QEMU is usable: %s", t2.reason);
    vm_t other = sk_vm(41, 128, sk_free_port());
    memset(&op, 0, sizeof op);
    snprintf(op.dir, sizeof op.dir, "%s", tmpl);
    sk_env_t E2 = E;
    E2.ctx.qemu_version = "QEMU emulator version 0.0.1";
    CHECK(engine_qemu.clone_restore(&E2.ctx, &other, &op, err, sizeof err) == -1 &&
              strstr(err, "another QEMU"),
          "clone from another QEMU's template: %s", err);
    char state[1200];
    snprintf(state, sizeof state, "%s/state", tmpl);
    chmod(state, 0640);
    CHECK(truncate(state, 100) == 0, "truncate %s", state);
    CHECK(snapstore_get(E.troot, strrchr(tmpl, '/') + 1, E.qver, &t2) == 0 && !t2.usable,
          "a truncated template is usable");
    CHECK(engine_qemu.clone_restore(&E.ctx, &other, &op, err, sizeof err) == -1,
          "clone from a truncated template");
    CHECK(snapstore_gc(E.troot, E.qver) == 1 && s_usable() == 0 &&
              snapstore_list(E.troot, E.qver, NULL, NULL) == 0,
          "gc did not remove the damaged template");
    printf("ok: another QEMU's and a damaged template are refused; gc removed it\n");
    printf("%s\n", s_fails ? "FAILED" : "PASS");
    return s_fails ? 1 : 0;
}
