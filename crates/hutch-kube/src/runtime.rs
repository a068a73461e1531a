//! [`KubernetesRuntime`]: sessions as pods.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use hutch_sandbox::{
    AgentConnection, Deaths, Runtime, RuntimeData, SandboxError, SandboxRecord, SandboxSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::objects::{self, POOL_LABEL, SANDBOX_LABEL, SESSION_LABEL, TOKEN_KEY};
use crate::{KubeConfig, client_preface};

/// How long one connection to an agent may take (TCP and the preface).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most distinct configurations the warm pool keeps pods for.
const POOL_KEYS: usize = 8;
/// The longest a single watch request lasts before it is renewed.
const WATCH_SECONDS: u32 = 60;

/// Why a Kubernetes call failed.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The client could not be configured (no kubeconfig, no in-cluster service account).
    #[error("kubernetes client configuration: {0}")]
    Config(String),
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Api(#[from] kube::Error),
}

impl From<KubeError> for SandboxError {
    fn from(err: KubeError) -> SandboxError {
        SandboxError::Sys {
            call: "kubernetes".to_owned(),
            source: std::io::Error::other(err.to_string()),
        }
    }
}

fn api_error(what: &str, err: kube::Error) -> SandboxError {
    SandboxError::Sys {
        call: format!("kubernetes {what}"),
        source: std::io::Error::other(err.to_string()),
    }
}

fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.is_not_found())
}

/// What a sandbox record keeps about its pod (the credential itself stays in the Secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodData {
    /// The pod's name (also its Secret's and NetworkPolicy's).
    pub pod: String,
    /// The pod's IP when it was created.
    pub pod_ip: String,
    /// The name of the Secret holding the session's credential.
    pub secret: String,
}

/// Most connections to one pod's agent this control plane has awaiting their preface at
/// once: the agent closes, unanswered, any past its own bound of 64, which would read as a
/// refusal; half of it leaves room for a second replica.
const PREFACES_MAX: usize = 32;

/// A running pod the runtime can reach.
#[derive(Clone)]
struct Live {
    sandbox: Uuid,
    ip: String,
    token: String,
    /// Permits for connections awaiting their preface ([`PREFACES_MAX`]).
    prefaces: Arc<tokio::sync::Semaphore>,
}

impl Live {
    fn new(sandbox: Uuid, ip: String, token: String) -> Live {
        Live {
            sandbox,
            ip,
            token,
            prefaces: Arc::new(tokio::sync::Semaphore::new(PREFACES_MAX)),
        }
    }
}

/// The Kubernetes runtime: see the crate's documentation.
pub struct KubernetesRuntime {
    inner: Arc<Inner>,
    watcher: tokio::task::AbortHandle,
}

struct Inner {
    config: KubeConfig,
    pods: Api<Pod>,
    secrets: Api<Secret>,
    policies: Api<KubeNetworkPolicy>,
    /// This control-plane process's id: the value of its warm pods' pool label.
    instance: String,
    /// Sessions' pods, by session id.
    live: Mutex<HashMap<Uuid, Live>>,
    /// Warm pods by configuration, and the configuration they were made for.
    pool: Mutex<HashMap<String, (SandboxSpec, VecDeque<Live>)>>,
    died: Mutex<Option<mpsc::UnboundedSender<Uuid>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The warm pool's key: what a pod's configuration is made of, but the session's identity.
fn pool_key(spec: &SandboxSpec) -> String {
    serde_json::json!({
        "image": spec.image.name(),
        "resources": spec.resources,
        "env": spec.env,
    })
    .to_string()
}

fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

fn pod_phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())
}

fn label(pod: &Pod, key: &str) -> Option<Uuid> {
    pod.metadata.labels.as_ref()?.get(key)?.parse().ok()
}

fn ended(pod: &Pod) -> bool {
    matches!(pod_phase(pod), Some("Failed" | "Succeeded"))
        || pod.metadata.deletion_timestamp.is_some()
}

