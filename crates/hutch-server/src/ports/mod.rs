//! Ports from outside: HTTP and WebSocket traffic relayed to a port a process listens on
//! inside a session, and signed preview links that open one port in a browser.
//!
//! Three ways in, all relayed by [`relay`] through the session's agent (so they work whatever
//! the session's network, none included):
//!
//! | form | route | credential |
//! |---|---|---|
//! | API | `/v1/sessions/{id}/ports/{port}/…` | the bearer token |
//! | path link | `/preview/{token}/…` | the link's token, in the path |
//! | host link | `{port}-{id}.{preview domain}/…` | the link's token, first in the query, then in a cookie of that host |
//!
//! A link comes from `POST /v1/sessions/{id}/ports/{port}/link` ([`link`] signs and checks
//! it). `GET /v1/sessions/{id}/ports`, the list of listening ports, is the agent's own route.
//! [`connections`] bounds the connections relayed into one session at once; [`traffic`]
//! counts what crosses each session's ports, for `/metrics`.

mod connections;
pub(crate) mod host;
pub(crate) mod link;
mod relay;
pub(crate) mod routes;
pub(crate) mod traffic;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use uuid::Uuid;

use crate::error::ApiError;
use connections::{ConnectionSlot, Connections};
use link::LinkSigner;
use traffic::{PortCounters, SessionTraffic, Traffic};

/// The name of the cookie that carries a host link's token on its preview host.
pub(crate) const COOKIE: &str = "hutch_preview";
/// The query parameter that carries a host link's token on its first visit.
pub(crate) const TOKEN_PARAM: &str = "hutch_preview_token";

/// How ports are reached from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsConfig {
    /// The domain of host-based preview links (`{port}-{sessionId}.{domain}`); `None` turns
    /// them off (path links still work).
    pub preview_domain: Option<String>,
    /// Most connections relayed into one session's ports at once.
    pub max_connections: usize,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            preview_domain: None,
            max_connections: hutch_api::limits::PORT_CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// What the port routes share.
#[derive(Debug)]
pub(crate) struct Ports {
    /// Signs and checks preview links.
    pub(crate) signer: LinkSigner,
    /// The preview domain, lower case, without dots at either end.
    pub(crate) domain: Option<String>,
    /// Open relayed connections per session.
    connections: Arc<Connections>,
    /// What crossed each session's ports.
    traffic: Traffic,
    /// Whether the server serves HTTPS (links are `https://` then, and cookies `Secure`).
    https: AtomicBool,
}

impl Ports {
    /// The ports' state for `config`, signing links with a key derived from `secret`.
    pub(crate) fn new(config: &PortsConfig, secret: &[u8]) -> Self {
        let domain = config
            .preview_domain
            .as_deref()
            .map(|d| d.trim_matches('.').to_ascii_lowercase())
            .filter(|d| !d.is_empty());
        Ports {
            signer: LinkSigner::new(secret),
            domain,
            connections: Connections::new(config.max_connections),
            traffic: Traffic::default(),
            https: AtomicBool::new(false),
        }
    }

    /// Records that the server serves HTTPS.
    pub(crate) fn set_https(&self) {
        self.https.store(true, Ordering::Release);
    }

    /// Whether the server serves HTTPS.
    pub(crate) fn https(&self) -> bool {
        self.https.load(Ordering::Acquire)
    }

    /// A slot for one more connection into `session`, or 429 when it has its maximum open;
    /// either is counted on the session's traffic.
    pub(crate) fn slot(&self, session: Uuid) -> Result<PortSlot, ApiError> {
        let traffic = self.traffic.of(session);
        match self.connections.acquire(session) {
            Some(connection) => {
                traffic.relayed();
                Ok(PortSlot {
                    _connection: connection,
                    traffic,
                })
            }
            None => {
                traffic.refused();
                Err(ApiError::PortConnections {
                    id: session,
                    limit: self.connections.limit(),
                })
            }
        }
    }

    /// The traffic counters of every session whose ports were reached, with the connections
    /// open now.
    pub(crate) fn counters(&self) -> HashMap<Uuid, PortCounters> {
        let open = self.connections.open_counts();
        let mut counters = self.traffic.snapshot();
        for (id, c) in &mut counters {
            c.open = open.get(id).copied().unwrap_or(0) as u64;
        }
        counters
    }

    /// Drops the counters of a session that is gone.
    pub(crate) fn forget(&self, session: Uuid) {
        self.traffic.forget(session);
    }
}

/// The place of one relayed connection: held until it ends, with its session's counters.
#[derive(Debug)]
pub(crate) struct PortSlot {
    _connection: ConnectionSlot,
    /// Where the connection's bytes are counted.
    pub(crate) traffic: Arc<SessionTraffic>,
}

/// A port number from a path segment: 1 to 65535, else 400 naming `port`.
pub(crate) fn parse_port(raw: &str) -> Result<u16, ApiError> {
    match raw.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(ApiError::invalid(
            "port",
            format!("port must be a number from 1 to 65535, got {raw:?}"),
        )),
    }
}
