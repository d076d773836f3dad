// Ferry's dashboard: plain JavaScript on the management API (/api/v1), shipped inside the binary. No framework,
// no CDN: everything it needs is in this file, app.css and index.html. Pages are hash routes; the parts that
// change (connectors, charts) are polled while their page is shown.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
let me = null; // GET /api/v1/session
let timers = [];

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.code;
  }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
  const r = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (r.status === 401 && path !== "/session") { showSignIn("Your session has ended; sign in again."); }
  if (!r.ok) throw new ApiError(r.status, json);
  return json;
}

const canChange = () => me && me.role !== "viewer";
const isAdmin = () => me && me.role === "admin";
const when = (s) => (s ? new Date(s * 1000).toLocaleString() : "—");
const ago = (s) => {
  if (!s) return "—";
  const d = Math.max(0, Math.round(Date.now() / 1000 - s));
  if (d < 90) return `${d} s ago`;
  if (d < 5400) return `${Math.round(d / 60)} min ago`;
  return `${Math.round(d / 3600)} h ago`;
};
const bytes = (n) => {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
};
const enc = encodeURIComponent;

function showOnce(title, value) {
  $("#once-title").textContent = title;
  $("#once-value").textContent = value;
  const d = $("#once");
  d.showModal();
  $("#once-value").focus();
}

function errorText(e) {
  return e instanceof ApiError ? `${e.message} (${e.status})` : String(e);
}

// ---- charts: SVG lines with axes, drawn here -------------------------------------------------------------

const COLORS = ["#2457c5", "#c62828", "#1a7f37", "#b26a00", "#7b1fa2"];

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// series: [{name, points: [[x, y], ...]}]; x in unix seconds.
function lineChart(title, series, from, to, format = (v) => String(v)) {
  const W = 560, H = 200, L = 52, R = 24, T = 10, B = 28;
  const max = niceMax(Math.max(0, ...series.flatMap((s) => s.points.map((p) => p[1]))));
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    svg.append(el);
    return el;
  };
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    add("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: i ? "grid" : "axis" });
    add("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, format(v));
  }
  add("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" });
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    const d = new Date(t * 1000);
    const label = to - from > 86400 / 2
      ? `${d.getHours()}:00`
      : `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    add("line", { x1: x(t), x2: x(t), y1: H - B, y2: H - B + 4, class: "axis" });
    add("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, label);
  }
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join("");
    add("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, "data-series": s.name });
    if (s.points.length === 1) {
      add("circle", { cx: x(s.points[0][0]), cy: y(s.points[0][1]), r: 3, fill: COLORS[i % COLORS.length] });
    }
  });
  const legend = h("div", { class: "legend" },
    series.map((s, i) => h("span", {}, h("i", { class: `c${i % COLORS.length}` }), s.name)));
  return h("figure", { class: "card", "data-chart": title }, h("h2", {}, title), svg, legend);
}

// ---- pages --------------------------------------------------------------------------------------------------

function every(ms, fn) {
  fn();
  timers.push(setInterval(fn, ms));
}

async function overview(page) {
  page.append(h("h1", {}, "Overview"));
  const tiles = h("div", { class: "tiles" });
  const nodes = h("div", { class: "card" });
  const tenants = h("div", { class: "card" });
  page.append(h("div", { class: "card" }, tiles), h("div", { class: "grid" }, tenants, nodes));
  if (canChange()) page.append(createTenantForm());
  every(1000, async () => {
    const [n, live, list] = await Promise.all([
      api("GET", "/nodes"), api("GET", "/connections?live=true&limit=1000"), api("GET", "/tenants?limit=1000"),
    ]);
    // a connector keeps several tunnels (connector.tunnels), each a connection of its own: count connectors
    const ids = {};
    for (const c of live.items) (ids[c.tenant] ||= new Set()).add(c.connector_id);
    const online = Object.fromEntries(Object.entries(ids).map(([t, set]) => [t, set.size]));
    nodes.replaceChildren(h("h2", {}, "Nodes"), h("table", {},
      h("thead", {}, h("tr", {}, ["Node", "Roles", "Version", "Heartbeat"].map((t) => h("th", {}, t)))),
      h("tbody", {}, n.items.map((x) => h("tr", {},
        h("td", {}, h("span", { class: "dot" }), x.id, x.worker_active ? h("span", { class: "muted" }, " (active worker)") : null),
        h("td", {}, (x.roles || []).join(", ") || "—"),
        h("td", {}, x.version), h("td", {}, ago(x.heartbeat_at)))))));
    tenants.replaceChildren(h("h2", {}, "Tenants"), h("table", { id: "tenants" },
      h("thead", {}, h("tr", {}, ["Tenant", "Connectors online"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.items.map((t) => h("tr", { "data-tenant": t.name },
        h("td", {}, h("a", { href: `#/tenant/${enc(t.name)}` }, t.name), t.display_name ? h("span", { class: "muted" }, ` ${t.display_name}`) : null),
        h("td", { class: "online" }, h("span", { class: online[t.name] ? "dot" : "dot off" }), String(online[t.name] || 0)))))));
  });
  every(5000, async () => {
    const to = Math.floor(Date.now() / 1000);
    const s = await api("GET", `/stats?from=${to - 300}&to=${to}`);
    const t = s.totals, c = t.status_classes;
    const minutes = Math.max(1, Math.min(5, s.minutes.length));
    const errors = (c["5xx"] || 0);
    tiles.replaceChildren(
      tile("Requests / s (5 min)", (t.requests / (minutes * 60)).toFixed(2)),
      tile("Server errors (5xx)", t.requests ? `${((100 * errors) / t.requests).toFixed(1)} %` : "—"),
      tile("Client errors (4xx)", t.requests ? `${((100 * (c["4xx"] || 0)) / t.requests).toFixed(1)} %` : "—"),
      tile("p99 latency", t.p99_ms != null ? `${t.p99_ms} ms` : "—"));
  });
}

