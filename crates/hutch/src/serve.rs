//! `hutch serve`: the control plane and the linux runtime in one process (or the control
//! plane alone, with sessions as Kubernetes pods: `--runtime kubernetes`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use futures_util::FutureExt;
use hutch_sandbox::linux::{LinuxConfig, LinuxRuntime};
use hutch_server::{RateLimit, Server, ServerConfig, Tls};

use crate::serve_kube::RuntimeKind;

/// Where the sessions store is (`hutch serve`, `hutch migrate`).
#[derive(clap::Args, Debug)]
pub(crate) struct StoreArgs {
    /// The sessions store: a PostgreSQL URL (`postgres://user:password@host:5432/hutch`),
    /// which several `hutch serve` may share; without it, SQLite in the data directory.
    #[arg(
        long = "store",
        env = "HUTCH_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    url: Option<String>,
}

impl StoreArgs {
    /// The location given, if any.
    pub(crate) fn location(&self) -> anyhow::Result<Option<hutch_server::StoreLocation>> {
        self.url
            .as_deref()
            .map(hutch_server::StoreLocation::postgres)
            .transpose()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// `hutch migrate`: applies the store's pending migrations, and exits.
#[derive(clap::Args, Debug)]
pub(crate) struct MigrateArgs {
    /// Directory of the SQLite database (when no `--store` is given).
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Runs `hutch migrate`.
pub(crate) fn migrate_main(args: MigrateArgs) -> anyhow::Result<()> {
    let mut config = ServerConfig::new(args.data_dir);
    config.store = args.store.location()?;
    let location = config.store_location();
    if let hutch_server::StoreLocation::Sqlite(path) = &location
        && let Some(dir) = path.parent()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime
        .block_on(hutch_server::migrate(&location))
        .with_context(|| format!("migrating the store at {}", location.display()))?;
    println!("store at {} is up to date", location.display());
    Ok(())
}

/// Options of `hutch serve`; each also comes from a `HUTCH_*` environment variable.
#[derive(clap::Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "HUTCH_LISTEN", default_value = hutch_server::DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Directory for the database, the token secret and the sandboxes.
    #[arg(long, env = "HUTCH_DATA_DIR", default_value = "/var/lib/hutch")]
    data_dir: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Do not apply pending store migrations at start: refuse to start unless the schema is
    /// up to date (run `hutch migrate` first).
    #[arg(long, env = "HUTCH_NO_MIGRATE")]
    no_migrate: bool,
    /// This server's name among servers sharing one store: every `/metrics` series carries it
    /// as the `replica` label.
    #[arg(long, env = "HUTCH_REPLICA", value_name = "NAME")]
    replica: Option<String>,
    /// HS256 secret for bearer tokens; without it one is generated into the data directory.
    #[arg(long, env = "HUTCH_JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
    /// PEM file with one RSA or P-256 public key: RS256 or ES256 tokens signed with its
    /// private key are accepted besides HS256 ones.
    #[arg(long, env = "HUTCH_JWT_PUBLIC_KEY", value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// JWKS file of RSA and P-256 public keys (RS256, ES256); a token's `kid` picks its key.
    #[arg(long, env = "HUTCH_JWT_JWKS", value_name = "FILE")]
    jwt_jwks: Option<PathBuf>,
    /// Required `iss` claim of every token.
    #[arg(long, env = "HUTCH_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required `aud` claim of every token (the token's `aud` must name it).
    #[arg(long, env = "HUTCH_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// Per-tenant rate limit of the session routes (create, list, get, update, delete):
    /// `N/s`, `N/m` or `N/h`, optionally `,burst=B`, or `off`.
    #[arg(long, env = "HUTCH_RATE_LIFECYCLE", value_name = "RATE", default_value_t = hutch_server::DEFAULT_RATE_LIFECYCLE)]
    rate_lifecycle: RateLimit,
    /// Per-tenant rate limit of everything proxied into a session (commands and the rest):
    /// `N/s`, `N/m` or `N/h`, optionally `,burst=B`, or `off`.
    #[arg(long, env = "HUTCH_RATE_SESSION", value_name = "RATE", default_value_t = hutch_server::DEFAULT_RATE_SESSION)]
    rate_session: RateLimit,
    /// Most sessions one tenant may hold at once.
    #[arg(long, env = "HUTCH_TENANT_MAX_SESSIONS", default_value_t = hutch_server::DEFAULT_TENANT_MAX_SESSIONS)]
    tenant_max_sessions: usize,
    /// Most memory (the sum of `memoryMb`) one tenant's sessions may hold, in MiB.
    #[arg(long, env = "HUTCH_TENANT_MAX_MEMORY_MB", default_value_t = hutch_server::DEFAULT_TENANT_MAX_MEMORY_MB)]
    tenant_max_memory_mb: u64,
    /// Most bytes of file content one storage context may hold, in MiB (at most
    /// `--max-upload-mb`: a context is restored into a session through the file API).
    #[arg(long, env = "HUTCH_CONTEXT_MAX_MB", default_value_t = 1024)]
    context_max_mb: u64,
    /// Most bytes of file content one tenant's storage contexts may hold together, in MiB.
    #[arg(long, env = "HUTCH_TENANT_CONTEXTS_MAX_MB", default_value_t = 10_240)]
    tenant_contexts_max_mb: u64,
    /// Most storage contexts one tenant may hold.
    #[arg(long, env = "HUTCH_TENANT_MAX_CONTEXTS", default_value_t = 100)]
    tenant_max_contexts: usize,
    /// Keep storage contexts' content in an S3-compatible bucket, `s3://bucket/prefix`,
    /// instead of the data directory (credentials from the AWS_* variables).
    #[arg(long, env = "HUTCH_BLOB_STORE", value_name = "URL", value_parser = hutch_server::S3Config::parse)]
    blob_store: Option<hutch_server::S3Config>,
    /// Endpoint URL of the S3-compatible service of `--blob-store` (default: AWS, or
    /// AWS_ENDPOINT_URL).
    #[arg(
        long,
        env = "HUTCH_BLOB_STORE_ENDPOINT",
        value_name = "URL",
        requires = "blob_store"
    )]
    blob_store_endpoint: Option<String>,
    /// Region of `--blob-store` (default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long, env = "HUTCH_BLOB_STORE_REGION", requires = "blob_store")]
    blob_store_region: Option<String>,
    /// Most sessions alive at once.
    #[arg(long, env = "HUTCH_MAX_SESSIONS", default_value_t = hutch_server::DEFAULT_MAX_SESSIONS)]
    max_sessions: usize,
    /// Sandboxes kept built and ready to claim (0 builds each on demand).
    #[arg(long, env = "HUTCH_WARM_POOL", default_value_t = 4)]
    warm_pool: usize,
    /// Sandboxes kept ready for each recently used OCI image (0: OCI sessions are built on
    /// demand).
    #[arg(long, env = "HUTCH_WARM_POOL_PER_IMAGE", default_value_t = 2)]
    warm_pool_per_image: usize,
    /// How many OCI images (the most recently used) the warm pool keeps sandboxes for.
    #[arg(long, env = "HUTCH_WARM_POOL_IMAGES", default_value_t = 4)]
    warm_pool_images: usize,
    /// First host uid (and gid) of the sandbox id pool: the 65,536 ids from here own the
    /// shared image layers; each sandbox maps its ids onto a range of its own above them.
    #[arg(long, env = "HUTCH_UID_BASE", default_value_t = hutch_sandbox::linux::DEFAULT_UID_BASE)]
    uid_base: u32,
    /// How many sandbox id ranges (65,536 ids each) the pool holds: at most this many
    /// sandboxes, warm pool included, at once.
    #[arg(long, env = "HUTCH_UID_RANGES", default_value_t = hutch_sandbox::linux::DEFAULT_UID_RANGES)]
    uid_ranges: u32,
    /// What an orderly shutdown does with running sessions: `keep` them for the next start to
    /// re-adopt, or `destroy` them.
    #[arg(long, env = "HUTCH_ON_EXIT", default_value = "keep", value_parser = ["keep", "destroy"])]
    on_exit: String,
    /// Disk quota in MiB of sessions that ask for none (`resources.diskMb`); default 10240, or
    /// `--disk-mb-max` when that is lower. The warm pool's sandboxes are built with it; another
    /// quota costs tens of milliseconds at create (see docs/architecture.md).
    #[arg(long, env = "HUTCH_DISK_MB_DEFAULT")]
    disk_mb_default: Option<u64>,
    /// Largest disk quota in MiB a session may ask for.
    #[arg(long, env = "HUTCH_DISK_MB_MAX", default_value_t = hutch_api::limits::DISK_MB_RANGE.1)]
    disk_mb_max: u64,
    /// How disk quotas are made: `pool`, a btrfs subvolume a session in one shared file
    /// system (`<data-dir>/disks`; falls back to `per-session` with a warning where btrfs or
    /// `mkfs.btrfs` is missing), or `per-session`, an ext4 image of its own each (about a
    /// quarter of a MiB more host memory a session; see docs/architecture.md#disk-quotas).
    #[arg(long, env = "HUTCH_DISK_QUOTAS", default_value = "pool", value_parser = ["pool", "per-session"])]
    disk_quotas: String,
    /// MiB that must stay free on the data directory's file system: with less free, creates,
    /// storage transfers and image pulls and imports answer 507 `disk_full`, while running
    /// sessions carry on.
    #[arg(long, env = "HUTCH_DISK_RESERVE_MB", default_value_t = hutch_server::DEFAULT_DISK_RESERVE_MB)]
    disk_reserve_mb: u64,
    /// System calls to add to the seccomp allow list of every sandbox, by name,
    /// comma-separated (`fanotify_init,migrate_pages`); those the deny list refuses (`bpf`,
    /// `mount`, …) cannot be added.
    #[arg(
        long,
        env = "HUTCH_SECCOMP_ALLOW",
        value_name = "NAME,…",
        value_delimiter = ','
    )]
    seccomp_allow: Vec<String>,
    /// Largest file, archive or multipart request the file API accepts, in MiB; past it, 413
    /// `payload_too_large`.
    #[arg(long, env = "HUTCH_MAX_UPLOAD_MB", default_value_t = hutch_api::limits::FILES_UPLOAD_MAX_BYTES_DEFAULT / (1024 * 1024))]
    max_upload_mb: u64,
    /// Domain of host-based preview links, `{port}-{sessionId}.DOMAIN` (point a wildcard DNS
    /// name `*.DOMAIN` at this server; `localhost` works in a browser on this machine).
    /// Without it, preview links have only their path form.
    #[arg(long, env = "HUTCH_PREVIEW_DOMAIN", value_name = "DOMAIN", value_parser = parse_preview_domain)]
    preview_domain: Option<String>,
    /// Most connections relayed into one session's ports at once; past it, 429.
    #[arg(long, env = "HUTCH_PORT_CONNECTIONS_MAX", default_value_t = hutch_api::limits::PORT_CONNECTIONS_MAX_DEFAULT)]
    port_connections_max: usize,
    /// Docker-style `config.json` with registry credentials (`auths`), used when pulling.
    #[arg(long, env = "HUTCH_REGISTRY_AUTH", value_name = "FILE")]
    registry_auth: Option<PathBuf>,
    /// A mirror that registry pulls go to instead, as `REGISTRY=http(s)://HOST[:PORT]`
    /// (repeatable; the variable takes a comma-separated list).
    #[arg(
        long,
        env = "HUTCH_REGISTRY_MIRROR",
        value_name = "REG=URL",
        value_delimiter = ','
    )]
    registry_mirror: Vec<String>,
    /// A registry reached over plain HTTP instead of HTTPS (repeatable; the variable takes a
    /// comma-separated list).
    #[arg(
        long,
        env = "HUTCH_INSECURE_REGISTRY",
        value_name = "REG",
        value_delimiter = ','
    )]
    insecure_registry: Vec<String>,
    /// The only registries images may be pulled from, comma-separated (`docker.io` for Docker
    /// Hub short names); without it, any.
    #[arg(
        long,
        env = "HUTCH_ALLOWED_REGISTRIES",
        value_name = "REG,…",
        value_delimiter = ','
    )]
    allowed_registries: Option<Vec<String>>,
    /// Bytes of unpacked image layers kept, in GiB: past it, the least recently used images
    /// no session uses are collected (snapshots are not).
    #[arg(long, env = "HUTCH_IMAGE_CACHE_GB", default_value_t = hutch_server::images::DEFAULT_IMAGE_CACHE_BYTES >> 30)]
    image_cache_gb: u64,
    /// Largest image archive `POST /v1/images/import` accepts, in MiB.
    #[arg(long, env = "HUTCH_IMAGE_IMPORT_MAX_MB", default_value_t = hutch_server::images::DEFAULT_IMPORT_MAX_BYTES >> 20)]
    image_import_max_mb: u64,
    /// Most snapshots one tenant may keep (`POST /v1/sessions/{id}/snapshot`); the snapshots
    /// forks are made from do not count.
    #[arg(long, env = "HUTCH_TENANT_MAX_SNAPSHOTS", default_value_t = hutch_server::images::DEFAULT_TENANT_MAX_SNAPSHOTS)]
    tenant_max_snapshots: usize,
    /// Who may import and delete images: `admins` (admin tokens only) or `tenants` (any
    /// token). Pulling is open to every tenant, within the allowed registries.
    #[arg(long, env = "HUTCH_IMAGE_MANAGERS", value_enum, default_value_t = ImageManagersArg::Admins)]
    image_managers: ImageManagersArg,
    /// PEM certificate chain (the server's certificate first): serve HTTPS and WSS instead of
    /// plain HTTP. Needs `--tls-key`.
    #[arg(
        long,
        env = "HUTCH_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert` (PKCS#8, PKCS#1 RSA or SEC1 EC).
    #[arg(
        long,
        env = "HUTCH_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Threads that run the control plane's requests (its blocking work, such as building and
    /// tearing down sandboxes, runs on threads of its own). Default: half the CPUs this
    /// process may run on, at least one, since the sessions' agents and workers need the rest.
    #[arg(long, env = "HUTCH_WORKER_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    worker_threads: Option<u16>,
    /// While a request inside a session waits for the agent's answer, the agent's health is
    /// probed this often, and a probe left unanswered this long (a stopped or stuck agent)
    /// answers the request 504 `sandbox_timeout`: `10s`, `1m`, or plain seconds.
    #[arg(long, env = "HUTCH_AGENT_TIMEOUT", value_name = "DURATION", default_value = "10s", value_parser = crate::duration::parse)]
    agent_timeout: std::time::Duration,
    /// How long a sandbox outlives its session's expiry when no server destroys it (this one
    /// stopped and did not come back): past it, the sandbox's agent ends the sandbox.
    #[arg(long, env = "HUTCH_ORPHAN_GRACE", value_name = "DURATION", default_value = "5m", value_parser = crate::duration::parse)]
    orphan_grace: std::time::Duration,
    /// Pause sessions created without `autoPause` once idle this long (no request and nothing
    /// running; see `autoPause`); unset: never.
    #[arg(long, env = "HUTCH_AUTO_PAUSE_IDLE", value_name = "DURATION", value_parser = crate::duration::parse)]
    auto_pause_idle: Option<std::time::Duration>,
    /// Most connections held at once; past it, new ones get 503 `capacity` and are closed.
    /// Keep it below the open-file limit.
    #[arg(long, env = "HUTCH_MAX_CONNECTIONS", default_value_t = hutch_server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Most connections held at once from one IP address; past it, new ones from that address
    /// get 429 `rate_limited` and are closed.
    #[arg(long, env = "HUTCH_MAX_CONNECTIONS_PER_CLIENT", default_value_t = hutch_server::DEFAULT_MAX_CONNECTIONS_PER_CLIENT)]
    max_connections_per_client: usize,
    /// Time a client has to send a request's head, from the connection's start or the end of
    /// its previous request (so it also closes idle kept-alive connections).
    #[arg(long, env = "HUTCH_HEADER_TIMEOUT", value_name = "DURATION", default_value = "30s", value_parser = crate::duration::parse)]
    header_timeout: std::time::Duration,
    /// How long a WebSocket (or other upgraded connection) may carry nothing in either
    /// direction before it is closed; a client that pings keeps it.
    #[arg(long, env = "HUTCH_WEBSOCKET_IDLE_TIMEOUT", value_name = "DURATION", default_value = "1h", value_parser = crate::duration::parse)]
    websocket_idle_timeout: std::time::Duration,
    /// Log format: `text` or `json`.
    #[arg(long, env = "HUTCH_LOG_FORMAT", default_value = "text")]
    log_format: String,
    /// Colours in the text log: `auto` (only when stderr is a terminal and `NO_COLOR` is
    /// unset), `always` or `never`.
    #[arg(long, env = "HUTCH_LOG_COLOR", value_enum, default_value_t = LogColor::Auto)]
    log_color: LogColor,
    #[command(flatten)]
    network: crate::serve_network::NetworkArgs,
    #[command(flatten)]
    kube: crate::serve_kube::KubeArgs,
}

