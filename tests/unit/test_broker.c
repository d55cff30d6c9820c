/*
 * Unit tests of the broker core without sockets in the way: the handlers
 * are fed crafted client and worker messages, the queued output is read
 * back, and batches are ended (committed) as the loop would. Covers the
 * scheduler (best-fit / spread), allocations, accounting, the env rules,
 * idempotency, hostile frames and reload from broker.db.
 */
#define _GNU_SOURCE /* nftw */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "admission.h"
#include "broker_fake.h"
#include "admq.h"
#include "audit.h"
#include "blobgc.h"
#include "broker.h"
#include "guest_ops.h"
#include "op.h"
#include "outq.h"
#include "persist.h"
#include "reaper.h"
#include "reply.h"
#include "scheduler.h"
#include "wcmd.h"
#include "workers.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static broker_t *g_b;
static int g_rid;

/* ---- fake worker ---- */

static void s_worker_send(const char *routing, int cmd, const void *body, size_t len)
{
    fake_worker_send(g_b, routing, cmd, body, len);
}

static void s_ready(const char *routing, const char *host, uint32_t cpu, uint64_t mem,
                    uint64_t disk)
{
    Ttfleet__WorkerHello h = TTFLEET__WORKER_HELLO__INIT;
    h.host_id = (char *)host;
    h.cpu_total = cpu;
    h.mem_total = mem;
    h.disk_total = disk;
    char *engines[] = {"process", "hollow"};
    char *images[] = {"img", "other"};
    h.n_engines = 2;
    h.engines = engines;
    h.n_images = 2;
    h.images = images;
    uint8_t buf[1024];
    size_t len = ttfleet__worker_hello__pack(&h, buf);
    s_worker_send(routing, TT_W_READY, buf, len);
}

static const char *g_refuse_only; /* refuse only on this routing id (NULL: all) */

/* Answer every queued COMMAND as a worker that does what it is told,
 * or refuses with status `refuse`. Returns the number of commands seen. */
static int s_answer_commands(int refuse_status)
{
    int n = 0;
    zsock_t *sock;
    zmsg_t *m;
    zlistx_t *keep = zlistx_new();
    while ((m = outq_pop(g_b, &sock))) {
        if (sock != g_b->workers || zmsg_size(m) != 5) {
            zlistx_add_end(keep, m);
            continue;
        }
        char *routing = zmsg_popstr(m);
        zframe_t *f = zmsg_first(m);
        f = zmsg_next(m);
        f = zmsg_next(m);
        zframe_t *body = zmsg_next(m);
        Ttfleet__WorkerCommand *cmd =
            ttfleet__worker_command__unpack(NULL, zframe_size(body), zframe_data(body));
        int refuse = refuse_status;
        if (g_refuse_only && strcmp(routing, g_refuse_only) != 0)
            refuse = 0;
        if (cmd && zframe_data(f)[0] == TT_W_COMMAND) {
            n++;
            Ttfleet__WorkerReply rep = TTFLEET__WORKER_REPLY__INIT;
            rep.op_id = cmd->op_id;
            rep.status = refuse;
            rep.message = refuse ? "refused by test" : "";
            Ttfleet__VmActual va[600];
            Ttfleet__VmActual *vap[600];
            for (size_t i = 0; i < cmd->n_vms && i < 600; i++) {
                ttfleet__vm_actual__init(&va[i]);
                va[i].vm_id = cmd->vms[i]->vm_id;
                va[i].state = refuse ? TTFLEET__VM_STATE__VM_ABSENT : cmd->vms[i]->desired;
                vap[i] = &va[i];
            }
            rep.n_vms = cmd->n_vms;
            rep.vms = vap;
            size_t len = ttfleet__worker_reply__get_packed_size(&rep);
            uint8_t *buf = malloc(len + 1);
            ttfleet__worker_reply__pack(&rep, buf);
            s_worker_send(routing, TT_W_REPLY, buf, len);
            free(buf);
        }
        if (cmd)
            ttfleet__worker_command__free_unpacked(cmd, NULL);
        free(routing);
        zmsg_destroy(&m);
    }
    /* put back what was not a command */
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, g_b->clients, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return n;
}

/* ---- fake client ---- */

static void s_client_send(const char *service, Ttfleet__Request *req)
{
    fake_client_send(g_b, "client-1", service, req);
}

/* Pop the first client reply in the queue (others stay). */
static Ttfleet__Reply *s_client_reply(void)
{
    zsock_t *sock;
    zmsg_t *m;
    Ttfleet__Reply *rep = NULL;
    zlistx_t *keep = zlistx_new();
    while (!rep && (m = outq_pop(g_b, &sock))) {
        if (sock != g_b->clients || zmsg_size(m) != 5) {
            zlistx_add_end(keep, m);
            continue;
        }
        zframe_t *body = zmsg_last(m);
        rep = ttfleet__reply__unpack(NULL, zframe_size(body), zframe_data(body));
        zmsg_destroy(&m);
    }
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, g_b->workers, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return rep;
}

static void s_drain(void)
{
    fake_drain(g_b);
}

static Ttfleet__Reply *s_call(const char *tenant, Ttfleet__Request *req, const char *rid)
{
    char id[32];
    snprintf(id, sizeof id, "r%d", ++g_rid);
    req->request_id = (char *)(rid ? rid : id);
    req->tenant = (char *)tenant;
    s_client_send(TT_SERVICE_ENV, req);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    return s_client_reply();
}

static const char *g_create_boot; /* EnvCreate.boot of s_create (NULL: none) */

static Ttfleet__Reply *s_create(const char *tenant, const char *name, const char *image,
                                uint32_t dup, uint32_t cpu, uint32_t mem, bool spread,
                                const char *rid)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT;
    Ttfleet__ImageCount *icp = &ic;
    uint32_t ports[] = {80};
    ic.image = (char *)image;
    ic.dup = dup;
    cr.name = (char *)name;
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = cpu;
    cr.mem_mib = mem;
    cr.disk_mib = 1000;
    cr.n_ports = 1;
    cr.ports = ports;
    cr.spread = spread;
    cr.boot = (char *)g_create_boot;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    return s_call(tenant, &req, rid);
}

static Ttfleet__Reply *s_simple(const char *tenant, int op, const char *name)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = (char *)name;
    req.op_case = op;
    switch (op) {
    case TTFLEET__REQUEST__OP_ENV_SHOW:
        req.env_show = &ref;
        break;
    case TTFLEET__REQUEST__OP_ENV_STOP:
        req.env_stop = &ref;
        break;
    case TTFLEET__REQUEST__OP_ENV_START:
        req.env_start = &ref;
        break;
    case TTFLEET__REQUEST__OP_ENV_DELETE:
        req.env_delete = &ref;
        break;
    case TTFLEET__REQUEST__OP_ENV_PAUSE:
        req.env_pause = &ref;
        break;
    default:
        break;
    }
    return s_call(tenant, &req, NULL);
}

static int s_status(Ttfleet__Reply *r)
{
    int st = r ? (int)r->status : -1;
    if (r && st != 0)
        printf("  (reply %s: %s)\n", tt_status_name(st), r->message);
    if (r)
        ttfleet__reply__free_unpacked(r, NULL);
    return st;
}

static broker_t *s_open(const char *dir, int min_stop)
{
    broker_config_t cfg;
    fake_broker_config(&cfg, dir);
    cfg.min_stop_interval = min_stop;
    return fake_broker_new(&cfg);
}

/* Pop the client reply with request id rid; its service frame into service. */
static Ttfleet__Reply *s_reply_for(const char *rid, char *service, size_t slen)
{
    zsock_t *sock;
    zmsg_t *m;
    Ttfleet__Reply *rep = NULL;
    zlistx_t *keep = zlistx_new();
    while (!rep && (m = outq_pop(g_b, &sock))) {
        Ttfleet__Reply *r = NULL;
        if (sock == g_b->clients && zmsg_size(m) == 5) {
            zframe_t *body = zmsg_last(m);
            r = ttfleet__reply__unpack(NULL, zframe_size(body), zframe_data(body));
        }
        if (r && strcmp(r->request_id, rid) == 0) {
            zframe_t *f = zmsg_first(m);
            f = zmsg_next(m);
            f = zmsg_next(m);
            f = zmsg_next(m);
            snprintf(service, slen, "%.*s", (int)zframe_size(f), (char *)zframe_data(f));
            rep = r;
            zmsg_destroy(&m);
            continue;
        }
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        zlistx_add_end(keep, m);
    }
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, sock == g_b->clients ? g_b->clients : g_b->workers, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return rep;
}

static int s_free_ports(const host_t *h)
{
    int n = 0;
    for (int i = 0; i < BROKER_NPORTS; i++)
        n += !((h->port_used[i >> 3] >> (i & 7)) & 1);
    return n;
}

/* An update over two hosts whose second host is out of ports gives back
 * what it planned on the first: ports and maps as before on both. */
static void s_test_update_undo_two_hosts(void)
{
    /* best-fit fills what "small" has left with the first VM; the second
     * must go to "big" */
    host_t *small = model_host_get(g_b, "small");
    uint32_t left = small ? small->cpu_total - small->cpu_used : 0;
    CHECK(left >= 1);
    if (left < 1)
        return;
    CHECK(s_status(s_create("greedy", "g2", "img", 2, left, 256, false, NULL)) == 0);
    env_t *g = model_env_get(g_b, "greedy", "g2");
    CHECK(g && g->n_vms == 2 && g->vms[0]->host != g->vms[1]->host);
    if (!g || g->n_vms != 2 || g->vms[0]->host == g->vms[1]->host)
        return;
    host_t *h0 = g->vms[0]->host, *h1 = g->vms[1]->host;
    portmap_t before0[TT_MAX_PORTS_PER_VM];
    memcpy(before0, g->vms[0]->ports, sizeof before0);
    uint32_t *taken = calloc(BROKER_NPORTS + 1, sizeof *taken);
    int n_taken = 0;
    while (alloc_port(h1, &taken[n_taken]) == 0)
        n_taken++;
    int free0 = s_free_ports(h0);
    Ttfleet__Request up = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvUpdate u = TTFLEET__ENV_UPDATE__INIT;
    uint32_t ports[] = {8080, 8081}; /* drops 80, adds two */
    u.name = "g2";
    u.set_ports = true;
    u.n_ports = 2;
    u.ports = ports;
    up.op_case = TTFLEET__REQUEST__OP_ENV_UPDATE;
    up.env_update = &u;
    Ttfleet__Reply *r = s_call("greedy", &up, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY);
    s_status(r);
    CHECK(s_free_ports(h0) == free0);
    CHECK(g->vms[0]->n_ports == 2 &&
          memcmp(g->vms[0]->ports, before0, sizeof(portmap_t) * 2) == 0);
    for (int i = 0; i < n_taken; i++)
        alloc_port_mark(h1, taken[i], false);
    free(taken);
    CHECK(s_status(s_simple("greedy", TTFLEET__REQUEST__OP_ENV_DELETE, "g2")) == 0);
}

/* An env over two hosts whose id cursors stand at the same free id: its
 * VMs still get different ids, and rm-vm by id alone (no host) finds the
 * one VM. */
static void s_test_vm_ids_unique_in_env(void)
{
    host_t *small = model_host_get(g_b, "small"), *big = model_host_get(g_b, "big");
    uint32_t left = small ? small->cpu_total - small->cpu_used : 0;
    CHECK(big && left >= 1);
    if (!big || left < 1)
        return;
    uint32_t c = TT_VMID_MIN;
    while (c < TT_VMID_MAX && (((small->vmid_used[c >> 3] >> (c & 7)) & 1) ||
                               ((big->vmid_used[c >> 3] >> (c & 7)) & 1)))
        c++;
    small->vmid_cursor = big->vmid_cursor = c;
    CHECK(s_status(s_create("ids", "u2", "img", 2, left, 256, false, NULL)) == 0);
    env_t *e = model_env_get(g_b, "ids", "u2");
    CHECK(e && e->n_vms == 2 && e->vms[0]->host != e->vms[1]->host);
    if (!e || e->n_vms != 2)
        return;
    uint32_t id0 = e->vms[0]->vm_id, id1 = e->vms[1]->vm_id;
    CHECK(id0 != id1);
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
    rm.name = "u2";
    rm.n_vm_ids = 1;
    rm.vm_ids = &id1;
    req.op_case = TTFLEET__REQUEST__OP_ENV_RM_VM;
    req.env_rm_vm = &rm;
    CHECK(s_status(s_call("ids", &req, NULL)) == 0);
    e = model_env_get(g_b, "ids", "u2");
    CHECK(e && e->n_vms == 1 && e->vms[0]->vm_id == id0);
    CHECK(s_status(s_simple("ids", TTFLEET__REQUEST__OP_ENV_DELETE, "u2")) == 0);
}

/* One batch in which a greedy tenant's `env update` runs out of public
 * ports and another tenant creates an env: the create succeeds, only the
 * update fails, nothing of it stays, and the batch is not rolled back. */
