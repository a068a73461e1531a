//! `hutch serve --runtime kubernetes` end to end, through the public HTTP API, against the
//! stand-in cluster (no Kubernetes API server can run here): each session is a pod whose
//! process is the real `hutch agent --container`, started by the stand-in kubelet.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{KUBE_NAMESPACE, TestServer, can_run_sandboxes, session, sh};
use hutch_api::{CommandRequest, ErrorCode, ProcessEvent, ProcessStatus, Session};
use hutch_client::HutchClient;
use hutch_client::processes::StreamItem;
use hutch_kube::standin::{BackgroundCluster, Kind, StandInCluster, selects};
use hutch_kube::{POOL_LABEL, REPLICA_ANNOTATION, SANDBOX_LABEL, SESSION_LABEL};
use serde_json::{Value, json};

/// Polls `done` every 20 ms for up to `limit`; false when it never held.
async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The session's pod (its name, and its sandbox id label).
fn pod_of(cluster: &StandInCluster, session: &Session) -> (String, String) {
    let selector = format!("{SESSION_LABEL}={}", session.session_id);
    let pods: Vec<Value> = cluster
        .store
        .all(Kind::Pods)
        .into_iter()
        .filter(|pod| selects(&selector, pod))
        .collect();
    assert_eq!(pods.len(), 1, "one pod for the session: {pods:?}");
    let metadata = &pods[0]["metadata"];
    (
        metadata["name"].as_str().unwrap().to_owned(),
        metadata["labels"][SANDBOX_LABEL]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

/// The pods, Secrets and NetworkPolicies of sandbox `sandbox` still in the cluster.
fn objects_of(cluster: &StandInCluster, sandbox: &str) -> Vec<String> {
    let selector = format!("{SANDBOX_LABEL}={sandbox}");
    [Kind::Pods, Kind::Secrets, Kind::NetworkPolicies]
        .into_iter()
        .flat_map(|kind| {
            cluster
                .store
                .all(kind)
                .into_iter()
                .filter(|object| selects(&selector, object))
                .map(move |object| format!("{kind:?} {}", object["metadata"]["name"]))
        })
        .collect()
}

/// Waits until nothing of sandbox `sandbox` (pod `pod`, whose process was `pid`) is left:
/// no object in the cluster, no process on the host.
async fn assert_nothing_left(cluster: &StandInCluster, sandbox: &str, pod: &str, pid: u32) {
    let gone = wait_for(Duration::from_secs(30), || {
        objects_of(cluster, sandbox).is_empty()
            && cluster.kubelet().pid(KUBE_NAMESPACE, pod).is_none()
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
    })
    .await;
    assert!(
        gone,
        "left behind: {:?}, process {pid} alive: {}",
        objects_of(cluster, sandbox),
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    );
}

/// Host pids of every process in the pid namespace of the pod whose kubelet process (the
/// `unshare` that made the namespace) is `pid`.
fn pids_in_pod(pid: u32) -> Vec<u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    let init = children.split_whitespace().next().unwrap();
    let namespace = std::fs::read_link(format!("/proc/{init}/ns/pid")).unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == namespace))
        .collect()
}

/// `(status, body)` of a request with a JSON body.
async fn call(client: &HutchClient, method: http::Method, path: &str, body: Value) -> (u16, Value) {
    let (status, bytes) = client
        .request(
            method,
            path,
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status.as_u16(), value)
}

