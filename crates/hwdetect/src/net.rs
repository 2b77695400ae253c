//! Network interfaces from `/sys/class/net` (Documentation/ABI/testing/sysfs-class-net), their
//! addresses from the kernel's own tables (`/proc/net/fib_trie`, `/proc/net/if_inet6`) and the
//! default route from `/proc/net/route`. No `ip` command: a host root must work the same.

use std::net::Ipv4Addr;

use hostio::paths::{PROC_NET_FIB_TRIE, PROC_NET_IF_INET6, PROC_NET_ROUTE, SYS_CLASS_NET};

use crate::facts::{DefaultRoute, Nic};
use crate::parse::{self, RTF_GATEWAY, Route};
use crate::probe::Probe;

pub(crate) fn nics(probe: &Probe, warn: &mut Vec<String>) -> (Vec<Nic>, Option<DefaultRoute>) {
    let names = match probe.list(SYS_CLASS_NET) {
        Ok(n) => n,
        Err(e) => {
            warn.push(format!("{SYS_CLASS_NET}: cannot list: {e}"));
            Vec::new()
        }
    };
    // Not every entry is an interface: the bonding driver adds a `bonding_masters` file.
    let mut nics: Vec<Nic> = names
        .iter()
        .filter(|n| probe.is_dir(format!("{SYS_CLASS_NET}/{n}")))
        .map(|n| nic(probe, n, warn))
        .collect();

    let routes = match probe.read(PROC_NET_ROUTE) {
        Ok(t) => {
            let (r, bad) = parse::routes(&t);
            if bad > 0 {
                warn.push(format!("{PROC_NET_ROUTE}: {bad} malformed line(s) skipped"));
            }
            r
        }
        Err(e) => {
            warn.push(format!("{PROC_NET_ROUTE}: cannot read: {e}"));
            Vec::new()
        }
    };

    match probe.read(PROC_NET_FIB_TRIE) {
        Ok(t) => {
            for addr in parse::fib_trie_local_addrs(&t) {
                match owner_of(addr, &routes, &nics) {
                    Some((iface, prefix)) => {
                        if let Some(n) = nics.iter_mut().find(|n| n.name == iface) {
                            n.addresses.push(format!("{addr}/{prefix}"));
                        }
                    }
                    // E.g. a /32 address whose only route is an on-link host route to the
                    // gateway: the interface cannot be told from these files.
                    None => warn.push(format!(
                        "{PROC_NET_FIB_TRIE}: local address {addr} is covered by no link route \
                         in {PROC_NET_ROUTE}; not attributed to an interface"
                    )),
                }
            }
        }
        Err(e) => warn.push(format!("{PROC_NET_FIB_TRIE}: cannot read: {e}")),
    }

    // Absent when IPv6 is disabled (ipv6.disable=1): not worth a warning.
    match probe.read_optional(PROC_NET_IF_INET6) {
        Ok(Some(t)) => {
            let (addrs, bad) = parse::if_inet6(&t);
            if bad > 0 {
                warn.push(format!(
                    "{PROC_NET_IF_INET6}: {bad} malformed line(s) skipped"
                ));
            }
            for a in addrs {
                if let Some(n) = nics.iter_mut().find(|n| n.name == a.iface) {
                    n.addresses.push(format!("{}/{}", a.addr, a.prefix_len));
                }
            }
        }
        Ok(None) => {}
        Err(e) => warn.push(format!("{PROC_NET_IF_INET6}: cannot read: {e}")),
    }

    let default = parse::default_route(&routes).map(|r| DefaultRoute {
        interface: r.iface.clone(),
        gateway: r.gateway.to_string(),
    });
    if let Some(d) = &default {
        for n in nics.iter_mut().filter(|n| n.name == d.interface) {
            n.default_route = true;
        }
    }
    (nics, default)
}

fn nic(probe: &Probe, name: &str, warn: &mut Vec<String>) -> Nic {
    let base = format!("{SYS_CLASS_NET}/{name}");
    let mut text = |attr: &str| -> Option<String> {
        let path = format!("{base}/{attr}");
        match probe.read(&path) {
            Ok(t) => Some(t.trim().to_string()).filter(|t| !t.is_empty()),
            Err(e) => {
                warn.push(format!("{path}: cannot read: {e}"));
                None
            }
        }
    };
    let mac = text("address");
    let state = text("operstate").unwrap_or_else(|| "unknown".into());
    // A bridge port has `brport/` and a `master` link to its bridge; a bond slave has `master`
    // but no `brport` (Documentation/ABI/testing/sysfs-class-net).
    let bridge = if probe.lexists(format!("{base}/brport")) {
        match probe.link_name(format!("{base}/master")) {
            Ok(m) => m,
            Err(e) => {
                warn.push(format!("{base}/master: cannot read link: {e}"));
                None
            }
        }
    } else {
        None
    };
    Nic {
        name: name.to_string(),
        mac,
        state,
        addresses: Vec::new(),
        default_route: false,
        physical: probe.lexists(format!("{base}/device")),
        is_bridge: probe.is_dir(format!("{base}/bridge")),
        bridge,
    }
}

/// The interface and prefix length an IPv4 local address belongs to: the most specific
/// link-scope route (no gateway) covering it. Loopback addresses belong to `lo` (their routes
/// live in the local table, which `/proc/net/route` does not show).
fn owner_of(addr: Ipv4Addr, routes: &[Route], nics: &[Nic]) -> Option<(String, u32)> {
    if addr.is_loopback() {
        return nics
            .iter()
            .any(|n| n.name == "lo")
            .then(|| ("lo".to_string(), 8));
    }
    let a = u32::from(addr);
    routes
        .iter()
        .filter(|r| r.flags & RTF_GATEWAY == 0 && !r.mask.is_unspecified())
        .filter(|r| a & u32::from(r.mask) == u32::from(r.destination))
        .max_by_key(|r| u32::from(r.mask).count_ones())
        .map(|r| (r.iface.clone(), u32::from(r.mask).count_ones()))
}
