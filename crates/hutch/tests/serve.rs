//! `hutch serve` as its operator meets it: the lines it prints at start work when pasted into a
//! shell, its log is coloured only when asked or on a terminal, it serves HTTPS and WSS with
//! `--tls-cert`/`--tls-key`, it removes image skeletons no sandbox uses, its sessions run
//! the lean `hutch-agent` built beside it, and a SIGTERM as soon as it listens still stops it
//! in order.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes};
use futures_util::{SinkExt, StreamExt};
use hutch_api::ProcessEvent;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A `hutch serve` started as a user would, without a configured secret, so that it prints
/// its start-up token; stdout and stderr are captured.
struct Serve {
    child: Child,
    _data: tempfile::TempDir,
    /// The address from the `listening on` line.
    addr: SocketAddr,
    /// Everything stdout printed up to and including the start-up lines.
    stdout: Vec<String>,
    /// Every line of stderr so far.
    stderr: Arc<Mutex<Vec<String>>>,
}

/// `hutch serve` on a free loopback port with its data in `data`, no warm pool, and nothing
/// left behind when it exits.
fn serve_command(data: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hutch"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--warm-pool", "0"])
        .args(["--on-exit", "destroy", "--data-dir"])
        .arg(data);
    command
}

impl Serve {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let data = tempfile::Builder::new()
            .prefix("hutch-serve")
            .tempdir_in("/tmp")
            .unwrap();
        let mut child = serve_command(data.path())
            .args(args)
            .env_remove("HUTCH_JWT_SECRET")
            .env_remove("NO_COLOR")
            .env("HUTCH_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let collected = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                collected.lock().unwrap().push(line);
            }
        });
        let mut stdout = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut addr = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(url) = line.split("listening on ").nth(1) {
                addr = Some(url.split("://").nth(1).unwrap().parse().unwrap());
            }
            let last = line.trim_start().starts_with("curl ");
            stdout.push(line);
            if last {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let addr = addr.unwrap_or_else(|| {
            panic!(
                "hutch serve printed no listening line; stdout: {stdout:?}, stderr: {:?}",
                stderr.lock().unwrap()
            )
        });
        Serve {
            child,
            _data: data,
            addr,
            stdout,
            stderr,
        }
    }

    /// The start-up lines meant for pasting (indented under the token line), as a script.
    fn pasted(&self) -> String {
        let start = self
            .stdout
            .iter()
            .position(|l| l.contains("to try it, paste:"))
            .unwrap_or_else(|| panic!("no start-up token in {:?}", self.stdout));
        let mut script: String = self.stdout[start + 1..]
            .iter()
            .map(|l| format!("{}\n", l.trim()))
            .collect();
        // A failed request must fail the script, as a user would notice.
        script = script.replace("curl ", "curl -sS --fail-with-body ");
        script
    }

    /// Waits until stderr has a line containing `text`, and returns stderr so far.
    fn stderr_once(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.stderr.lock().unwrap().clone();
            if lines.iter().any(|l| l.contains(text)) {
                return lines.join("\n");
            }
            assert!(
                Instant::now() < deadline,
                "no {text:?} in stderr: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    /// SIGTERM, then up to 60 s for the server to destroy its sandboxes (a loaded machine makes
    /// that slow, and a SIGKILL would leave them running), as [`TestServer`] stops.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` with bash and returns its stdout; fails the test when it fails.
fn bash(script: &str) -> String {
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed ({}):\n{script}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

const ANSI_ESCAPE: &str = "\x1b[";

#[test]
fn the_start_up_lines_work_when_pasted_into_a_shell() {
    if !can_run_sandboxes() {
        return;
    }
    let serve = Serve::start(&[], &[]);

    let answer = bash(&serve.pasted());

    let list: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(list["total"], 0, "{answer}");
}

#[test]
fn the_log_has_colours_only_when_asked_or_on_a_terminal() {
    if !can_run_sandboxes() {
        return;
    }
    // stderr is a pipe here, as when the log goes to a file or the journal.
    let auto = Serve::start(&[], &[]);
    let log = auto.stderr_once("serving");
    assert!(!log.contains(ANSI_ESCAPE), "auto colours a pipe: {log}");
    drop(auto);

    let always = Serve::start(&["--log-color", "always"], &[]);
    let log = always.stderr_once("serving");
    assert!(log.contains(ANSI_ESCAPE), "always has no colours: {log}");
    drop(always);

    let from_env = Serve::start(&[], &[("HUTCH_LOG_COLOR", "always")]);
    let log = from_env.stderr_once("serving");
    assert!(
        log.contains(ANSI_ESCAPE),
        "HUTCH_LOG_COLOR=always has no colours: {log}"
    );
}

#[test]
fn a_sigterm_as_soon_as_it_listens_stops_it_in_order_with_nothing_left() {
    if !can_run_sandboxes() {
        return;
    }
    // A service manager or a script may stop the server the moment it has started: the
    // signal must not find it without its handler, whose default action would end it with
    // its cgroups left on the host.
    for round in 0..5 {
        let data = tempfile::Builder::new()
            .prefix("hutch-serve")
            .tempdir_in("/tmp")
            .unwrap();
        let mut child = serve_command(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let listening = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.contains("listening on"));
        assert!(listening, "round {round}: no listening line");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        std::thread::spawn(move || for _ in lines {});
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "round {round}: still running");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "round {round}: the server stops in order (exit 0), not by the signal: {status:?}"
        );
        let parent = hutch_sandbox::linux::cgroup_parent(data.path());
        for root in ["unified", "memory", "pids", "cpu", "freezer", ""] {
            let dir = Path::new("/sys/fs/cgroup").join(root).join(&parent);
            assert!(!dir.exists(), "round {round}: {} is left", dir.display());
        }
    }
}

#[test]
fn an_unknown_log_color_is_refused_with_the_choices() {
    let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["serve", "--log-color", "sometimes"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sometimes") && stderr.contains("auto, always, never"),
        "{stderr}"
    );
}

/// A self-signed certificate for 127.0.0.1 and localhost, written as PEM files into `dir`.
fn self_signed_certificate(
    dir: &Path,
) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().clone())
}

