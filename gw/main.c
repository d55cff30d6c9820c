/*
 * ttgw: the HTTP gateway of ttfleet. Parses the command line, loads the
 * token file and the TLS files, refuses unsafe listen addresses, and runs
 * gw (gw.c) until SIGINT or SIGTERM.
 *
 * Plain HTTP carries bearer tokens in the clear, so ttgw listens on a
 * loopback address unless it has TLS (--tls-cert/--tls-key) or is told it
 * sits behind a TLS-terminating reverse proxy on the same host
 * (--behind-proxy; docs/GATEWAY.md shows the setup).
 */
#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gw.h"
#include "ttclient.h"
#include "ttproto.h"

#define TTGW_MAX_PEM (1024 * 1024)

static volatile sig_atomic_t s_signalled;

static void s_on_signal(int sig)
{
    s_signalled = sig;
}

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: ttgw --tokens FILE [options]\n"
            "\n"
            "HTTP gateway of ttfleet: a REST API over the broker's tt.env and tt.admin\n"
            "services, live events as Server-Sent Events, Prometheus metrics and a web\n"
            "dashboard. See docs/GATEWAY.md and docs/openapi.yaml.\n"
            "\n"
            "  --broker EP        broker clients endpoint (default " TTCLIENT_DEFAULT_ENDPOINT
            "),\n"
            "                     or EP1,EP2,EP3 for a broker cluster (follows NOT_LEADER)\n"
            "  --events EP        broker events endpoint (default tcp://127.0.0.1:5557), or a\n"
            "                     list: one per cluster member\n"
            "  --listen HOST:PORT address to serve HTTP on (default 127.0.0.1:8080; port 0\n"
            "                     picks a free one, printed at start)\n"
            "  --tokens FILE      bearer tokens, one `TOKEN TENANT ROLE` per line (role user\n"
            "                     or admin; a user line may not name the admin tenant);\n"
            "                     re-read when it changes\n"
            "  --key CERT         CURVE: the gateway's certificate (CERT and CERT_secret, from\n"
            "                     `ttctl keygen`)\n"
            "  --broker-key CERT  CURVE: the broker's public certificate\n"
            "  --admin-tenant T   tenant the broker treats as admin without CURVE, used for\n"
            "                     admin-role requests and /metrics (default admin); must be\n"
            "                     the broker's --admin-tenant: ttgw exits, or refuses token\n"
            "                     requests, while the broker says otherwise\n"
            "  --timeout MS       broker reply timeout per attempt (default 10000)\n"
            "  --retries N        attempts per request, same request id (default 3)\n"
            "  --max-body BYTES   largest request body (default 1048576)\n"
            "  --max-conns N      concurrent HTTP connections (default 64)\n"
            "  --max-conns-per-ip N  connections from one address (default half of\n"
            "                     --max-conns; behind a proxy every client has its address)\n"
            "  --request-timeout S  a request's headers and body must arrive within S\n"
            "                     seconds of its connection opening or the previous\n"
            "                     answer, or the connection is closed (default 15)\n"
            "  --max-streams N    concurrent /v1/events streams (default 16)\n"
            "  --max-tenant-streams N  event streams of one tenant (default 4)\n"
            "  --max-inflight N   API requests of one tenant waiting on the broker\n"
            "                     (default 16; more get 429)\n"
            "  --keepalive-ms MS  comment line on idle event streams (default 15000)\n"
            "  --event-log N      events kept for Last-Event-ID replay (default 10000)\n"
            "  --event-log-age S  ... for at most S seconds (default 3600)\n"
            "  --history-interval S  the dashboard's charts: a pool sample every S seconds,\n"
            "                     the last 2160 kept (default 10: 6 hours)\n"
            "  --tls-cert PEM     serve HTTPS with this certificate (chain) ...\n"
            "  --tls-key PEM      ... and this private key\n"
            "  --behind-proxy     allow plain HTTP on a non-loopback address, for a TLS\n"
            "                     reverse proxy in front (see docs/GATEWAY.md)\n"
            "  --help, --version\n");
}

