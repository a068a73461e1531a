//! The file API: upload, download, list, stat, mkdir, move, delete, multipart and tar, driven
//! through the public HTTP API of a real server.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;
mod files_common;

use common::{TestServer, can_run_sandboxes, session, sh};
use files_common::{curl, get, put};

#[tokio::test]
async fn upload_download_stat_list_move_and_delete() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;

    let up = put(
        &server,
        id,
        "notes/today.txt",
        "&mode=0600",
        b"hello files\n",
    );
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["files"][0]["path"], "/workspace/notes/today.txt");
    assert_eq!(up.json()["files"][0]["size"], 12);

    let seen = sh(
        &client,
        &s,
        "stat -c '%a %u %s' /workspace/notes/today.txt; cat /workspace/notes/today.txt",
    )
    .await;
    assert_eq!(
        seen.stdout, "600 0 12\nhello files\n",
        "the sandbox sees the file, owned by its root, with the mode asked for"
    );

    let down = get(&server, id, "/workspace/notes/today.txt", &[]);
    assert_eq!(down.status, 200);
    assert_eq!(down.body, b"hello files\n");
    assert_eq!(down.header("content-length"), Some("12"));

    let stat = curl(
        &server,
        id,
        "GET",
        "/files/stat?path=/workspace/notes/today.txt",
        &[],
    );
    assert_eq!(stat.status, 200, "{}", stat.text());
    let info = stat.json();
    assert_eq!(info["type"], "file");
    assert_eq!(info["mode"], "0600");
    assert_eq!(info["size"], 12);

    let kept = put(
        &server,
        id,
        "/workspace/notes/today.txt",
        "&overwrite=false",
        b"replaced",
    );
    assert_eq!(
        kept.status,
        409,
        "overwrite=false keeps the file: {}",
        kept.text()
    );
    assert_eq!(
        get(&server, id, "/workspace/notes/today.txt", &[]).body,
        b"hello files\n"
    );

    let mk = curl(
        &server,
        id,
        "POST",
        "/files/mkdir",
        &[
            "--json",
            r#"{"path":"/workspace/a/b/c","parents":true,"mode":"0750"}"#,
        ],
    );
    assert_eq!(mk.status, 201, "{}", mk.text());
    assert_eq!(mk.json()["mode"], "0750");
    let again = curl(
        &server,
        id,
        "POST",
        "/files/mkdir",
        &["--json", r#"{"path":"/workspace/a/b/c"}"#],
    );
    assert_eq!(again.status, 201, "like mkdir -p: {}", again.text());
    let exclusive = curl(
        &server,
        id,
        "POST",
        "/files/mkdir",
        &["--json", r#"{"path":"/workspace/a/b/c","parents":false}"#],
    );
    assert_eq!(exclusive.status, 409, "{}", exclusive.text());
    // `mode` is the last directory's; the parents it made have 0755, as `mkdir -p -m` does.
    let parents = curl(&server, id, "GET", "/files/stat?path=/workspace/a/b", &[]);
    assert_eq!(parents.json()["mode"], "0755", "{}", parents.text());
    // A link to a directory is a directory already there.
    sh(
        &client,
        &s,
        "mkdir /workspace/real && ln -s real /workspace/dirlink",
    )
    .await;
    let linked = curl(
        &server,
        id,
        "POST",
        "/files/mkdir",
        &["--json", r#"{"path":"/workspace/dirlink"}"#],
    );
    assert_eq!(linked.status, 201, "{}", linked.text());

    let list = curl(&server, id, "GET", "/files?path=/workspace&depth=3", &[]);
    assert_eq!(list.status, 200, "{}", list.text());
    let paths: Vec<String> = list.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap().to_owned())
        .collect();
    for want in [
        "/workspace/a",
        "/workspace/a/b",
        "/workspace/a/b/c",
        "/workspace/notes",
        "/workspace/notes/today.txt",
    ] {
        assert!(
            paths.contains(&want.to_owned()),
            "{want} listed in {paths:?}"
        );
    }
    let too_deep = curl(&server, id, "GET", "/files?path=/workspace&depth=1000", &[]);
    assert_eq!(too_deep.status, 400);
    assert_eq!(too_deep.json()["error"]["details"]["field"], "depth");

    let mv = curl(
        &server,
        id,
        "POST",
        "/files/move",
        &[
            "--json",
            r#"{"from":"/workspace/notes/today.txt","to":"/workspace/a/moved.txt"}"#,
        ],
    );
    assert_eq!(mv.status, 200, "{}", mv.text());
    put(&server, id, "/workspace/other.txt", "", b"other");
    let clash = curl(
        &server,
        id,
        "POST",
        "/files/move",
        &[
            "--json",
            r#"{"from":"/workspace/other.txt","to":"/workspace/a/moved.txt"}"#,
        ],
    );
    assert_eq!(
        clash.status,
        409,
        "no overwrite unless asked: {}",
        clash.text()
    );
    let over = curl(
        &server,
        id,
        "POST",
        "/files/move",
        &[
            "--json",
            r#"{"from":"/workspace/other.txt","to":"/workspace/a/moved.txt","overwrite":true}"#,
        ],
    );
    assert_eq!(over.status, 200, "{}", over.text());
    assert_eq!(
        get(&server, id, "/workspace/a/moved.txt", &[]).body,
        b"other"
    );

    let refused = curl(&server, id, "DELETE", "/files?path=/workspace/a", &[]);
    assert_eq!(
        refused.status,
        409,
        "a non-empty directory needs recursive=true: {}",
        refused.text()
    );
    let gone = curl(
        &server,
        id,
        "DELETE",
        "/files?path=/workspace/a&recursive=true",
        &[],
    );
    assert_eq!(gone.status, 204, "{}", gone.text());
    assert_eq!(get(&server, id, "/workspace/a/moved.txt", &[]).status, 404);

    let dir = get(&server, id, "/workspace", &[]);
    assert_eq!(
        dir.status,
        409,
        "a directory has no content: {}",
        dir.text()
    );
}

#[tokio::test]
async fn every_write_creates_missing_parents_unless_parents_is_false() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let dir = tempfile::tempdir().unwrap();
    let tar_file = dir.path().join("one.tar");
    std::fs::write(
        &tar_file,
        raw_tar(&[("f.txt", tar::EntryType::Regular, 0o644, b"tar")]),
    )
    .unwrap();
    let tar_body = format!("@{}", tar_file.display());
    let source = put(&server, id, "/workspace/source.txt", "", b"moved");
    assert_eq!(source.status, 200, "{}", source.text());

    // How each write is told `parents=false`: in its query, or in its JSON body.
    let query = |refuse: bool| if refuse { "&parents=false" } else { "" };
    let field = |refuse: bool| if refuse { r#","parents":false"# } else { "" };
    // Each write, to a place whose parents do not exist yet: (what, how, where it lands).
    type Write<'a> = (
        &'a str,
        Box<dyn Fn(bool) -> files_common::Reply + 'a>,
        &'a str,
    );
    let writes: Vec<Write<'_>> = vec![
        (
            "PUT content",
            Box::new(|refuse| put(&server, id, "/workspace/put/x/f.txt", query(refuse), b"put")),
            "/workspace/put/x/f.txt",
        ),
        (
            "multipart",
            Box::new(|refuse| {
                let path = format!("/files?path=/workspace/multi/x{}", query(refuse));
                let part = "a=@/etc/hostname;filename=f.txt";
                curl(&server, id, "POST", &path, &["-F", part])
            }),
            "/workspace/multi/x/f.txt",
        ),
        (
            "archive PUT",
            Box::new(|refuse| {
                let path = format!("/files/archive?path=/workspace/tar/x{}", query(refuse));
                curl(&server, id, "PUT", &path, &["--data-binary", &tar_body])
            }),
            "/workspace/tar/x/f.txt",
        ),
        (
            "mkdir",
            Box::new(|refuse| {
                let body = format!(r#"{{"path":"/workspace/mk/x/d"{}}}"#, field(refuse));
                curl(&server, id, "POST", "/files/mkdir", &["--json", &body])
            }),
            "/workspace/mk/x/d",
        ),
        (
            "move",
            Box::new(|refuse| {
                let body = format!(
                    r#"{{"from":"/workspace/source.txt","to":"/workspace/mv/x/f.txt"{}}}"#,
                    field(refuse)
                );
                curl(&server, id, "POST", "/files/move", &["--json", &body])
            }),
            "/workspace/mv/x/f.txt",
        ),
    ];
    for (what, write, lands) in &writes {
        let refused = write(true);
        assert_eq!(
            (refused.status, refused.code().as_str()),
            (404, "file_not_found"),
            "{what} with parents=false refuses a missing parent: {}",
            refused.text()
        );
        let written = write(false);
        assert!(
            matches!(written.status, 200 | 201),
            "{what} creates missing parents by default: {}",
            written.text()
        );
        let stat = curl(
            &server,
            id,
            "GET",
            &format!("/files/stat?path={lands}"),
            &[],
        );
        assert_eq!(stat.status, 200, "{what} wrote {lands}: {}", stat.text());
    }
    let modes = sh(&client, &s, "stat -c %a /workspace/put /workspace/mv/x").await;
    assert_eq!(
        modes.stdout, "755\n755\n",
        "created parents are ordinary directories: {modes:?}"
    );
}

