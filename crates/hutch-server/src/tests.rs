//! Tests of the whole control plane through its router, against [`FakeRuntime`].
//!
//! [`FakeRuntime`] is a test double: the real linux runtime needs root, and is exercised by
//! the end-to-end tests of the `hutch` binary. The fake keeps its sandboxes in a set, records
//! every call, flags a destroy that overlaps another destroy of the same sandbox, and serves a
//! tiny fake agent over an in-process unix socket pair so the proxy is tested for real.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hutch_api::{CommandRequest, CommandResult, Resources, SessionStatus};
use hutch_sandbox::{
    AgentConnection, Deaths, Runtime, RuntimeData, SandboxError, SandboxRecord, SandboxSpec,
};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tower::ServiceExt;
use uuid::Uuid;

use crate::auth::{Claims, mint_token};
use crate::store::{StoredSession, now_ms};
use crate::{Server, ServerConfig};

const SECRET: &str = "test-secret";

/// How the fake fails `create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CreateFailure {
    InvalidSpec,
    Start,
    /// A bug: `create` panics.
    Panic,
}

/// What the fake runtime has seen and holds.
#[derive(Debug, Default)]
struct FakeState {
    /// Sandboxes that exist.
    live: HashSet<Uuid>,
    /// Every spec `create` was given.
    created: Vec<SandboxSpec>,
    /// Every id `destroy` was called for, in order.
    destroyed: Vec<Uuid>,
    /// Destroys in progress.
    destroying: HashSet<Uuid>,
    /// Destroys that started while another destroy of the same sandbox ran.
    overlapping_destroys: usize,
    /// Ids for which `adopt` answers true.
    adoptable: HashSet<Uuid>,
    /// The `known` set `sweep` was last called with.
    swept_with: Option<HashSet<Uuid>>,
    /// What `sweep` reports cleaning.
    sweep_finds: Vec<Uuid>,
    /// Make `create` fail.
    fail_create: Option<CreateFailure>,
    /// The deadline last set for each sandbox.
    deadlines: HashMap<Uuid, std::time::SystemTime>,
    /// The sender of the latest [`Runtime::deaths`].
    died: Option<UnboundedSender<Uuid>>,
    /// How many connections `connect` opened to each sandbox's agent.
    connects: HashMap<Uuid, usize>,
    /// The tasks serving each sandbox's agent connections (aborting one kills its end).
    agent_ends: HashMap<Uuid, Vec<tokio::task::JoinHandle<()>>>,
}

/// Test double for [`Runtime`]; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct FakeRuntime {
    state: Mutex<FakeState>,
}

impl FakeRuntime {
    fn with<R>(&self, f: impl FnOnce(&mut FakeState) -> R) -> R {
        f(&mut self.state.lock().unwrap())
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Outside the lock, which must not be poisoned for the rest of the test.
        if self.with(|s| s.fail_create) == Some(CreateFailure::Panic) {
            panic!("the fake runtime has a bug");
        }
        self.with(|s| {
            s.created.push(spec.clone());
            match s.fail_create {
                Some(CreateFailure::InvalidSpec) => {
                    Err(SandboxError::InvalidSpec("no such image".into()))
                }
                Some(CreateFailure::Start) => Err(SandboxError::Start {
                    id: spec.id,
                    reason: "init exploded".into(),
                }),
                Some(CreateFailure::Panic) | None => {
                    s.live.insert(spec.id);
                    Ok(SandboxRecord {
                        id: spec.id,
                        sandbox_id: Uuid::new_v4(),
                        runtime: fake_data(),
                    })
                }
            }
        })
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        self.with(|s| {
            if !s.destroying.insert(record.id) {
                s.overlapping_destroys += 1;
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.with(|s| {
            s.destroying.remove(&record.id);
            s.live.remove(&record.id);
            s.destroyed.push(record.id);
        });
        Ok(())
    }

    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        Ok(self.with(|s| {
            let alive = s.adoptable.contains(&record.id);
            if alive {
                s.live.insert(record.id);
            }
            alive
        }))
    }

    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        Ok(self.with(|s| {
            s.swept_with = Some(known.clone());
            s.sweep_finds.clone()
        }))
    }

    fn deaths(&self) -> Deaths {
        let (died, deaths) = unbounded_channel();
        self.with(|s| s.died = Some(died));
        deaths
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        if !self.with(|s| s.live.contains(&id)) {
            return Err(SandboxError::Gone(id));
        }
        let (ours, theirs) = UnixStream::pair().map_err(|source| SandboxError::Sys {
            call: "socketpair".into(),
            source,
        })?;
        let end = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(theirs), service_fn(fake_agent))
                .with_upgrades()
                .await;
        });
        self.with(|s| {
            *s.connects.entry(id).or_default() += 1;
            s.agent_ends.entry(id).or_default().push(end);
        });
        Ok(Box::new(ours))
    }

    async fn set_deadline(
        &self,
        id: Uuid,
        deadline: std::time::SystemTime,
    ) -> Result<(), SandboxError> {
        self.with(|s| {
            if !s.live.contains(&id) {
                return Err(SandboxError::Gone(id));
            }
            s.deadlines.insert(id, deadline);
            Ok(())
        })
    }
}

/// The fake agent: `POST /commands` echoes the command; `/upgrade` switches to an echo
/// protocol; anything else describes the request it got.
async fn fake_agent(
    mut req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/upgrade" {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(upgraded) = on_upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0_u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let response = hyper::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(response);
    }
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    if target == "/slow" {
        slow_until_a_burst_arrived().await;
    }
    let json = if target == "/commands" {
        let cmd: CommandRequest = serde_json::from_slice(&body).unwrap();
        serde_json::to_value(CommandResult {
            exit_code: 0,
            stdout: format!("{}\n", cmd.command.unwrap_or_default()),
            stderr: String::new(),
            duration_ms: 1,
            timed_out: false,
            truncated: false,
            oom_killed: false,
        })
        .unwrap()
    } else {
        json!({"method": method, "target": target, "headers": headers, "bodyLen": body.len()})
    };
    let mut response = hyper::Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .header("x-agent", "fake");
    if target == "/interpreter/execute" {
        // As the real agent streams an execution's results: a body of unknown length.
        response = response.header("transfer-encoding", "chunked");
    }
    Ok(response
        .body(Full::new(Bytes::from(json.to_string())))
        .unwrap())
}

/// Requests to the fake agent's `/slow` that arrived so far.
static SLOW_ARRIVED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Requests of one burst to `/slow`.
const SLOW_BURST: usize = 40;

