//! The hutch control plane: authentication, tenants, the sessions store, the TTL reaper, and
//! the proxy to each session's agent.
//!
//! [`Server::start`] opens the store, loads the token secret, recovers from a previous crash
//! and starts the background tasks; [`Server::serve`] then answers HTTP until ctrl-c or
//! SIGTERM. [`Server::app`] gives the [`axum::Router`] for tests that drive it without a
//! socket.
//!
//! The server reaches sandboxes only through [`hutch_sandbox::Runtime`]: it makes no system
//! calls and knows nothing of processes or files inside a session. Everything under
//! `/v1/sessions/{id}/…` other than the session routes themselves is the agent's API, relayed
//! as is.
//!
//! Module map: `api` routes and handlers · `auth` tokens · `error` the error
//! envelope · `extract` JSON and path extractors · `validate` request checks · `sessions` the
//! engine (create, delete, reaper, died watcher, recovery) · `store` all SQL · `proxy` the
//! relay to agents · `openapi` the API contract (`/v1/openapi.json`, `/docs`) · `metrics`
//! Prometheus metrics (`/metrics`) · `bounds` limits on the request head · `ratelimit`
//! per-tenant rate limits · `storage` storage contexts and their transfers, `storage_api`
//! their routes · `ports` ports reached from outside and preview links · `images` the OCI
//! image store, pulls and snapshot names, `images_api` their routes · `tls` TLS on the
//! listener · `mcp` the MCP endpoint (`/v1/mcp`) · `console` the web console (`/console/`) and its
//! cookie login.

// Tests may unwrap; the non-test build is still checked for it.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod api;
pub mod auth;
mod bounds;
mod clock;
mod connections;
pub mod console;
mod disk_reserve;
mod error;
mod extract;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod images;
mod images_api;
mod mcp;
mod metrics;
pub mod openapi;
mod ports;
mod proxy;
mod ratelimit;
mod sessions;
mod storage;
mod storage_api;
mod store;
mod tls;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_contract;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use uuid::Uuid;

pub use auth::{AuthError, JwtSecret, MintOptions, SecretSource, TokenPolicy};
pub use connections::{
    ConnectionLimits, DEFAULT_HEADER_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
};
pub use error::ApiError;
pub use images::{ImageError, ImageManagers, Images, ImagesConfig};
pub use ports::PortsConfig;
pub use ratelimit::{
    DEFAULT_RATE_LIFECYCLE, DEFAULT_RATE_SESSION, Period, RateLimit, RateLimitParseError,
};
pub use sessions::{NetworkLimits, RecoverySummary, SessionError};
pub use storage::archive::ArchiveError;
pub use storage::s3::{BlobStoreUrlError, S3Config};
pub use storage::{StorageLimits, TransferError};
pub use store::scratch::ScratchPostgres;
pub use store::{POSTGRES_TIMEOUT, StoreError, StoreLocation};
pub use tls::{Tls, TlsError};

use auth::Verifier;
use sessions::Sessions;

/// Address `hutch serve` listens on by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";
/// Most sessions alive at once by default.
pub const DEFAULT_MAX_SESSIONS: usize = 1000;
/// Most sessions of one tenant at once by default.
pub const DEFAULT_TENANT_MAX_SESSIONS: usize = 100;
/// Most `memoryMb`, summed over one tenant's sessions, by default (64 GiB).
pub const DEFAULT_TENANT_MAX_MEMORY_MB: u64 = 65_536;
/// How often the TTL reaper looks for expired sessions by default.
pub const DEFAULT_REAPER_INTERVAL: Duration = Duration::from_millis(200);
/// How often the reaper looks for sessions idle long enough to pause themselves.
const AUTO_PAUSE_INTERVAL: Duration = Duration::from_secs(1);
/// How long after a failed sweep of left-over sandboxes (after a server process sharing the
/// runtime died) the next is tried.
const SWEEP_RETRY_INTERVAL: Duration = Duration::from_secs(30);
/// How long an agent may leave a request without an answer's head before it is probed, and
/// then how long the probe may wait, by default.
pub const DEFAULT_AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a sandbox outlives its session's expiry, by default, when no server destroys it
/// (the server stopped and did not come back).
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(300);
/// How long an upgraded connection (a WebSocket) may stay idle by default.
pub const DEFAULT_UPGRADED_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
/// How often unused image layers are collected (deletes also collect at once).
pub const IMAGE_COLLECT_INTERVAL: Duration = Duration::from_secs(600);
/// MiB kept free on the data directory's file system by default.
pub const DEFAULT_DISK_RESERVE_MB: u64 = 1024;
/// Name of the database file inside the data directory.
pub const DATABASE_FILE: &str = "hutch.db";
/// Directory of storage context content inside the data directory.
pub const CONTEXTS_DIR: &str = "contexts";

