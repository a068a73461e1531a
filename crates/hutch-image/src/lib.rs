//! OCI images on disk: references, pulls from registries, offline imports and the
//! content-addressed layer store that sandboxes mount as overlay lower directories.
//!
//! This crate knows nothing of HTTP servers, tenants or sessions. The server names an image
//! by [`ImageRef`], gets it with a [`Puller`] or [`import_archive`], and takes an
//! [`ImageLease`] from the [`ImageStore`] while a sandbox uses the image's layers.

pub mod digest;
pub mod import;
pub mod pull;
pub mod record;
pub mod reference;
pub mod registry;
pub mod store;
pub mod unpack;

pub use digest::{Digest, DigestError};
pub use import::{ImportError, import_archive};
pub use pull::{LayerStatus, ProgressFn, PullError, PullProgress, Puller};
pub use record::{ImageRecord, LayerRecord, LayerRef, RunConfig};
pub use reference::{ImageRef, ReferenceError};
pub use registry::{Credentials, Mirror, RegistryConfig, RegistryConfigError};
pub use store::{GcReport, ImageLease, ImageStore, LayerPin, StoreError};
pub use unpack::{Skipped, UnpackError, UnpackOptions, UnpackReport, unpack_layer};
