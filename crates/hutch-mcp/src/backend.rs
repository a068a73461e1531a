//! How tools reach the hutch API: one HTTP request at a time, on behalf of the MCP caller.
//!
//! Every tool is a request to the REST API, so the API's validation, bounds, rate limits,
//! quotas and tenancy apply to MCP exactly as they do to any other client. [`Backend`] is the
//! one thing a transport supplies: [`ClientBackend`] sends over the network with the Rust
//! client (stdio: `hutch mcp`), and the server supplies one that calls its own router
//! in-process with the bearer token of the MCP HTTP request (`POST /v1/mcp`).

use std::error::Error as StdError;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use http::request::Parts;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hutch_client::HutchClient;

/// An error of an answer's body, whatever produced it.
pub type BodyError = Box<dyn StdError + Send + Sync>;

/// An answer's body, read as it arrives.
pub type AnswerBody = UnsyncBoxBody<Bytes, BodyError>;

/// Why a request could not be answered by the API (its error answers are not failures here:
/// they come back as answers with their status and envelope).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The server could not be reached or the exchange broke off.
    #[error("{0}")]
    Transport(String),
    /// The answer's body was longer than the tool may hold.
    #[error("the answer is longer than {limit} bytes")]
    TooLong {
        /// The bound, in bytes.
        limit: usize,
    },
}

/// Sends API requests for the MCP server.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Sends `request` (a path and query relative to the API's root, such as
    /// `/v1/sessions`) as the caller. `origin` is the head of the MCP HTTP request the tool
    /// call came in (its bearer token names the caller), `None` over stdio.
    async fn send(
        &self,
        request: http::Request<Bytes>,
        origin: Option<&Parts>,
    ) -> Result<http::Response<AnswerBody>, BackendError>;
}

/// A [`Backend`] that sends every request to a hutch server with the Rust client and its
/// token: what `hutch mcp` (stdio) uses.
#[derive(Debug, Clone)]
pub struct ClientBackend {
    client: HutchClient,
}

impl ClientBackend {
    /// Sends through `client`.
    pub fn new(client: HutchClient) -> Self {
        ClientBackend { client }
    }
}

#[async_trait]
impl Backend for ClientBackend {
    async fn send(
        &self,
        request: http::Request<Bytes>,
        _origin: Option<&Parts>,
    ) -> Result<http::Response<AnswerBody>, BackendError> {
        let response = self
            .client
            .send_request(request)
            .await
            .map_err(|e| BackendError::Transport(e.to_string()))?;
        Ok(response.map(|body| body.map_err(BodyError::from).boxed_unsync()))
    }
}

/// Reads `body` whole, refusing more than `limit` bytes.
pub(crate) async fn read_bounded(
    mut body: AnswerBody,
    limit: usize,
) -> Result<Bytes, BackendError> {
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BackendError::Transport(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(BackendError::TooLong { limit });
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}
