//! `vmctl gpu …`: arguments (clap) and rendering; the work is in `vmctl::commands::gpu`.

use clap::{Args, Subcommand, ValueEnum};
use hostio::{HostRoot, SystemRunner};
use vmctl::Error;
use vmctl::commands::gpu::{
    self, AttachRequest, DetachRequest, GpuReport, Isolation, Rebind, Scope,
};
use vmctl::config::Config;
use vmctl::hypervisor::Libvirt;

use super::{esc, out, out_json};

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// One entry per NVIDIA GPU: functions and drivers, IOMMU group and isolation, boot VGA,
    /// reset, the VM holding it, vGPU/MIG capability, and what `attach` would refuse; on HGX
    /// hosts also each NVSwitch (group, driver, VM holding it) and the NVLink fabric mode
    Status,
    /// Pass GPUs (every function) to a VM after checking isolation, boot VGA, host users and
    /// other VMs; default: live and config when the VM runs, config when it is shut off. On an
    /// NVSwitch (HGX) host, all GPUs take every NVSwitch along (full passthrough); fewer GPUs
    /// are refused (no NVLink fabric in the guest) unless the host runs Shared NVSwitch
    /// multitenancy or --force is given
    ///
    /// With --vgpu TYPE, give the VM a vGPU instead: on hosts with mediated devices (NVIDIA
    /// vGPU up to 16) vmctl creates an mdev of TYPE and attaches it; on SR-IOV GPUs with NVIDIA
    /// vGPU 17 and later it sets TYPE on a free virtual function and attaches that VF. TYPE is
    /// a type id or name as `vmctl gpu status` lists them (`nvidia-559`, `GRID A100-4C`,
    /// `1155`, `NVIDIA L40S-24Q`); --gpu then names the GPU to take it from. The vGPU is
    /// recorded in the VM, so `gpu detach --vgpu` and `delete` remove it again.
    Attach {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// BDF (0000:01:00.0 or 01:00.0), index from `gpu status`, `all` or `group:N`
        /// (repeatable; default all; with --vgpu: any GPU offering the type)
        #[arg(long = "gpu", value_name = "SELECTOR")]
        gpus: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Override the isolation, boot VGA, host-use and NVLink fabric (fewer GPUs than all of
        /// an NVSwitch host) refusals
        #[arg(long)]
        force: bool,
        /// A vGPU of this type (id or name, as `gpu status` shows) instead of whole GPUs
        #[arg(long, value_name = "TYPE", conflicts_with = "force")]
        vgpu: Option<String>,
    },
    /// Remove GPUs from a VM (default: all of its GPUs; its NVSwitches go with the last GPU),
    /// then optionally rebind the GPUs' functions
    Detach {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// As for attach (repeatable; default: every GPU the VM holds)
        #[arg(long = "gpu", value_name = "SELECTOR")]
        gpus: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Afterwards: back to the host driver, onto vfio-pci, or leave as libvirt left them
        #[arg(long, value_enum, default_value = "none")]
        rebind: RebindArg,
        /// Remove the VM's vGPUs instead (an mdev UUID or VF BDF; alone or `all`: every one);
        /// those vmctl made are removed from the host too
        #[arg(long, value_name = "UUID|BDF|all", num_args = 0..=1, default_missing_value = "all", conflicts_with = "gpus")]
        vgpu: Option<String>,
    },
    /// Ask the guest's NVIDIA driver, over SSH (`nvidia-smi`), which GPUs it drives: name,
    /// driver version, memory, ECC; and which passed GPUs it does not see. Exit 1 when the
    /// driver is missing or failing, or a passed GPU is not seen; Ubuntu guests only
    Check {
        /// VM name (`vmctl list` shows them)
        vm: String,
    },
}

#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// The running VM only (hot-plug)
    #[arg(long)]
    live: bool,
    /// The persistent config only, for the next boot (virsh's --config; vmctl's --config names
    /// its config file)
    #[arg(long)]
    persistent: bool,
}

impl ScopeArgs {
    fn scope(&self) -> Scope {
        Scope {
            live: self.live,
            persistent: self.persistent,
        }
    }
}

