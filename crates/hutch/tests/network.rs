//! Network egress by policy, against a real server in a network namespace whose only way out
//! is the test's own internet (see `net_common`): names, ranges, the resolver, what is always
//! denied, live changes, crash recovery and clean-up.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod net_common;

use std::time::{Duration, Instant};

use hutch_api::{
    CommandResult, CreateSessionRequest, Egress, NetworkPolicy, Session, UpdateSessionRequest,
};
use hutch_client::HutchClient;

use common::{TestServer, can_run_sandboxes, sh};
use net_common::{Forwarder, SECOND_HOST, SERVER_UPLINK, TestInternet};

/// Where the server listens inside its namespace.
const LISTEN: &str = "127.0.0.1:7420";

/// A server whose sessions may have any egress, with its internet and a client of `alice`.
struct Setup {
    internet: TestInternet,
    server: TestServer,
    forwarder: Forwarder,
}

impl Setup {
    fn start(extra: &[&str]) -> Setup {
        let internet = TestInternet::start();
        let mut args = vec![
            "--warm-pool",
            "1",
            "--network-allowed",
            "all",
            "--network-dns",
            net_common::DNS,
        ];
        args.extend_from_slice(extra);
        let server = TestServer::start_in_netns(&internet.server_netns(), LISTEN, &args);
        let forwarder = Forwarder::start(&internet.server_netns(), LISTEN.parse().unwrap());
        Setup {
            internet,
            server,
            forwarder,
        }
    }

    fn client(&self, tenant: &str) -> HutchClient {
        HutchClient::new(&self.forwarder.url(), &self.server.token(tenant)).unwrap()
    }
}

fn policy(egress: Egress, allow: &[&str]) -> NetworkPolicy {
    NetworkPolicy {
        egress,
        allow: allow.iter().map(|s| s.to_string()).collect(),
        deny: Vec::new(),
    }
}

async fn networked(client: &HutchClient, network: NetworkPolicy) -> Session {
    client
        .create_session(&CreateSessionRequest {
            network: Some(network),
            ..Default::default()
        })
        .await
        .expect("create a networked session")
}

/// `PATCH /v1/sessions/{id}` with a new network policy.
async fn patch_network(
    client: &HutchClient,
    s: &Session,
    network: NetworkPolicy,
) -> Result<Session, hutch_client::ClientError> {
    let update = UpdateSessionRequest {
        network: Some(network),
        ..Default::default()
    };
    client.update_session(s.session_id, &update).await
}

/// `curl` of `url` from inside: the HTTP status (`000` when no connection was made) and how
/// long it took.
async fn fetch(client: &HutchClient, s: &Session, url: &str) -> (String, Duration) {
    // curl's own clock: the time in the sandbox, not the API's round trip on a loaded machine.
    let out = sh(
        client,
        s,
        &format!("curl -s -o /dev/null -m 10 -w '%{{http_code}} %{{time_total}}' {url}"),
    )
    .await;
    let parsed = out
        .stdout
        .trim()
        .split_once(' ')
        .and_then(|(status, took)| {
            let took = Duration::try_from_secs_f64(took.parse().ok()?).ok()?;
            Some((status.to_owned(), took))
        });
    parsed.unwrap_or_else(|| panic!("curl printed no status and time: {out:?}"))
}

/// Runs `command` in session `s`, with how long it took in the sandbox (not counting the
/// API's round trip).
async fn timed(client: &HutchClient, s: &Session, command: &str) -> (CommandResult, Duration) {
    let out = sh(
        client,
        s,
        &format!(
            "start=$(date +%s%N); {command} >/dev/null 2>&1; code=$?; \
             echo $(( $(date +%s%N) - start )); exit $code"
        ),
    )
    .await;
    let Ok(nanos) = out.stdout.trim().parse() else {
        panic!("the timer printed no time: {out:?}");
    };
    (out, Duration::from_nanos(nanos))
}

