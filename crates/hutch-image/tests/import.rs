//! Offline imports of archives made by `skopeo` from a real registry: a `docker save`
//! (docker-archive) tarball and an OCI layout (oci-archive) tarball. Run as root.

mod support;

use std::process::Command;

use hutch_image::{ImageRef, ImportError, import_archive};
use support::Registry;

/// Writes `source` (a `docker://` image in `registry`) as a `kind` archive (`docker-archive`
/// or `oci-archive`) to a file and returns it.
fn archive(
    registry: &Registry,
    kind: &str,
    repository: &str,
    dir: &std::path::Path,
) -> std::path::PathBuf {
    let file = dir.join(format!("{kind}.tar"));
    let suffix = if kind == "docker-archive" {
        ":busybox:1.36"
    } else {
        ":1.36"
    };
    support::run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        &format!("docker://{}/{repository}", registry.addr),
        &format!("{kind}:{}{suffix}", file.display()),
    ]));
    file
}

/// A copy of the `docker save` archive `docker` whose image is tagged `tags`.
fn retagged(docker: &std::path::Path, tags: &[&str]) -> std::path::PathBuf {
    let out = docker.with_file_name("retagged.tar");
    let mut archive = tar::Archive::new(std::fs::File::open(docker).expect("open"));
    let mut builder = tar::Builder::new(std::fs::File::create(&out).expect("create"));
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
        if entry.path().expect("path").to_str() == Some("manifest.json") {
            let mut manifest: serde_json::Value = serde_json::from_slice(&data).expect("json");
            manifest[0]["RepoTags"] = serde_json::json!(tags);
            data = serde_json::to_vec(&manifest).expect("json");
            header.set_size(data.len() as u64);
            header.set_cksum();
        }
        builder.append(&header, data.as_slice()).expect("append");
    }
    builder.finish().expect("finish");
    out
}

#[tokio::test]
async fn docker_save_and_oci_archives_import_without_a_registry() {
    let registry = Registry::start();
    registry.push(&support::busybox_layout(), "library/busybox:latest");
    let work = tempfile::Builder::new()
        .prefix("hutch-import-")
        .tempdir_in(support::scratch())
        .expect("tempdir");
    let docker = archive(
        &registry,
        "docker-archive",
        "library/busybox:latest",
        work.path(),
    );
    let oci = archive(
        &registry,
        "oci-archive",
        "library/busybox:latest",
        work.path(),
    );
    drop(registry);

    // docker save names its image (`busybox:1.36`, a Docker Hub short name).
    let (_dir, store) = support::store();
    let records = import_archive(
        &store,
        std::fs::File::open(&docker).expect("open"),
        None,
        1 << 30,
    )
    .await
    .expect("docker-archive imports");
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].name, "docker.io/library/busybox:1.36");
    assert_eq!(records[0].config.env, vec!["PATH=/bin"]);
    let lease = store
        .acquire(&ImageRef::parse("busybox:1.36").expect("reference"))
        .expect("acquire");
    let output = support::in_overlay(&lease.lower_dirs(), r#"chroot "$R" /bin/echo imported"#);
    assert_eq!(output, "imported\n");
    drop(lease);

    // An image saved under several tags is imported under each of them.
    let tagged = retagged(&docker, &["busybox:1.36", "busybox:stable", "busybox:1.36"]);
    let records = import_archive(
        &store,
        std::fs::File::open(&tagged).expect("open"),
        None,
        1 << 30,
    )
    .await
    .expect("a docker-archive of two tags imports");
    let names: Vec<&str> = records.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/busybox:1.36",
            "docker.io/library/busybox:stable"
        ]
    );
    assert_eq!(records[0].id, records[1].id);
    store
        .remove_image(&ImageRef::parse("busybox:stable").expect("reference"))
        .expect("remove the second tag");

    // An OCI layout names only a tag, so the import is given a name. Its layer is the same
    // content as the docker archive's, so the store keeps one copy.
    let name = ImageRef::parse("localhost/tools/busybox:oci").expect("reference");
    let records = import_archive(
        &store,
        std::fs::File::open(&oci).expect("open"),
        Some(name.clone()),
        1 << 30,
    )
    .await
    .expect("oci-archive imports");
    assert_eq!(records[0].name, "localhost/tools/busybox:oci");
    let images = store.images().expect("images");
    assert_eq!(images.len(), 2);
    assert_eq!(images[0].layers[0].diff_id, images[1].layers[0].diff_id);
    let stored_layers = std::fs::read_dir(store.root().join("layers/sha256")).expect("layers");
    assert_eq!(stored_layers.count(), 1);
    let lease = store.acquire(&name).expect("acquire");
    assert!(support::tree(&lease.lower_dirs()).contains(&"bin/sh l 0:0 777 busybox".to_owned()));

    // Without a name, the OCI archive cannot be imported; a truncated archive is refused.
    let error = import_archive(
        &store,
        std::fs::File::open(&oci).expect("open"),
        None,
        1 << 30,
    )
    .await
    .expect_err("no name");
    assert!(matches!(error, ImportError::NoName), "{error}");
    let bytes = support::read(&docker);
    let error = import_archive(
        &store,
        std::io::Cursor::new(bytes[..bytes.len() / 2].to_vec()),
        None,
        1 << 30,
    )
    .await
    .expect_err("truncated");
    assert_eq!(error.code(), "image_import_failed", "{error}");
    let error = import_archive(
        &store,
        std::fs::File::open(&docker).expect("open"),
        None,
        1024,
    )
    .await
    .expect_err("too large");
    assert!(matches!(error, ImportError::TooLarge(1024)), "{error}");
    assert_eq!(
        support::listing(&store.root().join("tmp")),
        Vec::<String>::new()
    );
}
