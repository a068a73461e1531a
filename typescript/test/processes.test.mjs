// Background processes: start, list, standard input, signals, kill, and a stream that breaks
// off and is reattached from its last sequence number without losing output.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { HutchConnectionError, Process, ProcessNotFoundError } from "@hutch/sdk";

import { suiteOptions, useClient } from "./server.mjs";

describe("processes", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600 } });

  test("a background process is listed, waited for and described", async () => {
    const process = await ctx.session.commands.run("sleep 0.3; echo done", { background: true });
    assert.ok(process instanceof Process);
    const listed = await ctx.session.processes.list();
    assert.ok(listed.some((p) => p.pid === process.pid && p.status === "running"));
    const result = await process.wait();
    assert.equal(result.stdout, "done\n");
    assert.equal(result.exitCode, 0);
    const info = await process.info();
    assert.equal(info.status, "exited");
    assert.equal(info.exitCode, 0);
  });

  test("standard input goes to a running process until it is closed", async () => {
    const process = await ctx.session.processes.start("tr a-z A-Z");
    await process.sendStdin("hello ");
    await process.sendStdin(Buffer.from("world"), { eof: true });
    assert.equal((await process.wait()).stdout, "HELLO WORLD");
    const cat = await ctx.session.processes.start("wc -c");
    await cat.sendStdin("12345");
    await cat.closeStdin();
    assert.equal((await cat.wait()).stdout.trim(), "5");
  });

  test("a signal reaches the process group; kill ends the whole tree", async () => {
    const trapped = await ctx.session.processes.start("trap 'echo got TERM; exit 7' TERM; echo ready; while :; do sleep 0.05; done");
    const stream = await trapped.attach();
    for await (const event of stream) {
      if (event.type === "stdout" && event.text.includes("ready")) break;
    }
    await trapped.signal("TERM");
    const result = await trapped.wait();
    assert.equal(result.exitCode, 7);
    assert.match(result.stdout, /got TERM/);

    const tree = await ctx.session.processes.start("sleep 300 & sleep 300 & wait");
    await tree.kill();
    const info = await tree.info();
    assert.equal(info.status, "exited");
    assert.notEqual(info.signal, null);
  });

  test("a stream that breaks off is reattached from its last sequence number and loses nothing", async () => {
    const count = 40;
    const stream = await ctx.session.commands.stream(`for i in $(seq 1 ${count}); do echo line $i; sleep 0.02; done`);
    const received = [];
    for await (const event of stream) {
      if (event.type === "stdout") received.push(event.text);
      if (received.length >= 5) break; // leaving the loop disconnects; the process runs on
    }
    const from = stream.nextSeq;
    assert.ok(from >= 5);

    const process = ctx.session.processes.get(stream.pid);
    const resumed = await process.attach({ from });
    const rest = [];
    for await (const event of resumed) {
      if (event.type === "stdout") {
        assert.ok(event.seq >= from);
        rest.push(event.text);
      }
    }
    assert.equal(resumed.exit?.exitCode, 0);
    const expected = Array.from({ length: count }, (_, i) => `line ${i + 1}\n`).join("");
    assert.equal(received.join("") + rest.join(""), expected);
  });

  test("an explicit close also lets a reattach pick up where it left off", async () => {
    const stream = await ctx.session.commands.stream("echo one; sleep 0.5; echo two");
    const first = [];
    for await (const event of stream) {
      if (event.type === "stdout") {
        first.push(event.text);
        stream.close();
      }
    }
    assert.deepEqual(first, ["one\n"]);
    const rest = await ctx.session.processes.get(stream.pid).wait({ from: stream.nextSeq });
    assert.equal(rest.stdout, "two\n");
  });

  test("a stream whose session is deleted fails and says why", async () => {
    const session = await ctx.hutch.sessions.create({ ttl: 600 });
    const stream = await session.commands.stream("echo started; sleep 30");
    await assert.rejects(
      async () => {
        for await (const event of stream) {
          // The session goes while its command runs: the stream ends without an exit.
          if (event.type === "stdout") await session.delete();
        }
      },
      (error) =>
        error instanceof HutchConnectionError &&
        /close code 1001: the session's sandbox ended the connection/.test(error.message),
    );
  });

  test("output older than the 1 MiB buffer is reported as truncated, and the rest still comes", async () => {
    const process = await ctx.session.processes.start("head -c 3000000 /dev/zero | tr '\\0' a; echo; echo end");
    for (let i = 0; (await process.info()).status === "running"; i++) {
      assert.ok(i < 200, "the process finishes");
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const stream = await process.attach({ from: 0 });
    const events = [];
    let bytes = 0;
    let tail = "";
    for await (const event of stream) {
      if (event.type === "stdout") {
        bytes += event.data.length;
        tail = (tail + event.text).slice(-16);
      } else events.push(event);
    }
    assert.ok(tail.endsWith("aaa\nend\n"), JSON.stringify(tail));
    assert.equal(events[0].type, "truncated");
    assert.equal(events[0].from, 0);
    assert.ok(events[0].firstAvailable > 0);
    assert.ok(bytes <= 1024 * 1024 + 64 * 1024 && bytes > 0, `${bytes} bytes came`);
    assert.equal(stream.exit?.exitCode, 0);
  });

  test("an unknown pid is process_not_found", async () => {
    await assert.rejects(ctx.session.processes.get(999999).info(), ProcessNotFoundError);
    await assert.rejects(ctx.session.processes.get(999999).attach(), ProcessNotFoundError);
  });
});
