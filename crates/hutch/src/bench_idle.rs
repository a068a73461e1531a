//! `hutch bench idle`: pause and resume latency, memory per idle and per paused session, and
//! how many idle sessions fit, beside podman containers and `unshare`d processes.

use anyhow::Context;
use hutch_bench::idle::{self, PeerDensity};
use hutch_bench::server::ServerProcess;
use hutch_bench::soak::Watched;
use hutch_bench::stats::ms;
use hutch_client::HutchClient;

use crate::bench::{BenchArgs, row};

/// `hutch serve` arguments of the server the benchmark starts: room for the sessions it holds
/// (each asks for the default 512 MiB of memory limit, which is not memory used), and no rate
/// limits (reading the stats of thousands of sessions, then pausing and resuming each, goes
/// past the default 500 lifecycle requests a second); what stops the run is the `--sessions`
/// cap, the memory budget or floor or a failed create, not an admission limit.
pub(crate) const SERVER_ARGS: &[&str] = &[
    "--max-sessions",
    "100000",
    "--tenant-max-sessions",
    "100000",
    "--tenant-max-memory-mb",
    "51200000",
    "--rate-lifecycle",
    "off",
    "--rate-session",
    "off",
];

/// Peers started when the run is not quick (each is a few MiB; enough to average).
const PEERS: usize = 50;

