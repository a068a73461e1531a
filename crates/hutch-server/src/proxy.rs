//! Forwarding `/v1/sessions/{id}/{*rest}` to the session's agent.
//!
//! After authentication and the tenant check, the control plane takes a kept connection of
//! the session's agent from [`pool`], or opens one with [`hutch_sandbox::Runtime::connect`]
//! (a unix stream, or TCP after the preface, speaking HTTP/1.1), and relays one exchange:
//!
//! 1. the request goes out as `METHOD /{rest}?{query}` with the client's headers, minus the
//!    hop-by-hop ones and `Authorization` (the agent knows nothing of tokens); `Host` is set to
//!    `hutch-agent`; the body is streamed, never buffered, and has no size limit here (the agent
//!    enforces its own);
//! 2. the agent's status, headers (minus hop-by-hop) and streamed body come back as they are;
//!    an agent that answers before reading the whole body (a refusal, a quota hit) and closes
//!    is relayed like any other answer ([`agent_io`]);
//! 3. WebSocket and other upgrades pass through: when the client asks to upgrade and the agent
//!    answers `101 Switching Protocols`, both upgraded connections are spliced together until
//!    either side closes or nothing moves for [`AgentLink::idle_timeout`] ([`splice`]); the
//!    client's connection keeps counting against its connection bounds meanwhile. Any other
//!    answer to an upgrade request is relayed as it is.
//!
//! While the answer's head has not come, a watchdog asks the agent's `/health` on a
//! connection of its own every [`AgentLink::timeout`]; when that probe is not answered within
//! the same time the agent is stopped or stuck, and the request answers 504
//! `sandbox_timeout` (unless the session is paused: then the request waits for the resume). There is no deadline on a whole exchange: a command may run for hours
//! and a stream may last as long.
//!
//! A connection that cannot be opened or that fails before the agent's response head answers
//! 502 `sandbox_unavailable`. Errors after the head has been sent cut the response short.

mod agent_io;
pub(crate) mod pool;
pub(crate) mod splice;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hutch_sandbox::AgentConnection;
use hutch_sandbox::Runtime;
use hyper_util::rt::TokioIo;
use uuid::Uuid;

use self::agent_io::{AgentStream, ClientBody, Relayed};
use self::pool::{AgentConn, AgentPool, Lease};
use self::splice::{SpliceEnd, splice};
use crate::connections::ConnectionSlot;
use crate::error::ApiError;

/// The `Host` the agent sees.
const AGENT_HOST: &str = "hutch-agent";

/// Headers that describe one connection, not the message, and so are never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// One session's agent as the proxy reaches it: more connections for the watchdog's probes,
/// and how long the agent may take to answer one.
pub(crate) struct AgentLink {
    /// The session.
    pub(crate) id: Uuid,
    /// The session engine: whether the session is paused (a frozen agent is not a stuck one).
    pub(crate) sessions: Arc<crate::sessions::Sessions>,
    /// Keeps the session awake (no auto-pause) while the exchange lasts.
    pub(crate) busy: crate::sessions::Busy,
    /// Opens connections to the session's agent.
    pub(crate) runtime: Arc<dyn Runtime>,
    /// How long a probe may wait for the agent's answer, and how often one is sent while a
    /// request waits for its answer's head.
    pub(crate) timeout: Duration,
    /// How long an upgraded connection may carry nothing in either direction.
    pub(crate) idle_timeout: Duration,
    /// The kept connections to agents.
    pub(crate) pool: Arc<AgentPool>,
    /// Counts connections opened and reused.
    pub(crate) metrics: crate::metrics::Metrics,
}

impl AgentLink {
    /// Completes when the agent leaves a `/health` probe unanswered for [`Self::timeout`];
    /// probes are sent every [`Self::timeout`] for as long as this is polled.
    async fn unresponsive(&self) {
        loop {
            tokio::time::sleep(self.timeout).await;
            let probe = async {
                let stream = self
                    .runtime
                    .connect(self.id)
                    .await
                    .map_err(|e| e.to_string())?;
                agent_request(stream, "GET", "/health", Body::empty()).await
            };
            match tokio::time::timeout(self.timeout, probe).await {
                // A paused session's request waits for the resume.
                Err(_) if self.sessions.waits_for_resume(self.id).await => {}
                Err(_) => return,
                // Answered, or the agent is gone (the request itself then fails on its own).
                Ok(result) => {
                    if let Err(err) = result {
                        tracing::debug!(session = %self.id, error = %err, "health probe failed");
                    }
                }
            }
        }
    }
}

