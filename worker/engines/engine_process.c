/*
 * engine_process: a VM is a process tree in its own Linux namespaces.
 *
 * A light container: the image's program runs as pid 1 of a new pid
 * namespace, with its own mount, UTS (hostname vm-<id>), network (backend
 * `none`: only lo, brought up), IPC and user namespaces, in a root of its
 * own: the image's tree under an overlayfs whose upper layer is
 * .root/upper on the VM's own disk (docs/SECURITY.md "VM confinement"), so
 * what it writes to its root counts against its disk size, its working
 * directory /disk, the VM's disk (kept across stop/start), its output
 * appended to <state>/vms/<id>/console.log.
 *
 * Spawn, so the VM outlives the worker:
 *   worker --fork--> intermediate: setsid, unshare(UTS|NET|PID|IPC)
 *                    --fork--> VM pid 1: (after the pidfile) its own mount
 *                                namespace, disk, overlay root, /dev, /tmp,
 *                                pivot_root, fresh /proc, hostname, lo up,
 *                                chdir /disk, unshare(USER), waits for the
 *                                maps, becomes the VM's root (or
 *                                --vm-user), vmjail bounding set, filter,
 *                                execve /run
 *                    writes <vm>/pid ("PID STARTTIME"), lets pid 1 go,
 *                    writes pid 1's uid_map and gid_map once it is in its
 *                    user namespace, reports the pid on a pipe, then
 *                    exits; the worker reaps it.
 * The pidfile is written by the intermediate, not the worker, so even a
 * worker killed mid-spawn leaves proof of what it started: the next start
 * finds it and kills it instead of leaking an orphan VM. The pipe is
 * close-on-exec in pid 1, so EOF after the pid means "exec succeeded" and
 * an errno record means "exec failed".
 *
 * Stop: SIGTERM (and SIGCONT, in case it was paused) to every process of
 * the VM's pid namespace, found by comparing /proc/PID/ns/pid inodes, then
 * up to stop_timeout_ms for pid 1 to go, then SIGKILL to pid 1 (which
 * kills the whole namespace: from an ancestor namespace SIGKILL is always
 * delivered, while SIGTERM reaches pid 1 only if it installed a handler).
 * Pause/resume: SIGSTOP/SIGCONT to every process of the namespace. The
 * host here has only cgroup v1 mounts, so the freezer is not relied on;
 * the namespace scan is exact and needs nothing set up.
 *
 * The worker's loop never waits out a grace (fleet.c): stop_begin sends
 * the SIGTERM and notes the time, stop_poll (on the loop's timer) says
 * when pid 1 is gone and re-sends SIGTERM once if pid 1 installed its
 * handler late, stop_force sends the SIGKILL at the deadline, and the
 * blocking stop that follows finds the VM gone. The blocking stop alone
 * (no stop_begin) keeps its old bounded wait.
 *
 * The spawn lock (engine.h) is taken before the intermediate is forked and
 * inherited by it, so a worker restarted while an intermediate of its dead
 * predecessor still runs waits for the pidfile instead of missing it.
 * TTFLEET_SPAWN_DELAY_MS (tests only) makes the intermediate sleep before
 * it writes the pidfile, to hold that window open.
 *
 * A process is ours only if pid *and* start time match what we recorded;
 * we never signal a namespace that is the worker's own.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/loop.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "console.h"
#include "images.h"
#include "proc.h"
#include "spawn.h"
#include "ttcrash.h"
#include "vmjail.h"

#define S_SPAWN_TIMEOUT_MS 5000
#define S_KILL_TIMEOUT_MS 2000
#define S_MKFS_MS 30000
#define S_MIN_DISK_MIB 8
#define S_LOOP_TRIES 8

/* Records on the spawn pipe. */
enum { S_MSG_PID = 1, S_MSG_ERR = 2 };
typedef struct {
    int32_t kind;
    int32_t value; /* pid, or errno */
    int32_t step;  /* which step failed */
    int32_t pad;
    uint64_t start_time;
} s_msg_t;

static const char *s_step_names[] = {"ok",
                                     "setsid",
                                     "unshare",
                                     "fork",
                                     "mount private",
                                     "mount /proc",
                                     "sethostname",
                                     "chdir disk",
                                     "stdio",
                                     "execve",
                                     "read start time",
                                     "drop privileges",
                                     "mount disk",
                                     "mount root (overlayfs)",
                                     "populate root",
                                     "pivot_root",
                                     "user namespace",
                                     "uid/gid map",
                                     "capabilities",
                                     "seccomp filter",
                                     "open low ports"};
#define S_STEPS ((int)(sizeof s_step_names / sizeof *s_step_names))

static int s_mkdir(const char *path)
{
    if (mkdir(path, 0750) && errno != EEXIST)
        return -1;
    return 0;
}

/* Who the VM's root (or, under --vm-user, the VM's user) is outside its
 * user namespace: the owner of its disk's root and of its root directory. */
static void s_root_ids(const engine_ctx_t *ctx, uid_t *uid, gid_t *gid)
{
    if (ctx->vm_user) {
        *uid = ctx->vm_uid;
        *gid = ctx->vm_gid;
        return;
    }
    *uid = ctx->vm_id_base ? ctx->vm_id_base : VMJAIL_ID_BASE_DEFAULT;
    *gid = (gid_t)*uid;
}

/* mkfs.ext4 / e2fsck / resize2fs (e2fsprogs), absolute, or -1. They live
 * in sbin, which a worker's PATH may lack. */
