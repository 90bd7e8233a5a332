// Palisade egress check: pod information and server-side egress tests.
"use strict";

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v); else el.setAttribute(k, v);
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function facts(obj) {
  return h("dl", { class: "facts" }, Object.entries(obj).flatMap(([k, v]) => [h("dt", {}, k), h("dd", { class: "mono", "data-var": k }, v === null ? "(not set)" : v)]));
}

function resultBox(target, r) {
  const box = h("div", { class: r.ok ? "ok result" : "error result", id: "result-" + target.id, "data-ok": String(r.ok) },
    h("div", {}, h("strong", {}, target.label), ` — ${r.url}`),
    h("div", {}, r.proxy ? ["via proxy ", h("code", { class: "proxy" }, r.proxy)] : "direct (no proxy configured for this scheme)"),
    h("div", {}, `${r.status === null ? "no HTTP answer" : "HTTP " + r.status} in `, h("span", { class: "elapsed" }, r.elapsed_ms.toFixed(1)), " ms"));
  if (r.address) box.append(h("div", {}, "The internet sees: ", h("span", { class: "address", id: "address-" + target.id }, r.address)));
  if (r.error) box.append(h("div", { class: "explanation" }, h("strong", {}, r.error.kind + ": "), r.error.explanation), h("div", { class: "muted mono" }, r.error.message));
  if (r.body && !r.address) box.append(h("pre", {}, r.body));
  return box;
}

async function run(target, button) {
  button.disabled = true;
  const results = document.getElementById("results");
  const old = document.getElementById("result-" + target.id);
  try {
    const resp = await fetch("/api/check/" + encodeURIComponent(target.id), { method: "POST" });
    const r = await resp.json();
    const box = resp.ok ? resultBox(target, r) : h("div", { class: "error result", id: "result-" + target.id }, r.error ? r.error.message : "HTTP " + resp.status);
    if (old) old.replaceWith(box); else results.prepend(box);
  } catch (e) {
    const box = h("div", { class: "error result", id: "result-" + target.id }, "The page could not reach its own server: " + e.message);
    if (old) old.replaceWith(box); else results.prepend(box);
  } finally {
    button.disabled = false;
  }
}

async function main() {
  const info = await (await fetch("/api/info")).json();
  const buttons = document.getElementById("buttons");
  for (const t of info.targets) {
    const b = h("button", { id: "test-" + t.id, title: t.url }, "Test " + t.label);
    b.addEventListener("click", () => run(t, b));
    buttons.append(b);
  }
  document.getElementById("info").replaceChildren(
    facts({ hostname: info.hostname }),
    h("h3", {}, "Addresses"),
    h("ul", { id: "addresses" }, info.addresses.map(a => h("li", { class: "mono" }, `${a.interface}: ${a.address}`))),
    h("h3", {}, "Proxy settings"), facts(info.proxy),
    h("h3", {}, "Pod (downward API)"), facts(info.pod));
  document.body.dataset.ready = "true";
}

main().catch(e => { document.getElementById("info").replaceChildren(h("div", { class: "error" }, e.message)); });
