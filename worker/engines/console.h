/*
 * console: a VM's console log, bounded on disk.
 *
 * A guest may write to its console without end; the worker's disk must not
 * fill. So no engine hands a VM the log file itself: console_open() makes a
 * pipe and a small detached logger process (double fork, own session, so
 * it outlives the worker like the VM does) that reads the pipe and appends
 * to <vm>/console.log; when the file would pass CONSOLE_CAP bytes it is
 * renamed to console.log.1 (replacing the older one) and a new one starts
 * with the last CONSOLE_CARRY bytes of the old (so the tail a reader asks
 * for, at most 256 KiB, is always in console.log). A VM's console thus
 * never holds more than 2 * CONSOLE_CAP bytes on disk.
 * The engine gives the write end to the VM (QEMU's stdout and stderr, a
 * process VM's fd 1 and 2) and closes its own copy: the logger exits when
 * the last writer (the VM and everything it started) is gone. The worker's
 * loop never reads or writes console bytes; a slow disk slows only the
 * logger, and then the VM's console writes.
 */
#ifndef TT_WORKER_CONSOLE_H
#define TT_WORKER_CONSOLE_H

#include <stddef.h>

#define CONSOLE_CAP (1024 * 1024)
#define CONSOLE_CARRY (256 * 1024)

/* Starts a logger appending to path with the default cap. Returns the write
 * end of its pipe (close-on-exec; the caller owns it), or -1 with a reason. */
int console_open(const char *path, char *err, size_t errlen);
/* The same with a cap in bytes (at least 64 KiB; for tests). */
int console_open_capped(const char *path, size_t cap, char *err, size_t errlen);

#endif
