//! `hutch cp SRC DST`: copy a file or a directory into or out of a session.
//!
//! One side is `SESSION:PATH` (a session id, a colon, an absolute path inside it), the other a
//! local path. As with `cp -r`, a destination that is an existing directory (or, in a
//! session, ends with `/`) receives the source under its own name; otherwise the destination
//! is the copy's name. Files are streamed as they are read; directories travel as a tar
//! stream (built and unpacked on the fly, never held whole). A progress bar is drawn on
//! standard error when it is a terminal (`--quiet` hides it). `--json` prints what was copied.
//! What comes out of a session is untrusted: entries of its archive that would land outside
//! the destination are refused, and set-id bits are dropped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use hutch_api::FileType;
use hutch_client::files::{BodyStream, file_chunks};
use hutch_client::{ClientError, HutchClient};
use uuid::Uuid;

use crate::connection::{Connection, block_on};
use crate::progress::Progress;

/// Bytes of a tar stream gathered before they are sent.
const TAR_CHUNK: usize = 256 * 1024;

/// Options of `hutch cp`.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  hutch cp data.csv $S:/workspace/         a file into a directory of the session
  hutch cp ./src $S:/workspace/src         a directory (as tar), named /workspace/src
  hutch cp $S:/workspace/out.json .        a file out of the session, into .
  hutch cp $S:/workspace/results ./res     a directory out of the session")]
pub(crate) struct CpArgs {
    #[command(flatten)]
    connection: Connection,
    /// Do not draw the progress bar.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print what was copied as JSON (`source`, `destination`, `bytes`, `directory`).
    #[arg(long)]
    json: bool,
    /// What to copy: a local path or `SESSION:PATH`.
    source: String,
    /// Where to: a local path or `SESSION:PATH`.
    destination: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Local(PathBuf),
    Remote { session: Uuid, path: String },
}

/// `SESSION:PATH` when the text before the first colon is a session id; a local path
/// otherwise.
fn parse_place(text: &str) -> Place {
    if let Some((id, path)) = text.split_once(':')
        && let Ok(session) = Uuid::parse_str(id)
    {
        return Place::Remote {
            session,
            path: path.to_owned(),
        };
    }
    Place::Local(PathBuf::from(text))
}

/// The last component of `path` (`/a/b/` → `b`).
fn base_name(path: &str) -> anyhow::Result<&str> {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|name| !name.is_empty() && *name != "." && *name != "..")
        .with_context(|| format!("{path:?} names no file"))
}

/// What was copied.
#[derive(serde::Serialize)]
struct Copied {
    source: String,
    destination: String,
    bytes: u64,
    directory: bool,
}

pub(crate) fn main(args: CpArgs) -> ExitCode {
    let server = args.connection.url.clone();
    block_on(&server, run(args), 1)
}

async fn run(args: CpArgs) -> anyhow::Result<u8> {
    let client = args.connection.client()?;
    let copied = match (parse_place(&args.source), parse_place(&args.destination)) {
        (Place::Local(local), Place::Remote { session, path }) => {
            upload(&client, &local, session, &path, !args.quiet).await?
        }
        (Place::Remote { session, path }, Place::Local(local)) => {
            download(&client, session, &path, &local, !args.quiet).await?
        }
        (Place::Local(_), Place::Local(_)) => {
            anyhow::bail!("neither side is in a session: write one as SESSION:PATH")
        }
        (Place::Remote { .. }, Place::Remote { .. }) => {
            anyhow::bail!("both sides are in sessions: copy through a local path")
        }
    };
    if args.json {
        crate::sessions::print_json(&copied)?;
    }
    Ok(0)
}

/// Copies the local file or directory `local` to `path` in `session`.
async fn upload(
    client: &HutchClient,
    local: &Path,
    session: Uuid,
    path: &str,
    show: bool,
) -> anyhow::Result<Copied> {
    let meta = std::fs::metadata(local).with_context(|| format!("reading {}", local.display()))?;
    let name = local
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .or_else(|| {
            std::fs::canonicalize(local)
                .ok()?
                .file_name()?
                .to_str()
                .map(str::to_owned)
        })
        .with_context(|| format!("{} names no file", local.display()))?;
    let into_directory = path.ends_with('/')
        || match client.stat_file(session, path).await {
            Ok(info) => info.file_type == FileType::Directory,
            Err(error) if error.code() == Some(hutch_api::ErrorCode::FileNotFound) => false,
            Err(error) => return Err(error).context(format!("looking at {path}")),
        };
    let destination = if into_directory {
        format!("{}/{name}", path.trim_end_matches('/'))
    } else {
        path.to_owned()
    };
    let progress = Arc::new(Mutex::new(Progress::new(
        name,
        Some(if meta.is_dir() {
            tree_size(local)
        } else {
            meta.len()
        }),
        show,
    )));
    let counted = {
        let progress = progress.clone();
        move |chunk: &Bytes| {
            if let Ok(mut progress) = progress.lock() {
                progress.advance(chunk.len() as u64);
            }
        }
    };
    let sent = if meta.is_dir() {
        let body = tar_stream(local.to_owned()).inspect_ok(counted).boxed();
        client.upload_archive(session, &destination, body).await
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .with_context(|| format!("opening {}", local.display()))?;
        let body = file_chunks(file).inspect_ok(counted).boxed();
        client
            .upload_file(session, &destination, body, meta.len())
            .await
    };
    let bytes = finish(&progress);
    sent.with_context(|| format!("copying {} to {destination}", local.display()))?;
    Ok(Copied {
        source: local.display().to_string(),
        destination: format!("{session}:{destination}"),
        bytes,
        directory: meta.is_dir(),
    })
}

