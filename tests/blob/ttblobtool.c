/*
 * ttblobtool: a driver for the blob transfer parts, for tests and
 * measurements. Each subcommand runs the real module in this process:
 *   serve EP DIR [--max-mib N] [--require-grant] [--grant DIGEST SIZE]
 *         blobsrv; prints "listening EP", then "complete DIGEST SIZE" per upload
 *   push EP PATH [--digest D] [--rate-kib N] [--chunk B] [--credit N] [--timeout-ms N]
 *         ttimage_push (or, with --digest, the file as that blob)
 *   fetch EP CACHE DIGEST [--size N] [--rate-kib N] [--limit-mib N] [--times K]
 *         [--chunk B] [--credit N] [--timeout-ms N] [--give-up-ms N]
 *         imgcache + imgfetch: ensures DIGEST K times at once; a directory
 *         image's manifest is followed and the image materialized
 *   inspect PATH
 * Lines go to stdout, flushed, so a test can follow a transfer and kill
 * the process mid-way.
 */
#include "blobsrv.h"
#include "imgcache.h"
#include "imgfetch.h"
#include "ttblob.h"
#include "ttimage.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t s_stop;
static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

static int s_usage(void)
{
    fprintf(stderr, "usage: ttblobtool serve|push|fetch|inspect ... (see the source)\n");
    return 2;
}

static const char *s_opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static bool s_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return false;
}

static uint64_t s_num(int argc, char **argv, const char *name, uint64_t dflt)
{
    const char *v = s_opt(argc, argv, name);
    uint64_t n = dflt;
    if (v && !tt_u64_parse(v, &n)) {
        fprintf(stderr, "%s: not a number: %s\n", name, v);
        exit(2);
    }
    return n;
}

static int s_serve(int argc, char **argv)
{
    if (argc < 4)
        return s_usage();
    blobsrv_limits_t lim;
    blobsrv_limits_defaults(&lim);
    lim.max_blob = s_num(argc, argv, "--max-mib", lim.max_blob >> 20) << 20;
    lim.require_grant = s_flag(argc, argv, "--require-grant");
    char err[256];
    blobsrv_t *srv = blobsrv_new(argv[2], argv[3], &lim, err, sizeof err);
    if (!srv) {
        fprintf(stderr, "serve: %s\n", err);
        return 1;
    }
    for (int i = 0; i + 2 < argc; i++)
        if (strcmp(argv[i], "--grant") == 0) {
            uint64_t sz = 0;
            if (!tt_u64_parse(argv[i + 2], &sz) || blobsrv_grant(srv, argv[i + 1], sz, NULL)) {
                fprintf(stderr, "serve: bad --grant\n");
                return 2;
            }
        }
    printf("listening %s\n", blobsrv_endpoint(srv));
    fflush(stdout);
    zpoller_t *p = zpoller_new(blobsrv_sock(srv), NULL);
    while (!s_stop) {
        if (zpoller_wait(p, 200)) {
            char digest[TT_DIGEST_LEN + 1];
            uint64_t size;
            if (blobsrv_recv(srv, digest, &size) == 0) {
                uint64_t have = 0;
                printf("complete %s %llu stat=%d\n", digest, (unsigned long long)size,
                       blobsrv_stat(srv, digest, &have));
                fflush(stdout);
            }
        } else if (zpoller_terminated(p)) {
            break;
        }
    }
    zpoller_destroy(&p);
    blobsrv_destroy(&srv);
    return 0;
}

static void s_progress(void *arg, const char *digest, uint64_t done, uint64_t total)
{
    (void)arg;
    static uint64_t last;
    if (done == total || done - last >= (4u << 20) || done < last) {
        printf("progress %s %llu %llu\n", digest, (unsigned long long)done,
               (unsigned long long)total);
        fflush(stdout);
        last = done;
    }
}

static int s_push(int argc, char **argv)
{
    if (argc < 4)
        return s_usage();
    ttimage_opts_t o;
    ttimage_opts_defaults(&o);
    o.rate_bps = s_num(argc, argv, "--rate-kib", 0) * 1024;
    o.chunk = (uint32_t)s_num(argc, argv, "--chunk", o.chunk);
    o.credit = (uint32_t)s_num(argc, argv, "--credit", o.credit);
    o.timeout_ms = (uint32_t)s_num(argc, argv, "--timeout-ms", o.timeout_ms);
    o.give_up_ms = (uint32_t)s_num(argc, argv, "--give-up-ms", o.give_up_ms);
    o.progress = s_progress;
    char err[512];
    const char *digest = s_opt(argc, argv, "--digest");
    int64_t t0 = zclock_mono();
    if (digest) {
        if (ttimage_push_file(&o, argv[2], argv[3], digest, err, sizeof err)) {
            printf("error %s\n", err);
            return 1;
        }
        printf("pushed blob %s %.3f s\n", digest, (zclock_mono() - t0) / 1000.0);
        return 0;
    }
    ttimage_info_t info;
    if (ttimage_push(&o, argv[2], argv[3], &info, err, sizeof err)) {
        printf("error %s\n", err);
        return 1;
    }
    printf("pushed %s %s %llu %.3f s\n", info.kind, info.digest, (unsigned long long)info.size,
           (zclock_mono() - t0) / 1000.0);
    return 0;
}

