"""End to end with real packets: the qemu and process engines on the nft
network backend, inside network namespaces this test makes.

    client ns  ttc<pid>: vc 172.31.250.2/24 ----veth---- vh 172.31.250.1/24 : host ns tth<pid>
    host ns: ttworker --netns tth<pid> --net nft, bridge ttbr0 10.10.0.1/16,
             a QEMU VM (the test guest, on tap tt<id>) and a process VM (veth tt<id>)
    the broker runs in the test's own namespace; the worker reaches it by ipc://

From the client namespace the test connects to 172.31.250.1:<public port>
and checks each VM's answer; a listener in the client namespace is the
target of the VMs' outbound tries. Then: deny-outgoing blocks the outbound
try while inbound still works, `env update --port` changes the DNAT map
live, stop/start keeps IP, MAC and ports, a worker restart keeps the VMs
running and reachable, delete leaves no tap, veth, map or set element.
Namespaces, processes and files are removed at the end, on failure too.
Prints the guest's boot time under TCG and the time from request to the
QEMU exec.
"""

import os
import sys
import time
import unittest

import harness
import netlib

CLIENT_IP, HOST_IP = "172.31.250.2", "172.31.250.1"
LISTEN_PORT = 7777
T = "nettest"


class QemuNft(unittest.TestCase):
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
        self.pool = netlib.IpcWorkersPool(hosts={"h1": {
            "engines": "qemu,process", "cpu": 4, "mem": 4096,
            "args": ["--net", "nft", "--netns", self.hns, "--stop-timeout-ms", "300"]}})
        self.addCleanup(self.pool.close)
        netlib.install_images(self.pool, guest, responder=True)
        self.pool.start()

    # ---- helpers ----

    def ok(self, *args, tenant=T):
        r = self.pool.ctl(*args, tenant=tenant, timeout_ms=20000)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def ports(self, vm):
        return {p["guest"]: p["public"] for p in vm["ports"]}

    def get(self, port, path="/"):
        return netlib.fetch(HOST_IP, port, path, netns=self.cns)

    def answer(self, what, port, needle, path="/", timeout=90):
        return netlib.wait_answer(what, HOST_IP, port, needle, path, self.cns, timeout)

    def outbound(self, port):
        return self.get(port, "/cgi-bin/connect?%s:%d" % (CLIENT_IP, LISTEN_PORT)) or ""

    def qemu_vm(self):
        return self.ok("env", "show", "q")["vms"][0]

    def denied(self):
        """Ports whose mark carries the deny-outgoing bit (bit 31)."""
        out = []
        for e in netlib.nft_elements(self.hns, "port_grp", "map", "bridge"):
            port, _, mark = e.partition(" : ")
            if int(mark, 16) & 0x80000000:
                out.append(port.strip('"'))
        return sorted(out)

    def worker_row(self, vm_id):
        return self.pool.worker_vms("h1")[vm_id]

    # ---- the flow ----

    def test_flow(self):
        netlib.diagnosed(self.pool, self.flow)

    def flow(self):
        print("host h1 accel (host show): %s" % netlib.host_accel(self.pool, "h1"))

        t_req = time.monotonic()
        q = self.ok("env", "create", "q", "--image", "ttguest", "--engine", "qemu", "--cpu", 1,
                    "--mem", 256, "--disk", 2048, "--port", 80, "--lifetime", 900)["vms"][0]
        t_reply = time.monotonic()
        p = self.ok("env", "create", "p", "--image", "responder", "--engine", "process",
                    "--cpu", 1, "--mem", 64, "--disk", 64, "--port", 80,
                    "--lifetime", 900)["vms"][0]
        qp, pp = self.ports(q), self.ports(p)

        # each VM answers from the client namespace, through the DNAT map
        ans, boot = self.answer("qemu guest http", qp[80], "ttguest vm %d " % q["vm_id"])
        print("env create (ttctl request -> reply, sent after the QEMU exec): %.0f ms; "
              "request -> guest answers HTTP through the DNAT map: %.1f s"
              % ((t_reply - t_req) * 1000, time.monotonic() - t_req))
        self.assertIn("ip %s " % q["ip"], ans)
        banner = self.get(qp[22], "-")
        self.assertIn("SSH-2.0-ttguest vm %d " % q["vm_id"], banner or "")
        ans, _ = self.answer("process vm http", pp[80], "process vm %d " % p["vm_id"],
                             timeout=20)
        self.assertIn("ip %s " % p["ip"], ans)
        with open(os.path.join(self.pool.worker_state("h1"), "vms", str(q["vm_id"]),
                               "console.log"), errors="replace") as f:
            m = [l for l in f if l.startswith("ttguest: ready")]
        print("guest console: %s" % (m[0].strip() if m else "(no ready line)"))

        # the maps hold exactly the elements of both VMs
        want = sorted("%d : %s . %d" % (x["public"], vm["ip"], x["guest"])
                      for vm in (q, p) for x in vm["ports"])
        self.assertEqual(netlib.nft_elements(self.hns, "tcp_pub"), want)
        self.assertEqual(netlib.nft_elements(self.hns, "udp_pub"), want)
        tq, tp = "tt%d" % q["vm_id"], "tt%d" % p["vm_id"]
        self.assertIn(tq, netlib.links(self.hns))
        self.assertIn(tp, netlib.links(self.hns))

        # outbound works, then deny-outgoing blocks it while inbound still works
        self.assertIn("ok: hello-from-client", self.outbound(qp[80]))
        self.assertIn("ok: hello-from-client", self.outbound(pp[80]))
        self.ok("env", "update", "q", "--deny-outgoing")
        self.ok("env", "update", "p", "--deny-outgoing")
        self.assertEqual(self.denied(), sorted(["tt%d" % q["vm_id"], "tt%d" % p["vm_id"]]))
        self.assertIn("connect %s:%d failed" % (CLIENT_IP, LISTEN_PORT), self.outbound(qp[80]))
        self.assertIn("failed", self.outbound(pp[80]))
        self.assertIn("ttguest vm", self.get(qp[80]) or "")
        self.ok("env", "update", "p", "--allow-outgoing")
        self.assertEqual(self.denied(), ["tt%d" % q["vm_id"]])
        self.assertIn("ok: hello-from-client", self.outbound(pp[80]))

        # ports change live: 80 goes, 8080 comes
        q2 = self.ok("env", "update", "q", "--port", 8080)
        q2 = self.qemu_vm()
        qp2 = self.ports(q2)
        self.assertEqual(sorted(qp2), [22, 8080])
        self.assertEqual(qp2[22], qp[22])
        self.answer("qemu guest on 8080", qp2[8080], "port 8080", timeout=10)
        self.assertIsNone(self.get(qp[80]), "old public port still forwards")
        want = sorted("%d : %s . %d" % (x["public"], vm["ip"], x["guest"])
                      for vm in (q2, p) for x in vm["ports"])
        self.assertEqual(netlib.nft_elements(self.hns, "tcp_pub"), want)

        # stop/start keeps ip, mac and ports
        time.sleep(1.2)
        t0 = time.monotonic()
        self.ok("env", "stop", "q")
        print("env stop of the QEMU VM (power-off grace 300 ms, then QMP quit): %.0f ms"
              % ((time.monotonic() - t0) * 1000))
        self.assertIsNone(self.get(qp2[8080]))
        time.sleep(1.2)
        self.ok("env", "start", "q")
        q3 = self.qemu_vm()
        for k in ("ip", "mac", "ports"):
            self.assertEqual(q3[k], q2[k], k)
        self.answer("qemu guest after start", qp2[8080], "ttguest vm %d " % q["vm_id"])
        self.assertIn("failed", self.outbound(qp2[8080]))  # still denied

        # a worker restart keeps the VMs running and reachable
        before = {v: (r["pid"], r["start_time"]) for v, r in self.pool.worker_vms("h1").items()}
        self.assertEqual(self.pool.stop_worker("h1"), 0)
        for pid, st in before.values():
            self.assertTrue(harness.proc_alive(pid, st), "VM died with its worker")
        self.assertIn("ttguest vm", self.get(qp2[8080]) or "")
        # while it is down, damage what it owns: a stray tap on its bridge,
        # a stray map element, a lost element of a live VM
        netlib.sh("ip", "-n", self.hns, "tuntap", "add", "tt999", "mode", "tap")
        netlib.sh("ip", "-n", self.hns, "link", "set", "tt999", "master", "ttbr0")
        self.ns.run(self.hns, "nft", "add element ip ttfleet tcp_pub { 45999 : 10.10.3.231 . 80 }")
        self.ns.run(self.hns, "nft", "delete element ip ttfleet tcp_pub { %d }" % pp[80])
        self.ns.run(self.hns, "nft", 'delete element bridge ttfleet port_ip { "%s" . %s }'
                    % (tp, p["ip"]))
        self.pool.start_worker("h1")
        self.pool.wait_online(["h1"])
        time.sleep(1.5)  # a reconcile round
        after = {v: (r["pid"], r["start_time"]) for v, r in self.pool.worker_vms("h1").items()}
        self.assertEqual(after, before)
        self.assertIn("ttguest vm", self.get(qp2[8080]) or "")
        self.assertIn("process vm", self.get(pp[80]) or "")
        self.assertEqual(self.qemu_vm()["state"], "running")
        # start reconciled the table and the bridge with worker.db
        want = sorted("%d : %s . %d" % (x["public"], vm["ip"], x["guest"])
                      for vm in (q2, p) for x in vm["ports"])
        self.assertEqual(netlib.nft_elements(self.hns, "tcp_pub"), want)
        self.assertNotIn("tt999", netlib.links(self.hns))
        self.assertEqual(netlib.nft_elements(self.hns, "port_ip", "set", "bridge"),
                         sorted('"tt%d" . %s' % (vm["vm_id"], vm["ip"]) for vm in (q2, p)))

        # delete leaves nothing behind
        self.ok("env", "delete", "q")
        self.ok("env", "delete", "p")
        harness.wait_for("VM processes gone", lambda: not any(
            harness.proc_alive(pid, st) for pid, st in before.values()), timeout=15)
        # the worker removes a VM's elements just after its process is gone
        harness.wait_for("the DNAT map empty", lambda: netlib.nft_elements(
            self.hns, "tcp_pub") == [], timeout=15)
        self.assertEqual(netlib.nft_elements(self.hns, "tcp_pub"), [])
        self.assertEqual(netlib.nft_elements(self.hns, "udp_pub"), [])
        self.assertEqual(netlib.nft_elements(self.hns, "port_grp", "map", "bridge"), [])
        self.assertEqual(netlib.nft_elements(self.hns, "port_ip", "set", "bridge"), [])
        self.assertEqual(netlib.nft_elements(self.hns, "member", "set"), [])
        names = netlib.links(self.hns)
        self.assertNotIn(tq, names)
        self.assertNotIn(tp, names)


if __name__ == "__main__":
    unittest.main()
