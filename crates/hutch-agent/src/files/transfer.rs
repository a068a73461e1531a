//! Moving bytes between HTTP bodies and files without holding them: uploads go through a
//! small bounded channel to a blocking writer thread, downloads the other way, so memory per
//! transfer is a few chunks whatever the file's size.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use bytes::Bytes;
use hutch_api::ErrorCode;
use tokio::sync::mpsc;

use super::Files;
use super::fsys::{self, fs_error};
use super::path::SandboxPath;
use crate::error::AgentError;

/// Size of one chunk read from a file, and of the batches an upload is written in.
pub(crate) const CHUNK_BYTES: usize = 1024 * 1024;
/// Chunks in flight between a file and a body.
const CHANNEL_CHUNKS: usize = 8;

/// Something that yields the chunks of an upload.
pub(crate) trait ChunkSource {
    /// The next chunk; `None` at the end.
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>>;
}

impl ChunkSource for axum::body::BodyDataStream {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        use futures_util::StreamExt;
        self.next().await.map(|r| r.map_err(|e| e.to_string()))
    }
}

impl ChunkSource for axum::extract::multipart::Field<'_> {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, String>> {
        self.chunk().await.map_err(|e| e.body_text()).transpose()
    }
}

/// The 413 of an upload over the limit.
pub(crate) fn too_large(path: &str, max: u64) -> AgentError {
    AgentError::File {
        code: ErrorCode::PayloadTooLarge,
        message: format!(
            "{path}: the upload is larger than {max} bytes, this server's maximum (--max-upload-mb)"
        ),
        path: path.to_owned(),
    }
}

/// A temporary file next to an upload's destination, removed unless renamed into place.
pub(super) struct TempFile {
    parent: Arc<OwnedFd>,
    name: CString,
    armed: bool,
}

impl TempFile {
    /// A new temporary file in `parent` with permission bits `mode`, open for writing.
    pub(super) fn create(parent: Arc<OwnedFd>, mode: u32) -> io::Result<(TempFile, OwnedFd)> {
        let name = CString::new(format!(".hutch-upload-{:016x}", hutch_sys::random_u64()))
            .map_err(io::Error::other)?;
        let fd = fsys::openat_mode(
            parent.as_fd(),
            &name,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode,
        )?;
        let temp = TempFile {
            parent,
            name,
            armed: true,
        };
        Ok((temp, fd))
    }

    /// Renames it over `leaf` of its directory (`flags` of `renameat2`) and keeps it.
    pub(super) fn rename_over(&mut self, leaf: &CString, flags: u32) -> io::Result<()> {
        fsys::renameat2(
            self.parent.as_fd(),
            &self.name,
            self.parent.as_fd(),
            leaf,
            flags,
        )?;
        self.armed = false;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fsys::unlinkat(self.parent.as_fd(), &self.name, 0);
        }
    }
}

/// Where an upload goes.
pub(crate) struct Upload {
    /// Destination.
    pub(crate) path: SandboxPath,
    /// Permission bits of the file.
    pub(crate) mode: u32,
    /// Create missing parent directories.
    pub(crate) parents: bool,
    /// Replace an existing file (otherwise 409).
    pub(crate) overwrite: bool,
}

