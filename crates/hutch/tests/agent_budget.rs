//! The agent survives whatever user code does inside the session's limits: it lives beside
//! that code, not under its limits, and `/tmp` and `/dev/shm` (one tmpfs) are bounded below
//! them.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, host_view, pids_in_uts, session_with, sh, sh_with};
use hutch_api::{CommandRequest, ResourcesRequest};

/// Starts `command` in the background of session `s`.
async fn start(client: &hutch_client::HutchClient, s: &hutch_api::Session, command: &str) {
    let req = CommandRequest {
        command: Some(command.to_owned()),
        ..CommandRequest::default()
    };
    client
        .start_process(s.session_id, &req)
        .await
        .expect("start process");
}

#[tokio::test]
async fn filling_tmp_or_dev_shm_gives_the_writer_enospc_and_the_session_lives_on() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with(
        &client,
        ResourcesRequest {
            memory_mb: Some(256),
            ..Default::default()
        },
    )
    .await;
    sh(&client, &s, "echo kept > /workspace/kept").await;

    // /tmp, /dev/shm and /dev are one tmpfs of three quarters of the memory limit: once
    // /tmp has filled it, /dev/shm is full too, and both writers get ENOSPC.
    for dir in ["/tmp", "/dev/shm"] {
        let fill = sh_with(
            &client,
            &s,
            &format!("head -c 2000000000 /dev/zero > {dir}/fill; echo rc=$?"),
            60.0,
        )
        .await;
        assert!(
            fill.stderr.contains("No space left on device"),
            "the writer gets ENOSPC in {dir}: {fill:?}"
        );
        assert!(fill.stdout.contains("rc=1"), "{fill:?}");
        assert!(!fill.oom_killed, "nothing was OOM-killed: {fill:?}");
    }
    let sizes = sh(&client, &s, "du -m /tmp/fill /dev/shm/fill | cut -f1").await;
    assert_eq!(sizes.stdout, "192\n0\n", "{sizes:?}");
    let df = sh(
        &client,
        &s,
        "df -m /tmp /dev/shm /dev | tail -n +2 | tr -s ' ' | cut -d' ' -f2",
    )
    .await;
    assert_eq!(
        df.stdout, "192\n192\n192\n",
        "one size for the three: {df:?}"
    );
    let after = sh(
        &client,
        &s,
        "python3 -c 'b = bytearray(32 << 20); print(len(b))' && cat /workspace/kept",
    )
    .await;
    assert_eq!(
        after.stdout,
        format!("{}\nkept\n", 32 << 20),
        "the session answers and its files survive: {after:?}"
    );
    assert_eq!(
        sh(&client, &s, "rm /tmp/fill /dev/shm/fill && echo freed")
            .await
            .stdout,
        "freed\n"
    );
}

