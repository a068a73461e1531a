//! A real `hutch serve` for end-to-end tests: the built binary, a private data directory, a
//! free loopback port, and a token minted with the secret the test gave it.
//!
//! Sandbox tests need root. Without it they fail, saying so, so that `cargo test` never reports
//! a test that did not run as passed. `HUTCH_SKIP_ROOT_TESTS=1` turns that failure into a skip
//! (not under CI, `CI=true`): each such test then prints `SKIPPED <test>: needs root` past the
//! harness's output capture, so the skip shows in the plain `cargo test` output.
//!
//! `HUTCH_TEST_RUNTIME=kubernetes` runs every server of a suite with `--runtime kubernetes`
//! against a stand-in cluster of its own (an in-memory Kubernetes API subset and a kubelet
//! running each pod's `hutch agent --container` as a local process; no Kubernetes API server
//! can run here): the same tests, sessions as pods. With `KUBECONFIG` and
//! `HUTCH_KUBE_AGENT_IMAGE` set as well (and optionally `HUTCH_KUBE_NAMESPACE`, `default`
//! otherwise), the servers use that real cluster instead; without them, a line on stderr says
//! the real-cluster run is skipped.

#![allow(clippy::unwrap_used)] // a panic is how a test fails
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod s3;

use hutch_kube::standin::{BackgroundCluster, StandInCluster};

use hutch_api::{CommandRequest, CommandResult, CreateSessionRequest, ResourcesRequest, Session};
use hutch_client::HutchClient;

/// The HS256 secret every test server uses.
pub const SECRET: &str = "test-secret-for-hutch-end-to-end-tests";

/// Whether this test may go on: true as root. Without root it panics, unless
/// `HUTCH_SKIP_ROOT_TESTS=1` is set outside CI: then it prints the skip where the test
/// harness does not hide it and returns false, and the test returns at once.
pub fn can_run_sandboxes() -> bool {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        return true;
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let skip = std::env::var("HUTCH_SKIP_ROOT_TESTS").is_ok_and(|v| v == "1");
    if skip && !ci {
        let thread = std::thread::current();
        let test = thread.name().unwrap_or("a sandbox test");
        // Written to the process's stderr, not through eprintln!, which the harness captures.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test}: needs root (HUTCH_SKIP_ROOT_TESTS=1)"
        );
        return false;
    }
    panic!(
        "this test builds real sandboxes and needs root: run it as root{}",
        if ci {
            " (under CI=true a sandbox test is never skipped)"
        } else {
            ", or set HUTCH_SKIP_ROOT_TESTS=1 to skip it visibly"
        }
    );
}

/// A running server.
pub struct TestServer {
    child: Option<Child>,
    data: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    extra_args: Vec<String>,
    /// Where it listens (`127.0.0.1:0`: a free port).
    listen: String,
    /// Whether it runs in a network namespace of its own.
    private_network: bool,
    /// The network namespace it runs in, when the test made one for it.
    netns: Option<PathBuf>,
    /// Whether it starts with SIGHUP, SIGINT and SIGQUIT ignored, as `nohup … &` starts it.
    signals_ignored: bool,
    /// Extra environment of the server process.
    env: Vec<(String, String)>,
    /// The S3 stand-in holding its storage contexts, with `HUTCH_TEST_BLOB_STORE=s3`.
    s3: Option<s3::Moto>,
    /// The stand-in cluster its sessions run in, under `--runtime kubernetes`.
    kube: Option<Kube>,
}

/// The namespace of the sessions' pods under `--runtime kubernetes`.
pub const KUBE_NAMESPACE: &str = "hutch-e2e";

/// The cluster a server runs its sessions in: a stand-in of its own, or the real one the
/// environment names.
struct Kube {
    /// The stand-in; none for a real cluster.
    cluster: Option<BackgroundCluster>,
    kubeconfig: PathBuf,
    namespace: String,
    agent_image: String,
    _dir: Option<tempfile::TempDir>,
}

