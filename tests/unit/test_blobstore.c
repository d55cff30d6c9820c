/*
 * Unit tests of broker/images/blobstore.c and schema/ttblob.c: digests, resumed
 * uploads, verification before a blob becomes visible, path safety,
 * manifests and image references.
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include "blobstore.h"
#include "ttblob.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void s_digest_of(const void *data, size_t len, char *digest)
{
    tt_sha256_t *h = tt_sha256_new();
    tt_sha256_update(h, data, len);
    tt_sha256_final(h, digest);
    tt_sha256_destroy(&h);
}

static void test_digest(void)
{
    char d[TT_DIGEST_LEN + 1];
    s_digest_of("abc", 3, d);
    CHECK(strcmp(d, "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") ==
          0);
    CHECK(tt_digest_valid(d));
    CHECK(!tt_digest_valid(
        "sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"));
    CHECK(!tt_digest_valid("sha256:../../../../etc/passwd"));
    CHECK(!tt_digest_valid("md5:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    CHECK(
        !tt_digest_valid("sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015a"));
    CHECK(!tt_digest_valid(NULL));
    uint64_t v;
    CHECK(tt_u64_parse("18446744073709551615", &v) && v == UINT64_MAX);
    CHECK(!tt_u64_parse("18446744073709551616", &v));
    CHECK(!tt_u64_parse("-1", &v) && !tt_u64_parse("", &v) && !tt_u64_parse("1 ", &v));
}

static bool s_keep_all(const char *digest, void *arg)
{
    (void)digest;
    (void)arg;
    return true;
}

static void test_upload(const char *dir)
{
    char err[256];
    blobstore_t *bs = blobstore_new(dir, err, sizeof err);
    CHECK(bs);
    enum { N = 300000 };
    unsigned char *data = malloc(N);
    for (size_t i = 0; i < N; i++)
        data[i] = (unsigned char)(i * 7 + (i >> 11));
    char d[TT_DIGEST_LEN + 1];
    s_digest_of(data, N, d);
    uint64_t size = 0;
    CHECK(blobstore_stat(bs, d, &size, err, sizeof err) == 0);

    /* first part, then "crash" (close keeping the part) */
    blobstore_upload_t *u = blobstore_upload_begin(bs, d, N, err, sizeof err);
    CHECK(u && blobstore_upload_offset(u) == 0);
    CHECK(blobstore_upload_write(u, 0, data, 100000, err, sizeof err) == 0);
    CHECK(blobstore_upload_write(u, 5, data, 10, err, sizeof err) == -1); /* wrong offset */
    blobstore_upload_close(&u);
    CHECK(blobstore_stat(bs, d, &size, err, sizeof err) == 0); /* a part is never complete */

    /* resume from the stored offset */
    u = blobstore_upload_begin(bs, d, N, err, sizeof err);
    CHECK(u && blobstore_upload_offset(u) == 100000);
    CHECK(blobstore_upload_write(u, 100000, data + 100000, N - 100000, err, sizeof err) == 0);
    CHECK(blobstore_upload_write(u, N, data, 1, err, sizeof err) == -1); /* past the size */
    CHECK(blobstore_upload_commit(&u, err, sizeof err) == 0);
    CHECK(!u);
    CHECK(blobstore_stat(bs, d, &size, err, sizeof err) == 1 && size == N);
    char path[4200];
    CHECK(blobstore_path(bs, d, true, path, sizeof path) == 0 && access(path, F_OK) != 0);
    int fd = blobstore_open(bs, d, &size, err, sizeof err);
    CHECK(fd >= 0 && size == N);
    unsigned char *back = malloc(N);
    CHECK(pread(fd, back, N, 0) == N && memcmp(back, data, N) == 0);
    close(fd);

    /* a claimed digest that the data does not match: refused, part gone */
    char wrong[TT_DIGEST_LEN + 1];
    s_digest_of("other", 5, wrong);
    u = blobstore_upload_begin(bs, wrong, N, err, sizeof err);
    CHECK(u);
    CHECK(blobstore_upload_write(u, 0, data, N, err, sizeof err) == 0);
    CHECK(blobstore_upload_commit(&u, err, sizeof err) == -1 && strstr(err, "mismatch"));
    CHECK(blobstore_stat(bs, wrong, &size, err, sizeof err) == 0);
    CHECK(blobstore_path(bs, wrong, true, path, sizeof path) == 0 && access(path, F_OK) != 0);

    /* a part longer than a later size claim starts again */
    u = blobstore_upload_begin(bs, wrong, 50, err, sizeof err);
    CHECK(u && blobstore_upload_write(u, 0, data, 50, err, sizeof err) == 0);
    blobstore_upload_close(&u);
    u = blobstore_upload_begin(bs, wrong, 10, err, sizeof err);
    CHECK(u && blobstore_upload_offset(u) == 0);
    CHECK(blobstore_upload_commit(&u, err, sizeof err) == -1 && strstr(err, "incomplete"));
    u = blobstore_upload_begin(bs, wrong, 10, err, sizeof err);
    blobstore_upload_abort(&u);
    CHECK(access(path, F_OK) != 0);

    /* abandoned parts are swept, open or fresh ones kept */
    u = blobstore_upload_begin(bs, wrong, 10, err, sizeof err);
    CHECK(u && blobstore_upload_write(u, 0, data, 5, err, sizeof err) == 0);
    blobstore_upload_close(&u);
    CHECK(blobstore_sweep_parts(bs, 3600, NULL, NULL) == 0); /* fresh */
    struct timespec old[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    utimensat(AT_FDCWD, path, old, 0);
    CHECK(blobstore_sweep_parts(bs, 3600, s_keep_all, NULL) == 0); /* open */
    CHECK(blobstore_sweep_parts(bs, 3600, NULL, NULL) == 1);
    CHECK(access(path, F_OK) != 0);

    /* path safety: only validated digests name files */
    CHECK(blobstore_upload_begin(bs, "sha256:../x", 10, err, sizeof err) == NULL);
    CHECK(blobstore_stat(bs, "../../etc/passwd", &size, err, sizeof err) == -1);
    CHECK(blobstore_remove(bs, d, err, sizeof err) == 0);
    CHECK(blobstore_stat(bs, d, &size, err, sizeof err) == 0);
    free(data);
    free(back);
    blobstore_destroy(&bs);
}

