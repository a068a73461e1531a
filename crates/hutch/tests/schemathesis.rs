//! The API contract against a live server: schemathesis generates requests from the OpenAPI
//! document a real `hutch serve` publishes, sends them, and checks every answer.
//!
//! Checks: no 5xx (`not_a_server_error`), every status is one the document declares for the
//! operation (`status_code_conformance`), every body matches its declared schema and content
//! type (`response_schema_conformance`, `content_type_conformance`), and declared response
//! headers are present and valid (`response_headers_conformance`). Requests are both valid and
//! invalid; the stateful phase follows the document's links, so sessions are created, read,
//! changed, deleted and run commands.
//!
//! schemathesis lives in a virtualenv at `target/venv-schemathesis`, which `scripts/deps.sh`
//! creates (or at `$HUTCH_SCHEMATHESIS`). Without it the test fails, naming what to run.
//! `HUTCH_SCHEMATHESIS_EXAMPLES` sets the most test
//! cases per operation (default 20, about a minute); `HUTCH_SCHEMATHESIS_MAX_SECS` bounds the
//! whole run (default 300; past it the run is stopped and the test fails);
//! `HUTCH_SCHEMATHESIS_SEED` sets the seed (default 7420, so runs repeat).

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes};

/// The schemathesis executable; a test without it fails rather than pass without running.
fn schemathesis() -> PathBuf {
    let path = std::env::var_os("HUTCH_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/venv-schemathesis/bin/schemathesis")
        });
    assert!(
        path.exists(),
        "{} is missing; scripts/deps.sh installs it",
        path.display()
    );
    path
}

/// Per-operation settings. The routes relayed to a port inside a session (the API form, the
/// path form of preview links, and every method but `POST` on `…/ports/{port}/link`) answer
/// whatever the app listening there answers, and 502 `port_unreachable` when nothing listens
/// (the generated ports are closed): a 502 there is the documented answer, not a fault of the
/// server. Every other check still applies to them, and every check to the rest.
const CONFIG: &str = r#"
[[operations]]
include-path-regex = '^/v1/sessions/\{id\}/ports/\{port\}/|^/preview/'
checks.not_a_server_error.expected-statuses = ["1XX", "2XX", "3XX", "4XX", 502]
"#;

/// What every response is checked for.
const CHECKS: &str = "not_a_server_error,status_code_conformance,response_schema_conformance,\
                      content_type_conformance,response_headers_conformance";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// N of "Test cases: N generated, …" in schemathesis's summary (the number may be on the
/// next line).
fn generated_cases(output: &str) -> Option<u64> {
    let (_, rest) = output.rsplit_once("Test cases:")?;
    let mut words = rest.split_whitespace();
    let count = words.next()?.parse().ok()?;
    (words.next()? == "generated,").then_some(count)
}

#[test]
fn schemathesis_finds_no_server_error_or_contract_violation() {
    if !can_run_sandboxes() {
        return;
    }
    let schemathesis = schemathesis();
    let examples = env_number("HUTCH_SCHEMATHESIS_EXAMPLES", 20);
    let max_secs = env_number("HUTCH_SCHEMATHESIS_MAX_SECS", 300);
    let server = TestServer::start();
    assert!(
        server.url.starts_with("http://127.0.0.1:"),
        "the server must listen on loopback, not {}",
        server.url
    );
    let token = server.token("schemathesis");
    let report = tempfile::tempdir().unwrap();
    let config = report.path().join("schemathesis.toml");
    std::fs::write(&config, CONFIG).unwrap();

    let mut child = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", server.url))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--request-timeout", "60"])
        // One worker: CPython 3.11 before 3.11.8 keeps the AST constructor's recursion depth in
        // shared state, so hypothesis parsing lambdas on two threads at once can fail with
        // "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905).
        .args(["--workers", "1"])
        .args([
            "--seed",
            &env_number("HUTCH_SCHEMATHESIS_SEED", 7420).to_string(),
        ])
        .arg("--report-dir")
        .arg(report.path())
        // schemathesis keeps a cache in its working directory; keep it out of the tree.
        .current_dir(report.path())
        .args(["--report", "junit"])
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start schemathesis");

    // Collect output on threads so a full pipe never blocks the run.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = out.join().unwrap();
    let stderr = err.join().unwrap();
    println!("{stdout}");
    eprintln!("{stderr}");
    let Some(status) = status else {
        panic!("schemathesis ran longer than {max_secs} s and was stopped");
    };
    let cases = generated_cases(&stdout);
    eprintln!("schemathesis generated {cases:?} test cases");
    assert!(
        status.success(),
        "schemathesis found failures or errors (exit {status}); see its output above"
    );
    assert!(
        cases.is_some_and(|n| n > 0),
        "schemathesis reported no generated test cases"
    );
}
