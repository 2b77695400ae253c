//! The addresses on a bridge, as `vmctl ip check` sees them and every create claims one: ARP
//! scans through `netscan` matched to libvirt domains by MAC, the probe of one address, and IP
//! reservations in vmctl's state directory so that concurrent creates never collide
//! ([`claim_address`], [`Claim`]; `vmctl delete` gives the address back, [`release_deleted`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use hypervisor::Hypervisor;
use hypervisor::domain::parse::parse_domain;
use ipnet::Ipv4Net;
use netscan::{
    Conflict, IpRange, MacAddr, ReservationStore, Scan, ScanMethod, ScanRequest, ScanResult,
};
use serde::Serialize;

use crate::config::Config;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::net::{self, NetworkRequest};

/// `--ip auto`: pick a free address on the bridge.
pub const AUTO: &str = "auto";
/// How long a create holds its address before the VM is defined. It covers an image download;
/// if vmctl dies, the reservation expires on its own.
pub const CLAIM_TTL: Duration = Duration::from_secs(3600);
/// How long the address stays reserved after a successful create: a new VM is silent on the
/// bridge until it has booted, and VMs of another libvirt connection (qemu:///session next to
/// qemu:///system) share the bridge without seeing each other's metadata.
pub const BOOT_TTL: Duration = Duration::from_secs(600);

/// True for `--ip auto`.
pub fn is_auto(ip: &str) -> bool {
    ip.eq_ignore_ascii_case(AUTO)
}

fn scan_err(interface: &str) -> impl FnOnce(netscan::Error) -> Error + '_ {
    move |source| Error::Scan {
        interface: interface.to_string(),
        source,
    }
}

/// Which domain owns which MAC, from every domain's XML (all NICs, any kind).
pub type MacOwners = BTreeMap<MacAddr, String>;

/// The MAC → domain map of every domain on the connection.
pub fn mac_owners(hv: &dyn Hypervisor) -> Result<MacOwners> {
    let mut owners = MacOwners::new();
    for rec in hv.list()? {
        let Ok(f) = parse_domain(&rec.xml) else {
            continue;
        };
        for mac in f.nics.iter().filter_map(|n| n.mac.as_deref()) {
            if let Ok(m) = mac.parse::<MacAddr>() {
                owners.insert(m, rec.name.clone());
            }
        }
    }
    Ok(owners)
}

/// One (IP, MAC) pair on the segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UsedAddress {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    /// From the MAC's OUI, when known.
    pub vendor: Option<String>,
    /// The libvirt domain with this MAC; null when none (or libvirt was unreachable).
    pub vm: Option<String>,
    /// The scanning interface's own address.
    pub local: bool,
}

/// `vmctl ip check --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpCheck {
    pub interface: String,
    pub subnet: Ipv4Net,
    pub used: Vec<UsedAddress>,
    /// Free host addresses, compacted (`a-b`).
    pub free: Vec<IpRange>,
    pub free_count: u64,
    pub duration_ms: u64,
    /// One IP answered by several MACs.
    pub conflicts: Vec<Conflict>,
    /// `raw` (ARP on a packet socket) or `neighbour` (kernel table, unprivileged fallback).
    pub method: ScanMethod,
    /// Raw ARP was refused for lack of `CAP_NET_RAW` and the neighbour table was used.
    pub fallback: bool,
    /// False when libvirt could not be asked: every `vm` is null then.
    pub vms_known: bool,
    pub local_ip: Ipv4Addr,
    pub probed: u64,
    pub packets_sent: u64,
    pub rate_pps: u32,
    pub retries: u32,
    pub timeout_ms: u64,
}

