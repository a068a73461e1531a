//! The ports scenario: a small HTTP GET to a web server inside a session, through the control
//! plane (`/v1/sessions/{id}/ports/{port}/…`), beside the same GET sent straight to the server
//! from inside the session's network namespace, in the same run.
//!
//! The server is Python's `http.server` in the session, serving a 1 KiB file. Both sides are
//! measured by the same client, a small Python loop (`http.client`, a new connection per
//! request, as `http.server` closes each one): on the host against the API, and under
//! `nsenter --net` in the session's network namespace against `127.0.0.1:{port}`. So the
//! difference is the path: the API, the relay, the agent's tunnel.

use std::process::Command;
use std::time::Duration;

use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_client::HutchClient;
use uuid::Uuid;

use crate::{BenchError, Samples};

/// The port the session's web server listens on.
const PORT: u16 = 8000;
/// The file the GETs fetch, and its size.
const FILE: &str = "/small.txt";
const FILE_BYTES: usize = 1024;

/// The client loop both sides run: `HOST PORT PATH N WARMUP`, the bearer token (if any) in
/// `HUTCH_BENCH_AUTH`; prints `{"samples": [seconds, …]}` or `{"error": …}`.
const CLIENT: &str = r#"
import http.client, json, os, sys, time
host, port, path, n, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
auth = os.environ.get("HUTCH_BENCH_AUTH")
headers = {"Authorization": "Bearer " + auth} if auth else {}
samples = []
for i in range(warmup + n):
    start = time.perf_counter()
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", path, headers=headers)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    elapsed = time.perf_counter() - start
    if response.status != 200:
        print(json.dumps({"error": "%d: %r" % (response.status, body[:300])}))
        sys.exit(1)
    if i >= warmup:
        samples.append(elapsed)
print(json.dumps({"samples": samples}))
"#;

/// How many GETs each side sends.
#[derive(Debug, Clone, Copy)]
pub struct PortsConfig {
    /// Measured GETs (each side).
    pub iterations: usize,
    /// Unmeasured GETs first.
    pub warmup: usize,
}

/// The results.
#[derive(Debug, Default)]
pub struct PortsReport {
    /// GETs through `/v1/sessions/{id}/ports/{port}/`.
    pub api: Samples,
    /// The same GETs from inside the session's network namespace.
    pub direct: Samples,
}

impl PortsReport {
    /// Requests per second of one client sending one GET after another.
    pub fn requests_per_s(samples: &Samples) -> f64 {
        samples.len() as f64 / samples.total().as_secs_f64().max(1e-9)
    }
}

fn api(step: &'static str) -> impl FnOnce(hutch_client::ClientError) -> BenchError {
    move |source| BenchError::Api { step, source }
}

/// Runs the scenario in a session of its own (deleted at the end), as the holder of `token`.
pub async fn run(
    client: &HutchClient,
    token: &str,
    config: PortsConfig,
) -> Result<PortsReport, BenchError> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .map_err(api("create"))?;
    let result = measure(client, token, session.session_id, config).await;
    let _ = client.delete_session(session.session_id).await;
    result
}

async fn measure(
    client: &HutchClient,
    token: &str,
    session: Uuid,
    config: PortsConfig,
) -> Result<PortsReport, BenchError> {
    let serve = format!(
        "mkdir -p /tmp/site && head -c {FILE_BYTES} /dev/zero | tr '\\0' x > /tmp/site{FILE} && \
         cd /tmp/site && exec python3 -m http.server {PORT} --bind 127.0.0.1"
    );
    client
        .start_process(
            session,
            &CommandRequest {
                command: Some(serve),
                timeout: Some(3600.0),
                ..CommandRequest::default()
            },
        )
        .await
        .map_err(api("start the web server"))?;
    let netns = in_session(client, session, "readlink /proc/self/ns/net").await?;
    wait_listening(client, session).await?;

    let base = client.base_url().trim_end_matches('/');
    let address = base
        .strip_prefix("http://")
        .ok_or_else(|| BenchError::Server(format!("{base}: only http:// servers")))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| BenchError::Server(format!("{base} names no port")))?;
    let through_api = format!("/v1/sessions/{session}/ports/{PORT}{FILE}");
    let (host, port, token) = (host.to_owned(), port.to_owned(), token.to_owned());
    tokio::task::spawn_blocking(move || {
        let pid = pid_in_netns(&netns)?;
        let mut api_loop = python_loop(&host, &port, &through_api, config);
        api_loop.env("HUTCH_BENCH_AUTH", &token);
        let api = samples_of(api_loop)?;
        let mut direct_loop = Command::new("nsenter");
        direct_loop
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--");
        let inner = python_loop("127.0.0.1", &PORT.to_string(), FILE, config);
        direct_loop
            .arg(inner.get_program())
            .args(inner.get_args())
            .env_remove("HUTCH_BENCH_AUTH");
        let direct = samples_of(direct_loop)?;
        Ok(PortsReport { api, direct })
    })
    .await
    .map_err(|e| BenchError::Server(e.to_string()))?
}

