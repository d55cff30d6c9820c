/*
 * guest_drive: a tiny driver that runs the worker's guest modules (engine
 * qemu with its NoCloud seed, probe, qga) one step per invocation, so the
 * Python test can drive a real guest with the same code the worker runs.
 *
 *   guest_drive start STATE IMAGES IMAGE VMID PUBPORT KEYFILE USERDATA|-
 *       saves the inputs, prepares the disk, starts QEMU (user network,
 *       guest 22 -> 127.0.0.1:PUBPORT); prints "PID STARTTIME"
 *   guest_drive stop STATE IMAGES IMAGE VMID PID STARTTIME
 *   guest_drive wait SPEC HOST PUBPORT SOCK CONSOLE TIMEOUT_S
 *       a probe until ready; prints "ready MS ATTEMPTS" (exit 1 on timeout)
 *   guest_drive exec SOCK TIMEOUT_S CMD ARGS...
 *       prints a JSON object: exit, signal, stdout, stderr, truncation
 *   guest_drive put SOCK LOCAL GUESTPATH / get SOCK GUESTPATH LOCAL
 *       prints "SHA256HEX BYTES MS"
 *   guest_drive osinfo SOCK
 *   guest_drive seed OUTDIR KEYFILE USERDATA|- MAC DHCP|IP
 *       renders the seed files (and the ISO) for inspection
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine.h"
#include "net.h"
#include "probe.h"
#include "qga.h"
#include "seed.h"
#include "spawn.h"

static char *s_slurp(const char *path, size_t max, size_t *len)
{
    *len = 0;
    if (strcmp(path, "-") == 0)
        return NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "open %s: %s\n", path, strerror(errno));
        exit(2);
    }
    char *buf = malloc(max + 1);
    *len = fread(buf, 1, max + 1, f);
    fclose(f);
    if (*len > max) {
        fprintf(stderr, "%s is over %zu bytes\n", path, max);
        exit(2);
    }
    buf[*len] = 0;
    return buf;
}

static void s_ctx(engine_ctx_t *ctx, const char *state, const char *images)
{
    static char qemu[4096], img[4096];
    memset(ctx, 0, sizeof *ctx);
    ctx->state_dir = state;
    ctx->images_dir = images;
    ctx->stop_timeout_ms = 30000;
    ctx->qemu = spawn_which("qemu-system-x86_64", qemu, sizeof qemu) ? NULL : qemu;
    ctx->qemu_img = spawn_which("qemu-img", img, sizeof img) ? NULL : img;
    ctx->accel = "tcg";
    ctx->net = NET_USER;
}

static void s_vm(vm_t *vm, const char *image, const char *id, const char *pubport)
{
    memset(vm, 0, sizeof *vm);
    vm->vm_id = (uint32_t)atoi(id);
    snprintf(vm->env, sizeof vm->env, "tenant/ci-job");
    snprintf(vm->image, sizeof vm->image, "%s", image);
    snprintf(vm->engine, sizeof vm->engine, "qemu");
    vm->cpu = 1;
    vm->mem_mib = 1024;
    vm->disk_mib = 3072; /* over the image's 2048: cloud-init grows the root fs */
    tt_vm_ip(vm->vm_id, vm->ip, sizeof vm->ip);
    snprintf(vm->mac, sizeof vm->mac, "52:54:00:10:%02x:%02x", (vm->vm_id >> 8) & 0xff,
             vm->vm_id & 0xff);
    if (pubport) {
        vm->n_ports = 1;
        vm->ports[0].guest = 22;
        vm->ports[0].public_port = (uint32_t)atoi(pubport);
    }
}

static int s_keys(const char *file, char **keys, size_t *n)
{
    size_t len;
    char *text = s_slurp(file, 65536, &len), *save = NULL;
    *n = 0;
    for (char *l = text ? strtok_r(text, "\n", &save) : NULL; l && *n < SEED_KEYS_MAX;
         l = strtok_r(NULL, "\n", &save))
        keys[(*n)++] = l;
    return 0;
}

static void s_hex(const unsigned char sha[32], char out[65])
{
    for (int i = 0; i < 32; i++)
        sprintf(out + 2 * i, "%02x", sha[i]);
}

