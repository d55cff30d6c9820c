"""Soak test: random operations under random kills, then nothing leaked.

For TTFLEET_SOAK_SECONDS (default 180) a client drives random create /
stop / start / pause / resume / delete on a few env names, some with short
leases so the reaper expires them, against a pool of one broker and two
workers. The run has two phases:

  chaos  (the first 60 %): a second thread SIGKILLs the broker or worker h1
         at random moments, and restarts them, sometimes with a crash point
         armed at a random pass (broker.after_commit:N, worker.mid_start:N,
         ...) so they also die at the worst places by themselves;
  calm   (the rest): no kills; after a warm-up the VmRSS and the open fd
         count of the broker and both workers are sampled, and again at the
         end: both must stay flat (RSS within max(4 MiB, 15 %), fds within 4).

At the end the pool must converge to zero ttcheck violations, and every
request id that got an answer must get the very same answer again
(exactly one outcome per request id).

KillStorm is the pattern that once ended with ttcheck's `orphan-process`
(issue 9 item 12): the broker and two workers killed in turn every ~0.5 s
during concurrent creates of 2-VM process envs, TTFLEET_STORM_ROUNDS rounds
(default 12). The workers run with TTFLEET_SPAWN_DELAY_MS (a spawner that
takes its time before it writes the VM's pidfile, as on a loaded host), so
the window "worker killed after forking a spawner, restarted before the
pidfile exists" opens on most kills instead of once in eight runs, and
half the worker restarts arm worker.mid_spawn (the worker dies right after
forking a spawner).
SpawnWindow hits that window on purpose with the crash point
worker.mid_spawn. Both failed with orphan-process before the spawn lock
(worker/engines/engine.h), and pass with it.
"""

import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import crashlib  # noqa: E402
from crashlib import CrashPool, call, pb, request  # noqa: E402

SECONDS = float(os.environ.get("TTFLEET_SOAK_SECONDS", "180"))
NAMES = ["s%d" % i for i in range(6)]
CRASHES = {
    "broker": ["broker.before_commit", "broker.after_commit", "broker.after_send",
               "broker.mid_delete", "broker.mid_reap"],
    "h1": ["worker.after_spawn", "worker.before_reply", "worker.mid_start",
           "worker.mid_stop", "worker.mid_destroy", "worker.mid_spawn"],
}


class Chaos(threading.Thread):
    """Kills and restarts the broker and worker h1 until stopped."""

    def __init__(self, pool, rng):
        super().__init__(daemon=True)
        self.pool, self.rng = pool, rng
        self.stop_event = threading.Event()
        self.kills = self.crashes = 0
        self.error = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test thread
            self.error = e

    def _restart(self, which):
        crash = None
        if self.rng.random() < 0.4:
            crash = "%s:%d" % (self.rng.choice(CRASHES[which]), self.rng.randint(1, 12))
        try:
            if which == "broker":
                self.pool.start_broker(crash=crash)
            else:
                self.pool.start_worker(which, crash=crash)
        except AssertionError:
            pass  # it hit its crash point while starting: restarted next round

    def _run(self):
        pool = self.pool
        pool.arm()  # crash points given at a restart count from the start
        next_kill = time.monotonic() + self.rng.uniform(2, 6)
        while not self.stop_event.is_set():
            for which in ("broker", "h1"):
                d = pool.daemon(which)
                if d.proc is not None and not d.running():
                    self.crashes += 1
                    d.proc = None
                if d.proc is None:
                    self._restart(which)
            if time.monotonic() >= next_kill:
                which = self.rng.choice(("broker", "h1"))
                pool.kill(which)
                self.kills += 1
                time.sleep(self.rng.uniform(0, 1.0))
                self._restart(which)
                next_kill = time.monotonic() + self.rng.uniform(2, 8)
            time.sleep(0.05)
        # The daemons started here die with this thread (PR_SET_PDEATHSIG is
        # per thread): the test thread restarts them for the calm phase.


