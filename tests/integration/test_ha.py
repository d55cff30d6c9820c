"""Broker HA (broker/ha): three ttbroker processes in one Raft cluster on
loopback, one hollow ttworker that knows all three, and clients.

What it checks, in one run (the cluster takes a few seconds to form, so the
steps share it):
  - a follower answers NOT_LEADER naming the leader's clients endpoint, and
    takes no worker (the worker's READY lands on the leader);
  - ttctl with --broker FOLLOWER,...,LEADER follows NOT_LEADER to the leader;
  - ttctl status lists every member (leader, followers, unreachable after a
    kill), and ttgw given every member serves, with the Raft series in its
    /metrics (promtool-clean);
  - every worker command carries the leader's term: the worker's recorded
    term rises across a failover;
  - SIGSTOP of the leader past the election timeout: the others elect a
    leader and serve; a create queued to the stopped leader is never
    acknowledged by it after SIGCONT (it steps down, or stops to rebuild),
    and the same request id at the new leader runs there once;
  - kill -9 of the leader with a create in flight: the retry with the same
    id gets the one outcome (the first answer if one came; else OK, or the
    create rolled back as after a restart, recorded), never a second env;
  - creates acknowledged by the leader are all there after kill -9 of the
    leader, on the new leader, and on every member's broker.db;
  - a retry of an acknowledged create with the same request id gets the
    first answer and makes no second env;
  - with one member down the cluster serves (the failover's create), and
    prints the failover time: kill -9 -> first successful create;
  - with two members down the survivor refuses writes with NOT_LEADER and
    "no leader", and stays up;
  - a killed member restarts, rebuilds broker.db from the Raft log (it
    removes the old file) and the cluster serves again;
  - a member wiped clean (state and Raft directory) rejoins from a snapshot;
  - membership: cluster_add refuses a duplicate id or Raft address and a bad
    address, cluster_remove the leader and an unknown id, a follower answers
    NOT_LEADER; `ttctl cluster add` of a 4th broker started with --raft-join
    and an empty Raft dir: it catches up from a snapshot (same envs in its
    broker.db) and names the leader; `ttctl status` lists it; `ttctl cluster
    remove` of a follower: with it and one more member killed the cluster
    still serves creates (2 of the 3 voters left; 2 of 4 would be no
    majority), status no longer lists it, and removing a live member that
    would leave no reachable majority is refused.
"""
import os
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import unittest

import zmq

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
from harness import Daemon, binary, free_port, pb2, wait_for  # noqa: E402

ELECTION_MS = 1000


class Member:
    def __init__(self, mid, root):
        self.id = mid
        self.raft = "127.0.0.1:%d" % free_port()
        self.clients = "tcp://127.0.0.1:%d" % free_port()
        self.workers = "tcp://127.0.0.1:%d" % free_port()
        self.events = "tcp://127.0.0.1:%d" % free_port()
        self.state = os.path.join(root, "b%d" % mid)
        self.raft_dir = os.path.join(root, "raft%d" % mid)
        self.log = os.path.join(root, "broker%d.log" % mid)
        self.daemon = None


