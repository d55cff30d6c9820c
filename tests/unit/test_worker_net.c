/*
 * Unit tests of the nft backend's text (exact per-VM element changes, the
 * whole table) and of spawn (fork + exec with bounded waits). Nothing here
 * touches the host's network: the kernel-facing parts run in the
 * integration tests, inside namespaces.
 */
#include "test_util.h"

#include <signal.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "engine.h"
#include "net.h"
#include "proc.h"
#include "spawn.h"
#include "ttproto.h"

static vm_t s_vm(uint32_t id, const char *engine, bool deny)
{
    vm_t vm;
    memset(&vm, 0, sizeof vm);
    vm.vm_id = id;
    snprintf(vm.engine, sizeof vm.engine, "%s", engine);
    tt_vm_ip(id, vm.ip, sizeof vm.ip);
    vm.n_ports = 2;
    vm.ports[0] = (vm_port_t){22, 40000 + id};
    vm.ports[1] = (vm_port_t){80, 41000 + id};
    vm.deny_outgoing = deny;
    snprintf(vm.mac, sizeof vm.mac, "52:54:00:00:00:%02x", id & 0xff);
    snprintf(vm.env, sizeof vm.env, "t1/web");
    return vm;
}

static int s_count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

/* A registry in which "fancy" has a tap NIC and "qemu" nothing. */
static uint32_t s_fake_caps(const char *engine)
{
    return strcmp(engine, "fancy") == 0 ? TT_CAP_NIC_TAP : 0;
}

static void test_elements(void)
{
    vm_t a = s_vm(5, "qemu", false);
    char *t = net_elements_text(engine_caps_of, NULL, &a);
    CHECK(t && s_count(t, "add element ip ttfleet tcp_pub { 40005 : 10.10.0.5 . 22 }\n") == 1);
    CHECK(t && s_count(t, "add element ip ttfleet udp_pub { 41005 : 10.10.0.5 . 80 }\n") == 1);
    /* the port is bound to the VM's MAC, IP and group */
    uint32_t g = net_group("t1/web");
    char want[256];
    CHECK(t && strstr(t, "add element bridge ttfleet port_mac { \"tt5\" . 52:54:00:00:00:05 }\n"));
    CHECK(t && strstr(t, "add element bridge ttfleet port_ip { \"tt5\" . 10.10.0.5 }\n"));
    snprintf(want, sizeof want, "add element bridge ttfleet port_grp { \"tt5\" : 0x%08x }\n", g);
    CHECK(t && strstr(t, want));
    snprintf(want, sizeof want,
             "add element ip ttfleet member { 10.10.0.5 . 0x%08x, 10.10.0.5 . 0x%08x }\n", g,
             g | 0x80000000u);
    CHECK(t && strstr(t, want));
    CHECK(t && s_count(t, "add element") == 9 && !strstr(t, "delete"));
    free(t);

    /* same VM, port 80 -> 8080 and deny on: only the difference */
    vm_t b = a;
    b.ports[1] = (vm_port_t){8080, 42005};
    b.deny_outgoing = true;
    t = net_elements_text(engine_caps_of, &a, &b);
    CHECK(t && s_count(t, "delete element ip ttfleet tcp_pub { 41005 }\n") == 1);
    CHECK(t && s_count(t, "delete element ip ttfleet udp_pub { 41005 }\n") == 1);
    CHECK(t && s_count(t, "add element ip ttfleet tcp_pub { 42005 : 10.10.0.5 . 8080 }\n") == 1);
    /* deny-outgoing is the port's mark: the deny bit, by port, not by address */
    CHECK(t && strstr(t, "delete element bridge ttfleet port_grp { \"tt5\" }\n"));
    snprintf(want, sizeof want, "add element bridge ttfleet port_grp { \"tt5\" : 0x%08x }\n",
             g | 0x80000000u);
    CHECK(t && strstr(t, want));
    CHECK(t && !strstr(t, "port_mac") && !strstr(t, "member"));
    CHECK(t && !strstr(t, "40005")); /* port 22 is kept as it is */
    free(t);

    /* no change, no text */
    t = net_elements_text(engine_caps_of, &b, &b);
    CHECK(t && *t == 0);
    free(t);

    /* removal names every key exactly */
    t = net_elements_text(engine_caps_of, &b, NULL);
    CHECK(t && s_count(t, "delete element") == 9 && !strstr(t, "add element"));
    CHECK(t && strstr(t, "delete element bridge ttfleet port_grp { \"tt5\" }\n"));
    free(t);

    /* a hollow VM has no NIC: no elements */
    vm_t h = s_vm(6, "hollow", true);
    t = net_elements_text(engine_caps_of, NULL, &h);
    CHECK(t && *t == 0);
    free(t);

    /* the NIC comes from what the engine declares, not from its name: an
     * engine called "fancy" that declares a tap NIC gets elements, one
     * called "qemu" that declares none gets none */
    vm_t f = s_vm(9, "fancy", false);
    t = net_elements_text(s_fake_caps, NULL, &f);
    CHECK(t && s_count(t, "add element") == 9);
    free(t);
    vm_t q = s_vm(10, "qemu", false);
    t = net_elements_text(s_fake_caps, NULL, &q);
    CHECK(t && *t == 0);
    free(t);

    /* groups: one per env, never 0, bit 31 clear */
    CHECK(net_group("t1/web") == net_group("t1/web"));
    CHECK(net_group("t1/web") != net_group("t2/web"));
    CHECK(net_group("") != 0 && (net_group("t2/db") & 0x80000000u) == 0);
}

