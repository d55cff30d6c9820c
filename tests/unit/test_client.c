/*
 * Unit tests of libttclient against a fake broker.
 *
 * The fake broker is a ROUTER on an inproc endpoint inside a zactor. Each
 * case gives it a script (drop the first request, send junk before the
 * answer, say IN_PROGRESS, never answer...) and checks what the client makes
 * of it: that a retry reuses the request id, that stale and malformed
 * replies are ignored, and that a silent broker ends in an error within the
 * time budget. Every wait is bounded by the client's own timeout.
 *
 * Usage: test_client CASE   (retry, stale, anon_error, in_progress, timeout, bad_frames,
 *                             mmi, ops)
 */
#include <czmq.h>
#include <string.h>

#include "ttclient.h"
#include "ttproto.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

#define FAKE_MAX_IDS 8

typedef struct {
    const char *mode;
    char endpoint[64];
} fake_args_t;

typedef struct {
    zsock_t *router;
    const char *mode;
    int count; /* requests received */
    char ids[FAKE_MAX_IDS][TT_MAX_REQUEST_ID + 1];
} fake_t;

static void s_send_raw(zsock_t *router, zframe_t *routing, const char *header, const char *service,
                       const void *body, size_t size)
{
    zmsg_t *msg = zmsg_new();
    zmsg_append(msg, &(zframe_t *){zframe_dup(routing)});
    zmsg_addmem(msg, NULL, 0);
    zmsg_addstr(msg, header);
    zmsg_addstr(msg, service);
    zmsg_addmem(msg, body, size);
    zmsg_send(&msg, router);
}

static void s_send_reply(zsock_t *router, zframe_t *routing, const char *service,
                         const char *request_id, Ttfleet__Status status, const char *message)
{
    Ttfleet__Reply reply = TTFLEET__REPLY__INIT;
    reply.request_id = (char *)request_id;
    reply.status = status;
    reply.message = (char *)message;
    uint8_t buf[512];
    size_t size = ttfleet__reply__get_packed_size(&reply);
    CHECK(size <= sizeof buf);
    ttfleet__reply__pack(&reply, buf);
    s_send_raw(router, routing, TT_MDP_CLIENT, service, buf, size);
}

/* Answers one request as the mode says. */
static void s_fake_handle(fake_t *self, zmsg_t *msg)
{
    CHECK(zmsg_size(msg) == 5);
    zframe_t *routing = zmsg_pop(msg);
    zframe_t *empty = zmsg_pop(msg);
    CHECK(zframe_size(empty) == 0);
    char *header = zmsg_popstr(msg);
    CHECK(streq(header, TT_MDP_CLIENT));
    char *service = zmsg_popstr(msg);
    zframe_t *body = zmsg_pop(msg);
    int n = self->count++;

    if (streq(service, TT_SERVICE_MMI)) {
        bool known = zframe_streq(body, TT_SERVICE_ENV) || zframe_streq(body, TT_SERVICE_ADMIN);
        s_send_raw(self->router, routing, TT_MDP_CLIENT, service, known ? "200" : "404", 3);
        goto done;
    }
    Ttfleet__Request *req = ttfleet__request__unpack(NULL, zframe_size(body), zframe_data(body));
    CHECK(req);
    CHECK(tt_request_id_valid(req->request_id));
    if (n < FAKE_MAX_IDS)
        snprintf(self->ids[n], sizeof self->ids[n], "%s", req->request_id);
    const char *id = req->request_id;

    if (streq(self->mode, "retry")) {
        if (n >= 1)
            s_send_reply(self->router, routing, service, id, TTFLEET__STATUS__OK, "second");
    } else if (streq(self->mode, "stale")) {
        s_send_reply(self->router, routing, service, "0123456789abcdef", TTFLEET__STATUS__OK,
                     "stale");
        s_send_reply(self->router, routing, "tt.other", id, TTFLEET__STATUS__OK, "wrong service");
        s_send_raw(self->router, routing, "MDPC02", service, "", 0);
        s_send_raw(self->router, routing, TT_MDP_CLIENT, service, "\xff\xff\xff", 3);
        s_send_reply(self->router, routing, service, id, TTFLEET__STATUS__NOT_FOUND, "right");
    } else if (streq(self->mode, "in_progress")) {
        if (n == 0)
            s_send_reply(self->router, routing, service, id, TTFLEET__STATUS__IN_PROGRESS,
                         "still running");
        else
            s_send_reply(self->router, routing, service, id, TTFLEET__STATUS__OK, "done");
    } else if (streq(self->mode, "anon_error")) {
        /* An OK without an id is not ours; an error without one is. */
        s_send_reply(self->router, routing, service, "", TTFLEET__STATUS__OK, "anon ok");
        s_send_reply(self->router, routing, service, "", TTFLEET__STATUS__UNKNOWN_SERVICE,
                     "anon error");
    } else if (streq(self->mode, "bad_frames")) {
        s_send_raw(self->router, routing, "MDPW01", service, "", 0);
    } else if (streq(self->mode, "ops")) {
        /* Echo service, op and tenant so the client side can check them. */
        char text[128];
        snprintf(text, sizeof text, "%s %d %s", service, (int)req->op_case, req->tenant);
        s_send_reply(self->router, routing, service, id, TTFLEET__STATUS__OK, text);
    }
    /* "timeout": never answers. */
    ttfleet__request__free_unpacked(req, NULL);
done:
    zframe_destroy(&routing);
    zframe_destroy(&empty);
    zframe_destroy(&body);
    free(header);
    free(service);
}

