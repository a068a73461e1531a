//! The control plane's end of one proxied exchange with an agent.
//!
//! An agent may answer before it has read a whole request body (a refusal, a quota hit, a
//! bad query) and then close its end. The proxy is still writing the body and gets a broken
//! pipe, yet the agent's answer already waits, complete, in the socket's receive queue: a
//! unix socket keeps what the peer wrote before it closed. [`AgentStream`] therefore treats
//! "the agent stopped reading" as the end of the request body, not as a failure: later
//! writes are dropped and the answer is read as usual. Only when no answer comes (the agent
//! is really gone) does the exchange fail.
//!
//! [`Relayed`] is the agent's response body with its connection attached: once the client has
//! the whole answer the connection goes back to the session's pool ([`super::pool`]) when the
//! exchange ended cleanly; when the client went away mid-answer it is closed. [`ClientBody`] is the client's
//! request body on its way: when the exchange ends before it does, what the client still
//! sends is read and dropped for [`DRAIN_LINGER`] at most. Closing the client's connection
//! with its body unread would reset it, and a reset can destroy the answer on its way to the
//! client; draining without end would let a client hold the connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hutch_sandbox::AgentConnection;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::pool::{AgentConn, Lease, Wire};

/// A stream to an agent whose writes, once the agent has stopped reading, are dropped
/// (unless it is [`AgentStream::strict`]).
pub(crate) struct AgentStream {
    stream: AgentConnection,
    /// Whether writes to a closed agent are dropped rather than failed.
    drops_writes_after_close: bool,
    /// Whether a write failed because the agent closed its end: what follows is dropped.
    agent_stopped_reading: bool,
    /// What the socket took and gave, for the pool and the retry of a stale connection.
    wire: Arc<Wire>,
}

impl AgentStream {
    /// Wraps a connected stream for one request and its answer.
    pub(crate) fn new(stream: AgentConnection) -> AgentStream {
        AgentStream {
            stream,
            drops_writes_after_close: true,
            agent_stopped_reading: false,
            wire: Arc::default(),
        }
    }

    /// The counters of this stream's socket.
    pub(crate) fn wire(&self) -> Arc<Wire> {
        Arc::clone(&self.wire)
    }

    /// Wraps a connected stream that may become an upgraded connection, where a closed agent
    /// must end the splice: writes to a closed agent fail.
    pub(crate) fn strict(stream: AgentConnection) -> AgentStream {
        AgentStream {
            drops_writes_after_close: false,
            ..AgentStream::new(stream)
        }
    }

    /// `result` of a write of `len` bytes, with the agent's closed end read as "written".
    fn tolerate(&mut self, result: Poll<io::Result<usize>>, len: usize) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Err(err)) if self.drops_writes_after_close && agent_closed(&err) => {
                tracing::debug!(error = %err, "the agent stopped reading the request; the rest is dropped");
                self.agent_stopped_reading = true;
                self.wire.broken.store(true, Ordering::Release);
                Poll::Ready(Ok(len))
            }
            Poll::Ready(Ok(n)) => {
                self.wire.written.fetch_add(n as u64, Ordering::AcqRel);
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }
}

/// Whether a write error means that the agent closed its end of the connection.
fn agent_closed(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
    )
}

impl AsyncRead for AgentStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.stream).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        this.wire.read.fetch_add(read as u64, Ordering::AcqRel);
        result
    }
}

