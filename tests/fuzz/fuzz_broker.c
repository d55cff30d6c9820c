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
#include "broker_fake.h"
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
    fake_worker_send(b, "fuzz-worker", TT_W_READY, buf, len);
    broker_end_batch(b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fuzz_setup("broker");
    broker_config_t cfg;
    fake_broker_config(&cfg, dir);
    cfg.min_stop_interval = 0;
    g_broker = fake_broker_new(&cfg);
    if (!g_broker)
        abort();
    s_ready(g_broker);
    fake_drain(g_broker);
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
    fake_drain(g_broker);
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
        fake_drain(g_broker);
    }
    return 0;
}
