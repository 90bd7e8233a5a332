// Drives the dashboard and the egress-check demo app in headless Chromium.
// Run by crates/palisade-cli/tests/dashboard_browser.rs, which starts the
// real servers and passes their URLs and the expected values in the
// environment. Prints one JSON line of observations on success; exits 1
// with a reason on the first failed check.
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
const egressCheck = need("EGRESS_CHECK_URL").replace(/\/$/, "");
const tenant = need("TENANT");
const expect = {
  tenants: Number(need("EXPECT_TENANTS")),
  deployments: Number(need("EXPECT_DEPLOYMENTS")),
  cells: Number(need("EXPECT_CELLS")),
  disagreements: Number(need("EXPECT_DISAGREEMENTS")),
  capacity: need("EXPECT_CAPACITY"),
};
const shots = need("SCREENSHOT_DIR");
mkdirSync(shots, { recursive: true });

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
}

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
  // While logging in, Chromium reports the expected 401s as console errors.
  let expect401 = false;
  page.on("console", m => {
    if (m.type() !== "error") return;
    if (expect401 && m.text().includes("401")) return;
    problems.push(`console error: ${m.text()}`);
  });
  // Nothing may be fetched from anywhere but the two local servers.
  page.on("request", r => {
    const u = new URL(r.url());
    const local = [dashboard, egressCheck, process.env.WRITABLE_DASHBOARD_URL].filter(Boolean);
    if (!local.some(l => r.url().startsWith(l)) && u.protocol !== "data:") problems.push(`external request: ${r.url()}`);
  });
  const ready = async () => {
    await page.waitForSelector("body[data-ready]");
    const state = await page.getAttribute("body", "data-ready");
    if (state !== "true") throw new Error(`page ${page.url()} failed: ${await page.textContent("main")}`);
  };

  // Overview.
  await page.goto(dashboard + "/");
  await ready();
  const rows = await page.locator("#tenants tbody tr").count();
  check(rows === expect.tenants, `overview lists ${expect.tenants} tenants, saw ${rows}`);
  const capacity = (await page.textContent("#capacity")).trim();
  check(capacity === expect.capacity, `capacity ${expect.capacity}, saw ${capacity}`);
  check(await page.locator("#pool-chart rect").count() >= 1, "pool chart drawn");
  check(await page.locator("#history-chart path.line").count() === 1, "allocations-over-time chart drawn");
  await page.screenshot({ path: join(shots, "overview.png"), fullPage: true });
  out.overview_tenants = rows;

  // Tenant page, reached by clicking its link.
  await Promise.all([page.waitForURL(`**/tenants/${tenant}`), page.click(`#tenants a:text-is("${tenant}")`)]);
  await ready();
  check((await page.textContent("#tenant-name")).trim() === tenant, "tenant page heading");
  const deps = await page.locator("#deployments tbody tr").count();
  check(deps === expect.deployments, `tenant has ${expect.deployments} deployments, saw ${deps}`);
  await page.screenshot({ path: join(shots, "tenant.png"), fullPage: true });
  out.tenant_deployments = deps;

  // Its isolation matrix.
  await Promise.all([page.waitForURL(`**/matrix?tenant=${tenant}`), page.click("#matrix-link")]);
  await ready();
  const cells = await page.locator("svg#matrix rect.cell").count();
  check(cells === expect.cells, `matrix has ${expect.cells} cells, saw ${cells}`);
  const disagreements = await page.locator("svg#matrix rect.cell.disagree").count();
  check(disagreements === expect.disagreements, `matrix highlights ${expect.disagreements} disagreements, saw ${disagreements}`);
  await page.screenshot({ path: join(shots, "matrix.png"), fullPage: true });
  out.matrix_cells = cells;
  out.matrix_disagreements = disagreements;
  out.matrix_states = await page.locator("svg#matrix rect.cell").evaluateAll(els => els.map(e => e.getAttribute("data-state")));
  out.matrix_agreements = await page.locator("svg#matrix rect.cell").evaluateAll(els => els.map(e => e.getAttribute("data-agreement")));
  out.matrix_disagreement_list = await page.locator("#disagreements li").evaluateAll(els => els.map(e => ({ differs: e.getAttribute("data-differs"), text: e.textContent })));

  // The demo app: click "Test External IP".
  await page.goto(egressCheck + "/");
  await ready();
  await page.click('button:text-is("Test External IP")');
  await page.waitForSelector("#result-external-ip");
  const result = page.locator("#result-external-ip");
  if ((await result.getAttribute("data-ok")) !== "true") throw new Error(`egress check failed: ${await result.textContent()}`);
  out.address = (await page.textContent("#address-external-ip")).trim();
  out.proxy_shown = (await page.textContent("#result-external-ip .proxy")).trim();
  out.elapsed_ms = Number(await page.textContent("#result-external-ip .elapsed"));
  await page.screenshot({ path: join(shots, "egress-check.png"), fullPage: true });

  // The dashboard's egress page now counts that request.
  await page.goto(dashboard + "/egress");
  await ready();
  const row = page.locator(`#egress tr[data-tenant="${tenant}"] td`);
  out.egress_requests = Number(await row.nth(1).textContent());
  out.egress_allowed = Number(await row.nth(2).textContent());
  await page.screenshot({ path: join(shots, "egress.png"), fullPage: true });

  // With --allow-writes and --token-file: log in, create a deployment from
  // the tenant page, delete it, see only the token's tenants, log out.
  const writable = process.env.WRITABLE_DASHBOARD_URL;
  if (writable) {
    const base = writable.replace(/\/$/, "");
    page.on("dialog", d => d.accept());
    expect401 = true;
    await Promise.all([page.waitForURL("**/login?next=*"), page.goto(base + `/tenants/${tenant}`)]);
    await ready();
    await page.fill("#token", "not-the-token-0123456789");
    await page.click('#login-form button[type="submit"]');
    await page.waitForSelector('#login-status [data-code="invalid_token"]');
    out.wrong_token_refused = true;
    await page.fill("#token", need("LOGIN_TOKEN"));
    await Promise.all([page.waitForURL(`**/tenants/${tenant}`), page.click('#login-form button[type="submit"]')]);
    expect401 = false;
    await ready();
    out.login_user = (await page.textContent("#user-name")).trim();
    check((await page.textContent("#mode")).trim() === "writes enabled", "writable dashboard says so");
    await page.fill('#create-form input[name="name"]', "cache");
    await page.fill('#create-form input[name="image"]', "redis:7");
    await page.fill('#create-form input[name="replicas"]', "2");
    await page.click('#create-form button[type="submit"]');
    await page.waitForSelector('#deployments tr[data-deployment="cache"]');
    out.created_subnet = (await page.textContent('#deployments tr[data-deployment="cache"] td:nth-child(2)')).trim();
    await page.screenshot({ path: join(shots, "tenant-writes.png"), fullPage: true });
    await page.click('#deployments tr[data-deployment="cache"] button');
    await page.waitForSelector('#deployments tr[data-deployment="cache"]', { state: "detached" });
    out.deployments_after_delete = await page.locator("#deployments tbody tr").count();

    // The token is for one tenant: the overview lists only that one.
    await page.goto(base + "/");
    await ready();
    out.scoped_tenants = await page.locator("#tenants tbody tr").evaluateAll(rs => rs.map(r => r.getAttribute("data-tenant")));
    await page.screenshot({ path: join(shots, "scoped-overview.png"), fullPage: true });

    // Logging out forgets the token: the next page asks for it again.
    expect401 = true;
    await Promise.all([page.waitForURL("**/login"), page.click("#logout")]);
    await page.goto(base + "/");
    await page.waitForURL("**/login?next=*");
    out.logged_out = true;
  }

  check(problems.length === 0, problems.join("; "));
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(e.message);
  for (const page of context.pages()) await page.screenshot({ path: join(shots, "failure.png"), fullPage: true }).catch(() => {});
  console.error(JSON.stringify(out));
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
