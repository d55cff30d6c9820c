/*
 * Unit tests of ttgw's pure modules: pbjson (JSON <-> protobuf-c through
 * the descriptors) and tokens (the token file). Run as `test_gw CASE`.
 * Hostile input is the point: every bad document must come back as NULL
 * with a reason, never a crash (run under ASan in CI's sanitizer pass).
 */
#include "test_util.h" /* first: it sets _GNU_SOURCE */

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "metrics.h"
#include "pbjson.h"
#include "status.h"
#include "tokens.h"
#include "ttfleet.pb-c.h"

/* Decodes text as desc; returns the message (arena owns it) or NULL. */
static ProtobufCMessage *s_decode(const ProtobufCMessageDescriptor *desc, const char *text,
                                  pbjson_arena_t *arena, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *j = json_loads(text, 0, &jerr);
    if (!j) {
        snprintf(err, errlen, "json: %s", jerr.text);
        return NULL;
    }
    ProtobufCMessage *m = pbjson_decode(desc, j, arena, err, errlen);
    json_decref(j);
    return m;
}

static void test_roundtrip(void)
{
    pbjson_arena_t *arena = pbjson_arena_new();
    char err[256];
    Ttfleet__EnvCreate *c = (Ttfleet__EnvCreate *)s_decode(
        &ttfleet__env_create__descriptor,
        "{\"name\":\"web\",\"images\":[{\"image\":\"sleeper\",\"dup\":2}],\"cpu\":1,"
        "\"memMib\":256,\"lifetime\":\"7200\",\"ports\":[80,443],\"deny_outgoing\":true}",
        arena, err, sizeof err);
    CHECK(c != NULL);
    if (c) {
        CHECK(strcmp(c->name, "web") == 0);
        CHECK(c->n_images == 1 && strcmp(c->images[0]->image, "sleeper") == 0 &&
              c->images[0]->dup == 2);
        CHECK(c->cpu == 1 && c->mem_mib == 256 && c->lifetime == 7200);
        CHECK(c->n_ports == 2 && c->ports[1] == 443 && c->deny_outgoing);
        CHECK(c->engine && c->engine[0] == 0); /* missing string: "" */
        /* the packed message is what the wire would carry */
        size_t len = protobuf_c_message_get_packed_size(&c->base);
        uint8_t *buf = malloc(len);
        protobuf_c_message_pack(&c->base, buf);
        Ttfleet__EnvCreate *back = ttfleet__env_create__unpack(NULL, len, buf);
        CHECK(back && back->mem_mib == 256);
        json_t *j = pbjson_encode(&back->base);
        CHECK(json_integer_value(json_object_get(j, "mem_mib")) == 256);
        CHECK(json_is_array(json_object_get(j, "images")));
        CHECK(json_is_string(json_object_get(j, "engine")));
        json_decref(j);
        ttfleet__env_create__free_unpacked(back, NULL);
        free(buf);
    }
    Ttfleet__EnvUpdate *u = (Ttfleet__EnvUpdate *)s_decode(
        &ttfleet__env_update__descriptor, "{\"name\":\"a\",\"outgoing\":\"OUTGOING_DENY\"}", arena,
        err, sizeof err);
    CHECK(u && u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_DENY);
    u = (Ttfleet__EnvUpdate *)s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":2}", arena,
                                       err, sizeof err);
    CHECK(u && u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW);
    /* enums and bytes out */
    Ttfleet__ConsoleText ct = TTFLEET__CONSOLE_TEXT__INIT;
    ct.text.data = (uint8_t *)"hi!\n";
    ct.text.len = 4;
    json_t *j = pbjson_encode(&ct.base);
    CHECK(strcmp(json_string_value(json_object_get(j, "text")), "aGkhCg==") == 0);
    json_decref(j);
    Ttfleet__VmInfo vm = TTFLEET__VM_INFO__INIT;
    vm.state = TTFLEET__VM_STATE__VM_RUNNING;
    j = pbjson_encode(&vm.base);
    CHECK(strcmp(json_string_value(json_object_get(j, "state")), "running") == 0);
    json_decref(j);
    /* one spelling for every enum but Status: no shared prefix, lower case */
    Ttfleet__EnvCopy cp = TTFLEET__ENV_COPY__INIT;
    cp.direction = TTFLEET__COPY_DIRECTION__COPY_GET;
    j = pbjson_encode(&cp.base);
    CHECK(strcmp(json_string_value(json_object_get(j, "direction")), "get") == 0);
    json_decref(j);
    Ttfleet__AuditRecord ar = TTFLEET__AUDIT_RECORD__INIT;
    ar.status = TTFLEET__STATUS__NOT_FOUND;
    j = pbjson_encode(&ar.base);
    CHECK(strcmp(json_string_value(json_object_get(j, "status")), "NOT_FOUND") == 0);
    json_decref(j);
    u = (Ttfleet__EnvUpdate *)s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":\"deny\"}",
                                       arena, err, sizeof err);
    CHECK(u && u->outgoing == TTFLEET__OUTGOING_MODE__OUTGOING_DENY);
    Ttfleet__EnvUpdate eu = TTFLEET__ENV_UPDATE__INIT;
    eu.outgoing = TTFLEET__OUTGOING_MODE__OUTGOING_ALLOW;
    j = pbjson_encode(&eu.base);
    CHECK(strcmp(json_string_value(json_object_get(j, "outgoing")), "allow") == 0);
    json_decref(j);
    /* bytes in */
    Ttfleet__ConsoleText *in = (Ttfleet__ConsoleText *)s_decode(
        &ttfleet__console_text__descriptor, "{\"text\":\"aGkhCg==\"}", arena, err, sizeof err);
    CHECK(in && in->text.len == 4 && memcmp(in->text.data, "hi!\n", 4) == 0);
    /* oneofs: only the set member is written */
    Ttfleet__Request req = TTFLEET__REQUEST__INIT;
    Ttfleet__EnvRef ref = TTFLEET__ENV_REF__INIT;
    ref.name = "x";
    req.op_case = TTFLEET__REQUEST__OP_ENV_SHOW;
    req.env_show = &ref;
    j = pbjson_encode(&req.base);
    CHECK(json_object_get(j, "env_show") && !json_object_get(j, "env_create"));
    json_decref(j);
    pbjson_arena_destroy(&arena);
    CHECK(arena == NULL);
}

