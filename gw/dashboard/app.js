// ttfleet dashboard. Plain JavaScript against ttgw's REST API (docs/openapi.yaml):
// no framework and no build step. The token is taken once (login field or
// /?token=T) and kept in sessionStorage for this tab; every request sends it as
// a bearer token. Live updates come from GET /v1/events (Server-Sent Events),
// read with fetch() so the token travels in a header, never in a URL.
// Everything shown is put into the page with textContent, never as HTML.
// One request per refresh: GET /v1/dashboard (who the token is, the envs
// with their VMs, for an admin the pool and its history, which the charts
// draw with Chart.js, served by ttgw from Debian's libjs-chart.js).
"use strict";

const KEY = "ttfleet.token";
let token = null;
let isAdmin = false;
let refreshTimer = null;
let streamAbort = null;
let lastEventId = "";
let ratios = { cpu: 1, mem: 1, disk: 1 };
let lastEnvs = [];
let myTenant = "";
let sortKey = "name", sortDir = 1;
const charts = {};

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "Authorization": "Bearer " + token } };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  let data = null;
  try { data = await resp.json(); } catch (e) { data = null; }
  if (resp.status === 401) { logout("The token was refused: " + (data && data.error ? data.error.message : "")); throw new Error("unauthenticated"); }
  return { status: resp.status, ok: resp.ok, data };
}

function showError(text) {
  const e = $("error");
  e.textContent = text || "";
  e.hidden = !text;
}

// Human units and times
const MiB = 1024 * 1024;
function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (n >= 10 || i === 0 ? Math.round(n) : Math.round(n * 10) / 10) + " " + u[i];
}
function plural(n, one, many) { return n + " " + (n === 1 ? one : (many || one + "s")); }
function duration(s) {
  s = Math.abs(Math.round(s));
  if (s < 90) return s + " s";
  if (s < 90 * 60) return Math.round(s / 60) + " min";
  if (s < 36 * 3600) { const h = Math.floor(s / 3600), m = Math.round((s % 3600) / 60); return h + " h" + (m ? " " + m + " min" : ""); }
  return Math.round(s / 86400) + " d";
}
function relTime(unix) {
  if (!unix) return "";
  const d = unix - Date.now() / 1000;
  return d >= 0 ? "in " + duration(d) : duration(d) + " ago";
}
// "90m", "2h", "1h30m", "1d", "45s", "300": seconds, or NaN
function parseDuration(text) {
  const t = String(text).trim();
  if (/^\d+$/.test(t)) return Number(t);
  const m = t.match(/^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/);
  if (!m || !t) return NaN;
  return (Number(m[1] || 0) * 86400) + (Number(m[2] || 0) * 3600) + (Number(m[3] || 0) * 60) + Number(m[4] || 0);
}
// "512M", "2G", "2048" (MiB): MiB, or NaN
function parseMiB(text) {
  const m = String(text).trim().match(/^(\d+(?:\.\d+)?)\s*(M|MB|MiB|G|GB|GiB)?$/i);
  if (!m) return NaN;
  const n = Number(m[1]);
  return Math.round(/^g/i.test(m[2] || "") ? n * 1024 : n);
}

// used of allocatable (capacity x overcommit ratio): the bar and its text
// say both, so 8 CPUs used of 2 with ratio 4 reads "8 / 8 (2 × 4)"
function bar(used, total, ratio, fmt) {
  fmt = fmt || String;
  ratio = ratio || 1;
  const alloc = Math.floor(total * ratio);
  const pct = alloc > 0 ? Math.min(100, Math.round(100 * used / alloc)) : 0;
  const inner = el("div");
  inner.style.width = pct + "%";
  const text = fmt(used) + " / " + fmt(alloc) + (ratio !== 1 ? " (" + fmt(total) + " \u00d7 " + ratio + ")" : "");
  return el("div", {}, el("div", { class: "bar", title: pct + "% of allocatable" }, inner), el("span", { class: "num" }, text));
}

function stateSpan(s) { return el("span", { class: "state state-" + s }, s); }

