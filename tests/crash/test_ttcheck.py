"""Unit tests of tools/ttcheck on tiny fabricated databases.

The tables are created without the real schema's constraints, so a test can
write what the schema would refuse (a VM id twice, a MAC on two hosts) and
see the checker report it. VM processes are real: a `sleep` started with its
working directory on a fabricated VM disk, killed at the end of each test.
"""

import contextlib
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ttcheck_loader  # noqa: E402

SOURCE = ttcheck_loader.SOURCE
ttcheck = ttcheck_loader.load()
RUNNING, STOPPED, PAUSED, DEAD = 1, 2, 3, 4

BROKER_SQL = """
CREATE TABLE hosts (id TEXT, cpu_total INTEGER, mem_total INTEGER, disk_total INTEGER);
CREATE TABLE envs (id INTEGER, tenant TEXT, name TEXT, state TEXT, expires_at INTEGER);
CREATE TABLE vms (uid INTEGER, env_id INTEGER, host TEXT, vm_id INTEGER, ip TEXT, mac TEXT,
                  image TEXT, engine TEXT, cpu INTEGER, mem INTEGER, disk INTEGER,
                  state INTEGER, phase TEXT);
CREATE TABLE ports (host TEXT, public_port INTEGER, vm_uid INTEGER, guest_port INTEGER);
CREATE TABLE requests (tenant TEXT, request_id TEXT, created_at INTEGER, reply BLOB);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE host_pins (host TEXT PRIMARY KEY, cpu INTEGER, mem INTEGER, disk INTEGER);
"""
WORKER_SQL = """
CREATE TABLE vms (vm_id INTEGER, env TEXT, image TEXT, engine TEXT, cpu INTEGER, mem INTEGER,
                  disk INTEGER, ip TEXT, mac TEXT, ports TEXT, deny_outgoing INTEGER,
                  expires_at INTEGER, state INTEGER, pid INTEGER, start_time INTEGER,
                  updated_at INTEGER);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


def reply_blob(rid, status=0):
    """A packed Reply with request_id (field 1) and status (field 2)."""
    r = rid.encode()
    return bytes([0x0A, len(r)]) + r + bytes([0x10, status])


class Pool:
    """Fabricated broker.db + worker.db files for one test."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="ttcheck-test-")
        self.broker_db = os.path.join(self.dir, "broker.db")
        self.b = sqlite3.connect(self.broker_db)
        self.b.executescript(BROKER_SQL)
        self.workers = {}
        self.procs = []
        self.next_uid = 1

    def host(self, hid, cpu=8, mem=8192, disk=100000):
        self.b.execute("INSERT INTO hosts VALUES (?, ?, ?, ?)", (hid, cpu, mem, disk))
        state = os.path.join(self.dir, "worker-" + hid)
        os.makedirs(os.path.join(state, "vms"))
        path = os.path.join(state, "worker.db")
        con = sqlite3.connect(path)
        con.executescript(WORKER_SQL)
        self.workers[hid] = (path, con, state)

    def ratios(self, con, cpu, mem, disk):
        """Record overcommit ratios in a database's meta table, as the
        daemons do at start."""
        con.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [("cpu_overcommit", str(cpu)), ("mem_overcommit", str(mem)),
                         ("disk_overcommit", str(disk))])

    def env(self, eid, name, state="running", tenant="t"):
        self.b.execute("INSERT INTO envs VALUES (?, ?, ?, ?, 0)", (eid, tenant, name, state))

    def bvm(self, env_id, host, vm_id, state=RUNNING, mac=None, ip=None, ports=(),
            cpu=1, mem=256, disk=1000, phase="active"):
        uid = self.next_uid
        self.next_uid += 1
        mac = mac or "52:54:00:00:00:%02x" % uid
        self.b.execute("INSERT INTO vms VALUES (?, ?, ?, ?, ?, ?, 'sleeper', 'process', ?, ?, "
                       "?, ?, ?)", (uid, env_id, host, vm_id, ip or ttcheck.vm_ip(vm_id), mac,
                                    cpu, mem, disk, state, phase))
        for g, p in ports:
            self.b.execute("INSERT INTO ports (host, public_port, vm_uid, guest_port) VALUES (?, ?, ?, ?)", (host, p, uid, g))
        return uid, mac

    def wvm(self, host, vm_id, env, state=RUNNING, mac="52:54:00:00:00:01", ports="",
            pid=0, start_time=0, cpu=1, mem=256, disk=1000, ip=None, engine="process"):
        con = self.workers[host][1]
        con.execute("INSERT INTO vms VALUES (?, ?, 'sleeper', ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, "
                    "?, 0)", (vm_id, env, engine, cpu, mem, disk, ip or ttcheck.vm_ip(vm_id),
                              mac, ports, state, pid, start_time))

    def spawn(self, host, vm_id, pidfile=True):
        """A live process on the VM's disk; returns (pid, start time)."""
        disk = os.path.join(self.workers[host][2], "vms", str(vm_id), "disk")
        os.makedirs(disk, exist_ok=True)
        p = subprocess.Popen(["sleep", "60"], cwd=disk)
        self.procs.append(p)
        st = None
        for _ in range(100):
            st = ttcheck.proc_stat(p.pid)
            if st:
                break
        if pidfile:
            with open(os.path.join(disk, "..", "pid"), "w") as f:
                f.write("%d %d\n" % (p.pid, st[1]))
        return p.pid, st[1]

    def check(self, *extra):
        self.b.commit()
        args = ["--broker-db", self.broker_db, "--json"]
        for hid, (path, con, _) in self.workers.items():
            con.commit()
            args += ["--worker-db", "%s=%s" % (hid, path)]
        out, err = io.StringIO(), io.StringIO()
        rc = ttcheck.run(args + list(extra), out=out, err=err)
        if rc == 2:
            return rc, err.getvalue()
        return rc, json.loads(out.getvalue())["violations"]

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        self.b.close()
        for _, con, _ in self.workers.values():
            con.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def kinds(violations):
    return sorted(v["kind"] for v in violations)


