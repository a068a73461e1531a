//! `hutch serve` replicas on one real PostgreSQL (started by the test). Each with its own
//! data directory and host id range: a replica starting next to a live one leaves the other's
//! sessions alone, sees their rows, and refuses to destroy them. On one data directory: each
//! answers the other's sessions, deletes included, networked ones too; a live replica takes
//! over the sessions of a dead one; racing reapers destroy once; quotas are exact.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod net_common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, assert_nothing_left, can_run_sandboxes, host_view, session, sh};
use futures_util::{SinkExt, StreamExt};
use hutch_api::{CreateSessionRequest, Egress, NetworkPolicy, Session};
use hutch_client::HutchClient;
use net_common::{Forwarder, HTTP_HOST, TestInternet};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

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
/// and A restarted re-joins and serves them again. An interpreter keeps its state across
/// executions through either replica. Each deletes the other's session.
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
    // The interpreter of A's session over WebSocket: state set through A, read through B.
    let first = interpreter_ws(&a.url, &a.token("t"), &through_a, "x = 41").await;
    assert!(first.contains("\"control\""), "{first}");
    let second = interpreter_ws(&b.url, &b.token("t"), &through_a, "x + 1").await;
    assert!(
        second.contains("\"42\""),
        "state kept across replicas: {second}"
    );
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

    // Each deletes the other's, both alive.
    let view_a = host_view(&client_a, &through_a).await;
    let view_b = host_view(&client_b, &through_b).await;
    client_b
        .delete_session(through_a.session_id)
        .await
        .expect("B deleting A's session");
    client_a
        .delete_session(through_b.session_id)
        .await
        .expect("A deleting B's session");
    assert_nothing_left(&a, &view_a);
    assert_nothing_left(&a, &view_b);
    assert_eq!(
        sh(&client_a, &session(&client_a).await, "echo on")
            .await
            .stdout,
        "on\n"
    );
    drop(b);
    drop(a);
    let left: Vec<_> = std::fs::read_dir(data.path().join("leases/uids"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "every range freed: {left:?}");
}

