//! Interface facts: index, MAC and IPv4 networks of one interface, read with getifaddrs(3)
//! in the caller's network namespace.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::sys::{self, IfEntry};
use crate::{Error, MacAddr};

/// One IPv4 address on an interface and the network it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct InterfaceAddr {
    pub addr: Ipv4Addr,
    /// The on-link network, host bits cleared (`198.18.5.0/24`).
    pub net: Ipv4Net,
}

/// What the scanner needs to know about an interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    pub index: u32,
    /// `ARPHRD_*` from `<linux/if_arp.h>`: 1 is Ethernet (bridges, veths, NICs).
    pub hw_type: u16,
    /// Administratively up (`IFF_UP`); sending on a down interface fails with ENETDOWN.
    pub up: bool,
    pub mac: MacAddr,
    /// In the kernel's order; the first is the primary address.
    pub addrs: Vec<InterfaceAddr>,
}

impl Interface {
    /// Reads the interface from the kernel. Errors: no such interface, or one without IPv4.
    pub fn lookup(name: &str) -> Result<Interface, Error> {
        let entries =
            sys::interface_entries().map_err(|source| Error::ListInterfaces { source })?;
        Self::from_entries(name, &entries)
    }

    pub(crate) fn from_entries(name: &str, entries: &[IfEntry]) -> Result<Interface, Error> {
        let mut link = None;
        let mut addrs = Vec::new();
        for e in entries {
            match e {
                IfEntry::Link {
                    name: n,
                    index,
                    hw_type,
                    up,
                    mac,
                } if n == name => link = Some((*index, *hw_type, *up, *mac)),
                IfEntry::V4 {
                    name: n,
                    addr,
                    netmask,
                } if n == name => {
                    let prefix = u32::from(*netmask).leading_ones() as u8;
                    if let Ok(net) = Ipv4Net::new(*addr, prefix) {
                        addrs.push(InterfaceAddr {
                            addr: *addr,
                            net: net.trunc(),
                        });
                    }
                }
                _ => {}
            }
        }
        let (index, hw_type, up, mac) = link.ok_or_else(|| Error::FindInterface {
            interface: name.into(),
        })?;
        if addrs.is_empty() {
            return Err(Error::FindInterfaceIpv4 {
                interface: name.into(),
            });
        }
        Ok(Interface {
            name: name.into(),
            index,
            hw_type,
            up,
            mac: mac.unwrap_or(MacAddr::ZERO),
            addrs,
        })
    }

    /// The interface address whose network contains all of `subnet`, if any.
    pub fn addr_for(&self, subnet: Ipv4Net) -> Option<InterfaceAddr> {
        self.addrs.iter().copied().find(|a| a.net.contains(&subnet))
    }

    /// `198.18.5.1/24, 198.18.9.1/23` for messages.
    pub fn networks_display(&self) -> String {
        self.addrs
            .iter()
            .map(|a| format!("{}/{}", a.addr, a.net.prefix_len()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries() -> Vec<IfEntry> {
        vec![
            IfEntry::Link {
                name: "lo".into(),
                index: 1,
                hw_type: 772,
                up: true,
                mac: Some(MacAddr::ZERO),
            },
            IfEntry::Link {
                name: "br0".into(),
                index: 4,
                hw_type: 1,
                up: true,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 1])),
            },
            IfEntry::Link {
                name: "dummy0".into(),
                index: 5,
                hw_type: 1,
                up: true,
                mac: Some(MacAddr([2, 0, 0, 0, 0, 2])),
            },
            IfEntry::V4 {
                name: "lo".into(),
                addr: Ipv4Addr::LOCALHOST,
                netmask: Ipv4Addr::new(255, 0, 0, 0),
            },
            IfEntry::V4 {
                name: "br0".into(),
                addr: Ipv4Addr::new(198, 18, 5, 1),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
            },
            IfEntry::V4 {
                name: "br0".into(),
                addr: Ipv4Addr::new(198, 18, 9, 77),
                netmask: Ipv4Addr::new(255, 255, 254, 0),
            },
        ]
    }

    #[test]
    fn finds_addresses_and_networks() {
        let i = Interface::from_entries("br0", &entries()).expect("br0");
        assert_eq!(i.index, 4);
        assert_eq!(i.addrs.len(), 2);
        assert_eq!(
            i.addrs[1].net,
            "198.18.8.0/23".parse::<Ipv4Net>().expect("net")
        );
        assert_eq!(i.networks_display(), "198.18.5.1/24, 198.18.9.77/23");
        let sub: Ipv4Net = "198.18.9.0/24".parse().expect("net");
        assert_eq!(
            i.addr_for(sub).map(|a| a.addr),
            Some(Ipv4Addr::new(198, 18, 9, 77))
        );
        assert_eq!(i.addr_for("198.18.0.0/16".parse().expect("net")), None);
    }

    #[test]
    fn interface_without_ipv4_is_a_usage_error() {
        let e = Interface::from_entries("dummy0", &entries()).expect_err("no v4");
        assert!(matches!(e, Error::FindInterfaceIpv4 { .. }));
        assert!(e.is_usage());
        let e = Interface::from_entries("nope0", &entries()).expect_err("missing");
        assert!(matches!(e, Error::FindInterface { .. }));
        assert_eq!(
            Interface::from_entries("lo", &entries())
                .expect("lo")
                .hw_type,
            772
        );
    }
}
