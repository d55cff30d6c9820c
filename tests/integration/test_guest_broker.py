"""Guest bootstrap and readiness through the real daemons (issue 11, the
broker's part), on the process engine: SSH keys and user-data are refused
by an engine that cannot bootstrap and change nothing; the readiness spec
is kept with the env in broker.db (env_guest) across a broker restart and
goes with the env; env show carries ready / ready_at / ready_detail; and
`env create --wait ready` on a VM that never becomes ready exits non-zero
with the VM's console tail."""

import os
import sqlite3
import subprocess
import tempfile
import unittest

import harness
from harness import EXIT_STATUS
from test_env_lifecycle import SMALL, PoolTest


def _guest_rows(pool):
    db = sqlite3.connect(os.path.join(pool.dir, "broker", "broker.db"))
    try:
        return db.execute("SELECT e.name, g.ssh_keys, g.ready, g.group_ready FROM env_guest g "
                          "JOIN envs e ON e.id = g.env_id ORDER BY e.name").fetchall()
    finally:
        db.close()


TALKER = ("#!/bin/sh\ntrap 'exit 0' TERM INT\necho guest-is-up-now\n"
          "while :; do sleep 1 & wait $!; done\n")


class GuestBroker(PoolTest):
    budget = 150

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # an image that prints a line on its console, offered from READY on
        harness._write_image(os.path.join(cls.pool.images, "talker"), TALKER)
        cls.pool.stop_worker("h1")
        cls.pool.hosts["h1"]["args"] = ["--public-address", "127.0.0.2"]
        cls.pool.start_worker("h1")
        cls.pool.wait_online(["h1"])

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ttfleet-guest-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.tmp])
        key = os.path.join(self.tmp, "id")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True,
                       timeout=30)
        with open(key + ".pub") as f:
            self.pub = f.read().strip()

    def test_bootstrap_refused_on_process_engine(self):
        err = self.fails("BAD_REQUEST", "env", "create", "boot", "--image", "sleeper", *SMALL,
                         "--ssh-key-text", self.pub)
        self.assertIn("cannot bootstrap", err)
        err = self.fails("BAD_REQUEST", "env", "create", "boot2", "--image", "sleeper", *SMALL,
                         "--ssh-key-text", self.pub, "--engine", "process")
        names = [e["name"] for e in self.ok("env", "list")["envs"]]
        self.assertNotIn("boot", names)
        self.assertNotIn("boot2", names)

    def test_ready_spec_kept_across_restart(self):
        env = self.create("rdy", "--ready", "tcp:8080", "--image", "sleeper",
                          "--image-ready", "http:80/health", "--port", 8080, "--port", 80)
        for vm in env["vms"]:
            self.assertIn("ready", vm)
            self.assertFalse(vm["ready"])
            self.assertEqual(vm["ready_at"], 0)
        rows = _guest_rows(self.pool)
        self.assertEqual(rows, [("rdy", "", "tcp:8080", "sleeper\thttp:80/health\n")])
        self.assertEqual(self.pool.stop_broker(), 0, self.pool.logs())
        self.pool.start_broker()
        self.pool.wait_online(["h1"])
        self.assertEqual(_guest_rows(self.pool), rows)
        ids = {v["vm_id"] for v in env["vms"]}
        self.ok("env", "delete", "rdy")
        harness.wait_for("rdy's VMs gone from the worker",
                         lambda: not (ids & set(self.pool.worker_vms("h1"))), timeout=30)
        harness.wait_for("env_guest row gone", lambda: _guest_rows(self.pool) == [], timeout=20)

    def test_ready_port_must_be_the_envs(self):
        # a probe reaches only the VM: a port the env does not expose would
        # be the host's own 127.0.0.1 under the user backend
        for ready in (("--ready", "tcp:8081"), ("--ready", "http:631/"),
                      ("--image", "sleeper", "--image-ready", "tcp:25")):
            err = self.fails("BAD_REQUEST", "env", "create", "probe", "--image", "sleeper",
                             *SMALL, "--port", 80, *ready)
            self.assertIn("is not one of the env's ports", err)
        self.assertNotIn("probe", [e["name"] for e in self.ok("env", "list")["envs"]])
        self.create("probe2", "--ready", "ssh")  # 22 always is one

    def test_wait_ready_times_out_with_console(self):
        r = self.ctl("env", "create", "never", "--image", "sleeper", *SMALL, "--lifetime", 600,
                     "--ready", "tcp:9", "--port", 9, "--wait", "ready", "--wait-timeout", 3,
                     json_out=False)
        self.addCleanup(self.ctl, "env", "delete", "never")
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertIn("0 of 1 VMs ready", r.err)
        self.assertIn("not ready", r.err)
        self.assertIn("console tail", r.err)

    def _ready(self, name):
        return [v["ready"] for v in self.show(name)["vms"]]

    def test_ready_none_and_console_probe(self):
        self.create("none1", "--ready", "none")
        harness.wait_for("ready with none", lambda: self._ready("none1") == [True], timeout=20)
        vm = self.show("none1")["vms"][0]
        self.assertGreater(vm["ready_at"], 0)
        # console:REGEX, through --wait ready: returns 0 once the line is there
        r = self.ctl("env", "create", "talk", "--image", "talker", *SMALL, "--lifetime", 600,
                     "--dup", 2, "--ready", "console:guest-is-up", "--wait", "ready",
                     "--wait-timeout", 30)
        self.addCleanup(self.ctl, "env", "delete", "talk")
        self.assertEqual(r.rc, 0, repr(r) + self.pool.logs())
        self.assertEqual([v["ready"] for v in r.data["vms"]], [True, True])
        # ready is dropped on stop and probed again on start
        self.ok("env", "stop", "talk")
        self.assertEqual(self._ready("talk"), [False, False])
        r = self.ctl("env", "start", "talk", "--wait", "ready", "--wait-timeout", 30)
        self.assertEqual(r.rc, 0, repr(r) + self.pool.logs())
        self.assertEqual([v["ready"] for v in r.data["vms"]], [True, True])
        # pause/resume with --wait (running is enough without ready)
        self.ok("env", "pause", "talk")
        r = self.ctl("env", "resume", "talk", "--wait", "--wait-timeout", 30)
        self.assertEqual(r.rc, 0, repr(r))
        r = self.ctl("env", "start", "talk", "--wait=soon")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("--wait takes", r.err)

    def test_ssh_helper_and_public_address(self):
        env = self.create("sshy")
        vm = env["vms"][0]
        port = [p["public"] for p in vm["ports"] if p["guest"] == 22][0]
        harness.wait_for("public address in host show",
                         lambda: self.host().get("public_address") == "127.0.0.2", timeout=20)
        r = self.ctl("env", "ssh", "sshy", vm["vm_id"], "-i", "/k", "--print", "--", "uname",
                     "-r", json_out=False)
        self.assertEqual(r.rc, 0, repr(r))
        argv = r.out.split()
        self.assertEqual(argv[:3], ["ssh", "-p", str(port)])
        self.assertIn("root@127.0.0.2", argv)
        self.assertEqual(argv[-3:], ["--", "uname", "-r"])
        self.assertEqual(argv[argv.index("-i") + 1], "/k")
        r = self.ctl("env", "ssh", "sshy", 65000, "--print", json_out=False)
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertIn("no VM 65000", r.err)

    def test_wait_takes_only_running_or_ready(self):
        r = self.ctl("env", "create", "w", "--image", "sleeper", *SMALL, "--wait=soon")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("--wait takes", r.err)


if __name__ == "__main__":
    unittest.main()
