/** Sessions: create, list, get, update, extend and delete sandboxes (`/v1/sessions`). */

import { Code } from "./code.js";
import { Commands } from "./commands.js";
import { Files } from "./files.js";
import { CodeInterpreter } from "./interpreter.js";
import { Processes } from "./processes.js";
import { Terminal, type TerminalOptions } from "./pty.js";
import { SessionContext } from "./storage.js";
import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** Lifecycle state of a session. */
export type SessionStatus = Schemas["SessionStatus"];

/** Resource limits of a session, as granted. */
export type Resources = Schemas["Resources"];

/** Options of {@link Sessions.create}. */
export interface CreateSessionOptions {
  /** Time to live in seconds, 60..28800; default 300. */
  ttl?: number;
  /** Image name; default `default`. */
  image?: string;
  /** Free-form string labels (at most 32). */
  metadata?: Record<string, string>;
  /** Resource limits; each omitted field takes its default. */
  resources?: Schemas["ResourcesRequest"];
  /** Environment variables of everything the session runs. */
  env?: Record<string, string>;
  /** Storage contexts to bind to paths: downloaded before it runs, uploaded when it ends. */
  contextSyncs?: Schemas["ContextSync"][];
  /** Network egress, `{ egress: "allow", allow: ["pypi.org"] }`; default the server's (`none`). */
  network?: Schemas["NetworkPolicy"];
  /** Pause the session once idle `idleSeconds` (10..28800); the next request resumes it. */
  autoPause?: Schemas["AutoPause"];
}

/** Options of {@link Sessions.update}. */
export interface UpdateSessionOptions {
  /** New time to live in seconds, 60..28800, counted from now. */
  ttl?: number;
  /** New labels (they replace the old ones). */
  metadata?: Record<string, string>;
  /** New network policy, for connections opened from now on. */
  network?: Schemas["NetworkPolicy"];
}

/** One page of sessions. */
export interface SessionList {
  sessions: Session[];
  /** How many sessions the caller has in all (of the status asked for, when filtered). */
  total: number;
  limit: number;
  offset: number;
}

const TTL_MIN = 60;
const TTL_MAX = 28800;

function checkTtl(ttl: number | undefined): void {
  if (ttl !== undefined && !(Number.isInteger(ttl) && ttl >= TTL_MIN && ttl <= TTL_MAX)) {
    throw new RangeError(`ttl must be an integer from ${TTL_MIN} to ${TTL_MAX} seconds, got ${ttl}`);
  }
}

/** Everything inside one session, by id; no request is sent to make one. */
export class SessionHandle {
  /** Shell commands: one-shot, streamed, or in the background. */
  readonly commands: Commands;
  /** Background processes: list, stdin, signals, kill, reattach. */
  readonly processes: Processes;
  /** The session's files. */
  readonly files: Files;
  /** Code runs in a fresh process each (`/code`). */
  readonly code: Code;
  /** Storage-context transfers of this session. */
  readonly context: SessionContext;
  /** `/sessions/{id}`, relative to the API URL. */
  protected readonly path: string;

  constructor(
    protected readonly transport: Transport,
    /** The session's id. */
    readonly id: string,
  ) {
    this.path = `/sessions/${encodeURIComponent(id)}`;
    this.commands = new Commands(transport, this.path);
    this.processes = new Processes(transport, this.path);
    this.files = new Files(transport, this.path);
    this.code = new Code(transport, this.path);
    this.context = new SessionContext(transport, this.path);
  }

  /** The stateful code interpreter of this session (contexts and executions). */
  codeInterpreter(): CodeInterpreter {
    return new CodeInterpreter(this.transport, this.path);
  }

  /** Opens a terminal (a login shell, or `command`), resizable. */
  pty(options: TerminalOptions = {}): Promise<Terminal> {
    return Terminal.open(this.transport, this.path, options);
  }

  /** The session as it is now. */
  async refresh(): Promise<Session> {
    return new Session(this.transport, await this.transport.json<Schemas["Session"]>("GET", this.path));
  }

  /** Sets the time to live to `ttl` seconds from now. */
  async extend(ttl: number): Promise<Session> {
    checkTtl(ttl);
    const data = await this.transport.json<Schemas["Session"]>("PATCH", this.path, { json: { ttl } });
    return new Session(this.transport, data);
  }

  /** Replaces the network policy; connections opened from now on follow it. */
  async updateNetwork(network: Schemas["NetworkPolicy"]): Promise<Session> {
    const data = await this.transport.json<Schemas["Session"]>("PATCH", this.path, { json: { network } });
    return new Session(this.transport, data);
  }

  /** Freezes every process of the session with its state; resolves with it `PAUSED`. */
  async pause(): Promise<Session> {
    const data = await this.transport.json<Schemas["Session"]>("POST", `${this.path}/pause`);
    return new Session(this.transport, data);
  }