/// Runs `code` through the interpreter WebSocket of `session` on the server at `url`; the
/// frames, as text.
async fn interpreter_ws(url: &str, token: &str, session: &Session, code: &str) -> String {
    let ws_url = format!(
        "{}/v1/sessions/{}/interpreter/execute",
        url.replacen("http", "ws", 1),
        session.session_id
    );
    let mut request = ws_url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(
        serde_json::json!({ "code": code }).to_string(),
    ))
    .await
    .unwrap();
    let mut frames = String::new();
    while let Ok(Some(Ok(message))) =
        tokio::time::timeout(Duration::from_secs(120), ws.next()).await
    {
        match message {
            Message::Text(text) => {
                frames.push_str(&text);
                frames.push('\n');
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    frames
}

/// Runs `sql` on the test's PostgreSQL at `url` with `psql`.
fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn id_list(sessions: &[&Session]) -> String {
    sessions
        .iter()
        .map(|s| format!("'{}'", s.session_id))
        .collect::<Vec<_>>()
        .join(",")
}

/// Moves the expiry of `sessions` to now (the API's shortest TTL is a minute).
fn expire_now(url: &str, sessions: &[&Session]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    psql(
        url,
        &format!(
            "UPDATE sessions SET expires_at = {now} WHERE id IN ({})",
            id_list(sessions)
        ),
    );
}

/// Clears the owner of `sessions`, as rows written before replicas were (or whose replica
/// left cleanly) have none: every replica may act on them at once.
fn disown(url: &str, sessions: &[&Session]) {
    psql(
        url,
        &format!(
            "UPDATE sessions SET owner = NULL WHERE id IN ({})",
            id_list(sessions)
        ),
    );
}

/// The slot files (`leases/<kind>/<n>`) of the data directory `data` that name `sandbox`.
fn slots_of(data: &Path, kind: &str, sandbox: &str) -> Vec<String> {
    std::fs::read_dir(data.join("leases").join(kind))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| std::fs::read_to_string(e.path()).is_ok_and(|t| t.trim() == sandbox))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The sockets bound to port 53 in the server's namespace of `internet`, as `ss` shows them.
fn resolver_sockets(internet: &TestInternet) -> Vec<String> {
    internet
        .in_server_ns("ss", &["-Hunl", "sport = :53"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

async fn networked(client: &HutchClient) -> Session {
    client
        .create_session(&CreateSessionRequest {
            network: Some(NetworkPolicy {
                egress: Egress::Allow,
                allow: vec!["allowed.test".into()],
                deny: Vec::new(),
            }),
            ..Default::default()
        })
        .await
        .expect("create a networked session")
}

/// The address of the resolver of a networked session (its nameserver).
async fn nameserver(client: &HutchClient, s: &Session) -> String {
    let resolv = sh(client, s, "cat /etc/resolv.conf").await.stdout;
    resolv
        .lines()
        .find_map(|l| l.strip_prefix("nameserver "))
        .expect("a nameserver")
        .trim()
        .to_owned()
}

/// A networked session of replica A, on one data directory with B, is used through B (its
/// names resolve through A's resolver, the connection its answer admits works) and deleted
/// through B while A lives: nothing of it is left (processes, cgroups, directories, its
/// interface, table, address and id range slots, A's resolver socket), and A, whose pool of
/// two addresses then has only the freed one, serves a new networked session on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_networked_session_is_used_and_deleted_through_the_other_replica() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let internet = TestInternet::start();
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "0",
            "--network-warm-pool",
            "0",
            "--network-allowed",
            "all",
            "--network-dns",
            net_common::DNS,
            // Two /30 slots in all.
            "--network-pool",
            "10.231.0.0/29",
        ]
    };
    let netns = internet.server_netns();
    let a =
        TestServer::start_in_netns_and_data_dir(&netns, data.path(), "127.0.0.1:7420", &args("a"));
    let b =
        TestServer::start_in_netns_and_data_dir(&netns, data.path(), "127.0.0.1:7421", &args("b"));
    let (fwd_a, fwd_b) = (
        Forwarder::start(&netns, "127.0.0.1:7420".parse().unwrap()),
        Forwarder::start(&netns, "127.0.0.1:7421".parse().unwrap()),
    );
    let client_a = HutchClient::new(&fwd_a.url(), &a.token("t")).unwrap();
    let client_b = HutchClient::new(&fwd_b.url(), &b.token("t")).unwrap();
    let tables_before = internet.tables();

    let doomed = networked(&client_a).await;
    let other = networked(&client_a).await;
    let gateway = nameserver(&client_b, &doomed).await;
    let resolved = sh(&client_b, &doomed, "getent hosts allowed.test")
        .await
        .stdout;
    assert!(
        resolved.contains(HTTP_HOST),
        "resolved through B: {resolved:?}"
    );
    let status = sh(
        &client_b,
        &doomed,
        "curl -s -o /dev/null -m 10 -w '%{http_code}' http://allowed.test/hello.txt",
    )
    .await
    .stdout;
    assert_eq!(status, "200", "the admitted address is reachable");
    let view = host_view(&client_b, &doomed).await;
    assert!(
        resolver_sockets(&internet).contains(&format!("{gateway}:53")),
        "A's resolver on the gateway"
    );

    client_b
        .delete_session(doomed.session_id)
        .await
        .expect("B deleting A's networked session");
    assert_nothing_left(&a, &view);
    assert!(
        !resolver_sockets(&internet).contains(&format!("{gateway}:53")),
        "A's resolver stopped"
    );
    assert!(slots_of(data.path(), "addresses", &view.sandbox_id).is_empty());
    assert!(slots_of(data.path(), "uids", &view.sandbox_id).is_empty());
    let interfaces = internet.sandbox_interfaces();
    assert_eq!(
        interfaces.len(),
        1,
        "only the other session's: {interfaces:?}"
    );
    assert_eq!(
        internet.tables().len(),
        tables_before.len() + 1,
        "only the other session's table"
    );
    assert!(
        data.path()
            .join("sessions")
            .join(doomed.session_id.to_string())
            .symlink_metadata()
            .is_err(),
        "its session link is gone"
    );
    let gone = client_a
        .get_session(doomed.session_id)
        .await
        .unwrap_err()
        .to_string();
    assert!(gone.starts_with("404"), "{gone}");

    // A serves a new networked session on the freed address, resolver and all.
    let next = networked(&client_a).await;
    assert_eq!(
        nameserver(&client_a, &next).await,
        gateway,
        "the freed slot, reused"
    );
    let resolved = sh(&client_a, &next, "getent hosts allowed.test")
        .await
        .stdout;
    assert!(resolved.contains(HTTP_HOST), "{resolved:?}");
    assert_eq!(sh(&client_a, &other, "echo ok").await.stdout, "ok\n");

    for s in [&next, &other] {
        client_b
            .delete_session(s.session_id)
            .await
            .expect("delete through B");
    }
    drop(b);
    drop(a);
    assert!(internet.sandbox_interfaces().is_empty());
}

/// Three replicas on one data directory; A is killed with SIGKILL. Once they know it dead, B
/// and C take its sessions over (one of them adopts each sandbox and watches it: a sandbox
/// whose agent then dies is cleaned), race to reap the one that expires and serve the delete
/// of the third. Each is destroyed once and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_replicas_take_over_a_dead_ones_sessions() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "1",
        ]
    };
    let mut a = TestServer::start_in_data_dir(data.path(), &args("a"));
    let b = TestServer::start_in_data_dir(data.path(), &args("b"));
    let c = TestServer::start_in_data_dir(data.path(), &args("c"));
    let client_a = a.client("t");
    let (client_b, client_c) = (b.client("t"), c.client("t"));
    let watched = session(&client_a).await;
    let expiring = session(&client_a).await;
    let deleted = session(&client_a).await;
    let views = [
        host_view(&client_a, &watched).await,
        host_view(&client_a, &expiring).await,
        host_view(&client_a, &deleted).await,
    ];
    // A's own runtime keeps it until someone takes it over (which may happen at once).
    let keeper = data.path().join("keepers").join(&views[0].sandbox_id);
    let first_keeper = std::fs::read_to_string(&keeper).unwrap();
    a.kill_hard();

    // Served while A is down; deleted through B (A's lease may not have lapsed yet: it is
    // destroyed all the same, A's processes being gone).
    assert_eq!(sh(&client_c, &deleted, "echo c").await.stdout, "c\n");
    client_b
        .delete_session(deleted.session_id)
        .await
        .expect("B deleting a dead A's session");

    // Its agent killed from the host once B or C took it over: whoever adopted it sees the
    // death and cleans up. Until one of them knows A dead nobody watches it, so the kill
    // waits for a take-over, seen as the keeper file naming a live runtime other than A's.
    let deadline = Instant::now() + Duration::from_secs(90);
    while std::fs::read_to_string(&keeper).is_ok_and(|k| k == first_keeper) {
        assert!(Instant::now() < deadline, "nobody took A's sessions over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &views[0].agent_pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match client_b.get_session(watched.session_id).await {
            Err(e) if e.to_string().starts_with("404") => break,
            _ => {
                assert!(
                    Instant::now() < deadline,
                    "the dead sandbox's session stays"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // The expiring one is reaped by B or C (racing), once.
    expire_now(&url, &[&expiring]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        match client_c.get_session(expiring.session_id).await {
            Err(e) if e.to_string().starts_with("404") => break,
            _ => {
                assert!(Instant::now() < deadline, "the expired session stays");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    for view in &views {
        assert_nothing_left(&b, view);
        for kind in ["uids", "addresses"] {
            assert!(
                slots_of(data.path(), kind, &view.sandbox_id).is_empty(),
                "{kind} slot freed"
            );
        }
    }
    assert_eq!(
        sh(&client_b, &session(&client_b).await, "echo b")
            .await
            .stdout,
        "b\n"
    );
}

/// Two replicas racing to reap the same expired sessions (their owner dead): each is
/// destroyed once (the other's mark fails), and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_reapers_on_one_data_dir_destroy_once() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "0",
        ]
    };
    // Sessions without an owner (as a SQLite-era row or one whose replica left): both reap.
    let mut a = TestServer::start_in_data_dir(data.path(), &args("a"));
    let client_a = a.client("t");
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let s = session(&client_a).await;
        let view = host_view(&client_a, &s).await;
        sessions.push((s, view));
    }
    a.kill_hard();
    let b = TestServer::start_in_data_dir(data.path(), &args("b"));
    let c = TestServer::start_in_data_dir(data.path(), &args("c"));
    let (client_b, client_c) = (b.client("t"), c.client("t"));
    for (s, _) in &sessions {
        assert_eq!(sh(&client_c, s, "echo up").await.stdout, "up\n");
    }
    // Ownerless (A is dead and has left no heartbeat B or C waits for) and expired: both
    // reapers see each row due at once.
    let all: Vec<&Session> = sessions.iter().map(|(s, _)| s).collect();
    disown(&url, &all);
    expire_now(&url, &all);
    let deadline = Instant::now() + Duration::from_secs(120);
    for (s, view) in &sessions {
        loop {
            match client_b.get_session(s.session_id).await {
                Err(e) if e.to_string().starts_with("404") => break,
                _ => {
                    assert!(Instant::now() < deadline, "an expired session stays");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        assert_nothing_left(&b, view);
        assert!(slots_of(data.path(), "uids", &view.sandbox_id).is_empty());
    }
    // Each destroy ran once: no replica logged a failed or repeated destroy, and both
    // replicas still serve.
    assert_eq!(
        sh(&client_b, &session(&client_b).await, "echo b")
            .await
            .stdout,
        "b\n"
    );
    assert_eq!(
        sh(&client_c, &session(&client_c).await, "echo c")
            .await
            .stdout,
        "c\n"
    );
}

/// 40 concurrent creates for one tenant, spread over two replicas, with a quota of 10: exactly
/// 10 succeed, the rest answer 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quota_is_exact_across_replicas() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "1",
            "--tenant-max-sessions",
            "10",
        ]
    };
    let a = TestServer::start_in_data_dir(data.path(), &args("a"));
    let b = TestServer::start_in_data_dir(data.path(), &args("b"));
    let clients = [a.client("t"), b.client("t")];
    let creates = (0..40).map(|i| {
        let client = clients[i % 2].clone();
        async move {
            client
                .create_session(&CreateSessionRequest::default())
                .await
        }
    });
    let results = futures_util::future::join_all(creates).await;
    let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let refused: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert_eq!(created.len(), 10, "exactly the quota: {refused:?}");
    assert!(refused.iter().all(|e| e.starts_with("429")), "{refused:?}");
    for (i, s) in created.iter().enumerate() {
        clients[i % 2].delete_session(s.session_id).await.unwrap();
    }
}

/// Runs the query `sql` on the test's PostgreSQL at `url`; its one value, as text.
fn psql_value(url: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-tAc", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The host's view of sandbox `sandbox` found by its cgroup, before any session is linked
/// to it.
fn sandbox_view(sandbox: &str) -> common::HostView {
    let procs = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .find_map(|root| {
            let found = std::process::Command::new("find")
                .args([root, "-maxdepth", "4", "-type", "d", "-name", sandbox])
                .output()
                .ok()?;
            let dir = String::from_utf8_lossy(&found.stdout)
                .lines()
                .next()?
                .to_owned();
            Some((root.to_string(), dir))
        })
        .expect("the sandbox's cgroup");
    let (root, dir) = procs;
    let agent_pid: i32 = std::fs::read_to_string(format!("{dir}/agent/cgroup.procs"))
        .expect("the agent's cgroup")
        .lines()
        .next()
        .expect("the agent")
        .parse()
        .unwrap();
    let uts = std::fs::read_link(format!("/proc/{agent_pid}/ns/uts"))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    common::HostView {
        agent_pid,
        cgroup: dir.strip_prefix(&root).unwrap().to_owned(),
        sandbox_id: sandbox.to_owned(),
        uts,
    }
}

/// A replica killed (SIGKILL) in the middle of a create, its sandbox claimed but its session
/// neither linked nor recorded: the live replica on the same data directory knows it dead at
/// once (its runtime's lock is free), deregisters it, deletes the interrupted create's row
/// (its quota slot with it), sweeps the half-made sandbox (processes, cgroups, directory,
/// socket, slots, keeper) while the dead one stays down, and adopts the dead one's running
/// session; its own session is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_create_leaves_nothing_the_live_one_does_not_clean() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let hook = tempfile::tempdir().unwrap();
    let stall = hook.path().join("stall");
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "0",
            "--tenant-max-sessions",
            "3",
        ]
    };
    let stall_env = stall.to_str().unwrap();
    let mut a = TestServer::start_in_data_dir_with_env(
        data.path(),
        &[("HUTCH_TEST_STALL_CREATE", stall_env)],
        &args("a"),
    );
    let b = TestServer::start_in_data_dir(data.path(), &args("b"));
    let (client_a, client_b) = (a.client("t"), b.client("t"));
    let a_running = session(&client_a).await;
    let b_own = session(&client_b).await;
    let b_view = host_view(&client_b, &b_own).await;
    let a_keeper = std::fs::read_to_string(
        data.path()
            .join("keepers")
            .join(host_view(&client_b, &a_running).await.sandbox_id),
    )
    .unwrap();

    // Armed: A's next create stalls once its sandbox is claimed.
    std::fs::write(&stall, "").unwrap();
    let stalled = {
        let client_a = client_a.clone();
        tokio::spawn(async move {
            client_a
                .create_session(&CreateSessionRequest::default())
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let sandbox = loop {
        let text = std::fs::read_to_string(&stall).unwrap();
        if !text.is_empty() {
            break text;
        }
        assert!(Instant::now() < deadline, "the create never stalled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let view = sandbox_view(&sandbox);
    assert!(data.path().join("sandboxes").join(&sandbox).exists());
    assert_eq!(
        psql_value(
            &url,
            "SELECT count(*) FROM sessions WHERE status = 'CREATING'"
        ),
        "1"
    );

    a.kill_hard();
    let killed = Instant::now();
    assert!(stalled.await.unwrap().is_err(), "the create never finished");
    let deadline = killed + Duration::from_secs(60);
    while data.path().join("sandboxes").join(&sandbox).exists()
        || psql_value(
            &url,
            "SELECT count(*) FROM sessions WHERE status = 'CREATING'",
        ) != "0"
    {
        assert!(
            Instant::now() < deadline,
            "the half-made sandbox or its row stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cleaned = killed.elapsed();
    assert_nothing_left(&b, &view);
    for kind in ["uids", "addresses"] {
        assert!(
            slots_of(data.path(), kind, &sandbox).is_empty(),
            "{kind} slot freed"
        );
    }
    assert!(!data.path().join("keepers").join(&sandbox).exists());
    // Known dead by its process, not by its lease: B deregistered it.
    assert_eq!(
        psql_value(&url, "SELECT count(*) FROM replicas WHERE id = 'a'"),
        "0"
    );

    // A's running session: adopted by B (which keeps it now), and served.
    let keeper = data
        .path()
        .join("keepers")
        .join(host_view(&client_b, &a_running).await.sandbox_id);
    let deadline = killed + Duration::from_secs(60);
    while std::fs::read_to_string(&keeper).is_ok_and(|k| k == a_keeper) {
        assert!(Instant::now() < deadline, "nobody took A's session over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let adopted = killed.elapsed();
    eprintln!(
        "after the kill: half-made sandbox swept in {cleaned:?}, session adopted in {adopted:?}"
    );
    assert_eq!(sh(&client_b, &a_running, "echo a").await.stdout, "a\n");
    // B's own session: the same sandbox, untouched.
    assert_eq!(
        host_view(&client_b, &b_own).await.agent_pid,
        b_view.agent_pid
    );
    assert_eq!(sh(&client_b, &b_own, "echo b").await.stdout, "b\n");
    // The quota counts what is left: the stalled create's slot is free again.
    let third = session(&client_b).await;
    for s in [&a_running, &b_own, &third] {
        client_b.delete_session(s.session_id).await.unwrap();
    }
    assert_nothing_left(&b, &b_view);
}

/// A networked session of replica A, on one data directory with B: A's resolver dies with A
/// (`kill -9`), and the session's names resolve again once B has adopted it, which B does as
/// soon as it sees A's process gone, not a lease later; B serves the resolver on the same
/// gateway address, and deletes the session leaving nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_networked_session_resolves_again_once_adopted() {
    if !can_run_sandboxes() {
        return;
    }
    let cluster = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = cluster.url("postgres");
    let internet = TestInternet::start();
    let data = tempfile::Builder::new()
        .prefix("hutch-e2e")
        .tempdir_in("/tmp")
        .unwrap();
    let args = |replica: &'static str| {
        vec![
            "--store",
            url.as_str(),
            "--replica",
            replica,
            "--warm-pool",
            "0",
            "--network-warm-pool",
            "0",
            "--network-allowed",
            "all",
            "--network-dns",
            net_common::DNS,
            "--network-pool",
            "10.231.0.0/29",
        ]
    };
    let netns = internet.server_netns();
    let mut a =
        TestServer::start_in_netns_and_data_dir(&netns, data.path(), "127.0.0.1:7420", &args("a"));
    let b =
        TestServer::start_in_netns_and_data_dir(&netns, data.path(), "127.0.0.1:7421", &args("b"));
    let (fwd_a, fwd_b) = (
        Forwarder::start(&netns, "127.0.0.1:7420".parse().unwrap()),
        Forwarder::start(&netns, "127.0.0.1:7421".parse().unwrap()),
    );
    let client_a = HutchClient::new(&fwd_a.url(), &a.token("t")).unwrap();
    let client_b = HutchClient::new(&fwd_b.url(), &b.token("t")).unwrap();
    let s = networked(&client_a).await;
    let gateway = nameserver(&client_b, &s).await;
    // One question, one second: a resolver that is down shows as a quick failure.
    let lookup = "RES_OPTIONS='timeout:1 attempts:1' getent hosts allowed.test";
    assert!(sh(&client_b, &s, lookup).await.stdout.contains(HTTP_HOST));
    let view = host_view(&client_b, &s).await;

    a.kill_hard();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(60);
    while !sh(&client_b, &s, lookup).await.stdout.contains(HTTP_HOST) {
        assert!(Instant::now() < deadline, "names never resolved again");
    }
    eprintln!(
        "a dead replica's networked session resolved again {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        psql_value(&url, "SELECT count(*) FROM replicas WHERE id = 'a'"),
        "0",
        "known dead by its process, not by its lease"
    );
    assert!(
        resolver_sockets(&internet).contains(&format!("{gateway}:53")),
        "B's resolver on the same gateway"
    );
    client_b
        .delete_session(s.session_id)
        .await
        .expect("B deleting the adopted session");
    assert_nothing_left(&b, &view);
    assert!(!resolver_sockets(&internet).contains(&format!("{gateway}:53")));
    assert!(slots_of(data.path(), "addresses", &view.sandbox_id).is_empty());
    drop(b);
    assert!(internet.sandbox_interfaces().is_empty());
}