function tile(label, value) {
  return h("div", { class: "tile" }, h("div", { class: "label" }, label), h("div", { class: "big" }, value));
}

function createTenantForm() {
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "inline", id: "create-tenant" },
    h("label", {}, "Name ", h("input", { name: "name", required: true, pattern: "[a-z0-9][a-z0-9_-]{0,62}" })),
    h("label", {}, "Display name ", h("input", { name: "display_name" })),
    h("button", { type: "submit" }, "Create tenant"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = new FormData(form);
    try {
      const body = { name: data.get("name") };
      if (data.get("display_name")) body.display_name = data.get("display_name");
      const r = await api("POST", "/tenants", body);
      form.reset();
      err.textContent = "";
      showOnce(`Connector secret of ${r.tenant.name}`, r.secret.secret);
    } catch (e) { err.textContent = errorText(e); }
  });
  return h("div", { class: "card" }, h("h2", {}, "New tenant"), form, err);
}

const SETTINGS = [
  ["keepalive_interval_ms", "Keep-alive interval (ms)"], ["reconnect_min_delay_ms", "Reconnect min delay (ms)"],
  ["reconnect_max_delay_ms", "Reconnect max delay (ms)"], ["target_response_timeout_ms", "Target response timeout (ms)"],
  ["request_expiration_ms", "Request expiration (ms)"], ["max_concurrent_requests", "Max concurrent requests (0 = no cap)"],
  ["max_body_size", "Max body size (bytes, 0 = no limit)"],
];

