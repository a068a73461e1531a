//! The `hutch` command line as a user types it: `hutch sessions`, `hutch exec`, `hutch run`,
//! `hutch cp`, `hutch ps`/`hutch logs`, `hutch contexts`, `hutch completions`, and what it
//! says when the server is down or refuses the token, against a real server.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, ok};

/// Runs `hutch ARGS…` with `HUTCH_URL` and `HUTCH_TOKEN` set as a user would set them.
fn hutch(url: &str, token: &str, args: &[&str]) -> Output {
    common::hutch_cli(url, token, args)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn sessions_are_created_listed_shown_and_removed_from_the_command_line() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    // The URL as the Python SDK's README spells it, with `/v1`: the same server.
    let url = format!("{}/v1", server.url);
    let hutch = |args: &[&str]| hutch(&url, &token, args);

    let first = ok(hutch(&[
        "sessions",
        "create",
        "-q",
        "--ttl",
        "10m",
        "--memory-mb",
        "256",
        "--cpus",
        "0.5",
        "--metadata",
        "owner=ci",
        "--metadata",
        "job=docs",
    ]));
    let first = first.trim();
    assert!(
        uuid::Uuid::parse_str(first).is_ok(),
        "create -q prints only the id: {first:?}"
    );

    let shown = json(&ok(hutch(&["sessions", "get", first, "--json"])));
    assert_eq!(shown["sessionId"], first);
    assert_eq!(shown["status"], "RUNNING");
    assert_eq!(shown["resources"]["memoryMb"], 256);
    assert_eq!(shown["resources"]["cpus"], 0.5);
    assert_eq!(shown["metadata"]["owner"], "ci");
    assert_eq!(shown["metadata"]["job"], "docs");
    let ttl = (time::OffsetDateTime::parse(
        shown["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
        - time::OffsetDateTime::now_utc())
    .whole_seconds();
    assert!((500..=600).contains(&ttl), "--ttl 10m: {ttl} s left");

    let created = json(&ok(hutch(&[
        "sessions",
        "create",
        "--auto-pause",
        "2m",
        "--keep-awake",
        "--json",
    ])));
    let second = created["sessionId"].as_str().unwrap().to_owned();
    assert_eq!(created["autoPause"]["idleSeconds"], 120);
    assert_eq!(created["autoPause"]["keepAwake"], true);

    // Pause and resume: the session's state follows, in a table or as JSON.
    assert_eq!(
        ok(hutch(&["sessions", "pause", &second])),
        format!("{second}\n")
    );
    let paused = json(&ok(hutch(&["sessions", "get", &second, "--json"])));
    assert_eq!(paused["status"], "PAUSED");
    let resumed = json(&ok(hutch(&["sessions", "resume", &second, "--json"])));
    assert_eq!(resumed["status"], "RUNNING");

    let table = ok(hutch(&["sessions", "ls"]));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "a header and a row per session:\n{table}");
    assert!(lines[0].starts_with("SESSION") && lines[0].contains("STATUS"));
    assert!(
        lines[1].starts_with(first)
            && lines[1].contains("RUNNING")
            && lines[1].contains("256 MiB")
            && lines[1].contains("job=docs,owner=ci"),
        "{table}"
    );
    assert!(lines[2].starts_with(&second), "oldest first:\n{table}");
    let listed = json(&ok(hutch(&["sessions", "ls", "--json"])));
    assert_eq!(listed["total"], 2);
    let table = ok(hutch(&["sessions", "get", &second]));
    assert!(
        table.lines().nth(1).unwrap().starts_with(&second),
        "{table}"
    );

    let missing = "0190a0b0-0000-7000-8000-000000000000";
    let removed = hutch(&["sessions", "rm", first, missing, &second]);
    assert_eq!(removed.status.code(), Some(1), "one of three was not there");
    assert_eq!(
        String::from_utf8_lossy(&removed.stdout),
        format!("{first}\n{second}\n"),
        "the others are removed anyway"
    );
    let stderr = String::from_utf8_lossy(&removed.stderr);
    assert!(
        stderr.contains(missing) && stderr.contains("session_not_found"),
        "{stderr}"
    );
    for (action, verb) in [("pause", "pausing"), ("resume", "resuming")] {
        let refused = hutch(&["sessions", action, missing]);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{action} of a missing session"
        );
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.starts_with(&format!("hutch: {verb} {missing}: ")) && stderr.contains("404"),
            "the server's answer, naming the session: {stderr}"
        );
    }
    let flags = [
        "sessions",
        "ls",
        "-q",
        "--url",
        &server.url,
        "--token",
        &token,
    ];
    assert_eq!(
        ok(hutch(&flags)),
        "",
        "--url and --token after the subcommand"
    );
}

