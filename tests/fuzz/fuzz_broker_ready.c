/*
 * libFuzzer target: the broker's handling of a worker's READY (issue 9,
 * item 7): the input is the WorkerHello body of a READY from one worker
 * connection, run through decoding, the range checks (capacity, names,
 * inventory count, ids, repeats, string sizes), the host registry, the
 * scheduler's offers and reconciliation against a host that already has
 * envs (whose VMs the inventory may name, contradict or omit). After each
 * input a worker REPLY built from the same bytes is handled too, so late
 * answers meet whatever READY left. Hosts beyond a few dozen are forgotten
 * so memory stays flat.
 */
#define _GNU_SOURCE /* nftw() in fuzz_frames.h */
#include "broker.h"
#include "broker_fake.h"
#include "fuzz_frames.h"
#include "persist.h"
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static broker_t *g_broker;

static void s_send(const char *routing, int cmd, const void *body, size_t len)
{
    /* an empty body is a frame of its own, as the fuzzer gives it */
    fake_worker_send(g_broker, routing, cmd, body ? body : "", len);
}

static void s_drain(void)
{
    fake_drain(g_broker);
}

static void s_create(const char *name, uint32_t dup)
{
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvCreate cr = TTFLEET__ENV_CREATE__INIT;
    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT, *icp = &ic;
    ic.image = "img";
    ic.dup = dup;
    cr.name = (char *)name;
    cr.n_images = 1;
    cr.images = &icp;
    cr.cpu = 1;
    cr.mem_mib = 64;
    cr.disk_mib = 10;
    req.op_case = TTFLEET__REQUEST__OP_ENV_CREATE;
    req.env_create = &cr;
    req.request_id = (char *)name;
    req.tenant = "t";
    fake_client_send(g_broker, "client", TT_SERVICE_ENV, &req);
    broker_end_batch(g_broker);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fuzz_setup("ready");
    broker_config_t cfg;
    fake_broker_config(&cfg, dir);
    cfg.rate = 0;
    g_broker = fake_broker_new(&cfg);
    if (!g_broker)
        abort();
    /* a host "h1" with two envs on it, made while a good worker answered */
    Ttfleet__WorkerHello h = TTFLEET__WORKER_HELLO__INIT;
    char *engines[] = {"process"};
    char *images[] = {"img"};
    h.host_id = "h1";
    h.cpu_total = 64;
    h.mem_total = 65536;
    h.disk_total = 1 << 20;
    h.n_engines = 1;
    h.engines = engines;
    h.n_images = 1;
    h.images = images;
    uint8_t buf[256];
    size_t len = ttfleet__worker_hello__pack(&h, buf);
    s_send("good", TT_W_READY, buf, len);
    broker_end_batch(g_broker);
    s_drain();
    s_create("a", 3);
    s_create("b", 2);
    s_drain();
    return 0;
}

/* Forget hosts the inputs made (not h1), so the registry stays small. */
static void s_trim_hosts(void)
{
    if (zhashx_size(g_broker->hosts) <= 32)
        return;
    zlistx_t *keys = zhashx_keys(g_broker->hosts);
    for (const char *k = zlistx_first(keys); k; k = zlistx_next(keys)) {
        host_t *h = zhashx_lookup(g_broker->hosts, k);
        if (strcmp(k, "h1") == 0 || h->vms)
            continue;
        if (h->routing) {
            char *hex = zframe_strhex(h->routing);
            if (hex)
                zhashx_delete(g_broker->routes, hex);
            free(hex);
        }
        persist_host_delete(g_broker, h);
        zhashx_delete(g_broker->hosts, k);
    }
    zlistx_destroy(&keys);
    sched_invalidate(g_broker);
    broker_end_batch(g_broker);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* the first byte picks one of a few connections, so a READY may also
     * replace h1's live one */
    const char *routings[] = {"good", "w1", "w2", "w3"};
    const char *routing = routings[size ? data[0] & 3 : 0];
    if (size) {
        data++;
        size--;
    }
    s_send(routing, TT_W_READY, data, size);
    broker_end_batch(g_broker);
    s_send(routing, TT_W_REPLY, data, size);
    s_send(routing, TT_W_EVENT, data, size);
    broker_end_batch(g_broker);
    s_drain();
    s_trim_hosts();
    s_drain();
    return 0;
}
