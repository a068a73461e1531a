//! The agent as a container's main process (`hutch agent --container`): what it does before it
//! serves, in place of [`crate::init`].
//!
//! In a pod, nothing of hutch built the agent's surroundings: the container runtime made its
//! namespaces, cgroups and root file system, and the pod spec gave it its session through the
//! environment. [`enter`]:
//!
//! 1. reads the session's credential from the file named by [`TOKEN_FILE_VAR`] (a Kubernetes
//!    Secret mounted read-only), else from [`TOKEN_VAR`], and refuses to start without one;
//! 2. reads the session's configuration from the `HUTCH_SESSION_*` variables;
//! 3. removes every `HUTCH_*` variable from its own environment, and overwrites the
//!    credential's bytes in the environment block the kernel shows as `/proc/<pid>/environ`;
//!    what commands start with is the container's environment without them;
//! 4. becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that orphans of its commands
//!    are re-parented to it and reaped; makes itself non-dumpable, so that processes of the
//!    same user cannot read its memory, descriptors or environment through `/proc` or
//!    `ptrace`; and sets `no_new_privs`, inherited by every command; from then on every
//!    process it starts runs under a [shepherd](crate::shepherd), which kills the process's
//!    whole tree when it ends;
//! 5. finds the container's out-of-memory counters, if its cgroup is visible.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::preface::{Secret, SecretError};

/// The address an agent in container mode listens on unless told otherwise.
pub const LISTEN_DEFAULT: &str = "0.0.0.0:7171";

/// The variable naming the file that holds the session's credential.
pub const TOKEN_FILE_VAR: &str = "HUTCH_AGENT_TOKEN_FILE";
/// The variable holding the session's credential itself, when no file is named.
pub const TOKEN_VAR: &str = "HUTCH_AGENT_TOKEN";
/// The session's `env`, a JSON object of strings, given to every command.
pub const ENV_VAR: &str = "HUTCH_SESSION_ENV";
/// The host name commands see in `HOSTNAME` (the container's host name when absent).
pub const HOSTNAME_VAR: &str = "HUTCH_SESSION_HOSTNAME";
/// The name of the session's image, for messages.
pub const IMAGE_VAR: &str = "HUTCH_SESSION_IMAGE";
/// The default working directory of commands (`/workspace` when absent).
pub const WORKDIR_VAR: &str = "HUTCH_SESSION_WORKDIR";
/// The user commands run as (`name`, `uid`, `name:group`, `uid:gid`), when the agent is root.
pub const USER_VAR: &str = "HUTCH_SESSION_USER";
/// The session's memory limit in MiB, named when the OOM killer acts.
pub const MEMORY_MB_VAR: &str = "HUTCH_SESSION_MEMORY_MB";
/// The largest upload the file API accepts, in bytes.
pub const MAX_UPLOAD_BYTES_VAR: &str = "HUTCH_SESSION_MAX_UPLOAD_BYTES";
/// The time past which the agent exits: RFC 3339 or seconds since the Unix epoch.
pub const DEADLINE_VAR: &str = "HUTCH_SESSION_DEADLINE";

/// What every variable for hutch starts with; none of them reaches a command.
const OWN_PREFIX: &str = "HUTCH_";

/// The largest credential file read; a secret is at most a preface line long.
const TOKEN_FILE_MAX_BYTES: u64 = 4096;

/// What the agent serves with in container mode.
#[derive(Debug)]
pub struct Container {
    /// The session's credential.
    pub secret: Secret,
    /// The environment commands start from: the container's own, without `HUTCH_*`.
    pub base_env: BTreeMap<String, String>,
    /// The session's `env`, on top of `base_env`.
    pub env: BTreeMap<String, String>,
    /// The session's host name.
    pub hostname: String,
    /// The image's name.
    pub image: Option<String>,
    /// The default working directory.
    pub working_dir: Option<String>,
    /// The user commands run as; `None` when the agent cannot switch users (it is not root):
    /// then commands run as the agent's own user.
    pub user: Option<String>,
    /// The session's memory limit in MiB.
    pub memory_mb: Option<u64>,
    /// The largest upload the file API accepts.
    pub max_upload_bytes: Option<u64>,
    /// The time past which the agent exits.
    pub deadline: Option<SystemTime>,
    /// The container's out-of-memory counters (`memory.events` or `memory.oom_control` of its
    /// cgroup, read-only), when they can be found.
    pub memory_events: Option<OwnedFd>,
}

