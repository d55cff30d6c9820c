"""Multi-host pools: placement, liveness, drain / evacuate / remove, events.

Two pools of five real ttworker processes each (harness.Pool), on loopback:

- Placement: hosts of different sizes, engines and image sets (each worker
  has its own --images dir), so every constraint of the scheduler has a host
  that passes it and one that does not; best-fit and spread are checked
  against the placements the documented rule gives on that layout.
- Failures: five equal hosts with a fast heartbeat (--heartbeat-ms 200
  --liveness 5, so a host is down about 1 s after its worker dies); a worker
  killed with SIGKILL, drain, evacuate and remove.

Events are collected by a SUB socket on the broker's events endpoint for the
whole life of each pool, and `ttctl watch` is checked on its own.
"""

import collections
import json
import os
import signal
import subprocess
import threading
import time
import unittest

import zmq

import harness
from harness import ADMIN, EXIT_OK, EXIT_STATUS, SLEEPER, wait_for

HB_MS, LIVENESS = 200, 5


class Events:
    """Every event the broker publishes, from a SUB socket in a thread."""

    def __init__(self, endpoint):
        self.pb2 = harness.pb2()
        self.items = []
        self.lock = threading.Lock()
        self.stop = False
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.sock.connect(endpoint)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stop:
            if not poller.poll(100):
                continue
            topic, body = self.sock.recv_multipart()
            ev = self.pb2.Event()
            ev.ParseFromString(body)
            assert ev.kind == topic.decode(), (ev.kind, topic)
            with self.lock:
                self.items.append(ev)

    def close(self):
        self.stop = True
        self.thread.join(5)
        self.sock.close(0)

    def mark(self):
        with self.lock:
            return len(self.items)

    def since(self, mark, kind=None, **match):
        with self.lock:
            evs = self.items[mark:]
        return [e for e in evs
                if (kind is None or e.kind == kind)
                and all(getattr(e, k) == v for k, v in match.items())]

    def wait(self, mark, kind, timeout=10, **match):
        return wait_for("event %s %s" % (kind, match),
                        lambda: self.since(mark, kind, **match), timeout=timeout)


def images_dir(pool, host, names):
    """A --images dir holding exactly names (each the sleeper program)."""
    d = os.path.join(pool.dir, "images-" + host)
    os.makedirs(d, exist_ok=True)
    for n in names:
        path = os.path.join(d, n)
        with open(path, "w") as f:
            f.write(SLEEPER)
        os.chmod(path, 0o755)
    return d


def host_spec(cpu, mem, disk, engines="hollow", args=()):
    return {"cpu": cpu, "mem": mem, "disk": disk, "engines": engines,
            "args": ["--heartbeat-ms", str(HB_MS)] + list(args)}


class PoolCase(unittest.TestCase):
    HOSTS = {}
    IMAGES = {}
    BROKER_ARGS = []

    @classmethod
    def setUpClass(cls):
        harness.watchdog(280)
        cls.pool = harness.Pool(hosts=dict(cls.HOSTS), broker_args=[
            "--heartbeat-ms", str(HB_MS), "--liveness", str(LIVENESS)] + cls.BROKER_ARGS)
        for host, names in cls.IMAGES.items():
            cls.pool.hosts[host]["args"] += ["--images", images_dir(cls.pool, host, names)]
        try:
            cls.pool.start_broker()
            cls.events = Events(cls.pool.events_ep)
            for host in cls.pool.hosts:
                cls.pool.start_worker(host)
            cls.pool.wait_online(list(cls.pool.hosts))
        except BaseException:
            print(cls.pool.logs())
            cls.pool.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.events.close()
        cls.pool.close()
        harness.watchdog(0)

    # ---- helpers ----

    def ctl_ok(self, *args, tenant=None):
        r = self.pool.ctl(*args, tenant=tenant)
        self.assertEqual(r.rc, EXIT_OK, r)
        return r.data

    def create(self, name, image="sleeper", dup=1, engine="hollow", cpu=1, mem=512,
               disk=5000, spread=False, expect=EXIT_OK):
        args = ["env", "create", name, "--image", image, "--dup", dup, "--engine", engine,
                "--cpu", cpu, "--mem", mem, "--disk", disk]
        if spread:
            args.append("--spread")
        r = self.pool.ctl(*args)
        self.assertEqual(r.rc, expect, r)
        return r

    def delete(self, name):
        self.ctl_ok("env", "delete", name)

    def show(self, name):
        return self.ctl_ok("env", "show", name)

    def hosts_of(self, name):
        return collections.Counter(vm["host"] for vm in self.show(name)["vms"])

    def host(self, host_id):
        return self.ctl_ok("host", "show", host_id, tenant=ADMIN)

    def host_list(self):
        return {h["id"]: h for h in self.ctl_ok("host", "list", tenant=ADMIN)["hosts"]}


