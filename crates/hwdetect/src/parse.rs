//! Pure parsers for the text files detection reads (cpuinfo, cmdline, os-release, sysfs ID and
//! class attributes, `/proc/net/route`, `/proc/net/fib_trie`, `/proc/net/if_inet6`).
//! They take `&str`, never touch the filesystem, and never panic on any input (property-tested).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::facts::{CpuVendor, Virtualization};

/// What `/proc/cpuinfo` says about the first CPU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuSummary {
    pub vendor: CpuVendor,
    /// `None` when the vendor line is missing (distinct from an unknown vendor string).
    pub vendor_raw: Option<String>,
    pub virtualization: Option<Virtualization>,
    pub model_name: Option<String>,
    /// A `flags` line was found.
    pub has_flags: bool,
}

/// Parses `/proc/cpuinfo` (x86 layout: `key\t: value`, one block per logical CPU).
/// Only the first block matters: every core of a host reports the same vendor and flags.
pub fn cpuinfo(text: &str) -> CpuSummary {
    let mut out = CpuSummary::default();
    for line in text.lines() {
        // A blank line ends the first processor block.
        if line.trim().is_empty() && (out.vendor_raw.is_some() || out.has_flags) {
            break;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "vendor_id" if out.vendor_raw.is_none() => {
                out.vendor = match value {
                    "GenuineIntel" => CpuVendor::Intel,
                    "AuthenticAMD" | "HygonGenuine" => CpuVendor::Amd,
                    _ => CpuVendor::Unknown,
                };
                out.vendor_raw = Some(value.to_string());
            }
            "model name" if out.model_name.is_none() => out.model_name = Some(value.to_string()),
            "flags" if !out.has_flags => {
                out.has_flags = true;
                for flag in value.split_ascii_whitespace() {
                    match flag {
                        "vmx" => out.virtualization = Some(Virtualization::Vmx),
                        "svm" => out.virtualization = Some(Virtualization::Svm),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// Parses the kernel's cpulist format (`0-15,32-47`, as in `/sys/devices/system/node/nodeN/cpulist`
/// and `/sys/devices/system/cpu/online`; lib/bitmap-str.c, `bitmap_parselist`): comma-separated
/// CPUs and inclusive ranges, optionally strided as `first-last:used/group` (`0-7:2/4` is 0, 1,
/// 4, 5). An empty list (a node without CPUs) is valid. Returns the CPUs sorted, without
/// duplicates, or why the text is not a cpulist.
pub fn cpulist(text: &str) -> Result<Vec<u32>, String> {
    // The kernel caps CPU numbers at NR_CPUS (8192 on Ubuntu's kernels); a bigger number is a
    // typo, and refusing it keeps a stray `0-4294967295` from allocating gigabytes.
    const MAX_CPU: u32 = 1 << 16;
    let text = text.trim();
    let mut out = std::collections::BTreeSet::new();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let num = |s: &str| -> Result<u32, String> {
        let n: u32 = s
            .parse()
            .map_err(|_| format!("`{s}` is not a CPU number"))?;
        if n >= MAX_CPU {
            return Err(format!("CPU {n} is beyond {}", MAX_CPU - 1));
        }
        Ok(n)
    };
    for part in text.split(',') {
        let (range, stride) = match part.split_once(':') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None if stride.is_none() => {
                let n = num(range)?;
                (n, n)
            }
            None => return Err(format!("`{part}`: a stride needs a range")),
        };
        if first > last {
            return Err(format!("`{part}`: the range runs backwards"));
        }
        let (used, group) = match stride {
            None => (1, 1),
            Some(s) => {
                let (u, g) = s
                    .split_once('/')
                    .ok_or_else(|| format!("`{part}`: expected first-last:used/group"))?;
                let (u, g) = (num(u)?, num(g)?);
                if u == 0 || g == 0 || u > g {
                    return Err(format!("`{part}`: bad stride {u}/{g}"));
                }
                (u, g)
            }
        };
        for cpu in first..=last {
            if (cpu - first) % group < used {
                out.insert(cpu);
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Writes CPUs in the kernel's cpulist form (`0-3,8,10-11`): the inverse of [`cpulist`].
pub fn format_cpulist(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// A `Key:   N kB` line of `/proc/meminfo` (proc(5)), in KiB.
pub fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != key {
            return None;
        }
        let v = v.trim();
        v.strip_suffix("kB").unwrap_or(v).trim().parse().ok()
    })
}

/// Splits `/proc/cmdline` into arguments. The kernel accepts double quotes around values with
/// spaces (`foo="a b"`, Documentation/admin-guide/kernel-parameters.rst); quotes are kept.
pub fn cmdline(text: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    for c in text.chars() {
        if c == '"' {
            in_quotes = !in_quotes;
            cur.push(c);
        } else if c.is_whitespace() && !in_quotes {
            if !cur.is_empty() {
                args.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    args
}

/// True for kernel arguments that concern the IOMMU or VFIO binding.
pub fn is_iommu_arg(arg: &str) -> bool {
    let key = arg.split_once('=').map_or(arg, |(k, _)| k);
    matches!(
        key,
        "intel_iommu" | "amd_iommu" | "iommu" | "amd_iommu_intr" | "pcie_acs_override"
    ) || key.starts_with("iommu.")
        || key.starts_with("vfio-pci.")
        || key.starts_with("vfio_pci.")
        || key.starts_with("vfio_iommu_type1.")
        || key.starts_with("vfio.")
}

/// Parses os-release (os-release(5)): `KEY=value` lines, values optionally in single or double
/// quotes with shell-style backslash escapes in double quotes; `#` lines are comments.
pub fn os_release(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        map.insert(key.to_string(), unquote(raw.trim()));
    }
    map
}

fn unquote(raw: &str) -> String {
    let mut chars = raw.chars().peekable();
    match chars.peek() {
        Some('"') => {
            chars.next();
            let mut out = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => {
                        if let Some(n) = chars.next() {
                            out.push(n);
                        }
                    }
                    c => out.push(c),
                }
            }
            out
        }
        Some('\'') => {
            chars.next();
            chars.take_while(|&c| c != '\'').collect()
        }
        _ => raw.to_string(),
    }
}

/// Parses a sysfs hex attribute such as `vendor` (`0x10de\n`) or `class` (`0x030000\n`)
/// and checks it fits in `max_digits` hex digits.
pub fn sysfs_hex(text: &str, max_digits: usize) -> Option<u32> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    if digits.is_empty()
        || digits.len() > max_digits
        || !digits.chars().all(|c| c.is_ascii_hexdigit())
    {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

/// A 16-bit PCI ID (`vendor`, `device`, `subsystem_*`).
pub fn pci_id(text: &str) -> Option<u16> {
    sysfs_hex(text, 4).and_then(|v| u16::try_from(v).ok())
}

/// A 24-bit PCI class code (`class`).
pub fn pci_class(text: &str) -> Option<u32> {
    sysfs_hex(text, 6)
}

/// A full BDF `DDDD:BB:DD.F` (what sysfs names devices); returns it lowercased. The domain
/// may be longer than 4 digits: Intel VMD puts its devices in domains `10000` and up.
pub fn bdf(name: &str) -> Option<String> {
    let (domain, rest) = name.split_once(':')?;
    let b = rest.as_bytes();
    let hex = |s: &[u8]| s.iter().all(u8::is_ascii_hexdigit);
    let ok = (4..=8).contains(&domain.len())
        && hex(domain.as_bytes())
        && b.len() == 7
        && hex(&b[0..2])
        && b[2] == b':'
        && hex(&b[3..5])
        && b[5] == b'.'
        && (b'0'..=b'7').contains(&b[6]);
    ok.then(|| name.to_ascii_lowercase())
}

/// One line of `/proc/net/route` (all numbers are hex; addresses in network byte order
/// printed as a little-endian u32, see net/ipv4/fib_trie.c `fib_route_seq_show`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub destination: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub flags: u32,
    pub metric: u32,
    pub mask: Ipv4Addr,
}

/// `RTF_UP` and `RTF_GATEWAY` from include/uapi/linux/route.h.
pub const RTF_UP: u32 = 0x1;
pub const RTF_GATEWAY: u32 = 0x2;

fn le_hex_addr(s: &str) -> Option<Ipv4Addr> {
    if s.len() != 8 {
        return None;
    }
    let v = u32::from_str_radix(s, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()))
}

/// Parses `/proc/net/route`; malformed lines are skipped and counted.
pub fn routes(text: &str) -> (Vec<Route>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let parsed = (|| {
            Some(Route {
                iface: f.first()?.to_string(),
                destination: le_hex_addr(f.get(1)?)?,
                gateway: le_hex_addr(f.get(2)?)?,
                flags: u32::from_str_radix(f.get(3)?, 16).ok()?,
                metric: f.get(6)?.parse().ok()?,
                mask: le_hex_addr(f.get(7)?)?,
            })
        })();
        match parsed {
            Some(r) => out.push(r),
            None => bad += 1,
        }
    }
    (out, bad)
}

/// The default route: destination and mask 0.0.0.0, up, via a gateway; lowest metric wins.
pub fn default_route(routes: &[Route]) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| {
            r.destination.is_unspecified()
                && r.mask.is_unspecified()
                && r.flags & RTF_UP != 0
                && r.flags & RTF_GATEWAY != 0
        })
        .min_by_key(|r| r.metric)
}

/// The local IPv4 addresses in `/proc/net/fib_trie`: a `|-- a.b.c.d` leaf followed by a
/// `/32 host LOCAL` line. Both the Main and Local tables list them; the result is deduplicated.
pub fn fib_trie_local_addrs(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(addr) = t.strip_prefix("|-- ") {
            leaf = addr.trim().parse().ok();
        } else if t.starts_with('/') {
            let mut words = t.split_whitespace();
            let is_local_host = words.next() == Some("/32")
                && words.next() == Some("host")
                && words.next() == Some("LOCAL");
            if let (true, Some(a)) = (is_local_host, leaf)
                && !out.contains(&a)
            {
                out.push(a);
            }
        } else {
            leaf = None;
        }
    }
    out
}

/// One address from `/proc/net/if_inet6`: `addr(32 hex) ifindex prefixlen scope flags name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inet6 {
    pub iface: String,
    pub addr: Ipv6Addr,
    pub prefix_len: u8,
}

/// Parses `/proc/net/if_inet6`; malformed lines are skipped and counted.
pub fn if_inet6(text: &str) -> (Vec<Inet6>, usize) {
    let mut out = Vec::new();
    let mut bad = 0;
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let parsed = (|| {
            let hex = f.first()?;
            if hex.len() != 32 || !hex.is_ascii() {
                return None;
            }
            let v = u128::from_str_radix(hex, 16).ok()?;
            let prefix_len = u8::from_str_radix(f.get(2)?, 16).ok()?;
            if prefix_len > 128 {
                return None;
            }
            Some(Inet6 {
                iface: f.get(5)?.to_string(),
                addr: Ipv6Addr::from(v),
                prefix_len,
            })
        })();
        match parsed {
            Some(a) => out.push(a),
            None => bad += 1,
        }
    }
    (out, bad)
}

