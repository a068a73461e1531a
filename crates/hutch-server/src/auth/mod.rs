//! Bearer tokens: the HS256 secret, public keys, minting tokens, and checking them on every
//! `/v1` request.
//!
//! A token is a JWT. Its claims are `sub` (the tenant; required, non-empty), `exp` (required),
//! `nbf` (optional) and `admin` (optional boolean; an admin sees every tenant's sessions).
//! Expiry and `nbf` are checked with 30 seconds of leeway. When an issuer or an audience is
//! configured, `iss` or `aud` is required and must match.
//!
//! Three algorithms can be accepted, each only with its own kind of key:
//!
//! - HS256, always, with the server's secret;
//! - RS256, with an RSA public key from the PEM file or the JWKS file;
//! - ES256, with a P-256 public key from the PEM file or the JWKS file.
//!
//! The algorithm a token names picks the keys it is checked against, so an HS256 token is only
//! ever checked against the secret (never against public key bytes), and an algorithm no key
//! was configured for answers 401, as do `alg: none`, missing, malformed, wrongly signed,
//! expired and not-yet-valid tokens. A token's `kid` picks the JWKS key of that id; a `kid`
//! that no key has falls back to the keys without an id (the PEM key, the secret).
//!
//! The secret is either configured (`HUTCH_JWT_SECRET`, used as its UTF-8 bytes) or kept in
//! `{data_dir}/jwt-secret`: 32 random bytes written as 64 hex characters with mode 0600, created
//! atomically on first start and reused afterwards. The file's trimmed text is the secret, so
//! `HUTCH_JWT_SECRET=$(cat DATA/jwt-secret)` signs the same tokens.

mod keys;
mod secret;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::error::ApiError;

use keys::{load_jwks, load_pem_key};
pub use secret::{JwtSecret, SecretSource, load_or_create_secret, load_secret, resolve_secret};

/// Name of the secret file inside the data directory.
pub const SECRET_FILE: &str = "jwt-secret";
/// Tenant of the token printed at start-up.
pub const STARTUP_TOKEN_SUB: &str = "default";
/// Lifetime of the token printed at start-up.
pub const STARTUP_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;
/// Shortest RSA modulus accepted for RS256, in bits.
pub const RSA_MIN_BITS: usize = 2048;