/// Holds a request to `/slow` until its whole burst of [`SLOW_BURST`] has arrived (at most
/// 30 s), so that every request of the burst is in flight at once however slow the machine.
async fn slow_until_a_burst_arrived() {
    use std::sync::atomic::Ordering;
    let me = SLOW_ARRIVED.fetch_add(1, Ordering::SeqCst) + 1;
    let burst_end = me.div_ceil(SLOW_BURST) * SLOW_BURST;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while SLOW_ARRIVED.load(Ordering::SeqCst) < burst_end && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What the fake runtime keeps in its records (it never reads it back).
fn fake_data() -> RuntimeData {
    RuntimeData::encode(&json!({"fake": true})).unwrap()
}

/// A started server over a fake runtime in a temporary data directory.
struct Harness {
    server: Server,
    app: Router,
    runtime: Arc<FakeRuntime>,
    died: UnboundedSender<Uuid>,
    dir: tempfile::TempDir,
}

async fn harness() -> Harness {
    harness_with(tempfile::tempdir().unwrap(), Arc::default(), |_| {}).await
}

async fn harness_with(
    dir: tempfile::TempDir,
    runtime: Arc<FakeRuntime>,
    configure: impl FnOnce(&mut ServerConfig),
) -> Harness {
    let mut config = ServerConfig::new(dir.path());
    config.jwt_secret = Some(SECRET.into());
    config.reaper_interval = Duration::from_millis(50);
    configure(&mut config);
    let server = Server::start(config, runtime.clone()).await.unwrap();
    let died = runtime
        .with(|s| s.died.clone())
        .expect("the server asks for deaths");
    let app = server.app();
    Harness {
        server,
        app,
        runtime,
        died,
        dir,
    }
}

fn token(sub: &str) -> String {
    mint_token(SECRET.as_bytes(), sub, Duration::from_secs(600), false).unwrap()
}

fn admin_token() -> String {
    mint_token(SECRET.as_bytes(), "root", Duration::from_secs(600), true).unwrap()
}

/// Sends one request; returns the status, headers and body (JSON, or a string if not JSON).
async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let bearer = auth.map(|token| format!("Bearer {token}"));
    let headers: Vec<(&str, &str)> = bearer
        .iter()
        .map(|value| ("authorization", value.as_str()))
        .collect();
    send_with(app, method, uri, &headers, body).await
}

/// Sends one request with the given headers; returns the status, headers and body.
async fn send_with(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<Body>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body.unwrap_or_else(Body::empty)).unwrap();
    let response = app.clone().oneshot(req).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, headers, value)
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|v| Body::from(v.to_string()));
    let (status, _, value) = send(app, method, uri, auth, body).await;
    (status, value)
}

async fn create(app: &Router, auth: &str, body: Value) -> Value {
    let (status, session) = call(app, "POST", "/v1/sessions", Some(auth), Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    session
}

fn id_of(session: &Value) -> String {
    session["sessionId"].as_str().unwrap().to_owned()
}

fn assert_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some(), "{body}");
}

/// Unpadded base64url, for hand-made tokens.
pub(crate) fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn claims(sub: &str, exp_offset: i64) -> Claims {
    let now = jsonwebtoken::get_current_timestamp();
    Claims {
        sub: sub.into(),
        exp: now.saturating_add_signed(exp_offset),
        nbf: None,
        admin: false,
    }
}

// ---------------------------------------------------------------------------------------------
// Auth

#[tokio::test]
async fn health_needs_no_token() {
    let h = harness().await;
    let (status, body) = call(&h.app, "GET", "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
}

#[tokio::test]
async fn bad_tokens_answer_401() {
    let h = harness().await;
    let payload = b64url(serde_json::to_string(&claims("a", 600)).unwrap().as_bytes());
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims("a", 600),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("no header", None, "missing"),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                mint_token(b"other", "a", Duration::from_secs(60), false).unwrap()
            )),
            "signature",
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                jsonwebtoken::encode(
                    &Header::default(),
                    &claims("a", -120),
                    &EncodingKey::from_secret(SECRET.as_bytes())
                )
                .unwrap()
            )),
            "expired",
        ),
        (
            "alg none",
            Some(format!(
                "Bearer {}.{payload}.",
                b64url(br#"{"alg":"none"}"#)
            )),
            "HS256",
        ),
        (
            "alg none, typ",
            Some(format!(
                "Bearer {}.{payload}.",
                b64url(br#"{"alg":"none","typ":"JWT"}"#)
            )),
            "HS256",
        ),
        ("HS512", Some(format!("Bearer {hs512}")), "HS256"),
        (
            "RS256",
            Some(format!(
                "Bearer {}.{payload}.c2ln",
                b64url(br#"{"alg":"RS256","typ":"JWT"}"#)
            )),
            "HS256",
        ),
        (
            "not bearer",
            Some(format!("Basic {}", token("a"))),
            "Bearer",
        ),
        ("garbage", Some("Bearer abc".into()), "malformed"),
        (
            "empty sub",
            Some(format!(
                "Bearer {}",
                jsonwebtoken::encode(
                    &Header::default(),
                    &claims("", 600),
                    &EncodingKey::from_secret(SECRET.as_bytes())
                )
                .unwrap()
            )),
            "sub",
        ),
    ];
    for (name, header, needle) in cases {
        let mut req = Request::builder().uri("/v1/sessions");
        if let Some(header) = header {
            req = req.header("authorization", header);
        }
        let response = h
            .app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body: Value =
            serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes())
                .unwrap();
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{name}: {message}");
    }
    // Missing claims and a future nbf are refused too, naming the claim.
    let now = jsonwebtoken::get_current_timestamp();
    for (claims, needle) in [
        (json!({"sub": "a"}), "`exp`"),
        (json!({"exp": now + 600}), "`sub`"),
        (
            json!({"sub": "a", "exp": now + 600, "nbf": now + 300}),
            "not valid yet",
        ),
        (
            json!({"sub": "a", "exp": now + 600, "admin": "yes"}),
            "malformed",
        ),
    ] {
        let token = jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let (status, body) = call(&h.app, "GET", "/v1/sessions", Some(&token), None).await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{claims}: {message}");
    }
}

