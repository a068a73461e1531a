//! The file API never reaches outside the sandbox root, whatever path or symlink it is given,
//! and never touches `/proc`, `/sys` or `/dev` inside it. A marker planted on the host, outside
//! the sandbox, must never be read or changed.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod files_common;

use std::path::PathBuf;

use common::{TestServer, can_run_sandboxes, session, sh, sh_with};
use files_common::{Reply, curl, enc, get, put};

const SECRET: &str = "HOST-SECRET-never-served";

/// A directory on the host, outside every sandbox, holding `secret.txt`.
struct Marker {
    dir: PathBuf,
}

impl Marker {
    fn plant() -> Marker {
        let dir = tempfile::Builder::new()
            .prefix("hutch-marker")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
        Marker { dir }
    }

    fn file(&self) -> String {
        self.dir.join("secret.txt").display().to_string()
    }

    /// Panics when the marker was changed or anything was added next to it.
    fn assert_untouched(&self) {
        assert_eq!(
            std::fs::read_to_string(self.dir.join("secret.txt")).unwrap(),
            SECRET
        );
        let names: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            1,
            "nothing appeared next to the marker: {names:?}"
        );
    }
}

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn never_secret(reply: &Reply, what: &str) {
    assert!(
        !reply.text().contains(SECRET),
        "{what} served the host's marker: {}",
        reply.text()
    );
}

#[tokio::test]
async fn absolute_relative_and_dotdot_paths_stay_inside() {
    if !can_run_sandboxes() {
        return;
    }
    let marker = Marker::plant();
    let server = TestServer::start();
    let client = server.client("alice");
    let id = session(&client).await.session_id;
    let host_rootfs = server.data_dir().join("sandboxes").display().to_string();

    let relative = format!("../../../../../..{}", marker.file());
    let dotdot = format!("/workspace/../../..{}", marker.file());
    for path in [marker.file(), relative.clone(), dotdot.clone()] {
        let r = get(&server, id, &path, &[]);
        // Each names the same file inside the sandbox: missing, or what the first PUT wrote.
        assert!(
            r.status == 404 || (r.status == 200 && r.body == b"overwritten"),
            "{path}: {} {}",
            r.status,
            r.text()
        );
        never_secret(&r, &path);
        let w = put(&server, id, &path, "", b"overwritten");
        // Written inside the sandbox (its own /tmp, parents created) if anywhere; never on
        // the host.
        assert!(w.status == 404 || w.status == 200, "{path}: {}", w.text());
    }
    let r = curl(
        &server,
        id,
        "GET",
        &format!("/files?path={}", enc(&host_rootfs)),
        &[],
    );
    assert_eq!(
        r.status,
        404,
        "the host's data directory is not visible: {}",
        r.text()
    );
    marker.assert_untouched();
}

