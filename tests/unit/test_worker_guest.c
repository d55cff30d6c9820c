/*
 * Unit tests of the guest modules: seed (key and user-data validation, the
 * rendered meta-data / user-data / network-config, the ISO, the stored
 * inputs and the stable instance id), probe spec parsing and probes against
 * local listeners, and qga's parser and reply readers on canned answers
 * (hostile ones included).
 */
#include "test_util.h"

#include <arpa/inet.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe.h"
#include "qga.h"
#include "seed.h"
#include "ttproto.h"
#include "vmready.h"

#define KEY_ED                                                                                     \
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP1jw7R4xwdKDnuMnLfxNt59tJmxYANG/S9aWgUzWXJ3 me@x"

static void test_keys(void)
{
    char err[256];
    CHECK(seed_key_valid(KEY_ED, err, sizeof err) == 0);
    CHECK(seed_key_valid(
              "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIP1jw7R4xwdKDnuMnLfxNt59tJmxYANG/S9aWgUzWXJ3",
              err, sizeof err) == 0);
    /* the blob names another type */
    CHECK(seed_key_valid(
              "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIP1jw7R4xwdKDnuMnLfxNt59tJmxYANG/S9aWgUzWXJ3", err,
              sizeof err) == -1);
    CHECK(seed_key_valid("-----BEGIN OPENSSH PRIVATE KEY-----", err, sizeof err) == -1);
    CHECK(strstr(err, "not an SSH public key"));
    CHECK(seed_key_valid("command=\"x\" " KEY_ED, err, sizeof err) == -1);
    CHECK(seed_key_valid(KEY_ED "\nssh-ed25519 AAAA", err, sizeof err) == -1);
    CHECK(seed_key_valid("ssh-ed25519 !!!!", err, sizeof err) == -1);
    CHECK(seed_key_valid("ssh-ed25519", err, sizeof err) == -1);
    CHECK(seed_key_valid("", err, sizeof err) == -1);
    char big[SEED_KEY_MAX + 100];
    memset(big, 'A', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memcpy(big, "ssh-rsa ", 8);
    CHECK(seed_key_valid(big, err, sizeof err) == -1);
}

static void test_user_data(void)
{
    char err[256];
    CHECK(seed_user_data_valid("#cloud-config\n{}", 16, err, sizeof err) == 0);
    CHECK(seed_user_data_valid("#!/bin/sh\n", 10, err, sizeof err) == 0);
    CHECK(seed_user_data_valid("hello", 5, err, sizeof err) == -1);
    CHECK(seed_user_data_valid("#!/bin/sh\0x", 11, err, sizeof err) == -1);
    CHECK(strstr(err, "NUL"));
    char *big = malloc(SEED_USER_DATA_MAX + 2);
    memset(big, 'a', SEED_USER_DATA_MAX + 1);
    memcpy(big, "#!", 2);
    CHECK(seed_user_data_valid(big, SEED_USER_DATA_MAX, err, sizeof err) == 0);
    CHECK(seed_user_data_valid(big, SEED_USER_DATA_MAX + 1, err, sizeof err) == -1);
    CHECK(strstr(err, "at most 65536"));
    free(big);
}

static void test_render(void)
{
    char err[256], *md, *ud, *nc;
    const char *keys[] = {KEY_ED};
    seed_spec_t spec = {.instance_id = "tt-5-00",
                        .hostname = "web-5",
                        .mac = "52:54:00:00:00:05",
                        .dhcp = false,
                        .ip = "10.10.0.5",
                        .prefix = 16,
                        .gateway = "10.10.0.1",
                        .keys = keys,
                        .n_keys = 1};
    CHECK(seed_render(&spec, &md, &ud, &nc, err, sizeof err) == 0);
    json_t *j = json_loads(md, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(j, "instance-id")), "tt-5-00") == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "local-hostname")), "web-5") == 0);
    json_decref(j);
    j = json_loads(nc, 0, NULL);
    json_t *nic = json_object_get(json_object_get(j, "ethernets"), "nic0");
    CHECK(json_integer_value(json_object_get(j, "version")) == 2);
    CHECK(strcmp(json_string_value(json_object_get(json_object_get(nic, "match"), "macaddress")),
                 "52:54:00:00:00:05") == 0);
    CHECK(strcmp(json_string_value(json_array_get(json_object_get(nic, "addresses"), 0)),
                 "10.10.0.5/16") == 0);
    CHECK(json_is_false(json_object_get(nic, "dhcp4")));
    json_decref(j);
    /* keys only: a cloud-config whose body is JSON */
    CHECK(strncmp(ud, "#cloud-config\n", 14) == 0);
    j = json_loads(ud + 14, 0, NULL);
    CHECK(j &&
          strcmp(json_string_value(json_array_get(json_object_get(j, "ssh_authorized_keys"), 0)),
                 KEY_ED) == 0);
    json_decref(j);
    free(md);
    free(ud);
    free(nc);
    /* a script plus keys: multipart, the script base64, the keys after it */
    spec.dhcp = true;
    spec.user_data = "#!/bin/sh\necho hi\n";
    spec.user_data_len = strlen(spec.user_data);
    CHECK(seed_render(&spec, &md, &ud, &nc, err, sizeof err) == 0);
    CHECK(strstr(ud, "Content-Type: multipart/mixed"));
    CHECK(strstr(ud, "text/x-shellscript"));
    CHECK(strstr(ud, "IyEvYmluL3NoCmVjaG8gaGkK")); /* base64 of the script */
    CHECK(strstr(ud, "\"merge_how\""));
    CHECK(strstr(ud, KEY_ED));
    CHECK(strstr(nc, "\"dhcp4\":true") && !strstr(nc, "addresses"));
    free(md);
    free(ud);
    free(nc);
    /* user-data alone passes through unchanged */
    spec.n_keys = 0;
    spec.user_data = "#cloud-config\nruncmd: [[touch, /x]]\n";
    spec.user_data_len = strlen(spec.user_data);
    CHECK(seed_render(&spec, &md, &ud, &nc, err, sizeof err) == 0);
    CHECK(strcmp(ud, spec.user_data) == 0);
    free(md);
    free(ud);
    free(nc);
    /* a hostile key never reaches the files */
    const char *bad[] = {"ssh-ed25519 AAAA\"\n- evil"};
    spec.keys = bad;
    spec.n_keys = 1;
    CHECK(seed_render(&spec, &md, &ud, &nc, err, sizeof err) == -1);
}

