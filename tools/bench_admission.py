#!/usr/bin/env python3
"""Admission through a real broker: with N creates queued (default 10,000),
the p50/p99 of `env show` of a queued env (the deepest one) and of admitting
one request when capacity frees (env delete sent -> env.admitted event on
the PUB socket), measured on a real ttbroker and a hollow ttworker.

    python3 tools/bench_admission.py [--queued N] [--rounds R] [--shows S]

Uses tests/integration/harness.py (free loopback ports, a temporary
directory, every process cleaned up). Prints one line per measure.
"""

import argparse
import os
import sys
import time
import uuid

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import harness  # noqa: E402

MDP = b"MDPC01"


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100.0))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--queued", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--shows", type=int, default=2000)
    a = ap.parse_args()
    pb = harness.pb2()
    fillers = a.rounds
    pool = harness.Pool(hosts={"h1": {"cpu": fillers, "mem": 1 << 20, "disk": 1 << 30}}).start()
    try:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(pool.clients_ep)
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"env.admitted")
        sub.connect(pool.events_ep)

        def req(tenant, fill):
            r = pb.Request()
            r.request_id = uuid.uuid4().hex[:16]
            r.tenant = tenant
            fill(r)
            return r.SerializeToString()

        def call(body, timeout=10000):
            sock.send_multipart([b"", MDP, b"tt.env", body])
            if not sock.poll(timeout):
                raise SystemExit("no reply")
            rep = pb.Reply()
            rep.ParseFromString(sock.recv_multipart()[3])
            return rep

        def create(r, name, queue):
            r.env_create.name = name
            im = r.env_create.images.add()
            im.image = "sleeper"
            r.env_create.engine = "hollow"
            r.env_create.cpu, r.env_create.mem_mib, r.env_create.disk_mib = 1, 16, 16
            r.env_create.queue = queue

        for i in range(fillers):
            rep = call(req("fill", lambda r: create(r, "f%d" % i, False)))
            assert rep.status == pb.OK, rep
        # queue N creates from N/1000 tenants, pipelined
        t0 = time.time()
        sent = 0
        got = 0
        tenants = max(1, (a.queued + 999) // 1000)
        while got < a.queued:
            while sent < a.queued and sent - got < 500:
                name, tenant = "q%d" % sent, "t%d" % (sent % tenants)
                body = req(tenant, lambda r: create(r, name, True))
                sock.send_multipart([b"", MDP, b"tt.env", body])
                sent += 1
            if not sock.poll(10000):
                raise SystemExit("no reply while queueing")
            rep = pb.Reply()
            rep.ParseFromString(sock.recv_multipart()[3])
            assert rep.status == pb.QUEUED, rep
            got += 1
        print("queued %d creates in %.2f s" % (a.queued, time.time() - t0))
        last = "q%d" % (a.queued - 1)
        lt = "t%d" % ((a.queued - 1) % tenants)
        lat = []
        for _ in range(a.shows):
            body = req(lt, lambda r: setattr(r.env_show, "name", last))
            t = time.perf_counter()
            rep = call(body)
            lat.append(time.perf_counter() - t)
            assert rep.status == pb.OK and rep.env.state == "queued", rep
        print("env show of a queued env (position %d of %d): p50 %.3f ms, p99 %.3f ms"
              % (rep.env.queue_position, a.queued, pct(lat, 50) * 1e3, pct(lat, 99) * 1e3))
        adm = []
        time.sleep(1.5)
        while sub.poll(0):
            sub.recv_multipart()
        for i in range(a.rounds):
            body = req("fill", lambda r: setattr(r.env_delete, "name", "f%d" % i))
            t = time.perf_counter()
            rep = call(body)
            assert rep.status == pb.OK, rep
            if not sub.poll(10000):
                raise SystemExit("no env.admitted after a delete")
            sub.recv_multipart()
            adm.append(time.perf_counter() - t)
        print("admit one when capacity frees (delete -> env.admitted), %d rounds: p50 %.3f ms, "
              "p99 %.3f ms" % (a.rounds, pct(adm, 50) * 1e3, pct(adm, 99) * 1e3))
    finally:
        pool.close()


if __name__ == "__main__":
    main()
