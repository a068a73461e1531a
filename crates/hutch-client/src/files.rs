//! Files, streamed: upload a file or a tar archive from a stream of chunks, download a file
//! or a directory's tar archive chunk by chunk, and describe one path.
//!
//! Neither direction holds a whole file in memory: uploads are sent as they are read, and a
//! [`Download`] hands over each chunk as it arrives.

use bytes::Bytes;
use futures_util::stream::BoxStream;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Method};
use http_body_util::BodyExt;
use hutch_api::{FileInfo, UploadResults};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use uuid::Uuid;

use crate::processes::percent_encode;
use crate::{ClientError, HutchClient, error_from};

/// A request body read as it is sent.
pub type BodyStream = BoxStream<'static, Result<Bytes, std::io::Error>>;

/// A download under way: its length when the server said it, then its chunks.
#[derive(Debug)]
pub struct Download {
    /// Bytes to come, when known (an archive's is not).
    pub length: Option<u64>,
    body: hyper::body::Incoming,
    path: String,
}

impl Download {
    /// The next chunk; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<Bytes, ClientError>> {
        loop {
            let frame = match self.body.frame().await? {
                Ok(frame) => frame,
                Err(e) => return Some(Err(transport(Method::GET, &self.path, e))),
            };
            if let Ok(data) = frame.into_data() {
                return Some(Ok(data));
            }
        }
    }
}

impl HutchClient {
    /// `GET /v1/sessions/{id}/files/stat?path`.
    pub async fn stat_file(&self, id: Uuid, path: &str) -> Result<FileInfo, ClientError> {
        let path = format!("/v1/sessions/{id}/files/stat?path={}", percent_encode(path));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `PUT /v1/sessions/{id}/files/content?path`: writes `body` (`length` bytes) to `path`,
    /// creating missing parents.
    pub async fn upload_file(
        &self,
        id: Uuid,
        path: &str,
        body: BodyStream,
        length: u64,
    ) -> Result<UploadResults, ClientError> {
        let path = format!(
            "/v1/sessions/{id}/files/content?path={}",
            percent_encode(path)
        );
        self.send_stream(Method::PUT, &path, body, Some(length))
            .await
    }

    /// `PUT /v1/sessions/{id}/files/archive?path`: extracts the tar archive `body` into the
    /// directory `path`, creating it when missing.
    pub async fn upload_archive(
        &self,
        id: Uuid,
        path: &str,
        body: BodyStream,
    ) -> Result<UploadResults, ClientError> {
        let path = format!(
            "/v1/sessions/{id}/files/archive?path={}",
            percent_encode(path)
        );
        self.send_stream(Method::PUT, &path, body, None).await
    }

    /// `GET /v1/sessions/{id}/files/content?path`: the file's bytes, streamed.
    pub async fn download_file(&self, id: Uuid, path: &str) -> Result<Download, ClientError> {
        self.download(format!(
            "/v1/sessions/{id}/files/content?path={}",
            percent_encode(path)
        ))
        .await
    }

    /// `GET /v1/sessions/{id}/files/archive?path`: the directory as a tar archive, streamed.
    pub async fn download_archive(&self, id: Uuid, path: &str) -> Result<Download, ClientError> {
        self.download(format!(
            "/v1/sessions/{id}/files/archive?path={}",
            percent_encode(path)
        ))
        .await
    }

    async fn download(&self, path: String) -> Result<Download, ClientError> {
        let response = self.open(Method::GET, &path, None, true).await?;
        let status = response.status();
        let length = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = response.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| transport(Method::GET, &path, e))?
                .to_bytes();
            return Err(error_from(status, &bytes));
        }
        Ok(Download { length, body, path })
    }

    /// Sends `body` as a request to `path` on a connection of its own (a streamed body cannot
    /// be retried on a pooled one) and decodes the JSON answer or the error envelope.
    pub(crate) async fn send_stream<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: BodyStream,
        length: Option<u64>,
    ) -> Result<T, ClientError> {
        use futures_util::StreamExt;
        let body = http_body_util::StreamBody::new(body.map(|c| c.map(hyper::body::Frame::data)));
        let mut head = self.request_head(method.clone(), path, true)?.header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        if let Some(length) = length {
            head = head.header(CONTENT_LENGTH, length);
        }
        let req = head
            .body(body)
            .map_err(|e| transport(method.clone(), path, e))?;
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.set_nodelay(true);
        let http = Client::builder(TokioExecutor::new()).build(connector);
        let response = http.request(req).await.map_err(|e| {
            if e.is_connect() {
                self.connect_error(&e)
            } else {
                transport(method.clone(), path, e)
            }
        })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| transport(method.clone(), path, e))?
            .to_bytes();
        if !status.is_success() {
            return Err(error_from(status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|source| ClientError::Decode {
            method,
            path: path.to_owned(),
            source,
        })
    }
}

/// Bytes of a file read and sent at a time.
const UPLOAD_CHUNK: usize = 256 * 1024;

/// The chunks of a file, read as they are sent.
pub fn file_chunks(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buffer = vec![0u8; UPLOAD_CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(Bytes::from(buffer)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// A transport error of a `method` request to `path`.
fn transport(
    method: Method,
    path: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> ClientError {
    ClientError::Transport {
        method,
        path: path.to_owned(),
        source: Box::new(error),
    }
}
