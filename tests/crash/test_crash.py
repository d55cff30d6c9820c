"""Crash tests: kill -9 at every crash point of every operation, restart,
retry, and prove nothing was lost, leaked or duplicated.

CrashMatrix runs, for each (crash point, operation) pair the point applies
to, one scenario on a fresh pool (one broker, one worker, process engine,
the sleeper image, envs of two VMs so the worker's mid-command points sit
between two VMs):

  1. start the pool with TTFLEET_CRASH_AT=<point> on the daemon under test,
     prepare the env the operation needs (the point is not armed yet);
  2. arm the point, send the operation with a fixed request id from a
     client that retries on timeout with the same id (expire: wait for the
     reaper);
  3. wait for the daemon to die by SIGKILL at the point, restart it without
     the variable, let the client's retry get its answer;
  4. send the same request id again: the answer must be the first one, byte
     for byte (exactly one outcome per request id);
  5. ttcheck (tools/ttcheck) must report no violation once the pool has
     converged, and the env must be in the state the outcome announced:
     OK means the operation is in effect; a failure means the env is as
     before or as asked (a create that failed left nothing).

Other scenarios: broker restart while a client waits, a worker SIGSTOPped
past the down timeout then continued, duplicated and re-ordered requests,
leases across a broker outage and a cut-off worker, the broker's disk full
(a 3 MiB tmpfs in a private mount namespace), SQLITE_BUSY from a concurrent
reader and writer of broker.db.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib  # noqa: E402
from crashlib import (Background, CrashPool, call, env_state, must, pb,  # noqa: E402
                      request, wait_for)

ENV = "e"
OPS = ("create", "stop", "start", "pause", "resume", "delete", "expire")
# ops whose request waits for the worker: their second commit is the finish
WAITING = ("create", "stop", "start", "pause", "resume")
SETUP = {"create": [], "stop": ["create"], "start": ["create", "stop"], "pause": ["create"],
         "resume": ["create", "pause"], "delete": ["create"], "expire": []}
BEFORE = {"create": None, "stop": "running", "start": "stopped", "pause": "running",
          "resume": "paused", "delete": "running", "expire": "running"}
AFTER = {"create": "running", "stop": "stopped", "start": "running", "pause": "paused",
         "resume": "running", "delete": None, "expire": None}
# UNAVAILABLE: a retry that reaches a restarted broker before the worker has
# said READY again (every host is down until then)
FAILURES = (pb.INTERNAL, pb.WORKER_FAILED, pb.TIMEOUT, pb.UNAVAILABLE)
EXPIRE_LIFETIME = 3

# (daemon, point, nth, ops it applies to)
POINTS = (
    [("broker", "broker.before_commit", 1, OPS),
     ("broker", "broker.after_commit", 1, OPS),
     ("broker", "broker.after_send", 1, OPS),
     ("broker", "broker.before_commit", 2, WAITING),
     ("broker", "broker.after_commit", 2, WAITING),
     ("broker", "broker.after_send", 2, WAITING),
     ("broker", "broker.mid_delete", 1, ("delete",)),
     ("broker", "broker.mid_reap", 1, ("expire",)),
     ("h1", "worker.after_spawn", 1, ("create", "start")),
     ("h1", "worker.before_reply", 1, OPS),
     ("h1", "worker.mid_start", 1, ("create", "start", "resume")),
     ("h1", "worker.mid_stop", 1, ("stop",)),
     ("h1", "worker.mid_pause", 1, ("pause",)),
     ("h1", "worker.mid_destroy", 1, ("delete", "expire"))])


def scenarios():
    for daemon, point, nth, ops in POINTS:
        for op in ops:
            yield daemon, point, nth, op


class CrashMatrix(unittest.TestCase):
    """One test method per (point, nth, op), generated below."""

    def run_scenario(self, daemon, point, nth, op):
        crash = "%s:%d" % (point, nth)
        pool = CrashPool()
        self.addCleanup(pool.close)
        pool.start_broker(crash=crash if daemon == "broker" else None)
        pool.start_worker("h1", crash=crash if daemon != "broker" else None)
        pool.wait_online(["h1"])
        for step in SETUP[op]:
            must(pool, step, ENV)
        if op == "expire":
            must(pool, "create", ENV, lifetime=EXPIRE_LIFETIME)
        pool.arm()
        if op == "expire":
            pool.wait_dead(daemon, timeout=EXPIRE_LIFETIME + 15)
            pool.restart(daemon)
            wait_for("the expired env to be reaped", lambda: env_state(pool, ENV) is None,
                     timeout=crashlib.LEASE_GRACE + 15)
            pool.wait_clean()
            return
        rid = "crash-%s-%d-%s" % (point, nth, op)
        bg = Background(lambda: call(pool, request(op, ENV, rid=rid)))
        pool.wait_dead(daemon)
        pool.restart(daemon)
        first = bg.result(60)
        self.assertIn(first.status, (pb.OK,) + FAILURES,
                      "%s: %s" % (pb.Status.Name(first.status), first.message))
        again = call(pool, request(op, ENV, rid=rid))
        self.assertEqual(again.SerializeToString(), first.SerializeToString(),
                         "a repeat of %s got another outcome: %s / %s"
                         % (rid, first.message, again.message))
        pool.wait_clean()
        state = env_state(pool, ENV)
        if first.status == pb.OK:
            self.assertEqual(state, AFTER[op], "OK for %s but the env is %s" % (op, state))
        elif op == "create":
            self.assertIsNone(state, "a failed create left the env behind")
        else:
            self.assertIn(state, (BEFORE[op], AFTER[op]))
        # the pool still works after the crash
        must(pool, "delete", ENV) if state else must(pool, "create", ENV)
        pool.wait_clean()


def _make(daemon, point, nth, op):
    def test(self):
        self.run_scenario(daemon, point, nth, op)
    test.__doc__ = "kill -9 of %s at %s:%d during %s" % (daemon, point, nth, op)
    return test


for _d, _p, _n, _o in scenarios():
    setattr(CrashMatrix, "test_%s_%d_%s" % (_p.replace(".", "_"), _n, _o),
            _make(_d, _p, _n, _o))


class Outages(unittest.TestCase):
    def pool(self, **kw):
        pool = CrashPool(**kw)
        self.addCleanup(pool.close)
        pool.start()
        return pool

    def test_broker_restart_while_client_waits(self):
        """The broker dies with a client waiting (before the request reached
        it, and while its op waits for a frozen worker); the client's retry
        with the same id gets one outcome and the pool converges. A retry
        that reaches the new broker before the worker's READY is answered
        UNAVAILABLE without recording it (the broker is settling), and the
        next retry gets the real, recorded outcome."""
        pool = self.pool()
        pool.kill("broker")
        bg = Background(lambda: call(pool, request("create", ENV, rid="wait-1")))
        time.sleep(1.5)
        pool.restart("broker")
        rep = bg.result(60)
        self.assertIn(rep.status, (pb.OK, pb.UNAVAILABLE), rep.message)
        if rep.status == pb.UNAVAILABLE:
            # "no host yet" in the broker's first heartbeats is not recorded
            # as the outcome: it says so, and a retry gets the real one
            self.assertIn("retry", rep.message)
            pool.wait_online(["h1"])
            rep = call(pool, request("create", ENV, rid="wait-1"))
        again = call(pool, request("create", ENV, rid="wait-1"))
        self.assertEqual(again.SerializeToString(), rep.SerializeToString())
        pool.wait_clean()
        if rep.status != pb.OK:
            self.assertIsNone(env_state(pool, ENV))
            must(pool, "create", ENV)
        # an op in flight: the worker is frozen, the broker dies and comes back
        os.kill(pool.workers["h1"].proc.pid, signal.SIGSTOP)
        bg = Background(lambda: call(pool, request("stop", ENV, rid="wait-2")))
        time.sleep(0.5)
        pool.kill("broker")
        pool.start_broker()
        os.kill(pool.workers["h1"].proc.pid, signal.SIGCONT)
        pool.wait_online(["h1"])
        rep = bg.result(60)
        self.assertIn(rep.status, (pb.OK,) + FAILURES, rep.message)
        again = call(pool, request("stop", ENV, rid="wait-2"))
        self.assertEqual(again.status, rep.status)
        pool.wait_clean()
        self.assertEqual(env_state(pool, ENV), "stopped")
        # the same with a graceful stop (SIGTERM) of the broker
        os.kill(pool.workers["h1"].proc.pid, signal.SIGSTOP)
        bg = Background(lambda: call(pool, request("start", ENV, rid="wait-3")))
        time.sleep(0.5)
        pool.stop_broker(signal.SIGTERM)
        pool.start_broker()
        os.kill(pool.workers["h1"].proc.pid, signal.SIGCONT)
        pool.wait_online(["h1"])
        rep = bg.result(60)
        self.assertIn(rep.status, (pb.OK,) + FAILURES, rep.message)
        again = call(pool, request("start", ENV, rid="wait-3"))
        self.assertEqual(again.SerializeToString(), rep.SerializeToString(),
                         "two outcomes: %r / %r" % (rep.message, again.message))
        pool.wait_clean()
        self.assertEqual(env_state(pool, ENV), "running")

    def test_worker_sigstop_past_down_timeout(self):
        """A frozen worker is declared down (its VMs lost, ops on them fail
        at once); continued, it says READY, is reconciled and all is well."""
        pool = self.pool()
        must(pool, "create", ENV)
        w = pool.workers["h1"].proc.pid
        os.kill(w, signal.SIGSTOP)
        try:
            def down():
                r = pool.ctl("host", "list", tenant=crashlib.ADMIN, timeout_ms=1000)
                return r.rc == 0 and r.data["hosts"][0]["state"] == "down"
            wait_for("h1 to be declared down", down, timeout=10)
            self.assertEqual(env_state(pool, ENV), "degraded")
            rep = call(pool, request("pause", ENV, rid="frozen-pause"))
            self.assertEqual(rep.status, pb.WORKER_FAILED, rep.message)
        finally:
            os.kill(w, signal.SIGCONT)
        pool.wait_online(["h1"])
        # the failed pause left the target paused: reconciliation applies it
        pool.wait_clean()
        self.assertEqual(env_state(pool, ENV), "paused")
        must(pool, "resume", ENV)
        pool.wait_clean()

    def test_leases_across_outages(self):
        """An env whose lease ends while the broker is down lives on for the
        lease grace after the restart, then is reaped; a worker cut off from
        its broker destroys the VMs itself after expires_at + its grace."""
        pool = self.pool(lease_grace=4, worker_args=["--expiry-grace", "2"])
        must(pool, "create", ENV, lifetime=2)
        must(pool, "create", "long", lifetime=3600)
        pool.kill("broker")
        # cut off: the worker enforces the lease itself
        wait_for("the worker to destroy the expired VMs", lambda: len(
            [r for r in pool.worker_vms("h1").values() if r["env"] == "admin/" + ENV]) == 0,
            timeout=15)
        self.assertEqual(len(pool.worker_vms("h1")), 2)  # the long env's VMs stay
        t0 = time.monotonic()
        pool.restart("broker")
        self.assertIsNotNone(env_state(pool, ENV), "reaped without the lease grace")
        wait_for("the env to be reaped after the grace", lambda: env_state(pool, ENV) is None,
                 timeout=15)
        self.assertGreaterEqual(time.monotonic() - t0, 2.5)
        self.assertEqual(env_state(pool, "long"), "running")
        pool.wait_clean()


class Requests(unittest.TestCase):
    def setUp(self):
        self.pool = CrashPool()
        self.addCleanup(self.pool.close)
        self.pool.start()

    def test_duplicated_requests(self):
        """The same create sent on several sockets at once makes one env and
        every copy gets the same outcome."""
        pool = self.pool
        req = request("create", ENV, rid="dup-1")
        bgs = [Background(lambda: call(pool, req)) for _ in range(5)]
        reps = [b.result(60) for b in bgs]
        self.assertEqual({r.status for r in reps}, {pb.OK}, [r.message for r in reps])
        self.assertEqual(len({r.SerializeToString() for r in reps}), 1)
        show = call(pool, request("show", ENV))
        self.assertEqual(len(show.env.vms), 2)
        pool.wait_clean()

    def test_reordered_requests(self):
        """Late retries of old requests never act again: an old delete that
        arrives after the name was re-created leaves the new env alone, an old
        create arriving after a delete re-creates nothing."""
        pool = self.pool
        r1 = call(pool, request("create", ENV, rid="ord-create-1"))
        r2 = call(pool, request("delete", ENV, rid="ord-delete-1"))
        self.assertEqual((r1.status, r2.status), (pb.OK, pb.OK))
        again = call(pool, request("create", ENV, rid="ord-create-1"))
        self.assertEqual(again.SerializeToString(), r1.SerializeToString())
        self.assertIsNone(env_state(pool, ENV))
        r3 = call(pool, request("create", ENV, rid="ord-create-2"))
        self.assertEqual(r3.status, pb.OK)
        late = call(pool, request("delete", ENV, rid="ord-delete-1"))
        self.assertEqual(late.SerializeToString(), r2.SerializeToString())
        self.assertEqual(env_state(pool, ENV), "running")
        # a stop sent, then its retry after a start: the env stays running
        s = call(pool, request("stop", ENV, rid="ord-stop"))
        self.assertEqual(s.status, pb.OK)
        must(pool, "start", ENV)
        self.assertEqual(call(pool, request("stop", ENV, rid="ord-stop")).SerializeToString(),
                         s.SerializeToString())
        self.assertEqual(env_state(pool, ENV), "running")
        pool.wait_clean()

    def test_sqlite_busy_from_concurrent_reader(self):
        """A reader holding a read transaction on broker.db (as an admin tool
        would) does not disturb the broker; a writer holding the write lock
        makes requests fail with INTERNAL or wait, never half-done, and every
        request id keeps one outcome."""
        pool = self.pool
        con = sqlite3.connect(pool.broker_db(), timeout=10, isolation_level=None)
        self.addCleanup(con.close)
        con.execute("BEGIN")
        con.execute("SELECT count(*) FROM envs").fetchone()
        for i in range(3):
            must(pool, "create", "r%d" % i, dup=1)
        con.execute("COMMIT")
        # the write lock, held 0.5 s (less than the broker's busy timeout and
        # the workers' 1 s liveness) then 7 s (more than both): requests wait,
        # then fail cleanly (the stalled broker loop also makes the worker
        # reconnect, which fails what waited for it)
        results = {}
        for hold, name in ((0.5, "w-short"), (7.0, "w-long")):
            con.execute("BEGIN IMMEDIATE")
            bg = Background(lambda n=name: call(pool, request("create", n, rid="busy-" + n,
                                                              dup=1), timeout_ms=15000,
                                                retries=2))
            time.sleep(hold)
            con.execute("ROLLBACK")
            results[name] = bg.result(60)
        self.assertEqual(results["w-short"].status, pb.OK, results["w-short"].message)
        rep = results["w-long"]
        self.assertIn(rep.status, (pb.OK, pb.INTERNAL, pb.WORKER_FAILED), rep.message)
        if rep.status != pb.OK:
            self.assertIsNone(env_state(pool, "w-long"))  # nothing was changed
        pool.wait_online(["h1"])
        again = call(pool, request("create", "w-long", rid="busy-w-long", dup=1))
        if rep.status == pb.OK:
            self.assertEqual(again.SerializeToString(), rep.SerializeToString())
        else:
            # INTERNAL is not recorded (nothing was changed): the retry runs;
            # WORKER_FAILED is
            self.assertEqual(again.status, pb.OK if rep.status == pb.INTERNAL else rep.status,
                             again.message)
            if again.status != pb.OK:
                must(pool, "create", "w-long", dup=1)
        pool.wait_clean()
        for name in ("r0", "r1", "r2", "w-short", "w-long"):
            self.assertEqual(env_state(pool, name), "running")


class DiskFull(unittest.TestCase):
    """broker.db on a 3 MiB tmpfs mounted in a private mount namespace of
    the broker (unshare -m): fill it, see clear INTERNAL errors and nothing
    half-done, free it, see the broker carry on with an intact database."""

    def setUp(self):
        probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                               capture_output=True)
        if probe.returncode != 0:
            self.skipTest("no private mount namespaces here: %s" % probe.stderr.decode())

    def test_disk_full(self):
        pool = CrashPool()
        self.addCleanup(pool.close)
        state = os.path.join(pool.dir, "broker")
        os.makedirs(state)
        real = crashlib.harness.binary("ttbroker")
        wrapper = os.path.join(pool.dir, "ttbroker-tmpfs")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                    "'mount -t tmpfs -o size=3m ttfleet-crash \"$0\" && exec \"$@\"' "
                    "%s %s \"$@\"\n" % (state, real))
        os.chmod(wrapper, 0o755)
        os.environ["TTFLEET_TTBROKER"] = wrapper
        try:
            pool.start()
        finally:
            os.environ.pop("TTFLEET_TTBROKER")
        bpid = pool.broker.proc.pid
        # the broker's view of its state dir: through its own mount namespace
        root = "/proc/%d/root%s" % (bpid, state)
        self.assertTrue(os.path.exists(os.path.join(root, "broker.db")))
        must(pool, "create", "before", dup=1)
        filler = os.path.join(root, "filler")
        # unbuffered: a write refused with ENOSPC leaves nothing behind for
        # close() to flush (and fail on) again
        with open(filler, "wb", buffering=0) as f:
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
        statuses = []
        for i in range(8):
            rep = call(pool, request("create", "full%d" % i, rid="full-%d" % i, dup=1))
            statuses.append(rep.status)
            if rep.status == pb.INTERNAL:
                self.assertIn("disk full", rep.message)
        self.assertIn(pb.INTERNAL, statuses, "the disk never filled up")
        self.assertTrue(pool.broker.running(), "the broker died of a full disk")
        os.unlink(filler)
        # a failed commit reloads the model: hosts are down until READY again
        pool.wait_online(["h1"])
        rep = call(pool, request("create", "after", rid="after-1", dup=1))
        self.assertEqual(rep.status, pb.OK, rep.message)
        for i, st in enumerate(statuses):
            name = "full%d" % i
            if st == pb.OK:
                self.assertEqual(env_state(pool, name), "running")
            else:
                self.assertIsNone(env_state(pool, name), "a failed create left %s" % name)
        pool.wait_online(["h1"])
        # ttcheck and the integrity check run in the broker's mount namespace
        # (SQLite resolves /proc/PID/root, so the file cannot be read from here)
        pool.mount_ns_pid = bpid
        pool.wait_clean()
        p = subprocess.run(["nsenter", "-t", str(bpid), "-m", "/usr/bin/python3", "-c",
                            "import sqlite3, sys; c = sqlite3.connect('file:' + sys.argv[1] + "
                            "'?mode=ro', uri=True); print(c.execute('PRAGMA integrity_check')"
                            ".fetchone()[0])", pool.broker_db()],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.stdout.strip(), "ok", p.stderr)
        pool.mount_ns_pid = None


if __name__ == "__main__":
    unittest.main()
