//! `hutch bench images`, in one run: the first pull and unpack of the Debian python image from
//! a registry on this machine beside `skopeo copy` + `umoci unpack` of it; create → `true` →
//! delete on the cached image beside `default`; disk for many sessions of one image; and a
//! snapshot and forks of a session holding much new data.

use std::path::PathBuf;

use anyhow::Context;
use hutch_bench::images::{Registry, disk_of_sessions, pull_vs_skopeo_umoci, snapshot_and_fork};
use hutch_bench::server::ServerProcess;
use hutch_bench::sessions;
use hutch_bench::stats::ms;
use hutch_client::HutchClient;

use crate::bench::BenchArgs;

/// Where the image tests cache the Debian python layout they build with mmdebstrap.
const PYTHON_LAYOUT: &str = "hutch-image-tests/image-fixtures/debian-python3-v1";

pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let layout = args
        .image_layout
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(PYTHON_LAYOUT));
    anyhow::ensure!(
        layout.join("index.json").exists(),
        "no OCI layout at {}: pass --image-layout DIR, or build the Debian python image once \
         with `cargo test -p hutch-image --test pull a_debian_python_image` (it is cached there)",
        layout.display()
    );
    let scratch: PathBuf = std::env::temp_dir();
    let registry = Registry::start(&scratch)?;
    registry.push(&layout, "library/python:3.11")?;
    let server = ServerProcess::start_with(
        &std::env::current_exe().context("finding the hutch binary")?,
        args.warm_pool,
        &[
            "--registry-mirror",
            &format!("docker.io=http://{}", registry.addr),
            "--image-managers",
            "tenants",
        ],
    )?;
    let client = HutchClient::new(&server.url, &server.token).context("creating the client")?;
    client.health().await.context("reaching the server")?;
    let pulls = if args.quick { 1 } else { 5 };
    println!(
        "scenario: first pull + unpack of python:3.11 ({}) from a local registry, beside skopeo copy + umoci unpack",
        layout.display()
    );
    println!("pulls: {pulls}, registry: {}", registry.addr);
    // hutch pulls `python:3.11` through its docker.io mirror, as a user would name it.
    let report = pull_vs_skopeo_umoci(
        &client,
        "python:3.11",
        &format!("{}/library/python:3.11", registry.addr),
        pulls,
        &scratch,
    )
    .await
    .context("running the pull scenario")?;
    println!();
    println!("{:<46} {:>12} {:>12}", "", "p50", "max");
    row("hutch: POST /v1/images/pull (fetch+unpack)", &report.hutch);
    match &report.peer {
        Some(peer) => {
            row("skopeo copy + umoci unpack", peer);
            let ratio = report.hutch.p50().as_secs_f64() / peer.p50().as_secs_f64().max(1e-9);
            println!("\nratio hutch / skopeo+umoci at p50: {ratio:.2}x");
        }
        None => println!("skopeo copy + umoci unpack: not measured (install skopeo and umoci)"),
    }
    println!(
        "image: {} layer(s), {:.1} MiB unpacked",
        report.layers,
        mib(report.size_bytes)
    );
    let pull_verdict = report.peer.as_ref().map(|peer| {
        if report.hutch.p50() <= peer.p50() {
            "met"
        } else {
            "missed"
        }
    });

    // The image is cached now: create → `true` → delete on it, beside `default`.
    println!();
    println!(
        "create → run `true` → delete: {} iterations (after {} warm-up) each, warm pool {}",
        args.iterations, args.warmup, args.warm_pool
    );
    let oci = sessions::run_on(&client, Some("python:3.11"), args.warmup, args.iterations)
        .await
        .context("sessions on python:3.11")?;
    let default = sessions::run_on(&client, None, args.warmup, args.iterations)
        .await
        .context("sessions on default")?;
    println!("{:<46} {:>12} {:>12}", "", "p50", "max");
    row("python:3.11 (cached OCI image)", &oci.cycle);
    row("default", &default.cycle);
    let ratio = oci.cycle.p50().as_secs_f64() / default.cycle.p50().as_secs_f64().max(1e-9);
    println!("ratio OCI / default at p50: {ratio:.2}x");

    let count = if args.quick { 10 } else { 100 };
    let disk = disk_of_sessions(&client, "python:3.11", count, server.data_dir())
        .await
        .context("measuring disk")?;
    println!(
        "\ndisk with {} sessions of python:3.11 running: image layers {:.1} MiB (one copy), the sessions' own directories {:.1} MiB together",
        disk.sessions,
        mib(disk.layer_bytes),
        mib(disk.session_bytes)
    );

    let size = if args.quick { 64 } else { 1024 };
    let snap = snapshot_and_fork(&client, "python:3.11", size, 10)
        .await
        .context("snapshot and fork")?;
    println!(
        "\na session holding {} MiB of new files: snapshot {}, fork of {} (its own snapshot, then the creates) {}, {} creates at once from the snapshot {}",
        snap.mib,
        ms(snap.snapshot),
        snap.forks,
        ms(snap.fork),
        snap.forks,
        ms(snap.create_from_snapshot)
    );

    if args.quick {
        println!(
            "\nquick mode: few iterations and small data, to check that the benchmark runs, not the figures"
        );
        return Ok(());
    }
    if let Some(verdict) = pull_verdict {
        println!("\ntarget first pull not slower than skopeo + umoci: {verdict}");
    }
    let within = if ratio <= 1.10 { "met" } else { "missed" };
    println!("target create → true → delete on a cached image within 10 % of default: {within}");
    let fork_verdict = if snap.create_from_snapshot.as_secs_f64() <= 1.0 {
        "met"
    } else {
        "missed"
    };
    println!("target 10 sessions from a snapshot in ≤ 1 s: {fork_verdict}");
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn row(name: &str, samples: &hutch_bench::Samples) {
    println!(
        "{name:<46} {:>12} {:>12}",
        ms(samples.p50()),
        ms(samples.percentile(100.0))
    );
}