#[tokio::test]
async fn leeway_accepts_a_token_just_expired() {
    let h = harness().await;
    let recent = jsonwebtoken::encode(
        &Header::default(),
        &claims("a", -5),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let (status, _) = call(&h.app, "GET", "/v1/sessions", Some(&recent), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn startup_token_comes_with_a_data_dir_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new(dir.path());
    let server = Server::start(config, Arc::new(FakeRuntime::default()))
        .await
        .unwrap();
    let token = server.startup_token().unwrap().to_owned();
    let (status, body) = call(&server.app(), "GET", "/v1/sessions", Some(&token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // With a configured secret there is none.
    let h = harness().await;
    assert!(h.server.startup_token().is_none());
}

// ---------------------------------------------------------------------------------------------
// Validation and routing

#[tokio::test]
async fn invalid_requests_name_the_field() {
    let h = harness().await;
    let t = token("a");
    let mut many = serde_json::Map::new();
    for i in 0..33 {
        many.insert(format!("k{i}"), json!("v"));
    }
    let cases = [
        (json!({"ttl": 59}), "ttl"),
        (json!({"ttl": 28801}), "ttl"),
        (json!({"ttl": "abc"}), "ttl"),
        (json!({"ttl": -1}), "ttl"),
        (json!({"image": "ubuntu latest"}), "image"),
        (json!({"image": "Ubuntu:24.04"}), "image"),
        (json!({"colour": "red"}), "colour"),
        (json!({"metadata": many}), "metadata"),
        (json!({"metadata": {"k": 1}}), "metadata.k"),
        (json!({"resources": {"memoryMb": 1}}), "resources.memoryMb"),
        (json!({"env": {"": "x"}}), "env"),
    ];
    for (body, field) in cases {
        let (status, err) =
            call(&h.app, "POST", "/v1/sessions", Some(&t), Some(body.clone())).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(err["error"]["details"]["field"], field, "{body} -> {err}");
        let message = err["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(field.split('.').next().unwrap()),
            "{message}"
        );
    }
    let (status, _, err) = send(
        &h.app,
        "POST",
        "/v1/sessions",
        Some(&t),
        Some(Body::from("{not json")),
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(h.runtime.with(|s| s.created.is_empty()));
}

#[tokio::test]
async fn bad_ids_and_pages_answer_400() {
    let h = harness().await;
    let t = token("a");
    for (method, uri) in [
        ("GET", "/v1/sessions/not-a-uuid"),
        ("DELETE", "/v1/sessions/123"),
        ("PATCH", "/v1/sessions/xyz"),
        ("POST", "/v1/sessions/xyz/commands"),
    ] {
        let (status, err) = call(&h.app, method, uri, Some(&t), Some(json!({}))).await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(err["error"]["details"]["field"], "sessionId");
        assert!(
            err["error"]["message"]
                .as_str()
                .unwrap()
                .contains("sessionId")
        );
    }
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=x", "limit"),
        ("offset=-1", "offset"),
    ] {
        let (status, err) = call(
            &h.app,
            "GET",
            &format!("/v1/sessions?{query}"),
            Some(&t),
            None,
        )
        .await;
        assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
        assert_eq!(err["error"]["details"]["field"], field);
    }
    // A parameter given twice is ambiguous: refused in the envelope, not silently picked.
    let (status, err) = call(
        &h.app,
        "GET",
        "/v1/sessions?limit=1&limit=2",
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
    let session = id_of(&create(&h.app, &t, json!({})).await);
    let (status, err) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{session}?upload=maybe"),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(err["error"]["details"]["field"], "upload");
}

#[tokio::test]
async fn unknown_routes_answer_the_envelope() {
    let h = harness().await;
    let (status, err) = call(&h.app, "GET", "/v2/nothing", None, None).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
    let (status, err) = call(&h.app, "PUT", "/v1/sessions", Some(&token("a")), None).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn oversized_json_answers_413_but_proxied_bodies_are_unlimited() {
    let h = harness().await;
    let t = token("a");
    let big = vec![b' '; hutch_api::limits::JSON_BODY_MAX_BYTES + 1];
    let (status, _, err) = send(
        &h.app,
        "POST",
        "/v1/sessions",
        Some(&t),
        Some(Body::from(big.clone())),
    )
    .await;
    assert_error(
        status,
        &err,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
    );

    let id = id_of(&create(&h.app, &t, json!({})).await);
    let (status, _, echoed) = send(
        &h.app,
        "PUT",
        &format!("/v1/sessions/{id}/files/content?path=/big"),
        Some(&t),
        Some(Body::from(big)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        echoed["bodyLen"],
        hutch_api::limits::JSON_BODY_MAX_BYTES + 1
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_made() {
    let h = harness().await;
    let req = Request::builder()
        .uri("/health")
        .header("x-request-id", "abc-123")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "abc-123");
    let (_, headers, _) = send(&h.app, "GET", "/nope", None, None).await;
    assert!(Uuid::parse_str(headers["x-request-id"].to_str().unwrap()).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Sessions

#[tokio::test]
async fn session_lifecycle() {
    let h = harness().await;
    let t = token("alice");
    let session = create(
        &h.app,
        &t,
        json!({"ttl": 120, "metadata": {"k": "v"}, "env": {"A": "1"}, "resources": {"cpus": 0.5}}),
    )
    .await;
    assert_eq!(session["status"], "RUNNING");
    assert_eq!(session["image"], "default");
    assert_eq!(session["metadata"], json!({"k": "v"}));
    assert_eq!(
        session["resources"],
        json!({"cpus": 0.5, "memoryMb": 512, "pids": 512})
    );
    let created = time::OffsetDateTime::parse(
        session["createdAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let expires = time::OffsetDateTime::parse(
        session["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!((expires - created).whole_seconds(), 120);
    let id = id_of(&session);
    let uuid = Uuid::parse_str(&id).unwrap();
    assert_eq!(uuid.get_version_num(), 7);

    let spec = h.runtime.with(|s| s.created[0].clone());
    assert_eq!(spec.id, uuid);
    assert_eq!(spec.hostname, id.replace('-', "")[..12]);
    assert_eq!(spec.env["A"], "1");
    assert_eq!(spec.resources.cpus, 0.5);
    // The sandbox ends itself a grace after its expiry if no server destroys it.
    let deadline_of = |uuid| {
        let deadline = h.runtime.with(|s| s.deadlines[&uuid]);
        time::OffsetDateTime::from(deadline)
    };
    assert_eq!(
        (deadline_of(uuid) - expires).whole_seconds(),
        crate::DEFAULT_ORPHAN_GRACE.as_secs() as i64
    );

    let (status, got) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, session);

    // PATCH: new ttl counts from now; metadata is replaced.
    let (status, patched) = call(
        &h.app,
        "PATCH",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        Some(json!({"ttl": 3600, "metadata": {"x": "y"}})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"], json!({"x": "y"}));
    let new_expiry = time::OffsetDateTime::parse(
        patched["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let from_now = new_expiry - time::OffsetDateTime::now_utc();
    assert!(
        (3595..=3600).contains(&from_now.whole_seconds()),
        "{from_now}"
    );
    // A longer life renews the sandbox's own deadline.
    assert_eq!(
        (deadline_of(uuid) - new_expiry).whole_seconds(),
        crate::DEFAULT_ORPHAN_GRACE.as_secs() as i64
    );
    let (status, err) = call(
        &h.app,
        "PATCH",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        Some(json!({"ttl": 28801})),
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(err["error"]["details"]["field"], "ttl");

    let (status, deleted) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    assert_eq!(deleted["sessionId"], id);
    assert_eq!(deleted["status"], "DELETING");
    assert_eq!(h.runtime.with(|s| s.destroyed.clone()), vec![uuid]);

    let (status, err) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&t), None).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");
    assert_eq!(err["error"]["details"]["sessionId"], id);
    let (status, err) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");
}

#[tokio::test]
async fn tenants_see_only_their_own_sessions() {
    let h = harness().await;
    let (a, b) = (token("tenant-a"), token("tenant-b"));
    let id = id_of(&create(&h.app, &a, json!({})).await);
    create(&h.app, &b, json!({})).await;

    let missing = Uuid::now_v7();
    for uri in [
        format!("/v1/sessions/{id}"),
        format!("/v1/sessions/{missing}"),
    ] {
        let (status, err) = call(&h.app, "GET", &uri, Some(&b), None).await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");
    }
    let (status, theirs) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&b), None).await;
    let (_, missing_body) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{missing}"),
        Some(&b),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&id, "X"),
        missing_body["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&missing.to_string(), "X")
    );
    for (method, uri) in [
        ("PATCH", format!("/v1/sessions/{id}")),
        ("DELETE", format!("/v1/sessions/{id}")),
        ("POST", format!("/v1/sessions/{id}/commands")),
    ] {
        let (status, err) = call(&h.app, method, &uri, Some(&b), Some(json!({"ttl": 60}))).await;
        assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");
    }
    assert!(h.runtime.with(|s| s.destroyed.is_empty()));

    let (_, list) = call(&h.app, "GET", "/v1/sessions", Some(&a), None).await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["sessions"][0]["sessionId"], id);
    let (_, list) = call(&h.app, "GET", "/v1/sessions", Some(&admin_token()), None).await;
    assert_eq!(list["total"], 2);
    let (status, _) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{id}"),
        Some(&admin_token()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn listing_pages_oldest_first() {
    let h = harness().await;
    let t = token("a");
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(&create(&h.app, &t, json!({})).await));
    }
    let (status, page) = call(
        &h.app,
        "GET",
        "/v1/sessions?limit=2&offset=1",
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    let got: Vec<_> = page["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert_eq!(got, ids[1..3]);
    let (_, page) = call(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
    assert_eq!(page["limit"], 20);
    assert_eq!(page["sessions"].as_array().unwrap().len(), 5);
    let (_, page) = call(&h.app, "GET", "/v1/sessions?offset=10", Some(&t), None).await;
    assert_eq!(page["sessions"], json!([]));
    assert_eq!(page["total"], 5);
}

#[tokio::test]
async fn concurrent_deletes_destroy_once() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uri = format!("/v1/sessions/{id}");
    let results = tokio::join!(
        call(&h.app, "DELETE", &uri, Some(&t), None),
        call(&h.app, "DELETE", &uri, Some(&t), None),
    );
    let mut statuses = [results.0.0, results.1.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::NOT_FOUND]);
    h.runtime.with(|s| {
        assert_eq!(s.destroyed.len(), 1);
        assert_eq!(s.overlapping_destroys, 0);
    });
}

#[tokio::test]
async fn a_retried_delete_finishes_one_that_was_cut_short() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    // A delete that marked the row and then stopped (the store failed to remove the row
    // after the sandbox went, say): the row stays DELETING under a fresh destroy claim.
    let uuid: Uuid = id.parse().unwrap();
    let store = &h.server.state.sessions.store;
    assert!(store.mark_deleting(uuid, None).await.unwrap().is_some());
    let uri = format!("/v1/sessions/{id}");
    let (status, body) = call(&h.app, "DELETE", &uri, Some(&t), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = call(&h.app, "GET", &uri, Some(&t), None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "session_not_found");
    h.runtime.with(|s| assert_eq!(s.destroyed.len(), 1));
    // Another tenant's cut-short delete is not this caller's to finish.
    let other = id_of(&create(&h.app, &token("b"), json!({})).await);
    assert!(
        store
            .mark_deleting(other.parse().unwrap(), None)
            .await
            .unwrap()
            .is_some()
    );
    let (status, body) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{other}"),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "session_not_found");
}

#[tokio::test]
async fn a_panicking_handler_answers_500_in_the_envelope() {
    let h = harness().await;
    let t = token("a");
    h.runtime
        .with(|s| s.fail_create = Some(CreateFailure::Panic));
    let body = Some(Body::from("{}"));
    let (status, headers, err) = send(&h.app, "POST", "/v1/sessions", Some(&t), body).await;
    assert_error(status, &err, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert_eq!(headers[hutch_api::error::ERROR_CODE_HEADER], "internal");
    assert!(headers.contains_key("x-request-id"));
    // The panic's message is logged, not sent.
    let message = err["error"]["message"].as_str().unwrap();
    assert!(!message.contains("bug"), "{message}");
    // The server goes on serving.
    h.runtime.with(|s| s.fail_create = None);
    create(&h.app, &t, json!({})).await;
}

#[tokio::test]
async fn capacity_answers_503() {
    let h = harness_with(tempfile::tempdir().unwrap(), Arc::default(), |c| {
        c.max_sessions = 2;
    })
    .await;
    let t = token("a");
    create(&h.app, &t, json!({})).await;
    create(&h.app, &t, json!({})).await;
    let (status, err) = call(&h.app, "POST", "/v1/sessions", Some(&t), Some(json!({}))).await;
    assert_error(status, &err, StatusCode::SERVICE_UNAVAILABLE, "capacity");
    assert_eq!(h.runtime.with(|s| s.created.len()), 2);
}

#[tokio::test]
async fn failed_creates_leave_no_row() {
    let h = harness().await;
    let t = token("a");
    h.runtime
        .with(|s| s.fail_create = Some(CreateFailure::InvalidSpec));
    let (status, err) = call(&h.app, "POST", "/v1/sessions", Some(&t), Some(json!({}))).await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_request");
    h.runtime
        .with(|s| s.fail_create = Some(CreateFailure::Start));
    let (status, err) = call(&h.app, "POST", "/v1/sessions", Some(&t), Some(json!({}))).await;
    assert_error(status, &err, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    assert!(
        !err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exploded")
    );
    let (_, list) = call(&h.app, "GET", "/v1/sessions", Some(&t), None).await;
    assert_eq!(list["total"], 0);
}

// ---------------------------------------------------------------------------------------------
// Reaper, died sandboxes, recovery

#[tokio::test]
async fn reaper_destroys_expired_sessions_within_a_second() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({"ttl": 60})).await);
    let keep = id_of(&create(&h.app, &t, json!({"ttl": 60})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    let expires = now_ms();
    h.server
        .state
        .sessions
        .store
        .update(uuid, Some(expires), None, None)
        .await
        .unwrap()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        let (status, _) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&t), None).await;
        if status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not reaped in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.runtime.with(|s| {
        assert_eq!(s.destroyed, vec![uuid]);
        assert_eq!(s.overlapping_destroys, 0);
    });
    let (status, _) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{keep}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn died_sandboxes_are_destroyed() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    h.died.send(uuid).unwrap();
    h.died.send(Uuid::now_v7()).unwrap(); // unknown ids are ignored
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while h.runtime.with(|s| s.destroyed.is_empty()) {
        assert!(tokio::time::Instant::now() < deadline, "not destroyed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (status, _) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&t), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(h.runtime.with(|s| s.destroyed.clone()), vec![uuid]);
}

fn row(status: SessionStatus, expires_at_ms: i64, with_record: bool) -> StoredSession {
    let id = Uuid::now_v7();
    StoredSession {
        id,
        tenant: "a".into(),
        status,
        image: "default".into(),
        metadata: BTreeMap::new(),
        resources: Resources::default(),
        env: BTreeMap::new(),
        created_at_ms: now_ms(),
        expires_at_ms,
        record: with_record.then(|| SandboxRecord {
            id,
            sandbox_id: Uuid::new_v4(),
            runtime: fake_data(),
        }),
        network: hutch_api::NetworkPolicy::default(),
        paused: (status == SessionStatus::Paused).then_some(crate::store::Paused {
            at_ms: now_ms(),
            cause: crate::store::PauseCause::Request,
        }),
        auto_pause: None,
    }
}

#[tokio::test]
async fn recovery_adopts_the_living_and_destroys_the_rest() {
    // No reaper pass in the first run: the expired row must survive until the restart.
    let first = harness_with(tempfile::tempdir().unwrap(), Arc::default(), |c| {
        c.reaper_interval = Duration::from_secs(3600);
    })
    .await;
    let later = now_ms() + 600_000;
    let alive = row(SessionStatus::Running, later, true);
    let paused = row(SessionStatus::Paused, later, true);
    let lost = row(SessionStatus::Running, later, true);
    let expired = row(SessionStatus::Running, now_ms() - 1, true);
    let creating = row(SessionStatus::Creating, later, false);
    let deleting = row(SessionStatus::Deleting, later, true);
    let store = &first.server.state.sessions.store;
    for r in [&alive, &paused, &lost, &expired, &creating, &deleting] {
        store.insert_raw(r).await.unwrap();
    }
    let Harness { server, dir, .. } = first;
    drop(server);

    let leftover = Uuid::now_v7();
    let runtime = Arc::new(FakeRuntime::default());
    runtime.with(|s| {
        s.adoptable = HashSet::from([alive.id, paused.id]);
        s.sweep_finds = vec![leftover];
    });
    let second = harness_with(dir, runtime.clone(), |_| {}).await;
    let summary = second.server.recovery();
    assert_eq!(summary.adopted, 2);
    assert_eq!(summary.destroyed, 4);
    assert_eq!(summary.swept, 1);
    runtime.with(|s| {
        let destroyed: HashSet<_> = s.destroyed.iter().copied().collect();
        // The CREATING row had no record: nothing to destroy, but its row goes.
        assert_eq!(destroyed, HashSet::from([lost.id, expired.id, deleting.id]));
        assert_eq!(s.swept_with, Some(HashSet::from([alive.id, paused.id])));
    });
    let (_, list) = call(&second.app, "GET", "/v1/sessions", Some(&token("a")), None).await;
    let mut ids: Vec<_> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    ids.sort();
    let mut want = vec![alive.id.to_string(), paused.id.to_string()];
    want.sort();
    assert_eq!(ids, want);
}

// ---------------------------------------------------------------------------------------------
// Proxy

#[tokio::test]
async fn commands_are_proxied_to_the_agent() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let (status, result) = call(
        &h.app,
        "POST",
        &format!("/v1/sessions/{id}/commands"),
        Some(&t),
        Some(json!({"command": "echo hi"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    let result: CommandResult = serde_json::from_value(result).unwrap();
    assert_eq!(result.stdout, "echo hi\n");
}

#[tokio::test]
async fn proxy_forwards_path_query_and_safe_headers() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let req = Request::builder()
        .method("GET")
        .uri(format!(
            "/v1/sessions/{id}/files/content?path=%2Ftmp%2Fa%20b&x=1"
        ))
        .header("authorization", format!("Bearer {t}"))
        .header("host", "example.com")
        .header("x-custom", "kept")
        .header("connection", "keep-alive, x-secret")
        .header("x-secret", "dropped")
        .header("proxy-authorization", "dropped")
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-agent"], "fake");
    assert!(response.headers().contains_key("x-request-id"));
    let seen: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["target"], "/files/content?path=%2Ftmp%2Fa%20b&x=1");
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["x-custom"], "kept");
    assert_eq!(headers["host"], "hutch-agent");
    assert!(headers.contains_key("x-request-id"));
    for gone in [
        "authorization",
        "x-secret",
        "proxy-authorization",
        "connection",
    ] {
        assert!(!headers.contains_key(gone), "{gone} was forwarded");
    }
}

#[tokio::test]
async fn proxy_needs_a_running_reachable_sandbox() {
    let h = harness().await;
    let t = token("a");
    let paused = row(SessionStatus::Paused, now_ms() + 60_000, true);
    h.server
        .state
        .sessions
        .store
        .insert_raw(&paused)
        .await
        .unwrap();
    let (status, err) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{}/files", paused.id),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &err, StatusCode::CONFLICT, "session_paused");

    let id = id_of(&create(&h.app, &t, json!({})).await);
    h.runtime.with(|s| s.live.clear());
    let (status, err) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{id}/files"),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &err, StatusCode::BAD_GATEWAY, "sandbox_unavailable");
}

/// The check before each relayed request is answered from memory once a read found the
/// session RUNNING: it must still see another tenant, a pause and a delete at once.
#[tokio::test]
async fn a_session_that_answered_is_checked_again_after_a_pause_or_a_delete() {
    let h = harness().await;
    let (a, b) = (token("a"), token("b"));
    let files = |id: &str| format!("/v1/sessions/{id}/files");
    let id = id_of(&create(&h.app, &a, json!({})).await);
    for _ in 0..2 {
        let (status, _) = call(&h.app, "GET", &files(&id), Some(&a), None).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, err) = call(&h.app, "GET", &files(&id), Some(&b), None).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");

    let store = &h.server.state.sessions.store;
    let uuid: Uuid = id.parse().unwrap();
    store
        .set_paused(uuid, now_ms(), crate::store::PauseCause::Request)
        .await
        .unwrap()
        .expect("a RUNNING row");
    let (status, err) = call(&h.app, "GET", &files(&id), Some(&a), None).await;
    assert_error(status, &err, StatusCode::CONFLICT, "session_paused");
    store
        .set_resumed(uuid)
        .await
        .unwrap()
        .expect("a PAUSED row");
    let (status, _) = call(&h.app, "GET", &files(&id), Some(&a), None).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        Some(&a),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, err) = call(&h.app, "GET", &files(&id), Some(&a), None).await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "session_not_found");
}

#[tokio::test]
async fn upgrades_pass_through() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let Harness {
        server, runtime, ..
    } = h;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve_until(listener, async {
        let _ = stop_rx.await;
    }));

    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/sessions/{id}/upgrade HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {t}\r\n\
         Connection: Upgrade\r\nUpgrade: echo\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0_u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    stream.write_all(b"ping").await.unwrap();
    let mut echoed = [0_u8; 4];
    tokio::time::timeout(Duration::from_secs(2), stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
    drop(stream);
    drop(runtime);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Metrics and request-head bounds

/// The value of the series `name{labels}` (the labels given, maybe among others) in a page of
/// the Prometheus text format.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (head, value) = line.rsplit_once(' ')?;
            let (series_name, rest) = head.split_once('{').unwrap_or((head, "}"));
            let rest = rest.strip_suffix('}')?;
            let matches = series_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.split(',').any(|pair| pair == format!("{k}=\"{v}\"")));
            matches.then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(app: &Router) -> String {
    let (status, headers, body) = send(app, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{headers:?}"
    );
    body.as_str().unwrap().to_owned()
}

#[tokio::test]
async fn metrics_count_requests_commands_errors_and_sessions() {
    let h = harness().await;
    let t = token("a");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    for _ in 0..3 {
        let (status, body) = call(
            &h.app,
            "POST",
            &format!("/v1/sessions/{id}/commands"),
            Some(&t),
            Some(json!({"command": "true"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, _) = call(&h.app, "GET", &format!("/v1/sessions/{id}"), Some(&t), None).await;
    assert_eq!(status, StatusCode::OK);
    let missing = Uuid::now_v7();
    let (status, body) = call(
        &h.app,
        "GET",
        &format!("/v1/sessions/{missing}"),
        Some(&t),
        None,
    )
    .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "session_not_found");
    let (status, body) = call(&h.app, "GET", "/v1/sessions", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _) = call(&h.app, "BREW", &format!("/v1/sessions/{id}/x"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let text = scrape(&h.app).await;
    let duration = "hutch_http_request_duration_seconds_count";
    let commands = [
        ("method", "POST"),
        ("route", "/v1/sessions/{id}/commands"),
        ("status_class", "2xx"),
    ];
    assert_eq!(series(&text, duration, &commands), Some(3.0), "{text}");
    let get_one = [("method", "GET"), ("route", "/v1/sessions/{id}")];
    let ok = [get_one[0], get_one[1], ("status_class", "2xx")];
    let client_error = [get_one[0], get_one[1], ("status_class", "4xx")];
    assert_eq!(series(&text, duration, &ok), Some(1.0), "{text}");
    assert_eq!(series(&text, duration, &client_error), Some(1.0), "{text}");
    let odd = [
        ("method", "other"),
        ("route", "/v1/sessions/{id}/{*rest}"),
        ("status_class", "4xx"),
    ];
    assert_eq!(series(&text, duration, &odd), Some(1.0), "{text}");
    let sum = series(&text, "hutch_http_request_duration_seconds_sum", &commands).unwrap();
    assert!(sum > 0.0 && sum < 30.0, "{sum}");
    assert_eq!(
        series(&text, "hutch_command_executions_total", &[]),
        Some(3.0)
    );
    let errors = "hutch_error_responses_total";
    assert_eq!(
        series(&text, errors, &[("code", "session_not_found")]),
        Some(1.0)
    );
    assert_eq!(
        series(&text, errors, &[("code", "unauthorized")]),
        Some(2.0)
    );
    assert_eq!(
        series(&text, "hutch_sessions", &[("state", "RUNNING")]),
        Some(1.0)
    );
    assert_eq!(
        series(&text, "hutch_sessions", &[("state", "DELETING")]),
        Some(0.0)
    );
    let creates = [("outcome", "ok")];
    assert_eq!(
        series(
            &text,
            "hutch_sandbox_create_duration_seconds_count",
            &creates
        ),
        Some(1.0)
    );
    // The fake runtime takes 5 ms to create.
    let created = series(&text, "hutch_sandbox_create_duration_seconds_sum", &creates).unwrap();
    assert!((0.004..10.0).contains(&created), "{created}");
    assert!(!text.contains(&id), "no series names a session");
    assert!(!text.contains("\"a\""), "no series names a tenant");

    let (status, _) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let text = scrape(&h.app).await;
    assert_eq!(
        series(&text, "hutch_sessions", &[("state", "RUNNING")]),
        Some(0.0)
    );
}

#[tokio::test]
async fn failed_creates_are_timed_as_errors() {
    let runtime = Arc::new(FakeRuntime::default());
    runtime.with(|s| s.fail_create = Some(CreateFailure::Start));
    let h = harness_with(tempfile::tempdir().unwrap(), runtime, |_| {}).await;
    let (status, body) = call(
        &h.app,
        "POST",
        "/v1/sessions",
        Some(&token("a")),
        Some(json!({})),
    )
    .await;
    assert_error(status, &body, StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let text = scrape(&h.app).await;
    assert_eq!(
        series(
            &text,
            "hutch_sandbox_create_duration_seconds_count",
            &[("outcome", "error")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            "hutch_error_responses_total",
            &[("code", "internal")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn several_servers_in_one_process_keep_their_own_metrics() {
    let (a, b) = (harness().await, harness().await);
    let (status, _) = call(&a.app, "GET", "/health", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let health = [("route", "/health"), ("status_class", "2xx")];
    let count = "hutch_http_request_duration_seconds_count";
    assert_eq!(series(&scrape(&a.app).await, count, &health), Some(1.0));
    assert_eq!(series(&scrape(&b.app).await, count, &health), None);
}

#[tokio::test]
async fn oversized_request_heads_answer_in_the_envelope() {
    use hutch_api::limits::{REQUEST_HEADERS_MAX_BYTES, REQUEST_URI_MAX_BYTES};
    let h = harness().await;
    let t = token("a");

    // Sixteen headers of 1 KiB each, plus the token: over the total, under hyper's own limits.
    let mut req = Request::builder()
        .method("GET")
        .uri("/v1/sessions")
        .header("authorization", format!("Bearer {t}"));
    for i in 0..16 {
        req = req.header(format!("x-filler-{i}"), "f".repeat(1024));
    }
    let response = h
        .app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
    );
    assert_eq!(
        response.headers()["x-hutch-error-code"],
        "headers_too_large"
    );
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        &body,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );
    assert_eq!(
        body["error"]["details"]["limitBytes"],
        REQUEST_HEADERS_MAX_BYTES
    );

    // Just under the total passes (the request id the server adds counts too).
    let filler = REQUEST_HEADERS_MAX_BYTES - 1024;
    let req = Request::builder()
        .uri("/health")
        .header("x-filler", "f".repeat(filler))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        h.app.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );

    let long = format!(
        "/v1/sessions?offset=0&pad={}",
        "p".repeat(REQUEST_URI_MAX_BYTES)
    );
    let (status, body) = call(&h.app, "GET", &long, Some(&t), None).await;
    assert_error(status, &body, StatusCode::URI_TOO_LONG, "uri_too_long");

    let text = scrape(&h.app).await;
    let errors = "hutch_error_responses_total";
    assert_eq!(
        series(&text, errors, &[("code", "headers_too_large")]),
        Some(1.0)
    );
    assert_eq!(
        series(&text, errors, &[("code", "uri_too_long")]),
        Some(1.0)
    );
}

/// The console cookie's `name=value` pair from a `Set-Cookie` answer.
fn console_cookie(headers: &axum::http::HeaderMap) -> String {
    let set = headers.get("set-cookie").unwrap().to_str().unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attribute), "{set}");
    }
    set.split(';').next().unwrap().to_owned()
}

/// Logs in to the console with `token`: the cookie and its CSRF token.
async fn console_login(app: &Router, token: &str) -> (String, String) {
    let (status, headers, body) = send(app, "POST", "/console/session", Some(token), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        console_cookie(&headers),
        body["csrf"].as_str().unwrap().to_owned(),
    )
}

/// The ids of the sessions a console login lists.
async fn console_list(app: &Router, cookie: &str, csrf: &str) -> Vec<String> {
    let (status, _, body) = send_with(
        app,
        "GET",
        "/v1/sessions",
        &[("cookie", cookie), ("x-hutch-csrf", csrf)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect()
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_csp() {
    let h = harness().await;
    let (status, headers, _) = send(&h.app, "GET", "/console", None, None).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(headers["location"], "/console/");
    let (status, headers, page) = send(&h.app, "GET", "/console/", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-security-policy"], crate::console::CSP);
    assert!(crate::console::CSP.contains("script-src 'self';"));
    assert!(crate::console::CSP.contains("connect-src 'self';"));
    assert!(crate::console::CSP.contains("frame-ancestors 'none'"));
    assert!(page.as_str().unwrap().contains("<html"), "{page}");
    // Every embedded asset is served, compressed when asked, and nothing else is.
    for (name, raw, gz) in crate::console::assets() {
        let uri = format!("/console/{name}");
        let (status, headers, _) = send_with(&h.app, "GET", &uri, &[], None).await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(headers["content-length"], raw.len().to_string().as_str());
        let (_, headers, _) =
            send_with(&h.app, "GET", &uri, &[("accept-encoding", "gzip")], None).await;
        assert_eq!(headers["content-encoding"], "gzip");
        assert_eq!(headers["content-length"], gz.len().to_string().as_str());
    }
    let (status, _, body) = send(&h.app, "GET", "/console/../jwt-secret", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _, body) = send(&h.app, "GET", "/console/assets/none.js", None, None).await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn console_cookies_need_their_csrf_token_and_never_reach_the_agent() {
    let h = harness().await;
    let alice = token("alice");
    let id = id_of(&create(&h.app, &alice, json!({})).await);
    let (status, body) = call(&h.app, "POST", "/console/session", None, None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (cookie, csrf) = console_login(&h.app, &alice).await;
    assert_eq!(console_list(&h.app, &cookie, &csrf).await, vec![id.clone()]);
    // Without the CSRF token, or with another cookie's, the cookie authenticates nothing.
    let (_, bob_csrf) = console_login(&h.app, &token("bob")).await;
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("x-hutch-csrf", "")],
        vec![
            ("cookie", cookie.as_str()),
            ("x-hutch-csrf", bob_csrf.as_str()),
        ],
    ] {
        let (status, _, body) = send_with(
            &h.app,
            "DELETE",
            &format!("/v1/sessions/{id}"),
            &headers,
            None,
        )
        .await;
        assert_error(status, &body, StatusCode::FORBIDDEN, "forbidden");
    }
    // A relayed request carries neither the cookie nor a token to the session's agent; the
    // request's other cookies go on.
    let both = format!("other=1; {cookie}");
    let (status, _, echoed) = send_with(
        &h.app,
        "GET",
        &format!("/v1/sessions/{id}/whoami"),
        &[("cookie", &both), ("x-hutch-csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{echoed}");
    assert_eq!(echoed["headers"]["cookie"], "other=1", "{echoed}");
    assert!(echoed["headers"].get("authorization").is_none(), "{echoed}");
    // Logging out clears the cookie.
    let (status, headers, _) = send_with(&h.app, "DELETE", "/console/session", &[], None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test]
async fn console_logins_see_only_their_tenants_sessions_and_links_open_once() {
    let h = harness().await;
    let id = id_of(&create(&h.app, &token("alice"), json!({})).await);
    let (cookie, csrf) = console_login(&h.app, &token("bob")).await;
    assert!(console_list(&h.app, &cookie, &csrf).await.is_empty());
    // An admin's login link sees every tenant's sessions.
    let link = crate::console::login_token(
        SECRET.as_bytes(),
        "root",
        true,
        crate::console::LINK_TTL_DEFAULT,
    )
    .unwrap();
    let uri = format!("/console/login?t={link}");
    let (status, headers, _) = send_with(&h.app, "GET", &uri, &[], None).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let location = headers["location"].to_str().unwrap().to_owned();
    let csrf = location
        .strip_prefix("/console/#csrf=")
        .and_then(|rest| rest.split('&').next())
        .unwrap();
    assert!(location.ends_with("&tenant=root&admin=true"), "{location}");
    let cookie = console_cookie(&headers);
    assert_eq!(console_list(&h.app, &cookie, csrf).await, vec![id]);
    // Once only; a bearer token is no link; a link is no bearer token.
    let (status, _, body) = send_with(&h.app, "GET", &uri, &[], None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "link_invalid");
    let uri = format!("/console/login?t={}", token("alice"));
    let (status, _, body) = send_with(&h.app, "GET", &uri, &[], None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "link_invalid");
    let (status, body) = call(&h.app, "GET", "/v1/sessions", Some(&link), None).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, _, body) = send_with(&h.app, "GET", "/console/login", &[], None).await;
    assert_error(status, &body, StatusCode::BAD_REQUEST, "invalid_request");
}

// ---------------------------------------------------------------------------------------------
// Kept agent connections

impl FakeRuntime {
    /// How many connections were opened to `id`'s agent.
    fn connects(&self, id: Uuid) -> usize {
        self.with(|s| s.connects.get(&id).copied().unwrap_or(0))
    }

    /// How many of `id`'s agent connections are still served.
    fn open_agent_ends(&self, id: Uuid) -> usize {
        self.with(|s| {
            s.agent_ends
                .get(&id)
                .map_or(0, |ends| ends.iter().filter(|e| !e.is_finished()).count())
        })
    }

    /// Kills the agent's end of every connection to `id` (it closes when the runtime next
    /// runs its task).
    fn abort_agent_ends(&self, id: Uuid) {
        self.with(|s| {
            for end in s.agent_ends.get(&id).into_iter().flatten() {
                end.abort();
            }
        });
    }

    /// Kills the agent's end of every connection to `id` and waits (bounded) until each is
    /// closed.
    async fn kill_agent_ends(&self, id: Uuid) {
        self.abort_agent_ends(id);
        wait_until_closed(self, id).await;
    }
}

/// Waits (10 s at most) until no connection to `id`'s agent is served.
async fn wait_until_closed(runtime: &FakeRuntime, id: Uuid) {
    for _ in 0..1000 {
        if runtime.open_agent_ends(id) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("agent connections of {id} stayed open");
}

/// Runs `echo {word}` in session `id` through the relay; returns its stdout.
async fn relay_command(app: &Router, t: &str, id: &str, word: &str) -> String {
    let (status, result) = call(
        app,
        "POST",
        &format!("/v1/sessions/{id}/commands"),
        Some(t),
        Some(json!({"command": word})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{result}");
    result["stdout"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sequential_requests_reuse_one_agent_connection() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    for i in 0..20 {
        assert_eq!(
            relay_command(&h.app, &t, &id, &format!("n{i}")).await,
            format!("n{i}\n")
        );
        let (status, got) = call(
            &h.app,
            "GET",
            &format!("/v1/sessions/{id}/files?path=/"),
            Some(&t),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{got}");
        assert_eq!(got["target"], "/files?path=/");
    }
    assert_eq!(h.runtime.connects(uuid), 1, "40 requests, one connection");
    let (_, _, metrics) = send(&h.app, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains("hutch_agent_connections_total{reused=\"true\"} 39"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hutch_agent_connections_total{reused=\"false\"} 1"),
        "{metrics}"
    );

    // Another session's requests never get this session's connection.
    let other = id_of(&create(&h.app, &t, json!({})).await);
    assert_eq!(relay_command(&h.app, &t, &other, "x").await, "x\n");
    assert_eq!(h.runtime.connects(Uuid::parse_str(&other).unwrap()), 1);
    assert_eq!(h.runtime.connects(uuid), 1);
}

#[tokio::test]
async fn a_streamed_answer_read_to_its_end_gives_its_connection_back() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    for i in 0..10 {
        let (status, got) = call(
            &h.app,
            "POST",
            &format!("/v1/sessions/{id}/interpreter/execute"),
            Some(&t),
            Some(json!({"code": "x = 1 + 1"})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "execution {i}: {got}");
        assert_eq!(got["target"], "/interpreter/execute");
    }
    assert_eq!(h.runtime.connects(uuid), 1, "10 executions, one connection");
    assert_eq!(h.server.state.sessions.agent_pool().idle_count(uuid), 1);
}

#[tokio::test]
async fn a_session_keeps_as_many_idle_connections_as_it_may_have_contexts() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    // The fake agent holds each `/slow` until all of its burst are in.
    let slow = format!("/v1/sessions/{id}/slow");
    let burst = || {
        futures_util::future::join_all(
            (0..SLOW_BURST).map(|_| call(&h.app, "GET", &slow, Some(&t), None)),
        )
    };
    for (status, got) in burst().await {
        assert_eq!(status, StatusCode::OK, "{got}");
    }
    assert_eq!(h.runtime.connects(uuid), SLOW_BURST, "all at once");
    let pool = h.server.state.sessions.agent_pool();
    assert_eq!(
        pool.idle_count(uuid),
        crate::proxy::pool::MAX_IDLE_PER_SESSION
    );
    burst().await;
    assert_eq!(
        h.runtime.connects(uuid),
        2 * SLOW_BURST - crate::proxy::pool::MAX_IDLE_PER_SESSION,
        "the kept ones were used again"
    );
}

#[tokio::test]
async fn a_half_read_answer_keeps_no_connection() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    // An answer dropped unread: its connection is closed, not kept.
    let req = Request::builder()
        .method("GET")
        .uri(format!("/v1/sessions/{id}/files?path=/"))
        .header("authorization", format!("Bearer {t}"))
        .body(Body::empty())
        .unwrap();
    let response = h.app.clone().oneshot(req).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(response);
    wait_until_closed(&h.runtime, uuid).await;
    assert_eq!(relay_command(&h.app, &t, &id, "a").await, "a\n");
    assert_eq!(h.runtime.connects(uuid), 2);
}

#[tokio::test]
async fn a_destroyed_sessions_kept_connection_is_closed() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    assert_eq!(relay_command(&h.app, &t, &id, "a").await, "a\n");
    assert_eq!(h.server.state.sessions.agent_pool().idle_count(uuid), 1);
    let (status, _) = call(
        &h.app,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        Some(&t),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The connection is gone with the sandbox: a sandbox made again under this id could not
    // be reached through it.
    assert_eq!(h.server.state.sessions.agent_pool().idle_count(uuid), 0);
    wait_until_closed(&h.runtime, uuid).await;
}

#[tokio::test]
async fn a_lease_taken_before_a_forget_does_not_return_its_connection() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    assert_eq!(relay_command(&h.app, &t, &id, "a").await, "a\n");
    let pool = h.server.state.sessions.agent_pool();
    let conn = pool.checkout(uuid).await.expect("the kept connection");
    let lease = pool.lease(uuid);
    // The sandbox is destroyed while the exchange runs.
    pool.forget(uuid);
    lease.give_back(conn);
    assert_eq!(pool.idle_count(uuid), 0);
    wait_until_closed(&h.runtime, uuid).await;
}

#[tokio::test]
async fn a_killed_agents_stale_connection_does_not_fail_the_next_request() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    for round in 0..5 {
        assert_eq!(relay_command(&h.app, &t, &id, "a").await, "a\n");
        h.runtime.kill_agent_ends(uuid).await;
        // A POST is not idempotent: it is retried only because it provably never left.
        assert_eq!(
            relay_command(&h.app, &t, &id, "b").await,
            "b\n",
            "round {round}"
        );
        h.runtime.kill_agent_ends(uuid).await;
        let (status, got) = call(
            &h.app,
            "GET",
            &format!("/v1/sessions/{id}/files?path=/"),
            Some(&t),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {got}");
    }
}

#[tokio::test]
async fn a_connection_killed_as_an_idempotent_request_takes_it_is_retried() {
    let h = harness().await;
    let t = token("alice");
    let id = id_of(&create(&h.app, &t, json!({})).await);
    let uuid = Uuid::parse_str(&id).unwrap();
    for round in 0..5 {
        assert_eq!(relay_command(&h.app, &t, &id, "a").await, "a\n");
        // No wait: the kept connection is taken while its agent end closes. The GET may have
        // reached the dying agent, but it is idempotent and no byte of answer came: it goes
        // out again on a new connection. (A POST there is not provably unsent: 502.)
        h.runtime.abort_agent_ends(uuid);
        let (status, got) = call(
            &h.app,
            "GET",
            &format!("/v1/sessions/{id}/files?path=/"),
            Some(&t),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "round {round}: {got}");
    }
    assert_eq!(h.runtime.connects(uuid), 6);
}