#[test]
fn sessions_create_takes_a_network_policy_within_the_servers_ceiling() {
    if !can_run_sandboxes() {
        return;
    }
    // Out of the box a server allows sessions no network.
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);

    let created = json(&ok(hutch(&[
        "sessions",
        "create",
        "--json",
        "--network",
        "none",
    ])));
    assert_eq!(created["network"]["egress"], "none", "{created}");

    let refused = hutch(&[
        "sessions",
        "create",
        "--network",
        "allow",
        "--allow",
        "pypi.org",
        "--allow",
        "*.pythonhosted.org",
        "--deny",
        "evil.pythonhosted.org",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("forbidden") && stderr.contains("at most \"none\""),
        "the server's 403, as it says it: {stderr}"
    );

    let unknown = hutch(&["sessions", "create", "--network", "some"]);
    assert_eq!(unknown.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(stderr.contains("not none, allow or all"), "{stderr}");
    let alone = hutch(&["sessions", "create", "--allow", "pypi.org"]);
    assert_eq!(alone.status.code(), Some(2), "--allow needs --network");
    let stderr = String::from_utf8_lossy(&alone.stderr);
    assert!(stderr.contains("--network"), "{stderr}");

    let listed = json(&ok(hutch(&["sessions", "ls", "--json"])));
    assert_eq!(listed["total"], 1, "the refused create left nothing behind");
}

#[test]
fn exec_takes_a_command_with_or_without_a_double_dash_and_one_string_as_a_shell_line() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);
    let session = ok(hutch(&["sessions", "create", "-q"]));
    let s = session.trim();

    let listing = ok(hutch(&["exec", s, "ls", "/"]));
    assert!(
        listing.lines().any(|l| l == "workspace"),
        "a program and its arguments, no `--`: {listing}"
    );
    assert_eq!(ok(hutch(&["exec", s, "--", "ls", "/"])), listing);
    let count = ok(hutch(&["exec", s, "ls / | wc -l"]));
    assert_eq!(
        count.trim(),
        listing.lines().count().to_string(),
        "one argument is a shell command line"
    );
    assert_eq!(ok(hutch(&["exec", s, "--", "ls / | wc -l"])), count);
    let options = ok(hutch(&[
        "exec",
        "--cwd",
        "/tmp",
        s,
        "sh",
        "-c",
        "pwd; echo $#",
        "-x",
    ]));
    assert_eq!(
        options, "/tmp\n0\n",
        "options after the program are the program's"
    );
    let failed = hutch(&["exec", s, "exit 3"]);
    assert_eq!(failed.status.code(), Some(3));

    let help = ok(hutch(&["exec", "--help"]));
    assert!(
        help.contains("'ls / | wc -l'") && help.contains("/bin/sh -c"),
        "--help shows both forms:\n{help}"
    );
    ok(hutch(&["sessions", "rm", s]));
}

#[test]
fn an_unreachable_server_is_one_sentence_naming_the_url() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let session = "0190a0b0-0000-7000-8000-000000000000";
    for args in [
        &["sessions", "ls"][..],
        &["exec", session, "true"],
        &["shell", session],
    ] {
        let out = hutch(&url, "some-token", args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            stderr,
            format!(
                "hutch: cannot reach the hutch server at {url} (Connection refused (os error \
                 111)): is `hutch serve` running there, and is HUTCH_URL (or --url) right?\n"
            ),
            "{args:?}"
        );
    }
}

