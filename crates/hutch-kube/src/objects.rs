//! The Kubernetes objects a session is made of: its Pod, its Secret and its NetworkPolicy.

use std::collections::BTreeMap;

use hutch_api::{Egress, NetworkPolicy, Resources};
use hutch_sandbox::{SandboxError, SandboxSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, Pod, PodSpec, ResourceRequirements, Secret,
    SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy as KubeNetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
    NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use uuid::Uuid;

use crate::KubeConfig;

/// Label every object hutch makes carries: `app.kubernetes.io/managed-by=hutch`.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hutch");
/// Label naming the session a pod serves (absent while the pod waits in the warm pool).
pub const SESSION_LABEL: &str = "hutch.dev/session";
/// Label naming the sandbox (the pod's own id).
pub const SANDBOX_LABEL: &str = "hutch.dev/sandbox";
/// Label of a warm pod: the control-plane instance whose pool it is in.
pub const POOL_LABEL: &str = "hutch.dev/pool";
/// Annotation of every object a control plane made while it knew its replica id (replicas on
/// one store): that id. Other replicas' sweeps spare what a live replica made.
pub const REPLICA_ANNOTATION: &str = "hutch.dev/replica";
/// Where the session's credential is mounted inside the pod.
pub const TOKEN_DIR: &str = "/var/run/hutch";
/// The key of the credential in the session's Secret (and its file name under [`TOKEN_DIR`]).
pub const TOKEN_KEY: &str = "token";
/// Where the init container puts the `hutch` binary (an emptyDir shared with the agent).
pub const HUTCH_DIR: &str = "/hutch";

/// The name of sandbox `id`'s pod, Secret and NetworkPolicy.
pub fn object_name(id: Uuid) -> String {
    format!("hutch-{}", id.simple())
}

/// The label selector of every object hutch manages.
pub fn managed_selector() -> String {
    format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)
}

fn meta(
    config: &KubeConfig,
    sandbox: Uuid,
    session: Option<Uuid>,
    pool: Option<&str>,
) -> ObjectMeta {
    let mut labels = BTreeMap::from([
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
        (SANDBOX_LABEL.to_owned(), sandbox.to_string()),
    ]);
    if let Some(session) = session {
        labels.insert(SESSION_LABEL.to_owned(), session.to_string());
    }
    if let Some(pool) = pool {
        labels.insert(POOL_LABEL.to_owned(), pool.to_owned());
    }
    ObjectMeta {
        name: Some(object_name(sandbox)),
        namespace: Some(config.namespace.clone()),
        labels: Some(labels),
        owner_references: config.owner.clone().map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}

/// The Secret holding a sandbox's credential.
pub fn secret(config: &KubeConfig, sandbox: Uuid, session: Option<Uuid>, token: &str) -> Secret {
    Secret {
        metadata: meta(config, sandbox, session, None),
        string_data: Some(BTreeMap::from([(TOKEN_KEY.to_owned(), token.to_owned())])),
        type_: Some("Opaque".to_owned()),
        immutable: Some(true),
        ..Secret::default()
    }
}

/// The owner reference a configured owner object (the control plane's Deployment, say) gives
/// every object hutch makes: `apiVersion/kind/name/uid`.
pub fn owner_reference(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        block_owner_deletion: Some(false),
        controller: Some(false),
    }
}

fn quantity(value: String) -> Quantity {
    Quantity(value)
}

/// Requests and limits of the agent's container: cpu (in millicores), memory, and
/// ephemeral storage for `diskMb`. Requests equal limits (the session gets what it asked for).
pub fn resources(resources: &Resources) -> ResourceRequirements {
    let millicpus = (resources.cpus * 1000.0).round().max(1.0) as u64;
    let mut limits = BTreeMap::from([
        ("cpu".to_owned(), quantity(format!("{millicpus}m"))),
        (
            "memory".to_owned(),
            quantity(format!("{}Mi", resources.memory_mb)),
        ),
    ]);
    if let Some(disk) = resources.disk_mb {
        limits.insert(
            "ephemeral-storage".to_owned(),
            quantity(format!("{disk}Mi")),
        );
    }
    ResourceRequirements {
        requests: Some(limits.clone()),
        limits: Some(limits),
        ..ResourceRequirements::default()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..EnvVar::default()
    }
}

