//! Network egress of a session: the policy a client asks for, and its parsed form.
//!
//! A session has no network by default (`egress: none`: only `lo`). With `allow` it reaches the
//! names and IPv4 ranges of its allow list; with `all`, anything but its deny list. Whatever the
//! policy, the server also refuses the destinations it always denies (the host, other sessions,
//! link-local and metadata addresses, private ranges); those are not part of this type.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Most entries in one allow or deny list.
pub const NETWORK_MAX_ENTRIES: usize = 256;
/// Longest entry of an allow or deny list, in bytes (the longest DNS name).
pub const NETWORK_MAX_ENTRY_BYTES: usize = 253;

/// What a session may reach outside.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Egress {
    /// Nothing: the session has only `lo`, and DNS fails at once.
    #[default]
    None,
    /// Only the names and ranges of `allow` (less those of `deny`).
    Allow,
    /// Everything but `deny` (and what the server always denies).
    All,
}

impl Egress {
    /// The name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::None => "none",
            Egress::Allow => "allow",
            Egress::All => "all",
        }
    }

    /// Parses `none`, `allow` or `all`.
    pub fn parse(s: &str) -> Option<Egress> {
        Some(match s {
            "none" => Egress::None,
            "allow" => Egress::Allow,
            "all" => Egress::All,
            _ => return None,
        })
    }
}

/// A session's network policy, on create and on `PATCH /v1/sessions/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(example = json!({"egress": "allow", "allow": ["pypi.org", "*.pythonhosted.org", "151.101.0.0/16"]}))]
pub struct NetworkPolicy {
    /// `none` (default): no network; `allow`: only `allow`; `all`: everything but `deny`.
    pub egress: Egress,
    /// With `allow`: DNS names (`pypi.org`), wildcard names (`*.example.com`: any name below
    /// it, not the name itself), IPv4 addresses and CIDR ranges. At most 256 entries.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub allow: Vec<String>,
    /// Names and ranges refused even when `allow` or `all` would admit them. At most 256.
    #[serde(default)]
    #[schema(max_items = 256)]
    pub deny: Vec<String>,
}

/// An IPv4 range: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ipv4Cidr {
    /// The first address of the range.
    pub addr: Ipv4Addr,
    /// Prefix length, 0..=32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// Parses `a.b.c.d` or `a.b.c.d/n`; the address is masked to the range's first.
    pub fn parse(s: &str) -> Option<Ipv4Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok().filter(|p| *p <= 32)?),
            None => (s, 32),
        };
        let addr: Ipv4Addr = addr.parse().ok()?;
        Some(Ipv4Cidr::new(addr, prefix))
    }

    /// The range of `prefix` bits around `addr`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
        let mask = Self::mask(prefix);
        Ipv4Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        }
    }

    fn mask(prefix: u8) -> u32 {
        if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix.min(32)))
        }
    }

    /// Whether `ip` is in the range.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.addr)
    }
}

impl std::fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A name pattern of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NamePattern {
    /// Exactly this name (lower case, no trailing dot).
    Exact(String),
    /// Any name strictly below this suffix (`*.example.com` holds `example.com`).
    Below(String),
}

impl NamePattern {
    /// Whether `name` (any case, trailing dot or not) matches.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        match self {
            NamePattern::Exact(n) => name == *n,
            NamePattern::Below(suffix) => name
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

/// One list (allow or deny) split into names and ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetList {
    /// Name patterns, answered by the session's resolver.
    pub names: Vec<NamePattern>,
    /// IPv4 ranges, enforced by the kernel's filter.
    pub ranges: Vec<Ipv4Cidr>,
}

impl TargetList {
    /// Whether a name pattern matches `name`.
    pub fn matches_name(&self, name: &str) -> bool {
        self.names.iter().any(|p| p.matches(name))
    }

