//! Reads any domain's XML (`virsh dumpxml`) into [`DomainFacts`]: what `list`, `info`, `ssh` and
//! `delete` need, including vmctl's own `<metadata>` record when present.

use std::path::PathBuf;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use serde::Serialize;

use super::tuning::{MemNode, NumaCell, Tuning, VcpuPin};
use super::{Metadata, PciAddress, VMCTL_NS, VgpuHostdev};
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DiskFacts {
    pub device: String,
    pub path: Option<PathBuf>,
    pub format: Option<String>,
    pub target: String,
    pub bus: Option<String>,
    pub readonly: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NicFacts {
    pub mac: Option<String>,
    /// `bridge`, `network`, `direct`…
    pub kind: String,
    /// The bridge or network name.
    pub source: Option<String>,
}

/// A `<filesystem>` device (virtiofs, 9p…).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesystemFacts {
    /// `<driver type=…>`: `virtiofs`, `path` (9p)…; `None` when absent.
    pub driver: Option<String>,
    pub source_dir: Option<PathBuf>,
    /// `<target dir=…>`: the mount tag.
    pub tag: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DomainFacts {
    pub name: String,
    pub uuid: Option<String>,
    pub domain_type: String,
    pub memory_kib: u64,
    pub vcpus: u32,
    pub machine: Option<String>,
    /// `<cpu mode>` as vmctl's `--cpu-mode` says it: `host-passthrough`, `host-model`,
    /// `custom:MODEL`.
    pub cpu_mode: Option<String>,
    /// `efi` or `bios`.
    pub firmware: String,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
    pub disks: Vec<DiskFacts>,
    pub nics: Vec<NicFacts>,
    pub hostdevs: Vec<PciAddress>,
    /// UUIDs of the mediated devices (`<hostdev type='mdev'>`), in document order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mdevs: Vec<String>,
    pub console_log: Option<PathBuf>,
    pub metadata: Option<Metadata>,
    /// Pinning, NUMA and hugepages, as far as vmctl writes them.
    #[serde(skip_serializing_if = "Tuning::is_empty")]
    pub tuning: Tuning,
    pub filesystems: Vec<FilesystemFacts>,
    /// `<memoryBacking><access mode='shared'/>`: what virtiofs needs.
    pub shared_memory: bool,
    /// `<memoryBacking><hugepages><page size>`, in KiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hugepage_kib: Option<u64>,
}

fn attr(e: &BytesStart, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name.as_bytes())
        .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
}

fn hex_attr(e: &BytesStart, name: &str) -> Option<u32> {
    let v = attr(e, name)?;
    u32::from_str_radix(v.trim_start_matches("0x"), 16).ok()
}

/// Parses domain XML.
pub fn parse_domain(xml: &str) -> Result<DomainFacts> {
    parse_inner(xml).map_err(|source| Error::ParseDomainXml {
        domain: String::new(),
        source,
    })
}