static void s_test_one_request_fails_alone(void)
{
    CHECK(s_status(s_create("greedy", "g", "img", 1, 1, 256, false, NULL)) == 0);
    env_t *g = model_env_get(g_b, "greedy", "g");
    CHECK(g && g->n_vms == 1);
    if (!g || g->n_vms != 1)
        return;
    host_t *h = g->vms[0]->host;
    portmap_t before[TT_MAX_PORTS_PER_VM];
    int n_before = g->vms[0]->n_ports;
    memcpy(before, g->vms[0]->ports, sizeof before);
    /* the greedy host is full of ports and takes no new VMs */
    uint32_t *taken = calloc(BROKER_NPORTS + 1, sizeof *taken);
    int n_taken = 0;
    while (alloc_port(h, &taken[n_taken]) == 0)
        n_taken++;
    h->draining = true;

    Ttfleet__Request up = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvUpdate u = TTFLEET__ENV_UPDATE__INIT;
    uint32_t ports[] = {80, 81, 82};
    u.name = "g";
    u.set_ports = true;
    u.n_ports = 3;
    u.ports = ports;
    up.op_case = TTFLEET__REQUEST__OP_ENV_UPDATE;
    up.env_update = &u;
    up.tenant = "greedy";
    up.request_id = "greedy-up-1";

    Ttfleet__Request cr = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate c = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT;
    Ttfleet__ImageCount *icp = &ic;
    ic.image = "img";
    ic.dup = 1;
    c.name = "polite";
    c.n_images = 1;
    c.images = &icp;
    c.cpu = 1;
    c.mem_mib = 256;
    cr.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    cr.env_create = &c;
    cr.tenant = "polite";
    cr.request_id = "polite-create-1";

    s_client_send(TT_SERVICE_ENV, &up);
    s_client_send(TT_SERVICE_ENV, &cr);
    CHECK(broker_end_batch(g_b)); /* the batch commits */
    s_answer_commands(0);
    broker_end_batch(g_b);
    char service[40];
    Ttfleet__Reply *r = s_reply_for("greedy-up-1", service, sizeof service);
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY);
    s_status(r);
    r = s_reply_for("polite-create-1", service, sizeof service);
    CHECK(r && r->status == TTFLEET__STATUS__OK);
    s_status(r);
    /* the refused update left the env and the host's ports as they were */
    g = model_env_get(g_b, "greedy", "g");
    CHECK(g && g->n_vms == 1 && g->n_gports == 2 && g->vms[0]->n_ports == n_before &&
          memcmp(g->vms[0]->ports, before, sizeof(portmap_t) * (size_t)n_before) == 0);
    uint32_t spare;
    CHECK(alloc_port(h, &spare) != 0); /* nothing freed or leaked */
    CHECK(h->state == HOST_ONLINE);     /* no reload marked the hosts down */
    /* its retry gets the recorded refusal */
    s_client_send(TT_SERVICE_ENV, &up);
    broker_end_batch(g_b);
    r = s_reply_for("greedy-up-1", service, sizeof service);
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY);
    s_status(r);
    for (int i = 0; i < n_taken; i++)
        alloc_port_mark(h, taken[i], false);
    free(taken);
    h->draining = false;
    s_drain();

    /* A batch that fails: the retry of a request committed in an earlier
     * batch keeps its real outcome; a tt.admin caller hears INTERNAL on
     * tt.admin. */
    s_client_send(TT_SERVICE_ENV, &cr); /* retry of polite-create-1 */
    Ttfleet__Request hl = TTFLEET__REQUEST__INIT;
    hl.op_case = TTFLEET__REQUEST__OP_HOST_LIST;
    Ttfleet__Empty hlm = TTFLEET__EMPTY__INIT;
    hl.host_list = &hlm;
    hl.tenant = "admin";
    hl.request_id = "admin-list-1";
    s_client_send(TT_SERVICE_ADMIN, &hl);
    g_b->failed = true; /* as if a statement of the batch had failed */
    CHECK(!broker_end_batch(g_b));
    r = s_reply_for("polite-create-1", service, sizeof service);
    CHECK(r && r->status == TTFLEET__STATUS__OK && strcmp(service, TT_SERVICE_ENV) == 0);
    s_status(r);
    r = s_reply_for("", service, sizeof service); /* INTERNAL errors carry no id */
    CHECK(r && r->status == TTFLEET__STATUS__INTERNAL && strcmp(service, TT_SERVICE_ADMIN) == 0);
    s_status(r);
    r = s_reply_for("", service, sizeof service); /* and nobody else got one */
    CHECK(r == NULL);
    if (r)
        ttfleet__reply__free_unpacked(r, NULL);
    s_drain();
    /* the reload brought the hosts back as down: say READY again */
    s_ready("w-small", "small", 4, 8192, 100000);
    s_ready("w-big", "big", 16, 65536, 1000000);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
}

/* ---- hardening (issue 9) ---- */

static char g_hdir[64];

/* A fresh broker with two equal hosts "ha" (w-a) and "hb" (w-b). */
static broker_t *s_hard_open(broker_t **saved)
{
    *saved = g_b;
    snprintf(g_hdir, sizeof g_hdir, "/tmp/ttbroker-hard-XXXXXX");
    if (!mkdtemp(g_hdir))
        return NULL;
    g_b = s_open(g_hdir, 0);
    if (!g_b)
        return NULL;
    s_ready("w-a", "ha", 8, 16384, 10000);
    s_ready("w-b", "hb", 8, 16384, 10000);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    return g_b;
}

static void s_hard_close(broker_t *saved)
{
    broker_destroy(&g_b);
    s_rmtree(g_hdir);
    g_b = saved;
}

/* Send req as tenant with request id rid, run the workers, and return the
 * reply to rid (others stay queued). */
static Ttfleet__Reply *s_call_rid(const char *tenant, Ttfleet__Request *req, const char *rid)
{
    req->request_id = (char *)rid;
    req->tenant = (char *)tenant;
    s_client_send(TT_SERVICE_ENV, req);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    char service[40];
    return s_reply_for(rid, service, sizeof service);
}

/* Take the queued console command (exec: an exec command) off the queue:
 * its op id and routing. */
static uint64_t s_take_cmd(char *routing, size_t len, bool exec)
{
    zsock_t *sock;
    zmsg_t *m;
    uint64_t id = 0;
    zlistx_t *keep = zlistx_new();
    while ((m = outq_pop(g_b, &sock))) {
        if (!id && sock == g_b->workers && zmsg_size(m) == 5) {
            zframe_t *r = zmsg_first(m);
            zframe_t *body = zmsg_last(m);
            Ttfleet__WorkerCommand *cmd =
                ttfleet__worker_command__unpack(NULL, zframe_size(body), zframe_data(body));
            if (cmd && (exec ? cmd->exec != NULL : cmd->console_vm_id != 0)) {
                id = cmd->op_id;
                snprintf(routing, len, "%.*s", (int)zframe_size(r), (char *)zframe_data(r));
                ttfleet__worker_command__free_unpacked(cmd, NULL);
                zmsg_destroy(&m);
                continue;
            }
            if (cmd)
                ttfleet__worker_command__free_unpacked(cmd, NULL);
        }
        zlistx_add_end(keep, m);
        (void)sock;
    }
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, g_b->workers, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return id;
}

/* Item 3: a console read in flight while its VM or host is freed by each
 * of delete, rm-vm, the reaper, evacuate and host remove --force; then the
 * worker's late answer and the deadline. Under ASan this read freed memory
 * before the fix; now the console op holds no VM/env pointer and is ended
 * before its host is freed. Exactly one answer reaches the client. */
static void s_test_console_race(void)
{
    const char *cases[] = {"delete", "rm-vm", "reap", "evacuate", "remove"};
    for (int k = 0; k < 5; k++) {
        broker_t *saved;
        if (!s_hard_open(&saved)) {
            CHECK(0);
            return;
        }
        Ttfleet__Reply *r = s_create("t1", "con", "img", 1, 1, 256, false, "con-create");
        CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1);
        uint32_t vm_id = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
        char host[TT_MAX_NAME + 1] = "";
        if (r && r->env && r->env->n_vms)
            snprintf(host, sizeof host, "%s", r->env->vms[0]->host);
        s_status(r);
        s_drain();
        /* the console request; its command stays unanswered */
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvConsole ec = TTFLEET__ENV_CONSOLE__INIT;
        ec.name = "con";
        ec.vm_id = vm_id;
        req.op_case = TTFLEET__REQUEST__OP_ENV_CONSOLE;
        req.env_console = &ec;
        req.request_id = "con-read";
        req.tenant = "t1";
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        char routing[64] = "";
        uint64_t op_id = s_take_cmd(routing, sizeof routing, false);
        CHECK(op_id != 0);
        /* free the VM (or its host) */
        Ttfleet__Request act = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
        Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
        Ttfleet__HostDrain dr = TTFLEET__HOST_DRAIN__INIT;
        Ttfleet__HostRemove hr = TTFLEET__HOST_REMOVE__INIT;
        ref.name = "con";
        if (k == 0) {
            act.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
            act.env_delete = &ref;
            CHECK(s_status(s_call_rid("t1", &act, "act")) == 0);
        } else if (k == 1) {
            rm.name = "con";
            rm.n_vm_ids = 1;
            rm.vm_ids = &vm_id;
            act.op_case = TTFLEET__REQUEST__OP_ENV_RM_VM;
            act.env_rm_vm = &rm;
            CHECK(s_status(s_call_rid("t1", &act, "act")) == 0);
        } else if (k == 2) {
            env_t *e = model_env_get(g_b, "t1", "con");
            CHECK(e != NULL);
            if (e)
                e->expires_at = e->created_at - 1;
            reaper_run(g_b, tt_now() + 10 * 86400);
            broker_end_batch(g_b);
            CHECK(model_env_get(g_b, "t1", "con") == NULL);
        } else if (k == 3) {
            dr.id = host;
            dr.evacuate = true;
            act.op_case = TTFLEET__REQUEST__OP_HOST_DRAIN;
            act.host_drain = &dr;
            CHECK(s_status(s_call_rid("admin", &act, "act")) == 0);
            env_t *e = model_env_get(g_b, "t1", "con");
            CHECK(e && e->n_vms == 1 && strcmp(e->vms[0]->host->id, host) != 0);
        } else {
            hr.id = host;
            hr.force = true;
            act.op_case = TTFLEET__REQUEST__OP_HOST_REMOVE;
            act.host_remove = &hr;
            CHECK(s_status(s_call_rid("admin", &act, "act")) == 0);
            CHECK(model_host_get(g_b, host) == NULL);
        }
        /* the worker's late answer, then the deadline */
        Ttfleet__WorkerReply wr = TTFLEET__WORKER_REPLY__INIT;
        wr.op_id = op_id;
        wr.console.data = (uint8_t *)"boot ok\n";
        wr.console.len = 8;
        uint8_t buf[256];
        size_t len = ttfleet__worker_reply__pack(&wr, buf);
        s_worker_send(routing, TT_W_REPLY, buf, len);
        op_tick(g_b, tt_mono_ms() + 3600 * 1000);
        broker_end_batch(g_b);
        CHECK(zlistx_size(g_b->all_ops) == 0);
        char service[40];
        r = s_reply_for("con-read", service, sizeof service);
        CHECK(r != NULL); /* answered once: the text, or why not */
        printf("  console after %s: %s %s\n", cases[k], r ? tt_status_name(r->status) : "none",
               r ? r->message : "");
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        r = s_reply_for("con-read", service, sizeof service);
        CHECK(r == NULL);
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        s_drain();
        s_hard_close(saved);
    }
}

/* Exec (guest_ops.c): the command reaches the VM's host as
 * WorkerCommand.exec, the worker's ExecResult comes back as Reply.exec with
 * the host filled in; and, as for the console, an exec in flight while its
 * VM or host is freed (delete, rm-vm, reaper, evacuate, host remove) is
 * answered exactly once, holding no pointer to what was freed (ASan): with
 * the worker's late result (the command did run) or, when the host is
 * gone, WORKER_FAILED. */
static void s_test_exec_relay_and_race(void)
{
    const char *cases[] = {"none", "delete", "rm-vm", "reap", "evacuate", "remove"};
    for (int k = 0; k < 6; k++) {
        broker_t *saved;
        if (!s_hard_open(&saved)) {
            CHECK(0);
            return;
        }
        Ttfleet__Reply *r = s_create("t1", "ex", "img", 1, 1, 256, false, "ex-create");
        CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1);
        uint32_t vm_id = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
        char host[TT_MAX_NAME + 1] = "";
        if (r && r->env && r->env->n_vms)
            snprintf(host, sizeof host, "%s", r->env->vms[0]->host);
        s_status(r);
        s_drain();
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvExec ee = TTFLEET__ENV_EXEC__INIT;
        char *argv[] = {"uname", "-r"};
        ee.name = "ex";
        ee.vm_id = vm_id;
        ee.argv = argv;
        ee.n_argv = 2;
        req.op_case = TTFLEET__REQUEST__OP_ENV_EXEC;
        req.env_exec = &ee;
        req.request_id = "ex-run";
        req.tenant = "t2"; /* another tenant: NOT_FOUND, nothing sent */
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        broker_end_batch(g_b);
        char routing[64] = "", service[40];
        r = s_reply_for("ex-run", service, sizeof service);
        CHECK(r && r->status == TTFLEET__STATUS__NOT_FOUND);
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        CHECK(s_take_cmd(routing, sizeof routing, true) == 0);
        req.tenant = "t1";
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        uint64_t op_id = s_take_cmd(routing, sizeof routing, true);
        CHECK(op_id != 0);
        Ttfleet__Request act = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
        Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
        Ttfleet__HostDrain dr = TTFLEET__HOST_DRAIN__INIT;
        Ttfleet__HostRemove hr = TTFLEET__HOST_REMOVE__INIT;
        ref.name = "ex";
        if (k == 1) {
            act.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
            act.env_delete = &ref;
            CHECK(s_status(s_call_rid("t1", &act, "act")) == 0);
        } else if (k == 2) {
            rm.name = "ex";
            rm.n_vm_ids = 1;
            rm.vm_ids = &vm_id;
            act.op_case = TTFLEET__REQUEST__OP_ENV_RM_VM;
            act.env_rm_vm = &rm;
            CHECK(s_status(s_call_rid("t1", &act, "act")) == 0);
        } else if (k == 3) {
            env_t *e = model_env_get(g_b, "t1", "ex");
            if (e)
                e->expires_at = e->created_at - 1;
            reaper_run(g_b, tt_now() + 10 * 86400);
            broker_end_batch(g_b);
            CHECK(model_env_get(g_b, "t1", "ex") == NULL);
        } else if (k == 4) {
            dr.id = host;
            dr.evacuate = true;
            act.op_case = TTFLEET__REQUEST__OP_HOST_DRAIN;
            act.host_drain = &dr;
            CHECK(s_status(s_call_rid("admin", &act, "act")) == 0);
        } else if (k == 5) {
            hr.id = host;
            hr.force = true;
            act.op_case = TTFLEET__REQUEST__OP_HOST_REMOVE;
            act.host_remove = &hr;
            CHECK(s_status(s_call_rid("admin", &act, "act")) == 0);
        }
        /* the worker's answer (late for k > 0), then the deadline */
        Ttfleet__ExecResult er = TTFLEET__EXEC_RESULT__INIT;
        er.host = "whatever-the-worker-says";
        er.exit_code = 3;
        er.stdout.data = (uint8_t *)"6.1.0\n";
        er.stdout.len = 6;
        er.stdout_size = 6;
        Ttfleet__WorkerReply wr = TTFLEET__WORKER_REPLY__INIT;
        wr.op_id = op_id;
        wr.exec = &er;
        uint8_t buf[512];
        size_t len = ttfleet__worker_reply__pack(&wr, buf);
        s_worker_send(routing, TT_W_REPLY, buf, len);
        op_tick(g_b, tt_mono_ms() + 3600 * 1000);
        broker_end_batch(g_b);
        CHECK(zlistx_size(g_b->all_ops) == 0);
        r = s_reply_for("ex-run", service, sizeof service);
        CHECK(r != NULL);
        if (k == 0) {
            CHECK(r && r->status == TTFLEET__STATUS__OK &&
                  r->result_case == TTFLEET__REPLY__RESULT_EXEC);
            CHECK(r && r->exec && r->exec->exit_code == 3 && r->exec->vm_id == vm_id &&
                  strcmp(r->exec->host, host) == 0 && r->exec->stdout.len == 6);
        }
        printf("  exec after %s: %s %s\n", cases[k], r ? tt_status_name(r->status) : "none",
               r ? r->message : "");
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        r = s_reply_for("ex-run", service, sizeof service);
        CHECK(r == NULL);
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        s_drain();
        s_hard_close(saved);
    }
}

