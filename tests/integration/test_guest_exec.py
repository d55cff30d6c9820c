"""Exec and copy without SSH (issue 11 part 4), end to end on the process
engine: ttctl -> ttbroker (broker/ops/guest_ops.c) -> ttworker
(worker/guest/guestop.c, setns into the VM's namespaces) and back.

- exec: `uname -r` is the host's (same kernel), an exit code comes back
  faithfully, stdout over 1 MiB is cut at 1 MiB and flagged (and read
  back in 96 KiB pieces), stderr stays separate, a command over its
  timeout is killed and reported, the command runs inside the VM (its
  working directory is the VM's own disk, a mount only its namespace has);
- cp: a 10 MiB random file PUT then GET is byte-exact (sha256), a file
  over 64 MiB is refused with nothing written, a path with a NUL (a hand
  made request: ttctl cannot send one) is refused, a wrong sha256 on the
  last chunk is CHECKSUM_MISMATCH and leaves no file in the guest;
- refusals: exec on a stopped VM, tenant B in tenant A's env (NOT_FOUND);
- audit: an exec leaves a row (tenant, env, VM, host, argv with control
  characters shown as '?');
- isolation: the VM's root is its image's tree (a host file is neither read
  nor written, no /etc/shadow), its root is uid 100000 outside (a file it
  makes belongs to 100000), seccomp refuses bpf, keyctl, unshare of a user
  namespace, mount and perf_event_open with EPERM, the bounding set is a
  container root's;
- liveness: while `sleep 20` runs in a VM, env show and another tenant's
  requests answer promptly and the host stays online.

Needs root (the process engine's namespaces and the VM's disk image).
"""

import hashlib
import os
import signal
import threading
import time
import unittest

import harness

A, B = "execa", "execb"


def skip(why):
    print("SKIP: " + why)
    os._exit(77)


class Raw:
    """A bare 7/MDP client for requests ttctl will not make."""

    def __init__(self, endpoint, tenant):
        import zmq
        self.pb = harness.pb2()
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.tenant = tenant
        self.n = 0

    def call(self, req, timeout=20.0):
        self.n += 1
        req.request_id = "raw%d-%d" % (os.getpid(), self.n)
        req.tenant = self.tenant
        self.sock.send_multipart([b"", b"MDPC01", b"tt.env", req.SerializeToString()])
        if not self.sock.poll(int(timeout * 1000)):
            raise AssertionError("no reply to a raw request")
        frames = self.sock.recv_multipart()
        rep = self.pb.Reply()
        rep.ParseFromString(frames[-1])
        return rep

    def close(self):
        self.sock.close(0)


