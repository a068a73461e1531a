//! The routes of ports: the API form (`/v1/sessions/{id}/ports/{port}/…`, bearer token), the
//! path form of links (`/preview/{token}/…`), and link creation. The host form of links is
//! [`super::host`].

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hutch_api::limits::{PREVIEW_LINK_TTL_DEFAULT_SECS, PREVIEW_LINK_TTL_RANGE};
use hutch_api::{CreateLinkRequest, PortLink};

use super::link::{Grant, now_unix};
use super::relay::{Target, relay};
use super::{COOKIE, TOKEN_PARAM, parse_port};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{Json, SessionId};
use crate::openapi::{
    BadRequest, Conflict, Internal, LinkExpired, LinkInvalid, PayloadTooLarge, PortUnreachable,
    RateLimited, SessionNotFound, Unauthorized,
};

/// Segments of `/v1/sessions/{id}/ports/{port}`.
const API_PREFIX_SEGMENTS: usize = 5;
/// Segments of `/preview/{token}`.
const LINK_PREFIX_SEGMENTS: usize = 2;

/// The port routes, over `state` (for the rate limiter of the API form).
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    let api = Router::new()
        // The list is the agent's route, relayed like any other.
        .route("/v1/sessions/{id}/ports", get(crate::api::proxy))
        .route("/v1/sessions/{id}/ports/{port}", any(add_slash))
        .route("/v1/sessions/{id}/ports/{port}/", any(relay_api))
        .route(
            "/v1/sessions/{id}/ports/{port}/link",
            post(create_link).fallback(relay_api),
        )
        .route("/v1/sessions/{id}/ports/{port}/{*path}", any(relay_api))
        // Authenticates and charges the tenant's session rate limit.
        .route_layer(middleware::from_fn_with_state(
            state,
            crate::ratelimit::limit_session,
        ));
    let links = Router::new()
        .route("/preview/{token}", any(add_slash))
        .route("/preview/{token}/", any(relay_link))
        .route("/preview/{token}/{*path}", any(relay_link));
    api.merge(links)
}

/// Makes a signed preview link to a port.
///
/// Whoever holds the link reaches this port of this session, and nothing else, without a
/// bearer token until it expires: `url` on the API's own address (the token in the path), and,
/// when the server has a preview domain, `hostUrl` on a host of its own
/// (`{port}-{sessionId}.{domain}`), whose first visit moves the token into a cookie of that
/// host. Nothing needs to listen on the port yet. `POST` to the app's own `/link` path is this
/// route; other methods on it reach the app.
#[utoipa::path(
    post,
    path = "/v1/sessions/{id}/ports/{port}/link",
    operation_id = "createPortLink",
    tag = "ports",
    params(
        ("id" = Uuid, Path, description = "The session id."),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The TCP port."),
    ),
    request_body(content = CreateLinkRequest, description = "The link's lifetime; may be empty."),
    responses(
        (status = 200, description = "The link", body = PortLink),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = SessionNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Path(params): Path<HashMap<String, String>>,
    headers: HeaderMap,
    Json(req): Json<CreateLinkRequest>,
) -> Result<Json<PortLink>, ApiError> {
    let port = parse_port(params.get("port").map(String::as_str).unwrap_or_default())?;
    let ttl = req.ttl.unwrap_or(PREVIEW_LINK_TTL_DEFAULT_SECS);
    let (min, max) = PREVIEW_LINK_TTL_RANGE;
    if !(min..=max).contains(&ttl) {
        return Err(ApiError::invalid(
            "ttl",
            format!("ttl must be between {min} and {max} seconds, got {ttl}"),
        ));
    }
    let tenant = state.sessions.tenant_of(&caller, id).await?;
    let expires = now_unix().saturating_add(ttl);
    let token = state.ports.signer.sign(&Grant {
        session: id,
        tenant,
        port,
        expires,
    });
    let scheme = if state.ports.https() { "https" } else { "http" };
    let host = request_host(&headers).unwrap_or("localhost");
    let path = format!("/preview/{token}/");
    let host_url = state.ports.domain.as_deref().map(|domain| {
        let api_port = host_port(host).map(|p| format!(":{p}")).unwrap_or_default();
        format!("{scheme}://{port}-{id}.{domain}{api_port}/?{TOKEN_PARAM}={token}")
    });
    let expires_at = i64::try_from(expires)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| ApiError::Internal("a link's expiry is out of range".into()))?;
    Ok(Json(PortLink {
        url: format!("{scheme}://{host}{path}"),
        path,
        host_url,
        token,
        expires_at,
    }))
}