/* The audit row of each call: the status the client was answered. */
typedef struct {
    const char *op, *rid;
    int status, n;
    char message[600];
    char role[16];
} s_audit_find_t;

static void s_audit_row(const audit_rec_t *rec, void *arg)
{
    s_audit_find_t *f = arg;
    if (strcmp(rec->op, f->op) != 0 || (f->rid && strcmp(rec->request_id, f->rid) != 0))
        return;
    if (f->n++ == 0) { /* newest first */
        f->status = rec->status;
        snprintf(f->message, sizeof f->message, "%s", rec->message);
        snprintf(f->role, sizeof f->role, "%s", rec->role);
    }
}

static s_audit_find_t s_audit_of(const char *tenant, const char *op, const char *rid)
{
    s_audit_find_t f = {op, rid, -1, 0, "", ""};
    audit_filter_t flt = {tenant, NULL, 0, 0};
    audit_query(g_b->store, &flt, s_audit_row, &f);
    return f;
}

/* Answer the guest command op_id on routing with status (and an exec
 * result or a copy chunk when OK). */
static void s_guest_answer(const char *routing, uint64_t op_id, int status, bool exec)
{
    Ttfleet__ExecResult er = TTFLEET__EXEC_RESULT__INIT;
    Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
    Ttfleet__WorkerReply wr = TTFLEET__WORKER_REPLY__INIT;
    wr.op_id = op_id;
    wr.status = status;
    wr.message = status ? "no such file in the guest" : "";
    if (!status && exec) {
        er.exit_code = 7;
        wr.exec = &er;
    } else if (!status) {
        cc.eof = true;
        wr.copy = &cc;
    }
    uint8_t buf[512];
    size_t len = ttfleet__worker_reply__pack(&wr, buf);
    s_worker_send(routing, TT_W_REPLY, buf, len);
    broker_end_batch(g_b);
}

/* env create with labels, env list filtered by them, the labels after a
 * restart (broker.db), and bad labels refused. */
static Ttfleet__Reply *s_create_labeled(const char *name, char **labels, size_t n)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT;
    Ttfleet__ImageCount *icp = &ic;
    ic.image = "img";
    cr.name = (char *)name;
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 1;
    cr.mem_mib = 256;
    cr.disk_mib = 1000;
    cr.labels = labels;
    cr.n_labels = n;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    return s_call("tl", &req, NULL);
}

static size_t s_list_labeled(char **want, size_t n, const char *first)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvList el = TTFLEET__ENV_LIST__INIT;
    el.labels = want;
    el.n_labels = n;
    req.op_case = TTFLEET__REQUEST__OP_ENV_LIST;
    req.env_list = &el;
    Ttfleet__Reply *r = s_call("tl", &req, NULL);
    size_t found = r && r->status == 0 && r->envs ? r->envs->n_envs : (size_t)-1;
    if (first && found != (size_t)-1)
        CHECK(found >= 1 && strcmp(r->envs->envs[0]->name, first) == 0 &&
              r->envs->envs[0]->n_labels >= 1);
    s_status(r);
    return found;
}

static void s_test_labels(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    char *ab[] = {"team=ci", "branch=main"}, *a[] = {"team=ci"}, *c[] = {"team=qa"};
    Ttfleet__Reply *r = s_create_labeled("l1", ab, 2);
    CHECK(r && r->status == 0 && r->env && r->env->n_labels == 2 &&
          strcmp(r->env->labels[1], "branch=main") == 0);
    s_status(r);
    CHECK(s_status(s_create_labeled("l2", a, 1)) == 0);
    CHECK(s_status(s_create_labeled("l3", NULL, 0)) == 0);
    CHECK(s_list_labeled(NULL, 0, NULL) == 3);
    CHECK(s_list_labeled(a, 1, "l1") == 2);
    CHECK(s_list_labeled(ab, 2, "l1") == 1);
    CHECK(s_list_labeled(c, 1, NULL) == 0);
    /* refused: bad charset, no '=', too long, a key twice, too many */
    char long_key[80];
    memset(long_key, 'k', 64);
    snprintf(long_key + 64, sizeof long_key - 64, "=v");
    char *bad[][2] = {{"team=c i", NULL}, {"team", NULL}, {"-x=1", NULL},
                      {long_key, NULL},   {"a=1", "a=2"}, {"k=v;rm", NULL}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(s_status(s_create_labeled("lbad", bad[i], bad[i][1] ? 2 : 1)) ==
              TTFLEET__STATUS__BAD_REQUEST);
    char *many[TT_MAX_LABELS + 1], buf[TT_MAX_LABELS + 1][16];
    for (int i = 0; i <= TT_MAX_LABELS; i++) {
        snprintf(buf[i], sizeof buf[i], "k%d=v", i);
        many[i] = buf[i];
    }
    CHECK(s_status(s_create_labeled("lmany", many, TT_MAX_LABELS + 1)) ==
          TTFLEET__STATUS__BAD_REQUEST);
    CHECK(s_list_labeled(bad[0], 1, NULL) == (size_t)-1);
    CHECK(s_status(s_create_labeled("lfull", many, TT_MAX_LABELS)) == 0);
    /* a restart reads them back from broker.db */
    broker_destroy(&g_b);
    g_b = s_open(g_hdir, 0);
    CHECK(g_b != NULL);
    if (g_b) {
        env_t *e = model_env_get(g_b, "tl", "l1");
        CHECK(e && e->n_labels == 2 && strcmp(e->labels[0], "team=ci") == 0);
        e = model_env_get(g_b, "tl", "lfull");
        CHECK(e && e->n_labels == TT_MAX_LABELS);
        CHECK(s_list_labeled(ab, 2, "l1") == 1);
    }
    s_hard_close(saved);
}

/* event_history as tenant with since/all/env: the reply (NULL on error). */
static Ttfleet__Reply *s_history(const char *tenant, int64_t since, bool all, const char *env)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EventQuery q = TTFLEET__EVENT_QUERY__INIT;
    q.since = since;
    q.all = all;
    q.env = (char *)env;
    req.op_case = TTFLEET__REQUEST__OP_EVENT_HISTORY;
    req.event_history = &q;
    return s_call(tenant, &req, NULL);
}

