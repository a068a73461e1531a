//! The web console: a TypeScript app (`console/`) built into `console/dist`, embedded in the
//! binary by the build script and served at `GET /console/` with a strict
//! `Content-Security-Policy`, and the two ways a browser logs in.
//!
//! - **A pasted token.** The page keeps it in `sessionStorage` and sends it as the bearer
//!   token; it also posts it once to `POST /console/session`, which sets it as the `HttpOnly`
//!   cookie [`COOKIE`] so that the page's WebSockets (which cannot send an `Authorization`
//!   header) are authenticated too.
//! - **A login link** printed by `hutch console-link`: `GET /console/login?t=…` with a token
//!   signed under a key derived from the server's secret (never a bearer token, nor a bearer
//!   token a link), valid for minutes and used once. The server mints a bearer token of the
//!   link's tenant, sets it as the cookie and sends the page to `/console/#csrf=…`.
//!
//! A request authenticated by the cookie alone must carry its CSRF token (an HMAC of the
//! cookie under another derived key, handed to the page at login, outside of any response
//! another page of this origin could read) in the `X-Hutch-Csrf` header, or for a WebSocket
//! handshake in the `hutch_csrf` query parameter; otherwise it answers 403. The cookie is
//! `SameSite=Strict` and `HttpOnly` (`Secure` over TLS) and is taken out of every request before
//! it is handled, so it never reaches a session's agent or ports.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header::{
    ACCEPT_ENCODING, AUTHORIZATION, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY,
    CONTENT_TYPE, COOKIE as COOKIE_HEADER, LOCATION, SET_COOKIE, UPGRADE, VARY,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{Caller, MintOptions};
use crate::error::ApiError;
use crate::extract::{Json, Query};
use crate::ports::link::{LinkError, LinkSigner};

/// The console's cookie: a bearer token, `HttpOnly`.
pub const COOKIE: &str = "hutch_console";
/// The header that carries the CSRF token of a cookie-authenticated request.
pub const CSRF_HEADER: &str = "x-hutch-csrf";
/// The query parameter that carries it on a WebSocket handshake.
pub const CSRF_PARAM: &str = "hutch_csrf";
/// How long a login link is valid by default.
pub const LINK_TTL_DEFAULT: Duration = Duration::from_secs(5 * 60);
/// The longest a login link may be valid.
pub const LINK_TTL_MAX: Duration = Duration::from_secs(60 * 60);
/// How long the token a login link mints (and its cookie) is valid.
pub const LINK_SESSION_TTL: Duration = Duration::from_secs(8 * 60 * 60);
/// Most login links remembered as used at once; past it new links are refused until the
/// oldest expire.
const USED_LINKS_MAX: usize = 10_000;
/// Label of the login links' key.
const LINK_LABEL: &[u8] = b"hutch console login link v1";
/// Label of the CSRF tokens' key.
const CSRF_LABEL: &[u8] = b"hutch console csrf v1";

/// What the console's pages may load: their own scripts and styles, images from themselves
/// or data/blob URLs (figures, downloads), and connections to this origin. Styles may be set
/// inline because the terminal (xterm.js) writes its theme into a `<style>` element; scripts
/// never are.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// Every built file: name under `console/dist`, its bytes, and its gzip-compressed bytes.
static ASSETS: &[(&str, &[u8], &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// The page served when the binary was built without the console.
const NOT_BUILT: &str = "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\">\
<title>hutch console not built</title><h1>The console was not built into this binary</h1>\
<p>Build it, then rebuild hutch: <code>scripts/deps.sh serve</code> (or \
<code>cd console &amp;&amp; npm ci &amp;&amp; npm run build</code>), then \
<code>cargo build -p hutch</code>.</p></html>";

/// The console's signing keys and the login links already used.
pub(crate) struct Console {
    /// The server's HS256 secret: what login links' tokens are minted with.
    secret: Vec<u8>,
    /// `iss`/`aud` of minted tokens.
    mint: MintOptions,
    /// Signs and checks login links.
    links: LinkSigner,
    /// Derives CSRF tokens.
    csrf: LinkSigner,
    /// Nonces of used links, with their expiry (unix seconds).
    used: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console").finish_non_exhaustive()
    }
}

/// What a login link grants: a tenant's console until `expires`, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LoginGrant {
    /// The tenant.
    #[serde(rename = "t")]
    tenant: String,
    /// Whether it is an admin (sees every tenant).
    #[serde(rename = "a")]
    admin: bool,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    expires: u64,
    /// A random nonce: the link's identity, for using it once.
    #[serde(rename = "n")]
    nonce: String,
}