impl KubernetesRuntime {
    /// A runtime using `client`; starts watching its pods at once (call from a tokio runtime).
    pub fn new(client: kube::Client, config: KubeConfig) -> KubernetesRuntime {
        let inner = Arc::new(Inner {
            pods: Api::namespaced(client.clone(), &config.namespace),
            secrets: Api::namespaced(client.clone(), &config.namespace),
            policies: Api::namespaced(client, &config.namespace),
            instance: Uuid::now_v7().simple().to_string(),
            config,
            live: Mutex::new(HashMap::new()),
            pool: Mutex::new(HashMap::new()),
            died: Mutex::new(None),
        });
        let watcher = tokio::spawn(watch_pods(Arc::downgrade(&inner))).abort_handle();
        KubernetesRuntime { inner, watcher }
    }

    /// A client from the kubeconfig at `path`, or (without one) the usual inference: the
    /// `KUBECONFIG` variable, `~/.kube/config`, then the in-cluster service account.
    pub async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, KubeError> {
        let config = match kubeconfig {
            Some(path) => {
                let file = kube::config::Kubeconfig::read_from(path)
                    .map_err(|err| KubeError::Config(err.to_string()))?;
                kube::Config::from_custom_kubeconfig(
                    file,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                .map_err(|err| KubeError::Config(err.to_string()))?
            }
            None => kube::Config::infer()
                .await
                .map_err(|err| KubeError::Config(err.to_string()))?,
        };
        kube::Client::try_from(config).map_err(KubeError::Api)
    }

    /// How many warm pods wait unclaimed, over all configurations.
    pub fn warm_pods(&self) -> usize {
        lock(&self.inner.pool)
            .values()
            .map(|(_, pods)| pods.len())
            .sum()
    }

    /// Waits (bounded by `timeout`) until the warm pool holds `count` pods.
    pub async fn wait_warm(&self, count: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.warm_pods() < count {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

impl Drop for KubernetesRuntime {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

impl Inner {
    /// Creates a sandbox's Secret, NetworkPolicy and Pod and waits until its agent answers.
    async fn start(
        self: &Arc<Self>,
        spec: &SandboxSpec,
        session: Option<Uuid>,
    ) -> Result<Live, SandboxError> {
        let sandbox = Uuid::now_v7();
        let token = new_token();
        let pool = session.is_none().then_some(self.instance.as_str());
        let made = async {
            let secret = objects::secret(&self.config, sandbox, session, &token);
            self.secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|err| api_error("creating a secret", err))?;
            let policy = objects::network_policy(
                &self.config,
                sandbox,
                session,
                if session.is_some() {
                    spec.network.as_ref()
                } else {
                    None
                },
            )?;
            self.policies
                .create(&PostParams::default(), &policy)
                .await
                .map_err(|err| api_error("creating a network policy", err))?;
            let pod = objects::pod(&self.config, sandbox, session, pool, spec)?;
            self.pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|err| api_error("creating a pod", err))?;
            let ip = self.wait_running(sandbox).await?;
            let live = Live::new(sandbox, ip, token.clone());
            self.answer(&live, Instant::now() + self.config.start_timeout)
                .await?;
            Ok(live)
        }
        .await;
        if made.is_err() {
            self.remove(sandbox).await;
        }
        made
    }

    /// Waits, through a watch, until the pod of `sandbox` runs with an IP.
    async fn wait_running(&self, sandbox: Uuid) -> Result<String, SandboxError> {
        let deadline = Instant::now() + self.config.start_timeout;
        let name = objects::object_name(sandbox);
        let selector = format!("{SANDBOX_LABEL}={sandbox}");
        let failed = |pod: &Pod| SandboxError::Start {
            id: sandbox,
            reason: format!(
                "pod {name} ended ({}) before its agent answered",
                pod_phase(pod).unwrap_or("unknown")
            ),
        };
        loop {
            let list = self
                .pods
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|err| api_error("listing pods", err))?;
            let Some(pod) = list.items.first() else {
                return Err(SandboxError::Gone(sandbox));
            };
            if ended(pod) {
                return Err(failed(pod));
            }
            if pod_phase(pod) == Some("Running")
                && let Some(ip) = pod_ip(pod)
            {
                return Ok(ip);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SandboxError::Start {
                    id: sandbox,
                    reason: format!(
                        "pod {name} did not run within {:?}",
                        self.config.start_timeout
                    ),
                });
            }
            let seconds = u32::try_from(left.as_secs().clamp(1, u64::from(WATCH_SECONDS)))
                .unwrap_or(WATCH_SECONDS);
            let version = list.metadata.resource_version.unwrap_or_default();
            let stream = self
                .pods
                .watch(
                    &WatchParams::default().labels(&selector).timeout(seconds),
                    &version,
                )
                .await
                .map_err(|err| api_error("watching pods", err))?;
            let mut stream = std::pin::pin!(stream);
            // Any change of the pod (or the watch ending) sends us back to look again.
            while let Ok(Some(event)) = tokio::time::timeout(left, stream.next()).await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        if ended(&pod) {
                            return Err(failed(&pod));
                        }
                        if pod_phase(&pod) == Some("Running") && pod_ip(&pod).is_some() {
                            break;
                        }
                    }
                    Ok(WatchEvent::Deleted(_)) => return Err(SandboxError::Gone(sandbox)),
                    Ok(WatchEvent::Bookmark(_)) => {}
                    Ok(WatchEvent::Error(_)) | Err(_) => break,
                }
            }
        }
    }

    /// Connects to a pod's agent and passes the preface.
    async fn dial(&self, live: &Live) -> Result<TcpStream, SandboxError> {
        let address = format!("{}:{}", live.ip, self.config.agent_port);
        let io = |source: std::io::Error| SandboxError::Sys {
            call: format!("connecting to the agent at {address}"),
            source,
        };
        let connect = async {
            // The semaphore is never closed; held until the preface is answered.
            let _permit = live.prefaces.acquire().await.ok();
            let mut stream = TcpStream::connect(&address).await.map_err(io)?;
            stream.set_nodelay(true).map_err(io)?;
            client_preface(&mut stream, &live.token).await.map_err(io)?;
            Ok(stream)
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(result) => result,
            Err(_) => Err(io(std::io::ErrorKind::TimedOut.into())),
        }
    }

    /// Waits until a running pod's agent accepts the preface: its process may still be
    /// starting when the pod reports Running. Polls the condition with a short backoff.
    async fn answer(&self, live: &Live, deadline: Instant) -> Result<(), SandboxError> {
        let mut pause = Duration::from_millis(5);
        loop {
            match self.dial(live).await {
                Ok(_) => return Ok(()),
                Err(err) if Instant::now() >= deadline => {
                    return Err(SandboxError::Start {
                        id: live.sandbox,
                        reason: format!("its agent did not answer: {err}"),
                    });
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// Deletes a sandbox's pod, Secret and NetworkPolicy; what is already gone is fine.
    async fn delete_objects(&self, sandbox: Uuid) -> Result<(), SandboxError> {
        let name = objects::object_name(sandbox);
        let now = DeleteParams::default().grace_period(0);
        let gone = |result: Result<(), kube::Error>, what: &str| match result {
            Err(err) if !is_not_found(&err) => Err(api_error(what, err)),
            _ => Ok(()),
        };
        gone(
            self.pods.delete(&name, &now).await.map(drop),
            "deleting a pod",
        )?;
        gone(
            self.secrets.delete(&name, &now).await.map(drop),
            "deleting a secret",
        )?;
        gone(
            self.policies.delete(&name, &now).await.map(drop),
            "deleting a network policy",
        )
    }

    /// [`Inner::delete_objects`] for clean-up paths, where a failure is only logged.
    async fn remove(&self, sandbox: Uuid) {
        if let Err(err) = self.delete_objects(sandbox).await {
            tracing::warn!(%sandbox, error = %err, "removing a sandbox's objects");
        }
    }

    /// Takes a warm pod for `spec`'s session: labels it (and its policy) as the session's and
    /// applies the session's network policy.
    async fn claim(&self, spec: &SandboxSpec) -> Option<Live> {
        let key = pool_key(spec);
        loop {
            let warm = lock(&self.pool).get_mut(&key)?.1.pop_front()?;
            let name = objects::object_name(warm.sandbox);
            let labels = serde_json::json!({"metadata": {"labels": {SESSION_LABEL: spec.id.to_string(), POOL_LABEL: null}}});
            let claimed = async {
                self.pods
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&labels))
                    .await
                    .map_err(|err| api_error("labelling a pod", err))?;
                let policy = objects::network_policy(
                    &self.config,
                    warm.sandbox,
                    Some(spec.id),
                    spec.network.as_ref(),
                )?;
                self.policies
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&policy))
                    .await
                    .map_err(|err| api_error("patching a network policy", err))?;
                self.dial(&warm).await.map(drop)
            };
            match claimed.await {
                Ok(()) => return Some(warm),
                Err(err) => {
                    tracing::warn!(sandbox = %warm.sandbox, error = %err, "a warm pod failed its claim");
                    self.remove(warm.sandbox).await;
                }
            }
        }
    }

    /// Tops the pool for `spec`'s configuration up to its size, in the background.
    fn refill(self: &Arc<Self>, spec: &SandboxSpec) {
        let size = self.config.warm_pool;
        if size == 0 {
            return;
        }
        let key = pool_key(spec);
        let missing = {
            let mut pool = lock(&self.pool);
            if !pool.contains_key(&key) && pool.len() >= POOL_KEYS {
                return;
            }
            let entry = pool
                .entry(key.clone())
                .or_insert_with(|| (spec.clone(), VecDeque::new()));
            size.saturating_sub(entry.1.len())
        };
        for _ in 0..missing {
            let inner = Arc::clone(self);
            let mut template = spec.clone();
            template.id = Uuid::nil();
            template.network = None;
            let key = key.clone();
            tokio::spawn(async move {
                match inner.start(&template, None).await {
                    Ok(live) => {
                        let pooled = match lock(&inner.pool).get_mut(&key) {
                            Some((_, pods)) if pods.len() < size => {
                                pods.push_back(live.clone());
                                true
                            }
                            _ => false,
                        };
                        if !pooled {
                            inner.remove(live.sandbox).await;
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "starting a warm pod"),
                }
            });
        }
    }

    fn record(&self, id: Uuid, live: &Live) -> Result<SandboxRecord, SandboxError> {
        let name = objects::object_name(live.sandbox);
        Ok(SandboxRecord {
            id,
            sandbox_id: live.sandbox,
            runtime: RuntimeData::encode(&PodData {
                pod: name.clone(),
                pod_ip: live.ip.clone(),
                secret: name,
            })?,
        })
    }

    /// A pod went away or ended: the session it served is gone (unless it is being
    /// destroyed), a warm pod leaves the pool.
    fn pod_ended(&self, pod: &Pod) {
        let Some(sandbox) = label(pod, SANDBOX_LABEL) else {
            return;
        };
        for (_, pods) in lock(&self.pool).values_mut() {
            pods.retain(|warm| warm.sandbox != sandbox);
        }
        let session = {
            let mut live = lock(&self.live);
            let session = live
                .iter()
                .find(|(_, l)| l.sandbox == sandbox)
                .map(|(id, _)| *id);
            if let Some(id) = session {
                live.remove(&id);
            }
            session
        };
        if let Some(id) = session
            && let Some(died) = lock(&self.died).as_ref()
        {
            let _ = died.send(id);
        }
    }
}

