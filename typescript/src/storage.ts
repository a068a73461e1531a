/**
 * Storage contexts: named persistent storage of a tenant, synchronised into sessions.
 *
 * `hutch.contexts` creates, lists and deletes them (`/v1/contexts`); a session binds them to
 * paths with `hutch.sessions.create({ contextSyncs: [{ contextId, path }] })`, and
 * `session.context` shows (`info`) and triggers (`sync`) the transfers.
 */

import type { Transport } from "./transport.js";
import type { Schemas } from "./types.js";

/** A storage context. */
export type StorageContext = Schemas["StorageContext"];

/** One page of storage contexts. */
export type StorageContextList = Schemas["StorageContextList"];

/** One transfer between a session and a storage context. */
export type ContextStatusData = Schemas["ContextStatusData"];

/** Direction of a transfer: `upload` (session → context) or `download`. */
export type TaskType = Schemas["TaskType"];

/** The outcome of a sync: `success` when every task it started succeeded. */
export interface ContextSyncResult {
  success: boolean;
  /** The `X-Request-Id` of the sync request. */
  requestId: string;
  /** The tasks as last seen. */
  tasks: ContextStatusData[];
  /** Why it failed, when it did. */
  errorMessage: string;
}

/** Options of {@link SessionContext.sync}. */
export interface SyncOptions {
  /** Only this context; default every context bound to the session. */
  contextId?: string;
  /** Only this path (with `contextId`, a path need not be bound beforehand). */
  path?: string;
  /** `upload` (default) or `download`. */
  mode?: TaskType;
  /** Called with the outcome once the tasks finished (the promise resolves too). */
  callback?: (success: boolean) => void;
  /** Most polls of `context/info`; default 150. */
  maxRetries?: number;
  /** Milliseconds between polls; default 1500. */
  retryInterval?: number;
}

const FINAL = new Set(["Success", "Failed"]);

/** The caller's storage contexts (`/v1/contexts`). */
export class StorageContexts {
  constructor(private readonly transport: Transport) {}

  /** Creates an empty context; `name` is unique per tenant (letters, digits, `._-`). */
  create(name: string): Promise<StorageContext> {
    if (!name) throw new TypeError("name must not be empty");
    return this.transport.json<StorageContext>("POST", "/contexts", { json: { name } });
  }

  /** One context. */
  get(id: string): Promise<StorageContext> {
    return this.transport.json<StorageContext>("GET", `/contexts/${encodeURIComponent(id)}`);
  }

  /** One page of the caller's contexts, oldest first (`limit` 1..100). */
  list(options: { limit?: number; offset?: number } = {}): Promise<StorageContextList> {
    const { limit = 20, offset = 0 } = options;
    if (!(Number.isInteger(limit) && limit >= 1 && limit <= 100)) {
      throw new RangeError(`limit must be an integer from 1 to 100, got ${limit}`);
    }
    if (!(Number.isInteger(offset) && offset >= 0)) throw new RangeError(`offset must be 0 or more, got ${offset}`);
    return this.transport.json<StorageContextList>("GET", "/contexts", { query: { limit, offset } });
  }

  /** Deletes a context and its content. */
  async delete(id: string): Promise<void> {
    (await this.transport.request("DELETE", `/contexts/${encodeURIComponent(id)}`)).resume();
  }
}

/** Storage-context transfers of one session (`session.context`). */
export class SessionContext {
  constructor(
    private readonly transport: Transport,
    private readonly sessionPath: string,
  ) {}

  /** The session's transfer tasks, oldest first, filtered by context, path or type. */
  async info(options: { contextId?: string; path?: string; taskType?: TaskType } = {}): Promise<ContextStatusData[]> {
    const data = await this.transport.json<Schemas["ContextInfo"]>("GET", `${this.sessionPath}/context/info`, {
      query: { contextId: options.contextId, path: options.path, taskType: options.taskType },
    });
    return data.contextStatusData;
  }

  /**
   * Starts an upload (the default) or download of the session's bound contexts (or only
   * `contextId`/`path`) and polls `context/info` until every task it started finished.
   * Resolves with the outcome; a failed transfer is `success: false`, not an error.
   */
  async sync(options: SyncOptions = {}): Promise<ContextSyncResult> {
    const { maxRetries = 150, retryInterval = 1500, callback } = options;
    try {
      const result = await this.runSync(options, maxRetries, retryInterval);
      callback?.(result.success);
      return result;
    } catch (error) {
      callback?.(false);
      throw error;
    }
  }

  private async runSync(options: SyncOptions, maxRetries: number, retryInterval: number): Promise<ContextSyncResult> {
    const body: Schemas["SyncRequest"] = {};
    if (options.contextId !== undefined) body.contextId = options.contextId;
    if (options.path !== undefined) body.path = options.path;
    if (options.mode !== undefined) body.mode = options.mode;
    const response = await this.transport.request("POST", `${this.sessionPath}/context/sync`, { json: body });
    const requestId = String(response.headers["x-request-id"] ?? "");
    const chunks: Buffer[] = [];
    for await (const chunk of response) chunks.push(chunk as Buffer);
    const started = JSON.parse(Buffer.concat(chunks).toString("utf8")) as Schemas["SyncStarted"];
    let tasks = started.tasks;
    for (let attempt = 0; attempt < Math.max(maxRetries, 1) && tasks.length > 0; attempt++) {
      const latest = this.latest(tasks, await this.info());
      if (latest && latest.every((task) => FINAL.has(task.status))) {
        const failed = latest.filter((task) => task.status !== "Success");
        return {
          success: failed.length === 0,
          requestId,
          tasks: latest,
          errorMessage: failed.map((task) => task.errorMessage).filter(Boolean).join("; "),
        };
      }
      if (latest) tasks = latest;
      if (attempt + 1 < maxRetries) await new Promise((resolve) => setTimeout(resolve, retryInterval));
    }
    if (tasks.length === 0) return { success: true, requestId, tasks, errorMessage: "" };
    return {
      success: false,
      requestId,
      tasks,
      errorMessage: `the sync did not finish after ${maxRetries} polls`,
    };
  }

  /** The current state of each started task, or undefined when one is not listed yet. */
  private latest(started: ContextStatusData[], all: ContextStatusData[]): ContextStatusData[] | undefined {
    const out: ContextStatusData[] = [];
    for (const task of started) {
      const match = all.filter(
        (t) =>
          t.contextId === task.contextId &&
          t.path === task.path &&
          t.taskType === task.taskType &&
          t.startTime >= task.startTime,
      );
      const last = match.at(-1);
      if (!last) return undefined;
      out.push(last);
    }
    return out;
  }
}
