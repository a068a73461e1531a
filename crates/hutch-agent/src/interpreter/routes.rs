//! HTTP and WebSocket routes of interpreter contexts, with the seed-compatible aliases under
//! `/process/interpreter/…`.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hutch_api::interpreter::{Deleted, HistoryList, InterruptResult};
use hutch_api::limits::INTERPRETER_REQUEST_MAX_BYTES;
use hutch_api::{ContextList, CreateContextRequest, ExecuteRequest, Frame};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::Agent;
use crate::error::AgentError;

/// How long a WebSocket client may take to send its execution request.
const FIRST_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Frames buffered between an execution and its client.
const FRAME_BUFFER: usize = 256;

/// The interpreter routes.
pub(crate) fn router() -> Router<Arc<Agent>> {
    Router::new()
        .route(
            "/interpreter/contexts",
            post(create_context).get(list_contexts),
        )
        .route("/process/interpreter/context", post(create_context))
        .route("/process/interpreter/contexts", get(list_contexts))
        .route(
            "/interpreter/contexts/{cid}",
            get(get_context).delete(delete_context),
        )
        .route(
            "/process/interpreter/context/{cid}",
            axum::routing::delete(delete_context),
        )
        .route("/interpreter/contexts/{cid}/interrupt", post(interrupt))
        .route("/interpreter/contexts/{cid}/restart", post(restart))
        .route("/interpreter/contexts/{cid}/history", get(history))
        .route("/interpreter/execute", get(execute_ws).post(execute_ndjson))
        .route(
            "/process/interpreter/execute",
            get(execute_ws).post(execute_ndjson),
        )
}

async fn read_body<T: serde::de::DeserializeOwned + Default>(
    req: Request,
    max: usize,
) -> Result<T, AgentError> {
    let bytes = axum::body::to_bytes(req.into_body(), max)
        .await
        .map_err(|_| AgentError::TooLarge(format!("request body is larger than {max} bytes")))?;
    if bytes.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| AgentError::Invalid {
        message: format!("invalid JSON body: {e}"),
        field: None,
    })
}

async fn create_context(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Json<hutch_api::Context>, AgentError> {
    let body: CreateContextRequest = read_body(req, 1024 * 1024).await?;
    super::create(&agent, body).await.map(Json)
}

async fn list_contexts(State(agent): State<Arc<Agent>>) -> Json<ContextList> {
    Json(ContextList {
        contexts: super::list(&agent),
    })
}

async fn get_context(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<hutch_api::Context>, AgentError> {
    super::get(&agent, &cid).map(Json)
}

async fn delete_context(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<Deleted>, AgentError> {
    super::delete(&agent, &cid)?;
    Ok(Json(Deleted {
        message: "Context deleted".to_owned(),
    }))
}

async fn interrupt(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<InterruptResult>, AgentError> {
    super::interrupt(&agent, &cid).map(|interrupted| Json(InterruptResult { interrupted }))
}

async fn restart(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
) -> Result<Json<hutch_api::Context>, AgentError> {
    super::restart(&agent, &cid).await.map(Json)
}

#[derive(Deserialize)]
struct HistoryQuery {
    limit: Option<usize>,
}

async fn history(
    State(agent): State<Arc<Agent>>,
    Path(cid): Path<String>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryList>, AgentError> {
    let q = crate::processes::routes::query(q)?;
    super::history(&agent, &cid, q.limit).map(|executions| Json(HistoryList { executions }))
}

/// Starts an execution in a task of its own (it outlives the client) and returns its frames.
fn start(agent: Arc<Agent>, req: ExecuteRequest) -> mpsc::Receiver<Frame> {
    let (tx, rx) = mpsc::channel(FRAME_BUFFER);
    tokio::spawn(super::execute(agent, req, tx));
    rx
}

/// `POST …/interpreter/execute`: the frames as NDJSON, one per line.
async fn execute_ndjson(
    State(agent): State<Arc<Agent>>,
    req: Request,
) -> Result<Response, AgentError> {
    let body: ExecuteRequest = read_body(req, INTERPRETER_REQUEST_MAX_BYTES).await?;
    super::validate_execute(&body)?;
    let rx = start(agent, body);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let frame = rx.recv().await?;
        let mut line = serde_json::to_vec(&frame).unwrap_or_default();
        line.push(b'\n');
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// `GET …/interpreter/execute` (WebSocket): the first message is the request, then frames
/// until `control`, then close (1000, 4008 on timeout, 1011 on a crash).
async fn execute_ws(
    State(agent): State<Arc<Agent>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, AgentError> {
    Ok(crate::processes::routes::upgrade(ws)?
        .max_message_size(INTERPRETER_REQUEST_MAX_BYTES)
        .on_upgrade(move |socket| ws_session(agent, socket)))
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let _ = socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await;
    // Let the client see the close before the connection goes.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(msg)) = socket.recv().await {
            if let Message::Close(_) = msg {
                break;
            }
        }
    })
    .await;
}

async fn send_frame(socket: &mut WebSocket, frame: &Frame) -> bool {
    let text = serde_json::to_string(frame).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn ws_session(agent: Arc<Agent>, mut socket: WebSocket) {
    let first = tokio::time::timeout(FIRST_MESSAGE_TIMEOUT, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                Some(Ok(Message::Binary(bytes))) => {
                    return Some(String::from_utf8_lossy(&bytes).into_owned());
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                _ => return None,
            }
        }
    })
    .await;
    let Ok(Some(text)) = first else {
        return;
    };
    let req = serde_json::from_str::<ExecuteRequest>(&text)
        .map_err(|e| AgentError::Invalid {
            message: format!("invalid execution request: {e}"),
            field: None,
        })
        .and_then(|req| super::validate_execute(&req).map(|()| req));
    let req = match req {
        Ok(req) => req,
        Err(e) => {
            let frame = Frame::Error {
                name: "InvalidRequest".to_owned(),
                value: e.to_string(),
                traceback: String::new(),
            };
            send_frame(&mut socket, &frame).await;
            close(socket, 1008, "invalid request").await;
            return;
        }
    };
    let mut rx = start(agent, req);
    let mut code = 1000;
    loop {
        tokio::select! {
            frame = rx.recv() => {
                let Some(frame) = frame else { break };
                if let Frame::Control { text, .. } = &frame {
                    code = match text.as_str() {
                        "timeout" => 4008,
                        "crashed" => 1011,
                        _ => 1000,
                    };
                }
                if !send_frame(&mut socket, &frame).await {
                    // The client is gone; the execution runs on and its frames are dropped.
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            },
        }
    }
    close(socket, code, "").await;
}
