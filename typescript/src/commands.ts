/** Shell commands in a session: one-shot, streamed, or in the background. */

import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";
import { CommandResult, type OutputCallback, ProcessStream } from "./process-stream.js";
import { Process } from "./processes.js";
import { connect } from "./ws.js";

/** A command line run by `/bin/sh -c`, or a program and its arguments run without a shell. */
export type Command = string | readonly string[];

/** Options of a command. */
export interface CommandOptions {
  /** Working directory (absolute); default `/workspace`. */
  cwd?: string;
  /** Environment variables added for this command. */
  env?: Record<string, string>;
  /** Seconds before the command and everything it started are killed; default 60. */
  timeout?: number;
  /** Text (or UTF-8 bytes) written to its standard input, which is then closed. */
  stdin?: string | Uint8Array;
}

/** Options of {@link Commands.run}. */
export interface RunOptions extends CommandOptions {
  /** Streams standard output to this callback as it comes. */
  onStdout?: OutputCallback;
  /** Streams standard error to this callback as it comes. */
  onStderr?: OutputCallback;
  /** Start it in the background and return a {@link Process} at once. */
  background?: boolean;
}

/** Options of {@link Commands.stream}. */
export interface StreamOptions extends CommandOptions {
  /** Called with standard output text as it comes. */
  onStdout?: OutputCallback;
  /** Called with standard error text as it comes. */
  onStderr?: OutputCallback;
  /**
   * Keep standard input open for {@link ProcessStream.sendStdin} (without it, and without
   * `stdin`, the command reads end of file at once, as a one-shot command does).
   */
  openStdin?: boolean;
}

/** The HTTP timeout for a command that may run `timeout` seconds. */
export function commandHttpTimeoutMs(timeout: number | undefined): number {
  return ((timeout ?? 60) + 30) * 1000;
}

/**
 * The body of `POST …/commands` and the first message of `…/commands/stream` (the API's
 * `CommandRequest`, whose generated type spells `argv` as a one-element tuple).
 */
export interface CommandBody {
  command?: string;
  argv?: string[];
  cwd?: string;
  env?: Record<string, string>;
  timeout?: number;
  stdin?: string;
  background?: boolean;
}

/** Builds the command's request body, checking what the server would refuse. */
export function commandRequest(cmd: Command, options: CommandOptions): CommandBody {
  const body: CommandBody = {};
  if (typeof cmd === "string") {
    if (!cmd) throw new TypeError("the command must not be empty");
    body.command = cmd;
  } else {
    if (cmd.length === 0 || !cmd[0]) throw new TypeError("argv must name a program");
    body.argv = [...cmd];
  }
  if (options.cwd !== undefined) body.cwd = options.cwd;
  if (options.env !== undefined) body.env = { ...options.env };
  if (options.timeout !== undefined) {
    if (!(options.timeout > 0)) throw new RangeError(`timeout must be positive, got ${options.timeout}`);
    body.timeout = options.timeout;
  }
  if (options.stdin !== undefined) {
    body.stdin =
      typeof options.stdin === "string" ? options.stdin : new TextDecoder("utf-8", { fatal: true }).decode(options.stdin);
  }
  return body;
}

/** Runs commands in one session (`/sessions/{id}/commands`). */
export class Commands {
  constructor(
    private readonly transport: Transport,
    private readonly sessionPath: string,
  ) {}

  /**
   * Runs a command and waits for it. A non-zero exit is not an error. With `onStdout` or
   * `onStderr` the output streams to them as it comes (over the WebSocket stream); with
   * `background: true` it returns a {@link Process} at once.
   */
  run(cmd: Command, options: RunOptions & { background: true }): Promise<Process>;
  run(cmd: Command, options?: RunOptions & { background?: false }): Promise<CommandResult>;
  async run(cmd: Command, options: RunOptions = {}): Promise<CommandResult | Process> {
    const body = commandRequest(cmd, options);
    if (options.background) {
      const started = await this.transport.json<Schemas["StartedProcess"]>(
        "POST",
        `${this.sessionPath}/commands`,
        { json: { ...body, background: true } },
      );
      return new Process(this.transport, this.sessionPath, started.pid, started.processId);
    }
    if (options.onStdout || options.onStderr) {
      const stream = await this.stream(cmd, options);
      return stream.wait();
    }
    const data = await this.transport.json<Schemas["CommandResponse"]>("POST", `${this.sessionPath}/commands`, {
      json: body,
      timeoutMs: commandHttpTimeoutMs(options.timeout),
    });
    return new CommandResult(data as Schemas["CommandResult"]);
  }

  /**
   * Starts a command over the WebSocket stream and resolves once it started: iterate over
   * the returned stream for its events, or `await stream.wait()`. The command is a process of
   * the session: it runs on when the stream is closed, and `process.attach()` resumes it.
   */
  async stream(cmd: Command, options: StreamOptions = {}): Promise<ProcessStream> {
    const body = commandRequest(cmd, options);
    const reader = await connect(this.transport, `${this.sessionPath}/commands/stream`);
    reader.ws.send(JSON.stringify(body));
    if (options.stdin === undefined && !options.openStdin) reader.ws.send(JSON.stringify({ type: "eof" }));
    return ProcessStream.open(reader, 0, options);
  }
}
