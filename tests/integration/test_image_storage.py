"""A greedy tenant and the blob store (issue 12, broker/ops/blobgc.c): a
tenant's private images and open pushes are bounded in bytes
(--max-tenant-image-mib) and in grants not committed; pool images are not
charged; blobs no image names are deleted after --blob-gc-grace, while
blobs an image still uses (also one shared with a removed image) stay."""
import os
import time
import unittest

import harness

ADMIN = harness.ADMIN
MiB = 1 << 20


class ImageStorage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(150)
        cls.pool = harness.Pool(hosts={"h1": {}},
                                broker_args=["--max-tenant-image-mib", "12",
                                             "--blob-gc-grace", "2"])
        cls.pool.start()
        cls.dir = os.path.join(cls.pool.dir, "push")
        os.makedirs(cls.dir)

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()

    def ctl(self, *args, tenant=ADMIN, **kw):
        return self.pool.ctl(*args, tenant=tenant, timeout_ms=20000, **kw)

    def image_dir(self, name, kernel_mib, initrd_mib, kernel=None):
        d = os.path.join(self.dir, name)
        os.makedirs(d)
        for f, mib in (("kernel", kernel_mib), ("initrd", initrd_mib)):
            with open(os.path.join(d, f), "wb") as out:
                out.write(kernel if f == "kernel" and kernel else os.urandom(mib * MiB))
        return d

    def blobs(self):
        d = os.path.join(self.pool.dir, "broker", "blobs", "sha256")
        return {"sha256:" + n for n in os.listdir(d) if not n.endswith(".part")}

    def names(self, tenant):
        r = self.ctl("image", "list", tenant=tenant)
        self.assertEqual(r.rc, 0, r)
        return {"%s:%s" % (i["name"], i["tag"]) for i in r.data["images"]}

    def test_1_tenant_bytes_bounded(self):
        a1 = self.image_dir("a1", 3, 2)
        a2 = self.image_dir("a2", 3, 2)
        a3 = self.image_dir("a3", 3, 2)
        for name, path in (("a1", a1), ("a2", a2)):
            r = self.ctl("image", "push", name, path, "--private", tenant="alice")
            self.assertEqual(r.rc, 0, r)
        before = self.blobs()
        r = self.ctl("image", "push", "a3", a3, "--private", tenant="alice")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("QUOTA_EXCEEDED", r.err)
        self.assertIn("image storage of tenant 'alice'", r.err)
        self.assertIn("limit 12 MiB", r.err)
        self.assertNotIn("a3:latest", self.names("alice"))
        self.assertEqual(self.blobs(), before)  # nothing was sent
        # another tenant has its own share; an admin's pool image is not charged
        r = self.ctl("image", "push", "b1", a3, "--private", tenant="bob")
        self.assertEqual(r.rc, 0, r)
        big = self.image_dir("pool1", 10, 5)
        r = self.ctl("image", "push", "pool1", big)
        self.assertEqual(r.rc, 0, r)
        # space comes back when alice removes an image
        self.assertEqual(self.ctl("image", "rm", "a1", tenant="alice").rc, 0)
        r = self.ctl("image", "push", "a3", a3, "--private", tenant="alice")
        self.assertEqual(r.rc, 0, r)

    def test_2_open_grants_bounded(self):
        """Pushes granted and never committed cannot pile up: after 64 open
        blob grants the tenant is refused until it commits or they expire."""
        pb = harness.pb2()
        c = self.pool.client(tenant="mallory")
        try:
            def push(i):
                req = pb.Request()
                p = req.image_push
                digest = "sha256:%064x" % (i + 1)
                p.ref, p.kind, p.digest, p.size = "junk%d" % i, "qcow2", digest, 1024
                p.blobs.add(digest=digest, size=1024, file="")
                return c.call("tt.env", req)
            for i in range(64):
                rep = push(i)
                self.assertEqual(rep.status, pb.OK, (i, rep))
            rep = push(64)
            self.assertEqual(rep.status, pb.QUOTA_EXCEEDED, rep)
            self.assertIn("granted and not committed", rep.message)
            # the same blob asked again is one grant, not a new one
            self.assertEqual(push(3).status, pb.OK)
        finally:
            c.close()
        # another tenant is not affected
        d = self.image_dir("carol1", 1, 1)
        self.assertEqual(self.ctl("image", "push", "c1", d, "--private", tenant="carol").rc, 0)

    def test_3_collection(self):
        kernel = os.urandom(2 * MiB)
        keep = self.image_dir("keep", 2, 1, kernel=kernel)
        gone = self.image_dir("gone", 2, 1, kernel=kernel)  # shares the kernel blob
        r = self.ctl("image", "push", "keep", keep)
        self.assertEqual(r.rc, 0, r)
        kept = {b["digest"] for b in r.data["blobs"]}
        r = self.ctl("image", "push", "gone", gone)
        self.assertEqual(r.rc, 0, r)
        gone_blobs = {b["digest"] for b in r.data["blobs"]}
        self.assertTrue(gone_blobs <= self.blobs())
        self.assertEqual(self.ctl("image", "rm", "gone").rc, 0)
        only_gone = gone_blobs - kept
        self.assertEqual(len(only_gone), 2)  # its manifest and initrd; the kernel is shared
        harness.wait_for("the removed image's own blobs collected",
                         lambda: not (only_gone & self.blobs()), timeout=30)
        self.assertTrue(kept <= self.blobs())  # in use by an image: never collected
        time.sleep(3)  # past another grace and round
        self.assertTrue(kept <= self.blobs())
        r = self.ctl("image", "show", "keep")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("garbage collection deleted", self.pool.logs())


    def test_9_disk_reserve(self):
        """The broker keeps --blob-reserve-mib free on its state filesystem
        for broker.db: a push that would go under it is refused cleanly
        (NO_CAPACITY, nothing granted or registered) and the broker serves
        on; with room again the same push goes through."""
        d = self.image_dir("res1", 1, 1)
        vfs = os.statvfs(self.pool.dir)
        free_mib = vfs.f_bavail * vfs.f_frsize // MiB
        args = list(self.pool.broker_args)
        self.pool.stop_broker()
        self.pool.broker_args = args + ["--blob-reserve-mib", str(free_mib + 4096)]
        try:
            self.pool.start_broker()
            before = self.blobs()
            r = self.ctl("image", "push", "res1", d, "--private", tenant="dave")
            self.assertNotEqual(r.rc, 0)
            self.assertIn("NO_CAPACITY", r.err)
            self.assertIn("keeps %d MiB for its database" % (free_mib + 4096), r.err)
            self.assertNotIn("res1:latest", self.names("dave"))
            self.assertEqual(self.blobs(), before)
            parts = os.path.join(self.pool.dir, "broker", "blobs", "sha256")
            self.assertEqual([n for n in os.listdir(parts) if n.endswith(".part")], [])
        finally:
            self.pool.stop_broker()
            self.pool.broker_args = args
            self.pool.start_broker()
        r = self.ctl("image", "push", "res1", d, "--private", tenant="dave")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("res1:latest", self.names("dave"))


if __name__ == "__main__":
    unittest.main()
