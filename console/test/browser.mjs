// The console in a real browser: Debian's chromium driven by playwright-core against a real
// `hutch serve` on loopback. It logs in, creates a session, types `echo hi` in the terminal,
// uploads a file by drag and drop, reads a process's output, runs a notebook cell drawing a
// matplotlib figure, checks that another tenant never sees the session and an admin does,
// deletes it, and checks that the CSP blocks inline scripts. It fails on any console error,
// failed request or request to another origin. Screenshots of every page, and the figures
// (time to interactive, asset sizes), go to target/console-screenshots/.
//
//   npm test                        (from console/; HUTCH_BIN names the binary, default
//                                    target/debug/hutch; CHROMIUM the browser, default
//                                    /usr/bin/chromium)
//
// Sandboxes need root: without it the test is skipped, except under CI=true.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

import { chromium } from "playwright-core";

import { startHutch } from "../../typescript/test/hutch-serve.mjs";

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const BIN = process.env.HUTCH_BIN ?? join(REPO, "target", "debug", "hutch");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = join(REPO, "target", "console-screenshots");
const SECRET = "test-secret-for-hutch-console-tests";
/** Bound on every wait for the page (a session starts, a cell imports matplotlib). */
const WAIT_MS = 60_000;

function unavailable() {
  if (!existsSync(BIN)) return `no hutch binary at ${BIN}: cargo build -p hutch`;
  if (!existsSync(CHROMIUM)) return `no browser at ${CHROMIUM}: scripts/deps.sh test installs chromium`;
  if (process.getuid?.() !== 0) return "sandboxes need root";
  return undefined;
}

const why = unavailable();
if (why) {
  if (process.env.CI === "true") {
    console.error(`the console's browser test cannot run under CI: ${why}`);
    process.exit(1);
  }
  console.log(`SKIPPED console browser test: ${why}`);
  process.exit(0);
}

const env = {
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HUTCH_"))),
  HUTCH_JWT_SECRET: SECRET,
  HUTCH_LOG: "warn",
};
const hutch = (...args) => execFileSync(BIN, args, { env, encoding: "utf8" }).trim();

/** The embedded assets' sizes, raw and gzip-compressed (what the binary serves). */
function assetSizes() {
  const dist = join(REPO, "console", "dist");
  let raw = 0;
  let gz = 0;
  const walk = (dir) => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) walk(path);
      else {
        const bytes = readFileSync(path);
        raw += bytes.length;
        gz += gzipSync(bytes, { level: 9 }).length;
      }
    }
  };
  walk(dist);
  return { rawBytes: raw, gzipBytes: gz };
}

rmSync(SHOTS, { recursive: true, force: true });
mkdirSync(SHOTS, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "hutch-console-chromium-"));
const server = await startHutch(BIN, env);
const dataDir = server.dataDir;
const origin = new URL(server.url).origin;
const tokenA = hutch("token", "--sub", "console-a", "--ttl", "1h", "--data-dir", dataDir);
const link = (...args) => hutch("console-link", "--url", server.url, "--data-dir", dataDir, ...args);

