/*
 * ttbroker: the pool's broker. Reads the config file (--config, CZMQ
 * zconfig format) and the flags, builds a broker_t and runs its loop until
 * SIGINT/SIGTERM. Everything else lives in the modules.
 *
 * A config file key is a flag's long name without the dashes, at the top
 * level or in a `broker` section; flags on the command line override it:
 *     broker
 *         clients = "tcp://127.0.0.1:5555"
 *         min-stop-interval = 20
 *         spread = true
 * Both go through s_apply, so a value is checked the same way either way.
 */
#include "broker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: ttbroker [options]\n"
            "\n"
            "The ttfleet broker: routes producers' env requests (7/MDP) to per-host workers,\n"
            "keeps envs, leases and allocations in <state>/broker.db.\n"
            "\n"
            "  --state DIR              state directory (default ttfleet-state/broker)\n"
            "  --clients EP             clients endpoint, 7/MDP (default tcp://127.0.0.1:5555)\n"
            "  --workers EP             workers endpoint (default tcp://127.0.0.1:5556)\n"
            "  --events EP              events PUB endpoint (default tcp://127.0.0.1:5557);\n"
            "                           under CURVE it takes admin keys only\n"
            "  --events-private EP      tenant-private events (ROUTER, TTE01): each client\n"
            "                           gets its own tenant's events, admins all (default off)\n"
            "  --audit-days N           keep audit rows N days, 1..36500 (default 90)\n"
            "  --blobs EP               image blob server endpoint (default tcp://127.0.0.1:*,\n"
            "                           a free loopback port; \"none\" for no image catalog)\n"
            "  --max-image-mib N        largest image a push may register (default 65536)\n"
            "  --max-tenant-image-mib N a tenant's private images and pushes in progress, in\n"
            "                           all (default 262144; pool images are not counted)\n"
            "  --blob-gc-grace SECS     a blob no image, VM or push names is deleted once it\n"
            "                           is this old (default 3600, 2..604800)\n"
            "  --blob-reserve-mib N     free space image pushes leave on the state filesystem\n"
            "                           for broker.db (default 1024; 0 = none)\n"
            "  --admin-tenant NAME      tenant with the admin role (default admin)\n"
            "  --default-engine NAME    engine when a request names none (default process)\n"
            "  --min-stop-interval SECS seconds between stop/start of one env (default 20)\n"
            "  --heartbeat-ms N         heartbeat interval (default 1000)\n"
            "  --liveness N             heartbeats missed before a host is down (default 5)\n"
            "  --worker-timeout-ms N    how long an op waits for workers (default 60000)\n"
            "  --request-ttl SECS       how long request ids are remembered (default 86400)\n"
            "  --lease-grace SECS       grace for leases that ran out while the broker was\n"
            "                           down (default 300)\n"
            "  --reap-per-tick N        envs expired per second at most (default 50)\n"
            "  --rate N                 changing requests per second per tenant (default 200;\n"
            "                           0 = no limit; admins are not limited): RATE_LIMITED beyond\n"
            "  --rate-burst N           how many at once (default 2000)\n"
            "  --cpu-overcommit R       cpu overcommit ratio (default 1.0)\n"
            "  --mem-overcommit R       mem overcommit ratio (default 1.0)\n"
            "  --disk-overcommit R      disk overcommit ratio (default 1.0)\n"
            "  --spread                 spread placement instead of best-fit\n"
            "  --curve-secret CERT      turn CURVE on with this broker certificate (CERT and\n"
            "                           CERT_secret, as made by `ttctl keygen`)\n"
            "  --admin-key CERT         bind this client cert as admin of --admin-tenant at\n"
            "                           start (the bootstrap; then `ttctl key add` binds keys)\n"
            "  --client-keys DIR        old deployments: client certs are NOT bindings here;\n"
            "                           their tenant/role metadata is ignored with a warning\n"
            "  --import-client-keys     bind each cert of --client-keys not yet bound by its\n"
            "                           own tenant/role metadata (once, after reading them)\n"
            "  --worker-keys DIR        worker public certs allowed to join as hosts\n"
            "  --insecure               allow plain TCP on a non-loopback endpoint\n"
            "  --raft-id N              broker HA: this broker's member id in the cluster\n"
            "  --raft-peers LIST        every member's Raft address: 1=HOST:PORT,2=HOST:PORT,...\n"
            "                           (3 or 5 members; this one included)\n"
            "  --raft-clients LIST      every member's clients endpoint, as clients reach it:\n"
            "                           1=tcp://HOST:PORT,... (named in NOT_LEADER replies)\n"
            "  --raft-workers LIST      every member's workers endpoint, as workers reach it\n"
            "  --raft-dir DIR           the Raft log and snapshots; with Raft, broker.db is\n"
            "                           rebuilt from them at every start\n"
            "  --raft-election-ms N     election timeout (default 1000; heartbeats every\n"
            "                           tenth of it)\n"
            "  --raft-snapshot-every N  snapshot broker.db every N entries, 4..10000000 (default\n"
            "                           1024; N/4 entries are kept behind it)\n"
            "  --raft-join              a new member: start with an empty --raft-dir and no\n"
            "                           configuration, and wait for the leader's `ttctl\n"
            "                           cluster add` (the --raft-* lists may name only this\n"
            "                           member; an even count is allowed)\n"
            "  --verbose                log every error reply and dropped message\n"
            "  --config FILE            read these options from FILE (zconfig: `key = value`\n"
            "                           lines, top level or in a `broker` section; a key is a\n"
            "                           flag without the dashes); flags override the file\n"
            "  --help                   this text\n");
}