static void test_hostile(void)
{
    static const struct {
        const char *json;
        const char *reason; /* a part of the expected message */
    } bad[] = {
        {"{\"name\":5}", "name"},
        {"{\"cpu\":-1}", "cpu"},
        {"{\"cpu\":4294967296}", "out of range"},
        {"{\"cpu\":1.5}", "integer"},
        {"{\"lifetime\":3.3e92}", "out of range"}, /* a fuzzer finding: UB cast */
        {"{\"lifetime\":-1e300}", "out of range"},
        {"{\"cpu\":\"12x\"}", "cpu"},
        {"{\"cpu\":\"-3\"}", "cpu"},
        {"{\"cpu\":true}", "cpu"},
        {"{\"lifetime\":\"99999999999999999999999\"}", "lifetime"},
        {"{\"deny_outgoing\":\"yes\"}", "true or false"},
        {"{\"images\":{}}", "array"},
        {"{\"images\":[1]}", "object"},
        {"{\"images\":[{\"image\":\"a\",\"extra\":1}]}", "extra"},
        {"{\"ports\":[70000000000]}", "range"},
        {"{\"mem_mib\":1,\"memMib\":2}", "twice"},
        {"{\"bogus\":1}", "bogus"},
        {"{\"name\":\"a\\u0000b\"}", "NUL"},
        {"[]", "object"},
    };
    char err[256];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pbjson_arena_t *arena = pbjson_arena_new();
        json_error_t jerr;
        json_t *j = json_loads(bad[i].json, JSON_ALLOW_NUL, &jerr);
        CHECK(j != NULL);
        ProtobufCMessage *m =
            j ? pbjson_decode(&ttfleet__env_create__descriptor, j, arena, err, sizeof err) : NULL;
        if (m || !strstr(err, bad[i].reason)) {
            fprintf(stderr, "input %s: got %s, reason '%s'\n", bad[i].json,
                    m ? "a message" : "NULL", err);
            s_failures++;
        }
        json_decref(j);
        pbjson_arena_destroy(&arena);
    }
    /* bytes that are not base64; an enum that does not exist */
    pbjson_arena_t *arena = pbjson_arena_new();
    CHECK(!s_decode(&ttfleet__console_text__descriptor, "{\"text\":\"!!!\"}", arena, err,
                    sizeof err));
    CHECK(!s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":\"SOMETIMES\"}", arena, err,
                    sizeof err));
    CHECK(!s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":99}", arena, err, sizeof err));
    /* the spelling is exact: no other case, no partial prefix */
    CHECK(!s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":\"DENY\"}", arena, err,
                    sizeof err));
    CHECK(!s_decode(&ttfleet__env_update__descriptor, "{\"outgoing\":\"outgoing_deny\"}", arena,
                    err, sizeof err));
    /* a long array is bounded */
    char *big = malloc(5000 * 2 + 32);
    strcpy(big, "{\"ports\":[");
    for (int i = 0; i < 5000; i++)
        strcat(big, i ? ",1" : "1");
    strcat(big, "]}");
    CHECK(!s_decode(&ttfleet__env_create__descriptor, big, arena, err, sizeof err));
    CHECK(strstr(err, "too many") != NULL);
    free(big);
    /* a two-op Request (oneof) is refused */
    CHECK(!s_decode(&ttfleet__request__descriptor,
                    "{\"env_show\":{\"name\":\"a\"},\"env_delete\":{\"name\":\"a\"}}", arena, err,
                    sizeof err));
    pbjson_arena_destroy(&arena);
}