async function tenantPage(page, name) {
  let tenant;
  try { tenant = await api("GET", `/tenants/${enc(name)}`); } catch (e) {
    page.append(h("h1", {}, name), h("p", { class: "error" }, errorText(e)));
    return;
  }
  page.append(h("h1", {}, `Tenant ${tenant.name}`, tenant.display_name ? h("span", { class: "muted" }, ` ${tenant.display_name}`) : null));
  const conns = h("div", { class: "card", id: "connectors" });
  const secrets = h("div", { class: "card", id: "secrets" });
  const charts = h("div", { class: "grid", id: "charts" });
  const range = h("select", { id: "range", "aria-label": "Chart range" },
    h("option", { value: "3600" }, "Last hour"), h("option", { value: "86400" }, "Last day"));
  page.append(h("div", { class: "grid" }, conns, settingsCard(tenant)), secrets,
    h("div", { class: "card" }, h("label", {}, "Charts: ", range)), charts);
  every(1000, async () => {
    const live = await api("GET", `/connections?live=true&tenant=${enc(name)}&limit=1000`);
    const connectors = new Set(live.items.map((c) => c.connector_id)).size;
    conns.replaceChildren(h("h2", {}, `Connectors online: ${connectors} (tunnels: ${live.items.length})`), live.items.length
      ? h("table", {}, h("thead", {}, h("tr", {}, ["Connector", "Node", "Address", "Since"].map((t) => h("th", {}, t)))),
        h("tbody", {}, live.items.map((c) => h("tr", { "data-connector": c.connector_id },
          h("td", {}, h("span", { class: "dot" }), c.connector_id), h("td", {}, c.node), h("td", {}, c.remote_addr),
          h("td", {}, ago(c.connected_at))))))
      : h("p", { class: "muted" }, "No connector is online."));
  });
  const loadSecrets = async () => {
    const list = await api("GET", `/tenants/${enc(name)}/secrets`);
    const create = canChange() ? h("button", { id: "create-secret", onclick: async () => {
      try {
        const s = await api("POST", `/tenants/${enc(name)}/secrets`, {});
        showOnce(`New connector secret of ${name}`, s.secret);
        loadSecrets();
      } catch (e) { alert(errorText(e)); }
    } }, "Create secret") : null;
    secrets.replaceChildren(h("h2", {}, "Connector secrets"), create, h("table", {},
      h("thead", {}, h("tr", {}, ["Id", "Created", "Expires", "State", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.items.map((s) => h("tr", {},
        h("td", {}, s.id), h("td", {}, when(s.created_at)), h("td", {}, when(s.expires_at)),
        h("td", {}, s.active ? h("span", { class: "ok" }, "active") : h("span", { class: "muted" }, s.revoked_at ? "revoked" : "expired")),
        h("td", {}, canChange() && s.active ? h("button", { class: "danger", onclick: async () => {
          if (!confirm(`Revoke secret ${s.id}? Connectors using it are disconnected.`)) return;
          try { await api("DELETE", `/tenants/${enc(name)}/secrets/${enc(s.id)}`); loadSecrets(); } catch (e) { alert(errorText(e)); }
        } }, "Revoke") : null))))));
  };
  loadSecrets();
  const drawCharts = async () => {
    const span = Number(range.value);
    const to = Math.floor(Date.now() / 1000);
    const from = to - span;
    const s = await api("GET", `/stats?tenant=${enc(name)}&from=${from}&to=${to}`);
    const pts = (f) => s.minutes.map((m) => [m.minute, f(m)]);
    charts.replaceChildren(
      lineChart("Requests per minute", [{ name: "requests", points: pts((m) => m.requests) }], from, to),
      lineChart("Errors per minute by class", [
        { name: "4xx", points: pts((m) => m.status_classes["4xx"] || 0) },
        { name: "5xx", points: pts((m) => m.status_classes["5xx"] || 0) }], from, to),
      lineChart("Bytes per minute", [
        { name: "in", points: pts((m) => m.bytes_in) }, { name: "out", points: pts((m) => m.bytes_out) }], from, to, bytes),
      lineChart("Latency (ms)", [
        { name: "p50", points: s.minutes.filter((m) => m.p50_ms != null).map((m) => [m.minute, m.p50_ms]) },
        { name: "p99", points: s.minutes.filter((m) => m.p99_ms != null).map((m) => [m.minute, m.p99_ms]) }], from, to));
    charts.dataset.requests = String(s.totals.requests);
  };
  range.addEventListener("change", drawCharts);
  every(3000, drawCharts);
}

function settingsCard(tenant) {
  const s = tenant.settings || {};
  const ro = !canChange();
  const msg = h("p", { class: "error", role: "status" });
  const form = h("form", { id: "settings" }, h("div", { class: "settings-form" },
    SETTINGS.map(([k, label]) => h("label", {}, label, h("input", { name: k, type: "number", min: 0, value: s[k] ?? "", placeholder: "node default", disabled: ro }))),
    h("label", {}, h("input", { name: "require_client_auth", type: "checkbox", checked: !!s.require_client_auth, disabled: ro }), " Clients need a bearer token")),
    ro ? h("p", { class: "muted" }, "Read only: your role cannot change settings.") : h("button", { type: "submit" }, "Save settings"), msg);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    for (const [k] of SETTINGS) {
      const v = form.elements[k].value;
      if (v !== "") body[k] = Number(v);
    }
    if (form.elements.require_client_auth.checked) body.require_client_auth = true;
    try {
      await api("PUT", `/tenants/${enc(tenant.name)}/settings`, body);
      msg.className = "ok"; msg.textContent = "Saved; connectors get it now.";
    } catch (e) { msg.className = "error"; msg.textContent = errorText(e); }
  });
  return h("div", { class: "card" }, h("h2", {}, "Settings"), form);
}

