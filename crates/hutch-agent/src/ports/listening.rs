//! The session's listening TCP sockets, read from `/proc/self/net/tcp` and `tcp6` (the agent
//! shares the session's network namespace, so these are the session's), with the process
//! holding each socket found through `/proc/{pid}/fd`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hutch_api::ListeningPort;
use hutch_api::limits::PORTS_LIST_MAX;

/// The `st` value of a listening socket in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";
/// Most processes looked at to name the owners of sockets.
const PROCESSES_SCANNED_MAX: usize = 4_096;

/// One listening socket as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    /// The address it is bound to.
    pub(crate) address: IpAddr,
    /// The port.
    pub(crate) port: u16,
    /// The socket's inode, which `/proc/{pid}/fd/*` links name as `socket:[inode]`.
    pub(crate) inode: u64,
}

/// Every listening TCP socket of the session (IPv4 and IPv6), unsorted.
pub(crate) fn listeners() -> std::io::Result<Vec<Listener>> {
    let mut found = parse_table(&std::fs::read_to_string("/proc/self/net/tcp")?);
    // A kernel without IPv6 has no tcp6 table: that is no listener, not an error.
    if let Ok(table) = std::fs::read_to_string("/proc/self/net/tcp6") {
        found.extend(parse_table(&table));
    }
    Ok(found)
}

/// The listening sockets of the session, sorted by port then address, each with the process
/// holding it where one is found; at most [`PORTS_LIST_MAX`].
pub(crate) fn list() -> std::io::Result<Vec<ListeningPort>> {
    let mut listeners = listeners()?;
    listeners.sort_by_key(|l| (l.port, l.address));
    listeners.dedup_by(|a, b| a.port == b.port && a.address == b.address);
    listeners.truncate(PORTS_LIST_MAX);
    let owners = socket_owners();
    Ok(listeners
        .into_iter()
        .map(|listener| {
            let owner = owners.get(&listener.inode);
            ListeningPort {
                port: listener.port,
                address: listener.address.to_string(),
                pid: owner.map(|(pid, _)| *pid),
                process: owner.map(|(_, name)| name.clone()),
            }
        })
        .collect())
}

/// The listening sockets in one `/proc/net/tcp` or `tcp6` table; lines that do not parse
/// are skipped.
fn parse_table(table: &str) -> Vec<Listener> {
    table.lines().skip(1).filter_map(parse_line).collect()
}

/// One line of the table, when it is a listening socket:
/// `sl local_address rem_address st … uid timeout inode …`.
fn parse_line(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&TCP_LISTEN) {
        return None;
    }
    let (address, port) = fields.get(1)?.split_once(':')?;
    Some(Listener {
        address: parse_address(address)?,
        port: u16::from_str_radix(port, 16).ok()?,
        inode: fields.get(9)?.parse().ok()?,
    })
}

/// An address as the kernel prints it: the bytes of the address read as native-endian 32-bit
/// words, each in hex (one word for IPv4, four for IPv6).
fn parse_address(hex: &str) -> Option<IpAddr> {
    let words = (0..hex.len() / 8)
        .map(|i| {
            hex.get(i * 8..i * 8 + 8)
                .and_then(|word| u32::from_str_radix(word, 16).ok())
        })
        .collect::<Option<Vec<u32>>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match (hex.len(), bytes.len()) {
        (8, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            bytes[0], bytes[1], bytes[2], bytes[3],
        ))),
        (32, 16) => {
            let octets: [u8; 16] = bytes.try_into().ok()?;
            let v6 = Ipv6Addr::from(octets);
            // A dual-stack listener on an IPv4 address shows as ::ffff:a.b.c.d.
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            })
        }
        _ => None,
    }
}

/// Socket inode → (pid, `comm`) of a process holding it, from `/proc/{pid}/fd`. Processes
/// that vanish or cannot be read are skipped; at most [`PROCESSES_SCANNED_MAX`] are looked at.
fn socket_owners() -> HashMap<u64, (i32, String)> {
    let mut owners = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return owners;
    };
    let pids = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .take(PROCESSES_SCANNED_MAX);
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let name = name
                .get_or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|comm| comm.trim_end().to_owned())
                        .unwrap_or_default()
                })
                .clone();
            owners.entry(inode).or_insert((pid, name));
        }
    }
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F40 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4244 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:2328 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5152 1 0000000000000000 100 0 0 10 0
";

    #[cfg(target_endian = "little")]
    #[test]
    fn listening_sockets_are_read_with_their_addresses() {
        let v4 = parse_table(TCP);
        assert_eq!(
            v4,
            [
                Listener {
                    address: "127.0.0.1".parse().unwrap(),
                    port: 8000,
                    inode: 4242
                },
                Listener {
                    address: "0.0.0.0".parse().unwrap(),
                    port: 80,
                    inode: 4243
                },
            ],
            "the established connection (st 01) is not a listener"
        );
        let v6 = parse_table(TCP6);
        assert_eq!(v6[0].address, "::".parse::<IpAddr>().unwrap());
        assert_eq!(v6[0].port, 9000);
        assert_eq!(v6[1].address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(v6[1].port, 9001);
    }

    #[test]
    fn garbage_lines_are_skipped() {
        assert!(parse_table("header\nnot a socket line\n   0: zz:1F40 x 0A").is_empty());
        assert!(parse_address("0100007").is_none());
    }
}