class Soak(unittest.TestCase):
    def test_soak(self):
        seed = int(os.environ.get("TTFLEET_SOAK_SEED", str(int(time.time()))))
        print("soak: %.0f s, seed %d" % (SECONDS, seed), file=sys.stderr)
        rng = random.Random(seed)
        pool = CrashPool(hosts={"h1": {}, "h2": {}})
        self.addCleanup(pool.close)
        pool.start()
        outcomes = {}  # request id -> (op, packed Reply)
        counts = {}
        chaos = Chaos(pool, random.Random(seed + 1))
        t0 = time.monotonic()
        chaos_end = t0 + 0.6 * SECONDS
        end = t0 + SECONDS
        warm = chaos_end + min(20.0, 0.15 * SECONDS)
        samples = None
        chaos.start()
        n = 0
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                if chaos.is_alive() and now >= chaos_end:
                    self.calm(pool, chaos)
                if samples is None and now >= warm:
                    samples = self.sample(pool)
                if chaos.error:
                    raise chaos.error
                n += 1
                name = rng.choice(NAMES)
                op = rng.choice(("create", "create", "stop", "start", "pause", "resume",
                                 "delete", "delete"))
                kw = {}
                if op == "create":
                    kw = {"dup": rng.randint(1, 3),
                          "lifetime": rng.choice((3, 6, 10, 3600, 3600))}
                rid = "soak-%d-%d" % (seed, n)
                try:
                    rep = call(pool, request(op, name, rid=rid, **kw), timeout_ms=1500,
                               retries=20)
                except crashlib.harness.producer().TransportError:
                    counts["no answer"] = counts.get("no answer", 0) + 1
                    continue
                # a settling broker's "no host yet, retry" is not recorded:
                # it is not an outcome (docs/RELIABILITY.md), so not checked
                settling = rep.status == pb.UNAVAILABLE and "retry" in rep.message
                if not settling:
                    outcomes[rid] = (op, name, kw, rep.SerializeToString())
                key = "%s %s" % (op, pb.Status.Name(rep.status))
                counts[key] = counts.get(key, 0) + 1
                time.sleep(rng.uniform(0, 0.2))
        finally:
            if chaos.is_alive():
                self.calm(pool, chaos)
        if chaos.error:
            raise chaos.error
        print("soak: %d requests, %d kills, %d crash points hit; %s" % (
            n, chaos.kills, chaos.crashes, ", ".join(
                "%s: %d" % kv for kv in sorted(counts.items()))), file=sys.stderr)
        self.assertIsNotNone(samples, "the calm phase was too short to measure")
        final = self.sample(pool)
        for who, (rss0, fds0) in samples.items():
            rss1, fds1 = final[who]
            print("soak: %s VmRSS %d -> %d KiB, fds %d -> %d" % (who, rss0, rss1, fds0, fds1),
                  file=sys.stderr)
            self.assertLessEqual(rss1, rss0 + max(4096, rss0 * 0.15),
                                 "%s memory grew from %d to %d KiB" % (who, rss0, rss1))
            self.assertLessEqual(fds1, fds0 + 4, "%s fds grew from %d to %d" % (who, fds0, fds1))
        pool.wait_clean(timeout=40, what="the pool to converge after the soak")
        # exactly one outcome per request id
        for rid, (op, name, kw, packed) in sorted(outcomes.items()):
            again = call(pool, request(op, name, rid=rid, **kw))
            self.assertEqual(again.SerializeToString(), packed,
                             "request %s (%s %s) got another outcome: %s"
                             % (rid, op, name, again.message))
        pool.wait_clean(timeout=20, what="the pool after the repeats")

    @staticmethod
    def calm(pool, chaos):
        """End the chaos: every daemon runs again, started by this thread,
        without crash points."""
        chaos.stop_event.set()
        chaos.join(60)
        pool.disarm()
        for which in ("broker", "h1"):
            pool.kill(which)
            if which == "broker":
                pool.start_broker()
            else:
                pool.start_worker(which)
        pool.wait_online(["h1", "h2"])

    @staticmethod
    def sample(pool):
        out = {}
        for who in ("broker", "h1", "h2"):
            pid = pool.daemon(who).proc.pid
            out[who] = (crashlib.rss_kib(pid), crashlib.fd_count(pid))
        return out


STORM_ROUNDS = int(os.environ.get("TTFLEET_STORM_ROUNDS", "12"))
SPAWN_DELAY_MS = "1500"


def _with_spawn_delay(test, ms=SPAWN_DELAY_MS):
    """Daemons started from here on get TTFLEET_SPAWN_DELAY_MS (the broker
    ignores it); restored at cleanup."""
    old = os.environ.get("TTFLEET_SPAWN_DELAY_MS")
    os.environ["TTFLEET_SPAWN_DELAY_MS"] = ms

    def restore():
        if old is None:
            os.environ.pop("TTFLEET_SPAWN_DELAY_MS", None)
        else:
            os.environ["TTFLEET_SPAWN_DELAY_MS"] = old
    test.addCleanup(restore)


