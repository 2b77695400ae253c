//! `gpu-vm-bootstrap`: parses arguments, calls the library, renders the result.

#![forbid(unsafe_code)]

mod cli;
mod facts_view;

use std::fs::{File, OpenOptions};
use std::io::{IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use cli::{ApplyArgs, Cli, Command, GlobalArgs, GpuModeArg, PlanArgs};
use clikit::{out, outln};
use gpu_vm_bootstrap::{
    Applier, Error as LibError, GpuMode, HostState, Level, Log, Options, Refusal, RepoUrls, Skips,
    VmctlSource, Watchdog,
};
use hostio::{HostRoot, SystemRunner, paths};

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
    std::fs::metadata(paths::PROC_SELF).is_ok_and(|m| m.uid() == 0)
}

fn options(a: &GlobalArgs, p: &PlanArgs, reboot: bool) -> Options {
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
        gpu_mode: match p.gpu_mode.unwrap_or(GpuModeArg::Passthrough) {
            GpuModeArg::Passthrough => GpuMode::Passthrough,
            GpuModeArg::Host => GpuMode::Host,
            GpuModeArg::None => GpuMode::None,
        },
        gpus: p.gpus.clone(),
        host_driver: p.host_driver,
        skip: Skips {
            nvidia: p.skip_nvidia,
            kvm: p.skip_kvm,
            iommu: p.skip_iommu,
            bridge: p.skip_bridge,
            vmctl: p.skip_vmctl,
        },
        bridge_name: p.bridge_name.clone().unwrap_or_else(|| "br0".into()),
        bridge_iface: p.bridge_iface.clone(),
        force: p.force,
        hugepages: p.hugepages,
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

/// `apply --json`: the plan and what applying it did (`null` when there was nothing to do).
#[derive(serde::Serialize)]
struct ApplyOutput<'a> {
    plan: &'a gpu_vm_bootstrap::Plan,
    result: Option<&'a gpu_vm_bootstrap::ApplyReport>,
}

/// "Apply these…" as it reads inside a sentence.
fn lowercase_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_lowercase().chain(c).collect())
        .unwrap_or_default()
}

fn confirm(yes: bool, what: &str) -> Result<(), Failure> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::usage(
            format!(
                "refusing to {} without confirmation: stdin is not a terminal",
                lowercase_first(what)
            ),
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
    // Without a subcommand, apply runs and takes apply's and the planning flags; given before
    // a subcommand that does not take them they would be ignored, so they are refused like any
    // unknown flag.
    let (apply_before, plan_before) = (cli.apply, cli.plan);
    let misplaced = |name: &str, flags: Vec<&str>, owners: &str, example: &str| {
        Failure::usage(
            format!(
                "{} {} to {owners}, not to `{name}`",
                flags.join(", "),
                if flags.len() == 1 {
                    "belongs"
                } else {
                    "belong"
                }
            ),
            format!(
                "put them after the subcommand (`gpu-vm-bootstrap {example}`), or leave them out"
            ),
        )
    };
    let apply_flags = |a: &ApplyArgs| {
        [
            (a.dry_run, "--dry-run"),
            (a.yes, "--yes"),
            (a.reboot, "--reboot"),
        ]
        .into_iter()
        .filter_map(|(set, f)| set.then_some(f))
        .collect::<Vec<_>>()
    };
    let command = match cli.command {
        None => Command::Apply {
            apply: apply_before,
            plan: plan_before,
        },
        Some(Command::Apply { apply, plan }) => Command::Apply {
            apply: apply.or(apply_before),
            plan: plan.or(plan_before),
        },
        Some(other) if apply_before.any() && !matches!(other, Command::Rollback { .. }) => {
            return Err(misplaced(
                other.name(),
                apply_flags(&apply_before),
                "`apply`",
                "apply --yes",
            ));
        }
        Some(Command::Rollback { .. }) if apply_before.dry_run || apply_before.reboot => {
            return Err(misplaced(
                "rollback",
                apply_flags(&apply_before),
                "`apply`",
                "apply --yes",
            ));
        }
        Some(Command::Plan(p)) => Command::Plan(p.or(plan_before)),
        Some(Command::Verify(p)) => Command::Verify(p.or(plan_before)),
        Some(other) if !plan_before.given().is_empty() => {
            return Err(misplaced(
                other.name(),
                plan_before.given(),
                "`plan`, `apply` and `verify`",
                "plan --skip-kvm",
            ));
        }
        Some(Command::Rollback { yes }) => Command::Rollback {
            yes: yes || apply_before.yes,
        },
        Some(other) => other,
    };
    tracing::debug!(?command, host_root = ?a.host_root, "start");
    match command {
        Command::Docs(d) => Ok(d.run(Cli::command())),
        Command::Detect { capture } => detect(a, &root, capture),
        Command::Verify(p) => {
            let f = facts(a, &root)?;
            let opts = options(a, &p, false);
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
        Command::Plan(_) | Command::Apply { .. } => {
            let (apply, p, dry) = match command {
                Command::Apply { apply, plan } => (apply, plan, apply.dry_run),
                Command::Plan(p) => (ApplyArgs::default(), p, true),
                _ => unreachable!("matched Plan or Apply"),
            };
            let f = facts(a, &root)?;
            let opts = options(a, &p, apply.reboot);
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
                    outln(
                        &serde_json::to_string(&ApplyOutput {
                            plan: &plan,
                            result: None,
                        })
                        .unwrap_or_default(),
                    );
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
                let v = ApplyOutput {
                    plan: &plan,
                    result: Some(&report),
                };
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
