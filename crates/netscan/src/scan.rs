//! The scanner: runs a [`ScanPlan`] with raw ARP or the neighbour table and turns the replies
//! into a [`ScanResult`] (used hosts with vendors, conflicts, free ranges).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::Instant;

use hostio::HostRoot;
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::plan::{ScanMethod, ScanPlan, ScanRequest, plan_scan};
use crate::{Error, Interface, IpRange, MacAddr, OuiDb, engine, free_ranges, neigh};

/// One (IP, MAC) pair seen on the segment. An address with two MACs appears twice, and in
/// [`ScanResult::conflicts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// From the MAC's OUI, when known.
    pub vendor: Option<String>,
    /// The scanning interface's own address (not probed; listed because it is not free).
    pub local: bool,
}

/// One IP claimed by several MACs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub ip: Ipv4Addr,
    pub macs: Vec<MacAddr>,
}

/// What a scan found. Serialises to the JSON `vmctl ip check --json` prints (plus a `vm` field
/// vmctl adds per host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanResult {
    pub interface: String,
    pub subnet: Ipv4Net,
    pub local_ip: Ipv4Addr,
    /// How the scan ran: `raw` or `neighbour`.
    pub method: ScanMethod,
    /// True when raw ARP was refused for lack of privilege and the neighbour table was used.
    pub fallback: bool,
    /// Sorted by IP, then MAC.
    pub used: Vec<Host>,
    pub conflicts: Vec<Conflict>,
    /// Host addresses nobody answered for, compacted (`198.18.5.2-198.18.5.9`).
    pub free: Vec<IpRange>,
    pub free_count: u64,
    /// Addresses probed (the subnet's hosts minus our own).
    pub probed: u64,
    pub packets_sent: u64,
    pub rate_pps: u32,
    pub retries: u32,
    pub timeout_ms: u64,
    pub duration_ms: u64,
}

impl ScanResult {
    /// MACs that answered for `ip`.
    pub fn macs_of(&self, ip: Ipv4Addr) -> Vec<MacAddr> {
        self.used
            .iter()
            .filter(|h| h.ip == ip)
            .map(|h| h.mac)
            .collect()
    }
}

/// The answer for one address (`vmctl ip check A.B.C.D`, the probe before `--ip X`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub ip: Ipv4Addr,
    /// Empty: free. Two or more: a conflict.
    pub macs: Vec<MacAddr>,
    /// The address is the scanning interface's own.
    pub local: bool,
    pub method: ScanMethod,
    pub fallback: bool,
    pub duration_ms: u64,
}

impl ProbeResult {
    pub fn is_free(&self) -> bool {
        self.macs.is_empty() && !self.local
    }
}

/// Runs scans. Holds the host root (neighbour table, ARP timers, OUI files).
#[derive(Debug)]
pub struct Scanner {
    host: HostRoot,
    /// Set: used as is. Unset: each scan loads the vendors of the MACs it saw.
    oui: Option<OuiDb>,
}

impl Scanner {
    pub fn new(host: HostRoot) -> Self {
        Scanner { host, oui: None }
    }

    /// A scanner with a given vendor table (tests, or to skip reading the system file).
    pub fn with_oui(host: HostRoot, oui: OuiDb) -> Self {
        Scanner {
            host,
            oui: Some(oui),
        }
    }