/// Runs `code` in interpreter context `context` over NDJSON; its stdout.
async fn execute(client: &HutchClient, session: &Session, context: &str, code: &str) -> String {
    let path = format!("/v1/sessions/{}/interpreter/execute", session.session_id);
    let body = json!({"code": code, "contextId": context});
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &path,
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert_eq!(status.as_u16(), 200, "{text}");
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|frame| frame["type"] == "stdout")
        .map(|frame| frame["text"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_pod_session_serves_commands_streams_files_interpreters_and_processes() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_on_kubernetes(&[]);
    let cluster = server.stand_in().unwrap();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let (pod, sandbox) = pod_of(cluster, &s);
    let pid = cluster.kubelet().pid(KUBE_NAMESPACE, &pod).unwrap();

    // A command, in the pod's own files.
    let marker = format!("/tmp/hutch-kube-serve-{}", id.simple());
    let out = sh(
        &client,
        &s,
        &format!("echo hi > {marker}; cat {marker}; pwd"),
    )
    .await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (0, "hi\n/tmp/workspace\n"),
        "{out:?}"
    );
    assert!(
        !std::path::Path::new(&marker).exists(),
        "wrote the host's /tmp"
    );

    // A streamed command: its output in order, then its exit.
    let mut stream = client
        .stream_command(
            id,
            &CommandRequest {
                command: Some("for i in 1 2 3; do echo line $i; done; exit 3".into()),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
    let (mut output, mut exit) = (Vec::new(), None);
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamItem::Output { data, .. } => output.extend(data),
            StreamItem::Event(ProcessEvent::Exit { exit_code, .. }) => exit = Some(exit_code),
            StreamItem::Event(_) => {}
        }
    }
    assert_eq!(
        String::from_utf8(output).unwrap(),
        "line 1\nline 2\nline 3\n"
    );
    assert_eq!(exit, Some(Some(3)));

    // Files: write, read back, list.
    let file = "/tmp/workspace/notes/today.txt";
    let (status, bytes) = client
        .request(
            http::Method::PUT,
            &format!("/v1/sessions/{id}/files/content?path={file}"),
            Some(bytes::Bytes::from_static(b"written through the API\n")),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {bytes:?}");
    let (status, bytes) = client
        .request(
            http::Method::GET,
            &format!("/v1/sessions/{id}/files/content?path={file}"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        (status.as_u16(), &bytes[..]),
        (200, &b"written through the API\n"[..])
    );
    let (status, list) = call(
        &client,
        http::Method::GET,
        &format!("/v1/sessions/{id}/files?path=/tmp/workspace/notes"),
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert!(list.to_string().contains("today.txt"), "{list}");
    let out = sh(&client, &s, &format!("cat {file}")).await;
    assert_eq!(out.stdout, "written through the API\n");

    // An interpreter context keeps its state across executions.
    let (status, context) = call(
        &client,
        http::Method::POST,
        &format!("/v1/sessions/{id}/interpreter/contexts"),
        json!({"language": "python"}),
    )
    .await;
    assert_eq!(status, 200, "{context}");
    let context = context["id"].as_str().unwrap().to_owned();
    assert_eq!(execute(&client, &s, &context, "x = 6 * 7").await, "");
    assert_eq!(execute(&client, &s, &context, "print(x)").await, "42\n");

    // A background process runs on, and is listed, until it is killed.
    let started = client
        .start_process(
            id,
            &CommandRequest {
                command: Some("sleep 600".into()),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
    let info = client.get_process(id, started.pid).await.unwrap();
    assert_eq!(info.status, ProcessStatus::Running, "{info:?}");
    let list = client.list_processes(id).await.unwrap();
    assert!(list.items.iter().any(|p| p.pid == started.pid), "{list:?}");
    // The shell may not have replaced itself with `sleep` yet when the start answers.
    assert!(
        wait_for(Duration::from_secs(30), || !sleeps_in_pod(pid, "600")
            .is_empty())
        .await,
        "no sleep among the pod's processes {:?}",
        pids_in_pod(pid)
    );
    let in_pod = pids_in_pod(pid);

    // Delete: the pod, its Secret and NetworkPolicy, and every process go.
    client.delete_session(id).await.unwrap();
    assert_nothing_left(cluster, &sandbox, &pod, pid).await;
    // The kernel kills the rest of a pid namespace when its init dies; they are reaped soon after.
    let alive = || -> Vec<String> {
        in_pod
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
            .collect()
    };
    let ended = wait_for(Duration::from_secs(30), || alive().is_empty()).await;
    assert!(ended, "the pod's processes outlived it: {:?}", alive());
    let gone = client.get_session(id).await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::SessionNotFound), "{gone:?}");
}

#[tokio::test]
async fn a_restarted_control_plane_adopts_its_pods_and_a_pod_deleted_behind_its_back_ends_its_session()
 {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start_on_kubernetes(&["--kube-warm-pool", "0"]);
    let client = server.client("alice");
    let kept = session(&client).await;
    let lost = session(&client).await;
    let out = sh(&client, &kept, "echo before > state; cat state").await;
    assert_eq!(out.stdout, "before\n", "{out:?}");
    let (kept_pod, _) = pod_of(server.stand_in().unwrap(), &kept);
    let kept_pid = server
        .stand_in()
        .unwrap()
        .kubelet()
        .pid(KUBE_NAMESPACE, &kept_pod)
        .unwrap();

    // A hard restart: the same pods serve the sessions, with their files.
    server.restart();
    let client = server.client("alice");
    let out = sh(&client, &kept, "cat state").await;
    assert_eq!(out.stdout, "before\n", "{out:?}");
    let cluster = server.stand_in().unwrap();
    assert_eq!(
        cluster.kubelet().pid(KUBE_NAMESPACE, &kept_pod),
        Some(kept_pid)
    );

    // `kubectl delete pod`: the session goes, and what was left of it.
    let (lost_pod, lost_sandbox) = pod_of(cluster, &lost);
    let lost_pid = cluster.kubelet().pid(KUBE_NAMESPACE, &lost_pod).unwrap();
    cluster
        .store
        .delete(Kind::Pods, KUBE_NAMESPACE, &lost_pod)
        .unwrap();
    assert_nothing_left(cluster, &lost_sandbox, &lost_pod, lost_pid).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.get_session(lost.session_id).await {
            Err(err) if err.code() == Some(ErrorCode::SessionNotFound) => break,
            other => assert!(Instant::now() < deadline, "still there: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other session carries on.
    let out = sh(&client, &kept, "cat state").await;
    assert_eq!(out.stdout, "before\n", "{out:?}");
}

#[tokio::test]
async fn pause_and_usage_counters_of_a_pod_answer_not_supported() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_on_kubernetes(&["--kube-warm-pool", "0"]);
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;

    let refusals = [
        client.pause_session(id).await.map(drop).unwrap_err(),
        client.session_stats(id).await.map(drop).unwrap_err(),
    ];
    for refused in refusals {
        assert_eq!(refused.code(), Some(ErrorCode::NotSupported), "{refused:?}");
    }
    let (status, body) = call(
        &client,
        http::Method::POST,
        "/v1/sessions",
        json!({"autoPause": {"idleSeconds": 60}}),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("not_supported")),
        "{body}"
    );
    // The refused pause left the session running and serving.
    let row = client.get_session(id).await.unwrap();
    assert_eq!(row.status, hutch_api::SessionStatus::Running);
    assert_eq!(sh(&client, &s, "echo on").await.stdout, "on\n");
}

#[tokio::test]
async fn a_storage_context_carries_files_from_one_pod_session_to_the_next() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_on_kubernetes(&[]);
    let client = server.client("alice");
    let (status, context) = call(
        &client,
        http::Method::POST,
        "/v1/contexts",
        json!({"name": "project"}),
    )
    .await;
    assert_eq!(status, 200, "{context}");
    let context = context["id"].as_str().unwrap().to_owned();
    let bound = json!({"contextSyncs": [{"contextId": context, "path": "/tmp/workspace/project"}]});
    let (status, a) = call(&client, http::Method::POST, "/v1/sessions", bound.clone()).await;
    assert_eq!(status, 200, "{a}");
    let a: Session = serde_json::from_value(a).unwrap();
    let made = sh(
        &client,
        &a,
        "cd /tmp/workspace/project && mkdir -p src && echo 'print(42)' > src/main.py && ln -s src/main.py main",
    )
    .await;
    assert_eq!(made.exit_code, 0, "{made:?}");
    // DELETE answers once the upload (a tar through the pod's agent) is durable.
    client.delete_session(a.session_id).await.unwrap();
    let (_, after) = call(
        &client,
        http::Method::GET,
        &format!("/v1/contexts/{context}"),
        Value::Null,
    )
    .await;
    assert_eq!(after["version"], 1, "{after}");

    let (status, b) = call(&client, http::Method::POST, "/v1/sessions", bound).await;
    assert_eq!(status, 200, "{b}");
    let b: Session = serde_json::from_value(b).unwrap();
    let out = sh(
        &client,
        &b,
        "cd /tmp/workspace/project && cat src/main.py && readlink main",
    )
    .await;
    assert_eq!(out.stdout, "print(42)\nsrc/main.py\n", "{out:?}");
}

/// A child process killed if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `hutch-stand-in-cluster` as a process of its own (what an SDK suite starts): a server on
/// it runs sessions as its pods, and stopping it stops them.
#[tokio::test]
async fn the_stand_in_cluster_runs_as_a_process_of_its_own() {
    if !can_run_sandboxes() || common::kube_wanted() {
        // Under HUTCH_TEST_RUNTIME=kubernetes the helper would name a second cluster.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut cluster = std::process::Command::new(env!("CARGO_BIN_EXE_hutch-stand-in-cluster"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--namespace", "by-process"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = cluster.stdout.take().unwrap();
    let mut guard = KillOnDrop(cluster);
    let cluster = &mut guard.0;
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    let line = lines.next().unwrap().unwrap();
    assert!(
        line.starts_with("stand-in cluster listening on http://127.0.0.1:"),
        "{line}"
    );

    let mut server = TestServer::start_with(&[
        "--runtime",
        "kubernetes",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--kube-agent-image",
        "stand-in.invalid/hutch:test",
        "--kube-warm-pool",
        "0",
    ]);
    let client = server.client("alice");
    let s = session(&client).await;
    let out = sh(&client, &s, "echo on").await;
    assert_eq!(out.stdout, "on\n", "{out:?}");
    let agents = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/status")).is_ok_and(|status| {
                    String::from_utf8_lossy(&status).contains(&format!("PPid:\t{}\n", cluster.id()))
                })
            })
            .collect::<Vec<u32>>()
    };
    let pods = agents();
    assert_eq!(pods.len(), 1, "one pod process under the cluster: {pods:?}");
    // The server goes first, with its kill: the pod is left to the cluster's stop.
    server.kill_hard();
    std::process::Command::new("kill")
        .args(["-TERM", &cluster.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "the stand-in cluster did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(cluster.wait().unwrap().success());
    let gone = wait_for(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{}", pods[0])).exists()
    })
    .await;
    assert!(gone, "the pod's process outlived the stand-in cluster");
}