/// Who may import and delete images.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageManagersArg {
    /// Admin tokens only.
    Admins,
    /// Any token.
    Tenants,
}

/// When the text log is coloured.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogColor {
    /// Only on a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always, also into files and pipes.
    Always,
    /// Never.
    Never,
}

impl LogColor {
    /// Whether a log written to stderr gets ANSI colours.
    fn for_stderr(self) -> bool {
        match self {
            LogColor::Always => true,
            LogColor::Never => false,
            LogColor::Auto => {
                std::io::stderr().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

/// A preview domain: a DNS name (letters, digits, `-` and `.`), stored in lower case.
fn parse_preview_domain(raw: &str) -> Result<String, String> {
    let domain = raw.trim_matches('.').to_ascii_lowercase();
    let valid = !domain.is_empty()
        && domain.len() <= 200
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(domain)
    } else {
        Err(format!(
            "{raw:?} is not a DNS name such as preview.example.com"
        ))
    }
}

pub(crate) fn main(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(&args.log_format, args.log_color)?;
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args
        .worker_threads
        .map_or_else(|| default_worker_threads(cpus), usize::from);
    tracing::info!(threads, cpus, "request threads");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(args))
}

/// The control plane's request threads on a host with `cpus` CPUs: half of them, at least one.
///
/// Every request inside a session wakes the session's agent and often its worker too, on the
/// same CPUs. A thread per CPU (tokio's default) hands a request from thread to thread more
/// often than it runs two at once: on two CPUs, one thread took an execution from 0.57 to
/// 0.45 ms and the server's CPU for it from 0.20 to 0.15 ms, with 100 at once as fast as
/// before (docs/operations.md, *Request threads*).
fn default_worker_threads(cpus: usize) -> usize {
    (cpus / 2).max(1)
}

fn init_logging(format: &str, color: LogColor) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HUTCH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(color.for_stderr())
        .with_writer(std::io::stderr);
    match format {
        "json" => builder.json().init(),
        "text" => builder.init(),
        other => anyhow::bail!("unknown log format {other:?}; use text or json"),
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // ctrl-c and SIGTERM are heard from here on: one that comes while the server starts ends
    // it in order once it serves, with its warm pool destroyed and its cgroups removed.
    let shutdown = hutch_server::shutdown_signal();
    // A wrong certificate or key is reported before anything else starts.
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls::from_pem_files(cert, key)?),
        _ => None,
    };
    let mut linux =
        LinuxConfig::new(args.data_dir.clone()).context("configuring the linux runtime")?;
    linux.agent = crate::agent_program::choose(&linux.agent.path);
    linux.python_compiler = Some(hutch_agent::compile_python_worker);
    linux.warm_pool = args.warm_pool;
    linux.warm_pool_per_image = args.warm_pool_per_image;
    linux.warm_pool_images = args.warm_pool_images;
    linux.uid_base = args.uid_base;
    linux.uid_ranges = args.uid_ranges;
    let (min, max) = hutch_api::limits::DISK_MB_RANGE;
    let mb = args
        .disk_mb_default
        .unwrap_or(hutch_api::limits::DISK_MB_DEFAULT.min(args.disk_mb_max));
    anyhow::ensure!(
        (min..=max.min(args.disk_mb_max)).contains(&mb),
        "--disk-mb-default must be between {min} and --disk-mb-max ({}), got {mb}",
        args.disk_mb_max.min(max)
    );
    linux.disk_mb_default = Some(mb);
    hutch_sandbox::check_seccomp_allow(&args.seccomp_allow)
        .map_err(|e| anyhow::anyhow!("--seccomp-allow: {e}"))?;
    linux.seccomp_allow = args.seccomp_allow.clone();
    linux.disk_mb_max = args.disk_mb_max;
    // Sessions' disks stop growing at half the reserve, under which only creates stop.
    linux.disk_floor_mb = args.disk_reserve_mb / 2;
    linux.disk_quotas = match args.disk_quotas.as_str() {
        "per-session" => hutch_sandbox::linux::DiskQuotas::PerSandbox,
        _ => hutch_sandbox::linux::DiskQuotas::Pool,
    };
    linux.max_upload_bytes = Some(args.max_upload_mb.saturating_mul(1024 * 1024));
    let network_limits = args.network.limits()?;
    linux.network = args.network.runtime_config(args.listen)?;
    linux.package_indexes = args.network.package_indexes()?;
    // A wrong registry option is reported before the runtime starts.
    let images = images_config(&args, linux.uid_base)?;
    // The linux runtime, unless the sessions run as pods.
    let (runtime, sessions): (Option<LinuxRuntime>, Arc<dyn hutch_sandbox::Runtime>) =
        match args.kube.runtime {
            RuntimeKind::Linux => {
                let runtime = LinuxRuntime::new(linux).context("preparing the linux runtime")?;
                (Some(runtime.clone()), Arc::new(runtime))
            }
            RuntimeKind::Kubernetes => (None, Arc::new(args.kube.runtime().await?)),
        };
    // Whatever ends the server from here on (an error starting it, or the end of serving)
    // destroys the warm pool and removes the runtime's cgroups when nothing is left in them.
    let started = Started {
        runtime: runtime.clone(),
        sessions,
        network_limits,
        images,
        tls,
    };
    let result = serve_with(args, started, shutdown).await;
    // The server destroyed its sessions if asked to; what is left here is the warm pool.
    if let Some(runtime) = &runtime {
        runtime.shutdown(false).await;
    }
    result
}

