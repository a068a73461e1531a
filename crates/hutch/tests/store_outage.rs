//! PostgreSQL stops for 10 s under load: a real `hutch serve --store postgres://…` against a
//! PostgreSQL cluster this test starts, stops and starts again.
//!
//! While the database is down, every request that needs the store (all of `/v1/sessions…`:
//! each reads the session's row first) fails with 503 `store_unavailable` within its bound,
//! never a 500 or a hang; `/health/ready` answers 503 and `/health/live` 200; a command that
//! was already running when the database went away finishes normally. Once it is back, the
//! same server serves again without a restart, every session the API said it created exists
//! (and no other), every delete that answered 2xx is gone, and deleting the rest leaves
//! nothing on the host.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{TestServer, can_run_sandboxes, host_view, sh, sh_with};
use http::{Method, StatusCode};
use hutch_api::{CommandRequest, CreateSessionRequest, ErrorCode};
use hutch_client::{ClientError, HutchClient};
use hutch_server::ScratchPostgres;
use uuid::Uuid;

/// How long PostgreSQL stays down.
const OUTAGE: Duration = Duration::from_secs(10);
/// The longest any request may take, in or out of the outage: a request that needs the
/// store waits at most the store's timeout (5 s) for a connection and as long for each
/// statement, and fails at the first that fails; the rest is slack for a loaded machine.
const REQUEST_BOUND: Duration = Duration::from_secs(15);
/// Concurrent clients of the load.
const WORKERS: usize = 3;
/// Most cycles per client (the load stops earlier, when told).
const MAX_CYCLES: usize = 400;
/// How long PostgreSQL and the server may take to serve again once PostgreSQL is back.
const RECOVERY: Duration = Duration::from_secs(30);

/// What a request answered.
#[derive(Debug)]
enum Answer<T> {
    /// 2xx.
    Ok(T),
    /// 503 `store_unavailable`.
    StoreUnavailable,
}

