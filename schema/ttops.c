/*
 * ttops: schema/ops.def expanded into the table of ttops.h.
 */
#include "ttops.h"
#include "ttproto.h"

#include <string.h>

#define TT_SVC_ENV TT_SERVICE_ENV
#define TT_SVC_ADMIN TT_SERVICE_ADMIN
#define TT_M_GET "GET"
#define TT_M_POST "POST"
#define TT_M_PATCH "PATCH"
#define TT_M_DELETE "DELETE"
#define TT_M_NONE NULL
#define TT_ARGS(...) {__VA_ARGS__}

const tt_op_t tt_ops[] = {
#define TT_OP(CASE, field, handler, service, flags, method, path, params, query, ok, cli)          \
    {TTFLEET__REQUEST__OP_##CASE, #field, TT_SVC_##service, flags, TT_M_##method, path, params,   \
     query, ok, cli},
#include "ops.def"
#undef TT_OP
};
const size_t tt_ops_n = sizeof tt_ops / sizeof tt_ops[0];

const tt_op_t *tt_op_find(int op_case)
{
    for (size_t i = 0; i < tt_ops_n; i++)
        if (tt_ops[i].op_case == op_case)
            return &tt_ops[i];
    return NULL;
}

const tt_op_t *tt_op_by_field(const char *field)
{
    for (size_t i = 0; field && i < tt_ops_n; i++)
        if (strcmp(tt_ops[i].field, field) == 0)
            return &tt_ops[i];
    return NULL;
}
