/*
 * parse.c: ttctl's one command-line parser.
 *
 * Every command names its options in a table (ttctl.h, ctl_opt_t); this
 * file walks the arguments once against that table and the global options,
 * parses each value whole with its kind and range, and stores it where the
 * row says. Any mistake is a usage error (exit 2) that names the argument,
 * before anything is sent. The help of a command and the shell completion
 * are printed from the same rows, so they cannot drift from what is parsed.
 */
#include "ttctl.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void ctl_usage_error(ctl_t *ctl, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ttctl: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    if (ctl && ctl->cmd) {
        fprintf(stderr, "usage: ttctl [global options] ");
        ctl_print_synopsis(stderr, ctl->cmd);
        fprintf(stderr, "(see 'ttctl %s%s%s --help')\n", ctl->cmd->group ? ctl->cmd->group : "",
                ctl->cmd->group ? " " : "", ctl->cmd->verb);
    } else
        fprintf(stderr, "(see 'ttctl --help')\n");
    exit(EXIT_USAGE);
}

/* All of text as a decimal number; false if it is not one or overflows. */
static bool s_decimal(const char *text, size_t len, uint64_t *out)
{
    uint64_t value = 0;
    if (len == 0)
        return false;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        unsigned digit = (unsigned)(text[i] - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *out = value;
    return true;
}

uint64_t ctl_number(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max)
{
    uint64_t value = 0;
    if (!s_decimal(text, strlen(text), &value) || value < min || value > max)
        ctl_usage_error(ctl, "%s: '%s' is not a whole number in %llu..%llu", what, text,
                        (unsigned long long)min, (unsigned long long)max);
    return value;
}

#define S_DURATION_MAX_MS (100ULL * 365 * 86400 * 1000) /* a century */

bool ctl_duration_parse(const char *text, uint64_t unit_ms, uint64_t *out)
{
    static const struct {
        const char *suffix;
        uint64_t ms;
    } units[] = {{"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000}};
    uint64_t total = 0;
    const char *p = text;
    if (!*p)
        return false;
    while (*p) {
        const char *d = p;
        while (*p >= '0' && *p <= '9')
            p++;
        uint64_t n;
        if (!s_decimal(d, (size_t)(p - d), &n))
            return false;
        uint64_t mul = 0;
        if (!*p) {
            if (d != text) /* "1h30": a bare number only alone */
                return false;
            mul = unit_ms;
        } else
            for (size_t u = 0; u < sizeof units / sizeof *units; u++) {
                size_t k = strlen(units[u].suffix);
                /* "ms" only where milliseconds are the unit of the value */
                if (strncmp(p, units[u].suffix, k) == 0 && !(p[k] >= 'a' && p[k] <= 'z') &&
                    (units[u].ms % unit_ms == 0)) {
                    mul = units[u].ms;
                    p += k;
                    break;
                }
            }
        if (!mul || n > S_DURATION_MAX_MS / mul || total + n * mul > S_DURATION_MAX_MS)
            return false;
        total += n * mul;
    }
    *out = total / unit_ms;
    return true;
}

uint64_t ctl_duration(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max)
{
    uint64_t v;
    if (!ctl_duration_parse(text, 1000, &v) || v < min || v > max)
        ctl_usage_error(ctl,
                        "%s: '%s' is not a duration in %llu..%llu seconds (seconds, or a "
                        "number with s, m, h or d: 90m, 2h, 1d, 1h30m)",
                        what, text, (unsigned long long)min, (unsigned long long)max);
    return v;
}

static uint64_t s_ms(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max)
{
    uint64_t v;
    if (!ctl_duration_parse(text, 1, &v) || v < min || v > max)
        ctl_usage_error(ctl,
                        "%s: '%s' is not a time in %llu..%llu milliseconds (milliseconds, or a "
                        "number with ms, s, m or h: 500ms, 5s, 2m)",
                        what, text, (unsigned long long)min, (unsigned long long)max);
    return v;
}

/* MiB: a whole number, or a number with M, G or T (also MiB, GiB, TiB). */
static uint64_t s_size(ctl_t *ctl, const char *what, const char *text, uint64_t min, uint64_t max)
{
    size_t n = 0;
    while (text[n] >= '0' && text[n] <= '9')
        n++;
    const char *unit = text + n;
    uint64_t mul = 0, v = 0;
    if (!*unit)
        mul = 1;
    else if (!strcmp(unit, "M") || !strcmp(unit, "MiB"))
        mul = 1;
    else if (!strcmp(unit, "G") || !strcmp(unit, "GiB"))
        mul = 1024;
    else if (!strcmp(unit, "T") || !strcmp(unit, "TiB"))
        mul = 1024 * 1024;
    if (!mul || !s_decimal(text, n, &v) || v > max / mul || v * mul < min)
        ctl_usage_error(ctl,
                        "%s: '%s' is not a size in %llu..%llu MiB (MiB, or a number with M, G "
                        "or T: 512, 2G)",
                        what, text, (unsigned long long)min, (unsigned long long)max);
    return v * mul;
}

const char *ctl_name(ctl_t *ctl, const char *what, const char *text)
{
    if (!tt_name_valid(text))
        ctl_usage_error(ctl,
                        "%s: invalid name '%s': use 1..%d of [A-Za-z0-9._-], not starting "
                        "with '.'",
                        what, text, TT_MAX_NAME);
    return text;
}

/* Whether value is one of "a|b|c". */
static bool s_choice(const char *choices, const char *value)
{
    size_t n = strlen(value);
    for (const char *p = choices; p && *p;) {
        const char *bar = strchr(p, '|');
        size_t k = bar ? (size_t)(bar - p) : strlen(p);
        if (k == n && strncmp(p, value, n) == 0)
            return true;
        p = bar ? bar + 1 : NULL;
    }
    return false;
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

static const ctl_opt_t *s_find(const ctl_opt_t *opts, const char *name)
{
    for (size_t i = 0; opts && opts[i].name; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/* One option: its name (aliases -h, -i, -o resolved) and an inline
 * "=value", looked up in the command's table, then in the global one; its
 * value parsed and stored. Returns the index of the next argument. */
static int s_option(ctl_t *ctl, void *args, int argc, char **argv, int i)
{
    const char *arg = argv[i++];
    if (strcmp(arg, "-h") == 0)
        arg = "--help";
    else if (strcmp(arg, "-i") == 0) /* env ssh -i KEY, as ssh spells it */
        arg = "--identity";
    else if (strcmp(arg, "-o") == 0)
        arg = "--output";
    else if (strcmp(arg, "-r") == 0) /* env cp -r, as cp spells it */
        arg = "--recursive";
    if (arg[1] != '-')
        ctl_usage_error(ctl, "unknown option '%s' (options are spelled --name)", arg);
    char name[48];
    const char *eq = strchr(arg, '=');
    size_t n = eq ? (size_t)(eq - arg) : strlen(arg);
    if (n >= sizeof name)
        ctl_usage_error(ctl, "unknown option '%.60s'", arg);
    memcpy(name, arg, n);
    name[n] = '\0';
    const char *value = eq ? eq + 1 : NULL;
    const ctl_opt_t *o = ctl->cmd ? s_find(ctl->cmd->opts, name) : NULL;
    char *base = args;
    if (!o) {
        o = s_find(ctl_global_opts, name);
        base = (char *)ctl;
    }
    if (!o)
        ctl_usage_error(ctl, "unknown option '%s'", name);
    void *dst = base + o->off;
    bool takes =
        o->kind != CTL_FLAG && o->kind != CTL_OPTIONAL && !(o->kind == CTL_CALL && o->call_flag);
    if (!takes && value && o->kind != CTL_OPTIONAL)
        ctl_usage_error(ctl, "%s takes no value", name);
    if (takes && !value) {
        if (i >= argc)
            ctl_usage_error(ctl, "%s needs a value", name);
        value = argv[i++];
    }
    switch (o->kind) {
    case CTL_FLAG:
        *(bool *)dst = true;
        break;
    case CTL_INT:
        *(uint64_t *)dst = ctl_number(ctl, name, value, o->min, o->max);
        break;
    case CTL_SIZE:
        *(uint64_t *)dst = s_size(ctl, name, value, o->min, o->max);
        break;
    case CTL_DURATION:
        *(uint64_t *)dst = ctl_duration(ctl, name, value, o->min, o->max);
        break;
    case CTL_MS:
        *(uint64_t *)dst = s_ms(ctl, name, value, o->min, o->max);
        break;
    case CTL_STRING:
        *(const char **)dst = value;
        break;
    case CTL_NAME:
        *(const char **)dst = ctl_name(ctl, name, value);
        break;
    case CTL_CHOICE:
        if (!s_choice(o->choices, value))
            ctl_usage_error(ctl, "%s takes %s, not '%s'", name, o->choices, value);
        *(const char **)dst = value;
        break;
    case CTL_OPTIONAL:
        /* "--wait ready", "--wait=ready", or "--wait" alone */
        if (!value && i < argc && s_choice(o->choices, argv[i]))
            value = argv[i++];
        if (value && !s_choice(o->choices, value))
            ctl_usage_error(ctl, "%s takes %s, not '%s'", name, o->choices, value);
        *(const char **)dst = value ? value : "";
        break;
    case CTL_CALL:
        o->call(ctl, base, value);
        break;
    }
    return i;
}

void *ctl_parse(ctl_t *ctl, int argc, char **argv, int i)
{
    const ctl_cmd_t *cmd = ctl->cmd;
    void *args = calloc(1, cmd->args_size ? cmd->args_size : 1);
    ctl->pos = calloc((size_t)argc + 1, sizeof *ctl->pos);
    if (!args || !ctl->pos)
        ctl_usage_error(ctl, "out of memory");
    bool dd = false;
    while (i < argc) {
        const char *arg = argv[i];
        if (!dd && strcmp(arg, "--") == 0) {
            dd = true;
            ctl->n_pos_opt = ctl->n_pos;
            i++;
            continue;
        }
        if (dd || arg[0] != '-' || arg[1] == '\0' || s_is_key_text(arg)) {
            if (cmd->max_pos >= 0 && ctl->n_pos >= cmd->max_pos)
                ctl_usage_error(ctl, "unexpected argument '%s'", arg);
            ctl->pos[ctl->n_pos++] = arg;
            i++;
            continue;
        }
        i = s_option(ctl, args, argc, argv, i);
    }
    if (!dd)
        ctl->n_pos_opt = ctl->n_pos;
    if (ctl->n_pos < cmd->min_pos)
        ctl_usage_error(ctl, "%s", cmd->need ? cmd->need : "missing arguments");
    return args;
}

static void s_option_synopsis(FILE *out, const ctl_opt_t *o)
{
    if (o->kind == CTL_OPTIONAL)
        fprintf(out, " [%s [%s]]", o->name, o->choices);
    else if (o->meta)
        fprintf(out, " [%s %s]", o->name, o->meta);
    else
        fprintf(out, " [%s]", o->name);
}

void ctl_print_synopsis(FILE *out, const ctl_cmd_t *cmd)
{
    fprintf(out, "%s%s%s%s%s", cmd->group ? cmd->group : "", cmd->group ? " " : "", cmd->verb,
            cmd->args ? " " : "", cmd->args ? cmd->args : "");
    for (size_t i = 0; cmd->opts && cmd->opts[i].name; i++)
        s_option_synopsis(out, &cmd->opts[i]);
    fputc('\n', out);
}

static void s_options_help(FILE *out, const ctl_opt_t *opts)
{
    for (size_t i = 0; opts && opts[i].name; i++) {
        const ctl_opt_t *o = &opts[i];
        char head[64];
        if (o->kind == CTL_OPTIONAL)
            snprintf(head, sizeof head, "%s [%s]", o->name, o->choices);
        else
            snprintf(head, sizeof head, "%s%s%s", o->name, o->meta ? " " : "",
                     o->meta ? o->meta : "");
        fprintf(out, "  %-20s", head);
        if (strlen(head) > 20)
            fprintf(out, "\n  %-20s", "");
        /* the help may span lines: indent the ones after the first */
        for (const char *p = o->help ? o->help : ""; *p; p++) {
            fputc(*p, out);
            if (*p == '\n' && p[1])
                fprintf(out, "  %-20s", "");
        }
        fputc('\n', out);
    }
}

void ctl_print_command_help(FILE *out, const ctl_cmd_t *cmd)
{
    fprintf(out, "usage: ttctl [global options] ");
    ctl_print_synopsis(out, cmd);
    fprintf(out, "\n%s", cmd->help);
    if (cmd->opts && cmd->opts[0].name) {
        fprintf(out, "options:\n");
        s_options_help(out, cmd->opts);
    }
    fprintf(out, "%s", ctl_global_help);
}

int ctl_option(ctl_t *ctl, void *args, int argc, char **argv, int i)
{
    return s_option(ctl, args, argc, argv, i);
}