/// What the load saw, shared by its clients.
#[derive(Default)]
struct Log {
    /// Sessions whose create answered 201.
    created: BTreeSet<Uuid>,
    /// Sessions whose delete answered 2xx.
    deleted: BTreeSet<Uuid>,
    /// Requests answered 2xx, and 503 `store_unavailable`.
    ok: usize,
    unavailable: usize,
    /// Anything else: the step, and what it answered or how long it took.
    faults: Vec<String>,
    /// The slowest request, and which step it was.
    slowest: (Duration, &'static str),
    /// The slowest answer 503 `store_unavailable`.
    slowest_unavailable: Duration,
}

impl Log {
    /// Records one answer of `step` that took `took`; `None` for an answer that is a fault.
    fn record<T>(
        &mut self,
        step: &'static str,
        took: Duration,
        answer: Result<T, ClientError>,
    ) -> Option<Answer<T>> {
        if took > self.slowest.0 {
            self.slowest = (took, step);
        }
        if took > REQUEST_BOUND {
            self.faults.push(format!("{step} took {took:?}"));
        }
        match answer {
            Ok(value) => {
                self.ok += 1;
                Some(Answer::Ok(value))
            }
            Err(ClientError::Api { status, body })
                if status == StatusCode::SERVICE_UNAVAILABLE
                    && body.error.code == ErrorCode::StoreUnavailable =>
            {
                self.unavailable += 1;
                self.slowest_unavailable = self.slowest_unavailable.max(took);
                Some(Answer::StoreUnavailable)
            }
            Err(err) => {
                self.faults.push(format!("{step}: {err}"));
                None
            }
        }
    }
}

/// Runs `request`, bounded (a hang is a fault), and records its answer.
async fn timed<T>(
    log: &Mutex<Log>,
    step: &'static str,
    request: impl Future<Output = Result<T, ClientError>>,
) -> Option<Answer<T>> {
    let started = Instant::now();
    let answer = tokio::time::timeout(REQUEST_BOUND * 2, request).await;
    let took = started.elapsed();
    let mut log = log.lock().unwrap();
    match answer {
        Ok(answer) => log.record(step, took, answer),
        Err(_) => {
            log.faults.push(format!("{step} hung for {took:?}"));
            None
        }
    }
}

/// Writes a small file into the session through the file API.
async fn write_file(client: &HutchClient, id: Uuid) -> Result<(), ClientError> {
    let path = format!("/v1/sessions/{id}/files/content?path=/tmp/outage.txt");
    let (status, body) = client
        .request(Method::PUT, &path, Some(Bytes::from_static(b"written")))
        .await?;
    if status.is_success() {
        return Ok(());
    }
    // Decoded the way the client decodes any error answer.
    let error: hutch_api::ErrorBody =
        serde_json::from_slice(&body).map_err(|_| ClientError::UnexpectedStatus {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })?;
    Err(ClientError::Api {
        status,
        body: error,
    })
}

/// One client of the load: create → a command → a file write → delete, until `stop` (or
/// [`MAX_CYCLES`]). A session whose delete failed is deleted again in a later cycle.
async fn worker(client: HutchClient, log: Arc<Mutex<Log>>, stop: Arc<AtomicBool>) {
    let command = CommandRequest {
        argv: Some(vec!["echo".into(), "ok".into()]),
        timeout: Some(10.0),
        ..CommandRequest::default()
    };
    let defaults = CreateSessionRequest::default();
    let mut undeleted: Vec<Uuid> = Vec::new();
    for _ in 0..MAX_CYCLES {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let create = client.create_session(&defaults);
        if let Some(Answer::Ok(session)) = timed(&log, "create", create).await {
            let id = session.session_id;
            log.lock().unwrap().created.insert(id);
            if let Some(Answer::Ok(result)) =
                timed(&log, "command", client.run_command(id, &command)).await
            {
                assert_eq!(result.stdout, "ok\n", "the command's output");
            }
            timed(&log, "file write", write_file(&client, id)).await;
            undeleted.push(id);
        }
        let mut kept = Vec::new();
        for id in undeleted.drain(..) {
            match timed(&log, "delete", client.delete_session(id)).await {
                Some(Answer::Ok(_)) => {
                    log.lock().unwrap().deleted.insert(id);
                }
                _ => kept.push(id),
            }
        }
        undeleted = kept;
        // Paced, so that the failing requests of the outage do not spin.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET path` without a token check; its status.
async fn status_of(client: &HutchClient, path: &str) -> StatusCode {
    let answer = tokio::time::timeout(REQUEST_BOUND, client.request(Method::GET, path, None));
    answer.await.unwrap().unwrap().0
}

/// Waits (bounded) until `/health/ready` answers `want`.
async fn wait_ready(client: &HutchClient, want: StatusCode) {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let status = status_of(client, "/health/ready").await;
        if status == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/health/ready still answers {status}, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sandbox cgroups left under the server's instance cgroup `instance` (a path relative
/// to the cgroup2 mount).
fn sandbox_cgroups(instance: &str) -> Vec<String> {
    let dir = Path::new("/sys/fs/cgroup").join(instance.trim_start_matches('/'));
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (bounded) until nothing of any sandbox is left: no directory, socket, mount or
/// cgroup (the trash is emptied in the background).
fn assert_no_sandbox_left(server: &TestServer, instance: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let entries = |dir: &str| -> Vec<String> {
            std::fs::read_dir(server.data_dir().join(dir))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut left = Vec::new();
        // `disks/` is the disk pool, mounted while the server runs: its subvolumes are the
        // sandboxes' disks.
        for dir in ["sandboxes", "sockets", "trash", "disks"] {
            let names = entries(dir);
            if !names.is_empty() {
                left.push(format!("{dir}/: {names:?}"));
            }
        }
        let data = server.data_dir().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let pool = format!(" {data}/disks ");
        let mounted: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&data) && !l.contains(&pool))
            .collect();
        if !mounted.is_empty() {
            left.push(format!("mounts: {mounted:?}"));
        }
        let cgroups = sandbox_cgroups(instance);
        if !cgroups.is_empty() {
            left.push(format!("cgroups under {instance}: {cgroups:?}"));
        }
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "left behind: {}",
            left.join("; ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_for_10_s_under_load_fails_cleanly_and_recovers() {
    if !can_run_sandboxes() {
        return;
    }
    let postgres = ScratchPostgres::start().unwrap();
    let url = postgres.url("postgres");
    let server = TestServer::start_with(&["--warm-pool", "0", "--store", &url]);
    let client = server.client("alice");

    // A session from before the outage.
    let before = common::session(&client).await;
    let view = host_view(&client, &before).await;
    let instance = view
        .cgroup
        .rsplit_once('/')
        .map(|(parent, _)| parent.to_owned())
        .unwrap();

    let log = Arc::new(Mutex::new(Log::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(worker(client.clone(), Arc::clone(&log), Arc::clone(&stop))))
        .collect();
    // Load before the outage: wait (bounded) for a few cycles to go through.
    let deadline = Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().deleted.len() < WORKERS {
        assert!(Instant::now() < deadline, "the load does not go through");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A command that runs through the whole outage: started (its row read) before.
    let long = tokio::spawn({
        let (client, before) = (client.clone(), before.clone());
        async move {
            let command = "touch /tmp/long-started && sleep 12 && echo survived";
            sh_with(&client, &before, command, 60.0).await
        }
    });
    let deadline = Instant::now() + RECOVERY;
    while sh(&client, &before, "test -f /tmp/long-started")
        .await
        .exit_code
        != 0
    {
        assert!(Instant::now() < deadline, "the long command does not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // The outage.
    tokio::task::block_in_place(|| postgres.stop()).unwrap();
    let down = Instant::now();
    let ok_before = log.lock().unwrap().ok;
    wait_ready(&client, StatusCode::SERVICE_UNAVAILABLE).await;
    assert_eq!(status_of(&client, "/health/live").await, StatusCode::OK);
    assert_eq!(status_of(&client, "/health").await, StatusCode::OK);
    let get = client.get_session(before.session_id).await;
    assert!(
        matches!(&get, Err(e) if e.code() == Some(ErrorCode::StoreUnavailable)),
        "a GET of a session while the store is down: {get:?}"
    );
    let remaining = OUTAGE.saturating_sub(down.elapsed());
    tokio::time::sleep(remaining).await;
    assert_eq!(status_of(&client, "/health/live").await, StatusCode::OK);
    assert_eq!(
        status_of(&client, "/health/ready").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let during = {
        let log = log.lock().unwrap();
        (log.ok - ok_before, log.unavailable)
    };
    tokio::task::block_in_place(|| postgres.resume()).unwrap();

    // Back: the same server serves again, on its own.
    wait_ready(&client, StatusCode::OK).await;
    let ok_after_outage = log.lock().unwrap().ok;
    let deadline = Instant::now() + RECOVERY;
    while log.lock().unwrap().ok < ok_after_outage + 4 * WORKERS {
        assert!(
            Instant::now() < deadline,
            "the load does not go through after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Release);
    for worker in workers {
        worker.await.unwrap();
    }
    let long = long.await.unwrap();
    assert_eq!(
        (long.exit_code, long.stdout.as_str()),
        (0, "survived\n"),
        "the command that ran through the outage"
    );

    let log = Arc::into_inner(log).unwrap().into_inner().unwrap();
    eprintln!(
        "load: {} answers 2xx, {} answers 503 store_unavailable (slowest {:?}), {} 2xx while down; slowest request {:?} ({})",
        log.ok, log.unavailable, log.slowest_unavailable, during.0, log.slowest.0, log.slowest.1
    );
    assert!(
        log.faults.is_empty(),
        "requests that neither succeeded nor failed with 503 store_unavailable in time:\n{}",
        log.faults.join("\n")
    );
    assert!(during.1 > 0, "no request failed while the store was down");

    // Every session the API created and did not delete is there, and nothing else: the row
    // a create that answered 503 may have inserted goes once the store answers again.
    let mut expected: BTreeSet<Uuid> = log.created.difference(&log.deleted).copied().collect();
    expected.insert(before.session_id);
    let deadline = Instant::now() + RECOVERY;
    loop {
        let listed: BTreeSet<Uuid> = client
            .list_sessions(Some(100), None)
            .await
            .unwrap()
            .sessions
            .iter()
            .map(|s| s.session_id)
            .collect();
        if listed == expected {
            break;
        }
        if Instant::now() > deadline {
            assert_eq!(listed, expected, "the sessions after the outage");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for id in &expected {
        let command = CommandRequest {
            argv: Some(vec!["true".into()]),
            ..CommandRequest::default()
        };
        let result = client.run_command(*id, &command).await.unwrap();
        assert_eq!(result.exit_code, 0, "a command in session {id}");
        client.delete_session(*id).await.unwrap();
    }
    assert_no_sandbox_left(&server, &instance);
    drop(server);
    drop(postgres);
}
