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
/// Longest command string or argv (summed), in bytes.
pub const COMMAND_MAX_BYTES: usize = 256 * 1024;
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
/// Fewest and most MiB of memory a context may be limited to.
pub const INTERPRETER_MEMORY_MB_RANGE: (u64, u64) = (16, 65_536);
/// Most packages one execution's `libraries` may name.
pub const INTERPRETER_LIBRARIES_MAX: usize = 32;
/// Longest package name (with its version specifier) in `libraries`, in bytes.
pub const INTERPRETER_LIBRARY_MAX_BYTES: usize = 200;
/// Most bytes of results, artifacts and errors (together) one execution may send; past it
/// they are dropped and one `OutputTooLarge` error frame says so.
pub const INTERPRETER_MESSAGES_MAX_BYTES: usize = 64 * 1024 * 1024;
