//! Which registries may be pulled from and how to reach them: the allow-list, mirrors,
//! plain-HTTP registries and credentials from a Docker-style `config.json`.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use base64::Engine as _;
use serde::Deserialize;

use crate::reference::DOCKER_HUB;

/// Why a registry setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryConfigError {
    /// A mirror is not `REGISTRY=http(s)://HOST[:PORT]`.
    #[error(
        "invalid registry mirror {0:?}: expected REGISTRY=http://HOST[:PORT] or REGISTRY=https://HOST[:PORT]"
    )]
    Mirror(String),
    /// The credentials file could not be read.
    #[error("cannot read registry credentials {path}: {source}")]
    AuthRead {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The credentials file is not a Docker `config.json`.
    #[error("registry credentials {path} are not a Docker config.json: {message}")]
    AuthParse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
}

/// Where a registry's requests go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The mirror's host and port.
    pub host: String,
    /// Whether the mirror speaks plain HTTP.
    pub plain_http: bool,
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

/// How registries are reached.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// Registries that may be pulled from; `None` allows any.
    pub allowed: Option<HashSet<String>>,
    /// Mirrors by the registry they stand in for (`docker.io`).
    pub mirrors: HashMap<String, Mirror>,
    /// Registries reached over plain HTTP (mirrors say so themselves).
    pub plain_http: HashSet<String>,
    /// Credentials by registry host.
    pub credentials: HashMap<String, Credentials>,
}

impl RegistryConfig {
    /// Adds a mirror given as `REGISTRY=http(s)://HOST[:PORT]`.
    pub fn add_mirror(&mut self, spec: &str) -> Result<(), RegistryConfigError> {
        let bad = || RegistryConfigError::Mirror(spec.to_owned());
        let (registry, url) = spec.split_once('=').ok_or_else(bad)?;
        let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (false, rest)
        } else {
            return Err(bad());
        };
        let host = rest.trim_end_matches('/');
        let valid = |text: &str| {
            !text.is_empty()
                && text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
        };
        if !valid(registry) || !valid(host) {
            return Err(bad());
        }
        self.mirrors.insert(
            normalise_registry(registry),
            Mirror {
                host: host.to_owned(),
                plain_http,
            },
        );
        Ok(())
    }

    /// Reads credentials from a Docker `config.json` (`auths` with `auth` or
    /// `username`/`password`; `identitytoken` is used as a password for token exchange).
    pub fn load_credentials(&mut self, path: &Path) -> Result<(), RegistryConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read(path).map_err(|source| RegistryConfigError::AuthRead {
            path: shown.clone(),
            source,
        })?;
        let parse_error = |message: String| RegistryConfigError::AuthParse {
            path: shown.clone(),
            message,
        };
        let file: DockerConfig =
            serde_json::from_slice(&text).map_err(|e| parse_error(e.to_string()))?;
        for (key, entry) in file.auths {
            let registry = normalise_registry(&key);
            let credentials = if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| parse_error(format!("auth of {key}: {e}")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| parse_error(format!("auth of {key} is not UTF-8")))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| parse_error(format!("auth of {key} is not user:password")))?;
                Credentials {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credentials { username, password }
            } else if let Some(token) = entry.identitytoken {
                Credentials {
                    username: "<token>".to_owned(),
                    password: token,
                }
            } else {
                continue;
            };
            self.credentials.insert(registry, credentials);
        }
        Ok(())
    }

    /// Whether pulls from `registry` are allowed.
    pub fn allows(&self, registry: &str) -> bool {
        self.allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(registry))
    }
}

/// A registry key as Docker writes it (`https://index.docker.io/v1/`) reduced to its host.
fn normalise_registry(key: &str) -> String {
    let host = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_owned()
        }
        other => other.to_owned(),
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_parse_scheme_and_host() {
        let mut config = RegistryConfig::default();
        config
            .add_mirror("docker.io=http://127.0.0.1:5000")
            .expect("valid mirror");
        assert_eq!(
            config.mirrors.get("docker.io"),
            Some(&Mirror {
                host: "127.0.0.1:5000".to_owned(),
                plain_http: true
            })
        );
        for bad in [
            "docker.io",
            "docker.io=ftp://x",
            "=http://x",
            "docker.io=http://a b",
        ] {
            assert!(config.add_mirror(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn docker_config_credentials_are_read_per_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
                "localhost:5000": {"username": "u", "password": "p"}
            }}"#,
        )
        .expect("write");
        let mut config = RegistryConfig::default();
        config.load_credentials(&path).expect("loads");
        let hub = config.credentials.get("docker.io").expect("docker hub");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("user", "pass")
        );
        assert!(config.credentials.contains_key("localhost:5000"));
        assert!(!format!("{hub:?}").contains("pass"));
    }
}
