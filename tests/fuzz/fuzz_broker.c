/*
 * libFuzzer target: the broker's handling of untrusted messages.
 *
 * FUZZ_TARGET_CLIENT: the input becomes one client message (routing id +
 * MDP frames + protobuf body) given to broker_handle_client().
 * FUZZ_TARGET_WORKER: the input becomes one worker message given to
 * broker_handle_worker().
 * Either way the real code runs: validation, the model, the scheduler and
 * a real SQLite store in a temporary directory; each input's batch is
 * committed and its output discarded, as the loop would send it.
 * A worker host is registered first so that creates reach the scheduler.
 */
#define _GNU_SOURCE /* nftw() in fuzz_frames.h */
#include "broker.h"
#include "persist.h"
#include "fuzz_frames.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static broker_t *g_broker;

static void s_ready(broker_t *b)
{
    Ttfleet__WorkerHello h = TTFLEET__WORKER_HELLO__INIT;
    char *engines[] = {"process", "hollow"};
    char *images[] = {"img", "sleeper"};
    h.host_id = "fuzzhost";
    h.cpu_total = 64;
    h.mem_total = 65536;
    h.disk_total = 1 << 24;
    h.n_engines = 2;
    h.engines = engines;
    h.n_images = 2;
    h.images = images;
    uint8_t buf[512];
    size_t len = ttfleet__worker_hello__pack(&h, buf);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, "fuzz-worker");
    zmsg_addmem(m, "", 0);
    zmsg_addstr(m, TT_WORKER_PROTO);
    zmsg_addmem(m, "\x01", 1);
    zmsg_addmem(m, buf, len);
    broker_handle_worker(b, &m);
    broker_end_batch(b);
}

static void s_drain(broker_t *b)
{
    zmsg_t *m;
    while ((m = outq_pop(b, NULL)))
        zmsg_destroy(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    zsys_init();
    zsys_set_logstream(NULL);
    zsys_handler_set(NULL);
    static char dir[] = "/tmp/ttfuzz-broker-XXXXXX";
    if (!mkdtemp(dir))
        abort();
    fuzz_tmpdir_own(dir);
    broker_config_t cfg;
    broker_config_defaults(&cfg);
    snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", dir);
    snprintf(cfg.clients_ep, sizeof cfg.clients_ep, "tcp://127.0.0.1:*");
    snprintf(cfg.workers_ep, sizeof cfg.workers_ep, "tcp://127.0.0.1:*");
    snprintf(cfg.events_ep, sizeof cfg.events_ep, "tcp://127.0.0.1:*");
    cfg.min_stop_interval = 0;
    char err[256];
    g_broker = broker_new(&cfg, err, sizeof err);
    if (!g_broker) {
        fprintf(stderr, "broker_new: %s\n", err);
        abort();
    }
    s_ready(g_broker);
    s_drain(g_broker);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    zmsg_t *msg = fuzz_frames(data, size);
#ifdef FUZZ_TARGET_WORKER
    broker_handle_worker(g_broker, &msg);
#else
    broker_handle_client(g_broker, &msg);
#endif
    zmsg_destroy(&msg);
    broker_end_batch(g_broker);
    s_drain(g_broker);
    /* keep the model small so memory stays flat over millions of runs */
    if (zhashx_size(g_broker->envs) > 200) {
        zlistx_t *envs = zhashx_values(g_broker->envs);
        for (env_t *e = zlistx_first(envs); e; e = zlistx_next(envs))
            if (!e->busy) {
                persist_env_delete(g_broker, e);
                model_env_free(g_broker, &e);
            }
        zlistx_destroy(&envs);
        broker_end_batch(g_broker);
        s_drain(g_broker);
    }
    return 0;
}