function renderHosts(hosts) {
  const tbody = $("hosts").querySelector("tbody");
  tbody.replaceChildren();
  for (const h of hosts) {
    const actions = el("td");
    if (isAdmin) {
      actions.append(el("button", { "data-host": h.id, class: "drain", onclick: () => drain(h.id, h.draining) },
                        h.draining ? "undrain" : "drain"));
    }
    tbody.append(el("tr", { "data-host": h.id },
      el("td", {}, h.id, h.accel ? el("span", { class: "num" }, " " + h.accel) : ""),
      el("td", {}, stateSpan(h.state), h.draining ? el("span", { class: "num" }, " draining") : ""),
      el("td", { class: "cpu" }, bar(h.cpu_used, h.cpu_total, ratios.cpu)),
      el("td", { class: "mem" }, bar(h.mem_used, h.mem_total, ratios.mem, v => bytes(v * MiB))),
      el("td", { class: "disk" }, bar(h.disk_used, h.disk_total, ratios.disk, v => bytes(v * MiB))),
      el("td", {}, h.vm_count),
      el("td", {}, (h.engines || []).join(", ")),
      el("td", {}, (h.images || []).join(", ")),
      actions));
  }
}

function portsText(ports) {
  return (ports || []).map(p => p.guest + "\u2192" + p.public).join(" ");
}

function renderEnv(env) {
  const rows = (env.vms || []).map(vm => el("tr", { "data-vm": vm.vm_id },
    el("td", {}, vm.name || vm.vm_id),
    el("td", {}, vm.image),
    el("td", {}, vm.engine),
    el("td", {}, stateSpan(vm.state)),
    el("td", {}, "ready" in vm ? (vm.ready ? "yes" : "no") : "\u2013"),
    el("td", {}, vm.ip),
    el("td", {}, portsText(vm.ports)),
    el("td", {}, vm.host),
    el("td", {}, el("button", { class: "console", onclick: () => consoleTail(env.name, vm.vm_id, vm.host) }, "console"))));
  const del = el("button", { class: "danger delete", "data-env": env.name }, "delete");
  del.addEventListener("click", () => {
    if (del.dataset.armed) { deleteEnv(env.name); return; }
    del.dataset.armed = "1";
    del.textContent = "really delete?";
    setTimeout(() => { delete del.dataset.armed; del.textContent = "delete"; }, 4000);
  });
  const act = (what) => el("button", { class: what, "data-env": env.name, onclick: () => envAction(env.name, what) }, what);
  const running = env.state === "running" || env.state === "degraded";
  const buttons = [];
  if (running) buttons.push(act("stop"), act("pause"));
  if (env.state === "stopped") buttons.push(act("start"));
  if (env.state === "paused") buttons.push(act("resume"));
  const life = el("input", { class: "extend-by", value: "+1h", title: "+1h adds an hour; 2h sets the lifetime to two hours" });
  const ext = el("button", { class: "extend", "data-env": env.name, onclick: () => extendEnv(env, life.value) }, "extend");
  return el("div", { class: "env", "data-env": env.name },
    el("div", { class: "env-head" }, el("b", {}, env.name), stateSpan(env.state),
       el("span", { class: "num" }, plural(Number(env.vm_count) || 0, "VM") + ", tenant " + env.tenant +
          (env.expires_at ? ", expires " + relTime(env.expires_at) : "") +
          (env.lifetime ? " (lifetime " + duration(Number(env.lifetime) || 0) + ")" : "")),
       el("span", { class: "actions" }, ...buttons, life, ext, del)),
    el("table", {}, el("thead", {}, el("tr", {}, ...["VM", "image", "engine", "state", "ready", "ip", "ports", "host", ""].map(t => el("th", {}, t)))),
       el("tbody", {}, ...rows)));
}

