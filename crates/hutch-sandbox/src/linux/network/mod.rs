//! Network egress of sandboxes: a veth pair per networked sandbox, NAT through the server's
//! network namespace, filtering in the kernel with nftables, and a resolver hutch controls.
//!
//! A sandbox whose session asks for `egress: none` gets none of this: it keeps only `lo`.
//! For `allow` and `all`, claiming the sandbox
//!
//! 1. takes a free slot of the address pool: a /30 whose first address is the host's end
//!    (the gateway, where the resolver listens) and whose second is the sandbox's;
//! 2. installs the session's own nftables table (`rules.rs`), before any interface exists;
//! 3. creates the veth pair, moves its inner end into the sandbox's network namespace as
//!    `eth0`, addresses both ends and routes the sandbox through the host (`link.rs`), and caps
//!    its bandwidth with a token bucket on each end;
//! 4. starts the session's resolver on the gateway's port 53 (`resolver.rs`), which answers
//!    only names the policy allows and admits the addresses it answered into the session's
//!    nftables set for the answer's TTL;
//! 5. writes the slot and the policy to `network.json` in the sandbox's directory, so that a
//!    restarted server can adopt the sandbox with its network, or sweep what it cannot.
//!
//! The veth pair vanishes with the sandbox's namespace; the table, the slot and the resolver
//! are removed by [`Network::detach`] (every teardown) or [`Network::sweep`] (after a crash).

mod command;
mod dns;
mod link;
mod resolver;
mod rules;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use hutch_api::network::{Egress, Ipv4Cidr, NetworkPolicy, ParsedPolicy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::keepers::LocalHold;
use super::leases::Leases;
use super::lock;
use crate::SandboxError;

pub(crate) use resolver::ResolverHandle;

/// Settings of sandbox networking on this server.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Where sandbox addresses come from: one /30 per networked sandbox.
    pub pool: Ipv4Cidr,
    /// The DNS server the resolvers forward allowed questions to.
    pub upstream_dns: SocketAddr,
    /// Private ranges sessions may reach after all (they are denied by default).
    pub private_allowed: Vec<Ipv4Cidr>,
    /// More addresses sessions may never reach (the control plane's listen address, say).
    pub denied: Vec<Ipv4Cidr>,
    /// Most connections a session may have open through its veth at once.
    pub max_connections: u32,
    /// Bandwidth of a session in each direction, in Mbit/s.
    pub bandwidth_mbit: u32,
    /// How many sandboxes to keep built and wired ahead of networked sessions.
    pub warm_pool: usize,
}

/// Default pool of sandbox addresses (16,384 sessions).
pub const DEFAULT_POOL: &str = "10.231.0.0/16";
/// Default cap on a session's open connections.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;
/// Default bandwidth of a session in each direction, in Mbit/s.
pub const DEFAULT_BANDWIDTH_MBIT: u32 = 1000;
/// Default number of sandboxes kept wired ahead of networked sessions.
pub const DEFAULT_WARM_POOL: usize = 2;

/// The addresses of one slot of the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    pub(crate) index: u32,
    pub(crate) gateway: Ipv4Addr,
    pub(crate) address: Ipv4Addr,
}

/// The file in a sandbox's directory that records its network.
const STATE_FILE: &str = "network.json";

/// What [`STATE_FILE`] holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    slot: u32,
    policy: NetworkPolicy,
}

/// A networked sandbox this server serves.
struct Attached {
    slot: Slot,
    policy: Arc<RwLock<ParsedPolicy>>,
    resolver: ResolverHandle,
}

/// Traffic counters of one sandbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetworkCounters {
    /// Bytes the sandbox sent out.
    pub bytes_out: u64,
    /// Bytes the sandbox received.
    pub bytes_in: u64,
    /// Connections the sandbox opened.
    pub connections: u64,
    /// Packets refused by the policy or by what is always denied.
    pub denied: u64,
}

