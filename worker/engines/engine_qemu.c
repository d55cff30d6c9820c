/*
 * engine_qemu: a VM is a qemu-system-x86_64 process.
 *
 * Image layout: <images>/NAME is a directory holding
 *     kernel + initrd      booted directly (-kernel/-initrd), the kernel
 *                          command line carries the VM's identity and
 *                          network (tt.id, tt.ip, tt.prefix, tt.gw,
 *                          tt.ports, tt.env; see tools/guest/init), and/or
 *     disk.qcow2           a base disk: each VM boots from an overlay on it.
 * With neither, the image is not a qemu image. tools/mkguest.sh builds the
 * test guest (kernel + initrd) from Debian packages. Optional files:
 *     cmdline              kernel arguments appended to ours (root=/dev/vda)
 *     nocloud              the image runs cloud-init: every VM gets a NoCloud
 *                          seed (seed.iso, rebuilt by seed.c before each
 *                          start from the VM's identity and the tenant's
 *                          inputs kept in its directory) on a second virtio
 *                          disk. tools/mkimage-debian.sh builds such an image.
 * Every VM gets a virtio-serial port org.qemu.guest_agent.0 served on
 * qga.sock in its directory (qga.c talks to it).
 *
 * Per VM, under <state>/vms/<id>/: disk.qcow2 (a qcow2 overlay on the
 * base, or a blank qcow2, sized to the VM's disk with qemu-img; kept
 * across stop/start), disk.size (the MiB it was made or grown to),
 * console.log (+ console.log.1: the serial console, QEMU's stdout, written
 * by the bounded logger of console.h), qmp.sock (QMP), qga.sock (guest
 * agent), pid; for nocloud images instance-id, seed.iso, seed/ and the
 * tenant's ssh_keys and user-data (see seed.h).
 *
 * Every VM's RAM is the memory backend ram0 (anonymous memory for a cold
 * start: the cost of a plain -m), and every VM has a vmgenid device and a
 * virtio-rng, so any VM's device state can be saved and restored into
 * another QEMU of the same command line: memory snapshots
 * (engine_qemu_snap.c, docs/SNAPSHOTS.md) boot templates with a shared RAM
 * file, clones with that file mapped copy-on-write and a fresh generation
 * ID.
 *
 * QEMU runs with -sandbox on, -display none, -nodefaults: no VNC, no
 * monitor but the QMP unix socket, no listener at all except the host
 * forwards of the user network backend (on 127.0.0.1). It is started by
 * spawn_detached(), so it outlives the worker and is adopted again by pid
 * + start time, confirmed over QMP.
 *
 * Pause/resume = QMP stop/cont. Stop = QMP system_powerdown, wait up to
 * stop_timeout_ms for the guest to power off, then QMP quit (1 s), then
 * SIGKILL: every wait is bounded, so a stop costs the worker's loop at most
 * stop_timeout_ms + 3 s.
 *
 * Network, by the worker's backend: nft -> a tap tt<id> (made by net.c)
 * and an e1000 NIC with the VM's MAC; user -> slirp with a host forward
 * 127.0.0.1:public -> guest port per port (tcp and udp), restrict=on for
 * every VM (slirp with restrict=off maps 10.0.2.2 to the host's loopback:
 * a guest would reach host-local services), so no outgoing network and
 * deny-outgoing has nothing to add; forwards changed live over QMP
 * (hostfwd_add/remove);
 * the guest is 10.0.2.15/24 via 10.0.2.2 there, as each VM has its own
 * slirp; none -> no NIC.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "console.h"
#include "engine_qemu_snap.h"
#include "images.h"
#include "net.h"
#include "proc.h"
#include "qemu_envsnap.h"
#include "qmp.h"
#include "seed.h"
#include "spawn.h"

#define S_QMP_MS 2000
#define S_QUIT_MS 1000
#define S_KILL_MS 2000
#define S_IMG_MS 30000
#define S_MAX_ARGS 80

#define S_USER_IP "10.0.2.15"
#define S_USER_GW "10.0.2.2"

typedef struct {
    char dir[4000];
    char kernel[4096], initrd[4096], base[4096]; /* "" if the image lacks it */
    char cmdline[512]; /* the image's extra kernel arguments, "" if none */
    bool nocloud;      /* boots cloud-init from a NoCloud seed */
} s_image_t;

/* The image's kernel arguments: one line of [A-Za-z0-9=/._,:-] and spaces
 * (no quote can reach the command line). "" if there is no file. */
static int s_image_cmdline(const char *dir, char *buf, size_t len, char *err, size_t errlen)
{
    char path[4200];
    buf[0] = 0;
    snprintf(path, sizeof path, "%s/cmdline", dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = 0;
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
        buf[--n] = 0;
    for (ssize_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789=/._,:- ",
                    buf[i])) {
            snprintf(err, errlen,
                     "image %s: cmdline holds a character other than [A-Za-z0-9=/._,:-]", dir);
            return -1;
        }
    return 0;
}

