//! Public keys tokens may be signed with: one PEM key (RSA or P-256) and the RSA and P-256
//! keys of a JWKS file, each checked and turned into a [`VerifyKey`] of one algorithm.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::DecodePublicKey;
use rsa::traits::PublicKeyParts;

use super::{AuthError, RSA_MIN_BITS, VerifyKey};

/// Reads a PEM public key: RSA (SPKI `PUBLIC KEY` or PKCS#1 `RSA PUBLIC KEY`) for RS256, or
/// P-256 (SPKI `PUBLIC KEY`) for ES256.
pub(super) fn load_pem_key(path: &Path) -> Result<VerifyKey, AuthError> {
    let text = fs::read_to_string(path).map_err(|source| AuthError::Io {
        op: "reading",
        path: path.to_owned(),
        source,
    })?;
    let (alg, key) = parse_pem_key(&text).map_err(|reason| AuthError::PublicKey {
        path: path.to_owned(),
        reason,
    })?;
    Ok(VerifyKey {
        kid: None,
        alg,
        key,
    })
}

/// The algorithm and key of one PEM public key; the error says what is wrong.
fn parse_pem_key(text: &str) -> Result<(Algorithm, DecodingKey), String> {
    let text = text.trim();
    if text.contains("PRIVATE KEY-----") {
        return Err(
            "it holds a private key; give the public key (`openssl pkey -pubout`)".to_owned(),
        );
    }
    if let Ok(key) = rsa::RsaPublicKey::from_public_key_pem(text)
        .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(text))
    {
        return Ok((Algorithm::RS256, rsa_key(&key)?));
    }
    if let Ok(key) = p256::PublicKey::from_public_key_pem(text) {
        return Ok((Algorithm::ES256, ec_key(&key)));
    }
    Err(
        "expected one RSA or P-256 public key in PEM form (`-----BEGIN PUBLIC KEY-----` or \
         `-----BEGIN RSA PUBLIC KEY-----`); other key types and curves are not supported"
            .to_owned(),
    )
}

/// An RS256 key from an RSA public key of at least [`RSA_MIN_BITS`].
fn rsa_key(key: &rsa::RsaPublicKey) -> Result<DecodingKey, String> {
    let bits = key.size() * 8;
    if bits < RSA_MIN_BITS {
        return Err(format!(
            "the RSA key has {bits} bits; at least {RSA_MIN_BITS} are needed"
        ));
    }
    Ok(DecodingKey::from_rsa_raw_components(
        &key.n().to_bytes_be(),
        &key.e().to_bytes_be(),
    ))
}

/// An ES256 key from a P-256 public key (its uncompressed SEC1 point).
fn ec_key(key: &p256::PublicKey) -> DecodingKey {
    DecodingKey::from_ec_der(key.to_encoded_point(false).as_bytes())
}

/// Reads a JWKS file: every RSA key (RS256) and P-256 key (ES256) meant for signatures. Keys
/// of other types, curves, algorithms or uses are skipped with a warning; a set with no usable
/// key, a malformed usable key, or two keys of the same `kid` is refused.
pub(super) fn load_jwks(path: &Path) -> Result<Vec<VerifyKey>, AuthError> {
    let jwks_error = |reason: String| AuthError::Jwks {
        path: path.to_owned(),
        reason,
    };
    let text = fs::read_to_string(path).map_err(|source| AuthError::Io {
        op: "reading",
        path: path.to_owned(),
        source,
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| jwks_error(e.to_string()))?;
    let mut keys = Vec::new();
    let mut kids = HashSet::new();
    for (index, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone();
        let name = match &kid {
            Some(kid) => format!("key `{kid}`"),
            None => format!("key {index}"),
        };
        match jwk_key(jwk) {
            Ok(Some((alg, key))) => {
                if let Some(kid) = &kid
                    && !kids.insert(kid.clone())
                {
                    return Err(jwks_error(format!("two keys have the id `{kid}`")));
                }
                keys.push(VerifyKey { kid, alg, key });
            }
            Ok(None) => {
                tracing::warn!(path = %path.display(), key = %name, "JWKS key skipped: not an RS256 or ES256 signing key");
            }
            Err(reason) => return Err(jwks_error(format!("{name}: {reason}"))),
        }
    }
    if keys.is_empty() {
        return Err(jwks_error(
            "it holds no RSA or P-256 key usable for RS256 or ES256 signatures".to_owned(),
        ));
    }
    Ok(keys)
}

/// The algorithm and key of one JWK; `None` when it is not an RS256 or ES256 signing key.
fn jwk_key(jwk: &Jwk) -> Result<Option<(Algorithm, DecodingKey)>, String> {
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
    ) {
        return Ok(None);
    }
    let alg = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(params) if matches!(alg, None | Some(KeyAlgorithm::RS256)) => {
            let component = |name: &str, value: &str| {
                decode_b64url(value)
                    .map(|bytes| rsa::BigUint::from_bytes_be(&bytes))
                    .ok_or_else(|| format!("`{name}` is not base64url"))
            };
            let key =
                rsa::RsaPublicKey::new(component("n", &params.n)?, component("e", &params.e)?)
                    .map_err(|e| format!("not a valid RSA public key: {e}"))?;
            Ok(Some((Algorithm::RS256, rsa_key(&key)?)))
        }
        AlgorithmParameters::EllipticCurve(params)
            if params.curve == EllipticCurve::P256
                && matches!(alg, None | Some(KeyAlgorithm::ES256)) =>
        {
            let (Some(x), Some(y)) = (decode_b64url(&params.x), decode_b64url(&params.y)) else {
                return Err("`x` or `y` is not base64url".to_owned());
            };
            let mut point = Vec::with_capacity(1 + x.len() + y.len());
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = p256::PublicKey::from_sec1_bytes(&point)
                .map_err(|_| "not a point on the P-256 curve".to_owned())?;
            Ok(Some((Algorithm::ES256, ec_key(&key))))
        }
        _ => Ok(None),
    }
}

/// Decodes unpadded base64url (RFC 4648 §5), as JWK members are written; `None` if invalid.
fn decode_b64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    if text.is_empty() {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}
