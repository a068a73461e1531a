//! Streamed commands and background processes, end to end: output that survives a
//! disconnect, trees that die whole, bytes that stay bytes, and many streams at once.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, count_running, host_view, session};
use hutch_api::{CommandRequest, ErrorCode, ProcessEvent, ProcessStatus, SignalSpec};
use hutch_client::HutchClient;
use hutch_client::processes::{ProcessStream, StreamItem};
use uuid::Uuid;

fn sh_command(command: &str) -> CommandRequest {
    CommandRequest {
        command: Some(command.to_owned()),
        ..CommandRequest::default()
    }
}

/// Everything a stream yields until its end: output chunks `(seq, stderr, bytes)` and the
/// other events in order.
#[derive(Default, Debug)]
struct Collected {
    chunks: Vec<(u64, bool, Vec<u8>)>,
    events: Vec<ProcessEvent>,
}

impl Collected {
    fn stdout(&self) -> Vec<u8> {
        self.chunks
            .iter()
            .filter(|c| !c.1)
            .flat_map(|c| c.2.clone())
            .collect()
    }

    fn exit(&self) -> &ProcessEvent {
        let last = self.events.last().expect("an event");
        assert!(matches!(last, ProcessEvent::Exit { .. }), "{last:?}");
        last
    }
}

async fn collect(stream: &mut ProcessStream) -> Collected {
    let mut collected = Collected::default();
    while let Some(item) = stream.next().await {
        match item.unwrap() {
            StreamItem::Output { seq, stderr, data } => collected.chunks.push((seq, stderr, data)),
            StreamItem::Event(event) => collected.events.push(event),
        }
    }
    collected
}

async fn start_event(stream: &mut ProcessStream) -> (i32, u64) {
    match stream.next_event().await.unwrap().unwrap() {
        ProcessEvent::Start { pid, process_id } => (pid, process_id),
        other => panic!("expected start, got {other:?}"),
    }
}

/// Host processes running `sleep` in the session's namespaces.
fn sleeps_on_host(uts: &str) -> usize {
    count_running(uts, "sleep")
}

async fn wait_until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_streamed_command_sends_start_output_and_exit() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let mut stream = client
        .stream_command(s.session_id, &sh_command("echo out; echo err >&2; exit 3"))
        .await
        .unwrap();
    let (pid, _) = start_event(&mut stream).await;
    assert!(pid > 1);
    let got = collect(&mut stream).await;
    assert_eq!(got.stdout(), b"out\n");
    assert!(got.chunks.iter().any(|c| c.1 && c.2 == b"err\n"), "{got:?}");
    assert!(matches!(
        got.exit(),
        ProcessEvent::Exit {
            exit_code: Some(3),
            signal: None,
            timed_out: false,
            ..
        }
    ));

    // The same over HTTP, as NDJSON.
    let body =
        serde_json::to_vec(&serde_json::json!({"command": "printf 'a\\377b'", "stream": true}))
            .unwrap();
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/commands", s.session_id),
            Some(body.into()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    let events: Vec<ProcessEvent> = std::str::from_utf8(&bytes)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        matches!(events[0], ProcessEvent::Start { .. }),
        "{events:?}"
    );
    assert_eq!(
        events[1],
        ProcessEvent::Stdout {
            seq: 0,
            data: hutch_api::processes::base64::encode(b"a\xffb")
        }
    );
    assert!(matches!(
        events.last().unwrap(),
        ProcessEvent::Exit {
            exit_code: Some(0),
            ..
        }
    ));
}

