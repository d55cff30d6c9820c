"""The image catalog (issue 12) against a real broker, its blob server and
a real worker: push (qcow2 and kernel+initrd directory), list/show, pool
versus private images across tenants, image rm, bad input with nothing
half-registered, an interrupted push that resumes, the catalog across a
broker restart.

Not covered yet (docs/IMAGES.md, "Status"): VMs of catalog images (the
worker's fetch), placement by digest, image pull.
"""
import hashlib
import os
import shutil
import signal
import subprocess
import time
import unittest

import harness

ADMIN = harness.ADMIN


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def make_qcow2(path, mib, pattern):
    """A qcow2 of mib MiB whose every cluster holds the byte pattern."""
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "%dM" % mib], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q -P %d 0 %dM" % (pattern, mib), path],
                   check=True, stdout=subprocess.DEVNULL)


class Images(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(170)
        cls.pool = harness.Pool(hosts={"h1": {"args": ["--public-address", "127.0.0.1"]}},
                                broker_args=["--max-image-mib", "80"])
        cls.pool.start()
        cls.dir = os.path.join(cls.pool.dir, "push")
        os.makedirs(cls.dir)
        cls.qcow2 = os.path.join(cls.dir, "pattern.qcow2")
        make_qcow2(cls.qcow2, 64, 0xA5)
        cls.guest = os.path.join(cls.dir, "guest")
        os.makedirs(cls.guest)
        for name, size in (("kernel", 3 << 20), ("initrd", 2 << 20)):
            with open(os.path.join(cls.guest, name), "wb") as f:
                f.write(os.urandom(size))

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()

    def ctl(self, *args, tenant=ADMIN, **kw):
        return self.pool.ctl(*args, tenant=tenant, timeout_ms=20000, **kw)

    def names(self, tenant):
        r = self.ctl("image", "list", tenant=tenant)
        self.assertEqual(r.rc, 0, r)
        return {"%s:%s" % (i["name"], i["tag"]): i for i in r.data["images"]}

    def blob_path(self, digest):
        return os.path.join(self.pool.dir, "broker", "blobs", "sha256", digest.split(":", 1)[1])

    def test_1_push_qcow2_and_dir(self):
        r = self.ctl("image", "push", "pattern:v1", self.qcow2)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["kind"], "qcow2")
        self.assertEqual(r.data["digest"], sha256_file(self.qcow2))
        self.assertEqual(r.data["size"], os.path.getsize(self.qcow2))
        self.assertTrue(r.data["pool"])
        # the blob server holds the verified copy, byte for byte
        self.assertEqual(sha256_file(self.blob_path(r.data["digest"])), r.data["digest"])

        r = self.ctl("image", "push", "guest", self.guest)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["kind"], "dir")
        files = {b["file"]: b for b in r.data["blobs"]}
        self.assertEqual(set(files), {"manifest", "kernel", "initrd"})
        for name in ("kernel", "initrd"):
            self.assertEqual(files[name]["digest"], sha256_file(os.path.join(self.guest, name)))
            self.assertTrue(os.path.exists(self.blob_path(files[name]["digest"])))
        self.assertEqual(files["manifest"]["digest"], r.data["digest"])

        # a second push of the same content sends nothing new and answers the same image
        r2 = self.ctl("image", "push", "guest:again", self.guest)
        self.assertEqual(r2.rc, 0, r2)
        self.assertEqual(r2.data["digest"], r.data["digest"])

        # the image's defaults are kept and shown
        r3 = self.ctl("image", "push", "guest:defaults", self.guest, "--ready", "tcp:2222",
                      "--user", "debian", "--min-disk", 2048)
        self.assertEqual(r3.rc, 0, r3)
        self.assertEqual(r3.data["defaults"], {"readiness": "tcp:2222", "user": "debian",
                                               "min_disk_mib": 2048})
        r3 = self.ctl("image", "show", "guest:defaults", tenant="alice")
        self.assertEqual(r3.data["defaults"]["readiness"], "tcp:2222", r3)
        for bad, why in ((("--ready", "tcp:0"), "--ready"), (("--user", "a b"), "--user"),
                         (("--min-disk", "-1"), "--min-disk")):
            r3 = self.ctl("image", "push", "guest:bad", self.guest, *bad)
            self.assertNotEqual(r3.rc, 0)
            self.assertIn(why, r3.err)

        r = self.ctl("image", "show", "pattern:v1", tenant="alice")
        self.assertEqual(r.rc, 0, r)
        pinned = "pattern@" + r.data["digest"]
        r = self.ctl("image", "show", pinned, tenant="alice")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["tag"], "v1")
        r = self.ctl("image", "show", "pattern@sha256:" + "0" * 64, tenant="alice")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("NOT_FOUND", r.err)

    def test_2_private_images(self):
        r = self.ctl("image", "push", "secret", self.guest, "--private", tenant="alice")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["owner"], "alice")
        self.assertIn("secret:latest", self.names("alice"))
        self.assertNotIn("secret:latest", self.names("bob"))
        for verb in ("show", "rm"):
            r = self.ctl("image", verb, "secret", tenant="bob")
            self.assertNotEqual(r.rc, 0)
            self.assertIn("NOT_FOUND", r.err)
        self.assertIn("secret:latest", self.names("alice"))
        # a tenant cannot push or remove pool images
        r = self.ctl("image", "push", "mine", self.guest, tenant="bob")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("FORBIDDEN", r.err)
        r = self.ctl("image", "push", "tmp", self.guest)
        self.assertEqual(r.rc, 0, r)
        r = self.ctl("image", "rm", "tmp", tenant="bob")
        self.assertIn("FORBIDDEN", r.err)
        r = self.ctl("image", "list", "--all", tenant="bob")
        self.assertIn("FORBIDDEN", r.err)
        self.assertIn("secret:latest", self.names(ADMIN) if False else
                      {"%s:%s" % (i["name"], i["tag"])
                       for i in self.ctl("image", "list", "--all").data["images"]})
        r = self.ctl("image", "rm", "secret", tenant="alice")
        self.assertEqual(r.rc, 0, r)
        self.assertNotIn("secret:latest", self.names("alice"))

    def test_2b_no_claim_by_digest(self):
        """A tenant that knows another tenant's digests but not the bytes
        cannot register the image: its push lists every blob missing (no
        hint that the content is here) and its commit is INCOMPLETE; a
        tenant that holds the bytes uploads them and registers."""
        d = os.path.join(self.dir, "claim")
        os.makedirs(d)
        for name, size in (("kernel", 1 << 20), ("initrd", 1 << 20)):
            with open(os.path.join(d, name), "wb") as f:
                f.write(os.urandom(size))
        r = self.ctl("image", "push", "claim", d, "--private", tenant="alice")
        self.assertEqual(r.rc, 0, r)
        blobs = [(b["digest"], b["size"], b.get("file", "")) for b in r.data["blobs"]]
        pb = harness.pb2()
        c = self.pool.client(tenant="bob")
        try:
            def send(op):
                req = pb.Request()
                p = getattr(req, op)
                p.ref, p.kind, p.digest, p.size = "stolen", "dir", r.data["digest"], r.data["size"]
                for b in blobs:
                    p.blobs.add(digest=b[0], size=b[1], file=b[2])
                return c.call("tt.env", req)
            rep = send("image_push")
            self.assertEqual(rep.status, pb.OK, rep)
            self.assertEqual(sorted(rep.push_grant.missing), sorted(b[0] for b in blobs))
            rep = send("image_commit")
            self.assertEqual(rep.status, pb.INCOMPLETE, rep)
            self.assertIn("not uploaded by this tenant", rep.message)
        finally:
            c.close()
        self.assertNotIn("stolen:latest", self.names("bob"))
        # a tenant with the bytes uploads them (stored once) and registers
        r = self.ctl("image", "push", "mine", d, "--private", tenant="carol")
        self.assertEqual(r.rc, 0, r)
        self.assertIn("mine:latest", self.names("carol"))
        # alice's own second push of it sends nothing and succeeds
        r = self.ctl("image", "push", "claim2", d, "--private", tenant="alice")
        self.assertEqual(r.rc, 0, r)

    def test_3_bad_input(self):
        before = self.names(ADMIN)
        junk = os.path.join(self.dir, "junk")
        with open(junk, "wb") as f:
            f.write(os.urandom(4096))
        r = self.ctl("image", "push", "junk", junk)
        self.assertNotEqual(r.rc, 0)
        self.assertIn("not an image", r.err)
        r = self.ctl("image", "push", "Bad/Name", self.qcow2)
        self.assertNotEqual(r.rc, 0)
        self.assertIn("invalid image name", r.err)
        big = os.path.join(self.dir, "big.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", big, "1G"], check=True)
        with open(big, "r+b") as f:  # a real qcow2 header, 90 MiB of file
            f.truncate(90 << 20)
        r = self.ctl("image", "push", "big", big)
        self.assertNotEqual(r.rc, 0)
        self.assertIn("TOO_LARGE", r.err)
        self.assertEqual(self.names(ADMIN), before)

        # the broker's own checks, for what ttctl would never send
        pb = harness.pb2()
        c = self.pool.client(tenant=ADMIN)
        try:
            digest = "sha256:" + "ab" * 32

            def push(op, **kw):
                req = pb.Request()
                p = getattr(req, op)
                p.ref = kw.get("ref", "forged")
                p.kind = kw.get("kind", "qcow2")
                p.digest = kw.get("digest", digest)
                p.size = kw.get("size", 100)
                for b in kw.get("blobs", [(digest, 100, "")]):
                    p.blobs.add(digest=b[0], size=b[1], file=b[2])
                return c.call("tt.env", req)

            # commit before the blob is on the blob server: INCOMPLETE, no row
            self.assertEqual(push("image_commit").status, pb.INCOMPLETE)
            for kw in ({"ref": "a/b"}, {"kind": "tar"}, {"digest": "sha256:xyz"},
                       {"size": 99}, {"blobs": []},
                       {"blobs": [("sha256:" + "cd" * 32, 100, "")]},
                       {"kind": "dir", "blobs": [(digest, 100, "kernel")]},
                       {"ref": "x@sha256:" + "ab" * 32}):
                rep = push("image_push", **kw)
                self.assertEqual(rep.status, pb.BAD_REQUEST, (kw, rep))
                self.assertTrue(rep.message)
            # defaults the broker checks itself (ttctl checks them too)
            for field, value, why in (("readiness", "bogus", "invalid default readiness"),
                                      ("readiness", "x" * 300, "too long"),
                                      ("user", "a b", "invalid default user"),
                                      ("min_disk_mib", 1 << 31, "too large")):
                for op in ("image_push", "image_commit"):
                    req = pb.Request()
                    p = getattr(req, op)
                    p.ref, p.kind, p.digest, p.size = "forged", "qcow2", digest, 100
                    p.blobs.add(digest=digest, size=100, file="")
                    setattr(p.defaults, field, value)
                    rep = c.call("tt.env", req)
                    self.assertEqual(rep.status, pb.BAD_REQUEST, (field, op, rep))
                    self.assertIn(why, rep.message)
            # a manifest that is not one: the blob exists (pushed as a qcow2
            # image's blob), but a dir image naming it as manifest is refused
            qd = sha256_file(self.qcow2)
            qs = os.path.getsize(self.qcow2)
            rep = push("image_commit", kind="dir", digest=qd, size=qs + 100,
                       blobs=[(qd, qs, "manifest"), (digest, 100, "kernel")])
            self.assertEqual(rep.status, pb.INCOMPLETE, rep)
        finally:
            c.close()
        self.assertEqual(self.names(ADMIN), before)

    def test_4_interrupted_push_resumes(self):
        other = os.path.join(self.dir, "other.qcow2")
        make_qcow2(other, 64, 0x3C)
        argv = [harness.binary("ttctl"), "--broker", self.pool.clients_ep, "--tenant", ADMIN,
                "image", "push", "other", other]
        env = dict(os.environ, TTFLEET_CONFIG=os.devnull)
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        part = self.blob_path(sha256_file(other)) + ".part"
        # kill -9 the pusher once the upload has begun (or when it ends)
        harness.wait_for("the upload to begin",
                         lambda: os.path.exists(part) or p.poll() is not None, timeout=30,
                         interval=0.005)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        names = self.names(ADMIN)
        if "other:latest" in names:  # it finished before the kill: whole, then
            self.assertEqual(names["other:latest"]["digest"], sha256_file(other))
        else:
            self.assertFalse(os.path.exists(self.blob_path(sha256_file(other))) and
                             os.path.getsize(self.blob_path(sha256_file(other))) !=
                             os.path.getsize(other))
        r = self.ctl("image", "push", "other", other)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["digest"], sha256_file(other))
        self.assertEqual(sha256_file(self.blob_path(r.data["digest"])), r.data["digest"])

    def test_5_rm_in_use_and_restart(self):
        # a VM of the catalog's sleeper:latest (its worker fetches it; the
        # hollow engine runs it) holds its digest: a user of the image (its
        # own bytes: a digest another catalog row keeps may be removed)
        sleeper = os.path.join(self.dir, "sleeper")
        os.makedirs(sleeper)
        with open(os.path.join(sleeper, "kernel"), "wb") as f:
            f.write(os.urandom(1 << 20))
        r = self.ctl("image", "push", "sleeper", sleeper)
        self.assertEqual(r.rc, 0, r)
        digest = r.data["digest"]
        r = self.ctl("env", "create", "e1", "--image", "sleeper", "--engine", "hollow",
                     tenant="carol")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["vms"][0]["image_digest"], digest)
        cache = os.path.join(self.pool.worker_state("h1"), "image-cache", "blobs",
                             digest.split(":", 1)[1])
        self.assertEqual(sha256_file(cache), digest)
        r = self.ctl("image", "rm", "sleeper")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("IMAGE_IN_USE", r.err)
        r = self.ctl("image", "show", "sleeper")
        self.assertEqual(r.data["users"], 1)
        self.assertEqual(self.ctl("env", "delete", "e1", tenant="carol").rc, 0)
        # the catalog survives a broker restart (which hosts hold an image
        # is what they advertise again, not catalog state)
        def catalog():
            return {k: dict(v, hosts=None) for k, v in self.names(ADMIN).items()}
        before = catalog()
        self.pool.stop_broker(signal.SIGKILL)
        self.pool.start_broker()
        self.assertEqual(catalog(), before)
        r = self.ctl("image", "rm", "sleeper")
        self.assertEqual(r.rc, 0, r)
        self.assertNotIn("sleeper:latest", self.names(ADMIN))

    def test_5b_create_by_tag_and_digest(self):
        """env create --image NAME:TAG and NAME@sha256: run exactly that
        catalog image; a tag or digest the catalog lacks is NOT_FOUND; the
        process engine (host-local images) refuses them."""
        self.pool.wait_online(["h1"])  # test_5 restarted the broker
        imgs = {}
        for tag in ("t1", "t2"):
            d = os.path.join(self.dir, "tagged-" + tag)
            os.makedirs(d)
            with open(os.path.join(d, "kernel"), "wb") as f:
                f.write(os.urandom(1 << 20))
            r = self.ctl("image", "push", "tagged:" + tag, d, "--user", "user" + tag)
            self.assertEqual(r.rc, 0, r)
            imgs[tag] = r.data["digest"]
        cases = (("tagged:t1", imgs["t1"]), ("tagged:t2", imgs["t2"]),
                 ("tagged@" + imgs["t1"], imgs["t1"]))
        for i, (ref, digest) in enumerate(cases):
            r = self.ctl("env", "create", "bytag%d" % i, "--image", ref, "--engine", "hollow",
                         tenant="dave")
            self.assertEqual(r.rc, 0, r)
            self.addCleanup(self.ctl, "env", "delete", "bytag%d" % i, tenant="dave")
            self.assertEqual(r.data["vms"][0]["image_digest"], digest, ref)
            # env ssh logs in as the user that image names (--user wins)
            vm = r.data["vms"][0]["vm_id"]
            user = "usert1" if digest == imgs["t1"] else "usert2"
            p = self.ctl("env", "ssh", "bytag%d" % i, vm, "--print", tenant="dave", json_out=False)
            self.assertEqual(p.rc, 0, p)
            self.assertIn(user + "@127.0.0.1", p.out)
            p = self.ctl("env", "ssh", "bytag%d" % i, vm, "--print", "--user", "me",
                         tenant="dave", json_out=False)
            self.assertIn("me@127.0.0.1", p.out)
        for ref in ("tagged:t3", "tagged@sha256:" + "0" * 64, "nosuch:t1"):
            r = self.ctl("env", "create", "bytagx", "--image", ref, "--engine", "hollow",
                         tenant="dave")
            self.assertNotEqual(r.rc, 0)
            self.assertIn("NOT_FOUND", r.err)
            self.assertIn("in the catalog", r.err)
        r = self.ctl("env", "create", "bytagp", "--image", "tagged:t1", "--engine", "process",
                     tenant="dave")
        self.assertIn("BAD_REQUEST", r.err)
        self.assertIn("host-local", r.err)
        r = self.ctl("env", "create", "bytagb", "--image", "tagged@sha256:xyz", tenant="dave")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("is not an image name", r.err)
        names = [e["name"] for e in self.ctl("env", "list", tenant="dave").data["envs"]]
        self.assertEqual(sorted(names), ["bytag0", "bytag1", "bytag2"])

    def test_6_pull_prestages(self):
        self.pool.wait_online(["h1"])
        r = self.ctl("image", "push", "pre", self.qcow2)
        self.assertEqual(r.rc, 0, r)
        digest = r.data["digest"]
        cache = os.path.join(self.pool.worker_state("h1"), "image-cache", "blobs",
                             digest.split(":", 1)[1])
        if os.path.exists(cache):  # an earlier test ran the same bytes: start clean
            self.pool.stop_worker("h1")
            os.unlink(cache)
            self.pool.start_worker("h1")
            self.pool.wait_online(["h1"])
        r = self.ctl("image", "pull", "pre", "--hosts", "all", "--wait-timeout", 60)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["hosts"], ["h1"])
        self.assertEqual(sha256_file(cache), digest)
        r = self.ctl("image", "pull", "pre", "--hosts", "h1")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(r.data["hosts"], ["h1"])
        for bad in (("--hosts", "nosuch"), ()):
            r = self.ctl("image", "pull", "pre", *bad)
            self.assertNotEqual(r.rc, 0, r)
        r = self.ctl("image", "pull", "nosuch", "--hosts", "all")
        self.assertIn("NOT_FOUND", r.err)
        r = self.ctl("image", "pull", "pre", "--hosts", "all", tenant="bob")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("FORBIDDEN", r.err)


if __name__ == "__main__":
    unittest.main()
