"""Admission end to end: a real broker and worker (hollow VMs), driven by ttctl.

One host of 2 cpu. A filler env takes both; queued creates from two tenants
wait, are shown as queued, survive a broker restart in order, and are
admitted in the documented order (priority, FIFO per tenant, round-robin
between tenants) when the filler goes. Quotas refuse with resource, used,
limit and wanted, and admit when raised. The audit shows each change with
its tenant and outcome.
"""

import unittest

import harness
from harness import ADMIN, EXIT_STATUS, EXIT_USAGE

ONE = ["--image", "sleeper", "--engine", "hollow", "--cpu", "1", "--mem", "64", "--disk", "64"]
TWO = ["--image", "sleeper", "--engine", "hollow", "--cpu", "2", "--mem", "64", "--disk", "64"]


def env_of(data):
    return data.get("env", data) if isinstance(data, dict) else data


class Admission(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(240)
        cls.pool = harness.Pool(hosts={"h1": {"cpu": 2, "mem": 4096, "disk": 40960}}).start()

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        harness.watchdog(0)

    def ok(self, *args, tenant="t1"):
        r = self.pool.ctl(*args, tenant=tenant)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def fails(self, status, *args, tenant="t1"):
        r = self.pool.ctl(*args, tenant=tenant)
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertIn(status, r.err, repr(r))
        return r.err

    def state(self, name, tenant):
        r = self.pool.ctl("env", "show", name, tenant=tenant)
        return env_of(r.data)["state"] if r.rc == 0 else None

    def queue(self):
        return [(e["tenant"], e["env"]) for e in
                self.ok("queue", "list", "--all", tenant=ADMIN)["entries"]]

    def test_1_queue_order_restart_and_admission(self):
        self.ok("env", "create", "fill", *TWO, tenant="t0")
        harness.wait_for("fill running", lambda: self.state("fill", "t0") == "running")
        # no room: refused without --queue, queued with it
        self.fails("NO_CAPACITY", "env", "create", "x0", *ONE)
        self.ok("env", "create", "x1", *ONE, "--queue")
        self.ok("env", "create", "x2", *ONE, "--queue")
        self.ok("env", "create", "y1", *ONE, "--queue", tenant="t2")
        # the name is taken by the queued entry
        self.fails("ALREADY_EXISTS", "env", "create", "x1", *ONE, "--queue")
        self.assertEqual(self.queue(), [("t1", "x1"), ("t2", "y1"), ("t1", "x2")])
        x2 = env_of(self.ok("env", "show", "x2"))
        self.assertEqual(x2["state"], "queued")
        self.assertEqual(x2["queue_position"], 3)
        names = [e["name"] for e in self.ok("env", "list")["envs"]] \
            if isinstance(self.ok("env", "list"), dict) else []
        self.assertIn("x2", names)
        # the queue survives a restart, in order
        self.pool.stop_broker()
        self.pool.start_broker()
        self.pool.wait_online(["h1"])
        self.assertEqual(self.queue(), [("t1", "x1"), ("t2", "y1"), ("t1", "x2")])
        # capacity frees: the first two are admitted, in order; x2 waits
        self.ok("env", "delete", "fill", tenant="t0")
        harness.wait_for("x1 and y1 running",
                         lambda: self.state("x1", "t1") == "running"
                         and self.state("y1", "t2") == "running", timeout=30)
        self.assertEqual(self.queue(), [("t1", "x2")])
        # delete cancels a queued env
        self.ok("env", "delete", "x2")
        self.assertEqual(self.queue(), [])
        self.assertIsNone(self.state("x2", "t1"))
        self.ok("env", "delete", "x1")
        self.ok("env", "delete", "y1", tenant="t2")
        # the audit: each change with its tenant and outcome
        rows = self.ok("audit", "--tenant", "t1", tenant=ADMIN)["audit"]
        seen = {(r["op"], r["target"], r["status"]) for r in rows}
        self.assertIn(("env.create", "x0", "NO_CAPACITY"), seen)
        self.assertIn(("env.create", "x1", "QUEUED"), seen)
        self.assertIn(("env.create", "x1", "OK"), seen)
        self.assertIn(("env.create", "x2", "QUEUE_CANCELLED"), seen)
        self.assertIn(("env.delete", "x2", "OK"), seen)
        self.assertTrue(all(r["tenant"] == "t1" for r in rows), rows)
        # a user sees only its own tenant's rows
        own = self.ok("audit", tenant="t2")["audit"]
        self.assertTrue(own and all(r["tenant"] == "t2" for r in own), own)

    def test_4_big_head_not_starved_and_max_wait(self):
        # fresh tenants: round-robin rounds are per tenant (admq.h)
        self.ok("env", "create", "f1", *ONE, tenant="t0")
        self.ok("env", "create", "f2", *ONE, tenant="t0")
        harness.wait_for("f1 f2 running", lambda: self.state("f1", "t0") == "running"
                         and self.state("f2", "t0") == "running")
        self.ok("env", "create", "big", *TWO, "--queue", tenant="t5")  # head: needs both cpus
        self.ok("env", "create", "s1", *ONE, "--queue", tenant="t6")  # small, behind it
        self.ok("env", "create", "s2", *ONE, "--queue", tenant="t6")
        # one cpu frees: it is kept for the head, the small ones do not take it
        self.ok("env", "delete", "f1", tenant="t0")
        harness.wait_for("the head blocked", lambda: any(
            e["blocked_head"] and e["env"] == "big" for e in
            self.ok("queue", "list", "--all", tenant=ADMIN)["entries"]), timeout=10)
        self.assertEqual(self.queue(), [("t5", "big"), ("t6", "s1"), ("t6", "s2")],
                         self.ok("audit", "--tenant", "t2", tenant=ADMIN))
        # the second frees: the head goes first
        self.ok("env", "delete", "f2", tenant="t0")
        harness.wait_for("big running", lambda: self.state("big", "t5") == "running", timeout=30)
        self.assertEqual(self.queue(), [("t6", "s1"), ("t6", "s2")])
        # max-wait: s1 and s2 end with a clear reason, recorded and audited
        self.ok("env", "delete", "s2", tenant="t6")
        r = self.pool.ctl("env", "create", "w1", *ONE, "--queue", "--max-wait", "10",
                          tenant="t6")
        self.assertEqual(r.rc, 0, repr(r))
        harness.wait_for("w1 expired", lambda: ("t6", "w1") not in self.queue(), timeout=30)
        self.assertIsNone(self.state("w1", "t2"))
        rows = self.ok("audit", "--env", "w1", tenant=ADMIN)["audit"]
        exp = [x for x in rows if x["status"] == "QUEUE_EXPIRED"]
        self.assertEqual(len(exp), 1, rows)
        self.assertEqual(exp[0]["role"], "system")
        self.assertIn("max-wait", exp[0]["message"])
        self.ok("env", "delete", "s1", tenant="t6")
        self.ok("env", "delete", "big", tenant="t5")

    def test_2_quota_each_dimension(self):
        cases = [("--envs", "0", "envs"), ("--vms", "0", "vms"), ("--cpu", "0", "cpu"),
                 ("--mem", "32", "mem"), ("--disk", "32", "disk")]
        for flag, low, resource in cases:
            t = "q" + resource
            self.ok("quota", "set", t, flag, low, tenant=ADMIN)
            err = self.fails("QUOTA_EXCEEDED", "env", "create", "e", *ONE, "--queue", tenant=t)
            self.assertIn(resource, err)
            self.assertIn("limit", err)
            self.assertIn("wanted", err)
            self.assertEqual([q for q in self.queue() if q[0] == t], [])
            self.ok("quota", "set", t, flag, "-1", tenant=ADMIN)
            self.ok("env", "create", "e", *ONE, tenant=t)
            self.ok("env", "delete", "e", tenant=t)
        # lifetime
        self.ok("quota", "set", "qlife", "--max-lifetime", "100", tenant=ADMIN)
        err = self.fails("QUOTA_EXCEEDED", "env", "create", "e", *ONE, "--lifetime", "200",
                         tenant="qlife")
        self.assertIn("lifetime", err)
        # a tenant reads its own quota, not another's
        mine = self.ok("quota", "show", tenant="qlife")
        self.assertIn("qlife", str(mine))
        r = self.pool.ctl("quota", "show", "qcpu", tenant="qlife")
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        # only an admin sets quotas
        r = self.pool.ctl("quota", "set", "qlife", "--cpu", "5", tenant="qlife")
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertIn("FORBIDDEN", r.err)

    def test_3_bad_input(self):
        for args in (["--cpu", "-5"], ["--cpu", "99999999999999999999"], ["--mem", "abc"]):
            r = self.pool.ctl("quota", "set", "t9", *args, tenant=ADMIN)
            self.assertIn(r.rc, (EXIT_USAGE, EXIT_STATUS), repr(r))
        # priority above the tenant's cap (default 10)
        self.ok("env", "create", "fill3", *TWO, tenant="t0")
        self.fails("BAD_REQUEST", "env", "create", "p", *ONE, "--queue", "--priority", "50")
        # max-wait out of the broker's range
        r = self.pool.ctl("env", "create", "p", *ONE, "--queue", "--max-wait", "1", tenant="t1")
        self.assertNotEqual(r.rc, 0, repr(r))
        self.assertEqual([q for q in self.queue() if q == ("t1", "p")], [])
        # an unknown tenant in quota set is allowed
        self.ok("quota", "set", "nobody-yet", "--cpu", "4", tenant=ADMIN)
        self.ok("env", "delete", "fill3", tenant="t0")


if __name__ == "__main__":
    unittest.main()
