/*
 * config.c: ttctl's config file, read with zconfig.
 */
#include "ttctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
void ctl_config_load(ctl_config_t *config)
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
        {"broker", config->broker, sizeof config->broker, false, false},
        {"tenant", config->tenant, sizeof config->tenant, false, false},
        {"key", config->key, sizeof config->key, true, false},
        {"broker_key", config->broker_key, sizeof config->broker_key, true, false},
        {"events", config->events, sizeof config->events, false, false},
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
        if ((strcmp(name, "broker") == 0 || strcmp(name, "events") == 0) && !strstr(value, "://"))
            s_config_error(path, "%s '%s' is not a ZeroMQ endpoint such as %s", name, value,
                           TTCLIENT_DEFAULT_ENDPOINT);
    }
    zconfig_destroy(&root);
}
