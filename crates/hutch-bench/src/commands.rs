//! The commands scenario: what running a command through the API costs beside running it
//! directly on the same machine, in the same run.
//!
//! - Round trip: `POST /v1/sessions/{id}/commands` running `true` (no shell), one after
//!   another in one session, beside `sh -c true` spawned and waited for directly.
//! - Throughput: `cat` of a file of random bytes streamed through the WebSocket command
//!   stream (base64 JSON events, through the control plane's proxy), beside `cat` of a file of
//!   the same size read through a pipe directly.

use std::io::Read;
use std::time::{Duration, Instant};

use hutch_api::{CommandRequest, CreateSessionRequest, ProcessEvent};
use hutch_client::HutchClient;
use hutch_client::processes::StreamItem;

use crate::{BenchError, Samples};

/// What the scenario measures, and how much.
#[derive(Debug, Clone, Copy)]
pub struct CommandsConfig {
    /// Measured round trips (each side).
    pub iterations: usize,
    /// Unmeasured round trips first.
    pub warmup: usize,
    /// Bytes streamed per throughput run.
    pub stream_bytes: usize,
    /// Throughput runs (each side).
    pub stream_runs: usize,
}

/// The results.
#[derive(Debug, Default)]
pub struct CommandsReport {
    /// `true` through the API.
    pub api_true: Samples,
    /// `sh -c true` directly.
    pub direct_true: Samples,
    /// Streaming `stream_bytes` through the API.
    pub api_stream: Samples,
    /// `cat` of `stream_bytes` through a pipe directly.
    pub direct_stream: Samples,
}

fn api(step: &'static str) -> impl FnOnce(hutch_client::ClientError) -> BenchError {
    move |source| BenchError::Api { step, source }
}

/// Runs the scenario in a session of its own (deleted at the end).
pub async fn run(
    client: &HutchClient,
    config: CommandsConfig,
) -> Result<CommandsReport, BenchError> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .map_err(api("create"))?;
    let result = measure(client, session.session_id, config).await;
    let _ = client.delete_session(session.session_id).await;
    result
}

async fn measure(
    client: &HutchClient,
    session: uuid::Uuid,
    config: CommandsConfig,
) -> Result<CommandsReport, BenchError> {
    let mut report = CommandsReport::default();
    let true_command = CommandRequest {
        argv: Some(vec!["true".into()]),
        ..CommandRequest::default()
    };
    for i in 0..config.warmup + config.iterations {
        let start = Instant::now();
        let result = client
            .run_command(session, &true_command)
            .await
            .map_err(api("run true"))?;
        let elapsed = start.elapsed();
        if result.exit_code != 0 {
            return Err(BenchError::Server(format!(
                "`true` exited with {}",
                result.exit_code
            )));
        }
        if i >= config.warmup {
            report.api_true.push(elapsed);
        }
    }
    report.direct_true = tokio::task::spawn_blocking(move || direct_true(config))
        .await
        .map_err(|e| BenchError::Server(e.to_string()))??;

    // The same random bytes on both sides.
    let blob = format!(
        "head -c {} /dev/urandom > /tmp/hutch-bench-blob",
        config.stream_bytes
    );
    let made = client
        .run_command(
            session,
            &CommandRequest {
                command: Some(blob),
                ..CommandRequest::default()
            },
        )
        .await
        .map_err(api("make the blob"))?;
    if made.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "making the blob: {}",
            made.stderr
        )));
    }
    let cat = CommandRequest {
        argv: Some(vec!["cat".into(), "/tmp/hutch-bench-blob".into()]),
        timeout: Some(600.0),
        ..CommandRequest::default()
    };
    for _ in 0..config.stream_runs {
        let start = Instant::now();
        let mut stream = client
            .stream_command(session, &cat)
            .await
            .map_err(api("stream"))?;
        let mut bytes = 0usize;
        let mut exited = false;
        while let Some(item) = stream.next().await {
            match item.map_err(api("stream"))? {
                StreamItem::Output { data, .. } => bytes += data.len(),
                StreamItem::Event(ProcessEvent::Exit { .. }) => exited = true,
                StreamItem::Event(_) => {}
            }
        }
        let elapsed = start.elapsed();
        if !exited || bytes != config.stream_bytes {
            return Err(BenchError::Server(format!(
                "streamed {bytes} of {} bytes (exit seen: {exited})",
                config.stream_bytes
            )));
        }
        report.api_stream.push(elapsed);
    }
    report.direct_stream = tokio::task::spawn_blocking(move || direct_cat(config))
        .await
        .map_err(|e| BenchError::Server(e.to_string()))??;
    Ok(report)
}