/// The real cluster to run sessions in, when `KUBECONFIG` and `HUTCH_KUBE_AGENT_IMAGE` name
/// one: (kubeconfig, agent image, namespace).
pub fn real_cluster() -> Option<(PathBuf, String, String)> {
    let kubeconfig = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())?;
    let image = std::env::var("HUTCH_KUBE_AGENT_IMAGE")
        .ok()
        .filter(|v| !v.is_empty())?;
    let namespace = std::env::var("HUTCH_KUBE_NAMESPACE").unwrap_or_else(|_| "default".into());
    Some((kubeconfig.into(), image, namespace))
}

/// Whether the suites' servers run their sessions as pods (`HUTCH_TEST_RUNTIME=kubernetes`).
pub fn kube_wanted() -> bool {
    std::env::var("HUTCH_TEST_RUNTIME").is_ok_and(|v| v == "kubernetes")
}

/// The sessions' default working directory: `/workspace`, or `/tmp/workspace` in a stand-in
/// pod (which cannot make `/workspace` on the host).
#[allow(dead_code)] // not every suite reads it
pub fn workspace() -> &'static str {
    if kube_wanted() && real_cluster().is_none() {
        "/tmp/workspace"
    } else {
        "/workspace"
    }
}

/// True, after saying why on stderr, when a test cannot hold for sessions that are pods
/// (`HUTCH_TEST_RUNTIME=kubernetes`): the caller returns.
#[allow(dead_code)] // not every suite skips
pub fn skip_on_kubernetes(why: &str) -> bool {
    if kube_wanted() {
        let current = std::thread::current();
        let test = current.name().unwrap_or("a test");
        // Written to the process's stderr, not through eprintln!, which the harness captures.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED {test} under HUTCH_TEST_RUNTIME=kubernetes: {why}"
        );
    }
    kube_wanted()
}

impl TestServer {
    /// Starts a server with a fresh data directory and a warm pool of one.
    pub fn start() -> TestServer {
        TestServer::start_with(&["--warm-pool", "1"])
    }

    /// Starts a server with extra `hutch serve` arguments.
    pub fn start_with(args: &[&str]) -> TestServer {
        TestServer::launch(args, "127.0.0.1:0", false)
    }

    /// Starts a server with SIGHUP, SIGINT and SIGQUIT ignored, as `nohup hutch serve &` from
    /// a script would, and extra `hutch serve` arguments.
    pub fn start_with_signals_ignored(args: &[&str]) -> TestServer {
        let mut server = TestServer::prepare(args, "127.0.0.1:0", false);
        server.signals_ignored = true;
        server.spawn();
        server
    }

    /// Starts a server with extra environment variables and `hutch serve` arguments.
    pub fn start_with_env(env: &[(&str, &str)], args: &[&str]) -> TestServer {
        let mut server = TestServer::prepare(args, "127.0.0.1:0", false);
        server.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        server.spawn();
        server
    }

    /// Starts a server in a network namespace of its own (with only a loopback), listening
    /// on `listen`: a documented address such as `127.0.0.1:7420` meets nothing else on
    /// this machine there. Reach it with commands run through [`TestServer::in_network`].
    pub fn start_in_private_network(listen: &str, args: &[&str]) -> TestServer {
        TestServer::launch(args, listen, true)
    }

    /// `command` made to run in the server's network namespace (for a server started by
    /// [`TestServer::start_in_private_network`]; unchanged otherwise).
    pub fn in_network(&self, command: Command) -> Command {
        let Some(pid) = self.pid().filter(|_| self.private_network) else {
            return command;
        };
        let mut entered = Command::new("nsenter");
        entered
            .arg(format!("--net=/proc/{pid}/ns/net"))
            .arg("--")
            .arg(command.get_program())
            .args(command.get_args());
        for (name, value) in command.get_envs() {
            match value {
                Some(value) => entered.env(name, value),
                None => entered.env_remove(name),
            };
        }
        if let Some(dir) = command.get_current_dir() {
            entered.current_dir(dir);
        }
        entered
    }

