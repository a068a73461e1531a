//! The Kubernetes runtime against the stand-in cluster (an in-process API server and a
//! kubelet running each pod as a local process: no Kubernetes API server can run here).
//! Needs user namespaces (the stand-in kubelet makes user, pid and mount namespaces), not root.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use hutch_kube::standin::{Kind, StandInCluster};
use hutch_kube::{KubeConfig, KubernetesRuntime, PERMISSIONS, object_name};
use hutch_sandbox::{Runtime, SandboxImage, SandboxRecord, SandboxSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const NS: &str = "sandboxes";
const WAIT: Duration = Duration::from_secs(30);

fn agent() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_hutch-kube-stand-in-agent"))
}

fn spec() -> SandboxSpec {
    let id = Uuid::now_v7();
    SandboxSpec {
        id,
        hostname: id.simple().to_string()[..12].to_owned(),
        image: SandboxImage::Default,
        resources: hutch_api::Resources::default(),
        env: BTreeMap::new(),
        network: None,
    }
}

async fn runtime(cluster: &StandInCluster, warm_pool: usize) -> KubernetesRuntime {
    let mut config = KubeConfig::new(NS, "registry.example/hutch:test");
    config.warm_pool = warm_pool;
    config.start_timeout = WAIT;
    KubernetesRuntime::new(cluster.client(NS).unwrap(), config)
}

/// One HTTP request on a connection from the runtime; the answer's body.
async fn ask(runtime: &KubernetesRuntime, id: Uuid) -> String {
    let mut stream = runtime.connect(id).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    answer.split("\r\n\r\n").nth(1).unwrap().to_owned()
}

fn names(cluster: &StandInCluster, kind: Kind) -> HashSet<String> {
    cluster
        .store
        .all(kind)
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

fn objects_of(cluster: &StandInCluster, record: &SandboxRecord) -> usize {
    let name = object_name(record.sandbox_id);
    [Kind::Pods, Kind::Secrets, Kind::NetworkPolicies]
        .into_iter()
        .filter(|kind| cluster.store.get(*kind, NS, &name).is_some())
        .count()
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_session_is_a_labelled_pod_with_its_secret_and_policy_and_leaves_nothing() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let runtime = runtime(&cluster, 0).await;
    let spec = spec();
    let record = runtime.create(&spec).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 3);
    let name = object_name(record.sandbox_id);
    let pod = cluster.store.get(Kind::Pods, NS, &name).unwrap();
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/managed-by"], "hutch");
    assert_eq!(labels["hutch.dev/session"], spec.id.to_string());
    assert_eq!(labels["hutch.dev/sandbox"], record.sandbox_id.to_string());
    // The pod's spec carries no credential; its Secret does.
    assert!(!pod.to_string().contains("HUTCH_AGENT_TOKEN\""));
    let policy = cluster.store.get(Kind::NetworkPolicies, NS, &name).unwrap();
    assert_eq!(policy["spec"]["egress"], serde_json::json!([]));
    let data: hutch_kube::PodData = record.runtime.decode().unwrap();
    assert!(
        data.pod_ip.starts_with("127.") && data.pod_ip != "127.0.0.1",
        "{data:?}"
    );

    // The agent answers through the runtime, with the session's configuration.
    let body = ask(&runtime, spec.id).await;
    assert!(body.contains(&spec.hostname), "{body}");

    let pid = cluster.kubelet().pid(NS, &name).unwrap();
    assert!(alive(pid));
    runtime.destroy(&record).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 0);
    until("the pod's process is gone", || !alive(pid)).await;
    assert_eq!(cluster.kubelet().running(), 0);
    // Destroying again is harmless, and a gone session cannot be reached.
    runtime.destroy(&record).await.unwrap();
    assert!(runtime.connect(spec.id).await.is_err());
}

/// The stand-in gives every pod a tmpfs of its own on `/tmp`, as a pod's own file system hides
/// the host's; a `hutch` built under `/tmp` (a checkout in a temporary directory) is still what
/// its pods run, as an init container's copy is in a real one.
#[tokio::test]
async fn pods_run_an_agent_built_under_tmp() {
    let checkout = tempfile::Builder::new()
        .prefix("hutch-checkout-")
        .tempdir_in("/tmp")
        .unwrap();
    let program = checkout.path().join("hutch");
    std::fs::copy(agent(), &program).unwrap();
    let cluster = StandInCluster::start(&program).await.unwrap();
    let runtime = runtime(&cluster, 0).await;
    let spec = spec();
    let record = runtime.create(&spec).await.unwrap();
    let body = ask(&runtime, spec.id).await;
    assert!(body.contains(&spec.hostname), "{body}");
    runtime.destroy(&record).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 0);
}

