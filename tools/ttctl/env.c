/*
 * env.c: the env commands of ttctl (create, list, show, stop, start, pause,
 * resume, extend, update, rm-vm, delete) and the waits that follow a
 * create, start or resume.
 */
#include "ttctl.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --wait [running|ready] and --wait-timeout SECS, of create, start and resume. */
typedef struct {
    const char *wait; /* NULL: not given; "" or the choice */
    uint64_t wait_timeout;
} wait_args_t;

#define S_WAIT_OPTS(type)                                                                          \
    {"--wait",                                                                                     \
     CTL_OPTIONAL,                                                                                 \
     offsetof(type, w.wait),                                                                       \
     0,                                                                                            \
     0,                                                                                            \
     NULL,                                                                                         \
     "then wait until every VM runs (or, with ready, is ready: its --ready probe\n"                \
     "succeeded; on timeout the console tail of each VM not ready is printed); exit 1\n"           \
     "if they do not get there within --wait-timeout",                                             \
     NULL,                                                                                         \
     "running|ready",                                                                              \
     false},                                                                                       \
    {                                                                                              \
        "--wait-timeout", CTL_DURATION, offsetof(type, w.wait_timeout), 1, 86400, "SECS",          \
            "how long --wait waits: seconds or 90s, 5m, 1h (default 300)", NULL, NULL, false       \
    }

static bool s_wanted(const wait_args_t *w)
{
    return w->wait || w->wait_timeout;
}

static int s_wait_secs(const wait_args_t *w)
{
    return w->wait_timeout ? (int)w->wait_timeout : TTCTL_DEFAULT_WAIT;
}

static bool s_wait_ready(const wait_args_t *w)
{
    return w->wait && strcmp(w->wait, "ready") == 0;
}

/* env create --wait on a terminal: the broker answers a create only when
 * its hosts made the VMs, which includes fetching a catalog image. The
 * create runs on a thread of its own (its own client) while this thread
 * shows the VMs that wait for their image (env show). */
typedef struct {
    ttclient_t *client;
    const Ttfleet__EnvCreate *create;
    Ttfleet__Reply *reply;
    int rc;
    atomic_bool done;
} s_create_job_t;

static void *s_create_run(void *arg)
{
    s_create_job_t *j = arg;
    j->rc = ttclient_env_create(j->client, (Ttfleet__EnvCreate *)j->create, &j->reply);
    atomic_store(&j->done, true);
    return NULL;
}

static int s_create_showing_pulls(ctl_t *ctl, ttclient_t *client, const Ttfleet__EnvCreate *cr,
                                  Ttfleet__Reply **reply_p)
{
    s_create_job_t j = {.client = client, .create = cr};
    atomic_init(&j.done, false);
    pthread_t t;
    if (pthread_create(&t, NULL, s_create_run, &j))
        return ttclient_env_create(client, (Ttfleet__EnvCreate *)cr, reply_p);
    ttclient_t *watch = ctl_client(ctl);
    bool shown = false;
    int64_t start = zclock_mono();
    while (!atomic_load(&j.done)) {
        zclock_sleep(500);
        Ttfleet__Reply *r = NULL;
        if (!atomic_load(&j.done) && ttclient_env_show(watch, cr->name, &r) == 0 &&
            r->status == TTFLEET__STATUS__OK && r->env) {
            uint64_t done = 0, total = 0;
            size_t pulling = 0;
            for (size_t i = 0; i < r->env->n_vms; i++)
                if (r->env->vms[i]->pull_total) {
                    pulling++;
                    done += r->env->vms[i]->pull_done;
                    total += r->env->vms[i]->pull_total;
                }
            if (pulling) {
                fprintf(stderr,
                        "\rcreating env %s: %zu VM(s) pulling their image, %llu/%llu MiB "
                        "(%llds)   ",
                        cr->name, pulling, (unsigned long long)(done >> 20),
                        (unsigned long long)(total >> 20),
                        (long long)((zclock_mono() - start) / 1000));
                shown = true;
            }
        }
        ttclient_reply_destroy(&r);
    }
    pthread_join(t, NULL);
    ttclient_destroy(&watch);
    if (shown)
        fputc('\n', stderr);
    *reply_p = j.reply;
    return j.rc;
}

/* --wait ready timed out: the console tail of every VM not ready, on
 * stderr, through env console. */
static void s_not_ready_consoles(ttclient_t *client, const Ttfleet__EnvInfo *env)
{
    for (size_t i = 0; i < env->n_vms; i++) {
        const Ttfleet__VmInfo *vm = env->vms[i];
        if (vm->ready)
            continue;
        fprintf(stderr, "ttctl: vm %u on %s not ready (%s); its console tail:\n", vm->vm_id,
                vm->host,
                vm->ready_detail && *vm->ready_detail ? vm->ready_detail : "no probe result");
        Ttfleet__EnvConsole q = TTFLEET__ENV_CONSOLE__INIT;
        q.name = env->name;
        q.vm_id = vm->vm_id;
        q.host = vm->host;
        q.max_bytes = 4096;
        Ttfleet__Reply *reply = NULL;
        if (ttclient_env_console(client, &q, &reply) == 0 && reply->status == TTFLEET__STATUS__OK &&
            reply->result_case == TTFLEET__REPLY__RESULT_CONSOLE && reply->console) {
            fwrite(reply->console->text.data, 1, reply->console->text.len, stderr);
            fputc('\n', stderr);
        } else
            fprintf(stderr, "ttctl: (console unavailable: %s)\n",
                    reply && reply->message ? reply->message : ttclient_error(client));
        ttclient_reply_destroy(&reply);
    }
}

