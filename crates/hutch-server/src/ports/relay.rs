//! Relaying one HTTP exchange (or WebSocket) to a port inside a session.
//!
//! The control plane asks the session's agent for a tunnel (`GET /ports/{port}/connect`,
//! upgraded to [`TUNNEL_PROTOCOL`]: the agent connects to the port from inside the session's
//! network namespace), then speaks HTTP/1.1 through it as a reverse proxy:
//!
//! - the request goes out with its own target minus the route's prefix, its headers minus
//!   the hop-by-hop ones (and minus the bearer token on the `/v1` form), its `Host` kept, and
//!   `X-Forwarded-Host`, `X-Forwarded-Proto` and `X-Forwarded-Prefix` set; the body streams;
//! - the app's status, headers and streamed body come back, a `Location` that is an absolute
//!   path gaining the prefix (so the app's redirects stay under it);
//! - when the client asks to upgrade (WebSocket) and the app answers `101`, both upgraded
//!   connections are spliced until either side closes.
//!
//! Every relayed connection holds one of the session's connection slots until it ends. A port
//! nothing listens on answers the agent's 502 `port_unreachable` at once.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{StatusCode, Uri, Version};
use axum::response::Response;
use hutch_api::ports::{TUNNEL_PROTOCOL, tunnel_path};
use hutch_sandbox::AgentConnection;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use uuid::Uuid;

use super::PortSlot;
use super::traffic::Counted;
use crate::error::ApiError;
use crate::proxy::{requested_upgrade, strip_hop_by_hop};

/// The `Host` the agent sees on tunnel requests.
const AGENT_HOST: &str = "hutch-agent";

/// Where a request is relayed and how it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The session.
    pub(crate) session: Uuid,
    /// The port inside it.
    pub(crate) port: u16,
    /// The path prefix the route adds before the app's own paths (`/v1/sessions/{id}/ports/8000`
    /// or `/preview/{token}`); empty on a preview host.
    pub(crate) prefix: String,
    /// Whether the client reached the control plane over TLS.
    pub(crate) https: bool,
    /// Whether the client's `Authorization` header is the control plane's bearer token (and
    /// so is not passed on), rather than the app's own.
    pub(crate) strip_authorization: bool,
    /// A cookie of the control plane's own, not passed on.
    pub(crate) strip_cookie: Option<&'static str>,
}

/// Relays `req` to `target` through the session's agent (reached over `stream`), holding
/// `slot` until the exchange, or the upgraded connection, ends.
pub(crate) async fn relay(
    target: Target,
    stream: AgentConnection,
    slot: PortSlot,
    mut req: Request,
) -> Result<Response, ApiError> {
    let id = target.session;
    let tunnel = match open_tunnel(id, target.port, stream).await? {
        Tunnel::Open(tunnel) => tunnel,
        Tunnel::Refused(response) => return Ok(response),
    };
    // Everything through the tunnel, a WebSocket's frames after a `101` included, is counted.
    let tunnel = TokioIo::new(Counted::new(
        TokioIo::new(tunnel),
        Arc::clone(&slot.traffic),
    ));
    let upgrade = requested_upgrade(req.headers());
    let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
    let app_target = app_target(req.uri(), &target.prefix)?;

    let (mut parts, body) = req.into_parts();
    let client_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if target.strip_authorization {
        parts.headers.remove(header::AUTHORIZATION);
    }
    if let Some(cookie) = target.strip_cookie {
        remove_cookie(&mut parts.headers, cookie);
    }
    set_forwarded(&mut parts.headers, &target, client_host);
    if let Some(protocol) = &upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, protocol.clone());
    }
    parts.uri = app_target;
    parts.version = Version::HTTP_11;

    let unreachable = |reason: String| ApiError::PortUnreachable {
        id,
        port: target.port,
        reason,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(tunnel)
        .await
        .map_err(|e| unreachable(format!("speaking HTTP to the port: {e}")))?;
    let slot = Arc::new(slot);
    let connection_slot = Arc::clone(&slot);
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(session = %id, error = %err, "port connection ended with an error");
        }
        drop(connection_slot);
    });
    let mut response = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| unreachable(format!("the app did not answer: {e}")))?;
    drop(sender);

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(unreachable(
                "the app switched protocols on a request that asked for no upgrade".into(),
            ));
        };
        let app_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (client, app) = match tokio::try_join!(client_upgrade, app_upgrade) {
                Ok(pair) => pair,
                Err(err) => {
                    tracing::debug!(session = %id, error = %err, "port upgrade failed");
                    return;
                }
            };
            let (mut client, mut app) = (TokioIo::new(client), TokioIo::new(app));
            if let Err(err) = tokio::io::copy_bidirectional(&mut client, &mut app).await {
                tracing::debug!(session = %id, error = %err, "upgraded port connection ended with an error");
            }
            drop(slot);
        });
        let (mut parts, body) = response.into_parts();
        let app_upgrade_header = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(value) = app_upgrade_header.or(upgrade) {
            parts.headers.insert(header::UPGRADE, value);
        }
        return Ok(Response::from_parts(parts, Body::new(body)));
    }

    let (mut parts, body) = response.into_parts();
    // An HTTP/1.0 app (Python's http.server) is answered to the client as HTTP/1.1.
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    prefix_location(&mut parts.headers, &target.prefix);
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// The agent's answer to a tunnel request.
enum Tunnel {
    /// Upgraded: the connection now carries the port's bytes.
    Open(Upgraded),
    /// Refused (nothing listens, say): the agent's error response, relayed as it is.
    Refused(Response),
}

