/**
 * The stateful code interpreter of a session: contexts (each one worker process — Python,
 * JavaScript or Bash — with its own state, working directory and environment) and
 * executions whose frames stream to callbacks as they come.
 *
 * ```ts
 * const interpreter = session.codeInterpreter();
 * const ctx = await interpreter.createContext({ cwd: "/workspace/project" });
 * await interpreter.execute("x = 42\nprint(x)", { contextId: ctx.id, onStdout: console.log });
 * await interpreter.deleteContext(ctx.id);
 * ```
 */

import { createInterface } from "node:readline";
import { StringDecoder } from "node:string_decoder";

import { ContextError, ContextNotFoundError, ExecutionTimeoutError, HutchConnectionError } from "./errors.js";
import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** The id of the context used when none is named; it always exists and cannot be deleted. */
export const DEFAULT_CONTEXT = "default";

/** An interpreter context (`Context` of the API). */
export type Context = Schemas["Context"];

/** One past execution of a context. */
export type HistoryEntry = Schemas["HistoryEntry"];

/** One frame of an execution's stream (`Frame` of the API); the last is always `control`. */
export type Frame = Schemas["Frame"];

/** Settings of a new context. */
export interface ContextOptions {
  /** Working directory, absolute, created if missing; default `/workspace`. */
  cwd?: string;
  /** `python` (default), `javascript` or `bash`. */
  language?: string;
  /** Environment variables of the worker. */
  env?: Record<string, string>;
  /** Python only: `auto` (default), `ipython` or `python`. */
  kernel?: string;
  /** Default execution timeout in seconds. */
  timeout?: number;
  /** Memory cap of the worker in MiB. */
  memoryMb?: number;
  /** How many past executions `history()` keeps. */
  historySize?: number;
}

/** A value an execution displayed or ended with, by MIME type (`text/plain`, …). */
export class Result {
  constructor(
    /** MIME type → content (`image/png` as base64). */
    readonly data: Record<string, unknown>,
    /** The cell's execution count. */
    readonly executionCount: number | null = null,
  ) {}

  /** The `text/plain` form, if any. */
  get text(): string | undefined {
    const value = this.data["text/plain"];
    return value === undefined ? undefined : String(value);
  }
}

/** A file an execution produced, such as a matplotlib figure (`image/png`). */
export interface Artifact {
  name: string;
  mimeType: string;
  data: Buffer;
}

/** An exception the executed code raised. */
export interface ExecutionError {
  name: string;
  value: string;
  traceback: string;
}

/** Everything one execution produced. */
export class Execution {
  /** Standard output. */
  stdout = "";
  /** Standard error. */
  stderr = "";
  /** Results, in order. */
  results: Result[] = [];
  /** Artifacts, in order. */
  artifacts: Artifact[] = [];
  /** The exception the code raised, if any (an exception is not thrown by `execute`). */
  error: ExecutionError | undefined;
  /** The cell's execution count. */
  executionCount: number | undefined;
  /** The outcome: `completed`, `interrupted`, `timeout`, `exited` or `crashed`. */
  status: string | undefined;
  /** For `exited`: the worker's exit status. */
  exitCode: number | undefined;
  /** For `crashed`: the signal that killed the worker. */
  signal: number | undefined;
  /** Wall-clock time of the execution in milliseconds. */
  durationMs: number | undefined;

  /** The `text/plain` form of the last result, if any. */
  get text(): string | undefined {
    return this.results.at(-1)?.text;
  }
}

/** Options and callbacks of an execution (the seed's `on_stdout`, `on_error`, … in camelCase). */
export interface ExecuteOptions {
  /** The context; default `default`. */
  contextId?: string;
  /** Environment variables for this execution only. */
  envs?: Record<string, string>;
  /** Seconds before the cell is interrupted; default the context's timeout. */
  timeout?: number;
  /** Packages (`pip` for python, `npm` for javascript) installed first when missing. */
  libraries?: string[];
  /** Standard output text as it comes. */
  onStdout?: (text: string) => void;
  /** Standard error text as it comes. */
  onStderr?: (text: string) => void;
  /** An exception the code raised. */
  onError?: (name: string, value: string, traceback: string) => void;
  /** A result (the last expression's value, or a `display()`). */
  onResult?: (result: Result) => void;
  /** A file the cell produced. */
  onArtifact?: (artifact: Artifact) => void;
  /** The final outcome (`completed`, `interrupted`, `timeout`, `exited`, `crashed`). */
  onControl?: (status: string) => void;
}