static char *s_read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(TTGW_MAX_PEM + 1);
    size_t n = buf ? fread(buf, 1, TTGW_MAX_PEM + 1, f) : 0;
    fclose(f);
    if (!buf || n == 0 || n > TTGW_MAX_PEM) {
        snprintf(err, errlen, "%s is empty or over 1 MiB", path);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

static void s_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void s_die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ttgw: ");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n(ttgw --help for usage)\n");
    exit(2);
}

static long s_number(const char *opt, const char *v, long min, long max)
{
    char *end = NULL;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || errno || *end || n < min || n > max) {
        fprintf(stderr, "ttgw: %s needs a number in %ld..%ld\n", opt, min, max);
        exit(2);
    }
    return n;
}

#define S_ADMIN_CHECK_MS 2000

/* The broker's admin tenant must be ttgw's --admin-tenant: ttgw sends
 * admin-only ops as that tenant and refuses user tokens in it. On a
 * mismatch a user token in the broker's real admin tenant would act in it,
 * or the real admin would be refused. Asks pool_status as that tenant with
 * the admin role (the broker names its admin tenant only to an admin), one
 * bounded attempt: 1 when the broker answers that they differ (the reason
 * printed), 0 otherwise. A broker that does not answer yet is checked again
 * at every history sample (gw.c), and token requests are refused while
 * they differ. */