/// Applies the pending migrations of the store at `location` (`hutch migrate`).
pub async fn migrate(location: &StoreLocation) -> Result<(), StoreError> {
    let store = store::Store::open(location, true).await?;
    store.close().await;
    Ok(())
}

/// How to run the control plane.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where [`Server::run`] listens.
    pub listen: SocketAddr,
    /// Directory of the database and the generated token secret; created if missing.
    pub data_dir: PathBuf,
    /// Where the sessions store is: `None` for SQLite in `{data_dir}/hutch.db` (the default),
    /// or a PostgreSQL database that several replicas may share.
    pub store: Option<StoreLocation>,
    /// This server's name among those sharing one store: every `/metrics` series carries it as
    /// the `replica` label. `None`: no label.
    pub replica: Option<String>,
    /// Whether pending store migrations are applied at start (otherwise the schema must be up
    /// to date: `hutch migrate`).
    pub migrate: bool,
    /// HS256 secret; when `None` one is kept in `{data_dir}/jwt-secret`.
    pub jwt_secret: Option<String>,
    /// Most sessions alive at once (in any state); past it creates answer 503 `capacity`.
    pub max_sessions: usize,
    /// How often the TTL reaper runs.
    pub reaper_interval: Duration,
    /// Whether an orderly shutdown destroys every session (otherwise they keep running for
    /// the next start to re-adopt).
    pub destroy_on_exit: bool,
    /// A PEM file with one RSA or P-256 public key: RS256 or ES256 tokens signed with it are
    /// accepted besides HS256 ones.
    pub jwt_public_key: Option<PathBuf>,
    /// A JWKS file of RSA and P-256 public keys, picked by a token's `kid`.
    pub jwt_jwks: Option<PathBuf>,
    /// When set, every token needs this `iss`.
    pub jwt_issuer: Option<String>,
    /// When set, every token needs an `aud` naming this.
    pub jwt_audience: Option<String>,
    /// Per-tenant limit on the session routes (create, list, get, update, delete).
    pub rate_lifecycle: RateLimit,
    /// Per-tenant limit on everything proxied into a session.
    pub rate_session: RateLimit,
    /// Most sessions of one tenant at once (in any state); past it creates answer 429
    /// `quota_exceeded`.
    pub tenant_max_sessions: usize,
    /// Most `memoryMb` summed over one tenant's sessions; past it creates answer 429
    /// `quota_exceeded`.
    pub tenant_max_memory_mb: u64,
    /// Bounds on storage contexts (sizes per context and per tenant, count per tenant).
    pub storage: StorageLimits,
    /// Where storage contexts' content is kept: `None`, files under the data directory;
    /// `Some`, objects in an S3-compatible bucket.
    pub blob_store: Option<S3Config>,
    /// How ports inside sessions are reached from outside (preview domain, connections).
    pub ports: PortsConfig,
    /// What the operator allows sessions on the network.
    pub network: NetworkLimits,
    /// While a proxied request waits for its answer's head, the agent's `/health` is probed
    /// this often; a probe unanswered this long answers the request 504 `sandbox_timeout`.
    pub agent_timeout: Duration,
    /// How long a sandbox outlives its session's expiry when no server destroys it: past
    /// that, its agent ends it.
    pub orphan_grace: Duration,
    /// The auto-pause of sessions created without `autoPause`; `None`: they never pause
    /// themselves.
    pub auto_pause_default: Option<hutch_api::AutoPause>,
    /// Bounds on the connections held (in all, per client address) and on the time to send
    /// a request's head.
    pub connections: ConnectionLimits,
    /// How long an upgraded connection (a WebSocket) may carry nothing in either direction
    /// before it is closed.
    pub upgraded_idle_timeout: Duration,
    /// The image store: registries, cache bound, who manages images.
    pub images: ImagesConfig,
    /// MiB that must stay free on the data directory's file system: below it, creates,
    /// storage transfers and image pulls answer 507 `disk_full`.
    pub disk_reserve_mb: u64,
}

