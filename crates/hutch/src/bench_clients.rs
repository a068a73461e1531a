//! `hutch bench clients`: the per-call overhead of each client beside the Rust client, in the
//! same run against the same server.
//!
//! Two cases, each on a kept connection: `execute x = 1 + 1` (a cell in an interpreter
//! context, `POST …/interpreter/execute`) and `commands true` (`POST …/commands`). The Rust
//! client is measured here; then the Python SDK's `python/bench/clients.py` (sync and async,
//! with `target/venv-sdk/bin/python`) and the TypeScript SDK's `typescript/bench/bench.mjs
//! --json` run against the same server and print one JSON object per line:
//! `{"client", "case", "p50_ms", "p99_ms", "n", "cpu_ms"}`, or `{"client", "case",
//! "per_second", "sync_per_second", "cpu_ms"}` for a throughput (`cpu_ms`, when a client
//! reports it, is the CPU time its own process spent per call). One table shows them all,
//! with each p50's delta to the Rust client's and, outside quick mode, whether it meets the
//! targets: a p50 within [`LATENCY_TARGET_MS`] of the Rust client's, and concurrent
//! executions from one event loop at least [`THROUGHPUT_TARGET`] times the blocking
//! client's throughput. A client whose bench is missing is named as such, not left out
//! silently.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use hutch_api::{CommandRequest, CreateSessionRequest};
use hutch_bench::Samples;
use hutch_client::HutchClient;

use crate::bench::BenchArgs;

/// The Python SDK's bench, run from the checkout.
const PYTHON_BENCH: &str = "python/bench/clients.py";
/// The SDK's virtualenv (made by `scripts/deps.sh`).
const PYTHON: &str = "target/venv-sdk/bin/python";
/// The TypeScript SDK's bench.
const TYPESCRIPT_BENCH: &str = "typescript/bench/bench.mjs";

/// The case names shared with the other clients' benches.
const EXECUTE: &str = "execute x = 1 + 1";
const COMMANDS: &str = "commands true";

/// How far above the Rust client's p50 another client's may be.
const LATENCY_TARGET_MS: f64 = 0.3;
/// How many times the blocking client's throughput concurrent executions should reach.
const THROUGHPUT_TARGET: f64 = 5.0;

/// One line of a client's figures.
#[derive(Debug, Clone, serde::Deserialize)]
struct Figure {
    client: String,
    case: String,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    n: Option<u64>,
    per_second: Option<f64>,
    sync_per_second: Option<f64>,
    cpu_ms: Option<f64>,
}

pub(crate) async fn run(
    client: &HutchClient,
    url: &str,
    token: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    println!(
        "scenario: clients (per-call overhead on a kept connection), {} calls after {} unmeasured, server: {url}",
        args.iterations, args.warmup
    );
    let mut figures = rust(client, args).await?;
    let mut missing = Vec::new();
    let quick = args.quick.then_some("--quick");
    let common: Vec<&str> = ["--url", url, "--token", token]
        .into_iter()
        .chain(quick)
        .collect();
    if Path::new(PYTHON_BENCH).exists() && Path::new(PYTHON).exists() {
        let mut python = Command::new(PYTHON);
        python.arg(PYTHON_BENCH).args(&common);
        figures.extend(lines_of("Python", python)?);
    } else {
        missing.push(format!(
            "Python: skipped ({PYTHON_BENCH} or {PYTHON} is absent; scripts/deps.sh makes the virtualenv)"
        ));
    }
    if Path::new(TYPESCRIPT_BENCH).exists() && Path::new("typescript/dist").exists() {
        let mut node = Command::new("node");
        node.arg(TYPESCRIPT_BENCH).arg("--json").args(&common);
        figures.extend(lines_of("TypeScript", node)?);
    } else {
        missing.push(format!(
            "TypeScript: skipped ({TYPESCRIPT_BENCH} or typescript/dist is absent; `npm run build` in typescript/ makes it)"
        ));
    }
    print!("{}", table(&figures, !args.quick));
    for line in missing {
        println!("{line}");
    }
    if args.quick {
        println!("quick mode: too few calls to compare the figures");
    }
    Ok(())
}

