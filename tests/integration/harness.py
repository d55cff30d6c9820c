"""Integration harness: real ttbroker and ttworker processes, driven by ttctl.

A Pool is one broker plus some workers, each with its state under one
temporary directory, listening on free loopback TCP ports. The harness waits
for readiness with bounded timeouts (a host counts as ready when
`ttctl host list --json` says it is online), runs ttctl and parses its
--json output, and cleans up on every exit path it can see: it stops only
the processes it started, then kills the VM processes the workers recorded
in worker.db (only when /proc/PID/stat still shows the recorded start time,
so a recycled pid is never hit), then removes the temporary directory.

Daemons get PR_SET_PDEATHSIG so they die with the test even if the test is
killed outright; VM processes deliberately outlive their worker, which is
why the harness also reads worker.db. A test can arm `watchdog()`, which
cleans up and exits well before ctest's own timeout would SIGKILL it.

Binaries: TTFLEET_BUILD (the CMake build dir, default <repo>/build) with
broker/ttbroker, worker/ttworker and tools/ttctl under it; each can be
overridden by TTFLEET_TTBROKER, TTFLEET_TTWORKER, TTFLEET_TTCTL.

TTFLEET_VALGRIND=1 runs ttbroker and ttworker under valgrind memcheck
(definite leaks and memory errors make valgrind exit 99); a daemon that
stops with 99 fails the pool's close() with its log. ttctl always runs with
TTFLEET_CONFIG=/dev/null and no TTFLEET_KEY/BROKER_KEY/EVENTS from the
caller's environment, so a developer's own ttctl.conf cannot leak in.
"""

import atexit
import ctypes
import importlib.util
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

SOURCE = os.environ.get("TTFLEET_SOURCE") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("TTFLEET_BUILD") or os.path.join(SOURCE, "build")
ADMIN = "admin"

# Exit codes of ttctl.
EXIT_OK, EXIT_STATUS, EXIT_USAGE, EXIT_TRANSPORT = 0, 1, 2, 3