#[test]
fn a_refused_token_is_one_sentence_naming_hutch_token() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let session = "0190a0b0-0000-7000-8000-000000000000";
    for args in [&["sessions", "ls"][..], &["exec", session, "true"]] {
        let out = hutch(&server.url, "not-a-token", args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(&format!(
                "hutch: the hutch server at {} refused the token (",
                server.url
            )) && stderr.contains("is HUTCH_TOKEN (or --token) a current token")
                && stderr.ends_with("`hutch token --sub TENANT` on the server mints one\n")
                && stderr.lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn run_makes_a_session_streams_the_command_and_deletes_the_session() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);

    let out = hutch(&[
        "run",
        "--network",
        "none",
        "-e",
        "GREETING=hello",
        "--",
        "sh",
        "-c",
        "echo $GREETING out; echo err >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "the command's exit code");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert_eq!(ok(hutch(&["run", "echo one two | wc -w"])).trim(), "2");
    let missing = hutch(&["run", "--", "no-such-program"]);
    assert_eq!(
        missing.status.code(),
        Some(125),
        "a program that cannot run"
    );
    let listed = json(&ok(hutch(&["sessions", "ls", "--json"])));
    assert_eq!(
        listed["total"], 0,
        "every run deleted its session: {listed}"
    );

    // Ctrl-C while the command runs: the session goes too.
    let mut child = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["run", "--", "sleep", "60"])
        .env("HUTCH_URL", &server.url)
        .env("HUTCH_TOKEN", &token)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ok(hutch(&[
        "ps",
        "-q",
        &wait_for_one_session(&hutch, deadline),
    ]))
    .is_empty()
    {
        assert!(Instant::now() < deadline, "sleep never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "interrupted, as a shell tells it");
    let listed = json(&ok(hutch(&["sessions", "ls", "--json"])));
    assert_eq!(listed["total"], 0, "Ctrl-C deleted the session: {listed}");
}

/// Writes `data` and the end of input to process `pid` of session `s`, as an SDK would.
fn write_stdin(server: &TestServer, s: &str, pid: &str, data: &[u8]) {
    let client = server.client("cli");
    let session = uuid::Uuid::parse_str(s).unwrap();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(client.write_process_stdin(session, pid.parse().unwrap(), data.to_vec(), true))
        .unwrap();
}

/// The id of the only session, once there is one.
fn wait_for_one_session(hutch: &impl Fn(&[&str]) -> Output, deadline: Instant) -> String {
    // A session is listed from the moment it is being created; its processes only once it runs.
    loop {
        let listed = json(&ok(hutch(&["sessions", "ls", "--json"])));
        let running = listed["sessions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["status"] == "RUNNING");
        if let Some(id) = running.and_then(|s| s["sessionId"].as_str()) {
            return id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no session came to run: {listed}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn cp_copies_files_and_directories_into_and_out_of_a_session() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);
    let s = ok(hutch(&["sessions", "create", "-q"])).trim().to_owned();
    let local = tempfile::tempdir().unwrap();
    let tree = local.path().join("project");
    std::fs::create_dir_all(tree.join("src/empty")).unwrap();
    std::fs::write(tree.join("README"), "read me\n").unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(tree.join("src/data.bin"), &big).unwrap();
    std::os::unix::fs::symlink("data.bin", tree.join("src/link")).unwrap();
    let path = |p: &Path| p.to_str().unwrap().to_owned();

    // A file into an existing directory keeps its name; to a new path, takes that one.
    ok(hutch(&[
        "cp",
        &path(&tree.join("README")),
        &format!("{s}:/workspace/"),
    ]));
    ok(hutch(&[
        "cp",
        &path(&tree.join("README")),
        &format!("{s}:/tmp/renamed"),
    ]));
    assert_eq!(
        ok(hutch(&["exec", &s, "cat /workspace/README /tmp/renamed"])),
        "read me\nread me\n"
    );
    // A directory travels whole: files, an empty directory, a symlink as a symlink.
    let copied = json(&ok(hutch(&[
        "cp",
        "--json",
        &path(&tree),
        &format!("{s}:/workspace/copy"),
    ])));
    assert_eq!(copied["directory"], true);
    assert_eq!(copied["destination"], format!("{s}:/workspace/copy"));
    let inside = ok(hutch(&[
        "exec",
        &s,
        "cd /workspace/copy && find . | sort && readlink src/link && md5sum src/data.bin",
    ]));
    assert!(
        inside
            .starts_with(".\n./README\n./src\n./src/data.bin\n./src/empty\n./src/link\ndata.bin\n"),
        "{inside}"
    );

    // And back out: into an existing directory under its own name, or to a new name.
    let back = local.path().join("back");
    std::fs::create_dir(&back).unwrap();
    ok(hutch(&[
        "cp",
        &format!("{s}:/workspace/copy"),
        &path(&back),
    ]));
    assert_eq!(std::fs::read(back.join("copy/src/data.bin")).unwrap(), big);
    assert!(back.join("copy/src/empty").is_dir());
    assert_eq!(
        std::fs::read_link(back.join("copy/src/link")).unwrap(),
        Path::new("data.bin")
    );
    let file = json(&ok(hutch(&[
        "cp",
        "--json",
        &format!("{s}:/workspace/copy/src/data.bin"),
        &path(&back.join("data")),
    ])));
    assert_eq!(file["bytes"], big.len());
    assert_eq!(std::fs::read(back.join("data")).unwrap(), big);

    let missing = hutch(&["cp", &format!("{s}:/workspace/nothing"), &path(&back)]);
    assert_eq!(missing.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("file_not_found"),
        "the server's code: {stderr}"
    );
    let neither = hutch(&["cp", "a", "b"]);
    assert_eq!(neither.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&neither.stderr).contains("SESSION:PATH"));
}

#[test]
fn ps_lists_processes_and_logs_reads_and_follows_their_output() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);
    let s = ok(hutch(&["sessions", "create", "-q"])).trim().to_owned();

    let pid = ok(hutch(&[
        "exec",
        "-d",
        &s,
        "echo first; echo oops >&2; read line; echo second; exit 4",
    ]));
    let pid = pid.trim();
    assert!(pid.parse::<i32>().is_ok(), "--detach prints the pid: {pid}");
    assert_eq!(ok(hutch(&["ps", "-q", &s])).trim(), pid, "it runs");
    let table = ok(hutch(&["ps", &s]));
    assert!(table.starts_with("PID"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(pid) && l.contains("running")),
        "{table}"
    );

    // Without --follow, what it wrote so far, and logs returns while it still runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    let so_far = loop {
        let out = hutch(&["logs", &s, pid]);
        if String::from_utf8_lossy(&out.stdout) == "first\n" {
            break out;
        }
        assert!(Instant::now() < deadline, "no output: {out:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(String::from_utf8_lossy(&so_far.stderr), "oops\n");

    // --follow goes on until the exit, and exits with its code.
    let follower = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["logs", "-f", &s, pid])
        .env("HUTCH_URL", &server.url)
        .env("HUTCH_TOKEN", &token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write_stdin(
        &server, &s, pid, b"go
",
    );
    let followed = follower.wait_with_output().unwrap();
    assert_eq!(followed.status.code(), Some(4), "{followed:?}");
    assert_eq!(String::from_utf8_lossy(&followed.stdout), "first\nsecond\n");
    let from = ok(hutch(&["logs", "--from", "2", &s, pid]));
    assert_eq!(from, "second\n", "--from skips the chunks before");

    assert_eq!(ok(hutch(&["ps", "-q", &s])), "", "nothing runs any more");
    let listed = json(&ok(hutch(&["ps", "--json", &s])));
    assert_eq!(listed["items"][0]["exitCode"], 4, "{listed}");
    let unknown = hutch(&["logs", &s, "4242"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("process_not_found"));
}

#[test]
fn contexts_keep_a_directory_across_sessions() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);

    let context = ok(hutch(&["contexts", "create", "-q", "notes"]));
    let context = context.trim();
    let bound = format!("{context}:/workspace/notes");
    let s = ok(hutch(&["sessions", "create", "-q", "--context", &bound]));
    let s = s.trim();
    ok(hutch(&["exec", s, "echo kept > /workspace/notes/a.txt"]));
    let synced = ok(hutch(&["contexts", "sync", s]));
    assert!(
        synced.starts_with("CONTEXT")
            && synced.lines().nth(1).unwrap().contains("upload")
            && synced.lines().nth(1).unwrap().contains("Success"),
        "sync waits for its transfers:\n{synced}"
    );
    let shown = json(&ok(hutch(&["contexts", "get", "--json", context])));
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["name"], "notes");
    let status = json(&ok(hutch(&["contexts", "status", "--json", s])));
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["status"] == "Success")
    );

    // A second session starts with what the first uploaded.
    let t = ok(hutch(&["sessions", "create", "-q", "--context", &bound]));
    assert_eq!(
        ok(hutch(&["exec", t.trim(), "cat /workspace/notes/a.txt"])),
        "kept\n"
    );
    let table = ok(hutch(&["contexts", "ls"]));
    assert!(
        table.lines().nth(1).unwrap().starts_with(context) && table.contains("notes"),
        "{table}"
    );
    ok(hutch(&["sessions", "rm", s, t.trim()]));
    assert_eq!(ok(hutch(&["contexts", "rm", context])).trim(), context);
    let listed = json(&ok(hutch(&["contexts", "ls", "--json"])));
    assert_eq!(listed["total"], 0);
    let bad = hutch(&["sessions", "create", "--context", "nothing"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("CONTEXT_ID:/PATH"));
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_hutch"))
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = ok(out);
        for word in ["sessions", "contexts", "logs", "completions"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    let bash = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hutch.bash");
    std::fs::write(&file, &bash.stdout).unwrap();
    let checked = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p hutch", file.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&checked.stdout).contains("hutch"),
        "bash takes the script: {checked:?}"
    );
}