/// Why `hutch console-link` could not make a link.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleLinkError {
    /// The tenant is empty.
    #[error("the tenant must not be empty")]
    EmptyTenant,
    /// The lifetime is zero or longer than [`LINK_TTL_MAX`].
    #[error("a login link lives from 1 s to {} s", LINK_TTL_MAX.as_secs())]
    Ttl,
}

/// A login link's token for `tenant`, valid for `ttl`, signed with the server's `secret`:
/// open `{server}/console/login?t={token}` once.
pub fn login_token(
    secret: &[u8],
    tenant: &str,
    admin: bool,
    ttl: Duration,
) -> Result<String, ConsoleLinkError> {
    if tenant.is_empty() {
        return Err(ConsoleLinkError::EmptyTenant);
    }
    if ttl.is_zero() || ttl > LINK_TTL_MAX {
        return Err(ConsoleLinkError::Ttl);
    }
    let mut nonce = [0u8; 16];
    rand::fill(&mut nonce);
    let grant = LoginGrant {
        tenant: tenant.to_owned(),
        admin,
        expires: unix_now().saturating_add(ttl.as_secs().max(1)),
        nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
    };
    Ok(LinkSigner::with_label(LINK_LABEL, secret).sign_payload(&grant))
}

/// Now, unix seconds, on the system clock (what `hutch console-link` and the server share).
fn unix_now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Console {
    /// The console of a server whose token secret is `secret`.
    pub(crate) fn new(secret: &[u8], mint: MintOptions) -> Self {
        Console {
            secret: secret.to_vec(),
            mint,
            links: LinkSigner::with_label(LINK_LABEL, secret),
            csrf: LinkSigner::with_label(CSRF_LABEL, secret),
            used: Mutex::new(HashMap::new()),
        }
    }

    /// The CSRF token of a cookie holding `token`.
    fn csrf_of(&self, token: &str) -> String {
        self.csrf.tag(token.as_bytes())
    }

    /// Checks a login link's token, marks it used, and answers its grant.
    fn redeem(&self, token: &str) -> Result<LoginGrant, ApiError> {
        let grant: LoginGrant = self.links.open(token).map_err(|err| match err {
            LinkError::Invalid(why) => {
                ApiError::LinkInvalid(format!("this console login link is not valid: {why}"))
            }
            LinkError::Expired { .. } => ApiError::LinkInvalid(err.to_string()),
        })?;
        let now = unix_now();
        if grant.expires <= now {
            return Err(ApiError::LinkExpired(format!(
                "this console login link expired at unix time {}; print a new one with \
                 `hutch console-link`",
                grant.expires
            )));
        }
        let mut used = self
            .used
            .lock()
            .map_err(|_| ApiError::Internal("the used-links table is poisoned".into()))?;
        used.retain(|_, expires| *expires > now);
        if used.contains_key(&grant.nonce) {
            return Err(ApiError::LinkInvalid(
                "this console login link was already used; print a new one with \
                 `hutch console-link`"
                    .into(),
            ));
        }
        if used.len() >= USED_LINKS_MAX {
            return Err(ApiError::LinkInvalid(
                "too many console login links in flight; try again in a few minutes".into(),
            ));
        }
        used.insert(grant.nonce.clone(), grant.expires);
        Ok(grant)
    }
}

/// The console's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(redirect_to_console))
        .route("/console/", get(index))
        .route("/console/login", get(login))
        .route(
            "/console/session",
            axum::routing::post(open_session).delete(close_session),
        )
        .route("/console/{*path}", get(asset))
}

