//! The container-mode agent's connection preface, client side.
//!
//! Before HTTP, the client sends `HUTCH-AGENT/1 <secret>\n` and the agent answers `OK\n`;
//! plain HTTP/1.1 follows on the same stream.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest answer the agent may give to the preface (`OK\n`, or a short refusal).
const MAX_ANSWER: usize = 256;

/// Sends the preface with `secret` on `stream` and reads the agent's answer up to its newline
/// (never past it, so the HTTP that follows is untouched). Fails unless the answer is `OK`.
pub async fn client_preface<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &str,
) -> std::io::Result<()> {
    stream
        .write_all(format!("HUTCH-AGENT/1 {secret}\n").as_bytes())
        .await?;
    stream.flush().await?;
    let mut answer = Vec::with_capacity(8);
    loop {
        let byte = stream.read_u8().await?;
        if byte == b'\n' {
            break;
        }
        if answer.len() >= MAX_ANSWER {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "agent answered the preface with an overlong line",
            ));
        }
        answer.push(byte);
    }
    if answer == b"OK" {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "agent refused the preface: {}",
                String::from_utf8_lossy(&answer)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ok_passes_and_anything_else_is_refused() {
        let (mut ours, mut theirs) = tokio::io::duplex(64);
        let agent = tokio::spawn(async move {
            let mut line = vec![0; 21];
            theirs.read_exact(&mut line).await.unwrap();
            theirs.write_all(b"OK\nHTTP").await.unwrap();
            line
        });
        client_preface(&mut ours, "s3cret").await.unwrap();
        assert_eq!(agent.await.unwrap(), b"HUTCH-AGENT/1 s3cret\n");
        // The bytes after `OK\n` are left for HTTP.
        let mut rest = [0; 4];
        ours.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HTTP");

        let (mut ours, mut theirs) = tokio::io::duplex(64);
        tokio::spawn(async move { theirs.write_all(b"NO bad secret\n").await });
        let err = client_preface(&mut ours, "x").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied);

        let (mut ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        assert!(client_preface(&mut ours, "x").await.is_err());
    }
}