/// The Rust client's figures, in a session of its own.
async fn rust(client: &HutchClient, args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    let session = client
        .create_session(&CreateSessionRequest::default())
        .await
        .context("creating the session")?;
    let id = session.session_id;
    let measured = async {
        let context: serde_json::Value = client
            .call(
                http::Method::POST,
                &format!("/v1/sessions/{id}/interpreter/contexts"),
                Some(&serde_json::json!({ "kernel": "python" })),
            )
            .await
            .context("creating the interpreter context")?;
        let cell = serde_json::to_vec(&serde_json::json!({
            "code": "x = 1 + 1",
            "contextId": context["id"],
        }))?;
        let path = format!("/v1/sessions/{id}/interpreter/execute");
        let execute = measure(args, || async {
            let (status, body) = client
                .request(http::Method::POST, &path, Some(cell.clone().into()))
                .await?;
            let body = String::from_utf8_lossy(&body);
            anyhow::ensure!(
                status.is_success() && body.contains("\"completed\""),
                "x = 1 + 1 did not complete: {status} {body}"
            );
            Ok(())
        })
        .await?;
        let true_command = CommandRequest {
            argv: Some(vec!["true".into()]),
            ..CommandRequest::default()
        };
        let commands = measure(args, || async {
            let result = client.run_command(id, &true_command).await?;
            anyhow::ensure!(
                result.exit_code == 0,
                "`true` exited with {}",
                result.exit_code
            );
            Ok(())
        })
        .await?;
        anyhow::Ok(vec![
            latency("rust", EXECUTE, &execute),
            latency("rust", COMMANDS, &commands),
        ])
    }
    .await;
    let _ = client.delete_session(id).await;
    measured
}

/// The measured calls of one case, and the CPU time this process spent on them.
struct Measured {
    samples: Samples,
    cpu: Option<Duration>,
}

/// Times `call` `args.iterations` times after `args.warmup` unmeasured calls.
async fn measure<F, Fut>(args: &BenchArgs, call: F) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..args.warmup {
        call().await?;
    }
    let mut samples = Samples::new();
    let cpu = process_cpu();
    for _ in 0..args.iterations {
        let start = Instant::now();
        call().await?;
        samples.push(start.elapsed());
    }
    let cpu = process_cpu()
        .zip(cpu)
        .map(|(end, start)| end.saturating_sub(start));
    Ok(Measured { samples, cpu })
}

/// The CPU time this process's threads have spent (the nanoseconds on a CPU of each
/// `/proc/self/task/*/schedstat`); `None` where that cannot be read. The server runs in a
/// process of its own, so this is the Rust client's cost alone.
fn process_cpu() -> Option<Duration> {
    let mut nanos = 0u64;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let text = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        nanos += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(nanos))
}

fn latency(client: &str, case: &str, measured: &Measured) -> Figure {
    let samples = &measured.samples;
    Figure {
        client: client.to_owned(),
        case: case.to_owned(),
        p50_ms: Some(samples.p50().as_secs_f64() * 1000.0),
        p99_ms: Some(samples.p99().as_secs_f64() * 1000.0),
        n: Some(samples.len() as u64),
        per_second: None,
        sync_per_second: None,
        cpu_ms: measured
            .cpu
            .filter(|_| !samples.is_empty())
            .map(|cpu| cpu.as_secs_f64() * 1000.0 / samples.len() as f64),
    }
}

/// Runs a client's bench and reads its JSON lines (other lines are passed through).
fn lines_of(name: &str, mut command: Command) -> anyhow::Result<Vec<Figure>> {
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running the {name} bench"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "the {name} bench failed ({}):\n{stdout}",
        out.status
    );
    let mut figures = Vec::new();
    for line in stdout.lines() {
        match serde_json::from_str::<Figure>(line) {
            Ok(figure) => figures.push(figure),
            Err(_) if !line.trim().is_empty() => println!("{name}: {line}"),
            Err(_) => {}
        }
    }
    anyhow::ensure!(!figures.is_empty(), "the {name} bench printed no figures");
    Ok(figures)
}

