//! Filtering and NAT in the kernel with nftables, driven through the `nft` binary.
//!
//! hutch writes nft's own command language to `nft -f -`: each call is one atomic
//! transaction, every value written comes from typed data (addresses, prefixes, numbers, tags
//! of hex digits), and the binary is the interface the nftables project keeps stable. A call
//! takes about 5 ms.
//!
//! Two kinds of tables, both of family `inet`:
//! - the server's table `hutch-<instance>`: masquerades the pool's traffic leaving through any
//!   other interface, drops IPv6 to and from sandbox interfaces, and lets sandboxes reach the
//!   host only at the DNS port of their own gateway (`fib daddr . iif type local`);
//! - one table per networked sandbox, `hutch-<instance>-<tag>`: its forward chain checks
//!   the source address (no spoofing), lets replies through, rejects what is always denied
//!   (`never`: loopback, link-local and metadata, multicast, the pool — other sessions — and
//!   the operator's additions; `private` unless in `private_ok`), then the session's deny
//!   list, the connection cap, and accepts what is in the `allow` set (the policy's ranges;
//!   `0.0.0.0/0` for `all`) or in the `dns` set the resolver fills. The rules are the same
//!   for every policy, only the sets differ: a sandbox wired ahead of its session (with empty
//!   sets: nothing gets out) takes a policy of names without touching nftables at all. Anything else is rejected at once (a fast error, not a
//!   timeout). Nothing new may enter the sandbox. Named counters count bytes each way, new
//!   connections and refused packets.
//!
//! A table per sandbox makes removal one atomic `delete table`, and a sweep after a crash a
//! matter of listing tables.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::Duration;

use hutch_api::network::{Egress, Ipv4Cidr, ParsedPolicy};

use super::{NetworkConfig, NetworkCounters, Slot, command, link, net_err};
use crate::SandboxError;

/// Ranges no session reaches, whatever its policy (besides the pool and operator additions).
const NEVER: &[&str] = &[
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "224.0.0.0/3",
    "255.255.255.255/32",
];

/// Private and shared ranges: denied unless the operator allows them.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "192.0.0.0/24",
    "198.18.0.0/15",
];

/// Shortest time an address the resolver answered stays admitted: clients connect right after
/// resolving, even on a TTL of 0.
const MIN_ADMIT_SECS: u32 = 30;
/// Longest time an answered address stays admitted without being asked for again.
const MAX_ADMIT_SECS: u32 = 86_400;

/// The tables of one server.
pub(super) struct Rules {
    base: String,
}

/// Adds addresses a session's resolver answered to that session's `dns` set.
#[derive(Clone)]
pub(crate) struct Admitter {
    table: String,
}

impl Admitter {
    /// Admits each address for its TTL (bounded), refreshing addresses already admitted.
    pub(crate) async fn admit(&self, answers: &[(Ipv4Addr, u32)]) -> Result<(), SandboxError> {
        if answers.is_empty() {
            return Ok(());
        }
        let t = &self.table;
        let mut script = String::new();
        for (addr, ttl) in answers {
            let secs = ttl.saturating_add(MIN_ADMIT_SECS).min(MAX_ADMIT_SECS);
            // add (no-op if present), delete, add: sets the new timeout either way, atomically.
            let _ = writeln!(script, "add element inet {t} dns {{ {addr} timeout 1s }}");
            let _ = writeln!(script, "delete element inet {t} dns {{ {addr} }}");
            let _ = writeln!(
                script,
                "add element inet {t} dns {{ {addr} timeout {secs}s }}"
            );
        }
        let run = tokio::task::spawn_blocking(move || nft(&script));
        match tokio::time::timeout(Duration::from_secs(5), run).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(net_err(e)),
            Err(_) => Err(net_err("nft took more than 5 s")),
        }
    }
}

impl Rules {
    /// The tables of the server named `instance`.
    pub(super) fn new(instance: &str) -> Rules {
        Rules {
            base: format!("hutch-{instance}"),
        }
    }

    fn session_table(&self, tag: &str) -> String {
        format!("{}-{tag}", self.base)
    }

