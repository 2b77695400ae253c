//! vGPUs and MIG for `vmctl gpu status|attach --vgpu|detach --vgpu` and `delete`: which form a
//! GPU's vGPUs take (read from sysfs by `hwdetect`, never guessed from the model), the choice
//! of the parent function or VF for a type (pure: [`choose`]), and the sysfs writes that make
//! and remove a vGPU, undone when a later step fails.
//!
//! - mdev form (NVIDIA vGPU up to 16): a UUID written to
//!   `<parent>/mdev_supported_types/<type>/create` makes the mdev; `1` written to
//!   `/sys/bus/mdev/devices/<uuid>/remove` removes it (Documentation/driver-api/
//!   vfio-mediated-device.rst). The guest gets `<hostdev type='mdev'>` with the UUID.
//! - SR-IOV VF form (NVIDIA vGPU 17+, vendor-specific VFIO framework): the type ID written to
//!   `<VF>/nvidia/current_vgpu_type` makes the vGPU, `0` removes it (NVIDIA Virtual GPU
//!   Software User Guide, "Creating an NVIDIA vGPU on a Linux with KVM Hypervisor that Uses a
//!   Vendor-Specific VFIO Framework"). The guest gets the VF as a PCI hostdev with
//!   `managed='no'`: the VF stays on NVIDIA's driver (KubeVirt #16890, OpenStack Nova's
//!   `"managed": "no"` device_spec for these VFs).
//!
//! Neither survives a host reboot: mdevs are gone and `current_vgpu_type` is back to 0, so a
//! VM with a vGPU needs it made again before it starts (README, "vGPU").

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use hostio::paths::{SYS_BUS_MDEV_DEVICES, SYS_BUS_PCI_DEVICES};
use hostio::{Cmd, CommandRunner, HostRoot};
use hwdetect::{Gpu, HostFacts, MigInstance};
use hypervisor::Hypervisor;
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::render::{metadata_xml, vgpu_xml};
use hypervisor::domain::{Metadata, PciAddress, VgpuHostdev};
use hypervisor::vgpu_splice::splice_vgpus;
use passthrough::{Attachment, Selector};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use crate::transaction::{Transaction, Undo};

/// How a GPU offers vGPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VgpuForm {
    /// `mdev_supported_types` on the GPU or its VFs.
    Mdev,
    /// `nvidia/creatable_vgpu_types` on its SR-IOV VFs.
    SriovVf,
    /// Neither: no vGPU Manager driver, or vGPU not enabled on this GPU.
    None,
}

impl VgpuForm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mdev => "mdev",
            Self::SriovVf => "sriov-vf",
            Self::None => "none",
        }
    }
}

/// A vGPU type a GPU offers, with how many more can be made now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TypeOffer {
    /// `nvidia-559` (mdev) or `1155` (VF form).
    pub id: String,
    pub name: Option<String>,
    pub available: u32,
}

/// A vGPU that exists on a GPU, and the VM using it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InUse {
    /// The mdev's UUID, or the VF's BDF.
    pub id: String,
    /// The function it was made on (the GPU or one of its VFs).
    pub parent: String,
    pub type_id: Option<String>,
    pub type_name: Option<String>,
    pub vm: Option<String>,
}

/// `vgpu` in `gpu status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VgpuStatus {
    pub form: VgpuForm,
    /// For a VF row: its physical function, where the types and vGPUs are listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vf_of: Option<String>,
    pub types: Vec<TypeOffer>,
    pub in_use: Vec<InUse>,
}

/// `mig` in `gpu status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MigStatus {
    /// `mig.mode.current` from nvidia-smi (`Enabled`/`Disabled`); `null`: not reported.
    pub mode: Option<String>,
    pub pending: Option<String>,
    /// GPU instances (with their compute instances) the driver shows.
    pub instances: Vec<MigInstance>,
    pub note: Option<String>,
}

pub const MIG_PASSTHROUGH_NOTE: &str = "MIG mode is on: passed whole, the GPU stays in MIG mode \
     and the guest creates its own GPU instances (`nvidia-smi mig -cgi … -C` in the guest); \
     the host's instances are not carried over";

fn is_mig_on(mode: Option<&str>, instances: &[MigInstance]) -> bool {
    mode.is_some_and(|m| m.eq_ignore_ascii_case("enabled")) || !instances.is_empty()
}