/// A sandbox's pod: an init container copies `hutch` into an emptyDir, and the session's
/// image runs `hutch agent --container` with the session's configuration in its environment.
pub fn pod(
    config: &KubeConfig,
    sandbox: Uuid,
    session: Option<Uuid>,
    pool: Option<&str>,
    spec: &SandboxSpec,
) -> Result<Pod, SandboxError> {
    let image = match &spec.image {
        hutch_sandbox::SandboxImage::Default => config.default_image.clone(),
        hutch_sandbox::SandboxImage::Oci(oci) => oci.name.clone(),
    };
    let session_env = serde_json::to_string(&spec.env)
        .map_err(|err| SandboxError::InvalidSpec(err.to_string()))?;
    let mut vars = vec![
        env("HUTCH_AGENT_TOKEN_FILE", format!("{TOKEN_DIR}/{TOKEN_KEY}")),
        env("HUTCH_SESSION_ENV", session_env),
        env("HUTCH_SESSION_HOSTNAME", spec.hostname.clone()),
        env("HUTCH_SESSION_IMAGE", spec.image.name().to_owned()),
        env(
            "HUTCH_SESSION_MEMORY_MB",
            spec.resources.memory_mb.to_string(),
        ),
    ];
    if let hutch_sandbox::SandboxImage::Oci(oci) = &spec.image {
        if let Some(dir) = &oci.working_dir {
            vars.push(env("HUTCH_SESSION_WORKDIR", dir.clone()));
        }
        if let Some(user) = &oci.user {
            vars.push(env("HUTCH_SESSION_USER", user.clone()));
        }
    }
    let hutch_volume = VolumeMount {
        name: "hutch".to_owned(),
        mount_path: HUTCH_DIR.to_owned(),
        ..VolumeMount::default()
    };
    let init = Container {
        name: "hutch-install".to_owned(),
        image: Some(config.agent_image.clone()),
        command: Some(vec![
            "cp".to_owned(),
            config.agent_binary.clone(),
            format!("{HUTCH_DIR}/hutch"),
        ]),
        volume_mounts: Some(vec![hutch_volume.clone()]),
        ..Container::default()
    };
    let agent = Container {
        name: "agent".to_owned(),
        image: Some(image),
        command: Some(vec![
            format!("{HUTCH_DIR}/hutch"),
            "agent".to_owned(),
            "--container".to_owned(),
        ]),
        env: Some(vars),
        resources: Some(resources(&spec.resources)),
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                ..hutch_volume
            },
            VolumeMount {
                name: "workspace".to_owned(),
                mount_path: "/workspace".to_owned(),
                ..VolumeMount::default()
            },
            VolumeMount {
                name: "token".to_owned(),
                mount_path: TOKEN_DIR.to_owned(),
                read_only: Some(true),
                ..VolumeMount::default()
            },
        ]),
        ..Container::default()
    };
    Ok(Pod {
        metadata: meta(config, sandbox, session, pool),
        spec: Some(PodSpec {
            init_containers: Some(vec![init]),
            containers: vec![agent],
            volumes: Some(vec![
                Volume {
                    name: "hutch".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "workspace".to_owned(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                },
                Volume {
                    name: "token".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some(object_name(sandbox)),
                        default_mode: Some(0o400),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
            ]),
            restart_policy: Some("Never".to_owned()),
            runtime_class_name: config.runtime_class.clone(),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            hostname: Some(spec.hostname.clone()),
            ..PodSpec::default()
        }),
        status: None,
    })
}

/// The NetworkPolicy of a sandbox's pod: ingress only from the control plane's pods on the
/// agent's port; egress as the session's policy says (none by default). NetworkPolicies match
/// addresses, not names: an `allow` list naming hosts is refused.
pub fn network_policy(
    config: &KubeConfig,
    sandbox: Uuid,
    session: Option<Uuid>,
    policy: Option<&NetworkPolicy>,
) -> Result<KubeNetworkPolicy, SandboxError> {
    let cidrs = |list: &[String]| -> Result<Vec<String>, SandboxError> {
        list.iter()
            .map(|entry| match hutch_api::network::Ipv4Cidr::parse(entry) {
                Some(cidr) => Ok(format!("{}/{}", cidr.addr, cidr.prefix)),
                None => Err(SandboxError::InvalidSpec(format!(
                    "the kubernetes runtime's network policies match addresses only, not `{entry}`"
                ))),
            })
            .collect()
    };
    let egress = match policy {
        None => vec![],
        Some(policy) => {
            let deny = cidrs(&policy.deny)?;
            match policy.egress {
                Egress::None => vec![],
                Egress::Allow => {
                    let allow = cidrs(&policy.allow)?;
                    vec![NetworkPolicyEgressRule {
                        to: Some(
                            allow
                                .into_iter()
                                .map(|cidr| NetworkPolicyPeer {
                                    ip_block: Some(IPBlock {
                                        cidr,
                                        except: (!deny.is_empty()).then(|| deny.clone()),
                                    }),
                                    ..NetworkPolicyPeer::default()
                                })
                                .collect(),
                        ),
                        ports: None,
                    }]
                }
                Egress::All => vec![NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: "0.0.0.0/0".to_owned(),
                            except: (!deny.is_empty()).then_some(deny),
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: None,
                }],
            }
        }
    };
    Ok(KubeNetworkPolicy {
        metadata: meta(config, sandbox, session, None),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    SANDBOX_LABEL.to_owned(),
                    sandbox.to_string(),
                )])),
                ..LabelSelector::default()
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(config.control_plane_labels.clone()),
                        ..LabelSelector::default()
                    }),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(i32::from(config.agent_port))),
                    protocol: Some("TCP".to_owned()),
                    ..NetworkPolicyPort::default()
                }]),
            }]),
            egress: Some(egress),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            id: Uuid::now_v7(),
            hostname: "0123456789ab".into(),
            image: hutch_sandbox::SandboxImage::Default,
            resources: Resources {
                cpus: 0.5,
                memory_mb: 256,
                pids: 64,
                disk_mb: Some(1024),
            },
            env: BTreeMap::from([("A".into(), "b".into())]),
            network: None,
        }
    }

    #[test]
    fn pods_carry_labels_limits_the_agent_and_its_credential() {
        let mut config = KubeConfig::new("sandboxes", "registry.example/hutch:1");
        config.runtime_class = Some("gvisor".into());
        config.owner = Some(owner_reference("apps/v1", "Deployment", "hutch", "u-1"));
        let sandbox = Uuid::now_v7();
        let session = Uuid::now_v7();
        let pod = pod(&config, sandbox, Some(session), None, &spec()).unwrap();
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(labels[MANAGED_BY.0], "hutch");
        assert_eq!(labels[SESSION_LABEL], session.to_string());
        assert_eq!(labels[SANDBOX_LABEL], sandbox.to_string());
        assert_eq!(
            pod.metadata.owner_references.as_ref().unwrap()[0].uid,
            "u-1"
        );
        let spec = pod.spec.unwrap();
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        let agent = &spec.containers[0];
        assert_eq!(
            agent.command.as_ref().unwrap(),
            &["/hutch/hutch", "agent", "--container"]
        );
        let limits = agent.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits["cpu"].0, "500m");
        assert_eq!(limits["memory"].0, "256Mi");
        assert_eq!(limits["ephemeral-storage"].0, "1024Mi");
        let env = agent.env.as_ref().unwrap();
        let get = |name: &str| {
            env.iter()
                .find(|v| v.name == name)
                .and_then(|v| v.value.clone())
        };
        assert_eq!(get("HUTCH_SESSION_ENV").unwrap(), r#"{"A":"b"}"#);
        assert_eq!(
            get("HUTCH_AGENT_TOKEN_FILE").unwrap(),
            "/var/run/hutch/token"
        );
        // The credential is never in the pod's spec, only in its Secret.
        assert!(env.iter().all(|v| v.name != "HUTCH_AGENT_TOKEN"));
    }

    #[test]
    fn network_policies_default_to_no_egress_and_refuse_names() {
        let config = KubeConfig::new("ns", "img");
        let sandbox = Uuid::now_v7();
        let none = network_policy(&config, sandbox, None, None).unwrap();
        let spec = none.spec.unwrap();
        assert_eq!(spec.egress.unwrap().len(), 0);
        assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
        let allow = NetworkPolicy {
            egress: Egress::Allow,
            allow: vec!["198.51.100.0/24".into()],
            deny: vec!["198.51.100.7".into()],
        };
        let rule = network_policy(&config, sandbox, None, Some(&allow))
            .unwrap()
            .spec
            .unwrap()
            .egress
            .unwrap();
        let block = rule[0].to.as_ref().unwrap()[0].ip_block.clone().unwrap();
        assert_eq!(block.cidr, "198.51.100.0/24");
        assert_eq!(block.except.unwrap(), ["198.51.100.7/32"]);
        let names = NetworkPolicy {
            egress: Egress::Allow,
            allow: vec!["pypi.org".into()],
            deny: vec![],
        };
        assert!(matches!(
            network_policy(&config, sandbox, None, Some(&names)),
            Err(SandboxError::InvalidSpec(_))
        ));
    }
}
