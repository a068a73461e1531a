//! Tests of the API contract around tokens, rate limits and tenant quotas.
//!
//! Token rules are checked on the [`Verifier`] itself and, for one case, through the router;
//! rate limits and quotas through the router of a server over the [`FakeRuntime`] test double.
//! Keys come from `testdata/` (see its README).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::auth::{Caller, MintOptions, TokenPolicy, Verifier, mint_token, mint_token_with};
use crate::tests::{FakeRuntime, b64url};
use crate::{AuthError, Server, ServerConfig, ServerError};

const SECRET: &str = "contract-test-secret";
const RSA_PRIVATE_DER: &[u8] = include_bytes!("../testdata/rsa-private.der");
const RSA_OTHER_PRIVATE_DER: &[u8] = include_bytes!("../testdata/rsa-other-private.der");
const EC_PRIVATE_DER: &[u8] = include_bytes!("../testdata/ec-private.der");

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn rsa_signer() -> EncodingKey {
    EncodingKey::from_rsa_der(RSA_PRIVATE_DER)
}

fn ec_signer() -> EncodingKey {
    EncodingKey::from_ec_der(EC_PRIVATE_DER)
}

/// A token of `alg` (with `kid`) over `claims`, signed with `key`.
fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// Claims valid for ten minutes, for tenant `alice`.
fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}

fn policy_with_pem(name: &str) -> TokenPolicy {
    TokenPolicy {
        public_key: Some(testdata(name)),
        ..TokenPolicy::default()
    }
}

fn verifier(policy: &TokenPolicy) -> Verifier {
    Verifier::from_policy(SECRET.as_bytes(), policy).unwrap()
}

/// The caller, or the 401's message.
fn check(verifier: &Verifier, token: &str) -> Result<Caller, String> {
    verifier
        .check(Some(format!("Bearer {token}").as_bytes()))
        .map_err(|err| {
            assert_eq!(err.code(), hutch_api::ErrorCode::Unauthorized, "{err}");
            err.to_string()
        })
}

fn assert_refused(verifier: &Verifier, token: &str, needle: &str) {
    match check(verifier, token) {
        Ok(caller) => panic!("accepted as {caller:?}; wanted a refusal naming {needle:?}"),
        Err(message) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
    }
}

fn alice() -> Caller {
    Caller {
        tenant: "alice".into(),
        admin: false,
    }
}

/// The JWK of an RSA public key PEM from `testdata/`.
fn rsa_jwk(name: &str, kid: Option<&str>) -> Value {
    let text = std::fs::read_to_string(testdata(name)).unwrap();
    let key = rsa::RsaPublicKey::from_public_key_pem(&text).unwrap();
    let mut jwk = json!({
        "kty": "RSA",
        "use": "sig",
        "n": b64url(&key.n().to_bytes_be()),
        "e": b64url(&key.e().to_bytes_be()),
    });
    if let Some(kid) = kid {
        jwk["kid"] = kid.into();
    }
    jwk
}

/// The JWK of the P-256 public key in `testdata/ec-public.pem`.
fn ec_jwk(kid: &str) -> Value {
    let text = std::fs::read_to_string(testdata("ec-public.pem")).unwrap();
    let key = p256::PublicKey::from_public_key_pem(&text).unwrap();
    let point = key.to_encoded_point(false);
    json!({
        "kty": "EC",
        "crv": "P-256",
        "alg": "ES256",
        "kid": kid,
        "x": b64url(point.x().unwrap()),
        "y": b64url(point.y().unwrap()),
    })
}

/// Writes `jwks` to a file in `dir`.
fn jwks_file(dir: &tempfile::TempDir, jwks: &Value) -> PathBuf {
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, jwks.to_string()).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Tokens

#[test]
fn hs256_tokens_still_verify_beside_public_keys() {
    let verifier = verifier(&policy_with_pem("rsa-public.pem"));
    let token = mint_token(SECRET.as_bytes(), "alice", Duration::from_secs(60), false).unwrap();
    assert_eq!(check(&verifier, &token), Ok(alice()));
    let forged = mint_token(b"another secret", "alice", Duration::from_secs(60), false).unwrap();
    assert_refused(&verifier, &forged, "signature is invalid");
}