/// Asks the agent for a tunnel to `port`.
async fn open_tunnel(id: Uuid, port: u16, stream: AgentConnection) -> Result<Tunnel, ApiError> {
    let unavailable = |source: Box<dyn std::error::Error + Send + Sync>| {
        ApiError::SandboxUnavailable { id, source }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| unavailable(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(session = %id, error = %err, "tunnel connection ended with an error");
        }
    });
    let request = axum::http::Request::builder()
        .method("GET")
        .uri(tunnel_path(port))
        .header(header::HOST, AGENT_HOST)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| unavailable(Box::new(e)))?;
    let mut response = sender
        .send_request(request)
        .await
        .map_err(|e| unavailable(Box::new(e)))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        return Ok(Tunnel::Refused(Response::from_parts(
            parts,
            Body::new(body),
        )));
    }
    hyper::upgrade::on(&mut response)
        .await
        .map(Tunnel::Open)
        .map_err(|e| unavailable(Box::new(e)))
}

/// The app's request target: the client's path after `prefix` (at least `/`), and its query,
/// keeping the client's encoding.
fn app_target(uri: &Uri, prefix: &str) -> Result<Uri, ApiError> {
    let path = uri.path().strip_prefix(prefix).unwrap_or(uri.path());
    let path = if path.starts_with('/') { path } else { "/" };
    let target = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    target
        .parse()
        .map_err(|_| ApiError::invalid("path", format!("cannot relay the target {target:?}")))
}

/// Sets `X-Forwarded-Host` (the client's `Host`), `X-Forwarded-Proto` and, under a prefix,
/// `X-Forwarded-Prefix`; an `X-Forwarded-For` from a proxy in front is passed on as it is.
fn set_forwarded(headers: &mut HeaderMap, target: &Target, client_host: Option<HeaderValue>) {
    const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
    match client_host {
        Some(host) => {
            headers.insert(FORWARDED_HOST, host);
        }
        None => {
            headers.remove(FORWARDED_HOST);
        }
    }
    let proto = if target.https { "https" } else { "http" };
    headers.insert(FORWARDED_PROTO, HeaderValue::from_static(proto));
    match HeaderValue::from_str(&target.prefix) {
        Ok(prefix) if !target.prefix.is_empty() => {
            headers.insert(FORWARDED_PREFIX, prefix);
        }
        _ => {
            headers.remove(FORWARDED_PREFIX);
        }
    }
}

/// Removes the cookie `name` from every `Cookie` header, dropping headers left empty.
fn remove_cookie(headers: &mut HeaderMap, name: &str) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .map(str::trim)
                .filter(|pair| {
                    pair.split_once('=')
                        .map_or(*pair, |(key, _)| key.trim())
                        .ne(name)
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|v| !v.is_empty())
        .collect();
    headers.remove(header::COOKIE);
    for value in kept {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::COOKIE, value);
        }
    }
}

/// Puts `prefix` before a `Location` that is an absolute path (`/next`, not `//host/next`),
/// so an app's redirect stays under the route it was reached by.
fn prefix_location(headers: &mut HeaderMap, prefix: &str) {
    if prefix.is_empty() {
        return;
    }
    let Some(location) = headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .filter(|l| l.starts_with('/') && !l.starts_with("//"))
    else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&format!("{prefix}{location}")) {
        headers.insert(header::LOCATION, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_sees_its_own_paths() {
        let prefix = "/v1/sessions/0191/ports/8000";
        let uri: Uri = "/v1/sessions/0191/ports/8000/static/a%20b.css?v=1"
            .parse()
            .unwrap();
        assert_eq!(app_target(&uri, prefix).unwrap(), "/static/a%20b.css?v=1");
        let uri: Uri = "/v1/sessions/0191/ports/8000/".parse().unwrap();
        assert_eq!(app_target(&uri, prefix).unwrap(), "/");
        let uri: Uri = "/index.html".parse().unwrap();
        assert_eq!(app_target(&uri, "").unwrap(), "/index.html");
    }

    #[test]
    fn forwarded_headers_name_the_client_side() {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-prefix", HeaderValue::from_static("/evil"));
        let target = Target {
            session: Uuid::nil(),
            port: 8000,
            prefix: String::new(),
            https: true,
            strip_authorization: true,
            strip_cookie: None,
        };
        set_forwarded(
            &mut headers,
            &target,
            Some(HeaderValue::from_static("8000-x.preview.test")),
        );
        assert_eq!(headers["x-forwarded-host"], "8000-x.preview.test");
        assert_eq!(headers["x-forwarded-proto"], "https");
        assert!(!headers.contains_key("x-forwarded-prefix"));
    }

    #[test]
    fn the_control_planes_cookie_stays_behind() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; hutch_preview=tok; lang=en"),
        );
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("hutch_preview=tok"),
        );
        remove_cookie(&mut headers, "hutch_preview");
        let cookies: Vec<_> = headers.get_all(header::COOKIE).iter().collect();
        assert_eq!(cookies, ["theme=dark; lang=en"]);
    }

    #[test]
    fn redirects_stay_under_the_prefix() {
        let mut headers = HeaderMap::new();
        headers.insert(header::LOCATION, HeaderValue::from_static("/dir/"));
        prefix_location(&mut headers, "/preview/tok");
        assert_eq!(headers[header::LOCATION], "/preview/tok/dir/");
        for kept in ["//cdn.example/x", "https://example.com/", "relative"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::LOCATION, HeaderValue::from_str(kept).unwrap());
            prefix_location(&mut headers, "/preview/tok");
            assert_eq!(headers[header::LOCATION], kept);
        }
    }
}
