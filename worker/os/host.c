/*
 * host: capacity detection. See host.h.
 */
#include "host.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

int host_detect(const char *state_dir, res_t *total, char *err, size_t errlen)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    total->cpu = ncpu > 0 ? (uint64_t)ncpu : 1;

    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) {
        snprintf(err, errlen, "open /proc/meminfo: %s", strerror(errno));
        return -1;
    }
    char line[256];
    uint64_t kib = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemTotal: %" SCNu64 " kB", &kib) == 1)
            break;
    fclose(f);
    if (!kib) {
        snprintf(err, errlen, "no MemTotal in /proc/meminfo");
        return -1;
    }
    total->mem_mib = kib / 1024;

    struct statvfs vfs;
    if (statvfs(state_dir, &vfs)) {
        snprintf(err, errlen, "statvfs %s: %s", state_dir, strerror(errno));
        return -1;
    }
    total->disk_mib = (uint64_t)vfs.f_blocks * vfs.f_frsize / (1024 * 1024);
    return 0;
}
