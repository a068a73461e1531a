// Every TypeScript block of typescript/README.md and README.md type-checks against the SDK's
// declarations and runs as pasted against a real server, so no example can rot.
//
// Blocks are split at their fences as crates/hutch/tests/docs.rs splits them; a block marked
// `<!-- docs-test: skip: WHY -->` on the line before its fence is not run. In
// typescript/README.md every block is `ts` (run), `text`, or marked. In README.md only the
// `ts` blocks are this test's: they carry the skip marker for the Rust docs test (which runs
// shell and Python), and run here.
//
// Each block is written to build/docs/ inside this package (so `import … from "@hutch/sdk"`
// resolves to this checkout), type-checked with the TypeScript compiler, transpiled, and run
// by node with HUTCH_URL and HUTCH_TOKEN of a fresh tenant, as the README tells a reader to
// set them.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, test } from "node:test";

import ts from "typescript";

import { REPO, mintToken, newTenant, suiteOptions, testServer, useClient } from "./server.mjs";

const SKIP_MARKER = "<!-- docs-test: skip: ";
const RUN = new Set(["ts", "typescript"]);
const PACKAGE = join(REPO, "typescript");
const OUT = join(PACKAGE, "build", "docs");

/** The fenced blocks of a Markdown text: language, code, line, skip reason. */
export function blocks(markdown) {
  const out = [];
  let open;
  let previous = "";
  markdown.split("\n").forEach((line, index) => {
    if (open && line.trimStart().startsWith("```")) {
      out.push(open);
      open = undefined;
    } else if (open) {
      open.code += `${line}\n`;
    } else if (line.startsWith("```")) {
      const skip = previous.startsWith(SKIP_MARKER) && previous.endsWith("-->")
        ? previous.slice(SKIP_MARKER.length, -3).trim()
        : undefined;
      open = { language: line.slice(3).trim().split(/\s+/)[0] ?? "", code: "", line: index + 1, skip };
    }
    if (line.trim()) previous = line.trim();
  });
  assert.equal(open, undefined, "a code block is never closed");
  return out;
}

/** The blocks this test runs, each with a file name. */
function runnable() {
  const out = [];
  for (const [file, own] of [["typescript/README.md", true], ["README.md", false]]) {
    for (const block of blocks(readFileSync(join(REPO, file), "utf8"))) {
      const where = `${file}:${block.line}`;
      if (own && !RUN.has(block.language) && block.language !== "text") {
        assert.ok(block.skip, `${where}: a ${block.language || "plain"} block runs here only as ts, or says why not`);
      }
      if (!RUN.has(block.language)) continue;
      if (own && block.skip) continue;
      const name = `${file.replace(/[^a-z]+/gi, "-").toLowerCase()}${block.line}`;
      out.push({ ...block, where, name });
    }
  }
  return out;
}

test("blocks are split at fences, with the marker on the line before", () => {
  const found = blocks("intro\n\n<!-- docs-test: skip: serves forever -->\n```sh\nhutch serve\n```\n\n```ts\nlet x = 1;\n```\n");
  assert.deepEqual(found.map((b) => [b.language, b.skip, b.line]), [["sh", "serves forever", 4], ["ts", undefined, 8]]);
  assert.equal(found[1].code, "let x = 1;\n");
});

describe("README examples", suiteOptions(), () => {
  useClient(); // the server's lifecycle when this file runs alone
  const examples = runnable();

  test("the READMEs have TypeScript examples", () => {
    assert.ok(examples.filter((b) => b.where.startsWith("typescript/")).length >= 5);
    assert.ok(examples.some((b) => b.where.startsWith("README.md")));
  });

  test("every example type-checks against the SDK's declarations", () => {
    rmSync(OUT, { recursive: true, force: true });
    mkdirSync(OUT, { recursive: true });
    const files = examples.map((block) => {
      const path = join(OUT, `${block.name}.ts`);
      writeFileSync(path, block.code);
      return path;
    });
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      types: ["node"],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
    });
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file ? `${d.file.fileName.slice(OUT.length + 1)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}` : "";
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
    });
    assert.deepEqual(diagnostics, []);
  });

  for (const block of examples) {
    test(`${block.where} runs as pasted`, async () => {
      const server = await testServer();
      const js = ts.transpileModule(block.code, {
        compilerOptions: { target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.ESNext },
      }).outputText;
      const path = join(OUT, `${block.name}.mjs`);
      mkdirSync(OUT, { recursive: true });
      writeFileSync(path, js);
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("HUTCH_")));
      env.HUTCH_URL = server.url;
      env.HUTCH_TOKEN = mintToken(server, newTenant());
      try {
        await promisify(execFile)(process.execPath, [path], { env, cwd: PACKAGE, timeout: 180_000 });
      } catch (error) {
        assert.fail(`${block.where} failed:\n${error.stdout}\n${error.stderr}`);
      }
    });
  }
});
