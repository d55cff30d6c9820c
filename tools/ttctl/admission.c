/*
 * admission.c: quota set/show, queue list and audit.
 */
#include "ttctl.h"

#include <string.h>
#include <time.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

/* A quota limit: a whole number in 0..max (a duration for --max-lifetime),
 * or -1 / "none" for no limit. */
typedef struct {
    Ttfleet__QuotaLimit l[7];
    bool given[7];
} quota_args_t;

static void s_limit(ctl_t *ctl, quota_args_t *a, int i, const char *what, const char *text,
                    uint64_t max, bool duration)
{
    ttfleet__quota_limit__init(&a->l[i]);
    a->given[i] = true;
    if (strcmp(text, "-1") == 0 || strcmp(text, "none") == 0)
        a->l[i].value = -1;
    else if (duration)
        a->l[i].value = (int64_t)ctl_duration(ctl, what, text, 0, max);
    else
        a->l[i].value = (int64_t)ctl_number(ctl, what, text, 0, max);
}

static void s_q_envs(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 0, "--envs", v, TT_QUOTA_MAX_ENVS, false);
}
static void s_q_vms(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 1, "--vms", v, TT_QUOTA_MAX_VMS, false);
}
static void s_q_cpu(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 2, "--cpu", v, TT_QUOTA_MAX_CPU, false);
}
static void s_q_mem(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 3, "--mem", v, TT_QUOTA_MAX_MEM_MIB, false);
}
static void s_q_disk(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 4, "--disk", v, TT_QUOTA_MAX_DISK_MIB, false);
}
static void s_q_lifetime(ctl_t *c, void *args, const char *v)
{
    quota_args_t *a = args;
    s_limit(c, a, 5, "--max-lifetime", v, TT_MAX_LIFETIME_ADMIN, true);
    if (a->l[5].value == 0)
        ctl_usage_error(c, "--max-lifetime 0 would refuse every env: give 1.. or none");
}
static void s_q_prio(ctl_t *c, void *a, const char *v)
{
    s_limit(c, a, 6, "--max-priority", v, TT_PRIO_MAX, false);
}

#define S_LIMIT(n, fn, m, h)                                                                       \
    {                                                                                              \
        n, CTL_CALL, 0, 0, 0, m, h, fn, NULL, false                                                \
    }
static const ctl_opt_t s_quota_set_opts[] = {
    S_LIMIT("--envs", s_q_envs, "N", "envs at once"),
    S_LIMIT("--vms", s_q_vms, "N", "VMs over all envs"),
    S_LIMIT("--cpu", s_q_cpu, "N", "cpus over all envs"),
    S_LIMIT("--mem", s_q_mem, "MIB", "memory MiB over all envs"),
    S_LIMIT("--disk", s_q_disk, "MIB", "disk MiB over all envs"),
    S_LIMIT("--max-lifetime", s_q_lifetime, "DUR",
            "the longest lifetime an env may ask for: seconds or 2h, 1d"),
    S_LIMIT("--max-priority", s_q_prio, "N",
            "the highest --priority of a queued create (default 10)"),
    CTL_OPT_END,
};

static int s_quota_set(ctl_t *ctl, void *args)
{
    quota_args_t *a = args;
    Ttfleet__QuotaSet set = TTFLEET__QUOTA_SET__INIT;
    const char *tenant = ctl_name(ctl, "tenant", ctl->pos[0]);
    Ttfleet__QuotaLimit **slots[7] = {&set.envs,        &set.vms,      &set.cpu,
                                      &set.mem_mib,     &set.disk_mib, &set.max_lifetime,
                                      &set.max_priority};
    bool any = false;
    for (int i = 0; i < 7; i++)
        if (a->given[i]) {
            *slots[i] = &a->l[i];
            any = true;
        }
    if (!any)
        ctl_usage_error(ctl, "give at least one limit");
    set.tenant = (char *)tenant;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_quota_set(client, &set, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "quota set", false);
}

typedef struct {
    bool all;
} all_args_t;

static const ctl_opt_t s_quota_show_opts[] = {
    S_OPT("--all", CTL_FLAG, all_args_t, all, 0, 0, NULL, "every tenant with a quota (admin only)"),
    CTL_OPT_END,
};

static int s_quota_show(ctl_t *ctl, void *args)
{
    all_args_t *a = args;
    const char *tenant = ctl->n_pos ? ctl_name(ctl, "tenant", ctl->pos[0]) : NULL;
    if (a->all && tenant)
        ctl_usage_error(ctl, "give a tenant or --all, not both");
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_quota_show(client, tenant, a->all, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "no quotas", false);
}

static const ctl_opt_t s_queue_opts[] = {
    S_OPT("--all", CTL_FLAG, all_args_t, all, 0, 0, NULL, "every tenant's (admin only)"),
    CTL_OPT_END,
};

