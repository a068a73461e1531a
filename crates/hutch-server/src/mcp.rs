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
use axum::http::header::{AUTHORIZATION, HOST};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hutch_mcp::{AnswerBody, Backend, BackendError, BodyError};
use tower::ServiceExt;

use crate::AppState;
use crate::api::REQUEST_ID;

/// The route of the MCP endpoint.
pub(crate) const MCP_ROUTE: &str = "/v1/mcp";

/// The MCP route, its tools calling `api` (the rest of the router).
pub(crate) fn routes(state: AppState, api: Router) -> Router {
    let service = hutch_mcp::streamable_http(Arc::new(RouterBackend { api }));
    Router::new()
        .route_service(MCP_ROUTE, service)
        .route_layer(middleware::from_fn_with_state(state, authenticate))
}

/// Refuses a request without a valid bearer token with the API's 401.
async fn authenticate(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    match state.verifier.check(header) {
        Ok(_) => next.run(req).await,
        Err(error) => error.into_response(),
    }
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
