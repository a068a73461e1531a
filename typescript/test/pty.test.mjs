// Terminals: a real controlling terminal that takes keystrokes, resizes, and reports its exit.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { suiteOptions, useClient } from "./server.mjs";

/** Resolves once `text` matches `pattern`, or rejects after `ms`. */
function waitFor(read, pattern, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const timer = setInterval(() => {
      if (pattern.test(read())) {
        clearInterval(timer);
        resolve();
      } else if (Date.now() - started > ms) {
        clearInterval(timer);
        reject(new Error(`no ${pattern} in ${JSON.stringify(read())}`));
      }
    }, 20);
  });
}

describe("terminals", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600 } });

  test("a shell takes keystrokes, sees its size change, and exits", async () => {
    let output = "";
    const terminal = await ctx.session.pty({ cols: 100, rows: 30, onData: (text) => (output += text) });
    await terminal.write("tty; stty size\n");
    await waitFor(() => output, /\/dev\/pts\/\d+[\s\S]*30 100/);
    await terminal.resize(120, 40);
    await terminal.write("stty size\n");
    await waitFor(() => output, /40 120/);
    await terminal.write("exit 5\n");
    const exit = await terminal.exited;
    assert.equal(exit?.exitCode, 5);
  });

  test("a command runs in place of the shell; closing hangs up", async () => {
    let output = "";
    const terminal = await ctx.session.pty({ command: "echo $TERM; sleep 300" });
    terminal.onData((text) => (output += text));
    await waitFor(() => output, /xterm-256color/);
    terminal.close();
    assert.equal(await terminal.exited, undefined);
    await assert.rejects(ctx.session.pty({ cols: 0 }), RangeError);
  });
});
