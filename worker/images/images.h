/*
 * images: the VM images this host offers, read from the images directory.
 *
 * An image is an entry <images>/NAME whose name passes tt_name_valid (so
 * no hidden files and nothing with a '/' that could leave the directory):
 * either an executable file, or a directory holding an executable `run`.
 * The list is advertised in READY and rescanned every few seconds; the
 * process engine resolves a name to the program it runs.
 */
#ifndef TT_WORKER_IMAGES_H
#define TT_WORKER_IMAGES_H

#include <stdbool.h>
#include <stddef.h>

typedef struct images_t images_t;

images_t *images_new(const char *dir);
void images_destroy(images_t **self_p);

/* Re-read the directory. A missing directory is an empty list. */
void images_rescan(images_t *self);
size_t images_count(const images_t *self);
/* Sorted names; valid until the next rescan. */
char **images_names(const images_t *self);
bool images_has(const images_t *self, const char *name);

/* The program to exec for image name in dir: "<dir>/NAME" or
 * "<dir>/NAME/run". 0 / -1 with a reason. */
int images_resolve(const char *dir, const char *name, char *path, size_t len, char *err,
                   size_t errlen);

#endif
