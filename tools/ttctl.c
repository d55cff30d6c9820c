/*
 * ttctl: the command-line client of ttfleet, for producers and admins.
 *
 *   ttctl [--broker EP] [--tenant T] [--json] [--timeout MS] GROUP VERB ARGS...
 *
 * Every command is parsed and validated completely before anything is sent:
 * numbers are parsed whole with their ranges, names are checked with the
 * same tt_name_valid() the broker uses, and any mistake is a usage error
 * (exit 2) that names the argument. Then one request goes out through
 * libttclient, and the reply is printed by ttctl_print as a table or, with
 * --json, as JSON for scripts.
 *
 * Exit codes are a contract with scripts: 0 only when the broker said OK,
 * 1 when it answered with an error status (printed on stderr as
 * "ttctl: NOT_FOUND: <message>"), 2 for a usage error, 3 when no valid reply
 * came back (transport failure). The global options may also be given after
 * the command words.
 *
 * Where the broker, the tenant and the CURVE keys come from, strongest
 * first: the flags (--broker, --tenant, --key, --broker-key), the
 * environment (TTFLEET_BROKER, TTFLEET_TENANT, TTFLEET_KEY,
 * TTFLEET_BROKER_KEY, TTFLEET_EVENTS), then the config file
 * ($TTFLEET_CONFIG, else ~/.config/ttfleet/ttctl.conf if it exists) of
 * "name = value" lines read with zconfig (s_config_load). `ttctl keygen` makes the keys.
 */
#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ttclient.h"
#include "ttctl_print.h"
#include "ttguest.h"
#include "ttproto.h"

#include <openssl/evp.h>

#define EXIT_STATUS 1
#define EXIT_USAGE 2
#define EXIT_TRANSPORT 3

#define TTCTL_MAX_TIMEOUT 3600000
#define TTCTL_DEFAULT_EVENTS "tcp://127.0.0.1:5557"
#define TTCTL_DEFAULT_WAIT 300 /* seconds env create --wait waits */
#define TTCTL_WAIT_POLL_MS 250 /* image pull --wait: how often it asks */

typedef struct command_s command_t;

/* What the global options and the command line as a whole say. */
typedef struct {
    const char *broker;
    const char *tenant;
    const char *key;        /* CURVE: this client's cert (and key_secret), or NULL */
    const char *broker_key; /* CURVE: the broker's public cert, or NULL */
    const char *events;     /* the broker's events endpoint, for watch */
    bool json;
    int timeout;
    const command_t *cmd;
} ctl_t;

/* Walks the arguments of one command: options (with "--opt=value" or
 * "--opt value"), positionals, and "--" to end the options. */
typedef struct {
    int argc;
    char **argv;
    int i;
    bool no_more_options;
    char name[48]; /* the current option, without "=value" */
    const char *inline_value;
} scan_t;

/* The libttclient call of a command whose only argument is an env name. */
typedef int (*env_ref_fn)(ttclient_t *, const char *, Ttfleet__Reply **);

struct command_s {
    const char *group; /* "env", "host", or NULL for a top-level verb */
    const char *verb;
    const char *synopsis;
    const char *help;
    int (*run)(ctl_t *ctl, scan_t *scan); /* NULL: an env-name command, below */
    env_ref_fn ref;
    const char *done; /* what ref did, for the OK line without a result */
};

static const char *s_global_help =
    "global options (before or after the command words):\n"
    "  --broker EP     broker clients endpoint (env TTFLEET_BROKER, "
    "default " TTCLIENT_DEFAULT_ENDPOINT "); a broker cluster:\n"
    "                  EP1,EP2,EP3 (NOT_LEADER is followed, same request id)\n"
    "  --tenant T      tenant to act as (env TTFLEET_TENANT, default " TTCLIENT_DEFAULT_TENANT ")\n"
    "  --key CERT      CURVE: this client's certificate, CERT and CERT_secret as\n"
    "                  'ttctl keygen' writes them (env TTFLEET_KEY)\n"
    "  --broker-key CERT  CURVE: the broker's public certificate (env TTFLEET_BROKER_KEY)\n"
    "  --json          print results as JSON\n"
    "  --timeout MS    wait per attempt, 1..3600000 (default 10000; 3 attempts)\n"
    "  --help          this help; 'ttctl GROUP VERB --help' for one command\n"
    "config file: $TTFLEET_CONFIG or ~/.config/ttfleet/ttctl.conf, ZPL (zconfig) lines 'name = value'\n"
    "  with names broker, tenant, key, broker_key, events; flags and env vars override it\n"
    "exit codes: 0 OK, 1 error status from the broker, 2 usage error, 3 no reply\n";

static void s_print_command_help(FILE *out, const command_t *cmd)
{
    fprintf(out, "usage: ttctl [global options] %s\n\n%s\n%s", cmd->synopsis, cmd->help,
            s_global_help);
}

static void s_usage_error(ctl_t *ctl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void s_usage_error(ctl_t *ctl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ttctl: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (ctl->cmd)
        fprintf(stderr, "usage: ttctl [global options] %s\n(see 'ttctl %s%s%s --help')\n",
                ctl->cmd->synopsis, ctl->cmd->group ? ctl->cmd->group : "",
                ctl->cmd->group ? " " : "", ctl->cmd->verb);
    else
        fprintf(stderr, "(see 'ttctl --help')\n");
    exit(EXIT_USAGE);
}

/* Parses all of text as a decimal number in min..max. */
static uint64_t s_number(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max)
{
    const char *p = text;
    bool ok = *p >= '0' && *p <= '9';
    uint64_t value = 0;
    for (; ok && *p; p++) {
        if (*p < '0' || *p > '9') {
            ok = false;
            break;
        }
        unsigned digit = (unsigned)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10) {
            ok = false;
            break;
        }
        value = value * 10 + digit;
    }
    if (!ok || value < min || value > max)
        s_usage_error(ctl, "%s: '%s' is not a whole number in %llu..%llu", what, text,
                      (unsigned long long)min, (unsigned long long)max);
    return value;
}

static const char *s_name(ctl_t *ctl, const char *what, const char *text)
{
    if (!tt_name_valid(text))
        s_usage_error(ctl,
                      "%s: invalid name '%s': use 1..%d of [A-Za-z0-9._-], not starting "
                      "with '.'",
                      what, text, TT_MAX_NAME);
    return text;
}

/* A public key is 40 characters of Z85, whose alphabet has '-' and '=': one in
 * 85 keys starts with '-'. Such an argument is the key, not an option, unless
 * it reads as an option: "--" and a name of [a-z-] up to '=' or its end (then
 * `--` before it still makes it a positional). */
static bool s_is_key_text(const char *arg)
{
    if (!tt_key_valid(arg))
        return false;
    if (arg[1] != '-')
        return true;
    for (const char *p = arg + 2; *p && *p != '='; p++)
        if (!((*p >= 'a' && *p <= 'z') || *p == '-'))
            return true;
    return false;
}

/* Moves to the next argument. Returns 1 for an option (name in scan->name),
 * 0 for a positional (in *pos), -1 at the end. */
static int s_scan(ctl_t *ctl, scan_t *s, const char **pos)
{
    if (s->i >= s->argc)
        return -1;
    const char *arg = s->argv[s->i++];
    if (!s->no_more_options && strcmp(arg, "--") == 0) {
        s->no_more_options = true;
        return s_scan(ctl, s, pos);
    }
    if (s->no_more_options || arg[0] != '-' || arg[1] == '\0' || s_is_key_text(arg)) {
        *pos = arg;
        return 0;
    }
    if (strcmp(arg, "-h") == 0)
        arg = "--help";
    if (strcmp(arg, "-i") == 0) /* env ssh -i KEY, as ssh spells it */
        arg = "--identity";
    if (arg[1] != '-')
        s_usage_error(ctl, "unknown option '%s' (options are spelled --name)", arg);
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= sizeof s->name)
        s_usage_error(ctl, "unknown option '%.60s'", arg);
    memcpy(s->name, arg, n);
    s->name[n] = '\0';
    s->inline_value = eq ? eq + 1 : NULL;
    return 1;
}

static bool s_is(scan_t *s, const char *name)
{
    return strcmp(s->name, name) == 0;
}

/* The value of the current option. */
static const char *s_value(ctl_t *ctl, scan_t *s)
{
    if (s->inline_value)
        return s->inline_value;
    if (s->i >= s->argc)
        s_usage_error(ctl, "%s needs a value", s->name);
    return s->argv[s->i++];
}

/* An option without a value must not be given one. */
static void s_flag(ctl_t *ctl, scan_t *s)
{
    if (s->inline_value)
        s_usage_error(ctl, "%s takes no value", s->name);
}

/* Handles the global options wherever they appear. Returns true if the
 * current option was one. */
static bool s_global_option(ctl_t *ctl, scan_t *s)
{
    if (s_is(s, "--broker")) {
        ctl->broker = s_value(ctl, s);
    } else if (s_is(s, "--tenant")) {
        ctl->tenant = s_name(ctl, "--tenant", s_value(ctl, s));
    } else if (s_is(s, "--key")) {
        ctl->key = s_value(ctl, s);
    } else if (s_is(s, "--broker-key")) {
        ctl->broker_key = s_value(ctl, s);
    } else if (s_is(s, "--json")) {
        s_flag(ctl, s);
        ctl->json = true;
    } else if (s_is(s, "--timeout")) {
        ctl->timeout = (int)s_number(ctl, "--timeout", s_value(ctl, s), 1, TTCTL_MAX_TIMEOUT);
    } else if (s_is(s, "--help")) {
        if (ctl->cmd)
            s_print_command_help(stdout, ctl->cmd);
        else
            return false;
        exit(0);
    } else
        return false;
    return true;
}

static void s_unknown_option(ctl_t *ctl, scan_t *s)
{
    s_usage_error(ctl, "unknown option '%s'", s->name);
}

/* For commands whose only arguments are positionals: collects up to max of
 * them into pos[] and returns how many there were. */
static int s_positionals(ctl_t *ctl, scan_t *s, const char **pos, int max)
{
    int n = 0;
    const char *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 1) {
            if (!s_global_option(ctl, s))
                s_unknown_option(ctl, s);
            continue;
        }
        if (n == max)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        pos[n++] = arg;
    }
    return n;
}

static const char *s_one_name(ctl_t *ctl, scan_t *s, const char *what)
{
    const char *pos[1] = {NULL};
    if (s_positionals(ctl, s, pos, 1) != 1)
        s_usage_error(ctl, "%s is required", what);
    return s_name(ctl, what, pos[0]);
}

static ttclient_t *s_client(ctl_t *ctl)
{
    if (!ctl->broker || !strstr(ctl->broker, "://"))
        s_usage_error(ctl, "broker endpoint '%s' is not a ZeroMQ endpoint such as %s",
                      ctl->broker ? ctl->broker : "", TTCLIENT_DEFAULT_ENDPOINT);
    bool key = ctl->key && *ctl->key, broker_key = ctl->broker_key && *ctl->broker_key;
    if (key != broker_key)
        s_usage_error(ctl, "CURVE needs both --key (this client's certificate) and --broker-key "
                           "(the broker's public certificate)");
    ttclient_t *client = ttclient_new(ctl->broker, ctl->tenant);
    if (!client) {
        fprintf(stderr, "ttctl: cannot create a client\n");
        exit(EXIT_TRANSPORT);
    }
    ttclient_set_timeout(client, ctl->timeout);
    if (key && ttclient_set_curve(client, ctl->key, ctl->broker_key) != 0)
        s_usage_error(ctl, "%s", ttclient_error(client));
    return client;
}

/* Reports the outcome of one call, prints its result, frees both, and
 * returns the exit code. done_text is what is printed for an OK reply
 * without a result. */