// The envs table: every env the token may list, one row each; for an admin
// that is every tenant's, with a tenant column.
function renderEnvList(envs, mine) {
  const cols = [["name", "env"], ["tenant", "tenant"], ["state", "state"], ["vm_count", "VMs"], ["expires_at", "expires"], ["queue_position", "queue"]]
    .filter(c => isAdmin || c[0] !== "tenant");
  const q = ($("env-search").value || "").toLowerCase();
  const st = $("env-state").value;
  const shown = envs.filter(e => (!q || String(e.name).toLowerCase().includes(q) || String(e.tenant).toLowerCase().includes(q)) &&
                                 (!st || e.state === st))
    .sort((x, y) => { const a = x[sortKey], b = y[sortKey]; return (a < b ? -1 : a > b ? 1 : 0) * sortDir; });
  const rows = shown.map(e => {
    const cells = [el("td", {}, e.name)];
    if (isAdmin) cells.push(el("td", { class: "tenant" }, e.tenant));
    cells.push(el("td", {}, stateSpan(e.state)), el("td", {}, e.vm_count),
      el("td", { title: e.expires_at ? new Date(e.expires_at * 1000).toISOString() : "" }, relTime(e.expires_at)),
      el("td", {}, e.state === "queued" ? "#" + e.queue_position : ""));
    return el("tr", { "data-env": e.name, "data-tenant": e.tenant, class: e.tenant === mine ? "mine" : "" }, ...cells);
  });
  const head = cols.map(([k, t]) => el("th", { "data-sort": k, onclick: () => { sortDir = sortKey === k ? -sortDir : 1; sortKey = k; renderEnvList(lastEnvs, myTenant); } },
    t + (sortKey === k ? (sortDir > 0 ? " \u25b4" : " \u25be") : "")));
  $("env-list").replaceChildren(el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows));
  $("env-list").hidden = envs.length === 0;
}

// The charts: Chart.js line charts of the history ttgw keeps
function chart(id, datasets, labels, opts) {
  const data = { labels, datasets };
  if (charts[id]) { charts[id].data = data; charts[id].update("none"); return; }
  charts[id] = new Chart($(id), { type: "line", data,
    options: Object.assign({ animation: false, maintainAspectRatio: false, responsive: true,
      elements: { point: { radius: 0 } }, interaction: { mode: "index", intersect: false },
      plugins: { legend: { labels: { boxWidth: 10, font: { size: 11 } } } },
      scales: { x: { ticks: { maxTicksLimit: 6, font: { size: 10 } } }, y: { beginAtZero: true, ticks: { font: { size: 10 } } } } }, opts || {}) });
}

