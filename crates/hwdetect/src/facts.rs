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
    /// Firmware, Secure Boot, kernel lockdown and the boot loader.
    #[serde(default)]
    pub boot: BootInfo,
    /// The running kernel and the kernel metapackages installed.
    #[serde(default)]
    pub kernel: KernelInfo,
    /// NVIDIA drivers already installed (and by what), and what apt offers.
    #[serde(default)]
    pub nvidia_driver: NvidiaDriverInfo,
    /// Mediated devices that exist (`/sys/bus/mdev/devices`), sorted by UUID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mdevs: Vec<Mdev>,
    /// Problems met while reading (a path and what was wrong). Detection goes on after each.
    pub warnings: Vec<String>,
    /// The NVSwitches of `nvswitches`, with IDs, names, IOMMU groups and drivers.
    #[serde(default)]
    pub nvswitch_devices: Vec<NvSwitch>,
    /// NVIDIA Fabric Manager's mode and process (hosts with NVSwitches only).
    #[serde(default)]
    pub fabric_manager: FabricManagerInfo,
}

/// How the machine booted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// `/sys/firmware/efi` exists.
    Uefi,
    /// No `/sys/firmware/efi`: legacy BIOS (or CSM) boot.
    Bios,
    /// Facts from before this field existed.
    #[default]
    Unknown,
}

/// The boot loader that owns the kernel command line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootLoader {
    /// GRUB: the command line lives in `/etc/default/grub` (+ `grub.d`), `update-grub` applies it.
    Grub,
    /// systemd-boot with Boot Loader Specification entries: `/etc/kernel/cmdline`, applied by
    /// `kernel-install add`.
    SystemdBoot,
    /// kernelstub (Pop!_OS): `/etc/kernelstub/configuration`, applied by `kernelstub`.
    Kernelstub,
    /// Nothing says which loader boots this host, or the signs contradict each other.
    #[default]
    Unknown,
}

impl BootLoader {
    pub fn name(self) -> &'static str {
        match self {
            BootLoader::Grub => "GRUB",
            BootLoader::SystemdBoot => "systemd-boot",
            BootLoader::Kernelstub => "kernelstub",
            BootLoader::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootInfo {
    pub firmware: Firmware,
    /// The `SecureBoot` EFI variable's data byte is 1. `null` on BIOS hosts, or when the
    /// variable is missing or unreadable.
    pub secure_boot: Option<bool>,
    /// The active kernel lockdown mode (`none`, `integrity`, `confidentiality`); `null` when
    /// `/sys/kernel/security/lockdown` is absent (no securityfs, or a kernel without it).
    pub lockdown: Option<String>,
    pub loader: BootLoader,
    /// What the loader was recognised by (or, for `unknown`, what was found), for the plan's
    /// reasons and `detect`.
    pub loader_evidence: Vec<String>,
    /// Kernel releases with a `/boot/vmlinuz-<release>`, sorted.
    pub kernels: Vec<String>,
}

impl BootInfo {
    /// The kernel refuses modules that are not signed by a trusted key: Secure Boot is on
    /// (Ubuntu's kernels then enforce module signatures) or the kernel is locked down
    /// (kernel-lockdown(7): unsigned modules are refused in both modes).
    pub fn module_signatures_enforced(&self) -> bool {
        self.secure_boot == Some(true)
            || matches!(
                self.lockdown.as_deref(),
                Some("integrity" | "confidentiality")
            )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// `uname -r`, e.g. `6.8.0-48-generic`; empty when unknown.
    pub release: String,
    /// Installed kernel metapackages' flavours (`linux-image-<flavour>`: `generic`,
    /// `generic-hwe-24.04`, `lowlatency`, …), sorted.
    pub metapackages: Vec<String>,
}

impl KernelInfo {
    /// The flavour of the running kernel: `generic` for `6.8.0-48-generic`.
    pub fn flavour(&self) -> Option<&str> {
        // <version>-<abi>-<flavour>: the flavour follows the second dash.
        let mut it = self.release.splitn(3, '-');
        let (_, _, f) = (it.next()?, it.next()?, it.next()?);
        (!f.is_empty()).then_some(f)
    }
}

/// Where an installed NVIDIA driver came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriverSource {
    /// Ubuntu's archive (`nvidia-driver-<branch>`, `linux-modules-nvidia-*`).
    UbuntuArchive,
    /// NVIDIA's CUDA repository (`cuda-drivers`, `nvidia-open`, its own `nvidia-driver-*`).
    CudaRepo,
    /// The graphics-drivers PPA (ppa:graphics-drivers/ppa).
    GraphicsDriversPpa,
    /// NVIDIA's `.run` installer: `nvidia-uninstall`, modules dpkg does not know.
    RunInstaller,
    /// A package whose origin no apt list and no version pattern tells.
    Unknown,
}

impl DriverSource {
    pub fn describe(self) -> &'static str {
        match self {
            DriverSource::UbuntuArchive => "Ubuntu's archive",
            DriverSource::CudaRepo => "NVIDIA's CUDA repository",
            DriverSource::GraphicsDriversPpa => "the graphics-drivers PPA",
            DriverSource::RunInstaller => "NVIDIA's .run installer",
            DriverSource::Unknown => "an unknown source",
        }
    }
}

/// An installed driver package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriverPackage {
    pub name: String,
    pub version: String,
    /// The driver branch (`550`), from the name or else the version.
    pub branch: Option<u32>,
    pub source: Option<DriverSource>,
}