static void test_tokens(void)
{
    char path[] = "/tmp/ttgw-tokens-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    const char *text = "# comment\n"
                       "aaaaaaaaaaaaaaaaaaaa alice user\n"
                       "short bob user\n"                       /* too short: skipped */
                       "bbbbbbbbbbbbbbbbbbbb bad/tenant user\n" /* bad tenant */
                       "cccccccccccccccccccc carol root\n"      /* bad role */
                       "dddddddddddddddddddd dave admin # ops\n"
                       "gggggggggggggggggggg admin user\n" /* user in the admin tenant */
                       "hhhhhhhhhhhhhhhhhhhh ops user\n"   /* ... as --admin-tenant names it */
                       "iiiiiiiiiiiiiiiiiiii ops admin\n"
                       "\n";
    CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    close(fd);
    char err[256], tenant[65], role[16];
    tokens_t *t = tokens_new(path, "ops", err, sizeof err);
    CHECK(t != NULL);
    CHECK(tokens_count(t) == 3);
    CHECK(tokens_lookup(t, "gggggggggggggggggggg", tenant, role) != 0);
    CHECK(tokens_lookup(t, "hhhhhhhhhhhhhhhhhhhh", tenant, role) != 0);
    CHECK(tokens_lookup(t, "iiiiiiiiiiiiiiiiiiii", tenant, role) == 0 &&
          strcmp(tenant, "ops") == 0 && strcmp(role, "admin") == 0);
    CHECK(tokens_lookup(t, "aaaaaaaaaaaaaaaaaaaa", tenant, role) == 0 &&
          strcmp(tenant, "alice") == 0 && strcmp(role, "user") == 0);
    CHECK(tokens_lookup(t, "dddddddddddddddddddd", tenant, role) == 0 &&
          strcmp(role, "admin") == 0);
    CHECK(tokens_lookup(t, "aaaaaaaaaaaaaaaaaaa", tenant, role) != 0);   /* prefix */
    CHECK(tokens_lookup(t, "aaaaaaaaaaaaaaaaaaaaa", tenant, role) != 0); /* longer */
    CHECK(tokens_lookup(t, "", tenant, role) != 0);
    CHECK(tokens_lookup(t, "short", tenant, role) != 0);
    /* rewritten: alice removed, erin added (a different size, so the change shows
     * even within one mtime tick) */
    FILE *f = fopen(path, "w");
    fputs("eeeeeeeeeeeeeeeeeeeeeeee erin user\n", f);
    fclose(f);
    CHECK(tokens_lookup(t, "aaaaaaaaaaaaaaaaaaaa", tenant, role) != 0);
    CHECK(tokens_lookup(t, "eeeeeeeeeeeeeeeeeeeeeeee", tenant, role) == 0 &&
          strcmp(tenant, "erin") == 0);
    /* rewritten in place with the same size and the old mtime (what cp -p or
     * rsync -t leave): the ctime moved, so the demotion is seen */
    f = fopen(path, "w");
    fputs("ffffffffffffffffffffffff frank admin\n", f);
    fclose(f);
    CHECK(tokens_lookup(t, "ffffffffffffffffffffffff", tenant, role) == 0 &&
          strcmp(role, "admin") == 0);
    struct stat before;
    CHECK(stat(path, &before) == 0);
    usleep(20 * 1000); /* a later ctime tick than the read above */
    fd = open(path, O_WRONLY);
    CHECK(fd >= 0);
    const char *demoted = "ffffffffffffffffffffffff frank user \n";
    CHECK(strlen(demoted) == (size_t)before.st_size);
    CHECK(pwrite(fd, demoted, strlen(demoted), 0) == (ssize_t)strlen(demoted));
    struct timespec times[2] = {before.st_atim, before.st_mtim};
    CHECK(futimens(fd, times) == 0);
    close(fd);
    struct stat after;
    CHECK(stat(path, &after) == 0);
    CHECK(after.st_size == before.st_size && after.st_ino == before.st_ino &&
          after.st_mtim.tv_sec == before.st_mtim.tv_sec &&
          after.st_mtim.tv_nsec == before.st_mtim.tv_nsec);
    CHECK(tokens_lookup(t, "ffffffffffffffffffffffff", tenant, role) == 0 &&
          strcmp(role, "user") == 0);
    /* removed file: fails closed, every token is revoked... */
    CHECK(unlink(path) == 0);
    CHECK(tokens_lookup(t, "ffffffffffffffffffffffff", tenant, role) != 0);
    CHECK(tokens_count(t) == 0);
    /* ... until it is back */
    f = fopen(path, "w");
    fputs("ffffffffffffffffffffffff frank user\n", f);
    fclose(f);
    CHECK(tokens_lookup(t, "ffffffffffffffffffffffff", tenant, role) == 0 &&
          strcmp(tenant, "frank") == 0 && tokens_count(t) == 1);
    /* unreadable (not root: mode 0; as root, which reads anyway, a directory
     * in its place makes fopen fail the same way): revoked as well */
    if (geteuid() != 0) {
        CHECK(chmod(path, 0) == 0);
    } else {
        CHECK(unlink(path) == 0 && mkdir(path, 0700) == 0);
    }
    CHECK(tokens_lookup(t, "ffffffffffffffffffffffff", tenant, role) != 0);
    CHECK(tokens_count(t) == 0);
    if (geteuid() == 0)
        rmdir(path);
    else
        unlink(path);
    tokens_destroy(&t);
    CHECK(t == NULL);
    CHECK(tokens_new("/nonexistent/tokens", "admin", err, sizeof err) == NULL &&
          strstr(err, "cannot read"));
}