/* The number of rows in a table of g_b's broker.db (-1 on an error). */
static int s_count_rows(const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    int n = -1;
    if (sqlite3_prepare_v2(store_db(g_b->store), sql, -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* The broker's event log (broker.db): a tenant reads its own events only,
 * every tenant's needs admin, the log keeps the newest BROKER_EVLOG and a
 * reply at most 500 (truncated says so); a restart keeps the events and
 * their ids, and ids never go back. */
static void s_test_event_history(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    CHECK(s_status(s_create("te", "eh", "img", 1, 1, 256, false, NULL)) == 0);
    CHECK(s_status(s_create("tx", "ex", "img", 1, 1, 256, false, NULL)) == 0);
    /* the creates' committed events are in the log */
    s_drain();
    Ttfleet__Reply *r = s_history("te", 0, false, NULL);
    bool created = false;
    for (size_t i = 0; r && r->events && i < r->events->n_events; i++) {
        CHECK(strcmp(r->events->events[i]->tenant, "te") == 0);
        created |= strcmp(r->events->events[i]->kind, "env.created") == 0 &&
                   strcmp(r->events->events[i]->env, "eh") == 0;
    }
    CHECK(r && r->status == 0 && created && !r->events->truncated);
    size_t n_te = r && r->events ? r->events->n_events : 0;
    s_status(r);
    r = s_history("tx", 0, false, NULL);
    CHECK(r && r->status == 0 && r->events && r->events->n_events >= 1);
    size_t n_tx = r && r->events ? r->events->n_events : 0;
    for (size_t i = 0; r && r->events && i < r->events->n_events; i++)
        CHECK(strcmp(r->events->events[i]->env, "ex") == 0);
    s_status(r);
    r = s_history("tx", 0, false, "eh");
    CHECK(r && r->status == 0 && r->events && r->events->n_events == 0);
    s_status(r);
    CHECK(s_status(s_history("te", 0, true, NULL)) == TTFLEET__STATUS__FORBIDDEN);
    r = s_history("admin", 0, true, NULL);
    size_t a_te = 0, a_tx = 0;
    for (size_t i = 0; r && r->events && i < r->events->n_events; i++) {
        a_te += strcmp(r->events->events[i]->tenant, "te") == 0;
        a_tx += strcmp(r->events->events[i]->tenant, "tx") == 0;
    }
    CHECK(r && r->status == 0 && a_te == n_te && a_tx == n_tx);
    s_status(r);
    /* past the log's size: the oldest go, the newest 500 come back */
    env_t *e = model_env_get(g_b, "te", "eh");
    for (int i = 0; e && i < BROKER_EVLOG + 10; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "n%d", i);
        outq_event(g_b, "env.test", e, NULL, NULL, "", msg);
        outq_flush(g_b);
    }
    CHECK(s_count_rows("events") == BROKER_EVLOG);
    r = s_history("te", 0, false, NULL);
    CHECK(r && r->status == 0 && r->events && r->events->n_events == 500 && r->events->truncated);
    uint64_t ids[500] = {0};
    if (r && r->events && r->events->n_events == 500) {
        char want[32];
        snprintf(want, sizeof want, "n%d", BROKER_EVLOG + 9);
        CHECK(strcmp(r->events->events[499]->message, want) == 0);
        for (size_t i = 0; i < 500; i++) {
            ids[i] = r->events->events[i]->id;
            CHECK(ids[i] > 0 && (i == 0 || ids[i] > ids[i - 1]));
        }
    }
    s_status(r);
    r = s_history("te", tt_now() + 3600, false, NULL);
    CHECK(r && r->status == 0 && r->events && r->events->n_events == 0);
    s_status(r);
    /* the log is broker.db's: a restarted broker replays the same events
     * with the same ids, and its next event's id is above them */
    broker_end_batch(g_b);
    s_drain();
    broker_destroy(&g_b);
    g_b = s_open(g_hdir, 0);
    CHECK(g_b != NULL);
    if (!g_b) {
        g_b = saved;
        return;
    }
    r = s_history("te", 0, false, NULL);
    CHECK(r && r->status == 0 && r->events && r->events->n_events == 500);
    for (size_t i = 0; r && r->events && i < r->events->n_events && i < 500; i++)
        CHECK(r->events->events[i]->id == ids[i]);
    s_status(r);
    e = model_env_get(g_b, "te", "eh");
    outq_event(g_b, "env.test", e, NULL, NULL, "", "after");
    broker_end_batch(g_b);
    s_drain();
    r = s_history("te", 0, false, NULL);
    CHECK(r && r->events && r->events->n_events == 500 &&
          strcmp(r->events->events[499]->message, "after") == 0 &&
          r->events->events[499]->id > ids[499]);
    s_status(r);
    /* the age bound: old events go, and the ids still never go back, even
     * with the log empty across a restart */
    persist_events_prune(g_b, tt_now() + 1);
    broker_end_batch(g_b);
    CHECK(s_count_rows("events") == 0);
    broker_destroy(&g_b);
    g_b = s_open(g_hdir, 0);
    CHECK(g_b != NULL);
    if (!g_b) {
        g_b = saved;
        return;
    }
    e = model_env_get(g_b, "te", "eh");
    outq_event(g_b, "env.test", e, NULL, NULL, "", "empty");
    broker_end_batch(g_b);
    s_drain();
    r = s_history("te", 0, false, NULL);
    CHECK(r && r->events && r->events->n_events == 1 && r->events->events[0]->id > ids[499] + 1);
    s_status(r);
    s_hard_close(saved);
}

/* Audit rows carry the outcome the client got: a failed exec or copy is
 * not OK, an exec's exit code is recorded, and the reaper's deletions are
 * audited in the env's tenant with the role "system". */
static void s_test_audit_outcomes(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    Ttfleet__Reply *r = s_create("ta", "au", "img", 1, 1, 256, false, "au-create");
    uint32_t vm_id = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
    CHECK(s_status(r) == 0);
    s_drain();
    char routing[64] = "", service[40];
    /* an exec the worker answers GUEST_FAILED; one that exits 7 */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvExec ee = TTFLEET__ENV_EXEC__INIT;
    char *argv[] = {"cat", "/nope"};
    ee.name = "au";
    ee.vm_id = vm_id;
    ee.argv = argv;
    ee.n_argv = 2;
    req.op_case = TTFLEET__REQUEST__OP_ENV_EXEC;
    req.env_exec = &ee;
    req.tenant = "ta";
    const char *rids[] = {"au-exec-1", "au-exec-2"};
    int answers[] = {TTFLEET__STATUS__GUEST_FAILED, TTFLEET__STATUS__OK};
    for (int i = 0; i < 2; i++) {
        req.request_id = (char *)rids[i];
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        s_audit_find_t f = s_audit_of("ta", "env.exec", rids[i]);
        CHECK(f.n == 1 && f.status == TTFLEET__STATUS__IN_PROGRESS); /* on record when sent */
        uint64_t op_id = s_take_cmd(routing, sizeof routing, true);
        CHECK(op_id != 0);
        s_guest_answer(routing, op_id, answers[i], true);
        r = s_reply_for(rids[i], service, sizeof service);
        CHECK(r && (int)r->status == answers[i]);
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
        f = s_audit_of("ta", "env.exec", rids[i]);
        CHECK(f.n == 1 && f.status == answers[i]);
        CHECK(strstr(f.message, "cat /nope") != NULL);
        CHECK(i == 0 ? strstr(f.message, "GUEST_FAILED") != NULL
                     : strstr(f.message, "exit 7") != NULL);
        printf("  audit of exec: %s %s\n", tt_status_name(f.status), f.message);
    }
    /* a copy from the guest that fails */
    Ttfleet__Request creq = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCopy cp = TTFLEET__ENV_COPY__INIT;
    cp.name = "au";
    cp.vm_id = vm_id;
    cp.path = "/nope";
    cp.direction = TTFLEET__COPY_DIRECTION__COPY_GET;
    creq.op_case = TTFLEET__REQUEST__OP_ENV_COPY;
    creq.env_copy = &cp;
    creq.tenant = "ta";
    creq.request_id = "au-copy-1";
    s_client_send(TT_SERVICE_ENV, &creq);
    broker_end_batch(g_b);
    uint64_t op_id = 0;
    {
        zsock_t *sock;
        zmsg_t *m;
        while (!op_id && (m = outq_pop(g_b, &sock))) {
            if (sock == g_b->workers && zmsg_size(m) == 5) {
                zframe_t *rt = zmsg_first(m);
                zframe_t *body = zmsg_last(m);
                Ttfleet__WorkerCommand *cmd =
                    ttfleet__worker_command__unpack(NULL, zframe_size(body), zframe_data(body));
                if (cmd && cmd->copy) {
                    op_id = cmd->op_id;
                    snprintf(routing, sizeof routing, "%.*s", (int)zframe_size(rt),
                             (char *)zframe_data(rt));
                }
                if (cmd)
                    ttfleet__worker_command__free_unpacked(cmd, NULL);
            }
            zmsg_destroy(&m);
        }
    }
    CHECK(op_id != 0);
    s_guest_answer(routing, op_id, TTFLEET__STATUS__GUEST_FAILED, false);
    r = s_reply_for("au-copy-1", service, sizeof service);
    CHECK(r && r->status == TTFLEET__STATUS__GUEST_FAILED);
    if (r)
        ttfleet__reply__free_unpacked(r, NULL);
    s_audit_find_t f = s_audit_of("ta", "env.copy", "au-copy-1");
    CHECK(f.n == 1 && f.status == TTFLEET__STATUS__GUEST_FAILED);
    printf("  audit of copy: %s %s\n", tt_status_name(f.status), f.message);
    /* lease expiry: a row in the env's tenant, role system */
    env_t *e = model_env_get(g_b, "ta", "au");
    if (e)
        e->expires_at = e->created_at - 1;
    reaper_run(g_b, tt_now() + 10 * 86400);
    broker_end_batch(g_b);
    CHECK(model_env_get(g_b, "ta", "au") == NULL);
    f = s_audit_of("ta", "env.expired", NULL);
    CHECK(f.n == 1 && f.status == TTFLEET__STATUS__OK && strcmp(f.role, "system") == 0 &&
          strstr(f.message, "reaper") != NULL);
    s_drain();
    s_hard_close(saved);
}

/* Send a copy PUT chunk as tenant (first chunk when tid is NULL); the
 * worker's command op id, 0 if none was sent; the client's answer is
 * left queued. */
static uint64_t s_copy_send(const char *tenant, const char *env, uint32_t vm_id, const char *tid,
                            bool last, const char *rid, char *routing, size_t rlen)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCopy cp = TTFLEET__ENV_COPY__INIT;
    static uint8_t sum[32];
    cp.name = (char *)env;
    cp.vm_id = vm_id;
    cp.path = "/tmp/f";
    cp.direction = TTFLEET__COPY_DIRECTION__COPY_PUT;
    cp.transfer_id = (char *)(tid ? tid : "");
    cp.offset = tid ? 4 : 0;
    cp.data.data = (uint8_t *)"abcd";
    cp.data.len = 4;
    cp.last = last;
    if (last) {
        cp.total_size = tid ? 8 : 4;
        cp.sha256.data = sum;
        cp.sha256.len = 32;
    }
    req.op_case = TTFLEET__REQUEST__OP_ENV_COPY;
    req.env_copy = &cp;
    req.tenant = (char *)tenant;
    req.request_id = (char *)rid;
    s_client_send(TT_SERVICE_ENV, &req);
    broker_end_batch(g_b);
    uint64_t op_id = 0;
    zsock_t *sock;
    zmsg_t *m;
    zlistx_t *keep = zlistx_new();
    while ((m = outq_pop(g_b, &sock))) {
        if (!op_id && sock == g_b->workers && zmsg_size(m) == 5) {
            zframe_t *rt = zmsg_first(m);
            zframe_t *body = zmsg_last(m);
            Ttfleet__WorkerCommand *cmd =
                ttfleet__worker_command__unpack(NULL, zframe_size(body), zframe_data(body));
            bool mine = cmd && cmd->copy;
            if (mine) {
                op_id = cmd->op_id;
                snprintf(routing, rlen, "%.*s", (int)zframe_size(rt), (char *)zframe_data(rt));
            }
            if (cmd)
                ttfleet__worker_command__free_unpacked(cmd, NULL);
            if (mine) {
                zmsg_destroy(&m);
                continue;
            }
        }
        zlistx_add_end(keep, m);
    }
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, g_b->clients, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return op_id;
}

/* The worker's answer to a copy chunk: the transfer tid stays open
 * (eof false) or ends (eof true). */
static void s_copy_answer(const char *routing, uint64_t op_id, const char *tid, bool eof)
{
    Ttfleet__CopyChunk cc = TTFLEET__COPY_CHUNK__INIT;
    Ttfleet__WorkerReply wr = TTFLEET__WORKER_REPLY__INIT;
    cc.transfer_id = (char *)tid;
    cc.eof = eof;
    wr.op_id = op_id;
    wr.copy = &cc;
    uint8_t buf[256];
    size_t len = ttfleet__worker_reply__pack(&wr, buf);
    s_worker_send(routing, TT_W_REPLY, buf, len);
    broker_end_batch(g_b);
}

/* One tenant's open (idle) copy transfers take at most its share of a
 * host's transfer slots; another tenant's copy still goes through. */
static void s_test_copy_share(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    /* four one-VM envs of tenant ta and one of tb, all on host ha */
    const char *names[] = {"c1", "c2", "c3", "c4"};
    uint32_t vms[4] = {0};
    for (int i = 0; i < 4; i++) {
        Ttfleet__Reply *r = s_create("ta", names[i], "img", 1, 1, 256, false, NULL);
        vms[i] = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
        CHECK(r && r->status == 0 && r->env && strcmp(r->env->vms[0]->host, "ha") == 0);
        s_status(r);
    }
    Ttfleet__Reply *r = s_create("tb", "cb", "img", 1, 1, 256, false, NULL);
    uint32_t vm_b = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
    CHECK(r && r->status == 0 && r->env && strcmp(r->env->vms[0]->host, "ha") == 0);
    s_status(r);
    s_drain();
    char routing[64] = "", service[40], rid[32], tid[40];
    /* ta opens transfers on its VMs and leaves them idle */
    int opened = 0;
    for (int i = 0; i < 4; i++) {
        snprintf(rid, sizeof rid, "cp-a%d", i);
        uint64_t op_id =
            s_copy_send("ta", names[i], vms[i], NULL, false, rid, routing, sizeof routing);
        r = s_reply_for(rid, service, sizeof service);
        if (op_id) {
            snprintf(tid, sizeof tid, "%032x", i + 1);
            s_copy_answer(routing, op_id, tid, false);
            Ttfleet__Reply *a = s_reply_for(rid, service, sizeof service);
            CHECK(a && a->status == 0);
            s_status(a);
            opened++;
        } else {
            CHECK(r && r->status == TTFLEET__STATUS__RATE_LIMITED &&
                  strstr(r->message, "copies open"));
        }
        s_status(r);
    }
    CHECK(opened == GUEST_TENANT_XFERS_MAX);
    /* tb's copy on the same host goes to the worker */
    uint64_t op_b = s_copy_send("tb", "cb", vm_b, NULL, false, "cp-b", routing, sizeof routing);
    CHECK(op_b != 0);
    if (op_b)
        s_copy_answer(routing, op_b, "00000000000000000000000000000099", false);
    s_status(s_reply_for("cp-b", service, sizeof service));
    /* ta ends one transfer: it may open another */
    uint64_t op_end = s_copy_send("ta", names[0], vms[0], "00000000000000000000000000000001", true,
                                  "cp-a-end", routing, sizeof routing);
    CHECK(op_end != 0);
    if (op_end)
        s_copy_answer(routing, op_end, "00000000000000000000000000000001", true);
    s_status(s_reply_for("cp-a-end", service, sizeof service));
    uint64_t op_again =
        s_copy_send("ta", names[2], vms[2], NULL, false, "cp-a-again", routing, sizeof routing);
    CHECK(op_again != 0);
    s_drain();
    op_tick(g_b, tt_mono_ms() + 3600 * 1000);
    broker_end_batch(g_b);
    s_drain();
    s_hard_close(saved);
}

/* The start of each copy takes a token of the tenant's rate (as an exec
 * does); the later chunks of a transfer do not. */
static void s_test_copy_rate(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    Ttfleet__Reply *r = s_create("tr", "cr", "img", 1, 1, 256, false, NULL);
    uint32_t vm = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
    CHECK(r && r->status == 0);
    s_status(r);
    s_drain();
    g_b->cfg.rate = 1;
    g_b->cfg.rate_burst = 3;
    char routing[64] = "", service[40], rid[32];
    int sent = 0, limited = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(rid, sizeof rid, "cr-%d", i);
        uint64_t op_id = s_copy_send("tr", "cr", vm, NULL, true, rid, routing, sizeof routing);
        if (op_id) {
            sent++;
            s_copy_answer(routing, op_id, "", true);
        }
        r = s_reply_for(rid, service, sizeof service);
        if (r && r->status == TTFLEET__STATUS__RATE_LIMITED)
            limited++;
        s_status(r);
    }
    printf("  copies under --rate 1 --rate-burst 3: %d sent, %d RATE_LIMITED\n", sent, limited);
    CHECK(sent >= 3 && sent <= 4 && limited == 10 - sent);
    /* the chunks of one open transfer pass, however many */
    g_b->cfg.rate = 0;
    uint64_t op_id = s_copy_send("tr", "cr", vm, NULL, false, "cr-open", routing, sizeof routing);
    CHECK(op_id != 0);
    if (op_id)
        s_copy_answer(routing, op_id, "000000000000000000000000000000aa", false);
    s_status(s_reply_for("cr-open", service, sizeof service));
    g_b->cfg.rate = 1;
    for (int i = 0; i < 6; i++) {
        snprintf(rid, sizeof rid, "cr-chunk-%d", i);
        op_id = s_copy_send("tr", "cr", vm, "000000000000000000000000000000aa", false, rid, routing,
                            sizeof routing);
        CHECK(op_id != 0);
        if (op_id)
            s_copy_answer(routing, op_id, "000000000000000000000000000000aa", false);
        s_status(s_reply_for(rid, service, sizeof service));
    }
    /* a chunk naming a transfer the tenant never opened is no chunk of an
     * open transfer: it costs a token like a first chunk */
    int fake_sent = 0;
    for (int i = 0; i < 10; i++) {
        snprintf(rid, sizeof rid, "cr-fake-%d", i);
        op_id = s_copy_send("tr", "cr", vm, "000000000000000000000000000000bb", false, rid, routing,
                            sizeof routing);
        if (op_id) {
            fake_sent++;
            s_copy_answer(routing, op_id, "", true);
        }
        s_status(s_reply_for(rid, service, sizeof service));
    }
    printf("  made-up transfer ids under --rate 1: %d of 10 reached the worker\n", fake_sent);
    CHECK(fake_sent <= 2);
    s_drain();
    s_hard_close(saved);
}

/* Possession of a blob is proven per uploader: a verified upload by one
 * key proves the open grants of that key only (under CURVE each tenant
 * pushes with its own key); another tenant's open grant of the same
 * digest stays unproven. */
static void s_test_blob_proof_per_key(void)
{
    const char *digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const char *digests[] = {digest};
    uint64_t sizes[] = {1000};
    handler_ctx_t ca = {.self = g_b, .tenant = "pa", .rid = "x"};
    handler_ctx_t cb = {.self = g_b, .tenant = "pb", .rid = "y"};
    char saved[sizeof g_b->cur_key];
    memcpy(saved, g_b->cur_key, sizeof saved);
    snprintf(g_b->cur_key, sizeof g_b->cur_key, "%s", "keyA");
    CHECK(blobgc_reserve(&ca, false, digests, sizes, 1, 1000) == 0);
    snprintf(g_b->cur_key, sizeof g_b->cur_key, "%s", "keyB");
    CHECK(blobgc_reserve(&cb, false, digests, sizes, 1, 1000) == 0);
    CHECK(!blobgc_proven(g_b, "pa", digest) && !blobgc_proven(g_b, "pb", digest));
    blobgc_uploaded(g_b, digest, "keyB");
    CHECK(!blobgc_proven(g_b, "pa", digest));
    CHECK(blobgc_proven(g_b, "pb", digest));
    /* a new push of the digest by another key does not inherit the proof */
    snprintf(g_b->cur_key, sizeof g_b->cur_key, "%s", "keyC");
    CHECK(blobgc_reserve(&cb, false, digests, sizes, 1, 1000) == 0);
    CHECK(!blobgc_proven(g_b, "pb", digest));
    blobgc_committed(g_b, "pa", digests, 1);
    blobgc_committed(g_b, "pb", digests, 1);
    CHECK(!blobgc_proven(g_b, "pb", digest));
    memcpy(g_b->cur_key, saved, sizeof saved);
}

/* Item 9: growing several stopped VMs' disks on one host is checked in
 * total, not VM by VM. */
/* A create whose host is still fetching the VM's image: each EVENT whose
 * pull_done grew gives the create another worker timeout; the same figure
 * again (a stalled fetch, or a worker repeating itself) does not, so the
 * create still times out. */
static void s_pull_event(const char *routing, uint32_t vm_id, uint64_t done)
{
    Ttfleet__VmActual va = TTFLEET__VM_ACTUAL__INIT, *vap = &va;
    va.vm_id = vm_id;
    va.state = TTFLEET__VM_STATE__VM_PENDING;
    va.pull_done = done;
    va.pull_total = 64u << 20;
    Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
    ev.n_vms = 1;
    ev.vms = &vap;
    uint8_t buf[256];
    size_t len = ttfleet__worker_event__pack(&ev, buf);
    s_worker_send(routing, TT_W_EVENT, buf, len);
}

static void s_test_pull_extends_deadline(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "img";
    cr.name = "pl";
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 1;
    cr.mem_mib = 256;
    cr.disk_mib = 1000;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    req.request_id = "pl-create";
    req.tenant = "t1";
    s_client_send(TT_SERVICE_ENV, &req);
    broker_end_batch(g_b); /* the command is out; nobody answers it yet */
    env_t *env = model_env_get(g_b, "t1", "pl");
    op_t *op = env ? env->busy : NULL;
    CHECK(env && op && env->n_vms == 1);
    if (op && env->n_vms == 1) {
        vm_t *vm = env->vms[0];
        const char *routing = strcmp(vm->host->id, "ha") == 0 ? "w-a" : "w-b";
        int64_t soon = tt_mono_ms() + 10;
        op->deadline_ms = soon;
        s_pull_event(routing, vm->vm_id, 1u << 20);
        CHECK(op->deadline_ms > tt_mono_ms() + g_b->cfg.worker_timeout_ms / 2);
        CHECK(vm->pull_done == 1u << 20 && vm->pull_total == 64u << 20);
        op->deadline_ms = soon;
        s_pull_event(routing, vm->vm_id, 1u << 20); /* no progress */
        CHECK(op->deadline_ms == soon);
        s_pull_event(routing, vm->vm_id, 2u << 20);
        CHECK(op->deadline_ms > soon);
        /* no more progress: the deadline passes and the VM goes to the
         * other host (the create's re-placement), which answers */
        char first[TT_MAX_NAME + 1];
        snprintf(first, sizeof first, "%s", vm->host->id);
        op->deadline_ms = tt_mono_ms() - 1;
        op_tick(g_b, tt_mono_ms());
        broker_end_batch(g_b);
        env = model_env_get(g_b, "t1", "pl");
        CHECK(env && env->n_vms == 1 && strcmp(env->vms[0]->host->id, first) != 0);
        s_answer_commands(0);
        broker_end_batch(g_b);
        char service[40];
        Ttfleet__Reply *r = s_reply_for("pl-create", service, sizeof service);
        CHECK(r && r->status == TTFLEET__STATUS__OK);
        if (r)
            ttfleet__reply__free_unpacked(r, NULL);
    }
    s_drain();
    s_hard_close(saved);
}

