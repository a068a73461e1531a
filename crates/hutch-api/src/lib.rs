//! Wire types of the hutch API.
//!
//! Everything a client sends to `hutch serve`, or the server sends to a sandbox's agent, is
//! declared here as plain serde types with camelCase JSON names. This crate does no I/O and
//! knows nothing of HTTP frameworks, the store or the kernel: it is the contract, shared by the
//! server, the agent, the Rust client and the benchmarks.
//!
//! Each wire type also derives `utoipa::ToSchema`: the server's OpenAPI document
//! (`docs/openapi.json`) takes its schemas, descriptions and bounds from here, and the error
//! responses its routes share ([`responses`]).

pub mod body;
pub mod commands;
pub mod env;
pub mod error;
pub mod files;
pub mod images;
pub mod interpreter;
pub mod limits;
pub mod network;
pub mod ports;
pub mod processes;
pub mod responses;
mod schema;
pub mod sessions;
pub mod storage;
pub mod variants;

pub use commands::{CommandRequest, CommandResult};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use files::{
    FileInfo, FileList, FileType, MkdirRequest, MoveRequest, UploadResult, UploadResults,
};
pub use images::{
    ForkRequest, ForkResult, Image, ImageConfig, ImageDetail, ImageLayer, ImageList, ImportResult,
    LayerState, PullEvent, PullRequest, SnapshotRequest,
};
pub use interpreter::{
    Context, ContextList, CreateContextRequest, ExecuteRequest, Frame, HistoryEntry, HistoryList,
    InterruptResult,
};
pub use network::{Egress, NetworkPolicy};
pub use ports::{CreateLinkRequest, ListeningPort, PortLink, PortList};
pub use processes::{
    CodeRequest, ProcessEvent, ProcessInfo, ProcessList, ProcessStatus, SignalRequest, SignalSpec,
    StartedProcess,
};
pub use sessions::{
    AutoPause, CreateSessionRequest, Resources, ResourcesRequest, Session, SessionList,
    SessionStats, SessionStatus, UpdateSessionRequest,
};
pub use storage::{
    ContextInfo, ContextStatusData, ContextSync, CreateStorageContextRequest, StorageContext,
    StorageContextList, SyncPolicy, SyncRequest, SyncStarted, TaskStatus, TaskType,
};
