//! gpu-vm-bootstrap's command line: the clap definitions. Global options (logging, the host
//! root, `--json`) go with every subcommand; the planning flags only with `plan`, `apply` and
//! `verify`; `--dry-run`, `--yes` and `--reboot` only with `apply`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Prepare an Ubuntu 24.04 host with NVIDIA GPUs as a GPU VM host.
///
/// Phases: preflight, NVIDIA driver/CUDA/container toolkit, KVM/libvirt, IOMMU/VFIO, br0 bridge,
/// vmctl. Every change is planned first and shown as a diff; nothing is changed by `plan`.
/// Without a subcommand, `apply` runs.
#[derive(Debug, Parser)]
#[command(
    name = "gpu-vm-bootstrap",
    version = env!("GVB_BUILD_VERSION"),
    about,
    long_about,
    after_help = clikit::EXIT_CODES
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) args: GlobalArgs,
    /// The planning flags, also taken without a subcommand (then `apply` runs).
    #[command(flatten)]
    pub(crate) plan: PlanArgs,
    /// `apply`'s flags, also taken without a subcommand (then `apply` runs).
    #[command(flatten)]
    pub(crate) apply: ApplyArgs,
}

/// The flags only `apply` takes: not global, so `detect --yes` is a usage error.
#[derive(Debug, Clone, Copy, Default, Args)]
pub(crate) struct ApplyArgs {
    /// Print the plan and stop (the same as `plan`).
    #[arg(long)]
    pub(crate) dry_run: bool,

    /// Do not ask for confirmation.
    #[arg(long)]
    pub(crate) yes: bool,

    /// Reboot at the end when a reboot is needed.
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) reboot: bool,
}

impl ApplyArgs {
    pub(crate) fn any(&self) -> bool {
        self.dry_run || self.yes || self.reboot
    }

    pub(crate) fn or(self, other: Self) -> Self {
        Self {
            dry_run: self.dry_run || other.dry_run,
            yes: self.yes || other.yes,
            reboot: self.reboot || other.reboot,
        }
    }
}

/// The heading of the planning flags: `plan`, `apply` (also without a subcommand) and `verify`
/// take them; `detect`, `rollback` and `completions` do not.
const PLAN: &str = "Plan options";

/// What the plan is made for. Not global: `detect --skip-kvm` is a usage error, not ignored.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct PlanArgs {
    /// passthrough: selected GPUs go to VMs (vfio-pci at boot); host: driver + CUDA on the host;
    /// none: no GPU work [default: passthrough]
    #[arg(long, help_heading = PLAN, value_enum)]
    pub(crate) gpu_mode: Option<GpuModeArg>,

    /// GPUs to reserve for VMs (repeatable; as `vmctl --gpu`): BDF (0000:01:00.0 or 01:00.0),
    /// index from `vmctl gpu status`, `all` or `group:N`. Default: every isolated NVIDIA GPU
    /// that is not the boot VGA device
    #[arg(long = "gpu", help_heading = PLAN, value_name = "SELECTOR")]
    pub(crate) gpus: Vec<String>,

    /// Install the NVIDIA driver on the host even when every GPU goes to VMs.
    #[arg(long, help_heading = PLAN, conflicts_with = "skip_nvidia")]
    pub(crate) host_driver: bool,

    /// Skip the NVIDIA phase (driver, CUDA toolkit, container toolkit).
    #[arg(long, help_heading = PLAN)]
    pub(crate) skip_nvidia: bool,
    /// Skip the KVM phase (QEMU/libvirt packages, libvirtd, groups).
    #[arg(long, help_heading = PLAN)]
    pub(crate) skip_kvm: bool,
    /// Skip the IOMMU/VFIO phase (kernel args, vfio-pci binding).
    #[arg(long, help_heading = PLAN)]
    pub(crate) skip_iommu: bool,
    /// Skip the bridge phase (leave the network config alone).
    #[arg(long, help_heading = PLAN)]
    pub(crate) skip_bridge: bool,
    /// Skip installing vmctl and its default config.
    #[arg(long, help_heading = PLAN)]
    pub(crate) skip_vmctl: bool,

    /// Name of the bridge VMs attach to [default: br0]
    #[arg(long, help_heading = PLAN, value_name = "NAME")]
    pub(crate) bridge_name: Option<String>,

    /// NIC the bridge takes over. Default: the NIC with the default route.
    #[arg(
        long,
        help_heading = PLAN,
        value_name = "IFACE",
        conflicts_with = "skip_bridge"
    )]
    pub(crate) bridge_iface: Option<String>,

    /// Go ahead despite overridable refusals (boot VGA GPU, shared IOMMU group, unknown distro).
    #[arg(long, help_heading = PLAN)]
    pub(crate) force: bool,

    /// Reserve N hugepages of SIZE (1G or 2M) at boot: adds `default_hugepagesz=SIZE
    /// hugepagesz=SIZE hugepages=N` to the kernel command line with the IOMMU args (for `vmctl
    /// create --hugepages`). Refused above 90% of MemTotal unless --force
    #[arg(
        long,
        help_heading = PLAN,
        value_name = "SIZE:N",
        value_parser = parse_hugepages,
        conflicts_with = "skip_iommu"
    )]
    pub(crate) hugepages: Option<gpu_vm_bootstrap::Hugepages>,
}

