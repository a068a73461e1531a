//! Token authentication as Docker Hub does it: the registry answers 401 naming a token
//! service, the client trades the credentials from a Docker `config.json` for a signed token
//! there, and pulls with it. The registry is Debian's `docker-registry` configured for token
//! auth; the token service is a small loopback server in this test signing RS256 tokens
//! with a certificate the registry trusts. Run as root.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hutch_image::{ImageRef, PullProgress, Puller, RegistryConfig};
use support::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SERVICE: &str = "hutch-test-registry";
const ISSUER: &str = "hutch-test-tokens";
const USER: &str = "builder";
const PASSWORD: &str = "s3cret";

/// A token service on a loopback port that grants what is asked to `USER`/`PASSWORD` and
/// refuses anyone else; it remembers who asked.
struct TokenService {
    realm: String,
    cert: std::path::PathBuf,
    askers: Arc<Mutex<Vec<Option<String>>>>,
}

impl TokenService {
    async fn start(dir: &std::path::Path) -> TokenService {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        support::run(
            Command::new("openssl")
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-days",
                    "1",
                    "-subj",
                    "/CN=hutch-test-tokens",
                    "-keyout",
                ])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let key_der = dir.join("token.der");
        support::run(
            Command::new("openssl")
                .args(["rsa", "-traditional", "-outform", "DER", "-in"])
                .arg(&key)
                .arg("-out")
                .arg(&key_der),
        );
        let key_der = std::fs::read(&key_der).expect("key");
        let cert_pem = String::from_utf8(std::fs::read(&cert).expect("cert")).expect("pem");
        let cert_der: String = cert_pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
        let askers: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let seen = Arc::clone(&askers);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buffer = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buffer[..n]),
                    }
                }
                let request = String::from_utf8_lossy(&request).into_owned();
                let user = basic_user(&request);
                seen.lock().expect("lock").push(user.clone());
                let response = if user.as_deref() == Some(USER) {
                    let token = sign(&key_der, &cert_der, &scopes(&request));
                    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        .to_owned()
                };
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        TokenService {
            realm,
            cert,
            askers,
        }
    }
}

/// The user of a request's Basic credentials, if they are right.
fn basic_user(request: &str) -> Option<String> {
    let header = request.lines().find_map(|line| {
        line.strip_prefix("authorization: Basic ")
            .or_else(|| line.strip_prefix("Authorization: Basic "))
    })?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(header.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (user, password) = decoded.split_once(':')?;
    (password == PASSWORD).then(|| user.to_owned())
}

/// The `scope=repository:NAME:ACTIONS` parameters of a token request.
fn scopes(request: &str) -> Vec<serde_json::Value> {
    let target = request.split_whitespace().nth(1).unwrap_or_default();
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    query
        .split('&')
        .filter_map(|pair| pair.strip_prefix("scope="))
        .filter_map(|scope| {
            let scope = scope
                .replace("%3A", ":")
                .replace("%2C", ",")
                .replace("%2F", "/");
            let mut parts = scope.splitn(3, ':');
            let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
            Some(serde_json::json!({
                "type": kind, "name": name,
                "actions": actions.split(',').collect::<Vec<_>>(),
            }))
        })
        .collect()
}

fn sign(key_der: &[u8], cert_der_b64: &str, access: &[serde_json::Value]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": USER, "aud": SERVICE,
        "iat": now, "nbf": now - 10, "exp": now + 300,
        "jti": format!("{now}-{}", access.len()),
        "access": access,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.x5c = Some(vec![cert_der_b64.to_owned()]);
    let key = jsonwebtoken::EncodingKey::from_rsa_der(key_der);
    jsonwebtoken::encode(&header, &claims, &key).expect("sign")
}

/// A registry that wants tokens from `tokens`.
fn start_registry(tokens: &TokenService) -> Registry {
    Registry::start_with(&format!(
        "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {cert}\n",
        realm = tokens.realm,
        cert = tokens.cert.display(),
    ))
}

// Several threads: the token service answers while skopeo, run blocking here, waits on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_a_docker_config_are_traded_for_a_token() {
    let dir = tempfile::Builder::new()
        .prefix("hutch-auth-")
        .tempdir_in(support::scratch())
        .expect("tempdir");
    let tokens = TokenService::start(dir.path()).await;
    let registry = start_registry(&tokens);
    let addr = registry.addr.clone();
    let layout = support::busybox_layout();
    support::run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--all",
        "--dest-tls-verify=false",
        &format!("--dest-creds={USER}:{PASSWORD}"),
        &format!("oci:{}:latest", layout.display()),
        &format!("docker://{addr}/private/busybox:latest"),
    ]));
    let name = ImageRef::parse(&format!("{addr}/private/busybox")).expect("reference");
    let quiet = |_: &PullProgress| {};

    // Anonymous: the token service refuses, and so the pull fails with the registry's answer.
    let (_store_dir, store) = support::store();
    let mut config = RegistryConfig::default();
    config.plain_http.insert(addr.clone());
    let anonymous = Puller::new(Arc::clone(&store), config.clone());
    let error = anonymous
        .pull(&name, &quiet)
        .await
        .expect_err("anonymous is refused");
    assert_eq!(error.code(), "image_pull_failed", "{error}");

    // With the credentials of a Docker config.json, the token is granted and the pull works.
    let auth = dir.path().join("config.json");
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        &auth,
        serde_json::json!({"auths": {addr.clone(): {"auth": encoded}}}).to_string(),
    )
    .expect("config.json");
    config.load_credentials(&auth).expect("credentials");
    let authenticated = Puller::new(Arc::clone(&store), config);
    let record = authenticated
        .pull(&name, &quiet)
        .await
        .expect("pull with a token");
    assert_eq!(record.layers.len(), 1);
    let askers: HashSet<Option<String>> = tokens
        .askers
        .lock()
        .expect("lock")
        .iter()
        .cloned()
        .collect();
    assert!(askers.contains(&Some(USER.to_owned())), "{askers:?}");
    assert!(askers.contains(&None), "{askers:?}");
}
