//! The network scenario: what egress costs at create, and a download from a session beside
//! the same download from the server's own network namespace.

use std::time::{Duration, Instant};

use hutch_api::{CommandRequest, CreateSessionRequest, Egress, NetworkPolicy, Session};
use hutch_client::HutchClient;

use crate::{BenchError, Samples};

/// Create latencies with and without egress, and download throughputs.
#[derive(Debug, Default)]
pub struct NetworkReport {
    /// `POST /v1/sessions` with `egress: none`.
    pub create_none: Samples,
    /// `POST /v1/sessions` with `egress: allow` (one name).
    pub create_allow: Samples,
    /// Bytes and time of the download from inside a session (`egress: all`).
    pub session_download: Option<(u64, Duration)>,
    /// Bytes and time of the same download where the benchmark runs.
    pub host_download: Option<(u64, Duration)>,
}

fn policy(egress: Egress, allow: &[&str]) -> Option<NetworkPolicy> {
    Some(NetworkPolicy {
        egress,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: Vec::new(),
    })
}

async fn create(
    client: &HutchClient,
    network: Option<NetworkPolicy>,
) -> Result<(Session, Duration), BenchError> {
    let started = Instant::now();
    let session = client
        .create_session(&CreateSessionRequest {
            network,
            ..CreateSessionRequest::default()
        })
        .await
        .map_err(|source| BenchError::Api {
            step: "create",
            source,
        })?;
    Ok((session, started.elapsed()))
}

async fn delete(client: &HutchClient, session: &Session) -> Result<(), BenchError> {
    client
        .delete_session(session.session_id)
        .await
        .map(|_| ())
        .map_err(|source| BenchError::Api {
            step: "delete",
            source,
        })
}

/// Runs `warmup` + `iterations` creates of each kind, alternating (deletes are not timed),
/// then, given a `download_url`, fetches it once from a session and once here with `curl`.
pub async fn run(
    client: &HutchClient,
    warmup: usize,
    iterations: usize,
    download_url: Option<&str>,
) -> Result<NetworkReport, BenchError> {
    let mut report = NetworkReport::default();
    for i in 0..warmup + iterations {
        let (none, took_none) = create(client, None).await?;
        delete(client, &none).await?;
        let (allow, took_allow) =
            create(client, policy(Egress::Allow, &["example.invalid"])).await?;
        delete(client, &allow).await?;
        if i >= warmup {
            report.create_none.push(took_none);
            report.create_allow.push(took_allow);
        }
    }
    let Some(url) = download_url else {
        return Ok(report);
    };
    let curl = format!("curl -sS -o /dev/null -w '%{{size_download}}' {url}");
    let (session, _) = create(client, policy(Egress::All, &[])).await?;
    let started = Instant::now();
    let result = client
        .run_command(
            session.session_id,
            &CommandRequest {
                command: Some(curl.clone()),
                timeout: Some(600.0),
                ..CommandRequest::default()
            },
        )
        .await
        .map_err(|source| BenchError::Api {
            step: "download",
            source,
        });
    let took = started.elapsed();
    delete(client, &session).await?;
    let result = result?;
    if result.exit_code != 0 {
        return Err(BenchError::Server(format!(
            "the download in the session failed: {}",
            result.stderr.trim()
        )));
    }
    report.session_download = Some((result.stdout.trim().parse().unwrap_or(0), took));
    let started = Instant::now();
    let out = std::process::Command::new("sh")
        .args(["-c", &curl])
        .output()
        .map_err(|e| BenchError::Server(format!("running curl: {e}")))?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(BenchError::Server(format!(
            "the download here failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    report.host_download = Some((
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        took,
    ));
    Ok(report)
}
