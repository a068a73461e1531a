//! The veth pair of a networked sandbox, driven through iproute2's `ip` and `tc`.
//!
//! The host's end is `hx<tag>` with the slot's gateway address; the sandbox's end is `eth0`
//! in the sandbox's network namespace with the slot's second address and a default route
//! through the gateway. Neither end gets an IPv6 address (`addrgenmode none`). A token bucket
//! on each end's egress caps the session's bandwidth in each direction. The inner end is
//! configured by `ip` and `tc` started inside the sandbox's network namespace (`setns` before
//! `exec`), as host root: the sandbox itself holds no `CAP_NET_ADMIN` once claimed.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use super::{Slot, command, net_err};
use crate::SandboxError;
use crate::sys;

/// Prefix of the host-side interface names.
const PREFIX: &str = "hx";

/// The host-side interface of the sandbox tagged `tag`.
pub(super) fn host_name(tag: &str) -> String {
    format!("{PREFIX}{tag}")
}

/// Creates and configures the veth pair of the sandbox whose agent is `pid`.
pub(super) fn create(tag: &str, pid: i32, slot: Slot, mbit: u32) -> Result<(), SandboxError> {
    let host = host_name(tag);
    let (gw, addr) = (slot.gateway, slot.address);
    run(
        "ip",
        &format!(
            "link add {host} type veth peer name eth0 netns {pid}\n\
             link set dev {host} addrgenmode none\n\
             addr add {gw}/30 dev {host}\n\
             link set dev {host} up\n"
        ),
        None,
    )?;
    let netns_path = format!("/proc/{pid}/ns/net");
    let netns = sys::open(Path::new(&netns_path), libc::O_RDONLY | libc::O_CLOEXEC)
        .map_err(|e| net_err(format!("opening {netns_path}: {e}")))?;
    run(
        "ip",
        &format!(
            "link set dev eth0 addrgenmode none\n\
             addr add {addr}/30 dev eth0\n\
             link set dev eth0 up\n\
             route add default via {gw}\n"
        ),
        Some(&netns),
    )?;
    let tbf = format!("rate {mbit}mbit burst {}kb latency 50ms", burst_kb(mbit));
    run(
        "tc",
        &format!("qdisc add dev {host} root tbf {tbf}\n"),
        None,
    )?;
    run(
        "tc",
        &format!("qdisc add dev eth0 root tbf {tbf}\n"),
        Some(&netns),
    )?;
    Ok(())
}

/// A bucket that holds about 4 ms at `mbit`, at least 64 KiB (what tbf needs to reach its
/// rate at the timer's granularity).
fn burst_kb(mbit: u32) -> u32 {
    (mbit / 2).max(64)
}

/// Whether the host-side interface of `tag` exists.
pub(super) fn exists(tag: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", &host_name(tag)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the pair of `tag` (both ends go together); missing is fine.
pub(super) fn remove(tag: &str) {
    let _ = Command::new("ip")
        .args(["link", "del", "dev", &host_name(tag)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The tags of every sandbox interface in this network namespace.
pub(super) fn list_tags() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            // "7: hx0123456789ab@if2: <...>"
            let name = line.split(": ").nth(1)?.split('@').next()?;
            let tag = name.strip_prefix(PREFIX)?;
            (tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then(|| tag.to_owned())
        })
        .collect()
}

/// Runs `program -batch -` with `script` on its standard input, inside `netns` if given.
fn run(program: &str, script: &str, netns: Option<&OwnedFd>) -> Result<(), SandboxError> {
    command::run(program, &["-batch", "-"], script, netns)
}