/// Why an agent in container mode cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Neither [`TOKEN_FILE_VAR`] nor [`TOKEN_VAR`] is set.
    #[error(
        "no credential: set {TOKEN_FILE_VAR} (a file holding the session's secret) or {TOKEN_VAR}"
    )]
    NoCredential,
    /// The credential file cannot be read.
    #[error("reading the credential file {path}: {source}")]
    TokenFile {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The credential is not a usable secret.
    #[error("{0}")]
    Secret(#[from] SecretError),
    /// A `HUTCH_SESSION_*` variable does not parse.
    #[error("{var}: {message}")]
    Config {
        /// The variable.
        var: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Another thread runs already: the environment cannot be changed safely.
    #[error("the agent must set up before it starts any thread")]
    Threaded,
    /// A process setting failed.
    #[error("{0}")]
    Setup(#[source] io::Error),
}

fn config(var: &'static str, message: impl Into<String>) -> ContainerError {
    ContainerError::Config {
        var,
        message: message.into(),
    }
}

/// Sets the agent up as a container's main process (see the module's documentation). Call it
/// first thing, before any other thread starts (it refuses otherwise).
pub fn enter() -> Result<Container, ContainerError> {
    if !single_threaded() {
        return Err(ContainerError::Threaded);
    }
    let vars: Vec<(OsString, OsString)> = std::env::vars_os().collect();
    let get = |name: &str| -> Option<String> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    };
    let secret_text = match (get(TOKEN_FILE_VAR), get(TOKEN_VAR)) {
        (Some(path), _) if !path.is_empty() => read_token_file(&path)?,
        (_, Some(token)) => token,
        _ => return Err(ContainerError::NoCredential),
    };
    let secret = Secret::new(&secret_text)?;
    drop(secret_text);
    let session = SessionVars::read(&get)?;
    // Nothing of hutch's reaches a command, and the credential leaves no trace in the block
    // `/proc/<pid>/environ` reads.
    // SAFETY: this process runs one thread (checked above).
    unsafe { crate::sys::scrub_env(TOKEN_VAR) };
    for (name, _) in vars
        .iter()
        .filter(|(k, _)| k.to_string_lossy().starts_with(OWN_PREFIX))
    {
        // SAFETY: as above.
        unsafe { crate::sys::remove_env(name) };
    }
    let base_env = vars
        .into_iter()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| !k.starts_with(OWN_PREFIX))
        .collect();

    crate::sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")
        .map_err(ContainerError::Setup)?;
    // No cgroups to kill a command's tree with: each process runs under a shepherd.
    crate::process::shepherd_every_process();
    // Keeps commands of the same user from reading the agent's memory (the credential) or
    // descriptors through /proc/<pid> or ptrace.
    crate::sys::prctl(libc::PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")
        .map_err(ContainerError::Setup)?;
    // Needed for the children's seccomp filter without privilege; no command gains any.
    crate::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
        .map_err(ContainerError::Setup)?;

    let root = is_root();
    if session.user.is_some() && !root {
        tracing::warn!(
            "{USER_VAR} is set but the agent is not root: commands run as the agent's own user"
        );
    }
    Ok(Container {
        secret,
        base_env,
        env: session.env,
        hostname: session.hostname.unwrap_or_else(own_hostname),
        image: session.image,
        working_dir: session.working_dir,
        user: session.user.filter(|_| root),
        memory_mb: session.memory_mb,
        max_upload_bytes: session.max_upload_bytes,
        deadline: session.deadline,
        memory_events: open_memory_events(),
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The `HUTCH_SESSION_*` variables, parsed.
#[derive(Debug, Default, PartialEq, Eq)]
struct SessionVars {
    env: BTreeMap<String, String>,
    hostname: Option<String>,
    image: Option<String>,
    working_dir: Option<String>,
    user: Option<String>,
    memory_mb: Option<u64>,
    max_upload_bytes: Option<u64>,
    deadline: Option<SystemTime>,
}

impl SessionVars {
    fn read(get: &dyn Fn(&str) -> Option<String>) -> Result<SessionVars, ContainerError> {
        let set = |var: &str| get(var).filter(|v| !v.is_empty());
        let number = |var: &'static str| -> Result<Option<u64>, ContainerError> {
            set(var)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .map_err(|_| config(var, format!("{v:?} is not a whole number")))
                })
                .transpose()
        };
        let env = match set(ENV_VAR) {
            None => BTreeMap::new(),
            Some(json) => serde_json::from_str::<BTreeMap<String, String>>(&json)
                .map_err(|e| config(ENV_VAR, format!("not a JSON object of strings: {e}")))?,
        };
        if let Some(bad) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
            return Err(config(ENV_VAR, format!("{bad:?} is not a variable name")));
        }
        let working_dir = set(WORKDIR_VAR);
        if let Some(dir) = working_dir.as_deref().filter(|d| !d.starts_with('/')) {
            return Err(config(
                WORKDIR_VAR,
                format!("{dir:?} is not an absolute path"),
            ));
        }
        Ok(SessionVars {
            env,
            hostname: set(HOSTNAME_VAR),
            image: set(IMAGE_VAR),
            working_dir,
            user: set(USER_VAR),
            memory_mb: number(MEMORY_MB_VAR)?,
            max_upload_bytes: number(MAX_UPLOAD_BYTES_VAR)?,
            deadline: set(DEADLINE_VAR)
                .map(|v| {
                    parse_deadline(&v).ok_or_else(|| {
                        config(
                            DEADLINE_VAR,
                            format!("{v:?} is neither RFC 3339 nor seconds since the Unix epoch"),
                        )
                    })
                })
                .transpose()?,
        })
    }
}

/// A deadline written as RFC 3339 (`2026-01-02T03:04:05Z`) or as seconds since the Unix
/// epoch.
fn parse_deadline(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return UNIX_EPOCH.checked_add(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    let nanos = at.unix_timestamp_nanos();
    let nanos = u64::try_from(nanos).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_nanos(nanos))
}

/// The credential file's content, bounded.
fn read_token_file(path: &str) -> Result<String, ContainerError> {
    let failed = |source: io::Error| ContainerError::TokenFile {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(failed)?;
    let mut text = String::new();
    file.take(TOKEN_FILE_MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(failed)?;
    Ok(text)
}

/// The kernel's host name of the container.
fn own_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}

/// Whether this process has one thread (`Threads:` of `/proc/self/status`).
fn single_threaded() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        == Some(1)
}

/// The container's OOM counters: its cgroup's `memory.events` (v2) or `memory.oom_control`
/// (v1), found through `/proc/self/cgroup` under `/sys/fs/cgroup`. With a cgroup namespace
/// (the default on cgroup v2) the container's cgroup is the root of what it sees.
fn open_memory_events() -> Option<OwnedFd> {
    let cgroups = fs::read_to_string("/proc/self/cgroup").ok()?;
    let candidates = memory_events_paths(&cgroups);
    candidates.iter().find_map(|path| {
        fs::File::open(path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.is_file()))
            .map(OwnedFd::from)
    })
}

