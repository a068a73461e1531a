//! Image references, parsed and normalised the way Docker does.
//!
//! `python:3.11` is `docker.io/library/python:3.11`; `busybox` is `docker.io/library/busybox:latest`;
//! `localhost:5000/team/tool:1.2` keeps its registry; `name@sha256:…` pins a manifest digest. The
//! first path component is a registry when it contains a `.` or a `:` or is `localhost`, as in
//! Docker's `splitDockerDomain`; otherwise the reference is on Docker Hub.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};

/// The registry short names resolve to.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's legacy name, normalised to [`DOCKER_HUB`].
const DOCKER_HUB_LEGACY: &str = "index.docker.io";
/// The repository namespace of Docker Hub's official images.
const OFFICIAL_NAMESPACE: &str = "library";
/// The tag a reference without tag or digest names.
pub const DEFAULT_TAG: &str = "latest";
/// Longest repository path (registry excluded), as in the distribution spec.
const MAX_REPOSITORY_LEN: usize = 255;
/// Longest tag, as in the distribution spec.
const MAX_TAG_LEN: usize = 128;
/// Longest reference text accepted at all.
pub const MAX_REFERENCE_LEN: usize = 1024;

/// Why a reference was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The reference is empty.
    #[error("the image reference is empty")]
    Empty,
    /// The reference is longer than [`MAX_REFERENCE_LEN`].
    #[error("the image reference is longer than {MAX_REFERENCE_LEN} characters")]
    TooLong,
    /// The registry part is not a host name with an optional port.
    #[error("invalid registry {0:?} in the image reference")]
    Registry(String),
    /// A repository path component breaks the naming rules (lowercase letters, digits and
    /// single separators `.`, `_`, `__` or runs of `-`).
    #[error(
        "invalid repository name {0:?}: components are lowercase letters and digits joined by '.', '_', '__' or '-'"
    )]
    Repository(String),
    /// The repository path is longer than 255 characters.
    #[error("the repository name is longer than {MAX_REPOSITORY_LEN} characters")]
    RepositoryTooLong,
    /// The tag breaks the tag rules.
    #[error(
        "invalid tag {0:?}: up to 128 of letters, digits, '_', '.' and '-', not starting with '.' or '-'"
    )]
    Tag(String),
    /// The digest after `@` is not a sha256 digest.
    #[error("invalid digest in the image reference: {0}")]
    Digest(#[from] DigestError),
}

