//! The typed libvirt domain spec vmctl creates (q35, EFI/BIOS, direct kernel boot, virtio disks,
//! bridge NICs, serial console, guest agent, PCI hostdevs, vmctl metadata), its pure rendering to
//! XML ([`render`]) and the reading back of any domain's XML ([`parse`]). Values parsed from
//! text fail with [`InvalidValue`].

pub mod parse;
pub mod render;
pub mod tuning;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidValue;

/// XML namespace of vmctl's `<metadata>` element.
pub const VMCTL_NS: &str = "https://github.com/gpu-vm-bootstrap/gpu-vm-bootstrap/vmctl/1";

fn invalid(option: &str, value: &str, reason: &str) -> InvalidValue {
    InvalidValue {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// `<domain type=…>`: hardware virtualisation or TCG emulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    Kvm,
    Qemu,
}

impl FromStr for DomainType {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "kvm" => Ok(Self::Kvm),
            "qemu" => Ok(Self::Qemu),
            _ => Err(invalid("--domain-type", s, "expected kvm or qemu")),
        }
    }
}

impl fmt::Display for DomainType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        })
    }
}

/// Guest firmware. EFI uses libvirt's firmware auto-selection (`<os firmware='efi'>`, OVMF).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    Efi { secure_boot: bool },
    Bios,
}

impl FromStr for Firmware {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "efi" | "uefi" => Ok(Self::Efi { secure_boot: false }),
            "efi-secure" => Ok(Self::Efi { secure_boot: true }),
            "bios" => Ok(Self::Bios),
            _ => Err(invalid("--firmware", s, "expected efi, efi-secure or bios")),
        }
    }
}

/// `<cpu mode=…>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuMode {
    HostPassthrough,
    HostModel,
    Custom(String),
}

impl FromStr for CpuMode {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        match s {
            "host-passthrough" => Ok(Self::HostPassthrough),
            "host-model" => Ok(Self::HostModel),
            _ => match s.strip_prefix("custom:") {
                Some(model)
                    if !model.is_empty()
                        && model
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    Ok(Self::Custom(model.to_string()))
                }
                _ => Err(invalid(
                    "--cpu-mode",
                    s,
                    "expected host-passthrough, host-model or custom:MODEL (e.g. custom:Skylake-Server)",
                )),
            },
        }
    }
}

/// Direct kernel boot (virt-install's `--boot kernel=…,initrd=…,kernel_args=…`): used by images
/// without a bootloader and by ISO installers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectBoot {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskDevice {
    Disk,
    Cdrom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    Virtio,
    Sata,
    Scsi,
}

impl DiskBus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Virtio => "virtio",
            Self::Sata => "sata",
            Self::Scsi => "scsi",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub path: PathBuf,
    /// `qcow2`, `raw`, …
    pub format: String,
    pub device: DiskDevice,
    pub bus: DiskBus,
    /// `vda`, `vdb`, `sda`…
    pub target: String,
    pub readonly: bool,
    /// Per-device `<boot order='N'/>`. When any disk has one, the renderer leaves out the
    /// general `<os><boot dev='hd'/>`: libvirt refuses the two forms together (formatdomain,
    /// "BIOS bootloader").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_order: Option<u32>,
}

impl Disk {
    /// A writable virtio disk.
    pub fn virtio(path: impl Into<PathBuf>, format: &str, target: &str) -> Self {
        Self {
            path: path.into(),
            format: format.into(),
            device: DiskDevice::Disk,
            bus: DiskBus::Virtio,
            target: target.into(),
            readonly: false,
            boot_order: None,
        }
    }

    /// A read-only virtio disk: how the NoCloud seed is attached, because guest kernels without
    /// AHCI (Debian's cloud kernel) cannot see a SATA cdrom.
    pub fn seed(path: impl Into<PathBuf>, target: &str) -> Self {
        Self {
            readonly: true,
            ..Self::virtio(path, "raw", target)
        }
    }

    /// A read-only SATA cdrom (an installer ISO, or a config volume for guests that have AHCI).
    pub fn cdrom(path: impl Into<PathBuf>, target: &str) -> Self {
        Self {
            device: DiskDevice::Cdrom,
            bus: DiskBus::Sata,
            readonly: true,
            ..Self::virtio(path, "raw", target)
        }
    }

    /// The same disk with a per-device boot order (1 boots first).
    pub fn boot(self, order: u32) -> Self {
        Self {
            boot_order: Some(order),
            ..self
        }
    }
}

/// A NIC on a host bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub bridge: String,
    pub mac: String,
}

/// The serial console (a pty, optionally mirrored to a log file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serial {
    pub log_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Graphics {
    Vnc,
    Spice,
}

/// A PCI address `DDDD:BB:SS.F`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    pub domain: u16,
    pub bus: u8,
    pub slot: u8,
    pub function: u8,
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.slot, self.function
        )
    }
}

