//! `hutch bench`: run a benchmark scenario and print it beside its peer.

use anyhow::Context;
use hutch_bench::server::ServerProcess;
use hutch_bench::stats::ms;
use hutch_bench::{Samples, peers, sessions};
use hutch_client::HutchClient;

/// Options of `hutch bench`.
#[derive(clap::Args, Debug)]
pub(crate) struct BenchArgs {
    /// The scenario: `sessions` (create → run `true` → delete), `commands` (a command's round
    /// trip and 100 MB of streamed output, each beside the same run directly), `files`
    /// (1 GiB upload and download beside `cp`) or `interpreter` (context ready, `x = 1 + 1`
    /// over WebSocket, idle memory; beside ipykernel), `ports` (a small GET to a web server
    /// in a session through `/ports/8000/`, beside the same GET from inside the session),
    /// `network` (create with egress allow beside none; a download from a session beside the
    /// same download from the server's namespace; a GET through `/ports/8000/` beside the
    /// same GET inside the session: without --url, in network namespaces of its own, with
    /// a server of its own, leaving nothing behind) or `images` (first pull + unpack of the Debian python image from a local
    /// registry, beside skopeo copy + umoci unpack) or `clients` (per-call overhead of the
    /// Python and TypeScript SDKs beside the Rust client; run from the checkout) or `soak` (--cycles create → run `true` →
    /// delete cycles from --clients concurrent clients; the server's RSS, descriptors, cgroups,
    /// mounts and directories before and after, and the p99 per window) or `idle` (pause and
    /// resume latency; memory per idle and per paused session and how many idle sessions fit,
    /// beside podman containers and `unshare`d processes) or `agent` (one trivial request at
    /// the agent's door: a session's unix socket beside TCP + preface to an agent in container
    /// mode, on a kept connection and on a fresh one each; needs its own server) or `kube`
    /// (create → run `true` → delete with sessions as pods of a stand-in Kubernetes cluster,
    /// beside the linux runtime; servers of its own).
    #[arg(value_parser = ["sessions", "commands", "files", "interpreter", "ports", "network", "images", "clients", "soak", "idle", "agent", "kube"])]
    scenario: String,
    /// `network`: a large file to download from a session and from here.
    #[arg(long)]
    download_url: Option<String>,
    /// `images`: the OCI layout to push to the local registry (default: the Debian python
    /// image the image tests build and cache under the temporary directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) image_layout: Option<std::path::PathBuf>,
    /// `files`, `network`: size of the file in MiB (default 1024, or 64 with --quick).
    #[arg(long)]
    pub(crate) size_mb: Option<u64>,
    /// `soak`: cycles in all (default 10000, or 200 with --quick).
    #[arg(long)]
    pub(crate) cycles: Option<usize>,
    /// `idle`: most idle sessions to create (default 300, or 4 with --quick).
    #[arg(long)]
    pub(crate) sessions: Option<usize>,
    /// `idle`: podman containers to start beside the sessions (default: as many as the other
    /// peers, 50 or 2 with --quick);
    /// the row says "podman is not installed" where it is missing.
    #[arg(long)]
    pub(crate) podman: Option<usize>,
    /// `idle`: stop creating sessions once the host's MemAvailable is under this many MiB.
    #[arg(long, default_value_t = 8192)]
    pub(crate) memory_floor_mb: u64,
    /// `idle`: stop creating sessions once they hold this many MiB of host memory (their
    /// processes' private memory and the kernel's growth; the drop of MemAvailable with
    /// --url), so that the count that fits is measured: 16384 for "how many in 16 GiB".
    #[arg(long, value_name = "MIB")]
    pub(crate) memory_budget_mb: Option<u64>,
    /// `soak`: concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub(crate) clients: usize,
    /// Measured iterations.
    #[arg(long, default_value_t = 200)]
    pub(crate) iterations: usize,
    /// Unmeasured iterations first.
    #[arg(long, default_value_t = 10)]
    pub(crate) warmup: usize,
    /// `clients`: interleaved rounds (each client in turn, again and again); the table shows
    /// the medians of the rounds (default 5, or 1 with --quick).
    #[arg(long)]
    pub(crate) rounds: Option<usize>,
    /// Few iterations, for CI: checks that the benchmark runs, not the figures.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Benchmark this running server instead of starting one (needs --token).
    #[arg(long, requires = "token")]
    url: Option<String>,
    /// Token for --url.
    #[arg(long, env = "HUTCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// `sessions`: also on PostgreSQL, beside SQLite in the same run: `postgres` starts a
    /// scratch PostgreSQL (as the tests do), a `postgres://` URL uses that database.
    #[arg(long, value_name = "postgres|URL")]
    store: Option<String>,
    /// Warm pool of the server the benchmark starts.
    #[arg(long, default_value_t = 4)]
    pub(crate) warm_pool: usize,
    /// `network`: this run is already inside the network namespace the benchmark made, and
    /// may start a server with networking there (set by the benchmark itself).
    #[arg(long, hide = true)]
    in_own_network: bool,
}

