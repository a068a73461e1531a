//! Storage contexts end to end: named storage bound to a path of sessions, downloaded before
//! a session runs, uploaded when it is deleted or expires, in versions that are all or
//! nothing — even when the server is killed half-way through an upload.
//!
//! The suite runs as it is with the content kept in the data directory (the default) and, with
//! `HUTCH_TEST_BLOB_STORE=s3`, in a bucket of an S3-compatible stand-in (common/s3.rs).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, sh, sh_with};
use http::{Method, StatusCode};
use hutch_api::{CreateSessionRequest, Session};
use hutch_client::HutchClient;
use serde_json::{Value, json};

/// Sends `body` as JSON; returns the status and the JSON answer.
async fn call(
    client: &HutchClient,
    method: Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let body = (!body.is_null()).then(|| serde_json::to_vec(&body).unwrap().into());
    let (status, bytes) = client.request(method, path, body).await.unwrap();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Creates a storage context; returns its id.
async fn new_context(client: &HutchClient, name: &str) -> String {
    let (status, body) = call(client, Method::POST, "/v1/contexts", json!({"name": name})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["version"], 0);
    body["id"].as_str().unwrap().to_owned()
}

/// A storage context as the API shows it.
async fn context(client: &HutchClient, id: &str) -> Value {
    let (status, body) = call(
        client,
        Method::GET,
        &format!("/v1/contexts/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Creates a session that binds `context` at `path`.
async fn bound_session(client: &HutchClient, context: &str, path: &str) -> Session {
    let req: CreateSessionRequest = serde_json::from_value(json!({
        "contextSyncs": [{"contextId": context, "path": path}]
    }))
    .unwrap();
    client
        .create_session(&req)
        .await
        .expect("create a bound session")
}

/// The tasks of `context/info`.
async fn tasks(client: &HutchClient, session: &Session) -> Vec<Value> {
    let (status, body) = call(
        client,
        Method::GET,
        &format!("/v1/sessions/{}/context/info", session.session_id),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["contextStatusData"].as_array().unwrap().clone()
}

/// Waits until every task of the session has finished; returns them. Bounded generously: an
/// upload of 900 MiB to the S3 stand-in under a loaded machine takes minutes.
async fn settled(client: &HutchClient, session: &Session) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let all = tasks(client, session).await;
        if all
            .iter()
            .all(|t| t["status"] == "Success" || t["status"] == "Failed")
        {
            return all;
        }
        assert!(Instant::now() < deadline, "tasks never finished: {all:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts an upload of every bound context of the session.
async fn sync_upload(client: &HutchClient, session: &Session) -> Value {
    let (status, body) = call(
        client,
        Method::POST,
        &format!("/v1/sessions/{}/context/sync", session.session_id),
        json!({"mode": "upload"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);
    body
}

/// A listing of a tree: type, mode and name of every entry, and link targets and file
/// digests, sorted.
async fn tree(client: &HutchClient, session: &Session, dir: &str) -> String {
    let listing = sh(
        client,
        session,
        &format!(
            "cd {dir} && find . -mindepth 1 -printf '%y %m %p %l\\n' | sort && \
             find . -type f -exec md5sum {{}} + | sort"
        ),
    )
    .await;
    assert_eq!(listing.exit_code, 0, "{}", listing.stderr);
    listing.stdout
}

#[tokio::test]
async fn files_written_in_one_session_are_there_in_the_next() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "project").await;

    let a = bound_session(&client, &ctx, "/workspace/project").await;
    let made = sh(
        &client,
        &a,
        "cd /workspace/project && mkdir -p src/pkg empty && printf 'print(42)\\n' > src/main.py && \
         chmod 750 src/main.py && printf '#!/bin/sh\\n' > run.sh && chmod 755 run.sh && \
         ln -s src/main.py main && ln -s ../empty src/up && printf 'x%.0s' $(seq 1 5000) > src/pkg/data",
    )
    .await;
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    let written = tree(&client, &a, "/workspace/project").await;
    // DELETE answers once the upload is durable.
    client.delete_session(a.session_id).await.expect("delete A");
    let after = context(&client, &ctx).await;
    assert_eq!(after["version"], 1, "{after}");
    assert!(after["sizeBytes"].as_u64().unwrap() >= 5000);

    let b = bound_session(&client, &ctx, "/workspace/project").await;
    assert_eq!(tree(&client, &b, "/workspace/project").await, written);
    let download = tasks(&client, &b).await;
    assert_eq!(download.len(), 1);
    assert_eq!(download[0]["taskType"], "download");
    assert_eq!(download[0]["status"], "Success");
    assert_eq!(download[0]["version"], 1);
    assert!(
        download[0]["finishTime"].as_i64().unwrap() >= download[0]["startTime"].as_i64().unwrap()
    );
    client.delete_session(b.session_id).await.unwrap();
}

#[tokio::test]
async fn sync_and_info_follow_the_task_log() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "cache").await;
    let s = bound_session(&client, &ctx, "/workspace/cache").await;
    // An empty context still makes its directory.
    sh(
        &client,
        &s,
        "test -d /workspace/cache && echo one > /workspace/cache/f",
    )
    .await;

    let started = sync_upload(&client, &s).await;
    assert_eq!(started["tasks"][0]["status"], "Pending");
    assert_eq!(started["tasks"][0]["taskType"], "upload");
    let done = settled(&client, &s).await;
    let upload = done.last().unwrap();
    assert_eq!(upload["status"], "Success", "{upload}");
    assert_eq!(upload["version"], 1);
    assert_eq!(upload["errorMessage"], "");

    // Filters of context/info.
    let path = format!(
        "/v1/sessions/{}/context/info?taskType=download&contextId={ctx}&path=%2Fworkspace%2Fcache",
        s.session_id
    );
    let (_, body) = call(&client, Method::GET, &path, Value::Null).await;
    let downloads = body["contextStatusData"].as_array().unwrap();
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0]["taskType"], "download");

    // A download brings the stored version back over local changes.
    sh(&client, &s, "echo changed > /workspace/cache/f").await;
    let (status, _) = call(
        &client,
        Method::POST,
        &format!("/v1/sessions/{}/context/sync", s.session_id),
        json!({"contextId": ctx, "mode": "download"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    settled(&client, &s).await;
    assert_eq!(
        sh(&client, &s, "cat /workspace/cache/f").await.stdout,
        "one\n"
    );
}

#[tokio::test]
async fn expiry_uploads_like_delete_does() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "expiring").await;
    let req: CreateSessionRequest = serde_json::from_value(json!({
        "ttl": 60,
        "contextSyncs": [{"contextId": ctx, "path": "/workspace/out"}]
    }))
    .unwrap();
    let s = client.create_session(&req).await.unwrap();
    sh(&client, &s, "echo result > /workspace/out/answer.txt").await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while client.get_session(s.session_id).await.is_ok() {
        assert!(Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(context(&client, &ctx).await["version"], 1);
    let next = bound_session(&client, &ctx, "/workspace/in").await;
    assert_eq!(
        sh(&client, &next, "cat /workspace/in/answer.txt")
            .await
            .stdout,
        "result\n"
    );
}

#[tokio::test]
async fn a_sync_wakes_a_session_that_paused_itself() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "woken").await;
    let req: CreateSessionRequest = serde_json::from_value(json!({
        "autoPause": {"idleSeconds": 10},
        "contextSyncs": [{"contextId": ctx, "path": "/workspace/out"}]
    }))
    .unwrap();
    let s = client.create_session(&req).await.unwrap();
    sh(&client, &s, "echo kept > /workspace/out/kept.txt").await;
    let deadline = Instant::now() + Duration::from_secs(40);
    while client.get_session(s.session_id).await.unwrap().status != hutch_api::SessionStatus::Paused
    {
        assert!(Instant::now() < deadline, "the session never paused itself");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Like every request inside the session, a sync resumes it first, and then runs.
    sync_upload(&client, &s).await;
    assert_eq!(
        client.get_session(s.session_id).await.unwrap().status,
        hutch_api::SessionStatus::Running
    );
    let settled = settled(&client, &s).await;
    assert!(
        settled.iter().all(|t| t["status"] == "Success"),
        "{settled:?}"
    );
    assert_eq!(context(&client, &ctx).await["version"], 1);
}

#[tokio::test]
async fn a_pause_cannot_freeze_a_delete_that_uploads() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "paused-mid-delete").await;
    let s = bound_session(&client, &ctx, "/workspace/d").await;
    // Enough to upload for a while: the pause below comes while it does.
    let wrote = sh_with(
        &client,
        &s,
        "head -c 150000000 /dev/urandom > /workspace/d/big && echo ok",
        60.0,
    )
    .await;
    assert_eq!(wrote.stdout, "ok\n", "{wrote:?}");
    let deleting = {
        let client = client.clone();
        tokio::spawn(async move { client.delete_session(s.session_id).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The pause waits for the delete's uploads, then finds the session deleted (or being
    // deleted): it never freezes the agent that uploads.
    let paused = client.pause_session(s.session_id).await;
    assert!(
        paused.is_err(),
        "a session being deleted was paused: {paused:?}"
    );
    let deleted = tokio::time::timeout(Duration::from_secs(120), deleting)
        .await
        .expect("the delete finished")
        .unwrap();
    assert!(deleted.is_ok(), "{deleted:?}");
    assert_eq!(context(&client, &ctx).await["version"], 1);
}

#[tokio::test]
async fn a_server_killed_mid_upload_keeps_the_previous_version() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "big").await;
    let s = bound_session(&client, &ctx, "/workspace/big").await;
    sh(&client, &s, "echo first > /workspace/big/v").await;
    sync_upload(&client, &s).await;
    assert_eq!(
        settled(&client, &s).await.last().unwrap()["status"],
        "Success"
    );

    // A large second version, then kill -9 while it uploads. Writing 900 MiB through the
    // session's disk takes well over the default 30 s on a loaded 2-core machine.
    let made = sh_with(
        &client,
        &s,
        "echo second > /workspace/big/v && head -c 900M /dev/zero > /workspace/big/blob",
        300.0,
    )
    .await;
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    sync_upload(&client, &s).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = tasks(&client, &s).await;
        let last = all.last().unwrap();
        if last["status"] == "Running" {
            break;
        }
        assert_ne!(
            last["status"], "Success",
            "the upload finished before it could be cut"
        );
        assert!(Instant::now() < deadline, "the upload never ran: {all:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill_hard();
    server.restart();
    let client = server.client("alice");

    let last = tasks(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Failed", "{last}");
    assert!(
        last["errorMessage"].as_str().unwrap().contains("stopped"),
        "{last}"
    );
    let now = context(&client, &ctx).await;
    assert_eq!(now["version"], 1, "{now}");
    // Nothing half-written is left in the server's storage.
    let blobs = server.context_blobs(&ctx);
    assert_eq!(
        blobs.len(),
        1,
        "only the committed version remains: {blobs:?}"
    );
    let reader = bound_session(&client, &ctx, "/workspace/big").await;
    let seen = sh(&client, &reader, "cat /workspace/big/v; ls /workspace/big").await;
    assert_eq!(seen.stdout, "first\nv\n");
    // The interrupted session still works and can upload (without the large file, which
    // only had to make the cut upload long).
    sh(&client, &s, "rm /workspace/big/blob").await;
    sync_upload(&client, &s).await;
    let last = settled(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Success", "{last}");
    assert_eq!(last["version"], 2);
    client.delete_session(s.session_id).await.unwrap();
}

#[tokio::test]
async fn concurrent_uploads_leave_one_whole_snapshot_and_two_versions() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "2"]);
    let client = server.client("alice");
    let ctx = new_context(&client, "shared").await;
    let one = bound_session(&client, &ctx, "/workspace/s").await;
    let two = bound_session(&client, &ctx, "/workspace/s").await;
    for (s, tag) in [(&one, "one"), (&two, "two")] {
        let script = format!(
            "cd /workspace/s && for i in $(seq 1 200); do echo {tag} > {tag}-$i; done && \
             head -c 20M /dev/urandom > payload && echo {tag} > who"
        );
        assert_eq!(sh(&client, s, &script).await.exit_code, 0);
    }
    let expected_one = tree(&client, &one, "/workspace/s").await;
    let expected_two = tree(&client, &two, "/workspace/s").await;
    let (a, b) = tokio::join!(sync_upload(&client, &one), sync_upload(&client, &two));
    assert_eq!(
        (a["success"].clone(), b["success"].clone()),
        (json!(true), json!(true))
    );
    for s in [&one, &two] {
        let last = settled(&client, s).await.last().unwrap().clone();
        assert_eq!(last["status"], "Success", "{last}");
    }
    assert_eq!(context(&client, &ctx).await["version"], 2);
    let reader = bound_session(&client, &ctx, "/workspace/s").await;
    let seen = tree(&client, &reader, "/workspace/s").await;
    assert!(
        seen == expected_one || seen == expected_two,
        "the stored tree is neither snapshot:\n{seen}"
    );
}

#[tokio::test]
async fn limits_and_escaping_content_are_refused_with_the_reason() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--context-max-mb", "1"]);
    let client = server.client("alice");
    let ctx = new_context(&client, "small").await;
    let s = bound_session(&client, &ctx, "/workspace/small").await;

    // Too large: the task fails, saying why; DELETE keeps the session and says why too.
    sh(&client, &s, "head -c 2M /dev/zero > /workspace/small/big").await;
    sync_upload(&client, &s).await;
    let last = settled(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Failed");
    assert!(
        last["errorMessage"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{last}"
    );
    let (status, body) = call(
        &client,
        Method::DELETE,
        &format!("/v1/sessions/{}", s.session_id),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["code"], "sync_failed");
    assert_eq!(body["error"]["details"]["contextId"], ctx.as_str());
    assert!(
        client.get_session(s.session_id).await.is_ok(),
        "the session is kept"
    );

    // A link out of the tree is refused by name, and the version stays.
    sh(
        &client,
        &s,
        "rm /workspace/small/big && ln -s /etc/passwd /workspace/small/evil",
    )
    .await;
    sync_upload(&client, &s).await;
    let last = settled(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Failed");
    let message = last["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("evil") && message.contains("absolute"),
        "{message}"
    );
    sh(
        &client,
        &s,
        "rm /workspace/small/evil && ln -s ../../../etc /workspace/small/up",
    )
    .await;
    sync_upload(&client, &s).await;
    let message = settled(&client, &s).await.last().unwrap()["errorMessage"].clone();
    assert!(message.as_str().unwrap().contains("outside"), "{message}");
    assert_eq!(context(&client, &ctx).await["version"], 0);

    // Skipping the upload lets the session go.
    let (status, body) = call(
        &client,
        Method::DELETE,
        &format!("/v1/sessions/{}?upload=false", s.session_id),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// A context comes back into a session through the file API, so it holds no more than the
/// server's largest upload: a larger one is refused when saved (the version before stays, and
/// still restores), not saved and then impossible to restore.
#[tokio::test]
async fn a_context_holds_no_more_than_the_file_api_can_restore() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--max-upload-mb", "1"]);
    let client = server.client("alice");
    let ctx = new_context(&client, "restorable").await;
    let s = bound_session(&client, &ctx, "/workspace/r").await;
    sh(&client, &s, "echo kept > /workspace/r/small").await;
    sync_upload(&client, &s).await;
    assert_eq!(
        settled(&client, &s).await.last().unwrap()["status"],
        "Success"
    );
    sh(&client, &s, "head -c 2M /dev/zero > /workspace/r/big").await;
    sync_upload(&client, &s).await;
    let last = settled(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Failed", "{last}");
    assert!(
        last["errorMessage"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{last}"
    );
    assert_eq!(context(&client, &ctx).await["version"], 1);
    let next = bound_session(&client, &ctx, "/workspace/r").await;
    let restored = sh(
        &client,
        &next,
        "ls -A /workspace/r && cat /workspace/r/small",
    )
    .await;
    assert_eq!(restored.stdout, "small\nkept\n", "{restored:?}");
}

#[tokio::test]
async fn contexts_belong_to_their_tenant_and_bad_bindings_are_refused() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let alice = server.client("alice");
    let bob = server.client("bob");
    let ctx = new_context(&alice, "mine").await;

    let (status, body) = call(
        &alice,
        Method::POST,
        "/v1/contexts",
        json!({"name": "mine"}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, _) = call(&bob, Method::POST, "/v1/contexts", json!({"name": "mine"})).await;
    assert_eq!(status, StatusCode::OK, "names are per tenant");
    let (status, body) = call(
        &alice,
        Method::POST,
        "/v1/contexts",
        json!({"name": "../x"}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "name");

    for (method, path) in [
        (Method::GET, format!("/v1/contexts/{ctx}")),
        (Method::DELETE, format!("/v1/contexts/{ctx}")),
    ] {
        let (status, body) = call(&bob, method, &path, Value::Null).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(body["error"]["code"], "storage_context_not_found");
    }
    let (_, listed) = call(&bob, Method::GET, "/v1/contexts", Value::Null).await;
    assert_eq!(listed["total"], 1);
    assert_ne!(listed["contexts"][0]["id"], ctx.as_str());

    // Binding another tenant's context, or a path that is not absolute.
    let req: CreateSessionRequest = serde_json::from_value(json!({
        "contextSyncs": [{"contextId": ctx, "path": "/workspace/x"}]
    }))
    .unwrap();
    let err = bob.create_session(&req).await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(hutch_api::ErrorCode::StorageContextNotFound)
    );
    let (status, body) = call(
        &alice,
        Method::POST,
        "/v1/sessions",
        json!({"contextSyncs": [{"contextId": ctx, "path": "workspace/../x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["details"]["field"], "contextSyncs[0].path");
    // A kernel interface (however spelt), one context inside another's path (however spelt:
    // the outer one's upload would carry the inner one's files), and one context at two
    // paths (each upload would replace the other).
    let other = new_context(&alice, "other").await;
    for (syncs, field) in [
        (
            json!([{"contextId": ctx, "path": "/proc/x"}]),
            "contextSyncs[0].path",
        ),
        (
            json!([{"contextId": ctx, "path": "/./proc"}]),
            "contextSyncs[0].path",
        ),
        (
            json!([{"contextId": ctx, "path": "/workspace/o"}, {"contextId": other, "path": "/workspace//o/./i"}]),
            "contextSyncs[1].path",
        ),
        (
            json!([{"contextId": ctx, "path": "/workspace/a"}, {"contextId": ctx, "path": "/workspace/b"}]),
            "contextSyncs[1].contextId",
        ),
    ] {
        let (status, body) = call(
            &alice,
            Method::POST,
            "/v1/sessions",
            json!({ "contextSyncs": syncs }),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(body["error"]["details"]["field"], field);
    }

    // Deleted contexts are gone for good.
    let (status, _) = call(
        &alice,
        Method::DELETE,
        &format!("/v1/contexts/{ctx}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.context_blobs(&ctx), Vec::<String>::new());
    let (status, _) = call(
        &alice,
        Method::GET,
        &format!("/v1/contexts/{ctx}"),
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// The server's resident memory and its peak so far, in KiB (`VmRSS`, `VmHWM`).
fn server_memory_kib(server: &TestServer) -> (u64, u64) {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap()
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::test]
async fn a_large_context_streams_through_the_server_in_bounded_memory() {
    if !can_run_sandboxes() {
        return;
    }
    const MIB: u64 = 200;
    let server = TestServer::start();
    let client = server.client("alice");
    let ctx = new_context(&client, "large").await;
    let s = bound_session(&client, &ctx, "/workspace/large").await;
    let made = sh_with(
        &client,
        &s,
        &format!(
            "head -c {MIB}M /dev/urandom > /workspace/large/blob && md5sum < /workspace/large/blob"
        ),
        120.0,
    )
    .await;
    assert_eq!(made.exit_code, 0, "{}", made.stderr);
    let (before, _) = server_memory_kib(&server);
    sync_upload(&client, &s).await;
    let last = settled(&client, &s).await.last().unwrap().clone();
    assert_eq!(last["status"], "Success", "{last}");
    let reader = bound_session(&client, &ctx, "/workspace/large").await;
    let read = sh_with(&client, &reader, "md5sum < /workspace/large/blob", 120.0).await;
    assert_eq!(read.stdout, made.stdout, "the content came back whole");
    let (after, peak) = server_memory_kib(&server);
    eprintln!(
        "server memory around a {MIB} MiB upload and download: RSS {} MiB before, {} MiB after, peak {} MiB",
        before / 1024,
        after / 1024,
        peak / 1024
    );
    // Buffered whole, the content alone would pass this; streamed, a few parts are held.
    assert!(
        peak < before + (MIB / 2) * 1024,
        "peak RSS {peak} KiB from {before} KiB: the content was not streamed"
    );
}
