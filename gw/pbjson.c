/*
 * pbjson: see pbjson.h.
 *
 * Both directions walk the descriptor's field table. Each field's storage is
 * found by its offset; repeated fields have their count at
 * quantifier_offset, oneof members their case there. proto3 scalar fields
 * have no presence flag, so encoding writes them all and decoding leaves a
 * missing field at its zero value, which the broker reads as "default".
 */
#include "pbjson.h"

#include <errno.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PBJSON_MAX_DEPTH 8
#define PBJSON_MAX_REPEATED 4096

struct _pbjson_arena_t {
    void **blocks;
    size_t count, size;
};

pbjson_arena_t *pbjson_arena_new(void)
{
    return calloc(1, sizeof(pbjson_arena_t));
}

void pbjson_arena_destroy(pbjson_arena_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pbjson_arena_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++)
        free(self->blocks[i]);
    free(self->blocks);
    free(self);
    *self_p = NULL;
}

/* The length of the prefix every value name of ed shares, up to and
 * including an underscore ("VM_" of VmState), 0 when there is none. */
static size_t s_enum_prefix(const ProtobufCEnumDescriptor *ed)
{
    if (ed->n_values < 2)
        return 0;
    const char *first = ed->values[0].name;
    size_t len = 0;
    for (size_t i = 0; first[i]; i++) {
        if (first[i] != '_')
            continue;
        bool shared = true;
        for (unsigned k = 1; k < ed->n_values && shared; k++)
            shared = strncmp(ed->values[k].name, first, i + 1) == 0;
        if (!shared)
            break;
        len = i + 1;
    }
    return len;
}

static bool s_enum_keeps_name(const ProtobufCEnumDescriptor *ed)
{
    return strcmp(ed->name, "ttfleet.Status") == 0;
}

int pbjson_enum_name(const ProtobufCEnumDescriptor *ed, const ProtobufCEnumValue *ev, char *buf,
                     size_t len)
{
    const char *name = ev->name;
    if (!s_enum_keeps_name(ed))
        name += s_enum_prefix(ed);
    size_t n = strlen(name);
    if (n + 1 > len)
        return -1;
    for (size_t i = 0; i <= n; i++)
        buf[i] = s_enum_keeps_name(ed)
                     ? name[i]
                     : (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    return 0;
}

/* The value a JSON string names: its JSON spelling or the .proto name. */
static const ProtobufCEnumValue *s_enum_by_name(const ProtobufCEnumDescriptor *ed, const char *s)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, s);
    if (ev)
        return ev;
    char name[PBJSON_ENUM_NAME_MAX];
    for (unsigned i = 0; i < ed->n_values; i++)
        if (pbjson_enum_name(ed, &ed->values[i], name, sizeof name) == 0 && strcmp(name, s) == 0)
            return &ed->values[i];
    return NULL;
}

static void *s_alloc(pbjson_arena_t *self, size_t n)
{
    if (self->count == self->size) {
        size_t size = self->size ? self->size * 2 : 16;
        void **blocks = realloc(self->blocks, size * sizeof(void *));
        if (!blocks)
            return NULL;
        self->blocks = blocks;
        self->size = size;
    }
    void *p = calloc(1, n ? n : 1);
    if (p)
        self->blocks[self->count++] = p;
    return p;
}

void pbjson_camel(const char *name, char *buf, size_t len)
{
    size_t o = 0;
    bool up = false;
    for (const char *c = name; *c && o + 1 < len; c++) {
        if (*c == '_') {
            up = true;
            continue;
        }
        buf[o++] = up && *c >= 'a' && *c <= 'z' ? (char)(*c - 'a' + 'A') : *c;
        up = false;
    }
    if (len)
        buf[o] = 0;
}

/* ---- base64 (RFC 4648, with padding) ---- */

static const char s_b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *s_b64_encode(const uint8_t *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)data[i + 1] << 8;
        if (i + 2 < len)
            v |= data[i + 2];
        out[o++] = s_b64[(v >> 18) & 63];
        out[o++] = s_b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? s_b64[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? s_b64[v & 63] : '=';
    }
    out[o] = 0;
    return out;
}

