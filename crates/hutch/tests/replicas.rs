//! Two `hutch serve` replicas on one real PostgreSQL (started by the test). Each with its own
//! data directory and host id range: a replica starting next to a live one leaves the other's
//! sessions alone, sees their rows, and refuses to destroy them. On one data directory: each
//! answers the other's sessions.

mod common;

use common::{TestServer, can_run_sandboxes, session, sh};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The host id pool of the second replica: above the first's (the default pool ends near
/// 1.54e9), so that their sandboxes never share host ids.
const SECOND_UID_BASE: &str = "1600000000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_starting_next_to_a_live_one_leaves_its_sessions_alone() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let a = TestServer::start_with(&["--store", &url, "--replica", "a"]);
    let client_a = a.client("t");
    let kept = session(&client_a).await;
    assert_eq!(sh(&client_a, &kept, "echo before").await.stdout, "before\n");

    // B's start-up recovery sees A's row, whose sandbox it cannot adopt: it must leave it.
    let b = TestServer::start_with(&[
        "--store",
        &url,
        "--replica",
        "b",
        "--uid-base",
        SECOND_UID_BASE,
        "--uid-ranges",
        "16",
    ]);
    let client_b = b.client("t");
    assert_eq!(sh(&client_a, &kept, "echo after").await.stdout, "after\n");

    // B answers for A's session, and will not destroy what it does not own.
    let seen = client_b
        .get_session(kept.session_id)
        .await
        .expect("get through B");
    assert_eq!(seen.status.as_str(), "RUNNING");
    let refused = client_b
        .delete_session(kept.session_id)
        .await
        .expect_err("B deleting A's session");
    let refused = refused.to_string();
    assert!(
        refused.starts_with("409") && refused.contains("served by replica a"),
        "{refused}"
    );
    assert_eq!(sh(&client_a, &kept, "echo still").await.stdout, "still\n");

    // A session of B's own is B's to use and delete.
    let own = session(&client_b).await;
    assert_eq!(sh(&client_b, &own, "echo b").await.stdout, "b\n");
    client_b
        .delete_session(own.session_id)
        .await
        .expect("B deleting its own");
    client_a
        .delete_session(kept.session_id)
        .await
        .expect("A deleting its own");
}

/// Two replicas on one PostgreSQL and one data directory: each answers the other's sessions
/// (commands, files, a terminal), their sandboxes never share a host id range, and neither's start-up
/// sweep touches the other's sandboxes. `kill -9` of A while a command of A's session runs
/// through B loses none of its output; A's sessions keep working through B while A is down,
/// and A restarted re-joins and serves them again. (Partial: deletes still go to the owner.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_data_dir_serve_each_others_sessions() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let mut a = TestServer::start_in_data_dir(data.path(), &["--store", &url, "--replica", "a"]);
    let client_a = a.client("t");
    let through_a = session(&client_a).await;
    let b = TestServer::start_in_data_dir(data.path(), &["--store", &url, "--replica", "b"]);
    let client_b = b.client("t");
    let through_b = session(&client_b).await;

    // A's session, used through B, after B's start-up sweep.
    assert_eq!(
        sh(&client_b, &through_a, "echo hello > /tmp/f; echo via-b")
            .await
            .stdout,
        "via-b\n"
    );
    let mut download = client_b
        .download_file(through_a.session_id, "/tmp/f")
        .await
        .expect("a file of A's session through B");
    let mut bytes = Vec::new();
    while let Some(chunk) = download.next_chunk().await {
        bytes.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(bytes, b"hello\n");
    // A terminal of A's session, through B.
    let mut terminal = client_b
        .open_terminal(through_a.session_id, 80, 24, Some("sh"))
        .await
        .expect("a terminal of A's session through B")
        .socket;
    terminal
        .send(Message::Binary("echo $((40+2))\r".into()))
        .await
        .unwrap();
    let mut screen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(15);
    while !screen.contains("42") {
        match tokio::time::timeout_at(deadline, terminal.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => {
                screen.push_str(&String::from_utf8_lossy(&data));
            }
            other => panic!("no answer in the terminal ({screen:?}): {other:?}"),
        }
    }
    drop(terminal);
    // And B's through A.
    assert_eq!(
        sh(&client_a, &through_b, "echo via-a").await.stdout,
        "via-a\n"
    );

    // Distinct host id ranges: read from each session's own uid map.
    let root = |out: String| out.split_whitespace().nth(1).unwrap().to_owned();
    let root_a = root(
        sh(&client_b, &through_a, "cat /proc/self/uid_map")
            .await
            .stdout,
    );
    let root_b = root(
        sh(&client_a, &through_b, "cat /proc/self/uid_map")
            .await
            .stdout,
    );
    assert_ne!(root_a, root_b);

    // A command of A's session streams through B while A is killed.
    let running = {
        let (client_b, through_a) = (client_b.clone(), through_a.clone());
        tokio::spawn(async move {
            sh(
                &client_b,
                &through_a,
                "touch /tmp/started; for i in $(seq 1 20); do echo $i; sleep 0.1; done",
            )
            .await
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while sh(&client_b, &through_a, "test -e /tmp/started && echo yes")
        .await
        .stdout
        != "yes\n"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the command never started"
        );
    }
    a.kill_hard();
    let expected: String = (1..=20).map(|i| format!("{i}\n")).collect();
    assert_eq!(running.await.unwrap().stdout, expected, "nothing lost");
    assert_eq!(
        sh(&client_b, &through_a, "echo a-down").await.stdout,
        "a-down\n"
    );
    // A restarted takes its sessions back and serves them again.
    a.restart();
    let client_a = a.client("t");
    assert_eq!(
        sh(&client_a, &through_a, "cat /tmp/f").await.stdout,
        "hello\n"
    );
    assert_eq!(sh(&client_b, &through_a, "echo b").await.stdout, "b\n");
    assert_eq!(sh(&client_a, &through_b, "echo a").await.stdout, "a\n");

    client_a
        .delete_session(through_a.session_id)
        .await
        .expect("A deleting its own");
    client_b
        .delete_session(through_b.session_id)
        .await
        .expect("B deleting its own");
    drop(b);
    drop(a);
    let left: Vec<_> = std::fs::read_dir(data.path().join("leases/uids"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "every range freed: {left:?}");
}