static int s_int(const char *flag, const char *v, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max) {
        fprintf(stderr, "ttbroker: %s wants an integer in %lld..%lld, not '%s'\n", flag, min, max,
                v);
        return -1;
    }
    *out = x;
    return 0;
}

static int s_ratio(const char *flag, const char *v, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || !(x >= 0.1 && x <= 100.0)) {
        fprintf(stderr, "ttbroker: %s wants a ratio in 0.1..100, not '%s'\n", flag, v);
        return -1;
    }
    *out = x;
    return 0;
}

static int s_str(const char *flag, const char *v, char *dst, size_t len)
{
    if (!*v || strlen(v) >= len) {
        fprintf(stderr, "ttbroker: %s value is empty or too long\n", flag);
        return -1;
    }
    snprintf(dst, len, "%s", v);
    return 0;
}

enum {
    O_STATE = 256, O_CLIENTS, O_WORKERS, O_EVENTS, O_ADMIN, O_ENGINE, O_MINSTOP, O_HB,
    O_LIVE, O_WTO, O_TTL, O_GRACE, O_REAP, O_CPU, O_MEM, O_DISK, O_SPREAD, O_VERBOSE, O_HELP,
    O_CURVE, O_CKEYS, O_WKEYS, O_INSECURE, O_ADMINKEY, O_IMPORT, O_CONFIG, O_RATE, O_BURST,
    O_BLOBS, O_MAXIMG, O_EVPRIV, O_AUDITDAYS, O_MAXTIMG, O_GCGRACE, O_BLOBRES, O_RAFTID,
    O_RAFTPEERS, O_RAFTCLIENTS, O_RAFTWORKERS, O_RAFTDIR, O_RAFTELECT, O_RAFTSNAP, O_RAFTJOIN
};
static const struct option s_opts[] = {
    {"state", 1, 0, O_STATE},           {"clients", 1, 0, O_CLIENTS},
    {"workers", 1, 0, O_WORKERS},       {"events", 1, 0, O_EVENTS},
    {"events-private", 1, 0, O_EVPRIV}, {"audit-days", 1, 0, O_AUDITDAYS},
    {"admin-tenant", 1, 0, O_ADMIN},    {"default-engine", 1, 0, O_ENGINE},
    {"min-stop-interval", 1, 0, O_MINSTOP}, {"heartbeat-ms", 1, 0, O_HB},
    {"liveness", 1, 0, O_LIVE},         {"worker-timeout-ms", 1, 0, O_WTO},
    {"request-ttl", 1, 0, O_TTL},       {"lease-grace", 1, 0, O_GRACE},
    {"reap-per-tick", 1, 0, O_REAP},    {"cpu-overcommit", 1, 0, O_CPU},
    {"mem-overcommit", 1, 0, O_MEM},    {"disk-overcommit", 1, 0, O_DISK},
    {"spread", 0, 0, O_SPREAD},         {"verbose", 0, 0, O_VERBOSE},
    {"help", 0, 0, O_HELP},             {"curve-secret", 1, 0, O_CURVE},
    {"client-keys", 1, 0, O_CKEYS},     {"worker-keys", 1, 0, O_WKEYS},
    {"insecure", 0, 0, O_INSECURE},     {"config", 1, 0, O_CONFIG},
    {"blobs", 1, 0, O_BLOBS},           {"max-image-mib", 1, 0, O_MAXIMG},
    {"max-tenant-image-mib", 1, 0, O_MAXTIMG}, {"blob-gc-grace", 1, 0, O_GCGRACE},
    {"blob-reserve-mib", 1, 0, O_BLOBRES},
    {"admin-key", 1, 0, O_ADMINKEY},    {"import-client-keys", 0, 0, O_IMPORT},
    {"rate", 1, 0, O_RATE},             {"rate-burst", 1, 0, O_BURST},
    {"raft-id", 1, 0, O_RAFTID},        {"raft-peers", 1, 0, O_RAFTPEERS},
    {"raft-clients", 1, 0, O_RAFTCLIENTS}, {"raft-workers", 1, 0, O_RAFTWORKERS},
    {"raft-dir", 1, 0, O_RAFTDIR},      {"raft-election-ms", 1, 0, O_RAFTELECT},
    {"raft-snapshot-every", 1, 0, O_RAFTSNAP}, {"raft-join", 0, 0, O_RAFTJOIN},
    {0, 0, 0, 0}};

