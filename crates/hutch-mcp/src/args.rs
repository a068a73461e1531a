//! The arguments of each tool: typed, documented, and turned into JSON schemas by schemars.
//!
//! Field names and ranges are the REST API's (camelCase on the wire); the API validates every
//! value again, so a bad value comes back as the API's 400 with its stable code.

use std::collections::BTreeMap;

use rmcp::schemars::{self, JsonSchema};
use serde::{Deserialize, Serialize};

/// `create_session`: the body of `POST /v1/sessions`.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSessionArgs {
    /// Seconds the session lives, 60 to 28800; default 300.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
    /// The image: `default` (the host's tools, Python with numpy, pandas and matplotlib,
    /// node) or an OCI reference such as `python:3.11`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Labels kept with the session (at most 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    /// Environment variables of everything the session runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Limits: `cpus` (0.05 to 64), `memoryMb` (32 to 65536), `pids` (8 to 32768), `diskMb`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesArgs>,
}

/// A session's resource limits.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesArgs {
    /// CPUs, 0.05 to 64; default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Memory in MiB, 32 to 65536; default 512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    /// Most processes at once, 8 to 32768; default 512.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// Disk quota of the session's own files in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_mb: Option<u64>,
}

/// `list_sessions`: one page of the caller's sessions.
#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct ListSessionsArgs {
    /// Sessions on the page, 1 to 100; default 20.
    pub limit: Option<u32>,
    /// How many sessions to skip; default 0.
    pub offset: Option<u64>,
}

/// A tool that names one session and nothing else.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionArgs {
    /// The session's id, as `create_session` or `list_sessions` answered it.
    pub session_id: String,
}

/// `run_command`: the body of `POST /v1/sessions/{id}/commands`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCommandArgs {
    /// The session to run in.
    #[serde(skip_serializing)]
    pub session_id: String,
    /// A shell command line, run by `/bin/sh -c` (at most 128 KiB).
    pub command: String,
    /// Working directory; default the image's (`/workspace` for `default`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    /// Seconds before the command's whole process tree is killed, up to 3600; default 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Text written to the command's standard input (at most 4 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
}

/// `run_code`: the body of `POST /v1/sessions/{id}/code`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunCodeArgs {
    /// The session to run in.
    #[serde(skip_serializing)]
    pub session_id: String,
    /// `python`, `javascript` or `bash`.
    pub language: String,
    /// The program's source (at most 128 KiB), run in a fresh process.
    pub code: String,
    /// Seconds before it is killed, up to 3600; default 60.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Extra environment variables.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
}

/// `create_context`: the body of `POST /v1/sessions/{id}/interpreter/contexts`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateContextArgs {
    /// The session to create it in.
    #[serde(skip_serializing)]
    pub session_id: String,
    /// `python` (default), `javascript` or `bash`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Its working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Environment variables of the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
}

/// `execute`: the body of `POST /v1/sessions/{id}/interpreter/execute`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecuteArgs {
    /// The session to run in.
    #[serde(skip_serializing)]
    pub session_id: String,
    /// The cell to run (at most 1 MiB). Variables, imports and functions persist between
    /// cells of the same context.
    pub code: String,
    /// The context, as `create_context` answered it; default `default` (a Python context
    /// every session has).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_id: Option<String>,
    /// Seconds before the cell is interrupted (the context's state is kept), up to 86400;
    /// default the context's timeout (300).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Environment variables for this cell only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub envs: Option<BTreeMap<String, String>>,
    /// Packages installed before the cell runs (pip for Python, npm for JavaScript), at most
    /// 32; needs network egress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub libraries: Option<Vec<String>>,
}

/// How a file's content is written in a tool's arguments or answer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// UTF-8 text.
    #[default]
    Text,
    /// Base64 of the bytes (for binary files).
    Base64,
}

/// `read_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadFileArgs {
    /// The session to read from.
    pub session_id: String,
    /// The file's path inside the session (absolute, or relative to `/`).
    pub path: String,
    /// `text` (default: invalid UTF-8 is replaced) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// `write_file`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WriteFileArgs {
    /// The session to write to.
    pub session_id: String,
    /// The file's path inside the session; missing parent directories are created.
    pub path: String,
    /// The new content, replacing the file's whole content.
    pub content: String,
    /// How `content` is written: `text` (default) or `base64`.
    #[serde(default)]
    pub encoding: Encoding,
}

/// `list_files`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListFilesArgs {
    /// The session to list in.
    pub session_id: String,
    /// The directory; default `/workspace`.
    pub path: Option<String>,
    /// Levels to descend, 1 to 16; default 1.
    pub depth: Option<u32>,
}

/// `expose_port`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExposePortArgs {
    /// The session whose port to expose.
    #[serde(skip_serializing)]
    pub session_id: String,
    /// The port a process in the session listens on (any address).
    #[serde(skip_serializing)]
    pub port: u16,
    /// Seconds the link works, 1 to 86400; default 3600.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u64>,
}
