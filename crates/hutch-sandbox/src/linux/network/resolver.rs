//! The resolver of a networked sandbox: a small DNS forwarder on its gateway's port 53.
//!
//! It answers what the sandbox's policy allows and nothing else. A question for a name the
//! policy refuses gets `REFUSED` at once; a question for IPv6 addresses (AAAA) gets an empty
//! answer (sessions have no IPv6); an allowed question goes to the server's upstream DNS
//! server, and under `egress: allow` the A records of its answer are admitted into the
//! sandbox's `dns` set (for their TTL plus a grace period) before the answer is passed on, so
//! the connection that follows finds the address open. The sandbox cannot widen its policy
//! by asking another server: the filter admits only what this resolver answered.
//!
//! One socket per sandbox, bound to its gateway address, tells sandboxes apart without
//! trusting source addresses. UDP only: a truncated answer makes the client retry over TCP,
//! which the filter refuses; answers of allowed names fit in UDP in practice.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hutch_api::network::{Egress, ParsedPolicy};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;

use super::dns;
use super::net_err;
use super::rules::Admitter;
use crate::SandboxError;
use crate::linux::keepers::LocalHold;

/// Record type AAAA (IPv6 address).
const TYPE_AAAA: u16 = 28;
/// Most questions of one sandbox in flight at once; more are dropped (the client retries).
const MAX_IN_FLIGHT: usize = 64;
/// How long the upstream server has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A running resolver; stops when told to.
pub(crate) struct ResolverHandle {
    task: tokio::task::AbortHandle,
}

impl ResolverHandle {
    /// Stops serving and closes the socket.
    pub(crate) fn stop(&self) {
        self.task.abort();
    }
}

/// The resolver's socket, and the sandbox's local lock: released only once the socket is
/// closed (fields drop in order), so that no other process frees the gateway address while
/// this socket is still bound to it.
struct Bound {
    socket: UdpSocket,
    _hold: LocalHold,
}

/// Starts the resolver of a sandbox on `gateway`:53, holding `hold` until its socket is
/// closed. Needs a tokio runtime context.
pub(super) fn start(
    gateway: Ipv4Addr,
    upstream: SocketAddr,
    policy: Arc<RwLock<ParsedPolicy>>,
    admitter: Admitter,
    hold: LocalHold,
) -> Result<ResolverHandle, SandboxError> {
    let socket = std::net::UdpSocket::bind((gateway, 53))
        .and_then(|s| s.set_nonblocking(true).map(|()| s))
        .map_err(|e| net_err(format!("binding the resolver to {gateway}:53: {e}")))?;
    let runtime = tokio::runtime::Handle::try_current().map_err(net_err)?;
    let task = runtime.spawn(async move {
        let socket = match UdpSocket::from_std(socket) {
            Ok(socket) => Arc::new(Bound {
                socket,
                _hold: hold,
            }),
            Err(e) => {
                tracing::error!(error = %e, "session resolver could not start");
                return;
            }
        };
        serve(socket, upstream, policy, admitter).await;
    });
    Ok(ResolverHandle {
        task: task.abort_handle(),
    })
}

async fn serve(
    bound: Arc<Bound>,
    upstream: SocketAddr,
    policy: Arc<RwLock<ParsedPolicy>>,
    admitter: Admitter,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, from) = match bound.socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!(error = %e, "session resolver receive failed");
                continue;
            }
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (bound, policy, admitter) = (bound.clone(), policy.clone(), admitter.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, upstream, &policy, &admitter).await {
                let _ = bound.socket.send_to(&reply, from).await;
            }
            drop(permit);
        });
    }
}

/// Whether the policy lets the sandbox resolve `name`.
fn name_allowed(policy: &ParsedPolicy, name: &str) -> bool {
    match policy.egress {
        Egress::None => false,
        Egress::Allow => policy.allow.matches_name(name) && !policy.deny.matches_name(name),
        Egress::All => !policy.deny.matches_name(name),
    }
}

/// The reply to one query; `None` for what is not a query at all.
async fn answer(
    query: &[u8],
    upstream: SocketAddr,
    policy: &RwLock<ParsedPolicy>,
    admitter: &Admitter,
) -> Option<Vec<u8>> {
    let q = dns::question(query)?;
    let (allowed, egress) = {
        let p = policy.read().unwrap_or_else(|e| e.into_inner());
        (name_allowed(&p, &q.name), p.egress)
    };
    if !allowed {
        return Some(dns::empty_reply(query, &q, dns::REFUSED));
    }
    if q.qtype == TYPE_AAAA {
        return Some(dns::empty_reply(query, &q, dns::NO_ERROR));
    }
    let Some(reply) = ask_upstream(query, upstream).await else {
        return Some(dns::empty_reply(query, &q, dns::SERVER_FAILURE));
    };
    if egress == Egress::Allow
        && let Err(e) = admitter.admit(&dns::a_records(&reply)).await
    {
        tracing::warn!(error = %e, name = %q.name, "admitting resolved addresses failed");
        return Some(dns::empty_reply(query, &q, dns::SERVER_FAILURE));
    }
    Some(reply)
}

/// Sends `query` to `upstream` and waits for the reply with the same id.
async fn ask_upstream(query: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind(("0.0.0.0", 0)).await.ok()?;
    socket.connect(upstream).await.ok()?;
    socket.send(query).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    loop {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n >= 12 && buf[..2] == query[..2] {
            return Some(buf[..n].to_vec());
        }
    }
}
