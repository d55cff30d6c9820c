/*
 * Unit test of the worker's resource check arithmetic (worker/os/resources.c).
 */
#include "test_util.h"

#include "resources.h"

int main(void)
{
    res_cap_t cap = {{8, 16384, 100000}, 1.0, 1.0, 1.0};
    res_t used = {0, 0, 0};
    char err[256];

    /* Exactly full fits; one more does not. */
    res_t want = {8, 16384, 100000};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == 0);
    want = (res_t){9, 1, 1};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);
    CHECK(strstr(err, "not enough cpu") != NULL);
    CHECK(strstr(err, "total 8") && strstr(err, "used 0") && strstr(err, "wanted 9"));

    /* Used counts. */
    used = (res_t){6, 8192, 90000};
    want = (res_t){2, 8192, 10000};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == 0);
    want = (res_t){2, 8193, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);
    CHECK(strstr(err, "not enough memory") && strstr(err, "MiB"));
    want = (res_t){0, 0, 10001};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);
    CHECK(strstr(err, "not enough disk") && strstr(err, "wanted 10001"));

    /* Nothing wanted always fits, even when already over (capacity
     * lowered by a restart): a stop must never be refused. */
    used = (res_t){100, 100000, 1000000};
    want = (res_t){0, 0, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == 0);
    want = (res_t){1, 0, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);

    /* Overcommit: limit = total x ratio, rounded down. */
    cap = (res_cap_t){{3, 1000, 1000}, 2.5, 1.5, 1.0};
    res_t lim;
    res_limit(&cap, &lim);
    CHECK(lim.cpu == 7 && lim.mem_mib == 1500 && lim.disk_mib == 1000);
    used = (res_t){6, 1000, 0};
    want = (res_t){1, 500, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == 0);
    want = (res_t){2, 0, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);
    CHECK(strstr(err, "limit 7") != NULL);

    /* No overflow near the top of the range. */
    cap = (res_cap_t){{UINT64_MAX / 2, 1, 1}, 100.0, 1.0, 1.0};
    res_limit(&cap, &lim);
    CHECK(lim.cpu == UINT64_MAX);
    used = (res_t){UINT64_MAX - 1, 0, 0};
    want = (res_t){5, 0, 0};
    CHECK(res_check(&cap, &used, &want, err, sizeof err) == -1);

    return s_report("unit.worker.resources");
}
