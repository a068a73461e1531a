/**
 * `@hutch/sdk`: the TypeScript client of hutch, a self-hosted sandbox server.
 *
 * ```ts
 * import { Hutch } from "@hutch/sdk";
 *
 * const hutch = new Hutch(); // HUTCH_URL and HUTCH_TOKEN
 * const session = await hutch.sessions.create({ ttl: 600 });
 * console.log((await session.commands.run("uname -a")).stdout);
 * await session.delete();
 * hutch.close();
 * ```
 */

export { Hutch, DEFAULT_URL, type HutchOptions } from "./client.js";
export * from "./errors.js";
export {
  Sessions,
  Session,
  SessionHandle,
  type SessionList,
  type SessionStatus,
  type Resources,
  type CreateSessionOptions,
  type UpdateSessionOptions,
} from "./sessions.js";
export {
  Commands,
  type Command,
  type CommandOptions,
  type RunOptions,
  type StreamOptions,
} from "./commands.js";
export {
  CommandResult,
  ProcessStream,
  type ProcessEvent,
  type StartEvent,
  type OutputEvent,
  type TruncatedEvent,
  type ExitEvent,
  type OutputCallback,
  type StreamCallbacks,
} from "./process-stream.js";
export { Processes, Process, type ProcessInfo, type Signal, type AttachOptions } from "./processes.js";
export {
  Files,
  type FileInfo,
  type UploadResult,
  type ProgressCallback,
  type ReadOptions,
  type WriteOptions,
} from "./files.js";
export { Terminal, type TerminalOptions, type DataListener } from "./pty.js";
export { Code, LANGUAGES, type Language, type CodeOptions } from "./code.js";
export {
  CodeInterpreter,
  DEFAULT_CONTEXT,
  Execution,
  Result,
  type Artifact,
  type Context,
  type ContextOptions,
  type ExecuteOptions,
  type ExecutionError,
  type Frame,
  type HistoryEntry,
} from "./interpreter.js";
export {
  StorageContexts,
  SessionContext,
  type StorageContext,
  type StorageContextList,
  type ContextStatusData,
  type ContextSyncResult,
  type SyncOptions,
  type TaskType,
} from "./storage.js";
export type { Body, Query } from "./transport.js";
export type { Schemas, components, operations, paths } from "./types.js";