pub(crate) fn main(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        args.iterations = args.iterations.min(20);
        args.warmup = args.warmup.min(3);
    }
    if args.scenario == "network" && args.url.is_none() && !args.in_own_network {
        // A server of its own would change the forwarding and nftables of this namespace:
        // the benchmark makes namespaces of its own and runs again inside one.
        return crate::bench_network::run(&args);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.scenario == "kube" {
        anyhow::ensure!(
            args.url.is_none(),
            "the kube scenario starts servers of its own"
        );
        return crate::bench_kube::run(&args).await;
    }
    if args.scenario == "images" {
        // Starts its own registry and a server that reaches it.
        return crate::bench_images::run(&args).await;
    }
    let quick = args.quick;
    if let Some(store) = &args.store {
        anyhow::ensure!(
            args.scenario == "sessions" && args.url.is_none(),
            "--store is for the sessions scenario on servers of the benchmark's own (no --url)"
        );
        return crate::bench_store::run(&args, store).await;
    }
    // A server of our own unless one was named; it is stopped when this function returns.
    let extra: &[&str] = match args.scenario.as_str() {
        "network" => crate::bench_network::SERVER_ARGS,
        "idle" => crate::bench_idle::SERVER_ARGS,
        _ => &[],
    };
    // The agent scenario finds its session's socket as the only one: no warm pool.
    let warm_pool = if args.scenario == "agent" {
        0
    } else {
        args.warm_pool
    };
    let own_server = match &args.url {
        Some(_) => None,
        None => Some(ServerProcess::start_with(
            &std::env::current_exe().context("finding the hutch binary")?,
            warm_pool,
            extra,
        )?),
    };
    let (url, token) = match (&own_server, &args.url, &args.token) {
        (Some(server), _, _) => (server.url.clone(), server.token.clone()),
        (None, Some(url), Some(token)) => (url.clone(), token.clone()),
        _ => anyhow::bail!("--url needs --token"),
    };
    let client = HutchClient::new(&url, &token).context("creating the client")?;
    client.health().await.context("reaching the server")?;
    if args.scenario == "soak" {
        return crate::bench_soak::run(&client, own_server.as_ref(), &args).await;
    }
    if args.scenario == "agent" {
        return crate::bench_agent::run(&client, own_server.as_ref(), &args).await;
    }
    if args.scenario == "idle" {
        return crate::bench_idle::run(&client, own_server.as_ref(), &args).await;
    }
    if args.scenario == "files" {
        return files_scenario(&client, &token, &args).await;
    }
    if args.scenario == "commands" {
        let config =
            hutch_bench::commands::CommandsConfig::new(args.iterations, args.warmup, quick);
        println!("scenario: commands (round trip of `true`; streamed stdout), server: {url}");
        let report = hutch_bench::commands::run(&client, config).await?;
        hutch_bench::commands::print(&report, &config);
        return Ok(());
    }
    if args.scenario == "ports" {
        let config = hutch_bench::ports::PortsConfig {
            iterations: args.iterations,
            warmup: args.warmup,
        };
        println!(
            "scenario: ports (a 1 KiB GET through /ports/8000/, beside the same GET inside the session), server: {url}"
        );
        println!(
            "iterations: {} (after {} warm-up)",
            args.iterations, args.warmup
        );
        let report = hutch_bench::ports::run(&client, &token, config).await?;
        hutch_bench::ports::print(&report);
        return Ok(());
    }
    if args.scenario == "network" {
        return network_scenario(&client, &token, &args).await;
    }
    if args.scenario == "clients" {
        return crate::bench_clients::run(&client, &url, &token, &args).await;
    }
    if args.scenario == "interpreter" {
        return crate::bench_interpreter::run(&client, &url, &token, &args).await;
    }

    println!("scenario: create session → run `true` → delete session");
    let pool = if own_server.is_some() {
        args.warm_pool.to_string()
    } else {
        "as configured".to_owned()
    };
    println!(
        "iterations: {} (after {} warm-up), server: {url}, warm pool: {pool}",
        args.iterations, args.warmup
    );
    let report = sessions::run(&client, args.warmup, args.iterations).await?;
    let peer = tokio::task::spawn_blocking({
        let n = args.iterations;
        move || peers::bwrap_true(n)
    })
    .await
    .context("running the peer")?;

    println!();
    println!("{:<40} {:>12} {:>12}", "", "p50", "p99");
    row("hutch: create → run → delete", &report.cycle);
    row("  create", &report.create);
    row("  run `true`", &report.run);
    row("  delete", &report.delete);
    match &peer {
        Some(peer) => {
            row("bwrap --unshare-all … true", peer);
            let ratio = report.cycle.p50().as_secs_f64() / peer.p50().as_secs_f64().max(1e-9);
            println!(
                "\nratio hutch / bwrap at p50: {ratio:.2}x (bwrap creates and discards namespaces, no API, no store, no limits)"
            );
        }
        None => println!("bwrap --unshare-all … true: not measured (install bubblewrap)"),
    }
    if quick {
        println!("quick mode: too few iterations to compare with the target (p50 ≤ 15 ms)");
        return Ok(());
    }
    let target = std::time::Duration::from_millis(15);
    let verdict = if report.cycle.p50() <= target {
        "met"
    } else {
        "missed"
    };
    println!("target p50 ≤ 15 ms: {verdict} ({})", ms(report.cycle.p50()));
    Ok(())
}

