"""The packages in a booted Debian 12 with systemd as PID 1.

A clean Debian 12 root (debootstrap minbase with systemd, from the Debian
mirror in this machine's apt sources, cached under the build dir in
nspawn-cache/ so later runs only copy it) is booted with systemd-nspawn -b
on the host's network. Inside: apt installs the seven cpack .debs with
their dependencies from the mirror, the three daemons are started with
their shipped units and config (a token for ttgw added), each is active
and stays so, the worker (under its hardened unit) is online at the broker
and the gateway answers /metrics; then apt remove takes the daemons'
packages away and each unit is stopped, with no daemon process left.

Needs root, systemd-nspawn and debootstrap (installed with apt-get when
missing and /var/lib/dpkg/lock is free), and the mirror; skips otherwise.
Bounded: every wait has a limit, and the container is powered off (then
killed) and its root removed, also on failure.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import test_packaging

BUILD = test_packaging.BUILD
CACHE = os.path.join(BUILD, "nspawn-cache")
BASE = os.path.join(CACHE, "bookworm")
UNITS = ("ttbroker", "ttworker", "ttgw")


def _mirror():
    """The first Debian (not security) URI of this machine's apt sources."""
    uris = []
    for path in ["/etc/apt/sources.list"] + sorted(
            os.path.join("/etc/apt/sources.list.d", f)
            for f in (os.listdir("/etc/apt/sources.list.d")
                      if os.path.isdir("/etc/apt/sources.list.d") else [])):
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        uris += re.findall(r"^URIs:\s*(\S+)", text, re.M)
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.M)
    for uri in uris:
        if "security" not in uri and uri.startswith("http"):
            return uri
    return None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dpkg_lock_free():
    p = subprocess.run(["fuser", "/var/lib/dpkg/lock", "/var/lib/dpkg/lock-frontend"],
                       capture_output=True, text=True)
    return p.returncode != 0 and not p.stdout.strip()


def _tools(test):
    if os.geteuid() != 0:
        test.skipTest("needs root")
    missing = [t for t in ("systemd-nspawn", "debootstrap") if not shutil.which(t)]
    if missing:
        if not shutil.which("apt-get") or not _dpkg_lock_free():
            test.skipTest("no %s and apt cannot install it now" % " ".join(missing))
        p = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends",
                            "systemd-container", "debootstrap"], capture_output=True, text=True,
                           timeout=600, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        if p.returncode != 0:
            test.skipTest("apt-get install systemd-container debootstrap: " + p.stderr[-500:])


def _base(test):
    """The cached clean root (made once)."""
    if os.path.exists(os.path.join(BASE, ".complete")):
        return BASE
    mirror = _mirror()
    if not mirror:
        test.skipTest("no Debian mirror in the apt sources")
    shutil.rmtree(BASE, True)
    os.makedirs(CACHE, exist_ok=True)
    p = subprocess.run(["debootstrap", "--variant=minbase",
                        "--include=systemd,systemd-sysv,dbus,ca-certificates",
                        "bookworm", BASE, mirror], capture_output=True, text=True, timeout=1200)
    test.assertEqual(p.returncode, 0, p.stdout[-2000:] + p.stderr[-2000:])
    open(os.path.join(BASE, ".complete"), "w").close()
    return BASE


