"""Every ttctl command end to end: ttctl -> ttbroker -> ttworker -> VM process.

EnvLifecycle shares one pool (one broker, one worker "h1" with 8 cpu,
8192 MiB, 409600 MiB disk, engines process and hollow) between its tests;
each test uses its own env names and deletes them. Restart stops and starts
the daemons of its own pool and checks that nothing moved.
"""

import json
import os
import time
import unittest

import harness
from harness import ADMIN, EXIT_STATUS, EXIT_TRANSPORT, EXIT_USAGE

SMALL = ["--cpu", "1", "--mem", "64", "--disk", "64"]
VM_KEYS = ("vm_id", "host", "image", "engine", "ip", "mac", "cpu", "mem_mib", "disk_mib", "state",
           "ports")


class PoolTest(unittest.TestCase):
    pool = None
    min_stop_interval = 0
    budget = 270  # seconds, below the ctest TIMEOUT

    @classmethod
    def setUpClass(cls):
        harness.watchdog(cls.budget)
        cls.pool = harness.Pool(min_stop_interval=cls.min_stop_interval).start()

    @classmethod
    def tearDownClass(cls):
        if cls.pool:
            cls.pool.close()
        harness.watchdog(0)

    # ---- helpers ----

    def ctl(self, *args, **kw):
        return self.pool.ctl(*args, **kw)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        self.assertEqual(r.err, "", repr(r))
        return r.data

    def fails(self, status, *args, **kw):
        """Runs a ttctl command that must fail with status; returns stderr."""
        r = self.ctl(*args, **kw)
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertTrue(r.err.startswith("ttctl: %s: " % status), repr(r))
        self.assertEqual(r.out, "", repr(r))
        return r.err

    def usage(self, *args):
        r = self.ctl(*args)
        self.assertEqual(r.rc, EXIT_USAGE, repr(r))
        self.assertTrue(r.err.startswith("ttctl: "), repr(r))
        return r.err

    def create(self, name, *extra, tenant=None, image="sleeper"):
        env = self.ok("env", "create", name, "--image", image, *SMALL, "--lifetime", 600,
                      *extra, tenant=tenant)
        self.addCleanup(self.ctl, "env", "delete", name, tenant=tenant)
        return env

    def show(self, name, tenant=None):
        return self.ok("env", "show", name, tenant=tenant)

    def host(self, host_id="h1"):
        return self.ok("host", "show", host_id, tenant=ADMIN)

    def vm_pids(self, host="h1"):
        return {vm: (row["pid"], row["start_time"])
                for vm, row in self.pool.worker_vms(host).items() if row["pid"] > 0}

    def check_env_shape(self, env, name, tenant="default"):
        self.assertEqual(env["name"], name)
        self.assertEqual(env["tenant"], tenant)
        self.assertIsInstance(env["state"], str)
        for key in ("created_at", "expires_at", "lifetime", "vm_count"):
            self.assertIsInstance(env[key], int)
        # the REST dialect: proto fields only, no derived ISO strings
        self.assertNotIn("created", env)
        self.assertTrue(env["expires_at"] > env["created_at"] > 1.5e9, env)
        self.assertIsInstance(env["deny_outgoing"], bool)
        self.assertIn(22, env["ports"])
        self.assertEqual(env["vm_count"], len(env["vms"]))
        publics = []
        for vm in env["vms"]:
            self.assertEqual(set(VM_KEYS), set(vm) & set(VM_KEYS), vm)
            self.assertRegex(vm["ip"], r"^10\.10\.\d+\.\d+$")
            self.assertRegex(vm["mac"], r"^52:54:00(:[0-9a-f]{2}){3}$")
            self.assertTrue(2 <= vm["vm_id"] <= 65534)
            guests = sorted(p["guest"] for p in vm["ports"])
            self.assertEqual(guests, sorted(env["ports"]), vm)
            for p in vm["ports"]:
                self.assertTrue(40000 <= p["public"] <= 59999, p)
                publics.append(p["public"])
        self.assertEqual(len(publics), len(set(publics)), "public ports reused: %s" % publics)
        self.assertEqual(len({v["ip"] for v in env["vms"]}), len(env["vms"]))
        self.assertEqual(len({v["mac"] for v in env["vms"]}), len(env["vms"]))


