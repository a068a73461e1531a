//! The connection preface of an agent in container mode (`hutch agent --container`).
//!
//! An agent that listens on TCP (a pod's agent, reached over the cluster network) serves only
//! whoever knows its session's secret: before any HTTP, the client sends one line
//! `HUTCH-AGENT/1 <secret>\n` (at most [`MAX_BYTES`] bytes, within [`TIMEOUT`]); the agent
//! answers `OK\n` and then serves HTTP/1.1 on the same stream exactly as on its unix socket
//! (upgrades included), or answers `NO\n` and closes. The client waits for the answer before it
//! sends anything else.
//!
//! [`client_preface`] is the client side, for a runtime's `connect`; [`read_preface`] the
//! agent's side. Both live here, in the crate the server already depends on, so that a runtime
//! can speak to container-mode agents without depending on the agent.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the preface line starts with, the version of this protocol included.
pub const MAGIC: &[u8] = b"HUTCH-AGENT/1 ";

/// The longest preface line, its newline included.
pub const MAX_BYTES: usize = 512;

/// How long an agent waits for a connection's whole preface line before it closes it.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest secret an agent accepts, in bytes.
pub const SECRET_MIN_BYTES: usize = 32;

/// The longest secret: what fits in a preface line.
pub const SECRET_MAX_BYTES: usize = MAX_BYTES - MAGIC.len() - 1;

/// The agent's answer to a good preface.
pub const ACCEPTED: &[u8] = b"OK\n";

/// The agent's answer to a wrong one, just before it closes the connection.
pub const REFUSED: &[u8] = b"NO\n";

/// A session's agent credential: printable ASCII without spaces, [`SECRET_MIN_BYTES`] to
/// [`SECRET_MAX_BYTES`] long. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

/// Why a string is not a usable [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Shorter than [`SECRET_MIN_BYTES`].
    #[error("the agent's secret has {0} bytes; it needs at least {SECRET_MIN_BYTES}")]
    TooShort(usize),
    /// Longer than [`SECRET_MAX_BYTES`].
    #[error("the agent's secret has {0} bytes; it may have at most {SECRET_MAX_BYTES}")]
    TooLong(usize),
    /// It holds a space, a control character or a non-ASCII byte.
    #[error("the agent's secret may hold only printable ASCII characters other than space")]
    BadCharacter,
}

impl Secret {
    /// Takes `text` as a secret, without surrounding white space (a file's final newline).
    pub fn new(text: &str) -> Result<Secret, SecretError> {
        let text = text.trim();
        if text.len() < SECRET_MIN_BYTES {
            return Err(SecretError::TooShort(text.len()));
        }
        if text.len() > SECRET_MAX_BYTES {
            return Err(SecretError::TooLong(text.len()));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::BadCharacter);
        }
        Ok(Secret(text.to_owned()))
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, in time that does not depend on where they differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        // Only the length can be told apart by timing, and every secret of a deployment has
        // the same length.
        if given.len() != expected.len() {
            return false;
        }
        given
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// The client's side: sends the preface with `secret` on `stream` and waits for the agent's
/// answer. On `Ok`, `stream` carries HTTP/1.1 to the agent. A refusal is
/// [`io::ErrorKind::PermissionDenied`]; a closed stream or a garbled answer are other errors.
/// The caller bounds the wait (the agent answers at once).
pub async fn client_preface<S>(stream: &mut S, secret: &str) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut line = Vec::with_capacity(MAGIC.len() + secret.len() + 1);
    line.extend_from_slice(MAGIC);
    line.extend_from_slice(secret.as_bytes());
    line.push(b'\n');
    if line.len() > MAX_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the agent's secret is too long for a preface",
        ));
    }
    stream.write_all(&line).await?;
    stream.flush().await?;
    let mut answer = [0u8; 3];
    match stream.read_exact(&mut answer).await {
        Ok(_) if answer == ACCEPTED => Ok(()),
        Ok(_) if answer == REFUSED => Err(refused()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the agent answered the preface with something other than OK or NO",
        )),
        // The agent closes without an answer when the preface was too slow or too long.
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(refused()),
        Err(e) => Err(e),
    }
}

fn refused() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the agent refused the connection's credential",
    )
}

/// Why the agent's side refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum PrefaceError {
    /// The line does not start with [`MAGIC`].
    #[error("the connection did not start with a hutch agent preface")]
    NotAPreface,
    /// The secret is not the session's.
    #[error("wrong secret in the preface")]
    WrongSecret,
    /// No newline within [`MAX_BYTES`].
    #[error("preface longer than {MAX_BYTES} bytes")]
    TooLong,
    /// The peer closed before the line ended.
    #[error("the connection closed before its preface ended")]
    Closed,
    /// Reading failed.
    #[error("reading the preface: {0}")]
    Io(#[from] io::Error),
}

