"""Services and packages.

Units: `systemd-analyze verify` on packaging/systemd/*.service. The units
name /usr/bin/tt*, which a build machine need not have, so each is checked
as a copy whose ExecStart points at the build tree's binary (everything
else unchanged).

Deb: `cpack -G DEB` in the build tree, the package unpacked into a clean
temporary root with dpkg -x, and every binary's --help run from there (the
shared libttclient from the root's lib dir); the Python package imports
from the root's dist-packages; units, config files and man pages are where
they belong; dpkg-deb --info shows the conffiles.
"""

import atexit
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

SOURCE = os.environ.get("TTFLEET_SOURCE") or os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("TTFLEET_BUILD") or os.path.join(SOURCE, "build")
BINARIES = {"ttbroker": "broker/ttbroker", "ttworker": "worker/ttworker", "ttgw": "gw/ttgw",
            "ttctl": "tools/ttctl"}


class Units(unittest.TestCase):
    def test_verify(self):
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze")
        tmp = tempfile.mkdtemp(prefix="ttfleet-units-")
        self.addCleanup(shutil.rmtree, tmp, True)
        for unit in ("ttbroker", "ttworker", "ttgw"):
            with open(os.path.join(SOURCE, "packaging", "systemd", unit + ".service")) as f:
                text = f.read()
            self.assertIn("NoNewPrivileges=yes", text)
            self.assertIn("ProtectSystem=strict", text)
            self.assertIn("PrivateTmp=yes", text)
            text = text.replace("/usr/bin/" + unit, os.path.join(BUILD, BINARIES[unit]))
            path = os.path.join(tmp, unit + ".service")
            with open(path, "w") as f:
                f.write(text)
            # --man=no: the Documentation= man pages are installed by the package,
            # not on the build machine
            p = subprocess.run(["systemd-analyze", "verify", "--man=no", path],
                               capture_output=True, text=True, timeout=60)
            ours = [l for l in (p.stdout + p.stderr).splitlines() if unit + ".service" in l]
            self.assertEqual(p.returncode, 0, "%s:\n%s" % (unit, p.stdout + p.stderr))
            self.assertEqual(ours, [], "%s:\n%s" % (unit, "\n".join(ours)))

    def test_worker_exposure(self):
        """systemd-analyze security rates ttworker at most 4.1 (it runs as
        root with the capabilities its unit lists and explains; libzmq's
        scheduling calls, which it cannot run without, cost 0.2)."""
        if not shutil.which("systemd-analyze"):
            self.skipTest("no systemd-analyze")
        for unit, limit in (("ttworker", 4.1), ("ttbroker", 2.0), ("ttgw", 2.0)):
            p = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager",
                                os.path.join(SOURCE, "packaging", "systemd", unit + ".service")],
                               capture_output=True, text=True, timeout=60)
            m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", p.stdout + p.stderr)
            self.assertIsNotNone(m, p.stdout + p.stderr)
            self.assertLessEqual(float(m.group(1)), limit, "%s: %s" % (unit, m.group(0)))


PACKAGES = {
    "ttfleet-broker": ["usr/bin/ttbroker", "usr/lib/systemd/system/ttbroker.service",
                       "usr/lib/sysusers.d/ttbroker.conf", "etc/ttfleet/ttbroker.env",
                       "usr/share/man/man8/ttbroker.8.gz"],
    "ttfleet-worker": ["usr/bin/ttworker", "usr/lib/systemd/system/ttworker.service",
                       "etc/ttfleet/ttworker.env", "usr/share/man/man8/ttworker.8.gz"],
    "ttfleet-gw": ["usr/bin/ttgw", "usr/lib/systemd/system/ttgw.service",
                   "usr/lib/sysusers.d/ttgw.conf", "etc/ttfleet/ttgw.env", "etc/ttfleet/tokens",
                   "usr/share/man/man8/ttgw.8.gz", "usr/share/ttfleet/grafana/ttfleet.json",
                   "usr/share/ttfleet/prometheus/ttfleet.rules.yml"],
    "ttfleet-cli": ["usr/bin/ttctl", "usr/bin/ttcheck", "usr/share/man/man1/ttctl.1.gz"],
    "libttclient0": ["usr/lib*/libttclient.so.0"],
    "libttclient-dev": ["usr/include/ttclient.h", "usr/lib*/libttclient.so",
                        "usr/lib*/libttclient.a", "usr/lib*/pkgconfig/ttclient.pc"],
    "python3-ttfleet": ["usr/lib/python3/dist-packages/ttfleet/__init__.py",
                        "usr/lib/python3/dist-packages/ttfleet/ttfleet_pb2.py"],
}
DAEMONS = {"ttfleet-broker": "ttbroker.service", "ttfleet-worker": "ttworker.service",
           "ttfleet-gw": "ttgw.service"}


