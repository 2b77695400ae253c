//! PCI functions, IOMMU groups and the GPUs derived from them, read from sysfs
//! (Documentation/ABI/testing/sysfs-bus-pci, Documentation/driver-api/vfio.rst).

use std::collections::{BTreeMap, BTreeSet};
use std::io;

use hostio::paths::{SYS_BUS_PCI_DEVICES, SYS_KERNEL_IOMMU_GROUPS};

use crate::facts::{Gpu, PciDevice};
use crate::names::Names;
use crate::parse;
use crate::probe::Probe;

pub(crate) const NVIDIA: &str = "10de";
/// PCI class codes (upper 16 bits), from include/linux/pci_ids.h.
pub(crate) const CLASS_VGA: &str = "0300";
pub(crate) const CLASS_3D: &str = "0302";
pub(crate) const CLASS_PCI_BRIDGE: &str = "0604";
pub(crate) const CLASS_OTHER_BRIDGE: &str = "0680";

/// Reads every function under `/sys/bus/pci/devices`, sorted by BDF.
pub(crate) fn devices(probe: &Probe, names: &mut Names, warn: &mut Vec<String>) -> Vec<PciDevice> {
    let names_list = match probe.list(SYS_BUS_PCI_DEVICES) {
        Ok(n) => n,
        Err(e) => {
            warn.push(format!(
                "{SYS_BUS_PCI_DEVICES}: cannot list PCI devices: {e}"
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for name in names_list {
        match parse::bdf(&name) {
            Some(bdf) => out.push(device(probe, names, &name, bdf, warn)),
            None => warn.push(format!(
                "{SYS_BUS_PCI_DEVICES}/{name}: not a PCI address (DDDD:BB:DD.F), skipped"
            )),
        }
    }
    out.sort_by(|a, b| a.bdf.cmp(&b.bdf));
    out
}

fn device(
    probe: &Probe,
    names: &mut Names,
    entry: &str,
    bdf: String,
    warn: &mut Vec<String>,
) -> PciDevice {
    let base = format!("{SYS_BUS_PCI_DEVICES}/{entry}");
    let attr = |name: &str| format!("{base}/{name}");

    // Required hex attributes: missing or malformed ones are warned about and left empty.
    let hex = |name: &str, digits: usize, warn: &mut Vec<String>| -> Option<u32> {
        let path = attr(name);
        match probe.read(&path) {
            Ok(text) => {
                let v = parse::sysfs_hex(&text, digits);
                if v.is_none() {
                    warn.push(format!(
                        "{path}: malformed value {:?} (expected 0x and {digits} hex digits)",
                        text.trim()
                    ));
                }
                v
            }
            Err(e) => {
                warn.push(format!("{path}: cannot read: {e}"));
                None
            }
        }
    };
    let vendor = hex("vendor", 4, warn);
    let device_id = hex("device", 4, warn);
    let class = hex("class", 6, warn);

    let mut d = PciDevice {
        bdf,
        vendor_id: vendor.map(|v| format!("{v:04x}")).unwrap_or_default(),
        device_id: device_id.map(|v| format!("{v:04x}")).unwrap_or_default(),
        class: class.map(|c| format!("{:04x}", c >> 8)).unwrap_or_default(),
        class_full: class.map(|c| format!("{c:06x}")).unwrap_or_default(),
        ..PciDevice::default()
    };

    // Optional attributes: absent is normal, malformed is warned about.
    let optional_id = |name: &str, warn: &mut Vec<String>| -> Option<String> {
        let path = attr(name);
        match probe.read_optional(&path) {
            Ok(Some(text)) => match parse::pci_id(&text) {
                Some(v) => Some(format!("{v:04x}")),
                None => {
                    warn.push(format!("{path}: malformed value {:?}", text.trim()));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                warn.push(format!("{path}: cannot read: {e}"));
                None
            }
        }
    };
    d.subsystem_vendor_id = optional_id("subsystem_vendor", warn);
    d.subsystem_device_id = optional_id("subsystem_device", warn);

    if let (Some(v), Some(dev)) = (vendor, device_id) {
        // Both IDs come from a 4-digit parse, so they fit in u16.
        let (vn, dn) = names.lookup(v as u16, dev as u16);
        d.vendor_name = vn;
        d.device_name = dn;
    }

    d.driver = link(probe, &attr("driver"), warn);
    d.driver_override = match probe.read_optional(attr("driver_override")) {
        Ok(Some(t)) => {
            let t = t.trim();
            // The kernel prints "(null)" when no override is set.
            (!t.is_empty() && t != "(null)").then(|| t.to_string())
        }
        Ok(None) => None,
        Err(e) => {
            warn.push(format!("{}: cannot read: {e}", attr("driver_override")));
            None
        }
    };
    d.iommu_group = link(probe, &attr("iommu_group"), warn).and_then(|g| match g.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            warn.push(format!(
                "{}: link target {g:?} is not a group number",
                attr("iommu_group")
            ));
            None
        }
    });

    // `boot_vga` is only created for VGA-class functions (drivers/pci/pci-sysfs.c).
    if d.class == CLASS_VGA {
        let path = attr("boot_vga");
        d.boot_vga = match probe.read(&path) {
            Ok(t) => match t.trim() {
                "1" => Some(true),
                "0" => Some(false),
                other => {
                    warn.push(format!(
                        "{path}: malformed value {other:?} (expected 0 or 1)"
                    ));
                    None
                }
            },
            Err(e) => {
                warn.push(format!("{path}: cannot read: {e}"));
                None
            }
        };
    }

    match probe.read_optional(attr("reset_method")) {
        Ok(Some(t)) => d.reset_methods = t.split_whitespace().map(str::to_string).collect(),
        Ok(None) => {}
        Err(e) => warn.push(format!("{}: cannot read: {e}", attr("reset_method"))),
    }
    d.reset = probe.lexists(attr("reset"));
    d.mdev_supported = probe.is_dir(attr("mdev_supported_types"));
    // Only SR-IOV virtual functions have `physfn` (Documentation/PCI/pci-iov-howto.rst).
    d.physfn = link(probe, &attr("physfn"), warn);
    d
}

fn link(probe: &Probe, path: &str, warn: &mut Vec<String>) -> Option<String> {
    match probe.link_name(path) {
        Ok(v) => v,
        Err(e) => {
            warn.push(format!("{path}: cannot read link: {e}"));
            None
        }
    }
}

/// IOMMU groups from `/sys/kernel/iommu_groups/<N>/devices/*`. `None` when the directory is
/// absent (no IOMMU, or an older capture); an empty map when it exists but is empty.
pub(crate) fn iommu_groups(
    probe: &Probe,
    warn: &mut Vec<String>,
) -> Option<BTreeMap<u32, BTreeSet<String>>> {
    let names = match probe.list(SYS_KERNEL_IOMMU_GROUPS) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn.push(format!("{SYS_KERNEL_IOMMU_GROUPS}: cannot list: {e}"));
            return None;
        }
    };
    let mut groups = BTreeMap::new();
    for name in names {
        let Ok(n) = name.parse::<u32>() else {
            warn.push(format!(
                "{SYS_KERNEL_IOMMU_GROUPS}/{name}: not a group number, skipped"
            ));
            continue;
        };
        let dir = format!("{SYS_KERNEL_IOMMU_GROUPS}/{name}/devices");
        let members = match probe.list(&dir) {
            Ok(m) => m
                .into_iter()
                .filter_map(|m| {
                    let b = parse::bdf(&m);
                    if b.is_none() {
                        warn.push(format!("{dir}/{m}: not a PCI address, ignored"));
                    }
                    b
                })
                .collect(),
            Err(e) => {
                warn.push(format!("{dir}: cannot list: {e}"));
                BTreeSet::new()
            }
        };
        groups.insert(n, members);
    }
    Some(groups)
}

/// `DDDD:BB:DD` of a BDF: the functions of one device share it.
fn slot(bdf: &str) -> &str {
    bdf.rsplit_once('.').map_or(bdf, |(s, _)| s)
}

pub(crate) fn is_gpu(d: &PciDevice) -> bool {
    d.vendor_id == NVIDIA && (d.class == CLASS_VGA || d.class == CLASS_3D)
}

pub(crate) fn is_nvswitch(d: &PciDevice) -> bool {
    d.vendor_id == NVIDIA && d.class == CLASS_OTHER_BRIDGE
}

/// Derives the GPUs from the devices and groups. `groups` is `None` without IOMMU groups, and
/// isolation is then unknown (`null`), never claimed.
pub(crate) fn gpus(
    devices: &[PciDevice],
    groups: Option<&BTreeMap<u32, BTreeSet<String>>>,
) -> Vec<Gpu> {
    let by_bdf: BTreeMap<&str, &PciDevice> = devices.iter().map(|d| (d.bdf.as_str(), d)).collect();
    devices
        .iter()
        .filter(|d| is_gpu(d))
        .map(|d| {
            // VFs share the slot of their PF but are separate assignable devices.
            let funcs: Vec<&PciDevice> = devices
                .iter()
                .filter(|f| match d.physfn {
                    Some(_) => f.bdf == d.bdf,
                    None => slot(&f.bdf) == slot(&d.bdf) && f.physfn.is_none(),
                })
                .collect();
            let functions: Vec<String> = funcs.iter().map(|f| f.bdf.clone()).collect();
            let name = d
                .device_name
                .clone()
                .unwrap_or_else(|| format!("NVIDIA device {}:{}", d.vendor_id, d.device_id));
            let (iommu_group, isolated, group_blockers) = match groups {
                None => (None, None, Vec::new()),
                Some(groups) => match d.iommu_group.or_else(|| {
                    groups
                        .iter()
                        .find(|(_, m)| m.contains(&d.bdf))
                        .map(|(n, _)| *n)
                }) {
                    None => (None, None, Vec::new()),
                    Some(n) => {
                        // Members: the kernel's group listing, plus any device whose own
                        // `iommu_group` link names this group (they should agree).
                        let members = group_members(groups, devices, n);
                        // Bridges need no binding (Documentation/driver-api/vfio.rst); an
                        // unreadable member counts as a blocker: isolation is never guessed.
                        let blockers: Vec<String> = members
                            .into_iter()
                            .filter(|m| !functions.iter().any(|f| f == m))
                            .filter(|m| by_bdf.get(m).is_none_or(|x| x.class != CLASS_PCI_BRIDGE))
                            .map(str::to_string)
                            .collect();
                        (Some(n), Some(blockers.is_empty()), blockers)
                    }
                },
            };
            Gpu {
                bdf: d.bdf.clone(),
                vendor_id: d.vendor_id.clone(),
                device_id: d.device_id.clone(),
                class: d.class.clone(),
                chip: parse::chip_code(&name),
                name,
                driver: d.driver.clone(),
                function_drivers: funcs.iter().map(|f| f.driver.clone()).collect(),
                function_ids: funcs
                    .iter()
                    .map(|f| format!("{}:{}", f.vendor_id, f.device_id))
                    .collect(),
                functions,
                iommu_group,
                isolated,
                group_blockers,
                boot_vga: d.boot_vga == Some(true),
                reset_methods: d.reset_methods.clone(),
                reset: d.reset,
                mdev_supported: d.mdev_supported,
                physfn: d.physfn.clone(),
                ..Gpu::default()
            }
        })
        .collect()
}

/// The members of IOMMU group `n`: the kernel's group listing, plus any device whose own
/// `iommu_group` link names this group (they should agree).
pub(crate) fn group_members<'a>(
    groups: &'a BTreeMap<u32, BTreeSet<String>>,
    devices: &'a [PciDevice],
    n: u32,
) -> BTreeSet<&'a str> {
    let mut members: BTreeSet<&str> = groups
        .get(&n)
        .map(|m| m.iter().map(String::as_str).collect())
        .unwrap_or_default();
    members.extend(
        devices
            .iter()
            .filter(|x| x.iommu_group == Some(n))
            .map(|x| x.bdf.as_str()),
    );
    members
}
