//! Interpreter contexts, end to end: a real server, a real session, executions over WebSocket
//! and NDJSON the way a client drives them.
//!
//! Each test reads as an example of the API: create contexts, run cells, read the frames
//! (`stdout`, `stderr`, `result`, `artifact`, `error`, and the final `control`), and check the
//! close code of the WebSocket.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use hutch_client::HutchClient;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// One session of a running server, and the calls a client makes.
struct Interp {
    _server: TestServer,
    client: HutchClient,
    url: String,
    token: String,
    session: uuid::Uuid,
}

/// The frames of one execution and how the WebSocket closed.
#[derive(Debug)]
struct Run {
    frames: Vec<Value>,
    close: Option<u16>,
}

impl Run {
    fn of_type(&self, t: &str) -> Vec<&Value> {
        self.frames.iter().filter(|f| f["type"] == t).collect()
    }

    fn stdout(&self) -> String {
        self.of_type("stdout")
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect()
    }

    fn stderr(&self) -> String {
        self.of_type("stderr")
            .iter()
            .map(|f| f["text"].as_str().unwrap())
            .collect()
    }

    fn error(&self) -> Option<&Value> {
        self.of_type("error").into_iter().next()
    }

    fn error_name(&self) -> Option<&str> {
        self.error().map(|e| e["name"].as_str().unwrap())
    }

    fn control(&self) -> &Value {
        let last = self.frames.last().expect("at least one frame");
        assert_eq!(last["type"], "control", "last frame is control: {self:?}");
        last
    }

    fn outcome(&self) -> &str {
        self.control()["text"].as_str().unwrap()
    }

    fn result_text(&self) -> Option<String> {
        self.of_type("result")
            .last()
            .map(|r| r["data"]["text/plain"].as_str().unwrap().to_owned())
    }
}

impl Interp {
    async fn start() -> Option<Interp> {
        if !common::can_run_sandboxes() {
            return None;
        }
        let server = TestServer::start();
        let client = server.client("tenant-a");
        let session = common::session(&client).await;
        Some(Interp {
            url: server.url.clone(),
            token: server.token("tenant-a"),
            _server: server,
            client,
            session: session.session_id,
        })
    }

    fn path(&self, rest: &str) -> String {
        format!("/v1/sessions/{}{rest}", self.session)
    }