/** Interpreter contexts of one session (`/sessions/{id}/interpreter/…`). */
export class CodeInterpreter {
  private readonly base: string;

  constructor(private readonly transport: Transport, sessionPath: string) {
    this.base = `${sessionPath}/interpreter`;
  }

  /** Creates a context and starts its worker. */
  createContext(options: ContextOptions = {}): Promise<Context> {
    const body: Schemas["CreateContextRequest"] = { ...options };
    return this.transport.json<Context>("POST", `${this.base}/contexts`, {
      json: body,
      timeoutMs: Math.max(this.transport.timeoutMs, 60_000),
    });
  }

  /** The contexts created in this session (not `default`), oldest first. */
  async listContexts(): Promise<Context[]> {
    return (await this.transport.json<Schemas["ContextList"]>("GET", `${this.base}/contexts`)).contexts;
  }

  /** One context (`default` included). */
  getContext(contextId: string): Promise<Context> {
    return this.transport.json<Context>("GET", `${this.base}/contexts/${encodeURIComponent(contextId)}`);
  }

  /** Deletes a context and stops its worker. `default` cannot be deleted (400). */
  async deleteContext(contextId: string): Promise<void> {
    await this.transport.json("DELETE", `${this.base}/contexts/${encodeURIComponent(contextId)}`);
  }

  /** Interrupts the running execution (state kept); false when the context was idle. */
  async interrupt(contextId = DEFAULT_CONTEXT): Promise<boolean> {
    const data = await this.transport.json<Schemas["InterruptResult"]>(
      "POST",
      `${this.base}/contexts/${encodeURIComponent(contextId)}/interrupt`,
    );
    return data.interrupted;
  }

  /** Restarts a context's worker: its state starts afresh. */
  restart(contextId = DEFAULT_CONTEXT): Promise<Context> {
    return this.transport.json<Context>("POST", `${this.base}/contexts/${encodeURIComponent(contextId)}/restart`, {
      timeoutMs: Math.max(this.transport.timeoutMs, 60_000),
    });
  }

  /** The context's last executions, newest last. */
  async history(contextId = DEFAULT_CONTEXT, options: { limit?: number } = {}): Promise<HistoryEntry[]> {
    const data = await this.transport.json<Schemas["HistoryList"]>(
      "GET",
      `${this.base}/contexts/${encodeURIComponent(contextId)}/history`,
      { query: { limit: options.limit } },
    );
    return data.executions;
  }

  /** Runs `fn` with a new context and deletes the context afterwards, whatever happens. */
  async withContext<T>(options: ContextOptions, fn: (context: Context) => Promise<T>): Promise<T> {
    const context = await this.createContext(options);
    try {
      return await fn(context);
    } finally {
      await this.deleteContext(context.id).catch((error: unknown) => {
        if (!(error instanceof ContextNotFoundError)) throw error;
      });
    }
  }

  /**
   * The frames of one execution as they come (`for await (const frame of …)`), over one
   * kept-alive HTTP connection (`POST …/interpreter/execute`, NDJSON). The last frame is
   * `control`, or a single `ContextError` error frame for an unknown context.
   */
  async *frames(code: string, options: ExecuteOptions = {}): AsyncGenerator<Frame, void, undefined> {
    const { request, timeoutMs } = executeRequest(code, options);
    const response = await this.transport.request("POST", `${this.base}/execute`, { json: request, timeoutMs });
    const lines = createInterface({ input: response, crlfDelay: Infinity });
    try {
      for await (const line of lines) {
        const frame = parseFrame(line);
        if (frame !== undefined) yield frame;
      }
    } finally {
      lines.close();
      response.destroy();
    }
  }