impl AsyncWrite for AgentStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.agent_stopped_reading {
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.tolerate(result, buf.len())
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if this.agent_stopped_reading {
            return Poll::Ready(Ok(len));
        }
        let result = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.tolerate(result, len)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.agent_stopped_reading {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.stream).poll_shutdown(cx) {
            Poll::Ready(Err(err)) if this.agent_stopped_reading || agent_closed(&err) => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

/// How long the rest of a client's body is read after its exchange ended.
const DRAIN_LINGER: Duration = Duration::from_secs(5);

/// The client's request body on its way to the agent; see the module's documentation.
pub(crate) struct ClientBody {
    body: Option<axum::body::Body>,
    ended: bool,
    /// Set once the body has been taken whole (its connection may then be kept).
    whole: Arc<AtomicBool>,
}

impl ClientBody {
    /// Wraps the client's body.
    pub(crate) fn new(body: axum::body::Body) -> ClientBody {
        let ended = body.is_end_stream();
        ClientBody {
            ended,
            body: Some(body),
            whole: Arc::new(AtomicBool::new(ended)),
        }
    }

    /// Whether the body has been taken whole, as it will be known later.
    pub(crate) fn whole(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.whole)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(&mut *body).poll_frame(cx);
        match &frame {
            // A body of known length is not polled past its last frame.
            Poll::Ready(Some(Ok(_))) if body.is_end_stream() => {
                this.ended = true;
                this.whole.store(true, Ordering::Release);
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.whole.store(true, Ordering::Release);
            }
            Poll::Ready(Some(Err(_))) => this.ended = true,
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl Drop for ClientBody {
    fn drop(&mut self) {
        let Some(mut body) = self.body.take().filter(|_| !self.ended) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(DRAIN_LINGER, async {
                    while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
                })
                .await;
            });
        }
    }
}

/// The agent's response body, carrying its connection: when the client has read it whole,
/// the connection goes back to the pool if the exchange ended cleanly; otherwise (and when
/// dropped early) the connection is closed.
pub(crate) struct Relayed {
    body: Incoming,
    conn: Option<AgentConn>,
    /// Where the connection goes back; `None`: it is closed after this answer.
    lease: Option<Lease>,
    /// Whether the request's body was sent whole.
    request_whole: Arc<AtomicBool>,
    /// Whether `body` has given its last frame. hyper's `is_end_stream` says so only for a
    /// body of known length, never for a chunked one (an execution's stream of results).
    ended: bool,
}

impl Relayed {
    /// `body`, read from `conn`, which goes back through `lease` (when given) once `body`
    /// and the request's body (`request_whole`) are through.
    pub(crate) fn new(
        body: Incoming,
        conn: AgentConn,
        lease: Option<Lease>,
        request_whole: Arc<AtomicBool>,
    ) -> Relayed {
        Relayed {
            body,
            conn: Some(conn),
            lease,
            request_whole,
            ended: false,
        }
    }

    /// Returns the connection to the pool, if the exchange is over and ended cleanly.
    fn release(&mut self) {
        let ended = self.ended || self.body.is_end_stream();
        if !ended || !self.request_whole.load(Ordering::Acquire) {
            return;
        }
        if let (Some(lease), Some(conn)) = (self.lease.take(), self.conn.take()) {
            lease.give_back(conn);
        }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        // An empty answer is never polled: it is over when it is dropped. Otherwise the
        // connection (if still here) is closed with `conn`.
        self.release();
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                this.ended = true;
                this.release();
            }
            Poll::Ready(Some(Ok(_))) => this.release(),
            Poll::Ready(Some(Err(_))) => {
                this.lease = None;
            }
            Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixStream;

    use super::*;

    #[tokio::test]
    async fn an_answer_written_before_the_peer_closed_is_read_after_a_broken_pipe() {
        let (proxy_end, mut agent_end) = UnixStream::pair().unwrap();
        let mut proxy_end = AgentStream::new(Box::new(proxy_end));
        proxy_end.write_all(b"request head").await.unwrap();
        let mut head = [0u8; 12];
        agent_end.read_exact(&mut head).await.unwrap();
        agent_end.write_all(b"early answer").await.unwrap();
        drop(agent_end);

        // The body goes nowhere, without an error.
        for _ in 0..64 {
            proxy_end.write_all(&[0u8; 65536]).await.unwrap();
        }
        proxy_end.flush().await.unwrap();
        assert!(proxy_end.agent_stopped_reading);

        let mut answer = Vec::new();
        proxy_end.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"early answer");
    }

    #[tokio::test]
    async fn other_write_errors_still_fail() {
        let (proxy_end, _agent_end) = UnixStream::pair().unwrap();
        let mut proxy_end = AgentStream::new(Box::new(proxy_end));
        let refused = io::Error::from(io::ErrorKind::PermissionDenied);
        let result = proxy_end.tolerate(Poll::Ready(Err(refused)), 3);
        assert!(matches!(result, Poll::Ready(Err(_))));
        assert!(!proxy_end.agent_stopped_reading);
    }
}