#[test]
fn rs256_tokens_verify_with_a_pem_key() {
    for pem in ["rsa-public.pem", "rsa-public-pkcs1.pem"] {
        let verifier = verifier(&policy_with_pem(pem));
        let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
        assert_eq!(check(&verifier, &token), Ok(alice()), "{pem}");
        let admin = json!({"sub": "ops", "exp": now() + 60, "admin": true});
        let token = sign(Algorithm::RS256, None, &admin, &rsa_signer());
        assert!(check(&verifier, &token).unwrap().admin);
    }
}

#[test]
fn es256_tokens_verify_with_a_pem_key() {
    let verifier = verifier(&policy_with_pem("ec-public.pem"));
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert_eq!(check(&verifier, &token), Ok(alice()));
}

#[test]
fn tokens_signed_with_another_key_are_refused() {
    let verifier = verifier(&policy_with_pem("rsa-public.pem"));
    let other = EncodingKey::from_rsa_der(RSA_OTHER_PRIVATE_DER);
    let token = sign(Algorithm::RS256, None, &claims(), &other);
    assert_refused(&verifier, &token, "signature is invalid");
    // A tampered payload fails the signature too.
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    let mut parts: Vec<&str> = token.split('.').collect();
    let admin = b64url(
        json!({"sub": "alice", "exp": now() + 600, "admin": true})
            .to_string()
            .as_bytes(),
    );
    parts[1] = &admin;
    assert_refused(&verifier, &parts.join("."), "signature is invalid");
}

#[test]
fn algorithms_without_a_configured_key_are_refused() {
    // Only HS256: RS256 and ES256 are refused even when well signed.
    let hs_only = verifier(&TokenPolicy::default());
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    assert_refused(&hs_only, &token, "accepted: HS256");
    // An RSA key accepts RS256, not ES256; other RSA algorithms are refused too.
    let rsa = verifier(&policy_with_pem("rsa-public.pem"));
    let token = sign(Algorithm::ES256, None, &claims(), &ec_signer());
    assert_refused(&rsa, &token, "accepted: HS256, RS256");
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let token = sign(alg, None, &claims(), &rsa_signer());
        assert_refused(&rsa, &token, "not accepted");
    }
}

#[test]
fn expired_and_not_yet_valid_tokens_are_refused() {
    let verifier = verifier(&policy_with_pem("rsa-public.pem"));
    let at = |claims: Value| sign(Algorithm::RS256, None, &claims, &rsa_signer());
    let n = now();
    assert_refused(
        &verifier,
        &at(json!({"sub": "alice", "exp": n - 120})),
        "expired",
    );
    assert_refused(
        &verifier,
        &at(json!({"sub": "alice", "exp": n + 600, "nbf": n + 120})),
        "not valid yet",
    );
    // Within the 30 s leeway both pass.
    assert!(check(&verifier, &at(json!({"sub": "alice", "exp": n - 5}))).is_ok());
    assert!(
        check(
            &verifier,
            &at(json!({"sub": "alice", "exp": n + 600, "nbf": n + 5}))
        )
        .is_ok()
    );
    // `exp` and `sub` stay required, and `sub` must not be empty.
    assert_refused(&verifier, &at(json!({"sub": "alice"})), "`exp`");
    assert_refused(&verifier, &at(json!({"exp": n + 60})), "`sub`");
    assert_refused(&verifier, &at(json!({"sub": "", "exp": n + 60})), "`sub`");
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let policy = TokenPolicy {
        issuer: Some("https://idp.example".into()),
        audience: Some("hutch".into()),
        ..policy_with_pem("rsa-public.pem")
    };
    let verifier = verifier(&policy);
    let at = |claims: Value| sign(Algorithm::RS256, None, &claims, &rsa_signer());
    let exp = now() + 600;
    let good = json!({"sub": "alice", "exp": exp, "iss": "https://idp.example", "aud": "hutch"});
    assert_eq!(check(&verifier, &at(good)), Ok(alice()));
    let listed = json!({"sub": "alice", "exp": exp, "iss": "https://idp.example", "aud": ["other", "hutch"]});
    assert_eq!(check(&verifier, &at(listed)), Ok(alice()));
    for (claims, needle) in [
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://idp.example", "aud": "other"}),
            "`aud`",
        ),
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://evil.example", "aud": "hutch"}),
            "`iss`",
        ),
        (
            json!({"sub": "alice", "exp": exp, "iss": "https://idp.example"}),
            "`aud`",
        ),
        (json!({"sub": "alice", "exp": exp, "aud": "hutch"}), "`iss`"),
    ] {
        assert_refused(&verifier, &at(claims), needle);
    }
    // Unconfigured, neither is required.
    let lax = self::verifier(&policy_with_pem("rsa-public.pem"));
    assert!(check(&lax, &at(json!({"sub": "alice", "exp": exp}))).is_ok());
}