static int s_finish(ctl_t *ctl, ttclient_t **client_p, int rc, Ttfleet__Reply **reply_p,
                    const char *done_text, bool list_all)
{
    int code = 0;
    Ttfleet__Reply *reply = *reply_p;
    if (rc != 0) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(*client_p));
        code = EXIT_TRANSPORT;
    } else if (reply->status != TTFLEET__STATUS__OK) {
        fprintf(stderr, "ttctl: %s: %s\n", tt_status_name(reply->status),
                reply->message && *reply->message ? reply->message : "(no message)");
        code = EXIT_STATUS;
    } else {
        switch (reply->result_case) {
        case TTFLEET__REPLY__RESULT_ENV:
            print_env(stdout, reply->env, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_ENVS:
            print_env_list(stdout, reply->envs, list_all, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_HOSTS:
            print_host_list(stdout, reply->hosts, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_HOST:
            print_host(stdout, reply->host, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_POOL:
            print_pool(stdout, reply->pool, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_CONSOLE:
            print_console(stdout, reply->console, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_KEYS:
            print_key_list(stdout, reply->keys, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_QUOTAS:
            print_quota_list(stdout, reply->quotas, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_QUEUE:
            print_queue(stdout, reply->queue, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_AUDIT:
            print_audit(stdout, reply->audit, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_IMAGE:
            print_image(stdout, reply->image, ctl->json);
            break;
        case TTFLEET__REPLY__RESULT_IMAGES:
            print_image_list(stdout, reply->images, ctl->json);
            break;
        default:
            print_done(stdout, done_text, ctl->json);
            break;
        }
        if (fflush(stdout) != 0)
            code = EXIT_STATUS;
    }
    ttclient_reply_destroy(reply_p);
    ttclient_destroy(client_p);
    return code;
}

/* ---- env ---- */

/* --wait [running|ready] (also --wait=ready) and --wait-timeout SECS, of
 * env create, start and resume: true if the option was one of them. */
static bool s_wait_option(ctl_t *ctl, scan_t *s, bool *wait, bool *ready, int *secs)
{
    if (s_is(s, "--wait")) {
        const char *what = s->inline_value;
        if (!what && s->i < s->argc &&
            (strcmp(s->argv[s->i], "ready") == 0 || strcmp(s->argv[s->i], "running") == 0))
            what = s->argv[s->i++];
        if (what && strcmp(what, "ready") && strcmp(what, "running"))
            s_usage_error(ctl, "--wait takes 'running' or 'ready', not '%s'", what);
        *wait = true;
        *ready = *ready || (what && strcmp(what, "ready") == 0);
        return true;
    }
    if (s_is(s, "--wait-timeout")) {
        *secs = (int)s_number(ctl, "--wait-timeout", s_value(ctl, s), 1, 86400);
        *wait = true;
        return true;
    }
    return false;
}

/* env create --wait on a terminal (issue 12): the broker answers a create
 * only when its hosts made the VMs, which includes fetching a catalog
 * image. The create runs on a thread of its own (its own client) while
 * this thread shows the VMs that wait for their image (env show). */
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
    ttclient_t *watch = s_client(ctl);
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
                fprintf(stderr, "\rcreating env %s: %zu VM(s) pulling their image, %llu/%llu MiB "
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
                vm->host, vm->ready_detail && *vm->ready_detail ? vm->ready_detail : "no probe result");
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

/* The progress line of env create --wait on a terminal (the wait after
 * the create's answer; s_create_showing_pulls covers the create itself). */
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
        return s_finish(ctl, client_p, reply ? 0 : -1, &reply, "", false);
    fprintf(stderr, "ttctl: env %s: %zu of %zu VMs %s after %d s (env %s)\n", name,
            ttclient_env_count(reply->env, ready), reply->env->n_vms, ready ? "ready" : "running",
            wait_secs, reply->env->state);
    if (ready)
        s_not_ready_consoles(*client_p, reply->env);
    ttclient_reply_destroy(&reply);
    ttclient_destroy(client_p);
    return EXIT_STATUS;
}

/* A whole small file (at most max bytes) into a malloc'd buffer; a usage
 * error (exit) if it cannot be read or is larger. */
static char *s_read_small(ctl_t *ctl, const char *what, const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        s_usage_error(ctl, "%s %s: %s", what, path, strerror(errno));
    char *buf = malloc(max + 2);
    size_t n = 0;
    while (buf && n <= max) {
        ssize_t r = read(fd, buf + n, max + 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf)
        s_usage_error(ctl, "out of memory");
    if (n > max)
        s_usage_error(ctl, "%s %s is larger than %zu bytes", what, path, max);
    buf[n] = 0;
    *len = n;
    return buf;
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
            s_usage_error(ctl, "--ssh-key %s line %zu: %s", from, line, err);
        s_usage_error(ctl, "--ssh-key-text: %s", err);
    }
    if (b->n_keys == TT_SSH_KEYS_MAX)
        s_usage_error(ctl, "at most %d SSH keys", TT_SSH_KEYS_MAX);
    b->keys[b->n_keys++] = key;
}

/* --ssh-key FILE: every line that is not blank or a # comment is a key
 * (an authorized_keys-like file of public keys; a private key fails). */
static void s_boot_key_file(ctl_t *ctl, s_boot_t *b, const char *path)
{
    size_t len;
    char *text = s_read_small(ctl, "--ssh-key", path, TT_SSH_KEYS_MAX * (TT_SSH_KEY_MAX + 2), &len);
    if (memchr(text, 0, len))
        s_usage_error(ctl, "--ssh-key %s: not an SSH public key file (binary)", path);
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
        s_usage_error(ctl, "--ssh-key %s holds no SSH public key", path);
}

static int s_env_create(ctl_t *ctl, scan_t *s)
{
    s_boot_t boot = {.n_keys = 0};
    char *user_data = NULL;
    size_t user_data_len = 0;
    Ttfleet__ImageCount images[TT_MAX_IMAGES_PER_ENV];
    Ttfleet__ImageCount *image_ptrs[TT_MAX_IMAGES_PER_ENV];
    bool dup_given[TT_MAX_IMAGES_PER_ENV] = {false};
    uint32_t ports[TT_MAX_PORTS_PER_VM];
    Ttfleet__EnvCreate create = TTFLEET__ENV_CREATE__INIT;
    create.images = image_ptrs;
    create.ports = ports;
    const char *name = NULL, *arg;
    int kind;
    bool wait = false, wait_ready = false;
    int wait_secs = TTCTL_DEFAULT_WAIT;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (name)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            name = s_name(ctl, "env name", arg);
        } else if (s_is(s, "--image")) {
            if (create.n_images == TT_MAX_IMAGES_PER_ENV)
                s_usage_error(ctl, "at most %d --image", TT_MAX_IMAGES_PER_ENV);
            Ttfleet__ImageCount *ic = &images[create.n_images];
            ttfleet__image_count__init(ic);
            const char *img = s_value(ctl, s);
            tt_image_ref_t ref;
            char why[160];
            if (!tt_name_valid(img) && tt_image_ref_parse(img, &ref, why, sizeof why))
                s_usage_error(ctl, "--image: '%s' is not an image name, NAME:TAG or "
                                   "NAME@sha256:<64 hex> (%s)",
                              img, why);
            ic->image = (char *)img;
            image_ptrs[create.n_images++] = ic;
        } else if (s_is(s, "--dup")) {
            if (create.n_images == 0)
                s_usage_error(ctl, "--dup must follow the --image it counts");
            size_t last = create.n_images - 1;
            if (dup_given[last])
                s_usage_error(ctl, "--dup given twice for image '%s'", images[last].image);
            dup_given[last] = true;
            images[last].dup =
                (uint32_t)s_number(ctl, "--dup", s_value(ctl, s), 1, TT_MAX_VMS_PER_ENV);
        } else if (s_is(s, "--engine")) {
            create.engine = (char *)s_name(ctl, "--engine", s_value(ctl, s));
        } else if (s_is(s, "--cpu")) {
            create.cpu = (uint32_t)s_number(ctl, "--cpu", s_value(ctl, s), 1, TT_MAX_CPU);
        } else if (s_is(s, "--mem")) {
            create.mem_mib = (uint32_t)s_number(ctl, "--mem", s_value(ctl, s), 1, TT_MAX_MEM_MIB);
        } else if (s_is(s, "--disk")) {
            create.disk_mib =
                (uint32_t)s_number(ctl, "--disk", s_value(ctl, s), 1, TT_MAX_DISK_MIB);
        } else if (s_is(s, "--port")) {
            if (create.n_ports == TT_MAX_PORTS_PER_VM)
                s_usage_error(ctl, "at most %d --port", TT_MAX_PORTS_PER_VM);
            uint32_t port = (uint32_t)s_number(ctl, "--port", s_value(ctl, s), 1, 65535);
            for (size_t i = 0; i < create.n_ports; i++)
                if (ports[i] == port)
                    s_usage_error(ctl, "--port %u given twice", port);
            ports[create.n_ports++] = port;
        } else if (s_is(s, "--lifetime")) {
            create.lifetime =
                s_number(ctl, "--lifetime", s_value(ctl, s), 1, TT_MAX_LIFETIME_ADMIN);
        } else if (s_is(s, "--deny-outgoing")) {
            s_flag(ctl, s);
            create.deny_outgoing = true;
        } else if (s_is(s, "--spread")) {
            s_flag(ctl, s);
            create.spread = true;
        } else if (s_is(s, "--ssh-key")) {
            if (boot.n_files == TT_SSH_KEYS_MAX)
                s_usage_error(ctl, "at most %d --ssh-key", TT_SSH_KEYS_MAX);
            s_boot_key_file(ctl, &boot, s_value(ctl, s));
        } else if (s_is(s, "--ssh-key-text")) {
            char *k = strdup(s_value(ctl, s));
            if (!k)
                s_usage_error(ctl, "out of memory");
            boot.files[boot.n_files++] = k;
            s_boot_key(ctl, &boot, k, NULL, 0);
        } else if (s_is(s, "--user-data")) {
            if (user_data)
                s_usage_error(ctl, "--user-data given twice");
            const char *path = s_value(ctl, s);
            char err[256];
            user_data = s_read_small(ctl, "--user-data", path, TT_USER_DATA_MAX, &user_data_len);
            if (tt_user_data_valid(user_data, user_data_len, err, sizeof err))
                s_usage_error(ctl, "--user-data %s: %s", path, err);
        } else if (s_is(s, "--ready") || s_is(s, "--image-ready")) {
            bool group = s_is(s, "--image-ready");
            const char *spec = s_value(ctl, s);
            tt_ready_t r;
            char err[256];
            if (tt_ready_parse(spec, &r, err, sizeof err))
                s_usage_error(ctl, "%s: %s", group ? "--image-ready" : "--ready", err);
            if (group) {
                if (create.n_images == 0)
                    s_usage_error(ctl, "--image-ready must follow the --image it applies to");
                images[create.n_images - 1].ready = (char *)spec;
            } else
                create.ready = (char *)spec;
        } else if (s_wait_option(ctl, s, &wait, &wait_ready, &wait_secs)) {
            continue;
        } else if (s_is(s, "--queue")) {
            s_flag(ctl, s);
            create.queue = true;
        } else if (s_is(s, "--max-wait")) {
            create.max_wait =
                (uint32_t)s_number(ctl, "--max-wait", s_value(ctl, s), 1, TT_QUEUE_WAIT_MAX);
        } else if (s_is(s, "--priority")) {
            create.priority = (uint32_t)s_number(ctl, "--priority", s_value(ctl, s), 0, TT_PRIO_MAX);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name)
        s_usage_error(ctl, "env name is required");
    if (!create.queue && (create.max_wait || create.priority))
        s_usage_error(ctl, "--max-wait and --priority need --queue");
    if (create.n_images == 0)
        s_usage_error(ctl, "at least one --image is required");
    uint64_t vms = 0;
    for (size_t i = 0; i < create.n_images; i++)
        vms += images[i].dup ? images[i].dup : 1;
    if (vms > TT_MAX_VMS_PER_ENV)
        s_usage_error(ctl, "%llu VMs asked for; at most %d in one env", (unsigned long long)vms,
                      TT_MAX_VMS_PER_ENV);
    create.name = (char *)name;
    create.ssh_keys = boot.keys;
    create.n_ssh_keys = boot.n_keys;
    create.user_data.data = (uint8_t *)user_data;
    create.user_data.len = user_data_len;

    ttclient_t *client = s_client(ctl);
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
    for (size_t i = 0; i < boot.n_files; i++)
        free(boot.files[i]);
    free(user_data);
    if (!wait && rc == 0 && reply->status == TTFLEET__STATUS__QUEUED) {
        /* accepted, not yet placed: success for the caller, with the position */
        uint32_t pos = reply->result_case == TTFLEET__REPLY__RESULT_ENV && reply->env
                           ? reply->env->queue_position
                           : 0;
        char text[128];
        snprintf(text, sizeof text, "env %s queued at position %u", name, pos);
        reply->status = TTFLEET__STATUS__OK;
        if (reply->result_case == TTFLEET__REPLY__RESULT_ENV && ctl->json)
            return s_finish(ctl, &client, rc, &reply, text, false);
        ttclient_reply_destroy(&reply);
        print_done(stdout, text, ctl->json);
        ttclient_destroy(&client);
        return 0;
    }
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__QUEUED) {
        /* --wait: wait through the queue for the whole of wait-timeout */
        ttclient_reply_destroy(&reply);
        return s_wait_running(ctl, &client, name, wait_secs, wait_ready);
    }
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK) {
        ttclient_reply_destroy(&reply);
        return s_wait_running(ctl, &client, name, wait_secs, wait_ready);
    }
    return s_finish(ctl, &client, rc, &reply, "env created", false);
}

static int s_env_list(ctl_t *ctl, scan_t *s)
{
    bool all = false;
    const char *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--all")) {
            s_flag(ctl, s);
            all = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_list(client, all, &reply);
    return s_finish(ctl, &client, rc, &reply, "no envs", all);
}

/* start, resume: one env name, and --wait [ready] [--wait-timeout SECS] as
 * env create has them. */
static int s_env_wake(ctl_t *ctl, scan_t *s)
{
    const char *name = NULL, *arg;
    bool wait = false, wait_ready = false;
    int wait_secs = TTCTL_DEFAULT_WAIT, kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (name)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            name = s_name(ctl, "env name", arg);
        } else if (!s_wait_option(ctl, s, &wait, &wait_ready, &wait_secs) &&
                   !s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name)
        s_usage_error(ctl, "env name is required");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ctl->cmd->ref(client, name, &reply);
    if (wait && rc == 0 && reply->status == TTFLEET__STATUS__OK) {
        ttclient_reply_destroy(&reply);
        return s_wait_running(ctl, &client, name, wait_secs, wait_ready);
    }
    char text[128];
    snprintf(text, sizeof text, "env %s %s", name, ctl->cmd->done);
    return s_finish(ctl, &client, rc, &reply, text, false);
}

/* show, stop, pause, delete: one env name, nothing else. */
static int s_env_ref(ctl_t *ctl, scan_t *s)
{
    const char *name = s_one_name(ctl, s, "env name");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ctl->cmd->ref(client, name, &reply);
    char text[128];
    snprintf(text, sizeof text, "env %s %s", name, ctl->cmd->done);
    return s_finish(ctl, &client, rc, &reply, text, false);
}

static int s_env_extend(ctl_t *ctl, scan_t *s)
{
    const char *pos[2] = {NULL, NULL};
    if (s_positionals(ctl, s, pos, 2) != 2)
        s_usage_error(ctl, "env name and lifetime in seconds are required");
    const char *name = s_name(ctl, "env name", pos[0]);
    uint64_t lifetime = s_number(ctl, "lifetime", pos[1], 1, TT_MAX_LIFETIME_ADMIN);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_extend(client, name, lifetime, &reply);
    return s_finish(ctl, &client, rc, &reply, "lifetime changed", false);
}

static int s_env_update(ctl_t *ctl, scan_t *s)
{
    uint32_t ports[TT_MAX_PORTS_PER_VM];
    Ttfleet__EnvUpdate update = TTFLEET__ENV_UPDATE__INIT;
    update.ports = ports;
    bool only_ssh = false;
    const char *name = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (name)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            name = s_name(ctl, "env name", arg);
        } else if (s_is(s, "--cpu")) {
            update.cpu = (uint32_t)s_number(ctl, "--cpu", s_value(ctl, s), 1, TT_MAX_CPU);
        } else if (s_is(s, "--mem")) {
            update.mem_mib = (uint32_t)s_number(ctl, "--mem", s_value(ctl, s), 1, TT_MAX_MEM_MIB);
        } else if (s_is(s, "--disk")) {
            update.disk_mib =
                (uint32_t)s_number(ctl, "--disk", s_value(ctl, s), 1, TT_MAX_DISK_MIB);
        } else if (s_is(s, "--port")) {
            if (update.n_ports == TT_MAX_PORTS_PER_VM)
                s_usage_error(ctl, "at most %d --port", TT_MAX_PORTS_PER_VM);
            uint32_t port = (uint32_t)s_number(ctl, "--port", s_value(ctl, s), 1, 65535);
            for (size_t i = 0; i < update.n_ports; i++)
                if (ports[i] == port)
                    s_usage_error(ctl, "--port %u given twice", port);
            ports[update.n_ports++] = port;
            update.set_ports = true;
        } else if (s_is(s, "--only-ssh")) {
            /* expose nothing but 22 (always there): an empty port list */
            update.set_ports = true;
            only_ssh = true;
        } else if (s_is(s, "--deny-outgoing") || s_is(s, "--allow-outgoing")) {
            s_flag(ctl, s);
            Ttfleet__OutgoingMode mode = s_is(s, "--deny-outgoing")
                                             ? TTFLEET__OUTGOING_MODE__OUTGOING_DENY
                                             : TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW;
            if (update.outgoing != TTFLEET__OUTGOING_MODE__OUTGOING_UNCHANGED &&
                update.outgoing != mode)
                s_usage_error(ctl, "--deny-outgoing and --allow-outgoing exclude each other");
            update.outgoing = mode;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name)
        s_usage_error(ctl, "env name is required");
    if (only_ssh && update.n_ports)
        s_usage_error(ctl, "--only-ssh and --port exclude each other");
    if (!update.cpu && !update.mem_mib && !update.disk_mib && !update.set_ports &&
        update.outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_UNCHANGED)
        s_usage_error(ctl, "nothing to update: give --cpu, --mem, --disk, --port or "
                           "--deny-outgoing/--allow-outgoing");
    update.name = (char *)name;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_update(client, &update, &reply);
    return s_finish(ctl, &client, rc, &reply, "env updated", false);
}

static int s_env_rm_vm(ctl_t *ctl, scan_t *s)
{
    uint32_t ids[TT_MAX_VMS_PER_ENV];
    Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
    rm.vm_ids = ids;
    const char *name = NULL, *prefix = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (!name) {
                name = s_name(ctl, "env name", arg);
                continue;
            }
            if (rm.n_vm_ids == TT_MAX_VMS_PER_ENV)
                s_usage_error(ctl, "at most %d VM ids", TT_MAX_VMS_PER_ENV);
            uint32_t id = (uint32_t)s_number(ctl, "VM id", arg, TT_VMID_MIN, TT_VMID_MAX);
            for (size_t i = 0; i < rm.n_vm_ids; i++)
                if (ids[i] == id)
                    s_usage_error(ctl, "VM id %u given twice", id);
            ids[rm.n_vm_ids++] = id;
        } else if (s_is(s, "--image")) {
            if (prefix)
                s_usage_error(ctl, "--image given twice");
            prefix = s_name(ctl, "--image", s_value(ctl, s));
        } else if (s_is(s, "--host")) {
            rm.host = (char *)s_name(ctl, "--host", s_value(ctl, s));
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name)
        s_usage_error(ctl, "env name is required");
    if (!prefix == !rm.n_vm_ids)
        s_usage_error(ctl, "give either VM ids or --image PREFIX");
    if (prefix)
        rm.image_prefix = (char *)prefix;
    rm.name = (char *)name;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_rm_vm(client, &rm, &reply);
    return s_finish(ctl, &client, rc, &reply, "VMs removed", false);
}

/* env ssh NAME VMID [-i KEY] [--print] [-- CMD...]: exec the system OpenSSH
 * client to the VM's host's public address and the public port of guest
 * port 22 (from env show). --print prints the command instead. */
static int s_env_ssh(ctl_t *ctl, scan_t *s)
{
    const char *name = NULL, *key = NULL, *user = NULL, *arg;
    uint32_t vm_id = 0;
    bool print = false;
    const char **cmd = calloc((size_t)s->argc + 1, sizeof *cmd);
    size_t n_cmd = 0;
    int kind;
    if (!cmd)
        s_usage_error(ctl, "out of memory");
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (s->no_more_options && name && vm_id)
                cmd[n_cmd++] = arg;
            else if (!name)
                name = s_name(ctl, "env name", arg);
            else if (!vm_id)
                vm_id = (uint32_t)s_number(ctl, "VM id", arg, TT_VMID_MIN, TT_VMID_MAX);
            else
                s_usage_error(ctl, "unexpected argument '%s' (a command goes after --)", arg);
        } else if (s_is(s, "--identity")) {
            key = s_value(ctl, s);
        } else if (s_is(s, "--user")) {
            user = s_name(ctl, "--user", s_value(ctl, s));
        } else if (s_is(s, "--print")) {
            s_flag(ctl, s);
            print = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name || !vm_id)
        s_usage_error(ctl, "env name and VM id are required");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_show(client, name, &reply);
    if (rc != 0 || reply->status != TTFLEET__STATUS__OK) {
        free(cmd);
        return s_finish(ctl, &client, rc, &reply, "", false);
    }
    const Ttfleet__VmInfo *vm = NULL;
    for (size_t i = 0; i < reply->env->n_vms; i++)
        if (reply->env->vms[i]->vm_id == vm_id)
            vm = reply->env->vms[i];
    uint32_t port = 0;
    for (size_t i = 0; vm && i < vm->n_ports; i++)
        if (vm->ports[i]->guest == 22)
            port = vm->ports[i]->public_;
    char addr[64] = "", portbuf[16], target[128], image_user[TT_MAX_NAME + 1] = "";
    if (vm && vm->public_address)
        snprintf(addr, sizeof addr, "%s", vm->public_address);
    if (vm && !user && vm->image_digest && *vm->image_digest) {
        /* a catalog image may name the user its keys go to (image push --user) */
        char ref[2 * TT_MAX_NAME + 80];
        snprintf(ref, sizeof ref, "%s@%s", vm->image, vm->image_digest);
        Ttfleet__Reply *im = NULL;
        if (ttclient_image_show(client, ref, &im) == 0 && im->status == TTFLEET__STATUS__OK &&
            im->image && im->image->defaults && im->image->defaults->user &&
            tt_name_valid(im->image->defaults->user))
            snprintf(image_user, sizeof image_user, "%s", im->image->defaults->user);
        ttclient_reply_destroy(&im);
    }
    if (!user)
        user = image_user[0] ? image_user : "root";
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&client);
    if (!vm) {
        free(cmd);
        fprintf(stderr, "ttctl: NOT_FOUND: env %s has no VM %u\n", name, vm_id);
        return EXIT_STATUS;
    }
    if (!port || !addr[0]) {
        free(cmd);
        fprintf(stderr, "ttctl: UNAVAILABLE: VM %u has %s\n", vm_id,
                !port ? "no public port for guest port 22"
                      : "no public address (start its worker with --public-address)");
        return EXIT_STATUS;
    }
    snprintf(portbuf, sizeof portbuf, "%u", port);
    snprintf(target, sizeof target, "%s@%s", user, addr);
    const char *argv[32 + 1024];
    size_t n = 0;
    argv[n++] = "ssh";
    argv[n++] = "-p";
    argv[n++] = portbuf;
    if (key) {
        argv[n++] = "-i";
        argv[n++] = key;
        argv[n++] = "-o";
        argv[n++] = "IdentitiesOnly=yes";
    }
    argv[n++] = "-o";
    argv[n++] = "StrictHostKeyChecking=no"; /* a fresh VM: its host key is new every time */
    argv[n++] = "-o";
    argv[n++] = "UserKnownHostsFile=/dev/null";
    argv[n++] = "-o";
    argv[n++] = "LogLevel=ERROR";
    argv[n++] = target;
    if (n_cmd) {
        argv[n++] = "--";
        for (size_t i = 0; i < n_cmd && n < sizeof argv / sizeof *argv - 1; i++)
            argv[n++] = cmd[i];
    }
    argv[n] = NULL;
    free(cmd);
    if (print) {
        for (size_t i = 0; i < n; i++)
            printf("%s%s", i ? " " : "", argv[i]);
        printf("\n");
        return 0;
    }
    fflush(NULL);
    execvp("ssh", (char *const *)argv);
    fprintf(stderr, "ttctl: cannot run ssh: %s (Debian package openssh-client)\n", strerror(errno));
    return EXIT_STATUS;
}