class EnvLifecycle(PoolTest):

    def test_create_show_list_delete(self):
        env = self.create("basic", "--dup", 2, "--port", 80)
        self.check_env_shape(env, "basic")
        self.assertEqual(env["state"], "running")
        self.assertEqual(env["lifetime"], 600)
        self.assertEqual(env["expires_at"] - env["created_at"], 600)
        self.assertEqual(sorted(env["ports"]), [22, 80])
        self.assertEqual(len(env["vms"]), 2)
        for vm in env["vms"]:
            self.assertEqual((vm["host"], vm["image"], vm["engine"], vm["state"]),
                             ("h1", "sleeper", "process", "running"))
            self.assertEqual((vm["cpu"], vm["mem_mib"], vm["disk_mib"]), (1, 64, 64))

        shown = self.show("basic")
        self.check_env_shape(shown, "basic")
        self.assertEqual([v["vm_id"] for v in shown["vms"]], [v["vm_id"] for v in env["vms"]])
        self.assertEqual(shown["vms"], env["vms"])

        # The VMs are real processes on the host, recorded by the worker.
        pids = self.vm_pids()
        for vm in env["vms"]:
            self.assertIn(vm["vm_id"], pids)
            self.assertTrue(harness.proc_alive(*pids[vm["vm_id"]]))

        listed = self.ok("env", "list")
        entry = [e for e in listed["envs"] if e["name"] == "basic"]
        self.assertEqual(len(entry), 1, listed)
        self.assertEqual(entry[0]["vm_count"], 2)
        self.assertEqual(entry[0]["state"], "running")

        # Human forms print tables, not JSON.
        r = self.ctl("env", "show", "basic", json_out=False)
        self.assertEqual(r.rc, 0, repr(r))
        self.assertIn("VMID", r.out)
        self.assertIn("22->", r.out)
        r = self.ctl("env", "list", json_out=False)
        self.assertEqual(r.rc, 0, repr(r))
        self.assertRegex(r.out, r"(?m)^basic\s+running\s+2\s")

        self.ok("env", "delete", "basic")
        self.fails("NOT_FOUND", "env", "show", "basic")
        for vm_id, (pid, start) in pids.items():
            if vm_id in [v["vm_id"] for v in env["vms"]]:
                harness.wait_for("VM %d process to end" % vm_id,
                                 lambda: not harness.proc_alive(pid, start), timeout=20)

    def test_defaults(self):
        env = self.ok("env", "create", "defaults", "--image", "sleeper")
        self.addCleanup(self.ctl, "env", "delete", "defaults")
        self.check_env_shape(env, "defaults")
        self.assertEqual(env["lifetime"], 3600)
        self.assertEqual(env["ports"], [22])
        self.assertFalse(env["deny_outgoing"])
        vm = env["vms"][0]
        self.assertEqual((vm["cpu"], vm["mem_mib"], vm["disk_mib"], vm["engine"]),
                         (2, 1024, 40960, "process"))

    def test_multiple_images_and_hollow(self):
        env = self.create("multi", "--dup", 2, "--image", "bravo-sleeper", "--engine", "hollow")
        images = sorted(v["image"] for v in env["vms"])
        self.assertEqual(images, ["bravo-sleeper", "sleeper", "sleeper"])
        self.assertTrue(all(v["engine"] == "hollow" for v in env["vms"]))
        self.assertTrue(all(v["state"] == "running" for v in env["vms"]))

    def test_capacity_exceeded(self):
        before = self.host()
        err = self.fails("NO_CAPACITY", "env", "create", "toobig", "--image", "sleeper",
                         "--dup", 3, "--cpu", 4, "--mem", 64, "--disk", 64)
        for word in ("total", "used", "wanted"):
            self.assertIn(word, err.lower())
        self.assertIn("cpu", err.lower())
        err = self.fails("NO_CAPACITY", "env", "create", "toobig", "--image", "sleeper",
                         "--cpu", 1, "--mem", 9000, "--disk", 64)
        self.assertIn("mem", err.lower())
        # Nothing was kept.
        self.fails("NOT_FOUND", "env", "show", "toobig")
        after = self.host()
        for key in ("cpu_used", "mem_used", "disk_used", "vm_count"):
            self.assertEqual(before[key], after[key], key)

    def test_unknown_env(self):
        for args in (["show"], ["stop"], ["start"], ["pause"], ["resume"], ["delete"],
                     ["extend", "nope", 100], ["update", "nope", "--allow-outgoing"],
                     ["rm-vm", "nope", "--image", "sleeper"]):
            if args[0] not in ("extend", "update", "rm-vm"):
                args = args + ["nope"]
            self.fails("NOT_FOUND", "env", *args)
        self.fails("NOT_FOUND", "host", "show", "no-such-host", tenant=ADMIN)

    def test_bad_names_in_ttctl(self):
        for name in (".hidden", "a b", "x" * 65, "a/b", ""):
            self.usage("env", "create", name, "--image", "sleeper")
            self.usage("env", "show", name)
        self.usage("env", "create", "ok", "--image", "../etc")
        self.usage("env", "create", "ok", "--image", "sleeper", "--cpu", "0")
        self.usage("env", "create", "ok", "--image", "sleeper", "--cpu", "1.5")
        self.usage("env", "create", "ok", "--image", "sleeper", "--port", "70000")
        self.usage("env", "create", "ok", "--image", "sleeper", "--lifetime", "-1")
        self.usage("env", "create", "ok", "--dup", "2", "--image", "sleeper")
        self.usage("env", "create", "ok")
        self.usage("env", "extend", "ok", "soon")
        self.usage("env", "update", "ok")
        self.usage("env", "rm-vm", "ok")
        self.usage("env", "rm-vm", "ok", "1")
        self.usage("--tenant", "bad tenant", "env", "list")
        self.usage("--timeout", "0", "env", "list")
        self.usage("env", "frobnicate", "x")
        self.usage("nonsense")
        r = self.ctl("env", "create", "--help", json_out=False)
        self.assertEqual(r.rc, 0)
        self.assertIn("--deny-outgoing", r.out)
        r = self.ctl("--help", json_out=False)
        self.assertEqual(r.rc, 0)
        self.assertIn("env rm-vm", r.out)

    def test_bad_names_at_broker(self):
        """What ttctl refuses to send, the broker refuses too."""
        pb = harness.pb2()
        c = self.pool.client()
        try:
            for name in (".hidden", "a b", "x" * 65, "a/b", ""):
                req = pb.Request()
                req.env_create.name = name
                req.env_create.images.add(image="sleeper")
                reply = c.call("tt.env", req)
                self.assertEqual(reply.status, pb.BAD_REQUEST, (name, reply))
                self.assertTrue(reply.message)
                req = pb.Request()
                req.env_show.name = name
                self.assertEqual(c.call("tt.env", req).status, pb.BAD_REQUEST)
            req = pb.Request()
            req.env_create.name = "ok"
            req.env_create.images.add(image="../etc")
            self.assertEqual(c.call("tt.env", req).status, pb.BAD_REQUEST)
            req = pb.Request()
            req.env_show.name = "ok"
            req.tenant = "bad tenant"
            self.assertEqual(c.call("tt.env", req).status, pb.BAD_REQUEST)
            req = pb.Request()  # no op at all
            self.assertEqual(c.call("tt.env", req).status, pb.BAD_REQUEST)
            req = pb.Request()
            req.pool_status.SetInParent()
            reply = c.call("tt.nothing", req)
            self.assertEqual(reply.status, pb.UNKNOWN_SERVICE, reply)
        finally:
            c.close()
        self.fails("NOT_FOUND", "env", "show", "ok")

    def test_unknown_image(self):
        err = self.fails("UNAVAILABLE", "env", "create", "noimg", "--image", "no-such-image",
                         *SMALL)
        self.assertIn("no-such-image", err)
        self.fails("NOT_FOUND", "env", "show", "noimg")

    def test_duplicate_name(self):
        self.create("dup")
        self.fails("ALREADY_EXISTS", "env", "create", "dup", "--image", "sleeper", *SMALL)
        # Another tenant may use the same name.
        self.create("dup", tenant="other")
        self.assertEqual(self.show("dup", tenant="other")["tenant"], "other")

    def test_lifetime_limits(self):
        err = self.fails("FORBIDDEN", "env", "create", "long", "--image", "sleeper", *SMALL,
                         "--lifetime", 6 * 3600 + 1)
        self.assertTrue(err)
        self.fails("NOT_FOUND", "env", "show", "long")
        env = self.ok("env", "create", "long", "--image", "sleeper", *SMALL, "--lifetime",
                      6 * 3600)
        self.addCleanup(self.ctl, "env", "delete", "long")
        self.assertEqual(env["lifetime"], 6 * 3600)
        # The admin may go past 6 h.
        env = self.ok("env", "create", "long", "--image", "sleeper", *SMALL, "--lifetime",
                      24 * 3600, tenant=ADMIN)
        self.addCleanup(self.ctl, "env", "delete", "long", tenant=ADMIN)
        self.assertEqual(env["expires_at"] - env["created_at"], 24 * 3600)

    def test_extend(self):
        env = self.create("ext")
        out = self.ok("env", "extend", "ext", 1200)
        shown = self.show("ext")
        self.assertEqual(shown["lifetime"], 1200)
        self.assertEqual(shown["expires_at"], env["created_at"] + 1200)
        if out.get("name"):
            self.assertEqual(out["expires_at"], shown["expires_at"])
        # Shorten too; over 6 h is the admin's.
        self.ok("env", "extend", "ext", 300)
        self.assertEqual(self.show("ext")["expires_at"], env["created_at"] + 300)
        self.fails("FORBIDDEN", "env", "extend", "ext", 6 * 3600 + 1)
        self.assertEqual(self.show("ext")["lifetime"], 300)
        # durations: 20m sets the lifetime, +1h adds to the current one
        self.ok("env", "extend", "ext", "20m")
        self.assertEqual(self.show("ext")["lifetime"], 1200)
        self.ok("env", "extend", "ext", "+1h")
        self.assertEqual(self.show("ext")["lifetime"], 4800)
        self.ok("env", "extend", "ext", "1h30m")
        self.assertEqual(self.show("ext")["lifetime"], 5400)
        self.fails("FORBIDDEN", "env", "extend", "ext", "+5h")
        self.assertEqual(self.show("ext")["lifetime"], 5400)
        for bad in ("10x", "+", "1h30", "0", "1ms"):
            self.assertIn("not a duration", self.usage("env", "extend", "ext", bad))

    def test_durations_state_filter_and_formats(self):
        self.create("dur", "--lifetime", "2h")
        self.assertEqual(self.show("dur")["lifetime"], 7200)
        self.create("parked")
        self.ok("env", "stop", "parked")
        names = lambda *a: [e["name"] for e in self.ok("env", "list", *a)["envs"]]
        self.assertIn("parked", names("--state", "stopped"))
        self.assertNotIn("dur", names("--state", "stopped"))
        self.assertIn("dur", names("--state", "running"))
        self.assertNotIn("parked", names("--state", "running"))
        self.assertIn("--state takes", self.usage("env", "list", "--state", "sleepy"))
        # -o yaml is the JSON tree, -o json the same as --json
        import yaml
        shown = self.show("dur")
        r = self.ctl("-o", "yaml", "env", "show", "dur", json_out=False)
        self.assertEqual(r.rc, 0, repr(r))
        self.assertEqual(yaml.safe_load(r.out), shown)
        r = self.ctl("env", "show", "dur", "--output=json", json_out=False)
        self.assertEqual(json.loads(r.out), shown)
        # the JSON dialect: proto field names, lower-case enum names
        self.assertEqual(shown["vms"][0]["state"], "running")
        self.assertEqual((shown["vms"][0]["mem_mib"], shown["vms"][0]["disk_mib"]), (64, 64))
        r = self.ctl("env", "list", "-o", "wide", json_out=False)
        self.assertRegex(r.out, r"(?m)^NAME\s+TENANT\s+STATE\s+VMS\s+CREATED\s+EXPIRES\s+LIFETIME")
        self.assertRegex(r.out, r"(?m)^dur\s+default\s+running\s+1\s+\S+\s+\S+\s+7200s\s+allowed")
        r = self.ctl("env", "list", json_out=False)
        self.assertNotIn("LIFETIME", r.out)

    def test_stop_start(self):
        env = self.create("ss", "--dup", 2, "--port", 8080)
        host_running = self.host()
        self.ok("env", "stop", "ss")
        stopped = self.show("ss")
        self.assertEqual(stopped["state"], "stopped")
        self.assertTrue(all(v["state"] == "stopped" for v in stopped["vms"]), stopped)
        # Stop releases cpu and mem, keeps disk.
        host_stopped = self.host()
        self.assertEqual(host_stopped["cpu_used"], host_running["cpu_used"] - 2)
        self.assertEqual(host_stopped["mem_used"], host_running["mem_used"] - 128)
        self.assertEqual(host_stopped["disk_used"], host_running["disk_used"])
        self.fails("INVALID_STATE", "env", "pause", "ss")
        self.ok("env", "start", "ss")
        started = self.show("ss")
        self.assertEqual(started["state"], "running")
        # Disks, addresses and ports were kept.
        key = lambda e: [(v["vm_id"], v["ip"], v["mac"], v["ports"]) for v in e["vms"]]
        self.assertEqual(key(started), key(env))
        self.assertEqual(self.host()["cpu_used"], host_running["cpu_used"])

    def test_pause_resume(self):
        self.create("pr", "--dup", 2)
        self.ok("env", "pause", "pr")
        env = self.show("pr")
        self.assertEqual(env["state"], "paused")
        self.assertTrue(all(v["state"] == "paused" for v in env["vms"]), env)
        self.ok("env", "resume", "pr")
        env = self.show("pr")
        self.assertEqual(env["state"], "running")
        self.assertTrue(all(v["state"] == "running" for v in env["vms"]), env)

    def test_update(self):
        env = self.create("upd", "--port", 80)
        # Hardware only while stopped.
        for opt in ("--cpu", "--mem", "--disk"):
            self.fails("INVALID_STATE", "env", "update", "upd", opt, 2)
        # Ports change live: 22 stays, 80 goes, 8080 and 9090 come.
        self.ok("env", "update", "upd", "--port", 8080, "--port", 9090)
        shown = self.show("upd")
        self.check_env_shape(shown, "upd")
        self.assertEqual(sorted(shown["ports"]), [22, 8080, 9090])
        old22 = [p["public"] for p in env["vms"][0]["ports"] if p["guest"] == 22]
        new22 = [p["public"] for p in shown["vms"][0]["ports"] if p["guest"] == 22]
        self.assertEqual(old22, new22, "the port of 22 moved")
        # Outgoing access toggles live.
        self.ok("env", "update", "upd", "--deny-outgoing")
        self.assertTrue(self.show("upd")["deny_outgoing"])
        self.ok("env", "update", "upd", "--allow-outgoing")
        self.assertFalse(self.show("upd")["deny_outgoing"])
        self.assertEqual(self.show("upd")["state"], "running")
        # Stopped: hardware may change, with a capacity check.
        self.ok("env", "stop", "upd")
        self.ok("env", "update", "upd", "--cpu", 2, "--mem", 128, "--disk", 256)
        vm = self.show("upd")["vms"][0]
        self.assertEqual((vm["cpu"], vm["mem_mib"], vm["disk_mib"]), (2, 128, 256))
        self.fails("NO_CAPACITY", "env", "update", "upd", "--cpu", 200)
        self.ok("env", "start", "upd")
        shown = self.show("upd")
        self.assertEqual(shown["state"], "running")
        self.assertEqual(shown["vms"][0]["cpu"], 2)

    def test_rm_vm(self):
        env = self.create("rm", "--dup", 3, "--image", "bravo-sleeper", "--dup", 2)
        self.assertEqual(env["vm_count"], 5)
        ids = sorted(v["vm_id"] for v in env["vms"] if v["image"] == "sleeper")
        pids = self.vm_pids()
        # By id.
        self.ok("env", "rm-vm", "rm", ids[0])
        shown = self.show("rm")
        self.assertEqual(shown["vm_count"], 4)
        self.assertNotIn(ids[0], [v["vm_id"] for v in shown["vms"]])
        if ids[0] in pids:
            harness.wait_for("removed VM process to end",
                             lambda: not harness.proc_alive(*pids[ids[0]]), timeout=20)
        self.fails("NOT_FOUND", "env", "rm-vm", "rm", ids[0])
        # By image prefix: "bravo" takes both bravo-sleeper VMs, not sleeper.
        self.ok("env", "rm-vm", "rm", "--image", "bravo")
        shown = self.show("rm")
        self.assertEqual(sorted(v["image"] for v in shown["vms"]), ["sleeper", "sleeper"])
        self.assertEqual(sorted(v["vm_id"] for v in shown["vms"]), ids[1:])
        self.fails("NOT_FOUND", "env", "rm-vm", "rm", "--image", "bravo")
        # Several ids at once.
        self.ok("env", "rm-vm", "rm", *ids[1:])
        self.assertEqual(self.show("rm")["vm_count"], 0)

    def test_list_all_tenants(self):
        self.create("l1")
        self.create("l2", tenant="other2")
        mine = [e["name"] for e in self.ok("env", "list")["envs"]]
        self.assertIn("l1", mine)
        self.assertNotIn("l2", mine)
        self.fails("FORBIDDEN", "env", "list", "--all")
        every = {(e["tenant"], e["name"]) for e in self.ok("env", "list", "--all",
                                                           tenant=ADMIN)["envs"]}
        self.assertIn(("default", "l1"), every)
        self.assertIn(("other2", "l2"), every)
        r = self.ctl("env", "list", "--all", tenant=ADMIN, json_out=False)
        self.assertRegex(r.out, r"(?m)^l2\s+other2\s+running")

    def test_hosts_and_status(self):
        hosts = self.ok("host", "list", tenant=ADMIN)["hosts"]
        self.assertEqual([h["id"] for h in hosts], ["h1"])
        h = hosts[0]
        self.assertEqual(h["state"], "online")
        self.assertEqual((h["cpu_total"], h["mem_total"], h["disk_total"]), (8, 8192, 409600))
        self.assertEqual(sorted(h["engines"]), ["hollow", "process"])
        # the proto's field: unix seconds (the REST dialect has no ISO form)
        self.assertIsInstance(h["last_seen"], int)
        self.assertNotIn("last_seen_iso", h)
        self.assertIn("sleeper", h["images"])
        self.assertIn("bravo-sleeper", h["images"])
        self.assertEqual(self.host("h1")["id"], "h1")
        self.fails("FORBIDDEN", "host", "list")
        self.fails("FORBIDDEN", "host", "show", "h1")

        self.create("st", "--dup", 2)
        st = self.ok("status", tenant=ADMIN)
        self.assertEqual((st["hosts_total"], st["hosts_online"]), (1, 1))
        self.assertGreaterEqual(st["envs"], 1)
        self.assertGreaterEqual(st["vms"], 2)
        self.assertEqual(st["cpu_total"], 8)
        self.assertGreaterEqual(st["cpu_used"], 2)
        r = self.ctl("status", tenant=ADMIN, json_out=False)
        self.assertIn("1 online of 1", r.out)
        r = self.ctl("host", "list", tenant=ADMIN, json_out=False)
        self.assertRegex(r.out, r"(?m)^h1\s+online\s")

    def test_mmi(self):
        for service in ("tt.env", "tt.admin", "mmi.service"):
            self.assertEqual(self.ok("mmi", service), {"service": service, "code": "200"})
        r = self.ctl("mmi", "tt.nothing")
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertEqual(r.data, None)
        self.assertIn("404", r.err)

    def test_retry_is_idempotent(self):
        """Two sends of one request id make one env and get one answer."""
        pb = harness.pb2()
        c = self.pool.client()
        try:
            req = pb.Request()
            req.request_id = "it-retry-%d" % os.getpid()
            req.env_create.name = "idem"
            req.env_create.images.add(image="sleeper")
            req.env_create.cpu, req.env_create.mem_mib, req.env_create.disk_mib = 1, 64, 64
            first = c.call("tt.env", req)
            self.addCleanup(self.ctl, "env", "delete", "idem")
            second = c.call("tt.env", req)
        finally:
            c.close()
        self.assertEqual(first.status, pb.OK, first)
        self.assertEqual(second.status, pb.OK, second)
        self.assertEqual(first.env.vms[0].vm_id, second.env.vms[0].vm_id)
        self.assertEqual(self.show("idem")["vm_count"], 1)

    def test_transport_failure(self):
        # nothing listens: "no broker at EP" after about 1 s, not after the
        # attempts (3 x 10 s by default)
        dead = "tcp://127.0.0.1:%d" % harness.free_port()
        t0 = time.monotonic()
        r = self.ctl("--broker", dead, "env", "list", timeout_ms=10000)
        took = time.monotonic() - t0
        self.assertEqual(r.rc, EXIT_TRANSPORT, repr(r))
        self.assertIn("no broker at %s" % dead, r.err)
        self.assertLess(took, 5, "a dead endpoint took %.1f s" % took)
        # something accepts the connection but never answers: the attempts
        import socket
        with socket.socket() as mute:
            mute.bind(("127.0.0.1", 0))
            mute.listen(8)
            silent = "tcp://127.0.0.1:%d" % mute.getsockname()[1]
            r = self.ctl("--broker", silent, "env", "list", timeout_ms=100)
        self.assertEqual(r.rc, EXIT_TRANSPORT, repr(r))
        self.assertIn("no reply from %s after 3 attempts of 100 ms" % silent, r.err)
        r = self.ctl("env", "list", timeout_ms=100, env={"TTFLEET_BROKER": dead})
        self.assertEqual(r.rc, 0, "--broker must win over TTFLEET_BROKER: %r" % r)

    def test_env_vars(self):
        """TTFLEET_BROKER and TTFLEET_TENANT set the defaults."""
        self.create("envvar", tenant="vars")
        argv = [harness.binary("ttctl"), "--json", "env", "show", "envvar"]
        env = dict(os.environ, TTFLEET_BROKER=self.pool.clients_ep, TTFLEET_TENANT="vars")
        import subprocess
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn('"tenant": "vars"', p.stdout)


