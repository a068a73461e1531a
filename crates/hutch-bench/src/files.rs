//! The file API's throughput: one file uploaded (`PUT /files/content`) and downloaded
//! (`GET /files/content`) through the server, beside `cp` of the same file on the same disk
//! in the same run.
//!
//! The source file holds pseudo-random bytes (nothing compresses them); the upload streams it
//! from disk, the download is read to the end and discarded. The target is ≥ 500 MB/s both
//! ways on loopback for a 1 GiB file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hutch_client::HutchClient;

use crate::BenchError;

/// Figures of one run: the best and median of each direction, and of `cp`.
#[derive(Debug, Clone)]
pub struct FilesReport {
    /// Bytes per transfer.
    pub size: u64,
    /// Upload durations.
    pub upload: Vec<Duration>,
    /// Download durations.
    pub download: Vec<Duration>,
    /// `cp` durations.
    pub cp: Vec<Duration>,
}

/// Median of some durations.
pub fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// MB/s (10^6 bytes per second) of `bytes` moved in `d`.
pub fn mb_per_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn err(step: &'static str) -> impl FnOnce(String) -> BenchError {
    move |message| BenchError::Server(format!("{step}: {message}"))
}

/// Writes `size` pseudo-random bytes to `path`.
fn write_source(path: &Path, size: u64) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in chunk.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes());
        }
        let n = (left as usize).min(chunk.len());
        file.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    file.flush()
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// Streams `path` as a request body, 256 KiB at a time.
fn file_body(path: PathBuf) -> Body {
    use tokio::io::AsyncReadExt;
    let stream = futures_util::stream::unfold(None, move |file: Option<tokio::fs::File>| {
        let path = path.clone();
        async move {
            let mut file = match file {
                Some(f) => f,
                None => match tokio::fs::File::open(&path).await {
                    Ok(f) => f,
                    Err(e) => return Some((Err(e), None)),
                },
            };
            let mut buf = vec![0u8; 256 * 1024];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(hyper::body::Frame::data(Bytes::from(buf))), Some(file)))
                }
                Err(e) => Some((Err(e), None)),
            }
        }
    });
    BodyExt::boxed(http_body_util::StreamBody::new(stream))
}

/// Runs `iterations` uploads and downloads of a `size`-byte file through a new session of
/// `client`'s server, and as many `cp` runs, with scratch files in `scratch`.
pub async fn run(
    client: &HutchClient,
    token: &str,
    size: u64,
    iterations: usize,
    scratch: &Path,
) -> Result<FilesReport, BenchError> {
    let source = scratch.join("hutch-bench-files.src");
    let copy = scratch.join("hutch-bench-files.cp");
    {
        let source = source.clone();
        tokio::task::spawn_blocking(move || write_source(&source, size))
            .await
            .map_err(|e| err("writing the source file")(e.to_string()))?
            .map_err(|e| err("writing the source file")(e.to_string()))?;
    }
    let session = client
        .create_session(&hutch_api::CreateSessionRequest::default())
        .await
        .map_err(|source| BenchError::Api {
            step: "create session",
            source,
        })?;
    let http: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let url = format!(
        "{}/v1/sessions/{}/files/content?path=/workspace/bench.bin",
        client.base_url(),
        session.session_id
    );
    let auth = format!("Bearer {token}");
    let mut report = FilesReport {
        size,
        upload: Vec::new(),
        download: Vec::new(),
        cp: Vec::new(),
    };
    let result = async {
        for _ in 0..iterations {
            let req = http::Request::put(&url)
                .header(http::header::AUTHORIZATION, &auth)
                .header(http::header::CONTENT_LENGTH, size)
                .body(file_body(source.clone()))
                .map_err(|e| err("upload")(e.to_string()))?;
            let started = Instant::now();
            let response = http
                .request(req)
                .await
                .map_err(|e| err("upload")(e.to_string()))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| err("upload")(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(err("upload")(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&body)
                )));
            }
            report.upload.push(started.elapsed());

            let req = http::Request::get(&url)
                .header(http::header::AUTHORIZATION, &auth)
                .body(BodyExt::boxed(
                    http_body_util::Empty::new().map_err(|never| match never {}),
                ))
                .map_err(|e| err("download")(e.to_string()))?;
            let started = Instant::now();
            let response = http
                .request(req)
                .await
                .map_err(|e| err("download")(e.to_string()))?;
            if !response.status().is_success() {
                return Err(err("download")(response.status().to_string()));
            }
            let mut body = response.into_body();
            let mut got = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| err("download")(e.to_string()))?;
                if let Some(data) = frame.data_ref() {
                    got += data.len() as u64;
                }
            }
            if got != size {
                return Err(err("download")(format!("got {got} of {size} bytes")));
            }
            report.download.push(started.elapsed());

            let (from, to) = (source.clone(), copy.clone());
            let took = tokio::task::spawn_blocking(move || {
                let started = Instant::now();
                let ok = std::process::Command::new("cp")
                    .arg(&from)
                    .arg(&to)
                    .status()
                    .is_ok_and(|s| s.success());
                let took = started.elapsed();
                let _ = std::fs::remove_file(&to);
                ok.then_some(took)
            })
            .await
            .map_err(|e| err("cp")(e.to_string()))?
            .ok_or_else(|| err("cp")("cp failed".into()))?;
            report.cp.push(took);
        }
        Ok(())
    }
    .await;
    let _ = client.delete_session(session.session_id).await;
    let _ = std::fs::remove_file(&source);
    let _ = std::fs::remove_file(&copy);
    result.map(|()| report)
}