    /// Parses `entries`; `field` names the list in errors.
    pub fn parse(field: &str, entries: &[String]) -> Result<TargetList, String> {
        if entries.len() > NETWORK_MAX_ENTRIES {
            return Err(format!(
                "{field} has {} entries; at most {NETWORK_MAX_ENTRIES}",
                entries.len()
            ));
        }
        let mut list = TargetList::default();
        for entry in entries {
            if entry.len() > NETWORK_MAX_ENTRY_BYTES {
                return Err(format!(
                    "{field} entry is {} bytes long; at most {NETWORK_MAX_ENTRY_BYTES}",
                    entry.len()
                ));
            }
            if entry.contains(':') {
                let range = entry
                    .split_once('/')
                    .map_or(entry.as_str(), |(address, _)| address);
                return Err(if range.parse::<std::net::Ipv6Addr>().is_ok() {
                    format!(
                        "{field} entry {entry:?}: IPv6 is off in sessions; give IPv4 addresses or names"
                    )
                } else {
                    format!(
                        "{field} entry {entry:?}: give a host name, a `*.` name, an IPv4 address or an IPv4 CIDR, without a scheme or a port"
                    )
                });
            }
            if entry.starts_with(|c: char| c.is_ascii_digit())
                && entry
                    .chars()
                    .all(|c| c.is_ascii_digit() || c == '.' || c == '/')
            {
                let range = Ipv4Cidr::parse(entry).ok_or_else(|| {
                    format!("{field} entry {entry:?} is not an IPv4 address or CIDR range")
                })?;
                list.ranges.push(range);
                continue;
            }
            let lower = entry.trim_end_matches('.').to_ascii_lowercase();
            let (pattern, name) = match lower.strip_prefix("*.") {
                Some(rest) => (NamePattern::Below(rest.to_owned()), rest.to_owned()),
                None => (NamePattern::Exact(lower.clone()), lower),
            };
            if !valid_dns_name(&name) {
                return Err(format!(
                    "{field} entry {entry:?} is not a DNS name, `*.` and a name, an IPv4 address or a CIDR range"
                ));
            }
            list.names.push(pattern);
        }
        Ok(list)
    }
}

/// Letters, digits, `-` and `_` in dot-separated labels of 1 to 63 bytes.
fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A policy whose lists passed every check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParsedPolicy {
    /// The mode.
    pub egress: Egress,
    /// What `allow` admits.
    pub allow: TargetList,
    /// What is refused.
    pub deny: TargetList,
}

impl NetworkPolicy {
    /// Checks and splits the lists; the error says which entry is wrong and why.
    pub fn parse(&self) -> Result<ParsedPolicy, String> {
        let allow = TargetList::parse("network.allow", &self.allow)?;
        let deny = TargetList::parse("network.deny", &self.deny)?;
        if self.egress != Egress::Allow && !self.allow.is_empty() {
            return Err(format!(
                "network.allow is used only with egress \"allow\", not {:?}",
                self.egress.as_str()
            ));
        }
        Ok(ParsedPolicy {
            egress: self.egress,
            allow,
            deny,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(egress: Egress, allow: &[&str], deny: &[&str]) -> NetworkPolicy {
        NetworkPolicy {
            egress,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn names_wildcards_and_ranges_are_told_apart() {
        let parsed = policy(
            Egress::Allow,
            &["PyPI.org.", "*.example.com", "151.101.0.0/16", "1.2.3.4"],
            &[],
        )
        .parse()
        .unwrap();
        assert!(parsed.allow.matches_name("pypi.org"));
        assert!(!parsed.allow.matches_name("files.pypi.org"));
        assert!(parsed.allow.matches_name("a.example.com."));
        assert!(!parsed.allow.matches_name("example.com"));
        assert!(!parsed.allow.matches_name("badexample.com"));
        assert_eq!(
            parsed.allow.ranges,
            vec![
                Ipv4Cidr::parse("151.101.0.0/16").unwrap(),
                Ipv4Cidr::parse("1.2.3.4/32").unwrap()
            ]
        );
        assert!(parsed.allow.ranges[0].contains("151.101.7.8".parse().unwrap()));
    }

    #[test]
    fn bad_entries_are_named() {
        for (bad, says) in [
            ("1.2.3.4/33", "not an IPv4 address"),
            ("2001:db8::/32", "IPv6 is off"),
            ("::1", "IPv6 is off"),
            ("pypi.org:443", "without a scheme or a port"),
            ("https://pypi.org", "without a scheme or a port"),
            ("exa mple.com", "not a DNS name"),
            ("*.", "not a DNS name"),
        ] {
            let err = policy(Egress::Allow, &[bad], &[]).parse().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
        let err = policy(Egress::All, &["pypi.org"], &[]).parse().unwrap_err();
        assert!(err.contains("only with egress \"allow\""), "{err}");
        let many: Vec<String> = (0..257).map(|i| format!("h{i}.example")).collect();
        let err = NetworkPolicy {
            egress: Egress::Allow,
            allow: many,
            deny: vec![],
        }
        .parse()
        .unwrap_err();
        assert!(err.contains("at most 256"), "{err}");
    }
}