class TooSoon(PoolTest):
    """The minimum interval between stop and start of one env (5 s here, so
    that the window is wide even on a loaded machine: the broker counts in
    whole seconds)."""
    min_stop_interval = 5
    budget = 50

    def test_too_soon(self):
        self.create("soon")
        self.ok("env", "stop", "soon")  # the first stop is never too soon
        err = self.fails("TOO_SOON", "env", "start", "soon")
        self.assertIn("soon", err)
        self.assertEqual(self.show("soon")["state"], "stopped")
        # Other envs are not held back by this one.
        self.create("other")
        self.ok("env", "stop", "other")

    def test_start_wait_waits_out_too_soon(self):
        self.create("patient")
        self.create("hasty")
        self.ok("env", "stop", "patient")
        self.ok("env", "stop", "hasty")
        # a --wait-timeout shorter than the spacing: TOO_SOON at once
        t0 = time.monotonic()
        self.fails("TOO_SOON", "env", "start", "hasty", "--wait", "--wait-timeout", "2s")
        self.assertLess(time.monotonic() - t0, 4)
        # --wait waits the spacing out (said on stderr), then starts
        r = self.ctl("env", "start", "patient", "--wait", "--wait-timeout", "1m")
        self.assertEqual(r.rc, 0, repr(r))
        self.assertIn("TOO_SOON (stop/start spacing); waiting", r.err)
        self.assertEqual(self.show("patient")["state"], "running")


