/* Unit tests of broker/admission/evstream.c with real ZeroMQ sockets: a ROUTER
 * (the broker side) and DEALER subscribers over loopback TCP. Each tenant
 * sees only its own events, admins all; filters; hostile SUBSCRIBEs; a slow
 * subscriber loses events without blocking; silent subscribers expire; and
 * under CURVE (with the broker's real ZAP handler, auth.c) a key of tenant
 * b that claims tenant a in its SUBSCRIBE still gets b's events only. */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "auth.h"
#include "broker.h"
#include "evstream.h"
#include "ttclient.h"
#include "ttproto.h"

/* Every wait is bounded: 5 s per message. */
#define WAIT_MS 5000

static void s_send_subscribe(zsock_t *d, const char *tenant, const char *topic, const char *env)
{
    Ttfleet__EventSubscribe s = TTFLEET__EVENT_SUBSCRIBE__INIT;
    char *topics[1] = {(char *)topic};
    s.tenant = (char *)(tenant ? tenant : "");
    s.env = (char *)(env ? env : "");
    if (topic) {
        s.topics = topics;
        s.n_topics = 1;
    }
    uint8_t buf[512];
    size_t len = ttfleet__event_subscribe__pack(&s, buf);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, TT_EVENTS_PROTO);
    uint8_t c = TT_E_SUBSCRIBE;
    zmsg_addmem(m, &c, 1);
    zmsg_addmem(m, buf, len);
    zmsg_send(&m, d);
}

/* The broker side reads one message and hands it to evstream. */
static int s_pump(zsock_t *router, evstream_t *es)
{
    zpoller_t *p = zpoller_new(router, NULL);
    void *r = zpoller_wait(p, WAIT_MS);
    zpoller_destroy(&p);
    if (!r)
        return -1;
    zmsg_t *m = zmsg_recv(router);
    return evstream_handle(es, &m, zclock_mono());
}

/* Read SUBSCRIBED; returns its status, -1 on timeout. */
static int s_subscribed(zsock_t *d, char *tenant, size_t len)
{
    zmsg_t *m = zmsg_recv(d);
    if (!m)
        return -1;
    int status = -1;
    zframe_t *proto = zmsg_first(m);
    zframe_t *cmd = zmsg_next(m);
    zframe_t *body = zmsg_next(m);
    if (zframe_streq(proto, TT_EVENTS_PROTO) && zframe_size(cmd) == 1 &&
        zframe_data(cmd)[0] == TT_E_SUBSCRIBED && body) {
        Ttfleet__EventSubscribed *r =
            ttfleet__event_subscribed__unpack(NULL, zframe_size(body), zframe_data(body));
        if (r) {
            status = r->status;
            if (tenant)
                snprintf(tenant, len, "%s", r->tenant);
            ttfleet__event_subscribed__free_unpacked(r, NULL);
        }
    }
    zmsg_destroy(&m);
    return status;
}

static void s_publish_msg(evstream_t *es, const char *tenant, const char *env, const char *topic,
                          const char *message)
{
    Ttfleet__Event ev = TTFLEET__EVENT__INIT;
    ev.kind = (char *)topic;
    ev.tenant = (char *)(tenant ? tenant : "");
    ev.env = (char *)(env ? env : "");
    ev.message = (char *)message;
    uint8_t buf[512];
    size_t len = ttfleet__event__pack(&ev, buf);
    evstream_publish(es, tenant, env, topic, buf, len);
}

static void s_publish(evstream_t *es, const char *tenant, const char *env, const char *topic)
{
    s_publish_msg(es, tenant, env, topic, "");
}

/* A marker that only subscriber `who` waits for: ZeroMQ keeps the order of
 * one pipe, so whatever was sent to it before the marker has arrived when
 * the marker does - no sleeping to prove that something did not come. */
static void s_marker(evstream_t *es, const char *tenant, const char *env, const char *who)
{
    char m[64];
    snprintf(m, sizeof m, "end:%s", who);
    s_publish_msg(es, tenant, env, "vm.end", m);
}

