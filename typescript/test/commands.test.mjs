// Commands: one-shot, with callbacks, streamed as an async iterator, with standard input.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { CommandResult, InvalidRequestError, SessionNotFoundError } from "@hutch/sdk";

import { suiteOptions, useClient } from "./server.mjs";

describe("commands", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600 } });

  test("a command line runs in a shell; a non-zero exit is a result, not an error", async () => {
    const result = await ctx.session.commands.run("echo out; echo err >&2; exit 3");
    assert.ok(result instanceof CommandResult);
    assert.equal(result.exitCode, 3);
    assert.equal(result.ok, false);
    assert.equal(result.stdout, "out\n");
    assert.equal(result.stderr, "err\n");
    assert.equal(result.timedOut, false);
  });

  test("argv runs without a shell, with cwd, env and stdin", async () => {
    const result = await ctx.session.commands.run(["sh", "-c", 'pwd; echo "$GREETING"; cat'], {
      cwd: "/tmp",
      env: { GREETING: "hello $HOME" },
      stdin: "from stdin",
    });
    assert.equal(result.stdout, "/tmp\nhello $HOME\nfrom stdin");
    const bytes = await ctx.session.commands.run("cat", { stdin: Buffer.from("bytes in") });
    assert.equal(bytes.stdout, "bytes in");
    await assert.rejects(ctx.session.commands.run("cat", { stdin: Buffer.from([0xff]) }), TypeError);
  });

  test("a command past its timeout is killed and says so", async () => {
    const result = await ctx.session.commands.run("sleep 30", { timeout: 0.5 });
    assert.equal(result.timedOut, true);
    assert.notEqual(result.exitCode, 0);
    await assert.rejects(ctx.session.commands.run("true", { timeout: -1 }), RangeError);
    await assert.rejects(ctx.session.commands.run(""), TypeError);
  });

  test("callbacks get the output as it comes", async () => {
    const seen = [];
    const started = Date.now();
    const result = await ctx.session.commands.run("for i in 1 2 3; do echo line $i; sleep 0.5; done; echo bye >&2", {
      onStdout: (text) => seen.push([Date.now() - started, text]),
      onStderr: (text) => seen.push([Date.now() - started, `err:${text}`]),
    });
    assert.equal(result.exitCode, 0);
    assert.equal(result.stdout, "line 1\nline 2\nline 3\n");
    assert.equal(seen.map(([, text]) => text).join(""), "line 1\nline 2\nline 3\nerr:bye\n");
    assert.ok(seen[0][0] < seen.at(-1)[0] - 300, "the first line came well before the last");
  });

  test("a stream is an async iterator of numbered events ending with the exit", async () => {
    const stream = await ctx.session.commands.stream("printf 'a'; printf 'b' >&2; printf 'c'");
    assert.ok(stream.pid > 0);
    const events = [];
    for await (const event of stream) events.push(event);
    const output = events.filter((e) => e.type === "stdout" || e.type === "stderr");
    assert.deepEqual(output.map((e) => e.seq), output.map((_, i) => i));
    assert.equal(output.filter((e) => e.type === "stdout").map((e) => e.text).join(""), "ac");
    assert.deepEqual(events.at(-1), { type: "exit", exitCode: 0, signal: null, durationMs: events.at(-1).durationMs, timedOut: false, oomKilled: false });
    assert.equal(stream.nextSeq, output.length);
  });

  test("a stream writes to standard input, binary-safe, until it is closed", async () => {
    const stream = await ctx.session.commands.stream("od -An -tx1", { openStdin: true });
    await stream.sendStdin(Buffer.from([0, 1, 255]));
    await stream.sendStdin("A");
    await stream.closeStdin();
    const result = await stream.wait();
    assert.equal(result.stdout.trim(), "00 01 ff 41");
  });

  test("a UTF-8 character split across chunks arrives whole", async () => {
    // 65536 bytes of 'x' then 'é': the pipe's chunk boundary falls inside the character.
    const result = await ctx.session.commands.run("head -c 65535 /dev/zero | tr '\\0' x; printf '\\303\\251'", {
      onStdout: () => undefined,
    });
    assert.equal(result.stdout.length, 65536);
    assert.ok(result.stdout.endsWith("xé"));
  });

  test("a stream that cannot start fails with the error the one-shot route answers", async () => {
    await assert.rejects(ctx.session.commands.stream("true", { cwd: "relative/dir" }), InvalidRequestError);
    await assert.rejects(ctx.session.commands.run("true", { cwd: "relative/dir" }), InvalidRequestError);
  });

  test("a command in a deleted session fails with session_not_found", async () => {
    const gone = await ctx.hutch.sessions.create({ ttl: 300 });
    await gone.delete();
    await assert.rejects(gone.commands.run("true"), SessionNotFoundError);
    await assert.rejects(gone.commands.stream("true"), SessionNotFoundError);
  });
});
