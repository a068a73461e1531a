//! Upgraded connections (WebSockets) spliced to the agent, ended when idle.
//!
//! Bytes are copied both ways until either side closes, or until nothing has moved in either
//! direction for the idle timeout: a client that vanished without closing (or just stopped
//! using a terminal) does not hold a connection, an agent connection and the session's
//! resources forever. WebSocket pings count as traffic, so a client that pings stays.
//!
//! A WebSocket whose agent side ends without a close frame (the session was deleted or
//! expired, its sandbox stopped, or the program behind a port dropped the connection) gets
//! one from the relay: close code 1001 (going away) with [`AGENT_GONE_REASON`], so that a
//! client sees why it ended instead of a bare end of stream. The relay follows the frame
//! boundaries of what the agent sends ([`FrameTracker`]) and adds the frame only between two
//! frames; an agent that closes in the middle of a frame leaves the client a plain end. A
//! WebSocket ended by the idle timeout gets one too (1001, [`IDLE_REASON`]), unless the
//! relay was in the middle of writing a frame to a client that stopped reading.

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

/// Close code of the frame a WebSocket gets when its agent side ends without one: 1001,
/// "going away" (RFC 6455, section 7.4.1).
pub(crate) const AGENT_GONE_CODE: u16 = 1001;
/// Reason of that close frame.
pub(crate) const AGENT_GONE_REASON: &str = "the session's sandbox ended the connection";
/// Reason of the close frame (code 1001 too) of a WebSocket ended by the idle timeout,
/// followed by " for N s".
pub(crate) const IDLE_REASON: &str = "nothing moved either way";

/// Follows the frames of one direction of a WebSocket (RFC 6455, section 5.2) as its bytes go
/// by: whether the bytes so far end on a frame boundary, and whether a close frame passed.
#[derive(Debug, Default)]
pub(crate) struct FrameTracker {
    /// The header of the frame being read, as far as it came.
    header: [u8; 14],
    /// Bytes of `header` read; 0 between frames.
    header_len: usize,
    /// Payload bytes of the current frame still to come.
    payload_left: u64,
    /// A close frame passed.
    closed: bool,
}

impl FrameTracker {
    /// Takes the next bytes of the stream.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                self.payload_left -= skip as u64;
                bytes = &bytes[skip..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.complete_header() {
                if self.header[0] & 0x0f == 0x8 {
                    self.closed = true;
                }
                self.header_len = 0;
                self.payload_left = payload;
            }
        }
    }

    /// The payload length once `header` holds a whole header, else `None`.
    fn complete_header(&self) -> Option<u64> {
        if self.header_len < 2 {
            return None;
        }
        let extended = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        if self.header_len < 2 + extended + mask {
            return None;
        }
        Some(match extended {
            0 => u64::from(self.header[1] & 0x7f),
            2 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            _ => u64::from_be_bytes([
                self.header[2],
                self.header[3],
                self.header[4],
                self.header[5],
                self.header[6],
                self.header[7],
                self.header[8],
                self.header[9],
            ]),
        })
    }

    /// Whether a close frame may be added now: the stream is between two frames and has not
    /// closed.
    pub(crate) fn may_close(&self) -> bool {
        !self.closed && self.header_len == 0 && self.payload_left == 0
    }
}

/// A server's close frame (unmasked) with `code` and `reason` (at most 123 bytes).
pub(crate) fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut frame = Vec::with_capacity(4 + reason.len());
    frame.push(0x88);
    frame.push(u8::try_from(2 + reason.len()).unwrap_or(125));
    frame.extend_from_slice(&code.to_be_bytes());
    frame.extend_from_slice(reason);
    frame
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
/// With `websocket`, an agent side that ends without a close frame gets one added (see the
/// module's documentation).
pub(crate) async fn splice<C, A>(
    client: C,
    agent: A,
    idle_timeout: Duration,
    websocket: bool,
) -> SpliceEnd
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
    copy_both_ways(&mut client, &mut agent, websocket, idle, idle_timeout).await
}