/* The progress line of --wait on a terminal (the wait after the create's
 * answer; s_create_showing_pulls covers the create itself). */
typedef struct {
    const char *name;
    bool ready;
} wait_line_t;

static void s_wait_line(void *arg, const Ttfleet__EnvInfo *env, size_t done, int64_t waited_ms)
{
    const wait_line_t *w = arg;
    fprintf(stderr, "\rwaiting for env %s: %zu/%zu VMs %s, env %s (%llds)   ", w->name, done,
            env->n_vms, w->ready ? "ready" : "running", env->state, (long long)(waited_ms / 1000));
}

/* env create --wait: ttclient_env_wait until every VM of name runs (the
 * broker answers a create only when its workers confirmed, so this is
 * usually at once; it matters when a VM died, its host went away, or the
 * env was queued) or is ready, at most wait_secs. On a terminal a progress
 * line on stderr counts the VMs; otherwise nothing is printed until the
 * end. Prints the env as `env show` does; exit 1 if it did not get there in
 * time, with the console tail of every VM not ready. */
static int s_wait_running(ctl_t *ctl, ttclient_t **client_p, const char *name, int wait_secs,
                          bool ready)
{
    bool tty = isatty(STDERR_FILENO);
    wait_line_t line = {name, ready};
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_wait(*client_p, name, ready, wait_secs * 1000, tty ? s_wait_line : NULL,
                               &line, &reply);
    if (tty)
        fputc('\n', stderr);
    if (rc <= 0)
        return ctl_finish(ctl, client_p, reply ? 0 : -1, &reply, "", false);
    fprintf(stderr, "ttctl: env %s: %zu of %zu VMs %s after %d s (env %s)\n", name,
            ttclient_env_count(reply->env, ready), reply->env->n_vms, ready ? "ready" : "running",
            wait_secs, reply->env->state);
    if (ready)
        s_not_ready_consoles(*client_p, reply->env);
    ttclient_reply_destroy(&reply);
    ttclient_destroy(client_p);
    return EXIT_STATUS;
}

/* The bootstrap inputs of env create (--ssh-key, --ssh-key-text,
 * --user-data), checked here with the rules the broker applies. */
typedef struct {
    char *keys[TT_SSH_KEYS_MAX];
    size_t n_keys;
    char *files[TT_SSH_KEYS_MAX + 1]; /* buffers to free */
    size_t n_files;
} s_boot_t;

static void s_boot_key(ctl_t *ctl, s_boot_t *b, char *key, const char *from, size_t line)
{
    char err[256];
    size_t n = strlen(key);
    while (n && (key[n - 1] == '\r' || key[n - 1] == ' '))
        key[--n] = 0;
    if (tt_ssh_key_valid(key, err, sizeof err)) {
        if (line)
            ctl_usage_error(ctl, "--ssh-key %s line %zu: %s", from, line, err);
        ctl_usage_error(ctl, "--ssh-key-text: %s", err);
    }
    if (b->n_keys == TT_SSH_KEYS_MAX)
        ctl_usage_error(ctl, "at most %d SSH keys", TT_SSH_KEYS_MAX);
    b->keys[b->n_keys++] = key;
}

/* --ssh-key FILE: every line that is not blank or a # comment is a key
 * (an authorized_keys-like file of public keys; a private key fails). */
static void s_boot_key_file(ctl_t *ctl, s_boot_t *b, const char *path)
{
    size_t len;
    char *text =
        ctl_read_small(ctl, "--ssh-key", path, TT_SSH_KEYS_MAX * (TT_SSH_KEY_MAX + 2), &len);
    if (memchr(text, 0, len))
        ctl_usage_error(ctl, "--ssh-key %s: not an SSH public key file (binary)", path);
    b->files[b->n_files++] = text;
    size_t line = 0, found = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        line++;
        if (*p && *p != '#') {
            s_boot_key(ctl, b, p, path, line);
            found++;
        }
        p = nl ? nl + 1 : NULL;
    }
    if (!found)
        ctl_usage_error(ctl, "--ssh-key %s holds no SSH public key", path);
}

/* --label KEY=VALUE, repeated: checked with the broker's rules. */
static void s_label(ctl_t *ctl, char **labels, size_t *n, const char *value)
{
    char err[256];
    if (*n == TT_MAX_LABELS)
        ctl_usage_error(ctl, "at most %d --label", TT_MAX_LABELS);
    labels[(*n)++] = (char *)value;
    if (tt_labels_check(labels, *n, err, sizeof err))
        ctl_usage_error(ctl, "--label: %s", err);
}