class GuestExec(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            skip("needs root (namespaces and the VM's disk image)")
        harness.watchdog(280)
        cls.pool = harness.Pool(hosts={"h1": {"engines": "process", "cpu": 8, "mem": 8192,
                                              "args": ["--stop-timeout-ms", "300"]}})
        cls.pool.start()
        cls.vm = cls.ok_cls(A, "env", "create", "e", "--image", "sleeper", "--cpu", 1,
                            "--mem", 64, "--disk", 128, "--lifetime", 900)["vms"][0]["vm_id"]
        cls.ok_cls(B, "env", "create", "other", "--image", "sleeper", "--cpu", 1,
                   "--mem", 64, "--disk", 64, "--lifetime", 900)
        cls.tmp = os.path.join(cls.pool.dir, "files")
        os.makedirs(cls.tmp)

    @classmethod
    def tearDownClass(cls):
        cls.pool.close()
        harness.watchdog(0)

    @classmethod
    def ok_cls(cls, tenant, *args, json_out=True, timeout_ms=20000):
        r = cls.pool.ctl(*args, tenant=tenant, timeout_ms=timeout_ms, json_out=json_out)
        if r.rc != 0:
            raise AssertionError("%r\n%s" % (r, cls.pool.logs()))
        return r.data if json_out else r.out

    def ok(self, *args, tenant=A, **kw):
        return self.ok_cls(tenant, *args, **kw)

    def ctl(self, *args, tenant=A, json_out=True, timeout_ms=20000):
        return self.pool.ctl(*args, tenant=tenant, json_out=json_out, timeout_ms=timeout_ms)

    def exec_json(self, *cmd, tenant=A, opts=()):
        r = self.ctl("env", "exec", "e", self.vm, *opts, "--", *cmd, tenant=tenant)
        import json
        data = json.loads(r.out) if r.out.strip().startswith("{") else None
        return r, data

    # ---- exec ----

    def test_uname_is_the_hosts(self):
        r, d = self.exec_json("uname", "-r")
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(d["status"], "OK")
        self.assertEqual(d["stdout"].strip(), os.uname().release)
        self.assertEqual(d["exit_code"], 0)
        # plain form: stdout to stdout, exit code 0
        r = self.ctl("env", "exec", "e", self.vm, "--", "uname", "-r", json_out=False)
        self.assertEqual((r.rc, r.out.strip()), (0, os.uname().release), r)

    def test_audited(self):
        r, d = self.exec_json("echo", "audit\x1bme")
        self.assertEqual(r.rc, 0, r)
        data = self.ok("audit", tenant=harness.ADMIN)
        rows = data.get("audit", data.get("records", []))
        mine = [x for x in rows if x.get("op") == "env.exec" and "audit?me" in x.get("message", "")]
        self.assertTrue(mine, rows[:5])
        self.assertEqual((mine[0]["tenant"], mine[0]["target"]), (A, "e"))
        self.assertIn("VM %d on host h1: echo audit?me" % self.vm, mine[0]["message"])
        print("audit row: %s" % mine[0])

    def test_runs_inside_the_vm(self):
        # the VM's working directory is its disk, mounted in its own mount
        # namespace only: a file written there is not in the host's view
        r, d = self.exec_json("sh", "-c", "pwd; hostname; echo inside > marker; cat marker")
        self.assertEqual(r.rc, 0, r)
        cwd, hostname, text = d["stdout"].split("\n")[:3]
        self.assertEqual(hostname, "vm-%d" % self.vm)
        self.assertEqual(text, "inside")
        self.assertFalse(os.path.exists(os.path.join(cwd, "marker")),
                         "the exec wrote into the host's directory, not the VM's disk")

    def test_host_files_out_of_reach(self):
        # the VM's root is its image's tree under an overlay: a file the
        # test puts on the host is neither readable nor writable from it
        marker = os.path.join(self.tmp, "host-marker")
        with open(marker, "w") as f:
            f.write("host secret\n")
        r, d = self.exec_json("cat", marker)
        self.assertNotEqual(r.rc, 0, r)
        self.assertNotIn("host secret", d["stdout"])
        r, d = self.exec_json("sh", "-c", "echo changed > %s; echo new > %s.new" % (marker, marker))
        with open(marker) as f:
            self.assertEqual(f.read(), "host secret\n", "the VM wrote a host file")
        self.assertFalse(os.path.exists(marker + ".new"), "the VM made a host file")
        r, d = self.exec_json("cat", "/etc/shadow")
        self.assertNotEqual(r.rc, 0, r)
        self.assertEqual(d["stdout"], "")
        # as root inside (uid 0 in its namespace), so the permissions that
        # stop it are those of an unprivileged id outside
        r, d = self.exec_json("sh", "-c", "id -u; cat /proc/self/uid_map; echo made > /made-by-vm")
        self.assertEqual(r.rc, 0, r)
        lines = d["stdout"].split("\n")
        self.assertEqual(lines[0], "0")
        self.assertEqual(lines[1].split(), ["0", "100000", "65536"])
        # its root's upper layer is on its own disk (<disk>/.root/upper),
        # seen from the host only through pid 1's mount namespace
        vmdir = os.path.join(self.pool.worker_state("h1"), "vms", str(self.vm))
        with open(os.path.join(vmdir, "pid")) as f:
            pid1 = int(f.read().split()[0])
        made = "/proc/%d/root/disk/.root/upper/made-by-vm" % pid1
        self.assertFalse(os.path.exists(os.path.join(vmdir, "root", "upper", "made-by-vm")))
        # the layer's directory is the host root's: the VM's root can
        # neither list it nor write into its own upper layer there
        r, d = self.exec_json("sh", "-c", "ls /disk/.root || echo no-list; "
                              "echo x > /disk/.root/upper/x || echo no-write")
        self.assertIn("no-list", d["stdout"], d)
        self.assertIn("no-write", d["stdout"], d)
        st = os.stat(made)
        self.assertEqual((st.st_uid, st.st_gid), (100000, 100000))
        # its processes are those of its own pid namespace only
        r, d = self.exec_json("sh", "-c", "ls /proc | grep -c '^[0-9]'")
        self.assertLess(int(d["stdout"]), 10, d)

    def test_forbidden_syscalls(self):
        # seccomp: bpf, keyctl, a new user namespace, mount: EPERM (1)
        code = ("import ctypes\n"
                "l = ctypes.CDLL(None, use_errno=True)\n"
                "for nr, args in ((321, (0, 0, 0)), (250, (0, 0, 0)), (272, (0x10000000,)),\n"
                "                 (165, (0, 0, 0, 0, 0)), (298, (0, 0, 0, 0, 0))):\n"
                "    r = l.syscall(nr, *args)\n"
                "    print(nr, r, ctypes.get_errno())\n")
        r, d = self.exec_json("python3", "-c", code)
        self.assertEqual(r.rc, 0, r)
        got = [line.split() for line in d["stdout"].strip().split("\n")]
        self.assertEqual(got, [[nr, "-1", "1"] for nr in ("321", "250", "272", "165", "298")], d)
        r, d = self.exec_json("unshare", "-U", "true")
        self.assertNotEqual(r.rc, 0, r)
        self.assertIn("Operation not permitted", d["stderr"])
        # its own network stack's low ports are still its to bind
        r, d = self.exec_json("python3", "-c", "import socket; s = socket.socket(); "
                              "s.bind(('0.0.0.0', 80)); print('bound')")
        self.assertEqual((r.rc, d["stdout"]), (0, "bound\n"), d)
        # and no capability beyond an unprivileged container root's
        r, d = self.exec_json("sh", "-c", "grep CapBnd /proc/self/status")
        self.assertEqual(int(d["stdout"].split()[1], 16), 0xa00405fb, d)

    def test_exit_code_and_stderr(self):
        r, d = self.exec_json("sh", "-c", "echo out; echo err >&2; exit 7")
        self.assertEqual(r.rc, 7, r)
        self.assertEqual((d["exit_code"], d["stdout"], d["stderr"]), (7, "out\n", "err\n"))
        r = self.ctl("env", "exec", "e", self.vm, "--", "sh", "-c", "echo out; echo err >&2; "
                     "exit 3", json_out=False)
        self.assertEqual((r.rc, r.out, r.err), (3, "out\n", "err\n"), r)
        r, d = self.exec_json("no-such-program-here")
        self.assertEqual(r.rc, 127, r)
        self.assertIn("cannot run", d["stderr"])

    def test_stdin(self):
        path = os.path.join(self.tmp, "in.txt")
        with open(path, "w") as f:
            f.write("hello from stdin\n")
        r, d = self.exec_json("sh", "-c", "tr a-z A-Z", opts=("--stdin", path))
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(d["stdout"], "HELLO FROM STDIN\n")

    def test_big_stdout_is_truncated_and_flagged(self):
        cmd = ("head -c 1500000 /dev/zero | tr '\\0' x; echo done >&2")
        r, d = self.exec_json("sh", "-c", cmd)
        self.assertEqual(r.rc, 0, r)
        self.assertTrue(d["stdout_truncated"])
        self.assertFalse(d["stderr_truncated"])
        self.assertEqual(d["stdout_size"], 1024 * 1024)
        self.assertEqual(d["stdout"], "x" * (1024 * 1024))  # read back in 96 KiB pieces
        self.assertEqual(d["stderr"], "done\n")
        r = self.ctl("env", "exec", "e", self.vm, "--", "sh", "-c", cmd, json_out=False)
        self.assertEqual(r.rc, 0, r)
        self.assertEqual(len(r.out), 1024 * 1024)
        self.assertIn("stdout truncated", r.err)
        self.assertIn("done\n", r.err)

    def test_timeout_kills(self):
        t0 = time.monotonic()
        r, d = self.exec_json("sh", "-c", "echo started; exec sleep 60", opts=("--timeout", 2))
        took = time.monotonic() - t0
        self.assertEqual(r.rc, 124, r)
        self.assertEqual(d["status"], "TIMEOUT")
        self.assertEqual(d["signal"], 9)
        self.assertEqual(d["stdout"], "started\n")
        self.assertIn("timeout", d["message"])
        self.assertLess(took, 10, "the timeout did not kill the command")
        # nothing of it lives on in the VM
        r, d = self.exec_json("sh", "-c", "ps -o args= 2>/dev/null || ls /proc")
        self.assertNotIn("sleep 60", d["stdout"])

    # ---- copy ----

    def cwd(self):
        return self.exec_json("pwd")[1]["stdout"].strip()

    def test_exec_all_vms(self):
        env = self.ok("env", "create", "multi", "--image", "sleeper", "--dup", 2, "--cpu", 1,
                      "--mem", 64, "--disk", 64, "--lifetime", "15m")
        self.addCleanup(self.ctl, "env", "delete", "multi")
        ids = sorted(v["vm_id"] for v in env["vms"])
        # each VM exits with its own id: the exit status is the highest
        cmd = ("sh", "-c", 'h=$(hostname); echo "$h"; exit ${h#vm-}')
        r = self.ctl("env", "exec", "multi", "--all", "--", *cmd)
        import json
        d = json.loads(r.out)
        self.assertEqual(r.rc, max(ids), r)
        self.assertEqual(sorted((x["vm_id"], x["exit_code"], x["stdout"]) for x in d["results"]),
                         [(i, i, "vm-%d\n" % i) for i in ids])
        r = self.ctl("env", "exec", "multi", "--all", "--", *cmd, json_out=False)
        self.assertEqual(r.rc, max(ids), r)
        for i in ids:
            self.assertIn("==> vm %d on h1 <==\nvm-%d\n" % (i, i), r.out)
            self.assertIn("ttctl: vm %d on h1: exit %d" % (i, i), r.err)
        r = self.ctl("env", "exec", "multi", ids[0], "--all", "--", "true")
        self.assertEqual(r.rc, 2, r)

    def test_copy_into_guest_dir_and_tree(self):
        base = self.cwd()
        src = os.path.join(self.tmp, "note.txt")
        with open(src, "w") as f:
            f.write("note\n")
        self.exec_json("mkdir", "-p", base + "/into")
        # DST ending in '/', and DST that is a directory: the file keeps its name
        for dst in (base + "/into/", base + "/into"):
            self.exec_json("rm", "-f", base + "/into/note.txt")
            put = self.ok("env", "cp", src, "e:%d:%s" % (self.vm, dst))
            self.assertEqual(put["path"], base + "/into/note.txt")
            r, d = self.exec_json("cat", base + "/into/note.txt")
            self.assertEqual(d["stdout"], "note\n")
        # -r: a tree in and out again, as a tar in the checked chunks
        tree = os.path.join(self.tmp, "tree")
        os.makedirs(os.path.join(tree, "sub", "deeper"))
        files = {"a.txt": b"alpha\n", "sub/b.bin": os.urandom(300000), "sub/deeper/c": b""}
        for rel, data in files.items():
            with open(os.path.join(tree, rel), "wb") as f:
                f.write(data)
        r = self.ctl("env", "cp", src, "e:%d:%s/t" % (self.vm, base), "--recursive")
        self.assertNotEqual(r.rc, 0, "a file with -r: %r" % (r,))
        self.ok("env", "cp", "-r", tree, "e:%d:%s/t" % (self.vm, base))
        r, d = self.exec_json("sh", "-c", "cd %s/t && find . -type f | sort && ls -a" % base)
        self.assertEqual(d["stdout"].split("\n")[:3], ["./a.txt", "./sub/b.bin", "./sub/deeper/c"])
        self.assertNotIn(".ttctl-cp.tar", d["stdout"])
        back = os.path.join(self.tmp, "back-tree")
        self.ok("env", "cp", "-r", "e:%d:%s/t" % (self.vm, base), back)
        for rel, data in files.items():
            with open(os.path.join(back, rel), "rb") as f:
                self.assertEqual(f.read(), data, rel)
        r, d = self.exec_json("ls", base)
        self.assertNotIn("t.ttctl-cp.tar", d["stdout"])

    def test_copy_10mib_roundtrip(self):
        data = os.urandom(10 * 1024 * 1024)
        src = os.path.join(self.tmp, "ten.bin")
        with open(src, "wb") as f:
            f.write(data)
        guest = self.cwd() + "/ten.bin"
        put = self.ok("env", "cp", src, "e:%d:%s" % (self.vm, guest))
        self.assertEqual((put["bytes"], put["sha256"]), (len(data), hashlib.sha256(data).hexdigest()))
        # in the guest (its own disk), with the same sha256
        r, d = self.exec_json("sha256sum", guest)
        self.assertEqual(d["stdout"].split()[0], hashlib.sha256(data).hexdigest())
        back = os.path.join(self.tmp, "back.bin")
        got = self.ok("env", "cp", "e:%d:%s" % (self.vm, guest), back)
        with open(back, "rb") as f:
            self.assertEqual(hashlib.sha256(f.read()).digest(), hashlib.sha256(data).digest())
        self.assertEqual(got["sha256"], put["sha256"])
        # plain form, into a directory: keeps the guest file's name
        r = self.ctl("env", "cp", "e:%d:%s" % (self.vm, guest), self.tmp + "/", json_out=False)
        self.assertEqual(r.rc, 0, r)
        self.assertIn(hashlib.sha256(data).hexdigest(), r.out)

    def test_copy_empty_and_odd_sizes(self):
        cwd = self.cwd()
        for size in (0, 1, 128 * 1024, 128 * 1024 + 1):
            data = os.urandom(size)
            src = os.path.join(self.tmp, "s%d" % size)
            with open(src, "wb") as f:
                f.write(data)
            self.ok("env", "cp", src, "e:%d:%s/s%d" % (self.vm, cwd, size))
            back = os.path.join(self.tmp, "b%d" % size)
            got = self.ok("env", "cp", "e:%d:%s/s%d" % (self.vm, cwd, size), back)
            self.assertEqual(got["bytes"], size)
            with open(back, "rb") as f:
                self.assertEqual(f.read(), data)

    def test_copy_over_64mib_refused(self):
        big = os.path.join(self.tmp, "big.bin")
        with open(big, "wb") as f:
            f.truncate(64 * 1024 * 1024 + 1)
        guest = self.cwd() + "/big.bin"
        r = self.ctl("env", "cp", big, "e:%d:%s" % (self.vm, guest))
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("TOO_LARGE", r.err)
        # the broker refuses a chunk past 64 MiB too (a client that does not check)
        raw = Raw(self.pool.clients_ep, A)
        try:
            pb = raw.pb
            req = pb.Request()
            req.env_copy.name, req.env_copy.vm_id, req.env_copy.path = "e", self.vm, guest
            req.env_copy.transfer_id = "0" * 32
            req.env_copy.offset = 64 * 1024 * 1024
            req.env_copy.data = b"x"
            rep = raw.call(req)
            self.assertEqual(rep.status, pb.BAD_REQUEST, rep)
            self.assertIn("64 MiB", rep.message)
        finally:
            raw.close()
        r, d = self.exec_json("test", "-e", guest)
        self.assertEqual(d["exit_code"], 1, "a refused copy left a file in the guest")
        # a guest file over 64 MiB cannot be read either
        r, d = self.exec_json("sh", "-c", "truncate -s 67108865 huge.bin 2>/dev/null || "
                              "dd if=/dev/zero of=huge.bin bs=1 count=0 seek=67108865")
        r = self.ctl("env", "cp", "e:%d:%s/huge.bin" % (self.vm, self.cwd()),
                     os.path.join(self.tmp, "huge"))
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("64 MiB", r.err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "huge")))

    def test_nul_in_path_refused(self):
        raw = Raw(self.pool.clients_ep, A)
        try:
            pb = raw.pb
            req = pb.Request()
            req.env_copy.name, req.env_copy.vm_id = "e", self.vm
            req.env_copy.path = self.cwd() + "/nul\x00tail"
            req.env_copy.last, req.env_copy.data = True, b"abc"
            req.env_copy.total_size = 3
            req.env_copy.sha256 = hashlib.sha256(b"abc").digest()
            rep = raw.call(req)
            self.assertEqual(rep.status, pb.BAD_REQUEST, rep)
            self.assertIn("NUL", rep.message)
            req = pb.Request()
            req.env_exec.name, req.env_exec.vm_id = "e", self.vm
            req.env_exec.argv.extend(["touch", "a\x00b"])
            rep = raw.call(req)
            self.assertEqual(rep.status, pb.BAD_REQUEST, rep)
        finally:
            raw.close()
        r, d = self.exec_json("sh", "-c", "ls")
        self.assertNotIn("nul", d["stdout"])
        self.assertNotIn("a\n", d["stdout"].replace("marker", ""))
        # ttctl refuses relative paths and control characters itself
        r = self.ctl("env", "cp", "/etc/hostname", "e:%d:relative/x" % self.vm)
        self.assertEqual(r.rc, harness.EXIT_USAGE, r)

    def test_wrong_sha256_leaves_nothing(self):
        raw = Raw(self.pool.clients_ep, A)
        guest = self.cwd() + "/badsum.bin"
        try:
            pb = raw.pb
            req = pb.Request()
            c = req.env_copy
            c.name, c.vm_id, c.path, c.data = "e", self.vm, guest, b"a" * 1000
            rep = raw.call(req)
            self.assertEqual(rep.status, pb.OK, rep)
            tid = rep.copy.transfer_id
            self.assertEqual(len(tid), 32)
            req = pb.Request()
            c = req.env_copy
            c.name, c.vm_id, c.path, c.transfer_id = "e", self.vm, guest, tid
            c.offset, c.data, c.last, c.total_size = 1000, b"b" * 1000, True, 2000
            c.sha256 = hashlib.sha256(b"a" * 2000).digest()  # not what was sent
            rep = raw.call(req)
            self.assertEqual(rep.status, pb.CHECKSUM_MISMATCH, rep)
            self.assertIn("nothing was written", rep.message)
        finally:
            raw.close()
        r, d = self.exec_json("test", "-e", guest)
        self.assertEqual(d["exit_code"], 1, "a file was written despite the wrong sha256")

    # ---- refusals ----

    def test_other_tenant_not_found(self):
        r = self.ctl("env", "exec", "e", self.vm, "--", "true", tenant=B)
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("NOT_FOUND", r.out + r.err)
        r = self.ctl("env", "cp", "/etc/hostname", "e:%d:/tmp/x" % self.vm, tenant=B)
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("NOT_FOUND", r.err)
        r = self.ctl("env", "cp", "e:%d:/etc/hostname" % self.vm, self.tmp + "/y", tenant=B)
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("NOT_FOUND", r.err)
        # and B's own VM works for B
        vm_b = self.ok("env", "show", "other", tenant=B)["vms"][0]["vm_id"]
        r = self.ctl("env", "exec", "other", vm_b, "--", "true", tenant=B)
        self.assertEqual(r.rc, 0, r)

    def test_stopped_vm_refused(self):
        vm = self.ok("env", "create", "s", "--image", "sleeper", "--cpu", 1, "--mem", 64,
                     "--disk", 64, "--lifetime", 600)["vms"][0]["vm_id"]
        time.sleep(1.2)
        self.ok("env", "stop", "s")
        r = self.ctl("env", "exec", "s", vm, "--", "true")
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("INVALID_STATE", r.out + r.err)
        self.assertIn("stopped", r.out + r.err)
        r = self.ctl("env", "cp", "/etc/hostname", "s:%d:/tmp/x" % vm)
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("INVALID_STATE", r.err)
        self.ok("env", "delete", "s")

    # ---- the loop stays live ----

    def test_long_exec_keeps_the_pool_live(self):
        out = {}

        def run():
            t0 = time.monotonic()
            out["r"] = self.ctl("env", "exec", "e", self.vm, "--timeout", 60, "--", "sleep", 20,
                                json_out=False, timeout_ms=40000)
            out["took"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()
        time.sleep(2)
        worst = 0.0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            self.ok("env", "show", "e")
            self.ok("env", "list", tenant=B)
            self.ok("env", "exec", "other", self.ok("env", "show", "other", tenant=B)
                    ["vms"][0]["vm_id"], "--", "true", tenant=B)
            worst = max(worst, time.monotonic() - t0)
            hosts = self.ok("host", "list", tenant=harness.ADMIN)["hosts"]
            self.assertEqual(hosts[0]["state"], "online")
            time.sleep(0.5)
        t.join(60)
        self.assertFalse(t.is_alive())
        print("while sleep 20 ran: worst env show + list + another exec took %.3f s" % worst)
        self.assertLess(worst, 3.0)
        self.assertEqual(out["r"].rc, 0, out["r"])
        self.assertGreater(out["took"], 19)

    def test_greedy_tenant_cannot_take_the_host(self):
        """A tenant that keeps long commands running gets at most 8 of the
        host's guest jobs (RATE_LIMITED beyond, saying so); another
        tenant's exec still runs at once."""
        G = "execgreedy"
        vms = [v["vm_id"] for v in self.ok("env", "create", "g", "--image", "sleeper", "--dup", 3,
                                           "--cpu", 1, "--mem", 64, "--disk", 64,
                                           "--lifetime", 600, tenant=G)["vms"]]
        self.addCleanup(self.ctl, "env", "delete", "g", tenant=G)
        results = []

        def run(vm):
            results.append(self.ctl("env", "exec", "g", vm, "--timeout", 40, "--", "sleep", 20,
                                    tenant=G, json_out=False, timeout_ms=45000))

        threads = [threading.Thread(target=run, args=(vms[i % 3],)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            # once the eight are in flight (each VM takes 4 at most: 3 + 3 + 2;
            # a probe sent earlier would take the place of the last of them)
            # a ninth is refused
            time.sleep(5)
            r = self.ctl("env", "exec", "g", vms[2], "--", "true", tenant=G, json_out=False)
            self.assertNotEqual(r.rc, 0, (r, results))
            self.assertIn("RATE_LIMITED", r.err)
            self.assertIn("at most 8", r.err)
            other = self.ok("env", "show", "other", tenant=B)["vms"][0]["vm_id"]
            t0 = time.monotonic()
            r = self.ctl("env", "exec", "other", other, "--", "echo", "mine", tenant=B,
                         json_out=False, timeout_ms=10000)
            took = time.monotonic() - t0
            self.assertEqual(r.rc, 0, r)
            self.assertEqual(r.out.strip(), "mine")
            print("another tenant's exec while a greedy one holds 8: %.3f s" % took)
        finally:
            for t in threads:
                t.join(60)
        self.assertEqual([x.rc for x in results], [0] * 8, results)


if __name__ == "__main__":
    unittest.main()


class GuestExecGone(unittest.TestCase):
    """What an exec in flight hears when its env is deleted or its host dies."""

    def setUp(self):
        if os.geteuid() != 0:
            skip("needs root (namespaces and the VM's disk image)")
        harness.watchdog(170)
        self.addCleanup(harness.watchdog, 0)
        self.pool = harness.Pool(hosts={"h1": {"engines": "process", "cpu": 8, "mem": 8192,
                                               "args": ["--stop-timeout-ms", "300"]}})
        self.addCleanup(self.pool.close)
        self.pool.start()

    def ok(self, *args):
        r = self.pool.ctl(*args, tenant=A, timeout_ms=20000)
        self.assertEqual(r.rc, 0, "%r\n%s" % (r, self.pool.logs()))
        return r.data

    def long_exec(self, env, vm):
        out = {}

        def run():
            t0 = time.monotonic()
            out["r"] = self.pool.ctl("env", "exec", env, vm, "--timeout", 120, "--", "sleep", 60,
                                     tenant=A, timeout_ms=20000)
            out["took"] = time.monotonic() - t0

        t = threading.Thread(target=run)
        t.start()
        time.sleep(2)
        return t, out

    def test_delete_mid_exec(self):
        vm = self.ok("env", "create", "d", "--image", "sleeper", "--cpu", 1, "--mem", 64,
                     "--disk", 64, "--lifetime", 600)["vms"][0]["vm_id"]
        t, out = self.long_exec("d", vm)
        self.ok("env", "delete", "d")
        t.join(30)
        self.assertFalse(t.is_alive())
        r = out["r"]
        print("exec when its env was deleted: rc %d after %.1f s: %s" % (r.rc, out["took"],
                                                                       r.out.strip()))
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("GUEST_UNREACHABLE", r.out)
        self.assertIn("stopped or deleted while the command ran", r.out)
        self.assertLess(out["took"], 20)
        # the broker and worker carry on
        self.ok("env", "create", "d2", "--image", "sleeper", "--cpu", 1, "--mem", 64,
                "--disk", 64, "--lifetime", 600)
        r = self.pool.ctl("env", "exec", "d2", self.ok("env", "show", "d2")["vms"][0]["vm_id"],
                          "--", "true", tenant=A)
        self.assertEqual(r.rc, 0, r)

    def test_host_down_mid_exec(self):
        vm = self.ok("env", "create", "k", "--image", "sleeper", "--cpu", 1, "--mem", 64,
                     "--disk", 64, "--lifetime", 600)["vms"][0]["vm_id"]
        t, out = self.long_exec("k", vm)
        self.pool.stop_worker("h1", signal.SIGKILL)
        t.join(40)
        self.assertFalse(t.is_alive())
        r = out["r"]
        print("exec when its host died: rc %d after %.1f s: %s" % (r.rc, out["took"],
                                                                 r.out.strip()))
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("WORKER_FAILED", r.out)
        self.assertIn("went down", r.out)
        self.assertLess(out["took"], 30)
        r = self.pool.ctl("env", "show", "k", tenant=A)
        self.assertEqual(r.rc, 0, r)


class GuestExecVmUser(unittest.TestCase):
    """Under `ttworker --vm-user nobody` an exec runs as that user (as the
    VM's own program does) and a copied file belongs to it."""

    def setUp(self):
        import pwd
        if os.geteuid() != 0:
            skip("needs root to switch users")
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user 'nobody' on this machine")
        harness.watchdog(100)
        self.addCleanup(harness.watchdog, 0)
        self.pool = harness.Pool(hosts={"h1": {"args": ["--vm-user", "nobody"]}})
        self.addCleanup(self.pool.close)
        for d in (self.pool.dir, self.pool.images):
            os.chmod(d, 0o755)
        self.pool.start()

    def test_exec_as_the_vm_user(self):
        r = self.pool.ctl("env", "create", "u", "--image", "sleeper", "--cpu", 1, "--mem", 64,
                          "--disk", 64, tenant=A)
        self.assertEqual(r.rc, 0, repr(r) + self.pool.logs())
        vm = r.data["vms"][0]["vm_id"]
        r = self.pool.ctl("env", "exec", "u", vm, "--", "sh", "-c",
                          "id -u; id -g; grep NoNewPrivs /proc/self/status; pwd", tenant=A)
        self.assertEqual(r.rc, 0, r)
        uid, gid, nnp, cwd = r.data["stdout"].split("\n")[:4]
        self.assertEqual((int(uid), int(gid)), (self.nobody.pw_uid, self.nobody.pw_gid))
        self.assertEqual(nnp.split()[-1], "1")
        src = os.path.join(self.pool.dir, "f.txt")
        with open(src, "w") as f:
            f.write("owned\n")
        # the guest's view decides: its disk, its working directory at /disk,
        # belongs to the user; the file is written as the user
        self.assertEqual(cwd, "/disk")
        r = self.pool.ctl("env", "cp", src, "u:%d:/disk/f.txt" % vm, tenant=A)
        self.assertEqual(r.rc, 0, r)
        r = self.pool.ctl("env", "exec", "u", vm, "--", "stat", "-c", "%u", "/disk/f.txt",
                          tenant=A)
        self.assertEqual(int(r.data["stdout"]), self.nobody.pw_uid)
        # the VM's /tmp is its own (a tmpfs in its root), not the host's
        dst = "/tmp/ttfleet-exec-test-%d.txt" % os.getpid()
        self.addCleanup(lambda: os.path.exists(dst) and os.unlink(dst))
        r = self.pool.ctl("env", "cp", src, "u:%d:%s" % (vm, dst), tenant=A)
        self.assertEqual(r.rc, 0, r)
        self.assertFalse(os.path.exists(dst), "the VM wrote the host's /tmp")
        r = self.pool.ctl("env", "exec", "u", vm, "--", "stat", "-c", "%u", dst, tenant=A)
        self.assertEqual(int(r.data["stdout"]), self.nobody.pw_uid)
        # a file the user cannot write is refused by the guest, not written by root
        r = self.pool.ctl("env", "cp", src, "u:%d:/etc/ttfleet-must-not-exist" % vm, tenant=A)
        self.assertEqual(r.rc, harness.EXIT_STATUS, r)
        self.assertIn("GUEST_FAILED", r.err)
        self.assertFalse(os.path.exists("/etc/ttfleet-must-not-exist"))
