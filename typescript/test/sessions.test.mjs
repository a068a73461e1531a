// Sessions: create, list, get, extend, update, delete, and the errors of each.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  Hutch,
  InvalidRequestError,
  Session,
  SessionNotFoundError,
  UnauthorizedError,
} from "@hutch/sdk";

import { mintToken, newTenant, suiteOptions, testServer, useClient } from "./server.mjs";

describe("sessions", suiteOptions(), () => {
  const ctx = useClient();

  test("health and the OpenAPI document need no session", async () => {
    assert.equal((await ctx.hutch.health()).status, "ok");
    const doc = await ctx.hutch.openapi();
    assert.ok("/v1/sessions" in doc.paths);
  });

  test("the token never shows in a logged or serialised client or session", async () => {
    const session = await ctx.hutch.sessions.create({ ttl: 600 });
    const token = ctx.hutch.sessions.handle(session.id).transport?.token ?? session.transport?.token;
    assert.ok(token, "the transport still gives its token to the SDK's own calls");
    const { inspect } = await import("node:util");
    for (const shown of [
      JSON.stringify(session),
      JSON.stringify(ctx.hutch),
      JSON.stringify(ctx.hutch.sessions.handle(session.id)),
      inspect(session, { depth: 10 }),
      inspect(ctx.hutch, { depth: 10 }),
    ]) {
      assert.ok(!shown.includes(token), `the token shows in ${shown.slice(0, 200)}`);
    }
    await session.delete();
  });

  test("a session is created, found, listed, extended, relabelled and deleted", async () => {
    const session = await ctx.hutch.sessions.create({ ttl: 600, metadata: { owner: "ts" }, resources: { memoryMb: 256 } });
    assert.ok(session instanceof Session);
    assert.equal(session.status, "RUNNING");
    assert.deepEqual(session.metadata, { owner: "ts" });
    assert.equal(session.resources.memoryMb, 256);
    assert.ok(session.expiresAt > session.createdAt && !session.isExpired());

    const found = await ctx.hutch.sessions.get(session.id);
    assert.equal(found.id, session.id);
    const page = await ctx.hutch.sessions.list({ limit: 100 });
    assert.ok(page.sessions.some((s) => s.id === session.id));
    assert.equal(page.total, page.sessions.length);

    const extended = await session.extend(3600);
    assert.ok(extended.expiresAt.getTime() - Date.now() > 3000 * 1000);
    const relabelled = await ctx.hutch.sessions.update(session.id, { metadata: { owner: "other" } });
    assert.deepEqual(relabelled.metadata, { owner: "other" });

    const deleted = await ctx.hutch.sessions.delete(session.id);
    assert.equal(deleted.id, session.id);
    await assert.rejects(ctx.hutch.sessions.get(session.id), SessionNotFoundError);
  });

  test("every session of the caller is reached page by page", async () => {
    const created = await Promise.all([1, 2, 3].map(() => ctx.hutch.sessions.create({ ttl: 300 })));
    const seen = [];
    for await (const session of ctx.hutch.sessions.all(2)) seen.push(session.id);
    for (const session of created) assert.ok(seen.includes(session.id));
    await Promise.all(created.map((s) => s.delete()));
  });

  test("another tenant's session is not found", async () => {
    const server = await testServer();
    const other = new Hutch({ url: server.url, token: mintToken(server, newTenant()) });
    const mine = await ctx.hutch.sessions.create({ ttl: 300 });
    try {
      await assert.rejects(other.sessions.get(mine.id), (error) => {
        assert.ok(error instanceof SessionNotFoundError);
        assert.equal(error.status, 404);
        assert.equal(error.code, "session_not_found");
        return true;
      });
    } finally {
      other.close();
      await mine.delete();
    }
  });

  test("a bad token is refused with 401", async () => {
    const server = await testServer();
    const stranger = new Hutch({ url: `${server.url}/v1`, token: "not-a-token" });
    try {
      await assert.rejects(stranger.sessions.list(), UnauthorizedError);
    } finally {
      stranger.close();
    }
  });

  test("values out of range are refused: by the SDK before sending, by the server otherwise", async () => {
    await assert.rejects(ctx.hutch.sessions.create({ ttl: 5 }), RangeError);
    await assert.rejects(ctx.hutch.sessions.list({ limit: 0 }), RangeError);
    const tooMany = Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, "v"]));
    await assert.rejects(ctx.hutch.sessions.create({ ttl: 300, metadata: tooMany }), (error) => {
      assert.ok(error instanceof InvalidRequestError);
      assert.equal(error.status, 400);
      return true;
    });
  });

  test("network egress beyond what the server allows is forbidden", async () => {
    const session = await ctx.hutch.sessions.create({ ttl: 300, network: { egress: "none" } });
    assert.equal(session.status, "RUNNING");
    // Each attempt starts only when awaited: a second one already refused would be an
    // unhandled rejection while the first is awaited.
    for (const attempt of [
      () => ctx.hutch.sessions.create({ ttl: 300, network: { egress: "allow", allow: ["pypi.org"] } }),
      () => session.updateNetwork({ egress: "all" }),
    ]) {
      await assert.rejects(attempt, (error) => {
        assert.equal(error.status, 403);
        assert.equal(error.code, "forbidden");
        return true;
      });
    }
    await session.delete();
  });

  test("the client reads HUTCH_URL and HUTCH_TOKEN", async () => {
    const server = await testServer();
    const saved = { url: process.env.HUTCH_URL, token: process.env.HUTCH_TOKEN };
    process.env.HUTCH_URL = server.url;
    process.env.HUTCH_TOKEN = mintToken(server, newTenant());
    try {
      const fromEnv = new Hutch();
      assert.equal(fromEnv.apiUrl, `${server.url}/v1`);
      assert.equal((await fromEnv.sessions.list()).total, 0);
      fromEnv.close();
      delete process.env.HUTCH_TOKEN;
      assert.throws(() => new Hutch(), /HUTCH_TOKEN/);
    } finally {
      for (const [key, value] of Object.entries({ HUTCH_URL: saved.url, HUTCH_TOKEN: saved.token })) {
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
      }
    }
  });
});
