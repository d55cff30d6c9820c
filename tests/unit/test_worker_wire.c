/*
 * Unit test of TTW01 frame checks and VmSpec validation (worker/vm/wire.c).
 */
#include "test_util.h"

#include "wire.h"

static zmsg_t *s_msg(int nframes, const char *empty, const char *proto, const void *cmd,
                     size_t cmdlen, size_t bodylen)
{
    zmsg_t *m = zmsg_new();
    if (nframes > 0)
        zmsg_addmem(m, empty, strlen(empty));
    if (nframes > 1)
        zmsg_addstr(m, proto);
    if (nframes > 2)
        zmsg_addmem(m, cmd, cmdlen);
    if (nframes > 3) {
        zframe_t *f = zframe_new(NULL, bodylen);
        zmsg_append(m, &f);
    }
    if (nframes > 4)
        zmsg_addstr(m, "extra");
    return m;
}

static int s_parse(zmsg_t *m, int *cmd)
{
    zframe_t *body;
    char err[128];
    int rc = wire_parse(m, cmd, &body, err, sizeof err);
    zmsg_destroy(&m);
    return rc;
}

static void s_spec(Ttfleet__VmSpec *s, Ttfleet__PortMap *p, Ttfleet__PortMap **pp)
{
    Ttfleet__VmSpec init = TTFLEET__VM_SPEC__INIT;
    *s = init;
    s->vm_id = 5;
    s->env = "alice/ci-1";
    s->image = "sleeper";
    s->engine = "process";
    s->cpu = 2;
    s->mem_mib = 1024;
    s->disk_mib = 40960;
    s->ip = "10.10.0.5";
    s->mac = "52:54:00:00:00:05";
    Ttfleet__PortMap pinit = TTFLEET__PORT_MAP__INIT;
    *p = pinit;
    p->guest = 22;
    p->public_ = 40000;
    pp[0] = p;
    s->n_ports = 1;
    s->ports = pp;
    s->expires_at = 1700000000;
    s->desired = TTFLEET__VM_STATE__VM_RUNNING;
}

int main(void)
{
    int cmd;
    byte hb = TT_W_HEARTBEAT, co = TT_W_COMMAND, bad = 0x7f;
    CHECK(s_parse(s_msg(3, "", "TTW01", &hb, 1, 0), &cmd) == 0 && cmd == TT_W_HEARTBEAT);
    CHECK(s_parse(s_msg(4, "", "TTW01", &co, 1, 10), &cmd) == 0 && cmd == TT_W_COMMAND);
    CHECK(s_parse(s_msg(3, "", "TTW01", &co, 1, 0), &cmd) == -1);  /* no body */
    CHECK(s_parse(s_msg(4, "", "TTW01", &hb, 1, 1), &cmd) == -1);  /* body on HB */
    CHECK(s_parse(s_msg(3, "x", "TTW01", &hb, 1, 0), &cmd) == -1); /* not empty */
    CHECK(s_parse(s_msg(3, "", "MDPW01", &hb, 1, 0), &cmd) == -1); /* header */
    CHECK(s_parse(s_msg(3, "", "TTW01", &bad, 1, 0), &cmd) == -1); /* command */
    CHECK(s_parse(s_msg(3, "", "TTW01", "\x04\x04", 2, 0), &cmd) == -1);
    CHECK(s_parse(s_msg(2, "", "TTW01", &hb, 1, 0), &cmd) == -1); /* too few */
    CHECK(s_parse(s_msg(5, "", "TTW01", &co, 1, 1), &cmd) == -1); /* too many */
    CHECK(s_parse(s_msg(4, "", "TTW01", &co, 1, TT_MAX_WORKER_BODY + 1), &cmd) == -1);

    zframe_t *body = zframe_new("abc", 3);
    zmsg_t *m = wire_msg(TT_W_REPLY, &body);
    CHECK(body == NULL && zmsg_size(m) == 4);
    CHECK(zframe_size(zmsg_first(m)) == 0);
    CHECK(zframe_streq(zmsg_next(m), "TTW01"));
    CHECK(zframe_data(zmsg_next(m))[0] == TT_W_REPLY);
    zmsg_destroy(&m);

    Ttfleet__VmSpec s;
    Ttfleet__PortMap p, *pp[1];
    char err[256];
    s_spec(&s, &p, pp);
    CHECK(wire_spec_validate(&s, err, sizeof err) == 0);
#define BAD(stmt)                                                                                  \
    do {                                                                                           \
        s_spec(&s, &p, pp);                                                                        \
        stmt;                                                                                      \
        CHECK(wire_spec_validate(&s, err, sizeof err) == -1);                                      \
    } while (0)
    BAD(s.vm_id = 1);
    BAD(s.vm_id = 65535);
    BAD(s.desired = (Ttfleet__VmState)4);
    BAD(s.desired = (Ttfleet__VmState)99);
    BAD(s.env = "alice/../x");
    BAD(s.env = "a/b/c");
    BAD(s.env = "");
    BAD(s.image = "../etc");
    BAD(s.image = ".hidden");
    BAD(s.image = "a/b");
    BAD(s.engine = "");
    BAD(s.cpu = 0);
    BAD(s.cpu = TT_MAX_CPU + 1);
    BAD(s.mem_mib = 0);
    BAD(s.disk_mib = TT_MAX_DISK_MIB + 1);
    BAD(s.ip = "10.10.0");
    BAD(s.ip = "10.10.0.256");
    BAD(s.mac = "52:54:00:00:00");
    BAD(s.mac = "52:54:00:00:00:0g");
    BAD(p.guest = 0);
    BAD(p.guest = 70000);
    BAD(p.public_ = 39999);
    BAD(s.n_ports = TT_MAX_PORTS_PER_VM + 1);
    BAD(s.expires_at = 0);
    /* ABSENT needs only the id. */
    Ttfleet__VmSpec a = TTFLEET__VM_SPEC__INIT;
    a.vm_id = 7;
    CHECK(wire_spec_validate(&a, err, sizeof err) == 0);
    a.vm_id = 0;
    CHECK(wire_spec_validate(&a, err, sizeof err) == -1);

    CHECK(wire_env_valid("ci"));
    CHECK(wire_mac_valid("52:54:00:AB:cd:01"));
    return s_report("unit.worker.wire");
}
