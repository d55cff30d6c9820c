/*
 * host: what this machine offers, detected at start (each can be
 * overridden by a flag): online cpus, MemTotal of /proc/meminfo, and the
 * size of the file system holding the state directory (VM disks live
 * there).
 */
#ifndef TT_WORKER_HOST_H
#define TT_WORKER_HOST_H

#include <stddef.h>

#include "resources.h"

/* Fill total with the detected capacity. 0 / -1 with a reason. */
int host_detect(const char *state_dir, res_t *total, char *err, size_t errlen);

#endif