static int s_env_console(ctl_t *ctl, scan_t *s)
{
    Ttfleet__EnvConsole q = TTFLEET__ENV_CONSOLE__INIT;
    const char *name = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (!name)
                name = s_name(ctl, "env name", arg);
            else if (!q.vm_id)
                q.vm_id = (uint32_t)s_number(ctl, "VM id", arg, TT_VMID_MIN, TT_VMID_MAX);
            else
                s_usage_error(ctl, "unexpected argument '%s'", arg);
        } else if (s_is(s, "--host")) {
            q.host = (char *)s_name(ctl, "--host", s_value(ctl, s));
        } else if (s_is(s, "--bytes")) {
            q.max_bytes = (uint32_t)s_number(ctl, "--bytes", s_value(ctl, s), 1, TT_CONSOLE_MAX);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name || !q.vm_id)
        s_usage_error(ctl, "env name and VM id are required");
    q.name = (char *)name;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_env_console(client, &q, &reply);
    return s_finish(ctl, &client, rc, &reply, "(empty console)", false);
}

/* ---- exec and copy (guestop on the worker; PROTOCOL.md "Guests") ---- */

/* Reads a local file of at most max bytes whole; exits with a message
 * otherwise. "-" is ttctl's stdin. */
static uint8_t *s_slurp(ctl_t *ctl, const char *path, size_t max, size_t *len, const char *what)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "ttctl: %s %s: %s\n", what, path, strerror(errno));
        exit(EXIT_STATUS);
    }
    struct stat sb;
    if (f != stdin && (fstat(fileno(f), &sb) || !S_ISREG(sb.st_mode))) {
        fprintf(stderr, "ttctl: %s %s: not a regular file\n", what, path);
        exit(EXIT_STATUS);
    }
    if (f != stdin && (uint64_t)sb.st_size > max) {
        fprintf(stderr, "ttctl: TOO_LARGE: %s %s is %lld bytes; at most %zu; nothing was sent\n",
                what, path, (long long)sb.st_size, max);
        exit(EXIT_STATUS);
    }
    uint8_t *buf = malloc(max + 2);
    if (!buf)
        s_usage_error(ctl, "out of memory");
    size_t n = fread(buf, 1, max + 1, f);
    bool failed = ferror(f);
    if (f != stdin)
        fclose(f);
    if (failed || n > max) {
        fprintf(stderr, "ttctl: %s %s: %s\n", what, path,
                failed ? "read error" : "over the size limit; nothing was sent");
        free(buf);
        exit(EXIT_STATUS);
    }
    *len = n;
    return buf;
}

