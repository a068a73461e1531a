//! Streamed commands, background processes, terminals and stateless code runs.
//!
//! A streamed or background command is a *process* of the session: the agent keeps its output
//! in a bounded ring of numbered chunks, so a client can leave and come back with the number
//! of the last chunk it saw and lose nothing (or be told exactly what it lost). The frames of
//! every stream are [`ProcessEvent`]s, one JSON object per WebSocket text message or per
//! NDJSON line: `start` first, output chunks in order, `exit` last.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One frame of a process's stream.
///
/// Output is always base64 in `data` (standard alphabet, padded): chunk boundaries fall
/// anywhere, so a chunk need not be valid UTF-8 even when the whole output is. `seq` numbers
/// the chunks of both streams together, from 0, in the order they were read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ProcessEvent {
    /// The process started.
    #[serde(rename_all = "camelCase")]
    Start {
        /// Its pid inside the sandbox: the `{pid}` of the `processes` routes.
        pid: i32,
        /// Its id, unique within the session (pids are reused, ids are not).
        process_id: u64,
    },
    /// A chunk of standard output.
    Stdout {
        /// Sequence number of the chunk.
        seq: u64,
        /// The bytes, base64.
        data: String,
    },
    /// A chunk of standard error.
    Stderr {
        /// Sequence number of the chunk.
        seq: u64,
        /// The bytes, base64.
        data: String,
    },
    /// The requested chunks are no longer buffered: the stream resumes at `firstAvailable`.
    #[serde(rename_all = "camelCase")]
    Truncated {
        /// The sequence number asked for.
        from: u64,
        /// The oldest sequence number still buffered (the next chunk sent).
        first_available: u64,
    },
    /// The process and everything it started are gone; always the last frame.
    #[serde(rename_all = "camelCase")]
    Exit {
        /// Exit status, or null when a signal ended it.
        exit_code: Option<i32>,
        /// The signal that ended it, or null.
        signal: Option<i32>,
        /// Wall-clock run time in milliseconds.
        duration_ms: u64,
        /// Whether its timeout ended it.
        timed_out: bool,
        /// Whether the kernel's out-of-memory killer ended it: the session reached its memory
        /// limit (`memoryMb`).
        #[serde(default)]
        oom_killed: bool,
    },
    /// The request failed before anything was started (WebSocket only; HTTP answers with the
    /// error envelope and its status instead).
    Error {
        /// The same envelope an HTTP error carries.
        error: crate::ErrorDetail,
    },
}

/// The JSON of a `stdout` or `stderr` [`ProcessEvent`] of `data`, exactly as serde writes
/// it, built without the intermediate string (output is most of what streams carry).
pub fn output_event_json(stderr: bool, seq: u64, data: &[u8]) -> String {
    let mut out = Vec::with_capacity(data.len().div_ceil(3) * 4 + 48);
    out.extend_from_slice(if stderr {
        b"{\"type\":\"stderr\",\"seq\":"
    } else {
        b"{\"type\":\"stdout\",\"seq\":"
    });
    out.extend_from_slice(seq.to_string().as_bytes());
    out.extend_from_slice(b",\"data\":\"");
    base64::encode_into(data, &mut out);
    out.extend_from_slice(b"\"}");
    // Only ASCII was written.
    String::from_utf8(out).unwrap_or_default()
}

/// The answer to a `background: true` command: it runs on, detached from the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StartedProcess {
    /// Its id, unique within the session.
    pub process_id: u64,
    /// Its pid inside the sandbox.
    pub pid: i32,
}

/// What `POST /v1/sessions/{id}/commands` answers as JSON: the result of a one-shot command,
/// or for `background: true` the process it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CommandResponse {
    /// The command ran to completion.
    Result(crate::CommandResult),
    /// The command was started in the background.
    Started(StartedProcess),
}

