/*
 * test_registry: the op registry (schema/ops.def) against the protocol.
 * Every case of Request.op has exactly one row; every row names a real
 * case whose field has its name; REST paths have one "*" per parameter,
 * and each parameter and query name is a field of the op's message; every
 * row's service is tt.env or tt.admin, and an admin-only op is on
 * tt.admin. A new Request.op case without a row fails here.
 */
#include "ttops.h"
#include "ttproto.h"

#include <stdio.h>
#include <string.h>

static int s_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            s_failures++;                                                                          \
        }                                                                                          \
    } while (0)

static const ProtobufCFieldDescriptor *s_op_field(int op_case)
{
    return protobuf_c_message_descriptor_get_field(&ttfleet__request__descriptor,
                                                   (unsigned)op_case);
}

static bool s_in_op_oneof(const ProtobufCFieldDescriptor *f)
{
    return f && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && f->quantifier_offset ==
               offsetof(Ttfleet__Request, op_case);
}

static void s_every_case_has_one_row(void)
{
    const ProtobufCMessageDescriptor *d = &ttfleet__request__descriptor;
    int cases = 0;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (!s_in_op_oneof(f))
            continue;
        cases++;
        int rows = 0;
        for (size_t j = 0; j < tt_ops_n; j++)
            rows += tt_ops[j].op_case == (int)f->id;
        CHECK(rows == 1, "Request.op case %s (%u) has %d rows in schema/ops.def", f->name, f->id,
              rows);
    }
    CHECK((size_t)cases == tt_ops_n, "%d op cases, %zu registry rows", cases, tt_ops_n);
}

static void s_rows_are_sound(void)
{
    for (size_t i = 0; i < tt_ops_n; i++) {
        const tt_op_t *op = &tt_ops[i];
        const ProtobufCFieldDescriptor *f = s_op_field(op->op_case);
        CHECK(s_in_op_oneof(f), "row %s: case %d is not a Request.op case", op->field,
              op->op_case);
        if (!s_in_op_oneof(f))
            continue;
        CHECK(strcmp(f->name, op->field) == 0, "row %s: case %d is field %s", op->field,
              op->op_case, f->name);
        CHECK(tt_op_find(op->op_case) == op, "row %s: tt_op_find finds another row", op->field);
        CHECK(tt_op_by_field(op->field) == op, "row %s: tt_op_by_field finds another row",
              op->field);
        CHECK(strcmp(op->service, TT_SERVICE_ENV) == 0 || strcmp(op->service, TT_SERVICE_ADMIN) == 0,
              "row %s: service %s", op->field, op->service);
        if (op->flags & TT_OPF_ADMIN)
            CHECK(strcmp(op->service, TT_SERVICE_ADMIN) == 0, "row %s: admin op on %s", op->field,
                  op->service);
        CHECK(op->cli != NULL, "row %s: cli is NULL", op->field);
        if (!op->method) {
            CHECK(!op->params[0] && !op->query[0] && op->path && !*op->path,
                  "row %s: parameters or a path without a method", op->field);
            continue;
        }
        CHECK(op->path[0] == '/', "row %s: path %s", op->field, op->path);
        CHECK(op->ok_status >= 200 && op->ok_status < 300, "row %s: ok %d", op->field,
              op->ok_status);
        int stars = 0;
        for (const char *p = op->path; *p; p++)
            stars += *p == '*';
        int params = 0;
        while (params < TT_OP_MAX_PARAMS && op->params[params])
            params++;
        CHECK(stars == params, "row %s: %d '*' in %s for %d parameters", op->field, stars,
              op->path, params);
        const ProtobufCMessageDescriptor *m = f->descriptor;
        CHECK(f->type == PROTOBUF_C_TYPE_MESSAGE && m, "row %s: not a message", op->field);
        if (!m)
            continue;
        for (int k = 0; k < TT_OP_MAX_PARAMS && op->params[k]; k++)
            CHECK(protobuf_c_message_descriptor_get_field_by_name(m, op->params[k]),
                  "row %s: parameter %s is no field of %s", op->field, op->params[k], m->name);
        for (int k = 0; k < TT_OP_MAX_QUERY && op->query[k]; k++)
            CHECK(protobuf_c_message_descriptor_get_field_by_name(m, op->query[k]),
                  "row %s: query %s is no field of %s", op->field, op->query[k], m->name);
        /* two rows never claim one method and path */
        for (size_t j = 0; j < i; j++)
            if (tt_ops[j].method)
                CHECK(strcmp(tt_ops[j].method, op->method) || strcmp(tt_ops[j].path, op->path),
                      "rows %s and %s: both %s %s", tt_ops[j].field, op->field, op->method,
                      op->path);
    }
}

int main(void)
{
    s_every_case_has_one_row();
    s_rows_are_sound();
    CHECK(tt_op_find(-1) == NULL, "an unknown case has a row");
    CHECK(tt_op_by_field("no_such_op") == NULL, "an unknown field has a row");
    if (s_failures) {
        fprintf(stderr, "%d failures\n", s_failures);
        return 1;
    }
    printf("registry: %zu ops, every Request.op case has one sound row\n", tt_ops_n);
    return 0;
}