static int s_env_exec(ctl_t *ctl, scan_t *s)
{
    const char *name = NULL, *host = NULL, *in_path = NULL, *arg;
    uint32_t vm_id = 0, timeout_s = 0;
    const char **argv = calloc((size_t)s->argc + 1, sizeof *argv);
    size_t argc = 0;
    int kind;
    if (!argv)
        s_usage_error(ctl, "out of memory");
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (s->no_more_options && name && vm_id)
                argv[argc++] = arg;
            else if (!name)
                name = s_name(ctl, "env name", arg);
            else if (!vm_id)
                vm_id = (uint32_t)s_number(ctl, "VM id", arg, TT_VMID_MIN, TT_VMID_MAX);
            else
                s_usage_error(ctl, "unexpected argument '%s' (the command goes after --)", arg);
        } else if (s_is(s, "--host")) {
            host = s_name(ctl, "--host", s_value(ctl, s));
        } else if (s_is(s, "--timeout")) {
            timeout_s =
                (uint32_t)s_number(ctl, "--timeout", s_value(ctl, s), 1, TT_EXEC_TIMEOUT_MAX);
        } else if (s_is(s, "--stdin")) {
            in_path = s_value(ctl, s);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!name || !vm_id)
        s_usage_error(ctl, "env name and VM id are required");
    if (argc < 1 || argc > TT_EXEC_ARGS_MAX)
        s_usage_error(ctl, "give the command after --: 1..%d arguments", TT_EXEC_ARGS_MAX);
    size_t in_len = 0;
    uint8_t *in = in_path ? s_slurp(ctl, in_path, TT_EXEC_STDIN_MAX, &in_len, "--stdin") : NULL;
    ttclient_t *client = s_client(ctl);
    ttclient_exec_t res;
    int rc = ttclient_env_exec(client, name, vm_id, host, argv, argc, in, in_len, timeout_s, &res);
    free(argv);
    free(in);
    if (rc) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        return EXIT_TRANSPORT;
    }
    ttclient_destroy(&client);
    int code;
    bool ran = res.status == TTFLEET__STATUS__OK || res.status == TTFLEET__STATUS__TIMEOUT;
    if (res.status == TTFLEET__STATUS__OK)
        code = res.signal ? 128 + res.signal : res.exit_code & 0xff;
    else if (res.status == TTFLEET__STATUS__TIMEOUT)
        code = 124; /* as timeout(1) */
    else
        code = EXIT_STATUS;
    if (ctl->json) {
        print_exec_json(stdout, tt_status_name(res.status), res.message, res.host, res.exit_code,
                        res.signal, res.out, res.out_len, res.out_truncated, res.err, res.err_len,
                        res.err_truncated);
    } else {
        if (res.out_len)
            fwrite(res.out, 1, res.out_len, stdout);
        if (res.err_len)
            fwrite(res.err, 1, res.err_len, stderr);
        fflush(stdout);
        if (res.out_truncated)
            fprintf(stderr, "ttctl: stdout truncated: the command wrote more than %d bytes; "
                            "the first %zu are shown\n",
                    TT_EXEC_OUTPUT_MAX, res.out_len);
        if (res.err_truncated)
            fprintf(stderr, "ttctl: stderr truncated: the command wrote more than %d bytes; "
                            "the first %zu are shown\n",
                    TT_EXEC_OUTPUT_MAX, res.err_len);
        if (!ran || res.status == TTFLEET__STATUS__TIMEOUT)
            fprintf(stderr, "ttctl: %s: %s\n", tt_status_name(res.status),
                    res.message[0] ? res.message : "(no message)");
        else if (res.signal)
            fprintf(stderr, "ttctl: the command was killed by signal %d\n", res.signal);
    }
    ttclient_exec_free(&res);
    if (fflush(stdout) != 0)
        return EXIT_STATUS;
    return code;
}

/* NAME:VMID:/abs/path -> its parts; false if spec is a local path. */
static bool s_remote(ctl_t *ctl, const char *spec, char *name, size_t nlen, uint32_t *vm_id,
                     const char **path)
{
    const char *c1 = strchr(spec, ':');
    if (!c1 || spec[0] == '/' || spec[0] == '.')
        return false;
    const char *c2 = strchr(c1 + 1, ':');
    if (!c2 || c2[1] != '/')
        s_usage_error(ctl, "'%s': a VM side is NAME:VMID:/absolute/path", spec);
    size_t n = (size_t)(c1 - spec);
    if (n >= nlen)
        s_usage_error(ctl, "'%s': env name too long", spec);
    memcpy(name, spec, n);
    name[n] = '\0';
    s_name(ctl, "env name", name);
    char id[16];
    size_t k = (size_t)(c2 - c1 - 1);
    if (k == 0 || k >= sizeof id)
        s_usage_error(ctl, "'%s': bad VM id", spec);
    memcpy(id, c1 + 1, k);
    id[k] = '\0';
    *vm_id = (uint32_t)s_number(ctl, "VM id", id, TT_VMID_MIN, TT_VMID_MAX);
    *path = c2 + 1;
    char why[256];
    if (tt_guest_path_valid(*path, why, sizeof why))
        s_usage_error(ctl, "'%s': %s", spec, why);
    return true;
}

static int s_env_cp(ctl_t *ctl, scan_t *s)
{
    const char *pos[2] = {NULL, NULL}, *host = NULL, *arg;
    int n = 0, kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (n == 2)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            pos[n++] = arg;
        } else if (s_is(s, "--host")) {
            host = s_name(ctl, "--host", s_value(ctl, s));
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (n != 2)
        s_usage_error(ctl, "give SRC and DST");
    char name[TT_MAX_NAME + 2];
    uint32_t vm_id = 0;
    const char *gpath = NULL;
    bool src_remote = s_remote(ctl, pos[0], name, sizeof name, &vm_id, &gpath);
    if (src_remote) {
        char other[TT_MAX_NAME + 2];
        uint32_t v2;
        const char *p2;
        if (s_remote(ctl, pos[1], other, sizeof other, &v2, &p2))
            s_usage_error(ctl, "exactly one of SRC and DST is a VM (NAME:VMID:/path)");
    } else if (!s_remote(ctl, pos[1], name, sizeof name, &vm_id, &gpath))
        s_usage_error(ctl, "one of SRC and DST must be a VM: NAME:VMID:/absolute/path");
    const char *local = src_remote ? pos[1] : pos[0];
    ttclient_t *client = s_client(ctl);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc;
    if (!src_remote) {
        data = s_slurp(ctl, local, TT_COPY_FILE_MAX, &len, "file");
        rc = ttclient_env_cp_put(client, name, vm_id, host, gpath, data, len);
    } else
        rc = ttclient_env_cp_get(client, name, vm_id, host, gpath, &data, &len);
    if (rc) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        free(data);
        return rc < 0 ? EXIT_TRANSPORT : EXIT_STATUS;
    }
    ttclient_destroy(&client);
    char target[4096 + 256];
    snprintf(target, sizeof target, "%s", local);
    if (src_remote) {
        struct stat sb;
        if (stat(local, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            const char *base = strrchr(gpath, '/');
            snprintf(target, sizeof target, "%s/%s", local, base && base[1] ? base + 1 : "file");
        }
        char tmp[sizeof target + 16];
        snprintf(tmp, sizeof tmp, "%s.ttctl-tmp", target);
        FILE *f = fopen(tmp, "wb");
        bool ok = f && fwrite(data, 1, len, f) == len;
        if (f && fclose(f) != 0)
            ok = false;
        if (!ok || rename(tmp, target) != 0) {
            fprintf(stderr, "ttctl: write %s: %s\n", target, strerror(errno));
            unlink(tmp);
            free(data);
            return EXIT_STATUS;
        }
    }
    unsigned char sha[32];
    EVP_Digest(data ? data : (const uint8_t *)"", len, sha, NULL, EVP_sha256(), NULL);
    free(data);
    if (ctl->json)
        print_copy_json(stdout, src_remote ? "get" : "put", gpath, target, len, sha);
    else {
        printf("copied %zu bytes %s %s:%u:%s, sha256 ", len, src_remote ? "from" : "to", name,
               vm_id, gpath);
        for (int i = 0; i < 32; i++)
            printf("%02x", sha[i]);
        printf("\n");
    }
    return fflush(stdout) == 0 ? 0 : EXIT_STATUS;
}

/* ---- host, status, mmi ---- */

static int s_host_list(ctl_t *ctl, scan_t *s)
{
    s_positionals(ctl, s, NULL, 0);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_list(client, &reply);
    return s_finish(ctl, &client, rc, &reply, "no hosts", false);
}

static int s_host_show(ctl_t *ctl, scan_t *s)
{
    const char *id = s_one_name(ctl, s, "host id");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_show(client, id, &reply);
    return s_finish(ctl, &client, rc, &reply, "host shown", false);
}

/* host drain / remove: the broker's message says what happened (how many
 * VMs moved or were dropped), so it is printed with the host. */
static int s_host_op_finish(ctl_t *ctl, ttclient_t **client_p, int rc, Ttfleet__Reply **reply_p)
{
    Ttfleet__Reply *reply = *reply_p;
    if (rc != 0 || reply->status != TTFLEET__STATUS__OK)
        return s_finish(ctl, client_p, rc, reply_p, "", false);
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

/* "ID [--flag]...": the host id and which of the n flags were given. */
static const char *s_host_args(ctl_t *ctl, scan_t *s, const char *const *flags, bool *given,
                               int n)
{
    const char *id = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (id)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            id = s_name(ctl, "host id", arg);
            continue;
        }
        int f = 0;
        while (f < n && !s_is(s, flags[f]))
            f++;
        if (f < n) {
            s_flag(ctl, s);
            given[f] = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!id)
        s_usage_error(ctl, "host id is required");
    return id;
}