/// Whether a process still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProcessStatus {
    /// It (or something it started) still runs.
    Running,
    /// It and its whole tree are gone; its exit and buffered output can still be read.
    Exited,
}

/// A process of the session, running or finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// Its id, unique within the session.
    pub process_id: u64,
    /// Its pid inside the sandbox.
    pub pid: i32,
    /// The program and its arguments (a `command` runs as `/bin/sh -c COMMAND`).
    pub command: Vec<String>,
    /// Running or exited.
    pub status: ProcessStatus,
    /// Exit status once exited, unless a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it, if one did.
    pub signal: Option<i32>,
    /// Whether its timeout ended it.
    pub timed_out: bool,
    /// Whether the kernel's out-of-memory killer ended it: the session reached its memory
    /// limit (`memoryMb`).
    #[serde(default)]
    pub oom_killed: bool,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// Milliseconds it ran, once exited.
    pub duration_ms: Option<u64>,
    /// Sequence number the next output chunk will get (every chunk so far is below it).
    pub next_seq: u64,
    /// Oldest sequence number still buffered.
    pub first_seq: u64,
}

/// `GET /v1/sessions/{id}/processes`: running processes and the most recent finished ones,
/// oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProcessList {
    /// The processes.
    pub items: Vec<ProcessInfo>,
    /// How many there are.
    pub total: usize,
}

/// A signal, by name (`"SIGTERM"`, `"TERM"`) or number (`15`): `HUP`, `INT`, `QUIT`, `ABRT`,
/// `KILL`, `USR1`, `USR2`, `PIPE`, `ALRM`, `TERM`, `CONT`, `STOP`, `TSTP` or `WINCH` (others,
/// such as `SEGV` or `BUS`, are refused with 400).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum SignalSpec {
    /// A name such as `SIGTERM` or `TERM`.
    Name(String),
    /// A number: one of those of the names accepted (1, 2, 3, 6, 9, 10, 12, 13, 14, 15, 18, 19,
    /// 20, 28).
    Number(i32),
}

/// `POST /v1/sessions/{id}/processes/{pid}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"signal": "SIGTERM"}))]
pub struct SignalRequest {
    /// The signal, delivered to the process's whole process group.
    pub signal: SignalSpec,
}

/// The signals a client may send, by name (without `SIG`) and number.
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("ABRT", 6),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("PIPE", 13),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("WINCH", 28),
];

impl SignalSpec {
    /// The signal's number, if it is one a client may send.
    pub fn number(&self) -> Option<i32> {
        match self {
            SignalSpec::Number(n) => SIGNALS.iter().find(|(_, s)| s == n).map(|(_, s)| *s),
            SignalSpec::Name(name) => {
                let upper = name.to_ascii_uppercase();
                let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
                SIGNALS.iter().find(|(n, _)| *n == bare).map(|(_, s)| *s)
            }
        }
    }
}

/// A message a client sends on a terminal WebSocket as text (binary messages are keystrokes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PtyControl {
    /// The terminal's new size.
    Resize {
        /// Columns, 1 to 1000.
        cols: u16,
        /// Rows, 1 to 1000.
        rows: u16,
    },
}

/// A message a client sends on a command stream after the command: binary messages are
/// written to the process's standard input; this text message closes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum StreamControl {
    /// Close standard input (end of file).
    Eof,
}

/// `POST /v1/sessions/{id}/code`: a snippet run in a fresh process.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"language": "python", "code": "print(6 * 7)", "timeout": 10}))]
pub struct CodeRequest {
    /// `python` (`python3 -c`), `javascript` (`node -e`) or `bash` (`bash -c`).
    #[schema(pattern = "^(python|javascript|bash)$")]
    pub language: String,
    /// The source, at most 131064 bytes (Linux's bound on one argument, less the interpreter's
    /// flag), no NUL.
    #[schema(max_length = 131064)]
    pub code: String,
    /// Seconds, in (0, 3600], before the run and everything it started is killed; default 60.
    #[schema(exclusive_minimum = 0, maximum = 3600)]
    pub timeout: Option<f64>,
    /// Extra environment variables, over the session's.
    #[schema(schema_with = crate::schema::env_request)]
    pub env: Option<BTreeMap<String, String>>,
}