/* Read events until the marker for `who` arrives; collect
 * "tenant/env:kind" of each other event (markers for others are skipped).
 * Returns the count before the marker, -1 on timeout. */
static int s_collect(zsock_t *d, const char *who, char *log, size_t len)
{
    char mine[64];
    snprintf(mine, sizeof mine, "end:%s", who);
    log[0] = 0;
    int n = 0;
    while (1) {
        zmsg_t *m = zmsg_recv(d);
        if (!m)
            return -1;
        zframe_t *proto = zmsg_first(m);
        zframe_t *cmd = zmsg_next(m);
        if (!zframe_streq(proto, TT_EVENTS_PROTO) || zframe_size(cmd) != 1 ||
            zframe_data(cmd)[0] != TT_E_EVENT) {
            zmsg_destroy(&m); /* heartbeat */
            continue;
        }
        zmsg_next(m); /* topic */
        zframe_t *body = zmsg_next(m);
        Ttfleet__Event *ev = ttfleet__event__unpack(NULL, zframe_size(body), zframe_data(body));
        zmsg_destroy(&m);
        if (!ev)
            return -1;
        bool marker = strncmp(ev->message, "end:", 4) == 0;
        bool end = strcmp(ev->message, mine) == 0;
        if (!marker) {
            size_t l = strlen(log);
            snprintf(log + l, len - l, "%s%s/%s:%s", l ? " " : "", ev->tenant, ev->env, ev->kind);
            n++;
        }
        ttfleet__event__free_unpacked(ev, NULL);
        if (end)
            return n;
    }
}

static zsock_t *s_dealer(const char *ep)
{
    zsock_t *d = zsock_new(ZMQ_DEALER);
    zsock_set_rcvtimeo(d, WAIT_MS);
    zsock_set_linger(d, 0);
    zsock_connect(d, "%s", ep);
    return d;
}