class Ha(unittest.TestCase):
    def setUp(self):
        harness.watchdog(170)
        self.dir = tempfile.mkdtemp(prefix="ttfleet-ha-")
        self.members = [Member(i, self.dir) for i in (1, 2, 3)]
        self.worker = None
        self.ctx = zmq.Context.instance()
        self.pb = pb2()
        images = os.path.join(self.dir, "images")
        os.makedirs(images)
        with open(os.path.join(images, "sleeper"), "w") as f:
            f.write("#!/bin/sh\nexec sleep 100000\n")
        os.chmod(os.path.join(images, "sleeper"), 0o755)
        try:
            for m in self.members:
                self.start_broker(m)
            wstate = os.path.join(self.dir, "worker")
            os.makedirs(wstate)
            self.worker = Daemon("ttworker", [
                binary("ttworker"), "--state", wstate, "--broker",
                ",".join(m.workers for m in self.members), "--host-id", "h1",
                "--images", images, "--cpu", "64", "--mem", "65536", "--disk", "409600",
                "--engines", "hollow", "--heartbeat-ms", "200"],
                os.path.join(self.dir, "worker.log"))
            self.worker.start()
        except Exception:
            self.tearDown()
            raise

    def tearDown(self):
        failed = any(e for _, e in getattr(self._outcome, "errors", []) if e) or \
            (hasattr(self._outcome, "result") and not self._outcome.result.wasSuccessful())
        for d in [self.worker] + [m.daemon for m in self.members]:
            if d:
                d.stop(signal.SIGKILL)
        if failed:
            for m in self.members:
                print("---- broker %d\n%s" % (m.id, self.read(m.log)[-4000:]), file=sys.stderr)
            print("---- worker\n%s" % self.read(os.path.join(self.dir, "worker.log"))[-3000:],
                  file=sys.stderr)
        shutil.rmtree(self.dir, True)
        harness.watchdog(0)

    @staticmethod
    def read(path):
        try:
            with open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def start_broker(self, m, join=False):
        # a joining member is given only itself: it learns the others from
        # the leader (the Raft configuration and the cluster_members rows)
        lists = [m] if join else self.members
        peers = ",".join("%d=%s" % (x.id, x.raft) for x in lists)
        clients = ",".join("%d=%s" % (x.id, x.clients) for x in lists)
        workers = ",".join("%d=%s" % (x.id, x.workers) for x in lists)
        m.daemon = Daemon("ttbroker%d" % m.id, self.broker_prefix(m) + [
            binary("ttbroker"), "--state", m.state, "--clients", m.clients,
            "--workers", m.workers, "--events", m.events, "--blobs", "none",
            "--heartbeat-ms", "200", "--raft-id", str(m.id), "--raft-peers", peers,
            "--raft-clients", clients, "--raft-workers", workers, "--raft-dir", m.raft_dir,
            "--raft-election-ms", str(ELECTION_MS), "--raft-snapshot-every", "4"] +
            (["--raft-join"] if join else []), m.log)
        m.daemon.start()

    def broker_prefix(self, m):
        return []

    # ---- a raw 7/MDP client: the request id is ours to repeat ----

    def call(self, ep, op, body, rid, tenant="t1", timeout=1.0, service=b"tt.env"):
        req = self.pb.Request(request_id=rid, tenant=tenant)
        getattr(req, op).CopyFrom(body)
        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        try:
            s.connect(ep)
            s.send_multipart([b"", b"MDPC01", service, req.SerializeToString()])
            if not s.poll(int(timeout * 1000)):
                return None
            frames = s.recv_multipart()
            rep = self.pb.Reply()
            rep.ParseFromString(frames[-1])
            return rep
        finally:
            s.close()

    def create_body(self, name):
        return self.pb.EnvCreate(name=name, engine="hollow", cpu=1, mem_mib=64, disk_mib=100,
                                 lifetime=3600,
                                 images=[self.pb.ImageCount(image="sleeper", dup=1)])

    def env_names(self, ep):
        r = self.call(ep, "env_list", self.pb.EnvList(), "list-%f" % time.monotonic())
        if r is None or r.status != self.pb.OK:
            return None
        return sorted(e.name for e in r.envs.envs)

    def leader(self, alive):
        """The member that serves (answers a read with OK), or None."""
        for m in alive:
            r = self.call(m.clients, "env_list", self.pb.EnvList(), "probe-%f" % time.monotonic(),
                          timeout=0.5)
            if r is not None and r.status == self.pb.OK:
                return m
        return None

    def db_envs(self, m):
        try:
            con = sqlite3.connect("file:%s?mode=ro" % os.path.join(m.state, "broker.db"),
                                  uri=True, timeout=5)
        except sqlite3.Error:
            return None  # not there yet
        try:
            return sorted(r[0] for r in con.execute("SELECT name FROM envs"))
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def db_events(self, m):
        """(id, kind) of every event in m's broker.db event log, None when
        it cannot be read."""
        try:
            con = sqlite3.connect("file:%s?mode=ro" % os.path.join(m.state, "broker.db"),
                                  uri=True, timeout=5)
        except sqlite3.Error:
            return None
        try:
            out = []
            for i, body in con.execute("SELECT id, body FROM events ORDER BY id"):
                ev = self.pb.Event()
                ev.ParseFromString(body)
                if ev.id != i:
                    return None
                out.append((i, ev.kind))
            return out
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def worker_term(self):
        """The highest broker term the worker recorded (worker.db meta)."""
        con = sqlite3.connect("file:%s?mode=ro" % os.path.join(self.dir, "worker", "worker.db"),
                              uri=True, timeout=5)
        try:
            row = con.execute("SELECT value FROM meta WHERE key = 'broker_term'").fetchone()
            return int(row[0]) if row else 0
        finally:
            con.close()

    def ctl_status(self, last=None):
        """`ttctl status --json` given every member (a follower first;
        last, e.g. a dead one, at the end of the list)."""
        import json
        import subprocess
        order = list(reversed(self.members))
        if last is not None:
            order = [m for m in order if m is not last] + [last]
        eps = ",".join(m.clients for m in order)
        p = subprocess.run([binary("ttctl"), "--broker", eps, "--tenant", "admin", "--json",
                            "status"], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
        return p.returncode, json.loads(p.stdout) if p.stdout.strip() else None, p.stderr

    def check_gateway(self, lead):
        """ttgw given every member (followers first) serves through the
        leader, and its /metrics has the Raft series, promtool-clean."""
        import gwlib
        from test_gateway import lint_metrics

        class Stub:
            pass
        stub = Stub()
        stub.dir = self.dir
        stub.clients_ep = ",".join(m.clients for m in self.members if m is not lead) + \
            "," + lead.clients
        stub.events_ep = ",".join(m.events for m in self.members)
        gw = gwlib.Gateway(stub, [("a" * 24, "admin", "admin")])
        try:
            status, _, body = gw.request("GET", "/v1/hosts", token="a" * 24)
            self.assertEqual(status, 200, body)
            status, _, text = gw.request("GET", "/metrics")
            self.assertEqual(status, 200)
            lint_metrics(self, text)
            for series in ("ttfleet_raft_term{member=\"%d\"}" % lead.id,
                           "ttfleet_raft_role{member=\"%d\",role=\"leader\"} 1" % lead.id,
                           "ttfleet_raft_commit_index{", "ttfleet_raft_applied_index{",
                           "ttfleet_raft_leader_changes_total{",
                           "ttfleet_raft_apply_latency_seconds_count{"):
                self.assertIn(series, text)
            # the membership routes reach the leader's handlers
            status, _, body = gw.request("DELETE", "/v1/cluster/members/42", token="a" * 24)
            self.assertEqual((status, body["error"]["status"]), (404, "NOT_FOUND"), body)
            status, _, body = gw.request("DELETE", "/v1/cluster/members/%d" % lead.id,
                                         token="a" * 24)
            self.assertEqual((status, body["error"]["status"]), (409, "INVALID_STATE"), body)
            self.assertIn("is the leader", body["error"]["message"])
            status, _, body = gw.request("POST", "/v1/cluster/members", token="a" * 24,
                                         body={"id": 9, "raft": "no-port",
                                               "clients": "tcp://127.0.0.1:1",
                                               "workers": "tcp://127.0.0.1:2"})
            self.assertEqual((status, body["error"]["status"]), (422, "BAD_REQUEST"), body)
            count = [l for l in text.splitlines()
                     if l.startswith("ttfleet_raft_apply_latency_seconds_count")]
            self.assertGreater(int(count[0].split()[-1]), 0, count)
        finally:
            gw.stop()

    def create_until_ok(self, alive, name, rid, timeout):
        """The same create (same id) to each live member in turn until one
        answers OK: what a client does through a failover."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for m in alive:
                r = self.call(m.clients, "env_create", self.create_body(name), rid, timeout=0.5)
                if r is not None:
                    last = (m.id, self.pb.Status.Name(r.status), r.message)
                    if r.status == self.pb.OK:
                        return m, r
            time.sleep(0.05)
        raise AssertionError("create %s not acknowledged in %.0f s (last: %r)"
                             % (name, timeout, last))

    def test_failover(self):
        pb = self.pb
        lead = wait_for("a leader", lambda: self.leader(self.members), timeout=20)
        followers = [m for m in self.members if m is not lead]
        # an idle follower sleeps in its poll (it runs no timers): well
        # under 5 % of a core, where a loop spinning on a zero timeout takes
        # whatever the machine gives it
        def cpu(pid):
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        before = [cpu(f.daemon.proc.pid) for f in followers]
        time.sleep(2)
        spent = [cpu(f.daemon.proc.pid) - b for f, b in zip(followers, before)]
        self.assertLess(max(spent), 0.1, "follower CPU over 2 s idle: %r" % spent)
        # a follower names the leader
        r = self.call(followers[0].clients, "env_list", pb.EnvList(), "f-1")
        self.assertEqual(r.status, pb.NOT_LEADER, r)
        self.assertEqual(r.leader, lead.clients)
        self.assertIn(lead.clients, r.message)
        self.assertEqual(r.request_id, "f-1")
        # the worker's READY lands on the leader (followers DISCONNECT it)
        def host_online():
            r = self.call(lead.clients, "host_list", pb.Empty(), "h-%f" % time.monotonic(),
                          tenant="admin")
            return r is not None and r.status == pb.OK and \
                [h.state for h in r.hosts.hosts] == ["online"]
        wait_for("h1 online on the leader", host_online, timeout=20)

        # acknowledged creates on the leader
        acked = {}
        for i in range(5):
            rid = "ha-create-%d" % i
            r = self.call(lead.clients, "env_create", self.create_body("e%d" % i), rid,
                          timeout=10)
            self.assertIsNotNone(r)
            self.assertEqual(r.status, pb.OK, r.message)
            acked["e%d" % i] = (rid, r.env.vms[0].vm_id)
        # libttclient follows NOT_LEADER from a follower to the leader
        eps = ",".join([followers[0].clients, followers[1].clients, lead.clients])
        import subprocess
        p = subprocess.run([binary("ttctl"), "--broker", eps, "--tenant", "t1", "--json",
                            "env", "create", "via-ctl", "--image", "sleeper", "--engine",
                            "hollow", "--cpu", "1", "--mem", "64", "--disk", "100"],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
        self.assertEqual(p.returncode, 0, p.stderr)
        names = sorted(list(acked) + ["via-ctl"])
        self.assertEqual(self.env_names(lead.clients), names)
        # the worker's commands carried the leader's term; it keeps the highest
        term1 = self.worker_term()
        self.assertGreaterEqual(term1, 1)
        # ttctl status: every member with its own view
        rc, st, err = self.ctl_status()
        self.assertEqual(rc, 0, err)
        self.assertEqual(st["hosts_online"], 1)
        roles = {c["id"]: c for c in st["cluster"]}
        self.assertEqual(sorted(roles), [1, 2, 3])
        self.assertEqual(roles[lead.id]["role"], "leader")
        self.assertEqual(roles[lead.id]["endpoint"], lead.clients)
        self.assertEqual(sorted(roles[f.id]["role"] for f in followers), ["follower"] * 2)
        self.assertTrue(all(c["term"] == term1 for c in st["cluster"]), st)
        self.assertGreater(roles[lead.id]["commit_index"], 0)
        self.assertGreater(roles[lead.id]["match_index"], 0)
        # ttgw with the endpoint list, and the Raft metrics
        self.check_gateway(lead)

        # SIGSTOP the leader past the election timeout: the others elect a
        # leader; a create queued to the stopped one meanwhile is never
        # acknowledged by it once it resumes (it steps down, or stops to
        # rebuild), and its id, sent to the new leader, runs there once
        lead.daemon.proc.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        try:
            new, r = self.create_until_ok(followers, "during-stop", "ha-stop-1", timeout=30)
            print("\nha: failover (SIGSTOP of the leader -> first successful create): %.2f s"
                  % (time.monotonic() - t0), file=sys.stderr)
            stale = self.ctx.socket(zmq.DEALER)
            stale.setsockopt(zmq.LINGER, 0)
            stale.connect(lead.clients)
            req = pb.Request(request_id="ha-stale-1", tenant="t1")
            req.env_create.CopyFrom(self.create_body("stale"))
            stale.send_multipart([b"", b"MDPC01", b"tt.env", req.SerializeToString()])
            time.sleep(0.2)
        finally:
            lead.daemon.proc.send_signal(signal.SIGCONT)
        try:
            if stale.poll(3000):
                rep = pb.Reply()
                rep.ParseFromString(stale.recv_multipart()[-1])
                self.assertNotEqual(rep.status, pb.OK, "the deposed leader acknowledged: %s" % rep)
        finally:
            stale.close()
        def stepped_down():
            if not lead.daemon.running():
                return True  # it stopped to rebuild broker.db from the Raft log
            r = self.call(lead.clients, "env_list", pb.EnvList(), "sd-%f" % time.monotonic(),
                          timeout=0.5)
            return r is not None and r.status == pb.NOT_LEADER and r.leader == new.clients
        wait_for("the resumed leader steps down", stepped_down, timeout=10)
        if not lead.daemon.running():
            self.start_broker(lead)
        r = self.call(new.clients, "env_create", self.create_body("stale"), "ha-stale-1",
                      timeout=10)
        self.assertEqual(r.status, pb.OK, r.message)
        names = sorted(names + ["during-stop", "stale"])
        self.assertEqual(self.env_names(new.clients), names)
        wait_for("the resumed member's broker.db has every env",
                 lambda: self.db_envs(lead) == names, timeout=15)
        lead, followers = new, [m for m in self.members if m is not new]

        # kill -9 the leader with a create in flight; the same create id is
        # retried across the rest: one env, and the first answer if one came
        inflight = self.ctx.socket(zmq.DEALER)
        inflight.setsockopt(zmq.LINGER, 0)
        inflight.connect(lead.clients)
        req = pb.Request(request_id="ha-inflight-1", tenant="t1")
        req.env_create.CopyFrom(self.create_body("inflight"))
        inflight.send_multipart([b"", b"MDPC01", b"tt.env", req.SerializeToString()])
        time.sleep(0.02)
        lead.daemon.stop(signal.SIGKILL)
        first = None
        if inflight.poll(0):
            first = pb.Reply()
            first.ParseFromString(inflight.recv_multipart()[-1])
        inflight.close()
        t0 = time.monotonic()
        new, r = self.create_until_ok(followers, "after-failover", "ha-after-1", timeout=30)
        failover = time.monotonic() - t0
        print("\nha: failover (kill -9 of the leader -> first successful create): %.2f s"
              % failover, file=sys.stderr)
        # the retry gets the one outcome: the first answer when one came;
        # else the create ran to its end (OK) or, caught mid-way, was rolled
        # back as after a restart (INTERNAL, recorded; no env)
        r = self.call(new.clients, "env_create", self.create_body("inflight"), "ha-inflight-1",
                      timeout=10)
        self.assertIsNotNone(r)
        if first is not None and first.status == pb.OK:
            self.assertEqual(r.status, pb.OK, r.message)
            self.assertEqual(r.env.vms[0].vm_id, first.env.vms[0].vm_id)
        if r.status == pb.OK:
            names = sorted(names + ["inflight"])
        else:
            self.assertEqual(r.status, pb.INTERNAL, r.message)
            self.assertIn("interrupted by a broker restart", r.message)
        print("ha: the create in flight at kill -9: %s" % pb.Status.Name(r.status),
              file=sys.stderr)
        again = self.call(new.clients, "env_create", self.create_body("inflight"),
                          "ha-inflight-1", timeout=10)
        self.assertEqual((again.status, again.message), (r.status, r.message))
        # the new leader's commands carry a newer term, which the worker keeps
        self.assertGreater(self.worker_term(), term1)
        rc, st, err = self.ctl_status(last=lead)  # the dead leader last
        self.assertEqual(rc, 0, err)
        roles = {c["id"]: c["role"] for c in st["cluster"]}
        self.assertEqual(roles[lead.id], "unreachable")
        self.assertEqual(roles[new.id], "leader")
        # every acknowledged create survived, none twice
        self.assertEqual(self.env_names(new.clients), sorted(names + ["after-failover"]))
        for name, (rid, vm_id) in acked.items():
            r = self.call(new.clients, "env_create", self.create_body(name), rid, timeout=5)
            self.assertEqual(r.status, pb.OK, "retry of %s: %s" % (name, r.message))
            self.assertEqual(r.env.name, name)
            self.assertEqual(r.env.vms[0].vm_id, vm_id)
        # a new id for an existing name is a new request: refused, not a 2nd env
        r = self.call(new.clients, "env_create", self.create_body("e0"), "ha-new-id", timeout=5)
        self.assertEqual(r.status, pb.ALREADY_EXISTS, r.message)
        self.assertEqual(len(self.env_names(new.clients)), len(names) + 1)
        other = [m for m in followers if m is not new][0]
        wait_for("the follower's broker.db has every env",
                 lambda: self.db_envs(other) == sorted(names + ["after-failover"]),
                 timeout=10)
        # the event log is replicated with the batches: the follower's holds
        # the new leader's events, with the same ids
        wait_for("the follower's event log is the leader's",
                 lambda: self.db_events(other) == self.db_events(new) is not None, timeout=10)
        kinds = [k for _, k in self.db_events(new)]
        self.assertIn("env.created", kinds)

        # two members down: the survivor refuses writes, clearly, and stays up
        other.daemon.stop(signal.SIGKILL)
        def no_leader():
            r = self.call(new.clients, "env_list", pb.EnvList(), "nl-%f" % time.monotonic())
            return r is not None and r.status == pb.NOT_LEADER and r.leader == ""
        wait_for("the survivor steps down", no_leader, timeout=5 * ELECTION_MS / 1000.0)
        r = self.call(new.clients, "env_create", self.create_body("lonely"), "ha-lonely")
        self.assertEqual(r.status, pb.NOT_LEADER)
        self.assertIn("no leader", r.message)
        self.assertTrue(new.daemon.running(), "the survivor exited:\n" + self.read(new.log))

        # the first leader comes back: it rebuilds broker.db from the Raft log
        self.start_broker(lead)
        m, r = self.create_until_ok([new, lead], "back", "ha-back-1", timeout=30)
        final = sorted(names + ["after-failover", "back"])
        self.assertEqual(self.env_names(m.clients), final)
        wait_for("the restarted member's broker.db has every env",
                 lambda: self.db_envs(lead) == final, timeout=10)
        self.assertNotIn("lonely", self.env_names(m.clients))

        # a member wiped clean (state and Raft log) rejoins: the leader's log
        # was compacted behind its snapshots (every 4 entries), so it catches
        # up from a snapshot of broker.db
        other.daemon.stop(signal.SIGKILL)
        shutil.rmtree(other.state)
        shutil.rmtree(other.raft_dir)
        self.start_broker(other)
        wait_for("the wiped member's broker.db has every env",
                 lambda: self.db_envs(other) == final, timeout=20)
        self.assertIn("installed a snapshot", self.read(other.log))
        self.assertTrue(all(x.daemon.running() for x in self.members))
        self.check_membership(final)

    def ctl(self, eps, *args, timeout=60):
        import subprocess
        return subprocess.run([binary("ttctl"), "--broker", eps, "--tenant", "admin"] +
                              list(args), capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, TTFLEET_CONFIG=os.devnull))

    def check_membership(self, final):
        pb = self.pb
        lead = wait_for("a leader", lambda: self.leader(self.members), timeout=20)
        followers = [m for m in self.members if m is not lead]
        n = [0]

        def admin(ep, op, body):
            n[0] += 1
            return self.call(ep, op, body, "member-%d" % n[0], tenant="admin", timeout=30,
                             service=b"tt.admin")

        def add_body(mid, raft):
            return pb.ClusterAdd(id=mid, raft=raft, clients="tcp://127.0.0.1:1",
                                 workers="tcp://127.0.0.1:2")
        # refusals, each with its reason
        r = admin(lead.clients, "cluster_add", add_body(followers[0].id, "127.0.0.1:1"))
        self.assertEqual(r.status, pb.ALREADY_EXISTS, r)
        self.assertIn("member %d is already in the cluster" % followers[0].id, r.message)
        r = admin(lead.clients, "cluster_add", add_body(9, followers[0].raft))
        self.assertEqual(r.status, pb.ALREADY_EXISTS, r)
        self.assertIn("is member %d's" % followers[0].id, r.message)
        for bad in ("127.0.0.1", "127.0.0.1:0", "a b:7000", ""):
            r = admin(lead.clients, "cluster_add", add_body(9, bad))
            self.assertEqual(r.status, pb.BAD_REQUEST, (bad, r))
            self.assertIn("want HOST:PORT", r.message)
        r = admin(lead.clients, "cluster_add", pb.ClusterAdd(id=9, raft="127.0.0.1:9",
                                                             clients="nope", workers="tcp://x:1"))
        self.assertEqual(r.status, pb.BAD_REQUEST, r)
        self.assertIn("clients endpoint", r.message)
        r = admin(lead.clients, "cluster_remove", pb.ClusterRemove(id=lead.id))
        self.assertEqual(r.status, pb.INVALID_STATE, r)
        self.assertIn("is the leader", r.message)
        r = admin(lead.clients, "cluster_remove", pb.ClusterRemove(id=42))
        self.assertEqual(r.status, pb.NOT_FOUND, r)
        r = admin(followers[0].clients, "cluster_add", add_body(9, "127.0.0.1:9"))
        self.assertEqual(r.status, pb.NOT_LEADER, r)
        self.assertEqual(r.leader, lead.clients)
        r = self.call(lead.clients, "cluster_remove", pb.ClusterRemove(id=followers[0].id),
                      "member-user", tenant="t1", service=b"tt.admin")
        self.assertEqual(r.status, pb.FORBIDDEN, r)

        # a member that never answers: C-Raft gives its catch-up up, the add
        # is answered UNAVAILABLE, and the spare it left can be removed
        t0 = time.monotonic()
        r = admin(lead.clients, "cluster_add", add_body(5, "127.0.0.1:%d" % free_port()))
        self.assertEqual(r.status, pb.UNAVAILABLE, r)
        self.assertIn("not made a voter", r.message)
        rc, st, err = self.ctl_status()
        self.assertEqual(rc, 0, err)
        spare = [c for c in st["cluster"] if c["id"] == 5]
        self.assertEqual([(c["voter"], c["role"]) for c in spare], [(False, "unreachable")], st)
        print("\nha: cluster add of a member that never answers refused in %.2f s"
              % (time.monotonic() - t0), file=sys.stderr)
        r = admin(lead.clients, "cluster_remove", pb.ClusterRemove(id=5))
        self.assertEqual(r.status, pb.OK, r)

        # a 4th broker, empty, joins: it catches up from a snapshot (the
        # leader's log is compacted every 4 entries) and becomes a voter
        m4 = Member(4, self.dir)
        self.members.append(m4)  # tearDown stops it
        self.start_broker(m4, join=True)
        t0 = time.monotonic()
        p = self.ctl(lead.clients, "cluster", "add", "4=%s" % m4.raft, "--clients", m4.clients,
                     "--workers", m4.workers)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        print("\nha: cluster add of an empty member answered in %.2f s"
              % (time.monotonic() - t0), file=sys.stderr)
        wait_for("the new member's broker.db has every env",
                 lambda: self.db_envs(m4) == final, timeout=20)
        self.assertIn("installed a snapshot", self.read(m4.log))
        # it names the leader, though its own lists name only itself
        r = self.call(m4.clients, "env_list", pb.EnvList(), "m4-1")
        self.assertEqual(r.status, pb.NOT_LEADER, r)
        self.assertEqual(r.leader, lead.clients)
        rc, st, err = self.ctl_status()
        self.assertEqual(rc, 0, err)
        roles = {c["id"]: c for c in st["cluster"]}
        self.assertEqual(sorted(roles), [1, 2, 3, 4])
        self.assertEqual(roles[4]["role"], "follower")
        self.assertTrue(all(c["voter"] for c in st["cluster"]), st)
        self.assertEqual(roles[4]["endpoint"], m4.clients)
        # the same add again: the member exists now
        r = admin(lead.clients, "cluster_add", add_body(4, m4.raft))
        self.assertEqual(r.status, pb.ALREADY_EXISTS, r)

        # remove a follower, then lose it and one more: the 3 voters left
        # have 2 alive, a majority (of the 4 before, 2 would not be one)
        x, y = followers
        p = self.ctl(lead.clients, "cluster", "remove", str(x.id))
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        x.daemon.stop(signal.SIGKILL)
        y.daemon.stop(signal.SIGKILL)
        t0 = time.monotonic()
        m, r = self.create_until_ok([lead, m4], "after-remove", "ha-after-remove", timeout=15)
        self.assertIs(m, lead)
        # the removed member is not listed, nor counted
        rc, st, err = self.ctl_status()
        self.assertEqual(rc, 0, err)
        roles = {c["id"]: c["role"] for c in st["cluster"]}
        self.assertEqual(sorted(roles), sorted([lead.id, y.id, 4]))
        self.assertEqual(roles[y.id], "unreachable")
        # removing the live member 4 would leave the leader and dead y: no
        # majority. The leader counts a member reachable if it heard from it
        # within an election timeout: wait past two
        time.sleep(2.5 * ELECTION_MS / 1000.0)
        r = admin(lead.clients, "cluster_remove", pb.ClusterRemove(id=4))
        self.assertEqual(r.status, pb.INVALID_STATE, r)
        self.assertIn("no majority", r.message)
        m, r = self.create_until_ok([lead], "still-serving", "ha-still-serving", timeout=10)


PARTITION_GID = 4240  # + member id: each broker's group, which nft matches


class Partition(unittest.TestCase):
    """The leader cut off from the other brokers (Raft traffic only; its
    clients endpoint stays reachable), by nftables in a network namespace
    this test makes (`unshare -n`, which the run inside lives in: the
    namespace, its rules and every daemon go when it ends):
      - a create sent to the cut-off leader is never acknowledged by it;
      - the other two elect a leader and serve creates (failover printed);
      - healed, the old leader follows (or restarts to rebuild), the create
        sent to it runs once at the new leader with the same id, and every
        member's broker.db holds the same envs."""

    def test_partition(self):
        import subprocess
        if os.geteuid() != 0 or not all(shutil.which(t) for t in ("unshare", "nft", "setpriv")):
            self.skipTest("needs root, unshare, nft and setpriv")
        p = subprocess.run(["unshare", "-n", sys.executable, "-m", "unittest", "-v",
                            "test_ha._PartitionInner"], cwd=os.path.dirname(__file__),
                           env=dict(os.environ, TT_HA_NETNS="1"), capture_output=True,
                           text=True, timeout=170)
        for line in p.stderr.splitlines():
            if line.startswith("ha:"):
                print(line, file=sys.stderr)
        self.assertEqual(p.returncode, 0, p.stdout[-3000:] + p.stderr[-12000:])
        self.assertIn("OK", p.stderr)
        self.assertNotIn("skipped", p.stderr)


@unittest.skipUnless(os.environ.get("TT_HA_NETNS") == "1",
                     "run by Partition inside the network namespace it makes")
class _PartitionInner(Ha):
    test_failover = None  # only the partition runs here

    def setUp(self):
        import subprocess
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        super().setUp()

    def broker_prefix(self, m):
        return ["setpriv", "--regid", str(PARTITION_GID + m.id), "--clear-groups", "--"]

    def test_partition(self):
        import subprocess
        pb = self.pb
        lead = wait_for("a leader", lambda: self.leader(self.members), timeout=20)
        followers = [m for m in self.members if m is not lead]

        def host_online():
            r = self.call(lead.clients, "host_list", pb.Empty(), "h-%f" % time.monotonic(),
                          tenant="admin")
            return r is not None and r.status == pb.OK and \
                [h.state for h in r.hosts.hosts] == ["online"]
        wait_for("h1 online on the leader", host_online, timeout=20)
        r = self.call(lead.clients, "env_create", self.create_body("p0"), "part-0", timeout=10)
        self.assertEqual(r.status, pb.OK, r.message)

        port = lambda m: int(m.raft.rsplit(":", 1)[1])  # noqa: E731
        rules = ("table inet ttpart {\n chain out {\n"
                 "  type filter hook output priority 0; policy accept;\n"
                 "  tcp dport %d drop\n  tcp sport %d drop\n"
                 "  meta skgid %d tcp dport { %d, %d } drop\n }\n}\n"
                 % (port(lead), port(lead), PARTITION_GID + lead.id,
                    port(followers[0]), port(followers[1])))
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True)
        t0 = time.monotonic()
        stale = self.ctx.socket(zmq.DEALER)
        stale.setsockopt(zmq.LINGER, 0)
        try:
            # a create to the cut-off leader: it cannot commit it
            stale.connect(lead.clients)
            req = pb.Request(request_id="part-stale", tenant="t1")
            req.env_create.CopyFrom(self.create_body("stale"))
            stale.send_multipart([b"", b"MDPC01", b"tt.env", req.SerializeToString()])
            new, r = self.create_until_ok(followers, "during", "part-during", timeout=30)
            print("\nha: failover (leader partitioned -> first successful create): %.2f s"
                  % (time.monotonic() - t0), file=sys.stderr)
            if stale.poll(2000):
                rep = pb.Reply()
                rep.ParseFromString(stale.recv_multipart()[-1])
                self.assertNotEqual(rep.status, pb.OK, "the cut-off leader acknowledged: %s" % rep)
        finally:
            stale.close()
            subprocess.run(["nft", "delete", "table", "inet", "ttpart"], check=True)

        # healed: the old leader follows the new one (or stopped to rebuild
        # broker.db from the Raft log: restart it)
        def follows():
            if not lead.daemon.running():
                return True
            r = self.call(lead.clients, "env_list", pb.EnvList(), "pf-%f" % time.monotonic(),
                          timeout=0.5)
            return r is not None and r.status == pb.NOT_LEADER and r.leader == new.clients
        wait_for("the old leader follows after the heal", follows, timeout=15)
        if not lead.daemon.running():
            self.start_broker(lead)
        r = self.call(new.clients, "env_create", self.create_body("stale"), "part-stale",
                      timeout=10)
        self.assertEqual(r.status, pb.OK, r.message)
        again = self.call(new.clients, "env_create", self.create_body("stale"), "part-stale",
                          timeout=10)
        self.assertEqual((again.status, again.env.vms[0].vm_id), (pb.OK, r.env.vms[0].vm_id))
        final = sorted(["p0", "during", "stale"])
        self.assertEqual(self.env_names(new.clients), final)
        for m in self.members:
            wait_for("broker %d's broker.db has every env" % m.id,
                     lambda m=m: self.db_envs(m) == final, timeout=15)


if __name__ == "__main__":
    unittest.main()
