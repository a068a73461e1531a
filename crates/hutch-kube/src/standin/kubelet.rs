//! The stand-in kubelet: runs each pod of the stand-in cluster as a local process.
//!
//! Each pod gets a loopback address of its own (127.x.y.z with x from 64 to 127, its pod IP) and runs its main
//! container's command, `/hutch/hutch` replaced by a local binary, with `--listen <pod
//! IP>:7171` added, inside `unshare --user --map-root-user --pid --fork --kill-child --mount`:
//! a pid namespace whose init is the agent, so killing it on delete kills everything the
//! agent started, and a private mount namespace with the namespace's own `/proc` (what
//! `ps` in a pod shows) and a tmpfs over `/tmp`, where
//! `/tmp/workspace` stands for the pod's `/workspace` emptyDir (`HUTCH_SESSION_WORKDIR`). The pod's Secret is
//! written to a file of the kubelet's own directory for `HUTCH_AGENT_TOKEN_FILE`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::{Kind, Store};

/// The port agents listen on, on their pod IP (the runtime's default agent port).
pub const AGENT_PORT: u16 = 7171;

/// The stand-in kubelet; stops its processes when dropped.
pub struct Kubelet {
    task: tokio::task::JoinHandle<()>,
    state: Arc<Mutex<State>>,
    /// Where pods' Secrets are written, beside the `hutch` the pods run.
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct State {
    next: u32,
    /// Running pods: their process's pid and what stops it.
    pods: HashMap<(String, String), (u32, oneshot::Sender<()>)>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Kubelet {
    pub(super) fn start(store: Store, hutch: PathBuf) -> std::io::Result<Kubelet> {
        // Not under /tmp: the pods' processes get a tmpfs of their own there.
        let dir = tempfile::Builder::new()
            .prefix("hutch-kubelet-")
            .tempdir_in("/var/tmp")?;
        let secrets = dir.path().to_owned();
        // What the init container does in a real pod: `hutch` is put where the pod's process
        // can run it. The given path may be under `/tmp`, which the pods' own tmpfs hides (a
        // checkout in a temporary directory), so pods run a link (or copy) of it in this
        // directory.
        let hutch = {
            let program = dir.path().join("hutch");
            if std::fs::hard_link(&hutch, &program).is_err() {
                std::fs::copy(&hutch, &program)?;
            }
            program
        };
        let state = Arc::new(Mutex::new(State::default()));
        let mut changes = store.subscribe();
        let task = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                while let Ok(event) = changes.recv().await {
                    if event.kind != Kind::Pods {
                        continue;
                    }
                    let namespace = event.object["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let name = event.object["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    match event.change {
                        "ADDED" => {
                            let Some(ip) = free_address(&state) else {
                                fail(
                                    &store,
                                    &(namespace, name),
                                    "no free loopback address".into(),
                                );
                                continue;
                            };
                            run(
                                &store,
                                &state,
                                &hutch,
                                &secrets,
                                &event.object,
                                (namespace, name),
                                ip,
                            );
                        }
                        "DELETED" => {
                            if let Some((_, stop)) = lock(&state).pods.remove(&(namespace, name)) {
                                let _ = stop.send(());
                            }
                        }
                        _ => {}
                    }
                }
            })
        };
        Ok(Kubelet {
            task,
            state,
            _dir: dir,
        })
    }

    /// The pid (in the host's namespace) of the process running pod `name`, while it runs.
    pub fn pid(&self, namespace: &str, name: &str) -> Option<u32> {
        lock(&self.state)
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|(pid, _)| *pid)
    }

    /// Stops every pod's process.
    pub(super) fn stop_all(&self) {
        for (_, (_, stop)) in lock(&self.state).pods.drain() {
            let _ = stop.send(());
        }
    }

    /// How many pods' processes run.
    pub fn running(&self) -> usize {
        lock(&self.state).pods.len()
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        self.stop_all();
    }
}

/// A loopback address (127.x.y.z, x from 64 up) whose agent port is free: each cluster
/// starts at a random place, and skips addresses another test's pods hold.
fn free_address(state: &Mutex<State>) -> Option<String> {
    let mut state = lock(state);
    if state.next == 0 {
        state.next = rand::random_range(0..(1 << 20));
    }
    for _ in 0..1024 {
        state.next = (state.next + 1) % (1 << 20);
        let n = state.next;
        let ip = format!("127.{}.{}.{}", 64 + (n >> 14), (n >> 6) & 255, (n & 63) + 1);
        if std::net::TcpListener::bind((ip.as_str(), AGENT_PORT)).is_ok() {
            return Some(ip);
        }
    }
    None
}