static void test_manifest(void)
{
    char err[256], buf[TT_MANIFEST_MAX];
    tt_manifest_t m = {0};
    const char *dk = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    m.n = 2;
    snprintf(m.files[0].name, sizeof m.files[0].name, "kernel");
    snprintf(m.files[0].digest, sizeof m.files[0].digest, "%s", dk);
    m.files[0].size = 10;
    snprintf(m.files[1].name, sizeof m.files[1].name, "initrd");
    snprintf(m.files[1].digest, sizeof m.files[1].digest, "%s", dk);
    m.files[1].size = 20;
    int n = tt_manifest_format(&m, buf, sizeof buf);
    CHECK(n > 0);
    CHECK(strncmp(buf, "ttimage 1\ninitrd ", 17) == 0); /* sorted */
    tt_manifest_t back;
    CHECK(tt_manifest_parse(buf, (size_t)n, &back, err, sizeof err) == 0 && back.n == 2);
    CHECK(strcmp(back.files[1].name, "kernel") == 0 && back.files[1].size == 10);
    const char *bad[] = {
        "ttimage 2\n",
        "ttimage 1\n", /* nothing */
        "ttimage 1\ninitrd sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
        "5\n",
        "ttimage 1\n../kernel "
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 5\n",
        "ttimage 1\nkernel sha256:xyz 5\n",
        "ttimage 1\nkernel sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
        "-5\n",
        "ttimage 1\nkernel sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
        "5",
        "ttimage 1\nkernel sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad "
        "5\n"
        "kernel sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad 5\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(tt_manifest_parse(bad[i], strlen(bad[i]), &back, err, sizeof err) == -1);
}

static void test_ref(void)
{
    char err[256];
    tt_image_ref_t r;
    CHECK(tt_image_ref_parse("debian", &r, err, sizeof err) == 0 && strcmp(r.tag, "latest") == 0);
    CHECK(tt_image_ref_parse("debian:12.5", &r, err, sizeof err) == 0 &&
          strcmp(r.tag, "12.5") == 0);
    CHECK(tt_image_ref_parse(
              "deb@sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", &r,
              err, sizeof err) == 0 &&
          r.digest[0]);
    const char *bad[] = {"",   "Debian", "../x",        "a/b",   ".hidden",
                         "a:", "a:-x",   "a@sha256:12", "a:b:c", "a b"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(tt_image_ref_parse(bad[i], &r, err, sizeof err) == -1);
}

int main(void)
{
    char dir[] = "/tmp/tt-blobstore-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    test_digest();
    test_upload(dir);
    test_manifest();
    test_ref();
    s_rmtree(dir);
    return s_report("blobstore");
}
