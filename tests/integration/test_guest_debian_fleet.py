"""Issue 11's "Done when", through the real daemons: a Debian guest a user
can get into, on the qemu engine, with the nft backend (in network
namespaces this test makes) and again with the user backend.

The image is tools/mkimage-debian.sh's (built once, cached under the build
directory, offered to the worker through its --images directory as a
symlink: catalog distribution is not what this test is about). For each
backend a pool (ttbroker + one ttworker) is started and:

  - `ttctl env create deb --dup 2 --ssh-key KEY.pub --user-data UD
    --ready ssh --wait ready --wait-timeout S` returns with both VMs ready;
  - `ttctl env ssh deb VMID -i KEY --user debian -- CMD` (the real OpenSSH
    client; under nft run inside the client namespace, which reaches the
    broker through an ipc:// endpoint and the VM through the DNAT map on
    the worker namespace's public address) logs in, `--print` shows the
    command, another key is refused, and the file user-data wrote is there
    with the VM's hostname;
  - `ttctl env exec` returns `uname -r` and a non-zero exit code faithfully;
    past its timeout the command is killed with its whole process group (a
    background child and a grandchild holding the output pipes end too, a
    follow-up exec finds none of them) and exits 124 with what it wrote;
    and `ttctl env cp` round-trips a 10 MiB random file byte-exact both
    ways (a subtest skipped, saying so, only while ttctl has no such
    command);
  - after `env stop` / `env start` (ready again, bounded) the key still
    works and first boot did not run again: user-data's bootcmd (every
    boot) appended a second line, its runcmd (once per instance) did not,
    and the instance-id is the same;
  - (nft) a VM whose readiness can never succeed (the small test guest with
    a console regex it never prints) makes `--wait ready --wait-timeout` exit 1 with its
    console tail;
  - (user) measurements: request -> ready through ttfleet against the same
    two QEMU command lines started by hand (fresh overlays on the same base
    disk, copies of the same seeds, same accel, host forwards on free
    ports) until each answers an SSH-2.0 banner; the exec round trip
    (median of `ttctl env exec true`); cp throughput each way; the load
    average with each.

Every QEMU, daemon, namespace and temp file goes at the end, on failure
too: the pools stop the daemons they started and the VMs their workers
recorded (pid and start time), the hand-started QEMUs are killed by their
own Popen, the namespaces are deleted; a watchdog cleans up well before
ctest's TIMEOUT. Exit 77 (skip) only without root, network namespaces,
QEMU, mmdebstrap, genisoimage/xorriso or OpenSSH.
"""

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import unittest

import harness
import netlib

T = "debtest"
IMAGE = "debian12"
CLIENT_IP, HOST_IP = "172.31.251.2", "172.31.251.1"
VM_ARGS = ["--engine", "qemu", "--cpu", 1, "--mem", 1024, "--disk", 4096, "--lifetime", 3600]
READY_S = 540       # two Debian guests booting at once under TCG on a shared 2-core machine
SSH_RETRY_S = 240   # the banner may come before cloud-init installed the key
STOP_MS = 60000     # the worker's power-off grace: let the guest shut down cleanly
BUDGET_S = 1380     # the whole module; ctest's TIMEOUT is 1500
N_EXEC = 10
USER_DATA = """#cloud-config
write_files:
  - path: /var/tmp/tt-user-data
    content: "hello-from-user-data\\n"
bootcmd:
  - [sh, -c, "echo boot >> /var/tmp/tt-boots"]
runcmd:
  - [sh, -c, "echo ran >> /var/tmp/tt-first-boot"]
"""
UNAME_RE = r"^\d+\.\d+\.\d+-\d+-amd64$"

_phases = []  # (backend, phase, seconds, load average at its end)
_measures = []
_namespaces = []  # the Netns objects made, for the watchdog


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, network namespaces)"
    for tool in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    if not (shutil.which("genisoimage") or shutil.which("xorriso")):
        return "neither genisoimage nor xorriso is installed (the NoCloud seed)"
    return None


def _load():
    return "%.2f %.2f %.2f" % os.getloadavg()


