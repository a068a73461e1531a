//! Pausing and resuming sessions, end to end: a paused session's processes are frozen (no CPU
//! time), keep every byte of their state, and go on after the resume; its in-session routes
//! answer 409 `session_paused` at once; timeouts do not count the pause; a paused session
//! survives a server crash and expires like a running one; an unused `default` context's
//! worker is stopped while paused and started again on resume, a used one is kept.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    HostView, TestServer, assert_nothing_left, can_run_sandboxes, host_view, pids_in_uts, session,
    sh, sh_with,
};
use hutch_api::{AutoPause, CommandRequest, CreateSessionRequest, ErrorCode, SessionStatus};
use hutch_client::HutchClient;

/// CPU time the sandbox's processes used so far, in microseconds, from the host's cgroup files
/// (v2 `cpu.stat`, else v1 `cpuacct.usage`).
fn cpu_usec(view: &HostView) -> u64 {
    let relative = view.cgroup.trim_start_matches('/');
    for root in ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"] {
        let stat = Path::new(root).join(relative).join("cpu.stat");
        if let Ok(text) = std::fs::read_to_string(&stat)
            && let Some(usec) = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
        {
            return usec;
        }
    }
    let usage = Path::new("/sys/fs/cgroup/cpuacct")
        .join(relative)
        .join("cpuacct.usage");
    let ns: u64 = std::fs::read_to_string(&usage)
        .unwrap_or_else(|e| panic!("no CPU accounting for {}: {e}", view.cgroup))
        .trim()
        .parse()
        .unwrap();
    ns / 1000
}

/// Starts `command` as a background process of the session.
async fn background(client: &HutchClient, session: uuid::Uuid, command: &str) {
    let req = CommandRequest {
        command: Some(command.to_owned()),
        ..CommandRequest::default()
    };
    client.start_process(session, &req).await.unwrap();
}