static int s_host_drain(ctl_t *ctl, scan_t *s)
{
    static const char *const flags[] = {"--undo", "--evacuate"};
    bool given[2] = {false, false};
    const char *id = s_host_args(ctl, s, flags, given, 2);
    if (given[0] && given[1])
        s_usage_error(ctl, "--undo and --evacuate exclude each other");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_drain(client, id, given[0], given[1], &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

static int s_host_remove(ctl_t *ctl, scan_t *s)
{
    static const char *const flags[] = {"--force"};
    bool given[1] = {false};
    const char *id = s_host_args(ctl, s, flags, given, 1);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_host_remove(client, id, given[0], &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

/* host set ID --cpu N --mem MIB --disk MIB | --unpin: an admin's pin of
 * the capacity placement may use on the host. */
static int s_host_set(ctl_t *ctl, scan_t *s)
{
    Ttfleet__HostSet set = TTFLEET__HOST_SET__INIT;
    const char *id = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (id)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            id = s_name(ctl, "host id", arg);
        } else if (s_is(s, "--cpu")) {
            set.cpu = (uint32_t)s_number(ctl, "--cpu", s_value(ctl, s), 1, TT_MAX_HOST_CPU);
        } else if (s_is(s, "--mem")) {
            set.mem_mib = s_number(ctl, "--mem", s_value(ctl, s), 1, TT_MAX_HOST_MEM_MIB);
        } else if (s_is(s, "--disk")) {
            set.disk_mib = s_number(ctl, "--disk", s_value(ctl, s), 1, TT_MAX_HOST_DISK_MIB);
        } else if (s_is(s, "--unpin")) {
            s_flag(ctl, s);
            set.unpin = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!id)
        s_usage_error(ctl, "host id is required");
    if (set.unpin && (set.cpu || set.mem_mib || set.disk_mib))
        s_usage_error(ctl, "--unpin takes no --cpu, --mem or --disk");
    if (!set.unpin && !set.cpu && !set.mem_mib && !set.disk_mib)
        s_usage_error(ctl, "give --cpu, --mem or --disk, or --unpin");
    set.id = (char *)id;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_HOST_SET;
    req.host_set = &set;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ADMIN, &req, &reply);
    return s_host_op_finish(ctl, &client, rc, &reply);
}

/* ---- key: the operator binds client keys (admin only) ---- */

/* A public key given as 40 characters of Z85 or as a certificate file
 * (`ttctl keygen`'s PATH, or PATH_secret: only the public key is sent). */
static void s_key_arg(ctl_t *ctl, const char *arg, char *pub)
{
    if (tt_key_valid(arg)) {
        snprintf(pub, TT_KEY_LEN + 1, "%s", arg);
        return;
    }
    struct stat st;
    if (stat(arg, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 64 * 1024)
        s_usage_error(ctl, "'%s' is neither a public key (40 characters of Z85) nor a "
                           "certificate file", arg);
    zcert_t *cert = zcert_load(arg);
    if (!cert)
        s_usage_error(ctl, "%s is not a CURVE certificate (ttctl keygen makes them)", arg);
    snprintf(pub, TT_KEY_LEN + 1, "%s", zcert_public_txt(cert));
    const char *role = zcert_meta(cert, "role"), *tenant = zcert_meta(cert, "tenant");
    if (role || tenant)
        fprintf(stderr, "ttctl: note: the tenant/role written in %s (%s/%s) are ignored; "
                        "the broker uses what you bind\n", arg, tenant ? tenant : "-",
                role ? role : "-");
    zcert_destroy(&cert);
}

static int s_key_add(ctl_t *ctl, scan_t *s)
{
    const char *file = NULL, *tenant = NULL, *role = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (file)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            file = arg;
        } else if (s_is(s, "--tenant"))
            tenant = s_name(ctl, "--tenant", s_value(ctl, s));
        else if (s_is(s, "--role")) {
            role = s_value(ctl, s);
            if (!tt_key_role_valid(role))
                s_usage_error(ctl, "--role: '%s' is not user, admin or gateway", role);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!file || !tenant || !role)
        s_usage_error(ctl, "key add needs PUBLIC_KEY_OR_CERT_FILE, --tenant T and --role R");
    char pub[TT_KEY_LEN + 1];
    s_key_arg(ctl, file, pub);
    /* --tenant here names the key's tenant; the caller's own tenant comes
     * from its key, so ctl->tenant is not used for this request */
    Ttfleet__KeyAdd add = TTFLEET__KEY_ADD__INIT;
    add.public_key = pub;
    add.tenant = (char *)tenant;
    add.role = (char *)role;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_ADD;
    req.key_add = &add;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ADMIN, &req, &reply);
    return s_finish(ctl, &client, rc, &reply, "key bound", false);
}

static int s_key_list(ctl_t *ctl, scan_t *s)
{
    s_positionals(ctl, s, NULL, 0);
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_LIST;
    req.key_list = &empty;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ADMIN, &req, &reply);
    return s_finish(ctl, &client, rc, &reply, "no keys", false);
}

static int s_key_rm(ctl_t *ctl, scan_t *s)
{
    const char *pos[1] = {NULL};
    if (s_positionals(ctl, s, pos, 1) != 1)
        s_usage_error(ctl, "key rm needs PUBLIC_KEY_OR_CERT_FILE");
    char pub[TT_KEY_LEN + 1];
    s_key_arg(ctl, pos[0], pub);
    Ttfleet__KeyRef ref = TTFLEET__KEY_REF__INIT;
    ref.public_key = pub;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_KEY_RM;
    req.key_rm = &ref;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ADMIN, &req, &reply);
    return s_finish(ctl, &client, rc, &reply, "key removed", false);
}

/* ---- admission: quota, queue, audit ---- */

/* A quota limit: a whole number in 0..max, or -1 / "none" for no limit. */
static Ttfleet__QuotaLimit *s_limit(ctl_t *ctl, const char *what, const char *text,
                                    uint64_t max, Ttfleet__QuotaLimit *slot)
{
    ttfleet__quota_limit__init(slot);
    if (strcmp(text, "-1") == 0 || strcmp(text, "none") == 0)
        slot->value = -1;
    else
        slot->value = (int64_t)s_number(ctl, what, text, 0, max);
    return slot;
}

static int s_quota_set(ctl_t *ctl, scan_t *s)
{
    Ttfleet__QuotaSet set = TTFLEET__QUOTA_SET__INIT;
    Ttfleet__QuotaLimit l[7];
    const char *tenant = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (tenant)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            tenant = s_name(ctl, "tenant", arg);
        } else if (s_is(s, "--envs")) {
            set.envs = s_limit(ctl, "--envs", s_value(ctl, s), TT_QUOTA_MAX_ENVS, &l[0]);
        } else if (s_is(s, "--vms")) {
            set.vms = s_limit(ctl, "--vms", s_value(ctl, s), TT_QUOTA_MAX_VMS, &l[1]);
        } else if (s_is(s, "--cpu")) {
            set.cpu = s_limit(ctl, "--cpu", s_value(ctl, s), TT_QUOTA_MAX_CPU, &l[2]);
        } else if (s_is(s, "--mem")) {
            set.mem_mib = s_limit(ctl, "--mem", s_value(ctl, s), TT_QUOTA_MAX_MEM_MIB, &l[3]);
        } else if (s_is(s, "--disk")) {
            set.disk_mib = s_limit(ctl, "--disk", s_value(ctl, s), TT_QUOTA_MAX_DISK_MIB, &l[4]);
        } else if (s_is(s, "--max-lifetime")) {
            set.max_lifetime =
                s_limit(ctl, "--max-lifetime", s_value(ctl, s), TT_MAX_LIFETIME_ADMIN, &l[5]);
            if (set.max_lifetime->value == 0)
                s_usage_error(ctl, "--max-lifetime 0 would refuse every env: give 1.. or none");
        } else if (s_is(s, "--max-priority")) {
            set.max_priority =
                s_limit(ctl, "--max-priority", s_value(ctl, s), TT_PRIO_MAX, &l[6]);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!tenant)
        s_usage_error(ctl, "tenant is required");
    if (!set.envs && !set.vms && !set.cpu && !set.mem_mib && !set.disk_mib && !set.max_lifetime &&
        !set.max_priority)
        s_usage_error(ctl, "give at least one limit");
    set.tenant = (char *)tenant;
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_quota_set(client, &set, &reply);
    return s_finish(ctl, &client, rc, &reply, "quota set", false);
}

static int s_quota_show(ctl_t *ctl, scan_t *s)
{
    const char *tenant = NULL, *arg;
    bool all = false;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (tenant)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            tenant = s_name(ctl, "tenant", arg);
        } else if (s_is(s, "--all")) {
            s_flag(ctl, s);
            all = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (all && tenant)
        s_usage_error(ctl, "give a tenant or --all, not both");
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_quota_show(client, tenant, all, &reply);
    return s_finish(ctl, &client, rc, &reply, "no quotas", false);
}

static int s_queue_list(ctl_t *ctl, scan_t *s)
{
    bool all = false;
    const char *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--all")) {
            s_flag(ctl, s);
            all = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_queue_list(client, all, &reply);
    return s_finish(ctl, &client, rc, &reply, "queue empty", false);
}

/* ---- images (issue 12) ---- */

static int s_image_push(ctl_t *ctl, scan_t *s)
{
    const char *pos[2] = {NULL, NULL}, *arg;
    int npos = 0, kind;
    bool priv = false;
    Ttfleet__ImageDefaults defaults = TTFLEET__IMAGE_DEFAULTS__INIT;
    char why[256];
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (npos == 2)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            pos[npos++] = arg;
        } else if (s_is(s, "--private")) {
            s_flag(ctl, s);
            priv = true;
        } else if (s_is(s, "--ready")) {
            defaults.readiness = (char *)s_value(ctl, s);
            tt_ready_t spec;
            if (tt_ready_parse(defaults.readiness, &spec, why, sizeof why))
                s_usage_error(ctl, "--ready: %s", why);
        } else if (s_is(s, "--user")) {
            defaults.user = (char *)s_value(ctl, s);
            if (!tt_name_valid(defaults.user))
                s_usage_error(ctl, "--user: '%s' is not a valid user name", defaults.user);
        } else if (s_is(s, "--min-disk")) {
            defaults.min_disk_mib =
                (uint32_t)s_number(ctl, "--min-disk", s_value(ctl, s), 1, TT_MAX_DISK_MIB);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (npos != 2)
        s_usage_error(ctl, "give NAME[:TAG] and PATH");
    tt_image_ref_t ref;
    if (tt_image_ref_parse(pos[0], &ref, why, sizeof why) || ref.digest[0])
        s_usage_error(ctl, "invalid image name '%s': %s", pos[0],
                      ref.digest[0] ? "push NAME[:TAG], the digest is the content's" : why);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_push(client, pos[0], pos[1], !priv, &defaults, NULL, &reply);
    return s_finish(ctl, &client, rc, &reply, "pushed", false);
}

/* image pull NAME --hosts all|ID[,ID]... [--no-wait] [--wait-timeout SECS]:
 * asks the hosts to fetch the image into their caches, then (unless
 * --no-wait) polls image show until every target host holds it, at most
 * wait-timeout seconds; prints the image as image show does. */
static int s_image_pull(ctl_t *ctl, scan_t *s)
{
    const char *pos = NULL, *arg;
    int kind, wait_secs = TTCTL_DEFAULT_WAIT;
    bool all = false, wait = true;
    char *ids[64];
    size_t n_ids = 0;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0) {
            if (pos)
                s_usage_error(ctl, "unexpected argument '%s'", arg);
            pos = arg;
        } else if (s_is(s, "--hosts")) {
            const char *v = s_value(ctl, s);
            if (strcmp(v, "all") == 0) {
                all = true;
                continue;
            }
            char buf[1024];
            snprintf(buf, sizeof buf, "%s", v);
            char *save = NULL;
            for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
                if (!tt_name_valid(t))
                    s_usage_error(ctl, "--hosts: invalid host id '%s'", t);
                if (n_ids == 64)
                    s_usage_error(ctl, "--hosts: at most 64 ids (or all)");
                ids[n_ids++] = strdup(t);
            }
        } else if (s_is(s, "--no-wait")) {
            s_flag(ctl, s);
            wait = false;
        } else if (s_is(s, "--wait-timeout")) {
            wait_secs = (int)s_number(ctl, "--wait-timeout", s_value(ctl, s), 1, 86400);
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    tt_image_ref_t ref;
    char why[256];
    if (!pos || tt_image_ref_parse(pos, &ref, why, sizeof why))
        s_usage_error(ctl, "image NAME[:TAG] or NAME@sha256:... is required");
    if (!all && !n_ids)
        s_usage_error(ctl, "give --hosts all or --hosts ID[,ID]...");
    ttclient_t *client = s_client(ctl);
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
        if (ttclient_host_list(client, &hl) == 0 && hl->status == TTFLEET__STATUS__OK &&
            hl->hosts)
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
    return s_finish(ctl, &client, rc, &reply, "pulled", false);
}

static int s_image_list(ctl_t *ctl, scan_t *s)
{
    bool all = false;
    const char *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--all")) {
            s_flag(ctl, s);
            all = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_list(client, all, &reply);
    return s_finish(ctl, &client, rc, &reply, "no images", false);
}

static const char *s_image_ref_arg(ctl_t *ctl, scan_t *s)
{
    const char *pos[1] = {NULL};
    if (s_positionals(ctl, s, pos, 1) != 1)
        s_usage_error(ctl, "image NAME[:TAG] or NAME@sha256:... is required");
    tt_image_ref_t ref;
    char why[256];
    if (tt_image_ref_parse(pos[0], &ref, why, sizeof why))
        s_usage_error(ctl, "invalid image name '%s': %s", pos[0], why);
    return pos[0];
}

static int s_image_show(ctl_t *ctl, scan_t *s)
{
    const char *ref = s_image_ref_arg(ctl, s);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_show(client, ref, &reply);
    return s_finish(ctl, &client, rc, &reply, "shown", false);
}

