//! Each sandbox runs as a host id range of its own: what escapes one sandbox holds none of
//! another's files or processes. The shared image layers are seen through idmapped mounts.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use common::{HostView, TestServer, can_run_sandboxes, host_view, session, sh};
use hutch_api::{CreateSessionRequest, ErrorCode, Session};
use hutch_client::HutchClient;

const RANGE: u32 = 65_536;

/// The host uid root inside `session` maps to, read from its own `uid_map`.
async fn mapped_root(client: &HutchClient, session: &Session) -> u32 {
    let map = sh(
        client,
        session,
        "cat /proc/self/uid_map; cat /proc/self/gid_map",
    )
    .await
    .stdout;
    let lines: Vec<Vec<u32>> = map
        .lines()
        .map(|l| l.split_whitespace().map(|f| f.parse().unwrap()).collect())
        .collect();
    assert_eq!(lines.len(), 2, "one line each: {map}");
    assert_eq!(lines[0], lines[1], "uids and gids map alike: {map}");
    assert_eq!((lines[0][0], lines[0][2]), (0, RANGE), "{map}");
    lines[0][1]
}

/// The host uids (real, effective, saved, fs) of the agent's process.
fn host_uids(view: &HostView) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", view.agent_pid)).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap())
        .collect()
}

/// Where `inside` (a path in the session's root) is kept on the host: its root overlay's
/// upper directory, in the session's subvolume of the disk pool, on a disk of its own or
/// beside it.
fn upper_path(server: &TestServer, view: &HostView, inside: &str) -> PathBuf {
    let dir = server.data_dir().join("sandboxes").join(&view.sandbox_id);
    let subvolume = server.data_dir().join("disks").join(&view.sandbox_id);
    let inside = inside.trim_start_matches('/');
    [
        subvolume.join("upper/root"),
        dir.join("disk/upper/root"),
        dir.join("upper/root"),
    ]
    .into_iter()
    .map(|upper| upper.join(inside))
    .find(|path| path.exists())
    .unwrap_or_else(|| panic!("{inside} in no upper directory of {}", dir.display()))
}

/// Runs `program args` on the host as uid and gid `id` (no supplementary groups): what a
/// process that escaped a sandbox mapped there could do.
fn as_host_id(id: u32, program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .uid(id)
        .gid(id)
        .output()
        .unwrap()
}