/// What [`serve`] has checked and started before the server itself.
struct Started {
    /// The linux runtime, unless the sessions run as pods.
    runtime: Option<LinuxRuntime>,
    /// The sessions' runtime (the linux one, or Kubernetes).
    sessions: Arc<dyn hutch_sandbox::Runtime>,
    /// The network options' limits.
    network_limits: hutch_server::NetworkLimits,
    /// The image store's settings.
    images: hutch_server::ImagesConfig,
    /// The certificate and key, for HTTPS.
    tls: Option<Tls>,
}

/// The server's part of [`serve`], once the sessions' runtime is ready: starts the server,
/// binds, prints the start-up lines and serves until `shutdown`.
async fn serve_with(
    args: ServeArgs,
    started: Started,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Started {
        runtime,
        sessions,
        network_limits,
        images,
        tls,
    } = started;
    let mut config = ServerConfig::new(args.data_dir.clone());
    config.store = args.store.location()?;
    config.migrate = !args.no_migrate;
    config.replica = args.replica.clone();
    config.listen = args.listen;
    config.jwt_secret = args.jwt_secret;
    config.jwt_public_key = args.jwt_public_key;
    config.jwt_jwks = args.jwt_jwks;
    config.jwt_issuer = args.jwt_issuer;
    config.jwt_audience = args.jwt_audience;
    config.rate_lifecycle = args.rate_lifecycle;
    config.rate_session = args.rate_session;
    config.tenant_max_sessions = args.tenant_max_sessions;
    config.tenant_max_memory_mb = args.tenant_max_memory_mb;
    config.max_sessions = args.max_sessions;
    config.ports = hutch_server::PortsConfig {
        preview_domain: args.preview_domain,
        max_connections: args.port_connections_max,
    };
    // A context comes back into a session through the file API's archive upload, which
    // takes at most --max-upload-mb: a larger context could be saved but never restored.
    let context_max_mb = args.context_max_mb.min(args.max_upload_mb);
    if context_max_mb < args.context_max_mb {
        tracing::warn!(
            context_max_mb = args.context_max_mb,
            max_upload_mb = args.max_upload_mb,
            "a storage context holds at most --max-upload-mb of files (it is restored through the file API)"
        );
    }
    config.storage = hutch_server::StorageLimits {
        context_max_bytes: context_max_mb.saturating_mul(1 << 20),
        tenant_max_bytes: args.tenant_contexts_max_mb.saturating_mul(1 << 20),
        tenant_max_contexts: args.tenant_max_contexts,
    };
    config.blob_store = args.blob_store.map(|s3| hutch_server::S3Config {
        endpoint: args.blob_store_endpoint,
        region: args.blob_store_region,
        ..s3
    });
    config.destroy_on_exit = args.on_exit == "destroy";
    config.network = network_limits;
    config.agent_timeout = args.agent_timeout;
    config.orphan_grace = args.orphan_grace;
    config.auto_pause_default = args.auto_pause_idle.map(|idle| hutch_api::AutoPause {
        idle_seconds: idle.as_secs().max(1),
        keep_awake: false,
    });
    config.connections = hutch_server::ConnectionLimits {
        max_connections: args.max_connections,
        max_per_client: args.max_connections_per_client,
        header_timeout: args.header_timeout,
    };
    config.upgraded_idle_timeout = args.websocket_idle_timeout;
    config.images = images;
    config.disk_reserve_mb = args.disk_reserve_mb;
    // A signal while the store opens (which may wait seconds for a database) stops the
    // start there; the caller then cleans up as after serving.
    let shutdown = shutdown.shared();
    let server = tokio::select! {
        server = Server::start(config, sessions) => server.context("starting the server")?,
        () = shutdown.clone() => {
            tracing::info!("stopped while starting");
            return Ok(());
        }
    };
    if let Some(runtime) = &runtime {
        runtime.start_pool();
    }

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    println!(
        "hutch {} listening on {scheme}://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    if let Some(token) = server.startup_token() {
        print!(
            "{}",
            try_lines(token, scheme, addr, args.tls_cert.as_deref())
        );
    }
    match &tls {
        Some(tls) => server.serve_tls_until(listener, tls, shutdown).await,
        None => server.serve_until(listener, shutdown).await,
    }
    .context("serving")
}

