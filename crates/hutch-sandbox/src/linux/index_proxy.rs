//! The package index proxy: the operator's package indexes (a Python index, an npm
//! registry), reachable from every session (with or without network) and nothing else
//! through it.
//!
//! With `--pip-index-url` or `--npm-registry`, each claimed sandbox gets a TCP listener on
//! `127.0.0.1:3141` of its own network namespace. The socket is made there by a short-lived
//! thread that enters the namespace (a socket keeps the namespace it was made in), and served
//! by the server: an HTTP forward proxy that admits `CONNECT` and plain `GET`s to the indexes'
//! hosts only, and answers 403 to anything else. pip finds it through `PIP_INDEX_URL` and
//! `PIP_PROXY` in the session's environment, npm through `npm_config_registry` and
//! `npm_config_proxy` / `npm_config_https_proxy`. A session without network thus reaches the
//! indexes and nothing more; a session with network reaches them either way.

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

/// Which installer a package index serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// A Python package index (PEP 503 simple index), for pip.
    Pip,
    /// An npm registry, for npm.
    Npm,
}

/// One of the operator's package indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageIndex {
    /// Which installer uses it.
    pub kind: IndexKind,
    /// The index URL the installer uses (`https://mirror.example/simple/`,
    /// `https://registry.npmjs.org/`).
    pub url: String,
    /// Hosts (`host` or `host:port`) the proxy admits: the index's, and those its pages link
    /// to (`files.pythonhosted.org` for PyPI).
    pub hosts: Vec<String>,
}

impl PackageIndex {
    /// The Python index at `url`, plus `extra_hosts`. Fails on a URL that is not
    /// `http(s)://host…`.
    pub fn new(url: &str, extra_hosts: &[String]) -> Result<PackageIndex, String> {
        PackageIndex::of_kind(IndexKind::Pip, url, extra_hosts)
    }

    /// The npm registry at `url`. Fails on a URL that is not `http(s)://host…`.
    pub fn npm(url: &str) -> Result<PackageIndex, String> {
        PackageIndex::of_kind(IndexKind::Npm, url, &[])
    }

    fn of_kind(kind: IndexKind, url: &str, extra_hosts: &[String]) -> Result<PackageIndex, String> {
        let flag = match kind {
            IndexKind::Pip => "--pip-index-url",
            IndexKind::Npm => "--npm-registry",
        };
        let host = host_of(url).ok_or_else(|| {
            format!("{flag} {url:?} is not an http:// or https:// URL with a host")
        })?;
        let mut hosts = vec![host];
        hosts.extend(extra_hosts.iter().map(|h| h.to_ascii_lowercase()));
        Ok(PackageIndex {
            kind,
            url: url.to_owned(),
            hosts,
        })
    }

    /// The environment that points the index's installer at it through the proxy.
    pub fn env(&self) -> Vec<(String, String)> {
        let proxy = format!("http://127.0.0.1:{PROXY_PORT}");
        match self.kind {
            IndexKind::Pip => {
                let mut env = vec![
                    ("PIP_INDEX_URL".to_owned(), self.url.clone()),
                    ("PIP_PROXY".to_owned(), proxy),
                ];
                if self.url.starts_with("http://") {
                    env.push(("PIP_TRUSTED_HOST".to_owned(), self.hosts.join(" ")));
                }
                env
            }
            // npm's own settings, as environment variables (`npm_config_<name>`); audit and
            // funding requests go to endpoints a mirror may not have, so they are off.
            IndexKind::Npm => vec![
                ("npm_config_registry".to_owned(), self.url.clone()),
                ("npm_config_proxy".to_owned(), proxy.clone()),
                ("npm_config_https_proxy".to_owned(), proxy),
                ("npm_config_audit".to_owned(), "false".to_owned()),
                ("npm_config_fund".to_owned(), "false".to_owned()),
                ("npm_config_update_notifier".to_owned(), "false".to_owned()),
            ],
        }
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

/// The operator's package indexes, as one proxy serves them.
#[derive(Debug)]
struct Indexes(Vec<PackageIndex>);

impl Indexes {
    /// Whether one of the indexes admits `authority`.
    fn admit(&self, authority: &str) -> bool {
        self.0.iter().any(|index| index.admits(authority))
    }
}

/// The proxies of the sandboxes of one server.
pub(super) struct IndexProxies {
    indexes: Arc<Indexes>,
    serving: Mutex<HashMap<Uuid, tokio::task::AbortHandle>>,
}

impl IndexProxies {
    /// Proxies to `indexes`; `None` when there is none.
    pub(super) fn new(indexes: Vec<PackageIndex>) -> Option<IndexProxies> {
        (!indexes.is_empty()).then(|| IndexProxies {
            indexes: Arc::new(Indexes(indexes)),
            serving: Mutex::new(HashMap::new()),
        })
    }

    /// The environment sessions get.
    pub(super) fn env(&self) -> Vec<(String, String)> {
        self.indexes.0.iter().flat_map(PackageIndex::env).collect()
    }

    /// Starts the proxy of sandbox `sandbox_id`, whose agent is `pid` (its `lo` must be up).
    /// Needs a tokio runtime context.
    pub(super) fn start(&self, sandbox_id: Uuid, pid: i32) -> Result<(), SandboxError> {
        let listener = listen_in(pid).map_err(|e| SandboxError::Sys {
            call: format!("package index proxy in sandbox {sandbox_id}"),
            source: e,
        })?;
        let indexes = self.indexes.clone();
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
                let indexes = indexes.clone();
                tokio::spawn(async move {
                    let _ = serve(conn, &indexes).await;
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
async fn serve(mut conn: TcpStream, indexes: &Indexes) -> std::io::Result<()> {
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
    if !indexes.admit(&authority) {
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
    let body = "the package index proxy reaches only the operator's package indexes\n";
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
        assert!(PackageIndex::npm("registry.npmjs.org").is_err());
        assert_eq!(
            local.env().last().unwrap(),
            &(
                "PIP_TRUSTED_HOST".to_owned(),
                "203.0.113.12:8080".to_owned()
            )
        );
    }

    #[test]
    fn npm_is_pointed_at_its_registry_through_the_proxy() {
        let npm = PackageIndex::npm("http://203.0.113.12/npm/").unwrap();
        let env: HashMap<String, String> = npm.env().into_iter().collect();
        assert_eq!(env["npm_config_registry"], "http://203.0.113.12/npm/");
        assert_eq!(env["npm_config_proxy"], "http://127.0.0.1:3141");
        assert_eq!(env["npm_config_https_proxy"], "http://127.0.0.1:3141");
        let both = Indexes(vec![
            PackageIndex::new("https://pypi.org/simple/", &[]).unwrap(),
            npm,
        ]);
        assert!(both.admit("pypi.org:443"));
        assert!(both.admit("203.0.113.12:80"));
        assert!(!both.admit("registry.npmjs.org:443"));
    }
}
