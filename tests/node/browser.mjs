// A headless Chromium (Debian's, at CHROMIUM or /usr/bin/chromium) driven through playwright-core, taking one JSON
// command per line on stdin and answering one JSON line on stdout: {"id", "ok", "value"} or {"id", "ok": false,
// "error"}. tests/support/browser.py speaks it, so browser tests are written in Python next to the simulated
// charge points. Errors thrown in the page and console errors are collected ("errors").
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"];

const browser = await chromium.launch({ executablePath, headless: true, chromiumSandbox: false, args: ARGS });
const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1,
  serviceWorkers: "block" });
const page = await context.newPage();
const errors = [];
const requests = [];
page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
page.on("console", (message) => { if (message.type() === "error") errors.push(`console: ${message.text()}`); });
page.on("request", (request) => requests.push(request.url()));

const DEFAULT_TIMEOUT = Number(process.env.BROWSER_TIMEOUT_MS || 10000);
page.setDefaultTimeout(DEFAULT_TIMEOUT);

const handlers = {
  goto: ({ url }) => page.goto(url, { waitUntil: "domcontentloaded" }).then(() => null),
  reload: () => page.reload({ waitUntil: "domcontentloaded" }).then(() => null),
  fill: ({ selector, value }) => page.fill(selector, value),
  click: ({ selector }) => page.click(selector),
  select: ({ selector, value }) => page.selectOption(selector, value).then(() => null),
  check: ({ selector }) => page.check(selector),
  text: ({ selector }) => page.textContent(selector),
  count: ({ selector }) => page.locator(selector).count(),
  attributes: ({ selector, names }) => page.$$eval(selector, (nodes, wanted) =>
    nodes.map((node) => Object.fromEntries(wanted.map((name) => [name, node.getAttribute(name)]))), names),
  wait: ({ selector, state, timeout }) => page.waitForSelector(selector, { state: state || "visible", timeout })
    .then(() => null),
  // waits until expression (a function body over `arg`) returns a truthy value; returns that value
  until: ({ expression, arg, timeout }) => page.waitForFunction(new Function("arg", expression), arg,
    { timeout, polling: 50 }).then((handle) => handle.jsonValue()),
  evaluate: ({ expression, arg }) => page.evaluate(new Function("arg", expression), arg),
  screenshot: ({ path, fullPage }) => page.screenshot({ path, fullPage: !!fullPage }).then(() => null),
  errors: () => errors.splice(0),
  requests: () => requests.splice(0),
  close: async () => { await browser.close(); return null; },
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let message;
  try { message = JSON.parse(line); } catch { continue; }
  const { id, op, args } = message;
  try {
    const handler = handlers[op];
    if (!handler) throw new Error(`unknown operation ${op}`);
    const value = await handler(args || {});
    process.stdout.write(`${JSON.stringify({ id, ok: true, value: value === undefined ? null : value })}\n`);
    if (op === "close") break;
  } catch (error) {
    process.stdout.write(`${JSON.stringify({ id, ok: false, error: String(error && error.message || error) })}\n`);
  }
}
await browser.close().catch(() => {});
process.exit(0);