int main(int argc, char **argv)
{
    char err[1024] = "";
    if (argc < 2)
        return 2;
    const char *cmd = argv[1];
    if (strcmp(cmd, "start") == 0 && argc == 9) {
        engine_ctx_t ctx;
        vm_t vm;
        s_ctx(&ctx, argv[2], argv[3]);
        s_vm(&vm, argv[4], argv[5], argv[6]);
        char *keys[SEED_KEYS_MAX];
        size_t n_keys;
        s_keys(argv[7], keys, &n_keys);
        size_t ud_len;
        char *ud = s_slurp(argv[8], SEED_USER_DATA_MAX + 1, &ud_len);
        char dir[4096];
        engine_vm_path(&ctx, vm.vm_id, NULL, dir, sizeof dir);
        char vms[4096];
        snprintf(vms, sizeof vms, "%s/vms", argv[2]);
        mkdir(vms, 0750);
        mkdir(dir, 0750);
        if (seed_inputs_save(dir, (const char *const *)keys, n_keys, ud, ud_len, err, sizeof err) ||
            engine_qemu.prepare_disk(&ctx, &vm, err, sizeof err) ||
            engine_qemu.start(&ctx, &vm, err, sizeof err)) {
            fprintf(stderr, "start: %s\n", err);
            return 1;
        }
        printf("%d %llu\n", (int)vm.pid, (unsigned long long)vm.start_time);
        return 0;
    }
    if (strcmp(cmd, "stop") == 0 && argc == 8) {
        engine_ctx_t ctx;
        vm_t vm;
        s_ctx(&ctx, argv[2], argv[3]);
        s_vm(&vm, argv[4], argv[5], NULL);
        vm.pid = atoi(argv[6]);
        vm.start_time = strtoull(argv[7], NULL, 10);
        if (engine_qemu.stop(&ctx, &vm, err, sizeof err)) {
            fprintf(stderr, "stop: %s\n", err);
            return 1;
        }
        return 0;
    }
    if (strcmp(cmd, "wait") == 0 && argc == 8) {
        probe_spec_t spec;
        if (probe_spec_parse(argv[2], &spec, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 2;
        }
        probe_target_t t = {0};
        snprintf(t.host, sizeof t.host, "%s", argv[3]);
        t.n_ports = 1;
        t.ports[0].guest = spec.port;
        t.ports[0].dial = (uint16_t)atoi(argv[4]);
        snprintf(t.agent_sock, sizeof t.agent_sock, "%s", argv[5]);
        snprintf(t.console_log, sizeof t.console_log, "%s", argv[6]);
        int64_t t0 = tt_mono_ms(), end = t0 + atoi(argv[7]) * 1000LL;
        probe_t *p = probe_new(&spec, &t, t0);
        for (;;) {
            int64_t now = tt_mono_ms();
            if (probe_step(p, now)) {
                printf("ready %lld %u %s\n", (long long)(now - t0), probe_attempts(p),
                       probe_detail(p));
                probe_destroy(&p);
                return 0;
            }
            if (now >= end) {
                printf("timeout after %u attempts: %s\n", probe_attempts(p), probe_detail(p));
                probe_destroy(&p);
                return 1;
            }
            short ev;
            int fd = probe_fd(p, &ev);
            int64_t wait = probe_due(p) - now;
            if (wait < 0)
                wait = 0;
            if (wait > end - now)
                wait = end - now;
            struct pollfd pf = {.fd = fd, .events = ev};
            poll(&pf, fd >= 0 ? 1 : 0, (int)wait);
        }
    }
    qga_conn_t *q = NULL;
    if (argc >= 3 && (strcmp(cmd, "exec") == 0 || strcmp(cmd, "put") == 0 ||
                      strcmp(cmd, "get") == 0 || strcmp(cmd, "osinfo") == 0)) {
        q = qga_open(argv[2], 10000, err, sizeof err);
        if (!q) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
    }
    if (strcmp(cmd, "exec") == 0 && argc >= 5) {
        qga_exec_t r;
        int64_t t0 = tt_mono_ms();
        if (qga_exec(q, (const char *const *)argv + 4, NULL, 0, atoi(argv[3]) * 1000, &r, err,
                     sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        json_t *o =
            json_pack("{s:i,s:i,s:s%,s:s%,s:b,s:b,s:I}", "exit", r.exit_code, "signal", r.signal,
                      "stdout", r.out ? (char *)r.out : "", r.out_len, "stderr",
                      r.errb ? (char *)r.errb : "", r.err_len, "out_truncated", r.out_truncated,
                      "err_truncated", r.err_truncated, "ms", (json_int_t)(tt_mono_ms() - t0));
        char *s = json_dumps(o, JSON_COMPACT);
        printf("%s\n", s ? s : "{}");
        return 0;
    }
    if ((strcmp(cmd, "put") == 0 || strcmp(cmd, "get") == 0) && argc == 5) {
        unsigned char sha[32];
        char hex[65];
        int64_t t0 = tt_mono_ms();
        size_t len;
        if (strcmp(cmd, "put") == 0) {
            char *data = s_slurp(argv[3], QGA_FILE_MAX, &len);
            if (qga_file_put(q, argv[4], data, len, sha, 120000, err, sizeof err)) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
        } else {
            unsigned char *data;
            if (qga_file_get(q, argv[3], &data, &len, sha, 120000, err, sizeof err)) {
                fprintf(stderr, "%s\n", err);
                return 1;
            }
            FILE *f = fopen(argv[4], "wb");
            if (!f || fwrite(data, 1, len, f) != len || fclose(f))
                return 1;
        }
        s_hex(sha, hex);
        printf("%s %zu %lld\n", hex, len, (long long)(tt_mono_ms() - t0));
        return 0;
    }
    if (strcmp(cmd, "osinfo") == 0) {
        char buf[256];
        if (qga_osinfo(q, buf, sizeof buf, 10000, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        printf("%s\n", buf);
        return 0;
    }
    if (strcmp(cmd, "seed") == 0 && argc == 7) {
        char *keys[SEED_KEYS_MAX];
        size_t n_keys, ud_len;
        s_keys(argv[3], keys, &n_keys);
        char *ud = s_slurp(argv[4], SEED_USER_DATA_MAX + 1, &ud_len);
        bool dhcp = strcmp(argv[6], "DHCP") == 0;
        seed_spec_t spec = {.instance_id = "tt-7-0123456789abcdef",
                            .hostname = "ci-job-7",
                            .mac = argv[5],
                            .dhcp = dhcp,
                            .ip = dhcp ? NULL : argv[6],
                            .prefix = NET_PREFIX,
                            .gateway = NET_GATEWAY,
                            .keys = (const char *const *)keys,
                            .n_keys = n_keys,
                            .user_data = ud,
                            .user_data_len = ud_len};
        char iso[4200];
        snprintf(iso, sizeof iso, "%s/seed.iso", argv[2]);
        if (seed_build(&spec, argv[2], iso, err, sizeof err)) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        return 0;
    }
    fprintf(stderr, "guest_drive: bad arguments\n");
    return 2;
}
