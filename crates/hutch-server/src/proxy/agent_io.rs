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
//! [`Relayed`] is the agent's response body with the connection's task attached: once the
//! client has the whole answer (or went away), the task ends. [`ClientBody`] is the client's
//! request body on its way: when the exchange ends before it does, what the client still
//! sends is read and dropped for [`DRAIN_LINGER`] at most. Closing the client's connection
//! with its body unread would reset it, and a reset can destroy the answer on its way to the
//! client; draining without end would let a client hold the connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hutch_sandbox::AgentConnection;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinHandle;

/// A stream to an agent whose writes, once the agent has stopped reading, are dropped
/// (unless it is [`AgentStream::strict`]).
pub(crate) struct AgentStream {
    stream: AgentConnection,
    /// Whether writes to a closed agent are dropped rather than failed.
    drops_writes_after_close: bool,
    /// Whether a write failed because the agent closed its end: what follows is dropped.
    agent_stopped_reading: bool,
}

impl AgentStream {
    /// Wraps a connected stream for one request and its answer.
    pub(crate) fn new(stream: AgentConnection) -> AgentStream {
        AgentStream {
            stream,
            drops_writes_after_close: true,
            agent_stopped_reading: false,
        }
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
                Poll::Ready(Ok(len))
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
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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
}

impl ClientBody {
    /// Wraps the client's body.
    pub(crate) fn new(body: axum::body::Body) -> ClientBody {
        ClientBody {
            ended: body.is_end_stream(),
            body: Some(body),
        }
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
        let frame = Pin::new(body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = frame {
            this.ended = true;
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

/// The agent's response body, carrying the task that drives its connection: the task is
/// aborted when the body is dropped (sent whole, or the client went away).
pub(crate) struct Relayed {
    body: Incoming,
    connection: JoinHandle<()>,
}

impl Relayed {
    /// `body`, read from the connection that `connection` drives.
    pub(crate) fn new(body: Incoming, connection: JoinHandle<()>) -> Relayed {
        Relayed { body, connection }
    }
}

impl Drop for Relayed {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Body for Relayed {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
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
