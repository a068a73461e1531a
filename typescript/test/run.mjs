// `npm test`: starts one real `hutch serve` and runs every test file against it with Node's
// test runner, then stops it. The exit status is the test runner's.

import { spawn } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { startServer, unavailable } from "./server.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const files = readdirSync(here)
  .filter((name) => name.endsWith(".test.mjs"))
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

const code = await new Promise((resolve) => {
  const child = spawn(process.execPath, ["--test", ...process.argv.slice(2), ...files], {
    env,
    stdio: "inherit",
  });
  child.once("exit", (status, signal) => resolve(status ?? (signal ? 1 : 0)));
});
await server?.stop();
process.exit(code);