/* ---- env create ---- */

typedef struct {
    Ttfleet__ImageCount images[TT_MAX_IMAGES_PER_ENV];
    Ttfleet__ImageCount *image_ptrs[TT_MAX_IMAGES_PER_ENV];
    bool dup_given[TT_MAX_IMAGES_PER_ENV];
    size_t n_images;
    uint32_t ports[TT_MAX_PORTS_PER_VM];
    size_t n_ports;
    s_boot_t boot;
    char *user_data;
    size_t user_data_len;
    const char *engine, *ready, *boot_kind;
    uint64_t cpu, mem, disk, lifetime, max_wait, priority;
    bool deny_outgoing, spread, queue;
    wait_args_t w;
    char *labels[TT_MAX_LABELS];
    size_t n_labels;
} create_args_t;

static void s_create_label(ctl_t *ctl, void *args, const char *value)
{
    create_args_t *a = args;
    s_label(ctl, a->labels, &a->n_labels, value);
}

static void s_create_image(ctl_t *ctl, void *args, const char *img)
{
    create_args_t *a = args;
    if (a->n_images == TT_MAX_IMAGES_PER_ENV)
        ctl_usage_error(ctl, "at most %d --image", TT_MAX_IMAGES_PER_ENV);
    tt_image_ref_t ref;
    char why[160];
    if (!tt_name_valid(img) && tt_image_ref_parse(img, &ref, why, sizeof why))
        ctl_usage_error(ctl,
                        "--image: '%s' is not an image name, NAME:TAG or "
                        "NAME@sha256:<64 hex> (%s)",
                        img, why);
    Ttfleet__ImageCount *ic = &a->images[a->n_images];
    ttfleet__image_count__init(ic);
    ic->image = (char *)img;
    a->image_ptrs[a->n_images++] = ic;
}

static void s_create_dup(ctl_t *ctl, void *args, const char *value)
{
    create_args_t *a = args;
    if (a->n_images == 0)
        ctl_usage_error(ctl, "--dup must follow the --image it counts");
    size_t last = a->n_images - 1;
    if (a->dup_given[last])
        ctl_usage_error(ctl, "--dup given twice for image '%s'", a->images[last].image);
    a->dup_given[last] = true;
    a->images[last].dup = (uint32_t)ctl_number(ctl, "--dup", value, 1, TT_MAX_VMS_PER_ENV);
}

/* --port P, repeated: at most TT_MAX_PORTS_PER_VM, none twice. */
static void s_port(ctl_t *ctl, uint32_t *ports, size_t *n, const char *value)
{
    if (*n == TT_MAX_PORTS_PER_VM)
        ctl_usage_error(ctl, "at most %d --port", TT_MAX_PORTS_PER_VM);
    uint32_t port = (uint32_t)ctl_number(ctl, "--port", value, 1, 65535);
    for (size_t i = 0; i < *n; i++)
        if (ports[i] == port)
            ctl_usage_error(ctl, "--port %u given twice", port);
    ports[(*n)++] = port;
}

static void s_create_port(ctl_t *ctl, void *args, const char *value)
{
    create_args_t *a = args;
    s_port(ctl, a->ports, &a->n_ports, value);
}

static void s_create_ssh_key(ctl_t *ctl, void *args, const char *value)
{
    create_args_t *a = args;
    if (a->boot.n_files == TT_SSH_KEYS_MAX)
        ctl_usage_error(ctl, "at most %d --ssh-key", TT_SSH_KEYS_MAX);
    s_boot_key_file(ctl, &a->boot, value);
}

static void s_create_ssh_key_text(ctl_t *ctl, void *args, const char *value)
{
    create_args_t *a = args;
    if (a->boot.n_files == TT_SSH_KEYS_MAX)
        ctl_usage_error(ctl, "at most %d --ssh-key-text", TT_SSH_KEYS_MAX);
    char *k = strdup(value);
    if (!k)
        ctl_usage_error(ctl, "out of memory");
    a->boot.files[a->boot.n_files++] = k;
    s_boot_key(ctl, &a->boot, k, NULL, 0);
}

static void s_create_user_data(ctl_t *ctl, void *args, const char *path)
{
    create_args_t *a = args;
    if (a->user_data)
        ctl_usage_error(ctl, "--user-data given twice");
    char err[256];
    a->user_data = ctl_read_small(ctl, "--user-data", path, TT_USER_DATA_MAX, &a->user_data_len);
    if (tt_user_data_valid(a->user_data, a->user_data_len, err, sizeof err))
        ctl_usage_error(ctl, "--user-data %s: %s", path, err);
}

static void s_ready_check(ctl_t *ctl, const char *what, const char *spec)
{
    tt_ready_t r;
    char err[256];
    if (tt_ready_parse(spec, &r, err, sizeof err))
        ctl_usage_error(ctl, "%s: %s", what, err);
}

static void s_create_ready(ctl_t *ctl, void *args, const char *spec)
{
    create_args_t *a = args;
    s_ready_check(ctl, "--ready", spec);
    a->ready = spec;
}