/// `/console` → `/console/`, so relative asset paths resolve.
async fn redirect_to_console() -> Response {
    (StatusCode::PERMANENT_REDIRECT, [(LOCATION, "/console/")]).into_response()
}

/// The console's page.
async fn index(headers: HeaderMap) -> Response {
    match find("index.html") {
        Some(found) => serve(found, "index.html", &headers),
        None => (
            [
                (CONTENT_TYPE, "text/html; charset=utf-8"),
                (CONTENT_SECURITY_POLICY, CSP),
                (CACHE_CONTROL, "no-cache"),
            ],
            NOT_BUILT,
        )
            .into_response(),
    }
}

/// One built file; 404 for any other path.
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match find(&path) {
        Some(found) => serve(found, &path, &headers),
        None => ApiError::NotFound {
            method: "GET".into(),
            path: format!("/console/{path}"),
        }
        .into_response(),
    }
}

/// The built file named `name`.
fn find(name: &str) -> Option<(&'static [u8], &'static [u8])> {
    ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, raw, gz)| (*raw, *gz))
}

/// The embedded assets: (name, bytes, gzip-compressed bytes).
pub fn assets() -> &'static [(&'static str, &'static [u8], &'static [u8])] {
    ASSETS
}

/// Answers a built file, compressed when the client takes gzip.
fn serve((raw, gz): (&'static [u8], &'static [u8]), name: &str, headers: &HeaderMap) -> Response {
    let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("woff2") => "font/woff2",
        _ => "application/octet-stream",
    };
    // Hashed names never change content; the page itself is checked on every load.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let gzip = headers
        .get(ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim().starts_with("gzip")));
    let mut response = (
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_SECURITY_POLICY, CSP),
            (CACHE_CONTROL, cache),
            (VARY, "accept-encoding"),
        ],
        if gzip { gz } else { raw },
    )
        .into_response();
    response.headers_mut().insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if gzip {
        response
            .headers_mut()
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}

/// The query of `GET /console/login`.
#[derive(Debug, Deserialize)]
struct LoginQuery {
    /// The link's token.
    t: Option<String>,
}

/// What `POST /console/session` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ConsoleSession {
    /// The CSRF token of the cookie just set.
    csrf: String,
    /// The tenant.
    tenant: String,
    /// Whether the token sees every tenant.
    admin: bool,
}

/// Opens a login link: sets the cookie and sends the browser to the console.
async fn login(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    let Some(link) = query.t else {
        return ApiError::invalid(
            "t",
            "a console login link needs its `t` parameter; print one with `hutch console-link`",
        )
        .into_response();
    };
    let console = &state.console;
    let grant = match console.redeem(&link) {
        Ok(grant) => grant,
        Err(err) => return err.into_response(),
    };
    let token = match crate::auth::mint_token_with(
        &console.secret,
        &grant.tenant,
        LINK_SESSION_TTL,
        grant.admin,
        &console.mint,
    ) {
        Ok(token) => token,
        Err(err) => {
            return ApiError::Internal(format!("minting the console's token: {err}").into())
                .into_response();
        }
    };
    let csrf = console.csrf_of(&token);
    // The fragment never reaches a server: only the console's page reads it.
    let location = format!(
        "/console/#csrf={csrf}&tenant={}&admin={}",
        percent_encode(&grant.tenant),
        grant.admin
    );
    let mut response = (StatusCode::SEE_OTHER, [(CACHE_CONTROL, "no-store")]).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (
            SET_COOKIE,
            cookie(&token, Some(LINK_SESSION_TTL), state.ports.https()),
        ),
        (LOCATION, location),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    response
}

/// Sets the caller's bearer token as the console's cookie (for the page's WebSockets) and
/// answers its CSRF token.
async fn open_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let header = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    let caller: Caller = match state.verifier.check(header) {
        Ok(caller) => caller,
        Err(err) => return err.into_response(),
    };
    // `check` accepted the Bearer scheme, so the token follows it.
    let token = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.split_once(' '))
        .map(|(_, token)| token.trim().to_owned())
        .unwrap_or_default();
    let body = ConsoleSession {
        csrf: state.console.csrf_of(&token),
        tenant: caller.tenant,
        admin: caller.admin,
    };
    let mut response = Json(body).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie(&token, None, state.ports.https())) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// Logs out: clears the cookie.
