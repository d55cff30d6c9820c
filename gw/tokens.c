/*
 * tokens: see tokens.h.
 */
#include "tokens.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ttproto.h"

typedef struct {
    char token[TOKENS_MAX_LEN + 1];
    size_t len;
    char tenant[TT_MAX_NAME + 1];
    char role[16];
} s_entry_t;

struct _tokens_t {
    char *path;
    char admin_tenant[TT_MAX_NAME + 1];
    pthread_mutex_t lock;
    s_entry_t *entries;
    size_t count;
    struct stat st;  /* of the file as last read (zeroed while it cannot be read) */
    bool unreadable; /* the last look failed: no token is in force */
};

/* Reads the file into a new table. Returns 0, or -1 (errno-style reason in
 * err) when the file cannot be opened; entries replace self's on success. */
static int s_load(tokens_t *self, char *err, size_t errlen)
{
    FILE *f = fopen(self->path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read token file %s: %s", self->path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        snprintf(err, errlen, "cannot stat %s: %s", self->path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "token file %s is not a regular file", self->path);
        fclose(f);
        return -1;
    }
    if (st.st_mode & S_IROTH)
        fprintf(stderr, "ttgw: warning: token file %s is readable by everyone\n", self->path);
    s_entry_t *entries = NULL;
    size_t count = 0, size = 0;
    char line[1024];
    int lineno = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            fprintf(stderr, "ttgw: %s:%d: line too long, skipped\n", self->path, lineno);
            int c;
            while ((c = fgetc(f)) != EOF && c != '\n')
                ;
            continue;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *save = NULL;
        char *tok = strtok_r(line, " \t\r\n", &save);
        if (!tok)
            continue;
        char *tenant = strtok_r(NULL, " \t\r\n", &save);
        char *role = strtok_r(NULL, " \t\r\n", &save);
        char *extra = strtok_r(NULL, " \t\r\n", &save);
        const char *why = NULL;
        if (!tenant || !role || extra)
            why = "expected TOKEN TENANT ROLE";
        else if (strlen(tok) < TOKENS_MIN_LEN || strlen(tok) > TOKENS_MAX_LEN)
            why = "token must be 16..256 characters";
        else if (!tt_name_valid(tenant))
            why = "tenant must be 1..64 of [A-Za-z0-9._-]";
        else if (strcmp(role, "user") != 0 && strcmp(role, "admin") != 0)
            why = "role must be user or admin";
        else if (strcmp(role, "user") == 0 &&
                 (strcmp(tenant, self->admin_tenant) == 0 || strcmp(tenant, "admin") == 0))
            why = "a user token may not act in the admin tenant (the broker gives that tenant "
                  "the admin role); use role admin, or another tenant";
        if (why) {
            fprintf(stderr, "ttgw: %s:%d: %s; line skipped\n", self->path, lineno, why);
            continue;
        }
        if (count == size) {
            size = size ? size * 2 : 16;
            s_entry_t *grown = realloc(entries, size * sizeof *entries);
            if (!grown) {
                free(entries);
                fclose(f);
                snprintf(err, errlen, "out of memory reading %s", self->path);
                return -1;
            }
            entries = grown;
        }
        s_entry_t *e = &entries[count++];
        memset(e, 0, sizeof *e);
        e->len = strlen(tok);
        memcpy(e->token, tok, e->len);
        snprintf(e->tenant, sizeof e->tenant, "%s", tenant);
        snprintf(e->role, sizeof e->role, "%s", role);
    }
    if (ferror(f)) {
        snprintf(err, errlen, "cannot read token file %s: %s", self->path, strerror(errno));
        free(entries);
        fclose(f);
        return -1;
    }
    fclose(f);
    if (count == 0)
        fprintf(stderr, "ttgw: warning: token file %s has no valid token\n", self->path);
    free(self->entries);
    self->entries = entries;
    self->count = count;
    self->st = st;
    return 0;
}

