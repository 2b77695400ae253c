//! `gpu-vm-bootstrap`: parses arguments, calls the library, renders the result.

#![forbid(unsafe_code)]

mod facts_view;

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use clikit::{out, outln};
use gpu_vm_bootstrap::{
    Applier, Error as LibError, GpuMode, HostState, Level, Log, Options, Refusal, RepoUrls, Skips,
    VmctlSource, Watchdog,
};
use hostio::{HostRoot, SystemRunner, paths};

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
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    args: GlobalArgs,
    /// `apply`'s flags, also taken without a subcommand (then `apply` runs).
    #[command(flatten)]
    apply: ApplyArgs,
}

/// The flags only `apply` takes: not global, so `detect --yes` is a usage error.
#[derive(Debug, Clone, Copy, Default, Args)]
struct ApplyArgs {
    /// Print the plan and stop (the same as `plan`).
    #[arg(long)]
    dry_run: bool,

    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,

    /// Reboot at the end when a reboot is needed.
    #[arg(long, conflicts_with = "dry_run")]
    reboot: bool,
}

impl ApplyArgs {
    fn any(&self) -> bool {
        self.dry_run || self.yes || self.reboot
    }

    fn or(self, other: Self) -> Self {
        Self {
            dry_run: self.dry_run || other.dry_run,
            yes: self.yes || other.yes,
            reboot: self.reboot || other.reboot,
        }
    }
}

/// The heading of the options every subcommand takes, apart from a subcommand's own.
const GLOBAL: &str = "Global options";

#[derive(Debug, Args)]
struct GlobalArgs {
    /// passthrough: selected GPUs go to VMs (vfio-pci at boot); host: driver + CUDA on the host;
    /// none: no GPU work.
    #[arg(long, global = true, help_heading = GLOBAL, value_enum, default_value = "passthrough")]
    gpu_mode: GpuModeArg,

    /// GPUs to reserve for VMs (repeatable; as `vmctl --gpu`): BDF (0000:01:00.0 or 01:00.0),
    /// index from `vmctl gpu status`, `all` or `group:N`. Default: every isolated NVIDIA GPU
    /// that is not the boot VGA device
    #[arg(long = "gpu", global = true, help_heading = GLOBAL, value_name = "SELECTOR")]
    gpus: Vec<String>,

    /// Install the NVIDIA driver on the host even when every GPU goes to VMs.
    #[arg(long, global = true, help_heading = GLOBAL, conflicts_with = "skip_nvidia")]
    host_driver: bool,

    /// Skip the NVIDIA phase (driver, CUDA toolkit, container toolkit).
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    skip_nvidia: bool,
    /// Skip the KVM phase (QEMU/libvirt packages, libvirtd, groups).
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    skip_kvm: bool,
    /// Skip the IOMMU/VFIO phase (kernel args, vfio-pci binding).
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    skip_iommu: bool,
    /// Skip the bridge phase (leave the network config alone).
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    skip_bridge: bool,
    /// Skip installing vmctl and its default config.
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    skip_vmctl: bool,

    /// Name of the bridge VMs attach to.
    #[arg(long, global = true, help_heading = GLOBAL, default_value = "br0", value_name = "NAME")]
    bridge_name: String,