static void s_fake_broker(zsock_t *pipe, void *args)
{
    fake_args_t *fa = args;
    fake_t self = {.mode = fa->mode};
    self.router = zsock_new(ZMQ_ROUTER);
    CHECK(self.router);
    CHECK(zsock_bind(self.router, "%s", fa->endpoint) == 0);
    zsock_signal(pipe, 0);
    zpoller_t *poller = zpoller_new(pipe, self.router, NULL);
    for (;;) {
        void *which = zpoller_wait(poller, -1);
        if (which == pipe) {
            char *cmd = zstr_recv(pipe);
            if (!cmd || streq(cmd, "$TERM")) {
                free(cmd);
                break;
            }
            if (streq(cmd, "STATS"))
                zsock_send(pipe, "iss", self.count, self.ids[0], self.ids[1]);
            free(cmd);
        } else if (which == self.router) {
            zmsg_t *msg = zmsg_recv(self.router);
            if (msg)
                s_fake_handle(&self, msg);
            zmsg_destroy(&msg);
        } else
            break;
    }
    zpoller_destroy(&poller);
    zsock_destroy(&self.router);
}

static zactor_t *s_fake_new(fake_args_t *args, const char *mode)
{
    args->mode = mode;
    snprintf(args->endpoint, sizeof args->endpoint, "inproc://fake-broker-%s", mode);
    return zactor_new(s_fake_broker, args);
}

static void s_fake_stats(zactor_t *fake, int *count, char **id0, char **id1)
{
    zstr_send(fake, "STATS");
    CHECK(zsock_recv(fake, "iss", count, id0, id1) == 0);
}

static ttclient_t *s_client(fake_args_t *args, int timeout, int retries)
{
    ttclient_t *c = ttclient_new(args->endpoint, "t1");
    CHECK(c);
    ttclient_set_timeout(c, timeout);
    ttclient_set_retries(c, retries);
    return c;
}

/* The first request is dropped; the retry must carry the same id. */
static void s_test_retry(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "retry");
    ttclient_t *c = s_client(&args, 300, 3);
    Ttfleet__Reply *reply = NULL;
    CHECK(ttclient_env_show(c, "e1", &reply) == 0);
    CHECK(reply->status == TTFLEET__STATUS__OK);
    CHECK(streq(reply->message, "second"));
    int count;
    char *id0, *id1;
    s_fake_stats(fake, &count, &id0, &id1);
    CHECK(count == 2);
    CHECK(strlen(id0) == 16);
    CHECK(streq(id0, id1));
    CHECK(streq(id0, ttclient_request_id(c)));
    free(id0);
    free(id1);
    ttclient_reply_destroy(&reply);
    CHECK(reply == NULL);

    /* A new call gets a new id. */
    CHECK(ttclient_env_show(c, "e1", &reply) == 0);
    s_fake_stats(fake, &count, &id0, &id1);
    CHECK(count == 3);
    CHECK(!streq(id0, ttclient_request_id(c)));
    free(id0);
    free(id1);
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&c);
    CHECK(c == NULL);
    zactor_destroy(&fake);
}

