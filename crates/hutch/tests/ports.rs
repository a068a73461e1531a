//! Ports from outside, end to end: web servers listening inside a session (which has no
//! network at all) answer through the control plane, over HTTP and WebSocket, with the bearer
//! token or with a signed preview link, in its path form and its host form.

#![allow(clippy::unwrap_used)] // a panic is how a test fails

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, can_run_sandboxes, session, sh};
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hutch_api::{CommandRequest, PortLink, PortList, Session};
use hutch_client::HutchClient;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The test app: JSON of each request, echoed bodies, a WebSocket echo (standard library only).
const ECHO_APP: &str = include_str!("apps/echo.py");

/// One HTTP answer.
struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or_default()
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Sends one request to the server on its own connection, with exactly `headers` (a `Host`
/// of the server's address unless one is given).
async fn http(
    server: &TestServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Reply {
    let address = server.url.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = hyper::Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", &address);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// `GET path` with exactly `headers`.
async fn get(server: &TestServer, path: &str, headers: &[(&str, &str)]) -> Reply {
    http(server, "GET", path, headers, vec![]).await
}

/// `Authorization: Bearer …` for `tenant`.
fn bearer(server: &TestServer, tenant: &str) -> String {
    format!("Bearer {}", server.token(tenant))
}

/// Starts `command` in the background in the session (for an hour).
async fn start(client: &HutchClient, session: &Session, command: &str) {
    client
        .start_process(
            session.session_id,
            &CommandRequest {
                command: Some(command.to_owned()),
                timeout: Some(3600.0),
                ..CommandRequest::default()
            },
        )
        .await
        .unwrap();
}

/// Waits until the session lists a listener on each of `ports`; returns the list.
async fn wait_listening(client: &HutchClient, session: &Session, ports: &[u16]) -> PortList {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = client
            .request(
                http::Method::GET,
                &format!("/v1/sessions/{}/ports", session.session_id),
                None,
            )
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let list: PortList = serde_json::from_slice(&body).unwrap();
        if ports
            .iter()
            .all(|port| list.ports.iter().any(|l| l.port == *port))
        {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "never listening on {ports:?}: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A session running the echo app on `port` (all IPv4 addresses).
async fn session_with_echo_app(client: &HutchClient, port: u16) -> Session {
    let s = session(client).await;
    let req = CommandRequest {
        command: Some("cat > /workspace/echo.py".into()),
        stdin: Some(ECHO_APP.into()),
        ..CommandRequest::default()
    };
    assert_eq!(
        client
            .run_command(s.session_id, &req)
            .await
            .unwrap()
            .exit_code,
        0
    );
    start(client, &s, &format!("python3 /workspace/echo.py {port}")).await;
    wait_listening(client, &s, &[port]).await;
    s
}

/// Asks for a preview link to `port`.
async fn link(client: &HutchClient, session: &Session, port: u16, ttl: u64) -> PortLink {
    let (status, body) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/ports/{port}/link", session.session_id),
            Some(format!(r#"{{"ttl": {ttl}}}"#).into()),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

/// Opens a WebSocket to `path` with `headers`, says three things and hears them back.
async fn websocket_echoes(server: &TestServer, path: &str, headers: &[(&'static str, String)]) {
    let url = format!("ws://{}{path}", server.url.trim_start_matches("http://"));
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), 101);
    let big = "x".repeat(200_000);
    for text in ["hello", "through the port", big.as_str()] {
        socket.send(Message::Text(text.into())).await.unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("an echo within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::Text(text.into()));
    }
    socket
        .send(Message::Binary(vec![0u8, 255, 1].into()))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Binary(vec![0u8, 255, 1].into())
    );
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn a_web_server_in_the_session_answers_through_its_port() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let auth = bearer(&server, "alice");
    let s = session_with_echo_app(&client, 8001).await;
    let id = s.session_id;
    // A static site served by Python's own server, listening on IPv6 loopback only.
    sh(
        &client,
        &s,
        "mkdir -p /workspace/site/docs && cd /workspace/site && \
         echo '<a href=\"docs/\">docs</a>' > index.html && echo 'the docs' > docs/index.html",
    )
    .await;
    start(
        &client,
        &s,
        "cd /workspace/site && exec python3 -m http.server 8000 --bind ::1",
    )
    .await;

    // The list shows both listeners, their addresses and the process holding them.
    let list = wait_listening(&client, &s, &[8000, 8001]).await;
    let site = list.ports.iter().find(|l| l.port == 8000).unwrap();
    assert_eq!(site.address, "::1");
    assert_eq!(site.process.as_deref(), Some("python3"));
    let echo = list.ports.iter().find(|l| l.port == 8001).unwrap();
    assert_eq!(echo.address, "0.0.0.0");
    assert!(echo.pid.is_some());

    // The page, and the page its relative link leads to.
    let base = format!("/v1/sessions/{id}/ports/8000");
    let page = get(&server, &format!("{base}/"), &[("authorization", &auth)]).await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(page.text().contains("href=\"docs/\""), "{}", page.text());
    let docs = get(
        &server,
        &format!("{base}/docs/"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(docs.text(), "the docs\n");
    // The app's redirect to an absolute path stays under the port's prefix, and the port's
    // own path without a final slash gains one, so relative links resolve under it.
    let redirect = get(
        &server,
        &format!("{base}/docs"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(redirect.status, 301);
    assert_eq!(redirect.header("location"), format!("{base}/docs/"));
    let bare = get(&server, &base, &[("authorization", &auth)]).await;
    assert_eq!(bare.status, 308);
    assert_eq!(bare.header("location"), format!("{base}/"));

    // The app sees its own path and query, the client's Host, the forwarding headers, and
    // never the bearer token.
    let seen = get(
        &server,
        &format!("/v1/sessions/{id}/ports/8001/api/items?q=a%20b"),
        &[("authorization", &auth), ("x-forwarded-prefix", "/spoofed")],
    )
    .await
    .json();
    assert_eq!(seen["path"], "/api/items?q=a%20b");
    let headers = &seen["headers"];
    let address = server.url.trim_start_matches("http://");
    assert_eq!(headers["host"], address);
    assert_eq!(headers["x-forwarded-host"], address);
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-prefix"],
        format!("/v1/sessions/{id}/ports/8001")
    );
    assert!(headers.get("authorization").is_none(), "{headers}");

    // A request body goes through whole, and comes back whole.
    let body: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let echoed = http(
        &server,
        "POST",
        &format!("/v1/sessions/{id}/ports/8001/upload"),
        &[("authorization", &auth)],
        body.clone(),
    )
    .await;
    assert_eq!(echoed.status, 200);
    assert!(echoed.body == body, "the body came back changed");

    // A port nothing listens on answers at once, with its own code; a port that is no port
    // is a bad request.
    let started = Instant::now();
    let closed = get(
        &server,
        &format!("/v1/sessions/{id}/ports/9999/"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(closed.status, 502, "{}", closed.text());
    assert_eq!(closed.error_code(), "port_unreachable");
    assert_eq!(closed.json()["error"]["details"]["port"], 9999);
    // Refused by the sandbox's kernel, not left to the agent's 5 s connect timeout.
    assert!(closed.text().contains("refused"), "{}", closed.text());
    assert!(started.elapsed() < Duration::from_secs(10));
    let bad = get(
        &server,
        &format!("/v1/sessions/{id}/ports/70000/"),
        &[("authorization", &auth)],
    )
    .await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["details"]["field"], "port");

    // Without a token: 401; another tenant: 404, for the port and for its list.
    let anonymous = get(&server, &format!("{base}/"), &[]).await;
    assert_eq!(anonymous.status, 401);
    let bob = bearer(&server, "bob");
    let foreign = get(&server, &format!("{base}/"), &[("authorization", &bob)]).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.error_code(), "session_not_found");
    let foreign_list = get(
        &server,
        &format!("/v1/sessions/{id}/ports"),
        &[("authorization", &bob)],
    )
    .await;
    assert_eq!(foreign_list.status, 404);
}

#[tokio::test]
async fn websockets_reach_the_session_through_the_port_and_through_a_link() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with_echo_app(&client, 8000).await;

    let path = format!("/v1/sessions/{}/ports/8000/ws", s.session_id);
    websocket_echoes(
        &server,
        &path,
        &[("authorization", bearer(&server, "alice"))],
    )
    .await;

    let link = link(&client, &s, 8000, 60).await;
    websocket_echoes(&server, &format!("{}ws", link.path), &[]).await;
}

#[tokio::test]
async fn a_signed_link_opens_one_port_without_a_token_until_it_expires() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start();
    let client = server.client("alice");
    let s = session_with_echo_app(&client, 8000).await;

    let link = link(&client, &s, 8000, 3).await;
    assert!(link.url.starts_with(&server.url), "{}", link.url);
    assert!(link.url.ends_with(&link.path));
    assert!(link.host_url.is_none(), "no preview domain, no host form");
    assert!(link.expires_at > time::OffsetDateTime::now_utc());

    // No bearer header: the token in the path is the credential; the app sees its own path.
    let opened = get(&server, &format!("{}page?x=1", link.path), &[]).await;
    assert_eq!(opened.status, 200, "{}", opened.text());
    assert_eq!(opened.json()["path"], "/page?x=1");
    assert_eq!(opened.header("referrer-policy"), "same-origin");
    assert_eq!(
        opened.json()["headers"]["x-forwarded-prefix"],
        link.path.trim_end_matches('/')
    );

    // A forged token (another port, the same signature) and garbage are refused.
    let (payload, signature) = link.token.split_once('.').unwrap();
    let mut forged = payload.to_owned();
    forged.replace_range(
        forged.len() - 2..,
        if forged.ends_with("fQ") { "fX" } else { "fQ" },
    );
    for token in [format!("{forged}.{signature}"), "not-a-token".to_owned()] {
        let refused = get(&server, &format!("/preview/{token}/"), &[]).await;
        assert_eq!(refused.status, 403, "{}", refused.text());
        assert_eq!(refused.error_code(), "link_invalid");
    }

    // Another tenant cannot make a link to the session; a port that is no port is refused.
    let bob = server.client("bob");
    let (status, body) = bob
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/ports/8000/link", s.session_id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 404, "{}", String::from_utf8_lossy(&body));
    let (status, _) = client
        .request(
            http::Method::POST,
            &format!("/v1/sessions/{}/ports/8000/link", s.session_id),
            Some(r#"{"ttl": 100000}"#.into()),
        )
        .await
        .unwrap();
    assert_eq!(status, 400);

    // Past its expiry the link answers 401 with its own code.
    tokio::time::sleep_until((Instant::now() + Duration::from_secs(4)).into()).await;
    let expired = get(&server, &link.path, &[]).await;
    assert_eq!(expired.status, 401, "{}", expired.text());
    assert_eq!(expired.error_code(), "link_expired");

    // A link outlives nothing: once the session is gone it is a 404.
    let later = self::link(&client, &s, 8000, 60).await;
    client.delete_session(s.session_id).await.unwrap();
    let gone = get(&server, &later.path, &[]).await;
    assert_eq!(gone.status, 404, "{}", gone.text());
}

#[tokio::test]
async fn the_host_form_of_a_link_keeps_its_token_in_a_cookie_of_that_host() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--preview-domain", "preview.test"]);
    let client = server.client("alice");
    let s = session_with_echo_app(&client, 8000).await;
    let link = link(&client, &s, 8000, 60).await;
    let port = server.url.rsplit(':').next().unwrap();
    let host = format!("8000-{}.preview.test:{port}", s.session_id);
    assert_eq!(
        link.host_url.as_deref(),
        Some(format!("http://{host}/?hutch_preview_token={}", link.token).as_str())
    );

    // The first visit moves the token into a cookie of this host, and comes back without it.
    let first = get(
        &server,
        &format!("/app/?theme=dark&hutch_preview_token={}", link.token),
        &[("host", &host)],
    )
    .await;
    assert_eq!(first.status, 303, "{}", first.text());
    assert_eq!(first.header("location"), "/app/?theme=dark");
    let cookie = first.header("set-cookie");
    assert!(
        cookie.starts_with(&format!("hutch_preview={};", link.token)),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.to_ascii_lowercase().contains("domain="),
        "host-only: {cookie}"
    );

    // With the cookie every path is the app's, absolute ones included; the app sees neither
    // the cookie nor a prefix.
    let cookies = format!("lang=en; hutch_preview={}", link.token);
    let page = get(
        &server,
        "/static/app.js",
        &[("host", &host), ("cookie", &cookies)],
    )
    .await;
    assert_eq!(page.status, 200, "{}", page.text());
    let seen = page.json();
    assert_eq!(seen["path"], "/static/app.js");
    assert_eq!(seen["headers"]["cookie"], "lang=en");
    assert_eq!(seen["headers"]["host"], host);
    assert!(seen["headers"].get("x-forwarded-prefix").is_none());

    // Without the cookie: 401. The cookie on another port's host: 403. The API is not
    // served on a preview host, and the API's own host still serves it.
    let bare = get(&server, "/", &[("host", &host)]).await;
    assert_eq!(bare.status, 401);
    let other_port = format!("8001-{}.preview.test:{port}", s.session_id);
    let elsewhere = get(&server, "/", &[("host", &other_port), ("cookie", &cookies)]).await;
    assert_eq!(elsewhere.status, 403);
    assert_eq!(elsewhere.error_code(), "link_invalid");
    let api = get(&server, "/health", &[("host", &host), ("cookie", &cookies)]).await;
    assert_eq!(
        api.json()["path"],
        "/health",
        "the app's /health, not the server's"
    );
    let health = get(&server, "/health", &[]).await;
    assert_eq!(health.json()["status"], "ok");
}

#[tokio::test]
async fn connections_into_one_session_are_bounded() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--port-connections-max", "2"]);
    let client = server.client("alice");
    let auth = bearer(&server, "alice");
    let s = session_with_echo_app(&client, 8000).await;
    let path = format!("/v1/sessions/{}/ports/8000/", s.session_id);
    let url = format!("ws://{}{path}ws", server.url.trim_start_matches("http://"));
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut request = url.as_str().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", auth.parse().unwrap());
        open.push(tokio_tungstenite::connect_async(request).await.unwrap().0);
    }

    let refused = get(&server, &path, &[("authorization", &auth)]).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.json()["error"]["details"]["limit"], 2);

    // A connection that ends gives its place back, and so does every finished request: ten
    // in a row get through the one free place (a place comes back just after its response,
    // so a request may have to wait for the previous one's).
    open.pop().unwrap().close(None).await.unwrap();
    for _ in 0..10 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let reply = get(&server, &path, &[("authorization", &auth)]).await;
            if reply.status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "still refused: {}", reply.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of `name{session="id"…}` (with `extra` labels first) in the `/metrics` text.
async fn port_metric(client: &HutchClient, s: &Session, name: &str, extra: &str) -> Option<u64> {
    let (status, body) = client
        .request(http::Method::GET, "/metrics", None)
        .await
        .unwrap();
    assert_eq!(status, 200);
    let series = format!("{name}{{{extra}session=\"{}\"}} ", s.session_id);
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|l| l.strip_prefix(&series).map(|v| v.parse().unwrap()))
}

#[tokio::test]
async fn traffic_through_a_sessions_ports_is_counted_in_metrics() {
    if !can_run_sandboxes() {
        return;
    }
    let server = TestServer::start_with(&["--warm-pool", "1", "--port-connections-max", "1"]);
    let client = server.client("alice");
    let auth = bearer(&server, "alice");
    let s = session_with_echo_app(&client, 8000).await;
    let path = format!("/v1/sessions/{}/ports/8000/", s.session_id);

    // A WebSocket holds the session's only place: it is open, and a GET beside it is refused.
    let url = format!("ws://{}{path}ws", server.url.trim_start_matches("http://"));
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", auth.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let message = "x".repeat(10_000);
    ws.send(Message::text(message.clone())).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text(message));
    let opened = |name| port_metric(&client, &s, name, "");
    assert_eq!(opened("hutch_session_port_connections").await, Some(1));
    assert_eq!(
        get(&server, &path, &[("authorization", &auth)])
            .await
            .status,
        429
    );
    ws.close(None).await.unwrap();
    drop(ws);

    // GETs once the place is back; the WebSocket and each GET that got through is a request.
    let (mut relayed, mut refused) = (1, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while relayed < 4 {
        match get(&server, &path, &[("authorization", &auth)])
            .await
            .status
        {
            200 => relayed += 1,
            429 => refused += 1,
            other => panic!("status {other}"),
        }
        assert!(Instant::now() < deadline, "the place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        opened("hutch_session_port_requests_total").await,
        Some(relayed)
    );
    assert_eq!(
        opened("hutch_session_port_refused_total").await,
        Some(refused)
    );
    // Both ways carried at least the WebSocket's 10,000-byte message.
    for direction in ["in", "out"] {
        let bytes = port_metric(
            &client,
            &s,
            "hutch_session_port_bytes_total",
            &format!("direction=\"{direction}\","),
        )
        .await
        .unwrap();
        assert!(bytes > 10_000, "{direction}: {bytes}");
    }

    // The series go with the session.
    client.delete_session(s.session_id).await.unwrap();
    assert_eq!(opened("hutch_session_port_requests_total").await, None);
}
