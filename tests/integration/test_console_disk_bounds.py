"""A guest cannot fill the worker's disk (issue 9 item 10), with real
process VMs on a real worker:

- a VM that writes to its console without end: console.log never passes
  the cap (1 MiB), the older half is console.log.1, `ttctl env console`
  (200 KB here: a full 256 KiB tail plus its envelope passes the
  client's reply limit) always finds the newest output, even
  right after a rotation;
- a VM that writes files without end in its disk: the writes stop with
  ENOSPC at its disk size (its disk is an ext4 image mounted in its own
  mount namespace), the image on the host holds no more than that, and
  the host directory under the mount stays empty. The writer gives up at
  200 MiB, so a worker without the bound cannot fill the machine.

Needs root (the loop device behind the disk image).
"""

import os
import re
import time
import unittest

import harness

T = "bounds"
CAP = 1024 * 1024

FLOOD = r"""#!/bin/sh
i=0
while :; do
    head -c 131072 /dev/zero | tr '\0' 'x'
    echo " flood chunk $i"
    i=$((i + 1))
    sleep 0.01
done
"""

FILL = r"""#!/bin/sh
dd if=/dev/zero of=fill bs=1M count=200 2>/dev/null
echo "fill stopped at $(wc -c <fill) bytes"
exec sleep 3600
"""


def skip(why):
    print("SKIP: " + why)
    os._exit(77)


class Bounds(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            skip("needs root (a loop device for the VM's disk image)")
        if not os.path.exists("/dev/loop-control"):
            skip("no /dev/loop-control here")
        harness.watchdog(170)
        self.addCleanup(harness.watchdog, 0)
        self.pool = harness.Pool(hosts={"h1": {"engines": "process", "cpu": 4, "mem": 4096,
                                               "args": ["--stop-timeout-ms", "300"]}})
        self.addCleanup(self.pool.close)
        for name, text in (("flood", FLOOD), ("fill", FILL)):
            path = os.path.join(self.pool.images, name)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o755)
        self.pool.start()

    def ok(self, *args, json_out=True):
        r = self.pool.ctl(*args, tenant=T, timeout_ms=20000, json_out=json_out)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data if json_out else r.out

    def vmdir(self, vm):
        return os.path.join(self.pool.worker_state("h1"), "vms", str(vm["vm_id"]))

    def test_console_is_capped(self):
        vm = self.ok("env", "create", "c", "--image", "flood", "--cpu", 1, "--mem", 64,
                     "--disk", 64, "--lifetime", 600)["vms"][0]
        log = os.path.join(self.vmdir(vm), "console.log")

        def chunks():
            text = self.ok("env", "console", "c", str(vm["vm_id"]), "--bytes", 200000,
                           json_out=False)
            m = re.findall(r"flood chunk (\d+)", text)
            return int(m[-1]) if m else None

        # 40 chunks of 128 KiB: five times the cap has gone through
        harness.wait_for("5 MiB of console", lambda: (chunks() or 0) >= 40, timeout=90,
                         interval=0.5)
        for _ in range(5):
            size = os.path.getsize(log)
            old = os.path.getsize(log + ".1")
            self.assertLessEqual(size, CAP)
            self.assertLessEqual(old, CAP)
            time.sleep(0.3)
        n = chunks()
        time.sleep(1)
        self.assertGreater(chunks(), n, "the console stopped moving")
        print("console after >= 5 MiB written: console.log %d bytes, console.log.1 %d bytes"
              % (size, old))
        self.ok("env", "delete", "c")
        harness.wait_for("vm dir gone", lambda: not os.path.exists(self.vmdir(vm)), timeout=15)

    def test_disk_is_bounded(self):
        vm = self.ok("env", "create", "f", "--image", "fill", "--cpu", 1, "--mem", 64,
                     "--disk", 64, "--lifetime", 600)["vms"][0]

        def stopped():
            text = self.ok("env", "console", "f", str(vm["vm_id"]), json_out=False)
            m = re.search(r"fill stopped at (\d+) bytes", text)
            return int(m.group(1)) if m else None

        wrote = harness.wait_for("the writer stops", stopped, timeout=60, interval=0.5)
        print("a process VM with a 64 MiB disk wrote %d bytes before ENOSPC" % wrote)
        self.assertLessEqual(wrote, 64 * 1024 * 1024)
        self.assertGreater(wrote, 32 * 1024 * 1024)  # most of its disk is usable
        img = os.path.join(self.vmdir(vm), "disk.img")
        used = os.stat(img).st_blocks * 512
        self.assertLessEqual(used, 64 * 1024 * 1024)
        self.assertEqual(os.listdir(os.path.join(self.vmdir(vm), "disk")), [],
                         "the VM wrote into the host's directory, not its disk")
        # the disk comes back on stop/start (the broker wants 1 s between them)
        time.sleep(1.2)
        self.ok("env", "stop", "f")
        time.sleep(1.2)
        self.ok("env", "start", "f")
        self.assertEqual(self.ok("env", "show", "f")["vms"][0]["state"], "running")
        self.ok("env", "delete", "f")


if __name__ == "__main__":
    unittest.main()
