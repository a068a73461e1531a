//! Bounded connections: a slow-client attack (thousands of connections sending half a request
//! head) holds at most its share of the server, for at most the header timeout, while real
//! clients keep being served; a full server says so and recovers.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, session, sh};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Most connections of one client in this test.
const PER_CLIENT: usize = 50;
/// Most connections in all in this test.
const TOTAL: usize = 120;
/// Header timeout in this test.
const HEADER_TIMEOUT: Duration = Duration::from_secs(3);

/// Opens `count` connections from `source` (a loopback address of its own) that each send
/// half a request head and nothing more.
async fn slow_clients(server: SocketAddr, source: &str, count: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let mut stream = socket.connect(server).await.unwrap();
        // A refused connection may already be closed: the write may fail.
        let _ = stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: hutch\r\n")
            .await;
        streams.push(stream);
    }
    streams
}

/// What each connection received before it was closed (within `within`), or `None` for one
/// still open then.
async fn received_until_closed(streams: Vec<TcpStream>, within: Duration) -> Vec<Option<String>> {
    let reads = streams.into_iter().map(|mut stream| {
        tokio::spawn(async move {
            let mut received = Vec::new();
            match tokio::time::timeout(within, stream.read_to_end(&mut received)).await {
                Ok(_) => Some(String::from_utf8_lossy(&received).into_owned()),
                Err(_) => None,
            }
        })
    });
    let mut all = Vec::new();
    for read in reads.collect::<Vec<_>>() {
        all.push(read.await.unwrap());
    }
    all
}

/// How many of `outcomes` are answers with this status line start (`HTTP/1.1 429`).
fn answered(outcomes: &[Option<String>], status_line: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| {
            o.as_deref()
                .is_some_and(|text| text.starts_with(status_line))
        })
        .count()
}

/// `GET /health` from a fresh connection; its status, or the error.
fn health(url: &str) -> Result<u16, String> {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
        ])
        .arg(format!("{url}/health"))
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    code.parse()
        .map_err(|_| format!("{code}: {}", String::from_utf8_lossy(&out.stderr)))
}

#[tokio::test]
async fn a_slow_client_attack_is_bounded_and_real_clients_are_still_served() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&[
        "--warm-pool",
        "1",
        "--max-connections-per-client",
        &PER_CLIENT.to_string(),
        "--max-connections",
        &TOTAL.to_string(),
        "--header-timeout",
        "3s",
    ]);
    let client = server.client("alice");
    let s = session(&client).await;
    let addr: SocketAddr = server.url.trim_start_matches("http://").parse().unwrap();

    // 2,000 connections from one attacker: its first PER_CLIENT are held, every other one is
    // answered 429 and closed at once.
    let attack_started = Instant::now();
    let attack = slow_clients(addr, "127.0.0.2", 2000).await;
    // Opening 2,000 connections can outlast the header timeout on a loaded machine; each
    // timeout window that passed while they opened freed PER_CLIENT places for later ones.
    let windows =
        1 + (attack_started.elapsed().as_secs_f64() / HEADER_TIMEOUT.as_secs_f64()).ceil() as usize;

    // Meanwhile real clients are served at once.
    let started = Instant::now();
    assert_eq!(health(&server.url), Ok(200));
    assert_eq!(sh(&client, &s, "echo served").await.stdout, "served\n");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let attacked = received_until_closed(attack, HEADER_TIMEOUT * 3).await;
    let refused = answered(&attacked, "HTTP/1.1 429");
    // (A connection the header timeout closed makes room for one more.)
    assert!(
        (2000 - (windows + 1) * PER_CLIENT..2000).contains(&refused),
        "{refused} of 2000 refused, {windows} header-timeout windows while they opened"
    );
    // The held ones were closed by the header timeout: none is still open.
    assert!(
        attacked.iter().all(Option::is_some),
        "a slow client is still held"
    );

    // Two attackers together fill the server: a fourth address is refused 503, and once the
    // header timeout has closed theirs, everyone is served again.
    let first = slow_clients(addr, "127.0.0.3", PER_CLIENT).await;
    let second = slow_clients(addr, "127.0.0.4", PER_CLIENT).await;
    let third = slow_clients(addr, "127.0.0.5", TOTAL).await;
    let third = received_until_closed(third, Duration::from_millis(500)).await;
    let full = answered(&third, "HTTP/1.1 503");
    assert!(full >= PER_CLIENT, "{full} of {TOTAL} answered 503");
    tokio::time::sleep(HEADER_TIMEOUT + Duration::from_secs(1)).await;
    assert_eq!(health(&server.url), Ok(200));
    drop((first, second));
}