/* Every value of the Status enum, as the schema has it now, has its own
 * HTTP status: a value added later fails here until gw/status.c maps it. */
static void test_status(void)
{
    const ProtobufCEnumDescriptor *d = &ttfleet__status__descriptor;
    CHECK(d->n_values >= 28);
    for (unsigned i = 0; i < d->n_values; i++) {
        int v = d->values[i].value;
        int http = gw_status_http(v);
        if (http == 0)
            fprintf(stderr, "status %s (%d) has no HTTP status in gw/status.c\n", d->values[i].name,
                    v);
        CHECK(http >= 200 && http <= 599);
        CHECK(strcmp(gw_status_name(v), d->values[i].name) == 0);
        /* only OK and QUEUED are successes */
        CHECK((http < 300) == (v == TTFLEET__STATUS__OK || v == TTFLEET__STATUS__QUEUED));
    }
    CHECK(gw_status_http(9999) == 0 && gw_status_http(-1) == 0);
    CHECK(strcmp(gw_status_name(9999), "UNKNOWN") == 0);
    CHECK(gw_status_http(TTFLEET__STATUS__QUEUED) == 202);
    CHECK(gw_status_http(TTFLEET__STATUS__QUOTA_EXCEEDED) == 403);
    CHECK(gw_status_http(TTFLEET__STATUS__RATE_LIMITED) == 429);
    CHECK(gw_status_http(TTFLEET__STATUS__UNAUTHENTICATED) == 401);
    CHECK(gw_status_http(TTFLEET__STATUS__IMAGE_IN_USE) == 409);
    CHECK(gw_status_http(TTFLEET__STATUS__GUEST_UNREACHABLE) == 503);
    CHECK(gw_status_http(TTFLEET__STATUS__QUEUE_FULL) == 503);
    /* Retry-After: the broker's "retry in N ms", rounded up to seconds */
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED,
                                "tenant 'a' sends ... (burst 2); retry in 2500 ms") == 3);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED, "retry in 10 ms") == 1);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED, "retry in -5 ms") == 1);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED, "retry in 99999999999999 ms") == 1);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED, "retry in x ms") == 1);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__RATE_LIMITED, NULL) == 1);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__QUOTA_EXCEEDED, "x") == 0);
    CHECK(gw_status_retry_after(TTFLEET__STATUS__ALREADY_EXISTS, "x") == 0);
}

