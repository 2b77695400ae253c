//! Network facts and checks for VMs on a host bridge: static address validation, the bridge's
//! existence and subnets, neighbour-table lookup by MAC, and waiting for a TCP port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::{Duration, Instant};

use hostio::{Cmd, CommandRunner, HostRoot, paths};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::{Error, Result};

/// How a new guest gets its address (`--dhcp`, `--ip auto`, `--ip A.B.C.D/NN`), as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkRequest {
    Dhcp,
    Static {
        /// `auto` or `A.B.C.D/NN`.
        ip: String,
        gateway: Option<String>,
        dns: Vec<String>,
    },
}

/// A validated static address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StaticIp {
    pub address: Ipv4Net,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<IpAddr>,
}

fn invalid(option: &str, value: &str, reason: impl Into<String>) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// Refuses dotted-quad text with a leading zero in an octet (or in the prefix): `198.018.0.10`
/// is 198.18.0.10 to some parsers and 198.16.0.10 (octal) to inet_aton(3) and others.
fn no_leading_zeros(option: &str, text: &str) -> Result<()> {
    let looks_v4 = text.contains('.') && !text.contains(':');
    let zero = text.split(['.', '/']).any(|part| {
        part.len() > 1 && part.starts_with('0') && part.bytes().all(|b| b.is_ascii_digit())
    });
    if looks_v4 && zero {
        return Err(invalid(
            option,
            text,
            "an octet has a leading zero, which some tools read as octal; write 198.18.0.10, not 198.018.0.010",
        ));
    }
    Ok(())
}

/// Why `a` can never be a host's own address on a LAN, if so (RFC 6890 special-purpose ranges).
pub fn not_a_host_address(a: Ipv4Addr) -> Option<&'static str> {
    let first = a.octets()[0];
    if first == 0 {
        Some("in 0.0.0.0/8 (\"this network\", RFC 1122 3.2.1.3), which is no host's address")
    } else if a.is_loopback() {
        Some("a loopback address (127.0.0.0/8); it never leaves the guest")
    } else if a.is_multicast() {
        Some("a multicast address (224.0.0.0/4)")
    } else if first >= 240 {
        Some("in 240.0.0.0/4, reserved (RFC 1112 4) and the limited broadcast address")
    } else {
        None
    }
}

/// Refuses the network and broadcast addresses of `net` (prefixes up to /30; a /31 has no
/// broadcast, RFC 3021, and a /32 is the one address).
fn not_network_or_broadcast(option: &str, text: &str, a: Ipv4Addr, net: &Ipv4Net) -> Result<()> {
    if net.prefix_len() > 30 {
        return Ok(());
    }
    if a == net.network() {
        return Err(invalid(
            option,
            text,
            format!("{a} is the network address of {}", net.trunc()),
        ));
    }
    if a == net.broadcast() {
        return Err(invalid(
            option,
            text,
            format!("{a} is the broadcast address of {}", net.trunc()),
        ));
    }
    Ok(())
}

/// Parses `--ip A.B.C.D/NN`, `--gateway`, `--dns`: the address must be a host address (not
/// 0/8, loopback, multicast or 240/4; no leading zeros; not the network or broadcast address of
/// its prefix), and the gateway another host address inside the prefix.
pub fn parse_static(ip: &str, gateway: Option<&str>, dns: &[String]) -> Result<StaticIp> {
    if !ip.contains('/') {
        return Err(invalid(
            "--ip",
            ip,
            "expected CIDR notation A.B.C.D/NN, e.g. 192.0.2.10/24",
        ));
    }
    no_leading_zeros("--ip", ip)?;
    let address = Ipv4Net::from_str(ip)
        .map_err(|e| invalid("--ip", ip, format!("not an IPv4 CIDR ({e})")))?;
    if address.prefix_len() < 8 {
        return Err(invalid("--ip", ip, "prefix shorter than /8"));
    }
    if let Some(why) = not_a_host_address(address.addr()) {
        return Err(invalid("--ip", ip, why));
    }
    not_network_or_broadcast("--ip", ip, address.addr(), &address)?;
    let gateway = gateway
        .map(|g| {
            no_leading_zeros("--gateway", g)?;
            let gw = Ipv4Addr::from_str(g)
                .map_err(|_| invalid("--gateway", g, "not an IPv4 address"))?;
            if let Some(why) = not_a_host_address(gw) {
                return Err(invalid("--gateway", g, why));
            }
            if !address.contains(&gw) {
                return Err(invalid(
                    "--gateway",
                    g,
                    format!("not inside {}", address.trunc()),
                ));
            }
            if gw == address.addr() {
                return Err(invalid("--gateway", g, "same as the VM's address"));
            }
            not_network_or_broadcast("--gateway", g, gw, &address)?;
            Ok(gw)
        })
        .transpose()?;
    let dns = dns
        .iter()
        .map(|d| {
            no_leading_zeros("--dns", d)?;
            IpAddr::from_str(d).map_err(|_| invalid("--dns", d, "not an IP address"))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(StaticIp {
        address,
        gateway,
        dns,
    })
}

/// True when `name` is a bridge on this host (`/sys/class/net/NAME/bridge`).
pub fn bridge_exists(host: &HostRoot, name: &str) -> bool {
    !name.contains('/') && host.exists(format!("{}/{name}/bridge", paths::SYS_CLASS_NET))
}

/// IPv4 subnets configured on the bridge (`ip -j -4 addr show dev BR`); empty when the bridge
/// carries no address (a pure layer-2 bridge) or `ip` is unavailable.
pub fn bridge_subnets(runner: &dyn CommandRunner, bridge: &str) -> Vec<Ipv4Net> {
    let Ok(out) = runner.run(&Cmd::new(["ip", "-j", "-4", "addr", "show", "dev", bridge])) else {
        return Vec::new();
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return Vec::new();
    };
    let mut nets = Vec::new();
    for link in v.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            if let (Some(local), Some(prefix)) = (a["local"].as_str(), a["prefixlen"].as_u64())
                && let Ok(n) = Ipv4Net::from_str(&format!("{local}/{prefix}"))
            {
                nets.push(n.trunc());
            }
        }
    }
    nets
}

