/*
 * common.c: what every ttctl command does around its request: the client
 * (endpoint, CURVE keys, the connect check), the service of the command's
 * registry op, printing the reply with its exit code, and reading local
 * files with a bound.
 */
#include "ttctl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long the first connection to the broker may take before ttctl says
 * there is no broker at the endpoint (a refused or silent endpoint). */
#define CTL_CONNECT_TIMEOUT 1000

ttclient_t *ctl_client(ctl_t *ctl)
{
    if (!ctl->broker || !strstr(ctl->broker, "://"))
        ctl_usage_error(ctl, "broker endpoint '%s' is not a ZeroMQ endpoint such as %s",
                        ctl->broker ? ctl->broker : "", TTCLIENT_DEFAULT_ENDPOINT);
    bool key = ctl->key && *ctl->key, broker_key = ctl->broker_key && *ctl->broker_key;
    if (key != broker_key)
        ctl_usage_error(ctl, "CURVE needs both --key (this client's certificate) and --broker-key "
                             "(the broker's public certificate)");
    ttclient_t *client = ttclient_new(ctl->broker, ctl->tenant);
    if (!client) {
        fprintf(stderr, "ttctl: cannot create a client\n");
        exit(EXIT_TRANSPORT);
    }
    ttclient_set_timeout(client, ctl->timeout);
    ttclient_set_connect_timeout(client, CTL_CONNECT_TIMEOUT);
    if (key && ttclient_set_curve(client, ctl->key, ctl->broker_key) != 0)
        ctl_usage_error(ctl, "%s", ttclient_error(client));
    return client;
}

const char *ctl_service(const ctl_t *ctl)
{
    const tt_op_t *op = ctl->cmd && ctl->cmd->op ? tt_op_by_field(ctl->cmd->op) : NULL;
    return op ? op->service : TT_SERVICE_ENV;
}

/* Reports the outcome of one call, prints its result, frees both, and
 * returns the exit code. done_text is what is printed for an OK reply
 * without a result. */
int ctl_finish(ctl_t *ctl, ttclient_t **client_p, int rc, Ttfleet__Reply **reply_p,
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

/* A whole small file (at most max bytes) into a malloc'd buffer; a usage
 * error (exit) if it cannot be read or is larger. */
char *ctl_read_small(ctl_t *ctl, const char *what, const char *path, size_t max, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        ctl_usage_error(ctl, "%s %s: %s", what, path, strerror(errno));
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
        ctl_usage_error(ctl, "out of memory");
    if (n > max)
        ctl_usage_error(ctl, "%s %s is larger than %zu bytes", what, path, max);
    buf[n] = 0;
    *len = n;
    return buf;
}

/* Reads a local file of at most max bytes whole; exits with a message
 * otherwise. "-" is ttctl's stdin. */
uint8_t *ctl_slurp(ctl_t *ctl, const char *path, size_t max, size_t *len, const char *what)
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
        ctl_usage_error(ctl, "out of memory");
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

/* show, stop, pause, delete: one env name, nothing else. */
int ctl_env_ref(ctl_t *ctl, void *args)
{
    (void)args;
    const char *name = ctl_name(ctl, "env name", ctl->pos[0]);
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ctl->cmd->ref(client, name, &reply);
    char text[128];
    snprintf(text, sizeof text, "env %s %s", name, ctl->cmd->done);
    return ctl_finish(ctl, &client, rc, &reply, text, false);
}