static int s_e2prog(const char *name, char *buf, size_t len)
{
    static const char *dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
    if (spawn_which(name, buf, len) == 0)
        return 0;
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(buf, len, "%s/%s", dirs[i], name);
        if (access(buf, X_OK) == 0)
            return 0;
    }
    return -1;
}

static int s_run_e2(const char *prog, char *const args[], char *err, size_t errlen)
{
    char path[4096];
    if (s_e2prog(prog, path, sizeof path)) {
        snprintf(err, errlen, "%s is not installed (Debian package e2fsprogs)", prog);
        return -1;
    }
    char *argv[16];
    int n = 0;
    argv[n++] = path;
    for (int i = 0; args[i] && n < 15; i++)
        argv[n++] = args[i];
    argv[n] = NULL;
    return spawn_run(argv, S_MKFS_MS, err, errlen);
}

/* The VM's disk is an ext4 file system in <vm>/disk.img, of the VM's disk
 * size, that pid 1 mounts (through a loop device) on <vm>/disk inside the
 * VM's own mount namespace: whatever the VM writes there stops at its disk
 * size (ENOSPC), and the host never sees the mount. Sparse and without a
 * journal, so a 40 GiB disk costs a few MiB until it is used. Made once,
 * grown (e2fsck + resize2fs) when the VM's disk grew while it was stopped. */
static int s_prepare_disk(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    char vms[4096], dir[4096], disk[4096], img[4096], tmp[4200];
    snprintf(vms, sizeof vms, "%s/vms", ctx->state_dir);
    if (engine_vm_path(ctx, vm->vm_id, NULL, dir, sizeof dir) ||
        engine_vm_path(ctx, vm->vm_id, "disk", disk, sizeof disk) ||
        engine_vm_path(ctx, vm->vm_id, "disk.img", img, sizeof img)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    if (s_mkdir(vms) || s_mkdir(dir) || s_mkdir(disk)) {
        snprintf(err, errlen, "create %s: %s", disk, strerror(errno));
        return -1;
    }
    /* ext4 needs some room for itself: a tiny disk gets S_MIN_DISK_MIB */
    uint32_t mib = vm->disk_mib < S_MIN_DISK_MIB ? S_MIN_DISK_MIB : vm->disk_mib;
    off_t want = (off_t)mib * 1024 * 1024;
    struct stat sb;
    if (stat(img, &sb) == 0) {
        if (sb.st_size >= want)
            return 0;
        if (truncate(img, want)) {
            snprintf(err, errlen, "grow %s: %s", img, strerror(errno));
            return -1;
        }
        char *fsck[] = {"-f", "-y", "-q", img, NULL};
        char *grow[] = {"-f", img, NULL};
        char e2[256];
        s_run_e2("e2fsck", fsck, e2, sizeof e2); /* 1 = fixed: resize2fs says if it matters */
        return s_run_e2("resize2fs", grow, err, errlen);
    }
    snprintf(tmp, sizeof tmp, "%s.new", img);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, want)) {
        snprintf(err, errlen, "create %s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        return -1;
    }
    close(fd);
    /* the file system's root belongs to the user the VM runs as */
    char ext[128];
    uid_t ru;
    gid_t rg;
    s_root_ids(ctx, &ru, &rg);
    snprintf(ext, sizeof ext, "lazy_itable_init=1,nodiscard,root_owner=%u:%u", (unsigned)ru,
             (unsigned)rg);
    char *mkfs[] = {"-q", "-F", "-m", "0", "-O", "^has_journal", "-E", ext, tmp, NULL};
    if (s_run_e2("mkfs.ext4", mkfs, err, errlen)) {
        unlink(tmp);
        return -1;
    }
    /* made under a temporary name: a crash never leaves a half disk */
    if (rename(tmp, img)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* Everything the children need, built before fork: after fork only
 * async-signal-safe calls are allowed (the worker has ZeroMQ threads). */
typedef struct {
    char prog[4096];
    char disk[4096];
    char img[4096];
    char pidfile[4096];
    char hostname[32];
    char env_id[48], env_ip[48], env_mac[48], env_name[200];
    char env_ports[TT_MAX_PORTS_PER_VM * 6 + 32];
    char *argv[2];
    char *envp[10];
    int console_fd;
    int null_fd;
    bool drop; /* become uid/gid before exec */
    uid_t uid;
    gid_t gid;
    int delay_ms; /* TTFLEET_SPAWN_DELAY_MS: tests hold the pidfile window open */
    /* the VM's root: overlayfs of the image tree under an upper layer on
     * the VM's disk, <disk>/.root/upper (work: <disk>/.root/work) */
    char merged[4096];
    char layer[4200], upper[4300], work[4300];
    char ovl_opts[3 * 4300 + 64];
    /* host system directories bound read-only (or symlinked) into it */
    int n_sys;
    struct {
        char name[16];
        char host[24];
        char link[256]; /* "": a directory to bind */
    } sys[8];
    bool make_etc; /* the image has no etc: a minimal one */
    char passwd[256];
    uid_t root_uid; /* the VM's root (or its user) outside */
    gid_t root_gid;
    char uid_map[64], gid_map[64];
    const struct sock_fprog *filter;
} s_spawn_t;

/* Bound into every VM's fresh /dev from the host's. */
static const char *const s_devs[] = {"null", "zero", "full", "random", "urandom", "tty"};
/* Host directories a VM's root gets read-only when its image has none. */
static const char *const s_sysdirs[] = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"};

static void s_report(int fd, int kind, int value, int step, uint64_t start_time)
{
    s_msg_t m = {.kind = kind, .value = value, .step = step, .start_time = start_time};
    spawn_write_all(fd, &m, sizeof m);
}

/* Best effort: a network namespace starts with lo down. */
static void s_lo_up(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    memcpy(ifr.ifr_name, "lo", 3);
    if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ioctl(fd, SIOCSIFFLAGS, &ifr);
    }
    close(fd);
}

/* Attach the disk image to a free loop device (autoclear: it goes with
 * the last mount) and mount it on the disk directory. Runs in pid 1, in
 * the VM's new mount namespace: only syscalls. 0 / -1 with errno. */
static int s_mount_disk(const s_spawn_t *sp)
{
    int img = open(sp->img, O_RDWR | O_CLOEXEC);
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    int rc = -1;
    if (img < 0 || ctl < 0)
        goto out;
    for (int i = 0; i < S_LOOP_TRIES && rc; i++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            goto out;
        char dev[32] = "/dev/loop";
        dev[9 + proc_utoa((uint64_t)n, dev + 9)] = 0;
        int lfd = open(dev, O_RDWR | O_CLOEXEC);
        if (lfd < 0)
            goto out;
        struct loop_config cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.fd = (uint32_t)img;
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(lfd, LOOP_CONFIGURE, &cfg)) {
            close(lfd);
            if (errno == EBUSY)
                continue; /* another spawn took it first */
            goto out;
        }
        rc = mount(dev, sp->disk, "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, "noinit_itable");
        int e = errno;
        if (rc)
            ioctl(lfd, LOOP_CLR_FD, 0);
        close(lfd);
        errno = e;
        if (rc)
            goto out;
    }
out : {
    int e = errno;
    if (img >= 0)
        close(img);
    if (ctl >= 0)
        close(ctl);
    errno = e;
}
    return rc;
}

/* Create a file (0, or -1 with errno; an existing one is kept). */
static int s_put_file(const char *path, const char *text, mode_t mode)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return errno == EEXIST ? 0 : -1;
    size_t len = strlen(text);
    int rc = write(fd, text, len) == (ssize_t)len ? 0 : -1;
    close(fd);
    return rc;
}

