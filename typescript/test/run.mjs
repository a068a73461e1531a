// `npm test`: starts one real `hutch serve` and runs every test file against it with Node's
// test runner, then stops it. The exit status is the test runner's.

import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { startServer, unavailable } from "./server.mjs";

// Arguments naming test files choose among them; the others go to `node --test`.
const here = dirname(fileURLToPath(import.meta.url));
const chosen = process.argv.slice(2).filter((arg) => arg.endsWith(".test.mjs"));
const flags = process.argv.slice(2).filter((arg) => !arg.endsWith(".test.mjs"));
const files = readdirSync(here)
  .filter((name) => name.endsWith(".test.mjs"))
  .filter((name) => chosen.length === 0 || chosen.some((arg) => arg.endsWith(name)))
  .sort()
  .map((name) => join(here, name));

const why = unavailable();
if (why && process.env.CI === "true") {
  console.error(`the TypeScript SDK tests cannot run under CI: ${why}`);
  process.exit(1);
}
const server = why ? undefined : await startServer(["--warm-pool", "2"]);
const env = { ...process.env };
if (server) env.HUTCH_TEST_SERVER = JSON.stringify({ url: server.url, dataDir: server.dataDir });

// A test file that never ends (a socket left open keeps its process alive) fails the run
// instead of hanging it.
const LIMIT_MS = 20 * 60 * 1000;
const code = await new Promise((resolve) => {
  const child = spawn(process.execPath, ["--test", ...flags, ...files], {
    env,
    stdio: "inherit",
  });
  const watchdog = setTimeout(() => {
    console.error(`the tests did not finish within ${LIMIT_MS / 60000} minutes`);
    child.kill("SIGTERM");
  }, LIMIT_MS);
  child.once("exit", (status, signal) => {
    clearTimeout(watchdog);
    resolve(status ?? (signal ? 1 : 0));
  });
});
await server?.stop();
process.exit(code);