/// Copies both ways until the agent's side ends, so that nothing the agent wrote is lost.
///
/// Unlike `copy_bidirectional`, a failed write towards the agent (it closed after its last
/// frame while the client was still sending) does not end the splice: what the agent wrote
/// before closing (an error frame, a close frame) still reaches the client. Ends too when
/// `idle` does (nothing moved for `idle_timeout`).
async fn copy_both_ways<C, A>(
    client: &mut C,
    agent: &mut A,
    websocket: bool,
    idle: impl Future<Output = ()>,
    idle_timeout: Duration,
) -> SpliceEnd
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
        let mut frames = websocket.then(FrameTracker::default);
        // Set while a piece is being written to the client: a write the idle end cut short
        // leaves the client mid-frame, where no close frame may go.
        let mut writing = false;
        let copied = tokio::select! {
            copied = copy_down(&mut agent_read, &mut client_write, frames.as_mut(), &mut writing) => Some(copied),
            () = idle => None,
        };
        // The agent closed or vanished (its sandbox killed), or nothing moved: the client
        // learns which.
        if !writing && frames.as_ref().is_some_and(FrameTracker::may_close) {
            let frame = match copied {
                Some(_) => close_frame(AGENT_GONE_CODE, AGENT_GONE_REASON),
                None => close_frame(
                    AGENT_GONE_CODE,
                    &format!("{IDLE_REASON} for {} s", idle_timeout.as_secs()),
                ),
            };
            // A client that reads nothing does not hold the relay.
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, async {
                client_write.write_all(&frame).await?;
                client_write.flush().await
            })
            .await;
        }
        let _ = client_write.shutdown().await;
        copied
    };
    tokio::pin!(up, down);
    let (up_copied, down_copied) = tokio::select! {
        // The agent's side ended: the conversation is over, whatever the client still sends.
        copied = &mut down => (0, copied),
        // The client closed (or writing to the agent failed): the agent's answer still flows.
        up_copied = &mut up => (up_copied, down.await),
    };
    match down_copied {
        Some(copied) => SpliceEnd::Closed(copied.map(|copied| (up_copied, copied))),
        None => SpliceEnd::Idle,
    }
}