#[tokio::test]
async fn without_a_policy_a_session_has_no_network_and_dns_fails_fast() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&[]);
    let client = setup.client("alice");
    let s = common::session(&client).await;
    assert_eq!(s.network, policy(Egress::None, &[]), "the server's default");

    let links = sh(&client, &s, "tail -n +3 /proc/net/dev | cut -d: -f1")
        .await
        .stdout;
    assert_eq!(links.split_whitespace().collect::<Vec<_>>(), ["lo"]);
    let (status, took) = fetch(&client, &s, "http://203.0.113.10/hello.txt").await;
    assert_eq!(status, "000");
    assert!(took < Duration::from_secs(3), "fails at once: {took:?}");
    let (dns, took) = timed(&client, &s, "getent hosts allowed.test").await;
    assert_ne!(dns.exit_code, 0, "{dns:?}");
    assert!(took < Duration::from_secs(3), "DNS fails at once: {took:?}");
}

#[tokio::test]
async fn allow_admits_the_listed_names_only_and_a_change_applies_to_new_connections() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&[]);
    let client = setup.client("alice");
    let s = networked(&client, policy(Egress::Allow, &["allowed.test"])).await;
    assert_eq!(s.network, policy(Egress::Allow, &["allowed.test"]));

    let resolv = sh(&client, &s, "cat /etc/resolv.conf").await.stdout;
    assert!(resolv.contains("nameserver 10.231."), "{resolv}");
    let (status, _) = fetch(&client, &s, "http://allowed.test/hello.txt").await;
    assert_eq!(status, "200", "the listed name works");

    // Same host, another name: the resolver refuses it, at once.
    let (other, took) = timed(&client, &s, "getent hosts other.test").await;
    assert_ne!(other.exit_code, 0, "{other:?}");
    assert!(took < Duration::from_secs(3), "refused at once: {took:?}");
    // An address not listed and never answered is rejected at once.
    let (status, took) = fetch(&client, &s, &format!("http://{SECOND_HOST}/hello.txt")).await;
    assert_eq!(status, "000");
    assert!(
        took < Duration::from_secs(3),
        "rejected, not dropped: {took:?}"
    );

    // A range in the list admits its addresses without DNS.
    let s2 = networked(&client, policy(Egress::Allow, &["203.0.113.11/32"])).await;
    let (status, _) = fetch(&client, &s2, &format!("http://{SECOND_HOST}/hello.txt")).await;
    assert_eq!(status, "200");

    // PATCH: from now on second.test, and no longer allowed.test.
    let patched = patch_network(&client, &s, policy(Egress::Allow, &["second.test"]))
        .await
        .unwrap();
    assert_eq!(patched.session_id, s.session_id);
    assert_eq!(patched.network, policy(Egress::Allow, &["second.test"]));
    let shown = client.get_session(s.session_id).await.unwrap();
    assert_eq!(shown.network, patched.network, "GET shows the new policy");
    let listed = client.list_sessions(None, None).await.unwrap().sessions;
    let listed = listed
        .iter()
        .find(|l| l.session_id == s.session_id)
        .unwrap();
    assert_eq!(listed.network, patched.network, "and so does the list");
    let (status, _) = fetch(&client, &s, "http://second.test/hello.txt").await;
    assert_eq!(status, "200");
    let (status, _) = fetch(&client, &s, "http://allowed.test/hello.txt").await;
    assert_eq!(status, "000", "the old name is gone");
    let (status, _) = fetch(&client, &s, "http://203.0.113.10/hello.txt").await;
    assert_eq!(status, "000", "so are the addresses it had admitted");

    let metrics = reqwest_metrics(&setup).await;
    let id = s.session_id.to_string();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("hutch_session_network_denied_total")
                && l.contains(&id)
                && !l.ends_with(" 0")),
        "refusals are counted: {metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("direction=\"in\"") && l.contains(&id) && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// The `/metrics` text, fetched through the forwarder.
