//! Interpreter contexts: long-lived python, javascript or bash workers inside a session, and the
//! frames an execution streams back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The id of the context every session starts with, used when an execution names none.
pub const DEFAULT_CONTEXT_ID: &str = "default";

/// `POST /v1/sessions/{id}/interpreter/contexts`: every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"cwd": "/workspace/project", "language": "python"}))]
pub struct CreateContextRequest {
    /// Working directory, an absolute path (created if missing); default `/workspace`.
    #[schema(max_length = 4096, pattern = "^/[^\\u0000]*$")]
    pub cwd: Option<String>,
    /// `python` (default), `javascript` or `bash`.
    pub language: Option<String>,
    /// Environment variables of the worker, over the session's.
    #[schema(schema_with = crate::schema::env_request)]
    pub env: Option<BTreeMap<String, String>>,
    /// Python only. `auto` (default): plain CPython, fast to start and small when idle, that
    /// turns itself into the IPython kernel, keeping every variable, at the first cell written
    /// in IPython-only syntax (a line starting with `%`, `%%`, `!` or `?`, `name?`, or
    /// `x = !cmd` / `x = %magic`, in a cell that is not valid Python); `ipython`: the IPython
    /// kernel from the start (magics, rich display); `python`: plain CPython only.
    #[schema(example = "auto")]
    pub kernel: Option<String>,
    /// Default timeout of the context's executions, in seconds (0, 86400]; default 300.
    #[schema(exclusive_minimum = 0, maximum = 86400)]
    pub timeout: Option<f64>,
    /// Memory cap of the context's worker and everything it starts, in MiB [16, 65536]; at
    /// least 64 for `javascript` (node does not start in less).
    #[schema(minimum = 16, maximum = 65536)]
    pub memory_mb: Option<u64>,
    /// How many past executions the context keeps for `…/history`, [0, 1000]; default 100.
    #[schema(minimum = 0, maximum = 1000)]
    pub history_size: Option<usize>,
}

/// An interpreter context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"id": "0192f5a4-7c1e-7d30-9b1a-3c1f0e6b2a11", "cwd": "/workspace/project", "language": "python", "kernel": "ipython", "createdAt": "2025-01-28T10:30:00Z", "active": true, "timeout": 300.0, "memoryMb": null, "historySize": 100}))]
pub struct Context {
    /// `default`, or a UUID.
    pub id: String,
    /// Working directory the worker started in.
    pub cwd: String,
    /// `python`, `javascript` or `bash`.
    pub language: String,
    /// The kernel the worker runs now: `ipython`, `python`, `node` or `bash`. An `auto`
    /// context shows `python` until a cell uses IPython syntax, then `ipython` (again `python`
    /// after a restart).
    pub kernel: String,
    /// When the context was created (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
    /// Whether its worker is running; an inactive context restarts on its next execution.
    pub active: bool,
    /// Default execution timeout, in seconds.
    pub timeout: f64,
    /// Memory cap in MiB, if any.
    pub memory_mb: Option<u64>,
    /// How many past executions are kept.
    pub history_size: usize,
}

/// `GET …/interpreter/contexts`: the created contexts (not `default`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ContextList {
    /// Oldest first.
    pub contexts: Vec<Context>,
}

/// The first WebSocket message of an execution, or the body of `POST …/interpreter/execute`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"code": "x = 21 * 2\nx", "contextId": "default", "timeout": 30}))]
pub struct ExecuteRequest {
    /// The cell to run: at most 1 MiB.
    #[schema(max_length = 1048576)]
    pub code: String,
    /// The context; default `default`.
    pub context_id: Option<String>,
    /// Seconds, in (0, 86400], before the cell is interrupted; default the context's timeout.
    #[schema(exclusive_minimum = 0, maximum = 86400)]
    pub timeout: Option<f64>,
    /// Environment variables set for this execution only and restored after it.
    #[schema(schema_with = crate::schema::env_request)]
    pub envs: Option<BTreeMap<String, String>>,
    /// Packages (`pip` for python, `npm` for javascript) installed before the cell runs unless
    /// already present; at most 32.
    #[schema(max_items = 32)]
    pub libraries: Option<Vec<String>>,
}

