/*
 * vmjail: what a process VM's processes may still do once inside their
 * namespaces: a capability bounding set of an unprivileged container root
 * and a seccomp filter that refuses the calls that reach the host's kernel
 * state (modules, kexec, bpf, perf, keyrings, file handles, userfaultfd, a
 * new user namespace, mounts, ...). engine_process.c applies it to pid 1,
 * guestop.c to every command it runs in a process VM.
 */
#ifndef TTFLEET_WORKER_VMJAIL_H
#define TTFLEET_WORKER_VMJAIL_H

#include <linux/filter.h>
#include <stddef.h>

/* The filter, built once (thread-safe) with libseccomp and kept as a BPF
 * program, so a forked child installs it with plain syscalls. NULL with
 * err set when libseccomp cannot build it. */
const struct sock_fprog *vmjail_filter(char *err, size_t errlen);

/* In a forked child, inside the VM's user namespace and before it changes
 * its uid: drop every capability outside the kept set from the bounding
 * set. Async-signal-safe; 0, or -1 with errno. */
int vmjail_bound(void);

/* In a forked child, last before execve: drop what is outside the kept
 * set from the permitted, effective, inheritable and ambient sets, set
 * no_new_privs and install prog. Async-signal-safe; 0, or -1 with errno. */
int vmjail_confine(const struct sock_fprog *prog);

/* uid/gid 0 of a process VM's user namespace is this id outside, with the
 * next VMJAIL_ID_COUNT - 1 ids after it (when the VMs do not run as
 * --vm-user). */
#define VMJAIL_ID_BASE_DEFAULT 100000u
#define VMJAIL_ID_COUNT 65536u

#endif