#[test]
fn issuer_and_audience_apply_to_hs256_tokens_too() {
    let options = MintOptions {
        issuer: Some("hutch-ops".into()),
        audience: Some("hutch".into()),
    };
    let policy = TokenPolicy {
        issuer: options.issuer.clone(),
        audience: options.audience.clone(),
        ..TokenPolicy::default()
    };
    let verifier = verifier(&policy);
    let ttl = Duration::from_secs(60);
    let plain = mint_token(SECRET.as_bytes(), "alice", ttl, false).unwrap();
    assert_refused(&verifier, &plain, "lacks the required");
    let minted = mint_token_with(SECRET.as_bytes(), "alice", ttl, false, &options).unwrap();
    assert_eq!(check(&verifier, &minted), Ok(alice()));
    // An empty issuer or audience is a configuration error.
    let empty = TokenPolicy {
        audience: Some(String::new()),
        ..TokenPolicy::default()
    };
    assert!(matches!(
        Verifier::from_policy(SECRET.as_bytes(), &empty),
        Err(AuthError::EmptyClaim("audience"))
    ));
}

#[test]
fn alg_none_is_refused() {
    let verifier = verifier(&policy_with_pem("rsa-public.pem"));
    let payload = b64url(claims().to_string().as_bytes());
    for header in [
        r#"{"alg":"none"}"#,
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"RS256","typ":"JWT"}"#,
    ] {
        let token = format!("{}.{payload}.", b64url(header.as_bytes()));
        assert!(check(&verifier, &token).is_err(), "{header} was accepted");
    }
}

#[test]
fn hs256_signed_with_the_public_key_is_refused() {
    // The classic confusion attack: the public key's bytes used as an HMAC secret.
    for pem in ["rsa-public.pem", "rsa-public-pkcs1.pem", "ec-public.pem"] {
        let verifier = verifier(&policy_with_pem(pem));
        let bytes = std::fs::read(testdata(pem)).unwrap();
        let trimmed = String::from_utf8(bytes.clone()).unwrap().trim().to_owned();
        for secret in [bytes.as_slice(), trimmed.as_bytes()] {
            let token = sign(
                Algorithm::HS256,
                None,
                &claims(),
                &EncodingKey::from_secret(secret),
            );
            assert_refused(&verifier, &token, "signature is invalid");
        }
    }
    // Nor can the public key be named through a JWKS `kid` on an HS256 token.
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [rsa_jwk("rsa-public.pem", Some("k1"))]});
    let verifier = verifier(&TokenPolicy {
        jwks: Some(jwks_file(&dir, &jwks)),
        ..TokenPolicy::default()
    });
    let n = jwks["keys"][0]["n"].as_str().unwrap();
    let token = sign(
        Algorithm::HS256,
        Some("k1"),
        &claims(),
        &EncodingKey::from_secret(n.as_bytes()),
    );
    assert!(check(&verifier, &token).is_err());
}

