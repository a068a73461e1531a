//! The host form of preview links: every request whose `Host` is `{port}-{sessionId}.{domain}`
//! (the server's `--preview-domain`) goes to that port, whatever its path, so that apps using
//! absolute paths (`/static/app.js`) work.
//!
//! The link's first visit carries the token in the query (`?hutch_preview_token=…`): it is
//! checked, moved into a cookie of that host alone (`HttpOnly`, `SameSite=Lax`, `Secure` over
//! HTTPS, expiring with the link), and the browser is sent to the same URL without it. Later
//! requests carry the cookie, which the app never sees. A token made for another session or
//! port answers 403 `link_invalid`, an expired one 401 `link_expired`, no token at all 401
//! `unauthorized`. The API itself is never served on a preview host.

use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::link::{Grant, LinkError, now_unix};
use super::routes::{relay_grant, request_host};
use super::{COOKIE, TOKEN_PARAM, parse_port};
use crate::AppState;
use crate::error::ApiError;

/// Middleware over every route: a request to a preview host is answered here, any other goes
/// on to the API.
pub(crate) async fn serve_preview_hosts(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(domain) = state.ports.domain.as_deref() else {
        return next.run(req).await;
    };
    let Some(label) = request_host(req.headers()).and_then(|host| preview_label(host, domain))
    else {
        return next.run(req).await;
    };
    match serve(&state, &label, req).await {
        Ok(response) => response,
        Err(err) => err.into_response(),
    }
}

/// The `{port}-{sessionId}` label of `host` when it is a host under `domain` (any port).
pub(crate) fn preview_label(host: &str, domain: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.to_ascii_lowercase();
    let label = name.strip_suffix(domain)?.strip_suffix('.')?;
    Some(label.to_owned())
}

/// Answers one request to the preview host `label`.
async fn serve(state: &AppState, label: &str, req: Request) -> Result<Response, ApiError> {
    let (port, session) = parse_label(label)?;
    if let Some(token) = query_token(req.uri()) {
        let grant = check(state, &token, session, port)?;
        return Ok(keep_in_cookie(state, &grant, &token, req.uri()));
    }
    let token = cookie_token(&req).ok_or_else(|| {
        ApiError::Unauthorized(format!(
            "this preview host needs a preview link: open the hostUrl that \
             POST /v1/sessions/{session}/ports/{port}/link answers"
        ))
    })?;
    let grant = check(state, &token, session, port)?;
    relay_grant(state, &grant, String::new(), req).await
}

/// The port and session a preview host names; anything else under the domain is no route.
pub(crate) fn parse_label(label: &str) -> Result<(u16, Uuid), ApiError> {
    let not_found = || ApiError::NotFound {
        method: "any".into(),
        path: format!("preview host {label:?} (expected {{port}}-{{sessionId}})"),
    };
    let (port, session) = label.split_once('-').ok_or_else(not_found)?;
    let port = parse_port(port).map_err(|_| not_found())?;
    let session = Uuid::parse_str(session).map_err(|_| not_found())?;
    Ok((port, session))
}

/// The grant of `token` when it opens `port` of `session`.
fn check(state: &AppState, token: &str, session: Uuid, port: u16) -> Result<Grant, ApiError> {
    let grant = state.ports.signer.verify(token, now_unix())?;
    if grant.session != session || grant.port != port {
        return Err(LinkError::Invalid("it was made for another session or port").into());
    }
    Ok(grant)
}

/// The token in the query of a link's first visit.
pub(crate) fn query_token(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == TOKEN_PARAM).then(|| value.to_owned())
    })
}

/// The token in the preview cookie.
pub(crate) fn cookie_token(req: &Request) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == COOKIE).then(|| value.to_owned())
        })
}

/// 303 to the same URL without the token, setting the cookie that carries it from now on.
fn keep_in_cookie(state: &AppState, grant: &Grant, token: &str, uri: &Uri) -> Response {
    let rest: Vec<&str> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && pair.split('=').next() != Some(TOKEN_PARAM))
        .collect();
    let location = if rest.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{}", uri.path(), rest.join("&"))
    };
    let max_age = grant.expires.saturating_sub(now_unix());
    let secure = if state.ports.https() { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}");
    match (
        HeaderValue::from_str(&location),
        HeaderValue::from_str(&cookie),
    ) {
        (Ok(location), Ok(cookie)) => (
            StatusCode::SEE_OTHER,
            [
                (header::LOCATION, location),
                (header::SET_COOKIE, cookie),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
        )
            .into_response(),
        _ => ApiError::from(LinkError::Invalid("malformed")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preview_hosts_are_recognised() {
        let id = "0196a3c2-0000-7000-8000-000000000000";
        let host = format!("8000-{id}.Preview.Example:7420");
        assert_eq!(
            preview_label(&host, "preview.example").as_deref(),
            Some(format!("8000-{id}").as_str())
        );
        assert_eq!(
            parse_label(&format!("8000-{id}")).unwrap(),
            (8000, Uuid::parse_str(id).unwrap())
        );
        assert_eq!(preview_label("preview.example", "preview.example"), None);
        assert_eq!(preview_label("api.example.com", "preview.example"), None);
        assert_eq!(preview_label("xpreview.example", "preview.example"), None);
        assert!(parse_label("8000").is_err());
        assert!(parse_label("0-abc").is_err());
        assert!(parse_label(&format!("70000-{id}")).is_err());
    }

    #[test]
    fn the_token_is_found_in_query_and_cookie() {
        let uri: Uri = "/a?x=1&hutch_preview_token=t.s&y=2".parse().unwrap();
        assert_eq!(query_token(&uri).as_deref(), Some("t.s"));
        let req = Request::builder()
            .header(header::COOKIE, "theme=dark; hutch_preview=t.s")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(cookie_token(&req).as_deref(), Some("t.s"));
    }
}
