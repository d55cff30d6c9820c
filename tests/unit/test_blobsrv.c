/*
 * The blob server actor, the fetcher actor and the pusher in one process:
 * grants, the size limit, a digest that does not match, hostile frames
 * (each answered with an error, the server serving on), twenty ensures
 * of one digest fetching it once, a corrupted cached copy fetched again,
 * an unknown digest, image inspection of things that are not images.
 * Every wait is bounded.
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "blobsrv.h"
#include "imgcache.h"
#include "imgfetch.h"
#include "ttblob.h"
#include "ttimage.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char s_dir[64];

static void s_file(const char *path, size_t size, int seed, bool qcow2)
{
    FILE *f = fopen(path, "wb");
    for (size_t i = 0; i < size; i++)
        fputc(qcow2 && i < 4 ? "QFI\xfb"[i] : (int)((i * 131 + (size_t)seed) & 0xff), f);
    fclose(f);
}

/* One raw request; returns the reply's frames 1.. joined by ' ' (data
 * frames as their length). */
static void s_raw(zsock_t *s, const char *frames[], int n, char *out, size_t outlen)
{
    zmsg_t *msg = zmsg_new();
    for (int i = 0; i < n; i++)
        zmsg_addstr(msg, frames[i]);
    zmsg_send(&msg, s);
    out[0] = 0;
    zsock_set_rcvtimeo(s, 5000);
    zmsg_t *r = zmsg_recv(s);
    if (!r)
        return;
    size_t used = 0;
    for (zframe_t *f = zmsg_first(r); f; f = zmsg_next(r)) {
        char *str = zframe_strdup(f);
        used += (size_t)snprintf(out + used, outlen - used, "%s ",
                                 zframe_size(f) > 100 ? "<data>" : str);
        free(str);
        if (used >= outlen)
            break;
    }
    zmsg_destroy(&r);
}

static int s_event(imgfetch_t *f, imgfetch_event_t *ev, int ms)
{
    zpoller_t *p = zpoller_new(imgfetch_sock(f), NULL);
    int64_t end = zclock_mono() + ms;
    int rc = -1;
    while (zclock_mono() < end) {
        if (zpoller_wait(p, 100) && imgfetch_recv(f, ev) == 0) {
            if (ev->kind == IMGFETCH_PROGRESS)
                continue;
            rc = 0;
            break;
        }
    }
    zpoller_destroy(&p);
    return rc;
}

/* A ZAP handler for the test: CURVE keys of s_users get their user id. */
static const char *s_users[3][2];

static void s_zap(zsock_t *pipe, void *arg)
{
    (void)arg;
    zsock_t *rep = zsock_new_rep("inproc://zeromq.zap.01");
    zsock_signal(pipe, 0);
    zpoller_t *p = zpoller_new(pipe, rep, NULL);
    while (true) {
        void *which = zpoller_wait(p, -1);
        if (which != rep)
            break;
        zmsg_t *req = zmsg_recv(rep);
        char *version = zmsg_popstr(req), *id = zmsg_popstr(req);
        for (int i = 0; i < 3; i++)
            free(zmsg_popstr(req)); /* domain, address, identity */
        char *mech = zmsg_popstr(req);
        zframe_t *key = zmsg_pop(req);
        char txt[41] = "";
        if (key && zframe_size(key) == 32)
            zmq_z85_encode(txt, zframe_data(key), 32);
        const char *user = NULL;
        for (int i = 0; i < 3; i++)
            if (s_users[i][0] && strcmp(s_users[i][0], txt) == 0)
                user = s_users[i][1];
        /* the key in the metadata as "X-Key", as the broker's handler does */
        uint8_t meta[10 + 40] = {5, 'X', '-', 'K', 'e', 'y', 0, 0, 0, 40};
        memcpy(meta + 10, txt, 40);
        zmsg_t *rm = zmsg_new();
        zmsg_addstr(rm, version);
        zmsg_addstr(rm, id);
        zmsg_addstr(rm, user ? "200" : "400");
        zmsg_addstr(rm, user ? "OK" : "unknown");
        zmsg_addstr(rm, user ? user : "");
        zmsg_addmem(rm, meta, user ? sizeof meta : 0);
        zmsg_send(&rm, rep);
        free(version);
        free(id);
        free(mech);
        zframe_destroy(&key);
        zmsg_destroy(&req);
    }
    zpoller_destroy(&p);
    zsock_destroy(&rep);
}

