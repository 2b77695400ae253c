//! `vmctl gpu status|attach|detach`: group-aware passthrough that checks isolation, boot VGA,
//! host users and other VMs before libvirt is asked ([`crate::gpu`], shared with `create
//! --gpu`), and explains libvirt's errors in the same words as `gpu status`.
//!
//! Facts come from `hwdetect` on the host root (`--host-root` points it at a fixture), the rules
//! from the `passthrough` crate. Hostdevs are `managed='yes'`, so on a real host libvirt itself
//! moves the functions to vfio-pci when the VM starts and back when it stops; vmctl writes sysfs
//! only for an explicit `detach --rebind`.
//!
//! Live hot-plug adds each function as its own single-function device, because libvirt only
//! hot-plugs guest addresses with function 0 (src/conf/domain_addr.c,
//! `virDomainPCIAddressEnsureAddr`); the persistent config gets the full layout (function 0
//! `multifunction='on'`, the others in the same guest slot behind a new pcie-root-port).

use std::collections::{BTreeMap, BTreeSet};

use hwdetect::{Gpu, HostFacts};
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::render::hostdev_xml;
use hypervisor::domain::{Hostdev, PciAddress, device_hostdevs};
use hypervisor::{Hypervisor, splice};
use passthrough::{Attachment, GpuUser, Refusal, Selector, SysfsWrite, SysfsWriter};
use serde::Serialize;

use super::Ctx;
use crate::error::{Error, Result};
use crate::gpu::{addresses, check_selection, explain, gather, select, vgpu};
use crate::transaction::{Transaction, Undo};
// Shared with `create --gpu`; here too, as the binary and the tests name them.
pub use crate::gpu::{GpuError, attachments, parse_selectors};

/// `isolated` in `gpu status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    Yes,
    No,
    /// No IOMMU groups: the IOMMU is off or the kernel does not show them.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunctionStatus {
    pub bdf: String,
    /// `vendor:device`.
    pub id: String,
    /// Bound driver, `null` when none.
    pub driver: Option<String>,
}

/// A VM holding some of the GPU's functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachedTo {
    pub vm: String,
    /// In the running domain.
    pub live: bool,
    /// In the persistent config.
    pub config: bool,
}

/// A check `gpu attach` would fail, in the words its refusal uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    #[serde(flatten)]
    pub refusal: Refusal,
    pub reason: String,
    pub help: String,
    pub forceable: bool,
}

impl From<Refusal> for Problem {
    fn from(refusal: Refusal) -> Self {
        Self {
            reason: refusal.reason(),
            // What `gpu attach` would refuse: its override is --force.
            help: refusal.help("--force"),
            forceable: refusal.forceable(),
            refusal,
        }
    }
}

/// One row of `vmctl gpu status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuStatus {
    /// The selector index (GPUs sorted by BDF).
    pub index: usize,
    pub bdf: String,
    pub name: String,
    pub chip: Option<String>,
    /// `vga` (class 0300) or `3d` (class 0302, datacenter GPUs without display).
    pub kind: &'static str,
    pub functions: Vec<FunctionStatus>,
    pub iommu_group: Option<u32>,
    pub isolated: Isolation,
    /// Devices sharing the group that are not this GPU's functions or bridges.
    pub blockers: Vec<String>,
    pub boot_vga: bool,
    pub reset_methods: Vec<String>,
    /// Set when the GPU has no reset method.
    pub reset_warning: Option<String>,
    pub attached: Vec<AttachedTo>,
    /// Host processes with the GPU's `/dev/nvidiaN` open.
    pub host_users: Vec<GpuUser>,
    /// sysfs shows `mdev_supported_types` (vGPU); report only.
    pub mdev_supported: bool,
    /// The chip supports Multi-Instance GPU; report only.
    pub mig_capable: bool,
    /// What `gpu attach` would refuse for this GPU alone (other VMs' claims are in `attached`).
    pub problems: Vec<Problem>,
    /// vGPU form, types with free instances, vGPUs in use and by which VM.
    pub vgpu: vgpu::VgpuStatus,
    /// MIG mode (nvidia-smi, when it reports) and instances (driver's procfs).
    pub mig: vgpu::MigStatus,
}