  /**
   * Executes `code` in a context (`default` when `contextId` is omitted), calling the
   * callbacks as frames come, and resolves with everything gathered in an {@link Execution}.
   *
   * An exception in the code is not thrown: it is `execution.error` (and `onError`). Throws
   * {@link ExecutionTimeoutError} when the timeout passed (the context keeps its state),
   * {@link ContextError} when the context does not exist (`status` 404) or cannot start.
   */
  async execute(code: string, options: ExecuteOptions = {}): Promise<Execution> {
    const execution = new Execution();
    const out: string[] = [];
    const err: string[] = [];
    let contextError: ExecutionError | undefined;
    const apply = (frame: Frame): void => {
      switch (frame.type) {
        case "stdout":
          out.push(frame.text);
          options.onStdout?.(frame.text);
          break;
        case "stderr":
          err.push(frame.text);
          options.onStderr?.(frame.text);
          break;
        case "result": {
          const result = new Result(frame.data as Record<string, unknown>, frame.executionCount ?? null);
          execution.results.push(result);
          if (result.executionCount !== null) execution.executionCount = result.executionCount;
          options.onResult?.(result);
          break;
        }
        case "artifact": {
          const artifact = { name: frame.name, mimeType: frame.mimeType, data: Buffer.from(frame.data, "base64") };
          execution.artifacts.push(artifact);
          options.onArtifact?.(artifact);
          break;
        }
        case "error": {
          const error = { name: frame.name, value: frame.value, traceback: frame.traceback ?? "" };
          if (error.name === "ContextError") {
            contextError = error;
            break;
          }
          execution.error = error;
          options.onError?.(error.name, error.value, error.traceback);
          break;
        }
        case "control":
          execution.status = frame.text;
          execution.executionCount = frame.executionCount ?? execution.executionCount;
          execution.exitCode = frame.exitCode ?? undefined;
          execution.signal = frame.signal ?? undefined;
          execution.durationMs = frame.durationMs;
          options.onControl?.(frame.text);
          break;
      }
    };
    const path = `${this.base}/execute`;
    if (this.transport.lean(path)) {
      // The lean client hands the NDJSON over as it comes: frames are cut from it here.
      const { request, timeoutMs } = executeRequest(code, options);
      const decoder = new StringDecoder("utf8");
      let partial = "";
      await this.transport.exchange("POST", path, { json: request, timeoutMs }, (chunk) => {
        const text = partial + decoder.write(chunk);
        let start = 0;
        for (let end = text.indexOf("\n"); end >= 0; end = text.indexOf("\n", start)) {
          const frame = parseFrame(text.slice(start, end));
          start = end + 1;
          if (frame !== undefined) apply(frame);
        }
        partial = text.slice(start);
      });
      const last = parseFrame(partial + decoder.end());
      if (last !== undefined) apply(last);
    } else {
      for await (const frame of this.frames(code, options)) apply(frame);
    }
    execution.stdout = out.join("");
    execution.stderr = err.join("");
    if (contextError) {
      const missing = contextError.value.startsWith("context not found");
      throw new ContextError(contextError.value, {
        status: missing ? 404 : undefined,
        code: missing ? "context_not_found" : "context_error",
      });
    }
    if (execution.status === "timeout") {
      throw new ExecutionTimeoutError(execution.error?.value ?? "the execution timed out", execution);
    }
    if (execution.status === undefined) {
      throw new HutchConnectionError("the execution ended without its final frame");
    }
    return execution;
  }
}

/** The body and the HTTP timeout of an execution. */
function executeRequest(
  code: string,
  options: ExecuteOptions,
): { request: Schemas["ExecuteRequest"]; timeoutMs: number } {
  const request: Schemas["ExecuteRequest"] = { code };
  if (options.contextId !== undefined) request.contextId = options.contextId;
  if (options.timeout !== undefined) {
    if (!(options.timeout > 0)) throw new RangeError(`timeout must be positive, got ${options.timeout}`);
    request.timeout = options.timeout;
  }
  if (options.envs !== undefined) request.envs = { ...options.envs };
  if (options.libraries?.length) request.libraries = [...options.libraries];
  return { request, timeoutMs: ((options.timeout ?? 300) + 60) * 1000 };
}

/** One NDJSON line as a frame; `undefined` for a blank line. */
function parseFrame(line: string): Frame | undefined {
  if (!line.trim()) return undefined;
  try {
    return JSON.parse(line) as Frame;
  } catch (error) {
    throw new HutchConnectionError("the execution stream sent a line that is not JSON", { cause: error });
  }
}
