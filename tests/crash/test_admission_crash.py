"""A crash between a change and its audit row cannot separate them.

The broker dies at broker.before_commit (kill -9 semantics: _exit) while a
quota set, an env delete and a queued create are staged. After the restart
neither the changes nor their audit rows exist; the same requests without
the crash point leave both. The audit is read from broker.db directly, next
to the rows it describes.
"""

import os
import sqlite3
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crashlib import CrashPool  # noqa: E402
import harness  # noqa: E402 (crashlib puts tests/integration on the path)

ONE = ["--image", "sleeper", "--engine", "hollow", "--cpu", "1", "--mem", "64", "--disk", "64"]


class AuditCrash(unittest.TestCase):
    def setUp(self):
        harness.watchdog(150)
        self.pool = CrashPool(hosts={"h1": {"cpu": 1}})
        self.pool.start_broker(crash="broker.before_commit")
        self.pool.start_worker("h1")
        self.pool.wait_online(["h1"])

    def tearDown(self):
        self.pool.close()
        harness.watchdog(0)

    def rows(self, sql, *args):
        db = sqlite3.connect(self.pool.broker_db())
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def audit(self, op, target):
        return self.rows("SELECT status FROM audit WHERE op = ? AND target = ?", op, target)

    def test_crash_keeps_change_and_audit_together(self):
        c = self.pool.ctl
        self.assertEqual(c("env", "create", "e1", *ONE, tenant="t1").rc, 0)
        harness.wait_for("e1 running", lambda: c("env", "show", "e1", tenant="t1").data
                         and c("env", "show", "e1", tenant="t1").data.get("state") == "running")
        self.assertTrue(self.audit("env.create", "e1"))
        # each change dies before its commit: no change, no audit row
        for args, tenant in ((["quota", "set", "t1", "--cpu", "7"], harness.ADMIN),
                             (["env", "delete", "e1"], "t1"),
                             (["env", "create", "q1", *ONE, "--queue"], "t1")):
            self.pool.arm()
            c(*args, tenant=tenant, timeout_ms=1000)
            self.pool.wait_dead("broker")
            self.pool.disarm()
            self.pool.start_broker(crash="broker.before_commit")  # armed again next round
            self.pool.wait_online(["h1"])
        self.assertEqual(self.audit("quota.set", "t1"), [])
        self.assertEqual(self.rows("SELECT cpu FROM quotas WHERE tenant = 't1'"), [])
        self.assertEqual(self.audit("env.delete", "e1"), [])
        self.assertEqual(len(self.rows("SELECT id FROM envs WHERE name = 'e1'")), 1)
        self.assertEqual(self.audit("env.create", "q1"), [])
        self.assertEqual(self.rows("SELECT seq FROM admq WHERE env = 'q1'"), [])
        # the same requests now commit: both the change and its row
        self.assertEqual(c("quota", "set", "t1", "--cpu", "7", tenant=harness.ADMIN).rc, 0)
        self.assertEqual(c("env", "create", "q1", *ONE, "--queue", tenant="t1").rc, 0)
        self.assertEqual(self.audit("quota.set", "t1"), [(0,)])
        self.assertEqual(len(self.rows("SELECT seq FROM admq WHERE env = 'q1'")), 1)
        self.assertEqual(self.audit("env.create", "q1"), [(31,)])  # QUEUED


if __name__ == "__main__":
    unittest.main()
