//! A stand-in Kubernetes cluster for tests: no Kubernetes API server can run where hutch's
//! tests run, so this module serves the subset of the API the runtime uses, in-process, and a
//! stand-in kubelet runs each pod's agent as a local process.
//!
//! The API server ([`StandInCluster`]) keeps pods, secrets and networkpolicies in memory and
//! answers create, get, list (with equality label selectors), watch (from a resource version,
//! or the current state), merge-patch and delete (with its resource version and uid
//! preconditions), with Kubernetes' `Status` errors (404 `NotFound`, 409 `AlreadyExists`, 409
//! `Conflict`). Secrets' `stringData` becomes base64 `data` as in Kubernetes.
//!
//! The kubelet ([`kubelet`]) gives each pod its own loopback address (127.x.y.z, the pod
//! IP), writes the pod's Secret to a file for `HUTCH_AGENT_TOKEN_FILE`, starts the pod's main
//! container's command (`/hutch/hutch` is the configured local binary) listening on the pod
//! IP, reports `Running` with the IP, `Failed`/`Succeeded` when the process ends, and kills
//! the process (and everything it started) when the pod is deleted. It runs no init
//! containers and pulls no images: the pod's image is only reported back to tests.

pub mod kubelet;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::sync::broadcast;

/// The kinds of object the stand-in serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// `pods` (v1).
    Pods,
    /// `secrets` (v1).
    Secrets,
    /// `networkpolicies` (networking.k8s.io/v1).
    NetworkPolicies,
}

impl Kind {
    fn object_kind(self) -> &'static str {
        match self {
            Kind::Pods => "Pod",
            Kind::Secrets => "Secret",
            Kind::NetworkPolicies => "NetworkPolicy",
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            Kind::Pods | Kind::Secrets => "v1",
            Kind::NetworkPolicies => "networking.k8s.io/v1",
        }
    }

    fn resource(self) -> &'static str {
        match self {
            Kind::Pods => "pods",
            Kind::Secrets => "secrets",
            Kind::NetworkPolicies => "networkpolicies",
        }
    }
}

/// One change of one object, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Event {
    /// The object's kind.
    pub kind: Kind,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub change: &'static str,
    /// The resource version the change made.
    pub version: u64,
    /// The object after the change (before it, for `DELETED`, with the new version).
    pub object: Value,
}

/// Key of an object: its kind, namespace and name.
type Key = (Kind, String, String);

#[derive(Default)]
struct Objects {
    version: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change so far, for watches that start from an earlier version.
    log: Vec<Event>,
    /// Requests served, by (verb, resource): what tests check the runtime's permissions with.
    calls: BTreeMap<(String, String), u64>,
}

/// The in-memory API server's state; cheap to clone.
#[derive(Clone)]
pub struct Store {
    objects: Arc<Mutex<Objects>>,
    changes: broadcast::Sender<Event>,
}