static int s_inspect(int argc, char **argv)
{
    if (argc < 3)
        return s_usage();
    ttimage_info_t info;
    char err[512];
    if (ttimage_inspect(argv[2], &info, err, sizeof err)) {
        printf("error %s\n", err);
        return 1;
    }
    printf("%s %s %llu\n", info.kind, info.digest, (unsigned long long)info.size);
    return 0;
}

/* The worker's flow in small: reserve, ensure, index, follow a manifest,
 * materialize. */
static int s_fetch(int argc, char **argv)
{
    if (argc < 5)
        return s_usage();
    const char *digest = argv[4];
    char err[512];
    imgcache_t *cache =
        imgcache_new(argv[3], s_num(argc, argv, "--limit-mib", 0) << 20, err, sizeof err);
    if (!cache) {
        printf("error %s\n", err);
        return 1;
    }
    imgfetch_opts_t o;
    imgfetch_opts_defaults(&o);
    snprintf(o.endpoint, sizeof o.endpoint, "%s", argv[2]);
    snprintf(o.dir, sizeof o.dir, "%s", imgcache_blob_dir(cache));
    o.rate_bps = s_num(argc, argv, "--rate-kib", 0) * 1024;
    o.chunk = (uint32_t)s_num(argc, argv, "--chunk", o.chunk);
    o.credit = (uint32_t)s_num(argc, argv, "--credit", o.credit);
    o.timeout_ms = (uint32_t)s_num(argc, argv, "--timeout-ms", 1000);
    o.give_up_ms = (uint32_t)s_num(argc, argv, "--give-up-ms", 30000);
    uint64_t size = s_num(argc, argv, "--size", 0);
    uint64_t times = s_num(argc, argv, "--times", 1);
    imgfetch_t *f = imgfetch_new(&o, err, sizeof err);
    if (!f || (size && imgcache_reserve(cache, size, err, sizeof err))) {
        printf("error %s\n", err);
        imgfetch_destroy(&f);
        imgcache_destroy(&cache);
        return 1;
    }
    for (uint64_t i = 0; i < times; i++)
        imgfetch_ensure(f, digest, size);
    int64_t t0 = zclock_mono();
    int rc = 1, pending = 1, dones = 0;
    uint64_t moved = 0;
    bool manifest_seen = false;
    tt_manifest_t m = {0};
    zpoller_t *p = zpoller_new(imgfetch_sock(f), NULL);
    while (!s_stop && pending > 0) {
        if (!zpoller_wait(p, 200)) {
            if (zpoller_terminated(p))
                break;
            continue;
        }
        imgfetch_event_t ev;
        if (imgfetch_recv(f, &ev))
            continue;
        if (ev.kind == IMGFETCH_PROGRESS) {
            printf("progress %s %llu %llu\n", ev.digest, (unsigned long long)ev.got,
                   (unsigned long long)ev.total);
        } else if (ev.kind == IMGFETCH_FAILED) {
            printf("failed %s %s\n", ev.digest, ev.reason);
            pending = -1;
        } else {
            dones++;
            moved += ev.got;
            pending--;
            printf("done %s %llu fetched %llu\n", ev.digest, (unsigned long long)ev.total,
                   (unsigned long long)ev.got);
            if (imgcache_add(cache, ev.digest, strcmp(ev.digest, digest) == 0 ? size : 0, err,
                             sizeof err)) {
                printf("error %s\n", err);
                pending = -1;
            }
            if (strcmp(ev.digest, digest) == 0 && !manifest_seen) {
                manifest_seen = true;
                char path[4200], text[TT_MANIFEST_MAX];
                imgcache_path(cache, digest, false, path, sizeof path);
                FILE *fp = fopen(path, "rb");
                size_t n = fp ? fread(text, 1, sizeof text, fp) : 0;
                if (fp)
                    fclose(fp);
                if (tt_manifest_is(text, n)) {
                    if (tt_manifest_parse(text, n, &m, err, sizeof err)) {
                        printf("error %s\n", err);
                        pending = -1;
                    }
                    for (size_t i = 0; pending >= 0 && i < m.n; i++) {
                        imgfetch_ensure(f, m.files[i].digest, m.files[i].size);
                        pending++;
                    }
                }
            }
        }
        fflush(stdout);
    }
    if (pending == 0) {
        char dir[4200];
        if (imgcache_materialize(cache, digest, m.n ? &m : NULL, dir, sizeof dir, err,
                                 sizeof err)) {
            printf("error %s\n", err);
        } else {
            double s = (zclock_mono() - t0) / 1000.0;
            printf("image %s moved %llu in %.3f s\n", dir, (unsigned long long)moved, s);
            rc = 0;
        }
    }
    fflush(stdout);
    zpoller_destroy(&p);
    imgfetch_destroy(&f);
    imgcache_destroy(&cache);
    return rc;
}

int main(int argc, char **argv)
{
    signal(SIGTERM, s_on_signal);
    signal(SIGINT, s_on_signal);
    zsys_init();
    zsys_set_logstream(stderr);
    if (argc < 2)
        return s_usage();
    if (strcmp(argv[1], "serve") == 0)
        return s_serve(argc, argv);
    if (strcmp(argv[1], "push") == 0)
        return s_push(argc, argv);
    if (strcmp(argv[1], "fetch") == 0)
        return s_fetch(argc, argv);
    if (strcmp(argv[1], "inspect") == 0)
        return s_inspect(argc, argv);
    return s_usage();
}