impl ServerConfig {
    /// Where the sessions store is: [`ServerConfig::store`], or SQLite in the data directory.
    pub fn store_location(&self) -> StoreLocation {
        self.store
            .clone()
            .unwrap_or_else(|| StoreLocation::Sqlite(self.data_dir.join(DATABASE_FILE)))
    }

    /// The defaults, with data in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7420)),
            data_dir: data_dir.into(),
            store: None,
            replica: None,
            migrate: true,
            jwt_secret: None,
            max_sessions: DEFAULT_MAX_SESSIONS,
            reaper_interval: DEFAULT_REAPER_INTERVAL,
            destroy_on_exit: false,
            jwt_public_key: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            rate_lifecycle: DEFAULT_RATE_LIFECYCLE,
            rate_session: DEFAULT_RATE_SESSION,
            tenant_max_sessions: DEFAULT_TENANT_MAX_SESSIONS,
            tenant_max_memory_mb: DEFAULT_TENANT_MAX_MEMORY_MB,
            storage: StorageLimits::default(),
            blob_store: None,
            ports: PortsConfig::default(),
            network: NetworkLimits::default(),
            agent_timeout: DEFAULT_AGENT_TIMEOUT,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            auto_pause_default: None,
            connections: ConnectionLimits::default(),
            upgraded_idle_timeout: DEFAULT_UPGRADED_IDLE_TIMEOUT,
            images: ImagesConfig::default(),
            disk_reserve_mb: DEFAULT_DISK_RESERVE_MB,
        }
    }
}

