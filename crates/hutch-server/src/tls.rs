//! TLS on the listener: a certificate chain and private key from PEM files ([`Tls`]), and a
//! listener for [`axum::serve`] that completes handshakes in the background ([`TlsListener`]),
//! so that a slow or silent client never holds up the others.
//!
//! rustls with the `ring` provider; TLS 1.2 and 1.3, ALPN `http/1.1` (the server speaks
//! HTTP/1.1 only; WebSockets upgrade from it as over plain TCP).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// Most handshakes in progress at once; further connections wait in the kernel's backlog.
const HANDSHAKES_MAX: usize = 256;

/// How long a client may take to complete its handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the certificate or key cannot serve TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or holds a malformed PEM block.
    #[error("reading the TLS certificate {path}: {reason}")]
    Certificate {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error(
        "no certificate in {path}: expected PEM blocks `-----BEGIN CERTIFICATE-----`, the server's first"
    )]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file could not be read or holds no private key.
    #[error(
        "reading the TLS private key {path}: {reason} (expected one PEM private key: PKCS#8, PKCS#1 RSA or SEC1 EC)"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair, for example because the key does not match the certificate.
    #[error("the TLS certificate and key cannot be used together: {0}")]
    Config(#[source] rustls::Error),
}

/// A server certificate chain and its private key, ready to accept TLS connections.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").finish_non_exhaustive()
    }
}

impl Tls {
    /// Loads the PEM certificate chain in `cert` (the server's certificate first, then any
    /// intermediates) and the PEM private key in `key`.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let certificate_error = |reason: String| TlsError::Certificate {
            path: cert.to_owned(),
            reason,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| certificate_error(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| certificate_error(e.to_string()))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: cert.to_owned(),
            });
        }
        let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
            path: key.to_owned(),
            reason: e.to_string(),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// A listener of TLS connections for [`axum::serve`]: a background task accepts TCP
/// connections and runs their handshakes concurrently (at most [`HANDSHAKES_MAX`], each within
/// [`HANDSHAKE_TIMEOUT`]); `accept` hands out the connections whose handshake succeeded.
pub(crate) struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    accepting: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting TLS connections on `listener`. Needs a tokio runtime.
    pub(crate) fn new(listener: TcpListener, tls: &Tls) -> io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(HANDSHAKES_MAX);
        let accepting = tokio::spawn(accept_forever(listener, tls.acceptor.clone(), tx));
        Ok(TlsListener {
            local_addr,
            ready,
            accepting,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task ends only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections on `listener` and sends each one whose handshake succeeds to
/// `ready`.
async fn accept_forever(
    mut listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES_MAX));
    loop {
        let Ok(permit) = Arc::clone(&handshakes).acquire_owned().await else {
            return;
        };
        // Retries and backs off on accept errors (such as running out of descriptors).
        let (stream, peer) = axum::serve::Listener::accept(&mut listener).await;
        // Small frames must not wait for the peer's delayed ACK, as on plain connections.
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "cannot set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
            drop(permit);
            match handshake {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn files_that_are_not_a_certificate_and_key_are_refused_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = write(dir.path(), "empty.pem", "");
        let garbage = write(
            dir.path(),
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        );

        let err = Tls::from_pem_files(&missing, &empty).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let err = Tls::from_pem_files(&empty, &empty).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");

        let err = Tls::from_pem_files(&garbage, &empty).unwrap_err();
        assert!(matches!(err, TlsError::Certificate { .. }), "{err}");
    }
}
