/*
 * images: scanning and resolving image entries. See images.h.
 */
#include "images.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ttproto.h"

struct images_t {
    char *dir;
    char **names;
    size_t n;
};

images_t *images_new(const char *dir)
{
    images_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->dir = strdup(dir);
    if (!self->dir) {
        free(self);
        return NULL;
    }
    images_rescan(self);
    return self;
}

static void s_clear(images_t *self)
{
    for (size_t i = 0; i < self->n; i++)
        free(self->names[i]);
    free(self->names);
    self->names = NULL;
    self->n = 0;
}

void images_destroy(images_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    images_t *self = *self_p;
    s_clear(self);
    free(self->dir);
    free(self);
    *self_p = NULL;
}

static int s_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void images_rescan(images_t *self)
{
    s_clear(self);
    DIR *d = opendir(self->dir);
    if (!d)
        return;
    size_t cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!tt_name_valid(de->d_name))
            continue;
        /* Advertise regular files and directories; whether the process
         * engine can run one is checked when a VM starts. */
        char path[4096];
        struct stat sb;
        if (snprintf(path, sizeof path, "%s/%s", self->dir, de->d_name) >= (int)sizeof path ||
            stat(path, &sb) || !(S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)))
            continue;
        if (self->n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char **nn = realloc(self->names, ncap * sizeof *nn);
            if (!nn)
                break;
            self->names = nn;
            cap = ncap;
        }
        char *name = strdup(de->d_name);
        if (!name)
            break;
        self->names[self->n++] = name;
    }
    closedir(d);
    if (self->n)
        qsort(self->names, self->n, sizeof *self->names, s_cmp);
}

size_t images_count(const images_t *self)
{
    return self->n;
}

char **images_names(const images_t *self)
{
    return self->names;
}

bool images_has(const images_t *self, const char *name)
{
    if (!tt_name_valid(name) || self->n == 0)
        return false;
    return bsearch(&name, self->names, self->n, sizeof *self->names, s_cmp) != NULL;
}

int images_resolve(const char *dir, const char *name, char *path, size_t len, char *err,
                   size_t errlen)
{
    if (!tt_name_valid(name) || strchr(name, '/')) {
        snprintf(err, errlen, "invalid image name '%.80s'", name ? name : "");
        return -1;
    }
    struct stat sb;
    if (snprintf(path, len, "%s/%s", dir, name) >= (int)len || stat(path, &sb)) {
        snprintf(err, errlen, "image '%s' is not present in %s", name, dir);
        return -1;
    }
    if (S_ISDIR(sb.st_mode)) {
        if (snprintf(path, len, "%s/%s/run", dir, name) >= (int)len || stat(path, &sb)) {
            snprintf(err, errlen, "image directory '%s' has no 'run'", name);
            return -1;
        }
    }
    if (!S_ISREG(sb.st_mode) || access(path, X_OK)) {
        snprintf(err, errlen, "image '%s': %s is not an executable file", name, path);
        return -1;
    }
    return 0;
}
