// The lean HTTP/1.1 client (src/wire.ts) against Node's own HTTP server on loopback: kept
// connections, every body framing, a server closing an idle connection, and the timeout.

import assert from "node:assert/strict";
import http from "node:http";
import { after, before, test } from "node:test";

import { Lane, WireTimeout } from "../dist/wire.js";

let server;
let port;
const connections = new Set();
let opened = 0;

before(async () => {
  server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString();
      switch (req.url) {
        case "/echo":
          res.setHeader("content-type", "application/json");
          res.end(JSON.stringify({ method: req.method, body, host: req.headers.host, x: req.headers["x-test"] }));
          break;
        case "/chunked":
          res.write("a\n");
          setImmediate(() => {
            res.write("é".repeat(3));
            res.end("\nb\n");
          });
          break;
        case "/empty":
          res.statusCode = 204;
          res.end();
          break;
        case "/close":
          res.setHeader("connection", "close");
          res.end("bye");
          break;
        case "/slow":
          // Never answered: the client's timeout ends it.
          break;
        default:
          res.statusCode = 404;
          res.end("{\"code\":\"not_found\",\"message\":\"no\"}");
      }
    });
  });
  server.keepAliveTimeout = 60_000;
  server.on("connection", (socket) => {
    opened += 1;
    connections.add(socket);
    socket.on("close", () => connections.delete(socket));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = server.address().port;
});

after(async () => {
  for (const socket of connections) socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});

/** Sends one request on `lane`; resolves with the status and the body as text. */
async function call(lane, method, target, body, timeoutMs = 10_000) {
  const chunks = [];
  const head = await lane.send({
    method,
    target,
    headers: { "x-test": "1" },
    body: body === undefined ? undefined : Buffer.from(body),
    timeoutMs,
    onData: (chunk) => chunks.push(chunk),
  });
  return { status: head.status, headers: head.headers, text: Buffer.concat(chunks).toString("utf8"), chunks };
}

test("requests share one kept connection and carry their bodies", async () => {
  const lane = new Lane("127.0.0.1", port, `127.0.0.1:${port}`);
  const before = opened;
  try {
    for (let i = 0; i < 5; i++) {
      const { status, text } = await call(lane, "POST", "/echo", `{"i":${i}}`);
      assert.equal(status, 200);
      assert.deepEqual(JSON.parse(text), { method: "POST", body: `{"i":${i}}`, host: `127.0.0.1:${port}`, x: "1" });
    }
    assert.equal(opened - before, 1, "one connection for five requests");
  } finally {
    lane.close();
  }
});

test("a chunked answer comes piece by piece, a 204 has no body, an error answer has its status", async () => {
  const lane = new Lane("127.0.0.1", port, `127.0.0.1:${port}`);
  try {
    const chunked = await call(lane, "GET", "/chunked");
    assert.equal(chunked.text, "a\nééé\nb\n");
    assert.ok(chunked.chunks.length >= 2, "the pieces came as they were sent");
    const empty = await call(lane, "DELETE", "/empty");
    assert.equal(empty.status, 204);
    assert.equal(empty.text, "");
    const missing = await call(lane, "GET", "/nowhere");
    assert.equal(missing.status, 404);
    assert.match(missing.text, /not_found/);
    // The connection is still in step after all three.
    assert.equal((await call(lane, "GET", "/echo")).status, 200);
  } finally {
    lane.close();
  }
});

test("a connection the server closes is not used again", async () => {
  const lane = new Lane("127.0.0.1", port, `127.0.0.1:${port}`);
  try {
    assert.equal((await call(lane, "GET", "/close")).text, "bye");
    assert.equal((await call(lane, "POST", "/echo", "x")).status, 200);
    // The server drops every idle connection: the next request still gets through.
    for (const socket of connections) socket.destroy();
    const started = Date.now();
    while (connections.size > 0 && Date.now() - started < 10_000) await new Promise((r) => setImmediate(r));
    assert.equal((await call(lane, "GET", "/echo")).status, 200);
    assert.equal((await call(lane, "POST", "/echo", "y")).status, 200);
  } finally {
    lane.close();
  }
});

test("no answer within the timeout rejects with WireTimeout, and a closed lane refuses", async () => {
  const lane = new Lane("127.0.0.1", port, `127.0.0.1:${port}`);
  await assert.rejects(call(lane, "GET", "/slow", undefined, 200), WireTimeout);
  assert.equal((await call(lane, "GET", "/echo")).status, 200);
  lane.close();
  await assert.rejects(call(lane, "GET", "/echo"), /closed/);
});

test("a header that could end its line is refused before anything is sent", async () => {
  const lane = new Lane("127.0.0.1", port, `127.0.0.1:${port}`);
  const before = opened;
  try {
    const send = (headers) =>
      lane.send({ method: "GET", target: "/echo", headers, timeoutMs: 1000, onData: () => {} });
    await assert.rejects(send({ authorization: "Bearer x\r\nx-evil: 1" }), TypeError);
    await assert.rejects(send({ "x-a\r\nb": "1" }), TypeError);
    assert.equal(opened, before, "no connection was opened");
  } finally {
    lane.close();
  }
});