/* A create queued with `queue`, admitted when the worker confirmed the
 * destroy of a deleted env, that the worker still refuses for capacity
 * (NO_CAPACITY: its own check disagrees with the broker's) goes back to its
 * place in the queue with its max-wait; the next admission that the worker
 * accepts answers its request id OK. */
static Ttfleet__Reply *s_send_queued(const char *tenant, const char *name, const char *rid)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "img";
    cr.name = (char *)name;
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 8;
    cr.mem_mib = 1024;
    cr.disk_mib = 100;
    cr.queue = true;
    cr.max_wait = 600;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    return s_call(tenant, &req, rid);
}

static void s_test_queued_refused_requeued(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    /* both hosts full (8 cpu each) */
    CHECK(s_status(s_create("tf", "fill1", "img", 1, 8, 1024, false, NULL)) == 0);
    CHECK(s_status(s_create("tf", "fill2", "img", 1, 8, 1024, false, NULL)) == 0);
    CHECK(s_status(s_send_queued("tq", "waiting", "q-wait")) == TTFLEET__STATUS__QUEUED);
    CHECK(s_status(s_send_queued("tr", "later", "q-later")) == TTFLEET__STATUS__QUEUED);
    const admq_entry_t *qe = admq_find(g_b->admq, "tq", "waiting");
    int64_t deadline = qe ? qe->deadline : -1, seq = qe ? qe->seq : -1;
    CHECK(qe && admq_position(g_b->admq, "tq", "waiting") == 1);

    /* delete fill1: "waiting" is admitted when the worker answers the
     * destroy; the worker refuses it */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = "fill1";
    req.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
    req.env_delete = &ref;
    req.request_id = "del-fill1";
    req.tenant = "tf";
    s_client_send(TT_SERVICE_ENV, &req);
    broker_end_batch(g_b);
    CHECK(admq_find(g_b->admq, "tq", "waiting") != NULL); /* not before the answer */
    int seen = 0;
    for (int round = 0; round < 4; round++) {
        seen += s_answer_commands(TTFLEET__STATUS__NO_CAPACITY);
        broker_end_batch(g_b);
    }
    CHECK(seen >= 2); /* the destroy, then the admitted create */
    char service[64];
    Ttfleet__Reply *r = s_reply_for("del-fill1", service, sizeof service);
    CHECK(r && r->status == 0);
    s_status(r);
    /* not answered: still in progress, back at the head with the same
     * place and max-wait */
    r = s_send_queued("tq", "waiting", "q-wait");
    CHECK(r && r->status == TTFLEET__STATUS__IN_PROGRESS);
    s_status(r);
    CHECK(model_env_get(g_b, "tq", "waiting") == NULL);
    qe = admq_find(g_b->admq, "tq", "waiting");
    CHECK(qe && qe->deadline == deadline && qe->seq == seq);
    CHECK(admq_position(g_b->admq, "tq", "waiting") == 1);
    CHECK(admq_position(g_b->admq, "tr", "later") == 2);
    r = s_simple("tq", TTFLEET__REQUEST__OP_ENV_SHOW, "waiting");
    CHECK(r && r->status == 0 && r->env && strcmp(r->env->state, "queued") == 0);
    s_status(r);
    s_drain();
    /* it backs off: an admission right after the refusal sends nothing */
    CHECK(qe && qe->refusals == 1 && qe->retry_at_ms > tt_mono_ms());
    admission_run(g_b, tt_now());
    broker_end_batch(g_b);
    CHECK(s_answer_commands(TTFLEET__STATUS__NO_CAPACITY) == 0);
    broker_end_batch(g_b);
    CHECK(admq_position(g_b->admq, "tq", "waiting") == 1);
    s_drain();

    /* it survives a restart in that place */
    broker_end_batch(g_b);
    broker_destroy(&g_b);
    g_b = s_open(g_hdir, 0);
    CHECK(g_b != NULL);
    if (!g_b) {
        g_b = saved;
        return;
    }
    CHECK(admq_position(g_b->admq, "tq", "waiting") == 1);
    s_ready("w-a", "ha", 8, 16384, 10000);
    s_ready("w-b", "hb", 8, 16384, 10000);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();

    /* the destroy is done now: the next admission places it and answers OK */
    admission_run(g_b, tt_now());
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    /* the waiter's retry of its request id gets the outcome */
    r = s_send_queued("tq", "waiting", "q-wait");
    CHECK(r && r->status == 0 && r->env && strcmp(r->env->state, "running") == 0);
    s_status(r);
    CHECK(admq_find(g_b->admq, "tq", "waiting") == NULL);
    CHECK(admq_position(g_b->admq, "tr", "later") == 1);
    s_drain();
    s_hard_close(saved);
}

/* Send req as tenant without answering any worker command; its reply. */
static Ttfleet__Reply *s_call_unanswered(const char *tenant, Ttfleet__Request *req, const char *rid)
{
    req->request_id = (char *)rid;
    req->tenant = (char *)tenant;
    s_client_send(TT_SERVICE_ENV, req);
    broker_end_batch(g_b);
    /* take the reply; every other message goes back to its own socket */
    zlistx_t *socks = zlistx_new(), *msgs = zlistx_new();
    Ttfleet__Reply *rep = NULL;
    zsock_t *sock;
    zmsg_t *m;
    while ((m = outq_pop(g_b, &sock))) {
        if (!rep && sock == g_b->clients && zmsg_size(m) == 5) {
            zframe_t *body = zmsg_last(m);
            Ttfleet__Reply *r = ttfleet__reply__unpack(NULL, zframe_size(body), zframe_data(body));
            if (r && strcmp(r->request_id, rid) == 0) {
                rep = r;
                zmsg_destroy(&m);
                continue;
            }
            if (r)
                ttfleet__reply__free_unpacked(r, NULL);
        }
        zlistx_add_end(socks, sock);
        zlistx_add_end(msgs, m);
    }
    for (m = zlistx_first(msgs), sock = zlistx_first(socks); m;
         m = zlistx_next(msgs), sock = zlistx_next(socks))
        outq_push(g_b, sock, &(zmsg_t *){m});
    zlistx_destroy(&socks);
    zlistx_destroy(&msgs);
    return rep;
}

/* Capacity is handed on only once the worker confirms it free: a deleted
 * env's VMs hold their host's cpu, memory and disk for placement until the
 * worker answers the destroy (it may still be in a stop grace, and its own
 * resource check would refuse whatever the broker put there). Checked for
 * a queued create (not admitted before the answer, admitted at it), a start
 * of a stopped env, an evacuation, and a host that goes down or says READY
 * (its holds go: the inventory is reconciled). */
static void s_test_capacity_handoff(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    host_t *ha = model_host_get(g_b, "ha"), *hb = model_host_get(g_b, "hb");
    CHECK(ha && hb);
    if (!ha || !hb) {
        s_hard_close(saved);
        return;
    }
    /* both hosts full (8 cpu each), a create queued */
    CHECK(s_status(s_create("tf", "fill1", "img", 1, 8, 1024, false, NULL)) == 0);
    CHECK(s_status(s_create("tf", "fill2", "img", 1, 8, 1024, false, NULL)) == 0);
    env_t *f1 = model_env_get(g_b, "tf", "fill1");
    CHECK(f1 && f1->n_vms == 1 && f1->vms[0]->host == ha);
    CHECK(s_status(s_send_queued("tq", "waiting", "h-wait")) == TTFLEET__STATUS__QUEUED);

    /* delete fill1; the worker has not answered the destroy */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = "fill1";
    req.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
    req.env_delete = &ref;
    CHECK(s_status(s_call_unanswered("tf", &req, "h-del1")) == 0);
    CHECK(model_env_get(g_b, "tf", "fill1") == NULL);
    CHECK(ha->cpu_used == 0 && ha->cpu_freeing == 8 && ha->mem_freeing == 1024 &&
          ha->disk_freeing == 1000);
    admission_run(g_b, tt_now());
    broker_end_batch(g_b);
    CHECK(admq_find(g_b->admq, "tq", "waiting") != NULL); /* still queued */
    CHECK(model_env_get(g_b, "tq", "waiting") == NULL);
    /* a plain create is refused by the broker and says why; then (in
     * s_call) the worker answers the destroy, and the queued create is
     * admitted at once */
    Ttfleet__Reply *r = s_create("tp", "plain", "img", 1, 8, 1024, false, "h-plain");
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY && strstr(r->message, "being freed"));
    s_status(r);
    CHECK(ha->cpu_freeing == 0 && ha->mem_freeing == 0 && ha->disk_freeing == 0);
    CHECK(admq_find(g_b->admq, "tq", "waiting") == NULL);
    env_t *w = model_env_get(g_b, "tq", "waiting");
    CHECK(w && w->n_vms == 1 && w->vms[0]->host == ha);
    s_answer_commands(0);
    broker_end_batch(g_b);
    r = s_send_queued("tq", "waiting", "h-wait");
    CHECK(r && r->status == 0 && r->env && strcmp(r->env->state, "running") == 0);
    s_status(r);
    s_drain();

    /* start of a stopped env on a host whose freed room is still being freed:
     * hb holds fill2 (8); make room (delete fill2, answered), put a stopped
     * 4-cpu env and a 4-cpu filler there, delete the filler unanswered */
    ref.name = "fill2";
    CHECK(s_status(s_call_rid("tf", &req, "h-del2")) == 0);
    s_drain();
    /* ha is full (waiting, 8), so both go to hb */
    CHECK(s_status(s_create("ts", "sleeper", "img", 1, 4, 1024, false, NULL)) == 0);
    CHECK(s_status(s_create("tf", "fill3", "img", 1, 4, 1024, false, NULL)) == 0);
    CHECK(s_status(s_simple("ts", TTFLEET__REQUEST__OP_ENV_STOP, "sleeper")) == 0);
    CHECK(s_status(s_create("tf", "fill4", "img", 1, 4, 1024, false, NULL)) == 0);
    env_t *f4 = model_env_get(g_b, "tf", "fill4");
    CHECK(f4 && f4->vms[0]->host == hb && hb->cpu_used == 8);
    ref.name = "fill3";
    CHECK(s_status(s_call_unanswered("tf", &req, "h-del3")) == 0);
    CHECK(hb->cpu_used == 4 && hb->cpu_freeing == 4);
    Ttfleet__Request st = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef sref = TTFLEET__ENV_REF__INIT;
    sref.name = "sleeper";
    st.op_case = TTFLEET__REQUEST__OP_ENV_START;
    st.env_start = &sref;
    r = s_call_unanswered("ts", &st, "h-start1");
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY && strstr(r->message, "being freed"));
    s_status(r);
    env_t *sl = model_env_get(g_b, "ts", "sleeper");
    CHECK(sl && !sl->busy && sl->vms[0]->state == TTFLEET__VM_STATE__VM_STOPPED);
    CHECK(s_answer_commands(0) == 1); /* the destroy alone: no start was sent */
    broker_end_batch(g_b);
    CHECK(hb->cpu_freeing == 0);
    CHECK(s_status(s_call_rid("ts", &st, "h-start2")) == 0);
    CHECK(sl && sl->vms[0]->state == TTFLEET__VM_STATE__VM_RUNNING && hb->cpu_used == 8);
    s_drain();

    /* evacuation: a VM is not moved onto room still being freed */
    ref.name = "waiting";
    CHECK(s_status(s_call_unanswered("tq", &req, "h-del4")) == 0);
    CHECK(ha->cpu_freeing == 8);
    Ttfleet__Request act = TTFLEET__REQUEST__INIT;
    Ttfleet__HostDrain dr = TTFLEET__HOST_DRAIN__INIT;
    dr.id = "hb";
    dr.evacuate = true;
    act.op_case = TTFLEET__REQUEST__OP_HOST_DRAIN;
    act.host_drain = &dr;
    r = s_call_unanswered("admin", &act, "h-evac1");
    CHECK(r && r->status == 0 && strstr(r->message, "0 VM(s) moved"));
    s_status(r);
    CHECK(f4->vms[0]->host == hb);
    CHECK(s_answer_commands(0) >= 1);
    broker_end_batch(g_b);
    CHECK(ha->cpu_freeing == 0);
    r = s_call_rid("admin", &act, "h-evac2");
    CHECK(r && r->status == 0 && strstr(r->message, "2 VM(s) moved"));
    s_status(r);
    CHECK(f4->vms[0]->host == ha && sl->vms[0]->host == ha);
    s_drain();

    /* a host that says READY again (or goes down) drops its holds: its
     * inventory is reconciled instead */
    ref.name = "fill4";
    CHECK(s_status(s_call_unanswered("tf", &req, "h-del5")) == 0);
    CHECK(ha->cpu_freeing == 4);
    s_drain();
    s_ready("w-a", "ha", 8, 16384, 10000);
    broker_end_batch(g_b);
    CHECK(ha->cpu_freeing == 0 && zhashx_size(g_b->freeing) == 0);
    s_drain();
    s_hard_close(saved);
}

static void s_test_disk_total(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    /* 4 VMs of 1000 MiB on host ha (10,000 MiB): 4,000 used */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "img";
    ic.dup = 4;
    cr.name = "disks";
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 1;
    cr.mem_mib = 256;
    cr.disk_mib = 1000;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    CHECK(s_status(s_call_rid("t1", &req, "disk-create")) == 0);
    host_t *ha = model_host_get(g_b, "ha");
    env_t *e = model_env_get(g_b, "t1", "disks");
    CHECK(ha && e && e->n_vms == 4);
    for (int i = 0; e && ha && i < e->n_vms; i++)
        CHECK(e->vms[i]->host == ha);
    Ttfleet__Request st = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = "disks";
    st.op_case = TTFLEET__REQUEST__OP_ENV_STOP;
    st.env_stop = &ref;
    CHECK(s_status(s_call_rid("t1", &st, "disk-stop")) == 0);
    /* each VM to 3,000: +2,000 each fits alone (6,000 free), 8,000 in all does not */
    Ttfleet__Request up = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvUpdate u = TTFLEET__ENV_UPDATE__INIT;
    u.name = "disks";
    u.disk_mib = 3000;
    up.op_case = TTFLEET__REQUEST__OP_ENV_UPDATE;
    up.env_update = &u;
    Ttfleet__Reply *r = s_call_rid("t1", &up, "disk-grow");
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY && strstr(r->message, "disk"));
    s_status(r);
    CHECK(ha && ha->disk_used == 4000 && ha->disk_used <= ha->disk_total);
    /* 2,500 each (+6,000 in all) fits exactly */
    u.disk_mib = 2500;
    CHECK(s_status(s_call_rid("t1", &up, "disk-grow2")) == 0);
    CHECK(ha && ha->disk_used == 10000);
    s_drain();
    s_hard_close(saved);
}

