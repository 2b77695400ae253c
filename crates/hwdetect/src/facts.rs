//! The typed facts `hwdetect` reports. Field names are a JSON contract (`detect --json`):
//! add fields freely, never rename.

use serde::{Deserialize, Serialize};

/// Everything detection learned about a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub os: OsInfo,
    pub cpu: CpuInfo,
    pub kvm: KvmInfo,
    pub iommu: IommuInfo,
    /// NVIDIA GPUs (class 0x0300 or 0x0302), sorted by BDF.
    pub gpus: Vec<Gpu>,
    /// NVIDIA NVSwitch bridges (class 0x0680), sorted by BDF. Never counted as GPUs.
    pub nvswitches: Vec<String>,
    pub nics: Vec<Nic>,
    pub default_route: Option<DefaultRoute>,
    /// Whether the `nvidia` kernel module is loaded (`/sys/module/nvidia` exists).
    pub nvidia_module_loaded: bool,
    /// The whole kernel command line, split on whitespace.
    pub kernel_cmdline: Vec<String>,
    /// Every PCI function, sorted by BDF.
    pub pci_devices: Vec<PciDevice>,
    /// Problems met while reading (a path and what was wrong). Detection goes on after each.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsInfo {
    /// `ID` from os-release, e.g. `ubuntu`; empty when unknown.
    pub id: String,
    /// `VERSION_ID`, e.g. `24.04`; empty when unknown.
    pub version_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_codename: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretty_name: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuVendor {
    Intel,
    Amd,
    #[default]
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Virtualization {
    /// Intel VT-x.
    Vmx,
    /// AMD-V.
    Svm,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub vendor: CpuVendor,
    /// `null` when neither `vmx` nor `svm` is among the CPU flags (disabled in firmware, or a VM).
    pub virtualization: Option<Virtualization>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvmInfo {
    /// `/dev/kvm` exists.
    pub available: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IommuInfo {
    /// IOMMU groups exist under `/sys/kernel/iommu_groups`.
    pub enabled: bool,
    pub group_count: usize,
    /// The IOMMU-related kernel cmdline args, in cmdline order
    /// (`intel_iommu=`, `amd_iommu=`, `iommu=`, `iommu.*`, `vfio-pci.*`, `vfio_iommu_type1.*`, …).
    pub cmdline: Vec<String>,
}

/// One PCI function as sysfs shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Full BDF, e.g. `0000:01:00.0`.
    pub bdf: String,
    /// Lowercase hex without `0x`, e.g. `10de`.
    pub vendor_id: String,
    pub device_id: String,
    /// The class code's upper 16 bits as 4 lowercase hex digits, e.g. `0300`.
    pub class: String,
    /// The full 24-bit class as 6 hex digits, e.g. `030000`.
    pub class_full: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_vendor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem_device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Bound driver (the `driver` symlink's name), `null` when unbound.
    pub driver: Option<String>,
    /// `driver_override` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_override: Option<String>,
    pub iommu_group: Option<u32>,
    /// `boot_vga` exists only for VGA-class devices; `null` elsewhere.
    pub boot_vga: Option<bool>,
    /// Methods from `reset_method` (newer kernels); empty when absent.
    pub reset_methods: Vec<String>,
    /// A `reset` attribute exists (a function-level reset is available).
    pub reset: bool,
    /// `mdev_supported_types` exists (mediated devices / vGPU).
    pub mdev_supported: bool,
    /// For an SR-IOV virtual function: the BDF of its physical function (the `physfn` link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physfn: Option<String>,
}

/// An NVIDIA GPU: an NVIDIA (0x10de) function of class 0x0300 (VGA) or 0x0302 (3D controller).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub bdf: String,
    pub vendor_id: String,
    pub device_id: String,
    /// `0300` or `0302`.
    pub class: String,
    /// Name from pci.ids (e.g. `GA102 [GeForce RTX 3090]`), or a generic fallback.
    pub name: String,
    /// The chip prefix of the name (`GA102`, `TU104`, `GH100`), used to pick a driver flavour.
    pub chip: Option<String>,
    pub driver: Option<String>,
    /// All functions on the same bus:device, including the GPU itself, sorted.
    pub functions: Vec<String>,
    /// Bound driver of each function, in the order of `functions`.
    pub function_drivers: Vec<Option<String>>,
    /// Vendor:device ID of each function (`10de:2204`), in the order of `functions`.
    pub function_ids: Vec<String>,
    pub iommu_group: Option<u32>,
    /// `true` when the group holds only this GPU's functions and PCI bridges; `null` without IOMMU groups.
    pub isolated: Option<bool>,
    /// The other devices in the group, sorted BDFs.
    pub group_blockers: Vec<String>,
    pub boot_vga: bool,
    pub reset_methods: Vec<String>,
    pub reset: bool,
    pub mdev_supported: bool,
    /// For an SR-IOV virtual function (vGPU on Ampere and newer): its physical function. A VF
    /// is its own single function; a physical function's `functions` never list its VFs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physfn: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub mac: Option<String>,
    /// `operstate`: `up`, `down`, `unknown`, …
    pub state: String,
    /// IPv4/IPv6 addresses with prefix length, e.g. `192.0.2.10/24`.
    pub addresses: Vec<String>,
    pub default_route: bool,
    /// True for a physical device (has `device` link), false for virtual ones (lo, bridges, veth…).
    pub physical: bool,
    /// True when this interface is itself a bridge.
    pub is_bridge: bool,
    /// The bridge this interface is enslaved to, if any.
    pub bridge: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    pub interface: String,
    pub gateway: String,
}
