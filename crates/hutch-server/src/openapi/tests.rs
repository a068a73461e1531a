//! The contract's own checks: the checked-in document is the generated one, every route of
//! the router is in it (and nothing else is), security and shared responses are consistent,
//! and both documents are served as they should be.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hutch_sandbox::{AgentConnection, Deaths, Runtime, SandboxError, SandboxRecord, SandboxSpec};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use super::*;
use crate::auth::mint_token;
use crate::{Server, ServerConfig};

/// The variable that makes [`checked_in_document_is_current`] rewrite the file.
const UPDATE_VAR: &str = "HUTCH_UPDATE_OPENAPI";
const SECRET: &str = "openapi-test-secret";
/// Methods probed on every documented path.
const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
];
/// Route paths in `api.rs` that are written as constants, with their values.
const ROUTE_CONSTANTS: &[(&str, &str)] = &[
    ("crate::metrics::PROXY_ROUTE", crate::metrics::PROXY_ROUTE),
    ("MCP_ROUTE", crate::mcp::MCP_ROUTE),
];
/// The MCP endpoint, whose transport answers its own refusals (JSON-RPC errors and text).
const MCP_PATH: &str = "/v1/mcp";

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn document() -> Value {
    serde_json::to_value(openapi()).unwrap()
}

#[test]
fn checked_in_document_is_current() {
    let generated = openapi_json().unwrap();
    let path = checked_in_path();
    if std::env::var(UPDATE_VAR).is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
        eprintln!("rewrote {}", path.display());
        return;
    }
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != generated {
        let first_difference = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
        panic!(
            "docs/openapi.json does not match the document the code generates (first \
             difference at line {}).\nRegenerate it with\n\n    {UPDATE_VAR}=1 cargo test -p \
             hutch-server openapi\n\nand commit the result.",
            first_difference + 1
        );
    }
}

#[test]
fn document_is_openapi_3_1_with_unique_operation_ids() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = HashSet::new();
    for (path, method, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{method} {path} has no operationId");
        assert!(ids.insert(id.to_owned()), "operationId {id} is used twice");
        assert!(op["summary"].is_string(), "{method} {path} has no summary");
    }
}

/// Every `(path, method, operation)` of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if METHODS
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method))
            {
                out.push((path.clone(), method.to_uppercase(), op.clone()));
            }
        }
    }
    out
}

/// The path of each `.route(...)` in `api.rs`, `storage_api.rs`, `ports/routes.rs` and
/// `images_api.rs`, and of each `.route_service(...)` in `mcp.rs`.
fn router_paths() -> Vec<String> {
    let sources = [
        (include_str!("../api.rs"), ".route("),
        (include_str!("../storage_api.rs"), ".route("),
        (include_str!("../ports/routes.rs"), ".route("),
        (include_str!("../images_api.rs"), ".route("),
        (include_str!("../mcp.rs"), ".route_service("),
    ];
    let mut paths = Vec::new();
    for chunk in sources
        .iter()
        .flat_map(|(source, call)| source.split(call).skip(1))
    {
        let first = chunk.trim_start();
        let arg = first.split([',', ')']).next().unwrap_or_default().trim();
        if let Some(literal) = arg.strip_prefix('"') {
            paths.push(literal.trim_end_matches('"').to_owned());
        } else {
            let Some((_, value)) = ROUTE_CONSTANTS.iter().find(|(name, _)| *name == arg) else {
                panic!(
                    "api.rs routes the path `{arg}`, which this test cannot read: add it to \
                     ROUTE_CONSTANTS"
                );
            };
            paths.push((*value).to_owned());
        }
    }
    assert!(
        paths.len() >= 5,
        "found too few routes in api.rs: {paths:?}"
    );
    paths
}