impl FromStr for PciAddress {
    type Err = InvalidValue;
    /// Accepts `0000:01:00.0` and the short `01:00.0`.
    fn from_str(s: &str) -> Result<Self, InvalidValue> {
        let bad = || invalid("PCI address", s, "expected DDDD:BB:SS.F or BB:SS.F");
        let (rest, function) = s.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<_> = rest.split(':').collect();
        let (domain, bus, slot) = match parts.as_slice() {
            [d, b, s] => (*d, *b, *s),
            [b, s] => ("0000", *b, *s),
            _ => return Err(bad()),
        };
        let addr = Self {
            domain: u16::from_str_radix(domain, 16).map_err(|_| bad())?,
            bus: u8::from_str_radix(bus, 16).map_err(|_| bad())?,
            slot: u8::from_str_radix(slot, 16).map_err(|_| bad())?,
            function: u8::from_str_radix(function, 16).map_err(|_| bad())?,
        };
        if addr.slot > 0x1f || addr.function > 7 {
            return Err(bad());
        }
        Ok(addr)
    }
}

impl Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `<hostdev mode='subsystem' type='pci' managed='yes'>`: one PCI function passed through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hostdev {
    pub host: PciAddress,
    /// Where the function appears in the guest; `None` lets libvirt choose.
    pub guest: Option<PciAddress>,
    pub multifunction: bool,
}

/// A vGPU given to a guest (formatdomain "Host device assignment"), and vmctl's record of one
/// it made (in [`Metadata::vgpus`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum VgpuHostdev {
    /// A mediated device: `<hostdev mode='subsystem' type='mdev' model='vfio-pci'>` with
    /// `<source><address uuid=…/>`.
    Mdev { uuid: String },
    /// An SR-IOV VF holding an NVIDIA vGPU (vGPU 17+): a PCI hostdev with `managed='no'`,
    /// because the VF must stay on NVIDIA's driver (its vendor-specific VFIO framework), and
    /// libvirt would otherwise rebind it to vfio-pci.
    Vf { host: PciAddress },
}

/// The hostdevs for all functions of one device (e.g. a GPU's VGA, audio, USB and UCSI
/// functions): every function sits in one guest slot behind its own pcie-root-port (index
/// `guest_bus`), keeping its function number, and function 0 carries `multifunction='on'`,
/// so the guest sees one multi-function device as on the host.
pub fn device_hostdevs(functions: &[PciAddress], guest_bus: u8) -> Vec<Hostdev> {
    let mut sorted = functions.to_vec();
    sorted.sort();
    let multi = sorted.len() > 1;
    sorted
        .into_iter()
        .map(|host| Hostdev {
            host,
            guest: Some(PciAddress {
                domain: 0,
                bus: guest_bus,
                slot: 0,
                function: host.function,
            }),
            multifunction: multi && host.function == 0,
        })
        .collect()
}

/// `<memoryBacking>`: how guest RAM is backed. One typed field per feature, so each renders
/// into the one element.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBacking {
    /// `<source type='memfd'/><access mode='shared'/>`: RAM a vhost-user backend (virtiofsd)
    /// can map; libvirt refuses a virtiofs filesystem without shared memory ("'virtiofs'
    /// requires shared memory", libvirt 9.0). libvirt kbase "virtiofs".
    pub shared_memfd: bool,
    /// `<hugepages><page size unit='KiB'/>`: back guest RAM with hugepages of this size in
    /// KiB (2048 or 1048576), from a memfd (see the renderer for why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepage_kib: Option<u64>,
}

impl MemoryBacking {
    pub fn is_empty(&self) -> bool {
        !self.shared_memfd && self.hugepage_kib.is_none()
    }
}

/// `<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>`: a host
/// directory shared with the guest, which mounts it by `tag`. No `<readonly/>`: libvirt 9.0
/// refuses it for virtiofs ("virtiofs does not yet support read-only mode"), so read-only
/// shares are mounted read-only in the guest instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filesystem {
    pub source_dir: PathBuf,
    /// `<target dir=…>`: despite the name, the mount tag the guest uses.
    pub tag: String,
}

/// vmctl's record inside the domain (`<metadata><vmctl:vm>`): what `ssh`, `list` and `delete`
/// need later, and what vmctl created (only those files are ever deleted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub os: String,
    pub release: Option<String>,
    pub user: Option<String>,
    pub ssh_key: Option<PathBuf>,
    /// Static address as `A.B.C.D/NN`.
    pub ip: Option<String>,
    pub base_image: Option<PathBuf>,
    pub base_sha256: Option<String>,
    /// RFC 3339.
    pub created: String,
    pub version: String,
    /// Disks vmctl created for this VM.
    pub disks: Vec<PathBuf>,
    /// Other files vmctl created for this VM (console log).
    pub files: Vec<PathBuf>,
    /// The VM's own directory in the storage dir, removed when empty.
    pub dir: Option<PathBuf>,
    /// Tags of virtiofs shares the guest mounts read-only (`--share DIR:TAG,ro`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub readonly_shares: Vec<String>,
    /// vGPUs vmctl made for this VM (an mdev it created, a VF whose vGPU type it set): what
    /// `gpu detach --vgpu` and `delete` remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vgpus: Vec<VgpuHostdev>,
}

