//! The pure part of a scan: validate a request against the interface facts and decide exactly
//! what will be sent (which addresses, from which source address, how fast, how many retries).

use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{Error, Interface, MacAddr};

/// `<linux/if_arp.h>`: ARP as built here is IPv4 over Ethernet only.
const ARPHRD_ETHER: u16 = 1;

/// Default send rate. arp-scan's default (256 kbit/s of 64-byte frames) is 500 pps; 2,000 pps is
/// still far below what any switch or host notices (about 1 Mbit/s of broadcast).
pub const DEFAULT_RATE_PPS: u32 = 2000;
/// Default reply window after each request. Replies on one L2 segment take well under 1 ms from
/// a kernel (arp_process answers in softirq); the window covers a busy host or a slow switch.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// Prefixes shorter than this need `force`: a /15 is already 131,070 packets per pass.
pub const MIN_PREFIX_WITHOUT_FORCE: u8 = 16;
/// Automatic retries (when the request leaves them unset): one, so every address gets two
/// requests, as arp-scan's default (`--retry=2`, "total number of attempts per host")...
const AUTO_MAX_RETRIES: u32 = 1;
/// ...as long as sending the retry to every address would still fit in this time, so that a
/// /24 gets its retry and a /16 at the default rate stays one pass (65,534 / 2,000 = 33 s).
const AUTO_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// How to find neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScanMethod {
    /// Raw ARP; if the socket is refused for lack of privilege, the neighbour table.
    #[default]
    Auto,
    /// Raw ARP on an `AF_PACKET` socket (root or `CAP_NET_RAW`), else an error.
    Raw,
    /// Unprivileged: make the kernel resolve each address (a UDP datagram to the discard port),
    /// then read the neighbour table. Slower (the kernel's own ARP timers) and blind to duplicates.
    Neighbour,
}

/// What the caller asks for; [`plan_scan`] checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanRequest {
    pub interface: String,
    /// `None`: the interface's primary IPv4 network.
    pub subnet: Option<Ipv4Net>,
    /// Requests per second, at least 1. Retries count against the same rate.
    pub rate_pps: u32,
    /// How long to wait for a reply after each request before retrying or giving up.
    pub timeout: Duration,
    /// Extra requests to addresses that stayed silent. `None`: automatic (see [`plan_scan`]).
    pub retries: Option<u32>,
    /// Allow a prefix shorter than [`MIN_PREFIX_WITHOUT_FORCE`].
    pub force: bool,
    pub method: ScanMethod,
}

impl ScanRequest {
    /// A request with the defaults: whole interface subnet, 2,000 pps, 100 ms, automatic retries.
    pub fn new(interface: impl Into<String>) -> Self {
        ScanRequest {
            interface: interface.into(),
            subnet: None,
            rate_pps: DEFAULT_RATE_PPS,
            timeout: DEFAULT_TIMEOUT,
            retries: None,
            force: false,
            method: ScanMethod::Auto,
        }
    }
}

/// A validated scan: everything the engine needs, nothing it has to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScanPlan {
    pub interface: String,
    pub ifindex: u32,
    pub local_mac: MacAddr,
    /// The sender protocol address of our requests: the interface's address in `subnet`.
    pub local_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub rate_pps: u32,
    pub timeout: Duration,
    pub retries: u32,
    pub method: ScanMethod,
}

impl ScanPlan {
    /// The addresses that get requests: the subnet's hosts (no network or broadcast address
    /// below /31) except our own.
    pub fn targets(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.subnet.hosts().filter(move |ip| *ip != self.local_ip)
    }

    pub fn target_count(&self) -> u64 {
        let hosts = host_count(self.subnet);
        hosts - u64::from(self.subnet.contains(&self.local_ip))
    }

    /// Worst case: every address silent, every retry sent, then the last reply window.
    pub fn worst_case(&self) -> Duration {
        let packets = self.target_count() * u64::from(1 + self.retries);
        Duration::from_secs_f64(packets as f64 / f64::from(self.rate_pps)) + self.timeout
    }
}