    /// NIC the bridge takes over. Default: the NIC with the default route.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        value_name = "IFACE",
        conflicts_with = "skip_bridge"
    )]
    bridge_iface: Option<String>,

    /// Go ahead despite overridable refusals (boot VGA GPU, shared IOMMU group, unknown distro).
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    force: bool,

    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true, help_heading = GLOBAL, help_heading = GLOBAL)]
    json: bool,

    /// More logging on stderr: -v info, -vv debug (GVB_LOG=<filter> overrides).
    #[arg(short, long, global = true, help_heading = GLOBAL, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Log file [default: /var/log/gpu-vm-bootstrap.log, inside DIR with --host-root].
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "PATH")]
    log_file: Option<PathBuf>,

    /// Treat DIR as the host's `/`: every /sys, /proc, /etc path is read (and written) under it,
    /// and commands are listed as skipped instead of run.
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "DIR", env = "GVB_HOST_ROOT")]
    host_root: Option<PathBuf>,

    /// Use these host facts (JSON from `detect --json`) instead of detecting them.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, value_name = "FILE")]
    facts: Option<PathBuf>,

    /// Install vmctl from this file instead of looking next to this binary.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, value_name = "FILE")]
    vmctl_from: Option<PathBuf>,

    /// Bridge watchdog: number of checks, and seconds between them.
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, default_value_t = 15)]
    watchdog_tries: u32,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, default_value_t = 2)]
    watchdog_interval: u64,

    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CUDA_KEYRING_URL")]
    cuda_keyring_url: Option<String>,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CONTAINER_GPGKEY_URL")]
    container_gpgkey_url: Option<String>,
    #[arg(long, global = true, help_heading = GLOBAL, hide = true, env = "GVB_CONTAINER_REPO_URL")]
    container_repo_url: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GpuModeArg {
    Passthrough,
    Host,
    None,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what apply would change (diffs grouped by phase); change nothing.
    Plan,
    /// Plan, confirm, then apply (the default).
    Apply(ApplyArgs),
    /// After the reboot: check every phase's outcome (✓/✗ with fix hints).
    Verify,
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
    fn name(&self) -> &'static str {
        match self {
            Self::Plan => "plan",
            Self::Apply(_) => "apply",
            Self::Verify => "verify",
            Self::Rollback { .. } => "rollback",
            Self::Detect { .. } => "detect",
            Self::Docs(_) => "completions",
        }
    }
}

/// A failure to report: the error chain, `help:` lines and the exit code.
struct Failure {
    code: u8,
    message: String,
    help: Vec<String>,
    causes: Vec<String>,
    /// For `--json`: the problems a plan was refused for (boxed: `Failure` is every `Err`).
    details: Option<Box<serde_json::Value>>,
}

impl Failure {
    fn usage(message: impl Into<String>, help: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
            causes: Vec::new(),
            help: vec![help.into()],
            details: None,
        }
    }

    /// The report both binaries print (clikit): exit 2 refused, 130 interrupted, else failed.
    fn report(self) -> clikit::ErrorReport {
        let kind = match self.code {
            2 => clikit::ErrorKind::Refused,
            130 => clikit::ErrorKind::Interrupted,
            _ => clikit::ErrorKind::Failed,
        };
        let mut r = clikit::ErrorReport::new(kind, self.message);
        r.causes = self.causes;
        r.help = self.help;
        r.details = self.details.map(|d| *d);
        r
    }
}

/// The error's sources, outermost first: the `caused by:` lines.
fn causes(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push(c.to_string());
        cur = c.source();
    }
    out
}

impl From<LibError> for Failure {
    fn from(e: LibError) -> Self {
        let help = match &e {
            LibError::Refused(_) => vec![],
            LibError::Command { .. } => vec![
                "fix the cause above, then run `sudo gpu-vm-bootstrap apply` again: it continues where it stopped".into(),
            ],
            LibError::BridgeReverted { .. } => vec![
                "the old network config is back; `sudo gpu-vm-bootstrap plan` shows the bridge config that failed its check (check the gateway and the NIC it names)".into(),
                "or run again with --skip-bridge to leave the network as it is".into(),
            ],
            LibError::NothingToRollBack { .. } => vec!["there is nothing to undo".into()],
            _ => vec![
                "check the path's permissions and free space, then run again (files already written stay consistent)".into(),
            ],
        };
        Self {
            code: 1,
            message: e.to_string(),
            causes: causes(&e),
            help,
            details: None,
        }
    }
}

/// The typed `details` of a refusal in `--json` output.
#[derive(serde::Serialize)]
struct RefusalDetails<'a> {
    problems: &'a [gpu_vm_bootstrap::Problem],
}