/// How long the relay tries to hand a client the close frame it adds.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Copies what the agent sends to the client until the agent's end, following its WebSocket
/// frames when `frames` is given; `writing` is set while a piece is being written. Returns
/// the bytes copied.
async fn copy_down<R, W>(
    agent: &mut R,
    client: &mut W,
    mut frames: Option<&mut FrameTracker>,
    writing: &mut bool,
) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut buf = vec![0u8; 16 * 1024];
    let mut copied = 0u64;
    loop {
        let n = agent.read(&mut buf).await?;
        if n == 0 {
            return Ok(copied);
        }
        if let Some(frames) = frames.as_deref_mut() {
            frames.feed(&buf[..n]);
        }
        *writing = true;
        client.write_all(&buf[..n]).await?;
        // A TLS stream holds what it was given until flushed.
        client.flush().await?;
        *writing = false;
        copied += n as u64;
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
        let splice = tokio::spawn(splice(client, agent, Duration::from_secs(30), false));
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

    /// An unmasked frame with `opcode` and `payload`, as a server sends it.
    fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        match payload.len() {
            n @ 0..=125 => out.push(n as u8),
            n @ 126..=0xffff => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn the_tracker_follows_frames_fed_in_any_pieces() {
        let mut stream = frame(0x2, b"hello");
        stream.extend(frame(0x2, &vec![7u8; 300]));
        stream.extend(frame(0x2, &vec![9u8; 70_000]));
        // A masked one too (a client's), with a 16-bit length.
        stream.extend([0x82, 0x80 | 126, 0x01, 0x00, 1, 2, 3, 4]);
        stream.extend(vec![0u8; 256]);
        for piece in [1, 2, 3, 7, 64, 4096, stream.len()] {
            let mut tracker = FrameTracker::default();
            for (i, chunk) in stream.chunks(piece).enumerate() {
                tracker.feed(chunk);
                let end = (i + 1) * piece;
                if end == 5 {
                    // In the middle of the first frame's payload.
                    assert!(!tracker.may_close(), "piece {piece}");
                }
            }
            assert!(tracker.may_close(), "piece {piece}");
            tracker.feed(&frame(0x8, &[0x03, 0xe8]));
            assert!(!tracker.may_close(), "a close frame passed");
        }
        let mut tracker = FrameTracker::default();
        tracker.feed(&stream[..stream.len() - 1]);
        assert!(!tracker.may_close());
    }

    #[tokio::test]
    async fn a_websocket_whose_agent_vanishes_gets_a_close_frame_and_one_that_closed_does_not() {
        for (agent_sends, expect_added) in [
            (frame(0x2, b"output"), true),
            (frame(0x8, &[0x03, 0xe8]), false),
            // Cut in the middle of a frame: nothing can be added.
            (frame(0x2, b"output")[..4].to_vec(), false),
        ] {
            let (client, mut client_peer) = duplex(1024);
            let (agent, mut agent_peer) = duplex(1024);
            let splice = tokio::spawn(splice(client, agent, Duration::from_secs(30), true));
            agent_peer.write_all(&agent_sends).await.unwrap();
            drop(agent_peer);
            let mut got = Vec::new();
            client_peer.read_to_end(&mut got).await.unwrap();
            let mut expected = agent_sends.clone();
            if expect_added {
                expected.extend(close_frame(AGENT_GONE_CODE, AGENT_GONE_REASON));
            }
            assert_eq!(got, expected);
            let ended = tokio::time::timeout(Duration::from_secs(5), splice).await;
            assert!(matches!(ended.unwrap().unwrap(), SpliceEnd::Closed(Ok(_))));
        }
    }

    #[tokio::test]
    async fn a_websocket_ended_by_the_idle_timeout_is_told_so() {
        let (client, mut client_peer) = duplex(1024);
        let (agent, mut agent_peer) = duplex(1024);
        let splice = tokio::spawn(splice(client, agent, Duration::from_millis(300), true));
        agent_peer.write_all(&frame(0x2, b"prompt")).await.unwrap();
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        let mut expected = frame(0x2, b"prompt");
        expected.extend(close_frame(
            AGENT_GONE_CODE,
            &format!("{IDLE_REASON} for 0 s"),
        ));
        assert_eq!(got, expected);
        let ended = tokio::time::timeout(Duration::from_secs(5), splice).await;
        assert!(matches!(ended.unwrap().unwrap(), SpliceEnd::Idle));
    }

    #[tokio::test]
    async fn a_client_that_stopped_reading_mid_frame_gets_no_close_frame_at_the_idle_end() {
        // The relay's write of a large frame stalls on a client that reads nothing.
        let (client, mut client_peer) = duplex(64);
        let (agent, mut agent_peer) = duplex(1 << 20);
        let splice = tokio::spawn(splice(client, agent, Duration::from_millis(300), true));
        let big = frame(0x2, &vec![7u8; 4096]);
        agent_peer.write_all(&big).await.unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), splice).await;
        assert!(matches!(ended.unwrap().unwrap(), SpliceEnd::Idle));
        let mut got = Vec::new();
        client_peer.read_to_end(&mut got).await.unwrap();
        assert!(got.len() < big.len(), "the frame was cut: {}", got.len());
        assert!(big.starts_with(&got), "nothing but the frame's start");
    }

    #[test]
    fn close_frames_are_well_formed() {
        let frame = close_frame(1001, "bye");
        assert_eq!(frame, [0x88, 5, 0x03, 0xe9, b'b', b'y', b'e']);
        assert_eq!(close_frame(1001, &"x".repeat(500)).len(), 2 + 125);
    }

    #[tokio::test]
    async fn a_quiet_splice_ends_after_the_idle_timeout_and_traffic_keeps_it() {
        let (client, mut client_peer) = duplex(1024);
        let (agent, mut agent_peer) = duplex(1024);
        let splice = tokio::spawn(splice(client, agent, Duration::from_millis(600), false));

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
