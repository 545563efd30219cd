// A check of the built desktop page (dist/desktop.js, dist/desktop.css)
// without a bastion: a small HTTP server on 127.0.0.1 serves dist/ under
// /static/app/, the connect page's markup under the production CSP, and
// canned answers for /api/rdp/outcome and /api/connect. There is no RDP
// gateway: the page's wss:// WebSocket to this plain HTTP server fails,
// which is the failure path under test.
//
//   node test/desktop-selfcheck.mjs      (after npm run build)
//
// It checks that the page runs under the CSP without violations, page
// errors or console errors (other than Chromium's own reports of the failed
// WebSocket and of each 404 from /api/rdp/outcome), that the component mounts with its styles adopted, that
// submitting the form goes through connecting to ended with the bastion's
// message (asked again after a 404), that the client's own error is the
// fallback when the bastion knows nothing, and that Try again gets a new
// ticket and returns to the form; the file panel is absent unless
// data-file-transfer says files may pass, and disabled until connected. Exit status 1 on any failure. Screenshots
// go to $ARTIFACTS (or a temporary directory).
import { readFile } from "node:fs/promises";
import http from "node:http";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import * as lib from "./lib.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.join(here, "..", "dist");
const artifacts = process.env.ARTIFACTS || path.join(tmpdir(), "desktop-selfcheck");

// The connect page's CSP for RDP (proxy/portal/routes.go desktopCSP).
const csp =
  "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; " +
  "connect-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const types = { ".js": "text/javascript", ".css": "text/css", ".txt": "text/plain" };

const canned = {
  T1: { reason: "unreachable", message: "vm2 stopped answering during the connection (canned)." },
  // T2 has no outcome: the page falls back on the client's error.
};

/** What the server saw, for the checks. */
const seen = { outcome: [], notFound: 0, connect: [] };

