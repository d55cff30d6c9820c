// ttfleet dashboard. Plain JavaScript against ttgw's REST API (docs/openapi.yaml):
// no framework and no build step. The token is taken once (login field or
// /?token=T) and kept in sessionStorage for this tab; every request sends it as
// a bearer token. Live updates come from GET /v1/events (Server-Sent Events),
// read with fetch() so the token travels in a header, never in a URL.
// Everything shown is put into the page with textContent, never as HTML.
"use strict";

const KEY = "ttfleet.token";
let token = null;
let isAdmin = false;
let refreshTimer = null;
let streamAbort = null;

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

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, Math.round(100 * used / total)) : 0;
  const inner = el("div");
  inner.style.width = pct + "%";
  return el("div", {}, el("div", { class: "bar", title: pct + "%" }, inner), el("span", { class: "num" }, used + " / " + total));
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
      el("td", {}, bar(h.cpu_used, h.cpu_total)),
      el("td", {}, bar(h.mem_used, h.mem_total)),
      el("td", {}, bar(h.disk_used, h.disk_total)),
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
    el("td", {}, vm.vm_id),
    el("td", {}, vm.image),
    el("td", {}, vm.engine),
    el("td", {}, stateSpan(vm.state)),
    el("td", {}, "ready" in vm ? (vm.ready ? "yes" : "no") : "\u2013"),
    el("td", {}, vm.ip),
    el("td", {}, portsText(vm.ports)),
    el("td", {}, vm.host),
    el("td", {}, el("button", { onclick: () => consoleTail(env.name, vm.vm_id, vm.host) }, "console"))));
  const del = el("button", { class: "danger delete", "data-env": env.name }, "delete");
  del.addEventListener("click", () => {
    if (del.dataset.armed) { deleteEnv(env.name); return; }
    del.dataset.armed = "1";
    del.textContent = "really delete?";
    setTimeout(() => { delete del.dataset.armed; del.textContent = "delete"; }, 4000);
  });
  const life = el("input", { type: "number", min: "60", step: "60", value: String(env.lifetime), title: "lifetime in seconds" });
  const ext = el("button", { class: "extend", onclick: () => extendEnv(env.name, life.value) }, "set lifetime");
  const expires = env.expires_at ? new Date(env.expires_at * 1000).toLocaleString() : "";
  return el("div", { class: "env", "data-env": env.name },
    el("div", { class: "env-head" }, el("b", {}, env.name), stateSpan(env.state),
       el("span", { class: "num" }, env.vm_count + " VMs, tenant " + env.tenant + ", expires " + expires),
       life, ext, del),
    el("table", {}, el("thead", {}, el("tr", {}, ...["id", "image", "engine", "state", "ready", "ip", "ports", "host", ""].map(t => el("th", {}, t)))),
       el("tbody", {}, ...rows)));
}

// The envs table: every env the token may list, one row each; for an admin
// that is every tenant's, with a tenant column.
function renderEnvList(envs, myTenant) {
  const head = ["env", "tenant", "state", "VMs", "expires", "queue"].filter(t => isAdmin || t !== "tenant");
  const rows = envs.map(e => {
    const cells = [el("td", {}, e.name)];
    if (isAdmin) cells.push(el("td", { class: "tenant" }, e.tenant));
    cells.push(el("td", {}, stateSpan(e.state)), el("td", {}, e.vm_count),
      el("td", {}, e.expires_at ? new Date(e.expires_at * 1000).toLocaleString() : ""),
      el("td", {}, e.state === "queued" ? "#" + e.queue_position : ""));
    return el("tr", { "data-env": e.name, "data-tenant": e.tenant, class: e.tenant === myTenant ? "mine" : "" }, ...cells);
  });
  $("env-list").replaceChildren(el("thead", {}, el("tr", {}, ...head.map(t => el("th", {}, t)))),
    el("tbody", {}, ...rows));
  $("env-list").hidden = envs.length === 0;
}

async function refresh() {
  refreshTimer = null;
  try {
    const me = await api("GET", "/v1/whoami");
    if (!me.ok) { showError(me.data && me.data.error ? me.data.error.message : "who am I?"); return; }
    isAdmin = me.data.role === "admin";
    const myTenant = me.data.tenant;
    $("who").textContent = myTenant + " (" + me.data.role + ")";
    $("pool-note").hidden = isAdmin;
    $("hosts").hidden = !isAdmin;
    if (isAdmin) {  // users would get 403: the pool is admin-only
      const hosts = await api("GET", "/v1/hosts");
      if (hosts.ok) renderHosts(hosts.data.hosts || []);
    }
    // an admin lists every tenant's envs; a user its own
    const list = await api("GET", isAdmin ? "/v1/envs?all=true" : "/v1/envs");
    if (!list.ok) { showError(list.data && list.data.error ? list.data.error.message : "cannot list envs"); return; }
    const envs = list.data.envs || [];
    const st = await api("GET", "/v1/status");
    const p = st.ok ? st.data : null;
    // the env count is what the table lists, so the two always agree
    $("summary").replaceChildren(
      el("div", {}, el("b", {}, p ? p.hosts_online + "/" + p.hosts_total : "?"), "hosts online"),
      el("div", { id: "env-count" }, el("b", {}, envs.length), isAdmin ? "envs, all tenants" : "envs"),
      el("div", {}, el("b", {}, p ? p.vms : "?"), "VMs"),
      el("div", {}, el("b", {}, p ? p.cpu_used + "/" + p.cpu_total : "?"), "cpu used"));
    renderEnvList(envs, myTenant);
    // the details (VMs, actions) of the envs of the token's own tenant: env
    // show and the actions name an env within the caller's tenant
    const own = envs.filter(e => e.tenant === myTenant);
    const shown = await Promise.all(own.map(async e => {
      if (e.state === "queued") return e;
      const one = await api("GET", "/v1/envs/" + encodeURIComponent(e.name));
      return one.ok ? one.data : e;
    }));
    $("envs").replaceChildren(...(shown.length ? shown.map(renderEnv) : [el("p", { class: "hint" }, envs.length ? "No envs of tenant " + myTenant + "." : "No envs.")]));
    showError("");
  } catch (e) {
    if (e.message !== "unauthenticated") showError("cannot reach ttgw: " + e.message);
  }
}

function scheduleRefresh() {
  if (!refreshTimer) refreshTimer = setTimeout(refresh, 250);
}

async function deleteEnv(name) {
  const r = await api("DELETE", "/v1/envs/" + encodeURIComponent(name));
  if (!r.ok) showError("delete " + name + ": " + r.data.error.message);
  scheduleRefresh();
}

async function extendEnv(name, lifetime) {
  const r = await api("POST", "/v1/envs/" + encodeURIComponent(name) + "/extend", { lifetime: Number(lifetime) });
  if (!r.ok) showError("extend " + name + ": " + r.data.error.message);
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
  $("console-title").textContent = name + " VM " + vm;
  if (!r.ok) { $("console").textContent = "(" + r.data.error.message + ")"; return; }
  const bytes = Uint8Array.from(atob(r.data.text || ""), c => c.charCodeAt(0));
  $("console").textContent = (r.data.truncated ? "[\u2026]\n" : "") + new TextDecoder().decode(bytes);
}

function addEvent(kind, ev) {
  const list = $("events");
  const when = new Date((ev.time || 0) * 1000).toLocaleTimeString();
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
      const resp = await fetch("/v1/events", { headers: { "Authorization": "Bearer " + token }, signal: streamAbort.signal });
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
            if (line.startsWith("event: ")) kind = line.slice(7);
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
  if (token) start(); else logout("");
});