/// `vmctl gpu status --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuReport {
    pub iommu_enabled: bool,
    pub gpus: Vec<GpuStatus>,
    pub warnings: Vec<String>,
    /// The NVSwitches (HGX), their groups, drivers and holders ([`crate::gpu::nvswitch`]).
    pub nvswitches: Vec<crate::gpu::nvswitch::NvSwitchStatus>,
    /// Fabric Manager on the host (`null` without NVSwitches): `fabric_mode`, `pid`,
    /// `shared_nvswitch`.
    pub fabric_manager: Option<hwdetect::FabricManagerInfo>,
    /// What `--gpu all` and fewer GPUs do here (`null` without NVSwitches).
    pub nvlink_fabric: Option<String>,
}

const NO_RESET: &str = "no reset method: after the VM stops the GPU may stay unusable until the \
                        host reboots";

fn attached_to(gpu: &Gpu, atts: &[Attachment]) -> Vec<AttachedTo> {
    let mut by_vm: BTreeMap<&str, (bool, bool)> = BTreeMap::new();
    for a in atts.iter().filter(|a| gpu.functions.contains(&a.bdf)) {
        let e = by_vm.entry(a.vm.as_str()).or_default();
        e.0 |= a.live;
        e.1 |= a.config;
    }
    by_vm
        .into_iter()
        .map(|(vm, (live, config))| AttachedTo {
            vm: vm.to_string(),
            live,
            config,
        })
        .collect()
}

/// The status of every NVIDIA GPU. Without libvirt (`atts` is `None`) attachments are unknown
/// and `libvirt_warning` says so.
pub fn status(
    facts: &HostFacts,
    users: &[GpuUser],
    atts: Option<&[Attachment]>,
    libvirt_warning: Option<String>,
) -> GpuReport {
    let gpus = facts
        .gpus
        .iter()
        .enumerate()
        .map(|(index, g)| {
            let problems = passthrough::check(facts, &[g], None, &[], users)
                .into_iter()
                .map(Problem::from)
                .collect();
            GpuStatus {
                index,
                bdf: g.bdf.clone(),
                name: g.name.clone(),
                chip: g.chip.clone(),
                kind: if g.class == "0302" { "3d" } else { "vga" },
                functions: g
                    .functions
                    .iter()
                    .enumerate()
                    .map(|(i, f)| FunctionStatus {
                        bdf: f.clone(),
                        id: g.function_ids.get(i).cloned().unwrap_or_default(),
                        driver: g.function_drivers.get(i).cloned().flatten(),
                    })
                    .collect(),
                iommu_group: g.iommu_group,
                isolated: match g.isolated {
                    Some(true) => Isolation::Yes,
                    Some(false) => Isolation::No,
                    None => Isolation::Unknown,
                },
                blockers: g.group_blockers.clone(),
                boot_vga: g.boot_vga,
                reset_methods: g.reset_methods.clone(),
                reset_warning: (!g.reset && g.reset_methods.is_empty())
                    .then(|| NO_RESET.to_string()),
                attached: atts.map(|a| attached_to(g, a)).unwrap_or_default(),
                host_users: users.iter().filter(|u| u.gpu == g.bdf).cloned().collect(),
                mdev_supported: g.mdev_supported,
                mig_capable: passthrough::mig_capable(g.chip.as_deref()),
                problems,
                vgpu: vgpu::status_of(facts, g, atts.unwrap_or(&[]), &BTreeMap::new()),
                mig: vgpu::mig_status(g, None),
            }
        })
        .collect();
    let mut warnings: Vec<String> = libvirt_warning.into_iter().collect();
    if !facts.iommu.enabled {
        warnings.push(
            "no IOMMU groups: enable VT-d/AMD-Vi in the firmware and run \
             `sudo gpu-vm-bootstrap --gpu-mode passthrough`"
                .into(),
        );
    }
    GpuReport {
        iommu_enabled: facts.iommu.enabled,
        gpus,
        warnings,
        nvswitches: crate::gpu::nvswitch::status(facts, atts),
        fabric_manager: (!facts.nvswitch_devices.is_empty()).then(|| facts.fabric_manager.clone()),
        nvlink_fabric: crate::gpu::nvswitch::fabric_summary(facts),
    }
}

/// `--live` / `--persistent` as given; neither means "both when running, config when shut off".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scope {
    pub live: bool,
    pub persistent: bool,
}

impl Scope {
    /// (live, config) for a domain in this state.
    fn resolve(self, vm: &str, running: bool, persistent: bool) -> Result<(bool, bool)> {
        let (live, config) = if !self.live && !self.persistent {
            (running, persistent || !running)
        } else {
            (self.live, self.persistent)
        };
        if live && !running {
            return Err(GpuError::NotRunning { vm: vm.into() }.into());
        }
        if config && !persistent {
            return Err(GpuError::Transient { vm: vm.into() }.into());
        }
        Ok((live, config))
    }
}