/// The MIG status of `g`; `modes` from [`mig_modes`] (`None`: nvidia-smi did not report).
pub fn mig_status(g: &Gpu, modes: Option<&BTreeMap<String, (String, String)>>) -> MigStatus {
    let (mode, pending) = modes
        .and_then(|m| m.get(&g.bdf))
        .map(|(c, p)| (Some(c.clone()), Some(p.clone())))
        .unwrap_or((None, None));
    let note = is_mig_on(mode.as_deref(), &g.mig_instances).then(|| MIG_PASSTHROUGH_NOTE.into());
    MigStatus {
        mode,
        pending,
        instances: g.mig_instances.clone(),
        note,
    }
}

/// Notes for GPUs passed whole (`gpu attach`): those in MIG mode keep it in the guest.
pub fn mig_notes(host: &HostRoot, runner: &dyn CommandRunner, gpus: &[String]) -> Vec<String> {
    let facts = hwdetect::detect(host);
    let modes = mig_modes(host, runner);
    facts
        .gpus
        .iter()
        .filter(|g| gpus.contains(&g.bdf))
        .filter_map(|g| {
            mig_status(g, modes.as_ref())
                .note
                .map(|n| format!("{}: {n}", g.bdf))
        })
        .collect()
}

/// MIG mode per GPU from `nvidia-smi --query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending`
/// through the runner, on the real host only; `None` when nvidia-smi is missing or fails.
/// GPUs without MIG report `[N/A]` and are left out.
pub fn mig_modes(
    host: &HostRoot,
    runner: &dyn CommandRunner,
) -> Option<BTreeMap<String, (String, String)>> {
    if !host.is_system() {
        return None;
    }
    let cmd = Cmd::new([
        "nvidia-smi",
        "--query-gpu=pci.bus_id,mig.mode.current,mig.mode.pending",
        "--format=csv,noheader",
    ]);
    let out = runner.run(&cmd).ok()?;
    Some(parse_mig_modes(&out.stdout_str()))
}

/// nvidia-smi's 8-digit PCI domain (`00000000:C1:00.0`) as sysfs writes BDFs.
fn smi_bdf(bus_id: &str) -> Option<String> {
    let (domain, rest) = bus_id.split_once(':')?;
    Some(format!("{}:{rest}", &domain[domain.len().saturating_sub(4)..]).to_lowercase())
}

pub fn parse_mig_modes(text: &str) -> BTreeMap<String, (String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            let [bus, cur, pending] = f[..] else {
                return None;
            };
            let na = |v: &str| v.starts_with('[') || v.eq_ignore_ascii_case("N/A");
            if na(cur) {
                return None;
            }
            Some((smi_bdf(bus)?, (cur.to_string(), pending.to_string())))
        })
        .collect()
}

/// The GPU and its VFs (the functions vGPUs are made on).
fn members<'a>(facts: &'a HostFacts, pf: &'a Gpu) -> Vec<&'a Gpu> {
    let mut v = vec![pf];
    v.extend(
        facts
            .gpus
            .iter()
            .filter(|g| g.physfn.as_deref() == Some(pf.bdf.as_str())),
    );
    v
}

/// The physical GPU of `g` (itself, or its PF when `g` is a VF).
fn physical<'a>(facts: &'a HostFacts, g: &'a Gpu) -> &'a Gpu {
    g.physfn
        .as_deref()
        .and_then(|pf| facts.gpus.iter().find(|x| x.bdf == pf))
        .unwrap_or(g)
}

pub fn form(facts: &HostFacts, pf: &Gpu) -> VgpuForm {
    let m = members(facts, pf);
    if m.iter().any(|g| !g.mdev_types.is_empty()) {
        VgpuForm::Mdev
    } else if m
        .iter()
        .any(|g| g.physfn.is_some() && g.nvidia_vgpu.is_some())
    {
        VgpuForm::SriovVf
    } else {
        VgpuForm::None
    }
}

