//! Every code block of `README.md`, `python/README.md` and `docs/*.md` runs as pasted, in
//! order, against a real server; the TypeScript blocks (of `typescript/README.md`, and the
//! `ts` blocks of `README.md`) are run by the TypeScript suite (`typescript/test/docs.test.mjs`),
//! and a test here checks that `typescript/README.md` holds no block that neither runs.
//!
//! The server listens where the documents say, `127.0.0.1:7420`, in a network namespace of
//! its own so that it meets nothing else on this machine. The blocks of one file run as one
//! `bash -euo pipefail` session in the checkout, as a reader pastes them into one shell:
//! `sh` blocks as they are, `python` blocks with the SDK's virtualenv (`target/venv-sdk`,
//! made by `scripts/deps.sh`), with what a reader on the server's machine has: `hutch` on
//! the `PATH`, and `hutch token` finding the server's secret. A `json` block (an example
//! answer or request body) must parse as JSON.
//!
//! A block that cannot run here (one that installs, or serves until stopped) carries a
//! marker on the line before its fence, `<!-- docs-test: skip: WHY -->`; the test lists what
//! it skipped and why. Any other block is code in a language the test runs (`sh`, `bash`,
//! `python`, `json`) or marked as text (` ```text `, for diagrams and output): a block of
//! another language, or with none, fails the test.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{SECRET, TestServer, can_run_sandboxes};

/// The marker that skips the block after it; the reason follows it.
const SKIP_MARKER: &str = "<!-- docs-test: skip: ";

/// Where the READMEs say the server listens.
const DOCUMENTED_ADDRESS: &str = "127.0.0.1:7420";

/// How long one file's blocks may take in all.
const TIMEOUT_SECS: u32 = 600;

/// A fenced code block.
#[derive(Debug)]
struct Block {
    /// The first word of its info string.
    language: String,
    /// Its text.
    code: String,
    /// The line of its opening fence, from 1.
    line: usize,
    /// Why it is not run, when it is marked.
    skip: Option<String>,
}

/// The fenced blocks of a Markdown text, with their skip markers.
fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    let mut previous = "";
    for (index, line) in markdown.lines().enumerate() {
        match open.take() {
            Some(block) if line.trim_start().starts_with("```") => out.push(block),
            Some(mut block) => {
                block.code.push_str(line);
                block.code.push('\n');
                open = Some(block);
            }
            None if line.starts_with("```") => {
                let skip = previous
                    .strip_prefix(SKIP_MARKER)
                    .and_then(|rest| rest.strip_suffix("-->"))
                    .map(|why| why.trim().to_owned());
                open = Some(Block {
                    language: line[3..].split_whitespace().next().unwrap_or("").to_owned(),
                    code: String::new(),
                    line: index + 1,
                    skip,
                });
            }
            None => {}
        }
        if !line.trim().is_empty() {
            previous = line.trim();
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    out
}

/// The checkout's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the blocks of `file` (relative to the checkout) in order against `server`; returns
/// what ran and what was skipped, or panics with the session's output. A file with only text,
/// JSON and skipped blocks starts no shell.
fn run_blocks(server: &TestServer, file: &str, python: &Path) -> String {
    let markdown = std::fs::read_to_string(repo().join(file)).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let mut script = String::new();
    let mut report = String::new();
    for (n, block) in blocks(&markdown).iter().enumerate() {
        let name = format!("{file} block {} (line {})", n + 1, block.line);
        if let Some(why) = &block.skip {
            assert!(!why.is_empty(), "{name}: a skip marker says why");
            writeln!(report, "skipped {name}: {why}").unwrap();
            continue;
        }
        match block.language.as_str() {
            "text" => continue,
            "json" => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&block.code) {
                    panic!("{name} is not JSON: {e}\n{}", block.code);
                }
            }
            "sh" | "bash" => {
                writeln!(script, "echo '== {name}'").unwrap();
                script.push_str(&block.code);
            }
            "python" => {
                let path = scratch.path().join(format!("block-{}.py", n + 1));
                std::fs::write(&path, &block.code).unwrap();
                writeln!(script, "echo '== {name}'").unwrap();
                writeln!(script, "'{}' '{}'", python.display(), path.display()).unwrap();
            }
            other => panic!(
                "{name} is in {other:?}: make it sh, bash, python, json or text, or mark it \
                 {SKIP_MARKER}WHY -->"
            ),
        }
        writeln!(report, "ran {name}").unwrap();
    }
    if script.is_empty() {
        return report;
    }

    let hutch = Path::new(env!("CARGO_BIN_EXE_hutch"));
    let path = format!(
        "{}:{}",
        hutch.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("timeout");
    bash.arg(TIMEOUT_SECS.to_string())
        .args(["bash", "-euo", "pipefail", "-c", &script])
        .current_dir(repo())
        .env("PATH", path)
        // The reader is root on the server's machine: `hutch token` finds its secret.
        .env("HUTCH_DATA_DIR", server.data_dir())
        .env("HUTCH_JWT_SECRET", SECRET);
    for (name, _) in std::env::vars() {
        if name.starts_with("HUTCH_")
            && !matches!(name.as_str(), "HUTCH_DATA_DIR" | "HUTCH_JWT_SECRET")
            || name == "TOKEN"
            || name == "SESSION"
        {
            bash.env_remove(name);
        }
    }
    let out = server.in_network(bash).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{file}: a block failed (exit {:?})\n{report}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status.code()
    );
    assert!(
        !stdout.contains(r#"{"error":{"#),
        "{file}: the API answered an error\n{report}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    report
}

#[test]
fn blocks_are_split_at_fences_with_their_skip_markers() {
    let markdown = "intro\n\n<!-- docs-test: skip: serves forever -->\n```sh\nhutch serve\n```\n\
                    text\n```python\nprint(1)\nprint(2)\n```\n```\ndiagram\n```\n";
    let found = blocks(markdown);
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].skip.as_deref(), Some("serves forever"));
    assert_eq!((found[0].language.as_str(), found[0].line), ("sh", 4));
    assert_eq!(found[1].code, "print(1)\nprint(2)\n");
    assert_eq!(found[1].skip, None);
    assert_eq!(found[2].language, "");
}

