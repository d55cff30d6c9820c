"""Crash harness: the integration harness plus crash points, kills and ttcheck.

A CrashPool is a harness.Pool (real ttbroker and ttworker on free loopback
ports under one temporary directory) with:

  - crash points: start_broker(crash="broker.after_commit:2") or
    start_worker(host, crash=...) starts the daemon with TTFLEET_CRASH_AT and
    TTFLEET_CRASH_ARM=<pool>/crash.arm, so it runs unharmed until arm()
    creates the file; then the named pass SIGKILLs it;
  - fast liveness (200 ms heartbeats, 5 missed = down), a short worker
    timeout, --min-stop-interval 0 and a short --lease-grace, so a scenario
    takes seconds;
  - check(): tools/ttcheck over broker.db, every worker.db and /proc (and the
    broker's in-memory accounting through ttctl), and wait_clean() which
    polls it until the pool has converged, bounded;
  - cleanup on every exit path: daemons by pid (harness), then every VM
    process found by pidfile or by its working directory under the pool's
    worker state dirs (pid and start time checked right before the kill),
    then the directory.

Requests go through a raw 7/MDP client (the example producer's), so the
test chooses the request id and can send it again: the broker must answer
a repeat with the first outcome, byte for byte.
"""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import harness  # noqa: E402
import ttcheck_loader  # noqa: E402
from harness import ADMIN, wait_for  # noqa: E402,F401

HB_MS = 200
LIVENESS = 5
LEASE_GRACE = 2


ttcheck = ttcheck_loader.load()
pb = harness.pb2()
harness.producer()  # loaded once here: lazy loading from several threads races

# The environment of the daemon being started, per thread: harness.Pool
# builds its Daemon objects itself, so the crash variables reach them here.
_tls = threading.local()


class _EnvDaemon(harness.Daemon):
    """Starts with the calling thread's crash variables in its environment
    (every start holds the lock, so no other daemon inherits them)."""

    def start(self):
        extra = getattr(_tls, "env", None) or {}
        saved = {k: os.environ.get(k) for k in extra}
        with _env_lock:
            os.environ.update(extra)
            try:
                super().start()
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


_env_lock = threading.Lock()
harness.Daemon = _EnvDaemon