static void s_create_image_ready(ctl_t *ctl, void *args, const char *spec)
{
    create_args_t *a = args;
    s_ready_check(ctl, "--image-ready", spec);
    if (a->n_images == 0)
        ctl_usage_error(ctl, "--image-ready must follow the --image it applies to");
    a->images[a->n_images - 1].ready = (char *)spec;
}

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }
#define S_CALL(n, fn, m, h)                                                                        \
    {                                                                                              \
        n, CTL_CALL, 0, 0, 0, m, h, fn, NULL, false                                                \
    }

static const ctl_opt_t s_create_opts[] = {
    S_CALL("--image", s_create_image, "IMG",
           "VMs of IMG: a catalog image (image list) NAME, NAME:TAG or NAME@sha256:<hex>,\n"
           "or a host-local image of the workers' --images (a plain name); repeat"),
    S_CALL("--dup", s_create_dup, "N", "N VMs of the --image it follows (default 1)"),
    S_OPT("--engine", CTL_NAME, create_args_t, engine, 0, 0, "E",
          "process, hollow, qemu (default: the broker's, process)"),
    S_OPT("--cpu", CTL_INT, create_args_t, cpu, 1, TT_MAX_CPU, "N",
          "cpus per VM, 1..256 (default 2)"),
    S_OPT("--mem", CTL_SIZE, create_args_t, mem, 1, TT_MAX_MEM_MIB, "MIB",
          "memory per VM in MiB, or 2G (default 1024)"),
    S_OPT("--disk", CTL_SIZE, create_args_t, disk, 1, TT_MAX_DISK_MIB, "MIB",
          "disk per VM in MiB, or 40G (default 40960)"),
    S_CALL("--port", s_create_port, "P",
           "guest port to expose on a public port (22 always is); repeat"),
    S_OPT("--lifetime", CTL_DURATION, create_args_t, lifetime, 1, TT_MAX_LIFETIME_ADMIN, "DUR",
          "lease from creation: seconds or 90m, 2h, 1d (default 1h; at most 6h unless admin)"),
    S_OPT("--deny-outgoing", CTL_FLAG, create_args_t, deny_outgoing, 0, 0, NULL,
          "VMs may not open connections out"),
    S_OPT("--spread", CTL_FLAG, create_args_t, spread, 0, 0, NULL,
          "place VMs on as many hosts as possible instead of best fit"),
    S_CALL("--ssh-key", s_create_ssh_key, "FILE",
           "OpenSSH public key(s), one per line, for the guests (qemu engine\n"
           "with a cloud-init image); repeat"),
    S_CALL("--ssh-key-text", s_create_ssh_key_text, "KEY", "one public key given inline; repeat"),
    S_CALL("--user-data", s_create_user_data, "FILE",
           "cloud-init user-data: #cloud-config or a #! script, <= 64 KiB"),
    {"--boot", CTL_CHOICE, offsetof(create_args_t, boot_kind), 0, 0, "auto|snapshot|cold",
     "auto (default): from a memory-snapshot template when the host has one (image prepare),\n"
     "else cold; snapshot: a template is required; cold: a full boot (docs/SNAPSHOTS.md)",
     NULL, "auto|snapshot|cold", false},
    S_CALL("--ready", s_create_ready, "SPEC",
           "when a VM counts as ready: none, ssh, tcp:PORT, http:PORT[/PATH],\n"
           "console:REGEX, agent, cloud-init (default: the image's)"),
    S_CALL("--image-ready", s_create_image_ready, "SPEC", "the same for the --image it follows"),
    S_CALL("--label", s_create_label, "KEY=VALUE",
           "a label of the env (env list --label finds it); repeat, at most 16;\n"
           "KEY 1..63 of A-Z a-z 0-9 . _ - /, VALUE 0..63 of A-Z a-z 0-9 . _ -"),
    S_WAIT_OPTS(create_args_t),
    S_OPT("--queue", CTL_FLAG, create_args_t, queue, 0, 0, NULL,
          "if the pool cannot take it now, wait in the admission queue\n"
          "(answer: queued at position N; env show gives the position)"),
    S_OPT("--max-wait", CTL_DURATION, create_args_t, max_wait, 1, TT_QUEUE_WAIT_MAX, "DUR",
          "give up after DUR in the queue (broker default 1h, 10 s..1d)"),
    S_OPT("--priority", CTL_INT, create_args_t, priority, 0, TT_PRIO_MAX, "N",
          "0..99, higher first; at most your tenant's cap (quota show)"),
    CTL_OPT_END,
};