async function requestsPage(page) {
  page.append(h("h1", {}, "Request log"));
  const form = h("form", { class: "inline", id: "log-filter" },
    h("label", {}, "Tenant ", h("input", { name: "tenant" })),
    h("label", {}, "Target ", h("input", { name: "target" })),
    h("label", {}, "Status ", h("input", { name: "status", placeholder: "e.g. 5xx or 404", size: 8 })),
    h("label", {}, "Since ", h("input", { name: "since", type: "datetime-local" })),
    h("button", { type: "submit" }, "Filter"));
  const out = h("div", { class: "card" });
  const detail = h("div", { class: "card", id: "log-detail", hidden: true });
  page.append(h("div", { class: "card" }, form), detail, out);
  const load = async () => {
    const d = new FormData(form);
    const q = new URLSearchParams({ limit: "500" });
    if (d.get("tenant")) q.set("tenant", d.get("tenant"));
    let r;
    try { r = await api("GET", `/request-log?${q}`); } catch (e) { out.replaceChildren(h("p", { class: "error" }, errorText(e))); return; }
    const status = String(d.get("status") || "").trim().toLowerCase();
    const since = d.get("since") ? new Date(d.get("since")).getTime() : 0;
    const items = r.items.filter((e) => (!d.get("target") || e.target === d.get("target"))
      && (!status || (status.endsWith("xx") ? String(e.status)[0] === status[0] : String(e.status) === status))
      && e.at_ms >= since);
    out.replaceChildren(r.recording === false ? h("p", { class: "warn" }, "This node does not record requests (server.relay.request_log).") : "",
      h("table", {}, h("thead", {}, h("tr", {}, ["Time", "Tenant", "Method", "Target", "Path", "Status", "ms"].map((t) => h("th", {}, t)))),
        h("tbody", {}, items.map((e) => h("tr", { class: "clickable", tabindex: 0, onclick: () => show(e), onkeydown: (k) => { if (k.key === "Enter") show(e); } },
          h("td", {}, new Date(e.at_ms).toLocaleTimeString()), h("td", {}, e.tenant), h("td", {}, e.method), h("td", {}, e.target),
          h("td", {}, e.path), h("td", { class: e.status >= 500 ? "bad" : e.status >= 400 ? "warn" : "" }, e.status), h("td", {}, e.duration_ms))))));
  };
  const show = (e) => {
    detail.hidden = false;
    detail.replaceChildren(h("h2", {}, `Request ${e.request_id}`), h("pre", {}, JSON.stringify(e, null, 2)));
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
}

async function usersPage(page) {
  page.append(h("h1", {}, "Users"));
  const list = h("div", { class: "card" });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "inline", id: "create-user" },
    h("label", {}, "Name ", h("input", { name: "name", required: true })),
    h("label", {}, "Role ", h("select", { name: "role" }, ["viewer", "operator", "admin"].map((r) => h("option", {}, r)))),
    h("label", {}, "Tenants (operator) ", h("input", { name: "tenants", placeholder: "acme, globex" })),
    h("button", { type: "submit" }, "Create user"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = new FormData(form);
    const body = { name: d.get("name"), role: d.get("role") };
    const tenants = String(d.get("tenants") || "").split(",").map((t) => t.trim()).filter(Boolean);
    if (tenants.length) body.tenants = tenants;
    try {
      const r = await api("POST", "/users", body);
      form.reset(); err.textContent = "";
      showOnce(`Password of ${r.user.name}`, r.password);
      load();
    } catch (e) { err.textContent = errorText(e); }
  });
  page.append(h("div", { class: "card" }, h("h2", {}, "New user"), form, err), list);
  const act = (fn) => async () => { try { await fn(); load(); } catch (e) { alert(errorText(e)); } };
  const load = async () => {
    const r = await api("GET", "/users");
    list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["Name", "Role", "Tenants", "State", "Last sign-in", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, r.items.map((u) => h("tr", {},
        h("td", {}, u.name), h("td", {}, u.role), h("td", {}, u.tenants.join(", ")),
        h("td", {}, u.disabled ? h("span", { class: "bad" }, "disabled") : "enabled"), h("td", {}, ago(u.last_sign_in_at)),
        h("td", {},
          h("button", { class: "secondary", onclick: act(() => api("POST", `/users/${enc(u.name)}/${u.disabled ? "enable" : "disable"}`)) }, u.disabled ? "Enable" : "Disable"), " ",
          h("button", { class: "secondary", onclick: act(async () => { const p = await api("PUT", `/users/${enc(u.name)}/password`, {}); showOnce(`New password of ${u.name}`, p.password); }) }, "New password"), " ",
          h("button", { class: "danger", onclick: act(async () => { if (confirm(`Delete ${u.name}?`)) await api("DELETE", `/users/${enc(u.name)}`); }) }, "Delete")))))));
  };
  load();
}

