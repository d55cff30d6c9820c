/*
 * proc: what the worker reads from /proc about the processes of its VMs.
 *
 * A pid alone does not name a process: pids are reused. A VM process is
 * identified by its pid *and* its start time (field 22 of /proc/PID/stat,
 * clock ticks since boot), so a worker that restarts, or a pidfile written
 * before a crash, never makes us signal a stranger that got the same pid.
 *
 * proc_stat_parse() and the number helpers allocate nothing and call no
 * stdio, so the spawn code may use them between fork() and exec().
 */
#ifndef TT_WORKER_PROC_H
#define TT_WORKER_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Parse the text of /proc/PID/stat: the state letter (field 3) and the
 * start time (field 22). The comm field may hold spaces and ')', so the
 * fields are counted after the last ')'. 0 / -1. */
int proc_stat_parse(const char *buf, size_t len, char *state, uint64_t *start_time);

/* Read /proc/PID/stat of pid. 0 / -1 (no such process, or unreadable). */
int proc_stat_read(pid_t pid, char *state, uint64_t *start_time);

/* True if pid runs (not a zombie) and started at start_time. */
bool proc_alive(pid_t pid, uint64_t start_time);

/* True if pid has a handler installed for sig (SigCgt of /proc/PID/status). */
bool proc_catches(pid_t pid, int sig);

/* Inode of pid's pid namespace (/proc/PID/ns/pid); 0 if unknown. */
uint64_t proc_pidns(pid_t pid);

/* Send sig to every process whose pid namespace is ns (an inode from
 * proc_pidns). Returns how many processes were signalled. */
int proc_signal_ns(uint64_t ns, int sig);

/* Decimal text of v into buf (at least 21 bytes); returns the length.
 * Async-signal-safe. */
size_t proc_utoa(uint64_t v, char *buf);

/* Parse "PID STARTTIME" (a pidfile). 0 / -1. */
int proc_pidfile_parse(const char *buf, size_t len, pid_t *pid, uint64_t *start_time);

/* Read a pidfile; 0 / -1 if missing or malformed. */
int proc_pidfile_read(const char *path, pid_t *pid, uint64_t *start_time);

#endif
