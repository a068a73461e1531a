//! The linux runtime on its own, without the HTTP server: the warm pool, building on demand,
//! the agent's socket, teardown and sweeping. Needs root.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use hutch_sandbox::linux::{LinuxConfig, LinuxRuntime};
use hutch_sandbox::{Runtime, SandboxError, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn runtime(warm_pool: usize) -> (LinuxRuntime, tempfile::TempDir) {
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
    config.agent_binary = PathBuf::from(env!("CARGO_BIN_EXE_hutch"));
    config.warm_pool = warm_pool;
    let (runtime, _died) = LinuxRuntime::new(config).unwrap();
    (runtime, data)
}

fn spec() -> SandboxSpec {
    SandboxSpec {
        id: uuid::Uuid::now_v7(),
        hostname: "rt-test".into(),
        image: "default".into(),
        resources: hutch_api::Resources::default(),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
        network: None,
    }
}

/// Posts a command to the sandbox's agent over its unix socket, speaking HTTP/1.1 by hand.
async fn run(runtime: &LinuxRuntime, id: uuid::Uuid, command: &str) -> serde_json::Value {
    let body = serde_json::json!({ "command": command }).to_string();
    let mut stream = runtime.connect(id).await.unwrap();
    let request = format!(
        "POST /commands HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap()
}

#[tokio::test]
async fn pooled_and_on_demand_sandboxes_run_commands_and_leave_nothing() {
    if !common::can_run_sandboxes() {
        return;
    }
    for warm_pool in [0, 2] {
        let (runtime, data) = runtime(warm_pool);
        runtime.start_pool();
        let spec = spec();
        let record = runtime.create(&spec).await.unwrap();
        assert_eq!(record.id, spec.id);

        let out = run(&runtime, spec.id, "echo $GREETING; hostname").await;
        assert_eq!(
            out["stdout"], "hi\nrt-test\n",
            "the claim's environment and host name reach commands"
        );

        let sandbox_dir = data
            .path()
            .join("sandboxes")
            .join(record.sandbox_id.to_string());
        assert!(sandbox_dir.exists());
        runtime.destroy(&record).await.unwrap();
        assert!(!sandbox_dir.exists());
        assert!(matches!(
            runtime.connect(spec.id).await,
            Err(SandboxError::Gone(_))
        ));
        runtime
            .destroy(&record)
            .await
            .expect("destroying twice is fine");
        assert!(
            runtime.sweep(&HashSet::new()).await.unwrap().is_empty(),
            "nothing unaccounted for"
        );
        runtime.shutdown(true).await;
    }
}

#[tokio::test]
async fn unknown_images_are_refused() {
    if !common::can_run_sandboxes() {
        return;
    }
    let (runtime, _data) = runtime(0);
    let spec = SandboxSpec {
        image: "ubuntu:24.04".into(),
        ..spec()
    };
    assert!(matches!(
        runtime.create(&spec).await,
        Err(SandboxError::InvalidSpec(_))
    ));
    runtime.shutdown(true).await;
}

#[test]
fn the_agent_refuses_to_run_outside_a_sandbox() {
    // Run by hand on the host, `hutch agent` must not remount anything: it is not PID 1 of a
    // new user namespace, so it stops before touching a mount.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hutch"))
        .arg("agent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(70));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not started by the hutch runtime"));
}
