//! A session's life on the host: created, used, destroyed by DELETE, by its TTL, or found
//! again after the server itself was killed. Nothing of it may outlive it.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::Duration;

use common::{TestServer, assert_nothing_left, can_run_sandboxes, host_view, session, sh};
use hutch_api::{CreateSessionRequest, ErrorCode, UpdateSessionRequest};

#[tokio::test]
async fn delete_leaves_no_process_mount_cgroup_or_directory() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    // Leave busy work behind: a detached process, files in every writable place.
    sh(&client, &s, "dd if=/dev/zero of=/workspace/big bs=1M count=8 2>/dev/null; touch /tmp/t /usr/x 2>/dev/null; true").await;
    let view = host_view(&client, &s).await;
    assert!(
        server
            .data_dir()
            .join("sandboxes")
            .join(&view.sandbox_id)
            .exists()
    );
    assert!(
        common::cgroup_exists(&view),
        "the leak check looks in the right place"
    );

    let deleted = client.delete_session(s.session_id).await.expect("delete");
    assert_eq!(deleted.session_id, s.session_id);
    assert_nothing_left(&server, &view);
    let again = client.get_session(s.session_id).await.unwrap_err();
    assert_eq!(again.code(), Some(ErrorCode::SessionNotFound));
    let twice = client.delete_session(s.session_id).await.unwrap_err();
    assert_eq!(twice.code(), Some(ErrorCode::SessionNotFound));
}

#[tokio::test]
async fn ttl_expiry_destroys_the_session_within_a_second() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = client
        .create_session(&CreateSessionRequest {
            ttl: Some(60),
            ..Default::default()
        })
        .await
        .unwrap();
    let view = host_view(&client, &s).await;
    let expires = s.expires_at;

    // Poll until the session is gone; it must go no later than a second after expiresAt.
    loop {
        match client.get_session(s.session_id).await {
            Ok(_) => {
                let now = time::OffsetDateTime::now_utc();
                assert!(
                    now < expires + Duration::from_secs(1),
                    "still there at {now}, expired at {expires}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => {
                assert_eq!(e.code(), Some(ErrorCode::SessionNotFound));
                let now = time::OffsetDateTime::now_utc();
                assert!(
                    now >= expires - Duration::from_millis(100),
                    "destroyed early at {now}, expires {expires}"
                );
                break;
            }
        }
    }
    assert_nothing_left(&server, &view);
}