/// The image store's settings from the registry and image options.
fn images_config(args: &ServeArgs, uid_base: u32) -> anyhow::Result<hutch_server::ImagesConfig> {
    let mut registries = hutch_image::RegistryConfig::default();
    for mirror in &args.registry_mirror {
        registries.add_mirror(mirror)?;
    }
    registries
        .plain_http
        .extend(args.insecure_registry.iter().cloned());
    registries.allowed = args
        .allowed_registries
        .as_ref()
        .map(|allowed| allowed.iter().map(|r| r.trim().to_owned()).collect());
    if let Some(path) = &args.registry_auth {
        registries.load_credentials(path)?;
    }
    Ok(hutch_server::ImagesConfig {
        registries,
        cache_bytes: args.image_cache_gb.saturating_mul(1 << 30),
        import_max_bytes: args.image_import_max_mb.saturating_mul(1 << 20),
        managers: match args.image_managers {
            ImageManagersArg::Admins => hutch_server::ImageManagers::Admins,
            ImageManagersArg::Tenants => hutch_server::ImageManagers::Tenants,
        },
        uid_base,
        id_count: hutch_sandbox::linux::UID_COUNT,
        tenant_max_snapshots: args.tenant_max_snapshots,
    })
}

/// The start-up token and a request that uses it, as lines that work when pasted into a shell.
fn try_lines(token: &str, scheme: &str, addr: SocketAddr, tls_cert: Option<&Path>) -> String {
    // `--cacert` makes curl trust a self-signed certificate (one a CA signed needs no option).
    let cacert = tls_cert
        .map(|cert| std::fs::canonicalize(cert).unwrap_or_else(|_| cert.to_owned()))
        .map(|cert| format!("--cacert '{}' ", cert.display()))
        .unwrap_or_default();
    format!(
        "token for tenant \"default\" (valid 24h); to try it, paste:\n  \
         export TOKEN={token}\n  \
         curl {cacert}-H \"Authorization: Bearer $TOKEN\" {scheme}://{addr}/v1/sessions\n"
    )
}

