//! NVSwitches with the GPUs on HGX hosts ([`passthrough::nvswitch`] decides): a VM given every
//! GPU gets every NVSwitch too (full passthrough, NVIDIA Fabric Manager user guide, "Full
//! Passthrough Virtualization Model"); fewer GPUs are refused unless the host runs Shared
//! NVSwitch multitenancy (then the switches stay with the host's Fabric Manager) or the caller
//! forces it. The guest needs Fabric Manager exactly when it gets switches: the Talos
//! `nvidia-fabricmanager-*` extension, on Ubuntu the fabric manager package.

use hwdetect::{Gpu, HostFacts};
use hypervisor::Hypervisor;
use hypervisor::domain::render::hostdev_xml;
use hypervisor::domain::{Hostdev, PciAddress, device_hostdevs};
use hypervisor::splice;
use passthrough::{Attachment, Fabric, Refusal};

use super::GpuError;
use crate::ctx::Ctx;
use crate::error::Result;
use crate::transaction::{Transaction, Undo};

/// The NVSwitches a VM given `selected` gets: every switch of the host when `selected` is every
/// GPU and the host does not run Shared NVSwitch multitenancy; otherwise none. Pure.
///
/// **The guest gets Fabric Manager iff this is non-empty** (Ubuntu: the fabric manager package
/// in the cloud-init driver install; Talos: the `nvidia-fabricmanager-*` extension). A guest
/// without switches never gets it: Fabric Manager has no fabric to manage there.
pub fn switches_for(facts: &HostFacts, selected: &[&Gpu]) -> Vec<PciAddress> {
    addresses(&passthrough::nvswitch::fabric(facts, selected))
}

fn addresses(f: &Fabric) -> Vec<PciAddress> {
    f.switches()
        .iter()
        .filter_map(|s| s.bdf.parse().ok())
        .collect()
}

/// The switches for `selected`, after the fabric checks; `force` overrides the forceable
/// refusals (their reasons come back as `forced`, to print as warnings). `notes`: what the user
/// should know (Shared NVSwitch multitenancy took the GPUs without the switches).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FabricOutcome {
    pub switches: Vec<PciAddress>,
    pub forced: Vec<String>,
    pub notes: Vec<String>,
}

/// Checks the fabric of `selected` for `vm` (see [`FabricOutcome`]); a refusal that `force` does
/// not cover is [`GpuError::Refused`] with `force_flag` in its help.
pub fn check(
    facts: &HostFacts,
    vm: &str,
    selected: &[&Gpu],
    atts: &[Attachment],
    force: bool,
    force_flag: &'static str,
) -> Result<FabricOutcome> {
    let (fabric, refusals) = passthrough::check_fabric(facts, selected, Some(vm), atts);
    let (forced, blocking): (Vec<Refusal>, Vec<Refusal>) =
        refusals.into_iter().partition(|r| force && r.forceable());
    if !blocking.is_empty() {
        return Err(GpuError::Refused {
            vm: vm.to_string(),
            gpus: selected.iter().map(|g| g.bdf.clone()).collect(),
            refusals: blocking,
            force_flag,
        }
        .into());
    }
    let notes = if fabric == Fabric::Shared {
        vec![passthrough::nvswitch::shared_note(facts)]
    } else {
        Vec::new()
    };
    Ok(FabricOutcome {
        switches: addresses(&fabric),
        forced: forced.iter().map(Refusal::reason).collect(),
        notes,
    })
}

/// For `vmctl create … --gpu`: the switches that go with the GPU hostdevs `gpus` (as
/// [`super::hostdevs_for_create`] made them), after [`check`] with `--gpu-force`. Forced
/// refusals and notes go to the log (stderr) as warnings.
pub fn switches_for_create(
    ctx: &Ctx,
    vm: &str,
    gpus: &[Vec<PciAddress>],
    force: bool,
) -> Result<Vec<PciAddress>> {
    if gpus.is_empty() {
        return Ok(Vec::new());
    }
    let facts = hwdetect::detect(ctx.host);
    if facts.nvswitch_devices.is_empty() {
        return Ok(Vec::new());
    }
    let atts = super::attachments(ctx.hv)?;
    let selected = gpus_of(&facts, gpus);
    let o = check(&facts, vm, &selected, &atts, force, "--gpu-force")?;
    for f in &o.forced {
        tracing::warn!("--gpu-force: {f}");
    }
    for n in &o.notes {
        tracing::warn!("note: {n}");
    }
    Ok(o.switches)
}

