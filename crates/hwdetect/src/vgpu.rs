//! vGPU and MIG facts of the NVIDIA GPUs: the two forms vGPUs take in sysfs, and the MIG
//! instances the driver shows in procfs. Read only; which form a GPU uses is decided from what
//! is there, never from the GPU's name.
//!
//! - Mediated devices (NVIDIA vGPU up to 16, and every non-SR-IOV GPU): each parent function
//!   has `mdev_supported_types/<type-id>/{name,description,available_instances,device_api,
//!   devices/}`, and each mdev is `/sys/bus/mdev/devices/<uuid>` with an `mdev_type` link
//!   (Documentation/driver-api/vfio-mediated-device.rst; Documentation/ABI/testing/
//!   sysfs-bus-vfio-mdev). On SR-IOV GPUs the types sit on the VFs, not the PF.
//! - NVIDIA vGPU 17 and later on SR-IOV GPUs (vendor-specific VFIO framework): no mdev; each VF
//!   has `nvidia/creatable_vgpu_types` (lines `ID : name`) and `nvidia/current_vgpu_type` (0 =
//!   none). NVIDIA Virtual GPU Software User Guide, "Creating an NVIDIA vGPU on a Linux with
//!   KVM Hypervisor that Uses a Vendor-Specific VFIO Framework"
//!   (<https://docs.nvidia.com/vgpu/latest/grid-vgpu-user-guide/index.html>); the same layout
//!   is what NVIDIA's vgpu-device-manager (`pkg/vgpu/vfio`) reads.
//! - MIG: `/proc/driver/nvidia/capabilities/gpu<minor>/mig/gi<ID>/ci<ID>/access` (MIG User
//!   Guide, "Device Nodes and Capabilities"); the minor comes from
//!   `/proc/driver/nvidia/gpus/<BDF>/information` ("Device Minor:").

use std::io;

use hostio::paths::{
    PROC_DRIVER_NVIDIA_CAPABILITIES, PROC_DRIVER_NVIDIA_GPUS, SYS_BUS_MDEV_DEVICES,
    SYS_BUS_PCI_DEVICES,
};

use crate::facts::{Gpu, Mdev, MdevType, MigInstance, NvidiaVgpu, Sriov, VgpuType};
use crate::parse;
use crate::probe::Probe;

/// Fills each GPU's mdev types, SR-IOV state, `nvidia/` vGPU files and MIG instances.
pub(crate) fn fill(probe: &Probe, gpus: &mut [Gpu], warn: &mut Vec<String>) {
    for g in gpus.iter_mut() {
        let base = format!("{SYS_BUS_PCI_DEVICES}/{}", g.bdf);
        g.mdev_types = mdev_types(probe, &base, warn);
        g.sriov = sriov(probe, &base, warn);
        g.nvidia_vgpu = nvidia_vgpu(probe, &base, warn);
        g.mig_instances = mig_instances(probe, &g.bdf, warn);
    }
}

fn read_opt(probe: &Probe, path: &str, warn: &mut Vec<String>) -> Option<String> {
    match probe.read_optional(path) {
        Ok(v) => v.map(|t| t.trim().to_string()),
        Err(e) => {
            warn.push(format!("{path}: cannot read: {e}"));
            None
        }
    }
}

fn read_u32(probe: &Probe, path: &str, warn: &mut Vec<String>) -> Option<u32> {
    let t = read_opt(probe, path, warn)?;
    match t.parse() {
        Ok(n) => Some(n),
        Err(_) => {
            warn.push(format!("{path}: malformed value {t:?} (expected a number)"));
            None
        }
    }
}

fn list_opt(probe: &Probe, path: &str, warn: &mut Vec<String>) -> Vec<String> {
    match probe.list(path) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn.push(format!("{path}: cannot list: {e}"));
            Vec::new()
        }
    }
}

fn mdev_types(probe: &Probe, base: &str, warn: &mut Vec<String>) -> Vec<MdevType> {
    let dir = format!("{base}/mdev_supported_types");
    list_opt(probe, &dir, warn)
        .into_iter()
        .map(|id| {
            let t = format!("{dir}/{id}");
            MdevType {
                name: read_opt(probe, &format!("{t}/name"), warn),
                description: read_opt(probe, &format!("{t}/description"), warn),
                available_instances: read_u32(probe, &format!("{t}/available_instances"), warn)
                    .unwrap_or(0),
                device_api: read_opt(probe, &format!("{t}/device_api"), warn),
                devices: list_opt(probe, &format!("{t}/devices"), warn),
                id,
            }
        })
        .collect()
}

