//! `vmctl gpu …`: arguments (clap) and rendering; the work is in `vmctl::commands::gpu`.

use clap::{Args, Subcommand, ValueEnum};
use hostio::{HostRoot, SystemRunner};
use hypervisor::Libvirt;
use vmctl::Error;
use vmctl::commands::Ctx;
use vmctl::commands::gpu::{self, AttachRequest, DetachRequest, Rebind, Scope};
use vmctl::config::Config;

use super::{esc, out, out_json};

#[derive(Debug, Subcommand)]
pub enum GpuCommand {
    /// One entry per NVIDIA GPU: functions and drivers, IOMMU group and isolation, boot VGA,
    /// reset, the VM holding it, vGPU/MIG capability, and what `attach` would refuse
    Status,
    /// Pass GPUs (every function) to a VM after checking isolation, boot VGA, host users and
    /// other VMs; default: live and config when the VM runs, config when it is shut off
    Attach {
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
            out(&clikit::escape_text(&gpu::render_status(&report)));
        }
        return Ok(());
    }
    let hv = Libvirt::open(config.connect())?;
    let ctx = Ctx {
        config,
        host,
        runner: &SystemRunner,
        hv: &hv,
        env: &super::env,
    };
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
