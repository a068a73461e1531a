//! File contents in and out: download (Range, gzip), raw upload, and multipart upload of
//! several files. Bodies stream through [`super::transfer`]; uploads land atomically.

use std::os::fd::AsFd;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hutch_api::limits::FILES_MULTIPART_MAX_FILES;
use hutch_api::responses::{
    DiskFull, FileNotFound, Forbidden, PayloadTooLarge, RangeNotSatisfiable,
};
use hutch_api::{ErrorBody, ErrorCode, FileType, UploadResult, UploadResults};

use super::fsys::{self, fs_error};
use super::path::{self, SandboxPath, parse_mode};
use super::transfer::{self, BodyWriter, Upload, blocking, write_file};
use super::{FileQuery, files, query};
use crate::Agent;
use crate::error::{AgentError, error_response};

/// A parsed `Range: bytes=` header: `Some((start, len))`, or `Err` when unsatisfiable.
fn parse_range(value: &str, size: u64) -> Option<Result<(u64, u64), ()>> {
    let spec = value.trim().strip_prefix("bytes=")?;
    if spec.contains(',') {
        return None; // several ranges: answer with the whole file
    }
    let (a, b) = spec.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    let range = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 || size == 0 {
            return Some(Err(()));
        }
        let n = n.min(size);
        (size - n, n)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            size.saturating_sub(1)
        } else {
            let end: u64 = b.parse().ok()?;
            if end < start {
                return None;
            }
            end.min(size.saturating_sub(1))
        };
        if start >= size {
            return Some(Err(()));
        }
        (start, end - start + 1)
    };
    Some(Ok(range))
}

fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| {
            let mut parts = enc.split(';');
            let name = parts.next().unwrap_or("").trim();
            let refused = parts.any(|p| p.trim().replace(' ', "") == "q=0");
            name.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// Downloads a file, streamed.
///
/// A regular file only (409 for a directory: use the archive route). `Range: bytes=a-b`
/// (one range) answers 206 with `Content-Range`, or 416 outside the file.
/// `Accept-Encoding: gzip` compresses on the fly (`Content-Encoding: gzip`, no length) when no
/// range is asked for.
#[utoipa::path(
    get,
    path = "/files/content",
    operation_id = "downloadFile",
    tag = "files",
    params(
        ("path" = String, Query, description = "The file."),
        ("Range" = Option<String>, Header, description = "One byte range, `bytes=0-1023`, `bytes=1024-` or `bytes=-512`."),
        ("Accept-Encoding" = Option<String>, Header, description = "`gzip` to compress the whole file on the fly."),
    ),
    responses(
        (status = 200, description = "The whole file", content_type = "application/octet-stream", body = inline(hutch_api::files::Binary)),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = inline(hutch_api::files::Binary)),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 416, response = RangeNotSatisfiable),
    )
)]
pub(super) async fn download(
    State(agent): State<Arc<Agent>>,
    headers: HeaderMap,
    q: Result<FileQuery, AgentError>,
) -> Result<Response, AgentError> {
    let path = query(q)?.path()?;
    let files = files(&agent);
    let shown = path.to_string();
    let (file, size) = blocking(move || {
        let fd = files.root.resolve(
            &path,
            libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY,
        )?;
        let st = fsys::fstat(fd.as_fd()).map_err(|e| fs_error("stat", &path.to_string(), e))?;
        if fsys::kind(&st) == FileType::Other {
            return Err(fsys::forbidden(&path.to_string()));
        }
        if fsys::kind(&st) != FileType::File {
            return Err(AgentError::File {
                code: ErrorCode::Conflict,
                message: format!("{path} is not a regular file (use /files for directories, /files/archive for a tar of one)"),
                path: path.to_string(),
            });
        }
        Ok((std::fs::File::from(fd), st.st_size.max(0) as u64))
    })
    .await?;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_range(v, size));
    let (status, start, len) = match range {
        Some(Err(())) => {
            let mut response = error_response(
                ErrorCode::RangeNotSatisfiable,
                ErrorBody::new(
                    ErrorCode::RangeNotSatisfiable,
                    format!("{shown}: the requested range lies outside the file ({size} bytes)"),
                )
                .with_detail("path", shown.as_str())
                .with_detail("size", size),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(response);
        }
        Some(Ok((start, len))) => (StatusCode::PARTIAL_CONTENT, start, len),
        None => (StatusCode::OK, 0, size),
    };
    let gzip = status == StatusCode::OK && accepts_gzip(&headers);
    let (writer, body) = BodyWriter::new();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        if gzip {
            let mut encoder = flate2::write::GzEncoder::new(writer, flate2::Compression::fast());
            let result = transfer::copy_range(&file, 0, size, &mut encoder)
                .and_then(|()| encoder.try_finish())
                .and_then(|()| encoder.get_mut().flush());
            if let Err(e) = result {
                encoder.get_ref().fail(e);
            }
        } else if let Err(e) = send_range(&file, start, len, &writer) {
            writer.fail(e);
        }
    });
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if gzip {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    } else {
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    Ok(response)
}