function page(ticket, clipboard, files) {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vm2</title>
<link rel="stylesheet" href="/static/app/desktop.css"></head>
<body>
<div id="client" data-ticket="${ticket}" data-protocol="rdp" data-target="vm2" data-csrf="C5RF" data-clipboard="${clipboard}" data-file-transfer="${files}">
<noscript><p>The desktop needs JavaScript.</p></noscript>
</div>
<script src="/static/app/desktop.js" type="module"></script>
</body></html>`;
}

function json(res, status, body) {
  res.writeHead(status, { "Content-Type": "application/json", "Cache-Control": "no-store" });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://localhost");
  try {
    if (req.method === "GET" && url.pathname.startsWith("/connect/")) {
      const ticket = url.pathname.slice("/connect/".length);
      res.writeHead(200, { "Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": csp });
      res.end(page(ticket, url.searchParams.get("clipboard") === "true", url.searchParams.get("files") === "true"));
      return;
    }
    if (req.method === "GET" && url.pathname.startsWith("/static/app/")) {
      const name = path.basename(url.pathname);
      const body = await readFile(path.join(dist, name));
      res.writeHead(200, { "Content-Type": types[path.extname(name)] ?? "application/octet-stream" });
      res.end(body);
      return;
    }
    if (req.method === "GET" && url.pathname === "/api/rdp/outcome") {
      const ticket = url.searchParams.get("ticket");
      const asked = seen.outcome.filter((t) => t === ticket).length;
      seen.outcome.push(ticket);
      // The first question gets a 404, as when the bastion has not written the outcome yet.
      if (asked === 0 || !canned[ticket]) {
        seen.notFound++;
        return json(res, 404, { error: "no desktop ended with that ticket" });
      }
      return json(res, 200, canned[ticket]);
    }
    if (req.method === "POST" && url.pathname === "/api/connect") {
      let body = "";
      for await (const chunk of req) body += chunk;
      seen.connect.push({ csrf: req.headers["x-csrf-token"], body: JSON.parse(body) });
      return json(res, 200, { ticket: "T2", url: "/connect/T2" });
    }
    if (url.pathname === "/favicon.ico") return void res.writeHead(204).end();
    res.writeHead(404).end();
  } catch (err) {
    res.writeHead(500).end(String(err));
  }
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const base = `http://127.0.0.1:${server.address().port}`;

const failures = [];
function check(ok, what) {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
}

const browser = await lib.launch();
try {
  const { context, page: p, takeProblems } = await lib.newPage(browser, { timeout: 20_000 });
  // Record every data-state of #client, and what the component looks like once ready.
  await context.addInitScript(() => {
    window.__states = [];
    window.__ready = [];
    new MutationObserver(() => {
      const s = document.getElementById("client")?.dataset.state;
      if (s && window.__states.at(-1) !== s) window.__states.push(s);
    }).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state"] });
    document.addEventListener(
      "ready",
      (e) => {
        const host = e.composedPath().find((n) => n instanceof Element && n.localName === "iron-remote-desktop");
        setTimeout(() => {
          const root = host?.shadowRoot;
          window.__ready.push({
            sheets: root ? root.adoptedStyleSheets.map((s) => Array.from(s.cssRules, (r) => r.cssText).join(" ")) : [],
            styleElements: root ? root.querySelectorAll("style").length : -1,
            canvas: root?.querySelector("canvas")?.id ?? null,
            hook: window.bastionDesktopCanvas?.() === root?.querySelector("canvas"),
          });
        }, 0);
      },
      true,
    );
  });

  // 1. The form.
  await p.goto(`${base}/connect/T1`);
  await p.waitForSelector('#client[data-state="credentials"]');
  const form = p.locator("#client form.signin");
  check((await form.locator('input[name="user"]').getAttribute("autocomplete")) === "username", "user input, autocomplete username");
  check((await form.locator('input[name="password"]').getAttribute("autocomplete")) === "current-password", "password input, autocomplete current-password");
  check((await form.locator('input[name="domain"]').count()) === 1, "domain input");
  check(await form.getByRole("button", { name: "Connect" }).isVisible(), "Connect button");
  check(await p.locator("#client .badge", { hasText: "Copy and paste disabled" }).isVisible(), "clipboard-disabled badge shown (data-clipboard=false)");
  check(await p.locator("#client .bar button", { hasText: "Fit to window" }).isVisible(), "Fit to window tool");
  check((await p.locator("#client .files").count()) === 0, "no file panel (data-file-transfer=false)");
  check(await p.locator("#client .bar button", { hasText: "Ctrl+Alt+Del" }).isDisabled(), "Ctrl+Alt+Del disabled before connecting");
  await lib.screenshot(p, artifacts, "1-form");

  // 2. Connect: the WebSocket fails, the bastion's outcome (after a 404) is shown.
  await form.locator('input[name="user"]').fill("alice");
  await form.locator('input[name="password"]').fill("s3cret");
  await form.locator('input[name="domain"]').fill("CORP");
  await form.getByRole("button", { name: "Connect" }).click();
  await p.waitForSelector('#client[data-state="ended"]');
  const message = await p.locator("#client-end-message").innerText();
  check(message === canned.T1.message, `end message is the bastion's: ${JSON.stringify(message)}`);
  check(seen.outcome.filter((t) => t === "T1").length === 2, `outcome asked again after a 404 (${seen.outcome.length} asks)`);
  const states = await p.evaluate(() => window.__states);
  check(JSON.stringify(states) === JSON.stringify(["credentials", "connecting", "ended"]), `states ${states.join(" → ")}`);
  const ready = await p.evaluate(() => window.__ready);
  check(ready.length === 1, "the component mounted once");
  check(ready[0]?.styleElements === 0 && ready[0]?.sheets.some((css) => css.includes("svelte-")), "component styles adopted in its shadow root, no <style>");
  check(ready[0]?.canvas === "renderer" && ready[0]?.hook === true, "bastionDesktopCanvas() returns the component's canvas");
  check(await p.getByRole("button", { name: "Try again" }).isVisible(), "Try again offered");
  await lib.screenshot(p, artifacts, "2-ended");

  // 3. Try again: a new ticket, the form again with the user and domain kept.
  await p.getByRole("button", { name: "Try again" }).click();
  await p.waitForSelector('#client[data-state="credentials"]');
  check(seen.connect.length === 1 && seen.connect[0].csrf === "C5RF", "POST /api/connect with the CSRF token");
  check(seen.connect[0]?.body.target === "vm2" && seen.connect[0]?.body.protocol === "rdp", "new ticket for vm2, rdp");
  check(new URL(p.url()).pathname === "/connect/T2", `URL replaced: ${p.url()}`);
  check((await p.inputValue('#client input[name="user"]')) === "alice", "user kept");
  check((await p.inputValue('#client input[name="domain"]')) === "CORP", "domain kept");
  check((await p.inputValue('#client input[name="password"]')) === "", "password empty");

  // 4. No outcome for T2: the client's error (the gateway unreachable) is said.
  await p.fill('#client input[name="password"]', "s3cret");
  await p.click('#client form.signin button[type="submit"]');
  await p.waitForSelector('#client[data-state="ended"]');
  const fallback = await p.locator("#client-end-message").innerText();
  check(fallback === "Could not reach the bastion's remote desktop gateway.", `fallback message: ${JSON.stringify(fallback)}`);
  check(seen.outcome.filter((t) => t === "T2").length === 6, "outcome asked for about 1.5 s before giving up");
  check(seen.outcome.every((t) => t === "T1" || t === "T2"), "outcomes asked with the current ticket");
  await lib.screenshot(p, artifacts, "3-fallback");

  // 5. With the clipboard allowed, no badge; with files too, the file
  // panel, disabled until a desktop is connected.
  await p.goto(`${base}/connect/T3?clipboard=true&files=true`);
  await p.waitForSelector('#client[data-state="credentials"]');
  check(!(await p.locator("#client .badge", { hasText: "Copy and paste disabled" }).isVisible()), "no clipboard badge (data-clipboard=true)");
  const upload = p.locator("#client .files button", { hasText: "Upload files" });
  check((await upload.count()) === 1 && (await upload.isDisabled()), "Upload files button, disabled before connecting (data-file-transfer=true)");
  await p.fill('#client input[name="user"]', "CORP\\bob");
  await p.fill('#client input[name="password"]', "s3cret");
  await p.click('#client form.signin button[type="submit"]');
  await p.waitForSelector('#client[data-state="ended"]');
  check((await p.locator("#client-end-message").innerText()).startsWith("Could not reach"), "ends the same way with the clipboard on");
  check(await upload.isDisabled(), "Upload files disabled again once ended");
  await p.getByRole("button", { name: "Try again" }).click();
  await p.waitForSelector('#client[data-state="credentials"]');
  check((await p.inputValue('#client input[name="user"]')) === "bob" && (await p.inputValue('#client input[name="domain"]')) === "CORP", "DOMAIN\\user split");

  // Nothing went wrong on the way.
  const problems = takeProblems();
  // Chromium reports the failed WebSocket, and every 404 (the outcome not
  // written yet, or unknown), as console errors of its own.
  const wsFailure = /^WebSocket connection to 'wss:\/\/127\.0\.0\.1:\d+\/ws\/rdp' failed/;
  const notFound = /^Failed to load resource: the server responded with a status of 404/;
  const otherConsole = problems.console.filter((m) => !wsFailure.test(m) && !notFound.test(m));
  const notFoundReports = problems.console.filter((m) => notFound.test(m)).length;
  check(notFoundReports === seen.notFound, `the only 404s are the outcome's (${notFoundReports} reported, ${seen.notFound} served)`);
  check(problems.violations.length === 0, `no CSP violations ${JSON.stringify(problems.violations)}`);
  check(problems.exceptions.length === 0, `no page errors ${JSON.stringify(problems.exceptions)}`);
  check(otherConsole.length === 0, `no console errors besides the refused WebSocket ${JSON.stringify(otherConsole)}`);
  await context.close();
} finally {
  await browser.close();
  server.close();
}

console.log(failures.length ? `${failures.length} check(s) failed` : "all checks passed");
console.log(`screenshots in ${artifacts}`);
process.exit(failures.length ? 1 : 0);