fn refusal(r: &Refusal) -> Failure {
    let mut msg = String::from("refusing to continue:");
    let mut help = Vec::new();
    for p in &r.problems {
        msg.push_str(&format!("\n  - [{}] {}", p.phase.name(), p.message));
        help.push(if p.forceable && !p.help.contains("--force") {
            format!("{} (or --force)", p.help)
        } else {
            p.help.clone()
        });
    }
    Failure {
        code: 2,
        message: msg,
        causes: Vec::new(),
        help,
        details: serde_json::to_value(RefusalDetails {
            problems: &r.problems,
        })
        .ok()
        .map(Box::new),
    }
}

/// Timestamped log lines to stderr (coloured on a TTY) and to the log file.
struct Logger {
    file: Option<Mutex<File>>,
    color: bool,
}

impl Logger {
    fn open(path: Option<PathBuf>) -> Self {
        let file = path.and_then(|p| {
            if let Some(dir) = p.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            match OpenOptions::new().create(true).append(true).open(&p) {
                Ok(f) => Some(Mutex::new(f)),
                Err(e) => {
                    clikit::errln(&format!(
                        "warning: cannot open log file {}: {e}",
                        p.display()
                    ));
                    None
                }
            }
        });
        Self {
            file,
            color: std::io::stderr().is_terminal(),
        }
    }
}

impl Log for Logger {
    fn log(&self, level: Level, msg: &str) {
        let ts = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let (name, colour) = match level {
            Level::Info => ("INFO", "\x1b[32m"),
            Level::Warn => ("WARN", "\x1b[33m"),
            Level::Error => ("ERROR", "\x1b[31m"),
        };
        if self.color {
            clikit::errln(&format!("{ts} {colour}{name}\x1b[0m {msg}"));
        } else {
            clikit::errln(&format!("{ts} {name} {msg}"));
        }
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
        {
            let _ = writeln!(f, "{ts} {name} {msg}");
        }
    }
}

fn is_root() -> bool {
    // /proc/self belongs to the effective uid of the process reading it.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn options(a: &GlobalArgs, reboot: bool) -> Options {
    // apt-get takes a .deb only by a path (see phases::vmctl::install_deb); make it absolute so
    // the plan names the same file whatever directory apply runs in.
    let from = a
        .vmctl_from
        .as_ref()
        .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
    let vmctl_source = match &from {
        Some(p) if p.extension().is_some_and(|e| e == "deb") => VmctlSource::Deb(p.clone()),
        Some(p) => VmctlSource::Binary(p.clone()),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(VmctlSource::find_in))
            .unwrap_or(VmctlSource::Missing),
    };
    let mut urls = RepoUrls::default();
    if let Some(u) = &a.cuda_keyring_url {
        urls.cuda_keyring_deb = u.clone();
    }
    if let Some(u) = &a.container_gpgkey_url {
        urls.container_gpgkey = u.clone();
    }
    if let Some(u) = &a.container_repo_url {
        urls.container_repo = u.clone();
    }
    Options {
        gpu_mode: match a.gpu_mode {
            GpuModeArg::Passthrough => GpuMode::Passthrough,
            GpuModeArg::Host => GpuMode::Host,
            GpuModeArg::None => GpuMode::None,
        },
        gpus: a.gpus.clone(),
        host_driver: a.host_driver,
        skip: Skips {
            nvidia: a.skip_nvidia,
            kvm: a.skip_kvm,
            iommu: a.skip_iommu,
            bridge: a.skip_bridge,
            vmctl: a.skip_vmctl,
        },
        bridge_name: a.bridge_name.clone(),
        bridge_iface: a.bridge_iface.clone(),
        force: a.force,
        reboot,
        invoking_user: std::env::var("SUDO_USER").ok().filter(|u| !u.is_empty()),
        vmctl_source,
        urls,
    }
}