/// Why a secret could not be had or a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Reading or writing the secret file failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The secret file exists but is empty.
    #[error("the JWT secret file {0} is empty")]
    EmptySecretFile(PathBuf),
    /// No secret is configured and the data directory holds none.
    #[error(
        "no JWT secret: {0} does not exist (start `hutch serve` with this data directory once, or configure a secret)"
    )]
    NoSecret(PathBuf),
    /// The configured secret is empty.
    #[error("the configured JWT secret is empty")]
    EmptySecret,
    /// A token must name a tenant.
    #[error("a token's subject (the tenant) must not be empty")]
    EmptySubject,
    /// Signing failed.
    #[error("signing a token")]
    Sign(#[source] jsonwebtoken::errors::Error),
    /// The public key file holds no key tokens can be checked with.
    #[error("{path} holds no usable public key: {reason}")]
    PublicKey {
        /// The PEM file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWKS file cannot be read as a set of usable keys.
    #[error("{path} is not a usable JWKS file: {reason}")]
    Jwks {
        /// The JWKS file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured issuer or audience is empty.
    #[error("the configured JWT {0} is empty")]
    EmptyClaim(&'static str),
}

/// The claims of a hutch token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant. (Defaults only so that a missing claim is reported by name.)
    #[serde(default)]
    pub sub: String,
    /// Expiry, unix seconds. (Defaults only so that a missing claim is reported by name.)
    #[serde(default)]
    pub exp: u64,
    /// Not valid before, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Whether the holder sees every tenant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
}

/// Registered claims a minted token carries besides `sub`, `exp` and `admin`: the server
/// requires them when it is configured with an issuer or an audience.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintOptions {
    /// The `iss` claim.
    pub issuer: Option<String>,
    /// The `aud` claim.
    pub audience: Option<String>,
}

/// The claims as minted: [`Claims`] plus `iss` and `aud` when given.
#[derive(Serialize)]
struct MintedClaims<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 token for tenant `sub`, valid for `ttl` from now.
pub fn mint_token(
    secret: &[u8],
    sub: &str,
    ttl: Duration,
    admin: bool,
) -> Result<String, AuthError> {
    mint_token_with(secret, sub, ttl, admin, &MintOptions::default())
}

/// Mints an HS256 token for tenant `sub`, valid for `ttl` from now, with `iss` and `aud` from
/// `options`.
pub fn mint_token_with(
    secret: &[u8],
    sub: &str,
    ttl: Duration,
    admin: bool,
    options: &MintOptions,
) -> Result<String, AuthError> {
    if sub.is_empty() {
        return Err(AuthError::EmptySubject);
    }
    let claims = Claims {
        sub: sub.to_owned(),
        exp: jsonwebtoken::get_current_timestamp().saturating_add(ttl.as_secs()),
        nbf: None,
        admin,
    };
    let minted = MintedClaims {
        claims: &claims,
        iss: options.issuer.as_deref(),
        aud: options.audience.as_deref(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &minted,
        &EncodingKey::from_secret(secret),
    )
    .map_err(AuthError::Sign)
}

/// Who is calling: the tenant named by the token, and whether it is an admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The token's `sub`.
    pub(crate) tenant: String,
    /// The token's `admin` claim.
    pub(crate) admin: bool,
}

impl Caller {
    /// Whether this caller may see a session of `tenant`.
    pub(crate) fn may_see(&self, tenant: &str) -> bool {
        self.admin || self.tenant == tenant
    }
}

/// What tokens are checked with besides the HS256 secret, and which claims they must carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenPolicy {
    /// A PEM file holding one RSA (RS256) or P-256 (ES256) public key.
    pub public_key: Option<PathBuf>,
    /// A JWKS file (RFC 7517) of RSA and P-256 public keys; a token's `kid` picks one.
    pub jwks: Option<PathBuf>,
    /// When set, tokens need an `iss` claim equal to it.
    pub issuer: Option<String>,
    /// When set, tokens need an `aud` claim naming it.
    pub audience: Option<String>,
}

/// One key tokens may be signed with.
struct VerifyKey {
    /// The JWKS `kid`; `None` for the secret and the PEM key.
    kid: Option<String>,
    /// The one algorithm this key checks.
    alg: Algorithm,
    /// The key.
    key: DecodingKey,
}

/// Algorithms a token may name, each with its own kind of key.
const ALGORITHMS: [Algorithm; 3] = [Algorithm::HS256, Algorithm::RS256, Algorithm::ES256];

