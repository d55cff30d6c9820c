/*
 * misc.c: status, mmi and keygen.
 */
#include "ttctl.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

/* The pool's totals; in a broker cluster also every member as it sees
 * itself (asked directly, "unreachable" when it does not answer). */
static int s_status(ctl_t *ctl, void *args)
{
    (void)args;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *cl = NULL;
    /* whoever answers first (a follower too) lists the members; a dead
     * endpoint fails the call and the client moves to the next */
    int tries = 1;
    for (const char *p = ctl->broker; *p; p++)
        tries += *p == ',';
    int crc = -1;
    for (int t = 0; t < tries && tries <= 16 && crc != 0; t++)
        crc = ttclient_cluster_status(client, &cl);
    if (crc != 0) /* no broker answered: say so at once */
        return ctl_finish(ctl, &client, crc, &cl, "status", false);
    if (cl->status != TTFLEET__STATUS__OK || cl->result_case != TTFLEET__REPLY__RESULT_CLUSTER ||
        cl->cluster->n_members == 0) {
        ttclient_reply_destroy(&cl);
        Ttfleet__Reply *reply = NULL;
        int rc = ttclient_pool_status(client, &reply);
        return ctl_finish(ctl, &client, rc, &reply, "status", false);
    }
    const Ttfleet__ClusterStatus *cs = cl->cluster;
    int n = (int)cs->n_members;
    print_member_t m[16];
    Ttfleet__Reply *views[16] = {NULL};
    if (n > 16)
        n = 16;
    const Ttfleet__ClusterStatus *leader = NULL;
    for (int i = 0; i < n; i++) {
        m[i] = (print_member_t){cs->members[i]->id, cs->members[i]->clients, NULL, 0,
                                cs->members[i]->voter};
        if (!m[i].endpoint || !*m[i].endpoint)
            continue;
        ttclient_t *one = ttclient_new(m[i].endpoint, ctl->tenant);
        if (!one)
            continue;
        ttclient_set_timeout(one, 1000);
        ttclient_set_connect_timeout(one, 1000);
        ttclient_set_retries(one, 0);
        if (ttclient_cluster_status(one, &views[i]) == 0 &&
            views[i]->status == TTFLEET__STATUS__OK &&
            views[i]->result_case == TTFLEET__REPLY__RESULT_CLUSTER) {
            m[i].view = views[i]->cluster;
            if (strcmp(m[i].view->role, "leader") == 0)
                leader = m[i].view;
        }
        ttclient_destroy(&one);
    }
    for (int i = 0; leader && i < n; i++)
        for (size_t k = 0; k < leader->n_members; k++)
            if (leader->members[k]->id == m[i].id)
                m[i].match_index = leader->members[k]->match_index;
    Ttfleet__Reply *pool = NULL;
    int rc = ttclient_pool_status(client, &pool);
    int code = 0;
    if (rc != 0) {
        fprintf(stderr, "ttctl: %s\n", ttclient_error(client));
        code = EXIT_TRANSPORT;
    } else if (pool->status != TTFLEET__STATUS__OK || !pool->pool) {
        fprintf(stderr, "ttctl: %s: %s\n", tt_status_name(pool->status),
                pool->message && *pool->message ? pool->message : "(no message)");
        code = EXIT_STATUS;
    }
    print_status(stdout, code ? NULL : pool->pool, m, n, ctl->json);
    for (int i = 0; i < n; i++)
        ttclient_reply_destroy(&views[i]);
    ttclient_reply_destroy(&cl);
    ttclient_reply_destroy(&pool);
    ttclient_destroy(&client);
    return code;
}

