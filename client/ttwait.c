/* ttwait.c - waiting for an env to run or to be ready (libttclient).
 *
 * The broker answers env create once its workers confirmed, but "ready"
 * (a VM's --ready probe succeeded) comes later, and a queued env runs only
 * when it is admitted. ttclient_env_wait polls env show until every VM is
 * there, the env is gone or failed, or the time is up. Polling, not
 * events: it needs no second socket, works the same under CURVE, and a
 * lost event cannot make it wait forever.
 */
#include "ttclient.h"

#include <czmq.h>
#include <string.h>

#define TTWAIT_POLL_MS 250

size_t ttclient_env_count(const Ttfleet__EnvInfo *env, bool ready)
{
    size_t n = 0;
    for (size_t i = 0; env && i < env->n_vms; i++)
        if (env->vms[i]->state == TTFLEET__VM_STATE__VM_RUNNING && (!ready || env->vms[i]->ready))
            n++;
    return n;
}

int ttclient_env_wait(ttclient_t *self, const char *name, bool ready, int timeout_ms,
                      ttclient_wait_fn progress, void *arg, Ttfleet__Reply **reply_p)
{
    *reply_p = NULL;
    if (!name || !*name || timeout_ms < 0)
        return -1;
    int64_t start = zclock_mono(), deadline = start + timeout_ms;
    for (;;) {
        ttclient_reply_destroy(reply_p);
        if (ttclient_env_show(self, name, reply_p) != 0)
            return -1;
        Ttfleet__Reply *reply = *reply_p;
        if (reply->status != TTFLEET__STATUS__OK || !reply->env)
            return -1;
        size_t done = ttclient_env_count(reply->env, ready);
        bool all = done == reply->env->n_vms && strcmp(reply->env->state, "running") == 0;
        int64_t now = zclock_mono();
        if (progress)
            progress(arg, reply->env, done, now - start);
        if (all)
            return 0;
        if (now >= deadline)
            return 1;
        int64_t nap = deadline - now < TTWAIT_POLL_MS ? deadline - now : TTWAIT_POLL_MS;
        zclock_sleep((int)nap);
    }
}