#[tokio::test]
async fn an_agent_refuses_no_credential_and_another_sessions_credential() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let runtime = runtime(&cluster, 0).await;
    let (a, b) = (spec(), spec());
    let record_a = runtime.create(&a).await.unwrap();
    let record_b = runtime.create(&b).await.unwrap();
    let ip_a = record_a
        .runtime
        .decode::<hutch_kube::PodData>()
        .unwrap()
        .pod_ip;
    let secret_b = cluster
        .store
        .get(Kind::Secrets, NS, &object_name(record_b.sandbox_id))
        .unwrap();
    use base64::Engine;
    let token_b = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(secret_b["data"]["token"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(token_b.len(), 64);

    let address = format!("{ip_a}:7171");
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let refused = hutch_kube::client_preface(&mut stream, &token_b).await;
    assert_eq!(
        refused.unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
    // HTTP without the preface gets nothing but the refusal.
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(!answer.contains("200"), "{answer}");
    // The runtime's own connection, with A's credential, works.
    ask(&runtime, a.id).await;
    runtime.destroy(&record_a).await.unwrap();
    runtime.destroy(&record_b).await.unwrap();
}

#[tokio::test]
async fn a_pod_deleted_behind_the_runtimes_back_is_a_death_and_leaks_nothing() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let runtime = runtime(&cluster, 0).await;
    let mut deaths = runtime.deaths();
    let first = spec();
    let record = runtime.create(&first).await.unwrap();
    let name = object_name(record.sandbox_id);
    let pid = cluster.kubelet().pid(NS, &name).unwrap();
    cluster.store.delete(Kind::Pods, NS, &name).unwrap();
    let died = tokio::time::timeout(WAIT, deaths.recv()).await.unwrap();
    assert_eq!(died, Some(first.id));
    until("the pod's process is gone", || !alive(pid)).await;
    // The server destroys what is left: the Secret and NetworkPolicy.
    runtime.destroy(&record).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 0);
    // A pod whose process ends (Failed) is a death too.
    let other = spec();
    let record = runtime.create(&other).await.unwrap();
    let pid = cluster
        .kubelet()
        .pid(NS, &object_name(record.sandbox_id))
        .unwrap();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let died = tokio::time::timeout(WAIT, deaths.recv()).await.unwrap();
    assert_eq!(died, Some(other.id));
    runtime.destroy(&record).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 0);
}

#[tokio::test]
async fn a_restarted_control_plane_adopts_known_pods_and_sweeps_the_rest() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let first = runtime(&cluster, 0).await;
    let (kept, lost) = (spec(), spec());
    let record_kept = first.create(&kept).await.unwrap();
    let record_lost = first.create(&lost).await.unwrap();
    drop(first);

    let second = runtime(&cluster, 0).await;
    assert!(second.adopt(&record_kept).await.unwrap());
    ask(&second, kept.id).await;
    let swept = second.sweep(&HashSet::from([kept.id])).await.unwrap();
    assert_eq!(swept, vec![record_lost.sandbox_id]);
    assert_eq!(objects_of(&cluster, &record_lost), 0);
    assert_eq!(objects_of(&cluster, &record_kept), 3);
    assert!(!second.adopt(&record_lost).await.unwrap());
    // A Secret left by a crash between its creation and its pod's is swept too.
    let orphan = Uuid::now_v7();
    let config = KubeConfig::new(NS, "x");
    let secret = hutch_kube::secret(&config, orphan, Some(Uuid::now_v7()), "t");
    cluster
        .client(NS)
        .map(|client| kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client, NS))
        .unwrap()
        .create(&Default::default(), &secret)
        .await
        .unwrap();
    assert_eq!(
        second.sweep(&HashSet::from([kept.id])).await.unwrap(),
        vec![orphan]
    );
    second.destroy(&record_kept).await.unwrap();
    assert!(names(&cluster, Kind::Pods).is_empty());
    assert!(names(&cluster, Kind::Secrets).is_empty());
    assert!(names(&cluster, Kind::NetworkPolicies).is_empty());
}

