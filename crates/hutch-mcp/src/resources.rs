//! A session's files as MCP resources: `hutch://sessions/{sessionId}/files/{path}`.
//!
//! The list names each of the caller's sessions' `/workspace` (a page of sessions at a time,
//! the cursor being the API's offset); the template reaches any path. Reading a directory
//! answers its listing as JSON, each entry with its own URI; reading a file answers its text,
//! or base64 when it is not UTF-8, cut like `read_file`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::Method;
use hutch_api::limits::LIST_LIMIT_MAX;
use hutch_api::{FileList, FileType, SessionList};
use hutch_client::percent_encode;
use rmcp::ErrorData;
use rmcp::model::{
    ListResourceTemplatesResult, ListResourcesResult, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate,
};

use crate::api::{Api, CallError};
use crate::tools::{DEFAULT_DIRECTORY, FILE_READ_MAX_BYTES, read_file_head};

/// What every resource URI starts with.
const SCHEME: &str = "hutch://sessions/";

/// The template of every file's URI.
const TEMPLATE: &str = "hutch://sessions/{sessionId}/files/{+path}";

/// The URI of `path` (absolute) in session `session_id`: each path segment percent-encoded.
pub(crate) fn file_uri(session_id: &str, path: &str) -> String {
    let segments: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(percent_encode)
        .collect();
    format!("{SCHEME}{session_id}/files/{}", segments.join("/"))
}

/// The session id and absolute path a URI names.
pub(crate) fn parse_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix(SCHEME)?;
    let (session_id, rest) = rest.split_once('/')?;
    let path = rest.strip_prefix("files")?;
    if !(path.is_empty() || path.starts_with('/')) || session_id.is_empty() {
        return None;
    }
    let decoded = percent_decode(path)?;
    Some((
        session_id.to_owned(),
        if decoded.is_empty() {
            "/".into()
        } else {
            decoded
        },
    ))
}

/// Decodes `%XX` escapes; `None` when one is malformed or the result is not UTF-8.
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = value.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The templates: one, for any file or directory of any session.
pub(crate) fn templates() -> ListResourceTemplatesResult {
    ListResourceTemplatesResult::with_all_items(vec![
        ResourceTemplate::new(TEMPLATE, "session-file")
            .with_title("A file or directory in a sandbox session")
            .with_description(
                "A file's content (text, or base64 when binary; at most 8 MiB), or a \
                 directory's listing as JSON with each entry's URI.",
            ),
    ])
}

/// One page of resources: the `/workspace` of each of the caller's sessions.
pub(crate) async fn list(
    api: &Api,
    cursor: Option<&str>,
) -> Result<ListResourcesResult, ErrorData> {
    let offset: u64 = match cursor {
        None => 0,
        Some(cursor) => cursor.parse().map_err(|_| {
            ErrorData::invalid_params("the cursor is not one this server gave", None)
        })?,
    };
    let page: SessionList = api
        .json(
            Method::GET,
            &format!("/v1/sessions?limit={LIST_LIMIT_MAX}&offset={offset}"),
            None::<&()>,
        )
        .await
        .map_err(|e| internal(&e))?;
    let resources = page
        .sessions
        .iter()
        .map(|session| {
            let id = session.session_id.to_string();
            Resource::new(
                file_uri(&id, DEFAULT_DIRECTORY),
                format!("{id}{DEFAULT_DIRECTORY}"),
            )
            .with_description(format!(
                "The work directory of session {id} ({}), as a JSON listing",
                session.image
            ))
            .with_mime_type("application/json")
        })
        .collect();
    let mut result = ListResourcesResult::with_all_items(resources);
    let next = offset + page.sessions.len() as u64;
    if !page.sessions.is_empty() && next < page.total {
        result.next_cursor = Some(next.to_string());
    }
    Ok(result)
}

/// Reads the file or directory `uri` names.
pub(crate) async fn read(api: &Api, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let (session_id, path) = parse_uri(uri).ok_or_else(|| {
        ErrorData::invalid_params(
            format!("{uri:?} is not a hutch file URI ({TEMPLATE})"),
            None,
        )
    })?;
    let session = format!("/v1/sessions/{}", percent_encode(&session_id));
    let info: hutch_api::FileInfo = api
        .json(
            Method::GET,
            &format!("{session}/files/stat?path={}", percent_encode(&path)),
            None::<&()>,
        )
        .await
        .map_err(|e| not_found_or_internal(uri, &e))?;
    if info.file_type == FileType::Directory {
        let mut listing: FileList = api
            .json(
                Method::GET,
                &format!("{session}/files?path={}", percent_encode(&path)),
                None::<&()>,
            )
            .await
            .map_err(|e| not_found_or_internal(uri, &e))?;
        let entries: Vec<serde_json::Value> = listing
            .entries
            .drain(..)
            .map(|entry| {
                let uri = file_uri(&session_id, &entry.path);
                let mut value = serde_json::to_value(&entry).unwrap_or_default();
                if let Some(object) = value.as_object_mut() {
                    object.insert("uri".into(), uri.into());
                }
                value
            })
            .collect();
        let text = serde_json::json!({
            "path": listing.path,
            "entries": entries,
            "truncated": listing.truncated,
        })
        .to_string();
        return Ok(ReadResourceResult::new(vec![
            ResourceContents::text(text, uri).with_mime_type("application/json"),
        ]));
    }
    let (bytes, truncated) = read_file_head(api, &session_id, &path)
        .await
        .map_err(|e| not_found_or_internal(uri, &e))?;
    let mut contents = vec![match String::from_utf8(bytes.to_vec()) {
        Ok(text) => ResourceContents::text(text, uri),
        Err(_) => ResourceContents::blob(BASE64.encode(&bytes), uri)
            .with_mime_type("application/octet-stream"),
    }];
    if truncated {
        contents.push(ResourceContents::text(
            format!("[cut: only the first {FILE_READ_MAX_BYTES} bytes of {path} are shown]"),
            uri,
        ));
    }
    Ok(ReadResourceResult::new(contents))
}

/// A call's failure as a protocol error: the API's 404s as resource-not-found.
fn not_found_or_internal(uri: &str, error: &CallError) -> ErrorData {
    match error {
        CallError::Api { status, .. } if status.as_u16() == 404 => {
            ErrorData::resource_not_found(format!("{uri}: {error}"), None)
        }
        _ => internal(error),
    }
}

/// Any other failure as a protocol error carrying its text: the API's other 4xx as invalid
/// parameters, the rest as internal.
fn internal(error: &CallError) -> ErrorData {
    match error {
        CallError::Api { status, .. } if status.is_client_error() => {
            ErrorData::invalid_params(error.to_string(), None)
        }
        _ => ErrorData::internal_error(error.to_string(), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_session_and_a_path_and_round_trip() {
        let uri = file_uri("0193", "/workspace/my notes/a%b.txt");
        assert_eq!(
            uri,
            "hutch://sessions/0193/files/workspace/my%20notes/a%25b.txt"
        );
        assert_eq!(
            parse_uri(&uri),
            Some(("0193".into(), "/workspace/my notes/a%b.txt".into()))
        );
        assert_eq!(
            parse_uri("hutch://sessions/0193/files"),
            Some(("0193".into(), "/".into()))
        );
        for bad in [
            "file:///etc/passwd",
            "hutch://sessions//files/x",
            "hutch://sessions/0193/filesx",
            "hutch://sessions/0193/files/%zz",
        ] {
            assert_eq!(parse_uri(bad), None, "{bad}");
        }
    }
}
