//! Bounds on everything a client controls in the session and command APIs.
//!
//! They live with the wire types so that the server, the agent and the SDKs validate against
//! the same numbers.

/// Shortest session time to live, in seconds.
pub const TTL_MIN_SECS: u64 = 60;
/// Longest session time to live, in seconds (8 hours).
pub const TTL_MAX_SECS: u64 = 28_800;
/// Time to live when the request names none.
pub const TTL_DEFAULT_SECS: u64 = 300;

/// Most metadata entries on one session.
pub const METADATA_MAX_ENTRIES: usize = 32;
/// Longest metadata key, in bytes.
pub const METADATA_MAX_KEY_BYTES: usize = 64;
/// Longest metadata value, in bytes.
pub const METADATA_MAX_VALUE_BYTES: usize = 1024;

/// Most environment variables on a session or a command.
pub const ENV_MAX_ENTRIES: usize = 256;
/// Longest environment variable name, in bytes.
pub const ENV_MAX_KEY_BYTES: usize = 256;
/// Longest environment variable value, in bytes.
pub const ENV_MAX_VALUE_BYTES: usize = 32 * 1024;

/// Fewest and most CPUs a session may ask for.
pub const CPUS_RANGE: (f64, f64) = (0.05, 64.0);
/// Fewest and most MiB of memory a session may ask for.
pub const MEMORY_MB_RANGE: (u64, u64) = (32, 65_536);
/// Fewest and most processes a session may ask for.
pub const PIDS_RANGE: (u64, u64) = (8, 32_768);

/// Default CPUs of a session.
pub const DEFAULT_CPUS: f64 = 1.0;
/// Default memory of a session, in MiB.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// Default process limit of a session.
pub const DEFAULT_PIDS: u64 = 512;

/// Most sessions on one page of a listing.
pub const LIST_LIMIT_MAX: u32 = 100;
/// Sessions on a page when the request names no limit.
pub const LIST_LIMIT_DEFAULT: u32 = 20;

/// Longest command timeout, in seconds.
pub const COMMAND_TIMEOUT_MAX_SECS: f64 = 3_600.0;
/// Command timeout when the request names none, in seconds.
pub const COMMAND_TIMEOUT_DEFAULT_SECS: f64 = 60.0;
/// Largest `stdin` a command request may carry, in bytes.
pub const COMMAND_STDIN_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Longest argv (summed), in bytes.
pub const COMMAND_MAX_BYTES: usize = 256 * 1024;
/// Longest single argument the kernel passes to a program (`MAX_ARG_STRLEN`, 128 KiB with its
/// NUL), in bytes: the bound of a command string, of each `argv` entry and of `/code` source.
pub const COMMAND_ARG_MAX_BYTES: usize = 128 * 1024 - 1;
/// Most captured bytes per output stream of one command; past it the output is cut and marked.
pub const COMMAND_OUTPUT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Most argv entries of one command.
pub const COMMAND_ARGV_MAX_ENTRIES: usize = 4096;
/// Longest path (cwd), in bytes.
pub const PATH_MAX_BYTES: usize = 4096;

/// Largest JSON request body the control plane accepts on its own routes, in bytes.
pub const JSON_BODY_MAX_BYTES: usize = 8 * 1024 * 1024;

/// Most bytes of header fields on one request (the sum of every name and value length);
/// past it the control plane answers 431 `headers_too_large`.
pub const REQUEST_HEADERS_MAX_BYTES: usize = 16 * 1024;
/// Longest request target (path and query string), in bytes; past it the control plane
/// answers 414 `uri_too_long`.
pub const REQUEST_URI_MAX_BYTES: usize = 8 * 1024;
/// Most commands one session runs at once; past it the session's agent answers 429
/// `rate_limited` until one finishes.
pub const COMMANDS_CONCURRENT_MAX: usize = 64;

/// Longest storage context name, in bytes.
pub const STORAGE_CONTEXT_NAME_MAX_BYTES: usize = 128;
/// Most storage contexts bound to one session.
pub const CONTEXT_SYNCS_MAX: usize = 8;
/// Most include or exclude globs in one sync policy.
pub const SYNC_GLOBS_MAX: usize = 32;
/// Longest include or exclude glob, in bytes.
pub const SYNC_GLOB_MAX_BYTES: usize = 256;
/// Most transfer tasks remembered per session (older finished ones are forgotten).
pub const CONTEXT_TASKS_KEPT: usize = 100;
/// Most entries (files, directories, links) in one storage context version.
pub const STORAGE_CONTEXT_MAX_ENTRIES: u64 = 100_000;
/// Most path components (names between slashes) in one file API path.
pub const FILES_PATH_MAX_COMPONENTS: usize = 256;
/// Longest single name in a path, in bytes (the kernel's `NAME_MAX`).
pub const FILES_NAME_MAX_BYTES: usize = 255;
/// Deepest listing `GET /files?depth=` may ask for.
pub const FILES_LIST_DEPTH_MAX: u32 = 16;
/// Listing depth when the request names none.
pub const FILES_LIST_DEPTH_DEFAULT: u32 = 1;
/// Most entries one listing returns; past it the listing is cut and marked `truncated`.
pub const FILES_LIST_MAX_ENTRIES: usize = 10_000;
/// Largest file (or tar archive, or multipart request) one upload may carry, in bytes, unless
/// the server is started with another `--max-upload-mb`.
pub const FILES_UPLOAD_MAX_BYTES_DEFAULT: u64 = 8 * 1024 * 1024 * 1024;
/// Most files in one multipart upload.
pub const FILES_MULTIPART_MAX_FILES: usize = 1_000;
/// Most entries one extracted tar archive may hold.
pub const FILES_ARCHIVE_MAX_ENTRIES: usize = 100_000;
/// Longest symbolic link target in an extracted tar archive, in bytes.
pub const FILES_LINK_TARGET_MAX_BYTES: usize = 4096;

