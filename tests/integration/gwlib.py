"""ttgw for integration tests: starts the gateway against a harness Pool.

Gateway(pool, tokens) writes the token file (lines TOKEN TENANT ROLE) under
the pool's directory, starts ttgw on 127.0.0.1 port 0 (ttgw picks a free
port and prints it, so no port can be stolen between picking and binding)
and waits until it answers. request() is a small HTTP client (http.client)
that returns (status, headers, parsed JSON or text).
"""

import http.client
import json
import os
import re
import time

import harness


def ttgw_binary():
    return os.environ.get("TTFLEET_TTGW") or os.path.join(harness.BUILD, "gw", "ttgw")


class Gateway:
    def __init__(self, pool, tokens, args=(), scheme="http"):
        self.scheme = scheme
        self.pool = pool
        self.tokens_path = os.path.join(pool.dir, "tokens")
        self.write_tokens(tokens)
        argv = [ttgw_binary(), "--broker", pool.clients_ep, "--events", pool.events_ep,
                "--listen", "127.0.0.1:0", "--tokens", self.tokens_path,
                "--admin-tenant", harness.ADMIN, "--timeout", "5000",
                "--keepalive-ms", "1000"] + list(args)
        self.binary = argv[0]
        # a second ttgw on the same pool gets a log of its own (its port is
        # read from it)
        log = os.path.join(pool.dir, "ttgw.log")
        n = 1
        while os.path.exists(log):
            n += 1
            log = os.path.join(pool.dir, "ttgw-%d.log" % n)
        self.daemon = harness.Daemon("ttgw", argv, log)
        self.started = time.time()
        self.daemon.start()
        self.port = harness.wait_for("ttgw to listen", self._port, timeout=20)
        self.base = "%s://127.0.0.1:%d" % (scheme, self.port)

    def _port(self):
        if not self.daemon.running():
            raise AssertionError("ttgw exited:\n" + self.daemon.log())
        m = re.search(r"listening on %s://127\.0\.0\.1:(\d+)" % self.scheme, self.daemon.log())
        return int(m.group(1)) if m else None

    def write_tokens(self, tokens):
        """tokens: [(token, tenant, role)]. Replaced atomically (rename)."""
        tmp = self.tokens_path + ".tmp"
        with open(tmp, "w") as f:
            f.write("# test tokens\n")
            for t in tokens:
                f.write(" ".join(t) + "\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.tokens_path)

    def request(self, method, path, body=None, token=None, headers=None, raw=None, timeout=30):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, path, body=data, headers=h)
            resp = conn.getresponse()
            text = resp.read()
            ctype = resp.getheader("Content-Type", "")
            parsed = json.loads(text) if ctype.startswith("application/json") else text.decode(
                errors="replace")
            return resp.status, dict(resp.getheaders()), parsed
        finally:
            conn.close()

    def stop(self):
        """Stops ttgw with SIGTERM; fails unless it exits 0 (a sanitizer
        build exits non-zero on a leak or a memory error)."""
        rc = self.daemon.stop()
        if rc not in (0, None):
            raise AssertionError("ttgw exited with %s:\n%s" % (rc, self.daemon.log()[-8000:]))
        return rc

    def log(self):
        return self.daemon.log()
