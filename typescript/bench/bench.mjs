// Per-call overhead of the TypeScript SDK beside the Rust client, in the same run against
// the same server: `x = 1 + 1` through an interpreter context and `true` through commands.
//
//   npm run bench                      200 measured calls each (after 10 unmeasured)
//   npm run bench -- --quick           20 calls: checks that it runs, the figures mean little
//   npm run bench -- --url URL --token TOKEN   a running server instead of starting one
//   node bench/bench.mjs --json --url URL --token TOKEN   one JSON object per case and line,
//                                      {"client", "case", "p50_ms", "p99_ms", "n", "cpu_ms"}, and no
//                                      Rust run (what `hutch bench clients` reads)
//
// Without --url it starts a server as the tests do (HUTCH_BIN or target/debug/hutch). The
// Rust figures come from `hutch bench interpreter|commands --url …` run against that server.

import { execFileSync } from "node:child_process";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";

import { Hutch } from "@hutch/sdk";

import { hutchBinary, mintToken, startServer, unavailable } from "../test/server.mjs";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    json: { type: "boolean", default: false },
    iterations: { type: "string" },
    warmup: { type: "string" },
    url: { type: "string" },
    token: { type: "string" },
  },
});
const iterations = Number(values.iterations ?? (values.quick ? 20 : 200));
const warmup = Number(values.warmup ?? (values.quick ? 3 : 10));

/** p50 and p99 of a list of milliseconds. */
function percentiles(samples) {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  return { p50: at(0.5), p99: at(0.99) };
}

/** Times `call` `iterations` times after `warmup` unmeasured calls; `cpu` is this process's
 * CPU time per call, in ms. */
async function measure(call) {
  for (let i = 0; i < warmup; i++) await call();
  const samples = [];
  const cpu = process.cpuUsage();
  for (let i = 0; i < iterations; i++) {
    const started = performance.now();
    await call();
    samples.push(performance.now() - started);
  }
  const used = process.cpuUsage(cpu);
  return { ...percentiles(samples), cpu: (used.user + used.system) / 1000 / iterations };
}

/** The p50 and p99 (ms) of the line of `hutch bench` output that starts with `label`. */
function rustFigure(output, label) {
  const line = output.split("\n").find((l) => l.trim().startsWith(label));
  const match = line && /([\d.]+) ms\s+([\d.]+) ms/.exec(line);
  return match ? { p50: Number(match[1]), p99: Number(match[2]) } : undefined;
}

let server;
let url = values.url;
let token = values.token ?? process.env.HUTCH_TOKEN;
if (!url) {
  const why = unavailable();
  if (why) {
    console.log(`bench: skipped (${why})`);
    process.exit(process.env.CI === "true" ? 1 : 0);
  }
  server = await startServer(["--warm-pool", "2"]);
  url = server.url;
  token = mintToken(server, "bench");
}

const hutch = new Hutch({ url, token });
const rows = [];
try {
  const session = await hutch.sessions.create({ ttl: 900 });
  const interpreter = session.codeInterpreter();
  const context = await interpreter.createContext({ kernel: "python" });
  const execute = await measure(() => interpreter.execute("x = 1 + 1", { contextId: context.id }));
  const command = await measure(() => session.commands.run("true"));
  rows.push(["TypeScript: x = 1 + 1 (interpreter context, kept connection)", execute]);
  rows.push(["TypeScript: commands.run(\"true\") (kept connection)", command]);
  await session.delete();
  if (values.json) {
    for (const [name, { p50, p99, cpu }] of [["execute x = 1 + 1", execute], ["commands true", command]]) {
      console.log(
        JSON.stringify({ client: "typescript", case: name, p50_ms: p50, p99_ms: p99, n: iterations, cpu_ms: cpu }),
      );
    }
  }

  const binary = values.json ? undefined : hutchBinary();
  if (binary) {
    const args = ["--url", url, "--token", token, "--iterations", String(iterations), "--warmup", String(warmup)];
    const run = (scenario) =>
      execFileSync(binary, ["bench", scenario, ...args, ...(values.quick ? ["--quick"] : [])], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "inherit"],
      });
    const interp = rustFigure(run("interpreter"), "hutch plain: x = 1 + 1");
    const commands = rustFigure(run("commands"), "hutch: POST /commands");
    if (interp) rows.push(["Rust client (hutch bench interpreter): x = 1 + 1", interp]);
    if (commands) rows.push(["Rust client (hutch bench commands): POST /commands true", commands]);
  }
} finally {
  hutch.close();
  await server?.stop();
}

if (values.json) process.exit(0);
console.log(`per-call latency, ${iterations} calls after ${warmup} unmeasured, server ${url}\n`);
console.log(`${"".padEnd(64)}${"p50".padStart(10)}${"p99".padStart(11)}`);
for (const [label, { p50, p99 }] of rows) {
  console.log(`${label.padEnd(64)}${p50.toFixed(2).padStart(7)} ms${p99.toFixed(2).padStart(8)} ms`);
}
if (values.quick) console.log("quick mode: too few calls to compare the figures");
