//! `POST /v1/mcp`: the MCP server over streamable HTTP, with the API's bearer tokens.
//!
//! A request without a valid token is refused 401 before MCP sees it. Each tool then calls
//! this server's own router in-process as the same caller: the MCP request's
//! `Authorization` (and `Host`, for the addresses of preview links) go on every inner
//! request, so the inner request is authenticated, rate-limited, validated and confined to
//! its tenant by the same code as any REST call, with no socket, no TLS and no second
//! listener in between.

use std::sync::Arc;

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hutch_api::limits::JSON_BODY_MAX_BYTES;
use hutch_mcp::{AnswerBody, Backend, BackendError, BodyError};
use tower::ServiceExt;

use crate::AppState;
use crate::api::REQUEST_ID;
use crate::openapi::Unauthorized;

/// The route of the MCP endpoint.
pub(crate) const MCP_ROUTE: &str = "/v1/mcp";

/// The MCP route, its tools calling `api` (the rest of the router).
pub(crate) fn routes(state: AppState, api: Router) -> Router {
    let service = hutch_mcp::streamable_http(Arc::new(RouterBackend { api }));
    Router::new()
        .route_service(MCP_ROUTE, service)
        .route_layer(middleware::from_fn_with_state(state, authenticate))
}

/// The Model Context Protocol endpoint (streamable HTTP).
///
/// One JSON-RPC 2.0 message of MCP per `POST` (`initialize`, `tools/list`, `tools/call`,
/// `resources/list`, `resources/read`, …), answered with one JSON-RPC message as
/// `application/json`; a notification or a response is accepted with 202 and no body. The
/// client must send `Content-Type: application/json` and `Accept: application/json,
/// text/event-stream`, as the MCP streamable-HTTP transport requires. The server is
/// stateless: it issues no `Mcp-Session-Id`, every request carries its own bearer token, and
/// `GET` and `DELETE` (the transport's event stream and session end) answer 405.
///
/// The token is checked before MCP sees the request (401, an `ErrorBody`). Each tool then
/// calls this API as the same caller, so its bounds, rate limits and tenancy hold: a refused
/// tool call is a tool result with `isError`, carrying the API's error code, inside a 200.
/// The transport's own refusals are not `ErrorBody`s: a body that is not JSON (400, JSON-RPC
/// error -32700) or not a JSON-RPC message of MCP (400, -32600) and an unsupported protocol
/// version (400) answer a JSON-RPC error object, and so does an unknown method (-32601,
/// inside a 200); a missing `Accept` (406), a wrong `Content-Type` (415) or a body over the
/// JSON body limit (413) answer plain text.
#[utoipa::path(
    post,
    path = "/v1/mcp",
    operation_id = "mcp",
    tag = "mcp",
    request_body(content = inline(Object), content_type = "application/json",
        description = "One JSON-RPC 2.0 message of MCP: `{\"jsonrpc\": \"2.0\", \"id\", \
            \"method\", \"params\"}`."),
    responses(
        (status = 200, description = "The JSON-RPC answer: `result`, or `error` for a failed \
            request", content_type = "application/json", body = inline(Object)),
        (status = 202, description = "A notification or response, accepted; no body"),
        (status = 400, description = "A body that is not JSON (JSON-RPC error -32700) or not \
            a JSON-RPC message of MCP (-32600), or an unsupported `MCP-Protocol-Version` (a \
            JSON-RPC error object); a body the client broke off (text)",
            content_type = "application/json", body = inline(Object)),
        (status = 401, response = Unauthorized),
        (status = 406, description = "`Accept` lacks `application/json` or \
            `text/event-stream`", content_type = "text/plain", body = String),
        (status = 413, description = "The body is larger than the JSON body limit",
            content_type = "text/plain", body = String),
        (status = 415, description = "`Content-Type` is not `application/json`",
            content_type = "text/plain", body = String),
    ),
    security(("bearer" = []))
)]
#[allow(dead_code)] // documents the route of the MCP service; never called
pub(crate) fn mcp() {}

/// Refuses a request without a valid bearer token with the API's 401. The MCP transport's
/// own plain-text refusals (406, 413, 415) come without a media type; they get the
/// `text/plain` the API document gives them.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match state.verifier.check(header) {
        Ok(_) => {
            let req = match checked_message(req).await {
                Ok(req) => req,
                Err(refusal) => return refusal,
            };
            let mut response = next.run(req).await;
            if response.status().is_client_error() && !response.headers().contains_key(CONTENT_TYPE)
            {
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            response
        }
        Err(error) => error.into_response(),
    }
}

/// Reads the body of a `POST` of JSON (bounded like any JSON body of the API) and refuses one
/// that is no MCP message with JSON-RPC's own error, 400 (the transport would answer 415, as
/// if the media type were wrong). A body the client breaks off answers 400, not the
/// transport's 500.
async fn checked_message(req: Request) -> Result<Request, Response> {
    let json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            let essence = value.split_once(';').map_or(value, |(essence, _)| essence);
            essence.trim().eq_ignore_ascii_case("application/json")
        });
    if req.method() != Method::POST || !json {
        return Ok(req);
    }
    let (parts, body) = req.into_parts();
    let text = |status: StatusCode, message: String| {
        let mut response = (status, message).into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        response
    };
    let bytes = match Limited::new(body, JSON_BODY_MAX_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.is::<LengthLimitError>() => {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Payload Too Large: request body exceeds {JSON_BODY_MAX_BYTES} bytes"),
            ));
        }
        Err(err) => {
            tracing::debug!(error = %err, "reading an MCP request's body failed");
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {err}"),
            ));
        }
    };
    if let Err(err) = hutch_mcp::check_message(&bytes) {
        return Err((StatusCode::BAD_REQUEST, axum::Json(err.answer())).into_response());
    }
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

/// Sends a tool's API requests through the server's router, as the MCP request's caller.
struct RouterBackend {
    api: Router,
}

#[async_trait]
impl Backend for RouterBackend {
    async fn send(
        &self,
        request: axum::http::Request<Bytes>,
        origin: Option<&Parts>,
    ) -> Result<axum::http::Response<AnswerBody>, BackendError> {
        let (mut parts, body) = request.into_parts();
        if let Some(origin) = origin {
            for name in [AUTHORIZATION, HOST] {
                if let Some(value) = origin.headers.get(&name) {
                    parts.headers.insert(name, value.clone());
                }
            }
            if let Some(id) = origin.headers.get(REQUEST_ID) {
                parts.headers.insert(REQUEST_ID, id.clone());
            }
        }
        let request = Request::from_parts(parts, axum::body::Body::from(body));
        let response = match self.api.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        Ok(response.map(|body| body.map_err(BodyError::from).boxed_unsync()))
    }
}
