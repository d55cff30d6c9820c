/*
 * libFuzzer target: what a guest (or a QEMU) can send the worker.
 *
 * The input is split at its first byte into two reads fed to the guest
 * agent parser (qga.c) after a sync, and every reply it yields goes through
 * each reply reader (qga_reply, guest-exec-status, guest-file-read). The
 * same bytes, line by line, go to the QMP line classifier and query-status
 * reader (qmp.c). Nothing may crash, leak or read out of bounds, and the
 * decoded output stays within its bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qga.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[256], st[64];
    qga_t *q = qga_new();
    size_t cut = size ? data[0] % (size + 1) : 0;
    if (size % 2)
        qga_expect_sync(q);
    if (qga_feed(q, data, cut, err, sizeof err) == 0)
        qga_feed(q, data + cut, size - cut, err, sizeof err);
    json_t *r;
    unsigned char buf[4096];
    while ((r = qga_next(q))) {
        json_t *ret;
        if (qga_reply(r, &ret, err, sizeof err) == 0) {
            qga_exec_t e;
            if (qga_exec_status_parse(ret, &e, err, sizeof err) == 0) {
                if (e.out_len > QGA_OUTPUT_MAX || e.err_len > QGA_OUTPUT_MAX)
                    abort();
                qga_exec_free(&e);
            }
            size_t len = 0;
            bool eof;
            if (qga_file_read_parse(ret, buf, &len, sizeof buf, &eof, err, sizeof err) == 0 &&
                len > sizeof buf)
                abort();
        }
        json_decref(r);
    }
    qga_destroy(&q);
    const uint8_t *p = data, *end = data + size;
    while (p < end) {
        const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
        size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
        qmp_line_kind((const char *)p, n, err, sizeof err);
        if (qmp_status_parse((const char *)p, n, st, sizeof st, err, sizeof err) == 0 &&
            strlen(st) >= sizeof st)
            abort();
        p += n + 1;
    }
    return 0;
}
