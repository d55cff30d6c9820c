/*
 * image.c: the image catalog commands of ttctl: push, pull, list, show, rm.
 */
#include "ttctl.h"

#include <stdlib.h>
#include <string.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

typedef struct {
    bool priv;
    const char *ready, *user;
    uint64_t min_disk;
} push_args_t;

static const ctl_opt_t s_push_opts[] = {
    S_OPT("--private", CTL_FLAG, push_args_t, priv, 0, 0, NULL,
          "your tenant's image, not the pool's"),
    S_OPT("--ready", CTL_STRING, push_args_t, ready, 0, 0, "SPEC",
          "the image's default readiness (as env create --ready)"),
    S_OPT("--user", CTL_NAME, push_args_t, user, 0, 0, "NAME",
          "the user `env ssh` logs in as by default"),
    S_OPT("--min-disk", CTL_SIZE, push_args_t, min_disk, 1, TT_MAX_DISK_MIB, "MIB",
          "the smallest disk a VM of it gets, MiB or 10G"),
    CTL_OPT_END,
};

static int s_image_push(ctl_t *ctl, void *args)
{
    push_args_t *a = args;
    const char *pos[2] = {ctl->pos[0], ctl->pos[1]};
    Ttfleet__ImageDefaults defaults = TTFLEET__IMAGE_DEFAULTS__INIT;
    char why[256];
    bool priv = a->priv;
    defaults.readiness = (char *)a->ready;
    defaults.user = (char *)a->user;
    defaults.min_disk_mib = (uint32_t)a->min_disk;
    tt_ready_t spec;
    if (a->ready && tt_ready_parse(a->ready, &spec, why, sizeof why))
        ctl_usage_error(ctl, "--ready: %s", why);
    tt_image_ref_t ref;
    if (tt_image_ref_parse(pos[0], &ref, why, sizeof why) || ref.digest[0])
        ctl_usage_error(ctl, "invalid image name '%s': %s", pos[0],
                        ref.digest[0] ? "push NAME[:TAG], the digest is the content's" : why);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_push(client, pos[0], pos[1], !priv, &defaults, NULL, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "pushed", false);
}

/* image pull NAME --hosts all|ID[,ID]... [--no-wait] [--wait-timeout DUR]. */
typedef struct {
    bool all, no_wait;
    char *ids[64];
    size_t n_ids;
    uint64_t wait_timeout;
} pull_args_t;

static void s_pull_hosts(ctl_t *ctl, void *args, const char *v)
{
    pull_args_t *a = args;
    if (strcmp(v, "all") == 0) {
        a->all = true;
        return;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", v);
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!tt_name_valid(t))
            ctl_usage_error(ctl, "--hosts: invalid host id '%s'", t);
        if (a->n_ids == 64)
            ctl_usage_error(ctl, "--hosts: at most 64 ids (or all)");
        a->ids[a->n_ids++] = strdup(t);
    }
}

static const ctl_opt_t s_pull_opts[] = {
    {"--hosts", CTL_CALL, 0, 0, 0, "all|ID[,ID]...", "the hosts that fetch it (required)",
     s_pull_hosts, NULL, false},
    S_OPT("--no-wait", CTL_FLAG, pull_args_t, no_wait, 0, 0, NULL, "do not wait for the hosts"),
    S_OPT("--wait-timeout", CTL_DURATION, pull_args_t, wait_timeout, 1, 86400, "SECS",
          "how long to wait: seconds or 5m, 1h (default 300)"),
    CTL_OPT_END,
};

/* image pull NAME --hosts all|ID[,ID]... [--no-wait] [--wait-timeout SECS]:
 * asks the hosts to fetch the image into their caches, then (unless
 * --no-wait) polls image show until every target host holds it, at most
 * wait-timeout seconds; prints the image as image show does. */