/// `vmctl gpu attach`.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub vm: String,
    /// Empty means `all`.
    pub selectors: Vec<Selector>,
    pub scope: Scope,
    pub force: bool,
}

/// What `gpu attach` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachOutcome {
    pub vm: String,
    pub gpus: Vec<String>,
    /// Functions hot-plugged into the running domain.
    pub live: Vec<String>,
    /// Functions added to the persistent config.
    pub config: Vec<String>,
    /// Refusals overridden with --force.
    pub forced: Vec<String>,
    /// NVSwitches passed with the GPUs (full passthrough on an HGX host, [`crate::gpu::nvswitch`]).
    pub nvswitches: Vec<String>,
    /// What the user should know (GPUs of a Shared NVSwitch host go without the switches).
    pub notes: Vec<String>,
}

/// Maps a libvirt error about passthrough to the explanation `gpu status` gives.
fn explained(
    op: &'static str,
    vm: &str,
    facts: &HostFacts,
    gpus: &[&Gpu],
) -> impl Fn(Error) -> Error {
    let vm = vm.to_string();
    let facts = facts.clone();
    let gpus: Vec<Gpu> = gpus.iter().map(|g| (*g).clone()).collect();
    move |e| match e {
        Error::Hypervisor(hypervisor::Error::Libvirt {
            op: libvirt_op,
            domain,
            source,
        }) => {
            let refs: Vec<&Gpu> = gpus.iter().collect();
            match explain(source.message(), &facts, &refs) {
                Some(explanation) => GpuError::Explained {
                    op,
                    vm: vm.clone(),
                    explanation,
                    source,
                }
                .into(),
                None => hypervisor::Error::Libvirt {
                    op: libvirt_op,
                    domain,
                    source,
                }
                .into(),
            }
        }
        other => other,
    }
}

/// A hostdev for hot-plug: host address only, libvirt picks a free hot-pluggable port.
fn live_hostdev(a: PciAddress) -> Result<String> {
    Ok(hostdev_xml(&Hostdev {
        host: a,
        guest: None,
        multifunction: false,
    })?)
}

/// `vmctl gpu attach`: checks, then hot-plugs and/or changes the persistent config. A config
/// failure after a hot-plug unplugs again, so nothing is left half done.
pub fn attach(ctx: &Ctx, req: &AttachRequest) -> Result<AttachOutcome> {
    let hv = ctx.hv;
    let rec = hv.require(&req.vm)?;
    let (facts, users, atts) = gather(ctx)?;
    let selected = select(&facts, &req.selectors, &req.vm, &atts)?;
    let mut forced = check_selection(
        &facts, &req.vm, &selected, &atts, &users, req.force, "--force",
    )?;
    vgpu::check_whole(&facts, &selected)?;
    // The fabric is judged on what the VM will hold: these GPUs and the ones it has already.
    let fabric = crate::gpu::nvswitch::check(
        &facts,
        &req.vm,
        &crate::gpu::nvswitch::with_held(&facts, &atts, &req.vm, &selected),
        &atts,
        req.force,
        "--force",
    )?;
    forced.extend(fabric.forced);
    let (live, config) = req
        .scope
        .resolve(&req.vm, rec.state.is_active(), rec.persistent)?;
    let mine = |f: &str, want_live: bool| {
        atts.iter()
            .any(|a| a.vm == req.vm && a.bdf == f && if want_live { a.live } else { a.config })
    };
    let mut out = AttachOutcome {
        vm: req.vm.clone(),
        gpus: selected.iter().map(|g| g.bdf.clone()).collect(),
        live: Vec::new(),
        config: Vec::new(),
        forced,
        nvswitches: fabric.switches.iter().map(ToString::to_string).collect(),
        notes: fabric.notes,
    };
    let explain_err = explained("attach GPUs to", &req.vm, &facts, &selected);
    // A failure after a hot-plug unplugs what this attach plugged (dropping the transaction).
    let mut tx = Transaction::new(hv);
    if live {
        for g in &selected {
            for a in addresses(g) {
                if mine(&a.to_string(), true) {
                    continue;
                }
                let xml = live_hostdev(a)?;
                hv.attach_device_live(&req.vm, &xml)
                    .map_err(|e| explain_err(e.into()))?;
                tx.record(Undo::LiveDevice {
                    vm: req.vm.clone(),
                    xml,
                });
                out.live.push(a.to_string());
            }
        }
    }
    if config {
        out.config =
            attach_config(hv, &req.vm, &selected, |f| mine(f, false)).map_err(&explain_err)?;
    }
    let (sw_live, sw_config) = crate::gpu::nvswitch::attach_switches(
        hv,
        &mut tx,
        &req.vm,
        &fabric.switches,
        (live, config),
        mine,
    )
    .map_err(&explain_err)?;
    out.live.extend(sw_live);
    out.config.extend(sw_config);
    tx.commit();
    Ok(out)
}

