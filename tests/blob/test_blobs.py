"""Blob transfer across processes (issue 12): the real blob server, pusher
and fetcher (tests/blob/ttblobtool.c runs each module in a process of its
own), on free loopback ports, under one temporary directory.

A generated 64 MiB qcow2-looking file with a known pattern is pushed once
and fetched by three fetchers, byte-exact; kill -9 of a fetcher, of the
server and of a pusher mid-transfer: the transfer resumes from the
partial file and a partial file is never visible under a blob's name;
a corrupted cached copy is fetched again; bad inputs get clear errors and
leave nothing registered. Mid-transfer is made reliable with the tools'
bandwidth limit (--rate-kib), and the kill waits for a progress line, not
for a time. Only processes this test started are signalled.
"""

import filecmp
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import free_port  # noqa: E402

TOOL = os.environ.get("TTBLOBTOOL") or os.path.join(
    os.path.dirname(__file__), "..", "..", "build", "tests", "blob", "ttblobtool")
MIB = 1 << 20
SIZE = 64 * MIB


def make_pattern(path, size, seed=0):
    """qcow2 magic, then little-endian 64-bit counters mixed with seed."""
    with open(path, "wb") as f:
        f.write(b"QFI\xfb")
        block = 1 << 16
        done = 4
        i = 0
        while done < size:
            n = min(block, size - done)
            words = (n + 7) // 8
            data = struct.pack("<%dQ" % words,
                               *[(i + k) * 0x9E3779B97F4A7C15 + seed & (2**64 - 1)
                                 for k in range(words)])[:n]
            f.write(data)
            i += words
            done += n


