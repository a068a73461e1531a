//! Disk quotas and upload limits: a session's writes stop at its `diskMb` (EDQUOT inside with
//! the shared disk pool, ENOSPC with a disk of its own; 507 on the file API) and work again
//! once files are removed; uploads over the server's maximum answer 413 naming the file;
//! nothing of a quota outlives its session.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod files_common;

use common::{TestServer, assert_nothing_left, can_run_sandboxes, host_view, sh};
use files_common::{curl, put};
use hutch_api::{CreateSessionRequest, ResourcesRequest};

async fn session_with_disk(client: &hutch_client::HutchClient, disk_mb: u64) -> hutch_api::Session {
    let req = CreateSessionRequest {
        resources: Some(ResourcesRequest {
            disk_mb: Some(disk_mb),
            ..Default::default()
        }),
        ..Default::default()
    };
    client.create_session(&req).await.expect("create session")
}

/// Loop devices whose backing file lies in data directory `data`.
fn loop_devices_of(data: &std::path::Path) -> Vec<String> {
    let data = data.display().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing = entry.path().join("loop/backing_file");
        if let Ok(file) = std::fs::read_to_string(&backing)
            && file.contains(&data)
        {
            found.push(format!(
                "{} -> {}",
                entry.file_name().to_string_lossy(),
                file.trim()
            ));
        }
    }
    found
}

fn assert_no_loop_devices(data: &std::path::Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let left = loop_devices_of(data);
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "loop devices left: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[tokio::test]
async fn writes_stop_at_the_quota_and_work_again_after_removing_files() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let started = std::time::Instant::now();
    let s = session_with_disk(&client, 64).await;
    eprintln!("create with a 64 MiB quota took {:?}", started.elapsed());
    assert_eq!(s.resources.disk_mb, Some(64));
    let id = s.session_id;
    let mib = vec![7u8; 1024 * 1024];
    let forty: Vec<u8> = mib.iter().copied().cycle().take(40 * 1024 * 1024).collect();

    let first = put(&server, id, "/workspace/first.bin", "", &forty);
    assert_eq!(first.status, 200, "{}", first.text());
    let second = put(&server, id, "/workspace/second.bin", "", &forty);
    assert_eq!(second.status, 507, "{}", second.text());
    assert_eq!(second.code(), "disk_full");
    assert_eq!(
        second.json()["error"]["details"]["path"],
        "/workspace/second.bin"
    );

    let inside = sh(
        &client,
        &s,
        "dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1; echo rc=$?",
    )
    .await;
    assert!(
        inside.stdout.contains("Disk quota exceeded") && inside.stdout.contains("rc=1"),
        "EDQUOT inside: {inside:?}"
    );
    let tmp = sh(
        &client,
        &s,
        "dd if=/dev/zero of=/tmp/fill bs=1M count=100 2>&1; echo rc=$?; rm -f /tmp/fill",
    )
    .await;
    assert!(
        tmp.stdout.contains("No space left on device"),
        "/tmp is bounded too: {tmp:?}"
    );
    let left = sh(&client, &s, "ls -A /workspace").await;
    assert_eq!(
        left.stdout, "fill\nfirst.bin\n",
        "the failed upload left nothing: {left:?}"
    );

    let removed = curl(
        &server,
        id,
        "DELETE",
        "/files?path=/workspace/first.bin",
        &[],
    );
    assert_eq!(removed.status, 204);
    sh(&client, &s, "rm /workspace/fill").await;
    let again = put(&server, id, "/workspace/second.bin", "", &forty);
    assert_eq!(again.status, 200, "space is back: {}", again.text());
    assert_eq!(
        sh(
            &client,
            &s,
            "echo works > /workspace/ok && cat /workspace/ok"
        )
        .await
        .stdout,
        "works\n"
    );
}

#[tokio::test]
async fn a_quota_leaves_nothing_behind_after_delete_or_a_crash() {
    if !can_run_sandboxes() {
        return;
    }
    for mode in ["pool", "per-session"] {
        // No warm pool: its sandboxes have disks too.
        let mut server = TestServer::start_with(&["--warm-pool", "0", "--disk-quotas", mode]);
        let data = server.data_dir().to_owned();
        let client = server.client("alice");
        let s = session_with_disk(&client, 32).await;
        let view = host_view(&client, &s).await;
        let subvolume = data.join("disks").join(&view.sandbox_id);
        assert_eq!(
            loop_devices_of(&data).len(),
            1,
            "{mode}: one loop-mounted file system, the pool's or the session's own"
        );
        assert_eq!(
            subvolume.is_dir(),
            mode == "pool",
            "{mode}: the session's disk is a subvolume of the pool"
        );
        client.delete_session(s.session_id).await.unwrap();
        assert_nothing_left(&server, &view);
        if mode == "per-session" {
            assert_no_loop_devices(&data);
        }

        // The server dies; on restart it adopts the session, and deleting it then cleans up
        // all.
        let s = session_with_disk(&client, 32).await;
        let view = host_view(&client, &s).await;
        server.restart();
        let client = server.client("alice");
        assert_eq!(
            sh(&client, &s, "echo on > /workspace/f && cat /workspace/f")
                .await
                .stdout,
            "on\n",
            "{mode}: the adopted session's disk works"
        );
        client.delete_session(s.session_id).await.unwrap();
        assert_nothing_left(&server, &view);
        // Stopped with no session left, the server leaves no mount and no loop device.
        drop(server);
        assert_no_loop_devices(&data);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(&data.display().to_string()),
            "{mode}: nothing stays mounted in the data directory"
        );
    }
}