class Restart(PoolTest):
    """Stop both daemons (SIGTERM), start them on the same state: every env,
    VM, IP, port and lease is as before, and process VMs never stopped."""
    min_stop_interval = 0
    budget = 150

    def snapshot(self):
        envs = {}
        for name in ("keep", "parked", "ghost"):
            e = self.show(name)
            envs[name] = {k: e[k] for k in ("name", "tenant", "state", "created_at",
                                            "expires_at", "lifetime", "deny_outgoing",
                                            "ports", "vm_count")}
            envs[name]["vms"] = sorted((tuple((k, str(v[k])) for k in VM_KEYS)
                                        for v in e["vms"]))
        h = self.host()
        host = {k: h[k] for k in ("cpu_used", "mem_used", "disk_used", "vm_count")}
        return envs, host

    def test_restart_keeps_everything(self):
        keep = self.create("keep", "--dup", 2, "--port", 80, "--deny-outgoing")
        self.create("parked", "--port", 443)
        self.ok("env", "stop", "parked")
        self.create("ghost", "--dup", 3, "--engine", "hollow")
        before = self.snapshot()
        pids = self.vm_pids()
        keep_ids = [v["vm_id"] for v in keep["vms"]]
        for vm_id in keep_ids:
            self.assertTrue(harness.proc_alive(*pids[vm_id]), (vm_id, pids))

        # 1. The broker alone restarts; the worker keeps running.
        self.assertEqual(self.pool.stop_broker(), 0, self.pool.logs())
        self.pool.start_broker()
        self.pool.wait_online(["h1"])
        harness.wait_for("state after broker restart", lambda: self.snapshot() == before,
                         timeout=20)

        # 2. Both stop: worker first, then the broker; VM processes live on.
        self.assertEqual(self.pool.stop_worker("h1"), 0, self.pool.logs())
        for vm_id in keep_ids:
            self.assertTrue(harness.proc_alive(*pids[vm_id]),
                            "VM %d died with its worker" % vm_id)
        self.assertEqual(self.pool.stop_broker(), 0, self.pool.logs())
        self.pool.start_broker()
        self.pool.start_worker("h1")
        self.pool.wait_online(["h1"])
        after = harness.wait_for("state after full restart",
                                 lambda: (lambda s: s if s == before else None)(self.snapshot()),
                                 timeout=20)
        self.assertEqual(after, before)
        now = self.vm_pids()
        for vm_id in keep_ids:
            self.assertEqual(now[vm_id], pids[vm_id], "VM %d was restarted" % vm_id)
            self.assertTrue(harness.proc_alive(*now[vm_id]))

        # 3. Everything still works on the restored state, and a new env
        # does not reuse anything still held.
        fresh = self.create("fresh", "--port", 80)
        held = {(v["ip"], v["mac"]) for v in keep["vms"]}
        self.assertFalse({(v["ip"], v["mac"]) for v in fresh["vms"]} & held)
        held_ports = {p["public"] for v in keep["vms"] for p in v["ports"]}
        self.assertFalse({p["public"] for v in fresh["vms"] for p in v["ports"]} & held_ports)
        self.ok("env", "start", "parked")
        self.ok("env", "delete", "keep")
        for vm_id in keep_ids:
            harness.wait_for("VM %d to end after delete" % vm_id,
                             lambda: not harness.proc_alive(*pids[vm_id]), timeout=20)


if __name__ == "__main__":
    unittest.main()
