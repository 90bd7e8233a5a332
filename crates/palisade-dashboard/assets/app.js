// Palisade dashboard: renders the JSON API (/api/*) into the page.
// Plain DOM, no framework, nothing loaded from elsewhere.
"use strict";

const SVG = "http://www.w3.org/2000/svg";

// h("td", {class: "num"}, "3") builds an element; strings become text nodes.
function h(tag, attrs, ...kids) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// The bearer token from the login page lives in sessionStorage: it is sent
// only by this script (never automatically, unlike a cookie, so other sites
// cannot ride on it) and is forgotten when the tab closes.
const TOKEN_KEY = "palisade-dashboard-token";
function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function api(path, options, bearer) {
  const opts = Object.assign({}, options);
  const t = bearer === undefined ? token() : bearer;
  if (t) opts.headers = Object.assign({}, opts.headers, { authorization: "Bearer " + t });
  const resp = await fetch(path, opts);
  let body;
  try { body = await resp.json(); } catch (e) { throw new ApiError(resp.status, "bad_json", `${path}: HTTP ${resp.status}, not JSON`); }
  if (!resp.ok) {
    const err = body && body.error ? body.error : { code: "http", message: `HTTP ${resp.status}` };
    if (resp.status === 401 && bearer === undefined) {
      // Not (or no longer) logged in: to the login page, then back here.
      sessionStorage.removeItem(TOKEN_KEY);
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    }
    throw new ApiError(resp.status, err.code, err.message);
  }
  return body;
}

// ---------- login ----------

