//! `hutch bench clients`: the per-call overhead of each client beside the Rust client, in the
//! same run against the same server.
//!
//! Two cases, each on a kept connection: `execute x = 1 + 1` (a cell in an interpreter
//! context, `POST …/interpreter/execute`) and `commands true` (`POST …/commands`). Four
//! clients take turns, round after round (`--rounds`, interleaved so that a drift of the
//! machine's load hits them all alike): the Rust client, measured here; the Python SDK's
//! `python/bench/clients.py --client sync` and `--client async` (with
//! `target/venv-sdk/bin/python`); the TypeScript SDK's `typescript/bench/bench.mjs --json`.
//! Each prints one JSON object per line: `{"client", "case", "p50_ms", "p99_ms", "n",
//! "cpu_ms"}` (`cpu_ms` is the CPU time, user + system, its own process spent per call).
//! After the rounds, `python/bench/clients.py --client concurrent` prints a throughput:
//! `{"client", "case", "per_second", "sync_per_second", "cpu_ms"}`.
//!
//! The server's own time per call comes from its `hutch_http_request_duration_seconds`
//! histogram (`/metrics`), scraped right before and after the Rust client's measured calls
//! (sum over count: a mean, from a request's arrival to its answer's head, which for a
//! streamed execution comes before the cell ran).
//!
//! The table shows, per client and case, the medians over the rounds of: p50, p99, the
//! p50's delta to the Rust client's p50 *in the same round*, the client's CPU per call and
//! its delta to the Rust client's. So "client overhead = client latency − Rust latency" can
//! be checked both ways: by latency (which carries the load's waits) and by CPU (which does
//! not). Outside quick mode it says whether each meets its target: a p50 delta within
//! [`LATENCY_TARGET_MS`], and concurrent executions from one event loop at least
//! [`THROUGHPUT_TARGET`] times the blocking client's throughput. A client whose bench is
//! missing is named as such, not left out silently.

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
/// Rounds when `--rounds` is not given.
const DEFAULT_ROUNDS: usize = 5;
/// The server's request latency histogram.
const DURATION_METRIC: &str = "hutch_http_request_duration_seconds";

/// One line of a client's figures (of one round).
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct Figure {
    client: String,
    case: String,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    n: Option<u64>,
    per_second: Option<f64>,
    sync_per_second: Option<f64>,
    cpu_ms: Option<f64>,
    /// The server's mean time per call (Rust client only; filled in here).
    #[serde(skip)]
    server_ms: Option<f64>,
    /// The round the figure comes from (filled in here).
    #[serde(skip)]
    round: usize,
}

/// An external client's bench: how to start one round of it.
struct External {
    name: &'static str,
    program: &'static str,
    args: Vec<String>,
}