static int s_env_create(ctl_t *ctl, void *args)
{
    create_args_t *a = args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    Ttfleet__EnvCreate create = TTFLEET__ENV_CREATE__INIT;
    create.images = a->image_ptrs;
    create.n_images = a->n_images;
    create.ports = a->ports;
    create.n_ports = a->n_ports;
    create.engine = (char *)a->engine;
    create.cpu = (uint32_t)a->cpu;
    create.mem_mib = (uint32_t)a->mem;
    create.disk_mib = (uint32_t)a->disk;
    create.lifetime = a->lifetime;
    create.deny_outgoing = a->deny_outgoing;
    create.spread = a->spread;
    create.ready = (char *)a->ready;
    create.boot = (char *)(a->boot_kind ? a->boot_kind : "");
    create.queue = a->queue;
    create.max_wait = (uint32_t)a->max_wait;
    create.priority = (uint32_t)a->priority;
    create.labels = a->labels;
    create.n_labels = a->n_labels;
    bool wait = s_wanted(&a->w), wait_ready = s_wait_ready(&a->w);
    int wait_secs = s_wait_secs(&a->w);
    if (!create.queue && (create.max_wait || create.priority))
        ctl_usage_error(ctl, "--max-wait and --priority need --queue");
    if (create.n_images == 0)
        ctl_usage_error(ctl, "at least one --image is required");
    uint64_t vms = 0;
    for (size_t i = 0; i < create.n_images; i++)
        vms += a->images[i].dup ? a->images[i].dup : 1;
    if (vms > TT_MAX_VMS_PER_ENV)
        ctl_usage_error(ctl, "%llu VMs asked for; at most %d in one env", (unsigned long long)vms,
                        TT_MAX_VMS_PER_ENV);
    create.name = (char *)name;
    create.ssh_keys = a->boot.keys;
    create.n_ssh_keys = a->boot.n_keys;
    create.user_data.data = (uint8_t *)a->user_data;
    create.user_data.len = a->user_data_len;

    ttclient_t *client = ctl_client(ctl);
    if (wait) {
        /* a create answers once its workers confirmed, which waits for the
         * fetch of a catalog image a host lacks: with --wait the call itself
         * may take up to the wait (retries of the same request id get
         * IN_PROGRESS until the outcome is there) */
        int per = ctl->timeout > 0 ? ctl->timeout : 10000;
        long long n = ((long long)wait_secs * 1000 + per - 1) / per;
        ttclient_set_retries(client, n < 3 ? 3 : n > 100000 ? 100000 : (int)n);
    }
    Ttfleet__Reply *reply = NULL;
    int rc = wait && isatty(STDERR_FILENO) ? s_create_showing_pulls(ctl, client, &create, &reply)
                                           : ttclient_env_create(client, &create, &reply);
    for (size_t i = 0; i < a->boot.n_files; i++)
        free(a->boot.files[i]);
    free(a->user_data);
    if (!wait && rc == 0 && reply->status == TTFLEET__STATUS__QUEUED) {
        /* accepted, not yet placed: success for the caller, with the position */
        uint32_t pos = reply->result_case == TTFLEET__REPLY__RESULT_ENV && reply->env
                           ? reply->env->queue_position
                           : 0;
        char text[128];
        snprintf(text, sizeof text, "env %s queued at position %u", name, pos);
        reply->status = TTFLEET__STATUS__OK;
        if (reply->result_case == TTFLEET__REPLY__RESULT_ENV && ctl->json)
            return ctl_finish(ctl, &client, rc, &reply, text, false);
        ttclient_reply_destroy(&reply);
        print_done(stdout, text, ctl->json);
        ttclient_destroy(&client);
        return 0;
    }
    if (wait && rc == 0 &&
        (reply->status == TTFLEET__STATUS__QUEUED || reply->status == TTFLEET__STATUS__OK)) {
        /* --wait: through the queue too, for the whole of wait-timeout */
        ttclient_reply_destroy(&reply);
        return s_wait_running(ctl, &client, name, wait_secs, wait_ready);
    }
    return ctl_finish(ctl, &client, rc, &reply, "env created", false);
}

/* ---- env list ---- */

typedef struct {
    bool all;
    const char *state;
    char *labels[TT_MAX_LABELS];
    size_t n_labels;
} list_args_t;

static void s_list_label(ctl_t *ctl, void *args, const char *value)
{
    list_args_t *a = args;
    s_label(ctl, a->labels, &a->n_labels, value);
}

#define S_ENV_STATES                                                                               \
    "running|stopped|paused|creating|queued|degraded|stopping|starting|pausing|resuming"

static const ctl_opt_t s_list_opts[] = {
    S_OPT("--all", CTL_FLAG, list_args_t, all, 0, 0, NULL, "every tenant's envs (admin only)"),
    {"--state", CTL_CHOICE, offsetof(list_args_t, state), 0, 0, "STATE",
     "only envs in STATE: " S_ENV_STATES, NULL, S_ENV_STATES, false},
    S_CALL("--label", s_list_label, "KEY=VALUE",
           "only envs with this label; repeat (all must match)"),
    CTL_OPT_END,
};

