"""A hostile guest on the nft backend (issue 9 item 5), with real packets,
inside network namespaces this test makes (the same picture as
test_qemu_nft_net.py):

    client ns ttc<pid>: vc 172.31.251.2/24 ---veth--- vh 172.31.251.1/24 : host ns tth<pid>
    host ns: ttworker --netns tth<pid> --net nft, bridge ttbr0 10.10.0.1/16

Env `a`: two QEMU VMs (the test guest, which has hostile hooks: it can add
an address, send from it, announce it by ARP, take another MAC). Env `b`:
one process VM. A listener in the client namespace is the outside world; a
listener in the host namespace on 0.0.0.0 stands for the host's services.

Checked: VMs of one env reach each other; a VM reaches no VM of another env
on any port (both directions), and no service of the host (bridge address,
the host namespace's other address); deny-outgoing blocks the outside and a
guest that adds another address and sends from it cannot escape it (nor
can it send from it with deny-outgoing off); a guest that claims another
env's VM's IP (unsolicited ARP), then its MAC too, does not take that VM's
public-port traffic. Delete leaves no bridge element.
"""

import os
import sys
import time
import unittest

import harness
import netlib

CLIENT_IP, HOST_IP = "172.31.251.2", "172.31.251.1"
LISTEN_PORT = 7777
HOST_PORT = 7778
SPOOF_IP = "10.10.200.200"
T = "isotest"


class NftIsolation(unittest.TestCase):
    def setUp(self):
        netlib.need_netns()
        netlib.need_qemu()
        harness.watchdog(280)
        self.addCleanup(harness.watchdog, 0)
        guest = netlib.build_guest()
        self.ns = netlib.Netns()
        self.addCleanup(self.ns.close)  # runs last: after the pool is gone
        self.hns, self.cns = netlib.veth_pair(self.ns, "tt", "v", HOST_IP, CLIENT_IP)
        self.ns.spawn(self.cns, [sys.executable, "-c", netlib.LISTENER, CLIENT_IP,
                                 str(LISTEN_PORT)])
        # a service of the host namespace, on every address it has
        self.ns.spawn(self.hns, [sys.executable, "-c", netlib.LISTENER, "0.0.0.0",
                                 str(HOST_PORT)])
        self.pool = netlib.IpcWorkersPool(hosts={"h1": {
            "engines": "qemu,process", "cpu": 6, "mem": 4096,
            "args": ["--net", "nft", "--netns", self.hns, "--stop-timeout-ms", "300"]}})
        self.addCleanup(self.pool.close)
        netlib.install_images(self.pool, guest, responder=True)
        self.pool.start()

    def ok(self, *args):
        r = self.pool.ctl(*args, tenant=T, timeout_ms=20000)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def get(self, port, path="/"):
        return netlib.fetch(HOST_IP, port, path, netns=self.cns) or ""

    def connect(self, vm, ip, port):
        """The VM's outbound try to ip:port, as it reports it."""
        return self.get(vm["pub"], "/cgi-bin/connect?%s:%d" % (ip, port))

    def assert_blocked(self, vm, ip, port):
        got = self.connect(vm, ip, port)
        self.assertIn("connect %s:%d failed" % (ip, port), got,
                      "vm %d reached %s:%d" % (vm["vm_id"], ip, port))

    def test_flow(self):
        netlib.diagnosed(self.pool, self.flow)

    def flow(self):
        a = self.ok("env", "create", "a", "--image", "ttguest", "--dup", 2, "--engine", "qemu",
                    "--cpu", 1, "--mem", 256, "--disk", 1024, "--port", 80,
                    "--lifetime", 900)["vms"]
        b = self.ok("env", "create", "b", "--image", "responder", "--engine", "process",
                    "--cpu", 1, "--mem", 64, "--disk", 64, "--port", 80,
                    "--lifetime", 900)["vms"]
        for vm in a + b:
            vm["pub"] = {p["guest"]: p["public"] for p in vm["ports"]}[80]
        a1, a2, pb = a[0], a[1], b[0]
        for vm in a:
            netlib.wait_answer("guest %d" % vm["vm_id"], HOST_IP, vm["pub"],
                               "ttguest vm %d " % vm["vm_id"], netns=self.cns)
        netlib.wait_answer("process vm", HOST_IP, pb["pub"], "process vm %d " % pb["vm_id"],
                           netns=self.cns, timeout=20)
        # the host service is up (seen from outside)
        self.assertIn("hello-from-client", netlib.fetch(HOST_IP, HOST_PORT, "-",
                                                        netns=self.cns) or "")

        # same env: reachable; outside: reachable (deny-outgoing is off)
        self.assertIn("ok: SSH-2.0-ttguest vm %d " % a2["vm_id"],
                      self.connect(a1, a2["ip"], 22))
        self.assertIn("ok: hello-from-client", self.connect(a1, CLIENT_IP, LISTEN_PORT))

        # another env: no port answers, either way
        for port in (22, 80, 8080):
            self.assert_blocked(a1, pb["ip"], port)
            self.assert_blocked(pb, a1["ip"], port)
        # the host's own services: the bridge address, its other address
        for vm in (a1, pb):
            self.assert_blocked(vm, "10.10.0.1", HOST_PORT)
            self.assert_blocked(vm, HOST_IP, HOST_PORT)

        # a guest that sends from an address that is not its own goes nowhere
        self.assertIn("spoof %s done" % SPOOF_IP,
                      self.get(a1["pub"], "/cgi-bin/spoof?" + SPOOF_IP))
        self.assert_blocked(a1, CLIENT_IP, LISTEN_PORT)
        self.assertIn("ttguest vm %d " % a1["vm_id"], self.get(a1["pub"]))  # inbound works
        # deny-outgoing (matched by port) cannot be escaped that way either
        self.ok("env", "update", "a", "--deny-outgoing")
        self.assert_blocked(a2, CLIENT_IP, LISTEN_PORT)
        self.assert_blocked(a1, CLIENT_IP, LISTEN_PORT)
        self.assertIn("ok: SSH-2.0-ttguest vm %d " % a2["vm_id"],
                      self.connect(a1, a2["ip"], 22))  # its own env still reachable
        self.ok("env", "update", "a", "--allow-outgoing")

        # takeover: a2 claims pb's IP by ARP, then pb's MAC too; pb's public
        # port keeps reaching pb
        self.assertIn("spoof %s done" % pb["ip"], self.get(a2["pub"], "/cgi-bin/spoof?" + pb["ip"]))
        for _ in range(6):
            self.assertIn("process vm %d " % pb["vm_id"], self.get(pb["pub"]))
            time.sleep(0.5)
        self.assertIn("spoofmac", self.get(a2["pub"], "/cgi-bin/spoofmac?%s-%s"
                                            % (pb["ip"], pb["mac"])))
        time.sleep(2.5)  # the guest changes its MAC 1 s after answering
        for _ in range(6):
            self.assertIn("process vm %d " % pb["vm_id"], self.get(pb["pub"]))
            time.sleep(0.5)

        # delete leaves no element of the bridge table
        self.ok("env", "delete", "a")
        self.ok("env", "delete", "b")
        harness.wait_for("VMs destroyed", lambda: not self.pool.worker_vms("h1"), timeout=20)
        for name, kind in (("port_mac", "set"), ("port_ip", "set"), ("port_grp", "map"),
                           ("port_in", "set")):
            self.assertEqual(netlib.nft_elements(self.hns, name, kind, "bridge"), [], name)
        self.assertEqual(netlib.nft_elements(self.hns, "member", "set"), [])


if __name__ == "__main__":
    unittest.main()
