//! The safety checks before a GPU goes to a VM. Each refusal carries its reason, a `help:` line,
//! and whether `--force` may override it.
//!
//! Rules (kernel Documentation/driver-api/vfio.rst): every endpoint device of an IOMMU group must
//! go to the same VM, PCI bridges excepted; the boot VGA device drives the host console; a device
//! with open handles on the host cannot be unbound cleanly.

use std::collections::BTreeSet;

use hwdetect::{Gpu, HostFacts};
use serde::Serialize;

use crate::GpuUser;

/// A GPU function that some libvirt domain holds as a `<hostdev>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attachment {
    pub bdf: String,
    pub vm: String,
    /// In the running domain.
    pub live: bool,
    /// In the persistent definition.
    pub config: bool,
}

/// Why a GPU may not be handed to a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    NotIsolated {
        gpu: String,
        group: u32,
        blockers: Vec<String>,
        /// Every blocker is a function of another NVIDIA GPU, so selecting the whole group
        /// (`group:N`) would pass.
        gpus_only: bool,
    },
    BootVga {
        gpu: String,
    },
    InUse {
        gpu: String,
        users: Vec<GpuUser>,
    },
    AttachedElsewhere {
        gpu: String,
        vm: String,
    },
    NoIommu {
        gpu: String,
    },
    /// Fewer GPUs than all of an NVSwitch host, without the switches and without Shared
    /// NVSwitch multitenancy ([`crate::nvswitch`]): the guest gets no NVLink fabric.
    PartialNvlinkFabric {
        /// The GPUs asked for.
        gpus: Vec<String>,
        /// How many GPUs the host has.
        total: usize,
        /// The host's NVSwitches.
        switches: Vec<String>,
    },
    /// An NVSwitch of a full passthrough shares its IOMMU group with devices that stay.
    NvswitchNotIsolated {
        switch: String,
        group: u32,
        blockers: Vec<String>,
    },
    NvswitchAttachedElsewhere {
        switch: String,
        vm: String,
    },
    NvswitchNoIommu {
        switch: String,
    },
}

impl Refusal {
    /// Isolation, boot VGA, host use and the NVLink fabric may be overridden: the others would fail in the kernel or libvirt anyway,
    /// or steal a device from a running VM.
    pub fn forceable(&self) -> bool {
        matches!(
            self,
            Self::NotIsolated { .. }
                | Self::BootVga { .. }
                | Self::InUse { .. }
                | Self::PartialNvlinkFabric { .. }
                | Self::NvswitchNotIsolated { .. }
        )
    }

    pub fn gpu(&self) -> &str {
        match self {
            Self::NotIsolated { gpu, .. }
            | Self::BootVga { gpu }
            | Self::InUse { gpu, .. }
            | Self::AttachedElsewhere { gpu, .. }
            | Self::NoIommu { gpu } => gpu,
            Self::PartialNvlinkFabric { gpus, .. } => gpus.first().map_or("", String::as_str),
            Self::NvswitchNotIsolated { switch, .. }
            | Self::NvswitchAttachedElsewhere { switch, .. }
            | Self::NvswitchNoIommu { switch } => switch,
        }
    }