static void test_hostname_and_ids(const char *dir)
{
    char h[64], err[256];
    seed_hostname("acme/CI_Job.1", 42, h, sizeof h);
    CHECK(strcmp(h, "ci-job-1-42") == 0);
    seed_hostname("acme/...", 3, h, sizeof h);
    CHECK(strcmp(h, "vm-3") == 0);
    seed_hostname("t/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 65534, h,
                  sizeof h);
    CHECK(strlen(h) <= 63);
    char a[64], b[64], c[64];
    CHECK(seed_instance_id(dir, 9, a, sizeof a, err, sizeof err) == 0);
    CHECK(seed_instance_id(dir, 9, b, sizeof b, err, sizeof err) == 0);
    CHECK(strcmp(a, b) == 0 && strncmp(a, "tt-9-", 5) == 0);
    char p[512];
    snprintf(p, sizeof p, "%s/instance-id", dir);
    unlink(p);
    CHECK(seed_instance_id(dir, 9, c, sizeof c, err, sizeof err) == 0);
    CHECK(strcmp(a, c) != 0);
}

static void test_inputs(const char *dir)
{
    char err[256];
    const char *keys[] = {KEY_ED, KEY_ED};
    CHECK(seed_inputs_save(dir, keys, 2, "#!/bin/sh\n", 10, err, sizeof err) == 0);
    char **k, *ud;
    size_t n, ul;
    CHECK(seed_inputs_load(dir, &k, &n, &ud, &ul, err, sizeof err) == 0);
    CHECK(n == 2 && strcmp(k[1], KEY_ED) == 0 && ul == 10 && memcmp(ud, "#!/bin/sh\n", 10) == 0);
    seed_inputs_free(k, n, ud);
    /* a bad input changes nothing */
    const char *bad[] = {"not a key"};
    CHECK(seed_inputs_save(dir, bad, 1, NULL, 0, err, sizeof err) == -1);
    CHECK(seed_inputs_load(dir, &k, &n, &ud, &ul, err, sizeof err) == 0);
    CHECK(n == 2 && ud);
    seed_inputs_free(k, n, ud);
    CHECK(seed_inputs_save(dir, NULL, 0, NULL, 0, err, sizeof err) == 0);
    CHECK(seed_inputs_load(dir, &k, &n, &ud, &ul, err, sizeof err) == 0);
    CHECK(n == 0 && !ud);
    seed_inputs_free(k, n, ud);
}

