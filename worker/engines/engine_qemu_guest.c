/*
 * engine_qemu_guest: exec and copy inside a QEMU VM through its guest
 * agent (qga.c: guest-exec, guest-file-*), the qemu engine's
 * guest_backend_t; guestop.c runs it on its threads. An exec past its
 * timeout is ended with `kill -KILL PID` through the agent (qga.c), which
 * has no kill of its own.
 */
#include "engine.h"

#include <stdio.h>
#include <string.h>

#include "qga.h"
#include "ttproto.h"

#define S_AGENT_CONNECT_MS 5000

static qga_conn_t *s_agent(const guestop_vm_t *vm, guestop_exec_t *res)
{
    char why[300];
    qga_conn_t *c = qga_open(vm->agent_sock, S_AGENT_CONNECT_MS, why, sizeof why);
    if (!c) {
        res->status = TTFLEET__STATUS__GUEST_UNREACHABLE;
        snprintf(res->msg, sizeof res->msg, "%s", why);
    }
    return c;
}

static void s_exec(const guestop_config_t *cfg, const guestop_vm_t *vm, char *const *argv,
                   const void *in, size_t in_len, int timeout_ms, guestop_exec_t *res)
{
    (void)cfg;
    memset(res, 0, sizeof *res);
    res->exit_code = -1;
    qga_conn_t *c = s_agent(vm, res);
    if (!c)
        return;
    int64_t deadline = tt_mono_ms() + timeout_ms;
    qga_exec_t qx;
    char why[300];
    if (qga_exec(c, (const char *const *)argv, in, in_len, timeout_ms, &qx, why, sizeof why)) {
        bool late = tt_mono_ms() >= deadline - 50;
        res->status = late ? TTFLEET__STATUS__TIMEOUT : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(res->msg, sizeof res->msg, "%s%s", why, late ? " (it may still run)" : "");
    } else {
        /* killed past its timeout: TIMEOUT with what it wrote, as the
         * process backend answers */
        res->status = qx.killed ? TTFLEET__STATUS__TIMEOUT : TTFLEET__STATUS__OK;
        if (qx.killed)
            snprintf(res->msg, sizeof res->msg,
                     "the command ran over its timeout of %d s and was killed (kill -KILL of its "
                     "%s in the guest)",
                     timeout_ms / 1000, qx.group ? "process group" : "pid");
        res->exit_code = qx.signal > 0 || qx.killed ? -1 : qx.exit_code;
        res->signal = qx.signal > 0 ? qx.signal : qx.killed ? 9 : 0;
        res->out = qx.out;
        res->out_len = qx.out_len;
        res->out_trunc = qx.out_truncated;
        res->err = qx.errb;
        res->err_len = qx.err_len;
        res->err_trunc = qx.err_truncated;
    }
    qga_close(&c);
}

static void s_file(const guestop_config_t *cfg, const guestop_vm_t *vm, bool put, const char *path,
                   unsigned char **data, size_t *len, int file_ms, guestop_exec_t *res)
{
    (void)cfg;
    qga_conn_t *c = s_agent(vm, res);
    if (!c)
        return;
    char why[300];
    unsigned char sha[32];
    int rc = put ? qga_file_put(c, path, *data, *len, sha, file_ms, why, sizeof why)
                 : qga_file_get(c, path, data, len, sha, file_ms, why, sizeof why);
    if (rc) {
        res->status =
            strstr(why, "larger than") ? TTFLEET__STATUS__TOO_LARGE : TTFLEET__STATUS__GUEST_FAILED;
        snprintf(res->msg, sizeof res->msg, "%s", why);
    } else
        res->status = TTFLEET__STATUS__OK;
    qga_close(&c);
}

const guest_backend_t engine_qemu_guest = {
    .exec = s_exec,
    .file = s_file,
};
