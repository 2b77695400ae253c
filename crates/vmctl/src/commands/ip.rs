//! `vmctl ip check|list` (issue 6). `ip check` is the scan and probe of [`crate::address`]
//! (shared with every create's address claim); `ip list` finds every domain's addresses.
//!
//! Bridged VMs have no libvirt DHCP lease, so their addresses come from, in this order: the
//! static address in vmctl's metadata, the guest agent, the host's neighbour table, and last an
//! ARP scan of the bridge (`netscan`; raw `AF_PACKET` with `CAP_NET_RAW`, else the kernel's own
//! resolution, slower).

use std::net::Ipv4Addr;

use hostio::HostRoot;
use hypervisor::domain::parse::{DomainFacts, parse_domain};
use hypervisor::{DomainRecord, GuestAddress, Hypervisor, State};
use netscan::{MacAddr, Scan, ScanRequest};
use serde::Serialize;

use crate::config::Config;
use crate::error::Result;
// `ip check` is the scan and probe every create's claim uses too.
pub use crate::address::{
    AUTO, Holder, IpCheck, IpProbe, MacOwners, UsedAddress, check, check_from_scan, fallback_note,
    is_auto, mac_owners, probe, probe_request, validate,
};

/// Where `ip list` learnt an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IpSource {
    /// The static address vmctl recorded at create.
    Metadata,
    /// qemu-guest-agent (`virsh domifaddr --source agent`).
    Agent,
    /// The host's neighbour table (no packet sent).
    Neighbour,
    /// An ARP scan of the bridge.
    Arp,
}

impl IpSource {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metadata => "metadata",
            Self::Agent => "agent",
            Self::Neighbour => "neighbour",
            Self::Arp => "arp",
        }
    }
}

/// An address of a VM and where it was learnt: what `list`, `info`, `ssh` and `ip list` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KnownAddress {
    pub ip: Ipv4Addr,
    pub source: IpSource,
}

/// The host's neighbour table as (IP, MAC) pairs, for [`known_addresses`]; a table that cannot
/// be read is empty, with the reason.
pub fn neighbours(host: &HostRoot) -> (Vec<(Ipv4Addr, MacAddr)>, Option<String>) {
    match netscan::read_neighbours(host) {
        Ok(table) => (table_pairs(&table), None),
        Err(e) => (Vec::new(), Some(format!("neighbour table: {e}"))),
    }
}

/// The one answer to "what is this VM's address": for each NIC, in order, the first source
/// that knows it among vmctl's metadata (the static IP), the guest agent (a running domain) and
/// the neighbour table (`neighbours`, from [`neighbours`]). `vmctl list`, `info`, `ssh` and
/// `ip list` all ask this (`ip list` then scans the bridge for what is still unknown), so they
/// agree on the address and its source.
pub fn known_addresses(
    hv: &dyn Hypervisor,
    neighbours: &[(Ipv4Addr, MacAddr)],
    rec: &DomainRecord,
    f: &DomainFacts,
) -> Vec<KnownAddress> {
    found(resolve_known(Some(hv), neighbours, rec, f))
}

/// [`known_addresses`] without the guest agent (a round trip per VM): the metadata and the
/// neighbour table only. What a refresh of every VM at once (`vmctl top`, a metrics scrape)
/// can afford.
pub fn known_addresses_without_agent(
    neighbours: &[(Ipv4Addr, MacAddr)],
    rec: &DomainRecord,
    f: &DomainFacts,
) -> Vec<KnownAddress> {
    found(resolve_known(None, neighbours, rec, f))
}

fn found(nics: Vec<Nic>) -> Vec<KnownAddress> {
    nics.into_iter()
        .flat_map(|n| n.found)
        .map(|(ip, source)| KnownAddress { ip, source })
        .collect()
}