#[test]
fn jwks_kid_selects_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [
        rsa_jwk("rsa-other-public.pem", Some("old")),
        rsa_jwk("rsa-public.pem", Some("new")),
        ec_jwk("ec"),
    ]});
    let verifier = verifier(&TokenPolicy {
        jwks: Some(jwks_file(&dir, &jwks)),
        ..TokenPolicy::default()
    });
    let rs = |kid| sign(Algorithm::RS256, kid, &claims(), &rsa_signer());
    assert_eq!(check(&verifier, &rs(Some("new"))), Ok(alice()));
    // The kid names a key that did not sign the token.
    assert_refused(&verifier, &rs(Some("old")), "signature is invalid");
    // An unknown kid, with no key without an id to fall back on.
    assert_refused(&verifier, &rs(Some("gone")), "`kid`");
    // Without a kid every RS256 key is tried.
    assert_eq!(check(&verifier, &rs(None)), Ok(alice()));
    // The kid's key must match the algorithm.
    let es = |kid| sign(Algorithm::ES256, kid, &claims(), &ec_signer());
    assert_eq!(check(&verifier, &es(Some("ec"))), Ok(alice()));
    assert_refused(&verifier, &es(Some("new")), "does not check ES256");
    assert_refused(&verifier, &rs(Some("ec")), "does not check RS256");
}

#[test]
fn an_unknown_kid_falls_back_to_the_pem_key() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = json!({"keys": [rsa_jwk("rsa-other-public.pem", Some("old"))]});
    let verifier = verifier(&TokenPolicy {
        jwks: Some(jwks_file(&dir, &jwks)),
        ..policy_with_pem("rsa-public.pem")
    });
    let token = sign(Algorithm::RS256, Some("rotated"), &claims(), &rsa_signer());
    assert_eq!(check(&verifier, &token), Ok(alice()));
}

#[test]
fn unusable_key_files_are_refused_at_start() {
    let pem_error =
        |name: &str| Verifier::from_policy(SECRET.as_bytes(), &policy_with_pem(name)).unwrap_err();
    assert!(matches!(
        pem_error("p384-public.pem"),
        AuthError::PublicKey { .. }
    ));
    assert!(matches!(
        pem_error("README.md"),
        AuthError::PublicKey { .. }
    ));
    assert!(matches!(pem_error("missing.pem"), AuthError::Io { .. }));

    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("private.pem");
    std::fs::write(
        &private,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = Verifier::from_policy(
        SECRET.as_bytes(),
        &TokenPolicy {
            public_key: Some(private),
            ..TokenPolicy::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, AuthError::PublicKey { .. }), "{err}");
    assert!(err.to_string().contains("private key"), "{err}");

    let mut bad_n = rsa_jwk("rsa-public.pem", Some("a"));
    bad_n["n"] = "not base64!".into();
    let mut short = rsa_jwk("rsa-public.pem", Some("s"));
    short["n"] = b64url(&[0xc5; 64]).into();
    for (jwks, needle) in [
        (json!({"keys": []}), "no RSA or P-256 key"),
        (
            json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}),
            "no RSA or P-256 key",
        ),
        (
            json!({"keys": [rsa_jwk("rsa-public.pem", Some("a")), rsa_jwk("rsa-other-public.pem", Some("a"))]}),
            "two keys",
        ),
        (json!({"keys": [bad_n]}), "base64url"),
        (json!({"keys": [short]}), "at least 2048"),
        (json!({"not": "a jwks"}), "keys"),
    ] {
        let err = Verifier::from_policy(
            SECRET.as_bytes(),
            &TokenPolicy {
                jwks: Some(jwks_file(&dir, &jwks)),
                ..TokenPolicy::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, AuthError::Jwks { .. }), "{jwks}: {err}");
        assert!(err.to_string().contains(needle), "{jwks}: {err}");
    }
    // Keys meant for encryption or other algorithms are skipped, not fatal.
    let mut enc = rsa_jwk("rsa-other-public.pem", Some("enc"));
    enc["use"] = "enc".into();
    let mut rs512 = rsa_jwk("rsa-other-public.pem", Some("rs512"));
    rs512["alg"] = "RS512".into();
    let jwks = json!({"keys": [enc, rs512, {"kty": "oct", "k": "c2VjcmV0"}, rsa_jwk("rsa-public.pem", Some("ok"))]});
    let verifier = verifier(&TokenPolicy {
        jwks: Some(jwks_file(&dir, &jwks)),
        ..TokenPolicy::default()
    });
    let token = sign(Algorithm::RS256, Some("ok"), &claims(), &rsa_signer());
    assert_eq!(check(&verifier, &token), Ok(alice()));
    let token = sign(
        Algorithm::RS256,
        Some("enc"),
        &claims(),
        &EncodingKey::from_rsa_der(RSA_OTHER_PRIVATE_DER),
    );
    assert!(check(&verifier, &token).is_err());
}