class TtcheckTest(unittest.TestCase):
    def setUp(self):
        self.p = Pool()
        self.addCleanup(self.p.close)
        self.p.host("h1")

    def healthy(self, state=RUNNING, env_state="running"):
        """env t/e with one VM 5 on h1, recorded alike on both sides."""
        p = self.p
        p.env(1, "e", env_state)
        uid, mac = p.bvm(1, "h1", 5, state=state, ports=[(22, 40001)])
        pid, st = (p.spawn("h1", 5) if state in (RUNNING, PAUSED) else (0, 0))
        p.wvm("h1", 5, "t/e", state=state, mac=mac, ports="22:40001", pid=pid, start_time=st)
        return pid

    def test_clean_pool(self):
        self.healthy()
        self.p.b.execute("INSERT INTO requests VALUES ('t', 'r1', 0, ?)", (reply_blob("r1"),))
        rc, v = self.p.check()
        self.assertEqual((rc, v), (0, []))

    def test_clean_stopped(self):
        self.healthy(state=STOPPED, env_state="stopped")
        self.assertEqual(self.p.check(), (0, []))

    def test_duplicates_in_broker(self):
        p = self.p
        p.env(1, "e")
        p.bvm(1, "h1", 5, mac="52:54:00:aa:aa:aa", ports=[(22, 40001)])
        p.bvm(1, "h1", 5, mac="52:54:00:aa:aa:aa", ports=[(22, 40001)])
        rc, v = p.check("--allow-transient")
        self.assertEqual(rc, 1)
        for k in ("dup-vm-id", "dup-ip", "dup-mac", "dup-port"):
            self.assertIn(k, kinds(v))

    def test_mac_pool_wide(self):
        p = self.p
        p.host("h2")
        p.env(1, "e")
        p.bvm(1, "h1", 5, mac="52:54:00:00:00:09", state=STOPPED)
        p.bvm(1, "h2", 5, mac="52:54:00:00:00:09", state=STOPPED)
        rc, v = p.check("--allow-transient")
        self.assertIn("dup-mac", kinds(v))

    def test_worker_duplicates(self):
        p = self.p
        p.wvm("h1", 5, "t/e", state=STOPPED, ports="22:40001", mac="52:54:00:00:00:01")
        p.wvm("h1", 6, "t/e", state=STOPPED, ports="22:40001", mac="52:54:00:00:00:01",
              ip="10.10.0.5")
        rc, v = p.check()
        k = kinds(v)
        for want in ("dup-ip", "dup-port", "dup-mac", "leaked-vm", "bad-allocation"):
            self.assertIn(want, k)

    def test_leaked_vm_with_live_process(self):
        p = self.p
        pid, st = p.spawn("h1", 7)
        p.wvm("h1", 7, "t/gone", pid=pid, start_time=st)
        rc, v = p.check()
        self.assertEqual(rc, 1)
        self.assertEqual(kinds(v), ["leaked-vm"])
        self.assertIn("process %d is alive" % pid, v[0]["message"])

    def test_orphan_process_without_row(self):
        self.p.spawn("h1", 9)
        rc, v = self.p.check()
        self.assertEqual(kinds(v), ["orphan-process"])
        self.assertIn("no worker row", v[0]["message"])

    def test_stray_pidfile_process(self):
        """The worker row records another (dead) process than the pidfile."""
        p = self.p
        p.env(1, "e", "stopped")
        uid, mac = p.bvm(1, "h1", 5, state=STOPPED)
        pid, st = p.spawn("h1", 5)
        p.wvm("h1", 5, "t/e", state=STOPPED, mac=mac)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["orphan-process"])

    def test_dead_vm(self):
        p = self.p
        p.env(1, "e")
        uid, mac = p.bvm(1, "h1", 5)
        p.wvm("h1", 5, "t/e", mac=mac, pid=999999, start_time=1)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["dead-vm"])

    def test_missing_worker_row(self):
        p = self.p
        p.env(1, "e", "stopped")
        p.bvm(1, "h1", 5, state=STOPPED)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["missing-vm"])

    def test_live_process_of_stopped_vm(self):
        p = self.p
        p.env(1, "e", "stopped")
        uid, mac = p.bvm(1, "h1", 5, state=STOPPED)
        pid, st = p.spawn("h1", 5)
        p.wvm("h1", 5, "t/e", state=STOPPED, mac=mac, pid=pid, start_time=st)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["live-process"])

    def test_paused_process_runs(self):
        self.healthy(state=PAUSED, env_state="paused")
        rc, v = self.p.check()
        self.assertEqual(kinds(v), ["wrong-state"])
        self.assertIn("recorded paused", v[0]["message"])

    def test_env_state_disagrees(self):
        p = self.p
        p.env(1, "e", "running")
        uid, mac = p.bvm(1, "h1", 5, state=STOPPED)
        p.wvm("h1", 5, "t/e", state=STOPPED, mac=mac)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["dead-vm", "env-state", "wrong-state"])

    def test_identity_mismatch(self):
        p = self.p
        p.env(1, "e", "stopped")
        uid, mac = p.bvm(1, "h1", 5, state=STOPPED, ports=[(22, 40001)])
        p.wvm("h1", 5, "t/other", state=STOPPED, mac="52:54:00:ff:ff:ff", ports="22:40002")
        rc, v = p.check()
        self.assertEqual(kinds(v), ["mismatch"])
        for field in ("env", "mac", "ports"):
            self.assertIn(field, v[0]["message"])

    def test_transient_and_requests(self):
        p = self.p
        p.env(1, "e", "creating")
        p.bvm(1, "h1", 5, state=5, phase="pending")
        p.b.execute("INSERT INTO requests VALUES ('t', 'r1', 0, NULL)")
        p.b.execute("INSERT INTO requests VALUES ('t', 'r2', 0, ?)", (reply_blob("zz"),))
        p.b.execute("INSERT INTO requests VALUES ('t', 'r3', 0, ?)", (b"\xff\xff\xff",))
        rc, v = p.check()
        self.assertEqual(kinds(v), ["env-state", "request-bad", "request-bad", "request-open"])
        rc, v = p.check("--allow-transient")
        self.assertEqual(kinds(v), ["request-bad", "request-bad"])

    def test_pending_outside_create(self):
        p = self.p
        p.env(1, "e", "stopped")
        uid, mac = p.bvm(1, "h1", 5, state=STOPPED, phase="pending")
        p.wvm("h1", 5, "t/e", state=STOPPED, mac=mac)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["pending-vm"])

    def test_orphan_rows(self):
        p = self.p
        p.bvm(42, "h1", 5, state=STOPPED)
        p.b.execute("INSERT INTO ports (host, public_port, vm_uid, guest_port) VALUES ('h1', 40009, 777, 22)")
        rc, v = p.check()
        self.assertIn("orphan-row", kinds(v))
        self.assertEqual(kinds(v).count("orphan-row"), 2)

    def test_overcommit(self):
        p = self.p
        p.env(1, "e", "stopped")
        _, mac = p.bvm(1, "h1", 5, state=STOPPED, disk=200000)
        p.wvm("h1", 5, "t/e", state=STOPPED, mac=mac, disk=200000)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["overcommit", "overcommit"])
        self.assertEqual(p.check("--overcommit", "1,1,2.5"), (0, []))

    def overcommitted(self, cpu_each, n):
        """env t/e with n running hollow VMs of cpu_each cpus on h1 (2 cpus)."""
        p = self.p
        p.b.execute("UPDATE hosts SET cpu_total = 2")
        p.env(1, "e")
        for i in range(n):
            _, mac = p.bvm(1, "h1", 5 + i, cpu=cpu_each)
            p.wvm("h1", 5 + i, "t/e", mac=mac, cpu=cpu_each, engine="hollow")
        p.b.execute("UPDATE vms SET engine = 'hollow'")

    def test_ratios_from_the_databases(self):
        """The quick start's pool: broker --cpu-overcommit 4, worker default
        4; 6 cpus on a 2-cpu host is within both, not a violation."""
        p = self.p
        self.overcommitted(2, 3)
        p.ratios(p.b, 4, 1, 1)
        p.ratios(p.workers["h1"][1], 4, 1, 1)
        self.assertEqual(p.check(), (0, []))
        # over both sides' limit of 2 x 4
        _, mac = p.bvm(1, "h1", 9, cpu=3)
        p.b.execute("UPDATE vms SET engine = 'hollow'")
        p.wvm("h1", 9, "t/e", mac=mac, cpu=3, engine="hollow")
        rc, v = p.check()
        self.assertEqual(kinds(v), ["overcommit", "overcommit"])
        self.assertIn("broker side: cpu used 9 is over the capacity 2 x 4", v[0]["message"])
        self.assertIn("worker side: cpu used 9 is over the capacity 2 x 4", v[1]["message"])

    def test_each_side_has_its_own_ratios(self):
        """The broker places with 1.5, the worker checks with 8: 4 cpus on 2
        are over the broker's 3 only."""
        p = self.p
        self.overcommitted(2, 2)
        p.ratios(p.b, 1.5, 1, 1)
        p.ratios(p.workers["h1"][1], 8, 1, 1)
        rc, v = p.check()
        self.assertEqual(kinds(v), ["overcommit"])
        self.assertIn("broker side: cpu used 4 is over the capacity 2 x 1.5", v[0]["message"])
        # --overcommit overrides both
        self.assertEqual(p.check("--overcommit", "2,1,1"), (0, []))

    def test_daemon_defaults_without_recorded_ratios(self):
        """Databases of older daemons record no ratios: the broker's default
        is 1, the worker's cpu default 4."""
        self.overcommitted(2, 2)
        rc, v = self.p.check()
        self.assertEqual(kinds(v), ["overcommit"])
        self.assertIn("broker side", v[0]["message"])

    def test_pin_is_the_broker_capacity(self):
        p = self.p
        self.overcommitted(1, 2)
        p.ratios(p.b, 4, 1, 1)
        p.ratios(p.workers["h1"][1], 4, 1, 1)
        self.assertEqual(p.check(), (0, []))
        p.b.execute("INSERT INTO host_pins VALUES ('h1', 0, 100, 0)")  # mem 100 MiB
        rc, v = p.check()
        self.assertEqual(kinds(v), ["overcommit"])
        self.assertIn("broker side: mem used 512 is over the capacity 100 x 1", v[0]["message"])

    def test_bad_recorded_ratio(self):
        p = self.p
        for bad in ("0", "-1", "nan", "lots"):
            p.b.execute("INSERT OR REPLACE INTO meta VALUES ('cpu_overcommit', ?)", (bad,))
            rc, err = p.check()
            self.assertEqual(rc, 2, bad)
            self.assertIn("meta cpu_overcommit is '%s'" % bad, err)
        rc, err = p.check("--overcommit", "1,0,1")
        self.assertEqual(rc, 2)

    def test_hollow_has_no_process(self):
        p = self.p
        p.env(1, "e")
        uid, mac = p.bvm(1, "h1", 5)
        p.b.execute("UPDATE vms SET engine = 'hollow'")
        p.wvm("h1", 5, "t/e", mac=mac, engine="hollow")
        self.assertEqual(p.check(), (0, []))

    def test_accounting_against_broker(self):
        p = self.p
        p.env(1, "e")
        p.bvm(1, "h1", 5, cpu=2, mem=512, disk=100)
        p.bvm(1, "h1", 6, cpu=2, mem=512, disk=100, state=STOPPED)
        hosts = [{"id": "h1", "cpu_used": 2, "mem_used": 512, "disk_used": 200, "vm_count": 2}]
        report = ttcheck.Report()
        db = ttcheck.load_broker((p.b.commit(), p.broker_db)[1])
        ttcheck.check_accounting(report, db, hosts)
        self.assertEqual(report.violations, [])
        hosts[0]["cpu_used"] = 4
        hosts[0]["vm_count"] = 3
        ttcheck.check_accounting(report, db, hosts)
        self.assertEqual(kinds(report.violations), ["accounting", "accounting"])

    def test_broker_unreachable_is_a_violation(self):
        self.healthy()
        rc, v = self.p.check("--broker", "tcp://127.0.0.1:1", "--ttctl", "/bin/false")
        self.assertEqual(kinds(v), ["accounting"])

    def test_usage_errors(self):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(ttcheck.run([], out=out, err=err), 2)
        self.assertEqual(ttcheck.run(["--broker-db", "/nonexistent/broker.db"], out, err), 2)
        self.assertEqual(ttcheck.run(["--broker-db", self.p.broker_db, "--worker-db", "x"],
                                     out, err), 2)
        junk = os.path.join(self.p.dir, "junk.db")
        with open(junk, "wb") as f:
            f.write(b"not a database at all" * 100)
        self.assertEqual(ttcheck.run(["--broker-db", junk], out, err), 2)
        self.assertIn("cannot read", err.getvalue())

    def test_text_output_and_exit_code(self):
        self.p.spawn("h1", 9)
        self.p.b.commit()
        path, con, _ = self.p.workers["h1"]
        con.commit()
        cmd = ["/usr/bin/python3", os.path.join(SOURCE, "tools", "ttcheck"),
               "--broker-db", self.p.broker_db, "--worker-db", "h1=" + path]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stdout.startswith("orphan-process h1: vm 9:"), r.stdout)
        self.assertEqual(len(r.stdout.strip().splitlines()), 1)

    def test_decode_reply(self):
        self.assertEqual(ttcheck.decode_reply(reply_blob("abc", 8)), ("abc", 8))
        self.assertEqual(ttcheck.decode_reply(b""), ("", 0))
        self.assertIsNone(ttcheck.decode_reply(b"\x0a\x05ab"))
        self.assertIsNone(ttcheck.decode_reply(struct.pack("B", 0x0F)))