#[test]
fn every_block_of_the_readmes_runs_as_pasted() {
    if !can_run_sandboxes() {
        return;
    }
    let python = repo().join("target/venv-sdk/bin/python");
    if !python.exists() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the SDK's virtualenv is missing: run scripts/deps.sh"
        );
        eprintln!(
            "skipped: no {} (scripts/deps.sh makes it)",
            python.display()
        );
        return;
    }
    let server = TestServer::start_in_private_network(DOCUMENTED_ADDRESS, &["--warm-pool", "1"]);
    for file in documents() {
        let report = run_blocks(&server, &file, &python);
        assert!(
            !file.ends_with("README.md") || report.contains("ran "),
            "{file} has blocks that run"
        );
        eprint!("{report}");
    }
}

/// The documents whose blocks run here: the READMEs and every `docs/*.md`.
fn documents() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_owned(), "python/README.md".to_owned()];
    files.extend(docs);
    files
}

#[test]
fn every_block_of_the_docs_is_code_that_runs_text_or_marked() {
    // Checked without a server, so that a block in a language nothing runs fails at once.
    for file in documents() {
        let markdown = std::fs::read_to_string(repo().join(&file)).unwrap();
        for block in blocks(&markdown) {
            assert!(
                block.skip.is_some()
                    || ["sh", "bash", "python", "json", "text"].contains(&block.language.as_str()),
                "{file} line {}: a {:?} block: make it sh, bash, python, json or text, or mark \
                 it {SKIP_MARKER}WHY -->",
                block.line,
                block.language
            );
        }
    }
    // The TypeScript README is the TypeScript suite's: each block is `ts` (run there), text,
    // or marked.
    let markdown = std::fs::read_to_string(repo().join("typescript/README.md")).unwrap();
    for block in blocks(&markdown) {
        assert!(
            block.skip.is_some() || ["ts", "typescript", "text"].contains(&block.language.as_str()),
            "typescript/README.md line {}: a {:?} block the TypeScript docs test does not run",
            block.line,
            block.language
        );
    }
}