class CrashPool(harness.Pool):
    def __init__(self, hosts=None, broker_args=(), worker_args=(), lease_grace=LEASE_GRACE,
                 worker_timeout_ms=10000):
        hosts = hosts or {"h1": {}}
        for spec in hosts.values():
            spec["args"] = (["--heartbeat-ms", str(HB_MS), "--liveness", str(LIVENESS),
                             "--stop-timeout-ms", "1000"] + list(worker_args)
                            + list(spec.get("args", [])))
        args = ["--heartbeat-ms", str(HB_MS), "--liveness", str(LIVENESS),
                "--worker-timeout-ms", str(worker_timeout_ms),
                "--lease-grace", str(lease_grace)] + list(broker_args)
        super().__init__(hosts=hosts, broker_args=args, min_stop_interval=0)
        self.arm_file = os.path.join(self.dir, "crash.arm")
        self.mount_ns_pid = None

    # ---- daemons with crash points ----

    def _with_crash(self, crash, fn, *a):
        _tls.env = ({"TTFLEET_CRASH_AT": crash, "TTFLEET_CRASH_ARM": self.arm_file}
                    if crash else None)
        try:
            return fn(*a)
        finally:
            _tls.env = None

    def start_broker(self, crash=None):
        self._with_crash(crash, super().start_broker)

    def start_worker(self, host, crash=None):
        self._with_crash(crash, super().start_worker, host)

    def arm(self):
        with open(self.arm_file, "w"):
            pass

    def disarm(self):
        try:
            os.unlink(self.arm_file)
        except FileNotFoundError:
            pass

    def daemon(self, which):
        return self.broker if which == "broker" else self.workers[which]

    def wait_dead(self, which, timeout=20):
        """Waits until the daemon exits (a crash point fired); returns its
        exit status. Fails if it is still alive after timeout."""
        d = self.daemon(which)
        wait_for("%s to hit its crash point" % d.name, lambda: not d.running(),
                 timeout=timeout, interval=0.02)
        rc = d.proc.returncode
        d.proc = None
        return rc

    def kill(self, which, sig=signal.SIGKILL):
        d = self.daemon(which)
        if d.proc is not None and d.running():
            d.proc.send_signal(sig)
            d.proc.wait(10)
        d.proc = None

    def restart(self, which, wait=True):
        """Starts the daemon again, without crash points."""
        if which == "broker":
            self.start_broker()
        else:
            self.start_worker(which)
        if wait:
            self.wait_online(list(self.hosts))

    # ---- state ----

    def broker_db(self):
        return os.path.join(self.dir, "broker", "broker.db")

    def worker_db(self, host):
        return os.path.join(self.worker_state(host), "worker.db")

    def check(self, allow_transient=False, broker=True):
        """ttcheck's violations (a list of dicts; empty when clean). With
        self.mount_ns_pid set, ttcheck runs in that process's mount namespace
        (where the broker's tmpfs is)."""
        args = ["--broker-db", self.broker_db(), "--json", "--ttctl", harness.binary("ttctl")]
        for host in self.hosts:
            if os.path.exists(self.worker_db(host)):
                args += ["--worker-db", "%s=%s" % (host, self.worker_db(host))]
        if broker and self.broker and self.broker.running():
            args += ["--broker", self.clients_ep]
        if allow_transient:
            args.append("--allow-transient")
        if self.mount_ns_pid:
            p = subprocess.run(["nsenter", "-t", str(self.mount_ns_pid), "-m",
                                "/usr/bin/python3", ttcheck.__file__] + args,
                               capture_output=True, text=True, timeout=60)
            rc, out, err = p.returncode, p.stdout, p.stderr
        else:
            o, e = io.StringIO(), io.StringIO()
            rc = ttcheck.run(args, out=o, err=e)
            out, err = o.getvalue(), e.getvalue()
        if rc == 2:
            raise AssertionError("ttcheck usage error: %s" % err)
        return json.loads(out)["violations"]

    def wait_clean(self, timeout=25, what="the pool to converge"):
        """Polls ttcheck until it reports nothing; fails with the last
        violations and the daemons' logs."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.check()
            if not v:
                return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    "ttcheck still reports %d violation(s) after %.0f s waiting for %s:\n%s\n%s"
                    % (len(v), timeout, what,
                       "\n".join("%s %s: %s" % (x["kind"], x["host"], x["message"]) for x in v),
                       self.logs()))
            time.sleep(0.2)

    def vm_pids(self):
        """Every live VM process of this pool's hosts: (pid, start time)."""
        out = []
        for host in self.hosts:
            state = self.worker_state(host)
            if not os.path.isdir(state):
                continue
            for pids in ttcheck.vm_processes(state).values():
                for pid in pids:
                    st = ttcheck.proc_stat(pid)
                    if st:
                        out.append((pid, st[1]))
            for pid, start in ttcheck.pidfiles(state).values():
                if ttcheck.proc_alive(pid, start):
                    out.append((pid, start))
        return sorted(set(out))

    def kill_vm_processes(self):
        for pid, start in self.vm_pids():
            if ttcheck.proc_alive(pid, start):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def close(self):
        if self._closed:
            return
        for d in list(self.workers.values()) + [self.broker]:
            if d:
                d.stop(signal.SIGTERM, timeout=10)
        self.kill_vm_processes()
        super().close()

    # ---- requests ----

    def client(self, tenant=ADMIN, timeout_ms=1000, retries=40):
        return harness.producer().Client(self.clients_ep, tenant, timeout_ms=timeout_ms,
                                         retries=retries)


def request(op, name=None, rid=None, **kw):
    """A Request for op (create, stop, start, pause, resume, delete, show,
    extend) on env name."""
    req = pb.Request()
    if rid:
        req.request_id = rid
    if op == "create":
        c = req.env_create
        c.name = name
        c.images.add(image=kw.get("image", "sleeper"), dup=kw.get("dup", 2))
        c.engine = kw.get("engine", "process")
        c.cpu, c.mem_mib, c.disk_mib = 1, 64, 64
        c.lifetime = kw.get("lifetime", 3600)
        c.ports.append(80)
    elif op == "extend":
        req.env_extend.name = name
        req.env_extend.lifetime = kw["lifetime"]
    else:
        getattr(req, "env_" + op).name = name
    return req


def call(pool, req, tenant=ADMIN, timeout_ms=1000, retries=40):
    """Sends req (retrying with its request id) and returns the Reply."""
    cl = pool.client(tenant, timeout_ms=timeout_ms, retries=retries)
    try:
        return cl.call("tt.env", req)
    finally:
        cl.close()


def must(pool, op, name, **kw):
    rep = call(pool, request(op, name, **kw))
    if rep.status != pb.OK:
        raise AssertionError("%s %s: %s: %s\n%s" % (op, name, pb.Status.Name(rep.status),
                                                    rep.message, pool.logs()))
    return rep


def env_state(pool, name):
    """The env's state as the broker shows it, or None if it does not exist."""
    rep = call(pool, request("show", name))
    if rep.status == pb.NOT_FOUND:
        return None
    if rep.status != pb.OK:
        raise AssertionError("show %s: %s" % (name, rep.message))
    return rep.env.state


class Background:
    """Runs fn() in a thread; result() joins it (bounded) and returns its
    value or re-raises its exception."""

    def __init__(self, fn):
        self._value = self._error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self._value = fn()
        except BaseException as e:  # handed to the test thread
            self._error = e

    def result(self, timeout=60):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("background call still running after %d s" % timeout)
        if self._error:
            raise self._error
        return self._value


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))
