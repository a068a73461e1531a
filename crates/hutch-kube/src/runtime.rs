//! [`KubernetesRuntime`]: sessions as pods.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use futures_util::StreamExt;
use hutch_sandbox::{
    AgentConnection, Deaths, Runtime, RuntimeData, SandboxError, SandboxRecord, SandboxSpec,
};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy as KubeNetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions, WatchEvent,
    WatchParams,
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::objects::{
    self, POOL_LABEL, REPLICA_ANNOTATION, SANDBOX_LABEL, SESSION_LABEL, TOKEN_KEY,
};
use crate::{KubeConfig, client_preface};

/// How long one connection to an agent may take (TCP and the preface).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Most distinct configurations the warm pool keeps pods for.
const POOL_KEYS: usize = 8;
/// The longest a single watch request lasts before it is renewed.
const WATCH_SECONDS: u32 = 60;
/// Most pods of other control planes' sessions this one keeps reaching details of (each
/// is looked up again when next used after it was forgotten).
const REACHED_MAX: usize = 4096;

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

fn is_conflict(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 409)
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
    /// The namespace of the pod (absent from records written before it was kept: the
    /// runtime's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
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
    /// Sessions' pods this process created or adopted (their deaths are its to report), by
    /// session id.
    live: Mutex<HashMap<Uuid, Live>>,
    /// Sessions' pods another control plane created, reached on demand ([`Inner::lookup`]):
    /// at most [`REACHED_MAX`], forgotten when the pod ends, is destroyed, or stops answering.
    /// Their deaths are their owners' to report.
    reached: Mutex<HashMap<Uuid, Live>>,
    /// The replicas sharing the cluster, as the server last told ([`Runtime::replicas`]).
    replicas: Mutex<Option<Replicas>>,
    /// Whether removing dead replicas' warm pods runs now, and whether another pass is owed.
    pools_sweeping: AtomicBool,
    pools_owed: AtomicBool,
    /// Warm pods by configuration, and the configuration they were made for.
    pool: Mutex<HashMap<String, (SandboxSpec, VecDeque<Live>)>>,
    died: Mutex<Option<mpsc::UnboundedSender<Uuid>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What the server last said about the replicas sharing the cluster.
struct Replicas {
    /// This process's replica id.
    me: String,
    /// The ids of the replicas alive (their lease holds).
    live: HashSet<String>,
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
    meta_label(&pod.metadata, key)
}

