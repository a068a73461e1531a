//! Exhausting a session's resources hurts only that session, and only until it stops.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use common::{TestServer, can_run_sandboxes, session, session_with, sh, sh_with};
use hutch_api::{CodeRequest, CommandRequest, ProcessStatus, ResourcesRequest};

#[tokio::test]
async fn a_memory_hog_is_oom_killed_inside_its_own_session() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let hog = session_with(
        &client,
        ResourcesRequest {
            memory_mb: Some(64),
            ..Default::default()
        },
    )
    .await;
    let bystander = session(&client).await;

    let out = sh(
        &client,
        &hog,
        "python3 -c 'b = bytearray(512 * 1024 * 1024); print(len(b))'",
    )
    .await;
    assert_eq!(
        out.exit_code, 137,
        "killed by SIGKILL from the OOM killer: {out:?}"
    );
    assert!(
        !out.stdout.contains("536870912"),
        "the allocation never completed: {out:?}"
    );
    assert!(out.oom_killed, "the result says why: {out:?}");
    assert!(
        out.stderr.ends_with(
            "[hutch: killed by the kernel's out-of-memory killer: the session's memory limit (memoryMb 64) was reached]\n"
        ),
        "stderr names the limit: {out:?}"
    );

    client.health().await.expect("the server carries on");
    assert_eq!(
        sh(&client, &bystander, "echo fine").await.stdout,
        "fine\n",
        "other sessions carry on"
    );
    assert_eq!(
        sh(&client, &hog, "echo still-here").await.stdout,
        "still-here\n",
        "the session itself recovers"
    );
}

