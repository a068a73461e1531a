//! The connection preface an agent in container mode reads before any HTTP, from whoever
//! reaches its TCP port.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hutch_sandbox::preface::{MAGIC, MAX_BYTES, PrefaceError, Secret, read_preface};
use tokio::io::{AsyncRead, ReadBuf};

/// The secret the target checks against; the corpus's accepted line carries it.
const SECRET: &str = "hutch-fuzz-preface-secret-0123456789abcdef";

/// Hands out the pieces of [`crate::cut`] one read at a time, then end of stream.
struct Pieces(std::collections::VecDeque<Vec<u8>>);

impl AsyncRead for Pieces {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(mut piece) = self.0.pop_front() {
            let n = piece.len().min(buf.remaining());
            buf.put_slice(&piece[..n]);
            if n < piece.len() {
                self.0.push_front(piece.split_off(n));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// The bytes, however a socket cuts them, are accepted only when they start with the preface
/// line carrying the secret, and then what followed the line is handed on unchanged; a refusal
/// for length means no newline within the bound.
pub(crate) fn agent_preface(data: &[u8]) {
    let secret = Secret::new(SECRET).unwrap();
    let mut reader = Pieces(crate::cut(data).into());
    let result = crate::runtime().block_on(read_preface(&mut reader, &secret));
    let line = [MAGIC, SECRET.as_bytes(), b"\n"].concat();
    match result {
        Ok(rest) => {
            assert!(data.starts_with(&line), "accepted without the secret");
            assert!(
                data[line.len()..].starts_with(&rest),
                "bytes after the line changed"
            );
            assert!(line.len() + rest.len() <= MAX_BYTES, "read past the bound");
        }
        Err(PrefaceError::TooLong) => {
            assert!(
                !data[..MAX_BYTES].contains(&b'\n'),
                "refused a line within the bound"
            );
        }
        Err(_) => assert!(!data.starts_with(&line), "refused the right line"),
    }
}