/// Adds the GPUs that are not fully in the config yet; a GPU with only some functions there is
/// replaced as a whole, so its functions share one guest slot.
fn attach_config(
    hv: &dyn Hypervisor,
    vm: &str,
    selected: &[&Gpu],
    in_config: impl Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let current = hv.inactive_xml(vm)?;
    // The guest slot sits behind a pcie-root-port, which only a q35 (PCIe) machine has.
    let machine = parse_domain(&current)?.machine.unwrap_or_default();
    if !machine.contains("q35") {
        return Err(GpuError::NotQ35 {
            vm: vm.to_string(),
            machine,
        }
        .into());
    }
    let mut index = splice::next_controller_index(vm, &current)?;
    let mut remove = BTreeSet::new();
    let mut ports = Vec::new();
    let mut add = Vec::new();
    let mut added = Vec::new();
    for g in selected {
        let funcs = addresses(g);
        if funcs.iter().all(|f| in_config(&f.to_string())) {
            continue;
        }
        remove.extend(funcs.iter().copied());
        ports.push(index);
        add.extend(device_hostdevs(&funcs, index));
        added.extend(funcs.iter().map(ToString::to_string));
        index = index
            .checked_add(1)
            .ok_or_else(|| hypervisor::Error::NoFreePciController { domain: vm.into() })?;
    }
    if !added.is_empty() {
        let new = splice::splice(vm, &current, &remove, &ports, &add)?;
        hv.define(vm, &new)?;
    }
    Ok(added)
}

/// What `detach --rebind` does with the functions afterwards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rebind {
    /// Back to the host driver: clear `driver_override`, unbind, `drivers_probe`.
    Host,
    /// Keep them on (or move them to) vfio-pci.
    Vfio,
    /// Leave them as libvirt left them.
    #[default]
    None,
}

/// `vmctl gpu detach`.
#[derive(Debug, Clone)]
pub struct DetachRequest {
    pub vm: String,
    /// Empty means every GPU attached to the VM.
    pub selectors: Vec<Selector>,
    pub scope: Scope,
    pub rebind: Rebind,
}

/// What `gpu detach` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DetachOutcome {
    pub vm: String,
    pub gpus: Vec<String>,
    pub live: Vec<String>,
    pub config: Vec<String>,
    /// The sysfs writes of `--rebind`, in order.
    pub rebind: Vec<SysfsWrite>,
    pub warnings: Vec<String>,
}