#[tokio::test]
async fn running_out_of_memory_is_named_in_code_runs_processes_and_interpreter_cells() {
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
    let hog = "b = bytearray(512 * 1024 * 1024)";

    // A SIGKILL that is not the OOM killer's is not called one.
    let killed = sh(&client, &s, "kill -9 $$").await;
    assert_eq!(killed.exit_code, 137, "{killed:?}");
    assert!(!killed.oom_killed, "{killed:?}");
    assert!(!killed.stderr.contains("out-of-memory"), "{killed:?}");

    let code = client
        .run_code(
            s.session_id,
            &CodeRequest {
                language: "python".into(),
                code: hog.into(),
                ..CodeRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(code.exit_code, 137, "{code:?}");
    assert!(code.oom_killed, "{code:?}");
    assert!(code.stderr.contains("(memoryMb 64)"), "{code:?}");

    let started = client
        .start_process(
            s.session_id,
            &CommandRequest {
                argv: Some(vec!["python3".into(), "-c".into(), hog.into()]),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let info = loop {
        let info = client.get_process(s.session_id, started.pid).await.unwrap();
        if info.status == ProcessStatus::Exited || std::time::Instant::now() > deadline {
            break info;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(info.signal, Some(9), "{info:?}");
    assert!(info.oom_killed, "the process status says why: {info:?}");

    // An interpreter cell: the worker dies, and the error frame says of what.
    let (status, body) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/interpreter/execute", s.session_id),
            Some(
                serde_json::to_vec(&serde_json::json!({ "code": hog }))
                    .unwrap()
                    .into(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let frames: Vec<serde_json::Value> = String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let error = frames
        .iter()
        .find(|f| f["type"] == "error")
        .unwrap_or_else(|| panic!("an error frame: {frames:?}"));
    assert_eq!(error["name"], "OutOfMemory", "{frames:?}");
    assert!(
        error["value"]
            .as_str()
            .unwrap()
            .contains("out-of-memory killer: the session's memory limit (memoryMb 64) was reached"),
        "{error}"
    );
    let control = frames.last().unwrap();
    assert_eq!(control["type"], "control");
    assert_eq!(control["text"], "crashed");
    assert_eq!(control["signal"], 9);

    assert_eq!(
        sh(&client, &s, "echo still-here").await.stdout,
        "still-here\n",
        "the session carries on"
    );
}

#[tokio::test]
async fn a_fork_bomb_hits_the_pids_limit_and_the_session_stays_usable() {
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

    let bomb = "bomb() { bomb | bomb & }; bomb; sleep 2; echo survived";
    let out = sh_with(
        &client,
        &s,
        &format!("bash -c '{bomb}' 2>&1 | tail -n 3"),
        10.0,
    )
    .await;
    assert!(
        out.stdout.contains("Resource temporarily unavailable") || out.timed_out,
        "forks were refused: {out:?}"
    );

    let after = sh(&client, &s, "ps -e | wc -l").await;
    assert_eq!(after.exit_code, 0, "{after:?}");
    let count: usize = after.stdout.trim().parse().unwrap();
    assert!(count < 8, "nothing of the bomb is left: {count} processes");
}

#[tokio::test]
async fn an_endless_loop_ends_at_the_timeout_with_its_whole_tree() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let started = std::time::Instant::now();
    let out = sh_with(
        &client,
        &s,
        "sleep 1000 & (setsid sleep 1001 &); while :; do :; done",
        1.0,
    )
    .await;
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
    assert!(
        (900..5000).contains(&out.duration_ms),
        "ended near the timeout: {out:?}"
    );
    assert!(started.elapsed().as_secs() < 10);

    let left = sh(&client, &s, "ps -e -o comm= | grep -c sleep || true")
        .await
        .stdout;
    assert_eq!(
        left.trim(),
        "0",
        "children and detached grandchildren died with the command"
    );
}

#[tokio::test]
async fn a_finished_command_leaves_no_background_processes() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let out = sh(
        &client,
        &s,
        "nohup setsid sleep 1000 >/dev/null 2>&1 & echo started",
    )
    .await;
    assert_eq!(out.stdout, "started\n");
    assert!(
        out.duration_ms < 5000,
        "the command returns when its first process exits: {out:?}"
    );
    let left = sh(&client, &s, "ps -e -o comm= | grep -c sleep || true")
        .await
        .stdout;
    assert_eq!(left.trim(), "0");
}

#[tokio::test]
async fn cpu_is_capped_by_the_quota() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with(
        &client,
        ResourcesRequest {
            cpus: Some(0.2),
            ..Default::default()
        },
    )
    .await;
    // A busy loop for 1.5 s of wall time may use about 0.3 s of CPU at 0.2 CPUs.
    let out = sh_with(
        &client,
        &s,
        "bash -c 'timeout 1.5 sh -c \"while :; do :; done\"; times' | tail -n 1",
        10.0,
    )
    .await;
    // `times` prints the children's user and system time, e.g. `0m0.290s 0m0.004s`.
    let seconds = |t: &str| -> f64 {
        let (m, s) = t
            .trim_end_matches('s')
            .split_once('m')
            .unwrap_or(("0", "0"));
        m.parse::<f64>().unwrap_or(0.0) * 60.0 + s.parse::<f64>().unwrap_or(0.0)
    };
    let cpu: f64 = out.stdout.split_whitespace().map(seconds).sum();
    assert!(cpu > 0.05, "the loop ran: {cpu}");
    assert!(
        cpu < 0.75,
        "the loop got about its quota, not a whole core: {cpu} s of CPU in 1.5 s"
    );
}

#[tokio::test]
async fn oversized_command_requests_are_refused_with_clear_errors() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let path = format!("/v1/sessions/{}/commands", s.session_id);

    // stdin over its limit, in a body the agent still reads: a 400 naming the field.
    let stdin = "x".repeat(hutch_api::limits::COMMAND_STDIN_MAX_BYTES + 1);
    let body = serde_json::json!({ "command": "wc -c", "stdin": stdin }).to_string();
    let (status, answer) = client
        .request(http::Method::POST, &path, Some(body.into()))
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("stdin"));

    // A body past anything a command could need: 413.
    let huge = serde_json::json!({ "command": "true", "stdin": "y".repeat(32 << 20) }).to_string();
    let (status, answer) = client
        .request(http::Method::POST, &path, Some(huge.into()))
        .await
        .unwrap();
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("payload_too_large"));

    // Just under the limit goes through whole.
    let stdin = "z".repeat(hutch_api::limits::COMMAND_STDIN_MAX_BYTES);
    let req = hutch_api::CommandRequest {
        command: Some("wc -c".into()),
        stdin: Some(stdin),
        ..Default::default()
    };
    let out = client.run_command(s.session_id, &req).await.unwrap();
    assert_eq!(
        out.stdout.trim(),
        hutch_api::limits::COMMAND_STDIN_MAX_BYTES.to_string()
    );
}