fn render_vgpu_attached(o: &vmctl::gpu::vgpu::VgpuAttached) -> String {
    use vmctl::gpu::vgpu::VgpuPlan;
    let what = match &o.plan {
        VgpuPlan::Mdev {
            parent,
            type_id,
            type_name,
            uuid,
            ..
        } => format!(
            "mdev {uuid} of type {type_id}{} on {parent}",
            type_name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        ),
        VgpuPlan::SriovVf {
            vf,
            type_id,
            type_name,
            ..
        } => format!("VF {vf} with vGPU type {type_id} ({type_name})"),
    };
    let mut s = format!(
        "{}: attached {} (live: {}, config: {})\n",
        esc(&o.vm),
        esc(&what),
        if o.live { "yes" } else { "no" },
        if o.config { "yes" } else { "no" }
    );
    for w in &o.wrote {
        s += &format!("  wrote {:?} to {}\n", w.value, esc(&w.path));
    }
    s
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum RebindArg {
    Host,
    Vfio,
    None,
}

pub fn run(cmd: &GpuCommand, json: bool, host: &HostRoot, config: &Config) -> Result<(), Error> {
    if let GpuCommand::Status = cmd {
        // Status works without libvirt: attachments are then unknown, and it says so.
        let facts = hwdetect::detect(host);
        let users = passthrough::host_gpu_users(host, &SystemRunner, &facts);
        let (atts, warning) = match Libvirt::open(config.connect())
            .map_err(Error::from)
            .and_then(|hv| gpu::attachments(&hv))
        {
            Ok(a) => (Some(a), None),
            Err(e) => (
                None,
                Some(format!(
                    "libvirt at {} not readable ({e}): attached VMs unknown",
                    config.connect()
                )),
            ),
        };
        let mut report = gpu::status(&facts, &users, atts.as_deref(), warning);
        // Which VM uses each mdev (only when mdevs exist: it reads every domain again), and
        // MIG modes from nvidia-smi (real host with a MIG-capable GPU only: nvidia-smi is slow).
        let mdev_users = if facts.mdevs.is_empty() {
            Default::default()
        } else {
            Libvirt::open(config.connect())
                .map_err(Error::from)
                .and_then(|hv| vmctl::gpu::vgpu::mdev_users(&hv))
                .unwrap_or_default()
        };
        let mig_possible = facts
            .gpus
            .iter()
            .any(|g| passthrough::mig_capable(g.chip.as_deref()) || !g.mig_instances.is_empty());
        let modes = mig_possible
            .then(|| vmctl::gpu::vgpu::mig_modes(host, &SystemRunner))
            .flatten();
        gpu::add_vgpu_users_and_mig_modes(
            &mut report,
            &facts,
            atts.as_deref().unwrap_or(&[]),
            &mdev_users,
            modes.as_ref(),
        );
        if json {
            out_json(&report);
        } else {
            // The report names domains (libvirt allows any characters): keep the lines, escape
            // the rest.
            out(&clikit::escape_text(&render_status(&report)));
        }
        return Ok(());
    }
    let hv = Libvirt::open(config.connect())?;
    let scanner = netscan::Scanner::new(host.clone());
    let ctx = super::wire(config, host, &hv, &scanner);
    match cmd {
        GpuCommand::Status => {}
        GpuCommand::Attach {
            vm,
            gpus,
            scope,
            vgpu: Some(vgpu_type),
            ..
        } => {
            let req = vmctl::gpu::vgpu::AttachVgpu {
                vm: vm.clone(),
                vgpu_type: vgpu_type.clone(),
                selectors: gpu::parse_selectors(gpus)?,
            };
            let o = gpu::attach_vgpu(&ctx, &req, scope.scope())?;
            for n in &o.notes {
                clikit::errln(&format!("note: {}", clikit::escape_text(n)));
            }
            if json {
                out_json(&o);
            } else {
                out(&render_vgpu_attached(&o));
            }
        }
        GpuCommand::Detach {
            vm,
            scope,
            vgpu: Some(which),
            ..
        } => {
            let req = vmctl::gpu::vgpu::DetachVgpu {
                vm: vm.clone(),
                which: (which != "all").then(|| which.clone()),
            };
            let o = gpu::detach_vgpu(&ctx, &req, scope.scope())?;
            for n in &o.notes {
                clikit::errln(&format!("note: {}", clikit::escape_text(n)));
            }
            if json {
                out_json(&o);
            } else {
                let mut s = format!(
                    "{}: removed vGPU {} (live: {}, config: {})\n",
                    esc(&o.vm),
                    esc(&o.removed.join(", ")),
                    if o.live { "yes" } else { "no" },
                    if o.config { "yes" } else { "no" }
                );
                for w in &o.wrote {
                    s += &format!("  wrote {:?} to {}\n", w.value, esc(&w.path));
                }
                out(&s);
            }
        }
        GpuCommand::Attach {
            vm,
            gpus,
            scope,
            force,
            vgpu: None,
        } => {
            let req = AttachRequest {
                vm: vm.clone(),
                selectors: gpu::parse_selectors(gpus)?,
                scope: Scope {
                    live: scope.live,
                    persistent: scope.persistent,
                },
                force: *force,
            };
            let o = gpu::attach(&ctx, &req)?;
            for f in &o.forced {
                clikit::errln(&format!("warning: --force: {}", clikit::escape_text(f)));
            }
            for n in vmctl::gpu::vgpu::mig_notes(host, &SystemRunner, &o.gpus) {
                clikit::errln(&format!("note: {}", clikit::escape_text(&n)));
            }
            for n in &o.notes {
                clikit::errln(&format!("note: {}", clikit::escape_text(n)));
            }
            if json {
                out_json(&o);
            } else {
                out(&format!(
                    "{}: attached {}{} (live: {}, config: {})\n",
                    esc(&o.vm),
                    esc(&o.gpus.join(", ")),
                    if o.nvswitches.is_empty() {
                        String::new()
                    } else {
                        format!(" and NVSwitches {}", esc(&o.nvswitches.join(", ")))
                    },
                    list_or_dash(&o.live),
                    list_or_dash(&o.config)
                ));
            }
        }
        GpuCommand::Detach {
            vm,
            gpus,
            scope,
            rebind,
            vgpu: None,
        } => {
            let req = DetachRequest {
                vm: vm.clone(),
                selectors: gpu::parse_selectors(gpus)?,
                scope: Scope {
                    live: scope.live,
                    persistent: scope.persistent,
                },
                rebind: match rebind {
                    RebindArg::Host => Rebind::Host,
                    RebindArg::Vfio => Rebind::Vfio,
                    RebindArg::None => Rebind::None,
                },
            };
            // The host root is the door to sysfs: on the real host these are the kernel's files.
            let o = gpu::detach(&ctx, host, &req)?;
            for w in &o.warnings {
                clikit::errln(&format!("warning: {}", clikit::escape_text(w)));
            }
            if json {
                out_json(&o);
            } else {
                let mut s = format!(
                    "{}: detached {} (live: {}, config: {})\n",
                    esc(&o.vm),
                    esc(&o.gpus.join(", ")),
                    list_or_dash(&o.live),
                    list_or_dash(&o.config)
                );
                for w in &o.rebind {
                    s += &format!("  wrote {:?} to {}\n", w.value, esc(&w.path.to_string()));
                }
                out(&s);
            }
        }
        GpuCommand::Check { vm } => crate::cli_gpu_check::run(&ctx, vm, json)?,
    }
    Ok(())
}

fn list_or_dash(v: &[String]) -> String {
    if v.is_empty() {
        "-".into()
    } else {
        esc(&v.join(" "))
    }
}

/// The human view of `gpu status`.
fn render_status(r: &GpuReport) -> String {
    let mut o = String::new();
    if r.gpus.is_empty() {
        o.push_str("no NVIDIA GPU found\n");
    }
    for g in &r.gpus {
        o += &format!(
            "[{}] {}  {}  ({})\n",
            g.index,
            g.bdf,
            g.name,
            if g.kind == "3d" {
                "3D controller"
            } else {
                "VGA"
            }
        );
        let funcs: Vec<String> = g
            .functions
            .iter()
            .map(|f| {
                format!(
                    "{} {} {}",
                    f.bdf,
                    f.id,
                    f.driver.as_deref().unwrap_or("none")
                )
            })
            .collect();
        o += &format!("    functions:  {}\n", funcs.join(", "));
        let group = g.iommu_group.map_or("none".to_string(), |n| n.to_string());
        let iso = match g.isolated {
            Isolation::Yes => "isolated".to_string(),
            Isolation::No => format!("NOT isolated, shared with {}", g.blockers.join(", ")),
            Isolation::Unknown => "isolation unknown".to_string(),
        };
        o += &format!("    IOMMU:      group {group}, {iso}\n");
        o += &format!(
            "    boot VGA:   {}\n",
            if g.boot_vga { "yes" } else { "no" }
        );
        match &g.reset_warning {
            Some(w) if g.reset_methods.is_empty() => o += &format!("    reset:      WARNING {w}\n"),
            _ => o += &format!("    reset:      {}\n", g.reset_methods.join(" ")),
        }
        let att: Vec<String> = g
            .attached
            .iter()
            .map(|a| {
                let mut where_ = Vec::new();
                if a.live {
                    where_.push("live");
                }
                if a.config {
                    where_.push("config");
                }
                format!("{} ({})", a.vm, where_.join(", "))
            })
            .collect();
        o += &format!(
            "    attached:   {}\n",
            if att.is_empty() {
                "-".to_string()
            } else {
                att.join(", ")
            }
        );
        if !g.host_users.is_empty() {
            let u: Vec<String> = g
                .host_users
                .iter()
                .map(|u| format!("{} (pid {})", u.command, u.pid))
                .collect();
            o += &format!("    host users: {}\n", u.join(", "));
        }
        o += &format!(
            "    vGPU/MIG:   mdev {}, MIG {}\n",
            if g.mdev_supported { "yes" } else { "no" },
            if g.mig_capable { "capable" } else { "no" }
        );
        o += &render_vgpu_mig(g);
        for p in &g.problems {
            o += &format!("    problem:    {}\n", p.reason);
        }
    }
    o += &render_nvswitches(r);
    for w in &r.warnings {
        o += &format!("warning: {w}\n");
    }
    o
}

/// The vGPU and MIG lines of one GPU, when there is anything to say.
fn render_vgpu_mig(g: &gpu::GpuStatus) -> String {
    use vmctl::gpu::vgpu::VgpuForm;
    let mut o = String::new();
    let v = &g.vgpu;
    if let Some(pf) = &v.vf_of {
        if v.form != VgpuForm::None {
            o += &format!("    vGPU:       VF of {pf} (types and vGPUs listed there)\n");
        }
    } else if v.form != VgpuForm::None {
        let types: Vec<String> = v
            .types
            .iter()
            .map(|t| {
                format!(
                    "{}{} ({} free)",
                    t.id,
                    t.name
                        .as_deref()
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default(),
                    t.available
                )
            })
            .collect();
        o += &format!(
            "    vGPU:       {}; types: {}\n",
            v.form.as_str(),
            if types.is_empty() {
                "none creatable now".to_string()
            } else {
                types.join(", ")
            }
        );
        for u in &v.in_use {
            o += &format!(
                "    vGPU used:  {} ({}) on {}, VM {}\n",
                u.id,
                u.type_name
                    .as_deref()
                    .or(u.type_id.as_deref())
                    .unwrap_or("unknown type"),
                u.parent,
                u.vm.as_deref().unwrap_or("-")
            );
        }
    }
    let m = &g.mig;
    if m.mode.is_some() || !m.instances.is_empty() {
        let mode = match (&m.mode, &m.pending) {
            (Some(c), Some(p)) if c != p => format!("{c} (pending {p})"),
            (Some(c), _) => c.clone(),
            (None, _) => "not reported (no nvidia-smi)".into(),
        };
        let inst: Vec<String> = m
            .instances
            .iter()
            .map(|i| {
                let ci: Vec<String> = i.compute_instances.iter().map(u32::to_string).collect();
                format!("GI {} (CI {})", i.gpu_instance, ci.join(","))
            })
            .collect();
        o += &format!(
            "    MIG:        mode {mode}; instances: {}\n",
            if inst.is_empty() {
                "-".to_string()
            } else {
                inst.join(", ")
            }
        );
        if let Some(n) = &m.note {
            o += &format!("    MIG note:   {n}\n");
        }
    }
    o
}

/// The NVSwitches of an HGX host in `gpu status`: one line each, then the fabric in words.
fn render_nvswitches(r: &GpuReport) -> String {
    let mut o = String::new();
    for s in &r.nvswitches {
        let iso = match s.isolated {
            Some(true) => "isolated".to_string(),
            Some(false) => format!("NOT isolated, shared with {}", s.blockers.join(", ")),
            None => "isolation unknown".to_string(),
        };
        let held: Vec<String> = s.attached.iter().map(|a| a.vm.clone()).collect();
        o += &format!(
            "NVSwitch {}  {}  group {}, {iso}, driver {}, attached: {}\n",
            s.bdf,
            s.name,
            s.iommu_group.map_or("none".to_string(), |g| g.to_string()),
            s.driver.as_deref().unwrap_or("none"),
            if held.is_empty() {
                "-".to_string()
            } else {
                held.join(", ")
            }
        );
    }
    if let Some(f) = &r.nvlink_fabric {
        o += &format!("NVLink fabric: {f}\n");
    }
    o
}
