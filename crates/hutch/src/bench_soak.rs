//! `hutch bench soak`: many create → run → delete cycles from concurrent clients; what the
//! server holds before and after, and the latency tail over time.

use std::time::Duration;

use anyhow::Context;
use hutch_bench::server::ServerProcess;
use hutch_bench::soak::{self, Resources, SoakConfig, Watched};
use hutch_bench::stats::ms;
use hutch_client::HutchClient;

use crate::bench::BenchArgs;

/// Cycles before the first count, so that lazily built state (connections, caches, the
/// store's pages) is not taken for growth.
const WARMUP_CYCLES: usize = 16;
/// How long the server may take to tear down the last sandboxes and refill its pool.
const SETTLE: Duration = Duration::from_secs(30);

/// Runs the soak against `client`; `server`, when the benchmark started it, is watched.
pub(crate) async fn run(
    client: &HutchClient,
    server: Option<&ServerProcess>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let cycles = args.cycles.unwrap_or(if args.quick { 200 } else { 10_000 });
    let config = SoakConfig {
        cycles,
        clients: args.clients,
        windows: if cycles >= 1_000 { 10 } else { 4 },
    };
    let watched = server.map(|s| Watched {
        pid: s.pid(),
        data_dir: s.data_dir().to_owned(),
        cgroup_parent: hutch_sandbox::linux::cgroup_parent(s.data_dir()),
    });
    println!(
        "scenario: soak, {cycles} cycles of create → run `true` → delete from {} concurrent clients, server: {}",
        config.clients,
        client.base_url()
    );
    let warmup = SoakConfig {
        cycles: WARMUP_CYCLES,
        ..config
    };
    soak::run(client, warmup).await?;
    let start = match &watched {
        Some(w) => {
            // The pool refills after the warm-up before the counts are taken.
            tokio::time::sleep(Duration::from_millis(500 + 100 * args.warm_pool as u64)).await;
            Some(Resources::measure(w).context("counting the server's resources")?)
        }
        None => None,
    };
    let report = soak::run(client, config).await?;
    let end = match (&watched, &start) {
        (Some(w), Some(start)) => Some(soak::settle(w, start, SETTLE).await?),
        _ => None,
    };

    println!(
        "\n{} cycles in {:.1} s ({:.1}/s), p50 {}, p99 {}",
        report.cycles.len(),
        report.elapsed.as_secs_f64(),
        report.cycles.len() as f64 / report.elapsed.as_secs_f64().max(1e-9),
        ms(report.cycles.p50()),
        ms(report.cycles.p99())
    );
    println!(
        "\n{:<10} {:>8} {:>12} {:>12} {:>10}",
        "window", "cycles", "p50", "p99", "cycles/s"
    );
    for (i, w) in report.windows.iter().enumerate() {
        println!(
            "{:<10} {:>8} {:>12} {:>12} {:>10.1}",
            i + 1,
            w.cycles,
            ms(w.p50),
            ms(w.p99),
            w.per_second
        );
    }
    let mut leaked = false;
    match (start, end) {
        (Some(start), Some(end)) => {
            println!(
                "\n{:<28} {:>10} {:>10} {:>10}",
                "server", "start", "end", "growth"
            );
            for (name, a, b) in [
                ("RSS (KiB)", start.rss_kib, end.rss_kib),
                ("open descriptors", start.fds, end.fds),
                ("cgroups", start.cgroups, end.cgroups),
                ("mounts of the data dir", start.mounts, end.mounts),
                ("directories (2 levels)", start.dirs, end.dirs),
            ] {
                println!("{name:<28} {a:>10} {b:>10} {:>+10}", b as i64 - a as i64);
            }
            leaked = end.grew_from(&start);
            let verdict = if leaked { "missed" } else { "met" };
            println!("target no growth beyond the warm pool (RSS aside): {verdict}");
        }
        _ => println!("\nserver resources: not counted (a server started elsewhere, --url)"),
    }
    if let (Some(first), Some(last)) = (report.windows.first(), report.windows.last()) {
        let ratio = last.p99.as_secs_f64() / first.p99.as_secs_f64().max(1e-9);
        if args.quick {
            println!("quick mode: p99 last/first window {ratio:.2}x (too few cycles to judge)");
        } else {
            let verdict = if ratio <= 1.5 { "met" } else { "missed" };
            println!("target p99 flat (last window ≤ 1.5x the first): {verdict} ({ratio:.2}x)");
        }
    }
    // Descriptors, cgroups, mounts and directories left behind are leaks whatever the run's
    // length, so they fail even the quick run.
    anyhow::ensure!(!leaked, "the server holds more than before the soak");
    Ok(())
}