/// The languages of [`CodeRequest`], the program each runs with and the flag its source is
/// joined to as one argument (`--eval=…`, so that a source starting with `-` is no option;
/// `bash` takes `-c --` and the source apart).
pub const CODE_LANGUAGES: &[(&str, &str, &str)] = &[
    ("python", "python3", "-c"),
    ("javascript", "node", "--eval="),
    ("bash", "bash", "-c"),
];

/// Base64 (standard alphabet, padded), the encoding of output chunks.
pub mod base64 {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

    /// Writes padded standard base64; reads it padded or not.
    const CHUNKS: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );

    /// Encodes bytes.
    pub fn encode(input: &[u8]) -> String {
        CHUNKS.encode(input)
    }

    /// Appends the encoding of `input` to `out`.
    pub fn encode_into(input: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.resize(start + input.len().div_ceil(3) * 4, 0);
        let written = CHUNKS.encode_slice(input, &mut out[start..]).unwrap_or(0);
        out.truncate(start + written);
    }

    /// Decodes padded or unpadded base64; `None` when it is not base64.
    pub fn decode(input: &str) -> Option<Vec<u8>> {
        CHUNKS.decode(input).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_every_length() {
        let data: Vec<u8> = (0..=255u8).collect();
        for len in 0..data.len() {
            let encoded = base64::encode(&data[..len]);
            assert_eq!(base64::decode(&encoded).unwrap(), &data[..len]);
        }
        assert_eq!(base64::encode(b"hi\xff"), "aGn/");
        assert_eq!(base64::encode(b"a"), "YQ==");
        assert!(base64::decode("a").is_none());
        assert!(base64::decode("a*bc").is_none());
    }

    #[test]
    fn output_events_are_written_as_serde_writes_them() {
        for (stderr, seq, data) in [(false, 0, &b""[..]), (true, 12345, b"\xff\x00ab")] {
            let event = if stderr {
                ProcessEvent::Stderr {
                    seq,
                    data: base64::encode(data),
                }
            } else {
                ProcessEvent::Stdout {
                    seq,
                    data: base64::encode(data),
                }
            };
            assert_eq!(
                output_event_json(stderr, seq, data),
                serde_json::to_string(&event).unwrap()
            );
        }
    }

    #[test]
    fn events_have_the_documented_shape() {
        let start = ProcessEvent::Start {
            pid: 7,
            process_id: 3,
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            serde_json::json!({"type": "start", "pid": 7, "processId": 3})
        );
        let exit = ProcessEvent::Exit {
            exit_code: None,
            signal: Some(9),
            duration_ms: 5,
            timed_out: true,
            oom_killed: false,
        };
        assert_eq!(
            serde_json::to_value(&exit).unwrap(),
            serde_json::json!({"type": "exit", "exitCode": null, "signal": 9, "durationMs": 5, "timedOut": true, "oomKilled": false})
        );
        let cut = ProcessEvent::Truncated {
            from: 1,
            first_available: 9,
        };
        assert_eq!(
            serde_json::to_value(&cut).unwrap(),
            serde_json::json!({"type": "truncated", "from": 1, "firstAvailable": 9})
        );
    }

    #[test]
    fn signals_by_name_or_number() {
        assert_eq!(SignalSpec::Name("SIGTERM".into()).number(), Some(15));
        assert_eq!(SignalSpec::Name("int".into()).number(), Some(2));
        assert_eq!(SignalSpec::Number(9).number(), Some(9));
        assert_eq!(SignalSpec::Number(0).number(), None);
        assert_eq!(SignalSpec::Name("SIGNOPE".into()).number(), None);
    }
}