static void test_plain(void)
{
    zsock_t *router = zsock_new(ZMQ_ROUTER);
    evstream_config_t cfg;
    evstream_config_defaults(&cfg);
    evstream_t *es = evstream_new(router, &cfg);
    int port = zsock_bind(router, "tcp://127.0.0.1:*");
    CHECK(port > 0);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);

    zsock_t *a = s_dealer(ep), *b = s_dealer(ep), *adm = s_dealer(ep), *avm = s_dealer(ep);
    char tenant[80];
    s_send_subscribe(a, "a", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(a, tenant, sizeof tenant) == 0 && strcmp(tenant, "a") == 0);
    s_send_subscribe(b, "b", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(b, NULL, 0) == 0);
    s_send_subscribe(adm, "admin", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(adm, NULL, 0) == 0);
    s_send_subscribe(avm, "a", "vm.", "web");
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(avm, NULL, 0) == 0);

    s_publish(es, "a", "web", "env.created");
    s_publish(es, "a", "web", "vm.state");
    s_publish(es, "a", "db", "vm.state");
    s_publish(es, "b", "x", "env.created");
    s_publish(es, NULL, NULL, "host.up");
    /* a marker for everyone: admins, a, b, and a's filtered subscriber */
    s_marker(es, "a", "x", "a");
    s_marker(es, "b", "x", "b");
    s_marker(es, "a", "web", "avm");
    s_marker(es, NULL, NULL, "adm");
    /* nothing is sent before the flush (commit order) */
    zsock_set_rcvtimeo(a, 200);
    zmsg_t *early = zmsg_recv(a);
    CHECK(early == NULL);
    zmsg_destroy(&early);
    zsock_set_rcvtimeo(a, WAIT_MS);
    evstream_flush(es, zclock_mono());

    char log[1024];
    CHECK(s_collect(a, "a", log, sizeof log) == 3);
    CHECK(strcmp(log, "a/web:env.created a/web:vm.state a/db:vm.state") == 0);
    CHECK(s_collect(b, "b", log, sizeof log) == 1);
    CHECK(strcmp(log, "b/x:env.created") == 0);
    CHECK(s_collect(avm, "avm", log, sizeof log) == 1);
    CHECK(strcmp(log, "a/web:vm.state") == 0);
    /* admin: everything including the host event, and both markers */
    CHECK(s_collect(adm, "adm", log, sizeof log) == 5);
    CHECK(strstr(log, "/:host.up") != NULL);

    /* a rolled back batch sends nothing */
    s_publish(es, "a", "web", "env.deleted");
    evstream_discard(es);
    s_marker(es, "a", "x", "a2");
    evstream_flush(es, zclock_mono());
    CHECK(s_collect(a, "a2", log, sizeof log) == 0);

    /* hostile SUBSCRIBEs: garbage body, no tenant, too many topics */
    zsock_t *h = s_dealer(ep);
    zmsg_t *m = zmsg_new();
    zmsg_addstr(m, TT_EVENTS_PROTO);
    uint8_t c = TT_E_SUBSCRIBE;
    zmsg_addmem(m, &c, 1);
    zmsg_addmem(m, "\xff\xff\xff\xff", 4);
    zmsg_send(&m, h);
    CHECK(s_pump(router, es) == -1);
    CHECK(s_subscribed(h, NULL, 0) == TTFLEET__STATUS__BAD_REQUEST);
    s_send_subscribe(h, "", NULL, NULL);
    CHECK(s_pump(router, es) == -1);
    CHECK(s_subscribed(h, NULL, 0) == TTFLEET__STATUS__FORBIDDEN);
    /* wrong protocol, extra frames: dropped silently */
    zstr_sendx(h, "XXX", "1", NULL);
    CHECK(s_pump(router, es) == -1);
    zstr_sendx(h, TT_EVENTS_PROTO, "\x01", "a", "b", "c", NULL);
    CHECK(s_pump(router, es) == -1);
    evstream_stats_t st;
    evstream_stats(es, &st);
    CHECK(st.subscribers == 4);

    /* a slow subscriber that never reads: events are dropped, the flush
     * does not block, the others still get theirs */
    zsock_t *slow = zsock_new(ZMQ_DEALER);
    zsock_set_rcvhwm(slow, 10);
    zsock_set_linger(slow, 0);
    zsock_connect(slow, "%s", ep);
    s_send_subscribe(slow, "b", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    for (int i = 0; i < 20000; i++)
        s_publish(es, "b", "flood", "vm.state");
    evstream_flush(es, zclock_mono());
    evstream_stats(es, &st);
    CHECK(st.dropped > 0);
    CHECK(st.pending_dropped > 0); /* 20000 > pending_max 10000 */
    /* the others are unaffected: b got the flood (it reads), a none of it */
    s_marker(es, "a", "x", "a3");
    evstream_flush(es, zclock_mono());
    CHECK(s_collect(a, "a3", log, sizeof log) == 0);

    /* expiry: nobody heartbeats for expiry_ms */
    evstream_tick(es, zclock_mono() + cfg.expiry_ms + 1000);
    evstream_stats(es, &st);
    CHECK(st.subscribers == 0);

    zsock_destroy(&slow);
    zsock_destroy(&h);
    zsock_destroy(&a);
    zsock_destroy(&b);
    zsock_destroy(&adm);
    zsock_destroy(&avm);
    evstream_destroy(&es);
    zsock_destroy(&router);
}

/* The operator's bindings for the CURVE tests (the broker uses keys.c):
 * the ZAP handler hears of each key through its pipe, evstream asks
 * s_identify for the tenant and role. */
static struct {
    char pub[41], tenant[65];
    bool admin;
} s_bound[4];
static int s_n_bound;

static void s_bind(zactor_t *auth, zcert_t *cert, const char *tenant, bool admin)
{
    snprintf(s_bound[s_n_bound].pub, sizeof s_bound[0].pub, "%s", zcert_public_txt(cert));
    snprintf(s_bound[s_n_bound].tenant, sizeof s_bound[0].tenant, "%s", tenant);
    s_bound[s_n_bound++].admin = admin;
    zstr_sendx(auth, "KEY-SET", zcert_public_txt(cert), NULL);
}

