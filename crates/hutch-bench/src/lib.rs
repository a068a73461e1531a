//! Benchmarks of hutch, each printed beside a peer measured in the same run.
//!
//! A scenario drives a real server through [`hutch_client`] (one the harness starts itself, see
//! [`server::ServerProcess`], or any running one) and reports medians and tails; the peer runs
//! the closest equivalent without hutch on the same machine at the same time, so that the
//! ratio survives a noisy machine. `hutch bench` is the command-line front end.
//!
//! Scenarios so far:
//! - [`sessions`]: create a session → run `true` in it → delete it, against
//!   `bwrap --unshare-all … true` (target: p50 ≤ 15 ms on a 2-core machine).
//! - [`files`]: a 1 GiB upload and download through the file API, against `cp` of the same
//!   file on the same disk (target: ≥ 500 MB/s both ways).
//! - [`commands`]: a command's round trip through the API against `sh -c true` run
//!   directly, and 100 MB of output streamed through the API against `cat` through a pipe.
//! - [`interpreter`]: context ready, `x = 1 + 1` over the execute WebSocket, idle worker
//!   memory, for the plain and IPython kernels, against ipykernel driven by jupyter_client
//!   (targets: ready ≤ 20 ms, execute ≤ 1 ms plain / ≤ 3 ms IPython, idle ≤ 15 MiB plain).
//! - [`ports`]: a small GET to a web server in a session through `/ports/{port}/`, against the
//!   same GET sent from inside the session's network namespace.
//! - [`network`]: create with `egress: allow` beside `none` (target: ≤ 5 ms more at p50), and
//!   a download from a session beside the same download from the server's namespace
//!   (target: ≥ 80 %).
//! - [`soak`]: 10,000 create → run `true` → delete cycles from 8 concurrent clients, with the
//!   server's RSS, descriptors, cgroups, mounts and directories counted before and after
//!   (target: no growth beyond the warm pool) and the p99 per window (target: flat).
//! - [`images`]: the first pull and unpack of an image from a local registry through the
//!   API, against `skopeo copy` + `umoci unpack` of the same image (target: not slower).
//! - [`idle`]: pause and resume latency (target: each ≤ 5 ms at p50), host memory per idle
//!   and per paused session, and how many idle sessions fit, against podman containers and
//!   `unshare`d processes doing nothing.

pub mod commands;
pub mod files;
pub mod idle;
pub mod images;
pub mod interpreter;
pub mod network;
pub mod peers;
pub mod ports;
pub mod server;
pub mod sessions;
pub mod soak;
pub mod stats;

pub use stats::Samples;

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Starting or reaching the server failed.
    #[error("server: {0}")]
    Server(String),
    /// An API call failed during a scenario.
    #[error("{step}: {source}")]
    Api {
        /// Which step of the scenario.
        step: &'static str,
        /// The client's error.
        #[source]
        source: hutch_client::ClientError,
    },
}