    /// The admitter of the sandbox tagged `tag`.
    pub(super) fn admitter(&self, tag: &str) -> Admitter {
        Admitter {
            table: self.session_table(tag),
        }
    }

    /// Installs (or refreshes, keeping the sandbox tables) the server's table.
    pub(super) fn install_base(&self, config: &NetworkConfig) -> Result<(), SandboxError> {
        let b = &self.base;
        let any = format!("\"{}*\"", link::host_name(""));
        let pool = config.pool;
        let script = format!(
            "add table inet {b}\n\
             add chain inet {b} forward {{ type filter hook forward priority filter; policy accept; }}\n\
             add chain inet {b} input {{ type filter hook input priority filter; policy accept; }}\n\
             add chain inet {b} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}\n\
             flush chain inet {b} forward\n\
             flush chain inet {b} input\n\
             flush chain inet {b} postrouting\n\
             add rule inet {b} forward iifname {any} meta nfproto ipv6 drop\n\
             add rule inet {b} forward oifname {any} meta nfproto ipv6 drop\n\
             add rule inet {b} input iifname {any} meta nfproto ipv6 drop\n\
             add rule inet {b} input iifname {any} ct state established,related accept\n\
             add rule inet {b} input iifname {any} udp dport 53 fib daddr . iif type local accept\n\
             add rule inet {b} input iifname {any} reject with icmpx type admin-prohibited\n\
             add rule inet {b} postrouting ip saddr {pool} oifname != {any} masquerade\n"
        );
        nft(&script)
    }

    /// Installs or replaces the table of the sandbox tagged `tag`. Replacing keeps its
    /// counters and empties its `dns` set: addresses admitted under the old policy are not
    /// admitted under the new one.
    pub(super) fn install_session(
        &self,
        tag: &str,
        slot: Slot,
        policy: &ParsedPolicy,
        config: &NetworkConfig,
    ) -> Result<(), SandboxError> {
        let t = self.session_table(tag);
        let dev = format!("\"{}\"", link::host_name(tag));
        let mut never: Vec<String> = NEVER.iter().map(|s| s.to_string()).collect();
        never.push(config.pool.to_string());
        never.extend(config.denied.iter().map(Ipv4Cidr::to_string));
        let private: Vec<String> = PRIVATE.iter().map(|s| s.to_string()).collect();
        let private_ok: Vec<String> = config
            .private_allowed
            .iter()
            .map(Ipv4Cidr::to_string)
            .collect();
        // `all` is an allow list of everything: the rules are the same for every policy, so a
        // sandbox wired ahead of its session needs no new rules for a policy of names.
        let allow: Vec<String> = match policy.egress {
            Egress::All => vec!["0.0.0.0/0".to_owned()],
            Egress::Allow => policy
                .allow
                .ranges
                .iter()
                .map(Ipv4Cidr::to_string)
                .collect(),
            Egress::None => Vec::new(),
        };
        let deny: Vec<String> = policy.deny.ranges.iter().map(Ipv4Cidr::to_string).collect();

        let mut s = String::new();
        let _ = writeln!(s, "add table inet {t}");
        for counter in ["bytes_out", "bytes_in", "connections", "denied"] {
            let _ = writeln!(s, "add counter inet {t} {counter}");
        }
        for set in ["never", "private", "private_ok", "allow", "deny"] {
            let _ = writeln!(
                s,
                "add set inet {t} {set} {{ type ipv4_addr; flags interval; auto-merge; }}"
            );
            let _ = writeln!(s, "flush set inet {t} {set}");
        }
        let _ = writeln!(
            s,
            "add set inet {t} dns {{ type ipv4_addr; flags timeout; }}"
        );
        let _ = writeln!(s, "flush set inet {t} dns");
        for (set, elements) in [
            ("never", &never),
            ("private", &private),
            ("private_ok", &private_ok),
            ("allow", &allow),
            ("deny", &deny),
        ] {
            if !elements.is_empty() {
                let _ = writeln!(
                    s,
                    "add element inet {t} {set} {{ {} }}",
                    elements.join(", ")
                );
            }
        }
        let _ = writeln!(
            s,
            "add chain inet {t} forward {{ type filter hook forward priority filter; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {t} forward");
        let reject = "reject with icmpx type admin-prohibited";
        let denied = format!("counter name denied {reject}");
        let rules = [
            // Into the sandbox: replies only.
            format!("oifname {dev} ct state established,related counter name bytes_in accept"),
            format!("oifname {dev} {denied}"),
            // Out of it.
            format!("iifname {dev} meta nfproto ipv6 counter name denied drop"),
            format!(
                "iifname {dev} ip saddr != {} counter name denied drop",
                slot.address
            ),
            format!("iifname {dev} ct state established,related counter name bytes_out accept"),
            format!("iifname {dev} ip daddr @never {denied}"),
            format!("iifname {dev} ip daddr @private ip daddr != @private_ok {denied}"),
            format!("iifname {dev} ip daddr @deny {denied}"),
            format!(
                "iifname {dev} ct count over {} {denied}",
                config.max_connections
            ),
        ];
        for rule in rules {
            let _ = writeln!(s, "add rule inet {t} forward {rule}");
        }
        let admit = "counter name connections counter name bytes_out accept";
        for set in ["allow", "dns"] {
            let _ = writeln!(
                s,
                "add rule inet {t} forward iifname {dev} ip daddr @{set} {admit}"
            );
        }
        let _ = writeln!(s, "add rule inet {t} forward iifname {dev} {denied}");
        nft(&s)
    }

