//! Images from registries and clients: references, layers and image archives.

use std::io::Cursor;

use hutch_image::{ImageRef, ImageStore, UnpackOptions, import_archive, unpack_layer};

use crate::{Scratch, runtime};

/// Owners and limits the targets unpack with.
const OPTIONS: UnpackOptions = UnpackOptions {
    uid_base: 100_000,
    id_count: 65_536,
    max_bytes: 1 << 20,
    max_entries: 1_000,
};

/// An image reference that parses shows as a reference that parses to itself.
pub(crate) fn image_reference(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reference) = ImageRef::parse(text) else {
        return;
    };
    let shown = reference.to_string();
    assert_eq!(
        ImageRef::parse(&shown),
        Ok(reference),
        "{text:?} shown as {shown:?}"
    );
}

/// A layer (tar, gzip or zstd) unpacks or is refused, and writes nothing outside its root.
pub(crate) fn oci_layer(data: &[u8]) {
    let scratch = Scratch::new();
    let _ = unpack_layer(data, &scratch.root, &OPTIONS);
    scratch.assert_confined();
}

/// An image archive (`docker save` or an OCI layout as tar) imports or is refused, and writes
/// nothing outside the image store.
pub(crate) fn image_archive(data: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = ImageStore::open(&root, OPTIONS).unwrap();
    let _ = runtime().block_on(import_archive(
        &store,
        Cursor::new(data.to_vec()),
        None,
        4 << 20,
    ));
    let beside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(beside, ["store"], "written beside the image store");
}