static int s_bool(const char *flag, const char *v, bool *out)
{
    if (!v || !*v || strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "yes") == 0)
        *out = true;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 || strcmp(v, "no") == 0)
        *out = false;
    else {
        fprintf(stderr, "ttbroker: %s wants true or false, not '%s'\n", flag, v);
        return -1;
    }
    return 0;
}

/* Apply one option (from a flag or the config file) to cfg. 0 / -1 (said why). */
static int s_apply(broker_config_t *cfg, int c, const char *flag, const char *val)
{
    int bad = 0;
    long long v;
    switch (c) {
    case O_STATE:
        bad = s_str(flag, val, cfg->state_dir, sizeof cfg->state_dir - 16);
        break;
    case O_CLIENTS:
        bad = s_str(flag, val, cfg->clients_ep, sizeof cfg->clients_ep);
        break;
    case O_WORKERS:
        bad = s_str(flag, val, cfg->workers_ep, sizeof cfg->workers_ep);
        break;
    case O_EVENTS:
        bad = s_str(flag, val, cfg->events_ep, sizeof cfg->events_ep);
        break;
    case O_ADMIN:
        if (!tt_name_valid(val)) {
            fprintf(stderr, "ttbroker: %s '%s' is not a valid name\n", flag, val);
            bad = 1;
        } else
            snprintf(cfg->admin_tenant, sizeof cfg->admin_tenant, "%s", val);
        break;
    case O_ENGINE:
        if (!tt_name_valid(val)) {
            fprintf(stderr, "ttbroker: %s '%s' is not a valid name\n", flag, val);
            bad = 1;
        } else
            snprintf(cfg->default_engine, sizeof cfg->default_engine, "%s", val);
        break;
    case O_MINSTOP:
        bad = s_int(flag, val, 0, 86400, &v);
        cfg->min_stop_interval = (int)v;
        break;
    case O_HB:
        bad = s_int(flag, val, 10, 60000, &v);
        cfg->heartbeat_ms = (int)v;
        break;
    case O_LIVE:
        bad = s_int(flag, val, 2, 100, &v);
        cfg->liveness = (int)v;
        break;
    case O_WTO:
        bad = s_int(flag, val, 100, 3600000, &v);
        cfg->worker_timeout_ms = (int)v;
        break;
    case O_TTL:
        bad = s_int(flag, val, 1, 30LL * 86400, &v);
        cfg->request_ttl = v;
        break;
    case O_GRACE:
        bad = s_int(flag, val, 0, 86400, &v);
        cfg->lease_grace = v;
        break;
    case O_BLOBS:
        bad = s_str(flag, val, cfg->blobs_ep, sizeof cfg->blobs_ep);
        if (!bad && strcmp(cfg->blobs_ep, "none") == 0)
            cfg->blobs_ep[0] = 0;
        break;
    case O_MAXIMG:
        bad = s_int(flag, val, 1, 1LL << 24, &v);
        cfg->max_image = (uint64_t)v << 20;
        break;
    case O_MAXTIMG:
        bad = s_int(flag, val, 1, 1LL << 26, &v);
        cfg->max_tenant_image = (uint64_t)v << 20;
        break;
    case O_GCGRACE:
        bad = s_int(flag, val, 2, 604800, &v);
        cfg->blob_gc_grace = v;
        break;
    case O_BLOBRES:
        bad = s_int(flag, val, 0, 1LL << 30, &v);
        cfg->blob_reserve = (uint64_t)v << 20;
        break;
    case O_EVPRIV:
        bad = s_str(flag, val, cfg->events_private_ep, sizeof cfg->events_private_ep);
        break;
    case O_AUDITDAYS:
        bad = s_int(flag, val, 1, 36500, &v);
        cfg->audit_days = (int)v;
        break;
    case O_REAP:
        bad = s_int(flag, val, 1, 100000, &v);
        cfg->reap_per_tick = (int)v;
        break;
    case O_RATE:
        bad = s_int(flag, val, 0, 1000000, &v);
        cfg->rate = (double)v;
        break;
    case O_BURST:
        bad = s_int(flag, val, 0, 10000000, &v);
        cfg->rate_burst = (int)v;
        break;
    case O_CPU:
        bad = s_ratio(flag, val, &cfg->cpu_ratio);
        break;
    case O_MEM:
        bad = s_ratio(flag, val, &cfg->mem_ratio);
        break;
    case O_DISK:
        bad = s_ratio(flag, val, &cfg->disk_ratio);
        break;
    case O_SPREAD:
        bad = s_bool(flag, val, &cfg->spread);
        break;
    case O_VERBOSE:
        bad = s_bool(flag, val, &cfg->verbose);
        break;
    case O_CURVE:
        bad = s_str(flag, val, cfg->curve_secret, sizeof cfg->curve_secret);
        break;
    case O_CKEYS:
        bad = s_str(flag, val, cfg->client_keys, sizeof cfg->client_keys);
        break;
    case O_WKEYS:
        bad = s_str(flag, val, cfg->worker_keys, sizeof cfg->worker_keys);
        break;
    case O_INSECURE:
        bad = s_bool(flag, val, &cfg->insecure);
        break;
    case O_ADMINKEY:
        bad = s_str(flag, val, cfg->admin_key, sizeof cfg->admin_key);
        break;
    case O_IMPORT:
        bad = s_bool(flag, val, &cfg->import_client_keys);
        break;
    case O_RAFTID:
        bad = s_int(flag, val, 1, 65535, &v);
        cfg->ha.id = (unsigned)v;
        break;
    case O_RAFTPEERS:
    case O_RAFTCLIENTS:
    case O_RAFTWORKERS: {
        char err[300];
        char what = c == O_RAFTPEERS ? 'r' : c == O_RAFTCLIENTS ? 'c' : 'w';
        if (ha_config_members(&cfg->ha, val, what, err, sizeof err)) {
            fprintf(stderr, "ttbroker: %s: %s\n", flag, err);
            bad = 1;
        }
        break;
    }
    case O_RAFTDIR:
        bad = s_str(flag, val, cfg->ha.dir, sizeof cfg->ha.dir);
        break;
    case O_RAFTELECT:
        bad = s_int(flag, val, 100, 60000, &v);
        cfg->ha.election_ms = (unsigned)v;
        cfg->ha.heartbeat_ms = (unsigned)v / 10;
        break;
    case O_RAFTJOIN:
        bad = s_bool(flag, val, &cfg->ha.join);
        break;
    case O_RAFTSNAP:
        bad = s_int(flag, val, 4, 10000000, &v);
        cfg->ha.snapshot_threshold = (unsigned)v;
        cfg->ha.snapshot_trailing = (unsigned)v / 4;
        break;
    default:
        return -1;
    }
    return bad ? -1 : 0;
}