  /** Thaws a paused session where it stopped; resolves with it `RUNNING`. */
  async resume(): Promise<Session> {
    const data = await this.transport.json<Schemas["Session"]>("POST", `${this.path}/resume`);
    return new Session(this.transport, data);
  }

  /** What the session's processes use now (memory, CPU time, tasks), from its cgroup. */
  stats(): Promise<Schemas["SessionStats"]> {
    return this.transport.json<Schemas["SessionStats"]>("GET", `${this.path}/stats`);
  }

  /** Deletes the session (its bound storage contexts are uploaded first). */
  async delete(): Promise<Session> {
    const data = await this.transport.json<Schemas["Session"]>("DELETE", this.path, { timeoutMs: 300_000 });
    return new Session(this.transport, data);
  }
}

/** A session as the server last showed it, and everything inside it. */
export class Session extends SessionHandle {
  /** Lifecycle state. */
  readonly status: SessionStatus;
  /** The image it runs. */
  readonly image: string;
  /** Its labels. */
  readonly metadata: Record<string, string>;
  /** Its resource limits. */
  readonly resources: Resources;
  /** When it was created. */
  readonly createdAt: Date;
  /** When it expires and is destroyed. */
  readonly expiresAt: Date;
  /** When it pauses itself; absent when it never does. */
  readonly autoPause?: Schemas["AutoPause"];
  /** When a `PAUSED` session was paused. */
  readonly pausedAt?: Date;

  constructor(transport: Transport, data: Schemas["Session"]) {
    super(transport, data.sessionId);
    this.status = data.status;
    this.image = data.image;
    this.metadata = data.metadata as Record<string, string>;
    this.resources = data.resources;
    this.createdAt = new Date(data.createdAt);
    this.expiresAt = new Date(data.expiresAt);
    if (data.autoPause) this.autoPause = data.autoPause;
    if (data.pausedAt) this.pausedAt = new Date(data.pausedAt);
  }

  /** Whether its expiry time has passed. */
  isExpired(): boolean {
    return this.expiresAt.getTime() <= Date.now();
  }
}

/** The caller's sessions (`/v1/sessions`). */
export class Sessions {
  constructor(private readonly transport: Transport) {}

  /** Creates a session (from the warm pool when one is ready). */
  async create(options: CreateSessionOptions = {}): Promise<Session> {
    checkTtl(options.ttl);
    const body: Schemas["CreateSessionRequest"] = { ...options };
    const data = await this.transport.json<Schemas["Session"]>("POST", "/sessions", {
      json: body,
      timeoutMs: Math.max(this.transport.timeoutMs, 300_000),
    });
    return new Session(this.transport, data);
  }

  /** One page of the caller's sessions, oldest first (`limit` 1..100, default 20). */
  async list(options: { limit?: number; offset?: number; status?: SessionStatus } = {}): Promise<SessionList> {
    const { limit = 20, offset = 0, status } = options;
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 100)) {
      throw new RangeError(`limit must be an integer from 1 to 100, got ${limit}`);
    }
    if (!(Number.isInteger(offset) && offset >= 0)) throw new RangeError(`offset must be 0 or more, got ${offset}`);
    const query = status === undefined ? { limit, offset } : { limit, offset, status };
    const data = await this.transport.json<Schemas["SessionList"]>("GET", "/sessions", { query });
    return { ...data, sessions: data.sessions.map((s) => new Session(this.transport, s)) };
  }

  /** Every session of the caller, page by page. */
  async *all(pageSize = 100): AsyncGenerator<Session, void, undefined> {
    for (let offset = 0; ; offset += pageSize) {
      const page = await this.list({ limit: pageSize, offset });
      yield* page.sessions;
      if (page.sessions.length < pageSize || offset + pageSize >= page.total) return;
    }
  }

  /** One session. */
  get(id: string): Promise<Session> {
    return this.handle(id).refresh();
  }

  /** Changes a session's time to live (counted from now) or its labels. */
  async update(id: string, options: UpdateSessionOptions): Promise<Session> {
    checkTtl(options.ttl);
    const body: Schemas["UpdateSessionRequest"] = { ...options };
    const data = await this.transport.json<Schemas["Session"]>("PATCH", `/sessions/${encodeURIComponent(id)}`, {
      json: body,
    });
    return new Session(this.transport, data);
  }

  /** Sets a session's time to live to `ttl` seconds from now. */
  extend(id: string, ttl: number): Promise<Session> {
    return this.handle(id).extend(ttl);
  }

  /** Pauses a session (see {@link SessionHandle.pause}). */
  pause(id: string): Promise<Session> {
    return this.handle(id).pause();
  }

  /** Resumes a paused session (see {@link SessionHandle.resume}). */
  resume(id: string): Promise<Session> {
    return this.handle(id).resume();
  }

  /** Deletes a session; resolves with it as last seen. */
  delete(id: string): Promise<Session> {
    return this.handle(id).delete();
  }

  /** A handle on a session by id, without a request. */
  handle(id: string): SessionHandle {
    return new SessionHandle(this.transport, id);
  }
}
