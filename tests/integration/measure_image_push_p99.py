"""Measures the latency of `ttctl env show` (a new ttctl process each time) while a 1 GiB
image is pushed through the broker's blob server (docs/IMAGES.md). Not a ctest: run it
from tests/integration with the TTFLEET_* variables of tests/integration/CMakeLists.txt."""
import os, sys, time, subprocess, threading
sys.path.insert(0, ".")
import harness
pool = harness.Pool(hosts={"h1": {}})
pool.start()
try:
    assert pool.ctl("env", "create", "m1", "--image", "sleeper", "--engine", "process", tenant="t1").rc == 0
    path = os.path.join(pool.dir, "big.qcow2")
    with open(path, "wb") as f:
        f.write(b"QFI\xfb")
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    def lat():
        t = time.monotonic(); r = pool.ctl("env", "show", "m1", tenant="t1", json_out=False); assert r.rc == 0, r
        return (time.monotonic() - t) * 1000
    idle = sorted(lat() for _ in range(50))
    argv = [harness.binary("ttctl"), "--broker", pool.clients_ep, "--tenant", harness.ADMIN, "--timeout", "120000", "image", "push", "big", path]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
    busy = []
    while p.poll() is None:
        busy.append(lat())
    dt = time.monotonic() - t0
    print("push rc", p.returncode, p.stderr.read()[-300:], "%.1f s (%.0f MiB/s incl. hashing)" % (dt, 1024 / dt))
    busy.sort()
    def pct(a, q): return a[min(len(a) - 1, int(q * len(a)))]
    print("idle env show (ttctl process incl.): n=%d p50=%.1f p99=%.1f ms" % (len(idle), pct(idle, .5), pct(idle, .99)))
    print("during 1 GiB push: n=%d p50=%.1f p99=%.1f max=%.1f ms" % (len(busy), pct(busy, .5), pct(busy, .99), busy[-1]))
    print("load", os.getloadavg())
finally:
    pool.close()