static int s_image_pull(ctl_t *ctl, void *args)
{
    pull_args_t *a = args;
    const char *pos = ctl->pos[0];
    int wait_secs = a->wait_timeout ? (int)a->wait_timeout : TTCTL_DEFAULT_WAIT;
    bool all = a->all, wait = !a->no_wait;
    char **ids = a->ids;
    size_t n_ids = a->n_ids;
    tt_image_ref_t ref;
    char why[256];
    if (!pos || tt_image_ref_parse(pos, &ref, why, sizeof why))
        ctl_usage_error(ctl, "image NAME[:TAG] or NAME@sha256:... is required");
    if (!all && !n_ids)
        ctl_usage_error(ctl, "give --hosts all or --hosts ID[,ID]...");
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__ImagePull p = TTFLEET__IMAGE_PULL__INIT;
    p.ref = (char *)pos;
    p.all_hosts = all;
    p.n_hosts = n_ids;
    p.hosts = ids;
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_pull(client, &p, &reply);
    /* the targets: the named hosts, or every online host with a cache */
    char *want[1024];
    size_t n_want = 0;
    if (all && rc == 0 && reply->status == TTFLEET__STATUS__OK && wait) {
        Ttfleet__Reply *hl = NULL;
        if (ttclient_host_list(client, &hl) == 0 && hl->status == TTFLEET__STATUS__OK && hl->hosts)
            for (size_t i = 0; i < hl->hosts->n_hosts && n_want < 1024; i++)
                if (hl->hosts->hosts[i]->image_cache_mib &&
                    strcmp(hl->hosts->hosts[i]->state, "online") == 0)
                    want[n_want++] = strdup(hl->hosts->hosts[i]->id);
        ttclient_reply_destroy(&hl);
    } else {
        for (size_t i = 0; i < n_ids; i++)
            want[n_want++] = strdup(ids[i]);
    }
    int64_t deadline = zclock_mono() + (int64_t)wait_secs * 1000;
    size_t have = 0;
    while (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK) {
        have = 0;
        for (size_t i = 0; reply->image && i < n_want; i++)
            for (size_t j = 0; j < reply->image->n_hosts; j++)
                if (strcmp(reply->image->hosts[j], want[i]) == 0) {
                    have++;
                    break;
                }
        if (have == n_want || zclock_mono() >= deadline)
            break;
        zclock_sleep(TTCTL_WAIT_POLL_MS);
        ttclient_reply_destroy(&reply);
        rc = ttclient_image_show(client, pos, &reply);
    }
    for (size_t i = 0; i < n_ids; i++)
        free(ids[i]);
    for (size_t i = 0; i < n_want; i++)
        free(want[i]);
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK && have < n_want) {
        fprintf(stderr, "ttctl: image %s: %zu of %zu host(s) hold it after %d s\n", pos, have,
                n_want, wait_secs);
        ttclient_reply_destroy(&reply);
        ttclient_destroy(&client);
        return EXIT_STATUS;
    }
    return ctl_finish(ctl, &client, rc, &reply, "pulled", false);
}

/* image prepare NAME --hosts all|ID[,ID]... [--cpu N] [--mem MIB] [--no-wait]
 * [--wait-timeout DUR]: the hosts' part is pull's (s_pull_hosts). */
typedef struct {
    pull_args_t h;
    uint64_t cpu, mem;
} prepare_args_t;

static const ctl_opt_t s_prepare_opts[] = {
    {"--hosts", CTL_CALL, 0, 0, 0, "all|ID[,ID]...",
     "the hosts that make it (required; all: every online host with the qemu engine)",
     s_pull_hosts, NULL, false},
    S_OPT("--cpu", CTL_INT, prepare_args_t, cpu, 1, TT_MAX_CPU, "N",
          "cpus of the VMs it serves, 1..256 (default 2)"),
    S_OPT("--mem", CTL_SIZE, prepare_args_t, mem, 16, TT_MAX_MEM_MIB, "MIB",
          "memory of the VMs it serves in MiB, or 2G (default 1024)"),
    S_OPT("--no-wait", CTL_FLAG, prepare_args_t, h.no_wait, 0, 0, NULL,
          "do not wait for the templates"),
    S_OPT("--wait-timeout", CTL_DURATION, prepare_args_t, h.wait_timeout, 1, 86400, "SECS",
          "how long to wait: seconds or 5m, 1h (default 300)"),
    CTL_OPT_END,
};

