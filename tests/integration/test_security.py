"""Security end to end: CURVE keys made by `ttctl keygen`, tenant isolation,
roles, the loopback rule, and hostile input over the real socket.

Curve shares one pool whose broker runs with --curve-secret, --client-keys
and --worker-keys, and one worker "h1" whose key is bound to host h1. Client
keys are bound by the operator: admin through `ttbroker --admin-key` (tenant
ops), alice and bob by `ttctl key add` right after the broker starts; their
public files also lie in --client-keys, as an old deployment left them,
where they are not bindings. Keys (all in the pool's temporary directory,
secrets never in the broker's key directories):

    alice, bob   role user, tenants alice and bob (bound)
    admin        role admin, tenant ops (bound with --admin-key)
    stranger     role user, tenant alice (NOT bound)
    h1, hA       workers bound to hosts h1 and hA (installed)
    rogue        a worker key (NOT installed)

ttctl gets its keys through TTFLEET_KEY / TTFLEET_BROKER_KEY here, and
through --key / --broker-key and a config file in test_key_sources.
Loopback covers the plain-TCP rules with brokers of its own. Every wait is
bounded; every process is one the test started.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import unittest

import zmq
import zmq.auth

import harness
import test_env_lifecycle as lifecycle
from harness import EXIT_OK, EXIT_STATUS, EXIT_TRANSPORT, EXIT_USAGE

SMALL = ["--cpu", "1", "--mem", "64", "--disk", "64"]
MDP = b"MDPC01"


def keygen(path, *args):
    r = subprocess.run([harness.binary("ttctl"), "keygen", "--out", path] + list(args),
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("ttctl keygen %s failed: %s%s" % (args, r.stdout, r.stderr))
    return path


class CurvePool(harness.Pool):
    """A pool whose broker and workers talk CURVE. ctl() uses the key
    named key=, else the one named like tenant= (alice, bob, admin), else
    "admin"; key=False sends no key at all (plain TCP)."""

    def __init__(self, hosts=None, **kw):
        super().__init__(hosts=hosts, **kw)
        self.keys = os.path.join(self.dir, "keys")
        self.client_keys = os.path.join(self.dir, "client-keys")
        self.worker_keys = os.path.join(self.dir, "worker-keys")
        for d in (self.keys, self.client_keys, self.worker_keys):
            os.makedirs(d)
        self.broker_cert = keygen(self.key("broker"), "--role", "broker")
        for name, role, tenant, installed in (("alice", "user", "alice", True),
                                              ("bob", "user", "bob", True),
                                              ("admin", "admin", "ops", True),
                                              ("gateway", "gateway", "gw", True),
                                              ("stranger", "user", "alice", False)):
            keygen(self.key(name), "--role", role, "--tenant", tenant)
            if installed:
                shutil.copy(self.key(name), self.client_keys)
        # a second copy of one key (a backup left in place) must not take
        # the broker down; it is skipped with a warning
        shutil.copy(self.key("alice"), os.path.join(self.client_keys, "alice.bak"))
        for name, installed in (("h1", True), ("hA", True), ("rogue", False)):
            args = ["--role", "worker"] + (["--host", name] if name != "rogue" else [])
            keygen(self.key(name), *args)
            if installed:
                shutil.copy(self.key(name), self.worker_keys)
        self.broker_args += ["--curve-secret", self.broker_cert, "--client-keys",
                             self.client_keys, "--worker-keys", self.worker_keys,
                             "--admin-key", self.key("admin"), "--admin-tenant", "ops"]
        for host, spec in self.hosts.items():
            spec.setdefault("args", [])
            spec["args"] += self.worker_curve_args(spec.get("key", host))

    def start(self, wait=True):
        super().start(wait=wait)
        for name in ("alice", "bob"):
            self.bind(name, name, "user")
        self.bind("gateway", "gw", "gateway")
        return self

    def bind(self, name, tenant, role, by="admin"):
        """The operator binds key `name` (an admin runs ttctl key add)."""
        r = self.ctl("key", "add", self.key(name), "--tenant", tenant, "--role", role, key=by)
        if r.rc != 0:
            raise AssertionError("key add %s: %r" % (name, r))
        return r

    def public(self, name):
        return zmq.auth.load_certificate(self.key(name))[0].decode()

    def key(self, name):
        return os.path.join(self.keys, name)

    def worker_curve_args(self, key):
        return ["--curve-secret", self.key(key), "--broker-key", self.broker_cert]

    def ctl(self, *args, key=None, tenant=None, env=None, **kw):
        run_env = dict(env or {})
        if key is not False:
            run_env.update(TTFLEET_KEY=self.key(key or tenant or "admin"),
                           TTFLEET_BROKER_KEY=self.broker_cert)
        return super().ctl(*args, tenant=tenant, env=run_env, **kw)

    def raw(self, key="alice", curve=True):
        """A DEALER socket on the clients endpoint, CURVE with key or plain."""
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        if curve:
            pub, sec = zmq.auth.load_certificate(self.key(key) + "_secret")
            server, _ = zmq.auth.load_certificate(self.broker_cert)
            sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server
        sock.connect(self.clients_ep)
        return sock


def recv_reply(sock, timeout_ms=5000):
    """The Reply of one answer on sock, or None if none came in time."""
    if not sock.poll(timeout_ms):
        return None
    frames = sock.recv_multipart()
    assert len(frames) == 4 and frames[0] == b"" and frames[1] == MDP, frames
    reply = harness.pb2().Reply()
    reply.ParseFromString(frames[3])
    return reply


class Curve(lifecycle.PoolTest):
    """PoolTest's helpers (ok, fails, create) on a CURVE pool: their tenant=
    picks the key of that name."""
    budget = 230

    @classmethod
    def setUpClass(cls):
        harness.watchdog(cls.budget)
        cls.pool = CurvePool(min_stop_interval=0).start()

    def status(self, r):
        """The status name of a failed ttctl run ("NOT_FOUND"...)."""
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertTrue(r.err.startswith("ttctl: "), repr(r))
        return r.err.split(":")[1].strip()

    def wait_log(self, daemon, text, timeout=15):
        harness.wait_for("%r in the %s log" % (text, daemon.name),
                         lambda: text in daemon.log(), timeout=timeout)

    # ---- who may connect ----

    def test_known_keys_work(self):
        self.ok("mmi", "tt.env", key="alice")
        hosts = self.ok("host", "list", key="admin")["hosts"]
        self.assertEqual([h["id"] for h in hosts if h["state"] == "online"], ["h1"])

    def test_duplicate_key_file_tolerated(self):
        self.ok("mmi", "tt.env", key="alice")
        self.wait_log(self.pool.broker, "repeats a key")

    def test_unknown_client_key_refused(self):
        t0 = time.monotonic()
        r = self.ctl("env", "list", key="stranger", timeout_ms=700)
        self.assertEqual(r.rc, EXIT_TRANSPORT, repr(r))
        self.assertIn("no reply", r.err)
        self.assertLess(time.monotonic() - t0, 15)
        self.wait_log(self.pool.broker, "clients CURVE from 127.0.0.1: 400 unknown key")
        # a raw socket with the same key: silence, no Reply
        sock = self.pool.raw("stranger")
        try:
            req = harness.pb2().Request(request_id="r1")
            req.env_list.SetInParent()
            sock.send_multipart([b"", MDP, b"tt.env", req.SerializeToString()])
            self.assertIsNone(recv_reply(sock, 1500))
        finally:
            sock.close(0)

    def test_plain_client_refused(self):
        r = self.ctl("env", "list", key=False, tenant="alice", timeout_ms=700)
        self.assertEqual(r.rc, EXIT_TRANSPORT, repr(r))
        sock = self.pool.raw(curve=False)
        try:
            sock.send_multipart([b"", MDP, b"mmi.service", b"tt.env"])
            self.assertIsNone(recv_reply(sock, 1500))
        finally:
            sock.close(0)
        self.ok("mmi", "tt.env", key="alice")  # and the broker still serves

    def test_unknown_worker_key_refused(self):
        pool = self.pool
        pool.hosts["rogue"] = {"args": pool.worker_curve_args("rogue")}
        pool.start_worker("rogue")
        self.addCleanup(pool.stop_worker, "rogue")
        self.wait_log(pool.broker, "workers CURVE from 127.0.0.1: 400 unknown key")
        time.sleep(1.5)  # a few heartbeat intervals
        ids = [h["id"] for h in self.ok("host", "list")["hosts"]]
        self.assertNotIn("rogue", ids)

    def test_worker_key_bound_to_its_host(self):
        pool = self.pool
        # hA's key is installed but bound to host hA: it cannot be hB
        pool.hosts["hB"] = {"args": pool.worker_curve_args("hA")}
        pool.start_worker("hB")
        self.addCleanup(pool.stop_worker, "hB")
        self.wait_log(pool.broker, "worker key is not allowed to act as host 'hB'")
        time.sleep(1.5)
        ids = [h["id"] for h in self.ok("host", "list")["hosts"]]
        self.assertNotIn("hB", ids)
        self.assertNotIn("hA", ids)

    def test_worker_key_with_bad_host_refused(self):
        """A worker cert whose host metadata is not a valid name is refused,
        not taken as "any host"; and a key added at run time is seen."""
        pool = self.pool
        keygen(pool.key("badhost"), "--role", "worker", "--host", "placeholder")
        with open(pool.key("badhost")) as f:
            text = f.read().replace('host = "placeholder"', 'host = "../h1"')
        with open(os.path.join(pool.worker_keys, "badhost"), "w") as f:
            f.write(text)
        pool.hosts["hC"] = {"args": pool.worker_curve_args("badhost")}
        pool.start_worker("hC")
        self.addCleanup(pool.stop_worker, "hC")
        self.wait_log(pool.broker, "400 worker cert has an invalid host metadata")
        ids = [h["id"] for h in self.ok("host", "list")["hosts"]]
        self.assertNotIn("hC", ids)

    # ---- tenants ----

    def test_tenant_isolation(self):
        self.create("iso-a", tenant="alice")
        self.assertEqual(self.ok("env", "show", "iso-a", key="alice")["tenant"], "alice")
        # bob sees none of it, and cannot tell it from a missing env
        names = [e["name"] for e in self.ok("env", "list", key="bob")["envs"]]
        self.assertNotIn("iso-a", names)
        ops = [("env", "show"), ("env", "stop"), ("env", "start"), ("env", "pause"),
               ("env", "resume"), ("env", "delete"), ("env", "extend", 900),
               ("env", "update", "--deny-outgoing"), ("env", "rm-vm", "--image", "sle")]
        for op in ops:
            cmd = list(op[:2]) + ["iso-a"] + list(op[2:])
            missing = list(op[:2]) + ["iso-none"] + list(op[2:])
            got, want = self.ctl(*cmd, key="bob"), self.ctl(*missing, key="bob")
            self.assertEqual(self.status(got), "NOT_FOUND", repr(got))
            self.assertEqual(got.rc, want.rc)
            self.assertEqual(got.err.replace("iso-a", "X"), want.err.replace("iso-none", "X"),
                             "%r\n%r" % (got, want))
            self.assertEqual(got.out, want.out)
        # a body tenant does not help: bob's key with --tenant alice is still bob
        r = self.pool.ctl("env", "show", "iso-a", key="bob", env={"TTFLEET_TENANT": "alice"})
        self.assertEqual(self.status(r), "NOT_FOUND", repr(r))
        # alice's env is untouched
        env = self.ok("env", "show", "iso-a", key="alice")
        self.assertEqual(env["state"], "running")
        self.assertEqual(env["lifetime"], 600)

    def test_tenant_comes_from_key(self):
        # the body says bob; the key says alice, and the key wins
        pool = self.pool
        argv_env = {"TTFLEET_TENANT": "bob"}
        r = pool.ctl("env", "create", "from-key", "--image", "sleeper", *SMALL, "--lifetime",
                     600, key="alice", env=argv_env)
        self.assertEqual(r.rc, EXIT_OK, repr(r))
        self.addCleanup(self.ctl, "env", "delete", "from-key", key="alice")
        self.assertEqual(r.data["tenant"], "alice")
        self.assertEqual(self.status(self.ctl("env", "show", "from-key", key="bob")),
                         "NOT_FOUND")

    def test_gateway_on_behalf(self):
        """docs/GATEWAY.md: only a gateway key takes the tenant from the
        body, and the admin role only with on_behalf_admin; an ordinary key
        that sets either still acts as its own tenant and role."""
        pb = harness.pb2()
        self.create("gw-a", tenant="alice")
        self.addCleanup(self.ctl, "env", "delete", "gw-a", key="alice")
        gw = self.pool.raw("gateway")
        bob = self.pool.raw("bob")
        self.addCleanup(gw.close, 0)
        self.addCleanup(bob.close, 0)

        def ask(sock, tenant, op, admin=False, service=b"tt.env"):
            req = pb.Request(request_id="gw-%d" % time.monotonic_ns(), tenant=tenant,
                             on_behalf_admin=admin)
            if op == "show":
                req.env_show.name = "gw-a"
            else:
                req.host_list.SetInParent()
            sock.send_multipart([b"", MDP, service, req.SerializeToString()])
            reply = recv_reply(sock)
            self.assertIsNotNone(reply, "no reply\n" + self.pool.logs())
            return reply

        # the gateway acts for alice and sees her env; for bob it does not
        r = ask(gw, "alice", "show")
        self.assertEqual(r.status, pb.OK, r)
        self.assertEqual(r.env.tenant, "alice")
        self.assertEqual(ask(gw, "bob", "show").status, pb.NOT_FOUND)
        # an empty tenant from a gateway key is refused
        self.assertEqual(ask(gw, "", "show").status, pb.BAD_REQUEST)
        # admin only when it asks
        self.assertEqual(ask(gw, "alice", "hosts", service=b"tt.admin").status, pb.FORBIDDEN)
        self.assertEqual(ask(gw, "alice", "hosts", admin=True, service=b"tt.admin").status,
                         pb.OK)
        # an ordinary key cannot claim another tenant, nor the admin role
        self.assertEqual(ask(bob, "alice", "show").status, pb.NOT_FOUND)
        self.assertEqual(ask(bob, "alice", "hosts", admin=True, service=b"tt.admin").status,
                         pb.FORBIDDEN)

    def test_roles(self):
        self.create("role-a", tenant="alice")
        for args in (("host", "list"), ("host", "show", "h1"), ("env", "list", "--all"),
                     ("host", "drain", "h1"), ("host", "remove", "h1")):
            r = self.ctl(*args, key="alice")
            self.assertEqual(self.status(r), "FORBIDDEN", repr(r))
        # whatever service the request is sent to
        pb = harness.pb2()
        sock = self.pool.raw("alice")
        self.addCleanup(sock.close, 0)
        for service in (b"tt.env", b"tt.admin"):
            req = pb.Request(request_id="role-svc-%s" % service.decode())
            req.host_list.SetInParent()
            sock.send_multipart([b"", MDP, service, req.SerializeToString()])
            reply = recv_reply(sock)
            self.assertIsNotNone(reply, "no reply on %s\n%s" % (service, self.pool.logs()))
            self.assertEqual(reply.status, pb.FORBIDDEN, (service, reply))
        r = self.ctl("env", "create", "role-long", "--image", "sleeper", *SMALL, "--lifetime",
                     6 * 3600 + 1, key="alice")
        self.assertEqual(self.status(r), "FORBIDDEN", repr(r))
        r = self.ctl("env", "extend", "role-a", 6 * 3600 + 1, key="alice")
        self.assertEqual(self.status(r), "FORBIDDEN", repr(r))
        # the admin key may
        self.assertIn("h1", [h["id"] for h in self.ok("host", "list", key="admin")["hosts"]])
        self.ok("host", "show", "h1", key="admin")
        envs = self.ok("env", "list", "--all", key="admin")["envs"]
        self.assertIn(("alice", "role-a"), [(e["tenant"], e["name"]) for e in envs])
        env = self.create("role-long", "--lifetime", 6 * 3600 + 1, tenant="admin")
        self.assertEqual(env["tenant"], "ops")

    # ---- key sources ----

    def test_key_sources(self):
        pool = self.pool
        base = [harness.binary("ttctl"), "--broker", pool.clients_ep, "--timeout", "3000",
                "--json"]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TTFLEET_")}

        def run(args, **env):
            return subprocess.run(base + args, capture_output=True, text=True, timeout=60,
                                  env=dict(clean, **env))
        # flags
        r = run(["--key", pool.key("alice"), "--broker-key", pool.broker_cert, "mmi", "tt.env"])
        self.assertEqual(r.returncode, 0, r.stderr)
        # config file (relative key paths are relative to it); flags override it
        conf = os.path.join(pool.keys, "ttctl.conf")
        with open(conf, "w") as f:
            f.write("# test\nbroker = %s\nkey = alice\nbroker_key = \"broker\"\n\n"
                    % pool.clients_ep)
        r = run(["env", "list"], TTFLEET_CONFIG=conf)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = run(["--key", pool.key("stranger"), "--timeout", "500", "env", "list"],
                TTFLEET_CONFIG=conf)
        self.assertEqual(r.returncode, EXIT_TRANSPORT, r.stderr)
        # env vars override the config file
        r = run(["--timeout", "500", "env", "list"], TTFLEET_CONFIG=conf,
                TTFLEET_KEY=pool.key("stranger"))
        self.assertEqual(r.returncode, EXIT_TRANSPORT, r.stderr)
        # strict parsing (zconfig), with the file; zconfig names the line of
        # a syntax error
        for text, what in (("broker tcp://x:1\n", ": not a valid config file"),
                           ("key = a\nkey = b\n", ": key given twice"),
                           ("colour = blue\n", ": unknown name 'colour'"),
                           ("tenant = ../x\n", ": invalid tenant"),
                           ("key =\n", ": key has an empty value"),
                           ("key\n    nested = 1\n", ": key: a value, not a section")):
            with open(conf, "w") as f:
                f.write(text)
            r = run(["env", "list"], TTFLEET_CONFIG=conf)
            self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
            self.assertIn(conf + what, r.stderr)
            if what.startswith(": not a valid"):
                self.assertIn("(1) invalid syntax", r.stderr)
        r = run(["env", "list"], TTFLEET_CONFIG=os.path.join(pool.keys, "nope.conf"))
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn("No such file", r.stderr)
        # missing key files and half a key pair are usage errors, said plainly
        r = run(["--key", pool.key("nope"), "--broker-key", pool.broker_cert, "env", "list"])
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn("client certificate %s: No such file" % pool.key("nope"), r.stderr)
        r = run(["--key", pool.key("alice"), "env", "list"])
        self.assertEqual(r.returncode, EXIT_USAGE, r.stderr)
        self.assertIn("--broker-key", r.stderr)

    def test_keygen(self):
        d = os.path.join(self.pool.dir, "kg")
        os.makedirs(d)
        path = keygen(os.path.join(d, "k"), "--role", "worker", "--host", "h9")
        self.assertEqual(os.stat(path + "_secret").st_mode & 0o777, 0o600)
        with open(path) as f:
            public = f.read()
        self.assertIn('host = "h9"', public)
        self.assertNotIn("secret-key", public)
        with open(path + "_secret") as f:
            before = f.read()
        r = subprocess.run([harness.binary("ttctl"), "keygen", "--out", path, "--role",
                            "broker"], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, EXIT_STATUS, r.stderr)
        self.assertIn("File exists", r.stderr)
        with open(path + "_secret") as f:
            self.assertEqual(f.read(), before)
        for args in (["--role", "user"], ["--role", "root", "--tenant", "t"],
                     ["--role", "broker", "--tenant", "t"], ["--role", "user", "--tenant", "a/b"]):
            r = subprocess.run([harness.binary("ttctl"), "keygen", "--out",
                                os.path.join(d, "x")] + args,
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, EXIT_USAGE, "%s: %s" % (args, r.stderr))
            self.assertFalse(os.path.exists(os.path.join(d, "x")))

    # ---- hostile input over the real socket ----

    def test_hostile_input(self):
        pb = harness.pb2()
        sock = self.pool.raw("alice")
        self.addCleanup(sock.close, 0)

        def ask(body, service=b"tt.env", extra=()):
            sock.send_multipart([b"", MDP, service, body] + list(extra))
            reply = recv_reply(sock)
            self.assertIsNotNone(reply, "no reply\n" + self.pool.logs())
            return reply

        def request():
            return pb.Request(request_id="hostile-%d" % time.monotonic_ns())

        # a body over 256 KiB (but under the socket's hard limit)
        r = ask(b"\x0a" + b"x" * (256 * 1024 + 100))
        self.assertEqual(r.status, pb.TOO_LARGE, r)
        # too many frames
        r = ask(b"", extra=[b"x"] * 8)
        self.assertIn(r.status, (pb.BAD_REQUEST, pb.TOO_LARGE), r)
        # garbage that is not a Request
        for junk in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x12\x05ab"):
            r = ask(junk)
            self.assertEqual(r.status, pb.BAD_REQUEST, (junk, r))

        def create(name, images, ports=()):
            req = request()
            req.env_create.name = name
            for image, dup in images:
                req.env_create.images.add(image=image, dup=dup)
            req.env_create.ports.extend(ports)
            req.env_create.cpu, req.env_create.mem_mib, req.env_create.disk_mib = 1, 64, 64
            return ask(req.SerializeToString())

        r = create("h-501", [("sleeper", 501)])
        self.assertEqual(r.status, pb.BAD_REQUEST, r)
        self.assertIn("500", r.message)
        r = create("h-501b", [("sleeper", 250), ("bravo-sleeper", 251)])
        self.assertEqual(r.status, pb.BAD_REQUEST, r)
        r = create("h-33", [("sleeper", 1)], ports=range(1000, 1033))
        self.assertEqual(r.status, pb.BAD_REQUEST, r)
        for image in ("../sleeper", "a/b", "..", "/bin/sh", ".hidden", "x" * 65, "sl eeper"):
            r = create("h-img", [(image, 1)])
            self.assertEqual(r.status, pb.BAD_REQUEST, (image, r))
        for name in ("", "..", "a/b", "x" * 65, "-\n"):
            r = create(name, [("sleeper", 1)])
            self.assertEqual(r.status, pb.BAD_REQUEST, (name, r))
        # an enum value the schema does not have
        # (by hand: EnvUpdate field 7 = 7, as Request field 19)
        upd = pb.EnvUpdate(name="h-none").SerializeToString() + b"\x38\x07"
        body = request().SerializeToString() + b"\x9a\x01" + bytes([len(upd)]) + upd
        r = ask(body)
        self.assertEqual(r.status, pb.BAD_REQUEST, r)
        # out-of-range numbers
        req = request()
        req.env_create.name = "h-cpu"
        req.env_create.images.add(image="sleeper", dup=1)
        req.env_create.cpu = 100000
        self.assertEqual(ask(req.SerializeToString()).status, pb.BAD_REQUEST)
        # unknown fields are skipped, not fatal
        req = request()
        req.env_list.SetInParent()
        r = ask(req.SerializeToString() + b"\xf8\x3f\x01")  # field 1023 = 1
        self.assertEqual(r.status, pb.OK, r)
        # unknown service, bad header: an error, never a crash
        r = ask(b"", service=b"tt.nope")
        self.assertEqual(r.status, pb.UNKNOWN_SERVICE, r)
        # nothing was made, and the broker still serves
        self.assertFalse([e for e in self.ok("env", "list", "--all")["envs"]
                          if e["name"].startswith("h-")])
        self.ok("mmi", "tt.env", key="bob")
        self.assertTrue(self.pool.broker.running())

class Keys(lifecycle.PoolTest):
    """Keys bound by the operator (broker/auth/keys.c): what a key's owner writes
    in its cert counts for nothing; key add/list/rm are admin only; a removal
    cuts the key's live connection (requests and events); key directories
    notice in-place edits. Its own pool, since it removes keys."""
    budget = 230

    @classmethod
    def setUpClass(cls):
        harness.watchdog(cls.budget)
        cls.pool = CurvePool(min_stop_interval=0).start()

    def status(self, r):
        self.assertEqual(r.rc, EXIT_STATUS, repr(r))
        self.assertTrue(r.err.startswith("ttctl: "), repr(r))
        return r.err.split(":")[1].strip()

    def admin_ask(self, req, service=b"tt.admin", key="admin"):
        sock = self.pool.raw(key)
        try:
            sock.send_multipart([b"", MDP, service, req.SerializeToString()])
            r = recv_reply(sock)
            self.assertIsNotNone(r, "no reply")
            return r
        finally:
            sock.close(0)

    def test_self_declared_admin_is_not_admin(self):
        pool = self.pool
        # a user makes a key that says admin of tenant ops and the operator
        # drops its file in --client-keys, as the old docs said
        keygen(pool.key("mallory"), "--role", "admin", "--tenant", "ops")
        shutil.copy(pool.key("mallory"), pool.client_keys)
        r = self.ctl("host", "list", key="mallory", timeout_ms=700)
        self.assertEqual(r.rc, EXIT_TRANSPORT, repr(r))  # refused at the handshake
        harness.wait_for("the ignored-metadata warning", lambda: "mallory: the tenant/role "
                         "written in a client cert are ignored" in pool.broker.log(), timeout=15)
        # bound by the operator as a user of tenant mallory: that is what it is
        r = pool.bind("mallory", "mallory", "user")
        self.assertIn("are ignored", r.err)
        self.assertEqual(r.data["keys"][0]["role"], "user")
        self.assertEqual(r.data["keys"][0]["added_by"], "admin:ops")
        for args in (("host", "list"), ("env", "list", "--all"), ("key", "list")):
            self.assertEqual(self.status(self.ctl(*args, key="mallory")), "FORBIDDEN")
        env = self.ok("env", "create", "m1", "--image", "sleeper", *SMALL, "--lifetime", 600,
                      key="mallory")
        self.addCleanup(self.ctl, "env", "delete", "m1", key="mallory")
        self.assertEqual(env["tenant"], "mallory")
        keys = {k["public_key"]: k for k in self.ok("key", "list")["keys"]}
        self.assertEqual(keys[pool.public("mallory")]["tenant"], "mallory")
        self.assertEqual(keys[pool.public("admin")]["added_by"], "--admin-key")

    def test_key_ops_need_admin(self):
        pool = self.pool
        keygen(pool.key("eve"), "--role", "user", "--tenant", "eve")
        r = self.ctl("key", "add", pool.public("eve"), "--tenant", "ops", "--role", "admin",
                     key="alice")
        self.assertEqual(self.status(r), "FORBIDDEN", repr(r))
        self.assertEqual(self.status(self.ctl("key", "list", key="alice")), "FORBIDDEN")
        r = self.ctl("key", "rm", pool.public("bob"), key="alice")
        self.assertEqual(self.status(r), "FORBIDDEN", repr(r))
        # nothing changed: eve unknown, bob still works
        self.assertNotIn(pool.public("eve"),
                         [k["public_key"] for k in self.ok("key", "list")["keys"]])
        self.ok("env", "list", key="bob")
        self.assertEqual(self.ctl("env", "list", key="eve", timeout_ms=700).rc, EXIT_TRANSPORT)

    def test_bad_input_refused(self):
        pool = self.pool
        pb = harness.pb2()
        keygen(pool.key("fred"), "--role", "user", "--tenant", "fred")
        fred = pool.public("fred")
        with open(os.path.join(pool.dir, "not-a-key"), "w") as f:
            f.write("hello\n")
        for args in ((os.path.join(pool.dir, "not-a-key"), "--tenant", "t", "--role", "user"),
                     ("short", "--tenant", "t", "--role", "user"),
                     (fred, "--tenant", "a/b", "--role", "user"),
                     (fred, "--tenant", "t", "--role", "root"),
                     (fred, "--tenant", "t")):
            r = self.ctl("key", "add", *args)
            self.assertEqual(r.rc, EXIT_USAGE, "%s: %r" % (args, r))
        # the broker checks too, whatever a client sends
        for pub, tenant, role, what in ((fred[:39], "t", "user", "public key"),
                                        (fred[:39] + "~", "t", "user", "public key"),
                                        ("%" * 40, "t", "user", "public key"),
                                        (fred, "../x", "user", "tenant"),
                                        (fred, "", "user", "tenant"),
                                        (fred, "t", "root", "role"),
                                        (fred, "t", "", "role")):
            req = pb.Request(request_id="bad-%s-%s" % (what.replace(" ", ""), len(pub) + len(
                tenant) + len(role)))
            req.key_add.public_key, req.key_add.tenant, req.key_add.role = pub, tenant, role
            r = self.admin_ask(req)
            self.assertEqual(r.status, pb.BAD_REQUEST, (pub, tenant, role, r))
            self.assertIn(what, r.message)
        req = pb.Request(request_id="bad-rm")
        req.key_rm.public_key = "x"
        self.assertEqual(self.admin_ask(req).status, pb.BAD_REQUEST)
        # bound twice, removed twice
        self.ok("key", "add", fred, "--tenant", "fred", "--role", "user")
        self.assertEqual(self.status(self.ctl("key", "add", fred, "--tenant", "ops", "--role",
                                              "admin")), "ALREADY_EXISTS")
        self.ok("key", "rm", fred)
        self.assertEqual(self.status(self.ctl("key", "rm", fred)), "NOT_FOUND")
        self.assertNotIn(fred, [k["public_key"] for k in self.ok("key", "list")["keys"]])

    def test_key_text_starting_with_dash(self):
        """Z85 has '-' in its alphabet: one key in 85 starts with it, and such a
        key given as text is the key, not an unknown option (CI once drew one)."""
        def key_with(prefix, rest_ok=lambda k: True):
            for _ in range(200000):
                pub, _ = zmq.curve_keypair()
                pub = pub.decode()
                if pub.startswith(prefix) and rest_ok(pub):
                    return pub
            self.fail("no key starting with %r drawn" % prefix)
        one = key_with("-", lambda k: k[1] != "-")
        # "--" and then a character no option name has
        two = key_with("--", lambda k: not all(c.islower() or c == "-" for c in
                                               k[2:].split("=")[0]))
        for pub in (one, two):
            self.ok("key", "add", pub, "--tenant", "dash", "--role", "user")
            self.assertIn(pub, [k["public_key"] for k in self.ok("key", "list")["keys"]])
            self.ok("key", "rm", pub)
            self.assertNotIn(pub, [k["public_key"] for k in self.ok("key", "list")["keys"]])
        # options before `--` and the key after it: the way for any key at all
        self.ok("key", "add", "--tenant", "dash", "--role", "user", "--", one)
        self.ok("key", "rm", "--", one)
        # a real option that is not a key is still refused as one
        r = self.ctl("key", "add", one, "--tenant", "dash", "--role", "user", "-x")
        self.assertEqual(r.rc, EXIT_USAGE, r)
        self.assertIn("unknown option '-x'", r.err)

    def subscriber(self, key):
        sock = zmq.Context.instance().socket(zmq.SUB)
        sock.setsockopt(zmq.LINGER, 0)
        pub, sec = zmq.auth.load_certificate(self.pool.key(key) + "_secret")
        server, _ = zmq.auth.load_certificate(self.pool.broker_cert)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server
        sock.setsockopt(zmq.SUBSCRIBE, b"")
        sock.connect(self.pool.events_ep)
        self.addCleanup(sock.close, 0)
        return sock

    def drain(self, sock):
        n = 0
        while sock.poll(0):
            sock.recv_multipart()
            n += 1
        return n

    def test_key_rm_cuts_live_connection(self):
        pool = self.pool
        # carol is bound as an admin: under CURVE the PUB events socket takes
        # admin (and gateway) keys only, and this test watches it
        keygen(pool.key("carol"), "--role", "user", "--tenant", "carol")
        pool.bind("carol", "carol", "admin")
        pb = harness.pb2()
        sock = pool.raw("carol")
        self.addCleanup(sock.close, 0)
        n = [0]

        def ask():
            n[0] += 1
            req = pb.Request(request_id="carol-%d" % n[0])
            req.env_list.SetInParent()
            sock.send_multipart([b"", MDP, b"tt.env", req.SerializeToString()])
            return recv_reply(sock)

        self.assertEqual(ask().status, pb.OK)
        sub_carol, sub_bob = self.subscriber("carol"), self.subscriber("admin")

        def event():
            """Make events (an env of bob's made and deleted)."""
            self.ok("env", "create", "ev", "--image", "sleeper", *SMALL, "--lifetime", 600,
                    key="bob")
            self.ok("env", "delete", "ev", key="bob")

        # both subscribers hear events while carol is bound
        harness.wait_for("carol's and bob's subscribers to hear events",
                         lambda: event() or (sub_carol.poll(1000) and sub_bob.poll(1000)),
                         timeout=30)
        self.ok("key", "rm", pool.public("carol"))
        self.drain(sub_carol)  # what was sent before the removal's reply
        self.drain(sub_bob)
        # the live connection's next request is refused, at once
        r = ask()
        self.assertIsNotNone(r)
        self.assertEqual(r.status, pb.UNAUTHENTICATED, r)
        self.assertIn("not bound", r.message)
        # a new connection with the key fails its handshake
        self.assertEqual(self.ctl("env", "list", key="carol", timeout_ms=700).rc,
                         EXIT_TRANSPORT)
        # events go on for bob (its subscriber reconnects), never for carol
        harness.wait_for("bob's subscriber to hear events again",
                         lambda: event() or sub_bob.poll(1000), timeout=30)
        event()
        sub_bob.poll(2000)
        self.assertGreater(self.drain(sub_bob), 0)
        self.assertEqual(self.drain(sub_carol), 0)
        self.assertEqual(ask().status, pb.UNAUTHENTICATED)

    def test_worker_key_edited_in_place_is_noticed(self):
        pool = self.pool
        # slot holds key wa (host hw); it is overwritten in place with wb
        # (also host hw): same size, same inode, mtime set back to the
        # nanosecond, the directory untouched
        keygen(pool.key("wa"), "--role", "worker", "--host", "hw")
        keygen(pool.key("wb"), "--role", "worker", "--host", "hw")
        slot = os.path.join(pool.worker_keys, "slot")
        shutil.copy(pool.key("wa"), slot)
        # the broker has read the directory with wa in it: hw joins with wa
        pool.hosts["hw"] = {"args": pool.worker_curve_args("wa")}
        pool.start_worker("hw")
        self.addCleanup(pool.stop_worker, "hw")
        pool.wait_online(["hw"], timeout=20)
        pool.stop_worker("hw")
        harness.wait_for("hw to be down", lambda: {h["id"]: h["state"] for h in pool.ctl(
            "host", "list", key="admin").data["hosts"]}.get("hw") != "online", timeout=20)
        with open(pool.key("wb"), "rb") as f:
            new = f.read()
        before = os.stat(slot)
        dir_before = os.stat(pool.worker_keys)
        self.assertEqual(before.st_size, len(new))
        with open(slot, "r+b") as f:
            f.write(new)
        os.utime(slot, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(slot)
        self.assertEqual((after.st_ino, after.st_size, after.st_mtime_ns),
                         (before.st_ino, before.st_size, before.st_mtime_ns))
        self.assertEqual(os.stat(pool.worker_keys).st_mtime_ns, dir_before.st_mtime_ns)
        pool.hosts["hw"] = {"args": pool.worker_curve_args("wb")}
        pool.start_worker("hw")
        pool.wait_online(["hw"], timeout=20)
        self.assertTrue(pool.broker.running())

    def test_worker_key_removed_cuts_live_connection(self):
        """A compromised worker's key is taken out of --worker-keys: its live
        connection is cut within seconds (host down, VMs lost), it cannot come
        back (the new handshake fails), and a hostile worker that ignores
        DISCONNECT and says READY again on the same connection stays out;
        the key put back lets the real worker in again."""
        pool = self.pool
        pb = harness.pb2()
        keygen(pool.key("wr"), "--role", "worker", "--host", "hr")
        keygen(pool.key("wx"), "--role", "worker", "--host", "hx")
        reads = pool.broker.log().count("worker-keys changed; re-reading it")
        for name in ("wr", "wx"):
            shutil.copy(pool.key(name), os.path.join(pool.worker_keys, name))
        # the ZAP handler reads the directory again within a second; a
        # handshake before that is refused (and this raw socket would not retry)
        harness.wait_for("the broker to read the new worker keys", lambda: pool.broker.log(
        ).count("worker-keys changed; re-reading it") > reads, timeout=10)
        pool.hosts["hr"] = {"args": pool.worker_curve_args("wr")}
        pool.start_worker("hr")
        self.addCleanup(pool.stop_worker, "hr")
        # hx: a raw DEALER with wx's key, that answers nothing it is told
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDTIMEO, 5000)  # a send never blocks the test for good
        pub, sec = zmq.auth.load_certificate(pool.key("wx") + "_secret")
        server, _ = zmq.auth.load_certificate(pool.broker_cert)
        sock.curve_publickey, sock.curve_secretkey, sock.curve_serverkey = pub, sec, server
        sock.connect(pool.workers_ep)
        self.addCleanup(sock.close, 0)
        hello = pb.WorkerHello(host_id="hx", cpu_total=4, mem_total=4096, disk_total=100000,
                               engines=["process"]).SerializeToString()
        told = []

        def beat():
            sock.send_multipart([b"", b"TTW01", b"\x04"])
            while sock.poll(0):
                told.append(sock.recv_multipart()[2])

        def states():
            beat()
            r = pool.ctl("host", "list", key="admin")
            return {h["id"]: h["state"] for h in r.data["hosts"]} if r.rc == 0 else {}

        sock.send_multipart([b"", b"TTW01", b"\x01", hello])
        harness.wait_for("hr and hx online", lambda: states().get("hr") == "online" and
                         states().get("hx") == "online", timeout=20, interval=0.3)
        for name in ("wr", "wx"):
            os.remove(os.path.join(pool.worker_keys, name))
        # well inside the broker's heartbeat liveness (both keep beating)
        harness.wait_for("hr and hx cut", lambda: states().get("hr") != "online" and
                         states().get("hx") != "online", timeout=8, interval=0.3)
        self.assertIn(b"\x05", told)  # hx was told DISCONNECT
        # hx says READY again on its live, once-authenticated connection
        told.clear()
        sock.send_multipart([b"", b"TTW01", b"\x01", hello])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            st = states()
            self.assertNotEqual(st.get("hx"), "online", st)
            self.assertNotEqual(st.get("hr"), "online", st)  # its reconnect is refused
            time.sleep(0.3)
        self.assertIn(b"\x05", told)
        self.assertIn("removed from --worker-keys", pool.broker.log())
        self.assertTrue(pool.broker.running())
        # the operator puts hr's key back: the real worker comes back by itself
        shutil.copy(pool.key("wr"), os.path.join(pool.worker_keys, "wr"))
        harness.wait_for("hr back", lambda: states().get("hr") == "online", timeout=30,
                         interval=0.3)
        self.assertNotEqual(states().get("hx"), "online")
        # the directory moved away for a moment (a deploy tool replacing it)
        # revokes nothing: hr stays online all the while
        away = pool.worker_keys + ".away"
        os.rename(pool.worker_keys, away)
        try:
            harness.wait_for("the broker to notice", lambda: "cannot read key directory" in
                             pool.broker.log(), timeout=10, interval=0.3)
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                self.assertEqual(states().get("hr"), "online")
                time.sleep(0.3)
        finally:
            os.rename(away, pool.worker_keys)
        self.assertIn("keeping the", pool.broker.log())

    def test_import_client_keys(self):
        """The migration path: --import-client-keys binds the certs of an old
        --client-keys directory by their own metadata, on the operator's word;
        without it they stay unbound."""
        pool = self.pool
        keygen(pool.key("gina"), "--role", "user", "--tenant", "gina")
        shutil.copy(pool.key("gina"), pool.client_keys)
        self.assertEqual(self.ctl("env", "list", key="gina", timeout_ms=700).rc, EXIT_TRANSPORT)
        args = list(pool.broker_args)
        pool.stop_broker()
        pool.broker_args = args + ["--import-client-keys"]
        try:
            pool.start_broker()
        finally:
            pool.broker_args = args
        self.assertIn("keys: import: bound %s" % pool.public("gina"), pool.broker.log())
        self.assertEqual(self.ok("env", "list", key="gina")["envs"], [])
        self.assertEqual(self.status(self.ctl("host", "list", key="gina")), "FORBIDDEN")
        keys = {k["public_key"]: k for k in self.ok("key", "list")["keys"]}
        self.assertEqual((keys[pool.public("gina")]["tenant"], keys[pool.public("gina")]["role"],
                          keys[pool.public("gina")]["added_by"]), ("gina", "user", "import"))
        pool.stop_broker()
        pool.start_broker()
        self.ok("key", "rm", pool.public("gina"))
        os.unlink(os.path.join(pool.client_keys, "gina"))

    def test_bindings_survive_restart(self):
        pool = self.pool
        keygen(pool.key("dave"), "--role", "user", "--tenant", "dave")
        pool.bind("dave", "dave", "admin")
        pool.stop_broker()
        pool.start_broker()
        self.ok("host", "list", key="dave")
        self.ok("env", "list", key="alice")
        self.ok("key", "rm", pool.public("dave"))
        self.assertEqual(self.ctl("env", "list", key="dave", timeout_ms=700).rc, EXIT_TRANSPORT)


class Loopback(unittest.TestCase):
    """Without CURVE the broker only listens on loopback unless --insecure."""

    @classmethod
    def setUpClass(cls):
        harness.watchdog(100)

    @classmethod
    def tearDownClass(cls):
        harness.watchdog(0)

    def run_broker(self, pool, *extra, timeout=10):
        argv = [harness.binary("ttbroker"), "--state", os.path.join(pool.dir, "b"),
                "--admin-tenant", harness.ADMIN] + list(extra)
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)

    def listening(self, port):
        with socket.socket() as s:
            s.settimeout(1)
            return s.connect_ex(("127.0.0.1", port)) == 0

    def test_non_loopback_needs_curve_or_insecure(self):
        pool = harness.Pool()
        self.addCleanup(pool.close)
        port = harness.free_port()
        wild = "tcp://0.0.0.0:%d" % port
        loop = ["--workers", pool.workers_ep, "--events", pool.events_ep]
        r = self.run_broker(pool, "--clients", wild, *loop)
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("is not loopback and CURVE is off", r.stdout + r.stderr)
        self.assertIn("--insecure", r.stdout + r.stderr)
        self.assertFalse(self.listening(port))
        # CURVE half-configured refuses too
        r = self.run_broker(pool, "--clients", pool.clients_ep, *loop, "--curve-secret",
                            os.path.join(pool.dir, "no-such-cert"))
        self.assertNotEqual(r.returncode, 0, r.stdout + r.stderr)
        # --insecure starts, and says so loudly; stop it at once
        argv = [harness.binary("ttbroker"), "--state", os.path.join(pool.dir, "b2"),
                "--clients", wild, "--insecure"] + loop
        d = harness.Daemon("ttbroker", argv, os.path.join(pool.dir, "insecure.log"))
        pool.broker = d
        d.start()
        harness.wait_for("the INSECURE warning", lambda: "INSECURE" in d.log() or not
                         d.running(), timeout=15)
        self.assertTrue(d.running(), d.log())
        self.assertIn("INSECURE: %s accepts anyone" % wild, d.log())
        # stopped once it is up: a SIGTERM while it still starts (the blob
        # server's start takes a while under ASan) ends the start with 1
        harness.wait_for("ttbroker ready", lambda: "ttbroker ready" in d.log() or not
                         d.running(), timeout=15)
        self.assertEqual(d.stop(signal.SIGTERM), 0, d.log())


if __name__ == "__main__":
    unittest.main()
