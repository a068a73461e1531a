//! `hutch bench agent`: what one trivial request to an agent costs over each transport the
//! control plane uses, measured at the agent's door (no control plane in between).
//!
//! The same request (`GET /files/stat?path=/tmp`) goes to the agent of a session of the
//! benchmark's own server over its unix socket (the linux runtime), and to an agent in
//! container mode (`hutch agent --container`, a plain child process on loopback) over TCP
//! after the connection preface, as a runtime of pods reaches one. Each transport is timed
//! with one connection kept for every request, and with a fresh connection per request
//! (connect, preface for TCP, request), as the control plane opens one per relayed request.
//! The two transports take turns request by request, so that a busy machine weighs on both.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hutch_bench::Samples;
use hutch_bench::server::ServerProcess;
use hutch_client::HutchClient;
use hutch_sandbox::AgentConnection;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::bench::BenchArgs;

/// The request measured: small, answered from one `stat`.
const REQUEST_PATH: &str = "/files/stat?path=/tmp";

/// How long the container-mode agent may take to listen.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Where each series goes.
#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(SocketAddr, String),
}

impl Target {
    /// A new connection, ready for HTTP.
    async fn connect(&self) -> anyhow::Result<AgentConnection> {
        Ok(match self {
            Target::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Target::Tcp(addr, secret) => {
                let mut stream = tokio::net::TcpStream::connect(addr).await?;
                stream.set_nodelay(true)?;
                hutch_sandbox::preface::client_preface(&mut stream, secret).await?;
                Box::new(stream)
            }
        })
    }

    /// A new HTTP/1.1 connection.
    async fn open(&self) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let (sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(self.connect().await?)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// One request on `sender`, its answer read whole.
async fn request(sender: &mut SendRequest<Empty<Bytes>>) -> anyhow::Result<()> {
    let request = hyper::Request::get(REQUEST_PATH)
        .header("host", "hutch-agent")
        .body(Empty::new())?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    ensure!(
        status.is_success(),
        "the agent answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(())
}

/// One request to `target`, on `kept` or on a fresh connection: how long it took.
async fn timed(
    target: &Target,
    kept: &mut SendRequest<Empty<Bytes>>,
    fresh: bool,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    if fresh {
        let mut sender = target.open().await?;
        request(&mut sender).await?;
    } else {
        request(kept).await?;
    }
    Ok(started.elapsed())
}

/// `iterations` requests to each target after `warmup`, on one kept connection each or a
/// fresh one per request. The targets take turns, each going first every other time, so
/// that the machine's load falls on both alike.
async fn series(
    targets: [&Target; 2],
    fresh: bool,
    warmup: usize,
    iterations: usize,
) -> anyhow::Result<[Samples; 2]> {
    let mut samples = [Samples::new(), Samples::new()];
    let mut kept = [targets[0].open().await?, targets[1].open().await?];
    for i in 0..warmup + iterations {
        for turn in 0..2 {
            let which = (turn + i) % 2;
            let took = timed(targets[which], &mut kept[which], fresh).await?;
            if i >= warmup {
                samples[which].push(took);
            }
        }
    }
    Ok(samples)
}

/// An agent in container mode, a child of the benchmark, killed when dropped.
struct ContainerAgent {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ContainerAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ContainerAgent {
    /// Starts `hutch agent --container` on a free loopback port with `secret`.
    fn start(binary: &Path, secret: &str) -> anyhow::Result<ContainerAgent> {
        let mut child = Command::new(binary)
            .args(["agent", "--container", "--listen", "127.0.0.1:0"])
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HUTCH_AGENT_TOKEN", secret)
            .env("HUTCH_SESSION_WORKDIR", "/tmp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting hutch agent --container")?;
        let stderr = child.stderr.take().context("the agent's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("hutch agent: listening on ") {
                    let _ = tx.send(addr.parse::<SocketAddr>().ok());
                } else {
                    eprintln!("{line}");
                }
            }
        });
        let mut agent = ContainerAgent {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(addr)) => agent.addr = addr,
            _ => bail!("hutch agent --container did not listen within {START_TIMEOUT:?}"),
        }
        Ok(agent)
    }
}

/// A secret of 64 hex digits from the kernel's randomness.
fn new_secret() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The session agent's unix socket: the only one in the server's data directory (its warm
/// pool is empty).
fn only_socket(server: &ServerProcess) -> anyhow::Result<PathBuf> {
    let dir = server.data_dir().join("sockets");
    let sockets: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .collect();
    match sockets.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one agent socket in {}, found {}",
            dir.display(),
            sockets.len()
        ),
    }
}

/// Microseconds, for a table.
fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Runs the scenario against the benchmark's own server (started with no warm pool).
pub(crate) async fn run(
    client: &HutchClient,
    server: Option<&ServerProcess>,
    args: &BenchArgs,
) -> anyhow::Result<()> {
    let Some(server) = server else {
        bail!(
            "the agent scenario measures at the agent's socket: it needs its own server (no --url)"
        );
    };
    let binary = std::env::current_exe().context("finding the hutch binary")?;
    let session = client
        .create_session(&Default::default())
        .await
        .context("creating a session")?;
    let unix = Target::Unix(only_socket(server)?);
    let secret = new_secret()?;
    let agent = ContainerAgent::start(&binary, &secret)?;
    let tcp = Target::Tcp(agent.addr, secret);

    println!(
        "scenario: agent (GET {REQUEST_PATH} at the agent: unix socket of a linux-runtime \
         session beside TCP + preface to `hutch agent --container` on loopback)"
    );
    println!(
        "iterations: {} (after {} warm-up) per series",
        args.iterations, args.warmup
    );
    println!();
    println!("{:<44} {:>10} {:>10}", "", "p50", "p99");
    for (fresh, mode) in [
        (false, "kept connection"),
        (true, "fresh connection per request"),
    ] {
        let [on_unix, on_tcp] = series([&unix, &tcp], fresh, args.warmup, args.iterations).await?;
        for (name, samples) in [("unix socket", &on_unix), ("TCP + preface", &on_tcp)] {
            println!(
                "{:<44} {:>10} {:>10}",
                format!("{mode}, {name}"),
                us(samples.p50()),
                us(samples.p99())
            );
        }
        let p50 = on_tcp.p50().as_secs_f64() - on_unix.p50().as_secs_f64();
        let p99 = on_tcp.p99().as_secs_f64() - on_unix.p99().as_secs_f64();
        println!(
            "{:<44} {:>10} {:>10}",
            format!("{mode}, TCP − unix"),
            format!("{:+.0} µs", p50 * 1e6),
            format!("{:+.0} µs", p99 * 1e6)
        );
    }
    if args.quick {
        println!("\nquick mode: too few iterations for stable figures");
    }
    drop(agent);
    client
        .delete_session(session.session_id)
        .await
        .context("deleting the session")?;
    Ok(())
}
