/*
 * The process engine for real: spawn a VM from the sample images into a
 * temp state dir, check it runs in its own namespaces with its console
 * and environment, pause/resume it, stop it (gone, disk kept), start it
 * again, destroy it (dir gone). Needs root (namespaces). Every wait is
 * bounded, and an exit handler kills the VM and removes the temp dir even
 * when a check fails. Prints how long a spawn takes.
 */
#include "test_util.h"

#include <czmq.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine.h"
#include "proc.h"

static vm_t s_vm;

static void s_kill_leftover(void)
{
    if (s_vm.pid && proc_alive(s_vm.pid, s_vm.start_time)) {
        kill(s_vm.pid, SIGKILL);
        waitpid(s_vm.pid, NULL, 0);
    }
}

static bool s_file_has(const char *path, const char *text, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        FILE *f = fopen(path, "r");
        if (f) {
            char buf[4096];
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            buf[n] = 0;
            if (strstr(buf, text))
                return true;
        }
        usleep(20000);
    }
    return false;
}

/* The mount options of pid's mount at point (its mountinfo line from the
 * point on: per-mount options, then " - fstype source super-options"), or
 * "" when it has none there. */
static void s_mount_line(pid_t pid, const char *point, char *out, size_t len)
{
    char path[64], line[1024], want[128];
    snprintf(path, sizeof path, "/proc/%d/mountinfo", (int)pid);
    snprintf(want, sizeof want, " %s ", point);
    out[0] = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        /* fields: id parent major:minor root point options ... */
        char *p = line;
        for (int field = 0; p && field < 4; field++)
            p = strchr(p + 1, ' ');
        if (p && strncmp(p, want, strlen(want)) == 0)
            snprintf(out, len, "%s", p);
    }
    if (f)
        fclose(f);
}

/* Bytes a tree takes on its file system (st_blocks), not crossing mounts
 * nor following symlinks. */
static long long s_du_total;
static int s_du_add(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)path;
    (void)flag;
    (void)ftw;
    s_du_total += (long long)sb->st_blocks * 512;
    return 0;
}

static long long s_du(const char *path)
{
    s_du_total = 0;
    if (nftw(path, s_du_add, 16, FTW_PHYS | FTW_MOUNT))
        return -1;
    return s_du_total;
}

static bool s_ns_differs(pid_t pid, const char *ns)
{
    char a[64], b[64], pa[64], pb[64];
    snprintf(pa, sizeof pa, "/proc/%d/ns/%s", (int)pid, ns);
    snprintf(pb, sizeof pb, "/proc/self/ns/%s", ns);
    ssize_t na = readlink(pa, a, sizeof a - 1), nb = readlink(pb, b, sizeof b - 1);
    if (na <= 0 || nb <= 0)
        return false;
    a[na] = 0;
    b[nb] = 0;
    return strcmp(a, b) != 0;
}

/* A fake QEMU for the snapshot checks: a child serving QMP on path that
 * answers every command with {"return": {}} except query-memdev, whose
 * answer is memdev (a JSON array). Serves connections until killed. */
static pid_t s_fake_qmp(const char *path, const char *memdev)
{
    unlink(path);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4))
        return -1;
    pid_t pid = fork();
    if (pid != 0) {
        close(ls);
        return pid;
    }
    for (;;) {
        int c = accept(ls, NULL, NULL);
        if (c < 0)
            _exit(0);
        FILE *f = fdopen(c, "r+");
        fprintf(f, "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n");
        fflush(f);
        char line[1024];
        while (fgets(line, sizeof line, f)) {
            if (strstr(line, "query-memdev"))
                fprintf(f, "{\"return\": %s}\n", memdev);
            else
                fprintf(f, "{\"return\": {}}\n");
            fflush(f);
        }
        fclose(f);
    }
}