function renderCharts(h) {
  $("charts").hidden = !h;
  if (!h || typeof Chart === "undefined") return;
  const labels = h.t.map(t => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  const pct = (a, b) => a.map((v, i) => b[i] > 0 ? Math.round(1000 * v / b[i]) / 10 : 0);
  chart("chart-util", [
    { label: "cpu %", data: pct(h.cpu_used, h.cpu_allocatable), borderColor: "#3b73b9" },
    { label: "memory %", data: pct(h.mem_used_bytes, h.mem_allocatable_bytes), borderColor: "#b7791f" }], labels,
    { scales: { y: { beginAtZero: true, suggestedMax: 100 } } });
  const colors = { running: "#2c8a4b", creating: "#3b73b9", stopped: "#b7791f", paused: "#8e6cc0", degraded: "#c0392b", queued: "#777" };
  const sets = [];
  for (const [k, v] of Object.entries(h.envs)) if (v.some(x => x > 0)) sets.push({ label: "envs " + k, data: v, borderColor: colors[k] || "#444" });
  for (const [k, v] of Object.entries(h.vms)) if (v.some(x => x > 0)) sets.push({ label: "VMs " + k, data: v, borderDash: [4, 3], borderColor: colors[k] || "#444" });
  chart("chart-states", sets, labels);
  chart("chart-queue", [{ label: "waiting creates", data: h.queue, borderColor: "#777" }], labels);
  chart("chart-latency", [{ label: "create → ready, s (mean of the envs ready since the sample before)",
    data: h.ready_latency_s, borderColor: "#2c8a4b", spanGaps: true, pointRadius: 3 }], labels);
}

async function refresh() {
  refreshTimer = null;
  try {
    const d = await api("GET", "/v1/dashboard");
    if (!d.ok) { showError(d.data && d.data.error ? d.data.error.message : "cannot read the dashboard"); return; }
    const me = d.data;
    isAdmin = me.role === "admin";
    myTenant = me.tenant;
    $("who").textContent = myTenant + " (" + me.role + ")";
    $("pool-note").hidden = isAdmin;
    $("hosts").hidden = !isAdmin;
    const p = me.pool || null;
    if (p) ratios = { cpu: p.cpu_overcommit || 1, mem: p.mem_overcommit || 1, disk: p.disk_overcommit || 1 };
    if (isAdmin) renderHosts(me.hosts || []);
    const envs = me.envs || [];
    lastEnvs = envs;
    const vms = envs.reduce((n, e) => n + (Number(e.vm_count) || 0), 0);
    // the env count is what the table lists, so the two always agree
    const tiles = [];
    if (p) tiles.push(el("div", {}, el("b", {}, p.hosts_online + "/" + p.hosts_total), "hosts online"));
    tiles.push(el("div", { id: "env-count" }, el("b", {}, envs.length), isAdmin ? "envs, all tenants" : "envs"),
               el("div", {}, el("b", {}, vms), vms === 1 ? "VM" : "VMs"));
    if (p) {
      tiles.push(el("div", { id: "cpu-alloc" }, el("b", {}, p.cpu_used + " / " + Math.floor(p.cpu_total * ratios.cpu)),
                    "CPUs allocated of allocatable" + (ratios.cpu !== 1 ? " (" + p.cpu_total + " \u00d7 " + ratios.cpu + ")" : "")),
                 el("div", {}, el("b", {}, bytes(p.mem_used * MiB) + " / " + bytes(Math.floor(p.mem_total * ratios.mem) * MiB)), "memory allocated"));
    }
    $("summary").replaceChildren(...tiles);
    renderCharts(me.history || null);
    renderEnvList(envs, myTenant);
    // the details (VMs, actions) of the envs of the token's own tenant: the
    // actions name an env within the caller's tenant
    const own = envs.filter(e => e.tenant === myTenant);
    $("envs").replaceChildren(...(own.length ? own.map(renderEnv) : [el("p", { class: "hint" }, envs.length ? "No envs of tenant " + myTenant + "." : "No envs.")]));
    showError("");
  } catch (e) {
    if (e.message !== "unauthenticated") showError("cannot reach ttgw: " + e.message);
  }
}

// Refreshes follow events, at most one every 1.5 s: a busy pool's stream
// must not turn into a request per event (each one reads every env).
let lastRefreshAt = 0;
function scheduleRefresh() {
  if (refreshTimer) return;
  const wait = Math.max(250, 1500 - (Date.now() - lastRefreshAt));
  refreshTimer = setTimeout(() => { lastRefreshAt = Date.now(); refresh(); }, wait);
}

async function deleteEnv(name) {
  const r = await api("DELETE", "/v1/envs/" + encodeURIComponent(name));
  if (!r.ok) showError("delete " + name + ": " + r.data.error.message);
  scheduleRefresh();
}

async function envAction(name, what) {
  const r = await api("POST", "/v1/envs/" + encodeURIComponent(name) + "/" + what);
  if (!r.ok) showError(what + " " + name + ": " + r.data.error.message);
  scheduleRefresh();
}

// "+1h" adds to the env's lifetime; "2h" sets it
async function extendEnv(env, text) {
  const t = String(text).trim();
  const secs = parseDuration(t.replace(/^\+/, ""));
  if (!(secs > 0)) { showError("extend " + env.name + ": '" + t + "' is not a duration (e.g. +1h, 90m, 2h)"); return; }
  const lifetime = t.startsWith("+") ? (Number(env.lifetime) || 0) + secs : secs;
  const r = await api("POST", "/v1/envs/" + encodeURIComponent(env.name) + "/extend", { lifetime });
  if (!r.ok) showError("extend " + env.name + ": " + r.data.error.message);
  scheduleRefresh();
}

async function createEnv(form) {
  const f = new FormData(form);
  const mem = parseMiB(f.get("mem")), life = parseDuration(f.get("lifetime"));
  if (!(mem > 0)) { showError("memory: '" + f.get("mem") + "' is not a size (e.g. 512M, 2G)"); return; }
  if (!(life > 0)) { showError("lifetime: '" + f.get("lifetime") + "' is not a duration (e.g. 90m, 2h)"); return; }
  const body = { name: f.get("name"), images: [{ image: f.get("image"), dup: Number(f.get("dup")) }],
                 cpu: Number(f.get("cpu")), mem_mib: mem, lifetime: life };
  const r = await api("POST", "/v1/envs", body);
  if (!r.ok) { showError("create " + body.name + ": " + r.data.error.message); return; }
  form.elements.name.value = "";
  scheduleRefresh();
}

async function drain(host, undo) {
  const r = await api("POST", "/v1/hosts/" + encodeURIComponent(host) + "/drain", { undo: !!undo });
  if (!r.ok) showError("drain " + host + ": " + r.data.error.message);
  scheduleRefresh();
}

async function consoleTail(name, vm, host) {
  const q = host ? "?host=" + encodeURIComponent(host) : "";
  const r = await api("GET", "/v1/envs/" + encodeURIComponent(name) + "/vms/" + vm + "/console" + q);
  $("console-panel").hidden = false;
  $("console-title").textContent = name + " VM " + vm;
  if (!r.ok) { $("console").textContent = "(" + r.data.error.message + ")"; return; }
  const bytes = Uint8Array.from(atob(r.data.text || ""), c => c.charCodeAt(0));
  $("console").textContent = (r.data.truncated ? "[\u2026]\n" : "") + new TextDecoder().decode(bytes);
}

function addEvent(kind, ev) {
  const list = $("events");
  const when = new Date((ev.time || 0) * 1000).toLocaleTimeString();
  if (kind === "gap") { scheduleRefresh(); }
  const what = [ev.env, ev.host, ev.vm_id ? "vm " + ev.vm_id : "", ev.state, ev.message].filter(Boolean).join(" ");
  list.prepend(el("li", { "data-kind": kind }, when + " " + kind + " " + what));
  while (list.children.length > 100) list.lastChild.remove();
}

function setLive(on) {
  const b = $("live");
  b.textContent = on ? "live" : "offline";
  b.className = "badge " + (on ? "on" : "off");
}

// Reads the event stream; reconnects after a pause when it ends.
async function stream() {
  while (token) {
    streamAbort = new AbortController();
    try {
      const headers = { "Authorization": "Bearer " + token };
      if (lastEventId) headers["Last-Event-ID"] = lastEventId;
      const resp = await fetch("/v1/events", { headers, signal: streamAbort.signal });
      if (!resp.ok) throw new Error("events: HTTP " + resp.status);
      setLive(true);
      scheduleRefresh();
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let kind = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) lastEventId = line.slice(4);
            else if (line.startsWith("event: ")) kind = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) {
            try { addEvent(kind, JSON.parse(data)); } catch (e) { /* not JSON: skip */ }
            scheduleRefresh();
          }
        }
      }
    } catch (e) {
      if (!token) return;
    }
    setLive(false);
    await new Promise(r => setTimeout(r, 2000));
  }
}

function logout(why) {
  token = null;
  sessionStorage.removeItem(KEY);
  if (streamAbort) streamAbort.abort();
  $("app").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  setLive(false);
  if (why) { $("login").querySelector(".hint").textContent = why; }
}

function start() {
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  refresh();
  stream();
}

window.addEventListener("DOMContentLoaded", () => {
  const params = new URLSearchParams(location.search);
  if (params.get("token")) {
    sessionStorage.setItem(KEY, params.get("token"));
    history.replaceState(null, "", location.pathname);  // keep the token out of history
  }
  token = sessionStorage.getItem(KEY);
  $("login-form").addEventListener("submit", ev => {
    ev.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem(KEY, token);
    start();
  });
  $("logout").addEventListener("click", () => logout(""));
  $("console-close").addEventListener("click", () => { $("console-panel").hidden = true; });
  $("create-form").addEventListener("submit", ev => { ev.preventDefault(); createEnv(ev.target); });
  $("env-search").addEventListener("input", () => renderEnvList(lastEnvs, myTenant));
  $("env-state").addEventListener("change", () => renderEnvList(lastEnvs, myTenant));
  if (token) start(); else logout("");
});