tokens_t *tokens_new(const char *path, const char *admin_tenant, char *err, size_t errlen)
{
    if (!tt_name_valid(admin_tenant)) {
        snprintf(err, errlen, "admin tenant '%s' is not a valid tenant name", admin_tenant);
        return NULL;
    }
    tokens_t *self = calloc(1, sizeof *self);
    if (!self || !(self->path = strdup(path))) {
        free(self);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    snprintf(self->admin_tenant, sizeof self->admin_tenant, "%s", admin_tenant);
    pthread_mutex_init(&self->lock, NULL);
    if (s_load(self, err, errlen) != 0) {
        tokens_destroy(&self);
        return NULL;
    }
    return self;
}

void tokens_destroy(tokens_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    tokens_t *self = *self_p;
    pthread_mutex_destroy(&self->lock);
    free(self->entries);
    free(self->path);
    free(self);
    *self_p = NULL;
}

/* The file is gone or cannot be read: fail closed. Every token is revoked
 * (said once per outage, not per request) until it can be read again. */
static void s_revoke_all(tokens_t *self, const char *why)
{
    if (!self->unreadable)
        fprintf(stderr, "ttgw: %s; all %zu tokens revoked until it can be read\n", why,
                self->count);
    free(self->entries);
    self->entries = NULL;
    self->count = 0;
    memset(&self->st, 0, sizeof self->st); /* whatever comes back is read */
    self->unreadable = true;
}

/* Re-reads the file if its size, inode, device, mtime or ctime changed
 * since the last read (lock held). */
static void s_refresh(tokens_t *self)
{
    struct stat st;
    if (stat(self->path, &st) != 0) {
        char why[300];
        snprintf(why, sizeof why, "token file %s: %s", self->path, strerror(errno));
        s_revoke_all(self, why);
        return;
    }
    /* ctime too: an in-place rewrite that keeps size and mtime (cp -p,
     * rsync -t, touch -d) still moves ctime, which no caller can set */
    if (st.st_size == self->st.st_size && st.st_ino == self->st.st_ino &&
        st.st_dev == self->st.st_dev && st.st_mtim.tv_sec == self->st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == self->st.st_mtim.tv_nsec &&
        st.st_ctim.tv_sec == self->st.st_ctim.tv_sec &&
        st.st_ctim.tv_nsec == self->st.st_ctim.tv_nsec)
        return;
    char err[256];
    if (s_load(self, err, sizeof err) != 0) {
        s_revoke_all(self, err);
        return;
    }
    self->unreadable = false;
    fprintf(stderr, "ttgw: token file %s re-read: %zu tokens\n", self->path, self->count);
}

/* 1 if a (len alen) equals b (len blen), in time that depends only on blen. */
static int s_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned diff = (unsigned)(alen ^ blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)b[i] ^ (unsigned char)(i < alen ? a[i] : 0);
    return diff == 0;
}

int tokens_lookup(tokens_t *self, const char *token, char *tenant, char *role)
{
    size_t len = strnlen(token, TOKENS_MAX_LEN + 1);
    int found = -1;
    pthread_mutex_lock(&self->lock);
    s_refresh(self);
    for (size_t i = 0; i < self->count; i++) {
        s_entry_t *e = &self->entries[i];
        /* compare over the presented token's length, for every entry */
        if (s_equal(e->token, e->len, token, len) && found < 0)
            found = (int)i;
    }
    if (found >= 0 && len <= TOKENS_MAX_LEN) {
        snprintf(tenant, TT_MAX_NAME + 1, "%s", self->entries[found].tenant);
        snprintf(role, 16, "%s", self->entries[found].role);
    } else {
        found = -1;
    }
    pthread_mutex_unlock(&self->lock);
    return found >= 0 ? 0 : -1;
}

size_t tokens_count(tokens_t *self)
{
    pthread_mutex_lock(&self->lock);
    size_t n = self->count;
    pthread_mutex_unlock(&self->lock);
    return n;
}
