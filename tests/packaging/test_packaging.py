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


class Deb(unittest.TestCase):
    def test_deb_installs_and_runs(self):
        for tool in ("cpack", "dpkg-deb"):
            if not shutil.which(tool):
                self.skipTest("no " + tool)
        out = tempfile.mkdtemp(prefix="ttfleet-deb-")
        self.addCleanup(shutil.rmtree, out, True)
        p = subprocess.run(["cpack", "-G", "DEB", "-B", out, "--config",
                            os.path.join(BUILD, "CPackConfig.cmake")],
                           capture_output=True, text=True, timeout=500, cwd=BUILD)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        debs = glob.glob(os.path.join(out, "*.deb"))
        self.assertEqual(len(debs), 1, os.listdir(out))
        info = subprocess.run(["dpkg-deb", "--info", debs[0]], capture_output=True, text=True)
        self.assertIn("Package: ttfleet", info.stdout)
        self.assertIn("conffiles", info.stdout)
        root = os.path.join(out, "root")
        subprocess.run(["dpkg", "-x", debs[0], root], check=True, timeout=120)
        for rel in ("usr/lib/systemd/system/ttgw.service", "usr/lib/systemd/system/ttbroker.service",
                    "usr/lib/systemd/system/ttworker.service", "usr/lib/sysusers.d/ttfleet.conf",
                    "etc/ttfleet/ttgw.env", "etc/ttfleet/tokens", "usr/include/ttclient.h",
                    "usr/share/man/man8/ttgw.8", "usr/share/man/man1/ttctl.1",
                    "usr/lib/python3/dist-packages/ttfleet/ttfleet_pb2.py"):
            self.assertTrue(os.path.exists(os.path.join(root, rel)), rel)
        libdirs = sorted({os.path.dirname(p) for p in glob.glob(
            os.path.join(root, "usr", "lib*", "**", "libttclient.so*"), recursive=True)})
        env = dict(os.environ, LD_LIBRARY_PATH=":".join(libdirs))
        for name in BINARIES:
            exe = os.path.join(root, "usr", "bin", name)
            self.assertTrue(os.access(exe, os.X_OK), exe)
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
        man = subprocess.run(["man", "-l", os.path.join(root, "usr/share/man/man8/ttgw.8")],
                             capture_output=True, text=True, timeout=30,
                             env=dict(os.environ, MANPAGER="cat", MANWIDTH="80"))
        if man.returncode == 0:
            self.assertIn("Bearer", man.stdout)


if __name__ == "__main__":
    unittest.main()
