/*
 * ttctl: the command-line client of ttfleet, for producers and admins.
 *
 *   ttctl [--broker EP] [--tenant T] [-o json|yaml|table|wide] [--timeout MS] GROUP VERB ARGS...
 *
 * Every command is parsed and validated completely before anything is sent
 * (parse.c, against the command's option table). Then one request goes out
 * through libttclient, and the reply is printed by ttctl_print as a table
 * or, with --output json (--json) or yaml, as a document for scripts.
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
 * TTFLEET_BROKER_KEY, TTFLEET_EVENTS), then the config file (config.c).
 */
#include "ttctl.h"

#include <stdlib.h>
#include <string.h>

const char *ctl_global_help =
    "global options (before or after the command words):\n"
    "  --broker EP     broker clients endpoint (env TTFLEET_BROKER, "
    "default " TTCLIENT_DEFAULT_ENDPOINT "); a broker cluster:\n"
    "                  EP1,EP2,EP3 (NOT_LEADER is followed, same request id)\n"
    "  --tenant T      tenant to act as (env TTFLEET_TENANT, default " TTCLIENT_DEFAULT_TENANT ")\n"
    "  --key CERT      CURVE: this client's certificate, CERT and CERT_secret as\n"
    "                  'ttctl keygen' writes them (env TTFLEET_KEY)\n"
    "  --broker-key CERT  CURVE: the broker's public certificate (env TTFLEET_BROKER_KEY)\n"
    "  -o, --output F  json, yaml, table (default) or wide (more columns)\n"
    "  --json          the same as --output json\n"
    "  --timeout MS    wait per attempt, 1..3600000 ms or 5s, 2m (default 10000; 3 attempts);\n"
    "                  an endpoint where nothing accepts a connection fails after about 1 s\n"
    "  --help          this help; 'ttctl GROUP VERB --help' for one command\n"
    "  --version       ttctl's version\n"
    "config file: $TTFLEET_CONFIG or ~/.config/ttfleet/ttctl.conf, ZPL (zconfig) lines 'name = "
    "value'\n"
    "  with names broker, tenant, key, broker_key, events; flags and env vars override it\n"
    "exit codes: 0 OK, 1 error status from the broker, 2 usage error, 3 no reply\n";

static void s_json(ctl_t *ctl, void *args, const char *value)
{
    (void)args, (void)value;
    ctl->output = CTL_OUT_JSON;
    ctl->json = true;
}

static void s_output(ctl_t *ctl, void *args, const char *value)
{
    (void)args;
    static const char *names[] = {"table", "wide", "json", "yaml"};
    for (int i = 0; i < 4; i++)
        if (strcmp(value, names[i]) == 0) {
            ctl->output = (ctl_output_t)i;
            ctl->json = ctl->output == CTL_OUT_JSON || ctl->output == CTL_OUT_YAML;
            print_set_format(ctl->output == CTL_OUT_YAML, ctl->output == CTL_OUT_WIDE);
            return;
        }
    ctl_usage_error(ctl, "--output takes json, yaml, table or wide, not '%s'", value);
}

static void s_timeout(ctl_t *ctl, void *args, const char *value)
{
    (void)args;
    uint64_t ms;
    if (!ctl_duration_parse(value, 1, &ms) || ms < 1 || ms > TTCTL_MAX_TIMEOUT)
        ctl_usage_error(ctl, "--timeout: '%s' is not a time in 1..%d milliseconds (or 5s, 2m)",
                        value, TTCTL_MAX_TIMEOUT);
    ctl->timeout = (int)ms;
}

static void s_help(ctl_t *ctl, void *args, const char *value)
{
    (void)args, (void)value;
    if (!ctl->cmd)
        return; /* ctl_find_command prints the list */
    ctl_print_command_help(stdout, ctl->cmd);
    exit(0);
}

static void s_version(ctl_t *ctl, void *args, const char *value)
{
    (void)ctl, (void)args, (void)value;
    printf("ttctl %s\n", TTFLEET_VERSION);
    exit(0);
}

#define S_GLOBAL(n, k, field, m, h)                                                                \
    {                                                                                              \
        n, k, offsetof(ctl_t, field), 0, 0, m, h, NULL, NULL, false                                \
    }
#define S_GLOBAL_CALL(n, fn, m, flag, ch)                                                          \
    {                                                                                              \
        n, CTL_CALL, 0, 0, 0, m, NULL, fn, ch, flag                                                \
    }