int main(void)
{
    zsys_init();
    snprintf(s_dir, sizeof s_dir, "/tmp/tt-blobsrv-XXXXXX");
    if (!mkdtemp(s_dir))
        return 2;
    char srvdir[128], cachedir[128], file[128], err[512];
    snprintf(srvdir, sizeof srvdir, "%s/srv", s_dir);
    snprintf(cachedir, sizeof cachedir, "%s/cache", s_dir);
    snprintf(file, sizeof file, "%s/disk.qcow2", s_dir);

    blobsrv_limits_t lim;
    blobsrv_limits_defaults(&lim);
    lim.max_blob = 8u << 20;
    lim.require_grant = true;
    blobsrv_t *srv = blobsrv_new("tcp://127.0.0.1:*", srvdir, &lim, err, sizeof err);
    CHECK(srv);
    if (!srv)
        return 1;
    const char *ep = blobsrv_endpoint(srv);
    CHECK(blobsrv_new(ep, srvdir, &lim, err, sizeof err) == NULL && strstr(err, "bind"));

    /* not images */
    ttimage_info_t info;
    s_file(file, 3u << 20, 1, false);
    CHECK(ttimage_inspect(file, &info, err, sizeof err) == -1 && strstr(err, "not an image"));
    CHECK(ttimage_inspect(s_dir, &info, err, sizeof err) == -1 && strstr(err, "not an image"));
    CHECK(ttimage_inspect("/nonexistent", &info, err, sizeof err) == -1);
    s_file(file, 3u << 20, 1, true);
    CHECK(ttimage_inspect(file, &info, err, sizeof err) == 0 && strcmp(info.kind, "qcow2") == 0);

    ttimage_opts_t po;
    ttimage_opts_defaults(&po);
    po.timeout_ms = 500;
    po.give_up_ms = 5000;
    /* no grant: refused */
    CHECK(ttimage_push(&po, ep, file, &info, err, sizeof err) == -1 && strstr(err, "FORBIDDEN"));
    /* granted */
    blobsrv_grant(srv, info.digest, 3u << 20, NULL);
    CHECK(ttimage_push(&po, ep, file, &info, err, sizeof err) == 0);
    char d[TT_DIGEST_LEN + 1];
    uint64_t size = 0;
    zpoller_t *sp = zpoller_new(blobsrv_sock(srv), NULL);
    CHECK(zpoller_wait(sp, 5000) && blobsrv_recv(srv, d, &size) == 0);
    CHECK(strcmp(d, info.digest) == 0 && size == 3u << 20);
    CHECK(blobsrv_stat(srv, info.digest, &size) == 1);
    /* again: HAVE, no second transfer */
    CHECK(ttimage_push(&po, ep, file, &info, err, sizeof err) == 0);
    char good[TT_DIGEST_LEN + 1];
    memcpy(good, info.digest, sizeof good);

    /* over the limit */
    char big[128];
    snprintf(big, sizeof big, "%s/big.qcow2", s_dir);
    s_file(big, 9u << 20, 2, true);
    ttimage_info_t binfo;
    CHECK(ttimage_inspect(big, &binfo, err, sizeof err) == 0);
    blobsrv_grant(srv, binfo.digest, 100u << 20, NULL);
    CHECK(ttimage_push(&po, ep, big, &binfo, err, sizeof err) == -1 && strstr(err, "TOO_LARGE"));

    /* a claimed digest the data does not match */
    const char *liar = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    blobsrv_grant(srv, liar, 3u << 20, NULL);
    CHECK(ttimage_push_file(&po, ep, file, liar, err, sizeof err) == -1 &&
          strstr(err, "DIGEST_MISMATCH"));
    CHECK(blobsrv_stat(srv, liar, &size) == 0);
    char part[256];
    snprintf(part, sizeof part, "%s/sha256/%s.part", srvdir, liar + 7);
    CHECK(access(part, F_OK) != 0);

    /* hostile frames */
    zsock_t *raw = zsock_new_dealer(ep);
    char out[1024];
    struct {
        const char *f[6];
        int n;
        const char *want;
    } bad[] = {
        {{"TTB02", "STAT", good}, 3, "BAD_REQUEST"},
        {{"TTB01", "STAT", "sha256:../../../etc/passwd"}, 3, "BAD_REQUEST"},
        {{"TTB01", "STAT",
          "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
         3,
         "BAD_REQUEST"},
        {{"TTB01", "GET", good, "0", "0"}, 5, "BAD_REQUEST"},
        {{"TTB01", "GET", good, "0", "2097152"}, 5, "BAD_REQUEST"},
        {{"TTB01", "GET", good, "99999999", "10"}, 5, "BAD_REQUEST"},
        {{"TTB01", "GET", good, "-1", "10"}, 5, "BAD_REQUEST"},
        {{"TTB01", "GET", liar, "0", "10"}, 5, "NOT_FOUND"},
        {{"TTB01", "DATA", liar, "0", "xx"}, 5, "NO_UPLOAD"},
        {{"TTB01", "PUT", liar, "abc"}, 4, "BAD_REQUEST"},
        {{"TTB01", "PUT", liar, "0"}, 4, "BAD_REQUEST"},
        {{"TTB01", "PUT", liar, "99999999999999999999999"}, 4, "BAD_REQUEST"},
        {{"TTB01", "PUT", "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
          "5"},
         4,
         "FORBIDDEN"},
        {{"TTB01", "FROB", good}, 3, "BAD_REQUEST"},
        {{"TTB01", "STAT", good, "x", "y", "z"}, 6, "BAD_REQUEST"},
        {{"TTB01"}, 1, "BAD_REQUEST"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        s_raw(raw, bad[i].f, bad[i].n, out, sizeof out);
        if (!strstr(out, bad[i].want))
            fprintf(stderr, "case %zu: got '%s', want %s\n", i, out, bad[i].want);
        CHECK(strstr(out, "ERROR") && strstr(out, bad[i].want));
    }
    const char *stat[] = {"TTB01", "STAT", good};
    s_raw(raw, stat, 3, out, sizeof out);
    CHECK(strstr(out, "SIZE") && strstr(out, "3145728"));
    const char *get[] = {"TTB01", "GET", good, "3145720", "100"};
    s_raw(raw, get, 5, out, sizeof out);
    CHECK(strstr(out, "CHUNK") && strstr(out, "3145720"));
    /* once revoked, a PUT of a complete blob learns nothing (FORBIDDEN,
     * not HAVE); a proof grant makes the peer upload it although it is
     * here, and the verified upload is reported again */
    blobsrv_revoke(srv, good);
    const char *put[] = {"TTB01", "PUT", good, "3145728"};
    for (int i = 0; i < 50; i++) { /* the pipe command is asynchronous */
        s_raw(raw, put, 4, out, sizeof out);
        if (!strstr(out, "HAVE"))
            break;
        zclock_sleep(20);
    }
    CHECK(strstr(out, "ERROR") && strstr(out, "FORBIDDEN"));
    blobsrv_grant_proof(srv, good, 3u << 20, NULL);
    zclock_sleep(50);
    s_raw(raw, put, 4, out, sizeof out);
    CHECK(strstr(out, "OFFSET") && strstr(out, " 0 "));
    const char *abort_put[] = {"TTB01", "ABORT", good};
    s_raw(raw, abort_put, 3, out, sizeof out);
    CHECK(ttimage_push_file(&po, ep, file, good, err, sizeof err) == 0);
    char user[64] = "x";
    CHECK(zpoller_wait(sp, 5000) && blobsrv_recv_from(srv, d, &size, user, sizeof user) == 0 &&
          strcmp(d, good) == 0 && user[0] == 0);
    CHECK(blobsrv_stat(srv, good, &size) == 1 && size == 3u << 20);
    /* an unfinished upload's .part goes with its grant */
    const char *half = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc";
    blobsrv_grant(srv, half, 1000, NULL);
    zclock_sleep(50);
    const char *hput[] = {"TTB01", "PUT", half, "1000"};
    s_raw(raw, hput, 4, out, sizeof out);
    CHECK(strstr(out, "OFFSET"));
    const char *hdata[] = {"TTB01", "DATA", half, "0", "some bytes"};
    s_raw(raw, hdata, 5, out, sizeof out);
    CHECK(strstr(out, "ACK"));
    snprintf(part, sizeof part, "%s/sha256/%s.part", srvdir, half + 7);
    CHECK(access(part, F_OK) == 0);
    blobsrv_revoke(srv, half);
    for (int i = 0; i < 50 && access(part, F_OK) == 0; i++)
        zclock_sleep(20);
    CHECK(access(part, F_OK) != 0);
    zsock_destroy(&raw);

    /* a server that keeps more free space than the disk has refuses the
     * upload cleanly (NO_SPACE), writes nothing and keeps serving */
    {
        char rdir[160];
        snprintf(rdir, sizeof rdir, "%s/reserve", s_dir);
        blobsrv_limits_t rl = lim;
        rl.reserve = 1ULL << 62;
        blobsrv_t *rs = blobsrv_new("tcp://127.0.0.1:*", rdir, &rl, err, sizeof err);
        CHECK(rs);
        if (rs) {
            blobsrv_grant(rs, good, 3u << 20, NULL);
            zclock_sleep(50);
            CHECK(ttimage_push_file(&po, blobsrv_endpoint(rs), file, good, err, sizeof err) == -1 &&
                  strstr(err, "NO_SPACE") && strstr(err, "keeps"));
            CHECK(blobsrv_stat(rs, good, &size) == 0);
            snprintf(part, sizeof part, "%s/sha256/%s.part", rdir, good + 7);
            CHECK(access(part, F_OK) != 0);
            blobsrv_destroy(&rs);
        }
    }

    /* twenty ensures, one fetch */
    imgcache_t *cache = imgcache_new(cachedir, 0, err, sizeof err);
    CHECK(cache);
    imgfetch_opts_t fo;
    imgfetch_opts_defaults(&fo);
    snprintf(fo.endpoint, sizeof fo.endpoint, "%s", ep);
    snprintf(fo.dir, sizeof fo.dir, "%s", imgcache_blob_dir(cache));
    fo.timeout_ms = 500;
    fo.give_up_ms = 5000;
    imgfetch_t *f = imgfetch_new(&fo, err, sizeof err);
    CHECK(f);
    for (int i = 0; i < 20; i++)
        imgfetch_ensure(f, good, 3u << 20);
    imgfetch_event_t ev;
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_DONE && ev.got == 3u << 20);
    CHECK(s_event(f, &ev, 500) == -1); /* no second event */
    CHECK(imgcache_add(cache, good, 0, err, sizeof err) == 0);

    /* a cached copy that verifies: DONE, nothing moved */
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_DONE && ev.got == 0);
    /* corrupted: detected, fetched again, verifies */
    char path[4200];
    imgcache_path(cache, good, false, path, sizeof path);
    int fd = open(path, O_WRONLY);
    CHECK(fd >= 0 && pwrite(fd, "corrupt", 7, 1000) == 7);
    close(fd);
    CHECK(imgcache_verify(path, good, err, sizeof err) == -1);
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_DONE && ev.got == 3u << 20);
    CHECK(imgcache_verify(path, good, err, sizeof err) == 0);
    /* an expected size that differs: refused */
    imgcache_forget(cache, good);
    imgfetch_ensure(f, good, 12345);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_FAILED);
    CHECK(access(path, F_OK) != 0);
    /* unknown digest */
    imgfetch_ensure(f, liar, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_FAILED &&
          strstr(ev.reason, "NOT_FOUND"));
    CHECK(imgfetch_ensure(f, "sha256:zz", 0) == -1);
    /* a server that never answers: FAILED after give_up_ms, nothing visible */
    imgfetch_opts_t dead = fo;
    snprintf(dead.endpoint, sizeof dead.endpoint, "tcp://127.0.0.1:1");
    dead.timeout_ms = 200;
    dead.give_up_ms = 1000;
    imgfetch_t *df = imgfetch_new(&dead, err, sizeof err);
    CHECK(df);
    imgfetch_ensure(df, good, 0);
    CHECK(s_event(df, &ev, 10000) == 0 && ev.kind == IMGFETCH_FAILED &&
          strstr(ev.reason, "did not answer"));
    CHECK(access(path, F_OK) != 0);
    imgfetch_destroy(&df);

    /* a directory image: kernel + initrd, pushed as two blobs + manifest */
    char img[128], k[160];
    snprintf(img, sizeof img, "%s/guest", s_dir);
    mkdir(img, 0755);
    snprintf(k, sizeof k, "%s/kernel", img);
    s_file(k, 100000, 3, false);
    snprintf(k, sizeof k, "%s/initrd", img);
    s_file(k, 50000, 4, false);
    ttimage_info_t dinfo;
    CHECK(ttimage_inspect(img, &dinfo, err, sizeof err) == 0 && strcmp(dinfo.kind, "dir") == 0);
    for (size_t i = 0; i < dinfo.manifest.n; i++)
        blobsrv_grant(srv, dinfo.manifest.files[i].digest, dinfo.manifest.files[i].size, NULL);
    blobsrv_grant(srv, dinfo.digest, TT_MANIFEST_MAX, NULL);
    CHECK(ttimage_push(&po, ep, img, &dinfo, err, sizeof err) == 0);
    CHECK(blobsrv_stat(srv, dinfo.digest, &size) == 1 && size == (uint64_t)dinfo.manifest_len);

    imgfetch_destroy(&f);

    /* CURVE with a ZAP handler that names peers: encrypted push and fetch,
     * pushes only by the granted user, fetches only by workers, and a peer
     * without the server key gets nothing */
    zcert_t *sc = zcert_new(), *wc = zcert_new(), *ua = zcert_new(), *ub = zcert_new();
    char scert[160], wcert[160], acert[160], bcert[160];
    snprintf(scert, sizeof scert, "%s/server.cert", s_dir);
    snprintf(wcert, sizeof wcert, "%s/worker.cert", s_dir);
    snprintf(acert, sizeof acert, "%s/a.cert", s_dir);
    snprintf(bcert, sizeof bcert, "%s/b.cert", s_dir);
    CHECK(zcert_save(sc, scert) == 0 && zcert_save(wc, wcert) == 0 && zcert_save(ua, acert) == 0 &&
          zcert_save(ub, bcert) == 0);
    s_users[0][0] = zcert_public_txt(wc);
    s_users[0][1] = "worker:h1";
    s_users[1][0] = zcert_public_txt(ua);
    s_users[1][1] = "user:a";
    s_users[2][0] = zcert_public_txt(ub);
    s_users[2][1] = "user:b";
    zactor_t *zap = zactor_new(s_zap, NULL);
    blobsrv_limits_t clim;
    blobsrv_limits_defaults(&clim);
    clim.require_grant = true;
    snprintf(clim.fetch_user_prefix, sizeof clim.fetch_user_prefix, "worker:");
    snprintf(clim.curve_secret, sizeof clim.curve_secret, "%s_secret", scert);
    char csrvdir[160];
    snprintf(csrvdir, sizeof csrvdir, "%s/csrv", s_dir);
    blobsrv_t *csrv = blobsrv_new("tcp://127.0.0.1:*", csrvdir, &clim, err, sizeof err);
    CHECK(csrv);
    const char *cep = csrv ? blobsrv_endpoint(csrv) : "";
    ttimage_opts_t apo = po, bpo = po, plain = po;
    snprintf(apo.server_key, sizeof apo.server_key, "%s", zcert_public_txt(sc));
    snprintf(apo.client_cert, sizeof apo.client_cert, "%s_secret", acert);
    bpo = apo;
    snprintf(bpo.client_cert, sizeof bpo.client_cert, "%s_secret", bcert);
    blobsrv_grant(csrv, good, 3u << 20, "user:a");
    CHECK(ttimage_push(&bpo, cep, file, &info, err, sizeof err) == -1 && strstr(err, "FORBIDDEN"));
    CHECK(ttimage_push(&apo, cep, file, &info, err, sizeof err) == 0);
    plain.timeout_ms = 300;
    plain.give_up_ms = 1500;
    CHECK(ttimage_push(&plain, cep, big, &binfo, err, sizeof err) == -1 &&
          strstr(err, "did not answer"));
    imgfetch_opts_t cfo = fo;
    snprintf(cfo.endpoint, sizeof cfo.endpoint, "%s", cep);
    snprintf(cfo.server_key, sizeof cfo.server_key, "%s", zcert_public_txt(sc));
    snprintf(cfo.client_cert, sizeof cfo.client_cert, "%s_secret", bcert);
    imgcache_forget(cache, good);
    f = imgfetch_new(&cfo, err, sizeof err); /* a tenant's key: no fetch */
    CHECK(f);
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_FAILED &&
          strstr(ev.reason, "FORBIDDEN"));
    imgfetch_destroy(&f);
    snprintf(cfo.client_cert, sizeof cfo.client_cert, "%s_secret", wcert);
    f = imgfetch_new(&cfo, err, sizeof err); /* the worker's key */
    CHECK(f);
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_DONE && ev.got == 3u << 20);
    CHECK(imgcache_verify(path, good, err, sizeof err) == 0);
    /* the worker's key leaves the broker's --worker-keys: on its live
     * connection it fetches nothing more; put back, it fetches again */
    CHECK(blobsrv_worker_keys(csrv, zcert_public_txt(ua), 40) == 0);
    imgcache_forget(cache, good);
    unlink(path); /* else the fetcher finds the blob it holds and asks nothing */
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_FAILED &&
          strstr(ev.reason, "FORBIDDEN") && strstr(ev.reason, "removed"));
    CHECK(blobsrv_worker_keys(csrv, zcert_public_txt(wc), 40) == 0);
    imgfetch_ensure(f, good, 0);
    CHECK(s_event(f, &ev, 10000) == 0 && ev.kind == IMGFETCH_DONE && ev.got == 3u << 20);
    imgfetch_destroy(&f);
    blobsrv_destroy(&csrv);
    zactor_destroy(&zap);
    zcert_destroy(&sc);
    zcert_destroy(&wc);
    zcert_destroy(&ua);
    zcert_destroy(&ub);

    imgcache_destroy(&cache);
    zpoller_destroy(&sp);
    blobsrv_destroy(&srv);
    s_rmtree(s_dir);
    return s_report("blobsrv");
}
