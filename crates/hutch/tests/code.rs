//! Stateless code runs, end to end: each language in a fresh process.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use common::{TestServer, can_run_sandboxes, session};
use hutch_api::{CodeRequest, ErrorCode};

fn code(language: &str, code: &str) -> CodeRequest {
    CodeRequest {
        language: language.to_owned(),
        code: code.to_owned(),
        timeout: Some(30.0),
        ..CodeRequest::default()
    }
}

#[tokio::test]
async fn python_javascript_and_bash_run_in_fresh_processes() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;

    let py = client
        .run_code(
            s.session_id,
            &code(
                "python",
                "import sys\nprint(6 * 7)\nprint('oops', file=sys.stderr)\nsys.exit(4)",
            ),
        )
        .await
        .unwrap();
    assert_eq!((py.stdout.as_str(), py.stderr.as_str()), ("42\n", "oops\n"));
    assert_eq!(py.exit_code, 4);
    assert!(!py.timed_out);

    let js = client
        .run_code(
            s.session_id,
            &code(
                "javascript",
                "console.log([1, 2, 3].map(x => x * 2).join(','))",
            ),
        )
        .await
        .unwrap();
    assert_eq!((js.stdout.as_str(), js.exit_code), ("2,4,6\n", 0), "{js:?}");

    let mut req = code("bash", "echo \"$GREETING from $0\"; x=1; echo $((x + 1))");
    req.env = Some([("GREETING".to_owned(), "hello".to_owned())].into());
    let bash = client.run_code(s.session_id, &req).await.unwrap();
    assert_eq!(bash.stdout, "hello from bash\n2\n");

    // Fresh each time: nothing carries over.
    client
        .run_code(s.session_id, &code("python", "x = 1"))
        .await
        .unwrap();
    let fresh = client
        .run_code(s.session_id, &code("python", "print(x)"))
        .await
        .unwrap();
    assert_eq!(fresh.exit_code, 1);
    assert!(fresh.stderr.contains("NameError"), "{fresh:?}");
}

/// A source starting with `-` is source, not an interpreter option; a source longer than one
/// argument may be (128 KiB) is refused with the reason, not run into the kernel's E2BIG.
#[tokio::test]
async fn sources_starting_with_a_dash_run_and_overlong_ones_are_refused() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    for (language, source) in [
        ("python", "-1\nprint('ran')"),
        ("javascript", "-1 + 2; console.log('ran')"),
        ("bash", "-x 2>/dev/null; echo ran"),
    ] {
        let run = client
            .run_code(s.session_id, &code(language, source))
            .await
            .unwrap();
        assert_eq!(run.stdout, "ran\n", "{language}: {run:?}");
    }
    let long = format!("#{}", "x".repeat(128 * 1024));
    let err = client
        .run_code(s.session_id, &code("python", &long))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest), "{err}");
    let err = client
        .run_command(
            s.session_id,
            &hutch_api::CommandRequest {
                command: Some(long),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("one argument"), "{err}");
    // Just under the bound runs.
    let near = format!("#{}", "x".repeat(128 * 1024 - 100));
    let run = client
        .run_code(s.session_id, &code("python", &near))
        .await
        .unwrap();
    assert_eq!(run.exit_code, 0, "{run:?}");
}

#[tokio::test]
async fn a_code_run_ends_at_its_timeout() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let mut req = code(
        "python",
        "import time\nprint('start', flush=True)\ntime.sleep(60)",
    );
    req.timeout = Some(1.0);
    let out = client.run_code(s.session_id, &req).await.unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.exit_code, 137);
    assert_eq!(out.stdout, "start\n");
    assert!(out.duration_ms < 5000, "{out:?}");
}

#[tokio::test]
async fn an_unsupported_language_is_refused_naming_the_field() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session(&client).await;
    let err = client
        .run_code(s.session_id, &code("cobol", "DISPLAY 'HI'"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidRequest));
    let hutch_client::ClientError::Api { body, .. } = err else {
        unreachable!()
    };
    assert_eq!(body.error.details["field"], "language");
}
