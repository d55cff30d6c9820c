/*
 * libFuzzer target: the worker's handling of messages from the broker.
 *
 * The input becomes one message as the worker's DEALER receives it
 * ([empty][TTW01][cmd][body]); wire_parse() checks it and, for a COMMAND,
 * fleet_command() applies it to a real fleet with a real worker.db in a
 * temporary directory. Only the `hollow` engine is enabled so the fuzzer
 * never spawns processes; everything up to the engine call is the real
 * code (validation, resource check, state machine, persistence).
 */
#define _GNU_SOURCE /* nftw() in fuzz_frames.h */
#include "fleet.h"
#include "fuzz_frames.h"
#include "wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static fleet_t *g_fleet;
static int g_runs;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fuzz_setup("worker");
    static char images[300];
    snprintf(images, sizeof images, "%s/images", dir);
    char path[400];
    if (mkdir(images, 0700))
        abort();
    const char *names[] = {"img", "sleeper"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", images, names[i]);
        FILE *f = fopen(path, "w");
        if (!f)
            abort();
        fputs("#!/bin/sh\nexit 0\n", f);
        fclose(f);
    }
    fleet_config_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.state_dir = dir;
    cfg.images_dir = images;
    cfg.host_id = "fuzzhost";
    cfg.cap.total.cpu = 64;
    cfg.cap.total.mem_mib = 65536;
    cfg.cap.total.disk_mib = 1 << 24;
    cfg.cap.cpu_ratio = cfg.cap.mem_ratio = cfg.cap.disk_ratio = 1.0;
    cfg.engines[0] = "hollow";
    cfg.n_engines = 1;
    cfg.expiry_grace = 300;
    cfg.stop_timeout_ms = 100;
    char err[256];
    g_fleet = fleet_new(&cfg, err, sizeof err);
    if (!g_fleet) {
        fprintf(stderr, "fleet_new: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    zmsg_t *msg = fuzz_frames(data, size);
    int cmd;
    zframe_t *body = NULL;
    char err[256];
    if (wire_parse(msg, &cmd, &body, err, sizeof err) == 0 && cmd == 0x02 && body) {
        zframe_t *reply = fleet_command(g_fleet, zframe_data(body), zframe_size(body));
        zframe_destroy(&reply);
    }
    zmsg_destroy(&msg);
    /* the periodic check too, now and then, with a clock far in the future
     * so expiry paths run as well */
    if (++g_runs % 64 == 0) {
        zframe_t *ev = fleet_tick(g_fleet, (int64_t)4000000000LL);
        zframe_destroy(&ev);
    }
    return 0;
}