/// Relays `req` to the agent of `agent.id`: an ordinary request on a kept connection of the
/// session's pool when one is idle ([`pool`]), an upgrade on a connection of its own.
pub(crate) async fn forward(agent: AgentLink, mut req: Request) -> Result<Response, ApiError> {
    let id = agent.id;
    let target = agent_target(req.uri()).ok_or_else(|| ApiError::NotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    })?;
    let upgrade = requested_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    // An upgraded connection keeps counting against the client's connection bounds.
    let slot = req.extensions().get::<ConnectionSlot>().cloned();

    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::AUTHORIZATION);
    parts
        .headers
        .insert(header::HOST, HeaderValue::from_static(AGENT_HOST));
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    let head = Head {
        method: parts.method,
        uri: target,
        headers: parts.headers,
    };

    let Some(client_upgrade) = client_upgrade else {
        return forward_pooled(agent, head, body).await;
    };
    let mut conn = open(&agent, true).await?;
    let upstream = head.request(ClientBody::new(body));
    let mut response = tokio::select! {
        response = conn.sender.send_request(upstream) => response.map_err(|e| unavailable(id, e))?,
        () = agent.unresponsive() => {
            return Err(ApiError::SandboxTimeout { id, waited: agent.timeout });
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Relayed as it is; the connection, which may have been upgraded, is not kept.
        let whole = Arc::new(AtomicBool::new(false));
        return Ok(relay(agent, response, conn, None, whole));
    }

    let agent_upgrade = hyper::upgrade::on(&mut response);
    let websocket = response
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|protocol| protocol.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let idle_timeout = agent.idle_timeout;
    let busy = agent.busy;
    tokio::spawn(async move {
        let upgraded = tokio::try_join!(client_upgrade, agent_upgrade);
        // Its task has handed the socket over to the upgrade (or failed).
        drop(conn);
        let (client, agent) = match upgraded {
            Ok(pair) => pair,
            Err(err) => {
                tracing::debug!(session = %id, error = %err, "upgrade failed");
                return;
            }
        };
        match splice(
            TokioIo::new(client),
            TokioIo::new(agent),
            idle_timeout,
            websocket,
        )
        .await
        {
            SpliceEnd::Closed(Ok(_)) => {}
            SpliceEnd::Closed(Err(err)) => {
                tracing::debug!(session = %id, error = %err, "upgraded connection ended with an error");
            }
            SpliceEnd::Idle => {
                tracing::debug!(session = %id, "upgraded connection closed: idle");
            }
        }
        drop(slot);
        drop(busy);
    });
    let (mut parts, body) = response.into_parts();
    let agent_upgrade_header = parts.headers.get(header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Some(value) = agent_upgrade_header.or(upgrade) {
        parts.headers.insert(header::UPGRADE, value);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Largest request body held in memory so that its request can be sent again on a fresh
/// connection when a kept one turns out to be stale; larger bodies stream.
const REPLAY_MAX: usize = 64 * 1024;

/// What a request to the agent says besides its body.
struct Head {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Head {
    /// The request with `body`.
    fn request(&self, body: ClientBody) -> axum::http::Request<Body> {
        let mut request = axum::http::Request::new(Body::new(body));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Whether sending a request twice has the effect of sending it once (RFC 9110, 9.2.2).
fn idempotent(method: &Method) -> bool {
    [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::TRACE,
    ]
    .contains(method)
}

/// The 502 of an exchange that failed before the agent's answer, or the 400 of one whose
/// client stopped sending its body (it hung up, or sent less than its `Content-Length`): the
/// sandbox is fine then, and the server log does not say otherwise.
fn unavailable(id: Uuid, err: impl std::error::Error + Send + Sync + 'static) -> ApiError {
    if client_body_failed(&err) {
        tracing::debug!(session = %id, error = %err, "the client's request body ended early");
        return ApiError::invalid(
            "body",
            "the request body ended before it was complete (the client stopped sending it)",
        );
    }
    ApiError::SandboxUnavailable {
        id,
        source: Box::new(err),
    }
}

/// Whether `err` comes from reading the client's body: [`ClientBody`]'s errors are
/// `axum::Error`s, and nothing else on the way to the agent makes one.
fn client_body_failed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<axum::Error>() {
            return true;
        }
        next = e.source();
    }
    false
}

/// Opens a new connection to the agent of `agent.id` (`strict`: one that may be upgraded).
async fn open(agent: &AgentLink, strict: bool) -> Result<AgentConn, ApiError> {
    let id = agent.id;
    let stream = agent
        .runtime
        .connect(id)
        .await
        .map_err(|e| unavailable(id, e))?;
    let stream = if strict {
        AgentStream::strict(stream)
    } else {
        AgentStream::new(stream)
    };
    let wire = stream.wire();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(id, e))?;
    let task = tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(session = %id, error = %err, "agent connection ended with an error");
        }
    });
    agent.metrics.count_agent_connection(false);
    Ok(AgentConn { sender, task, wire })
}

