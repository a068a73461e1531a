//! Ports of a session reached from outside: the listening sockets it has, and signed preview
//! links that open one port in a browser without a bearer token.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One listening TCP socket inside a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({"port": 8000, "address": "0.0.0.0", "pid": 12, "process": "python3"}))]
pub struct ListeningPort {
    /// The TCP port.
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u16,
    /// The address it listens on: `0.0.0.0` or `::` for every address, `127.0.0.1` or `::1`
    /// for loopback only.
    pub address: String,
    /// The pid (inside the session) of a process holding the socket, when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// That process's name (its `comm`), when one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
}

/// The listening TCP sockets of a session, by port then address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortList {
    /// The sockets; at most [`crate::limits::PORTS_LIST_MAX`].
    pub ports: Vec<ListeningPort>,
}

/// A request for a preview link to one port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateLinkRequest {
    /// Seconds the link works for, 1 to 86400; default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl: Option<u64>,
}

/// A signed preview link to one port of a session: whoever holds it reaches that port (and
/// nothing else) without a bearer token until it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortLink {
    /// The link on the API's own address: `{base}/preview/{token}/`.
    pub url: String,
    /// The same link as a path, for clients that know the API's address better than the
    /// server does (behind a proxy): `/preview/{token}/`.
    pub path: String,
    /// The host-based link, `{scheme}://{port}-{sessionId}.{previewDomain}/?hutch_preview_token={token}`,
    /// when the server has a preview domain: its first visit sets a cookie for that host
    /// alone, so apps that use absolute paths work there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_url: Option<String>,
    /// The token itself.
    pub token: String,
    /// When the link stops working (RFC 3339, UTC).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: time::OffsetDateTime,
}

/// The protocol the control plane asks the agent to upgrade to on
/// [`tunnel_path`]: after `101 Switching Protocols` the connection carries the bytes of one
/// TCP connection to the port, both ways, until either side closes.
pub const TUNNEL_PROTOCOL: &str = "hutch-tcp";

/// The agent's path (not published) that opens a TCP connection to `port` inside the session.
pub fn tunnel_path(port: u16) -> String {
    format!("/ports/{port}/connect")
}