static int s_queue_list(ctl_t *ctl, void *args)
{
    all_args_t *a = args;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_queue_list(client, a->all, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "queue empty", false);
}

/* --since: unix seconds, an ISO 8601 UTC time (2026-12-01T20:00:00Z or
 * 2026-12-01), or an age (90s, 30m, 2h, 7d) counted back from now. */
static int64_t s_since(ctl_t *ctl, const char *text)
{
    size_t n = strlen(text);
    if (n >= 2 && n <= 12 && strchr("smhd", text[n - 1])) {
        char num[16];
        memcpy(num, text, n - 1);
        num[n - 1] = 0;
        uint64_t v = ctl_number(ctl, "--since", num, 0, 100LL * 365 * 86400);
        uint64_t unit = text[n - 1] == 's'   ? 1
                        : text[n - 1] == 'm' ? 60
                        : text[n - 1] == 'h' ? 3600
                                             : 86400;
        if (v > (uint64_t)(100LL * 365 * 86400) / unit)
            ctl_usage_error(ctl, "--since: '%s' is too far back", text);
        int64_t t = (int64_t)time(NULL) - (int64_t)(v * unit);
        return t > 0 ? t : 0;
    }
    int y, mo, d, h = 0, mi = 0, sec = 0, used = 0;
    bool iso = false;
    if (sscanf(text, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) == 6 &&
        (text[used] == 0 || strcmp(text + used, "Z") == 0))
        iso = true;
    else if (sscanf(text, "%4d-%2d-%2d%n", &y, &mo, &d, &used) == 3 && text[used] == 0)
        iso = true;
    if (iso) {
        if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
            sec > 60 || h < 0 || mi < 0 || sec < 0)
            ctl_usage_error(ctl, "--since: '%s' is not a valid UTC time", text);
        struct tm tm = {.tm_year = y - 1900,
                        .tm_mon = mo - 1,
                        .tm_mday = d,
                        .tm_hour = h,
                        .tm_min = mi,
                        .tm_sec = sec};
        return (int64_t)timegm(&tm);
    }
    return (int64_t)ctl_number(ctl, "--since (unix seconds, ISO time or age like 2h)", text, 0,
                               INT64_MAX);
}

typedef struct {
    const char *tenant, *env, *since;
    uint64_t limit;
} audit_args_t;

static const ctl_opt_t s_audit_opts[] = {
    S_OPT("--tenant", CTL_NAME, audit_args_t, tenant, 0, 0, "T", "only tenant T's rows (admin)"),
    S_OPT("--env", CTL_NAME, audit_args_t, env, 0, 0, "NAME", "only rows whose target is NAME"),
    S_OPT("--since", CTL_STRING, audit_args_t, since, 0, 0, "TIME",
          "unix seconds, 2026-12-01T20:00:00Z, 2026-12-01, or an age: 30m, 2h, 7d"),
    S_OPT("--limit", CTL_INT, audit_args_t, limit, 1, TT_AUDIT_LIMIT_MAX, "N",
          "at most N rows (default 100, at most 1000)"),
    CTL_OPT_END,
};

static int s_audit(ctl_t *ctl, void *args)
{
    audit_args_t *a = args;
    Ttfleet__AuditQuery q = TTFLEET__AUDIT_QUERY__INIT;
    q.tenant = (char *)a->tenant;
    q.env = (char *)a->env;
    if (a->since)
        q.since = s_since(ctl, a->since);
    q.limit = (uint32_t)a->limit;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_audit(client, &q, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "no audit records", false);
}

const ctl_cmd_t ctl_admission_cmds[] = {
    {"quota", "set", "quota_set", "TENANT",
     "Sets limits of TENANT (admin only); limits not given stay. N = none (or -1) removes\n"
     "a limit. TENANT need not have made a request yet. Counted over all of the tenant's\n"
     "envs.\n",
     s_quota_set_opts, sizeof(quota_args_t), 1, 1, "tenant is required", s_quota_set, NULL, NULL},
    {"quota", "show", "quota_show", "[TENANT]",
     "Shows the limits and usage of your tenant, of TENANT or of every tenant with a\n"
     "quota (admin only for other tenants). USED/LIMIT; '-' means no limit.\n",
     s_quota_show_opts, sizeof(all_args_t), 0, 1, NULL, s_quota_show, NULL, NULL},
    {"queue", "list", "queue_list", NULL,
     "Lists your queued creates in admission order (--all: every tenant's, admin only).\n"
     "The entry marked * is the blocked head: freed capacity is kept for it.\n",
     s_queue_opts, sizeof(all_args_t), 0, 0, NULL, s_queue_list, NULL, NULL},
    {NULL, "audit", "audit_query", NULL,
     "Prints the audit log, newest first: who changed what and the outcome. A user sees\n"
     "its own tenant's rows; an admin every tenant's, or --tenant T.\n",
     s_audit_opts, sizeof(audit_args_t), 0, 0, NULL, s_audit, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