/// The types the GPU offers, summed over its functions.
pub fn offers(facts: &HostFacts, pf: &Gpu) -> Vec<TypeOffer> {
    let mut out: Vec<TypeOffer> = Vec::new();
    let mut add =
        |id: String, name: Option<String>, n: u32| match out.iter_mut().find(|o| o.id == id) {
            Some(o) => o.available += n,
            None => out.push(TypeOffer {
                id,
                name,
                available: n,
            }),
        };
    match form(facts, pf) {
        VgpuForm::Mdev => {
            for g in members(facts, pf) {
                for t in &g.mdev_types {
                    add(t.id.clone(), t.name.clone(), t.available_instances);
                }
            }
        }
        VgpuForm::SriovVf => {
            for g in members(facts, pf).into_iter().skip(1) {
                if let Some(v) = g.nvidia_vgpu.as_ref().filter(|v| v.current_type == 0) {
                    for t in &v.creatable {
                        add(t.id.to_string(), Some(t.name.clone()), 1);
                    }
                }
            }
        }
        VgpuForm::None => {}
    }
    out
}

/// Which VM uses each mdev (by UUID), live or in its config.
pub fn mdev_users(hv: &dyn Hypervisor) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for rec in hv.list()? {
        let mut uuids = parse_domain(&rec.xml)?.mdevs;
        if rec.persistent && rec.state.is_active() {
            uuids.extend(parse_domain(&hv.inactive_xml(&rec.name)?)?.mdevs);
        }
        for u in uuids {
            out.insert(u.to_ascii_lowercase(), rec.name.clone());
        }
    }
    Ok(out)
}

fn type_name_of(facts: &HostFacts, parent: &str, type_id: &str) -> Option<String> {
    facts
        .gpus
        .iter()
        .find(|g| g.bdf == parent)?
        .mdev_types
        .iter()
        .find(|t| t.id == type_id)?
        .name
        .clone()
}

/// The vGPUs that exist on the GPU and the VM holding each.
pub fn in_use(
    facts: &HostFacts,
    pf: &Gpu,
    atts: &[Attachment],
    mdev_users: &BTreeMap<String, String>,
) -> Vec<InUse> {
    let m = members(facts, pf);
    let mut out: Vec<InUse> = facts
        .mdevs
        .iter()
        .filter(|d| m.iter().any(|g| Some(&g.bdf) == d.parent.as_ref()))
        .map(|d| {
            let parent = d.parent.clone().unwrap_or_default();
            InUse {
                id: d.uuid.clone(),
                type_name: d
                    .type_id
                    .as_deref()
                    .and_then(|t| type_name_of(facts, &parent, t)),
                parent,
                type_id: d.type_id.clone(),
                vm: mdev_users.get(&d.uuid.to_ascii_lowercase()).cloned(),
            }
        })
        .collect();
    for vf in m.iter().skip(1) {
        let Some(v) = vf.nvidia_vgpu.as_ref().filter(|v| v.current_type != 0) else {
            continue;
        };
        out.push(InUse {
            id: vf.bdf.clone(),
            parent: vf.bdf.clone(),
            type_id: Some(v.current_type.to_string()),
            // A taken VF no longer lists its own type; another VF of the GPU may still.
            type_name: m
                .iter()
                .filter_map(|g| g.nvidia_vgpu.as_ref())
                .flat_map(|n| n.creatable.iter())
                .find(|t| t.id == v.current_type)
                .map(|t| t.name.clone()),
            vm: atts.iter().find(|a| a.bdf == vf.bdf).map(|a| a.vm.clone()),
        });
    }
    out
}

/// `vgpu` of one `gpu status` row.
pub fn status_of(
    facts: &HostFacts,
    g: &Gpu,
    atts: &[Attachment],
    mdev_users: &BTreeMap<String, String>,
) -> VgpuStatus {
    let pf = physical(facts, g);
    if pf.bdf != g.bdf {
        return VgpuStatus {
            form: form(facts, pf),
            vf_of: Some(pf.bdf.clone()),
            types: Vec::new(),
            in_use: Vec::new(),
        };
    }
    VgpuStatus {
        form: form(facts, pf),
        vf_of: None,
        types: offers(facts, pf),
        in_use: in_use(facts, pf, atts, mdev_users),
    }
}

