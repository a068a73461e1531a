//! The interpreter scenario: how fast a context is ready, how fast `x = 1 + 1` goes through
//! the execute WebSocket end to end, and how much memory an idle context holds — for the
//! plain CPython kernel and the IPython one, beside ipykernel driven by jupyter_client.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_client::HutchClient;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{BenchError, Samples};

/// Figures of one kernel.
#[derive(Debug, Default)]
pub struct KernelReport {
    /// `POST …/interpreter/contexts` until the worker is ready.
    pub ready: Samples,
    /// `x = 1 + 1` over a new execute WebSocket, connect to close.
    pub execute: Samples,
    /// Resident memory of an idle worker, in KiB.
    pub idle_rss_kib: u64,
}

/// The hutch side of the scenario.
#[derive(Debug, Default)]
pub struct InterpreterReport {
    /// `kernel: python`.
    pub plain: KernelReport,
    /// `kernel: ipython`.
    pub ipython: KernelReport,
    /// Resident memory of the session's idle `default` context (kernel `auto`), in KiB.
    pub default_idle_rss_kib: u64,
}

/// ipykernel's figures.
#[derive(Debug, Default)]
pub struct PeerReport {
    /// `KernelManager.start_kernel` until `wait_for_ready`.
    pub ready: Samples,
    /// `execute('x = 1 + 1')` until the kernel is idle again and replied.
    pub execute: Samples,
    /// Resident memory of the idle kernel, in KiB.
    pub idle_rss_kib: u64,
}

fn api(step: &'static str) -> impl FnOnce(hutch_client::ClientError) -> BenchError {
    move |source| BenchError::Api { step, source }
}

async fn call(
    client: &HutchClient,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, BenchError> {
    let (status, bytes) = client
        .request(
            method,
            path,
            body.map(|b| serde_json::to_vec(&b).unwrap_or_default().into()),
        )
        .await
        .map_err(api("interpreter request"))?;
    if !status.is_success() {
        return Err(BenchError::Server(format!(
            "{path}: {status} {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
}

/// Runs one cell over a new WebSocket; returns the frames.
async fn execute_ws(
    ws_url: &str,
    token: &str,
    request: &serde_json::Value,
) -> Result<Vec<serde_json::Value>, BenchError> {
    let mut req = ws_url
        .into_client_request()
        .map_err(|e| BenchError::Server(format!("websocket url: {e}")))?;
    let auth = format!("Bearer {token}")
        .parse()
        .map_err(|e| BenchError::Server(format!("token: {e}")))?;
    req.headers_mut().insert("authorization", auth);
    // Nagle off, as a latency-minded client would have it.
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true)
        .await
        .map_err(|e| BenchError::Server(format!("websocket: {e}")))?;
    ws.send(Message::text(request.to_string()))
        .await
        .map_err(|e| BenchError::Server(format!("websocket send: {e}")))?;
    let mut frames = Vec::new();
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(text) => {
                frames.push(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null));
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    Ok(frames)
}

/// Where the scenario runs.
struct Target<'a> {
    client: &'a HutchClient,
    session: &'a str,
    ws_url: &'a str,
    token: &'a str,
}

async fn kernel(
    target: &Target<'_>,
    kernel: &str,
    starts: usize,
    warmup: usize,
    iterations: usize,
) -> Result<KernelReport, BenchError> {
    let Target {
        client,
        session,
        ws_url,
        token,
    } = *target;
    let mut report = KernelReport::default();
    let contexts = format!("/v1/sessions/{session}/interpreter/contexts");
    let body = serde_json::json!({ "kernel": kernel });
    for i in 0..starts + 1 {
        let start = Instant::now();
        let ctx = call(client, http::Method::POST, &contexts, Some(body.clone())).await?;
        if i > 0 {
            report.ready.push(start.elapsed());
        }
        let id = ctx["id"].as_str().unwrap_or_default();
        call(
            client,
            http::Method::DELETE,
            &format!("{contexts}/{id}"),
            None,
        )
        .await?;
    }
    // An idle context's memory, measured from outside before it runs anything.
    let ctx = call(client, http::Method::POST, &contexts, Some(body)).await?;
    let id = ctx["id"].as_str().unwrap_or_default().to_owned();
    report.idle_rss_kib = newest_worker_rss(client, session).await?;
    let request = serde_json::json!({ "code": "x = 1 + 1", "contextId": id });
    for i in 0..warmup + iterations {
        let start = Instant::now();
        let frames = execute_ws(ws_url, token, &request).await?;
        let took = start.elapsed();
        if frames.last().and_then(|f| f["text"].as_str()) != Some("completed") {
            return Err(BenchError::Server(format!(
                "x = 1 + 1 did not complete: {frames:?}"
            )));
        }
        if i >= warmup {
            report.execute.push(took);
        }
    }
    call(
        client,
        http::Method::DELETE,
        &format!("{contexts}/{id}"),
        None,
    )
    .await?;
    Ok(report)
}

/// Resident memory in KiB of the session's newest (highest pid) python worker (started from
/// its source or from the code the server compiled ahead), read from outside with a command.
async fn newest_worker_rss(client: &HutchClient, session: &str) -> Result<u64, BenchError> {
    let script = "for p in /proc/[0-9]*; do \
        c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null | head -c 100); \
        case \"$c\" in 'python3 -S /proc/self/fd/5 '|'python3 -S -c import posix as _p'*) \
        echo ${p#/proc/} $(awk '/VmRSS/ {print $2}' $p/status);; esac; done";
    let result = client
        .run_command(
            session.parse().unwrap_or_default(),
            &CommandRequest {
                command: Some(script.to_owned()),
                ..CommandRequest::default()
            },
        )
        .await
        .map_err(api("reading worker memory"))?;
    Ok(result
        .stdout
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid: u64 = f.next()?.parse().ok()?;
            let rss: u64 = f.next()?.parse().ok()?;
            Some((pid, rss))
        })
        .max()
        .map_or(0, |(_, rss)| rss))
}

/// The idle `default` context's worker memory in KiB, once the agent has started it.
async fn default_context_rss(client: &HutchClient, session: &str) -> Result<u64, BenchError> {
    let path = format!("/v1/sessions/{session}/interpreter/contexts/default");
    for _ in 0..100 {
        let ctx = call(client, http::Method::GET, &path, None).await?;
        if ctx["active"] == true {
            // Let it settle after `ready`.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return newest_worker_rss(client, session).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Server(
        "the default context did not start within 5 s".into(),
    ))
}

/// Measures both kernels in a new session: `starts` context starts (fewer for IPython, whose
/// import alone takes about 0.4 s), and `warmup` + `iterations` executions each.
pub async fn run(
    client: &HutchClient,
    url: &str,
    token: &str,
    starts: usize,
    warmup: usize,
    iterations: usize,
) -> Result<InterpreterReport, BenchError> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .map_err(api("create session"))?;
    let id = session.session_id.to_string();
    let ws_url = format!(
        "{}/v1/sessions/{id}/interpreter/execute",
        url.replacen("http", "ws", 1)
    );
    let target = Target {
        client,
        session: &id,
        ws_url: &ws_url,
        token,
    };
    let result = async {
        let default_idle_rss_kib = default_context_rss(client, &id).await?;
        let plain = kernel(&target, "python", starts, warmup, iterations).await?;
        let ipython = kernel(
            &target,
            "ipython",
            starts.div_ceil(4).max(2),
            warmup,
            iterations,
        )
        .await?;
        Ok(InterpreterReport {
            plain,
            ipython,
            default_idle_rss_kib,
        })
    }
    .await;
    let _ = client.delete_session(session.session_id).await;
    result
}