/* A reply with another request id, one from another service, one with a
 * wrong header and an undecodable one are all dropped before the real one. */
static void s_test_stale(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "stale");
    ttclient_t *c = s_client(&args, 2000, 1);
    Ttfleet__Reply *reply = NULL;
    CHECK(ttclient_env_show(c, "e1", &reply) == 0);
    CHECK(reply->status == TTFLEET__STATUS__NOT_FOUND);
    CHECK(streq(reply->message, "right"));
    CHECK(streq(reply->request_id, ttclient_request_id(c)));
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

/* The broker answers a request it cannot decode without a request id. */
static void s_test_anon_error(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "anon_error");
    ttclient_t *c = s_client(&args, 2000, 1);
    Ttfleet__Reply *reply = NULL;
    CHECK(ttclient_pool_status(c, &reply) == 0);
    CHECK(reply->status == TTFLEET__STATUS__UNKNOWN_SERVICE);
    CHECK(streq(reply->message, "anon error"));
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

/* IN_PROGRESS is not an answer: the client asks again with the same id. */
static void s_test_in_progress(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "in_progress");
    ttclient_t *c = s_client(&args, 2000, 1);
    Ttfleet__Reply *reply = NULL;
    CHECK(ttclient_env_delete(c, "e1", &reply) == 0);
    CHECK(reply->status == TTFLEET__STATUS__OK);
    CHECK(streq(reply->message, "done"));
    int count;
    char *id0, *id1;
    s_fake_stats(fake, &count, &id0, &id1);
    CHECK(count == 2);
    CHECK(streq(id0, id1));
    free(id0);
    free(id1);
    ttclient_reply_destroy(&reply);
    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

/* A broker that never answers: -1 after every attempt, in bounded time. */
static void s_test_timeout(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "timeout");
    ttclient_t *c = s_client(&args, 150, 3);
    Ttfleet__Reply *reply = NULL;
    int64_t start = zclock_mono();
    CHECK(ttclient_env_show(c, "e1", &reply) == -1);
    int64_t elapsed = zclock_mono() - start;
    CHECK(reply == NULL);
    CHECK(elapsed >= 450 && elapsed < 5000);
    const char *err = ttclient_error(c);
    CHECK(strstr(err, "no reply from inproc://fake-broker-timeout"));
    CHECK(strstr(err, "after 3 attempts of 150 ms"));
    int count;
    char *id0, *id1;
    s_fake_stats(fake, &count, &id0, &id1);
    CHECK(count == 3);
    CHECK(streq(id0, id1));
    free(id0);
    free(id1);
    ttclient_destroy(&c);
    zactor_destroy(&fake);

    /* Nobody at all at the endpoint: same error, no hang. */
    ttclient_t *lone = ttclient_new("tcp://127.0.0.1:1", NULL);
    ttclient_set_timeout(lone, 100);
    ttclient_set_retries(lone, 2);
    CHECK(ttclient_pool_status(lone, &reply) == -1);
    CHECK(strstr(ttclient_error(lone), "after 2 attempts"));
    ttclient_destroy(&lone);

    /* A malformed endpoint is an error of the call, not a crash. */
    ttclient_t *bad = ttclient_new("nonsense", NULL);
    CHECK(ttclient_pool_status(bad, &reply) == -1);
    CHECK(strstr(ttclient_error(bad), "cannot connect to 'nonsense'"));
    ttclient_destroy(&bad);

    /* Invalid tenant names are refused up front. */
    CHECK(ttclient_new(NULL, "bad tenant") == NULL);
    CHECK(ttclient_new(NULL, ".hidden") == NULL);
}

/* Only malformed replies: the call fails and says what it dropped. */
static void s_test_bad_frames(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "bad_frames");
    ttclient_t *c = s_client(&args, 150, 2);
    Ttfleet__Reply *reply = NULL;
    CHECK(ttclient_host_list(c, &reply) == -1);
    CHECK(strstr(ttclient_error(c), "dropped a reply with a protocol header other than MDPC01"));
    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

