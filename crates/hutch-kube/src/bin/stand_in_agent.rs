//! A stand-in for `hutch agent --container` (which the stand-in kubelet runs as
//! `/hutch/hutch agent --container --listen ADDR`) for the runtime's own tests: it reads the
//! session's credential from `HUTCH_AGENT_TOKEN_FILE`, refuses connections whose preface does
//! not carry it, and answers one HTTP request per connection with `200` and the session's
//! hostname (from `HUTCH_SESSION_HOSTNAME`).

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "0.0.0.0:7171".to_owned());
    let token = match std::env::var("HUTCH_AGENT_TOKEN_FILE") {
        Ok(path) => std::fs::read_to_string(path)?,
        Err(_) => std::env::var("HUTCH_AGENT_TOKEN").unwrap_or_default(),
    };
    if token.len() < 32 {
        return Err(std::io::Error::other("no credential of at least 32 bytes"));
    }
    let hostname = std::env::var("HUTCH_SESSION_HOSTNAME").unwrap_or_default();
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let token = token.clone();
        let hostname = hostname.clone();
        tokio::spawn(async move {
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await?;
            if line != format!("HUTCH-AGENT/1 {token}\n") {
                return stream.get_mut().write_all(b"NO\n").await;
            }
            stream.get_mut().write_all(b"OK\n").await?;
            // One request: its head, then a fixed answer.
            loop {
                line.clear();
                if stream.read_line(&mut line).await? == 0 || line == "\r\n" {
                    break;
                }
            }
            let body = format!("{{\"hostname\":\"{hostname}\"}}");
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            stream.get_mut().write_all(answer.as_bytes()).await
        });
    }
}
