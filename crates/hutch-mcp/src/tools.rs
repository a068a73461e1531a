//! The tools: each one REST call (two for `read_file`), its answer shown as text, JSON or
//! images.
//!
//! A failed call (the API's error answer, a server out of reach) is a tool result with
//! `isError` and the error's stable code and message, so a model can read it and act.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http::Method;
use http::header::CONTENT_RANGE;
use http::request::Parts;
use hutch_api::interpreter::Frame;
use hutch_api::limits::{
    COMMAND_OUTPUT_MAX_BYTES, INTERPRETER_FRAME_MAX_BYTES, JSON_BODY_MAX_BYTES,
};
use hutch_client::percent_encode;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, tool, tool_router};
use serde_json::Value;

use crate::api::{Api, CallError};
use crate::args::{
    CreateContextArgs, CreateSessionArgs, Encoding, ExecuteArgs, ExposePortArgs, ListFilesArgs,
    ListSessionsArgs, ReadFileArgs, RunCodeArgs, RunCommandArgs, SessionArgs, WriteFileArgs,
};
use crate::backend::Backend;
use crate::content;

/// The most a command's or a code run's answer holds: both streams at the API's cap, each
/// byte escaped in JSON as `\u00XX` at worst, and the other fields.
pub(crate) const COMMAND_ANSWER_MAX_BYTES: usize = 2 * 6 * COMMAND_OUTPUT_MAX_BYTES + 64 * 1024;

/// The most an execution's NDJSON answer holds: four of the API's largest frames. The API
/// bounds the output streams (8 MiB) and each frame (16 MiB), not how many results a cell
/// displays; past this the tool answers an error.
pub(crate) const EXECUTE_ANSWER_MAX_BYTES: usize = 4 * INTERPRETER_FRAME_MAX_BYTES;

/// The most of a file `read_file` and a resource read answer: the API's cap on a command's
/// output, the most any JSON answer of the API carries. A longer file is cut there (the
/// answer says so); the files API's `Range` reads the rest.
pub(crate) const FILE_READ_MAX_BYTES: usize = COMMAND_OUTPUT_MAX_BYTES;

/// Where `list_files` looks when no path is given: every image's work directory.
pub(crate) const DEFAULT_DIRECTORY: &str = "/workspace";

/// The hutch MCP server: its tools, over one [`Backend`].
#[derive(Clone)]
pub struct HutchMcp {
    pub(crate) backend: Arc<dyn Backend>,
    tool_router: ToolRouter<Self>,
}

impl std::fmt::Debug for HutchMcp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HutchMcp").finish_non_exhaustive()
    }
}

impl HutchMcp {
    /// A server whose tools call the API through `backend`.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        HutchMcp {
            backend,
            tool_router: Self::tool_router(),
        }
    }

    /// The tools, for the handler.
    pub(crate) fn router(&self) -> &ToolRouter<Self> {
        &self.tool_router
    }

    /// The API as the caller of `context` sees it.
    pub(crate) fn api(&self, context: &RequestContext<RoleServer>) -> Api {
        Api::new(
            Arc::clone(&self.backend),
            context.extensions.get::<Parts>().cloned(),
        )
    }
}

/// A JSON answer as the tool's result: pretty text, and the same value as structured
/// content.
fn json_result(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

/// A failed call as the tool's error result.
fn error_result(error: &CallError) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(error.to_string())])
}

/// Either outcome of a call as the tool's result.
fn answer(result: Result<CallToolResult, CallError>) -> Result<CallToolResult, ErrorData> {
    Ok(result.unwrap_or_else(|error| error_result(&error)))
}

/// `/v1/sessions/{id}` with the id percent-encoded (the API answers a malformed id 404).
fn session_path(session_id: &str) -> String {
    format!("/v1/sessions/{}", percent_encode(session_id))
}

/// The JSON of a request body, for [`Api::send`].
fn json_body(value: &impl serde::Serialize) -> Result<Bytes, CallError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| CallError::Json(e.to_string()))
}

