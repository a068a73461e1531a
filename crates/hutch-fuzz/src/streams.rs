//! Streams from clients and workers: multipart uploads, interpreter worker pipes and process
//! stream frames.

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request};
use hutch_agent::fuzzing::{clean_path, control_lines, output_events};
use hutch_api::CommandRequest;
use hutch_api::limits::{
    FILES_MULTIPART_MAX_FILES, INTERPRETER_CHUNK_MAX_BYTES, INTERPRETER_FRAME_MAX_BYTES,
};
use hutch_api::processes::{ProcessEvent, StreamControl, base64, output_event_json};

use crate::runtime;

/// `POST /files/content` as `multipart/form-data`: the input is the `Content-Type` header's
/// value, a newline, then the body. Every part is read to its end and its file name cleaned
/// as the agent cleans it, below `/workspace`.
pub(crate) fn multipart(data: &[u8]) {
    let (content_type, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"multipart/form-data; boundary=x"[..], data),
    };
    let Ok(req) = Request::builder()
        .method("POST")
        .header(axum::http::header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
    else {
        return;
    };
    runtime().block_on(async {
        let Ok(mut multipart) = Multipart::from_request(req, &()).await else {
            return;
        };
        for _ in 0..FILES_MULTIPART_MAX_FILES {
            let Ok(Some(mut field)) = multipart.next_field().await else {
                return;
            };
            let name = field.file_name().map(str::to_owned);
            while let Ok(Some(_chunk)) = field.chunk().await {}
            if let Some(name) = name {
                let target = if name.starts_with('/') {
                    name
                } else {
                    format!("/workspace/{name}")
                };
                let _ = clean_path(&target);
            }
        }
    });
}

/// An interpreter worker's pipes, the input being its reads separated by `0xff` (a byte no
/// UTF-8 text holds): fd 4 splits into exactly the lines of the bytes, however the reads cut
/// them; fd 1 and 2 (a read starting with an odd byte goes to fd 2) turn into chunks of at
/// most the chunk limit whose text is the bytes decoded as a whole.
pub(crate) fn worker_pipes(data: &[u8]) {
    let reads: Vec<&[u8]> = data.split(|b| *b == 0xff).collect();
    let joined = reads.concat();
    let mut expected: Vec<&[u8]> = joined.split(|b| *b == b'\n').collect();
    expected.pop(); // the unfinished line
    let lines = control_lines(&reads);
    assert_eq!(lines.len(), expected.len(), "a different number of lines");
    for (line, want) in lines.iter().zip(&expected) {
        match line {
            Some(line) => assert_eq!(line.as_slice(), *want),
            None => assert!(want.len() > INTERPRETER_FRAME_MAX_BYTES),
        }
    }

    let output: Vec<(bool, &[u8])> = reads
        .iter()
        .map(|read| (read.first().is_some_and(|b| b & 1 == 1), *read))
        .collect();
    let events = output_events(&output);
    for chunk in events.stdout.iter().chain(&events.stderr) {
        assert!(!chunk.is_empty() && chunk.len() <= INTERPRETER_CHUNK_MAX_BYTES);
    }
    for (stderr, chunks) in [(false, &events.stdout), (true, &events.stderr)] {
        let bytes: Vec<u8> = output
            .iter()
            .filter(|(e, _)| *e == stderr)
            .flat_map(|(_, read)| read.iter().copied())
            .collect();
        assert_eq!(
            chunks.concat(),
            String::from_utf8_lossy(&bytes),
            "stderr: {stderr}"
        );
    }
    assert_eq!(events.truncated, None);
}

/// Process stream frames: what a client sends (the command, `{"type":"eof"}`) parses or is
/// refused, and every output event the agent writes reads back as the bytes it carries.
pub(crate) fn process_frames(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = serde_json::from_str::<StreamControl>(&text);
    if let Ok(request) = serde_json::from_slice::<CommandRequest>(data)
        && let Some(env) = &request.env
    {
        let _ = hutch_api::env::check("env", env);
    }
    if let Ok(event) = serde_json::from_str::<ProcessEvent>(&text)
        && let ProcessEvent::Stdout { data, .. } | ProcessEvent::Stderr { data, .. } = event
        && let Some(bytes) = base64::decode(&data)
    {
        assert_eq!(base64::decode(&base64::encode(&bytes)), Some(bytes));
    }
    let stderr = data.len() % 2 == 1;
    let json = output_event_json(stderr, data.len() as u64, data);
    match serde_json::from_str::<ProcessEvent>(&json) {
        Ok(ProcessEvent::Stdout { seq, data: carried }) if !stderr => {
            assert_eq!(seq, data.len() as u64);
            assert_eq!(base64::decode(&carried).as_deref(), Some(data));
        }
        Ok(ProcessEvent::Stderr { seq, data: carried }) if stderr => {
            assert_eq!(seq, data.len() as u64);
            assert_eq!(base64::decode(&carried).as_deref(), Some(data));
        }
        other => panic!("the output event {json:?} reads back as {other:?}"),
    }
}

/// The WebSocket frames an agent sends, as the relay follows them to know where it may add a
/// close frame (`proxy/splice.rs`): cut as reads cut them or whole, the tracker comes to the
/// same answer, and it is the answer of a plain decoder of whole frames.
pub(crate) fn websocket_frames(data: &[u8]) {
    let pieces = crate::cut(data);
    let reads: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
    let whole = hutch_server::fuzzing::websocket_may_close(&[data]);
    assert_eq!(
        hutch_server::fuzzing::websocket_may_close(&reads),
        whole,
        "cut and whole disagree"
    );
    assert_eq!(
        whole,
        frames_end_open(data),
        "the tracker and the decoder disagree"
    );
}

/// Whether `data` is whole frames (RFC 6455, section 5.2), none of them a close frame.
fn frames_end_open(data: &[u8]) -> bool {
    let mut at = 0usize;
    let mut closed = false;
    while at < data.len() {
        let Some(&[first, second]) = data.get(at..at + 2) else {
            return false;
        };
        closed |= first & 0x0f == 0x8;
        let (extended, short) = match second & 0x7f {
            126 => (2, None),
            127 => (8, None),
            n => (0, Some(u64::from(n))),
        };
        let mask = if second & 0x80 != 0 { 4 } else { 0 };
        let Some(length_bytes) = data.get(at + 2..at + 2 + extended) else {
            return false;
        };
        let payload = short.unwrap_or_else(|| {
            length_bytes
                .iter()
                .fold(0u64, |n, b| (n << 8) | u64::from(*b))
        });
        let header = 2 + extended + mask;
        let end = u64::try_from(at + header)
            .ok()
            .and_then(|start| start.checked_add(payload));
        match end.and_then(|end| usize::try_from(end).ok()) {
            Some(end) if end <= data.len() && at + header <= data.len() => at = end,
            _ => return false,
        }
    }
    !closed
}