def model_place(hosts, used, vm, n, spread):
    """The scheduler's documented rule (broker/sched.c): among hosts that fit,
    best-fit takes the least free share (cpu + mem + disk fractions) left
    after placement, spread the most; ties go to the lower host id."""
    out = []
    used = {h: list(u) for h, u in used.items()}
    for _ in range(n):
        best, best_score = None, None
        for h in sorted(hosts):
            cap = hosts[h]
            u = used[h]
            if any(u[i] + vm[i] > cap[i] for i in range(3)):
                continue
            score = sum((cap[i] - u[i] - vm[i]) / cap[i] for i in range(3))
            if best is None or (score > best_score if spread else score < best_score):
                best, best_score = h, score
        out.append(best)
        for i in range(3):
            used[best][i] += vm[i]
    return out


class Placement(PoolCase):
    # h1 and h3 run the process engine; image "alpha" is on h1, h2, h5 and
    # "beta" on h3, h4, h5; sizes differ so best-fit and spread disagree.
    HOSTS = {
        "h1": host_spec(4, 4096, 40000, "process,hollow"),
        "h2": host_spec(8, 8192, 80000),
        "h3": host_spec(2, 2048, 20000, "process,hollow"),
        "h4": host_spec(16, 16384, 160000),
        "h5": host_spec(4, 4096, 40000),
    }
    IMAGES = {"h1": ["sleeper", "alpha"], "h2": ["sleeper", "alpha"],
              "h3": ["sleeper", "beta"], "h4": ["sleeper", "beta"],
              "h5": ["sleeper", "alpha", "beta"]}

    def caps(self):
        return {h: (s["cpu"], s["mem"], s["disk"]) for h, s in self.HOSTS.items()}

    def tearDown(self):
        # every test leaves the pool empty for the next
        envs = self.ctl_ok("env", "list")["envs"]
        for e in envs:
            self.delete(e["name"])
        # and every destroy answered: room a worker is still freeing counts
        # as used in placement (docs/RELIABILITY.md 11)
        deadline = time.monotonic() + 20
        while any(h.get("cpu_freeing", 0) or h.get("disk_freeing_mib", 0)
                  for h in self.host_list().values()):
            self.assertLess(time.monotonic(), deadline, "destroys not answered in 20 s")
            time.sleep(0.1)

    def test_hosts_listed_with_their_engines_and_images(self):
        hosts = self.host_list()
        self.assertEqual(set(hosts), set(self.HOSTS))
        for h, spec in self.HOSTS.items():
            self.assertEqual(hosts[h]["state"], "online")
            self.assertEqual(sorted(hosts[h]["engines"]), sorted(spec["engines"].split(",")))
            self.assertEqual(sorted(hosts[h]["images"]), sorted(self.IMAGES[h]))
            self.assertEqual(hosts[h]["cpu_total"], spec["cpu"])
            self.assertEqual(hosts[h]["mem_total"], spec["mem"])
            self.assertEqual(hosts[h]["disk_total"], spec["disk"])
        r = self.pool.ctl("host", "list", tenant=ADMIN, json_out=False)
        self.assertEqual(r.rc, EXIT_OK, r)
        header = r.out.splitlines()[0].split()
        for col in ("ID", "STATE", "ENGINES", "IMAGES", "CPU", "VMS", "LAST"):
            self.assertIn(col, header)

    def test_best_fit_packs_the_smallest_host_that_fits(self):
        vm = (1, 512, 5000)
        zero = {h: [0, 0, 0] for h in self.HOSTS}
        want = model_place(self.caps(), zero, vm, 3, spread=False)
        self.assertEqual(want, ["h3", "h3", "h1"])  # the rule, worked by hand
        self.create("bf", dup=3)
        self.assertEqual(self.hosts_of("bf"), collections.Counter(want))
        h = self.host("h3")
        self.assertEqual((h["cpu_used"], h["mem_used"], h["disk_used"], h["vm_count"]),
                         (2, 1024, 10000, 2))

    def test_spread_takes_the_emptiest_hosts(self):
        vm = (1, 512, 5000)
        zero = {h: [0, 0, 0] for h in self.HOSTS}
        want = model_place(self.caps(), zero, vm, 5, spread=True)
        self.assertEqual(want[:2], ["h4", "h2"])
        self.create("sp", dup=5, spread=True)
        self.assertEqual(self.hosts_of("sp"), collections.Counter(want))
        self.assertGreaterEqual(len(self.hosts_of("sp")), 3)

    def test_one_env_spans_hosts_and_show_names_them(self):
        # 3 cpus of 1 each with the process engine: h3 (2 cpus) then h1
        self.create("span", engine="process", dup=3, mem=256, disk=1000)
        env = self.show("span")
        self.assertEqual(env["state"], "running")
        self.assertEqual(self.hosts_of("span"), collections.Counter({"h3": 2, "h1": 1}))
        for vm in env["vms"]:
            self.assertEqual(vm["state"], "running")
            self.assertTrue(vm["ip"].startswith("10.10."))
        # a VM id names one VM of the env across its hosts: exec by id alone
        ids = [vm["vm_id"] for vm in env["vms"]]
        self.assertEqual(len(set(ids)), len(ids), env["vms"])
        h1_vm = [vm["vm_id"] for vm in env["vms"] if vm["host"] == "h1"][0]
        r = self.pool.ctl("env", "exec", "span", h1_vm, "--", "true", json_out=False)
        self.assertEqual(r.rc, EXIT_OK, r.err)

    def test_engine_constraint(self):
        self.create("eng", engine="process", dup=4, mem=256, disk=1000)
        self.assertLessEqual(set(self.hosts_of("eng")), {"h1", "h3"})
        r = self.create("noeng", engine="qemu", expect=EXIT_STATUS)
        self.assertIn("UNAVAILABLE", r.err)

    def test_image_constraint(self):
        # 2-cpu VMs, as many as the image's hosts hold: every one of them
        # is needed, and no other host is used
        self.create("alpha", image="alpha", dup=8, cpu=2, spread=True)  # 2 + 4 + 2
        self.assertEqual(set(self.hosts_of("alpha")), {"h1", "h2", "h5"})
        self.delete("alpha")
        self.create("beta", image="beta", dup=11, cpu=2, spread=True)  # 1 + 8 + 2
        self.assertEqual(set(self.hosts_of("beta")), {"h3", "h4", "h5"})
        r = self.create("gamma", image="gamma", expect=EXIT_STATUS)
        self.assertIn("UNAVAILABLE", r.err)
        self.assertIn("gamma", r.err)

    def test_cpu_mem_disk_constraints(self):
        self.create("bigcpu", cpu=10)
        self.assertEqual(set(self.hosts_of("bigcpu")), {"h4"})
        self.create("bigmem", mem=6000)
        self.assertLessEqual(set(self.hosts_of("bigmem")), {"h2", "h4"})
        self.create("bigdisk", disk=100000)
        self.assertEqual(set(self.hosts_of("bigdisk")), {"h4"})
        r = self.create("toobig", cpu=32, expect=EXIT_STATUS)
        self.assertIn("NO_CAPACITY", r.err)
        self.assertIn("cpu", r.err)
        # all-or-nothing: only two VMs of 5 cpus still fit (one on h2, one on
        # h4), so a create of four fails and leaves nothing behind
        before = self.host("h4")["vm_count"]
        r = self.create("partial", cpu=5, dup=4, expect=EXIT_STATUS)
        self.assertIn("NO_CAPACITY", r.err)
        self.assertEqual(self.pool.ctl("env", "show", "partial").rc, EXIT_STATUS)
        self.assertEqual(self.host("h4")["vm_count"], before)

    def test_env_create_wait(self):
        r = self.pool.ctl("env", "create", "waited", "--image", "sleeper", "--engine", "hollow",
                          "--cpu", 1, "--mem", 64, "--disk", 64, "--dup", 2, "--wait",
                          "--wait-timeout", 20)
        self.assertEqual(r.rc, EXIT_OK, r)
        self.assertEqual(r.data["state"], "running")
        self.assertTrue(all(vm["state"] == "running" for vm in r.data["vms"]))

    def test_watch_prints_an_envs_events(self):
        argv = [harness.binary("ttctl"), "--tenant", "default", "watch", "--json",
                "--events", self.pool.events_ep, "--env", "watched", "--count", "3",
                "--timeout", "15000"]
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.7)  # let the SUB connect and subscribe
            self.create("other")
            self.create("watched")
            out, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 0, err)
        lines = [json.loads(l) for l in out.splitlines()]
        self.assertEqual(len(lines), 3, out)
        self.assertEqual({l["env"] for l in lines}, {"watched"})
        # a VM with no readiness check is ready as soon as it runs
        self.assertEqual({l["kind"] for l in lines}, {"vm.state", "vm.ready", "env.created"})
        # --count not reached before --timeout: exit 1
        r = subprocess.run(argv[:-4] + ["--count", "1", "--timeout", "300"],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, EXIT_STATUS, r)


    def test_watch_shows_the_callers_tenant(self):
        """A plain watch shows only its tenant's events; --all-tenants every
        tenant's (the plain PUB stream has no CURVE here)."""
        base = [harness.binary("ttctl"), "--tenant", "default", "watch", "--json", "--events",
                self.pool.events_ep, "--topic", "env.created", "--timeout", "15000"]
        mine = subprocess.Popen(base + ["--count", "1"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        every = subprocess.Popen(base + ["--count", "2", "--all-tenants"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(0.7)  # let the SUBs connect and subscribe
            r = self.pool.ctl("env", "create", "bobs", "--image", "sleeper", "--engine", "hollow",
                              "--cpu", 1, "--mem", 64, "--disk", 64, tenant="bob")
            self.assertEqual(r.rc, EXIT_OK, r)
            self.create("mine")
            out, err = mine.communicate(timeout=20)
            out_all, err_all = every.communicate(timeout=20)
        finally:
            for p in (mine, every):
                if p.poll() is None:
                    p.kill()
                    p.wait()
            self.pool.ctl("env", "delete", "bobs", tenant="bob")
        self.assertEqual(mine.returncode, 0, err)
        self.assertEqual([(e["tenant"], e["env"]) for e in map(json.loads, out.splitlines())],
                         [("default", "mine")])
        self.assertEqual(every.returncode, 0, err_all)
        self.assertEqual([(e["tenant"], e["env"]) for e in map(json.loads, out_all.splitlines())],
                         [("bob", "bobs"), ("default", "mine")])
        r = self.pool.ctl("watch", "--all-tenants", "--env", "x", tenant="default")
        self.assertEqual(r.rc, harness.EXIT_USAGE, r)

    def test_watch_since_replays_the_log(self):
        """watch --since prints the broker's recent events first: the
        caller's tenant's, every tenant's for an admin with --all-tenants."""
        r = self.pool.ctl("env", "create", "bobs2", "--image", "sleeper", "--engine", "hollow",
                          "--cpu", 1, "--mem", 64, "--disk", 64, tenant="bob")
        self.assertEqual(r.rc, EXIT_OK, r)
        try:
            self.create("past")
            base = [harness.binary("ttctl"), "--broker", self.pool.clients_ep, "watch", "--json",
                    "--events", self.pool.events_ep, "--topic", "env.created", "--since", "5m",
                    "--timeout", "3000"]
            env = dict(os.environ, TTFLEET_CONFIG=os.devnull)
            p = subprocess.run(base[:1] + ["--tenant", "default"] + base[1:],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            got = [(e["tenant"], e["env"]) for e in map(json.loads, p.stdout.splitlines())]
            self.assertIn(("default", "past"), got)
            self.assertEqual({t for t, _ in got}, {"default"}, got)
            # the log is in broker.db: a restarted broker replays the same
            # events with the same ids, and later events get higher ones
            ids = [(int(e["id"]), e["env"]) for e in map(json.loads, p.stdout.splitlines())]
            self.assertTrue(all(i > 0 for i, _ in ids), ids)
            self.assertEqual(self.pool.stop_broker(), 0, self.pool.logs())
            self.pool.start_broker()
            self.pool.wait_online(list(self.pool.hosts))
            p = subprocess.run(base[:1] + ["--tenant", "default"] + base[1:],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            again = [(int(e["id"]), e["env"]) for e in map(json.loads, p.stdout.splitlines())]
            self.assertEqual(again[:len(ids)], ids)
            self.create("after")
            p = subprocess.run(base[:1] + ["--tenant", "default"] + base[1:] +
                               ["--env", "after", "--count", "1"],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            after = [int(e["id"]) for e in map(json.loads, p.stdout.splitlines())]
            self.assertEqual(len(after), 1, p.stdout)
            self.assertGreater(after[0], max(i for i, _ in ids))
            # one env.created of "past" in the log, and no second one comes
            p = subprocess.run(base[:1] + ["--tenant", "default"] + base[1:] +
                               ["--env", "past", "--count", "2"],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, EXIT_STATUS, p.stderr)
            self.assertEqual(len(p.stdout.splitlines()), 1, p.stdout)
            p = subprocess.run(base[:1] + ["--tenant", "default"] + base[1:] + ["--all-tenants"],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, EXIT_STATUS, p)
            self.assertIn("admin role", p.stderr)
            p = subprocess.run(base[:1] + ["--tenant", ADMIN] + base[1:] +
                               ["--all-tenants"],
                               capture_output=True, text=True, timeout=20, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            got = [(e["tenant"], e["env"]) for e in map(json.loads, p.stdout.splitlines())]
            self.assertIn(("bob", "bobs2"), got)
            self.assertIn(("default", "past"), got)
        finally:
            self.pool.ctl("env", "delete", "bobs2", tenant="bob")
            self.pool.ctl("env", "delete", "after")

class Failures(PoolCase):
    HOSTS = {h: host_spec(8, 8192, 80000) for h in ("h1", "h2", "h3", "h4", "h5")}

    def test_1_killed_worker_goes_down_and_comes_back(self):
        # spread over five equal hosts: one VM on each
        self.create("lv", dup=5, spread=True)
        self.assertEqual(self.hosts_of("lv"), collections.Counter(list(self.HOSTS)))
        victim = self.pool.workers["h5"]
        mark = self.events.mark()
        t0 = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.stop()
        limit = HB_MS * LIVENESS / 1000.0 + 1.0  # liveness, plus the tick and slack
        wait_for("h5 down", lambda: self.host("h5")["state"] == "down", timeout=10,
                 interval=0.05)
        took = time.monotonic() - t0
        self.assertLess(took, limit, "host down after %.2f s" % took)
        env = self.show("lv")
        self.assertEqual(env["state"], "degraded")
        lost = [vm for vm in env["vms"] if vm["state"] == "lost"]
        self.assertEqual([vm["host"] for vm in lost], ["h5"])
        self.events.wait(mark, "host.down", host="h5")
        self.events.wait(mark, "vm.state", host="h5", env="lv", state="lost")
        self.events.wait(mark, "env.state", env="lv", state="degraded")
        # suspect comes first (two missed heartbeats)
        self.events.wait(mark, "host.suspect", host="h5")
        kinds = [e.kind for e in self.events.since(mark, host="h5")
                 if e.kind.startswith("host.")]
        self.assertLess(kinds.index("host.suspect"), kinds.index("host.down"))
        # nothing new lands on a down host
        self.create("whiledown", dup=5, spread=True)
        self.assertNotIn("h5", self.hosts_of("whiledown"))
        self.delete("whiledown")
        # the worker restarts: same host, VMs back to running
        mark = self.events.mark()
        self.pool.start_worker("h5")
        self.pool.wait_online(["h5"])
        wait_for("lv running again", lambda: self.show("lv")["state"] == "running", timeout=10)
        self.assertEqual(set(self.host_list()), set(self.HOSTS))  # not a second h5
        self.events.wait(mark, "host.up", host="h5")
        self.events.wait(mark, "vm.state", host="h5", env="lv", state="running")

    def test_2_drain_keeps_new_placements_away(self):
        mark = self.events.mark()
        d = self.ctl_ok("host", "drain", "h1", tenant=ADMIN)
        self.assertTrue(d["host"]["draining"])
        self.assertIn("draining", d["message"])
        self.events.wait(mark, "host.drain", host="h1")
        self.create("dr", dup=8, spread=True)
        self.assertNotIn("h1", self.hosts_of("dr"))
        # drained hosts keep what they have
        self.assertEqual(self.show("lv")["state"], "running")
        self.assertGreaterEqual(self.host("h1")["vm_count"], 1)
        d = self.ctl_ok("host", "drain", "h1", "--undo", tenant=ADMIN)
        self.assertFalse(d["host"]["draining"])
        self.events.wait(mark, "host.undrain", host="h1")
        self.delete("dr")
        self.create("undrained", dup=10, spread=True)
        self.assertIn("h1", self.hosts_of("undrained"))
        self.delete("undrained")
        r = self.pool.ctl("host", "drain", "h1")  # not admin
        self.assertEqual(r.rc, EXIT_STATUS, r)
        self.assertIn("FORBIDDEN", r.err)
        r = self.pool.ctl("host", "drain", "nosuch", tenant=ADMIN)
        self.assertEqual(r.rc, EXIT_STATUS, r)
        self.assertIn("NOT_FOUND", r.err)

    def test_3_evacuate_recreates_vms_elsewhere(self):
        self.create("ev", dup=2)
        before = {vm["vm_id"]: vm for vm in self.show("ev")["vms"]}
        src = collections.Counter(vm["host"] for vm in before.values()).most_common(1)[0][0]
        on_src = {(vm["host"], vm["vm_id"], vm["mac"])
                  for vm in before.values() if vm["host"] == src}
        mark = self.events.mark()
        d = self.ctl_ok("host", "drain", src, "--evacuate", tenant=ADMIN)
        self.assertIn("moved", d["message"])
        self.assertEqual(d["host"]["vm_count"], 0)
        wait_for("ev running", lambda: self.show("ev")["state"] == "running", timeout=10)
        wait_for("lv running", lambda: self.show("lv")["state"] == "running", timeout=10)
        after = self.show("ev")["vms"]
        self.assertEqual(len(after), 2)
        self.assertNotIn(src, {vm["host"] for vm in after})
        old_macs = {m for _, _, m in on_src}
        for vm in after:
            self.assertEqual(vm["state"], "running")
            self.assertNotIn(vm["mac"], old_macs)
            self.assertTrue(vm["ports"] and vm["ports"][0]["guest"] == 22)
        moved = self.events.wait(mark, "vm.moved", env="ev")
        self.assertIn("moved from host " + src, moved[0].message)
        self.assertIn("ip 10.10.", moved[0].message)
        self.events.wait(mark, "host.drain", host=src)
        # the source worker destroyed the old VMs
        wait_for("old VMs gone from %s" % src, lambda: not self.pool.worker_vms(src), timeout=10)
        self.__class__.evacuated = src

    def test_4_remove_refused_with_vms_unless_forced(self):
        src = getattr(self.__class__, "evacuated", None)
        holder = next(h for h, v in self.host_list().items()
                      if v["vm_count"] > 0 and h != src)
        n_before = self.show("lv")["vm_count"]
        on_holder = sum(1 for vm in self.show("lv")["vms"] if vm["host"] == holder)
        self.pool.stop_worker(holder)
        wait_for("%s down" % holder, lambda: self.host(holder)["state"] == "down", timeout=10)
        r = self.pool.ctl("host", "remove", holder, tenant=ADMIN)
        self.assertEqual(r.rc, EXIT_STATUS, r)
        self.assertIn("INVALID_STATE", r.err)
        self.assertIn(holder, self.host_list())
        mark = self.events.mark()
        d = self.ctl_ok("host", "remove", holder, "--force", tenant=ADMIN)
        self.assertIn("removed", d["message"])
        self.assertNotIn(holder, self.host_list())
        self.events.wait(mark, "host.removed", host=holder)
        self.assertEqual(self.show("lv")["vm_count"], n_before - on_holder)
        # an empty host goes without --force
        if src:
            mark = self.events.mark()
            self.ctl_ok("host", "remove", src, tenant=ADMIN)
            self.events.wait(mark, "host.removed", host=src)
        r = self.pool.ctl("host", "remove", "nosuch", tenant=ADMIN)
        self.assertEqual(r.rc, EXIT_STATUS, r)
        self.assertIn("NOT_FOUND", r.err)


if __name__ == "__main__":
    unittest.main()
