//! Wire types of the hutch API.
//!
//! Everything a client sends to `hutch serve`, or the server sends to a sandbox's agent, is
//! declared here as plain serde types with camelCase JSON names. This crate does no I/O and
//! knows nothing of HTTP frameworks, the store or the kernel: it is the contract, shared by the
//! server, the agent, the Rust client and the benchmarks.
//!
//! Each wire type also derives `utoipa::ToSchema`: the server's OpenAPI document
//! (`docs/openapi.json`) takes its schemas, descriptions and bounds from here.

pub mod commands;
pub mod error;
pub mod interpreter;
pub mod limits;
mod schema;
pub mod sessions;

pub use commands::{CommandRequest, CommandResult};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use interpreter::{
    Context, ContextList, CreateContextRequest, ExecuteRequest, Frame, HistoryEntry, HistoryList,
    InterruptResult,
};
pub use sessions::{
    CreateSessionRequest, Resources, ResourcesRequest, Session, SessionList, SessionStatus,
    UpdateSessionRequest,
};