#[cfg(test)]
mod tests {
    use clap::Args;

    use super::{MigrateArgs, ServeArgs, StoreArgs, default_worker_threads, migrate_main};

    #[test]
    fn request_threads_default_to_half_the_cpus() {
        assert_eq!(default_worker_threads(1), 1);
        assert_eq!(default_worker_threads(2), 1);
        assert_eq!(default_worker_threads(3), 1);
        assert_eq!(default_worker_threads(8), 4);
    }

    /// `hutch migrate` without `--store` creates and migrates the SQLite database of the
    /// data directory, and running it again changes nothing.
    #[test]
    fn migrate_brings_a_sqlite_store_up_to_date() {
        let dir = tempfile::tempdir().unwrap();
        let args = || MigrateArgs {
            data_dir: dir.path().join("data"),
            store: StoreArgs { url: None },
        };
        migrate_main(args()).unwrap();
        let db = dir.path().join("data").join(hutch_server::DATABASE_FILE);
        assert!(db.exists());
        migrate_main(args()).unwrap();
        let refused = migrate_main(MigrateArgs {
            data_dir: dir.path().to_owned(),
            store: StoreArgs {
                url: Some("mysql://db/hutch".to_owned()),
            },
        });
        assert!(refused.is_err());
    }

    /// Every option of `hutch serve`, read from its clap definition, has its row in the
    /// option table of docs/operations.md, naming its environment variable.
    #[test]
    fn every_serve_option_is_in_the_operations_guide() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/operations.md");
        let guide = std::fs::read_to_string(path).unwrap();
        let rows: Vec<&str> = guide.lines().filter(|l| l.starts_with("| `--")).collect();
        let serve = ServeArgs::augment_args(clap::Command::new("serve"));
        let mut undocumented = Vec::new();
        for arg in serve.get_arguments() {
            let Some(long) = arg.get_long() else {
                continue;
            };
            let start = format!("| `--{long}");
            let row = rows.iter().find(|row| {
                row.strip_prefix(&start)
                    .is_some_and(|rest| rest.starts_with([' ', '`']))
            });
            match (row, arg.get_env()) {
                (None, _) => undocumented.push(format!("--{long}")),
                (Some(row), Some(env))
                    if !row.contains(&format!("`{}`", env.to_string_lossy())) =>
                {
                    undocumented.push(format!("--{long} (its variable {})", env.to_string_lossy()));
                }
                _ => {}
            }
        }
        assert!(
            undocumented.is_empty(),
            "options missing from the table in docs/operations.md: {undocumented:?}"
        );
    }
}
