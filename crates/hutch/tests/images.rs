//! Sessions on OCI images, end to end: a real `docker-registry` on a loopback port holds
//! images built from real files (a Debian image with python3 by mmdebstrap, a static busybox,
//! a musl program), and a real server reaches it as Docker Hub's mirror. The fixtures are
//! shared with the image store's own tests and cached between runs. Needs root.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
#[path = "../../hutch-image/tests/support/mod.rs"]
mod image_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::TestServer;
use hutch_api::{CodeRequest, CommandRequest, CreateSessionRequest, ErrorCode, Session};
use hutch_client::{ClientError, HutchClient};
use image_support::{Proxy, Registry};
use serde_json::{Value, json};

/// A registry holding `images` (layout, Docker Hub repository such as `library/busybox`).
fn registry_with(images: &[(std::path::PathBuf, &str)]) -> Registry {
    let registry = Registry::start();
    for (layout, repository) in images {
        registry.push(layout, repository);
    }
    registry
}

/// A server that pulls Docker Hub names from `mirror` (`host:port`, plain HTTP).
fn server_with_mirror(mirror: &str, extra: &[&str]) -> TestServer {
    let mirror = format!("docker.io=http://{mirror}");
    let mut args = vec!["--warm-pool", "0", "--registry-mirror", &mirror];
    args.extend_from_slice(extra);
    TestServer::start_with(&args)
}

async fn create_on(client: &HutchClient, image: &str) -> Result<Session, ClientError> {
    client
        .create_session(&CreateSessionRequest {
            image: Some(image.to_owned()),
            env: Some(BTreeMap::from([("FROM_SESSION".into(), "yes".into())])),
            ..CreateSessionRequest::default()
        })
        .await
}

/// Runs `argv` (no shell) in the session.
async fn exec(client: &HutchClient, session: &Session, argv: &[&str]) -> hutch_api::CommandResult {
    client
        .run_command(
            session.session_id,
            &CommandRequest {
                argv: Some(argv.iter().map(|a| (*a).to_owned()).collect()),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap()
}

/// Posts `body` into the session: the status and the JSON answer (NDJSON: one value a line).
async fn post(
    client: &HutchClient,
    session: &Session,
    rest: &str,
    body: Value,
) -> (u16, Vec<Value>) {
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}{rest}", session.session_id),
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes);
    let values = text
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    (status.as_u16(), values)
}

/// Writes `content` to `path` in the session through the file API.
async fn upload(client: &HutchClient, session: &Session, path: &str, content: &'static str) {
    let (status, body) = client
        .request(
            http::Method::PUT,
            &format!(
                "/v1/sessions/{}/files/content?path={path}",
                session.session_id
            ),
            Some(content.into()),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "{body:?}");
}

