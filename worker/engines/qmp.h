/*
 * qmp: a minimal client of the QEMU Machine Protocol over a unix socket.
 *
 * Each VM has its own QMP socket (<state>/vms/<id>/qmp.sock). A call
 * connects, reads the greeting, negotiates capabilities, sends one command
 * and reads until its answer (skipping asynchronous events), then closes:
 * no connection is held between calls, so a worker restart loses nothing
 * and QEMU's single QMP client slot is never kept busy. Every call has a
 * deadline. Each line QEMU writes (one JSON object per line) is parsed
 * with jansson and classified by its top-level key.
 */
#ifndef TT_WORKER_QMP_H
#define TT_WORKER_QMP_H

#include <stddef.h>

/* Run one command (a complete JSON object, e.g. {"execute":"stop"}) on the
 * socket at path within timeout_ms. 0 if QEMU answered with "return" (the
 * answer line into out, if not NULL), -1 with a reason otherwise (an
 * "error" answer, a timeout, no socket). */
int qmp_call(const char *path, const char *command, int timeout_ms, char *out, size_t outlen,
             char *err, size_t errlen);

/* The run state of the VM from query-status ("running", "paused",
 * "shutdown", ...) into status. 0 / -1. */
int qmp_status(const char *path, int timeout_ms, char *status, size_t len, char *err,
               size_t errlen);

/* What one line from QEMU is (parsed as JSON): */
enum { QMP_LINE_OTHER = 0, QMP_LINE_RETURN, QMP_LINE_ERROR, QMP_LINE_EVENT, QMP_LINE_GREETING };
/* The kind of line; for an error its "desc" into desc (may be NULL). */
int qmp_line_kind(const char *line, size_t len, char *desc, size_t desclen);
/* query-status's answer line -> "running" etc. 0 / -1 with a reason. */
int qmp_status_parse(const char *line, size_t n, char *status, size_t len, char *err,
                     size_t errlen);

#endif
