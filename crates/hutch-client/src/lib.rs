//! Rust client of the hutch API, used by the CLI, the benchmarks and the tests.
//!
//! [`HutchClient`] speaks plain HTTP/1.1 to `hutch serve` over a pooled keep-alive connection
//! (hyper-util's client), sends the bearer token on every request, and decodes the wire types
//! of [`hutch_api`]. Error answers come back as [`ClientError::Api`] with the decoded
//! [`ErrorBody`] envelope, so callers can match on its stable [`hutch_api::ErrorCode`].
//!
//! It knows the API, not the server's internals. TLS is not built in: put a TLS-terminating
//! proxy in front of the server when it is reached over a network.
//!
//! ```no_run
//! # async fn demo() -> Result<(), hutch_client::ClientError> {
//! use hutch_api::{CommandRequest, CreateSessionRequest};
//!
//! let client = hutch_client::HutchClient::new("http://127.0.0.1:7420", "TOKEN")?;
//! let session = client.create_session(&CreateSessionRequest::default()).await?;
//! let result = client
//!     .run_command(
//!         session.session_id,
//!         &CommandRequest { command: Some("echo hi".into()), ..Default::default() },
//!     )
//!     .await?;
//! assert_eq!(result.stdout, "hi\n");
//! client.delete_session(session.session_id).await?;
//! # Ok(()) }
//! ```

pub mod files;
pub mod images;
pub mod processes;
pub mod terminal;

pub use processes::percent_encode;

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hutch_api::{
    CommandRequest, CommandResult, CreateSessionRequest, ErrorBody, Session, SessionList,
    SessionStats, UpdateSessionRequest,
};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The path every API route starts with; a base URL may end with it.
const API_PREFIX: &str = "/v1";

