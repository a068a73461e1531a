//! `hutch bench network` without `--url`: a private network of the benchmark's own, so that a
//! server with networking changes nothing of this machine's.
//!
//! Two network namespaces, each held by a `sleep`: the "internet" (`203.0.113.0/24`,
//! documentation addresses) with a file server on `203.0.113.10:80` (Python, `sendfile`),
//! and the server's namespace, whose only link and only route lead to it. The benchmark then
//! runs itself again inside the server's namespace (`nsenter --net`), where it starts its
//! own `hutch serve` with networking and measures; the forwarding, nftables tables and
//! sandbox interfaces that server makes all live in that namespace. Once that server has
//! stopped, the benchmark checks that its namespace holds no sandbox interface, nftables
//! table or pool address any more (after `--iterations` create/delete cycles with egress and
//! as many without), then kills the holders: the namespaces go with their last process, and
//! nothing is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::bench::BenchArgs;

/// The file server's address in the benchmark's internet.
const FILE_HOST: &str = "203.0.113.10";
/// The internet's side of the link, the server namespace's gateway.
const GATEWAY: &str = "203.0.113.1";

/// Serves the current directory on `FILE_HOST:80`, sending files with `sendfile(2)` so that
/// the server is not what limits the download.
const FILE_SERVER: &str = r#"
import http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def copyfile(self, source, outputfile):
        self.connection.sendfile(source)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer((sys.argv[1], 80), Handler).serve_forever()
"#;

/// `hutch serve` options of the benchmark's own server inside its namespace. The bandwidth
/// bound is raised to its maximum so that the download measures the path, not the bound.
pub(crate) const SERVER_ARGS: &[&str] = &[
    "--network-allowed",
    "all",
    "--network-dns",
    GATEWAY,
    "--network-bandwidth-mbit",
    "100000",
];

/// The namespaces and the file server, torn down when dropped.
struct OwnNetwork {
    internet: Child,
    server_ns: Child,
    files: Option<Child>,
    dir: PathBuf,
}