fn facts(a: &GlobalArgs, root: &HostRoot) -> Result<hwdetect::HostFacts, Failure> {
    match &a.facts {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| {
                Failure::usage(
                    format!("cannot read facts file {}: {e}", p.display()),
                    "pass a file written by `gpu-vm-bootstrap detect --json`",
                )
            })?;
            serde_json::from_str(&text).map_err(|e| {
                Failure::usage(
                    format!("facts file {} is not valid: {e}", p.display()),
                    "pass a file written by `gpu-vm-bootstrap detect --json`",
                )
            })
        }
        None => Ok(hwdetect::detect(root)),
    }
}

fn confirm(yes: bool, what: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            format!("refusing to {what} without confirmation: stdin is not a terminal"),
            "review the plan above, then pass --yes",
        ));
    }
    clikit::err(&format!("{what}? [y/N] "));
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    if matches!(line.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Failure::usage(
            "cancelled, nothing changed",
            "pass --yes to skip the question",
        ))
    }
}

fn need_root(root: &HostRoot, what: &str) -> Result<(), Failure> {
    if root.is_system() && !is_root() {
        return Err(Failure::usage(
            format!("{what} changes the host and needs root"),
            format!("run `sudo gpu-vm-bootstrap {what}`, or `gpu-vm-bootstrap plan` to only look"),
        ));
    }
    Ok(())
}

fn log_path(a: &GlobalArgs, root: &HostRoot) -> PathBuf {
    a.log_file
        .clone()
        .unwrap_or_else(|| root.path(paths::BOOTSTRAP_LOG))
}

