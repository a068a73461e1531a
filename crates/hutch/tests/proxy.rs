//! The control plane's relay to a session's agent under bad conditions: the agent's own answer
//! reaches the client whenever the agent gave one (even before reading the request's body),
//! and an agent that stopped answering costs a client a bounded wait and a 504, not a hang.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod files_common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, host_view, session, sh_with};
use files_common::{curl, enc};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A file of `mib` MiB of zeros, to send as a body the agent never reads.
fn big_body(dir: &tempfile::TempDir, mib: usize) -> String {
    let file = dir.path().join("body");
    std::fs::write(&file, vec![0u8; mib << 20]).unwrap();
    format!("@{}", file.display())
}

#[tokio::test]
async fn an_agent_answering_before_it_reads_the_body_is_relayed_not_turned_into_a_502() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let dir = tempfile::tempdir().unwrap();
    let body = big_body(&dir, 4);

    // Each request is refused before its body is read: the agent answers and closes while
    // the body is still coming. Many at once, since the agent's close races the proxy's
    // next write.
    let refusals = [
        (
            "PUT",
            format!(
                "/files/content?path={}&parents=false",
                enc("/workspace/no/such/dir/file")
            ),
            404,
            "file_not_found",
        ),
        (
            "PUT",
            "/files/content?path=/proc/x".to_owned(),
            403,
            "forbidden",
        ),
    ];
    let answers: Vec<(String, u16, String)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..8)
            .map(|worker| {
                let (server, body, refusals) = (&server, &body, &refusals);
                scope.spawn(move || {
                    (0..20)
                        .map(|attempt| {
                            let (method, rest, _, _) = &refusals[(worker + attempt) % 2];
                            let reply =
                                curl(server, s.session_id, method, rest, &["--data-binary", body]);
                            (rest.clone(), reply.status, reply.text())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });
    for (rest, status, text) in &answers {
        let (_, _, want_status, want_code) = refusals.iter().find(|r| &r.1 == rest).unwrap();
        assert_eq!(status, want_status, "{rest}: {text}");
        assert!(text.contains(want_code), "{rest}: {text}");
    }

    // The session is unharmed.
    let listed = curl(&server, s.session_id, "GET", "/files?path=/workspace", &[]);
    assert_eq!(listed.status, 200, "{}", listed.text());
}

#[tokio::test]
async fn a_websocket_upgrade_the_agent_refuses_answers_with_the_agents_error() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let url = format!(
        "{}/v1/sessions/{}/processes/424242/stream",
        server.url.replacen("http", "ws", 1),
        s.session_id
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", server.token("alice")).parse().unwrap(),
    );
    let refused = tokio_tungstenite::connect_async(request).await.unwrap_err();
    let tokio_tungstenite::tungstenite::Error::Http(response) = refused else {
        panic!("expected the agent's HTTP answer, got {refused}");
    };
    assert_eq!(response.status(), 404);
    let body: serde_json::Value =
        serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "process_not_found", "{body}");
}

#[tokio::test]
async fn a_stopped_agent_answers_504_in_bounded_time_and_a_long_command_is_not_cut() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--agent-timeout", "1s"]);
    let client = server.client("alice");
    let s = session(&client).await;

    // A command longer than the probe interval: the agent answers its probes meanwhile.
    let slept = sh_with(&client, &s, "sleep 3; echo done", 30.0).await;
    assert_eq!(slept.stdout, "done\n", "{slept:?}");

    let agent = host_view(&client, &s).await.agent_pid;
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .args([name, &agent.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name} {agent}");
    };
    signal("-STOP");
    let started = Instant::now();
    let stuck = curl(
        &server,
        s.session_id,
        "GET",
        "/files/stat?path=/workspace",
        &[],
    );
    let waited = started.elapsed();
    signal("-CONT");
    assert_eq!(
        (stuck.status, stuck.code().as_str()),
        (504, "sandbox_timeout"),
        "{}",
        stuck.text()
    );
    // One probe interval plus one probe: about 2 s, with room for a loaded machine.
    assert!(waited < Duration::from_secs(8), "the 504 took {waited:?}");
    assert_eq!(stuck.json()["error"]["details"]["waitedMs"], 1000);

    // Running again, the agent answers as before.
    let again = curl(
        &server,
        s.session_id,
        "GET",
        "/files/stat?path=/workspace",
        &[],
    );
    assert_eq!(again.status, 200, "{}", again.text());
}
