//! Streamed commands, processes, terminals and code runs.
//!
//! Streams are WebSockets: [`HutchClient::stream_command`] sends the command as the first
//! message and yields [`ProcessEvent`]s; [`HutchClient::attach_process`] reattaches to a
//! running or finished process from a sequence number; [`HutchClient::open_terminal`] opens a
//! terminal whose binary messages are terminal bytes.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Method;
use hutch_api::processes::{PtyControl, StreamControl, base64};
use hutch_api::{
    CodeRequest, CommandRequest, CommandResult, ProcessEvent, ProcessInfo, ProcessList,
    SignalRequest, SignalSpec, StartedProcess,
};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use uuid::Uuid;

use crate::{ClientError, HutchClient, error_from};

/// A WebSocket to the server.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What a process stream yields: an event, with output already decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    /// Any event but output (`start`, `truncated`, `exit`, `error`).
    Event(ProcessEvent),
    /// A chunk of output.
    Output {
        /// Its sequence number.
        seq: u64,
        /// Whether it is standard error.
        stderr: bool,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// The events of one process, over a WebSocket; standard input goes the other way.
pub struct ProcessStream {
    socket: Socket,
}

impl std::fmt::Debug for ProcessStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStream").finish_non_exhaustive()
    }
}

impl ProcessStream {
    /// The next text message; `None` once the server closed the stream.
    async fn next_text(&mut self) -> Option<Result<Utf8Bytes, ClientError>> {
        loop {
            let message = match self.socket.next().await? {
                Ok(message) => message,
                Err(e) => return Some(Err(ClientError::WebSocket(Box::new(e)))),
            };
            match message {
                Message::Text(text) => return Some(Ok(text)),
                Message::Close(_) => {
                    // Completes the closing handshake (the reply is queued by now).
                    let _ = self.socket.flush().await;
                    return None;
                }
                _ => {}
            }
        }
    }

    /// The next event as sent; `None` once the server closed the stream.
    pub async fn next_event(&mut self) -> Option<Result<ProcessEvent, ClientError>> {
        Some(self.next_text().await?.and_then(|text| parse_event(&text)))
    }

    /// The next event with output decoded.
    pub async fn next(&mut self) -> Option<Result<StreamItem, ClientError>> {
        let text = match self.next_text().await? {
            Ok(text) => text,
            Err(e) => return Some(Err(e)),
        };
        // Output, most of what a stream carries, is decoded without copying its base64.
        if let Ok(probe) = serde_json::from_str::<OutputProbe<'_>>(&text)
            && let (Some(seq), Some(data)) = (probe.seq, probe.data)
            && matches!(probe.kind, "stdout" | "stderr")
        {
            return Some(match base64::decode(data) {
                Some(data) => Ok(StreamItem::Output {
                    seq,
                    stderr: probe.kind == "stderr",
                    data,
                }),
                None => Err(ClientError::Protocol(format!("chunk {seq} is not base64"))),
            });
        }
        Some(parse_event(&text).map(StreamItem::Event))
    }

    /// Writes bytes to the process's standard input.
    pub async fn write_stdin(&mut self, data: &[u8]) -> Result<(), ClientError> {
        self.socket
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .map_err(|e| ClientError::WebSocket(Box::new(e)))
    }

    /// Closes the process's standard input.
    pub async fn close_stdin(&mut self) -> Result<(), ClientError> {
        let text = serde_json::to_string(&StreamControl::Eof).map_err(ClientError::Encode)?;
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| ClientError::WebSocket(Box::new(e)))
    }

    /// Leaves the stream (the process runs on).
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The fields of an output event, borrowed from the message.
#[derive(serde::Deserialize)]
struct OutputProbe<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    seq: Option<u64>,
    data: Option<&'a str>,
}

fn parse_event(text: &str) -> Result<ProcessEvent, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::Protocol(format!("bad event {text}: {e}")))
}

/// A terminal, over a WebSocket.
pub struct Terminal {
    /// The socket: binary messages are terminal bytes both ways; the server ends with a text
    /// `exit` event.
    pub socket: Socket,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal").finish_non_exhaustive()
    }
}

/// The message that resizes a terminal.
pub fn resize_message(cols: u16, rows: u16) -> Message {
    let text = serde_json::to_string(&PtyControl::Resize { cols, rows }).unwrap_or_default();
    Message::Text(text.into())
}