/* process_*: the figures match what this process can see of itself */
static void test_process(void)
{
    metrics_process_t p;
    CHECK(metrics_process_read(&p) == 0);
    /* 600 more descriptors than before: process_open_fds counts them */
    unsigned before = p.open_fds;
    int fds[600];
    int n = 0;
    for (; n < 600; n++)
        if ((fds[n] = open("/dev/null", O_RDONLY)) < 0)
            break;
    CHECK(metrics_process_read(&p) == 0);
    CHECK(p.open_fds == before + (unsigned)n);
    for (int i = 0; i < n; i++)
        close(fds[i]);
    /* 64 MiB touched: resident memory grows by at least that */
    unsigned long long rss0 = p.resident_memory_bytes;
    size_t big = 64u << 20;
    char *m = malloc(big);
    CHECK(m != NULL);
    if (m)
        memset(m, 1, big);
    CHECK(metrics_process_read(&p) == 0);
    CHECK(p.resident_memory_bytes >= rss0 + big - (1u << 20));
    CHECK(p.virtual_memory_bytes >= p.resident_memory_bytes);
    /* CPU: spin until this process used 0.3 s more CPU time (by its own
     * clock, so a loaded machine only makes it slower; bounded at 30 s) */
    double cpu0 = p.cpu_seconds;
    volatile unsigned long long x = 0;
    struct timespec c0, c1, w0, w1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    clock_gettime(CLOCK_MONOTONIC, &w0);
    do {
        for (int i = 0; i < 1000000; i++)
            x += (unsigned long long)i * (m ? (unsigned char)m[i] : 1u);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
        clock_gettime(CLOCK_MONOTONIC, &w1);
    } while ((c1.tv_sec - c0.tv_sec) * 1000 + (c1.tv_nsec - c0.tv_nsec) / 1000000 < 300 &&
             w1.tv_sec - w0.tv_sec < 30);
    free(m);
    CHECK(metrics_process_read(&p) == 0);
    CHECK(p.cpu_seconds >= cpu0 + 0.25);
    /* started within the last minute, not in the future */
    time_t now = time(NULL);
    CHECK(p.start_time_seconds <= (double)now + 1 && p.start_time_seconds > (double)now - 60);
    /* the text: build info with the version escaped, every process_ series */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    CHECK(f != NULL);
    if (!f)
        return;
    metrics_write_process(f, "1.2\"3\n");
    fclose(f);
    CHECK(strstr(text, "ttfleet_build_info{version=\"1.2\\\"3\"} 1\n") != NULL);
    const char *names[] = {"process_cpu_seconds_total ",    "process_resident_memory_bytes ",
                           "process_virtual_memory_bytes ", "process_open_fds ",
                           "process_start_time_seconds ",   "process_max_fds "};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        CHECK(strstr(text, names[i]) != NULL);
    free(text);
}

int main(int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "all";
    bool all = strcmp(which, "all") == 0;
    if (all || strcmp(which, "roundtrip") == 0)
        test_roundtrip();
    if (all || strcmp(which, "hostile") == 0)
        test_hostile();
    if (all || strcmp(which, "tokens") == 0)
        test_tokens();
    if (all || strcmp(which, "status") == 0)
        test_status();
    if (all || strcmp(which, "process") == 0)
        test_process();
    return s_report("gw");
}
