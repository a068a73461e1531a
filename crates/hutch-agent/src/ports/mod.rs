//! Ports of the session: the list of listening TCP sockets (`GET /ports`), and the tunnel the
//! control plane opens to one port (`GET /ports/{port}/connect`, upgraded to
//! [`hutch_api::ports::TUNNEL_PROTOCOL`]) to relay HTTP and WebSocket traffic from outside.
//!
//! The agent lives in the session's network namespace, so it reaches a port the way a process
//! of the session does, whatever the session's network policy: first `127.0.0.1`, then `::1`
//! (together these reach listeners on `0.0.0.0`, `::` and loopback), then any other address
//! a listener on the port is bound to. The tunnel carries raw bytes: the control plane speaks
//! HTTP through it.

mod listening;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::response::Response;
use hutch_api::PortList;
use hutch_api::ports::TUNNEL_PROTOCOL;
use hutch_api::responses::Internal;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::Agent;
use crate::error::AgentError;
use crate::route_list::{Build, RouteList, route};

/// How long connecting to a port inside the session may take before it counts as
/// unreachable (a listener whose accept queue is full does not answer at all).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The documented routes.
pub(crate) fn routes(build: Build) -> RouteList {
    let mut routes = RouteList::new(build);
    route!(routes, list);
    routes
}

/// The tunnel's route, which the control plane alone uses (it is not published).
pub(crate) fn tunnel_routes() -> axum::Router<Arc<Agent>> {
    axum::Router::new().route("/ports/{port}/connect", axum::routing::get(connect))
}

/// Lists the session's listening TCP ports.
///
/// Every TCP socket listening in the session's network namespace, IPv4 and IPv6, with the
/// address it is bound to and, when it can be found, the process holding it. Each port
/// listed can be reached from outside at `/v1/sessions/{id}/ports/{port}/`.
#[utoipa::path(
    get,
    path = "/ports",
    operation_id = "listPorts",
    tag = "ports",
    responses(
        (status = 200, description = "The listening sockets, by port", body = PortList),
        (status = 500, response = Internal),
    )
)]
async fn list() -> Result<Json<PortList>, AgentError> {
    let ports = tokio::task::spawn_blocking(listening::list)
        .await
        .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))?
        .map_err(AgentError::Runtime)?;
    Ok(Json(PortList { ports }))
}

/// Opens a TCP connection to `port` inside the session and, once the request is upgraded,
/// relays bytes between the two until either side closes. A port nothing accepts on answers
/// 502 `port_unreachable` without upgrading.
async fn connect(Path(port): Path<String>, mut req: Request) -> Result<Response, AgentError> {
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => {
            return Err(AgentError::invalid(
                "port",
                format!("port must be a number from 1 to 65535, got {port:?}"),
            ));
        }
    };
    let asks_tunnel = req.headers().get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(TUNNEL_PROTOCOL.as_bytes())
    });
    if !asks_tunnel {
        return Err(AgentError::invalid(
            "upgrade",
            format!("this route needs `Upgrade: {TUNNEL_PROTOCOL}`"),
        ));
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let mut tcp = open(port).await?;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!(port, error = %err, "port tunnel was not upgraded");
                return;
            }
        };
        let mut upgraded = TokioIo::new(upgraded);
        if let Err(err) = tokio::io::copy_bidirectional(&mut upgraded, &mut tcp).await {
            tracing::debug!(port, error = %err, "port tunnel ended with an error");
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, TUNNEL_PROTOCOL)
        .body(Body::empty())
        .map_err(|e| AgentError::Runtime(std::io::Error::other(e)))
}

/// A connection to `port`: on loopback (IPv4, then IPv6), then on any other address a
/// listener on the port is bound to.
async fn open(port: u16) -> Result<TcpStream, AgentError> {
    let mut candidates: Vec<SocketAddr> = vec![
        (Ipv4Addr::LOCALHOST, port).into(),
        (Ipv6Addr::LOCALHOST, port).into(),
    ];
    let mut last_error = String::from("connection refused");
    for pass in 0..2 {
        for &address in &candidates {
            match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
                    }
                    return Ok(stream);
                }
                Ok(Err(err)) => last_error = format!("{address}: {err}"),
                Err(_) => {
                    last_error = format!(
                        "{address}: no answer within {} s",
                        CONNECT_TIMEOUT.as_secs()
                    );
                }
            }
        }
        if pass == 0 {
            candidates = bound_addresses(port).await;
        }
    }
    Err(AgentError::PortUnreachable {
        port,
        reason: last_error,
    })
}

/// The addresses other than loopback and the wildcards that listeners on `port` are bound to.
async fn bound_addresses(port: u16) -> Vec<SocketAddr> {
    let listeners = tokio::task::spawn_blocking(listening::listeners)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    listeners
        .into_iter()
        .filter(|l| l.port == port)
        .map(|l| l.address)
        .filter(|address: &IpAddr| !address.is_loopback() && !address.is_unspecified())
        .map(|address| SocketAddr::new(address, port))
        .collect()
}