class Proc:
    """A tool process whose stdout lines are read with a bounded wait."""

    def __init__(self, args, log):
        self.log = open(log, "ab")
        self.p = subprocess.Popen([TOOL] + args, stdout=subprocess.PIPE, stderr=self.log)
        self.lines = []
        self._buf = b""

    def wait_line(self, pred, timeout=60):
        end = time.monotonic() + timeout
        for line in self.lines:
            if pred(line):
                return line
        while time.monotonic() < end:
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if not r:
                if self.p.poll() is not None:
                    break
                continue
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                break
            self._buf += chunk
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                line = line.decode()
                self.lines.append(line)
                if pred(line):
                    return line
        return None

    def finish(self, timeout=120):
        self.wait_line(lambda _: False, timeout)
        try:
            return self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(timeout=10)

    def close(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.p.stdout.close()
        self.log.close()


def progress_at_least(n):
    def pred(line):
        parts = line.split()
        return len(parts) == 4 and parts[0] == "progress" and int(parts[2]) >= n
    return pred


class Blobs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="tt-blobs-")
        cls.image = os.path.join(cls.root, "disk.qcow2")
        make_pattern(cls.image, SIZE)
        out = subprocess.run([TOOL, "inspect", cls.image], capture_output=True, text=True,
                             timeout=60, check=True).stdout.split()
        cls.digest = out[1]
        cls.hex = cls.digest[len("sha256:"):]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.root, ignore_errors=True)

    def setUp(self):
        self.dir = tempfile.mkdtemp(dir=self.root)
        self.procs = []
        self.port = free_port()
        self.ep = "tcp://127.0.0.1:%d" % self.port

    def tearDown(self):
        for p in self.procs:
            p.close()
        if any(p.p.returncode not in (0, None, -9) for p in self.procs):
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def tool(self, *args):
        p = Proc(list(args), os.path.join(self.dir, "tools.log"))
        self.procs.append(p)
        return p

    def serve(self, *extra):
        srv = self.tool("serve", self.ep, os.path.join(self.dir, "srv"), *extra)
        self.assertTrue(srv.wait_line(lambda l: l.startswith("listening"), 30),
                        "blob server did not start")
        return srv

    def push(self, path=None, *extra):
        p = self.tool("push", self.ep, path or self.image, *extra)
        self.assertEqual(p.finish(), 0, p.lines)
        return p

    def fetch(self, cache, *extra):
        return self.tool("fetch", self.ep, os.path.join(self.dir, cache), self.digest,
                         "--timeout-ms", "500", *extra)

    def cached(self, cache):
        return os.path.join(self.dir, cache, "blobs", self.hex)

    def srv_blob(self):
        return os.path.join(self.dir, "srv", "sha256", self.hex)

    def test_push_once_three_fetchers(self):
        srv = self.serve()
        self.push()
        self.assertTrue(srv.wait_line(lambda l: l.startswith("complete " + self.digest), 30))
        self.assertTrue(filecmp.cmp(self.srv_blob(), self.image, shallow=False))
        fetchers = [self.fetch("c%d" % i, "--size", str(SIZE), "--times", "20") for i in range(3)]
        for i, f in enumerate(fetchers):
            self.assertEqual(f.finish(), 0, f.lines)
            dones = [l for l in f.lines if l.startswith("done ")]
            # twenty ensures, one transfer of exactly the blob's bytes
            self.assertEqual(dones, ["done %s %d fetched %d" % (self.digest, SIZE, SIZE)])
            img = os.path.join(self.dir, "c%d" % i, "img", self.hex, "disk.qcow2")
            self.assertTrue(filecmp.cmp(img, self.image, shallow=False))
        # a second push moves nothing: the server has it
        p = self.push()
        self.assertEqual(len([l for l in srv.lines if l.startswith("complete")]), 1)
        self.assertTrue(p.lines[-1].startswith("pushed qcow2 " + self.digest))

    def test_fetcher_kill9_resumes(self):
        self.serve()
        self.push()
        f = self.fetch("c", "--rate-kib", "8192")
        self.assertTrue(f.wait_line(progress_at_least(8 * MIB), 60), f.lines)
        f.kill()
        part = self.cached("c") + ".part"
        self.assertFalse(os.path.exists(self.cached("c")), "a partial file became visible")
        have = os.path.getsize(part)
        self.assertTrue(0 < have < SIZE, have)
        f2 = self.fetch("c")
        self.assertEqual(f2.finish(), 0, f2.lines)
        done = [l for l in f2.lines if l.startswith("done ")][0].split()
        self.assertEqual(int(done[4]), SIZE - have, "did not resume from the partial file")
        self.assertTrue(filecmp.cmp(self.cached("c"), self.image, shallow=False))
        self.assertFalse(os.path.exists(part))

    def test_server_kill9_mid_fetch_resumes(self):
        srv = self.serve()
        self.push()
        f = self.fetch("c", "--rate-kib", "8192", "--give-up-ms", "60000")
        self.assertTrue(f.wait_line(progress_at_least(8 * MIB), 60), f.lines)
        srv.kill()
        self.assertFalse(os.path.exists(self.cached("c")))
        time.sleep(1)  # the fetcher meets a dead server for a while
        self.assertFalse(os.path.exists(self.cached("c")), "a partial file became visible")
        self.serve()
        self.assertEqual(f.finish(), 0, f.lines)
        self.assertTrue(filecmp.cmp(self.cached("c"), self.image, shallow=False))
        done = [l for l in f.lines if l.startswith("done ")][0].split()
        self.assertEqual(int(done[4]), SIZE)  # each byte taken once

    def test_server_kill9_mid_push_resumes(self):
        srv = self.serve()
        p = self.tool("push", self.ep, self.image, "--rate-kib", "8192", "--timeout-ms", "500")
        self.assertTrue(p.wait_line(progress_at_least(8 * MIB), 60), p.lines)
        srv.kill()
        self.assertFalse(os.path.exists(self.srv_blob()), "a partial upload became visible")
        time.sleep(1)
        srv2 = self.serve()
        self.assertEqual(p.finish(), 0, p.lines)
        self.assertTrue(srv2.wait_line(lambda l: l.startswith("complete " + self.digest), 30))
        self.assertTrue(filecmp.cmp(self.srv_blob(), self.image, shallow=False))

    def test_client_interrupted_push(self):
        srv = self.serve()
        p = self.tool("push", self.ep, self.image, "--rate-kib", "8192")
        self.assertTrue(p.wait_line(progress_at_least(8 * MIB), 60), p.lines)
        p.kill()
        # nothing registered: no complete blob, no completion event, a fetch finds nothing
        self.assertFalse(os.path.exists(self.srv_blob()))
        f = self.fetch("c")
        self.assertEqual(f.finish(), 1)
        self.assertTrue(any("NOT_FOUND" in l for l in f.lines), f.lines)
        self.assertFalse(any(l.startswith("complete") for l in srv.lines))
        # pushed again: resumes from what the server stored, completes once
        p2 = self.push()
        first = [l for l in p2.lines if l.startswith("progress")][0].split()
        self.assertGreaterEqual(int(first[2]), 8 * MIB, p2.lines)
        self.assertTrue(srv.wait_line(lambda l: l.startswith("complete " + self.digest), 30))
        self.assertTrue(filecmp.cmp(self.srv_blob(), self.image, shallow=False))

    def test_two_pushers_one_blob(self):
        srv = self.serve()
        pushers = [self.tool("push", self.ep, self.image, "--rate-kib", "16384",
                             "--timeout-ms", "500") for _ in range(2)]
        for p in pushers:
            self.assertEqual(p.finish(), 0, p.lines)
        self.assertTrue(srv.wait_line(lambda l: l.startswith("complete " + self.digest), 30))
        self.assertEqual(len([l for l in srv.lines if l.startswith("complete")]), 1)
        self.assertTrue(filecmp.cmp(self.srv_blob(), self.image, shallow=False))

    def test_corrupted_cache_fetched_again(self):
        self.serve()
        self.push()
        f = self.fetch("c")
        self.assertEqual(f.finish(), 0, f.lines)
        with open(self.cached("c"), "r+b") as fh:
            fh.seek(SIZE // 2)
            fh.write(b"\0bitrot\0")
        # the materialized image links the same bytes: never booted as is
        f2 = self.fetch("c")
        self.assertEqual(f2.finish(), 0, f2.lines)
        done = [l for l in f2.lines if l.startswith("done ")][0].split()
        self.assertEqual(int(done[4]), SIZE, "the corrupted copy was not fetched again")
        self.assertTrue(filecmp.cmp(self.cached("c"), self.image, shallow=False))
        img = os.path.join(self.dir, "c", "img", self.hex, "disk.qcow2")
        self.assertTrue(filecmp.cmp(img, self.image, shallow=False))

    def test_bad_inputs(self):
        srv = self.serve("--max-mib", "16")
        notimg = os.path.join(self.dir, "notes.txt")
        with open(notimg, "w") as fh:
            fh.write("hello\n")
        p = self.tool("push", self.ep, notimg)
        self.assertEqual(p.finish(), 1)
        self.assertIn("not an image", p.lines[-1])
        empty = os.path.join(self.dir, "emptydir")
        os.mkdir(empty)
        p = self.tool("push", self.ep, empty)
        self.assertEqual(p.finish(), 1)
        self.assertIn("not an image", p.lines[-1])
        p = self.tool("push", self.ep, self.image)  # 64 MiB over a 16 MiB limit
        self.assertEqual(p.finish(), 1)
        self.assertIn("TOO_LARGE", p.lines[-1])
        small = os.path.join(self.dir, "small.qcow2")
        make_pattern(small, 2 * MIB, seed=7)
        wrong = "sha256:" + "0" * 64
        p = self.tool("push", self.ep, small, "--digest", wrong)
        self.assertEqual(p.finish(), 1)
        self.assertIn("DIGEST_MISMATCH", p.lines[-1])
        p = self.tool("push", self.ep, small, "--digest", "sha256:../../etc/passwd")
        self.assertEqual(p.finish(), 1)
        self.assertIn("invalid digest", p.lines[-1])
        # nothing half-registered: the store holds no blob and no part
        self.assertEqual(os.listdir(os.path.join(self.dir, "srv", "sha256")), [])
        self.assertFalse(any(l.startswith("complete") for l in srv.lines))

    def test_directory_image(self):
        self.serve()
        guest = os.path.join(self.dir, "guest")
        os.mkdir(guest)
        make_pattern(os.path.join(guest, "kernel"), 3 * MIB, seed=1)
        make_pattern(os.path.join(guest, "initrd"), 5 * MIB, seed=2)
        p = self.push(guest)
        kind, digest = p.lines[-1].split()[1:3]
        self.assertEqual(kind, "dir")
        f = self.tool("fetch", self.ep, os.path.join(self.dir, "c"), digest)
        self.assertEqual(f.finish(), 0, f.lines)
        img = os.path.join(self.dir, "c", "img", digest[7:])
        for name in ("kernel", "initrd"):
            self.assertTrue(filecmp.cmp(os.path.join(img, name), os.path.join(guest, name),
                                        shallow=False))


if __name__ == "__main__":
    unittest.main()
