/*
 * ttctl_print: how ttctl shows what the broker answered.
 *
 * Two forms of every result: a human one (aligned tables, ISO times) and a
 * JSON one for scripts, built with jansson so quoting is never hand-made.
 * The JSON shapes are a contract with scripts and the integration tests.
 * Field names are the proto's (mem_mib, disk_mib, last_seen in unix
 * seconds), enum values their names in lower case without prefix
 * ("running"); ISO 8601 forms of times sit beside them (created, expires,
 * last_seen_iso).
 * an env is an object with name, tenant, state, created_at / expires_at
 * (unix seconds) and created / expires (ISO 8601 UTC), lifetime,
 * deny_outgoing, vm_count, ports and vms; lists are objects holding one
 * array ({"envs": [...]}, {"hosts": [...]}).
 */
#ifndef TTCTL_PRINT_H
#define TTCTL_PRINT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "ttfleet.pb-c.h"

/* How the JSON forms are written: as YAML (the same tree, with libyaml)
 * instead of JSON; wide: tables with more columns (env list). */
void print_set_format(bool yaml, bool wide);

/* Prints an env in detail: header lines and one table row per VM. */
int print_env(FILE *out, const Ttfleet__EnvInfo *env, bool json);
/* Prints a list of envs; with_tenant adds the tenant column. */
int print_env_list(FILE *out, const Ttfleet__EnvInfoList *list, bool with_tenant, bool json);
int print_host(FILE *out, const Ttfleet__HostInfo *host, bool json);
int print_host_list(FILE *out, const Ttfleet__HostInfoList *list, bool json);
int print_key_list(FILE *out, const Ttfleet__KeyInfoList *list, bool json);
int print_image(FILE *out, const Ttfleet__ImageInfo *im, bool json);
int print_image_list(FILE *out, const Ttfleet__ImageInfoList *list, bool json);
int print_pool(FILE *out, const Ttfleet__PoolStatus *pool, bool json);
/* One broker of a cluster as `ttctl status` shows it: its endpoint, and
 * its own view (NULL: it did not answer, "unreachable"). */
typedef struct {
    unsigned id;
    const char *endpoint;
    const Ttfleet__ClusterStatus *view;
    uint64_t match_index; /* the leader's view of it */
    bool voter;           /* false: a non-voting spare (counted in no majority) */
} print_member_t;
/* The pool (NULL when no leader answered) and the cluster's members (n 0:
 * a lone broker); JSON: the pool's object with "cluster": [...]. */
int print_status(FILE *out, const Ttfleet__PoolStatus *pool, const print_member_t *m, int n,
                 bool json);
/* Console text: human form through print_console_text (a guest cannot drive
 * the terminal); JSON: text as a string (jansson escapes control bytes;
 * a text that is not UTF-8 is given through print_console_text). */
int print_console(FILE *out, const Ttfleet__ConsoleText *c, bool json);
/* A guest's console bytes made safe for a terminal: printable ASCII,
 * newlines, tabs and well-formed printable UTF-8 pass; CR LF becomes LF;
 * ESC and every other control byte print as ^X (ESC [31m -> ^[[31m), DEL
 * as ^?, anything else (invalid UTF-8, C1 controls) as \xHH. */
void print_console_text(FILE *out, const uint8_t *text, size_t len);
/* Prints the answer of an MMI query. */
int print_mmi(FILE *out, const char *service, const char *code, bool json);
/* Prints a one-line outcome of an operation without a result ("deleted env
 * x"); as JSON {"ok": true, "message": ...}. */
int print_done(FILE *out, const char *message, bool json);
/* Prints the outcome of a host drain / remove: the broker's message, then
 * the host when there is one; as JSON {"ok": true, "message": ..., "host": {...}}. */
int print_host_op(FILE *out, const char *message, const Ttfleet__HostInfo *host, bool json);
/* Prints one event as one line: time, kind, tenant/env, vm, host, state and
 * message; as JSON one compact object per line (kind, time, tenant, env,
 * host, vm_id, state, message), so `ttctl watch --json` is JSON Lines. */
int print_event(FILE *out, const Ttfleet__Event *ev, bool json);

/* Admission: quotas (limits with what is used; -1 shows as "-"), the
 * admission queue in order, and audit rows newest first. */
int print_quota_list(FILE *out, const Ttfleet__QuotaInfoList *list, bool json);
int print_queue(FILE *out, const Ttfleet__QueueEntryList *list, bool json);
int print_audit(FILE *out, const Ttfleet__AuditRecordList *list, bool json);

/* The outcome of an exec as JSON: vm_id, status, message, host, exit_code,
 * signal, stdout / stderr (strings when UTF-8, else stdout_base64 /
 * stderr_base64), their sizes and *_truncated. While a list is open
 * (print_exec_list(true)) the outcome is added to it instead, and
 * print_exec_list_print prints {"results": [...]} and closes it. */
int print_exec_json(FILE *out, uint32_t vm_id, const char *status, const char *message,
                    const char *host, int exit_code, int signal, const uint8_t *o, size_t olen,
                    bool otrunc, const uint8_t *e, size_t elen, bool etrunc);
void print_exec_list(bool open);
int print_exec_list_print(FILE *out);
/* The outcome of a copy as JSON: ok, direction, path (in the guest), local,
 * bytes, sha256 (hex). */
int print_copy_json(FILE *out, const char *direction, const char *guest_path, const char *local,
                    size_t bytes, const uint8_t sha[32]);

#endif