static int s_admin_disagrees(const gw_config_t *cfg)
{
    ttclient_t *c = ttclient_new(cfg->broker, cfg->admin_tenant);
    if (!c)
        return 0;
    ttclient_set_timeout(c,
                         cfg->timeout_ms < S_ADMIN_CHECK_MS ? cfg->timeout_ms : S_ADMIN_CHECK_MS);
    ttclient_set_retries(c, 1);
    if (cfg->key && ttclient_set_curve(c, cfg->key, cfg->broker_key) != 0) {
        ttclient_destroy(&c);
        return 0; /* said when the first request makes its client */
    }
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__Empty empty = TTFLEET__EMPTY__INIT;
    req.op_case = TTFLEET__REQUEST__OP_POOL_STATUS;
    req.pool_status = &empty;
    req.on_behalf_admin = true;
    Ttfleet__Reply *rep = NULL;
    if (ttclient_call(c, TT_SERVICE_ADMIN, &req, &rep) != 0) {
        fprintf(stderr,
                "ttgw: the broker at %s did not answer (%s); its admin tenant is checked at "
                "every history sample\n",
                cfg->broker, ttclient_error(c));
        ttclient_destroy(&c);
        return 0;
    }
    ttclient_destroy(&c);
    int bad = 0;
    if (rep->status == TTFLEET__STATUS__OK && rep->pool) {
        const char *theirs = rep->pool->admin_tenant ? rep->pool->admin_tenant : "";
        if (*theirs && strcmp(theirs, cfg->admin_tenant) != 0)
            fprintf(stderr,
                    "ttgw: --admin-tenant is '%s' but the broker's admin tenant is '%s': start "
                    "ttgw with --admin-tenant %s\n",
                    cfg->admin_tenant, theirs, theirs);
        else if (!*theirs)
            fprintf(stderr,
                    "ttgw: the broker does not treat tenant '%s' as admin: give ttgw the "
                    "broker's --admin-tenant\n",
                    cfg->admin_tenant);
        bad = strcmp(theirs, cfg->admin_tenant) != 0;
    } else if (rep->status == TTFLEET__STATUS__FORBIDDEN) {
        fprintf(stderr,
                "ttgw: the broker refused tenant '%s' the admin role (%s): --admin-tenant must "
                "be the broker's, and under CURVE ttgw's key needs the gateway role\n",
                cfg->admin_tenant, rep->message ? rep->message : "");
        bad = 1;
    }
    ttclient_reply_destroy(&rep);
    return bad;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) /* one line: ttgw's version */
        return printf("ttgw %s\n", TTFLEET_VERSION) < 0;
    gw_config_t cfg = {
        .broker = TTCLIENT_DEFAULT_ENDPOINT,
        .events = "tcp://127.0.0.1:5557",
        .admin_tenant = "admin",
        .timeout_ms = TTCLIENT_DEFAULT_TIMEOUT,
        .retries = TTCLIENT_DEFAULT_RETRIES,
        .max_body = 1024 * 1024,
        .max_conns = 64,
        .request_timeout_ms = 15000,
        .max_streams = 16,
        .max_tenant_streams = 4,
        .max_inflight = 16,
        .sse_keepalive_ms = 15000,
        .event_log_max = 10000,
        .event_log_age_s = 3600,
        .history_interval_s = 10,
    };
    const char *listen = "127.0.0.1:8080", *tokens_path = NULL, *tls_cert = NULL, *tls_key = NULL;
    bool behind_proxy = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define S_OPT(name) (strcmp(a, name) == 0 && (v ? (i++, 1) : (s_die("%s needs a value", name), 0)))
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else if (strcmp(a, "--version") == 0) {
            printf("ttgw %s\n", TTFLEET_VERSION);
            return 0;
        } else if (strcmp(a, "--behind-proxy") == 0) {
            behind_proxy = true;
        } else if (S_OPT("--broker")) {
            cfg.broker = v;
        } else if (S_OPT("--events")) {
            cfg.events = v;
        } else if (S_OPT("--listen")) {
            listen = v;
        } else if (S_OPT("--tokens")) {
            tokens_path = v;
        } else if (S_OPT("--key")) {
            cfg.key = v;
        } else if (S_OPT("--broker-key")) {
            cfg.broker_key = v;
        } else if (S_OPT("--admin-tenant")) {
            cfg.admin_tenant = v;
        } else if (S_OPT("--timeout")) {
            cfg.timeout_ms = (int)s_number(a, v, 1, 3600000);
        } else if (S_OPT("--retries")) {
            cfg.retries = (int)s_number(a, v, 1, 100);
        } else if (S_OPT("--max-body")) {
            cfg.max_body = (size_t)s_number(a, v, 1024, 64L * 1024 * 1024);
        } else if (S_OPT("--max-conns")) {
            cfg.max_conns = (unsigned)s_number(a, v, 2, 10000);
        } else if (S_OPT("--max-conns-per-ip")) {
            cfg.max_conns_per_ip = (unsigned)s_number(a, v, 1, 10000);
        } else if (S_OPT("--request-timeout")) {
            cfg.request_timeout_ms = (int)s_number(a, v, 1, 3600) * 1000;
        } else if (S_OPT("--max-streams")) {
            cfg.max_streams = (unsigned)s_number(a, v, 1, 10000);
        } else if (S_OPT("--max-tenant-streams")) {
            cfg.max_tenant_streams = (unsigned)s_number(a, v, 1, 10000);
        } else if (S_OPT("--max-inflight")) {
            cfg.max_inflight = (unsigned)s_number(a, v, 1, 10000);
        } else if (S_OPT("--keepalive-ms")) {
            cfg.sse_keepalive_ms = (int)s_number(a, v, 500, 3600000);
        } else if (S_OPT("--event-log")) {
            cfg.event_log_max = (unsigned)s_number(a, v, 1, 1000000);
        } else if (S_OPT("--event-log-age")) {
            cfg.event_log_age_s = (unsigned)s_number(a, v, 1, 7 * 86400);
        } else if (S_OPT("--history-interval")) {
            cfg.history_interval_s = (unsigned)s_number(a, v, 1, 3600);
        } else if (S_OPT("--tls-cert")) {
            tls_cert = v;
        } else if (S_OPT("--tls-key")) {
            tls_key = v;
        } else {
            s_die("unknown option '%s'", a);
        }