/// Refuses a static address outside every subnet the bridge carries.
pub fn check_on_bridge(ip: &StaticIp, bridge: &str, subnets: &[Ipv4Net]) -> Result<()> {
    if subnets.is_empty() || subnets.iter().any(|n| n.contains(&ip.address.addr())) {
        return Ok(());
    }
    Err(Error::IpOutsideBridge {
        ip: ip.address.to_string(),
        bridge: bridge.to_string(),
        subnets: subnets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The complete entries of the kernel's IPv4 neighbour table (proc(5), /proc/net/arp), read
/// under the host root and parsed by netscan's rule ([`netscan::parse_proc_net_arp`]: flag
/// ATF_COM set and a MAC that is not zero), so `vmctl ip` and these lookups agree on what a
/// neighbour is. An unreadable table has no entries.
fn neighbours(host: &HostRoot) -> Vec<netscan::Neighbour> {
    host.read_to_string(paths::PROC_NET_ARP)
        .map(|t| netscan::parse_proc_net_arp(&t))
        .unwrap_or_default()
}

/// The complete entries of the neighbour table as (IPv4, lower-case MAC).
pub fn neighbour_table(host: &HostRoot) -> Vec<(Ipv4Addr, String)> {
    neighbours(host)
        .into_iter()
        .map(|n| (n.ip, n.mac.to_string()))
        .collect()
}

/// The IPv4 address the neighbour table holds for `mac`.
pub fn neighbour_ip(host: &HostRoot, mac: &str) -> Option<Ipv4Addr> {
    let mac: netscan::MacAddr = mac.parse().ok()?;
    neighbours(host)
        .into_iter()
        .find_map(|n| (n.mac == mac).then_some(n.ip))
}

/// The MAC the neighbour table holds for `ip` (complete entries only), lower-case.
pub fn neighbour_mac(host: &HostRoot, ip: Ipv4Addr) -> Option<String> {
    neighbours(host)
        .into_iter()
        .find_map(|n| (n.ip == ip).then(|| n.mac.to_string()))
}

/// Polls `addr` until a TCP connection succeeds or `timeout` passes; `tick` is called between
/// attempts with the elapsed time (the binary drives a spinner with it).
pub fn wait_for_tcp(
    addr: SocketAddr,
    timeout: Duration,
    tick: &dyn Fn(Duration),
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("SSH on {addr}"),
                secs: timeout.as_secs(),
            });
        }
        tick(start.elapsed());
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostio::{Output, RecordingRunner};

    #[test]
    fn static_ip_checks() {
        let s = parse_static("198.18.0.10/24", Some("198.18.0.1"), &["198.18.0.1".into()]).unwrap();
        assert_eq!(s.address.to_string(), "198.18.0.10/24");
        for bad in [
            "198.18.0.10",
            "198.18.0.300/24",
            "198.18.0.10/33",
            "198.18.0.0/24",
            "198.18.0.255/24",
            "x/24",
        ] {
            assert!(parse_static(bad, None, &[]).is_err(), "{bad}");
        }
        assert!(parse_static("198.18.0.10/24", Some("198.18.1.1"), &[]).is_err());
        assert!(parse_static("198.18.0.10/24", Some("198.18.0.10"), &[]).is_err());
        assert!(parse_static("198.18.0.10/24", None, &["nope".into()]).is_err());
    }

    #[test]
    fn only_host_addresses_are_accepted() {
        for ok in [
            "198.18.0.10/24",
            "10.0.0.1/8",
            "192.0.2.1/30",
            "192.0.2.2/30",
            "192.0.2.0/31",
            "192.0.2.7/32",
            "223.255.255.1/24",
            "1.0.0.1/8",
        ] {
            parse_static(ok, None, &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, why) in [
            ("127.0.0.5/8", "loopback"),
            ("127.1.2.3/24", "loopback"),
            ("224.0.0.5/24", "multicast"),
            ("239.1.1.1/24", "multicast"),
            ("240.0.0.5/24", "reserved"),
            ("255.255.255.254/24", "reserved"),
            ("0.1.2.3/8", "0.0.0.0/8"),
            ("198.018.0.10/24", "leading zero"),
            ("198.18.0.010/24", "leading zero"),
            ("198.18.0.10/024", "leading zero"),
            ("198.18.0.0/24", "network address"),
            ("198.18.0.255/24", "broadcast address"),
            ("192.0.2.3/30", "broadcast address"),
            ("192.0.2.0/30", "network address"),
        ] {
            let err = parse_static(bad, None, &[]).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let ip = "198.18.0.10/24";
        for (gw, why) in [
            ("198.18.0.0", "network address"),
            ("198.18.0.255", "broadcast address"),
            ("198.18.0.010", "leading zero"),
            ("127.0.0.1", "loopback"),
            ("198.18.1.1", "not inside"),
            ("198.18.0.10", "same as"),
        ] {
            let err = parse_static(ip, Some(gw), &[]).unwrap_err().to_string();
            assert!(err.contains(why), "{gw}: {err}");
        }
        parse_static(ip, Some("198.18.0.254"), &[]).unwrap();
        let err = parse_static(ip, None, &["198.18.0.01".into()]).unwrap_err();
        assert!(err.to_string().contains("leading zero"), "{err}");
        parse_static(ip, None, &["2001:db8::1".into(), "198.18.0.1".into()]).unwrap();
    }

    #[test]
    fn bridge_subnet_check() {
        let r = RecordingRunner::new().answer(
            ["ip"],
            Output::ok(r#"[{"ifname":"labbr0","addr_info":[{"family":"inet","local":"198.18.0.1","prefixlen":24}]}]"#),
        );
        let nets = bridge_subnets(&r, "labbr0");
        assert_eq!(nets, vec![Ipv4Net::from_str("198.18.0.0/24").unwrap()]);
        let inside = parse_static("198.18.0.10/24", None, &[]).unwrap();
        let outside = parse_static("198.19.5.10/24", None, &[]).unwrap();
        check_on_bridge(&inside, "labbr0", &nets).unwrap();
        let err = check_on_bridge(&outside, "labbr0", &nets).unwrap_err();
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
        check_on_bridge(&outside, "labbr0", &[]).unwrap();
    }

    #[test]
    fn bridge_and_neighbours_from_host_root() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        host.create_dir_all("/sys/class/net/br0/bridge").unwrap();
        host.create_dir_all("/sys/class/net/eth0").unwrap();
        assert!(bridge_exists(&host, "br0"));
        assert!(!bridge_exists(&host, "eth0"));
        assert!(!bridge_exists(&host, "nope"));
        host.write_atomic(
            paths::PROC_NET_ARP,
            b"IP address       HW type     Flags       HW address            Mask     Device\n198.18.0.9       0x1         0x0         52:54:00:aa:aa:aa     *        labbr0\n198.18.0.10      0x1         0x2         52:54:00:12:34:56     *        labbr0\n",
            0o644,
        )
        .unwrap();
        assert_eq!(
            neighbour_ip(&host, "52:54:00:12:34:56"),
            Some(Ipv4Addr::new(198, 18, 0, 10))
        );
        assert_eq!(neighbour_ip(&host, "52:54:00:aa:aa:aa"), None);
        assert_eq!(
            neighbour_mac(&host, Ipv4Addr::new(198, 18, 0, 10)).as_deref(),
            Some("52:54:00:12:34:56")
        );
        assert_eq!(neighbour_mac(&host, Ipv4Addr::new(198, 18, 0, 9)), None);
    }

    /// A proxy-ARP entry (`arp -s IP -i DEV pub`, `ip neigh add proxy`) is listed in
    /// /proc/net/arp with flags ATF_PUBL|ATF_PERM (0xc) and a zero MAC (net/ipv4/arp.c,
    /// arp_format_pneigh_entry): the host answers for that address, no neighbour holds it. It
    /// is not a complete entry (no ATF_COM), so no MAC is known for its address; netscan's rule.
    #[test]
    fn proxy_arp_entries_are_not_neighbours() {
        let dir = tempfile::tempdir().unwrap();
        let host = HostRoot::new(dir.path());
        let table = "IP address       HW type     Flags       HW address            Mask     Device\n198.18.0.20      0x1         0xc         00:00:00:00:00:00     *        labbr0\n198.18.0.10      0x1         0x2         52:54:00:12:34:56     *        labbr0\n";
        host.write_atomic(paths::PROC_NET_ARP, table.as_bytes(), 0o644)
            .unwrap();
        assert_eq!(neighbour_mac(&host, Ipv4Addr::new(198, 18, 0, 20)), None);
        assert_eq!(neighbour_ip(&host, "00:00:00:00:00:00"), None);
        assert_eq!(
            neighbour_table(&host),
            vec![(
                Ipv4Addr::new(198, 18, 0, 10),
                "52:54:00:12:34:56".to_string()
            )]
        );
    }

    #[test]
    fn wait_for_tcp_succeeds_and_times_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        wait_for_tcp(addr, Duration::from_secs(2), &|_| {}).unwrap();
        drop(l);
        let err = wait_for_tcp(addr, Duration::from_millis(1), &|_| {}).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }));
    }
}
