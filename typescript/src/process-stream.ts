/**
 * The event stream of one process over a WebSocket (`…/commands/stream` and
 * `…/processes/{pid}/stream`): numbered output chunks, its exit, and its standard input.
 */

import { StringDecoder } from "node:string_decoder";

import { HutchConnectionError, errorFromEnvelope } from "./errors.js";
import { type MessageReader, jsonFrame } from "./ws.js";

/** Called with each piece of output text as it comes. */
export type OutputCallback = (text: string) => void;

/** The process started: its pid (the `{pid}` of the process routes) and its id. */
export interface StartEvent {
  type: "start";
  pid: number;
  processId: number;
}

/** A chunk of output. `seq` numbers the chunks of both streams together, from 0. */
export interface OutputEvent {
  type: "stdout" | "stderr";
  seq: number;
  /** The bytes of the chunk. */
  data: Buffer;
  /** The chunk decoded as UTF-8 (a character split between chunks comes whole, once). */
  text: string;
}

/** The chunks asked for are no longer buffered: the stream resumes at `firstAvailable`. */
export interface TruncatedEvent {
  type: "truncated";
  from: number;
  firstAvailable: number;
}

/** The process and everything it started are gone; always the last event. */
export interface ExitEvent {
  type: "exit";
  /** Exit status, or null when a signal ended it. */
  exitCode: number | null;
  /** The signal that ended it, or null. */
  signal: number | null;
  durationMs: number;
  timedOut: boolean;
  oomKilled: boolean;
}

/** One event of a process's stream. */
export type ProcessEvent = StartEvent | OutputEvent | TruncatedEvent | ExitEvent;

/** The outcome of a command. A non-zero exit is not an error. */
export class CommandResult {
  /** Exit status; `128 + signal` when a signal ended it. */
  readonly exitCode: number;
  /** Standard output, as UTF-8 text. */
  readonly stdout: string;
  /** Standard error, as UTF-8 text. */
  readonly stderr: string;
  /** Wall-clock run time in milliseconds. */
  readonly durationMs: number;
  /** Whether its timeout ended it. */
  readonly timedOut: boolean;
  /** Whether the output was cut at the server's limit (one-shot commands). */
  readonly truncated: boolean;
  /** Whether the kernel's out-of-memory killer ended it (the session reached `memoryMb`). */
  readonly oomKilled: boolean;
  /** The signal that ended it, if one did. */
  readonly signal: number | null;

  constructor(fields: {
    exitCode?: number | null;
    stdout?: string;
    stderr?: string;
    durationMs?: number;
    timedOut?: boolean;
    truncated?: boolean;
    oomKilled?: boolean;
    signal?: number | null;
  }) {
    this.signal = fields.signal ?? null;
    this.exitCode = fields.exitCode ?? (this.signal !== null ? 128 + this.signal : -1);
    this.stdout = fields.stdout ?? "";
    this.stderr = fields.stderr ?? "";
    this.durationMs = fields.durationMs ?? 0;
    this.timedOut = fields.timedOut ?? false;
    this.truncated = fields.truncated ?? false;
    this.oomKilled = fields.oomKilled ?? false;
  }

  /** Whether it exited with status 0. */
  get ok(): boolean {
    return this.exitCode === 0;
  }
}

/** Callbacks and options of a process stream. */
export interface StreamCallbacks {
  /** Called with standard output text as it comes. */
  onStdout?: OutputCallback;
  /** Called with standard error text as it comes. */
  onStderr?: OutputCallback;
}

/**
 * A live process stream: iterate over it (`for await (const event of stream)`) or call
 * {@link ProcessStream.wait}. `nextSeq` is one past the last chunk received, so a stream that
 * broke off is resumed with `process.attach({ from: stream.nextSeq })` without losing output.
 */
export class ProcessStream implements AsyncIterable<ProcessEvent> {
  /** The process's pid inside the sandbox. */
  readonly pid: number;
  /** The process's id, unique within the session. */
  readonly processId: number;
  /** One past the sequence number of the last chunk received. */
  nextSeq: number;
  /** The exit event, once it came. */
  exit: ExitEvent | undefined;
  private readonly reader: MessageReader;
  private readonly decoders = {
    stdout: new StringDecoder("utf8"),
    stderr: new StringDecoder("utf8"),
  };
  private consumed = false;
  private closedByUs = false;

  private constructor(
    reader: MessageReader,
    start: StartEvent,
    from: number,
    private readonly callbacks: StreamCallbacks,
  ) {
    this.reader = reader;
    this.pid = start.pid;
    this.processId = start.processId;
    this.nextSeq = from;
  }

