//! GPUs on NVSwitch hosts (HGX): which NVSwitches go with a selection, and the checks of that.
//!
//! NVIDIA Fabric Manager user guide (docs.nvidia.com/datacenter/tesla/fabric-manager-user-guide):
//! - "Full Passthrough Virtualization Model": GPUs *and* NVSwitches are passed to the guest; an
//!   8-GPU VM of an HGX H100/H200 baseboard gets its four NVSwitches, and "guest VMs with more
//!   than one GPU need to run the core NVSwitch software stack", the driver and Fabric Manager.
//!   Smaller VMs need the hypervisor to block NVLinks per partition, which vmctl does not do, so
//!   a subset of the GPUs without the switches has no NVLink fabric in the guest.
//! - "Shared NVSwitch Multitenancy Mode": only GPUs are passed; the switches stay with the
//!   trusted side, whose Fabric Manager runs with `FABRIC_MODE=1` and activates the partitions.

use hwdetect::{Gpu, HostFacts, NvSwitch};

use crate::{Attachment, Refusal};

/// What a selection of GPUs means for the host's NVLink fabric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fabric<'a> {
    /// The host has no NVSwitch.
    NoSwitches,
    /// Every GPU goes to the VM, so every NVSwitch goes with them (full passthrough).
    Full(Vec<&'a NvSwitch>),
    /// Shared NVSwitch multitenancy is set up on the host: GPUs only, the switches stay with the
    /// host's Fabric Manager.
    Shared,
    /// Fewer GPUs than all, no multitenancy: the guest gets no NVLink fabric.
    Partial,
}

impl Fabric<'_> {
    /// The switches the VM gets.
    pub fn switches(&self) -> Vec<&NvSwitch> {
        match self {
            Fabric::Full(s) => s.clone(),
            _ => Vec::new(),
        }
    }
}

/// The physical GPUs (SR-IOV virtual functions are not GPUs of the baseboard).
fn physical(facts: &HostFacts) -> impl Iterator<Item = &Gpu> {
    facts.gpus.iter().filter(|g| g.physfn.is_none())
}

/// Decides the fabric for `selected` (pure).
pub fn fabric<'a>(facts: &'a HostFacts, selected: &[&Gpu]) -> Fabric<'a> {
    if facts.nvswitch_devices.is_empty() || selected.is_empty() {
        return Fabric::NoSwitches;
    }
    if facts.fabric_manager.shared_nvswitch {
        return Fabric::Shared;
    }
    let all = physical(facts).all(|g| selected.iter().any(|s| s.bdf == g.bdf));
    if all {
        Fabric::Full(facts.nvswitch_devices.iter().collect())
    } else {
        Fabric::Partial
    }
}

/// The fabric of `selected` and what stands against it: the partial-fabric refusal, or for a
/// full passthrough each switch's isolation and other VMs' claims (as [`crate::check`] does for
/// GPUs). Isolation of a switch is judged against the GPUs and switches passed together.
pub fn check_fabric<'a>(
    facts: &'a HostFacts,
    selected: &[&Gpu],
    target_vm: Option<&str>,
    attachments: &[Attachment],
) -> (Fabric<'a>, Vec<Refusal>) {
    let f = fabric(facts, selected);
    let mut refusals = Vec::new();
    match &f {
        Fabric::Partial => refusals.push(Refusal::PartialNvlinkFabric {
            gpus: selected.iter().map(|g| g.bdf.clone()).collect(),
            total: physical(facts).count(),
            switches: facts.nvswitches.clone(),
        }),
        Fabric::Full(switches) => {
            let passed = |b: &String| selected.iter().any(|g| g.functions.contains(b));
            for s in switches {
                match (s.iommu_group, s.isolated) {
                    (None, _) | (_, None) => refusals.push(Refusal::NvswitchNoIommu {
                        switch: s.bdf.clone(),
                    }),
                    (Some(group), Some(false)) => {
                        let blockers: Vec<String> = s
                            .group_blockers
                            .iter()
                            .filter(|b| !passed(b))
                            .cloned()
                            .collect();
                        if !blockers.is_empty() {
                            refusals.push(Refusal::NvswitchNotIsolated {
                                switch: s.bdf.clone(),
                                group,
                                blockers,
                            });
                        }
                    }
                    _ => {}
                }
                let mut vms: Vec<&str> = attachments
                    .iter()
                    .filter(|a| a.bdf == s.bdf && Some(a.vm.as_str()) != target_vm)
                    .map(|a| a.vm.as_str())
                    .collect();
                vms.dedup();
                for vm in vms {
                    refusals.push(Refusal::NvswitchAttachedElsewhere {
                        switch: s.bdf.clone(),
                        vm: vm.to_string(),
                    });
                }
            }
        }
        Fabric::NoSwitches | Fabric::Shared => {}
    }
    (f, refusals)
}