static void s_hello_send(const char *routing, const char *host, uint32_t cpu, uint64_t mem,
                         uint64_t disk, size_t n_images, size_t n_inv, bool dup_inv)
{
    Ttfleet__WorkerHello h = TTFLEET__WORKER_HELLO__INIT;
    h.host_id = (char *)host;
    h.cpu_total = cpu;
    h.mem_total = mem;
    h.disk_total = disk;
    char *engines[] = {"process"};
    h.n_engines = 1;
    h.engines = engines;
    char **images = calloc(n_images + 1, sizeof *images);
    char (*names)[16] = calloc(n_images + 1, sizeof *names);
    for (size_t i = 0; i < n_images; i++) {
        snprintf(names[i], sizeof names[i], i == 0 ? "img" : "i%zu", i);
        images[i] = names[i];
    }
    h.n_images = n_images;
    h.images = images;
    Ttfleet__VmActual *va = calloc(n_inv + 1, sizeof *va);
    Ttfleet__VmActual **vap = calloc(n_inv + 1, sizeof *vap);
    for (size_t i = 0; i < n_inv; i++) {
        ttfleet__vm_actual__init(&va[i]);
        va[i].vm_id = dup_inv ? 7 : (uint32_t)(TT_VMID_MIN + i % 65533);
        va[i].state = TTFLEET__VM_STATE__VM_RUNNING;
        va[i].env = "x/y";
        vap[i] = &va[i];
    }
    h.n_inventory = n_inv;
    h.inventory = vap;
    size_t len = ttfleet__worker_hello__get_packed_size(&h);
    uint8_t *buf = malloc(len + 1);
    ttfleet__worker_hello__pack(&h, buf);
    s_worker_send(routing, TT_W_READY, buf, len);
    free(buf);
    free(images);
    free(names);
    free(va);
    free(vap);
}

/* Worker output waiting for routing: commands and their total bytes. */
static size_t s_worker_bytes(const char *routing, int *n_msgs)
{
    size_t bytes = 0;
    *n_msgs = 0;
    zsock_t *sock;
    zmsg_t *m;
    zlistx_t *keep = zlistx_new();
    while ((m = outq_pop(g_b, &sock))) {
        if (sock == g_b->workers && zframe_streq(zmsg_first(m), routing)) {
            bytes += zmsg_content_size(m);
            (*n_msgs)++;
        }
        zlistx_add_end(keep, m);
    }
    for (m = zlistx_first(keep); m; m = zlistx_next(keep))
        outq_push(g_b, g_b->workers, &(zmsg_t *){m});
    zlistx_destroy(&keep);
    return bytes;
}

/* Item 7: what a hostile worker says is bounded; an admin's pin wins. */
static void s_test_hostile_ready(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    int n;
    /* absurd capacity and 300 images: clipped, not believed */
    s_hello_send("w-evil", "evil", 4000000000u, 1ull << 50, 1ull << 55, 300, 0, false);
    broker_end_batch(g_b);
    host_t *ev = model_host_get(g_b, "evil");
    CHECK(ev && ev->state == HOST_ONLINE);
    CHECK(ev && ev->cpu_total == TT_MAX_HOST_CPU && ev->mem_total == TT_MAX_HOST_MEM_MIB &&
          ev->disk_total == TT_MAX_HOST_DISK_MIB);
    CHECK(ev && ev->n_images == BROKER_MAX_IMAGES);
    s_drain();
    /* an inventory over the VM id space: refused whole, host not taken */
    s_hello_send("w-evil2", "evil2", 8, 1024, 1024, 1, TT_MAX_INVENTORY + 1, false);
    broker_end_batch(g_b);
    CHECK(model_host_get(g_b, "evil2") == NULL);
    s_worker_bytes("w-evil2", &n);
    CHECK(n == 1); /* only the DISCONNECT */
    s_drain();
    /* the same VM id repeated: refused */
    s_hello_send("w-evil3", "evil3", 8, 1024, 1024, 1, 1000, true);
    broker_end_batch(g_b);
    CHECK(model_host_get(g_b, "evil3") == NULL);
    s_drain();
    /* a full inventory of unknown VMs: accepted, destroyed in bounded commands */
    s_hello_send("w-full", "full", 8, 1024, 1024, 1, TT_MAX_INVENTORY, false);
    broker_end_batch(g_b);
    CHECK(model_host_get(g_b, "full") != NULL);
    size_t bytes = s_worker_bytes("w-full", &n);
    CHECK(n >= TT_MAX_INVENTORY / 500 && bytes / (size_t)n < 128 * 1024);
    printf("  full inventory: %d commands, %zu bytes\n", n, bytes);
    s_drain();
    /* the loop still answers a client after all that */
    CHECK(s_status(s_simple("t1", TTFLEET__REQUEST__OP_ENV_SHOW, "none")) ==
          TTFLEET__STATUS__NOT_FOUND);

    /* pin: the evil host claims 4096 cpu; pinned to 2 it takes 2 VMs of 1 cpu */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__HostSet hs = TTFLEET__HOST_SET__INIT;
    hs.id = "evil";
    hs.cpu = 2;
    req.op_case = TTFLEET__REQUEST__OP_HOST_SET;
    req.host_set = &hs;
    CHECK(s_status(s_call_rid("t1", &req, "pin-user")) == TTFLEET__STATUS__FORBIDDEN);
    Ttfleet__Reply *r = s_call_rid("admin", &req, "pin-1");
    CHECK(r && r->status == 0 && r->host && r->host->pin_cpu == 2 && r->host->cpu_total == 2 &&
          r->host->advertised_cpu == TT_MAX_HOST_CPU);
    s_status(r);
    /* drain the honest hosts so only evil is left */
    const char *others[] = {"ha", "hb", "full"};
    for (int i = 0; i < 3; i++) {
        Ttfleet__Request d = TTFLEET__REQUEST__INIT;
        Ttfleet__HostDrain dr = TTFLEET__HOST_DRAIN__INIT;
        char rid[32];
        snprintf(rid, sizeof rid, "drain-%s", others[i]);
        dr.id = (char *)others[i];
        d.op_case = TTFLEET__REQUEST__OP_HOST_DRAIN;
        d.host_drain = &dr;
        CHECK(s_status(s_call_rid("admin", &d, rid)) == 0);
    }
    CHECK(s_status(s_create("t1", "p1", "img", 2, 1, 64, false, "pin-c1")) == 0);
    CHECK(s_status(s_create("t1", "p2", "img", 1, 1, 64, false, "pin-c2")) ==
          TTFLEET__STATUS__NO_CAPACITY);
    /* a new READY keeps the pin */
    s_hello_send("w-evil", "evil", 4000000000u, 1ull << 50, 1ull << 55, 3, 0, false);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    ev = model_host_get(g_b, "evil");
    CHECK(ev && ev->cpu_total == 2);
    CHECK(s_status(s_create("t1", "p3", "img", 1, 1, 64, false, "pin-c3")) ==
          TTFLEET__STATUS__NO_CAPACITY);
    /* the pin survives a restart (broker.db) */
    broker_end_batch(g_b);
    broker_destroy(&g_b);
    g_b = s_open(g_hdir, 0);
    CHECK(g_b != NULL);
    if (!g_b) {
        g_b = saved;
        return;
    }
    ev = model_host_get(g_b, "evil");
    CHECK(ev && ev->pin_cpu == 2 && ev->cpu_total == 2);
    /* unpin: back to what it advertises */
    hs.cpu = 0;
    hs.unpin = true;
    r = s_call_rid("admin", &req, "pin-2");
    CHECK(r && r->status == 0 && r->host && r->host->pin_cpu == 0 &&
          r->host->cpu_total == TT_MAX_HOST_CPU);
    s_status(r);
    s_drain();
    s_hard_close(saved);
}

/* Item 6: bounded stored replies, the per-tenant rate limit, extend that
 * re-sends nothing when the lease did not change. */
static void s_test_amplification(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "img";
    ic.dup = 400;
    cr.name = "big";
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 0;
    cr.cpu = 1;
    cr.mem_mib = 16;
    cr.disk_mib = 10;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    /* 400 VMs of 1 cpu need a big host */
    s_ready("w-c", "hc", 1024, 1 << 20, 1 << 20);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    Ttfleet__Reply *r = s_call_rid("t1", &req, "big-create");
    printf("  big create: %s %s %zu\n", r ? tt_status_name(r->status) : "none", r ? r->message : "", r && r->env ? r->env->n_vms : 0);
    CHECK(r && r->status == 0 && r->env && r->env->n_vms == 400);
    s_status(r);
    Ttfleet__Request x = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvExtend ex = TTFLEET__ENV_EXTEND__INIT;
    ex.name = "big";
    ex.lifetime = 7200;
    x.op_case = TTFLEET__REQUEST__OP_ENV_EXTEND;
    x.env_extend = &ex;
    r = s_call_rid("t1", &x, "ext-1");
    CHECK(r && r->status == 0 && r->env && r->env->n_vms == 400); /* the live reply is whole */
    size_t live = r ? ttfleet__reply__get_packed_size(r) : 0;
    s_status(r);
    request_rec_t *rec = reply_record_find(g_b, "t1", "ext-1");
    CHECK(rec && rec->done && rec->len <= REPLY_MAX_STORED && live > REPLY_MAX_STORED);
    printf("  extend of 400 VMs: reply %zu bytes, stored %zu\n", live, rec ? rec->len : 0);
    /* the retry gets the outcome from the compact copy */
    r = s_call_rid("t1", &x, "ext-1");
    CHECK(r && r->status == 0 && r->env && strstr(r->message, "stored copy"));
    s_status(r);
    /* the same lease again: no spec is re-sent */
    x.request_id = "ext-2";
    x.tenant = "t1";
    s_client_send(TT_SERVICE_ENV, &x);
    int n;
    s_worker_bytes("w-a", &n);
    int n_all = n;
    s_worker_bytes("w-b", &n);
    n_all += n;
    s_worker_bytes("w-c", &n);
    n_all += n;
    CHECK(n_all == 0);
    broker_end_batch(g_b);
    s_drain();

    /* per-host bound: an extend storm in one batch queues at most
     * WCMD_HOST_BATCH_BYTES to a host; the rest is refused and coalesced
     * into one resync at the next tick */
    g_b->cfg.rate = 0;
    for (int i = 0; i < 700; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "storm-%d", i);
        x.request_id = rid;
        ex.lifetime = 4000 + (uint64_t)i;
        s_client_send(TT_SERVICE_ENV, &x);
    }
    host_t *hc = model_host_get(g_b, "hc");
    size_t qbytes = s_worker_bytes("w-c", &n);
    CHECK(hc && hc->resync && qbytes <= WCMD_HOST_BATCH_BYTES + 64 * 1024);
    printf("  extend storm: %zu bytes in %d commands queued to hc\n", qbytes, n);
    broker_end_batch(g_b);
    s_drain();
    /* the simulated worker is alive (this checks the resync, not liveness:
     * on a loaded machine the storm can outlast the heartbeat liveness) */
    if (hc)
        hc->last_recv_ms = tt_mono_ms();
    workers_tick(g_b, tt_mono_ms());
    s_worker_bytes("w-c", &n);
    CHECK(hc && !hc->resync && n >= 1 && n <= 2); /* the resync (and a heartbeat) */
    broker_end_batch(g_b);
    s_drain();

    /* rate limit: a burst of 5 at 1/s, then RATE_LIMITED (not recorded) */
    g_b->cfg.rate = 1;
    g_b->cfg.rate_burst = 5;
    int ok = 0, limited = 0;
    for (int i = 0; i < 8; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "rl-%d", i);
        ex.lifetime = 3600 + (uint64_t)i;
        int st = s_status(s_call_rid("t2", &x, rid));
        ok += st == TTFLEET__STATUS__NOT_FOUND; /* t2 has no env: handled, not limited */
        limited += st == TTFLEET__STATUS__RATE_LIMITED;
    }
    CHECK(ok == 5 && limited == 3);
    CHECK(reply_record_find(g_b, "t2", "rl-7") == NULL);
    /* another tenant and the admin are not affected */
    CHECK(s_status(s_call_rid("t3", &x, "rl-other")) == TTFLEET__STATUS__NOT_FOUND);
    for (int i = 0; i < 8; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "rl-admin-%d", i);
        CHECK(s_status(s_call_rid("admin", &x, rid)) == TTFLEET__STATUS__NOT_FOUND);
    }
    s_drain();
    s_hard_close(saved);
}

/* Item 6: a body over the limit gets TOO_LARGE through the real socket
 * (libzmq used to drop it and the client heard nothing). */
/* READY from a host offering one engine with the capability names caps
 * (NULL: no engine_caps at all) and an image cache. */
static void s_ready_caps(const char *routing, const char *host, const char *engine, char **caps,
                         size_t n_caps)
{
    Ttfleet__WorkerHello h = TTFLEET__WORKER_HELLO__INIT;
    h.host_id = (char *)host;
    h.cpu_total = 8;
    h.mem_total = 16384;
    h.disk_total = 100000;
    char *engines[] = {(char *)engine};
    char *images[] = {"capimg"};
    h.n_engines = 1;
    h.engines = engines;
    h.n_images = 1;
    h.images = images;
    h.image_cache_mib = 1024;
    Ttfleet__EngineCaps ec = TTFLEET__ENGINE_CAPS__INIT, *ecp = &ec;
    ec.engine = (char *)engine;
    ec.n_caps = n_caps;
    ec.caps = caps;
    if (caps) {
        h.n_engine_caps = 1;
        h.engine_caps = &ecp;
    }
    uint8_t buf[1024];
    size_t len = ttfleet__worker_hello__pack(&h, buf);
    s_worker_send(routing, TT_W_READY, buf, len);
}

/* Memory-snapshot templates in placement: --boot auto prefers the host that
 * holds a template of (image, cpu, mem) over a better best-fit; --boot
 * snapshot places only there and, with none anywhere, says so; cold and a
 * template of another mem ignore it. */
