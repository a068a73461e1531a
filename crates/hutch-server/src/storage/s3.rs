//! Storage-context blobs on S3-compatible object storage: [`S3Blobs`], chosen with
//! `hutch serve --blob-store s3://bucket/prefix`.
//!
//! A blob is the object `{prefix}/{context}/{blob}.tar`. It is written as a multipart upload
//! in parts of [`PART_BYTES`], at most [`PARTS_IN_FLIGHT`] of them sent at once, so an upload
//! of any size holds a bounded amount of memory. S3 makes the object visible only when
//! `CompleteMultipartUpload` succeeds ([`BlobWriter::commit`]), and the store's row names it
//! only after that: a server killed mid-upload leaves an incomplete multipart upload that no
//! reader can see (a bucket lifecycle rule `AbortIncompleteMultipartUpload` reclaims its
//! parts), and the previous version untouched. A writer dropped without commit aborts its
//! upload.
//!
//! The [`BlobStore`] trait is synchronous, because the archive check and rewrite that feeds it
//! is (the `tar` crate reads and writes `std::io`), and runs on blocking threads. Each call
//! here runs the async `object_store` future to completion with [`Handle::block_on`] on the
//! server's runtime: legal on a blocking thread, and every wait is bounded by
//! [`IO_TIMEOUT`], so a stalled object store fails the transfer instead of holding a thread.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::runtime::Handle;
use uuid::Uuid;

use super::blobs::{BLOB_SUFFIX, BlobStore, BlobWriter, SWEEP_GRACE, valid_blob_name};

/// Size of one part of a multipart upload (S3 takes 5 MiB to 5 GiB, and 10 000 parts: blobs
/// of up to 80 GB).
const PART_BYTES: usize = 8 << 20;
/// Most parts of one upload sent at once; with the part being filled, an upload holds at most
/// `(PARTS_IN_FLIGHT + 1) * PART_BYTES` of its content in memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Longest one request (or one part, or one chunk of a download) may wait on the object store.
const IO_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest the reachability check waits.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest connecting to the object store may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where blobs go on S3-compatible storage: `s3://bucket/prefix`, and how to reach it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Key prefix of every blob, without slashes at either end (may be empty).
    pub prefix: String,
    /// Endpoint URL of an S3-compatible service (`None`: AWS, or `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// Region (`None`: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Why a blob store location is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BlobStoreUrlError(String);

impl S3Config {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(url: &str) -> Result<S3Config, BlobStoreUrlError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            BlobStoreUrlError(format!(
                "{url:?} is not a blob store: expected s3://bucket/prefix"
            ))
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        // S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens.
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !bucket_ok {
            return Err(BlobStoreUrlError(format!(
                "{bucket:?} is not a bucket name (3 to 63 lowercase letters, digits, '.' and '-')"
            )));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.len() > 512 || Path::parse(prefix).is_err() {
            return Err(BlobStoreUrlError(format!(
                "{prefix:?} is not a key prefix (at most 512 bytes, no empty, '.' or '..' parts)"
            )));
        }
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
            endpoint: None,
            region: None,
        })
    }
}

/// Blobs as objects `{prefix}/{context}/{blob}.tar` in an S3 bucket.
pub(crate) struct S3Blobs {
    store: Arc<AmazonS3>,
    prefix: Path,
    runtime: Handle,
}

impl fmt::Debug for S3Blobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "S3Blobs({} {})", self.store, self.prefix)
    }
}

/// An object store error as an I/O error (`NotFound` kept).
fn io_error(err: object_store::Error) -> io::Error {
    match err {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, err),
        other => io::Error::other(other),
    }
}

/// Runs `future` on `runtime` from a blocking thread, for at most `limit`.
fn run<T>(
    runtime: &Handle,
    limit: Duration,
    future: impl Future<Output = object_store::Result<T>>,
) -> io::Result<T> {
    runtime
        .block_on(async { tokio::time::timeout(limit, future).await })
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the object store did not answer in {} s", limit.as_secs()),
            )
        })?
        .map_err(io_error)
}

