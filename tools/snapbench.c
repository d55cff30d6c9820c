/*
 * snapbench: memory snapshots of the qemu engine against cold boots, in
 * one run, on the test guest (tools/mkguest.sh), user network.
 *
 *   snapbench [-n N] [-m MIB] SOURCE_DIR BUILD_DIR
 *
 * Prints, one "name value" per line:
 *   cold boot of a template builder (RAM in a shared file) -> HTTP, alone,
 *   and the bytes it caused to be written (/proc/PID/io write_bytes);
 *   template save time, state file and RAM file sizes;
 *   cold boot (anonymous RAM) -> HTTP answer, alone, and its write_bytes;
 *   one clone alone, then N clones restored at once: per clone the begin
 *   call (qcow2 overlay + QEMU spawn), QMP up, restore -> running, and ->
 *   HTTP answer (ms from the begin call);
 *   N-1 more cold VMs booted at once -> all answer HTTP;
 *   Pss (sum of /proc/PID/smaps_rollup) of the N clones and the N cold VMs,
 *   of their guest RAM mappings alone, and the template RAM file's pages
 *   in the page cache (shared by the clones, in nobody's Pss);
 *   suspend and resume of one clone and one cold VM (times, file size);
 *   the load average before and after.
 * Every QEMU it starts is killed on exit (snapkit.h).
 */
#include "snapkit.h"

#include <getopt.h>
#include <sys/mman.h>

static sk_env_t E;

/* kB of path's pages in the page cache (mincore), -1 if unknown: the
 * template's RAM the clones share is counted once there, not in any
 * process's Pss for the pages they never touched. */
static long s_cached_kb(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) || sb.st_size == 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    size_t len = (size_t)sb.st_size, pg = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, len, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED)
        return -1;
    unsigned char *vec = malloc((len + pg - 1) / pg);
    long kb = -1;
    if (vec && mincore(m, len, vec) == 0) {
        kb = 0;
        for (size_t i = 0; i < (len + pg - 1) / pg; i++)
            kb += (vec[i] & 1) ? (long)(pg / 1024) : 0;
    }
    free(vec);
    munmap(m, len);
    return kb;
}

/* write_bytes of /proc/PID/io: what the process caused to be written to
 * storage, pages it dirtied in a shared file mapping included. */
static long long s_write_bytes(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    long long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %lld", &v) == 1)
            break;
    if (f)
        fclose(f);
    return v;
}

static void s_load(const char *label)
{
    char buf[128] = "";
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f))
            buf[0] = 0;
        fclose(f);
    }
    buf[strcspn(buf, "\n")] = 0;
    printf("loadavg_%s %s\n", label, buf);
}

static void s_die(const char *what, const char *err)
{
    fprintf(stderr, "snapbench: %s: %s\n", what, err);
    exit(1);
}

static int64_t s_boot_wait(vm_t *vms, int n, int timeout_ms)
{
    char body[1024];
    int64_t t0 = tt_mono_ms();
    for (int i = 0; i < n; i++)
        if (sk_wait_http(vms[i].ports[0].public_port, "/", body, sizeof body,
                         (int)(timeout_ms - (tt_mono_ms() - t0))) < 0)
            s_die("cold boot", "a VM never answered HTTP");
    return tt_mono_ms() - t0;
}

/* Sum of Pss of the VMs' QEMUs, and of their guest RAM mappings alone. */
static void s_pss(const char *label, vm_t *vms, int n)
{
    long sum = 0, ram = 0;
    for (int i = 0; i < n; i++) {
        long kb = sk_pss_kb(vms[i].pid), r = sk_ram_pss_kb(vms[i].pid, vms[i].mem_mib);
        if (kb < 0 || r < 0)
            s_die("pss", "smaps unreadable or no guest RAM mapping");
        sum += kb;
        ram += r;
    }
    printf("pss_kb_%d_%s %ld\npss_kb_%d_%s_guest_ram %ld\n", n, label, sum, n, label, ram);
}

/* One clone from tmpl, alone: begin, restored, HTTP (ms from begin). */
static void s_clone(vm_t *vm, snap_op_t *op, const char *tmpl, int64_t *begin_ms)
{
    char err[512];
    memset(op, 0, sizeof *op);
    snprintf(op->dir, sizeof op->dir, "%s", tmpl);
    int64_t t0 = tt_mono_ms();
    if (engine_qemu.clone_restore(&E.ctx, vm, op, err, sizeof err))
        s_die("clone", err);
    *begin_ms = tt_mono_ms() - t0;
    sk_track(vm);
}

