#!/usr/bin/python3
"""ha_bench: creates/s and broker CPU per create, one broker against a Raft
cluster of three, in one run on one machine (docs/BENCHMARKS.md, "Broker HA").

    tools/ha_bench.py [--build DIR] [--hosts N] [--producers M] [--seconds S]

For each setup it starts the broker(s) on loopback (state in a temporary
directory, removed at the end), runs ttbench with --mix create against the
serving broker (--broker-clients/--broker-workers: the leader of the
cluster), and reads every broker's utime+stime from /proc/PID/stat before
and after the load. Printed per setup: creates/s, create p50/p99, the
serving broker's CPU-us per create and the CPU-us per create of all brokers
together.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import zmq

HERE = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def serves(ep, pb):
    """True if the broker at ep answers a read with OK (the leader)."""
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    try:
        s.connect(ep)
        req = pb.Request(request_id="probe-%f" % time.monotonic(), tenant="admin")
        req.env_list.SetInParent()
        s.send_multipart([b"", b"MDPC01", b"tt.env", req.SerializeToString()])
        if not s.poll(500):
            return False
        rep = pb.Reply()
        rep.ParseFromString(s.recv_multipart()[-1])
        return rep.status == pb.OK
    finally:
        s.close()


def start_brokers(build, root, n):
    members = []
    for i in range(1, n + 1):
        members.append({"id": i, "raft": "127.0.0.1:%d" % free_port(),
                        "clients": "tcp://127.0.0.1:%d" % free_port(),
                        "workers": "tcp://127.0.0.1:%d" % free_port(),
                        "events": "tcp://127.0.0.1:%d" % free_port()})
    procs = []
    for m in members:
        state = os.path.join(root, "b%d" % m["id"])
        argv = [os.path.join(build, "broker", "ttbroker"), "--state", state, "--clients",
                m["clients"], "--workers", m["workers"], "--events", m["events"],
                "--blobs", "none", "--request-ttl", "600", "--rate", "0"]  # as ttbench starts one
        if n > 1:
            argv += ["--raft-id", str(m["id"]),
                     "--raft-peers", ",".join("%d=%s" % (x["id"], x["raft"]) for x in members),
                     "--raft-clients",
                     ",".join("%d=%s" % (x["id"], x["clients"]) for x in members),
                     "--raft-workers",
                     ",".join("%d=%s" % (x["id"], x["workers"]) for x in members),
                     "--raft-dir", os.path.join(root, "raft%d" % m["id"])]
        log = open(os.path.join(root, "broker%d.log" % m["id"]), "w")
        procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
    return members, procs


def run(build, pb, n, args):
    root = tempfile.mkdtemp(prefix="ttfleet-habench-")
    members, procs = start_brokers(build, root, n)
    try:
        leader = None
        deadline = time.monotonic() + 30
        while leader is None and time.monotonic() < deadline:
            for m, p in zip(members, procs):
                if p.poll() is not None:
                    raise SystemExit("ha_bench: broker %d exited; see %s" % (m["id"], root))
                if serves(m["clients"], pb):
                    leader = m
                    break
            time.sleep(0.2)
        if leader is None:
            raise SystemExit("ha_bench: no broker serves after 30 s")
        bench = [os.path.join(build, "tools", "ttbench"), "--broker-clients", leader["clients"],
                 "--broker-workers", leader["workers"], "--hosts", str(args.hosts),
                 "--producers", str(args.producers), "--seconds", str(args.seconds),
                 "--mix", "create", "--relay-seconds", "0", "--idle-seconds", "0", "--json"]
        before = [cpu_s(p.pid) for p in procs]
        out = subprocess.run(bench, capture_output=True, text=True, timeout=600)
        after = [cpu_s(p.pid) for p in procs]
        if out.returncode != 0:
            raise SystemExit("ha_bench: ttbench failed:\n" + out.stderr[-2000:])
        r = json.loads(out.stdout)
        creates = r["ops"]["create"]["ok"]
        li = members.index(leader)
        spent = [a - b for a, b in zip(after, before)]
        return {
            "brokers": n,
            "creates_per_s": r["creates_per_s"],
            "create_errors": r["ops"]["create"]["errors"],
            "p50_ms": r["ops"]["create"]["p50_ms"],
            "p99_ms": r["ops"]["create"]["p99_ms"],
            # the CPU of the whole ttbench run (hosts joining included), per create
            "leader_cpu_us_per_create": spent[li] * 1e6 / creates if creates else 0,
            "all_cpu_us_per_create": sum(spent) * 1e6 / creates if creates else 0,
        }
    finally:
        for p in procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(root, True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--producers", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    build = os.path.abspath(args.build)
    sys.path.insert(0, os.path.join(build, "schema"))
    sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
    import harness
    pb = harness.pb2()
    results = [run(build, pb, 1, args), run(build, pb, 3, args)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print("brokers  creates/s  errors  p50 ms  p99 ms  leader CPU us/create  all CPU us/create")
    for r in results:
        print("%7d  %9.0f  %6d  %6.1f  %6.1f  %20.0f  %17.0f" % (
            r["brokers"], r["creates_per_s"], r["create_errors"], r["p50_ms"], r["p99_ms"],
            r["leader_cpu_us_per_create"], r["all_cpu_us_per_create"]))
    print("3 brokers / 1 broker: %.0f %% of the creates/s"
          % (100.0 * results[1]["creates_per_s"] / max(results[0]["creates_per_s"], 1e-9)))


if __name__ == "__main__":
    main()
