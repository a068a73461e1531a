//! The Kubernetes runtime: one pod per session, behind the same [`Runtime`] trait as the
//! linux runtime.
//!
//! A session's sandbox is three objects in one namespace, all named `hutch-<sandbox id>` and
//! labelled `app.kubernetes.io/managed-by=hutch`, `hutch.dev/sandbox=<id>` and
//! `hutch.dev/session=<id>`:
//!
//! - a Secret holding the session's credential (32 random bytes, hex), mounted read-only into
//!   the pod; the agent accepts only connections that open with it ([`client_preface`]);
//! - a NetworkPolicy: ingress only from the control plane's pods on the agent's port, egress
//!   as the session's policy says (none by default);
//! - a Pod: an init container copies the static `hutch` binary into an emptyDir, and the
//!   session's image runs `hutch agent --container`.
//!
//! The [`standin`] module (feature `stand-in`) is a stand-in cluster for tests: no
//! Kubernetes API server can run where hutch's tests run.

mod objects;
mod runtime;
#[cfg(feature = "stand-in")]
pub mod standin;

use std::collections::BTreeMap;
use std::time::Duration;

pub use hutch_sandbox::preface::client_preface;
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
pub use objects::{
    HUTCH_DIR, MANAGED_BY, POOL_LABEL, REPLICA_ANNOTATION, SANDBOX_LABEL, SESSION_LABEL, TOKEN_DIR,
    TOKEN_KEY, managed_selector, network_policy, object_name, owner_reference, pod, resources,
    secret,
};
pub use runtime::{KubeError, KubernetesRuntime, PodData};

/// Every (resource, verb) the runtime's calls use in its namespace: the deploy manifests'
/// Role must grant exactly these (a test checks both sides).
pub const PERMISSIONS: &[(&str, &str)] = &[
    ("pods", "create"),
    ("pods", "get"),
    ("pods", "list"),
    ("pods", "watch"),
    ("pods", "delete"),
    ("pods", "patch"),
    ("secrets", "create"),
    ("secrets", "get"),
    ("secrets", "list"),
    ("secrets", "delete"),
    ("networkpolicies", "create"),
    ("networkpolicies", "list"),
    ("networkpolicies", "delete"),
    ("networkpolicies", "patch"),
];

/// How the Kubernetes runtime makes pods.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// The namespace sessions' pods live in.
    pub namespace: String,
    /// The image of the init container: it carries the static `hutch` binary.
    pub agent_image: String,
    /// Where `hutch` is inside [`KubeConfig::agent_image`].
    pub agent_binary: String,
    /// The image sessions asking for hutch's `default` image run.
    pub default_image: String,
    /// The pods' `runtimeClassName` (gVisor, Kata), if any.
    pub runtime_class: Option<String>,
    /// The object every pod, Secret and NetworkPolicy is owned by (the control plane's
    /// Deployment): deleting it deletes them.
    pub owner: Option<OwnerReference>,
    /// Labels of the control plane's pods: the only pods a session's NetworkPolicy admits.
    pub control_plane_labels: BTreeMap<String, String>,
    /// The port the agent listens on in its pod.
    pub agent_port: u16,
    /// Warm pods kept per image and configuration; 0 turns the pool off.
    pub warm_pool: usize,
    /// How long a pod may take to run and answer (image pulls included).
    pub start_timeout: Duration,
}

impl KubeConfig {
    /// Defaults for everything but the namespace and the agent's image.
    pub fn new(namespace: &str, agent_image: &str) -> KubeConfig {
        KubeConfig {
            namespace: namespace.to_owned(),
            agent_image: agent_image.to_owned(),
            agent_binary: "/usr/local/bin/hutch".to_owned(),
            default_image: "debian:bookworm-slim".to_owned(),
            runtime_class: None,
            owner: None,
            control_plane_labels: BTreeMap::from([(
                "app.kubernetes.io/name".to_owned(),
                "hutch".to_owned(),
            )]),
            agent_port: 7171,
            warm_pool: 2,
            start_timeout: Duration::from_secs(120),
        }
    }
}