/// `vmctl gpu detach`: removes the GPUs from the running domain and/or its config, then
/// rebinds their functions through `sysfs` when asked.
pub fn detach(ctx: &Ctx, sysfs: &dyn SysfsWriter, req: &DetachRequest) -> Result<DetachOutcome> {
    let (host, hv) = (ctx.host, ctx.hv);
    let rec = hv.require(&req.vm)?;
    let (facts, _, atts) = gather(ctx)?;
    let mine: Vec<&Attachment> = atts.iter().filter(|a| a.vm == req.vm).collect();
    let holds = |g: &Gpu| g.functions.iter().any(|f| mine.iter().any(|a| &a.bdf == f));
    let targets: Vec<&Gpu> = if req.selectors.is_empty() {
        facts.gpus.iter().filter(|g| holds(g)).collect()
    } else {
        let selected = select(&facts, &req.selectors, &req.vm, &atts)?;
        let missing: Vec<String> = selected
            .iter()
            .filter(|g| !holds(g))
            .map(|g| g.bdf.clone())
            .collect();
        if !missing.is_empty() {
            return Err(GpuError::NotAttached {
                vm: req.vm.clone(),
                gpus: missing,
            }
            .into());
        }
        selected
    };
    if targets.is_empty() {
        return Err(GpuError::NotAttached {
            vm: req.vm.clone(),
            gpus: Vec::new(),
        }
        .into());
    }
    let (live, config) = req
        .scope
        .resolve(&req.vm, rec.state.is_active(), rec.persistent)?;
    let explain_err = explained("detach GPUs from", &req.vm, &facts, &targets);
    let mut out = DetachOutcome {
        vm: req.vm.clone(),
        gpus: targets.iter().map(|g| g.bdf.clone()).collect(),
        live: Vec::new(),
        config: Vec::new(),
        rebind: Vec::new(),
        warnings: Vec::new(),
    };
    let mut functions: BTreeSet<PciAddress> = targets.iter().flat_map(|g| addresses(g)).collect();
    // The NVSwitches of a full passthrough go with the VM's last GPU.
    if facts
        .gpus
        .iter()
        .filter(|g| holds(g))
        .all(|g| targets.iter().any(|t| t.bdf == g.bdf))
    {
        functions.extend(
            crate::gpu::nvswitch::held_switches(&facts, &atts, &req.vm)
                .iter()
                .filter_map(|s| s.parse::<PciAddress>().ok()),
        );
    }
    if live {
        for a in &functions {
            if !mine.iter().any(|m| m.live && m.bdf == a.to_string()) {
                continue;
            }
            hv.detach_device_live(&req.vm, &live_hostdev(*a)?)
                .map_err(|e| explain_err(e.into()))?;
            out.live.push(a.to_string());
        }
    }
    if config {
        let present: BTreeSet<PciAddress> = functions
            .iter()
            .filter(|a| mine.iter().any(|m| m.config && m.bdf == a.to_string()))
            .copied()
            .collect();
        if !present.is_empty() {
            let current = hv.inactive_xml(&req.vm)?;
            let new = splice::splice(&req.vm, &current, &present, &[], &[])?;
            hv.define(&req.vm, &new)
                .map_err(|e| explain_err(e.into()))?;
            out.config = present.iter().map(ToString::to_string).collect();
        }
    }
    if req.rebind != Rebind::None {
        // managed='yes' hostdevs were just handed back by libvirt: read the drivers again.
        let now = hwdetect::detect(host);
        let still = attachments(hv)?;
        for bdf in &out.gpus {
            let Some(g) = now.gpus.iter().find(|g| &g.bdf == bdf) else {
                continue;
            };
            if let Some(a) = still
                .iter()
                .find(|a| a.live && g.functions.contains(&a.bdf))
            {
                out.warnings.push(format!(
                    "not rebinding {bdf}: VM `{}` still has {} live",
                    a.vm, a.bdf
                ));
                continue;
            }
            let funcs: Vec<(String, Option<String>)> = g
                .functions
                .iter()
                .cloned()
                .zip(g.function_drivers.iter().cloned())
                .collect();
            let (steps, target) = match req.rebind {
                Rebind::Host => (passthrough::bind_host_steps(&funcs), "host"),
                _ => (passthrough::bind_vfio_steps(&funcs), "vfio-pci"),
            };
            passthrough::apply_writes(sysfs, &steps).map_err(|source| GpuError::Rebind {
                gpu: bdf.clone(),
                target,
                source,
            })?;
            out.rebind.extend(steps);
        }
    }
    Ok(out)
}

/// `vmctl gpu attach VM --vgpu TYPE`: [`vgpu::attach`] with the scope resolved as for GPUs.
pub fn attach_vgpu(ctx: &Ctx, req: &vgpu::AttachVgpu, scope: Scope) -> Result<vgpu::VgpuAttached> {
    let rec = ctx.hv.require(&req.vm)?;
    let (live, config) = scope.resolve(&req.vm, rec.state.is_active(), rec.persistent)?;
    vgpu::attach(ctx, req, live, config)
}

/// `vmctl gpu detach VM --vgpu [ID|all]`: [`vgpu::detach`] with the scope resolved.
pub fn detach_vgpu(ctx: &Ctx, req: &vgpu::DetachVgpu, scope: Scope) -> Result<vgpu::VgpuDetached> {
    let rec = ctx.hv.require(&req.vm)?;
    let (live, config) = scope.resolve(&req.vm, rec.state.is_active(), rec.persistent)?;
    vgpu::detach(ctx, req, live, config)
}

/// Fills in what `status` cannot know from the facts alone: which VM uses each mdev, and the
/// MIG modes nvidia-smi reports (`None`: not reported).
pub fn add_vgpu_users_and_mig_modes(
    report: &mut GpuReport,
    facts: &HostFacts,
    atts: &[Attachment],
    mdev_users: &BTreeMap<String, String>,
    mig_modes: Option<&BTreeMap<String, (String, String)>>,
) {
    for s in &mut report.gpus {
        if let Some(g) = facts.gpus.iter().find(|g| g.bdf == s.bdf) {
            s.vgpu = vgpu::status_of(facts, g, atts, mdev_users);
            s.mig = vgpu::mig_status(g, mig_modes);
        }
    }
}
