"""Memory-snapshot templates through the real daemons (docs/SNAPSHOTS.md):
a broker with its blob server, a qemu host (user network, image cache) and
a process-only host; the test guest (tools/mkguest.sh) is pushed with the
readiness http:80.

- bad input is refused with a clear reason: an unknown image, --cpu out of
  range, a host without the qemu engine;
- kill -9 of the worker in the middle of a template save (crash point
  worker.snap_mid_save) leaves no usable template (nothing listed, only a
  .tmp.* directory); the restarted worker removes the leftover and the
  builder's QEMU, and `image prepare` then makes the template: `image show`
  lists it for the host with its cpu and mem, the builder's QEMU and
  directory are gone, and it is listed again after a worker restart.

Suspend (env suspend / resume with memory, on a 2-cpu host running qemu
and process VMs): the suspended VM's QEMU ends and the host's cpu and mem
are free; a resume while the room is taken is NO_CAPACITY; the resume keeps
the guest's tmpfs note and uptime; it survives a restart of both daemons
and a kill -9 of the worker at worker.snap_mid_save and
worker.snap_suspend_before_quit; the process engine is refused; the suspend
and resume are timed against the cold create (MEASURE lines).

Every wait is bounded; only the daemons and QEMUs this test started are
killed.
"""

import os
import signal
import socket
import time
import unittest

import harness
import netlib
from harness import ADMIN

