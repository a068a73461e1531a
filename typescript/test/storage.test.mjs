// Storage contexts (seed 002): persistent storage bound to a path of a session, synchronised
// on demand (a promise, or a callback) and when the session ends.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { ConflictError, StorageContextNotFoundError } from "@hutch/sdk";

import { suiteOptions, useClient } from "./server.mjs";

describe("storage contexts", suiteOptions(), () => {
  const ctx = useClient();

  test("a context is created, found, listed and deleted", async () => {
    const context = await ctx.hutch.contexts.create("cache");
    assert.deepEqual([context.name, context.version, context.sizeBytes], ["cache", 0, 0]);
    assert.equal((await ctx.hutch.contexts.get(context.id)).name, "cache");
    const page = await ctx.hutch.contexts.list({ limit: 10 });
    assert.ok(page.contexts.some((c) => c.id === context.id));
    await assert.rejects(ctx.hutch.contexts.create("cache"), ConflictError);
    await ctx.hutch.contexts.delete(context.id);
    await assert.rejects(ctx.hutch.contexts.get(context.id), StorageContextNotFoundError);
  });

  test("content synced from one session is there in the next", async () => {
    const context = await ctx.hutch.contexts.create("project");
    const first = await ctx.hutch.sessions.create({ ttl: 600, contextSyncs: [{ contextId: context.id, path: "/workspace/data" }] });
    await first.files.write("/workspace/data/notes.txt", "remember me");

    const result = await first.context.sync();
    assert.equal(result.success, true, result.errorMessage);
    assert.equal(result.tasks[0].status, "Success");
    assert.equal(result.tasks[0].taskType, "upload");
    assert.ok((await ctx.hutch.contexts.get(context.id)).version >= 1);

    await first.files.write("/workspace/data/more.txt", "and me");
    const outcome = await new Promise((resolve, reject) => {
      first.context.sync({ callback: resolve, retryInterval: 100 }).catch(reject);
    });
    assert.equal(outcome, true);
    const tasks = await first.context.info({ contextId: context.id, taskType: "upload" });
    assert.ok(tasks.length >= 2 && tasks.every((task) => task.status === "Success"));
    await first.delete();

    const second = await ctx.hutch.sessions.create({ ttl: 600, contextSyncs: [{ contextId: context.id, path: "/workspace/data" }] });
    assert.equal(await second.files.readText("/workspace/data/notes.txt"), "remember me");
    assert.equal(await second.files.readText("/workspace/data/more.txt"), "and me");
    await second.delete();
    await ctx.hutch.contexts.delete(context.id);
  });
});