/* A directory of the VM's root that pid 1 mounts on or writes into, while
 * the host's tree is still its root: whatever else is there (a symlink the
 * VM left in its upper layer, which would lead outside) is removed first.
 * 0, or -1 with errno. */
static int s_own_dir(const char *name)
{
    struct stat sb;
    if (lstat(name, &sb) == 0 && !S_ISDIR(sb.st_mode) && unlink(name))
        return -1;
    if (mkdir(name, 0755) && errno != EEXIST)
        return -1;
    if (lstat(name, &sb) || !S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    return 0;
}

/* In pid 1, before the overlay: path a directory of the given owner and
 * mode, whatever the VM left there (a file, a symlink) removed first. No
 * process of the VM runs while pid 1 does this (the disk is mounted only
 * in pid 1's new mount namespace), so what lstat saw stays. 0, or -1 with
 * errno. */
static int s_layer_dir(const char *path, mode_t mode, uid_t uid, gid_t gid)
{
    struct stat sb;
    if (lstat(path, &sb) == 0 && !S_ISDIR(sb.st_mode) && unlink(path))
        return -1;
    if (mkdir(path, mode) && errno != EEXIST)
        return -1;
    if (lstat(path, &sb) || !S_ISDIR(sb.st_mode)) {
        errno = ENOTDIR;
        return -1;
    }
    if ((sb.st_uid != uid || sb.st_gid != gid) && lchown(path, uid, gid))
        return -1;
    return (sb.st_mode & 07777) != mode ? chmod(path, mode) : 0;
}

/* The overlay's upper and work directories on the VM's mounted disk:
 * .root is the host's root's, 0700, so the VM (whose ids are others)
 * cannot enter it, only rename it away from /disk (then the next start
 * makes an empty one: its root starts again from the image); upper, the
 * merged tree's root directory, is the VM root's. */
static int s_root_layer(const s_spawn_t *sp)
{
    if (s_layer_dir(sp->layer, 0700, 0, 0) ||
        s_layer_dir(sp->upper, 0755, sp->root_uid, sp->root_gid) ||
        s_layer_dir(sp->work, 0700, 0, 0))
        return -1;
    return 0;
}

/* In pid 1, the working directory the VM's merged root: the host system
 * directories, /etc, /dev, /tmp and the disk's mount point. Only syscalls;
 * no path it follows is one the VM could have made a symlink. */
static int s_populate_root(const s_spawn_t *sp)
{
    for (int i = 0; i < sp->n_sys; i++) {
        const char *n = sp->sys[i].name;
        if (sp->sys[i].link[0]) {
            if (symlink(sp->sys[i].link, n) && errno != EEXIST)
                return -1;
            continue;
        }
        if (s_own_dir(n))
            return -1;
        if (mount(sp->sys[i].host, n, NULL, MS_BIND | MS_REC, NULL) ||
            mount(NULL, n, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL))
            return -1;
    }
    if (sp->make_etc) {
        if (s_own_dir("etc"))
            return -1;
        if (s_put_file("etc/passwd", sp->passwd, 0644) ||
            s_put_file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0644) ||
            s_put_file("etc/hosts", "127.0.0.1 localhost\n::1 localhost\n", 0644))
            return -1;
    }
    static const char *const dirs[] = {"proc", "dev", "tmp", "disk"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++)
        if (s_own_dir(dirs[i]))
            return -1;
    if (mount("tmpfs", "dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=64k,nr_inodes=64"))
        return -1;
    for (size_t i = 0; i < sizeof s_devs / sizeof *s_devs; i++) {
        char host[32] = "/dev/", in[32] = "dev/";
        memcpy(host + 5, s_devs[i], strlen(s_devs[i]) + 1);
        memcpy(in + 4, s_devs[i], strlen(s_devs[i]) + 1);
        if (s_put_file(in, "", 0666) || mount(host, in, NULL, MS_BIND, NULL))
            return -1;
    }
    if (symlink("/proc/self/fd", "dev/fd") || symlink("/proc/self/fd/0", "dev/stdin") ||
        symlink("/proc/self/fd/1", "dev/stdout") || symlink("/proc/self/fd/2", "dev/stderr"))
        return -1;
    if (mount("tmpfs", "tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=64m,nr_inodes=4096"))
        return -1;
    if (mount(sp->disk, "disk", NULL, MS_BIND | MS_REC, NULL))
        return -1;
    return 0;
}