static int s_mmi(ctl_t *ctl, void *args)
{
    (void)args;
    const char *service = ctl->pos[0];
    size_t n = strlen(service);
    if (n == 0 || n > 255)
        ctl_usage_error(ctl, "service name must be 1..255 characters");
    for (const char *p = service; *p; p++)
        if (*p <= ' ' || *p > '~')
            ctl_usage_error(ctl, "service name must be printable ASCII without spaces");
    ttclient_t *client = ctl_client(ctl);
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

typedef struct {
    const char *out, *tenant, *role, *host;
} keygen_args_t;

static const ctl_opt_t s_keygen_opts[] = {
    S_OPT("--out", CTL_STRING, keygen_args_t, out, 0, 0, "PATH",
          "PATH and PATH_secret are written"),
    S_OPT("--role", CTL_STRING, keygen_args_t, role, 0, 0, "ROLE",
          "user|admin|gateway: a client key; send PATH to an admin, who binds it with\n"
          "'ttctl key add PATH --tenant T --role R' (the broker ignores the tenant and\n"
          "role written here); worker: a worker key, PATH goes in the broker's\n"
          "--worker-keys dir; broker: the broker's key (ttbroker --curve-secret PATH),\n"
          "PATH goes to clients (--broker-key) and workers (ttworker --broker-key)"),
    S_OPT("--tenant", CTL_NAME, keygen_args_t, tenant, 0, 0, "T",
          "the tenant written into a client key"),
    S_OPT("--host", CTL_NAME, keygen_args_t, host, 0, 0, "ID",
          "binds a worker key to that host id"),
    CTL_OPT_END,
};

/* Makes a CURVE keypair with the metadata the broker checks: PATH (public,
 * for the broker's --client-keys or --worker-keys directory, or for the
 * clients and workers when it is the broker's) and PATH_secret (mode 0600,
 * stays with its owner). Both files are created with O_EXCL first, so an
 * existing key is never overwritten, not even by a race; zcert_save then
 * fills them in. */
static int s_keygen(ctl_t *ctl, void *args)
{
    keygen_args_t *a = args;
    const char *out = a->out, *tenant = a->tenant, *role = a->role, *host = a->host;
    if (!out || !*out)
        ctl_usage_error(ctl, "--out PATH is required");
    if (strlen(out) > 200)
        ctl_usage_error(ctl, "--out: path longer than 200 characters");
    if (!role)
        ctl_usage_error(ctl, "--role is required: user, admin, worker or broker");
    bool client =
        strcmp(role, "user") == 0 || strcmp(role, "admin") == 0 || strcmp(role, "gateway") == 0;
    bool worker = strcmp(role, "worker") == 0;
    if (!client && !worker && strcmp(role, "broker") != 0)
        ctl_usage_error(ctl, "--role: '%s' is not user, admin, gateway, worker or broker", role);
    if (client && !tenant)
        ctl_usage_error(ctl, "--role %s needs --tenant T", role);
    if (!client && tenant)
        ctl_usage_error(ctl, "--tenant goes with --role user or admin only");
    if (!worker && host)
        ctl_usage_error(ctl, "--host goes with --role worker only");

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

const ctl_cmd_t ctl_misc_cmds[] = {
    {NULL, "status", "pool_status", NULL,
     "Shows the pool's totals; in a broker cluster also each broker: id, endpoint, role\n"
     "(leader, follower, candidate or unreachable), term, commit and applied index, and the\n"
     "highest entry the leader knows replicated there (match), and whether it votes (a\n"
     "member added by `cluster add` that never caught up stays a non-voting spare).\n",
     NULL, 0, 0, 0, NULL, s_status, NULL, NULL},
    {NULL, "mmi", NULL, "SERVICE",
     "Asks the broker (8/MMI) whether it serves SERVICE; exit 0 only for 200.\n", NULL, 0, 1, 1,
     "service name is required", s_mmi, NULL, NULL},
    {NULL, "keygen", NULL, NULL,
     "Makes a CURVE keypair: PATH (the public certificate, with the role, tenant or host\n"
     "the broker checks) and PATH_secret (mode 0600). Never overwrites an existing file;\n"
     "exit 1 if a file exists or cannot be written.\n",
     s_keygen_opts, sizeof(keygen_args_t), 0, 0, NULL, s_keygen, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
