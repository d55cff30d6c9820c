/*
 * cluster.c: membership of a broker cluster (admin): cluster add, remove.
 */
#include "ttctl.h"

#include <stdlib.h>
#include <string.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

typedef struct {
    const char *clients, *workers;
} add_args_t;

static const ctl_opt_t s_add_opts[] = {
    S_OPT("--clients", CTL_STRING, add_args_t, clients, 0, 0, "EP",
          "the new broker's clients endpoint, as clients reach it (required)"),
    S_OPT("--workers", CTL_STRING, add_args_t, workers, 0, 0, "EP",
          "the new broker's workers endpoint, as workers reach it (required)"),
    CTL_OPT_END,
};

/* "ID" as a member id 1..65535. */
static unsigned s_id(ctl_t *ctl, const char *s, size_t len)
{
    char buf[8];
    char *end = NULL;
    if (len == 0 || len >= sizeof buf)
        ctl_usage_error(ctl, "'%.*s' is not a member id (1..65535)", (int)len, s);
    memcpy(buf, s, len);
    buf[len] = 0;
    long v = strtol(buf, &end, 10);
    if (*end || v < 1 || v > 65535)
        ctl_usage_error(ctl, "'%s' is not a member id (1..65535)", buf);
    return (unsigned)v;
}

static int s_add(ctl_t *ctl, void *args)
{
    add_args_t *a = args;
    const char *spec = ctl->pos[0];
    const char *eq = strchr(spec, '=');
    if (!eq || !eq[1])
        ctl_usage_error(ctl, "cluster add needs ID=HOST:PORT (the new member's Raft address)");
    if (!a->clients || !a->workers)
        ctl_usage_error(ctl, "cluster add needs --clients EP and --workers EP");
    Ttfleet__ClusterAdd add = TTFLEET__CLUSTER_ADD__INIT;
    add.id = s_id(ctl, spec, (size_t)(eq - spec));
    add.raft = (char *)eq + 1;
    add.clients = (char *)a->clients;
    add.workers = (char *)a->workers;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_CLUSTER_ADD;
    req.cluster_add = &add;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "member added", false);
}

static int s_remove(ctl_t *ctl, void *args)
{
    (void)args;
    Ttfleet__ClusterRemove rm = TTFLEET__CLUSTER_REMOVE__INIT;
    rm.id = s_id(ctl, ctl->pos[0], strlen(ctl->pos[0]));
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_CLUSTER_REMOVE;
    req.cluster_remove = &rm;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "member removed", false);
}

const ctl_cmd_t ctl_cluster_cmds[] = {
    {"cluster", "add", "cluster_add", "ID=HOST:PORT",
     "Adds a broker to the cluster (admin): start it first with --raft-join and an empty\n"
     "--raft-dir (docs/HA.md). The leader adds it as a non-voter, sends it the log or a\n"
     "snapshot, makes it a voter once it caught up, and answers when that configuration\n"
     "is committed. Refused for an id or Raft address already in the cluster.\n",
     s_add_opts, sizeof(add_args_t), 1, 1, "cluster add needs ID=HOST:PORT", s_add, NULL, NULL},
    {"cluster", "remove", "cluster_remove", "ID",
     "Removes a member from the cluster (admin); answers when the configuration without\n"
     "it is committed. Refused for the leader (stop it first: the others elect a new\n"
     "one) and when the voters left would have no reachable majority.\n",
     NULL, 0, 1, 1, "cluster remove needs ID", s_remove, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
