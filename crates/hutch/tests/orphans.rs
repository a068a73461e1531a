//! A sandbox never outlives its session's expiry by more than the grace, with or without a
//! server: a server that stopped and did not come back leaves sandboxes that end themselves,
//! while a renewed session lives on and a restarted server still adopts it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, assert_nothing_left, can_run_sandboxes, host_view, sh};
use hutch_api::{CreateSessionRequest, UpdateSessionRequest};

/// Whether the host process `pid` is still a sandbox's agent.
fn agent_runs(pid: i32) -> bool {
    common::is_agent(pid)
}

#[tokio::test]
async fn sandboxes_of_a_server_that_never_comes_back_end_a_grace_after_their_expiry() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start_with(&["--warm-pool", "1", "--orphan-grace", "3s"]);
    let client = server.client("alice");
    let shortest = CreateSessionRequest {
        ttl: Some(hutch_api::limits::TTL_MIN_SECS),
        ..Default::default()
    };
    let created = Instant::now();
    let expiring = client.create_session(&shortest).await.unwrap();
    let renewed = client.create_session(&shortest).await.unwrap();
    client
        .update_session(
            renewed.session_id,
            &UpdateSessionRequest {
                ttl: Some(600),
                metadata: None,
                network: None,
            },
        )
        .await
        .unwrap();
    let expiring_view = host_view(&client, &expiring).await;
    let renewed_agent = host_view(&client, &renewed).await.agent_pid;

    server.kill_hard();
    // Without a server, both keep running for now: a restart could adopt them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(agent_runs(expiring_view.agent_pid));
    assert!(agent_runs(renewed_agent));

    // Past the expiry (60 s) and the grace (3 s), give or take the checks of a second and a
    // loaded machine's delays: long before a renewed session's ten minutes.
    let bound = Duration::from_secs(hutch_api::limits::TTL_MIN_SECS + 3 + 15);
    while agent_runs(expiring_view.agent_pid) {
        assert!(
            created.elapsed() < bound,
            "the sandbox still runs {:?} after its session was created",
            created.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        created.elapsed() > Duration::from_secs(hutch_api::limits::TTL_MIN_SECS),
        "the sandbox ended before its session expired"
    );
    assert!(
        common::pids_in_uts(&expiring_view.uts).is_empty(),
        "every process of the sandbox ends with it"
    );
    assert!(agent_runs(renewed_agent), "the renewed sandbox runs on");

    // A new start sweeps what the ended sandbox left and adopts the renewed one.
    server.restart();
    assert_nothing_left(&server, &expiring_view);
    let client = server.client("alice");
    assert_eq!(sh(&client, &renewed, "echo alive").await.stdout, "alive\n");
}