/// The text of every `stdout` frame and the `result` of an NDJSON execution.
fn output_of(frames: &[Value]) -> String {
    frames
        .iter()
        .filter_map(|f| match f["type"].as_str() {
            Some("stdout") => f["text"].as_str().map(str::to_owned),
            Some("result") => f["data"]["text/plain"].as_str().map(|t| format!("{t}\n")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_python_image_from_a_docker_hub_mirror_runs_commands_code_contexts_and_files() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::debian_python_layout(), "library/python:3.11")]);
    let server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");

    // As in the seed's example: the short Docker Hub name, pulled on first use.
    let session = create_on(&client, "python:3.11").await.unwrap();
    assert_eq!(session.image, "python:3.11");

    // The root is the image's Debian, not the host's /usr.
    let os = common::sh(
        &client,
        &session,
        "cat /etc/os-release; command -v skopeo || echo no-host-usr; pwd",
    )
    .await;
    assert_eq!(os.exit_code, 0, "{os:?}");
    assert!(
        os.stdout.contains("VERSION_CODENAME=bookworm"),
        "{}",
        os.stdout
    );
    assert!(
        os.stdout.contains("no-host-usr\n/workspace\n"),
        "{}",
        os.stdout
    );

    // The image's Env (its PATH, LANG) and the session's env on top.
    let env = common::sh(&client, &session, "echo $PATH $LANG $FROM_SESSION").await;
    assert_eq!(env.stdout, "/usr/local/bin:/usr/bin:/bin C.UTF-8 yes\n");

    // /code runs the image's own python3.
    let code = client
        .run_code(
            session.session_id,
            &CodeRequest {
                language: "python".into(),
                code: "import sys; print(sys.executable, sys.version_info[:2])".into(),
                ..CodeRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(code.stdout, "/usr/bin/python3 (3, 11)\n", "{code:?}");

    // An interpreter context keeps its state between executions (the `auto` kernel, with no
    // IPython in the image).
    let (status, ctx) = post(
        &client,
        &session,
        "/interpreter/contexts",
        json!({"language": "python"}),
    )
    .await;
    assert_eq!(status, 200, "{ctx:?}");
    let id = ctx[0]["id"].as_str().unwrap().to_owned();
    let (_, first) = post(
        &client,
        &session,
        "/interpreter/execute",
        json!({"contextId": id, "code": "total = 20\nprint('set')"}),
    )
    .await;
    assert_eq!(output_of(&first), "set\n", "{first:?}");
    let (_, second) = post(
        &client,
        &session,
        "/interpreter/execute",
        json!({"contextId": id, "code": "total + 22"}),
    )
    .await;
    assert_eq!(output_of(&second), "42\n", "{second:?}");

    // Files land in the session and read back.
    upload(
        &client,
        &session,
        "/workspace/data.txt",
        "written through the file API\n",
    )
    .await;
    let read = exec(
        &client,
        &session,
        &["python3", "-c", "print(open('data.txt').read(), end='')"],
    )
    .await;
    assert_eq!(read.stdout, "written through the file API\n");

    client.delete_session(session.session_id).await.unwrap();
}

#[tokio::test]
async fn a_busybox_image_without_libc_runs_commands_and_files_but_has_no_python() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::busybox_layout(), "library/busybox:latest")]);
    let server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");
    let session = create_on(&client, "busybox").await.unwrap();

    // Commands run with the image's PATH and WorkingDir, as root.
    let ran = common::sh(&client, &session, "echo $PATH; pwd; id -u; ls /bin/busybox").await;
    assert_eq!(ran.stdout, "/bin\n/root\n0\n/bin/busybox\n", "{ran:?}");

    // Files: written through the API, read by the image's own cat.
    upload(&client, &session, "/workspace/note", "no libc here\n").await;
    assert_eq!(
        exec(&client, &session, &["cat", "/workspace/note"])
            .await
            .stdout,
        "no libc here\n"
    );

    // No python3 in the image: contexts, executions and /code say so with a code of their own.
    let (status, body) = post(
        &client,
        &session,
        "/interpreter/contexts",
        json!({"language": "python"}),
    )
    .await;
    assert_eq!(status, 422, "{body:?}");
    assert_eq!(body[0]["error"]["code"], "language_unavailable");
    assert_eq!(
        body[0]["error"]["message"],
        "image docker.io/library/busybox:latest has no python3"
    );
    let (status, body) = post(
        &client,
        &session,
        "/interpreter/execute",
        json!({"code": "1 + 1"}),
    )
    .await;
    assert_eq!(
        status, 422,
        "the default context does not start either: {body:?}"
    );
    let code = client
        .run_code(
            session.session_id,
            &CodeRequest {
                language: "javascript".into(),
                code: "1".into(),
                ..CodeRequest::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(code.code(), Some(ErrorCode::LanguageUnavailable), "{code}");

    // The session is fine all the same: commands run, and a terminal runs the image's sh.
    assert_eq!(
        common::sh(&client, &session, "echo still here")
            .await
            .stdout,
        "still here\n"
    );
    terminal_echoes(&client, &session, "echo term-$((6 * 7))", "term-42").await;
}

#[tokio::test]
async fn a_musl_image_runs_its_program_as_the_images_user_in_its_working_dir() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::musl_layout(), "team/musl-app:1.0")]);
    let mut server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");
    let session = create_on(&client, "team/musl-app:1.0").await.unwrap();

    // A program linked against musl's own loader, run by argv and through sh.
    let hello = exec(&client, &session, &["hello"]).await;
    assert_eq!(hello.stdout, "hello from musl as 1000\n", "{hello:?}");

    // User `app` (from the image's /etc/passwd), WorkingDir /srv/app, the image's Env under
    // the session's.
    let who = common::sh(&client, &session, "id -u; id -g; pwd; echo $HOME $USER $GREETING $FROM_SESSION; touch mine && stat -c %u mine").await;
    assert_eq!(
        who.stdout, "1000\n1000\n/srv/app\n/home/app app from-image yes\n1000\n",
        "{who:?}"
    );
    // /workspace, which the image does not have, exists and is the user's to write.
    let workspace = common::sh(
        &client,
        &session,
        "cd /workspace && touch x && stat -c %u x",
    )
    .await;
    assert_eq!(workspace.stdout, "1000\n", "{workspace:?}");

    // Background processes and terminals run as the image's user too.
    let started = client
        .start_process(
            session.session_id,
            &CommandRequest {
                argv: Some(vec!["hello".into()]),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = client
            .get_process(session.session_id, started.pid)
            .await
            .unwrap();
        if info.exit_code.is_some() {
            assert_eq!(info.exit_code, Some(0), "{info:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    terminal_echoes(&client, &session, "id -u", "\n1000").await;

    // A restarted server adopts the session, image and all.
    server.restart();
    let client = server.client("alice");
    let again = exec(&client, &session, &["hello"]).await;
    assert_eq!(again.stdout, "hello from musl as 1000\n", "{again:?}");
}

/// Opens a terminal (the image's shell), types `line` and waits for `expected` on the screen.
async fn terminal_echoes(client: &HutchClient, session: &Session, line: &str, expected: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut socket = client
        .open_terminal(session.session_id, 80, 24, None)
        .await
        .unwrap()
        .socket;
    socket
        .send(Message::Binary(format!("{line}\r").into()))
        .await
        .unwrap();
    let mut screen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !screen.contains(expected) {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => {
                screen.push_str(&String::from_utf8_lossy(&data));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no {expected:?} in {screen:?}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_image_with_no_shell_runs_programs_and_refuses_command_strings_clearly() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::no_shell_layout(), "team/no-shell:1")]);
    let server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");
    let session = create_on(&client, "team/no-shell:1").await.unwrap();

    // A program runs by argv, as root (hutch's fallback /etc/passwd), in /workspace.
    let hello = exec(&client, &session, &["hello"]).await;
    assert_eq!(hello.stdout, "hello from musl as 0\n", "{hello:?}");

    // A command string needs /bin/sh: a 400 that says so, not a 500.
    let err = client
        .run_command(
            session.session_id,
            &CommandRequest {
                command: Some("echo hi".into()),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap_err();
    let ClientError::Api { status, body } = &err else {
        panic!("{err}");
    };
    assert_eq!(status.as_u16(), 400, "{body:?}");
    assert!(body.error.message.contains("has no /bin/sh"), "{body:?}");

    // Files work with no program of the image's at all.
    upload(&client, &session, "/workspace/f", "kept\n").await;
    let (status, bytes) = client
        .request(
            http::Method::GET,
            &format!(
                "/v1/sessions/{}/files/content?path=/workspace/f",
                session.session_id
            ),
            None,
        )
        .await
        .unwrap();
    assert_eq!((status.as_u16(), &bytes[..]), (200, &b"kept\n"[..]));
}

#[tokio::test]
async fn an_image_of_a_hundred_and_ten_layers_mounts() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::many_layers_layout(110), "team/layered:1")]);
    let server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");
    // Far more layer paths than one page of mount options holds.
    let session = create_on(&client, "team/layered:1").await.unwrap();
    let seen = common::sh(
        &client,
        &session,
        "cat /layers/0 /layers/109; ls /layers | wc -l",
    )
    .await;
    assert_eq!(seen.stdout, "layer 0\nlayer 109\n110\n", "{seen:?}");
}

