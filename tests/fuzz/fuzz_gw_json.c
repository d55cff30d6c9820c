/*
 * libFuzzer target: ttgw's JSON decoding (gw/pbjson.c), the part of the
 * gateway that reads every request body. The first byte picks the op
 * message of Request (as a route does), the rest is the body. A body that
 * decodes is packed to protobuf and encoded back to JSON, so both
 * directions run on whatever the decoder accepted.
 */
#include <stdint.h>
#include <stdlib.h>

#include "pbjson.h"
#include "ttfleet.pb-c.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *rd = &ttfleet__request__descriptor;
    const ProtobufCFieldDescriptor *f = &rd->fields[data[0] % rd->n_fields];
    const ProtobufCMessageDescriptor *desc =
        f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : rd;
    json_error_t jerr;
    json_t *j = json_loadb((const char *)data + 1, size - 1, JSON_REJECT_DUPLICATES, &jerr);
    if (!j)
        return 0;
    pbjson_arena_t *arena = pbjson_arena_new();
    char err[256];
    ProtobufCMessage *m = arena ? pbjson_decode(desc, j, arena, err, sizeof err) : NULL;
    if (m) {
        size_t len = protobuf_c_message_get_packed_size(m);
        uint8_t *buf = malloc(len ? len : 1);
        if (buf) {
            protobuf_c_message_pack(m, buf);
            ProtobufCMessage *back = protobuf_c_message_unpack(desc, NULL, len, buf);
            if (back) {
                json_t *out = pbjson_encode(back);
                free(json_dumps(out, JSON_COMPACT));
                json_decref(out);
                protobuf_c_message_free_unpacked(back, NULL);
            }
            free(buf);
        }
    }
    pbjson_arena_destroy(&arena);
    json_decref(j);
    return 0;
}
