//! Helpers of the file API tests: `curl` against the real server, as a user would.

#![allow(clippy::unwrap_used)] // a panic is how a test fails
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

use crate::common::TestServer;

/// A response: status, headers (lower-cased names) and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The error code of an error envelope.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// Percent-encodes a query value.
pub fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs curl with the tenant's token on `/v1/sessions/{id}{rest}` plus extra arguments.
pub fn curl(
    server: &TestServer,
    session: uuid::Uuid,
    method: &str,
    rest: &str,
    args: &[&str],
) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let headers = dir.path().join("headers");
    let body = dir.path().join("body");
    let out = Command::new("curl")
        .args(["-sS", "-X", method, "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}", "-H"])
        .arg(format!("Authorization: Bearer {}", server.token("alice")))
        .args(args)
        .arg(format!("{}/v1/sessions/{session}{rest}", server.url))
        .output()
        .expect("run curl");
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl failed: {}", String::from_utf8_lossy(&out.stderr)));
    let header_text = std::fs::read_to_string(&headers).unwrap_or_default();
    let headers = header_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

/// Uploads `data` to `path` (`PUT /files/content`) with extra query.
pub fn put(
    server: &TestServer,
    session: uuid::Uuid,
    path: &str,
    query: &str,
    data: &[u8],
) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("upload");
    std::fs::write(&file, data).unwrap();
    let upload = format!("@{}", file.display());
    curl(
        server,
        session,
        "PUT",
        &format!("/files/content?path={}{query}", enc(path)),
        &[
            "--data-binary",
            &upload,
            "-H",
            "Content-Type: application/octet-stream",
        ],
    )
}

/// Downloads `path` (`GET /files/content`).
pub fn get(server: &TestServer, session: uuid::Uuid, path: &str, args: &[&str]) -> Reply {
    curl(
        server,
        session,
        "GET",
        &format!("/files/content?path={}", enc(path)),
        args,
    )
}
