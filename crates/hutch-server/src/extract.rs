//! Extractors that reject in the API's own error envelope instead of axum's plain text.
//!
//! - [`Json`] reads a JSON body (bounded by the router's body limit), answers 400
//!   `invalid_request` naming the offending field on bad JSON, unknown fields or wrong types,
//!   and 413 `payload_too_large` when the body is over the limit.
//! - [`Query`] reads the query string into a struct and answers 400 `invalid_request` when it
//!   does not fit.
//! - [`SessionId`] reads the `{id}` path segment as a UUID and answers 400 naming `sessionId`;
//!   [`ContextId`] does the same for storage contexts, naming `contextId`.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;

/// A JSON request or response body.
///
/// As an extractor, an empty body reads as `{}` so that requests whose fields are all
/// optional may omit it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Json<T>(pub(crate) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: hutch_api::limits::JSON_BODY_MAX_BYTES,
                }
            } else {
                ApiError::InvalidRequest {
                    message: format!("cannot read the request body: {}", rejection.body_text()),
                    field: None,
                }
            }
        })?;
        parse_json(&bytes).map(Json)
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// Parses a JSON document, naming the field at fault in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if !hutch_api::body::is_object_or_empty(bytes) {
        return Err(ApiError::invalid("body", hutch_api::body::NOT_AN_OBJECT));
    }
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        let field = unknown_field_name(&inner.to_string())
            .map(|name| join_path(&path, name))
            .or_else(|| (path != ".").then(|| path.clone()));
        let message = match &field {
            Some(field) => format!("invalid request body at `{field}`: {inner}"),
            None => format!("invalid request body: {inner}"),
        };
        ApiError::InvalidRequest { message, field }
    })?;
    deserializer.end().map_err(|err| ApiError::InvalidRequest {
        message: format!("invalid request body: {err}"),
        field: None,
    })?;
    Ok(value)
}

/// The field named by serde's "unknown field `x`, expected ..." message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// `parent.name`, or `name` at the top level.
fn join_path(parent: &str, name: &str) -> String {
    if parent == "." || parent.is_empty() {
        name.to_owned()
    } else if parent == name || parent.ends_with(&format!(".{name}")) {
        // serde_path_to_error already descended into the unknown key.
        parent.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}

/// A query string, percent-decoded into `T` (parameters `T` does not name are ignored).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(value)| Query(value))
            .map_err(|rejection| ApiError::InvalidRequest {
                message: format!("invalid query: {}", rejection.body_text()),
                field: None,
            })
    }
}

/// The `{id}` path segment of a session route, parsed as a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionId(pub(crate) Uuid);

impl<S> FromRequestParts<S> for SessionId
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_uuid(parts, state, "sessionId").await.map(SessionId)
    }
}

/// The `{id}` path segment of a storage context route, parsed as a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContextId(pub(crate) Uuid);

impl<S> FromRequestParts<S> for ContextId
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        path_uuid(parts, state, "contextId").await.map(ContextId)
    }
}

/// The `{*name}` tail of an image route: an image's name, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageName(pub(crate) String);

impl<S> FromRequestParts<S> for ImageName
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::invalid("name", format!("invalid path: {}", rejection.body_text()))
            })?;
        Ok(ImageName(params.get("name").cloned().unwrap_or_default()))
    }
}

/// The `{id}` path segment as a UUID; errors name `field`.
async fn path_uuid<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    field: &str,
) -> Result<Uuid, ApiError> {
    let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
        .await
        .map_err(|rejection| {
            ApiError::invalid(field, format!("invalid path: {}", rejection.body_text()))
        })?;
    let raw = params.get("id").map(String::as_str).unwrap_or_default();
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::invalid(field, format!("{field} must be a UUID, got {raw:?}")))
}

#[cfg(test)]
mod tests {
    use hutch_api::{CreateSessionRequest, UpdateSessionRequest};

    use super::*;

    fn field_of(err: ApiError) -> Option<String> {
        match err {
            ApiError::InvalidRequest { field, .. } => field,
            other => panic!("expected invalid_request, got {other:?}"),
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let err = parse_json::<CreateSessionRequest>(br#"{"ttl":"abc"}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("ttl"));
    }

    #[test]
    fn nested_wrong_type_names_the_path() {
        let err = parse_json::<CreateSessionRequest>(br#"{"resources":{"cpus":"x"}}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("resources.cpus"));
    }

    #[test]
    fn unknown_field_is_named() {
        let err = parse_json::<UpdateSessionRequest>(br#"{"ttl":60,"colour":1}"#).unwrap_err();
        match err {
            ApiError::InvalidRequest { message, field } => {
                assert_eq!(field.as_deref(), Some("colour"));
                assert!(message.contains("colour"), "{message}");
            }
            other => panic!("unexpected {other:?}"),
        }
        let err = parse_json::<CreateSessionRequest>(br#"{"resources":{"gpus":1}}"#).unwrap_err();
        assert_eq!(field_of(err).as_deref(), Some("resources.gpus"));
    }

    #[test]
    fn empty_body_is_an_empty_object() {
        let req: CreateSessionRequest = parse_json(b"").unwrap();
        assert_eq!(req, CreateSessionRequest::default());
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        // serde would read a struct from the array of its fields in order.
        for body in [
            &b"[60,null,null,null,null,null,null,null]"[..],
            b" []",
            b"60",
        ] {
            let err = parse_json::<CreateSessionRequest>(body).unwrap_err();
            assert_eq!(field_of(err).as_deref(), Some("body"), "{body:?}");
        }
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_json::<CreateSessionRequest>(b"{} x").is_err());
        assert!(parse_json::<CreateSessionRequest>(b"{").is_err());
    }
}
