/*
 * watch.c: ttctl watch, the broker's events as they happen.
 */
#include "ttctl.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <time.h>

#include "ttframe.h"

#define S_OPT(n, k, type, field, lo, hi, m, h)                                                     \
    {                                                                                              \
        n, k, offsetof(type, field), lo, hi, m, h, NULL, NULL, false                               \
    }

static volatile sig_atomic_t s_stop;

/* The packed form of the replayed events of the last seconds of the
 * history: a live event equal to one of them is the same event, seen twice
 * at the seam between the history and the live stream, and is skipped. */
typedef struct {
    zlistx_t *packed; /* zframe_t */
} s_seam_t;

static bool s_seam_seen(s_seam_t *seam, const Ttfleet__Event *ev)
{
    if (!seam->packed || zlistx_size(seam->packed) == 0)
        return false;
    zframe_t *f = ttframe_pack((const ProtobufCMessage *)ev);
    bool seen = false;
    for (zframe_t *p = zlistx_first(seam->packed); f && p && !seen; p = zlistx_next(seam->packed))
        if (zframe_eq(p, f)) {
            seen = true;
            zframe_t *gone = zlistx_detach_cur(seam->packed);
            zframe_destroy(&gone);
        }
    zframe_destroy(&f);
    return seen;
}

static void s_seam_destroy(s_seam_t *seam)
{
    zframe_t *f;
    while (seam->packed && (f = zlistx_detach(seam->packed, NULL)))
        zframe_destroy(&f);
    zlistx_destroy(&seam->packed);
}

/* watch --since: the broker's log of recent events (event_history) from
 * now - since, printed before the live ones. Returns the number printed,
 * or -1 with the reason said (exit code in *code). */
static long long s_history(ctl_t *ctl, uint64_t since, const char *topic, const char *env, bool all,
                           s_seam_t *seam, int *code)
{
    Ttfleet__EventQuery q = TTFLEET__EVENT_QUERY__INIT;
    q.since = (int64_t)time(NULL) - (int64_t)since;
    q.topic = (char *)topic;
    q.env = (char *)(env ? env : "");
    q.all = all;
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_EVENT_HISTORY;
    req.event_history = &q;
    ttclient_t *client = ctl_client(ctl);
    Ttfleet__Reply *reply = NULL;
    int rc = ttclient_call(client, TT_SERVICE_ENV, &req, &reply);
    if (rc != 0) {
        fprintf(stderr, "ttctl: --since: %s\n", ttclient_error(client));
        ttclient_destroy(&client);
        *code = EXIT_TRANSPORT;
        return -1;
    }
    if (reply->status != TTFLEET__STATUS__OK ||
        reply->result_case != TTFLEET__REPLY__RESULT_EVENTS || !reply->events) {
        fprintf(stderr, "ttctl: --since: %s: %s\n", tt_status_name(reply->status),
                reply->message && *reply->message ? reply->message : "no event history");
        ttclient_reply_destroy(&reply);
        ttclient_destroy(&client);
        *code = EXIT_STATUS;
        return -1;
    }
    const Ttfleet__EventList *el = reply->events;
    if (el->truncated)
        fprintf(stderr,
                "ttctl: the broker's event log does not reach back %llu s; older events "
                "are not shown\n",
                (unsigned long long)since);
    int64_t last = el->n_events ? el->events[el->n_events - 1]->time : 0;
    seam->packed = zlistx_new();
    for (size_t i = 0; i < el->n_events; i++) {
        print_event(stdout, el->events[i], ctl->json);
        if (seam->packed && el->events[i]->time >= last - 2) {
            zframe_t *f = ttframe_pack((const ProtobufCMessage *)el->events[i]);
            if (f)
                zlistx_add_end(seam->packed, f);
        }
    }
    fflush(stdout);
    long long n = (long long)el->n_events;
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&client);
    return n;
}

static void s_on_signal(int sig)
{
    (void)sig;
    s_stop = 1;
}

/* Subscribes to the broker's events (PUB) and prints each one until
 * SIGINT/SIGTERM, --count events, or --timeout ms (after the verb: here it
 * bounds the whole watch). Only the caller's tenant's events are shown
 * (the key's tenant under CURVE, else --tenant) unless --all-tenants; with
 * --env only that env's. Exit 0, or 1 when --count was not reached
 * before --timeout. With --key/--broker-key the SUB socket talks CURVE
 * like the request socket (the broker's events endpoint takes client keys). */
/* watch --private: the tenant-private ROUTER stream (TTE01) through
 * libttclient's ttevents; the broker filters by the key's tenant. */