#[tokio::test]
async fn bad_paths_are_400s_naming_the_field() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let id = session(&client).await.session_id;

    let nul = curl(&server, id, "GET", "/files/stat?path=a%00b", &[]);
    assert_eq!(nul.status, 400);
    assert_eq!(nul.json()["error"]["details"]["field"], "path");
    let long = format!("/files/stat?path={}", "a/".repeat(3000));
    let long = curl(&server, id, "GET", &long, &[]);
    assert!(long.status == 400 || long.status == 414, "{}", long.status);
    let empty = curl(&server, id, "GET", "/files/stat?path=", &[]);
    assert_eq!(empty.status, 400);
    let mv = curl(
        &server,
        id,
        "POST",
        "/files/move",
        &["--json", r#"{"from":"/workspace/x","to":""}"#],
    );
    assert_eq!(mv.status, 400);
    assert_eq!(mv.json()["error"]["details"]["field"], "to");
    let mode = put(&server, id, "/workspace/m", "&mode=4755", b"x");
    assert_eq!(
        mode.status,
        400,
        "set-uid bits are refused: {}",
        mode.text()
    );
    assert_eq!(mode.json()["error"]["details"]["field"], "mode");
    let nul_command = curl(
        &server,
        id,
        "POST",
        "/commands",
        &["--json", r#"{"command":"echo a\u0000b"}"#],
    );
    assert_eq!(nul_command.status, 400, "{}", nul_command.text());
    assert_eq!(nul_command.json()["error"]["details"]["field"], "command");
}

#[tokio::test]
async fn a_path_that_is_not_utf8_is_refused_never_taken_for_another_file() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    // `a\xffb` (not UTF-8) and `a\u{fffd}b`, what a lossy decoding of the first would name.
    let made = sh(
        &client,
        &s,
        r#"mkdir -p /workspace/nu && cd /workspace/nu && printf A > "$(printf 'a\377b')" && printf B > "$(printf 'a\357\277\275b')""#,
    )
    .await;
    assert_eq!(made.exit_code, 0, "{made:?}");
    for (method, rest) in [
        ("GET", "/files/content?path=/workspace/nu/a%FFb"),
        ("DELETE", "/files?path=/workspace/nu/a%FFb"),
        ("GET", "/files/stat?path=/workspace/nu/a%ffb"),
    ] {
        let reply = curl(&server, id, method, rest, &[]);
        assert_eq!(reply.status, 400, "{method} {rest}: {}", reply.text());
        assert_eq!(reply.json()["error"]["details"]["field"], "query");
    }
    let left = sh(&client, &s, "ls /workspace/nu | od -An -c | tr -s ' '").await;
    assert_eq!(
        left.stdout.matches('a').count(),
        2,
        "both files are still there: {left:?}"
    );

    // A tar of the directory keeps both names as they are, bytes and all.
    let tar = curl(&server, id, "GET", "/files/archive?path=/workspace/nu", &[]);
    assert_eq!(tar.status, 200);
    let mut names: Vec<Vec<u8>> = tar::Archive::new(tar.body.as_slice())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path_bytes().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec![b"a\xef\xbf\xbdb".to_vec(), b"a\xffb".to_vec()]);

    // A path ending in `/` names a directory, not a file to write.
    let slash = put(&server, id, "/workspace/dir/", "", b"x");
    assert_eq!(slash.status, 400, "{}", slash.text());
    assert_eq!(slash.json()["error"]["details"]["field"], "path");

    // A socket is no file to read: 403, as FIFOs and device nodes.
    let bound = sh(
        &client,
        &s,
        r#"python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind("/workspace/sock")'"#,
    )
    .await;
    assert_eq!(bound.exit_code, 0, "{bound:?}");
    let sock = curl(
        &server,
        id,
        "GET",
        "/files/content?path=/workspace/sock",
        &[],
    );
    assert_eq!(sock.status, 403, "{}", sock.text());
}