fn fail(store: &Store, (namespace, name): &(String, String), message: String) {
    store.set_pod_status(
        namespace,
        name,
        json!({"phase": "Failed", "reason": "StandInKubelet", "message": message}),
    );
}

/// A copy of this process's stderr, or nothing when it cannot be copied.
fn stderr() -> Stdio {
    use std::os::fd::AsFd;
    std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_or_else(|_| Stdio::null(), Stdio::from)
}

/// Starts pod `key`'s process and a task that reports its end or kills it on delete.
fn run(
    store: &Store,
    state: &Arc<Mutex<State>>,
    hutch: &std::path::Path,
    secrets: &std::path::Path,
    pod: &Value,
    key: (String, String),
    ip: String,
) {
    let container = &pod["spec"]["containers"][0];
    let mut argv: Vec<String> = container["command"]
        .as_array()
        .into_iter()
        .chain(container["args"].as_array())
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    match argv.first_mut() {
        Some(program) if program.starts_with(crate::HUTCH_DIR) => {
            *program = hutch.display().to_string();
        }
        _ => {
            return fail(
                store,
                &key,
                "the stand-in kubelet runs only /hutch/hutch".into(),
            );
        }
    }
    argv.push("--listen".into());
    argv.push(format!("{ip}:{AGENT_PORT}"));
    let mut env: Vec<(String, String)> = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            Some((
                v["name"].as_str()?.to_owned(),
                v["value"].as_str()?.to_owned(),
            ))
        })
        .collect();
    // The Secret volume, as a file of the kubelet's.
    let secret_name = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find_map(|v| v["secret"]["secretName"].as_str());
    if let Some(secret_name) = secret_name {
        let Some(secret) = store.get(Kind::Secrets, &key.0, secret_name) else {
            return fail(store, &key, format!("secret {secret_name} not found"));
        };
        use base64::Engine;
        let token = secret["data"][crate::TOKEN_KEY]
            .as_str()
            .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
            .unwrap_or_default();
        let file = secrets.join(format!("{}-{}", key.0, key.1));
        if let Err(err) = std::fs::write(&file, token) {
            return fail(store, &key, format!("writing the secret: {err}"));
        }
        env.retain(|(name, _)| name != "HUTCH_AGENT_TOKEN_FILE");
        env.push(("HUTCH_AGENT_TOKEN_FILE".into(), file.display().to_string()));
    }
    // The pod's `/workspace` emptyDir is a directory of the process's own `/tmp` here.
    if !env.iter().any(|(name, _)| name == "HUTCH_SESSION_WORKDIR") {
        env.push(("HUTCH_SESSION_WORKDIR".into(), "/tmp/workspace".into()));
    }
    let mut command = tokio::process::Command::new("unshare");
    command
        // A user namespace too: the stand-in needs no root.
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount",
            "--mount-proc",
            "--propagation",
            "private",
            "--",
        ])
        .args([
            "sh",
            "-c",
            "mount -t tmpfs stand-in-tmp /tmp && mkdir /tmp/workspace && exec \"$@\"",
            "sh",
        ])
        .args(&argv)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env)
        .stdin(Stdio::null())
        // What a pod prints goes to the kubelet's log (stderr), not into a benchmark's table.
        .stdout(stderr())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return fail(store, &key, format!("starting the pod's process: {err}")),
    };
    let (stop, stopped) = oneshot::channel();
    lock(state)
        .pods
        .insert(key.clone(), (child.id().unwrap_or_default(), stop));
    store.set_pod_status(
        &key.0,
        &key.1,
        json!({"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "127.0.0.1"}),
    );
    let store = store.clone();
    let state = Arc::clone(state);
    tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                lock(&state).pods.remove(&key);
                let code = status.ok().and_then(|s| s.code()).unwrap_or(-1);
                let phase = if code == 0 { "Succeeded" } else { "Failed" };
                store.set_pod_status(&key.0, &key.1, json!({"phase": phase, "podIP": ip, "message": format!("exit code {code}")}));
            }
            _ = stopped => {
                let _ = child.kill().await;
            }
        }
    });
}