/// The host's three load averages, as `/proc/loadavg` says them, or "unknown".
pub(crate) fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn row(name: &str, samples: &Samples) {
    println!(
        "{name:<40} {:>12} {:>12}",
        ms(samples.p50()),
        ms(samples.p99())
    );
}

/// `hutch bench files`: upload and download throughput beside `cp`.
async fn files_scenario(client: &HutchClient, token: &str, args: &BenchArgs) -> anyhow::Result<()> {
    use hutch_bench::files::{mb_per_s, median};
    let size_mb = args.size_mb.unwrap_or(if args.quick { 64 } else { 1024 });
    let size = size_mb * 1024 * 1024;
    let iterations = if args.quick { 1 } else { 3 };
    let scratch = std::env::temp_dir();
    println!(
        "scenario: upload and download a {size_mb} MiB file through the file API, beside cp of it on the same disk ({})",
        scratch.display()
    );
    println!("iterations: {iterations}, server: {}", client.base_url());
    let report = hutch_bench::files::run(client, token, size, iterations, &scratch).await?;
    println!();
    println!("{:<40} {:>12} {:>12}", "", "median", "MB/s");
    for (name, samples) in [
        ("hutch: PUT /files/content", &report.upload),
        ("hutch: GET /files/content", &report.download),
        ("cp (same disk)", &report.cp),
    ] {
        let d = median(samples);
        println!(
            "{name:<40} {:>12} {:>12.0}",
            ms(d),
            mb_per_s(report.size, d)
        );
    }
    if args.quick {
        println!("quick mode: a small file, to check that the benchmark runs, not the figures");
        return Ok(());
    }
    let up = mb_per_s(report.size, median(&report.upload));
    let down = mb_per_s(report.size, median(&report.download));
    let verdict = if up >= 500.0 && down >= 500.0 {
        "met"
    } else {
        "missed"
    };
    println!("target ≥ 500 MB/s both ways: {verdict} (upload {up:.0}, download {down:.0})");
    Ok(())
}

/// `hutch bench network`: the create latency egress adds, download throughput, and a small
/// GET through a preview port.
async fn network_scenario(
    client: &HutchClient,
    token: &str,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    println!(
        "scenario: create with egress allow beside none; download from a session beside the same download here; a GET through /ports/8000/ beside the same GET inside the session"
    );
    println!(
        "iterations: {} (after {} warm-up), server: {}",
        args.iterations,
        args.warmup,
        client.base_url()
    );
    let report = hutch_bench::network::run(
        client,
        args.warmup,
        args.iterations,
        args.download_url.as_deref(),
    )
    .await?;
    println!();
    println!("{:<40} {:>12} {:>12}", "", "p50", "p99");
    row("create, egress none", &report.create_none);
    row("create, egress allow", &report.create_allow);
    let added = report
        .create_allow
        .p50()
        .saturating_sub(report.create_none.p50());
    println!("added by egress at p50: {}", ms(added));
    let mb_s = |(bytes, took): (u64, std::time::Duration)| {
        bytes as f64 / 1e6 / took.as_secs_f64().max(1e-9)
    };
    let mut share = None;
    if let (Some(session), Some(host)) = (report.session_download, report.host_download) {
        let percent = 100.0 * mb_s(session) / mb_s(host).max(1e-9);
        println!(
            "download of {} MB: session {:.0} MB/s, here {:.0} MB/s ({percent:.0} %)",
            session.0 / 1_000_000,
            mb_s(session),
            mb_s(host),
        );
        share = Some(percent);
    }
    let ports = hutch_bench::ports::run(
        client,
        token,
        hutch_bench::ports::PortsConfig {
            iterations: args.iterations,
            warmup: args.warmup,
        },
    )
    .await;
    match ports {
        Ok(ports) => hutch_bench::ports::print(&ports),
        // A server elsewhere (--url): the direct side needs the session on this machine.
        Err(e) if args.url.is_some() => println!("\npreview port: not measured ({e})"),
        Err(e) => return Err(e.into()),
    }
    if args.quick {
        println!(
            "quick mode: few iterations and a small file, to check that the benchmark runs, not the figures"
        );
        return Ok(());
    }
    let verdict = |met: bool| if met { "met" } else { "missed" };
    println!(
        "target: egress allow adds ≤ 5 ms at p50: {} ({})",
        verdict(added <= std::time::Duration::from_millis(5)),
        ms(added)
    );
    if let Some(percent) = share {
        println!(
            "target: session download ≥ 80 % of here: {} ({percent:.0} %)",
            verdict(percent >= 80.0)
        );
    }
    Ok(())
}