static void test_iso(const char *dir)
{
    char err[512], work[512], iso[512];
    const char *keys[] = {KEY_ED};
    seed_spec_t spec = {.instance_id = "tt-1-ab",
                        .hostname = "h-1",
                        .mac = "52:54:00:00:00:01",
                        .dhcp = true,
                        .keys = keys,
                        .n_keys = 1};
    snprintf(work, sizeof work, "%s/seed", dir);
    snprintf(iso, sizeof iso, "%s/seed.iso", dir);
    int rc = seed_build(&spec, work, iso, err, sizeof err);
    if (rc && strstr(err, "not installed")) {
        printf("skip iso: %s\n", err);
        return;
    }
    CHECK(rc == 0);
    /* ISO 9660 primary volume descriptor at 32 KiB: volume id at +40 */
    FILE *f = fopen(iso, "rb");
    char pvd[80] = "";
    CHECK(f && fseek(f, 32768, SEEK_SET) == 0 && fread(pvd, 1, sizeof pvd, f) == sizeof pvd);
    if (f)
        fclose(f);
    CHECK(memcmp(pvd + 1, "CD001", 5) == 0);
    CHECK(memcmp(pvd + 40, "CIDATA", 6) == 0 || memcmp(pvd + 40, "cidata", 6) == 0);
}

static void test_probe_specs(void)
{
    probe_spec_t s;
    char err[256];
    CHECK(probe_spec_parse("ssh", &s, err, sizeof err) == 0 && s.kind == PROBE_SSH && s.port == 22);
    CHECK(probe_spec_parse("none", &s, err, sizeof err) == 0 && s.kind == PROBE_NONE);
    CHECK(probe_spec_parse("tcp:8080", &s, err, sizeof err) == 0 && s.port == 8080);
    CHECK(probe_spec_parse("http:80", &s, err, sizeof err) == 0 && strcmp(s.arg, "/") == 0);
    CHECK(probe_spec_parse("http:80/healthz?x=1", &s, err, sizeof err) == 0 &&
          strcmp(s.arg, "/healthz?x=1") == 0);
    CHECK(probe_spec_parse("console:login: *$", &s, err, sizeof err) == 0 &&
          s.kind == PROBE_CONSOLE);
    CHECK(probe_spec_parse("agent", &s, err, sizeof err) == 0 && s.kind == PROBE_AGENT);
    CHECK(probe_spec_parse("cloud-init", &s, err, sizeof err) == 0 && s.kind == PROBE_CLOUD_INIT);
    const char *bad[] = {"",          "ssh:22",    "tcp",          "tcp:0",
                         "tcp:65536", "tcp:80x",   "http:x",       "http:80 /",
                         "console:",  "console:(", "carrier",      "SSH",
                         "tcp:-1",    "agent:1",   "http:80/\x01", "tcp:99999999999999999999",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        err[0] = 0;
        CHECK(probe_spec_parse(bad[i], &s, err, sizeof err) == -1);
        CHECK(err[0]);
    }
    char big[PROBE_SPEC_MAX + 20];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    memcpy(big, "console:", 8);
    CHECK(probe_spec_parse(big, &s, err, sizeof err) == -1);
}

/* A listener on 127.0.0.1 that answers each connection with banner. */
static int s_listen(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    bind(fd, (struct sockaddr *)&sa, sizeof sa);
    listen(fd, 4);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    *port = ntohs(sa.sin_port);
    return fd;
}

static char s_last_detail[256]; /* the detail of s_run_probe's probe at its end */

