//! The network options of `hutch serve`: what sessions may reach, and how.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use hutch_api::Egress;
use hutch_api::network::Ipv4Cidr;
use hutch_sandbox::linux::index_proxy::PackageIndex;
use hutch_sandbox::linux::network::{
    DEFAULT_BANDWIDTH_MBIT, DEFAULT_MAX_CONNECTIONS, DEFAULT_POOL, DEFAULT_WARM_POOL, NetworkConfig,
};
use hutch_server::NetworkLimits;

/// Network options; each also comes from a `HUTCH_*` environment variable.
#[derive(clap::Args, Debug)]
pub(crate) struct NetworkArgs {
    /// Egress of sessions that name no `network` policy: `none`, `allow` or `all`.
    #[arg(long, env = "HUTCH_NETWORK_DEFAULT", default_value = "none", value_parser = parse_egress)]
    network_default: Egress,
    /// The widest egress any session may ask for: `none` (sessions get no network at all),
    /// `allow` or `all`.
    #[arg(long, env = "HUTCH_NETWORK_ALLOWED", default_value = "none", value_parser = parse_egress)]
    network_allowed: Egress,
    /// IPv4 range sandbox addresses come from, one /30 per networked session.
    #[arg(long, env = "HUTCH_NETWORK_POOL", value_name = "CIDR", default_value = DEFAULT_POOL, value_parser = parse_cidr)]
    network_pool: Ipv4Cidr,
    /// DNS server the session resolvers forward allowed questions to (`IP` or `IP:PORT`);
    /// default: the first `nameserver` of /etc/resolv.conf.
    #[arg(long, env = "HUTCH_NETWORK_DNS", value_name = "ADDR")]
    network_dns: Option<String>,
    /// Private IPv4 ranges (comma-separated CIDRs) sessions may reach after all; they are
    /// denied by default.
    #[arg(long, env = "HUTCH_NETWORK_PRIVATE_ALLOWED", value_name = "CIDRS", value_delimiter = ',', value_parser = parse_cidr)]
    network_private_allowed: Vec<Ipv4Cidr>,
    /// Most connections one session may have open at once.
    #[arg(long, env = "HUTCH_NETWORK_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    network_max_connections: u32,
    /// Bandwidth of one session in each direction, in Mbit/s.
    #[arg(long, env = "HUTCH_NETWORK_BANDWIDTH_MBIT", default_value_t = DEFAULT_BANDWIDTH_MBIT)]
    network_bandwidth_mbit: u32,
    /// Sandboxes kept built and wired ahead of networked sessions (besides `--warm-pool`),
    /// so that egress adds little to create. Used only when sessions may have a network.
    #[arg(long, env = "HUTCH_NETWORK_WARM_POOL", default_value_t = DEFAULT_WARM_POOL)]
    network_warm_pool: usize,
    /// A Python package index (`https://host/simple/`) every session reaches through a proxy
    /// on its own loopback, even without network; the proxy reaches nothing else.
    #[arg(long, env = "HUTCH_PIP_INDEX_URL", value_name = "URL")]
    pip_index_url: Option<String>,
    /// More hosts (comma-separated, `host` or `host:port`) the index's pages link to, such as
    /// `files.pythonhosted.org` for PyPI.
    #[arg(
        long,
        env = "HUTCH_PIP_INDEX_HOSTS",
        value_name = "HOSTS",
        value_delimiter = ','
    )]
    pip_index_hosts: Vec<String>,
    /// An npm registry (`https://host/`) every session reaches through the same proxy, even
    /// without network; `npm install` in a session uses it.
    #[arg(long, env = "HUTCH_NPM_REGISTRY", value_name = "URL")]
    npm_registry: Option<String>,
}

/// Parses an egress flag: `none`, `allow` or `all`.
pub(crate) fn parse_egress(s: &str) -> Result<Egress, String> {
    Egress::parse(s).ok_or_else(|| format!("{s:?} is not none, allow or all"))
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    Ipv4Cidr::parse(s).ok_or_else(|| format!("{s:?} is not an IPv4 address or CIDR range"))
}

impl NetworkArgs {
    /// The operator's limits on session policies.
    pub(crate) fn limits(&self) -> anyhow::Result<NetworkLimits> {
        anyhow::ensure!(
            self.network_default <= self.network_allowed,
            "--network-default {} is wider than --network-allowed {}",
            self.network_default.as_str(),
            self.network_allowed.as_str()
        );
        Ok(NetworkLimits {
            default: self.network_default,
            allowed: self.network_allowed,
        })
    }

    /// The operator's package indexes: pip's and npm's, if given.
    pub(crate) fn package_indexes(&self) -> anyhow::Result<Vec<PackageIndex>> {
        let pip = self
            .pip_index_url
            .as_deref()
            .map(|url| PackageIndex::new(url, &self.pip_index_hosts));
        let npm = self.npm_registry.as_deref().map(PackageIndex::npm);
        pip.into_iter()
            .chain(npm)
            .collect::<Result<_, _>>()
            .map_err(anyhow::Error::msg)
    }

    /// The runtime's network settings; `None` when sessions may have no network.
    pub(crate) fn runtime_config(
        &self,
        listen: SocketAddr,
    ) -> anyhow::Result<Option<NetworkConfig>> {
        if self.network_allowed == Egress::None {
            return Ok(None);
        }
        anyhow::ensure!(
            (1..=100_000).contains(&self.network_bandwidth_mbit),
            "--network-bandwidth-mbit must be between 1 and 100000"
        );
        anyhow::ensure!(
            (1..=1_000_000).contains(&self.network_max_connections),
            "--network-max-connections must be between 1 and 1000000"
        );
        let upstream_dns = match &self.network_dns {
            Some(addr) => parse_dns(addr)?,
            None => system_nameserver()?,
        };
        // The control plane's own address, when it listens on one.
        let denied = match listen.ip() {
            IpAddr::V4(ip) if !ip.is_unspecified() => vec![Ipv4Cidr::new(ip, 32)],
            _ => Vec::new(),
        };
        Ok(Some(NetworkConfig {
            pool: self.network_pool,
            upstream_dns,
            private_allowed: self.network_private_allowed.clone(),
            denied,
            max_connections: self.network_max_connections,
            bandwidth_mbit: self.network_bandwidth_mbit,
            warm_pool: self.network_warm_pool,
        }))
    }
}

fn parse_dns(s: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip: Ipv4Addr = s
        .parse()
        .with_context(|| format!("--network-dns {s:?} is not an IPv4 address or IP:PORT"))?;
    Ok(SocketAddr::from((ip, 53)))
}

/// The first IPv4 `nameserver` of /etc/resolv.conf.
fn system_nameserver() -> anyhow::Result<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf")
        .context("reading /etc/resolv.conf for the upstream DNS server (or give --network-dns)")?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ns| ns.trim().parse::<Ipv4Addr>().ok())
        .map(|ip| SocketAddr::from((ip, 53)))
        .context("/etc/resolv.conf names no IPv4 nameserver; give --network-dns")
}