impl Store {
    fn new() -> Store {
        Store {
            objects: Arc::new(Mutex::new(Objects::default())),
            changes: broadcast::channel(4096).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        self.objects
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a change under the lock: a new version, the log, and the watchers.
    fn change(&self, objects: &mut Objects, kind: Kind, change: &'static str, object: &mut Value) {
        objects.version += 1;
        object["metadata"]["resourceVersion"] = json!(objects.version.to_string());
        let event = Event {
            kind,
            change,
            version: objects.version,
            object: object.clone(),
        };
        objects.log.push(event.clone());
        let _ = self.changes.send(event);
    }

    /// Every change from now on (the kubelet's and tests' view).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.changes.subscribe()
    }

    /// The object `name` of `kind` in `namespace`, if it exists.
    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(&(kind, namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Every object of `kind` (any namespace).
    pub fn all(&self, kind: Kind) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// How many requests of `verb` on `resource` were served.
    pub fn calls(&self) -> BTreeMap<(String, String), u64> {
        self.lock().calls.clone()
    }

    fn count(&self, verb: &str, kind: Kind) {
        *self
            .lock()
            .calls
            .entry((kind.resource().to_owned(), verb.to_owned()))
            .or_default() += 1;
    }

    /// Replaces a pod's `status` (the kubelet's report); false when the pod is gone.
    pub fn set_pod_status(&self, namespace: &str, name: &str, status: Value) -> bool {
        let mut objects = self.lock();
        let key = (Kind::Pods, namespace.to_owned(), name.to_owned());
        let Some(mut pod) = objects.objects.get(&key).cloned() else {
            return false;
        };
        pod["status"] = status;
        self.change(&mut objects, Kind::Pods, "MODIFIED", &mut pod);
        objects.objects.insert(key, pod);
        true
    }

    /// Deletes an object as a user with `kubectl delete` would (behind the runtime's back).
    pub fn delete(&self, kind: Kind, namespace: &str, name: &str) -> Option<Value> {
        self.delete_if(kind, namespace, name, &Value::Null).ok()
    }

    /// Deletes an object if it still matches `preconditions` (`{"resourceVersion", "uid"}`,
    /// each optional): `Err(None)` when it is gone, `Err(Some(_))` with the object when it
    /// changed (Kubernetes' 409 `Conflict`).
    fn delete_if(
        &self,
        kind: Kind,
        namespace: &str,
        name: &str,
        preconditions: &Value,
    ) -> Result<Value, Option<Value>> {
        let mut objects = self.lock();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let object = objects.objects.get(&key).ok_or(None)?;
        for (field, wanted) in [("resourceVersion", "resourceVersion"), ("uid", "uid")] {
            if let Some(wanted) = preconditions[wanted].as_str()
                && object["metadata"][field].as_str() != Some(wanted)
            {
                return Err(Some(object.clone()));
            }
        }
        let mut object = objects.objects.remove(&key).ok_or(None)?;
        self.change(&mut objects, kind, "DELETED", &mut object);
        Ok(object)
    }

    fn create(&self, kind: Kind, namespace: &str, mut object: Value) -> Response {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                "metadata.name is required",
            );
        };
        let mut objects = self.lock();
        let key = (kind, namespace.to_owned(), name.clone());
        if objects.objects.contains_key(&key) {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", kind.resource()),
            );
        }
        object["kind"] = json!(kind.object_kind());
        object["apiVersion"] = json!(kind.api_version());
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["uid"] = json!(uuid::Uuid::new_v4().to_string());
        object["metadata"]["creationTimestamp"] = json!(now());
        if kind == Kind::Secrets
            && let Some(Value::Object(strings)) =
                object.as_object_mut().and_then(|o| o.remove("stringData"))
        {
            use base64::Engine;
            for (key, value) in strings {
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(value.as_str().unwrap_or_default());
                object["data"][key] = json!(encoded);
            }
        }
        if kind == Kind::Pods {
            object["status"] = json!({"phase": "Pending"});
        }
        self.change(&mut objects, kind, "ADDED", &mut object);
        objects.objects.insert(key, object.clone());
        (StatusCode::CREATED, axum::Json(object)).into_response()
    }

    fn patch(&self, kind: Kind, namespace: &str, name: &str, patch: &Value) -> Response {
        let mut objects = self.lock();
        let key = (kind, namespace.to_owned(), name.to_owned());
        let Some(mut object) = objects.objects.get(&key).cloned() else {
            return not_found(kind, name);
        };
        merge(&mut object, patch);
        self.change(&mut objects, kind, "MODIFIED", &mut object);
        objects.objects.insert(key, object.clone());
        axum::Json(object).into_response()
    }
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Value::Object(map) = target {
                for (key, value) in fields {
                    if value.is_null() {
                        map.remove(key);
                    } else {
                        merge(map.entry(key.clone()).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        })),
    )
        .into_response()
}

fn not_found(kind: Kind, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", kind.resource()),
    )
}

/// Whether `object`'s labels match an equality-based selector (`a=b,c!=d,e,!f`).
pub fn selects(selector: &str, object: &Value) -> bool {
    let labels = &object["metadata"]["labels"];
    selector
        .split(',')
        .map(str::trim)
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                labels[key.trim()].as_str() != Some(value.trim())
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                labels[key.trim()].as_str() == Some(value.trim())
            } else if let Some(key) = term.strip_prefix('!') {
                labels.get(key.trim()).is_none()
            } else {
                labels.get(term).is_some()
            }
        })
}

type Params = Query<BTreeMap<String, String>>;