_DEBS = {}


def build_debs(test):
    """cpack -G DEB into a temporary directory, once per run: {package name:
    path}. The directory is removed when the interpreter exits."""
    if _DEBS:
        return _DEBS["out"], _DEBS["debs"]
    for tool in ("cpack", "dpkg-deb"):
        if not shutil.which(tool):
            test.skipTest("no " + tool)
    out = tempfile.mkdtemp(prefix="ttfleet-deb-")
    atexit.register(shutil.rmtree, out, True)
    p = subprocess.run(["cpack", "-G", "DEB", "-B", out, "--config",
                        os.path.join(BUILD, "CPackConfig.cmake")],
                       capture_output=True, text=True, timeout=500, cwd=BUILD)
    test.assertEqual(p.returncode, 0, p.stdout + p.stderr)
    debs = {}
    for deb in glob.glob(os.path.join(out, "*.deb")):
        name = subprocess.run(["dpkg-deb", "-f", deb, "Package"], capture_output=True,
                              text=True, check=True).stdout.strip()
        debs[name] = deb
    test.assertEqual(sorted(debs), sorted(PACKAGES))
    _DEBS.update(out=out, debs=debs)
    return out, debs


class Deb(unittest.TestCase):
    def test_debs_install_and_run(self):
        out, debs = build_debs(self)
        root = tempfile.mkdtemp(prefix="ttfleet-root-")
        self.addCleanup(shutil.rmtree, root, True)
        for name, deb in debs.items():
            files = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                                   check=True).stdout
            # "perms owner size date time ./path[ -> target]"
            listed = [l.split(None, 5)[5].split(" -> ")[0].lstrip(".")
                      for l in files.splitlines()]
            for pattern in PACKAGES[name]:
                rx = re.compile("^/" + re.escape(pattern).replace(r"\*", "[^/]*") + "$")
                self.assertTrue(any(rx.match(f) for f in listed), "%s lacks %s" % (name, pattern))
            # every package carries its copyright and Debian changelog
            self.assertIn("/usr/share/doc/%s/copyright" % name, listed)
            self.assertIn("/usr/share/doc/%s/changelog.Debian.gz" % name, listed)
            subprocess.run(["dpkg", "-x", deb, root], check=True, timeout=120)
        info = subprocess.run(["dpkg-deb", "--info", debs["ttfleet-gw"]], capture_output=True,
                              text=True).stdout
        self.assertIn("conffiles", info)
        # a worker host pulls in neither the gateway's HTTP library nor Python
        worker_deps = subprocess.run(["dpkg-deb", "-f", debs["ttfleet-worker"], "Depends"],
                                     capture_output=True, text=True).stdout
        self.assertNotIn("libmicrohttpd", worker_deps)
        self.assertNotIn("python", worker_deps)
        self.assertIn("libnftables", worker_deps)
        dev_deps = subprocess.run(["dpkg-deb", "-f", debs["libttclient-dev"], "Depends"],
                                  capture_output=True, text=True).stdout
        self.assertIn("libttclient0 (=", dev_deps)
        libdirs = sorted({os.path.dirname(p) for p in glob.glob(
            os.path.join(root, "usr", "lib*", "**", "libttclient.so*"), recursive=True)})
        env = dict(os.environ, LD_LIBRARY_PATH=":".join(libdirs))
        for name in BINARIES:
            exe = os.path.join(root, "usr", "bin", name)
            self.assertTrue(os.access(exe, os.X_OK), exe)
            # stripped: no debugging sections in what is installed
            sections = subprocess.run(["readelf", "-S", exe], capture_output=True, text=True)
            if sections.returncode == 0:
                self.assertNotIn(".debug_info", sections.stdout, exe)
            args = ["help"] if name == "ttctl" else ["--help"]
            p = subprocess.run([exe] + args, capture_output=True, text=True, env=env, timeout=30)
            self.assertEqual(p.returncode, 0, "%s --help: %s" % (name, p.stdout + p.stderr))
            self.assertRegex(p.stdout + p.stderr, re.compile("usage", re.I))
        p = subprocess.run(["/usr/bin/python3", "-c", "import ttfleet; print(ttfleet.__file__)"],
                           capture_output=True, text=True, timeout=30,
                           env=dict(os.environ, PYTHONPATH=os.path.join(
                               root, "usr", "lib", "python3", "dist-packages")))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(root, p.stdout)
        man = subprocess.run(["man", "-l", os.path.join(root, "usr/share/man/man8/ttgw.8.gz")],
                             capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        if man.returncode == 0:
            self.assertIn("Bearer", man.stdout)

    def test_dependencies_resolve(self):
        """apt resolves every package's dependencies from Debian's archive
        (a simulated install of all seven on this Debian machine)."""
        if not shutil.which("apt-get"):
            self.skipTest("no apt-get")
        _, debs = build_debs(self)
        p = subprocess.run(["apt-get", "install", "--simulate", "--no-install-recommends"] +
                           sorted(debs.values()), capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        for name in debs:
            self.assertRegex(p.stdout, r"Inst %s " % re.escape(name))

    def test_lintian_clean(self):
        if not shutil.which("lintian"):
            self.skipTest("no lintian")
        out, debs = build_debs(self)
        p = subprocess.run(["lintian", "--no-tag-display-limit"] + sorted(debs.values()),
                           capture_output=True, text=True, timeout=600)
        errors = [l for l in p.stdout.splitlines() if l.startswith("E:")]
        self.assertEqual(errors, [], p.stdout + p.stderr)

    def test_maintainer_scripts(self):
        """The daemons' scripts, run as dpkg would with systemd present (a
        /run/systemd/system of their own, in a private mount namespace) and
        stub systemctl, deb-systemd-invoke and deb-systemd-helper that log
        their arguments: remove stops the unit, an upgrade restarts it, a
        first install neither enables nor starts it, purge forgets it."""
        if not shutil.which("unshare") or os.geteuid() != 0:
            self.skipTest("needs root and unshare")
        _, debs = build_debs(self)
        out = tempfile.mkdtemp(prefix="ttfleet-scripts-")
        self.addCleanup(shutil.rmtree, out, True)
        stub = os.path.join(out, "stub")
        os.makedirs(stub)
        log = os.path.join(out, "calls.log")
        for tool in ("systemctl", "deb-systemd-invoke", "deb-systemd-helper",
                     "systemd-sysusers"):
            with open(os.path.join(stub, tool), "w") as f:
                f.write('#!/bin/sh\necho "%s $*" >> %s\n' % (tool, log))
            os.chmod(os.path.join(stub, tool), 0o755)
        for name, unit in DAEMONS.items():
            ctl = os.path.join(out, "ctl-" + name)
            subprocess.run(["dpkg-deb", "-e", debs[name], ctl], check=True)
            for script in ("postinst", "prerm", "postrm"):
                mode = os.stat(os.path.join(ctl, script)).st_mode & 0o777
                self.assertEqual(mode, 0o755, "%s %s" % (name, script))

            def run(script, *args):
                if os.path.exists(log):
                    os.unlink(log)
                cmd = ("mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && "
                       "PATH=%s:$PATH sh %s %s" % (stub, os.path.join(ctl, script),
                                                    " ".join(args)))
                p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", cmd],
                                   capture_output=True, text=True, timeout=60)
                self.assertEqual(p.returncode, 0, "%s %s %s: %s" % (name, script, args, p.stderr))
                return open(log).read() if os.path.exists(log) else ""

            calls = run("postinst", "configure")
            self.assertIn("systemctl --system daemon-reload", calls)
            self.assertNotIn("restart", calls)
            self.assertNotIn("enable", calls)
            self.assertNotIn("start", calls.replace("restart", ""))
            calls = run("postinst", "configure", "0.0.9-1")
            self.assertIn("deb-systemd-invoke try-restart %s" % unit, calls)
            self.assertIn("deb-systemd-invoke stop %s" % unit, run("prerm", "remove"))
            self.assertEqual(run("prerm", "upgrade", "0.2.0-1"), "")
            self.assertIn("systemctl --system daemon-reload", run("postrm", "remove"))
            calls = run("postrm", "purge")
            self.assertIn("deb-systemd-helper purge %s" % unit, calls)


if __name__ == "__main__":
    unittest.main()