/// Why the server could not start or stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The data directory could not be created.
    #[error("creating the data directory {path}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The token secret could not be loaded or created, or the start-up token minted.
    #[error("setting up authentication")]
    Auth(#[from] AuthError),
    /// The store failed.
    #[error("the sessions store failed")]
    Store(#[from] StoreError),
    /// The image store could not be opened.
    #[error("opening the image store")]
    Images(#[from] ImageError),
    /// The blob store of storage contexts could not be opened or did not answer.
    #[error("opening the storage contexts' blob store {location}")]
    BlobStore {
        /// Where it is.
        location: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// Binding the listen address failed.
    #[error("listening on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Accepting or serving connections failed.
    #[error("serving HTTP")]
    Serve(#[source] io::Error),
}

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    /// The session engine.
    pub(crate) sessions: Arc<Sessions>,
    /// Checks bearer tokens.
    pub(crate) verifier: Arc<Verifier>,
    /// Set once start-up (recovery) is done.
    pub(crate) ready: Arc<AtomicBool>,
    /// Per-tenant rate limits.
    pub(crate) limits: Arc<ratelimit::RateLimiters>,
    /// This server's Prometheus metrics.
    pub(crate) metrics: metrics::Metrics,
    /// Ports reached from outside and their preview links.
    pub(crate) ports: Arc<ports::Ports>,
    /// How long an agent may take to answer a probe (see [`ServerConfig::agent_timeout`]).
    pub(crate) agent_timeout: Duration,
    /// How long an upgraded connection may stay idle (see
    /// [`ServerConfig::upgraded_idle_timeout`]).
    pub(crate) upgraded_idle_timeout: Duration,
    /// The image store and puller.
    pub(crate) images: Arc<Images>,
    /// The data directory's free-space reserve.
    pub(crate) disk_reserve: Arc<disk_reserve::DiskReserve>,
    /// The web console's login links and CSRF keys.
    pub(crate) console: Arc<console::Console>,
}

/// Background tasks, aborted when the server is dropped.
#[derive(Debug, Default)]
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// A started control plane.
pub struct Server {
    config: ServerConfig,
    state: AppState,
    startup_token: Option<String>,
    recovery: RecoverySummary,
    _tasks: Tasks,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("recovery", &self.recovery)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the store (SQLite, WAL, migrations), loads or creates the token secret, destroys
    /// or re-adopts the sandboxes of a previous run, sweeps leftovers, and starts the TTL
    /// reaper and the watcher of the runtime's [`deaths`](hutch_sandbox::Runtime::deaths)
    /// (sandboxes that died on their own).
    pub async fn start(
        config: ServerConfig,
        runtime: Arc<dyn hutch_sandbox::Runtime>,
    ) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let secret = auth::resolve_secret(config.jwt_secret.as_deref(), &config.data_dir)?;
        let verifier = Verifier::from_policy(
            secret.as_bytes(),
            &TokenPolicy {
                public_key: config.jwt_public_key.clone(),
                jwks: config.jwt_jwks.clone(),
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
            },
        )?;
        let startup_token = match secret.source() {
            SecretSource::Configured => None,
            SecretSource::DataDir { .. } => Some(auth::mint_token_with(
                secret.as_bytes(),
                auth::STARTUP_TOKEN_SUB,
                auth::STARTUP_TOKEN_TTL,
                false,
                &MintOptions {
                    issuer: config.jwt_issuer.clone(),
                    audience: config.jwt_audience.clone(),
                },
            )?),
        };
        if let SecretSource::DataDir {
            path,
            created: true,
        } = secret.source()
        {
            tracing::info!(path = %path.display(), "created a new token secret");
        }
        let ports = Arc::new(ports::Ports::new(&config.ports, secret.as_bytes()));
        let location = config.store_location();
        let store = store::Store::open(&location, config.migrate).await?;
        tracing::info!(store = %location.display(), kind = location.kind(), "store open");
        let store = join_replicas(
            store,
            &location,
            config.replica.as_deref(),
            runtime.process_id(),
        )
        .await?;
        let metrics = metrics::Metrics::for_replica(config.replica.as_deref());
        let runtime: Arc<dyn hutch_sandbox::Runtime> =
            Arc::new(metrics::MeteredRuntime::new(runtime, metrics.clone()));
        // Before recovery, which watches the sandboxes it adopts.
        let died = runtime.deaths();
        let blobs: Arc<dyn storage::blobs::BlobStore> = match &config.blob_store {
            None => {
                let local = storage::blobs::LocalBlobs::open(&config.data_dir.join(CONTEXTS_DIR))
                    .map_err(|source| ServerError::DataDir {
                    path: config.data_dir.join(CONTEXTS_DIR),
                    source,
                })?;
                // Replicas share the data directory: another may be writing a blob now.
                Arc::new(if store.replica().is_some() {
                    local.sparing_recent(storage::blobs::SWEEP_GRACE)
                } else {
                    local
                })
            }
            Some(s3) => Arc::new(
                storage::s3::S3Blobs::open(s3, tokio::runtime::Handle::current()).map_err(
                    |source| ServerError::BlobStore {
                        location: format!("{s3:?}"),
                        source,
                    },
                )?,
            ),
        };
        let storage = Arc::new(storage::Storage::new(store.clone(), blobs, config.storage));
        // A blob store that does not answer is reported now, not at the first transfer.
        storage
            .check_blobs()
            .await
            .map_err(|source| ServerError::BlobStore {
                location: config
                    .blob_store
                    .as_ref()
                    .map_or_else(|| CONTEXTS_DIR.to_owned(), |s3| format!("{s3:?}")),
                source,
            })?;
        // Opened before recovery: adopted sessions take their image leases again.
        let images = Arc::new(Images::open(
            &config.data_dir.join(images::IMAGES_DIR),
            config.images.clone(),
        )?);
        let sessions = Arc::new(
            Sessions::new(store, runtime, Arc::clone(&storage), config.max_sessions)
                .with_tenant_quotas(config.tenant_max_sessions, config.tenant_max_memory_mb)
                .with_network(config.network)
                .with_orphan_grace(config.orphan_grace)
                .with_auto_pause_default(config.auto_pause_default)
                .with_images(Arc::clone(&images)),
        );
        // Before recovery, whose sweep spares what live replicas made.
        tell_replicas(&sessions.store, sessions.runtime().as_ref()).await?;
        let recovery = sessions.recover().await?;
        storage.recover().await?;

        let reaper = tokio::spawn(reap_forever(Arc::clone(&sessions), config.reaper_interval));
        let watcher = tokio::spawn(watch_died(Arc::clone(&sessions), died));
        let upkeep = tokio::spawn(metrics::upkeep_forever(metrics.clone()));
        let limits = Arc::new(ratelimit::RateLimiters::new(
            config.rate_lifecycle,
            config.rate_session,
        ));
        let heartbeat = tokio::spawn(heartbeat_forever(
            sessions.store.clone(),
            Arc::clone(&limits),
            sessions.runtime(),
        ));
        let retain = tokio::spawn(ratelimit::retain_forever(
            Arc::clone(&limits),
            ratelimit::RETAIN_INTERVAL,
        ));
        let collect = tokio::spawn(collect_images_forever(
            Arc::clone(&images),
            IMAGE_COLLECT_INTERVAL,
        ));
        let state = AppState {
            sessions,
            verifier: Arc::new(verifier),
            ready: Arc::new(AtomicBool::new(true)),
            limits,
            metrics,
            ports,
            agent_timeout: config.agent_timeout,
            upgraded_idle_timeout: config.upgraded_idle_timeout,
            images,
            disk_reserve: Arc::new(disk_reserve::DiskReserve::new(
                config.data_dir.clone(),
                config.disk_reserve_mb,
            )),
            console: Arc::new(console::Console::new(
                secret.as_bytes(),
                MintOptions {
                    issuer: config.jwt_issuer.clone(),
                    audience: config.jwt_audience.clone(),
                },
            )),
        };
        Ok(Server {
            config,
            state,
            startup_token,
            recovery,
            _tasks: Tasks(vec![reaper, heartbeat, watcher, upkeep, retain, collect]),
        })
    }

    /// The router, for serving or for `oneshot` tests.
    pub fn app(&self) -> axum::Router {
        api::app(self.state.clone())
    }

    /// A token for tenant `default` (24 h, not admin) when the secret lives in the data
    /// directory, for `hutch serve` to print; `None` when the secret was configured.
    pub fn startup_token(&self) -> Option<&str> {
        self.startup_token.as_deref()
    }

    /// What crash recovery did during [`Server::start`].
    pub fn recovery(&self) -> RecoverySummary {
        self.recovery
    }

    /// The server's images: what session creation resolves an `image` with.
    pub fn images(&self) -> &Arc<Images> {
        &self.state.images
    }

    /// The configuration the server was started with.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Binds [`ServerConfig::listen`] and serves until ctrl-c or SIGTERM.
    pub async fn run(self) -> Result<(), ServerError> {
        let addr = self.config.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        self.serve(listener).await
    }

    /// Serves on `listener` until ctrl-c or SIGTERM, then finishes in-flight requests.
    ///
    /// Sandboxes are left running: the next start re-adopts them.
    pub async fn serve(self, listener: TcpListener) -> Result<(), ServerError> {
        self.serve_until(listener, shutdown_signal()).await
    }

    /// Serves on `listener` until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve_until(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving");
        }
        // Small frames (an interpreter's `control`, a stream's last event) must not wait for
        // the peer's delayed ACK: Nagle off on every connection.
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            if let Err(err) = stream.set_nodelay(true) {
                tracing::debug!(error = %err, "cannot set TCP_NODELAY");
            }
        });
        self.serve_on(listener, shutdown).await
    }

    /// Serves HTTPS (and WebSockets over TLS) on `listener` until ctrl-c or SIGTERM, then
    /// finishes in-flight requests.
    pub async fn serve_tls(self, listener: TcpListener, tls: &Tls) -> Result<(), ServerError> {
        self.serve_tls_until(listener, tls, shutdown_signal()).await
    }

    /// Serves HTTPS on `listener` until `shutdown` completes, then finishes in-flight requests.
    pub async fn serve_tls_until(
        self,
        listener: TcpListener,
        tls: &Tls,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let listener = tls::TlsListener::new(listener, tls).map_err(ServerError::Serve)?;
        self.state.ports.set_https();
        if let Ok(addr) = axum::serve::Listener::local_addr(&listener) {
            tracing::info!(%addr, "serving over TLS");
        }
        self.serve_on(listener, shutdown).await
    }

    /// Serves on any listener until `shutdown` completes, then winds down.
    async fn serve_on<L>(
        self,
        listener: L,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError>
    where
        L: axum::serve::Listener<Addr = std::net::SocketAddr>,
    {
        connections::serve(listener, self.app(), self.config.connections, shutdown).await;
        self.state.ready.store(false, Ordering::Release);
        drop(self._tasks);
        if self.config.destroy_on_exit {
            match self.state.sessions.destroy_all().await {
                Ok(n) => tracing::info!(destroyed = n, "stopped; every session was destroyed"),
                Err(err) => {
                    tracing::error!(error = %error::chain(&err), "destroying sessions at shutdown")
                }
            }
        } else {
            tracing::info!("stopped; sandboxes are left running for the next start to re-adopt");
        }
        if let Err(err) = self.state.sessions.store.leave().await {
            tracing::warn!(error = %error::chain(&err), "leaving the replicas");
        }
        self.state.sessions.store.close().await;
        Ok(())
    }
}