/// The agent's side: reads one preface line from `stream` and checks its secret against
/// `secret`. Returns the bytes that came after the line (a client that did not wait for the
/// answer), which belong to the HTTP that follows. Writes no answer: the caller answers
/// [`ACCEPTED`] or [`REFUSED`], and bounds the whole read by [`TIMEOUT`].
pub async fn read_preface<S>(stream: &mut S, secret: &Secret) -> Result<Vec<u8>, PrefaceError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut buf = [0u8; MAX_BYTES];
    let mut got = 0;
    let end = loop {
        let n = stream.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(PrefaceError::Closed);
        }
        let before = got;
        got += n;
        // Refuse early what cannot be a preface, without waiting for more.
        let seen = got.min(MAGIC.len());
        if buf[..seen] != MAGIC[..seen] {
            return Err(PrefaceError::NotAPreface);
        }
        if let Some(at) = buf[before..got].iter().position(|b| *b == b'\n') {
            break before + at;
        }
        if got == MAX_BYTES {
            return Err(PrefaceError::TooLong);
        }
    };
    if end < MAGIC.len() {
        return Err(PrefaceError::NotAPreface);
    }
    if !secret.matches(&buf[MAGIC.len()..end]) {
        return Err(PrefaceError::WrongSecret);
    }
    Ok(buf[end + 1..got].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secrets_are_long_printable_and_trimmed() {
        assert_eq!(Secret::new(&format!("{GOOD}\n")).unwrap().expose(), GOOD);
        assert_eq!(Secret::new("short"), Err(SecretError::TooShort(5)));
        assert_eq!(
            Secret::new(&"x".repeat(SECRET_MAX_BYTES + 1)),
            Err(SecretError::TooLong(SECRET_MAX_BYTES + 1))
        );
        assert!(Secret::new(&"x".repeat(SECRET_MAX_BYTES)).is_ok());
        assert_eq!(
            Secret::new(&format!("{GOOD} {GOOD}")),
            Err(SecretError::BadCharacter)
        );
        assert_eq!(
            Secret::new(&format!("{GOOD}é")),
            Err(SecretError::BadCharacter)
        );
        assert!(!format!("{:?}", Secret::new(GOOD).unwrap()).contains(GOOD));
    }

    #[test]
    fn only_the_same_secret_matches() {
        let secret = Secret::new(GOOD).unwrap();
        assert!(secret.matches(GOOD.as_bytes()));
        assert!(!secret.matches(&GOOD.as_bytes()[1..]));
        assert!(!secret.matches(GOOD.to_uppercase().as_bytes()));
        assert!(!secret.matches(b""));
    }

    async fn server_reads(sent: &[u8]) -> Result<Vec<u8>, PrefaceError> {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(sent).await.unwrap();
        drop(client);
        read_preface(&mut server, &Secret::new(GOOD).unwrap()).await
    }

    #[tokio::test]
    async fn the_agent_side_accepts_only_a_well_formed_line_with_the_secret() {
        let line = format!("HUTCH-AGENT/1 {GOOD}\n");
        assert_eq!(server_reads(line.as_bytes()).await.unwrap(), b"");
        let pipelined = format!("{line}GET / HTTP/1.1\r\n");
        assert_eq!(
            server_reads(pipelined.as_bytes()).await.unwrap(),
            b"GET / HTTP/1.1\r\n",
            "what follows the line is handed on"
        );
        assert!(matches!(
            server_reads(format!("HUTCH-AGENT/1 {GOOD}x\n").as_bytes()).await,
            Err(PrefaceError::WrongSecret)
        ));
        assert!(matches!(
            server_reads(b"GET / HTTP/1.1\r\n").await,
            Err(PrefaceError::NotAPreface)
        ));
        assert!(matches!(
            server_reads(b"HUTCH-AGENT/1\n").await,
            Err(PrefaceError::NotAPreface)
        ));
        assert!(matches!(
            server_reads(format!("HUTCH-AGENT/1 {GOOD}").as_bytes()).await,
            Err(PrefaceError::Closed)
        ));
        let long = format!("HUTCH-AGENT/1 {}\n", "x".repeat(MAX_BYTES));
        assert!(matches!(
            server_reads(long.as_bytes()).await,
            Err(PrefaceError::TooLong)
        ));
    }

    #[tokio::test]
    async fn the_client_side_reports_the_answer() {
        for (answer, kind) in [
            (&b"OK\n"[..], None),
            (b"NO\n", Some(io::ErrorKind::PermissionDenied)),
            (b"", Some(io::ErrorKind::PermissionDenied)),
            (b"HTTP/1.1 400", Some(io::ErrorKind::InvalidData)),
        ] {
            let (mut client, mut server) = tokio::io::duplex(4096);
            server.write_all(answer).await.unwrap();
            let agent = tokio::spawn(async move {
                let got = read_preface(&mut server, &Secret::new(GOOD).unwrap()).await;
                drop(server);
                got
            });
            let result = client_preface(&mut client, GOOD).await;
            assert_eq!(result.err().map(|e| e.kind()), kind, "answer {answer:?}");
            assert_eq!(agent.await.unwrap().unwrap(), b"", "the line it sent");
        }
        let (mut client, _server) = tokio::io::duplex(4096);
        let too_long = "x".repeat(SECRET_MAX_BYTES + 1);
        assert_eq!(
            client_preface(&mut client, &too_long)
                .await
                .unwrap_err()
                .kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
