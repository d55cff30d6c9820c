/*
 * pbjson: protobuf-c messages to and from JSON (jansson), driven by the
 * message descriptors, so every message of ttfleet.proto has one mapping and
 * a new field needs no code here.
 *
 * The mapping is proto3's JSON mapping with two choices made explicit:
 * every field is written (defaults included, so readers need no schema to
 * know a field exists), and 64-bit integers are written as JSON numbers
 * (every ttfleet value fits a double exactly). Reading accepts the field
 * name as written in the .proto or its lowerCamelCase form, integers as
 * numbers or decimal strings, enums by name or number, bytes as base64.
 * Enums are written in one spelling shared by ttctl --json and the Python
 * SDK: the value's name without the prefix all values of its enum share,
 * lower case (VmState VM_RUNNING -> "running", OutgoingMode OUTGOING_DENY
 * -> "deny"); Status keeps its names ("NOT_FOUND"), as error bodies do.
 * Reading accepts that spelling, the .proto name or the number.
 * Anything else is refused with a sentence naming the field: unknown
 * fields, wrong types, out-of-range numbers, nesting deeper than the schema.
 */
#ifndef PBJSON_H
#define PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

/* Every allocation of one decoded message, freed in one go. */
typedef struct _pbjson_arena_t pbjson_arena_t;

pbjson_arena_t *pbjson_arena_new(void);
void pbjson_arena_destroy(pbjson_arena_t **self_p);

/* Returns a new JSON object for msg (never NULL for a valid message). */
json_t *pbjson_encode(const ProtobufCMessage *msg);

/* Decodes obj (a JSON object) into a new message of type desc whose memory
 * all belongs to arena. Returns NULL with a human reason in err on bad
 * input. */
ProtobufCMessage *pbjson_decode(const ProtobufCMessageDescriptor *desc, json_t *obj,
                                pbjson_arena_t *arena, char *err, size_t errlen);

#define PBJSON_ENUM_NAME_MAX 64

/* The JSON spelling of ev, a value of ed, into buf; -1 when it does not fit. */
int pbjson_enum_name(const ProtobufCEnumDescriptor *ed, const ProtobufCEnumValue *ev, char *buf,
                     size_t len);

/* The lowerCamelCase form of a field name ("mem_mib" -> "memMib"). */
void pbjson_camel(const char *name, char *buf, size_t len);

#endif