/// Checks tokens against the secret and the configured public keys.
pub(crate) struct Verifier {
    keys: Vec<VerifyKey>,
    /// The validation rules of each accepted algorithm.
    validations: Vec<(Algorithm, Validation)>,
    /// The accepted algorithms, for messages: `HS256, RS256`.
    accepted: String,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.keys.len())
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier accepting HS256 tokens signed with `secret`, and nothing else.
    #[cfg(test)]
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self::with_keys(secret, Vec::new(), None, None)
    }

    /// A verifier accepting HS256 tokens signed with `secret`, and RS256 or ES256 tokens
    /// signed with the keys `policy` names, requiring its issuer and audience.
    pub(crate) fn from_policy(secret: &[u8], policy: &TokenPolicy) -> Result<Self, AuthError> {
        for (name, value) in [("issuer", &policy.issuer), ("audience", &policy.audience)] {
            if value.as_deref() == Some("") {
                return Err(AuthError::EmptyClaim(name));
            }
        }
        let mut keys = Vec::new();
        if let Some(path) = &policy.public_key {
            keys.push(load_pem_key(path)?);
        }
        if let Some(path) = &policy.jwks {
            keys.extend(load_jwks(path)?);
        }
        Ok(Self::with_keys(
            secret,
            keys,
            policy.issuer.as_deref(),
            policy.audience.as_deref(),
        ))
    }

    fn with_keys(
        secret: &[u8],
        public: Vec<VerifyKey>,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Self {
        let mut keys = vec![VerifyKey {
            kid: None,
            alg: Algorithm::HS256,
            key: DecodingKey::from_secret(secret),
        }];
        keys.extend(public);
        let validations: Vec<(Algorithm, Validation)> = ALGORITHMS
            .into_iter()
            .filter(|alg| keys.iter().any(|k| k.alg == *alg))
            .map(|alg| (alg, validation(alg, issuer, audience)))
            .collect();
        let accepted = validations
            .iter()
            .map(|(alg, _)| format!("{alg:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Verifier {
            keys,
            validations,
            accepted,
        }
    }

    /// Checks an `Authorization` header value.
    pub(crate) fn check(&self, header: Option<&[u8]>) -> Result<Caller, ApiError> {
        let header = header.ok_or_else(|| {
            ApiError::Unauthorized(
                "missing Authorization header; send `Authorization: Bearer <token>`".into(),
            )
        })?;
        let header = std::str::from_utf8(header)
            .map_err(|_| ApiError::Unauthorized("Authorization header is not text".into()))?;
        let token = match header.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => {
                return Err(ApiError::Unauthorized(
                    "Authorization header must use the Bearer scheme".into(),
                ));
            }
        };
        let refuse = |kind: &ErrorKind| ApiError::Unauthorized(self.message(kind));
        let head = jsonwebtoken::decode_header(token).map_err(|e| refuse(e.kind()))?;
        let Some((_, validation)) = self.validations.iter().find(|(alg, _)| *alg == head.alg)
        else {
            return Err(refuse(&ErrorKind::InvalidAlgorithm));
        };
        // The token's `kid` picks the JWKS key of that id; an id no key has falls back to the
        // keys without one. Either way only keys of the token's own algorithm are tried.
        let known_kid = head
            .kid
            .as_deref()
            .filter(|kid| self.keys.iter().any(|k| k.kid.as_deref() == Some(*kid)));
        let candidates: Vec<&VerifyKey> = self
            .keys
            .iter()
            .filter(|k| k.alg == head.alg)
            .filter(|k| match (&head.kid, known_kid) {
                (None, _) => true,
                (Some(_), Some(kid)) => k.kid.as_deref() == Some(kid),
                (Some(_), None) => k.kid.is_none(),
            })
            .collect();
        if candidates.is_empty() {
            return Err(ApiError::Unauthorized(match known_kid {
                None => "token's key id (`kid`) names no configured key".to_owned(),
                Some(_) => format!(
                    "the key the token's `kid` names does not check {:?} tokens",
                    head.alg
                ),
            }));
        }
        let mut last = ErrorKind::InvalidSignature;
        for candidate in candidates {
            match jsonwebtoken::decode::<Claims>(token, &candidate.key, validation) {
                Ok(data) => {
                    if data.claims.sub.is_empty() {
                        return Err(ApiError::Unauthorized(
                            "token's `sub` claim (the tenant) must not be empty".into(),
                        ));
                    }
                    return Ok(Caller {
                        tenant: data.claims.sub,
                        admin: data.claims.admin,
                    });
                }
                // Another key of the same algorithm may have signed it.
                Err(e) if is_key_mismatch(e.kind()) => last = e.into_kind(),
                Err(e) => return Err(refuse(e.kind())),
            }
        }
        Err(refuse(&last))
    }

    /// A message saying why a token was refused, without echoing the token.
    fn message(&self, kind: &ErrorKind) -> String {
        token_error_message(kind, &self.accepted)
    }
}