/// Reads at most [`FILE_READ_MAX_BYTES`] of a file; answers the bytes and whether the file is
/// longer.
pub(crate) async fn read_file_head(
    api: &Api,
    session_id: &str,
    path: &str,
) -> Result<(Bytes, bool), CallError> {
    let url = format!(
        "{}/files/content?path={}",
        session_path(session_id),
        percent_encode(path)
    );
    let range = format!("bytes=0-{}", FILE_READ_MAX_BYTES - 1);
    let answer = match api
        .send(Method::GET, &url, None, Some(&range), FILE_READ_MAX_BYTES)
        .await
    {
        // An empty file has no byte 0: read it whole.
        Err(CallError::Api { code, .. }) if code == "range_not_satisfiable" => {
            api.send(Method::GET, &url, None, None, FILE_READ_MAX_BYTES)
                .await?
        }
        other => other?,
    };
    // `Content-Range: bytes 0-N/TOTAL`: longer when TOTAL is past what came.
    let total = answer
        .headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit('/').next())
        .and_then(|v| v.parse::<u64>().ok());
    let truncated = total.is_some_and(|total| total > answer.body.len() as u64);
    Ok((answer.body, truncated))
}

#[tool_router]
impl HutchMcp {
    /// Creates a session.
    #[tool(
        description = "Create a new sandbox session: an isolated Linux machine with its own \
        files and processes, deleted when its ttl (seconds, default 300) runs out. Answers the \
        session, whose sessionId the other tools take. The default image has Python 3 (numpy, \
        pandas, matplotlib), node and the usual shell tools."
    )]
    async fn create_session(
        &self,
        Parameters(args): Parameters<CreateSessionArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.json_tool(&context, Method::POST, "/v1/sessions", Some(&args))
            .await
    }

    /// Lists the caller's sessions.
    #[tool(
        description = "List your sandbox sessions (one page, oldest first: limit 1-100, \
        default 20; offset). Answers their ids, status, image and expiry."
    )]
    async fn list_sessions(
        &self,
        Parameters(args): Parameters<ListSessionsArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut query = Vec::new();
        if let Some(limit) = args.limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(offset) = args.offset {
            query.push(format!("offset={offset}"));
        }
        let path = format!("/v1/sessions?{}", query.join("&"));
        self.json_tool(&context, Method::GET, &path, None::<&()>)
            .await
    }

    /// Deletes a session.
    #[tool(
        description = "Delete a sandbox session now: every process in it is killed and its \
        files are gone."
    )]
    async fn delete_session(
        &self,
        Parameters(args): Parameters<SessionArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        self.json_tool(
            &context,
            Method::DELETE,
            &session_path(&args.session_id),
            None::<&()>,
        )
        .await
    }

    /// Runs a command to completion.
    #[tool(
        description = "Run a shell command in a session (by /bin/sh -c) and wait for it. \
        Answers exitCode, stdout, stderr, durationMs, timedOut (killed at timeout, default 60 \
        s, at most 3600) and truncated (output past 8 MiB per stream is cut)."
    )]
    async fn run_command(
        &self,
        Parameters(args): Parameters<RunCommandArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("{}/commands", session_path(&args.session_id));
        answer(self.run_to_completion(&context, &path, &args).await)
    }

    /// Runs a program in a fresh process.
    #[tool(
        description = "Run a program in a session: language python, javascript or bash, the \
        source in code, in a fresh process (nothing persists between runs; use execute for \
        that). Answers like run_command."
    )]
    async fn run_code(
        &self,
        Parameters(args): Parameters<RunCodeArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("{}/code", session_path(&args.session_id));
        answer(self.run_to_completion(&context, &path, &args).await)
    }

    /// Creates an interpreter context.
    #[tool(
        description = "Create a stateful interpreter context in a session (language python, \
        javascript or bash). Answers its id, for execute's contextId. Every session already \
        has a Python context named default."
    )]
    async fn create_context(
        &self,
        Parameters(args): Parameters<CreateContextArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!("{}/interpreter/contexts", session_path(&args.session_id));
        self.json_tool(&context, Method::POST, &path, Some(&args))
            .await
    }

    /// Runs a cell in an interpreter context.
    #[tool(
        description = "Run a cell of code in a session's interpreter context, like a Jupyter \
        notebook: variables and imports persist between calls. Answers the cell's stdout and \
        stderr, its result (the last expression: HTML or text), matplotlib figures and other \
        images as image content, any error with its traceback, and the outcome."
    )]
    async fn execute(
        &self,
        Parameters(args): Parameters<ExecuteArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let api = self.api(&context);
        let run = async {
            let path = format!("{}/interpreter/execute", session_path(&args.session_id));
            let body = json_body(&args)?;
            let answer = api
                .send(
                    Method::POST,
                    &path,
                    Some(body),
                    None,
                    EXECUTE_ANSWER_MAX_BYTES,
                )
                .await?;
            let frames = answer
                .body
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty())
                .map(|line| {
                    serde_json::from_slice::<Frame>(line)
                        .map_err(|e| CallError::Json(format!("decoding a frame: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let execution = content::execution(frames);
            Ok(if execution.failed {
                CallToolResult::error(execution.content)
            } else {
                CallToolResult::success(execution.content)
            })
        };
        answer(run.await)
    }

    /// Reads a file.
    #[tool(
        description = "Read a file in a session. encoding text (default; invalid UTF-8 is \
        replaced) or base64 for binary files. At most 8 MiB is answered; a longer file is cut \
        and the answer says so."
    )]
    async fn read_file(
        &self,
        Parameters(args): Parameters<ReadFileArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let api = self.api(&context);
        let read = async {
            let (bytes, truncated) = read_file_head(&api, &args.session_id, &args.path).await?;
            let text = match args.encoding {
                Encoding::Text => String::from_utf8_lossy(&bytes).into_owned(),
                Encoding::Base64 => BASE64.encode(&bytes),
            };
            let mut content = vec![ContentBlock::text(text)];
            if truncated {
                content.push(ContentBlock::text(format!(
                    "[cut: only the first {FILE_READ_MAX_BYTES} bytes of {} are shown]",
                    args.path
                )));
            }
            Ok(CallToolResult::success(content))
        };
        answer(read.await)
    }

    /// Writes a file.
    #[tool(
        description = "Write a file in a session, replacing its content and creating missing \
        parent directories. content is text, or base64 with encoding base64. Answers the path \
        and size written."
    )]
    async fn write_file(
        &self,
        Parameters(args): Parameters<WriteFileArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let api = self.api(&context);
        let write = async {
            let bytes = match args.encoding {
                Encoding::Text => Bytes::from(args.content.into_bytes()),
                Encoding::Base64 => BASE64
                    .decode(args.content.as_bytes())
                    .map(Bytes::from)
                    .map_err(|e| CallError::Argument(format!("content is not base64: {e}")))?,
            };
            let url = format!(
                "{}/files/content?path={}",
                session_path(&args.session_id),
                percent_encode(&args.path)
            );
            let request = http::Request::builder()
                .method(Method::PUT)
                .uri(&url)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes)
                .map_err(|e| CallError::Argument(e.to_string()))?;
            let answer = api.send_request(request, JSON_BODY_MAX_BYTES).await?;
            let value: Value = serde_json::from_slice(&answer.body)
                .map_err(|e| CallError::Json(format!("decoding the upload's answer: {e}")))?;
            Ok(json_result(value))
        };
        answer(write.await)
    }

    /// Lists a directory.
    #[tool(
        description = "List a directory in a session (default /workspace), depth levels deep \
        (1-16, default 1). Answers each entry's path, type, size, mode and modification time."
    )]
    async fn list_files(
        &self,
        Parameters(args): Parameters<ListFilesArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let mut path = format!(
            "{}/files?path={}",
            session_path(&args.session_id),
            percent_encode(args.path.as_deref().unwrap_or(DEFAULT_DIRECTORY))
        );
        if let Some(depth) = args.depth {
            path.push_str(&format!("&depth={depth}"));
        }
        self.json_tool(&context, Method::GET, &path, None::<&()>)
            .await
    }

    /// Makes a signed preview link to a port.
    #[tool(
        description = "Expose a port of a session: a process listening on that port inside \
        the session (a web app, a notebook) becomes reachable by a signed link that needs no \
        token, until ttl seconds pass (1-86400, default 3600). Answers url, token and \
        expiresAt."
    )]
    async fn expose_port(
        &self,
        Parameters(args): Parameters<ExposePortArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let path = format!(
            "{}/ports/{}/link",
            session_path(&args.session_id),
            args.port
        );
        self.json_tool(&context, Method::POST, &path, Some(&args))
            .await
    }
}

impl HutchMcp {
    /// Makes one JSON call and answers its JSON as the tool's result.
    async fn json_tool(
        &self,
        context: &RequestContext<RoleServer>,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<CallToolResult, ErrorData> {
        answer(
            self.api(context)
                .json::<Value>(method, path, body)
                .await
                .map(json_result),
        )
    }

    /// Posts a command or a code run and answers its result (a non-zero exit code is a
    /// result like any other: the model reads `exitCode`).
    async fn run_to_completion(
        &self,
        context: &RequestContext<RoleServer>,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<CallToolResult, CallError> {
        let api = self.api(context);
        let answer = api
            .send(
                Method::POST,
                path,
                Some(json_body(body)?),
                None,
                COMMAND_ANSWER_MAX_BYTES,
            )
            .await?;
        let value: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| CallError::Json(format!("decoding the answer to {path}: {e}")))?;
        Ok(json_result(value))
    }
}
