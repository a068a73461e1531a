//! Terminals, end to end: a real interactive program behind the PTY WebSocket.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::Duration;

use common::{TestServer, can_run_sandboxes, count_running, host_view, session};
use futures_util::{SinkExt, StreamExt};
use hutch_api::ProcessEvent;
use hutch_client::processes::{Socket, resize_message};
use tokio_tungstenite::tungstenite::Message;

/// Reads terminal output until `needle` appears; returns everything read. Panics with the
/// output after 15 s.
async fn read_until(socket: &mut Socket, screen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !screen.contains(needle) {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {screen:?}"))
            .expect("socket open")
            .unwrap();
        match message {
            Message::Binary(data) => screen.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("unexpected {other:?} while waiting for {needle:?} in {screen:?}"),
        }
    }
}

/// Reads terminal output until the socket closes; the close frame's code and reason. Panics
/// if the socket ends without one, or after 15 s.
async fn close_after_output(socket: &mut Socket) -> (u16, String) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("the socket ends")
            .expect("a close frame before the end")
            .unwrap();
        match message {
            Message::Binary(_) => continue,
            Message::Close(Some(frame)) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A server started with `args`, a client of tenant `alice`, a session of hers, and an 80×24
/// terminal in it running `program` (the login shell by default).
async fn terminal(
    args: &[&str],
    program: Option<&str>,
) -> (
    TestServer,
    hutch_client::HutchClient,
    hutch_api::Session,
    Socket,
) {
    let server = TestServer::start_with(&[&["--warm-pool", "1"], args].concat());
    let client = server.client("alice");
    let s = session(&client).await;
    let socket = client
        .open_terminal(s.session_id, 80, 24, program)
        .await
        .unwrap()
        .socket;
    (server, client, s, socket)
}

#[tokio::test]
async fn the_python_repl_runs_in_a_terminal() {
    if !can_run_sandboxes() {
        return;
    }
    let (_server, _client, _s, mut socket) = terminal(&[], Some("python3")).await;
    let mut screen = String::new();
    read_until(&mut socket, &mut screen, ">>> ").await;

    socket.send(Message::Binary("1+1\r".into())).await.unwrap();
    read_until(&mut socket, &mut screen, "\r\n2\r\n").await;

    // It has a real controlling terminal, of the size asked for, then of the new size.
    socket
        .send(Message::Binary(
            "import os; print(os.ttyname(0), os.get_terminal_size(0), os.environ['TERM'])\r".into(),
        ))
        .await
        .unwrap();
    read_until(
        &mut socket,
        &mut screen,
        "columns=80, lines=24) xterm-256color",
    )
    .await;
    socket.send(resize_message(100, 40)).await.unwrap();
    socket
        .send(Message::Binary("print(os.get_terminal_size(0))\r".into()))
        .await
        .unwrap();
    read_until(&mut socket, &mut screen, "columns=100, lines=40").await;
    assert!(screen.contains("/dev/pts/"), "{screen:?}");

    socket
        .send(Message::Binary("exit()\r".into()))
        .await
        .unwrap();
    let exit = loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => break serde_json::from_str::<ProcessEvent>(&text).unwrap(),
            Message::Binary(data) => screen.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        matches!(
            exit,
            ProcessEvent::Exit {
                exit_code: Some(0),
                ..
            }
        ),
        "{exit:?} {screen:?}"
    );
}

