//! The hutch MCP server: sandbox sessions as Model Context Protocol tools and resources, on
//! the official Rust SDK (`rmcp`).
//!
//! Tools: `create_session`, `list_sessions`, `delete_session`, `run_command`, `run_code`,
//! `create_context`, `execute` (an interpreter cell: figures come back as image content),
//! `read_file`, `write_file`, `list_files` and `expose_port` (a signed preview link).
//! Resources: `hutch://sessions/{sessionId}/files/{+path}`, a file's content or a directory's
//! listing.
//!
//! Every tool is one call of the REST API through a [`Backend`] (module `backend`), so the
//! API's bounds, rate limits, quotas and tenancy hold for MCP as they are. Two transports:
//! [`serve_stdio`] (`hutch mcp`, a [`ClientBackend`] to a server's URL with a token) and
//! [`streamable_http`] (the service `hutch serve` mounts at `POST /v1/mcp`, with a backend
//! that calls the server's own router as the caller of each HTTP request).
//!
//! Module map: `args` the tools' typed arguments · `tools` the tools · `content` interpreter
//! frames as MCP content · `resources` files as resources · `api` one API call of a tool ·
//! `backend` how calls reach the API.

// Tests may unwrap; the non-test build is still checked for it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
pub mod args;
pub mod backend;
mod content;
mod resources;
mod tools;

use std::sync::Arc;

use hutch_api::limits::JSON_BODY_MAX_BYTES;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, PaginatedRequestParams, ReadResourceRequestParams,
    ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

pub use backend::{AnswerBody, Backend, BackendError, BodyError, ClientBackend};
pub use tools::HutchMcp;

/// What the server tells clients about itself when they connect.
const INSTRUCTIONS: &str = "hutch runs code in isolated Linux sandboxes (sessions). Create a \
session with create_session, then run shell commands (run_command), programs (run_code) or \
notebook-style cells whose variables persist (execute: figures come back as images), read and \
write files, and expose a port a server listens on (expose_port). Sessions are deleted when \
their ttl runs out; delete_session ends one sooner. A session's files are also resources: \
hutch://sessions/{sessionId}/files/{path}.";

impl ServerHandler for HutchMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("hutch", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let context = ToolCallContext::new(self, request, context);
        self.router().call(context).await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.router().list_all()))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let cursor = request.as_ref().and_then(|r| r.cursor.as_deref());
        resources::list(&self.api(&context), cursor).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(resources::templates())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.api(&context), &request.uri)
            .await
            .map(Into::into)
    }
}

/// Why the stdio server stopped with an error.
#[derive(Debug, thiserror::Error)]
#[error("the MCP session on stdio failed: {0}")]
pub struct StdioError(String);

/// Serves MCP on this process's standard input and output until the client closes them.
pub async fn serve_stdio(backend: Arc<dyn Backend>) -> Result<(), StdioError> {
    let service = HutchMcp::new(backend)
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| StdioError(e.to_string()))?;
    service
        .waiting()
        .await
        .map_err(|e| StdioError(e.to_string()))?;
    Ok(())
}

/// Why a request body is not one JSON-RPC message of MCP.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    /// Not JSON (JSON-RPC's parse error, -32700).
    #[error("Parse error: {0}")]
    Parse(#[source] serde_json::Error),
    /// JSON, but no JSON-RPC request, notification or response of MCP (-32600).
    #[error("Invalid Request: {0}")]
    Invalid(#[source] serde_json::Error),
}

impl MessageError {
    /// The JSON-RPC error code.
    pub fn code(&self) -> i32 {
        match self {
            MessageError::Parse(_) => -32700,
            MessageError::Invalid(_) => -32600,
        }
    }

    /// The JSON-RPC error answer, with a null `id` (the message's own could not be read).
    pub fn answer(&self) -> serde_json::Value {
        serde_json::json!({
            "jsonrpc": "2.0",
            "id": null,
            "error": {"code": self.code(), "message": self.to_string()},
        })
    }
}

/// Checks that `body` is one JSON-RPC message an MCP client may send, as the streamable HTTP
/// transport will read it.
pub fn check_message(body: &[u8]) -> Result<(), MessageError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(MessageError::Parse)?;
    serde_json::from_value::<rmcp::model::ClientJsonRpcMessage>(value)
        .map(drop)
        .map_err(MessageError::Invalid)
}

/// The streamable HTTP transport over `backend`: a tower service answering `POST` (and `GET`
/// and `DELETE` with 405, as a server without sessions does).
///
/// Stateless: every request carries its own bearer token and is served alone, so a tenant's
/// requests never share state with another's and any number of server processes could serve
/// them. Answers are JSON, not event streams. The request body is bounded like any JSON body
/// of the API. The `Host` check against DNS rebinding is off: every request needs a bearer
/// token, which a page rebound to this address does not have.
pub fn streamable_http(
    backend: Arc<dyn Backend>,
) -> StreamableHttpService<HutchMcp, NeverSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .disable_allowed_hosts();
    config.max_request_body_bytes = JSON_BODY_MAX_BYTES;
    StreamableHttpService::new(
        move || Ok(HutchMcp::new(Arc::clone(&backend))),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

#[cfg(test)]
mod tests {
    use super::{MessageError, check_message};

    #[test]
    fn bodies_that_are_no_mcp_message_are_told_apart() {
        assert!(check_message(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#).is_ok());
        assert!(
            check_message(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).is_ok()
        );
        for (body, code) in [
            (&b"{bad"[..], -32700),
            (b"", -32700),
            (br#"{"foo":1}"#, -32600),
            (b"[]", -32600),
            (b"42", -32600),
        ] {
            let err = check_message(body).unwrap_err();
            assert_eq!(err.code(), code, "{}", String::from_utf8_lossy(body));
            assert_eq!(err.answer()["error"]["code"], code);
            assert!(err.answer()["id"].is_null());
            assert!(matches!(
                err,
                MessageError::Parse(_) | MessageError::Invalid(_)
            ));
        }
    }
}