/// Number of addresses `hosts()` yields: all of them for /31 and /32 (RFC 3021), else minus the
/// network and broadcast addresses.
pub(crate) fn host_count(net: Ipv4Net) -> u64 {
    let size = 1u64 << (32 - u32::from(net.prefix_len()));
    if net.prefix_len() >= 31 {
        size
    } else {
        size - 2
    }
}

/// Parses `A.B.C.D/N`. Host bits are allowed and cleared (`198.18.5.7/24` is `198.18.5.0/24`),
/// as `ip route` does; a missing prefix is an error rather than a guess.
pub fn parse_subnet(input: &str) -> Result<Ipv4Net, Error> {
    input
        .trim()
        .parse::<Ipv4Net>()
        .map(|n| n.trunc())
        .map_err(|source| Error::ParseSubnet {
            input: input.into(),
            source,
        })
}

/// Checks a request against the interface and fixes every parameter.
///
/// Rules: the rate and timeout are positive; the subnet lies inside one of the interface's
/// IPv4 networks (we never send requests for addresses off the segment); a prefix shorter than
/// /16 needs `force`. Automatic retries: 1, none when re-sending to every address would take
/// over 10 s at the chosen rate (so a /16 is one pass).
pub fn plan_scan(req: &ScanRequest, iface: &Interface) -> Result<ScanPlan, Error> {
    if iface.hw_type != ARPHRD_ETHER {
        return Err(Error::CheckLinkType {
            interface: iface.name.clone(),
            hw_type: iface.hw_type,
        });
    }
    if !iface.up {
        return Err(Error::CheckLinkUp {
            interface: iface.name.clone(),
        });
    }
    if req.rate_pps == 0 {
        return Err(Error::CheckRate { rate: req.rate_pps });
    }
    if req.timeout < Duration::from_millis(1) {
        return Err(Error::CheckTimeout);
    }
    let (subnet, local) = match req.subnet {
        None => {
            let a = iface.addrs[0];
            (a.net, a)
        }
        Some(s) => {
            let a = iface.addr_for(s).ok_or_else(|| Error::CheckScope {
                subnet: s,
                interface: iface.name.clone(),
                networks: iface.networks_display(),
            })?;
            (s, a)
        }
    };
    if subnet.prefix_len() < MIN_PREFIX_WITHOUT_FORCE && !req.force {
        return Err(Error::CheckWidth {
            subnet,
            addresses: host_count(subnet),
            min_prefix: MIN_PREFIX_WITHOUT_FORCE,
        });
    }
    let mut plan = ScanPlan {
        interface: iface.name.clone(),
        ifindex: iface.index,
        local_mac: iface.mac,
        local_ip: local.addr,
        subnet,
        rate_pps: req.rate_pps,
        timeout: req.timeout,
        retries: 0,
        method: req.method,
    };
    plan.retries = match req.retries {
        Some(r) => r,
        None => {
            let pass = plan.target_count() as f64 / f64::from(req.rate_pps);
            (0..=AUTO_MAX_RETRIES)
                .rev()
                .find(|r| pass * f64::from(r + 1) <= AUTO_RETRY_BUDGET.as_secs_f64())
                .unwrap_or(0)
        }
    };
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::InterfaceAddr;

    fn br0() -> Interface {
        Interface {
            name: "br0".into(),
            index: 7,
            hw_type: 1,
            up: true,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            addrs: vec![
                InterfaceAddr {
                    addr: "198.18.5.1".parse().expect("ip"),
                    net: "198.18.5.0/24".parse().expect("net"),
                },
                InterfaceAddr {
                    addr: "198.19.0.1".parse().expect("ip"),
                    net: "198.19.0.0/16".parse().expect("net"),
                },
                InterfaceAddr {
                    addr: "198.18.64.1".parse().expect("ip"),
                    net: "198.18.0.0/15".parse().expect("net"),
                },
            ],
        }
    }

    #[test]
    fn default_subnet_is_the_primary_network_without_our_address() {
        let p = plan_scan(&ScanRequest::new("br0"), &br0()).expect("plan");
        assert_eq!(p.subnet.to_string(), "198.18.5.0/24");
        assert_eq!(p.local_ip.to_string(), "198.18.5.1");
        assert_eq!(p.target_count(), 253);
        assert_eq!(p.targets().count(), 253);
        assert!(p.targets().all(|ip| ip.to_string() != "198.18.5.1"));
        assert_eq!(p.retries, 1);
    }

    #[test]
    fn a_16_at_the_default_rate_is_one_pass_under_35s() {
        let mut r = ScanRequest::new("br0");
        r.subnet = Some(parse_subnet("198.19.0.0/16").expect("cidr"));
        let p = plan_scan(&r, &br0()).expect("plan");
        assert_eq!(p.retries, 0);
        assert_eq!(p.local_ip.to_string(), "198.19.0.1");
        assert!(
            p.worst_case() < Duration::from_secs(35),
            "{:?}",
            p.worst_case()
        );
    }

    #[test]
    fn loopback_and_other_non_ethernet_links_are_refused() {
        let mut lo = br0();
        lo.hw_type = 772;
        let e = plan_scan(&ScanRequest::new("lo"), &lo).expect_err("loopback");
        let mut down = br0();
        down.up = false;
        let d = plan_scan(&ScanRequest::new("br0"), &down).expect_err("down");
        assert!(
            matches!(d, Error::CheckLinkUp { .. }) && d.help().is_some(),
            "{d}"
        );
        assert!(
            matches!(e, Error::CheckLinkType { hw_type: 772, .. }) && e.is_usage(),
            "{e}"
        );
    }

    #[test]
    fn explicit_retries_win() {
        let mut r = ScanRequest::new("br0");
        r.retries = Some(5);
        assert_eq!(plan_scan(&r, &br0()).expect("plan").retries, 5);
    }

    #[test]
    fn rejects_zero_rate_out_of_scope_and_too_wide() {
        let mut r = ScanRequest::new("br0");
        r.rate_pps = 0;
        let e = plan_scan(&r, &br0()).expect_err("rate 0");
        assert!(matches!(e, Error::CheckRate { .. }) && e.is_usage());

        let mut r = ScanRequest::new("br0");
        r.subnet = Some(parse_subnet("10.0.0.0/24").expect("cidr"));
        let e = plan_scan(&r, &br0()).expect_err("off segment");
        assert!(matches!(e, Error::CheckScope { .. }) && e.is_usage());
        assert!(e.to_string().contains("198.18.5.1/24"), "{e}");

        // A subnet only partly inside the interface network is also out of scope.
        let mut only_24 = br0();
        only_24.addrs.truncate(1);
        r.subnet = Some(parse_subnet("198.18.4.0/23").expect("cidr"));
        assert!(matches!(
            plan_scan(&r, &only_24),
            Err(Error::CheckScope { .. })
        ));

        r.subnet = Some(parse_subnet("198.18.0.0/15").expect("cidr"));
        let e = plan_scan(&r, &br0()).expect_err("too wide");
        assert!(
            matches!(
                e,
                Error::CheckWidth {
                    addresses: 131070,
                    ..
                }
            ),
            "{e:?}"
        );
        r.force = true;
        let p = plan_scan(&r, &br0()).expect("forced");
        assert_eq!(p.local_ip.to_string(), "198.18.64.1");
        assert_eq!(p.retries, 0);
    }

    #[test]
    fn parses_and_normalises_cidr() {
        assert_eq!(
            parse_subnet(" 198.18.5.77/24 ").expect("ok").to_string(),
            "198.18.5.0/24"
        );
        for bad in [
            "198.18.5.0",
            "198.18.5.0/33",
            "198.18.5/24",
            "garbage",
            "::1/64",
            "",
        ] {
            let e = parse_subnet(bad).expect_err(bad);
            assert!(e.is_usage() && e.help().is_some(), "{bad}");
        }
    }

    #[test]
    fn tiny_subnets_count_like_rfc3021() {
        assert_eq!(host_count("198.18.5.4/31".parse().expect("net")), 2);
        assert_eq!(host_count("198.18.5.4/32".parse().expect("net")), 1);
        assert_eq!(host_count("198.18.5.0/30".parse().expect("net")), 2);
    }
}