static int s_identify(void *arg, const char *user_id, char *tenant, bool *admin)
{
    (void)arg;
    for (int i = 0; i < s_n_bound; i++)
        if (strcmp(s_bound[i].pub, user_id) == 0) {
            snprintf(tenant, TT_MAX_NAME + 1, "%s", s_bound[i].tenant);
            *admin = s_bound[i].admin;
            return 0;
        }
    return -1;
}

/* CURVE with the broker's ZAP handler: tenant from the key, not the body. */
static void test_curve(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/tt-evstream-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char ck[256], wk[256], path[512];
    snprintf(ck, sizeof ck, "%s/clients", dir);
    snprintf(wk, sizeof wk, "%s/workers", dir);
    zsys_dir_create("%s", ck);
    zsys_dir_create("%s", wk);
    zcert_t *server = zcert_new();
    zcert_t *ca = zcert_new(), *cb = zcert_new(), *cadm = zcert_new();
    zcert_set_meta(ca, "tenant", "a");
    zcert_set_meta(ca, "role", "user");
    zcert_set_meta(cb, "tenant", "b");
    zcert_set_meta(cb, "role", "user");
    zcert_set_meta(cadm, "tenant", "ops");
    zcert_set_meta(cadm, "role", "admin");
    snprintf(path, sizeof path, "%s/a.cert", ck);
    zcert_save_public(ca, path);
    snprintf(path, sizeof path, "%s/b.cert", ck);
    zcert_save_public(cb, path);
    snprintf(path, sizeof path, "%s/ops.cert", ck);
    zcert_save_public(cadm, path);

    broker_config_t bcfg;
    broker_config_defaults(&bcfg);
    snprintf(bcfg.client_keys, sizeof bcfg.client_keys, "%s", ck);
    snprintf(bcfg.worker_keys, sizeof bcfg.worker_keys, "%s", wk);
    zactor_t *auth = zactor_new(auth_actor, &bcfg);
    CHECK(auth != NULL);
    s_n_bound = 0;
    s_bind(auth, ca, "a", false);
    s_bind(auth, cb, "b", false);
    s_bind(auth, cadm, "ops", true);

    zsock_t *router = zsock_new(ZMQ_ROUTER);
    zcert_apply(server, router);
    zsock_set_curve_server(router, 1);
    zsock_set_zap_domain(router, "clients");
    evstream_config_t cfg;
    evstream_config_defaults(&cfg);
    cfg.curve = true;
    cfg.identify = s_identify;
    evstream_t *es = evstream_new(router, &cfg);
    int port = zsock_bind(router, "tcp://127.0.0.1:*");
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);

    zcert_t *certs[3] = {ca, cb, cadm};
    zsock_t *d[3];
    for (int i = 0; i < 3; i++) {
        d[i] = zsock_new(ZMQ_DEALER);
        zsock_set_rcvtimeo(d[i], WAIT_MS);
        zsock_set_linger(d[i], 0);
        zcert_apply(certs[i], d[i]);
        zsock_set_curve_serverkey(d[i], zcert_public_txt(server));
        zsock_connect(d[i], "%s", ep);
    }
    /* an unknown key never gets through the handshake */
    zcert_t *stranger = zcert_new();
    zsock_t *x = zsock_new(ZMQ_DEALER);
    zsock_set_linger(x, 0);
    zcert_apply(stranger, x);
    zsock_set_curve_serverkey(x, zcert_public_txt(server));
    zsock_connect(x, "%s", ep);
    s_send_subscribe(x, "a", NULL, NULL);

    char tenant[80];
    /* b lies: claims tenant a and asks for everything */
    s_send_subscribe(d[1], "a", "", NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(d[1], tenant, sizeof tenant) == 0 && strcmp(tenant, "b") == 0);
    s_send_subscribe(d[0], "", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(d[0], tenant, sizeof tenant) == 0 && strcmp(tenant, "a") == 0);
    s_send_subscribe(d[2], "", NULL, NULL);
    CHECK(s_pump(router, es) == 0);
    CHECK(s_subscribed(d[2], tenant, sizeof tenant) == 0 && strcmp(tenant, "ops") == 0);

    s_publish(es, "a", "secret", "env.created");
    s_publish(es, "a", "secret", "vm.state");
    s_publish(es, "b", "mine", "env.created");
    s_marker(es, "a", "x", "a");
    s_marker(es, "b", "x", "b");
    s_marker(es, NULL, NULL, "adm");
    evstream_flush(es, zclock_mono());
    char log[1024];
    CHECK(s_collect(d[1], "b", log, sizeof log) == 1);
    CHECK(strcmp(log, "b/mine:env.created") == 0);
    CHECK(strstr(log, "secret") == NULL);
    CHECK(s_collect(d[0], "a", log, sizeof log) == 2);
    CHECK(s_collect(d[2], "adm", log, sizeof log) == 3);
    evstream_stats_t st;
    evstream_stats(es, &st);
    CHECK(st.subscribers == 3); /* the stranger is not among them */

    zsock_destroy(&x);
    zcert_destroy(&stranger);
    for (int i = 0; i < 3; i++)
        zsock_destroy(&d[i]);
    evstream_destroy(&es);
    zsock_destroy(&router);
    zactor_destroy(&auth);
    zcert_destroy(&server);
    zcert_destroy(&ca);
    zcert_destroy(&cb);
    zcert_destroy(&cadm);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