BUILDER_ID = 65534  # SNAPBUILD_VM_ID (worker/snapbuild.h)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Snapshot(unittest.TestCase):
    def hosts(self):
        return {
            "q1": {"engines": "qemu", "cpu": 4, "mem": 4096,
                   "args": ["--net", "user", "--stop-timeout-ms", "300"]},
            "p1": {"engines": "process", "cpu": 4, "mem": 4096},
        }

    def setUp(self):
        netlib.need_qemu()
        harness.watchdog(900)
        self.addCleanup(harness.watchdog, 0)
        self.guest = netlib.build_guest()
        hosts = self.hosts()
        self.pool = harness.Pool(hosts=hosts,
                                 broker_args=["--blobs", "tcp://127.0.0.1:%d" % free_port()])
        self.addCleanup(self.pool.close)
        self.addCleanup(self.kill_builder)
        self.pool.start()

    def ctl(self, *args, timeout_ms=30000):
        return self.pool.ctl(*args, tenant=ADMIN, timeout_ms=timeout_ms)

    def ok(self, *args, **kw):
        r = self.ctl(*args, **kw)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def builder_dir(self):
        return os.path.join(self.pool.worker_state("q1"), "vms", str(BUILDER_ID))

    def builder_pid(self):
        try:
            with open(os.path.join(self.builder_dir(), "pid")) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return 0

    def kill_builder(self):
        """The builder QEMU of a killed worker, if any (only ours: its pidfile)."""
        pid = self.builder_pid()
        if pid > 0:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if self.pool.worker_state("q1").encode() in f.read():
                        os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def templates_dir(self):
        return os.path.join(self.pool.worker_state("q1"), "templates")

    def test_flow(self):
        try:
            self.flow()
        except BaseException:
            print(self.pool.logs())
            raise

    def flow(self):
        self.ok("image", "push", "ttguest", self.guest, "--ready", "http:80")

        # bad input: clear reasons, nothing sent
        r = self.ctl("image", "prepare", "nosuch", "--hosts", "q1", "--no-wait")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("nosuch", r.err, r)
        r = self.ctl("image", "prepare", "ttguest", "--hosts", "q1", "--cpu", "999", "--no-wait")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("--cpu", r.err, r)
        r = self.ctl("image", "prepare", "ttguest", "--hosts", "p1", "--no-wait")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("without the qemu engine", r.err, r)
        r = self.ctl("image", "prepare", "ttguest", "--hosts", "nohost", "--no-wait")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("unknown", r.err, r)

        # kill -9 in the middle of the save: no usable template
        self.pool.stop_worker("q1")
        os.environ["TTFLEET_CRASH_AT"] = "worker.snap_mid_save"
        try:
            self.pool.start_worker("q1")
        finally:
            del os.environ["TTFLEET_CRASH_AT"]
        self.pool.wait_online(["q1"])
        self.ok("image", "prepare", "ttguest", "--hosts", "q1", "--cpu", "1", "--mem", "128",
                "--no-wait")
        harness.wait_for("the worker to die at worker.snap_mid_save",
                         lambda: not self.pool.workers["q1"].running(), timeout=600, interval=0.5)
        self.assertEqual(self.pool.workers["q1"].proc.returncode, -signal.SIGKILL)
        left = os.listdir(self.templates_dir())
        self.assertTrue(left and all(n.startswith(".tmp.") for n in left), left)

        # the restart sweeps the leftover and the builder; prepare makes it
        self.pool.start_worker("q1")
        self.pool.wait_online(["q1"])
        harness.wait_for("the leftover and the builder to go",
                         lambda: os.listdir(self.templates_dir()) == []
                         and not os.path.exists(self.builder_dir()), timeout=60)
        img = self.ok("image", "show", "ttguest")
        self.assertEqual(img["templates"], [])
        img = self.ok("image", "prepare", "ttguest", "--hosts", "q1", "--cpu", "1", "--mem",
                      "128", "--wait-timeout", "600", timeout_ms=60000)
        t = [t for t in img["templates"] if t["host"] == "q1"]
        self.assertEqual(len(t), 1, img)
        self.assertEqual((t[0]["cpu"], t[0]["mem_mib"], t[0]["users"]), (1, 128, 0))
        self.assertGreaterEqual(t[0]["bytes"], 128 << 20)
        keys = os.listdir(self.templates_dir())
        self.assertEqual(len(keys), 1, keys)
        for f in ("ram", "state", "disk.qcow2", "meta.json"):
            self.assertTrue(os.path.exists(os.path.join(self.templates_dir(), keys[0], f)), f)
        harness.wait_for("the builder to go", lambda: not os.path.exists(self.builder_dir()),
                         timeout=60)
        # a second prepare of the same key is done at once
        self.ok("image", "prepare", "ttguest", "--hosts", "q1", "--cpu", "1", "--mem", "128",
                "--wait-timeout", "5")

        # it survives a restart
        self.pool.stop_worker("q1")
        self.pool.start_worker("q1")
        self.pool.wait_online(["q1"])
        img = self.ok("image", "show", "ttguest")
        self.assertEqual([(t["host"], t["cpu"], t["mem_mib"]) for t in img["templates"]],
                         [("q1", 1, 128)])

        # creates: --boot snapshot restores from it, --boot cold boots; both
        # answer HTTP; env show says how each booted. Timed request -> HTTP
        # answer in the same run (docs/SNAPSHOTS.md, docs/BENCHMARKS.md).
        snap = self.create_timed("s1", "snapshot")
        cold = self.create_timed("c1", "cold")
        print("MEASURE boot=snapshot request->HTTP %.2f s (reply %.2f s), load %s, cpu %.2f s"
              % snap)
        print("MEASURE boot=cold     request->HTTP %.2f s (reply %.2f s), load %s, cpu %.2f s"
              % cold)
        for name, kind in (("s1", "snapshot"), ("c1", "cold")):
            vm = self.ok("env", "show", name)["vms"][0]
            self.assertEqual(vm["boot"], kind, vm)
        harness.wait_for("the template's clone count", lambda: [
            t["users"] for t in self.ok("image", "show", "ttguest")["templates"]] == [1],
            timeout=10)
        self.assertLess(snap[0], cold[0])

        # --boot snapshot without a template for that (cpu, mem): a clear refusal
        r = self.ctl("env", "create", "s2", "--image", "ttguest", "--engine", "qemu", "--cpu", "1",
                     "--mem", "160", "--disk", "1024", "--port", "80", "--boot", "snapshot")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("no template of image ttguest", r.err, r)
        # on the process engine (a process-only host): refused, auto works
        r = self.ctl("env", "create", "s3", "--image", "sleeper", "--engine", "process",
                     "--boot", "snapshot")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("cannot restore process VMs", r.err, r)
        vm = self.ok("env", "create", "s4", "--image", "sleeper", "--engine", "process",
                     "--boot", "auto")["vms"][0]
        self.assertEqual(vm["boot"], "cold", vm)

    def cpu_of(self, pid):
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return 0.0

    def create_timed(self, name, boot):
        """Creates a one-VM env of the guest with --boot boot and waits for
        its HTTP answer: (seconds to the answer, seconds to the create's
        reply, load average, CPU seconds of the worker and the VM's QEMU)."""
        wpid = self.pool.workers["q1"].proc.pid
        w0 = self.cpu_of(wpid)
        load = "%.1f %.1f %.1f" % os.getloadavg()
        t0 = time.monotonic()
        vm = self.ok("env", "create", name, "--image", "ttguest", "--engine", "qemu", "--cpu", "1",
                     "--mem", "128", "--disk", "1024", "--port", "80", "--boot", boot,
                     "--lifetime", "900", timeout_ms=60000)["vms"][0]
        t_reply = time.monotonic() - t0
        ports = {p["guest"]: p["public"] for p in vm["ports"]}
        netlib.wait_answer("%s http" % name, "127.0.0.1", ports[80], "ttguest", timeout=600)
        t = time.monotonic() - t0
        row = self.pool.worker_vms("q1").get(vm["vm_id"], {})
        cpu = self.cpu_of(wpid) - w0 + self.cpu_of(row.get("pid") or 0)
        return (t, t_reply, load, cpu)


