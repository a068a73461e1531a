//! Upgraded connections (WebSockets) spliced to the agent, ended when idle.
//!
//! Bytes are copied both ways until either side closes, or until nothing has moved in either
//! direction for the idle timeout: a client that vanished without closing (or just stopped
//! using a terminal) does not hold a connection, an agent connection and the session's
//! resources forever. WebSocket pings count as traffic, so a client that pings stays.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An end of the splice that records when bytes last moved through it.
struct Watched<T> {
    io: T,
    /// Milliseconds since `start` at the last byte moved, shared by both ends.
    last: Arc<AtomicU64>,
    start: Instant,
}

impl<T> Watched<T> {
    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(1..)) = result {
            this.touch();
        }
        result
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a splice ended.
#[derive(Debug)]
pub(crate) enum SpliceEnd {
    /// One side closed (or failed, with the error).
    Closed(io::Result<(u64, u64)>),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies between `client` and `agent` until one closes or nothing moves for `idle_timeout`.
pub(crate) async fn splice<C, A>(client: C, agent: A, idle_timeout: Duration) -> SpliceEnd
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut client = Watched {
        io: client,
        last: Arc::clone(&last),
        start,
    };
    let mut agent = agent;
    let idle = async {
        loop {
            let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = quiet_since + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    };
    tokio::select! {
        result = copy_both_ways(&mut client, &mut agent) => SpliceEnd::Closed(result),
        () = idle => SpliceEnd::Idle,
    }
}

/// Copies both ways until the agent's side ends, so that nothing the agent wrote is lost.
///
/// Unlike `copy_bidirectional`, a failed write towards the agent (it closed after its last
/// frame while the client was still sending) does not end the splice: what the agent wrote
/// before closing (an error frame, a close frame) still reaches the client. Returns the bytes
/// copied client to agent and agent to client.
async fn copy_both_ways<C, A>(client: &mut C, agent: &mut A) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    A: AsyncRead + AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;

    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut agent_read, mut agent_write) = tokio::io::split(agent);
    let up = async {
        let copied = tokio::io::copy(&mut client_read, &mut agent_write).await;
        let _ = agent_write.shutdown().await;
        copied.unwrap_or(0)
    };
    let down = async {
        let copied = tokio::io::copy(&mut agent_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    tokio::select! {
        // The agent's side ended: the conversation is over, whatever the client still sends.
        copied = &mut down => Ok((0, copied?)),
        // The client closed (or writing to the agent failed): the agent's answer still flows.
        up_copied = &mut up => Ok((up_copied, down.await?)),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    #[tokio::test]
    async fn what_the_agent_wrote_before_closing_reaches_the_client_while_it_still_sends() {
        let (client, mut client_peer) = duplex(1024);
        let (agent, mut agent_peer) = duplex(1024);
        let splice = tokio::spawn(splice(client, agent, Duration::from_secs(30)));
        agent_peer.write_all(b"error frame").await.unwrap();
        drop(agent_peer);
        // The client keeps sending into a closed agent.
        let _ = client_peer.write_all(b"eof").await;
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"error frame");
        let ended = tokio::time::timeout(Duration::from_secs(5), splice).await;
        assert!(matches!(ended.unwrap().unwrap(), SpliceEnd::Closed(Ok(_))));
    }

    #[tokio::test]
    async fn a_quiet_splice_ends_after_the_idle_timeout_and_traffic_keeps_it() {
        let (client, mut client_peer) = duplex(1024);
        let (agent, mut agent_peer) = duplex(1024);
        let splice = tokio::spawn(splice(client, agent, Duration::from_millis(600)));

        // Traffic every 300 ms keeps it for well past one timeout.
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            client_peer.write_all(b"ping").await.unwrap();
            let mut got = [0u8; 4];
            agent_peer.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"ping");
        }
        assert!(!splice.is_finished());

        let ended = tokio::time::timeout(Duration::from_secs(5), splice).await;
        assert!(matches!(ended.unwrap().unwrap(), SpliceEnd::Idle));
    }
}