static int s_env_list(ctl_t *ctl, void *args)
{
    list_args_t *a = args;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    Ttfleet__EnvList list = TTFLEET__ENV_LIST__INIT;
    list.all = a->all;
    list.labels = a->labels;
    list.n_labels = a->n_labels;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_ENV_LIST;
    req.env_list = &list;
    int rc = ttclient_call(client, a->all ? TT_SERVICE_ADMIN : TT_SERVICE_ENV, &req, &reply);
    if (rc == 0 && a->state && reply->status == TTFLEET__STATUS__OK &&
        reply->result_case == TTFLEET__REPLY__RESULT_ENVS && reply->envs) {
        /* the broker lists them all: keep those in the state asked for
         * (protobuf-c allocates each sub-message on its own) */
        Ttfleet__EnvInfoList *l = reply->envs;
        size_t keep = 0;
        for (size_t i = 0; i < l->n_envs; i++) {
            if (strcmp(l->envs[i]->state, a->state) == 0)
                l->envs[keep++] = l->envs[i];
            else
                ttfleet__env_info__free_unpacked(l->envs[i], NULL);
        }
        l->n_envs = keep;
    }
    return ctl_finish(ctl, &client, rc, &reply, "no envs", a->all);
}

/* ---- start, resume ---- */

typedef struct {
    wait_args_t w;
} wake_args_t;

static const ctl_opt_t s_wake_opts[] = {
    S_WAIT_OPTS(wake_args_t),
    CTL_OPT_END,
};

/* The seconds a TOO_SOON message asks to wait ("... wait 12 s more ..."),
 * 1 when it names none. */
static int s_too_soon_secs(const char *msg)
{
    const char *p = msg ? strstr(msg, "wait ") : NULL;
    long long s = 0;
    if (p && sscanf(p, "wait %lld s", &s) == 1 && s > 0 && s < 86400)
        return (int)s;
    return 1;
}

/* start, resume: one env name. With --wait, a TOO_SOON answer (the broker's
 * minimum spacing of stop and start) is waited out within --wait-timeout,
 * saying so on stderr, then asked again; then the wait for the VMs. */
static int s_env_wake(ctl_t *ctl, void *args)
{
    wake_args_t *a = args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    bool wait = s_wanted(&a->w);
    int wait_secs = s_wait_secs(&a->w);
    int64_t deadline = zclock_mono() + (int64_t)wait_secs * 1000;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ctl->cmd->ref(client, name, &reply);
    while (wait && rc == 0 && reply->status == TTFLEET__STATUS__TOO_SOON) {
        int secs = s_too_soon_secs(reply->message);
        int64_t left = deadline - zclock_mono();
        if ((int64_t)secs * 1000 + 500 > left)
            break; /* cannot wait it out within --wait-timeout: report it */
        fprintf(stderr,
                "ttctl: env %s: TOO_SOON (stop/start spacing); waiting %d s, then "
                "%s again\n",
                name, secs, ctl->cmd->verb);
        ttclient_reply_destroy(&reply);
        zclock_sleep(secs * 1000 + 500); /* the broker counts whole seconds */
        rc = ctl->cmd->ref(client, name, &reply);
    }
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK) {
        ttclient_reply_destroy(&reply);
        int64_t left = (deadline - zclock_mono()) / 1000;
        return s_wait_running(ctl, &client, name, left < 1 ? 1 : (int)left, s_wait_ready(&a->w));
    }
    char text[128];
    snprintf(text, sizeof text, "env %s %s", name, ctl->cmd->done);
    return ctl_finish(ctl, &client, rc, &reply, text, false);
}

/* ---- suspend ---- */

typedef struct {
    bool wait;
    uint64_t wait_timeout;
} suspend_args_t;

static const ctl_opt_t s_suspend_opts[] = {
    {"--wait", CTL_FLAG, offsetof(suspend_args_t, wait), 0, 0, NULL,
     "then wait until env show says suspended (every VM's memory on disk, its process\n"
     "gone); exit 1 if it does not within --wait-timeout",
     NULL, NULL, false},
    {"--wait-timeout", CTL_DURATION, offsetof(suspend_args_t, wait_timeout), 1, 86400, "SECS",
     "how long --wait waits (default 300 s)", NULL, NULL, false},
    CTL_OPT_END,
};

/* env suspend NAME [--wait]: the broker answers once every VM's worker
 * answered; --wait then also sees the env say suspended (env show). */
static int s_env_suspend(ctl_t *ctl, void *args)
{
    suspend_args_t *a = args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = (char *)name;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_ENV_SUSPEND;
    req.env_suspend = &ref;
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ENV, &req, &reply);
    int64_t deadline = zclock_mono() + (int64_t)(a->wait_timeout ? a->wait_timeout : 300) * 1000;
    while (a->wait && rc == 0 && reply->status == TTFLEET__STATUS__OK &&
           !(reply->result_case == TTFLEET__REPLY__RESULT_ENV && reply->env &&
             strcmp(reply->env->state, "suspended") == 0)) {
        if (zclock_mono() >= deadline) {
            fprintf(stderr, "ttctl: env %s: not suspended after %llu s (env %s)\n", name,
                    (unsigned long long)(a->wait_timeout ? a->wait_timeout : 300),
                    reply->result_case == TTFLEET__REPLY__RESULT_ENV && reply->env
                        ? reply->env->state
                        : "?");
            ttclient_reply_destroy(&reply);
            ttclient_destroy(&client);
            return EXIT_STATUS;
        }
        ttclient_reply_destroy(&reply);
        zclock_sleep(200);
        rc = ttclient_env_show(client, name, &reply);
    }
    char text[128];
    snprintf(text, sizeof text, "env %s suspended", name);
    return ctl_finish(ctl, &client, rc, &reply, text, false);
}