static int s_image(const engine_ctx_t *ctx, const vm_t *vm, s_image_t *im, char *err, size_t errlen)
{
    memset(im, 0, sizeof *im);
    struct stat sb;
    if (!tt_name_valid(vm->image) || engine_image_dir(ctx, vm, im->dir, sizeof im->dir) ||
        stat(im->dir, &sb) || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "image '%s' is not a directory in %s", vm->image,
                 vm->image_digest[0] ? "the image cache" : ctx->images_dir);
        return -1;
    }
    if (snprintf(im->kernel, sizeof im->kernel, "%.4000s/kernel", im->dir) < 0 ||
        snprintf(im->initrd, sizeof im->initrd, "%.4000s/initrd", im->dir) < 0 ||
        snprintf(im->base, sizeof im->base, "%.4000s/disk.qcow2", im->dir) < 0)
        return -1;
    if (access(im->kernel, R_OK))
        im->kernel[0] = 0;
    if (access(im->initrd, R_OK))
        im->initrd[0] = 0;
    if (access(im->base, R_OK))
        im->base[0] = 0;
    if (!im->kernel[0] && !im->base[0]) {
        snprintf(err, errlen, "image '%s' has neither kernel nor disk.qcow2: not a qemu image",
                 vm->image);
        return -1;
    }
    char marker[4200];
    snprintf(marker, sizeof marker, "%s/nocloud", im->dir);
    im->nocloud = access(marker, F_OK) == 0;
    return s_image_cmdline(im->dir, im->cmdline, sizeof im->cmdline, err, errlen);
}

static int s_path(const engine_ctx_t *ctx, const vm_t *vm, const char *leaf, char *buf, size_t len,
                  char *err, size_t errlen)
{
    if (engine_vm_path(ctx, vm->vm_id, leaf, buf, len)) {
        snprintf(err, errlen, "state path too long");
        return -1;
    }
    return 0;
}

static long long s_read_size(const char *path)
{
    char buf[32] = "";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    return atoll(buf);
}

static void s_write_size(const char *path, uint32_t mib)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%u\n", mib);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0)
        return;
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w; /* only a hint: a missing size means "do not grow" */
    close(fd);
}

/* The VM's disk: made once (an overlay on the image's base disk, or blank)
 * and grown when the VM's disk size grew while it was stopped. */
