//! Drives the linux runtime directly (no HTTP server): create a sandbox, run a command through
//! its agent over the unix socket, destroy it. Needs root.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use hutch_sandbox::linux::{LinuxConfig, LinuxRuntime};
use hutch_sandbox::{Runtime, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

async fn post(runtime: &LinuxRuntime, id: uuid::Uuid, path: &str, body: &str) -> String {
    let mut stream = runtime.connect(id).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn create_run_destroy() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let data = tempfile::Builder::new()
        .prefix("hutch-rt")
        .tempdir_in("/tmp")
        .unwrap();
    let mut config = LinuxConfig::new(data.path().to_owned()).unwrap();
    config.agent_binary = PathBuf::from(env!("CARGO_BIN_EXE_hutch"));
    let (runtime, _died) = LinuxRuntime::new(config).unwrap();
    runtime.start_pool();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = uuid::Uuid::now_v7();
    let spec = SandboxSpec {
        id,
        hostname: "smoke".into(),
        image: "default".into(),
        resources: hutch_api::Resources::default(),
        env: BTreeMap::from([("GREETING".into(), "hi".into())]),
    };
    let t = std::time::Instant::now();
    let record = runtime.create(&spec).await.unwrap();
    eprintln!("create took {:?}", t.elapsed());
    let t = std::time::Instant::now();
    let out = post(&runtime, id, "/commands", r#"{"command":"echo $GREETING; id; hostname; cat /proc/self/uid_map; ls /; ps -e 2>&1 | head; ls /sys/class/net 2>&1; cat /proc/net/dev"}"#).await;
    eprintln!("command took {:?}\n{out}", t.elapsed());
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let out = post(&runtime, id, "/commands", r#"{"argv":["true"]}"#).await;
        eprintln!(
            "true took {:?} {}",
            t.elapsed(),
            out.lines().last().unwrap_or("")
        );
    }
    let t = std::time::Instant::now();
    runtime.destroy(&record).await.unwrap();
    eprintln!("destroy took {:?}", t.elapsed());
    assert!(
        !data
            .path()
            .join("sandboxes")
            .join(record.sandbox_id.to_string())
            .exists()
    );
    assert!(runtime.sweep(&HashSet::new()).await.unwrap().is_empty());
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let spec = SandboxSpec {
            id: uuid::Uuid::now_v7(),
            ..spec.clone()
        };
        let record = runtime.create(&spec).await.unwrap();
        let c = t.elapsed();
        let out = post(&runtime, spec.id, "/commands", r#"{"argv":["true"]}"#).await;
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let r = t.elapsed();
        runtime.destroy(&record).await.unwrap();
        eprintln!(
            "cycle: create {c:?} run {:?} destroy {:?} total {:?}",
            r - c,
            t.elapsed() - r,
            t.elapsed()
        );
    }
    runtime.shutdown(true).await;
}