/// Relays an ordinary request: on a kept connection of the session when one is idle, else on
/// a new one, which is kept after the exchange when it ends cleanly.
///
/// A kept connection the agent closed meanwhile can fail under the request. It is retried
/// once on a new connection when no byte of the answer came back and the request is either
/// provably unsent (hyper handed it back, or the socket took none of it) or idempotent, and
/// its body is at hand (empty, or at most [`REPLAY_MAX`] bytes, which are read before the
/// request goes out).
async fn forward_pooled(agent: AgentLink, head: Head, body: Body) -> Result<Response, ApiError> {
    let id = agent.id;
    let (replay, streamed) = match replayable(&head.headers, body).await? {
        Ok(bytes) => (Some(bytes), None),
        Err(body) => (None, Some(body)),
    };
    let lease = agent.pool.lease(id);
    let exchange = async {
        let first = match (&replay, streamed) {
            (Some(bytes), _) => ClientBody::new(Body::from(bytes.clone())),
            (None, body) => ClientBody::new(body.unwrap_or_default()),
        };
        let whole = first.whole();
        let Some(mut conn) = agent.pool.checkout(id).await else {
            let mut conn = open(&agent, false).await?;
            let response = conn
                .sender
                .send_request(head.request(first))
                .await
                .map_err(|e| unavailable(id, e))?;
            return Ok((response, conn, whole));
        };
        agent.metrics.count_agent_connection(true);
        let (written, read) = (
            conn.wire.written.load(Ordering::Acquire),
            conn.wire.read.load(Ordering::Acquire),
        );
        let mut err = match conn.sender.try_send_request(head.request(first)).await {
            Ok(response) => return Ok((response, conn, whole)),
            Err(err) => err,
        };
        let answered = conn.wire.read.load(Ordering::Acquire) != read;
        let untouched = conn.wire.written.load(Ordering::Acquire) == written;
        drop(conn);
        let retry = match (err.take_message(), &replay) {
            (Some(unsent), _) => Some((unsent, whole)),
            (None, Some(bytes)) if !answered && (untouched || idempotent(&head.method)) => {
                let body = ClientBody::new(Body::from(bytes.clone()));
                let whole = body.whole();
                Some((head.request(body), whole))
            }
            (None, _) => None,
        };
        let Some((request, whole)) = retry else {
            return Err(unavailable(id, err.into_error()));
        };
        tracing::debug!(session = %id, error = %err.error(), "a kept agent connection was stale; retrying on a new one");
        let mut conn = open(&agent, false).await?;
        let response = conn
            .sender
            .send_request(request)
            .await
            .map_err(|e| unavailable(id, e))?;
        Ok((response, conn, whole))
    };
    let (response, conn, whole) = tokio::select! {
        exchange = exchange => exchange?,
        () = agent.unresponsive() => {
            return Err(ApiError::SandboxTimeout { id, waited: agent.timeout });
        }
    };
    Ok(relay(agent, response, conn, Some(lease), whole))
}