static int s_run_probe(const char *specs, int lfd, const char *answer, int max_ms)
{
    probe_spec_t spec;
    char err[256];
    if (probe_spec_parse(specs, &spec, err, sizeof err))
        return -2;
    probe_target_t t = {0};
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &sl);
    t.n_ports = 1;
    t.ports[0].guest = spec.port;
    t.ports[0].dial = ntohs(sa.sin_port);
    int64_t t0 = tt_mono_ms();
    probe_t *p = probe_new(&spec, &t, t0);
    int ready = 0;
    while (!ready && tt_mono_ms() - t0 < max_ms) {
        short ev;
        int fd = probe_fd(p, &ev);
        struct pollfd pf[2] = {{.fd = fd, .events = ev}, {.fd = lfd, .events = POLLIN}};
        poll(pf, 2, 50);
        if (pf[1].revents & POLLIN) {
            int c = accept(lfd, NULL, NULL);
            if (c >= 0) {
                if (write(c, answer, strlen(answer)) < 0)
                    CHECK(0);
                close(c);
            }
        }
        ready = probe_step(p, tt_mono_ms());
    }
    snprintf(s_last_detail, sizeof s_last_detail, "%s", probe_detail(p));
    probe_destroy(&p);
    return ready;
}

static void test_probes(const char *dir)
{
    uint16_t port;
    int lfd = s_listen(&port);
    CHECK(s_run_probe("ssh", lfd, "SSH-2.0-OpenSSH_9.2\r\n", 3000) == 1);
    CHECK(s_run_probe("ssh", lfd, "HTTP/1.0 200 OK\r\n", 2500) == 0);
    CHECK(s_run_probe("tcp:22", lfd, "", 3000) == 1);
    CHECK(s_run_probe("http:80/x", lfd, "HTTP/1.1 302 Found\r\n\r\n", 3000) == 1);
    CHECK(s_run_probe("http:80/x", lfd, "HTTP/1.1 500 Oops\r\n\r\n", 2500) == 0);
    /* a hostile guest's answer reaches the detail as printable ASCII only
     * (no ESC, DEL, C1 or bytes that are not UTF-8) */
    CHECK(s_run_probe("http:80/x", lfd, "HTTP/1.1 500 \x1b[2J\x9b\xff\xc3\x28\x7fOops\r\n\r\n",
                      2500) == 0);
    CHECK(strstr(s_last_detail, "unexpected answer: HTTP/1.1 500"));
    for (const char *c = s_last_detail; *c; c++)
        CHECK((unsigned char)*c >= 0x20 && (unsigned char)*c < 0x7f);
    close(lfd);
    /* nothing listens: pending, never ready, never blocks */
    lfd = s_listen(&port);
    close(lfd);
    probe_spec_t spec;
    char err[128];
    probe_spec_parse("tcp:1", &spec, err, sizeof err);
    probe_target_t t = {0};
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.n_ports = 1;
    t.ports[0].guest = 1;
    t.ports[0].dial = port;
    probe_t *p = probe_new(&spec, &t, tt_mono_ms());
    CHECK(probe_step(p, tt_mono_ms()) == 0);
    CHECK(probe_attempts(p) == 1 && probe_detail(p)[0]);
    probe_destroy(&p);
    /* console regex over the log tail */
    char log[512];
    snprintf(log, sizeof log, "%s/console.log", dir);
    FILE *f = fopen(log, "w");
    fprintf(f, "boot\n%c%cdebian login: \n", 0, 0);
    fclose(f);
    probe_spec_parse("console:login: *$", &spec, err, sizeof err);
    snprintf(t.console_log, sizeof t.console_log, "%s", log);
    p = probe_new(&spec, &t, tt_mono_ms());
    CHECK(probe_step(p, tt_mono_ms()) == 1);
    probe_destroy(&p);
    probe_spec_parse("console:^never$", &spec, err, sizeof err);
    p = probe_new(&spec, &t, tt_mono_ms());
    CHECK(probe_step(p, tt_mono_ms()) == 0);
    probe_destroy(&p);

    /* A hostile tenant pattern over a hostile guest line: a 64 KiB line of
     * 'a' and patterns on which POSIX regexec runs for 13 to 18 s (measured
     * with glibc 2.36). The bounded matcher gives up at its match limit, the
     * probe says why and is not ready; a ctest timeout catches a regression
     * to an unbounded matcher. */
    f = fopen(log, "w");
    for (int i = 0; i < PROBE_CONSOLE_TAIL; i++)
        fputc('a', f);
    fclose(f);
    const char *costly[] = {"console:([a-z]+[a-z]+)+[0-9]", "console:(.*a){20}b",
                            "console:(.*.*.*.*.*.*.*.*=)*x",
                            "console:(a|b|ab|ba|aa|bb)*(a|b|ab|ba)*c", NULL};
    for (int i = 0; costly[i]; i++) {
        CHECK(probe_spec_parse(costly[i], &spec, err, sizeof err) == 0);
        p = probe_new(&spec, &t, tt_mono_ms());
        CHECK(p && probe_step(p, tt_mono_ms()) == 0);
        CHECK(p && (strstr(probe_detail(p), "too costly") ||
                    strstr(probe_detail(p), "does not match")));
        probe_destroy(&p);
    }
    CHECK(probe_spec_parse(costly[0], &spec, err, sizeof err) == 0);
    p = probe_new(&spec, &t, tt_mono_ms());
    CHECK(p && probe_step(p, tt_mono_ms()) == 0 && strstr(probe_detail(p), "too costly"));
    probe_destroy(&p);
    /* the same log matched by a sane pattern; an unchanged log is not
     * matched again (no cost), a grown one is */
    CHECK(probe_spec_parse("console:a{8}$", &spec, err, sizeof err) == 0);
    p = probe_new(&spec, &t, tt_mono_ms());
    CHECK(p && probe_step(p, tt_mono_ms()) == 1);
    probe_destroy(&p);
    CHECK(probe_spec_parse("console:^up$", &spec, err, sizeof err) == 0);
    p = probe_new(&spec, &t, 0);
    CHECK(p && probe_step(p, 0) == 0);
    CHECK(p && probe_step(p, 10 * 1000) == 0);
    f = fopen(log, "a");
    fputs("\nup\n", f);
    fclose(f);
    CHECK(p && probe_step(p, 20 * 1000) == 1);
    probe_destroy(&p);
}

