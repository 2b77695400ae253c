//! Turns libvirt's passthrough errors into the explanation `vmctl gpu status` gives for the same
//! cause. The messages matched are libvirt's own (src/util/virpci.c, src/util/virhostdev.c,
//! src/qemu/qemu_hostdev.c); virt-manager #680 shows how opaque they are to users.

use hwdetect::{Gpu, HostFacts};
use passthrough::Refusal;

/// What a libvirt error message means for the GPUs involved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub reasons: Vec<String>,
    pub help: Vec<String>,
}

impl Explanation {
    fn from_refusals(refusals: &[Refusal]) -> Self {
        let mut help: Vec<String> = Vec::new();
        for r in refusals {
            // libvirt's errors reach `vmctl gpu attach|detach`, whose override is --force.
            let h = r.help("--force");
            if !help.contains(&h) {
                help.push(h);
            }
        }
        Self {
            reasons: refusals.iter().map(Refusal::reason).collect(),
            help,
        }
    }
}

/// The libvirt message's cause, as `gpu status` words it for `gpus`, or `None` for a message
/// that is not about passthrough.
pub fn explain(message: &str, facts: &HostFacts, gpus: &[&Gpu]) -> Option<Explanation> {
    let m = message.to_ascii_lowercase();
    if m.contains("group is not viable")
        || m.contains("iommu_group are bound to their vfio bus driver")
        || m.contains("iommu group") && m.contains("not viable")
    {
        let refusals: Vec<Refusal> = passthrough::check(facts, gpus, None, &[], &[])
            .into_iter()
            .filter(|r| matches!(r, Refusal::NotIsolated { .. }))
            .collect();
        if refusals.is_empty() {
            return Some(Explanation {
                reasons: vec![
                    "another device in the GPU's IOMMU group is still bound to a host driver: \
                     VFIO hands out whole groups"
                        .into(),
                ],
                help: vec![
                    "`vmctl gpu status` lists the group's devices; pass them all, or bind them \
                     to vfio-pci"
                        .into(),
                ],
            });
        }
        return Some(Explanation::from_refusals(&refusals));
    }
    if let Some(idx) = m.find("is in use by driver") {
        // "PCI device 0000:01:00.0 is in use by driver QEMU, domain vm2"
        let vm = message[idx..]
            .split("domain ")
            .nth(1)
            .map(|s| s.trim().trim_end_matches('.').to_string());
        let refusals: Vec<Refusal> = match vm {
            Some(vm) => gpus
                .iter()
                .map(|g| Refusal::AttachedElsewhere {
                    gpu: g.bdf.clone(),
                    vm: vm.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        if refusals.is_empty() {
            return Some(Explanation {
                reasons: vec!["the GPU is held by another VM or host driver".into()],
                help: vec!["`vmctl gpu status` shows which VM has it".into()],
            });
        }
        return Some(Explanation::from_refusals(&refusals));
    }
    if m.contains("host doesn't support passthrough")
        || m.contains("host doesn't support vfio pci passthrough")
        || m.contains("no iommu")
        || m.contains("iommu is not enabled")
    {
        // Without a group the cause is the one `gpu status` shows; with one, the facts
        // (perhaps another host's, through --host-root) disagree with libvirt's host.
        let no_group: Vec<Refusal> = gpus
            .iter()
            .filter(|g| g.iommu_group.is_none())
            .map(|g| Refusal::NoIommu { gpu: g.bdf.clone() })
            .collect();
        let mut e = Explanation::from_refusals(&no_group);
        if no_group.is_empty() {
            let any = gpus
                .first()
                .map_or("the GPU".to_string(), |g| g.bdf.clone());
            e = Explanation::from_refusals(&[Refusal::NoIommu { gpu: any.clone() }]);
            e.reasons = vec![format!(
                "libvirt finds no IOMMU support on its host, so VFIO passthrough of {any} is \
                 impossible there"
            )];
        }
        return Some(e);
    }
    if m.contains("no more available pci slots") || m.contains("no free pci") {
        return Some(Explanation {
            reasons: vec![
                "the running VM has no free hot-pluggable PCIe root port: each GPU function \
                 needs one for a live attach"
                    .into(),
            ],
            help: vec![
                "attach with --persistent (the config gets its own root port) and restart the VM"
                    .into(),
            ],
        });
    }
    if m.contains("failed to bind pci device")
        || m.contains("failed to unbind pci device")
        || m.contains("device or resource busy")
    {
        return Some(Explanation {
            reasons: vec![
                "the host driver would not let go of the GPU: a process on the host is probably \
                 using it"
                    .into(),
            ],
            help: vec!["stop those processes (see `nvidia-smi` and `vmctl gpu status`)".into()],
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(bdf: &str, group: Option<u32>, blockers: &[&str]) -> Gpu {
        Gpu {
            bdf: bdf.into(),
            functions: vec![bdf.into()],
            iommu_group: group,
            isolated: group.map(|_| blockers.is_empty()),
            group_blockers: blockers.iter().map(|s| s.to_string()).collect(),
            ..Gpu::default()
        }
    }

    #[test]
    fn group_not_viable_names_the_blockers_like_status() {
        let g = gpu("0000:04:00.0", Some(13), &["0000:02:00.0", "0000:2a:00.0"]);
        let e = explain(
            "internal error: qemu unexpectedly closed the monitor: vfio 0000:04:00.0: group 13 is \
             not viable\nPlease ensure all devices within the iommu_group are bound to their vfio \
             bus driver.",
            &HostFacts::default(),
            &[&g],
        )
        .unwrap();
        let status = passthrough::check(&HostFacts::default(), &[&g], None, &[], &[]);
        assert_eq!(e.reasons, vec![status[0].reason()]);
        assert!(e.reasons[0].contains("0000:02:00.0, 0000:2a:00.0"));
    }

    #[test]
    fn in_use_by_another_domain_names_it() {
        let g = gpu("0000:01:00.0", Some(1), &[]);
        let e = explain(
            "Requested operation is not valid: PCI device 0000:01:00.0 is in use by driver QEMU, domain vm2",
            &HostFacts::default(),
            &[&g],
        )
        .unwrap();
        assert_eq!(
            e.reasons,
            vec!["GPU 0000:01:00.0 is already attached to VM `vm2`".to_string()]
        );
        assert_eq!(
            e.help,
            vec!["detach it first: `vmctl gpu detach vm2`".to_string()]
        );
    }

    #[test]
    fn no_passthrough_support_is_the_iommu() {
        let g = gpu("0000:01:00.0", None, &[]);
        let e = explain(
            "Operation not supported: host doesn't support passthrough of host PCI devices",
            &HostFacts::default(),
            &[&g],
        )
        .unwrap();
        assert!(e.reasons[0].contains("the IOMMU is off"), "{e:?}");
        let with_group = gpu("0000:01:00.0", Some(3), &[]);
        let e = explain(
            "unsupported configuration: host doesn't support passthrough of host PCI devices",
            &HostFacts::default(),
            &[&with_group],
        )
        .unwrap();
        assert!(
            e.reasons[0].starts_with("libvirt finds no IOMMU support"),
            "{e:?}"
        );
        assert!(e.help[0].contains("VT-d"), "{e:?}");
        assert!(explain("Domain not found", &HostFacts::default(), &[&g]).is_none());
        let slots = explain(
            "internal error: No more available PCI slots",
            &HostFacts::default(),
            &[&g],
        )
        .unwrap();
        assert!(slots.help[0].contains("--persistent"), "{slots:?}");
    }
}
