//! An S3-compatible server for the tests of storage contexts on object storage: moto in server
//! mode, a stand-in for S3 (installed from PyPI by `scripts/deps.sh test` into
//! `target/venv-moto`), on a free loopback port, one per test server.
//!
//! `HUTCH_TEST_BLOB_STORE=s3` makes every [`super::TestServer`] keep its storage contexts in a
//! bucket of its own moto instead of its data directory: the storage-context suite
//! (`tests/storage.rs`) runs unchanged on both (`scripts/test.sh` runs it once each way).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bucket of every test server.
pub const BUCKET: &str = "hutch-test";
/// The key prefix of every test server's blobs.
pub const PREFIX: &str = "contexts";

/// Whether the tests run with their blobs on S3 (`HUTCH_TEST_BLOB_STORE=s3`).
pub fn wanted() -> bool {
    match std::env::var("HUTCH_TEST_BLOB_STORE").as_deref() {
        Ok("s3") => true,
        Ok("" | "local") | Err(_) => false,
        Ok(other) => panic!("HUTCH_TEST_BLOB_STORE={other:?}: expected s3 or local"),
    }
}

/// A running moto server with [`BUCKET`] made.
pub struct Moto {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
}

impl Moto {
    /// Starts moto on a free port (it prints the port it bound) and makes [`BUCKET`].
    pub fn start() -> Moto {
        let bin =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/venv-moto/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/deps.sh test",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start moto_server");
        let stderr = child.stderr.take().expect("moto stderr");
        let mut lines = BufReader::new(stderr).lines();
        // Bounded: the lines end when moto exits.
        let addr = loop {
            let line = lines
                .next()
                .expect("moto_server exited before listening")
                .expect("read moto's output");
            if let Some(url) = line.split("Running on http://").nth(1) {
                break url.trim().to_owned();
            }
        };
        // Keep draining its log so it never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        let moto = Moto { child, addr };
        let (status, body) = moto.request("PUT", &format!("/{BUCKET}"));
        assert_eq!(status, 200, "creating the bucket: {body}");
        moto
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// One plain HTTP/1.1 request (moto does not check signatures); the status and body.
    fn request(&self, method: &str, target: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(&self.addr).expect("connect to moto");
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .expect("timeout");
        write!(
            stream,
            "{method} {target} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("send to moto");
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .expect("read moto's answer");
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_owned();
        (status, body)
    }

    /// The keys of the objects under `prefix` (up to 1000: enough for a test).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self.request("GET", &format!("/{BUCKET}?list-type=2&prefix={prefix}"));
        assert_eq!(status, 200, "listing {prefix}: {body}");
        body.split("<Key>")
            .skip(1)
            .filter_map(|rest| rest.split_once("</Key>").map(|(key, _)| key.to_owned()))
            .collect()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