/// Streams `source` into `upload.path`: into a temporary file in the same directory, renamed
/// over the destination only once every byte is written, so that a failed or interrupted
/// upload never leaves a partial file; past `max` bytes it is refused (413). Returns the bytes
/// written.
pub(crate) async fn write_file(
    files: &Arc<Files>,
    upload: Upload,
    source: &mut impl ChunkSource,
    max: u64,
) -> Result<u64, AgentError> {
    let display = upload.path.to_string();
    let files2 = Arc::clone(files);
    let path = upload.path.clone();
    let overwrite = upload.overwrite;
    let (name, temp, file) = blocking(move || {
        let (parent, name) = match path.split() {
            Some((dir, name)) if upload.parents => (files2.root.mkdir_all(&dir, 0o755)?, name),
            _ => files2.root.parent(&path)?,
        };
        let shown = path.to_string();
        match fsys::lstatat(parent.as_fd(), &name) {
            Ok(st) if fsys::kind(&st) == hutch_api::FileType::Directory => {
                return Err(AgentError::File {
                    code: ErrorCode::Conflict,
                    message: format!("{shown} is a directory"),
                    path: shown,
                });
            }
            Ok(_) if !upload.overwrite => {
                return Err(AgentError::File {
                    code: ErrorCode::Conflict,
                    message: format!("{shown} already exists and overwrite is false"),
                    path: shown,
                });
            }
            _ => {}
        }
        let (guard, fd) = TempFile::create(Arc::new(parent), upload.mode)
            .map_err(|e| fs_error("create", &shown, e))?;
        fsys::fchmod(fd.as_fd(), upload.mode).map_err(|e| fs_error("chmod", &shown, e))?;
        Ok((name, guard, std::fs::File::from(fd)))
    })
    .await?;

    let (tx, mut rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
    let writer = tokio::task::spawn_blocking(move || -> io::Result<()> {
        let mut file = file;
        while let Some(chunk) = rx.blocking_recv() {
            file.write_all(&chunk)?;
        }
        file.flush()
    });
    let mut written = 0u64;
    let mut failure = None;
    // Small frames are gathered into batches of about CHUNK_BYTES: fewer writes and handoffs.
    let mut batch = bytes::BytesMut::new();
    while let Some(chunk) = source.next_chunk().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                failure = Some(AgentError::File {
                    code: ErrorCode::InvalidRequest,
                    message: format!("{display}: reading the upload failed: {e}"),
                    path: display.clone(),
                });
                break;
            }
        };
        written += chunk.len() as u64;
        if written > max {
            failure = Some(if max < files.max_upload_bytes {
                // Part of a multipart request: the files before it took the rest.
                AgentError::File {
                    code: ErrorCode::PayloadTooLarge,
                    message: format!(
                        "{display}: the request's files are larger than {} bytes in all, this server's maximum (--max-upload-mb)",
                        files.max_upload_bytes
                    ),
                    path: display.clone(),
                }
            } else {
                too_large(&display, max)
            });
            break;
        }
        let chunk = if batch.is_empty() && chunk.len() >= CHUNK_BYTES {
            chunk
        } else {
            if batch.is_empty() {
                batch.reserve(CHUNK_BYTES);
            }
            batch.extend_from_slice(&chunk);
            if batch.len() < CHUNK_BYTES {
                continue;
            }
            batch.split().freeze()
        };
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    if failure.is_none() && !batch.is_empty() {
        let _ = tx.send(batch.freeze()).await;
    }
    drop(tx);
    let wrote = writer
        .await
        .map_err(|e| AgentError::Runtime(io::Error::other(e)))?;
    if let Some(failure) = failure {
        return Err(failure);
    }
    wrote.map_err(|e| fs_error("write", &display, e))?;
    let mut temp = temp;
    let shown = display.clone();
    blocking(move || {
        let flags = if overwrite { 0 } else { libc::RENAME_NOREPLACE };
        temp.rename_over(&name, flags)
            .map_err(|e| fs_error("rename into", &shown, e))?;
        Ok(())
    })
    .await?;
    Ok(written)
}

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Runtime(io::Error::other(e)))?
}

/// The writing end of a download: a `Write` that hands chunks to the response body, blocking
/// while the client is slower than the disk.
pub(crate) struct BodyWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl BodyWriter {
    /// A writer and the response body it feeds.
    pub(crate) fn new() -> (BodyWriter, axum::body::Body) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            BodyWriter {
                tx,
                buf: Vec::with_capacity(CHUNK_BYTES),
            },
            axum::body::Body::from_stream(stream),
        )
    }

    /// Sends a whole chunk as it is.
    pub(crate) fn send(&self, chunk: Bytes) -> io::Result<()> {
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the body with an error (the client sees a cut response).
    pub(crate) fn fail(&self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = Bytes::from(std::mem::replace(
                &mut self.buf,
                Vec::with_capacity(CHUNK_BYTES),
            ));
            self.send(chunk)?;
        }
        Ok(())
    }
}

/// The reading end of an upload consumed by a blocking parser (tar): a `Read` over chunks
/// fed by the request's task.
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl BodyReader {
    /// A reader and the sender that feeds it.
    pub(crate) fn new() -> (mpsc::Sender<Bytes>, BodyReader) {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (
            tx,
            BodyReader {
                rx,
                current: Bytes::new(),
            },
        )
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Streams `len` bytes of `file` from `start` into `out`.
pub(crate) fn copy_range(
    file: &std::fs::File,
    start: u64,
    len: u64,
    out: &mut impl Write,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let want = ((end - offset) as usize).min(CHUNK_BYTES);
        let n = file.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            // The file shrank while being sent: pad, so the length stays what was announced.
            buf[..want].fill(0);
            out.write_all(&buf[..want])?;
            offset += want as u64;
            continue;
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
    }
    out.flush()
}
