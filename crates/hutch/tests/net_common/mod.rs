//! A private internet for the network tests, and a way in for the test client.
//!
//! [`TestInternet`] makes two network namespaces, each held by a `sleep` process of its own:
//! the "internet" (203.0.113.0/24, documentation addresses: an HTTP server on .10, .11 and
//! .12, a DNS server on .53, see `internet.py`) and the server's namespace, whose only link
//! and only route lead to the internet. `hutch serve` runs in the second. No packet of a
//! sandbox can reach this machine's real network, and the host's own interfaces and routes
//! are never touched: every `ip` command runs inside one of the two namespaces.
//!
//! [`Forwarder`] lets the test client reach the server without any host route: it listens on
//! the host's loopback, and each connection's thread enters the server's namespace before it
//! connects on (a socket keeps the namespace it was created in).

#![allow(clippy::unwrap_used)] // a panic is how a test fails
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Addresses of the test internet.
pub const HTTP_HOST: &str = "203.0.113.10";
/// A second web host, reachable by name as `second.test`.
pub const SECOND_HOST: &str = "203.0.113.11";
/// The server's own address on its link to the internet.
pub const SERVER_UPLINK: &str = "203.0.113.2";
/// The internet's DNS server.
pub const DNS: &str = "203.0.113.53";

/// Two network namespaces and the services of the test internet.
pub struct TestInternet {
    internet: Child,
    server_ns: Child,
    services: Child,
    _root: tempfile::TempDir,
}

/// Starts `sleep` in a new network namespace and waits until it is there.
fn hold_namespace() -> Child {
    let child = Command::new("unshare")
        .args(["--net", "--", "sleep", "infinity"])
        .spawn()
        .expect("unshare --net");
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let path = format!("/proc/{}/ns/net", child.id());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(&path).ok().is_none_or(|ns| ns == own) {
        assert!(
            Instant::now() < deadline,
            "unshare did not make a namespace"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// Runs `program` with `args` inside the network namespace at `netns`, feeding it `stdin`.
pub fn run_in(netns: &Path, program: &str, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl TestInternet {
    /// Makes both namespaces, links them and starts the internet's services.
    pub fn start() -> TestInternet {
        let internet = hold_namespace();
        let server_ns = hold_namespace();
        let inet = PathBuf::from(format!("/proc/{}/ns/net", internet.id()));
        let srv = PathBuf::from(format!("/proc/{}/ns/net", server_ns.id()));
        run_in(
            &inet,
            "ip",
            &["-batch", "-"],
            &format!(
                "link set lo up\n\
                 link add up0 type veth peer name inet0 netns {}\n\
                 addr add 203.0.113.1/24 dev up0\n\
                 addr add 203.0.113.10/24 dev up0\n\
                 addr add 203.0.113.11/24 dev up0\n\
                 addr add 203.0.113.12/24 dev up0\n\
                 addr add 203.0.113.53/24 dev up0\n\
                 link set up0 up\n",
                server_ns.id()
            ),
        );
        run_in(
            &srv,
            "ip",
            &["-batch", "-"],
            &format!(
                "link set lo up\n\
                 addr add {SERVER_UPLINK}/24 dev inet0\n\
                 link set inet0 up\n\
                 route add default via 203.0.113.1\n"
            ),
        );
        let root = tempfile::Builder::new()
            .prefix("hutch-internet")
            .tempdir_in("/tmp")
            .unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/net_common/internet.py");
        let mut services = Command::new("nsenter")
            .arg(format!("--net={}", inet.display()))
            .args(["--", "python3", script])
            .arg(root.path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the test internet");
        let mut ready = String::new();
        BufReader::new(services.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the test internet did not start");
        TestInternet {
            internet,
            server_ns,
            services,
            _root: root,
        }
    }

    /// The server's network namespace.
    pub fn server_netns(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.server_ns.id()))
    }

    /// Runs a command in the server's namespace and gives its output.
    pub fn in_server_ns(&self, program: &str, args: &[&str]) -> String {
        run_in(&self.server_netns(), program, args, "")
    }

    /// The sandbox interfaces (`hx…`) in the server's namespace.
    pub fn sandbox_interfaces(&self) -> Vec<String> {
        self.in_server_ns("ip", &["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_owned())
            .filter(|name| name.starts_with("hx"))
            .collect()
    }

    /// The nftables tables in the server's namespace.
    pub fn tables(&self) -> Vec<String> {
        self.in_server_ns("nft", &["list", "tables"])
            .lines()
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// The IPv4 addresses in the server's namespace, as `ip -o -4 addr` prints them.
    pub fn addresses(&self) -> Vec<String> {
        self.in_server_ns("ip", &["-o", "-4", "addr", "show"])
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
            .collect()
    }
}

impl Drop for TestInternet {
    fn drop(&mut self) {
        for child in [&mut self.services, &mut self.internet, &mut self.server_ns] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A TCP forwarder from the host's loopback into a network namespace.
pub struct Forwarder {
    /// Where it listens, on 127.0.0.1.
    pub addr: SocketAddr,
}

impl Forwarder {
    /// Forwards connections to `target` inside `netns`.
    pub fn start(netns: &Path, target: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let netns = netns.to_owned();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let netns = netns.clone();
                std::thread::spawn(move || forward(conn, &netns, target));
            }
        });
        Forwarder { addr }
    }

    /// The URL of the forwarded server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn forward(conn: TcpStream, netns: &Path, target: SocketAddr) {
    // This thread only: sockets it opens from now on live in the server's namespace.
    let Ok(ns) = std::fs::File::open(netns) else {
        return;
    };
    use std::os::fd::AsFd;
    if rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .is_err()
    {
        return;
    }
    let Ok(upstream) = TcpStream::connect(target) else {
        return;
    };
    let (Ok(mut conn_r), Ok(mut up_w)) = (conn.try_clone(), upstream.try_clone()) else {
        return;
    };
    let back = std::thread::spawn(move || {
        let (mut up_r, mut conn_w) = (upstream, conn);
        let _ = std::io::copy(&mut up_r, &mut conn_w);
        let _ = conn_w.shutdown(std::net::Shutdown::Write);
    });
    let _ = std::io::copy(&mut conn_r, &mut up_w);
    let _ = up_w.shutdown(std::net::Shutdown::Write);
    let _ = back.join();
}
