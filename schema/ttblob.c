/*
 * ttblob: digests, manifests and image references. See ttblob.h.
 */
#include "ttblob.h"

#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -1;                                                                                 \
    } while (0)

bool tt_digest_valid(const char *s)
{
    if (!s || strncmp(s, TT_DIGEST_PREFIX, 7) != 0 || strlen(s) != TT_DIGEST_LEN)
        return false;
    for (const char *p = s + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

const char *tt_digest_hex(const char *s)
{
    return s + 7;
}

bool tt_u64_parse(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 20)
        return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

void tt_blob_init(void)
{
    OPENSSL_init_crypto(OPENSSL_INIT_LOAD_CONFIG | OPENSSL_INIT_ADD_ALL_DIGESTS, NULL);
    /* the first digest in this thread does the rest of the lazy setup */
    tt_sha256_t *h = tt_sha256_new();
    tt_sha256_destroy(&h);
}

struct tt_sha256_t {
    EVP_MD_CTX *ctx;
};

tt_sha256_t *tt_sha256_new(void)
{
    tt_sha256_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ctx = EVP_MD_CTX_new();
    if (!self->ctx || EVP_DigestInit_ex(self->ctx, EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(self->ctx);
        free(self);
        return NULL;
    }
    return self;
}

void tt_sha256_destroy(tt_sha256_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    EVP_MD_CTX_free((*self_p)->ctx);
    free(*self_p);
    *self_p = NULL;
}

void tt_sha256_update(tt_sha256_t *self, const void *data, size_t len)
{
    if (len)
        EVP_DigestUpdate(self->ctx, data, len);
}

void tt_sha256_final(tt_sha256_t *self, char digest[TT_DIGEST_LEN + 1])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_DigestFinal_ex(self->ctx, md, &n);
    memcpy(digest, TT_DIGEST_PREFIX, 7);
    for (unsigned i = 0; i < 32; i++)
        snprintf(digest + 7 + 2 * i, 3, "%02x", md[i]);
    EVP_DigestInit_ex(self->ctx, EVP_sha256(), NULL);
}

int tt_sha256_fd(tt_sha256_t *self, int fd, uint64_t len, char *err, size_t errlen)
{
    enum { BUF = 1 << 20 };
    unsigned char *buf = malloc(BUF);
    if (!buf)
        FAIL("out of memory");
    uint64_t off = 0;
    while (off < len) {
        size_t want = len - off < BUF ? (size_t)(len - off) : BUF;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n <= 0) {
            free(buf);
            FAIL("read at %llu: %s", (unsigned long long)off, n ? strerror(errno) : "short file");
        }
        tt_sha256_update(self, buf, (size_t)n);
        off += (uint64_t)n;
    }
    free(buf);
    return 0;
}

int tt_sha256_file(const char *path, char digest[TT_DIGEST_LEN + 1], uint64_t *size, char *err,
                   size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        FAIL("%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        FAIL("%s: not a regular file", path);
    }
    tt_sha256_t *h = tt_sha256_new();
    if (!h) {
        close(fd);
        FAIL("out of memory");
    }
    int rc = tt_sha256_fd(h, fd, (uint64_t)sb.st_size, err, errlen);
    close(fd);
    if (rc == 0) {
        tt_sha256_final(h, digest);
        *size = (uint64_t)sb.st_size;
    }
    tt_sha256_destroy(&h);
    return rc;
}

static int s_file_rank(const char *name)
{
    static const char *names[] = {"disk.qcow2", "initrd", "kernel"};
    for (int i = 0; i < 3; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

bool tt_manifest_is(const void *data, size_t len)
{
    size_t n = strlen(TT_MANIFEST_MAGIC);
    return len >= n && memcmp(data, TT_MANIFEST_MAGIC, n) == 0;
}

int tt_manifest_parse(const char *text, size_t len, tt_manifest_t *m, char *err, size_t errlen)
{
    memset(m, 0, sizeof *m);
    if (len > TT_MANIFEST_MAX)
        FAIL("manifest over %d bytes", TT_MANIFEST_MAX);
    if (!tt_manifest_is(text, len))
        FAIL("not an image manifest (no 'ttimage 1' line)");
    if (memchr(text, 0, len))
        FAIL("manifest holds a NUL byte");
    size_t pos = strlen(TT_MANIFEST_MAGIC);
    int last = -1;
    while (pos < len) {
        const char *nl = memchr(text + pos, '\n', len - pos);
        if (!nl)
            FAIL("manifest line %zu does not end in a newline", m->n + 2);
        size_t ll = (size_t)(nl - (text + pos));
        char line[256];
        if (ll >= sizeof line)
            FAIL("manifest line %zu too long", m->n + 2);
        memcpy(line, text + pos, ll);
        line[ll] = 0;
        pos += ll + 1;
        if (m->n == TT_MANIFEST_FILES)
            FAIL("manifest names more than %d files", TT_MANIFEST_FILES);
        char name[16], digest[80], size[32], extra;
        if (sscanf(line, "%15s %79s %31s %c", name, digest, size, &extra) != 3)
            FAIL("manifest line '%.80s': want '<file> sha256:<hex> <size>'", line);
        tt_manifest_file_t *f = &m->files[m->n];
        int rank = s_file_rank(name);
        if (rank < 0)
            FAIL("manifest names file '%s': only disk.qcow2, initrd, kernel", name);
        if (rank <= last)
            FAIL("manifest files out of order or repeated at '%s'", name);
        if (!tt_digest_valid(digest))
            FAIL("manifest file '%s': bad digest", name);
        if (!tt_u64_parse(size, &f->size) || f->size == 0)
            FAIL("manifest file '%s': bad size '%s'", name, size);
        snprintf(f->name, sizeof f->name, "%s", name);
        memcpy(f->digest, digest, TT_DIGEST_LEN + 1);
        last = rank;
        m->n++;
    }
    bool kernel = false, initrd = false, disk = false;
    for (size_t i = 0; i < m->n; i++) {
        kernel |= strcmp(m->files[i].name, "kernel") == 0;
        initrd |= strcmp(m->files[i].name, "initrd") == 0;
        disk |= strcmp(m->files[i].name, "disk.qcow2") == 0;
    }
    if (!kernel && !disk)
        FAIL("manifest names neither a kernel nor a disk.qcow2");
    if (initrd && !kernel)
        FAIL("manifest names an initrd without a kernel");
    return 0;
}

int tt_manifest_format(const tt_manifest_t *m, char *buf, size_t len)
{
    int used = snprintf(buf, len, "%s", TT_MANIFEST_MAGIC);
    for (int rank = 0; rank < 3; rank++)
        for (size_t i = 0; i < m->n; i++) {
            if (s_file_rank(m->files[i].name) != rank)
                continue;
            if (used < 0 || (size_t)used >= len)
                return -1;
            int n = snprintf(buf + used, len - (size_t)used, "%s %s %llu\n", m->files[i].name,
                             m->files[i].digest, (unsigned long long)m->files[i].size);
            if (n < 0)
                return -1;
            used += n;
        }
    return used >= 0 && (size_t)used < len ? used : -1;
}

static bool s_word(const char *s, size_t n, bool lower_only)
{
    if (n < 1 || n > 64)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     (!lower_only && c >= 'A' && c <= 'Z');
        if (!alnum && (i == 0 || !(c == '.' || c == '_' || c == '-')))
            return false;
    }
    return true;
}

int tt_image_ref_parse(const char *s, tt_image_ref_t *ref, char *err, size_t errlen)
{
    memset(ref, 0, sizeof *ref);
    if (!s || !*s)
        FAIL("empty image name");
    if (strlen(s) > 64 + 1 + TT_DIGEST_LEN)
        FAIL("image reference too long");
    const char *at = strchr(s, '@');
    const char *colon = strchr(s, ':');
    size_t nlen = at ? (size_t)(at - s) : colon ? (size_t)(colon - s) : strlen(s);
    if (!s_word(s, nlen, true))
        FAIL("invalid image name '%.80s': use 1..64 of [a-z0-9._-], starting with a letter or "
             "digit",
             s);
    memcpy(ref->name, s, nlen);
    if (at) {
        if (!tt_digest_valid(at + 1))
            FAIL("invalid digest in '%.140s': want NAME@sha256:<64 hex>", s);
        snprintf(ref->digest, sizeof ref->digest, "%s", at + 1);
        snprintf(ref->tag, sizeof ref->tag, "latest");
        return 0;
    }
    if (colon) {
        if (!s_word(colon + 1, strlen(colon + 1), false))
            FAIL("invalid tag in '%.140s': use 1..64 of [A-Za-z0-9._-]", s);
        snprintf(ref->tag, sizeof ref->tag, "%s", colon + 1);
    } else {
        snprintf(ref->tag, sizeof ref->tag, "latest");
    }
    return 0;
}

bool tt_qcow2_is(const void *data, size_t len)
{
    return len >= 4 && memcmp(data, "QFI\xfb", 4) == 0;
}

zmsg_t *tt_blob_msg(const char *cmd, const char *digest, const char *a, const char *b,
                    zframe_t **data)
{
    zmsg_t *msg = zmsg_new();
    if (!msg)
        return NULL;
    zmsg_addstr(msg, TT_BLOB_PROTO);
    zmsg_addstr(msg, cmd);
    zmsg_addstr(msg, digest ? digest : "");
    if (a)
        zmsg_addstr(msg, a);
    if (data)
        zmsg_append(msg, data);
    else if (b)
        zmsg_addstr(msg, b);
    return msg;
}