/// Errors of `gpu attach --vgpu` and `gpu detach --vgpu`.
#[derive(Debug, thiserror::Error)]
pub enum VgpuError {
    #[error("no vGPU on {}: neither `mdev_supported_types` nor SR-IOV VFs with NVIDIA's `nvidia/creatable_vgpu_types` in sysfs", if gpus.is_empty() { "this host".to_string() } else { gpus.join(", ") })]
    NoVgpu { gpus: Vec<String> },
    #[error("vGPU type `{vgpu_type}` is not offered here")]
    TypeNotOffered {
        vgpu_type: String,
        /// `GPU: id (name)` for each type offered.
        offered: Vec<String>,
    },
    #[error("no free instance of vGPU type `{vgpu_type}`: {}", counts.join("; "))]
    NoFreeInstance {
        vgpu_type: String,
        counts: Vec<String>,
    },
    #[error("GPU {gpu} is passed whole to VM `{vm}`: it cannot host vGPUs at the same time")]
    PassedWhole { gpu: String, vm: String },
    #[error("GPU {gpu} is bound to vfio-pci: vGPUs need NVIDIA's vGPU Manager driver on it")]
    OnVfio { gpu: String },
    #[error("GPU {gpu} hosts vGPUs ({}): passing it whole would take them from under their VMs", vgpus.join(", "))]
    HostsVgpus { gpu: String, vgpus: Vec<String> },
    #[error("VM `{vm}` has no vGPU{}", which.as_ref().map(|w| format!(" `{w}`")).unwrap_or_default())]
    NotAttached { vm: String, which: Option<String> },
    #[error("writing `{value}` to {path}")]
    Sysfs {
        path: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

impl CommandFailure for VgpuError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Sysfs { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::NoVgpu { .. } => vec![
                "vGPUs need NVIDIA's vGPU Manager (host) driver with vGPU enabled: up to vGPU \
                 16 it creates `mdev_supported_types`, from 17 on SR-IOV VFs (`sriov-manage -e`); \
                 `vmctl gpu status` shows the form per GPU"
                    .into(),
                "or pass the whole GPU: `vmctl gpu attach VM --gpu SELECTOR`".into(),
            ],
            Self::TypeNotOffered { offered, .. } if offered.is_empty() => {
                vec!["no GPU offers a vGPU type now (`vmctl gpu status`)".into()]
            }
            Self::TypeNotOffered { offered, .. } => vec![format!(
                "the types offered (id or name): {}",
                offered.join("; ")
            )],
            Self::NoFreeInstance { .. } => vec![
                "free one: `vmctl gpu detach VM --vgpu` on a VM using one (`vmctl gpu status` \
                 lists them), or choose another type"
                    .into(),
            ],
            Self::PassedWhole { vm, .. } => vec![format!(
                "detach it first: `vmctl gpu detach {vm} --gpu …`, or name another GPU with --gpu"
            )],
            Self::OnVfio { gpu } => vec![format!(
                "give it back to the host driver: `vmctl gpu detach VM --gpu {gpu} --rebind host` \
                 (or `echo {gpu} > /sys/bus/pci/drivers_probe` after clearing driver_override)"
            )],
            Self::HostsVgpus { .. } => vec![
                "remove them first: `vmctl gpu detach VM --vgpu` for each VM `vmctl gpu status` \
                 lists under `vGPU used`"
                    .into(),
            ],
            Self::NotAttached { .. } => {
                vec!["`vmctl gpu status` lists each vGPU and the VM using it".into()]
            }
            Self::Sysfs { .. } => vec![
                "nothing else was changed; check `dmesg` for the vGPU Manager's message".into(),
            ],
        }
    }
}