#undef S_OPT
    }
    if (cfg.max_conns_per_ip == 0)
        cfg.max_conns_per_ip = cfg.max_conns / 2;
    if (cfg.max_conns_per_ip > cfg.max_conns)
        s_die("--max-conns-per-ip %u is over --max-conns %u", cfg.max_conns_per_ip, cfg.max_conns);
    if (!tokens_path)
        s_die("%s", "--tokens FILE is required (lines TOKEN TENANT ROLE)");
    if (!tt_name_valid(cfg.admin_tenant))
        s_die("--admin-tenant '%s' is not a valid tenant name", cfg.admin_tenant);
    if (!strstr(cfg.broker, "://"))
        s_die("--broker '%s' is not a ZeroMQ endpoint such as tcp://127.0.0.1:5555", cfg.broker);
    if (strlen(cfg.events) >= 2048)
        s_die("%s", "--events is longer than 2047 bytes");
    if (!strstr(cfg.events, "://"))
        s_die("--events '%s' is not a ZeroMQ endpoint such as tcp://127.0.0.1:5557", cfg.events);
    if (!cfg.key != !cfg.broker_key)
        s_die("%s", "CURVE needs both --key and --broker-key");
    if (!tls_cert != !tls_key)
        s_die("%s", "TLS needs both --tls-cert and --tls-key");

    char host[64];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host)
        s_die("--listen '%s' must be HOST:PORT", listen);
    snprintf(host, sizeof host, "%.*s", (int)(colon - listen), listen);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof host, "127.0.0.1");
    int port = (int)s_number("--listen port", colon + 1, 0, 65535);
    bool loopback = strncmp(host, "127.", 4) == 0;
    if (!loopback && !tls_cert && !behind_proxy)
        s_die("refusing plain HTTP on %s, which is not loopback: give --tls-cert and --tls-key, "
              "or --behind-proxy with a TLS reverse proxy (docs/GATEWAY.md)",
              host);

    char err[512];
    char *cert_pem = NULL, *key_pem = NULL;
    if (tls_cert) {
        if (!(cert_pem = s_read_file(tls_cert, err, sizeof err)) ||
            !(key_pem = s_read_file(tls_key, err, sizeof err)))
            s_die("%s", err);
    }
    /* CURVE files are checked now, not at the first request */
    if (cfg.key) {
        ttclient_t *probe = ttclient_new(cfg.broker, cfg.admin_tenant);
        if (!probe || ttclient_set_curve(probe, cfg.key, cfg.broker_key) != 0)
            s_die("%s", probe ? ttclient_error(probe) : "cannot create a client");
        ttclient_destroy(&probe);
    }
    cfg.tokens = tokens_new(tokens_path, cfg.admin_tenant, err, sizeof err);
    if (!cfg.tokens)
        s_die("%s", err);

    /* our own signal handling; CZMQ set up once, before any thread */
    zsys_handler_set(NULL);
    zsys_init();
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = s_on_signal};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (s_admin_disagrees(&cfg)) {
        tokens_destroy(&cfg.tokens);
        free(cert_pem);
        free(key_pem);
        zsys_shutdown();
        return 1;
    }

    gw_t *gw = gw_start(&cfg, host, port, cert_pem, key_pem, err, sizeof err);
    if (!gw) {
        fprintf(stderr, "ttgw: %s\n", err);
        return 1;
    }
    fprintf(stderr, "ttgw: listening on %s://%s:%d (broker %s, events %s, %zu tokens)\n",
            tls_cert ? "https" : "http", host, gw_port(gw), cfg.broker, cfg.events,
            tokens_count(cfg.tokens));
    while (!s_signalled)
        usleep(200 * 1000); /* a signal also cuts the sleep short */
    fprintf(stderr, "ttgw: stopping\n");
    gw_stop(&gw);
    tokens_destroy(&cfg.tokens);
    free(cert_pem);
    free(key_pem);
    zsys_shutdown();
    return 0;
}