/* True if im lists a template of (cpu, mem) on host. */
static bool s_has_template(const Ttfleet__ImageInfo *im, const char *host, uint32_t cpu,
                           uint32_t mem)
{
    for (size_t i = 0; im && i < im->n_templates; i++)
        if (strcmp(im->templates[i]->host, host) == 0 && im->templates[i]->cpu == cpu &&
            im->templates[i]->mem_mib == mem)
            return true;
    return false;
}

/* Asks the hosts for templates, then (unless --no-wait) polls image show
 * until every target host lists one of (cpu, mem), at most wait-timeout
 * seconds (a host that failed to make it is seen as not listing it: its
 * log says why). Prints the image as image show does. */
static int s_image_prepare(ctl_t *ctl, void *args)
{
    prepare_args_t *a = args;
    const char *pos = ctl->pos[0];
    int wait_secs = a->h.wait_timeout ? (int)a->h.wait_timeout : TTCTL_DEFAULT_WAIT;
    bool wait = !a->h.no_wait;
    tt_image_ref_t ref;
    char why[256];
    if (!pos || tt_image_ref_parse(pos, &ref, why, sizeof why))
        ctl_usage_error(ctl, "image NAME[:TAG] or NAME@sha256:... is required");
    if (!a->h.all && !a->h.n_ids)
        ctl_usage_error(ctl, "give --hosts all or --hosts ID[,ID]...");
    uint32_t cpu = a->cpu ? (uint32_t)a->cpu : 2, mem = a->mem ? (uint32_t)a->mem : 1024;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__ImagePrepare p = TTFLEET__IMAGE_PREPARE__INIT;
    p.ref = (char *)pos;
    p.all_hosts = a->h.all;
    p.n_hosts = a->h.n_ids;
    p.hosts = a->h.ids;
    p.cpu = cpu;
    p.mem_mib = mem;
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_prepare(client, &p, &reply);
    char *want[1024];
    size_t n_want = 0;
    if (a->h.all && rc == 0 && reply->status == TTFLEET__STATUS__OK && wait) {
        Ttfleet__Reply *hl = NULL;
        if (ttclient_host_list(client, &hl) == 0 && hl->status == TTFLEET__STATUS__OK && hl->hosts)
            for (size_t i = 0; i < hl->hosts->n_hosts && n_want < 1024; i++) {
                const Ttfleet__HostInfo *hi = hl->hosts->hosts[i];
                bool qemu = false; /* an engine that takes memory snapshots */
                for (size_t k = 0; k < hi->n_engine_caps; k++)
                    for (size_t c = 0; hi->engine_caps[k] && c < hi->engine_caps[k]->n_caps; c++)
                        qemu |= strcmp(hi->engine_caps[k]->caps[c], "snapshots") == 0;
                if (qemu && hi->image_cache_mib && strcmp(hi->state, "online") == 0)
                    want[n_want++] = strdup(hi->id);
            }
        ttclient_reply_destroy(&hl);
    } else {
        for (size_t i = 0; i < a->h.n_ids; i++)
            want[n_want++] = strdup(a->h.ids[i]);
    }
    int64_t deadline = zclock_mono() + (int64_t)wait_secs * 1000;
    size_t have = 0;
    while (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK) {
        have = 0;
        for (size_t i = 0; i < n_want; i++)
            have += s_has_template(reply->image, want[i], cpu, mem);
        if (have == n_want || zclock_mono() >= deadline)
            break;
        zclock_sleep(TTCTL_WAIT_POLL_MS);
        ttclient_reply_destroy(&reply);
        rc = ttclient_image_show(client, pos, &reply);
    }
    for (size_t i = 0; i < a->h.n_ids; i++)
        free(a->h.ids[i]);
    for (size_t i = 0; i < n_want; i++)
        free(want[i]);
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK && have < n_want) {
        fprintf(stderr,
                "ttctl: image %s: %zu of %zu host(s) hold a template (cpu %u, mem %u MiB) after "
                "%d s (the worker's log says why)\n",
                pos, have, n_want, cpu, mem, wait_secs);
        ttclient_reply_destroy(&reply);
        ttclient_destroy(&client);
        return EXIT_STATUS;
    }
    return ctl_finish(ctl, &client, rc, &reply, "prepared", false);
}

