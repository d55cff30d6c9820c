/*
 * wire: TTW01 frames and VmSpec validation. See wire.h.
 *
 * The frame shapes themselves live in schema/ttframe.c (shared with the
 * broker and ttbench); this file adds the worker's reading of them: which
 * commands a worker accepts, with a reason a human can act on.
 */
#include "wire.h"
#include "ttframe.h"

#include <arpa/inet.h>
#include <string.h>

#include "vm.h"

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

int wire_parse(zmsg_t *msg, int *cmd, zframe_t **body, char *err, size_t errlen)
{
    size_t n = zmsg_size(msg);
    if (n < 3 || n > 4)
        FAIL("%zu frames (want 3 or 4)", n);
    zframe_t *f = zmsg_first(msg);
    if (zframe_size(f) != 0)
        FAIL("first frame is not empty");
    f = zmsg_next(msg);
    if (zframe_size(f) != strlen(TT_WORKER_PROTO) ||
        memcmp(zframe_data(f), TT_WORKER_PROTO, zframe_size(f)) != 0)
        FAIL("wrong protocol header (want %s)", TT_WORKER_PROTO);
    f = zmsg_next(msg);
    if (zframe_size(f) != 1)
        FAIL("command frame of %zu bytes (want 1)", zframe_size(f));
    int c = zframe_data(f)[0];
    if (c < TT_W_READY || c > TT_W_EVENT)
        FAIL("unknown command 0x%02x", c);
    zframe_t *b = zmsg_next(msg);
    if (b && zframe_size(b) > TT_MAX_WORKER_BODY)
        FAIL("body of %zu bytes is over the limit of %d", zframe_size(b), TT_MAX_WORKER_BODY);
    if (c == TT_W_COMMAND && !b)
        FAIL("COMMAND without a body");
    if ((c == TT_W_HEARTBEAT || c == TT_W_DISCONNECT) && b)
        FAIL("command 0x%02x carries a body", c);
    ttframe_worker_t w; /* the shared shape check agrees with the reasons above */
    if (ttframe_worker_parse(msg, false, TT_MAX_WORKER_BODY, &w))
        FAIL("not a TTW01 frame");
    *cmd = w.cmd;
    *body = w.body;
    return 0;
}

zmsg_t *wire_msg(int cmd, zframe_t **body_p)
{
    zmsg_t *msg = ttframe_worker_to(NULL, cmd, NULL, 0);
    if (!msg) {
        if (body_p)
            zframe_destroy(body_p);
        return NULL;
    }
    if (body_p && *body_p)
        zmsg_append(msg, body_p);
    return msg;
}

zframe_t *wire_pack(const ProtobufCMessage *m)
{
    return ttframe_pack(m);
}

bool wire_ip_valid(const char *s)
{
    struct in_addr a;
    return s && strlen(s) < 16 && inet_pton(AF_INET, s, &a) == 1;
}

static int s_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

bool wire_mac_valid(const char *s)
{
    if (!s || strlen(s) != 17)
        return false;
    for (int i = 0; i < 17; i++) {
        if (i % 3 == 2 ? s[i] != ':' : !s_hex(s[i]))
            return false;
    }
    return true;
}

bool wire_env_valid(const char *s)
{
    if (!s)
        return false;
    const char *slash = strchr(s, '/');
    if (!slash)
        return tt_name_valid(s);
    size_t tlen = (size_t)(slash - s);
    if (tlen == 0 || tlen > TT_MAX_NAME)
        return false;
    char tenant[TT_MAX_NAME + 1];
    memcpy(tenant, s, tlen);
    tenant[tlen] = 0;
    return tt_name_valid(tenant) && tt_name_valid(slash + 1);
}

int wire_spec_validate(const Ttfleet__VmSpec *spec, char *err, size_t errlen)
{
    if (spec->vm_id < TT_VMID_MIN || spec->vm_id > TT_VMID_MAX)
        FAIL("vm_id %u out of range %d..%d", spec->vm_id, TT_VMID_MIN, TT_VMID_MAX);
    switch (spec->desired) {
    case TTFLEET__VM_STATE__VM_ABSENT:
        return 0; /* destroying needs nothing but the id */
    case TTFLEET__VM_STATE__VM_RUNNING:
    case TTFLEET__VM_STATE__VM_STOPPED:
    case TTFLEET__VM_STATE__VM_PAUSED:
    case TTFLEET__VM_STATE__VM_SUSPENDED:
        break;
    default:
        FAIL("desired state %d is not one of absent, running, stopped, paused, suspended",
             (int)spec->desired);
    }
    if (!wire_env_valid(spec->env))
        FAIL("invalid env '%.140s': want tenant/name of [A-Za-z0-9._-]",
             spec->env ? spec->env : "");
    if (!tt_name_valid(spec->image))
        FAIL("invalid image name '%.80s'", spec->image ? spec->image : "");
    if (!tt_name_valid(spec->engine))
        FAIL("invalid engine name '%.80s'", spec->engine ? spec->engine : "");
    if (spec->cpu < 1 || spec->cpu > TT_MAX_CPU)
        FAIL("cpu %u out of range 1..%d", spec->cpu, TT_MAX_CPU);
    if (spec->mem_mib < 1 || spec->mem_mib > TT_MAX_MEM_MIB)
        FAIL("mem %u MiB out of range 1..%u", spec->mem_mib, TT_MAX_MEM_MIB);
    if (spec->disk_mib < 1 || spec->disk_mib > TT_MAX_DISK_MIB)
        FAIL("disk %u MiB out of range 1..%u", spec->disk_mib, TT_MAX_DISK_MIB);
    if (!wire_ip_valid(spec->ip))
        FAIL("invalid ip '%.40s'", spec->ip ? spec->ip : "");
    if (!wire_mac_valid(spec->mac))
        FAIL("invalid mac '%.40s'", spec->mac ? spec->mac : "");
    if (spec->n_ports > TT_MAX_PORTS_PER_VM)
        FAIL("%zu ports (at most %d)", spec->n_ports, TT_MAX_PORTS_PER_VM);
    for (size_t i = 0; i < spec->n_ports; i++) {
        const Ttfleet__PortMap *p = spec->ports[i];
        if (p->guest < 1 || p->guest > 65535)
            FAIL("guest port %u out of range 1..65535", p->guest);
        if (p->public_ != 0 && (p->public_ < TT_PORT_MIN || p->public_ > TT_PORT_MAX))
            FAIL("public port %u out of range %d..%d", p->public_, TT_PORT_MIN, TT_PORT_MAX);
        for (size_t j = 0; j < i; j++)
            if (spec->ports[j]->guest == p->guest)
                FAIL("guest port %u given twice", p->guest);
    }
    if (spec->expires_at <= 0)
        FAIL("expires_at %lld is not a time", (long long)spec->expires_at);
    return 0;
}