/// The figures as one table, latencies with their p50's delta to the Rust client's in the
/// same case, then throughputs; with `verdicts`, whether each meets its target.
fn table(figures: &[Figure], verdicts: bool) -> String {
    let rust_p50 = |case: &str| {
        figures
            .iter()
            .find(|f| f.client == "rust" && f.case == case)
            .and_then(|f| f.p50_ms)
    };
    let verdict = |met: bool| match (verdicts, met) {
        (false, _) => "",
        (true, true) => "met",
        (true, false) => "missed",
    };
    let cpu = |f: &Figure| f.cpu_ms.map(|ms| format!("{ms:.2} ms")).unwrap_or_default();
    let mut out = format!(
        "\n{:<14} {:<28} {:>10} {:>10} {:>12} {:>6} {:>11} {:>7}\n",
        "client", "case", "p50", "p99", "p50 vs Rust", "n", "client CPU", "target"
    );
    for f in figures {
        if let (Some(p50), Some(p99)) = (f.p50_ms, f.p99_ms) {
            let (delta, met) = match rust_p50(&f.case) {
                Some(rust) if f.client != "rust" => (
                    format!("{:+.2} ms", p50 - rust),
                    verdict(p50 - rust <= LATENCY_TARGET_MS),
                ),
                _ => (String::new(), ""),
            };
            out.push_str(&format!(
                "{:<14} {:<28} {:>7.2} ms {:>7.2} ms {:>12} {:>6} {:>11} {:>7}\n",
                f.client,
                f.case,
                p50,
                p99,
                delta,
                f.n.map(|n| n.to_string()).unwrap_or_default(),
                cpu(f),
                met,
            ));
        }
    }
    for f in figures {
        if let Some(per_second) = f.per_second {
            let ratio = match f.sync_per_second {
                Some(sync) if sync > 0.0 => {
                    let ratio = per_second / sync;
                    let met = verdict(ratio >= THROUGHPUT_TARGET);
                    let met = if met.is_empty() {
                        String::new()
                    } else {
                        format!(", target {THROUGHPUT_TARGET}×: {met}")
                    };
                    format!(" ({sync:.0}/s sync, {ratio:.1}×{met})")
                }
                _ => String::new(),
            };
            let cpu = match f.cpu_ms {
                Some(ms) => format!(", client CPU {ms:.2} ms per execution"),
                None => String::new(),
            };
            out.push_str(&format!(
                "{:<14} {:<28} {per_second:.0}/s{ratio}{cpu}\n",
                f.client, f.case
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(line: &str) -> Figure {
        match serde_json::from_str(line) {
            Ok(figure) => figure,
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn the_table_shows_each_p50_beside_the_rust_clients() {
        let figures = [
            figure(r#"{"client":"rust","case":"commands true","p50_ms":0.9,"p99_ms":1.5,"n":200}"#),
            figure(
                r#"{"client":"python-sync","case":"commands true","p50_ms":1.15,"p99_ms":2,"n":200}"#,
            ),
            figure(
                r#"{"client":"python-async","case":"commands true","p50_ms":1.5,"p99_ms":2,"n":200,"cpu_ms":0.2}"#,
            ),
            figure(
                r#"{"client":"python-async","case":"100 concurrent executions","per_second":2000,"sync_per_second":400,"cpu_ms":0.1}"#,
            ),
        ];
        let table = table(&figures, true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("client"), "{table}");
        assert!(
            lines[2].starts_with("rust") && !lines[2].contains('+'),
            "{table}"
        );
        assert!(
            lines[3].starts_with("python-sync")
                && lines[3].contains("+0.25 ms")
                && lines[3].ends_with(" met"),
            "{table}"
        );
        assert!(
            lines[4].contains("+0.60 ms")
                && lines[4].contains("0.20 ms")
                && lines[4].ends_with("missed"),
            "{table}"
        );
        assert!(
            lines[5].contains("2000/s (400/s sync, 5.0×, target 5×: met), client CPU 0.10 ms"),
            "{table}"
        );
        let quick = super::table(&figures, false);
        assert!(
            !quick.contains("met") && !quick.contains("missed"),
            "{quick}"
        );
    }
}