typedef struct {
    bool all;
} image_list_args_t;

static const ctl_opt_t s_list_opts[] = {
    S_OPT("--all", CTL_FLAG, image_list_args_t, all, 0, 0, NULL, "every tenant's (admin only)"),
    CTL_OPT_END,
};

static int s_image_list(ctl_t *ctl, void *args)
{
    image_list_args_t *a = args;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_list(client, a->all, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "no images", false);
}

static const char *s_image_ref_arg(ctl_t *ctl)
{
    tt_image_ref_t ref;
    char why[256];
    if (tt_image_ref_parse(ctl->pos[0], &ref, why, sizeof why))
        ctl_usage_error(ctl, "invalid image name '%s': %s", ctl->pos[0], why);
    return ctl->pos[0];
}

static int s_image_show(ctl_t *ctl, void *args)
{
    (void)args;
    const char *ref = s_image_ref_arg(ctl);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_show(client, ref, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "shown", false);
}

static int s_image_rm(ctl_t *ctl, void *args)
{
    (void)args;
    const char *ref = s_image_ref_arg(ctl);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_rm(client, ref, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "removed", false);
}

#define S_REF_NEED "image NAME[:TAG] or NAME@sha256:... is required"
const ctl_cmd_t ctl_image_cmds[] = {
    {"image", "push", "image_push", "NAME[:TAG] PATH",
     "Pushes an image: a qcow2 file, or a directory with kernel [+ initrd] and/or\n"
     "disk.qcow2. Only the blobs the broker lacks are sent; an interrupted push resumes\n"
     "when run again, and nothing is registered until every blob is stored and verified.\n"
     "A pool image (the default) needs the admin role; --private makes it your tenant's.\n",
     s_push_opts, sizeof(push_args_t), 2, 2, "give NAME[:TAG] and PATH", s_image_push, NULL, NULL},
    {"image", "list", "image_list", NULL,
     "Lists the pool's images and your tenant's private ones (--all: every tenant's,\n"
     "admin only).\n",
     s_list_opts, sizeof(image_list_args_t), 0, 0, NULL, s_image_list, NULL, NULL},
    {"image", "show", "image_show", "NAME[:TAG] | NAME@sha256:HEX",
     "Shows an image: digest, kind, size, owner, blobs, VMs that use it.\n", NULL, 0, 1, 1,
     S_REF_NEED, s_image_show, NULL, NULL},
    {"image", "pull", "image_pull", "NAME[:TAG]",
     "Pre-stages an image (admin only): each host fetches it into its image cache, so a\n"
     "VM of it starts without waiting for a transfer. Waits until every host holds it\n"
     "(exit 1 if not within --wait-timeout), unless --no-wait.\n",
     s_pull_opts, sizeof(pull_args_t), 0, 1, NULL, s_image_pull, NULL, NULL},
    {"image", "prepare", "image_prepare", "NAME[:TAG]",
     "Makes memory-snapshot templates of an image (admin only): each host boots a VM of\n"
     "it once, waits until it is ready and saves its memory, so a VM of that image,\n"
     "--cpu and --mem starts from the snapshot instead of a cold boot (qemu engine,\n"
     "docs/SNAPSHOTS.md). Waits until every host lists one (exit 1 if not within\n"
     "--wait-timeout), unless --no-wait.\n",
     s_prepare_opts, sizeof(prepare_args_t), 0, 1, NULL, s_image_prepare, NULL, NULL},
    {"image", "rm", "image_rm", "NAME[:TAG] | NAME@sha256:HEX",
     "Removes an image from the catalog; refused (IMAGE_IN_USE) while a VM uses it.\n", NULL, 0, 1,
     1, S_REF_NEED, s_image_rm, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
