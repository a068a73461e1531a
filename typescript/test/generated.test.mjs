// The checked-in types (src/generated/openapi.ts) are what openapi-typescript makes of
// docs/openapi.json today: a change of the API without `npm run generate` fails here.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

import { REPO } from "./server.mjs";

test("the generated types match docs/openapi.json (regenerate with `npm run generate`)", () => {
  const dir = mkdtempSync(join(tmpdir(), "hutch-ts-generated-"));
  try {
    const fresh = join(dir, "openapi.ts");
    const cli = join(REPO, "typescript", "node_modules", "openapi-typescript", "bin", "cli.js");
    execFileSync(process.execPath, [cli, join(REPO, "docs", "openapi.json"), "--output", fresh], {
      stdio: "pipe",
    });
    const checkedIn = readFileSync(join(REPO, "typescript", "src", "generated", "openapi.ts"), "utf8");
    assert.ok(readFileSync(fresh, "utf8") === checkedIn, "src/generated/openapi.ts is out of date: run `npm run generate`");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