/* Write a sysctl of pid 1's namespaces. 0, or -1 with errno. */
static int s_put_sysctl(const char *path, const char *value)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t len = strlen(value);
    int rc = write(fd, value, len) == (ssize_t)len ? 0 : -1;
    int e = errno;
    close(fd);
    errno = e;
    return rc;
}

/* pid 1 of the VM. Never returns. It first waits until the intermediate
 * has written the pidfile, makes its own mount namespace and root (the
 * intermediate stays in the host's, where it writes the uid/gid maps), and
 * as the last privileged step enters a new user namespace, tells the
 * intermediate (up_fd) and waits for the maps (ack_fd). */
static void s_vm_init(const s_spawn_t *sp, int wfd, int go_fd, int up_fd, int ack_fd)
{
    int step = 4;
    char go;
    ssize_t got;
    do
        got = read(go_fd, &go, 1);
    while (got < 0 && errno == EINTR);
    close(go_fd);
    if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
        goto fail;
    step = 12;
    if (s_mount_disk(sp))
        goto fail;
    /* a disk made for a VM without a user namespace: its root to the VM's root */
    struct stat sb;
    if (stat(sp->disk, &sb) || (sb.st_uid == 0 && chown(sp->disk, sp->root_uid, sp->root_gid)))
        goto fail;
    step = 13;
    if (s_root_layer(sp) ||
        mount("overlay", sp->merged, "overlay", MS_NOSUID | MS_NODEV, sp->ovl_opts))
        goto fail;
    step = 14;
    if (chdir(sp->merged) || s_populate_root(sp))
        goto fail;
    step = 15;
    if (syscall(SYS_pivot_root, ".", ".") || umount2(".", MNT_DETACH) || chdir("/"))
        goto fail;
    step = 5;
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL))
        goto fail;
    step = 6;
    if (sethostname(sp->hostname, strlen(sp->hostname)))
        goto fail;
    s_lo_up();
    /* its root owns no capability over its network namespace (the host's
     * user namespace owns it): every port of its own stack is its to bind */
    step = 20;
    if (s_put_sysctl("/proc/sys/net/ipv4/ip_unprivileged_port_start", "0"))
        goto fail;
    step = 7;
    if (chdir("/disk"))
        goto fail;
    step = 16;
    if (unshare(CLONE_NEWUSER) || write(up_fd, "u", 1) != 1)
        goto fail;
    close(up_fd);
    do
        got = read(ack_fd, &go, 1);
    while (got < 0 && errno == EINTR);
    close(ack_fd);
    step = 17;
    if (got != 1) {
        errno = EPROTO;
        goto fail;
    }
    step = 18;
    if (vmjail_bound())
        goto fail;
    step = 8;
    /* The pipe goes to fd 3 (close-on-exec), stdio to /dev/null and the
     * console; nothing else of the worker leaks into the VM. */
    /* Any of them may sit on 0..3 (a worker started with closed stdio),
     * so lift them above first, then place them. */
    int w = fcntl(wfd, F_DUPFD_CLOEXEC, 10);
    int con = fcntl(sp->console_fd, F_DUPFD_CLOEXEC, 10);
    int nul = fcntl(sp->null_fd, F_DUPFD_CLOEXEC, 10);
    if (w < 0 || con < 0 || nul < 0)
        goto fail;
    wfd = w;
    if (dup2(nul, 0) < 0 || dup2(con, 1) < 0 || dup2(con, 2) < 0 || dup3(w, 3, O_CLOEXEC) < 0)
        goto fail;
    wfd = 3;
    closefrom(4);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    step = 11;
    if (sp->drop) {
        /* the user's own id is all the namespace maps: 0 stays out of reach */
        if (setgroups(0, NULL) || setgid(sp->gid) || setuid(sp->uid) ||
            prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || setuid(0) != -1)
            goto fail;
    } else if (setgroups(0, NULL) || setresgid(0, 0, 0) || setresuid(0, 0, 0)) {
        goto fail;
    }
    step = 19;
    if (vmjail_confine(sp->filter))
        goto fail;
    step = 9;
    execve(sp->prog, sp->argv, sp->envp);
fail:
    s_report(wfd, S_MSG_ERR, errno, step, 0);
    _exit(127);
}

/* In the intermediate: write "map" to /proc/<pid>/<file>. 0 / -1. */
static int s_write_map(pid_t pid, const char *file, const char *map)
{
    char path[64] = "/proc/";
    size_t n = 6 + proc_utoa((uint64_t)pid, path + 6);
    path[n++] = '/';
    memcpy(path + n, file, strlen(file) + 1);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t w = write(fd, map, strlen(map));
    int e = errno;
    close(fd);
    errno = e;
    return w == (ssize_t)strlen(map) ? 0 : -1;
}