impl From<VgpuError> for Error {
    fn from(e: VgpuError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// Refuses to pass a GPU whole while vGPUs exist on it (an mdev on it or its VFs, a VF with a
/// vGPU type): the VMs using them would lose them. For `gpu attach` and `create --gpu`.
pub fn check_whole(facts: &HostFacts, selected: &[&Gpu]) -> Result<()> {
    for g in selected {
        let pf = physical(facts, g);
        let used = in_use(facts, pf, &[], &BTreeMap::new());
        if !used.is_empty() {
            return Err(VgpuError::HostsVgpus {
                gpu: pf.bdf.clone(),
                vgpus: used.into_iter().map(|u| u.id).collect(),
            }
            .into());
        }
    }
    Ok(())
}

/// What `attach --vgpu` will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", rename_all = "kebab-case")]
pub enum VgpuPlan {
    /// Write `uuid` to `<parent>/mdev_supported_types/<type_id>/create` (the kernel takes exactly
    /// the 36-character UUID, a newline allowed: drivers/vfio/mdev/mdev_sysfs.c `create_store`).
    Mdev {
        gpu: String,
        parent: String,
        type_id: String,
        type_name: Option<String>,
        uuid: String,
    },
    /// Write `type_id` to `<vf>/nvidia/current_vgpu_type`.
    SriovVf {
        gpu: String,
        vf: String,
        type_id: u32,
        type_name: String,
    },
}

impl VgpuPlan {
    pub fn hostdev(&self) -> Result<VgpuHostdev> {
        Ok(match self {
            Self::Mdev { uuid, .. } => VgpuHostdev::Mdev { uuid: uuid.clone() },
            Self::SriovVf { vf, .. } => VgpuHostdev::Vf {
                host: vf.parse::<PciAddress>()?,
            },
        })
    }

    /// The sysfs attribute and value that make the vGPU, and those that remove it.
    pub fn writes(&self) -> ((String, String), (String, String)) {
        match self {
            Self::Mdev {
                parent,
                type_id,
                uuid,
                ..
            } => (
                (
                    format!("{SYS_BUS_PCI_DEVICES}/{parent}/mdev_supported_types/{type_id}/create"),
                    uuid.clone(),
                ),
                (format!("{SYS_BUS_MDEV_DEVICES}/{uuid}/remove"), "1".into()),
            ),
            Self::SriovVf { vf, type_id, .. } => {
                let p = vf_type_path(vf);
                ((p.clone(), type_id.to_string()), (p, "0".into()))
            }
        }
    }
}

fn vf_type_path(vf: &str) -> String {
    format!("{SYS_BUS_PCI_DEVICES}/{vf}/nvidia/current_vgpu_type")
}

fn matches_type(id: &str, name: Option<&str>, wanted: &str) -> bool {
    let w = wanted.trim();
    id.eq_ignore_ascii_case(w) || name.is_some_and(|n| n.eq_ignore_ascii_case(w))
}

/// Picks where a vGPU of `wanted` (a type id or name as sysfs shows it) is made: the first
/// function (mdev) or free VF (SR-IOV) of the selected GPUs, or of every GPU when `selected`
/// is `None`, that offers it with a free instance. GPUs passed whole to a VM, or bound to
/// vfio-pci, are refused when named and skipped otherwise. Pure: `uuid` is the new mdev's.
pub fn choose(
    facts: &HostFacts,
    selected: Option<&[&Gpu]>,
    wanted: &str,
    atts: &[Attachment],
    uuid: &str,
) -> std::result::Result<VgpuPlan, VgpuError> {
    // A selected VF narrows the choice to itself; a selected PF to its functions.
    let (pfs, only_vf): (Vec<&Gpu>, Option<&str>) = match selected {
        None => (
            facts.gpus.iter().filter(|g| g.physfn.is_none()).collect(),
            None,
        ),
        Some(sel) => {
            let mut v: Vec<&Gpu> = sel.iter().map(|g| physical(facts, g)).collect();
            v.dedup_by(|a, b| a.bdf == b.bdf);
            let vf = match sel {
                [one] if one.physfn.is_some() => Some(one.bdf.as_str()),
                _ => None,
            };
            (v, vf)
        }
    };
    let named = selected.is_some();
    let with_form: Vec<&Gpu> = pfs
        .iter()
        .copied()
        .filter(|g| form(facts, g) != VgpuForm::None)
        .collect();
    if with_form.is_empty() {
        return Err(VgpuError::NoVgpu {
            gpus: if named {
                pfs.iter().map(|g| g.bdf.clone()).collect()
            } else {
                Vec::new()
            },
        });
    }
    let mut usable: Vec<&Gpu> = Vec::new();
    let mut first_refusal = None;
    for g in with_form {
        let refusal = if let Some(a) = atts.iter().find(|a| g.functions.contains(&a.bdf)) {
            Some(VgpuError::PassedWhole {
                gpu: g.bdf.clone(),
                vm: a.vm.clone(),
            })
        } else if g.function_drivers.iter().flatten().any(|d| d == "vfio-pci") {
            Some(VgpuError::OnVfio { gpu: g.bdf.clone() })
        } else {
            None
        };
        match refusal {
            Some(r) if named => return Err(r),
            Some(r) => {
                first_refusal.get_or_insert(r);
            }
            None => usable.push(g),
        }
    }
    if usable.is_empty() {
        return Err(first_refusal.unwrap_or(VgpuError::NoVgpu { gpus: Vec::new() }));
    }
    let mut offered = Vec::new();
    let mut counts = Vec::new();
    let mut found = false;
    for g in &usable {
        for o in offers(facts, g) {
            let name = o
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            offered.push(format!("{}: {}{name}", g.bdf, o.id));
            if matches_type(&o.id, o.name.as_deref(), wanted) {
                found = true;
                counts.push(format!(
                    "{} has {} of {}{name} available",
                    g.bdf, o.available, o.id
                ));
            }
        }
    }
    if !found {
        return Err(VgpuError::TypeNotOffered {
            vgpu_type: wanted.to_string(),
            offered,
        });
    }
    for g in &usable {
        let m = members(facts, g);
        match form(facts, g) {
            VgpuForm::Mdev => {
                for f in m.iter().filter(|f| only_vf.is_none_or(|v| v == f.bdf)) {
                    if let Some(t) = f.mdev_types.iter().find(|t| {
                        t.available_instances > 0 && matches_type(&t.id, t.name.as_deref(), wanted)
                    }) {
                        return Ok(VgpuPlan::Mdev {
                            gpu: g.bdf.clone(),
                            parent: f.bdf.clone(),
                            type_id: t.id.clone(),
                            type_name: t.name.clone(),
                            uuid: uuid.to_string(),
                        });
                    }
                }
            }
            VgpuForm::SriovVf => {
                for vf in m
                    .iter()
                    .skip(1)
                    .filter(|f| only_vf.is_none_or(|v| v == f.bdf))
                {
                    if atts.iter().any(|a| a.bdf == vf.bdf) {
                        continue;
                    }
                    let Some(n) = vf.nvidia_vgpu.as_ref().filter(|n| n.current_type == 0) else {
                        continue;
                    };
                    if let Some(t) = n
                        .creatable
                        .iter()
                        .find(|t| matches_type(&t.id.to_string(), Some(&t.name), wanted))
                    {
                        return Ok(VgpuPlan::SriovVf {
                            gpu: g.bdf.clone(),
                            vf: vf.bdf.clone(),
                            type_id: t.id,
                            type_name: t.name.clone(),
                        });
                    }
                }
            }
            VgpuForm::None => {}
        }
    }
    Err(VgpuError::NoFreeInstance {
        vgpu_type: wanted.to_string(),
        counts,
    })
}

/// Writes a sysfs attribute through the host root, as `echo VALUE > PATH` does (one write).
pub(crate) fn write_sysfs(host: &HostRoot, path: &str, value: &str) -> std::io::Result<()> {
    write_real(&host.path(path), value)
}

pub(crate) fn write_real(real: &Path, value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(real)?;
    f.write_all(value.as_bytes())
}

fn sysfs_err(path: &str, value: &str) -> impl FnOnce(std::io::Error) -> Error {
    let (path, value) = (path.to_string(), value.to_string());
    move |source| {
        VgpuError::Sysfs {
            path,
            value,
            source,
        }
        .into()
    }
}

/// A sysfs write done, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wrote {
    pub path: String,
    pub value: String,
}

/// `gpu attach --vgpu`.
#[derive(Debug, Clone)]
pub struct AttachVgpu {
    pub vm: String,
    pub vgpu_type: String,
    /// Empty: any GPU offering the type.
    pub selectors: Vec<Selector>,
}

/// What `gpu attach --vgpu` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VgpuAttached {
    pub vm: String,
    pub plan: VgpuPlan,
    pub wrote: Vec<Wrote>,
    pub live: bool,
    pub config: bool,
    pub notes: Vec<String>,
}