/// Relays a request to a port inside the session.
///
/// Any method, and WebSocket upgrades, on any path under `/v1/sessions/{id}/ports/{port}/` go
/// to whatever listens on that TCP port inside the session (on `127.0.0.1`, `0.0.0.0`, `::`
/// or `::1`), as `/{path}`, reached from inside the session so that it works whatever its
/// network. Bodies stream both ways. The bearer token is not passed on; `X-Forwarded-Host`,
/// `X-Forwarded-Proto` and `X-Forwarded-Prefix` (`/v1/sessions/{id}/ports/{port}`) are set,
/// and a redirect to an absolute path gains that prefix. A port nothing listens on answers
/// 502 `port_unreachable`; past the session's maximum of open connections, 429.
#[utoipa::path(
    get,
    path = "/v1/sessions/{id}/ports/{port}/{path}",
    operation_id = "relayToPort",
    tag = "ports",
    params(
        ("id" = Uuid, Path, description = "The session id."),
        ("port" = u16, Path, minimum = 1, maximum = 65535, description = "The TCP port."),
        ("path" = String, Path, description = "The app's own path (may be empty, and may \
            hold further `/`)."),
    ),
    responses(
        (status = 200, description = "The app's answer, relayed as it is (any status)"),
        (status = 502, response = PortUnreachable),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents the route of `relay_api`; never called
pub(crate) fn relay_to_port() {}

/// Opens a port through a preview link.
///
/// Any method, and WebSocket upgrades, on any path under `/preview/{token}/` go to the port
/// the link opens, as with `relayToPort`, with no bearer token: the token in the path is the
/// credential. The app's relative links resolve under `/preview/{token}/` and keep working;
/// absolute ones (`/static/app.js`) leave it, so apps that use them want the link's host form
/// (`hostUrl`). Responses carry `Referrer-Policy: same-origin` unless the app sets one.
#[utoipa::path(
    get,
    path = "/preview/{token}/{path}",
    operation_id = "openPreviewLink",
    tag = "ports",
    params(
        ("token" = String, Path, description = "The link's token."),
        ("path" = String, Path, description = "The app's own path (may be empty, and may \
            hold further `/`)."),
    ),
    responses(
        (status = 200, description = "The app's answer, relayed as it is (any status)"),
        (status = 401, response = LinkExpired),
        (status = 403, response = LinkInvalid),
        (status = 404, response = SessionNotFound),
        (status = 409, response = Conflict),
        (status = 429, response = RateLimited),
        (status = 500, response = Internal),
        (status = 502, response = PortUnreachable),
    )
)]
#[allow(dead_code)] // documents the route of `relay_link`; never called
pub(crate) fn open_preview_link() {}

/// Any method on `/v1/sessions/{id}/ports/{port}/…`: relayed to the port (bearer token).
async fn relay_api(
    State(state): State<AppState>,
    caller: Caller,
    SessionId(id): SessionId,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let port = parse_port(params.get("port").map(String::as_str).unwrap_or_default())?;
    let stream = state.sessions.connect(&caller, id).await?;
    let slot = state.ports.slot(id)?;
    let target = Target {
        session: id,
        port,
        prefix: path_prefix(req.uri(), API_PREFIX_SEGMENTS),
        https: state.ports.https(),
        strip_authorization: true,
        strip_cookie: None,
    };
    relay(target, stream, slot, req).await
}