/// Runs Python `code` in the session's default interpreter context; returns its stdout.
async fn python(client: &HutchClient, session: uuid::Uuid, code: &str) -> String {
    let body = serde_json::json!({ "code": code });
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{session}/interpreter/execute"),
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|f| f["type"] == "stdout")
        .map(|f| f["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_paused_session_uses_no_cpu_and_runs_on_after_resume() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let view = host_view(&client, &s).await;
    background(
        &client,
        s.session_id,
        "i=0; while true; do i=$((i+1)); done",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let paused = client.pause_session(s.session_id).await.unwrap();
    assert_eq!(paused.status, SessionStatus::Paused);
    assert!(paused.paused_at.is_some());
    let before = cpu_usec(&view);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = cpu_usec(&view) - before;
    assert!(during < 10_000, "{during} µs of CPU while paused");

    let resumed = client.resume_session(s.session_id).await.unwrap();
    assert_eq!(resumed.status, SessionStatus::Running);
    assert_eq!(resumed.paused_at, None);
    let before = cpu_usec(&view);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = cpu_usec(&view) - before;
    // Well under a core on a busy host, but clearly running.
    assert!(
        after > 20_000,
        "only {after} µs of CPU in 2 s after the resume"
    );
}

#[tokio::test]
async fn state_survives_a_pause_and_a_timeout_does_not_count_it() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    assert_eq!(
        python(&client, s.session_id, "x = 41\nprint('set')").await,
        "set\n"
    );
    sh(&client, &s, "echo kept > /workspace/file").await;
    background(
        &client,
        s.session_id,
        "i=0; while true; do i=$((i+1)); echo $i >> /workspace/seq; sleep 0.1; done",
    )
    .await;
    // A command with a 5 s timeout that needs 3 s, paused 1 s in for 10 s.
    let slow = {
        let client = client.clone();
        let s = s.clone();
        tokio::spawn(async move { sh_with(&client, &s, "sleep 3; echo finished", 5.0).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.pause_session(s.session_id).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    client.resume_session(s.session_id).await.unwrap();

    let slow = slow.await.unwrap();
    assert_eq!(slow.stdout, "finished\n", "{slow:?}");
    assert_eq!(slow.exit_code, 0, "{slow:?}");
    assert_eq!(python(&client, s.session_id, "print(x + 1)").await, "42\n");
    assert_eq!(
        sh(&client, &s, "cat /workspace/file").await.stdout,
        "kept\n"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seq = sh(&client, &s, "cat /workspace/seq").await.stdout;
    let numbers: Vec<u64> = seq.lines().map(|l| l.parse().unwrap()).collect();
    let expected: Vec<u64> = (1..=numbers.len() as u64).collect();
    assert_eq!(
        numbers, expected,
        "the background process went on where it stopped"
    );
    // 10 s paused: about 2 s of counting at 10 a second, not 12 s.
    assert!(
        numbers.len() < 60,
        "it counted while paused: {}",
        numbers.len()
    );
}

#[tokio::test]
async fn requests_to_a_paused_session_answer_409_at_once() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let other = session(&client).await;
    client.pause_session(s.session_id).await.unwrap();
    // Pausing twice is harmless and answers the session as it is.
    let again = client.pause_session(s.session_id).await.unwrap();
    assert_eq!(again.status, SessionStatus::Paused);
    assert_eq!(
        client.get_session(s.session_id).await.unwrap().status,
        SessionStatus::Paused
    );

    for (method, rest) in [
        (http::Method::POST, "commands"),
        (http::Method::GET, "files?path=/workspace"),
        (http::Method::GET, "processes"),
    ] {
        let started = Instant::now();
        let body =
            (method == http::Method::POST).then(|| br#"{"command": "true"}"#.to_vec().into());
        let (status, body) = client
            .request(
                method,
                &format!("/v1/sessions/{}/{rest}", s.session_id),
                body,
            )
            .await
            .unwrap();
        // A request that reached the frozen agent would wait for its timeout instead.
        assert!(started.elapsed() < Duration::from_secs(5), "{rest} hung");
        assert_eq!(status.as_u16(), 409, "{rest}");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "session_paused", "{rest}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("resume")
        );
    }
    let err = client
        .run_command(s.session_id, &CommandRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SessionPaused));

    // The list filters by state.
    let (status, bytes) = client
        .request(http::Method::GET, "/v1/sessions?status=PAUSED", None)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let list: hutch_api::SessionList = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.sessions[0].session_id, s.session_id);
    let (status, _) = client
        .request(http::Method::GET, "/v1/sessions?status=ASLEEP", None)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 400);

    client.resume_session(s.session_id).await.unwrap();
    let twice = client.resume_session(s.session_id).await.unwrap();
    assert_eq!(twice.status, SessionStatus::Running);
    assert_eq!(sh(&client, &s, "echo awake").await.stdout, "awake\n");
    assert_eq!(sh(&client, &other, "echo other").await.stdout, "other\n");
}

#[tokio::test]
async fn paused_sessions_stay_paused_through_a_server_crash_and_resume() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start();
    let client = server.client("alice");
    let mut sessions = Vec::new();
    for n in 0..3 {
        let s = session(&client).await;
        sh(&client, &s, &format!("echo {n} > /workspace/n")).await;
        client.pause_session(s.session_id).await.unwrap();
        sessions.push(s);
    }

    server.kill_hard();
    server.restart();
    let client = server.client("alice");

    for (n, s) in sessions.iter().enumerate() {
        let row = client.get_session(s.session_id).await.unwrap();
        assert_eq!(
            row.status,
            SessionStatus::Paused,
            "session {n} after the restart"
        );
        let refused = client
            .run_command(s.session_id, &CommandRequest::default())
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Some(ErrorCode::SessionPaused));
    }
    for (n, s) in sessions.iter().enumerate() {
        client.resume_session(s.session_id).await.unwrap();
        assert_eq!(
            sh(&client, s, "cat /workspace/n").await.stdout,
            format!("{n}\n")
        );
    }
}

#[tokio::test]
async fn a_paused_session_expires_like_a_running_one() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = client
        .create_session(&CreateSessionRequest {
            ttl: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let view = host_view(&client, &s).await;
    client.pause_session(s.session_id).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(75);
    loop {
        match client.get_session(s.session_id).await {
            Ok(row) => {
                assert!(Instant::now() < deadline, "still {:?}", row.status);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(err) => {
                assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));
                break;
            }
        }
    }
    assert_nothing_left(&server, &view);
}

