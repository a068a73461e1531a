//! One-shot commands run to completion inside a session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/sessions/{id}/commands`: exactly one of `command` and `argv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"command": "uname -a; id", "timeout": 10}))]
pub struct CommandRequest {
    /// A shell command line, run by `/bin/sh -c`: at most 131071 bytes (Linux's bound on one
    /// argument), no NUL. Give either
    /// `command` or `argv`.
    #[schema(max_length = 131071, pattern = "^[^\\u0000]*$")]
    pub command: Option<String>,
    /// A program and its arguments, run without a shell.
    #[schema(schema_with = crate::schema::argv_request)]
    pub argv: Option<Vec<String>>,
    /// Working directory, an absolute path of at most 4096 bytes; default `/workspace`.
    #[schema(max_length = 4096, pattern = "^/[^\\u0000]*$")]
    pub cwd: Option<String>,
    /// Extra environment variables for this command, over the session's.
    #[schema(schema_with = crate::schema::env_request)]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds, in (0, 3600], before the command and everything it started is killed;
    /// default 60.
    #[schema(exclusive_minimum = 0, maximum = 3600)]
    pub timeout: Option<f64>,
    /// Text written to the command's standard input, which is then closed: at most 4 MiB.
    #[schema(max_length = 4194304)]
    pub stdin: Option<String>,
    /// Start the command detached and answer at once with its `processId` and `pid`; it runs
    /// on after the request, as a process of the session (see the `processes` routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// Answer with a stream of process events, one JSON object per line
    /// (`application/x-ndjson`), instead of one result at the end. `Accept:
    /// application/x-ndjson` does the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    /// Exit status; `128 + n` when killed by signal `n`, as a shell reports it.
    pub exit_code: i32,
    /// Captured standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Captured standard error (invalid UTF-8 replaced).
    pub stderr: String,
    /// Wall-clock run time in milliseconds.
    pub duration_ms: u64,
    /// Whether the timeout ended the command.
    pub timed_out: bool,
    /// Whether an output stream was longer than the capture limit and was cut.
    #[serde(default)]
    pub truncated: bool,
    /// Whether the kernel's out-of-memory killer ended the command: the session reached its
    /// memory limit (`memoryMb`). stderr then ends with a note that says so.
    #[serde(default)]
    pub oom_killed: bool,
}