/* ---- libttclient's ttevents against evstream in a broker-side actor ---- */

typedef struct {
    zcert_t *server; /* CURVE when set */
} side_args_t;

/* The broker side: a ROUTER with evstream; the pipe says
 * "PUB" tenant env topic  -> publish one event and flush. */
static void s_side(zsock_t *pipe, void *argp)
{
    side_args_t *args = argp;
    zsock_t *router = zsock_new(ZMQ_ROUTER);
    evstream_config_t cfg;
    evstream_config_defaults(&cfg);
    if (args->server) {
        zcert_apply(args->server, router);
        zsock_set_curve_server(router, 1);
        zsock_set_zap_domain(router, "clients");
        cfg.curve = true;
        cfg.identify = s_identify;
    }
    evstream_t *es = evstream_new(router, &cfg);
    int port = zsock_bind(router, "tcp://127.0.0.1:*");
    zsock_signal(pipe, 0);
    zsock_send(pipe, "i", port);
    zpoller_t *poller = zpoller_new(pipe, router, NULL);
    while (1) {
        void *which = zpoller_wait(poller, 100);
        if (which == router) {
            zmsg_t *m = zmsg_recv(router);
            evstream_handle(es, &m, zclock_mono());
        } else if (which == pipe) {
            zmsg_t *m = zmsg_recv(pipe);
            char *cmd = zmsg_popstr(m);
            bool term = !cmd || strcmp(cmd, "$TERM") == 0;
            if (cmd && strcmp(cmd, "PUB") == 0) {
                char *t = zmsg_popstr(m), *e = zmsg_popstr(m), *k = zmsg_popstr(m);
                s_publish(es, *t ? t : NULL, e, k);
                evstream_flush(es, zclock_mono());
                zstr_free(&t);
                zstr_free(&e);
                zstr_free(&k);
                zsock_signal(pipe, 0);
            }
            zstr_free(&cmd);
            zmsg_destroy(&m);
            if (term)
                break;
        } else if (zpoller_terminated(poller))
            break;
        evstream_tick(es, zclock_mono());
    }
    zpoller_destroy(&poller);
    evstream_destroy(&es);
    zsock_destroy(&router);
}

static void s_side_pub(zactor_t *side, const char *tenant, const char *env, const char *topic)
{
    zstr_sendx(side, "PUB", tenant, env, topic, NULL);
    zsock_wait(side);
}