#[tokio::test]
async fn a_create_whose_client_hangs_up_still_ends_running_and_deletable() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let addr = server.url.trim_start_matches("http://").to_owned();
    let token = server.token("alice");
    // Clients that send a whole create and hang up before any answer (what a cancelled SDK
    // call or `curl --max-time 0.005` does). The server may see a hang-up before its handler
    // starts, and then makes nothing of the request: rounds of five until it took some up.
    let hang_up = |n: usize| {
        use std::io::Write;
        let body = format!(r#"{{"ttl":120,"metadata":{{"via":"hangup-{n}"}}}}"#);
        let mut tcp = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            tcp,
            "POST /v1/sessions HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        // Long enough for the server to read it, too short for a sandbox to be made.
        std::thread::sleep(Duration::from_millis(3));
    };
    for round in 0..10 {
        (0..5).for_each(|n| hang_up(round * 5 + n));
        tokio::time::sleep(Duration::from_secs(1)).await;
        if client.list_sessions(None, None).await.unwrap().total > 0 {
            break;
        }
    }
    // Each create the server took up goes on without its client and ends RUNNING, in the
    // tenant's list: none stays in CREATING, out of the list, where before nothing ended it
    // (not DELETE, which answered 404, not its TTL).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sessions = loop {
        let list = client.list_sessions(None, None).await.unwrap();
        let running = list
            .sessions
            .iter()
            .filter(|s| s.status == hutch_api::SessionStatus::Running)
            .count();
        if list.total > 0 && running as u64 == list.total {
            break list.sessions;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions of the hung-up creates: {:?}",
            list.sessions
                .iter()
                .map(|s| (s.session_id, s.status))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for s in sessions {
        client.delete_session(s.session_id).await.unwrap();
    }
}

/// libfaketime, which shifts the wall clock of the process it is preloaded into.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[tokio::test]
async fn a_wall_clock_jump_does_not_expire_sessions_early() {
    if !can_run_sandboxes() {
        return;
    }
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is missing: scripts/deps.sh test installs it"
    );
    // The server's wall clock follows the offset in this file (read on every call); its
    // monotonic clock stays the real one, as a system clock step leaves it.
    let offset = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(offset.path(), "+0\n").unwrap();
    let offset_path = offset.path().to_string_lossy().into_owned();
    let server = TestServer::start_with_env(
        &[
            ("LD_PRELOAD", FAKETIME),
            ("FAKETIME_TIMESTAMP_FILE", offset_path.as_str()),
            ("FAKETIME_NO_CACHE", "1"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
        &["--warm-pool", "1"],
    );
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", server.pid().unwrap())).unwrap();
    assert!(
        maps.contains("libfaketime"),
        "the server runs with libfaketime"
    );
    let client = server.client("alice");
    let s = client
        .create_session(&CreateSessionRequest {
            ttl: Some(600),
            ..Default::default()
        })
        .await
        .unwrap();

    // The system clock jumps half an hour ahead: past the session's expiry and the grace its
    // sandbox would end itself after (tokens, which carry wall-clock expiries of their
    // issuer, are still valid for the test's hour).
    std::fs::write(offset.path(), "+30m\n").unwrap();
    // Many reaper passes (every 200 ms) and agent deadline checks (every second).
    tokio::time::sleep(Duration::from_secs(4)).await;

    let after = client.get_session(s.session_id).await.expect("still there");
    assert_eq!(after.expires_at, s.expires_at, "the expiry did not move");
    assert_eq!(sh(&client, &s, "echo alive").await.stdout, "alive\n");
    client.delete_session(s.session_id).await.unwrap();
}

#[tokio::test]
async fn patch_extends_the_ttl_and_replaces_metadata() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let update = UpdateSessionRequest {
        ttl: Some(3600),
        metadata: Some([("stage".to_owned(), "two".to_owned())].into()),
        network: None,
    };
    let patched = client.update_session(s.session_id, &update).await.unwrap();
    assert!(patched.expires_at > s.expires_at + Duration::from_secs(3000));
    assert_eq!(
        patched.metadata.get("stage").map(String::as_str),
        Some("two")
    );
    assert_eq!(
        sh(&client, &patched, "echo ok").await.stdout,
        "ok\n",
        "the sandbox is untouched by PATCH"
    );
    // The session sent back as it was read, its network policy included, changes nothing,
    // even though this one has no network to change.
    let same = UpdateSessionRequest {
        ttl: None,
        metadata: Some(patched.metadata.clone()),
        network: Some(patched.network.clone()),
    };
    let again = client.update_session(s.session_id, &same).await.unwrap();
    assert_eq!(again.network, patched.network);
    assert_eq!(again.metadata, patched.metadata);
}

#[tokio::test]
async fn after_a_crash_live_sessions_are_adopted_and_dead_ones_cleaned_up() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start();
    let client = server.client("alice");
    let kept = session(&client).await;
    let lost = session(&client).await;
    sh(&client, &kept, "echo state > /workspace/state").await;
    let kept_view = host_view(&client, &kept).await;
    let lost_view = host_view(&client, &lost).await;

    server.kill_hard();
    // While the server is down, one sandbox dies (as after an OOM kill of its agent).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &lost_view.agent_pid.to_string()])
        .status();
    server.restart();
    let client = server.client("alice");

    let state = sh(&client, &kept, "cat /workspace/state").await;
    assert_eq!(
        state.stdout, "state\n",
        "the same sandbox, re-adopted: {state:?}"
    );
    assert_eq!(
        host_view(&client, &kept).await.agent_pid,
        kept_view.agent_pid
    );

    let gone = client.get_session(lost.session_id).await.unwrap_err();
    assert_eq!(
        gone.code(),
        Some(ErrorCode::SessionNotFound),
        "the dead sandbox's session is reported gone"
    );
    assert_nothing_left(&server, &lost_view);

    client.delete_session(kept.session_id).await.unwrap();
    assert_nothing_left(&server, &kept_view);
}