#[tokio::test]
async fn an_idle_session_pauses_itself_and_the_next_request_resumes_it() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let create = |keep_awake: bool| CreateSessionRequest {
        auto_pause: Some(AutoPause {
            idle_seconds: 10,
            keep_awake,
        }),
        ..Default::default()
    };
    // The sessions that must stay awake come first: once the ones made after them have
    // paused themselves, an auto-pause pass has seen these idle for as long and left them.
    let kept_awake = client.create_session(&create(true)).await.unwrap();
    background(&client, kept_awake.session_id, "sleep 1000").await;
    // A command that runs longer than idleSeconds keeps its session awake.
    let busy = client.create_session(&create(false)).await.unwrap();
    let long = {
        let client = client.clone();
        let busy = busy.clone();
        tokio::spawn(async move { sh_with(&client, &busy, "sleep 30; echo done", 90.0).await })
    };
    let idle = client.create_session(&create(false)).await.unwrap();
    assert_eq!(idle.auto_pause.unwrap().idle_seconds, 10);
    // A background process does not keep a session awake, unless it asks for keepAwake.
    let background_only = client.create_session(&create(false)).await.unwrap();
    background(&client, background_only.session_id, "sleep 1000").await;

    let status = |id| {
        let client = client.clone();
        async move { client.get_session(id).await.unwrap().status }
    };
    // Pauses come from a pass a second, after 10 s without a request; on a loaded machine
    // a pass and its write can lag, so this waits for them rather than for a fixed time.
    let made = Instant::now();
    let deadline = made + Duration::from_secs(30);
    for session in [&idle, &background_only] {
        while status(session.session_id).await != SessionStatus::Paused {
            assert!(
                Instant::now() < deadline,
                "{} never paused",
                session.session_id
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    assert!(
        made.elapsed() >= Duration::from_secs(9),
        "paused before 10 s idle"
    );
    // The long command ends 30 s after it started, so the busy session cannot have been idle
    // for 10 s before 40 s: it is awake now unless it was paused under its command.
    assert_eq!(status(kept_awake.session_id).await, SessionStatus::Running);
    assert_eq!(status(busy.session_id).await, SessionStatus::Running);
    assert_eq!(long.await.unwrap().stdout, "done\n");

    // The next request resumes the session first and succeeds: the client sees no pause.
    assert_eq!(sh(&client, &idle, "echo awake").await.stdout, "awake\n");
    assert_eq!(status(idle.session_id).await, SessionStatus::Running);

    // A client's pause of a session that paused itself holds until the client resumes it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while status(background_only.session_id).await != SessionStatus::Paused {
        assert!(Instant::now() < deadline, "never paused");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    client
        .pause_session(background_only.session_id)
        .await
        .unwrap();
    let refused = client
        .run_command(
            background_only.session_id,
            &CommandRequest {
                command: Some("echo awake".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::SessionPaused));
    client
        .resume_session(background_only.session_id)
        .await
        .unwrap();
    assert_eq!(
        sh(&client, &background_only, "echo awake").await.stdout,
        "awake\n"
    );
}

#[tokio::test]
async fn stats_come_from_the_session_cgroup_running_or_paused() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    sh(
        &client,
        &s,
        "head -c 20000000 /dev/zero > /workspace/f; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
    )
    .await;
    background(&client, s.session_id, "sleep 1000").await;
    let stats = client.session_stats(s.session_id).await.unwrap();
    assert!(stats.memory_bytes > 1 << 20, "{stats:?}");
    assert!(stats.cpu_seconds > 0.0, "{stats:?}");
    // The agent and the background sleep, at least.
    assert!(stats.pids >= 2, "{stats:?}");

    client.pause_session(s.session_id).await.unwrap();
    let paused = client.session_stats(s.session_id).await.unwrap();
    assert!(paused.pids >= 2, "{paused:?}");

    let (status, bytes) = client
        .request(http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let text = String::from_utf8_lossy(&bytes);
    for name in [
        "hutch_session_memory_bytes",
        "hutch_session_cpu_seconds_total",
        "hutch_session_pids",
    ] {
        let series = format!("{name}{{session=\"{}\"}} ", s.session_id);
        assert!(text.contains(&series), "{series} missing from /metrics");
    }

    let other = client
        .session_stats(uuid::Uuid::now_v7())
        .await
        .unwrap_err();
    assert_eq!(other.code(), Some(ErrorCode::SessionNotFound));
}

/// Whether the session's `default` context has a live worker (`active`).
async fn default_active(client: &HutchClient, session: uuid::Uuid) -> bool {
    let (status, bytes) = client
        .request(
            http::Method::GET,
            &format!("/v1/sessions/{session}/interpreter/contexts/default"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let context: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(context["id"], "default");
    context["active"] == true
}

/// Waits (at most 60 s) until the session's `default` context has a live worker.
async fn wait_default_active(client: &HutchClient, session: uuid::Uuid) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !default_active(client, session).await {
        assert!(
            Instant::now() < deadline,
            "the default context did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The session's python worker processes, seen from the host.
fn workers(view: &HostView) -> Vec<i32> {
    pids_in_uts(&view.uts)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("python3\0-S\0"))
        })
        .collect()
}

/// The interpreter context cgroups (`ctx-N`) of the session, on a host with cgroup v2.
fn context_cgroups(view: &HostView) -> Option<usize> {
    let relative = view.cgroup.trim_start_matches('/');
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .map(|root| Path::new(root).join(relative))
        .find(|dir| dir.join("cgroup.procs").exists())
        .map(|dir| {
            walk(&dir)
                .iter()
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("ctx-"))
                })
                .count()
        })
}

/// Every directory under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            all.push(entry.path());
            all.extend(walk(&entry.path()));
        }
    }
    all
}