fn run(cli: Cli) -> Result<ExitCode, Failure> {
    if let Some(Command::Docs(d)) = &cli.command {
        return Ok(d.run(Cli::command()));
    }
    let a = &cli.args;
    let root = a.host_root.clone().map(HostRoot::new).unwrap_or_default();
    if let Some(dir) = &a.host_root
        && !dir.is_dir()
    {
        return Err(Failure::usage(
            format!("--host-root {}: not a directory", dir.display()),
            "pass a directory that stands in for the host's /",
        ));
    }
    // Without a subcommand, apply runs and takes apply's flags; before another subcommand
    // they would be ignored, so they are refused like any unknown flag.
    let command = match cli.command {
        None => Command::Apply(cli.apply),
        Some(Command::Apply(own)) => Command::Apply(own.or(cli.apply)),
        Some(Command::Rollback { yes }) if !cli.apply.dry_run && !cli.apply.reboot => {
            Command::Rollback {
                yes: yes || cli.apply.yes,
            }
        }
        Some(other) if cli.apply.any() => {
            return Err(Failure::usage(
                format!(
                    "--dry-run, --yes and --reboot belong to `apply`, not to `{}`",
                    other.name()
                ),
                "put them after `apply` (`gpu-vm-bootstrap apply --yes`), or leave them out",
            ));
        }
        Some(other) => other,
    };
    tracing::debug!(?command, host_root = ?a.host_root, "start");
    match command {
        Command::Docs(d) => Ok(d.run(Cli::command())),
        Command::Detect { capture } => detect(a, &root, capture),
        Command::Verify => {
            let f = facts(a, &root)?;
            let opts = options(a, false);
            let state = HostState::read(&root, &opts);
            let runner = SystemRunner;
            let live: Option<&dyn hostio::CommandRunner> = root
                .is_system()
                .then_some(&runner as &dyn hostio::CommandRunner);
            let report = gpu_vm_bootstrap::verify(&f, &opts, &state, live);
            if a.json {
                outln(&serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                out(&report.render());
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Rollback { yes } => {
            need_root(&root, "rollback")?;
            confirm(yes, "Restore the files of the last apply")?;
            let log = Logger::open(Some(log_path(a, &root)));
            let runner = SystemRunner;
            let applier = Applier::new(&root, &runner, &log);
            let report = applier.rollback()?;
            if a.json {
                outln(&serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                let mut s = format!(
                    "rolled back run {}: {} file(s) restored, {} removed\n",
                    report.run_id,
                    report.files_restored.len(),
                    report.files_removed.len()
                );
                for k in &report.files_kept {
                    s += &format!(
                        "  {} was changed after apply: your version is kept as {}\n",
                        k.path, k.copy
                    );
                }
                for c in &report.commands_skipped {
                    s += &format!("  skipped (host root): {}\n", c.join(" "));
                }
                out(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan | Command::Apply(_) => {
            let apply = match command {
                Command::Apply(x) => x,
                _ => ApplyArgs::default(),
            };
            let dry = matches!(command, Command::Plan) || apply.dry_run;
            let f = facts(a, &root)?;
            let opts = options(a, apply.reboot);
            tracing::debug!(?opts, "options");
            let state = HostState::read(&root, &opts);
            let mut plan = gpu_vm_bootstrap::plan(&f, &opts, &state).map_err(|r| refusal(&r))?;
            // netplan itself must accept the network config before it is offered.
            if let Some(w) = gpu_vm_bootstrap::netcheck::check(&plan, &root, &SystemRunner)
                .map_err(|r| refusal(&r))?
            {
                plan.warnings.push(w);
            }
            if dry {
                if a.json {
                    outln(&plan.to_json());
                } else {
                    out(&plan.render());
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !a.json {
                out(&plan.render());
            }
            let pending = gpu_vm_bootstrap::apply::pending_commands(&root);
            if !pending.is_empty() && !a.json {
                let mut s =
                    String::from("An earlier apply was interrupted; these commands run first:\n");
                for c in &pending {
                    s += &format!("  {}\n", c.join(" "));
                }
                out(&s);
            }
            if plan.is_empty() && pending.is_empty() {
                if a.json {
                    outln(&serde_json::json!({"plan": plan, "result": null}).to_string());
                }
                return Ok(ExitCode::SUCCESS);
            }
            need_root(&root, "apply")?;
            confirm(
                apply.yes,
                &format!(
                    "Apply these {} action(s)",
                    plan.actions.len() + pending.len()
                ),
            )?;
            let log = Logger::open(Some(log_path(a, &root)));
            let runner = SystemRunner;
            let mut applier = Applier::new(&root, &runner, &log);
            applier.watchdog = Watchdog {
                tries: a.watchdog_tries,
                interval: Duration::from_secs(a.watchdog_interval),
            };
            let report = applier.apply(&plan)?;
            if a.json {
                let v = serde_json::json!({"plan": plan, "result": report});
                outln(&serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let mut s = format!(
                    "applied: {} file(s) written, {} command(s) run, {} skipped\n",
                    report.files_written.len(),
                    report.commands_run.len(),
                    report.commands_skipped.len()
                );
                if plan.reboot_required && !apply.reboot {
                    s += "reboot required; afterwards run `gpu-vm-bootstrap verify`\n";
                }
                out(&s);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn detect(a: &GlobalArgs, root: &HostRoot, capture: Option<PathBuf>) -> Result<ExitCode, Failure> {
    if let Some(out) = capture {
        let n = hwdetect::capture(root, &out).map_err(|e| Failure {
            code: 1,
            message: e.to_string(),
            causes: causes(&e),
            help: vec!["check that the output directory exists and is writable".into()],
            details: None,
        })?;
        clikit::errln(&format!("wrote {n} entries to {}", out.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let facts = hwdetect::detect(root);
    if a.json {
        outln(&serde_json::to_string_pretty(&facts).unwrap_or_default());
    } else {
        out(&facts_view::render(&facts));
    }
    for w in &facts.warnings {
        clikit::errln(&format!("warning: {w}"));
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    clikit::init_logging(cli.args.verbose, "GVB_LOG");
    let json = cli.args.json;
    match run(cli) {
        Ok(code) => code,
        Err(f) => f.report().print("gpu-vm-bootstrap", json),
    }
}