/* Patterns that would stall whoever compiles them (the broker validates
 * every create's spec on its loop): refused at once, with a reason. */
static void test_console_regex_bounds(void)
{
    tt_ready_t r;
    char err[256];
    const char *refused[] = {"console:((a{1,255}){1,255}){1,255}",
                             "console:((((((((((((((((((((((((((((((((((a))))))))))))))))))))))))))))))))))",
                             "console:a\\Cb", NULL};
    for (int i = 0; refused[i]; i++) {
        err[0] = 0;
        CHECK(tt_ready_parse(refused[i], &r, err, sizeof err) == -1);
        CHECK(strstr(err, "does not compile"));
    }
    CHECK(tt_ready_parse("console:login: *$", &r, err, sizeof err) == 0);
    CHECK(tt_ready_parse("console:(a*)*\\1b", &r, err, sizeof err) == 0);
    tt_console_re_t *re = tt_console_re_new("^ready$", err, sizeof err);
    CHECK(re);
    const char text[] = "boot\0\0noise\nready\nmore";
    CHECK(re && tt_console_re_match(re, text, sizeof text - 1) == 1);
    CHECK(re && tt_console_re_match(re, text, 10) == 0);
    tt_console_re_destroy(&re);
    CHECK(re == NULL);
    CHECK(tt_console_re_new("", err, sizeof err) == NULL);
}

/* vmready reports a new reason for not being ready (the fleet sends actuals
 * when a step returns 1), once per change, not every step. */
static void test_vmready_detail(void)
{
    uint16_t port;
    close(s_listen(&port)); /* nothing listens there now */
    vmready_t *rd = vmready_new();
    vmready_set_spec(rd, 7, "tcp:1");
    probe_target_t t = {0};
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.n_ports = 1;
    t.ports[0].guest = 1;
    t.ports[0].dial = port;
    Ttfleet__VmActual va = TTFLEET__VM_ACTUAL__INIT;
    int reports = 0, refused_at = -1;
    int64_t now = tt_mono_ms();
    for (int i = 0; i < 12; i++, now += 600) {
        int r = vmready_step(rd, 7, true, &t, NULL, now);
        CHECK(r == 0 || r == 1);
        reports += r;
        vmready_fill(rd, 7, &va);
        CHECK(!va.ready && va.ready_detail);
        if (refused_at < 0 && strstr(va.ready_detail, "refused")) {
            refused_at = i;
            CHECK(r == 1); /* the step that found the new reason reports it */
        }
        poll(NULL, 0, 20); /* let a loopback connect finish */
    }
    CHECK(refused_at >= 0);
    /* the first reason (not probed yet / the refusal) and the refusal: not 12 */
    CHECK(reports >= 1 && reports <= 2);
    vmready_destroy(&rd);
}