fn parse_inner(xml: &str) -> Result<DomainFacts, quick_xml::Error> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().trim_text(true);
    let mut f = DomainFacts {
        firmware: "bios".into(),
        ..Default::default()
    };
    let mut stack: Vec<String> = Vec::new();
    let mut text = String::new();
    let mut md_prefix: Option<String> = None;
    let mut md = Metadata::default();
    let mut mem_unit = String::from("KiB");
    let mut in_hostdev_pci = false;
    let mut in_hostdev_mdev = false;

    loop {
        let ev = reader.read_event()?;
        let (start, is_empty) = match &ev {
            Event::Start(e) => (Some(e.clone()), false),
            Event::Empty(e) => (Some(e.clone()), true),
            _ => (None, false),
        };
        if let Some(e) = start {
            let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
            let parent = stack.last().map(String::as_str).unwrap_or("");
            let depth = stack.len();
            text.clear();
            match (parent, name.as_str()) {
                ("", "domain") => f.domain_type = attr(&e, "type").unwrap_or_default(),
                ("domain", "memory") => mem_unit = attr(&e, "unit").unwrap_or_else(|| "KiB".into()),
                ("domain", "os") if attr(&e, "firmware").as_deref() == Some("efi") => {
                    f.firmware = "efi".into();
                }
                ("os", "type") => f.machine = attr(&e, "machine"),
                ("domain", "cpu") => f.cpu_mode = attr(&e, "mode"),
                ("os", "loader") if attr(&e, "type").as_deref() == Some("pflash") => {
                    f.firmware = "efi".into();
                }
                ("devices", "disk") => f.disks.push(DiskFacts {
                    device: attr(&e, "device").unwrap_or_else(|| "disk".into()),
                    ..Default::default()
                }),
                ("disk", "driver") => {
                    if let Some(d) = f.disks.last_mut() {
                        d.format = attr(&e, "type");
                    }
                }
                ("disk", "source") if depth == 3 => {
                    if let Some(d) = f.disks.last_mut() {
                        d.path = attr(&e, "file")
                            .or_else(|| attr(&e, "dev"))
                            .map(PathBuf::from);
                    }
                }
                ("disk", "target") => {
                    if let Some(d) = f.disks.last_mut() {
                        d.target = attr(&e, "dev").unwrap_or_default();
                        d.bus = attr(&e, "bus");
                    }
                }
                ("disk", "readonly") => {
                    if let Some(d) = f.disks.last_mut() {
                        d.readonly = true;
                    }
                }
                ("devices", "interface") => f.nics.push(NicFacts {
                    kind: attr(&e, "type").unwrap_or_default(),
                    ..Default::default()
                }),
                ("interface", "mac") => {
                    if let Some(n) = f.nics.last_mut() {
                        n.mac = attr(&e, "address");
                    }
                }
                ("interface", "source") => {
                    if let Some(n) = f.nics.last_mut() {
                        n.source = attr(&e, "bridge")
                            .or_else(|| attr(&e, "network"))
                            .or_else(|| attr(&e, "dev"));
                    }
                }
                ("devices", "hostdev") => {
                    in_hostdev_pci = attr(&e, "type").as_deref() == Some("pci");
                    in_hostdev_mdev = attr(&e, "type").as_deref() == Some("mdev");
                }
                ("source", "address")
                    if in_hostdev_mdev && stack.iter().any(|s| s == "hostdev") =>
                {
                    if let Some(uuid) = attr(&e, "uuid") {
                        f.mdevs.push(uuid);
                    }
                }
                ("source", "address") if in_hostdev_pci && stack.iter().any(|s| s == "hostdev") => {
                    f.hostdevs.push(PciAddress {
                        domain: hex_attr(&e, "domain").unwrap_or(0) as u16,
                        bus: hex_attr(&e, "bus").unwrap_or(0) as u8,
                        slot: hex_attr(&e, "slot").unwrap_or(0) as u8,
                        function: hex_attr(&e, "function").unwrap_or(0) as u8,
                    });
                }
                ("cputune", "vcpupin") => {
                    if let (Some(vcpu), Some(cpuset)) = (
                        attr(&e, "vcpu").and_then(|v| v.parse().ok()),
                        attr(&e, "cpuset"),
                    ) {
                        f.tuning.vcpupins.push(VcpuPin { vcpu, cpuset });
                    }
                }
                ("cputune", "emulatorpin") => f.tuning.emulatorpin = attr(&e, "cpuset"),
                ("numatune", "memory") => f.tuning.memory_nodeset = attr(&e, "nodeset"),
                ("numatune", "memnode") => {
                    if let (Some(cellid), Some(nodeset)) = (
                        attr(&e, "cellid").and_then(|v| v.parse().ok()),
                        attr(&e, "nodeset"),
                    ) {
                        f.tuning.memnodes.push(MemNode { cellid, nodeset });
                    }
                }
                ("numa", "cell") if stack.iter().any(|s| s == "cpu") => {
                    let memory: u64 = attr(&e, "memory").and_then(|v| v.parse().ok()).unwrap_or(0);
                    f.tuning.numa_cells.push(NumaCell {
                        id: attr(&e, "id").and_then(|v| v.parse().ok()).unwrap_or(0),
                        cpus: attr(&e, "cpus").unwrap_or_default(),
                        memory_mib: to_kib(memory, attr(&e, "unit").as_deref().unwrap_or("KiB"))
                            / 1024,
                    });
                }
                ("hugepages", "page") if stack.iter().any(|s| s == "memoryBacking") => {
                    let size: u64 = attr(&e, "size").and_then(|v| v.parse().ok()).unwrap_or(0);
                    f.hugepage_kib =
                        Some(to_kib(size, attr(&e, "unit").as_deref().unwrap_or("KiB")));
                }
                ("devices", "filesystem") => f.filesystems.push(FilesystemFacts::default()),
                ("filesystem", "driver") => {
                    if let Some(x) = f.filesystems.last_mut() {
                        x.driver = attr(&e, "type");
                    }
                }
                ("filesystem", "source") => {
                    if let Some(x) = f.filesystems.last_mut() {
                        x.source_dir = attr(&e, "dir").map(PathBuf::from);
                    }
                }
                ("filesystem", "target") => {
                    if let Some(x) = f.filesystems.last_mut() {
                        x.tag = attr(&e, "dir").unwrap_or_default();
                    }
                }
                ("memoryBacking", "access") => {
                    f.shared_memory = attr(&e, "mode").as_deref() == Some("shared");
                }
                ("serial", "log") if f.console_log.is_none() => {
                    f.console_log = attr(&e, "file").map(PathBuf::from);
                }
                ("metadata", _) => {
                    if let Some((prefix, local)) = name.split_once(':') {
                        let xmlns = format!("xmlns:{prefix}");
                        if local == "vm" && attr(&e, &xmlns).as_deref() == Some(VMCTL_NS) {
                            md_prefix = Some(prefix.to_string());
                        }
                    }
                }
                _ => {}
            }
            if !is_empty {
                stack.push(name);
            }
            continue;
        }
        match ev {
            Event::Text(t) => text.push_str(&t.decode().unwrap_or_default()),
            Event::GeneralRef(r) => {
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    text.push(c);
                } else {
                    let name = r.decode().unwrap_or_default();
                    text.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        _ => "",
                    });
                }
            }
            Event::CData(t) => text.push_str(&String::from_utf8_lossy(&t.into_inner())),
            Event::End(_) => {
                let name = stack.pop().unwrap_or_default();
                let parent = stack.last().map(String::as_str).unwrap_or("");
                let value = std::mem::take(&mut text);
                match (parent, name.as_str()) {
                    ("domain", "name") => f.name = value,
                    ("domain", "uuid") => f.uuid = Some(value),
                    ("domain", "memory") => {
                        let n: u64 = value.trim().parse().unwrap_or(0);
                        f.memory_kib = to_kib(n, &mem_unit);
                    }
                    ("domain", "vcpu") => f.vcpus = value.trim().parse().unwrap_or(0),
                    ("cpu", "model") if f.cpu_mode.as_deref() == Some("custom") => {
                        f.cpu_mode = Some(format!("custom:{}", value.trim()))
                    }
                    ("os", "kernel") => f.kernel = Some(PathBuf::from(value)),
                    ("os", "initrd") => f.initrd = Some(PathBuf::from(value)),
                    ("os", "cmdline") => f.cmdline = Some(value),
                    ("devices", "hostdev") => {
                        in_hostdev_pci = false;
                        in_hostdev_mdev = false;
                    }
                    (p, child) => {
                        if let Some(prefix) = &md_prefix
                            && p == format!("{prefix}:vm")
                        {
                            let local = child.strip_prefix(&format!("{prefix}:")).unwrap_or("");
                            set_metadata(&mut md, local, value);
                        }
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if md_prefix.is_some() {
        f.metadata = Some(md);
    }
    Ok(f)
}

/// A size in one of libvirt's units (formatdomain "Memory Allocation") in KiB.
fn to_kib(n: u64, unit: &str) -> u64 {
    match unit {
        "b" | "bytes" => n / 1024,
        "M" | "MiB" => n * 1024,
        "G" | "GiB" => n * 1024 * 1024,
        "T" | "TiB" => n * 1024 * 1024 * 1024,
        _ => n,
    }
}

fn set_metadata(md: &mut Metadata, key: &str, value: String) {
    match key {
        "os" => md.os = value,
        "release" => md.release = Some(value),
        "user" => md.user = Some(value),
        "ssh-key" => md.ssh_key = Some(value.into()),
        "ip" => md.ip = Some(value),
        "base-image" => md.base_image = Some(value.into()),
        "base-sha256" => md.base_sha256 = Some(value),
        "created" => md.created = value,
        "version" => md.version = value,
        "disk" => md.disks.push(value.into()),
        "file" => md.files.push(value.into()),
        "dir" => md.dir = Some(value.into()),
        "share-ro" => md.readonly_shares.push(value),
        "mdev" => md.vgpus.push(VgpuHostdev::Mdev { uuid: value }),
        "vgpu-vf" => {
            if let Ok(host) = value.trim().parse() {
                md.vgpus.push(VgpuHostdev::Vf { host });
            }
        }
        _ => {}
    }
}