VALGRIND = os.environ.get("TTFLEET_VALGRIND", "") not in ("", "0")
VALGRIND_ARGV = ["valgrind", "--error-exitcode=99", "--leak-check=full",
                 "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                 "--trace-children=no", "--child-silent-after-fork=yes", "--num-callers=30"]
VALGRIND_FAILED = 99
_valgrind_failures = []  # (daemon name, log) of daemons valgrind failed

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def binary(name):
    override = os.environ.get("TTFLEET_" + name.upper())
    if override:
        return override
    sub = {"ttbroker": "broker", "ttworker": "worker", "ttctl": "tools"}[name]
    return os.path.join(BUILD, sub, name)


_ports_given = set()


def free_port():
    """A loopback TCP port that nothing listens on right now, outside the
    public port range 40000..59999 (the user network backend binds public
    ports on the host's loopback: our own endpoints must not take them)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        # The kernel may hand the same free port out twice in a row: never
        # give one port to two endpoints of the same test process.
        if not 40000 <= port <= 59999 and port not in _ports_given:
            _ports_given.add(port)
            return port
    raise RuntimeError("no free loopback port outside 40000..59999")


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def proc_start_time(pid):
    """Field 22 of /proc/PID/stat (start time in clock ticks), or None."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return int(fields[19])  # fields[0] is field 3, the state


def proc_alive(pid, start_time):
    """True if pid is running and is the process that started at start_time."""
    if pid <= 0:
        return False
    st = proc_start_time(pid)
    if st is None or st != start_time:
        return False
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[0] != b"Z"
    except OSError:
        return False


def wait_for(what, predicate, timeout=20.0, interval=0.1):
    """Polls predicate until it returns a true value; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError("timed out after %.1f s waiting for %s (last: %r)"
                         % (timeout, what, last))


_pools = []


_watchdog_cleanups = []


def at_watchdog(fn):
    """Also run fn when the watchdog fires (after the pools close): its
    exit skips atexit handlers, so what they would remove (network
    namespaces, say) registers here too."""
    _watchdog_cleanups.append(fn)


def watchdog(seconds):
    """Arms an alarm that, after seconds, closes every pool (daemons, VMs,
    temp dirs), runs the at_watchdog cleanups and exits: run it with a
    budget below the ctest TIMEOUT so the cleanup happens before ctest
    resorts to SIGKILL. 0 disarms."""
    def fire(_sig, _frame):
        print("harness: watchdog: test ran longer than %d s; cleaning up" % seconds,
              file=sys.stderr)
        for pool in list(_pools):
            print(pool.logs(), file=sys.stderr)
            try:
                pool.close()
            except AssertionError as e:  # valgrind's findings: say them, still exit
                print(e, file=sys.stderr)
        for fn in reversed(_watchdog_cleanups):
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup goes on
                print("harness: watchdog cleanup: %s" % e, file=sys.stderr)
        # os._exit runs no atexit handler: the generated pb2 and package dirs
        for d in _tempdirs:
            shutil.rmtree(d, True)
        os._exit(124)
    signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)


_pb2 = None
_producer = None
_tempdirs = []  # removed at exit, by the watchdog too


def _tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    atexit.register(shutil.rmtree, d, True)
    _tempdirs.append(d)
    return d


def pb2():
    """The ttfleet_pb2 module, generated by protoc into a temp dir once."""
    global _pb2
    if _pb2 is None:
        out = _tempdir("ttfleet-pb2-")
        subprocess.run(["protoc", "--proto_path=" + os.path.join(SOURCE, "schema"),
                        "--python_out=" + out, os.path.join(SOURCE, "schema", "ttfleet.proto")],
                       check=True)
        sys.path.insert(0, out)
        import ttfleet_pb2
        _pb2 = ttfleet_pb2
        _pb2.generated_dir = out
    return _pb2


_ttfleet_dir = None


def ttfleet_package():
    """A directory with the ttfleet Python package (client/python) installed
    by pip from this source tree, once per process; it is put on sys.path."""
    global _ttfleet_dir
    if _ttfleet_dir is None:
        out = _tempdir("ttfleet-py-")
        build = _tempdir("ttfleet-py-build-")
        src = os.path.join(build, "src")
        # build from a copy, so the source tree gets no build/ directory
        shutil.copytree(os.path.join(SOURCE, "client", "python"), src,
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
        env = dict(os.environ, TTFLEET_PROTO=os.path.join(SOURCE, "schema", "ttfleet.proto"),
                   PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   PIP_ROOT_USER_ACTION="ignore")
        subprocess.run(["/usr/bin/python3", "-m", "pip", "install", "-q", "--no-build-isolation",
                        "--no-deps", "--target", out, src], check=True, env=env,
                       stdout=subprocess.DEVNULL, timeout=300)
        sys.path.insert(0, out)
        _ttfleet_dir = out
    return _ttfleet_dir


def producer():
    """The example producer module (its Client is ttfleet.Client)."""
    global _producer
    if _producer is None:
        pb2()
        ttfleet_package()
        path = os.path.join(SOURCE, "client", "examples", "producer.py")
        spec = importlib.util.spec_from_file_location("ttfleet_producer", path)
        _producer = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_producer)
    return _producer


class PortTaken(Exception):
    pass


class Daemon:
    """One process we started, with its output in a log file."""

    def __init__(self, name, argv, log_path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.proc = None

    def start(self):
        argv = VALGRIND_ARGV + self.argv if VALGRIND else self.argv
        log = open(self.log_path, "ab")
        log.write(("--- start: %s\n" % " ".join(argv)).encode())
        log.flush()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        log.close()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=15.0):
        """Signals the process and reaps it; SIGKILL if it takes too long.
        Returns its exit status (None if it was not running)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        rc = self.proc.returncode
        self.proc = None
        if VALGRIND and rc == VALGRIND_FAILED:
            _valgrind_failures.append((self.name, self.log()))
        return rc

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""


class CtlResult:
    def __init__(self, argv, rc, out, err, data):
        self.argv, self.rc, self.out, self.err, self.data = argv, rc, out, err, data

    def __repr__(self):
        return "ttctl %s -> rc %d\nstdout: %s\nstderr: %s" % (
            " ".join(self.argv), self.rc, self.out.strip(), self.err.strip())


def _write_image(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


# A VM program for the process engine: runs until TERM (as pid 1 of its
# namespace it must handle TERM itself).
SLEEPER = """#!/bin/sh
trap 'exit 0' TERM INT
while :; do sleep 1 & wait $!; done
"""


class Pool:
    """A broker and its workers under one temporary directory."""

    def __init__(self, hosts=None, broker_args=(), min_stop_interval=1, keep=False):
        # hosts: {host_id: {"cpu": N, "mem": MIB, "disk": MIB, "engines": "process,hollow"}}
        self.hosts = hosts or {"h1": {}}
        self.broker_args = list(broker_args)
        self.min_stop_interval = min_stop_interval
        self.keep = keep or bool(os.environ.get("TTFLEET_KEEP"))
        self.dir = tempfile.mkdtemp(prefix="ttfleet-it-")
        self._pick_ports()
        self.images = os.path.join(self.dir, "images")
        self.broker = None
        self.workers = {}
        self._closed = False
        atexit.register(self.close)
        _pools.append(self)
        self._make_images()

    def _pick_ports(self):
        self.clients_ep = "tcp://127.0.0.1:%d" % free_port()
        self.workers_ep = "tcp://127.0.0.1:%d" % free_port()
        self.events_ep = "tcp://127.0.0.1:%d" % free_port()

    def _make_images(self):
        """Our own images dir: the repo's images plus extra names for the
        image-prefix tests."""
        os.makedirs(self.images)
        repo_images = os.path.join(SOURCE, "tools", "images")
        if os.path.isdir(repo_images):
            for name in os.listdir(repo_images):
                src = os.path.join(repo_images, name)
                if os.path.isdir(src):
                    shutil.copytree(src, os.path.join(self.images, name))
                elif not name.startswith("."):
                    shutil.copy2(src, os.path.join(self.images, name))
        if not os.path.exists(os.path.join(self.images, "sleeper")):
            _write_image(os.path.join(self.images, "sleeper"), SLEEPER)
        _write_image(os.path.join(self.images, "bravo-sleeper"), SLEEPER)

    # ---- daemons ----

    def start(self, wait=True):
        # A port found free may be taken before the broker binds it (by a
        # test running in parallel, or as the ephemeral port of some
        # connection): then take new ports and try again.
        for attempt in range(5):
            try:
                self.start_broker()
                break
            except PortTaken:
                if attempt == 4:
                    raise
                self._pick_ports()
        for host in self.hosts:
            self.start_worker(host)
        if wait:
            self.wait_online(list(self.hosts))
        return self

    def start_broker(self):
        state = os.path.join(self.dir, "broker")
        os.makedirs(state, exist_ok=True)
        argv = [binary("ttbroker"), "--state", state, "--clients", self.clients_ep,
                "--workers", self.workers_ep, "--events", self.events_ep,
                "--admin-tenant", ADMIN,
                "--min-stop-interval", str(self.min_stop_interval)] + self.broker_args
        self.broker = Daemon("ttbroker", argv, os.path.join(self.dir, "broker.log"))
        self.broker.start()
        # Ready when it answers MMI: bounded, and fails fast if it died.
        def answers():
            if not self.broker.running():
                log = self.broker.log()
                self.broker.stop()
                if "Address already in use" in log:
                    raise PortTaken(log)
                raise AssertionError("ttbroker exited:\n" + log)
            return self.ctl("mmi", "tt.env", timeout_ms=200).rc == 0
        wait_for("ttbroker to answer", answers, timeout=20)

    def worker_state(self, host):
        return os.path.join(self.dir, "worker-" + host)

    def start_worker(self, host):
        spec = self.hosts[host]
        state = self.worker_state(host)
        os.makedirs(state, exist_ok=True)
        argv = [binary("ttworker"), "--state", state, "--broker", self.workers_ep,
                "--host-id", host, "--images", self.images,
                "--cpu", str(spec.get("cpu", 8)), "--mem", str(spec.get("mem", 8192)),
                "--disk", str(spec.get("disk", 409600)),
                "--engines", spec.get("engines", "process,hollow")] + spec.get("args", [])
        d = Daemon("ttworker-" + host, argv, os.path.join(self.dir, "worker-%s.log" % host))
        self.workers[host] = d
        d.start()

    def stop_broker(self, sig=signal.SIGTERM):
        return self.broker.stop(sig) if self.broker else None

    def stop_worker(self, host, sig=signal.SIGTERM):
        d = self.workers.get(host)
        return d.stop(sig) if d else None

    def wait_online(self, hosts, timeout=30):
        def online():
            for d in [self.broker] + list(self.workers.values()):
                if d and d.proc is not None and not d.running():
                    raise AssertionError("%s exited:\n%s" % (d.name, d.log()))
            r = self.ctl("host", "list", tenant=ADMIN, timeout_ms=1000)
            if r.rc != 0:
                return False
            states = {h["id"]: h["state"] for h in r.data["hosts"]}
            return all(states.get(h) == "online" for h in hosts)
        wait_for("hosts %s online" % hosts, online, timeout=timeout, interval=0.2)

    # ---- clients ----

    def ctl(self, *args, tenant=None, json_out=True, timeout_ms=10000,
            env=None):
        """Runs ttctl against this pool. Returns a CtlResult whose data is the
        parsed JSON of a successful command."""
        argv = [binary("ttctl"), "--broker", self.clients_ep, "--timeout", str(timeout_ms)]
        if tenant:
            argv += ["--tenant", tenant]
        if json_out:
            argv.append("--json")
        argv += [str(a) for a in args]
        run_env = dict(os.environ)
        for name in ("TTFLEET_TENANT", "TTFLEET_BROKER", "TTFLEET_KEY", "TTFLEET_BROKER_KEY",
                     "TTFLEET_EVENTS"):
            run_env.pop(name, None)
        run_env["TTFLEET_CONFIG"] = os.devnull
        run_env.update(env or {})
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=4 * timeout_ms / 1000.0 + 10, env=run_env)
        data = None
        if p.returncode == 0 and json_out:
            try:
                data = json.loads(p.stdout)
            except ValueError as e:
                raise AssertionError("ttctl printed invalid JSON (%s): %r" % (e, p.stdout))
        return CtlResult(argv[1:], p.returncode, p.stdout, p.stderr, data)

    def client(self, tenant="default", timeout_ms=5000):
        """A raw 7/MDP client (the example producer's) for what ttctl refuses
        to send, such as invalid names."""
        return producer().Client(self.clients_ep, tenant, timeout_ms=timeout_ms)

    # ---- worker state ----

    def worker_vms(self, host):
        """{vm_id: row} from the host's worker.db (read-only)."""
        path = os.path.join(self.worker_state(host), "worker.db")
        if not os.path.exists(path):
            return {}
        con = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=5)
        try:
            con.row_factory = sqlite3.Row
            return {r["vm_id"]: dict(r) for r in con.execute("SELECT * FROM vms")}
        except sqlite3.Error:
            return {}
        finally:
            con.close()

    def kill_recorded_vms(self):
        """Kills every VM process a worker recorded, if it is still that
        process (pid and start time)."""
        for host in self.hosts:
            for row in self.worker_vms(host).values():
                pid, start = row.get("pid") or 0, row.get("start_time") or 0
                if pid > 0 and proc_alive(pid, start):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass

    def logs(self):
        out = []
        for d in [self.broker] + list(self.workers.values()):
            if d:
                out.append("==== %s ====\n%s" % (d.name, d.log()[-6000:]))
        return "\n".join(out)

    def close(self):
        if self._closed:
            return
        self._closed = True
        if self in _pools:
            _pools.remove(self)
        for d in self.workers.values():
            d.stop(signal.SIGTERM, timeout=10)
        if self.broker:
            self.broker.stop(signal.SIGTERM, timeout=10)
        self.kill_recorded_vms()
        if self.keep:
            print("harness: kept %s" % self.dir, file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)
        if _valgrind_failures:
            failed = list(_valgrind_failures)
            del _valgrind_failures[:]
            raise AssertionError("valgrind found errors in %s:\n%s" % (
                ", ".join(name for name, _ in failed),
                "\n".join("==== %s ====\n%s" % (name, log[-20000:]) for name, log in failed)))


def _on_sigterm(_sig, _frame):
    sys.exit(128 + signal.SIGTERM)  # runs atexit, so pools are closed


signal.signal(signal.SIGTERM, _on_sigterm)


def create_while_freeing(create, timeout_s=20.0):
    """Call create() until it is not refused for room a worker is still
    freeing (the broker counts it as used until the destroy is answered,
    docs/RELIABILITY.md 11), at most timeout_s. The Python client's
    NoCapacity with "still being freed" in its message is retried; any
    other outcome is returned or raised."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return create()
        except Exception as e:  # ttfleet.NoCapacity: harness does not import ttfleet
            if (getattr(e, "status", "") != "NO_CAPACITY"
                    or "still being freed" not in getattr(e, "message", "")
                    or time.monotonic() > deadline):
                raise
            time.sleep(0.2)
