//! The free-space reserve of the data directory's file system.
//!
//! Sessions' writable layers, storage contexts, images and `hutch.db` all live on the data
//! directory's file system. Session disks are sparse, so their quotas together may promise
//! more than the file system holds; the server keeps a reserve instead: while less than it is
//! free, creates, storage transfers and image pulls and imports answer 507 `disk_full` (before
//! the disk is full), and running sessions, the store and deletes keep working in what is left.

use std::path::PathBuf;

use crate::error::ApiError;

/// The data directory's file system and the space that must stay free on it.
#[derive(Debug, Clone)]
pub(crate) struct DiskReserve {
    dir: PathBuf,
    reserve_mb: u64,
}

/// Less than the reserve is free: the operation named is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "the server's data directory has {free_mb} MiB free, less than its reserve of {reserve_mb} MiB; {what} is refused until space is freed"
)]
pub(crate) struct BelowReserve {
    free_mb: u64,
    reserve_mb: u64,
    what: &'static str,
}

impl From<BelowReserve> for ApiError {
    fn from(err: BelowReserve) -> Self {
        ApiError::DiskFull(err.to_string())
    }
}

impl DiskReserve {
    /// Keeps `reserve_mb` MiB free on the file system of `dir`.
    pub(crate) fn new(dir: PathBuf, reserve_mb: u64) -> DiskReserve {
        DiskReserve { dir, reserve_mb }
    }

    /// MiB available to unprivileged writers on the data directory's file system; `None` when
    /// it cannot be asked (then nothing is refused).
    fn free_mb(&self) -> Option<u64> {
        let stat = rustix::fs::statvfs(&self.dir).ok()?;
        Some(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
    }

    /// Refuses `what` (`creating a session`, …) while less than the reserve is free.
    pub(crate) fn check(&self, what: &'static str) -> Result<(), BelowReserve> {
        match self.free_mb() {
            Some(free_mb) if free_mb < self.reserve_mb => Err(BelowReserve {
                free_mb,
                reserve_mb: self.reserve_mb,
                what,
            }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_refuses_and_names_both_figures() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DiskReserve::new(dir.path().into(), 0).check("x").is_ok());
        let err = DiskReserve::new(dir.path().into(), u64::MAX)
            .check("creating a session")
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("creating a session is refused"),
            "{message}"
        );
        assert!(
            message.contains(&format!("reserve of {} MiB", u64::MAX)),
            "{message}"
        );
        assert_eq!(ApiError::from(err).code(), hutch_api::ErrorCode::DiskFull);
    }
}