static int s_image_rm(ctl_t *ctl, scan_t *s)
{
    const char *ref = s_image_ref_arg(ctl, s);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_image_rm(client, ref, &reply);
    return s_finish(ctl, &client, rc, &reply, "removed", false);
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
        uint64_t v = s_number(ctl, "--since", num, 0, 100LL * 365 * 86400);
        uint64_t unit = text[n - 1] == 's' ? 1 : text[n - 1] == 'm' ? 60
                                               : text[n - 1] == 'h' ? 3600
                                                                    : 86400;
        if (v > (uint64_t)(100LL * 365 * 86400) / unit)
            s_usage_error(ctl, "--since: '%s' is too far back", text);
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
            s_usage_error(ctl, "--since: '%s' is not a valid UTC time", text);
        struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
                        .tm_hour = h, .tm_min = mi, .tm_sec = sec};
        return (int64_t)timegm(&tm);
    }
    return (int64_t)s_number(ctl, "--since (unix seconds, ISO time or age like 2h)", text, 0,
                             INT64_MAX);
}

static int s_audit(ctl_t *ctl, scan_t *s)
{
    Ttfleet__AuditQuery q = TTFLEET__AUDIT_QUERY__INIT;
    const char *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--tenant"))
            q.tenant = (char *)s_name(ctl, "--tenant", s_value(ctl, s));
        else if (s_is(s, "--env"))
            q.env = (char *)s_name(ctl, "--env", s_value(ctl, s));
        else if (s_is(s, "--since"))
            q.since = s_since(ctl, s_value(ctl, s));
        else if (s_is(s, "--limit"))
            q.limit = (uint32_t)s_number(ctl, "--limit", s_value(ctl, s), 1, TT_AUDIT_LIMIT_MAX);
        else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_audit(client, &q, &reply);
    return s_finish(ctl, &client, rc, &reply, "no audit records", false);
}

/* ---- watch ---- */

static volatile sig_atomic_t s_stop;

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* Subscribes to the broker's events (PUB) and prints each one until
 * SIGINT/SIGTERM, --count events, or --timeout ms (after the verb: here it
 * bounds the whole watch). With --env only that env's events of the
 * caller's tenant are shown. Exit 0, or 1 when --count was not reached
 * before --timeout. With --key/--broker-key the SUB socket talks CURVE
 * like the request socket (the broker's events endpoint takes client keys). */
/* watch --private: the tenant-private ROUTER stream (TTE01) through
 * libttclient's ttevents; the broker filters by the key's tenant. */
static int s_watch_private(ctl_t *ctl, const char *events, const char *env, const char *topic,
                           long long count, long long timeout)
{
    ttclient_t *keys = s_client(ctl);
    ttevents_t *ev_sock = ttevents_new(keys, events, ctl->tenant);
    const char *topics[1] = {topic};
    int code = 0;
    if (!ev_sock ||
        ttevents_subscribe(ev_sock, topics, *topic ? 1 : 0, env, ctl->timeout) != 0) {
        fprintf(stderr, "ttctl: %s\n",
                ev_sock ? ttevents_error(ev_sock) : "cannot make the events socket");
        ttevents_destroy(&ev_sock);
        ttclient_destroy(&keys);
        return EXIT_TRANSPORT;
    }
    int64_t deadline = timeout ? zclock_mono() + timeout : 0;
    long long seen = 0;
    while (!s_stop && (!count || seen < count)) {
        int wait = 1000;
        if (deadline) {
            int64_t left = deadline - zclock_mono();
            if (left <= 0)
                break;
            if (left < wait)
                wait = (int)left;
        }
        Ttfleet__Event *ev = ttevents_recv(ev_sock, wait);
        if (!ev) {
            if (*ttevents_error(ev_sock)) {
                fprintf(stderr, "ttctl: %s\n", ttevents_error(ev_sock));
                code = EXIT_TRANSPORT;
                break;
            }
            continue;
        }
        print_event(stdout, ev, ctl->json);
        fflush(stdout);
        seen++;
        ttfleet__event__free_unpacked(ev, NULL);
    }
    if (!code && count && seen < count && !s_stop) {
        fprintf(stderr, "ttctl: %lld of %lld events before the timeout\n", seen, count);
        code = EXIT_STATUS;
    }
    ttevents_destroy(&ev_sock);
    ttclient_destroy(&keys);
    return code;
}

static int s_watch(ctl_t *ctl, scan_t *s)
{
    bool private_stream = false;
    const char *events = ctl->events, *env = NULL, *topic = "", *arg;
    if (!events || !*events)
        events = TTCTL_DEFAULT_EVENTS;
    long long count = 0, timeout = 0;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--events"))
            events = s_value(ctl, s);
        else if (s_is(s, "--env"))
            env = s_name(ctl, "--env", s_value(ctl, s));
        else if (s_is(s, "--topic"))
            topic = s_value(ctl, s);
        else if (s_is(s, "--count"))
            count = (long long)s_number(ctl, "--count", s_value(ctl, s), 1, 1000000000);
        else if (s_is(s, "--timeout"))
            timeout = (long long)s_number(ctl, "--timeout", s_value(ctl, s), 1, 86400000LL * 30);
        else if (s_is(s, "--private")) {
            s_flag(ctl, s);
            private_stream = true;
        } else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!strstr(events, "://"))
        s_usage_error(ctl, "events endpoint '%s' is not a ZeroMQ endpoint such as %s", events,
                      TTCTL_DEFAULT_EVENTS);
    if (strlen(topic) > TT_MAX_NAME)
        s_usage_error(ctl, "--topic: at most %d characters", TT_MAX_NAME);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (private_stream)
        return s_watch_private(ctl, events, env, topic, count, timeout);
    zsock_t *sub = zsock_new(ZMQ_SUB);
    const char *tenant = ctl->tenant;
    char key_tenant[TT_MAX_NAME + 1] = "";
    if (sub && ctl->key && *ctl->key) {
        /* the events socket takes the same client keys as the clients one */
        ttclient_t *keys = s_client(ctl);
        ttclient_curve_apply(keys, sub);
        ttclient_destroy(&keys);
        /* under CURVE the broker knows us by the key's tenant, not --tenant */
        zcert_t *cert = zcert_load(ctl->key);
        const char *t = cert ? zcert_meta(cert, "tenant") : NULL;
        if (t && tt_name_valid(t)) {
            snprintf(key_tenant, sizeof key_tenant, "%s", t);
            tenant = key_tenant;
        }
        zcert_destroy(&cert);
    }
    if (!sub || zsock_connect(sub, "%s", events) != 0) {
        fprintf(stderr, "ttctl: cannot connect to events endpoint %s\n", events);
        zsock_destroy(&sub);
        return EXIT_TRANSPORT;
    }
    zsock_set_subscribe(sub, topic);
    int64_t deadline = timeout ? zclock_mono() + timeout : 0;
    long long seen = 0;
    int code = 0;
    while (!s_stop && (!count || seen < count)) {
        int wait = 1000;
        if (deadline) {
            int64_t left = deadline - zclock_mono();
            if (left <= 0)
                break;
            if (left < wait)
                wait = (int)left;
        }
        zmq_pollitem_t item = {zsock_resolve(sub), 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, wait);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (rc == 0)
            continue;
        zmsg_t *msg = zmsg_recv(sub);
        if (!msg)
            continue;
        zframe_t *body = zmsg_size(msg) == 2 ? zmsg_last(msg) : NULL;
        Ttfleet__Event *ev =
            body ? ttfleet__event__unpack(NULL, zframe_size(body), zframe_data(body)) : NULL;
        if (ev && (!env || (strcmp(ev->env, env) == 0 && strcmp(ev->tenant, tenant) == 0))) {
            print_event(stdout, ev, ctl->json);
            fflush(stdout);
            seen++;
        }
        if (ev)
            ttfleet__event__free_unpacked(ev, NULL);
        zmsg_destroy(&msg);
    }
    if (count && seen < count && !s_stop) {
        fprintf(stderr, "ttctl: %lld of %lld events before the timeout\n", seen, count);
        code = EXIT_STATUS;
    }
    zsock_destroy(&sub);
    return code;
}

static int s_status(ctl_t *ctl, scan_t *s)
{
    s_positionals(ctl, s, NULL, 0);
    ttclient_t *client = s_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_pool_status(client, &reply);
    return s_finish(ctl, &client, rc, &reply, "status", false);
}

static int s_mmi(ctl_t *ctl, scan_t *s)
{
    const char *pos[1] = {NULL};
    if (s_positionals(ctl, s, pos, 1) != 1)
        s_usage_error(ctl, "service name is required");
    const char *service = pos[0];
    size_t n = strlen(service);
    if (n == 0 || n > 255)
        s_usage_error(ctl, "service name must be 1..255 characters");
    for (const char *p = service; *p; p++)
        if (*p <= ' ' || *p > '~')
            s_usage_error(ctl, "service name must be printable ASCII without spaces");
    ttclient_t *client = s_client(ctl);
    char code[16];
    int code_rc = 0;
    if (ttclient_mmi(client, service, code, sizeof code) != 0) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        code_rc = EXIT_TRANSPORT;
    } else {
        print_mmi(stdout, service, code, ctl->json);
        if (strcmp(code, "200") != 0) {
            fprintf(stderr, "ttctl: %s: service '%s' is %s\n", code, service,
                    strcmp(code, "404") == 0 ? "not served" : "not implemented");
            code_rc = EXIT_STATUS;
        }
    }
    ttclient_destroy(&client);
    return code_rc;
}

/* ---- keys and the config file ---- */

/* Makes a CURVE keypair with the metadata the broker checks: PATH (public,
 * for the broker's --client-keys or --worker-keys directory, or for the
 * clients and workers when it is the broker's) and PATH_secret (mode 0600,
 * stays with its owner). Both files are created with O_EXCL first, so an
 * existing key is never overwritten, not even by a race; zcert_save then
 * fills them in. */
static int s_keygen(ctl_t *ctl, scan_t *s)
{
    const char *out = NULL, *tenant = NULL, *role = NULL, *host = NULL, *arg;
    int kind;
    while ((kind = s_scan(ctl, s, &arg)) >= 0) {
        if (kind == 0)
            s_usage_error(ctl, "unexpected argument '%s'", arg);
        if (s_is(s, "--out"))
            out = s_value(ctl, s);
        else if (s_is(s, "--tenant")) /* here: the tenant written into the cert */
            tenant = s_name(ctl, "--tenant", s_value(ctl, s));
        else if (s_is(s, "--role"))
            role = s_value(ctl, s);
        else if (s_is(s, "--host"))
            host = s_name(ctl, "--host", s_value(ctl, s));
        else if (!s_global_option(ctl, s))
            s_unknown_option(ctl, s);
    }
    if (!out || !*out)
        s_usage_error(ctl, "--out PATH is required");
    if (strlen(out) > 200)
        s_usage_error(ctl, "--out: path longer than 200 characters");
    if (!role)
        s_usage_error(ctl, "--role is required: user, admin, worker or broker");
    bool client = strcmp(role, "user") == 0 || strcmp(role, "admin") == 0 ||
                  strcmp(role, "gateway") == 0;
    bool worker = strcmp(role, "worker") == 0;
    if (!client && !worker && strcmp(role, "broker") != 0)
        s_usage_error(ctl, "--role: '%s' is not user, admin, gateway, worker or broker", role);
    if (client && !tenant)
        s_usage_error(ctl, "--role %s needs --tenant T", role);
    if (!client && tenant)
        s_usage_error(ctl, "--tenant goes with --role user or admin only");
    if (!worker && host)
        s_usage_error(ctl, "--host goes with --role worker only");

    char secret[256];
    snprintf(secret, sizeof secret, "%s_secret", out);
    const char *paths[2] = {out, secret};
    const mode_t modes[2] = {0644, 0600};
    int created = 0;
    for (; created < 2; created++) {
        int fd = open(paths[created], O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, modes[created]);
        if (fd < 0) {
            fprintf(stderr, "ttctl: cannot create %s: %s%s\n", paths[created], strerror(errno),
                    errno == EEXIST ? " (keygen never overwrites a key)" : "");
            break;
        }
        close(fd);
    }
    zcert_t *cert = created == 2 ? zcert_new() : NULL;
    int rc = cert ? 0 : -1;
    if (cert) {
        zcert_set_meta(cert, "role", "%s", role);
        if (tenant)
            zcert_set_meta(cert, "tenant", "%s", tenant);
        if (host)
            zcert_set_meta(cert, "host", "%s", host);
        rc = zcert_save(cert, out);
        /* zcert_save rewrites the files in place, so the modes above hold;
         * make sure of the secret one anyway */
        if (rc == 0)
            rc = chmod(secret, 0600);
        if (rc != 0)
            fprintf(stderr, "ttctl: cannot write %s and %s: %s\n", out, secret, strerror(errno));
    }
    if (rc != 0) {
        for (int i = 0; i < created; i++)
            unlink(paths[i]);
        zcert_destroy(&cert);
        return EXIT_STATUS;
    }
    if (ctl->json) /* Z85 and the role need no JSON escaping; the paths are the caller's */
        printf("{\"key\": \"%s\", \"role\": \"%s\"}\n", zcert_public_txt(cert), role);
    else
        printf("wrote %s (public key %s, role %s%s%s%s%s)\n"
               "  and %s (secret key, mode 0600: keep it with its owner)\n"
               "%s\n",
               out, zcert_public_txt(cert), role, tenant ? ", tenant " : "", tenant ? tenant : "",
               host ? ", host " : "", host ? host : "", secret,
               client   ? "copy the public file into the broker's --client-keys directory"
               : worker ? "copy the public file into the broker's --worker-keys directory"
                        : "give the public file to clients (--broker-key) and workers");
    zcert_destroy(&cert);
    return fflush(stdout) == 0 ? 0 : EXIT_STATUS;
}

