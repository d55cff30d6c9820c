"""VM confinement of the process engine: with `ttworker --vm-user nobody`
the VM's program runs as that user, with no supplementary groups and
no_new_privs, in a working directory it owns; stop and delete still work."""

import os
import pwd
import sqlite3
import time
import unittest

import harness


def proc_status(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return fields


class VmUser(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to switch users")
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")
        harness.watchdog(100)
        self.pool = harness.Pool(hosts={"h1": {"args": ["--vm-user", "nobody"]}},
                                 min_stop_interval=0)
        # the user must reach the images; the pool dir is private (0700)
        for d in (self.pool.dir, self.pool.images):
            os.chmod(d, 0o755)
        self.pool.start()

    def tearDown(self):
        self.pool.close()
        harness.watchdog(0)

    def vm_pid(self):
        db = sqlite3.connect("file:%s?mode=ro" % os.path.join(
            self.pool.worker_state("h1"), "worker.db"), uri=True)
        try:
            return db.execute("SELECT pid FROM vms").fetchone()[0]
        finally:
            db.close()

    def test_vm_runs_as_the_user(self):
        r = self.pool.ctl("env", "create", "conf", "--image", "sleeper", "--cpu", "1",
                          "--mem", "64", "--disk", "64", tenant="t")
        self.assertEqual(r.rc, 0, repr(r) + self.pool.logs())
        pid = self.vm_pid()
        st = proc_status(pid)
        self.assertEqual(st["Uid"], [str(self.nobody.pw_uid)] * 4)
        self.assertEqual(st["Gid"], [str(self.nobody.pw_gid)] * 4)
        self.assertEqual(st.get("Groups", []), [])
        self.assertEqual(st["NoNewPrivs"], ["1"])
        # its working directory as the VM sees it (its disk image is mounted
        # there in its own mount namespace)
        self.assertTrue(os.readlink("/proc/%d/cwd" % pid).endswith("/disk"))
        self.assertEqual(os.stat("/proc/%d/cwd" % pid).st_uid, self.nobody.pw_uid)
        # it is still ours to stop and delete
        r = self.pool.ctl("env", "stop", "conf", tenant="t")
        self.assertEqual(r.rc, 0, repr(r))
        deadline = time.monotonic() + 10
        while os.path.exists("/proc/%d" % pid) and time.monotonic() < deadline:
            if proc_status(pid).get("State", ["?"])[0] == "Z":
                break
            time.sleep(0.05)
        r = self.pool.ctl("env", "delete", "conf", tenant="t")
        self.assertEqual(r.rc, 0, repr(r))


if __name__ == "__main__":
    unittest.main()