/* The intermediate: new namespaces, fork pid 1, pidfile, report. */
static void s_intermediate(const s_spawn_t *sp, int wfd)
{
    int step = 1;
    if (setsid() < 0)
        goto fail;
    step = 2;
    if (unshare(CLONE_NEWUTS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC))
        goto fail;
    step = 3;
    int go[2], up[2], ack[2];
    if (pipe2(go, O_CLOEXEC) || pipe2(up, O_CLOEXEC) || pipe2(ack, O_CLOEXEC))
        goto fail;
    pid_t pid = fork();
    if (pid < 0)
        goto fail;
    if (pid == 0) {
        close(go[1]);
        close(up[0]);
        close(ack[1]);
        s_vm_init(sp, wfd, go[0], up[1], ack[0]);
    }
    close(go[0]);
    close(up[1]);
    close(ack[0]);
    char state;
    uint64_t start_time;
    step = 10;
    if (proc_stat_read(pid, &state, &start_time)) {
        kill(pid, SIGKILL);
        goto fail;
    }
    if (sp->delay_ms > 0)
        spawn_sleep_ms(sp->delay_ms);
    char line[64];
    size_t n = proc_utoa((uint64_t)pid, line);
    line[n++] = ' ';
    n += proc_utoa(start_time, line + n);
    line[n++] = '\n';
    int fd = open(sp->pidfile, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd >= 0) {
        spawn_write_all(fd, line, n);
        close(fd);
    }
    close(go[1]); /* pid 1 may make its mounts now */
    /* pid 1 in its user namespace: map it. EOF: pid 1 failed and reported. */
    struct pollfd pfd = {.fd = up[0], .events = POLLIN};
    char u;
    int ready = poll(&pfd, 1, S_SPAWN_TIMEOUT_MS);
    if (ready <= 0 || read(up[0], &u, 1) != 1) {
        kill(pid, SIGKILL);
        if (ready > 0)
            _exit(1);
        errno = ETIMEDOUT;
        step = 16;
        goto fail;
    }
    step = 17;
    if (s_write_map(pid, "uid_map", sp->uid_map) || s_write_map(pid, "gid_map", sp->gid_map) ||
        write(ack[1], "m", 1) != 1) {
        kill(pid, SIGKILL);
        goto fail;
    }
    close(ack[1]);
    s_report(wfd, S_MSG_PID, pid, 0, start_time);
    _exit(0);
fail:
    s_report(wfd, S_MSG_ERR, errno, step, 0);
    _exit(1);
}

/* Copy the file image src to dir/run (executable), through a temporary
 * name. 0 / -1 with err. */
static int s_copy_image(const char *src, const char *dir, char *err, size_t errlen)
{
    char dst[4200], tmp[4200];
    if (snprintf(dst, sizeof dst, "%s/run", dir) >= (int)sizeof dst ||
        snprintf(tmp, sizeof tmp, "%s/.run.new", dir) >= (int)sizeof tmp) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int out = in < 0 ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0755);
    int rc = -1;
    if (in < 0 || out < 0) {
        snprintf(err, errlen, "copy the image %s: %s", src, strerror(errno));
        goto out;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(in, buf, sizeof buf);
        if (n == 0)
            break;
        if (n < 0 || write(out, buf, (size_t)n) != n) {
            snprintf(err, errlen, "copy the image %s: %s", src,
                     n < 0 ? strerror(errno) : "short write");
            goto out;
        }
    }
    if (fchmod(out, 0755) || rename(tmp, dst)) {
        snprintf(err, errlen, "copy the image to %s: %s", dst, strerror(errno));
        goto out;
    }
    rc = 0;
out:
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    if (rc)
        unlink(tmp);
    return rc;
}

/* The VM's root: lower = the image's directory (a directory image) or
 * <vm>/root/image holding a copy of a file image as `run`; upper and work
 * of the overlay in .root of the VM's disk (pid 1 makes them once it has
 * mounted the disk); <vm>/root/mnt where pid 1 mounts the overlay. The
 * program is /run inside. */
