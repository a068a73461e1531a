// Code runs: a snippet in a fresh process, in Python, JavaScript or Bash.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { suiteOptions, useClient } from "./server.mjs";

describe("code", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600 } });

  test("each language runs in a fresh process", async () => {
    const python = await ctx.session.code.run("python", "import os\nprint(6 * 7, os.environ['WHO'])", { env: { WHO: "py" } });
    assert.equal(python.stdout, "42 py\n");
    assert.ok(python.ok);
    const js = await ctx.session.code.run("javascript", "console.log([1, 2, 3].map((x) => x * 2).join(','))");
    assert.equal(js.stdout, "2,4,6\n");
    const bash = await ctx.session.code.run("bash", "echo $((1 + 1)); exit 4");
    assert.deepEqual([bash.stdout, bash.exitCode], ["2\n", 4]);
  });

  test("an exception is a failed run; a run past its timeout is killed", async () => {
    const failed = await ctx.session.code.run("python", "raise ValueError('nope')");
    assert.equal(failed.exitCode, 1);
    assert.match(failed.stderr, /ValueError: nope/);
    const slow = await ctx.session.code.run("python", "import time; time.sleep(30)", { timeout: 0.5 });
    assert.equal(slow.timedOut, true);
    await assert.rejects(ctx.session.code.run("ruby", "puts 1"), RangeError);
  });
});