/// The leading chip code of a pci.ids NVIDIA device name: `GA102 [GeForce RTX 3090]` → `GA102`,
/// `GK208B [GeForce GT 710]` → `GK208B`. `None` for names without one (`Device 2bb1`).
pub fn chip_code(name: &str) -> Option<String> {
    let word = name.split([' ', '[']).next()?;
    let letters = word.chars().take_while(|c| c.is_ascii_uppercase()).count();
    let digits = word[letters..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let rest = &word[letters + digits..];
    let ok = (1..=3).contains(&letters)
        && (2..=4).contains(&digits)
        && rest.len() <= 2
        && rest.chars().all(|c| c.is_ascii_alphanumeric());
    ok.then(|| word.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists_as_the_kernel_writes_them() {
        assert_eq!(cpulist("0-3,8,10-11\n").unwrap(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(cpulist("").unwrap(), Vec::<u32>::new());
        assert_eq!(cpulist("\n").unwrap(), Vec::<u32>::new());
        assert_eq!(cpulist("5").unwrap(), [5]);
        let h200_node1 = cpulist("56-111,168-223").unwrap();
        assert_eq!(h200_node1.len(), 112);
        assert_eq!(
            (h200_node1[0], h200_node1[55], h200_node1[56]),
            (56, 111, 168)
        );
        // Overlaps and disorder collapse (the kernel never writes them, a user might).
        assert_eq!(cpulist("3,1-2,2").unwrap(), [1, 2, 3]);
        // bitmap_parselist's strided groups.
        assert_eq!(cpulist("0-7:2/4").unwrap(), [0, 1, 4, 5]);
        for bad in [
            "a", "1-", "-1", "3-1", "1,,2", "0-7:0/4", "0-7:5/4", "1:1/2", "70000",
        ] {
            assert!(cpulist(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn meminfo_lines() {
        let t = "MemTotal:       2113523712 kB\nMemFree:        100 kB\nHugePages_Total:       0\n";
        assert_eq!(meminfo_kib(t, "MemTotal"), Some(2113523712));
        assert_eq!(meminfo_kib(t, "HugePages_Total"), Some(0));
        assert_eq!(meminfo_kib(t, "Mem"), None);
    }

    #[test]
    fn cpulist_round_trip() {
        for text in ["0-3,8,10-11", "0", "0-55,112-167", ""] {
            assert_eq!(format_cpulist(&cpulist(text).unwrap()), text);
        }
    }
    use proptest::prelude::*;

    const INTEL_CPUINFO: &str = "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n\
        model name\t: Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz\n\
        flags\t\t: fpu vme de pse vmx smx est\n\nprocessor\t: 1\nvendor_id\t: GenuineIntel\n";

    #[test]
    fn cpuinfo_intel_vmx() {
        let c = cpuinfo(INTEL_CPUINFO);
        assert_eq!(c.vendor, CpuVendor::Intel);
        assert_eq!(c.virtualization, Some(Virtualization::Vmx));
        assert_eq!(
            c.model_name.as_deref(),
            Some("Intel(R) Core(TM) i7-6700K CPU @ 4.00GHz")
        );
    }

    #[test]
    fn cpuinfo_amd_without_svm_has_no_virtualization() {
        let c = cpuinfo("vendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 svm_lock\n");
        assert_eq!(c.vendor, CpuVendor::Amd);
        assert_eq!(c.virtualization, None);
    }

    #[test]
    fn cmdline_keeps_quoted_values_together() {
        assert_eq!(
            cmdline("BOOT_IMAGE=/vmlinuz ro  intel_iommu=on iommu=pt dyndbg=\"file a.c +p\"\n"),
            vec![
                "BOOT_IMAGE=/vmlinuz",
                "ro",
                "intel_iommu=on",
                "iommu=pt",
                "dyndbg=\"file a.c +p\""
            ]
        );
    }

    #[test]
    fn iommu_args_are_recognised() {
        for a in [
            "intel_iommu=on",
            "amd_iommu=force_isolation",
            "iommu=pt",
            "iommu.passthrough=1",
            "vfio-pci.ids=10de:2204,10de:1aef",
        ] {
            assert!(is_iommu_arg(a), "{a}");
        }
        for a in ["ro", "quiet", "iommu_foo=1", "kvm_amd.npt=1"] {
            assert!(!is_iommu_arg(a), "{a}");
        }
    }

    #[test]
    fn os_release_quotes_and_comments() {
        let m = os_release(
            "# comment\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\nID=ubuntu\nPRETTY_NAME='Ubuntu 24.04.1 LTS'\n\
             X=\"a \\\"q\\\"\"\nbroken line\n",
        );
        assert_eq!(m["ID"], "ubuntu");
        assert_eq!(m["VERSION_ID"], "24.04");
        assert_eq!(m["PRETTY_NAME"], "Ubuntu 24.04.1 LTS");
        assert_eq!(m["X"], "a \"q\"");
        assert_eq!(m.len(), 5);
    }

    #[test]
    fn hex_attributes() {
        assert_eq!(pci_id("0x10de\n"), Some(0x10de));
        assert_eq!(pci_class("0x030000\n"), Some(0x030000));
        assert_eq!(pci_class("0x0300000"), None);
        assert_eq!(pci_id("0x1ffff"), None);
        assert_eq!(pci_id(""), None);
        assert_eq!(pci_class("0xZZ"), None);
    }

    #[test]
    fn bdf_is_validated() {
        assert_eq!(bdf("0000:2B:00.3").as_deref(), Some("0000:2b:00.3"));
        assert_eq!(bdf("0000:2b:00.8"), None);
        assert_eq!(bdf("10000:e1:00.0").as_deref(), Some("10000:e1:00.0"));
        assert_eq!(bdf("000:2b:00.0"), None);
        assert_eq!(bdf("2b:00.0"), None);
        assert_eq!(bdf("0000:2b:00.é"), None);
    }

    #[test]
    fn route_default_and_little_endian_gateway() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            br0\t00000000\t010012C6\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            br0\t000012C6\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n\
            garbage line\n";
        let (r, bad) = routes(text);
        assert_eq!(bad, 1);
        let d = default_route(&r).unwrap();
        assert_eq!(d.iface, "br0");
        assert_eq!(d.gateway, Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(r[1].destination, Ipv4Addr::new(198, 18, 0, 0));
        assert_eq!(r[1].mask, Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn fib_trie_locals() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
            +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              /8 host LOCAL\n\
                       |-- 127.0.0.1\n              /32 host LOCAL\n\
                    |-- 192.0.2.2\n              /32 host LOCAL\n\
                    |-- 192.0.2.255\n           /32 link BROADCAST\n\
            Local:\n     |-- 192.0.2.2\n              /32 host LOCAL\n";
        assert_eq!(
            fib_trie_local_addrs(text),
            vec![Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 2)]
        );
    }

    #[test]
    fn inet6_lines() {
        let (a, bad) = if_inet6(
            "fe8000000000000000fc00fffe000001 04 40 20 80     eth0\n\
             00000000000000000000000000000001 01 80 10 80       lo\nzz\n",
        );
        assert_eq!(bad, 1);
        assert_eq!(a[0].addr.to_string(), "fe80::fc:ff:fe00:1");
        assert_eq!(a[0].prefix_len, 64);
        assert_eq!(a[1].iface, "lo");
    }

    #[test]
    fn chip_codes() {
        for (name, chip) in [
            ("GA102 [GeForce RTX 3090]", Some("GA102")),
            ("GK208B [GeForce GT 710]", Some("GK208B")),
            ("GH100 [H200 SXM 141GB]", Some("GH100")),
            ("TU104 [GeForce RTX 2070 SUPER]", Some("TU104")),
            ("AD102[GeForce RTX 4090]", Some("AD102")),
            ("Device 2bb1", None),
            ("", None),
            ("NVIDIA device 10de:ffff", None),
        ] {
            assert_eq!(chip_code(name).as_deref(), chip, "{name}");
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in "\\PC{0,400}") {
            let _ = cpuinfo(&s);
            let _ = cmdline(&s);
            let _ = os_release(&s);
            let _ = pci_id(&s);
            let _ = pci_class(&s);
            let _ = bdf(&s);
            let _ = routes(&s);
            let _ = fib_trie_local_addrs(&s);
            let _ = if_inet6(&s);
            let _ = chip_code(&s);
            for a in cmdline(&s) { let _ = is_iommu_arg(&a); }
        }

        #[test]
        fn structured_inputs_never_panic(
            key in "[a-z_ ]{0,12}", val in "[ -~\\t]{0,40}", hex in "(0x)?[0-9a-fA-FxZ]{0,9}",
            lines in proptest::collection::vec("[0-9A-Fa-f\\t ]{0,80}", 0..6),
        ) {
            let _ = cpuinfo(&format!("{key}\t: {val}\nflags\t: {val}\n"));
            let _ = os_release(&format!("{key}={val}\n{key}=\"{val}\n"));
            let _ = pci_id(&hex);
            let _ = pci_class(&hex);
            let route = format!("Iface\tDestination\n{}", lines.join("\n"));
            let _ = routes(&route);
            let _ = if_inet6(&lines.join("\n"));
        }

        #[test]
        fn cmdline_roundtrips_plain_words(words in proptest::collection::vec("[a-z0-9_.=,:-]{1,12}", 0..10)) {
            prop_assert_eq!(cmdline(&words.join(" ")), words);
        }

        #[test]
        fn hex_ids_roundtrip(v in 0u16..=u16::MAX) {
            prop_assert_eq!(pci_id(&format!("0x{v:04x}\n")), Some(v));
        }
    }
}