/// The GPUs whose functions are among `hostdevs`.
fn gpus_of<'a>(facts: &'a HostFacts, hostdevs: &[Vec<PciAddress>]) -> Vec<&'a Gpu> {
    facts
        .gpus
        .iter()
        .filter(|g| {
            g.functions.iter().any(|f| {
                f.parse::<PciAddress>()
                    .is_ok_and(|a| hostdevs.iter().flatten().any(|h| *h == a))
            })
        })
        .collect()
}

/// `selected` plus the GPUs `vm` already holds (live or in its config), sorted by BDF: what
/// the VM has after `gpu attach`, which the fabric is judged on.
pub fn with_held<'a>(
    facts: &'a HostFacts,
    atts: &[Attachment],
    vm: &str,
    selected: &[&'a Gpu],
) -> Vec<&'a Gpu> {
    facts
        .gpus
        .iter()
        .filter(|g| {
            selected.iter().any(|s| s.bdf == g.bdf)
                || g.functions
                    .iter()
                    .any(|f| atts.iter().any(|a| a.vm == vm && &a.bdf == f))
        })
        .collect()
}

/// Whether `addr` is an NVSwitch in sysfs (vendor 0x10de, class 0x0680): such a hostdev is no
/// GPU for NUMA placement.
pub fn is_nvswitch(host: &hostio::HostRoot, addr: &PciAddress) -> bool {
    let attr = |name: &str, digits: usize| {
        host.read_to_string(format!(
            "{}/{addr}/{name}",
            hostio::paths::SYS_BUS_PCI_DEVICES
        ))
        .ok()
        .and_then(|t| hwdetect::parse::sysfs_hex(&t, digits))
    };
    attr("vendor", 4) == Some(0x10de) && attr("class", 6).map(|c| c >> 8) == Some(0x0680)
}

/// Adds the switches to `vm` for `gpu attach`: hot-plugged when `live` (each undone by
/// dropping `tx`), and in the persistent config when `config`, each behind its own
/// pcie-root-port. `held(bdf, live)`: whether the VM already has it there. Returns the
/// addresses added (live, config).
pub(crate) fn attach_switches(
    hv: &dyn Hypervisor,
    tx: &mut Transaction,
    vm: &str,
    switches: &[PciAddress],
    (live, config): (bool, bool),
    held: impl Fn(&str, bool) -> bool,
) -> Result<(Vec<String>, Vec<String>)> {
    let mut out = (Vec::new(), Vec::new());
    if live {
        for a in switches {
            if held(&a.to_string(), true) {
                continue;
            }
            let xml = hostdev_xml(&Hostdev {
                host: *a,
                guest: None,
                multifunction: false,
            })?;
            hv.attach_device_live(vm, &xml)?;
            tx.record(Undo::LiveDevice {
                vm: vm.to_string(),
                xml,
            });
            out.0.push(a.to_string());
        }
    }
    if config {
        let missing: Vec<PciAddress> = switches
            .iter()
            .filter(|a| !held(&a.to_string(), false))
            .copied()
            .collect();
        if !missing.is_empty() {
            let current = hv.inactive_xml(vm)?;
            let mut index = splice::next_controller_index(vm, &current)?;
            let mut ports = Vec::new();
            let mut add = Vec::new();
            for a in &missing {
                ports.push(index);
                add.extend(device_hostdevs(&[*a], index));
                index = index
                    .checked_add(1)
                    .ok_or_else(|| hypervisor::Error::NoFreePciController { domain: vm.into() })?;
            }
            let new = splice::splice(vm, &current, &Default::default(), &ports, &add)?;
            hv.define(vm, &new)?;
            out.1 = missing.iter().map(ToString::to_string).collect();
        }
    }
    Ok(out)
}

/// The NVSwitches `vm` holds in its persistent config (for `gpu detach`, which removes them
/// with the last GPU).
pub(crate) fn held_switches(facts: &HostFacts, atts: &[Attachment], vm: &str) -> Vec<String> {
    facts
        .nvswitches
        .iter()
        .filter(|s| atts.iter().any(|a| a.vm == vm && &a.bdf == *s))
        .cloned()
        .collect()
}