async function keysPage(page) {
  page.append(h("h1", {}, "Admin keys"));
  const list = h("div", { class: "card" });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "inline" },
    h("label", {}, "Name ", h("input", { name: "name", required: true })),
    h("label", {}, "Role ", h("select", { name: "role" }, ["admin", "operator", "viewer"].map((r) => h("option", {}, r)))),
    h("label", {}, "Tenants (operator) ", h("input", { name: "tenants" })),
    h("button", { type: "submit" }, "Create key"));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = new FormData(form);
    const body = { name: d.get("name"), role: d.get("role") };
    const tenants = String(d.get("tenants") || "").split(",").map((t) => t.trim()).filter(Boolean);
    if (tenants.length) body.tenants = tenants;
    try { const r = await api("POST", "/admin-keys", body); form.reset(); err.textContent = ""; showOnce(`Admin key ${r.name}`, r.key); load(); }
    catch (e) { err.textContent = errorText(e); }
  });
  page.append(h("div", { class: "card" }, h("h2", {}, "New key"), form, err), list);
  const load = async () => {
    const r = await api("GET", "/admin-keys");
    list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, ["Id", "Name", "Role", "Tenants", "Created", "State", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, r.items.map((k) => h("tr", {}, h("td", {}, k.id), h("td", {}, k.name), h("td", {}, k.role), h("td", {}, k.tenants.join(", ")),
        h("td", {}, when(k.created_at)), h("td", {}, k.revoked_at ? "revoked" : "active"),
        h("td", {}, k.revoked_at ? null : h("button", { class: "danger", onclick: async () => {
          if (!confirm(`Revoke ${k.name}?`)) return;
          try { await api("DELETE", `/admin-keys/${enc(k.id)}`); load(); } catch (e) { alert(errorText(e)); }
        } }, "Revoke")))))));
  };
  load();
}