static void test_table(void)
{
    vm_t a = s_vm(2, "qemu", true), b = s_vm(3, "process", false);
    vm_t *vms[] = {&a, &b};
    char *t = net_table_text(engine_caps_of, vms, 2);
    CHECK(t && strncmp(t, "add table ip ttfleet\ndelete table ip ttfleet\n", 44) == 0);
    CHECK(t && strstr(t, "delete table bridge ttfleet\n"));
    CHECK(t && strstr(t, "dnat ip to tcp dport map @tcp_pub"));
    /* anti-spoofing on every VM port, isolation between groups */
    CHECK(t && strstr(t, "iifname . ether saddr != @port_mac drop"));
    CHECK(t && strstr(t, "ether type ip iifname . ip saddr != @port_ip drop"));
    CHECK(t && strstr(t, "ether type arp iifname . arp saddr ip != @port_ip drop"));
    CHECK(t && strstr(t, "oifname . meta mark != @port_in drop"));
    CHECK(t && strstr(t, "ip daddr . meta mark != @member drop"));
    CHECK(t && strstr(t, "meta mark and 0x80000000 == 0x80000000 drop"));
    CHECK(t && strstr(t, "iifname \"ttbr0\" drop;"));
    CHECK(t && !strstr(t, "ip saddr @deny"));
    CHECK(t && strstr(t, "masquerade"));
    CHECK(t && s_count(t, "add element") == 18); /* 2 VMs x (2 ports x tcp/udp + 5 port) */
    /* `fwd` is an nft keyword: never a name of ours */
    CHECK(t && !strstr(t, " fwd"));
    /* two envs whose groups collide: the later VM gets no element at all
     * (no network) rather than a group shared with a stranger */
    vm_t c = s_vm(7, "qemu", false), d = s_vm(8, "qemu", false);
    snprintf(c.env, sizeof c.env, "t/e368724");
    snprintf(d.env, sizeof d.env, "t/e798200");
    CHECK(net_group(c.env) == net_group(d.env));
    vm_t *clash[] = {&c, &d};
    char *t2 = net_table_text(engine_caps_of, clash, 2);
    CHECK(t2 && strstr(t2, "\"tt7\"") && !strstr(t2, "\"tt8\"") && !strstr(t2, "10.10.0.8"));
    free(t2);
    const char *dump = getenv("TT_NET_TABLE_DUMP");
    if (dump) {
        FILE *f = fopen(dump, "w");
        if (f) {
            fputs(t, f);
            fclose(f);
        }
    }
    free(t);
    CHECK(net_kind_parse("nft") == NET_NFT && net_kind_parse("user") == NET_USER &&
          net_kind_parse("none") == NET_NONE && net_kind_parse("nftables") == -1);
    char name[16];
    net_ifname(65534, name, sizeof name);
    CHECK(strcmp(name, "tt65534") == 0);
}

static void test_spawn(void)
{
    char err[256] = "";
    char *ok[] = {"/bin/true", NULL}, *bad[] = {"/bin/false", NULL};
    char *none[] = {"/nonexistent/prog", NULL}, *slow[] = {"/bin/sleep", "5", NULL};
    CHECK(spawn_run(ok, 2000, err, sizeof err) == 0);
    CHECK(spawn_run(bad, 2000, err, sizeof err) == -1 && strstr(err, "status 1"));
    CHECK(spawn_run(none, 2000, err, sizeof err) == -1 && strstr(err, "exec"));
    int64_t t0 = tt_mono_ms();
    CHECK(spawn_run(slow, 200, err, sizeof err) == -1 && strstr(err, "timed out"));
    CHECK(tt_mono_ms() - t0 < 2000);

    /* detached: pidfile written, pid and start time reported, exec errors seen */
    const char *dir = s_tmpdir_make("net");
    char pidfile[512];
    snprintf(pidfile, sizeof pidfile, "%s/pid", dir);
    pid_t pid = 0;
    uint64_t st = 0;
    char *sleeper[] = {"/bin/sleep", "30", NULL};
    CHECK(spawn_detached(sleeper, pidfile, -1, &pid, &st, err, sizeof err) == 0);
    CHECK(pid > 0 && proc_alive(pid, st));
    pid_t fpid = 0;
    uint64_t fst = 0;
    CHECK(proc_pidfile_read(pidfile, &fpid, &fst) == 0 && fpid == pid && fst == st);
    kill(pid, SIGKILL);
    CHECK(spawn_wait_gone(pid, st, 2000) == 0);
    CHECK(spawn_detached(none, pidfile, -1, &pid, &st, err, sizeof err) == -1);
    CHECK(access(pidfile, F_OK) != 0);

    char path[256];
    CHECK(spawn_which("sh", path, sizeof path) == 0 && path[0] == '/');
    CHECK(spawn_which("no-such-program-here", path, sizeof path) == -1);
}

int main(void)
{
    prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); /* as the worker: reap what we start */
    test_elements();
    test_table();
    test_spawn();
    return s_report("test_worker_net");
}