/// A normalised image reference: registry, repository, tag and optional digest.
///
/// Its `Display` is the canonical form (`docker.io/library/python:3.11`); a reference with a
/// digest and no explicit tag shows only the digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl ImageRef {
    /// Parses and normalises `text`.
    pub fn parse(text: &str) -> Result<ImageRef, ReferenceError> {
        if text.is_empty() {
            return Err(ReferenceError::Empty);
        }
        if text.len() > MAX_REFERENCE_LEN {
            return Err(ReferenceError::TooLong);
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (rest, Some(Digest::parse(digest)?)),
            None => (text, None),
        };
        // A tag follows the last ':' that comes after the last '/', so a registry port is not
        // mistaken for one.
        let last_slash = rest.rfind('/').map_or(0, |at| at + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(at) => (&rest[..last_slash + at], Some(&rest[last_slash + at + 1..])),
            None => (rest, None),
        };
        if let Some(tag) = tag
            && !valid_tag(tag)
        {
            return Err(ReferenceError::Tag(tag.to_owned()));
        }
        let (registry, repository) = split_registry(name)?;
        if repository.len() > MAX_REPOSITORY_LEN {
            return Err(ReferenceError::RepositoryTooLong);
        }
        if repository.is_empty() || !repository.split('/').all(valid_component) {
            return Err(ReferenceError::Repository(repository));
        }
        let tag = match (tag, &digest) {
            (Some(tag), _) => Some(tag.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some(DEFAULT_TAG.to_owned()),
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// The registry host (and port), e.g. `docker.io` or `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path, e.g. `library/python`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if the reference names one (every reference without a digest does).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The pinned manifest digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same repository pinned to `digest` (keeping the tag, for display).
    pub fn with_digest(&self, digest: Digest) -> ImageRef {
        ImageRef {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl FromStr for ImageRef {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<ImageRef, ReferenceError> {
        ImageRef::parse(text)
    }
}

/// Splits `name` into registry and repository, applying Docker Hub's defaults.
fn split_registry(name: &str) -> Result<(String, String), ReferenceError> {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            if !valid_registry(first) {
                return Err(ReferenceError::Registry(first.to_owned()));
            }
            (first.to_owned(), rest.to_owned())
        }
        Some((first, _)) if first.bytes().any(|b| b.is_ascii_uppercase()) => {
            return Err(ReferenceError::Registry(first.to_owned()));
        }
        _ => (DOCKER_HUB.to_owned(), name.to_owned()),
    };
    let registry = if registry == DOCKER_HUB_LEGACY {
        DOCKER_HUB.to_owned()
    } else {
        registry
    };
    let repository = if registry == DOCKER_HUB && !repository.contains('/') {
        format!("{OFFICIAL_NAMESPACE}/{repository}")
    } else {
        repository
    };
    Ok((registry, repository))
}

/// A host name (labels of letters, digits and inner `-`, joined by `.`) with an optional port.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
    });
    let host_ok = !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    port_ok && host_ok
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut at = 0;
    while at < bytes.len() {
        if alnum(bytes[at]) {
            at += 1;
            continue;
        }
        let start = at;
        while at < bytes.len() && !alnum(bytes[at]) {
            at += 1;
        }
        let separator = &component[start..at];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_TAG_LEN
        && word(bytes[0])
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canonical(text: &str) -> String {
        match ImageRef::parse(text) {
            Ok(reference) => reference.to_string(),
            Err(error) => format!("error: {error}"),
        }
    }

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn short_names_are_official_docker_hub_images() {
        assert_eq!(canonical("python:3.11"), "docker.io/library/python:3.11");
        assert_eq!(canonical("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(canonical("team/tool"), "docker.io/team/tool:latest");
        assert_eq!(
            canonical("index.docker.io/library/python:3.11-slim"),
            "docker.io/library/python:3.11-slim"
        );
        assert_eq!(
            canonical("docker.io/python"),
            "docker.io/library/python:latest"
        );
    }

    #[test]
    fn registries_keep_their_ports_and_paths() {
        assert_eq!(
            canonical("localhost:5000/team/tool:1.2"),
            "localhost:5000/team/tool:1.2"
        );
        assert_eq!(canonical("localhost/tool"), "localhost/tool:latest");
        assert_eq!(
            canonical("registry.example.com/a/b/c:v1"),
            "registry.example.com/a/b/c:v1"
        );
        let reference = ImageRef::parse("127.0.0.1:5000/x").expect("parses");
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "x");
        assert_eq!(reference.tag(), Some("latest"));
    }

    #[test]
    fn digests_pin_without_a_default_tag() {
        let pinned = format!("python@sha256:{HEX}");
        assert_eq!(
            canonical(&pinned),
            format!("docker.io/library/python@sha256:{HEX}")
        );
        let both = format!("localhost:5000/x:1@sha256:{HEX}");
        let reference = ImageRef::parse(&both).expect("parses");
        assert_eq!(reference.tag(), Some("1"));
        assert_eq!(reference.digest().map(|d| d.hex()), Some(HEX));
    }

    #[test]
    fn bad_references_name_what_is_wrong() {
        assert_eq!(ImageRef::parse(""), Err(ReferenceError::Empty));
        assert!(matches!(
            ImageRef::parse("Python:3"),
            Err(ReferenceError::Repository(_))
        ));
        assert!(matches!(
            ImageRef::parse("python:.bad"),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            ImageRef::parse("python@sha256:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            ImageRef::parse("a//b"),
            Err(ReferenceError::Repository(_))
        ));
        assert!(matches!(
            ImageRef::parse("bad_host:99/x"),
            Err(ReferenceError::Registry(_))
        ));
        assert!(matches!(
            ImageRef::parse("localhost:5000/"),
            Err(ReferenceError::Repository(_))
        ));
        assert!(matches!(
            ImageRef::parse("a/../b"),
            Err(ReferenceError::Repository(_))
        ));
        assert_eq!(
            ImageRef::parse(&"a".repeat(2000)),
            Err(ReferenceError::TooLong)
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,8}((\\.|_|__|-{1,3})[a-z0-9]{1,8}){0,2}"
    }

    fn repository() -> impl Strategy<Value = String> {
        proptest::collection::vec(component(), 1..4).prop_map(|parts| parts.join("/"))
    }

    fn registry() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("docker.io".to_owned()),
            Just("localhost".to_owned()),
            "[a-z][a-z0-9-]{0,6}[a-z0-9]\\.[a-z]{2,5}",
            "[a-z]{1,8}\\.[a-z]{2,4}:[0-9]{1,5}",
            "localhost:[0-9]{1,5}",
        ]
    }

    fn tag() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}"
    }

    proptest! {
        /// The canonical form of any valid reference parses back to the same reference.
        #[test]
        fn canonical_form_round_trips(
            registry in registry(),
            repository in repository(),
            tag in proptest::option::of(tag()),
            digest in proptest::option::of("[0-9a-f]{64}"),
        ) {
            let mut text = format!("{registry}/{repository}");
            if let Some(tag) = &tag {
                text.push(':');
                text.push_str(tag);
            }
            if let Some(hex) = &digest {
                text.push_str("@sha256:");
                text.push_str(hex);
            }
            let parsed = ImageRef::parse(&text).expect("a valid reference parses");
            prop_assert_eq!(parsed.registry(), registry.as_str());
            prop_assert_eq!(parsed.digest().map(|d| d.hex().to_owned()), digest.clone());
            let expected_tag = match (&tag, &digest) {
                (Some(tag), _) => Some(tag.clone()),
                (None, Some(_)) => None,
                (None, None) => Some(DEFAULT_TAG.to_owned()),
            };
            prop_assert_eq!(parsed.tag().map(str::to_owned), expected_tag);
            let again = ImageRef::parse(&parsed.to_string()).expect("the canonical form parses");
            prop_assert_eq!(&again, &parsed);
            prop_assert_eq!(again.to_string(), parsed.to_string());
        }

        /// A Docker Hub name without a namespace lands in `library/`.
        #[test]
        fn one_component_names_are_official(name in component(), tag in tag()) {
            let parsed = ImageRef::parse(&format!("{name}:{tag}")).expect("parses");
            prop_assert_eq!(parsed.registry(), DOCKER_HUB);
            prop_assert_eq!(parsed.repository(), format!("library/{name}"));
            prop_assert_eq!(parsed.tag(), Some(tag.as_str()));
        }

        /// No input makes the parser panic, and whatever it accepts is canonical after one
        /// round.
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,80}") {
            if let Ok(parsed) = ImageRef::parse(&text) {
                let again = ImageRef::parse(&parsed.to_string()).expect("canonical form parses");
                prop_assert_eq!(again, parsed);
            }
        }

        /// Uppercase letters are refused in repository names.
        #[test]
        fn uppercase_repositories_are_refused(name in "[a-z]{0,4}[A-Z][a-z]{0,4}") {
            let text = format!("localhost:5000/{name}");
            prop_assert!(ImageRef::parse(&text).is_err());
        }
    }
}
