//! The Kubernetes runtime against the stand-in cluster (no Kubernetes API server can run
//! here) with the real `hutch agent --container` as each pod's process: sessions are pods
//! whose agent runs commands, writes only its pod's own files, and goes with its pod.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use hutch_kube::standin::{Kind, StandInCluster};
use hutch_kube::{KubeConfig, KubernetesRuntime, object_name};
use hutch_sandbox::{Runtime, SandboxImage, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const NS: &str = "sandboxes";

fn spec() -> SandboxSpec {
    let id = Uuid::now_v7();
    SandboxSpec {
        id,
        hostname: id.simple().to_string()[..12].to_owned(),
        image: SandboxImage::Default,
        resources: hutch_api::Resources::default(),
        env: BTreeMap::from([("GREETING".into(), "from-the-pod".into())]),
        network: None,
    }
}

/// One request on a new connection through the runtime; the status line and the body.
async fn request(
    runtime: &KubernetesRuntime,
    id: Uuid,
    method: &str,
    path: &str,
    body: &str,
) -> (String, String) {
    let mut stream = runtime.connect(id).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: agent\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_pods_real_agent_runs_commands_in_the_pods_own_files_and_goes_with_it() {
    let cluster = StandInCluster::start(Path::new(env!("CARGO_BIN_EXE_hutch")))
        .await
        .unwrap();
    let mut config = KubeConfig::new(NS, "registry.example/hutch:test");
    config.warm_pool = 0;
    config.start_timeout = Duration::from_secs(60);
    let runtime = KubernetesRuntime::new(cluster.client(NS).unwrap(), config);
    let spec = spec();
    let record = runtime.create(&spec).await.unwrap();

    let (status, _) = request(&runtime, spec.id, "GET", "/health", "").await;
    assert!(status.contains(" 200 "), "{status}");
    let marker = format!("/tmp/hutch-kube-{}", spec.id.simple());
    let command = serde_json::json!({
        "command": format!("echo $GREETING; pwd; echo written > {marker}; cat {marker}"),
    })
    .to_string();
    let (status, body) = request(&runtime, spec.id, "POST", "/commands", &command).await;
    assert!(status.contains(" 200 "), "{status} {body}");
    let result: serde_json::Value = serde_json::from_str(body.trim()).unwrap();
    assert_eq!(result["exitCode"], 0, "{result}");
    let stdout = result["stdout"].as_str().unwrap();
    assert_eq!(
        stdout, "from-the-pod\n/tmp/workspace\nwritten\n",
        "{result}"
    );
    // The pod wrote its own /tmp, not the host's.
    assert!(!Path::new(&marker).exists());

    let pid = cluster
        .kubelet()
        .pid(NS, &object_name(record.sandbox_id))
        .unwrap();
    runtime.destroy(&record).await.unwrap();
    assert!(cluster.store.all(Kind::Pods).is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pod's process outlived it"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