/// [`known_addresses`] per NIC; the agent is asked only when `hv` is given.
fn resolve_known(
    hv: Option<&dyn Hypervisor>,
    neighbours: &[(Ipv4Addr, MacAddr)],
    rec: &DomainRecord,
    f: &DomainFacts,
) -> Vec<Nic> {
    let mut nics = nics_of(rec, f);
    // 2. The guest agent, for a running domain whose NICs are still unknown (a paused guest's
    // agent cannot answer).
    if let Some(hv) = hv
        && rec.state == State::Running
        && nics.iter().any(|n| n.found.is_empty() && n.mac.is_some())
        && let Ok(addrs) = hv.agent_addresses(&rec.name)
    {
        for n in nics.iter_mut().filter(|n| n.found.is_empty()) {
            if let Some(mac) = n.mac {
                n.found.extend(
                    guest_ipv4(&addrs, mac)
                        .into_iter()
                        .map(|ip| (ip, IpSource::Agent)),
                );
            }
        }
    }
    // 3. The neighbour table (any interface: the bridge's entries, or a routed VM's).
    resolve_from(&mut nics, neighbours, IpSource::Neighbour);
    nics
}

/// One NIC's address (or the lack of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmAddress {
    pub vm: String,
    pub state: State,
    pub mac: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub source: Option<IpSource>,
}

/// `vmctl ip list --json`.
#[derive(Debug, Clone, Serialize)]
pub struct IpListing {
    pub uri: String,
    pub bridge: String,
    /// Whether the bridge was scanned (only when running VMs were left without an address).
    pub scanned: bool,
    pub addresses: Vec<VmAddress>,
    /// Why a source could not be used (printed on stderr by the binary).
    pub notes: Vec<String>,
}

/// One NIC to resolve.
#[derive(Debug, Clone)]
struct Nic {
    vm: String,
    state: State,
    mac: Option<MacAddr>,
    mac_text: Option<String>,
    found: Vec<(Ipv4Addr, IpSource)>,
}

fn guest_ipv4(addrs: &[GuestAddress], mac: MacAddr) -> Vec<Ipv4Addr> {
    addrs
        .iter()
        .filter(|a| {
            a.mac
                .as_deref()
                .and_then(|m| m.parse::<MacAddr>().ok())
                .is_some_and(|m| m == mac)
        })
        .filter_map(|a| a.ip.parse::<Ipv4Addr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_link_local())
        .collect()
}

fn nics_of(rec: &DomainRecord, f: &DomainFacts) -> Vec<Nic> {
    let mut nics: Vec<Nic> = f
        .nics
        .iter()
        .map(|n| Nic {
            vm: rec.name.clone(),
            state: rec.state,
            mac: n.mac.as_deref().and_then(|m| m.parse().ok()),
            mac_text: n.mac.clone(),
            found: Vec::new(),
        })
        .collect();
    // 1. vmctl's metadata: the static address of the NIC vmctl made (the first).
    let meta_ip = f
        .metadata
        .as_ref()
        .and_then(|m| m.ip.as_deref())
        .and_then(|ip| ip.split('/').next())
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    if let Some(ip) = meta_ip {
        match nics.first_mut() {
            Some(n) => n.found.push((ip, IpSource::Metadata)),
            None => nics.push(Nic {
                vm: rec.name.clone(),
                state: rec.state,
                mac: None,
                mac_text: None,
                found: vec![(ip, IpSource::Metadata)],
            }),
        }
    }
    nics
}

/// `vmctl ip list`: every domain's NICs with their IPv4 addresses, each from the first source
/// that knows it. The bridge (`bridge`, default the setting) is scanned only when a running VM
/// is still without an address after the cheaper sources.
pub fn list(
    config: &Config,
    host: &HostRoot,
    hv: &dyn Hypervisor,
    scanner: &dyn Scan,
    bridge: Option<&str>,
) -> Result<IpListing> {
    let bridge = bridge.unwrap_or(config.value("bridge")).to_string();
    let mut notes = Vec::new();
    let (table, note) = neighbours(host);
    notes.extend(note);
    let mut nics = Vec::new();
    for rec in hv.list()? {
        let Ok(f) = parse_domain(&rec.xml) else {
            notes.push(format!("{}: unreadable domain XML, skipped", rec.name));
            continue;
        };
        nics.extend(resolve_known(Some(hv), &table, &rec, &f));
    }
    let unresolved_running = |nics: &[Nic]| {
        nics.iter()
            .any(|n| n.found.is_empty() && n.mac.is_some() && n.state.is_active())
    };
    // 4. An ARP scan of the bridge.
    let mut scanned = false;
    if unresolved_running(&nics) {
        match scanner.scan(&ScanRequest::new(&bridge)) {
            Ok(r) => {
                scanned = true;
                if r.fallback {
                    notes.push(fallback_note());
                }
                let pairs: Vec<(Ipv4Addr, MacAddr)> = r
                    .used
                    .iter()
                    .filter(|h| !h.local)
                    .map(|h| (h.ip, h.mac))
                    .collect();
                resolve_from(&mut nics, &pairs, IpSource::Arp);
            }
            Err(e) => notes.push(format!(
                "ARP scan of {bridge} skipped: {e}{}",
                e.help().map(|h| format!(" ({h})")).unwrap_or_default()
            )),
        }
    }
    let mut addresses = Vec::new();
    for n in nics {
        if n.found.is_empty() {
            addresses.push(VmAddress {
                vm: n.vm,
                state: n.state,
                mac: n.mac_text,
                ip: None,
                source: None,
            });
            continue;
        }
        for (ip, source) in n.found {
            addresses.push(VmAddress {
                vm: n.vm.clone(),
                state: n.state,
                mac: n.mac.map(|m| m.to_string()).or(n.mac_text.clone()),
                ip: Some(ip),
                source: Some(source),
            });
        }
    }
    Ok(IpListing {
        uri: hv.uri().to_string(),
        bridge,
        scanned,
        addresses,
        notes,
    })
}