/// Runs the TTL reaper every `interval` (the first time one interval after start), and the
/// auto-pause pass and the take-over of dead replicas' sessions every second.
async fn reap_forever(sessions: Arc<Sessions>, interval: Duration) {
    // The first pass comes one interval after start: recovery has just dealt with what expired
    // while the server was down.
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_auto_pause = std::time::Instant::now();
    // When a sweep of left-over sandboxes that failed is tried again.
    let mut sweep_retry: Option<std::time::Instant> = None;
    loop {
        ticks.tick().await;
        if let Err(err) = sessions.reap().await {
            tracing::error!(error = %error::chain(&err), "reaper pass failed");
        }
        // Idleness is counted in seconds: one auto-pause pass a second is enough. Replicas
        // die on a lease of seconds too: their sessions are looked for as often.
        if last_auto_pause.elapsed() >= AUTO_PAUSE_INTERVAL {
            last_auto_pause = std::time::Instant::now();
            sessions.auto_pause().await;
            match sessions.take_over_dead().await {
                Ok(pass) => {
                    if pass.adopted > 0 {
                        tracing::info!(adopted = pass.adopted, "adopted sessions of dead replicas");
                    }
                    // A dead process may have left sandboxes no session holds (a create it
                    // did not finish, its warm pool); a session taken over and deleted may
                    // leave one it had half-claimed.
                    let retry = sweep_retry.is_some_and(|at| std::time::Instant::now() >= at);
                    if pass.dead_processes > 0 || pass.taken > 0 || retry {
                        sweep_retry = (!sessions.sweep_left_over().await)
                            .then(|| std::time::Instant::now() + SWEEP_RETRY_INTERVAL);
                    }
                }
                Err(err) => {
                    tracing::error!(error = %error::chain(&err), "taking over sessions of dead replicas failed")
                }
            }
        }
    }
}