static void s_test_template_placement(void)
{
    char *snap_caps[] = {"catalog", "snapshots"};
    s_ready_caps("w-sn1", "sn1", "snapq", snap_caps, 2);
    s_ready_caps("w-sn2", "sn2", "snapq", snap_caps, 2);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    host_t *h1 = model_host_get(g_b, "sn1"), *h2 = model_host_get(g_b, "sn2");
    CHECK(h1 && h2);
    if (!h1 || !h2)
        return;
    /* sn1 is fuller: best-fit takes it unless sn2's template counts */
    h1->cpu_used = 4;
    sched_want_t want = {"snapq", "capimg", 1, 256, 100, false, NULL, 0, NULL, 0, "cold"};
    int status = 0;
    char msg[512];
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h1);
    want.boot = "snapshot";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == NULL &&
          status == TTFLEET__STATUS__UNAVAILABLE && strstr(msg, "no template of image capimg"));
    host_tmpl_t *t = calloc(1, sizeof *t);
    CHECK(t != NULL);
    if (!t)
        return;
    snprintf(t->image, sizeof t->image, "capimg");
    t->cpu = 1;
    t->mem_mib = 256;
    free(h2->tmpl);
    h2->tmpl = t;
    h2->n_tmpl = 1;
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h2);
    want.boot = "";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h2);
    want.boot = "auto";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h2);
    want.boot = "cold";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h1);
    /* a template of another size is not this VM's */
    want.boot = "snapshot";
    want.mem = 512;
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == NULL);
    want.boot = "auto";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == h1);
    h1->cpu_used = 0;
}

/* env suspend / resume (docs/SNAPSHOTS.md): a suspend releases the VMs'
 * cpu and mem on their host; a resume re-checks them like a start
 * (NO_CAPACITY when the host is full, the env staying suspended) and
 * takes them back; an engine that does not declare snapshots is refused
 * with the reason, by its caps ("fancy" declares none). */
static Ttfleet__Reply *s_env_ref_op(const char *tenant, int op, const char *name)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = (char *)name;
    req.op_case = op;
    if (op == TTFLEET__REQUEST__OP_ENV_SUSPEND)
        req.env_suspend = &ref;
    else
        req.env_resume = &ref;
    return s_call(tenant, &req, NULL);
}

static void s_test_suspend_capacity(void)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "capimg";
    ic.dup = 1;
    cr.name = "susp1";
    cr.engine = "snapq";
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 3;
    cr.mem_mib = 512;
    cr.disk_mib = 100;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    Ttfleet__Reply *r = s_call("tsusp", &req, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->env && r->env->n_vms == 1);
    host_t *h = r && r->env && r->env->n_vms ? model_host_get(g_b, r->env->vms[0]->host) : NULL;
    s_status(r);
    CHECK(h != NULL);
    if (!h)
        return;
    uint32_t cpu0 = h->cpu_used;
    uint64_t mem0 = h->mem_used;
    CHECK(cpu0 >= 3 && mem0 >= 512);

    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_SUSPEND, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->env &&
          strcmp(r->env->state, "suspended") == 0 && r->env->n_vms == 1 &&
          r->env->vms[0]->state == TTFLEET__VM_STATE__VM_SUSPENDED);
    s_status(r);
    CHECK(h->cpu_used == cpu0 - 3 && h->mem_used == mem0 - 512);
    /* suspended twice: refused, nothing changes */
    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_SUSPEND, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__INVALID_STATE);
    s_status(r);

    /* the room is taken meanwhile: the resume is refused, still suspended */
    uint32_t saved = h->cpu_used;
    h->cpu_used = h->cpu_total - 2;
    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_RESUME, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY && strstr(r->message, "cpu"));
    s_status(r);
    CHECK(h->cpu_used == h->cpu_total - 2);
    h->cpu_used = saved;
    env_t *env = model_env_get(g_b, "tsusp", "susp1");
    CHECK(env && strcmp(model_env_state(env), "suspended") == 0);

    /* room again: resumed, cpu and mem taken back */
    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_RESUME, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->env && strcmp(r->env->state, "running") == 0);
    s_status(r);
    CHECK(h->cpu_used == cpu0 && h->mem_used == mem0);

    /* a suspended env can be stopped (its memory dropped) and started cold */
    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_SUSPEND, "susp1");
    s_status(r);
    r = s_simple("tsusp", TTFLEET__REQUEST__OP_ENV_STOP, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__OK && r->env && strcmp(r->env->state, "stopped") == 0);
    s_status(r);
    CHECK(h->cpu_used == cpu0 - 3 && h->mem_used == mem0 - 512);
    r = s_env_ref_op("tsusp", TTFLEET__REQUEST__OP_ENV_RESUME, "susp1");
    CHECK(r && r->status == TTFLEET__STATUS__INVALID_STATE);
    s_status(r);

    /* an engine without snapshots ("fancy", env caps1 of s_test_engine_caps) */
    r = s_env_ref_op("tcaps", TTFLEET__REQUEST__OP_ENV_SUSPEND, "caps1");
    CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST &&
          strstr(r->message, "cannot save a VM's memory"));
    s_status(r);
    r = s_simple("tsusp", TTFLEET__REQUEST__OP_ENV_DELETE, "susp1");
    s_status(r);
}

/* The broker decides from what an engine declares, never from its name:
 * an engine called "fancy" that declares bootstrap and catalog images gets
 * creates with SSH keys and catalog placements; a host whose engine is
 * called "qemu" but declares nothing gets neither. HostInfo shows it. */
static void s_test_engine_caps(void)
{
    char *fancy_caps[] = {"catalog", "bootstrap", "no-such-capability"};
    char *none[] = {NULL};
    s_ready_caps("w-fancy", "fancy-host", "fancy", fancy_caps, 3);
    s_ready_caps("w-plainq", "plainq-host", "qemu", none, 0);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    host_t *fh = model_host_get(g_b, "fancy-host"), *qh = model_host_get(g_b, "plainq-host");
    CHECK(fh && qh);
    if (!fh || !qh)
        return;
    CHECK(model_host_engine_caps(fh, "fancy") == (TT_CAP_CATALOG | TT_CAP_BOOTSTRAP));
    CHECK(model_host_engine_caps(qh, "qemu") == 0);
    bool said = false;
    CHECK(model_engine_caps(g_b, "fancy", &said) == (TT_CAP_CATALOG | TT_CAP_BOOTSTRAP) && said);
    CHECK(model_engine_caps(g_b, "nosuch", &said) == 0 && !said);

    /* HostInfo carries the declared names, the unknown one dropped */
    reply_arena_t arena = reply_arena();
    Ttfleet__HostInfo *hi = reply_host_info(&arena, fh);
    CHECK(hi && hi->n_engine_caps == 1 && strcmp(hi->engine_caps[0]->engine, "fancy") == 0 &&
          hi->engine_caps[0]->n_caps == 2 && strcmp(hi->engine_caps[0]->caps[0], "catalog") == 0 &&
          strcmp(hi->engine_caps[0]->caps[1], "bootstrap") == 0);
    reply_arena_free(&arena);

    /* a catalog image goes only where the engine declares catalog images */
    sched_want_t want = {
        "fancy",
        "capimg",
        1,
        256,
        100,
        false,
        NULL,
        0,
        "sha256:0000000000000000000000000000000000000000000000000000000000000000 1 f\n",
        0,
        NULL};
    int status = 0;
    char msg[512];
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == fh);
    want.engine = "qemu";
    CHECK(sched_place(g_b, &want, &status, msg, sizeof msg) == NULL &&
          status == TTFLEET__STATUS__UNAVAILABLE);

    /* SSH keys: refused for the "qemu" that cannot bootstrap, placed on the
     * "fancy" engine that can */
    char *keys[] = {"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP1jw7R4xwdKDnuMnLfxNt59tJmxYANG/S9aWgUzWXJ3 me@x"};
    const char *engines[] = {"qemu", "fancy"};
    int want_status[] = {TTFLEET__STATUS__BAD_REQUEST, TTFLEET__STATUS__OK};
    for (int i = 0; i < 2; i++) {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
        Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
        ic.image = "capimg";
        ic.dup = 1;
        char name[32];
        snprintf(name, sizeof name, "caps%d", i);
        cr.name = name;
        cr.engine = (char *)engines[i];
        cr.n_images = 1;
        cr.images = &icp;
        cr.cpu = 1;
        cr.mem_mib = 256;
        cr.disk_mib = 100;
        cr.n_ssh_keys = 1;
        cr.ssh_keys = keys;
        req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
        req.env_create = &cr;
        Ttfleet__Reply *r = s_call("tcaps", &req, NULL);
        CHECK(r && (int)r->status == want_status[i]);
        if (r && i == 0)
            CHECK(strstr(r->message, "cannot bootstrap") != NULL);
        if (r && i == 1)
            CHECK(r->env && r->env->n_vms == 1 && strcmp(r->env->vms[0]->host, "fancy-host") == 0);
        s_status(r);
    }
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    s_test_template_placement();
    s_test_suspend_capacity();
}

static void s_test_oversized_body(void)
{
    broker_t *saved;
    if (!s_hard_open(&saved)) {
        CHECK(0);
        return;
    }
    const char *ep = zsock_endpoint(g_b->clients);
    zsock_t *dealer = zsock_new(ZMQ_DEALER);
    CHECK(dealer && ep && zsock_connect(dealer, "%s", ep) == 0);
    size_t big = TT_MAX_BODY + 64 * 1024;
    uint8_t *body = calloc(1, big);
    zmsg_t *m = zmsg_new();
    zmsg_addmem(m, "", 0);
    zmsg_addstr(m, TT_MDP_CLIENT);
    zmsg_addstr(m, TT_SERVICE_ENV);
    zmsg_addmem(m, body, big);
    free(body);
    zmsg_send(&m, dealer);
    zpoller_t *p = zpoller_new(g_b->clients, NULL);
    void *which = zpoller_wait(p, 5000);
    CHECK(which == g_b->clients);
    if (which == g_b->clients) {
        zmsg_t *in = zmsg_recv(g_b->clients);
        broker_handle_client(g_b, &in);
        broker_end_batch(g_b);
        outq_flush(g_b);
        zsock_set_rcvtimeo(dealer, 5000);
        zmsg_t *rep = zmsg_recv(dealer);
        CHECK(rep && zmsg_size(rep) == 4);
        if (rep && zmsg_size(rep) == 4) {
            zframe_t *f = zmsg_last(rep);
            Ttfleet__Reply *rr = ttfleet__reply__unpack(NULL, zframe_size(f), zframe_data(f));
            CHECK(rr && rr->status == TTFLEET__STATUS__TOO_LARGE);
            if (rr)
                ttfleet__reply__free_unpacked(rr, NULL);
        }
        zmsg_destroy(&rep);
    }
    zpoller_destroy(&p);
    zsock_destroy(&dealer);
    s_drain();
    s_hard_close(saved);
}

