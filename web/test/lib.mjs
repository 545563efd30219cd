// Helpers to drive bastiond's pages in Debian's Chromium with playwright-core,
// for the browser tests of web/ (through driver.mjs) and for end-to-end tests
// against a real bastiond. playwright-core never downloads a browser: the
// system's Chromium is launched with a fresh temporary profile.
//
// Reading the terminal: the helpers read the DOM renderer's rows
// (.xterm-rows), which hold the visible screen; the page exposes no test hook.
import { mkdir } from "node:fs/promises";
import path from "node:path";
import { chromium } from "playwright-core";

export const chromiumPath = process.env.CHROMIUM || "/usr/bin/chromium";

const chromiumArgs = [
  "--no-sandbox", // the tests run as root in CI
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

// STRICT_TLS=1 keeps certificate errors errors: a test that needs a secure
// context without them (WebAuthn refuses a page with a certificate error)
// trusts its certificate with --ignore-certificate-errors-spki-list in
// CHROMIUM_ARGS instead. Otherwise self-signed test certificates pass.
const strictTLS = process.env.STRICT_TLS === "1";
if (!strictTLS) chromiumArgs.push("--ignore-certificate-errors");

// CHROMIUM_ARGS, a JSON array, adds flags of a test's own (e.g. a
// --host-resolver-rules that sends a name to one address family).
const extraArgs = JSON.parse(process.env.CHROMIUM_ARGS || "[]");

/** launch starts headless Chromium. */
export function launch({ executablePath = chromiumPath, headless = true } = {}) {
  return chromium.launch({ executablePath, headless, args: [...chromiumArgs, ...extraArgs], timeout: 60_000 });
}

/**
 * newPage opens a page in a fresh context that records what went wrong:
 * CSP violations (from securitypolicyviolation events, on every document the
 * page loads), uncaught exceptions and console errors. takeProblems returns
 * and forgets them.
 */
export async function newPage(browser, { width = 1000, height = 700, timeout = 10_000 } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, ignoreHTTPSErrors: !strictTLS });
  await context.grantPermissions(["clipboard-read", "clipboard-write"]);
  const problems = { violations: [], exceptions: [], console: [] };
  await context.exposeBinding("__reportViolation", (_source, text) => problems.violations.push(text));
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      const where = e.sourceFile ? ` at ${e.sourceFile}:${e.lineNumber}` : "";
      window.__reportViolation(`${e.effectiveDirective} refused ${e.blockedURI || "inline"}${where}: ${e.sample}`);
    });
  });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.on("pageerror", (err) => problems.exceptions.push(String(err)));
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.console.push(msg.text());
  });
  const takeProblems = () => {
    const taken = structuredClone(problems);
    for (const list of Object.values(problems)) list.length = 0;
    return taken;
  };
  return { context, page, takeProblems };
}

/** portalLogin signs in on bastiond's portal at baseURL. */
export async function portalLogin(page, baseURL, user, password) {
  await page.goto(new URL("/", baseURL).href);
  await page.fill('input[name="user"]', user);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForURL((u) => u.pathname === "/"), page.click('form.login button')]);
}

/** openTerminal clicks a target's SSH button on the portal and waits for the connect page. */
export async function openTerminal(page, target) {
  await openClient(page, target, "SSH");
}

/** openClient clicks a target's button for protocol ("SSH", "RDP") on the portal and waits for the connect page. */
export async function openClient(page, target, protocol) {
  // The whole name: "vm2" is not "vm2-desk".
  const name = new RegExp(`^\\s*${target.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\s*$`);
  const item = page.locator("ul.targets li").filter({ has: page.locator(".name", { hasText: name }) });
  await Promise.all([page.waitForURL(/\/connect\//), item.getByRole("button", { name: protocol }).click()]);
}

/** signIn answers the connect page's sign-in form with a password, or with nothing for a certificate. */
export async function signIn(page, { login, password }) {
  const form = page.locator("#client form.signin");
  await form.waitFor();
  const control = form.locator("select, input[type=text]").first();
  if ((await control.evaluate((el) => el.tagName)) === "SELECT") await control.selectOption(login);
  else await control.fill(login);
  if (password !== undefined) await form.locator("input[type=password]").first().fill(password);
  await form.getByRole("button", { name: "Connect" }).click();
}

/** terminalText is the terminal's visible screen, one line per row, trailing blanks trimmed. */
export function terminalText(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll(".xterm-rows > div"), (row) => row.textContent.replace(/\u00a0/g, " ").trimEnd())
      .join("\n")
      .trimEnd(),
  );
}

/** waitForTerminalText waits until the screen shows text. */
export async function waitForTerminalText(page, text, { timeout } = {}) {
  await page.waitForFunction(
    (want) => Array.from(document.querySelectorAll(".xterm-rows > div"), (r) => r.textContent.replace(/\u00a0/g, " ")).join("\n").includes(want),
    text,
    timeout === undefined ? {} : { timeout },
  );
}

/** typeInTerminal focuses the terminal and types text, key by key; "\r" or "\n" is Enter. */
export async function typeInTerminal(page, text) {
  await page.focus(".xterm-helper-textarea");
  for (const part of text.split(/(\r\n|\r|\n)/)) {
    if (part === "") continue;
    if (/^[\r\n]+$/.test(part)) await page.keyboard.press("Enter");
    else await page.keyboard.type(part);
  }
}

/**
 * pasteInTerminal fires a paste event carrying text at the terminal, as the
 * browser does for Ctrl+Shift+V or its menu. It returns whether the page
 * cancelled the event's default action.
 */
export function pasteInTerminal(page, text) {
  return page.evaluate((data) => {
    const dt = new DataTransfer();
    dt.setData("text/plain", data);
    const ev = new ClipboardEvent("paste", { clipboardData: dt, bubbles: true, cancelable: true });
    document.querySelector(".xterm-helper-textarea").dispatchEvent(ev);
    return ev.defaultPrevented;
  }, text);
}

/** screenshot saves the page as dir/name.png and returns the path. */
export async function screenshot(page, dir, name) {
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, `${name.replace(/[^\w.-]+/g, "_")}.png`);
  await page.screenshot({ path: file });
  return file;
}