    /// Starts a server in the network namespace `netns` (a `/proc/PID/ns/net` path the test
    /// holds open), listening on `listen`; restarts enter the same namespace.
    pub fn start_in_netns(netns: &Path, listen: &str, args: &[&str]) -> TestServer {
        let mut server = TestServer::prepare(args, listen, true);
        server.netns = Some(netns.to_owned());
        server.spawn();
        server
    }

    /// Starts a server in the network namespace `netns` (see [`TestServer::start_in_netns`])
    /// with its data directory at `data` (which the test made and removes).
    pub fn start_in_netns_and_data_dir(
        netns: &Path,
        data: &Path,
        listen: &str,
        args: &[&str],
    ) -> TestServer {
        let mut server = TestServer::prepare(args, listen, true);
        server.netns = Some(netns.to_owned());
        server._tempdir = None;
        server.data = data.to_owned();
        server.spawn();
        server
    }

    /// Starts a server with its data directory at `data` (which the test made and removes),
    /// and extra `hutch serve` arguments.
    pub fn start_in_data_dir(data: &Path, args: &[&str]) -> TestServer {
        let mut server = TestServer::prepare(args, "127.0.0.1:0", false);
        server._tempdir = None;
        server.data = data.to_owned();
        server.spawn();
        server
    }