/// Whether a decode failed because this key did not sign the token (so another may have).
fn is_key_mismatch(kind: &ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidSignature
            | ErrorKind::InvalidKeyFormat
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidEcdsaKey
    )
}

/// The rules every token of `alg` must pass.
fn validation(alg: Algorithm, issuer: Option<&str>, audience: Option<&str>) -> Validation {
    let mut validation = Validation::new(alg);
    validation.algorithms = vec![alg];
    validation.leeway = LEEWAY_SECS;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    match audience {
        Some(audience) => {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            required.push("aud");
        }
        None => validation.validate_aud = false,
    }
    if let Some(issuer) = issuer {
        validation.set_issuer(&[issuer]);
        required.push("iss");
    }
    validation.set_required_spec_claims(&required);
    validation
}

/// A message saying why a token was refused, without echoing the token.
fn token_error_message(kind: &ErrorKind, accepted: &str) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "token has expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf is in the future)".into(),
        ErrorKind::InvalidSignature => "token signature is invalid".into(),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            format!("token algorithm is not accepted; accepted: {accepted}")
        }
        ErrorKind::InvalidIssuer => "token's `iss` claim is not the accepted issuer".into(),
        ErrorKind::InvalidAudience => "token's `aud` claim does not name this server".into(),
        ErrorKind::MissingRequiredClaim(claim) => {
            format!("token lacks the required `{claim}` claim")
        }
        ErrorKind::InvalidClaimFormat(claim) => format!("token's `{claim}` claim is malformed"),
        ErrorKind::InvalidToken
        | ErrorKind::Json(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Utf8(_) => format!(
            "token is malformed, or its header names an algorithm not accepted (accepted: {accepted})"
        ),
        _ => "token is invalid".into(),
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // The rate limiter authenticates first and leaves the caller here.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        let header = parts.headers.get(AUTHORIZATION).map(|v| v.as_bytes());
        state.verifier.check(header)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn minted_tokens_verify() {
        let token = mint_token(b"s3cret", "alice", Duration::from_secs(60), true).unwrap();
        let caller = Verifier::new(b"s3cret")
            .check(Some(format!("Bearer {token}").as_bytes()))
            .unwrap();
        assert_eq!(
            caller,
            Caller {
                tenant: "alice".into(),
                admin: true
            }
        );
        assert!(mint_token(b"s3cret", "", Duration::from_secs(60), false).is_err());
    }

    #[test]
    fn scheme_is_case_insensitive_but_required() {
        let token = mint_token(b"k", "a", Duration::from_secs(60), false).unwrap();
        let verifier = Verifier::new(b"k");
        assert!(
            verifier
                .check(Some(format!("bearer {token}").as_bytes()))
                .is_ok()
        );
        assert!(verifier.check(Some(token.as_bytes())).is_err());
        assert!(
            verifier
                .check(Some(format!("Basic {token}").as_bytes()))
                .is_err()
        );
        assert!(verifier.check(None).is_err());
    }

    #[test]
    fn secret_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(dir.path()).unwrap();
        let path = dir.path().join(SECRET_FILE);
        assert_eq!(
            first.source(),
            &SecretSource::DataDir {
                path: path.clone(),
                created: true
            }
        );
        assert_eq!(first.as_bytes().len(), 64);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let second = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(second.as_bytes(), first.as_bytes());
        assert_eq!(
            second.source(),
            &SecretSource::DataDir {
                path,
                created: false
            }
        );
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn configured_secret_wins() {
        let dir = tempfile::tempdir().unwrap();
        let secret = resolve_secret(Some("abc"), dir.path()).unwrap();
        assert_eq!(secret.as_bytes(), b"abc");
        assert_eq!(secret.source(), &SecretSource::Configured);
        assert!(!dir.path().join(SECRET_FILE).exists());
        assert!(resolve_secret(Some(""), dir.path()).is_err());
        assert!(!format!("{secret:?}").contains("abc"));
    }
}
