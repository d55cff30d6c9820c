/*
 * ttguest: validation of what a tenant gives a guest (see ttguest.c):
 * SSH public keys, user-data, readiness specs. Used by ttctl, the broker
 * and the worker alike; each returns 0 or -1 with a reason for the tenant.
 */
#ifndef TT_SCHEMA_TTGUEST_H
#define TT_SCHEMA_TTGUEST_H

#include <stddef.h>
#include <stdint.h>

#define TT_SSH_KEY_MAX 8192          /* one public key line */
#define TT_SSH_KEYS_MAX 32           /* keys per env */
#define TT_USER_DATA_MAX (64 * 1024) /* bytes */
#define TT_READY_MAX 300             /* bytes of a readiness spec */

/* "TYPE BASE64 [COMMENT]": a known type (ssh-ed25519, ssh-rsa, ecdsa-sha2-*,
 * sk-*), a base64 blob that decodes and names the same type, no options, no
 * control character or newline, at most TT_SSH_KEY_MAX bytes. */
int tt_ssh_key_valid(const char *key, char *err, size_t errlen);

/* At most TT_USER_DATA_MAX bytes, no NUL, starting with "#cloud-config" or
 * "#!" (a script). */
int tt_user_data_valid(const char *data, size_t len, char *err, size_t errlen);

typedef enum {
    TT_READY_NONE = 0,
    TT_READY_SSH,
    TT_READY_TCP,
    TT_READY_HTTP,
    TT_READY_CONSOLE,
    TT_READY_AGENT,
    TT_READY_CLOUD_INIT
} tt_ready_kind_t;

typedef struct {
    tt_ready_kind_t kind;
    uint16_t port;              /* ssh (22), tcp, http */
    char arg[TT_READY_MAX + 1]; /* http: path (starts with '/'); console: regex */
} tt_ready_t;

/* none | ssh | tcp:PORT | http:PORT[/PATH] | console:REGEX (POSIX extended,
 * must compile) | agent | cloud-init. */
int tt_ready_parse(const char *text, tt_ready_t *spec, char *err, size_t errlen);

/* The guest fields of an EnvCreate (ssh_keys, user_data, ready, each
 * ImageCount's ready), for tt_request_validate. */
struct Ttfleet__EnvCreate;
int tt_guest_create_valid(const struct Ttfleet__EnvCreate *c, char *err, size_t errlen);

/* ---- exec and copy inside a VM (PROTOCOL.md "Guests") ---- */
#define TT_EXEC_ARGS_MAX 64                /* argv strings */
#define TT_EXEC_ARGV_BYTES (64 * 1024)     /* argv in all */
#define TT_EXEC_STDIN_MAX (64 * 1024)
#define TT_EXEC_TIMEOUT_DEFAULT 60         /* s, for timeout_s 0 */
#define TT_EXEC_TIMEOUT_MAX 3600           /* s */
#define TT_EXEC_OUTPUT_MAX (1024 * 1024)   /* stdout / stderr kept per exec */
#define TT_EXEC_PIECE (96 * 1024)          /* of each in one reply */
#define TT_EXEC_ID_LEN 32                  /* hex characters of an exec_id / transfer_id */
#define TT_COPY_CHUNK_MAX (128 * 1024)     /* data of one chunk */
#define TT_COPY_FILE_MAX (64 * 1024 * 1024) /* a copied file */
#define TT_GUEST_PATH_MAX 4095

/* Absolute, no control character (NUL cannot pass a C string: see
 * tt_guest_raw_check), at most TT_GUEST_PATH_MAX bytes. */
int tt_guest_path_valid(const char *path, char *err, size_t errlen);

/* An EnvExec: either a command (argv 1..64 strings, 64 KiB in all, argv[0]
 * not empty, stdin at most 64 KiB, timeout at most 3600 s) or, with an
 * exec_id, a read of the rest of an earlier output (argv and stdin empty). */
struct Ttfleet__EnvExec;
int tt_exec_valid(const struct Ttfleet__EnvExec *e, char *err, size_t errlen);

/* An EnvCopy: path, direction, ids, data at most 128 KiB, offsets and
 * total_size within 64 MiB, sha256 32 bytes with last (PUT). */
struct Ttfleet__EnvCopy;
int tt_copy_valid(const struct Ttfleet__EnvCopy *c, char *err, size_t errlen);

/* protobuf-c decodes a string field up to its first NUL and drops the
 * rest, so "/etc/x\0y" would arrive as "/etc/x". This walks the wire
 * bytes of a message and refuses a NUL in the strings that reach a guest:
 * argv (4) of the EnvExec and path (4) of the EnvCopy that are fields
 * exec_field / copy_field of the outer message (Request: 40 / 41,
 * WorkerCommand: 100 / 101). 0, or -1 with a reason (also for bytes that
 * are not a well-formed message: the decoder would refuse them too). */
int tt_guest_raw_check(const uint8_t *body, size_t len, uint32_t exec_field, uint32_t copy_field,
                       char *err, size_t errlen);

#endif
