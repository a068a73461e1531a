// The SDK's error table agrees with the server's error codes in docs/openapi.json: one class
// per code, and the HTTP status each code answers with.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import {
  ApiError,
  ERROR_CLASSES,
  HutchError,
  NotFoundError,
  QuotaExceededError,
  RateLimitError,
  SessionNotFoundError,
  errorFromResponse,
} from "@hutch/sdk";

import { REPO } from "./server.mjs";

const openapi = JSON.parse(readFileSync(join(REPO, "docs", "openapi.json"), "utf8"));

/** code → HTTP status, from the responses whose description starts with "`code`:". */
function documentedStatuses() {
  const byName = {};
  for (const [name, response] of Object.entries(openapi.components.responses)) {
    const match = /^`([a-z_]+)`/.exec(response.description ?? "");
    if (match) byName[name] = match[1];
  }
  const statuses = {};
  for (const item of Object.values(openapi.paths)) {
    for (const operation of Object.values(item)) {
      for (const [status, response] of Object.entries(operation.responses ?? {})) {
        const name = response.$ref?.split("/").at(-1);
        const code = byName[name];
        if (code) (statuses[code] ??= new Set()).add(Number(status));
      }
    }
  }
  return statuses;
}

test("the error table has a class for every error code of the OpenAPI document, and no other", () => {
  const codes = openapi.components.schemas.ErrorCode.enum;
  assert.deepEqual(Object.keys(ERROR_CLASSES).sort(), [...codes].sort());
  for (const [code, [status, Class]] of Object.entries(ERROR_CLASSES)) {
    assert.ok(Class.prototype instanceof ApiError, `${code}: ${Class.name} is an ApiError`);
    assert.ok(status >= 400 && status < 600, `${code}: ${status} is an error status`);
  }
});

test("each code's status is the one the OpenAPI document answers it with", () => {
  const documented = documentedStatuses();
  assert.ok(Object.keys(documented).length >= 15, "the document names the codes of its responses");
  for (const [code, statuses] of Object.entries(documented)) {
    assert.ok(code in ERROR_CLASSES, `${code} is in the table`);
    assert.deepEqual([...statuses], [ERROR_CLASSES[code][0]], `${code} answers ${[...statuses]}`);
  }
});

test("an error answer becomes the class of its code, with its message, details and headers", () => {
  const body = JSON.stringify({
    error: { code: "session_not_found", message: "no session 42", details: { id: "42" } },
  });
  const error = errorFromResponse(404, { "x-request-id": "req-1" }, body);
  assert.ok(error instanceof SessionNotFoundError);
  assert.ok(error instanceof NotFoundError && error instanceof HutchError);
  assert.equal(error.name, "SessionNotFoundError");
  assert.equal(error.status, 404);
  assert.equal(error.code, "session_not_found");
  assert.equal(error.message, "no session 42");
  assert.deepEqual(error.details, { id: "42" });
  assert.equal(error.requestId, "req-1");
});

test("a rate limit carries its headers; a quota is a rate limit too", () => {
  const headers = { "ratelimit-limit": "10", "ratelimit-remaining": "0", "ratelimit-reset": "3", "retry-after": "3" };
  const limited = errorFromResponse(429, headers, JSON.stringify({ error: { code: "rate_limited", message: "slow down" } }));
  assert.ok(limited instanceof RateLimitError);
  assert.deepEqual([limited.limit, limited.remaining, limited.reset, limited.retryAfter], [10, 0, 3, 3]);
  const quota = errorFromResponse(429, {}, JSON.stringify({ error: { code: "quota_exceeded", message: "full" } }));
  assert.ok(quota instanceof QuotaExceededError && quota instanceof RateLimitError);
});

test("an answer without an envelope keeps its status, its header's code and its text", () => {
  const error = errorFromResponse(404, { "x-hutch-error-code": "file_not_found" }, "gone");
  assert.equal(error.constructor.name, "FileNotFoundError");
  assert.equal(error.message, "gone");
  const plain = errorFromResponse(418, {}, "");
  assert.ok(plain instanceof ApiError);
  assert.equal(plain.message, "HTTP 418");
});