class Suspend(Snapshot):
    """env suspend / resume with memory (docs/SNAPSHOTS.md "Suspend and
    resume"): one host q1 with 2 cpus that runs qemu and process VMs."""

    def hosts(self):
        return {"q1": {"engines": "qemu,process", "cpu": 2, "mem": 1024,
                       "args": ["--net", "user", "--stop-timeout-ms", "300"]}}

    def test_flow(self):
        try:
            self.suspend_flow()
        except BaseException:
            print(self.pool.logs())
            raise

    def state(self, port):
        """{'uptime': float, 'note': str} from the guest's /cgi-bin/state."""
        text = netlib.fetch("127.0.0.1", port, "/cgi-bin/state") or ""
        out = {}
        for line in text.splitlines():
            k, _, v = line.partition(" ")
            out[k] = v
        return out

    @staticmethod
    def alive(pid):
        """pid runs (a zombie does not)."""
        try:
            with open("/proc/%d/stat" % pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except (OSError, IndexError):
            return False

    def vm_dir(self, vm_id):
        return os.path.join(self.pool.worker_state("q1"), "vms", str(vm_id))

    def host_used(self):
        h = self.ok("host", "show", "q1")
        return (h["cpu_used"], h["mem_used"])

    def host_free(self):
        h = self.ok("host", "show", "q1")
        return (h["cpu_used"], h["mem_used"]) == (0, 0) and \
            not h.get("cpu_freeing") and not h.get("mem_freeing_mib")

    def suspend_timed(self, name):
        wpid = self.pool.workers["q1"].proc.pid
        w0 = self.cpu_of(wpid)
        load = "%.1f %.1f %.1f" % os.getloadavg()
        t0 = time.monotonic()
        env = self.ok("env", "suspend", name, "--wait", timeout_ms=60000)
        return env, (time.monotonic() - t0, load, self.cpu_of(wpid) - w0)

    def resume_timed(self, name, port):
        wpid = self.pool.workers["q1"].proc.pid
        w0 = self.cpu_of(wpid)
        load = "%.1f %.1f %.1f" % os.getloadavg()
        t0 = time.monotonic()
        vm = self.ok("env", "resume", name, timeout_ms=60000)["vms"][0]
        t_reply = time.monotonic() - t0
        netlib.wait_answer("%s http" % name, "127.0.0.1", port, "ttguest", timeout=120)
        t = time.monotonic() - t0
        row = self.pool.worker_vms("q1").get(vm["vm_id"], {})
        return (t, t_reply, load, self.cpu_of(wpid) - w0 + self.cpu_of(row.get("pid") or 0))

    def check_suspended(self, name, vm_id, qemu_pid):
        env = self.ok("env", "show", name)
        self.assertEqual(env["state"], "suspended", env)
        self.assertEqual(env["vms"][0]["state"], "suspended", env)
        self.assertFalse(self.alive(qemu_pid), "its QEMU %d still runs" % qemu_pid)
        self.assertEqual(self.pool.worker_vms("q1")[vm_id]["pid"], 0)
        files = os.listdir(self.vm_dir(vm_id))
        self.assertIn("suspend.state", files)
        self.assertNotIn("suspend.partial", files)
        harness.wait_for("the host's cpu and mem to be free", lambda: self.host_used() == (0, 0),
                         timeout=10)

    def resume_and_check(self, name, vm_id, port, word, up0):
        r = self.resume_timed(name, port)
        st = self.state(port)
        self.assertEqual(st.get("note"), word, st)
        self.assertGreaterEqual(float(st["uptime"]), up0, st)
        self.assertNotIn("suspend.state", os.listdir(self.vm_dir(vm_id)))
        self.assertEqual(self.host_used(), (1, 128))
        return r, float(st["uptime"])

    def suspend_flow(self):
        self.ok("image", "push", "ttguest", self.guest, "--ready", "http:80")
        cold = self.create_timed("e1", "cold")
        vm = self.ok("env", "show", "e1")["vms"][0]
        vm_id, port = vm["vm_id"], {p["guest"]: p["public"] for p in vm["ports"]}[80]
        self.assertEqual(self.host_used(), (1, 128))
        self.assertIn("note w1", netlib.fetch("127.0.0.1", port, "/cgi-bin/note?w1") or "")
        up0 = float(self.state(port)["uptime"])
        pid = self.pool.worker_vms("q1")[vm_id]["pid"]

        # suspend: QEMU gone, cpu and mem free, the env says suspended
        env, susp = self.suspend_timed("e1")
        self.assertEqual(env["state"], "suspended", env)
        self.check_suspended("e1", vm_id, pid)
        self.assertIsNone(netlib.fetch("127.0.0.1", port, "/", timeout=5))

        # the freed room is used; a resume then finds no room
        self.ok("env", "create", "hog", "--image", "sleeper", "--engine", "process", "--cpu", "2",
                "--mem", "256")
        r = self.ctl("env", "resume", "e1")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("NO_CAPACITY", r.err, r)
        self.assertEqual(self.ok("env", "show", "e1")["state"], "suspended")
        self.ok("env", "delete", "hog")
        # free once the worker answered the destroy too (the broker holds the
        # room as "being freed" until then: RELIABILITY.md 11)
        harness.wait_for("the hog's room to be free", lambda: self.host_free(), timeout=30)

        # resume: the note is there, the uptime went on
        res, up0 = self.resume_and_check("e1", vm_id, port, "w1", up0)
        print("MEASURE suspend request->suspended %.2f s, load %s, worker cpu %.2f s" % susp)
        print("MEASURE resume  request->HTTP %.2f s (reply %.2f s), load %s, cpu %.2f s" % res)
        print("MEASURE cold    request->HTTP %.2f s (reply %.2f s), load %s, cpu %.2f s" % cold)
        self.assertLess(res[0], cold[0])
        r = self.pool.ctl("watch", "--env", "e1", "--topic", "env.", "--since", "10m",
                          "--timeout", "1500", "--events", self.pool.events_ep, tenant=ADMIN,
                          json_out=False)
        self.assertIn("env.suspended", r.out, r)
        self.assertIn("env.resumed", r.out, r)

        # a worker restart and a broker restart while suspended
        self.assertIn("note w2", netlib.fetch("127.0.0.1", port, "/cgi-bin/note?w2") or "")
        pid = self.pool.worker_vms("q1")[vm_id]["pid"]
        self.ok("env", "suspend", "e1", "--wait", timeout_ms=60000)
        self.pool.stop_worker("q1")
        self.pool.stop_broker()
        self.pool.start_broker()
        self.pool.start_worker("q1")
        self.pool.wait_online(["q1"])
        self.check_suspended("e1", vm_id, pid)
        _, up0 = self.resume_and_check("e1", vm_id, port, "w2", up0)

        # kill -9 of the worker in the middle of the suspend (the stream
        # issued): the restarted worker gives the guest back running with its
        # memory, no partial file; a second suspend then works
        for crash, word in (("worker.snap_mid_save", "w3"),
                            ("worker.snap_suspend_before_quit", "w4")):
            self.assertIn("note " + word,
                          netlib.fetch("127.0.0.1", port, "/cgi-bin/note?" + word) or "")
            pid = self.pool.worker_vms("q1")[vm_id]["pid"]
            self.pool.stop_worker("q1")
            os.environ["TTFLEET_CRASH_AT"] = crash
            try:
                self.pool.start_worker("q1")
            finally:
                del os.environ["TTFLEET_CRASH_AT"]
            self.pool.wait_online(["q1"])
            r = self.ctl("env", "suspend", "e1", timeout_ms=5000)
            harness.wait_for("the worker to die at " + crash,
                             lambda: not self.pool.workers["q1"].running(), timeout=60,
                             interval=0.2)
            self.assertEqual(self.pool.workers["q1"].proc.returncode, -signal.SIGKILL)
            self.pool.start_worker("q1")
            self.pool.wait_online(["q1"])
            # mid_save: the restarted worker cancels the migration and the
            # guest runs on (same QEMU, partial file removed), then the broker's
            # specs (the env is to be suspended) suspend it again. before_quit:
            # the memory was committed before QEMU was asked to quit, so it is
            # adopted as suspended. Either way the env ends suspended with its
            # memory.
            harness.wait_for("the env to say suspended", lambda: self.ok(
                "env", "show", "e1")["state"] == "suspended", timeout=60, interval=0.3)
            log = self.pool.workers["q1"].log()
            self.assertIn("a suspend was interrupted" if crash == "worker.snap_mid_save"
                          else "was suspended to its file", log)
            self.check_suspended("e1", vm_id, pid)
            _, up0 = self.resume_and_check("e1", vm_id, port, word, up0)

        # an engine that cannot save memory: refused with the reason
        self.ok("env", "create", "pe", "--image", "sleeper", "--engine", "process", "--cpu", "1",
                "--mem", "128")
        r = self.ctl("env", "suspend", "pe")
        self.assertNotEqual(r.rc, 0)
        self.assertIn("BAD_REQUEST", r.err, r)
        self.assertIn("cannot save a VM's memory", r.err, r)
        self.assertEqual(self.ok("env", "show", "pe")["state"], "running")

        # a suspended env stopped: its saved memory is dropped, the disk kept
        self.ok("env", "suspend", "e1", "--wait", timeout_ms=60000)
        env = self.ok("env", "stop", "e1", timeout_ms=60000)
        self.assertEqual(env["state"], "stopped", env)
        files = os.listdir(self.vm_dir(vm_id))
        self.assertNotIn("suspend.state", files)
        self.assertIn("disk.qcow2", files)


if __name__ == "__main__":
    unittest.main()