    async fn call(&self, method: http::Method, rest: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = self
            .client
            .request(
                method,
                &self.path(rest),
                body.map(|b| serde_json::to_vec(&b).unwrap().into()),
            )
            .await
            .unwrap();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status.as_u16(), value)
    }

    async fn create(&self, body: Value) -> Value {
        let (status, ctx) = self
            .call(http::Method::POST, "/interpreter/contexts", Some(body))
            .await;
        assert_eq!(status, 200, "{ctx}");
        ctx
    }

    /// Opens the execute WebSocket and sends the request.
    async fn open(
        &self,
        request: Value,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let ws_url = format!(
            "{}{}",
            self.url.replacen("http", "ws", 1),
            self.path("/interpreter/execute")
        );
        let mut req = ws_url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws.send(Message::text(request.to_string())).await.unwrap();
        ws
    }

    /// Runs one execution over WebSocket and collects every frame until the close.
    async fn ws(&self, request: Value) -> Run {
        let mut ws = self.open(request).await;
        let mut frames = Vec::new();
        let mut close = None;
        let deadline = Duration::from_secs(120);
        while let Ok(Some(msg)) = tokio::time::timeout(deadline, ws.next()).await {
            match msg {
                Ok(Message::Text(text)) => frames.push(serde_json::from_str(&text).unwrap()),
                Ok(Message::Close(frame)) => {
                    close = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        Run { frames, close }
    }

    /// Runs `code` in the context `cid` (None: default).
    async fn run(&self, cid: Option<&str>, code: &str) -> Run {
        let mut req = json!({ "code": code });
        if let Some(cid) = cid {
            req["contextId"] = json!(cid);
        }
        self.ws(req).await
    }

    /// Runs one execution over NDJSON.
    async fn ndjson(&self, request: Value) -> (u16, Vec<Value>) {
        let (status, bytes) = self
            .client
            .request(
                http::Method::POST,
                &self.path("/interpreter/execute"),
                Some(serde_json::to_vec(&request).unwrap().into()),
            )
            .await
            .unwrap();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        if status.as_u16() != 200 {
            return (status.as_u16(), vec![serde_json::from_str(&text).unwrap()]);
        }
        let frames = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (200, frames)
    }
}

macro_rules! interp {
    () => {
        match Interp::start().await {
            Some(i) => i,
            None => return,
        }
    };
}

// ---- contexts ----------------------------------------------------------------------------

#[tokio::test]
async fn default_context_is_used_when_no_context_is_named() {
    let it = interp!();
    let run = it.run(None, "x = 42\nprint(x)").await;
    assert_eq!(run.stdout(), "42\n");
    assert_eq!(run.outcome(), "completed");
    assert_eq!(run.close, Some(1000));
    // The default context keeps state, and can be named explicitly.
    let run = it.run(Some("default"), "print(x + 1)").await;
    assert_eq!(run.stdout(), "43\n");
    let (status, ctx) = it
        .call(http::Method::GET, "/interpreter/contexts/default", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(ctx["id"], "default");
    assert_eq!(ctx["active"], true);
}

#[tokio::test]
async fn python_workers_start_from_the_servers_compiled_code_or_from_their_source() {
    if common::skip_on_kubernetes(
        "the server compiles the worker for the linux runtime's default image; a pod's start from the source",
    ) {
        return;
    }
    let it = interp!();
    // A session of the default image: its worker runs the code the server compiled for the
    // image's python3 (`python3 -S -c <start>`), with the environment `python3 -c` gives.
    let probe = "import os, sys\n\
        (open('/proc/self/cmdline').read().split('\\0')[1:3], sys.argv, sys.path[0], \
        '__file__' in globals(), sorted(k for k in os.environ if 'SAFEPATH' in k or 'SAFE_PATH' in k))";
    let run = it.run(None, probe).await;
    assert_eq!(
        run.result_text().as_deref(),
        Some("(['-S', '-c'], ['-c'], '', False, [])"),
        "{run:?}"
    );
    // A context whose PATH finds a python3 that refuses it (as another interpreter's start
    // does, with exit code 76): the context still starts, from the source, and so does every
    // later one, without trying the compiled code again.
    let wrapper = "#!/bin/sh\necho \"$2\" >> /tmp/python3-starts\n\
        [ \"$2\" = -c ] && exec /usr/bin/python3 -c 'import posix; posix._exit(76)'\n\
        exec /usr/bin/python3 \"$@\"\n";
    let install = format!(
        "import os\nos.makedirs('/tmp/bin')\nopen('/tmp/bin/python3', 'w').write({wrapper:?})\n\
         os.chmod('/tmp/bin/python3', 0o755)"
    );
    let run = it.run(None, &install).await;
    assert!(run.error().is_none(), "{run:?}");
    for _ in 0..2 {
        let env = json!({"PATH": "/tmp/bin:/usr/bin:/bin"});
        let id = it.create(json!({ "env": env })).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let run = it.run(Some(&id), probe).await;
        assert_eq!(
            run.result_text().as_deref(),
            Some("(['-S', '/proc/self/fd/5'], ['-c'], '', False, [])"),
            "{run:?}"
        );
    }
    let run = it
        .run(None, "print(open('/tmp/python3-starts').read(), end='')")
        .await;
    assert_eq!(run.stdout(), "-c\n/proc/self/fd/5\n/proc/self/fd/5\n");
}

#[tokio::test]
async fn contexts_are_created_listed_and_deleted() {
    let it = interp!();
    let ctx = it.create(json!({})).await;
    let id = ctx["id"].as_str().unwrap().to_owned();
    assert_eq!(ctx["language"], "python");
    assert_eq!(ctx["active"], true);
    assert_eq!(ctx["cwd"], common::workspace());
    assert!(ctx["createdAt"].as_str().unwrap().ends_with('Z'));
    uuid::Uuid::parse_str(&id).unwrap();

    // The seed's alias creates too; listing shows created contexts only, not `default`.
    let (status, second) = it
        .call(
            http::Method::POST,
            "/process/interpreter/context",
            Some(json!({"language": "python", "kernel": "python"})),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["kernel"], "python");
    for path in ["/interpreter/contexts", "/process/interpreter/contexts"] {
        let (_, list) = it.call(http::Method::GET, path, None).await;
        let ids: Vec<&str> = list["contexts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec![id.as_str(), second["id"].as_str().unwrap()]);
    }

    let (status, body) = it
        .call(
            http::Method::DELETE,
            &format!("/interpreter/contexts/{id}"),
            None,
        )
        .await;
    assert_eq!((status, body), (200, json!({"message": "Context deleted"})));
    let (status, body) = it
        .call(
            http::Method::DELETE,
            &format!(
                "/process/interpreter/context/{}",
                second["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = it
        .call(
            http::Method::GET,
            &format!("/interpreter/contexts/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "context_not_found");
    let (_, list) = it
        .call(http::Method::GET, "/interpreter/contexts", None)
        .await;
    assert_eq!(list, json!({"contexts": []}));
}

#[tokio::test]
async fn a_context_runs_in_its_cwd_which_is_created() {
    let it = interp!();
    let ctx = it.create(json!({"cwd": "/workspace/project"})).await;
    assert_eq!(ctx["cwd"], "/workspace/project");
    let run = it
        .run(ctx["id"].as_str(), "import os\nprint(os.getcwd())")
        .await;
    assert_eq!(run.stdout(), "/workspace/project\n");
}

#[tokio::test]
async fn contexts_do_not_share_state() {
    let it = interp!();
    let one = it.create(json!({"cwd": "/workspace/env1"})).await;
    let two = it.create(json!({"cwd": "/workspace/env2"})).await;
    let (one, two) = (one["id"].as_str(), two["id"].as_str());
    it.run(one, "config = {'version': '1.0'}").await;
    it.run(two, "config = {'version': '2.0'}").await;
    assert_eq!(
        it.run(one, "print(config['version'])").await.stdout(),
        "1.0\n"
    );
    assert_eq!(
        it.run(two, "print(config['version'])").await.stdout(),
        "2.0\n"
    );
    let run = it.run(None, "print(config)").await;
    assert_eq!(run.error_name(), Some("NameError"));
}

#[tokio::test]
async fn exit_leaves_the_context_inactive_and_the_next_execution_restarts_it() {
    let it = interp!();
    let ctx = it.create(json!({})).await;
    let id = ctx["id"].as_str();
    assert_eq!(
        it.run(id, "x = 100\nprint(f'x = {x}')").await.stdout(),
        "x = 100\n"
    );
    let run = it.run(id, "exit()").await;
    assert_eq!(run.outcome(), "exited", "{run:?}");
    assert_eq!(run.control()["exitCode"], 0);
    assert_eq!(run.close, Some(1000));
    let (_, info) = it
        .call(
            http::Method::GET,
            &format!("/interpreter/contexts/{}", id.unwrap()),
            None,
        )
        .await;
    assert_eq!(info["active"], false);
    let run = it.run(id, "print(f'x = {x}')").await;
    assert_eq!(run.error_name(), Some("NameError"), "{run:?}");
    assert_eq!(run.outcome(), "completed");
}

#[tokio::test]
async fn three_contexts_are_managed_side_by_side() {
    let it = interp!();
    let mut ids = Vec::new();
    for i in 0..3 {
        let ctx = it
            .create(json!({"cwd": format!("/workspace/project{i}")}))
            .await;
        ids.push(ctx["id"].as_str().unwrap().to_owned());
    }
    let (_, list) = it
        .call(http::Method::GET, "/interpreter/contexts", None)
        .await;
    assert_eq!(list["contexts"].as_array().unwrap().len(), 3);
    for id in &ids {
        let run = it.run(Some(id), &format!("print('Hello from {id}')")).await;
        assert_eq!(run.stdout(), format!("Hello from {id}\n"));
    }
    for id in &ids {
        let (status, _) = it
            .call(
                http::Method::DELETE,
                &format!("/interpreter/contexts/{id}"),
                None,
            )
            .await;
        assert_eq!(status, 200);
    }
}

#[tokio::test]
async fn an_unknown_context_answers_with_a_context_error_frame() {
    let it = interp!();
    let run = it.run(Some("nonexistent-id"), "print('test')").await;
    assert_eq!(run.frames.len(), 1, "{run:?}");
    assert_eq!(
        run.frames[0],
        json!({"type": "error", "name": "ContextError", "value": "context not found: nonexistent-id", "traceback": ""})
    );
    assert_eq!(run.close, Some(1000));
    let (status, frames) = it
        .ndjson(json!({"code": "1", "contextId": "nonexistent-id"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0]["name"], "ContextError");
}

#[tokio::test]
async fn an_unsupported_language_is_refused() {
    let it = interp!();
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts",
            Some(json!({"language": "cobol"})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_request");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Unsupported language"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["field"], "language");
}

#[tokio::test]
async fn the_default_context_cannot_be_deleted() {
    let it = interp!();
    for path in [
        "/interpreter/contexts/default",
        "/process/interpreter/context/default",
    ] {
        let (status, body) = it.call(http::Method::DELETE, path, None).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["message"], "Cannot delete default context");
    }
    let (status, body) = it
        .call(http::Method::DELETE, "/interpreter/contexts/nope", None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "context_not_found");
}

#[tokio::test]
async fn a_timeout_interrupts_the_cell_closes_with_4008_and_keeps_state() {
    let it = interp!();
    it.run(None, "kept = 'still here'").await;
    let started = Instant::now();
    let run = it
        .ws(json!({"code": "import time\ntime.sleep(100)", "timeout": 1}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.outcome(), "timeout", "{run:?}");
    assert_eq!(run.close, Some(4008));
    let err = run.error().unwrap();
    assert_eq!(err["name"], "TimeoutError");
    assert_eq!(err["value"], "execution timed out after 1 s");
    assert_eq!(it.run(None, "print(kept)").await.stdout(), "still here\n");
}

#[tokio::test]
async fn a_cell_that_ignores_the_interrupt_is_killed_after_the_grace_period() {
    let it = interp!();
    let ctx = it.create(json!({"kernel": "python"})).await;
    let id = ctx["id"].as_str();
    it.run(id, "x = 1").await;
    let code = "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)";
    let started = Instant::now();
    let run = it
        .ws(json!({"code": code, "contextId": id, "timeout": 0.5}))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10), "{run:?}");
    assert_eq!(run.outcome(), "timeout");
    assert_eq!(run.close, Some(4008));
    // The worker was killed: the context restarts with fresh state.
    let run = it.run(id, "print(x)").await;
    assert_eq!(run.error_name(), Some("NameError"), "{run:?}");
}

// ---- interactive sessions ----------------------------------------------------------------

#[tokio::test]
async fn state_functions_and_classes_persist_across_cells() {
    let it = interp!();
    it.run(None, "value = 21 * 2").await;
    assert_eq!(
        it.run(None, "print(f'Result: {value}')").await.stdout(),
        "Result: 42\n"
    );
    it.run(
        None,
        "def fibonacci(n):\n    return n if n <= 1 else fibonacci(n-1) + fibonacci(n-2)\n\nclass DataProcessor:\n    def __init__(self):\n        self.data = []\n    def add(self, v):\n        self.data.append(v)\n\nprocessor = DataProcessor()",
    )
    .await;
    it.run(None, "for i in range(1, 11):\n    processor.add(i * 2)")
        .await;
    let run = it
        .run(
            None,
            "print(f'Fibonacci(10): {fibonacci(10)}')\nprint(sum(processor.data))",
        )
        .await;
    assert_eq!(run.stdout(), "Fibonacci(10): 55\n110\n");
}

#[tokio::test]
async fn an_error_keeps_the_state() {
    let it = interp!();
    it.run(None, "x = 10").await;
    let run = it.run(None, "y = x / 0").await;
    assert_eq!(run.error_name(), Some("ZeroDivisionError"));
    assert_eq!(run.outcome(), "completed");
    assert_eq!(
        it.run(None, "print(f'x is still: {x}')").await.stdout(),
        "x is still: 10\n"
    );
}

#[tokio::test]
async fn ipython_magics_work() {
    let it = interp!();
    it.run(None, "alpha = 1\nbeta = 2").await;
    // The default context is `auto`: plain Python until the first magic, which switches it to
    // the IPython kernel in place, with the variables defined before.
    let who = it.run(None, "%who").await;
    assert!(
        who.stdout().contains("alpha") && who.stdout().contains("beta"),
        "{who:?}"
    );
    let pwd = it.run(None, "%pwd").await;
    assert_eq!(
        pwd.result_text().as_deref(),
        Some(format!("'{}'", common::workspace()).as_str()),
        "{pwd:?}"
    );
    it.run(None, "open('/workspace/marker.txt', 'w').close()")
        .await;
    let ls = it.run(None, "!ls -la /workspace").await;
    assert!(ls.stdout().contains("marker.txt"), "{ls:?}");
    let timeit = it.run(None, "%%timeit -n 10 -r 2\nsum(range(1000))").await;
    assert!(timeit.stdout().contains("per loop"), "{timeit:?}");
}

#[tokio::test]
async fn the_default_context_is_plain_python_until_a_cell_needs_ipython() {
    let it = interp!();
    let kernel = |ctx: &Value| ctx["kernel"].as_str().unwrap().to_owned();
    let get = || it.call(http::Method::GET, "/interpreter/contexts/default", None);

    // Ordinary Python, `%` and `!=` included, runs on the small plain kernel: the idle default
    // context costs a plain interpreter's memory, not IPython's.
    let run = it
        .run(
            None,
            "import sys\n\
             a, b = 7, 3\n\
             print(a % b, a != b)\n\
             rss_kib = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])\n\
             'IPython' in sys.modules, rss_kib < 24 * 1024",
        )
        .await;
    assert_eq!(run.stdout(), "1 True\n", "{run:?}");
    assert_eq!(
        run.result_text().as_deref(),
        Some("(False, True)"),
        "{run:?}"
    );
    assert_eq!(kernel(&get().await.1), "python");

    // The first magic switches to IPython; state survives and the API shows the new kernel.
    let who = it.run(None, "%who").await;
    assert!(who.stdout().contains("rss_kib"), "{who:?}");
    assert_eq!(kernel(&get().await.1), "ipython");
    let ls = it.run(None, "!echo $a").await;
    assert_eq!(ls.stdout(), "7\n", "{ls:?}");

    // `exit()` ends the IPython kernel; the next worker starts plain again.
    let bye = it.run(None, "exit()").await;
    assert_eq!(bye.outcome(), "exited", "{bye:?}");
    assert_eq!(
        it.run(None, "1 + 1").await.result_text().as_deref(),
        Some("2")
    );
    assert_eq!(kernel(&get().await.1), "python");

    // `kernel` chooses: `ipython` starts IPython at once, `python` never switches, and
    // `auto` is what a context gets without one.
    assert_eq!(
        kernel(&it.create(json!({"kernel": "ipython"})).await),
        "ipython"
    );
    assert_eq!(
        kernel(&it.create(json!({"kernel": "auto"})).await),
        "python"
    );
    assert_eq!(kernel(&it.create(json!({})).await), "python");
    let plain = it.create(json!({"kernel": "python"})).await;
    let run = it.run(Some(plain["id"].as_str().unwrap()), "%who").await;
    assert_eq!(run.error_name(), Some("SyntaxError"), "{run:?}");
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts",
            Some(json!({"kernel": "jupyter"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"]["field"], "kernel");
}

#[tokio::test]
async fn a_dataframe_result_has_html_and_a_figure_becomes_an_artifact() {
    let it = interp!();
    let run = it
        .run(
            None,
            "import pandas as pd\ndf = pd.DataFrame({'a': [1, 2], 'b': [3, 4]})\ndf",
        )
        .await;
    let result = run.of_type("result");
    assert_eq!(result.len(), 1, "{run:?}");
    assert!(
        result[0]["data"]["text/html"]
            .as_str()
            .unwrap()
            .contains("<table")
    );
    assert!(
        result[0]["data"]["text/plain"]
            .as_str()
            .unwrap()
            .contains('a')
    );

    let run = it
        .run(
            None,
            "import matplotlib.pyplot as plt\nimport numpy as np\nx = np.linspace(0, 10, 100)\nplt.plot(x, np.sin(x))\nplt.title('Sine Wave')\nprint('Plot created')",
        )
        .await;
    assert!(run.stdout().contains("Plot created"));
    let artifacts = run.of_type("artifact");
    assert_eq!(artifacts.len(), 1, "{run:?}");
    assert_eq!(artifacts[0]["mimeType"], "image/png");
    assert!(artifacts[0]["name"].as_str().unwrap().ends_with(".png"));
    assert!(artifacts[0]["data"].as_str().unwrap().starts_with("iVBOR"));
}

#[tokio::test]
async fn libraries_present_are_skipped_and_missing_ones_fail_clearly() {
    let it = interp!();
    let run = it
        .ws(json!({"code": "import numpy, pandas\nprint('ok')", "libraries": ["numpy", "pandas", "matplotlib"]}))
        .await;
    assert_eq!(run.stdout(), "ok\n", "{run:?}");
    assert_eq!(run.error(), None);

    let run = it
        .ws(json!({"code": "print('should not run')", "libraries": ["surely-not-a-real-package-hutch"]}))
        .await;
    assert_eq!(run.error_name(), Some("LibraryInstallError"), "{run:?}");
    let why = run.error().unwrap()["value"].as_str().unwrap();
    assert!(why.contains("surely-not-a-real-package-hutch"), "{why}");
    if common::skip_on_kubernetes(
        "a pod's egress is its NetworkPolicy's, which the stand-in cluster does not enforce",
    ) {
        return;
    }
    assert!(
        why.contains("the session has no network access, so pip cannot reach a package index"),
        "the real cause is named: {why}"
    );
    assert!(!why.contains("externally-managed"), "{why}");
    assert_eq!(run.stdout(), "");
    assert_eq!(run.outcome(), "completed");
}

/// Builds a pure-python wheel of package `hutchdemo` (VALUE = 42) in the session.
const BUILD_WHEEL: &str = "import os, zipfile\n\
os.makedirs('/workspace/wheels', exist_ok=True)\n\
with zipfile.ZipFile('/workspace/wheels/hutchdemo-0.1-py3-none-any.whl', 'w') as z:\n\
\x20   z.writestr('hutchdemo/__init__.py', 'VALUE = 42\\n')\n\
\x20   z.writestr('hutchdemo-0.1.dist-info/METADATA', 'Metadata-Version: 2.1\\nName: hutchdemo\\nVersion: 0.1\\n')\n\
\x20   z.writestr('hutchdemo-0.1.dist-info/WHEEL', 'Wheel-Version: 1.0\\nGenerator: test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n')\n\
\x20   z.writestr('hutchdemo-0.1.dist-info/RECORD', '')\n";

#[tokio::test]
async fn libraries_install_into_the_sessions_own_directory_seen_by_every_python() {
    let it = interp!();
    let built = it.run(None, BUILD_WHEEL).await;
    assert_eq!(built.error(), None, "{built:?}");

    // No network is needed for a package inside the session; the image's Python refuses
    // `pip install` (PEP 668), so it goes to the session's own directory.
    let run = it
        .ws(json!({
            "code": "import hutchdemo\nhutchdemo.VALUE",
            "libraries": ["/workspace/wheels/hutchdemo-0.1-py3-none-any.whl"],
        }))
        .await;
    assert_eq!(run.error(), None, "{run:?}");
    assert_eq!(run.result_text().as_deref(), Some("42"), "{run:?}");

    let ctx = it.create(json!({"language": "python"})).await;
    let run = it
        .run(
            ctx["id"].as_str(),
            "import hutchdemo\nprint(hutchdemo.__file__)",
        )
        .await;
    assert_eq!(
        run.stdout(),
        "/workspace/.hutch/site-packages/hutchdemo/__init__.py\n",
        "another context imports it: {run:?}"
    );
    let (status, code) = it
        .call(
            http::Method::POST,
            "/code",
            Some(json!({"language": "python", "code": "import hutchdemo; print(hutchdemo.VALUE)"})),
        )
        .await;
    assert_eq!(
        (status, code["stdout"].as_str()),
        (200, Some("42\n")),
        "{code}"
    );
    let (_, image) = it
        .call(
            http::Method::POST,
            "/commands",
            Some(json!({"command": "env -u PYTHONPATH python3 -c 'import hutchdemo'"})),
        )
        .await;
    assert_ne!(
        image["exitCode"], 0,
        "the image's site-packages are untouched: {image}"
    );
}

// ---- what other interpreters get wrong ----------------------------------------------------

#[tokio::test]
async fn output_of_subprocesses_is_captured() {
    let it = interp!();
    let run = it
        .run(
            None,
            "import os, subprocess\nos.system('echo from-os-system')\nsubprocess.run(['sh', '-c', 'echo from-subprocess >&2'])",
        )
        .await;
    assert_eq!(run.stdout(), "from-os-system\n", "{run:?}");
    assert_eq!(run.stderr(), "from-subprocess\n");
}

#[tokio::test]
async fn sys_exit_reports_its_code() {
    let it = interp!();
    let run = it.run(None, "import sys\nsys.exit(3)").await;
    assert_eq!(run.outcome(), "exited", "{run:?}");
    assert_eq!(run.control()["exitCode"], 3);
    // And the context comes back.
    assert_eq!(it.run(None, "print('back')").await.stdout(), "back\n");
}

#[tokio::test]
async fn a_users_keyboard_interrupt_is_an_error_not_a_timeout() {
    let it = interp!();
    let run = it.run(None, "raise KeyboardInterrupt").await;
    assert_eq!(run.error_name(), Some("KeyboardInterrupt"), "{run:?}");
    assert_eq!(run.outcome(), "completed");
    assert_eq!(run.close, Some(1000));
}

#[tokio::test]
async fn a_large_write_does_not_stall() {
    let it = interp!();
    let started = Instant::now();
    let run = it
        .run(
            None,
            "import sys\nsys.stdout.write('x' * (2 * 1024 * 1024))\nNone",
        )
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(run.outcome(), "completed");
    let out = run.stdout();
    assert_eq!(out.len(), 2 * 1024 * 1024);
    let seqs: Vec<u64> = run
        .of_type("stdout")
        .iter()
        .map(|f| f["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert!(
        run.of_type("stdout")
            .iter()
            .all(|f| f["text"].as_str().unwrap().len() <= 64 * 1024)
    );
}

#[tokio::test]
async fn output_past_the_cap_is_dropped_and_marked() {
    let it = interp!();
    let run = it
        .run(
            None,
            "import os\nfor _ in range(10):\n    os.write(1, b'y' * (1024 * 1024))",
        )
        .await;
    assert_eq!(run.outcome(), "completed");
    assert_eq!(run.stdout().len(), 8 * 1024 * 1024);
    assert!(
        run.stderr()
            .contains("[hutch: output truncated after 8388608 bytes]"),
        "{}",
        run.stderr()
    );
}

#[tokio::test]
async fn workers_show_a_short_command_line() {
    let it = interp!();
    let bash = it.create(json!({"language": "bash"})).await;
    assert_eq!(
        it.run(bash["id"].as_str(), "echo up").await.stdout(),
        "up\n"
    );
    let run = it
        .run(
            None,
            "import subprocess\nprint(subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout)",
        )
        .await;
    let ps = run.stdout();
    let lines: Vec<&str> = ps.lines().map(str::trim).collect();
    // The default image's python worker runs the code the server compiled ahead, started by
    // one line of Python (python_start.py); a pod's, from the source.
    let python = if common::kube_wanted() {
        "python3 -S /proc/self/fd/5"
    } else {
        "python3 -S -c import posix as _p"
    };
    assert!(lines.iter().any(|l| l.starts_with(python)), "{ps}");
    assert!(
        lines.contains(&"bash --noprofile --norc /proc/self/fd/5"),
        "{ps}"
    );
    assert!(
        lines.iter().all(|l| l.len() < 200),
        "no worker source on a command line: {ps}"
    );
}

#[tokio::test]
async fn a_worker_crash_ends_the_execution_at_once() {
    let it = interp!();
    let started = Instant::now();
    let run = it.run(None, "import os\nos.kill(os.getpid(), 11)").await;
    // Not left to a timeout (the 30 s the client waits); seconds on a loaded machine.
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(run.outcome(), "crashed", "{run:?}");
    assert_eq!(run.control()["signal"], 11);
    assert_eq!(run.close, Some(1011));
    let err = run.error().unwrap();
    assert_eq!(err["name"], "WorkerCrashed");
    assert_eq!(
        err["value"],
        "the python worker was killed by signal 11 (SIGSEGV)"
    );
    assert_eq!(it.run(None, "print(1)").await.stdout(), "1\n");
}

#[tokio::test]
async fn a_worker_killed_from_outside_mid_cell_ends_the_execution_and_the_context_goes_on() {
    if common::skip_on_kubernetes("it finds the worker through the sandbox's agent on the host") {
        return;
    }
    let it = interp!();
    assert_eq!(it.run(None, "state = 1").await.outcome(), "completed");
    // A cell that would run for a minute, killed from the host (as an operator or the host's
    // OOM killer would) once it has started.
    let mut ws = it
        .open(json!({"code": "import time\nprint('running', flush=True)\ntime.sleep(60)"}))
        .await;
    let first = tokio::time::timeout(Duration::from_secs(30), ws.next())
        .await
        .expect("the cell starts")
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("running"), "{first:?}");
    let client = it.client.clone();
    let session = client.get_session(it.session).await.unwrap();
    let view = common::host_view(&client, &session).await;
    let workers: Vec<i32> = common::pids_in_uts(&view.uts)
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with("python3\0-S\0"))
        })
        .collect();
    assert_eq!(workers.len(), 1, "one python worker: {workers:?}");
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-KILL", &workers[0].to_string()])
        .status()
        .unwrap();
    assert!(status.success());

    let mut frames = Vec::new();
    let mut close = None;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        match msg.unwrap() {
            Message::Text(text) => frames.push(serde_json::from_str::<Value>(&text).unwrap()),
            Message::Close(frame) => {
                close = frame.map(|f| u16::from(f.code));
                break;
            }
            _ => {}
        }
    }
    let run = Run { frames, close };
    assert!(killed.elapsed() < Duration::from_secs(15), "ended at once");
    assert_eq!(run.outcome(), "crashed", "{run:?}");
    assert_eq!(run.control()["signal"], 9);
    assert_eq!(run.close, Some(1011));
    let err = run.error().unwrap();
    assert_eq!(err["name"], "WorkerCrashed");
    assert_eq!(
        err["value"],
        "the python worker was killed by signal 9 (SIGKILL)"
    );
    // The context is usable again, with a fresh worker (the killed one's state is gone).
    let (_, info) = it
        .call(http::Method::GET, "/interpreter/contexts/default", None)
        .await;
    assert_eq!(info["active"], false, "{info}");
    let again = it.run(None, "print('again')\nstate").await;
    assert_eq!(again.stdout(), "again\n", "{again:?}");
    assert_eq!(again.error_name(), Some("NameError"));
}

#[tokio::test]
async fn a_worker_that_dies_while_idle_is_restarted_on_next_use() {
    let it = interp!();
    let run = it
        .run(
            None,
            "import threading, os\nstate = 1\nthreading.Timer(0.3, lambda: os._exit(0)).start()",
        )
        .await;
    assert_eq!(run.outcome(), "completed", "{run:?}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, info) = it
        .call(http::Method::GET, "/interpreter/contexts/default", None)
        .await;
    assert_eq!(info["active"], false);
    let run = it.run(None, "print('fresh')\nstate").await;
    assert_eq!(run.stdout(), "fresh\n", "{run:?}");
    assert_eq!(run.error_name(), Some("NameError"));
}

#[tokio::test]
async fn the_last_expression_is_a_result() {
    let it = interp!();
    let plain = it.create(json!({"kernel": "python"})).await;
    for cid in [None, plain["id"].as_str()] {
        let run = it.run(cid, "x = 20\nx + 22").await;
        assert_eq!(run.result_text().as_deref(), Some("42"), "{run:?}");
        assert!(run.control()["executionCount"].as_u64().is_some());
    }
}

#[tokio::test]
async fn rich_output_is_returned_as_mime_data() {
    let it = interp!();
    let plain = it.create(json!({"kernel": "python"})).await;
    let code = "class Card:\n    def _repr_html_(self):\n        return '<b>card</b>'\n    def __repr__(self):\n        return 'Card()'\nCard()";
    for cid in [None, plain["id"].as_str()] {
        let run = it.run(cid, code).await;
        let result = run.of_type("result");
        assert_eq!(result.len(), 1, "{run:?}");
        assert_eq!(result[0]["data"]["text/html"], "<b>card</b>");
        assert_eq!(result[0]["data"]["text/plain"], "Card()");
    }
}

#[tokio::test]
async fn the_interrupt_verb_stops_a_cell_and_keeps_state() {
    let it = interp!();
    it.run(None, "kept = 7").await;
    let mut ws = it
        .open(json!({"code": "import time\ntime.sleep(60)"}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts/default/interrupt",
            None,
        )
        .await;
    assert_eq!((status, body), (200, json!({"interrupted": true})));
    let mut frames: Vec<Value> = Vec::new();
    while let Some(Ok(Message::Text(t))) = ws.next().await {
        frames.push(serde_json::from_str(&t).unwrap());
    }
    let last = frames.last().unwrap();
    assert_eq!(last["text"], "interrupted", "{frames:?}");
    assert!(frames.iter().any(|f| f["name"] == "KeyboardInterrupt"));
    assert_eq!(it.run(None, "print(kept)").await.stdout(), "7\n");
    // Idle: nothing to interrupt.
    let (_, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts/default/interrupt",
            None,
        )
        .await;
    assert_eq!(body, json!({"interrupted": false}));
}

#[tokio::test]
async fn a_traceback_shows_the_source_line() {
    let it = interp!();
    let plain = it.create(json!({"kernel": "python"})).await;
    for cid in [None, plain["id"].as_str()] {
        let run = it
            .run(cid, "def f():\n    return undefined_name_here\nf()")
            .await;
        let tb = run.error().unwrap()["traceback"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(tb.contains("return undefined_name_here"), "{tb}");
        assert!(!tb.contains("python_worker"), "{tb}");
    }
}

#[tokio::test]
async fn restart_gives_a_fresh_worker() {
    let it = interp!();
    it.run(None, "x = 1").await;
    let (status, ctx) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts/default/restart",
            None,
        )
        .await;
    assert_eq!(status, 200, "{ctx}");
    assert_eq!(ctx["active"], true);
    assert_eq!(it.run(None, "x").await.error_name(), Some("NameError"));
}

#[tokio::test]
async fn restart_during_an_execution_ends_it() {
    let it = interp!();
    let ctx = it.create(json!({"kernel": "python"})).await;
    let id = ctx["id"].as_str().unwrap();
    let mut ws = it
        .open(json!({"code": "import time\ntime.sleep(60)", "contextId": id}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = it
        .call(
            http::Method::POST,
            &format!("/interpreter/contexts/{id}/restart"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let mut frames: Vec<Value> = Vec::new();
    while let Some(Ok(Message::Text(t))) = ws.next().await {
        frames.push(serde_json::from_str(&t).unwrap());
    }
    assert_eq!(frames.last().unwrap()["text"], "crashed", "{frames:?}");
    assert!(frames.iter().any(|f| f["name"] == "ContextError"));
    assert_eq!(it.run(Some(id), "print('ok')").await.stdout(), "ok\n");
}

// ---- other languages ------------------------------------------------------------------------

#[tokio::test]
async fn javascript_and_bash_contexts_keep_state() {
    let it = interp!();
    let js = it.create(json!({"language": "javascript"})).await;
    assert_eq!(js["kernel"], "node");
    let js = js["id"].as_str();
    it.run(js, "let total = 40;").await;
    let run = it.run(js, "total += 2; console.log(total); total").await;
    assert_eq!(run.stdout(), "42\n", "{run:?}");
    assert_eq!(run.result_text().as_deref(), Some("42"));

    let sh = it.create(json!({"language": "bash"})).await;
    let sh = sh["id"].as_str();
    it.run(sh, "GREETING=hello; cd /tmp").await;
    let run = it.run(sh, "echo \"$GREETING from $(pwd)\"").await;
    assert_eq!(run.stdout(), "hello from /tmp\n", "{run:?}");
}

// ---- the API around executions --------------------------------------------------------------

#[tokio::test]
async fn ndjson_streams_the_same_frames() {
    let it = interp!();
    let (status, frames) = it.ndjson(json!({"code": "print('hi')\n1 + 1"})).await;
    assert_eq!(status, 200);
    // Output comes as the pipe delivers it: one frame or several, numbered from 0.
    assert_eq!(frames[0]["type"], "stdout");
    assert_eq!(frames[0]["seq"], 0);
    let stdout: String = frames
        .iter()
        .filter(|f| f["type"] == "stdout")
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "hi\n");
    let result = &frames[frames.len() - 2];
    assert_eq!(result["type"], "result");
    assert_eq!(result["data"]["text/plain"], "2");
    assert_eq!(frames.last().unwrap()["type"], "control");
    assert_eq!(frames.last().unwrap()["text"], "completed");
    // A bad request is refused before anything runs.
    let (status, body) = it.ndjson(json!({"code": "1", "timeout": -1})).await;
    assert_eq!(status, 400);
    assert_eq!(body[0]["error"]["details"]["field"], "timeout");
}

/// Sends `request` to `POST …/interpreter/execute` on a connection of its own and returns
/// the connection, after the answer's head, with that head (lower-cased).
async fn raw_ndjson(
    it: &Interp,
    request: &str,
) -> (tokio::io::BufReader<tokio::net::TcpStream>, String) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let authority = it.url.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(authority).await.unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        it.path("/interpreter/execute"),
        it.token,
        request.len()
    );
    tcp.write_all(format!("{head}{request}").as_bytes())
        .await
        .unwrap();
    let mut reader = tokio::io::BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        head.push_str(&line.to_ascii_lowercase());
        if line == "\r\n" || line.is_empty() {
            return (reader, head);
        }
    }
}

#[tokio::test]
async fn ndjson_answers_a_quick_cell_whole_and_streams_a_long_one() {
    use tokio::io::AsyncReadExt;
    let it = interp!();
    // A cell that ends at once (in a context already running): the whole answer, of known
    // length, in one piece. "At once" is within a few milliseconds, which a loaded machine
    // may miss now and then: one of ten such answers must come whole.
    let (status, _) = it.ndjson(json!({"code": "1"})).await;
    assert_eq!(status, 200);
    let mut heads = Vec::new();
    for _ in 0..10 {
        let (mut reader, head) = raw_ndjson(&it, r#"{"code": "1 + 1"}"#).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let mut body = String::new();
        reader.read_to_string(&mut body).await.unwrap();
        let frames: Vec<Value> = body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(frames[0]["data"]["text/plain"], "2", "{body}");
        assert_eq!(frames.last().unwrap()["text"], "completed", "{body}");
        let whole = head.contains("content-length:") && !head.contains("chunked");
        heads.push(head);
        if whole {
            break;
        }
    }
    assert!(
        heads.iter().any(|h| h.contains("content-length:")),
        "{heads:#?}"
    );

    // A cell that waits for the test: its first output arrives while it still runs.
    let code = "import os, time\nprint('first', flush=True)\n\
                while not os.path.exists('/tmp/go'):\n    time.sleep(0.01)\nprint('last')";
    let request = json!({ "code": code }).to_string();
    let (mut reader, head) = raw_ndjson(&it, &request).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let first = tokio::time::timeout(Duration::from_secs(60), async {
        while !String::from_utf8_lossy(&seen).contains("first") {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n > 0, "the answer ended before the cell went on: {seen:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(first.is_ok(), "no output while the cell runs: {seen:?}");
    let touched = it
        .client
        .run_command(
            it.session,
            &hutch_api::CommandRequest {
                argv: Some(vec!["touch".into(), "/tmp/go".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(touched.exit_code, 0);
    reader.read_to_end(&mut seen).await.unwrap();
    let rest = String::from_utf8_lossy(&seen);
    assert!(
        rest.contains("last") && rest.contains("completed"),
        "{rest}"
    );
}

#[tokio::test]
async fn history_keeps_the_last_executions() {
    let it = interp!();
    let ctx = it
        .create(json!({"historySize": 2, "kernel": "python"}))
        .await;
    let id = ctx["id"].as_str().unwrap();
    for code in ["print('one')", "print('two')", "1/0"] {
        it.run(Some(id), code).await;
    }
    let (status, history) = it
        .call(
            http::Method::GET,
            &format!("/interpreter/contexts/{id}/history"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let entries = history["executions"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0]["code"], "print('two')");
    assert_eq!(entries[0]["stdout"], "two\n");
    assert_eq!(entries[1]["error"]["name"], "ZeroDivisionError");
    assert_eq!(entries[1]["status"], "completed");
    let (_, history) = it
        .call(
            http::Method::GET,
            &format!("/interpreter/contexts/{id}/history?limit=1"),
            None,
        )
        .await;
    assert_eq!(history["executions"].as_array().unwrap().len(), 1);
}

/// The agent keeps histories in its own memory, so what they hold is bounded: 1 MiB of
/// results an entry (the rest counted in `resultsOmitted`), 8 MiB for the session's contexts
/// together, the oldest entries going first.
#[tokio::test]
async fn history_keeps_a_bounded_weight_of_results() {
    let it = interp!();
    let ctx = it
        .create(json!({"historySize": 1000, "kernel": "python"}))
        .await;
    let id = ctx["id"].as_str().unwrap();
    // Three results of 400 KB: two are kept, the third counted.
    let run = it
        .run(Some(id), "for i in range(3): display('x' * 400_000)")
        .await;
    assert_eq!(
        run.of_type("result").len(),
        3,
        "the client gets every result"
    );
    let history = |limit: u32| {
        let path = format!("/interpreter/contexts/{id}/history?limit={limit}");
        let it = &it;
        async move {
            let (status, body) = it.call(http::Method::GET, &path, None).await;
            assert_eq!(status, 200, "{body}");
            body["executions"].as_array().unwrap().clone()
        }
    };
    let entry = &history(1).await[0];
    assert_eq!(
        entry["results"].as_array().unwrap().len(),
        2,
        "{:.300}",
        entry
    );
    assert_eq!(entry["resultsOmitted"], 1);

    // Twelve entries of about 0.9 MiB each: the session keeps at most 8 MiB of them, the
    // newest.
    for n in 0..12 {
        it.run(Some(id), &format!("display('{n}'.ljust(900_000, 'x'))"))
            .await;
    }
    let kept = history(1000).await;
    assert!(
        (2..=9).contains(&kept.len()),
        "{} entries kept of 13",
        kept.len()
    );
    assert_eq!(
        kept.last().unwrap()["code"],
        "display('11'.ljust(900_000, 'x'))"
    );
    let weight: usize = kept.iter().map(|e| e.to_string().len()).sum();
    assert!(weight < 9 * 1024 * 1024, "{weight} bytes of history");
}

/// A cell may write to its worker's control descriptor; a message naming another execution
/// does not end this one, and the next execution gets its own output.
#[tokio::test]
async fn a_forged_done_message_does_not_put_a_context_out_of_step() {
    let it = interp!();
    let ctx = it.create(json!({"kernel": "python"})).await;
    let id = ctx["id"].as_str().unwrap();
    let forged = "import os\nos.write(4, b'{\"type\":\"done\",\"id\":999999,\"kernel\":\"node\"}\\n')\nprint('A')";
    let run = it.run(Some(id), forged).await;
    assert_eq!(run.stdout(), "A\n", "{run:?}");
    let run = it.run(Some(id), "print('B')").await;
    assert_eq!(run.stdout(), "B\n", "{run:?}");
    let (_, info) = it
        .call(
            http::Method::GET,
            &format!("/interpreter/contexts/{id}"),
            None,
        )
        .await;
    assert_eq!(info["kernel"], "python");
}

#[tokio::test]
async fn envs_apply_to_one_execution_and_are_restored() {
    let it = interp!();
    let run = it
        .ws(json!({"code": "import os\nprint(os.environ['GREETING'])\nos.system('echo $GREETING')", "envs": {"GREETING": "hi"}}))
        .await;
    assert_eq!(run.stdout(), "hi\nhi\n", "{run:?}");
    let run = it
        .run(None, "import os\nprint(os.environ.get('GREETING'))")
        .await;
    assert_eq!(run.stdout(), "None\n");
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_kill_the_context() {
    let it = interp!();
    let ws = it
        .open(json!({"code": "import time\ntime.sleep(1)\ndone_after_disconnect = True"}))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ws);
    // The next execution waits its turn, then sees what the first one did.
    let run = it.run(None, "print(done_after_disconnect)").await;
    assert_eq!(run.stdout(), "True\n", "{run:?}");
    let (_, history) = it
        .call(
            http::Method::GET,
            "/interpreter/contexts/default/history",
            None,
        )
        .await;
    let codes: Vec<&str> = history["executions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes
            .iter()
            .any(|c| c.contains("done_after_disconnect = True"))
    );
}

#[tokio::test]
async fn executions_of_one_context_queue_and_contexts_run_in_parallel() {
    let it = interp!();
    let a = it.create(json!({"kernel": "python"})).await;
    let b = it.create(json!({"kernel": "python"})).await;
    // Each cell tells when it slept (the two workers share the sandbox's clock): the two
    // sleeps overlap, however long the machine takes to start them.
    let sleep = "import time\nstart = time.time()\ntime.sleep(2)\nprint(start, time.time())";
    let (r1, r2) = tokio::join!(
        it.run(a["id"].as_str(), sleep),
        it.run(b["id"].as_str(), sleep)
    );
    assert_eq!((r1.outcome(), r2.outcome()), ("completed", "completed"));
    let slept = |r: &Run| -> (f64, f64) {
        let out = r.stdout();
        let mut times = out.split_whitespace().map(|t| t.parse::<f64>().unwrap());
        (times.next().unwrap(), times.next().unwrap())
    };
    let ((start1, end1), (start2, end2)) = (slept(&r1), slept(&r2));
    assert!(
        start1.max(start2) < end1.min(end2),
        "parallel: {start1}..{end1} and {start2}..{end2}"
    );
    let started = Instant::now();
    let (r1, r2) = tokio::join!(
        it.run(a["id"].as_str(), "import time\ntime.sleep(0.5)\nn = 1"),
        async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            it.run(a["id"].as_str(), "n").await
        }
    );
    assert_eq!(r1.outcome(), "completed");
    assert_eq!(r2.result_text().as_deref(), Some("1"), "FIFO: {r2:?}");
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[tokio::test]
async fn a_memory_cap_stops_a_runaway_allocation() {
    let it = interp!();
    let ctx = it
        .create(json!({"kernel": "python", "memoryMb": 128}))
        .await;
    assert_eq!(ctx["memoryMb"], 128);
    let id = ctx["id"].as_str();
    let run = it.run(id, "x = bytearray(512 * 1024 * 1024)").await;
    assert!(
        run.error_name() == Some("MemoryError") || run.outcome() == "crashed",
        "{run:?}"
    );
    assert_eq!(it.run(id, "print('alive')").await.stdout(), "alive\n");
}

#[tokio::test]
async fn an_ipython_context_too_small_for_ipython_runs_plain_python_and_says_why() {
    let it = interp!();
    // IPython needs about 40 MiB; the start of one within 24 fails (MemoryError under a data
    // limit, the OOM killer under a memory cgroup).
    let ctx = it
        .create(json!({"kernel": "ipython", "memoryMb": 24}))
        .await;
    assert_eq!(ctx["kernel"], "python", "{ctx}");
    let id = ctx["id"].as_str();
    // A fresh plain worker: the failed start's memory is not held against the context.
    let first = it.run(id, "x = [0] * 100000\nprint(len(x))").await;
    assert_eq!(first.outcome(), "completed", "{first:?}");
    assert_eq!(first.stdout(), "100000\n");
    assert!(
        first
            .stderr()
            .starts_with("hutch: IPython failed to start (")
            && first
                .stderr()
                .ends_with("); this context runs plain Python\n"),
        "{first:?}"
    );
    let second = it.run(id, "print(len(x))").await;
    assert_eq!(
        (second.stdout(), second.stderr()),
        ("100000\n".into(), String::new())
    );
}

#[tokio::test]
async fn deleting_a_context_kills_everything_it_started() {
    let it = interp!();
    let ctx = it.create(json!({"kernel": "python"})).await;
    let id = ctx["id"].as_str().unwrap();
    // A detached grandchild in a session of its own, which no process-group kill reaches.
    let run = it
        .run(
            Some(id),
            "import subprocess\nsubprocess.Popen(['setsid', 'sleep', '4242'], start_new_session=True)",
        )
        .await;
    assert_eq!(run.outcome(), "completed", "{run:?}");
    let session = it.client.get_session(it.session).await.unwrap();
    let alive = common::sh(&it.client, &session, "pgrep -f 'slee[p] 4242' || true").await;
    assert!(!alive.stdout.trim().is_empty(), "the grandchild runs");
    let (status, _) = it
        .call(
            http::Method::DELETE,
            &format!("/interpreter/contexts/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alive = common::sh(&it.client, &session, "pgrep -f 'slee[p] 4242' || true").await;
    assert_eq!(alive.stdout.trim(), "", "nothing of the context survives");
}

#[tokio::test]
async fn another_sessions_contexts_are_out_of_reach() {
    let it = interp!();
    let ctx = it.create(json!({"kernel": "python"})).await;
    let id = ctx["id"].as_str().unwrap();
    it.run(Some(id), "secret = 'mine'").await;
    // A second session of the same tenant has its own contexts only.
    let other = common::session(&it.client).await;
    let path = format!(
        "/v1/sessions/{}/interpreter/contexts/{id}",
        other.session_id
    );
    let (status, _) = it
        .client
        .request(http::Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 404);
    // Another tenant cannot reach the session at all.
    let stranger = it._server.client("tenant-b");
    let (status, _) = stranger
        .request(
            http::Method::GET,
            &it.path(&format!("/interpreter/contexts/{id}")),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status.as_u16(), 404);
}

#[tokio::test]
async fn limits_are_enforced() {
    let it = interp!();
    let big = "x".repeat(1024 * 1024 + 1);
    let run = it.ws(json!({"code": big})).await;
    assert_eq!(run.error_name(), Some("InvalidRequest"), "{run:?}");
    // Past the 2 MiB a request message may be: said so too, not a dropped connection.
    let huge = "x".repeat(3 * 1024 * 1024);
    let run = it.ws(json!({"code": huge})).await;
    assert_eq!(run.error_name(), Some("InvalidRequest"), "{:?}", run.close);
    assert_eq!(run.close, Some(1008));
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/execute",
            Some(json!({"code": huge})),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(
        body["error"]["details"]["limitBytes"],
        2 * 1024 * 1024,
        "{body:.200}"
    );
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts",
            Some(json!({"historySize": 100000})),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"]["field"], "historySize");
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts",
            Some(json!({"cwd": "relative"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (400, json!("cwd"))
    );
    // An execution without a body has no code: refused, not run as an empty cell.
    let (status, body) = it
        .call(http::Method::POST, "/interpreter/execute", None)
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("code"), "{body}");
    // Node does not start in less than 64 MiB: refused at once, not after the worker's
    // 30 s start timeout.
    let (status, body) = it
        .call(
            http::Method::POST,
            "/interpreter/contexts",
            Some(json!({"language": "javascript", "memoryMb": 32})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["details"]["field"].clone()),
        (400, json!("memoryMb")),
        "{body}"
    );
}