async fn list_or_watch(
    store: Store,
    kind: Kind,
    namespace: String,
    params: BTreeMap<String, String>,
) -> Response {
    let selector = params.get("labelSelector").cloned().unwrap_or_default();
    let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    if !watch {
        store.count("list", kind);
        let objects = store.lock();
        let items: Vec<Value> = objects
            .objects
            .iter()
            .filter(|((k, ns, _), v)| *k == kind && *ns == namespace && selects(&selector, v))
            .map(|(_, v)| v.clone())
            .collect();
        return axum::Json(json!({
            "kind": format!("{}List", kind.object_kind()),
            "apiVersion": kind.api_version(),
            "metadata": {"resourceVersion": objects.version.to_string()},
            "items": items,
        }))
        .into_response();
    }
    store.count("watch", kind);
    let seconds: u64 = params
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
        .min(600);
    let from: u64 = params
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let wanted = move |event: &Event| {
        event.kind == kind
            && event.object["metadata"]["namespace"].as_str() == Some(namespace.as_str())
            && selects(&selector, &event.object)
    };
    // Subscribe and read the past under one lock: nothing falls between them.
    let (mut changes, past) = {
        let objects = store.lock();
        let changes = store.changes.subscribe();
        let past: Vec<Event> = if from == 0 {
            objects
                .objects
                .iter()
                .filter(|((k, _, _), _)| *k == kind)
                .map(|(_, object)| Event {
                    kind,
                    change: "ADDED",
                    version: objects.version,
                    object: object.clone(),
                })
                .collect()
        } else {
            objects
                .log
                .iter()
                .filter(|e| e.version > from)
                .cloned()
                .collect()
        };
        (changes, past)
    };
    let line = |event: &Event| {
        let mut text = json!({"type": event.change, "object": event.object}).to_string();
        text.push('\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(text))
    };
    let (send, receive) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        let mut last = 0;
        for event in past.iter().filter(|e| wanted(e)) {
            last = last.max(event.version);
            if send.send(line(event)).await.is_err() {
                return;
            }
        }
        let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let event = match tokio::time::timeout_at(end, changes.recv()).await {
                Ok(Ok(event)) => event,
                // Too slow a reader, or the end: the client lists and watches again.
                _ => return,
            };
            if event.version > last && wanted(&event) {
                last = event.version;
                if send.send(line(&event)).await.is_err() {
                    return;
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream(receive));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn tokio_stream<T: Send + 'static>(
    mut receive: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| receive.poll_recv(cx))
}

fn kind_of(resource: &str) -> Option<Kind> {
    match resource {
        "pods" => Some(Kind::Pods),
        "secrets" => Some(Kind::Secrets),
        "networkpolicies" => Some(Kind::NetworkPolicies),
        _ => None,
    }
}

async fn collection_get(
    State(store): State<Store>,
    Path((namespace, resource)): Path<(String, String)>,
    Query(params): Params,
) -> Response {
    match kind_of(&resource) {
        Some(kind) => list_or_watch(store, kind, namespace, params).await,
        None => status(StatusCode::NOT_FOUND, "NotFound", "unknown resource"),
    }
}

async fn collection_post(
    State(store): State<Store>,
    Path((namespace, resource)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let (Some(kind), Ok(object)) = (kind_of(&resource), serde_json::from_slice::<Value>(&body))
    else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "unknown resource or bad JSON",
        );
    };
    store.count("create", kind);
    store.create(kind, &namespace, object)
}

async fn object_get(
    State(store): State<Store>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
) -> Response {
    let Some(kind) = kind_of(&resource) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource");
    };
    store.count("get", kind);
    match store.get(kind, &namespace, &name) {
        Some(object) => axum::Json(object).into_response(),
        None => not_found(kind, &name),
    }
}

async fn object_delete(
    State(store): State<Store>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(kind) = kind_of(&resource) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource");
    };
    // DeleteOptions, if any: only their preconditions matter here.
    let options: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(options) => options,
            Err(_) => return status(StatusCode::BAD_REQUEST, "BadRequest", "bad JSON"),
        }
    };
    store.count("delete", kind);
    match store.delete_if(kind, &namespace, &name, &options["preconditions"]) {
        Ok(object) => axum::Json(object).into_response(),
        Err(None) => not_found(kind, &name),
        Err(Some(_)) => status(
            StatusCode::CONFLICT,
            "Conflict",
            &format!(
                "{} \"{name}\" changed: the precondition of its deletion failed",
                kind.resource()
            ),
        ),
    }
}

async fn object_patch(
    State(store): State<Store>,
    Path((namespace, resource, name)): Path<(String, String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let Some(kind) = kind_of(&resource) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "unknown resource");
    };
    let merge_patch = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/merge-patch+json"));
    let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
        return status(StatusCode::BAD_REQUEST, "BadRequest", "bad JSON");
    };
    if !merge_patch {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the stand-in API server takes merge patches only",
        );
    }
    store.count("patch", kind);
    store.patch(kind, &namespace, &name, &patch)
}