#[tokio::test]
async fn range_requests_and_gzip() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let id = session(&client).await.session_id;
    let data: Vec<u8> = (0..100_000u32)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    assert_eq!(
        put(&server, id, "/workspace/big.txt", "", &data).status,
        200
    );

    let part = get(
        &server,
        id,
        "/workspace/big.txt",
        &["-H", "Range: bytes=10-19"],
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, &data[10..20]);
    assert_eq!(
        part.header("content-range"),
        Some(format!("bytes 10-19/{}", data.len()).as_str())
    );
    let tail = get(
        &server,
        id,
        "/workspace/big.txt",
        &["-H", "Range: bytes=-7"],
    );
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, &data[data.len() - 7..]);
    let beyond = get(
        &server,
        id,
        "/workspace/big.txt",
        &["-H", &format!("Range: bytes={}-", data.len())],
    );
    assert_eq!(beyond.status, 416);
    assert_eq!(beyond.code(), "range_not_satisfiable");
    assert_eq!(
        beyond.header("content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );

    let zipped = get(
        &server,
        id,
        "/workspace/big.txt",
        &["-H", "Accept-Encoding: gzip"],
    );
    assert_eq!(zipped.status, 200);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    assert!(
        zipped.body.len() < data.len() / 3,
        "compressed: {} bytes",
        zipped.body.len()
    );
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut plain,
    )
    .unwrap();
    assert_eq!(plain, data);
}