static int s_b64_value(char c)
{
    const char *p = c ? strchr(s_b64, c) : NULL;
    if (p)
        return (int)(p - s_b64);
    if (c == '-')  /* the URL-safe alphabet, which proto3 JSON also accepts */
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

/* Decodes text into out (at least strlen(text) / 4 * 3 + 3 bytes); -1 if it
 * is not base64. */
static int s_b64_decode(const char *text, uint8_t *out, size_t *out_len)
{
    size_t len = strlen(text), o = 0;
    while (len > 0 && text[len - 1] == '=')
        len--;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        int v = s_b64_value(text[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *out_len = o;
    return 0;
}

/* ---- encode ---- */

static json_t *s_encode_value(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        return json_integer(*(const int32_t *)p);
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return json_integer(*(const uint32_t *)p);
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        return json_integer(*(const int64_t *)p);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: {
        uint64_t v = *(const uint64_t *)p;
        return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
    }
    case PROTOBUF_C_TYPE_FLOAT:
        return json_real(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return json_real(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return json_boolean(*(const protobuf_c_boolean *)p);
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
        char name[PBJSON_ENUM_NAME_MAX];
        if (!ev || pbjson_enum_name(ed, ev, name, sizeof name) != 0)
            return json_integer(v);
        return json_string(name);
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        json_t *j = json_string(s ? s : "");
        /* a string field that is not UTF-8 (a worker's message) is still shown */
        return j ? j : json_string("(not UTF-8)");
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *b = p;
        char *text = s_b64_encode(b->data, b->len);
        json_t *j = json_string(text ? text : "");
        free(text);
        return j;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        return m ? pbjson_encode(m) : json_null();
    }
    }
    return json_null();
}

static size_t s_elem_size(ProtobufCType type)
{
    switch (type) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    default:
        return 4;
    }
}

json_t *pbjson_encode(const ProtobufCMessage *msg)
{
    const ProtobufCMessageDescriptor *d = msg->descriptor;
    json_t *obj = json_object();
    const char *base = (const char *)msg;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        json_t *v;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)(base + f->offset);
            v = json_array();
            for (size_t k = 0; k < n; k++)
                json_array_append_new(v, s_encode_value(f, arr + k * s_elem_size(f->type)));
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t which = *(const uint32_t *)(base + f->quantifier_offset);
                if (which != f->id)
                    continue;
            }
            v = s_encode_value(f, base + f->offset);
        }
        json_object_set_new(obj, f->name, v);
    }
    return obj;
}

/* ---- decode ---- */

typedef struct {
    pbjson_arena_t *arena;
    char *err;
    size_t errlen;
    int depth;
} s_ctx_t;

static int s_fail(s_ctx_t *ctx, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int s_fail(s_ctx_t *ctx, const char *field, const char *fmt, ...)
{
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    snprintf(ctx->err, ctx->errlen, "field '%s': %s", field, what);
    return -1;
}

/* An integer from a JSON number (integral) or a decimal string, within
 * [min, max] (max as unsigned for the 64-bit unsigned types). */
static int s_int(s_ctx_t *ctx, const ProtobufCFieldDescriptor *f, json_t *j, bool is_unsigned,
                 int64_t min, uint64_t max, uint64_t *out)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < min || (v >= 0 && (uint64_t)v > max))
            return s_fail(ctx, f->name, "number out of range");
        *out = (uint64_t)v;
        return 0;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);
        /* range first: casting a double outside int64 is undefined (a
         * finding of tests/fuzz/fuzz_gw_json.c); NaN fails both tests */
        if (!(v >= -9.2e18 && v <= 9.2e18) || v < (double)min || (v >= 0 && v > (double)max))
            return s_fail(ctx, f->name, "number out of range");
        if (v != (double)(int64_t)v)
            return s_fail(ctx, f->name, "expected an integer");
        *out = (uint64_t)(int64_t)v;
        return 0;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end = NULL;
        errno = 0;
        if (!*s || (is_unsigned && *s == '-'))
            return s_fail(ctx, f->name, "expected a non-negative integer");
        if (is_unsigned) {
            unsigned long long v = strtoull(s, &end, 10);
            if (errno || *end || v > max)
                return s_fail(ctx, f->name, "not an integer in range: '%.40s'", s);
            *out = v;
        } else {
            long long v = strtoll(s, &end, 10);
            if (errno || *end || v < min || (v >= 0 && (uint64_t)v > max))
                return s_fail(ctx, f->name, "not an integer in range: '%.40s'", s);
            *out = (uint64_t)v;
        }
        return 0;
    }
    return s_fail(ctx, f->name, "expected an integer");
}

static ProtobufCMessage *s_decode(s_ctx_t *ctx, const ProtobufCMessageDescriptor *desc, json_t *obj);