fn table_pairs(table: &[netscan::Neighbour]) -> Vec<(Ipv4Addr, MacAddr)> {
    table.iter().map(|n| (n.ip, n.mac)).collect()
}

fn resolve_from(nics: &mut [Nic], pairs: &[(Ipv4Addr, MacAddr)], source: IpSource) {
    for n in nics.iter_mut().filter(|n| n.found.is_empty()) {
        let Some(mac) = n.mac else { continue };
        let mut ips: Vec<Ipv4Addr> = pairs
            .iter()
            .filter(|(_, m)| *m == mac)
            .map(|(ip, _)| *ip)
            .collect();
        ips.sort();
        ips.dedup();
        n.found.extend(ips.into_iter().map(|ip| (ip, source)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn list_sources_in_order() {
        let rec = |name: &str, state| DomainRecord {
            name: name.into(),
            id: None,
            state,
            persistent: true,
            autostart: false,
            xml: String::new(),
        };
        let nic = |m: &str| hypervisor::domain::parse::NicFacts {
            mac: Some(m.into()),
            kind: "bridge".into(),
            source: Some("br0".into()),
        };
        let mut f = DomainFacts {
            nics: vec![nic("52:54:00:00:00:01")],
            ..Default::default()
        };
        f.metadata = Some(hypervisor::domain::Metadata {
            os: "ubuntu".into(),
            release: None,
            user: None,
            ssh_key: None,
            ip: Some("198.18.5.20/24".into()),
            base_image: None,
            base_sha256: None,
            created: String::new(),
            version: String::new(),
            disks: Vec::new(),
            files: Vec::new(),
            dir: None,
            readonly_shares: Vec::new(),
            vgpus: Vec::new(),
        });
        let mut nics = nics_of(&rec("static", State::ShutOff), &f);
        let g = DomainFacts {
            nics: vec![nic("52:54:00:00:00:02"), nic("52:54:00:00:00:03")],
            ..Default::default()
        };
        nics.extend(nics_of(&rec("dyn", State::Running), &g));
        let agent = [GuestAddress {
            mac: Some("52:54:00:00:00:02".into()),
            ip: "198.18.5.30".into(),
            prefix: 24,
        }];
        assert_eq!(
            guest_ipv4(&agent, mac("52:54:00:00:00:02")),
            [ip("198.18.5.30")]
        );
        nics[1].found.push((ip("198.18.5.30"), IpSource::Agent));
        let table = [
            (ip("198.18.5.99"), mac("52:54:00:00:00:01")),
            (ip("198.18.5.31"), mac("52:54:00:00:00:03")),
        ];
        resolve_from(&mut nics, &table, IpSource::Neighbour);
        let got: Vec<_> = nics.iter().map(|n| n.found.clone()).collect();
        assert_eq!(
            got,
            [
                vec![(ip("198.18.5.20"), IpSource::Metadata)],
                vec![(ip("198.18.5.30"), IpSource::Agent)],
                vec![(ip("198.18.5.31"), IpSource::Neighbour)],
            ]
        );
    }
}