    /// What is wrong and why it matters, in one sentence.
    pub fn reason(&self) -> String {
        match self {
            Self::NotIsolated {
                gpu,
                group,
                blockers,
                ..
            } => format!(
                "GPU {gpu} shares IOMMU group {group} with {}: VFIO hands out whole groups, so those \
                 devices would be taken from the host too (libvirt reports \"group is not viable\")",
                blockers.join(", ")
            ),
            Self::BootVga { gpu } => format!(
                "GPU {gpu} is the boot VGA device: the firmware and the host console use it, and \
                 detaching it blanks the host display"
            ),
            Self::InUse { gpu, users } => format!(
                "GPU {gpu} is in use on the host by {}",
                users
                    .iter()
                    .map(|u| format!("{} (pid {})", u.command, u.pid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Self::AttachedElsewhere { gpu, vm } => {
                format!("GPU {gpu} is already attached to VM `{vm}`")
            }
            Self::NoIommu { gpu } => format!(
                "GPU {gpu} has no IOMMU group: the IOMMU is off, so VFIO passthrough is impossible"
            ),
            Self::PartialNvlinkFabric {
                gpus,
                total,
                switches,
            } => format!(
                "{} of this host's {total} GPUs would go to the VM without the NVSwitches {}: the \
                 NVLink/NVSwitch fabric will not work in the guest, and CUDA may fail on \
                 multi-GPU jobs",
                match gpus.len() {
                    1 => format!("only GPU {}", gpus[0]),
                    n => format!("only {n} ({})", gpus.join(", ")),
                },
                switches.join(", ")
            ),
            Self::NvswitchNotIsolated {
                switch,
                group,
                blockers,
            } => format!(
                "NVSwitch {switch} shares IOMMU group {group} with {}: VFIO hands out whole \
                 groups, so those devices would be taken from the host too",
                blockers.join(", ")
            ),
            Self::NvswitchAttachedElsewhere { switch, vm } => {
                format!("NVSwitch {switch} is already attached to VM `{vm}`")
            }
            Self::NvswitchNoIommu { switch } => format!(
                "NVSwitch {switch} has no IOMMU group: the IOMMU is off, so VFIO passthrough is \
                 impossible"
            ),
        }
    }

    /// The next step, for a `help:` line; `force_flag` is the caller's override flag
    /// (`--force` for `vmctl gpu attach`, `--gpu-force` for `vmctl create`).
    pub fn help(&self, force_flag: &str) -> String {
        match self {
            Self::NotIsolated {
                group,
                gpus_only: true,
                ..
            } => format!(
                "pass the whole group (`--gpu group:{group}`) if all its GPUs may go to the VM, \
                 move a card to another slot, or use {force_flag} to try anyway"
            ),
            Self::NotIsolated { .. } => format!(
                "move the card to a slot with its own IOMMU group \
                 (`vmctl gpu status` shows the groups), or use {force_flag} to try anyway"
            ),
            Self::BootVga { .. } => format!(
                "make another GPU the primary display in the firmware setup, \
                 or use {force_flag} if the host runs headless"
            ),
            Self::InUse { .. } => {
                format!("stop those processes (see `nvidia-smi`), or use {force_flag}")
            }
            Self::AttachedElsewhere { vm, .. } => {
                format!("detach it first: `vmctl gpu detach {vm}`")
            }
            Self::NoIommu { .. } | Self::NvswitchNoIommu { .. } => {
                "enable VT-d/AMD-Vi in the firmware and run \
                 `sudo gpu-vm-bootstrap --gpu-mode passthrough`, then reboot"
                    .to_string()
            }
            Self::PartialNvlinkFabric { .. } => format!(
                "pass `--gpu all` for full passthrough (every GPU and NVSwitch to this one VM), \
                 or set up Shared NVSwitch multitenancy (NVIDIA Fabric Manager running on the \
                 host with FABRIC_MODE=1 in /usr/share/nvidia/nvswitch/fabricmanager.cfg), or use \
                 {force_flag} to pass the GPUs without NVLink"
            ),
            Self::NvswitchNotIsolated { .. } => format!(
                "move the other devices out of the group (`vmctl gpu status` shows the groups), \
                 or use {force_flag} to try anyway"
            ),
            Self::NvswitchAttachedElsewhere { vm, .. } => {
                format!("detach it first: `vmctl gpu detach {vm}`")
            }
        }
    }
}

/// Checks every selected GPU. `target_vm` is the VM the GPUs go to (attachments to it are fine).
/// A group is acceptable when its only non-bridge members are functions of selected GPUs,
/// which is what `group:N` or naming all of a group's GPUs gives.
pub fn check(
    facts: &HostFacts,
    selected: &[&Gpu],
    target_vm: Option<&str>,
    attachments: &[Attachment],
    users: &[GpuUser],
) -> Vec<Refusal> {
    let selected_functions: BTreeSet<&str> = selected
        .iter()
        .flat_map(|g| g.functions.iter().map(String::as_str))
        .collect();
    let mut refusals = Vec::new();
    for gpu in selected {
        match (gpu.iommu_group, gpu.isolated) {
            (None, _) | (_, None) => refusals.push(Refusal::NoIommu {
                gpu: gpu.bdf.clone(),
            }),
            (Some(group), Some(false)) => {
                let blockers: Vec<String> = gpu
                    .group_blockers
                    .iter()
                    .filter(|b| !selected_functions.contains(b.as_str()))
                    .cloned()
                    .collect();
                if !blockers.is_empty() {
                    let gpus_only = blockers
                        .iter()
                        .all(|b| facts.gpus.iter().any(|g| g.functions.contains(b)));
                    refusals.push(Refusal::NotIsolated {
                        gpu: gpu.bdf.clone(),
                        group,
                        blockers,
                        gpus_only,
                    });
                }
            }
            _ => {}
        }
        if gpu.boot_vga {
            refusals.push(Refusal::BootVga {
                gpu: gpu.bdf.clone(),
            });
        }
        let gpu_users: Vec<GpuUser> = users.iter().filter(|u| u.gpu == gpu.bdf).cloned().collect();
        if !gpu_users.is_empty() {
            refusals.push(Refusal::InUse {
                gpu: gpu.bdf.clone(),
                users: gpu_users,
            });
        }
        let elsewhere: BTreeSet<&str> = attachments
            .iter()
            .filter(|a| gpu.functions.contains(&a.bdf) && Some(a.vm.as_str()) != target_vm)
            .map(|a| a.vm.as_str())
            .collect();
        for vm in elsewhere {
            refusals.push(Refusal::AttachedElsewhere {
                gpu: gpu.bdf.clone(),
                vm: vm.to_string(),
            });
        }
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(bdf: &str, group: u32, blockers: &[&str], functions: &[&str]) -> Gpu {
        Gpu {
            bdf: bdf.into(),
            functions: functions.iter().map(|s| s.to_string()).collect(),
            iommu_group: Some(group),
            isolated: Some(blockers.is_empty()),
            group_blockers: blockers.iter().map(|s| s.to_string()).collect(),
            ..Gpu::default()
        }
    }

    #[test]
    fn whole_group_selection_is_accepted_but_a_lone_gpu_is_refused() {
        let a = gpu(
            "0000:01:00.0",
            1,
            &["0000:02:00.0", "0000:02:00.1"],
            &["0000:01:00.0", "0000:01:00.1"],
        );
        let b = gpu(
            "0000:02:00.0",
            1,
            &["0000:01:00.0", "0000:01:00.1"],
            &["0000:02:00.0", "0000:02:00.1"],
        );
        let facts = HostFacts {
            gpus: vec![a.clone(), b.clone()],
            ..HostFacts::default()
        };
        let alone = check(&facts, &[&a], None, &[], &[]);
        assert_eq!(
            alone,
            vec![Refusal::NotIsolated {
                gpu: "0000:01:00.0".into(),
                group: 1,
                blockers: vec!["0000:02:00.0".into(), "0000:02:00.1".into()],
                gpus_only: true,
            }]
        );
        assert!(alone[0].forceable());
        assert!(check(&facts, &[&a, &b], None, &[], &[]).is_empty());
    }

    #[test]
    fn attached_to_another_vm_is_refused_and_not_forceable() {
        let a = gpu("0000:01:00.0", 1, &[], &["0000:01:00.0", "0000:01:00.1"]);
        let att = Attachment {
            bdf: "0000:01:00.1".into(),
            vm: "vm2".into(),
            live: true,
            config: true,
        };
        let facts = HostFacts::default();
        let r = check(&facts, &[&a], Some("vm1"), std::slice::from_ref(&att), &[]);
        assert_eq!(r.len(), 1);
        assert!(!r[0].forceable());
        assert!(r[0].help("--force").contains("vmctl gpu detach vm2"));
        assert!(check(&facts, &[&a], Some("vm2"), &[att], &[]).is_empty());
    }
}