/// On PostgreSQL, registers this server among the replicas sharing the store (as `replica`,
/// or a generated id, naming its runtime's `process`) with a first heartbeat, before
/// recovery; on SQLite, the store as it is.
async fn join_replicas(
    store: store::Store,
    location: &store::StoreLocation,
    replica: Option<&str>,
    process: Option<String>,
) -> Result<store::Store, ServerError> {
    if !matches!(location, store::StoreLocation::Postgres(_)) {
        return Ok(store);
    }
    let id = replica.map_or_else(|| Uuid::new_v4().to_string(), str::to_owned);
    let store = store.with_replica(&id, process);
    store.heartbeat().await?;
    tracing::info!(replica = %id, "joined the replicas of the store");
    Ok(store)
}

/// Tells the runtime which replicas are alive ([`hutch_sandbox::Runtime::replicas`]); nothing
/// without replicas.
async fn tell_replicas(
    store: &store::Store,
    runtime: &dyn hutch_sandbox::Runtime,
) -> Result<(), StoreError> {
    if let Some(me) = store.replica() {
        let live = store.live_replicas(store::now_ms()).await?;
        runtime.replicas(me, &live).await;
    }
    Ok(())
}

/// Refreshes this replica's heartbeat every [`store::replicas::HEARTBEAT_INTERVAL`], shares
/// the rate limits among the replicas alive, and tells the runtime which they are.
async fn heartbeat_forever(
    store: store::Store,
    limits: Arc<ratelimit::RateLimiters>,
    runtime: Arc<dyn hutch_sandbox::Runtime>,
) {
    if store.replica().is_none() {
        return;
    }
    let interval = store::replicas::HEARTBEAT_INTERVAL;
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(err) = store.heartbeat().await {
            tracing::warn!(error = %error::chain(&err), "replica heartbeat failed");
            continue;
        }
        match store.live_replicas(store::now_ms()).await {
            Ok(live) => {
                limits.set_replicas(u32::try_from(live.len()).unwrap_or(u32::MAX));
                if let Some(me) = store.replica() {
                    runtime.replicas(me, &live).await;
                }
            }
            Err(err) => tracing::warn!(error = %error::chain(&err), "listing the live replicas"),
        }
    }
}