impl Drop for OwnNetwork {
    fn drop(&mut self) {
        for child in [
            self.files.as_mut(),
            Some(&mut self.internet),
            Some(&mut self.server_ns),
        ]
        .into_iter()
        .flatten()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts `sleep` in a new network namespace and waits until it is there.
fn hold_namespace() -> anyhow::Result<Child> {
    let mut child = Command::new("unshare")
        .args(["--net", "--", "sleep", "infinity"])
        .spawn()
        .context("unshare --net (the benchmark needs root)")?;
    let own = std::fs::read_link("/proc/self/ns/net").context("reading our network namespace")?;
    let path = format!("/proc/{}/ns/net", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(&path).ok().is_none_or(|ns| ns == own) {
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            bail!("unshare --net made no network namespace");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(child)
}

/// `nsenter --net=<netns of pid> -- program`.
fn in_netns(pid: u32, program: &str) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg("--")
        .arg(program);
    command
}

/// Runs `ip -batch -` with `script` in the namespace of `pid`.
fn ip_batch(pid: u32, script: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = in_netns(pid, "ip")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running ip")?;
    child
        .stdin
        .take()
        .context("ip's stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "ip -batch failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

impl OwnNetwork {
    /// Both namespaces, linked, and the file server serving `size` bytes as `/blob`.
    fn start(size: u64) -> anyhow::Result<OwnNetwork> {
        let dir = std::env::temp_dir().join(format!("hutch-bench-net-{}", std::process::id()));
        let mut net = OwnNetwork {
            internet: hold_namespace()?,
            server_ns: hold_namespace()?,
            files: None,
            dir,
        };
        let (internet, server) = (net.internet.id(), net.server_ns.id());
        ip_batch(
            internet,
            &format!(
                "link set lo up\n\
                 link add up0 type veth peer name inet0 netns {server}\n\
                 addr add {GATEWAY}/24 dev up0\n\
                 addr add {FILE_HOST}/24 dev up0\n\
                 link set up0 up\n"
            ),
        )?;
        ip_batch(
            server,
            &format!(
                "link set lo up\n\
                 addr add 203.0.113.2/24 dev inet0\n\
                 link set inet0 up\n\
                 route add default via {GATEWAY}\n"
            ),
        )?;
        std::fs::create_dir_all(&net.dir)?;
        // A sparse file: its pages are zeros, read from the page cache.
        std::fs::File::create(net.dir.join("blob"))?.set_len(size)?;
        net.files = Some(
            in_netns(internet, "python3")
                .args(["-c", FILE_SERVER, FILE_HOST])
                .current_dir(&net.dir)
                .stdout(Stdio::null())
                .spawn()
                .context("starting the file server (python3)")?,
        );
        net.wait_for_files()?;
        Ok(net)
    }

    /// Waits up to 10 s until the file server answers from the server's namespace.
    fn wait_for_files(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = in_netns(self.server_ns.id(), "curl")
                .args(["-sf", "-o", "/dev/null", "-r", "0-0"])
                .arg(format!("http://{FILE_HOST}/blob"))
                .status()
                .is_ok_and(|s| s.success());
            if answered {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the benchmark's file server did not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What a stopped server left in its namespace: interfaces other than `lo` and the
    /// uplink, sandboxes' nftables tables (the server's own masquerading table, the one
    /// whose name the others extend, stays for its next start), addresses other than
    /// loopback's and the uplink's.
    fn leftovers(&self) -> anyhow::Result<Vec<String>> {
        let output = |program: &str, args: &[&str]| -> anyhow::Result<String> {
            let out = in_netns(self.server_ns.id(), program).args(args).output()?;
            ensure!(out.status.success(), "{program} {args:?} failed");
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let mut left: Vec<String> = output("ip", &["-o", "link", "show"])?
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name))
            .filter(|name| !["lo", "inet0"].contains(name))
            .map(|name| format!("interface {name}"))
            .collect();
        let tables = output("nft", &["list", "tables"])?;
        let mut tables: Vec<&str> = tables
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        tables.sort_by_key(|t| t.len());
        if let Some((own, others)) = tables.split_first() {
            ensure!(
                others.iter().all(|t| t.starts_with(&format!("{own}-"))),
                "tables not of the benchmark's server: {tables:?}"
            );
            left.extend(others.iter().map(|t| (*t).to_owned()));
        }
        left.extend(
            output("ip", &["-o", "addr", "show"])?
                .lines()
                .filter_map(|l| l.split_whitespace().nth(3))
                .filter(|a| !["127.0.0.1/8", "::1/128", "203.0.113.2/24"].contains(a))
                .filter(|a| !a.starts_with("fe80:"))
                .map(|a| format!("address {a}")),
        );
        Ok(left)
    }

    fn server_netns(&self) -> PathBuf {
        Path::new("/proc")
            .join(self.server_ns.id().to_string())
            .join("ns/net")
    }
}

/// Makes the benchmark's network, runs `hutch bench network` again inside its server
/// namespace (with a server of its own there), and tears the network down.
pub(crate) fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let size_mb = args.size_mb.unwrap_or(if args.quick { 64 } else { 1024 });
    let net = OwnNetwork::start(size_mb * 1024 * 1024)?;
    let exe = std::env::current_exe().context("finding the hutch binary")?;
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", net.server_netns().display()))
        .arg("--")
        .arg(exe)
        .args(["bench", "network", "--in-own-network", "--download-url"])
        .arg(format!("http://{FILE_HOST}/blob"))
        .args(["--iterations", &args.iterations.to_string()])
        .args(["--warmup", &args.warmup.to_string()])
        .args(["--warm-pool", &args.warm_pool.to_string()]);
    if args.quick {
        command.arg("--quick");
    }
    let status = command.status().context("running the benchmark")?;
    ensure!(status.success(), "the network benchmark failed ({status})");
    let left = net.leftovers()?;
    ensure!(
        left.is_empty(),
        "the server left this in its namespace: {left:?}"
    );
    println!(
        "left behind in the server's namespace after {} create/delete cycles with egress: nothing",
        args.iterations + args.warmup
    );
    Ok(())
}