const problems = [];
const foreign = [];
let context;
let page;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  context.on("request", (request) => {
    if (new URL(request.url()).origin !== origin && !request.url().startsWith("data:") && !request.url().startsWith("blob:")) {
      foreign.push(request.url());
    }
  });
  page = context.pages()[0] ?? (await context.newPage());
  let watching = true;
  page.on("console", (message) => {
    if (watching && message.type() === "error") problems.push(`console error: ${message.text()} (${message.location()?.url})`);
  });
  page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    // Leaving a page closes its sockets and may abort a poll in flight: not a failure.
    if (request.failure()?.errorText !== "net::ERR_ABORTED") problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) problems.push(`HTTP ${response.status()}: ${response.request().method()} ${response.url()}`);
  });
  page.on("websocket", (socket) => {
    if (new URL(socket.url()).host !== new URL(origin).host) foreign.push(socket.url());
  });
  page.on("dialog", (dialog) => dialog.accept());
  page.setDefaultTimeout(WAIT_MS);
  const shot = (name) => page.screenshot({ path: join(SHOTS, `${name}.png`) });
  const step = (name) => console.log(`console test: ${name}`);

  step("log in with a pasted token");
  await page.goto(`${server.url}/console`);
  await page.waitForSelector("#token");
  await shot("login");
  await page.fill("#token", tokenA);
  await page.click("button[type=submit]");
  await page.waitForSelector("table[aria-label=Sessions]");

  step("create a session");
  await page.fill("#new-metadata", "owner=console-test");
  await page.click("#create");
  const row = await page.waitForSelector("tr[data-session] >> text=RUNNING");
  const id = await row.evaluate((el) => el.closest("tr").dataset.session);
  await page.waitForSelector(`tr[data-session="${id}"] >> text=owner=console-test`);
  await shot("sessions");
  await page.emulateMedia({ colorScheme: "dark" });
  await shot("sessions-dark");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot("sessions-phone");
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.emulateMedia({ colorScheme: "light" });

  step("type `echo hi` in the terminal");
  await page.click(`tr[data-session="${id}"] a`);
  await page.waitForSelector("#terminal-state >> text=Connected");
  await page.click("#terminal");
  await page.keyboard.type("echo hi\n");
  await page.waitForFunction(
    () => Array.from(document.querySelectorAll(".xterm-rows > div")).some((row) => row.textContent.trim() === "hi"),
  );
  await shot("terminal");

  step("upload a file by drag and drop");
  await page.click("#tab-files");
  await page.waitForSelector("#files-drop");
  const dropped = await page.evaluateHandle(() => {
    const transfer = new DataTransfer();
    transfer.items.add(new File(["hello from the console\n"], "hello.txt", { type: "text/plain" }));
    return transfer;
  });
  await page.dispatchEvent("#files-drop", "drop", { dataTransfer: dropped });
  await page.waitForSelector('tr[data-file="hello.txt"]');
  await shot("files");

  step("read a process's output");
  await page.click("#tab-processes");
  await page.fill("#process-command", "echo from-a-process");
  await page.press("#process-command", "Enter");
  await page.waitForSelector("#process-output >> text=from-a-process");
  await shot("processes");

  step("draw a matplotlib figure in the notebook");
  await page.click("#tab-notebook");
  await page.fill(
    ".cell textarea",
    "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()",
  );
  await page.click(".cell button.run");
  await page.waitForSelector(".cell img.figure");
  const figure = await page.$eval(".cell img.figure", (img) => ({ w: img.naturalWidth, h: img.naturalHeight }));
  assert.ok(figure.w > 100 && figure.h > 100, `the figure is an image: ${JSON.stringify(figure)}`);
  await page.fill(".cell:nth-of-type(2) textarea", "import pandas as pd\npd.DataFrame({'x': [1, 2], 'y': [3, 4]})");
  await page.click(".cell:nth-of-type(2) button.run");
  await page.waitForSelector(".cell:nth-of-type(2) .html-result table");
  await page.fill(".cell:nth-of-type(3) textarea", "1 / 0");
  await page.click(".cell:nth-of-type(3) button.run");
  await page.waitForSelector(".cell:nth-of-type(3) pre.traceback >> text=ZeroDivisionError");
  await page.click("#load-history");
  await page.waitForSelector(".history details");
  await shot("notebook");

  step("storage pages");
  await page.click("#tab-storage");
  await page.waitForSelector("table[aria-label='Storage tasks'] tbody tr");
  await shot("storage-tasks");
  await page.goto(`${server.url}/console/#/contexts`);
  await page.waitForSelector("table[aria-label='Storage contexts'] tbody tr");
  await shot("contexts");

  step("another tenant's login link never shows the session; an admin's does");
  await page.click("#logout");
  await page.waitForSelector("#token");
  await page.goto(link("--sub", "console-b"));
  await page.waitForSelector("table[aria-label=Sessions] tbody tr");
  assert.equal(await page.$(`tr[data-session="${id}"]`), null, "tenant B sees tenant A's session");
  await page.goto(link("--sub", "ops", "--admin"));
  await page.waitForSelector(`tr[data-session="${id}"]`);
  await shot("sessions-admin");

  step("delete the session with confirmation");
  await page.click("#logout");
  await page.waitForSelector("#token");
  await page.fill("#token", tokenA);
  await page.click("button[type=submit]");
  await page.click(`button[aria-label="Delete ${id}"]`);
  await page.waitForSelector(`tr[data-session="${id}"]`, { state: "detached" });

  step("time to interactive, with an empty cache and with a warm one");
  const cdp = await context.newCDPSession(page);
  const measure = async (cold) => {
    await cdp.send("Network.setCacheDisabled", { cacheDisabled: cold });
    const loads = [];
    for (let i = 0; i < 5; i++) {
      await page.goto(`${server.url}/console/`);
      await page.waitForFunction(() => performance.getEntriesByName("console-interactive").length > 0);
      loads.push(
        await page.evaluate(() => {
          const [nav] = performance.getEntriesByType("navigation");
          return {
            interactiveMs: performance.getEntriesByName("console-interactive")[0].startTime,
            domContentLoadedMs: nav.domContentLoadedEventEnd,
            transferredBytes: performance.getEntriesByType("resource").reduce((n, r) => n + r.transferSize, nav.transferSize),
          };
        }),
      );
    }
    const median = (key) => Math.round(loads.map((l) => l[key]).sort((a, b) => a - b)[Math.floor(loads.length / 2)]);
    return { interactiveMs: median("interactiveMs"), domContentLoadedMs: median("domContentLoadedMs"), transferredBytes: median("transferredBytes") };
  };
  const cold = await measure(true);
  const warm = await measure(false);
  await cdp.detach();
  // The target is under 1 s; it is reported, not asserted: a loaded machine may miss it.

  step("the CSP blocks an inline script");
  watching = false;
  const blocked = await page.evaluate(
    () =>
      new Promise((resolveBlocked) => {
        document.addEventListener("securitypolicyviolation", (e) => resolveBlocked(e.effectiveDirective), { once: true });
        const script = document.createElement("script");
        script.textContent = "window.inlineRan = true";
        document.body.append(script);
        setTimeout(() => resolveBlocked(window.inlineRan ? "ran" : "no violation"), 5000);
      }),
  );
  assert.equal(blocked, "script-src-elem", "the inline script was blocked by script-src");
  assert.equal(await page.evaluate(() => window.inlineRan), undefined);

  assert.deepEqual(foreign, [], "every request stays on the server's origin");
  assert.deepEqual(problems, [], "no console error nor failed request");
  const sizes = assetSizes();
  assert.ok(sizes.gzipBytes < 1024 * 1024, `the assets are under 1 MiB gzipped: ${JSON.stringify(sizes)}`);
  const figures = {
    coldCache: cold,
    warmCache: warm,
    ...sizes,
    screenshots: readdirSync(SHOTS).filter((n) => n.endsWith(".png")).map((n) => join("target/console-screenshots", n)),
  };
  writeFileSync(join(SHOTS, "figures.json"), `${JSON.stringify(figures, null, 2)}\n`);
  console.log(
    `console test: passed; time to interactive ${cold.interactiveMs} ms with an empty cache, ` +
      `${warm.interactiveMs} ms with a warm one (medians of 5), ` +
      `assets ${figures.rawBytes} B, ${figures.gzipBytes} B gzipped; screenshots in ${SHOTS}`,
  );
} catch (error) {
  // What the page showed and what went wrong in it, for the failure's reader.
  await page?.screenshot({ path: join(SHOTS, "failure.png") }).catch(() => undefined);
  const status = await page?.textContent("#status").catch(() => undefined);
  console.error(`console test failed; status line: ${status}; problems: ${JSON.stringify(problems)}`);
  throw error;
} finally {
  await context?.close();
  await server.stop();
  rmSync(profile, { recursive: true, force: true });
}