async function auditPage(page) {
  page.append(h("h1", {}, "Audit log"));
  const form = h("form", { class: "inline" },
    h("label", {}, "Actor ", h("input", { name: "actor", placeholder: "user:alice" })),
    h("label", {}, "Action ", h("input", { name: "action", placeholder: "tenant.create" })),
    h("button", { type: "submit" }, "Filter"));
  const out = h("div", { class: "card" });
  page.append(h("div", { class: "card" }, form), out);
  const load = async () => {
    const d = new FormData(form);
    const q = new URLSearchParams({ limit: "500" });
    for (const k of ["actor", "action"]) if (d.get(k)) q.set(k, d.get(k));
    const r = await api("GET", `/audit?${q}`);
    out.replaceChildren(h("table", { id: "audit" }, h("thead", {}, h("tr", {}, ["Time", "Actor", "Action", "Object", "Detail"].map((t) => h("th", {}, t)))),
      h("tbody", {}, r.items.map((e) => h("tr", {}, h("td", {}, when(e.at)), h("td", {}, e.actor), h("td", {}, e.action), h("td", {}, e.object),
        h("td", { class: "muted" }, JSON.stringify(e.detail)))))));
  };
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  load();
}

const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

async function gatewayPage(page) {
  page.append(h("h1", {}, "Gateway"));
  const note = h("p", { class: "muted" });
  const routes = h("div", { class: "card" });
  const pools = h("div", { id: "upstreams" });
  page.append(note, routes, pools);
  const HEALTH = {
    live: ["dot", "live"], ejected: ["dot warn", "ejected (failing)"], unhealthy: ["dot bad", "down (health checks fail)"],
  };
  every(1000, async () => {
    const g = await api("GET", "/gateway");
    note.textContent = g.enabled
      ? `The gateway of node ${g.node}: ${count(g.routes.length, "route")}, ${count(g.upstreams.length, "upstream pool")}; refreshed every second.`
      : `Node ${g.node || "here"} runs no gateway (the gateway role is off).`;
    routes.replaceChildren(h("h2", {}, "Routes"), g.routes.length === 0 ? h("p", { class: "muted" }, "No routes.") :
      h("table", { id: "routes" },
        h("thead", {}, h("tr", {}, ["Route", "Hosts", "Path", "Methods", "Action"].map((t) => h("th", {}, t)))),
        h("tbody", {}, g.routes.map((r) => h("tr", { "data-route": r.name },
          h("td", {}, r.name),
          h("td", {}, r.hosts.length ? r.hosts.join(", ") : h("span", { class: "muted" }, "any")),
          h("td", {}, h("code", {}, r.path), h("span", { class: "muted" }, ` ${r.path_kind}`)),
          h("td", {}, r.methods.length ? r.methods.join(", ") : h("span", { class: "muted" }, "any")),
          h("td", {}, `${r.action} `, h("code", {}, r.target)))))));
    pools.replaceChildren(...g.upstreams.map((p) => {
      const live = p.servers.filter((s) => s.health === "live").length;
      return h("div", { class: "card", "data-upstream": p.name },
        h("h2", {}, `Upstream ${p.name} `, h("span", { class: live ? (live === p.servers.length ? "ok" : "warn") : "bad" },
          `${live} of ${p.servers.length} live`),
          h("span", { class: "muted" }, ` · ${p.protocol}${p.health_checks ? " · health checks" : " · passive checks only"}`)),
        h("table", {},
          h("thead", {}, h("tr", {}, ["Server", "Health", "In flight", "Requests", "Failures", "Weight", "Max conns"].map((t) => h("th", {}, t)))),
          h("tbody", {}, p.servers.map((s) => {
            const [dot, label] = HEALTH[s.health] || ["dot off", s.health];
            return h("tr", { "data-server": s.url },
              h("td", {}, s.url, s.backup ? h("span", { class: "muted" }, " (backup)") : null),
              h("td", { class: "health", "data-health": s.health }, h("span", { class: dot }), label),
              h("td", {}, String(s.in_flight)), h("td", {}, String(s.requests)),
              h("td", { class: s.failures ? "warn" : null }, String(s.failures)),
              h("td", {}, String(s.weight)), h("td", {}, s.max_conns == null ? "—" : String(s.max_conns)));
          }))));
    }));
  });
}