/// The VM's vmctl record (a fresh one for a domain vmctl did not create).
fn metadata_of(xml: &str) -> Result<Metadata> {
    Ok(parse_domain(xml)?.metadata.unwrap_or_default())
}

/// Makes the vGPU, adds it to the VM (config and/or live) and records it in the VM's metadata,
/// in one transaction: a failed step undoes the ones before, the sysfs write included.
pub fn attach(ctx: &Ctx, req: &AttachVgpu, live: bool, config: bool) -> Result<VgpuAttached> {
    let hv = ctx.hv;
    let facts = hwdetect::detect(ctx.host);
    let atts = super::attachments(hv)?;
    let selected = if req.selectors.is_empty() {
        None
    } else {
        Some(
            passthrough::resolve(&facts, &req.selectors)
                .map_err(|e| Error::from(super::GpuError::Select(e)))?,
        )
    };
    let uuid = uuid::Uuid::new_v4().to_string();
    let plan = choose(&facts, selected.as_deref(), &req.vgpu_type, &atts, &uuid)?;
    let hostdev = plan.hostdev()?;
    let ((path, value), (undo_path, undo_value)) = plan.writes();

    let mut tx = Transaction::new(hv);
    write_sysfs(ctx.host, &path, &value).map_err(sysfs_err(&path, &value))?;
    tx.record(Undo::SysfsWrite {
        path: ctx.host.path(&undo_path),
        value: undo_value,
    });
    let before = if config {
        hv.inactive_xml(&req.vm)?
    } else {
        hv.require(&req.vm)?.xml
    };
    if config {
        let new = splice_vgpus(&req.vm, &before, &[], std::slice::from_ref(&hostdev))?;
        hv.define(&req.vm, &new)?;
        tx.record(Undo::Redefine {
            vm: req.vm.clone(),
            xml: before.clone(),
        });
    }
    if live {
        let xml = vgpu_xml(&hostdev)?;
        hv.attach_device_live(&req.vm, &xml)?;
        tx.record(Undo::LiveDevice {
            vm: req.vm.clone(),
            xml,
        });
    }
    let old = metadata_of(&before)?;
    let mut md = old.clone();
    md.vgpus.push(hostdev);
    hv.set_vmctl_metadata(&req.vm, &metadata_xml(&md)?, live)?;
    tx.record(Undo::Metadata {
        vm: req.vm.clone(),
        xml: metadata_xml(&old)?,
        live,
    });
    tx.commit();
    let gpu = match &plan {
        VgpuPlan::Mdev { gpu, .. } | VgpuPlan::SriovVf { gpu, .. } => gpu.clone(),
    };
    let mut notes = vec![
        "the vGPU does not survive a host reboot: make it again before the VM starts \
         (`vmctl gpu detach VM --vgpu`, then attach)"
            .to_string(),
    ];
    if let Some(g) = facts.gpus.iter().find(|g| g.bdf == gpu)
        && !g.mig_instances.is_empty()
    {
        notes.push(
            "the GPU is in MIG mode: MIG-backed vGPU types need their GPU instance on the host"
                .into(),
        );
    }
    Ok(VgpuAttached {
        vm: req.vm.clone(),
        plan,
        wrote: vec![Wrote { path, value }],
        live,
        config,
        notes,
    })
}

