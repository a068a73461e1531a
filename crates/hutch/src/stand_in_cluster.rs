//! `hutch-stand-in-cluster`: the stand-in Kubernetes cluster as a process of its own, for
//! tests, SDK suites and `hutch bench kube`, which start `hutch serve --runtime kubernetes`
//! against it. A test-support binary: it is not installed, and the shipped `hutch` does not
//! contain the stand-in. It serves the subset of the Kubernetes API hutch uses on a loopback
//! port, runs each pod's `hutch agent --container` as a local process (the `hutch` binary
//! beside this one, or `--hutch`), writes a kubeconfig naming itself, prints `stand-in
//! cluster listening on URL`, and runs until SIGTERM or SIGINT, killing its pods' processes
//! then.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

/// Options of `hutch-stand-in-cluster`.
#[derive(Parser, Debug)]
#[command(name = "hutch-stand-in-cluster", version, about)]
struct Args {
    /// Where to write the kubeconfig naming the stand-in API server.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The kubeconfig's default namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The `hutch` binary each pod runs (default: the one beside this binary).
    #[arg(long, value_name = "PATH")]
    hutch: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hutch-stand-in-cluster: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the stand-in cluster until SIGTERM or SIGINT.
fn run(args: Args) -> anyhow::Result<()> {
    let hutch = match args.hutch {
        Some(path) => path,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("hutch"),
    };
    anyhow::ensure!(
        hutch.is_file(),
        "no hutch binary at {} (give --hutch)",
        hutch.display()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let cluster = hutch_kube::standin::StandInCluster::start(&hutch)
            .await
            .context("starting the stand-in cluster")?;
        cluster
            .write_kubeconfig(&args.kubeconfig, &args.namespace)
            .with_context(|| format!("writing {}", args.kubeconfig.display()))?;
        println!("stand-in cluster listening on {}", cluster.url());
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("handling SIGTERM")?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        drop(cluster);
        Ok(())
    })
}