impl HutchClient {
    /// Opens a WebSocket to `path` (which may carry a query) with the token.
    pub async fn websocket(&self, path: &str) -> Result<Socket, ClientError> {
        let url = format!("ws://{}{path}", self.base.trim_start_matches("http://"));
        let mut request =
            url.as_str()
                .into_client_request()
                .map_err(|e| ClientError::InvalidUrl {
                    url: url.clone(),
                    reason: e.to_string(),
                })?;
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, self.auth.clone());
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        match tokio_tungstenite::connect_async_with_config(request, Some(config), true).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                let (parts, body) = response.into_parts();
                Err(error_from(
                    parts.status,
                    body.as_deref().unwrap_or_default(),
                ))
            }
            Err(tokio_tungstenite::tungstenite::Error::Io(e)) => Err(self.connect_error(&e)),
            Err(e) => Err(ClientError::WebSocket(Box::new(e))),
        }
    }

    /// WS `/v1/sessions/{id}/commands/stream`: starts a command and streams its events.
    pub async fn stream_command(
        &self,
        id: Uuid,
        req: &CommandRequest,
    ) -> Result<ProcessStream, ClientError> {
        let mut socket = self
            .websocket(&format!("/v1/sessions/{id}/commands/stream"))
            .await?;
        let text = serde_json::to_string(req).map_err(ClientError::Encode)?;
        socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|e| ClientError::WebSocket(Box::new(e)))?;
        Ok(ProcessStream { socket })
    }

    /// WS `/v1/sessions/{id}/processes/{pid}/stream?from=SEQ`: reattaches to a process.
    pub async fn attach_process(
        &self,
        id: Uuid,
        pid: i32,
        from: u64,
    ) -> Result<ProcessStream, ClientError> {
        let socket = self
            .websocket(&format!(
                "/v1/sessions/{id}/processes/{pid}/stream?from={from}"
            ))
            .await?;
        Ok(ProcessStream { socket })
    }

    /// WS `/v1/sessions/{id}/pty`: a terminal running `command` (default: a login shell).
    pub async fn open_terminal(
        &self,
        id: Uuid,
        cols: u16,
        rows: u16,
        command: Option<&str>,
    ) -> Result<Terminal, ClientError> {
        let mut path = format!("/v1/sessions/{id}/pty?cols={cols}&rows={rows}");
        if let Some(command) = command {
            path.push_str("&command=");
            path.push_str(&percent_encode(command));
        }
        Ok(Terminal {
            socket: self.websocket(&path).await?,
        })
    }

    /// `POST /v1/sessions/{id}/commands` with `background: true`.
    pub async fn start_process(
        &self,
        id: Uuid,
        req: &CommandRequest,
    ) -> Result<StartedProcess, ClientError> {
        let req = CommandRequest {
            background: Some(true),
            ..req.clone()
        };
        self.call(
            Method::POST,
            &format!("/v1/sessions/{id}/commands"),
            Some(&req),
        )
        .await
    }

    /// `GET /v1/sessions/{id}/processes`.
    pub async fn list_processes(&self, id: Uuid) -> Result<ProcessList, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/sessions/{id}/processes"),
            None::<&()>,
        )
        .await
    }

    /// `GET /v1/sessions/{id}/processes/{pid}`.
    pub async fn get_process(&self, id: Uuid, pid: i32) -> Result<ProcessInfo, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/sessions/{id}/processes/{pid}"),
            None::<&()>,
        )
        .await
    }

    /// `DELETE /v1/sessions/{id}/processes/{pid}`: kills the whole tree.
    pub async fn kill_process(&self, id: Uuid, pid: i32) -> Result<ProcessInfo, ClientError> {
        self.call(
            Method::DELETE,
            &format!("/v1/sessions/{id}/processes/{pid}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/sessions/{id}/processes/{pid}/signal`.
    pub async fn signal_process(
        &self,
        id: Uuid,
        pid: i32,
        signal: SignalSpec,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&SignalRequest { signal }).map_err(ClientError::Encode)?;
        self.expect_empty(
            Method::POST,
            &format!("/v1/sessions/{id}/processes/{pid}/signal"),
            Bytes::from(body),
        )
        .await
    }

    /// `POST /v1/sessions/{id}/processes/{pid}/stdin?eof=`: writes raw bytes.
    pub async fn write_process_stdin(
        &self,
        id: Uuid,
        pid: i32,
        data: Vec<u8>,
        eof: bool,
    ) -> Result<(), ClientError> {
        self.expect_empty(
            Method::POST,
            &format!("/v1/sessions/{id}/processes/{pid}/stdin?eof={eof}"),
            Bytes::from(data),
        )
        .await
    }

    /// `POST /v1/sessions/{id}/code`: runs a snippet in a fresh process.
    pub async fn run_code(
        &self,
        id: Uuid,
        req: &CodeRequest,
    ) -> Result<CommandResult, ClientError> {
        self.call(Method::POST, &format!("/v1/sessions/{id}/code"), Some(req))
            .await
    }

    async fn expect_empty(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<(), ClientError> {
        let (status, bytes) = self.send(method, path, Some(body), true).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(error_from(status, &bytes))
        }
    }
}

/// Percent-encodes a query value or a path segment.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("python3 -i"), "python3%20-i");
        assert_eq!(percent_encode("a&b=c"), "a%26b%3Dc");
    }
}