/// Runs `command` in the session; its trimmed stdout.
async fn in_session(
    client: &HutchClient,
    session: Uuid,
    command: &str,
) -> Result<String, BenchError> {
    let result = client
        .run_command(
            session,
            &CommandRequest {
                command: Some(command.to_owned()),
                ..CommandRequest::default()
            },
        )
        .await
        .map_err(api("run a command"))?;
    if result.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "`{command}` failed: {}",
            result.stderr
        )));
    }
    Ok(result.stdout.trim().to_owned())
}

/// Waits up to 10 s for the session to list a listener on [`PORT`].
async fn wait_listening(client: &HutchClient, session: Uuid) -> Result<(), BenchError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = client
            .request(
                http::Method::GET,
                &format!("/v1/sessions/{session}/ports"),
                None,
            )
            .await
            .map_err(api("list ports"))?;
        let list: Option<hutch_api::PortList> = serde_json::from_slice(&body).ok();
        if status == 200 && list.is_some_and(|l| l.ports.iter().any(|p| p.port == PORT)) {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(BenchError::Server(format!(
                "nothing listens on port {PORT} in the session after 10 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A host process in the network namespace `netns` (`net:[inode]`): the session's agent.
fn pid_in_netns(netns: &str) -> Result<u32, BenchError> {
    let entries = std::fs::read_dir("/proc")
        .map_err(|e| BenchError::Server(format!("reading /proc: {e}")))?;
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_link(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|link| link.to_string_lossy() == netns)
        })
        .ok_or_else(|| {
            BenchError::Server(format!(
                "no host process in the session's network namespace {netns} (the direct side \
                 needs root and a server on this machine)"
            ))
        })
}

/// The client loop against `host:port` for `path`.
fn python_loop(host: &str, port: &str, path: &str, config: PortsConfig) -> Command {
    let mut command = Command::new("python3");
    command
        .args(["-c", CLIENT, host, port, path])
        .args([config.iterations.to_string(), config.warmup.to_string()]);
    command
}

/// Runs a client loop and reads its samples.
fn samples_of(mut command: Command) -> Result<Samples, BenchError> {
    let output = command
        .output()
        .map_err(|e| BenchError::Server(format!("running the client loop: {e}")))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let parsed: serde_json::Value = serde_json::from_str(stdout.trim()).map_err(|_| {
        BenchError::Server(format!(
            "the client loop failed: {stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    })?;
    if let Some(error) = parsed.get("error") {
        return Err(BenchError::Server(format!("a GET failed: {error}")));
    }
    let mut samples = Samples::new();
    for seconds in parsed["samples"].as_array().into_iter().flatten() {
        samples.push(Duration::from_secs_f64(seconds.as_f64().unwrap_or(0.0)));
    }
    Ok(samples)
}

/// Prints the report as a table, with the ratio at the median.
pub fn print(report: &PortsReport) {
    use crate::stats::ms;
    println!();
    println!(
        "{:<48} {:>12} {:>12} {:>12}",
        "", "p50", "p99", "requests/s"
    );
    for (name, samples) in [
        ("hutch: GET /ports/8000/small.txt (1 KiB)", &report.api),
        ("direct: GET 127.0.0.1:8000 in the session", &report.direct),
    ] {
        println!(
            "{name:<48} {:>12} {:>12} {:>12.0}",
            ms(samples.p50()),
            ms(samples.p99()),
            PortsReport::requests_per_s(samples)
        );
    }
    let ratio = report.api.p50().as_secs_f64() / report.direct.p50().as_secs_f64().max(1e-9);
    println!(
        "ratio hutch / direct at p50: {ratio:.2}x (hutch adds auth, the relay, a tunnel through the agent per request)"
    );
}
