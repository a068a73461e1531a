/** Interactive terminals: `WS /sessions/{id}/pty`, a real controlling terminal, resizable. */

import { StringDecoder } from "node:string_decoder";

import { HutchConnectionError } from "./errors.js";
import { type ExitEvent, exitEvent } from "./process-stream.js";
import type { Transport } from "./transport.js";
import { type MessageReader, connect, jsonFrame } from "./ws.js";

/** How much output waits for a terminal's first listener. */
const PENDING_LIMIT = 1024 * 1024;

/** Receives a terminal's output as UTF-8 text. */
export type DataListener = (text: string) => void;

/** Options of a terminal. */
export interface TerminalOptions {
  /** Columns, 1 to 1000; default 80. */
  cols?: number;
  /** Rows, 1 to 1000; default 24. */
  rows?: number;
  /** A shell command line to run instead of a login shell. */
  command?: string;
  /** Called with the terminal's output as it comes. */
  onData?: DataListener;
}

/**
 * A terminal in a session. Its output goes to the `onData` listeners as it comes; `exited`
 * resolves when the program exits (or with undefined once the terminal is closed).
 * Closing the terminal kills everything started in it.
 */
export class Terminal {
  /** Resolves with the program's exit, or with undefined when the terminal closed first. */
  readonly exited: Promise<ExitEvent | undefined>;
  private readonly listeners = new Set<DataListener>();
  /** Output that came while nobody listened, for the first listener (at most 1 MiB). */
  private pending: string[] = [];
  private pendingLength = 0;

  private constructor(private readonly reader: MessageReader, onData?: DataListener) {
    if (onData) this.listeners.add(onData);
    this.exited = this.pump();
  }

  /** Opens a terminal in the session at `sessionPath`. */
  static async open(transport: Transport, sessionPath: string, options: TerminalOptions = {}): Promise<Terminal> {
    for (const [name, value] of [
      ["cols", options.cols],
      ["rows", options.rows],
    ] as const) {
      if (value !== undefined && !(Number.isInteger(value) && value >= 1 && value <= 1000)) {
        throw new RangeError(`${name} must be an integer from 1 to 1000, got ${value}`);
      }
    }
    const reader = await connect(transport, `${sessionPath}/pty`, {
      cols: options.cols,
      rows: options.rows,
      command: options.command,
    });
    return new Terminal(reader, options.onData);
  }

  /**
   * Adds a listener of the output; returns the function that removes it. The first listener
   * also gets what came before it (the last 1 MiB of it).
   */
  onData(listener: DataListener): () => void {
    this.listeners.add(listener);
    const pending = this.pending;
    this.pending = [];
    this.pendingLength = 0;
    for (const text of pending) listener(text);
    return () => this.listeners.delete(listener);
  }

  /** Types into the terminal (text or bytes). */
  write(data: string | Uint8Array): Promise<void> {
    return this.send(typeof data === "string" ? Buffer.from(data) : data, true);
  }

  /** Resizes the terminal (its program gets `SIGWINCH`). */
  resize(cols: number, rows: number): Promise<void> {
    return this.send(JSON.stringify({ type: "resize", cols, rows }), false);
  }

  /** Hangs up: everything started in the terminal is killed. */
  close(): void {
    this.reader.close();
  }

  private async pump(): Promise<ExitEvent | undefined> {
    const decoder = new StringDecoder("utf8");
    const emit = (text: string): void => {
      if (!text) return;
      if (this.listeners.size === 0) {
        this.pending.push(text);
        this.pendingLength += text.length;
        while (this.pendingLength > PENDING_LIMIT && this.pending.length > 1) {
          this.pendingLength -= this.pending.shift()?.length ?? 0;
        }
        return;
      }
      for (const listener of this.listeners) listener(text);
    };
    try {
      for await (const message of this.reader) {
        if (message.binary) {
          emit(decoder.write(message.data));
          continue;
        }
        const frame = jsonFrame(message);
        if (frame?.type === "exit") return exitEvent(frame);
      }
      return undefined;
    } finally {
      emit(decoder.end());
      this.reader.close();
    }
  }

  private send(data: string | Uint8Array, binary: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.reader.ws.send(data, { binary }, (error) =>
        error ? reject(new HutchConnectionError("the terminal is closed", { cause: error })) : resolve(),
      );
    });
  }
}