#[tokio::test]
async fn accept_ndjson_streams_a_plain_command() {
    if !can_run_sandboxes() {
        return;
    }
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let body = r#"{"command": "echo streamed"}"#;
    let authority = server.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let request = format!(
        "POST /v1/sessions/{}/commands HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
         Accept: application/x-ndjson\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        s.session_id,
        server.token("alice"),
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: application/x-ndjson"),
        "{response}"
    );
    let streamed = hutch_api::processes::base64::encode(b"streamed\n");
    assert!(response.contains(&streamed), "{response}");
    assert!(
        response.contains(r#""type":"exit","exitCode":0"#),
        "{response}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_reattaches_with_nothing_lost_or_repeated() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let mut stream = client
        .stream_command(
            s.session_id,
            &sh_command("for i in $(seq 1 400); do echo line-$i; sleep 0.002; done"),
        )
        .await
        .unwrap();
    let (pid, _) = start_event(&mut stream).await;
    let mut chunks = Vec::new();
    while chunks.len() < 5 {
        match stream.next().await.unwrap().unwrap() {
            StreamItem::Output { seq, data, .. } => chunks.push((seq, data)),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The client goes away mid-stream; the command runs on while nobody listens.
    stream.close().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let info = client.get_process(s.session_id, pid).await.unwrap();
        if info.next_seq > 5 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "output kept arriving while detached: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let last = chunks.last().unwrap().0;
    let mut again = client
        .attach_process(s.session_id, pid, last + 1)
        .await
        .unwrap();
    assert_eq!(start_event(&mut again).await.0, pid);
    let rest = collect(&mut again).await;
    assert!(
        !rest
            .events
            .iter()
            .any(|e| matches!(e, ProcessEvent::Truncated { .. })),
        "nothing was dropped: {:?}",
        rest.events
    );
    chunks.extend(rest.chunks.into_iter().map(|(seq, _, data)| (seq, data)));
    let seqs: Vec<u64> = chunks.iter().map(|c| c.0).collect();
    let expected_seqs: Vec<u64> = (0..seqs.len() as u64).collect();
    assert_eq!(seqs, expected_seqs, "every chunk exactly once, in order");
    let text: Vec<u8> = chunks.into_iter().flat_map(|c| c.1).collect();
    let expected: String = (1..=400).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(String::from_utf8(text).unwrap(), expected);
    assert!(matches!(
        rest.events.last().unwrap(),
        ProcessEvent::Exit {
            exit_code: Some(0),
            ..
        }
    ));
    // A cursor past what the process ever wrote is refused, not answered with no output.
    let ahead = seqs.len() as u64 + 50;
    let Err(err) = client.attach_process(s.session_id, pid, ahead).await else {
        panic!("a cursor ahead of the output is refused");
    };
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
}

#[tokio::test]
async fn a_cursor_older_than_the_buffer_is_told_what_was_dropped() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    // 4 MiB with nobody attached: the ring keeps the newest 1 MiB.
    let started = client
        .start_process(s.session_id, &sh_command("head -c 4194304 /dev/zero"))
        .await
        .unwrap();
    wait_until("the process exits", async || {
        client
            .get_process(s.session_id, started.pid)
            .await
            .unwrap()
            .status
            == ProcessStatus::Exited
    })
    .await;
    let mut stream = client
        .attach_process(s.session_id, started.pid, 0)
        .await
        .unwrap();
    start_event(&mut stream).await;
    let got = collect(&mut stream).await;
    let ProcessEvent::Truncated {
        from: 0,
        first_available,
    } = got.events[0]
    else {
        panic!("expected truncated first: {:?}", got.events);
    };
    assert_eq!(got.chunks[0].0, first_available);
    let kept: usize = got.chunks.iter().map(|c| c.2.len()).sum();
    assert!(
        kept <= hutch_api::limits::PROCESS_OUTPUT_BUFFER_BYTES && kept > 512 * 1024,
        "{kept}"
    );
    got.exit();
}

async fn tree_of_sleeps(client: &HutchClient, session: Uuid, timeout: Option<f64>) -> i32 {
    let req = CommandRequest {
        timeout,
        ..sh_command("sleep 1000 & sleep 1000 & wait")
    };
    client.start_process(session, &req).await.unwrap().pid
}

#[tokio::test]
async fn killing_a_process_kills_its_whole_tree() {
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

    let pid = tree_of_sleeps(&client, s.session_id, None).await;
    wait_until("both grandchildren run", async || {
        sleeps_on_host(&view.uts) == 2
    })
    .await;
    let info = client.kill_process(s.session_id, pid).await.unwrap();
    assert_eq!(info.status, ProcessStatus::Exited, "{info:?}");
    assert_eq!(info.signal, Some(9));
    assert_eq!(sleeps_on_host(&view.uts), 0, "the grandchildren died too");

    // The finished process is still listed, with its exit.
    let list = client.list_processes(s.session_id).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|p| p.pid == pid && p.signal == Some(9))
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_tree() {
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

    let pid = tree_of_sleeps(&client, s.session_id, Some(1.0)).await;
    wait_until("both grandchildren run", async || {
        sleeps_on_host(&view.uts) == 2
    })
    .await;
    wait_until("the timeout ends it", async || {
        client.get_process(s.session_id, pid).await.unwrap().status == ProcessStatus::Exited
    })
    .await;
    let info = client.get_process(s.session_id, pid).await.unwrap();
    assert!(info.timed_out, "{info:?}");
    assert_eq!(sleeps_on_host(&view.uts), 0, "the grandchildren died too");
}

#[tokio::test]
async fn a_signal_reaches_the_whole_process_group() {
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

    let pid = tree_of_sleeps(&client, s.session_id, None).await;
    wait_until("both grandchildren run", async || {
        sleeps_on_host(&view.uts) == 2
    })
    .await;
    client
        .signal_process(s.session_id, pid, SignalSpec::Name("SIGTERM".into()))
        .await
        .unwrap();
    wait_until("it exits", async || {
        client.get_process(s.session_id, pid).await.unwrap().status == ProcessStatus::Exited
    })
    .await;
    let info = client.get_process(s.session_id, pid).await.unwrap();
    assert_eq!(info.signal, Some(15), "{info:?}");

    let bad = client
        .signal_process(s.session_id, pid, SignalSpec::Name("SIGBOGUS".into()))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some(ErrorCode::InvalidRequest));
    let ended = client
        .signal_process(s.session_id, pid, SignalSpec::Number(15))
        .await
        .unwrap_err();
    assert_eq!(ended.code(), Some(ErrorCode::Conflict));
}

#[tokio::test]
async fn running_processes_are_bounded_per_session() {
    if !can_run_sandboxes() {
        return;
    }
    use hutch_api::limits::PROCESSES_RUNNING_MAX;
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let mut pids = Vec::new();
    for _ in 0..PROCESSES_RUNNING_MAX {
        let started = client
            .start_process(s.session_id, &sh_command("exec sleep 1000"))
            .await
            .unwrap();
        pids.push(started.pid);
    }
    let err = client
        .start_process(s.session_id, &sh_command("exec sleep 1000"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::RateLimited));
    let hutch_client::ClientError::Api { body, .. } = &err else {
        unreachable!()
    };
    assert_eq!(body.error.details["limit"], PROCESSES_RUNNING_MAX);
    // One-shot commands have their own permits and still run.
    assert_eq!(common::sh(&client, &s, "echo ok").await.stdout, "ok\n");
    // A killed process frees its place.
    client.kill_process(s.session_id, pids[0]).await.unwrap();
    client
        .start_process(s.session_id, &sh_command("exec sleep 1000"))
        .await
        .unwrap();
    assert_eq!(
        client.list_processes(s.session_id).await.unwrap().total,
        PROCESSES_RUNNING_MAX + 1,
        "running ones and the finished one are listed"
    );
}

#[tokio::test]
async fn unknown_processes_are_not_found() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let err = client.get_process(s.session_id, 999_999).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));
    let err = client
        .kill_process(s.session_id, 999_999)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));
    let err = client
        .attach_process(s.session_id, 999_999, 0)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));
    let err = client
        .write_process_stdin(s.session_id, 999_999, b"x".to_vec(), true)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::ProcessNotFound));

    // A body is an object: not the array of a request's fields in order.
    let (status, body) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/commands", s.session_id),
            Some(
                br#"["echo positional",null,null,null,null,null,null,null]"#
                    .to_vec()
                    .into(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));

    // A WebSocket route asked without the upgrade answers in the error envelope.
    let (status, body) = client
        .request(
            http::Method::GET,
            &format!("/v1/sessions/{}/commands/stream", s.session_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 400);
    let body: hutch_api::ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(body.error.code, ErrorCode::InvalidRequest);
}