int main(void)
{
    if (geteuid() != 0) {
        printf("unit.worker.engine: skipped (needs root)\n");
        return 0;
    }
    const char *images = getenv("TTFLEET_IMAGES");
    if (!images) {
        fprintf(stderr, "TTFLEET_IMAGES is not set\n");
        return 1;
    }
    char images_abs[4096];
    if (!realpath(images, images_abs)) {
        perror(images);
        return 1;
    }
    const char *state = s_tmpdir_make("engine");
    atexit(s_kill_leftover); /* runs before the dir removal (LIFO) */
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

    engine_ctx_t ctx = {.state_dir = state, .images_dir = images_abs, .stop_timeout_ms = 2000};
    const engine_t *eng = engine_find("process");
    CHECK(eng == &engine_process);
    char err[256] = "";

    s_vm.vm_id = 77;
    strcpy(s_vm.env, "t/e");
    strcpy(s_vm.image, "ticker");
    strcpy(s_vm.engine, "process");
    strcpy(s_vm.ip, "10.10.0.77");
    strcpy(s_vm.mac, "52:54:00:00:00:4d");
    s_vm.n_ports = 2;
    s_vm.ports[0].guest = 22;
    s_vm.ports[1].guest = 80;
    s_vm.disk_mib = 32;

    CHECK(eng->prepare_disk(&ctx, &s_vm, err, sizeof err) == 0);
    /* a descriptor the worker holds without close-on-exec, and a variable
     * of the worker's environment: neither may reach the VM */
    char marker[4096];
    snprintf(marker, sizeof marker, "%s/fd-marker", state);
    int leak = open(marker, O_CREAT | O_RDWR, 0600);
    CHECK(leak >= 0);
    setenv("TTFLEET_TEST_WORKER_ONLY", "1", 1);
    int64_t t0 = zclock_usecs();
    int rc = eng->start(&ctx, &s_vm, err, sizeof err);
    int64_t spawn_us = zclock_usecs() - t0;
    unsetenv("TTFLEET_TEST_WORKER_ONLY");
    if (leak >= 0)
        close(leak);
    if (rc) {
        fprintf(stderr, "start: %s\n", err);
        CHECK(rc == 0);
        return s_report("unit.worker.engine");
    }
    printf("process VM spawn took %lld us\n", (long long)spawn_us);
    CHECK(s_vm.pid > 0);
    CHECK(eng->is_alive(&ctx, &s_vm));
    CHECK(s_ns_differs(s_vm.pid, "pid"));
    CHECK(s_ns_differs(s_vm.pid, "net"));
    CHECK(s_ns_differs(s_vm.pid, "mnt"));
    CHECK(s_ns_differs(s_vm.pid, "uts"));

    char path[4096], pidfile[4096];
    snprintf(path, sizeof path, "%s/vms/77/console.log", state);
    CHECK(s_file_has(path, "vm 77 ticker up", 3000));
    /* the first tick reaches the disk a moment after "up": the stop below
     * checks the disk kept it, so wait for it (else the test races) */
    /* the disk is an ext4 image mounted in the VM's own mount namespace:
     * seen from the host only through the VM's root, at /disk */
    snprintf(path, sizeof path, "/proc/%d/root/disk/ticks", (int)s_vm.pid);
    CHECK(s_file_has(path, "1", 3000));
    /* written by the VM's root, owned by the unprivileged id it maps to */
    struct stat tsb;
    CHECK(stat(path, &tsb) == 0 && tsb.st_uid == 100000 && tsb.st_gid == 100000);
    /* its root is the image's tree, not the host's: no state dir, no /etc/shadow */
    snprintf(path, sizeof path, "/proc/%d/root%s", (int)s_vm.pid, state);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "/proc/%d/root/etc/shadow", (int)s_vm.pid);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "/proc/%d/root/run", (int)s_vm.pid);
    CHECK(access(path, X_OK) == 0);
    /* its own user namespace: uid 0 inside is 100000 outside */
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)s_vm.pid);
    CHECK(s_file_has(path, "0     100000      65536", 1000));
    CHECK(s_ns_differs(s_vm.pid, "user"));
    CHECK(s_ns_differs(s_vm.pid, "ipc"));
    snprintf(pidfile, sizeof pidfile, "%s/vms/77/pid", state);
    pid_t fpid;
    uint64_t fst;
    CHECK(proc_pidfile_read(pidfile, &fpid, &fst) == 0 && fpid == s_vm.pid &&
          fst == s_vm.start_time);
    char envp[64];
    snprintf(envp, sizeof envp, "/proc/%d/environ", (int)s_vm.pid);
    FILE *f = fopen(envp, "r");
    char envbuf[4096] = "";
    size_t n = f ? fread(envbuf, 1, sizeof envbuf - 1, f) : 0;
    if (f)
        fclose(f);
    for (size_t i = 0; i < n; i++)
        if (!envbuf[i])
            envbuf[i] = '\n';
    CHECK(strstr(envbuf, "TTFLEET_VM_ID=77\n") && strstr(envbuf, "TTFLEET_VM_PORTS=22,80\n") &&
          strstr(envbuf, "TTFLEET_VM_MAC=52:54:00:00:00:4d\n"));
    /* a clean environment: PATH, HOME and the VM's own variables, nothing
     * of the worker's */
    int foreign = 0;
    for (char *line = envbuf, *next; n && *line; line = next + 1) {
        next = strchr(line, '\n');
        if (!next)
            break;
        if (strncmp(line, "PATH=", 5) && strncmp(line, "HOME=", 5) &&
            strncmp(line, "TTFLEET_VM_", 11)) {
            fprintf(stderr, "  VM environment has %.*s\n", (int)(next - line), line);
            foreign++;
        }
    }
    CHECK(n > 0 && foreign == 0);
    /* seccomp filter and no_new_privs, without --vm-user too */
    snprintf(path, sizeof path, "/proc/%d/status", (int)s_vm.pid);
    CHECK(s_file_has(path, "NoNewPrivs:\t1\n", 0) && s_file_has(path, "Seccomp:\t2\n", 0));
    /* /tmp: 64 MiB, 4096 inodes, nosuid, nodev; /dev: 64 KiB, noexec,
     * holding six devices and the fd links, nothing else of the host's */
    char mnt[1024];
    s_mount_line(s_vm.pid, "/tmp", mnt, sizeof mnt);
    CHECK(strstr(mnt, "nosuid") && strstr(mnt, "nodev") && strstr(mnt, " tmpfs ") &&
          strstr(mnt, "size=65536k") && strstr(mnt, "nr_inodes=4096"));
    if (!strstr(mnt, "size=65536k"))
        fprintf(stderr, "  /tmp mount: %s", mnt[0] ? mnt : "none\n");
    s_mount_line(s_vm.pid, "/dev", mnt, sizeof mnt);
    CHECK(strstr(mnt, "nosuid") && strstr(mnt, "noexec") && strstr(mnt, " tmpfs ") &&
          strstr(mnt, "size=64k"));
    if (!strstr(mnt, "size=64k"))
        fprintf(stderr, "  /dev mount: %s", mnt[0] ? mnt : "none\n");
    /* the host's /usr, the image having none: read-only, nosuid, nodev */
    s_mount_line(s_vm.pid, "/usr", mnt, sizeof mnt);
    CHECK(strncmp(mnt, " /usr ro,", 9) == 0 && strstr(mnt, "nosuid") && strstr(mnt, "nodev"));
    if (strncmp(mnt, " /usr ro,", 9) != 0)
        fprintf(stderr, "  /usr mount: %s", mnt[0] ? mnt : "none\n");
    static const char *const devs[] = {".",       "..",  "null", "zero",  "full",   "random",
                                       "urandom", "tty", "fd",   "stdin", "stdout", "stderr"};
    snprintf(path, sizeof path, "/proc/%d/root/dev", (int)s_vm.pid);
    DIR *dev = opendir(path);
    CHECK(dev != NULL);
    int n_dev = 0, unknown = 0;
    for (struct dirent *e; dev && (e = readdir(dev));) {
        bool known = false;
        for (size_t i = 0; i < sizeof devs / sizeof *devs; i++)
            known = known || strcmp(e->d_name, devs[i]) == 0;
        if (!known) {
            fprintf(stderr, "  VM /dev has %s\n", e->d_name);
            unknown++;
        }
        n_dev++;
    }
    if (dev)
        closedir(dev);
    CHECK(unknown == 0 && n_dev == (int)(sizeof devs / sizeof *devs));
    /* no descriptor of the worker: only what the spawner placed */
    snprintf(path, sizeof path, "/proc/%d/fd", (int)s_vm.pid);
    DIR *fds = opendir(path);
    CHECK(fds != NULL);
    int leaked = 0;
    for (struct dirent *e; fds && (e = readdir(fds));) {
        char fdp[4400], target[4096];
        snprintf(fdp, sizeof fdp, "%s/%s", path, e->d_name);
        ssize_t tl = readlink(fdp, target, sizeof target - 1);
        if (tl > 0) {
            target[tl] = 0;
            if (strstr(target, "fd-marker")) {
                fprintf(stderr, "  VM holds the worker's fd %s -> %s\n", e->d_name, target);
                leaked++;
            }
        }
    }
    if (fds)
        closedir(fds);
    CHECK(leaked == 0);

    /* What the VM writes to its root lands on its own disk: a file larger
     * than the disk stops short with ENOSPC, and the worker's <vm>/root
     * (on the host's file system) does not grow. */
    char root_dir[4096];
    snprintf(root_dir, sizeof root_dir, "%s/vms/77/root", state);
    long long root_before = s_du(root_dir);
    snprintf(path, sizeof path, "/proc/%d/root/bigfile", (int)s_vm.pid);
    int big = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(big >= 0);
    static char chunk[1 << 20];
    memset(chunk, 'x', sizeof chunk);
    long long wrote = 0;
    int werr = 0;
    for (int i = 0; big >= 0 && i < 48; i++) {
        ssize_t w = write(big, chunk, sizeof chunk);
        if (w > 0)
            wrote += w;
        if (w != (ssize_t)sizeof chunk) {
            werr = w < 0 ? errno : ENOSPC;
            break;
        }
    }
    if (big >= 0 && fsync(big) && !werr)
        werr = errno;
    if (big >= 0)
        close(big);
    long long root_after = s_du(root_dir);
    printf("root write: %lld bytes before %s; <vm>/root %lld -> %lld bytes\n", wrote,
           werr ? strerror(werr) : "no error", root_before, root_after);
    CHECK(werr == ENOSPC && wrote < 32LL << 20);
    CHECK(root_before >= 0 && root_after >= 0 && root_after - root_before < 1LL << 20);
    CHECK(unlink(path) == 0);
    /* a file of its root is kept with its disk across stop/start */
    snprintf(path, sizeof path, "/proc/%d/root/keep", (int)s_vm.pid);
    FILE *kf = fopen(path, "w");
    CHECK(kf != NULL);
    if (kf) {
        fputs("kept\n", kf);
        fclose(kf);
    }
    /* the layer's directory on the disk is out of the VM's reach */
    struct stat lsb;
    snprintf(path, sizeof path, "/proc/%d/root/disk/.root", (int)s_vm.pid);
    CHECK(lstat(path, &lsb) == 0 && S_ISDIR(lsb.st_mode) && lsb.st_uid == 0 &&
          (lsb.st_mode & 07777) == 0700);

    /* Pause: pid 1 shows state T; resume: running again. */
    CHECK(eng->pause(&ctx, &s_vm, err, sizeof err) == 0);
    char st;
    uint64_t stime;
    CHECK(proc_stat_read(s_vm.pid, &st, &stime) == 0 && st == 'T');
    CHECK(eng->is_alive(&ctx, &s_vm));
    CHECK(eng->resume(&ctx, &s_vm, err, sizeof err) == 0);
    CHECK(proc_stat_read(s_vm.pid, &st, &stime) == 0 && st != 'T');

    /* The VM's root may have left symlinks where pid 1 mounts and writes
     * (its /etc, /dev, /tmp live in its upper layer): the next start
     * replaces them, never following them into the host's tree. */
    char up[4096], host_dir[2048];
    snprintf(host_dir, sizeof host_dir, "%s/host-dir", state);
    CHECK(mkdir(host_dir, 0755) == 0);
    static const char *const traps[] = {"etc", "tmp", "dev", "disk"};
    for (size_t i = 0; i < sizeof traps / sizeof *traps; i++) {
        snprintf(up, sizeof up, "/proc/%d/root/disk/.root/upper/%s", (int)s_vm.pid, traps[i]);
        char cmd[8400];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", up);
        CHECK(system(cmd) == 0);
        CHECK(symlink(host_dir, up) == 0);
    }

    /* Stop: gone, disk kept, pidfile removed. */
    pid_t old = s_vm.pid;
    uint64_t old_st = s_vm.start_time;
    t0 = zclock_usecs();
    CHECK(eng->stop(&ctx, &s_vm, err, sizeof err) == 0);
    printf("process VM stop took %lld us\n", (long long)(zclock_usecs() - t0));
    CHECK(!proc_alive(old, old_st));
    CHECK(s_vm.pid == 0);
    CHECK(access(pidfile, F_OK) != 0);
    snprintf(path, sizeof path, "%s/vms/77/disk.img", state);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/vms/77/disk/ticks", state);
    CHECK(access(path, F_OK) != 0); /* never on the host's own file system */
    CHECK(!eng->is_alive(&ctx, &s_vm));

    CHECK(s_du(root_dir) - root_before < 1LL << 20);

    /* Start again from the kept disk, then adopt as after a restart. */
    CHECK(eng->start(&ctx, &s_vm, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/passwd", host_dir);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "%s/null", host_dir);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "/proc/%d/root/etc/passwd", (int)s_vm.pid);
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "/proc/%d/root/disk/ticks", (int)s_vm.pid);
    CHECK(s_file_has(path, "1", 3000));
    snprintf(path, sizeof path, "/proc/%d/root/keep", (int)s_vm.pid);
    CHECK(s_file_has(path, "kept\n", 0));
    /* the VM moves the layer's directory away and leaves a symlink to the
     * host in its place: the next start makes a new one on the disk (the
     * root starts again from the image), never following the symlink */
    char moved[4096];
    snprintf(path, sizeof path, "/proc/%d/root/disk/.root", (int)s_vm.pid);
    snprintf(moved, sizeof moved, "/proc/%d/root/disk/moved-root", (int)s_vm.pid);
    CHECK(rename(path, moved) == 0 && symlink(host_dir, path) == 0);
    vm_t copy = s_vm;
    CHECK(eng->adopt(&ctx, &copy) == 0 && copy.pid == s_vm.pid);
    vm_t wrong = s_vm;
    wrong.start_time++;
    /* A row that does not match the live process: that process is a stray
     * (pidfile proves it ours) and gets killed; the row is dead. */
    CHECK(eng->adopt(&ctx, &wrong) == -1);
    CHECK(!proc_alive(s_vm.pid, s_vm.start_time));
    CHECK(eng->start(&ctx, &s_vm, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/upper", host_dir);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "/proc/%d/root/disk/.root", (int)s_vm.pid);
    CHECK(lstat(path, &lsb) == 0 && S_ISDIR(lsb.st_mode) && lsb.st_uid == 0);
    snprintf(path, sizeof path, "/proc/%d/root/keep", (int)s_vm.pid);
    CHECK(access(path, F_OK) != 0);
    snprintf(path, sizeof path, "/proc/%d/root/etc/passwd", (int)s_vm.pid);
    CHECK(access(path, F_OK) == 0);

    /* A missing image fails cleanly. */
    vm_t bad = s_vm;
    bad.vm_id = 78;
    bad.pid = 0;
    strcpy(bad.image, "no-such-image");
    CHECK(eng->prepare_disk(&ctx, &bad, err, sizeof err) == 0);
    CHECK(eng->start(&ctx, &bad, err, sizeof err) == -1 && strstr(err, "not present"));
    CHECK(eng->destroy(&ctx, &bad, err, sizeof err) == 0);

    /* Another id base (--vm-id-base): a file image (sleeper, copied into
     * the VM's root as /run) mapped to 300000.. */
    vm_t other = s_vm;
    other.vm_id = 79;
    other.pid = 0;
    other.start_time = 0;
    strcpy(other.image, "sleeper");
    engine_ctx_t ctx2 = ctx;
    ctx2.vm_id_base = 300000;
    CHECK(eng->prepare_disk(&ctx2, &other, err, sizeof err) == 0);
    CHECK(eng->start(&ctx2, &other, err, sizeof err) == 0);
    snprintf(path, sizeof path, "/proc/%d/uid_map", (int)other.pid);
    CHECK(s_file_has(path, "0     300000      65536", 1000));
    snprintf(path, sizeof path, "/proc/%d/root/disk", (int)other.pid);
    struct stat dsb;
    CHECK(stat(path, &dsb) == 0 && dsb.st_uid == 300000);
    snprintf(path, sizeof path, "%s/vms/79/console.log", state);
    CHECK(s_file_has(path, "vm 79 up", 3000));
    CHECK(eng->destroy(&ctx2, &other, err, sizeof err) == 0);

    /* Destroy: process gone, directory gone. */
    old = s_vm.pid;
    old_st = s_vm.start_time;
    CHECK(eng->destroy(&ctx, &s_vm, err, sizeof err) == 0);
    CHECK(!proc_alive(old, old_st));
    snprintf(path, sizeof path, "%s/vms/77", state);
    struct stat sb;
    CHECK(lstat(path, &sb) != 0);

    /* Memory snapshots: only the qemu engine, and only where the QEMU
     * version is known; the others say why (BAD_REQUEST for the tenant). */
    CHECK(engine_snapshot_check(&engine_process, &ctx, err, sizeof err) == -1 &&
          strstr(err, "'process' cannot take memory snapshots"));
    CHECK(engine_snapshot_check(&engine_hollow, &ctx, err, sizeof err) == -1 &&
          strstr(err, "'hollow' cannot"));
    /* what an engine declares matches what it has: exec/copy with a guest
     * backend, snapshots with the snapshot functions */
    const engine_t *all[] = {&engine_process, &engine_hollow, &engine_qemu};
    for (size_t i = 0; i < 3; i++) {
        CHECK(!(all[i]->caps & TT_CAP_GUEST) == !all[i]->guest);
        CHECK(!(all[i]->caps & TT_CAP_SNAPSHOTS) == !all[i]->template_boot);
        CHECK(engine_caps_of(all[i]->name) == all[i]->caps);
    }
    CHECK(engine_caps_of("nosuch") == 0);
    CHECK(!(engine_process.caps & TT_CAP_SNAPSHOTS) && !engine_process.suspend &&
          !(engine_hollow.caps & TT_CAP_SNAPSHOTS));
    CHECK(engine_snapshot_check(&engine_qemu, &ctx, err, sizeof err) == -1 &&
          strstr(err, "QEMU version"));
    engine_ctx_t qctx = ctx;
    snap_op_t op0;
    memset(&op0, 0, sizeof op0);
    qctx.qemu_version = "QEMU emulator version 7.2.22";
    CHECK(engine_snapshot_check(&engine_qemu, &qctx, err, sizeof err) == 0);
    qctx.qemu = "/usr/bin/qemu-system-x86_64"; /* never run here */
    qctx.vm_user = "nobody";
    CHECK(engine_snapshot_check(&engine_qemu, &qctx, err, sizeof err) == -1 &&
          strstr(err, "--vm-user"));
    CHECK(engine_qemu.suspend(&qctx, &s_vm, &op0, err, sizeof err) == -1 &&
          strstr(err, "--vm-user"));
    qctx.vm_user = NULL;
    /* the migration URIs are shell commands: a state dir that a shell
     * would split is refused before QEMU sees it */
    qctx.state_dir = "/tmp/tt snap;touch x";
    qctx.qemu = "/usr/bin/qemu-system-x86_64"; /* never run here */
    snap_op_t op;
    memset(&op, 0, sizeof op);
    vm_t q = s_vm;
    strcpy(q.engine, "qemu");
    CHECK(engine_qemu.suspend(&qctx, &q, &op, err, sizeof err) == -1 &&
          strstr(err, "[A-Za-z0-9/._+-]"));
    CHECK(engine_qemu.resume_saved(&qctx, &q, &op, err, sizeof err) == -1 &&
          strstr(err, "[A-Za-z0-9/._+-]"));
    CHECK(engine_qemu.template_boot(&qctx, &q, "/tmp/t;x", err, sizeof err) == -1 &&
          strstr(err, "[A-Za-z0-9/._+-]"));
    /* A QEMU whose RAM is not the backend ram0 (started by an older
     * worker with a plain -m) is refused before anything stops; one with
     * ram0 goes on to the save. */
    qctx.state_dir = state;
    q.vm_id = 79;
    snprintf(path, sizeof path, "%s/vms", state);
    mkdir(path, 0750);
    snprintf(path, sizeof path, "%s/vms/79", state);
    mkdir(path, 0750);
    snprintf(path, sizeof path, "%s/vms/79/qmp.sock", state);
    q.pid = s_fake_qmp(path, "[{\"id\": \"pc.ram\", \"size\": 134217728}]");
    CHECK(q.pid > 0 && proc_stat_read(q.pid, &st, &q.start_time) == 0);
    CHECK(engine_qemu.suspend(&qctx, &q, &op, err, sizeof err) == -1 && strstr(err, "ram0"));
    snprintf(path, sizeof path, "%s/vms/79/suspend.partial", state);
    CHECK(lstat(path, &sb) != 0); /* nothing was started */
    kill(q.pid, SIGKILL);
    waitpid(q.pid, NULL, 0);
    snprintf(path, sizeof path, "%s/vms/79/qmp.sock", state);
    q.pid = s_fake_qmp(path, "[{\"id\": \"ram0\", \"size\": 134217728}]");
    CHECK(q.pid > 0 && proc_stat_read(q.pid, &st, &q.start_time) == 0);
    CHECK(engine_qemu.suspend(&qctx, &q, &op, err, sizeof err) == 0);
    engine_qemu.snap_abort(&qctx, &q, &op);
    CHECK(lstat(path, &sb) == 0);
    snprintf(path, sizeof path, "%s/vms/79/suspend.partial", state);
    CHECK(lstat(path, &sb) != 0); /* the abort removed the partial file */
    kill(q.pid, SIGKILL);
    waitpid(q.pid, NULL, 0);

    /* the trash: a VM's directory leaves <state>/vms at once and the
     * background thread empties <state>/trash; what a worker killed before
     * that left behind (a hostile VM's deep tree and a symlink out of it
     * included) is removed after engine_trash_sweep, the symlink's target
     * untouched */
    char tdir[4096], outside[4096];
    snprintf(outside, sizeof outside, "%s/outside-marker", state);
    FILE *mf = fopen(outside, "w");
    CHECK(mf != NULL);
    if (mf)
        fclose(mf);
    snprintf(path, sizeof path, "%s/vms/81", state);
    mkdir(path, 0750);
    for (int depth = 0; depth < 40; depth++) {
        size_t plen = strlen(path);
        snprintf(path + plen, sizeof path - plen, "/d");
        CHECK(mkdir(path, 0700) == 0);
    }
    snprintf(tdir, sizeof tdir, "%s/vms/81/link", state);
    CHECK(symlink(outside, tdir) == 0);
    CHECK(engine_vm_rmdir(&ctx, 81, err, sizeof err) == 0);
    snprintf(path, sizeof path, "%s/vms/81", state);
    CHECK(lstat(path, &sb) != 0); /* gone from vms/ at once */
    snprintf(tdir, sizeof tdir, "%s/trash", state);
    bool emptied = false;
    for (int i = 0; i < 300 && !emptied; i++) {
        DIR *d = opendir(tdir);
        int entries = 0;
        for (struct dirent *e; d && (e = readdir(d));)
            entries += e->d_name[0] != '.';
        if (d)
            closedir(d);
        emptied = d && entries == 0;
        if (!emptied)
            usleep(10000);
    }
    CHECK(emptied);
    CHECK(access(outside, F_OK) == 0);
    snprintf(path, sizeof path, "%s/trash/82.1.1", state);
    CHECK(mkdir(path, 0700) == 0);
    snprintf(path, sizeof path, "%s/trash/82.1.1/upper", state);
    CHECK(mkdir(path, 0700) == 0);
    engine_trash_sweep(&ctx);
    snprintf(path, sizeof path, "%s/trash/82.1.1", state);
    bool swept = false;
    for (int i = 0; i < 300 && !swept; i++) {
        swept = lstat(path, &sb) != 0;
        if (!swept)
            usleep(10000);
    }
    CHECK(swept);
    CHECK(access(outside, F_OK) == 0);
    return s_report("unit.worker.engine");
}
