"""Helpers of the real-network tests (test_qemu_*_net.py).

- skip(): exit 77 (ctest SKIP_RETURN_CODE) with the reason on stdout, used
  only when the test is truly impossible here (no root, no network
  namespaces, no QEMU).
- build_guest(): the test guest (tools/mkguest.sh) under the build dir.
- Netns: network namespaces this test makes and always deletes.
- RESPONDER: a `process` engine image that answers like the test guest.
- fetch(): one HTTP GET or banner read, from the test's own namespace or
  from inside a namespace (through `ip netns exec`), bounded.

Traffic goes only to loopback or to addresses inside the namespaces the
test made.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import harness

SKIP = 77


def skip(why):
    print("SKIP: " + why)
    sys.stdout.flush()
    os._exit(SKIP)


def need_qemu():
    for prog in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(prog):
            skip("%s is not installed (tools/deps.sh installs qemu-system-x86 and qemu-utils)"
                 % prog)


def need_netns():
    if os.geteuid() != 0:
        skip("needs root to make network namespaces")
    name = "ttprobe%d" % os.getpid()
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        skip("network namespaces are not available: " + r.stderr.strip())
    subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def build_guest():
    """Builds (or reuses) the test guest; returns its image directory."""
    out = os.path.join(harness.BUILD, "guest", "ttguest")
    r = subprocess.run([os.path.join(harness.SOURCE, "tools", "mkguest.sh"), out],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise AssertionError("mkguest.sh failed:\n" + r.stdout + r.stderr)
    return out


def sh(*argv, check=True, timeout=20):
    r = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s -> %d\n%s%s" % (" ".join(map(str, argv)), r.returncode,
                                                 r.stdout, r.stderr))
    return r


class Netns:
    """Named network namespaces, deleted by close() (also at exit)."""

    def __init__(self):
        self.names = []
        self.procs = []
        import atexit
        atexit.register(self.close)
        harness.at_watchdog(self.close)  # the watchdog's exit skips atexit

    def add(self, name):
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def run(self, name, *argv, **kw):
        return sh("ip", "netns", "exec", name, *argv, **kw)

    def spawn(self, name, argv):
        """A background process inside name, killed by close()."""
        p = subprocess.Popen(["ip", "netns", "exec", name] + list(argv),
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        self.procs = []
        for name in reversed(self.names):
            sh("ip", "netns", "del", name, check=False)
        self.names = []


# A `process` engine VM: answers on every port of TTFLEET_VM_PORTS and on
# 22, 80, 8080 like the test guest: GET / -> "process vm ID ip IP env ENV
# port P", GET /cgi-bin/connect?IP:PORT -> tries an outbound connection.
RESPONDER = r"""#!/usr/bin/python3
import os, signal, socket, sys, threading
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
vid, ip, env = (os.environ.get(k, "") for k in ("TTFLEET_VM_ID", "TTFLEET_VM_IP", "TTFLEET_VM_ENV"))
ports = {22, 80, 8080} | {int(p) for p in os.environ.get("TTFLEET_VM_PORTS", "").split(",") if p}
def answer(c, port):
    try:
        c.settimeout(10)
        req = c.recv(1024).decode(errors="replace")
        path = req.split(" ")[1] if req.startswith("GET ") else "/"
        if path.startswith("/cgi-bin/connect?"):
            path = path[8:]
        if path.startswith("/connect?"):
            host, _, p = path[9:].partition(":")
            try:
                o = socket.create_connection((host, int(p)), timeout=3)
                o.settimeout(3)
                body = "connect %s ok: %s" % (path[9:], o.recv(200).decode(errors="replace").strip())
                o.close()
            except OSError:
                body = "connect %s failed" % path[9:]
        else:
            body = "process vm %s ip %s env %s port %d" % (vid, ip, env, port)
        c.sendall(("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n%s\n" % body).encode())
    except OSError:
        pass
    finally:
        c.close()
def serve(s, port):
    while True:
        c, _ = s.accept()
        threading.Thread(target=answer, args=(c, port), daemon=True).start()
for port in sorted(ports):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    threading.Thread(target=serve, args=(s, port), daemon=True).start()
print("responder: vm %s ports %s" % (vid, sorted(ports)), flush=True)
signal.pause()
"""

# Run in a namespace: connect to HOST PORT, send a GET of PATH (or nothing
# when PATH is "-"), print what comes back. Exit 3 when it cannot connect.
_CLIENT = r"""
import socket, sys
host, port, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
try:
    s = socket.create_connection((host, port), timeout=3)
except OSError as e:
    print("connect: %s" % e); sys.exit(3)
s.settimeout(8)
if path != "-":
    s.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
data = b""
try:
    while len(data) < 4096:
        b = s.recv(4096)
        if not b:
            break
        data += b
        if path == "-" and b"\n" in data:
            break