/// Sandbox networking of one server: its table prefix, its pool and its live sandboxes.
pub(crate) struct Network {
    config: NetworkConfig,
    rules: rules::Rules,
    /// The pool's slots, held on disk for every server process on this data directory.
    slots: Leases,
    attached: Mutex<HashMap<Uuid, Attached>>,
}

/// Errors of sandbox networking, as sandbox errors.
pub(crate) fn net_err(what: impl std::fmt::Display) -> SandboxError {
    SandboxError::Sys {
        call: "network".into(),
        source: std::io::Error::other(what.to_string()),
    }
}

/// The short tag naming a sandbox's interface and table: the last 12 hex digits of its id
/// (the random part of a v7 UUID).
pub(crate) fn tag(sandbox_id: Uuid) -> String {
    let simple = sandbox_id.simple().to_string();
    simple[simple.len() - 12..].to_owned()
}

impl Network {
    /// Checks the tools, turns on forwarding in this network namespace and installs the
    /// server's table. `instance` names this server's tables; `data` is the data directory,
    /// whose `leases/addresses/` holds the pool's slots.
    pub(crate) fn start(
        config: NetworkConfig,
        instance: &str,
        data: &Path,
    ) -> Result<Network, SandboxError> {
        if config.pool.prefix > 29 {
            return Err(SandboxError::InvalidSpec(format!(
                "the network pool {} is too small: give at least a /29",
                config.pool
            )));
        }
        let rules = rules::Rules::new(instance);
        fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| net_err(format!("turning on IPv4 forwarding: {e}")))?;
        rules.install_base(&config)?;
        tracing::info!(pool = %config.pool, dns = %config.upstream_dns, "sandbox networking ready");
        let slots = Leases::open(data, "addresses", slot_count(&config))?;
        Ok(Network {
            config,
            rules,
            slots,
            attached: Mutex::new(HashMap::new()),
        })
    }

    fn slot(&self, index: u32) -> Slot {
        let base = u32::from(self.config.pool.addr) + index * 4;
        Slot {
            index,
            gateway: Ipv4Addr::from(base + 1),
            address: Ipv4Addr::from(base + 2),
        }
    }

    fn slot_count(&self) -> u32 {
        slot_count(&self.config)
    }

    /// Gives sandbox `sandbox_id` (whose directory exists) a slot no server process on this
    /// data directory holds.
    fn take_slot(&self, sandbox_id: Uuid) -> Result<Slot, SandboxError> {
        let pool = self.config.pool;
        // The sandbox's directory exists already, which keeps the slot taken: no lease to keep.
        let (index, _lease) = self.slots.take(sandbox_id, || {
            format!("the network pool {pool} has no free address")
        })?;
        Ok(self.slot(index))
    }

    /// Removes the slot files a crash left (see `leases.rs`); returns how many.
    pub(crate) fn reconcile(&self) -> Result<usize, SandboxError> {
        self.slots.reconcile()
    }

    /// Wires sandbox `sandbox_id` (agent `pid`, directory `dir`) for `policy`: table, veth,
    /// resolver, state file ([`Network::prewire`] then [`Network::activate`]). Blocking; needs
    /// a tokio runtime context for the resolver, which holds `hold`. Gives the slot; on error
    /// nothing is left.
    pub(crate) fn attach(
        &self,
        sandbox_id: Uuid,
        pid: i32,
        dir: &Path,
        policy: &NetworkPolicy,
        hold: &LocalHold,
    ) -> Result<Slot, SandboxError> {
        policy.parse().map_err(SandboxError::InvalidSpec)?;
        let slot = self.prewire(sandbox_id, pid, dir)?;
        self.activate(sandbox_id, slot, dir, policy, hold)
            .inspect_err(|_| self.detach(sandbox_id, dir))
    }

    /// Wires a pooled sandbox ahead of its session: slot, table (nothing admitted), veth.
    /// Blocking. On error nothing is left.
    pub(crate) fn prewire(
        &self,
        sandbox_id: Uuid,
        pid: i32,
        dir: &Path,
    ) -> Result<Slot, SandboxError> {
        let none = NetworkPolicy::default();
        let slot = self.take_slot(sandbox_id)?;
        let tag = tag(sandbox_id);
        let result = (|| {
            write_state(dir, slot.index, &none)?;
            self.rules
                .install_session(&tag, slot, &ParsedPolicy::default(), &self.config)?;
            link::create(&tag, pid, slot, self.config.bandwidth_mbit)
        })();
        if let Err(e) = result {
            self.detach(sandbox_id, dir);
            self.slots.release(sandbox_id, Some(slot.index));
            return Err(e);
        }
        Ok(slot)
    }

    /// Gives a sandbox wired by [`Network::prewire`] its session's policy and starts its
    /// resolver, which holds `hold`. Touches nftables only for a policy with ranges (or `all`).
    pub(crate) fn activate(
        &self,
        sandbox_id: Uuid,
        slot: Slot,
        dir: &Path,
        policy: &NetworkPolicy,
        hold: &LocalHold,
    ) -> Result<Slot, SandboxError> {
        let parsed = policy.parse().map_err(SandboxError::InvalidSpec)?;
        write_state(dir, slot.index, policy)?;
        if parsed.egress == Egress::All
            || !parsed.allow.ranges.is_empty()
            || !parsed.deny.ranges.is_empty()
        {
            self.rules
                .install_session(&tag(sandbox_id), slot, &parsed, &self.config)?;
        }
        self.serve(sandbox_id, slot, parsed, hold)?;
        Ok(slot)
    }

    /// Starts the resolver of a wired sandbox, holding `hold`, and records it as attached.
    fn serve(
        &self,
        sandbox_id: Uuid,
        slot: Slot,
        parsed: ParsedPolicy,
        hold: &LocalHold,
    ) -> Result<(), SandboxError> {
        let policy = Arc::new(RwLock::new(parsed));
        let resolver = resolver::start(
            slot.gateway,
            self.config.upstream_dns,
            policy.clone(),
            self.rules.admitter(&tag(sandbox_id)),
            hold.clone(),
        )?;
        lock(&self.attached).insert(
            sandbox_id,
            Attached {
                slot,
                policy,
                resolver,
            },
        );
        Ok(())
    }

    /// Replaces the policy of an attached sandbox: connections opened from now on follow it.
    pub(crate) fn update(
        &self,
        sandbox_id: Uuid,
        dir: &Path,
        policy: &NetworkPolicy,
    ) -> Result<(), SandboxError> {
        let parsed = policy.parse().map_err(SandboxError::InvalidSpec)?;
        let (slot, shared) = {
            let attached = lock(&self.attached);
            let a = attached.get(&sandbox_id).ok_or_else(|| {
                SandboxError::InvalidSpec(
                    "this session was created with egress \"none\" and has no network interface; create a new session with a network policy".into(),
                )
            })?;
            (a.slot, a.policy.clone())
        };
        write_state(dir, slot.index, policy)?;
        self.rules
            .install_session(&tag(sandbox_id), slot, &parsed, &self.config)?;
        *shared.write().unwrap_or_else(|e| e.into_inner()) = parsed;
        Ok(())
    }

    /// Takes a sandbox an earlier server process wired back: its slot, table and resolver
    /// (which holds `hold`). False if it has no network state (it was not networked) or its
    /// interface is gone.
    pub(crate) fn adopt(
        &self,
        sandbox_id: Uuid,
        dir: &Path,
        hold: &LocalHold,
    ) -> Result<bool, SandboxError> {
        let Some(state) = read_state(dir) else {
            return Ok(false);
        };
        let parsed = state.policy.parse().map_err(SandboxError::InvalidSpec)?;
        let slot = self.slot(state.slot);
        if state.slot >= self.slot_count() || !link::exists(&tag(sandbox_id)) {
            return Ok(false);
        }
        if !self.slots.reserve(sandbox_id, slot.index)? {
            tracing::warn!(sandbox = %sandbox_id, slot = slot.index, "another sandbox holds an adopted sandbox's address");
            return Ok(false);
        }
        self.serve(sandbox_id, slot, parsed, hold)?;
        Ok(true)
    }

    /// Stops what this process runs for a sandbox whose processes are gone (its resolver),
    /// leaving its slot, table and interface to whichever process tears it down.
    pub(crate) fn stop_local(&self, sandbox_id: Uuid) {
        if let Some(attached) = lock(&self.attached).remove(&sandbox_id) {
            attached.resolver.stop();
        }
    }

    /// Whether the sandbox in `dir` was given a network (by this process or an earlier one).
    pub(crate) fn was_attached(&self, dir: &Path) -> bool {
        dir.join(STATE_FILE).exists()
    }

    /// Removes a sandbox's network: resolver, slot, veth pair (which also goes with the
    /// sandbox's namespace) and table. Does nothing for a sandbox without one; idempotent.
    pub(crate) fn detach(&self, sandbox_id: Uuid, dir: &Path) {
        let attached = lock(&self.attached).remove(&sandbox_id);
        if attached.is_none() && !self.was_attached(dir) {
            return;
        }
        match attached {
            Some(attached) => {
                attached.resolver.stop();
                self.slots.release(sandbox_id, Some(attached.slot.index));
            }
            // Wired but never claimed (pooled), or left by an earlier process.
            None => {
                self.slots
                    .release(sandbox_id, read_state(dir).map(|state| state.slot));
            }
        }
        let tag = tag(sandbox_id);
        link::remove(&tag);
        if let Err(e) = self.rules.remove_session(&tag) {
            tracing::warn!(sandbox = %sandbox_id, error = %e, "removing a sandbox's rules failed");
        }
    }

    /// Removes the interfaces and tables of sandboxes that are neither in `keep` nor in
    /// `kept()`, which is asked once both are listed (so that it covers every sandbox a live
    /// process wired before the listing).
    pub(crate) fn sweep(&self, keep: &HashSet<Uuid>, kept: impl FnOnce() -> HashSet<Uuid>) {
        let interfaces = link::list_tags();
        let tables = self.rules.session_tags();
        let keep: HashSet<String> = keep.iter().chain(&kept()).map(|id| tag(*id)).collect();
        for tag in interfaces {
            if !keep.contains(&tag) {
                tracing::info!(interface = %link::host_name(&tag), "removing a leftover sandbox interface");
                link::remove(&tag);
            }
        }
        match tables {
            Ok(tags) => {
                for tag in tags.into_iter().filter(|t| !keep.contains(t)) {
                    tracing::info!(table = %tag, "removing a leftover sandbox table");
                    if let Err(e) = self.rules.remove_session(&tag) {
                        tracing::warn!(error = %e, "removing a leftover sandbox table failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing sandbox tables failed"),
        }
    }

    /// The traffic counters of every attached sandbox, by sandbox id.
    pub(crate) fn counters(&self) -> HashMap<Uuid, NetworkCounters> {
        let ids: Vec<Uuid> = lock(&self.attached).keys().copied().collect();
        let by_tag = self.rules.counters().unwrap_or_default();
        ids.into_iter()
            .filter_map(|id| by_tag.get(&tag(id)).map(|c| (id, *c)))
            .collect()
    }
}

/// How many /30 slots the pool of `config` holds.
fn slot_count(config: &NetworkConfig) -> u32 {
    1u32 << (32 - u32::from(config.pool.prefix))
        .saturating_sub(2)
        .min(31)
}

fn write_state(dir: &Path, slot: u32, policy: &NetworkPolicy) -> Result<(), SandboxError> {
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec(&State {
        slot,
        policy: policy.clone(),
    })
    .map_err(net_err)?;
    let tmp = dir.join("network.json.tmp");
    fs::write(&tmp, json)
        .and_then(|()| fs::rename(&tmp, &path))
        .map_err(super::io("write", &path))
}

fn read_state(dir: &Path) -> Option<State> {
    let bytes = fs::read(dir.join(STATE_FILE)).ok()?;
    serde_json::from_slice(&bytes).ok()
}