async fn close_session(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let secure = if state.ports.https() { "; Secure" } else { "" };
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}"
    )) {
        response.headers_mut().insert(SET_COOKIE, value);
    }
    response
}

/// The `Set-Cookie` value holding `token`.
fn cookie(token: &str, max_age: Option<Duration>, secure: bool) -> String {
    let mut cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
    if let Some(max_age) = max_age {
        cookie.push_str(&format!("; Max-Age={}", max_age.as_secs()));
    }
    if secure {
        cookie.push_str("; Secure");
    }
    cookie
}

/// `text` with everything but unreserved characters percent-encoded.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Middleware on every request: takes the console's cookie out of the request and, on an
/// API request without an `Authorization` header, turns it into the bearer token once the
/// request's CSRF token matches it (403 `forbidden` otherwise).
pub(crate) async fn cookie_auth(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(token) = take_cookie(req.headers_mut()) else {
        return next.run(req).await;
    };
    if !req.uri().path().starts_with("/v1/") || req.headers().contains_key(AUTHORIZATION) {
        return next.run(req).await;
    }
    let expected = state.console.csrf_of(&token);
    let websocket = req
        .headers()
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let given = match req.headers().get(CSRF_HEADER) {
        Some(value) => value.to_str().ok().map(str::to_owned),
        None if websocket => match take_query_param(req.uri(), CSRF_PARAM) {
            Some((value, uri)) => {
                *req.uri_mut() = uri;
                Some(value)
            }
            None => None,
        },
        None => None,
    };
    let matches = given.is_some_and(|given| {
        use subtle_eq::ConstantTimeEq;
        given.as_bytes().ct_eq(expected.as_bytes())
    });
    if !matches {
        return ApiError::Forbidden(format!(
            "a request authenticated by the console's cookie needs the `X-Hutch-Csrf` header \
             (on a WebSocket handshake, the `{CSRF_PARAM}` query parameter) the console got at \
             login"
        ))
        .into_response();
    }
    match HeaderValue::from_str(&format!("Bearer {token}")) {
        Ok(value) => {
            req.headers_mut().insert(AUTHORIZATION, value);
            next.run(req).await
        }
        Err(_) => {
            ApiError::Unauthorized("the console's cookie is not a token".into()).into_response()
        }
    }
}

/// Removes the console's cookie from `headers`, keeping the others; answers its value.
fn take_cookie(headers: &mut HeaderMap) -> Option<String> {
    if !headers.contains_key(COOKIE_HEADER) {
        return None;
    }
    let mut found = None;
    let mut kept = Vec::new();
    for value in headers.get_all(COOKIE_HEADER) {
        let Ok(value) = value.to_str() else {
            continue;
        };
        for pair in value.split(';') {
            let pair = pair.trim();
            match pair.split_once('=') {
                Some((name, value)) if name == COOKIE => found = Some(value.to_owned()),
                _ if !pair.is_empty() => kept.push(pair.to_owned()),
                _ => {}
            }
        }
    }
    let found = found?;
    headers.remove(COOKIE_HEADER);
    if !kept.is_empty()
        && let Ok(value) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(COOKIE_HEADER, value);
    }
    Some(found)
}

/// The value of query parameter `name` of `uri`, and `uri` without it.
fn take_query_param(uri: &Uri, name: &str) -> Option<(String, Uri)> {
    let query = uri.query()?;
    let mut value = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.split_once('=') {
            Some((key, v)) if key == name => {
                value = Some(v.to_owned());
                false
            }
            _ => true,
        })
        .collect();
    let value = value?;
    let path = uri.path();
    let path_and_query = if rest.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", rest.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok().map(|uri| (value, uri))
}

