"""Tenant-private events and the audit key under CURVE, end to end.

A CURVE pool (test_security.CurvePool) whose broker serves the private
stream (--events-private). Bob holds a valid user key and subscribes to
everything, raw, on both event endpoints: he gets none of Alice's events
(the PUB refuses his key at the handshake; the ROUTER stream filters by the
key's tenant), while Alice's own `ttctl watch --private` sees her env's
events. The audit row of Alice's create carries her public key.
"""

import subprocess
import time
import unittest

import zmq
import zmq.auth

import harness
from test_security import CurvePool


class PrivateEvents(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(150)
        cls.private_ep = "tcp://127.0.0.1:%d" % harness.free_port()
        cls.pool = CurvePool(broker_args=["--events-private", cls.private_ep]).start()

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        harness.watchdog(0)

    def curve(self, sock, key):
        pub, sec = zmq.auth.load_certificate(self.pool.key(key) + "_secret")
        server, _ = zmq.auth.load_certificate(self.pool.broker_cert)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server

    def test_bob_sees_none_of_alice(self):
        ctx = zmq.Context.instance()
        pb = harness.pb2()
        # bob: raw SUB on the PUB endpoint, subscribed to everything
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        self.curve(sub, "bob")
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(self.pool.events_ep)
        # bob: raw DEALER on the private stream, every topic
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        self.curve(dealer, "bob")
        dealer.connect(self.private_ep)
        es = pb.EventSubscribe()
        es.tenant = "alice"  # a lie: ignored under CURVE
        dealer.send_multipart([b"TTE01", b"\x01", es.SerializeToString()])
        self.assertTrue(dealer.poll(5000), "no SUBSCRIBED")
        frames = dealer.recv_multipart()
        self.assertEqual(frames[1], b"\x02", frames)
        ack = pb.EventSubscribed()
        ack.ParseFromString(frames[2])
        self.assertEqual(ack.tenant, "bob")
        self.assertFalse(ack.admin)
        # alice watches her own events through the private stream
        watch = subprocess.Popen(
            [harness.binary("ttctl"), "--json", "watch", "--private", "--events", self.private_ep,
             "--count", "1", "--topic", "env.created", "--timeout", "30000"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(__import__("os").environ, TTFLEET_KEY=self.pool.key("alice"),
                     TTFLEET_BROKER_KEY=self.pool.broker_cert, TTFLEET_CONFIG="/dev/null"))
        try:
            time.sleep(1.0)  # let the watcher subscribe (it reports nothing until then)
            r = self.pool.ctl("env", "create", "secret-env", "--image", "sleeper", "--engine",
                              "hollow", "--cpu", "1", "--mem", "64", "--disk", "64",
                              tenant="alice")
            self.assertEqual(r.rc, 0, repr(r))
            out, err = watch.communicate(timeout=40)
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
        self.assertEqual(watch.returncode, 0, err)
        self.assertIn("secret-env", out)
        # bob: nothing of alice on either socket (heartbeats only on the stream)
        deadline = time.time() + 3
        while time.time() < deadline:
            if sub.poll(100):
                self.fail("bob's SUB received %r" % sub.recv_multipart())
            while dealer.poll(0):
                f = dealer.recv_multipart()
                if f[1] == b"\x03":
                    ev = pb.Event()
                    ev.ParseFromString(f[3])
                    self.assertNotEqual(ev.tenant, "alice", ev)
                    self.assertNotIn(b"secret-env", f[3])
        # the audit row of the create names alice and her key
        r = self.pool.ctl("audit", "--json", "--tenant", "alice", tenant="admin")
        self.assertEqual(r.rc, 0, repr(r))
        rows = [x for x in r.data["audit"] if x["target"] == "secret-env"]
        self.assertTrue(rows, r.data)
        with open(self.pool.key("alice")) as f:
            pub = f.read()
        self.assertTrue(rows[0]["key"] and rows[0]["key"] in pub, rows)
        self.assertEqual(rows[0]["role"], "user")
        # every tenant's events are for an admin only, also on the private stream
        r = subprocess.run(
            [harness.binary("ttctl"), "watch", "--private", "--all-tenants", "--events",
             self.private_ep, "--timeout", "5000"], capture_output=True, text=True, timeout=30,
            env=dict(__import__("os").environ, TTFLEET_KEY=self.pool.key("alice"),
                     TTFLEET_BROKER_KEY=self.pool.broker_cert, TTFLEET_CONFIG="/dev/null"))
        self.assertEqual(r.returncode, 1, r)
        self.assertIn("--all-tenants needs the admin role", r.stderr)
        sub.close()
        dealer.close()


if __name__ == "__main__":
    unittest.main()
