/*
 * Shared by the fuzz targets: cut a fuzzer input into ZeroMQ frames.
 * Format: repeated [length: 1 byte][length bytes]; a length of 255 means
 * "the rest of the input". At most 12 frames.
 */
#ifndef FUZZ_FRAMES_H
#define FUZZ_FRAMES_H

#include <czmq.h>
#include <stddef.h>
#include <stdint.h>

static inline zmsg_t *fuzz_frames(const uint8_t *data, size_t size)
{
    zmsg_t *msg = zmsg_new();
    size_t off = 0;
    for (int n = 0; n < 12 && off < size; n++) {
        size_t len = data[off++];
        if (len == 255 || len > size - off)
            len = size - off;
        zmsg_addmem(msg, data + off, len);
        off += len;
    }
    return msg;
}

#endif
