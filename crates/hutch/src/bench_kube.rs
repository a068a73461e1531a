//! `hutch bench kube`: create session → run `true` → delete session through `hutch serve
//! --runtime kubernetes`, sessions as pods of the stand-in cluster (`hutch-stand-in-cluster`,
//! the test-support binary beside `hutch` in a build tree: a Kubernetes API subset and a
//! kubelet running each pod's `hutch agent --container` as a local process; no Kubernetes API
//! server runs here), beside the linux runtime in the same run, both with a warm pool of
//! `--warm-pool`.

use std::io::BufRead;

use anyhow::Context;
use hutch_bench::server::ServerProcess;
use hutch_bench::sessions;
use hutch_client::HutchClient;

use crate::bench::{BenchArgs, row};

/// The namespace of the benchmark's pods.
const NAMESPACE: &str = "hutch-bench";

/// Runs the scenario: a stand-in cluster, a server on it and a linux one, the same cycles on
/// each.
pub(crate) async fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("finding the hutch binary")?;
    let kubeconfig = std::env::temp_dir().join(format!(
        "hutch-bench-kubeconfig-{}.json",
        std::process::id()
    ));
    let cluster = {
        let (exe, kubeconfig) = (exe.clone(), kubeconfig.clone());
        tokio::task::spawn_blocking(move || StandIn::start(&exe, &kubeconfig))
            .await
            .context("starting the stand-in cluster")??
    };
    let result = measure(args, &exe, &kubeconfig).await;
    let _ = std::fs::remove_file(&kubeconfig);
    // The servers are gone (they deleted their pods on the way out) before the cluster goes.
    tokio::task::spawn_blocking(move || drop(cluster))
        .await
        .context("stopping the stand-in cluster")?;
    result
}

/// A running `hutch-stand-in-cluster`, stopped (SIGTERM, then waited for) on drop.
struct StandIn(std::process::Child);

impl StandIn {
    /// Starts the binary beside `hutch` (`exe`) with its kubeconfig at `kubeconfig`, and waits
    /// for the line saying it listens.
    fn start(exe: &std::path::Path, kubeconfig: &std::path::Path) -> anyhow::Result<StandIn> {
        let binary = exe.with_file_name("hutch-stand-in-cluster");
        let mut child = std::process::Command::new(&binary)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--namespace", NAMESPACE])
            .arg("--hutch")
            .arg(exe)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (a test-support binary of a build tree: build it with \
                     `cargo build -p hutch`)",
                    binary.display()
                )
            })?;
        let stdout = child.stdout.take().context("the stand-in's stdout")?;
        let cluster = StandIn(child);
        // The line comes, or the end of its output if it fails (it then says why on stderr).
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading the stand-in's first line")?;
        anyhow::ensure!(
            line.starts_with("stand-in cluster listening on "),
            "the stand-in cluster did not start: {line:?}"
        );
        Ok(cluster)
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        // SIGTERM stops its pods' processes too; the child is not reaped before the wait.
        let stopped = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        if !stopped {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

async fn measure(
    args: &BenchArgs,
    exe: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> anyhow::Result<()> {
    let warm_pool = args.warm_pool.to_string();
    let kube_args = [
        "--runtime",
        "kubernetes",
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--kube-namespace",
        NAMESPACE,
        "--kube-agent-image",
        "stand-in.invalid/hutch:bench",
        "--kube-warm-pool",
        &warm_pool,
    ]
    .map(str::to_owned);
    let start = |extra: Vec<String>| {
        let exe = exe.to_owned();
        let warm = args.warm_pool;
        tokio::task::spawn_blocking(move || {
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            ServerProcess::start_with(&exe, warm, &extra)
        })
    };
    println!(
        "scenario: create session → run `true` → delete session, a pod each (stand-in cluster) beside the linux runtime"
    );
    println!(
        "iterations: {} (after {} warm-up) each, warm pool: {}",
        args.iterations, args.warmup, args.warm_pool
    );
    let mut reports = Vec::new();
    for (name, extra) in [("linux", Vec::new()), ("kubernetes", kube_args.to_vec())] {
        let server = start(extra).await.context("starting hutch serve")??;
        let client = HutchClient::new(&server.url, &server.token).context("creating the client")?;
        client.health().await.context("reaching the server")?;
        let report = sessions::run(&client, args.warmup, args.iterations).await?;
        reports.push((name, report));
        tokio::task::spawn_blocking(move || drop(server))
            .await
            .context("stopping hutch serve")?;
    }
    println!();
    println!("{:<40} {:>12} {:>12}", "", "p50", "p99");
    for (name, report) in &reports {
        row(&format!("{name}: create → run → delete"), &report.cycle);
        row("  create", &report.create);
        row("  run `true`", &report.run);
        row("  delete", &report.delete);
    }
    if args.quick {
        println!("quick mode: few iterations, to check that the benchmark runs, not the figures");
    }
    Ok(())
}
