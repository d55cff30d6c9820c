/*
 * resources: capacity arithmetic. See resources.h.
 *
 * Sums are in uint64_t: the inputs are bounded by ttproto.h limits times
 * at most 65533 VMs, far below overflow.
 */
#include "resources.h"

#include <inttypes.h>
#include <stdio.h>

static uint64_t s_scale(uint64_t total, double ratio)
{
    if (!(ratio > 0))
        return 0;
    double v = (double)total * ratio;
    if (v >= 1.8e19)
        return UINT64_MAX;
    return (uint64_t)v;
}

void res_limit(const res_cap_t *cap, res_t *out)
{
    out->cpu = s_scale(cap->total.cpu, cap->cpu_ratio);
    out->mem_mib = s_scale(cap->total.mem_mib, cap->mem_ratio);
    out->disk_mib = s_scale(cap->total.disk_mib, cap->disk_ratio);
}

static int s_fits(const char *what, const char *unit, uint64_t total, uint64_t limit, uint64_t used,
                  uint64_t want, char *err, size_t errlen)
{
    if (want == 0 || (used <= limit && want <= limit - used))
        return 0;
    snprintf(err, errlen,
             "not enough %s: total %" PRIu64 "%s (limit %" PRIu64 "%s), used %" PRIu64
             "%s, wanted %" PRIu64 "%s",
             what, total, unit, limit, unit, used, unit, want, unit);
    return -1;
}

int res_check(const res_cap_t *cap, const res_t *used, const res_t *want, char *err, size_t errlen)
{
    res_t lim;
    res_limit(cap, &lim);
    if (s_fits("cpu", "", cap->total.cpu, lim.cpu, used->cpu, want->cpu, err, errlen) ||
        s_fits("memory", " MiB", cap->total.mem_mib, lim.mem_mib, used->mem_mib, want->mem_mib, err,
               errlen) ||
        s_fits("disk", " MiB", cap->total.disk_mib, lim.disk_mib, used->disk_mib, want->disk_mib,
               err, errlen))
        return -1;
    return 0;
}
