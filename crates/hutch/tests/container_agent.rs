//! `hutch agent --container`: the agent as a pod's main process, serving on TCP behind the
//! connection preface. Each agent runs as a plain child process (no sandbox of hutch's around
//! it), in a private mount namespace whose root is an overlay of the host's `/` on a tmpfs, so
//! nothing it or its commands write reaches the host's files; it listens on loopback.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hutch_sandbox::preface::{self, client_preface};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// How long anything a test waits for may take under load before the test fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// Builds the agent's root and starts it: `$1` is a fresh directory for the tmpfs, `$2` the
/// `hutch` binary, `$3` a credential file to show at `/run/hutch-token` (or empty), `$4` a
/// `chroot --userspec` (or empty).
const LAUNCH: &str = r#"
R="$1"; HUTCH="$2"; TOKEN_FILE="$3"; USERSPEC="$4"
mount -t tmpfs -o size=256m,mode=0700 tmpfs "$R"
mkdir "$R/upper" "$R/work" "$R/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$R/root"
mount --rbind /dev "$R/root/dev"
mount --rbind /proc "$R/root/proc"
mount -t tmpfs tmpfs "$R/root/tmp"
mount -t tmpfs tmpfs "$R/root/root"
mkdir -p "$R/root/workspace" "$R/root/run"
chmod 1777 "$R/root/workspace"
touch "$R/root/hutch-agent"
mount --bind "$HUTCH" "$R/root/hutch-agent"
if [ -n "$TOKEN_FILE" ]; then
  touch "$R/root/run/hutch-token"
  mount --bind -o ro "$TOKEN_FILE" "$R/root/run/hutch-token"
fi
exec chroot ${USERSPEC:+--userspec=$USERSPEC} "$R/root" /hutch-agent agent --container --listen 127.0.0.1:0
"#;

/// A random secret: 64 hex digits.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How to start an agent.
#[derive(Default)]
struct Options<'a> {
    /// The credential in `HUTCH_AGENT_TOKEN` (else in a file named by
    /// `HUTCH_AGENT_TOKEN_FILE`).
    in_env: bool,
    /// Run the agent as this `uid:gid`.
    as_user: Option<&'a str>,
    /// More variables for the agent.
    env: Vec<(&'a str, String)>,
}

/// A running agent in container mode.
struct ContainerAgent {
    child: Child,
    addr: SocketAddr,
    secret: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl ContainerAgent {
    fn start() -> ContainerAgent {
        ContainerAgent::start_with(Options::default())
    }

    fn start_with(options: Options<'_>) -> ContainerAgent {
        let secret = new_secret();
        let dir = tempfile::tempdir().unwrap();
        let (mut child, log) = launch(dir.path(), &secret, &options);
        let addr = wait_for_address(&mut child, &log);
        ContainerAgent {
            child,
            addr,
            secret,
            log,
            _dir: dir,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// A connection past the preface with `secret`.
    async fn connect_with(&self, secret: &str) -> std::io::Result<TcpStream> {
        let mut stream = TcpStream::connect(self.addr).await?;
        tokio::time::timeout(PATIENCE, client_preface(&mut stream, secret))
            .await
            .map_err(|_| std::io::Error::other("no answer to the preface"))??;
        Ok(stream)
    }

    /// One request on a fresh connection with the agent's secret: status and body.
    async fn request(&self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let stream = self.connect_with(&self.secret).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "agent")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        tokio::time::timeout(PATIENCE, async {
            let response = sender.send_request(request).await.unwrap();
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body.to_vec())
        })
        .await
        .expect("the agent answers in time")
    }

    /// Runs `command` with `sh -c`; its result.
    async fn sh(&self, command: &str) -> Value {
        let (status, body) = self
            .request(
                "POST",
                "/commands",
                serde_json::to_vec(&json!({ "command": command })).unwrap(),
            )
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Whether the agent logged a line containing `needle`, waiting for it a while.
    fn logged(&self, needle: &str) -> bool {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the agent with `SIGTERM` and waits for its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.pid(), "TERM");
        wait_exit(&mut self.child).expect("the agent exits when told to stop")
    }
}

impl Drop for ContainerAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the launcher; the agent's stderr lines are collected as they come.
fn launch(dir: &Path, secret: &str, options: &Options<'_>) -> (Child, Arc<Mutex<Vec<String>>>) {
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-euc",
            LAUNCH,
            "launch",
        ])
        .arg(&mnt)
        .arg(env!("CARGO_BIN_EXE_hutch"))
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOME", "/root")
        .env("LANG", "C.UTF-8");
    if options.in_env {
        command.arg("").env("HUTCH_AGENT_TOKEN", secret);
    } else {
        let token = dir.join("token");
        std::fs::write(&token, format!("{secret}\n")).unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o400)).unwrap();
        command
            .arg(&token)
            .env("HUTCH_AGENT_TOKEN_FILE", "/run/hutch-token");
    }
    command.arg(options.as_user.unwrap_or(""));
    for (name, value) in &options.env {
        command.env(name, value);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            lines.lock().unwrap().push(line);
        }
    });
    (child, log)
}

