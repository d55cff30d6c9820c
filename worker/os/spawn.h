/*
 * spawn: running other programs from the worker, never through a shell.
 *
 * Every program (qemu-system-x86_64, qemu-img, the accel probe) is started
 * with fork + execv and an argv array built by the caller, so nothing that
 * came from outside is ever parsed as a command line. Waits are bounded:
 * a helper that outlives its time is SIGKILLed and reaped.
 *
 * spawn_detached() starts a program that must outlive the worker (a QEMU
 * VM): an intermediate child calls setsid() and forks the program, writes
 * "PID STARTTIME" to a pidfile the worker owns (so even a worker killed
 * mid-spawn leaves proof of what it started), reports the pid on a pipe
 * and exits. The pipe is close-on-exec in the program, so EOF after the
 * pid means the exec succeeded and an errno record means it failed.
 */
#ifndef TT_WORKER_SPAWN_H
#define TT_WORKER_SPAWN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Fork and exec argv[0] (an absolute path) with stdin on in_fd and
 * stdout+stderr on out_fd (-1: /dev/null). The child is a plain child of
 * the caller. Returns its pid, or -1 with a reason (exec failures are
 * reported here, not as an exit status). */
pid_t spawn_child(char *const argv[], int in_fd, int out_fd, char *err, size_t errlen);

/* Wait at most timeout_ms for child pid to exit and reap it. 0 with its
 * wait status in *status (may be NULL), -1 on timeout. */
int spawn_wait(pid_t pid, int timeout_ms, int *status);

/* SIGKILL child pid and reap it (bounded). */
void spawn_kill(pid_t pid);

/* Run argv to completion within timeout_ms; 0 if it exited with status 0,
 * else -1 with a reason (its name, exit status or signal, or "timed out"). */
int spawn_run(char *const argv[], int timeout_ms, char *err, size_t errlen);

/* Start argv detached (see above), stdout+stderr appended to log_fd.
 * Fills *pid and *start_time. 0 / -1 with a reason. */
int spawn_detached(char *const argv[], const char *pidfile, int log_fd, pid_t *pid,
                   uint64_t *start_time, char *err, size_t errlen);

/* Find program name in the directories of $PATH (or use it if it has a
 * '/'); the absolute path into buf. 0 / -1. */
int spawn_which(const char *name, char *buf, size_t len);

/* Wait (bounded) until the process pid that started at start_time is
 * gone or a zombie, reaping it if it is our child (the worker is a
 * subreaper). 0 if gone, -1 on timeout. */
int spawn_wait_gone(pid_t pid, uint64_t start_time, int timeout_ms);

/* Helpers that are async-signal-safe (usable between fork and exec):
 * write all of buf (gives up on an error); read exactly len bytes before
 * deadline (monotonic ms): 1 = read, 0 = EOF before the first byte,
 * -1 = timeout, error or short read. */
void spawn_write_all(int fd, const void *buf, size_t len);
int spawn_read_full(int fd, void *buf, size_t len, int64_t deadline);
void spawn_sleep_ms(int ms);
/* In a forked child before exec: no signal blocked, every disposition the
 * default (an ignored signal would stay ignored across exec).
 * Async-signal-safe. */
void spawn_reset_signals(void);

#endif
