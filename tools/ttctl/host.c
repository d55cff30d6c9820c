/*
 * host.c: the host commands of ttctl (admin only): list, show, drain,
 * remove, set.
 */
#include "ttctl.h"

#include <string.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

static int s_host_list(ctl_t *ctl, void *args)
{
    (void)args;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_list(client, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "no hosts", false);
}

static int s_host_show(ctl_t *ctl, void *args)
{
    (void)args;
    const char *id = ctl_name(ctl, "host id", ctl->pos[0]);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_show(client, id, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "host shown", false);
}

/* host drain / remove: the broker's message says what happened (how many
 * VMs moved or were dropped), so it is printed with the host. */
static int s_host_op_finish(ctl_t *ctl, ttclient_t **client_p, int rc, Ttfleet__Reply **reply_p)
{
    Ttfleet__Reply *reply = *reply_p;
    if (rc != 0 || reply->status != TTFLEET__STATUS__OK)
        return ctl_finish(ctl, client_p, rc, reply_p, "", false);
    int code = 0;
    print_host_op(stdout, reply->message,
                  reply->result_case == TTFLEET__REPLY__RESULT_HOST ? reply->host : NULL,
                  ctl->json);
    if (fflush(stdout) != 0)
        code = EXIT_STATUS;
    ttclient_reply_destroy(reply_p);
    ttclient_destroy(client_p);
    return code;
}

typedef struct {
    bool undo, evacuate, force, unpin;
    uint64_t cpu, mem, disk;
} host_args_t;

static const ctl_opt_t s_drain_opts[] = {
    S_OPT("--evacuate", CTL_FLAG, host_args_t, evacuate, 0, 0, NULL,
          "also re-create its VMs on other hosts (new IPs, MACs and public ports,\n"
          "announced as vm.moved events)"),
    S_OPT("--undo", CTL_FLAG, host_args_t, undo, 0, 0, NULL, "end the drain"),
    CTL_OPT_END,
};

static int s_host_drain(ctl_t *ctl, void *args)
{
    host_args_t *a = args;
    const char *id = ctl_name(ctl, "host id", ctl->pos[0]);
    if (a->undo && a->evacuate)
        ctl_usage_error(ctl, "--undo and --evacuate exclude each other");
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_drain(client, id, a->undo, a->evacuate, &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

static const ctl_opt_t s_remove_opts[] = {
    S_OPT("--force", CTL_FLAG, host_args_t, force, 0, 0, NULL, "drop the VMs it holds"),
    CTL_OPT_END,
};

static int s_host_remove(ctl_t *ctl, void *args)
{
    host_args_t *a = args;
    const char *id = ctl_name(ctl, "host id", ctl->pos[0]);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_remove(client, id, a->force, &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

static const ctl_opt_t s_set_opts[] = {
    S_OPT("--cpu", CTL_INT, host_args_t, cpu, 1, TT_MAX_HOST_CPU, "N", "cpus placement may use"),
    S_OPT("--mem", CTL_SIZE, host_args_t, mem, 1, TT_MAX_HOST_MEM_MIB, "MIB",
          "memory placement may use, MiB or 64G"),
    S_OPT("--disk", CTL_SIZE, host_args_t, disk, 1, TT_MAX_HOST_DISK_MIB, "MIB",
          "disk placement may use, MiB or 2T"),
    S_OPT("--unpin", CTL_FLAG, host_args_t, unpin, 0, 0, NULL, "back to the advertised capacity"),
    CTL_OPT_END,
};

/* host set ID --cpu N --mem MIB --disk MIB | --unpin: an admin's pin of
 * the capacity placement may use on the host. */
static int s_host_set(ctl_t *ctl, void *args)
{
    host_args_t *a = args;
    Ttfleet__HostSet set = TTFLEET__HOST_SET__INIT;
    const char *id = ctl_name(ctl, "host id", ctl->pos[0]);
    set.cpu = (uint32_t)a->cpu;
    set.mem_mib = a->mem;
    set.disk_mib = a->disk;
    set.unpin = a->unpin;
    if (set.unpin && (set.cpu || set.mem_mib || set.disk_mib))
        ctl_usage_error(ctl, "--unpin takes no --cpu, --mem or --disk");
    if (!set.unpin && !set.cpu && !set.mem_mib && !set.disk_mib)
        ctl_usage_error(ctl, "give --cpu, --mem or --disk, or --unpin");
    set.id = (char *)id;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_HOST_SET;
    req.host_set = &set;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, ctl_service(ctl), &req, &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

#define S_ID "host id is required"
const ctl_cmd_t ctl_host_cmds[] = {
    {"host", "list", "host_list", NULL, "Lists the hosts of the pool (admin only).\n", NULL, 0, 0,
     0, NULL, s_host_list, NULL, NULL},
    {"host", "show", "host_show", "ID", "Shows host ID (admin only).\n", NULL, 0, 1, 1, S_ID,
     s_host_show, NULL, NULL},
    {"host", "drain", "host_drain", "ID", "Stops new placements on host ID (admin only).\n",
     s_drain_opts, sizeof(host_args_t), 1, 1, S_ID, s_host_drain, NULL, NULL},
    {"host", "remove", "host_remove", "ID",
     "Removes host ID from the pool (admin only); refused while it holds VMs unless\n"
     "--force.\n",
     s_remove_opts, sizeof(host_args_t), 1, 1, S_ID, s_host_remove, NULL, NULL},
    {"host", "set", "host_set", "ID",
     "Pins the capacity placement may use on host ID (admin only; stored in broker.db):\n"
     "the pin replaces what its worker advertises, so a compromised worker cannot draw\n"
     "more VMs. --unpin goes back to the advertised capacity.\n",
     s_set_opts, sizeof(host_args_t), 1, 1, S_ID, s_host_set, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