/// Reads until the `exit` event.
async fn exit_event(socket: &mut Socket, screen: &mut String) -> ProcessEvent {
    loop {
        match socket.next().await.unwrap().unwrap() {
            Message::Text(text) => return serde_json::from_str::<ProcessEvent>(&text).unwrap(),
            Message::Binary(data) => screen.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn ctrl_c_interrupts_the_foreground_job_of_a_login_shell() {
    if !can_run_sandboxes() {
        return;
    }
    let (_server, _client, _s, mut socket) = terminal(&[], None).await;
    let mut screen = String::new();
    // The quotes keep the marker out of the echo of the typed line: it shows once the shell
    // runs the line (a Ctrl-C before that would only clear the shell's input).
    socket
        .send(Message::Binary(
            "echo sl''eeping; sleep 30; echo not-interrupted\r".into(),
        ))
        .await
        .unwrap();
    read_until(&mut socket, &mut screen, "sleeping").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Ctrl-C reaches the foreground job through the terminal, not the shell.
    socket.send(Message::Binary("\x03".into())).await.unwrap();
    socket
        .send(Message::Binary("echo status=$?\r".into()))
        .await
        .unwrap();
    read_until(&mut socket, &mut screen, "status=130").await;
    assert!(!screen.contains("\nnot-interrupted"), "{screen:?}");
    socket
        .send(Message::Binary("exit 3\r".into()))
        .await
        .unwrap();
    let exit = exit_event(&mut socket, &mut screen).await;
    assert!(
        matches!(
            exit,
            ProcessEvent::Exit {
                exit_code: Some(3),
                ..
            }
        ),
        "{exit:?} {screen:?}"
    );
}

#[tokio::test]
async fn closing_the_socket_kills_everything_in_the_terminal() {
    if !can_run_sandboxes() {
        return;
    }
    if common::skip_on_kubernetes(
        "it finds the session's processes through its sandbox's namespaces on the host; \
         kube_serve.rs checks tree kills inside a pod",
    ) {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let view = host_view(&client, &s).await;
    let sleeps = || count_running(&view.uts, "sleep");

    let mut socket = client
        .open_terminal(s.session_id, 80, 24, None)
        .await
        .unwrap()
        .socket;
    // A detached, hangup-immune grandchild: only the cgroup kill can reach it.
    socket
        .send(Message::Binary(
            "nohup setsid sleep 1000 >/dev/null 2>&1 & echo READY\r".into(),
        ))
        .await
        .unwrap();
    let mut screen = String::new();
    read_until(&mut socket, &mut screen, "READY\r\n").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sleeps() == 0 {
        assert!(std::time::Instant::now() < deadline, "sleep never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(socket);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sleeps() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the terminal's processes outlived its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn deleting_the_session_closes_its_terminal_with_going_away() {
    if !can_run_sandboxes() {
        return;
    }
    let (_server, client, s, mut socket) = terminal(&[], None).await;
    socket
        .send(Message::Binary("echo READY\r".into()))
        .await
        .unwrap();
    let mut screen = String::new();
    read_until(&mut socket, &mut screen, "READY\r\n").await;

    client.delete_session(s.session_id).await.unwrap();
    // The sandbox is killed with the terminal open: the client is told, with a close frame,
    // rather than finding its connection cut.
    let (code, reason) = close_after_output(&mut socket).await;
    assert_eq!(code, 1001);
    assert_eq!(reason, "the session's sandbox ended the connection");
}

#[tokio::test]
async fn a_terminal_left_quiet_past_the_idle_timeout_is_closed_with_a_reason() {
    if !can_run_sandboxes() {
        return;
    }
    let started = std::time::Instant::now();
    let (_server, _client, _s, mut socket) =
        terminal(&["--websocket-idle-timeout", "2s"], None).await;
    // The shell's prompt, then nothing either way.
    let (code, reason) = close_after_output(&mut socket).await;
    assert_eq!(code, 1001);
    assert_eq!(reason, "nothing moved either way for 2 s");
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test]
async fn bad_terminal_sizes_are_refused() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let err = client
        .open_terminal(s.session_id, 0, 24, None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(hutch_api::ErrorCode::InvalidRequest));
    assert!(err.to_string().contains("cols"), "{err}");
}

/// `hutch shell` as a script drives it (standard input not a terminal): the keys go in, the
/// screen comes out, and it exits with the shell's code.
#[tokio::test(flavor = "multi_thread")]
async fn hutch_shell_relays_a_terminal_and_exits_with_its_code() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let out = tokio::task::block_in_place(|| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hutch"))
            .args(["shell", &s.session_id.to_string()])
            .env("HUTCH_URL", &server.url)
            .env("HUTCH_TOKEN", server.token("alice"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"tty; echo size=$(stty size)\rexit 5\r")
            .unwrap();
        child.wait_with_output().unwrap()
    });
    let screen = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(5), "{screen:?} {out:?}");
    assert!(screen.contains("/dev/pts/"), "{screen:?}");
    assert!(screen.contains("size=24 80"), "{screen:?}");
}