/* A VM's ports change (env update) while its probe waits for an answer:
 * the probe starts again on the new target and never dials the old public
 * port, which may be handed to another VM. */
static void test_vmready_target_change(void)
{
    uint16_t port;
    int lfd = s_listen(&port); /* accepts (backlog), never answers */
    vmready_t *rd = vmready_new();
    vmready_set_spec(rd, 8, "http:80/");
    probe_target_t t = {0};
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.mapped_only = true;
    t.n_ports = 1;
    t.ports[0].guest = 80;
    t.ports[0].dial = port;
    int64_t now = tt_mono_ms();
    vmready_step(rd, 8, true, &t, NULL, now);
    poll(NULL, 0, 20);
    vmready_step(rd, 8, true, &t, NULL, now + 20); /* connected, waiting for the answer */
    t.n_ports = 0;                                 /* port 80 is no longer the VM's */
    memset(&t.ports, 0, sizeof t.ports);
    vmready_step(rd, 8, true, &t, NULL, now + 40);
    Ttfleet__VmActual va = TTFLEET__VM_ACTUAL__INIT;
    vmready_fill(rd, 8, &va);
    CHECK(!va.ready && va.ready_detail && strstr(va.ready_detail, "not one of this VM's ports"));
    if (va.ready_detail && !strstr(va.ready_detail, "not one of"))
        fprintf(stderr, "  detail after the ports changed: %s\n", va.ready_detail);
    vmready_destroy(&rd);
    close(lfd);
}

/* A VM's QEMU forwards its public ports (user networking). A port it does
 * not forward (a live port update it could not apply because another
 * program holds the port) is never dialled, even though it is one of the
 * VM's ports now: the probe dials a port only while the listener on it is
 * the VM process's own socket. Here the "VM" is a child with its own
 * listener and "another program" is this process's listener. */
static void test_probe_owner(void)
{
    uint16_t other_port;
    int other = s_listen(&other_port); /* another program's, accepts, never answers */
    int pfd[2];
    CHECK(pipe(pfd) == 0);
    pid_t vm = fork();
    if (vm == 0) {
        close(other); /* not the VM's (an exec'd QEMU inherits no such fd) */
        uint16_t p;
        int l = s_listen(&p);
        if (write(pfd[1], &p, sizeof p) != sizeof p)
            _exit(1);
        pause();
        close(l);
        _exit(0);
    }
    uint16_t vm_port = 0;
    CHECK(vm > 0 && read(pfd[0], &vm_port, sizeof vm_port) == sizeof vm_port);
    close(pfd[0]);
    close(pfd[1]);
    probe_spec_t spec;
    char err[256];
    CHECK(probe_spec_parse("tcp:80", &spec, err, sizeof err) == 0);
    probe_target_t t = {0};
    snprintf(t.host, sizeof t.host, "127.0.0.1");
    t.mapped_only = true;
    t.owner_pid = vm;
    t.n_ports = 1;
    t.ports[0].guest = 80;
    /* the VM's port 80 maps to a public port the other program holds */
    t.ports[0].dial = other_port;
    int64_t t0 = tt_mono_ms();
    probe_t *p = probe_new(&spec, &t, t0);
    int ready = 0;
    while (!ready && tt_mono_ms() - t0 < 1500) {
        short ev;
        int fd = probe_fd(p, &ev);
        struct pollfd pf = {.fd = fd, .events = ev};
        poll(&pf, fd >= 0 ? 1 : 0, 50);
        ready = probe_step(p, tt_mono_ms());
    }
    CHECK(!ready && probe_attempts(p) >= 1);
    CHECK(strstr(probe_detail(p), "not forwarded by this VM"));
    probe_destroy(&p);
    /* never connected to: nothing waits to be accepted */
    struct pollfd lp = {.fd = other, .events = POLLIN};
    CHECK(poll(&lp, 1, 0) == 0);
    /* the VM's own listener is dialled */
    t.ports[0].dial = vm_port;
    t0 = tt_mono_ms();
    p = probe_new(&spec, &t, t0);
    ready = 0;
    while (!ready && tt_mono_ms() - t0 < 3000) {
        short ev;
        int fd = probe_fd(p, &ev);
        struct pollfd pf = {.fd = fd, .events = ev};
        poll(&pf, fd >= 0 ? 1 : 0, 50);
        ready = probe_step(p, tt_mono_ms());
    }
    CHECK(ready == 1);
    probe_destroy(&p);
    kill(vm, SIGKILL);
    waitpid(vm, NULL, 0);
    close(other);
}

