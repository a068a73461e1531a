//! The package index proxy: the operator's package index, reachable from every session (with
//! or without network) and nothing else through it.
//!
//! With `--pip-index-url`, each claimed sandbox gets a TCP listener on `127.0.0.1:3141` of its
//! own network namespace. The socket is made there by a short-lived thread that enters the
//! namespace (a socket keeps the namespace it was made in), and served by the server: an HTTP
//! forward proxy that admits `CONNECT` and plain `GET`s to the index's hosts only, and
//! answers 403 to anything else. pip finds it through `PIP_INDEX_URL` and `PIP_PROXY` in the
//! session's environment. A session without network thus reaches the index and nothing more;
//! a session with network reaches it either way.

use std::collections::HashMap;
use std::net::TcpListener as StdListener;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

use super::lock;
use crate::SandboxError;

/// The port of the proxy on each sandbox's loopback.
pub const PROXY_PORT: u16 = 3141;
/// Longest request head the proxy reads.
const MAX_HEAD: usize = 16 * 1024;
/// Most connections of one sandbox through the proxy at once.
const MAX_CONNECTIONS: usize = 32;

/// The operator's package index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageIndex {
    /// The index URL pip uses (`https://mirror.example/simple/`).
    pub url: String,
    /// Hosts (`host` or `host:port`) the proxy admits: the index's, and those its pages link
    /// to (`files.pythonhosted.org` for PyPI).
    pub hosts: Vec<String>,
}

impl PackageIndex {
    /// The index at `url`, plus `extra_hosts`. Fails on a URL that is not `http(s)://host…`.
    pub fn new(url: &str, extra_hosts: &[String]) -> Result<PackageIndex, String> {
        let host = host_of(url).ok_or_else(|| {
            format!("--pip-index-url {url:?} is not an http:// or https:// URL with a host")
        })?;
        let mut hosts = vec![host];
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Ok(PackageIndex {
            url: url.to_owned(),
            hosts,
        })
    }

    /// The environment that points pip at the index through the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PIP_INDEX_URL".to_owned(), self.url.clone()),
            (
                "PIP_PROXY".to_owned(),
                format!("http://127.0.0.1:{PROXY_PORT}"),
            ),
        ];
        if self.url.starts_with("http://") {
            env.push(("PIP_TRUSTED_HOST".to_owned(), self.hosts.join(" ")));
        }
        env
    }

    /// Whether `authority` (`host:port`) may be reached: it is one of the index's hosts with
    /// its port, or one given without a port on 80 or 443.
    fn admits(&self, authority: &str) -> bool {
        let authority = authority.to_ascii_lowercase();
        self.hosts.iter().any(|h| {
            *h == authority
                || (!h.contains(':')
                    && (authority == format!("{h}:443") || authority == format!("{h}:80")))
        })
    }
}

/// `host` or `host:port` of an `http(s)://` URL, lower case.
fn host_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then(|| authority.to_ascii_lowercase())
}

/// The proxies of the sandboxes of one server.
pub(super) struct IndexProxies {
    index: Arc<PackageIndex>,
    serving: Mutex<HashMap<Uuid, tokio::task::AbortHandle>>,
}

impl IndexProxies {
    /// Proxies to `index`.
    pub(super) fn new(index: PackageIndex) -> IndexProxies {
        IndexProxies {
            index: Arc::new(index),
            serving: Mutex::new(HashMap::new()),
        }
    }

    /// The environment sessions get.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.index.env()
    }

    /// Starts the proxy of sandbox `sandbox_id`, whose agent is `pid` (its `lo` must be up).
    /// Needs a tokio runtime context.
    pub(super) fn start(&self, sandbox_id: Uuid, pid: i32) -> Result<(), SandboxError> {
        let listener = listen_in(pid).map_err(|e| SandboxError::Sys {
            call: format!("package index proxy in sandbox {sandbox_id}"),
            source: e,
        })?;
        let index = self.index.clone();
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| SandboxError::Sys {
            call: "package index proxy".into(),
            source: std::io::Error::other(e),
        })?;
        let task = runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else {
                return;
            };
            let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok((conn, _)) = listener.accept().await else {
                    continue;
                };
                let Ok(permit) = limit.clone().try_acquire_owned() else {
                    continue;
                };
                let index = index.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, &index).await;
                    drop(permit);
                });
            }
        });
        if let Some(old) = lock(&self.serving).insert(sandbox_id, task.abort_handle()) {
            old.abort();
        }
        Ok(())
    }

    /// Stops the proxy of sandbox `sandbox_id`, if it has one.
    pub(super) fn stop(&self, sandbox_id: Uuid) {
        if let Some(task) = lock(&self.serving).remove(&sandbox_id) {
            task.abort();
        }
    }
}