    /// Deletes the table of the sandbox tagged `tag`, if it exists.
    pub(super) fn remove_session(&self, tag: &str) -> Result<(), SandboxError> {
        let t = self.session_table(tag);
        // `add` first, so that the delete cannot fail on a missing table.
        nft(&format!("add table inet {t}\ndelete table inet {t}\n"))
    }

    /// The tags of every sandbox table of this server.
    pub(super) fn session_tags(&self) -> Result<Vec<String>, SandboxError> {
        let out = nft_output(&["list", "tables", "inet"])?;
        let prefix = format!("table inet {}-", self.base);
        Ok(out
            .lines()
            .filter_map(|l| l.trim().strip_prefix(&prefix))
            .filter(|tag| tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit()))
            .map(str::to_owned)
            .collect())
    }

    /// The counters of every sandbox table, by tag.
    pub(super) fn counters(&self) -> Result<HashMap<String, NetworkCounters>, SandboxError> {
        let out = nft_output(&["-j", "list", "counters"])?;
        let json: serde_json::Value = serde_json::from_str(&out).map_err(net_err)?;
        let prefix = format!("{}-", self.base);
        let mut by_tag: HashMap<String, NetworkCounters> = HashMap::new();
        let items = json["nftables"].as_array().cloned().unwrap_or_default();
        for item in items {
            let c = &item["counter"];
            let (Some(table), Some(name)) = (c["table"].as_str(), c["name"].as_str()) else {
                continue;
            };
            let Some(tag) = table.strip_prefix(&prefix) else {
                continue;
            };
            let entry = by_tag.entry(tag.to_owned()).or_default();
            let bytes = c["bytes"].as_u64().unwrap_or(0);
            let packets = c["packets"].as_u64().unwrap_or(0);
            match name {
                "bytes_out" => entry.bytes_out = bytes,
                "bytes_in" => entry.bytes_in = bytes,
                "connections" => entry.connections = packets,
                "denied" => entry.denied = packets,
                _ => {}
            }
        }
        Ok(by_tag)
    }
}

/// Runs `nft -f -` on `script`: one atomic transaction.
fn nft(script: &str) -> Result<(), SandboxError> {
    command::run("nft", &["-f", "-"], script, None)
}

/// Runs `nft ARGS` and gives its output.
fn nft_output(args: &[&str]) -> Result<String, SandboxError> {
    let out = Command::new("nft")
        .args(args)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| net_err(format!("starting nft: {e}")))?;
    if !out.status.success() {
        return Err(net_err(format!(
            "nft {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