#[tokio::test]
async fn unknown_images_and_unreachable_registries_are_refused_with_their_own_codes() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[]);
    let server = server_with_mirror(&registry.addr, &[]);
    let client = server.client("alice");

    let unknown = create_on(&client, "no-such-image:1").await.unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::ImageNotFound), "{unknown}");

    // A mirror that is down: the registry's (transport's) answer is in the details.
    let down = server_with_mirror(&format!("127.0.0.1:{}", image_support::free_port()), &[]);
    let err = create_on(&down.client("alice"), "busybox")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ImagePullFailed), "{err}");
    let ClientError::Api { status, body } = &err else {
        panic!("{err}");
    };
    assert!(status.is_client_error(), "{status}");
    assert!(!body.error.details.is_empty(), "{body:?}");

    // Neither left a session behind.
    for client in [client, down.client("alice")] {
        assert_eq!(client.list_sessions(None, None).await.unwrap().total, 0);
    }
}

#[tokio::test]
async fn twenty_concurrent_creates_of_an_image_not_yet_pulled_fetch_each_layer_once() {
    if !common::can_run_sandboxes() {
        return;
    }
    let layout = image_support::busybox_layout();
    let registry = registry_with(&[(layout.clone(), "library/busybox:latest")]);
    let proxy = Proxy::start(&registry.addr).await;
    proxy.throttle(true);
    let server = server_with_mirror(&proxy.addr, &["--warm-pool-per-image", "0"]);
    let client = server.client("alice");

    let creates = (0..20).map(|_| {
        let client = client.clone();
        async move { create_on(&client, "busybox:latest").await }
    });
    let sessions: Vec<Session> = futures_util::future::join_all(creates)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(sessions.len(), 20);

    let layers = layer_digests(&layout);
    let requests = proxy.blob_requests();
    for layer in &layers {
        assert_eq!(
            requests.get(layer),
            Some(&1),
            "layer {layer} fetched once: {requests:?}"
        );
    }
    let done = common::sh(&client, &sessions[19], "echo ok").await;
    assert_eq!(done.stdout, "ok\n");
}