/// A TCP relay to `target` whose open connections can be cut, as a flaky network would.
struct CuttableRelay {
    url: String,
    open: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl CuttableRelay {
    fn start(target: &str) -> CuttableRelay {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let relay_open = open.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(&target) else {
                    continue;
                };
                let mut ends = relay_open.lock().unwrap();
                ends.push(client.try_clone().unwrap());
                ends.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableRelay { url, open }
    }

    /// Cuts every connection open now; new ones are relayed again.
    fn cut(&self) {
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[test]
fn logs_follow_reattaches_after_a_dropped_connection_without_losing_or_repeating_output() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let token = server.token("cli");
    let hutch = |args: &[&str]| hutch(&server.url, &token, args);
    let s = ok(hutch(&["sessions", "create", "-q"])).trim().to_owned();
    let pid = ok(hutch(&[
        "exec",
        "-d",
        &s,
        "echo before; read line; echo after",
    ]));
    let pid = pid.trim();

    let relay = CuttableRelay::start(&server.url);
    let out = tempfile::NamedTempFile::new().unwrap();
    let follower = Command::new(env!("CARGO_BIN_EXE_hutch"))
        .args(["logs", "-f", &s, pid])
        .env("HUTCH_URL", &relay.url)
        .env("HUTCH_TOKEN", &token)
        .stdout(out.reopen().unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(out.path()).unwrap() != "before\n" {
        assert!(Instant::now() < deadline, "the follower printed nothing");
        std::thread::sleep(Duration::from_millis(50));
    }
    relay.cut();
    write_stdin(
        &server, &s, pid, b"go
",
    );
    let followed = follower.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&followed.stderr);
    assert_eq!(followed.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reattaching from 1"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.path()).unwrap(),
        "before\nafter\n",
        "each chunk once"
    );
}
