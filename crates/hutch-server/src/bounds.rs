//! Bounds on the request head: the request target and the header fields.
//!
//! hyper already refuses, with a bare 431 and no body, a head of more than 100 header fields
//! or about 400 KiB. Below that, [`bound_request_head`] answers in the error envelope:
//!
//! - a request target (path and query, plus the authority of an absolute-form target) over
//!   [`REQUEST_URI_MAX_BYTES`] answers 414 `uri_too_long`;
//! - header fields whose names and values add up to more than [`REQUEST_HEADERS_MAX_BYTES`]
//!   answer 431 `headers_too_large`.
//!
//! Both are checked before authentication and before any body is read, on every route.

use axum::extract::Request;
use axum::http::{HeaderMap, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hutch_api::limits::{REQUEST_HEADERS_MAX_BYTES, REQUEST_URI_MAX_BYTES};

use crate::error::ApiError;

/// Middleware: refuses a request whose target or header fields are over their bounds.
pub(crate) async fn bound_request_head(req: Request, next: Next) -> Response {
    if let Err(err) = check(req.uri(), req.headers()) {
        return err.into_response();
    }
    next.run(req).await
}

/// Checks the target, then the header fields.
fn check(uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
    if target_bytes(uri) > REQUEST_URI_MAX_BYTES {
        return Err(ApiError::UriTooLong {
            limit: REQUEST_URI_MAX_BYTES,
        });
    }
    if header_bytes(headers) > REQUEST_HEADERS_MAX_BYTES {
        return Err(ApiError::HeadersTooLarge {
            limit: REQUEST_HEADERS_MAX_BYTES,
        });
    }
    Ok(())
}

/// Length of the request target as sent: path and query, plus the authority if any.
fn target_bytes(uri: &Uri) -> usize {
    let path_and_query = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    path_and_query.saturating_add(authority)
}

/// The summed length of every header name and value (repeated names count each time).
fn header_bytes(headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len().saturating_add(value.len()))
        .fold(0, usize::saturating_add)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use hutch_api::ErrorCode;

    use super::*;

    #[test]
    fn header_bytes_sum_names_and_values() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("12345"));
        headers.append("x-a", HeaderValue::from_static("67"));
        assert_eq!(header_bytes(&headers), 3 + 5 + 3 + 2);
    }

    #[test]
    fn heads_at_the_limit_pass_and_over_it_fail() {
        let uri: Uri = "/health".parse().unwrap();
        let mut headers = HeaderMap::new();
        let value = "v".repeat(REQUEST_HEADERS_MAX_BYTES - "x-big".len());
        headers.insert("x-big", HeaderValue::from_str(&value).unwrap());
        assert!(check(&uri, &headers).is_ok());
        headers.insert("x", HeaderValue::from_static(""));
        let err = check(&uri, &headers).unwrap_err();
        assert_eq!(err.code(), ErrorCode::HeadersTooLarge);
    }

    #[test]
    fn long_targets_fail() {
        let ok: Uri = format!("/v1/sessions?{}", "a".repeat(REQUEST_URI_MAX_BYTES - 13))
            .parse()
            .unwrap();
        assert_eq!(target_bytes(&ok), REQUEST_URI_MAX_BYTES);
        assert!(check(&ok, &HeaderMap::new()).is_ok());
        let long: Uri = format!("/v1/sessions?{}", "a".repeat(REQUEST_URI_MAX_BYTES))
            .parse()
            .unwrap();
        let err = check(&long, &HeaderMap::new()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::UriTooLong);
        let absolute: Uri = format!("http://{}.example/", "h".repeat(REQUEST_URI_MAX_BYTES))
            .parse()
            .unwrap();
        assert!(check(&absolute, &HeaderMap::new()).is_err());
    }
}
