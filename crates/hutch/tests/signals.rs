//! Sandboxes start every process with default signal dispositions and an empty signal mask,
//! whatever the server inherited: a server started as `nohup hutch serve &` ignores SIGHUP,
//! SIGINT and SIGQUIT, and none of that reaches a session.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, session, sh};
use serde_json::{Value, json};

/// The hexadecimal mask of a `/proc/PID/status` line such as `SigIgn:`.
fn status_mask(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .unwrap_or_else(|| panic!("no {field} in {status}"));
    u64::from_str_radix(line.trim(), 16).unwrap()
}

#[tokio::test]
async fn a_server_started_with_signals_ignored_gives_sessions_the_defaults() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with_signals_ignored(&["--warm-pool", "1"]);
    // The server itself really ignores SIGHUP and SIGQUIT (bits 0 and 2). SIGINT (bit 1) it
    // soon catches itself, to shut down, so whether it still shows as ignored is a race.
    let server_status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
    assert_eq!(status_mask(&server_status, "SigIgn:") & 0b101, 0b101);

    let client = server.client("alice");
    let s = session(&client).await;

    // A user process: nothing ignored, nothing blocked.
    let status = sh(&client, &s, "cat /proc/self/status").await.stdout;
    assert_eq!(status_mask(&status, "SigIgn:"), 0, "{status}");
    assert_eq!(status_mask(&status, "SigBlk:"), 0, "{status}");
    // The agent too.
    let agent = sh(&client, &s, "cat /proc/1/status").await.stdout;
    assert_eq!(status_mask(&agent, "SigBlk:") & 0b111, 0, "{agent}");
    assert_eq!(status_mask(&agent, "SigIgn:") & 0b111, 0, "{agent}");

    // A shell may trap SIGINT only when it did not start with it ignored.
    let trapped = sh(
        &client,
        &s,
        "trap 'echo caught' INT; kill -INT $$; echo after",
    )
    .await;
    assert_eq!(trapped.stdout, "caught\nafter\n", "{trapped:?}");

    // The bash interpreter's interrupt ends a running cell.
    let base = format!("/v1/sessions/{}/interpreter", s.session_id);
    let (status, created) = client
        .request(
            http::Method::POST,
            &format!("{base}/contexts"),
            Some(
                serde_json::to_vec(&json!({"language": "bash"}))
                    .unwrap()
                    .into(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{created:?}");
    let context: Value = serde_json::from_slice(&created).unwrap();
    let context = context["id"].as_str().unwrap().to_owned();
    let running = {
        let client = client.clone();
        let request = json!({"code": "sleep 60; echo slept", "contextId": context});
        let path = format!("{base}/execute");
        tokio::spawn(async move {
            client
                .request(
                    http::Method::POST,
                    &path,
                    Some(serde_json::to_vec(&request).unwrap().into()),
                )
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let (status, answer) = client
        .request(
            http::Method::POST,
            &format!("{base}/contexts/{context}/interrupt"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&answer).unwrap(),
        json!({"interrupted": true})
    );
    let (status, frames) = tokio::time::timeout(Duration::from_secs(20), running)
        .await
        .expect("the interrupted cell ends")
        .unwrap();
    assert_eq!(status, 200);
    let frames = String::from_utf8(frames.to_vec()).unwrap();
    let last: Value = serde_json::from_str(frames.lines().last().unwrap()).unwrap();
    assert_eq!(last["text"], "interrupted", "{frames}");
    assert!(!frames.contains("slept"), "{frames}");
    // The sleep itself ended at the signal, long before its 60 s (a loaded machine may take
    // seconds to deliver the answer).
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the interrupt took {:?}",
        started.elapsed()
    );
}
