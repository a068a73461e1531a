// A real `hutch serve` for the SDK's tests.
//
// The binary is $HUTCH_BIN, else target/debug/hutch (then target/release/hutch) of this
// checkout. Each server gets a private data directory and a free loopback port; tokens are
// minted with `hutch token` on that data directory. `npm test` (test/run.mjs) starts one
// server for every test file and passes it on in HUTCH_TEST_SERVER; a test file run alone
// (`node --test test/files.test.mjs`) starts its own. Sandboxes need root: without it (or
// without a binary) the tests are skipped, except under CI=true where that is a failure.

import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before } from "node:test";

import { Hutch } from "@hutch/sdk";

import { startHutch } from "./hutch-serve.mjs";

/** The checkout's root. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");

const SECRET = "test-secret-for-hutch-typescript-sdk-tests";

/** The hutch binary, or undefined. */
export function hutchBinary() {
  if (process.env.HUTCH_BIN) return process.env.HUTCH_BIN;
  for (const profile of ["debug", "release"]) {
    const candidate = join(REPO, "target", profile, "hutch");
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

/** Why the tests cannot run here, or undefined when they can. */
export function unavailable() {
  const binary = hutchBinary();
  if (!binary || !existsSync(binary)) {
    return "no hutch binary: build it (cargo build -p hutch) or set HUTCH_BIN";
  }
  if (process.getuid?.() !== 0) return "sandbox tests need root";
  return undefined;
}

/** The environment of `hutch` commands: no HUTCH_* of the caller, the tests' secret. */
function hutchEnv() {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HUTCH_")));
  return { ...env, HUTCH_JWT_SECRET: SECRET, HUTCH_LOG: "warn" };
}

/** Starts `hutch serve` on a free port with a fresh data directory; resolves once healthy. */
export function startServer(args = []) {
  return startHutch(hutchBinary(), hutchEnv(), args);
}

let shared;
let ownServer;

/**
 * The server of this test run: the one test/run.mjs started (HUTCH_TEST_SERVER), or one
 * started for this file (stopped by the `after` hook of {@link useClient}).
 */
export async function testServer() {
  if (shared) return shared;
  if (process.env.HUTCH_TEST_SERVER) {
    shared = JSON.parse(process.env.HUTCH_TEST_SERVER);
    return shared;
  }
  ownServer = await startServer(["--warm-pool", "2"]);
  shared = ownServer;
  return shared;
}

/** A token for `tenant`, minted by `hutch token`. */
export function mintToken(server, tenant, ...extra) {
  return execFileSync(
    hutchBinary(),
    ["token", "--sub", tenant, "--ttl", "1h", "--data-dir", server.dataDir, ...extra],
    { env: hutchEnv(), encoding: "utf8" },
  ).trim();
}

/** A tenant name no other test uses. */
export function newTenant() {
  return `t-${randomUUID().slice(0, 12)}`;
}

/**
 * `node:test` options for a suite that needs a server: `skip` names why it cannot run here
 * (under CI=true that is a failure instead).
 */
export function suiteOptions() {
  const why = unavailable();
  if (why && process.env.CI === "true") throw new Error(`the SDK tests cannot run under CI: ${why}`);
  return why ? { skip: why } : {};
}

/**
 * Call in a `describe` body: before its tests, `ctx.hutch` becomes a client of a fresh tenant
 * on the test server (`ctx.server`), and with `session` options `ctx.session` a session
 * created with them; after the tests, the sessions the tenant left are deleted, the client
 * closed, and a server started for this file alone stopped.
 */
export function useClient(options = {}) {
  const ctx = {};
  before(async () => {
    ctx.server = await testServer();
    ctx.hutch = new Hutch({ url: ctx.server.url, token: mintToken(ctx.server, newTenant()) });
    if (options.session) ctx.session = await ctx.hutch.sessions.create(options.session);
  });
  after(async () => {
    if (ctx.hutch) {
      const left = [];
      for await (const session of ctx.hutch.sessions.all()) left.push(session);
      await Promise.all(left.map((session) => session.delete().catch(() => undefined)));
      ctx.hutch.close();
    }
    if (ownServer) {
      await ownServer.stop();
      ownServer = undefined;
      shared = undefined;
    }
  });
  return ctx;
}
