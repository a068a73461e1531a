// Starting a real `hutch serve` for a test: on a free loopback port, with a fresh data
// directory, resolved once healthy. Only Node's own modules, so that a test that does not
// use the SDK (the web console's, console/test/browser.mjs) can start one too.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";

/**
 * Starts `binary serve` with `env` and `args` on a free port with a fresh data directory;
 * resolves once healthy with `{url, dataDir, pid, stop()}` (`stop` sends SIGTERM, waits up
 * to 60 s for the server to destroy its sandboxes, and removes the data directory).
 */
export async function startHutch(binary, env, args = []) {
  const dataDir = mkdtempSync(join(tmpdir(), "hutch-test-"));
  const child = spawn(
    binary,
    ["serve", "--listen", "127.0.0.1:0", "--on-exit", "destroy", "--data-dir", dataDir, ...args],
    { env, stdio: ["ignore", "pipe", "inherit"] },
  );
  const url = await new Promise((resolveUrl, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error("hutch serve did not listen within 60 s")), 60_000);
    lines.on("line", (line) => {
      const match = /listening on (\S+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolveUrl(match[1].replace(/\/+$/, ""));
      }
    });
    child.once("exit", (code) => reject(new Error(`hutch serve exited (${code}) before listening`)));
  });
  child.stdout.resume();
  for (let i = 0; ; i++) {
    try {
      const response = await fetch(`${url}/health`);
      if (response.ok) break;
    } catch {
      // not yet
    }
    if (i > 300) throw new Error("hutch serve never became healthy");
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url,
    dataDir,
    pid: child.pid,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill("SIGTERM");
        // A loaded machine can make the destroys slow, and a SIGKILL leaves the sandboxes
        // (mounted disks, cgroups) behind: wait long, and say so when it comes to that.
        const timer = setTimeout(() => {
          process.stderr.write(
            `hutch serve (pid ${child.pid}) did not stop within 60 s of SIGTERM: killed; ` +
              `its sandboxes may be left under ${dataDir}\n`,
          );
          child.kill("SIGKILL");
        }, 60_000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