#[tokio::test]
async fn the_warm_pool_keeps_sandboxes_ready_for_a_recently_used_image() {
    if !common::can_run_sandboxes() {
        return;
    }
    let registry = registry_with(&[(image_support::busybox_layout(), "library/busybox:latest")]);
    let server = server_with_mirror(&registry.addr, &["--warm-pool-per-image", "2"]);
    let client = server.client("alice");

    // The first session pulls and builds on the spot; the image then gets pooled sandboxes.
    let first = create_on(&client, "busybox").await.unwrap();
    let first = sandbox_of(&client, &first).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let pooled = loop {
        // Built, not just begun: a sandbox's directory exists from the start of its build, its
        // agent is in `agent/` once built.
        let pooled: Vec<String> = oci_sandboxes(&server)
            .into_iter()
            .filter(|id| *id != first && agent_settled(id))
            .collect();
        if pooled.len() >= 2 {
            break pooled;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pool did not fill: {pooled:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // The next session of the image is one of them.
    let next = create_on(&client, "busybox").await.unwrap();
    let next = sandbox_of(&client, &next).await;
    assert!(
        pooled.contains(&next),
        "{next} is not one of the pooled {pooled:?}"
    );
}

/// The host's id of the sandbox a busybox session runs in.
async fn sandbox_of(client: &HutchClient, session: &Session) -> String {
    common::host_view_by(client, session, "busybox readlink /proc/self/ns/uts")
        .await
        .sandbox_id
}

/// Whether sandbox `id`'s agent has moved into its `agent/` cgroup (v2), which it does once
/// built.
fn agent_settled(id: &str) -> bool {
    ["/sys/fs/cgroup/unified/hutch", "/sys/fs/cgroup/hutch"]
        .iter()
        .filter_map(|parent| std::fs::read_dir(parent).ok())
        .flat_map(|instances| instances.flatten())
        .any(|instance| {
            std::fs::read_to_string(instance.path().join(id).join("agent/cgroup.procs"))
                .is_ok_and(|procs| !procs.trim().is_empty())
        })
}

/// The ids of the sandboxes built on an OCI image, claimed or not.
fn oci_sandboxes(server: &TestServer) -> Vec<String> {
    std::fs::read_dir(server.data_dir().join("sandboxes"))
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("image")).is_ok_and(|m| m.starts_with("oci-"))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The layer blob digests of an OCI layout's image (`sha256:…`).
fn layer_digests(layout: &std::path::Path) -> Vec<String> {
    let read = |digest: &str| -> Value {
        let hex = digest.trim_start_matches("sha256:");
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let mut top = read(index["manifests"][0]["digest"].as_str().unwrap());
    if let Some(manifests) = top["manifests"].as_array() {
        let amd64 = manifests
            .iter()
            .find(|m| m["platform"]["architecture"] == "amd64")
            .unwrap();
        top = read(amd64["digest"].as_str().unwrap());
    }
    top["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}
