//! A client generated from the published contract: openapi-python-client builds a Python
//! client from `docs/openapi.json` with no warning at all (a duplicate model name, a schema
//! it cannot read, a response it would leave out), and the client imports and reads the
//! tagged unions into their named variants.
//!
//! openapi-python-client lives in a virtualenv at `target/venv-openapi-python-client`, which
//! `scripts/deps.sh` creates (or at `$HUTCH_OPENAPI_PYTHON_CLIENT`, the virtualenv's
//! directory). Without it the test is skipped, except under CI (`CI=true`), where that is a
//! failure.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::path::{Path, PathBuf};
use std::process::Command;

/// The generator's settings: no formatting hooks (their absence is reported as a warning),
/// and the streamed media types read as raw bytes, as a client of them must.
const CONFIG: &str = "\
post_hooks: []
content_type_overrides:
  application/x-ndjson: application/octet-stream
  application/x-tar: application/octet-stream
";

/// Reads the named variants of the tagged unions with the generated client.
const READ_UNIONS: &str = r#"
import sys
sys.path.insert(0, sys.argv[1])
from hutch_client.models.stdout_frame import StdoutFrame
from hutch_client.models.control_frame import ControlFrame
from hutch_client.models.history_entry import HistoryEntry
from hutch_client.models.exit_process_event import ExitProcessEvent
from hutch_client.models.error_body import ErrorBody

frame = ControlFrame.from_dict({"type": "control", "text": "completed", "durationMs": 3})
assert frame.text == "completed" and frame.duration_ms == 3, frame
assert StdoutFrame.from_dict({"type": "stdout", "text": "hi", "seq": 0}).text == "hi"
entry = HistoryEntry.from_dict({
    "executionCount": 1, "code": "1/0", "status": "completed",
    "startedAt": "2026-01-01T00:00:00Z", "durationMs": 2, "stdout": "", "stderr": "",
    "error": {"type": "error", "name": "ZeroDivisionError", "value": "division by zero",
              "traceback": ""},
    "results": [],
})
assert type(entry.error).__name__ == "ErrorFrame", type(entry.error)
assert ExitProcessEvent.from_dict(
    {"type": "exit", "exitCode": 0, "durationMs": 1, "timedOut": False}).exit_code == 0
body = ErrorBody.from_dict({"error": {"code": "rate_limited", "message": "slow down"}})
assert body.error.message == "slow down"
print("ok")
"#;

/// The virtualenv holding openapi-python-client, if it is installed.
fn virtualenv() -> Option<PathBuf> {
    let dir = std::env::var_os("HUTCH_OPENAPI_PYTHON_CLIENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/venv-openapi-python-client")
        });
    if dir.join("bin/openapi-python-client").exists() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{} is missing; scripts/deps.sh installs it", dir.display());
    }
    eprintln!(
        "skipped: {} is missing (scripts/deps.sh installs it)",
        dir.display()
    );
    None
}

/// Runs `command`, and returns its standard output and error together; panics when it fails.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn a_python_client_generates_from_the_document_without_a_warning() {
    let Some(venv) = virtualenv() else {
        return;
    };
    let document = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, CONFIG).unwrap();
    let package = dir.path().join("hutch_client");

    let output = run(Command::new(venv.join("bin/openapi-python-client"))
        .arg("generate")
        .arg("--path")
        .arg(&document)
        .args(["--meta", "none", "--config"])
        .arg(&config)
        .arg("--output-path")
        .arg(&package));
    for needle in ["warning", "error", "unable", "duplicate", "skipping"] {
        assert!(
            !output.to_ascii_lowercase().contains(needle),
            "the generator reported a problem ({needle}):\n{output}"
        );
    }
    for model in [
        "stdout_frame",
        "result_frame",
        "control_frame",
        "start_process_event",
    ] {
        assert!(
            package.join(format!("models/{model}.py")).exists(),
            "the generated client has no model {model}:\n{output}"
        );
    }

    let read = run(Command::new(venv.join("bin/python"))
        .args(["-c", READ_UNIONS])
        .arg(dir.path()));
    assert_eq!(read.trim(), "ok");
}
