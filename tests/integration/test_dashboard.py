"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium),
driven through the DevTools protocol with python3-websocket.

The test makes a pool, a gateway and an env, opens /?token=T, and checks:
no console errors or exceptions; the host and the env appear; an env made
afterwards appears without a reload (through the event stream, since the
page does not poll); the delete action removes an env; a screenshot goes to
docs/dashboard.png when run by hand (under ctest: TTFLEET_SCREENSHOT, in the
build directory, so test runs leave the source tree alone).
Chromium runs in its own session with a fresh profile dir and is killed by
its process group (which we created) on every exit path.
"""

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

import websocket

import gwlib
import harness

CHROMIUM = os.environ.get("TTFLEET_CHROMIUM", "/usr/bin/chromium")
ADMIN_TOKEN = "d" * 32
USER_TOKEN = "e" * 32
PAYLOAD = ('<img src=x onerror="window.__xss=1"></script><script>window.__xss=2</script>'
           '"><svg onload="window.__xss=3">')
PAYLOAD_SHOWN = '<img src=x onerror="window.__xss=1"></script><script>window.__xss=2</script>'


class DevTools:
    def __init__(self, ws_url):
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0
        self.events = []

    def call(self, method, **params):
        self.next_id += 1
        my = self.next_id
        self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise AssertionError("%s: %s" % (method, msg["error"]))
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)
        raise AssertionError("no answer to " + method)

    def eval(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("evaluate %s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def errors(self):
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(p["exceptionDetails"].get("text", "") + " " + json.dumps(
                    p["exceptionDetails"].get("exception", {}).get("description", "")))
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.%s: %s" % (p["type"], [a.get("value") for a in p["args"]]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append("log: %s %s" % (p["entry"].get("text"), p["entry"].get("url", "")))
        return out

    def pump(self):
        """Reads pending events without waiting long."""
        self.ws.settimeout(0.05)
        try:
            while True:
                msg = json.loads(self.ws.recv())
                if "method" in msg:
                    self.events.append(msg)
        except (websocket.WebSocketTimeoutException, TimeoutError):
            pass
        finally:
            self.ws.settimeout(30)

    def close(self):
        self.ws.close()


class Dashboard(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(CHROMIUM):
            self.skipTest("no chromium at " + CHROMIUM)
        harness.watchdog(170)
        # cpu overcommitted 4x: the page must say used / (capacity x 4)
        self.pool = harness.Pool(hosts={"h1": {"cpu": 8}, "h2": {"cpu": 4}},
                                 broker_args=["--cpu-overcommit", "4"])
        # a guest that prints markup to its console (workers read images at start)
        with open(os.path.join(self.pool.images, "xss"), "w") as f:
            f.write("#!/bin/sh\ntrap 'exit 0' TERM INT\necho '%s'\n"
                    "while :; do sleep 1 & wait $!; done\n" % PAYLOAD)
        os.chmod(os.path.join(self.pool.images, "xss"), 0o755)
        self.pool.start()
        self.addCleanup(self.pool.close)
        self.gw = gwlib.Gateway(self.pool, [(ADMIN_TOKEN, harness.ADMIN, "admin"),
                                            (USER_TOKEN, "carol", "user")],
                                args=["--history-interval", "1"])
        self.addCleanup(self.gw.stop)
        self.profile = tempfile.mkdtemp(prefix="ttfleet-chromium-")
        self.addCleanup(shutil.rmtree, self.profile, True)
        self.browser = None
        self.addCleanup(self._kill_browser)

    def _kill_browser(self):
        if self.browser and self.browser.poll() is None:
            try:
                os.killpg(self.browser.pid, signal.SIGKILL)  # our own session's group
            except OSError:
                pass
            self.browser.wait(10)

    def api(self, method, path, body=None, expect=200):
        status, _, data = self.gw.request(method, path, body=body, token=ADMIN_TOKEN)
        self.assertEqual(status, expect, data)
        return data

    def start_browser(self):
        log_path = os.path.join(self.profile, "chromium.log")
        log = open(log_path, "wb")
        self.browser = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--no-first-run", "--no-default-browser-check", "--user-data-dir=" + self.profile,
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "--window-size=1280,900", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        log.close()

        def port():
            if self.browser.poll() is not None:
                with open(log_path, errors="replace") as f:
                    raise AssertionError("chromium exited:\n" + f.read())
            with open(log_path, errors="replace") as f:
                m = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", f.read())
            return int(m.group(1)) if m else None
        devport = harness.wait_for("chromium's DevTools port", port, timeout=60)

        def page():
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % devport, timeout=5) as r:
                pages = [t for t in json.load(r) if t["type"] == "page"]
            return pages[0]["webSocketDebuggerUrl"] if pages else None
        return DevTools(harness.wait_for("a page target", page, timeout=30))

    def test_dashboard(self):
        self.api("POST", "/v1/envs", {"name": "first", "images": [{"image": "sleeper", "dup": 2}],
                                      "cpu": 1, "mem_mib": 256}, expect=201)
        # another tenant's env: the admin's page lists it too, with its tenant
        status, _, _ = self.gw.request("POST", "/v1/envs", {"name": "carols", "images": [
            {"image": "sleeper"}], "cpu": 1, "mem_mib": 64}, token=USER_TOKEN)
        self.assertEqual(status, 201)
        dt = self.start_browser()
        self.addCleanup(dt.close)
        for domain in ("Runtime", "Log", "Page"):
            dt.call(domain + ".enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1280, height=900,
                deviceScaleFactor=1, mobile=False)
        dt.call("Page.navigate", url="%s/?token=%s" % (self.gw.base, ADMIN_TOKEN))

        def shows(selector):
            return lambda: dt.eval("!!document.querySelector(%s)" % json.dumps(selector))
        harness.wait_for("host rows", shows('#hosts tr[data-host="h2"]'), timeout=30)
        harness.wait_for("env first with its VMs", shows('.env[data-env="first"] tr[data-vm]'),
                         timeout=30)
        harness.wait_for("the live badge", lambda: dt.eval("document.getElementById('live').textContent") == "live", timeout=30)
        # the token left the URL and stays in the session
        self.assertEqual(dt.eval("location.search"), "")
        self.assertEqual(dt.eval("sessionStorage.getItem('ttfleet.token')"), ADMIN_TOKEN)
        self.assertEqual(dt.eval("document.querySelectorAll('.env[data-env=\"first\"] tr[data-vm]').length"), 2)
        # every tenant's envs in the admin's table, with a tenant column, and
        # the header's count is the number of envs listed
        harness.wait_for("carol's env in the admin's list",
                         shows('#env-list tr[data-env="carols"][data-tenant="carol"]'), timeout=30)
        self.assertEqual(dt.eval("document.querySelector('#env-list tr[data-env=\"carols\"] "
                                 "td.tenant').textContent"), "carol")
        self.assertEqual(dt.eval("Array.from(document.querySelectorAll('#env-list thead th'))"
                                 ".map(t => t.textContent.replace(/ .$/, ''))"),
                         ["env", "tenant", "state", "VMs", "expires", "queue"])
        # expiry is relative ("in 58 min"), and counts are words ("1 VM")
        expires = dt.eval("document.querySelector('#env-list tr[data-env=\"first\"] td:nth-child(5)')"
                          ".textContent")
        self.assertRegex(expires, r"^in \d+ (min|h)")
        # allocatable capacity with overcommit: used / (capacity x ratio)
        self.assertRegex(dt.eval("document.querySelector('#hosts tr[data-host=\"h1\"] td.cpu')"
                                 ".textContent"), r"^\d / 32 \(8 \u00d7 4\)$")
        self.assertIn("(12 \u00d7 4)", dt.eval("document.getElementById('cpu-alloc').textContent"))
        # search, state filter and sort of the env table
        def rows_now():
            return dt.eval("Array.from(document.querySelectorAll('#env-list tbody tr'))"
                           ".map(r => r.dataset.env)")
        dt.eval("(() => { const s = document.getElementById('env-search'); s.value = 'caro';"
                " s.dispatchEvent(new Event('input')); })()")
        self.assertEqual(rows_now(), ["carols"])
        dt.eval("(() => { const s = document.getElementById('env-search'); s.value = '';"
                " s.dispatchEvent(new Event('input')); })()")
        dt.eval("document.querySelector('#env-list th[data-sort=\"tenant\"]').click()")
        self.assertEqual(rows_now(), ["first", "carols"])  # tenants admin, carol
        dt.eval("document.querySelector('#env-list th[data-sort=\"tenant\"]').click()")
        self.assertEqual(rows_now(), ["carols", "first"])
        every = self.api("GET", "/v1/envs?all=true")["envs"]
        self.assertEqual(sorted((e["tenant"], e["name"]) for e in every),
                         [("admin", "first"), ("carol", "carols")])
        rows = dt.eval("Array.from(document.querySelectorAll('#env-list tbody tr'))"
                       ".map(r => r.dataset.tenant + '/' + r.dataset.env).sort()")
        self.assertEqual(rows, ["admin/first", "carol/carols"])
        self.assertEqual(dt.eval("document.querySelector('#env-count b').textContent"), "2")

        # live: an env made now shows up without a reload (the page does not poll)
        self.api("POST", "/v1/envs", {"name": "second", "images": [{"image": "sleeper"}],
                                      "cpu": 1, "mem_mib": 128}, expect=201)
        harness.wait_for("env second, live", shows('.env[data-env="second"]'), timeout=30)
        harness.wait_for("1 VM, not 1 VMs", lambda: "1 VM," in dt.eval(
            "document.querySelector('.env[data-env=\"second\"] .env-head').textContent"),
            timeout=10)

        # a create through the form, with human sizes and durations
        dt.eval("""(() => { const f = document.getElementById('create-form');
          f.elements.name.value = 'formed'; f.elements.image.value = 'sleeper';
          f.elements.dup.value = '2'; f.elements.cpu.value = '1';
          f.elements.mem.value = '64M'; f.elements.lifetime.value = '2h';
          f.requestSubmit(); })()""")
        harness.wait_for("formed made", lambda: self.gw.request(
            "GET", "/v1/envs/formed", token=ADMIN_TOKEN)[0] == 200, timeout=30)
        formed = self.api("GET", "/v1/envs/formed")
        self.assertEqual((formed["vm_count"], formed["lifetime"], formed["vms"][0]["mem_mib"]),
                         (2, 7200, 64))
        harness.wait_for("formed's card", shows('.env[data-env="formed"] button.stop'), timeout=30)
        # stop, then start (after the pool's --min-stop-interval, 1 s, so
        # the broker does not answer TOO_SOON)
        dt.eval("document.querySelector('button.stop[data-env=\"formed\"]').click()")
        harness.wait_for("formed stopped", lambda: self.api("GET", "/v1/envs/formed")["state"]
                         == "stopped", timeout=30)
        harness.wait_for("the start button", shows('button.start[data-env="formed"]'), timeout=30)
        time.sleep(1.5)
        dt.eval("document.querySelector('button.start[data-env=\"formed\"]').click()")
        harness.wait_for("formed started", lambda: self.api("GET", "/v1/envs/formed")["state"]
                         == "running", timeout=30)
        # extend by a duration: +30m on a 2 h lifetime
        harness.wait_for("the stop button again", shows('button.stop[data-env="formed"]'),
                         timeout=30)
        dt.eval("""(() => { const c = document.querySelector('.env[data-env="formed"]');
          c.querySelector('input.extend-by').value = '+30m';
          c.querySelector('button.extend').click(); })()""")
        harness.wait_for("formed extended", lambda: self.api("GET", "/v1/envs/formed")["lifetime"]
                         == 9000, timeout=20)
        # the charts: points of the history ttgw samples (every second here)
        harness.wait_for("a chart with points", lambda: dt.eval(
            "!!charts['chart-states'] && charts['chart-states'].data.labels.length >= 3 && "
            "charts['chart-states'].data.datasets.some(d => d.label === 'VMs running' && "
            "d.data.some(v => v >= 5))"), timeout=40)
        self.assertTrue(dt.eval("charts['chart-util'].data.datasets[0].data.some(v => v > 0)"))
        # create -> ready: the envs made above became ready while ttgw sampled
        harness.wait_for("a create -> ready latency point", lambda: dt.eval(
            "!!charts['chart-latency'] && "
            "charts['chart-latency'].data.datasets[0].data.some(v => v !== null && v >= 0)"),
            timeout=30)
        self.assertFalse(dt.eval("document.getElementById('charts').hidden"))
        harness.wait_for("the event in the list", shows('#events li[data-kind="env.created"]'),
                         timeout=30)

        # the console of a VM
        dt.eval("document.querySelector('.env[data-env=\"first\"] tr[data-vm] button').click()")
        harness.wait_for("console title", lambda: "first" in dt.eval(
            "document.getElementById('console-title').textContent"), timeout=20)
        # one console, in the side panel, not under each card
        self.assertFalse(dt.eval("document.getElementById('console-panel').hidden"))
        self.assertEqual(dt.eval("document.querySelectorAll('pre.console').length"), 1)
        self.assertEqual(dt.eval("document.querySelectorAll('.env pre').length"), 0)
        time.sleep(0.5)
        shot = dt.call("Page.captureScreenshot", format="png")
        base = os.environ.get("TTFLEET_SCREENSHOT") or os.path.join(harness.SOURCE, "docs",
                                                                     "dashboard.png")
        with open(base.replace("dashboard.png", "dashboard-env.png"), "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        dt.eval("document.getElementById('console-close').click()")

        time.sleep(0.5)
        shot = dt.call("Page.captureScreenshot", format="png")
        path = os.environ.get("TTFLEET_SCREENSHOT") or os.path.join(harness.SOURCE, "docs",
                                                                     "dashboard.png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))

        # an action: delete (two clicks: the first arms the button)
        dt.eval("(() => { const b = document.querySelector('button.delete[data-env=\"first\"]');"
                " b.click(); b.click(); })()")
        harness.wait_for("first deleted in the broker", lambda: self.gw.request(
            "GET", "/v1/envs/first", token=ADMIN_TOKEN)[0] == 404, timeout=30)
        harness.wait_for("first gone from the page", lambda: not dt.eval(
            "!!document.querySelector('.env[data-env=\"first\"]')"), timeout=30)
        # a drain action as admin
        dt.eval("document.querySelector('button.drain[data-host=\"h2\"]').click()")
        harness.wait_for("h2 draining", lambda: self.api("GET", "/v1/hosts/h2")["draining"],
                         timeout=20)

        # a user token: no pool, no drain buttons, and no failed request on the way
        status, _, _ = self.gw.request("POST", "/v1/envs", {"name": "mine", "images": [
            {"image": "sleeper"}], "cpu": 1, "mem_mib": 64}, token=USER_TOKEN)
        self.assertEqual(status, 201)
        dt.eval("sessionStorage.clear()")
        dt.call("Page.navigate", url="%s/?token=%s" % (self.gw.base, USER_TOKEN))
        harness.wait_for("carol's env", shows('.env[data-env="mine"]'), timeout=30)
        self.assertEqual(dt.eval("document.getElementById('who').textContent"), "carol (user)")
        self.assertFalse(dt.eval("document.getElementById('pool-note').hidden"))
        self.assertTrue(dt.eval("document.getElementById('hosts').hidden"))
        self.assertFalse(dt.eval("!!document.querySelector('.env[data-env=\"second\"]')"))
        self.assertEqual(dt.eval("document.querySelectorAll('button.drain').length"), 0)
        self.assertTrue(dt.eval("document.getElementById('charts').hidden"))
        # a user's table: its own envs, no tenant column, and the count agrees
        harness.wait_for("carol's table", lambda: dt.eval(
            "Array.from(document.querySelectorAll('#env-list tbody tr'))"
            ".map(r => r.dataset.env).sort().join(',')") == "carols,mine", timeout=30)
        self.assertEqual(dt.eval("document.querySelectorAll('#env-list td.tenant').length"), 0)
        self.assertEqual(dt.eval("document.querySelector('#env-count b').textContent"), "2")

        dt.pump()
        self.assertEqual(dt.errors(), [])


    def test_hostile_text_is_never_markup(self):
        """A guest's console and every field a tenant or a worker controls
        go into the page as text: a console tail holding an <img onerror>
        and a </script> makes no element and runs nothing, and the same
        holds for each render path (hosts, envs, VMs, events, errors) fed
        hostile strings in the browser."""
        env = self.api("POST", "/v1/envs", {"name": "hostile", "images": [{"image": "xss"}],
                                            "cpu": 1, "mem_mib": 64}, expect=201)
        vm = env["vms"][0]
        harness.wait_for("the payload on the console", lambda: "onerror" in base64.b64decode(
            self.api("GET", "/v1/envs/hostile/vms/%d/console" % vm["vm_id"])["text"]).decode(
                errors="replace"), timeout=30)
        dt = self.start_browser()
        self.addCleanup(dt.close)
        for domain in ("Runtime", "Log", "Page"):
            dt.call(domain + ".enable")
        dt.call("Page.navigate", url="%s/?token=%s" % (self.gw.base, ADMIN_TOKEN))
        harness.wait_for("env hostile", lambda: dt.eval(
            "!!document.querySelector('.env[data-env=\"hostile\"] tr[data-vm] button')"),
            timeout=30)
        dt.eval("document.querySelector('.env[data-env=\"hostile\"] tr[data-vm] button').click()")
        harness.wait_for("the console tail", lambda: "onerror" in dt.eval(
            "document.getElementById('console').textContent"), timeout=20)
        # every render path with hostile strings where the broker's fields go
        shown_error = dt.eval("""(() => {
          const p = %s;
          renderHosts([{id: p, state: p, accel: p, draining: false, cpu_used: 1, cpu_total: 2,
                        mem_used: 1, mem_total: 2, disk_used: 1, disk_total: 2, vm_count: p,
                        engines: [p], images: [p]}]);
          document.getElementById("envs").append(renderEnv({name: p, state: p, tenant: p,
            vm_count: p, lifetime: p, expires_at: 0, vms: [{vm_id: p, image: p, engine: p,
            state: p, ready: true, ip: p, host: p, ports: [{guest: p, public: p}]}]}));
          isAdmin = true;
          renderEnvList([{name: p, tenant: p, state: p, vm_count: p, expires_at: 0,
                          queue_position: p}], p);
          addEvent(p, {env: p, host: p, vm_id: p, state: p, message: p, time: 0});
          document.getElementById("console-title").textContent = p;
          showError(p);
          return document.getElementById("error").textContent;
        })()""" % json.dumps(PAYLOAD))
        time.sleep(1)  # an onerror would fire once x fails to load
        self.assertIsNone(dt.eval("window.__xss === undefined ? null : window.__xss"))
        self.assertEqual(dt.eval("document.querySelectorAll('img').length"), 0)
        self.assertEqual(dt.eval("Array.from(document.scripts).map(s => s.src)"),
                         [self.gw.base + "/chart.min.js", self.gw.base + "/app.js"])
        self.assertEqual(dt.eval("document.querySelectorAll('[onerror], [onclick]').length"), 0)
        self.assertIn(PAYLOAD_SHOWN, dt.eval("document.getElementById('console').textContent"))
        self.assertEqual(shown_error, PAYLOAD)  # (a refresh may clear it since)
        self.assertIn(PAYLOAD, dt.eval("document.getElementById('events').textContent"))
        dt.pump()
        self.assertEqual(dt.errors(), [])


if __name__ == "__main__":
    unittest.main()