    /// Starts a server with its data directory at `data` (which the test made and removes),
    /// extra environment variables and `hutch serve` arguments.
    pub fn start_in_data_dir_with_env(
        data: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> TestServer {
        let mut server = TestServer::prepare(args, "127.0.0.1:0", false);
        server._tempdir = None;
        server.data = data.to_owned();
        server.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        server.spawn();
        server
    }

    /// Starts a server running its sessions as pods of a stand-in cluster of its own
    /// (whatever `HUTCH_TEST_RUNTIME` says), with extra `hutch serve` arguments.
    pub fn start_on_kubernetes(args: &[&str]) -> TestServer {
        let mut server = TestServer::prepare(args, "127.0.0.1:0", false);
        if server
            .kube
            .as_ref()
            .is_none_or(|kube| kube.cluster.is_none())
        {
            server.kube = Some(Kube::stand_in());
        }
        server.spawn();
        server
    }

    /// The stand-in cluster of a server running sessions as pods.
    pub fn stand_in(&self) -> Option<&StandInCluster> {
        self.kube
            .as_ref()
            .and_then(|kube| kube.cluster.as_ref())
            .map(BackgroundCluster::cluster)
    }

    fn launch(args: &[&str], listen: &str, private_network: bool) -> TestServer {
        let mut server = TestServer::prepare(args, listen, private_network);
        server.spawn();
        server
    }

    fn prepare(args: &[&str], listen: &str, private_network: bool) -> TestServer {
        let tempdir = tempfile::Builder::new()
            .prefix("hutch-e2e")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let data = tempdir.path().to_owned();
        let kube = kube_wanted().then(Kube::from_env);
        TestServer {
            child: None,
            data,
            _tempdir: Some(tempdir),
            url: String::new(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            listen: listen.to_owned(),
            private_network,
            netns: None,
            signals_ignored: false,
            env: Vec::new(),
            s3: s3::wanted().then(s3::Moto::start),
            kube,
        }
    }

    fn spawn(&mut self) {
        let hutch = env!("CARGO_BIN_EXE_hutch");
        let mut command = if let Some(netns) = &self.netns {
            let mut command = Command::new("nsenter");
            command.arg(format!("--net={}", netns.display())).arg("--");
            command.arg(hutch);
            command
        } else if self.private_network {
            // unshare and the shell exec in turn: the child's pid is the server's.
            let mut command = Command::new("unshare");
            command.args([
                "--net",
                "--",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ]);
            command.arg(hutch);
            command
        } else if self.signals_ignored {
            // An ignored signal survives exec: the server starts with them ignored.
            let mut command = Command::new("sh");
            command.args(["-c", "trap '' HUP INT QUIT; exec \"$0\" \"$@\""]);
            command.arg(hutch);
            command
        } else {
            Command::new(hutch)
        };
        let mut child = command
            .args(["serve", "--listen", &self.listen, "--on-exit", "destroy"])
            .arg("--data-dir")
            .arg(&self.data)
            .args(
                self.kube
                    .iter()
                    .flat_map(|kube| kube.args(&self.extra_args)),
            )
            .args(&self.extra_args)
            .env("HUTCH_JWT_SECRET", SECRET)
            .env("HUTCH_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(self.s3.iter().flat_map(|moto| {
                [
                    "--blob-store".to_owned(),
                    format!("s3://{}/{}", s3::BUCKET, s3::PREFIX),
                    "--blob-store-endpoint".to_owned(),
                    moto.endpoint(),
                ]
            }))
            .envs(self.s3.iter().flat_map(|_| {
                [
                    ("AWS_ACCESS_KEY_ID", "testing"),
                    ("AWS_SECRET_ACCESS_KEY", "testing"),
                    ("AWS_REGION", "us-east-1"),
                ]
            }))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hutch serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("hutch serve exited before listening")
                .expect("read stdout");
            if let Some(url) = line.split("listening on ").nth(1) {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        self.url = url;
        self.child = Some(child);
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The names of the stored versions (blobs) of storage context `id`, wherever the
    /// server keeps them (its data directory, or its bucket).
    pub fn context_blobs(&self, id: &str) -> Vec<String> {
        match &self.s3 {
            Some(moto) => moto.keys(&format!("{}/{id}/", s3::PREFIX)),
            None => match std::fs::read_dir(self.data.join("contexts").join(id)) {
                Ok(entries) => entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => panic!("listing the blobs of {id}: {err}"),
            },
        }
    }

    /// A token for `tenant`.
    pub fn token(&self, tenant: &str) -> String {
        hutch_server::auth::mint_token(SECRET.as_bytes(), tenant, Duration::from_secs(3600), false)
            .expect("mint token")
    }

    /// A client acting as `tenant`.
    pub fn client(&self, tenant: &str) -> HutchClient {
        HutchClient::new(&self.url, &self.token(tenant)).expect("client")
    }

    /// Kills the server with SIGKILL (sandboxes keep running) and waits for it.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data directory (a new port).
    pub fn restart(&mut self) {
        self.kill_hard();
        self.spawn();
    }

    /// Starts the server again on the same data directory with `args` instead of the
    /// arguments it had (as an operator changes a flag across a restart).
    #[allow(dead_code)] // not every test binary changes flags
    pub fn restart_with(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.restart();
    }

    /// Stops the server with SIGTERM (it destroys its sandboxes) and waits up to 60 s: a
    /// loaded machine, or a test that failed with a large file or transfer in flight, can make
    /// the destroys slow, and a SIGKILL would leave the sandboxes behind.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = writeln!(
                std::io::stderr(),
                "hutch serve (pid {}) did not stop within 60 s of SIGTERM: killed; its \
                 sandboxes may be left under {}",
                child.id(),
                self.data_dir().display()
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Kube {
    /// The real cluster the environment names ([`real_cluster`]), else a stand-in.
    fn from_env() -> Kube {
        let Some((kubeconfig, agent_image, namespace)) = real_cluster() else {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                let _ = writeln!(
                    std::io::stderr(),
                    "real-cluster run skipped: set KUBECONFIG and HUTCH_KUBE_AGENT_IMAGE to run \
                     the suite's sessions as pods of a real cluster; using the stand-in cluster"
                );
            });
            return Kube::stand_in();
        };
        Kube {
            cluster: None,
            kubeconfig,
            namespace,
            agent_image,
            _dir: None,
        }
    }

    /// Starts a stand-in cluster and writes a kubeconfig naming it.
    fn stand_in() -> Kube {
        let dir = tempfile::Builder::new()
            .prefix("hutch-kubeconfig")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let cluster = BackgroundCluster::start(Path::new(env!("CARGO_BIN_EXE_hutch")))
            .expect("start the stand-in cluster");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster
            .cluster()
            .write_kubeconfig(&kubeconfig, KUBE_NAMESPACE)
            .expect("write the kubeconfig");
        Kube {
            cluster: Some(cluster),
            kubeconfig,
            namespace: KUBE_NAMESPACE.to_owned(),
            agent_image: "stand-in.invalid/hutch:test".to_owned(),
            _dir: Some(dir),
        }
    }

    /// The `hutch serve` arguments that make it use this cluster; a warm pool of one pod
    /// unless `extra` names one.
    fn args(&self, extra: &[String]) -> Vec<String> {
        let mut args = vec![
            "--runtime".to_owned(),
            "kubernetes".to_owned(),
            "--kubeconfig".to_owned(),
            self.kubeconfig.display().to_string(),
            "--kube-namespace".to_owned(),
            self.namespace.clone(),
            "--kube-agent-image".to_owned(),
            self.agent_image.clone(),
        ];
        if !extra.iter().any(|a| a.starts_with("--kube-warm-pool")) {
            args.extend(["--kube-warm-pool".to_owned(), "1".to_owned()]);
        }
        args
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Creates a session with the defaults.
pub async fn session(client: &HutchClient) -> Session {
    client
        .create_session(&CreateSessionRequest::default())
        .await
        .expect("create session")
}

/// Creates a session with these resource limits.
pub async fn session_with(client: &HutchClient, resources: ResourcesRequest) -> Session {
    let req = CreateSessionRequest {
        resources: Some(resources),
        ..CreateSessionRequest::default()
    };
    client.create_session(&req).await.expect("create session")
}

/// Runs a shell command line in a session.
pub async fn sh(client: &HutchClient, session: &Session, command: &str) -> CommandResult {
    sh_with(client, session, command, 30.0).await
}

/// Runs a shell command line with a timeout in seconds.
pub async fn sh_with(
    client: &HutchClient,
    session: &Session,
    command: &str,
    timeout: f64,
) -> CommandResult {
    let req = CommandRequest {
        command: Some(command.to_owned()),
        timeout: Some(timeout),
        ..CommandRequest::default()
    };
    client
        .run_command(session.session_id, &req)
        .await
        .expect("run command")
}

/// The host's view of a sandbox, found through a namespace inode reported from inside.
pub struct HostView {
    /// Host pid of the agent.
    pub agent_pid: i32,
    /// The agent's cgroup v2 path relative to the cgroup2 mount (`/hutch/<instance>/<sandbox>`).
    pub cgroup: String,
    /// The sandbox id (last path component of the cgroup).
    pub sandbox_id: String,
    /// The UTS namespace link, e.g. `uts:[4026532301]`.
    pub uts: String,
}

/// Finds the host processes of `session` by the UTS namespace its commands run in.
pub async fn host_view(client: &HutchClient, session: &Session) -> HostView {
    host_view_by(client, session, "readlink /proc/self/ns/uts").await
}

/// [`host_view`], reading the UTS namespace link with `command` (such as `busybox readlink
/// /proc/self/ns/uts` in an image without `readlink`).
pub async fn host_view_by(client: &HutchClient, session: &Session, command: &str) -> HostView {
    let uts = sh(client, session, command).await.stdout.trim().to_owned();
    assert!(uts.starts_with("uts:["), "unexpected uts link {uts:?}");
    let pids = pids_in_uts(&uts);
    let agent_pid = *pids
        .iter()
        .find(|pid| is_agent(**pid))
        .expect("the sandbox's agent on the host");
    let cgroup_file =
        std::fs::read_to_string(format!("/proc/{agent_pid}/cgroup")).expect("agent cgroup");
    // The agent lives in its sandbox cgroup's `agent/`.
    let cgroup = cgroup_file
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("cgroup v2 line");
    let cgroup = cgroup.strip_suffix("/agent").unwrap_or(cgroup).to_owned();
    let sandbox_id = cgroup.rsplit('/').next().unwrap_or_default().to_owned();
    HostView {
        agent_pid,
        cgroup,
        sandbox_id,
        uts,
    }
}

/// Whether the host process `pid` is a sandbox's agent: `hutch-agent`, or `hutch agent`.
pub fn is_agent(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.starts_with("hutch-agent\0") || c.starts_with("hutch\0agent\0"))
}

/// Host pids whose UTS namespace is `uts`.
pub fn pids_in_uts(uts: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/uts"))
            .is_ok_and(|l| l.to_string_lossy() == uts)
        {
            pids.push(pid);
        }
    }
    pids
}

/// How many host processes in the UTS namespace `uts` run `program` (by `argv[0]`).
pub fn count_running(uts: &str, program: &str) -> usize {
    pids_in_uts(uts)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split('\0').next() == Some(program))
        })
        .count()
}

