//! `hwdetect`: read-only host facts. It reads sysfs/procfs/etc through a [`hostio::HostRoot`],
//! so a fixture tree (or a capture) is detected exactly like the real host. It never writes.
//!
//! Reads, all relative to the host root: `/sys/bus/pci/devices/*` (symlinks into
//! `/sys/devices`), their `iommu_group` and `driver` links, `/sys/kernel/iommu_groups/*/devices`,
//! `/sys/class/net/*`, `/proc/{cpuinfo,cmdline}`, `/proc/net/{route,fib_trie,if_inet6}`,
//! `/etc/os-release`, `/dev/kvm`, `/sys/module/nvidia`; for the boot: `/sys/firmware/efi` (and
//! the `SecureBoot`/`LoaderInfo` variables), `/sys/kernel/security/lockdown`, the boot loaders'
//! files, `/boot/vmlinuz-*`, `/proc/sys/kernel/osrelease`; for NVIDIA drivers already there:
//! dpkg's status and file lists, apt's package lists, `/usr/bin/nvidia-uninstall`,
//! `/lib/modules/<release>/`; for vGPU and MIG:
//! `mdev_supported_types/`, `sriov_*`, `virtfnN`, a VF's `nvidia/`, `/sys/bus/mdev/devices`,
//! `/proc/driver/nvidia/{gpus,capabilities}`; on hosts with NVSwitches, Fabric Manager's
//! config (`/usr/share/nvidia/nvswitch/fabricmanager.cfg`) and its
//! `/proc/<pid>/{comm,cmdline}`. Names come from the `pci-ids` crate, then the system pci.ids on
//! the real filesystem.

#![forbid(unsafe_code)]

pub mod boot;
mod capture;
pub mod driver;
mod facts;
mod names;
mod net;
pub mod numa;
pub mod nvidia_arch;
pub mod nvswitch;
pub mod parse;
mod pci;
mod probe;
pub mod vgpu;

pub use facts::*;

use std::path::{Path, PathBuf};

use hostio::HostRoot;
use hostio::paths::{
    DEV_KVM, ETC_OS_RELEASE, PROC_CMDLINE, PROC_CPUINFO, PROC_KERNEL_OSRELEASE, SYS_MODULE_NVIDIA,
    SYSTEM_PCI_IDS, USR_LIB_OS_RELEASE,
};

use names::Names;
use probe::Probe;

/// Errors of the few operations that can fail as a whole. Detection itself never fails:
/// unreadable files become warnings in [`HostFacts::warnings`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing capture archive {path}")]
    WriteCapture {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("reading {path} under the host root for the capture")]
    ReadForCapture {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Reads every fact from the host (or tree) at `root`. Never panics; problems become warnings.
pub fn detect(root: &HostRoot) -> HostFacts {
    detect_with(&Probe::new(root), system_pci_ids())
}

fn system_pci_ids() -> Vec<PathBuf> {
    SYSTEM_PCI_IDS.iter().map(PathBuf::from).collect()
}

fn detect_with(probe: &Probe, pci_ids: Vec<PathBuf>) -> HostFacts {
    let mut warn = Vec::new();
    let mut names = Names::new(pci_ids);
    let mut facts = HostFacts {
        os: os(probe, &mut warn),
        cpu: cpu(probe, &mut warn),
        kvm: KvmInfo {
            available: probe.exists(DEV_KVM),
        },
        nvidia_module_loaded: probe.exists(SYS_MODULE_NVIDIA),
        ..HostFacts::default()
    };

    match probe.read(PROC_CMDLINE) {
        Ok(t) => facts.kernel_cmdline = parse::cmdline(&t),
        Err(e) => warn.push(format!("{PROC_CMDLINE}: cannot read: {e}")),
    }

    facts.pci_devices = pci::devices(probe, &mut names, &mut warn);
    let groups = pci::iommu_groups(probe, &mut warn);
    facts.iommu = IommuInfo {
        enabled: groups.as_ref().is_some_and(|g| !g.is_empty()),
        group_count: groups.as_ref().map_or(0, |g| g.len()),
        cmdline: facts
            .kernel_cmdline
            .iter()
            .filter(|a| parse::is_iommu_arg(a))
            .cloned()
            .collect(),
    };
    // An existing but empty groups directory is the kernel's way of saying "no IOMMU":
    // isolation is then as unknown as without the directory.
    let groups = groups.filter(|g| !g.is_empty());
    facts.gpus = pci::gpus(&facts.pci_devices, groups.as_ref());
    vgpu::fill(probe, &mut facts.gpus, &mut warn);
    facts.mdevs = vgpu::mdevs(probe, &mut warn);
    facts.nvswitches = facts
        .pci_devices
        .iter()
        .filter(|d| pci::is_nvswitch(d))
        .map(|d| d.bdf.clone())
        .collect();
    facts.nvswitch_devices = nvswitch::switches(&facts.pci_devices, groups.as_ref());
    if !facts.nvswitch_devices.is_empty() {
        facts.fabric_manager = nvswitch::fabric_manager(probe, &mut warn);
    }

    let (nics, default_route) = net::nics(probe, &mut warn);
    facts.nics = nics;
    facts.default_route = default_route;

    facts.boot = boot::boot(probe, &mut warn);
    match probe.read_optional(PROC_KERNEL_OSRELEASE) {
        Ok(r) => facts.kernel.release = r.map(|r| r.trim().to_string()).unwrap_or_default(),
        Err(e) => warn.push(format!("{PROC_KERNEL_OSRELEASE}: cannot read: {e}")),
    }
    facts.nvidia_driver = driver::detect(probe, &mut facts.kernel, &mut warn);
    facts.warnings = warn;
    facts
}

fn os(probe: &Probe, warn: &mut Vec<String>) -> OsInfo {
    // os-release(5): read /etc/os-release, and /usr/lib/os-release only if it does not exist.
    let (path, read) = match probe.read(ETC_OS_RELEASE) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match probe.read(USR_LIB_OS_RELEASE) {
                Ok(t) => (USR_LIB_OS_RELEASE, Ok(t)),
                Err(_) => (ETC_OS_RELEASE, Err(e)),
            }
        }
        other => (ETC_OS_RELEASE, other),
    };
    match read {
        Ok(t) => {
            let mut m = parse::os_release(&t);
            if !m.contains_key("ID") {
                warn.push(format!("{path}: no ID= line"));
            }
            OsInfo {
                id: m.remove("ID").unwrap_or_default().to_ascii_lowercase(),
                version_id: m.remove("VERSION_ID").unwrap_or_default(),
                version_codename: m.remove("VERSION_CODENAME"),
                pretty_name: m.remove("PRETTY_NAME"),
            }
        }
        Err(e) => {
            warn.push(format!("{ETC_OS_RELEASE}: cannot read: {e}"));
            OsInfo::default()
        }
    }
}