/// Fewest and most MiB of disk (the writable layer) a session may ask for.
pub const DISK_MB_RANGE: (u64, u64) = (16, 1_048_576);
/// MiB of disk a session that asks for none gets, unless the server's `--disk-mb-default`
/// says otherwise. Sparse: only what the session writes takes space on the host.
pub const DISK_MB_DEFAULT: u64 = 10_240;
/// Most streamed and background processes one session runs at once (they do not count
/// against [`COMMANDS_CONCURRENT_MAX`]); past it starting one answers 429 `rate_limited`.
pub const PROCESSES_RUNNING_MAX: usize = 128;
/// Most finished processes a session keeps for their exit and output; the oldest goes first.
pub const PROCESSES_FINISHED_KEPT: usize = 32;
/// Bytes of output each process keeps for replay (both streams together); older chunks are
/// dropped once no attached client still needs them.
pub const PROCESS_OUTPUT_BUFFER_BYTES: usize = 1024 * 1024;
/// Largest single write to a process's standard input (one request or message), in bytes.
pub const PROCESS_STDIN_WRITE_MAX_BYTES: usize = 1024 * 1024;
/// Most terminals one session has open at once.
pub const PTY_SESSIONS_MAX: usize = 16;
/// Largest terminal width or height, in cells.
pub const PTY_SIZE_MAX: u16 = 1000;
/// Most interpreter contexts one session holds besides `default`.
pub const CONTEXTS_MAX: usize = 32;
/// Longest cell of code one execution may carry, in bytes.
pub const INTERPRETER_CODE_MAX_BYTES: usize = 1024 * 1024;
/// Largest first WebSocket message (or NDJSON request body) of an execution, in bytes.
pub const INTERPRETER_REQUEST_MAX_BYTES: usize = 2 * INTERPRETER_CODE_MAX_BYTES;
/// Most executions waiting behind the running one in one context; past it an execution is
/// refused with a `ContextError` frame.
pub const INTERPRETER_QUEUE_MAX: usize = 16;
/// Most stdout and stderr bytes (together) streamed for one execution; past it the output is
/// read and dropped, and one final stderr frame says so.
pub const INTERPRETER_OUTPUT_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Largest text of one stdout or stderr frame, in bytes.
pub const INTERPRETER_CHUNK_MAX_BYTES: usize = 64 * 1024;
/// Largest single message a worker may send (a result or an artifact with its base64 data);
/// a larger one is replaced by an error frame.
pub const INTERPRETER_FRAME_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Longest execution timeout, in seconds.
pub const INTERPRETER_TIMEOUT_MAX_SECS: f64 = 86_400.0;
/// Execution timeout when neither the request nor the context names one, in seconds.
pub const INTERPRETER_TIMEOUT_DEFAULT_SECS: f64 = 300.0;
/// Executions a context keeps in its history when it names no `historySize`.
pub const INTERPRETER_HISTORY_DEFAULT: usize = 100;
/// Largest `historySize` of a context.
pub const INTERPRETER_HISTORY_MAX: usize = 1000;
/// Most stdout (and, separately, stderr) bytes kept per history entry.
pub const INTERPRETER_HISTORY_OUTPUT_MAX_BYTES: usize = 64 * 1024;
/// Most bytes of result bundles kept per history entry (their JSON); the bundles past it are
/// counted in the entry's `resultsOmitted`, not kept.
pub const INTERPRETER_HISTORY_RESULTS_MAX_BYTES: usize = 1024 * 1024;
/// Most bytes the histories of all of a session's contexts keep together (code, output,
/// error and results): past it the oldest entries go, the recording context's first. The
/// agent holds them, outside the session's memory limit on some hosts, so they are bounded
/// per session, not per context.
pub const INTERPRETER_HISTORY_SESSION_MAX_BYTES: usize = 8 * 1024 * 1024;
/// Fewest and most MiB of memory a context may be limited to.
pub const INTERPRETER_MEMORY_MB_RANGE: (u64, u64) = (16, 65_536);
/// Most packages one execution's `libraries` may name.
pub const INTERPRETER_LIBRARIES_MAX: usize = 32;
/// Longest package name (with its version specifier) in `libraries`, in bytes.
pub const INTERPRETER_LIBRARY_MAX_BYTES: usize = 200;
/// Most bytes of results, artifacts and errors (together) one execution may send; past it
/// they are dropped and one `OutputTooLarge` error frame says so.
pub const INTERPRETER_MESSAGES_MAX_BYTES: usize = 64 * 1024 * 1024;

/// Shortest and longest lifetime of a preview link, in seconds (1 s to 24 h).
pub const PREVIEW_LINK_TTL_RANGE: (u64, u64) = (1, 86_400);
/// Lifetime of a preview link when the request names none, in seconds (1 h).
pub const PREVIEW_LINK_TTL_DEFAULT_SECS: u64 = 3_600;
/// Most connections relayed into one session's ports at once, by default.
pub const PORT_CONNECTIONS_MAX_DEFAULT: usize = 64;
/// Most listening sockets `GET /v1/sessions/{id}/ports` lists.
pub const PORTS_LIST_MAX: usize = 1_024;