  /**
   * Reads the first event of a freshly opened stream: `start`, or the `error` that stands
   * for a request that could not start (thrown as the SDK's error).
   */
  static async open(reader: MessageReader, from: number, callbacks: StreamCallbacks): Promise<ProcessStream> {
    // Read by hand: leaving a for-await loop would close the socket.
    for (let next = await reader.next(); !next.done; next = await reader.next()) {
      const frame = jsonFrame(next.value);
      if (!frame) continue;
      if (frame.type === "error") {
        reader.close();
        throw streamError(frame);
      }
      if (frame.type === "start") {
        const start: StartEvent = {
          type: "start",
          pid: Number(frame.pid),
          processId: Number(frame.processId),
        };
        return new ProcessStream(reader, start, from, callbacks);
      }
    }
    throw new HutchConnectionError(
      `the process stream closed before the process started (close code ${reader.closeCode})`,
    );
  }

  /** The events after `start`, until `exit`. A stream can be iterated once. */
  async *[Symbol.asyncIterator](): AsyncGenerator<ProcessEvent, void, undefined> {
    if (this.consumed) throw new TypeError("a process stream can be read once");
    this.consumed = true;
    try {
      for await (const message of this.reader) {
        const frame = jsonFrame(message);
        if (!frame) continue;
        for (const event of this.events(frame)) {
          yield event;
          if (event.type === "exit") return;
        }
      }
    } finally {
      this.reader.close();
    }
    if (!this.exit && !this.closedByUs) {
      throw new HutchConnectionError(
        `the stream of process ${this.pid} ended before it exited (close code ${this.reader.closeCode}` +
          `${this.reader.closeReason ? `: ${this.reader.closeReason}` : ""}); ` +
          `reattach with from=${this.nextSeq}`,
      );
    }
  }

  /** Reads the stream to the end and returns the process's outcome with its whole output. */
  async wait(): Promise<CommandResult> {
    const out: string[] = [];
    const err: string[] = [];
    for await (const event of this) {
      if (event.type === "stdout") out.push(event.text);
      else if (event.type === "stderr") err.push(event.text);
    }
    if (!this.exit) {
      throw new HutchConnectionError(`the stream of process ${this.pid} was closed before it exited`);
    }
    return new CommandResult({ ...this.exit, stdout: out.join(""), stderr: err.join("") });
  }

  /** Writes bytes (or UTF-8 text) to the process's standard input. */
  sendStdin(data: string | Uint8Array): Promise<void> {
    return new Promise((resolve, reject) => {
      this.reader.ws.send(typeof data === "string" ? Buffer.from(data) : data, { binary: true }, (error) =>
        error ? reject(new HutchConnectionError("writing to standard input failed", { cause: error })) : resolve(),
      );
    });
  }

  /** Closes the process's standard input (end of file). */
  closeStdin(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.reader.ws.send(JSON.stringify({ type: "eof" }), (error) =>
        error ? reject(new HutchConnectionError("closing standard input failed", { cause: error })) : resolve(),
      );
    });
  }

  /** Disconnects. The process runs on: reattach with `process.attach({ from: nextSeq })`. */
  close(): void {
    this.closedByUs = true;
    this.reader.close();
  }

  private events(frame: Record<string, unknown>): ProcessEvent[] {
    switch (frame.type) {
      case "stdout":
      case "stderr": {
        const kind = frame.type;
        const seq = Number(frame.seq);
        const data = Buffer.from(String(frame.data ?? ""), "base64");
        this.nextSeq = Math.max(this.nextSeq, seq + 1);
        const text = this.decoders[kind].write(data);
        const callback = kind === "stdout" ? this.callbacks.onStdout : this.callbacks.onStderr;
        if (callback && text) callback(text);
        return [{ type: kind, seq, data, text }];
      }
      case "truncated": {
        const firstAvailable = Number(frame.firstAvailable);
        this.nextSeq = Math.max(this.nextSeq, firstAvailable);
        return [{ type: "truncated", from: Number(frame.from), firstAvailable }];
      }
      case "exit": {
        // An incomplete character at the very end comes as a replacement character.
        const out: ProcessEvent[] = [];
        for (const kind of ["stdout", "stderr"] as const) {
          const tail = this.decoders[kind].end();
          if (!tail) continue;
          const callback = kind === "stdout" ? this.callbacks.onStdout : this.callbacks.onStderr;
          if (callback) callback(tail);
          out.push({ type: kind, seq: this.nextSeq - 1, data: Buffer.alloc(0), text: tail });
        }
        this.exit = exitEvent(frame);
        out.push(this.exit);
        return out;
      }
      case "error":
        throw streamError(frame);
      default:
        return [];
    }
  }
}

/** Parses an `exit` event. */
export function exitEvent(frame: Record<string, unknown>): ExitEvent {
  return {
    type: "exit",
    exitCode: typeof frame.exitCode === "number" ? frame.exitCode : null,
    signal: typeof frame.signal === "number" ? frame.signal : null,
    durationMs: Number(frame.durationMs ?? 0),
    timedOut: frame.timedOut === true,
    oomKilled: frame.oomKilled === true,
  };
}

/** The SDK error for an `error` event (`{"type": "error", "error": {code, message, details}}`). */
function streamError(frame: Record<string, unknown>): Error {
  const detail = frame.error;
  if (detail && typeof detail === "object") return errorFromEnvelope(detail);
  return errorFromEnvelope({ message: String(frame.message ?? "the process stream failed") });
}
