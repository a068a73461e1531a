/** Background processes of a session: start, list, stdin, signals, kill, reattach. */

import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";
import { type Command, type CommandOptions, commandRequest } from "./commands.js";
import { type CommandResult, ProcessStream, type StreamCallbacks } from "./process-stream.js";
import { connect } from "./ws.js";

/** A process of the session, running or exited (`ProcessInfo` of the API). */
export type ProcessInfo = Schemas["ProcessInfo"];

/** A signal by name (`"TERM"`, `"SIGKILL"`) or number (`15`). */
export type Signal = Schemas["SignalSpec"];

/** Options of {@link Process.attach} and {@link Process.wait}. */
export interface AttachOptions extends StreamCallbacks {
  /** The first sequence number wanted: one past the last one received; default 0. */
  from?: number;
}

/** A handle on one process of a session (`/sessions/{id}/processes/{pid}`). */
export class Process {
  constructor(
    private readonly transport: Transport,
    private readonly sessionPath: string,
    /** Its pid inside the sandbox. */
    readonly pid: number,
    /** Its id, unique within the session (pids are reused, ids are not), when known. */
    readonly processId?: number,
  ) {}

  private get path(): string {
    return `${this.sessionPath}/processes/${this.pid}`;
  }

  /** Its current state: running or exited, its exit, and which output is buffered. */
  info(): Promise<ProcessInfo> {
    return this.transport.json<ProcessInfo>("GET", this.path);
  }

  /**
   * Streams its output from `from` (default 0: everything still buffered) until it exits.
   * Output it produced while nobody was attached waits in a 1 MiB buffer; a `truncated`
   * event says when some is gone.
   */
  async attach(options: AttachOptions = {}): Promise<ProcessStream> {
    const from = options.from ?? 0;
    const reader = await connect(this.transport, `${this.path}/stream`, { from });
    return ProcessStream.open(reader, from, options);
  }

  /** Waits for it to exit, streaming its output from `from`; returns its outcome. */
  async wait(options: AttachOptions = {}): Promise<CommandResult> {
    return (await this.attach(options)).wait();
  }

  /** Writes bytes or UTF-8 text (at most 1 MiB) to its standard input; `eof` closes it after. */
  async sendStdin(data: string | Uint8Array, options: { eof?: boolean } = {}): Promise<void> {
    const response = await this.transport.request("POST", `${this.path}/stdin`, {
      body: typeof data === "string" ? Buffer.from(data) : data,
      query: { eof: options.eof ? "true" : undefined },
    });
    response.resume();
  }

  /** Closes its standard input (end of file). */
  closeStdin(): Promise<void> {
    return this.sendStdin(new Uint8Array(0), { eof: true });
  }

  /** Sends a signal to its whole process group (default `TERM`). */
  async signal(signal: Signal = "TERM"): Promise<void> {
    const response = await this.transport.request("POST", `${this.path}/signal`, { json: { signal } });
    response.resume();
  }

  /** Kills it and everything it started (its whole cgroup). */
  async kill(): Promise<void> {
    const response = await this.transport.request("DELETE", this.path);
    response.resume();
  }
}

/** The processes of one session (`/sessions/{id}/processes`). */
export class Processes {
  constructor(
    private readonly transport: Transport,
    private readonly sessionPath: string,
  ) {}

  /** Starts a command in the background; it runs on, detached from the request. */
  async start(cmd: Command, options: CommandOptions = {}): Promise<Process> {
    const started = await this.transport.json<Schemas["StartedProcess"]>("POST", `${this.sessionPath}/commands`, {
      json: { ...commandRequest(cmd, options), background: true },
    });
    return this.get(started.pid, started.processId);
  }

  /** The session's processes: running ones and the most recent finished ones. */
  async list(): Promise<ProcessInfo[]> {
    const data = await this.transport.json<Schemas["ProcessList"]>("GET", `${this.sessionPath}/processes`);
    return data.items;
  }

  /** A handle on the process with this pid (no request is sent). */
  get(pid: number, processId?: number): Process {
    return new Process(this.transport, this.sessionPath, pid, processId);
  }
}