function loginPage(params) {
  document.title = "Palisade: log in";
  const status = h("div", { class: "result", id: "login-status" });
  const form = h("form", { id: "login-form", class: "inline" },
    h("label", {}, "Token", h("input", { name: "token", id: "token", type: "password", autocomplete: "current-password", required: true, size: 48 })),
    h("button", { type: "submit" }, "Log in"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const t = new FormData(form).get("token").trim();
    try {
      await api("/api/config", {}, t);
      sessionStorage.setItem(TOKEN_KEY, t);
      const next = params.get("next") || "/";
      location.href = next.startsWith("/") && !next.startsWith("//") ? next : "/";
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  show(h("h1", {}, "Log in"),
    h("p", {}, "This dashboard requires a bearer token: one from its token file, or a Kubernetes token (e.g. ",
      h("code", {}, "kubectl create token NAME"), ") when it authenticates with the cluster."),
    form, status);
  document.body.dataset.ready = "true";
}

function logout() { sessionStorage.removeItem(TOKEN_KEY); location.href = "/login"; }

const app = document.getElementById("app");
function show(...nodes) { app.replaceChildren(...nodes.flat(Infinity).filter(n => n !== null && n !== undefined && n !== false)); }
function errorBox(e) { return h("div", { class: "error", role: "alert", "data-code": e.code || "" }, e.message || String(e)); }

function fmtTime(unix) { return new Date(unix * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z"); }
function fmtBytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0; let x = n;
  while (x >= 1024 && i < u.length - 1) { x /= 1024; i++; }
  return (i === 0 ? x : x.toFixed(1)) + " " + u[i];
}
function pct(share) { return share > 0 && share < 0.0001 ? (share * 100).toExponential(3) + "%" : (share * 100).toFixed(2) + "%"; }
function egressText(mode, ip) { return ip ? `${mode} via ${ip}` : mode; }
function tenantLink(name) { return h("a", { href: "/tenants/" + encodeURIComponent(name) }, name); }

// ---------- overview ----------

function card(n, label, id) { return h("div", { class: "card", id }, h("div", { class: "n" }, n), h("div", { class: "l" }, label)); }

// Stacked bar of exact counts (decimal strings; BigInt keeps them exact).
function poolChart(s) {
  const cap = BigInt(s.capacity);
  const segs = [
    ["allocated", "Allocated", s.allocated, "seg-allocated", "var(--accent)"],
    ["recycled", "Recycled (available)", s.recycled_available, "seg-recycled", "var(--recycled)"],
    ["quarantined", "Quarantined", s.quarantined, "seg-quarantined", "var(--quarantined)"],
    ["never", "Never used", s.never_used, "seg-never", "var(--never)"],
  ];
  const W = 800, H = 28;
  const svg = h("svg:svg", { id: "pool-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, role: "img", "aria-label": "subnet pool utilisation" });
  // Width in 1/1e6 units; any non-zero segment gets at least 3px so it stays visible.
  const widths = segs.map(([, , v]) => {
    const n = BigInt(v);
    if (n === 0n || cap === 0n) return 0;
    return Math.max(3, Number((n * 1000000n) / cap) * W / 1000000);
  });
  const total = widths.reduce((a, b) => a + b, 0);
  let x = 0;
  segs.forEach(([key, label, v, cls], i) => {
    const w = total > 0 ? widths[i] * W / total : 0;
    if (w > 0) svg.append(h("svg:rect", { x, y: 0, width: w, height: H, class: cls, "data-segment": key }, h("svg:title", {}, `${label}: ${v}`)));
    x += w;
  });
  const legend = h("div", { class: "legend" }, segs.map(([key, label, v, , color]) =>
    h("span", { style: `--c:${color}`, "data-count": key }, `${label}: ${v}`)));
  return [svg, legend];
}

function historyChart(history) {
  // The cluster keeps no history: say so rather than draw nothing.
  if (history.unavailable) return h("p", { class: "muted", id: "history-chart", "data-unavailable": "true" }, history.unavailable[0].toUpperCase() + history.unavailable.slice(1) + ".");
  const points = history.points;
  if (points.length < 2) return h("p", { class: "muted", id: "history-chart" }, "Not enough allocation history yet.");
  const W = 800, H = 160, P = 30;
  const t0 = points[0].at, t1 = points[points.length - 1].at;
  const vals = points.map(p => Number(p.allocated));
  const max = Math.max(1, ...vals);
  const X = t => P + (t1 === t0 ? (W - 2 * P) : (t - t0) * (W - 2 * P) / (t1 - t0));
  const Y = v => H - P - v * (H - 2 * P) / max;
  // Step line: the count holds until the next event.
  let d = `M${X(points[0].at)},${Y(vals[0])}`;
  for (let i = 1; i < points.length; i++) d += ` H${X(points[i].at)} V${Y(vals[i])}`;
  return h("svg:svg", { id: "history-chart", viewBox: `0 0 ${W} ${H}`, width: "100%", height: H, role: "img", "aria-label": "allocated subnets over time" },
    h("svg:line", { class: "axis", x1: P, y1: H - P, x2: W - P, y2: H - P }),
    h("svg:line", { class: "axis", x1: P, y1: P, x2: P, y2: H - P }),
    h("svg:path", { class: "line", d }),
    h("svg:text", { x: 2, y: P + 4 }, String(max)),
    h("svg:text", { x: 2, y: H - P + 4 }, "0"),
    h("svg:text", { x: P, y: H - 8 }, fmtTime(t0)),
    h("svg:text", { x: W - P, y: H - 8, "text-anchor": "end" }, fmtTime(t1)));
}

async function overview(config) {
  document.title = "Palisade: overview";
  if (!config.all_tenants) return tenantsOnly(await api("/api/tenants"));
  const [stats, tenants, history] = await Promise.all([api("/api/stats"), api("/api/tenants"), api("/api/history?limit=2000")]);
  const rows = tenants.tenants.map(t => h("tr", { "data-tenant": t.name },
    h("td", {}, tenantLink(t.name)), h("td", { class: "mono" }, t.namespace),
    h("td", { class: "num" }, t.deployments), h("td", { class: "num" }, t.replicas),
    h("td", {}, `${t.quota.cpu} CPU, ${t.quota.memory}, ${t.quota.pods} pods`),
    h("td", {}, t.node_pool || "—"), h("td", {}, egressText(t.egress_mode, t.egress_ip))));
  show(
    h("h1", {}, "Overview"),
    h("div", { class: "cards" },
      card(stats.tenants, "tenants", "count-tenants"), card(stats.deployments, "deployments", "count-deployments"),
      card(stats.gateways, "gateways", "count-gateways"), card(stats.allow_rules, "allow rules", "count-rules")),
    h("h2", {}, "Subnet pool"),
    h("p", {}, h("code", {}, stats.pool), ` split into /${stats.prefix_len} subnets: capacity `, h("strong", { id: "capacity" }, stats.capacity),
      `, ${pct(stats.utilisation)} allocated`, stats.reuse_after_secs ? `, released subnets quarantined ${stats.reuse_after_secs}s` : ""),
    poolChart(stats),
    h("h2", {}, "Allocations over time"),
    historyChart(history),
    h("h2", {}, "Tenants"),
    tenants.tenants.length === 0 ? h("p", { class: "muted" }, "No tenants yet: palisade create TENANT NAME IMAGE") :
      h("table", { id: "tenants" }, h("thead", {}, h("tr", {}, ["Tenant", "Namespace", "Deployments", "Replicas", "Quota", "Node pool", "Egress"].map(c => h("th", {}, c)))), h("tbody", {}, rows)));
}

// A caller authorised for some tenants only: no platform-wide counts.
function tenantsOnly(tenants) {
  const rows = tenants.tenants.map(t => h("tr", { "data-tenant": t.name },
    h("td", {}, tenantLink(t.name)), h("td", { class: "mono" }, t.namespace),
    h("td", { class: "num" }, t.deployments), h("td", { class: "num" }, t.replicas)));
  show(h("h1", {}, "Your tenants"),
    tenants.tenants.length === 0 ? h("p", { class: "muted" }, "You are not authorised for any tenant.") :
      h("table", { id: "tenants" }, h("thead", {}, h("tr", {}, ["Tenant", "Namespace", "Deployments", "Replicas"].map(c => h("th", {}, c)))), h("tbody", {}, rows)));
}

// ---------- tenant ----------

async function tenantPage(name, config) {
  document.title = `Palisade: ${name}`;
  const t = await api("/api/tenants/" + encodeURIComponent(name));
  // The operator's readiness, which only the cluster reports.
  const rollout = t.deployment_list.some(d => d.ready);
  const deps = t.deployment_list.map(d => h("tr", { "data-deployment": d.name },
    h("td", {}, d.name), h("td", { class: "mono", "data-pending": d.subnet === null ? "true" : null }, d.subnet ?? "pending (the operator allocates it)"), h("td", { class: "mono" }, d.image),
    h("td", { class: "num" }, d.replicas), h("td", {}, d.ports.join(", ")), h("td", {}, d.node_pool || "—"),
    h("td", {}, d.egress_mode), h("td", { class: "mono" }, d.egress_ip || "platform default"),
    rollout ? h("td", { "data-ready": d.ready }, d.ready) : null,
    config.allow_writes ? h("td", {}, h("button", { class: "secondary", onclick: () => removeDeployment(name, d.name) }, "Delete")) : null));
  const heads = ["Deployment", "Subnet", "Image", "Replicas", "Ports", "Node pool", "Egress mode", "Egress IP"];
  if (rollout) heads.push("Ready");
  if (config.allow_writes) heads.push("");
  show(
    h("h1", {}, "Tenant ", h("span", { id: "tenant-name" }, t.name)),
    h("dl", { class: "facts" },
      h("dt", {}, "Namespace"), h("dd", { class: "mono" }, t.namespace),
      h("dt", {}, "Quota"), h("dd", {}, `${t.quota.cpu} CPU, ${t.quota.memory} memory, ${t.quota.pods} pods`),
      h("dt", {}, "Node pool"), h("dd", {}, t.node_pool || "shared nodes"),
      h("dt", {}, "Egress"), h("dd", {}, egressText(t.egress_mode, t.egress_ip)),
      h("dt", {}, "Labels"), h("dd", {}, t.labels.length ? t.labels.join(", ") : "—"),
      h("dt", {}, "Gateways"), h("dd", {}, t.gateways.length ? t.gateways.join(", ") : "—")),
    h("p", {}, h("a", { id: "matrix-link", href: "/matrix?tenant=" + encodeURIComponent(t.name) }, "Isolation matrix of this tenant →")),
    h("h2", {}, `Deployments (${t.deployments})`),
    t.deployment_list.length ? h("table", { id: "deployments" }, h("thead", {}, h("tr", {}, heads.map(c => h("th", {}, c)))), h("tbody", {}, deps))
      : h("p", { class: "muted" }, "No deployments."),
    config.allow_writes ? createForm(name) : null,
    h("h2", {}, "Allow rules"),
    t.allow_rules.length ? h("ul", { id: "rules" }, t.allow_rules.map(r => h("li", {}, `${r.from} → ${r.to} on ${r.port === null ? "all ports" : "port " + r.port}`)))
      : h("p", { class: "muted" }, "None: deployments reach only themselves (default deny)."));
}

function createForm(tenant) {
  const status = h("div", { class: "result" });
  const form = h("form", { class: "inline", id: "create-form" },
    h("label", {}, "Name", h("input", { name: "name", required: true })),
    h("label", {}, "Image", h("input", { name: "image", required: true, placeholder: "nginx:alpine" })),
    h("label", {}, "Replicas", h("input", { name: "replicas", type: "number", min: 1, value: 1 })),
    h("button", { type: "submit" }, "Create deployment"));
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await api(`/api/tenants/${encodeURIComponent(tenant)}/deployments`, { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ name: f.get("name"), image: f.get("image"), replicas: Number(f.get("replicas") || 1) }) });
      route();
    } catch (e) { status.replaceChildren(errorBox(e)); }
  });
  return [h("h2", {}, "New deployment"), form, status];
}

async function removeDeployment(tenant, name) {
  if (!confirm(`Delete ${tenant}/${name}? Its subnet is released for recycling.`)) return;
  try { await api(`/api/tenants/${encodeURIComponent(tenant)}/deployments/${encodeURIComponent(name)}`, { method: "DELETE" }); route(); }
  catch (e) { alert(e.message); }
}

// ---------- matrix ----------

// One port's three verdicts: the model's, the rendered objects' (naming the
// deciding object and rule) and the dataplane's, and which legs differ.
function portVerdicts(p) {
  let s = `${p.port}: model ${p.allowed ? "allows" : "denies"} (${p.reason})`;
  if (p.objects !== null) s += `; objects ${p.objects ? "allow" : "deny"}${p.objects_rule ? ` (${p.objects_rule})` : ""}`;
  if (p.observed !== null) s += `; dataplane ${p.observed ? "open" : "closed"}`;
  if (p.differs.length) s += ` — DISAGREE (${p.differs.join(" and ")})`;
  return s;
}

function matrixSvg(m) {
  const n = m.endpoints.length, C = 34, L = 8 * Math.max(...m.endpoints.map(e => e.length), 4) + 10;
  // Column labels lean right by up to L/2 past the last column.
  const W = L + n * C + L / 2 + 10, H = L + n * C + 10;
  const svg = h("svg:svg", { id: "matrix", viewBox: `0 0 ${W} ${H}`, width: Math.min(W, 1100), role: "img", "aria-label": "isolation matrix" });
  m.endpoints.forEach((e, i) => {
    svg.append(h("svg:text", { x: L - 6, y: L + i * C + C / 2 + 4, "text-anchor": "end" }, e));
    svg.append(h("svg:text", { transform: `translate(${L + i * C + C / 2 + 4},${L - 6}) rotate(-60)` }, e));
  });
  m.cells.forEach((c, k) => {
    const i = Math.floor(k / n), j = k % n;
    const ports = c.ports.map(portVerdicts).join("\n");
    const disagree = c.agreement === "disagree";
    svg.append(h("svg:rect", { class: `cell ${c.state}${disagree ? " disagree" : ""}`, x: L + j * C + 1, y: L + i * C + 1, width: C - 2, height: C - 2, rx: 3,
      "data-from": c.from, "data-to": c.to, "data-state": c.state, "data-agreement": c.agreement, "data-differs": c.differs.join(" ") },
      h("svg:title", {}, `${c.from} → ${c.to}\n${ports}`)));
    if (c.agreement !== "unprobed") svg.append(h("svg:text", { x: L + j * C + C / 2, y: L + i * C + C / 2 + 5, "text-anchor": "middle", style: "fill:#fff;font-weight:700" }, disagree ? "!" : "✓"));
  });
  return svg;
}

async function matrixPage(params) {
  document.title = "Palisade: isolation matrix";
  const tenant = params.get("tenant") || "";
  const tenants = await api("/api/tenants");
  let m, tooLarge = null;
  try {
    m = await api("/api/matrix" + (tenant ? "?tenant=" + encodeURIComponent(tenant) : ""));
  } catch (e) {
    if (e.code !== "matrix_too_large" && e.code !== "forbidden") throw e;
    // Too many deployments for one picture: pick a tenant instead.
    m = null;
    tooLarge = e;
  }
  const picker = h("select", { id: "tenant-picker", onchange: ev => { location.href = "/matrix" + (ev.target.value ? "?tenant=" + encodeURIComponent(ev.target.value) : ""); } },
    h("option", { value: "" }, "all tenants"), tenants.tenants.map(t => h("option", { value: t.name, selected: t.name === tenant ? "selected" : null }, t.name)));
  if (m === null) {
    show(h("h1", {}, "Isolation matrix"), h("p", {}, "Tenant: ", picker), h("div", { class: "notice", id: "lab-status" }, tooLarge.message));
    return;
  }
  let lab;
  if (m.lab.status === "present") {
    const bad = m.cells.filter(c => c.agreement === "disagree");
    const sum = m.summary;
    lab = [h("div", { class: bad.length ? "error" : "ok", id: "lab-status" },
      `Lab verify of ${m.lab.generated_at}: ${m.lab.probes_in_view} of ${m.lab.probes} probes in this view; `,
      bad.length ? `${bad.length} cell(s) where the rendered objects (${sum.objects_differ}) or the dataplane (${sum.dataplane_differs}) disagree with the policy model.`
        : "the rendered objects and the dataplane agree with the policy model."),
    bad.length ? h("ul", { id: "disagreements" }, bad.flatMap(c => c.ports.filter(p => p.differs.length).map(p =>
      h("li", { "data-differs": p.differs.join(" ") }, `${c.from} → ${c.to} port ${portVerdicts(p)}`)))) : null];
  } else if (m.lab.status === "unreadable") {
    lab = h("div", { class: "error", id: "lab-status" }, m.lab.error);
  } else {
    lab = h("p", { class: "muted", id: "lab-status" }, "No lab report: run `palisade lab verify` to compare the dataplane with this model.");
  }
  show(
    h("h1", {}, "Isolation matrix"),
    h("p", {}, "Tenant: ", picker, " — rows are clients, columns servers; each cell is the policy model's verdict on every port the server serves, checked against the rendered objects and the dataplane by the last lab verify."),
    h("div", { class: "legend" },
      h("span", { style: "--c:var(--allowed)" }, `allowed (${m.summary.allowed})`),
      h("span", { style: "--c:var(--partial)" }, `some ports (${m.summary.partial})`),
      h("span", { style: "--c:var(--denied)" }, `denied (${m.summary.denied})`),
      h("span", { style: "--c:#000" }, "dashed outline / !: the rendered objects or the dataplane disagree with the model; ✓: all three agree")),
    m.endpoints.length ? matrixSvg(m) : h("p", { class: "muted" }, "No deployments."),
    lab);
}

// ---------- egress ----------

async function egressPage() {
  document.title = "Palisade: egress";
  const e = await api("/api/egress");
  if (!e.configured) { show(h("h1", {}, "Egress"), h("div", { class: "notice", id: "egress-status" }, e.message)); return; }
  const rows = e.tenants.map(t => h("tr", { "data-tenant": t.tenant },
    h("td", {}, t.tenant === "-" ? "unidentified callers" : tenantLink(t.tenant)), h("td", { class: "num" }, t.requests), h("td", { class: "num" }, t.allowed), h("td", { class: "num" }, t.denied),
    h("td", { class: "num" }, t.errors), h("td", { class: "num" }, fmtBytes(t.bytes_up)), h("td", { class: "num" }, fmtBytes(t.bytes_down)),
    h("td", {}, t.denials.length ? t.denials.map(d => `${d.reason || "policy"}: ${d.count}`).join(", ") : "—"),
    h("td", {}, t.upstream_errors.length ? t.upstream_errors.map(d => `${d.reason}: ${d.count}`).join(", ") : "—")));
  show(h("h1", {}, "Egress"),
    h("p", { id: "egress-status" }, "From the proxy's metrics at ", h("code", {}, e.source), `: ${e.active_connections} open connections, ${e.active_tunnels} open tunnels.`),
    e.tenants.length ? h("table", { id: "egress" }, h("thead", {}, h("tr", {}, ["Tenant", "Requests", "Allowed", "Denied", "Errors", "Sent", "Received", "Denials by reason", "Upstream errors"].map(c => h("th", {}, c)))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No egress traffic yet."));
}

// ---------- routing ----------

async function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.getAttribute("href") === path || (a.dataset.nav === "overview" && path.startsWith("/tenants/")));
  if (path === "/login") return loginPage(params);
  try {
    const config = await api("/api/config");
    const mode = document.getElementById("mode");
    mode.textContent = config.allow_writes ? "writes enabled" : "read-only";
    mode.classList.toggle("writes", config.allow_writes);
    const user = document.getElementById("user");
    if (config.user) user.replaceChildren(h("span", { id: "user-name" }, config.user), " ", h("button", { class: "secondary", id: "logout", onclick: logout }, "Log out"));
    else if (config.auth !== "none") user.replaceChildren(h("a", { href: "/login" }, "Log in"));
    if (path === "/") await overview(config);
    else if (path.startsWith("/tenants/")) await tenantPage(decodeURIComponent(path.slice("/tenants/".length)), config);
    else if (path === "/matrix") await matrixPage(params);
    else if (path === "/egress") await egressPage();
    else show(errorBox({ message: "no such page" }));
    document.body.dataset.ready = "true";
  } catch (e) {
    show(errorBox(e));
    document.body.dataset.ready = "error";
  }
}

route();