const ctl_opt_t ctl_global_opts[] = {
    S_GLOBAL("--broker", CTL_STRING, broker, "EP", NULL),
    S_GLOBAL("--tenant", CTL_NAME, tenant, "T", NULL),
    S_GLOBAL("--key", CTL_STRING, key, "CERT", NULL),
    S_GLOBAL("--broker-key", CTL_STRING, broker_key, "CERT", NULL),
    S_GLOBAL_CALL("--json", s_json, NULL, true, NULL),
    S_GLOBAL_CALL("--output", s_output, "FORMAT", false, "json|yaml|table|wide"),
    S_GLOBAL_CALL("--timeout", s_timeout, "MS", false, NULL),
    S_GLOBAL_CALL("--help", s_help, NULL, true, NULL),
    S_GLOBAL_CALL("--version", s_version, NULL, true, NULL),
    CTL_OPT_END,
};

const ctl_cmd_t *const ctl_groups[] = {ctl_env_cmds,   ctl_guest_cmds, ctl_host_cmds,
                                       ctl_key_cmds,   ctl_image_cmds, ctl_admission_cmds,
                                       ctl_watch_cmds, ctl_misc_cmds,  ctl_cluster_cmds, NULL};

#define FOR_EACH_CMD(c)                                                                            \
    for (const ctl_cmd_t *const *c##_g = ctl_groups; *c##_g; c##_g++)                              \
        for (const ctl_cmd_t *c = *c##_g; c->verb; c++)

static void s_print_usage(FILE *out)
{
    fprintf(out, "usage: ttctl [global options] COMMAND ...\n\ncommands:\n");
    FOR_EACH_CMD(c)
    {
        fprintf(out, "  ");
        ctl_print_synopsis(out, c);
    }
    fprintf(out, "\n%s", ctl_global_help);
}

/* Finds the command named by the words at argv[*i_p...], handling the
 * global options in front of and between them. */
static const ctl_cmd_t *s_find_command(ctl_t *ctl, int argc, char **argv, int *i_p)
{
    const char *words[2] = {NULL, NULL};
    int nwords = 0, i = *i_p;
    bool help = false;
    while (nwords < 2 && i < argc) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            if (nwords == 0) {
                s_print_usage(stdout);
                exit(0);
            }
            help = true; /* "ttctl env --help": the group's commands */
            break;
        }
        if (arg[0] == '-' && arg[1] && strcmp(arg, "--") != 0) {
            i = ctl_option(ctl, NULL, argc, argv, i);
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            i++;
            continue;
        }
        words[nwords++] = arg;
        i++;
        FOR_EACH_CMD(c)
        {
            if ((nwords == 1 && !c->group && strcmp(c->verb, words[0]) == 0) ||
                (nwords == 2 && c->group && strcmp(c->group, words[0]) == 0 &&
                 strcmp(c->verb, words[1]) == 0)) {
                *i_p = i;
                return c;
            }
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
    FOR_EACH_CMD(c) group |= c->group && strcmp(c->group, words[0]) == 0;
    if (!group)
        ctl_usage_error(ctl, "unknown command '%s'", words[0]);
    FILE *out = help && !words[1] ? stdout : stderr;
    if (words[1])
        fprintf(out, "ttctl: unknown command '%s %s'\n", words[0], words[1]);
    else if (!help)
        fprintf(out, "ttctl: '%s' needs a command\n", words[0]);
    fprintf(out, "usage:\n");
    FOR_EACH_CMD(c)
    {
        if (c->group && strcmp(c->group, words[0]) == 0) {
            fprintf(out, "  ttctl ");
            ctl_print_synopsis(out, c);
        }
    }
    exit(out == stdout ? 0 : EXIT_USAGE);
}

/* The words and options of every command as a bash completion function;
 * zsh loads the same through bashcompinit. */
static void s_completion_bash(FILE *out)
{
    fprintf(out,
            "# ttctl completion, generated by 'ttctl completion' from its command tables\n"
            "_ttctl() {\n"
            "    local cur=\"${COMP_WORDS[COMP_CWORD]}\" w=() i\n"
            "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
            "        case \"${COMP_WORDS[i]}\" in -*) ;; *) w+=(\"${COMP_WORDS[i]}\") ;; esac\n"
            "    done\n"
            "    local globals=\"");
    for (const ctl_opt_t *o = ctl_global_opts; o->name; o++)
        fprintf(out, "%s%s", o == ctl_global_opts ? "" : " ", o->name);
    fprintf(out, "\"\n    local words opts=\"\"\n    case \"${#w[@]}\" in\n    0) words=\"");
    const char *last = "";
    bool first = true;
    FOR_EACH_CMD(c)
    {
        const char *word = c->group ? c->group : c->verb;
        if (strcmp(word, last) != 0) {
            fprintf(out, "%s%s", first ? "" : " ", word);
            first = false;
        }
        last = word;
    }
    fprintf(out, " completion\" ;;\n    *) case \"${w[0]}\" in\n");
    /* the verbs of each group */
    last = "";
    FOR_EACH_CMD(c)
    {
        if (!c->group || strcmp(c->group, last) == 0)
            continue;
        last = c->group;
        fprintf(out, "        %s) words=\"", c->group);
        bool f = true;
        FOR_EACH_CMD(v)
        {
            if (v->group && strcmp(v->group, c->group) == 0) {
                fprintf(out, "%s%s", f ? "" : " ", v->verb);
                f = false;
            }
        }
        fprintf(out, "\" ;;\n");
    }
    fprintf(out, "        completion) words=\"bash zsh\" ;;\n        *) words=\"\" ;;\n"
                 "        esac ;;\n    esac\n"
                 "    case \"${w[0]} ${w[1]}\" in\n");
    FOR_EACH_CMD(c)
    {
        if (!c->opts || !c->opts[0].name)
            continue;
        fprintf(out, "    \"%s%s%s\"%s) opts=\"", c->group ? c->group : c->verb,
                c->group ? " " : "", c->group ? c->verb : "", c->group ? "" : "*");
        for (const ctl_opt_t *o = c->opts; o->name; o++)
            fprintf(out, "%s%s", o == c->opts ? "" : " ", o->name);
        fprintf(out, "\" ;;\n");
    }
    fprintf(out, "    esac\n"
                 "    if [[ \"$cur\" == -* ]]; then\n"
                 "        COMPREPLY=($(compgen -W \"$opts $globals\" -- \"$cur\"))\n"
                 "    elif [ \"${#w[@]}\" -le 1 ] && [ -n \"$words\" ]; then\n"
                 "        COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n"
                 "    else\n"
                 "        COMPREPLY=($(compgen -f -- \"$cur\"))\n"
                 "    fi\n"
                 "}\n"
                 "complete -F _ttctl ttctl\n");
}

int ctl_completion(ctl_t *ctl, const char *shell)
{
    if (strcmp(shell, "zsh") == 0)
        printf("# zsh: the bash completion through bashcompinit\n"
               "autoload -U +X bashcompinit && bashcompinit\n");
    else if (strcmp(shell, "bash") != 0)
        ctl_usage_error(ctl, "completion: give bash or zsh, not '%s'", shell);
    s_completion_bash(stdout);
    return fflush(stdout) == 0 ? 0 : EXIT_STATUS;
}

int main(int argc, char **argv)
{
    /* ttctl is short-lived: Ctrl-C should end it at once, not set a flag. */
    zsys_handler_set(NULL);
    /* config file, then the environment over it; the flags come last */
    static ctl_config_t config;
    ctl_config_load(&config);
    const char *tenant = getenv("TTFLEET_TENANT");
    const char *key = getenv("TTFLEET_KEY"), *broker_key = getenv("TTFLEET_BROKER_KEY");
    const char *events = getenv("TTFLEET_EVENTS");
    ctl_t ctl = {
        .broker = getenv("TTFLEET_BROKER"),
        .tenant = tenant && *tenant ? tenant
                  : *config.tenant  ? config.tenant
                                    : TTCLIENT_DEFAULT_TENANT,
        .key = key && *key ? key : config.key,
        .broker_key = broker_key && *broker_key ? broker_key : config.broker_key,
        .events = events && *events ? events : config.events,
        .timeout = TTCLIENT_DEFAULT_TIMEOUT,
    };
    if (!ctl.broker || !*ctl.broker)
        ctl.broker = *config.broker ? config.broker : TTCLIENT_DEFAULT_ENDPOINT;
    if (!tt_name_valid(ctl.tenant))
        ctl_usage_error(&ctl, "TTFLEET_TENANT: invalid tenant '%s'", ctl.tenant);
    int i = 1;
    if (argc >= 2 && strcmp(argv[1], "completion") == 0) {
        if (argc != 3)
            ctl_usage_error(&ctl, "usage: ttctl completion bash|zsh");
        return ctl_completion(&ctl, argv[2]);
    }
    ctl.cmd = s_find_command(&ctl, argc, argv, &i);
    void *args = ctl_parse(&ctl, argc, argv, i);
    int rc = ctl.cmd->run(&ctl, args);
    free(args);
    free(ctl.pos);
    return rc;
}
