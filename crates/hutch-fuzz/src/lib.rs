//! Fuzz targets for every hutch parser that reads client or sandbox bytes.
//!
//! Each target takes one input and panics when a parser misbehaves: a panic inside the parser
//! itself, or an oracle the target checks afterwards (nothing written outside the directory an
//! archive is confined to, a cleaned path that cleans to itself, a rewritten archive that
//! rewrites to itself, a token that round-trips). [`TARGETS`] names them all.
//!
//! Two runners use them: libFuzzer (`src/bin/hutch-fuzz.rs`, coverage-guided, built and run by
//! `scripts/fuzz.sh`) and the crate's tests, which replay every input under `corpus/` (the
//! seeds taken from real clients and tools, and every input that once found a bug).

#![forbid(unsafe_code)]
// A fuzz target reports a broken oracle by panicking, and scratch set-up failing is one.
#![allow(clippy::unwrap_used)]

mod archives;
mod headers;
mod images;
mod paths;
mod preface;
mod streams;

/// A fuzz target: one input in, a panic when a parser misbehaves.
pub type Target = fn(&[u8]);

/// Every target: its name (also its corpus directory) and its function.
pub const TARGETS: &[(&str, Target)] = &[
    ("files_archive", archives::files_archive),
    ("storage_archive", archives::storage_archive),
    ("file_paths", paths::file_paths),
    ("multipart", streams::multipart),
    ("worker_pipes", streams::worker_pipes),
    ("process_frames", streams::process_frames),
    ("websocket_frames", streams::websocket_frames),
    ("auth_headers", headers::auth_headers),
    ("image_reference", images::image_reference),
    ("oci_layer", images::oci_layer),
    ("image_archive", images::image_archive),
    ("agent_preface", preface::agent_preface),
];

/// The target called `name`.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Cuts `data` into the pieces a reader would get, at sizes derived from the input itself so
/// that the same input always cuts the same way: single bytes, odd sizes and whole buffers.
pub(crate) fn cut(data: &[u8]) -> Vec<Vec<u8>> {
    let size = match data.len() % 4 {
        0 => data.len().max(1),
        1 => 1,
        2 => 7,
        _ => 1 + data.len() % 1021,
    };
    data.chunks(size).map(<[u8]>::to_vec).collect()
}

/// A current-thread runtime for the targets that drive async parsers.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A scratch tree for the parsers that write files: `jail/root/` is the directory they are
/// confined to, `outside/` beside it must stay untouched. `root/workspace/up` is a symlink that
/// leaves the root (`../../../outside`), `root/workspace/host` one that names `outside/` by its
/// absolute host path, so an extraction that follows links the kernel would follow lands
/// outside and is caught.
pub(crate) struct Scratch {
    dir: tempfile::TempDir,
    /// The confining directory.
    pub(crate) root: std::path::PathBuf,
}

impl Scratch {
    /// A fresh scratch tree under the system's temporary directory.
    pub(crate) fn new() -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix("hutch-fuzz-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("jail/root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("workspace")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink("../../../outside", root.join("workspace/up")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("workspace/host")).unwrap();
        Scratch { dir, root }
    }

    /// Panics when anything was written outside `jail/root/`.
    pub(crate) fn assert_confined(&self) {
        let names = |dir: &std::path::Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(
            names(self.dir.path()),
            ["jail", "outside"],
            "written beside the jail"
        );
        assert_eq!(
            names(&self.dir.path().join("jail")),
            ["root"],
            "written beside the root"
        );
        assert!(
            names(&self.dir.path().join("outside")).is_empty(),
            "written outside the root through a link"
        );
    }
}
