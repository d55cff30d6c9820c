"""Images across the pool (issue 12), end to end with real daemons: a
broker with its blob server and three workers whose image caches start
empty.

- a 64 MiB qcow2 with a known pattern and the test guest (kernel + initrd,
  tools/mkguest.sh) are pushed once; an env of the guest spread over the
  three hosts boots under QEMU (each guest's init prints its line on the
  serial console; --net none, as three user-backend hosts on one machine
  would bind the same loopback ports), and an env of nine pattern VMs (hollow engine: the fetch, verify
  and materialize path is the same) spreads three per host: every host
  fetched each image exactly once (its worker logs one DONE with bytes
  moved per blob), and its cached copy hashes to the digest;
- a corrupted cached copy is detected at the next use and fetched again
  (a second DONE with bytes moved on that host only), never used;
- kill -9 of a worker mid-transfer: the next fetch resumes its .part (the
  DONE moved fewer bytes than the blob holds) and the copy is whole;
  kill -9 of the broker mid-transfer: the fetch goes on against the
  restarted blob server and the VM runs; no .part is ever materialized;
- under a small --image-cache-mib an unused image is evicted to make room
  while the image a running VM uses stays; a fetch that cannot fit is
  refused with the reason;
- image rm of an image a VM uses is refused (IMAGE_IN_USE);
- tenant B neither sees nor runs tenant A's private image.

Every wait is bounded; only the daemons this test started are killed.
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import unittest

import harness
import netlib
from harness import ADMIN
from test_images import make_qcow2

DONE = re.compile(r"blob (sha256:[0-9a-f]{64}): done, (\d+) bytes, (\d+) fetched")
HOSTS = ("h1", "h2", "h3")


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class ImagePool(unittest.TestCase):
    def setUp(self):
        netlib.need_qemu()
        harness.watchdog(400)
        self.addCleanup(harness.watchdog, 0)
        guest = netlib.build_guest()
        self.blobs_ep = "tcp://127.0.0.1:%d" % free_port()
        hosts = {h: {"engines": "qemu,hollow", "cpu": 16, "mem": 8192,
                     "args": ["--net", "none", "--stop-timeout-ms", "300"]} for h in HOSTS}
        self.pool = harness.Pool(hosts=hosts, broker_args=["--blobs", self.blobs_ep])
        self.addCleanup(self.pool.close)
        self.pool.start()
        self.dir = os.path.join(self.pool.dir, "push")
        os.makedirs(self.dir)
        self.guest = guest
        self.pattern = os.path.join(self.dir, "pattern.qcow2")
        make_qcow2(self.pattern, 64, 0x5A)

    # ---- helpers ----

    def ctl(self, *args, tenant=ADMIN, **kw):
        return self.pool.ctl(*args, tenant=tenant, timeout_ms=30000, **kw)

    def ok(self, *args, tenant=ADMIN):
        r = self.ctl(*args, tenant=tenant)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def cache(self, host, digest, part=False):
        return os.path.join(self.pool.worker_state(host), "image-cache", "blobs",
                            digest.split(":", 1)[1] + (".part" if part else ""))

    def dones(self, host, digest):
        """(size, moved) of every DONE of digest in host's worker log."""
        with open(os.path.join(self.pool.dir, "worker-%s.log" % host), errors="replace") as f:
            return [(int(m.group(2)), int(m.group(3))) for m in DONE.finditer(f.read())
                    if m.group(1) == digest]

    def fetches(self, host, digest):
        return sum(1 for _, moved in self.dones(host, digest) if moved > 0)

    def blobs(self, image):
        return [b["digest"] for b in image["blobs"]]

    def big_dir(self, name, mib):
        d = os.path.join(self.dir, name)
        os.makedirs(d)
        with open(os.path.join(d, "kernel"), "wb") as f:
            for _ in range(mib):
                f.write(os.urandom(1 << 20))
        return d

    def only(self, host):
        """Drain every other host (undone by the cleanup)."""
        for h in HOSTS:
            if h != host:
                self.ok("host", "drain", h)
                self.addCleanup(self.ctl, "host", "drain", h, "--undo")

    def undrain(self):
        for h in HOSTS:
            self.ctl("host", "drain", h, "--undo")

    # ---- the flow ----

    def test_flow(self):
        netlib.diagnosed(self.pool, self.flow)

    def flow(self):
        for h in HOSTS:
            self.assertEqual(os.listdir(os.path.join(self.pool.worker_state(h), "image-cache",
                                                     "blobs")), [])
        pat = self.ok("image", "push", "pattern", self.pattern)
        gst = self.ok("image", "push", "ttguest", self.guest)
        self.assertEqual(pat["kind"], "qcow2")
        self.assertEqual(gst["kind"], "dir")

        # the guest on every host, booted under QEMU
        env = self.ok("env", "create", "g", "--image", "ttguest", "--dup", 3, "--engine", "qemu",
                      "--cpu", 1, "--mem", 256, "--disk", 1024, "--spread", "--lifetime", 900)
        self.assertEqual(sorted(v["host"] for v in env["vms"]), list(HOSTS))
        for vm in env["vms"]:
            self.assertEqual(vm["image_digest"], gst["digest"])
        # booted: the guest's init writes its line on the serial console
        def booted(vm):
            path = os.path.join(self.pool.worker_state(vm["host"]), "vms", str(vm["vm_id"]),
                                "console.log")
            try:
                with open(path, errors="replace") as f:
                    return ("ttguest: vm %d " % vm["vm_id"]) in f.read()
            except OSError:
                return False
        harness.wait_for("the guests booted", lambda: all(booted(v) for v in env["vms"]),
                         timeout=240, interval=1)
        # nine pattern VMs, three per host: one fetch per host
        env = self.ok("env", "create", "p", "--image", "pattern", "--dup", 9, "--engine",
                      "hollow", "--spread", "--cpu", 1, "--mem", 64, "--disk", 128)
        self.assertEqual(sorted(v["host"] for v in env["vms"]),
                         sorted(list(HOSTS) * 3))
        for h in HOSTS:
            for d in self.blobs(gst) + self.blobs(pat):
                self.assertEqual(self.fetches(h, d), 1, "host %s blob %s: %s" %
                                 (h, d, self.dones(h, d)))
                self.assertEqual(sha256_file(self.cache(h, d)), d)
        # placement now prefers holders; the catalog refuses rm of used images
        r = self.ctl("image", "rm", "ttguest")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("IMAGE_IN_USE", r.err)
        r = self.ctl("image", "rm", "pattern")
        self.assertIn("IMAGE_IN_USE", r.err)

        # a corrupted cached copy on h1: detected at the next use, fetched again
        path = self.cache("h1", pat["digest"])
        with open(path, "r+b") as f:
            f.seek(1 << 20)
            f.write(b"\x00" * 4096)
        self.assertNotEqual(sha256_file(path), pat["digest"])
        self.ok("env", "create", "p2", "--image", "pattern", "--dup", 3, "--engine", "hollow",
                "--spread", "--cpu", 1, "--mem", 64, "--disk", 128)
        self.assertEqual(self.fetches("h1", pat["digest"]), 2, self.dones("h1", pat["digest"]))
        for h in ("h2", "h3"):
            self.assertEqual(self.fetches(h, pat["digest"]), 1)
        self.assertEqual(sha256_file(self.cache("h1", pat["digest"])), pat["digest"])
        img = os.path.join(self.pool.worker_state("h1"), "image-cache", "img",
                           pat["digest"].split(":", 1)[1], "disk.qcow2")
        self.assertEqual(sha256_file(img), pat["digest"])
        self.ok("env", "delete", "p2")

        self.worker_kill()
        self.broker_kill()
        self.eviction(gst, pat)
        self.tenants()

    def worker_kill(self):
        """kill -9 of h2 while it fetches: the next fetch resumes its .part."""
        big = self.big_dir("big", 384)
        img = self.ok("image", "push", "big", big)
        kernel = [b for b in img["blobs"] if b.get("file") == "kernel"][0]
        self.only("h2")
        p = subprocess.Popen([harness.binary("ttctl"), "--broker", self.pool.clients_ep,
                              "--tenant", ADMIN, "--timeout", "30000", "env", "create", "b",
                              "--image", "big", "--engine", "hollow", "--cpu", "1", "--mem", "64",
                              "--disk", "128"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
        self.addCleanup(lambda: p.poll() is None and p.kill())
        part = self.cache("h2", kernel["digest"], part=True)
        harness.wait_for("h2 fetching big", lambda: os.path.exists(part) and
                         os.path.getsize(part) > (32 << 20), timeout=60, interval=0.01)
        self.pool.stop_worker("h2", signal.SIGKILL)
        had = os.path.getsize(part)
        self.assertLess(had, kernel["size"])
        self.assertFalse(os.path.exists(self.cache("h2", kernel["digest"])))
        p.wait(timeout=130)  # the create fails or is re-placed: no host but h2
        self.pool.start_worker("h2")
        self.pool.wait_online(["h2"])
        names = [e["name"] for e in self.ok("env", "list")["envs"]]
        if "b" not in names:
            self.ok("env", "create", "b", "--image", "big", "--engine", "hollow", "--cpu", 1,
                    "--mem", 64, "--disk", 128)
        harness.wait_for("b running", lambda: all(
            v["state"] == "running" for v in self.ok("env", "show", "b")["vms"]), timeout=90)
        done = self.dones("h2", kernel["digest"])
        self.assertEqual(len(done), 1, done)
        self.assertLess(done[0][1], kernel["size"], "the fetch did not resume: %s" % done)
        self.assertEqual(sha256_file(self.cache("h2", kernel["digest"])), kernel["digest"])
        self.assertFalse(os.path.exists(part))
        self.ok("env", "delete", "b")
        self.undrain()

    def broker_kill(self):
        """kill -9 of the broker while h3 fetches: the fetch goes on after
        the broker's restart and the VM runs."""
        big = self.big_dir("big2", 384)
        img = self.ok("image", "push", "big2", big)
        kernel = [b for b in img["blobs"] if b.get("file") == "kernel"][0]
        self.only("h3")
        p = subprocess.Popen([harness.binary("ttctl"), "--broker", self.pool.clients_ep,
                              "--tenant", ADMIN, "--timeout", "30000", "env", "create", "b2",
                              "--image", "big2", "--engine", "hollow", "--cpu", "1", "--mem", "64",
                              "--disk", "128"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL,
                             env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
        self.addCleanup(lambda: p.poll() is None and p.kill())
        part = self.cache("h3", kernel["digest"], part=True)
        harness.wait_for("h3 fetching big2", lambda: os.path.exists(part) and
                         os.path.getsize(part) > (32 << 20), timeout=60, interval=0.01)
        self.pool.stop_broker(signal.SIGKILL)
        self.assertFalse(os.path.exists(self.cache("h3", kernel["digest"])))
        p.kill()
        p.wait(timeout=10)
        self.pool.start_broker()
        self.pool.wait_online(list(HOSTS))
        harness.wait_for("h3 fetched big2", lambda: self.dones("h3", kernel["digest"]),
                         timeout=90)
        names = [e["name"] for e in self.ok("env", "list")["envs"]]
        if "b2" not in names:  # the create had not been committed
            self.ok("env", "create", "b2", "--image", "big2", "--engine", "hollow", "--cpu", 1,
                    "--mem", 64, "--disk", 128)
        harness.wait_for("b2 running", lambda: all(
            v["state"] == "running" for v in self.ok("env", "show", "b2")["vms"]), timeout=90)
        self.assertEqual(sha256_file(self.cache("h3", kernel["digest"])), kernel["digest"])
        self.assertEqual(self.fetches("h3", kernel["digest"]), 1)
        self.ok("env", "delete", "b2")
        self.undrain()

    def eviction(self, gst, pat):
        """h1 restarted with a 90 MiB cache (guest 9 MiB + pattern 64 MiB held): an image no VM uses is evicted
        for a new one, the guest its VM runs stays; too big is refused."""
        self.ok("env", "delete", "p")
        harness.wait_for("p gone", lambda: "p" not in [
            e["name"] for e in self.ok("env", "list")["envs"]], timeout=30)
        self.pool.stop_worker("h1")
        self.pool.hosts["h1"]["args"] = self.pool.hosts["h1"]["args"] + [
            "--image-cache-mib", "90"]
        self.pool.start_worker("h1")
        self.pool.wait_online(["h1"])
        mid = self.ok("image", "push", "mid", self.big_dir("mid", 24))
        self.only("h1")
        self.ok("env", "create", "m", "--image", "mid", "--engine", "hollow", "--cpu", 1,
                "--mem", 64, "--disk", 128)
        for d in self.blobs(gst):  # the running guest's image stays
            self.assertTrue(os.path.exists(self.cache("h1", d)), d)
        self.assertFalse(os.path.exists(self.cache("h1", pat["digest"])),
                         "the unused pattern was not evicted")
        for d in self.blobs(mid):
            self.assertEqual(sha256_file(self.cache("h1", d)), d)
        r = self.ctl("env", "create", "m2", "--image", "big", "--engine", "hollow", "--cpu", 1,
                     "--mem", 64, "--disk", 128)
        self.assertNotEqual(r.rc, 0)
        self.assertIn("image cache", r.err)
        vms = self.ok("env", "show", "g")["vms"]
        self.assertTrue(all(v["state"] == "running" for v in vms), vms)
        self.ok("env", "delete", "m")
        self.undrain()

    def tenants(self):
        sec = self.ok("image", "push", "secret", self.big_dir("secret", 1), "--private",
                      tenant="alice")
        self.assertEqual(sec["owner"], "alice")
        r = self.ctl("image", "show", "secret", tenant="bob")
        self.assertIn("NOT_FOUND", r.err)
        self.assertNotIn("secret", [i["name"] for i in
                                    self.ok("image", "list", tenant="bob")["images"]])
        r = self.ctl("env", "create", "s", "--image", "secret", "--engine", "hollow", "--cpu", 1,
                     "--mem", 64, "--disk", 128, tenant="bob")
        self.assertNotEqual(r.rc, 0)
        env = self.ok("env", "create", "s", "--image", "secret", "--engine", "hollow", "--cpu",
                      1, "--mem", 64, "--disk", 128, tenant="alice")
        self.assertEqual(env["vms"][0]["image_digest"], sec["digest"])


if __name__ == "__main__":
    unittest.main()
