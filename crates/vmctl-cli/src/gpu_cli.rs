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
    /// reset, the VM holding it, vGPU/MIG capability, and what `attach` would refuse
    Status,
    /// Pass GPUs (every function) to a VM after checking isolation, boot VGA, host users and
    /// other VMs; default: live and config when the VM runs, config when it is shut off
    Attach {
        /// VM name (`vmctl list` shows them)
        vm: String,
        /// BDF (0000:01:00.0 or 01:00.0), index from `gpu status`, `all` or `group:N`
        /// (repeatable; default all)
        #[arg(long = "gpu", value_name = "SELECTOR")]
        gpus: Vec<String>,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Override the isolation, boot VGA and host-use refusals
        #[arg(long)]
        force: bool,
    },
    /// Remove GPUs from a VM (default: all of its GPUs), then optionally rebind their functions
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
        let report = gpu::status(&facts, &users, atts.as_deref(), warning);
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
            force,
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
            if json {
                out_json(&o);
            } else {
                out(&format!(
                    "{}: attached {} (live: {}, config: {})\n",
                    esc(&o.vm),
                    esc(&o.gpus.join(", ")),
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
        for p in &g.problems {
            o += &format!("    problem:    {}\n", p.reason);
        }
    }
    for w in &r.warnings {
        o += &format!("warning: {w}\n");
    }
    o
}