#[tokio::test]
async fn symlinks_resolve_inside_the_sandbox_root() {
    if !can_run_sandboxes() {
        return;
    }
    let marker = Marker::plant();
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let setup = format!(
        "cd /workspace && ln -s / rootlink && ln -s /proc/1/root p1 && ln -s /proc/self/cwd selfcwd && ln -s {} abs && echo inside > /tmp/inside.txt && echo ok",
        marker.file()
    );
    assert_eq!(sh(&client, &s, &setup).await.stdout, "ok\n");

    // A link to / is the sandbox's root.
    let inside = get(&server, id, "/workspace/rootlink/tmp/inside.txt", &[]);
    assert_eq!(inside.status, 200);
    assert_eq!(inside.body, b"inside\n");
    let up = get(
        &server,
        id,
        "/workspace/rootlink/../../../../tmp/inside.txt",
        &[],
    );
    assert_eq!(
        up.body, b"inside\n",
        "`..` through a link stops at the sandbox root"
    );
    // An absolute link to the host's marker path resolves inside the sandbox: nothing there.
    let abs = get(&server, id, "/workspace/abs", &[]);
    assert_eq!(abs.status, 404, "{}", abs.text());
    never_secret(&abs, "abs link");

    // Magic links of /proc are refused, whatever the operation.
    for path in [
        "/workspace/p1/etc/hostname",
        "/workspace/selfcwd/x",
        "/proc/1/root/etc/hostname",
    ] {
        let r = get(&server, id, path, &[]);
        assert!(
            r.status == 400 || r.status == 403,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        let w = put(&server, id, &format!("{path}.new"), "", b"x");
        assert!(
            w.status == 400 || w.status == 403,
            "{path}: {} {}",
            w.status,
            w.text()
        );
        let l = curl(
            &server,
            id,
            "GET",
            &format!("/files?path={}", enc("/workspace/p1")),
            &[],
        );
        assert!(
            l.status == 400 || l.status == 403,
            "list through p1: {}",
            l.text()
        );
    }
    marker.assert_untouched();
}

#[tokio::test]
async fn proc_sys_and_dev_are_out_of_bounds() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    sh(
        &client,
        &s,
        "ln -s /proc/self/environ /workspace/env; ln -s /dev/zero /workspace/zero",
    )
    .await;
    for path in [
        "/proc/self/environ",
        "/proc/1/status",
        "/workspace/env",
        "/dev/null",
        "/dev/zero",
        "/workspace/zero",
        "/dev/pts/ptmx",
    ] {
        let r = get(&server, id, path, &[]);
        assert!(
            r.status == 403 || r.status == 400,
            "{path}: {} {}",
            r.status,
            r.text()
        );
    }
    for path in ["/dev/null", "/proc/sys/kernel/hostname", "/dev/evil"] {
        let w = put(&server, id, path, "", b"x");
        assert_eq!(w.status, 403, "{path}: {}", w.text());
    }
    let l = curl(&server, id, "GET", "/files?path=/proc", &[]);
    assert_eq!(l.status, 403, "{}", l.text());
    let d = curl(&server, id, "DELETE", "/files?path=/dev/null", &[]);
    assert_eq!(d.status, 403, "{}", d.text());
    let root = curl(&server, id, "DELETE", "/files?path=/&recursive=true", &[]);
    assert_eq!(root.status, 403, "{}", root.text());
}

#[tokio::test]
async fn a_directory_swapped_for_a_symlink_in_a_loop_never_leads_out() {
    if !can_run_sandboxes() {
        return;
    }
    let marker = Marker::plant();
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    // Inside the sandbox, a decoy at the marker's path, so that a path that resolves there is
    // told apart from the host's file.
    let decoy = format!(
        "mkdir -p {} && echo decoy > {}",
        marker.dir.display(),
        marker.file()
    );
    assert_eq!(sh(&client, &s, &decoy).await.exit_code, 0);

    // In the background: /workspace/race flips between a real directory and symlinks to the
    // marker's directory, to / and to /proc/1/root, as fast as it can.
    let racer = format!(
        "cd /workspace; while [ ! -e stop ]; do rm -rf race; mkdir race; echo in > race/secret.txt; rm -rf race; ln -s {} race; rm -f race; ln -s / race; rm -f race; ln -s /proc/1/root race; rm -f race; done",
        marker.dir.display()
    );
    let race_client = client.clone();
    let race_session = s.clone();
    let racer =
        tokio::spawn(async move { sh_with(&race_client, &race_session, &racer, 600.0).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // 150 rounds, or fewer on a loaded machine: the racer must still be running when the
    // rounds end, so the rounds stop after 60 s whatever their count.
    let rounds_end = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..150 {
        if i >= 20 && std::time::Instant::now() > rounds_end {
            break;
        }
        let r = get(&server, id, "/workspace/race/secret.txt", &[]);
        never_secret(&r, "download through the racing link");
        *statuses.entry(r.status).or_insert(0) += 1;
        let w = put(
            &server,
            id,
            &format!("/workspace/race/new-{i}.txt"),
            "",
            b"written",
        );
        *statuses.entry(w.status).or_insert(0) += 1;
        let l = curl(&server, id, "GET", "/files?path=/workspace/race", &[]);
        never_secret(&l, "listing through the racing link");
        let a = curl(
            &server,
            id,
            "GET",
            "/files/archive?path=/workspace/race",
            &[],
        );
        never_secret(&a, "archive through the racing link");
    }
    assert_eq!(put(&server, id, "/workspace/stop", "", b"").status, 200);
    let done = racer.await.unwrap();
    assert_eq!(
        done.exit_code, 0,
        "the racer ran until told to stop: {done:?}"
    );
    assert!(statuses.len() > 1, "the race was on: {statuses:?}");
    marker.assert_untouched();
}
