//! The HS256 secret: configured, or kept in `{data_dir}/jwt-secret` and created on first start.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::RngCore;

use super::{AuthError, SECRET_FILE};

/// Where the secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Given in the configuration.
    Configured,
    /// Read from, or just written to, the data directory.
    DataDir {
        /// The secret file.
        path: PathBuf,
        /// Whether this start created it.
        created: bool,
    },
}

/// The HS256 signing secret. Its `Debug` output does not show the bytes.
#[derive(Clone)]
pub struct JwtSecret {
    bytes: Vec<u8>,
    source: SecretSource,
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtSecret")
            .field("bytes", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

impl JwtSecret {
    /// The secret's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where it came from.
    pub fn source(&self) -> &SecretSource {
        &self.source
    }
}

/// The configured secret if there is one, else the data directory's (created if missing).
pub fn resolve_secret(configured: Option<&str>, data_dir: &Path) -> Result<JwtSecret, AuthError> {
    match configured {
        Some("") => Err(AuthError::EmptySecret),
        Some(secret) => Ok(JwtSecret {
            bytes: secret.as_bytes().to_vec(),
            source: SecretSource::Configured,
        }),
        None => load_or_create_secret(data_dir),
    }
}

/// The configured secret, or the one in `{data_dir}/jwt-secret`; never creates one.
pub fn load_secret(configured: Option<&str>, data_dir: &Path) -> Result<JwtSecret, AuthError> {
    if configured.is_some() {
        return resolve_secret(configured, data_dir);
    }
    let path = data_dir.join(SECRET_FILE);
    read_secret(&path)?.ok_or(AuthError::NoSecret(path))
}

/// Reads `{data_dir}/jwt-secret`, or creates it (32 random bytes as hex, mode 0600) if it
/// does not exist. Creation is atomic: a concurrent start reads the winner's secret.
pub fn load_or_create_secret(data_dir: &Path) -> Result<JwtSecret, AuthError> {
    let path = data_dir.join(SECRET_FILE);
    if let Some(secret) = read_secret(&path)? {
        return Ok(secret);
    }
    let io_err = |op: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| AuthError::Io { op, path, source }
    };
    fs::create_dir_all(data_dir).map_err(io_err("creating", data_dir))?;
    let mut raw = [0_u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();

    // Write a private temporary file, then hard-link it into place: the link fails if
    // another process got there first, and readers never see a partial file.
    let tmp = data_dir.join(format!(".{SECRET_FILE}.{}.tmp", std::process::id()));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &tmp)(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err("creating", &tmp))?;
    file.write_all(format!("{hex}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("writing", &tmp))?;
    drop(file);
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            if let Ok(dir) = fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            Ok(JwtSecret {
                bytes: hex.into_bytes(),
                source: SecretSource::DataDir {
                    path,
                    created: true,
                },
            })
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_secret(&path)?
            .ok_or_else(|| io_err("reading", &path)(io::ErrorKind::NotFound.into())),
        Err(e) => Err(io_err("linking", &path)(e)),
    }
}

/// Reads an existing secret file; `None` if there is none.
fn read_secret(path: &Path) -> Result<Option<JwtSecret>, AuthError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(AuthError::Io {
                op: "reading",
                path: path.to_owned(),
                source,
            });
        }
    };
    let secret = text.trim();
    if secret.is_empty() {
        return Err(AuthError::EmptySecretFile(path.to_owned()));
    }
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the JWT secret file is readable by other users; chmod 600 it");
    }
    Ok(Some(JwtSecret {
        bytes: secret.as_bytes().to_vec(),
        source: SecretSource::DataDir {
            path: path.to_owned(),
            created: false,
        },
    }))
}