// ---------------------------------------------------------------------------------------------
// Through the router

/// A started server over the fake runtime, and its router.
struct Harness {
    _server: Server,
    app: Router,
    _dir: tempfile::TempDir,
}

async fn harness(configure: impl FnOnce(&mut ServerConfig)) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.jwt_secret = Some(SECRET.into());
    configure(&mut config);
    let server = Server::start(config, Arc::new(FakeRuntime::default()))
        .await
        .unwrap();
    Harness {
        app: server.app(),
        _server: server,
        _dir: dir,
    }
}

fn token(sub: &str) -> String {
    mint_token(SECRET.as_bytes(), sub, Duration::from_secs(600), false).unwrap()
}

fn admin_token(sub: &str) -> String {
    mint_token(SECRET.as_bytes(), sub, Duration::from_secs(600), true).unwrap()
}

/// Sends one request; returns the status, headers and JSON body (`null` if none).
async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let body = body.map_or_else(Body::empty, |v| Body::from(v.to_string()));
    let response = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn header(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().parse().unwrap())
}

/// The three rate-limit numbers, checked to be equal under both spellings.
fn rate_headers(headers: &HeaderMap) -> (u64, u64, u64) {
    let read = |name: &str| {
        let plain = header(headers, name).unwrap_or_else(|| panic!("no {name} in {headers:?}"));
        assert_eq!(
            header(headers, &format!("x-{name}")),
            Some(plain),
            "x-{name}"
        );
        plain
    };
    (
        read("ratelimit-limit"),
        read("ratelimit-remaining"),
        read("ratelimit-reset"),
    )
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
}