pub(crate) async fn run(
    client: &HutchClient,
    url: &str,
    token: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let rounds = args
        .rounds
        .unwrap_or(if args.quick { 1 } else { DEFAULT_ROUNDS })
        .max(1);
    println!(
        "scenario: clients (per-call overhead on a kept connection), {rounds} interleaved round{} of {} calls after {} unmeasured per client and case, server: {url}",
        if rounds == 1 { "" } else { "s" },
        args.iterations,
        args.warmup
    );
    println!("load average at the start: {}", crate::bench::load());
    let mut common: Vec<String> = ["--url", url, "--token", token]
        .into_iter()
        .map(String::from)
        .collect();
    common.extend([
        "--iterations".to_owned(),
        args.iterations.to_string(),
        "--warmup".to_owned(),
        args.warmup.to_string(),
    ]);
    let mut externals = Vec::new();
    let mut missing = Vec::new();
    let python = Path::new(PYTHON_BENCH).exists() && Path::new(PYTHON).exists();
    if python {
        for face in ["sync", "async"] {
            let mut own = vec![PYTHON_BENCH.to_owned(), "--client".into(), face.into()];
            own.extend(common.iter().cloned());
            externals.push(External {
                name: "Python",
                program: PYTHON,
                args: own,
            });
        }
    } else {
        missing.push(format!(
            "Python: skipped ({PYTHON_BENCH} or {PYTHON} is absent; scripts/deps.sh makes the virtualenv)"
        ));
    }
    if Path::new(TYPESCRIPT_BENCH).exists() && Path::new("typescript/dist").exists() {
        let mut own = vec![TYPESCRIPT_BENCH.to_owned(), "--json".into()];
        own.extend(common.iter().cloned());
        externals.push(External {
            name: "TypeScript",
            program: "node",
            args: own,
        });
    } else {
        missing.push(format!(
            "TypeScript: skipped ({TYPESCRIPT_BENCH} or typescript/dist is absent; `npm run build` in typescript/ makes it)"
        ));
    }
    let mut figures = Vec::new();
    for round in 0..rounds {
        let mut this_round = rust(client, args).await?;
        for external in &externals {
            let mut command = Command::new(external.program);
            command.args(&external.args);
            this_round.extend(lines_of(external.name, command)?);
        }
        for figure in &mut this_round {
            figure.round = round;
        }
        figures.extend(this_round);
    }
    if python {
        let mut concurrent = Command::new(PYTHON);
        concurrent
            .args([PYTHON_BENCH, "--client", "concurrent"])
            .args(&common);
        if args.quick {
            concurrent.arg("--quick");
        }
        figures.extend(lines_of("Python", concurrent)?);
    }
    print!("{}", table(&figures, !args.quick));
    println!("load average at the end: {}", crate::bench::load());
    for line in missing {
        println!("{line}");
    }
    if args.quick {
        println!("quick mode: too few calls to compare the figures");
    }
    Ok(())
}