static int s_build_root(const engine_ctx_t *ctx, const vm_t *vm, s_spawn_t *sp, char *err,
                        size_t errlen)
{
    char root[4096], image[4096], disk[4096], lower[4200];
    if (engine_vm_path(ctx, vm->vm_id, "root", root, sizeof root) ||
        engine_vm_path(ctx, vm->vm_id, "disk", disk, sizeof disk) ||
        snprintf(image, sizeof image, "%s/%s", ctx->images_dir, vm->image) >= (int)sizeof image) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    if (snprintf(sp->layer, sizeof sp->layer, "%s/.root", disk) >= (int)sizeof sp->layer ||
        snprintf(sp->upper, sizeof sp->upper, "%s/upper", sp->layer) >= (int)sizeof sp->upper ||
        snprintf(sp->work, sizeof sp->work, "%s/work", sp->layer) >= (int)sizeof sp->work ||
        snprintf(sp->merged, sizeof sp->merged, "%s/mnt", root) >= (int)sizeof sp->merged) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    if (s_mkdir(root) || s_mkdir(sp->merged)) {
        snprintf(err, errlen, "create %s: %s", root, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (stat(image, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        snprintf(lower, sizeof lower, "%s", image);
    } else {
        if (snprintf(lower, sizeof lower, "%s/image", root) >= (int)sizeof lower) {
            snprintf(err, errlen, "state path too long");
            return -1;
        }
        if (s_mkdir(lower) || s_copy_image(sp->prog, lower, err, errlen))
            return -1;
    }
    /* overlayfs options separate with ',' and ':': such a path cannot be said */
    if (strpbrk(lower, ",:\\") || strpbrk(sp->upper, ",:\\") || strpbrk(sp->work, ",:\\")) {
        snprintf(err, errlen, "the image or state path has ',', ':' or '\\': %s", lower);
        return -1;
    }
    if (snprintf(sp->ovl_opts, sizeof sp->ovl_opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower,
                 sp->upper, sp->work) >= (int)sizeof sp->ovl_opts) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    snprintf(sp->prog, sizeof sp->prog, "/run");
    sp->n_sys = 0;
    for (size_t i = 0; i < sizeof s_sysdirs / sizeof *s_sysdirs; i++) {
        char host[24], in[4300];
        snprintf(host, sizeof host, "/%s", s_sysdirs[i]);
        snprintf(in, sizeof in, "%s/%s", lower, s_sysdirs[i]);
        if (lstat(in, &sb) == 0 || lstat(host, &sb))
            continue; /* the image has its own, or the host none */
        int k = sp->n_sys;
        snprintf(sp->sys[k].name, sizeof sp->sys[k].name, "%s", s_sysdirs[i]);
        snprintf(sp->sys[k].host, sizeof sp->sys[k].host, "/%s", s_sysdirs[i]);
        sp->sys[k].link[0] = 0;
        if (S_ISLNK(sb.st_mode)) {
            ssize_t n = readlink(host, sp->sys[k].link, sizeof sp->sys[k].link - 1);
            if (n <= 0)
                continue;
            sp->sys[k].link[n] = 0;
        } else if (!S_ISDIR(sb.st_mode)) {
            continue;
        }
        sp->n_sys++;
    }
    char etc[4300];
    snprintf(etc, sizeof etc, "%s/etc", lower);
    sp->make_etc = lstat(etc, &sb) != 0;
    return 0;
}

static int s_build(const engine_ctx_t *ctx, const vm_t *vm, s_spawn_t *sp, char *err, size_t errlen)
{
    if (images_resolve(ctx->images_dir, vm->image, sp->prog, sizeof sp->prog, err, errlen))
        return -1;
    s_root_ids(ctx, &sp->root_uid, &sp->root_gid);
    if (s_build_root(ctx, vm, sp, err, errlen))
        return -1;
    sp->filter = vmjail_filter(err, errlen);
    if (!sp->filter)
        return -1;
    if (ctx->vm_user) {
        snprintf(sp->uid_map, sizeof sp->uid_map, "%u %u 1\n", (unsigned)ctx->vm_uid,
                 (unsigned)ctx->vm_uid);
        snprintf(sp->gid_map, sizeof sp->gid_map, "%u %u 1\n", (unsigned)ctx->vm_gid,
                 (unsigned)ctx->vm_gid);
        snprintf(sp->passwd, sizeof sp->passwd, "vm:x:%u:%u:vm:/disk:/bin/sh\n",
                 (unsigned)ctx->vm_uid, (unsigned)ctx->vm_gid);
    } else {
        snprintf(sp->uid_map, sizeof sp->uid_map, "0 %u %u\n", (unsigned)sp->root_uid,
                 VMJAIL_ID_COUNT);
        snprintf(sp->gid_map, sizeof sp->gid_map, "0 %u %u\n", (unsigned)sp->root_gid,
                 VMJAIL_ID_COUNT);
        snprintf(sp->passwd, sizeof sp->passwd, "root:x:0:0:root:/disk:/bin/sh\n");
    }
    char console[4096];
    if (engine_vm_path(ctx, vm->vm_id, "disk", sp->disk, sizeof sp->disk) ||
        engine_vm_path(ctx, vm->vm_id, "disk.img", sp->img, sizeof sp->img) ||
        engine_vm_path(ctx, vm->vm_id, "pid", sp->pidfile, sizeof sp->pidfile) ||
        engine_vm_path(ctx, vm->vm_id, "console.log", console, sizeof console)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    snprintf(sp->hostname, sizeof sp->hostname, "vm-%u", vm->vm_id);
    snprintf(sp->env_id, sizeof sp->env_id, "TTFLEET_VM_ID=%u", vm->vm_id);
    snprintf(sp->env_ip, sizeof sp->env_ip, "TTFLEET_VM_IP=%s", vm->ip);
    snprintf(sp->env_mac, sizeof sp->env_mac, "TTFLEET_VM_MAC=%s", vm->mac);
    snprintf(sp->env_name, sizeof sp->env_name, "TTFLEET_VM_ENV=%s", vm->env);
    size_t off = (size_t)snprintf(sp->env_ports, sizeof sp->env_ports, "TTFLEET_VM_PORTS=");
    for (uint32_t i = 0; i < vm->n_ports && off < sizeof sp->env_ports; i++)
        off += (size_t)snprintf(sp->env_ports + off, sizeof sp->env_ports - off, "%s%u",
                                i ? "," : "", vm->ports[i].guest);
    sp->argv[0] = sp->prog;
    sp->drop = ctx->vm_user != NULL;
    sp->uid = ctx->vm_uid;
    sp->gid = ctx->vm_gid;
    sp->argv[1] = NULL;
    const char *delay = getenv("TTFLEET_SPAWN_DELAY_MS");
    sp->delay_ms = delay ? atoi(delay) : 0;
    if (sp->delay_ms < 0 || sp->delay_ms > 10000)
        sp->delay_ms = 0;
    int e = 0;
    sp->envp[e++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    sp->envp[e++] = "HOME=/";
    sp->envp[e++] = sp->env_id;
    sp->envp[e++] = sp->env_ip;
    sp->envp[e++] = sp->env_mac;
    sp->envp[e++] = sp->env_ports;
    sp->envp[e++] = sp->env_name;
    sp->envp[e] = NULL;
    /* through the bounded logger (console.h): a VM may write without end */
    sp->console_fd = console_open(console, err, errlen);
    if (sp->console_fd < 0)
        return -1;
    sp->null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (sp->null_fd < 0) {
        snprintf(err, errlen, "open /dev/null: %s", strerror(errno));
        close(sp->console_fd);
        return -1;
    }
    return 0;
}

/* The VM's pid namespace, or 0 if it is unknown or is the worker's own
 * (then only pid itself may be signalled). */
static uint64_t s_vm_ns(pid_t pid)
{
    uint64_t ns = proc_pidns(pid);
    return ns && ns != proc_pidns(getpid()) ? ns : 0;
}

static void s_signal_vm(pid_t pid, int sig)
{
    uint64_t ns = s_vm_ns(pid);
    if (ns)
        proc_signal_ns(ns, sig);
    else
        kill(pid, sig);
}

/* Stop the process pid/start_time: TERM, bounded wait, KILL. asked_ms:
 * when stop_begin already sent the TERM (0 = not yet); the grace counts
 * from then. */
static int s_kill_vm(const engine_ctx_t *ctx, pid_t pid, uint64_t start_time, int64_t asked_ms,
                     char *err, size_t errlen)
{
    if (!proc_alive(pid, start_time)) {
        waitpid(pid, NULL, WNOHANG);
        return 0;
    }
    /* pid 1 gets SIGTERM only if it has a handler at the moment it is
     * sent; a VM stopped right after its start may not have installed
     * one yet, so the wait re-sends it once pid 1 catches it. */
    bool caught = asked_ms ? true : proc_catches(pid, SIGTERM);
    if (!asked_ms) {
        s_signal_vm(pid, SIGTERM);
        s_signal_vm(pid, SIGCONT);
    }
    int64_t deadline = (asked_ms ? asked_ms : tt_mono_ms()) + ctx->stop_timeout_ms;
    for (;;) {
        waitpid(pid, NULL, WNOHANG);
        if (!proc_alive(pid, start_time))
            return 0;
        if (tt_mono_ms() >= deadline)
            break;
        if (!caught && proc_catches(pid, SIGTERM)) {
            caught = true;
            kill(pid, SIGTERM);
        }
        spawn_sleep_ms(10);
    }
    kill(pid, SIGKILL);
    if (spawn_wait_gone(pid, start_time, S_KILL_TIMEOUT_MS) == 0)
        return 0;
    snprintf(err, errlen, "VM process %d did not exit after SIGKILL", (int)pid);
    return -1;
}

static void s_forget(const engine_ctx_t *ctx, vm_t *vm)
{
    char pidfile[4096];
    if (engine_vm_path(ctx, vm->vm_id, "pid", pidfile, sizeof pidfile) == 0)
        unlink(pidfile);
    vm->pid = 0;
    vm->start_time = 0;
}

static int s_stop(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    int64_t asked = vm->stop_asked_ms;
    vm->stop_asked_ms = 0;
    vm->stop_flags = 0;
    if (vm->pid && s_kill_vm(ctx, vm->pid, vm->start_time, asked, err, errlen))
        return -1;
    s_forget(ctx, vm);
    return 0;
}

/* The non-blocking stop (see the top of the file). stop_flags bit 0: pid 1
 * had a SIGTERM handler when it was sent, so it got it. */
static void s_stop_begin(const engine_ctx_t *ctx, vm_t *vm)
{
    if (ctx->stop_timeout_ms <= 0 || !vm->pid || !proc_alive(vm->pid, vm->start_time))
        return;
    vm->stop_flags = proc_catches(vm->pid, SIGTERM) ? 1 : 0;
    s_signal_vm(vm->pid, SIGTERM);
    s_signal_vm(vm->pid, SIGCONT);
    vm->stop_asked_ms = tt_mono_ms();
}

static bool s_stop_poll(const engine_ctx_t *ctx, vm_t *vm)
{
    if (!vm->pid)
        return true;
    waitpid(vm->pid, NULL, WNOHANG);
    if (!proc_alive(vm->pid, vm->start_time))
        return true;
    if (!(vm->stop_flags & 1) && proc_catches(vm->pid, SIGTERM)) {
        vm->stop_flags |= 1;
        kill(vm->pid, SIGTERM);
    }
    return false;
}

/* SIGKILL to pid 1 ends the whole pid namespace. */
static void s_stop_force(const engine_ctx_t *ctx, vm_t *vm)
{
    if (vm->pid && proc_alive(vm->pid, vm->start_time))
        kill(vm->pid, SIGKILL);
}

static void s_kill_stray(const engine_ctx_t *ctx, vm_t *vm);

static int s_start(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (vm->pid && proc_alive(vm->pid, vm->start_time))
        return 0; /* already running: starting is idempotent */
    /* never two trees for one VM: a live process its pidfile names (from a
     * start no row recorded) goes first */
    s_kill_stray(ctx, vm);
    int lock = engine_spawn_lock(ctx, vm->vm_id, ENGINE_SPAWN_LOCK_MS, err, errlen);
    if (lock == -2)
        snprintf(err, errlen, "vm %u has no directory (prepare its disk first)", vm->vm_id);
    if (lock < 0)
        return -1;
    s_spawn_t *sp = calloc(1, sizeof *sp);
    if (!sp) {
        snprintf(err, errlen, "out of memory");
        close(lock);
        return -1;
    }
    int rc = -1;
    if (s_build(ctx, vm, sp, err, errlen)) {
        free(sp);
        close(lock);
        return -1;
    }
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out;
    }
    pid_t mid = fork();
    if (mid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        goto out;
    }
    if (mid == 0) {
        close(pfd[0]);
        s_intermediate(sp, pfd[1]);
    }
    close(pfd[1]);
    tt_crash_point("worker.mid_spawn"); /* the spawner runs, nothing recorded */
    int64_t deadline = tt_mono_ms() + S_SPAWN_TIMEOUT_MS + sp->delay_ms;
    s_msg_t m;
    int got = spawn_read_full(pfd[0], &m, sizeof m, deadline);
    waitpid(mid, NULL, 0); /* it exits right after reporting */
    if (got != 1 || m.kind != S_MSG_PID) {
        int step = got == 1 && m.step >= 0 && m.step < S_STEPS ? m.step : 0;
        snprintf(err, errlen, "spawn failed at %s: %s", got == 1 ? s_step_names[step] : "report",
                 got == 1 ? strerror(m.value) : "no answer from the spawner");
        close(pfd[0]);
        goto out;
    }
    pid_t pid = m.value;
    uint64_t start_time = m.start_time;
    /* EOF: execve closed the pipe. A record: pid 1 failed before exec. */
    got = spawn_read_full(pfd[0], &m, sizeof m, deadline);
    close(pfd[0]);
    if (got != 0) {
        if (got == 1 && m.kind == S_MSG_ERR && m.step >= 0 && m.step < S_STEPS)
            snprintf(err, errlen, "VM init failed at %s: %s", s_step_names[m.step],
                     strerror(m.value));
        else
            snprintf(err, errlen, "VM init did not report");
        char e2[64];
        s_kill_vm(ctx, pid, start_time, 0, e2, sizeof e2);
        s_forget(ctx, vm);
        goto out;
    }
    vm->pid = pid;
    vm->start_time = start_time;
    rc = 0;
out:
    close(sp->console_fd);
    close(sp->null_fd);
    close(lock); /* the spawner has exited: nothing holds it now */
    free(sp);
    return rc;
}

/* kill() returns before a SIGSTOP/SIGCONT takes effect: report paused or
 * running only once pid 1 really is (bounded wait). 0 / -1. */
static int s_wait_stopped(const vm_t *vm, bool stopped, char *err, size_t errlen)
{
    int64_t deadline = tt_mono_ms() + S_KILL_TIMEOUT_MS;
    for (;;) {
        char state;
        uint64_t st;
        if (proc_stat_read(vm->pid, &state, &st) || st != vm->start_time || state == 'Z') {
            snprintf(err, errlen, "VM process %d exited", (int)vm->pid);
            return -1;
        }
        if ((state == 'T' || state == 't') == stopped)
            return 0;
        if (tt_mono_ms() >= deadline)
            break;
        spawn_sleep_ms(1);
    }
    snprintf(err, errlen, "VM process %d did not %s", (int)vm->pid, stopped ? "stop" : "continue");
    return -1;
}

static int s_pause(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (!vm->pid || !proc_alive(vm->pid, vm->start_time)) {
        snprintf(err, errlen, "VM process is not running");
        return -1;
    }
    /* Twice: a process forked while the first pass ran is caught by the
     * second (its parent is stopped by then). */
    s_signal_vm(vm->pid, SIGSTOP);
    s_signal_vm(vm->pid, SIGSTOP);
    if (s_wait_stopped(vm, true, err, errlen) == 0)
        return 0;
    s_signal_vm(vm->pid, SIGCONT);
    return -1;
}

static int s_resume(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (!vm->pid || !proc_alive(vm->pid, vm->start_time)) {
        snprintf(err, errlen, "VM process is not running");
        return -1;
    }
    s_signal_vm(vm->pid, SIGCONT);
    return s_wait_stopped(vm, false, err, errlen);
}

static bool s_is_alive(const engine_ctx_t *ctx, const vm_t *vm)
{
    return vm->pid && proc_alive(vm->pid, vm->start_time);
}

/* A process named by the pidfile that is alive but is not the one the
 * row records was started by a worker that died before its commit: it is
 * ours (pid and start time match the file we own), and no one knows it. */
static void s_kill_stray(const engine_ctx_t *ctx, vm_t *vm)
{
    pid_t pid;
    uint64_t st;
    if (engine_pidfile_stray(ctx, vm, &pid, &st) == 0) {
        char err[128];
        zsys_warning("vm %u: process %d from an uncommitted start: stopping it", vm->vm_id,
                     (int)pid);
        s_kill_vm(ctx, pid, st, 0, err, sizeof err);
    }
}

static int s_adopt(const engine_ctx_t *ctx, vm_t *vm)
{
    s_kill_stray(ctx, vm);
    if (vm->pid && proc_alive(vm->pid, vm->start_time))
        return 0;
    s_forget(ctx, vm);
    return -1;
}

static int s_destroy(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    s_kill_stray(ctx, vm);
    if (s_stop(ctx, vm, err, errlen))
        return -1;
    return engine_vm_rmdir(ctx, vm->vm_id, err, errlen);
}

const engine_t engine_process = {
    .name = "process",
    /* host-local programs only: no catalog images */
    .caps = TT_CAP_GUEST | TT_CAP_NIC_VETH,
    .guest = &engine_process_guest,
    .prepare_disk = s_prepare_disk,
    .start = s_start,
    .stop = s_stop,
    .pause = s_pause,
    .resume = s_resume,
    .is_alive = s_is_alive,
    .adopt = s_adopt,
    .destroy = s_destroy,
    .stop_begin = s_stop_begin,
    .stop_poll = s_stop_poll,
    .stop_force = s_stop_force,
};
