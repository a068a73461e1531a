//! Gives both executables of this crate, `hutch` and the lean `hutch-agent`, the same agent
//! build id: a hash of every source the agent is built from (its crates' sources and
//! manifests, the worker programs it embeds, `Cargo.lock`). `hutch serve` runs the
//! `hutch-agent` beside it only when that one reports the same id (`hutch-agent --build-id`),
//! so an agent left over from another version is never paired with this server.
//!
//! The hash is FNV-1a over the files' relative paths and bytes, in sorted order: the same
//! sources give the same id on every build and every machine.

use std::fs;
use std::path::{Path, PathBuf};

/// What the agent is built from, relative to the workspace root.
const AGENT_SOURCES: &[&str] = &[
    "Cargo.lock",
    "crates/hutch/src/agent.rs",
    "crates/hutch/src/agent_main.rs",
    "crates/hutch/Cargo.toml",
    "crates/hutch-agent",
    "crates/hutch-api",
    "crates/hutch-sandbox",
    "crates/hutch-sys",
];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../..");
    let mut files = Vec::new();
    for source in AGENT_SOURCES {
        let path = root.join(source);
        println!("cargo:rerun-if-changed={}", path.display());
        collect(&root, &path, &mut files);
    }
    files.sort();
    let mut hash = Fnv::default();
    for (name, path) in &files {
        hash.write(name.as_bytes());
        hash.write(&[0]);
        hash.write(&fs::read(path).expect("reading an agent source"));
        hash.write(&[0]);
    }
    println!(
        "cargo:rustc-env=HUTCH_AGENT_BUILD_ID={}-{:016x}",
        std::env::var("CARGO_PKG_VERSION").expect("set by cargo"),
        hash.0
    );
}

/// Every file under `path` (or `path` itself) as (path relative to `root`, path), leaving out
/// tests, which the agent is not built from.
fn collect(root: &Path, path: &Path, files: &mut Vec<(String, PathBuf)>) {
    if path.is_dir() {
        for entry in fs::read_dir(path).expect("listing agent sources").flatten() {
            let child = entry.path();
            if child.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            collect(root, &child, files);
        }
    } else if path.is_file() {
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        files.push((name, path.to_owned()));
    }
}

/// 64-bit FNV-1a.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}