/// Any method on `/preview/{token}/…`: relayed to the port the link opens.
async fn relay_link(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    req: Request,
) -> Result<Response, ApiError> {
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let grant = state.ports.signer.verify(token, now_unix())?;
    let prefix = path_prefix(req.uri(), LINK_PREFIX_SEGMENTS);
    let mut response = relay_grant(&state, &grant, prefix, req).await?;
    // The token is in this page's URL: it goes to no other site in a `Referer`.
    response
        .headers_mut()
        .entry(header::REFERRER_POLICY)
        .or_insert(HeaderValue::from_static("same-origin"));
    Ok(response)
}

/// Relays `req` to the port `grant` opens, as the grant's tenant (a session deleted since, or
/// no longer the tenant's, answers 404).
pub(crate) async fn relay_grant(
    state: &AppState,
    grant: &Grant,
    prefix: String,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = Caller {
        tenant: grant.tenant.clone(),
        admin: false,
    };
    let stream = state.sessions.connect(&caller, grant.session).await?;
    let slot = state.ports.slot(grant.session)?;
    let target = Target {
        session: grant.session,
        port: grant.port,
        https: state.ports.https(),
        strip_authorization: false,
        strip_cookie: prefix.is_empty().then_some(COOKIE),
        prefix,
    };
    relay(target, stream, slot, req).await
}

/// `…/ports/{port}` and `/preview/{token}` answer with a redirect to the same path and a
/// final `/`, so that the app's relative links resolve under it.
async fn add_slash(uri: Uri) -> Response {
    let location = match uri.query() {
        Some(query) => format!("{}/?{query}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    match HeaderValue::from_str(&location) {
        Ok(location) => (
            StatusCode::PERMANENT_REDIRECT,
            [(header::LOCATION, location)],
        )
            .into_response(),
        Err(_) => ApiError::invalid("path", "the path cannot be redirected").into_response(),
    }
}

/// The first `segments` segments of the request's path, as the client wrote them.
fn path_prefix(uri: &Uri, segments: usize) -> String {
    let path = uri.path();
    let end = path
        .match_indices('/')
        .nth(segments)
        .map_or(path.len(), |(i, _)| i);
    path[..end].to_owned()
}

/// The request's `Host`, when it is a plausible host name or address (with a port).
pub(crate) fn request_host(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
        })
}

/// The port of a `Host` value (`example.com:7420`, `[::1]:7420`), if it names one.
pub(crate) fn host_port(host: &str) -> Option<u16> {
    let (name, port) = host.rsplit_once(':')?;
    if name.contains(':') && !name.ends_with(']') {
        return None; // a bare IPv6 address
    }
    port.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_keep_the_clients_spelling() {
        let uri: Uri = "/v1/sessions/0191ABCD/ports/08000/a/b?x=1".parse().unwrap();
        assert_eq!(
            path_prefix(&uri, API_PREFIX_SEGMENTS),
            "/v1/sessions/0191ABCD/ports/08000"
        );
        let uri: Uri = "/preview/tok.sig/".parse().unwrap();
        assert_eq!(path_prefix(&uri, LINK_PREFIX_SEGMENTS), "/preview/tok.sig");
        let uri: Uri = "/preview/tok.sig".parse().unwrap();
        assert_eq!(path_prefix(&uri, LINK_PREFIX_SEGMENTS), "/preview/tok.sig");
    }

    #[test]
    fn host_ports_are_read() {
        assert_eq!(host_port("127.0.0.1:7420"), Some(7420));
        assert_eq!(host_port("[::1]:7420"), Some(7420));
        assert_eq!(host_port("example.com"), None);
        assert_eq!(host_port("::1"), None);
    }

    #[test]
    fn odd_hosts_are_not_used() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("evil.com/x?"));
        assert_eq!(request_host(&headers), None);
        headers.insert(header::HOST, HeaderValue::from_static("api.example:7420"));
        assert_eq!(request_host(&headers), Some("api.example:7420"));
    }
}