/// Copies `path` of `session`, a file or a directory, to the local `local`.
async fn download(
    client: &HutchClient,
    session: Uuid,
    path: &str,
    local: &Path,
    show: bool,
) -> anyhow::Result<Copied> {
    let info = client
        .stat_file(session, path)
        .await
        .with_context(|| format!("looking at {path}"))?;
    let directory = info.file_type == FileType::Directory;
    let destination = if local.is_dir() {
        local.join(base_name(path)?)
    } else {
        local.to_owned()
    };
    let mut download = if directory {
        client.download_archive(session, path).await
    } else {
        client.download_file(session, path).await
    }
    .with_context(|| format!("copying {path}"))?;
    let total = if directory {
        None
    } else {
        download.length.or(Some(info.size))
    };
    let progress = Arc::new(Mutex::new(Progress::new(info.name.clone(), total, show)));
    let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(8);
    let target = destination.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut chunks = ChunkReader {
            rx,
            current: Bytes::new(),
        };
        if directory {
            std::fs::create_dir_all(&target)?;
            // Permission bits only (no set-id bits from a session's files); paths that would
            // leave the target, through `..` or a symlink, are refused by `unpack`.
            tar::Archive::new(chunks).unpack(&target)
        } else {
            let mut file = std::fs::File::create(&target)?;
            std::io::copy(&mut chunks, &mut file)?;
            file.sync_all()
        }
    });
    let mut received: Result<(), ClientError> = Ok(());
    while let Some(chunk) = download.next_chunk().await {
        match chunk {
            Ok(chunk) => {
                if let Ok(mut progress) = progress.lock() {
                    progress.advance(chunk.len() as u64);
                }
                if tx.send(chunk).is_err() {
                    break;
                }
            }
            Err(error) => {
                received = Err(error);
                break;
            }
        }
    }
    drop(tx);
    let bytes = finish(&progress);
    received.with_context(|| format!("copying {path}"))?;
    writer
        .await
        .context("the writing thread")?
        .with_context(|| format!("writing {}", destination.display()))?;
    Ok(Copied {
        source: format!("{session}:{path}"),
        destination: destination.display().to_string(),
        bytes,
        directory,
    })
}

/// Ends the progress bar; answers the bytes it counted.
fn finish(progress: &Mutex<Progress>) -> u64 {
    match progress.lock() {
        Ok(mut progress) => {
            progress.finish();
            progress.done()
        }
        Err(_) => 0,
    }
}

/// The bytes of the regular files under `dir` (what a progress bar counts towards).
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The directory `dir` as a tar stream, built on a thread of its own as it is sent; entries
/// are named relative to `dir`, symlinks kept as symlinks.
fn tar_stream(dir: PathBuf) -> BodyStream {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    std::thread::spawn(move || {
        let writer = ChunkWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(TAR_CHUNK),
        };
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let built = builder
            .append_dir_all("", &dir)
            .and_then(|()| builder.into_inner())
            .and_then(|mut writer| writer.flush());
        if let Err(error) = built {
            let _ = tx.blocking_send(Err(error));
        }
    });
    futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
    .boxed()
}

/// Writes into a channel in chunks of [`TAR_CHUNK`] bytes.
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(TAR_CHUNK),
        ));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        if self.buffer.len() >= TAR_CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Reads the chunks of a channel as one stream of bytes.
struct ChunkReader {
    rx: std::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(chunk) => self.current = chunk,
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_and_a_colon_make_a_remote_path() {
        let id = "0190a0b0-0000-7000-8000-000000000000";
        assert_eq!(
            parse_place(&format!("{id}:/workspace/a")),
            Place::Remote {
                session: Uuid::parse_str(id).unwrap_or_default(),
                path: "/workspace/a".to_owned()
            }
        );
        assert_eq!(parse_place("a:b"), Place::Local(PathBuf::from("a:b")));
        assert_eq!(parse_place("./x"), Place::Local(PathBuf::from("./x")));
    }

    #[test]
    fn the_base_name_is_the_last_component() {
        assert_eq!(base_name("/workspace/out/").ok(), Some("out"));
        assert_eq!(base_name("/workspace/a.txt").ok(), Some("a.txt"));
        assert!(base_name("/").is_err());
    }
}
