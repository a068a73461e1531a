//! Signed preview links: a token that opens one port of one session until it expires.
//!
//! A token is `{payload}.{mac}`, both base64url without padding: the payload is the JSON
//! `{"s": session id, "t": tenant, "p": port, "e": expiry in unix seconds}` and the mac is
//! HMAC-SHA256 of the payload's base64 text under a key derived from the server's token
//! secret (`SHA-256("hutch preview link v1" ‖ 0 ‖ secret)`), so a link is never a bearer token nor a
//! bearer token a link. Rotating the secret revokes every link, as it revokes every token.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Label mixed into the secret to make the links' own key.
const KEY_LABEL: &[u8] = b"hutch preview link v1";
/// Longest token accepted, in bytes (a tenant name of a few hundred bytes fits).
pub(crate) const TOKEN_MAX_BYTES: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// What a link grants: one port of one session, until `expires` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Grant {
    /// The session.
    #[serde(rename = "s")]
    pub(crate) session: Uuid,
    /// The session's tenant, checked again on every use.
    #[serde(rename = "t")]
    pub(crate) tenant: String,
    /// The port.
    #[serde(rename = "p")]
    pub(crate) port: u16,
    /// Expiry, unix seconds.
    #[serde(rename = "e")]
    pub(crate) expires: u64,
}

/// Why a token does not open anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LinkError {
    /// Well signed, but past its expiry.
    #[error("this preview link expired at unix time {expired}; ask for a new one")]
    Expired {
        /// When it expired, unix seconds.
        expired: u64,
    },
    /// Malformed, or its signature does not match.
    #[error("this preview link is not valid: {0}")]
    Invalid(&'static str),
}

/// Signs and checks links with the key derived from the server's secret.
#[derive(Clone)]
pub(crate) struct LinkSigner {
    /// The derived key, zero-padded to SHA-256's block size as HMAC pads a short key.
    key: [u8; 64],
}

impl std::fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkSigner").finish_non_exhaustive()
    }
}

impl LinkSigner {
    /// A signer whose key is derived from the server's token `secret`.
    pub(crate) fn new(secret: &[u8]) -> Self {
        Self::with_label(KEY_LABEL, secret)
    }

    /// A signer whose key is derived from `secret` under `label`: signers of different
    /// labels never accept each other's tokens (the console's login links use their own).
    pub(crate) fn with_label(label: &[u8], secret: &[u8]) -> Self {
        let derived = Sha256::new()
            .chain_update(label)
            .chain_update([0])
            .chain_update(secret)
            .finalize();
        let mut key = [0; 64];
        key[..32].copy_from_slice(&derived);
        LinkSigner { key }
    }

    /// The token of `grant`.
    pub(crate) fn sign(&self, grant: &Grant) -> String {
        self.sign_payload(grant)
    }

    /// The token of any payload: its JSON, base64url, a dot, and the tag of that text.
    pub(crate) fn sign_payload<T: Serialize>(&self, payload: &T) -> String {
        // Serialising a struct of plain fields cannot fail.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
        format!("{payload}.{}", self.tag(payload.as_bytes()))
    }

    /// The HMAC-SHA256 of `data` under the derived key, base64url.
    pub(crate) fn tag(&self, data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(self.mac().chain_update(data).finalize().into_bytes())
    }

    /// The grant of `token` if its signature matches and it has not expired at `now` (unix
    /// seconds).
    pub(crate) fn verify(&self, token: &str, now: u64) -> Result<Grant, LinkError> {
        let grant: Grant = self.open(token)?;
        if grant.expires <= now {
            return Err(LinkError::Expired {
                expired: grant.expires,
            });
        }
        Ok(grant)
    }

    /// The payload of `token` if its signature matches (its expiry is the caller's to check).
    pub(crate) fn open<T: DeserializeOwned>(&self, token: &str) -> Result<T, LinkError> {
        if token.len() > TOKEN_MAX_BYTES {
            return Err(LinkError::Invalid("too long"));
        }
        let (payload, tag) = token
            .split_once('.')
            .ok_or(LinkError::Invalid("malformed"))?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| LinkError::Invalid("malformed"))?;
        self.mac()
            .chain_update(payload.as_bytes())
            .verify_slice(&tag)
            .map_err(|_| LinkError::Invalid("wrong signature"))?;
        URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or(LinkError::Invalid("malformed"))
    }

    /// A fresh HMAC-SHA256 under the derived key.
    fn mac(&self) -> HmacSha256 {
        <HmacSha256 as Mac>::new(&self.key.into())
    }
}

/// Now, in unix seconds, on the server's clock (see [`crate::clock`]): a link lives as long
/// as the session it opens, whatever the system clock does meanwhile.
pub(crate) fn now_unix() -> u64 {
    u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            session: Uuid::from_u128(7),
            tenant: "alice".into(),
            port: 8000,
            expires: 1_000,
        }
    }

    #[test]
    fn a_signed_link_opens_until_it_expires() {
        let signer = LinkSigner::new(b"secret");
        let token = signer.sign(&grant());
        assert_eq!(signer.verify(&token, 999).unwrap(), grant());
        assert_eq!(
            signer.verify(&token, 1_000).unwrap_err(),
            LinkError::Expired { expired: 1_000 }
        );
    }

    #[test]
    fn forged_and_foreign_links_are_invalid() {
        let signer = LinkSigner::new(b"secret");
        let token = signer.sign(&grant());
        let other = LinkSigner::new(b"another secret").sign(&grant());
        assert_eq!(
            signer.verify(&other, 0).unwrap_err(),
            LinkError::Invalid("wrong signature")
        );
        // The same signature over a payload naming another port.
        let (_, tag) = token.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Grant {
                port: 22,
                ..grant()
            })
            .unwrap(),
        );
        assert_eq!(
            signer
                .verify(&format!("{forged_payload}.{tag}"), 0)
                .unwrap_err(),
            LinkError::Invalid("wrong signature")
        );
        for garbage in ["", "abc", "a.b", &"x".repeat(2_000)] {
            assert!(matches!(
                signer.verify(garbage, 0),
                Err(LinkError::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_bearer_token_is_not_a_link() {
        let secret = b"secret";
        let bearer =
            crate::auth::mint_token(secret, "alice", std::time::Duration::from_secs(60), false)
                .unwrap();
        assert!(LinkSigner::new(secret).verify(&bearer, 0).is_err());
    }
}
