/*
 * ttctl.h: what ttctl's command files share.
 *
 * ttctl is one command table (main.c) made of one table per command group
 * (env.c, guest.c, host.c, key.c, image.c, admission.c, watch.c, misc.c).
 * Each command row says its words, the registry op it calls (schema/ops.def:
 * its 7/MDP service comes from there), its positional arguments and a
 * declarative table of its options: name, kind of value, where the value
 * goes in the command's argument struct, its range and its help. One parser
 * (parse.c) reads every command line against that table, validates each
 * value whole and in range, and exits with a usage error (2) naming the
 * argument; `ttctl GROUP VERB --help` and `ttctl completion` are printed
 * from the same tables.
 */
#ifndef TTCTL_H
#define TTCTL_H

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ttclient.h"
#include "ttctl_print.h"
#include "ttguest.h"
#include "ttops.h"
#include "ttproto.h"

#define EXIT_STATUS 1
#define EXIT_USAGE 2
#define EXIT_TRANSPORT 3

#define TTCTL_MAX_TIMEOUT 3600000
#define TTCTL_DEFAULT_EVENTS "tcp://127.0.0.1:5557"
#define TTCTL_DEFAULT_WAIT 300 /* seconds a --wait waits */
#define TTCTL_WAIT_POLL_MS 250 /* image pull --wait: how often it asks */

typedef struct ctl_cmd_s ctl_cmd_t;

/* How results are printed (--output / -o). */
typedef enum { CTL_OUT_TABLE, CTL_OUT_WIDE, CTL_OUT_JSON, CTL_OUT_YAML } ctl_output_t;

/* What the global options and the command line as a whole say. */
typedef struct {
    const char *broker;
    const char *tenant;
    const char *key;        /* CURVE: this client's cert (and key_secret), or NULL */
    const char *broker_key; /* CURVE: the broker's public cert, or NULL */
    const char *events;     /* the broker's events endpoint, for watch */
    ctl_output_t output;
    bool json; /* output is JSON or YAML: the printers build the JSON tree */
    int timeout;
    const ctl_cmd_t *cmd;
    /* the positionals of the command line, in order; n_pos_opt of them came
     * before a "--" (all of them when there was none) */
    const char **pos;
    int n_pos;
    int n_pos_opt;
} ctl_t;

/* The kinds of option value. Numbers land in a uint64_t, texts in a
 * const char *, flags in a bool, at off in the command's argument struct. */
typedef enum {
    CTL_FLAG,     /* no value: bool true */
    CTL_INT,      /* a whole number in min..max */
    CTL_SIZE,     /* MiB: a whole number, or with a unit M, G or T (2G = 2048) */
    CTL_DURATION, /* seconds: a whole number, or 90s, 30m, 2h, 1d, 1h30m */
    CTL_MS,       /* milliseconds: a whole number, or with a unit ms, s, m, h */
    CTL_STRING,   /* any text */
    CTL_NAME,     /* a name as tt_name_valid() takes it */
    CTL_CHOICE,   /* one of choices ("a|b|c") */
    CTL_OPTIONAL, /* a flag that may take one of choices as its value: "" or the choice */
    CTL_CALL,     /* call(ctl, args, value): repeated or order-dependent options */
} ctl_kind_t;

typedef struct {
    const char *name; /* "--cpu" */
    ctl_kind_t kind;
    size_t off; /* of the destination in the command's argument struct */
    uint64_t min, max;
    const char *meta; /* the value's name in help: "N", "MIB", "SECS" */
    const char *help;
    void (*call)(ctl_t *ctl, void *args, const char *value); /* CTL_CALL (value NULL: a flag) */
    const char *choices;                                     /* CTL_CHOICE, CTL_OPTIONAL */
    bool call_flag;                                          /* CTL_CALL without a value */
} ctl_opt_t;

/* The libttclient call of a command whose only argument is an env name. */
typedef int (*ctl_env_ref_fn)(ttclient_t *, const char *, Ttfleet__Reply **);

struct ctl_cmd_s {
    const char *group; /* "env", "host", or NULL for a top-level verb */
    const char *verb;
    const char *op;        /* the registry op (tt_op_by_field) it calls, NULL when none */
    const char *args;      /* the positionals in the synopsis: "NAME VMID" */
    const char *help;      /* what it does; the options' help follows from opts */
    const ctl_opt_t *opts; /* ends with a row whose name is NULL; NULL for none */
    size_t args_size;      /* the command's argument struct */
    int min_pos, max_pos;  /* positionals; max_pos -1: any number */
    const char *need;      /* the usage error when fewer than min_pos were given */
    int (*run)(ctl_t *ctl, void *args);
    ctl_env_ref_fn ref; /* for ctl_env_ref: the call */
    const char *done;   /* for ctl_env_ref: what it did */
};

#define CTL_OPT_END                                                                                \
    {                                                                                              \
        NULL, CTL_FLAG, 0, 0, 0, NULL, NULL, NULL, NULL, false                                     \
    }

/* The command tables of the groups, each ending with a row whose verb is NULL. */
extern const ctl_cmd_t ctl_env_cmds[], ctl_guest_cmds[], ctl_host_cmds[], ctl_key_cmds[],
    ctl_image_cmds[], ctl_admission_cmds[], ctl_watch_cmds[], ctl_misc_cmds[], ctl_cluster_cmds[];
/* All commands in the order `ttctl --help` lists them. */
extern const ctl_cmd_t *const ctl_groups[];
extern const char *ctl_global_help;
extern const ctl_opt_t ctl_global_opts[];

/* parse.c: the one option parser. */
void ctl_usage_error(ctl_t *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));
uint64_t ctl_number(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max);
/* A duration in seconds: whole seconds, or 90s, 30m, 2h, 1d and sums of
 * them (1h30m); false if text is none of these or over max. */
bool ctl_duration_parse(const char *text, uint64_t unit_ms, uint64_t *out);
uint64_t ctl_duration(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max);
const char *ctl_name(ctl_t *ctl, const char *what, const char *text);
/* Parses argv[i...] against ctl->cmd's options and the global ones into a
 * new argument struct (freed at exit); positionals go to ctl->pos. */
void *ctl_parse(ctl_t *ctl, int argc, char **argv, int i);
/* One option at argv[i] (the command's, else a global one); returns the
 * index of the next argument. */
int ctl_option(ctl_t *ctl, void *args, int argc, char **argv, int i);
void ctl_print_command_help(FILE *out, const ctl_cmd_t *cmd);
void ctl_print_synopsis(FILE *out, const ctl_cmd_t *cmd);

/* common.c: the client, the reply, files. */
ttclient_t *ctl_client(ctl_t *ctl);
/* The 7/MDP service of the command's registry op. */
const char *ctl_service(const ctl_t *ctl);
int ctl_finish(ctl_t *ctl, ttclient_t **client_p, int rc, Ttfleet__Reply **reply_p,
               const char *done_text, bool list_all);
char *ctl_read_small(ctl_t *ctl, const char *what, const char *path, size_t max, size_t *len);
uint8_t *ctl_slurp(ctl_t *ctl, const char *path, size_t max, size_t *len, const char *what);
/* show, stop, pause, delete: one env name, nothing else. */
int ctl_env_ref(ctl_t *ctl, void *args);

/* config.c */
typedef struct {
    char broker[512];
    char tenant[TT_MAX_NAME + 1];
    char key[512];
    char broker_key[512];
    char events[512];
} ctl_config_t;
void ctl_config_load(ctl_config_t *config);

/* completion (main.c) */
int ctl_completion(ctl_t *ctl, const char *shell);

#endif