static int s_prepare_disk(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    char vms[4096], dir[4096], disk[4096], size[4096];
    snprintf(vms, sizeof vms, "%s/vms", ctx->state_dir);
    if (s_path(ctx, vm, NULL, dir, sizeof dir, err, errlen) ||
        s_path(ctx, vm, "disk.qcow2", disk, sizeof disk, err, errlen) ||
        s_path(ctx, vm, "disk.size", size, sizeof size, err, errlen))
        return -1;
    if ((mkdir(vms, 0750) && errno != EEXIST) || (mkdir(dir, 0750) && errno != EEXIST)) {
        snprintf(err, errlen, "create %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!ctx->qemu_img) {
        snprintf(err, errlen, "qemu-img is not installed (Debian package qemu-utils)");
        return -1;
    }
    s_image_t im;
    if (s_image(ctx, vm, &im, err, errlen))
        return -1;
    char mib[32];
    snprintf(mib, sizeof mib, "%uM", vm->disk_mib);
    struct stat sb;
    if (stat(disk, &sb) == 0) {
        long long had = s_read_size(size);
        if (had >= 0 && had < vm->disk_mib) {
            char *argv[] = {(char *)ctx->qemu_img, "resize", "-q", disk, mib, NULL};
            if (spawn_run(argv, S_IMG_MS, err, errlen))
                return -1;
            s_write_size(size, vm->disk_mib);
        }
        return 0;
    }
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.new", disk);
    unlink(tmp);
    char *create_base[] = {(char *)ctx->qemu_img,
                           "create",
                           "-q",
                           "-f",
                           "qcow2",
                           "-F",
                           "qcow2",
                           "-b",
                           im.base,
                           tmp,
                           mib,
                           NULL};
    char *create_blank[] = {(char *)ctx->qemu_img, "create", "-q", "-f", "qcow2", tmp, mib, NULL};
    if (spawn_run(im.base[0] ? create_base : create_blank, S_IMG_MS, err, errlen)) {
        unlink(tmp);
        return -1;
    }
    /* made under a temporary name: a crash never leaves a half disk */
    if (rename(tmp, disk)) {
        snprintf(err, errlen, "rename %s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    s_write_size(size, vm->disk_mib);
    return 0;
}

/* The argv of one QEMU, with the storage its strings live in. */
typedef struct {
    char *argv[S_MAX_ARGS];
    int n;
    char store[16384];
    size_t used;
} s_args_t;

static void s_arg(s_args_t *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void s_arg(s_args_t *a, const char *fmt, ...)
{
    if (a->n >= S_MAX_ARGS - 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    size_t room = sizeof a->store - a->used;
    int n = vsnprintf(a->store + a->used, room, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= room)
        return;
    a->argv[a->n++] = a->store + a->used;
    a->argv[a->n] = NULL;
    a->used += (size_t)n + 1;
}

/* "hostfwd=tcp:127.0.0.1:P-IP:G,hostfwd=udp:..." for every port. */
static void s_hostfwds(const vm_t *vm, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = 0;
    for (uint32_t i = 0; i < vm->n_ports && off < len; i++)
        for (int u = 0; u < 2 && off < len; u++)
            off += (size_t)snprintf(buf + off, len - off, ",hostfwd=%s:127.0.0.1:%u-%s:%u",
                                    u ? "udp" : "tcp", vm->ports[i].public_port, S_USER_IP,
                                    vm->ports[i].guest);
}

/* The user backend binds every public port on the host's 127.0.0.1 (tcp
 * and udp). QEMU only says so on its console and exits, so check first and
 * fail the start with a reason: a port the broker handed out may be held
 * by another program (often an outgoing connection's ephemeral port: the
 * public range 40000..59999 lies inside Linux's default ephemeral range;
 * reserve it with net.ipv4.ip_local_reserved_ports). The check binds as
 * slirp does: SO_REUSEADDR for tcp (a TIME_WAIT leftover does not count),
 * none for udp (with it, another program's SO_REUSEADDR udp socket would
 * pass the check and still make QEMU exit). A port taken between this
 * check and QEMU's bind (a second worker on the machine) is caught by
 * s_start_check. */
static int s_ports_free(const vm_t *vm, char *err, size_t errlen)
{
    for (uint32_t i = 0; i < vm->n_ports; i++)
        for (int u = 0; u < 2; u++) {
            int fd = socket(AF_INET, (u ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
            if (fd < 0)
                continue;
            int one = 1;
            if (!u)
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            struct sockaddr_in sa = {.sin_family = AF_INET,
                                     .sin_port = htons((uint16_t)vm->ports[i].public_port),
                                     .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
            int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
            int e = errno;
            close(fd);
            if (rc) {
                snprintf(err, errlen,
                         "public port %u (%s) is in use on this host: %s (reserve "
                         "40000-59999 with net.ipv4.ip_local_reserved_ports)",
                         vm->ports[i].public_port, u ? "udp" : "tcp", strerror(e));
                return -1;
            }
        }
    return 0;
}

static int s_build(const engine_ctx_t *ctx, const vm_t *vm, const qemu_boot_t *boot, s_args_t *a,
                   char *err, size_t errlen)
{
    static const qemu_boot_t cold = {.kind = QBOOT_COLD};
    if (!boot)
        boot = &cold;
    s_image_t im;
    char dir[4096];
    if (s_image(ctx, vm, &im, err, errlen) || s_path(ctx, vm, NULL, dir, sizeof dir, err, errlen))
        return -1;
    if (strlen(dir) + sizeof "/qmp.sock" > 108) { /* qga.sock is as long */
        snprintf(err, errlen, "state path %s is too long for a unix socket", dir);
        return -1;
    }
    bool kvm = ctx->accel && strcmp(ctx->accel, "kvm") == 0;
    memset(a, 0, sizeof *a);
    s_arg(a, "%s", ctx->qemu);
    s_arg(a, "-name");
    s_arg(a, "vm-%u,process=ttvm-%u", vm->vm_id, vm->vm_id);
    s_arg(a, "-machine");
    s_arg(a, "pc,accel=%s,memory-backend=ram0", kvm ? "kvm" : "tcg");
    s_arg(a, "-cpu");
    s_arg(a, "%s", kvm ? "host" : "max");
    s_arg(a, "-smp");
    s_arg(a, "%u", vm->cpu);
    s_arg(a, "-m");
    s_arg(a, "%u", vm->mem_mib);
    /* the RAM is the backend ram0 for every VM, so a device state saved
     * from one kind names the RAM block another kind restores into */
    s_arg(a, "-object");
    if (boot->kind == QBOOT_TEMPLATE || boot->kind == QBOOT_CLONE)
        s_arg(a, "memory-backend-file,id=ram0,size=%uM,mem-path=%s,share=%s", vm->mem_mib,
              boot->ram_file, boot->kind == QBOOT_TEMPLATE ? "on" : "off");
    else
        s_arg(a, "memory-backend-ram,id=ram0,size=%uM", vm->mem_mib);
    s_arg(a, "-nodefaults");
    s_arg(a, "-no-user-config");
    s_arg(a, "-display");
    s_arg(a, "none");
    s_arg(a, "-sandbox");
    s_arg(a, "on");
    if (ctx->vm_user) {
        /* QEMU opens its files and tap as root, then becomes this user */
        s_arg(a, "-runas");
        s_arg(a, "%s", ctx->vm_user);
    }
    s_arg(a, "-qmp");
    s_arg(a, "unix:%s/qmp.sock,server=on,wait=off", dir);
    /* the serial console is QEMU's stdout: a pipe to the bounded logger of
     * console.c (a chardev file would grow without end) */
    s_arg(a, "-chardev");
    s_arg(a, "stdio,id=con0,signal=off");
    s_arg(a, "-serial");
    s_arg(a, "chardev:con0");
    s_arg(a, "-drive");
    s_arg(a, "file=%s/disk.qcow2,format=qcow2,if=virtio,cache=writeback", dir);
    if (im.nocloud) {
        s_arg(a, "-drive");
        s_arg(a, "file=%s/seed.iso,format=raw,if=virtio,readonly=on", dir);
    }
    s_arg(a, "-chardev");
    s_arg(a, "socket,id=qga0,path=%s/qga.sock,server=on,wait=off", dir);
    s_arg(a, "-device");
    s_arg(a, "virtio-serial-pci,id=vser0");
    s_arg(a, "-device");
    s_arg(a, "virtserialport,bus=vser0.0,chardev=qga0,name=org.qemu.guest_agent.0");
    /* a clone gets a new generation ID: the guest kernel reseeds its RNG */
    s_arg(a, "-device");
    s_arg(a, "vmgenid,guid=%s", boot->vmgenid ? boot->vmgenid : "auto");
    s_arg(a, "-device");
    s_arg(a, "virtio-rng-pci");
    if (boot->kind == QBOOT_CLONE || boot->kind == QBOOT_RESUME) {
        /* paused until the restore's cont: a half-restored guest never runs */
        s_arg(a, "-S");
        s_arg(a, "-incoming");
        s_arg(a, "defer");
    }
    const char *ip = vm->ip, *gw = NET_GATEWAY;
    int prefix = NET_PREFIX;
    if (ctx->net == NET_USER) {
        ip = S_USER_IP;
        gw = S_USER_GW;
        prefix = 24;
        char fwd[TT_MAX_PORTS_PER_VM * 2 * 64];
        s_hostfwds(vm, fwd, sizeof fwd);
        /* restrict=on for every VM, whatever deny-outgoing says: with
         * restrict=off slirp maps 10.0.2.2 to the host's 127.0.0.1, so a
         * guest would reach every host-local service (the broker's own
         * endpoints among them). The host forwards still work. */
        s_arg(a, "-netdev");
        s_arg(a, "user,id=n0,restrict=on%s", fwd);
    } else if (ctx->net == NET_NFT) {
        char ifname[16];
        net_ifname(vm->vm_id, ifname, sizeof ifname);
        s_arg(a, "-netdev");
        s_arg(a, "tap,id=n0,ifname=%s,script=no,downscript=no", ifname);
    }
    if (ctx->net == NET_USER || ctx->net == NET_NFT) {
        s_arg(a, "-device");
        s_arg(a, "e1000,netdev=n0,mac=%s", vm->mac);
    }
    if (im.kernel[0]) {
        char ports[TT_MAX_PORTS_PER_VM * 6 + 1] = "";
        size_t off = 0;
        for (uint32_t i = 0; i < vm->n_ports && off < sizeof ports; i++)
            off += (size_t)snprintf(ports + off, sizeof ports - off, "%s%u", i ? "," : "",
                                    vm->ports[i].guest);
        s_arg(a, "-kernel");
        s_arg(a, "%s", im.kernel);
        if (im.initrd[0]) {
            s_arg(a, "-initrd");
            s_arg(a, "%s", im.initrd);
        }
        /* every value was validated (ip, names of [A-Za-z0-9._-/]): no
         * space or quote can reach the guest's command line */
        s_arg(a, "-append");
        s_arg(a,
              "console=ttyS0 quiet panic=-1 tt.id=%u tt.ip=%s tt.prefix=%d tt.gw=%s tt.ports=%s "
              "tt.env=%s%s%s",
              vm->vm_id, ip, prefix, ctx->net == NET_NONE ? "" : gw, ports, vm->env,
              im.cmdline[0] ? " " : "", im.cmdline);
    }
    if (a->n >= S_MAX_ARGS - 1 || a->used >= sizeof a->store - 1) {
        snprintf(err, errlen, "qemu command line too long");
        return -1;
    }
    return 0;
}

static void s_kill_stray(const engine_ctx_t *ctx, vm_t *vm);
/* A nocloud image's seed, made again before every start: the tenant's
 * inputs kept in the VM directory, the VM's identity and network now. */
static int s_seed(const engine_ctx_t *ctx, const vm_t *vm, char *err, size_t errlen)
{
    s_image_t im;
    if (s_image(ctx, vm, &im, err, errlen))
        return -1;
    if (!im.nocloud)
        return 0;
    char dir[4096], iso[4200], work[4200], iid[64], host[64];
    if (s_path(ctx, vm, NULL, dir, sizeof dir, err, errlen))
        return -1;
    snprintf(iso, sizeof iso, "%s/seed.iso", dir);
    snprintf(work, sizeof work, "%s/seed", dir);
    if (seed_instance_id(dir, vm->vm_id, iid, sizeof iid, err, errlen))
        return -1;
    seed_hostname(vm->env, vm->vm_id, host, sizeof host);
    char **keys, *ud;
    size_t n_keys, ud_len;
    if (seed_inputs_load(dir, &keys, &n_keys, &ud, &ud_len, err, errlen))
        return -1;
    seed_spec_t spec = {.instance_id = iid,
                        .hostname = host,
                        .mac = vm->mac,
                        .dhcp = ctx->net != NET_NFT,
                        .ip = vm->ip,
                        .prefix = NET_PREFIX,
                        .gateway = NET_GATEWAY,
                        .keys = (const char *const *)keys,
                        .n_keys = n_keys,
                        .user_data = ud,
                        .user_data_len = ud_len};
    int rc = seed_build(&spec, work, iso, err, errlen);
    seed_inputs_free(keys, n_keys, ud);
    return rc;
}

/* The last line QEMU wrote about itself ("qemu-system-x86_64: ...") in
 * the console log, or "". The logger writes it after QEMU's exit, so look
 * a few times, bounded. */
static void s_qemu_said(const char *console, char *out, size_t outlen)
{
    out[0] = 0;
    for (int tries = 0; tries < 20 && !out[0]; tries++) {
        if (tries)
            poll(NULL, 0, 50);
        int fd = open(console, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        char buf[8192];
        struct stat sb;
        off_t at = fstat(fd, &sb) == 0 && sb.st_size > (off_t)sizeof buf - 1
                       ? sb.st_size - (off_t)sizeof buf + 1
                       : 0;
        ssize_t n = pread(fd, buf, sizeof buf - 1, at);
        close(fd);
        if (n <= 0)
            continue;
        buf[n] = 0;
        for (size_t i = 0; i < (size_t)n; i++)
            if (buf[i] == 0)
                buf[i] = ' ';
        char *line = NULL;
        for (char *p = strstr(buf, "qemu-system"); p; p = strstr(p + 1, "qemu-system"))
            line = p;
        if (line) {
            line[strcspn(line, "\r\n")] = 0;
            for (char *c = line; *c; c++)
                if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
                    *c = ' ';
            snprintf(out, outlen, "%s", line);
        }
    }
}

/* QEMU sets up its disks and host forwards before it serves QMP: wait
 * (bounded) for one QMP answer or for the process to go. A QEMU that
 * exits in that time failed its start; say why from its own words, and
 * name the public port when a host forward could not be set up, so the
 * broker can hand out another. A QEMU that stays up but does not answer
 * within the bound counts as started (the tick notices a later death). */
#define S_START_CHECK_MS 10000
static int s_start_check(const engine_ctx_t *ctx, vm_t *vm, const char *console, char *err,
                         size_t errlen)
{
    char sock[4096], status[32], e2[256];
    if (engine_vm_path(ctx, vm->vm_id, "qmp.sock", sock, sizeof sock))
        return 0;
    int64_t t0 = tt_mono_ms();
    while (proc_alive(vm->pid, vm->start_time)) {
        if (tt_mono_ms() - t0 >= S_START_CHECK_MS ||
            qmp_status(sock, 500, status, sizeof status, e2, sizeof e2) == 0)
            return 0;
        poll(NULL, 0, 50);
    }
    char said[512];
    s_qemu_said(console, said, sizeof said);
    const char *rule = strstr(said, "host forwarding rule '");
    unsigned port = 0;
    char proto[4] = "";
    if (rule && sscanf(rule, "host forwarding rule '%3[a-z]:127.0.0.1:%u-", proto, &port) == 2)
        snprintf(err, errlen,
                 "public port %u (%s) is in use on this host: qemu could not forward it and "
                 "exited (%.200s)",
                 port, proto, said);
    else
        snprintf(err, errlen, "qemu exited at start: %.300s",
                 said[0] ? said : "it wrote nothing (see the console log)");
    zsys_warning("vm %u: %s", vm->vm_id, err);
    vm->pid = 0;
    vm->start_time = 0;
    return -1;
}

int engine_qemu_spawn(const engine_ctx_t *ctx, vm_t *vm, const qemu_boot_t *boot, char *err,
                      size_t errlen)
{
    if (vm->pid && proc_alive(vm->pid, vm->start_time))
        return 0; /* already running: starting is idempotent */
    if (!ctx->qemu) {
        snprintf(err, errlen,
                 "qemu-system-x86_64 is not installed (Debian package qemu-system-x86)");
        return -1;
    }
    if (ctx->net == NET_USER && s_ports_free(vm, err, errlen))
        return -1;
    s_args_t *a = malloc(sizeof *a);
    if (!a) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char pidfile[4096], console[4096], sock[4096];
    int rc = -1;
    if (s_path(ctx, vm, "pid", pidfile, sizeof pidfile, err, errlen) ||
        s_path(ctx, vm, "console.log", console, sizeof console, err, errlen) ||
        s_path(ctx, vm, "qmp.sock", sock, sizeof sock, err, errlen) ||
        s_seed(ctx, vm, err, errlen) || s_build(ctx, vm, boot, a, err, errlen))
        goto out;
    unlink(sock);
    if (engine_vm_path(ctx, vm->vm_id, "qga.sock", sock, sizeof sock) == 0)
        unlink(sock);
    /* the guest's serial console and QEMU's own messages, through the
     * bounded logger (console.h) */
    int log = console_open(console, err, errlen);
    if (log < 0)
        goto out;
    int64_t t0 = tt_mono_ms();
    /* held by the spawner until the pidfile is written (engine.h) */
    s_kill_stray(ctx, vm);
    int lock = engine_spawn_lock(ctx, vm->vm_id, ENGINE_SPAWN_LOCK_MS, err, errlen);
    rc = lock < 0 ? -1
                  : spawn_detached(a->argv, pidfile, log, &vm->pid, &vm->start_time, err, errlen);
    if (lock >= 0)
        close(lock);
    close(log);
    if (rc == 0)
        zsys_info("vm %u: qemu (%s) exec'd as pid %d in %lld ms", vm->vm_id,
                  ctx->accel ? ctx->accel : "tcg", (int)vm->pid, (long long)(tt_mono_ms() - t0));
    if (rc == 0)
        rc = s_start_check(ctx, vm, console, err, errlen);
out:
    free(a);
    return rc;
}

static int s_start(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    return engine_qemu_spawn(ctx, vm, NULL, err, errlen);
}

static int s_qmp(const engine_ctx_t *ctx, const vm_t *vm, const char *cmd, int timeout_ms,
                 char *out, size_t outlen, char *err, size_t errlen)
{
    char sock[4096];
    if (s_path(ctx, vm, "qmp.sock", sock, sizeof sock, err, errlen))
        return -1;
    return qmp_call(sock, cmd, timeout_ms, out, outlen, err, errlen);
}

int engine_qemu_qmp(const engine_ctx_t *ctx, const vm_t *vm, const char *cmd, int timeout_ms,
                    char *out, size_t outlen, char *err, size_t errlen)
{
    return s_qmp(ctx, vm, cmd, timeout_ms, out, outlen, err, errlen);
}

void engine_qemu_forget(const engine_ctx_t *ctx, vm_t *vm)
{
    char path[4096];
    if (engine_vm_path(ctx, vm->vm_id, "pid", path, sizeof path) == 0)
        unlink(path);
    if (engine_vm_path(ctx, vm->vm_id, "qmp.sock", path, sizeof path) == 0)
        unlink(path);
    if (engine_vm_path(ctx, vm->vm_id, "qga.sock", path, sizeof path) == 0)
        unlink(path);
    vm->pid = 0;
    vm->start_time = 0;
}

static void s_stop_begin(const engine_ctx_t *ctx, vm_t *vm)
{
    char e2[256];
    if (ctx->stop_timeout_ms <= 0 || !vm->pid || !proc_alive(vm->pid, vm->start_time))
        return;
    /* a paused guest cannot see the power button */
    s_qmp(ctx, vm, "{\"execute\":\"cont\"}", S_QMP_MS, NULL, 0, e2, sizeof e2);
    if (s_qmp(ctx, vm, "{\"execute\":\"system_powerdown\"}", S_QMP_MS, NULL, 0, e2, sizeof e2) == 0)
        vm->stop_asked_ms = tt_mono_ms();
}

/* power off -> quit -> SIGKILL, each wait bounded. The power-off grace
 * counts from when it was asked (s_stop_begin), so VMs asked together
 * wait together. */
static int s_halt(const engine_ctx_t *ctx, vm_t *vm, pid_t pid, uint64_t st, char *err,
                  size_t errlen)
{
    char e2[256];
    if (!proc_alive(pid, st)) {
        waitpid(pid, NULL, WNOHANG);
        return 0;
    }
    if (!vm->stop_asked_ms)
        s_stop_begin(ctx, vm);
    if (vm->stop_asked_ms) {
        int64_t left = vm->stop_asked_ms + ctx->stop_timeout_ms - tt_mono_ms();
        vm->stop_asked_ms = 0;
        if (spawn_wait_gone(pid, st, left > 0 ? (int)left : 0) == 0)
            return 0;
    }
    if (s_qmp(ctx, vm, "{\"execute\":\"quit\"}", S_QMP_MS, NULL, 0, e2, sizeof e2) == 0 &&
        spawn_wait_gone(pid, st, S_QUIT_MS) == 0)
        return 0;
    kill(pid, SIGKILL);
    if (spawn_wait_gone(pid, st, S_KILL_MS) == 0)
        return 0;
    snprintf(err, errlen, "qemu %d did not exit after SIGKILL", (int)pid);
    return -1;
}

/* The timer-driven stop's deadline (fleet.c): the guest ignored the
 * power button for the whole grace. */
static void s_stop_force(const engine_ctx_t *ctx, vm_t *vm)
{
    if (vm->pid && proc_alive(vm->pid, vm->start_time))
        kill(vm->pid, SIGKILL);
}

static int s_stop(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (vm->pid && s_halt(ctx, vm, vm->pid, vm->start_time, err, errlen))
        return -1;
    engine_qemu_forget(ctx, vm);
    return 0;
}

static int s_running(const vm_t *vm, char *err, size_t errlen)
{
    if (!vm->pid || !proc_alive(vm->pid, vm->start_time)) {
        snprintf(err, errlen, "qemu of vm %u is not running", vm->vm_id);
        return -1;
    }
    return 0;
}

static int s_pause(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (s_running(vm, err, errlen))
        return -1;
    return s_qmp(ctx, vm, "{\"execute\":\"stop\"}", S_QMP_MS, NULL, 0, err, errlen);
}

static int s_resume(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    if (s_running(vm, err, errlen))
        return -1;
    return s_qmp(ctx, vm, "{\"execute\":\"cont\"}", S_QMP_MS, NULL, 0, err, errlen);
}

/* Alive = the QEMU process (pid + start time) runs and, when QMP answers
 * quickly, the machine is not in a terminal state (a crashed or panicked
 * guest keeps its QEMU process). A QMP that does not answer within a short
 * bound does not count as dead: QEMU may be busy, and killing a live VM on
 * a slow answer would be worse than noticing a dead one a tick later. */
static bool s_is_alive(const engine_ctx_t *ctx, const vm_t *vm)
{
    if (!vm->pid || !proc_alive(vm->pid, vm->start_time))
        return false;
    char sock[4096], status[32], err[256];
    if (engine_vm_path(ctx, vm->vm_id, "qmp.sock", sock, sizeof sock) ||
        qmp_status(sock, 200, status, sizeof status, err, sizeof err))
        return true;
    if (strcmp(status, "internal-error") == 0 || strcmp(status, "guest-panicked") == 0 ||
        strcmp(status, "shutdown") == 0) {
        zsys_warning("vm %u: qemu %d runs but the machine is %s", vm->vm_id, (int)vm->pid, status);
        return false;
    }
    return true;
}

static void s_kill_stray(const engine_ctx_t *ctx, vm_t *vm)
{
    pid_t pid;
    uint64_t st;
    if (engine_pidfile_stray(ctx, vm, &pid, &st) == 0) {
        char err[256];
        zsys_warning("vm %u: qemu %d from an uncommitted start: stopping it", vm->vm_id, (int)pid);
        kill(pid, SIGKILL);
        spawn_wait_gone(pid, st, S_KILL_MS);
        (void)err;
    }
}

/* A suspend the worker did not see to its end (it died): a live QEMU with
 * a committed suspend.state saved the whole guest and is stopped (its
 * quit was due): it ends, the file is the VM (1). With only a
 * suspend.partial the stream may be incomplete: the migration is
 * cancelled and the guest runs on as it was, the partial file removed
 * (0). Nothing to do: 0. */
static int s_adopt_suspend(const engine_ctx_t *ctx, vm_t *vm)
{
    char file[4200], e2[256];
    struct stat sb;
    if (engine_vm_path(ctx, vm->vm_id, "suspend.state", file, sizeof file) == 0 &&
        stat(file, &sb) == 0 && sb.st_size > 0) {
        zsys_warning("vm %u: qemu %d was suspended to its file, ending it", vm->vm_id,
                     (int)vm->pid);
        kill(vm->pid, SIGKILL);
        spawn_wait_gone(vm->pid, vm->start_time, S_KILL_MS);
        return 1;
    }
    if (engine_vm_path(ctx, vm->vm_id, "suspend.partial", file, sizeof file) == 0 &&
        stat(file, &sb) == 0) {
        zsys_warning("vm %u: a suspend was interrupted: the guest runs on, its partial file "
                     "is removed",
                     vm->vm_id);
        engine_qemu_qmp(ctx, vm, "{\"execute\":\"migrate_cancel\"}", S_QMP_MS, NULL, 0, e2,
                        sizeof e2);
        if (engine_qemu_qmp(ctx, vm, "{\"execute\":\"cont\"}", S_QMP_MS, NULL, 0, e2, sizeof e2))
            zsys_warning("vm %u: cont after the interrupted suspend: %s", vm->vm_id, e2);
        unlink(file);
    }
    return 0;
}

static int s_adopt(const engine_ctx_t *ctx, vm_t *vm)
{
    s_kill_stray(ctx, vm);
    if (vm->pid && proc_alive(vm->pid, vm->start_time) && s_adopt_suspend(ctx, vm) == 0) {
        char sock[4096], status[32], err[256];
        if (engine_vm_path(ctx, vm->vm_id, "qmp.sock", sock, sizeof sock) == 0 &&
            qmp_status(sock, S_QMP_MS, status, sizeof status, err, sizeof err) == 0)
            zsys_info("vm %u: qemu %d answers QMP, status %s", vm->vm_id, (int)vm->pid, status);
        else
            zsys_warning("vm %u: qemu %d runs but QMP does not answer: %s", vm->vm_id, (int)vm->pid,
                         err);
        return 0;
    }
    engine_qemu_forget(ctx, vm);
    return -1;
}

static int s_destroy(const engine_ctx_t *ctx, vm_t *vm, char *err, size_t errlen)
{
    s_kill_stray(ctx, vm);
    if (s_stop(ctx, vm, err, errlen))
        return -1;
    return engine_vm_rmdir(ctx, vm->vm_id, err, errlen);
}

/* User-mode networking carries the host forwards inside QEMU: change them
 * live. Deny-outgoing changes nothing there: every user-backend VM runs
 * with restrict=on (no outgoing network at all). */
static int s_update(const engine_ctx_t *ctx, const vm_t *old, vm_t *vm, char *err, size_t errlen)
{
    if (ctx->net != NET_USER || !vm->pid || !proc_alive(vm->pid, vm->start_time))
        return 0;
    char cmd[512], ans[512];
    for (int pass = 0; pass < 2; pass++) {
        const vm_t *from = pass ? vm : old, *to = pass ? old : vm;
        for (uint32_t i = 0; i < from->n_ports; i++) {
            bool kept = false;
            for (uint32_t j = 0; j < to->n_ports; j++)
                kept |= to->ports[j].public_port == from->ports[i].public_port &&
                        to->ports[j].guest == from->ports[i].guest;
            if (kept)
                continue;
            for (int u = 0; u < 2; u++) {
                const char *proto = u ? "udp" : "tcp";
                if (pass == 0)
                    snprintf(cmd, sizeof cmd,
                             "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-"
                             "line\":\"hostfwd_remove n0 %s:127.0.0.1:%u\"}}",
                             proto, from->ports[i].public_port);
                else
                    snprintf(cmd, sizeof cmd,
                             "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-"
                             "line\":\"hostfwd_add n0 %s:127.0.0.1:%u-%s:%u\"}}",
                             proto, from->ports[i].public_port, S_USER_IP, from->ports[i].guest);
                if (s_qmp(ctx, vm, cmd, S_QMP_MS, ans, sizeof ans, err, errlen))
                    return -1;
                /* HMP answers with its own text: "" or "...removed" on
                 * success, "Could not ...", "invalid ..." or "...not found" */
                if (strstr(ans, "Could not") || strstr(ans, "nvalid") || strstr(ans, "not found")) {
                    snprintf(err, errlen, "hostfwd %s %u: %.200s", pass ? "add" : "remove",
                             from->ports[i].public_port, ans);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* ---- acceleration probe ---- */

/* A boot sector that writes "R" to COM1 in real mode, builds identity
 * page tables, enters long mode and writes "K\n", then halts forever
 * (assembled from a 40-line GNU as source; kept as bytes so nothing is
 * assembled at run time). */
static const unsigned char s_probe_code[] = {
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xc0, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xba, 0xf8, 0x03,
    0xb0, 0x52, 0xee, 0xbf, 0x00, 0x10, 0xb9, 0x00, 0x18, 0x31, 0xc0, 0xfc, 0xf3, 0xab, 0xc7,
    0x06, 0x00, 0x10, 0x03, 0x20, 0xc7, 0x06, 0x00, 0x20, 0x03, 0x30, 0xc7, 0x06, 0x00, 0x30,
    0x83, 0x00, 0x66, 0x0f, 0x01, 0x16, 0x90, 0x7c, 0x0f, 0x20, 0xe0, 0x66, 0x83, 0xc8, 0x20,
    0x0f, 0x22, 0xe0, 0x66, 0xb8, 0x00, 0x10, 0x00, 0x00, 0x0f, 0x22, 0xd8, 0x66, 0xb9, 0x80,
    0x00, 0x00, 0xc0, 0x0f, 0x32, 0x66, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x0f, 0x30, 0x0f, 0x20,
    0xc0, 0x66, 0x0d, 0x01, 0x00, 0x00, 0x80, 0x0f, 0x22, 0xc0, 0x66, 0xea, 0x6c, 0x7c, 0x00,
    0x00, 0x08, 0x00, 0x66, 0xba, 0xf8, 0x03, 0xb0, 0x4b, 0xee, 0xb0, 0x0a, 0xee, 0xf4, 0xeb,
    0xfd, 0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x9a, 0x20, 0x00, 0x0f, 0x00, 0x80, 0x7c, 0x00, 0x00,
};

/* Run one probe guest (a boot sector image, or a kernel with an early
 * serial console) under accel; true if needle shows on its serial port
 * within timeout_ms. The QEMU is killed either way. */
static bool s_probe(const char *qemu, const char *accel, const char *img, const char *kernel,
                    const char *needle, int timeout_ms)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC))
        return false;
    char drive[4200], machine[64];
    snprintf(drive, sizeof drive, "file=%s,format=raw,if=ide", img ? img : "");
    snprintf(machine, sizeof machine, "pc,accel=%s", accel);
    char *argv[] = {(char *)qemu,
                    "-machine",
                    machine,
                    "-m",
                    "128",
                    "-nodefaults",
                    "-no-user-config",
                    "-display",
                    "none",
                    "-no-reboot",
                    "-serial",
                    "stdio",
                    kernel ? "-kernel" : "-drive",
                    kernel ? (char *)kernel : drive,
                    kernel ? "-append" : NULL,
                    "console=ttyS0 earlyprintk=ttyS0 panic=-1",
                    NULL};
    char err[256];
    pid_t pid = spawn_child(argv, -1, pfd[1], err, sizeof err);
    close(pfd[1]);
    bool ok = false;
    if (pid > 0) {
        int64_t deadline = tt_mono_ms() + timeout_ms;
        char buf[8192];
        size_t len = 0;
        for (;;) {
            int64_t left = deadline - tt_mono_ms();
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            if (left <= 0 || poll(&p, 1, (int)left) <= 0)
                break;
            if (len == sizeof buf - 1) { /* keep the tail: the needle may straddle */
                memmove(buf, buf + len / 2, len - len / 2);
                len -= len / 2;
            }
            ssize_t n = read(pfd[0], buf + len, sizeof buf - 1 - len);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = 0;
            if (memmem(buf, len, needle, strlen(needle))) {
                ok = true;
                break;
            }
        }
        spawn_kill(pid);
    }
    close(pfd[0]);
    return ok;
}

int engine_qemu_probe(const char *qemu, const char *mode, const char *work_dir, const char *kernel,
                      int timeout_ms, char *accel, size_t len, char *err, size_t errlen)
{
    if (strcmp(mode, "kvm") == 0 || strcmp(mode, "tcg") == 0) {
        snprintf(accel, len, "%s", mode);
        return 0;
    }
    char img[4096];
    snprintf(img, sizeof img, "%s/accel-probe.img", work_dir);
    unsigned char sector[512];
    memset(sector, 0, sizeof sector);
    memcpy(sector, s_probe_code, sizeof s_probe_code);
    sector[510] = 0x55;
    sector[511] = 0xAA;
    int fd = open(img, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0 || write(fd, sector, sizeof sector) != (ssize_t)sizeof sector) {
        snprintf(err, errlen, "write %s: %s", img, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    bool use_kvm = false;
    if (kvm >= 0) {
        close(kvm);
        /* Long mode alone is not enough: where nested virtualisation is
         * broken, the boot sector runs but a Linux kernel hangs right after
         * its real-mode setup. So a kernel, when there is one, must reach
         * its first early-console line too. */
        use_kvm = s_probe(qemu, "kvm", img, NULL, "K", timeout_ms) &&
                  (!kernel || s_probe(qemu, "kvm", NULL, kernel, "Linux version", timeout_ms));
        if (!use_kvm)
            zsys_warning("accel: /dev/kvm opens but a %s did not run under KVM within %d ms: "
                         "using TCG",
                         kernel ? "probe kernel" : "probe boot sector", timeout_ms);
    }
    int rc = 0;
    if (!use_kvm && !s_probe(qemu, "tcg", img, NULL, "K", timeout_ms * 3)) {
        snprintf(err, errlen, "%s could not boot a probe guest under TCG within %d ms", qemu,
                 timeout_ms * 3);
        rc = -1;
    }
    unlink(img);
    snprintf(accel, len, "%s", use_kvm ? "kvm" : "tcg");
    return rc;
}

const engine_t engine_qemu = {
    .name = "qemu",
    .caps = TT_CAP_CATALOG | TT_CAP_BOOTSTRAP | TT_CAP_GUEST | TT_CAP_SNAPSHOTS | TT_CAP_NIC_TAP |
            TT_CAP_HOSTFWD,
    .needs_qemu = true,
    .guest = &engine_qemu_guest,
    .prepare_disk = s_prepare_disk,
    .start = s_start,
    .stop = s_stop,
    .pause = s_pause,
    .resume = s_resume,
    .is_alive = s_is_alive,
    .adopt = s_adopt,
    .destroy = s_destroy,
    .update = s_update,
    .stop_begin = s_stop_begin,
    .stop_force = s_stop_force,
    .template_boot = qsnap_template_boot,
    .template_save = qsnap_template_save,
    .clone_restore = qsnap_clone_restore,
    .suspend = qsnap_suspend,
    .resume_saved = qsnap_resume_saved,
    .snap_poll = qsnap_poll,
    .snap_finish = qsnap_finish,
    .snap_abort = qsnap_abort,
    .suspended = qsnap_suspended,
    .snap_recover = qenv_recover,
};
