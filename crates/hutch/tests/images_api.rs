//! The images API and `hutch image` against a real server and a real registry (Debian's
//! `docker-registry` on a loopback port, filled with `skopeo`): pulls with progress, listing,
//! names in paths, typed errors, imports, who may import and delete, and snapshots' rules.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
#[path = "../../hutch-image/tests/support/mod.rs"]
mod image_support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{SECRET, TestServer, can_run_sandboxes, ok};
use http::{Method, StatusCode};
use hutch_api::{CreateSessionRequest, ErrorCode, LayerState, PullEvent};
use hutch_client::{ClientError, HutchClient};
use image_support::{Entry, ImageSpec, Registry};

/// A client with an admin token.
fn admin(server: &TestServer) -> HutchClient {
    let token =
        hutch_server::auth::mint_token(SECRET.as_bytes(), "ops", Duration::from_secs(3600), true)
            .unwrap();
    HutchClient::new(&server.url, &token).unwrap()
}

/// The API error code of a failed call.
fn code(result: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Api { body, .. }) => body.error.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Layer directories in the server's image store.
fn stored_layers(server: &TestServer) -> usize {
    std::fs::read_dir(server.data_dir().join("images-oci/layers/sha256"))
        .unwrap()
        .count()
}

/// A small image layout of one layer holding `/hello.txt`.
fn tiny_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("tiny");
    image_support::write_layout(
        &layout,
        &[image_support::layer(&[Entry::File(
            "hello.txt".to_owned(),
            b"hello from an imported image\n".to_vec(),
            0o644,
        )])],
        &ImageSpec {
            env: vec!["GREETING=hi"],
            ..ImageSpec::default()
        },
    );
    layout
}

