// A line-oriented remote control of one Chromium page, for Go tests
// (web/browsertest). It launches Chromium, prints {"ready":true}, then reads
// one JSON request per line on stdin, {"id":1,"op":"goto","args":{...}},
// and answers each on stdout with {"id":1,"result":...} or
// {"id":1,"error":"..."}. It exits when stdin closes.
//
// Environment: CHROMIUM (default /usr/bin/chromium), ARTIFACTS (where
// screenshots go), CHROMIUM_ARGS (a JSON array of more flags).
//
// Operations act on the current tab; newTab opens another in the same
// context (its cookies shared) and makes it current, tab switches back.
import { createInterface } from "node:readline";
import * as lib from "./lib.mjs";

const artifacts = process.env.ARTIFACTS || ".";
const browser = await lib.launch();
const first = await lib.newPage(browser);
const { takeProblems } = first;
let page = first.page;
const tabs = [page];

const ops = {
  newTab: async () => {
    const p = await first.context.newPage();
    p.setDefaultTimeout(10_000);
    tabs.push(p);
    page = p;
    return tabs.length - 1;
  },
  tab: ({ index }) => {
    if (!tabs[index]) throw new Error(`no tab ${index}`);
    page = tabs[index];
    return page.bringToFront();
  },
  goto: ({ url }) => page.goto(url).then(() => undefined),
  url: () => page.url(),
  click: ({ selector, button = "left" }) => page.click(selector, { button }),
  // force: terminal rows ignore the pointer; the screen above them takes the clicks.
  dblclick: ({ selector }) => page.dblclick(selector, { force: true }),
  fill: ({ selector, value }) => page.fill(selector, value),
  select: ({ selector, value }) => page.selectOption(selector, value).then(() => undefined),
  press: ({ key }) => page.keyboard.press(key),
  text: ({ selector }) => page.locator(selector).first().innerText(),
  count: ({ selector }) => page.locator(selector).count(),
  visible: ({ selector }) => page.locator(selector).first().isVisible(),
  waitVisible: ({ selector }) => page.locator(selector).first().waitFor({ state: "visible" }),
  waitHidden: ({ selector }) => page.locator(selector).first().waitFor({ state: "hidden" }),
  waitText: ({ selector, text }) =>
    page.waitForFunction(([s, t]) => document.querySelector(s)?.textContent.includes(t), [selector, text]).then(() => undefined),
  // eval runs a JavaScript expression in the page; a promise is awaited and
  // the value comes back as JSON.
  eval: ({ expression }) => page.evaluate(expression),
  viewport: ({ width, height }) => page.setViewportSize({ width, height }),
  screenshot: ({ name }) => lib.screenshot(page, artifacts, name),
  problems: () => takeProblems(),
  portalLogin: ({ baseURL, user, password }) => lib.portalLogin(page, baseURL, user, password),
  openTerminal: ({ target }) => lib.openTerminal(page, target),
  openClient: ({ target, protocol }) => lib.openClient(page, target, protocol),
  signIn: ({ login, password }) => lib.signIn(page, { login, password }),
  terminalText: () => lib.terminalText(page),
  waitTerminalText: ({ text }) => lib.waitForTerminalText(page, text),
  typeInTerminal: ({ text }) => lib.typeInTerminal(page, text),
  pasteInTerminal: ({ text }) => lib.pasteInTerminal(page, text),
  // cdp sends a Chrome DevTools Protocol command in the current tab's
  // session (one per tab, kept: a virtual authenticator lives in it).
  cdp: async ({ method, params }) => {
    if (!cdpSessions.has(page)) cdpSessions.set(page, await page.context().newCDPSession(page));
    return cdpSessions.get(page).send(method, params ?? {});
  },
};
const cdpSessions = new Map();

const reply = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);
reply({ ready: true });

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  let id = 0;
  try {
    const req = JSON.parse(line);
    id = req.id;
    const op = ops[req.op];
    if (!op) throw new Error(`unknown op ${JSON.stringify(req.op)}`);
    const result = await op(req.args ?? {});
    reply({ id, result: result ?? null });
  } catch (err) {
    reply({ id, error: err instanceof Error ? err.message : String(err) });
  }
}
await browser.close();