/* Read FILE (zconfig) into cfg: keys at the top level or under `broker`. */
static int s_config_file(broker_config_t *cfg, const char *path)
{
    zconfig_t *root = zconfig_load(path);
    if (!root) {
        fprintf(stderr, "ttbroker: cannot read config file %s (zconfig format)\n", path);
        return -1;
    }
    int rc = 0;
    zconfig_t *sections[2] = {root, zconfig_locate(root, "broker")};
    for (int s = 0; s < 2 && rc == 0; s++)
        for (zconfig_t *k = sections[s] ? zconfig_child(sections[s]) : NULL; k && rc == 0;
             k = zconfig_next(k)) {
            const char *name = zconfig_name(k);
            if (s == 0 && strcmp(name, "broker") == 0)
                continue;
            const struct option *o = s_opts;
            while (o->name && strcmp(o->name, name) != 0)
                o++;
            char flag[600];
            snprintf(flag, sizeof flag, "%s: %s", path, name);
            if (!o->name || o->val == O_CONFIG || o->val == O_HELP) {
                fprintf(stderr, "ttbroker: %s is not a ttbroker option\n", flag);
                rc = -1;
                break;
            }
            const char *val = zconfig_value(k);
            if (s_apply(cfg, o->val, flag, val ? val : ""))
                rc = -1;
        }
    zconfig_destroy(&root);
    return rc;
}