#[tokio::test]
async fn the_warm_pool_hands_a_ready_pod_to_the_next_session() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let runtime = runtime(&cluster, 1).await;
    let first = spec();
    let record_first = runtime.create(&first).await.unwrap();
    assert!(runtime.wait_warm(1, WAIT).await);
    let warm = names(&cluster, Kind::Pods);
    assert_eq!(warm.len(), 2);
    let second = spec();
    let record_second = runtime.create(&second).await.unwrap();
    let name = object_name(record_second.sandbox_id);
    assert!(warm.contains(&name), "the second session got a new pod");
    let pod = cluster.store.get(Kind::Pods, NS, &name).unwrap();
    assert_eq!(
        pod["metadata"]["labels"]["hutch.dev/session"],
        second.id.to_string()
    );
    assert!(pod["metadata"]["labels"].get("hutch.dev/pool").is_none());
    ask(&runtime, second.id).await;
    // The pool refills; a sweep spares this process's warm pods.
    assert!(runtime.wait_warm(1, WAIT).await);
    let swept = runtime
        .sweep(&HashSet::from([first.id, second.id]))
        .await
        .unwrap();
    assert!(swept.is_empty(), "{swept:?}");
    runtime.destroy(&record_first).await.unwrap();
    runtime.destroy(&record_second).await.unwrap();
    // Another control plane's sweep removes the warm pod of a process that is gone.
    drop(runtime);
    let next = runtime_for_sweep(&cluster).await;
    assert_eq!(next.sweep(&HashSet::new()).await.unwrap().len(), 1);
    assert!(names(&cluster, Kind::Pods).is_empty());
    assert!(names(&cluster, Kind::Secrets).is_empty());
}

/// Two control planes on one cluster: the second reaches the first's pod by its session's
/// label, with its Secret's credential, and destroys it; the death is reported once, by the
/// first (whose pod it was), and the second forgets the pod.
#[tokio::test]
async fn another_control_plane_reaches_and_destroys_a_pod_whose_death_its_maker_reports() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let (a, b) = (runtime(&cluster, 0).await, runtime(&cluster, 0).await);
    let (mut died_a, mut died_b) = (a.deaths(), b.deaths());
    let spec = spec();
    let record = a.create(&spec).await.unwrap();
    assert!(b.reaches(&record));
    let body = ask(&b, spec.id).await;
    assert!(body.contains(&spec.hostname), "{body}");
    // Asked twice: the second time from what it remembers.
    ask(&b, spec.id).await;
    // Neither a linux sandbox's record nor a pod of another namespace is reachable.
    let linux = SandboxRecord {
        runtime: hutch_sandbox::RuntimeData::encode(&serde_json::json!({"agentPid": 1})).unwrap(),
        ..record.clone()
    };
    assert!(!b.reaches(&linux));
    let mut elsewhere: hutch_kube::PodData = record.runtime.decode().unwrap();
    elsewhere.namespace = Some("elsewhere".into());
    let elsewhere = SandboxRecord {
        runtime: hutch_sandbox::RuntimeData::encode(&elsewhere).unwrap(),
        ..record.clone()
    };
    assert!(!b.reaches(&elsewhere));
    // A session no pod carries is gone.
    assert!(matches!(
        b.connect(Uuid::now_v7()).await.map(drop),
        Err(hutch_sandbox::SandboxError::Gone(_))
    ));

    b.destroy(&record).await.unwrap();
    assert_eq!(objects_of(&cluster, &record), 0);
    let died = tokio::time::timeout(WAIT, died_a.recv()).await.unwrap();
    assert_eq!(died, Some(spec.id));
    assert!(
        died_b.try_recv().is_err(),
        "reported by a replica not its maker"
    );
    assert!(b.connect(spec.id).await.is_err());
    assert!(a.connect(spec.id).await.is_err());
}