class SpawnWindow(unittest.TestCase):
    """A worker killed right after it forked a spawner (worker.mid_spawn),
    restarted while that spawner still runs: exactly one process tree for
    the VM afterwards, the recorded one."""

    def test_killed_mid_spawn(self):
        _with_spawn_delay(self, "1500")
        # the delayed spawner holds the worker's loop too: slower liveness
        slow = ["--liveness", "25"]
        pool = CrashPool(broker_args=slow, worker_args=slow)
        self.addCleanup(pool.close)
        pool.start_broker()
        pool.start_worker("h1", crash="worker.mid_spawn:1")
        pool.wait_online(["h1"])
        crashlib.must(pool, "create", "w", dup=1)
        crashlib.must(pool, "stop", "w")
        pool.arm()
        cl = crashlib.Background(lambda: call(pool, request("start", "w", rid="sw-1"),
                                              timeout_ms=1000, retries=30))
        pool.wait_dead("h1")
        pool.disarm()
        pool.restart("h1")
        rep = cl.result(60)  # any outcome (the host went down under it)
        print("spawn window: start -> %s: %s" % (pb.Status.Name(rep.status), rep.message),
              file=sys.stderr)
        pool.wait_clean(timeout=30, what="one process tree for the VM")


class KillStorm(unittest.TestCase):
    """Broker, h1 and h2 killed in turn every ~0.5 s during concurrent
    creates of 2-VM process envs; afterwards nothing is orphaned."""

    def test_kill_storm(self):
        _with_spawn_delay(self)
        seed = int(os.environ.get("TTFLEET_SOAK_SEED", str(int(time.time()))))
        rng = random.Random(seed)
        print("storm: %d rounds, seed %d" % (STORM_ROUNDS, seed), file=sys.stderr)
        slow = ["--liveness", "25"]
        pool = CrashPool(hosts={"h1": {}, "h2": {}}, broker_args=slow, worker_args=slow)
        self.addCleanup(pool.close)
        pool.start()
        stop = threading.Event()
        errors = []

        def producer(k):
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    # each name: create, then stop/start three times,
                    # delete (a start spawns into a VM that has a row:
                    # there a missed pidfile left two trees)
                    cycle = ("create", "stop", "start", "stop", "start", "stop", "start",
                             "delete")
                    name = "st%d-%d" % (k, (n // len(cycle)) % 3)
                    op = cycle[n % len(cycle)]
                    try:
                        call(pool, request(op, name, rid="storm-%d-%d-%d" % (seed, k, n), dup=2),
                             timeout_ms=700, retries=3)
                    except crashlib.harness.producer().TransportError:
                        pass
            except BaseException as e:  # reported by the test thread
                errors.append(e)

        threads = [threading.Thread(target=producer, args=(k,), daemon=True) for k in range(3)]
        for t in threads:
            t.start()
        kills = crashes = 0

        def restart(which):
            # a worker comes back with worker.mid_spawn armed half the
            # time: it then dies right after forking a spawner, the exact
            # window, and is restarted at once below
            crash = ("worker.mid_spawn:%d" % rng.randint(1, 3)
                     if which != "broker" and rng.random() < 0.5 else None)
            try:
                if which == "broker":
                    pool.start_broker()
                else:
                    pool.start_worker(which, crash=crash)
            except AssertionError:
                pass  # died while starting: restarted next time round

        pool.arm()
        try:
            for _ in range(STORM_ROUNDS):
                for which in ("broker", "h1", "h2"):
                    end = time.monotonic() + rng.uniform(0.3, 0.7)
                    while time.monotonic() < end:
                        for w in ("broker", "h1", "h2"):
                            d = pool.daemon(w)
                            if d.proc is not None and not d.running():
                                crashes += 1
                                d.proc = None
                                restart(w)
                        time.sleep(0.02)
                    pool.kill(which)
                    kills += 1
                    time.sleep(rng.uniform(0.05, 0.3))
                    restart(which)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        if errors:
            raise errors[0]
        print("storm: %d kills, %d crash points hit" % (kills, crashes), file=sys.stderr)
        pool.disarm()
        for which in ("h1", "h2"):  # without crash points from here on
            pool.kill(which)
            pool.start_worker(which)
        if not pool.broker.running():
            pool.start_broker()
        pool.wait_online(["h1", "h2"])
        pool.wait_clean(timeout=60, what="the pool to converge after the storm")


if __name__ == "__main__":
    unittest.main()