/// Host pids of the pod's processes whose command line is `sleep <seconds>`, with or without
/// `setsid` in front (the sleep itself, once it has replaced `setsid`).
fn sleeps_in_pod(pid: u32, seconds: &str) -> Vec<u32> {
    pids_in_pod(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|line| {
                let args: Vec<&[u8]> = line.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"sleep"))
                    && args.get(1) == Some(&seconds.as_bytes())
            })
        })
        .collect()
}

/// Waits until no `sleep <seconds>` is left in the pod; asserts it.
async fn assert_no_sleep_left(pid: u32, seconds: &str, what: &str) {
    let gone = wait_for(Duration::from_secs(30), || {
        sleeps_in_pod(pid, seconds).is_empty()
    })
    .await;
    assert!(
        gone,
        "{what}: sleep {seconds} outlived its tree: {:?}",
        sleeps_in_pod(pid, seconds)
    );
}

#[tokio::test]
async fn a_killed_tree_in_a_pod_leaves_no_process_even_one_that_made_a_session_of_its_own() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_on_kubernetes(&[]);
    let cluster = server.stand_in().unwrap();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let (pod, _) = pod_of(cluster, &s);
    let pid = cluster.kubelet().pid(KUBE_NAMESPACE, &pod).unwrap();

    // A command's grandchildren: one in a session of its own, one orphaned by a double fork.
    // The command's status and output are its own, and nothing of it outlives it.
    let out = sh(
        &client,
        &s,
        "setsid sleep 1000 & (sh -c 'sleep 1001 &' &); echo started; exit 7",
    )
    .await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (7, "started\n"),
        "{out:?}"
    );
    assert_no_sleep_left(pid, "1000", "a command's setsid child").await;
    assert_no_sleep_left(pid, "1001", "a command's double fork").await;
    // A command killed by a signal reports it as before.
    let out = sh(&client, &s, "echo before; kill -TERM $$").await;
    assert_eq!(
        (out.exit_code, out.stdout.as_str()),
        (143, "before\n"),
        "{out:?}"
    );

    // An interpreter context whose code started a process in a session of its own, deleted.
    let (status, context) = call(
        &client,
        http::Method::POST,
        &format!("/v1/sessions/{id}/interpreter/contexts"),
        json!({"language": "python"}),
    )
    .await;
    assert_eq!(status, 200, "{context}");
    let context = context["id"].as_str().unwrap().to_owned();
    let code =
        "import subprocess\np = subprocess.Popen(['setsid', 'sleep', '1002'])\nprint(p.pid > 0)";
    assert_eq!(execute(&client, &s, &context, code).await, "True\n");
    assert!(
        wait_for(Duration::from_secs(30), || !sleeps_in_pod(pid, "1002")
            .is_empty())
        .await,
        "the context's sleep never ran"
    );
    let (status, body) = call(
        &client,
        http::Method::DELETE,
        &format!("/v1/sessions/{id}/interpreter/contexts/{context}"),
        Value::Null,
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
    assert_no_sleep_left(pid, "1002", "a deleted interpreter context's setsid child").await;

    // A background process whose child made a session of its own, killed.
    let started = client
        .start_process(
            id,
            &CommandRequest {
                command: Some("setsid sleep 1003 & exec sleep 1004".into()),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            !sleeps_in_pod(pid, "1003").is_empty() && !sleeps_in_pod(pid, "1004").is_empty()
        })
        .await,
        "the process's sleeps never ran"
    );
    client.kill_process(id, started.pid).await.unwrap();
    assert_no_sleep_left(pid, "1004", "a killed process").await;
    assert_no_sleep_left(pid, "1003", "a killed process's setsid child").await;
    // A terminal whose command's child made a session of its own, closed.
    let terminal = client
        .open_terminal(id, 80, 24, Some("setsid sleep 1005 & exec sleep 1006"))
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            !sleeps_in_pod(pid, "1005").is_empty() && !sleeps_in_pod(pid, "1006").is_empty()
        })
        .await,
        "the terminal's sleeps never ran"
    );
    drop(terminal);
    assert_no_sleep_left(pid, "1006", "a closed terminal").await;
    assert_no_sleep_left(pid, "1005", "a closed terminal's setsid child").await;

    // Only the agent is left in the pod, besides the stand-in's own init, and the `default`
    // interpreter context the agent starts ahead of use (a worker under its shepherd). A
    // shepherd whose tree was killed exits a moment after it, and the worker's shepherd
    // comes a moment before its python3: the pod settles.
    let left = || {
        let mut left: Vec<String> = pids_in_pod(pid)
            .iter()
            .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
            .map(|comm| comm.trim().to_owned())
            .filter(|comm| comm != "hutch" && comm != "unshare")
            .collect();
        left.sort();
        left
    };
    let settled = wait_for(Duration::from_secs(15), || {
        let left = left();
        left.is_empty() || left == ["hutch-shepherd", "python3"]
    })
    .await;
    assert!(settled, "left in the pod: {:?}", left());
    client.delete_session(id).await.unwrap();
}

