//! The manifests of `deploy/kubernetes/` parse into Kubernetes' own types, and their Role
//! grants exactly what the runtime calls ([`hutch_kube::PERMISSIONS`]).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::de::DeserializeOwned;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kubernetes")
}

/// Every manifest, by file name, as JSON.
fn manifests() -> BTreeMap<String, serde_json::Value> {
    std::fs::read_dir(dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let value: serde_json::Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            )
        })
        .collect()
}

/// Parses `value` as `T`, refusing fields `T` does not have (a misspelt key is an error).
fn typed<T: DeserializeOwned + serde::Serialize>(name: &str, value: &serde_json::Value) -> T {
    let object: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|err| panic!("{name}: {err}"));
    let back = serde_json::to_value(&object).unwrap();
    assert_eq!(&back, value, "{name}: fields the type does not know");
    object
}

#[test]
fn every_manifest_parses_into_its_kubernetes_type() {
    let manifests = manifests();
    let kinds: BTreeSet<&str> = manifests
        .values()
        .map(|m| m["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ConfigMap",
            "Deployment",
            "Role",
            "RoleBinding",
            "Secret",
            "Service",
            "ServiceAccount"
        ])
    );
    for (name, value) in &manifests {
        assert_eq!(value["metadata"]["namespace"], "hutch", "{name}");
        match value["kind"].as_str().unwrap() {
            "Deployment" => {
                let deployment: Deployment = typed(name, value);
                let spec = deployment.spec.unwrap();
                assert!(spec.replicas.unwrap() >= 2, "{name}: at least 2 replicas");
                let pod = spec.template.spec.unwrap();
                assert_eq!(pod.service_account_name.as_deref(), Some("hutch"));
                let container = &pod.containers[0];
                assert_eq!(container.command.as_ref().unwrap()[1], "serve");
                // The pods' labels are what sessions' NetworkPolicies admit.
                let labels = spec.template.metadata.unwrap().labels.unwrap();
                let admitted = hutch_kube::KubeConfig::new("hutch", "x").control_plane_labels;
                for (key, value) in admitted {
                    assert_eq!(labels.get(&key), Some(&value), "{name}: label {key}");
                }
            }
            "ConfigMap" => {
                let map: ConfigMap = typed(name, value);
                let data = map.data.unwrap();
                assert_eq!(data["HUTCH_RUNTIME"], "kubernetes");
                assert_eq!(data["HUTCH_KUBE_NAMESPACE"], "hutch");
            }
            "Secret" => {
                let secret: Secret = typed(name, value);
                assert!(secret.string_data.unwrap().contains_key("HUTCH_STORE"));
            }
            "Service" => drop(typed::<Service>(name, value)),
            "ServiceAccount" => drop(typed::<ServiceAccount>(name, value)),
            "RoleBinding" => {
                let binding: RoleBinding = typed(name, value);
                assert_eq!(binding.role_ref.kind, "Role");
                assert_eq!(binding.subjects.unwrap()[0].name, "hutch");
            }
            "Role" => drop(typed::<Role>(name, value)),
            other => panic!("{name}: unexpected kind {other}"),
        }
    }
}

#[test]
fn the_role_grants_exactly_what_the_runtime_calls() {
    let manifests = manifests();
    let (name, value) = manifests.iter().find(|(_, m)| m["kind"] == "Role").unwrap();
    let role: Role = typed(name, value);
    let mut granted = BTreeSet::new();
    for rule in role.rules.unwrap() {
        let groups = rule.api_groups.unwrap_or_default();
        for resource in rule.resources.unwrap_or_default() {
            let group = match resource.as_str() {
                "networkpolicies" => "networking.k8s.io",
                _ => "",
            };
            assert!(
                groups.iter().any(|g| g == group),
                "{resource} is granted in {groups:?}, not in its group {group:?}"
            );
            for verb in &rule.verbs {
                assert_ne!(verb, "*", "wildcard verbs are not least privilege");
                granted.insert((resource.clone(), verb.clone()));
            }
        }
    }
    let used: BTreeSet<(String, String)> = hutch_kube::PERMISSIONS
        .iter()
        .map(|(r, v)| ((*r).to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(granted, used);
}
