// trunkgate console: one page, hash-routed, calling the REST API under
// /v1/ with the session cookie (and the CSRF token on writes). Every value
// from the server is set with textContent, never as HTML.
"use strict";

const state = { who: null, page: null, events: null, timer: null, charts: {}, metricsPrev: null };
window.trunkgate = state; // the browser tests read the charts' data here

const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    if (c instanceof Node) td.appendChild(c); else td.textContent = c === undefined || c === null || c === "" ? "–" : String(c);
    tr.appendChild(td);
  }
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function toast(msg) {
  const t = $("#toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.hidden = true; }, 4000);
}

async function api(method, path, body) {
  const opts = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") opts.headers["X-CSRF-Token"] = state.who ? state.who.csrf_token : "";
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  if (res.status === 401) { showLogin(); throw new Error("logged out"); }
  const text = await res.text();
  const data = text ? JSON.parse(text) : {};
  if (!res.ok) throw new Error((data.error && data.error.message) || res.statusText);
  return data;
}

const money = (micros) => (micros / 1e6).toFixed(micros % 1e4 === 0 ? 2 : 6);
const seconds = (ms) => { const s = Math.floor(ms / 1000); return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`; };

// --- login ---

function showLogin() {
  stopPage();
  state.who = null;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#who").textContent = "";
  document.querySelectorAll(".page").forEach((p) => { p.hidden = true; });
  $("#login").hidden = false;
}

async function loggedIn(who) {
  state.who = who;
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#who").textContent = `${who.name || who.key_id} (${who.admin ? "admin" : "read-only"})`;
  document.querySelectorAll("[data-admin]").forEach((e) => { e.hidden = !who.admin; });
  route();
}

$("#login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("#login-error").textContent = "";
  const res = await fetch("/console/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: $("#login-key").value.trim() }), credentials: "same-origin" });
  const data = await res.json();
  $("#login-key").value = "";
  if (!res.ok) { $("#login-error").textContent = data.error.message; return; }
  loggedIn(data);
});

$("#logout").addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin" });
  showLogin();
});

// --- routing ---

const pages = { calls: showCalls, keys: showKeys, trunks: showTrunks, usage: showUsage, audit: showAudit, health: showHealth };

function stopPage() {
  if (state.events) { state.events.close(); state.events = null; }
  if (state.timer) { clearInterval(state.timer); state.timer = null; }
}

function route() {
  if (!state.who) return;
  let name = location.hash.slice(1);
  if (!pages[name] || (!state.who.admin && !["keys", "usage"].includes(name))) name = state.who.admin ? "calls" : "usage";
  stopPage();
  state.page = name;
  document.querySelectorAll(".page").forEach((p) => { p.hidden = p.id !== `page-${name}`; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === name));
  pages[name]().catch((e) => toast(e.message));
}
window.addEventListener("hashchange", route);

// --- live calls: server-sent events, one snapshot a second ---

async function showCalls() {
  state.events = new EventSource("/v1/calls/events");
  state.events.addEventListener("calls", (ev) => renderCalls(JSON.parse(ev.data).calls || []));
}

function renderCalls(calls) {
  $("#calls-count").textContent = `(${calls.length})`;
  $("#calls-empty").hidden = calls.length > 0;
  fill($("#calls-table tbody"), calls.map((c) => {
    const hang = el("button", "Hang up", "danger");
    hang.dataset.call = c.call_id;
    hang.addEventListener("click", async () => {
      hang.disabled = true;
      try { await api("POST", `/v1/calls/${encodeURIComponent(c.call_id)}/hangup`); toast(`Hanging up ${c.call_id}`); } catch (e) { toast(e.message); hang.disabled = false; }
    });
    const m = c.media || {};
    const tr = row([el("code", c.call_id), c.direction, c.key_id, c.trunk_id, c.from, c.to, c.codec,
      c.transport ? `${c.transport}/${c.media_encryption || "–"}` : "", c.state, seconds(c.duration_ms || 0),
      m.loss_percent !== undefined ? `${m.loss_percent.toFixed(1)} %` : "", m.jitter_ms !== undefined ? `${m.jitter_ms.toFixed(1)} ms` : "", hang]);
    tr.dataset.call = c.call_id;
    return tr;
  }));
}

// --- keys ---

async function showKeys() {
  let list;
  if (state.who.admin) list = (await api("GET", "/v1/keys")).keys;
  else list = [await api("GET", `/v1/keys/${encodeURIComponent(state.who.key_id)}`)];
  fill($("#keys-table tbody"), list.map(keyRow));
}

function spendBar(k) {
  const wrap = el("span");
  const spent = (k.spend && k.spend.month_to_date_micros) || 0;
  const cap = k.limits.monthly_spend_cap;
  if (cap > 0) {
    const bar = el("span", null, "bar" + (spent >= cap ? " over" : ""));
    const fillEl = el("span");
    fillEl.style.width = `${Math.min(100, (100 * spent) / cap)}%`;
    bar.appendChild(fillEl);
    wrap.appendChild(bar);
    wrap.appendChild(el("span", `${money(spent)} of ${money(cap)}`));
  } else {
    wrap.appendChild(el("span", `${money(spent)} (no cap)`));
  }
  return wrap;
}

function limitInput(k, field, step) {
  const input = el("input");
  input.type = "number";
  input.min = "0";
  input.step = step || "1";
  input.value = k.limits[field];
  input.dataset.field = field;
  input.disabled = !state.who.admin || k.status !== "active";
  input.addEventListener("change", async () => {
    try {
      await api("PATCH", `/v1/keys/${encodeURIComponent(k.id)}/limits`, { [field]: Number(input.value) });
      toast(`${k.id}: ${field} set to ${input.value}`);
    } catch (e) { toast(e.message); input.value = k.limits[field]; }
  });
  return input;
}

function keyRow(k) {
  const actions = el("span");
  if (state.who.admin && k.status === "active") {
    const rotate = el("button", "Rotate");
    rotate.addEventListener("click", async () => {
      if (!confirm(`Rotate ${k.id}? The old text keeps working for 24 hours.`)) return;
      try { showSecret(await api("POST", `/v1/keys/${encodeURIComponent(k.id)}/rotate`)); showKeys(); } catch (e) { toast(e.message); }
    });
    const revoke = el("button", "Revoke", "danger");
    revoke.dataset.revoke = k.id;
    revoke.addEventListener("click", async () => {
      if (!confirm(`Revoke ${k.id} (${k.name})? It is refused at once and its live calls are hung up.`)) return;
      try { const r = await api("POST", `/v1/keys/${encodeURIComponent(k.id)}/revoke`); toast(`${k.id} revoked; ${r.live_calls_ended} live calls ended`); showKeys(); } catch (e) { toast(e.message); }
    });
    actions.append(rotate, " ", revoke);
  }
  const tr = row([el("code", k.id), k.name, k.mode, el("span", k.status, `status-${k.status}`),
    limitInput(k, "max_channels"), limitInput(k, "cps", "0.1"), spendBar(k), actions]);
  tr.dataset.key = k.id;
  return tr;
}

function showSecret(created) {
  $("#key-secret-text").textContent = created.api_key;
  $("#key-secret-signing").textContent = created.signing_secret || "(unchanged)";
  $("#key-secret").hidden = false;
}

$("#key-secret-done").addEventListener("click", () => {
  $("#key-secret").hidden = true;
  $("#key-secret-text").textContent = "";
  $("#key-secret-signing").textContent = "";
});

$("#key-create").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const scopes = [...document.querySelectorAll(".key-scope:checked")].map((c) => c.value);
    const created = await api("POST", "/v1/keys", { name: $("#key-name").value, mode: $("#key-mode").value, scopes,
      limits: { max_channels: Number($("#key-channels").value), cps: Number($("#key-cps").value),
        monthly_spend_cap: Number($("#key-cap").value), max_call_seconds: 4 * 3600 } });
    $("#key-name").value = "";
    showSecret(created);
    showKeys();
  } catch (e) { toast(e.message); }
});

// --- trunks ---

async function showTrunks() {
  const [{ trunks }, { gateways }] = await Promise.all([api("GET", "/v1/trunks"), api("GET", "/v1/gateways")]);
  const health = new Map((gateways || []).map((g) => [g.uri, g]));
  fill($("#trunks-in tbody"), trunks.filter((t) => t.direction !== "outbound").map((t) => row([el("code", t.id), t.key_id,
    (t.numbers || []).join(", "), t.ai_url, (t.allowed_sources || []).join(", "), t.media_encryption,
    t.tls_client_ca ? (t.tls_client_subject || "required") : ""])));
  fill($("#trunks-out tbody"), trunks.filter((t) => t.direction === "outbound").map((t) => row([el("code", t.id), t.key_id,
    (t.gateways || []).map((g) => { const h = health.get(g.uri); return `${g.uri} (${h && !h.up ? "down" : "up"})`; }).join(", "),
    t.caller_id, t.max_channels || "", t.media_encryption])));
}

// --- usage: charts (uPlot) and the CSV ---

function thisMonth() { return new Date().toISOString().slice(0, 7); }

async function showUsage() {
  if (!$("#usage-month").value) $("#usage-month").value = thisMonth();
  const month = $("#usage-month").value;
  const keyParam = state.who.admin ? "" : `&key_id=${encodeURIComponent(state.who.key_id)}`;
  $("#usage-csv").href = `/v1/usage?month=${month}&by=day,key&format=csv${keyParam}`;
  const [byDay, byKey, cdrs] = await Promise.all([
    api("GET", `/v1/usage?month=${month}&by=day${keyParam}`),
    api("GET", `/v1/usage?month=${month}&by=key${keyParam}`),
    api("GET", `/v1/cdrs?limit=20${keyParam}`)]);
  $("#usage-range").textContent = `${month} (UTC)`;
  // Every day of the month, days without calls at zero.
  const byPeriod = new Map(byDay.rows.map((r) => [r.period, r]));
  const [y, m] = month.split("-").map(Number);
  const n = new Date(Date.UTC(y, m, 0)).getUTCDate();
  const days = [], perDay = [];
  for (let d = 1; d <= n; d++) {
    const period = `${month}-${String(d).padStart(2, "0")}`;
    days.push(Date.UTC(y, m - 1, d) / 1000);
    perDay.push(byPeriod.get(period) || { calls: 0, billed_seconds: 0, cost_micros: 0 });
  }
  chart("calls", days, perDay.map((r) => r.calls), "calls");
  chart("minutes", days, perDay.map((r) => r.billed_seconds / 60), "minutes");
  chart("cost", days, perDay.map((r) => r.cost_micros / 1e6), "cost");
  fill($("#usage-keys tbody"), byKey.rows.map((r) => row([el("code", r.key_id), r.calls, r.answered, (r.billed_seconds / 60).toFixed(1), money(r.cost_micros)])));
  fill($("#usage-cdrs tbody"), (cdrs.cdrs || []).map((c) => row([el("code", c.call_id), c.key_id, c.from, c.to,
    c.setup_at.replace("T", " ").slice(0, 19), c.final_code, c.billed_seconds, money(c.cost_micros),
    c.hangup_side, c.transport ? `${c.transport}/${c.media_encryption || "–"}` : ""])));
}

function chart(name, xs, ys, label) {
  const target = $(`#chart-${name}`);
  const data = [xs, ys];
  const width = Math.max(320, target.clientWidth || 380);
  if (state.charts[name]) state.charts[name].destroy();
  target.replaceChildren();
  state.charts[name] = new uPlot({ width, height: 200, scales: { x: { time: true } },
    series: [{}, { label, stroke: "#2454d6", fill: "rgba(36,84,214,.35)", paths: uPlot.paths.bars({ size: [0.7, 40] }), points: { show: false } }],
    axes: [{}, { size: 60 }] }, data, target);
}

$("#usage-form").addEventListener("submit", (ev) => { ev.preventDefault(); showUsage().catch((e) => toast(e.message)); });

// --- audit ---

async function showAudit() {
  const q = new URLSearchParams({ limit: "200" });
  if ($("#audit-target").value) q.set("target", $("#audit-target").value);
  if ($("#audit-action").value) q.set("action", $("#audit-action").value);
  const { audit } = await api("GET", `/v1/audit?${q}`);
  fill($("#audit-table tbody"), (audit || []).map((a) => row([a.at.replace("T", " ").slice(0, 19), a.actor, a.action, a.target, a.outcome, a.detail, a.source])));
}

$("#audit-form").addEventListener("submit", (ev) => { ev.preventDefault(); showAudit().catch((e) => toast(e.message)); });

// --- health: read from /metrics every 2 s ---

function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = line.match(/^([a-zA-Z_:][\w:]*)(\{([^}]*)\})?\s+(\S+)/);
    if (!m) continue;
    const labels = {};
    for (const kv of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[kv[1]] = kv[2];
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

const sum = (ms, name, pred) => ms.filter((m) => m.name === name && (!pred || pred(m.labels))).reduce((a, m) => a + m.value, 0);

async function refreshHealth() {
  const res = await fetch("/metrics", { credentials: "same-origin" });
  const ms = parseMetrics(await res.text());
  const now = Date.now();
  const admitted = sum(ms, "trunkgate_admissions_total");
  $("#health-channels").textContent = sum(ms, "trunkgate_channels_in_use");
  $("#health-answered").textContent = sum(ms, "trunkgate_calls_answered_total");
  const { calls } = await api("GET", "/v1/calls");
  $("#health-calls").textContent = calls.length;
  if (state.metricsPrev) {
    const dt = (now - state.metricsPrev.at) / 1000;
    $("#health-rate").textContent = ((admitted - state.metricsPrev.admitted) / dt).toFixed(2);
  }
  state.metricsPrev = { at: now, admitted };
  const reasons = new Map();
  for (const m of ms.filter((x) => x.name === "trunkgate_refusals_total")) reasons.set(m.labels.reason, (reasons.get(m.labels.reason) || 0) + m.value);
  fill($("#health-refusals tbody"), [...reasons.entries()].sort((a, b) => b[1] - a[1]).map(([r, n]) => row([r, n])));
}

async function showHealth() {
  state.metricsPrev = null;
  await refreshHealth();
  state.timer = setInterval(() => refreshHealth().catch((e) => toast(e.message)), 2000);
}

// --- start: an existing session, or the login form ---

(async () => {
  const res = await fetch("/console/session", { credentials: "same-origin" });
  if (res.ok) loggedIn(await res.json()); else showLogin();
})();
