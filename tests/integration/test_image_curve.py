"""Catalog images under CURVE (issue 12): the blob server is a CURVE server
with ZAP domain "blobs". A tenant pushes its private image with its own
bound key; a worker fetches it with its worker key because the broker
granted that host the digests of the VM it sent it; nobody else fetches:
not another tenant's client key (clients never fetch), not another host's
worker key (no grant for that host), not a plain peer (no CURVE, no
answer). Tenant B neither sees nor runs tenant A's private image."""

import os
import unittest

import zmq
import zmq.auth

import harness
from test_security import CurvePool

SMALL = ["--cpu", 1, "--mem", 64, "--disk", 128]


class ImageCurve(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(150)
        cls.blobs_ep = "tcp://127.0.0.1:%d" % harness.free_port()
        cls.pool = CurvePool(hosts={"h1": {}, "hA": {}},
                             broker_args=["--blobs", cls.blobs_ep]).start()
        d = os.path.join(cls.pool.dir, "secret")
        os.makedirs(d)
        with open(os.path.join(d, "kernel"), "wb") as f:
            f.write(os.urandom(3 << 20))
        cls.image_dir = d

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        harness.watchdog(0)

    def ok(self, *args, **kw):
        r = self.pool.ctl(*args, timeout_ms=20000, **kw)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def blob_sock(self, key, curve=True):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve:
            pub, sec = zmq.auth.load_certificate(self.pool.key(key) + "_secret")
            server, _ = zmq.auth.load_certificate(self.pool.broker_cert)
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server
        sock.connect(self.blobs_ep)
        self.addCleanup(sock.close)
        return sock

    def stat(self, sock, digest, wait_ms=15000):
        """The answer to STAT (command, rest), or None in wait_ms."""
        sock.send_multipart([b"TTB01", b"STAT", digest.encode()])
        if not sock.poll(wait_ms):
            return None
        frames = sock.recv_multipart()
        return frames[1].decode(), [f.decode(errors="replace") for f in frames[2:]]

    def test_private_image_fetch_is_granted_per_host(self):
        img = self.ok("image", "push", "secret", self.image_dir, "--private", tenant="alice")
        self.assertEqual(img["owner"], "alice")
        digest = img["digest"]
        env = self.ok("env", "create", "s", "--image", "secret", "--engine", "hollow", *SMALL,
                      tenant="alice")
        vm = env["vms"][0]
        self.assertEqual(vm["image_digest"], digest)
        self.assertEqual(vm["state"], "running")
        ran, other = vm["host"], ("hA" if vm["host"] == "h1" else "h1")
        cached = os.path.join(self.pool.worker_state(ran), "image-cache", "blobs",
                              digest.split(":", 1)[1])
        self.assertTrue(os.path.exists(cached))
        # the host that runs it may fetch it; the other host may not
        self.assertEqual(self.stat(self.blob_sock(ran), digest)[0], "SIZE")
        ans = self.stat(self.blob_sock(other), digest)
        self.assertEqual(ans[0], "ERROR", ans)
        self.assertEqual(ans[1][1], "FORBIDDEN", ans)
        # no client key fetches, not even the owner's
        for who in ("bob", "alice"):
            ans = self.stat(self.blob_sock(who), digest)
            self.assertEqual(ans[0], "ERROR", ans)
            self.assertEqual(ans[1][1], "FORBIDDEN", ans)
        # a plain peer gets nothing at all
        self.assertIsNone(self.stat(self.blob_sock("bob", curve=False), digest, 3000))
        # bob neither sees nor runs alice's private image
        r = self.pool.ctl("image", "show", "secret", tenant="bob", timeout_ms=20000)
        self.assertIn("NOT_FOUND", r.err)
        r = self.pool.ctl("env", "create", "s", "--image", "secret", "--engine", "hollow",
                          *SMALL, tenant="bob", timeout_ms=20000)
        self.assertNotEqual(r.rc, 0)
        self.ok("env", "delete", "s", tenant="alice")


if __name__ == "__main__":
    unittest.main()