/// A listener on `127.0.0.1:PROXY_PORT` in the network namespace of process `pid`.
fn listen_in(pid: i32) -> std::io::Result<StdListener> {
    let netns = std::fs::File::open(format!("/proc/{pid}/ns/net"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns on a descriptor this function holds open; it changes only this
                // thread's network namespace, and the thread ends right after the bind.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let listener = StdListener::bind(("127.0.0.1", PROXY_PORT))?;
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("proxy thread panicked")))
    })
}

/// Serves one proxy connection: `CONNECT host:port` or `GET http://host/…` to an admitted
/// host, else 403.
async fn serve(mut conn: TcpStream, index: &PackageIndex) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = tokio::time::timeout(Duration::from_secs(30), conn.read(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("request head timed out"))??;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            return refuse(&mut conn, "431 Request Header Fields Too Large").await;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let mut parts = text.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let authority = match method {
        "CONNECT" => target.to_owned(),
        "GET" | "HEAD" => match target.strip_prefix("http://") {
            Some(rest) => {
                let host = rest.split('/').next().unwrap_or_default();
                if host.contains(':') {
                    host.to_owned()
                } else {
                    format!("{host}:80")
                }
            }
            None => return refuse(&mut conn, "400 Bad Request").await,
        },
        _ => return refuse(&mut conn, "405 Method Not Allowed").await,
    };
    if !index.admits(&authority) {
        return refuse(&mut conn, "403 Forbidden").await;
    }
    let mut upstream =
        match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&authority)).await {
            Ok(Ok(stream)) => stream,
            _ => return refuse(&mut conn, "502 Bad Gateway").await,
        };
    if method == "CONNECT" {
        conn.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        upstream.write_all(&head[end..]).await?;
    } else {
        // Origin servers expect `GET /path`, not the proxy form `GET http://host/path`.
        let path_start = target
            .strip_prefix("http://")
            .and_then(|rest| rest.find('/').map(|i| target.len() - rest.len() + i));
        let path = path_start.map_or("/", |i| &target[i..]);
        let version = parts.next().unwrap_or("HTTP/1.1");
        // One request per connection: each request's host is checked.
        let headers: String = text
            .split("\r\n")
            .skip(1)
            .filter(|h| !h.is_empty())
            .filter(|h| {
                let name = h.split(':').next().unwrap_or_default().trim();
                !name.eq_ignore_ascii_case("connection")
                    && !name.eq_ignore_ascii_case("proxy-connection")
            })
            .map(|h| format!("{h}\r\n"))
            .collect();
        upstream
            .write_all(
                format!("{method} {path} {version}\r\n{headers}connection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        tokio::io::copy(&mut upstream, &mut conn).await?;
        return conn.shutdown().await;
    }
    tokio::io::copy_bidirectional(&mut conn, &mut upstream).await?;
    Ok(())
}

async fn refuse(conn: &mut TcpStream, status: &str) -> std::io::Result<()> {
    let body = "the package index proxy reaches only the operator's package index\n";
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(reply.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_index_hosts_are_admitted() {
        let index = PackageIndex::new(
            "https://pypi.org/simple/",
            &["files.pythonhosted.org".to_owned()],
        )
        .unwrap();
        assert!(index.admits("pypi.org:443"));
        assert!(index.admits("FILES.pythonhosted.org:443"));
        assert!(!index.admits("evil.example:443"));
        assert!(!index.admits("pypi.org.evil.example:443"));
        assert!(!index.admits("pypi.org:22"));
        let local = PackageIndex::new("http://203.0.113.12:8080/simple/", &[]).unwrap();
        assert!(local.admits("203.0.113.12:8080"));
        assert!(!local.admits("203.0.113.13:8080"));
        assert!(PackageIndex::new("ftp://x/", &[]).is_err());
        assert_eq!(
            local.env().last().unwrap(),
            &(
                "PIP_TRUSTED_HOST".to_owned(),
                "203.0.113.12:8080".to_owned()
            )
        );
    }
}