/// One NVSwitch in `vmctl gpu status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NvSwitchStatus {
    pub bdf: String,
    pub name: String,
    pub iommu_group: Option<u32>,
    /// `true` when its group holds only NVSwitches and bridges; `null` without IOMMU groups.
    pub isolated: Option<bool>,
    pub blockers: Vec<String>,
    pub driver: Option<String>,
    /// The VMs holding it (`null` list entries never: empty when none or libvirt unknown).
    pub attached: Vec<crate::commands::gpu::AttachedTo>,
}

/// The switches of `gpu status`, each with the VMs holding it.
pub fn status(facts: &HostFacts, atts: Option<&[Attachment]>) -> Vec<NvSwitchStatus> {
    facts
        .nvswitch_devices
        .iter()
        .map(|s| NvSwitchStatus {
            bdf: s.bdf.clone(),
            name: s.name.clone(),
            iommu_group: s.iommu_group,
            isolated: s.isolated,
            blockers: s.group_blockers.clone(),
            driver: s.driver.clone(),
            attached: atts
                .unwrap_or_default()
                .iter()
                .filter(|a| a.bdf == s.bdf)
                .map(|a| crate::commands::gpu::AttachedTo {
                    vm: a.vm.clone(),
                    live: a.live,
                    config: a.config,
                })
                .collect(),
        })
        .collect()
}

/// What `--gpu all` does on this host, in words, for `gpu status` (`None` without switches).
pub fn fabric_summary(facts: &HostFacts) -> Option<String> {
    if facts.nvswitch_devices.is_empty() {
        return None;
    }
    let fm = &facts.fabric_manager;
    Some(if fm.shared_nvswitch {
        format!(
            "Shared NVSwitch multitenancy (nv-fabricmanager running, FABRIC_MODE=1): VMs get GPUs \
             without the {} NVSwitches; the host's fabric manager activates their partitions",
            facts.nvswitch_devices.len()
        )
    } else {
        format!(
            "full passthrough: `--gpu all` passes every GPU and the {} NVSwitches to one VM \
             (fabric manager in the guest); fewer GPUs are refused without --force{}",
            facts.nvswitch_devices.len(),
            match (fm.fabric_mode, fm.pid) {
                (Some(m), Some(p)) => format!(" (host fabric manager pid {p}, FABRIC_MODE={m})"),
                (Some(m), None) => format!(" (fabric manager not running; FABRIC_MODE={m})"),
                (None, Some(p)) => format!(" (host fabric manager pid {p})"),
                (None, None) => String::new(),
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str) -> HostFacts {
        let tree = fixture_builder::build_host(name);
        hwdetect::detect(&hostio::HostRoot::new(tree.path()))
    }

    #[test]
    fn switches_go_with_all_gpus_only_and_never_in_shared_mode() {
        let facts = host("hgx-h200x8-nvswitch");
        let all: Vec<&Gpu> = facts.gpus.iter().collect();
        let s: Vec<String> = switches_for(&facts, &all)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            s,
            [
                "0000:05:00.0",
                "0000:06:00.0",
                "0000:07:00.0",
                "0000:08:00.0"
            ]
        );
        assert!(switches_for(&facts, &all[..7]).is_empty());
        assert!(switches_for(&facts, &[]).is_empty());
        let shared = host("synthetic-hgx-shared-nvswitch");
        let all: Vec<&Gpu> = shared.gpus.iter().collect();
        assert!(switches_for(&shared, &all).is_empty());
        let plain = host("intel-z170-gtx960");
        let all: Vec<&Gpu> = plain.gpus.iter().collect();
        assert!(switches_for(&plain, &all).is_empty());
    }

    #[test]
    fn nvswitch_is_told_from_sysfs() {
        let tree = fixture_builder::build_host("hgx-h200x8-nvswitch");
        let root = hostio::HostRoot::new(tree.path());
        assert!(is_nvswitch(&root, &"0000:05:00.0".parse().unwrap()));
        assert!(!is_nvswitch(&root, &"0000:18:00.0".parse().unwrap()));
        assert!(!is_nvswitch(&root, &"0000:77:00.0".parse().unwrap()));
    }
}
