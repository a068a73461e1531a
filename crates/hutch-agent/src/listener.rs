//! Where the agent takes its connections: the unix socket of a sandbox hutch built, or TCP in
//! container mode, where each connection must first pass the preface
//! ([`hutch_sandbox::preface`]) before it reaches the same HTTP service.
//!
//! In container mode a task accepts TCP connections and checks each one's preface on a task
//! of its own, bounded by [`hutch_sandbox::preface::TIMEOUT`]; at most [`PENDING_MAX`]
//! connections wait for their preface at once, and one more is closed at once. A refused
//! connection gets `NO\n` (or nothing, when it was too slow) and is closed; the refusal is
//! logged with the peer's address and nothing is told the peer. Accepted ones are handed to
//! the HTTP server through a channel, after `OK\n`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hutch_sandbox::preface::{self, PrefaceError, Secret};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};

/// Most TCP connections that wait for their preface at once.
pub(crate) const PENDING_MAX: usize = 64;

/// The agent's listener, as the HTTP server takes connections from it.
pub(crate) enum AgentListener {
    /// The sandbox's unix socket.
    Unix(UnixListener),
    /// Connections whose preface was accepted, with the address listened on.
    Tcp(mpsc::Receiver<(Prefaced, SocketAddr)>, SocketAddr),
}

/// One connection the agent serves.
pub(crate) enum AgentIo {
    /// On the unix socket.
    Unix(UnixStream),
    /// On TCP, after its preface.
    Tcp(Prefaced),
}

/// A TCP connection past its preface, with the bytes that came after the preface line (a
/// client that did not wait for `OK`) read first.
pub(crate) struct Prefaced {
    stream: TcpStream,
    early: Vec<u8>,
    taken: usize,
}

impl AgentListener {
    /// Serves the unix socket `listener`.
    pub(crate) fn unix(listener: std::os::fd::OwnedFd) -> io::Result<AgentListener> {
        let std_listener = std::os::unix::net::UnixListener::from(listener);
        std_listener.set_nonblocking(true)?;
        Ok(AgentListener::Unix(UnixListener::from_std(std_listener)?))
    }

    /// Serves `listener`, checking every connection's preface against `secret` (on a task
    /// started here: call from within the runtime).
    pub(crate) fn tcp(
        listener: std::net::TcpListener,
        secret: Secret,
    ) -> io::Result<AgentListener> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(PENDING_MAX);
        tokio::spawn(accept_tcp(listener, Arc::new(secret), tx));
        Ok(AgentListener::Tcp(rx, local))
    }
}

/// Accepts TCP connections and checks their prefaces until the server stops taking them.
async fn accept_tcp(
    mut listener: TcpListener,
    secret: Arc<Secret>,
    accepted: mpsc::Sender<(Prefaced, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(PENDING_MAX));
    loop {
        let (stream, peer) = axum::serve::Listener::accept(&mut listener).await;
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "refused a connection: {PENDING_MAX} connections already wait for their preface");
            continue;
        };
        let secret = secret.clone();
        let hand_on = accepted.clone();
        tokio::spawn(async move {
            let checked = check(stream, &secret).await;
            drop(permit);
            match checked {
                Ok(prefaced) => {
                    // The server stopped taking connections: the agent is ending.
                    let _ = hand_on.send((prefaced, peer)).await;
                }
                Err(error) => tracing::warn!(%peer, %error, "refused a connection"),
            }
        });
        if accepted.is_closed() {
            return;
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("{0}")]
    Preface(#[from] PrefaceError),
    #[error("no complete preface within {:?}", preface::TIMEOUT)]
    Slow,
    #[error("answering the preface: {0}")]
    Answer(io::Error),
}

/// Reads and checks `stream`'s preface, and answers it.
async fn check(mut stream: TcpStream, secret: &Secret) -> Result<Prefaced, Refusal> {
    // Requests are small and answered at once: no Nagle delay on either side's last segment.
    let _ = stream.set_nodelay(true);
    match tokio::time::timeout(preface::TIMEOUT, preface::read_preface(&mut stream, secret)).await {
        Ok(Ok(early)) => {
            stream
                .write_all(preface::ACCEPTED)
                .await
                .map_err(Refusal::Answer)?;
            Ok(Prefaced {
                stream,
                early,
                taken: 0,
            })
        }
        Ok(Err(error)) => {
            // Best effort: the peer learns it was refused, nothing more.
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                stream.write_all(preface::REFUSED),
            )
            .await;
            Err(error.into())
        }
        Err(_) => Err(Refusal::Slow),
    }
}

impl axum::serve::Listener for AgentListener {
    type Io = AgentIo;
    /// The TCP peer that passed the preface; `None` on the unix socket.
    type Addr = Option<SocketAddr>;

    async fn accept(&mut self) -> (AgentIo, Option<SocketAddr>) {
        match self {
            AgentListener::Unix(listener) => {
                let (stream, _) = axum::serve::Listener::accept(listener).await;
                (AgentIo::Unix(stream), None)
            }
            AgentListener::Tcp(accepted, _) => match accepted.recv().await {
                Some((stream, peer)) => (AgentIo::Tcp(stream), Some(peer)),
                // The accepting task ended (it never does while the receiver lives).
                None => std::future::pending().await,
            },
        }
    }

    fn local_addr(&self) -> io::Result<Option<SocketAddr>> {
        match self {
            AgentListener::Unix(_) => Ok(None),
            AgentListener::Tcp(_, local) => Ok(Some(*local)),
        }
    }
}

impl AsyncRead for AgentIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Unix(stream) => Pin::new(stream).poll_read(cx, buf),
            AgentIo::Tcp(prefaced) => {
                if prefaced.taken < prefaced.early.len() {
                    let rest = &prefaced.early[prefaced.taken..];
                    let n = rest.len().min(buf.remaining());
                    buf.put_slice(&rest[..n]);
                    prefaced.taken += n;
                    return Poll::Ready(Ok(()));
                }
                Pin::new(&mut prefaced.stream).poll_read(cx, buf)
            }
        }
    }
}

impl AsyncWrite for AgentIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentIo::Unix(stream) => Pin::new(stream).poll_write(cx, buf),
            AgentIo::Tcp(prefaced) => Pin::new(&mut prefaced.stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            AgentIo::Unix(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            AgentIo::Tcp(prefaced) => Pin::new(&mut prefaced.stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Unix(stream) => Pin::new(stream).poll_flush(cx),
            AgentIo::Tcp(prefaced) => Pin::new(&mut prefaced.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            AgentIo::Unix(stream) => Pin::new(stream).poll_shutdown(cx),
            AgentIo::Tcp(prefaced) => Pin::new(&mut prefaced.stream).poll_shutdown(cx),
        }
    }
}