#[tokio::test]
async fn a_full_process_table_leaves_the_agent_answering() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with(
        &client,
        ResourcesRequest {
            pids: Some(32),
            ..Default::default()
        },
    )
    .await;

    let view = host_view(&client, &s).await;
    // A fork bomb that fills the session's pids limit and keeps it full: none of its
    // processes ends.
    let bomb = "import os, time\n\
        while True:\n    \
            try:\n        \
                if os.fork() == 0:\n            time.sleep(3600); os._exit(0)\n    \
            except OSError:\n        time.sleep(0.01)\n";
    start(&client, &s, &format!("python3 -c '{bomb}'")).await;
    let user_pids = || {
        let session = format!("/sys/fs/cgroup/pids{}", view.cgroup);
        ["/user/pids.current", "/pids.current"]
            .iter()
            .find_map(|file| std::fs::read_to_string(format!("{session}{file}")).ok())
            .map(|n| n.trim().parse::<u64>().unwrap())
            .expect("the session's pids cgroup")
    };
    let until = Instant::now() + Duration::from_secs(20);
    while user_pids() < 32 {
        assert!(
            Instant::now() < until,
            "the bomb fills the limit: {}",
            user_pids()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The agent still has threads and processes to answer with, and starts commands (that
    // cannot fork themselves while the limit is full, but can end the bomb).
    for _ in 0..3 {
        let alive = sh(&client, &s, "echo alive").await;
        assert_eq!(alive.stdout, "alive\n", "{alive:?}");
    }
    let end = sh(&client, &s, "kill -9 -1; echo done").await;
    assert_eq!(end.exit_code, 0, "{end:?}");
    // The killed processes are reaped by the agent a moment later; until then the table may
    // still be too full to start `ps` and `wc`.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let left = sh(&client, &s, "ps -e | wc -l").await;
        match left.stdout.trim().parse::<usize>() {
            Ok(n) if n < 8 => break,
            _ => assert!(Instant::now() < until, "the bomb is gone: {left:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_memory_hog_at_the_limit_leaves_the_agent_answering() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with(
        &client,
        ResourcesRequest {
            memory_mb: Some(64),
            ..Default::default()
        },
    )
    .await;
    let view = host_view(&client, &s).await;

    // A hog that keeps the session's memory at its limit: each one is OOM-killed, the next
    // starts at once.
    start(
        &client,
        &s,
        "while true; do python3 -c 'b = bytearray(512 << 20)'; done",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..5 {
        let alive = sh(&client, &s, "echo alive").await;
        assert_eq!(alive.stdout, "alive\n", "{alive:?}");
    }
    let (status, body) = client
        .request(
            http::Method::PUT,
            &format!(
                "/v1/sessions/{}/files/content?path=/workspace/note",
                s.session_id
            ),
            Some(vec![b'x'; 1 << 20].into()),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body:?}");
    assert!(
        std::fs::read_to_string(format!("/proc/{}/cgroup", view.agent_pid))
            .unwrap()
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with("/agent")),
        "the agent lives in agent/, beside the code it runs"
    );
    sh(&client, &s, "pkill -9 -f 'while true' ; true").await;
}

#[tokio::test]
async fn commands_run_under_the_sessions_limits_and_the_agent_beside_them() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with(
        &client,
        ResourcesRequest {
            memory_mb: Some(100),
            pids: Some(50),
            ..Default::default()
        },
    )
    .await;
    let view = host_view(&client, &s).await;
    let inside = sh(&client, &s, "cat /proc/self/cgroup").await.stdout;
    assert!(
        inside.lines().any(|l| l.starts_with("0::/user/cmd-")),
        "each command has its own cgroup below user/: {inside}"
    );
    let limits = cgroup_file_text(&view.cgroup);
    for (file, want) in [
        ("memory/{}/memory.limit_in_bytes", 100u64 << 20),
        ("pids/{}/user/pids.max", 50),
        ("pids/{}/pids.max", 50 + 64),
    ] {
        if let Some(got) = limits(file) {
            assert_eq!(got, want.to_string(), "{file}");
        }
    }
    // In the v1 memory hierarchy the session has one memory cgroup, its commands': the agent's
    // is the server's, beside every other session's agent.
    if let Some(procs) = limits("memory/{}/cgroup.procs") {
        let agent = view.agent_pid.to_string();
        assert!(!procs.lines().any(|p| p == agent), "{procs}");
        start(&client, &s, "sleep 30").await;
        let procs = limits("memory/{}/cgroup.procs").unwrap();
        let commands: Vec<String> = pids_in_uts(&view.uts)
            .into_iter()
            .filter(|pid| *pid != view.agent_pid)
            .map(|pid| pid.to_string())
            .collect();
        assert!(
            commands.iter().any(|pid| procs.lines().any(|p| p == pid)),
            "the session's processes {commands:?} are under its memory limit: {procs}"
        );
        let memory_line = std::fs::read_to_string(format!("/proc/{}/cgroup", view.agent_pid))
            .unwrap()
            .lines()
            .find(|l| l.split(':').nth(1) == Some("memory"))
            .map(str::to_owned)
            .unwrap();
        let instance = view.cgroup.rsplit_once('/').unwrap().0;
        assert!(
            memory_line.ends_with(&format!(":{instance}")),
            "the agent's memory cgroup is the instance's ({instance}): {memory_line}"
        );
        for child in ["agent", "user"] {
            assert!(
                limits(&format!("memory/{{}}/{child}/tasks")).is_none(),
                "{child}"
            );
        }
    }
    // In the other v1 hierarchies the agent lives in the session's cgroup itself, beside
    // `user/` (which holds the commands), with no `agent/` of its own.
    for hierarchy in ["pids", "cpu"] {
        let Some(procs) = limits(&format!("{hierarchy}/{{}}/cgroup.procs")) else {
            continue;
        };
        let agent = view.agent_pid.to_string();
        assert!(procs.lines().any(|p| p == agent), "{hierarchy}: {procs}");
        assert!(
            limits(&format!("{hierarchy}/{{}}/agent/tasks")).is_none(),
            "{hierarchy} has no agent/"
        );
        assert!(
            limits(&format!("{hierarchy}/{{}}/user/tasks")).is_some(),
            "{hierarchy} has user/"
        );
    }
}

/// Reads a v1 cgroup file of the sandbox (`{}` stands for its path), where the host has v1.
fn cgroup_file_text(cgroup: &str) -> impl Fn(&str) -> Option<String> + '_ {
    move |file| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{}", file.replace("{}", cgroup)))
            .ok()
            .map(|t| t.trim().to_owned())
    }
}