/// `dir` as an uncompressed tarball (an OCI layout archive, as `skopeo copy … oci-archive:`
/// writes one).
fn tarball(dir: &Path, into: &Path) -> PathBuf {
    let file = into.join(format!(
        "{}.tar",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
    builder.append_dir_all(".", dir).unwrap();
    builder.finish().unwrap();
    file
}

#[tokio::test]
async fn an_image_is_pulled_with_progress_listed_shown_and_deleted() {
    if !can_run_sandboxes() {
        return;
    }
    let registry = Registry::start();
    registry.push(&image_support::busybox_layout(), "tools/busybox:1.36");
    let server =
        TestServer::start_with(&["--warm-pool", "0", "--insecure-registry", &registry.addr]);
    let alice = server.client("alice");
    let reference = format!("{}/tools/busybox:1.36", registry.addr);

    let mut events = Vec::new();
    let image = alice
        .pull_image(&reference, |event| events.push(event.clone()))
        .await
        .unwrap();
    assert_eq!(image.name, reference);
    assert_eq!(
        (image.layers, image.sessions, image.snapshot),
        (1, 0, false)
    );
    assert!(
        image.size_bytes > 1_000_000,
        "busybox is on disk: {image:?}"
    );
    assert!(image.digest.starts_with("sha256:"));
    let states: Vec<LayerState> = events
        .iter()
        .filter_map(|event| match event {
            PullEvent::Progress { status, .. } => Some(*status),
            _ => None,
        })
        .collect();
    assert!(states.contains(&LayerState::Downloading), "{events:?}");
    assert_eq!(states.last(), Some(&LayerState::Done), "{events:?}");

    // Pulled again, every layer is already there.
    let mut again = Vec::new();
    alice
        .pull_image(&reference, |event| again.push(event.clone()))
        .await
        .unwrap();
    assert!(
        again.iter().all(|event| matches!(
            event,
            PullEvent::Progress {
                status: LayerState::Cached,
                ..
            }
        )),
        "{again:?}"
    );

    let listed = alice.list_images().await.unwrap();
    assert_eq!(listed.images.len(), 1);
    assert_eq!(listed.images[0].name, reference);

    // The name percent-encoded in one segment, and written out with its slashes.
    let shown = alice.get_image(&reference).await.unwrap();
    assert_eq!(shown.image.digest, image.digest);
    assert_eq!(shown.config.env, vec!["PATH=/bin"]);
    assert_eq!(shown.config.working_dir.as_deref(), Some("/root"));
    assert_eq!(shown.config.cmd, Some(vec!["/bin/sh".to_owned()]));
    assert_eq!(shown.layer_digests.len(), 1);
    let (status, body) = alice
        .request(Method::GET, &format!("/v1/images/{reference}"), None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body:?}");
    let written_out: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(written_out["digest"], image.digest.as_str());

    // Shared images are deleted by admins; the layers go with the last image naming them.
    assert_eq!(
        code(alice.delete_image(&reference).await),
        ErrorCode::Forbidden
    );
    assert_eq!(stored_layers(&server), 1);
    let deleted = admin(&server).delete_image(&reference).await.unwrap();
    assert_eq!(deleted.name, reference);
    assert_eq!(
        code(alice.get_image(&reference).await),
        ErrorCode::ImageNotFound
    );
    assert_eq!(stored_layers(&server), 0);
}

#[tokio::test]
async fn failed_pulls_answer_typed_errors() {
    if !can_run_sandboxes() {
        return;
    }
    let registry = Registry::start();
    let nobody = format!("127.0.0.1:{}", image_support::free_port());
    let allowed = format!("{},{nobody}", registry.addr);
    let server = TestServer::start_with(&[
        "--warm-pool",
        "0",
        "--insecure-registry",
        &registry.addr,
        "--insecure-registry",
        &nobody,
        "--allowed-registries",
        &allowed,
    ]);
    let alice = server.client("alice");
    let quiet = |_: &PullEvent| {};

    let missing = format!("{}/tools/missing:1", registry.addr);
    assert_eq!(
        code(alice.pull_image(&missing, quiet).await),
        ErrorCode::ImageNotFound
    );
    assert_eq!(
        code(alice.pull_image("quay.io/team/tool:1", quiet).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(alice.pull_image("Not A Reference", quiet).await),
        ErrorCode::InvalidRequest
    );
    match alice.pull_image(&format!("{nobody}/x:1"), quiet).await {
        Err(ClientError::Api { status, body }) => {
            assert_eq!(status.as_u16(), 422);
            assert_eq!(body.error.code, ErrorCode::ImagePullFailed);
            let answer = body.error.details["registryAnswer"].as_str().unwrap();
            assert!(!answer.is_empty(), "{body:?}");
        }
        other => panic!("expected image_pull_failed, got {other:?}"),
    }
    // Nothing half-pulled is left.
    assert!(alice.list_images().await.unwrap().images.is_empty());
    assert_eq!(stored_layers(&server), 0);
}

#[tokio::test]
async fn archives_are_imported_by_admins_unless_tenants_manage_images() {
    if !can_run_sandboxes() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let archive = tarball(&tiny_layout(work.path()), work.path());
    let server = TestServer::start_with(&["--warm-pool", "0"]);
    let alice = server.client("alice");

    assert_eq!(
        code(alice.import_image(&archive, Some("local/tiny:1")).await),
        ErrorCode::Forbidden
    );
    let imported = admin(&server)
        .import_image(&archive, Some("local/tiny:1"))
        .await
        .unwrap();
    assert_eq!(imported.images.len(), 1);
    assert_eq!(imported.images[0].name, "docker.io/local/tiny:1");
    let shown = alice.get_image("local/tiny:1").await.unwrap();
    assert_eq!(shown.config.env, vec!["GREETING=hi"]);
    // `default` is the built-in image's: sessions asking for it would never get this one.
    assert_eq!(
        code(admin(&server).import_image(&archive, Some("default")).await),
        ErrorCode::InvalidRequest
    );

    let garbage = work.path().join("garbage.tar");
    std::fs::write(&garbage, vec![7u8; 4096]).unwrap();
    assert_eq!(
        code(admin(&server).import_image(&garbage, None).await),
        ErrorCode::ImageImportFailed
    );

    let open = TestServer::start_with(&[
        "--warm-pool",
        "0",
        "--image-managers",
        "tenants",
        "--image-import-max-mb",
        "1",
    ]);
    let bob = open.client("bob");
    let imported = bob
        .import_image(&archive, Some("bob/tiny:1"))
        .await
        .unwrap();
    assert_eq!(imported.images[0].name, "docker.io/bob/tiny:1");
    let big = work.path().join("big.tar");
    std::fs::write(&big, vec![0u8; 2 << 20]).unwrap();
    assert_eq!(
        code(bob.import_image(&big, None).await),
        ErrorCode::PayloadTooLarge
    );
    bob.delete_image("bob/tiny:1").await.unwrap();
}

#[tokio::test]
async fn snapshots_need_a_valid_name_and_a_session_of_an_oci_image() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let alice = server.client("alice");
    let session = alice
        .create_session(&CreateSessionRequest::default())
        .await
        .unwrap();
    // `fork-…` names are the server's own: it removes those snapshots once unused.
    for bad in ["Bad Name", "default", "fork-mine"] {
        assert_eq!(
            code(alice.snapshot_session(session.session_id, bad).await),
            ErrorCode::InvalidRequest,
            "{bad}"
        );
    }
    assert_eq!(
        code(alice.snapshot_session(session.session_id, "env").await),
        ErrorCode::Conflict
    );
    let bob = server.client("bob");
    assert_eq!(
        code(bob.snapshot_session(session.session_id, "env").await),
        ErrorCode::SessionNotFound
    );
    alice.delete_session(session.session_id).await.unwrap();
}

/// Runs `hutch ARGS…` with `HUTCH_URL` and `HUTCH_TOKEN` set as a user would set them.
fn hutch(url: &str, token: &str, args: &[&str]) -> Output {
    common::hutch_cli(url, token, args)
}

#[test]
fn images_are_pulled_imported_listed_and_removed_from_the_command_line() {
    if !can_run_sandboxes() {
        return;
    }
    let registry = Registry::start();
    registry.push(&image_support::busybox_layout(), "tools/busybox:1.36");
    let server = TestServer::start_with(&[
        "--warm-pool",
        "0",
        "--insecure-registry",
        &registry.addr,
        "--image-managers",
        "tenants",
    ]);
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);
    let reference = format!("{}/tools/busybox:1.36", registry.addr);

    // Not a terminal: plain progress lines on stderr, the image on stdout.
    let pulled = hutch(&["image", "pull", &reference]);
    let stderr = String::from_utf8_lossy(&pulled.stderr).into_owned();
    let stdout = ok(pulled);
    assert!(
        stdout.starts_with(&format!("{reference} sha256:")),
        "{stdout}"
    );
    assert!(stderr.contains(" downloading\n"), "{stderr}");
    assert!(stderr.contains(" done\n"), "{stderr}");

    let work = tempfile::tempdir().unwrap();
    let archive = tarball(&tiny_layout(work.path()), work.path());
    let imported = ok(hutch(&[
        "image",
        "import",
        archive.to_str().unwrap(),
        "--name",
        "local/tiny:1",
    ]));
    assert!(
        imported.starts_with("docker.io/local/tiny:1 sha256:"),
        "{imported}"
    );

    let table = ok(hutch(&["image", "ls"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(&reference) && table.contains("docker.io/local/tiny:1"));
    let names = ok(hutch(&["image", "ls", "-q"]));
    assert_eq!(names.lines().count(), 2, "{names}");
    let listed: serde_json::Value =
        serde_json::from_str(&ok(hutch(&["image", "ls", "--json"]))).unwrap();
    assert_eq!(listed["images"].as_array().unwrap().len(), 2);

    let removed = ok(hutch(&["image", "rm", &reference, "local/tiny:1"]));
    assert_eq!(removed.lines().count(), 2, "{removed}");
    let missing = hutch(&["image", "rm", &reference]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("image_not_found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// Runs `sh -c SCRIPT` in a session and returns its stdout (exit 0 required).
async fn sh(client: &HutchClient, id: uuid::Uuid, script: &str) -> String {
    let result = client
        .run_command(
            id,
            &hutch_api::CommandRequest {
                argv: Some(vec!["/bin/sh".into(), "-c".into(), script.into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.exit_code, 0, "{script}: {result:?}");
    result.stdout
}

/// A registry holding `library/busybox:1.36` as Docker Hub's mirror, and a server without a
/// warm pool that pulls through it, started with `args` besides.
fn busybox_mirror_server(args: &[&str]) -> (Registry, TestServer) {
    let registry = Registry::start();
    registry.push(&image_support::busybox_layout(), "library/busybox:1.36");
    let mirror = format!("docker.io=http://{}", registry.addr);
    let mut all = vec!["--warm-pool", "0", "--registry-mirror", &mirror];
    all.extend_from_slice(args);
    let server = TestServer::start_with(&all);
    (registry, server)
}

/// A session on `image`.
async fn session_on(client: &HutchClient, image: &str) -> hutch_api::Session {
    client
        .create_session(&CreateSessionRequest {
            image: Some(image.to_owned()),
            ttl: Some(600),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_snapshot_of_a_running_session_becomes_an_image_and_forks_see_its_files() {
    if !can_run_sandboxes() {
        return;
    }
    let (_registry, server) = busybox_mirror_server(&[]);
    let alice = server.client("alice");
    let source = session_on(&alice, "busybox:1.36").await;
    sh(
        &alice,
        source.session_id,
        "echo prepared > /root/state.txt && rm /etc/passwd && mkdir -p /opt/data && echo 1 > /opt/data/n",
    )
    .await;

    // The session keeps running through the snapshot.
    let snapshot = alice
        .snapshot_session(source.session_id, "prepared")
        .await
        .unwrap();
    assert_eq!(
        (snapshot.name.as_str(), snapshot.snapshot),
        ("prepared", true)
    );
    assert_eq!(snapshot.tenant.as_deref(), Some("alice"));
    assert_eq!(snapshot.layers, 2);
    assert_eq!(
        sh(&alice, source.session_id, "cat /root/state.txt").await,
        "prepared\n"
    );
    assert_eq!(
        code(alice.snapshot_session(source.session_id, "prepared").await),
        ErrorCode::Conflict
    );

    // Usable as `image` by its tenant; another tenant does not see it.
    let later = session_on(&alice, "prepared").await;
    assert_eq!(
        sh(&alice, later.session_id, "cat /root/state.txt").await,
        "prepared\n"
    );
    assert_eq!(
        sh(
            &alice,
            later.session_id,
            "test -e /etc/passwd || echo deleted"
        )
        .await,
        "deleted\n"
    );
    let bob = server.client("bob");
    assert_eq!(
        code(bob.get_image("prepared").await),
        ErrorCode::ImageNotFound
    );
    assert!(
        bob.list_images()
            .await
            .unwrap()
            .images
            .iter()
            .all(|i| !i.snapshot)
    );
    assert_eq!(
        code(alice.delete_image("prepared").await),
        ErrorCode::Conflict,
        "a snapshot in use stays"
    );

    // Fork 10: each sees the files; none sees another's (or the source's) later writes.
    let forked = alice
        .fork_session(
            source.session_id,
            &hutch_api::ForkRequest {
                count: Some(10),
                ttl: Some(600),
            },
        )
        .await
        .unwrap();
    assert_eq!(forked.sessions.len(), 10);
    assert!(forked.snapshot.starts_with("fork-"));
    sh(&alice, source.session_id, "echo source-later > /opt/data/n").await;
    for (i, fork) in forked.sessions.iter().enumerate() {
        assert_eq!(fork.image, forked.snapshot);
        sh(
            &alice,
            fork.session_id,
            &format!("echo {i} > /opt/data/mine"),
        )
        .await;
    }
    // The source goes; its forks are unharmed.
    alice.delete_session(source.session_id).await.unwrap();
    for (i, fork) in forked.sessions.iter().enumerate() {
        assert_eq!(
            sh(
                &alice,
                fork.session_id,
                "cat /root/state.txt /opt/data/n /opt/data/mine"
            )
            .await,
            format!("prepared\n1\n{i}\n")
        );
    }
    assert_eq!(
        code(
            alice
                .fork_session(
                    later.session_id,
                    &hutch_api::ForkRequest {
                        count: Some(21),
                        ttl: None
                    }
                )
                .await
        ),
        ErrorCode::InvalidRequest
    );
    // A refused ttl is refused before anything is frozen or copied: no snapshot is left.
    let images_before = alice.list_images().await.unwrap().images.len();
    assert_eq!(
        code(
            alice
                .fork_session(
                    later.session_id,
                    &hutch_api::ForkRequest {
                        count: Some(1),
                        ttl: Some(5)
                    }
                )
                .await
        ),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        alice.list_images().await.unwrap().images.len(),
        images_before
    );
    for fork in &forked.sessions {
        alice.delete_session(fork.session_id).await.unwrap();
    }
    // No sandbox is kept ready for a fork's one-time snapshot: once its sessions are gone
    // nothing holds it (and the collection of forks' snapshots can remove it).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let snapshot = alice.get_image(&forked.snapshot).await.unwrap();
    assert_eq!(snapshot.image.sessions, 0, "{snapshot:?}");
    alice.delete_session(later.session_id).await.unwrap();
    alice.delete_image("prepared").await.unwrap();
}

#[tokio::test]
async fn a_tenant_keeps_at_most_its_quota_of_snapshots_and_forks_do_not_count() {
    if !can_run_sandboxes() {
        return;
    }
    let (_registry, server) = busybox_mirror_server(&["--tenant-max-snapshots", "1"]);
    let alice = server.client("alice");
    let source = session_on(&alice, "busybox:1.36").await;
    alice
        .snapshot_session(source.session_id, "one")
        .await
        .unwrap();

    match alice.snapshot_session(source.session_id, "two").await {
        Err(ClientError::Api { status, body }) => {
            assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(body.error.code, ErrorCode::QuotaExceeded);
            assert_eq!(body.error.details["quota"], "snapshots");
            assert_eq!(body.error.details["limit"], 1);
            assert_eq!(body.error.details["used"], 1);
        }
        other => panic!("expected quota_exceeded, got {other:?}"),
    }
    // A fork's snapshot is the server's to remove; it is not refused.
    let forked = alice
        .fork_session(
            source.session_id,
            &hutch_api::ForkRequest {
                count: Some(1),
                ttl: Some(600),
            },
        )
        .await
        .unwrap();
    // Each tenant has a quota of its own.
    let bob = server.client("bob");
    let bobs = session_on(&bob, "busybox:1.36").await;
    bob.snapshot_session(bobs.session_id, "one").await.unwrap();
    // Deleting a snapshot gives its place back.
    alice.delete_image("one").await.unwrap();
    alice
        .snapshot_session(source.session_id, "two")
        .await
        .unwrap();

    for (client, id) in [
        (&alice, source.session_id),
        (&alice, forked.sessions[0].session_id),
        (&bob, bobs.session_id),
    ] {
        client.delete_session(id).await.unwrap();
    }
    alice.delete_image("two").await.unwrap();
    bob.delete_image("one").await.unwrap();
}

#[tokio::test]
async fn collection_removes_unused_layers_and_never_a_layer_in_use() {
    if !can_run_sandboxes() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let archive = tarball(&tiny_layout(work.path()), work.path());
    // A cache bound of 0 GiB: every image no session uses goes at the next collection.
    let (_registry, server) =
        busybox_mirror_server(&["--image-cache-gb", "0", "--image-managers", "tenants"]);
    let alice = server.client("alice");
    let session = session_on(&alice, "busybox:1.36").await;
    alice
        .import_image(&archive, Some("local/tiny:1"))
        .await
        .unwrap();
    alice
        .import_image(&archive, Some("local/tiny:2"))
        .await
        .unwrap();
    assert_eq!(stored_layers(&server), 2);

    // Deleting one image collects: the unused tiny image goes with its layer, busybox stays
    // while its session runs, and the session still works.
    alice.delete_image("local/tiny:1").await.unwrap();
    let left: Vec<String> = alice
        .list_images()
        .await
        .unwrap()
        .images
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(left, vec!["docker.io/library/busybox:1.36"]);
    assert_eq!(stored_layers(&server), 1);
    assert_eq!(
        sh(&alice, session.session_id, "echo alive").await,
        "alive\n"
    );
    // `sessions` counts the leases: the session's, and any ready sandbox of the image's warm
    // pool.
    let busybox = alice.get_image("busybox:1.36").await.unwrap();
    assert!(busybox.image.sessions >= 1, "{busybox:?}");
    assert_eq!(
        code(alice.delete_image("busybox:1.36").await),
        ErrorCode::Conflict
    );
    assert_eq!(
        sh(&alice, session.session_id, "echo still").await,
        "still\n"
    );

    // Once the session is gone, the image (and its warm sandboxes) can go, layers and all.
    alice.delete_session(session.session_id).await.unwrap();
    alice.delete_image("busybox:1.36").await.unwrap();
    assert_eq!(stored_layers(&server), 0);
}