fn cpu(probe: &Probe, warn: &mut Vec<String>) -> CpuInfo {
    match probe.read(PROC_CPUINFO) {
        Ok(t) => {
            let c = parse::cpuinfo(&t);
            match &c.vendor_raw {
                None => warn.push(format!("{PROC_CPUINFO}: no vendor_id line")),
                Some(v) if c.vendor == CpuVendor::Unknown => {
                    warn.push(format!("{PROC_CPUINFO}: unknown CPU vendor {v:?}"));
                }
                Some(_) => {}
            }
            if !c.has_flags {
                warn.push(format!("{PROC_CPUINFO}: no flags line"));
            }
            CpuInfo {
                vendor: c.vendor,
                virtualization: c.virtualization,
                model_name: c.model_name,
            }
        }
        Err(e) => {
            warn.push(format!("{PROC_CPUINFO}: cannot read: {e}"));
            CpuInfo::default()
        }
    }
}

/// Writes exactly the subset of the host tree that [`detect`] reads to a `.tar.gz` at `out`,
/// keeping symlinks as symlinks. Returns the number of entries written.
pub fn capture(root: &HostRoot, out: &Path) -> Result<usize, Error> {
    let probe = Probe::recording(root);
    let _ = detect_with(&probe, system_pci_ids());
    capture::write(root, probe.into_log(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine running the tests is a real host: detection must not fail on it, and its
    /// capture must give back exactly the facts the capturing pass saw.
    #[test]
    fn real_host_detects_and_capture_round_trips() {
        let real = HostRoot::system();
        let probe = Probe::recording(&real);
        let seen = detect_with(&probe, system_pci_ids());
        assert!(!seen.os.id.is_empty(), "{:#?}", seen.warnings);

        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("real.tar.gz");
        capture::write(&real, probe.into_log(), &archive).unwrap();
        let x = dir.path().join("x");
        let f = std::fs::File::open(&archive).unwrap();
        tar::Archive::new(flate2::read::GzDecoder::new(f))
            .unpack(&x)
            .unwrap();
        let again = detect_with(&Probe::new(&HostRoot::new(&x)), system_pci_ids());
        assert_eq!(seen, again);
    }

    /// IDs newer than the `pci-ids` crate are named from the system pci.ids.
    #[test]
    fn unknown_id_falls_back_to_system_pci_ids() {
        let host = fixture_builder::build_from_str(
            r#"
            [[device]]
            bdf = "01:00.0"
            class = "0302"
            id = "10de:fffe"
            group = 1
            "#,
        )
        .unwrap();
        let ids = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            ids.path(),
            "10de  NVIDIA Corporation\n\tfffe  GB299 [Future GPU]\n",
        )
        .unwrap();
        let root = HostRoot::new(host.path());
        let facts = detect_with(&Probe::new(&root), vec![ids.path().to_path_buf()]);
        assert_eq!(facts.gpus[0].name, "GB299 [Future GPU]");
        assert_eq!(facts.gpus[0].chip.as_deref(), Some("GB299"));
        let facts = detect_with(&Probe::new(&root), vec![]);
        assert_eq!(facts.gpus[0].name, "NVIDIA device 10de:fffe");
        assert_eq!(facts.gpus[0].chip, None);
    }
}
