//! `hutch bench interpreter`: interpreter contexts beside ipykernel, in one run.

use std::time::Duration;

use anyhow::Context;
use hutch_bench::stats::ms;
use hutch_bench::{Samples, interpreter};
use hutch_client::HutchClient;

use crate::bench::BenchArgs;

/// Where `scripts/deps.sh` installs the peer (ipykernel and jupyter_client).
const PEER_VENV: &str = "target/venv-peers";

pub(crate) async fn run(
    client: &HutchClient,
    url: &str,
    token: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let starts = if args.quick {
        4
    } else {
        (args.iterations / 4).clamp(8, 50)
    };
    println!("scenario: interpreter contexts (plain CPython and IPython kernels) vs ipykernel");
    println!(
        "context starts: {starts} (IPython: {}), executions of `x = 1 + 1`: {} (after {} warm-up), server: {url}",
        starts.div_ceil(4).max(2),
        args.iterations,
        args.warmup
    );
    let report = interpreter::run(client, url, token, starts, args.warmup, args.iterations)
        .await
        .context("running the interpreter scenario")?;
    let venv = std::env::var_os("HUTCH_PEERS_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(PEER_VENV));
    let peer = tokio::task::spawn_blocking({
        let (starts, warmup, n) = (starts.div_ceil(4).max(2), args.warmup, args.iterations);
        move || interpreter::ipykernel(&venv, starts, warmup, n)
    })
    .await
    .context("running the peer")?;

    println!();
    println!("{:<46} {:>12} {:>12}", "", "p50", "p99");
    row("hutch plain: context ready", &report.plain.ready);
    row(
        "hutch plain: x = 1 + 1 over WebSocket",
        &report.plain.execute,
    );
    row("hutch IPython: context ready", &report.ipython.ready);
    row(
        "hutch IPython: x = 1 + 1 over WebSocket",
        &report.ipython.execute,
    );
    match &peer {
        Some(peer) => {
            row("ipykernel: kernel ready (jupyter_client)", &peer.ready);
            row("ipykernel: x = 1 + 1 (jupyter_client)", &peer.execute);
        }
        None => println!(
            "ipykernel: skipped (install ipykernel and jupyter_client into {PEER_VENV} with scripts/deps.sh)"
        ),
    }
    println!();
    println!("idle memory (RSS)");
    println!(
        "  hutch default context: {} (kernel auto, before any cell)",
        mib(report.default_idle_rss_kib)
    );
    println!("  hutch plain worker:   {}", mib(report.plain.idle_rss_kib));
    println!(
        "  hutch IPython worker: {}",
        mib(report.ipython.idle_rss_kib)
    );
    if let Some(peer) = &peer {
        println!("  ipykernel:            {}", mib(peer.idle_rss_kib));
    }
    if args.quick {
        println!("quick mode: too few iterations to compare with the targets");
        return Ok(());
    }
    println!();
    verdict(
        "plain context ready p50 ≤ 20 ms",
        report.plain.ready.p50() <= Duration::from_millis(20),
        ms(report.plain.ready.p50()),
    );
    verdict(
        "plain execute p50 ≤ 1 ms",
        report.plain.execute.p50() <= Duration::from_millis(1),
        ms(report.plain.execute.p50()),
    );
    verdict(
        "IPython execute p50 ≤ 3 ms",
        report.ipython.execute.p50() <= Duration::from_millis(3),
        ms(report.ipython.execute.p50()),
    );
    verdict(
        "plain idle RSS ≤ 15 MiB",
        report.plain.idle_rss_kib <= 15 * 1024,
        mib(report.plain.idle_rss_kib),
    );
    Ok(())
}

fn row(name: &str, samples: &Samples) {
    println!(
        "{name:<46} {:>12} {:>12}",
        ms(samples.p50()),
        ms(samples.p99())
    );
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn verdict(what: &str, met: bool, figure: String) {
    let word = if met { "met" } else { "missed" };
    println!("target {what}: {word} ({figure})");
}
