//! Rebuilds the crate when a migration changes (`sqlx::migrate!` embeds `migrations/` at
//! compile time, and cargo does not track those files on its own), and embeds the web
//! console's built assets.
//!
//! The console (`console/`, a TypeScript app) is built by `npm run build` into
//! `console/dist`; scripts/deps.sh does it from the lock file on the set-up and test paths.
//! This script writes `$OUT_DIR/console_assets.rs`: every file of `console/dist` with its
//! gzip-compressed bytes, served by `crate::console`. When `console/dist` is missing (a
//! `cargo build` on a fresh clone that skipped the set-up) the list is empty and `/console`
//! answers a page saying how to build it: the build never runs npm nor reaches the network.

use std::io::Write;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    println!("cargo:rerun-if-changed=migrations-postgres");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let console = manifest.join("../../console");
    let dist = console.join("dist");
    // Watching the directory that holds `dist` notices when it appears; `dist` itself, every
    // change inside it.
    println!("cargo:rerun-if-changed={}", dist.display());
    println!(
        "cargo:rerun-if-changed={}",
        console.join("package.json").display()
    );
    let mut files = Vec::new();
    if dist.is_dir() {
        collect(&dist, &dist, &mut files);
    }
    files.sort();
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    let mut code = String::from("&[\n");
    for (i, (name, path)) in files.iter().enumerate() {
        let bytes = std::fs::read(path).expect("reading a console asset");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&bytes).expect("compressing in memory");
        let gz_path = out.join(format!("console-{i}.gz"));
        std::fs::write(&gz_path, gz.finish().expect("compressing in memory"))
            .expect("writing a compressed console asset");
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?}), include_bytes!({:?})),\n",
            path.display().to_string(),
            gz_path.display().to_string(),
        ));
    }
    code.push(']');
    std::fs::write(out.join("console_assets.rs"), code).expect("writing console_assets.rs");
}

/// Every file under `dir`, as (path relative to `root` with `/`, absolute path).
fn collect(root: &Path, dir: &Path, files: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).expect("reading console/dist");
    for entry in entries {
        let path = entry.expect("reading console/dist").path();
        if path.is_dir() {
            collect(root, &path, files);
        } else {
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .replace('\\', "/");
            files.push((name, path));
        }
    }
}