fn peer_error(what: &str) -> impl FnOnce(std::io::Error) -> BenchError + '_ {
    move |e| BenchError::Server(format!("peer {what}: {e}"))
}

/// `sh -c true`, spawned and waited for, `iterations` times after `warmup`.
fn direct_true(config: CommandsConfig) -> Result<Samples, BenchError> {
    let mut samples = Samples::new();
    for i in 0..config.warmup + config.iterations {
        let start = Instant::now();
        let status = std::process::Command::new("sh")
            .args(["-c", "true"])
            .status()
            .map_err(peer_error("sh -c true"))?;
        let elapsed = start.elapsed();
        if !status.success() {
            return Err(BenchError::Server("sh -c true failed".into()));
        }
        if i >= config.warmup {
            samples.push(elapsed);
        }
    }
    Ok(samples)
}

/// `cat` of a file of `stream_bytes` random bytes, read through a pipe.
fn direct_cat(config: CommandsConfig) -> Result<Samples, BenchError> {
    let dir = std::env::temp_dir().join(format!("hutch-bench-{}", std::process::id()));
    let path = dir.with_extension("blob");
    let mut random = std::fs::File::open("/dev/urandom").map_err(peer_error("urandom"))?;
    let mut data = vec![0u8; config.stream_bytes];
    random
        .read_exact(&mut data)
        .map_err(peer_error("urandom"))?;
    std::fs::write(&path, &data).map_err(peer_error("write blob"))?;
    drop(data);
    let mut samples = Samples::new();
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..config.stream_runs {
        let start = Instant::now();
        let mut child = std::process::Command::new("cat")
            .arg(&path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(peer_error("cat"))?;
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Server("no pipe".into()))?;
        let mut bytes = 0;
        loop {
            let n = out.read(&mut buf).map_err(peer_error("read"))?;
            if n == 0 {
                break;
            }
            bytes += n;
        }
        child.wait().map_err(peer_error("cat"))?;
        samples.push(start.elapsed());
        if bytes != config.stream_bytes {
            return Err(BenchError::Server(format!("cat gave {bytes} bytes")));
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(samples)
}

/// Throughput in MB/s of `bytes` moved in `time`.
pub fn mb_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / 1e6 / time.as_secs_f64().max(1e-9)
}

impl CommandsConfig {
    /// The full run (`iterations` round trips, 3 × 100 MB), or a quick one for CI.
    pub fn new(iterations: usize, warmup: usize, quick: bool) -> CommandsConfig {
        CommandsConfig {
            iterations,
            warmup,
            stream_bytes: if quick { 8_000_000 } else { 100_000_000 },
            stream_runs: if quick { 1 } else { 3 },
        }
    }
}

/// Prints the report as a table, with the ratios at the median.
pub fn print(report: &CommandsReport, config: &CommandsConfig) {
    use crate::stats::ms;
    println!();
    println!("{:<48} {:>12} {:>12}", "", "p50", "p99");
    let row = |name: &str, s: &Samples| {
        println!("{name:<48} {:>12} {:>12}", ms(s.p50()), ms(s.p99()));
    };
    row("hutch: POST /commands `true`", &report.api_true);
    row("direct: sh -c true", &report.direct_true);
    let ratio = |a: &Samples, b: &Samples| a.p50().as_secs_f64() / b.p50().as_secs_f64().max(1e-9);
    println!(
        "ratio hutch / direct at p50: {:.2}x (hutch adds auth, the proxy, a cgroup per command)",
        ratio(&report.api_true, &report.direct_true)
    );
    let mb = config.stream_bytes as f64 / 1e6;
    println!();
    println!(
        "{:<48} {:>12} {:>12}",
        format!("{mb:.0} MB of stdout ({} runs)", config.stream_runs),
        "median",
        "MB/s"
    );
    let row = |name: &str, s: &Samples| {
        println!(
            "{name:<48} {:>12} {:>12.0}",
            ms(s.p50()),
            mb_per_s(config.stream_bytes, s.p50())
        );
    };
    row("hutch: WS /commands/stream, cat", &report.api_stream);
    row("direct: cat through a pipe", &report.direct_stream);
    println!(
        "ratio hutch / direct at the median: {:.2}x (hutch base64-encodes every chunk into a \
         JSON event and relays it through the control plane)",
        ratio(&report.api_stream, &report.direct_stream)
    );
}