static void test_qga_parser(void)
{
    char err[256];
    qga_t *q = qga_new();
    /* before the 0xFF of a sync everything is dropped (a stale reply) */
    qga_expect_sync(q);
    const char a[] = "{\"return\": 1}\n\xff{\"return\": 77}\n{\"return\": {\"pid\": 5}}\n";
    CHECK(qga_feed(q, a, sizeof a - 1, err, sizeof err) == 0);
    json_t *r = qga_next(q), *ret;
    CHECK(r && qga_reply(r, &ret, err, sizeof err) == 0 && json_integer_value(ret) == 77);
    json_decref(r);
    r = qga_next(q);
    CHECK(r && qga_reply(r, &ret, err, sizeof err) == 0 &&
          json_integer_value(json_object_get(ret, "pid")) == 5);
    json_decref(r);
    CHECK(qga_next(q) == NULL);
    /* split across feeds, junk lines skipped, errors read */
    const char *parts[] = {
        "not json\n[1,2]\n{\"err",
        "or\": {\"class\": \"GenericError\", \"desc\":", " \"no such file\"}}\n"};
    for (int i = 0; i < 3; i++)
        CHECK(qga_feed(q, parts[i], strlen(parts[i]), err, sizeof err) == 0);
    r = qga_next(q);
    CHECK(r && qga_reply(r, &ret, err, sizeof err) == -1 && strstr(err, "no such file"));
    json_decref(r);
    /* a "return" inside a string is not a return */
    const char *s = "{\"error\": {\"class\": \"x\", \"desc\": \"\\\"return\\\"\"}}\n";
    qga_feed(q, s, strlen(s), err, sizeof err);
    r = qga_next(q);
    CHECK(r && qga_reply(r, &ret, err, sizeof err) == -1);
    json_decref(r);
    qga_destroy(&q);
    /* an endless line fails the parser, bounded */
    q = qga_new();
    char *chunk = malloc(1 << 20);
    memset(chunk, 'x', 1 << 20);
    int rc = 0;
    for (int i = 0; i < 30 && rc == 0; i++)
        rc = qga_feed(q, chunk, 1 << 20, err, sizeof err);
    CHECK(rc == -1 && strstr(err, "longer"));
    CHECK(qga_feed(q, "\n", 1, err, sizeof err) == -1);
    free(chunk);
    qga_destroy(&q);
    char *req = qga_request("guest-exec", json_pack("{s:s}", "path", "/bin/\"x\n"));
    json_t *j = json_loads(req, 0, NULL);
    CHECK(j && strcmp(json_string_value(json_object_get(json_object_get(j, "arguments"), "path")),
                      "/bin/\"x\n") == 0);
    CHECK(strchr(req, '\n') == req + strlen(req) - 1);
    json_decref(j);
    free(req);
}

