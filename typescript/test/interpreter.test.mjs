// Interpreter contexts (seed 000): stateful executions whose output, results and errors reach
// callbacks as they come; contexts created, listed, interrupted, restarted and deleted.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { ContextError, Execution, ExecutionTimeoutError, InvalidRequestError } from "@hutch/sdk";

import { suiteOptions, useClient } from "./server.mjs";

describe("interpreter", suiteOptions(), () => {
  const ctx = useClient({ session: { ttl: 600 } });
  let interpreter;
  before(() => {
    interpreter = ctx.session.codeInterpreter();
  });

  test("the default context keeps state; callbacks get stdout and the result", async () => {
    const stdout = [];
    const results = [];
    await interpreter.execute("x = 41 + 1");
    const execution = await interpreter.execute("print(x)\nx * 10", {
      onStdout: (text) => stdout.push(text),
      onResult: (result) => results.push(result.text),
    });
    assert.ok(execution instanceof Execution);
    assert.equal(stdout.join(""), "42\n");
    assert.deepEqual(results, ["420"]);
    assert.equal(execution.text, "420");
    assert.equal(execution.status, "completed");
  });

  test("an exception goes to onError, not to the caller, and the state survives it", async () => {
    const errors = [];
    const execution = await interpreter.execute("y = 1\nundefined_name", {
      onError: (name, value, traceback) => errors.push({ name, value, traceback }),
    });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].name, "NameError");
    assert.match(errors[0].traceback, /undefined_name/);
    assert.equal(execution.error?.name, "NameError");
    assert.equal((await interpreter.execute("y")).text, "1");
  });

  test("contexts are isolated, listed, and deleted", async () => {
    const one = await interpreter.createContext({ cwd: "/workspace/one" });
    const two = await interpreter.createContext({ cwd: "/workspace/two", env: { WHICH: "two" } });
    assert.deepEqual([one.cwd, one.language, one.active], ["/workspace/one", "python", true]);
    await interpreter.execute("config = {'version': '1.0'}", { contextId: one.id });
    await interpreter.execute("config = {'version': '2.0'}", { contextId: two.id });
    const versions = [];
    for (const id of [one.id, two.id]) {
      let printed = "";
      await interpreter.execute("import os\nprint(config['version'], os.getcwd(), os.environ.get('WHICH'))", {
        contextId: id,
        onStdout: (text) => (printed += text),
      });
      versions.push(printed.trim());
    }
    assert.deepEqual(versions, ["1.0 /workspace/one None", "2.0 /workspace/two two"]);
    const listed = (await interpreter.listContexts()).map((c) => c.id);
    assert.ok(listed.includes(one.id) && listed.includes(two.id) && !listed.includes("default"));
    assert.equal((await interpreter.getContext("default")).id, "default");
    await interpreter.deleteContext(one.id);
    await interpreter.deleteContext(two.id);
    assert.deepEqual(await interpreter.listContexts(), []);
    await assert.rejects(interpreter.deleteContext("default"), InvalidRequestError);
  });

  test("an unknown context is a ContextError with status 404", async () => {
    await assert.rejects(interpreter.execute("1", { contextId: "00000000-0000-0000-0000-000000000000" }), (error) => {
      assert.ok(error instanceof ContextError);
      assert.equal(error.status, 404);
      return true;
    });
  });

  test("an execution past its timeout throws ExecutionTimeoutError and the context keeps its state", async () => {
    await interpreter.withContext({}, async (context) => {
      await interpreter.execute("kept = 'yes'", { contextId: context.id });
      await assert.rejects(
        interpreter.execute("import time\nprint('before', flush=True)\ntime.sleep(30)", { contextId: context.id, timeout: 1 }),
        (error) => {
          assert.ok(error instanceof ExecutionTimeoutError);
          assert.equal(error.execution.stdout, "before\n");
          return true;
        },
      );
      assert.equal((await interpreter.execute("kept", { contextId: context.id })).text, "'yes'");
    });
  });

  test("exit() ends the worker; the next execution starts it afresh", async () => {
    await interpreter.withContext({}, async (context) => {
      await interpreter.execute("x = 100", { contextId: context.id });
      const exited = await interpreter.execute("exit()", { contextId: context.id });
      assert.equal(exited.status, "exited");
      const errors = [];
      await interpreter.execute("print(x)", { contextId: context.id, onError: (name) => errors.push(name) });
      assert.deepEqual(errors, ["NameError"]);
    });
  });

  test("interrupt stops a running cell; restart clears the state; history remembers", async () => {
    await interpreter.withContext({ historySize: 10 }, async (context) => {
      await interpreter.execute("a = 1", { contextId: context.id });
      const running = interpreter.execute("import time\nwhile True: time.sleep(0.05)", { contextId: context.id });
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.equal(await interpreter.interrupt(context.id), true);
      const interrupted = await running;
      assert.equal(interrupted.status, "interrupted");
      assert.equal((await interpreter.execute("a", { contextId: context.id })).text, "1");
      const history = await interpreter.history(context.id);
      assert.ok(history.some((entry) => entry.code === "a = 1"));
      await interpreter.restart(context.id);
      const errors = [];
      await interpreter.execute("a", { contextId: context.id, onError: (name) => errors.push(name) });
      assert.deepEqual(errors, ["NameError"]);
    });
  });

  test("JavaScript and Bash contexts; stderr and the final control frame reach their callbacks", async () => {
    const js = await interpreter.createContext({ language: "javascript" });
    await interpreter.execute("let n = 20", { contextId: js.id });
    assert.equal((await interpreter.execute("n + 22", { contextId: js.id })).text, "42");
    const bash = await interpreter.createContext({ language: "bash" });
    const stderr = [];
    const control = [];
    const execution = await interpreter.execute("echo oops >&2; echo fine", {
      contextId: bash.id,
      onStderr: (text) => stderr.push(text),
      onControl: (status) => control.push(status),
    });
    assert.equal(execution.stdout, "fine\n");
    assert.equal(stderr.join(""), "oops\n");
    assert.deepEqual(control, ["completed"]);
    await interpreter.deleteContext(js.id);
    await interpreter.deleteContext(bash.id);
  });

  test("a matplotlib figure comes back as a PNG artifact", async () => {
    const artifacts = [];
    await interpreter.execute(
      "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()",
      { onArtifact: (artifact) => artifacts.push(artifact), timeout: 120 },
    );
    assert.equal(artifacts.length, 1);
    assert.equal(artifacts[0].mimeType, "image/png");
    assert.ok(artifacts[0].data.subarray(1, 4).equals(Buffer.from("PNG")));
  });

  test("frames can be read as an async iterator", async () => {
    const kinds = [];
    for await (const frame of interpreter.frames("print('a')\n7")) {
      if (kinds.at(-1) !== frame.type) kinds.push(frame.type);
    }
    assert.deepEqual(kinds, ["stdout", "result", "control"]);
  });
});
