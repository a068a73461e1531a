//! Serving HTTP/1.1 connections within bounds: an accept loop of our own over hyper.
//!
//! Every accepted connection is admitted only while the server holds fewer than
//! [`ConnectionLimits::max_connections`] connections in all and fewer than
//! [`ConnectionLimits::max_per_client`] from the client's IP address; past either bound it gets
//! a short error answer (503 `capacity` or 429 `rate_limited`, in the error envelope) and is
//! closed, at once, without a task of its own beyond that write. An admitted connection must
//! deliver each request's whole head within [`ConnectionLimits::header_timeout`], counted from
//! the end of the previous request on a kept-alive connection: the same bound ends a client
//! that sends half a header and a connection left idle between requests. An upgraded
//! connection (a WebSocket) keeps its place until the proxy's splice ends, which bounds its
//! idleness (see `proxy`).
//!
//! Shutdown stops accepting, lets every admitted connection finish the request it is in (an
//! idle one closes at once), and returns when none is left.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use axum::serve::Listener;
use hutch_api::{ErrorBody, ErrorCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};

/// Most connections held at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 8192;
/// Most connections held at once from one IP address by default.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
/// How long a client may take to send a request's head by default (and to start the next one
/// on a kept-alive connection).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the short answer to a refused connection may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long what a refused client still sends is read and dropped after the answer, so that
/// closing with unread bytes (a reset, which may destroy the answer in flight) is rare.
const REFUSAL_LINGER: Duration = Duration::from_millis(200);

/// Bounds on the connections a server holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Most connections held at once; past it, new ones get 503 `capacity` and are closed.
    pub max_connections: usize,
    /// Most connections held at once from one IP address; past it, new ones from that address
    /// get 429 `rate_limited` and are closed.
    pub max_per_client: usize,
    /// Time to receive a request's whole head, counted from the connection's start or the
    /// end of its previous request.
    pub header_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }
}

/// The connections held, in all and per client address.
#[derive(Debug, Default)]
struct Held {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

/// Admission of connections against [`ConnectionLimits`].
#[derive(Debug)]
struct Admission {
    limits: ConnectionLimits,
    held: Mutex<Held>,
    /// Notified each time a connection ends.
    released: Notify,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The server holds its maximum.
    Full,
    /// This client holds its maximum.
    ClientFull,
}

impl Admission {
    fn new(limits: ConnectionLimits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            held: Mutex::new(Held::default()),
            released: Notify::new(),
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        // Every critical section is a counter update: a poisoned lock still holds valid counts.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a connection from `client`, or says why not.
    fn admit(self: &Arc<Self>, client: IpAddr) -> Result<Admitted, Refusal> {
        let mut held = self.held();
        if held.total >= self.limits.max_connections {
            return Err(Refusal::Full);
        }
        let from_client = held.per_client.entry(client).or_insert(0);
        if *from_client >= self.limits.max_per_client {
            return Err(Refusal::ClientFull);
        }
        *from_client += 1;
        held.total += 1;
        Ok(Admitted {
            admission: Arc::clone(self),
            client,
        })
    }

    /// Connections held now.
    fn total(&self) -> usize {
        self.held().total
    }

    /// Completes once no connection is held.
    async fn idle(&self) {
        loop {
            let released = self.released.notified();
            if self.total() == 0 {
                return;
            }
            released.await;
        }
    }
}

/// A client connection's place in the bounds, carried in each of its requests' extensions: a
/// handler that takes the connection over (an upgrade) keeps a clone for as long as it uses
/// it, so the place is given back only when the connection really ends.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionSlot {
    _place: Arc<Admitted>,
}

/// One admitted connection; its place is given back when this is dropped.
#[derive(Debug)]
struct Admitted {
    admission: Arc<Admission>,
    client: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        {
            let mut held = self.admission.held();
            held.total = held.total.saturating_sub(1);
            if let Some(count) = held.per_client.get_mut(&self.client) {
                *count -= 1;
                if *count == 0 {
                    held.per_client.remove(&self.client);
                }
            }
        }
        self.admission.released.notify_waiters();
    }
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then lets admitted
/// connections finish their requests and returns when none is left.
pub(crate) async fn serve<L>(
    mut listener: L,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: Listener<Addr = SocketAddr>,
{
    let admission = Admission::new(limits);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let (stopping_tx, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let admitted = match admission.admit(peer.ip()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                tracing::debug!(%peer, ?refusal, "connection refused");
                tokio::spawn(refuse(io, refusal));
                continue;
            }
        };
        let slot = ConnectionSlot {
            _place: Arc::new(admitted),
        };
        let router = TowerToHyperService::new(app.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(slot.clone());
            hyper::service::Service::call(&router, req)
        });
        let connection = http
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = result {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stopping_tx.send(true);
    admission.idle().await;
}

/// Writes the short answer to a refused connection and closes it.
async fn refuse(mut io: impl AsyncRead + AsyncWrite + Unpin, refusal: Refusal) {
    let answer = refusal_answer(refusal);
    let written = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
        io.write_all(&answer).await?;
        io.shutdown().await
    })
    .await;
    if let Ok(Ok(())) = written {
        let mut sink = [0u8; 4096];
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            while let Ok(1..) = io.read(&mut sink).await {}
        })
        .await;
    }
}

