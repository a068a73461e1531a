//! Running the network tools (`ip`, `tc`, `nft`) with a script on their standard input.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::net_err;
use crate::SandboxError;

/// Runs `program ARGS` with `input` on its standard input, inside the network namespace
/// `netns` when given; fails with its standard error when it does.
pub(super) fn run(
    program: &str,
    args: &[&str],
    input: &str,
    netns: Option<&OwnedFd>,
) -> Result<(), SandboxError> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fd) = netns {
        let fd = fd.as_raw_fd();
        // SAFETY: between fork and exec the closure makes one system call (setns) on a
        // descriptor this process holds open until the child has started.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn().map_err(|e| {
        net_err(format!(
            "starting {program}: {e} (sandbox networking needs iproute2 and nftables)"
        ))
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| net_err(format!("writing to {program}: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| net_err(format!("waiting for {program}: {e}")))?;
    if !out.status.success() {
        return Err(net_err(format!(
            "{program} failed: {}; its input was:\n{input}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
