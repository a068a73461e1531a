//! Entry points for the fuzz targets (`crates/hutch-fuzz`): the parsers of the control plane
//! that read client or sandbox bytes (tokens, preview hosts, storage archives, the WebSocket
//! frames the relay follows), reachable without a running server.

use axum::body::Body;
use axum::extract::Request;

use crate::auth::{TokenPolicy, Verifier};
use crate::ports::host;
use crate::ports::link::{Grant, LinkSigner};
use crate::storage::archive::{ArchiveLimits, PathFilter, rewrite};

/// What a storage archive became: the rewritten archive, its kept entries and bytes.
#[derive(Debug)]
pub struct Rewritten {
    /// The archive as stored.
    pub archive: Vec<u8>,
    /// Entries kept.
    pub entries: u64,
    /// Bytes of file content kept.
    pub bytes: u64,
}

/// Checks and rewrites a storage context's tar stream as a snapshot does, with the include
/// and exclude globs and limits given; `Err` holds why it was refused.
pub fn rewrite_storage_archive(
    input: &[u8],
    include: &[String],
    exclude: &[String],
    max_bytes: u64,
    max_entries: u64,
) -> Result<Rewritten, String> {
    let filter = PathFilter::new(include, exclude)?;
    let mut archive = Vec::new();
    let limits = ArchiveLimits {
        max_bytes,
        max_entries,
    };
    let summary = rewrite(input, &mut archive, &filter, limits).map_err(|e| e.to_string())?;
    Ok(Rewritten {
        archive,
        entries: summary.entries,
        bytes: summary.bytes,
    })
}

/// Checks an `Authorization` header value against HS256 tokens signed with `secret`; the
/// caller's tenant and admin flag, or the error code and message.
pub fn check_authorization(secret: &[u8], header: &[u8]) -> Result<(String, bool), String> {
    let verifier =
        Verifier::from_policy(secret, &TokenPolicy::default()).map_err(|e| e.to_string())?;
    verifier
        .check(Some(header))
        .map(|caller| (caller.tenant, caller.admin))
        .map_err(|e| e.to_string())
}

/// The port and session a `Host` header names under the preview `domain`, or `None` when it
/// names none.
pub fn parse_preview_host(host_header: &str, domain: &str) -> Option<(u16, uuid::Uuid)> {
    let label = host::preview_label(host_header, domain)?;
    host::parse_label(&label).ok()
}

/// The preview token a request carries in its query (`uri`) or its `Cookie` header.
pub fn preview_tokens(uri: &str, cookie: &[u8]) -> (Option<String>, Option<String>) {
    let mut builder = Request::builder();
    if let Ok(uri) = uri.parse::<axum::http::Uri>() {
        builder = builder.uri(uri);
    }
    if let Ok(value) = axum::http::HeaderValue::from_bytes(cookie) {
        builder = builder.header(axum::http::header::COOKIE, value);
    }
    let Ok(req) = builder.body(Body::empty()) else {
        return (None, None);
    };
    (host::query_token(req.uri()), host::cookie_token(&req))
}

/// Checks a preview link token signed with the key derived from `secret` at unix time `now`:
/// the session, tenant and port it opens, or why it opens nothing.
pub fn verify_link_token(
    secret: &[u8],
    token: &str,
    now: u64,
) -> Result<(uuid::Uuid, String, u16), String> {
    let grant = LinkSigner::new(secret)
        .verify(token, now)
        .map_err(|e| e.to_string())?;
    Ok((grant.session, grant.tenant, grant.port))
}

/// Signs a preview link token for `port` of `session` and `tenant` until `expires`.
pub fn sign_link_token(
    secret: &[u8],
    session: uuid::Uuid,
    tenant: &str,
    port: u16,
    expires: u64,
) -> String {
    LinkSigner::new(secret).sign(&Grant {
        session,
        tenant: tenant.to_owned(),
        port,
        expires,
    })
}

/// Whether the relay would add a close frame after the WebSocket bytes `reads` (what an agent
/// sent, in the pieces it arrived in): they end between two frames and no close frame passed.
pub fn websocket_may_close(reads: &[&[u8]]) -> bool {
    let mut frames = crate::proxy::splice::FrameTracker::default();
    for read in reads {
        frames.feed(read);
    }
    frames.may_close()
}