static int s_decode_value(s_ctx_t *ctx, const ProtobufCFieldDescriptor *f, json_t *j, void *p)
{
    uint64_t u = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if (s_int(ctx, f, j, false, INT32_MIN, INT32_MAX, &u) != 0)
            return -1;
        *(int32_t *)p = (int32_t)(int64_t)u;
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if (s_int(ctx, f, j, true, 0, UINT32_MAX, &u) != 0)
            return -1;
        *(uint32_t *)p = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if (s_int(ctx, f, j, false, INT64_MIN, INT64_MAX, &u) != 0)
            return -1;
        *(int64_t *)p = (int64_t)u;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if (s_int(ctx, f, j, true, 0, UINT64_MAX, &u) != 0)
            return -1;
        *(uint64_t *)p = u;
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(j))
            return s_fail(ctx, f->name, "expected a number");
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)p = (float)json_number_value(j);
        else
            *(double *)p = json_number_value(j);
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return s_fail(ctx, f->name, "expected true or false");
        *(protobuf_c_boolean *)p = json_is_true(j);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        const ProtobufCEnumValue *ev = NULL;
        if (json_is_string(j))
            ev = s_enum_by_name(ed, json_string_value(j));
        else if (json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
                 json_integer_value(j) <= INT32_MAX)
            ev = protobuf_c_enum_descriptor_get_value(ed, (int)json_integer_value(j));
        else
            return s_fail(ctx, f->name, "expected a name of %s", ed->name);
        if (!ev)
            return s_fail(ctx, f->name, "not a value of %s", ed->name);
        *(int *)p = ev->value;
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return s_fail(ctx, f->name, "expected a string");
        size_t n = json_string_length(j);
        const char *s = json_string_value(j);
        if (strlen(s) != n)
            return s_fail(ctx, f->name, "string contains a NUL character");
        char *copy = s_alloc(ctx->arena, n + 1);
        if (!copy)
            return s_fail(ctx, f->name, "out of memory");
        memcpy(copy, s, n + 1);
        *(char **)p = copy;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            return s_fail(ctx, f->name, "expected a base64 string");
        const char *s = json_string_value(j);
        uint8_t *data = s_alloc(ctx->arena, strlen(s) / 4 * 3 + 3);
        size_t len = 0;
        if (!data)
            return s_fail(ctx, f->name, "out of memory");
        if (s_b64_decode(s, data, &len) != 0)
            return s_fail(ctx, f->name, "not base64");
        ((ProtobufCBinaryData *)p)->data = data;
        ((ProtobufCBinaryData *)p)->len = len;
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (!json_is_object(j))
            return s_fail(ctx, f->name, "expected an object");
        ProtobufCMessage *m = s_decode(ctx, f->descriptor, j);
        if (!m)
            return -1;
        *(ProtobufCMessage **)p = m;
        return 0;
    }
    }
    return s_fail(ctx, f->name, "unsupported type");
}

static const ProtobufCFieldDescriptor *s_field(const ProtobufCMessageDescriptor *desc,
                                               const char *key)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(desc, key);
    if (f)
        return f;
    char camel[128];
    for (unsigned i = 0; i < desc->n_fields; i++) {
        pbjson_camel(desc->fields[i].name, camel, sizeof camel);
        if (strcmp(camel, key) == 0)
            return &desc->fields[i];
    }
    return NULL;
}

static ProtobufCMessage *s_decode(s_ctx_t *ctx, const ProtobufCMessageDescriptor *desc, json_t *obj)
{
    if (!json_is_object(obj)) {
        snprintf(ctx->err, ctx->errlen, "expected a JSON object for %s", desc->short_name);
        return NULL;
    }
    if (++ctx->depth > PBJSON_MAX_DEPTH) {
        snprintf(ctx->err, ctx->errlen, "objects nested too deep");
        return NULL;
    }
    ProtobufCMessage *msg = s_alloc(ctx->arena, desc->sizeof_message);
    if (!msg) {
        snprintf(ctx->err, ctx->errlen, "out of memory");
        return NULL;
    }
    protobuf_c_message_init(desc, msg);
    char *base = (char *)msg;
    uint32_t seen[64] = {0};  /* field ids set, to refuse a field given twice */
    size_t n_seen = 0;
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val) {
        const ProtobufCFieldDescriptor *f = s_field(desc, key);
        if (!f) {
            snprintf(ctx->err, ctx->errlen, "unknown field '%.64s' in %s", key, desc->short_name);
            return NULL;
        }
        for (size_t k = 0; k < n_seen; k++)
            if (seen[k] == f->id) {
                snprintf(ctx->err, ctx->errlen, "field '%s' given twice", f->name);
                return NULL;
            }
        if (n_seen < 64)
            seen[n_seen++] = f->id;
        if (json_is_null(val))
            continue;  /* proto3 JSON: null means the default */
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(val)) {
                s_fail(ctx, f->name, "expected an array");
                return NULL;
            }
            size_t n = json_array_size(val);
            if (n > PBJSON_MAX_REPEATED) {
                s_fail(ctx, f->name, "too many elements");
                return NULL;
            }
            size_t es = s_elem_size(f->type);
            char *arr = s_alloc(ctx->arena, n * es);
            if (!arr) {
                snprintf(ctx->err, ctx->errlen, "out of memory");
                return NULL;
            }
            for (size_t k = 0; k < n; k++)
                if (s_decode_value(ctx, f, json_array_get(val, k), arr + k * es) != 0)
                    return NULL;
            *(size_t *)(base + f->quantifier_offset) = n;
            *(char **)(base + f->offset) = arr;
        } else {
            if (s_decode_value(ctx, f, val, base + f->offset) != 0)
                return NULL;
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
                if (*which != 0) {
                    snprintf(ctx->err, ctx->errlen, "field '%s': only one of its group may be set",
                             f->name);
                    return NULL;
                }
                *which = f->id;
            }
        }
    }
    ctx->depth--;
    return msg;
}

ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, json_t *obj,
                                pbjson_arena_t *arena, char *err, size_t errlen)
{
    s_ctx_t ctx = {.arena = arena, .err = err, .errlen = errlen};
    err[0] = 0;
    return s_decode(&ctx, desc, obj);
}