static void test_client_plain(void)
{
    side_args_t args = {NULL};
    zactor_t *side = zactor_new(s_side, &args);
    int port = 0;
    zsock_recv(side, "i", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);
    ttevents_t *a = ttevents_new(NULL, ep, "a");
    ttevents_t *b = ttevents_new(NULL, ep, "b");
    CHECK(ttevents_new(NULL, ep, "bad tenant") == NULL);
    const char *topics[] = {"env."};
    CHECK(ttevents_subscribe(a, topics, 1, NULL, WAIT_MS) == 0);
    CHECK(ttevents_subscribe(b, NULL, 0, NULL, WAIT_MS) == 0);
    bool admin = true;
    CHECK(strcmp(ttevents_tenant(a, &admin), "a") == 0 && !admin);
    s_side_pub(side, "a", "web", "vm.state");  /* a filters it out */
    s_side_pub(side, "b", "x", "env.created"); /* not a's */
    s_side_pub(side, "a", "web", "env.created");
    Ttfleet__Event *ev = ttevents_recv(a, WAIT_MS);
    CHECK(ev && strcmp(ev->kind, "env.created") == 0 && strcmp(ev->tenant, "a") == 0);
    if (ev)
        ttfleet__event__free_unpacked(ev, NULL);
    ev = ttevents_recv(b, WAIT_MS);
    CHECK(ev && strcmp(ev->tenant, "b") == 0);
    if (ev)
        ttfleet__event__free_unpacked(ev, NULL);
    /* a plain timeout: NULL with an empty error */
    ev = ttevents_recv(b, 200);
    CHECK(ev == NULL && strcmp(ttevents_error(b), "") == 0);
    ttevents_destroy(&a);
    ttevents_destroy(&b);
    zactor_destroy(&side);
}

static void test_client_curve(void)
{
    char dir[128];
    snprintf(dir, sizeof dir, "/tmp/tt-ttevents-%d-XXXXXX", (int)getpid());
    if (!mkdtemp(dir)) {
        CHECK(0);
        return;
    }
    char ck[256], wk[256], path[512], spath[512];
    snprintf(ck, sizeof ck, "%s/clients", dir);
    snprintf(wk, sizeof wk, "%s/workers", dir);
    zsys_dir_create("%s", ck);
    zsys_dir_create("%s", wk);
    zcert_t *server = zcert_new(), *cb = zcert_new();
    zcert_set_meta(cb, "tenant", "b");
    zcert_set_meta(cb, "role", "user");
    snprintf(path, sizeof path, "%s/b.cert", ck);
    zcert_save_public(cb, path);
    snprintf(path, sizeof path, "%s/b-client.cert", dir);
    zcert_save(cb, path);
    snprintf(spath, sizeof spath, "%s/broker.cert", dir);
    zcert_save_public(server, spath);
    broker_config_t bcfg;
    broker_config_defaults(&bcfg);
    snprintf(bcfg.client_keys, sizeof bcfg.client_keys, "%s", ck);
    snprintf(bcfg.worker_keys, sizeof bcfg.worker_keys, "%s", wk);
    zactor_t *auth = zactor_new(auth_actor, &bcfg);
    s_n_bound = 0;
    s_bind(auth, cb, "b", false);
    side_args_t args = {server};
    zactor_t *side = zactor_new(s_side, &args);
    int port = 0;
    zsock_recv(side, "i", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", port);

    ttclient_t *client = ttclient_new(ep, "b");
    CHECK(ttclient_set_curve(client, path, spath) == 0);
    /* b claims to be a: the broker takes b from the key */
    ttevents_t *ev_b = ttevents_new(client, ep, "a");
    CHECK(ttevents_subscribe(ev_b, NULL, 0, NULL, WAIT_MS) == 0);
    CHECK(strcmp(ttevents_tenant(ev_b, NULL), "b") == 0);
    s_side_pub(side, "a", "secret", "env.created");
    s_side_pub(side, "b", "mine", "env.created");
    Ttfleet__Event *ev = ttevents_recv(ev_b, WAIT_MS);
    CHECK(ev && strcmp(ev->env, "mine") == 0);
    if (ev)
        ttfleet__event__free_unpacked(ev, NULL);
    ttevents_destroy(&ev_b);
    ttclient_destroy(&client);
    zactor_destroy(&side);
    zactor_destroy(&auth);
    zcert_destroy(&server);
    zcert_destroy(&cb);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cleanup of %s failed\n", dir);
}

int main(void)
{
    zsys_init();
    zsys_set_linger(0);
    test_plain();
    test_curve();
    test_client_plain();
    test_client_curve();
    return s_report("evstream");
}
