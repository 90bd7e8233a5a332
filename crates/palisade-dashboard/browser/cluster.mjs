// Drives `palisade --store kubernetes dashboard` in headless Chromium. Run
// by crates/palisade-cli/tests/dashboard_kube.rs, which starts the
// dashboard over an in-memory API server holding one tenant with one
// allocated and one pending deployment. Prints one JSON line of what the
// pages showed; exits 1 with a reason on the first failed check.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

function need(name) {
  const v = process.env[name];
  if (!v) { console.error(`missing environment variable ${name}`); process.exit(2); }
  return v;
}

const dashboard = need("DASHBOARD_URL").replace(/\/$/, "");
const tenant = need("TENANT");
const shots = need("SCREENSHOT_DIR");
mkdirSync(shots, { recursive: true });

const profile = mkdtempSync(join(tmpdir(), "palisade-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  viewport: { width: 1280, height: 900 },
});
const out = {};
const problems = [];
try {
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(15000);
  page.on("pageerror", e => problems.push(`page error: ${e.message}`));
  page.on("console", m => { if (m.type() === "error") problems.push(`console error: ${m.text()}`); });
  page.on("request", r => { if (!r.url().startsWith(dashboard)) problems.push(`external request: ${r.url()}`); });
  const ready = async () => {
    await page.waitForSelector("body[data-ready]");
    const state = await page.getAttribute("body", "data-ready");
    if (state !== "true") throw new Error(`page ${page.url()} failed: ${await page.textContent("main")}`);
  };

  await page.goto(dashboard + "/");
  await ready();
  out.tenants = await page.locator("#tenants tbody tr").evaluateAll(rs => rs.map(r => r.getAttribute("data-tenant")));
  out.capacity = (await page.textContent("#capacity")).trim();
  out.history = (await page.textContent("#history-chart")).trim();
  out.history_unavailable = await page.getAttribute("#history-chart", "data-unavailable");
  await page.screenshot({ path: join(shots, "cluster-overview.png"), fullPage: true });

  await Promise.all([page.waitForURL(`**/tenants/${tenant}`), page.click(`#tenants a:text-is("${tenant}")`)]);
  await ready();
  out.headings = await page.locator("#deployments thead th").evaluateAll(hs => hs.map(h => h.textContent));
  out.subnets = await page.locator("#deployments tbody tr").evaluateAll(rs => rs.map(r => ({
    deployment: r.getAttribute("data-deployment"),
    subnet: r.children[1].textContent,
    pending: r.children[1].getAttribute("data-pending"),
    ready: r.children[8]?.getAttribute("data-ready") ?? null,
  })));
  await page.screenshot({ path: join(shots, "cluster-tenant.png"), fullPage: true });

  if (problems.length) throw new Error(problems.join("; "));
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e.message);
  for (const page of context.pages()) await page.screenshot({ path: join(shots, "cluster-failure.png"), fullPage: true }).catch(() => {});
  console.error(JSON.stringify(out));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
