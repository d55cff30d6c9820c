/*
 * qga: a client of the QEMU guest agent (qemu-ga) on a VM's virtio-serial
 * port, reached through the unix socket QEMU serves for it
 * (<state>/vms/<id>/qga.sock, chardev org.qemu.guest_agent.0).
 *
 * Two layers. qga_t is a parser with no I/O: the caller writes the
 * requests qga_request() builds and feeds whatever it reads from the socket
 * to qga_feed(); qga_next() yields each complete reply as a jansson object.
 * An event loop polls the fd and feeds; nothing here blocks. Replies are one
 * JSON object per line; a line longer than QGA_LINE_MAX puts the parser in
 * an error state (a guest cannot make the host buffer without bound).
 * Resynchronisation: the agent keeps no session, and a reply to an earlier
 * client may still be queued, so a conversation starts with
 * guest-sync-delimited: the agent answers with a 0xFF byte before the reply,
 * and qga_expect_sync() makes the parser drop everything up to that byte.
 *
 * The reply interpreters (qga_reply, qga_exec_status_parse, ...) read the
 * objects with jansson, never by matching text, and bound what they decode.
 *
 * On top, blocking helpers for tools and tests (qga_open ... qga_close):
 * each call has a deadline. The worker's loop uses the parser layer.
 */
#ifndef TT_WORKER_QGA_H
#define TT_WORKER_QGA_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QGA_LINE_MAX (24u << 20)  /* one reply; 16 MiB of exec output in base64 */
#define QGA_OUTPUT_MAX (1u << 20) /* stdout / stderr kept per exec */
#define QGA_FILE_MAX (64u << 20)  /* a copied file */
#define QGA_CHUNK (256u << 10)    /* bytes per guest-file-read/write */

typedef struct qga_t qga_t;

qga_t *qga_new(void);
void qga_destroy(qga_t **self_p);

/* Drop input up to and including the next 0xFF (after guest-sync-delimited). */
void qga_expect_sync(qga_t *self);
/* Bytes read from the socket. -1 with a reason once a line is too long
 * (the parser stays failed). */
int qga_feed(qga_t *self, const void *data, size_t len, char *err, size_t errlen);
/* The next complete reply (a new reference: json_decref it), or NULL.
 * Lines that are not JSON objects are skipped. */
json_t *qga_next(qga_t *self);

/* {"execute":COMMAND[,"arguments":ARGS]}\n as a malloc'd string;
 * args is stolen (may be NULL). */
char *qga_request(const char *command, json_t *args);

/* A reply: 0 and its "return" value (borrowed) in *ret, or -1 with the
 * agent's error class and desc (or "not a reply") in err. */
int qga_reply(json_t *reply, json_t **ret, char *err, size_t errlen);

typedef struct {
    bool exited;
    int exit_code;             /* when exited normally */
    int signal;                /* >0 if killed by a signal */
    unsigned char *out, *errb; /* decoded, at most QGA_OUTPUT_MAX each (malloc'd) */
    size_t out_len, err_len;
    bool out_truncated, err_truncated;
    bool killed; /* qga_exec: it ran over its timeout and the guest's `kill -KILL` ended it */
    bool group;  /* qga_exec: it led a process group of its own (setsid in the guest) */
} qga_exec_t;

/* Read a guest-exec-status "return" object. 0 / -1 with a reason. */
int qga_exec_status_parse(json_t *ret, qga_exec_t *res, char *err, size_t errlen);
void qga_exec_free(qga_exec_t *res);

/* Read a guest-file-read "return": the decoded bytes appended to buf
 * (which holds *len, capacity cap), eof. -1 if it would pass cap. */
int qga_file_read_parse(json_t *ret, unsigned char *buf, size_t *len, size_t cap, bool *eof,
                        char *err, size_t errlen);

/* ---- blocking helpers ---- */
typedef struct qga_conn_t qga_conn_t;

/* Connect and synchronise within timeout_ms. NULL with a reason. */
qga_conn_t *qga_open(const char *sock_path, int timeout_ms, char *err, size_t errlen);
void qga_close(qga_conn_t **self_p);
/* One command; 0 and the reply's "return" (a new reference) in *ret. */
int qga_call(qga_conn_t *self, const char *command, json_t *args, int timeout_ms, json_t **ret,
             char *err, size_t errlen);
/* guest-exec argv (argv[0] a program the guest finds), optional stdin, wait
 * up to timeout_ms for it to end. 0 with the result, -1 on failure. The
 * command runs through the guest's setsid (no fork: its pid leads a new
 * session and process group); a guest whose agent cannot start setsid runs
 * it as it is. The agent has no kill: past the timeout this runs
 * `kill -KILL -- -PID` in the guest (another guest-exec), which ends every
 * process of the group, children holding the output pipes too (without
 * setsid `kill -KILL -- PID`, the command only), and waits QGA_KILL_MS
 * more (a kill under TCG took 2.5 s to start; with the agent's answer
 * bounded by QGA_KILL_CALL_MS and its connect, this stays within the
 * broker's 15 s margin over the timeout); if the command then ended, 0
 * with res->killed (and what it wrote), else -1. A process that left the
 * group (setsid, setpgid) is not found. */
#define QGA_KILL_CALL_MS 3000
#define QGA_KILL_MS 6000
int qga_exec(qga_conn_t *self, const char *const *argv, const void *in, size_t in_len,
             int timeout_ms, qga_exec_t *res, char *err, size_t errlen);
/* Write data (at most QGA_FILE_MAX) to guest_path in chunks; the sha256 of
 * what was sent into sha (32 bytes). */
int qga_file_put(qga_conn_t *self, const char *guest_path, const void *data, size_t len,
                 unsigned char sha[32], int timeout_ms, char *err, size_t errlen);
/* Read guest_path (at most QGA_FILE_MAX) into *data (malloc'd); sha256 of it. */
int qga_file_get(qga_conn_t *self, const char *guest_path, unsigned char **data, size_t *len,
                 unsigned char sha[32], int timeout_ms, char *err, size_t errlen);
/* guest-get-osinfo's "pretty-name" (or "id") into buf. */
int qga_osinfo(qga_conn_t *self, char *buf, size_t len, int timeout_ms, char *err, size_t errlen);

/* A guest path for guest-file-*: absolute, no NUL/control chars, <= 4095. */
int qga_path_valid(const char *path, char *err, size_t errlen);

#endif