/// The address the agent printed, once it did.
fn wait_for_address(child: &mut Child, log: &Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = log
            .lock()
            .unwrap()
            .iter()
            .find_map(|l| l.strip_prefix("hutch agent: listening on ")?.parse().ok());
        if let Some(addr) = found {
            return addr;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the agent exited ({status}): {:?}", log.lock().unwrap());
        }
        assert!(Instant::now() < deadline, "the agent never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The child's exit status, waiting a bounded time.
fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Host pids of `sleep` processes whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
            c.starts_with(b"sleep\0") && String::from_utf8_lossy(&c).contains(marker)
        }) {
            pids.push(pid);
        }
    }
    pids
}

/// Waits until exactly `count` `sleep` processes carry `marker`.
fn wait_for_count(marker: &str, count: usize) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if pids_with(marker).len() == count {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// A `sleep` argument no other process has: its command line marks the test's processes.
fn marker() -> String {
    let digits: String = new_secret()
        .bytes()
        .filter(u8::is_ascii_digit)
        .take(6)
        .map(char::from)
        .collect();
    format!("{}.{digits}1", 7_000_000 + std::process::id())
}

/// Sends `SIG<name>` to `pid`.
fn signal(pid: i32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}

#[tokio::test]
async fn commands_files_code_and_process_trees_work_through_the_preface() {
    if !common::can_run_sandboxes() {
        return;
    }
    let agent = ContainerAgent::start();

    let result = agent.sh("echo hello; id -u; pwd").await;
    assert_eq!(result["exitCode"], 0, "{result}");
    assert_eq!(result["stdout"], "hello\n0\n/workspace\n");

    // Files, both ways; and what the agent writes stays out of the host's files.
    let (status, body) = agent
        .request(
            "PUT",
            "/files/content?path=/workspace/note.txt",
            b"from the test".to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        agent.sh("cat /workspace/note.txt").await["stdout"],
        "from the test"
    );
    agent
        .sh("echo made > /workspace/made.txt; echo x > /etc/hutch-container-test")
        .await;
    let (status, body) = agent
        .request("GET", "/files/content?path=/workspace/made.txt", Vec::new())
        .await;
    assert_eq!((status, body.as_slice()), (200, &b"made\n"[..]));
    assert!(
        !Path::new("/etc/hutch-container-test").exists(),
        "the agent's root is an overlay: the host's /etc is untouched"
    );

    // An interpreter execution.
    let (status, body) = agent
        .request(
            "POST",
            "/interpreter/execute",
            serde_json::to_vec(&json!({"code": "print(6 * 7)"})).unwrap(),
        )
        .await;
    let frames = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{frames}");
    assert!(
        frames
            .lines()
            .any(|l| l.contains(r#""type":"stdout""#) && l.contains("42")),
        "{frames}"
    );

    // A terminal over a WebSocket: upgrades work on the prefaced stream.
    let stream = agent.connect_with(&agent.secret).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(
        "ws://agent/pty?command=echo%20in-a-terminal%3B%20tty",
        stream,
    )
    .await
    .unwrap();
    let mut screen = Vec::new();
    let mut exited = false;
    while let Some(message) = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("the terminal answers in time")
    {
        match message.unwrap() {
            Message::Binary(bytes) => screen.extend_from_slice(&bytes),
            Message::Text(text) => exited |= text.contains(r#""type":"exit""#),
            Message::Close(_) => break,
            _ => {}
        }
    }
    let screen = String::from_utf8_lossy(&screen);
    assert!(screen.contains("in-a-terminal"), "{screen}");
    assert!(screen.contains("/dev/pts/"), "a real terminal: {screen}");
    assert!(exited, "the exit event came");

    // A background tree, killed whole by its process group.
    let mark = marker();
    let (status, body) = agent
        .request(
            "POST",
            "/commands",
            serde_json::to_vec(&json!({
                "command": format!("sleep {mark} & sleep {mark} & wait"),
                "background": true,
            }))
            .unwrap(),
        )
        .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let started: Value = serde_json::from_slice(&body).unwrap();
    assert!(wait_for_count(&mark, 2), "both sleeps run");
    let pid = started["pid"].as_i64().unwrap();
    let (status, _) = agent
        .request("DELETE", &format!("/processes/{pid}"), Vec::new())
        .await;
    assert!((200..300).contains(&status), "{status}");
    assert!(wait_for_count(&mark, 0), "nothing of the tree is left");

    // A process that leaves its command's process group (setsid) is re-parented to the
    // command's shepherd, not the agent, and dies with the command. The shepherd takes its
    // name once it has started the command and re-executed itself (until then it is `exe`,
    // from `/proc/self/exe`), so the command waits for that too.
    let escaped = marker();
    let result = agent
        .sh(&format!(
            "setsid sh -c 'echo $$ > /tmp/escaped; exec sleep {escaped}' > /dev/null 2>&1 < /dev/null & \
             for i in $(seq 600); do [ -s /tmp/escaped ] && break; sleep 0.05; done; cat /tmp/escaped; \
             for i in $(seq 600); do [ \"$(cat /proc/$PPID/comm)\" = hutch-shepherd ] && break; sleep 0.05; done; \
             echo PPid: $PPID; cat /proc/$PPID/comm"
        ))
        .await;
    assert_eq!(result["exitCode"], 0, "{result}");
    let ppid: i32 = result["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(ppid, agent.pid(), "the command's parent is its shepherd");
    assert!(
        result["stdout"]
            .as_str()
            .unwrap()
            .ends_with("hutch-shepherd\n"),
        "{result}"
    );
    assert!(
        wait_for_count(&escaped, 0),
        "the setsid process died with its command"
    );
    assert!(
        !std::fs::read_to_string(format!("/proc/{}/status", agent.pid()))
            .unwrap()
            .contains("State:\tZ"),
        "the agent still runs"
    );
}

#[tokio::test]
async fn connections_without_the_sessions_secret_are_refused() {
    if !common::can_run_sandboxes() {
        return;
    }
    let agent = ContainerAgent::start();
    let other = ContainerAgent::start();

    // Plain HTTP, no preface: a refusal and nothing else.
    let mut plain = TcpStream::connect(agent.addr).await.unwrap();
    let local = plain.local_addr().unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: agent\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, plain.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, preface::REFUSED);
    assert!(
        agent.logged(&format!("refused a connection peer={local}")),
        "the refusal is logged with the peer's address"
    );

    // A wrong secret, another session's secret, and the right one with a byte changed.
    let mut near = agent.secret.clone().into_bytes();
    near[0] = if near[0] == b'0' { b'1' } else { b'0' };
    for secret in [
        new_secret(),
        other.secret.clone(),
        String::from_utf8(near).unwrap(),
    ] {
        let refused = agent.connect_with(&secret).await.unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::PermissionDenied);
    }

    // Too long a line: refused without waiting for its end.
    let mut long = TcpStream::connect(agent.addr).await.unwrap();
    let mut line = preface::MAGIC.to_vec();
    line.resize(preface::MAX_BYTES + 100, b'x');
    long.write_all(&line).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, long.read_to_end(&mut answer))
        .await
        .unwrap();
    assert_eq!(answer, preface::REFUSED);

    // Too slow: half a preface, then nothing; closed once the bound passes, with no answer.
    let mut slow = TcpStream::connect(agent.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(&preface::MAGIC[..5]).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, slow.read_to_end(&mut answer))
        .await
        .expect("the agent closes a slow preface");
    assert!(answer.is_empty(), "{answer:?}");
    assert!(started.elapsed() >= preface::TIMEOUT - Duration::from_millis(100));

    // At most PENDING_MAX connections wait for their preface; the next is closed at once.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(TcpStream::connect(agent.addr).await.unwrap());
    }
    let mut extra = TcpStream::connect(agent.addr).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, extra.read_to_end(&mut answer))
        .await
        .unwrap();
    assert!(answer.is_empty());
    assert!(agent.logged("connections already wait for their preface"));
    drop(idle);

    // The agent still serves the control plane, with its own secret only.
    let deadline = Instant::now() + PATIENCE;
    loop {
        match agent.connect_with(&agent.secret).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the right secret is refused: {e}"),
        }
    }
    assert_eq!(agent.sh("echo ok").await["stdout"], "ok\n");
    assert_eq!(other.sh("echo ok").await["stdout"], "ok\n");
}