except OSError:
    pass
sys.stdout.write(data.decode(errors="replace"))
"""

# A listener for the VMs' outbound tries: answers "hello-from-client".
LISTENER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    try:
        c.sendall(b"hello-from-client\n")
    finally:
        c.close()
"""


def fetch(host, port, path="/", netns=None, timeout=20):
    """The answer text, or None if the connection failed."""
    argv = [sys.executable, "-c", _CLIENT, host, str(port), path]
    if netns:
        argv = ["ip", "netns", "exec", netns] + argv
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return r.stdout if r.returncode == 0 else None


def wait_answer(what, host, port, needle, path="/", netns=None, timeout=90):
    """Polls until the answer contains needle; returns (answer, seconds)."""
    t0 = time.monotonic()
    got = harness.wait_for(what, lambda: (lambda a: a if a and needle in a else None)(
        fetch(host, port, path, netns)), timeout=timeout, interval=0.3)
    return got, time.monotonic() - t0


def nft_elements(netns, name, kind="map", family="ip"):
    """The elements of our nftables map or set, as a sorted list of strings
    ("40001 : 10.10.0.2 . 80", "\"tt2\" . 10.10.0.2")."""
    r = sh("ip", "netns", "exec", netns, "nft", "list", kind, family, "ttfleet", name)
    m = re.search(r"elements = \{(.*?)\}", r.stdout, re.S)
    if not m:
        return []
    return sorted(" ".join(e.split()) for e in m.group(1).split(",") if e.strip())


def links(netns):
    """Names of the links in netns."""
    r = sh("ip", "-n", netns, "-o", "link", "show")
    return [line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines()]


class IpcWorkersPool(harness.Pool):
    """A pool whose workers endpoint is ipc://, so a worker inside another
    network namespace (--netns) reaches the broker through the file system."""

    def _pick_ports(self):
        super()._pick_ports()
        self.workers_ep = "ipc://" + os.path.join(self.dir, "workers.ipc")


def host_accel(pool, host):
    """HostInfo.accel of host_show (through the raw client: the field is
    newer than ttctl's printer). Fails unless it is "kvm" or "tcg"."""
    pb = harness.pb2()
    client = pool.client(tenant=harness.ADMIN)
    try:
        req = pb.Request()
        req.host_show.id = host
        rep = client.call("tt.admin", req)
    finally:
        client.close()
    if rep.status != pb.OK or rep.host.accel not in ("kvm", "tcg"):
        raise AssertionError("host show %s: status %d, accel %r" % (host, rep.status,
                                                                     rep.host.accel))
    return rep.host.accel


def veth_pair(ns, prefix, dev, host_ip, client_ip):
    """Two namespaces of ns, <prefix>h<pid> (the worker's host) and
    <prefix>c<pid> (a client), joined by a veth pair <dev>h<pid> /
    <dev>c<pid> with host_ip/24 and client_ip/24, both up. Returns
    (host ns, client ns)."""
    tag = str(os.getpid())
    hns = ns.add(prefix + "h" + tag)
    cns = ns.add(prefix + "c" + tag)
    hdev, cdev = dev + "h" + tag, dev + "c" + tag
    sh("ip", "link", "add", hdev, "netns", hns, "type", "veth", "peer", "name", cdev,
       "netns", cns)
    for name, dev, ip in ((hns, hdev, host_ip), (cns, cdev, client_ip)):
        sh("ip", "-n", name, "addr", "add", ip + "/24", "dev", dev)
        sh("ip", "-n", name, "link", "set", dev, "up")
    return hns, cns


def install_images(pool, guest, responder=False):
    """Puts the test guest (as "ttguest") and, with responder, the RESPONDER
    process image into pool's image folder."""
    shutil.copytree(guest, os.path.join(pool.images, "ttguest"))
    if responder:
        path = os.path.join(pool.images, "responder")
        with open(path, "w") as f:
            f.write(RESPONDER)
        os.chmod(path, 0o755)


def diagnosed(pool, fn):
    """Runs fn(); on a failure prints diagnostics(pool), then raises it on."""
    try:
        return fn()
    except BaseException:
        print(diagnostics(pool))
        raise


def diagnostics(pool):
    """The daemons' logs and the tail of every VM console, for a failure."""
    out = [pool.logs()]
    for host in pool.hosts:
        vms = os.path.join(pool.worker_state(host), "vms")
        for vm in sorted(os.listdir(vms)) if os.path.isdir(vms) else []:
            path = os.path.join(vms, vm, "console.log")
            try:
                with open(path, errors="replace") as f:
                    out.append("==== %s vm %s console ====\n%s" % (host, vm, f.read()[-3000:]))
            except OSError:
                pass
    return "\n".join(out)
