/*
 * worker/images/pull.c against the real blob server in one process: two wants of
 * one image are one round and one fetch; a directory image materializes
 * its files; a blob a VM uses is never evicted (a fetch that cannot fit
 * is refused with the reason), an unused one is; a corrupted cached copy
 * is fetched again before the image is READY; a bad description is
 * refused. Every wait is bounded.
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "blobsrv.h"
#include "pull.h"
#include "ttblob.h"

#include <czmq.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char s_dir[64], s_store[128], s_ep[256];

/* A blob of size bytes into the blob server's store; its digest. */
static void s_blob(const void *data, size_t size, char digest[TT_DIGEST_LEN + 1])
{
    char tmp[300], path[300];
    snprintf(tmp, sizeof tmp, "%s/tmp", s_dir);
    FILE *f = fopen(tmp, "wb");
    fwrite(data, 1, size, f);
    fclose(f);
    uint64_t got;
    char err[200];
    tt_sha256_file(tmp, digest, &got, err, sizeof err);
    snprintf(path, sizeof path, "%s/sha256/%s", s_store, tt_digest_hex(digest));
    rename(tmp, path);
}

static void *s_bytes(size_t size, int seed, bool qcow2)
{
    unsigned char *b = malloc(size);
    for (size_t i = 0; i < size; i++)
        b[i] = (unsigned char)((i * 131 + (size_t)seed * 7 + i / 4093) & 0xff);
    if (qcow2)
        memcpy(b, "QFI\xfb", 4);
    return b;
}

typedef struct {
    Ttfleet__VmSpec spec;
    Ttfleet__ImageBlob b[4];
    Ttfleet__ImageBlob *p[4];
    char d[4][TT_DIGEST_LEN + 1];
    char digest[TT_DIGEST_LEN + 1];
} s_spec_t;

static void s_spec(s_spec_t *s, const char *kind, const char *digest)
{
    Ttfleet__VmSpec init = TTFLEET__VM_SPEC__INIT;
    s->spec = init;
    snprintf(s->digest, sizeof s->digest, "%s", digest);
    s->spec.image_digest = s->digest;
    s->spec.image_kind = (char *)kind;
    s->spec.blobs_endpoint = s_ep;
    s->spec.image_blobs = s->p;
}

static void s_add(s_spec_t *s, const char *digest, uint64_t size, const char *file)
{
    size_t n = s->spec.n_image_blobs++;
    Ttfleet__ImageBlob init = TTFLEET__IMAGE_BLOB__INIT;
    s->b[n] = init;
    snprintf(s->d[n], sizeof s->d[n], "%s", digest);
    s->b[n].digest = s->d[n];
    s->b[n].size = size;
    s->b[n].file = (char *)file;
    s->p[n] = &s->b[n];
}

/* Polls until ticket's round is over (10 s at most). */
static pull_state_t s_wait(pull_t *p, const char *digest, uint64_t ticket, char *dir,
                           size_t dirlen, char *err, size_t errlen)
{
    int64_t end = zclock_mono() + 10000;
    pull_state_t st = PULL_BUSY;
    while (zclock_mono() < end) {
        pull_poll(p);
        uint64_t done, total;
        st = pull_state(p, digest, ticket, &done, &total, dir, dirlen, err, errlen);
        if (st != PULL_BUSY)
            break;
        zclock_sleep(10);
    }
    return st;
}

static bool s_exists(const char *dir, const char *leaf)
{
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, leaf);
    struct stat sb;
    return stat(path, &sb) == 0;
}

