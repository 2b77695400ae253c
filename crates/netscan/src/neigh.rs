//! The unprivileged path: the kernel's IPv4 neighbour table. Reading it needs no privilege, and
//! sending a UDP datagram to an address on the segment makes the kernel resolve it by ARP.
//! Slower than raw ARP (the kernel's own ARP timers decide) and blind to duplicate IPs (the table
//! holds one MAC per address).

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, UdpSocket};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use hostio::{HostRoot, paths};
use serde::Serialize;

use crate::{Error, MacAddr, ScanPlan};

/// ATF_COM in `<linux/if_arp.h>`: the entry is complete (has a MAC).
const ATF_COM: u32 = 0x02;
/// The discard service (RFC 863): a datagram there is harmless whatever the host runs.
const DISCARD_PORT: u16 = 9;
/// Triggers per round. The table's hard limit is `gc_thresh3` (1024 by default, ip-sysctl.rst);
/// past it the kernel refuses new entries, so wide subnets are resolved in rounds.
const ROUND: usize = 512;
/// Linux defaults for `neigh/<if>/mcast_solicit` and `retrans_time_ms` (ip-sysctl.rst, arp(7)).
const DEFAULT_SOLICIT: u64 = 3;
const DEFAULT_RETRANS_MS: u64 = 1000;

/// One complete entry of the neighbour table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub interface: String,
}

/// Parses `/proc/net/arp` (columns: IP, HW type, Flags, HW address, Mask, Device), keeping
/// complete entries only; incomplete and failed ones have flags 0 and a zero MAC.
pub fn parse_proc_net_arp(text: &str) -> Vec<Neighbour> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            if flags & ATF_COM == 0 {
                return None;
            }
            let mac: MacAddr = f[3].parse().ok()?;
            if mac == MacAddr::ZERO {
                return None;
            }
            Some(Neighbour {
                ip: f[0].parse().ok()?,
                mac,
                interface: f[5].to_string(),
            })
        })
        .collect()
}

/// Reads the complete entries of the neighbour table of the caller's network namespace (under
/// `host`). No packet is sent: `vmctl ip list` and the IP resolver read it passively.
pub fn read_table(host: &HostRoot) -> Result<Vec<Neighbour>, Error> {
    host.read_to_string(paths::PROC_NET_ARP)
        .map(|t| parse_proc_net_arp(&t))
        .map_err(|source| Error::ReadNeighbours {
            path: PathBuf::from(paths::PROC_NET_ARP),
            source,
        })
}

/// How long the kernel keeps trying to resolve a new neighbour: `mcast_solicit` probes,
/// `retrans_time_ms` apart, read for this interface.
fn resolution_time(host: &HostRoot, interface: &str) -> Duration {
    let read = |name: &str, default: u64| {
        host.read_to_string(format!(
            "{}/{interface}/{name}",
            paths::PROC_SYS_NET_IPV4_NEIGH
        ))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(default)
    };
    let solicit = read("mcast_solicit", DEFAULT_SOLICIT).max(1);
    let retrans = read("retrans_time_ms", DEFAULT_RETRANS_MS);
    Duration::from_millis(solicit * retrans)
}

/// Triggers resolution of every target (paced at the plan's rate, in rounds the table can hold),
/// waits for the kernel's ARP probes to finish, and returns the complete entries for targets on
/// the plan's interface, with the number of datagrams sent.
pub(crate) fn run(
    host: &HostRoot,
    plan: &ScanPlan,
) -> Result<(BTreeSet<(Ipv4Addr, MacAddr)>, u64), Error> {
    let sock =
        UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|source| Error::TriggerResolution {
            ip: Ipv4Addr::UNSPECIFIED,
            source,
        })?;
    let wait = resolution_time(host, &plan.interface) + Duration::from_millis(100);
    let interval = Duration::from_secs_f64(1.0 / f64::from(plan.rate_pps));
    let mut found = BTreeSet::new();
    let mut sent = 0u64;
    let targets: Vec<Ipv4Addr> = plan.targets().collect();
    for round in targets.chunks(ROUND) {
        let start = Instant::now();
        for (n, ip) in round.iter().enumerate() {
            let due = start + interval * u32::try_from(n).unwrap_or(u32::MAX);
            thread::sleep(due.saturating_duration_since(Instant::now()));
            // Errors here are per address (an earlier failed resolution reported as
            // EHOSTUNREACH, a full table as ENOBUFS): the table read below is the answer.
            if sock.send_to(&[], (*ip, DISCARD_PORT)).is_ok() {
                sent += 1;
            }
        }
        thread::sleep(wait);
        let wanted: BTreeSet<Ipv4Addr> = round.iter().copied().collect();
        found.extend(
            read_table(host)?
                .into_iter()
                .filter(|n| n.interface == plan.interface && wanted.contains(&n.ip))
                .map(|n| (n.ip, n.mac)),
        );
    }
    Ok((found, sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
IP address       HW type     Flags       HW address            Mask     Device
198.18.5.10      0x1         0x2         52:54:00:00:05:0a     *        br0
198.18.5.11      0x1         0x0         00:00:00:00:00:00     *        br0
198.18.5.12      0x1         0x6         52:54:00:00:05:0c     *        br0
10.0.0.1         0x1         0x2         aa:bb:cc:dd:ee:ff     *        eth0
garbage
";

    #[test]
    fn keeps_complete_entries_only() {
        let n = parse_proc_net_arp(TABLE);
        let ips: Vec<String> = n
            .iter()
            .map(|n| format!("{} {} {}", n.ip, n.mac, n.interface))
            .collect();
        assert_eq!(
            ips,
            [
                "198.18.5.10 52:54:00:00:05:0a br0",
                "198.18.5.12 52:54:00:00:05:0c br0",
                "10.0.0.1 aa:bb:cc:dd:ee:ff eth0"
            ]
        );
    }

    #[test]
    fn reads_table_and_timers_through_the_host_root() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = HostRoot::new(dir.path());
        host.write_atomic(paths::PROC_NET_ARP, TABLE.as_bytes(), 0o644)
            .expect("write");
        assert_eq!(read_table(&host).expect("read").len(), 3);
        assert_eq!(resolution_time(&host, "br0"), Duration::from_secs(3));
        let neigh = format!("{}/br0", paths::PROC_SYS_NET_IPV4_NEIGH);
        host.write_atomic(format!("{neigh}/mcast_solicit"), b"2\n", 0o644)
            .expect("write");
        host.write_atomic(format!("{neigh}/retrans_time_ms"), b"500\n", 0o644)
            .expect("write");
        assert_eq!(resolution_time(&host, "br0"), Duration::from_secs(1));
    }

    #[test]
    fn missing_table_names_the_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let e = read_table(&HostRoot::new(dir.path())).expect_err("missing");
        assert!(e.to_string().contains("/proc/net/arp"), "{e}");
    }
}