/// `body` read into memory (`Ok(Ok(bytes))`) when it is empty or declares at most
/// [`REPLAY_MAX`] bytes; otherwise it streams (`Ok(Err(body))`).
async fn replayable(headers: &HeaderMap, body: Body) -> Result<Result<Bytes, Body>, ApiError> {
    if hyper::body::Body::is_end_stream(&body) {
        return Ok(Ok(Bytes::new()));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_none_or(|len| len > REPLAY_MAX) {
        return Ok(Err(body));
    }
    let bytes = http_body_util::Limited::new(body, REPLAY_MAX)
        .collect()
        .await
        .map_err(|err| ApiError::InvalidRequest {
            message: format!("reading the request body: {err}"),
            field: None,
        })?
        .to_bytes();
    Ok(Ok(bytes))
}

/// The client's response: the agent's `response` with its body carrying `conn`, which goes
/// back through `lease` (when given) once the exchange is over.
fn relay(
    agent: AgentLink,
    response: axum::http::Response<hyper::body::Incoming>,
    conn: AgentConn,
    lease: Option<Lease>,
    request_whole: Arc<AtomicBool>,
) -> Response {
    let (mut parts, body) = response.into_parts();
    // The agent closes the connection after this answer.
    let closes = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"));
    // A 413 refuses a body the agent stopped reading: hyper then closes the connection
    // without saying so, and the next request on it would fail.
    let refused_body = parts.status == StatusCode::PAYLOAD_TOO_LARGE;
    let lease = lease.filter(|_| !closes && !refused_body && parts.version == Version::HTTP_11);
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::UPGRADE);
    let body = agent
        .busy
        .hold_through(Body::new(Relayed::new(body, conn, lease, request_whole)));
    Response::from_parts(parts, body).into_response()
}

/// The sending half of an HTTP/1.1 connection to an agent, for the control plane's own
/// requests (storage transfers).
pub(crate) type AgentSender = hyper::client::conn::http1::SendRequest<Body>;

/// Opens an HTTP/1.1 connection over `stream`; the returned task drives it until the sender
/// is dropped (or the task is aborted).
pub(crate) async fn agent_connection(
    stream: AgentConnection,
) -> Result<(AgentSender, tokio::task::JoinHandle<()>), String> {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let task = tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "agent connection ended with an error");
        }
    });
    Ok((sender, task))
}

/// Sends one request of the control plane's own on `sender`; the body streams.
pub(crate) async fn agent_send(
    sender: &mut AgentSender,
    method: &str,
    target: &str,
    body: Body,
    content_type: Option<&str>,
) -> Result<Response<hyper::body::Incoming>, String> {
    let mut request = axum::http::Request::builder()
        .method(method)
        .uri(target)
        .header(header::HOST, AGENT_HOST);
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    sender.ready().await.map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// One request of the control plane's own on a new connection over `stream`.
pub(crate) async fn agent_request(
    stream: AgentConnection,
    method: &str,
    target: &str,
    body: Body,
) -> Result<Response<hyper::body::Incoming>, String> {
    let (mut sender, _connection) = agent_connection(stream).await?;
    agent_send(&mut sender, method, target, body, None).await
}

/// `/{rest}?{query}` from `/v1/sessions/{id}/{rest}?{query}`, keeping the client's encoding.
fn agent_target(uri: &Uri) -> Option<Uri> {
    let rest = uri.path().strip_prefix("/v1/sessions/")?;
    let (_id, rest) = rest.split_once('/')?;
    let target = match uri.query() {
        Some(query) => format!("/{rest}?{query}"),
        None => format!("/{rest}"),
    };
    target.parse().ok()
}

/// The protocol the client asks to upgrade to (`Connection: upgrade` plus `Upgrade: x`).
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// Removes the hop-by-hop headers, including any the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_keeps_rest_and_query() {
        let uri: Uri = "/v1/sessions/0191/files/content?path=%2Ftmp%2Fa%20b"
            .parse()
            .unwrap();
        assert_eq!(
            agent_target(&uri).unwrap(),
            "/files/content?path=%2Ftmp%2Fa%20b"
        );
        let uri: Uri = "/v1/sessions/0191/commands".parse().unwrap();
        assert_eq!(agent_target(&uri).unwrap(), "/commands");
        let uri: Uri = "/v1/other".parse().unwrap();
        assert!(agent_target(&uri).is_none());
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(requested_upgrade(&headers).is_none());
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(requested_upgrade(&headers).unwrap(), "websocket");
    }

    #[test]
    fn a_client_that_stops_sending_is_not_a_sandbox_fault() {
        /// What hyper hands back when the body it sends fails: the body's error as the source.
        #[derive(Debug, thiserror::Error)]
        #[error("error from user's Body stream")]
        struct SendFailed(#[source] axum::Error);
        let id = Uuid::nil();
        let body = SendFailed(axum::Error::new(std::io::Error::other(
            "end of file before message length reached",
        )));
        assert!(client_body_failed(&body));
        assert!(matches!(
            unavailable(id, body),
            ApiError::InvalidRequest { .. }
        ));
        let agent = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(!client_body_failed(&agent));
        assert!(matches!(
            unavailable(id, agent),
            ApiError::SandboxUnavailable { .. }
        ));
    }
}
