// Drives Ferry's dashboard in a real headless chromium (playwright-core), against a running node that
// tests/dashboard.rs started: sign in, a connector appears live, a tenant's secret is shown once, a chart is drawn
// after traffic, the gateway page shows a route and its upstream server live, then down once the test stopped it,
// a viewer cannot change anything (and the API refuses it too), an operator sees only its
// tenants, signing out, and (with OIDC_PROVIDER set) signing in through the test's OpenID Connect provider.
// Prints `ok: …` per check; exits 1 on the first failure.
//
// Environment: ADMIN_URL, PUBLIC_URL, FERRY_BIN, ACME_SECRET, ADMIN_PW, VIEWER_PW, OPERATOR_PW, CHROMIUM,
// UPSTREAM_URL (the server of the node's upstream `web`, behind route `shop` at /shop), and SCREENSHOTS (a
// directory: docs/dashboard-*.png are written there; unset: none). To have the upstream server stopped, the
// script prints `stop-upstream` and waits for `upstream-stopped` on its standard input. OIDC_PROVIDER (optional):
// the provider's name on the sign-in button; its account `vera` must map to a viewer.
import { chromium } from "playwright-core";
import { spawn } from "node:child_process";
import http from "node:http";
import path from "node:path";
import readline from "node:readline";

const env = (k) => {
  const v = process.env[k];
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const ADMIN = env("ADMIN_URL");
const PUBLIC = env("PUBLIC_URL");
const shots = process.env.SCREENSHOTS || "";
const T = 15000;

function ok(what) {
  console.log(`ok: ${what}`);
}
function check(cond, what) {
  if (!cond) throw new Error(`failed: ${what}`);
  ok(what);
}
async function shot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: path.join(shots, `dashboard-${name}.png`), fullPage: true });
}

async function signIn(browser, name, password) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
  const page = await context.newPage();
  page.setDefaultTimeout(T);
  await page.goto(ADMIN + "/");
  await page.locator("#sign-in-form").waitFor();
  await page.fill("#sign-in-form input[name=name]", name);
  await page.fill("#sign-in-form input[name=password]", password);
  await page.keyboard.press("Enter");
  await page.locator("#who").filter({ hasText: name }).waitFor();
  return page;
}

// Ask the test for something on standard output and wait (bounded) for its answer line on standard input.
async function askTheTest(request, answer, ms = 10000) {
  const rl = readline.createInterface({ input: process.stdin });
  let timer;
  const answered = new Promise((resolve) => rl.on("line", (l) => { if (l.trim() === answer) resolve(); }));
  console.log(request);
  try {
    await Promise.race([
      answered,
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`no ${answer} within ${ms} ms`)), ms); }),
    ]);
  } finally {
    clearTimeout(timer);
    rl.close();
  }
}

// What the page's own fetch answers (the session cookie, and the CSRF token when asked for).
async function fetchIn(page, method, url, body, withCsrf) {
  return page.evaluate(async ({ method, url, body, withCsrf }) => {
    const headers = { "Content-Type": "application/json" };
    if (withCsrf) {
      const me = await (await fetch("/api/v1/session")).json();
      headers["X-CSRF-Token"] = me.csrf_token;
    }
    const r = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    return r.status;
  }, { method, url, body, withCsrf });
}