fn parse_hugepages(s: &str) -> Result<gpu_vm_bootstrap::Hugepages, String> {
    gpu_vm_bootstrap::Hugepages::parse(s)
}

impl PlanArgs {
    /// The planning flags given, as typed (`--gpu-mode`), for a refusal that names them.
    pub(crate) fn given(&self) -> Vec<&'static str> {
        [
            (self.gpu_mode.is_some(), "--gpu-mode"),
            (!self.gpus.is_empty(), "--gpu"),
            (self.host_driver, "--host-driver"),
            (self.skip_nvidia, "--skip-nvidia"),
            (self.skip_kvm, "--skip-kvm"),
            (self.skip_iommu, "--skip-iommu"),
            (self.skip_bridge, "--skip-bridge"),
            (self.skip_vmctl, "--skip-vmctl"),
            (self.bridge_name.is_some(), "--bridge-name"),
            (self.bridge_iface.is_some(), "--bridge-iface"),
            (self.force, "--force"),
            (self.hugepages.is_some(), "--hugepages"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect()
    }

    /// These flags, with `other`'s (given before the subcommand) where these leave one unset.
    pub(crate) fn or(self, other: Self) -> Self {
        Self {
            gpu_mode: self.gpu_mode.or(other.gpu_mode),
            gpus: if self.gpus.is_empty() {
                other.gpus
            } else {
                self.gpus
            },
            host_driver: self.host_driver || other.host_driver,
            skip_nvidia: self.skip_nvidia || other.skip_nvidia,
            skip_kvm: self.skip_kvm || other.skip_kvm,
            skip_iommu: self.skip_iommu || other.skip_iommu,
            skip_bridge: self.skip_bridge || other.skip_bridge,
            skip_vmctl: self.skip_vmctl || other.skip_vmctl,
            bridge_name: self.bridge_name.or(other.bridge_name),
            bridge_iface: self.bridge_iface.or(other.bridge_iface),
            force: self.force || other.force,
            hugepages: self.hugepages.or(other.hugepages),
        }
    }
}

/// The heading of the options every subcommand takes, apart from a subcommand's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Args)]
pub(crate) struct GlobalArgs {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    pub(crate) json: bool,

    /// More logging on stderr: -v info, -vv debug (GVB_LOG=<filter> overrides).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Log file [default: /var/log/gpu-vm-bootstrap.log, inside DIR with --host-root].
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    pub(crate) log_file: Option<PathBuf>,

    /// Treat DIR as the host's `/`: every /sys, /proc, /etc path is read (and written) under it,
    /// and commands are listed as skipped instead of run.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR", env = "GVB_HOST_ROOT")]
    pub(crate) host_root: Option<PathBuf>,

    /// Use these host facts (JSON from `detect --json`) instead of detecting them.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, value_name = "FILE")]
    pub(crate) facts: Option<PathBuf>,

    /// Install vmctl from this file instead of looking next to this binary.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, value_name = "FILE")]
    pub(crate) vmctl_from: Option<PathBuf>,

    /// Bridge watchdog: number of checks, and seconds between them.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, default_value_t = 15)]
    pub(crate) watchdog_tries: u32,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, default_value_t = 2)]
    pub(crate) watchdog_interval: u64,

    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CUDA_KEYRING_URL")]
    pub(crate) cuda_keyring_url: Option<String>,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CONTAINER_GPGKEY_URL")]
    pub(crate) container_gpgkey_url: Option<String>,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CONTAINER_REPO_URL")]
    pub(crate) container_repo_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum GpuModeArg {
    Passthrough,
    Host,
    None,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print what apply would change (diffs grouped by phase); change nothing.
    Plan(PlanArgs),
    /// Plan, confirm, then apply (the default).
    Apply {
        #[command(flatten)]
        apply: ApplyArgs,
        #[command(flatten)]
        plan: PlanArgs,
    },
    /// After the reboot: check every phase's outcome (✓/✗ with fix hints).
    Verify(PlanArgs),
    /// Restore the files of the last apply from the backup store and re-run what depends on them.
    ///
    /// A file changed since apply wrote it is never discarded: its current version is kept next
    /// to it as FILE.gpu-vm-bootstrap-user-edit-TIME (mode 0600), named in the output, before the
    /// original is restored.
    Rollback {
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print the host facts: OS, CPU, KVM, IOMMU groups, GPUs and their isolation, NICs.
    Detect {
        /// Write exactly the files detection reads to FILE.tar.gz (for bug reports and fixtures).
        #[arg(long, value_name = "FILE.tar.gz")]
        capture: Option<PathBuf>,
    },
    #[command(flatten)]
    Docs(clikit::DocsCommand),
}

impl Command {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Plan(_) => "plan",
            Self::Apply { .. } => "apply",
            Self::Verify(_) => "verify",
            Self::Rollback { .. } => "rollback",
            Self::Detect { .. } => "detect",
            Self::Docs(_) => "completions",
        }
    }
}