#[tokio::test]
async fn multipart_uploads_several_files_and_names_the_one_that_failed() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;

    let ok = curl(
        &server,
        id,
        "POST",
        "/files?path=/workspace/in",
        &[
            "-F",
            "a=@/etc/hostname;filename=one.txt",
            "-F",
            "path=sub/two.txt",
            "-F",
            "b=@/etc/hostname;filename=ignored.txt",
        ],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    let files = ok.json()["files"].as_array().unwrap().clone();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["path"], "/workspace/in/one.txt");
    assert_eq!(
        files[1]["path"], "/workspace/in/sub/two.txt",
        "a path field names the next file"
    );
    let host_name = std::fs::read("/etc/hostname").unwrap();
    assert_eq!(
        get(&server, id, "/workspace/in/sub/two.txt", &[]).body,
        host_name
    );

    // The second file would replace a directory: it fails, the others are written.
    sh(&client, &s, "mkdir -p /workspace/in/taken").await;
    let mixed = curl(
        &server,
        id,
        "POST",
        "/files?path=/workspace/in",
        &[
            "-F",
            "a=@/etc/hostname;filename=first.txt",
            "-F",
            "b=@/etc/hostname;filename=taken",
            "-F",
            "c=@/etc/hostname;filename=third.txt",
        ],
    );
    assert_eq!(mixed.status, 409, "{}", mixed.text());
    let err = &mixed.json()["error"];
    assert_eq!(
        err["details"]["path"], "/workspace/in/taken",
        "the error names the file: {err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("/workspace/in/taken")
    );
    let results = err["details"]["files"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0]["error"].is_null() && results[2]["error"].is_null());
    assert_eq!(results[1]["error"]["code"], "conflict");
    assert_eq!(get(&server, id, "/workspace/in/third.txt", &[]).status, 200);
    let leftovers = sh(
        &client,
        &s,
        "ls -a /workspace/in | grep -c hutch-upload || true",
    )
    .await;
    assert_eq!(
        leftovers.stdout.trim(),
        "0",
        "no temporary file is left behind"
    );
}