static void s_suspend_resume(const char *label, vm_t *vm)
{
    char err[512], body[1024];
    snap_op_t op;
    memset(&op, 0, sizeof op);
    int64_t t0 = tt_mono_ms();
    if (engine_qemu.suspend(&E.ctx, vm, &op, err, sizeof err) ||
        sk_run(&E, vm, &op, err, sizeof err))
        s_die("suspend", err);
    int64_t t1 = tt_mono_ms();
    printf("%s_suspend_ms %lld\n%s_suspend_file_bytes %llu\n", label, (long long)(t1 - t0), label,
           (unsigned long long)op.state_bytes);
    memset(&op, 0, sizeof op);
    t0 = tt_mono_ms();
    if (engine_qemu.resume_saved(&E.ctx, vm, &op, err, sizeof err))
        s_die("resume", err);
    sk_track(vm);
    if (sk_run(&E, vm, &op, err, sizeof err))
        s_die("resume", err);
    t1 = tt_mono_ms();
    int64_t http = sk_wait_http(vm->ports[0].public_port, "/", body, sizeof body, 30000);
    if (http < 0)
        s_die("resume", "no HTTP answer after resume");
    printf("%s_resume_ms %lld\n%s_resume_to_http_ms %lld\n", label, (long long)(t1 - t0), label,
           (long long)(tt_mono_ms() - t0));
}

