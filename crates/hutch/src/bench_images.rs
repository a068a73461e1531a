//! `hutch bench images`: the first pull and unpack of the Debian python image from a registry
//! on this machine, beside `skopeo copy` + `umoci unpack` of the same image, in one run.

use std::path::PathBuf;

use anyhow::Context;
use hutch_bench::images::{Registry, pull_vs_skopeo_umoci};
use hutch_bench::server::ServerProcess;
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
        0,
        &[
            "--registry-mirror",
            &format!("docker.io=http://{}", registry.addr),
            "--image-managers",
            "tenants",
        ],
    )?;
    let client = HutchClient::new(&server.url, &server.token).context("creating the client")?;
    client.health().await.context("reaching the server")?;
    let iterations = if args.quick { 1 } else { 5 };
    println!(
        "scenario: first pull + unpack of python:3.11 ({}) from a local registry, beside skopeo copy + umoci unpack",
        layout.display()
    );
    println!("iterations: {iterations}, registry: {}", registry.addr);
    // hutch pulls `python:3.11` through its docker.io mirror, as a user would name it.
    let report = pull_vs_skopeo_umoci(
        &client,
        "python:3.11",
        &format!("{}/library/python:3.11", registry.addr),
        iterations,
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
        report.size_bytes as f64 / (1024.0 * 1024.0)
    );
    if args.quick {
        println!("quick mode: one iteration, to check that the benchmark runs, not the figures");
        return Ok(());
    }
    if let Some(peer) = &report.peer {
        let verdict = if report.hutch.p50() <= peer.p50() {
            "met"
        } else {
            "missed"
        };
        println!("target not slower than skopeo + umoci: {verdict}");
    }
    Ok(())
}

fn row(name: &str, samples: &hutch_bench::Samples) {
    println!(
        "{name:<46} {:>12} {:>12}",
        ms(samples.p50()),
        ms(samples.percentile(100.0))
    );
}