/* Values read from the config file; they live as long as ttctl. */
static struct {
    char broker[512];
    char tenant[TT_MAX_NAME + 1];
    char key[512];
    char broker_key[512];
    char events[512];
} s_config;

static void s_config_error(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3), noreturn));

static void s_config_error(const char *path, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ttctl: %s: ", path);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(EXIT_USAGE);
}

/* Reads the config file: $TTFLEET_CONFIG (which must exist) or else
 * ~/.config/ttfleet/ttctl.conf (if it exists), with CZMQ's zconfig (ZPL, the
 * format the daemons' --config files use too): one "name = value" per line,
 * '#' comments, the value optionally in double quotes. Names: broker,
 * tenant, key, broker_key, events, at the top level. A syntax error (zconfig
 * names its line), an unknown or nested name, a name given twice or an
 * empty value is an error naming the file. A key path starting with "~/" is
 * under $HOME; other relative key paths are relative to the config file's
 * directory. */
static void s_config_load(void)
{
    const char *env = getenv("TTFLEET_CONFIG");
    char path[512];
    bool required = env && *env;
    if (required)
        snprintf(path, sizeof path, "%s", env);
    else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return;
        snprintf(path, sizeof path, "%s/.config/ttfleet/ttctl.conf", home);
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        if (!required && errno == ENOENT)
            return;
        s_config_error(path, "%s", strerror(errno));
    }
    if (S_ISDIR(st.st_mode))
        s_config_error(path, "is a directory");
    if (st.st_size > 64 * 1024)
        s_config_error(path, "larger than 64 KiB: not a ttctl config file");
    /* read here (bounded above) and parsed from memory: zconfig_load
     * leaks its zfile when the text is not valid ZPL */
    char *text = NULL;
    FILE *cf = fopen(path, "r");
    if (cf) {
        text = calloc(1, (size_t)st.st_size + 2);
        size_t got = text ? fread(text, 1, (size_t)st.st_size + 1, cf) : 0;
        if (text && (got > (size_t)st.st_size || ferror(cf))) {
            free(text);
            text = NULL;
        }
        fclose(cf);
    }
    if (!text)
        s_config_error(path, "cannot read it: %s", errno ? strerror(errno) : "changed size");
    /* zconfig reports a syntax error (with its line) through CZMQ's log,
     * which writes to stdout: point stdout at stderr meanwhile, so the
     * message reaches the user and never mixes with --json output */
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    if (saved >= 0)
        dup2(STDERR_FILENO, STDOUT_FILENO);
    zconfig_t *root = zconfig_str_load(text);
    free(text);
    fflush(stdout);
    if (saved >= 0) {
        dup2(saved, STDOUT_FILENO);
        close(saved);
    }
    if (!root)
        s_config_error(path, "not a valid config file (ZPL 'name = value' lines; zconfig "
                             "said why above)");
    struct {
        const char *name;
        char *value;
        size_t size;
        bool is_path;
        bool seen;
    } fields[] = {
        {"broker", s_config.broker, sizeof s_config.broker, false, false},
        {"tenant", s_config.tenant, sizeof s_config.tenant, false, false},
        {"key", s_config.key, sizeof s_config.key, true, false},
        {"broker_key", s_config.broker_key, sizeof s_config.broker_key, true, false},
        {"events", s_config.events, sizeof s_config.events, false, false},
    };
    for (zconfig_t *item = zconfig_child(root); item; item = zconfig_next(item)) {
        const char *name = zconfig_name(item);
        const char *value = zconfig_value(item);
        size_t i = 0;
        while (i < sizeof fields / sizeof *fields && strcmp(fields[i].name, name) != 0)
            i++;
        if (i == sizeof fields / sizeof *fields)
            s_config_error(path,
                           "unknown name '%.40s' (known: broker, tenant, key, broker_key, events)",
                           name);
        if (zconfig_child(item))
            s_config_error(path, "%s: a value, not a section, is expected", name);
        if (!value || !*value)
            s_config_error(path, "%s has an empty value", name);
        if (fields[i].seen)
            s_config_error(path, "%s given twice", name);
        fields[i].seen = true;
        int w;
        if (fields[i].is_path && strncmp(value, "~/", 2) == 0) {
            const char *home = getenv("HOME");
            if (!home || !*home)
                s_config_error(path, "%s: '~/' but HOME is not set", name);
            w = snprintf(fields[i].value, fields[i].size, "%s/%s", home, value + 2);
        } else if (fields[i].is_path && value[0] != '/' && strchr(path, '/')) {
            int dir = (int)(strrchr(path, '/') - path);
            w = snprintf(fields[i].value, fields[i].size, "%.*s/%s", dir, path, value);
        } else
            w = snprintf(fields[i].value, fields[i].size, "%s", value);
        if (w < 0 || (size_t)w >= fields[i].size)
            s_config_error(path, "%s: value too long", name);
        if (strcmp(name, "tenant") == 0 && !tt_name_valid(value))
            s_config_error(path,
                           "invalid tenant '%s': use 1..%d of [A-Za-z0-9._-], not starting "
                           "with '.'",
                           value, TT_MAX_NAME);
        if ((strcmp(name, "broker") == 0 || strcmp(name, "events") == 0) &&
            !strstr(value, "://"))
            s_config_error(path, "%s '%s' is not a ZeroMQ endpoint such as %s", name, value,
                           TTCLIENT_DEFAULT_ENDPOINT);
    }
    zconfig_destroy(&root);
}