/// `gpu detach --vgpu [ID]`: `which` is an mdev UUID or a VF's BDF; `None` means all.
#[derive(Debug, Clone)]
pub struct DetachVgpu {
    pub vm: String,
    pub which: Option<String>,
}

/// What `gpu detach --vgpu` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VgpuDetached {
    pub vm: String,
    /// The mdev UUIDs and VF BDFs taken from the VM.
    pub removed: Vec<String>,
    pub live: bool,
    pub config: bool,
    pub wrote: Vec<Wrote>,
    pub notes: Vec<String>,
}

fn id_of(v: &VgpuHostdev) -> String {
    match v {
        VgpuHostdev::Mdev { uuid } => uuid.clone(),
        VgpuHostdev::Vf { host } => host.to_string(),
    }
}

fn same_id(v: &VgpuHostdev, which: &str) -> bool {
    match v {
        VgpuHostdev::Mdev { uuid } => uuid.eq_ignore_ascii_case(which.trim()),
        VgpuHostdev::Vf { host } => which.trim().parse::<PciAddress>().ok() == Some(*host),
    }
}

/// The vGPUs of a domain's XML: its mdev hostdevs, and its PCI hostdevs that are VFs holding
/// an NVIDIA vGPU type (or that vmctl recorded as its VF vGPUs).
fn vgpus_in(xml: &str, facts: &HostFacts, recorded: &[VgpuHostdev]) -> Result<Vec<VgpuHostdev>> {
    let d = parse_domain(xml)?;
    let mut out: Vec<VgpuHostdev> = d
        .mdevs
        .into_iter()
        .map(|uuid| VgpuHostdev::Mdev { uuid })
        .collect();
    for a in d.hostdevs {
        let vf = VgpuHostdev::Vf { host: a };
        let is_vgpu_vf = facts.gpus.iter().any(|g| {
            g.bdf == a.to_string()
                && g.physfn.is_some()
                && g.nvidia_vgpu.as_ref().is_some_and(|n| n.current_type != 0)
        });
        if is_vgpu_vf || recorded.contains(&vf) {
            out.push(vf);
        }
    }
    Ok(out)
}