#[tokio::test]
async fn two_sessions_run_as_different_host_ids_and_hold_none_of_each_others_files() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let a = session(&client).await;
    let b = session(&client).await;
    let (root_a, root_b) = (
        mapped_root(&client, &a).await,
        mapped_root(&client, &b).await,
    );
    assert!(
        root_a.abs_diff(root_b) >= RANGE,
        "the ranges do not overlap: {root_a} and {root_b}"
    );
    let (view_a, view_b) = (host_view(&client, &a).await, host_view(&client, &b).await);
    assert_eq!(host_uids(&view_a), vec![root_a; 4]);
    assert_eq!(host_uids(&view_b), vec![root_b; 4]);

    // Files written inside are owned on the host by the writer's range, users inside too;
    // so are copies up of the shared skeleton (root inside may change it, as before).
    let out = sh(
        &client,
        &a,
        "echo secret > /workspace/a && chmod 666 /workspace/a && \
         mkdir -p /workspace/u && chown 1000:1000 /workspace/u && \
         echo changed > /etc/hutch-test && touch /opt && echo ok",
    )
    .await;
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    let file = upper_path(&server, &view_a, "/workspace/a");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (root_a, root_a));
    let user_dir = std::fs::metadata(upper_path(&server, &view_a, "/workspace/u")).unwrap();
    assert_eq!(user_dir.uid(), root_a + 1000);
    let etc = std::fs::metadata(upper_path(&server, &view_a, "/etc/hutch-test")).unwrap();
    assert_eq!(etc.uid(), root_a);
    assert!(!(root_b..root_b + RANGE).contains(&meta.uid()));
    // The shared layers are seen as root's inside, though no sandbox's range owns them.
    let ls = sh(&client, &b, "stat -c %u:%g /opt /etc").await.stdout;
    assert_eq!(ls, "0:0\n0:0\n");
    let skeleton_owner = std::fs::read_dir(server.data_dir().join("images"))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("default-"))
        .map(|e| e.metadata().unwrap().uid())
        .unwrap();
    for root in [root_a, root_b] {
        assert!(!(root..root + RANGE).contains(&skeleton_owner));
    }

    // B's root, escaped to the host, can neither reach A's files (even one A made writable
    // by all, even opened by its full path), nor signal or inspect A's processes.
    let file_arg = file.to_str().unwrap();
    let write = as_host_id(root_b, "sh", &["-c", &format!("echo x >> {file_arg}")]);
    assert!(!write.status.success(), "B writes A's file: {write:?}");
    let through_proc = format!("/proc/{}/root/workspace/a", view_a.agent_pid);
    let read = as_host_id(root_b, "cat", &[&through_proc]);
    assert!(
        !read.status.success(),
        "B reads A's file through /proc: {read:?}"
    );
    let signal = as_host_id(root_b, "kill", &["-0", &view_a.agent_pid.to_string()]);
    assert!(!signal.status.success(), "B signals A's agent: {signal:?}");
    // A's own root can (the test would pass for nothing if it could not).
    let own = as_host_id(root_a, "kill", &["-0", &view_a.agent_pid.to_string()]);
    assert!(own.status.success(), "A signals its own agent: {own:?}");
    // Nor can A's ids write a file of the shared layers.
    let skeleton_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o644)
        .open(server.data_dir().join("images/probe"));
    drop(skeleton_file);
    let probe = server.data_dir().join("images/probe");
    std::os::unix::fs::chown(&probe, Some(skeleton_owner), Some(skeleton_owner)).unwrap();
    let shared = as_host_id(
        root_a,
        "sh",
        &["-c", &format!("echo x >> {}", probe.display())],
    );
    assert!(
        !shared.status.success(),
        "A writes a shared layer's file: {shared:?}"
    );
    std::fs::remove_file(&probe).unwrap();
    assert_eq!(sh(&client, &a, "cat /workspace/a").await.stdout, "secret\n");
}

#[tokio::test]
async fn ranges_are_reused_after_delete_and_never_while_live() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "0", "--uid-ranges", "2"]);
    let client = server.client("alice");
    let a = session(&client).await;
    let b = session(&client).await;
    let (root_a, root_b) = (
        mapped_root(&client, &a).await,
        mapped_root(&client, &b).await,
    );
    assert_ne!(root_a, root_b);
    let full = client
        .create_session(&CreateSessionRequest::default())
        .await
        .unwrap_err();
    assert_eq!(full.code(), Some(ErrorCode::Capacity), "{full:?}");
    client.delete_session(a.session_id).await.unwrap();
    let c = session(&client).await;
    assert_eq!(
        mapped_root(&client, &c).await,
        root_a,
        "A's range, free again"
    );
    assert_eq!(mapped_root(&client, &b).await, root_b);
}

#[tokio::test]
async fn adopted_sessions_keep_their_ranges_after_a_kill_and_new_ones_take_others() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start_with(&["--warm-pool", "1"]);
    let client = server.client("alice");
    let a = session(&client).await;
    let b = session(&client).await;
    let roots = [
        mapped_root(&client, &a).await,
        mapped_root(&client, &b).await,
    ];
    sh(&client, &a, "echo kept > /workspace/kept").await;

    server.kill_hard();
    server.restart();
    let client = server.client("alice");
    assert_eq!(mapped_root(&client, &a).await, roots[0]);
    assert_eq!(mapped_root(&client, &b).await, roots[1]);
    let view_a = host_view(&client, &a).await;
    assert_eq!(host_uids(&view_a), vec![roots[0]; 4]);
    for _ in 0..3 {
        let new = session(&client).await;
        let root = mapped_root(&client, &new).await;
        assert!(
            !roots.contains(&root),
            "{root} is an adopted session's range"
        );
    }
    let kept = std::fs::metadata(upper_path(&server, &view_a, "/workspace/kept")).unwrap();
    assert_eq!(kept.uid(), roots[0]);
    assert_eq!(
        sh(&client, &a, "cat /workspace/kept").await.stdout,
        "kept\n"
    );
}