/// A stdin write past its bound, sent chunked, is refused with 413 before the agent has read
/// it all; the request after it on the same connection still works (the agent's connection
/// that answered the 413 is not reused). curl sends them as a client that keeps its
/// connection would.
#[tokio::test]
async fn a_stdin_write_refused_as_too_large_leaves_the_session_answering() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let started = client
        .start_process(s.session_id, &sh_command("cat > /dev/null"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    // Past the 1 MiB a write may carry.
    std::fs::write(&big, vec![b'x'; 1_200_000]).unwrap();
    let stdin = format!(
        "{}/v1/sessions/{}/processes/{}/stdin",
        server.url, s.session_id, started.pid
    );
    let auth = format!("authorization: Bearer {}", server.token("alice"));
    let common = ["-sS", "-o", "/dev/null", "-w", "%{http_code} ", "-H", &auth];
    // Each round a client of its own: the write, then a small one on the same connection.
    for round in 0..12 {
        let mut args: Vec<String> = common.map(String::from).to_vec();
        args.extend(["-H", "transfer-encoding: chunked", "--data-binary"].map(String::from));
        args.push(format!("@{}", big.display()));
        args.push(stdin.clone());
        args.push("--next".into());
        args.extend(common.map(String::from));
        args.extend(["--data-binary", "x"].map(String::from));
        args.push(stdin.clone());
        let out = tokio::process::Command::new("curl")
            .args(&args)
            .output()
            .await
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "413 204 ",
            "round {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A command running when its session is deleted answers what happened to the session (404
/// or 409), not that its sandbox failed (502).
#[tokio::test]
async fn a_command_cut_short_by_its_session_s_delete_says_so() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let running = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .run_command(s.session_id, &sh_command("sleep 100"))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.delete_session(s.session_id).await.unwrap();
    let err = running.await.unwrap().unwrap_err();
    assert!(
        matches!(
            err.code(),
            Some(ErrorCode::SessionNotFound | ErrorCode::Conflict)
        ),
        "{err}"
    );
}

#[tokio::test]
async fn arbitrary_bytes_round_trip_through_stdin_and_stdout() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let started = client
        .start_process(s.session_id, &sh_command("cat"))
        .await
        .unwrap();
    let mut stream = client
        .attach_process(s.session_id, started.pid, 0)
        .await
        .unwrap();
    start_event(&mut stream).await;
    // Every byte value, including NUL and invalid UTF-8, twice, in two writes.
    let bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    client
        .write_process_stdin(s.session_id, started.pid, bytes[..300].to_vec(), false)
        .await
        .unwrap();
    client
        .write_process_stdin(s.session_id, started.pid, bytes[300..].to_vec(), true)
        .await
        .unwrap();
    let got = collect(&mut stream).await;
    assert_eq!(got.stdout(), bytes);
    assert!(matches!(
        got.exit(),
        ProcessEvent::Exit {
            exit_code: Some(0),
            ..
        }
    ));
    let closed = client
        .write_process_stdin(s.session_id, started.pid, b"more".to_vec(), false)
        .await
        .unwrap_err();
    assert_eq!(closed.code(), Some(ErrorCode::Conflict));

    // The same over the command stream itself: binary messages in, then end of file.
    let mut stream = client
        .stream_command(s.session_id, &sh_command("cat"))
        .await
        .unwrap();
    start_event(&mut stream).await;
    stream.write_stdin(&bytes).await.unwrap();
    stream.close_stdin().await.unwrap();
    assert_eq!(collect(&mut stream).await.stdout(), bytes);

    // One message larger than a stdin write may be (1 MiB) goes in whole.
    let mut stream = client
        .stream_command(s.session_id, &sh_command("wc -c"))
        .await
        .unwrap();
    start_event(&mut stream).await;
    stream.write_stdin(&vec![b'x'; 3 << 20]).await.unwrap();
    stream.close_stdin().await.unwrap();
    assert_eq!(collect(&mut stream).await.stdout(), b"3145728\n");
}

/// Streams count against their own limit (`PROCESSES_RUNNING_MAX`, 128), not the 64 one-shot
/// commands a session runs at once: 100 at once all run to the end.
#[tokio::test]
async fn a_hundred_concurrent_streams_all_complete() {
    if !can_run_sandboxes() {
        return;
    }
    const STREAMS: usize = 100;
    const _: () = assert!(STREAMS <= hutch_api::limits::PROCESSES_RUNNING_MAX);
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let command = format!("sleep 0.2; for j in $(seq 1 500); do echo {i}-$j; done");
                let mut stream = client
                    .stream_command(s.session_id, &sh_command(&command))
                    .await
                    .unwrap();
                start_event(&mut stream).await;
                let got = collect(&mut stream).await;
                let expected: String = (1..=500).map(|j| format!("{i}-{j}\n")).collect();
                assert_eq!(String::from_utf8(got.stdout()).unwrap(), expected);
                assert!(matches!(
                    got.exit(),
                    ProcessEvent::Exit {
                        exit_code: Some(0),
                        ..
                    }
                ));
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// `hutch exec` as a user runs it: output on the right streams, the command's exit code.
#[tokio::test(flavor = "multi_thread")]
async fn hutch_exec_streams_output_and_exits_with_the_commands_code() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let exec = |args: &[&str], stdin: &[u8]| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hutch"))
            .arg("exec")
            .arg(s.session_id.to_string())
            .arg("--")
            .args(args)
            .env("HUTCH_URL", &server.url)
            .env("HUTCH_TOKEN", server.token("alice"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        child.wait_with_output().unwrap()
    };
    let out =
        tokio::task::block_in_place(|| exec(&["sh", "-c", "echo out; echo err >&2; exit 7"], b""));
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(out.stdout, b"out\n");
    assert_eq!(out.stderr, b"err\n");

    let out = tokio::task::block_in_place(|| exec(&["sh", "-c", "kill -TERM $$"], b""));
    assert_eq!(
        out.status.code(),
        Some(128 + 15),
        "a signal reads as 128 + n: {out:?}"
    );

    let out = tokio::task::block_in_place(|| exec(&["wc", "-c"], &[0xff; 1000]));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1000",
        "stdin is forwarded"
    );

    let out = tokio::task::block_in_place(|| exec(&["no-such-program"], b""));
    assert_eq!(out.status.code(), Some(125));
    assert!(!out.stderr.is_empty());
}
