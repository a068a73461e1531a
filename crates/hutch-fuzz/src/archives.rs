//! Tar archives from clients: the file API's archive upload and storage contexts' snapshots.

use std::path::Component;

use hutch_agent::fuzzing::extract_archive;
use hutch_server::fuzzing::rewrite_storage_archive;

use crate::{Scratch, cut};

/// `PUT /files/archive`: extracting any archive writes nothing outside the sandbox root,
/// whatever its names, links and the links already in the sandbox.
pub(crate) fn files_archive(data: &[u8]) {
    let scratch = Scratch::new();
    let _ = extract_archive(&scratch.root, "/workspace", cut(data), 1 << 20);
    scratch.assert_confined();
}

/// A storage context's snapshot: what the rewrite keeps is a tar of relative, normal names
/// that the rewrite accepts again unchanged.
pub(crate) fn storage_archive(data: &[u8]) {
    let include: Vec<String> = Vec::new();
    let exclude = vec!["**/*.tmp".to_owned()];
    let Ok(first) = rewrite_storage_archive(data, &include, &exclude, 1 << 20, 1000) else {
        return;
    };
    let again = rewrite_storage_archive(&first.archive, &include, &exclude, 1 << 20, 1000)
        .unwrap_or_else(|e| panic!("a rewritten archive is refused: {e}"));
    assert_eq!(
        again.archive, first.archive,
        "rewriting twice changed the archive"
    );
    assert_eq!((again.entries, again.bytes), (first.entries, first.bytes));
    let mut archive = tar::Archive::new(first.archive.as_slice());
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap();
        assert!(
            path.components().all(|c| matches!(c, Component::Normal(_))),
            "stored name {path:?} is not relative and normal"
        );
    }
}