/// One round of the Rust client's figures, in a session of its own.
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
        let execute = measure(client, "interpreter", args, || async {
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
        let commands = measure(client, "commands", args, || async {
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

/// The measured calls of one case, the CPU time this process spent on them, and the
/// server's mean time per call.
struct Measured {
    samples: Samples,
    cpu: Option<Duration>,
    server: Option<Duration>,
}

/// Times `call` `args.iterations` times after `args.warmup` unmeasured calls; the server's
/// time is read from its histogram of the relay's `route` (`commands`, `interpreter`).
async fn measure<F, Fut>(
    client: &HutchClient,
    route: &str,
    args: &BenchArgs,
    call: F,
) -> anyhow::Result<Measured>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    for _ in 0..args.warmup {
        call().await?;
    }
    let route = format!("/v1/sessions/{{id}}/{route}");
    let before = server_time(client, &route).await;
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
    let after = server_time(client, &route).await;
    let server = match (before, after) {
        (Some((sum, count)), Some((sum_after, count_after))) if count_after > count => Some(
            Duration::from_secs_f64((sum_after - sum).max(0.0) / (count_after - count) as f64),
        ),
        _ => None,
    };
    Ok(Measured {
        samples,
        cpu,
        server,
    })
}

/// The seconds and the count of the server's answered `POST` requests of `route` (every
/// status class and replica label added up), from `/metrics`; `None` when it cannot be read.
async fn server_time(client: &HutchClient, route: &str) -> Option<(f64, u64)> {
    let (status, body) = client
        .request(http::Method::GET, "/metrics", None)
        .await
        .ok()?;
    if !status.is_success() {
        return None;
    }
    Some(histogram_totals(&String::from_utf8_lossy(&body), route))
}

/// Sum and count of [`DURATION_METRIC`]'s series for `POST` requests of `route`.
fn histogram_totals(text: &str, route: &str) -> (f64, u64) {
    let route_label = format!("route=\"{route}\"");
    let (mut sum, mut count) = (0.0, 0u64);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(DURATION_METRIC) else {
            continue;
        };
        let Some((kind, rest)) = rest.split_once('{') else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let labels: Vec<&str> = labels.split(',').map(str::trim).collect();
        if !labels.contains(&route_label.as_str()) || !labels.contains(&"method=\"POST\"") {
            continue;
        }
        let value = value.trim();
        match kind {
            "_sum" => sum += value.parse::<f64>().unwrap_or(0.0),
            "_count" => count += value.parse::<f64>().unwrap_or(0.0) as u64,
            _ => {}
        }
    }
    (sum, count)
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
        server_ms: measured.server.map(|d| d.as_secs_f64() * 1000.0),
        round: 0,
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

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// One client's latency figures of one case over every round: medians of the rounds.
struct Row<'a> {
    client: &'a str,
    case: &'a str,
    p50: f64,
    p99: f64,
    /// Calls measured, all rounds together.
    n: u64,
    rounds: usize,
    /// The p50's delta to the Rust client's p50 of the same round.
    delta: Option<f64>,
    cpu: Option<f64>,
    /// The CPU per call's delta to the Rust client's of the same round.
    cpu_delta: Option<f64>,
    server: Option<f64>,
}

/// The latency figures grouped by client and case (in the order they first came), each with
/// the medians of its rounds and the medians of its per-round deltas to the Rust client.
fn rows(figures: &[Figure]) -> Vec<Row<'_>> {
    let rust = |case: &str, round: usize| {
        figures
            .iter()
            .find(|f| f.client == "rust" && f.case == case && f.round == round)
    };
    let mut keys: Vec<(&str, &str)> = Vec::new();
    for f in figures.iter().filter(|f| f.p50_ms.is_some()) {
        if !keys.contains(&(f.client.as_str(), f.case.as_str())) {
            keys.push((&f.client, &f.case));
        }
    }
    let mut out = Vec::new();
    for (client, case) in keys {
        let mine: Vec<&Figure> = figures
            .iter()
            .filter(|f| f.client == client && f.case == case && f.p50_ms.is_some())
            .collect();
        let of = |get: &dyn Fn(&Figure) -> Option<f64>| {
            median(mine.iter().filter_map(|f| get(f)).collect())
        };
        let delta_of = |get: &dyn Fn(&Figure) -> Option<f64>| {
            if client == "rust" {
                return None;
            }
            median(
                mine.iter()
                    .filter_map(|f| Some(get(f)? - get(rust(case, f.round)?)?))
                    .collect(),
            )
        };
        out.push(Row {
            client,
            case,
            p50: of(&|f| f.p50_ms).unwrap_or_default(),
            p99: of(&|f| f.p99_ms).unwrap_or_default(),
            n: mine.iter().filter_map(|f| f.n).sum(),
            rounds: mine.len(),
            delta: delta_of(&|f| f.p50_ms),
            cpu: of(&|f| f.cpu_ms),
            cpu_delta: delta_of(&|f| f.cpu_ms),
            server: of(&|f| f.server_ms),
        });
    }
    out
}

/// The figures as one table, latencies (medians of the rounds, with their deltas to the Rust
/// client's) then throughputs; with `verdicts`, whether each meets its target.
fn table(figures: &[Figure], verdicts: bool) -> String {
    let verdict = |met: bool| match (verdicts, met) {
        (false, _) => "",
        (true, true) => "met",
        (true, false) => "missed",
    };
    let ms = |value: Option<f64>, signed: bool| match (value, signed) {
        (Some(ms), true) => format!("{ms:+.2} ms"),
        (Some(ms), false) => format!("{ms:.2} ms"),
        (None, _) => String::new(),
    };
    let mut out = format!(
        "\n{:<13} {:<18} {:>9} {:>9} {:>11} {:>10} {:>11} {:>10} {:>9} {:>7}\n",
        "client",
        "case",
        "p50",
        "p99",
        "p50 − Rust",
        "CPU/call",
        "CPU − Rust",
        "server",
        "n×rounds",
        "target"
    );
    for row in rows(figures) {
        let met = row
            .delta
            .map(|delta| verdict(delta <= LATENCY_TARGET_MS))
            .unwrap_or_default();
        let per_round = row.n / row.rounds.max(1) as u64;
        out.push_str(&format!(
            "{:<13} {:<18} {:>9} {:>9} {:>11} {:>10} {:>11} {:>10} {:>9} {:>7}\n",
            row.client,
            row.case,
            ms(Some(row.p50), false),
            ms(Some(row.p99), false),
            ms(row.delta, true),
            ms(row.cpu, false),
            ms(row.cpu_delta, true),
            ms(row.server, false),
            format!("{per_round}×{}", row.rounds),
            met,
        ));
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
                "{:<13} {:<18} {per_second:.0}/s{ratio}{cpu}\n",
                f.client, f.case
            ));
        }
    }
    out.push_str(
        "(medians of the rounds; each delta is to the Rust client's figure of the same round; \
         CPU/call: user + system time of the client's own process per call; server: the \
         server's mean time per call to the answer's head, from its request histogram during \
         the Rust client's calls)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(line: &str, round: usize) -> Figure {
        match serde_json::from_str::<Figure>(line) {
            Ok(figure) => Figure { round, ..figure },
            Err(e) => panic!("{line}: {e}"),
        }
    }

    #[test]
    fn the_table_shows_medians_of_rounds_and_deltas_to_the_rust_client_of_the_same_round() {
        let mut figures = Vec::new();
        // The load drifts: every client is slower in round 1, the deltas stay.
        for (round, base) in [(0, 0.9), (1, 5.0), (2, 1.0)] {
            figures.push(Figure {
                server_ms: Some(0.4),
                ..figure(
                    &format!(
                        r#"{{"client":"rust","case":"commands true","p50_ms":{base},"p99_ms":1.5,"n":200,"cpu_ms":0.1}}"#
                    ),
                    round,
                )
            });
            figures.push(figure(
                &format!(
                    r#"{{"client":"python-sync","case":"commands true","p50_ms":{},"p99_ms":2,"n":200,"cpu_ms":0.3}}"#,
                    base + 0.25
                ),
                round,
            ));
            figures.push(figure(
                &format!(
                    r#"{{"client":"python-async","case":"commands true","p50_ms":{},"p99_ms":2,"n":200,"cpu_ms":0.7}}"#,
                    base + 0.6
                ),
                round,
            ));
        }
        figures.push(figure(
            r#"{"client":"python-async","case":"100 concurrent executions","per_second":2000,"sync_per_second":400,"cpu_ms":0.1}"#,
            0,
        ));
        let table = table(&figures, true);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].starts_with("client"), "{table}");
        assert!(
            lines[2].starts_with("rust")
                && lines[2].contains(" 1.00 ms")
                && !lines[2].contains('+')
                && lines[2].contains("0.40 ms")
                && lines[2].contains("200×3"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("python-sync")
                && lines[3].contains("+0.25 ms")
                && lines[3].contains("+0.20 ms")
                && lines[3].ends_with(" met"),
            "{table}"
        );
        assert!(
            lines[4].contains("+0.60 ms")
                && lines[4].contains("0.70 ms")
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

    #[test]
    fn the_server_time_adds_up_the_routes_post_series() {
        let text = "\
# TYPE hutch_http_request_duration_seconds histogram
hutch_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/sessions/{id}/commands\",status_class=\"2xx\",le=\"0.001\"} 3
hutch_http_request_duration_seconds_sum{method=\"POST\",route=\"/v1/sessions/{id}/commands\",status_class=\"2xx\"} 0.5
hutch_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sessions/{id}/commands\",status_class=\"2xx\"} 10
hutch_http_request_duration_seconds_sum{method=\"POST\",route=\"/v1/sessions/{id}/commands\",status_class=\"4xx\"} 0.25
hutch_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sessions/{id}/commands\",status_class=\"4xx\"} 2
hutch_http_request_duration_seconds_sum{method=\"GET\",route=\"/v1/sessions/{id}/commands\",status_class=\"2xx\"} 9
hutch_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/sessions/{id}/commands\",status_class=\"2xx\"} 9
hutch_http_request_duration_seconds_sum{method=\"POST\",route=\"/v1/sessions/{id}/interpreter\",status_class=\"2xx\"} 7
hutch_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/sessions/{id}/interpreter\",status_class=\"2xx\"} 7
";
        assert_eq!(
            histogram_totals(text, "/v1/sessions/{id}/commands"),
            (0.75, 12)
        );
        assert_eq!(
            histogram_totals(text, "/v1/sessions/{id}/interpreter"),
            (7.0, 7)
        );
        assert_eq!(histogram_totals(text, "/v1/sessions/{id}/files"), (0.0, 0));
    }

    #[test]
    fn the_median_of_an_even_count_is_the_mean_of_the_middle_two() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