/// The part of a catch-all route before its `{*rest}` segment, if it is one.
fn catch_all_prefix(path: &str) -> Option<&str> {
    let (prefix, rest) = path.rsplit_once('/')?;
    (rest.starts_with("{*") && rest.ends_with('}')).then_some(prefix)
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let doc = document();
    let documented: BTreeSet<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let routes = router_paths();
    for route in &routes {
        match catch_all_prefix(route) {
            Some(prefix) => assert!(
                documented
                    .iter()
                    .any(|p| p.starts_with(&format!("{prefix}/"))),
                "the catch-all route {route} has no documented path under {prefix}/"
            ),
            // The path a catch-all serves under, with or without its final `/` (a
            // redirect to it, or its root), is documented with the catch-all.
            None if routes
                .iter()
                .any(|r| catch_all_prefix(r) == Some(route.trim_end_matches('/'))) => {}
            None => assert!(
                documented.contains(route),
                "the route {route} is not in the OpenAPI document: annotate its handler with \
                 #[utoipa::path] and list it in openapi.rs"
            ),
        }
    }
    for path in &documented {
        let served = routes.iter().any(|route| match catch_all_prefix(route) {
            Some(prefix) => path.starts_with(&format!("{prefix}/")),
            None => route == path,
        });
        assert!(
            served,
            "the document declares {path}, which no route serves"
        );
    }
}

#[test]
fn bearer_is_required_on_v1_but_the_document() {
    let doc = document();
    let schemes = doc["components"]["securitySchemes"].as_object().unwrap();
    assert_eq!(schemes.keys().collect::<Vec<_>>(), [BEARER]);
    assert_eq!(schemes[BEARER]["scheme"], "bearer");
    for (path, method, op) in operations(&doc) {
        let secured = op["security"]
            .as_array()
            .is_some_and(|reqs| reqs.iter().any(|r| r.get(BEARER).is_some()));
        let public = !path.starts_with("/v1/") || path == "/v1/openapi.json";
        assert_eq!(secured, !public, "{method} {path}: security is wrong");
        if secured {
            let responses = &op["responses"];
            assert!(responses.get("401").is_some(), "{method} {path} has no 401");
        }
    }
}

#[test]
fn every_error_response_is_an_error_body() {
    let doc = document();
    let shared = doc["components"]["responses"].as_object().unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(schemas.contains_key("ErrorBody") && schemas.contains_key("ErrorDetail"));
    for (name, response) in shared {
        assert_eq!(
            response["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "shared response {name}"
        );
    }
    for (path, method, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().unwrap() {
            if status.starts_with('4') || (status.starts_with('5') && status != "503") {
                let reference = response["$ref"].as_str().unwrap_or_default();
                if path == MCP_PATH && reference.is_empty() && status != "401" {
                    // The MCP transport's own refusal, described inline.
                    assert!(
                        response["description"].is_string(),
                        "{method} {path} {status}"
                    );
                    continue;
                }
                let name = reference.strip_prefix("#/components/responses/");
                assert!(
                    name.is_some_and(|name| shared.contains_key(name)),
                    "{method} {path} {status} is not a shared error response"
                );
            }
        }
        for status in ["414", "431"] {
            assert!(
                op["responses"].get(status).is_some(),
                "{method} {path} lacks {status}"
            );
        }
    }
}

#[test]
fn bounds_are_the_limits() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateSessionRequest"]["properties"];
    assert_eq!(create["ttl"]["minimum"], hutch_api::limits::TTL_MIN_SECS);
    assert_eq!(create["ttl"]["maximum"], hutch_api::limits::TTL_MAX_SECS);
    assert_eq!(
        create["metadata"]["maxProperties"],
        hutch_api::limits::METADATA_MAX_ENTRIES
    );
    let list = operations(&doc)
        .into_iter()
        .find(|(_, _, op)| op["operationId"] == "listSessions")
        .unwrap()
        .2;
    let limit = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(
        limit["schema"]["maximum"],
        hutch_api::limits::LIST_LIMIT_MAX
    );
}