int main(int argc, char **argv)
{
    int n = 3, mem = 128, opt;
    while ((opt = getopt(argc, argv, "n:m:")) != -1) {
        if (opt == 'n')
            n = atoi(optarg);
        else if (opt == 'm')
            mem = atoi(optarg);
        else
            n = -1;
    }
    if (n < 1 || n > 20 || mem < 64 || mem > 4096 || argc - optind != 2) {
        fprintf(stderr, "usage: snapbench [-n N (1..20)] [-m MIB (64..4096)] SOURCE BUILD\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = sk_env_init(&E, argv[optind], argv[optind + 1], 1800);
    if (rc)
        return rc == 77 ? 0 : 1;
    char err[512], body[1024];
    printf("qemu %s\naccel tcg\nguest_mem_mib %d\nn %d\n", E.qver, mem, n);
    s_load("start");

    /* each alone: the template builder (RAM in a shared file), its save,
     * then a cold VM (anonymous RAM) */
    vm_t cold[20];
    for (int i = 0; i < n; i++)
        cold[i] = sk_vm(100 + (uint32_t)i, (uint32_t)mem, sk_free_port());
    vm_t b = sk_vm(1, (uint32_t)mem, sk_free_port());
    char key[SNAP_KEY_MAX], tdir[1024];
    if (snapstore_key(b.image, b.image_digest, b.cpu, b.mem_mib, E.qver, key, sizeof key, err,
                      sizeof err) ||
        snapstore_begin(E.troot, key, tdir, sizeof tdir, err, sizeof err) ||
        engine_qemu.prepare_disk(&E.ctx, &b, err, sizeof err) ||
        engine_qemu.template_boot(&E.ctx, &b, tdir, err, sizeof err))
        s_die("template boot", err);
    sk_track(&b);
    printf("template_builder_boot_to_http_ms %lld\n", (long long)s_boot_wait(&b, 1, 600000));

    printf("template_builder_write_bytes %lld\n", s_write_bytes(b.pid));
    /* the template */
    snap_op_t op;
    memset(&op, 0, sizeof op);
    snprintf(op.dir, sizeof op.dir, "%s", tdir);
    int64_t t0 = tt_mono_ms();
    if (engine_qemu.template_save(&E.ctx, &b, &op, err, sizeof err) ||
        sk_run(&E, &b, &op, err, sizeof err))
        s_die("template save", err);
    printf("template_save_ms %lld\n", (long long)(tt_mono_ms() - t0));
    printf("template_save_migration_ms %lld\n", (long long)(op.migrated_ms - op.started_ms));
    char tmpl[1024], path[1200];
    snprintf(tmpl, sizeof tmpl, "%s", op.dir);
    snprintf(path, sizeof path, "%s/ram", tmpl);
    printf("template_state_bytes %llu\ntemplate_ram_bytes %lld\n",
           (unsigned long long)op.state_bytes, sk_file_size(path));
    engine_qemu.destroy(&E.ctx, &b, err, sizeof err);

    if (engine_qemu.prepare_disk(&E.ctx, &cold[0], err, sizeof err) ||
        engine_qemu.start(&E.ctx, &cold[0], err, sizeof err))
        s_die("cold start", err);
    sk_track(&cold[0]);
    printf("cold_boot_to_http_ms %lld\n", (long long)s_boot_wait(cold, 1, 600000));

    printf("cold_write_bytes %lld\n", s_write_bytes(cold[0].pid));
    /* one clone alone */
    {
        vm_t one = sk_vm(199, (uint32_t)mem, sk_free_port());
        snap_op_t o;
        int64_t bm;
        s_clone(&one, &o, tmpl, &bm);
        if (sk_run(&E, &one, &o, err, sizeof err))
            s_die("clone restore", err);
        int64_t h = sk_wait_http(one.ports[0].public_port, "/", body, sizeof body, 60000);
        if (h < 0)
            s_die("clone", "no HTTP answer");
        printf("clone_alone begin_ms %lld qmp_up_ms %lld migrated_ms %lld running_ms %lld "
               "http_ms %lld\n",
               (long long)bm, (long long)(o.incoming_ms - o.started_ms),
               (long long)(o.migrated_ms - o.started_ms), (long long)(o.done_ms - o.started_ms),
               (long long)(tt_mono_ms() - o.started_ms));
        engine_qemu.destroy(&E.ctx, &one, err, sizeof err);
    }

    /* N clones at once */
    vm_t cl[20];
    snap_op_t cop[20];
    int64_t start[20], begin_ms[20], restored[20], http[20];
    for (int i = 0; i < n; i++) {
        cl[i] = sk_vm(200 + (uint32_t)i, (uint32_t)mem, sk_free_port());
        memset(&cop[i], 0, sizeof cop[i]);
        snprintf(cop[i].dir, sizeof cop[i].dir, "%s", tmpl);
        start[i] = tt_mono_ms();
        if (engine_qemu.clone_restore(&E.ctx, &cl[i], &cop[i], err, sizeof err))
            s_die("clone", err);
        begin_ms[i] = tt_mono_ms() - start[i];
        restored[i] = http[i] = 0;
        sk_track(&cl[i]);
    }
    for (int pending = n; pending;) {
        pending = 0;
        for (int i = 0; i < n; i++) {
            if (restored[i])
                continue;
            int r = engine_qemu.snap_poll(&E.ctx, &cl[i], &cop[i], err, sizeof err);
            if (r < 0)
                s_die("clone restore", err);
            if (r == SNAP_DONE)
                restored[i] = tt_mono_ms() - start[i];
            else
                pending++;
        }
        spawn_sleep_ms(SNAP_POLL_MS);
    }
    for (int pending = n; pending;) {
        pending = 0;
        for (int i = 0; i < n; i++) {
            if (http[i])
                continue;
            if (sk_http(cl[i].ports[0].public_port, "/", body, sizeof body, 200) == 0)
                http[i] = tt_mono_ms() - start[i];
            else if (tt_mono_ms() - start[i] > 60000)
                s_die("clone", "no HTTP answer in 60 s");
            else
                pending++;
        }
        if (pending)
            spawn_sleep_ms(10);
    }
    for (int i = 0; i < n; i++)
        printf("clone_%d begin_ms %lld qmp_up_ms %lld running_ms %lld http_ms %lld\n", i,
               (long long)begin_ms[i], (long long)(cop[i].incoming_ms - start[i]),
               (long long)restored[i], (long long)http[i]);

    /* the other cold VMs, at once */
    for (int i = 1; i < n; i++) {
        if (engine_qemu.prepare_disk(&E.ctx, &cold[i], err, sizeof err) ||
            engine_qemu.start(&E.ctx, &cold[i], err, sizeof err))
            s_die("cold start", err);
        sk_track(&cold[i]);
    }
    if (n > 1)
        printf("cold_boot_%d_at_once_to_http_ms %lld\n", n - 1,
               (long long)s_boot_wait(cold + 1, n - 1, 900000));
    spawn_sleep_ms(2000);
    s_pss("clones", cl, n);
    printf("template_ram_page_cache_kb %ld\n", s_cached_kb(path));
    s_pss("cold", cold, n);

    s_suspend_resume("clone", &cl[0]);
    s_suspend_resume("cold", &cold[0]);
    s_load("end");
    return 0;
}