async function main() {
  // The connector's target: answers every request with 200.
  const target = http.createServer((req, res) => { res.end("hello from the target\n"); });
  await new Promise((r) => target.listen(0, "127.0.0.1", r));
  const targetUrl = `http://127.0.0.1:${target.address().port}`;

  const browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox"] });
  let connector;
  try {
    // An admin signs in and sees the overview: no connector of acme yet.
    const page = await signIn(browser, "alice", env("ADMIN_PW"));
    const acmeOnline = page.locator('#tenants tr[data-tenant="acme"] td.online');
    await acmeOnline.filter({ hasText: "0" }).waitFor();
    ok("signed in; acme listed with no connector online");

    // A connector comes online: the overview shows it within a second or two, without a reload.
    const started = Date.now();
    connector = spawn(env("FERRY_BIN"), [
      "connector", "--server", PUBLIC, "--tenant", "acme", "--target", `app=${targetUrl}`,
    ], { env: { ...process.env, FERRY_SECRET: env("ACME_SECRET"), RUST_LOG: "warn" }, stdio: "ignore" });
    await acmeOnline.filter({ hasText: "1" }).waitFor({ timeout: 10000 });
    ok(`a connector appeared live after ${Date.now() - started} ms`);

    // Create a tenant: its secret is shown once, in the dialog, and gone when it closes.
    await page.fill("#create-tenant input[name=name]", "newco");
    await page.click("#create-tenant button[type=submit]");
    await page.locator("#once[open]").waitFor();
    const secret = await page.locator("#once-value").textContent();
    check(secret.startsWith("fsec_"), "the new tenant's secret is shown");
    await shot(page, "secret-once");
    await page.click("#once-close");
    await page.waitForFunction(() => document.querySelector("#once-value").textContent === "");
    ok("and is gone once the dialog closes");
    check(!(await page.content()).includes(secret), "and is nowhere on the page");
    await page.locator('#tenants tr[data-tenant="newco"]').waitFor();
    ok("the new tenant is listed");

    // Traffic through the relay, then the tenant's charts have data (statistics reach the store every 10 s).
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${PUBLIC}/relay/acme/app/hello/${i}`);
      if (r.status !== 200) throw new Error(`relay answered ${r.status}`);
      await r.text();
    }
    const notFound = await fetch(`${PUBLIC}/relay/acme/nope/x`);
    await notFound.text();
    ok("traffic sent through the relay");
    await shot(page, "overview");
    await page.goto(ADMIN + "/#/tenant/acme");
    await page.locator('#connectors tr[data-connector]').first().waitFor();
    await page.locator('[data-chart="Requests per minute"] path[data-series="requests"]').waitFor({ state: "attached", timeout: 30000 });
    const drawn = await page.locator('[data-chart="Requests per minute"] svg text').count();
    check(drawn >= 8, "a requests chart with axes is drawn after the traffic");
    await shot(page, "tenant");

    await page.goto(ADMIN + "/#/requests");
    await page.locator("#log-filter").waitFor();
    await page.locator("td", { hasText: "/hello/3" }).first().waitFor({ timeout: 20000 });
    ok("the request log lists the requests");
    await page.fill("#log-filter input[name=status]", "2xx");
    await page.keyboard.press("Enter");
    await shot(page, "requests");
    await page.goto(ADMIN + "/#/users");
    await page.locator("td", { hasText: "olga" }).first().waitFor();
    await shot(page, "users");
    await page.goto(ADMIN + "/#/audit");
    await page.locator("#audit td", { hasText: "tenant.create" }).first().waitFor();
    ok("users and the audit log are shown to an admin");
    await shot(page, "audit");

    // The gateway page: the route, and the upstream's server live; stopped, it shows down within seconds.
    const upstream = env("UPSTREAM_URL");
    const shop = await fetch(`${PUBLIC}/shop/item`);
    await shop.text();
    check(shop.status === 200, `the gateway route answers through its upstream (${shop.status})`);
    await page.goto(ADMIN + "/#/gateway");
    const route = page.locator('#routes tr[data-route="shop"]');
    await route.filter({ hasText: "/shop" }).filter({ hasText: "web" }).waitFor();
    ok("the gateway page lists the route with its path and upstream");
    const health = (state) => page.locator(`[data-upstream="web"] tr[data-server="${upstream}"] td.health[data-health="${state}"]`);
    await health("live").waitFor({ timeout: 10000 });
    ok("the upstream server is shown live");
    await shot(page, "gateway");
    await askTheTest("stop-upstream", "upstream-stopped");
    const stopped = Date.now();
    await health("unhealthy").filter({ hasText: "down" }).waitFor({ timeout: 10000 });
    ok(`the stopped server is shown down after ${Date.now() - stopped} ms, without a reload`);

    // Signing out ends the session: the page is back at the sign-in form and the API refuses the old cookie.
    await page.click("#sign-out");
    await page.locator("#sign-in-form").waitFor();
    check((await fetchIn(page, "GET", "/api/v1/tenants")) === 401, "signed out: the session is refused");
    await page.context().close();

    // A viewer: sees tenants and settings, can change nothing in the page, and the API refuses the same change.
    const viewer = await signIn(browser, "vic", env("VIEWER_PW"));
    await viewer.locator('#tenants tr[data-tenant="acme"]').waitFor();
    check((await viewer.locator("#create-tenant").count()) === 0, "a viewer gets no form to create a tenant");
    await viewer.goto(ADMIN + "/#/tenant/acme");
    await viewer.locator("#settings").waitFor();
    check(await viewer.locator("#settings input[name=max_body_size]").isDisabled(), "a viewer's settings are read only");
    check((await viewer.locator("#create-secret").count()) === 0, "a viewer gets no button to create a secret");
    check((await viewer.locator("nav a", { hasText: "Users" }).count()) === 0, "a viewer has no users page");
    const status = await fetchIn(viewer, "PUT", "/api/v1/tenants/acme/settings", { max_body_size: 1 }, true);
    check(status === 403, `the API refuses the viewer's change (${status})`);
    await shot(viewer, "viewer");
    await viewer.context().close();

    // An operator sees only its tenants.
    const op = await signIn(browser, "olga", env("OPERATOR_PW"));
    await op.locator('#tenants tr[data-tenant="acme"]').waitFor();
    const rows = await op.locator("#tenants tr[data-tenant]").count();
    check(rows === 1, `an operator sees only its tenant (${rows} rows)`);
    await op.goto(ADMIN + "/#/tenant/globex");
    await op.locator(".error", { hasText: "no tenant globex" }).waitFor();
    ok("another tenant does not exist for the operator");
    await op.context().close();

    // Through the OpenID Connect provider (when the test started one): the button, its login and consent forms,
    // back on the dashboard with the role of the ID token's claims.
    if (process.env.OIDC_PROVIDER) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
      // The provider's development pages import a web font; nothing leaves the machine.
      await context.route(/fonts\.googleapis\.com/, (route) => route.abort());
      const page = await context.newPage();
      page.setDefaultTimeout(T);
      await page.goto(ADMIN + "/");
      const button = page.locator("#sign-in-oidc-link", { hasText: `Sign in with ${process.env.OIDC_PROVIDER}` });
      await button.waitFor();
      ok(`the sign-in page offers "Sign in with ${process.env.OIDC_PROVIDER}"`);
      await shot(page, "sign-in");
      await button.click();
      await page.locator("input[name=login]").waitFor();
      await page.fill("input[name=login]", "vera");
      await page.fill("input[name=password]", "any password");
      await page.locator("button[type=submit]").click();
      await page.locator("button", { hasText: "Continue" }).click();
      await page.locator("#who").filter({ hasText: "vera" }).waitFor();
      const who = await page.locator("#who").textContent();
      check(who.includes("viewer"), `signed in through the provider with the mapped role (${who})`);
      check((await page.locator("#create-tenant").count()) === 0, "the provider's viewer gets no form to create a tenant");
      await context.close();
    }
  } finally {
    if (connector) connector.kill();
    await browser.close();
    target.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(String(e && e.stack ? e.stack : e));
    process.exit(1);
  },
);
