//! `hutch serve --runtime kubernetes`: the options of the Kubernetes runtime.

use std::path::PathBuf;

use anyhow::Context;

/// Which runtime runs the sessions.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RuntimeKind {
    /// Namespaces, overlayfs and cgroups on this host.
    Linux,
    /// One pod per session in a Kubernetes namespace.
    Kubernetes,
}

/// Options of the Kubernetes runtime; ignored by the linux runtime.
#[derive(clap::Args, Debug)]
pub(crate) struct KubeArgs {
    /// Which runtime runs the sessions: `linux` (this host) or `kubernetes` (a pod each).
    #[arg(long, env = "HUTCH_RUNTIME", value_enum, default_value = "linux")]
    pub(crate) runtime: RuntimeKind,
    /// Kubeconfig file of the cluster; without it: `KUBECONFIG`, `~/.kube/config`, then the
    /// in-cluster service account.
    #[arg(long, env = "HUTCH_KUBECONFIG", value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the sessions' pods, Secrets and NetworkPolicies.
    #[arg(long, env = "HUTCH_KUBE_NAMESPACE", default_value = "default")]
    kube_namespace: String,
    /// Image of the init container that carries the static `hutch` binary.
    #[arg(long, env = "HUTCH_KUBE_AGENT_IMAGE", value_name = "IMAGE")]
    kube_agent_image: Option<String>,
    /// Path of `hutch` inside `--kube-agent-image`.
    #[arg(
        long,
        env = "HUTCH_KUBE_AGENT_BINARY",
        default_value = "/usr/local/bin/hutch"
    )]
    kube_agent_binary: String,
    /// Image sessions asking for the `default` image run.
    #[arg(
        long,
        env = "HUTCH_KUBE_DEFAULT_IMAGE",
        default_value = "debian:bookworm-slim"
    )]
    kube_default_image: String,
    /// `runtimeClassName` of the sessions' pods (gVisor, Kata), if any.
    #[arg(long, env = "HUTCH_KUBE_RUNTIME_CLASS", value_name = "NAME")]
    kube_runtime_class: Option<String>,
    /// Owner of every object hutch makes, `apiVersion/kind/name/uid` (the control plane's
    /// Deployment): deleting it deletes them.
    #[arg(long, env = "HUTCH_KUBE_OWNER", value_name = "REF")]
    kube_owner: Option<String>,
    /// Warm pods kept per image and configuration (0: none).
    #[arg(long, env = "HUTCH_KUBE_WARM_POOL", default_value_t = 2)]
    kube_warm_pool: usize,
}

impl KubeArgs {
    /// The Kubernetes runtime these options describe.
    pub(crate) async fn runtime(&self) -> anyhow::Result<hutch_kube::KubernetesRuntime> {
        let image = self
            .kube_agent_image
            .as_deref()
            .context("--runtime kubernetes needs --kube-agent-image")?;
        let mut config = hutch_kube::KubeConfig::new(&self.kube_namespace, image);
        config.agent_binary = self.kube_agent_binary.clone();
        config.default_image = self.kube_default_image.clone();
        config.runtime_class = self.kube_runtime_class.clone();
        config.warm_pool = self.kube_warm_pool;
        if let Some(owner) = &self.kube_owner {
            config.owner = Some(parse_owner(owner)?);
        }
        let client = hutch_kube::KubernetesRuntime::client(self.kubeconfig.as_deref())
            .await
            .context("connecting to the Kubernetes API")?;
        Ok(hutch_kube::KubernetesRuntime::new(client, config))
    }
}

/// `apiVersion/kind/name/uid`, where `apiVersion` may itself hold a slash (`apps/v1`).
fn parse_owner(text: &str) -> anyhow::Result<hutch_kube::OwnerReference> {
    let parts: Vec<&str> = text.rsplitn(4, '/').collect();
    match parts.as_slice() {
        [uid, name, kind, api_version] if parts.iter().all(|p| !p.is_empty()) => {
            Ok(hutch_kube::owner_reference(api_version, kind, name, uid))
        }
        _ => anyhow::bail!("--kube-owner must be apiVersion/kind/name/uid, got {text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_api_version_kind_name_uid() {
        let owner = parse_owner("apps/v1/Deployment/hutch/0b7c-11").unwrap();
        assert_eq!(
            (
                owner.api_version.as_str(),
                owner.kind.as_str(),
                owner.name.as_str(),
                owner.uid.as_str()
            ),
            ("apps/v1", "Deployment", "hutch", "0b7c-11")
        );
        assert!(parse_owner("Deployment/hutch").is_err());
        assert!(parse_owner("v1//x/y").is_err());
    }
}