class RealPoolRatios(unittest.TestCase):
    """A real broker (--cpu-overcommit 4, as tools/quickstart.sh starts it)
    and worker (default cpu ratio 4) record their ratios; ttcheck, run as
    the README shows it, finds their overcommitted pool clean."""

    def test_quickstart_pool_is_clean(self):
        import crashlib
        pool = crashlib.CrashPool(hosts={"h1": {"cpu": 2, "mem": 4096}},
                                  broker_args=["--cpu-overcommit", "4"])
        self.addCleanup(pool.close)
        crashlib.harness.watchdog(50)
        self.addCleanup(crashlib.harness.watchdog, 0)
        pool.start()
        for name in ("a", "b", "c"):
            r = pool.ctl("env", "create", name, "--image", "sleeper", "--cpu", 2, "--mem", 64,
                         "--disk", 64, tenant="me")
            self.assertEqual(r.rc, 0, repr(r))
        self.assertEqual(pool.check(), [])
        r = subprocess.run(["/usr/bin/python3", os.path.join(SOURCE, "tools", "ttcheck"),
                            "--broker-db", pool.broker_db(),
                            "--worker-db", "h1=" + pool.worker_db("h1")],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual((r.returncode, r.stdout), (0, ""), r.stderr)
        con = sqlite3.connect("file:%s?mode=ro" % pool.broker_db(), uri=True)
        self.assertEqual(dict(con.execute("SELECT key, value FROM meta WHERE key LIKE "
                                          "'%_overcommit'")),
                         {"cpu_overcommit": "4", "mem_overcommit": "1", "disk_overcommit": "1"})
        con.close()


if __name__ == "__main__":
    unittest.main()