/// Where the OOM counters of the cgroups in `/proc/self/cgroup`'s text may be, best first.
fn memory_events_paths(cgroups: &str) -> Vec<std::path::PathBuf> {
    let mut paths = Vec::new();
    for line in cgroups.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let relative = path.trim_start_matches('/');
        if controllers.is_empty() {
            for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                paths.push(Path::new(base).join(relative).join("memory.events"));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            paths.push(
                Path::new("/sys/fs/cgroup/memory")
                    .join(relative)
                    .join("memory.oom_control"),
            );
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Result<SessionVars, ContainerError> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        SessionVars::read(&|name| map.get(name).cloned())
    }

    #[test]
    fn the_session_comes_from_its_variables() {
        let parsed = vars(&[
            (ENV_VAR, r#"{"A":"1","B":"two words"}"#),
            (HOSTNAME_VAR, "box"),
            (IMAGE_VAR, "python:3.12"),
            (WORKDIR_VAR, "/app"),
            (USER_VAR, "1000:1000"),
            (MEMORY_MB_VAR, "512"),
            (MAX_UPLOAD_BYTES_VAR, "1048576"),
            (DEADLINE_VAR, "2030-01-01T00:00:00Z"),
        ])
        .unwrap();
        assert_eq!(parsed.env.get("B").map(String::as_str), Some("two words"));
        assert_eq!(parsed.hostname.as_deref(), Some("box"));
        assert_eq!(parsed.working_dir.as_deref(), Some("/app"));
        assert_eq!(parsed.memory_mb, Some(512));
        assert_eq!(parsed.max_upload_bytes, Some(1 << 20));
        assert_eq!(
            parsed.deadline,
            Some(UNIX_EPOCH + Duration::from_secs(1_893_456_000))
        );
        assert_eq!(vars(&[]).unwrap(), SessionVars::default());
    }

    #[test]
    fn bad_variables_are_named() {
        for (var, value) in [
            (ENV_VAR, "[1]"),
            (ENV_VAR, r#"{"A":1}"#),
            (ENV_VAR, r#"{"A=B":"1"}"#),
            (WORKDIR_VAR, "relative"),
            (MEMORY_MB_VAR, "lots"),
            (MAX_UPLOAD_BYTES_VAR, "-1"),
            (DEADLINE_VAR, "tomorrow"),
        ] {
            match vars(&[(var, value)]) {
                Err(ContainerError::Config { var: named, .. }) => assert_eq!(named, var),
                other => panic!("{var}={value}: {other:?}"),
            }
        }
    }

    #[test]
    fn deadlines_are_rfc3339_or_unix_seconds() {
        let at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        assert_eq!(parse_deadline("1800000000"), Some(at));
        assert_eq!(parse_deadline("2027-01-15T08:00:00Z"), Some(at));
        assert_eq!(parse_deadline("2027-01-15T09:00:00+01:00"), Some(at));
        assert_eq!(parse_deadline("1969-12-31T00:00:00Z"), None);
        assert_eq!(parse_deadline(""), None);
    }

    #[test]
    fn oom_counters_are_looked_for_in_either_cgroup_version() {
        let v2 = memory_events_paths("0::/kubepods/pod1/abc\n");
        assert_eq!(
            v2[0],
            Path::new("/sys/fs/cgroup/kubepods/pod1/abc/memory.events")
        );
        let v1 = memory_events_paths("5:memory:/docker/x\n4:cpu,cpuacct:/docker/x\n");
        assert_eq!(
            v1,
            vec![Path::new(
                "/sys/fs/cgroup/memory/docker/x/memory.oom_control"
            )]
        );
        assert_eq!(
            memory_events_paths("0::/\n")[0],
            Path::new("/sys/fs/cgroup/memory.events")
        );
    }
}