/// Constant-time equality of byte strings (no timing tells how much of a CSRF token matched).
mod subtle_eq {
    /// Equality in time independent of where the inputs differ.
    pub(super) trait ConstantTimeEq {
        /// Whether `self` equals `other`.
        fn ct_eq(&self, other: &Self) -> bool;
    }

    impl ConstantTimeEq for [u8] {
        fn ct_eq(&self, other: &Self) -> bool {
            if self.len() != other.len() {
                return false;
            }
            self.iter()
                .zip(other)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_link_opens_once() {
        let console = Console::new(b"secret", MintOptions::default());
        let token = login_token(b"secret", "alice", false, LINK_TTL_DEFAULT).unwrap();
        let grant = console.redeem(&token).unwrap();
        assert_eq!(grant.tenant, "alice");
        assert!(!grant.admin);
        assert!(matches!(
            console.redeem(&token),
            Err(ApiError::LinkInvalid(message)) if message.contains("already used")
        ));
    }

    #[test]
    fn foreign_and_bearer_tokens_are_not_login_links() {
        let console = Console::new(b"secret", MintOptions::default());
        let foreign = login_token(b"other", "alice", true, LINK_TTL_DEFAULT).unwrap();
        assert!(matches!(
            console.redeem(&foreign),
            Err(ApiError::LinkInvalid(_))
        ));
        let bearer =
            crate::auth::mint_token(b"secret", "alice", Duration::from_secs(60), true).unwrap();
        assert!(console.redeem(&bearer).is_err());
        // A preview link of the same secret is no login link either.
        let preview = LinkSigner::new(b"secret").sign_payload(&LoginGrant {
            tenant: "alice".into(),
            admin: true,
            expires: u64::MAX,
            nonce: "n".into(),
        });
        assert!(console.redeem(&preview).is_err());
        assert!(login_token(b"secret", "", false, LINK_TTL_DEFAULT).is_err());
        assert!(login_token(b"secret", "a", false, LINK_TTL_MAX * 2).is_err());
    }

    #[test]
    fn an_expired_link_says_so() {
        let console = Console::new(b"secret", MintOptions::default());
        let expired = LinkSigner::with_label(LINK_LABEL, b"secret").sign_payload(&LoginGrant {
            tenant: "alice".into(),
            admin: false,
            expires: unix_now() - 1,
            nonce: "n".into(),
        });
        assert!(matches!(
            console.redeem(&expired),
            Err(ApiError::LinkExpired(_))
        ));
    }

    #[test]
    fn the_cookie_is_taken_out_and_others_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE_HEADER,
            HeaderValue::from_static("a=1; hutch_console=tok; b=2"),
        );
        assert_eq!(take_cookie(&mut headers).as_deref(), Some("tok"));
        assert_eq!(headers.get(COOKIE_HEADER).unwrap(), "a=1; b=2");
        headers.insert(COOKIE_HEADER, HeaderValue::from_static("hutch_console=tok"));
        assert_eq!(take_cookie(&mut headers).as_deref(), Some("tok"));
        assert!(headers.get(COOKIE_HEADER).is_none());
        headers.insert(COOKIE_HEADER, HeaderValue::from_static("a=1"));
        assert_eq!(take_cookie(&mut headers), None);
        assert_eq!(headers.get(COOKIE_HEADER).unwrap(), "a=1");
    }

    #[test]
    fn the_csrf_parameter_is_taken_out_of_the_query() {
        let uri: Uri = "/v1/sessions/x/pty?cols=80&hutch_csrf=abc&rows=24"
            .parse()
            .unwrap();
        let (value, rest) = take_query_param(&uri, CSRF_PARAM).unwrap();
        assert_eq!(value, "abc");
        assert_eq!(rest, "/v1/sessions/x/pty?cols=80&rows=24");
        let uri: Uri = "/v1/sessions/x/pty?hutch_csrf=abc".parse().unwrap();
        assert_eq!(
            take_query_param(&uri, CSRF_PARAM).unwrap().1,
            "/v1/sessions/x/pty"
        );
        assert!(take_query_param(&"/v1/x?a=1".parse().unwrap(), CSRF_PARAM).is_none());
    }
}