int main(void)
{
    zsys_init();
    snprintf(s_dir, sizeof s_dir, "/tmp/tt-pull-XXXXXX");
    if (!mkdtemp(s_dir))
        return 1;
    snprintf(s_store, sizeof s_store, "%s/store", s_dir);
    char err[512], dir[4200], cache[128];
    blobsrv_limits_t lim;
    blobsrv_limits_defaults(&lim);
    blobsrv_t *srv = blobsrv_new("tcp://127.0.0.1:*", s_store, &lim, err, sizeof err);
    CHECK(srv);
    if (!srv)
        return 1;
    snprintf(s_ep, sizeof s_ep, "%s", blobsrv_endpoint(srv));

    /* images: A, B (qcow2, 2 MiB each), G (kernel 1 MiB + manifest) */
    char a[TT_DIGEST_LEN + 1], b[TT_DIGEST_LEN + 1], k[TT_DIGEST_LEN + 1],
        m[TT_DIGEST_LEN + 1];
    void *ab = s_bytes(2 << 20, 1, true), *bb = s_bytes(2 << 20, 2, true),
         *kb = s_bytes(1 << 20, 3, false);
    s_blob(ab, 2 << 20, a);
    s_blob(bb, 2 << 20, b);
    s_blob(kb, 1 << 20, k);
    tt_manifest_t man = {.n = 1};
    snprintf(man.files[0].name, sizeof man.files[0].name, "kernel");
    memcpy(man.files[0].digest, k, sizeof k);
    man.files[0].size = 1 << 20;
    char text[TT_MANIFEST_MAX];
    int tlen = tt_manifest_format(&man, text, sizeof text);
    CHECK(tlen > 0);
    s_blob(text, (size_t)tlen, m);

    snprintf(cache, sizeof cache, "%s/cache", s_dir);
    pull_opts_t po = {cache, (7ULL << 20) / 2, NULL, NULL}; /* 3.5 MiB */
    pull_t *p = pull_new(&po, err, sizeof err);
    CHECK(p);
    if (!p)
        return 1;

    /* two wants of A: one round, one fetch */
    s_spec_t sa, sb, sg, bad;
    s_spec(&sa, "qcow2", a);
    s_add(&sa, a, 2 << 20, "");
    uint64_t t1 = 0, t2 = 0;
    CHECK(pull_want(p, &sa.spec, &t1, err, sizeof err) == 0);
    CHECK(pull_want(p, &sa.spec, &t2, err, sizeof err) == 0);
    CHECK(t1 == t2 && t1 > 0);
    CHECK(pull_busy(p));
    CHECK(s_wait(p, a, t1, dir, sizeof dir, err, sizeof err) == PULL_READY);
    CHECK(s_exists(dir, "disk.qcow2"));
    CHECK(pull_fetched(p) == 1);
    CHECK(pull_changed(p));
    CHECK(pull_acquire(p, a) == 0); /* a VM runs A */

    /* G: a directory image, its kernel materialized */
    s_spec(&sg, "dir", m);
    s_add(&sg, m, (uint64_t)tlen, "");
    s_add(&sg, k, 1 << 20, "kernel");
    CHECK(pull_want(p, &sg.spec, &t1, err, sizeof err) == 0);
    CHECK(s_wait(p, m, t1, dir, sizeof dir, err, sizeof err) == PULL_READY);
    CHECK(s_exists(dir, "kernel") && !s_exists(dir, "disk.qcow2"));
    CHECK(pull_fetched(p) == 3);

    /* B does not fit while A is in use: G is evicted, B still refused */
    s_spec(&sb, "qcow2", b);
    s_add(&sb, b, 2 << 20, "");
    CHECK(pull_want(p, &sb.spec, &t1, err, sizeof err) == -1);
    CHECK(strstr(err, "image cache full") != NULL);
    char path[4400];
    snprintf(path, sizeof path, "%s/blobs/%s", cache, tt_digest_hex(a));
    CHECK(access(path, F_OK) == 0);
    snprintf(path, sizeof path, "%s/blobs/%s", cache, tt_digest_hex(k));
    CHECK(access(path, F_OK) != 0);
    /* A's VM is gone: now A is evicted for B */
    pull_release(p, a);
    CHECK(pull_want(p, &sb.spec, &t1, err, sizeof err) == 0);
    CHECK(s_wait(p, b, t1, dir, sizeof dir, err, sizeof err) == PULL_READY);
    snprintf(path, sizeof path, "%s/blobs/%s", cache, tt_digest_hex(a));
    CHECK(access(path, F_OK) != 0);
    CHECK(pull_fetched(p) == 4);

    /* a corrupted cached B: fetched again before READY, the link renewed */
    snprintf(path, sizeof path, "%s/blobs/%s", cache, tt_digest_hex(b));
    FILE *f = fopen(path, "r+b");
    fseek(f, 1000, SEEK_SET);
    fputs("corrupted", f);
    fclose(f);
    CHECK(pull_want(p, &sb.spec, &t2, err, sizeof err) == 0);
    CHECK(t2 == t1 + 1);
    CHECK(s_wait(p, b, t2, dir, sizeof dir, err, sizeof err) == PULL_READY);
    CHECK(pull_fetched(p) == 5);
    char got[TT_DIGEST_LEN + 1];
    uint64_t size;
    snprintf(path, sizeof path, "%s/disk.qcow2", dir);
    CHECK(tt_sha256_file(path, got, &size, err, sizeof err) == 0 && strcmp(got, b) == 0);
    /* a held, sound copy is verified, not fetched */
    CHECK(pull_want(p, &sb.spec, &t2, err, sizeof err) == 0);
    CHECK(s_wait(p, b, t2, dir, sizeof dir, err, sizeof err) == PULL_READY);
    CHECK(pull_fetched(p) == 5);

    /* bad descriptions */
    s_spec(&bad, "qcow2", b);
    CHECK(pull_want(p, &bad.spec, &t1, err, sizeof err) == -1); /* no blobs */
    s_spec(&bad, "tar", b);
    s_add(&bad, b, 2 << 20, "");
    CHECK(pull_want(p, &bad.spec, &t1, err, sizeof err) == -1);
    s_spec(&bad, "qcow2", a);
    s_add(&bad, b, 2 << 20, ""); /* the image's digest is none of its blobs */
    CHECK(pull_want(p, &bad.spec, &t1, err, sizeof err) == -1);
    s_spec(&bad, "qcow2", b);
    s_add(&bad, b, 2 << 20, "");
    bad.spec.blobs_endpoint = "http://x";
    CHECK(pull_want(p, &bad.spec, &t1, err, sizeof err) == -1);

    pull_destroy(&p);
    /* at start, a .part untouched for a day is deleted, a fresh one kept */
    char oldp[4400], newp[4400];
    snprintf(oldp, sizeof oldp, "%s/blobs/%064d.part", cache, 1);
    snprintf(newp, sizeof newp, "%s/blobs/%064d.part", cache, 2);
    FILE *of = fopen(oldp, "wb"), *nf = fopen(newp, "wb");
    fputs("x", of);
    fputs("x", nf);
    fclose(of);
    fclose(nf);
    struct timespec ts[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    utimensat(AT_FDCWD, oldp, ts, 0);
    p = pull_new(&po, err, sizeof err);
    CHECK(p && access(oldp, F_OK) != 0 && access(newp, F_OK) == 0);
    pull_destroy(&p);
    blobsrv_destroy(&srv);
    free(ab);
    free(bb);
    free(kb);
    s_rmtree(s_dir);
    return s_report("pull");
}