/// Traces pid `argv[1]` with ptrace, passing its signals on; at its exit, lets it exit and
/// collects the exit a second later.
const TRACER: &str = r#"
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_CONT, PTRACE_SEIZE, PTRACE_O_TRACEEXIT, PTRACE_EVENT_EXIT = 7, 0x4206, 0x40, 6
pid = int(sys.argv[1])
if libc.ptrace(PTRACE_SEIZE, pid, None, PTRACE_O_TRACEEXIT) != 0:
    sys.exit("seize: errno %d" % ctypes.get_errno())
print("seized", flush=True)
while True:
    _, status = os.waitpid(pid, 0x40000000)  # __WALL
    if not os.WIFSTOPPED(status):
        break
    if status >> 16 == PTRACE_EVENT_EXIT:
        libc.ptrace(PTRACE_CONT, pid, None, None)
        time.sleep(1)
        continue
    sig = os.WSTOPSIG(status) if status >> 16 == 0 else 0
    libc.ptrace(PTRACE_CONT, pid, None, sig)
"#;

#[tokio::test]
async fn an_agent_that_exits_under_a_tracer_is_reaped_once_the_tracer_lets_go() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let view = host_view(&client, &s).await;
    let agent = view.agent_pid;
    // Its start time tells it from a later process that gets the same pid.
    let started = |pid: i32| -> Option<String> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let after_name = stat.rsplit_once(')')?.1;
        after_name.split_whitespace().nth(19).map(str::to_owned)
    };
    let agent_start = started(agent).expect("the agent's start time");
    // A tracer on the agent (an operator's `strace -p`, a debugger) that collects the
    // agent's exit a second after it happens: until then only the tracer may reap it.
    let mut tracer = std::process::Command::new("python3")
        .args(["-c", TRACER, &agent.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut seized = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(tracer.stdout.take().unwrap()),
        &mut seized,
    )
    .unwrap();
    assert_eq!(seized, "seized\n");

    client.delete_session(s.session_id).await.expect("delete");
    let traced = tokio::task::spawn_blocking(move || tracer.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        traced.success(),
        "the tracer saw the agent exit: {traced:?}"
    );
    // Handed back to the server, the agent is reaped: no zombie holds its pid.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while started(agent).as_ref() == Some(&agent_start) {
        assert!(
            std::time::Instant::now() < deadline,
            "agent {agent} is still there: {:?}",
            std::fs::read_to_string(format!("/proc/{agent}/stat"))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_nothing_left(&server, &view);
}

#[tokio::test]
async fn validation_errors_name_the_field() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    for ttl in [59, 28_801] {
        let err = client
            .create_session(&CreateSessionRequest {
                ttl: Some(ttl),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
        assert!(err.to_string().contains("ttl"), "{err}");
    }
    let (status, body) = client
        .request(http::Method::GET, "/v1/sessions/not-a-uuid", None)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body:?}");
    let (status, _) = client
        .request(
            http::Method::GET,
            &format!("/v1/sessions/{}", uuid::Uuid::now_v7()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404);
    let (status, body) = client
        .request(http::Method::GET, "/v1/sessions?limit=101", None)
        .await
        .unwrap();
    assert_eq!(status, 400, "{body:?}");
}

#[tokio::test]
async fn tenants_see_only_their_own_sessions() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let alice = server.client("alice");
    let bob = server.client("bob");
    let s = session(&alice).await;
    assert_eq!(
        bob.get_session(s.session_id).await.unwrap_err().code(),
        Some(ErrorCode::SessionNotFound)
    );
    let req = hutch_api::CommandRequest {
        command: Some("id".into()),
        ..Default::default()
    };
    assert_eq!(
        bob.run_command(s.session_id, &req)
            .await
            .unwrap_err()
            .code(),
        Some(ErrorCode::SessionNotFound)
    );
    assert_eq!(
        bob.delete_session(s.session_id).await.unwrap_err().code(),
        Some(ErrorCode::SessionNotFound)
    );
    assert_eq!(bob.list_sessions(None, None).await.unwrap().total, 0);
    assert_eq!(alice.list_sessions(None, None).await.unwrap().total, 1);
}