#[tokio::test]
async fn a_session_keeps_its_pool_disk_when_the_server_restarts_with_disks_of_their_own() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start_with(&["--warm-pool", "0"]);
    let data = server.data_dir().to_owned();
    let client = server.client("alice");
    let old = session_with_disk(&client, 32).await;
    let view = host_view(&client, &old).await;
    assert!(data.join("disks").join(&view.sandbox_id).is_dir());

    server.restart_with(&["--warm-pool", "0", "--disk-quotas", "per-session"]);
    let client = server.client("alice");
    let fill = sh(
        &client,
        &old,
        "cat /dev/null > /workspace/f && dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1; echo rc=$?",
    )
    .await;
    assert!(
        fill.stdout.contains("Disk quota exceeded"),
        "the adopted session keeps its subvolume and its limit: {fill:?}"
    );
    let new = session_with_disk(&client, 32).await;
    let new_view = host_view(&client, &new).await;
    assert!(
        !data.join("disks").join(&new_view.sandbox_id).exists(),
        "a new session gets a disk of its own"
    );
    assert_eq!(
        loop_devices_of(&data).len(),
        2,
        "the pool's and the new disk's"
    );

    client.delete_session(old.session_id).await.unwrap();
    assert_nothing_left(&server, &view);
    client.delete_session(new.session_id).await.unwrap();
    assert_nothing_left(&server, &new_view);
    drop(server);
    assert_no_loop_devices(&data);
}

#[tokio::test]
async fn disk_quotas_are_bounded() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "0", "--disk-mb-max", "100"]);
    let client = server.client("alice");
    for (mb, field) in [
        (1, "resources.diskMb"),
        (10_000_000, "resources.diskMb"),
        (200, "resources.diskMb"),
    ] {
        let err = client
            .create_session(&CreateSessionRequest {
                resources: Some(ResourcesRequest {
                    disk_mb: Some(mb),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Some(hutch_api::ErrorCode::InvalidRequest),
            "{mb}: {err}"
        );
        assert!(err.to_string().contains(field), "{mb}: {err}");
    }
}

#[tokio::test]
async fn uploads_over_the_maximum_are_413_naming_the_file() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--max-upload-mb", "1"]);
    let client = server.client("alice");
    let s = common::session(&client).await;
    let id = s.session_id;
    let big = vec![1u8; 1024 * 1024 + 1];

    let raw = put(&server, id, "/workspace/big.bin", "", &big);
    assert_eq!(raw.status, 413, "{}", raw.text());
    assert_eq!(raw.code(), "payload_too_large");
    assert_eq!(raw.json()["error"]["details"]["path"], "/workspace/big.bin");
    // Chunked, without a length: cut off while streaming.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.bin");
    std::fs::write(&file, &big).unwrap();
    let chunked = curl(
        &server,
        id,
        "PUT",
        "/files/content?path=/workspace/chunked.bin",
        &[
            "-T",
            &file.display().to_string(),
            "-H",
            "Transfer-Encoding: chunked",
        ],
    );
    assert_eq!(chunked.status, 413, "{}", chunked.text());
    assert_eq!(
        chunked.json()["error"]["details"]["path"],
        "/workspace/chunked.bin"
    );

    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"small").unwrap();
    let multi = curl(
        &server,
        id,
        "POST",
        "/files",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-F",
            &format!("a=@{};filename=small.txt", small.display()),
            "-F",
            &format!("b=@{};filename=huge.bin", file.display()),
        ],
    );
    assert_eq!(multi.status, 413, "{}", multi.text());
    assert_eq!(
        multi.json()["error"]["details"]["path"],
        "/workspace/huge.bin"
    );
    let listing = sh(&client, &s, "ls -A /workspace").await;
    assert_eq!(
        listing.stdout, "small.txt\n",
        "only the file under the limit was written: {listing:?}"
    );

    // Two files under the maximum each but over it together: the second is refused, chunked
    // or not, as a request with a length is refused whole.
    let half = dir.path().join("half.bin");
    std::fs::write(&half, vec![2u8; 600_000]).unwrap();
    let multi = curl(
        &server,
        id,
        "POST",
        "/files?path=/workspace/halves",
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-F",
            &format!("a=@{};filename=one.bin", half.display()),
            "-F",
            &format!("b=@{};filename=two.bin", half.display()),
        ],
    );
    assert_eq!(multi.status, 413, "{}", multi.text());
    assert_eq!(
        multi.json()["error"]["details"]["path"],
        "/workspace/halves/two.bin",
        "{}",
        multi.text()
    );
}