/// Collects the image cache every `interval` (the first time at once).
async fn collect_images_forever(images: Arc<Images>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let images = Arc::clone(&images);
        match tokio::task::spawn_blocking(move || images.collect()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %error::chain(&err), "image collection failed"),
            Err(err) => tracing::error!(error = %err, "image collection task failed"),
        }
    }
}

/// Destroys the session of every sandbox reported dead.
async fn watch_died(sessions: Arc<Sessions>, mut died: UnboundedReceiver<Uuid>) {
    while let Some(id) = died.recv().await {
        let sessions = Arc::clone(&sessions);
        tokio::spawn(async move { sessions.sandbox_died(id).await });
    }
}

/// Listens for ctrl-c (SIGINT) and SIGTERM from this call on, and completes on the first.
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that comes while the server is still starting (its start-up lines printed, say, but
/// not yet serving) is kept, and serving then ends at once, in order, instead of the signal's
/// default action ending the process with its cgroups and warm pool left behind. Call it
/// within a Tokio runtime, as early as the process can.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        signal(kind)
            .inspect_err(|err| tracing::error!(error = %err, "cannot listen for {name}"))
            .ok()
    };
    let interrupt = listen(SignalKind::interrupt(), "ctrl-c");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    async move {
        tokio::select! {
            () = wait(interrupt) => tracing::info!("ctrl-c: shutting down"),
            () = wait(terminate) => tracing::info!("SIGTERM: shutting down"),
        }
    }
}
