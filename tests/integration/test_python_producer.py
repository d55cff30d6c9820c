"""The Python example producer (client/examples/producer.py) against a real
pool: proof that a Majordomo client plus schema/ttfleet.proto is enough."""

import os
import subprocess
import sys
import unittest

import harness

PRODUCER = os.path.join(harness.SOURCE, "client", "examples", "producer.py")


class PythonProducer(unittest.TestCase):
    pool = None

    @classmethod
    def setUpClass(cls):
        harness.watchdog(100)
        cls.pool = harness.Pool().start()

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        harness.watchdog(0)

    def run_producer(self, *args, broker=None):
        env = dict(os.environ, PYTHONPATH=harness.ttfleet_package())
        argv = [sys.executable, PRODUCER, "--broker", broker or self.pool.clients_ep] + [
            str(a) for a in args]
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)

    def test_create_show_delete(self):
        p = self.run_producer("--tenant", "py", "--image", "sleeper", "--name", "py-example",
                              "--dup", 2)
        self.assertEqual(p.returncode, 0, "%s\n%s\n%s" % (p.stdout, p.stderr, self.pool.logs()))
        self.assertIn("created:", p.stdout)
        self.assertIn("shown:", p.stdout)
        self.assertIn("deleted env py-example", p.stdout)
        self.assertRegex(p.stdout, r"vm \d+ on h1: image sleeper, engine process, ip 10\.10\.")
        self.assertIn("22->", p.stdout)
        # It cleaned up after itself.
        r = self.pool.ctl("env", "show", "py-example", tenant="py")
        self.assertEqual(r.rc, harness.EXIT_STATUS, repr(r))
        self.assertIn("NOT_FOUND", r.err)

    def test_broker_error(self):
        r = self.pool.ctl("env", "create", "taken", "--image", "sleeper", "--cpu", 1, "--mem",
                          64, "--disk", 64, tenant="py")
        self.assertEqual(r.rc, 0, repr(r))
        self.addCleanup(self.pool.ctl, "env", "delete", "taken", tenant="py")
        p = self.run_producer("--tenant", "py", "--name", "taken")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("ALREADY_EXISTS", p.stderr)
        p = self.run_producer("--tenant", "py", "--name", "py-noimg", "--image", "no-such")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("UNAVAILABLE", p.stderr)

    def test_req_socket(self):
        """A plain REQ socket works too: it adds the empty frame itself."""
        import zmq
        pb = harness.pb2()
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.pool.clients_ep)
        try:
            req = pb.Request(request_id="req-socket-1", tenant="py")
            req.env_list.SetInParent()
            sock.send_multipart([b"MDPC01", b"tt.env", req.SerializeToString()])
            self.assertTrue(sock.poll(10000), "no reply to a REQ client")
            frames = sock.recv_multipart()
            self.assertEqual(frames[:2], [b"MDPC01", b"tt.env"])
            reply = pb.Reply()
            reply.ParseFromString(frames[2])
            self.assertEqual((reply.request_id, reply.status), ("req-socket-1", pb.OK))
            sock.send_multipart([b"MDPC01", b"mmi.service", b"tt.admin"])
            self.assertTrue(sock.poll(10000))
            self.assertEqual(sock.recv_multipart(), [b"MDPC01", b"mmi.service", b"200"])
        finally:
            sock.close(linger=0)

    def test_no_broker(self):
        dead = "tcp://127.0.0.1:%d" % harness.free_port()
        p = self.run_producer("--timeout", 100, broker=dead)
        self.assertEqual(p.returncode, 3, p.stdout + p.stderr)
        self.assertIn("no reply from " + dead, p.stderr)


if __name__ == "__main__":
    unittest.main()