    /// Runs a plan. With [`ScanMethod::Auto`], a raw socket refused with `EPERM`/`EACCES`
    /// falls back to the neighbour table and the result says so.
    pub fn run(&self, plan: &ScanPlan) -> Result<ScanResult, Error> {
        let started = Instant::now();
        let (method, fallback, replies, sent) = match plan.method {
            ScanMethod::Neighbour => {
                let (r, n) = neigh::run(&self.host, plan)?;
                (ScanMethod::Neighbour, false, r, n)
            }
            ScanMethod::Raw => {
                let o = engine::run(plan)?;
                (ScanMethod::Raw, false, o.replies, o.packets_sent)
            }
            ScanMethod::Auto => match engine::run(plan) {
                Ok(o) => (ScanMethod::Raw, false, o.replies, o.packets_sent),
                Err(Error::OpenSocket { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) =>
                {
                    let (r, n) = neigh::run(&self.host, plan)?;
                    (ScanMethod::Neighbour, true, r, n)
                }
                Err(e) => return Err(e),
            },
        };
        Ok(self.assemble(plan, method, fallback, &replies, sent, started))
    }

    fn assemble(
        &self,
        plan: &ScanPlan,
        method: ScanMethod,
        fallback: bool,
        replies: &BTreeSet<(Ipv4Addr, MacAddr)>,
        packets_sent: u64,
        started: Instant,
    ) -> ScanResult {
        let loaded;
        let oui = match &self.oui {
            Some(o) => o,
            None => {
                let seen = replies
                    .iter()
                    .map(|(_, m)| m.oui())
                    .chain([plan.local_mac.oui()])
                    .collect();
                loaded = OuiDb::load_only(&self.host, &seen);
                &loaded
            }
        };
        let vendor = |mac: MacAddr| oui.lookup(mac).map(str::to_string);
        let mut used: Vec<Host> = replies
            .iter()
            .filter(|(ip, _)| plan.subnet.contains(ip) && *ip != plan.local_ip)
            .map(|&(ip, mac)| Host {
                ip,
                mac,
                vendor: vendor(mac),
                local: false,
            })
            .collect();
        if plan.subnet.contains(&plan.local_ip) {
            used.push(Host {
                ip: plan.local_ip,
                mac: plan.local_mac,
                vendor: vendor(plan.local_mac),
                local: true,
            });
        }
        used.sort_by_key(|h| (h.ip, h.mac));
        let mut by_ip: BTreeMap<Ipv4Addr, Vec<MacAddr>> = BTreeMap::new();
        for h in &used {
            by_ip.entry(h.ip).or_default().push(h.mac);
        }
        let conflicts = by_ip
            .into_iter()
            .filter(|(_, macs)| macs.len() > 1)
            .map(|(ip, macs)| Conflict { ip, macs })
            .collect();
        let taken: BTreeSet<Ipv4Addr> = used.iter().map(|h| h.ip).collect();
        let (free, free_count) = free_ranges(plan.subnet, &taken);
        ScanResult {
            interface: plan.interface.clone(),
            subnet: plan.subnet,
            local_ip: plan.local_ip,
            method,
            fallback,
            used,
            conflicts,
            free,
            free_count,
            probed: plan.target_count(),
            packets_sent,
            rate_pps: plan.rate_pps,
            retries: plan.retries,
            timeout_ms: u64::try_from(plan.timeout.as_millis()).unwrap_or(u64::MAX),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A network scanner as the commands see it: injected (vmctl's `Ctx`), so the composition root
/// decides whether scans reach the live network, and tests substitute a fake.
pub trait Scan {
    /// Looks up the interface and validates the request: every bad-input error happens here,
    /// before any packet is sent.
    fn plan(&self, req: &ScanRequest) -> Result<ScanPlan, Error>;

    /// Plans and runs a scan.
    fn scan(&self, req: &ScanRequest) -> Result<ScanResult, Error>;

    /// Probes one address on `interface` (which must have it in one of its subnets): who
    /// answers for it. Two retries, default rate and reply window.
    fn probe_one(&self, interface: &str, ip: Ipv4Addr) -> Result<ProbeResult, Error> {
        let mut req = ScanRequest::new(interface);
        req.subnet = Some(Ipv4Net::from(ip));
        req.retries = Some(2);
        let r = self.scan(&req)?;
        Ok(ProbeResult {
            ip,
            macs: r.used.iter().filter(|h| !h.local).map(|h| h.mac).collect(),
            local: r.local_ip == ip,
            method: r.method,
            fallback: r.fallback,
            duration_ms: r.duration_ms,
        })
    }
}

impl Scan for Scanner {
    fn plan(&self, req: &ScanRequest) -> Result<ScanPlan, Error> {
        plan_scan(req, &Interface::lookup(&req.interface)?)
    }

    fn scan(&self, req: &ScanRequest) -> Result<ScanResult, Error> {
        let plan = self.plan(req)?;
        self.run(&plan)
    }
}

/// A scanner that sends nothing and reads nothing: every call fails with
/// [`Error::NoScanner`]. What a context gets when nobody injected a real one (tests, and
/// commands that must not touch the network).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoScan;

impl Scan for NoScan {
    fn plan(&self, req: &ScanRequest) -> Result<ScanPlan, Error> {
        Err(Error::NoScanner {
            interface: req.interface.clone(),
        })
    }

    fn scan(&self, req: &ScanRequest) -> Result<ScanResult, Error> {
        Err(Error::NoScanner {
            interface: req.interface.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan() -> ScanPlan {
        ScanPlan {
            interface: "br0".into(),
            ifindex: 3,
            local_mac: "02:00:00:00:00:01".parse().expect("mac"),
            local_ip: "198.18.5.1".parse().expect("ip"),
            subnet: "198.18.5.0/24".parse().expect("net"),
            rate_pps: 2000,
            timeout: Duration::from_millis(100),
            retries: 2,
            method: ScanMethod::Raw,
        }
    }

    #[test]
    fn assembles_used_conflicts_and_free() {
        let s = Scanner::with_oui(HostRoot::new("/nonexistent"), OuiDb::embedded());
        let mac = |s: &str| s.parse::<MacAddr>().expect("mac");
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        let replies: BTreeSet<_> = [
            (ip("198.18.5.10"), mac("52:54:00:00:00:0a")),
            (ip("198.18.5.200"), mac("52:54:00:00:00:c8")),
            (ip("198.18.5.200"), mac("02:00:00:00:00:c8")),
            (ip("198.18.6.1"), mac("02:00:00:00:00:99")), // off-subnet: dropped
        ]
        .into();
        let r = s.assemble(
            &plan(),
            ScanMethod::Raw,
            false,
            &replies,
            300,
            Instant::now(),
        );
        let used: Vec<String> = r
            .used
            .iter()
            .map(|h| format!("{} {} {}", h.ip, h.mac, h.local))
            .collect();
        assert_eq!(
            used,
            [
                "198.18.5.1 02:00:00:00:00:01 true",
                "198.18.5.10 52:54:00:00:00:0a false",
                "198.18.5.200 02:00:00:00:00:c8 false",
                "198.18.5.200 52:54:00:00:00:c8 false",
            ]
        );
        assert_eq!(r.used[1].vendor.as_deref(), Some("QEMU/KVM virtual NIC"));
        assert_eq!(r.conflicts.len(), 1);
        assert_eq!(r.conflicts[0].ip, ip("198.18.5.200"));
        assert_eq!(r.free_count, 254 - 3);
        let free: Vec<String> = r.free.iter().map(ToString::to_string).collect();
        assert_eq!(
            free,
            [
                "198.18.5.2-198.18.5.9",
                "198.18.5.11-198.18.5.199",
                "198.18.5.201-198.18.5.254"
            ]
        );
        let json = serde_json::to_value(&r).expect("json");
        assert_eq!(json["subnet"], "198.18.5.0/24");
        assert_eq!(json["method"], "raw");
        assert_eq!(json["free"][0], "198.18.5.2-198.18.5.9");
        assert_eq!(json["used"][1]["mac"], "52:54:00:00:00:0a");
        assert_eq!(
            crate::pick_free(
                &r,
                &[IpRange::parse("198.18.5.1-198.18.5.5").expect("r")],
                &[ip("198.18.5.6")]
            ),
            Some(ip("198.18.5.7"))
        );
    }
}