/// Sends `len` bytes from `start` as chunks of their own (no copy into a buffer).
fn send_range(file: &std::fs::File, start: u64, len: u64, out: &BodyWriter) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let want = ((end - offset) as usize).min(transfer::CHUNK_BYTES);
        let mut buf = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                0 => break, // shrank meanwhile: the rest stays zero
                n => filled += n,
            }
        }
        out.send(bytes::Bytes::from(buf))?;
        offset += want as u64;
    }
    Ok(())
}

/// Uploads a file: the raw body, streamed.
///
/// Written to a temporary file in the same directory and renamed over `path` once complete:
/// a failed or interrupted upload leaves nothing. The file belongs to the sandbox's root user
/// with `mode` (default `0644`). Past the server's maximum upload size (`--max-upload-mb`),
/// 413; past the session's disk quota, 507.
#[utoipa::path(
    put,
    path = "/files/content",
    operation_id = "uploadFile",
    tag = "files",
    params(
        ("path" = String, Query, description = "Where to write."),
        ("mode" = Option<String>, Query, description = "Permission bits, octal (at most `1777`); default `0644`."),
        ("parents" = Option<bool>, Query, description = "Create missing parent directories; default true (false: 404 when the parent is missing)."),
        ("overwrite" = Option<bool>, Query, description = "Replace an existing file; default true (false: 409 if it exists)."),
    ),
    request_body(content = inline(hutch_api::files::Binary), content_type = "application/octet-stream"),
    responses(
        (status = 200, description = "Written", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    )
)]
pub(super) async fn upload(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
    req: Request,
) -> Result<Json<UploadResults>, AgentError> {
    let q = query(q)?;
    let path = q.path()?;
    let raw = q.path.as_deref().unwrap_or_default();
    if raw.ends_with('/')
        || raw.ends_with("/.")
        || raw.ends_with("/..")
        || raw == "."
        || raw == ".."
    {
        return Err(AgentError::invalid(
            "path",
            format!("path {raw:?} names a directory: name the file to write"),
        ));
    }
    let mode = parse_mode("mode", q.mode.as_deref(), 0o644)?;
    let files = files(&agent);
    let shown = path.to_string();
    if let Some(len) = content_length(req.headers())
        && len > files.max_upload_bytes
    {
        crate::api::drain(req.into_body()).await;
        return Err(transfer::too_large(&shown, files.max_upload_bytes));
    }
    let mut body = req.into_body().into_data_stream();
    let upload = Upload {
        path,
        mode,
        parents: q.parents.unwrap_or(true),
        overwrite: q.overwrite.unwrap_or(true),
    };
    let size = write_file(&files, upload, &mut body, files.max_upload_bytes).await?;
    Ok(Json(UploadResults {
        files: vec![UploadResult {
            path: shown,
            size,
            error: None,
        }],
        entries: None,
    }))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Uploads several files in one `multipart/form-data` request.
///
/// Each file part is written to its `filename`, or to the value of a `path` field sent just
/// before it, relative to the `path` query (default `/workspace`); parents are created unless
/// `parents=false`. Each file is written (atomically) or fails on its own. When all are
/// written the answer lists them; when one fails the answer has that failure's status, its
/// error names the file in `details.path`, and `details.files` lists every file's result.
#[utoipa::path(
    post,
    path = "/files",
    operation_id = "uploadFiles",
    tag = "files",
    params(
        ("path" = Option<String>, Query, description = "Directory relative names go in; default `/workspace`."),
        ("mode" = Option<String>, Query, description = "Permission bits of every file, octal; default `0644`."),
        ("parents" = Option<bool>, Query, description = "Create missing parent directories; default true."),
        ("overwrite" = Option<bool>, Query, description = "Replace existing files; default true."),
    ),
    request_body(content = inline(Object), content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Every file written", body = hutch_api::UploadResults),
        (status = 403, response = Forbidden),
        (status = 404, response = FileNotFound),
        (status = 413, response = PayloadTooLarge),
        (status = 507, response = DiskFull),
    )
)]
pub(super) async fn upload_multipart(
    State(agent): State<Arc<Agent>>,
    q: Result<FileQuery, AgentError>,
    req: Request,
) -> Result<Response, AgentError> {
    use axum::extract::FromRequest;
    let q = query(q)?;
    let base = match &q.path {
        Some(p) => SandboxPath::parse("path", p)?.to_string(),
        None => path::BASE_DIR.to_owned(),
    };
    let mode = parse_mode("mode", q.mode.as_deref(), 0o644)?;
    let files = files(&agent);
    if let Some(len) = content_length(req.headers())
        && len > files.max_upload_bytes
    {
        crate::api::drain(req.into_body()).await;
        return Err(transfer::too_large(
            "(multipart request)",
            files.max_upload_bytes,
        ));
    }
    let mut multipart = axum::extract::Multipart::from_request(req, &())
        .await
        .map_err(|e| {
            AgentError::invalid(
                "body",
                format!("not a multipart/form-data body: {}", e.body_text()),
            )
        })?;
    let mut results: Vec<UploadResult> = Vec::new();
    let mut first_failure: Option<(ErrorCode, String, String)> = None;
    let mut next_path: Option<String> = None;
    let mut total = 0u64;
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            AgentError::invalid(
                "body",
                format!("reading the multipart body: {}", e.body_text()),
            )
        })?;
        let Some(mut field) = field else { break };
        if field.file_name().is_none() {
            if field.name() == Some("path") {
                let mut value = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|e| AgentError::invalid("path", e.body_text()))?
                {
                    value.extend_from_slice(&chunk);
                    if value.len() > hutch_api::limits::PATH_MAX_BYTES {
                        return Err(AgentError::invalid("path", "a path field is too long"));
                    }
                }
                next_path = Some(
                    String::from_utf8(value)
                        .map_err(|_| AgentError::invalid("path", "a path field is not UTF-8"))?,
                );
            }
            continue;
        }
        let name = next_path
            .take()
            .or_else(|| field.file_name().map(str::to_owned))
            .unwrap_or_default();
        if results.len() >= FILES_MULTIPART_MAX_FILES {
            return Err(AgentError::invalid(
                "body",
                format!("at most {FILES_MULTIPART_MAX_FILES} files per multipart upload"),
            ));
        }
        let target = if name.starts_with('/') {
            name.clone()
        } else {
            format!("{base}/{name}")
        };
        let result = match SandboxPath::parse("filename", &target) {
            Ok(dest) if !name.is_empty() => {
                let upload = Upload {
                    path: dest,
                    mode,
                    parents: q.parents.unwrap_or(true),
                    overwrite: q.overwrite.unwrap_or(true),
                };
                // The request's files together stay within the maximum upload, whether or not
                // the request said its length up front.
                let left = files.max_upload_bytes.saturating_sub(total);
                write_file(&files, upload, &mut field, left).await
            }
            Ok(_) => Err(AgentError::invalid(
                "filename",
                "a file part has no filename and no path field before it",
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(size) => {
                total += size;
                results.push(UploadResult {
                    path: SandboxPath::parse("filename", &target)
                        .map(|p| p.to_string())
                        .unwrap_or(target),
                    size,
                    error: None,
                });
            }
            Err(e) => {
                let code = e.code();
                let message = e.to_string();
                let shown = SandboxPath::parse("filename", &target)
                    .map(|p| p.to_string())
                    .unwrap_or(target);
                if first_failure.is_none() {
                    first_failure = Some((code, shown.clone(), message.clone()));
                }
                results.push(UploadResult {
                    path: shown,
                    size: 0,
                    error: Some(ErrorBody::new(code, message).error),
                });
            }
        }
    }
    if let Some((code, path, message)) = first_failure {
        let failed = results.iter().filter(|r| r.error.is_some()).count();
        let body = ErrorBody::new(
            code,
            format!(
                "{failed} of {} files failed; first {path}: {message}",
                results.len()
            ),
        )
        .with_detail("path", path)
        .with_detail("files", serde_json::to_value(&results).unwrap_or_default());
        return Ok(error_response(code, body));
    }
    Ok(Json(UploadResults {
        files: results,
        entries: None,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some(Ok((0, 10))));
        assert_eq!(parse_range("bytes=90-", 100), Some(Ok((90, 10))));
        assert_eq!(parse_range("bytes=-5", 100), Some(Ok((95, 5))));
        assert_eq!(parse_range("bytes=95-200", 100), Some(Ok((95, 5))));
        assert_eq!(parse_range("bytes=100-", 100), Some(Err(())));
        assert_eq!(parse_range("bytes=0-1,4-5", 100), None);
        assert_eq!(parse_range("lines=1-2", 100), None);
    }

    #[test]
    fn gzip_negotiation() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.8"),
        );
        assert!(accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&h));
    }
}