/// A control plane reaching another's pod dials only a pod whose labels and Secret agree:
/// not when two pods carry one session's label, not a pod not named after its sandbox, and
/// not with a Secret made for another sandbox.
#[tokio::test]
async fn a_control_plane_dials_no_pod_whose_labels_or_secret_do_not_add_up() {
    use k8s_openapi::api::core::v1::{Pod, Secret};
    use kube::api::{Api, DeleteParams, PostParams};
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let (a, b) = (runtime(&cluster, 0).await, runtime(&cluster, 0).await);
    let config = KubeConfig::new(NS, "x");
    let pods = Api::<Pod>::namespaced(cluster.client(NS).unwrap(), NS);
    let secrets = Api::<Secret>::namespaced(cluster.client(NS).unwrap(), NS);
    let session = spec();
    let record = a.create(&session).await.unwrap();
    let record_error = |result: Result<(), hutch_sandbox::SandboxError>| {
        assert!(
            matches!(result, Err(hutch_sandbox::SandboxError::Record(_))),
            "{result:?}"
        );
    };

    // A second pod carrying the session's label.
    let mut impostor =
        hutch_kube::pod(&config, Uuid::now_v7(), Some(session.id), None, &session).unwrap();
    impostor.metadata.name = Some("impostor".into());
    pods.create(&PostParams::default(), &impostor)
        .await
        .unwrap();
    record_error(b.connect(session.id).await.map(drop));
    cluster.store.delete(Kind::Pods, NS, "impostor").unwrap();
    // A lone pod not named after its sandbox.
    let other = spec();
    let mut misnamed =
        hutch_kube::pod(&config, Uuid::now_v7(), Some(other.id), None, &other).unwrap();
    misnamed.metadata.name = Some("misnamed".into());
    pods.create(&PostParams::default(), &misnamed)
        .await
        .unwrap();
    record_error(b.connect(other.id).await.map(drop));
    cluster.store.delete(Kind::Pods, NS, "misnamed").unwrap();

    // The session's own pod, running, but its Secret replaced by one made for another sandbox.
    let name = object_name(record.sandbox_id);
    secrets
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let mut foreign = hutch_kube::secret(&config, Uuid::now_v7(), Some(session.id), "t");
    foreign.metadata.name = Some(name);
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    assert!(matches!(
        b.connect(session.id).await.map(drop),
        Err(hutch_sandbox::SandboxError::Gone(_))
    ));
    // Its maker, which knows the credential, still reaches it.
    ask(&a, session.id).await;
    a.destroy(&record).await.unwrap();
}

/// A sweep spares what a live replica made (a session's pod it is creating, its warm pods);
/// once that replica is dead, its warm pods go (at the next heartbeat's notice) and its
/// unknown sessions' pods at the next sweep.
#[tokio::test]
async fn sweeps_spare_a_live_replicas_pods_and_remove_a_dead_ones() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let (a, b) = (runtime(&cluster, 1).await, runtime(&cluster, 0).await);
    let both = ["a".to_owned(), "b".to_owned()];
    a.replicas("a", &both).await;
    b.replicas("b", &both).await;
    let spec = spec();
    let record = a.create(&spec).await.unwrap();
    assert!(a.wait_warm(1, WAIT).await);
    let pods = names(&cluster, Kind::Pods);
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        let pod = cluster.store.get(Kind::Pods, NS, pod).unwrap();
        assert_eq!(pod["metadata"]["annotations"]["hutch.dev/replica"], "a");
    }
    // B knows no session: A is alive, and may be creating it.
    assert!(b.sweep(&HashSet::new()).await.unwrap().is_empty());
    assert_eq!(names(&cluster, Kind::Pods), pods);

    // A dies: its warm pod is removed once B hears of it; its session's pod, unknown, at the
    // next sweep; what B's own sweep keeps (a known session) stays.
    let warm: Vec<String> = pods
        .iter()
        .filter(|p| **p != object_name(record.sandbox_id))
        .cloned()
        .collect();
    drop(a);
    b.replicas("b", &["b".to_owned()]).await;
    until("the dead replica's warm pod is removed", || {
        names(&cluster, Kind::Pods) == HashSet::from([object_name(record.sandbox_id)])
            && names(&cluster, Kind::Secrets).len() == 1
    })
    .await;
    assert!(b.sweep(&HashSet::from([spec.id])).await.unwrap().is_empty());
    assert_eq!(
        b.sweep(&HashSet::new()).await.unwrap(),
        vec![record.sandbox_id]
    );
    assert!(names(&cluster, Kind::Pods).is_empty(), "{warm:?}");
    assert!(names(&cluster, Kind::Secrets).is_empty());
    assert!(names(&cluster, Kind::NetworkPolicies).is_empty());
}