/// One frame of an execution's stream (a WebSocket text message, or one NDJSON line). The
/// last frame is always `control`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Frame {
    /// Standard output of the worker and everything it started.
    Stdout {
        /// At most 64 KiB of text (invalid UTF-8 replaced).
        text: String,
        /// Counts the stdout and stderr frames of this execution from 0.
        seq: u64,
    },
    /// Standard error, like `stdout`.
    Stderr {
        /// At most 64 KiB of text.
        text: String,
        /// Counts the stdout and stderr frames of this execution from 0.
        seq: u64,
    },
    /// The value of the cell's last expression, or a `display()` call, as a MIME bundle.
    #[serde(rename_all = "camelCase")]
    Result {
        /// MIME type → content (`text/plain`, `text/html`, `image/png` as base64, …).
        #[schema(value_type = Object)]
        data: serde_json::Map<String, serde_json::Value>,
        /// The execution count of the cell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_count: Option<u64>,
    },
    /// A file the cell produced, such as an open matplotlib figure.
    #[serde(rename_all = "camelCase")]
    Artifact {
        /// File name, such as `figure-1.png`.
        name: String,
        /// Its MIME type.
        mime_type: String,
        /// Its content, base64.
        data: String,
    },
    /// An exception, or a failure of the context (`ContextError`, `TimeoutError`,
    /// `WorkerCrashed`, `OutOfMemory` when the kernel's OOM killer ended the worker,
    /// `LibraryInstallError`).
    Error {
        /// Exception name.
        name: String,
        /// Its message.
        value: String,
        /// The traceback as text, with the cell's source lines.
        traceback: String,
    },
    /// The outcome; always the last frame.
    #[serde(rename_all = "camelCase")]
    Control {
        /// `completed`, `interrupted`, `timeout`, `exited` or `crashed`.
        text: String,
        /// The cell's execution count, when it ran.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_count: Option<u64>,
        /// `exited`: the worker's exit code.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
        /// `crashed`: the signal that killed the worker.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signal: Option<i32>,
        /// Wall-clock time of the execution, in milliseconds.
        duration_ms: u64,
    },
}

/// `POST …/contexts/{cid}/interrupt`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InterruptResult {
    /// Whether an execution was running and got interrupted.
    pub interrupted: bool,
}

/// One past execution of a context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The cell's execution count, when it ran.
    pub execution_count: Option<u64>,
    /// The code.
    pub code: String,
    /// The control outcome (`completed`, `timeout`, …).
    pub status: String,
    /// When it started (RFC 3339).
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: time::OffsetDateTime,
    /// Wall-clock time in milliseconds.
    pub duration_ms: u64,
    /// Standard output, at most 64 KiB kept.
    pub stdout: String,
    /// Standard error, at most 64 KiB kept.
    pub stderr: String,
    /// The error frame, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Frame>,
    /// Result frames' data bundles, at most 1 MiB of them kept.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Result bundles the execution sent past the 1 MiB kept (absent when none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub results_omitted: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `GET …/contexts/{cid}/history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryList {
    /// Newest last.
    pub executions: Vec<HistoryEntry>,
}

/// The `{"message": …}` answer of a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Deleted {
    /// `Context deleted`.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_by_type() {
        let f = Frame::Control {
            text: "completed".into(),
            execution_count: Some(3),
            exit_code: None,
            signal: None,
            duration_ms: 12,
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"type": "control", "text": "completed", "executionCount": 3, "durationMs": 12})
        );
        let s: Frame = serde_json::from_str(r#"{"type":"stdout","text":"hi","seq":0}"#).unwrap();
        assert_eq!(
            s,
            Frame::Stdout {
                text: "hi".into(),
                seq: 0
            }
        );
    }
}
