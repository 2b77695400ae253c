//! MAC vendor names from the OUI (first three octets): a small embedded table of the NICs met on
//! GPU hosts and hypervisors, then the system's IEEE registry copy when one is installed
//! (arp-scan's `ieee-oui.txt`, or ieee-data's `oui.txt`).

use std::collections::{BTreeSet, HashMap};

use hostio::{HostRoot, paths};

use crate::MacAddr;

/// Checked against the IEEE registry (`/usr/share/ieee-data/oui.txt`), except 52:54:00, which is
/// locally administered and used by QEMU/libvirt for generated MACs (qemu `net/net.c`), and
/// 08:00:27, registered to PCS Systemtechnik but used by VirtualBox.
const EMBEDDED: &[(u32, &str)] = &[
    (0x525400, "QEMU/KVM virtual NIC"),
    (0x00163e, "Xen virtual NIC"),
    (0x000c29, "VMware, Inc."),
    (0x005056, "VMware, Inc."),
    (0x000569, "VMware, Inc."),
    (0x080027, "VirtualBox virtual NIC"),
    (0x001c42, "Parallels, Inc."),
    (0x00155d, "Microsoft Hyper-V"),
    (0x001b21, "Intel Corporate"),
    (0x3cfdfe, "Intel Corporate"),
    (0xa0369f, "Intel Corporate"),
    (0x001e67, "Intel Corporate"),
    (0xb49691, "Intel Corporate"),
    (0x6805ca, "Intel Corporate"),
    (0x00e04c, "Realtek Semiconductor Corp."),
    (0x001018, "Broadcom"),
    (0x000af7, "Broadcom"),
    (0x0002c9, "Mellanox Technologies, Inc."),
    (0x248a07, "Mellanox Technologies, Inc."),
    (0x7cfe90, "Mellanox Technologies, Inc."),
    (0xb8599f, "Mellanox Technologies, Inc."),
    (0xec0d9a, "Mellanox Technologies, Inc."),
    (0x0c42a1, "Mellanox Technologies, Inc."),
    (0x98039b, "Mellanox Technologies, Inc."),
    (0x48b02d, "NVIDIA Corporation"),
    (0x00044b, "NVIDIA Corporation"),
    (0x002590, "Super Micro Computer, Inc."),
    (0xac1f6b, "Super Micro Computer, Inc."),
    (0x3cecef, "Super Micro Computer, Inc."),
    (0x0cc47a, "Super Micro Computer, Inc."),
    (0x001422, "Dell Inc."),
    (0x1866da, "Dell Inc."),
    (0xf8bc12, "Dell Inc."),
    (0xb083fe, "Dell Inc."),
    (0x246e96, "Dell Inc."),
    (0x0017a4, "Hewlett Packard"),
    (0x9c8e99, "Hewlett Packard"),
    (0x9457a5, "Hewlett Packard"),
    (0x3cd92b, "Hewlett Packard"),
    (0xb827eb, "Raspberry Pi Foundation"),
    (0xdca632, "Raspberry Pi Trading Ltd"),
];

/// Vendor lookup. Embedded names win (they name virtual NICs better than the registry does).
#[derive(Debug, Clone, Default)]
pub struct OuiDb {
    system: HashMap<u32, String>,
}

impl OuiDb {
    /// Only the embedded table.
    pub fn embedded() -> Self {
        OuiDb::default()
    }

    /// The embedded table plus the first system OUI file that exists under `host`. A missing or
    /// unreadable file is not an error: vendors are a nicety.
    pub fn load(host: &HostRoot) -> Self {
        Self::load_filtered(host, None)
    }

    /// Like [`OuiDb::load`], keeping only the given OUIs from the system file: a scan knows
    /// which MACs it saw, and building the whole 33,000-entry map costs more than the lookups.
    pub fn load_only(host: &HostRoot, ouis: &BTreeSet<u32>) -> Self {
        let wanted: BTreeSet<u32> = ouis
            .iter()
            .copied()
            .filter(|o| embedded(*o).is_none())
            .collect();
        if wanted.is_empty() {
            return OuiDb::default();
        }
        Self::load_filtered(host, Some(&wanted))
    }

    fn load_filtered(host: &HostRoot, only: Option<&BTreeSet<u32>>) -> Self {
        let system = paths::SYSTEM_OUI_FILES
            .iter()
            .find_map(|p| host.read_to_string(p).ok())
            .map(|text| parse_oui_text(&text, only))
            .unwrap_or_default();
        OuiDb { system }
    }