/// Removes what vmctl made for these vGPUs: the mdev (`remove`) or the VF's type (`0`). One
/// already gone (a host reboot) is skipped. Each attribute written, or why not.
pub fn release(
    host: &HostRoot,
    vgpus: &[VgpuHostdev],
) -> Vec<(String, std::result::Result<String, String>)> {
    let mut out = Vec::new();
    for v in vgpus {
        let (path, value) = match v {
            VgpuHostdev::Mdev { uuid } => (format!("{SYS_BUS_MDEV_DEVICES}/{uuid}/remove"), "1"),
            VgpuHostdev::Vf { host: a } => (vf_type_path(&a.to_string()), "0"),
        };
        if !host.path(&path).exists() {
            continue;
        }
        let r = write_sysfs(host, &path, value)
            .map(|()| value.to_string())
            .map_err(|e| format!("writing `{value}` failed: {e}"));
        out.push((path, r));
    }
    out
}

/// Takes the VM's vGPUs (all, or the one named) from its config and/or the running domain,
/// removes those vmctl made (mdev removed, VF type back to 0) and updates the VM's record.
pub fn detach(ctx: &Ctx, req: &DetachVgpu, live: bool, config: bool) -> Result<VgpuDetached> {
    let hv = ctx.hv;
    let facts = hwdetect::detect(ctx.host);
    let rec = hv.require(&req.vm)?;
    let config_xml = if rec.persistent {
        hv.inactive_xml(&req.vm)?
    } else {
        rec.xml.clone()
    };
    let md = metadata_of(&config_xml)?;
    let mut in_live = if rec.state.is_active() {
        vgpus_in(&rec.xml, &facts, &md.vgpus)?
    } else {
        Vec::new()
    };
    let mut in_config = vgpus_in(&config_xml, &facts, &md.vgpus)?;
    if let Some(w) = &req.which {
        in_live.retain(|v| same_id(v, w));
        in_config.retain(|v| same_id(v, w));
    }
    let mut targets: Vec<VgpuHostdev> = in_live.iter().chain(&in_config).cloned().collect();
    targets.sort();
    targets.dedup();
    if targets.is_empty() {
        return Err(VgpuError::NotAttached {
            vm: req.vm.clone(),
            which: req.which.clone(),
        }
        .into());
    }
    let mut out = VgpuDetached {
        vm: req.vm.clone(),
        removed: targets.iter().map(id_of).collect(),
        live: false,
        config: false,
        wrote: Vec::new(),
        notes: Vec::new(),
    };
    if live {
        for v in &in_live {
            hv.detach_device_live(&req.vm, &vgpu_xml(v)?)?;
            out.live = true;
        }
    }
    if config && !in_config.is_empty() {
        let new = splice_vgpus(&req.vm, &config_xml, &in_config, &[])?;
        hv.define(&req.vm, &new)?;
        out.config = true;
    }
    // Only what vmctl made is removed; a vGPU someone else made stays for them.
    let (ours, theirs): (Vec<VgpuHostdev>, Vec<VgpuHostdev>) =
        targets.into_iter().partition(|t| md.vgpus.contains(t));
    for t in &theirs {
        out.notes.push(format!(
            "{} was not made by vmctl: left on the host",
            id_of(t)
        ));
    }
    // Still used by the domain (in the part not changed now): keep it.
    let still =
        |t: &VgpuHostdev| (!live && in_live.contains(t)) || (!config && in_config.contains(t));
    let release_now: Vec<VgpuHostdev> = ours.iter().filter(|t| !still(t)).cloned().collect();
    for (path, r) in release(ctx.host, &release_now) {
        match r {
            Ok(value) => out.wrote.push(Wrote { path, value }),
            Err(reason) => out.notes.push(format!("{path}: {reason}")),
        }
    }
    if !release_now.is_empty() {
        let mut new_md = md.clone();
        new_md.vgpus.retain(|v| !release_now.contains(v));
        hv.set_vmctl_metadata(&req.vm, &metadata_xml(&new_md)?, rec.state.is_active())?;
    }
    Ok(out)
}

/// For `delete`: what vmctl made for the deleted VM's vGPUs, removed.
pub fn release_for_delete(
    host: &HostRoot,
    md: &Metadata,
) -> Vec<(PathBuf, std::result::Result<(), String>)> {
    release(host, &md.vgpus)
        .into_iter()
        .map(|(p, r)| (PathBuf::from(p), r.map(|_| ())))
        .collect()
}

#[cfg(test)]
mod tests;