async fn reqwest_metrics(setup: &Setup) -> String {
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{}/metrics", setup.forwarder.url())])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn always_denied_targets_stay_unreachable_and_the_network_cannot_be_changed_inside() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&[]);
    let client = setup.client("alice");
    let a = networked(&client, policy(Egress::All, &[])).await;
    let b = networked(&client, policy(Egress::All, &[])).await;

    let (status, _) = fetch(&client, &a, &format!("http://{SECOND_HOST}/hello.txt")).await;
    assert_eq!(status, "200", "egress all reaches the internet");
    let (status, _) = fetch(&client, &a, "http://other.test/hello.txt").await;
    assert_eq!(status, "200", "and resolves any name");

    let b_addr = sh(&client, &b, "ip -o -4 addr show dev eth0")
        .await
        .stdout
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let gateway = sh(&client, &a, "ip route show default")
        .await
        .stdout
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_owned();
    // Kept: the process lives on after the request.
    let _web = client
        .start_process(
            b.session_id,
            &hutch_api::CommandRequest {
                command: Some("exec python3 -m http.server 8000 >/dev/null 2>&1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let up = sh(
        &client,
        &b,
        "for i in $(seq 100); do curl -s -o /dev/null 127.0.0.1:8000 && exit 0; sleep 0.1; done; exit 1",
    )
    .await;
    assert_eq!(up.exit_code, 0, "the other session serves: {up:?}");
    // A service of the host's own, on every address of the server's namespace.
    let mut host_service = std::process::Command::new("nsenter")
        .arg(format!("--net={}", setup.internet.server_netns().display()))
        .args([
            "--",
            "python3",
            "-m",
            "http.server",
            "9000",
            "--bind",
            "0.0.0.0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !setup
        .internet
        .in_server_ns("ss", &["-ltn"])
        .contains(":9000")
    {
        assert!(Instant::now() < deadline, "the host service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    for target in [
        "169.254.169.254:80".to_owned(), // cloud metadata
        format!("{SERVER_UPLINK}:9000"), // the host's own address
        format!("{gateway}:9000"),       // the host, through the gateway
        format!("{gateway}:7420"),       // the control plane's port
        "127.0.0.1:7420".to_owned(),     // loopback is the sandbox's own
        format!("{b_addr}:8000"),        // another session
        "10.1.2.3:80".to_owned(),        // private ranges
        "192.168.1.1:80".to_owned(),
    ] {
        let (status, took) = fetch(&client, &a, &format!("http://{target}/")).await;
        assert_eq!(status, "000", "{target} is unreachable");
        assert!(took < Duration::from_secs(5), "{target}: {took:?}");
    }

    let _ = host_service.kill();
    let _ = host_service.wait();

    for attempt in [
        "ip route add 198.51.100.0/24 dev eth0",
        "ip addr add 198.51.100.7/24 dev eth0",
        "ip link set eth0 down",
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'",
        "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
    ] {
        let out = sh(&client, &a, attempt).await;
        assert_ne!(out.exit_code, 0, "{attempt} must fail inside: {out:?}");
    }
    let v6 = sh(&client, &a, "ip -6 addr show dev eth0").await.stdout;
    assert!(!v6.contains("inet6"), "no IPv6 address: {v6}");
}

/// Holds three connections to the web host open, tries a fourth, closes them.
const FOURTH_CONNECTION: &str = "python3 - <<'EOF'
import socket, time
held = [socket.create_connection(('203.0.113.10', 80), timeout=5) for _ in range(3)]
started = time.monotonic()
try:
    socket.create_connection(('203.0.113.10', 80), timeout=5)
    print('fourth: connected')
except OSError as e:
    print(f'fourth: refused after {time.monotonic() - started:.3f} s:', e)
for c in held:
    c.close()
EOF";

#[tokio::test]
async fn a_sessions_connections_and_bandwidth_are_bounded() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&[
        "--network-max-connections",
        "3",
        "--network-bandwidth-mbit",
        "8",
    ]);
    let client = setup.client("alice");
    let s = networked(&client, policy(Egress::All, &[])).await;

    // 8 Mbit/s is 1 MB/s: 2 MiB take two seconds (unbounded, this link carries > 50 MB/s).
    let download = sh(
        &client,
        &s,
        "curl -s -o /dev/null -w '%{speed_download}' http://203.0.113.10/big.bin",
    )
    .await;
    let bytes_per_s: f64 = download.stdout.trim().parse().unwrap();
    assert!(bytes_per_s < 1_300_000.0, "{bytes_per_s} B/s");

    // Three connections open: a fourth is rejected at once; once they close, connections
    // are admitted again.
    let fourth = sh(&client, &s, FOURTH_CONNECTION).await;
    let after: f64 = fourth
        .stdout
        .strip_prefix("fourth: refused after ")
        .and_then(|rest| rest.split_once(' '))
        .and_then(|(seconds, _)| seconds.parse().ok())
        .unwrap_or_else(|| panic!("{fourth:?}"));
    assert!(after < 3.0, "refused, not left to time out: {fourth:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetch(&client, &s, "http://203.0.113.10/hello.txt").await.0 != "200" {
        assert!(Instant::now() < deadline, "connections stay refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn policies_beyond_the_operators_ceiling_or_malformed_are_refused() {
    if !can_run_sandboxes() {
        return;
    }
    let internet = TestInternet::start();
    let server = TestServer::start_in_netns(
        &internet.server_netns(),
        LISTEN,
        &[
            "--warm-pool",
            "0",
            "--network-allowed",
            "allow",
            "--network-dns",
            net_common::DNS,
        ],
    );
    let forwarder = Forwarder::start(&internet.server_netns(), LISTEN.parse().unwrap());
    let client = HutchClient::new(&forwarder.url(), &server.token("alice")).unwrap();
    let err = client
        .create_session(&CreateSessionRequest {
            network: Some(policy(Egress::All, &[])),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("forbidden") && err.contains("at most \"allow\""),
        "{err}"
    );
    let err = client
        .create_session(&CreateSessionRequest {
            network: Some(policy(Egress::Allow, &["2001:db8::1"])),
            ..Default::default()
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("invalid_request") && err.contains("IPv6"),
        "{err}"
    );

    // A session without network cannot be given one later.
    let s = common::session(&client).await;
    let err = patch_network(&client, &s, policy(Egress::Allow, &["allowed.test"]))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no network interface"), "{err}");
}

#[tokio::test]
async fn networked_sessions_survive_a_server_kill_and_cycles_leave_nothing_behind() {
    if !can_run_sandboxes() {
        return;
    }
    let mut setup = Setup::start(&["--network-warm-pool", "2"]);
    let client = setup.client("alice");
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(networked(&client, policy(Egress::Allow, &["allowed.test"])).await);
    }
    setup.server.kill_hard();
    setup.server.restart();
    let client = setup.client("alice");
    for s in &sessions {
        let (status, _) = fetch(&client, s, "http://allowed.test/hello.txt").await;
        assert_eq!(status, "200", "adopted with its network and resolver");
        let (status, _) = fetch(&client, s, "http://second.test/hello.txt").await;
        assert_eq!(status, "000", "and its policy");
    }
    for s in &sessions {
        client.delete_session(s.session_id).await.unwrap();
    }

    let cycles: usize = std::env::var("HUTCH_NETWORK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for _ in 0..cycles {
        let s = networked(&client, policy(Egress::Allow, &["allowed.test"])).await;
        client.delete_session(s.session_id).await.unwrap();
    }
    // While the server runs, what is left is the warm pool's: its two wired sandboxes, each
    // with an interface, a table and an address.
    let wired = setup.internet.sandbox_interfaces();
    assert!(wired.len() <= 2, "only the pool's interfaces: {wired:?}");
    let tables = setup.internet.tables();
    assert!(
        tables.len() <= 3,
        "the server's table and the pool's: {tables:?}"
    );
    let pool_addresses = setup
        .internet
        .addresses()
        .into_iter()
        .filter(|a| a.starts_with("10.231."))
        .count();
    assert!(pool_addresses <= 2, "only the pool's addresses");
    // An orderly stop removes those too.
    setup.server.stop();
    let base = setup.internet.tables();
    assert_eq!(
        base.len(),
        1,
        "only the server's own table is left: {base:?}"
    );
    assert!(setup.internet.sandbox_interfaces().is_empty());
    let addresses = setup.internet.addresses();
    assert!(
        addresses.iter().all(|a| !a.starts_with("10.231.")),
        "no pool address is left: {addresses:?}"
    );
}

/// Runs `code` with `libraries` through the interpreter (NDJSON): its frames, as text.
async fn execute_with_libraries(
    client: &HutchClient,
    s: &Session,
    code: &str,
    libraries: &[&str],
) -> String {
    let body = serde_json::json!({"code": code, "libraries": libraries, "timeout": 120});
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/interpreter/execute", s.session_id),
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test]
async fn libraries_install_from_an_index_the_policy_allows_and_fail_clearly_otherwise() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&[]);
    let client = setup.client("alice");
    let index_env = std::collections::BTreeMap::from([
        (
            "PIP_INDEX_URL".to_owned(),
            "http://pkgs.test/simple/".to_owned(),
        ),
        ("PIP_TRUSTED_HOST".to_owned(), "pkgs.test".to_owned()),
        ("PIP_RETRIES".to_owned(), "0".to_owned()),
    ]);
    let create = |allow: &'static [&'static str]| CreateSessionRequest {
        env: Some(index_env.clone()),
        network: Some(policy(Egress::Allow, allow)),
        ..Default::default()
    };

    let s = client
        .create_session(&create(&["pkgs.test"]))
        .await
        .unwrap();
    let frames = execute_with_libraries(
        &client,
        &s,
        "import hutchtestpkg\nprint(hutchtestpkg.GREETING)",
        &["hutchtestpkg"],
    )
    .await;
    assert!(frames.contains("hello from hutchtestpkg"), "{frames}");
    let pip = sh(
        &client,
        &s,
        "pip install -q --target /tmp/t hutchtestpkg && ls /tmp/t",
    )
    .await;
    assert_eq!(
        pip.exit_code, 0,
        "`!pip` goes through the policy too: {pip:?}"
    );

    // The index is not in this session's policy: the install fails and says why.
    let s = client
        .create_session(&create(&["allowed.test"]))
        .await
        .unwrap();
    let frames =
        execute_with_libraries(&client, &s, "print('should not run')", &["hutchtestpkg"]).await;
    assert!(frames.contains("LibraryInstallError"), "{frames}");
    assert!(frames.contains("hutchtestpkg"), "{frames}");
    assert!(frames.contains("network policy"), "{frames}");
    assert!(!frames.contains("should not run"), "{frames}");
}

#[tokio::test]
async fn the_operators_package_index_is_reachable_without_network_and_nothing_else_is() {
    if !can_run_sandboxes() {
        return;
    }
    let setup = Setup::start(&["--pip-index-url", "http://203.0.113.12/simple/"]);
    let client = setup.client("alice");
    let s = common::session(&client).await;

    let frames = execute_with_libraries(
        &client,
        &s,
        "import hutchtestpkg\nprint(hutchtestpkg.GREETING)",
        &["hutchtestpkg"],
    )
    .await;
    assert!(frames.contains("hello from hutchtestpkg"), "{frames}");
    // `%pip install` in a notebook cell goes the same way, into the session's own directory
    // (the image's Python refuses installs into its own site-packages, PEP 668).
    let fresh = common::session(&client).await;
    let frames = execute_with_libraries(
        &client,
        &fresh,
        "%pip install -q hutchtestpkg\nimport hutchtestpkg\nprint(hutchtestpkg.GREETING, hutchtestpkg.__file__)",
        &[],
    )
    .await;
    let stdout: String = frames
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|f| f["type"] == "stdout")
        .filter_map(|f| f["text"].as_str().map(str::to_owned))
        .collect();
    assert!(
        stdout.starts_with("hello from hutchtestpkg /workspace/.hutch/site-packages/"),
        "{frames}"
    );

    let through = |url: &str| {
        format!("curl -s -o /dev/null -w '%{{http_code}}' -x http://127.0.0.1:3141 {url}")
    };
    let index = sh(&client, &s, &through("http://203.0.113.12/hello.txt")).await;
    assert_eq!(index.stdout, "200", "the index host: {index:?}");
    let other = sh(
        &client,
        &s,
        &through(&format!("http://{SECOND_HOST}/hello.txt")),
    )
    .await;
    assert_eq!(other.stdout, "403", "anything else: {other:?}");
    let tunnel = sh(&client, &s, &through("https://203.0.113.10/")).await;
    assert_ne!(tunnel.exit_code, 0, "no tunnel elsewhere: {tunnel:?}");
    let (status, _) = fetch(&client, &s, "http://203.0.113.12/hello.txt").await;
    assert_eq!(status, "000", "and still no network of its own");
}

/// `npm install` of the test registry's package in `/tmp/app`, then a `require` of it.
const NPM_INSTALL: &str = "mkdir -p /tmp/app && cd /tmp/app && npm install --no-progress hutchtestnpm 2>&1 && node -e \"console.log(require('hutchtestnpm').greeting)\"";

#[tokio::test]
async fn npm_install_reaches_the_operators_registry_without_network() {
    if !can_run_sandboxes() {
        return;
    }
    {
        let setup = Setup::start(&["--npm-registry", "http://203.0.113.12/npm/"]);
        let client = setup.client("alice");
        let s = common::session(&client).await;
        assert_eq!(s.network, policy(Egress::None, &[]));

        let npm = sh(&client, &s, NPM_INSTALL).await;
        assert_eq!(npm.exit_code, 0, "{npm:?}");
        assert!(npm.stdout.ends_with("hello from hutchtestnpm\n"), "{npm:?}");
        // The proxy gives the registry's host and nothing else; the session still has no
        // network of its own.
        let other = sh(
            &client,
            &s,
            &format!(
                "curl -s -o /dev/null -w '%{{http_code}}' -x http://127.0.0.1:3141 http://{SECOND_HOST}/hello.txt"
            ),
        )
        .await;
        assert_eq!(other.stdout, "403", "{other:?}");
        let (status, _) = fetch(&client, &s, "http://203.0.113.12/hello.txt").await;
        assert_eq!(status, "000");
    }

    // Without the option a session without network has no registry: `npm install` fails, and
    // `libraries` of a JavaScript context fail naming the package and the reason.
    let setup = Setup::start(&[]);
    let client = setup.client("alice");
    let s = common::session(&client).await;
    let npm = sh(&client, &s, NPM_INSTALL).await;
    assert_ne!(npm.exit_code, 0, "{npm:?}");
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/interpreter/contexts", s.session_id),
            Some(
                serde_json::to_vec(&serde_json::json!({"language": "javascript"}))
                    .unwrap()
                    .into(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200, "{}", String::from_utf8_lossy(&bytes));
    let context: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let body = serde_json::json!({
        "code": "console.log('should not run')",
        "contextId": context["id"],
        "libraries": ["hutchtestnpm"],
        "timeout": 120,
    });
    let (status, bytes) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/interpreter/execute", s.session_id),
            Some(serde_json::to_vec(&body).unwrap().into()),
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 200);
    let frames = String::from_utf8_lossy(&bytes);
    assert!(frames.contains("LibraryInstallError"), "{frames}");
    assert!(
        frames.contains("could not install hutchtestnpm"),
        "{frames}"
    );
    assert!(frames.contains("no network access"), "{frames}");
    assert!(!frames.contains("should not run"), "{frames}");
}