pub(crate) async fn run(
    client: &HutchClient,
    server: Option<&ServerProcess>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let limits = idle::Limits {
        cap: args.sessions.unwrap_or(if args.quick { 4 } else { 300 }),
        floor_kib: args.memory_floor_mb * 1024,
        budget_kib: args.memory_budget_mb.map(|mib| mib * 1024),
        // Long enough to see the agents' deadline reads (at most 30 s apart).
        wake_window: std::time::Duration::from_secs(if args.quick { 10 } else { 60 }),
    };
    let cap = limits.cap;
    let peers = if args.quick { 2 } else { PEERS.min(cap.max(1)) };
    println!(
        "scenario: idle sessions (pause/resume latency; memory per idle and paused session; how many fit), server: {}",
        client.base_url()
    );
    let budget = match args.memory_budget_mb {
        Some(mib) => format!(", {mib} MiB held by the sessions"),
        None => String::new(),
    };
    println!(
        "pause/resume: {} (after {} warm-up); sessions: until {cap}{budget}, MemAvailable under {} MiB or a failed create; peers: {peers} each; load {}",
        args.iterations,
        args.warmup,
        args.memory_floor_mb,
        crate::bench::load()
    );

    let latency = idle::pause_resume(client, args.warmup, args.iterations)
        .await
        .context("measuring pause and resume")?;
    // The peers first: sessions deleted at the end of the density run free their memory
    // for a while after, which would hide the peers' cost.
    let scratch = std::env::temp_dir();
    let podman_count = args.podman.unwrap_or(peers);
    let (podman, unshare) = tokio::task::spawn_blocking(move || {
        (
            idle::podman_sleepers(podman_count, &scratch),
            idle::unshare_sleepers(peers),
        )
    })
    .await
    .context("running the peers")?;
    let watched = server.map(|s| Watched {
        pid: s.pid(),
        data_dir: s.data_dir().to_owned(),
        cgroup_parent: hutch_sandbox::linux::cgroup_parent(s.data_dir()),
    });
    let density = idle::density(client, limits, watched.as_ref())
        .await
        .context("filling the machine with idle sessions")?;

    println!();
    println!("{:<46} {:>12} {:>12}", "", "p50", "p99");
    row("hutch: pause (POST /pause)", &latency.pause);
    row("hutch: resume (POST /resume)", &latency.resume);

    let mib = |kib: f64| kib / 1024.0;
    println!();
    println!(
        "hutch: {} idle sessions held ({}), every default context ready after {:.1} s; {}/{} answered `true` after pause and resume (and had their default context ready again)",
        density.sessions,
        density.stop,
        density.fill.as_secs_f64(),
        density.answered,
        density.sessions
    );
    let gib = |kib: f64| kib / 1024.0 / 1024.0;
    if let Some(total) = density.idle_total_kib() {
        println!(
            "hutch: {} idle sessions held {:.2} GiB of host memory (processes' private {:.2} GiB + kernel {:.2} GiB); MemAvailable fell by {:.2} GiB; load {}",
            density.sessions,
            gib(total),
            gib(total - density.kernel_total.total()),
            gib(density.kernel_total.total()),
            gib(density.idle_drop_kib),
            crate::bench::load()
        );
    }
    println!(
        "{:<46} {:>12} {:>12}",
        "per session (MiB)", "host", "cgroup"
    );
    println!(
        "{:<46} {:>12.2} {:>12.2}",
        "hutch: idle (default context started)",
        mib(density.idle_kib),
        mib(density.idle_cgroup_kib)
    );
    println!(
        "{:<46} {:>12} {:>12.2}",
        "  of which anonymous (rssBytes)",
        "",
        mib(density.idle_cgroup_rss_kib)
    );
    println!(
        "{:<46} {:>12.2} {:>12.2}",
        "hutch: paused",
        mib(density.paused_kib),
        mib(density.paused_cgroup_kib)
    );
    println!(
        "{:<46} {:>12.1}",
        "hutch: processes and threads per session", density.pids
    );
    if let (Some(idle), Some(paused)) = (
        density.idle_switches_per_minute,
        density.paused_switches_per_minute,
    ) {
        println!(
            "hutch: wake-ups per session per minute (context switches of its agent and worker): idle {idle:.1}, paused {paused:.1}"
        );
    }
    for (state, processes, k) in [
        ("idle", &density.processes, &density.kernel_memory),
        (
            "paused",
            &density.paused_processes,
            &density.paused_kernel_memory,
        ),
    ] {
        println!("  {state}:");
        if let Some(p) = processes {
            for (what, count, m) in [
                ("agent", p.agents, &p.agent),
                ("default worker", p.workers, &p.worker),
            ] {
                println!(
                    "    {what} (mean of {count}): private {:.2}, Pss {:.2}, Rss {:.2}",
                    mib(m.private_dirty),
                    mib(m.pss),
                    mib(m.rss)
                );
            }
        }
        println!(
            "    kernel (growth of /proc/meminfo): slab {:.2}, kernel stacks {:.2}, page tables {:.2}, per-CPU {:.2}",
            mib(k.slab),
            mib(k.kernel_stack),
            mib(k.page_tables),
            mib(k.percpu)
        );
    }
    if let (Some(idle), Some(paused)) = (density.idle_host_kib(), density.paused_host_kib()) {
        println!(
            "{:<46} {:>12.2} {:>12.2}",
            "host: processes' private + kernel (idle, paused)",
            mib(idle),
            mib(paused)
        );
    }
    if !density.slab_growth.is_empty() {
        println!("  slab caches that grew most, KiB per idle session:");
        for (cache, kib) in &density.slab_growth {
            println!("    {cache:<30} {kib:>8.1}");
        }
    }
    peer_row("podman run -d … sleep infinity", &podman);
    peer_row("unshare (pid,mnt,net,ipc,uts) sleep", &unshare);
    if let Some((before, held)) = &density.kernel {
        let n = density.sessions.max(1) as f64;
        let per = |a: u64, b: u64| (b as f64 - a as f64) / n;
        println!(
            "per session: {:.1} server descriptors, {:.1} cgroups, {:.1} mounts of the data dir, {:.2} loop devices, {:.1} host processes",
            per(before.server.fds, held.server.fds),
            per(before.server.cgroups, held.server.cgroups),
            per(before.server.mounts, held.server.mounts),
            per(before.loop_devices, held.loop_devices),
            per(before.processes, held.processes),
        );
    }
    // The processes' private memory and the kernel's growth, when the benchmark started the
    // server (and so could find its sessions' processes); else the drop of MemAvailable, which
    // other work on the machine moves.
    let (per_session, source) = match density.idle_host_kib() {
        Some(kib) => (kib, "processes' private memory + kernel"),
        None => (density.idle_kib, "drop of MemAvailable"),
    };
    if per_session > 0.0 {
        let fits = 16.0 * 1024.0 * 1024.0 / per_session;
        println!(
            "idle sessions in 16 GiB at {:.2} MiB each ({source}): {fits:.0}",
            mib(per_session)
        );
    }

    anyhow::ensure!(
        density.answered == density.sessions,
        "{} of {} sessions did not answer after pause and resume",
        density.sessions - density.answered,
        density.sessions
    );
    if args.quick {
        println!(
            "quick mode: few sessions and iterations, to check that the benchmark runs, not the figures"
        );
        return Ok(());
    }
    if let Some(total) = density.idle_total_kib() {
        let sixteen_gib = 16.0 * 1024.0 * 1024.0;
        let met = density.sessions >= 4000 && total <= sixteen_gib;
        println!(
            "target ≥ 4,000 idle sessions in 16 GiB: {} ({} sessions held {:.2} GiB, {})",
            if met { "met" } else { "missed" },
            density.sessions,
            gib(total),
            density.stop
        );
    }
    let target = std::time::Duration::from_millis(5);
    let verdict = |d: std::time::Duration| if d <= target { "met" } else { "missed" };
    println!(
        "target pause p50 ≤ 5 ms: {} ({}); resume p50 ≤ 5 ms: {} ({})",
        verdict(latency.pause.p50()),
        ms(latency.pause.p50()),
        verdict(latency.resume.p50()),
        ms(latency.resume.p50())
    );
    Ok(())
}

fn peer_row(name: &str, peer: &Result<PeerDensity, String>) {
    match peer {
        Ok(p) => {
            println!(
                "{:<46} {:>12.2} {:>12}",
                format!("{name} (×{}), drop of MemAvailable", p.count),
                p.kib / 1024.0,
                "-"
            );
            if let Some((private, kernel)) = &p.host_kib {
                println!(
                    "{:<46} {:>12.2} {:>12}",
                    "  processes' private + kernel",
                    (private + kernel.total()) / 1024.0,
                    "-"
                );
                println!(
                    "    processes (conmon, sleep): private {:.2}; kernel: slab {:.2}, kernel stacks {:.2}, page tables {:.2}, per-CPU {:.2}",
                    private / 1024.0,
                    kernel.slab / 1024.0,
                    kernel.kernel_stack / 1024.0,
                    kernel.page_tables / 1024.0,
                    kernel.percpu / 1024.0
                );
            }
        }
        Err(why) => println!("{name}: not measured ({why})"),
    }
}