/* ---- extend ---- */

/* env extend NAME DUR sets the lifetime (counted from creation) to DUR;
 * NAME +DUR adds DUR to the current lifetime (read with env show first). */
static int s_env_extend(ctl_t *ctl, void *args)
{
    (void)args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    const char *text = ctl->pos[1];
    bool add = text[0] == '+';
    uint64_t lifetime =
        ctl_duration(ctl, "lifetime", add ? text + 1 : text, 1, TT_MAX_LIFETIME_ADMIN);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    if (add) {
        int rc = ttclient_env_show(client, name, &reply);
        if (rc != 0 || reply->status != TTFLEET__STATUS__OK || !reply->env)
            return ctl_finish(ctl, &client, rc, &reply, "", false);
        lifetime += reply->env->lifetime;
        ttclient_reply_destroy(&reply);
    }
    int rc = ttclient_env_extend(client, name, lifetime, &reply);
    char done[128];
    snprintf(done, sizeof done, "lifetime changed to %llu s", (unsigned long long)lifetime);
    return ctl_finish(ctl, &client, rc, &reply, done, false);
}

/* ---- update ---- */

typedef struct {
    uint64_t cpu, mem, disk;
    uint32_t ports[TT_MAX_PORTS_PER_VM];
    size_t n_ports;
    bool only_ssh, deny, allow;
} update_args_t;

static void s_update_port(ctl_t *ctl, void *args, const char *value)
{
    update_args_t *a = args;
    s_port(ctl, a->ports, &a->n_ports, value);
}

static const ctl_opt_t s_update_opts[] = {
    S_OPT("--cpu", CTL_INT, update_args_t, cpu, 1, TT_MAX_CPU, "N", "cpus per VM (while stopped)"),
    S_OPT("--mem", CTL_SIZE, update_args_t, mem, 1, TT_MAX_MEM_MIB, "MIB",
          "memory per VM in MiB, or 2G (while stopped)"),
    S_OPT("--disk", CTL_SIZE, update_args_t, disk, 1, TT_MAX_DISK_MIB, "MIB",
          "disk per VM in MiB, or 40G (while stopped; grows only)"),
    S_CALL("--port", s_update_port, "P",
           "replaces the list of exposed guest ports (22 stays); repeat"),
    S_OPT("--only-ssh", CTL_FLAG, update_args_t, only_ssh, 0, 0, NULL, "expose nothing but 22"),
    S_OPT("--deny-outgoing", CTL_FLAG, update_args_t, deny, 0, 0, NULL,
          "VMs may not open connections out (live)"),
    S_OPT("--allow-outgoing", CTL_FLAG, update_args_t, allow, 0, 0, NULL,
          "VMs may open connections out (live)"),
    CTL_OPT_END,
};

static int s_env_update(ctl_t *ctl, void *args)
{
    update_args_t *a = args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    Ttfleet__EnvUpdate update = TTFLEET__ENV_UPDATE__INIT;
    update.cpu = (uint32_t)a->cpu;
    update.mem_mib = (uint32_t)a->mem;
    update.disk_mib = (uint32_t)a->disk;
    update.ports = a->ports;
    update.n_ports = a->n_ports;
    update.set_ports = a->n_ports || a->only_ssh;
    if (a->deny && a->allow)
        ctl_usage_error(ctl, "--deny-outgoing and --allow-outgoing exclude each other");
    if (a->deny)
        update.outgoing = TTFLEET__OUTGOING_MODE__OUTGOING_DENY;
    else if (a->allow)
        update.outgoing = TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW;
    if (a->only_ssh && update.n_ports)
        ctl_usage_error(ctl, "--only-ssh and --port exclude each other");
    if (!update.cpu && !update.mem_mib && !update.disk_mib && !update.set_ports &&
        update.outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_UNCHANGED)
        ctl_usage_error(ctl, "nothing to update: give --cpu, --mem, --disk, --port or "
                             "--deny-outgoing/--allow-outgoing");
    update.name = (char *)name;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_update(client, &update, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "env updated", false);
}

/* ---- rm-vm ---- */

typedef struct {
    const char *prefix, *host;
} rm_vm_args_t;

static void s_rm_vm_image(ctl_t *ctl, void *args, const char *value)
{
    rm_vm_args_t *a = args;
    if (a->prefix)
        ctl_usage_error(ctl, "--image given twice");
    a->prefix = ctl_name(ctl, "--image", value);
}

static const ctl_opt_t s_rm_vm_opts[] = {
    S_CALL("--image", s_rm_vm_image, "PREFIX", "remove every VM whose image starts with PREFIX"),
    S_OPT("--host", CTL_NAME, rm_vm_args_t, host, 0, 0, "ID",
          "the VMs' host: only for an older env whose VMs share an id"),
    CTL_OPT_END,
};