class Booted(unittest.TestCase):
    def setUp(self):
        _tools(self)
        self.base = _base(self)
        _, self.debs = test_packaging.build_debs(self)
        self.tmp = tempfile.mkdtemp(prefix="ttfleet-booted-", dir=CACHE)
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.root = os.path.join(self.tmp, "root")
        subprocess.run(["cp", "-a", "--reflink=auto", self.base, self.root], check=True,
                       timeout=600)
        os.unlink(os.path.join(self.root, ".complete"))
        os.makedirs(os.path.join(self.root, "debs"))
        for deb in self.debs.values():
            shutil.copy(deb, os.path.join(self.root, "debs"))
        self.log = open(os.path.join(self.tmp, "nspawn.log"), "w+")
        self.addCleanup(self.log.close)
        name = "ttfleet-%d" % os.getpid()
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "-D", self.root, "-M", name, "-b", "--register=no", "--keep-unit",
             "--resolv-conf=copy-host", "--timezone=off", "--console=pipe"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.addCleanup(self._poweroff)
        self.leader = self._leader()

    def _poweroff(self):
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)  # nspawn: an orderly poweroff
            try:
                self.nspawn.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.nspawn.pid, signal.SIGKILL)
                self.nspawn.wait(timeout=30)

    def _nspawn_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    @staticmethod
    def _descendants(pid, depth=3):
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            return []
        out = list(kids)
        if depth > 1:
            for k in kids:
                out += Booted._descendants(k, depth - 1)
        return out

    def _leader(self):
        """The container's PID 1 (systemd), a child of systemd-nspawn."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                self.fail("systemd-nspawn exited %d:\n%s" % (self.nspawn.returncode,
                                                              self._nspawn_log()))
            for k in self._descendants(self.nspawn.pid):
                try:
                    with open("/proc/%d/comm" % k) as f:
                        comm = f.read().strip()
                except OSError:
                    continue
                if comm == "systemd":
                    return k
            time.sleep(0.2)
        self.fail("no systemd in the container after 60 s:\n" + self._nspawn_log())

    def sh(self, cmd, timeout=60, check=True):
        """cmd under bash -c inside the container (its namespaces and root)."""
        p = subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p",
                            "-r", "-w", "/usr/bin/env", "-i",
                            "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
                            "DEBIAN_FRONTEND=noninteractive", "bash", "-c", cmd],
                           capture_output=True, text=True, timeout=timeout)
        if check:
            self.assertEqual(p.returncode, 0, "%s:\n%s%s" % (cmd, p.stdout[-3000:],
                                                           p.stderr[-3000:]))
        return p

    def journal(self):
        return self.sh("systemctl --no-pager status ttbroker ttworker ttgw; journalctl "
                       "--no-pager -u ttbroker -u ttworker -u ttgw | tail -40",
                       check=False).stdout[-4000:]

    def wait_for(self, what, cmd, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            p = self.sh(cmd, check=False)
            if p.returncode == 0:
                return p
            if time.monotonic() > deadline:
                self.fail("%s: not after %d s: %s%s\n%s" % (what, timeout, p.stdout, p.stderr,
                                                           self.journal()))
            time.sleep(0.5)

    def test_install_start_remove(self):
        # booted: systemd runs its units (degraded is fine: a container lacks some)
        self.wait_for("the container's systemd up",
                      "s=$(systemctl is-system-running); [ \"$s\" = running ] || "
                      "[ \"$s\" = degraded ]", timeout=120)
        self.sh("apt-get update -q", timeout=300)
        self.sh("apt-get install -y -q --no-install-recommends /debs/*.deb", timeout=600)
        for unit in UNITS:
            # installed, not started (the operator configures /etc/ttfleet first)
            p = self.sh("systemctl is-active %s.service" % unit, check=False)
            self.assertEqual(p.stdout.strip(), "inactive", unit)
        # the operator's configuration: a token for ttgw, and (the container
        # shares the host's network) ports no one else on this host holds
        self.sh("echo \"$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n') ops admin\" "
                ">> /etc/ttfleet/tokens")
        ports = {p: _free_port() for p in (5555, 5556, 5557, 8080)}
        self.sh("sed -i %s /etc/ttfleet/ttbroker.env /etc/ttfleet/ttworker.env "
                "/etc/ttfleet/ttgw.env" % " ".join("-e 's/:%d\\b/:%d/g'" % kv
                                                   for kv in ports.items()))
        broker = "tcp://127.0.0.1:%d" % ports[5555]
        self.sh("systemctl start ttbroker.service ttworker.service ttgw.service", timeout=120)
        for unit in UNITS:
            self.wait_for(unit + " active", "systemctl is-active %s.service" % unit, timeout=30)
        # the worker works under its hardened unit: it reached the broker
        host = self.sh("hostname").stdout.strip()
        self.wait_for("the worker online", "ttctl --broker %s --tenant admin host list | grep -w online" % broker,
                      timeout=60)
        self.wait_for("the gateway answers",
                      "exec 3<>/dev/tcp/127.0.0.1/%d 2>/dev/null || exit 1; "
                      "printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; "
                      "head -1 <&3 | grep -q ' 200 '" % ports[8080], timeout=30)
        time.sleep(2)
        for unit in UNITS:
            p = self.sh("systemctl is-active %s.service" % unit, check=False)
            self.assertEqual(p.stdout.strip(), "active",
                             unit + self.sh("journalctl -u %s --no-pager | tail -20" % unit,
                                            check=False).stdout)
        # apt remove stops them
        self.sh("apt-get remove -y -q ttfleet-broker ttfleet-worker ttfleet-gw", timeout=300)
        for unit in UNITS:
            p = self.sh("systemctl is-active %s.service" % unit, check=False)
            self.assertIn(p.stdout.strip(), ("inactive", "unknown"), unit)
            p = self.sh("grep -lx %s /proc/[0-9]*/comm" % unit, check=False)
            self.assertEqual(p.stdout.strip(), "", "%s still runs" % unit)
        self.assertTrue(host)


if __name__ == "__main__":
    unittest.main()