/// How long an idle pooled connection is kept: less than the server's header timeout (30 s
/// by default), which closes idle connections, so a request is not sent on a connection the
/// server is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The base URL or a path could not be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given or built.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent as a header.
    #[error("the token contains characters not allowed in a header")]
    InvalidToken,
    /// The server answered with the error envelope.
    #[error("{status} {}: {}", body.error.code.as_str(), body.error.message)]
    Api {
        /// The HTTP status.
        status: StatusCode,
        /// The decoded envelope.
        body: ErrorBody,
    },
    /// The server answered an error status without the envelope (such as a proxy in between).
    #[error("unexpected answer {status}: {body}")]
    UnexpectedStatus {
        /// The HTTP status.
        status: StatusCode,
        /// The body as text (lossy).
        body: String,
    },
    /// The server could not be reached at all (refused, no route, no such host).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The server's base URL.
        url: String,
        /// Why, in the words of the innermost error (such as `Connection refused (os error
        /// 111)`).
        reason: String,
    },
    /// A WebSocket failed.
    #[error("websocket: {0}")]
    WebSocket(#[source] Box<tokio_tungstenite::tungstenite::Error>),
    /// The server sent something the client does not understand.
    #[error("protocol: {0}")]
    Protocol(String),
    /// A success answer could not be decoded.
    #[error("decoding the answer to {method} {path}")]
    Decode {
        /// The request method.
        method: Method,
        /// The request path.
        path: String,
        /// What serde said.
        #[source]
        source: serde_json::Error,
    },
    /// The request body could not be encoded.
    #[error("encoding the request body")]
    Encode(#[source] serde_json::Error),
    /// Connecting, sending or receiving failed.
    #[error("{method} {path}: transport error")]
    Transport {
        /// The request method.
        method: Method,
        /// The request path.
        path: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ClientError {
    /// Whether this is an error of the WebSocket transport or protocol.
    pub fn is_stream_error(&self) -> bool {
        matches!(self, ClientError::WebSocket(_) | ClientError::Protocol(_))
    }

    /// The API error code, when the server answered with the envelope.
    pub fn code(&self) -> Option<hutch_api::ErrorCode> {
        match self {
            ClientError::Api { body, .. } => Some(body.error.code),
            _ => None,
        }
    }
}

/// A client of one hutch server, holding one token. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct HutchClient {
    http: Client<HttpConnector, Full<Bytes>>,
    /// `scheme://authority[/prefix]`, without a trailing slash.
    base: String,
    auth: HeaderValue,
}

impl std::fmt::Debug for HutchClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HutchClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl HutchClient {
    /// A client of the server at `base_url` using `token`.
    ///
    /// `base_url` is the server's address with or without the API's `/v1`
    /// (`http://127.0.0.1:7420` and `http://127.0.0.1:7420/v1` are the same server), as the
    /// Python SDK takes it; a path before it is kept (a server behind a proxy at
    /// `http://proxy/hutch/v1`). Only `http` URLs are supported. Requests must be made within
    /// a tokio runtime.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = base_url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(invalid(&format!(
                    "scheme {other} is not supported; use http (terminate TLS in a proxy)"
                )));
            }
            None => return Err(invalid("no scheme; use http://host:port")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        if uri.query().is_some() {
            return Err(invalid("a base URL cannot have a query"));
        }
        let path = uri.path().trim_end_matches('/');
        let prefix = path.strip_suffix(API_PREFIX).unwrap_or(path);
        let base = format!("http://{authority}{prefix}");
        let mut auth = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ClientError::InvalidToken)?;
        auth.set_sensitive(true);
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        Ok(HutchClient { http, base, auth })
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /health`: `Ok` when the server is up and started.
    pub async fn health(&self) -> Result<(), ClientError> {
        let (status, body) = self.send(Method::GET, "/health", None, false).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_from(status, &body))
        }
    }

    /// `POST /v1/sessions`.
    pub async fn create_session(&self, req: &CreateSessionRequest) -> Result<Session, ClientError> {
        self.call(Method::POST, "/v1/sessions", Some(req)).await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn get_session(&self, id: Uuid) -> Result<Session, ClientError> {
        self.call(Method::GET, &format!("/v1/sessions/{id}"), None::<&()>)
            .await
    }

    /// `GET /v1/sessions?limit&offset`; `None` leaves the server's default.
    pub async fn list_sessions(
        &self,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<SessionList, ClientError> {
        let mut query = Vec::new();
        if let Some(limit) = limit {
            query.push(format!("limit={limit}"));
        }
        if let Some(offset) = offset {
            query.push(format!("offset={offset}"));
        }
        let path = if query.is_empty() {
            "/v1/sessions".to_owned()
        } else {
            format!("/v1/sessions?{}", query.join("&"))
        };
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `PATCH /v1/sessions/{id}`.
    pub async fn update_session(
        &self,
        id: Uuid,
        req: &UpdateSessionRequest,
    ) -> Result<Session, ClientError> {
        self.call(Method::PATCH, &format!("/v1/sessions/{id}"), Some(req))
            .await
    }

    /// `DELETE /v1/sessions/{id}`; returns the session as it was.
    pub async fn delete_session(&self, id: Uuid) -> Result<Session, ClientError> {
        self.call(Method::DELETE, &format!("/v1/sessions/{id}"), None::<&()>)
            .await
    }

    /// `POST /v1/sessions/{id}/pause`: freezes the session; returns it `PAUSED`.
    pub async fn pause_session(&self, id: Uuid) -> Result<Session, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/pause"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sessions/{id}/resume`: thaws a paused session; returns it `RUNNING`.
    pub async fn resume_session(&self, id: Uuid) -> Result<Session, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/resume"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/sessions/{id}/stats`: what the session's processes use now.
    pub async fn session_stats(&self, id: Uuid) -> Result<SessionStats, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/sessions/{id}/stats"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sessions/{id}/commands`: runs a command to completion.
    pub async fn run_command(
        &self,
        id: Uuid,
        req: &CommandRequest,
    ) -> Result<CommandResult, ClientError> {
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/commands"),
            Some(req),
        )
        .await
    }

    /// Sends any request with the token; returns the status and the whole body, whatever the
    /// status. `path` starts with `/` and may carry a query.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        self.send(method, path, body, true).await
    }

    /// Sends `request` with the token and answers as soon as the head arrives, its body still
    /// to read, whatever the status. The request's URI is a path with an optional query
    /// (relative to the base URL); its headers (such as `Range` or `Content-Type`) are sent
    /// as they are.
    pub async fn send_request(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let (parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned());
        let method = parts.method;
        let mut builder = self.request_head(method.clone(), &path, true)?;
        for (name, value) in &parts.headers {
            if name != AUTHORIZATION {
                builder = builder.header(name, value);
            }
        }
        let req = builder
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport {
                method: method.clone(),
                path: path.clone(),
                source: Box::new(e),
            })?;
        self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                self.connect_error(&e)
            } else {
                ClientError::Transport {
                    method,
                    path,
                    source: Box::new(e),
                }
            }
        })
    }

    /// Sends a JSON request and decodes a JSON success answer or the error envelope (for a
    /// route this client has no method of its own for).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, ClientError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(ClientError::Encode)?
            .map(Bytes::from);
        let (status, bytes) = self.send(method.clone(), path, body, true).await?;
        if !status.is_success() {
            return Err(error_from(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        authorize: bool,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let response = self.open(method.clone(), path, body, authorize).await?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Transport {
                method,
                path: path.to_owned(),
                source: Box::new(e),
            })?
            .to_bytes();
        Ok((status, bytes))
    }

    /// Sends a request and answers the response as it starts, its body still to read.
    pub(crate) async fn open(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        authorize: bool,
    ) -> Result<http::Response<hyper::body::Incoming>, ClientError> {
        let transport = |source: Box<dyn std::error::Error + Send + Sync>| ClientError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            source,
        };
        let mut builder = self.request_head(method.clone(), path, authorize)?;
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let req = builder
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| transport(Box::new(e)))?;
        self.http.request(req).await.map_err(|e| {
            if e.is_connect() {
                self.connect_error(&e)
            } else {
                transport(Box::new(e))
            }
        })
    }

    /// The method, URL and (when `authorize`) token of a request to `path`.
    pub(crate) fn request_head(
        &self,
        method: Method,
        path: &str,
        authorize: bool,
    ) -> Result<http::request::Builder, ClientError> {
        let url = format!("{}{path}", self.base);
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| ClientError::InvalidUrl {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut builder = Request::builder().method(method).uri(uri);
        if authorize {
            builder = builder.header(AUTHORIZATION, self.auth.clone());
        }
        Ok(builder)
    }
}

