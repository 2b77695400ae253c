//! Vendor and device names: the `pci-ids` crate's embedded database first, then the system
//! `pci.ids` (read on the real filesystem, never under the host root) for IDs newer than the
//! crate. The system file is only read when the crate lacks an ID.

use std::path::PathBuf;

use hostio::HostRoot;
use pci_ids::FromId;

#[derive(Debug)]
pub(crate) struct Names {
    system_paths: Vec<PathBuf>,
    /// `None` until first needed; then the file's text, or `None` inside when there is none.
    system: Option<Option<String>>,
}

impl Names {
    pub fn new(system_paths: Vec<PathBuf>) -> Self {
        Self {
            system_paths,
            system: None,
        }
    }

    fn system_db(&mut self) -> Option<&str> {
        if self.system.is_none() {
            let real = HostRoot::system();
            let text = self
                .system_paths
                .iter()
                .find_map(|p| real.read_to_string(p).ok());
            self.system = Some(text);
        }
        self.system.as_ref().and_then(|t| t.as_deref())
    }

    /// `(vendor name, device name)` for an ID pair, each `None` when no database knows it.
    pub fn lookup(&mut self, vendor: u16, device: u16) -> (Option<String>, Option<String>) {
        let crate_device = pci_ids::Device::from_vid_pid(vendor, device);
        let crate_vendor = crate_device
            .map(|d| d.vendor().name().to_string())
            .or_else(|| pci_ids::Vendor::from_id(vendor).map(|v| v.name().to_string()));
        if let Some(d) = crate_device {
            return (crate_vendor, Some(d.name().to_string()));
        }
        let (sys_vendor, sys_device) = match self.system_db() {
            Some(text) => lookup_in_pci_ids(text, vendor, device),
            None => (None, None),
        };
        (crate_vendor.or(sys_vendor), sys_device)
    }
}

/// Looks an ID pair up in pci.ids text: vendor lines `vvvv  Name`, device lines `\tdddd  Name`
/// (format described in the file's own header). Stops at the class section (`C xx`).
pub(crate) fn lookup_in_pci_ids(
    text: &str,
    vendor: u16,
    device: u16,
) -> (Option<String>, Option<String>) {
    let vendor_hex = format!("{vendor:04x}");
    let device_hex = format!("{device:04x}");
    let mut vendor_name = None;
    for line in text.lines() {
        if line.starts_with("C ") {
            break;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('\t') {
            if vendor_name.is_some()
                && !rest.starts_with('\t')
                && let Some(name) = id_line(rest, &device_hex)
            {
                return (vendor_name, Some(name));
            }
        } else if vendor_name.is_some() {
            // The next vendor block: the device is not listed.
            break;
        } else {
            vendor_name = id_line(line, &vendor_hex);
        }
    }
    (vendor_name, None)
}

fn id_line(line: &str, id_hex: &str) -> Option<String> {
    let (id, name) = line.split_once(char::is_whitespace)?;
    id.eq_ignore_ascii_case(id_hex)
        .then(|| name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str = "# pci.ids\n10de  NVIDIA Corporation\n\t2204  GA102 [GeForce RTX 3090]\n\
        \t\t10de 1454  RTX 3090 sub\n\tfffe  GB999 [Future GPU]\n10df  Emulex\n\tfffd  Other\n\
        C 03  Display controller\n";

    #[test]
    fn pci_ids_text_lookup() {
        assert_eq!(
            lookup_in_pci_ids(DB, 0x10de, 0xfffe),
            (
                Some("NVIDIA Corporation".into()),
                Some("GB999 [Future GPU]".into())
            )
        );
        assert_eq!(
            lookup_in_pci_ids(DB, 0x10de, 0xfffd),
            (Some("NVIDIA Corporation".into()), None)
        );
        assert_eq!(lookup_in_pci_ids(DB, 0x1234, 0x0001), (None, None));
    }

    #[test]
    fn crate_first_then_system_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pci.ids");
        std::fs::write(&f, DB).unwrap();
        let mut n = Names::new(vec![dir.path().join("missing"), f]);
        assert_eq!(
            n.lookup(0x10de, 0x1e84).1.as_deref(),
            Some("TU104 [GeForce RTX 2070 SUPER]")
        );
        assert_eq!(
            n.lookup(0x10de, 0xfffe).1.as_deref(),
            Some("GB999 [Future GPU]")
        );
        let mut none = Names::new(vec![]);
        assert_eq!(none.lookup(0x10de, 0xfffe).1, None);
        assert!(none.lookup(0x10de, 0xfffe).0.is_some());
    }
}