/// The note for a selection that goes without the switches because the host runs Shared NVSwitch
/// multitenancy.
pub fn shared_note(facts: &HostFacts) -> String {
    let fm = &facts.fabric_manager;
    format!(
        "Shared NVSwitch multitenancy on this host (nv-fabricmanager pid {}, FABRIC_MODE=1 in {}): \
         the GPUs go without the NVSwitches {}, which stay with the host's fabric manager; it must \
         activate the NVLink partition holding these GPUs before the VM starts",
        fm.pid.map_or("?".to_string(), |p| p.to_string()),
        fm.config.as_deref().unwrap_or("its config"),
        facts.nvswitches.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> HostFacts {
        let tree = fixture_builder::build_host(name);
        hwdetect::detect(&hostio::HostRoot::new(tree.path()))
    }

    #[test]
    fn all_gpus_take_every_switch_and_fewer_are_refused_unless_shared() {
        let facts = host("hgx-h200x8-nvswitch");
        let all: Vec<&Gpu> = facts.gpus.iter().collect();
        let (f, refusals) = check_fabric(&facts, &all, Some("vm"), &[]);
        let bdfs: Vec<&str> = f.switches().iter().map(|s| s.bdf.as_str()).collect();
        assert_eq!(
            bdfs,
            [
                "0000:05:00.0",
                "0000:06:00.0",
                "0000:07:00.0",
                "0000:08:00.0"
            ]
        );
        assert!(refusals.is_empty(), "{refusals:?}");

        let (f, refusals) = check_fabric(&facts, &all[..2], Some("vm"), &[]);
        assert_eq!(f, Fabric::Partial);
        assert_eq!(refusals.len(), 1);
        let r = &refusals[0];
        assert!(r.forceable());
        assert!(
            r.reason()
                .contains("NVLink/NVSwitch fabric will not work in the guest"),
            "{}",
            r.reason()
        );
        assert!(r.help("--gpu-force").contains("`--gpu all`"));
        assert!(r.help("--gpu-force").contains("--gpu-force"));

        let shared = host("synthetic-hgx-shared-nvswitch");
        let one: Vec<&Gpu> = shared.gpus.iter().take(1).collect();
        assert_eq!(
            check_fabric(&shared, &one, None, &[]),
            (Fabric::Shared, vec![])
        );
        assert!(shared_note(&shared).contains("pid 4242"));

        // No switches: nothing to decide.
        let plain = host("intel-z170-gtx960");
        let g: Vec<&Gpu> = plain.gpus.iter().collect();
        assert_eq!(fabric(&plain, &g), Fabric::NoSwitches);
    }

    #[test]
    fn a_switch_held_by_another_vm_or_sharing_its_group_is_refused() {
        let facts = host("hgx-h200x8-nvswitch");
        let all: Vec<&Gpu> = facts.gpus.iter().collect();
        let att = Attachment {
            bdf: "0000:07:00.0".into(),
            vm: "other".into(),
            live: false,
            config: true,
        };
        let (_, r) = check_fabric(&facts, &all, Some("vm"), std::slice::from_ref(&att));
        assert_eq!(
            r,
            [Refusal::NvswitchAttachedElsewhere {
                switch: "0000:07:00.0".into(),
                vm: "other".into()
            }]
        );
        assert!(!r[0].forceable());
        // Held by the target VM itself: fine.
        assert!(
            check_fabric(&facts, &all, Some("other"), &[att])
                .1
                .is_empty()
        );

        let tree = fixture_builder::build_from_str(
            "base = \"hgx-h200x8-nvswitch\"\n\
             [[device]]\nbdf = \"05:00.0\"\nclass = \"0680\"\nid = \"10de:22a3\"\ngroup = 114\n\
             [[device]]\nbdf = \"04:00.0\"\nclass = \"0200\"\nid = \"8086:1533\"\ngroup = 114\n\
             [[device]]\nbdf = \"18:00.0\"\nclass = \"0302\"\nid = \"10de:2335\"\ngroup = 59\n",
        )
        .unwrap();
        let f = hwdetect::detect(&hostio::HostRoot::new(tree.path()));
        let all: Vec<&Gpu> = f.gpus.iter().collect();
        let (_, r) = check_fabric(&f, &all, None, &[]);
        assert_eq!(
            r,
            [Refusal::NvswitchNotIsolated {
                switch: "0000:05:00.0".into(),
                group: 114,
                blockers: vec!["0000:04:00.0".into()],
            }]
        );
        assert!(r[0].forceable());
    }
}
