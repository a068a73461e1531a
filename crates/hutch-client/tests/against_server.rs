//! The client against a real `hutch-server` on a TCP port, over a fake runtime.
//!
//! `FakeRuntime` here is a test double of `hutch_sandbox::Runtime` (the real one needs root
//! and is exercised by the binary's end-to-end tests): its sandboxes are entries in a set, and
//! `connect` serves a fake agent on an in-process socket pair that answers
//! `POST /commands` by echoing the command line.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hutch_api::{
    CommandRequest, CommandResult, CreateSessionRequest, ErrorCode, SessionStatus,
    UpdateSessionRequest,
};
use hutch_client::{ClientError, HutchClient};
use hutch_sandbox::{
    AgentConnection, Deaths, Runtime, RuntimeData, SandboxError, SandboxRecord, SandboxSpec,
};
use hutch_server::{Server, ServerConfig};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use uuid::Uuid;

#[derive(Default)]
struct FakeRuntime {
    live: Mutex<HashSet<Uuid>>,
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn create(&self, spec: &SandboxSpec) -> Result<SandboxRecord, SandboxError> {
        self.live.lock().unwrap().insert(spec.id);
        Ok(SandboxRecord {
            id: spec.id,
            sandbox_id: Uuid::new_v4(),
            runtime: RuntimeData::default(),
        })
    }

    async fn destroy(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        self.live.lock().unwrap().remove(&record.id);
        Ok(())
    }

    async fn adopt(&self, _record: &SandboxRecord) -> Result<bool, SandboxError> {
        Ok(false)
    }

    async fn sweep(&self, _known: &HashSet<Uuid>) -> Result<Vec<Uuid>, SandboxError> {
        Ok(Vec::new())
    }

    fn deaths(&self) -> Deaths {
        // No sandbox ever dies: the sender goes at once.
        tokio::sync::mpsc::unbounded_channel().1
    }

    async fn connect(&self, id: Uuid) -> Result<AgentConnection, SandboxError> {
        if !self.live.lock().unwrap().contains(&id) {
            return Err(SandboxError::Gone(id));
        }
        let (ours, theirs) = UnixStream::pair().unwrap();
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(theirs), service_fn(fake_agent)),
        );
        Ok(Box::new(ours))
    }

    async fn set_deadline(
        &self,
        id: Uuid,
        _deadline: std::time::SystemTime,
    ) -> Result<(), SandboxError> {
        if self.live.lock().unwrap().contains(&id) {
            Ok(())
        } else {
            Err(SandboxError::Gone(id))
        }
    }
}

async fn fake_agent(
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let body = req.into_body().collect().await.unwrap().to_bytes();
    let cmd: CommandRequest = serde_json::from_slice(&body).unwrap();
    let result = CommandResult {
        exit_code: 0,
        stdout: format!("{}\n", cmd.command.unwrap_or_default()),
        stderr: String::new(),
        duration_ms: 0,
        timed_out: false,
        truncated: false,
        oom_killed: false,
    };
    Ok(hyper::Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&result).unwrap(),
    ))))
}

/// Starts a server on an ephemeral port; returns a client with the start-up token.
async fn start() -> (HutchClient, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        ServerConfig::new(dir.path()),
        Arc::new(FakeRuntime::default()),
    )
    .await
    .unwrap();
    let token = server.startup_token().unwrap().to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server.serve_until(listener, std::future::pending()));
    (HutchClient::new(&base, &token).unwrap(), base, dir)
}

#[tokio::test]
async fn full_session_cycle() {
    let (client, _, _dir) = start().await;
    client.health().await.unwrap();

    let session = client
        .create_session(&CreateSessionRequest {
            ttl: Some(120),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(session.status, SessionStatus::Running);
    let id = session.session_id;
    assert_eq!(client.get_session(id).await.unwrap(), session);

    let list = client.list_sessions(Some(10), Some(0)).await.unwrap();
    assert_eq!(list.total, 1);
    assert_eq!(list.limit, 10);

    let updated = client
        .update_session(
            id,
            &UpdateSessionRequest {
                ttl: Some(600),
                metadata: Some([("a".to_owned(), "b".to_owned())].into()),
                network: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.metadata["a"], "b");
    assert!(updated.expires_at > session.expires_at);

    let result = client
        .run_command(
            id,
            &CommandRequest {
                command: Some("echo hi".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(result.stdout, "echo hi\n");

    let deleted = client.delete_session(id).await.unwrap();
    assert_eq!(deleted.session_id, id);
    let err = client.get_session(id).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::SessionNotFound));
    assert!(matches!(err, ClientError::Api { status, .. } if status == StatusCode::NOT_FOUND));
}

#[tokio::test]
async fn errors_carry_the_envelope() {
    let (client, base, _dir) = start().await;
    let err = client
        .create_session(&CreateSessionRequest {
            ttl: Some(59),
            ..Default::default()
        })
        .await
        .unwrap_err();
    match err {
        ClientError::Api { status, body } => {
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body.error.code, ErrorCode::InvalidRequest);
            assert_eq!(body.error.details["field"], "ttl");
        }
        other => panic!("unexpected {other:?}"),
    }

    let stranger = HutchClient::new(&base, "not-a-token").unwrap();
    stranger.health().await.unwrap();
    let err = stranger.list_sessions(None, None).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Unauthorized));

    let (status, body) = client
        .request(Method::GET, "/v1/sessions/nope", None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("sessionId"));
}

#[tokio::test]
async fn transport_errors_are_reported() {
    // Nothing listens on port 1: the error names the URL it tried.
    let client = HutchClient::new("http://127.0.0.1:1", "t").unwrap();
    assert!(matches!(
        client.health().await,
        Err(ClientError::Connect { url, .. }) if url.contains("127.0.0.1:1")
    ));
}