/// A package apt offers (from `/var/lib/apt/lists/*_Packages`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AptPackage {
    pub name: String,
    pub version: String,
    pub source: Option<DriverSource>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaDriverInfo {
    /// Installed NVIDIA driver packages (dpkg status), sorted by name.
    pub packages: Vec<DriverPackage>,
    /// `/usr/bin/nvidia-uninstall` exists: NVIDIA's `.run` installer was used.
    pub run_uninstaller: bool,
    /// `nvidia*.ko` of the running kernel that no dpkg package lists (where the `.run`
    /// installer puts them: `kernel/drivers/video/`).
    pub unowned_modules: Vec<String>,
    /// `nvidia*.ko` built by DKMS for the running kernel (`updates/dkms/`).
    pub dkms_modules: Vec<String>,
    /// `/sys/module/nvidia/version` of the loaded module.
    pub loaded_version: Option<String>,
    /// NVIDIA driver packages apt can install, with their source (only the names that matter:
    /// `nvidia-driver-*`, `nvidia-dkms-*`, `cuda-drivers*`, `nvidia-open*`, and the
    /// `linux-modules-nvidia-*` for the running kernel and for kernel flavours).
    pub available: Vec<AptPackage>,
}

impl NvidiaDriverInfo {
    /// Every source an installed driver came from, sorted, without duplicates.
    pub fn sources(&self) -> Vec<DriverSource> {
        let mut out: Vec<DriverSource> = self.packages.iter().filter_map(|p| p.source).collect();
        if self.run_uninstaller || !self.unowned_modules.is_empty() {
            out.push(DriverSource::RunInstaller);
        }
        out.sort();
        out.dedup();
        out
    }

    /// Whether apt offers a package of this exact name.
    pub fn can_install(&self, name: &str) -> bool {
        self.available.iter().any(|p| p.name == name)
    }

    /// The installed package of this name.
    pub fn installed(&self, name: &str) -> Option<&DriverPackage> {
        self.packages.iter().find(|p| p.name == name)
    }
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
    /// Mediated-device (vGPU) types this function offers (`mdev_supported_types/<type-id>/`),
    /// sorted by id. On SR-IOV GPUs with NVIDIA vGPU before 17 they sit on the VFs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mdev_types: Vec<MdevType>,
    /// A physical function's SR-IOV state (`sriov_totalvfs`, `sriov_numvfs`, `virtfnN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sriov: Option<Sriov>,
    /// NVIDIA vGPU 17 and later on a VF: its `nvidia/` directory (vendor-specific VFIO).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvidia_vgpu: Option<NvidiaVgpu>,
    /// MIG GPU instances the driver shows for this GPU, sorted
    /// (`/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<ID>`); empty without MIG.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mig_instances: Vec<MigInstance>,
}