/// Everything vmctl puts in a domain definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSpec {
    pub name: String,
    pub uuid: Option<String>,
    pub domain_type: DomainType,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// Machine type; vmctl uses `q35` (PCIe, needed for GPU passthrough).
    pub machine: String,
    pub firmware: Firmware,
    pub cpu: CpuMode,
    pub direct_boot: Option<DirectBoot>,
    pub disks: Vec<Disk>,
    pub nics: Vec<Nic>,
    pub serial: Option<Serial>,
    pub guest_agent: bool,
    pub hostdevs: Vec<Hostdev>,
    /// Indexes of `pcie-root-port` controllers to add (hostdev guest buses).
    pub pcie_root_ports: Vec<u8>,
    /// `<kvm><hidden state='on'/></kvm>`: only old (pre-R465) GeForce Windows drivers need it.
    pub kvm_hidden: bool,
    pub graphics: Option<Graphics>,
    pub metadata: Option<Metadata>,
    /// CPU pinning, NUMA and hugepages ([`tuning`]); empty renders nothing.
    #[serde(default, skip_serializing_if = "tuning::Tuning::is_empty")]
    pub tuning: tuning::Tuning,
    #[serde(default)]
    pub memory_backing: MemoryBacking,
    /// virtiofs shares; each needs [`MemoryBacking::shared_memfd`].
    #[serde(default)]
    pub filesystems: Vec<Filesystem>,
    /// vGPUs (mdevs, VFs), after the PCI hostdevs.
    #[serde(default)]
    pub vgpus: Vec<VgpuHostdev>,
}

impl DomainSpec {
    /// A headless q35 VM with defaults a server guest wants.
    pub fn new(name: &str, domain_type: DomainType, cpu: CpuMode, firmware: Firmware) -> Self {
        Self {
            name: name.into(),
            uuid: None,
            domain_type,
            memory_mib: 2048,
            vcpus: 2,
            machine: "q35".into(),
            firmware,
            cpu,
            direct_boot: None,
            disks: Vec::new(),
            nics: Vec::new(),
            serial: Some(Serial { log_file: None }),
            guest_agent: true,
            hostdevs: Vec::new(),
            pcie_root_ports: Vec::new(),
            kvm_hidden: false,
            graphics: None,
            metadata: None,
            tuning: tuning::Tuning::default(),
            memory_backing: MemoryBacking::default(),
            filesystems: Vec::new(),
            vgpus: Vec::new(),
        }
    }

    /// Adds a GPU (all its functions) on the next free guest root port.
    pub fn add_pci_device(&mut self, functions: &[PciAddress]) {
        // Controller indexes from 0x10 up stay clear of the ones libvirt adds on its own.
        let bus = 0x10 + self.pcie_root_ports.len() as u8;
        self.pcie_root_ports.push(bus);
        self.hostdevs.extend(device_hostdevs(functions, bus));
    }

    /// Adds a virtiofs share, and the shared memory it needs.
    pub fn add_filesystem(&mut self, fs: Filesystem) {
        self.memory_backing.shared_memfd = true;
        self.filesystems.push(fs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_address_round_trip() {
        let a: PciAddress = "0000:01:00.1".parse().unwrap();
        assert_eq!(a.to_string(), "0000:01:00.1");
        let b: PciAddress = "41:00.0".parse().unwrap();
        assert_eq!(b.to_string(), "0000:41:00.0");
        assert!("01:20.0".parse::<PciAddress>().is_err());
        assert!("01:00.8".parse::<PciAddress>().is_err());
        assert!("zz".parse::<PciAddress>().is_err());
    }

    #[test]
    fn device_hostdevs_share_a_slot_and_mark_function_zero() {
        let f: Vec<PciAddress> = ["01:00.1", "01:00.0", "01:00.3", "01:00.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let h = device_hostdevs(&f, 0x10);
        assert_eq!(h.len(), 4);
        assert!(h[0].multifunction && h[0].host.function == 0);
        assert!(h[1..].iter().all(|d| !d.multifunction));
        assert!(
            h.iter()
                .all(|d| d.guest.unwrap().bus == 0x10 && d.guest.unwrap().slot == 0)
        );
        assert!(!device_hostdevs(&f[1..2], 0x11)[0].multifunction);
    }

    #[test]
    fn cpu_modes() {
        assert_eq!("host-model".parse::<CpuMode>().unwrap(), CpuMode::HostModel);
        assert_eq!(
            "custom:Skylake-Server".parse::<CpuMode>().unwrap(),
            CpuMode::Custom("Skylake-Server".into())
        );
        assert!("custom:".parse::<CpuMode>().is_err());
        assert!("fast".parse::<CpuMode>().is_err());
    }
}
