//! Address ranges: compacting the free addresses of a scan into `first-last` runs, and picking
//! the first free address outside reserved ranges and existing reservations.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, ScanResult};

/// An inclusive range of IPv4 addresses. Prints as `A` or `A-B`; serialises the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl IpRange {
    pub fn single(ip: Ipv4Addr) -> Self {
        IpRange {
            first: ip,
            last: ip,
        }
    }

    /// Parses `A.B.C.D`, `A.B.C.D-E.F.G.H` or a CIDR `A.B.C.D/N` (all its addresses).
    pub fn parse(input: &str) -> Result<Self, Error> {
        input.parse()
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    pub fn len(&self) -> u64 {
        u64::from(u32::from(self.last)) - u64::from(u32::from(self.first)) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for IpRange {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::ParseRange { input: s.into() };
        let s = s.trim();
        if s.contains('/') {
            let net: Ipv4Net = s.parse().map_err(|_| bad())?;
            return Ok(IpRange {
                first: net.network(),
                last: net.broadcast(),
            });
        }
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let first: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
        let last: Ipv4Addr = b.trim().parse().map_err(|_| bad())?;
        if first > last {
            return Err(bad());
        }
        Ok(IpRange { first, last })
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The subnet's host addresses not in `used`, compacted into ranges, plus their count.
pub fn free_ranges(subnet: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> (Vec<IpRange>, u64) {
    let mut out: Vec<IpRange> = Vec::new();
    let mut count = 0;
    for ip in subnet.hosts().filter(|ip| !used.contains(ip)) {
        count += 1;
        match out.last_mut() {
            Some(r) if u32::from(r.last).checked_add(1) == Some(u32::from(ip)) => r.last = ip,
            _ => out.push(IpRange::single(ip)),
        }
    }
    (out, count)
}

/// The lowest free address of the scan that is in no `reserved` range and not in `taken`
/// (addresses held by reservations or known VMs). `None` if nothing is left.
pub fn pick_free(
    result: &ScanResult,
    reserved: &[IpRange],
    taken: &[Ipv4Addr],
) -> Option<Ipv4Addr> {
    result.free.iter().find_map(|r| {
        (u32::from(r.first)..=u32::from(r.last))
            .map(Ipv4Addr::from)
            .find(|ip| !reserved.iter().any(|z| z.contains(*ip)) && !taken.contains(ip))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().expect("ip")
    }

    #[test]
    fn compacts_free_space() {
        let used: BTreeSet<_> = [
            "198.18.5.1",
            "198.18.5.7",
            "198.18.5.8",
            "198.18.5.200",
            "198.18.5.254",
        ]
        .iter()
        .map(|s| ip(s))
        .collect();
        let (r, n) = free_ranges("198.18.5.0/24".parse().expect("net"), &used);
        let shown: Vec<String> = r.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "198.18.5.2-198.18.5.6",
                "198.18.5.9-198.18.5.199",
                "198.18.5.201-198.18.5.253"
            ]
        );
        assert_eq!(n, 254 - 5);
        assert_eq!(r.iter().map(IpRange::len).sum::<u64>(), n);
    }

    #[test]
    fn single_free_address_prints_alone() {
        let used: BTreeSet<_> = [ip("198.18.5.1")].into();
        let (r, n) = free_ranges("198.18.5.0/30".parse().expect("net"), &used);
        assert_eq!(n, 1);
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"["198.18.5.2"]"#
        );
    }

    #[test]
    fn parses_ranges() {
        assert_eq!(
            IpRange::parse("198.18.5.1-198.18.5.9").expect("ok").len(),
            9
        );
        assert_eq!(
            IpRange::parse("198.18.5.0/28").expect("ok").to_string(),
            "198.18.5.0-198.18.5.15"
        );
        assert_eq!(IpRange::parse("198.18.5.3").expect("ok").len(), 1);
        for bad in ["198.18.5.9-198.18.5.1", "x", "198.18.5.1-", "1.2.3.4/40"] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }
}