fn sriov(probe: &Probe, base: &str, warn: &mut Vec<String>) -> Option<Sriov> {
    let total = read_u32(probe, &format!("{base}/sriov_totalvfs"), warn)?;
    let num = read_u32(probe, &format!("{base}/sriov_numvfs"), warn).unwrap_or(0);
    let mut links: Vec<(u32, String)> = list_opt(probe, base, warn)
        .into_iter()
        .filter_map(|n| n.strip_prefix("virtfn")?.parse::<u32>().ok())
        .filter_map(|n| {
            let path = format!("{base}/virtfn{n}");
            match probe.link_name(&path) {
                Ok(Some(t)) => parse::bdf(&t).map(|b| (n, b)),
                Ok(None) => None,
                Err(e) => {
                    warn.push(format!("{path}: cannot read link: {e}"));
                    None
                }
            }
        })
        .collect();
    links.sort();
    Some(Sriov {
        total_vfs: total,
        num_vfs: num,
        vfs: links.into_iter().map(|(_, b)| b).collect(),
    })
}

/// `ID : name` lines; a line that is not of that form is warned about and skipped.
pub fn parse_creatable(text: &str, path: &str, warn: &mut Vec<String>) -> Vec<VgpuType> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let parsed = l.split_once(':').and_then(|(id, name)| {
                let name = name.trim();
                Some(VgpuType {
                    id: id.trim().parse().ok()?,
                    name: (!name.is_empty()).then(|| name.to_string())?,
                })
            });
            if parsed.is_none() {
                warn.push(format!("{path}: line {l:?} is not `ID : name`, skipped"));
            }
            parsed
        })
        .collect()
}

fn nvidia_vgpu(probe: &Probe, base: &str, warn: &mut Vec<String>) -> Option<NvidiaVgpu> {
    let cur = format!("{base}/nvidia/current_vgpu_type");
    let current_type = read_u32(probe, &cur, warn);
    let path = format!("{base}/nvidia/creatable_vgpu_types");
    let creatable = read_opt(probe, &path, warn);
    if current_type.is_none() && creatable.is_none() {
        return None;
    }
    Some(NvidiaVgpu {
        creatable: creatable
            .map(|t| parse_creatable(&t, &path, warn))
            .unwrap_or_default(),
        current_type: current_type.unwrap_or(0),
    })
}

/// The GPU's device minor (`/dev/nvidia<minor>`), from the driver's information file.
fn minor(probe: &Probe, bdf: &str, warn: &mut Vec<String>) -> Option<u32> {
    let path = format!("{PROC_DRIVER_NVIDIA_GPUS}/{bdf}/information");
    let text = read_opt(probe, &path, warn)?;
    text.lines()
        .find_map(|l| l.strip_prefix("Device Minor:"))
        .and_then(|v| v.trim().parse().ok())
}

fn numbered(names: Vec<String>, prefix: &str) -> Vec<u32> {
    let mut v: Vec<u32> = names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .collect();
    v.sort_unstable();
    v
}

fn mig_instances(probe: &Probe, bdf: &str, warn: &mut Vec<String>) -> Vec<MigInstance> {
    if !probe.exists(PROC_DRIVER_NVIDIA_CAPABILITIES) {
        return Vec::new();
    }
    let Some(minor) = minor(probe, bdf, warn) else {
        return Vec::new();
    };
    let mig = format!("{PROC_DRIVER_NVIDIA_CAPABILITIES}/gpu{minor}/mig");
    numbered(list_opt(probe, &mig, warn), "gi")
        .into_iter()
        .map(|gi| MigInstance {
            gpu_instance: gi,
            compute_instances: numbered(list_opt(probe, &format!("{mig}/gi{gi}"), warn), "ci"),
        })
        .collect()
}

/// The mdevs that exist, with their parent and type (from the links the kernel makes).
pub(crate) fn mdevs(probe: &Probe, warn: &mut Vec<String>) -> Vec<Mdev> {
    list_opt(probe, SYS_BUS_MDEV_DEVICES, warn)
        .into_iter()
        .map(|uuid| {
            let dir = format!("{SYS_BUS_MDEV_DEVICES}/{uuid}");
            // `<parent>/<uuid>`: the parent is the directory the device link points into.
            let parent = match probe.link_target(&dir) {
                Ok(Some(t)) => t
                    .parent()
                    .and_then(|p| p.file_name())
                    .and_then(|n| parse::bdf(&n.to_string_lossy())),
                Ok(None) => None,
                Err(e) => {
                    warn.push(format!("{dir}: cannot read link: {e}"));
                    None
                }
            };
            let type_id = match probe.link_name(format!("{dir}/mdev_type")) {
                Ok(t) => t,
                Err(e) => {
                    warn.push(format!("{dir}/mdev_type: cannot read link: {e}"));
                    None
                }
            };
            Mdev {
                uuid,
                parent,
                type_id,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creatable_lines_are_id_colon_name() {
        let mut w = Vec::new();
        let t = parse_creatable(
            "1155 : NVIDIA L40S-24Q\n1156 : NVIDIA L40S-48Q\n\ngarbage\n",
            "x",
            &mut w,
        );
        assert_eq!(
            t,
            vec![
                VgpuType {
                    id: 1155,
                    name: "NVIDIA L40S-24Q".into()
                },
                VgpuType {
                    id: 1156,
                    name: "NVIDIA L40S-48Q".into()
                }
            ]
        );
        assert_eq!(w.len(), 1, "{w:?}");
    }
}
