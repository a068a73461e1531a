//! Tokens signed with a public key, per-tenant rate limits and their headers, against a real
//! `hutch serve`.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{TestServer, can_run_sandboxes};
use jsonwebtoken::{Algorithm, EncodingKey, Header};

/// The RSA key pair of the server's unit tests (test-only keys).
const RSA_PRIVATE_DER: &[u8] = include_bytes!("../../hutch-server/testdata/rsa-private.der");
const RSA_PUBLIC_PEM: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../hutch-server/testdata/rsa-public.pem"
);

/// An RS256 token for `sub`, valid for ten minutes.
fn rs256_token(sub: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &serde_json::json!({"sub": sub, "exp": now + 600}),
        &EncodingKey::from_rsa_der(RSA_PRIVATE_DER),
    )
    .unwrap()
}

/// A response as read off the wire.
struct Reply {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn number(&self, name: &str) -> u64 {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header; got {:?}", self.headers))
            .parse()
            .unwrap()
    }
}

/// `GET path` over plain HTTP/1.1, with a bearer token when given.
fn get(server: &TestServer, path: &str, token: Option<&str>) -> Reply {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[test]
fn rs256_tokens_work_and_tight_limits_answer_429() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&[
        "--warm-pool",
        "0",
        "--jwt-public-key",
        RSA_PUBLIC_PEM,
        "--rate-lifecycle",
        "1/h,burst=3",
    ]);
    let alice = rs256_token("alice");

    // The burst counts down on every response, under both header spellings.
    for remaining in [2, 1, 0] {
        let reply = get(&server, "/v1/sessions", Some(&alice));
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("\"sessions\""), "{}", reply.body);
        for prefix in ["", "x-"] {
            assert_eq!(reply.number(&format!("{prefix}ratelimit-limit")), 3);
            assert_eq!(
                reply.number(&format!("{prefix}ratelimit-remaining")),
                remaining
            );
            assert!(reply.number(&format!("{prefix}ratelimit-reset")) > 0);
        }
    }

    // Past the burst: 429 with Retry-After, in the error envelope.
    let reply = get(&server, "/v1/sessions", Some(&alice));
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.body.contains("\"rate_limited\""), "{}", reply.body);
    let retry = reply.number("retry-after");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert_eq!(reply.number("x-ratelimit-remaining"), 0);

    // Another tenant (here with an HS256 token) has its own budget, and /health none.
    let bob = server.token("bob");
    let reply = get(&server, "/v1/sessions", Some(&bob));
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.number("ratelimit-remaining"), 2);
    for _ in 0..5 {
        let reply = get(&server, "/health", None);
        assert_eq!(reply.status, 200);
        assert!(reply.header("ratelimit-limit").is_none());
    }

    // A token signed with the public key as an HMAC secret is refused.
    let pem = std::fs::read(RSA_PUBLIC_PEM).unwrap();
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "carol", "exp": u64::MAX / 2}),
        &EncodingKey::from_secret(&pem),
    )
    .unwrap();
    assert_eq!(get(&server, "/v1/sessions", Some(&forged)).status, 401);
}