def _run(argv, timeout, check=True, **kw):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kw)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d\n%s%s" % (" ".join(map(str, argv)), p.returncode,
                                                 p.stdout, p.stderr))
    return p


class _Phase:
    """Times one phase; recorded (with the load average) even when it fails."""

    def __init__(self, backend, name):
        self.backend, self.name = backend, name

    def __enter__(self):
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        self.s = time.monotonic() - self.t0
        _phases.append((self.backend, self.name, self.s, _load()))
        print("phase %-5s %-34s %7.1f s  (load %s)" % (self.backend, self.name, self.s, _load()),
              flush=True)
        return False


class IpcPool(harness.Pool):
    """Clients and workers on ipc:// endpoints, so that ttctl inside the
    client namespace and a worker inside the host namespace reach the broker
    through the file system."""

    def _pick_ports(self):
        super()._pick_ports()
        self.clients_ep = "ipc://" + os.path.join(self.dir, "clients.ipc")
        self.workers_ep = "ipc://" + os.path.join(self.dir, "workers.ipc")


class _Hand:
    """QEMU started by hand (the baseline): the worker's own command line
    for a VM, with its state paths moved to dir, a fresh overlay on the same
    base disk, a copy of the VM's seed and one host forward to guest 22."""

    def __init__(self, argv, vmdir, dir_, base, size, port):
        self.dir, self.port = dir_, port
        os.makedirs(dir_)
        shutil.copy(os.path.join(vmdir, "seed.iso"), os.path.join(dir_, "seed.iso"))
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base,
              os.path.join(dir_, "disk.qcow2"), str(size)], timeout=60)
        self.argv = []
        for a in argv:
            a = a.replace(vmdir + "/", dir_ + "/")
            if a.startswith("user,"):
                a = re.sub(r",hostfwd=[^,]*", "", a) + ",hostfwd=tcp:127.0.0.1:%d-:22" % port
            self.argv.append(a)
        self.proc = None

    def start(self):
        self.log = open(os.path.join(self.dir, "console.log"), "wb")
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=harness._die_with_parent)

    def banner(self):
        if self.proc.poll() is not None:
            raise AssertionError("hand-started QEMU exited %d: %s" % (
                self.proc.returncode, open(os.path.join(self.dir, "console.log"), "rb")
                .read()[-2000:].decode(errors="replace")))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=3) as s:
                s.settimeout(3)
                return s.recv(256).startswith(b"SSH-2.0-")
        except OSError:
            return False

    def ssh(self, key, *cmd):
        """The real OpenSSH client with key, retried (bounded) until it logs in."""
        argv = ["ssh", "-i", key, "-p", str(self.port), "-o", "IdentitiesOnly=yes",
                "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                "debian@127.0.0.1", "--"] + list(cmd)
        deadline = time.monotonic() + SSH_RETRY_S
        while True:
            try:
                r = _run(argv, timeout=60, check=False)
            except subprocess.TimeoutExpired:
                r = None
            if (r and r.returncode == 0) or time.monotonic() > deadline:
                break
            time.sleep(2)
        if not r or r.returncode != 0:
            raise AssertionError("ssh to the hand-started QEMU: %r" % (r,))
        return r.stdout

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc:
            self.log.close()
        self.proc = None


class GuestDebianFleet(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = _skip_reason()
        if why:
            netlib.skip(why)
        netlib.need_netns()
        harness.watchdog(BUDGET_S)
        fire = signal.getsignal(signal.SIGALRM)

        def fire_and_drop_namespaces(sig, frame):
            # harness's watchdog ends with os._exit: delete our namespaces first
            for ns in list(_namespaces):
                ns.close()
            fire(sig, frame)
        signal.signal(signal.SIGALRM, fire_and_drop_namespaces)
        cls.image_dir = os.path.join(harness.BUILD, "images", IMAGE)
        with _Phase("-", "image (mkimage-debian.sh)"):
            _run([os.path.join(harness.SOURCE, "tools", "mkimage-debian.sh"), cls.image_dir],
                 timeout=900)
        with _Phase("-", "test guest (mkguest.sh)"):
            cls.ttguest = netlib.build_guest()
        cls.tmp = tempfile.mkdtemp(prefix="tt-debfleet-")
        cls.key = os.path.join(cls.tmp, "id_ed25519")
        cls.other_key = os.path.join(cls.tmp, "other_ed25519")
        for k in (cls.key, cls.other_key):
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tt-test", "-f", k],
                 timeout=30)
        cls.user_data = os.path.join(cls.tmp, "user-data")
        with open(cls.user_data, "w") as f:
            f.write(USER_DATA)
        cls.data = os.urandom(10 << 20)
        cls.data_path = os.path.join(cls.tmp, "random.bin")
        with open(cls.data_path, "wb") as f:
            f.write(cls.data)
        cls.exec_missing = cls._missing("exec")
        cls.cp_missing = cls._missing("cp")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)
        harness.watchdog(0)
        print("\n==== phases (wall s, load average at the end) ====")
        for backend, name, s, load in _phases:
            print("  %-5s %-34s %7.1f   %s" % (backend, name, s, load))
        print("==== measurements ====")
        for m in _measures:
            print("  MEASURE " + m)
        sys.stdout.flush()

    @staticmethod
    def _missing(cmd):
        """ttctl's reason when it has no `env CMD`, else None."""
        env = dict(os.environ, TTFLEET_CONFIG=os.devnull)
        p = subprocess.run([harness.binary("ttctl"), "env", cmd, "--help"], capture_output=True,
                           text=True, timeout=20, env=env, stdin=subprocess.DEVNULL)
        out = p.stdout + p.stderr
        return out.strip().splitlines()[0] if "unknown command" in out else None

    # ---- pools ----

    def _pool_nft(self):
        self.ns = netlib.Netns()
        _namespaces.append(self.ns)
        self.addCleanup(self.ns.close)  # runs last: after the pool is gone
        self.hns, self.cns = netlib.veth_pair(self.ns, "td", "d", HOST_IP, CLIENT_IP)
        return IpcPool(hosts={"h1": {
            "engines": "qemu", "cpu": 4, "mem": 4096, "disk": 40960,
            "args": ["--net", "nft", "--netns", self.hns, "--public-address", HOST_IP,
                     "--stop-timeout-ms", str(STOP_MS)]}})

    def _pool_user(self):
        self.cns = None
        return harness.Pool(hosts={"h1": {
            "engines": "qemu", "cpu": 4, "mem": 4096, "disk": 40960,
            "args": ["--net", "user", "--stop-timeout-ms", str(STOP_MS)]}})

    def _start_pool(self, backend):
        self.backend = backend
        pool = self._pool_nft() if backend == "nft" else self._pool_user()
        self.pool = pool
        self.addCleanup(pool.close)
        os.symlink(self.image_dir, os.path.join(pool.images, IMAGE))
        netlib.install_images(pool, self.ttguest)
        pool.start()
        self.addCleanup(self._delete_envs)

    def _delete_envs(self):
        """On every path: delete what this test created (the pool's close
        also kills what the worker recorded, should the delete not make it)."""
        for name in ("deb", "never"):
            self.pool.ctl("env", "delete", name, tenant=T, timeout_ms=30000)

    # ---- ttctl ----

    def ok(self, *args, timeout_ms=60000):
        r = self.pool.ctl(*args, tenant=T, timeout_ms=timeout_ms)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, netlib.diagnostics(self.pool)))
        return r.data

    def ctl(self, *args, timeout_ms=60000, json_out=False):
        return self.pool.ctl(*args, tenant=T, timeout_ms=timeout_ms, json_out=json_out)

    def env_ssh(self, vm_id, *cmd, key=None, extra=(), timeout=90):
        """`ttctl env ssh` (from the client namespace under nft): the real
        OpenSSH client, run by ttctl's exec."""
        argv = [harness.binary("ttctl"), "--broker", self.pool.clients_ep, "--tenant", T,
                "env", "ssh", "deb", vm_id, "-i", key or self.key, "--user", "debian"]
        argv += list(extra) + ["--"] + list(cmd)
        if self.cns:
            argv = ["ip", "netns", "exec", self.cns] + argv
        env = {k: v for k, v in os.environ.items() if not k.startswith("TTFLEET_")}
        env["TTFLEET_CONFIG"] = os.devnull
        try:
            return _run(argv, timeout=timeout, check=False, env=env)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(argv, 124, e.stdout or "", "timed out")

    def ssh_until(self, vm_id, *cmd):
        """Retries (bounded) until the login works: the ssh probe says the
        banner is there, cloud-init may still be installing the key."""
        deadline = time.monotonic() + SSH_RETRY_S
        while True:
            r = self.env_ssh(vm_id, *cmd)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(3)
        self.assertEqual(r.returncode, 0, "ssh to vm %s: %s %s\n%s" % (
            vm_id, r.stdout, r.stderr, netlib.diagnostics(self.pool)))
        return r.stdout

    def vms(self):
        return self.ok("env", "show", "deb")["vms"]

    def wait_ready(self, what):
        def ready():
            vms = self.vms()
            return vms if all(v["ready"] and v["state"] == "running" for v in vms) else None
        return netlib.diagnosed(
            self.pool, lambda: harness.wait_for(what, ready, timeout=READY_S, interval=1.0))

    # ---- the flow ----

    def test_nft(self):
        self.flow("nft")

    def test_user(self):
        self.flow("user")

    def flow(self, backend):
        with _Phase(backend, "pool start"):
            self._start_pool(backend)
        t_req = time.clock_gettime(time.CLOCK_BOOTTIME)  # the clock of /proc/PID/stat
        with _Phase(backend, "create 2 VMs --wait ready") as ph:
            for attempt in range(2):
                r = self.ctl("env", "create", "deb", "--image", IMAGE, "--dup", 2, *VM_ARGS,
                             "--ssh-key", self.key + ".pub", "--user-data", self.user_data,
                             "--ready", "ssh", "--wait", "ready", "--wait-timeout", READY_S,
                             timeout_ms=160000, json_out=True)
                # user backend: a public port may be held for a moment by another
                # program on this shared machine (the worker says so): once more
                if r.rc == 0 or attempt or "is taken on this host" not in r.err:
                    break
                print("create refused, a public port is taken: once more\n%s" % r.err.strip())
                t_req = time.clock_gettime(time.CLOCK_BOOTTIME)
                ph.t0 = time.monotonic()
            self.assertEqual(r.rc, 0, "%r\n%s" % (r, netlib.diagnostics(self.pool)))
        created_s = ph.s
        vms = r.data["vms"]
        self.assertEqual(len(vms), 2)
        for vm in vms:
            self.assertTrue(vm["ready"], vm)
            self.assertGreater(vm["ready_at"], 0, vm)
            self.assertEqual(vm["state"], "running")
            self.assertEqual(vm["public_address"], HOST_IP if backend == "nft" else "127.0.0.1")
        t_done = time.clock_gettime(time.CLOCK_BOOTTIME)
        _measures.append("%s: env create of 2 Debian VMs -> both ready (ssh banner), through "
                         "ttctl --wait ready: %.1f s (load %s); %s" % (
                             backend, created_s, _load(), self._breakdown(vms, t_req, t_done)))
        if backend == "user":
            self.capture = [self._capture(vm) for vm in vms]

        with _Phase(backend, "ssh login, user-data, --print"):
            self.check_login(vms)
            iids = {vm["vm_id"]: self.ssh_until(vm["vm_id"], "cat",
                                                "/var/lib/cloud/data/instance-id").strip()
                    for vm in vms}
            for iid in iids.values():
                self.assertRegex(iid, r"^tt-\d+-[0-9a-f]{16}$")
            self.assertEqual(len(set(iids.values())), 2, "instance ids not unique per VM")

        if backend == "user":
            # for the measurement: how fast the guests themselves booted
            self.fleet_up = [self._cloud_init_up(os.path.join(
                self.pool.worker_state("h1"), "vms", str(vm["vm_id"]), "console.log"))
                for vm in vms]
            self.fleet_sshd = [self._sshd_up(
                lambda *cmd, vid=vm["vm_id"]: self.ssh_until(vid, *cmd)) for vm in vms]

        with _Phase(backend, "exec and cp"):
            self.check_exec_cp(vms[0])

        with _Phase(backend, "env stop"):
            time.sleep(1.2)  # the pool's minimum stop interval
            self.ok("env", "stop", "deb", timeout_ms=150000)
            for vm in self.vms():
                self.assertEqual(vm["state"], "stopped")
                self.assertFalse(vm["ready"], "ready kept across stop")

        if backend == "nft":
            with _Phase(backend, "never-ready VM times out"):
                self.check_never_ready()

        with _Phase(backend, "env start -> ready again"):
            time.sleep(1.2)
            self.ok("env", "start", "deb", timeout_ms=60000)
            after = self.wait_ready("both VMs ready after start")
        for a, b in zip(sorted(after, key=lambda v: v["vm_id"]),
                        sorted(vms, key=lambda v: v["vm_id"])):
            for k in ("ip", "mac", "ports"):
                self.assertEqual(a[k], b[k], k)

        with _Phase(backend, "key after restart, first boot once"):
            for vm in vms:
                vid = vm["vm_id"]
                boots = self.ssh_until(vid, "cat", "/var/tmp/tt-boots").split()
                self.assertEqual(boots, ["boot", "boot"], "bootcmd did not run once per boot")
                first = self.env_ssh(vid, "cat", "/var/tmp/tt-first-boot")
                self.assertEqual(first.returncode, 0, first.stderr)
                self.assertEqual(first.stdout.split(), ["ran"],
                                 "first boot ran again after stop/start")
                iid = self.env_ssh(vid, "cat", "/var/lib/cloud/data/instance-id")
                self.assertEqual(iid.stdout.strip(), iids[vid], "instance-id changed")
                self.assertEqual(self.env_ssh(vid, "cat", "/var/tmp/tt-user-data").stdout,
                                 "hello-from-user-data\n")

        with _Phase(backend, "env delete"):
            pids = [(r["pid"], r["start_time"]) for r in self.pool.worker_vms("h1").values()]
            self.ok("env", "delete", "deb")
            harness.wait_for("the QEMU processes gone", lambda: not any(
                harness.proc_alive(p, s) for p, s in pids), timeout=90, interval=0.5)

        if backend == "user":
            with _Phase(backend, "same 2 QEMUs by hand -> banners"):
                self.measure_by_hand(created_s)

    # ---- checks ----

    def check_login(self, vms):
        for vm in vms:
            vid = vm["vm_id"]
            port = [p["public"] for p in vm["ports"] if p["guest"] == 22][0]
            self.assertEqual(self.ssh_until(vid, "cat", "/var/tmp/tt-user-data"),
                             "hello-from-user-data\n")
            self.assertEqual(self.env_ssh(vid, "hostname").stdout.strip(), "deb-%d" % vid)
            who = self.env_ssh(vid, "id", "-un").stdout.strip()
            self.assertEqual(who, "debian")
            self.assertEqual(self.env_ssh(vid, "sudo", "-n", "true").returncode, 0)
            # the printed command is the one that ran: the public address and port
            p = self.env_ssh(vid, "uname", "-r", extra=["--print"])
            self.assertEqual(p.returncode, 0, p.stderr)
            argv = p.stdout.split()
            addr = HOST_IP if self.backend == "nft" else "127.0.0.1"
            self.assertEqual(argv[:3], ["ssh", "-p", str(port)])
            self.assertEqual(argv[argv.index("-i") + 1], self.key)
            self.assertIn("debian@" + addr, argv)
            self.assertEqual(argv[-3:], ["--", "uname", "-r"])
            # a key the env was not given is refused
            bad = self.env_ssh(vid, "true", key=self.other_key, timeout=60)
            self.assertNotEqual(bad.returncode, 0, "a key the VM was not given logged in")
            self.assertIn("Permission denied", bad.stderr)

    def check_exec_cp(self, vm):
        vid = vm["vm_id"]
        with self.subTest("env exec"):
            if self.exec_missing:
                self.skipTest("ttctl has no env exec yet (%s): exec checks not run"
                              % self.exec_missing)
            via_ssh = self.env_ssh(vid, "uname", "-r").stdout.strip()
            self.assertRegex(via_ssh, UNAME_RE)
            r = self.ctl("env", "exec", "deb", vid, "--timeout", 60, "--", "uname", "-r")
            self.assertEqual(r.rc, 0, repr(r))
            self.assertEqual(r.out.strip(), via_ssh)
            # exit codes outside ttctl's own (1, 2, 3), with both streams
            r = self.ctl("env", "exec", "deb", vid, "--timeout", 60, "--", "/bin/sh", "-c",
                         "echo to-out; echo to-err >&2; exit 42")
            self.assertEqual(r.rc, 42, repr(r))
            self.assertEqual(r.out, "to-out\n", repr(r))
            self.assertIn("to-err", r.err, repr(r))
            r = self.ctl("env", "exec", "deb", vid, "--", "false")
            self.assertEqual(r.rc, 1, repr(r))
            # over its timeout: ended in the guest (kill -KILL through the agent),
            # exit 124, and nothing of it is left running there
            r = self.ctl("env", "exec", "deb", vid, "--timeout", 3, "--", "/bin/sh", "-c",
                         "echo started; exec sleep 600")
            self.assertEqual(r.rc, 124, repr(r))
            self.assertIn("killed", r.err, repr(r))
            left = self.env_ssh(vid, "pgrep", "-x", "sleep")
            self.assertNotEqual(left.returncode, 0, "sleep still runs in the guest: %r" % left)
            # a background child and a grandchild hold the output pipes (the
            # agent reports the exit only once they close): the command's
            # whole process group is killed, and what it wrote comes back
            r = self.ctl("env", "exec", "deb", vid, "--timeout", 3, "--", "/bin/sh", "-c",
                         "sh -c 'sleep 611; :' & sleep 612 & echo started; sleep 613")
            self.assertEqual(r.rc, 124, repr(r))
            self.assertIn("killed (kill -KILL of its process group", r.err, repr(r))
            self.assertEqual(r.out, "started\n", repr(r))
            # a follow-up exec: pgrep exits 1 when nothing matched (2 would
            # be a usage error, which must not pass)
            left = self.ctl("env", "exec", "deb", vid, "--timeout", 60, "--", "/bin/sh", "-c",
                            "pgrep -af 'sleep 61[123]'; echo rc=$?")
            self.assertEqual(left.rc, 0, repr(left))
            self.assertEqual(left.out, "rc=1\n", "the tree still runs in the guest: %r" % left)
            times = []
            for _ in range(N_EXEC):
                t0 = time.monotonic()
                r = self.ctl("env", "exec", "deb", vid, "--", "true")
                times.append(time.monotonic() - t0)
                self.assertEqual(r.rc, 0, repr(r))
            _measures.append("%s: ttctl env exec true round trip (a ttctl process each): median "
                             "%.0f ms, min %.0f, max %.0f over %d (load %s)" % (
                                 self.backend, 1000 * statistics.median(times),
                                 1000 * min(times), 1000 * max(times), N_EXEC, _load()))
        with self.subTest("env cp"):
            if self.cp_missing:
                self.skipTest("ttctl has no env cp yet (%s): cp checks not run" % self.cp_missing)
            want = hashlib.sha256(self.data).hexdigest()
            remote = "deb:%d:/var/tmp/random.bin" % vid
            t0 = time.monotonic()
            r = self.ctl("env", "cp", self.data_path, remote, timeout_ms=120000)
            put_s = time.monotonic() - t0
            self.assertEqual(r.rc, 0, repr(r))
            # checked on the guest by another path than the one that wrote it
            got = self.env_ssh(vid, "sha256sum", "/var/tmp/random.bin").stdout.split()
            self.assertEqual(got[:1], [want])
            back = os.path.join(self.tmp, "back-%s.bin" % self.backend)
            self.addCleanup(lambda: os.path.exists(back) and os.unlink(back))
            t0 = time.monotonic()
            r = self.ctl("env", "cp", remote, back, timeout_ms=120000)
            get_s = time.monotonic() - t0
            self.assertEqual(r.rc, 0, repr(r))
            with open(back, "rb") as f:
                self.assertTrue(f.read() == self.data, "the file came back different")
            _measures.append("%s: ttctl env cp 10 MiB: to the VM %.2f MiB/s (%.1f s), from it "
                             "%.2f MiB/s (%.1f s) (load %s)" % (
                                 self.backend, 10 / put_s, put_s, 10 / get_s, get_s, _load()))

    def check_never_ready(self):
        r = self.ctl("env", "create", "never", "--image", "ttguest", "--engine", "qemu",
                     "--cpu", 1, "--mem", 256, "--disk", 1024, "--lifetime", 600,
                     "--ready", "console:^no ttguest line reads so$", "--wait", "ready",
                     "--wait-timeout", 45, timeout_ms=60000)
        self.assertEqual(r.rc, harness.EXIT_STATUS, repr(r))
        self.assertIn("0 of 1 VMs ready", r.err)
        # with the probe's latest reason, not the first step's "not probed
        # yet" (a tcp: probe cannot serve here: the test guest answers on
        # every port of the env, and a probe's port must be the env's)
        self.assertRegex(r.err, r"vm \d+ on h1 not ready \(the console does not match yet\); "
                                r"its console tail:")
        # the guest's own console line, from the worker's console log
        self.assertRegex(r.err, r"ttguest: vm \d+ ip 10\.10\.")
        self.ok("env", "delete", "never")

    # ---- measurements ----

    def _breakdown(self, vms, t_req, t_done):
        """Where the time went, per VM: request -> QEMU exec (its process
        start time), -> ready_at (the worker's probe saw the banner; whole
        seconds), and the last ready_at -> ttctl returned."""
        booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)  # epoch of boot
        rows = self.pool.worker_vms("h1")
        hz = os.sysconf("SC_CLK_TCK")
        parts = []
        self.exec_to_ready = []
        for vm in vms:
            exec_at = rows[vm["vm_id"]]["start_time"] / hz
            self.exec_to_ready.append(vm["ready_at"] - booted - exec_at)
            parts.append("vm %d: request -> QEMU exec %.2f s, exec -> ready_at %.0f s" % (
                vm["vm_id"], exec_at - t_req, vm["ready_at"] - booted - exec_at))
        last = max(vm["ready_at"] for vm in vms) - booted
        self.exec_s = max(rows[vm["vm_id"]]["start_time"] / hz for vm in vms) - t_req
        self.ready_to_ttctl = t_done - last
        return "%s; last ready_at -> ttctl returned %.1f s (ready_at is whole seconds)" % (
            "; ".join(parts), t_done - last)

    @staticmethod
    def _sshd_up(ssh):
        """The guest's own uptime (s) when ssh.service became active, through
        ssh (a callable running a command, retrying until the login works)."""
        out = ssh("systemctl", "show", "ssh.service", "-p", "ActiveEnterTimestampMonotonic",
                  "--value").strip()
        return int(out) / 1e6

    @staticmethod
    def _cloud_init_up(console):
        """The guest's uptime in cloud-init's "finished" console line (bounded wait)."""
        def up():
            try:
                with open(console, errors="replace") as f:
                    m = re.search(r"Cloud-init v\. \S+ finished at .*Up (\d+\.\d+) seconds",
                                  f.read())
            except OSError:
                return None
            return float(m.group(1)) if m else None
        return harness.wait_for("cloud-init's finished line in " + console, up, timeout=240,
                                interval=1.0)

    def _capture(self, vm):
        """What it takes to start this VM's QEMU again by hand: its argv,
        its directory, its base disk and size."""
        row = self.pool.worker_vms("h1")[vm["vm_id"]]
        with open("/proc/%d/cmdline" % row["pid"], "rb") as f:
            argv = [a.decode() for a in f.read().split(b"\0") if a]
        vmdir = os.path.join(self.pool.worker_state("h1"), "vms", str(vm["vm_id"]))
        info = json.loads(_run(["qemu-img", "info", "-U", "--output=json",
                                os.path.join(vmdir, "disk.qcow2")], timeout=30).stdout)
        keep = os.path.join(self.tmp, "capture-%d" % vm["vm_id"])
        os.makedirs(keep)
        shutil.copy(os.path.join(vmdir, "seed.iso"), keep)
        # the image by its real path: the pool's images dir goes with the pool
        image = os.path.join(self.pool.images, IMAGE) + "/"
        argv = [a.replace(vmdir + "/", keep + "/").replace(image, self.image_dir + "/")
                for a in argv]
        return {"argv": argv, "dir": keep, "size": info["virtual-size"],
                "base": os.path.realpath(info["full-backing-filename"])}

    def measure_by_hand(self, fleet_s):
        hands = [_Hand(c["argv"], c["dir"], os.path.join(self.tmp, "hand-%d" % i), c["base"],
                       c["size"], harness.free_port()) for i, c in enumerate(self.capture)]
        self.addCleanup(lambda: [h.kill() for h in hands])
        print("by hand: %s" % " ".join(hands[0].argv), flush=True)
        t0 = time.monotonic()
        for h in hands:
            h.start()
        took = {}
        deadline = t0 + READY_S
        while len(took) < len(hands) and time.monotonic() < deadline:
            for i, h in enumerate(hands):
                if i not in took and h.banner():
                    took[i] = time.monotonic() - h.t0
            time.sleep(0.5)
        both = time.monotonic() - t0
        self.assertEqual(len(took), len(hands), "a hand-started QEMU gave no SSH banner in time")
        hand_up = [self._cloud_init_up(os.path.join(h.dir, "console.log")) for h in hands]
        hand_sshd = [self._sshd_up(lambda *cmd, h=h: h.ssh(self.key, *cmd)) for h in hands]
        for h in hands:
            h.kill()
        # load-independent: host seconds from QEMU exec to "banner seen", minus
        # the guest's own seconds to ssh.service active, is the kernel's start
        # plus how late the banner was noticed (ttfleet: its probe and the
        # worker's tick; by hand: a 0.5 s poll)
        lag_f = [e - u for e, u in zip(self.exec_to_ready, self.fleet_sshd)]
        lag_h = [took[i] - u for i, u in enumerate(hand_sshd)]
        _measures.append(
            "user: QEMU exec -> banner seen minus the guest's uptime at ssh.service active: "
            "ttfleet %s s (ready_at in whole seconds), by hand %s s; so ttfleet's overhead "
            "on request -> ready = request -> QEMU exec %.2f s + detection %+.1f s + ready_at "
            "-> ttctl returned %.1f s = %.1f s" % (
                ", ".join("%.1f" % x for x in lag_f), ", ".join("%.1f" % x for x in lag_h),
                self.exec_s, statistics.mean(lag_f) - statistics.mean(lag_h),
                self.ready_to_ttctl, self.exec_s + statistics.mean(lag_f) -
                statistics.mean(lag_h) + self.ready_to_ttctl))
        _measures.append("user: ssh.service active at guest uptime: ttfleet %s s, by hand %s s" % (
            ", ".join("%.1f" % x for x in self.fleet_sshd), ", ".join("%.1f" % x for x in hand_sshd)))
        _measures.append("user: guest uptime when cloud-init finished (its console line): "
                         "under ttfleet %s s, by hand %s s" % (
                             ", ".join("%.1f" % u for u in self.fleet_up),
                             ", ".join("%.1f" % u for u in hand_up)))
        _measures.append("user: the same 2 QEMU command lines started by hand -> SSH-2.0 banner "
                         "on each forward: %s s; both %.1f s; ttfleet request -> both ready was "
                         "%.1f s: overhead %+.1f s (load %s)" % (
                             ", ".join("%.1f" % took[i] for i in sorted(took)), both, fleet_s,
                             fleet_s - both, _load()))


if __name__ == "__main__":
    unittest.main()