/// Opens a TLS connection to `addr` trusting only `ca`.
async fn tls_connect(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
    connector.connect(name, tcp).await.unwrap()
}

/// One HTTP/1.1 request over TLS; returns the status code and the body.
async fn https_request(
    addr: SocketAddr,
    ca: &rustls::pki_types::CertificateDer<'static>,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = tls_connect(addr, ca).await;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[tokio::test]
async fn with_a_certificate_it_serves_https_and_wss() {
    if !can_run_sandboxes() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = self_signed_certificate(dir.path());
    let serve = Serve::start(
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        serve.stdout[0].contains(&format!("listening on https://{}", serve.addr)),
        "{:?}",
        serve.stdout
    );

    // The printed lines (curl over HTTPS, trusting the certificate) work as pasted.
    let answer = bash(&serve.pasted());
    assert!(answer.contains("\"total\":0"), "{answer}");

    // Plain HTTP on the TLS port gets no answer, and does not disturb the listener.
    let mut plain = std::net::TcpStream::connect(serve.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    let _ = plain.read_to_end(&mut reply);
    assert!(!reply.starts_with(b"HTTP/1.1 200"), "plain HTTP answered");

    // HTTPS: create a session.
    let token = serve
        .pasted()
        .lines()
        .find_map(|l| l.strip_prefix("export TOKEN="))
        .unwrap()
        .to_owned();
    let (status, body) = https_request(
        serve.addr,
        &ca,
        "POST",
        "/v1/sessions",
        &token,
        "{\"ttl\": 60}",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let session: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = session["sessionId"].as_str().unwrap();

    // WSS: stream a command in it.
    let tls = tls_connect(serve.addr, &ca).await;
    let mut request = format!("wss://{}/v1/sessions/{id}/commands/stream", serve.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    socket
        .send(Message::Text("{\"command\": \"exit 7\"}".into()))
        .await
        .unwrap();
    let mut exit_code = None;
    while let Some(message) = socket.next().await {
        if let Message::Text(text) = message.unwrap()
            && let ProcessEvent::Exit {
                exit_code: code, ..
            } = serde_json::from_str(&text).unwrap()
        {
            exit_code = code;
            break;
        }
    }
    assert_eq!(exit_code, Some(7));

    let (status, body) = https_request(
        serve.addr,
        &ca,
        "DELETE",
        &format!("/v1/sessions/{id}"),
        &token,
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = self_signed_certificate(dir.path());
    let other = tempfile::tempdir().unwrap();
    let (_, other_key, _) = self_signed_certificate(other.path());

    let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&other_key)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate and key"), "{stderr}");

    let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["serve", "--tls-cert"])
        .arg(&cert)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a certificate without a key");
}

#[test]
fn image_skeletons_no_sandbox_uses_are_removed_at_start() {
    if !can_run_sandboxes() {
        return;
    }
    let mut server = TestServer::start_with(&["--warm-pool", "0"]);
    let images = server.data_dir().join("images");
    let current = skeletons(&images);
    assert_eq!(current.len(), 1, "{current:?}");
    let client = server.client("alice");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(common::session(&client));

    // A skeleton an earlier hutch built, that nothing uses any more, and one whose build
    // an earlier server process left unfinished.
    let stale = images.join("default-00000000000000aa");
    std::fs::create_dir_all(stale.join("etc")).unwrap();
    std::fs::create_dir_all(images.join(".staging-4194304/etc")).unwrap();
    server.restart();

    assert_eq!(skeletons(&images), current, "only the one in use is left");
    assert!(!images.join(".staging-4194304").exists());
    // The session built on the kept skeleton was adopted and still runs commands.
    let client = server.client("alice");
    let result = runtime.block_on(common::sh(&client, &session, "cat /etc/debian_version"));
    assert_eq!(result.exit_code, 0, "{result:?}");
}

/// The `default-*` skeletons in `images`, sorted.
fn skeletons(images: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("default-"))
        .collect();
    names.sort();
    names
}

#[test]
fn sessions_run_the_lean_agent_built_beside_the_server() {
    if !can_run_sandboxes() {
        return;
    }
    // Cargo builds `hutch-agent` beside `hutch`, from the same sources: the server runs it
    // as every sandbox's PID 1 instead of `hutch agent`.
    let server = TestServer::start_with(&["--warm-pool", "1"]);
    let client = server.client("alice");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let session = runtime.block_on(common::session(&client));
    let result = runtime.block_on(common::sh(
        &client,
        &session,
        "tr '\\0' ' ' < /proc/1/cmdline; echo",
    ));
    assert_eq!(result.exit_code, 0, "{result:?}");
    assert!(
        result.stdout.starts_with("hutch-agent \n"),
        "{:?}",
        result.stdout
    );
}