/// The peer's driver: starts ipykernel `starts` times, runs `x = 1 + 1` through
/// jupyter_client, and prints its figures as JSON.
const PEER_SCRIPT: &str = r#"
import json, sys, time
from jupyter_client import KernelManager
starts, warmup, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
ready = []
for i in range(starts):
    t = time.perf_counter()
    km = KernelManager(kernel_name="python3")
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    ready.append(time.perf_counter() - t)
    if i < starts - 1:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
time.sleep(0.5)
pid = km.provisioner.process.pid
rss = 0
for line in open(f"/proc/{pid}/status"):
    if line.startswith("VmRSS"):
        rss = int(line.split()[1])
lat = []
for i in range(warmup + n):
    t = time.perf_counter()
    msg_id = kc.execute("x = 1 + 1")
    while True:
        m = kc.get_iopub_msg(timeout=10)
        if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"):
            break
    kc.get_shell_msg(timeout=10)
    if i >= warmup:
        lat.append(time.perf_counter() - t)
kc.stop_channels()
km.shutdown_kernel(now=True)
print(json.dumps({"ready": ready, "exec": lat, "rssKib": rss}))
"#;

/// Runs the peer with the Python of `venv`; `None` when it is not installed or fails.
pub fn ipykernel(
    venv: &Path,
    starts: usize,
    warmup: usize,
    iterations: usize,
) -> Option<PeerReport> {
    let python = venv.join("bin/python");
    if !python.exists() {
        return None;
    }
    let out = Command::new(python)
        .arg("-c")
        .arg(PEER_SCRIPT)
        .args([
            starts.to_string(),
            warmup.to_string(),
            iterations.to_string(),
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let samples = |key: &str| {
        let mut s = Samples::new();
        for x in v[key].as_array().into_iter().flatten() {
            s.push(Duration::from_secs_f64(x.as_f64().unwrap_or(0.0)));
        }
        s
    };
    Some(PeerReport {
        ready: samples("ready"),
        execute: samples("exec"),
        idle_rss_kib: v["rssKib"].as_u64().unwrap_or(0),
    })
}