/// Joins a scan with the MAC owners (pure).
pub fn check_from_scan(r: ScanResult, owners: Option<&MacOwners>) -> IpCheck {
    let vm_of = |mac: &MacAddr| owners.and_then(|o| o.get(mac).cloned());
    IpCheck {
        used: r
            .used
            .iter()
            .map(|h| UsedAddress {
                ip: h.ip,
                mac: h.mac,
                vendor: h.vendor.clone(),
                vm: vm_of(&h.mac),
                local: h.local,
            })
            .collect(),
        interface: r.interface,
        subnet: r.subnet,
        free: r.free,
        free_count: r.free_count,
        duration_ms: r.duration_ms,
        conflicts: r.conflicts,
        method: r.method,
        fallback: r.fallback,
        vms_known: owners.is_some(),
        local_ip: r.local_ip,
        probed: r.probed,
        packets_sent: r.packets_sent,
        rate_pps: r.rate_pps,
        retries: r.retries,
        timeout_ms: r.timeout_ms,
    }
}

/// `vmctl ip check`: scans the request's subnet. `owners` is `None` when libvirt is unreachable.
/// `owners` is computed by the caller, so it can ask libvirt while the scan runs.
pub fn check(scanner: &dyn Scan, req: &ScanRequest, owners: Option<&MacOwners>) -> Result<IpCheck> {
    let r = scanner.scan(req).map_err(scan_err(&req.interface))?;
    Ok(check_from_scan(r, owners))
}

/// Who answered for a probed address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    pub mac: MacAddr,
    pub vendor: Option<String>,
    pub vm: Option<String>,
    /// The scanning interface itself (this host).
    pub local: bool,
}

/// `vmctl ip check A.B.C.D --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpProbe {
    pub ip: Ipv4Addr,
    pub interface: String,
    pub free: bool,
    /// Empty when free; two or more MACs: a conflict.
    pub taken_by: Vec<Holder>,
    pub method: ScanMethod,
    pub fallback: bool,
    pub vms_known: bool,
    pub duration_ms: u64,
}

