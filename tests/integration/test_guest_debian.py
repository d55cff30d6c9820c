"""A real cloud-init guest, end to end (issue 11), on the worker's own code.

tools/mkimage-debian.sh builds the Debian 12 image (cached in the build
directory); guest_drive (a small C driver over worker/guest/seed.c, the qemu
engine, worker/guest/probe.c and worker/guest/qga.c) saves a generated SSH key and a
user-data script for the VM, starts QEMU (TCG, user network, guest 22 on a
free loopback port) with its NoCloud seed and guest-agent socket, and waits
with the ssh probe. Then the real OpenSSH client logs in with the key and
finds the file user-data wrote; the guest agent runs `uname -r` and a
failing command (exit code kept) and round-trips a 10 MiB random file
byte-exact; after stop/start the key still works and first boot did not run
again (the instance-id is stable). QEMU is stopped by pid on every path.
Exit 77 (skip) only without root, QEMU, mmdebstrap or ssh.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import harness

SRC = os.environ.get("TTFLEET_SOURCE", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("TTFLEET_BUILD", os.path.join(SRC, "build"))
DRIVE = os.environ.get("TTFLEET_GUEST_DRIVE",
                       os.path.join(BUILD, "tests", "integration", "guest_drive"))
BOOT_S = 600  # TCG on a shared 2-core machine
VMID = "7"


def _skip_reason():
    if os.geteuid() != 0:
        return "needs root (mmdebstrap, QEMU)"
    for tool in ("qemu-system-x86_64", "qemu-img", "mmdebstrap", "mke2fs", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            return "%s is not installed" % tool
    return None


def _run(args, timeout=120, check=True):
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s %s" % (args[:3], p.returncode, p.stdout, p.stderr))
    return p


class GuestDebian(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        why = _skip_reason()
        if why:
            print("SKIP:", why)
            sys.exit(77)
        cls.image_dir = os.path.join(BUILD, "images", "debian12")
        t0 = time.monotonic()
        _run([os.path.join(SRC, "tools", "mkimage-debian.sh"), cls.image_dir], timeout=900)
        cls.image_s = time.monotonic() - t0

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tt-guest-")
        self.state = os.path.join(self.tmp, "state")
        self.images = os.path.join(self.tmp, "images")
        os.makedirs(self.state)
        os.makedirs(self.images)
        os.symlink(self.image_dir, os.path.join(self.images, "debian12"))
        self.vmdir = os.path.join(self.state, "vms", VMID)
        self.key = os.path.join(self.tmp, "id_ed25519")
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tt-test", "-f", self.key])
        self.user_data = os.path.join(self.tmp, "user-data")
        with open(self.user_data, "w") as f:
            f.write("#!/bin/sh\n"
                    "echo hello-from-user-data > /var/tmp/tt-user-data\n"
                    "echo ran >> /var/tmp/tt-first-boot\n")
        self.port = harness.free_port()
        self.pid = None
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        self._kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _kill(self):
        if not self.pid:
            try:  # a start that failed after QEMU was spawned
                with open(os.path.join(self.vmdir, "pid")) as f:
                    self.pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
        if self.pid:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for _ in range(50):
                try:
                    os.kill(self.pid, 0)
                    time.sleep(0.1)
                except ProcessLookupError:
                    break
            self.pid = None

    def _start(self):
        t0 = time.monotonic()
        out = _run([DRIVE, "start", self.state, self.images, "debian12", VMID, str(self.port),
                    self.key + ".pub", self.user_data]).stdout.strip().splitlines()[-1].split()
        self.pid, self.start_time = int(out[0]), out[1]
        w = _run([DRIVE, "wait", "ssh", "127.0.0.1", str(self.port),
                  os.path.join(self.vmdir, "qga.sock"), os.path.join(self.vmdir, "console.log"),
                  str(BOOT_S)], timeout=BOOT_S + 30, check=False)
        if w.returncode != 0:
            with open(os.path.join(self.vmdir, "console.log"), "rb") as f:
                tail = f.read()[-3000:].decode(errors="replace")
            self.fail("ssh never became ready: %s\nconsole tail:\n%s" % (w.stdout, tail))
        return time.monotonic() - t0

    def _stop(self):
        _run([DRIVE, "stop", self.state, self.images, "debian12", VMID, str(self.pid),
              self.start_time], timeout=90)
        self.pid = None

    def _ssh(self, *cmd):
        return _run(["ssh", "-i", self.key, "-p", str(self.port), "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                     "-o", "ConnectTimeout=20", "debian@127.0.0.1"] + list(cmd),
                    timeout=120, check=False)

    def _wait(self, spec, secs, port=None):
        return _run([DRIVE, "wait", spec, "127.0.0.1", str(port or self.port),
                     os.path.join(self.vmdir, "qga.sock"), os.path.join(self.vmdir, "console.log"),
                     str(secs)], timeout=secs + 30, check=False)

    def _agent_ready(self):
        w = _run([DRIVE, "wait", "agent", "127.0.0.1", "0", os.path.join(self.vmdir, "qga.sock"),
                  os.path.join(self.vmdir, "console.log"), "120"], timeout=150, check=False)
        self.assertEqual(w.returncode, 0, w.stdout)

    def _exec(self, *argv):
        p = _run([DRIVE, "exec", os.path.join(self.vmdir, "qga.sock"), "60"] + list(argv),
                 timeout=90)
        return json.loads(p.stdout)

    def test_boot_login_exec_copy_restart(self):
        sock = os.path.join(self.vmdir, "qga.sock")
        t_start = time.monotonic()
        boot_s = self._start()
        # ssh may answer before cloud-init wrote the key: retry a bounded time
        deadline = time.monotonic() + 240
        while True:
            r = self._ssh("cat", "/var/tmp/tt-user-data")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(3)
        login_s = time.monotonic() - t_start
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), "hello-from-user-data")
        hn = self._ssh("hostname")
        self.assertEqual(hn.stdout.strip(), "ci-job-" + VMID)

        self._agent_ready()
        # the other probes, on the same guest: cloud-init done (read through
        # the agent), a console regex; one that can never succeed times out
        for spec in ("cloud-init", "console:ci-job-%s login:" % VMID):
            w = self._wait(spec, 120)
            self.assertEqual(w.returncode, 0, spec + ": " + w.stdout)
        w = self._wait("tcp:9", 5, port=harness.free_port())  # nothing listens there
        self.assertEqual(w.returncode, 1)
        self.assertIn("timeout", w.stdout)
        # the default user has sudo; the root filesystem grew to the VM's disk
        self.assertEqual(self._ssh("sudo", "-n", "true").returncode, 0)
        df = self._ssh("df", "-m", "--output=size", "/").stdout.split()
        self.assertGreater(int(df[-1]), 2600, df)
        uname = self._exec("/bin/uname", "-r")
        self.assertEqual(uname["exit"], 0)
        self.assertRegex(uname["stdout"].strip(), r"^\d+\.\d+\.\d+-\d+-amd64$")
        via_ssh = self._ssh("uname", "-r").stdout.strip()
        self.assertEqual(uname["stdout"].strip(), via_ssh)
        bad = self._exec("/bin/sh", "-c", "echo oops >&2; exit 3")
        self.assertEqual(bad["exit"], 3)
        self.assertEqual(bad["stderr"], "oops\n")
        self.assertFalse(bad["err_truncated"])

        data = os.urandom(10 << 20)
        src = os.path.join(self.tmp, "random.bin")
        back = os.path.join(self.tmp, "back.bin")
        with open(src, "wb") as f:
            f.write(data)
        want = hashlib.sha256(data).hexdigest()
        put = _run([DRIVE, "put", sock, src, "/var/tmp/random.bin"], timeout=300).stdout.split()
        self.assertEqual(put[0], want)
        guest_sum = self._exec("/usr/bin/sha256sum", "/var/tmp/random.bin")
        self.assertEqual(guest_sum["stdout"].split()[0], want)
        get = _run([DRIVE, "get", sock, "/var/tmp/random.bin", back], timeout=300).stdout.split()
        self.assertEqual(get[0], want)
        with open(back, "rb") as f:
            self.assertEqual(f.read(), data)
        osinfo = _run([DRIVE, "osinfo", sock]).stdout
        self.assertIn("Debian", osinfo)

        self._stop()
        reboot_s = self._start()
        deadline = time.monotonic() + 240
        while True:
            r = self._ssh("cat", "/var/tmp/tt-first-boot")
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(3)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.split(), ["ran"], "first boot ran again after stop/start")
        self._stop()
        mib = 10.0
        print("\nMEASURE image build/cache check %.1f s; start->ssh banner %.1f s; "
              "start->first login with the key %.1f s; restart->ssh banner %.1f s; "
              "exec round trip (uname -r) %d ms; put %.2f MiB/s; get %.2f MiB/s" % (
                  self.image_s, boot_s, login_s, reboot_s, uname["ms"],
                  mib / (int(put[2]) / 1000.0), mib / (int(get[2]) / 1000.0)), flush=True)


if __name__ == "__main__":
    unittest.main()
