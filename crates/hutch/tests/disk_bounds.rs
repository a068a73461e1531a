//! Every session has a disk bound, and the server keeps free space on its data directory's
//! file system: short of it, creates answer 507 while running sessions carry on.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestServer, can_run_sandboxes, session, sh};
use hutch_api::{CreateSessionRequest, ErrorCode};

/// A small ext4 file system, loop-mounted for the test and unmounted after it.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn new(mb: u64) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("hutch-small-disk")
            .tempdir_in("/tmp")
            .unwrap();
        let image = dir.path().join("disk.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image)
            .unwrap()
            .set_len(mb << 20)
            .unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0"])
            .arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        SmallDisk { _dir: dir, mount }
    }

    /// MiB free on it.
    fn free_mb(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-BM"])
            .arg(&self.mount)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .unwrap()
            .trim()
            .trim_end_matches('M')
            .parse()
            .unwrap()
    }

    /// Takes all but `leave_mb` MiB of the free space (with 0, every block) with a file
    /// beside the data directory.
    fn fill_leaving(&self, leave_mb: u64) {
        let take = self.free_mb().saturating_sub(leave_mb.max(2));
        run(Command::new("fallocate")
            .args(["-l", &format!("{take}M")])
            .arg(self.filler()));
        if leave_mb == 0 {
            // The last blocks, until the file system says it is full.
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "head -c 16M /dev/zero >> {}",
                    self.filler().display()
                ))
                .output()
                .unwrap();
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("No space left on device"),
                "{out:?}"
            );
        }
    }

    /// Frees what [`SmallDisk::fill_leaving`] took.
    fn unfill(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }

    fn filler(&self) -> PathBuf {
        self.mount.join("filler")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the sessions' own disks may hold it a moment longer.
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

fn run(command: &mut Command) {
    let out = command.output().unwrap();
    assert!(out.status.success(), "{command:?}: {out:?}");
}

/// Runs `command` in `session` until its output contains `wanted` (within 10 s); returns it.
async fn wait_for_output(
    client: &hutch_client::HutchClient,
    session: &hutch_api::Session,
    command: &str,
    wanted: &str,
) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = sh(client, session, command).await;
        let text = format!("{}{}", out.stdout, out.stderr);
        if text.contains(wanted) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{command}` never said {wanted:?}: last {text:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

fn df_mb(path: &Path) -> String {
    format!("df -BM --output=size {} | tail -n 1", path.display())
}

/// The limit in bytes of the quota group of subvolume `name` in the disk pool at `pool`.
fn pool_limit(pool: &Path, name: &str) -> u64 {
    let out = Command::new("btrfs")
        .args(["qgroup", "show", "-r", "--raw"])
        .arg(pool)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.ends_with(name))
        .unwrap_or_else(|| panic!("no quota group for {name}: {text}"));
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_session_that_asks_for_no_disk_quota_has_the_default_one() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let view = common::host_view(&client, &s).await;
    assert_eq!(
        pool_limit(&server.data_dir().join("disks"), &view.sandbox_id),
        10_240 << 20,
        "the session's subvolume is limited to 10240 MiB"
    );

    // With a disk of its own, `df` inside shows the quota.
    let server = TestServer::start_with(&["--disk-quotas", "per-session"]);
    let client = server.client("alice");
    let s = session(&client).await;
    let size = sh(&client, &s, &df_mb(Path::new("/workspace"))).await;
    let mb: u64 = size.stdout.trim().trim_end_matches('M').parse().unwrap();
    assert!(
        (9_000..=10_240).contains(&mb),
        "/workspace lives on the session's own 10240 MiB disk: {size:?}"
    );

    for (mode, error) in [
        ("pool", "Disk quota exceeded"),
        ("per-session", "No space left on device"),
    ] {
        let server = TestServer::start_with(&[
            "--warm-pool",
            "1",
            "--disk-mb-default",
            "32",
            "--disk-quotas",
            mode,
        ]);
        let client = server.client("alice");
        let s = session(&client).await;
        let fill = sh(
            &client,
            &s,
            "dd if=/dev/zero of=/workspace/fill bs=1M count=64 2>&1; echo rc=$?",
        )
        .await;
        assert!(
            fill.stdout.contains(error) && fill.stdout.contains("rc=1"),
            "{mode}: writes stop at the server's default: {fill:?}"
        );
    }
}

#[tokio::test]
async fn short_of_the_reserve_or_out_of_space_creates_answer_507_and_sessions_carry_on() {
    if !can_run_sandboxes() {
        return;
    }
    let disk = SmallDisk::new(400);
    let data = disk.mount.join("data");
    std::fs::create_dir(&data).unwrap();
    let server = TestServer::start_in_data_dir(
        &data,
        &[
            "--warm-pool",
            "1",
            "--disk-mb-default",
            "32",
            "--disk-reserve-mb",
            "100",
        ],
    );
    let client = server.client("alice");
    let running = session(&client).await;
    sh(&client, &running, "echo kept > /workspace/kept").await;

    // Short of half the reserve, the sessions' disks stop growing (their writes fail as at
    // their quota, deleting works) until space is back: the disk pool, shared by every
    // session, is never written to a full host disk.
    disk.fill_leaving(30);
    let stopped = wait_for_output(
        &client,
        &running,
        "echo more > /workspace/more 2>&1; echo rc=$?",
        "Disk quota exceeded",
    )
    .await;
    assert!(!stopped.contains("rc=0"), "{stopped}");
    assert_eq!(
        sh(
            &client,
            &running,
            "cat /workspace/kept && rm /workspace/kept && echo removed"
        )
        .await
        .stdout,
        "kept\nremoved\n",
        "reading and deleting work"
    );
    disk.unfill();
    wait_for_output(
        &client,
        &running,
        "echo kept > /workspace/kept && echo rc=$?",
        "rc=0",
    )
    .await;

    for (leave_mb, what) in [(60, "short of the reserve"), (0, "full")] {
        disk.fill_leaving(leave_mb);
        let refused = client
            .create_session(&CreateSessionRequest::default())
            .await
            .unwrap_err();
        assert_eq!(
            refused.code(),
            Some(ErrorCode::DiskFull),
            "{what}: {refused}"
        );
        let message = refused.to_string();
        assert!(
            message.contains("less than its reserve of 100 MiB")
                && message.contains("creating a session is refused"),
            "{what}: the answer says why: {message}"
        );
        // A snapshot and a fork write images (and a fork makes sessions): refused alike.
        for (route, body) in [
            ("snapshot", r#"{"name":"short"}"#),
            ("fork", r#"{"count":1}"#),
        ] {
            let (status, answer) = client
                .request(
                    http::Method::POST,
                    &format!("/v1/sessions/{}/{route}", running.session_id),
                    Some(body.as_bytes().to_vec().into()),
                )
                .await
                .unwrap();
            assert_eq!(
                status,
                http::StatusCode::INSUFFICIENT_STORAGE,
                "{what}: {route}: {}",
                String::from_utf8_lossy(&answer)
            );
        }

        let alive = sh(&client, &running, "cat /workspace/kept").await;
        assert_eq!(
            alive.stdout, "kept\n",
            "{what}: the running session works: {alive:?}"
        );
        let listed = client.list_sessions(None, None).await.unwrap();
        assert_eq!(
            listed
                .sessions
                .iter()
                .map(|s| s.session_id)
                .collect::<Vec<_>>(),
            vec![running.session_id],
            "{what}: the store holds the running session and nothing of the refused one"
        );
        disk.unfill();
    }

    let again = session(&client).await;
    assert_eq!(sh(&client, &again, "echo new").await.stdout, "new\n");
    client.delete_session(again.session_id).await.unwrap();
    client.delete_session(running.session_id).await.unwrap();
    drop(server);
}
