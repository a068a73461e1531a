//! What crosses each session's ports from outside, for `/metrics`: requests relayed, requests
//! refused by the session's connection bound, and bytes each way through the tunnels.
//!
//! Bytes are counted on the tunnel to the app ([`Counted`]), so they include the HTTP heads
//! and, after a `101`, everything a WebSocket carries. A session's counters live until a
//! scrape finds the session gone ([`Traffic::forget`]).

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use uuid::Uuid;

/// The live counters of one session.
#[derive(Debug, Default)]
pub(crate) struct SessionTraffic {
    requests: AtomicU64,
    refused: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl SessionTraffic {
    /// Counts a request (or WebSocket) relayed into the session.
    pub(crate) fn relayed(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request refused because the session had its most connections open.
    pub(crate) fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }
}

/// One session's counters at a scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PortCounters {
    /// Requests (and WebSockets) relayed to the session's ports.
    pub(crate) requests: u64,
    /// Requests refused by the session's connection bound (429).
    pub(crate) refused: u64,
    /// Bytes sent into the session (requests, client WebSocket messages).
    pub(crate) bytes_in: u64,
    /// Bytes the session's apps sent back.
    pub(crate) bytes_out: u64,
    /// Connections relayed into the session now.
    pub(crate) open: u64,
}

/// The counters of every session whose ports were reached.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    sessions: Mutex<HashMap<Uuid, Arc<SessionTraffic>>>,
}

impl Traffic {
    /// The counters of `session`, made on first use.
    pub(crate) fn of(&self, session: Uuid) -> Arc<SessionTraffic> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(sessions.entry(session).or_default())
    }

    /// Every session's counters now; `open` is left at 0 for the caller to fill.
    pub(crate) fn snapshot(&self) -> HashMap<Uuid, PortCounters> {
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .iter()
            .map(|(id, t)| {
                let counters = PortCounters {
                    requests: t.requests.load(Ordering::Relaxed),
                    refused: t.refused.load(Ordering::Relaxed),
                    bytes_in: t.bytes_in.load(Ordering::Relaxed),
                    bytes_out: t.bytes_out.load(Ordering::Relaxed),
                    open: 0,
                };
                (*id, counters)
            })
            .collect()
    }

    /// Drops the counters of `session` (it is gone).
    pub(crate) fn forget(&self, session: Uuid) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.remove(&session);
    }
}

/// A tunnel to an app that counts what is written into it (`bytes_in`) and read from it
/// (`bytes_out`).
#[derive(Debug)]
pub(crate) struct Counted<T> {
    inner: T,
    traffic: Arc<SessionTraffic>,
}

impl<T> Counted<T> {
    /// Counts the bytes of `inner` on `traffic`.
    pub(crate) fn new(inner: T, traffic: Arc<SessionTraffic>) -> Self {
        Counted { inner, traffic }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.traffic
            .bytes_out
            .fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.traffic
                .bytes_in
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(written)) = &polled {
            self.traffic
                .bytes_in
                .fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn bytes_each_way_are_counted_on_the_sessions_counters() {
        let traffic = Traffic::default();
        let session = Uuid::from_u128(7);
        let (near, mut far) = tokio::io::duplex(64);
        let mut tunnel = Counted::new(near, traffic.of(session));
        tunnel.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut request = [0u8; 18];
        far.read_exact(&mut request).await.unwrap();
        far.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut response = [0u8; 17];
        tunnel.read_exact(&mut response).await.unwrap();
        traffic.of(session).relayed();
        traffic.of(session).refused();

        let counters = traffic.snapshot()[&session];
        assert_eq!((counters.bytes_in, counters.bytes_out), (18, 17));
        assert_eq!((counters.requests, counters.refused), (1, 1));
        traffic.forget(session);
        assert!(traffic.snapshot().is_empty());
    }
}