/// Watches every pod hutch manages and reports those that end; renews its watch for as long
/// as the runtime lives.
async fn watch_pods(inner: Weak<Inner>) {
    let selector = objects::managed_selector();
    let mut version: Option<String> = None;
    loop {
        let Some(runtime) = inner.upgrade() else {
            return;
        };
        let pods = runtime.pods.clone();
        drop(runtime);
        let current = match &version {
            Some(version) => version.clone(),
            None => match pods.list(&ListParams::default().labels(&selector)).await {
                Ok(list) => {
                    if let Some(runtime) = inner.upgrade() {
                        for pod in list.items.iter().filter(|pod| ended(pod)) {
                            runtime.pod_ended(pod);
                        }
                    }
                    list.metadata.resource_version.unwrap_or_default()
                }
                Err(err) => {
                    tracing::warn!(error = %err, "listing pods to watch them");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let params = WatchParams::default()
            .labels(&selector)
            .timeout(WATCH_SECONDS);
        let stream = match pods.watch(&params, &current).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::warn!(error = %err, "watching pods");
                version = None;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        version = Some(current);
        while let Some(event) = stream.next().await {
            let Some(runtime) = inner.upgrade() else {
                return;
            };
            match event {
                Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                    version = pod.metadata.resource_version.clone().or(version);
                    if ended(&pod) {
                        runtime.pod_ended(&pod);
                    }
                }
                Ok(WatchEvent::Deleted(pod)) => {
                    version = pod.metadata.resource_version.clone().or(version);
                    runtime.pod_ended(&pod);
                }
                Ok(WatchEvent::Bookmark(mark)) => {
                    version = Some(mark.metadata.resource_version);
                }
                Ok(WatchEvent::Error(_)) | Err(_) => {
                    // Too old a version (410) or a broken stream: list again.
                    version = None;
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        let inner = &self.inner;
        let live = match inner.claim(spec).await {
            Some(live) => live,
            None => inner.start(spec, Some(spec.id)).await?,
        };
        inner.refill(spec);
        lock(&inner.live).insert(spec.id, live.clone());
        inner.record(spec.id, &live)
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        lock(&self.inner.live).remove(&record.id);
        self.inner.delete_objects(record.sandbox_id).await
    }

    async fn adopt(&self, record: &SandboxRecord) -> Result<bool, SandboxError> {
        let data: PodData = record.runtime.decode()?;
        let inner = &self.inner;
        let Some(pod) = inner
            .pods
            .get_opt(&data.pod)
            .await
            .map_err(|err| api_error("reading a pod", err))?
        else {
            return Ok(false);
        };
        if ended(&pod) || pod_phase(&pod) != Some("Running") {
            return Ok(false);
        }
        let Some(ip) = pod_ip(&pod) else {
            return Ok(false);
        };
        let Some(secret) = inner
            .secrets
            .get_opt(&data.secret)
            .await
            .map_err(|err| api_error("reading a secret", err))?
        else {
            return Ok(false);
        };
        let Some(token) = secret
            .data
            .as_ref()
            .and_then(|data| data.get(TOKEN_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok())
        else {
            return Ok(false);
        };
        let live = Live::new(record.sandbox_id, ip, token);
        if inner.dial(&live).await.is_err() {
            return Ok(false);
        }
        lock(&inner.live).insert(record.id, live);
        Ok(true)
    }

    async fn sweep(&self, known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        let inner = &self.inner;
        let params = ListParams::default().labels(&objects::managed_selector());
        let pods = inner
            .pods
            .list(&params)
            .await
            .map_err(|err| api_error("listing pods", err))?;
        let mut keep = HashSet::new();
        let mut swept = Vec::new();
        for pod in &pods.items {
            let Some(sandbox) = label(pod, SANDBOX_LABEL) else {
                continue;
            };
            let labels = pod.metadata.labels.clone().unwrap_or_default();
            let wanted = match (label(pod, SESSION_LABEL), labels.get(POOL_LABEL)) {
                (Some(session), _) => known.contains(&session),
                (None, Some(pool)) => *pool == inner.instance,
                (None, None) => false,
            };
            if wanted {
                keep.insert(sandbox);
            } else {
                inner.delete_objects(sandbox).await?;
                swept.push(sandbox);
            }
        }
        // Secrets and policies whose pod was never made (a crash mid-create) or is gone.
        let secrets = inner
            .secrets
            .list(&params)
            .await
            .map_err(|err| api_error("listing secrets", err))?;
        let policies = inner
            .policies
            .list(&params)
            .await
            .map_err(|err| api_error("listing network policies", err))?;
        let orphans: HashSet<Uuid> = secrets
            .items
            .iter()
            .map(|s| &s.metadata)
            .chain(policies.items.iter().map(|p| &p.metadata))
            .filter_map(|meta| meta.labels.as_ref()?.get(SANDBOX_LABEL)?.parse().ok())
            .filter(|sandbox| !keep.contains(sandbox) && !swept.contains(sandbox))
            .collect();
        let warm: HashSet<Uuid> = lock(&inner.pool)
            .values()
            .flat_map(|(_, pods)| pods.iter().map(|w| w.sandbox))
            .collect();
        for sandbox in orphans {
            // A pod still being created has its Secret first: spare this process's own.
            if lock(&inner.live).values().any(|l| l.sandbox == sandbox) || warm.contains(&sandbox) {
                continue;
            }
            inner.delete_objects(sandbox).await?;
            swept.push(sandbox);
        }
        Ok(swept)
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        let live = lock(&self.inner.live)
            .get(&id)
            .cloned()
            .ok_or(SandboxError::Gone(id))?;
        Ok(Box::new(self.inner.dial(&live).await?))
    }

    fn deaths(&self) -> Deaths {
        let (died, deaths) = mpsc::unbounded_channel();
        *lock(&self.inner.died) = Some(died);
        deaths
    }

    async fn set_network(
        &self,
        record: &SandboxRecord,
        policy: &hutch_api::NetworkPolicy,
    ) -> Result<(), SandboxError> {
        let object = objects::network_policy(
            &self.inner.config,
            record.sandbox_id,
            Some(record.id),
            Some(policy),
        )?;
        self.inner
            .policies
            .patch(
                &objects::object_name(record.sandbox_id),
                &PatchParams::default(),
                &Patch::Merge(&object),
            )
            .await
            .map_err(|err| api_error("patching a network policy", err))?;
        Ok(())
    }

    async fn set_deadline(&self, id: Uuid, deadline: SystemTime) -> Result<(), SandboxError> {
        let Some(sandbox) = lock(&self.inner.live).get(&id).map(|l| l.sandbox) else {
            return Err(SandboxError::Gone(id));
        };
        let at = time::OffsetDateTime::from(deadline)
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(|err| SandboxError::InvalidSpec(err.to_string()))?;
        let patch = serde_json::json!({"metadata": {"annotations": {"hutch.dev/deadline": at}}});
        self.inner
            .pods
            .patch(
                &objects::object_name(sandbox),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|err| api_error("annotating a pod", err))?;
        Ok(())
    }

    async fn forget_image(&self, key: &str) {
        let warm: Vec<Uuid> = {
            let mut pool = lock(&self.inner.pool);
            let keys: Vec<String> = pool
                .iter()
                .filter(|(_, (spec, _))| match &spec.image {
                    hutch_sandbox::SandboxImage::Oci(oci) => oci.key == key,
                    hutch_sandbox::SandboxImage::Default => false,
                })
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter()
                .filter_map(|k| pool.remove(k))
                .flat_map(|(_, pods)| pods.into_iter().map(|w| w.sandbox))
                .collect()
        };
        for sandbox in warm {
            self.inner.remove(sandbox).await;
        }
    }
}
