/*
 * dashboard_files: the dashboard's static files (gw/dashboard/), compiled
 * into ttgw by gw/embed.cmake so the binary serves them with no install
 * step and no network.
 */
#ifndef DASHBOARD_FILES_H
#define DASHBOARD_FILES_H

#include <stddef.h>

typedef struct {
    const char *name;   /* file name, served at /NAME ("index.html" also at /) */
    const char *type;   /* Content-Type */
    const unsigned char *data;
    size_t len;
} dashboard_file_t;

extern const dashboard_file_t dashboard_files[];
extern const size_t dashboard_n_files;

#endif