async fn pod_status(
    State(store): State<Store>,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    *store
        .lock()
        .calls
        .entry(("pods/status".to_owned(), "get".to_owned()))
        .or_default() += 1;
    match store.get(Kind::Pods, &namespace, &name) {
        Some(object) => axum::Json(object).into_response(),
        None => not_found(Kind::Pods, &name),
    }
}

/// The stand-in cluster: its API server on a loopback port, and its kubelet.
pub struct StandInCluster {
    /// Its objects.
    pub store: Store,
    address: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    kubelet: kubelet::Kubelet,
}

impl StandInCluster {
    /// Serves the stand-in API on a free loopback port and starts its kubelet, which runs
    /// pods' `/hutch/hutch` as `hutch` (the path of a local binary).
    pub async fn start(hutch: &std::path::Path) -> std::io::Result<StandInCluster> {
        let store = Store::new();
        let collection = get(collection_get).post(collection_post);
        let object = get(object_get).delete(object_delete).patch(object_patch);
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/{resource}",
                collection.clone(),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{namespace}/{resource}",
                collection,
            )
            .route(
                "/api/v1/namespaces/{namespace}/pods/{name}/status",
                get(pod_status),
            )
            .route(
                "/api/v1/namespaces/{namespace}/{resource}/{name}",
                object.clone(),
            )
            .route(
                "/apis/networking.k8s.io/v1/namespaces/{namespace}/{resource}/{name}",
                object,
            )
            .with_state(store.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let kubelet = kubelet::Kubelet::start(store.clone(), hutch.to_owned())?;
        Ok(StandInCluster {
            store,
            address,
            server,
            kubelet,
        })
    }

    /// The API server's URL (`http://127.0.0.1:port`).
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A client of the stand-in API server with `namespace` as its default.
    pub fn client(&self, namespace: &str) -> Result<kube::Client, kube::Error> {
        let url = self.url().parse().expect("a loopback URL parses");
        let mut config = kube::Config::new(url);
        config.default_namespace = namespace.to_owned();
        kube::Client::try_from(config)
    }

    /// Writes a kubeconfig naming the stand-in API server into `path` (for `hutch serve
    /// --kubeconfig`).
    pub fn write_kubeconfig(&self, path: &std::path::Path, namespace: &str) -> std::io::Result<()> {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "stand-in", "cluster": {"server": self.url()}}],
            "users": [{"name": "stand-in", "user": {}}],
            "contexts": [{"name": "stand-in", "context": {"cluster": "stand-in", "user": "stand-in", "namespace": namespace}}],
            "current-context": "stand-in",
        });
        std::fs::write(path, config.to_string())
    }

    /// The kubelet's local processes by pod name (for tests that look at them).
    pub fn kubelet(&self) -> &kubelet::Kubelet {
        &self.kubelet
    }
}

impl Drop for StandInCluster {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A [`StandInCluster`] on an async runtime of its own: for tests whose own code blocks
/// (a `hutch serve` child process started and stopped synchronously) or whose runtime is
/// single-threaded. Its API server and kubelet run on their own worker thread; dropping it
/// kills every pod's process.
pub struct BackgroundCluster {
    cluster: StandInCluster,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BackgroundCluster {
    /// Starts a stand-in cluster whose kubelet runs pods' `/hutch/hutch` as `hutch`.
    pub fn start(hutch: &std::path::Path) -> std::io::Result<BackgroundCluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stand-in-cluster")
            .enable_all()
            .build()?;
        let (sender, receiver) = std::sync::mpsc::channel();
        let hutch = hutch.to_owned();
        runtime.spawn(async move {
            let _ = sender.send(StandInCluster::start(&hutch).await);
        });
        let cluster = receiver
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| std::io::Error::other("the stand-in cluster did not start"))??;
        Ok(BackgroundCluster {
            cluster,
            runtime: Some(runtime),
        })
    }

    /// The cluster (its store, kubelet, URL and kubeconfig).
    pub fn cluster(&self) -> &StandInCluster {
        &self.cluster
    }
}

impl Drop for BackgroundCluster {
    fn drop(&mut self) {
        // The kubelet stops its pods; shutting the runtime down drops (and kills) the rest.
        self.cluster.kubelet.stop_all();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_merge_patches_follow_kubernetes() {
        let object = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(selects("a=1", &object));
        assert!(selects("a==1,b", &object));
        assert!(selects("a!=2,!c", &object));
        assert!(!selects("a=2", &object));
        assert!(!selects("c", &object));
        let mut target = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut target, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(target, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }
}
