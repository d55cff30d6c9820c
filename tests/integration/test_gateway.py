"""ttgw against real daemons: the REST API end to end, every error status,
idempotent retries, tenancy, Server-Sent Events, /metrics through
python3-prometheus-client's parser, and every answer checked against
docs/openapi.yaml (openapi_check.py).

One pool (a broker and one worker with the process engine) and one ttgw
serve the whole class; each test uses its own env names.
"""

import http.client
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from prometheus_client.parser import text_string_to_metric_families

import gwlib
import harness
import openapi_check

USER = "u" * 24
OTHER = "o" * 24
ADMIN = "a" * 24
GONE = "g" * 24
OPS = "p" * 24
SNEAK = "s" * 24
README_T = "r" * 32


class SseReader(threading.Thread):
    """Reads GET /v1/events into self.events [(kind, data)] until close()."""

    def __init__(self, gw, token, query="", last_id=None):
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=30)
        headers = {"Authorization": "Bearer " + token}
        if last_id is not None:
            headers["Last-Event-ID"] = str(last_id)
        self.conn.request("GET", "/v1/events" + query, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.ctype = self.resp.getheader("Content-Type")
        self.events = []
        self.ids = []  # the id: of each event in self.events (None: none)
        self.comments = 0
        if self.status == 200:
            self.start()

    def run(self):
        kind, data, eid = None, "", None
        try:
            while True:
                line = self.resp.fp.readline()
                if not line:
                    return
                line = line.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments += 1
                elif line.startswith("id: "):
                    eid = int(line[4:])
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    data += line[6:]
                elif line == "" and kind:
                    self.ids.append(eid)
                    self.events.append((kind, json.loads(data)))
                    kind, data, eid = None, "", None
        except (OSError, ValueError, AttributeError):
            return

    def kinds(self, env=None):
        return [k for k, d in self.events if env is None or d.get("env") == env]

    def close(self):
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.conn.close()


class Gateway(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        harness.watchdog(280)
        cls.pool = harness.Pool(hosts={"h1": {"cpu": 8, "mem": 8192}},
                                broker_args=["--cpu-overcommit", "4",
                                             "--mem-overcommit", "1.5"]).start()
        cls.tokens = [(USER, "alice", "user"), (OTHER, "bob", "user"),
                      (ADMIN, harness.ADMIN, "admin"), (GONE, "carol", "user"),
                      (OPS, "ops", "admin"), (SNEAK, harness.ADMIN, "user"),
                      (README_T, "me", "user")]
        cls.gw = gwlib.Gateway(cls.pool, cls.tokens, args=["--history-interval", "1"])

    @classmethod
    def tearDownClass(cls):
        cls.gw.stop()
        cls.pool.close()

    def call(self, method, path, body=None, token=USER, expect=None, documented=True, **kw):
        status, headers, data = self.gw.request(method, path, body=body, token=token, **kw)
        if documented:
            openapi_check.check(method, path, status, data, headers.get("Content-Type", ""))
        else:  # a path the API does not have: still the documented error body
            openapi_check.check_schema("Error", data)
        if expect is not None:
            self.assertEqual(status, expect, "%s %s -> %d %r\n%s" % (
                method, path, status, data, self.gw.log()[-3000:]))
        if status >= 400 and headers.get("Content-Type", "").startswith("application/json"):
            self.assertIn("error", data)
        return status, headers, data

    def err(self, method, path, status, name, **kw):
        _, _, data = self.call(method, path, expect=status, **kw)
        self.assertEqual(data["error"]["status"], name, data)
        self.assertTrue(data["error"]["message"])
        return data

    # ---- the document and the server agree ----

    def test_routes_documented(self):
        for method, path in openapi_check.server_routes():
            concrete = path.replace("*", "x") if path != "/*" else "/index.html"
            openapi_check.operation(method, concrete)

    def test_openapi_matches_proto(self):
        """Every field of every message the API carries is in
        docs/openapi.yaml and nothing else is (openapi_check.drift)."""
        problems = openapi_check.drift()
        self.assertEqual(problems, [], "docs/openapi.yaml has drifted from schema/ttfleet.proto:\n" +
                         "\n".join(problems))

    def test_one_json_dialect(self):
        """One env as GET /v1/envs/NAME, ttctl --json env show and the Python
        SDK's EnvInfo.to_dict() write it: the same keys and values (the
        .proto's field names, enums as lower-case text)."""
        harness.ttfleet_package()
        import ttfleet
        body = {"name": "dialect", "images": [{"image": "sleeper", "dup": 2}], "cpu": 1,
                "mem_mib": 128, "ports": [80]}
        self.call("POST", "/v1/envs", body, expect=201)
        try:
            _, _, rest = self.call("GET", "/v1/envs/dialect", expect=200)
            ctl = self.pool.ctl("env", "show", "dialect", tenant="alice")
            self.assertEqual(ctl.rc, 0, ctl.err)
            with ttfleet.Client(broker=self.pool.clients_ep, tenant="alice") as client:
                py = client.get_env("dialect").to_dict()
                py_list = [e.to_dict() for e in client.list_envs()]
            self.assertEqual(rest, ctl.data)
            self.assertEqual(rest, py)
            self.assertEqual({vm["state"] for vm in rest["vms"]}, {"running"})
            self.assertEqual({vm["mem_mib"] for vm in rest["vms"]}, {128})
            self.assertNotIn("mem", rest["vms"][0])
            # the list: every env the same in all three
            _, _, rest_list = self.call("GET", "/v1/envs", expect=200)
            ctl_list = self.pool.ctl("env", "list", tenant="alice")
            self.assertEqual(ctl_list.rc, 0, ctl_list.err)
            self.assertEqual(rest_list, ctl_list.data)
            self.assertEqual(rest_list["envs"], py_list)
            # hosts and the pool status: the same keys
            _, _, rest_host = self.call("GET", "/v1/hosts/h1", token=ADMIN, expect=200)
            ctl_host = self.pool.ctl("host", "show", "h1", tenant=harness.ADMIN)
            self.assertEqual(sorted(rest_host), sorted(ctl_host.data))
            _, _, rest_pool = self.call("GET", "/v1/status", expect=200)
            ctl_pool = self.pool.ctl("status", tenant="alice")
            self.assertEqual(sorted(rest_pool), sorted(ctl_pool.data))
        finally:
            self.call("DELETE", "/v1/envs/dialect", expect=200)

    def test_labels(self):
        """Labels given at create (REST, ttctl, Python) are in env show/list
        and in the events; env list filters on them in all three."""
        harness.ttfleet_package()
        import ttfleet
        sse = SseReader(self.gw, USER)
        time.sleep(0.5)
        made = []
        try:
            body = {"name": "lab1", "images": [{"image": "sleeper"}], "cpu": 1, "mem_mib": 128,
                    "labels": ["team=ci", "run=42"]}
            _, _, env = self.call("POST", "/v1/envs", body, expect=201)
            made.append("lab1")
            self.assertEqual(env["labels"], ["team=ci", "run=42"])
            for bad in (["team"], ["team=c i"], ["a=1", "a=2"], ["k%d=v" % i for i in range(17)],
                        ["x" * 64 + "=v"]):
                self.err("POST", "/v1/envs", 422, "BAD_REQUEST",
                         body=dict(body, name="labbad", labels=bad))
            r = self.pool.ctl("env", "create", "lab2", "--image", "sleeper", "--cpu", 1, "--mem",
                              128, "--label", "team=qa", tenant="alice")
            self.assertEqual(r.rc, 0, r.err)
            made.append("lab2")
            r = self.pool.ctl("env", "create", "labx", "--image", "sleeper", "--label", "a=1",
                              "--label", "a=2", tenant="alice")
            self.assertNotEqual(r.rc, 0)
            self.assertIn("given twice", r.err)
            with ttfleet.Client(broker=self.pool.clients_ep, tenant="alice") as client:
                client.env_create("lab3", ["sleeper"], cpu=1, mem_mib=128,
                                  labels={"team": "ci", "run": "43"})
                made.append("lab3")
                py = [e.name for e in client.list_envs(labels={"team": "qa"})]
                py2 = [e.name for e in client.list_envs(labels=["team=ci", "run=43"])]
                self.assertEqual(client.get_env("lab3").label_dict, {"team": "ci", "run": "43"})
            self.assertEqual(py, ["lab2"])
            self.assertEqual(py2, ["lab3"])
            _, _, ci = self.call("GET", "/v1/envs?labels=team%3Dci", expect=200)
            self.assertEqual([e["name"] for e in ci["envs"]], ["lab1", "lab3"])
            _, _, one = self.call("GET", "/v1/envs?labels=team=ci&labels=run=42", expect=200)
            self.assertEqual([e["name"] for e in one["envs"]], ["lab1"])
            self.err("GET", "/v1/envs?labels=bad", 422, "BAD_REQUEST")
            r = self.pool.ctl("env", "list", "--label", "team=qa", tenant="alice")
            self.assertEqual([e["name"] for e in r.data["envs"]], ["lab2"])
            self.assertEqual(r.data["envs"][0]["labels"], ["team=qa"])
            r = self.pool.ctl("env", "show", "lab1", tenant="alice", json_out=False)
            self.assertIn("labels    team=ci,run=42", r.out)
            r = self.pool.ctl("-o", "wide", "env", "list", tenant="alice", json_out=False)
            self.assertIn("LABELS", r.out.splitlines()[0])
            harness.wait_for("env.created of lab1 with its labels", lambda: any(
                k == "env.created" and d.get("labels") == ["team=ci", "run=42"]
                for k, d in sse.events if d.get("env") == "lab1"))
        finally:
            sse.close()
            for name in made:
                self.call("DELETE", "/v1/envs/" + name, expect=200)

    # ---- end to end ----

    def test_lifecycle(self):
        sse = SseReader(self.gw, USER)
        foreign = SseReader(self.gw, OTHER)
        admin = SseReader(self.gw, ADMIN, "?topic=env.")
        try:
            self.assertEqual(sse.status, 200)
            self.assertTrue(sse.ctype.startswith("text/event-stream"))
            time.sleep(0.5)  # let the SUB sockets connect before the first event
            body = {"name": "web", "images": [{"image": "sleeper", "dup": 2}], "cpu": 1,
                    "memMib": 256}
            _, h, env = self.call("POST", "/v1/envs", body, expect=201,
                                  headers={"Idempotency-Key": "create-web-1"})
            self.assertEqual(env["name"], "web")
            self.assertEqual(env["tenant"], "alice")
            self.assertEqual(len(env["vms"]), 2)
            self.assertEqual({vm["mem_mib"] for vm in env["vms"]}, {256})
            # the same key again: the first attempt's outcome, not a second env
            _, _, again = self.call("POST", "/v1/envs", body, expect=201,
                                    headers={"Idempotency-Key": "create-web-1"})
            self.assertEqual([v["vm_id"] for v in again["vms"]], [v["vm_id"] for v in env["vms"]])
            # a new key: the name is taken
            self.err("POST", "/v1/envs", 409, "ALREADY_EXISTS", body=body)
            _, _, shown = self.call("GET", "/v1/envs/web", expect=200)
            self.assertEqual(shown["vm_count"], 2)
            self.assertTrue(all(vm["state"] == "running" for vm in shown["vms"]))
            _, _, lst = self.call("GET", "/v1/envs", expect=200)
            self.assertIn("web", [e["name"] for e in lst["envs"]])
            # another tenant: exactly like a missing env
            self.err("GET", "/v1/envs/web", 404, "NOT_FOUND", token=OTHER)
            self.err("DELETE", "/v1/envs/web", 404, "NOT_FOUND", token=OTHER)
            _, _, other = self.call("GET", "/v1/envs", token=OTHER, expect=200)
            self.assertNotIn("web", [e["name"] for e in other["envs"]])
            # admin sees every tenant's envs; a user may not ask
            _, _, every = self.call("GET", "/v1/envs?all=true", token=ADMIN, expect=200)
            self.assertIn(("alice", "web"), [(e["tenant"], e["name"]) for e in every["envs"]])
            self.err("GET", "/v1/envs?all=true", 403, "FORBIDDEN")
            # console, extend, pause/resume
            vm = shown["vms"][0]
            _, _, con = self.call("GET", "/v1/envs/web/vms/%d/console" % vm["vm_id"], expect=200)
            self.assertEqual(con["vm_id"], vm["vm_id"])
            _, _, ext = self.call("POST", "/v1/envs/web/extend", {"lifetime": 7200}, expect=200)
            self.assertEqual(ext["lifetime"], 7200)
            self.err("POST", "/v1/envs/web/extend", 403, "FORBIDDEN", body={"lifetime": 86400})
            _, _, p = self.call("POST", "/v1/envs/web/pause", expect=200)
            self.assertEqual(p["state"], "paused")
            _, _, p = self.call("POST", "/v1/envs/web/resume", expect=200)
            self.assertEqual(p["state"], "running")
            self.err("PATCH", "/v1/envs/web", 409, "INVALID_STATE", body={"cpu": 2})
            _, _, up = self.call("PATCH", "/v1/envs/web", {"set_ports": True, "ports": [80]},
                                 expect=200)
            self.assertIn(80, up["ports"])
            harness.wait_for("env.created on the stream", lambda: "env.created" in sse.kinds("web"))
            self.call("DELETE", "/v1/envs/web", expect=200)
            self.err("GET", "/v1/envs/web", 404, "NOT_FOUND")
            harness.wait_for("env.deleted on the stream", lambda: "env.deleted" in sse.kinds("web"))
            harness.wait_for("admin stream sees alice's env", lambda: "env.deleted" in admin.kinds("web"))
            for kind, data in sse.events + admin.events:
                openapi_check.check_schema("Event", data)
            self.assertTrue(all(k.startswith("env.") for k in admin.kinds()))
            # bob's stream never saw alice's env
            self.assertEqual(foreign.kinds("web"), [])
            self.assertTrue(all(d.get("tenant") == "bob" for _, d in foreign.events))
        finally:
            for s in (sse, foreign, admin):
                s.close()

    def test_stop_start_too_soon(self):
        self.call("POST", "/v1/envs", {"name": "cycle", "images": [{"image": "sleeper"}],
                                       "cpu": 1, "mem_mib": 128}, expect=201)
        _, _, s = self.call("POST", "/v1/envs/cycle/stop", expect=200)
        self.assertEqual(s["state"], "stopped")
        # min-stop-interval is 1 s in the harness: right away is too soon
        status, _, data = self.call("POST", "/v1/envs/cycle/start")
        if status == 429:
            self.assertEqual(data["error"]["status"], "TOO_SOON")
            time.sleep(1.2)
            self.call("POST", "/v1/envs/cycle/start", expect=200)
        else:
            self.assertEqual(status, 200)
        self.call("DELETE", "/v1/envs/cycle", expect=200)

    # ---- bad input ----

    def test_bad_input(self):
        self.err("POST", "/v1/envs", 400, "INVALID_JSON", raw=b"{\"name\": ",
                 headers={"Content-Type": "application/json"})
        self.err("POST", "/v1/envs", 400, "INVALID_JSON", raw=b"[1,2]",
                 headers={"Content-Type": "application/json"})
        d = self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": 5})
        self.assertIn("name", d["error"]["message"])
        d = self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x", "cpu": -1})
        self.assertIn("cpu", d["error"]["message"])
        d = self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x", "bogus": 1})
        self.assertIn("bogus", d["error"]["message"])
        self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x", "cpu": 1, "images": "no"})
        self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x", "cpu": 5000000000})
        self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x", "mem_mib": 1, "memMib": 2})
        self.err("POST", "/v1/envs", 400, "INVALID_JSON", raw=b'{"name":"a","name":"b"}',
                 headers={"Content-Type": "application/json"})
        self.err("POST", "/v1/envs", 400, "BAD_REQUEST")  # no body
        self.err("POST", "/v1/envs", 415, "UNSUPPORTED_MEDIA_TYPE", raw=b"name=x",
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        self.err("POST", "/v1/envs/x/stop", 400, "BAD_REQUEST", body={"name": "x"})
        self.err("GET", "/v1/envs?nope=1", 400, "BAD_REQUEST")
        self.err("GET", "/v1/envs?all=maybe", 400, "BAD_REQUEST")
        self.err("POST", "/v1/envs", 400, "BAD_REQUEST", body={"name": "x"},
                 headers={"Idempotency-Key": "k" * 65})
        # the broker's own validation: 422
        self.err("POST", "/v1/envs", 422, "BAD_REQUEST",
                 body={"name": "bad name!", "images": [{"image": "sleeper"}]})
        self.err("GET", "/v1/envs/web/vms/notanumber/console", 400, "BAD_REQUEST")
        # no capacity, unavailable image
        self.err("POST", "/v1/envs", 503, "NO_CAPACITY",
                 body={"name": "big", "images": [{"image": "sleeper"}], "cpu": 64})
        self.err("POST", "/v1/envs", 503, "UNAVAILABLE",
                 body={"name": "noimg", "images": [{"image": "no-such-image"}]})
        # huge body: refused from its Content-Length, before it is read
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=20) as c:
            c.sendall(b"POST /v1/envs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      USER.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 2097152\r\n\r\n")
            resp = http.client.HTTPResponse(c)
            resp.begin()
            data = json.loads(resp.read())
            self.assertEqual(resp.status, 413)
            self.assertEqual(data["error"]["status"], "TOO_LARGE")
            openapi_check.check("POST", "/v1/envs", 413, data)
        # ... and a chunked one (no Content-Length) is cut off at the limit
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=20) as c:
            c.sendall(b"POST /v1/envs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      USER.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 65536
            try:
                for _ in range(20):
                    c.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                c.sendall(b"0\r\n\r\n")
            except OSError:
                pass  # the gateway may answer and close before the whole body went out
            resp = http.client.HTTPResponse(c)
            resp.begin()
            self.assertEqual(resp.status, 413)
        # routes and methods
        self.err("GET", "/v1/nothing", 404, "NOT_FOUND", documented=False)
        self.err("GET", "/v1/envs/a/b/c/d/e/f/g/h", 404, "NOT_FOUND", documented=False)
        status, headers, data = self.gw.request("PUT", "/v1/envs", token=USER)
        self.assertEqual(status, 405)
        self.assertIn("POST", headers.get("Allow", ""))
        self.assertEqual(data["error"]["status"], "METHOD_NOT_ALLOWED")
        # the gateway and the broker are unaffected
        self.call("GET", "/v1/status", expect=200)
        self.assertEqual(self.pool.ctl("host", "list", tenant=harness.ADMIN).rc, 0)

    def test_auth(self):
        status, headers, data = self.gw.request("GET", "/v1/envs")
        self.assertEqual(status, 401)
        self.assertIn("Bearer", headers.get("WWW-Authenticate", ""))
        self.assertEqual(data["error"]["status"], "UNAUTHENTICATED")
        self.err("GET", "/v1/envs", 401, "UNAUTHENTICATED", token="x" * 24)
        self.err("GET", "/v1/envs", 401, "UNAUTHENTICATED", token=USER[:-1])
        self.err("GET", "/v1/envs", 401, "UNAUTHENTICATED", token=None,
                 headers={"Authorization": "Basic dXNlcjpwdw=="})
        self.err("GET", "/v1/hosts", 403, "FORBIDDEN")
        self.err("POST", "/v1/hosts/h1/drain", 403, "FORBIDDEN")
        _, _, hosts = self.call("GET", "/v1/hosts", token=ADMIN, expect=200)
        self.assertEqual([h["id"] for h in hosts["hosts"]], ["h1"])
        self.call("GET", "/v1/hosts/h1", token=ADMIN, expect=200)
        self.err("GET", "/v1/hosts/h9", 404, "NOT_FOUND", token=ADMIN)
        # a token removed from the file stops working at the next request
        self.call("GET", "/v1/envs", token=GONE, expect=200)
        self.gw.write_tokens([t for t in self.tokens if t[0] != GONE])
        self.err("GET", "/v1/envs", 401, "UNAUTHENTICATED", token=GONE)
        self.call("GET", "/v1/envs", token=USER, expect=200)
        self.gw.write_tokens(self.tokens)
        self.call("GET", "/v1/envs", token=GONE, expect=200)
        # demoted by an in-place rewrite that keeps size and mtime (cp -p,
        # rsync -t): only the ctime moves, and that is enough
        self.call("GET", "/v1/hosts", token=OPS, expect=200)
        st = os.stat(self.gw.tokens_path)
        with open(self.gw.tokens_path, "r+") as f:
            text = f.read()
            demoted = text.replace(OPS + " ops admin\n", OPS + " ops user \n")
            self.assertNotEqual(demoted, text)
            self.assertEqual(len(demoted), len(text))
            f.seek(0)
            f.write(demoted)
        os.utime(self.gw.tokens_path, ns=(st.st_atime_ns, st.st_mtime_ns))
        st2 = os.stat(self.gw.tokens_path)
        self.assertEqual((st2.st_size, st2.st_mtime_ns, st2.st_ino),
                         (st.st_size, st.st_mtime_ns, st.st_ino))
        self.err("GET", "/v1/hosts", 403, "FORBIDDEN", token=OPS)
        self.gw.write_tokens(self.tokens)
        self.call("GET", "/v1/hosts", token=OPS, expect=200)

    def test_user_token_never_admin(self):
        """A `user` line in the admin tenant is refused at load with a clear
        line: its env ops would carry the admin role at the broker."""
        self.assertRegex(self.gw.log(), r"tokens:\d+: a user token may not act in the admin tenant")
        self.err("GET", "/v1/whoami", 401, "UNAUTHENTICATED", token=SNEAK)
        month = {"name": "longlived", "images": [{"image": "sleeper"}], "cpu": 1, "mem_mib": 128,
                 "lifetime": 30 * 86400}
        self.err("POST", "/v1/envs", 401, "UNAUTHENTICATED", token=SNEAK, body=month)
        # a user's lifetime limit holds for a real user token
        self.err("POST", "/v1/envs", 403, "FORBIDDEN", body=month)
        self.err("GET", "/v1/envs/longlived", 404, "NOT_FOUND", token=ADMIN)

    def test_readme_example(self):
        """The README's token recipe and its first REST call, run as written
        (only the port is this gateway's): the file is for its owner only,
        and the create is answered 201, not 415."""
        with open(os.path.join(harness.SOURCE, "README.md")) as f:
            readme = f.read()
        block = readme[readme.index("`ttgw` puts a REST API"):]
        block = block[:block.index("\n- Dashboard")]
        lines = [l[4:] for l in block.splitlines() if l.startswith("    ")]
        recipe = [l for l in lines if "tokens" in l and not l.startswith(("build/", "T="))
                  and "--tokens" not in l]
        self.assertGreaterEqual(len(recipe), 2, recipe)
        i = next(k for k, l in enumerate(lines) if l.startswith("curl -H"))
        curl = lines[i]
        while curl.endswith("\\"):
            i += 1
            curl = curl[:-1] + lines[i]
        self.assertIn("http://127.0.0.1:8080/v1/envs", curl)
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["bash", "-ec", "umask 022; " + "\n".join(recipe)], cwd=d, check=True,
                           timeout=10)
            mode = os.stat(os.path.join(d, "tokens")).st_mode & 0o777
            self.assertEqual(mode, 0o600, oct(mode))
            with open(os.path.join(d, "tokens")) as f:
                entries = [l.split() for l in f]
            self.assertEqual([(e[1], e[2]) for e in entries], [("me", "user"), ("admin", "admin")])
            self.assertTrue(all(16 <= len(e[0]) <= 256 for e in entries))
        out = subprocess.run(["bash", "-ec", curl.replace("http://127.0.0.1:8080", self.gw.base)],
                             env=dict(os.environ, T=README_T), capture_output=True, text=True,
                             timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        env = json.loads(out.stdout)
        self.assertEqual((env.get("name"), env.get("tenant"), env.get("vm_count")), ("web", "me", 2),
                         out.stdout)
        self.call("DELETE", "/v1/envs/web", token=README_T, expect=200)

    def test_whoami(self):
        _, _, me = self.call("GET", "/v1/whoami", expect=200)
        self.assertEqual(me, {"tenant": "alice", "role": "user"})
        _, _, me = self.call("GET", "/v1/whoami", token=ADMIN, expect=200)
        self.assertEqual(me["role"], "admin")
        self.err("GET", "/v1/whoami", 401, "UNAUTHENTICATED", token=None)

    def test_drain(self):
        _, _, h = self.call("POST", "/v1/hosts/h1/drain", {}, token=ADMIN, expect=200)
        _, _, shown = self.call("GET", "/v1/hosts/h1", token=ADMIN, expect=200)
        self.assertTrue(shown["draining"])
        self.call("POST", "/v1/hosts/h1/drain", {"undo": True}, token=ADMIN, expect=200)
        _, _, shown = self.call("GET", "/v1/hosts/h1", token=ADMIN, expect=200)
        self.assertFalse(shown["draining"])

    def test_host_remove(self):
        """DELETE /v1/hosts/{id}: the registry row of host_remove is its
        whole route (admin only, ?force= from the query)."""
        self.err("DELETE", "/v1/hosts/nohost", 404, "NOT_FOUND", token=ADMIN)
        self.pool.hosts["hx"] = {"cpu": 1, "mem": 256}
        self.pool.start_worker("hx")
        self.pool.wait_online(["hx"])
        self.pool.stop_worker("hx")
        self.err("DELETE", "/v1/hosts/hx", 403, "FORBIDDEN")
        self.call("GET", "/v1/hosts/hx", token=ADMIN, expect=200)
        self.call("DELETE", "/v1/hosts/hx?force=true", token=ADMIN, expect=200)
        self.err("GET", "/v1/hosts/hx", 404, "NOT_FOUND", token=ADMIN)
        self.err("DELETE", "/v1/hosts/hx?force=maybe", 400, "BAD_REQUEST", token=ADMIN)

    def test_slow_client_does_not_block(self):
        """A connection that sends half a body and stalls, and an open
        event stream, do not hold up other requests."""
        stall = socket.create_connection(("127.0.0.1", self.gw.port))
        try:
            stall.sendall(b"POST /v1/envs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                          USER.encode() + b"\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"name\":")
            sse = SseReader(self.gw, USER)
            try:
                t0 = time.monotonic()
                for _ in range(5):
                    self.call("GET", "/v1/status", expect=200)
                self.assertLess(time.monotonic() - t0, 10)
            finally:
                sse.close()
        finally:
            stall.close()

    def test_dashboard_files(self):
        for path, ctype in (("/", "text/html"), ("/app.js", "text/javascript"),
                            ("/style.css", "text/css")):
            status, headers, body = self.gw.request("GET", path)
            self.assertEqual(status, 200)
            self.assertTrue(headers["Content-Type"].startswith(ctype))
            self.assertIn("default-src 'self'", headers.get("Content-Security-Policy", ""))
            openapi_check.check("GET", path, status, body, headers["Content-Type"])
        self.err("GET", "/nothing.js", 404, "NOT_FOUND", token=None)

    def test_metrics(self):
        self.call("POST", "/v1/envs", {"name": "metered", "images": [{"image": "sleeper",
                                       "dup": 3}], "cpu": 1, "mem_mib": 100}, expect=201)
        try:
            time.sleep(2.1)  # past the scrape cache
            status, headers, text = self.gw.request("GET", "/metrics")
            self.assertEqual(status, 200)
            openapi_check.check("GET", "/metrics", status, text, headers["Content-Type"])
            samples = {}
            for fam in text_string_to_metric_families(text):
                for s in fam.samples:
                    samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
            def get(name, **labels):
                return samples.get((name, tuple(sorted(labels.items()))))
            self.assertEqual(get("ttfleet_broker_up"), 1)
            self.assertEqual(get("ttfleet_hosts", state="online"), 1)
            self.assertEqual(get("ttfleet_hosts", state="down"), 0)
            # capacity, allocatable (capacity x the broker's overcommit
            # ratio) and allocated, per host and for the pool; bytes
            mib = 1 << 20
            self.assertEqual(get("ttfleet_host_capacity_cpus", host="h1"), 8)
            self.assertEqual(get("ttfleet_host_allocatable_cpus", host="h1"), 32)
            self.assertGreaterEqual(get("ttfleet_host_allocated_cpus", host="h1"), 3)
            self.assertEqual(get("ttfleet_host_capacity_memory_bytes", host="h1"), 8192 * mib)
            self.assertEqual(get("ttfleet_host_allocatable_memory_bytes", host="h1"), 12288 * mib)
            self.assertGreaterEqual(get("ttfleet_host_allocated_memory_bytes", host="h1"),
                                    300 * mib)
            self.assertEqual(get("ttfleet_pool_allocatable_cpus"), 32)
            self.assertEqual(get("ttfleet_pool_capacity_memory_bytes"), 8192 * mib)
            self.assertEqual(get("ttfleet_pool_allocated_cpus"),
                             get("ttfleet_host_allocated_cpus", host="h1"))
            self.assertEqual(get("ttfleet_pool_overcommit_ratio", resource="cpu"), 4)
            self.assertEqual(get("ttfleet_pool_overcommit_ratio", resource="memory"), 1.5)
            self.assertEqual(get("ttfleet_pool_overcommit_ratio", resource="disk"), 1)
            self.assertGreater(get("ttfleet_broker_start_time_seconds"), time.time() - 600)
            # the gateway's build and process
            version = subprocess.run([self.gw.binary, "--version"], capture_output=True,
                                     text=True, timeout=10).stdout.split()[-1]
            self.assertEqual(get("ttfleet_build_info", version=version), 1)
            self.assertGreater(get("process_cpu_seconds_total"), 0)
            self.assertGreater(get("process_resident_memory_bytes"), 1 << 20)
            self.assertGreater(get("process_open_fds"), 3)
            self.assertAlmostEqual(get("process_start_time_seconds"), self.gw.started, delta=5)
            self.assertGreaterEqual(get("ttfleet_envs", state="running"), 1)
            self.assertGreaterEqual(get("ttfleet_vms", state="running", engine="process"), 3)
            self.assertGreaterEqual(get("ttgw_requests_total", route="env_create", code="201"), 1)
            self.assertGreaterEqual(
                get("ttgw_request_duration_seconds_count", route="env_create"), 1)
            self.assertGreaterEqual(
                get("ttgw_broker_roundtrip_seconds_count", op="env_create"), 1)
            self.assertEqual(get("ttgw_request_duration_seconds_bucket", route="env_create",
                                 le="+Inf"),
                             get("ttgw_request_duration_seconds_count", route="env_create"))
            # the broker's own series (broker_stats)
            self.assertGreaterEqual(get("ttfleet_broker_requests_total", op="env_create",
                                        status="OK"), 1)
            self.assertGreaterEqual(get("ttfleet_broker_commit_latency_seconds_count"), 1)
            self.assertEqual(get("ttfleet_broker_commit_latency_seconds_bucket", le="+Inf"),
                             get("ttfleet_broker_commit_latency_seconds_count"))
            self.assertGreaterEqual(get("ttfleet_broker_request_latency_seconds_count",
                                        op="env_create"), 1)
            self.assertGreaterEqual(get("ttfleet_broker_batch_size_count"), 1)
            self.assertIsNotNone(get("ttfleet_broker_commit_queue_depth"))
            # the create waited for h1's worker: its command round trip is timed
            self.assertGreaterEqual(get("ttfleet_broker_worker_latency_seconds_count", host="h1"), 1)
            self.assertEqual(get("ttfleet_broker_worker_latency_seconds_bucket", host="h1",
                                 le="+Inf"),
                             get("ttfleet_broker_worker_latency_seconds_count", host="h1"))
            self.assertEqual(get("ttfleet_queue_depth"), 0)
            self.assertEqual(get("ttfleet_queue_oldest_wait_seconds"), 0)
            lint_metrics(self, text)
        finally:
            self.call("DELETE", "/v1/envs/metered", expect=200)

    def test_packaged_alerts_and_grafana(self):
        """packaging/prometheus/ttfleet.rules.yml passes `promtool check
        rules`; it and packaging/grafana/ttfleet.json (parsed) name only
        series /metrics exposes, and each alert the issue asks for is there."""
        root = os.path.join(os.path.dirname(__file__), "..", "..", "packaging")
        rules = os.path.join(root, "prometheus", "ttfleet.rules.yml")
        r = subprocess.run(["promtool", "check", "rules", rules], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.call("POST", "/v1/envs", {"name": "graphed", "images": [{"image": "sleeper"}],
                                       "cpu": 1, "mem_mib": 64}, expect=201)
        try:
            time.sleep(2.1)  # past the scrape cache
            _, _, text = self.gw.request("GET", "/metrics")
        finally:
            self.call("DELETE", "/v1/envs/graphed", expect=200)
        exposed = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
        import yaml
        exprs = {}
        for group in yaml.safe_load(open(rules))["groups"]:
            for rule in group["rules"]:
                exprs["rule " + rule["alert"]] = rule["expr"]
        self.assertLessEqual({"TtfleetHostDown", "TtfleetPoolFull", "TtfleetQueueWaiting",
                              "TtfleetCommitLatencyHigh"},
                             {k[5:] for k in exprs})
        dash = json.load(open(os.path.join(root, "grafana", "ttfleet.json")))
        titles = []
        for panel in dash["panels"]:
            titles.append(panel["title"])
            for t in panel["targets"]:
                exprs["panel %s/%s" % (panel["title"], t["refId"])] = t["expr"]
        for v in dash["templating"]["list"]:
            if isinstance(v.get("query"), dict):
                exprs["variable " + v["name"]] = v["query"]["query"]
        for want in ("Pool utilisation", "Envs by state", "VMs by state", "Admission queue",
                     "Create latency", "Commit latency"):
            self.assertTrue([t for t in titles if t.startswith(want)], (want, titles))
        for where, expr in exprs.items():
            names = set(re.findall(r"\b(?:ttfleet|ttgw|process)_[a-z0-9_]+", expr))
            self.assertTrue(names, "%s names no ttfleet series: %s" % (where, expr))
            self.assertLessEqual(names, exposed, "%s: %s" % (where, names - exposed))


    # ---- events: ids, Last-Event-ID replay, order ----

    def test_events_resume(self):
        """A stream that reconnects with Last-Event-ID gets every event of
        its tenant it missed, once, in order; another tenant's events that
        happened meanwhile are not replayed to it; ids only grow."""
        ref = SseReader(self.gw, USER, "?env=resumed")
        first = SseReader(self.gw, USER, "?env=resumed")
        noise = None
        again = None
        try:
            self.call("POST", "/v1/envs", {"name": "resumed", "images": [{"image": "sleeper",
                                           "dup": 2}], "cpu": 1, "mem_mib": 64}, expect=201)
            harness.wait_for("the first stream sees env.created",
                             lambda: "env.created" in first.kinds())
            first.close()
            seen = len(first.events)
            last = first.ids[seen - 1]
            # while it is away: its env changes, another tenant is busy
            self.call("POST", "/v1/envs/resumed/stop", expect=200)
            self.call("POST", "/v1/envs", {"name": "resumed", "images": [{"image": "sleeper"}],
                                           "cpu": 1, "mem_mib": 64}, token=OTHER, expect=201)
            noise = True
            self.call("DELETE", "/v1/envs/resumed", expect=200)
            harness.wait_for("the reference stream sees env.deleted",
                             lambda: "env.deleted" in ref.kinds())
            again = SseReader(self.gw, USER, "?env=resumed", last_id=last)
            self.assertEqual(again.status, 200)
            want = ref.ids[ref.ids.index(last) + 1:]
            self.assertTrue(want)
            harness.wait_for("the replay to catch up",
                             lambda: len(again.ids) >= len(want), timeout=20)
            time.sleep(0.5)  # nothing more (no duplicates) may follow
            self.assertEqual(first.ids[:seen] + again.ids, ref.ids)
            self.assertEqual([e for e in first.events[:seen]] + again.events, ref.events)
            self.assertNotIn(None, ref.ids)
            self.assertEqual(ref.ids, sorted(set(ref.ids)))
            self.assertTrue(all(d["tenant"] == "alice" for _, d in again.events), again.events)
            self.assertIn("env.deleted", again.kinds())
            self.assertIn("env.state", again.kinds())
            # a malformed Last-Event-ID is refused
            for bad in ("abc", "-1", "1x", "9" * 21):
                r = SseReader(self.gw, USER, last_id=bad)
                self.assertEqual(r.status, 400, bad)
                self.assertEqual(json.loads(r.resp.read())["error"]["status"], "BAD_REQUEST")
                r.close()
        finally:
            for r in (ref, first, again):
                if r:
                    r.close()
            if noise:
                self.call("DELETE", "/v1/envs/resumed", token=OTHER, expect=200)

    def test_events_log_bounded(self):
        """The log keeps --event-log events: a Last-Event-ID older than that
        (or one this ttgw never gave) starts with event: gap, then what is
        kept."""
        small = gwlib.Gateway(self.pool, self.tokens, args=["--event-log", "3"])
        watch = None
        try:
            watch = SseReader(small, ADMIN, "?env=bounded")
            self.call("POST", "/v1/envs", {"name": "bounded", "images": [{"image": "sleeper",
                                           "dup": 3}], "cpu": 1, "mem_mib": 64}, expect=201)
            self.call("DELETE", "/v1/envs/bounded", expect=200)
            harness.wait_for("env.deleted", lambda: "env.deleted" in watch.kinds())
            self.assertGreater(len(watch.ids), 4)
            old = SseReader(small, ADMIN, "?env=bounded", last_id=watch.ids[0])
            harness.wait_for("the gap and the kept events", lambda: len(old.events) >= 4)
            time.sleep(0.3)
            kind, gap = old.events[0]
            self.assertEqual(kind, "gap")
            self.assertEqual(int(gap["last_event_id"]), watch.ids[0])
            self.assertEqual(old.ids[1:], watch.ids[-3:])
            self.assertEqual(old.events[1:], watch.events[-3:])
            old.close()
            # an id from before this ttgw started
            ancient = SseReader(small, ADMIN, "?env=bounded", last_id=1)
            harness.wait_for("the gap", lambda: ancient.events)
            self.assertEqual(ancient.events[0][0], "gap")
            ancient.close()
        finally:
            if watch:
                watch.close()
            small.stop()

    def test_events_order(self):
        """env.created comes before every event of the env's VMs, and
        env.state running (message created) after them: the create's end."""
        sse = SseReader(self.gw, USER, "?env=ordered")
        try:
            self.call("POST", "/v1/envs", {"name": "ordered", "images": [{"image": "sleeper",
                                           "dup": 3}], "cpu": 1, "mem_mib": 64}, expect=201)
            harness.wait_for("env.ready", lambda: "env.ready" in sse.kinds())
            kinds = sse.kinds()
            self.assertEqual(kinds[0], "env.created", kinds)
            self.assertEqual(sse.events[0][1]["state"], "creating")
            vm_at = [i for i, k in enumerate(kinds) if k.startswith("vm.")]
            self.assertGreaterEqual(len(vm_at), 3, kinds)
            done = [i for i, (k, d) in enumerate(sse.events)
                    if k == "env.state" and d["state"] == "running" and d["message"] == "created"]
            self.assertEqual(len(done), 1, sse.events)
            self.assertLess(done[0], kinds.index("env.ready"))
        finally:
            sse.close()
            self.call("DELETE", "/v1/envs/ordered", expect=200)


    def test_dashboard_state(self):
        """GET /v1/dashboard: one answer with the envs (with VMs) the token
        may list, and for an admin the pool, hosts and history; as the
        OpenAPI document says."""
        self.call("POST", "/v1/envs", {"name": "dash", "images": [{"image": "sleeper",
                                       "dup": 2}], "cpu": 1, "mem_mib": 64}, expect=201)
        self.call("POST", "/v1/envs", {"name": "dash", "images": [{"image": "sleeper"}],
                                       "cpu": 1, "mem_mib": 64}, token=OTHER, expect=201)
        try:
            _, _, me = self.call("GET", "/v1/dashboard", expect=200)
            self.assertEqual((me["tenant"], me["role"]), ("alice", "user"))
            self.assertNotIn("pool", me)
            self.assertNotIn("history", me)
            self.assertEqual({e["tenant"] for e in me["envs"]}, {"alice"})
            mine = [e for e in me["envs"] if e["name"] == "dash"][0]
            self.assertEqual(len(mine["vms"]), 2)
            harness.wait_for("two history samples", lambda: len(
                self.call("GET", "/v1/dashboard", token=ADMIN)[2]["history"]["t"]) >= 2,
                timeout=30)

            def sampled_running():
                # a sample taken while a VM was still starting counts it
                # elsewhere: wait for one taken after all three run
                d = self.call("GET", "/v1/dashboard", token=ADMIN)[2]
                h = d["history"]
                return d if h["vms"]["running"][-1] >= 3 and h["envs"]["running"][-1] >= 2 \
                    else None
            harness.wait_for("a history sample with the three VMs running", sampled_running,
                             timeout=40)
            _, _, adm = self.call("GET", "/v1/dashboard", token=ADMIN, expect=200)
            self.assertLessEqual({("alice", "dash"), ("bob", "dash")},
                                 {(e["tenant"], e["name"]) for e in adm["envs"]})
            self.assertEqual(adm["pool"]["cpu_overcommit"], 4)
            self.assertEqual([h["id"] for h in adm["hosts"]], ["h1"])
            h = adm["history"]
            self.assertEqual(len(h["t"]), len(h["cpu_used"]))
            self.assertEqual(h["cpu_allocatable"][-1], 32)
            self.assertGreaterEqual(h["vms"]["running"][-1], 3)
            self.assertGreaterEqual(h["envs"]["running"][-1], 2)
            # the envs became ready while ttgw sampled: latency points (null
            # in the samples where no env became ready)
            lat = [x for x in h["ready_latency_s"] if x is not None]
            self.assertTrue(lat and all(0 <= x < 30 for x in lat), h)
            self.assertIn(None, h["ready_latency_s"])
            self.assertEqual(len(h["ready_latency_s"]), len(h["t"]))
        finally:
            self.call("DELETE", "/v1/envs/dash", expect=200)
            self.call("DELETE", "/v1/envs/dash", token=OTHER, expect=200)

def lint_metrics(test, text):
    """`promtool check metrics` finds nothing in text, and the naming rules
    it does not check hold: base units (bytes and seconds, never MiB or
    milliseconds), `_total` only on counters, every counter ends in it, no
    total/used in a label (a series per quantity)."""
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    test.assertEqual((r.returncode, r.stdout + r.stderr), (0, ""))
    for fam in text_string_to_metric_families(text):
        test.assertTrue(fam.documentation, fam.name)
        test.assertNotRegex(fam.name, r"_(mib|kib|gib|mb|kb|ms|milliseconds|minutes)(_|$)")
        for s in fam.samples:
            test.assertNotIn(s.labels.get("kind"), ("total", "used"), s)
        if fam.type == "counter":
            test.assertTrue(all(s.name.endswith("_total") or s.name.endswith("_created")
                                for s in fam.samples), fam.name)
        else:
            test.assertFalse(fam.name.endswith("_total"), fam.name)
        if re.search(r"(memory|disk)", fam.name) and fam.type == "gauge":
            test.assertTrue(fam.name.endswith("_bytes"), fam.name)


class Outcomes(unittest.TestCase):
    """Ordinary broker outcomes have their own HTTP status, not 500: a
    queued create is 202 with the env and its queue position, a quota 403,
    the rate limit 429 with Retry-After, a cancelled queue entry 409."""

    @classmethod
    def setUpClass(cls):
        harness.watchdog(120)
        cls.pool = harness.Pool(hosts={"h1": {"cpu": 2, "mem": 1024}},
                                broker_args=["--rate", "1", "--rate-burst", "6"]).start()
        cls.gw = gwlib.Gateway(cls.pool, [(USER, "alice", "user"), (OTHER, "bob", "user"),
                                          (GONE, "rita", "user"),
                                          (ADMIN, harness.ADMIN, "admin")])

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            cls.pool.close()
            harness.watchdog(0)

    call = Gateway.call
    err = Gateway.err

    def test_queued_create(self):
        fill = {"name": "fill", "images": [{"image": "sleeper"}], "cpu": 2, "mem_mib": 256}
        self.call("POST", "/v1/envs", fill, expect=201)
        self.err("POST", "/v1/envs", 503, "NO_CAPACITY",
                 body={"name": "nowait", "images": [{"image": "sleeper"}], "cpu": 1})
        wait = {"name": "waiter", "images": [{"image": "sleeper"}], "cpu": 1, "mem_mib": 128,
                "queue": True, "max_wait": 600, "priority": 0}
        _, h, env = self.call("POST", "/v1/envs", wait, expect=202)
        self.assertEqual((env["name"], env["tenant"], env["state"]), ("waiter", "alice", "queued"))
        self.assertEqual(env["queue_position"], 1)
        self.assertGreater(env["queue_deadline"], time.time())
        self.assertTrue(env.get("message"))
        # the queued env is listed as such; deleting it cancels it
        _, _, lst = self.call("GET", "/v1/envs", expect=200)
        self.assertIn(("waiter", "queued"), [(e["name"], e["state"]) for e in lst["envs"]])
        # /metrics: one create waits, for as long as it has been queued
        time.sleep(2.1)  # past the scrape cache
        _, _, text = self.gw.request("GET", "/metrics")
        got = {s.name: s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name.startswith("ttfleet_queue_")}
        self.assertEqual(got["ttfleet_queue_depth"], 1)
        self.assertGreaterEqual(got["ttfleet_queue_oldest_wait_seconds"], 2)
        self.assertLess(got["ttfleet_queue_oldest_wait_seconds"], 60)
        lint_metrics(self, text)
        self.call("DELETE", "/v1/envs/waiter", expect=200)
        self.call("DELETE", "/v1/envs/fill", expect=200)

    def test_quota_exceeded(self):
        r = self.pool.ctl("quota", "set", "bob", "--envs", "0", tenant=harness.ADMIN)
        self.assertEqual(r.rc, 0, r)
        _, h, data = self.call("POST", "/v1/envs", {"name": "q", "images": [{"image": "sleeper"}],
                                                    "cpu": 1, "mem_mib": 128},
                               token=OTHER, expect=403)
        self.assertEqual(data["error"]["status"], "QUOTA_EXCEEDED")
        self.assertNotIn("Retry-After", h)

    def test_rate_limited(self):
        seen = None
        for i in range(12):
            status, h, data = self.call("POST", "/v1/envs/none%d/stop" % i, token=GONE)
            if status == 429:
                seen = (h, data)
                break
            self.assertEqual(status, 404, data)
        self.assertIsNotNone(seen, "12 changing requests at once under --rate 1 --rate-burst 6")
        h, data = seen
        self.assertEqual(data["error"]["status"], "RATE_LIMITED")
        self.assertGreaterEqual(int(h["Retry-After"]), 1)


class ListenPolicy(unittest.TestCase):
    """Plain HTTP only on loopback; TLS (gnutls through libmicrohttpd) works."""

    def test_non_loopback_needs_tls(self):
        tmp = tempfile.mkdtemp(prefix="ttfleet-gw-")
        self.addCleanup(shutil.rmtree, tmp, True)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write("%s alice user\n" % USER)
        p = subprocess.run([gwlib.ttgw_binary(), "--tokens", tokens, "--listen", "0.0.0.0:0"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("refusing plain HTTP", p.stderr)
        p = subprocess.run([gwlib.ttgw_binary(), "--listen", "127.0.0.1:0"],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("--tokens", p.stderr)
        p = subprocess.run([gwlib.ttgw_binary(), "--tokens", tokens, "--tls-cert", tokens],
                           capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn("both --tls-cert and --tls-key", p.stderr)

    def test_tls(self):
        harness.watchdog(100)
        pool = harness.Pool().start()
        self.addCleanup(pool.close)
        cert, key = os.path.join(pool.dir, "cert.pem"), os.path.join(pool.dir, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=60)
        gw = gwlib.Gateway(pool, [(USER, "alice", "user")],
                           args=["--tls-cert", cert, "--tls-key", key], scheme="https")
        self.addCleanup(gw.stop)
        ctx = ssl.create_default_context(cafile=cert)
        ctx.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", gw.port, timeout=20, context=ctx)
        conn.request("GET", "/v1/status", headers={"Authorization": "Bearer " + USER})
        resp = conn.getresponse()
        self.assertEqual(resp.status, 200)
        self.assertIn("hosts_total", json.loads(resp.read()))
        conn.close()


class Limits(unittest.TestCase):
    """A greedy client: event streams and connections are bounded, the
    gateway answers the others and recovers when the greedy one leaves."""

    def test_streams_and_connections(self):
        harness.watchdog(100)
        pool = harness.Pool().start()
        self.addCleanup(pool.close)
        gw = gwlib.Gateway(pool, [(USER, "alice", "user")],
                           args=["--max-streams", "2", "--max-conns", "8"])
        self.addCleanup(gw.stop)
        streams = [SseReader(gw, USER) for _ in range(2)]
        try:
            self.assertEqual([s.status for s in streams], [200, 200])
            status, _, data = gw.request("GET", "/v1/events", token=USER)
            self.assertEqual(status, 503)
            self.assertEqual(data["error"]["status"], "TOO_MANY_STREAMS")
            openapi_check.check("GET", "/v1/events", status, data)
            self.assertEqual(gw.request("GET", "/v1/status", token=USER)[0], 200)
        finally:
            for s in streams:
                s.close()
        # a closed stream frees its slot (noticed at the next keepalive, 1 s here)
        def third():
            s = SseReader(gw, USER)
            s.close()
            return s.status == 200
        harness.wait_for("a stream slot again", third, timeout=15, interval=0.5)
        # idle connections up to the limit (4 per address: half of --max-conns)
        idle = [socket.create_connection(("127.0.0.1", gw.port)) for _ in range(8)]
        try:
            try:
                status = gw.request("GET", "/v1/status", token=USER, timeout=5)[0]
            except (OSError, http.client.HTTPException):
                status = None  # refused or closed at once: the limit holds
            self.assertNotEqual(status, 200)
        finally:
            for c in idle:
                c.close()
        def served():
            try:  # until the gateway has seen the idle ones go, it may still refuse
                return gw.request("GET", "/v1/status", token=USER, timeout=5)[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        harness.wait_for("service after the idle connections left", served, timeout=15,
                         interval=0.3)


class Dribbler(threading.Thread):
    """A slowloris connection: the start of a request, then one header byte
    every `every` seconds, never the end. self.closed_after is how long the
    gateway let it stay (None while open)."""

    def __init__(self, port, source, every=0.5):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5,
                                             source_address=(source, 0))
        self.every = every
        self.t0 = time.monotonic()
        self.closed_after = None
        self.stopping = False
        self.start()

    def run(self):
        try:
            self.sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            while not self.stopping:
                self.sock.sendall(b"a")
                r, _, _ = select.select([self.sock], [], [], self.every)
                if r and not self.sock.recv(4096):
                    break
        except OSError:
            pass
        if not self.stopping:
            self.closed_after = time.monotonic() - self.t0

    def close(self):
        self.stopping = True
        self.join(5)
        self.sock.close()


class Slowloris(unittest.TestCase):
    """Connections that send a header byte now and then, from one address
    and from several: one address holds at most --max-conns-per-ip slots,
    and no connection holds one past --request-timeout, so a valid request
    with a token is answered within a bound."""

    @classmethod
    def setUpClass(cls):
        harness.watchdog(120)
        cls.pool = harness.Pool().start()
        cls.gw = gwlib.Gateway(cls.pool, [(USER, "alice", "user")],
                               args=["--max-conns", "16", "--max-conns-per-ip", "8",
                                     "--request-timeout", "2"])

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            cls.pool.close()
            harness.watchdog(0)

    def valid(self, source="127.0.0.2", timeout=3):
        conn = http.client.HTTPConnection("127.0.0.1", self.gw.port, timeout=timeout,
                                          source_address=(source, 0))
        try:
            conn.request("GET", "/v1/status", headers={"Authorization": "Bearer " + USER})
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def served_within(self, bound):
        """Seconds until a valid request from another address got 200."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < bound:
            try:
                if self.valid() == 200:
                    return time.monotonic() - t0
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.1)
        return None

    def test_one_address_cannot_take_every_slot(self):
        slow = [Dribbler(self.gw.port, "127.0.0.1") for _ in range(16)]
        try:
            time.sleep(0.5)
            took = self.served_within(3)
            self.assertIsNotNone(took, "16 slow connections from 127.0.0.1 kept 127.0.0.2 out")
            self.assertLess(took, 1.5)
        finally:
            for d in slow:
                d.close()

    def test_request_deadline(self):
        # one byte every 0.5 s never lets the 60 s idle timeout fire; the
        # request deadline (2 s here) closes it all the same
        d = Dribbler(self.gw.port, "127.0.0.4")  # an address no other test uses
        try:
            harness.wait_for("the slow connection closed", lambda: d.closed_after is not None,
                             timeout=8, interval=0.1)
            self.assertLess(d.closed_after, 4)
            self.assertGreaterEqual(d.closed_after, 1.9)
        finally:
            d.close()
        self.assertRegex(self.gw.log(), r"closed \d+ connection\(s\) that did not send a whole request")
        status, _, text = self.gw.request("GET", "/metrics")
        self.assertEqual(status, 200)
        cut = [s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "ttgw_request_deadline_closed_total"]
        self.assertEqual(len(cut), 1)
        self.assertGreaterEqual(cut[0], 1)

    def test_many_addresses_fill_every_slot(self):
        # 8 from each of two addresses: all 16 slots; the valid client gets
        # one as soon as the deadline frees them
        slow = [Dribbler(self.gw.port, src) for src in ("127.0.0.5", "127.0.0.6")
                for _ in range(8)]
        try:
            time.sleep(0.3)
            try:
                refused = self.valid(timeout=1) != 200
            except (OSError, http.client.HTTPException):
                refused = True
            self.assertTrue(refused, "16 slow connections did not fill --max-conns 16")
            took = self.served_within(6)
            self.assertIsNotNone(took, "slow connections held every slot past the deadline")
            self.assertLess(took, 4)
        finally:
            for d in slow:
                d.close()

    def test_slow_readers_do_not_hold_slots(self):
        # no token, no reconnect: pipelined requests for a public page on a
        # tiny receive window, the answers taken a few bytes at a time; the
        # answer deadline (--request-timeout 2 s) closes them like senders
        slow = []
        try:
            for src in ("127.0.0.7", "127.0.0.8"):
                for _ in range(8):
                    s = socket.socket()
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                    s.bind((src, 0))
                    s.connect(("127.0.0.1", self.gw.port))
                    s.settimeout(0.2)
                    s.sendall(b"GET /app.js HTTP/1.1\r\nHost: x\r\n\r\n" * 200)
                    slow.append(s)
            t0 = time.monotonic()
            served = None
            while served is None and time.monotonic() - t0 < 8:
                for s in slow:
                    try:
                        s.recv(64)
                    except OSError:
                        pass
                try:
                    if self.valid(timeout=0.5) == 200:
                        served = time.monotonic() - t0
                except (OSError, http.client.HTTPException):
                    pass
            self.assertIsNotNone(served, "slow readers held every slot past the deadline")
            self.assertLess(served, 5)
        finally:
            for s in slow:
                s.close()


class Hostile(unittest.TestCase):
    """An outsider and a hostile tenant at the HTTP layer: endless bodies,
    path traversal, smuggling-shaped headers, JSON edge cases, the token in
    a URL. Each answer is a clear 4xx; the gateway and the broker go on."""

    @classmethod
    def setUpClass(cls):
        harness.watchdog(200)
        cls.pool = harness.Pool().start()
        cls.gw = gwlib.Gateway(cls.pool, [(USER, "alice", "user"), (ADMIN, harness.ADMIN, "admin")])

    @classmethod
    def tearDownClass(cls):
        try:
            cls.gw.stop()
        finally:
            cls.pool.close()
            harness.watchdog(0)

    def alive(self):
        self.assertEqual(self.gw.request("GET", "/v1/status", token=USER)[0], 200)
        self.assertEqual(self.pool.ctl("host", "list", tenant=harness.ADMIN).rc, 0)

    def raw(self, data, timeout=10):
        """Sends raw bytes; returns the status line's code (0 if closed)."""
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=timeout) as c:
            c.sendall(data)
            try:
                resp = http.client.HTTPResponse(c)
                resp.begin()
                body = resp.read()
                return resp.status, resp.getheader("Content-Type", ""), body
            except (http.client.HTTPException, OSError):
                return 0, "", b""

    def test_endless_chunked_body(self):
        # a chunked body over --max-body that never ends: the gateway stops
        # reading it after a bound instead of draining it forever
        sent = 0
        closed = False
        with socket.create_connection(("127.0.0.1", self.gw.port), timeout=20) as c:
            c.sendall(b"POST /v1/envs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                      USER.encode() + b"\r\nContent-Type: application/json\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n")
            chunk = b"x" * 65536
            frame = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
            try:
                while sent < 64 * 1024 * 1024:
                    c.sendall(frame)
                    sent += len(chunk)
            except OSError:
                closed = True
        self.assertTrue(closed, "the gateway read %d bytes of an endless body" % sent)
        self.assertLess(sent, 16 * 1024 * 1024)
        self.alive()

    def test_static_traversal(self):
        for path in ("/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
                     "/app.js/../../etc/passwd", "/../../etc/passwd", "/index.html%00.js",
                     "//etc/passwd", "/.%2e/gw.c"):
            status, ctype, body = self.raw(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                                           b"Connection: close\r\n\r\n")
            self.assertIn(status, (400, 404), path)
            self.assertNotIn(b"root:", body, path)
        self.alive()

    def test_smuggling_shapes(self):
        auth = b"Authorization: Bearer " + USER.encode() + b"\r\n"
        body = b'{"name":"sm","images":[{"image":"sleeper"}]}'
        cases = [
            # two different Content-Lengths
            b"POST /v1/envs HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Type: application/json\r\nContent-Length: 5\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % len(body) + body,
            # Content-Length and chunked together
            b"POST /v1/envs HTTP/1.1\r\nHost: x\r\n" + auth +
            b"Content-Type: application/json\r\nContent-Length: 4\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
            # a negative and a non-numeric length
            b"POST /v1/envs HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: -1\r\n"
            b"Connection: close\r\n\r\n",
            b"POST /v1/envs HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Length: 1x\r\n"
            b"Connection: close\r\n\r\n",
            # methods no route has, and a broken request line
            b"FOO /v1/envs HTTP/1.1\r\nHost: x\r\n" + auth + b"Connection: close\r\n\r\n",
            b"G\x01T /v1/envs HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET /v1/envs HTTP/9.9\r\nHost: x\r\n\r\n",
            # a header over the connection's memory
            b"GET /v1/envs HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200000 + b"\r\n\r\n",
        ]
        for data in cases:
            status, _, _ = self.raw(data)
            self.assertTrue(status == 0 or 400 <= status < 500 or status == 505,
                            (data[:80], status))
        # none of them made an env
        self.assertEqual(self.gw.request("GET", "/v1/envs/sm", token=USER)[0], 404)
        self.alive()

    def test_json_edges(self):
        h = {"Content-Type": "application/json"}
        bodies = [
            b"[" * 100000 + b"]" * 100000,                         # deep nesting
            b'{"name":' + b"{\"a\":" * 50000 + b"1" + b"}" * 50001,
            b'{"name":"x","cpu":1e999}',                           # huge numbers
            b'{"name":"x","cpu":123456789012345678901234567890}',
            b'{"name":"x","cpu":-0.5}',
            b'{"name":"x","name":"y"}',                            # duplicate keys
            b'{"name":"a\\u0000b"}',                               # NUL
            b'{"name":"\xff\xfe"}',                                # invalid UTF-8
            b'{"name":"\xed\xa0\x80"}',                            # a surrogate as UTF-8
            b'{"name":"\\ud800"}',                                 # a lone surrogate escape
            b'{"name":"x"} trailing',
            b"\xef\xbb\xbf{}",                                     # a byte order mark
            b"",
        ]
        for raw in bodies:
            status, _, data = self.gw.request("POST", "/v1/envs", raw=raw, token=USER, headers=h)
            self.assertEqual(status, 400, (raw[:60], data))
            self.assertIn(data["error"]["status"], ("INVALID_JSON", "BAD_REQUEST"), raw[:60])
            self.assertTrue(data["error"]["message"])
        self.alive()

    def test_token_stays_out_of_urls_and_logs(self):
        secret = "t" * 20 + "SECRETTOKEN"
        self.gw.write_tokens([(USER, "alice", "user"), (ADMIN, harness.ADMIN, "admin"),
                              (secret, "alice", "user")])
        try:
            # the page a ?token= link opens is never cached, sends no Referer
            status, headers, _ = self.gw.request("GET", "/?token=" + secret)
            self.assertEqual(status, 200)
            self.assertIn("no-store", headers.get("Cache-Control", ""))
            self.assertEqual(headers.get("Referrer-Policy"), "no-referrer")
            # the API takes the token from the header only: not a query, not a cookie (so a
            # cross-site form or link cannot act with it: no CSRF)
            self.assertEqual(self.gw.request("GET", "/v1/envs?token=" + secret)[0], 401)
            self.assertEqual(self.gw.request("GET", "/v1/envs", headers={
                "Cookie": "token=" + secret})[0], 401)
            self.assertEqual(self.gw.request("POST", "/v1/envs", raw=b"name=x", headers={
                "Cookie": "token=" + secret, "Content-Type": "text/plain"})[0], 401)
            # no CORS: a preflight gets no Access-Control-Allow-* header
            status, headers, _ = self.gw.request("OPTIONS", "/v1/envs", headers={
                "Origin": "http://evil.example", "Access-Control-Request-Method": "POST"})
            self.assertNotIn("Access-Control-Allow-Origin", headers)
            self.assertFalse(200 <= status < 300)
            self.assertEqual(self.gw.request("GET", "/v1/envs", token=secret)[0], 200)
            self.assertEqual(self.gw.request("GET", "/v1/envs", token=secret + "x")[0], 401)
            self.assertNotIn("SECRETTOKEN", self.gw.log())
        finally:
            self.gw.write_tokens([(USER, "alice", "user"), (ADMIN, harness.ADMIN, "admin")])


class Curve(unittest.TestCase):
    """ttgw and the Python client with CURVE keys (ttctl keygen), against a
    broker with --curve-secret. ttgw's key is bound with the gateway role,
    so the broker acts for the tenant of each token (docs/GATEWAY.md), and
    an ordinary key still cannot claim another tenant (test_security)."""

    def test_curve(self):
        import test_security
        harness.watchdog(120)
        pool = test_security.CurvePool(hosts={"h1": {}})
        self.addCleanup(pool.close)
        pool.start()
        # the gateway's own key, bound by the operator with the gateway role:
        # the broker then acts for the tenant each token maps to
        test_security.keygen(pool.key("gwkey"), "--role", "user", "--tenant", "gw")
        pool.bind("gwkey", "gw", "gateway")
        gw = gwlib.Gateway(pool, [(USER, "alice", "user"), (OTHER, "bob", "user"),
                                  (ADMIN, "ops", "admin")],
                           args=["--key", pool.key("gwkey"), "--broker-key", pool.broker_cert,
                                 "--admin-tenant", "ops"])  # the broker's (CurvePool)
        self.addCleanup(gw.stop)
        sse = SseReader(gw, USER)
        self.addCleanup(sse.close)
        time.sleep(0.5)
        status, _, env = gw.request("POST", "/v1/envs", {"name": "curved", "images": [
            {"image": "sleeper"}], "cpu": 1, "mem_mib": 64}, token=USER)
        self.assertEqual(status, 201, env)
        self.assertEqual(env["tenant"], "alice")
        harness.wait_for("env.created over CURVE", lambda: "env.created" in sse.kinds("curved"))
        # an admin token acts as admin through the gateway key (on_behalf_admin)
        status, _, hosts = gw.request("GET", "/v1/hosts", token=ADMIN)
        self.assertEqual(status, 200, hosts)
        self.assertIn("h1", [h["id"] for h in hosts.get("hosts", [])])
        # a user token does not
        self.assertEqual(gw.request("GET", "/v1/hosts", token=USER)[0], 403)
        # bob's token acts as bob: alice's env is not his to see
        status, _, shown = gw.request("GET", "/v1/envs/curved", token=OTHER)
        self.assertEqual(status, 404, shown)
        # and bob's event stream never carries alice's events
        sse_bob = SseReader(gw, OTHER)
        self.addCleanup(sse_bob.close)
        # the Python client with the same kind of keys
        harness.ttfleet_package()
        import ttfleet
        with ttfleet.Client(broker=pool.clients_ep, key=pool.key("alice"),
                            broker_key=pool.broker_cert, timeout_ms=5000) as c:
            self.assertEqual(c.env_show("curved").tenant, "alice")
            c.env_delete("curved")
        harness.wait_for("env.deleted over CURVE", lambda: "env.deleted" in sse.kinds("curved"))
        self.assertEqual(list(sse_bob.kinds("curved")), [])
        with ttfleet.Client(broker=pool.clients_ep, tenant="alice", timeout_ms=300,
                            retries=1) as plain:
            with self.assertRaises(ttfleet.TransportError):  # no key: silence
                plain.pool_status()


class GreedyTenant(unittest.TestCase):
    """One tenant's requests in flight and event streams are bounded per
    tenant: past its share it gets 429, and another tenant is unaffected."""

    def test_inflight_and_streams(self):
        harness.watchdog(100)
        pool = harness.Pool()  # never started: requests wait the whole timeout
        self.addCleanup(pool.close)
        gw = gwlib.Gateway(pool, [(USER, "alice", "user"), (OTHER, "bob", "user")],
                           args=["--timeout", "3000", "--retries", "1", "--max-inflight", "2",
                                 "--max-tenant-streams", "1"])
        self.addCleanup(gw.stop)
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            gw.request("GET", "/v1/envs", token=USER)[0])) for _ in range(2)]
        for t in threads:
            t.start()
        time.sleep(0.8)  # both are waiting on the (absent) broker now
        status, _, data = gw.request("GET", "/v1/envs", token=USER)
        self.assertEqual(status, 429)
        self.assertEqual(data["error"]["status"], "TOO_MANY_REQUESTS")
        openapi_check.check("GET", "/v1/envs", status, data)
        # bob is not held back by alice: his request goes to the broker (and
        # times out there, since there is none)
        status, _, data = gw.request("GET", "/v1/envs", token=OTHER)
        self.assertEqual((status, data["error"]["status"]), (504, "BROKER_TIMEOUT"))
        for t in threads:
            t.join(20)
        self.assertEqual(results, [504, 504])
        # alice's slots are free again
        self.assertEqual(gw.request("GET", "/v1/envs", token=USER)[0], 504)
        # streams: one per tenant here
        first = SseReader(gw, USER)
        self.addCleanup(first.close)
        self.assertEqual(first.status, 200)
        status, _, data = gw.request("GET", "/v1/events", token=USER)
        self.assertEqual((status, data["error"]["status"]), (429, "TOO_MANY_STREAMS"))
        other = SseReader(gw, OTHER)
        self.addCleanup(other.close)
        self.assertEqual(other.status, 200)


class AdminTenant(unittest.TestCase):
    """ttgw's --admin-tenant must be the broker's: ttgw exits at start when
    the broker says otherwise, and refuses token requests (503) while a
    broker it could not ask at start says otherwise."""

    def test_mismatch_refused_at_start(self):
        harness.watchdog(100)
        pool = harness.Pool().start()  # its broker's admin tenant is harness.ADMIN
        self.addCleanup(pool.close)
        tokens = os.path.join(pool.dir, "tokens-ops")
        with open(tokens, "w") as f:
            f.write("%s alice user\n%s ops admin\n" % (USER, ADMIN))
        os.chmod(tokens, 0o600)
        r = subprocess.run([gwlib.ttgw_binary(), "--broker", pool.clients_ep, "--events",
                            pool.events_ep, "--listen", "127.0.0.1:0", "--tokens", tokens,
                            "--admin-tenant", "ops"], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("the broker does not treat tenant 'ops' as admin", r.stderr)

    def test_mismatch_refused_while_running(self):
        harness.watchdog(100)
        pool = harness.Pool()  # not started yet: ttgw cannot ask at start
        self.addCleanup(pool.close)
        gw = gwlib.Gateway(pool, [(USER, "alice", "user"), (ADMIN, "ops", "admin")],
                           args=["--admin-tenant", "ops", "--history-interval", "1",
                                 "--timeout", "500", "--retries", "1"])
        self.addCleanup(gw.stop)
        pool.start()

        def refused():
            status, _, data = gw.request("GET", "/v1/envs", token=USER)
            return status == 503 and "misconfigured" in data["error"]["message"] and data

        data = harness.wait_for("ttgw to refuse on the admin tenant mismatch", refused,
                                timeout=30)
        self.assertEqual(data["error"]["status"], "UNAVAILABLE")
        self.assertIn("does not treat tenant 'ops' as admin", data["error"]["message"])
        self.assertIn("refusing every token request", gw.log())


class BrokerDown(unittest.TestCase):
    """A broker that does not answer: 504 with a JSON body, quickly."""

    def test_broker_timeout(self):
        harness.watchdog(100)
        pool = harness.Pool()  # never started: nothing listens on its endpoints
        try:
            gw = gwlib.Gateway(pool, [(USER, "alice", "user")],
                               args=["--timeout", "300", "--retries", "1"])
            try:
                status, _, data = gw.request("GET", "/v1/envs", token=USER)
                self.assertEqual(status, 504)
                self.assertEqual(data["error"]["status"], "BROKER_TIMEOUT")
                openapi_check.check("GET", "/v1/envs", status, data)
                status, _, text = gw.request("GET", "/metrics")
                self.assertEqual(status, 200)
                self.assertIn("ttfleet_broker_up 0", text)
            finally:
                gw.stop()
        finally:
            pool.close()


if __name__ == "__main__":
    unittest.main()