#[test]
fn page_embeds_the_document_and_loads_nothing() {
    let json = openapi_json().unwrap();
    let page = render_page(&json);
    let start = page
        .find(r#"<script type="application/json" id="openapi">"#)
        .unwrap();
    let body = &page[start..];
    let body = &body[body.find('>').unwrap() + 1..];
    let embedded = &body[..body.find("</script>").unwrap()];
    let parsed: Value = serde_json::from_str(embedded).unwrap();
    assert_eq!(parsed, document());
    assert!(
        !embedded.contains('<'),
        "the embedded document must not contain '<'"
    );
    let lower = page.to_ascii_lowercase();
    for needle in [
        "<link",
        " src=",
        "@import",
        "url(",
        "fetch(",
        "xmlhttprequest",
    ] {
        assert!(
            !lower.contains(needle),
            "the page loads something: {needle}"
        );
    }
}

/// A runtime with no sandboxes: every session id is unknown to it.
#[derive(Debug)]
struct NoSandboxes;

#[async_trait]
impl Runtime for NoSandboxes {
    async fn create(&self, _spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        Err(SandboxError::Capacity(
            "this test builds no sandboxes".into(),
        ))
    }
    async fn destroy(&self, _record: &SandboxRecord) -> Result<(), SandboxError> {
        Ok(())
    }
    async fn adopt(&self, _record: &SandboxRecord) -> Result<bool, SandboxError> {
        Ok(false)
    }
    async fn sweep(&self, _known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        Ok(Vec::new())
    }
    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        Err(SandboxError::Gone(id))
    }
    fn deaths(&self) -> Deaths {
        // No sandbox ever dies: the sender goes at once.
        tokio::sync::mpsc::unbounded_channel().1
    }
    async fn set_deadline(
        &self,
        id: Uuid,
        _deadline: std::time::SystemTime,
    ) -> Result<(), SandboxError> {
        Err(SandboxError::Gone(id))
    }
}

async fn router() -> (Router, Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServerConfig::new(dir.path());
    config.jwt_secret = Some(SECRET.into());
    let server = Server::start(config, Arc::new(NoSandboxes)).await.unwrap();
    (server.app(), server, dir)
}

/// Sends `method path` with a valid token; returns the status, the error code if the body is
/// an error envelope, and the response.
async fn probe(app: &Router, method: &Method, path: &str) -> (StatusCode, Option<String>) {
    let token = mint_token(SECRET.as_bytes(), "probe", Duration::from_secs(600), false).unwrap();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        // As every HTTP/1.1 client sends it (the MCP transport refuses a request without).
        .header("host", "127.0.0.1")
        .body(Body::from("{}"))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
    (status, code)
}

#[tokio::test]
async fn the_router_answers_exactly_the_documented_methods() {
    let (app, _server, _dir) = router().await;
    let doc = document();
    let id = Uuid::now_v7().to_string();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path.replace("{id}", &id);
        let proxied = router_paths().iter().any(|route| {
            catch_all_prefix(route).is_some_and(|prefix| path.starts_with(&format!("{prefix}/")))
        });
        for method in METHODS {
            let documented = item.get(method.as_str().to_ascii_lowercase()).is_some();
            let (status, code) = probe(&app, &method, &concrete).await;
            // The API answers a method it does not route 404 `not_found`; the MCP transport
            // answers 405, as its specification asks.
            let unrouted = (status == StatusCode::NOT_FOUND
                && code.as_deref() == Some("not_found"))
                || (path == MCP_PATH && status == StatusCode::METHOD_NOT_ALLOWED);
            if documented {
                assert!(!unrouted, "{method} {path} is documented but not routed");
            } else if !proxied {
                // A proxied path takes any method; the agent answers the ones it lacks.
                assert!(
                    unrouted,
                    "{method} {path} is routed ({status}) but not documented"
                );
            }
        }
    }
}

#[tokio::test]
async fn contract_routes_serve_without_a_token() {
    let (app, _server, _dir) = router().await;
    let response = app
        .clone()
        .oneshot(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, openapi_json().unwrap().as_bytes());

    let response = app
        .oneshot(Request::get("/docs").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'")
    );
    let page = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&page).contains("\"operationId\": \"createSession\""));
}