impl IpProbe {
    /// "52:54:00:… (VM web1), …" for messages.
    pub fn holders(&self) -> String {
        self.taken_by
            .iter()
            .map(|h| match (&h.vm, h.local) {
                (_, true) => format!("{} (this host)", h.mac),
                (Some(vm), _) => format!("{} (VM {vm})", h.mac),
                (None, _) => h.mac.to_string(),
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The request for one address: its /32, two retries unless set.
pub fn probe_request(req: &ScanRequest, ip: Ipv4Addr) -> ScanRequest {
    let mut req = req.clone();
    req.subnet = Some(Ipv4Net::from(ip));
    req.retries = req.retries.or(Some(2));
    req
}

/// Checks a request against the interface without sending anything (bad input fails here).
pub fn validate(scanner: &dyn Scan, req: &ScanRequest) -> Result<()> {
    scanner
        .plan(req)
        .map(|_| ())
        .map_err(scan_err(&req.interface))
}

/// Probes one address with the request's rate, window and retries (two when unset).
pub fn probe(
    scanner: &dyn Scan,
    req: &ScanRequest,
    ip: Ipv4Addr,
    owners: Option<&MacOwners>,
) -> Result<IpProbe> {
    let c = check(scanner, &probe_request(req, ip), owners)?;
    let taken_by: Vec<Holder> = c
        .used
        .into_iter()
        .filter(|h| h.ip == ip)
        .map(|h| Holder {
            mac: h.mac,
            vendor: h.vendor,
            vm: h.vm,
            local: h.local,
        })
        .collect();
    Ok(IpProbe {
        ip,
        interface: c.interface,
        free: taken_by.is_empty(),
        taken_by,
        method: c.method,
        fallback: c.fallback,
        vms_known: c.vms_known,
        duration_ms: c.duration_ms,
    })
}

/// The stderr note for a scan that fell back to the neighbour table.
pub fn fallback_note() -> String {
    "no CAP_NET_RAW: used the kernel neighbour table instead of raw ARP (slower, blind to duplicate IPs); run as root or `setcap cap_net_raw+ep $(command -v vmctl)`".into()
}

/// The ranges `--ip auto` never picks: the `reserved_ips` setting, plus everything outside the
/// `reserved_ip_range` pool when that is set.
pub fn reserved_ranges(config: &Config, subnet: Ipv4Net) -> Result<Vec<IpRange>> {
    let parse = |key: &str| -> Result<Vec<IpRange>> {
        let Some(v) = config.get(key) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                IpRange::parse(s).map_err(|_| Error::BadSetting {
                    key: key.to_string(),
                    value: v.to_string(),
                    reason: format!("{s:?} is not A.B.C.D, A.B.C.D-E.F.G.H or A.B.C.D/NN"),
                })
            })
            .collect()
    };
    let mut out = parse("reserved_ips")?;
    let pool = parse("reserved_ip_range")?;
    if !pool.is_empty() {
        // Everything of the subnet outside the pool ranges is reserved.
        let mut cursor = u32::from(subnet.network());
        let end = u32::from(subnet.broadcast());
        let mut pool = pool;
        pool.sort();
        for p in pool {
            let (a, b) = (u32::from(p.first), u32::from(p.last));
            if a > cursor {
                out.push(IpRange {
                    first: Ipv4Addr::from(cursor),
                    last: Ipv4Addr::from((a - 1).min(end)),
                });
            }
            cursor = cursor.max(b.saturating_add(1));
            if cursor > end || b == u32::MAX {
                break;
            }
        }
        if cursor <= end {
            out.push(IpRange {
                first: Ipv4Addr::from(cursor),
                last: Ipv4Addr::from(end),
            });
        }
    }
    Ok(out)
}

/// The IPv4 addresses in vmctl metadata of every domain: a stopped VM is silent on the bridge
/// but still owns its address.
fn metadata_ips(hv: &dyn Hypervisor) -> Result<Vec<Ipv4Addr>> {
    let mut ips = Vec::new();
    for rec in hv.list()? {
        if let Ok(f) = parse_domain(&rec.xml)
            && let Some(ip) = f
                .metadata
                .and_then(|m| m.ip)
                .and_then(|ip| ip.split('/').next().and_then(|i| i.parse().ok()))
        {
            ips.push(ip);
        }
    }
    Ok(ips)
}

/// The addresses this host holds: its VMs' (by metadata: a stopped VM keeps its address), its
/// live reservations (creates under way, booting VMs) and those its cluster records name (nodes
/// on other hosts, VIPs). `cluster create --hosts` keeps every host's out of its picks. What
/// cannot be read is left out.
pub fn held_addresses(ctx: &Ctx) -> Vec<Ipv4Addr> {
    let mut out = metadata_ips(ctx.hv).unwrap_or_default();
    for dir in crate::talos::cluster_dirs(ctx.host, ctx.config) {
        if let Ok(r) = dir.load_record() {
            out.extend(r.nodes.iter().filter_map(|n| n.ip).chain(r.vip));
        }
    }
    let store = store(ctx);
    if store.exists()
        && let Ok(list) = store.list((ctx.clock)())
    {
        out.extend(list.iter().map(|r| r.ip));
    }
    out.sort();
    out.dedup();
    out
}

/// Says on stderr (a warning: shown without -v) that the reservation lock is busy.
fn lock_notice(path: &std::path::Path, pid: Option<u32>, wait: Duration) {
    let by = pid.map_or_else(|| "another process".to_string(), |p| format!("process {p}"));
    tracing::warn!(
        "waiting up to {} s for the IP reservation lock {} (held by {by})",
        wait.as_secs(),
        path.display()
    );
}

fn store(ctx: &Ctx) -> ReservationStore {
    ReservationStore::new(ctx.host.clone(), ctx.config.value("state_dir"))
        .with_lock_wait(netscan::LOCK_WAIT, Some(lock_notice))
}

/// `vmctl delete`: the deleted VM's address (`ip`, from its metadata) is free at once, not only
/// when the reservation its create left (for the first boot) expires. Only that address of that
/// name is released: a create of the same name running elsewhere keeps its own. A failure is
/// only logged: the VM is gone anyway.
pub fn release_deleted(ctx: &Ctx, name: &str, ip: Option<&str>) {
    let Some(ip) = ip
        .and_then(|i| i.split('/').next())
        .and_then(|i| i.parse::<Ipv4Addr>().ok())
    else {
        return;
    };
    let store = store(ctx);
    if !store.exists() {
        return;
    }
    match store.release_address(name, ip, (ctx.clock)()) {
        Ok(0) => {}
        Ok(n) => tracing::info!("released {n} IP reservation(s) of {name}"),
        Err(e) => tracing::warn!("IP reservation of {name} is left to expire: {e}"),
    }
}

/// An address a create holds in the reservation store. [`Claim::settle`] when the create ends.
#[derive(Debug)]
pub struct Claim {
    store: Option<ReservationStore>,
    /// This create's claim: another create of the same name is another holder.
    holder: netscan::Holder,
    ip: Option<Ipv4Addr>,
    clock: fn() -> SystemTime,
}

impl Claim {
    fn none(owner: &str) -> Self {
        Claim {
            store: None,
            holder: netscan::Holder::new(owner),
            ip: None,
            clock: SystemTime::now,
        }
    }

    /// The address held, if any.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.ip
    }

    /// Success: keep the address reserved for [`BOOT_TTL`] (the VM's metadata holds it from now
    /// on, but it is silent until booted). Failure: release it at once.
    pub fn settle(self, ok: bool) {
        let (Some(store), Some(ip)) = (&self.store, self.ip) else {
            return;
        };
        let now = (self.clock)();
        let r = if ok {
            store.reserve(ip, &self.holder, BOOT_TTL, now).map(|_| ())
        } else {
            store.release(&self.holder, now).map(|_| ())
        };
        if let Err(e) = r {
            tracing::warn!("IP reservation of {} for {}: {e}", ip, self.holder.owner);
        }
    }
}

/// Called by every create after validation and before anything is made: `static_ip` is the
/// validated static address (filled in for `--ip auto`).
///
/// - `--ip auto`: scans the bridge, then under the reservation lock picks the first free address
///   outside the reserved ranges, VM metadata and other creates' reservations, and fills
///   `plan.static_ip` (prefix of the bridge's subnet, the request's gateway and DNS).
/// - `--ip A.B.C.D/NN`: probes the address on the bridge and refuses it if anything answers, then
///   reserves it (refused if a concurrent create holds it).
///
/// Both use the context's scanner (the live bridge, as the binary wires it; a fake in tests).
/// The probe is skipped when the bridge has no IPv4 address in the VM's subnet (ARP needs a
/// sender address there).
pub fn claim_address(
    ctx: &Ctx,
    name: &str,
    network: &NetworkRequest,
    bridge: &str,
    static_ip: &mut Option<net::StaticIp>,
) -> Result<Claim> {
    let NetworkRequest::Static { ip, gateway, dns } = network else {
        return Ok(Claim::none(name));
    };
    let owner = name.to_string();
    let holder = netscan::Holder::new(name);
    let now = (ctx.clock)();
    let scanner = ctx.scanner;
    if is_auto(ip) {
        let req_scan = ScanRequest::new(bridge);
        let result = scanner.scan(&req_scan).map_err(scan_err(bridge))?;
        if result.fallback {
            tracing::warn!("{}", fallback_note());
        }
        let reserved = reserved_ranges(ctx.config, result.subnet)?;
        let known = metadata_ips(ctx.hv)?;
        let store = store(ctx);
        let r = store
            .allocate(&result, &reserved, &known, &holder, CLAIM_TTL, now)
            .map_err(|source| Error::ReserveIp {
                dir: ctx.config.state_dir(ctx.host),
                source,
            })?;
        let claim = Claim {
            store: Some(store),
            holder,
            ip: Some(r.ip),
            clock: ctx.clock,
        };
        let cidr = format!("{}/{}", r.ip, result.subnet.prefix_len());
        match net::parse_static(&cidr, gateway.as_deref(), dns) {
            Ok(s) => {
                *static_ip = Some(s);
                Ok(claim)
            }
            Err(e) => {
                claim.settle(false);
                Err(e)
            }
        }
    } else {
        let Some(s) = static_ip.as_ref() else {
            return Ok(Claim::none(&owner));
        };
        let addr = s.address.addr();
        let subnets = net::bridge_subnets(ctx.runner, bridge);
        if !subnets.iter().any(|n| n.contains(&addr)) {
            tracing::warn!(
                "{} has no IPv4 address in {}: {addr} not probed by ARP",
                bridge,
                s.address.trunc()
            );
            return Ok(Claim::none(&owner));
        }
        let owners = mac_owners(ctx.hv).ok();
        let p = probe(scanner, &ScanRequest::new(bridge), addr, owners.as_ref())?;
        if !p.free {
            return Err(Error::IpAnswers {
                ip: addr.to_string(),
                bridge: bridge.to_string(),
                by: p.holders(),
            });
        }
        let store = store(ctx);
        store
            .reserve(addr, &holder, CLAIM_TTL, now)
            .map_err(|source| Error::ReserveIp {
                dir: ctx.config.state_dir(ctx.host),
                source,
            })?;
        Ok(Claim {
            store: Some(store),
            holder,
            ip: Some(addr),
            clock: ctx.clock,
        })
    }
}

/// `--ip auto` for several VMs at once (the nodes of a cluster, and its VIP under the owner
/// name given): one scan of the bridge, then one reservation lock in which each owner gets its
/// own free address. `fixed` addresses (a `--vip` given) are never picked; each is probed and
/// reserved for its owner first. The claims come back in the order of `owners`, then `fixed`.
pub fn claim_many(
    ctx: &Ctx,
    owners: &[String],
    fixed: &[(String, Ipv4Addr)],
    bridge: &str,
    gateway: Option<&str>,
    dns: &[String],
) -> Result<Vec<(Claim, net::StaticIp)>> {
    let scanner = ctx.scanner;
    let now = (ctx.clock)();
    let result = scanner
        .scan(&ScanRequest::new(bridge))
        .map_err(scan_err(bridge))?;
    if result.fallback {
        tracing::warn!("{}", fallback_note());
    }
    let store = store(ctx);
    let reserve_err = |source| Error::ReserveIp {
        dir: ctx.config.state_dir(ctx.host),
        source,
    };
    let static_of = |ip: Ipv4Addr| {
        net::parse_static(
            &format!("{ip}/{}", result.subnet.prefix_len()),
            gateway,
            dns,
        )
    };
    let mut fixed_claims = Vec::new();
    for (owner, ip) in fixed {
        if !result.subnet.contains(ip) {
            return Err(Error::InvalidOption {
                option: "--vip".into(),
                value: ip.to_string(),
                reason: format!("not inside {}, the subnet of {bridge}", result.subnet),
            });
        }
        if result.used.iter().any(|h| h.ip == *ip) {
            return Err(Error::IpAnswers {
                ip: ip.to_string(),
                bridge: bridge.to_string(),
                by: "a host on the bridge".into(),
            });
        }
        let st = static_of(*ip)?;
        let holder = netscan::Holder::new(owner);
        store
            .reserve(*ip, &holder, CLAIM_TTL, now)
            .map_err(reserve_err)?;
        let claim = Claim {
            store: Some(store.clone()),
            holder,
            ip: Some(*ip),
            clock: ctx.clock,
        };
        fixed_claims.push((claim, st));
    }
    let reserved = reserved_ranges(ctx.config, result.subnet)?;
    let mut known = metadata_ips(ctx.hv)?;
    known.extend(fixed.iter().map(|(_, ip)| *ip));
    let holders: Vec<netscan::Holder> = owners.iter().map(|o| netscan::Holder::new(o)).collect();
    let got = store
        .allocate_many(&result, &reserved, &known, &holders, CLAIM_TTL, now)
        .map_err(reserve_err)?;
    let mut out = Vec::new();
    for (holder, r) in holders.into_iter().zip(got) {
        let claim = Claim {
            store: Some(store.clone()),
            holder,
            ip: Some(r.ip),
            clock: ctx.clock,
        };
        out.push((claim, static_of(r.ip)));
    }
    // Release everything if one address cannot be used (a bad --gateway).
    let mut ok = Vec::new();
    let mut failure = None;
    for (claim, st) in out {
        match st {
            Ok(st) if failure.is_none() => ok.push((claim, st)),
            Ok(_) => claim.settle(false),
            Err(e) => {
                claim.settle(false);
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        for (c, _) in ok.into_iter().chain(fixed_claims) {
            c.settle(false);
        }
        return Err(e);
    }
    ok.extend(fixed_claims);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netscan::Host;

    fn mac(s: &str) -> MacAddr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn scan_result() -> ScanResult {
        let subnet: Ipv4Net = "198.18.5.0/24".parse().unwrap();
        let used = vec![
            Host {
                ip: ip("198.18.5.1"),
                mac: mac("02:00:00:00:00:01"),
                vendor: None,
                local: true,
            },
            Host {
                ip: ip("198.18.5.10"),
                mac: mac("52:54:00:00:00:0a"),
                vendor: Some("QEMU/KVM virtual NIC".into()),
                local: false,
            },
        ];
        let taken = used.iter().map(|h| h.ip).collect();
        let (free, free_count) = netscan::free_ranges(subnet, &taken);
        ScanResult {
            interface: "br0".into(),
            subnet,
            local_ip: ip("198.18.5.1"),
            method: ScanMethod::Raw,
            fallback: false,
            used,
            conflicts: Vec::new(),
            free,
            free_count,
            probed: 253,
            packets_sent: 500,
            rate_pps: 2000,
            retries: 1,
            timeout_ms: 100,
            duration_ms: 340,
        }
    }

    #[test]
    fn check_json_has_the_issue_shape_with_vm_names() {
        let owners: MacOwners = [(mac("52:54:00:00:00:0a"), "web1".to_string())].into();
        let c = check_from_scan(scan_result(), Some(&owners));
        let v = serde_json::to_value(&c).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            &keys[..6],
            [
                "interface",
                "subnet",
                "used",
                "free",
                "free_count",
                "duration_ms"
            ]
        );
        assert_eq!(v["subnet"], "198.18.5.0/24");
        assert_eq!(v["used"][1]["vm"], "web1");
        assert_eq!(v["used"][0]["vm"], serde_json::Value::Null);
        assert_eq!(v["free"][0], "198.18.5.2-198.18.5.9");
        assert_eq!(v["free_count"], 252);
        assert_eq!(v["vms_known"], true);
        let unknown = check_from_scan(scan_result(), None);
        assert!(!unknown.vms_known && unknown.used.iter().all(|u| u.vm.is_none()));
    }

    #[test]
    fn reserved_ranges_combine_the_exclusions_and_the_pool() {
        let mut c = Config::defaults();
        let subnet: Ipv4Net = "198.18.5.0/24".parse().unwrap();
        assert!(reserved_ranges(&c, subnet).unwrap().is_empty());
        c.set("reserved_ips", "198.18.5.1-198.18.5.9, 198.18.5.50");
        c.set("reserved_ip_range", "198.18.5.100-198.18.5.199");
        let r: Vec<String> = reserved_ranges(&c, subnet)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            r,
            [
                "198.18.5.1-198.18.5.9",
                "198.18.5.50",
                "198.18.5.0-198.18.5.99",
                "198.18.5.200-198.18.5.255"
            ]
        );
        c.set("reserved_ips", "198.18.5.1-x");
        let e = reserved_ranges(&c, subnet).unwrap_err();
        assert_eq!(e.exit_kind(), crate::ExitKind::Usage);
        assert!(e.to_string().contains("reserved_ips"), "{e}");
    }
}