static void s_test_mmi(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "mmi");
    ttclient_t *c = s_client(&args, 2000, 1);
    char code[8];
    CHECK(ttclient_mmi(c, TT_SERVICE_ENV, code, sizeof code) == 0);
    CHECK(streq(code, "200"));
    CHECK(ttclient_mmi(c, "tt.nothing", code, sizeof code) == 0);
    CHECK(streq(code, "404"));
    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

static void s_expect(ttclient_t *c, int rc, Ttfleet__Reply **reply, const char *service,
                     Ttfleet__Request__OpCase op)
{
    CHECK(rc == 0);
    char want[128];
    snprintf(want, sizeof want, "%s %d t1", service, (int)op);
    if (!streq((*reply)->message, want)) {
        fprintf(stderr, "got '%s', want '%s'\n", (*reply)->message, want);
        exit(1);
    }
    ttclient_reply_destroy(reply);
}

/* Every convenience call goes to the right service with the right op. */
static void s_test_ops(void)
{
    fake_args_t args;
    zactor_t *fake = s_fake_new(&args, "ops");
    ttclient_t *c = s_client(&args, 2000, 1);
    Ttfleet__Reply *r = NULL;
    const char *env = TT_SERVICE_ENV, *admin = TT_SERVICE_ADMIN;

    Ttfleet__ImageCount ic = TTFLEET__IMAGE_COUNT__INIT;
    ic.image = "sleeper";
    Ttfleet__ImageCount *ics[] = {&ic};
    Ttfleet__EnvCreate create = TTFLEET__ENV_CREATE__INIT;
    create.name = "e1";
    create.n_images = 1;
    create.images = ics;
    s_expect(c, ttclient_env_create(c, &create, &r), &r, env, TTFLEET__REQUEST__OP_ENV_CREATE);
    s_expect(c, ttclient_env_show(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_SHOW);
    s_expect(c, ttclient_env_list(c, false, &r), &r, env, TTFLEET__REQUEST__OP_ENV_LIST);
    s_expect(c, ttclient_env_list(c, true, &r), &r, admin, TTFLEET__REQUEST__OP_ENV_LIST);
    s_expect(c, ttclient_env_stop(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_STOP);
    s_expect(c, ttclient_env_start(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_START);
    s_expect(c, ttclient_env_pause(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_PAUSE);
    s_expect(c, ttclient_env_resume(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_RESUME);
    s_expect(c, ttclient_env_delete(c, "e1", &r), &r, env, TTFLEET__REQUEST__OP_ENV_DELETE);
    s_expect(c, ttclient_env_extend(c, "e1", 60, &r), &r, env, TTFLEET__REQUEST__OP_ENV_EXTEND);
    Ttfleet__EnvUpdate update = TTFLEET__ENV_UPDATE__INIT;
    update.name = "e1";
    update.cpu = 1;
    s_expect(c, ttclient_env_update(c, &update, &r), &r, env, TTFLEET__REQUEST__OP_ENV_UPDATE);
    Ttfleet__EnvRmVm rm = TTFLEET__ENV_RM_VM__INIT;
    rm.name = "e1";
    rm.image_prefix = "sle";
    s_expect(c, ttclient_env_rm_vm(c, &rm, &r), &r, env, TTFLEET__REQUEST__OP_ENV_RM_VM);
    s_expect(c, ttclient_host_list(c, &r), &r, admin, TTFLEET__REQUEST__OP_HOST_LIST);
    s_expect(c, ttclient_host_show(c, "h1", &r), &r, admin, TTFLEET__REQUEST__OP_HOST_SHOW);
    s_expect(c, ttclient_pool_status(c, &r), &r, admin, TTFLEET__REQUEST__OP_POOL_STATUS);
    /* admission */
    create.queue = true;
    create.max_wait = 60;
    create.priority = 5;
    s_expect(c, ttclient_env_create(c, &create, &r), &r, env, TTFLEET__REQUEST__OP_ENV_CREATE);
    Ttfleet__QuotaLimit cpu = TTFLEET__QUOTA_LIMIT__INIT;
    cpu.value = 8;
    Ttfleet__QuotaSet qset = TTFLEET__QUOTA_SET__INIT;
    qset.tenant = "t2";
    qset.cpu = &cpu;
    s_expect(c, ttclient_quota_set(c, &qset, &r), &r, admin, TTFLEET__REQUEST__OP_QUOTA_SET);
    s_expect(c, ttclient_quota_show(c, NULL, false, &r), &r, env, TTFLEET__REQUEST__OP_QUOTA_SHOW);
    s_expect(c, ttclient_quota_show(c, NULL, true, &r), &r, admin, TTFLEET__REQUEST__OP_QUOTA_SHOW);
    s_expect(c, ttclient_queue_list(c, false, &r), &r, env, TTFLEET__REQUEST__OP_QUEUE_LIST);
    s_expect(c, ttclient_queue_list(c, true, &r), &r, admin, TTFLEET__REQUEST__OP_QUEUE_LIST);
    Ttfleet__AuditQuery aq = TTFLEET__AUDIT_QUERY__INIT;
    aq.env = "e1";
    aq.limit = 10;
    s_expect(c, ttclient_audit(c, &aq, &r), &r, env, TTFLEET__REQUEST__OP_AUDIT_QUERY);

    /* Every row of the registry has its generated request function, which
     * sends the row's op to the row's service (a row without one does not
     * compile here). */
#define S_SVC_ENV TT_SERVICE_ENV
#define S_SVC_ADMIN TT_SERVICE_ADMIN
#define TT_OP(CASE, field, handler, service, flags, method, path, params, query, ok, cli)          \
    s_expect(c, ttclient_op_##field(c, NULL, &r), &r, S_SVC_##service, TTFLEET__REQUEST__OP_##CASE);
#include "ops.def"
#undef TT_OP
    Ttfleet__EnvList all = TTFLEET__ENV_LIST__INIT;
    all.all = true;
    s_expect(c, ttclient_op_env_list(c, &all, &r), &r, admin, TTFLEET__REQUEST__OP_ENV_LIST);
    CHECK(ttclient_op(c, 9999, NULL, &r) == -1 && r == NULL);
    CHECK(strstr(ttclient_error(c), "not an operation of the registry"));

    /* The caller's request id and tenant are used when given, and the
     * request keeps no pointer into the client afterwards. */
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = "e1";
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    req.op_case = TTFLEET__REQUEST__OP_ENV_SHOW;
    req.env_show = &ref;
    req.request_id = "my-id-1";
    CHECK(ttclient_call(c, env, &req, &r) == 0);
    CHECK(streq(r->request_id, "my-id-1"));
    CHECK(streq(req.request_id, "my-id-1"));
    ttclient_reply_destroy(&r);
    req.request_id = "";
    CHECK(ttclient_call(c, env, &req, &r) == 0);
    CHECK(strlen(r->request_id) == 16);
    CHECK(streq(req.request_id, ""));
    CHECK(streq(req.tenant, ""));
    ttclient_reply_destroy(&r);
    req.request_id = "bad id";
    CHECK(ttclient_call(c, env, &req, &r) == -1);
    CHECK(strstr(ttclient_error(c), "invalid request id"));

    ttclient_destroy(&c);
    zactor_destroy(&fake);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: test_client CASE\n");
        return 2;
    }
    zsys_handler_set(NULL);
    const char *name = argv[1];
    if (streq(name, "retry"))
        s_test_retry();
    else if (streq(name, "stale"))
        s_test_stale();
    else if (streq(name, "anon_error"))
        s_test_anon_error();
    else if (streq(name, "in_progress"))
        s_test_in_progress();
    else if (streq(name, "timeout"))
        s_test_timeout();
    else if (streq(name, "bad_frames"))
        s_test_bad_frames();
    else if (streq(name, "mmi"))
        s_test_mmi();
    else if (streq(name, "ops"))
        s_test_ops();
    else {
        fprintf(stderr, "test_client: unknown case '%s'\n", name);
        return 2;
    }
    printf("unit.client.%s: ok\n", name);
    return 0;
}
