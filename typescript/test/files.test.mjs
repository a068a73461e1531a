// Files: read and write (streamed both ways in constant memory), listings, several files at
// once, tar archives, delete, mkdir, move, and the errors of each.

import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import v8 from "node:v8";
import vm from "node:vm";

import { ConflictError, FileNotFoundError, ForbiddenError, NotFoundError } from "@hutch/sdk";

import { suiteOptions, useClient } from "./server.mjs";

v8.setFlagsFromString("--expose-gc");
const gc = vm.runInNewContext("gc");

/** Memory the process holds after a full collection: JS heap and buffers. */
function retained() {
  // The second collection frees the buffers whose owners the first one found dead.
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

const MiB = 1024 * 1024;

describe("files", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600, resources: { diskMb: 512 } } });

  test("text and bytes are written and read back; parents are created", async () => {
    const written = await ctx.session.files.write("/workspace/deep/dir/hello.txt", "héllo\n");
    assert.deepEqual(written, { path: "/workspace/deep/dir/hello.txt", size: 7 });
    assert.equal(await ctx.session.files.readText("/workspace/deep/dir/hello.txt"), "héllo\n");
    const bytes = Buffer.from([0, 1, 2, 255]);
    await ctx.session.files.write("/workspace/bin", bytes, { mode: "0600" });
    assert.deepEqual(await ctx.session.files.read("/workspace/bin"), bytes);
    const info = await ctx.session.files.stat("/workspace/bin");
    assert.deepEqual([info.type, info.size, info.mode], ["file", 4, "0600"]);
  });

  test("a stream whose size option is wrong is refused, and the next call is unharmed", async () => {
    const text = "héllo wörld"; // 11 characters, 13 bytes
    async function* body() {
      yield Buffer.from(text);
    }
    for (const size of [text.length, 20]) {
      await assert.rejects(
        ctx.session.files.write(`/workspace/sized-${size}`, body(), { size, timeoutMs: 10_000 }),
        (err) => /size option/.test(String(err?.message) + String(err?.cause?.message)),
        `size ${size}`,
      );
      // Nothing of it was written, and the kept connection still answers the right call.
      await assert.rejects(ctx.session.files.stat(`/workspace/sized-${size}`), FileNotFoundError);
      await ctx.session.files.write("/workspace/after", "fine");
      assert.equal(await ctx.session.files.readText("/workspace/after"), "fine");
    }
    const exact = await ctx.session.files.write("/workspace/sized", body(), { size: 13 });
    assert.equal(exact.size, 13);
    assert.equal(await ctx.session.files.readText("/workspace/sized"), text);
  });

  test("a range reads part of a file", async () => {
    await ctx.session.files.write("/workspace/digits", "0123456789");
    assert.equal((await ctx.session.files.read("/workspace/digits", { start: 2, end: 4 })).toString(), "234");
    assert.equal((await ctx.session.files.read("/workspace/digits", { start: 7 })).toString(), "789");
    // A range a server would ignore (and answer with the whole file) is refused here.
    await assert.rejects(ctx.session.files.read("/workspace/digits", { start: 5, end: 2 }), RangeError);
    await assert.rejects(ctx.session.files.read("/workspace/digits", { start: -1 }), RangeError);
  });

  test("directories are listed, made, moved and removed", async () => {
    await ctx.session.files.mkdir("/workspace/tree/a/b");
    await ctx.session.files.writeMany({ "/workspace/tree/a/one.txt": "1", "/workspace/tree/two.txt": new Uint8Array([50]) });
    const names = (await ctx.session.files.list("/workspace/tree", { depth: 3 })).map((f) => f.path);
    assert.deepEqual(names.sort(), ["/workspace/tree/a", "/workspace/tree/a/b", "/workspace/tree/a/one.txt", "/workspace/tree/two.txt"]);
    const moved = await ctx.session.files.move("/workspace/tree/two.txt", "/workspace/elsewhere/2.txt");
    assert.equal(moved.path, "/workspace/elsewhere/2.txt");
    assert.equal(await ctx.session.files.exists("/workspace/tree/two.txt"), false);
    await assert.rejects(ctx.session.files.move("/workspace/tree/a/one.txt", "/workspace/elsewhere/2.txt"), ConflictError);
    await ctx.session.files.remove("/workspace/tree", { recursive: true });
    assert.equal(await ctx.session.files.exists("/workspace/tree"), false);
  });

  test("a missing file, a write without its parent and /proc are refused with their codes", async () => {
    await assert.rejects(ctx.session.files.read("/workspace/nope"), (error) => {
      assert.ok(error instanceof FileNotFoundError && error instanceof NotFoundError);
      assert.equal(error.details.path, "/workspace/nope");
      return true;
    });
    await assert.rejects(ctx.session.files.write("/workspace/no/parent.txt", "x", { parents: false }), NotFoundError);
    await assert.rejects(ctx.session.files.write("/workspace/digits", "x", { overwrite: false }), ConflictError);
    await assert.rejects(ctx.session.files.read("/proc/self/environ"), ForbiddenError);
  });

  test("a directory goes out as a tar archive and comes back in", async () => {
    await ctx.session.files.writeMany({ "/workspace/src/a.txt": "A", "/workspace/src/sub/b.txt": "B" });
    const chunks = [];
    for await (const chunk of await ctx.session.files.archive("/workspace/src")) chunks.push(chunk);
    const tar = Buffer.concat(chunks);
    const answer = await ctx.session.files.extractArchive("/workspace/copy", tar);
    assert.equal(answer.entries >= 3, true);
    assert.equal(await ctx.session.files.readText("/workspace/copy/sub/b.txt"), "B");
  });

  test("local files are uploaded and downloaded with progress", async () => {
    const dir = mkdtempSync(join(tmpdir(), "hutch-ts-files-"));
    try {
      const local = join(dir, "up.bin");
      const content = randomBytes(3 * MiB + 17);
      writeFileSync(local, content);
      const progress = [];
      await ctx.session.files.uploadFile(local, "/workspace/up.bin", { onProgress: (done, total) => progress.push([done, total]) });
      assert.deepEqual(progress.at(-1), [content.length, content.length]);
      const back = join(dir, "down.bin");
      const bytes = await ctx.session.files.downloadFile("/workspace/up.bin", back);
      assert.equal(bytes, content.length);
      assert.ok(readFileSync(back).equals(content));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("100 MB go up and come back as streams in constant memory", async (t) => {
    const size = 100 * MiB;
    const block = randomBytes(MiB);
    const sent = createHash("sha256");
    let peak = 0;
    const baseline = retained();
    async function* source() {
      for (let i = 0; i < size / MiB; i++) {
        const chunk = Buffer.from(block);
        chunk.writeUInt32BE(i, 0); // every MiB differs
        sent.update(chunk);
        if (i % 10 === 0) peak = Math.max(peak, retained() - baseline);
        yield chunk;
      }
    }
    const written = await ctx.session.files.write("/workspace/big.bin", source(), { size, timeoutMs: 120_000 });
    assert.equal(written.size, size);

    const received = createHash("sha256");
    let bytes = 0;
    for await (const chunk of await ctx.session.files.readStream("/workspace/big.bin")) {
      received.update(chunk);
      bytes += chunk.length;
      if (bytes % (10 * MiB) < chunk.length) peak = Math.max(peak, retained() - baseline);
    }
    assert.equal(bytes, size);
    assert.equal(received.digest("hex"), sent.digest("hex"));
    // Holding the file would take 100 MiB; a stream holds a few chunks (and what the socket
    // reads ahead before backpressure reaches it).
    t.diagnostic(`memory held while streaming 100 MiB: at most ${(peak / MiB).toFixed(1)} MiB more`);
    assert.ok(peak < 16 * MiB, `memory grew by ${(peak / MiB).toFixed(1)} MiB while streaming 100 MiB`);
    await ctx.session.files.remove("/workspace/big.bin");
  });
});