impl HutchClient {
    /// The error of a connection that could not be made, named by its innermost cause.
    fn connect_error(&self, error: &(dyn std::error::Error + 'static)) -> ClientError {
        let mut cause = error;
        while let Some(source) = cause.source() {
            cause = source;
        }
        ClientError::Connect {
            url: self.base.clone(),
            reason: cause.to_string(),
        }
    }
}

/// The error for a non-success answer: the envelope if it is one.
fn error_from(status: StatusCode, body: &[u8]) -> ClientError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) => ClientError::Api { status, body },
        Err(_) => ClientError::UnexpectedStatus {
            status,
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use hutch_api::ErrorCode;

    use super::*;

    #[test]
    fn base_urls() {
        let c = HutchClient::new("http://127.0.0.1:7420/", "t").unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:7420");
        let c = HutchClient::new("http://h:1/prefix/", "t").unwrap();
        assert_eq!(c.base_url(), "http://h:1/prefix");
        let c = HutchClient::new("http://127.0.0.1:7420/v1", "t").unwrap();
        assert_eq!(
            c.base_url(),
            "http://127.0.0.1:7420",
            "the API prefix is optional"
        );
        let c = HutchClient::new("http://h:1/prefix/v1/", "t").unwrap();
        assert_eq!(c.base_url(), "http://h:1/prefix");
        for bad in ["https://h", "h:1", "not a url", "http://h/?q=1"] {
            assert!(
                matches!(
                    HutchClient::new(bad, "t"),
                    Err(ClientError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            HutchClient::new("http://h", "bad\ntoken"),
            Err(ClientError::InvalidToken)
        ));
    }

    #[test]
    fn envelopes_decode_into_api_errors() {
        let err = error_from(
            StatusCode::NOT_FOUND,
            br#"{"error":{"code":"session_not_found","message":"no session x"}}"#,
        );
        assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));
        let err = error_from(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert!(matches!(err, ClientError::UnexpectedStatus { .. }));
        assert_eq!(err.code(), None);
    }
}