static int s_env_rm_vm(ctl_t *ctl, void *args)
{
    rm_vm_args_t *a = args;
    uint32_t ids[TT_MAX_VMS_PER_ENV];
    Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
    rm.vm_ids = ids;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    for (int p = 1; p < ctl->n_pos; p++) {
        if (rm.n_vm_ids == TT_MAX_VMS_PER_ENV)
            ctl_usage_error(ctl, "at most %d VM ids", TT_MAX_VMS_PER_ENV);
        uint32_t id = (uint32_t)ctl_number(ctl, "VM id", ctl->pos[p], TT_VMID_MIN, TT_VMID_MAX);
        for (size_t i = 0; i < rm.n_vm_ids; i++)
            if (ids[i] == id)
                ctl_usage_error(ctl, "VM id %u given twice", id);
        ids[rm.n_vm_ids++] = id;
    }
    if (!a->prefix == !rm.n_vm_ids)
        ctl_usage_error(ctl, "give either VM ids or --image PREFIX");
    rm.image_prefix = (char *)a->prefix;
    rm.host = (char *)a->host;
    rm.name = (char *)name;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_rm_vm(client, &rm, &reply);
    return ctl_finish(ctl, &client, rc, &reply, "VMs removed", false);
}

#define S_NAME_CMD(verb, op, help, fn, done)                                                       \
    {                                                                                              \
        "env", verb, op, "NAME", help, NULL, 0, 1, 1, "env name is required", ctl_env_ref, fn,     \
            done                                                                                   \
    }

const ctl_cmd_t ctl_env_cmds[] = {
    {"env", "create", "env_create", "NAME",
     "Creates env NAME. Each --image adds VMs of that image, one or --dup N of them.\n",
     s_create_opts, sizeof(create_args_t), 1, 1, "env name is required", s_env_create, NULL, NULL},
    {"env", "list", "env_list", NULL,
     "Lists your envs; --all lists every tenant's (admin only), --state only those in a state.\n"
     "(Labels on envs are not supported by the broker, so there is no --label filter.)\n",
     s_list_opts, sizeof(list_args_t), 0, 0, NULL, s_env_list, NULL, NULL},
    S_NAME_CMD("show", "env_show", "Shows env NAME with its VMs and port maps.\n",
               ttclient_env_show, "shown"),
    S_NAME_CMD("stop", "env_stop",
               "Powers off the VMs of NAME, keeping disks, addresses and ports.\n",
               ttclient_env_stop, "stopped"),
    {"env", "start", "env_start", "NAME",
     "Boots the VMs of a stopped env again. --wait: first wait out a TOO_SOON answer (the\n"
     "broker's minimum time between stop and start, said on stderr), then wait until every\n"
     "VM runs (or, with ready, is ready again: ready is dropped on stop), all within\n"
     "--wait-timeout.\n",
     s_wake_opts, sizeof(wake_args_t), 1, 1, "env name is required", s_env_wake, ttclient_env_start,
     "started"},
    S_NAME_CMD("pause", "env_pause", "Freezes the VMs of NAME (resources stay held).\n",
               ttclient_env_pause, "paused"),
    {"env", "suspend", "env_suspend", "NAME",
     "Saves the RAM and device state of every VM of NAME to its host's disk; the VM\n"
     "processes end and their cpu and memory are free for others (disks, addresses, ports\n"
     "and the lease are kept). env resume brings them back with their memory. Only on\n"
     "engines that can take memory snapshots (qemu).\n",
     s_suspend_opts, sizeof(suspend_args_t), 1, 1, "env name is required", s_env_suspend, NULL,
     NULL},
    {"env", "resume", "env_resume", "NAME",
     "Thaws the VMs of a paused env, or restores a suspended env from its saved memory\n"
     "(its hosts must have the cpu and memory free again, else NO_CAPACITY). --wait as\n"
     "env start.\n",
     s_wake_opts, sizeof(wake_args_t), 1, 1, "env name is required", s_env_wake,
     ttclient_env_resume, "resumed"},
    {"env", "extend", "env_extend", "NAME [+]DUR",
     "DUR sets the lifetime of NAME, counted from its creation; +DUR adds DUR to its\n"
     "current lifetime. DUR: seconds or 90m, 2h, 1d, 1h30m.\n",
     NULL, 0, 2, 2, "env name and lifetime (seconds, 2h, or +1h to add) are required", s_env_extend,
     NULL, NULL},
    {"env", "update", "env_update", "NAME",
     "Changes NAME. cpu, mem and disk only while the env is stopped; --port replaces the\n"
     "list of exposed guest ports (22 stays), --only-ssh leaves only 22; outgoing access\n"
     "changes live.\n",
     s_update_opts, sizeof(update_args_t), 1, 1, "env name is required", s_env_update, NULL, NULL},
    {"env", "rm-vm", "env_rm_vm", "NAME [VMID...]",
     "Removes VMs from NAME by id (unique within the env) or all VMs\n"
     "whose image starts with PREFIX.\n",
     s_rm_vm_opts, sizeof(rm_vm_args_t), 1, -1, "env name is required", s_env_rm_vm, NULL, NULL},
    S_NAME_CMD("delete", "env_delete", "Deletes env NAME and all its VMs.\n", ttclient_env_delete,
               "deleted"),
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
