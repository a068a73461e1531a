//! A sandbox's mount namespace costs the same however many mounts the host has.
//!
//! A new mount namespace starts as a copy of its parent's mount table. The sandbox detaches
//! that copy once it has built its own root, but the kernel frees the copy only when nothing
//! references it any more: a sandbox whose agent had mapped its libraries from the copy kept
//! all of it, every other session's disk mount among them, for as long as it lived, so the
//! kernel's memory grew with the square of the session count. The only place the kept copies
//! show is the kernel's count of mount objects (`mnt_cache` in `/proc/slabinfo`).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::Duration;

use common::{TestServer, can_run_sandboxes, session};

/// Mount objects the kernel holds (`mnt_cache`'s active objects), if it names them.
fn mount_objects() -> Option<u64> {
    let slabinfo = std::fs::read_to_string("/proc/slabinfo").ok()?;
    slabinfo
        .lines()
        .find_map(|line| line.strip_prefix("mnt_cache "))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

/// Mounts in the host's mount table (this process's namespace, which the server shares).
fn host_mounts() -> u64 {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count() as u64
}

/// Mount objects per session that `count` new sessions add, with the host's mount count
/// when they were made.
async fn mount_objects_per_session(client: &hutch_client::HutchClient, count: u64) -> (f64, u64) {
    let host = host_mounts();
    // Freed mounts go back to the slab after an RCU grace period.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mount_objects().unwrap();
    for _ in 0..count {
        session(client).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = mount_objects().unwrap();
    ((after as f64 - before as f64) / count as f64, host)
}

#[tokio::test]
async fn a_sandbox_keeps_no_copy_of_the_hosts_mount_table() {
    if !can_run_sandboxes() {
        return;
    }
    assert!(
        mount_objects().is_some(),
        "/proc/slabinfo names no mnt_cache: this kernel merged it into another cache"
    );
    // No warm pool: no sandbox is being built while the counts are read. Disks of their own
    // (not subvolumes of the shared pool): each session's is a mount on the host, so the
    // host's table grows with the sessions.
    let server = TestServer::start_with(&["--warm-pool", "0", "--disk-quotas", "per-session"]);
    let client = server.client("alice");

    let (first, host_first) = mount_objects_per_session(&client, 10).await;
    // Every session's disk is a mount on the host: 40 more raise the host's count by 40.
    for _ in 0..40 {
        session(&client).await;
    }
    let (second, host_second) = mount_objects_per_session(&client, 10).await;
    let grown = host_second.saturating_sub(host_first);
    assert!(
        grown >= 40,
        "the sessions' disks are mounts on the host: {host_first} → {host_second}"
    );
    // A kept copy costs one mount object per host mount: with 40 more on the host, each new
    // session would hold about 40 more.
    assert!(
        second - first < grown as f64 / 2.0,
        "a session costs {first:.1} mount objects beside {host_first} host mounts and \
         {second:.1} beside {host_second}: it keeps a copy of the host's mount table"
    );
}