/// One `mdev_supported_types/<type-id>/` directory (Documentation/ABI/testing/sysfs-bus-vfio-mdev:
/// `available_instances` and `device_api` are mandatory, `name` and `description` optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MdevType {
    /// The directory name: the driver's prefix and its own id, e.g. `nvidia-559`.
    pub id: String,
    /// `name`, e.g. `GRID A100-4C`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `available_instances`: how many more mdevs of this type the parent can create now.
    pub available_instances: u32,
    /// `device_api`, e.g. `vfio-pci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_api: Option<String>,
    /// UUIDs of the mdevs of this type on this parent (`devices/`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

/// SR-IOV state of a physical function (Documentation/PCI/pci-iov-howto.rst).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sriov {
    pub total_vfs: u32,
    pub num_vfs: u32,
    /// The VFs (`virtfnN` links), in N order.
    pub vfs: Vec<String>,
}

/// A vGPU type a VF can take (a line `ID : name` of `nvidia/creatable_vgpu_types`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VgpuType {
    pub id: u32,
    /// E.g. `NVIDIA L40S-24Q`.
    pub name: String,
}

/// A VF's `nvidia/` directory under NVIDIA vGPU 17 and later (vendor-specific VFIO framework).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaVgpu {
    /// `creatable_vgpu_types`: what this VF can take now (empty once it has a type, or when
    /// the GPU's remaining capacity allows none).
    pub creatable: Vec<VgpuType>,
    /// `current_vgpu_type`: 0 when the VF holds no vGPU.
    pub current_type: u32,
}

/// A MIG GPU instance and its compute instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigInstance {
    pub gpu_instance: u32,
    pub compute_instances: Vec<u32>,
}

/// A mediated device that exists (`/sys/bus/mdev/devices/<uuid>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mdev {
    pub uuid: String,
    /// The parent PCI function's BDF.
    pub parent: Option<String>,
    /// The `mdev_type` link's name, e.g. `nvidia-559`.
    pub type_id: Option<String>,
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

/// An NVIDIA NVSwitch (vendor 0x10de, class 0x0680 "other bridge"): the NVLink fabric of an HGX
/// baseboard (4 on HGX H100/H200, 6 on HGX A100; NVIDIA Fabric Manager user guide, "GPU
/// Baseboard Topologies"). Never a GPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvSwitch {
    pub bdf: String,
    pub device_id: String,
    /// Name from pci.ids (`GH100 [H100 NVSwitch]`), or a generic fallback.
    pub name: String,
    pub iommu_group: Option<u32>,
    /// Bound driver (`nvidia-nvswitch` on the host, `vfio-pci` while a VM holds it).
    pub driver: Option<String>,
    /// `true` when the group holds nothing but NVSwitches and PCI bridges (full passthrough
    /// hands all switches to one VM, so they may share a group); `null` without IOMMU groups.
    pub isolated: Option<bool>,
    /// The other devices in the group that are neither NVSwitches nor bridges, sorted.
    pub group_blockers: Vec<String>,
}

/// NVIDIA Fabric Manager on this host, read only on hosts with NVSwitches.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricManagerInfo {
    /// The config file read: the running process's `-c/--config`, else the default
    /// `/usr/share/nvidia/nvswitch/fabricmanager.cfg`; `null` when there is none.
    pub config: Option<String>,
    /// Its `FABRIC_MODE`: 0 bare metal or full passthrough, 1 Shared NVSwitch multitenancy, 2
    /// vGPU multitenancy (the config file's own description of the key).
    pub fabric_mode: Option<u32>,
    /// The pid of the running `nv-fabricmanager` (from `/proc/<pid>/comm`).
    pub pid: Option<u32>,
    /// Shared NVSwitch multitenancy is set up here: `FABRIC_MODE=1` and the process runs. GPUs
    /// then go to VMs without the switches, which stay with this fabric manager.
    pub shared_nvswitch: bool,
}