/// The warm pods (no session yet) that replica `replica` made, by name.
fn warm_pods_of(cluster: &StandInCluster, replica: &str) -> Vec<String> {
    cluster
        .store
        .all(Kind::Pods)
        .into_iter()
        .filter(|pod| {
            selects(POOL_LABEL, pod)
                && pod["metadata"]["annotations"][REPLICA_ANNOTATION] == replica
        })
        .map(|pod| pod["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

/// The replica that owns session `session` in the store at `url`.
fn owner(url: &str, session: &Session) -> String {
    let out = std::process::Command::new("psql")
        .args([url, "-tAc"])
        .arg(format!(
            "SELECT owner FROM sessions WHERE id = '{}'",
            session.session_id
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// How many deletes of `resource` the cluster served.
fn deletes(cluster: &StandInCluster, resource: &str) -> u64 {
    cluster
        .store
        .calls()
        .get(&(resource.to_owned(), "delete".to_owned()))
        .copied()
        .unwrap_or(0)
}

/// Two control planes (`--replica a` and `b`, each with its own data directory) on one
/// cluster and one PostgreSQL: B's start-up sweep spares A's pods, warm ones included; B
/// serves a session A created (a command, an interpreter keeping its state, a file) and
/// deletes it, its pod, Secret and NetworkPolicy going once. After `kill -9` of A, B serves
/// A's other session at once, takes it over once A's lease lapses (its death is then B's to
/// report), and removes A's warm pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_cluster_serve_every_pod_session() {
    if !can_run_sandboxes() || common::kube_wanted() {
        // Under HUTCH_TEST_RUNTIME=kubernetes each server would name a cluster of its own.
        return;
    }
    let postgres = hutch_server::ScratchPostgres::start().expect("starting PostgreSQL");
    let url = postgres.url("postgres");
    let stand_in = BackgroundCluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_hutch")))
        .expect("start the stand-in cluster");
    let cluster = stand_in.cluster();
    let dir = tempfile::Builder::new()
        .prefix("hutch-kubeconfig")
        .tempdir_in("/tmp")
        .unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster
        .write_kubeconfig(&kubeconfig, KUBE_NAMESPACE)
        .unwrap();
    let serve = |replica: &str| {
        TestServer::start_with(&[
            "--store",
            &url,
            "--replica",
            replica,
            "--runtime",
            "kubernetes",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--kube-namespace",
            KUBE_NAMESPACE,
            "--kube-agent-image",
            "stand-in.invalid/hutch:test",
            "--kube-warm-pool",
            "1",
        ])
    };
    let mut a = serve("a");
    let client_a = a.client("t");
    let used = session(&client_a).await;
    let kept = session(&client_a).await;
    assert!(
        wait_for(Duration::from_secs(60), || warm_pods_of(cluster, "a").len()
            == 1)
        .await,
        "A's warm pod never came: {:?}",
        cluster.store.all(Kind::Pods)
    );
    let warm = warm_pods_of(cluster, "a");

    // B's start-up sweep (done once it listens) leaves A's pods alone.
    let b = serve("b");
    let client_b = b.client("t");
    assert_eq!(warm_pods_of(cluster, "a"), warm);
    let (pod, sandbox) = pod_of(cluster, &used);
    pod_of(cluster, &kept);

    // A's session through B: a command, an interpreter keeping its state, a file.
    assert_eq!(sh(&client_b, &used, "echo via-b").await.stdout, "via-b\n");
    let id = used.session_id;
    let (status, context) = call(
        &client_b,
        http::Method::POST,
        &format!("/v1/sessions/{id}/interpreter/contexts"),
        json!({"language": "python"}),
    )
    .await;
    assert_eq!(status, 200, "{context}");
    let context = context["id"].as_str().unwrap().to_owned();
    assert_eq!(execute(&client_b, &used, &context, "x = 6 * 7").await, "");
    assert_eq!(
        execute(&client_b, &used, &context, "print(x)").await,
        "42\n"
    );
    let file = format!("/v1/sessions/{id}/files/content?path=/tmp/workspace/note.txt");
    let (status, body) = client_b
        .request(
            http::Method::PUT,
            &file,
            Some(bytes::Bytes::from_static(b"through B\n")),
        )
        .await
        .unwrap();
    assert!(status.is_success(), "{status} {body:?}");
    let (status, body) = client_b
        .request(http::Method::GET, &file, None)
        .await
        .unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"through B\n"[..]));

    // Deleted through B: the pod, its Secret and NetworkPolicy go, each deleted once.
    let before: Vec<u64> = ["pods", "secrets", "networkpolicies"]
        .iter()
        .map(|r| deletes(cluster, r))
        .collect();
    let pid = cluster.kubelet().pid(KUBE_NAMESPACE, &pod).unwrap();
    client_b.delete_session(id).await.unwrap();
    assert_nothing_left(cluster, &sandbox, &pod, pid).await;
    for client in [&client_a, &client_b] {
        let gone = client.get_session(id).await.unwrap_err();
        assert_eq!(gone.code(), Some(ErrorCode::SessionNotFound), "{gone:?}");
    }
    // A saw its pod go (and carries on serving); it destroyed nothing again.
    assert_eq!(sh(&client_a, &kept, "echo on-a").await.stdout, "on-a\n");
    assert_eq!(sh(&client_b, &kept, "echo on-b").await.stdout, "on-b\n");
    let after: Vec<u64> = ["pods", "secrets", "networkpolicies"]
        .iter()
        .map(|r| deletes(cluster, r))
        .collect();
    assert_eq!(
        after,
        before.iter().map(|n| n + 1).collect::<Vec<_>>(),
        "deletes of pods, secrets, networkpolicies"
    );

    // A dies: B serves its session at once, and takes it over once A's lease lapses.
    a.kill_hard();
    assert_eq!(sh(&client_b, &kept, "echo a-down").await.stdout, "a-down\n");
    let deadline = Instant::now() + Duration::from_secs(120);
    while owner(&url, &kept) != "b" {
        assert!(Instant::now() < deadline, "B never took A's session over");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sh(&client_b, &kept, "echo b-owns").await.stdout, "b-owns\n");
    // A's warm pod goes once B sees A dead; its Secret and NetworkPolicy with it.
    let warm_sandbox = cluster
        .store
        .get(Kind::Pods, KUBE_NAMESPACE, &warm[0])
        .map(|p| {
            p["metadata"]["labels"][SANDBOX_LABEL]
                .as_str()
                .unwrap()
                .to_owned()
        });
    assert!(
        wait_for(Duration::from_secs(60), || warm_pods_of(cluster, "a")
            .is_empty())
        .await,
        "A's warm pod outlived A: {warm:?}"
    );
    if let Some(warm_sandbox) = warm_sandbox {
        assert!(
            wait_for(Duration::from_secs(30), || objects_of(
                cluster,
                &warm_sandbox
            )
            .is_empty())
            .await,
            "left of A's warm pod: {:?}",
            objects_of(cluster, &warm_sandbox)
        );
    }
    // The session's death is B's to report now: its pod deleted behind its back ends it.
    let (kept_pod, _) = pod_of(cluster, &kept);
    cluster
        .store
        .delete(Kind::Pods, KUBE_NAMESPACE, &kept_pod)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client_b.get_session(kept.session_id).await {
            Err(err) if err.code() == Some(ErrorCode::SessionNotFound) => break,
            other => assert!(Instant::now() < deadline, "still there: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(b);
}