static int s_watch_private(ctl_t *ctl, const char *events, const char *env, const char *topic,
                           long long count, long long timeout, bool all_tenants, uint64_t since)
{
    ttclient_t *keys = ctl_client(ctl);
    ttevents_t *ev_sock = ttevents_new(keys, events, ctl->tenant);
    const char *topics[1] = {topic};
    int code = 0;
    if (!ev_sock || ttevents_subscribe(ev_sock, topics, *topic ? 1 : 0, env, ctl->timeout) != 0) {
        fprintf(stderr, "ttctl: %s\n",
                ev_sock ? ttevents_error(ev_sock) : "cannot make the events socket");
        ttevents_destroy(&ev_sock);
        ttclient_destroy(&keys);
        return EXIT_TRANSPORT;
    }
    /* the broker sends an admin every tenant's events: only --all-tenants
     * shows them all, and only an admin may ask for that */
    bool admin = false;
    char own[TT_MAX_NAME + 1];
    snprintf(own, sizeof own, "%s", ttevents_tenant(ev_sock, &admin));
    if (all_tenants && !admin) {
        fprintf(stderr,
                "ttctl: --all-tenants needs the admin role (the broker knows you as "
                "tenant %s)\n",
                own);
        ttevents_destroy(&ev_sock);
        ttclient_destroy(&keys);
        return EXIT_STATUS;
    }
    int64_t deadline = timeout ? zclock_mono() + timeout : 0;
    long long seen = 0;
    s_seam_t seam = {NULL};
    if (since && (seen = s_history(ctl, since, topic, env, all_tenants, &seam, &code)) < 0) {
        ttevents_destroy(&ev_sock);
        ttclient_destroy(&keys);
        return code;
    }
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
        if (ev && ((!all_tenants && strcmp(ev->tenant, own) != 0) || s_seam_seen(&seam, ev))) {
            ttfleet__event__free_unpacked(ev, NULL);
            continue;
        }
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
    s_seam_destroy(&seam);
    ttevents_destroy(&ev_sock);
    ttclient_destroy(&keys);
    return code;
}

typedef struct {
    const char *events, *env, *topic;
    uint64_t count, timeout, since;
    bool private_stream, all_tenants;
} watch_args_t;

static const ctl_opt_t s_watch_opts[] = {
    S_OPT("--env", CTL_NAME, watch_args_t, env, 0, 0, "NAME",
          "only events of env NAME of your tenant"),
    S_OPT("--topic", CTL_STRING, watch_args_t, topic, 0, 0, "PREFIX",
          "only topics starting with PREFIX (env., vm., host.)"),
    S_OPT("--events", CTL_STRING, watch_args_t, events, 0, 0, "EP",
          "events endpoint (env TTFLEET_EVENTS, default " TTCTL_DEFAULT_EVENTS ")"),
    S_OPT("--count", CTL_INT, watch_args_t, count, 1, 1000000000, "N",
          "stop after N events (exit 1 if --timeout comes first)"),
    S_OPT("--timeout", CTL_MS, watch_args_t, timeout, 1, 86400000ULL * 30, "MS",
          "stop after MS milliseconds (or 30s, 5m; here: the whole watch)"),
    S_OPT("--private", CTL_FLAG, watch_args_t, private_stream, 0, 0, NULL,
          "use the tenant-private stream (TTE01): the broker sends only your\n"
          "tenant's events (an admin all), filtered on the broker side"),
    S_OPT("--all-tenants", CTL_FLAG, watch_args_t, all_tenants, 0, 0, NULL,
          "every tenant's events and the hosts' (admin; without it only your\n"
          "tenant's are shown)"),
    S_OPT("--since", CTL_DURATION, watch_args_t, since, 1, 30 * 86400, "DUR",
          "first the events of the last DUR (90s, 10m, 2h) from the broker's log\n"
          "of recent events (since its start, at most 4096), then the live ones"),
    CTL_OPT_END,
};

static int s_watch(ctl_t *ctl, void *args)
{
    watch_args_t *a = args;
    bool private_stream = a->private_stream;
    const char *events = a->events ? a->events : ctl->events, *env = a->env;
    const char *topic = a->topic ? a->topic : "";
    if (!events || !*events)
        events = TTCTL_DEFAULT_EVENTS;
    long long count = (long long)a->count, timeout = (long long)a->timeout;
    if (!strstr(events, "://"))
        ctl_usage_error(ctl, "events endpoint '%s' is not a ZeroMQ endpoint such as %s", events,
                        TTCTL_DEFAULT_EVENTS);
    if (strlen(topic) > TT_MAX_NAME)
        ctl_usage_error(ctl, "--topic: at most %d characters", TT_MAX_NAME);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = s_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    if (a->all_tenants && env)
        ctl_usage_error(ctl, "--env shows one env of your tenant: not with --all-tenants");
    if (private_stream)
        return s_watch_private(ctl, events, env, topic, count, timeout, a->all_tenants, a->since);
    zsock_t *sub = zsock_new(ZMQ_SUB);
    const char *tenant = ctl->tenant;
    char key_tenant[TT_MAX_NAME + 1] = "";
    if (sub && ctl->key && *ctl->key) {
        /* the events socket takes the same client keys as the clients one */
        ttclient_t *keys = ctl_client(ctl);
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
    s_seam_t seam = {NULL};
    if (a->since) {
        /* the SUB is connected first, so nothing falls between the two */
        zclock_sleep(200);
        if ((seen = s_history(ctl, a->since, topic, env, a->all_tenants, &seam, &code)) < 0) {
            zsock_destroy(&sub);
            return code;
        }
    }
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
        if (ev && (a->all_tenants || strcmp(ev->tenant, tenant) == 0) &&
            (!env || strcmp(ev->env, env) == 0) && !s_seam_seen(&seam, ev)) {
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
    s_seam_destroy(&seam);
    zsock_destroy(&sub);
    return code;
}

const ctl_cmd_t ctl_watch_cmds[] = {
    {NULL, "watch", NULL, NULL,
     "Prints your tenant's events as they happen (an admin with --all-tenants: every\n"
     "tenant's and the hosts'), one per line (-o json: one JSON object per line), until\n"
     "Ctrl-C, N events, or MS milliseconds.\n",
     s_watch_opts, sizeof(watch_args_t), 0, 0, NULL, s_watch, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0, NULL, NULL, NULL, NULL},
};
