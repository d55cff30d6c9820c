"""Measures the latency of `ttctl env show` (a new ttctl process each time) while a worker
fetches a 1 GiB image from the broker's blob server for a VM that waits in `pulling`
(docs/IMAGES.md), and the fetch's throughput against `cp` of the same file. Not a ctest: run
it from tests/integration with the TTFLEET_* variables of tests/integration/CMakeLists.txt."""
import os, re, shutil, subprocess, sys, time
sys.path.insert(0, ".")
import harness
pool = harness.Pool(hosts={"h1": {}})
pool.start()
try:
    assert pool.ctl("env", "create", "m1", "--image", "sleeper", "--engine", "process", tenant="t1").rc == 0
    d = os.path.join(pool.dir, "big")
    os.makedirs(d)
    path = os.path.join(d, "kernel")
    with open(path, "wb") as f:
        for _ in range(1024):
            f.write(os.urandom(1 << 20))
    r = pool.ctl("image", "push", "big", d, tenant=harness.ADMIN, timeout_ms=120000)
    assert r.rc == 0, r
    digest = [b["digest"] for b in r.data["blobs"] if b.get("file") == "kernel"][0]
    subprocess.run(["sync"])
    t = time.monotonic()
    shutil.copyfile(path, path + ".cp")
    subprocess.run(["sync"])
    cp_s = time.monotonic() - t
    os.unlink(path + ".cp")
    def lat():
        t = time.monotonic(); r = pool.ctl("env", "show", "m1", tenant="t1", json_out=False); assert r.rc == 0, r
        return (time.monotonic() - t) * 1000
    idle = sorted(lat() for _ in range(50))
    argv = [harness.binary("ttctl"), "--broker", pool.clients_ep, "--tenant", "t2", "--timeout", "120000",
            "env", "create", "b", "--image", "big", "--engine", "hollow", "--cpu", "1", "--mem", "64", "--disk", "128"]
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(os.environ, TTFLEET_CONFIG=os.devnull))
    busy, pulling = [], 0
    while p.poll() is None:
        busy.append(lat())
        if len(busy) % 10 == 0:
            r = pool.ctl("env", "show", "b", tenant="t2")
            if r.rc == 0 and any(v.get("pull_total", 0) > 0 for v in r.data["vms"]):
                pulling += 1
    dt = time.monotonic() - t0
    log = open(os.path.join(pool.dir, "worker-h1.log"), errors="replace").read()
    m = [x for x in re.finditer(r"blob (sha256:\w+): done, (\d+) bytes, (\d+) fetched", log) if x.group(1) == digest]
    print("create (fetch 1 GiB + start) rc", p.returncode, p.stderr.read()[-300:], "%.1f s (%.0f MiB/s)" % (dt, 1024 / dt))
    print("cp of the same file %.2f s (%.0f MiB/s); fetch/cp ratio %.2f" % (cp_s, 1024 / cp_s, cp_s / dt))
    print("worker DONE lines for the blob:", [(x.group(2), x.group(3)) for x in m])
    print("env show of the fetching env saw pulling %d time(s)" % pulling)
    busy.sort()
    def pct(a, q): return a[min(len(a) - 1, int(q * len(a)))]
    print("idle env show (ttctl process incl.): n=%d p50=%.1f p99=%.1f ms" % (len(idle), pct(idle, .5), pct(idle, .99)))
    print("during 1 GiB fetch: n=%d p50=%.1f p99=%.1f max=%.1f ms" % (len(busy), pct(busy, .5), pct(busy, .99), busy[-1]))
    print("load", os.getloadavg())
finally:
    pool.close()
