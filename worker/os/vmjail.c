/*
 * vmjail: capabilities and the seccomp filter of process VMs. See vmjail.h.
 *
 * Kept capabilities (those of an unprivileged container root; they act only
 * on what the VM's user namespace owns or maps): CHOWN, DAC_OVERRIDE,
 * FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP, NET_BIND_SERVICE,
 * SYS_CHROOT, AUDIT_WRITE, SETFCAP.
 *
 * The filter allows by default and answers EPERM to the calls below;
 * clone3 gets ENOSYS (its flags are in memory a filter cannot read, so
 * libc falls back to clone, whose flags it can), and a call of another
 * architecture (i386, x32) kills the process. ptrace stays allowed: the
 * VM's pid namespace shows it only its own processes.
 */
#define _GNU_SOURCE
#include "vmjail.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <seccomp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static const int s_keep[] = {CAP_CHOWN,      CAP_DAC_OVERRIDE, CAP_FOWNER,
                             CAP_FSETID,     CAP_KILL,         CAP_SETGID,
                             CAP_SETUID,     CAP_SETPCAP,      CAP_NET_BIND_SERVICE,
                             CAP_SYS_CHROOT, CAP_AUDIT_WRITE,  CAP_SETFCAP};

/* Refused with EPERM. */
static const char *const s_deny[] = {"kexec_load",
                                     "kexec_file_load",
                                     "init_module",
                                     "finit_module",
                                     "delete_module",
                                     "bpf",
                                     "perf_event_open",
                                     "keyctl",
                                     "add_key",
                                     "request_key",
                                     "open_by_handle_at",
                                     "name_to_handle_at",
                                     "userfaultfd",
                                     "setns",
                                     "mount",
                                     "umount2",
                                     "pivot_root",
                                     "move_mount",
                                     "open_tree",
                                     "fsopen",
                                     "fsconfig",
                                     "fsmount",
                                     "fspick",
                                     "mount_setattr",
                                     "swapon",
                                     "swapoff",
                                     "reboot",
                                     "syslog",
                                     "acct",
                                     "iopl",
                                     "ioperm",
                                     "quotactl",
                                     "lookup_dcookie",
                                     "vhangup",
                                     "personality",
                                     "process_vm_readv",
                                     "process_vm_writev",
                                     "kcmp",
                                     "fanotify_init",
                                     "io_uring_setup",
                                     "io_uring_enter",
                                     "io_uring_register",
                                     "settimeofday",
                                     "clock_settime",
                                     "clock_adjtime",
                                     "adjtimex",
                                     "uselib",
                                     "nfsservctl"};

static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static struct sock_fprog s_prog;
static char s_err[160];

static void s_build(void)
{
    scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
    int rc = 0, fd = -1;
    const char *what = "seccomp_init";
    if (!ctx) {
        rc = -ENOMEM;
        goto out;
    }
    what = "a rule";
    for (size_t i = 0; i < sizeof s_deny / sizeof *s_deny && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(s_deny[i]);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a call of this architecture */
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
    /* no user namespace again: unshare and clone with CLONE_NEWUSER */
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                              SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER));
    if (rc == 0)
        rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (rc)
        goto out;
    what = "export";
    fd = memfd_create("ttfleet-seccomp", MFD_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    rc = seccomp_export_bpf(ctx, fd);
    if (rc)
        goto out;
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0 || len % sizeof(struct sock_filter) || len > 65536) {
        rc = -EINVAL;
        goto out;
    }
    struct sock_filter *f = malloc((size_t)len);
    if (!f || pread(fd, f, (size_t)len, 0) != len) {
        free(f);
        rc = -EIO;
        goto out;
    }
    s_prog.filter = f;
    s_prog.len = (unsigned short)(len / sizeof(struct sock_filter));
out:
    if (rc)
        snprintf(s_err, sizeof s_err, "seccomp filter (%s): %s", what, strerror(-rc));
    if (fd >= 0)
        close(fd);
    if (ctx)
        seccomp_release(ctx);
}

const struct sock_fprog *vmjail_filter(char *err, size_t errlen)
{
    pthread_once(&s_once, s_build);
    if (!s_prog.filter) {
        snprintf(err, errlen, "%s", s_err[0] ? s_err : "seccomp filter: not built");
        return NULL;
    }
    return &s_prog;
}

static uint64_t s_keep_mask(void)
{
    uint64_t m = 0;
    for (size_t i = 0; i < sizeof s_keep / sizeof *s_keep; i++)
        m |= 1ull << s_keep[i];
    return m;
}

int vmjail_bound(void)
{
    uint64_t keep = s_keep_mask();
    for (int cap = 0; cap < 64; cap++) {
        if (keep & (1ull << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL)
            return -1; /* EINVAL: past the kernel's last capability */
    }
    return 0;
}

int vmjail_confine(const struct sock_fprog *prog)
{
    uint64_t keep = s_keep_mask();
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d))
        return -1;
    for (int i = 0; i < 2; i++) {
        uint32_t k = (uint32_t)(keep >> (32 * i));
        d[i].effective &= k;
        d[i].permitted &= k;
        d[i].inheritable &= k;
    }
    if (syscall(SYS_capset, &h, d))
        return -1;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) && errno != EINVAL)
        return -1;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return -1;
    if (prog && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, prog, 0, 0))
        return -1;
    return 0;
}
