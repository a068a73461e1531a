//! Request headers from clients: `Authorization` bearer tokens, preview hosts and preview
//! link tokens (query and cookie).

use hutch_server::fuzzing::{
    check_authorization, parse_preview_host, preview_tokens, sign_link_token, verify_link_token,
};

/// The server secret the targets sign and check with (the corpus's tokens are signed with it).
pub(crate) const SECRET: &[u8] = b"hutch-fuzz-secret-0123456789abcdef";

/// The same bytes as an `Authorization` value, a `Host` value, a URI and `Cookie` value, and a
/// preview link token: each is parsed or refused without a panic, and a link token that opens
/// something opens the same when signed again.
pub(crate) fn auth_headers(data: &[u8]) {
    let _ = check_authorization(SECRET, data);
    let text = String::from_utf8_lossy(data);
    let _ = parse_preview_host(&text, "preview.example.test");
    let _ = preview_tokens(&text, data);
    if let Ok((session, tenant, port)) = verify_link_token(SECRET, &text, 0) {
        let token = sign_link_token(SECRET, session, &tenant, port, u64::MAX);
        assert_eq!(
            verify_link_token(SECRET, &token, 0),
            Ok((session, tenant, port))
        );
    }
}