static void test_qga_replies(void)
{
    char err[256];
    qga_exec_t e;
    json_t *ret = json_loads("{\"exited\": true, \"exitcode\": 3, \"out-data\": \"aGkK\", "
                             "\"err-data\": \"b29wcwo=\"}",
                             0, NULL);
    CHECK(qga_exec_status_parse(ret, &e, err, sizeof err) == 0);
    CHECK(e.exited && e.exit_code == 3 && e.out_len == 3 && memcmp(e.out, "hi\n", 3) == 0);
    CHECK(e.err_len == 5 && memcmp(e.errb, "oops\n", 5) == 0 && !e.out_truncated);
    qga_exec_free(&e);
    json_decref(ret);
    ret = json_loads("{\"exited\": false}", 0, NULL);
    CHECK(qga_exec_status_parse(ret, &e, err, sizeof err) == 0 && !e.exited);
    qga_exec_free(&e);
    json_decref(ret);
    const char *bad[] = {"{}",
                         "{\"exited\": 1}",
                         "{\"exited\": true, \"exitcode\": \"3\"}",
                         "{\"exited\": true, \"out-data\": \"***\"}",
                         "{\"exited\": true, \"out-data\": 5}",
                         "[]",
                         NULL};
    for (int i = 0; bad[i]; i++) {
        ret = json_loads(bad[i], 0, NULL);
        CHECK(qga_exec_status_parse(ret, &e, err, sizeof err) == -1);
        json_decref(ret);
    }
    /* more output than QGA_OUTPUT_MAX: kept up to the bound, flagged */
    size_t raw = QGA_OUTPUT_MAX + 4096, b64 = 4 * ((raw + 2) / 3);
    char *text = malloc(b64 + 64);
    size_t o = (size_t)sprintf(text, "{\"exited\": true, \"exitcode\": 0, \"out-data\": \"");
    for (size_t i = 0; i < b64; i++)
        text[o++] = 'A';
    strcpy(text + o, "\"}");
    ret = json_loads(text, 0, NULL);
    CHECK(qga_exec_status_parse(ret, &e, err, sizeof err) == 0);
    CHECK(e.out_len == QGA_OUTPUT_MAX && e.out_truncated);
    qga_exec_free(&e);
    json_decref(ret);
    free(text);
    /* file reads: count must match the data; the cap holds */
    unsigned char buf[16];
    size_t len = 0;
    bool eof;
    ret = json_loads("{\"count\": 3, \"buf-b64\": \"aGkK\", \"eof\": false}", 0, NULL);
    CHECK(qga_file_read_parse(ret, buf, &len, sizeof buf, &eof, err, sizeof err) == 0);
    CHECK(len == 3 && !eof);
    json_decref(ret);
    ret = json_loads("{\"count\": 9, \"buf-b64\": \"aGkK\", \"eof\": true}", 0, NULL);
    CHECK(qga_file_read_parse(ret, buf, &len, sizeof buf, &eof, err, sizeof err) == -1);
    json_decref(ret);
    ret = json_loads("{\"count\": 24, \"buf-b64\": \"YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh\", "
                     "\"eof\": true}",
                     0, NULL);
    CHECK(qga_file_read_parse(ret, buf, &len, sizeof buf, &eof, err, sizeof err) == -1);
    json_decref(ret);
    CHECK(qga_path_valid("/tmp/x", err, sizeof err) == 0);
    CHECK(qga_path_valid("tmp/x", err, sizeof err) == -1);
    CHECK(qga_path_valid("/tmp/\nx", err, sizeof err) == -1);
}

/* A socket that accepts but never answers (QEMU's agent chardev with no
 * agent in the guest): qga_open says the image has no guest agent. */
static void test_qga_silent(const char *dir)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int w = snprintf(sa.sun_path, sizeof sa.sun_path, "%.60s/qga-silent.sock", dir);
    CHECK(w > 0 && (size_t)w < sizeof sa.sun_path);
    const char *path = sa.sun_path;
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    CHECK(l >= 0 && bind(l, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(l, 4) == 0);
    char err[512] = "";
    qga_conn_t *c = qga_open(path, 200, err, sizeof err);
    CHECK(c == NULL);
    CHECK(strstr(err, "the guest agent did not answer") && strstr(err, "has no guest agent"));
    qga_close(&c);
    close(l);
}

int main(void)
{
    const char *dir = s_tmpdir_make("guest");
    test_keys();
    test_user_data();
    test_render();
    test_hostname_and_ids(dir);
    test_inputs(dir);
    test_iso(dir);
    test_probe_specs();
    test_console_regex_bounds();
    test_vmready_target_change();
    test_probe_owner();
    test_probes(dir);
    test_vmready_detail();
    test_qga_parser();
    test_qga_replies();
    test_qga_silent(dir);
    return s_report("test_worker_guest");
}