/// Builds a tar archive in memory from (path, type, mode, data or link target) entries,
/// writing names as given (even ones a careful builder refuses).
fn raw_tar(entries: &[(&str, tar::EntryType, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, mode, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(*kind);
        header.set_mode(*mode);
        header.set_mtime(1_700_000_000);
        let content: &[u8] = if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            header.as_old_mut().linkname[..data.len()].copy_from_slice(data);
            &[]
        } else {
            data
        };
        header.set_size(content.len() as u64);
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An archive entry is written beside its place and renamed over it once whole: an archive
/// cut short inside an entry leaves the file that was there, and extractions of one archive
/// into one directory at once all succeed.
#[tokio::test]
async fn an_archive_cut_short_leaves_the_file_it_would_replace() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let made = sh(&client, &s, "mkdir -p /workspace/arc && head -c 300000 /dev/zero | tr '\\0' k > /workspace/arc/keep && echo ok").await;
    assert_eq!(made.stdout, "ok\n", "{made:?}");
    let new = vec![b'n'; 300_000];
    let whole = raw_tar(&[("keep", tar::EntryType::Regular, 0o644, &new)]);
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &whole[..150_000]).unwrap();
    let up = curl(
        &server,
        id,
        "PUT",
        "/files/archive?path=/workspace/arc",
        &["--data-binary", &format!("@{}", cut.display())],
    );
    assert_eq!(up.status, 400, "{}", up.text());
    let kept = sh(
        &client,
        &s,
        "tr -d k < /workspace/arc/keep | wc -c; wc -c < /workspace/arc/keep; ls -A /workspace/arc",
    )
    .await;
    assert_eq!(
        kept.stdout, "0\n300000\nkeep\n",
        "the old file is whole and no temporary file is left: {kept:?}"
    );

    let file = dir.path().join("whole.tar");
    std::fs::write(&file, &whole).unwrap();
    let uploads: Vec<_> = (0..4)
        .map(|_| {
            let url = format!(
                "{}/v1/sessions/{id}/files/archive?path=/workspace/arc",
                server.url
            );
            let auth = format!("authorization: Bearer {}", server.token("alice"));
            let body = format!("@{}", file.display());
            std::thread::spawn(move || {
                std::process::Command::new("curl")
                    .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
                    .args(["-H", &auth, "--data-binary", &body, &url])
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for upload in uploads {
        let out = upload.join().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    }
    let replaced = sh(
        &client,
        &s,
        "tr -d n < /workspace/arc/keep | wc -c; ls -A /workspace/arc",
    )
    .await;
    assert_eq!(replaced.stdout, "0\nkeep\n", "{replaced:?}");
}

#[tokio::test]
async fn tar_round_trip_keeps_modes_empty_dirs_and_symlinks() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let made = sh(&client, &s, "cd /workspace && mkdir -p proj/empty proj/src && echo run > proj/run.sh && chmod 0751 proj/run.sh && echo code > proj/src/main.py && chmod 0700 proj/src && ln -s src/main.py proj/link && echo ok").await;
    assert_eq!(made.stdout, "ok\n", "{made:?}");

    let archive = curl(
        &server,
        id,
        "GET",
        "/files/archive?path=/workspace/proj",
        &[],
    );
    assert_eq!(archive.status, 200, "{}", archive.text());
    assert_eq!(archive.header("content-type"), Some("application/x-tar"));
    let mut names = Vec::new();
    for entry in tar::Archive::new(&archive.body[..]).entries().unwrap() {
        let entry = entry.unwrap();
        names.push(entry.path().unwrap().display().to_string());
    }
    for want in ["empty/", "link", "run.sh", "src/", "src/main.py"] {
        assert!(
            names
                .iter()
                .any(|n| n.trim_end_matches('/') == want.trim_end_matches('/')),
            "{want} in {names:?}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proj.tar");
    std::fs::write(&file, &archive.body).unwrap();
    let up = curl(
        &server,
        id,
        "PUT",
        "/files/archive?path=/workspace/copy",
        &["--data-binary", &format!("@{}", file.display())],
    );
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["entries"], 5);
    let check = sh(
        &client,
        &s,
        "cd /workspace/copy && stat -c '%n %a %F' run.sh src empty && readlink link && cat link",
    )
    .await;
    assert_eq!(
        check.stdout,
        "run.sh 751 regular file\nsrc 700 directory\nempty 755 directory\nsrc/main.py\ncode\n",
        "{check:?}"
    );
}

#[tokio::test]
async fn malicious_tar_entries_are_refused_by_name() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "../evil.txt",
            raw_tar(&[("../evil.txt", tar::EntryType::Regular, 0o644, b"x")]),
        ),
        (
            "/tmp/evil.txt",
            raw_tar(&[("/tmp/evil.txt", tar::EntryType::Regular, 0o644, b"x")]),
        ),
        (
            "a/../../evil.txt",
            raw_tar(&[("a/../../evil.txt", tar::EntryType::Regular, 0o644, b"x")]),
        ),
        (
            "out",
            raw_tar(&[("out", tar::EntryType::Symlink, 0o777, b"/etc")]),
        ),
        (
            "up",
            raw_tar(&[("up", tar::EntryType::Symlink, 0o777, b"../../etc")]),
        ),
        (
            "hard",
            raw_tar(&[("hard", tar::EntryType::Link, 0o644, b"../../etc/passwd")]),
        ),
        (
            "null",
            raw_tar(&[("null", tar::EntryType::Char, 0o666, b"")]),
        ),
        (
            "pipe",
            raw_tar(&[("pipe", tar::EntryType::Fifo, 0o666, b"")]),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in cases {
        let file = dir.path().join("evil.tar");
        std::fs::write(&file, &bytes).unwrap();
        let up = curl(
            &server,
            id,
            "PUT",
            "/files/archive?path=/workspace/x/y",
            &["--data-binary", &format!("@{}", file.display())],
        );
        assert_eq!(up.status, 400, "{name}: {}", up.text());
        assert_eq!(
            up.json()["error"]["details"]["path"],
            name,
            "the error names the entry: {}",
            up.text()
        );
    }
    let left = sh(&client, &s, "ls -A /workspace/x/y /workspace/x /workspace /tmp | grep -c -e evil -e out -e up -e hard -e null -e pipe || true").await;
    assert_eq!(
        left.stdout.trim(),
        "0",
        "nothing of a refused entry was written: {left:?}"
    );

    // An entry never runs through a symlink, not even one an earlier entry made: a link
    // `inner/link -> ..` would put a later `inner/link/up -> ..` in /workspace/z itself,
    // pointing above it, past the check of where links point.
    let sneaky = raw_tar(&[
        ("inner", tar::EntryType::Directory, 0o755, b""),
        ("inner/link", tar::EntryType::Symlink, 0o777, b".."),
        ("inner/link/up", tar::EntryType::Symlink, 0o777, b".."),
        (
            "inner/link/escaped.txt",
            tar::EntryType::Regular,
            0o644,
            b"x",
        ),
    ]);
    let file = dir.path().join("sneaky.tar");
    std::fs::write(&file, &sneaky).unwrap();
    let up = curl(
        &server,
        id,
        "PUT",
        "/files/archive?path=/workspace/z",
        &["--data-binary", &format!("@{}", file.display())],
    );
    assert_eq!(up.status, 400, "{}", up.text());
    assert_eq!(up.json()["error"]["details"]["path"], "inner/link/up");
    assert!(
        up.text().contains("symbolic link"),
        "the error says why: {}",
        up.text()
    );
    let found = sh(&client, &s, "ls -A /workspace/z /workspace/z/inner").await;
    assert_eq!(
        found.stdout, "/workspace/z:\ninner\n\n/workspace/z/inner:\nlink\n",
        "only the entries before the refused one were written: {found:?}"
    );
}

/// `VmRSS` or `VmHWM` of a process, in KiB.
fn memory_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn two_gib_up_and_down_keep_the_server_memory_flat() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let id = s.session_id;
    let pid = server.pid().unwrap();
    let size: u64 = 2 * 1024 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("two-gib");
    // Sparse: takes no disk on the host side.
    std::fs::File::create(&source)
        .unwrap()
        .set_len(size)
        .unwrap();

    // Peak RSS is reset, then read after each transfer.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = memory_kib(pid, "VmRSS:");
    let up = curl(
        &server,
        id,
        "PUT",
        "/files/content?path=/workspace/two-gib",
        &["-T", &source.display().to_string()],
    );
    assert_eq!(up.status, 200, "{}", up.text());
    assert_eq!(up.json()["files"][0]["size"], size);
    let peak = memory_kib(pid, "VmHWM:");
    eprintln!(
        "2 GiB upload: server peak RSS grew {} KiB",
        peak.saturating_sub(before)
    );
    assert!(
        peak.saturating_sub(before) <= 64 * 1024,
        "upload grew the server by {} KiB",
        peak - before
    );

    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = memory_kib(pid, "VmRSS:");
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_download}",
            "-H",
        ])
        .arg(format!("Authorization: Bearer {}", server.token("alice")))
        .arg(format!(
            "{}/v1/sessions/{id}/files/content?path=/workspace/two-gib",
            server.url
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("200 {size}"));
    let peak = memory_kib(pid, "VmHWM:");
    eprintln!(
        "2 GiB download: server peak RSS grew {} KiB",
        peak.saturating_sub(before)
    );
    assert!(
        peak.saturating_sub(before) <= 64 * 1024,
        "download grew the server by {} KiB",
        peak - before
    );
    let gone = curl(&server, id, "DELETE", "/files?path=/workspace/two-gib", &[]);
    assert_eq!(gone.status, 204);
}