/* Whether a Raft HOST:PORT names loopback: "localhost" or a dotted IPv4
 * address in 127.0.0.0/8. A name is resolved by the Raft transport, so a
 * name that merely starts with "127." (127.example.com) may be anywhere. */
static bool s_raft_loopback(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    char host[64];
    if (!colon || (size_t)(colon - addr) >= sizeof host)
        return false;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (strcmp(host, "localhost") == 0)
        return true;
    struct in_addr a;
    return inet_pton(AF_INET, host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* The --raft-* options go together, and the Raft transport has neither
 * encryption nor authentication: loopback only unless --insecure, and not
 * with CURVE, whose promise it would break. 0 / -1 (said why). */
static int s_raft_check(broker_config_t *cfg)
{
    ha_config_t *ha = &cfg->ha;
    if (!ha->id && !ha->dir[0] && ha->n_members == 0)
        return 0;
    char err[300];
    if (ha_config_check(ha, err, sizeof err)) {
        fprintf(stderr, "ttbroker: %s\n", err);
        return -1;
    }
    if (cfg->curve_secret[0]) {
        fprintf(stderr, "ttbroker: --raft-* cannot be combined with --curve-secret yet: the "
                        "Raft transport between brokers is not encrypted\n");
        return -1;
    }
    for (int i = 0; i < ha->n_members; i++)
        if (!s_raft_loopback(ha->members[i].raft) && !cfg->insecure) {
            fprintf(stderr, "ttbroker: Raft address %s of member %u is not loopback and the "
                            "Raft transport has no encryption or authentication: give "
                            "--insecure to accept that\n",
                    ha->members[i].raft, ha->members[i].id);
            return -1;
        }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--version") == 0) /* one line: ttbroker's version */
        return printf("ttbroker %s\n", TTFLEET_VERSION) < 0;
    broker_config_t cfg;
    broker_config_defaults(&cfg);
    /* the file first, so the flags override it */
    for (int i = 1; i < argc; i++) {
        const char *path = NULL;
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            path = argv[i] + 9;
        if (path && s_config_file(&cfg, path))
            return 2;
    }
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", s_opts, NULL)) != -1) {
        if (c == O_CONFIG)
            continue;
        if (c == O_HELP) {
            s_usage(stdout);
            return 0;
        }
        const struct option *o = s_opts;
        while (o->name && o->val != c)
            o++;
        if (!o->name) {
            fprintf(stderr, "ttbroker: unknown or incomplete option '%s'\n", argv[optind - 1]);
            s_usage(stderr);
            return 2;
        }
        char flag[64];
        snprintf(flag, sizeof flag, "--%s", o->name);
        if (s_apply(&cfg, c, flag, optarg))
            return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "ttbroker: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    if (s_raft_check(&cfg))
        return 2;
    zsys_init();
    zsys_set_logident("ttbroker");
    zsys_catch_interrupts();
    char err[512];
    broker_t *broker = broker_new(&cfg, err, sizeof err);
    if (!broker) {
        fprintf(stderr, "ttbroker: %s\n", err);
        return 1;
    }
    zsys_info("ttbroker ready: clients %s, workers %s, events %s, state %s", cfg.clients_ep,
              cfg.workers_ep, cfg.events_ep, cfg.state_dir);
    int rc = broker_run(broker);
    broker_destroy(&broker);
    zsys_info("ttbroker stopped");
    return rc ? 1 : 0;
}
