/*
 * ttcrash: see ttcrash.h. The variables are read once; a malformed value
 * disables the switch (with a message) rather than crashing somewhere
 * unexpected.
 */
#include "ttcrash.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int s_loaded;
static char s_name[64];
static long s_nth = 1;
static long s_seen;
static char s_arm[512];

static void s_load(void)
{
    s_loaded = 1;
    const char *v = getenv("TTFLEET_CRASH_AT");
    if (!v || !*v)
        return;
    const char *colon = strchr(v, ':');
    size_t len = colon ? (size_t)(colon - v) : strlen(v);
    if (len == 0 || len >= sizeof s_name) {
        fprintf(stderr, "TTFLEET_CRASH_AT='%s' is malformed; ignored\n", v);
        return;
    }
    if (colon) {
        char *end;
        long nth = strtol(colon + 1, &end, 10);
        if (*end || nth < 1) {
            fprintf(stderr, "TTFLEET_CRASH_AT='%s' is malformed; ignored\n", v);
            return;
        }
        s_nth = nth;
    }
    const char *arm = getenv("TTFLEET_CRASH_ARM");
    if (arm && strlen(arm) >= sizeof s_arm) {
        fprintf(stderr, "TTFLEET_CRASH_ARM is too long; crash points disabled\n");
        return;
    }
    if (arm)
        memcpy(s_arm, arm, strlen(arm) + 1);
    memcpy(s_name, v, len);
    s_name[len] = 0;
}

void tt_crash_point(const char *name)
{
    if (!s_loaded)
        s_load();
    if (!s_name[0] || strcmp(name, s_name) != 0)
        return;
    if (s_arm[0] && access(s_arm, F_OK) != 0)
        return; /* not armed yet: the scenario is still being prepared */
    if (++s_seen < s_nth)
        return;
    fprintf(stderr, "crash point %s reached (#%ld): SIGKILL\n", name, s_seen);
    fflush(stderr);
    kill(getpid(), SIGKILL);
    _exit(137); /* not reached */
}