/// Whether the sandbox's cgroup v2 directory exists (hybrid or pure v2 host).
pub fn cgroup_exists(view: &HostView) -> bool {
    let relative = view.cgroup.trim_start_matches('/');
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .iter()
        .any(|root| Path::new(root).join(relative).join("cgroup.procs").exists())
}

/// Asserts that nothing of a destroyed sandbox remains on the host: no process, no cgroup in
/// any hierarchy, no mount, no directory (the trash is emptied in the background, so this
/// waits for it: up to 30 s, as a loaded machine's disk may take seconds).
pub fn assert_nothing_left(server: &TestServer, view: &HostView) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut left = Vec::new();
        // The kernel reuses a freed namespace's inode number, so a sandbox built since (a
        // warm one, say) may show the same `uts:[…]`: only processes still in this sandbox's
        // cgroups are its own.
        let own: Vec<i32> = pids_in_uts(&view.uts)
            .into_iter()
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .is_ok_and(|c| c.contains(&view.sandbox_id))
            })
            .collect();
        if !own.is_empty() {
            left.push(format!("processes {own:?} in {}", view.uts));
        }
        for hierarchy in ["unified", "memory", "pids", "cpu", ""] {
            let root = Path::new("/sys/fs/cgroup").join(hierarchy);
            let instance_parent = view.cgroup.trim_start_matches('/');
            if root.join(instance_parent).exists() {
                left.push(format!("cgroup {}", root.join(instance_parent).display()));
            }
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        if mountinfo.contains(&view.sandbox_id) {
            left.push("a mount in the host's mount table".into());
        }
        let sandbox_dir = server.data_dir().join("sandboxes").join(&view.sandbox_id);
        if sandbox_dir.exists() {
            left.push(format!("directory {}", sandbox_dir.display()));
        }
        let disk = server.data_dir().join("disks").join(&view.sandbox_id);
        if disk.exists() {
            left.push(format!("its disk {}", disk.display()));
        }
        let trash_left = std::fs::read_dir(server.data_dir().join("trash"))
            .map(|d| {
                d.flatten().any(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&view.sandbox_id)
                })
            })
            .unwrap_or(false);
        if trash_left {
            left.push("its directory in the trash".into());
        }
        if server
            .data_dir()
            .join("sockets")
            .join(format!("{}.sock", view.sandbox_id))
            .exists()
        {
            left.push("its socket".into());
        }
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "sandbox {} left behind: {}",
                view.sandbox_id,
                left.join(", ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `hutch ARGS…` with `HUTCH_URL` and `HUTCH_TOKEN` set as a user would set them.
pub fn hutch_cli(url: &str, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(args)
        .env("HUTCH_URL", url)
        .env("HUTCH_TOKEN", token)
        .output()
        .unwrap()
}

/// Standard output of a command that must succeed.
pub fn ok(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
