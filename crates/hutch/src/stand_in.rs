//! `hutch stand-in-cluster` (hidden): the stand-in Kubernetes cluster as a process of its
//! own, for tests and SDK suites that start `hutch serve --runtime kubernetes` against it. It
//! serves the subset of the Kubernetes API hutch uses on a loopback port, runs each pod's
//! `hutch agent --container` as a local process (this same binary), writes a kubeconfig
//! naming itself, and runs until SIGTERM or SIGINT, killing its pods' processes then.

use std::path::PathBuf;

use anyhow::Context;

/// Options of `hutch stand-in-cluster`.
#[derive(clap::Args, Debug)]
pub(crate) struct StandInArgs {
    /// Where to write the kubeconfig naming the stand-in API server.
    #[arg(long, value_name = "FILE")]
    kubeconfig: PathBuf,
    /// The kubeconfig's default namespace.
    #[arg(long, default_value = "default")]
    namespace: String,
}

/// Runs the stand-in cluster until SIGTERM or SIGINT.
pub(crate) fn main(args: StandInArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let exe = std::env::current_exe().context("finding the hutch binary")?;
        let cluster = hutch_kube::standin::StandInCluster::start(&exe)
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