#[tokio::test]
async fn an_unused_default_context_sleeps_through_a_pause_and_a_used_one_keeps_its_state() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let unused = session(&client).await;
    let used = session(&client).await;
    let unused_view = host_view(&client, &unused).await;
    let used_view = host_view(&client, &used).await;
    wait_default_active(&client, unused.session_id).await;
    assert_eq!(
        python(&client, used.session_id, "x = 41\nprint('set')").await,
        "set\n"
    );
    assert_eq!(workers(&unused_view).len(), 1);
    let idle = client.session_stats(unused.session_id).await.unwrap();

    for _ in 0..2 {
        client.pause_session(unused.session_id).await.unwrap();
        client.pause_session(used.session_id).await.unwrap();
        // The unused context's worker is gone while paused, with its cgroup and its memory;
        // the used one is frozen with its state.
        assert_eq!(workers(&unused_view), Vec::<i32>::new());
        assert_eq!(workers(&used_view).len(), 1);
        if let Some(count) = context_cgroups(&unused_view) {
            assert_eq!(count, 0, "the stopped worker's cgroup is removed");
        }
        let paused = client.session_stats(unused.session_id).await.unwrap();
        assert!(
            paused.rss_bytes + (1 << 20) < idle.rss_bytes,
            "paused {paused:?}, idle {idle:?}"
        );

        client.resume_session(unused.session_id).await.unwrap();
        client.resume_session(used.session_id).await.unwrap();
        // Started again by the resume: the same context, ready without a request.
        wait_default_active(&client, unused.session_id).await;
        assert_eq!(workers(&unused_view).len(), 1);
        if let Some(count) = context_cgroups(&unused_view) {
            assert_eq!(count, 1);
        }
    }
    assert_eq!(
        python(&client, unused.session_id, "print(6 * 7)").await,
        "42\n"
    );
    assert_eq!(
        python(&client, used.session_id, "print(x + 1)").await,
        "42\n"
    );
    // Now used, the context keeps its worker and its state through a pause.
    assert_eq!(python(&client, unused.session_id, "y = 'kept'").await, "");
    client.pause_session(unused.session_id).await.unwrap();
    assert_eq!(workers(&unused_view).len(), 1);
    client.resume_session(unused.session_id).await.unwrap();
    assert_eq!(
        python(&client, unused.session_id, "print(y)").await,
        "kept\n"
    );
    // One worker each, nothing left over from the stopped ones.
    assert_eq!(workers(&unused_view).len(), 1);
    assert_eq!(workers(&used_view).len(), 1);
}

#[tokio::test]
async fn a_pause_racing_a_delete_answers_a_client_error_never_a_502() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    for _ in 0..10 {
        let s = session(&client).await;
        let pauses: Vec<_> = (0..3)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.pause_session(s.session_id).await })
            })
            .collect();
        let deleted = client.delete_session(s.session_id).await;
        for pause in pauses {
            if let Err(err) = pause.await.unwrap() {
                assert!(
                    matches!(
                        err.code(),
                        Some(ErrorCode::Conflict | ErrorCode::SessionNotFound)
                    ),
                    "a pause that lost to the delete: {err}"
                );
            }
        }
        // The delete wins, or, after a pause, deletes the paused session.
        if let Err(err) = deleted {
            assert_eq!(err.code(), Some(ErrorCode::SessionNotFound), "{err}");
        }
        assert!(client.get_session(s.session_id).await.is_err());
    }
}