int main(void)
{
    zsys_init();
    zsys_set_logstream(NULL);
    char dir[] = "/tmp/ttbroker-test-XXXXXX";
    if (!mkdtemp(dir))
        return 1;
    g_b = s_open(dir, 20);
    CHECK(g_b != NULL);
    if (!g_b)
        return 1;

    /* two hosts: a small one and a big one */
    s_ready("w-small", "small", 4, 8192, 100000);
    s_ready("w-big", "big", 16, 65536, 1000000);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    CHECK(zhashx_size(g_b->hosts) == 2);

    /* best-fit puts a 2-cpu VM on the small host (least left after) */
    Ttfleet__Reply *r = s_create("t1", "bf", "img", 1, 2, 1024, false, NULL);
    CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1);
    if (r && r->env && r->env->n_vms == 1) {
        Ttfleet__VmInfo *vm = r->env->vms[0];
        CHECK(strcmp(vm->host, "small") == 0);
        CHECK(strcmp(r->env->state, "running") == 0);
        CHECK(vm->n_ports == 2); /* 22 always added, plus 80 */
        CHECK(vm->ports[0]->guest == 22 && vm->ports[0]->public_ >= TT_PORT_MIN &&
              vm->ports[0]->public_ <= TT_PORT_MAX);
        CHECK(vm->vm_id >= TT_VMID_MIN && strncmp(vm->ip, "10.10.", 6) == 0);
        CHECK(strncmp(vm->mac, "52:54:00:", 9) == 0);
        CHECK(vm->cpu == 2 && vm->mem_mib == 1024 && vm->disk_mib == 1000);
    }
    s_status(r);
    /* a worker's strings reach clients as clean UTF-8: a host that sends a
     * byte that is not UTF-8 or an escape spoils no reply (a Python client
     * refuses a whole reply with one bad byte) */
    {
        env_t *bf = model_env_get(g_b, "t1", "bf");
        Ttfleet__VmActual va = TTFLEET__VM_ACTUAL__INIT, *vap = &va;
        va.vm_id = bf && bf->n_vms ? bf->vms[0]->vm_id : 0;
        va.state = TTFLEET__VM_STATE__VM_RUNNING;
        va.ready_detail = "\xff\x1b[2J\xc2\x9b\x7f\xe2\x82 caf\xc3\xa9 \xed\xa0\x80";
        Ttfleet__WorkerEvent ev = TTFLEET__WORKER_EVENT__INIT;
        ev.n_vms = 1;
        ev.vms = &vap;
        uint8_t buf[256];
        size_t len = ttfleet__worker_event__pack(&ev, buf);
        s_worker_send("w-small", TT_W_EVENT, buf, len);
        broker_end_batch(g_b);
        s_drain();
        r = s_simple("t1", TTFLEET__REQUEST__OP_ENV_SHOW, "bf");
        const char *d = r && r->env && r->env->n_vms ? r->env->vms[0]->ready_detail : NULL;
        CHECK(d && strcmp(d, "??[2J????? caf\xc3\xa9 ???") == 0);
        if (d && strcmp(d, "??[2J????? caf\xc3\xa9 ???") != 0)
            fprintf(stderr, "  ready_detail kept: %s\n", d);
        s_status(r);
    }
    /* spread puts it on the big host */
    r = s_create("t1", "sp", "img", 1, 2, 1024, true, NULL);
    CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1 &&
          strcmp(r->env->vms[0]->host, "big") == 0);
    s_status(r);

    /* duplicate name for the same tenant; same name for another tenant is fine */
    CHECK(s_status(s_create("t1", "bf", "img", 1, 1, 512, false, NULL)) ==
          TTFLEET__STATUS__ALREADY_EXISTS);
    CHECK(s_status(s_create("t2", "bf", "img", 1, 1, 512, false, NULL)) == 0);

    /* capacity: 40 cpu more does not fit; the message says total/used/wanted;
     * nothing changes */
    host_t *small = model_host_get(g_b, "small"), *big = model_host_get(g_b, "big");
    uint32_t used_small = small->cpu_used, used_big = big->cpu_used;
    size_t envs = zhashx_size(g_b->envs);
    r = s_create("t1", "huge", "img", 10, 4, 1024, false, NULL);
    CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY);
    CHECK(r && strstr(r->message, "cpu") && strstr(r->message, "total") &&
          strstr(r->message, "used") && strstr(r->message, "wanted"));
    s_status(r);
    CHECK(small->cpu_used == used_small && big->cpu_used == used_big);
    CHECK(zhashx_size(g_b->envs) == envs);

    /* unknown image / engine */
    CHECK(s_status(s_create("t1", "noimg", "missing", 1, 1, 512, false, NULL)) ==
          TTFLEET__STATUS__UNAVAILABLE);

    /* idempotency: the same request id gets the same outcome, not a second env */
    r = s_create("t1", "idem", "img", 1, 1, 512, false, "fixed-id-1");
    uint32_t first_vm = r && r->env && r->env->n_vms ? r->env->vms[0]->vm_id : 0;
    CHECK(s_status(r) == 0);
    r = s_create("t1", "idem", "img", 1, 1, 512, false, "fixed-id-1");
    CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1 &&
          r->env->vms[0]->vm_id == first_vm);
    s_status(r);
    /* the same id from another tenant is another request */
    CHECK(s_status(s_create("t3", "idem", "img", 1, 1, 512, false, "fixed-id-1")) == 0);
    /* the same id with another request is refused, not answered with the
     * first one's outcome: a delete under the create's id deletes nothing
     * and must not say OK */
    {
        Ttfleet__Request dq = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
        ref.name = "idem";
        dq.op_case = TTFLEET__REQUEST__OP_ENV_DELETE;
        dq.env_delete = &ref;
        r = s_call("t1", &dq, "fixed-id-1");
        CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST && r->message &&
              strstr(r->message, "already used for a different request"));
        s_status(r);
        CHECK(model_env_get(g_b, "t1", "idem") != NULL);
        /* a create of another env under it too; the first request still replays */
        CHECK(s_status(s_create("t1", "idem2", "img", 1, 1, 512, false, "fixed-id-1")) ==
              TTFLEET__STATUS__BAD_REQUEST);
        CHECK(model_env_get(g_b, "t1", "idem2") == NULL);
        r = s_create("t1", "idem", "img", 1, 1, 512, false, "fixed-id-1");
        CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1 &&
              r->env->vms[0]->vm_id == first_vm);
        s_status(r);
    }

    /* a worker that refuses: the create fails cleanly and undoes everything */
    {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
        Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
        ic.image = "img";
        ic.dup = 3;
        cr.name = "refused";
        cr.n_images = 1;
        cr.images = &icp;
        cr.cpu = 1;
        cr.mem_mib = 256;
        cr.disk_mib = 100;
        req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
        req.env_create = &cr;
        req.request_id = "refuse-1";
        req.tenant = "t1";
        uint32_t before = small->cpu_used + big->cpu_used;
        uint32_t vms_before = small->vm_count + big->vm_count;
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        CHECK(s_answer_commands(TTFLEET__STATUS__NO_CAPACITY) >= 1);
        broker_end_batch(g_b);
        r = s_client_reply();
        CHECK(r && r->status == TTFLEET__STATUS__NO_CAPACITY && strstr(r->message, "undone"));
        s_status(r);
        CHECK(small->cpu_used + big->cpu_used == before);
        CHECK(small->vm_count + big->vm_count == vms_before);
        CHECK(model_env_get(g_b, "t1", "refused") == NULL);
        s_drain();
    }

    /* a host that refuses: its VMs are re-placed on the other host */
    {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
        Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
        ic.image = "img";
        cr.name = "replaced";
        cr.n_images = 1;
        cr.images = &icp;
        cr.cpu = 1;
        cr.mem_mib = 128;
        cr.disk_mib = 100;
        req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
        req.env_create = &cr;
        req.request_id = "replace-1";
        req.tenant = "t1";
        s_client_send(TT_SERVICE_ENV, &req);
        broker_end_batch(g_b);
        g_refuse_only = "w-small"; /* best-fit picks small first; it refuses */
        for (int round = 0; round < 4; round++) {
            s_answer_commands(TTFLEET__STATUS__NO_CAPACITY);
            broker_end_batch(g_b);
        }
        g_refuse_only = NULL;
        r = s_client_reply();
        CHECK(r && r->status == 0 && r->env && r->env->n_vms == 1 &&
              strcmp(r->env->vms[0]->host, "big") == 0);
        s_status(r);
        s_drain();
    }

    /* stop too soon (20 s rule), update while running */
    used_small = small->cpu_used;
    uint64_t disk_small = small->disk_used;
    CHECK(s_status(s_simple("t1", TTFLEET__REQUEST__OP_ENV_STOP, "bf")) == 0);
    CHECK(small->cpu_used == used_small - 2); /* stop releases cpu and mem ... */
    CHECK(small->disk_used == disk_small);   /* ... and keeps the disk */
    CHECK(s_status(s_simple("t1", TTFLEET__REQUEST__OP_ENV_START, "bf")) ==
          TTFLEET__STATUS__TOO_SOON);
    {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvUpdate up = TTFLEET__ENV_UPDATE__INIT;
        up.name = "sp";
        up.cpu = 4;
        req.op_case = TTFLEET__REQUEST__OP_ENV_UPDATE;
        req.env_update = &up;
        CHECK(s_status(s_call("t1", &req, NULL)) == TTFLEET__STATUS__INVALID_STATE);
        up.name = "bf"; /* stopped: allowed */
        r = s_call("t1", &req, NULL);
        CHECK(r && r->status == 0 && r->env && r->env->vms[0]->cpu == 4);
        s_status(r);
    }

    /* tenant isolation: another tenant's env is "not found" */
    CHECK(s_status(s_simple("t2", TTFLEET__REQUEST__OP_ENV_SHOW, "sp")) ==
          TTFLEET__STATUS__NOT_FOUND);
    CHECK(s_status(s_simple("t2", TTFLEET__REQUEST__OP_ENV_DELETE, "sp")) ==
          TTFLEET__STATUS__NOT_FOUND);

    /* lifetime over 6 h: forbidden for users, fine for the admin tenant */
    {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__EnvExtend x = TTFLEET__ENV_EXTEND__INIT;
        x.name = "sp";
        x.lifetime = 7 * 3600;
        req.op_case = TTFLEET__REQUEST__OP_ENV_EXTEND;
        req.env_extend = &x;
        CHECK(s_status(s_call("t1", &req, NULL)) == TTFLEET__STATUS__FORBIDDEN);
        x.lifetime = 2 * 3600;
        r = s_call("t1", &req, NULL);
        CHECK(r && r->status == 0 && r->env && r->env->expires_at == r->env->created_at + 7200);
        s_status(r);
    }

    /* hostile frames: nothing crashes, bad requests get BAD_REQUEST */
    {
        zmsg_t *m = zmsg_new();
        zmsg_addstr(m, "evil");
        zmsg_addmem(m, "", 0);
        zmsg_addstr(m, TT_MDP_CLIENT);
        zmsg_addstr(m, TT_SERVICE_ENV);
        zmsg_addmem(m, "\x0a\xff\xff\xff\xff\x0f", 6);
        broker_handle_client(g_b, &m);
        r = s_client_reply();
        CHECK(r && r->status == TTFLEET__STATUS__BAD_REQUEST);
        s_status(r);
        m = zmsg_new();
        zmsg_addstr(m, "evil");
        broker_handle_client(g_b, &m);
        m = zmsg_new();
        zmsg_addstr(m, "evil-worker");
        zmsg_addmem(m, "", 0);
        zmsg_addstr(m, TT_WORKER_PROTO);
        zmsg_addmem(m, "\x03", 1);
        zmsg_addmem(m, "\xff\xff", 2);
        broker_handle_worker(g_b, &m);
        s_drain();
        /* bad name */
        CHECK(s_status(s_create("t1", ".hidden", "img", 1, 1, 1, false, NULL)) ==
              TTFLEET__STATUS__BAD_REQUEST);
        CHECK(s_status(s_create("t1", "a/b", "img", 1, 1, 1, false, NULL)) ==
              TTFLEET__STATUS__BAD_REQUEST);
    }

    /* delete frees everything of the env */
    {
        uint32_t before = big->vm_count;
        CHECK(s_status(s_simple("t1", TTFLEET__REQUEST__OP_ENV_DELETE, "sp")) == 0);
        CHECK(big->vm_count == before - 1);
        CHECK(s_status(s_simple("t1", TTFLEET__REQUEST__OP_ENV_SHOW, "sp")) ==
              TTFLEET__STATUS__NOT_FOUND);
    }

    /* host pointers held above are not valid after this (it reloads) */
    s_test_update_undo_two_hosts();
    s_test_vm_ids_unique_in_env();
    s_test_one_request_fails_alone();
    s_test_console_race();
    s_test_exec_relay_and_race();
    s_test_pull_extends_deadline();
    s_test_disk_total();
    s_test_queued_refused_requeued();
    s_test_capacity_handoff();
    s_test_audit_outcomes();
    s_test_labels();
    s_test_event_history();
    s_test_copy_share();
    s_test_copy_rate();
    s_test_blob_proof_per_key();
    s_test_hostile_ready();
    s_test_amplification();
    s_test_oversized_body();
    s_test_engine_caps();

    /* broker_stats: admin only; counts what this test did */
    {
        Ttfleet__Request req = TTFLEET__REQUEST__INIT;
        Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
        req.op_case = TTFLEET__REQUEST__OP_BROKER_STATS;
        req.broker_stats = &empty;
        CHECK(s_status(s_call("t1", &req, NULL)) == TTFLEET__STATUS__FORBIDDEN);
        Ttfleet__Reply *st = s_call("admin", &req, NULL);
        CHECK(st && st->status == TTFLEET__STATUS__OK && st->broker_stats);
        if (st && st->broker_stats) {
            const Ttfleet__BrokerStats *bs = st->broker_stats;
            CHECK(bs->commit_latency_count > 0 && bs->n_commit_latency > 1);
            CHECK(isinf(bs->commit_latency[bs->n_commit_latency - 1]->le));
            CHECK(bs->commit_latency[bs->n_commit_latency - 1]->count == bs->commit_latency_count);
            bool creates_ok = false, forbidden = false;
            for (size_t i = 0; i < bs->n_requests_total; i++) {
                const Ttfleet__RequestCount *rc = bs->requests_total[i];
                if (!strcmp(rc->op, "env_create") && !strcmp(rc->status, "OK") && rc->count > 0)
                    creates_ok = true;
                if (!strcmp(rc->op, "broker_stats") && !strcmp(rc->status, "FORBIDDEN"))
                    forbidden = rc->count == 1;
            }
            CHECK(creates_ok && forbidden);
            /* the fake workers answered commands: each host has a histogram */
            CHECK(bs->n_worker_latency > 0);
            for (size_t i = 0; i < bs->n_worker_latency; i++) {
                const Ttfleet__HostLatency *hl = bs->worker_latency[i];
                CHECK(hl->host && *hl->host && hl->count > 0 && hl->n_buckets > 1);
                CHECK(isinf(hl->buckets[hl->n_buckets - 1]->le));
                CHECK(hl->buckets[hl->n_buckets - 1]->count == hl->count && hl->sum >= 0);
            }
        }
        s_status(st);
    }

    /* reload from disk: the same envs, VMs, ports */
    r = s_simple("t1", TTFLEET__REQUEST__OP_ENV_SHOW, "bf");
    CHECK(r && r->env && r->env->n_vms == 1);
    uint32_t port22 = r && r->env && r->env->n_vms ? r->env->vms[0]->ports[0]->public_ : 0;
    char mac[20] = "";
    if (r && r->env && r->env->n_vms)
        snprintf(mac, sizeof mac, "%s", r->env->vms[0]->mac);
    s_status(r);
    /* an env's --boot survives the restart (its VMs' specs carry it) */
    g_create_boot = "cold";
    CHECK(s_status(s_create("t1", "bootc", "img", 1, 1, 64, false, NULL)) == 0);
    g_create_boot = NULL;
    broker_end_batch(g_b);
    size_t n_envs = zhashx_size(g_b->envs);
    broker_destroy(&g_b);
    g_b = s_open(dir, 20);
    CHECK(g_b && zhashx_size(g_b->envs) == n_envs);
    env_t *bootc = g_b ? model_env_get(g_b, "t1", "bootc") : NULL;
    CHECK(bootc && strcmp(bootc->boot, "cold") == 0);
    s_ready("w-small2", "small", 4, 8192, 100000);
    s_ready("w-big2", "big", 16, 65536, 1000000);
    broker_end_batch(g_b);
    s_answer_commands(0);
    broker_end_batch(g_b);
    s_drain();
    r = s_simple("t1", TTFLEET__REQUEST__OP_ENV_SHOW, "bf");
    CHECK(r && r->env && r->env->n_vms == 1 && r->env->vms[0]->ports[0]->public_ == port22 &&
          strcmp(r->env->vms[0]->mac, mac) == 0 && strcmp(r->env->state, "stopped") == 0);
    s_status(r);
    /* the retry of a request made before the restart still gets its outcome */
    r = s_create("t1", "idem", "img", 1, 1, 512, false, "fixed-id-1");
    CHECK(r && r->status == 0 && r->env && r->env->vms[0]->vm_id == first_vm);
    s_status(r);
    /* ... and another request under that id is still refused (the
     * fingerprint is in broker.db), nothing made */
    CHECK(s_status(s_create("t1", "idem3", "img", 1, 1, 512, false, "fixed-id-1")) ==
          TTFLEET__STATUS__BAD_REQUEST);
    CHECK(model_env_get(g_b, "t1", "idem3") == NULL);
    /* accounting after reload equals the sum of the VMs */
    small = model_host_get(g_b, "small");
    uint32_t sum = 0;
    for (env_t *e = zhashx_first(g_b->envs); e; e = zhashx_next(g_b->envs))
        for (int i = 0; i < e->n_vms; i++)
            if (e->vms[i]->host == small && model_vm_holds_cpu(e->vms[i]))
                sum += e->vms[i]->cpu;
    CHECK(small->cpu_used == sum);
    /* each host's VM list holds exactly its VMs */
    for (host_t *h = zhashx_first(g_b->hosts); h; h = zhashx_next(g_b->hosts)) {
        uint32_t listed = 0;
        for (vm_t *vm = h->vms; vm; vm = vm->host_next)
            listed += vm->host == h;
        CHECK(listed == h->vm_count);
    }

    broker_destroy(&g_b);
    s_rmtree(dir);
    return s_report("broker");
}
