//! Bounds on what a client controls, against a real `hutch serve`: oversized request heads
//! answer in the error envelope, a session runs at most `COMMANDS_CONCURRENT_MAX` commands at
//! once, and a command dies with its request.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, session, sh};
use hutch_api::limits::{
    COMMANDS_CONCURRENT_MAX, REQUEST_HEADERS_MAX_BYTES, REQUEST_URI_MAX_BYTES,
};
use hutch_api::{CommandRequest, ErrorBody, ErrorCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
struct Raw {
    status: u16,
    /// The head, lower-cased.
    head: String,
    body: String,
}

/// Sends `request_line`, `headers` and an empty body on a fresh connection, exactly as given,
/// and reads the whole answer.
async fn raw(server: &TestServer, request_line: &str, headers: &[(String, String)]) -> Raw {
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut out = format!("{request_line}\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"));
    Raw {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}

/// Asserts an error envelope with `code`, also named in the `x-hutch-error-code` header.
fn assert_envelope(answer: &Raw, code: ErrorCode) {
    assert_eq!(answer.status, code.status(), "{}", answer.head);
    assert!(
        answer
            .head
            .contains(&format!("x-hutch-error-code: {}", code.as_str())),
        "{}",
        answer.head
    );
    let body: ErrorBody = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not the envelope ({e}): {:?}", answer.body));
    assert_eq!(body.error.code, code);
}

#[tokio::test]
async fn oversized_request_heads_answer_in_the_envelope() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("alice");
    let auth = ("authorization".to_owned(), format!("Bearer {token}"));

    // Twenty 1 KiB headers: over the 16 KiB total, well under hyper's 100 fields.
    let mut big: Vec<(String, String)> = (0..20)
        .map(|i| (format!("x-filler-{i}"), "f".repeat(1024)))
        .collect();
    let answer = raw(&server, "GET /health HTTP/1.1", &big).await;
    assert_envelope(&answer, ErrorCode::HeadersTooLarge);
    assert!(answer.head.contains("x-request-id:"), "{}", answer.head);
    let body: ErrorBody = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(
        body.error.details["limitBytes"],
        serde_json::json!(REQUEST_HEADERS_MAX_BYTES)
    );

    // One oversized header is refused the same way, before the token is even looked at.
    let one = vec![("x-one".to_owned(), "o".repeat(REQUEST_HEADERS_MAX_BYTES))];
    let answer = raw(&server, "GET /v1/sessions HTTP/1.1", &one).await;
    assert_envelope(&answer, ErrorCode::HeadersTooLarge);
    big.push(auth.clone());
    let answer = raw(&server, "GET /v1/sessions HTTP/1.1", &big).await;
    assert_envelope(&answer, ErrorCode::HeadersTooLarge);

    // Under the limit, the same route answers normally.
    let fine = vec![auth.clone(), ("x-filler".to_owned(), "f".repeat(8 * 1024))];
    let answer = raw(&server, "GET /v1/sessions HTTP/1.1", &fine).await;
    assert_eq!(answer.status, 200, "{} {}", answer.head, answer.body);

    // A request target over its own limit.
    let long = format!(
        "GET /v1/sessions?pad={} HTTP/1.1",
        "p".repeat(REQUEST_URI_MAX_BYTES)
    );
    let answer = raw(&server, &long, std::slice::from_ref(&auth)).await;
    assert_envelope(&answer, ErrorCode::UriTooLong);

    // More than 100 fields: hyper refuses the head itself, with a bare 431.
    let many: Vec<(String, String)> = (0..150)
        .map(|i| (format!("x-n-{i}"), "1".to_owned()))
        .collect();
    let answer = raw(&server, "GET /health HTTP/1.1", &many).await;
    assert_eq!(answer.status, 431, "{}", answer.head);

    // Each enveloped refusal is counted by its code.
    let metrics = raw(&server, "GET /metrics HTTP/1.1", &[]).await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .body
            .contains("hutch_error_responses_total{code=\"headers_too_large\"} 3"),
        "{}",
        metrics.body
    );
    assert!(
        metrics
            .body
            .contains("hutch_error_responses_total{code=\"uri_too_long\"} 1"),
        "{}",
        metrics.body
    );
}

#[tokio::test]
async fn commands_over_the_concurrency_limit_are_rate_limited_and_the_rest_complete() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let total = COMMANDS_CONCURRENT_MAX + 6;
    let started = Instant::now();
    let runs: Vec<_> = (0..total)
        .map(|i| {
            let client = client.clone();
            let id = s.session_id;
            tokio::spawn(async move {
                let req = CommandRequest {
                    command: Some(format!("sleep 8; echo done-{i}")),
                    timeout: Some(60.0),
                    ..CommandRequest::default()
                };
                let began = Instant::now();
                (client.run_command(id, &req).await, began.elapsed())
            })
        })
        .collect();
    let mut completed = 0;
    let mut refused = 0;
    for (i, run) in runs.into_iter().enumerate() {
        let (result, took) = run.await.unwrap();
        match result {
            Ok(out) => {
                assert_eq!(out.exit_code, 0, "{out:?}");
                assert_eq!(out.stdout, format!("done-{i}\n"));
                assert!(took >= Duration::from_secs(8), "{took:?}");
                completed += 1;
            }
            Err(err) => {
                assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
                let hutch_client::ClientError::Api { status, body } = &err else {
                    unreachable!()
                };
                assert_eq!(status.as_u16(), 429);
                assert_eq!(
                    body.error.details["limit"],
                    serde_json::json!(COMMANDS_CONCURRENT_MAX)
                );
                assert!(
                    took < Duration::from_secs(8),
                    "refused at once, not after waiting: {took:?}"
                );
                refused += 1;
            }
        }
    }
    assert!(started.elapsed() < Duration::from_secs(40));
    assert_eq!(
        (completed, refused),
        (COMMANDS_CONCURRENT_MAX, 6),
        "exactly the commands over the limit were refused"
    );

    // The permits are back: the session runs commands again.
    assert_eq!(sh(&client, &s, "echo again").await.stdout, "again\n");

    let (status, body) = client
        .request(http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let executions = format!("hutch_command_executions_total {}", total + 1);
    assert!(text.contains(&executions), "{text}");
    assert!(
        text.contains("hutch_error_responses_total{code=\"rate_limited\"} 6"),
        "{text}"
    );
    assert!(
        text.contains("hutch_sessions{state=\"RUNNING\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_command_dies_when_its_request_goes_away() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    // Send a long command on a raw connection, then hang up before it answers.
    let body = serde_json::to_string(&CommandRequest {
        command: Some("sleep 1000".to_owned()),
        timeout: Some(3600.0),
        ..CommandRequest::default()
    })
    .unwrap();
    let addr = server.url.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /v1/sessions/{}/commands HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        s.session_id,
        server.token("alice"),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let count = "ps -e -o comm= | grep -c '^sleep$' || true";
    let deadline = Instant::now() + Duration::from_secs(10);
    while sh(&client, &s, count).await.stdout.trim() != "1" {
        assert!(Instant::now() < deadline, "the command never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(stream);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = sh(&client, &s, count).await.stdout;
        if left.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the command outlived its request: {left}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
