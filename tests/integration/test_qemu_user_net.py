"""End to end with real packets: the qemu engine on the `user` network
backend (QEMU user-mode networking), no namespaces, no root needed.

Each public port is a QEMU host forward on 127.0.0.1; the guest's outbound
try goes to 10.0.2.2, which slirp would map to the host's loopback, where
the test listens (a loopback-only service, like the broker's endpoints).
Checks: the guest answers on its public ports; it cannot reach the
host-local listener, with deny-outgoing off (issue 9 item 1: every VM runs
with restrict=on) and on, while inbound still works;
`env update --port` changes the forwards live over QMP; stop/start keeps
IP, MAC and ports; a worker restart keeps the VM running and reachable;
delete stops QEMU and its forwards.
"""

import os
import socket
import sys
import threading
import time
import unittest

import harness
import netlib

T = "usertest"


class QemuUser(unittest.TestCase):
    def setUp(self):
        netlib.need_qemu()
        harness.watchdog(280)
        self.addCleanup(harness.watchdog, 0)
        guest = netlib.build_guest()
        # the target of the guest's outbound tries, on loopback
        # (outside 40000..59999: the worker binds the VM's public ports there)
        for _ in range(200):
            self.listener = socket.socket()
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", 0))
            if not 40000 <= self.listener.getsockname()[1] <= 59999:
                break
            self.listener.close()
        self.listener.listen(16)
        self.listen_port = self.listener.getsockname()[1]
        self.accepted = 0
        self.addCleanup(self.listener.close)
        threading.Thread(target=self._serve, daemon=True).start()
        self.pool = harness.Pool(hosts={"h1": {
            "engines": "qemu", "cpu": 4, "mem": 4096,
            "args": ["--net", "user", "--stop-timeout-ms", "300"]}})
        self.addCleanup(self.pool.close)
        netlib.install_images(self.pool, guest)
        self.pool.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.listener.accept()
            except OSError:
                return
            self.accepted += 1
            try:
                c.sendall(b"hello-from-host\n")
            except OSError:
                pass
            c.close()

    def ok(self, *args):
        r = self.pool.ctl(*args, tenant=T, timeout_ms=20000)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def vm(self):
        return self.ok("env", "show", "u")["vms"][0]

    def get(self, port, path="/"):
        return netlib.fetch("127.0.0.1", port, path)

    def outbound(self, port):
        return self.get(port, "/cgi-bin/connect?10.0.2.2:%d" % self.listen_port) or ""

    def test_flow(self):
        netlib.diagnosed(self.pool, self.flow)

    def test_public_port_in_use(self):
        """Another program holds the first public port the broker hands out
        (a udp socket with SO_REUSEADDR, which a bind check made with
        SO_REUSEADDR lets by; QEMU's forward cannot bind it and QEMU exits).
        The worker finds out before it answers, says which port, and the
        broker runs the VM on other ports of the same host."""
        probe = socket.socket()
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", 40000))
        except OSError:
            self.skipTest("127.0.0.1:40000/tcp is in use already")
        finally:
            probe.close()
        held = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            held.bind(("127.0.0.1", 40000))
        except OSError:
            held.close()
            self.skipTest("127.0.0.1:40000/udp is in use already")
        self.addCleanup(held.close)
        netlib.diagnosed(self.pool, self._port_in_use_flow)

    def _port_in_use_flow(self):
        vm = self.ok("env", "create", "p", "--image", "ttguest", "--engine", "qemu",
                     "--cpu", 1, "--mem", 256, "--disk", 1024, "--lifetime", 900)["vms"][0]
        self.assertEqual(vm["state"], "running", vm)
        ports = [p["public"] for p in vm["ports"]]
        self.assertNotIn(40000, ports)
        logs = self.pool.logs()
        self.assertRegex(logs, r"public port 40000 \(udp\) is in use on this host")
        self.assertIn("re-placed after", logs)
        # it stays up (a QEMU that lost its forward exits within ms)
        time.sleep(2)
        self.assertEqual(self.ok("env", "show", "p")["vms"][0]["state"], "running")
        self.ok("env", "delete", "p")

    def flow(self):
        print("host h1 accel (host show): %s" % netlib.host_accel(self.pool, "h1"))
        t0 = time.monotonic()
        vm = self.ok("env", "create", "u", "--image", "ttguest", "--engine", "qemu", "--cpu", 1,
                     "--mem", 256, "--disk", 1024, "--port", 80, "--lifetime", 900)["vms"][0]
        t1 = time.monotonic()
        ports = {p["guest"]: p["public"] for p in vm["ports"]}
        _, boot = netlib.wait_answer("guest http", "127.0.0.1", ports[80],
                                     "ttguest vm %d " % vm["vm_id"])
        print("env create round trip %.0f ms; request -> guest answers HTTP: %.1f s"
              % ((t1 - t0) * 1000, time.monotonic() - t0))
        self.assertIn("SSH-2.0-ttguest vm %d " % vm["vm_id"], self.get(ports[22], "-") or "")
        # a guest never reaches a service bound on the host's loopback
        self.assertFalse(self.ok("env", "show", "u")["deny_outgoing"])
        self.assertIn("connect 10.0.2.2:%d failed" % self.listen_port, self.outbound(ports[80]))
        self.assertEqual(self.accepted, 0, "the host-local listener was reached")

        # forwards change live
        self.ok("env", "update", "u", "--port", 8080)
        vm2 = self.vm()
        ports2 = {p["guest"]: p["public"] for p in vm2["ports"]}
        self.assertEqual(sorted(ports2), [22, 8080])
        netlib.wait_answer("guest on 8080", "127.0.0.1", ports2[8080], "port 8080", timeout=10)
        self.assertIsNone(self.get(ports[80]), "old forward still open")

        # deny-outgoing on: still no way out; inbound still works
        self.ok("env", "update", "u", "--deny-outgoing")
        time.sleep(1.2)
        self.ok("env", "stop", "u")
        self.assertIsNone(self.get(ports2[8080]))
        time.sleep(1.2)
        self.ok("env", "start", "u")
        vm3 = self.vm()
        for k in ("ip", "mac", "ports"):
            self.assertEqual(vm3[k], vm2[k], k)
        netlib.wait_answer("guest after start", "127.0.0.1", ports2[8080], "ttguest vm")
        self.assertIn("failed", self.outbound(ports2[8080]))
        self.assertEqual(self.accepted, 0, "the host-local listener was reached")

        # worker restart: the VM keeps running and answering
        before = {v: (r["pid"], r["start_time"]) for v, r in self.pool.worker_vms("h1").items()}
        self.assertEqual(self.pool.stop_worker("h1"), 0)
        self.assertIn("ttguest vm", self.get(ports2[8080]) or "")
        self.pool.start_worker("h1")
        self.pool.wait_online(["h1"])
        time.sleep(1.5)
        after = {v: (r["pid"], r["start_time"]) for v, r in self.pool.worker_vms("h1").items()}
        self.assertEqual(after, before)
        self.assertIn("ttguest vm", self.get(ports2[8080]) or "")

        self.ok("env", "delete", "u")
        harness.wait_for("qemu gone", lambda: not any(
            harness.proc_alive(p, s) for p, s in before.values()), timeout=15)
        self.assertIsNone(self.get(ports2[8080]))
        vmdir = os.path.join(self.pool.worker_state("h1"), "vms", str(vm["vm_id"]))
        # the worker removes the VM's directory just after its process is gone
        harness.wait_for("the VM directory gone", lambda: not os.path.exists(vmdir),
                         timeout=15)


if __name__ == "__main__":
    unittest.main()