// ---- shell: sign-in, navigation, routing -------------------------------------------------------------------

const PAGES = [
  ["overview", "Overview", overview, () => true],
  ["requests", "Request log", requestsPage, () => true],
  ["gateway", "Gateway", gatewayPage, () => true],
  ["users", "Users", usersPage, isAdmin],
  ["keys", "Admin keys", keysPage, isAdmin],
  ["audit", "Audit log", auditPage, isAdmin],
];

function showSignIn(message) {
  me = null;
  timers.forEach(clearInterval); timers = [];
  $("#top").hidden = true;
  $("#page").replaceChildren();
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
  $("#sign-in-form input[name=name]").focus();
  showSignInMethods();
}

// "Sign in with …" when the node signs in through an OpenID Connect provider.
async function showSignInMethods() {
  try {
    const r = await fetch("/api/v1/session/methods", { headers: { Accept: "application/json" }, credentials: "same-origin" });
    const methods = r.ok ? await r.json() : {};
    const link = $("#sign-in-oidc-link");
    if (methods.oidc) {
      link.textContent = `Sign in with ${methods.oidc.provider_name}`;
      link.setAttribute("href", methods.oidc.url);
    }
    $("#sign-in-oidc").hidden = !methods.oidc;
  } catch (e) { /* password only */ }
}

async function route() {
  timers.forEach(clearInterval); timers = [];
  if (!me) return;
  const [, name, arg] = (location.hash || "#/overview").split("/");
  const page = h("div", {});
  $("#page").replaceChildren(page);
  for (const a of $("#nav").querySelectorAll("a")) {
    a.toggleAttribute("aria-current", a.dataset.page === name);
    if (a.dataset.page === name) a.setAttribute("aria-current", "page");
  }
  const found = PAGES.find(([k, , , may]) => k === name && may());
  try {
    if (name === "tenant" && arg) await tenantPage(page, decodeURIComponent(arg));
    else if (found) await found[2](page);
    else await overview(page);
  } catch (e) {
    page.append(h("p", { class: "error" }, errorText(e)));
  }
}

async function start() {
  try {
    me = await api("GET", "/session");
  } catch (e) {
    showSignIn();
    return;
  }
  $("#sign-in").hidden = true;
  $("#top").hidden = false;
  $("#who").textContent = `${me.user || me.subject} · ${me.role}`;
  $("#nav").replaceChildren(...PAGES.filter(([, , , may]) => may()).map(([k, label]) =>
    h("a", { href: `#/${k}`, "data-page": k }, label)));
  await route();
  $("#main").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const d = new FormData(ev.target);
    try {
      await api("POST", "/session", { name: d.get("name"), password: d.get("password") });
      ev.target.reset();
      await start();
    } catch (e) {
      $("#sign-in-error").textContent = e.code === "sign_in_rate_limited" ? e.message : "Wrong name or password.";
    }
  });
  $("#sign-out").addEventListener("click", async () => {
    try { await api("DELETE", "/session"); } catch (e) { /* ended already */ }
    showSignIn("Signed out.");
  });
  // What was shown once is gone once the dialog closes.
  $("#once").addEventListener("close", () => { $("#once-value").textContent = ""; });
  window.addEventListener("hashchange", route);
  start();
});
