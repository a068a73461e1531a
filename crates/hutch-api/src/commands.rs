//! One-shot commands run to completion inside a session.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `POST /v1/sessions/{id}/commands`: exactly one of `command` and `argv`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandRequest {
    /// A shell command line, run by `/bin/sh -c`.
    pub command: Option<String>,
    /// A program and its arguments, run without a shell.
    pub argv: Option<Vec<String>>,
    /// Working directory; default `/workspace`.
    pub cwd: Option<String>,
    /// Extra environment variables for this command.
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds before the command and everything it started is killed; default 60.
    pub timeout: Option<f64>,
    /// Text written to the command's standard input, which is then closed.
    pub stdin: Option<String>,
}

/// The outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
}