/// The whole HTTP/1.1 answer to a refused connection, in the error envelope.
fn refusal_answer(refusal: Refusal) -> Vec<u8> {
    let (code, message, retry_after) = match refusal {
        Refusal::Full => (
            ErrorCode::Capacity,
            "the server holds as many connections as it may; retry later",
            None,
        ),
        Refusal::ClientFull => (
            ErrorCode::RateLimited,
            "this client holds as many connections as one client may; close some and retry",
            Some(1),
        ),
    };
    let body = serde_json::to_string(&ErrorBody::new(code, message)).unwrap_or_default();
    let status = code.status();
    let reason = match status {
        429 => "Too Many Requests",
        _ => "Service Unavailable",
    };
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n{}: {}\r\n\
         connection: close\r\ncontent-length: {}\r\n",
        hutch_api::error::ERROR_CODE_HEADER,
        code.as_str(),
        body.len()
    );
    if let Some(seconds) = retry_after {
        head.push_str(&format!("retry-after: {seconds}\r\n"));
    }
    head.push_str("\r\n");
    head.push_str(&body);
    head.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_per_client: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            max_per_client,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }

    #[test]
    fn each_client_and_the_whole_server_are_bounded() {
        let admission = Admission::new(limits(3, 2));
        let (a, b, c): (IpAddr, IpAddr, IpAddr) = (
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            "192.0.2.3".parse().unwrap(),
        );
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::ClientFull);
        let _third = admission.admit(b).unwrap();
        assert_eq!(admission.admit(c).unwrap_err(), Refusal::Full);
        drop(first);
        assert_eq!(admission.total(), 2);
        let _again = admission.admit(c).unwrap();
        assert_eq!(admission.admit(a).unwrap_err(), Refusal::Full);
    }

    #[test]
    fn a_client_with_no_connection_left_is_forgotten() {
        let admission = Admission::new(limits(10, 10));
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        drop(admission.admit(client).unwrap());
        assert!(admission.held().per_client.is_empty());
        assert_eq!(admission.total(), 0);
    }

    #[test]
    fn refusals_answer_in_the_error_envelope() {
        let answer = String::from_utf8(refusal_answer(Refusal::ClientFull)).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 429 Too Many Requests\r\n"),
            "{answer}"
        );
        assert!(answer.contains("retry-after: 1\r\n"));
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let body: ErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(body.error.code, ErrorCode::RateLimited);
        let full = String::from_utf8(refusal_answer(Refusal::Full)).unwrap();
        assert!(
            full.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{full}"
        );
        assert!(full.contains("x-hutch-error-code: capacity\r\n"));
    }
}
