//! The `hutch` command line as a user types it: `hutch sessions`, `hutch exec`, and what it
//! says when the server is down or refuses the token, against a real server.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::process::Output;

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

    let created = json(&ok(hutch(&["sessions", "create", "--json"])));
    let second = created["sessionId"].as_str().unwrap().to_owned();

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