/// The stand-in refuses a delete whose preconditions no longer hold (409), as Kubernetes
/// does: what keeps a sweep from removing a warm pod claimed since it was listed.
#[tokio::test]
async fn a_delete_with_a_stale_resource_version_is_refused() {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{DeleteParams, Preconditions};
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let secrets = kube::Api::<Secret>::namespaced(cluster.client(NS).unwrap(), NS);
    let secret = hutch_kube::secret(
        &KubeConfig::new(NS, "x"),
        Uuid::now_v7(),
        Some(Uuid::now_v7()),
        "t",
    );
    let name = secret.metadata.name.clone().unwrap();
    let made = secrets.create(&Default::default(), &secret).await.unwrap();
    let stale = Preconditions {
        resource_version: Some("1".repeat(9)),
        uid: None,
    };
    let refused = secrets
        .delete(&name, &DeleteParams::default().preconditions(stale))
        .await
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(&refused, kube::Error::Api(status) if status.code == 409),
        "{refused:?}"
    );
    assert!(cluster.store.get(Kind::Secrets, NS, &name).is_some());
    let current = Preconditions {
        resource_version: made.metadata.resource_version,
        uid: made.metadata.uid,
    };
    secrets
        .delete(&name, &DeleteParams::default().preconditions(current))
        .await
        .unwrap();
    assert!(cluster.store.get(Kind::Secrets, NS, &name).is_none());
}

async fn runtime_for_sweep(cluster: &StandInCluster) -> KubernetesRuntime {
    runtime(cluster, 0).await
}

#[tokio::test]
async fn the_runtime_calls_only_what_its_permission_list_names() {
    let cluster = StandInCluster::start(agent()).await.unwrap();
    let runtime = runtime(&cluster, 1).await;
    let _deaths = runtime.deaths();
    let (a, b) = (spec(), spec());
    let record_a = runtime.create(&a).await.unwrap();
    assert!(runtime.wait_warm(1, WAIT).await);
    let record_b = runtime.create(&b).await.unwrap();
    runtime
        .set_deadline(a.id, std::time::SystemTime::now() + Duration::from_secs(60))
        .await
        .unwrap();
    let policy = hutch_api::NetworkPolicy {
        egress: hutch_api::Egress::All,
        allow: vec![],
        deny: vec!["198.51.100.0/24".into()],
    };
    runtime.set_network(&record_a, &policy).await.unwrap();
    let stored = cluster
        .store
        .get(Kind::NetworkPolicies, NS, &object_name(record_a.sandbox_id))
        .unwrap();
    assert_eq!(
        stored["spec"]["egress"][0]["to"][0]["ipBlock"]["except"][0],
        "198.51.100.0/24"
    );
    drop(runtime);
    let next = runtime_for_sweep(&cluster).await;
    assert!(next.adopt(&record_a).await.unwrap());
    next.sweep(&HashSet::from([a.id, b.id])).await.unwrap();
    next.destroy(&record_a).await.unwrap();
    next.destroy(&record_b).await.unwrap();
    let allowed: HashSet<(String, String)> = PERMISSIONS
        .iter()
        .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
        .collect();
    let used: HashSet<(String, String)> = cluster.store.calls().into_keys().collect();
    let unlisted: Vec<_> = used.difference(&allowed).collect();
    assert!(
        unlisted.is_empty(),
        "calls outside PERMISSIONS: {unlisted:?}"
    );
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(unused.is_empty(), "PERMISSIONS never used: {unused:?}");
}

/// Against a real cluster when `KUBECONFIG` names one (and `HUTCH_KUBE_AGENT_IMAGE` an image
/// carrying a static `hutch`): a session's pod starts, answers and is deleted.
#[tokio::test]
async fn a_real_cluster_runs_a_session_when_one_is_configured() {
    let (Ok(_), Ok(image)) = (
        std::env::var("KUBECONFIG"),
        std::env::var("HUTCH_KUBE_AGENT_IMAGE"),
    ) else {
        eprintln!(
            "SKIPPED a_real_cluster_runs_a_session_when_one_is_configured: set KUBECONFIG and \
             HUTCH_KUBE_AGENT_IMAGE to run it against a real cluster"
        );
        return;
    };
    let namespace = std::env::var("HUTCH_KUBE_NAMESPACE").unwrap_or_else(|_| "default".into());
    let client = KubernetesRuntime::client(None).await.unwrap();
    let mut config = KubeConfig::new(&namespace, &image);
    config.warm_pool = 0;
    let runtime = KubernetesRuntime::new(client, config);
    let spec = spec();
    let record = runtime.create(&spec).await.unwrap();
    let mut stream = runtime.connect(spec.id).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: agent\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    runtime.destroy(&record).await.unwrap();
}