impl S3Blobs {
    /// Blobs at `config`, reached through `runtime` (credentials from the `AWS_*` variables).
    /// Nothing is sent yet: [`BlobStore::check`] tells whether the bucket answers.
    pub(crate) fn open(config: &S3Config, runtime: Handle) -> io::Result<S3Blobs> {
        // The TLS provider of the HTTP client: the one the rest of hutch builds.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&config.bucket)
            // A download may stream for as long as the session takes it: bounded per chunk
            // (IO_TIMEOUT) instead of per request.
            .with_client_options(
                ClientOptions::new()
                    .with_timeout_disabled()
                    .with_connect_timeout(CONNECT_TIMEOUT),
            );
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint);
        }
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        let store = builder.build().map_err(io::Error::other)?;
        Ok(S3Blobs {
            store: Arc::new(store),
            prefix: Path::from(config.prefix.as_str()),
            runtime,
        })
    }

    fn dir(&self, context: Uuid) -> Path {
        self.prefix.clone().join(context.to_string())
    }

    fn key(&self, context: Uuid, blob: &str) -> Path {
        self.dir(context).join(format!("{blob}{BLOB_SUFFIX}"))
    }

    /// Every object under `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<object_store::ObjectMeta>> {
        let listing: BoxStream<'static, _> = self.store.list(Some(dir));
        run(&self.runtime, IO_TIMEOUT, listing.try_collect())
    }

    fn delete(&self, key: &Path) -> io::Result<()> {
        match run(&self.runtime, IO_TIMEOUT, self.store.delete(key)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// A blob being written as a multipart upload.
struct S3Writer {
    upload: Option<WriteMultipart>,
    runtime: Handle,
    name: String,
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let upload = self
            .upload
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        // Back pressure: at most PARTS_IN_FLIGHT parts are sent at once; a failed part fails
        // this write.
        run(
            &self.runtime,
            IO_TIMEOUT,
            upload.wait_for_capacity(PARTS_IN_FLIGHT),
        )?;
        // A full part is sent by a task on the runtime.
        let _entered = self.runtime.enter();
        upload.write(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl BlobWriter for S3Writer {
    fn commit(mut self: Box<Self>) -> io::Result<String> {
        let upload = self
            .upload
            .take()
            .ok_or_else(|| io::Error::other("blob already committed"))?;
        // Sends the last part and completes the upload: only now does the object exist (a
        // failure aborts the upload).
        run(&self.runtime, IO_TIMEOUT, upload.finish())?;
        Ok(self.name.clone())
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        if let Some(upload) = self.upload.take() {
            // Dropped uncommitted: the parts sent are discarded; nothing was ever visible.
            self.runtime.spawn(async move {
                if let Err(err) = upload.abort().await {
                    tracing::warn!(error = %err, "aborting an abandoned blob upload");
                }
            });
        }
    }
}

/// A blob read as one streamed GET.
struct S3Reader {
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    chunk: Bytes,
    runtime: Handle,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.chunk.is_empty() {
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout(IO_TIMEOUT, self.stream.next()).await });
            match next {
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the object store stopped sending the blob",
                    ));
                }
                Ok(None) => return Ok(0),
                Ok(Some(chunk)) => self.chunk = chunk.map_err(io_error)?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// A blob's context and name if `key` (under the prefix) is one: `{context}/{blob}.tar`.
fn parse_key<'a>(
    mut parts: impl Iterator<Item = object_store::path::PathPart<'a>>,
) -> Option<(Uuid, String)> {
    let context = Uuid::parse_str(parts.next()?.as_ref()).ok()?;
    let file = parts.next()?;
    let blob = file.as_ref().strip_suffix(BLOB_SUFFIX)?;
    (parts.next().is_none() && valid_blob_name(blob)).then(|| (context, blob.to_owned()))
}

impl BlobStore for S3Blobs {
    fn create(&self, context: Uuid) -> io::Result<Box<dyn BlobWriter>> {
        let name = Uuid::now_v7().to_string();
        let key = self.key(context, &name);
        let upload = run(&self.runtime, IO_TIMEOUT, self.store.put_multipart(&key))?;
        Ok(Box::new(S3Writer {
            upload: Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)),
            runtime: self.runtime.clone(),
            name,
        }))
    }

    fn open(&self, context: Uuid, blob: &str) -> io::Result<Box<dyn Read + Send>> {
        if !valid_blob_name(blob) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{blob:?} is not a blob name"),
            ));
        }
        let found = run(
            &self.runtime,
            IO_TIMEOUT,
            self.store.get(&self.key(context, blob)),
        )?;
        Ok(Box::new(S3Reader {
            stream: found.into_stream(),
            chunk: Bytes::new(),
            runtime: self.runtime.clone(),
        }))
    }

    fn retain(&self, context: Uuid, keep: Option<&str>) -> io::Result<()> {
        let keep = keep.map(|k| self.key(context, k));
        // Uploads in progress are not objects yet: they are not listed, and so kept.
        for object in self.list(&self.dir(context))? {
            if Some(&object.location) != keep.as_ref() {
                self.delete(&object.location)?;
            }
        }
        Ok(())
    }

    fn sweep(&self, live: &[(Uuid, Option<String>)]) -> io::Result<usize> {
        let keep: HashSet<(Uuid, Option<String>)> = live.iter().cloned().collect();
        let recent = SystemTime::now()
            .checked_sub(SWEEP_GRACE)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut removed = 0;
        for object in self.list(&self.prefix)? {
            let Some((context, blob)) = object
                .location
                .prefix_match(&self.prefix)
                .and_then(parse_key)
            else {
                // Not a name this store makes: not touched.
                continue;
            };
            if keep.contains(&(context, Some(blob))) {
                continue;
            }
            if object.last_modified.timestamp_millis() > recent {
                continue;
            }
            self.delete(&object.location)?;
            removed += 1;
        }
        Ok(removed)
    }

    fn check(&self) -> io::Result<()> {
        // One listing request of a prefix that holds nothing: it needs the bucket, the
        // credentials and the permission the sweep needs.
        let probe = self.prefix.clone().join(".hutch-check");
        run(
            &self.runtime,
            CHECK_TIMEOUT,
            self.store.list_with_delimiter(Some(&probe)),
        )
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_a_bucket_and_a_prefix() {
        let config = S3Config::parse("s3://hutch-data/contexts/prod/").unwrap();
        assert_eq!(config.bucket, "hutch-data");
        assert_eq!(config.prefix, "contexts/prod");
        assert_eq!(S3Config::parse("s3://hutch-data").unwrap().prefix, "");
        for bad in [
            "hutch-data/x",
            "s3://",
            "s3://Upper",
            "s3://a",
            "s3://ok-bucket/a/../b",
            "s3://ok-bucket/a//b",
        ] {
            assert!(S3Config::parse(bad).is_err(), "{bad}");
        }
    }
}