fn meta_label(meta: &ObjectMeta, key: &str) -> Option<Uuid> {
    meta.labels.as_ref()?.get(key)?.parse().ok()
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
            reached: Mutex::new(HashMap::new()),
            replicas: Mutex::new(None),
            pools_sweeping: AtomicBool::new(false),
            pools_owed: AtomicBool::new(false),
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
            let mut secret = objects::secret(&self.config, sandbox, session, &token);
            self.mark(&mut secret.metadata);
            self.secrets
                .create(&PostParams::default(), &secret)
                .await
                .map_err(|err| api_error("creating a secret", err))?;
            let mut policy = objects::network_policy(
                &self.config,
                sandbox,
                session,
                if session.is_some() {
                    spec.network.as_ref()
                } else {
                    None
                },
            )?;
            self.mark(&mut policy.metadata);
            self.policies
                .create(&PostParams::default(), &policy)
                .await
                .map_err(|err| api_error("creating a network policy", err))?;
            let mut pod = objects::pod(&self.config, sandbox, session, pool, spec)?;
            self.mark(&mut pod.metadata);
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

    /// Annotates an object about to be made with this process's replica id, once known.
    fn mark(&self, meta: &mut ObjectMeta) {
        if let Some(replicas) = lock(&self.replicas).as_ref() {
            meta.annotations
                .get_or_insert_with(BTreeMap::new)
                .insert(REPLICA_ANNOTATION.to_owned(), replicas.me.clone());
        }
    }

    /// Whether a live replica other than this process made the object: it may be creating
    /// it, keep it warm, or serve its session, and no sweep here removes it.
    fn made_by_live_other(&self, meta: &ObjectMeta) -> bool {
        let Some(replica) = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(REPLICA_ANNOTATION))
        else {
            return false;
        };
        lock(&self.replicas)
            .as_ref()
            .is_some_and(|r| *replica != r.me && r.live.contains(replica))
    }

    /// Whether this process made or serves sandbox `sandbox` (a session's pod, one it is
    /// creating, or a warm one).
    fn holds(&self, sandbox: Uuid) -> bool {
        lock(&self.live).values().any(|l| l.sandbox == sandbox)
            || lock(&self.pool)
                .values()
                .any(|(_, pods)| pods.iter().any(|w| w.sandbox == sandbox))
    }

    /// The credential in Secret `name`, which must be sandbox `sandbox`'s; `None` when it is
    /// missing or not that sandbox's.
    async fn token(&self, name: &str, sandbox: Uuid) -> Result<Option<String>, SandboxError> {
        let Some(secret) = self
            .secrets
            .get_opt(name)
            .await
            .map_err(|err| api_error("reading a secret", err))?
        else {
            return Ok(None);
        };
        if meta_label(&secret.metadata, SANDBOX_LABEL) != Some(sandbox) {
            return Ok(None);
        }
        Ok(secret
            .data
            .as_ref()
            .and_then(|data| data.get(TOKEN_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok()))
    }

    /// Finds the running pod of session `id`, made by another control plane, by the
    /// session's label in this runtime's namespace, with the credential of its own Secret.
    async fn lookup(&self, id: Uuid) -> Result<Live, SandboxError> {
        let selector = format!("{},{SESSION_LABEL}={id}", objects::managed_selector());
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|err| api_error("listing pods", err))?;
        let pod = match pods.items.as_slice() {
            [] => return Err(SandboxError::Gone(id)),
            [pod] => pod,
            more => {
                return Err(SandboxError::Record(format!(
                    "{} pods carry the label of session {id}",
                    more.len()
                )));
            }
        };
        let Some(sandbox) = label(pod, SANDBOX_LABEL) else {
            return Err(SandboxError::Record(format!(
                "the pod of session {id} has no sandbox label"
            )));
        };
        let name = objects::object_name(sandbox);
        if pod.metadata.name.as_deref() != Some(name.as_str()) {
            return Err(SandboxError::Record(format!(
                "the pod of session {id} is not named after its sandbox"
            )));
        }
        if ended(pod) || pod_phase(pod) != Some("Running") {
            return Err(SandboxError::Gone(id));
        }
        let ip = pod_ip(pod).ok_or(SandboxError::Gone(id))?;
        let token = self
            .token(&name, sandbox)
            .await?
            .ok_or(SandboxError::Gone(id))?;
        Ok(Live::new(sandbox, ip, token))
    }

    /// The pod of session `id`: this process's own (`true`), or one of another control
    /// plane's, remembered or looked up (`false`).
    async fn find(&self, id: Uuid) -> Result<(Live, bool), SandboxError> {
        if let Some(live) = lock(&self.live).get(&id).cloned() {
            return Ok((live, true));
        }
        if let Some(live) = lock(&self.reached).get(&id).cloned() {
            return Ok((live, false));
        }
        let live = self.lookup(id).await?;
        let mut reached = lock(&self.reached);
        if reached.len() >= REACHED_MAX
            && !reached.contains_key(&id)
            && let Some(any) = reached.keys().next().copied()
        {
            reached.remove(&any);
        }
        reached.insert(id, live.clone());
        Ok((live, false))
    }

    /// Forgets the pod of another control plane's session `id`, if it is still `sandbox`.
    fn forget_reached(&self, id: Uuid, sandbox: Uuid) {
        let mut reached = lock(&self.reached);
        if reached.get(&id).is_some_and(|l| l.sandbox == sandbox) {
            reached.remove(&id);
        }
    }

    /// Deletes a pod as it was listed, then its Secret and NetworkPolicy: a pod changed
    /// since (a warm pod claimed by its replica meanwhile) is left, and `false` returned.
    async fn delete_unchanged(&self, pod: &Pod, sandbox: Uuid) -> Result<bool, SandboxError> {
        let name = objects::object_name(sandbox);
        let params = DeleteParams::default()
            .grace_period(0)
            .preconditions(Preconditions {
                resource_version: pod.metadata.resource_version.clone(),
                uid: pod.metadata.uid.clone(),
            });
        match self.pods.delete(&name, &params).await {
            Ok(_) => {}
            Err(err) if is_not_found(&err) => {}
            Err(err) if is_conflict(&err) => return Ok(false),
            Err(err) => return Err(api_error("deleting a pod", err)),
        }
        self.delete_objects(sandbox).await?;
        Ok(true)
    }

    /// Whether the sweep keeps pod `pod` of sandbox `sandbox`: a known session's, one this
    /// process holds, a warm pod of this process, or one a live other replica made.
    fn keeps(&self, pod: &Pod, sandbox: Uuid, known: &HashSet<Uuid>) -> bool {
        let pool = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(POOL_LABEL));
        let wanted = match (label(pod, SESSION_LABEL), pool) {
            (Some(session), _) => known.contains(&session),
            (None, Some(pool)) => *pool == self.instance,
            (None, None) => false,
        };
        wanted || self.holds(sandbox) || self.made_by_live_other(&pod.metadata)
    }

    /// Removes the warm pods of replicas no longer alive (and of earlier processes of this
    /// one), with their Secrets and NetworkPolicies; the sandbox ids removed.
    async fn sweep_dead_pools(&self) -> Result<Vec<Uuid>, SandboxError> {
        let selector = format!("{},{POOL_LABEL}", objects::managed_selector());
        let pods = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|err| api_error("listing pods", err))?;
        let mut swept = Vec::new();
        for pod in &pods.items {
            let Some(sandbox) = label(pod, SANDBOX_LABEL) else {
                continue;
            };
            // A claimed pod loses its pool label as it gains its session's: never both.
            if label(pod, SESSION_LABEL).is_some() {
                continue;
            }
            if !self.keeps(pod, sandbox, &HashSet::new())
                && self.delete_unchanged(pod, sandbox).await?
            {
                swept.push(sandbox);
            }
        }
        Ok(swept)
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
                namespace: Some(self.config.namespace.clone()),
            })?,
        })
    }

    /// A pod went away or ended: the session it served is gone (unless it is being
    /// destroyed), a warm pod leaves the pool. Only the sessions of this process's own pods
    /// (created or adopted) are reported.
    fn pod_ended(&self, pod: &Pod) {
        let Some(sandbox) = label(pod, SANDBOX_LABEL) else {
            return;
        };
        for (_, pods) in lock(&self.pool).values_mut() {
            pods.retain(|warm| warm.sandbox != sandbox);
        }
        // Another control plane's session: its owner reports the death.
        lock(&self.reached).retain(|_, reached| reached.sandbox != sandbox);
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
        lock(&self.inner.reached).remove(&record.id);
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
        let Some(token) = inner.token(&data.secret, record.sandbox_id).await? else {
            return Ok(false);
        };
        let live = Live::new(record.sandbox_id, ip, token);
        if inner.dial(&live).await.is_err() {
            return Ok(false);
        }
        // Its death is this process's to report from now on.
        lock(&inner.reached).remove(&record.id);
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
            if inner.keeps(pod, sandbox, known) || !inner.delete_unchanged(pod, sandbox).await? {
                keep.insert(sandbox);
            } else {
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
            // A pod still being created has its Secret first: spare those of a live replica.
            .filter(|meta| !inner.made_by_live_other(meta))
            .filter_map(|meta| meta_label(meta, SANDBOX_LABEL))
            .filter(|sandbox| !keep.contains(sandbox) && !swept.contains(sandbox))
            .collect();
        for sandbox in orphans {
            // And this process's own.
            if inner.holds(sandbox) {
                continue;
            }
            inner.delete_objects(sandbox).await?;
            swept.push(sandbox);
        }
        Ok(swept)
    }

    async fn replicas(&self, me: &str, live: &[String]) {
        let live: HashSet<String> = live.iter().cloned().collect();
        let departed = {
            let mut replicas = lock(&self.inner.replicas);
            let departed = replicas
                .as_ref()
                .is_some_and(|before| before.live.iter().any(|r| !live.contains(r)));
            *replicas = Some(Replicas {
                me: me.to_owned(),
                live,
            });
            departed
        };
        if departed {
            self.inner.pools_owed.store(true, Ordering::Release);
        }
        if !self.inner.pools_owed.load(Ordering::Acquire)
            || self.inner.pools_sweeping.swap(true, Ordering::AcqRel)
        {
            return;
        }
        // In the background: the server's heartbeat does not wait for the cluster.
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            inner.pools_owed.store(false, Ordering::Release);
            match inner.sweep_dead_pools().await {
                Ok(swept) => {
                    for sandbox in swept {
                        tracing::info!(%sandbox, "removed a warm pod of a replica that died");
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "removing warm pods of dead replicas");
                    inner.pools_owed.store(true, Ordering::Release);
                }
            }
            inner.pools_sweeping.store(false, Ordering::Release);
        });
    }

    fn reaches(&self, record: &SandboxRecord) -> bool {
        // Every control plane on the cluster reaches every pod of its namespace.
        record.runtime.decode::<PodData>().is_ok_and(|data| {
            data.namespace
                .is_none_or(|namespace| namespace == self.inner.config.namespace)
        })
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        let (live, owned) = self.inner.find(id).await?;
        match self.inner.dial(&live).await {
            Ok(stream) => Ok(Box::new(stream)),
            Err(err) => {
                // Looked up again next time: the pod may have ended unseen.
                if !owned {
                    self.inner.forget_reached(id, live.sandbox);
                }
                Err(err)
            }
        }
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
        let sandbox = self.inner.find(id).await?.0.sandbox;
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