static const command_t s_commands[] = {
    {"env", "create",
     "env create NAME --image IMG [--dup N] [--image IMG [--dup N]]... [--engine E] [--cpu N] "
     "[--mem MIB] [--disk MIB] [--port P]... [--lifetime SECS] [--deny-outgoing] [--spread] "
     "[--ssh-key FILE]... [--ssh-key-text KEY]... [--user-data FILE] [--ready SPEC] "
     "[--image-ready SPEC] [--wait [ready] [--wait-timeout SECS]] [--queue [--max-wait SECS] [--priority N]]",
     "Creates env NAME. Each --image adds VMs of that image, one or --dup N of them.\n"
     "IMG is a catalog image (image list): NAME, NAME:TAG or NAME@sha256:<hex> (an exact\n"
     "digest), or a host-local image of the workers' --images (a plain name).\n"
     "  --engine E        process, hollow, qemu (default: the broker's, process)\n"
     "  --cpu N           cpus per VM, 1..256 (default 2)\n"
     "  --mem MIB         memory per VM in MiB (default 1024)\n"
     "  --disk MIB        disk per VM in MiB (default 40960)\n"
     "  --port P          guest port to expose on a public port (22 always is); repeat\n"
     "  --lifetime SECS   lease from creation (default 3600; at most 21600 unless admin)\n"
     "  --deny-outgoing   VMs may not open connections out\n"
     "  --spread          place VMs on as many hosts as possible instead of best fit\n"
     "  --ssh-key FILE    OpenSSH public key(s), one per line, for the guests (qemu engine\n"
     "                    with a cloud-init image); repeat\n"
     "  --ssh-key-text KEY  one public key given inline; repeat\n"
     "  --user-data FILE  cloud-init user-data: #cloud-config or a #! script, <= 64 KiB\n"
     "  --ready SPEC      when a VM counts as ready: none, ssh, tcp:PORT, http:PORT[/PATH],\n"
     "                    console:REGEX, agent, cloud-init (default: the image's)\n"
     "  --image-ready SPEC  the same for the --image it follows\n"
     "  --wait            then wait until every VM runs (progress on a terminal); exit 1\n"
     "                    if they do not within --wait-timeout SECS (default 300)\n"
     "  --wait ready      wait until every VM is ready (its --ready probe succeeded); on\n"
     "                    timeout exit 1 and print the console tail of each VM not ready\n"
     "  --queue           if the pool cannot take it now, wait in the admission queue\n"
     "                    (answer: queued at position N; env show gives the position)\n"
     "  --max-wait SECS   give up after SECS in the queue (broker default 3600, 10..86400)\n"
     "  --priority N      0..99, higher first; at most your tenant's cap (quota show)\n",
     s_env_create, NULL, NULL},
    {"env", "list", "env list [--all]",
     "Lists your envs; --all lists every tenant's (admin only).\n", s_env_list, NULL, NULL},
    {"env", "show", "env show NAME", "Shows env NAME with its VMs and port maps.\n", NULL,
     ttclient_env_show, "shown"},
    {"env", "stop", "env stop NAME",
     "Powers off the VMs of NAME, keeping disks, addresses and ports.\n", NULL, ttclient_env_stop,
     "stopped"},
    {"env", "start", "env start NAME [--wait [ready] [--wait-timeout SECS]]",
     "Boots the VMs of a stopped env again. --wait: then wait until every VM runs (or, with\n"
     "ready, is ready again: ready is dropped on stop), as env create --wait.\n",
     s_env_wake, ttclient_env_start, "started"},
    {"env", "pause", "env pause NAME", "Freezes the VMs of NAME (resources stay held).\n", NULL,
     ttclient_env_pause, "paused"},
    {"env", "resume", "env resume NAME [--wait [ready] [--wait-timeout SECS]]",
     "Thaws the VMs of a paused env. --wait as env start.\n", s_env_wake, ttclient_env_resume,
     "resumed"},
    {"env", "extend", "env extend NAME SECS",
     "Sets the lifetime of NAME to SECS counted from its creation.\n", s_env_extend, NULL, NULL},
    {"env", "update",
     "env update NAME [--cpu N] [--mem MIB] [--disk MIB] [--port P]... [--only-ssh] "
     "[--deny-outgoing|--allow-outgoing]",
     "Changes NAME. cpu, mem and disk only while the env is stopped; --port replaces the\n"
     "list of exposed guest ports (22 stays), --only-ssh leaves only 22; outgoing access\n"
     "changes live.\n",
     s_env_update, NULL, NULL},
    {"env", "rm-vm", "env rm-vm NAME (VMID... | --image PREFIX) [--host ID]",
     "Removes VMs from NAME by id (with --host on an env that spans hosts) or all VMs\n"
     "whose image starts with PREFIX.\n",
     s_env_rm_vm, NULL, NULL},
    {"env", "ssh", "env ssh NAME VMID [-i|--identity KEY] [--user USER] [--print] [-- CMD...]",
     "Runs the system OpenSSH client (ssh) to VM VMID: its host's public address\n"
     "(ttworker --public-address) and the public port of guest port 22, as USER\n"
     "(default: the user its catalog image names (image push --user), else root).\n"
     "--print prints the command instead of running it.\n",
     s_env_ssh, NULL, NULL},
    {"env", "console", "env console NAME VMID [--host ID] [--bytes N]",
     "Prints the tail of a VM's console log (default the last 16 KiB, at most 256 KiB).\n",
     s_env_console, NULL, NULL},
    {"env", "exec", "env exec NAME VMID [--host ID] [--timeout SECS] [--stdin FILE] -- CMD [ARG]...",
     "Runs CMD in VM VMID without SSH (the guest agent on the qemu engine, the VM's\n"
     "namespaces on the process engine) and prints its stdout and stderr to ttctl's;\n"
     "exits with the command's exit code (128+N if killed by signal N, 124 if it ran\n"
     "over its timeout and was killed, 1/3 for ttctl's own errors).\n"
     "  --timeout SECS    kill the command after SECS, 1..3600 (default 60); after the\n"
     "                    command words it is this, not ttctl's per-attempt --timeout MS\n"
     "  --stdin FILE      feed FILE (at most 64 KiB; - for ttctl's stdin) to the command\n"
     "  --host ID         the VM's host, on an env that spans hosts\n"
     "At most 1 MiB of stdout and of stderr is kept; more is cut and ttctl says so.\n"
     "--json prints {status, exit_code, signal, stdout, stderr, *_truncated, ...}.\n",
     s_env_exec, NULL, NULL},
    {"env", "cp", "env cp SRC DST [--host ID]",
     "Copies a file to or from a VM without SSH: exactly one of SRC and DST is\n"
     "NAME:VMID:/absolute/path in the guest, the other a local file (a local directory\n"
     "as DST keeps the guest file's name). Files up to 64 MiB, sent in 128 KiB chunks;\n"
     "the sha256 is checked end to end (the worker writes nothing into the guest\n"
     "unless it matches). --json prints {ok, direction, path, local, bytes, sha256}.\n",
     s_env_cp, NULL, NULL},
    {"env", "delete", "env delete NAME", "Deletes env NAME and all its VMs.\n", NULL,
     ttclient_env_delete, "deleted"},
    {"host", "list", "host list", "Lists the hosts of the pool (admin only).\n", s_host_list, NULL,
     NULL},
    {"host", "show", "host show ID", "Shows host ID (admin only).\n", s_host_show, NULL, NULL},
    {"host", "drain", "host drain ID [--evacuate] [--undo]",
     "Stops new placements on host ID (admin only). --evacuate also re-creates its VMs\n"
     "on other hosts (new IPs, MACs and public ports, announced as vm.moved events);\n"
     "--undo ends the drain.\n",
     s_host_drain, NULL, NULL},
    {"host", "remove", "host remove ID [--force]",
     "Removes host ID from the pool (admin only); refused while it holds VMs unless\n"
     "--force, which drops them.\n",
     s_host_remove, NULL, NULL},
    {"host", "set", "host set ID [--cpu N] [--mem MIB] [--disk MIB] | --unpin",
     "Pins the capacity placement may use on host ID (admin only; stored in broker.db):\n"
     "the pin replaces what its worker advertises, so a compromised worker cannot draw\n"
     "more VMs. --unpin goes back to the advertised capacity.\n",
     s_host_set, NULL, NULL},
    {"key", "add", "key add PUBLIC_KEY_OR_CERT_FILE --tenant T --role user|admin|gateway",
     "Binds a client key to tenant T and a role (admin only). The key's owner makes it\n"
     "(ttctl keygen) and sends the public file; what that file says about its tenant\n"
     "or role is ignored. Refused if the key is already bound (key rm it first).\n"
     "A key given as text may start with '-' (Z85 has it); the options first and the\n"
     "key after `--` is read as a key whatever it looks like.\n",
     s_key_add, NULL, NULL},
    {"key", "list", "key list", "Lists the bound client keys (admin only).\n", s_key_list, NULL,
     NULL},
    {"key", "rm", "key rm PUBLIC_KEY_OR_CERT_FILE",
     "Removes a key's binding (admin only): its next request is refused\n"
     "(UNAUTHENTICATED), new handshakes with it fail, and its events stop.\n",
     s_key_rm, NULL, NULL},
    {"image", "push",
     "image push NAME[:TAG] PATH [--private] [--ready SPEC] [--user NAME] [--min-disk MIB]",
     "Pushes an image: a qcow2 file, or a directory with kernel [+ initrd] and/or\n"
     "disk.qcow2. Only the blobs the broker lacks are sent; an interrupted push resumes\n"
     "when run again, and nothing is registered until every blob is stored and verified.\n"
     "A pool image (the default) needs the admin role; --private makes it your tenant's.\n"
     "  --ready SPEC     the image's default readiness (as env create --ready)\n"
     "  --user NAME      the user `env ssh` logs in as by default\n"
     "  --min-disk MIB   the smallest disk a VM of it gets\n",
     s_image_push, NULL, NULL},
    {"image", "list", "image list [--all]",
     "Lists the pool's images and your tenant's private ones (--all: every tenant's,\n"
     "admin only).\n",
     s_image_list, NULL, NULL},
    {"image", "show", "image show NAME[:TAG] | NAME@sha256:HEX",
     "Shows an image: digest, kind, size, owner, blobs, VMs that use it.\n", s_image_show,
     NULL, NULL},
    {"image", "pull", "image pull NAME[:TAG] --hosts all|ID[,ID]... [--no-wait] [--wait-timeout SECS]",
     "Pre-stages an image (admin only): each host fetches it into its image cache, so a\n"
     "VM of it starts without waiting for a transfer. Waits until every host holds it\n"
     "(at most --wait-timeout SECS, default 300; exit 1 if not), unless --no-wait.\n",
     s_image_pull, NULL, NULL},
    {"image", "rm", "image rm NAME[:TAG] | NAME@sha256:HEX",
     "Removes an image from the catalog; refused (IMAGE_IN_USE) while a VM uses it.\n",
     s_image_rm, NULL, NULL},
    {"quota", "set",
     "quota set TENANT [--envs N] [--vms N] [--cpu N] [--mem MIB] [--disk MIB] "
     "[--max-lifetime SECS] [--max-priority N]",
     "Sets limits of TENANT (admin only); limits not given stay. N = none (or -1) removes\n"
     "a limit. TENANT need not have made a request yet. Counted over all of the tenant's\n"
     "envs: envs, VMs, cpus, memory and disk MiB; --max-lifetime bounds the lifetime an env\n"
     "may ask for, --max-priority the --priority of a queued create (default cap 10).\n",
     s_quota_set, NULL, NULL},
    {"quota", "show", "quota show [TENANT | --all]",
     "Shows the limits and usage of your tenant, of TENANT or of every tenant with a\n"
     "quota (admin only for other tenants). USED/LIMIT; '-' means no limit.\n",
     s_quota_show, NULL, NULL},
    {"queue", "list", "queue list [--all]",
     "Lists your queued creates in admission order (--all: every tenant's, admin only).\n"
     "The entry marked * is the blocked head: freed capacity is kept for it.\n",
     s_queue_list, NULL, NULL},
    {NULL, "audit", "audit [--tenant T] [--env NAME] [--since TIME] [--limit N] [--json]",
     "Prints the audit log, newest first: who changed what and the outcome. A user sees\n"
     "its own tenant's rows; an admin every tenant's, or --tenant T.\n"
     "  --env NAME     only rows whose target is NAME\n"
     "  --since TIME   unix seconds, 2026-12-01T20:00:00Z, 2026-12-01, or an age: 30m, 2h, 7d\n"
     "  --limit N      at most N rows (default 100, at most 1000)\n",
     s_audit, NULL, NULL},
    {NULL, "watch",
     "watch [--env NAME] [--topic PREFIX] [--events EP] [--count N] [--timeout MS] [--private]",
     "Prints the broker's events as they happen, one per line (--json: one JSON object\n"
     "per line), until Ctrl-C, N events, or MS milliseconds.\n"
     "  --env NAME      only events of env NAME of your tenant\n"
     "  --topic PREFIX  only topics starting with PREFIX (env., vm., host.)\n"
     "  --events EP     events endpoint (env TTFLEET_EVENTS, default " TTCTL_DEFAULT_EVENTS ")\n"
     "  --count N       stop after N events (exit 1 if --timeout comes first)\n"
     "  --timeout MS    stop after MS milliseconds (here: the whole watch)\n"
     "  --private       use the tenant-private stream (TTE01): the broker sends only your\n"
     "                  tenant's events (an admin all), filtered on the broker side\n",
     s_watch, NULL, NULL},
    {NULL, "status", "status", "Shows the pool's totals.\n", s_status, NULL, NULL},
    {NULL, "mmi", "mmi SERVICE",
     "Asks the broker (8/MMI) whether it serves SERVICE; exit 0 only for 200.\n", s_mmi, NULL,
     NULL},
    {NULL, "keygen",
     "keygen --out PATH (--role user|admin --tenant T | --role worker [--host ID] | --role broker)",
     "Makes a CURVE keypair: PATH (the public certificate, with the role, tenant or host\n"
     "the broker checks) and PATH_secret (mode 0600). Never overwrites an existing file.\n"
     "  --role user|admin|gateway  a client key; send PATH to an admin, who binds it with\n"
     "                     'ttctl key add PATH --tenant T --role R' (the broker ignores\n"
     "                     the tenant and role written here)\n"
     "  --role worker      a worker key; --host binds it to that host id; PATH goes in the\n"
     "                     broker's --worker-keys dir\n"
     "  --role broker      the broker's key (ttbroker --curve-secret PATH); give PATH to\n"
     "                     clients (--broker-key) and workers (ttworker --broker-key)\n"
     "exit 1 if a file exists or cannot be written.\n",
     s_keygen, NULL, NULL},
};

#define S_NCOMMANDS (sizeof s_commands / sizeof *s_commands)

static void s_print_usage(FILE *out)
{
    fprintf(out, "usage: ttctl [global options] COMMAND ...\n\ncommands:\n");
    for (size_t i = 0; i < S_NCOMMANDS; i++)
        fprintf(out, "  %s\n", s_commands[i].synopsis);
    fprintf(out, "\n%s", s_global_help);
}

/* Finds the command named by the words at s->argv[s->i...], handling the
 * global options in front of and between them. */
static const command_t *s_find_command(ctl_t *ctl, scan_t *s)
{
    const char *words[2] = {NULL, NULL};
    int nwords = 0;
    bool help = false;
    while (nwords < 2) {
        const char *arg;
        int kind = s_scan(ctl, s, &arg);
        if (kind < 0)
            break;
        if (kind == 1) {
            if (s_is(s, "--help")) {
                if (nwords == 0) {
                    s_print_usage(stdout);
                    exit(0);
                }
                help = true; /* "ttctl env --help": the group's commands */
                break;
            }
            if (!s_global_option(ctl, s))
                s_unknown_option(ctl, s);
            continue;
        }
        words[nwords++] = arg;
        for (size_t i = 0; i < S_NCOMMANDS; i++) {
            const command_t *c = &s_commands[i];
            if (nwords == 1 && !c->group && strcmp(c->verb, words[0]) == 0)
                return c;
            if (nwords == 2 && c->group && strcmp(c->group, words[0]) == 0 &&
                strcmp(c->verb, words[1]) == 0)
                return c;
        }
        if (nwords == 1 && strcmp(words[0], "help") == 0) {
            s_print_usage(stdout);
            exit(0);
        }
    }
    if (!words[0]) {
        s_print_usage(stderr);
        exit(EXIT_USAGE);
    }
    bool group = false;
    for (size_t i = 0; i < S_NCOMMANDS; i++)
        group |= s_commands[i].group && strcmp(s_commands[i].group, words[0]) == 0;
    if (!group)
        s_usage_error(ctl, "unknown command '%s'", words[0]);
    FILE *out = help && !words[1] ? stdout : stderr;
    if (words[1])
        fprintf(out, "ttctl: unknown command '%s %s'\n", words[0], words[1]);
    else if (!help)
        fprintf(out, "ttctl: '%s' needs a command\n", words[0]);
    fprintf(out, "usage:\n");
    for (size_t i = 0; i < S_NCOMMANDS; i++)
        if (s_commands[i].group && strcmp(s_commands[i].group, words[0]) == 0)
            fprintf(out, "  ttctl %s\n", s_commands[i].synopsis);
    exit(out == stdout ? 0 : EXIT_USAGE);
}

int main(int argc, char **argv)
{
    /* ttctl is short-lived: Ctrl-C should end it at once, not set a flag. */
    zsys_handler_set(NULL);
    /* config file, then the environment over it; the flags come last */
    s_config_load();
    const char *tenant = getenv("TTFLEET_TENANT");
    const char *key = getenv("TTFLEET_KEY"), *broker_key = getenv("TTFLEET_BROKER_KEY");
    const char *events = getenv("TTFLEET_EVENTS");
    ctl_t ctl = {
        .broker = getenv("TTFLEET_BROKER"),
        .tenant = tenant && *tenant ? tenant
                  : *s_config.tenant ? s_config.tenant
                                     : TTCLIENT_DEFAULT_TENANT,
        .key = key && *key ? key : s_config.key,
        .broker_key = broker_key && *broker_key ? broker_key : s_config.broker_key,
        .events = events && *events ? events : s_config.events,
        .timeout = TTCLIENT_DEFAULT_TIMEOUT,
    };
    if (!ctl.broker || !*ctl.broker)
        ctl.broker = *s_config.broker ? s_config.broker : TTCLIENT_DEFAULT_ENDPOINT;
    if (!tt_name_valid(ctl.tenant))
        s_usage_error(&ctl, "TTFLEET_TENANT: invalid tenant '%s'", ctl.tenant);
    scan_t scan = {.argc = argc, .argv = argv, .i = 1};
    ctl.cmd = s_find_command(&ctl, &scan);
    return ctl.cmd->run ? ctl.cmd->run(&ctl, &scan) : s_env_ref(&ctl, &scan);
}
