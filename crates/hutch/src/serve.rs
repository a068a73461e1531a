//! `hutch serve`: the control plane and the linux runtime in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use hutch_sandbox::linux::{LinuxConfig, LinuxRuntime};
use hutch_server::{Server, ServerConfig};

/// Options of `hutch serve`; each also comes from a `HUTCH_*` environment variable.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HUTCH_LISTEN", default_value = hutch_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the database, the token secret and the sandboxes.
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    /// HS256 secret for bearer tokens; without it one is generated into the data directory.
    #[arg(long, env = "HUTCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// Most sessions alive at once.
    #[arg(long, env = "HUTCH_MAX_SESSIONS", default_value_t = hutch_server::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Sandboxes kept built and ready to claim (0 builds each on demand).
    #[arg(long, env = "HUTCH_WARM_POOL", default_value_t = 4)]
    warm_pool: usize,
    /// What an orderly shutdown does with running sessions: `keep` them for the next start to
    /// re-adopt, or `destroy` them.
    #[arg(long, env = "HUTCH_ON_EXIT", default_value = "keep", value_parser = ["keep", "destroy"])]
    on_exit: String,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HUTCH_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

fn init_logging(format: &str) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUTCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("unknown log format {other:?}; use text or json"),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut linux =
        LinuxConfig::new(args.data_dir.clone()).context("configuring the linux runtime")?;
    linux.warm_pool = args.warm_pool;
    let (runtime, died) = LinuxRuntime::new(linux).context("preparing the linux runtime")?;
    let mut config = ServerConfig::new(args.data_dir.clone());
    config.listen = args.listen;
    config.jwt_secret = args.jwt_secret;
    config.max_sessions = args.max_sessions;
    config.destroy_on_exit = args.on_exit == "destroy";
    let server = Server::start(config, Arc::new(runtime.clone()), died)
        .await
        .context("starting the server")?;
    runtime.start_pool();

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    println!(
        "hutch {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = server.startup_token() {
        println!("token for tenant \"default\" (valid 24h): {token}");
        println!("try: curl -H \"Authorization: Bearer $TOKEN\" http://{addr}/v1/sessions");
    }
    let result = server.serve(listener).await.context("serving");
    // The server destroyed its sessions if asked to; what is left here is the warm pool.
    runtime.shutdown(false).await;
    result
}