#[tokio::test]
async fn an_rs256_token_works_through_the_router() {
    let h = harness(|c| {
        c.jwt_public_key = Some(testdata("rsa-public.pem"));
        c.jwt_audience = Some("hutch".into());
    })
    .await;
    let good = json!({"sub": "alice", "exp": now() + 600, "aud": "hutch"});
    let token = sign(Algorithm::RS256, None, &good, &rsa_signer());
    let (status, _, body) = send(
        &h.app,
        "POST",
        "/v1/sessions",
        Some(&token),
        Some(json!({})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = send(&h.app, "GET", "/v1/sessions", Some(&token), None).await;
    assert_eq!((status, body["total"].clone()), (StatusCode::OK, json!(1)));
    // No audience: 401.
    let token = sign(Algorithm::RS256, None, &claims(), &rsa_signer());
    let (status, _, body) = send(&h.app, "GET", "/v1/sessions", Some(&token), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
}

#[tokio::test]
async fn a_bad_key_file_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.jwt_secret = Some(SECRET.into());
    config.jwt_public_key = Some(testdata("p384-public.pem"));
    let err = Server::start(config, Arc::new(FakeRuntime::default()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServerError::Auth(AuthError::PublicKey { .. })),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Rate limits

#[tokio::test]
async fn rate_limit_headers_count_down_then_429_with_retry_after() {
    let h = harness(|c| c.rate_lifecycle = "1/h,burst=3".parse().unwrap()).await;
    let t = token("alice");
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let (status, headers, body) = send(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (limit, left, reset) = rate_headers(&headers);
        assert_eq!(limit, 3);
        assert!(reset > 0 && reset <= 3 * 3600, "{reset}");
        assert!(headers.get("retry-after").is_none());
        remaining.push(left);
    }
    assert_eq!(remaining, vec![2, 1, 0]);
    let (status, headers, body) = send(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(body["error"]["details"]["class"], "lifecycle");
    let retry = header(&headers, "retry-after").unwrap();
    assert!((3590..=3600).contains(&retry), "{retry}");
    assert_eq!(body["error"]["details"]["retryAfterSecs"], retry);
    assert_eq!(rate_headers(&headers).1, 0);
    // Every lifecycle route draws on the same budget.
    let (status, _, _) = send(&h.app, "POST", "/v1/sessions", Some(&t), Some(json!({}))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn one_tenant_exhausted_does_not_limit_another() {
    let h = harness(|c| c.rate_lifecycle = "1/h,burst=2".parse().unwrap()).await;
    let (alice, bob) = (token("alice"), token("bob"));
    for _ in 0..2 {
        send(&h.app, "GET", "/v1/sessions", Some(&alice), None).await;
    }
    let (status, _, _) = send(&h.app, "GET", "/v1/sessions", Some(&alice), None).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let (status, headers, _) = send(&h.app, "GET", "/v1/sessions", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rate_headers(&headers).1, 1);
    // An admin is limited as its own tenant, not as the tenants it can see.
    let (status, _, _) = send(
        &h.app,
        "GET",
        "/v1/sessions",
        Some(&admin_token("ops")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn health_is_not_rate_limited() {
    let h = harness(|c| {
        c.rate_lifecycle = "1/h,burst=1".parse().unwrap();
        c.rate_session = "1/h,burst=1".parse().unwrap();
    })
    .await;
    for _ in 0..20 {
        let (status, headers, _) = send(&h.app, "GET", "/health", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("ratelimit-limit").is_none());
        assert!(headers.get("x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_before_any_tenant_is_charged() {
    let h = harness(|c| c.rate_lifecycle = "1/h,burst=1".parse().unwrap()).await;
    for _ in 0..5 {
        let (status, headers, _) = send(&h.app, "GET", "/v1/sessions", Some("junk"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.get("ratelimit-limit").is_none());
    }
    let (status, headers, _) =
        send(&h.app, "GET", "/v1/sessions", Some(&token("alice")), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rate_headers(&headers), (1, 0, 3600));
}

#[tokio::test]
async fn session_routes_have_their_own_limit() {
    let h = harness(|c| c.rate_session = "1/h,burst=2".parse().unwrap()).await;
    let t = token("alice");
    let (_, _, session) = send(&h.app, "POST", "/v1/sessions", Some(&t), Some(json!({}))).await;
    let uri = format!(
        "/v1/sessions/{}/commands",
        session["sessionId"].as_str().unwrap()
    );
    let command = json!({"command": "true"});
    for left in [1, 0] {
        let (status, headers, body) =
            send(&h.app, "POST", &uri, Some(&t), Some(command.clone())).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(rate_headers(&headers), (2, left, 3600 * (2 - left)));
    }
    let (status, headers, body) = send(&h.app, "POST", &uri, Some(&t), Some(command)).await;
    assert_error(status, &body, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(body["error"]["details"]["class"], "session");
    assert!(header(&headers, "retry-after").unwrap() >= 1);
    // The lifecycle budget is untouched (and generous by default).
    let (status, headers, _) = send(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(rate_headers(&headers).0, 1000);
}

#[tokio::test]
async fn limits_turned_off_send_no_headers() {
    let h = harness(|c| c.rate_lifecycle = "off".parse().unwrap()).await;
    for _ in 0..50 {
        let (status, headers, _) =
            send(&h.app, "GET", "/v1/sessions", Some(&token("a")), None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.get("ratelimit-remaining").is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Quotas

async fn create(app: &Router, token: &str, body: Value) -> (StatusCode, Value) {
    let (status, _, body) = send(app, "POST", "/v1/sessions", Some(token), Some(body)).await;
    (status, body)
}

#[tokio::test]
async fn the_session_quota_answers_429() {
    let h = harness(|c| c.tenant_max_sessions = 2).await;
    let t = token("alice");
    let (_, first) = create(&h.app, &t, json!({})).await;
    assert_eq!(create(&h.app, &t, json!({})).await.0, StatusCode::OK);
    let (status, body) = create(&h.app, &t, json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    assert_eq!(
        body["error"]["details"],
        json!({"quota": "sessions", "limit": 2, "used": 2})
    );
    // Another tenant has its own quota.
    assert_eq!(
        create(&h.app, &token("bob"), json!({})).await.0,
        StatusCode::OK
    );
    // Deleting a session frees its slot.
    let uri = format!("/v1/sessions/{}", first["sessionId"].as_str().unwrap());
    assert_eq!(
        send(&h.app, "DELETE", &uri, Some(&t), None).await.0,
        StatusCode::OK
    );
    assert_eq!(create(&h.app, &t, json!({})).await.0, StatusCode::OK);
}

#[tokio::test]
async fn the_memory_quota_answers_429() {
    let h = harness(|c| c.tenant_max_memory_mb = 1024).await;
    let t = token("alice");
    let sized = |mb: u64| json!({"resources": {"memoryMb": mb}});
    assert_eq!(create(&h.app, &t, sized(512)).await.0, StatusCode::OK);
    assert_eq!(create(&h.app, &t, sized(256)).await.0, StatusCode::OK);
    let (status, body) = create(&h.app, &t, sized(512)).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    assert_eq!(
        body["error"]["details"],
        json!({"quota": "memoryMb", "limit": 1024, "used": 768, "requested": 512})
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 MiB")
    );
    // What still fits is accepted.
    assert_eq!(create(&h.app, &t, sized(256)).await.0, StatusCode::OK);
    // A session larger than the whole quota never fits.
    let (status, body) = create(&h.app, &token("bob"), sized(2048)).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
    assert_eq!(body["error"]["details"]["used"], 0);
}

#[tokio::test]
async fn admins_are_held_to_their_own_quota() {
    let h = harness(|c| c.tenant_max_sessions = 1).await;
    let admin = admin_token("ops");
    assert_eq!(
        create(&h.app, &token("alice"), json!({})).await.0,
        StatusCode::OK
    );
    // Alice's session does not count against the admin's own sub.
    assert_eq!(create(&h.app, &admin, json!({})).await.0, StatusCode::OK);
    let (status, body) = create(&h.app, &admin, json!({})).await;
    assert_error(
        status,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_race_for_the_last_slots() {
    let h = harness(|c| {
        c.tenant_max_sessions = 3;
        c.tenant_max_memory_mb = 10_000;
    })
    .await;
    let t = token("alice");
    let results = futures_join(
        (0..12)
            .map(|_| {
                let app = h.app.clone();
                let t = t.clone();
                tokio::spawn(async move { create(&app, &t, json!({})).await.0 })
            })
            .collect(),
    )
    .await;
    let ok = results.iter().filter(|s| **s == StatusCode::OK).count();
    let refused = results
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((ok, refused), (3, 9), "{results:?}");
    let (_, _, list) = send(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
    assert_eq!(list["total"], 3);

    // The same race on memory: 4 GiB sessions against a 10 000 MiB quota fit twice.
    let bob = token("bob");
    let results = futures_join(
        (0..8)
            .map(|_| {
                let app = h.app.clone();
                let bob = bob.clone();
                tokio::spawn(async move {
                    create(&app, &bob, json!({"resources": {"memoryMb": 4096}}))
                        .await
                        .0
                })
            })
            .collect(),
    )
    .await;
    let ok = results.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 2, "{results:?}");
}

/// Awaits every task.
async fn futures_join(tasks: Vec<tokio::task::JoinHandle<StatusCode>>) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}