#[tokio::test]
async fn the_secret_is_not_visible_to_commands_of_the_same_user() {
    if !common::can_run_sandboxes() {
        return;
    }
    // The hardest case: the credential in the environment, commands of the agent's own user.
    let agent = ContainerAgent::start_with(Options {
        in_env: true,
        as_user: Some("65534:65534"),
        env: vec![("HUTCH_SESSION_ENV", r#"{"GREETING":"hi"}"#.to_owned())],
    });
    let result = agent
        .sh(&format!(
            "id -u; echo $GREETING; env; tr '\\0' '\\n' < /proc/self/environ; \
             cat /proc/{pid}/environ; ls /proc/{pid}/fd; cat /proc/{pid}/cmdline; true",
            pid = agent.pid()
        ))
        .await;
    let stdout = result["stdout"].as_str().unwrap();
    let stderr = result["stderr"].as_str().unwrap();
    assert!(stdout.starts_with("65534\nhi\n"), "{result}");
    assert!(!stdout.contains(&agent.secret), "{stdout}");
    assert!(
        !stdout.contains("HUTCH_"),
        "no hutch variable reaches a command: {stdout}"
    );
    // The agent is not dumpable: the same user cannot read its environment or descriptors.
    assert!(
        stderr.contains(&format!("/proc/{}/environ: Permission denied", agent.pid())),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("/proc/{}/fd", agent.pid())),
        "{stderr}"
    );
    // Whoever can read it (root on the host, here) finds the variable's bytes overwritten.
    let environ = std::fs::read(format!("/proc/{}/environ", agent.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&environ).contains(&agent.secret));
}

#[tokio::test]
async fn a_root_agent_runs_commands_as_the_images_user_who_cannot_read_the_secret_file() {
    if !common::can_run_sandboxes() {
        return;
    }
    let agent = ContainerAgent::start_with(Options {
        env: vec![("HUTCH_SESSION_USER", "65534:65534".to_owned())],
        ..Options::default()
    });
    let result = agent
        .sh("id -u; cat /run/hutch-token; env | grep -c HUTCH_ ; true")
        .await;
    let stdout = result["stdout"].as_str().unwrap();
    assert_eq!(stdout, "65534\n0\n", "{result}");
    assert!(
        result["stderr"]
            .as_str()
            .unwrap()
            .contains("/run/hutch-token: Permission denied"),
        "{result}"
    );
}

#[tokio::test]
async fn stopping_or_passing_the_deadline_ends_every_command() {
    if !common::can_run_sandboxes() {
        return;
    }
    // SIGTERM (the pod being deleted): the agent kills its commands' groups and exits 0.
    let mut agent = ContainerAgent::start();
    let mark = marker();
    let (status, _) = agent
        .request(
            "POST",
            "/commands",
            serde_json::to_vec(&json!({
                "command": format!("sleep {mark} & sleep {mark} & wait"),
                "background": true,
            }))
            .unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(wait_for_count(&mark, 2));
    assert!(agent.terminate().success());
    assert!(wait_for_count(&mark, 0), "nothing of the tree is left");

    // A deadline ahead (far enough that a loaded machine starts the agent and its command
    // before it): the agent ends itself, its commands with it.
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    let mut agent = ContainerAgent::start_with(Options {
        env: vec![("HUTCH_SESSION_DEADLINE", deadline.to_string())],
        ..Options::default()
    });
    let mark = marker();
    let (status, _) = agent
        .request(
            "POST",
            "/commands",
            serde_json::to_vec(&json!({
                "command": format!("sleep {mark}"),
                "background": true,
            }))
            .unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    let status = wait_exit(&mut agent.child).expect("the agent ends at its deadline");
    assert!(status.success(), "{status}");
    assert!(wait_for_count(&mark, 0), "its command ended with it");
}

#[test]
fn an_agent_without_a_usable_credential_or_configuration_refuses_to_start() {
    // Both executables serve container mode: `hutch agent --container` and the lean
    // `hutch-agent --container`.
    let programs: [(&str, &[&str]); 2] = [
        (env!("CARGO_BIN_EXE_hutch"), &["agent"]),
        (env!("CARGO_BIN_EXE_hutch-agent"), &[]),
    ];
    for (program, prefix) in programs {
        refuses_to_start_without_a_usable_configuration(program, prefix);
    }
    // `--listen` belongs to container mode only.
    let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["agent", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// `program` (with `prefix` before `--container`) exits 70, naming what is wrong, without a
/// credential, with a short one, with a missing token file, or with a bad session variable.
fn refuses_to_start_without_a_usable_configuration(program: &str, prefix: &[&str]) {
    let run = |env: &[(&str, &str)]| {
        let out = Command::new(program)
            .args(prefix)
            .args(["--container", "--listen", "127.0.0.1:0"])
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let good = "0123456789abcdef0123456789abcdef";
    let (code, stderr) = run(&[]);
    assert_eq!(code, Some(70));
    assert!(stderr.contains("HUTCH_AGENT_TOKEN"), "{stderr}");
    let (code, stderr) = run(&[("HUTCH_AGENT_TOKEN", "too-short")]);
    assert_eq!(code, Some(70));
    assert!(stderr.contains("at least 32"), "{stderr}");
    let (code, stderr) = run(&[("HUTCH_AGENT_TOKEN_FILE", "/nonexistent/token")]);
    assert_eq!(code, Some(70));
    assert!(stderr.contains("/nonexistent/token"), "{stderr}");
    let (code, stderr) = run(&[
        ("HUTCH_AGENT_TOKEN", good),
        ("HUTCH_SESSION_ENV", "not json"),
    ]);
    assert_eq!(code, Some(70));
    assert!(stderr.contains("HUTCH_SESSION_ENV"), "{stderr}");
}
