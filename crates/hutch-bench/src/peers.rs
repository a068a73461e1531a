//! Peers: the same work done without hutch, for comparison in the same run.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::Samples;

/// The bubblewrap command equivalent to a sandbox running `true`: every namespace unshared, a
/// read-only `/usr`, fresh `/proc`, `/dev` and `/tmp`.
pub fn bwrap_command() -> Command {
    let mut cmd = Command::new("bwrap");
    cmd.args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
    ]);
    for link in ["bin", "sbin", "lib", "lib64"] {
        let path = std::path::Path::new("/").join(link);
        if let Ok(target) = std::fs::read_link(&path) {
            cmd.arg("--symlink").arg(target).arg(&path);
        }
    }
    cmd.args([
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "true",
    ]);
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    cmd
}

/// Runs `bwrap … true` `iterations` times; `None` when bubblewrap is not installed or fails.
pub fn bwrap_true(iterations: usize) -> Option<Samples> {
    let mut samples = Samples::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let status = bwrap_command().status().ok()?;
        if !status.success() {
            return None;
        }
        samples.push(start.elapsed());
    }
    Some(samples)
}
