/*
 * ttops: the registry of client operations (schema/ops.def) as a table
 * every program can read: for each Request.op case its field name, 7/MDP
 * service, flags, REST route and ttctl command. The broker expands ops.def
 * itself to get its handler table; everything else asks here.
 */
#ifndef TTOPS_H
#define TTOPS_H

#include <stddef.h>

/* The flags of an operation (ops.def's header says what each means). */
enum {
    TT_OPF_ADMIN = 1,
    TT_OPF_RECORD = 2,
    TT_OPF_OP = 4,
    TT_OPF_AUDIT = 8,
    TT_OPF_RATE = 16,
    TT_OPF_BODY = 32,
    TT_OPF_NEED_BODY = 64 | 32,
    TT_OPF_ONCE = 128,
};
#define TT_OPF_CHANGE (TT_OPF_RECORD | TT_OPF_AUDIT)

#define TT_OP_MAX_PARAMS 2
#define TT_OP_MAX_QUERY 4

typedef struct {
    int op_case;              /* Ttfleet__Request__OpCase */
    const char *field;        /* the Request.op field, "env_create" */
    const char *service;      /* TT_SERVICE_ENV or TT_SERVICE_ADMIN */
    unsigned flags;           /* TT_OPF_* */
    const char *method;       /* "POST", ...; NULL when it has no REST route */
    const char *path;         /* "/v1/envs/x/stop" shape, "*" one segment */
    const char *params[TT_OP_MAX_PARAMS]; /* fields the "*" segments fill */
    const char *query[TT_OP_MAX_QUERY];   /* fields the query string may set */
    int ok_status;            /* HTTP status of a success */
    const char *cli;          /* "env create"; "" when ttctl has none */
} tt_op_t;

extern const tt_op_t tt_ops[];
extern const size_t tt_ops_n;

/* The registry row of op_case, NULL for an unknown case. */
const tt_op_t *tt_op_find(int op_case);
/* The registry row of a Request.op field name, NULL when none. */
const tt_op_t *tt_op_by_field(const char *field);

#endif