    pub fn lookup(&self, mac: MacAddr) -> Option<&str> {
        let oui = mac.oui();
        embedded(oui).or_else(|| self.system.get(&oui).map(String::as_str))
    }

    pub fn len(&self) -> usize {
        EMBEDDED.len() + self.system.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

fn embedded(oui: u32) -> Option<&'static str> {
    EMBEDDED.iter().find(|(o, _)| *o == oui).map(|(_, v)| *v)
}

/// Parses both registry formats, keeping only `only` when given:
/// - arp-scan `ieee-oui.txt`: `000C29<TAB>VMware, Inc.` (longer MA-M/MA-S prefixes are skipped);
/// - IEEE `oui.txt`: `00-0C-29   (hex)<TAB><TAB>VMware, Inc.`.
fn parse_oui_text(text: &str, only: Option<&BTreeSet<u32>>) -> HashMap<u32, String> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let b = line.as_bytes();
        // Cheap key extraction first (this runs over ~47,000 lines): `AABBCC<TAB>` or
        // `AA-BB-CC   (hex)`; anything else (comments, MA-M/MA-S, `(base 16)` lines) is skipped.
        let (hex, rest): ([u8; 6], &str) = if b.len() > 7 && b[6] == b'\t' {
            ([b[0], b[1], b[2], b[3], b[4], b[5]], &line[7..])
        } else if b.len() > 8
            && b[2] == b'-'
            && b[5] == b'-'
            && line[8..].trim_start().starts_with("(hex)")
        {
            let r = line[8..].trim_start();
            ([b[0], b[1], b[3], b[4], b[6], b[7]], &r["(hex)".len()..])
        } else {
            continue;
        };
        let Some(oui) = std::str::from_utf8(&hex)
            .ok()
            .and_then(|h| u32::from_str_radix(h, 16).ok())
        else {
            continue;
        };
        if only.is_some_and(|o| !o.contains(&oui)) {
            continue;
        }
        let vendor = rest.trim();
        if !vendor.is_empty() {
            map.entry(oui).or_insert_with(|| vendor.to_string());
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(s: &str) -> MacAddr {
        s.parse().expect("mac")
    }

    #[test]
    fn embedded_names_virtual_nics() {
        let db = OuiDb::embedded();
        assert_eq!(
            db.lookup(mac("52:54:00:12:34:56")),
            Some("QEMU/KVM virtual NIC")
        );
        assert_eq!(
            db.lookup(mac("0c:42:a1:00:00:01")),
            Some("Mellanox Technologies, Inc.")
        );
        assert_eq!(db.lookup(mac("02:00:00:00:00:01")), None);
    }

    #[test]
    fn reads_both_registry_formats_from_the_host_root() {
        let dir = tempfile::tempdir().expect("tmp");
        let host = HostRoot::new(dir.path());
        let arp_scan = "# header\n0050C27D5\tDEUTA-WERKE GmbH\nAABBCC\tExample Corp\n";
        host.write_atomic(paths::SYSTEM_OUI_FILES[0], arp_scan.as_bytes(), 0o644)
            .expect("write");
        let db = OuiDb::load(&host);
        assert_eq!(db.lookup(mac("aa:bb:cc:01:02:03")), Some("Example Corp"));
        assert_eq!(db.lookup(mac("00:50:c2:7d:50:00")), None);
        let few = OuiDb::load_only(&host, &[0xaabbcc].into());
        assert_eq!(few.lookup(mac("aa:bb:cc:01:02:03")), Some("Example Corp"));
        assert_eq!(
            OuiDb::load_only(&host, &[0x123456].into()).lookup(mac("aa:bb:cc:01:02:03")),
            None
        );

        let ieee = "OUI/MA-L\t\tOrganization\n00-22-72   (hex)\t\tAmerican Micro-Fuel Device Corp.\n002272     (base 16)\t\tAmerican Micro-Fuel Device Corp.\n";
        let parsed = parse_oui_text(ieee, None);
        assert_eq!(parsed.len(), 1);
        assert_eq!(
            parsed.get(&0x002272).map(String::as_str),
            Some("American Micro-Fuel Device Corp.")
        );
    }

    #[test]
    fn missing_system_file_is_fine() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = OuiDb::load(&HostRoot::new(dir.path()));
        assert_eq!(db.lookup(mac("00:0c:29:00:00:01")), Some("VMware, Inc."));
    }
}
