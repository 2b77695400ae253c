//! The pure planner: `(HostFacts, Options, HostState) -> Plan`, or a [`Refusal`] with reasons.
//! Each phase lives in [`crate::phases`]; this module holds what they share: GPU selection,
//! the refusal rules, and the "write only when different" helper that makes plans idempotent.

use hwdetect::{Gpu, HostFacts};
use serde::Serialize;

use crate::options::{GpuMode, Options, check_ifname};
use crate::phases;
use crate::plan::{Action, ActionKind, Phase, Plan};
use crate::state::HostState;

/// One reason to refuse, with the concrete next step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub phase: Phase,
    pub message: String,
    pub help: String,
    /// `--force` turns this refusal into a warning.
    pub forceable: bool,
}

/// The planner refused: nothing may be changed. The binary exits 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("refused: {}", .problems.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))]
pub struct Refusal {
    pub problems: Vec<Problem>,
}

/// Which GPUs go to VMs and which stay with the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection<'f> {
    pub passthrough: Vec<&'f Gpu>,
    pub host: Vec<&'f Gpu>,
}

/// Splits the NVIDIA GPUs by mode and `--gpu`, whose values are `vmctl`'s selectors (full or
/// short BDF, index from `gpu status`, `all`, `group:N`; [`passthrough::parse_selectors`]).
/// Without `--gpu`, passthrough takes [`passthrough::default_set`]: isolated GPUs that are not
/// the boot VGA device. Returns the selection, the `--gpu` errors, and why GPUs were left out of
/// the default set.
pub fn select_gpus<'f>(
    facts: &'f HostFacts,
    opts: &Options,
) -> (
    Selection<'f>,
    Vec<passthrough::Error>,
    Vec<passthrough::Refusal>,
) {
    let mut sel = Selection::default();
    let mut errors = Vec::new();
    let mut excluded = Vec::new();
    let mut to_vm: Vec<&Gpu> = Vec::new();
    if opts.gpu_mode == GpuMode::Passthrough {
        match passthrough::parse_selectors(&opts.gpus)
            .and_then(|s| passthrough::select(facts, &s, None, &[]))
        {
            Ok(gpus) => to_vm = gpus,
            Err(passthrough::Error::NothingQualifies { excluded: why }) => excluded = why,
            Err(e) => errors.push(e),
        }
        if opts.gpus.is_empty() {
            let (_, why) = passthrough::default_set(facts, None, &[]);
            excluded = why;
        }
    }
    for g in &facts.gpus {
        if to_vm.iter().any(|v| v.bdf == g.bdf) {
            sel.passthrough.push(g);
        } else {
            sel.host.push(g);
        }
    }
    (sel, errors, excluded)
}

/// Planning state shared by the phases.
#[derive(Debug)]
pub struct Planner<'a> {
    pub facts: &'a HostFacts,
    pub opts: &'a Options,
    pub state: &'a HostState,
    pub sel: Selection<'a>,
    pub actions: Vec<Action>,
    pub warnings: Vec<String>,
    pub problems: Vec<Problem>,
    pub reboot_reasons: Vec<String>,
    pub manual_steps: Vec<String>,
    pub notes: Vec<String>,
}

impl<'a> Planner<'a> {
    pub fn push(&mut self, phase: Phase, kind: ActionKind, reason: impl Into<String>) {
        self.actions.push(Action {
            phase,
            kind,
            reason: reason.into(),
        });
    }

    /// Plans a write of `content` to `path` unless the file already has exactly that content and
    /// mode. Returns whether a write was planned.
    pub fn write_file(
        &mut self,
        phase: Phase,
        path: &str,
        mode: u32,
        content: String,
        reason: impl Into<String>,
    ) -> bool {
        let old = self.state.file(path);
        if old.is_some_and(|f| f.content == content && f.mode == mode) {
            return false;
        }
        self.push(
            phase,
            ActionKind::WriteFile {
                path: path.to_string(),
                mode,
                content,
                old_content: old.map(|f| f.content.clone()),
            },
            reason,
        );
        true
    }

    pub fn run(&mut self, phase: Phase, argv: &[&str], reason: impl Into<String>) {
        self.push(
            phase,
            ActionKind::RunCommand {
                argv: argv.iter().map(|s| s.to_string()).collect(),
            },
            reason,
        );
    }

    /// Plans `apt-get install` for the packages that are not installed yet.
    pub fn install_packages(&mut self, phase: Phase, pkgs: &[&str], reason: impl Into<String>) {
        let missing: Vec<String> = pkgs
            .iter()
            .filter(|p| !self.state.has_package(p))
            .map(|p| p.to_string())
            .collect();
        if missing.is_empty() {
            return;
        }
        // No debconf questions: the run must not stall on a prompt (debconf(7)).
        let mut argv: Vec<String> = [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(missing.iter().cloned());
        self.push(
            phase,
            ActionKind::InstallPackages {
                packages: missing,
                argv,
            },
            reason,
        );
    }

    pub fn problem(&mut self, phase: Phase, forceable: bool, message: String, help: String) {
        self.problems.push(Problem {
            phase,
            message,
            help,
            forceable,
        });
    }

    pub fn warn(&mut self, msg: impl Into<String>) {
        self.warnings.push(msg.into());
    }

    pub fn needs_reboot(&mut self, why: impl Into<String>) {
        self.reboot_reasons.push(why.into());
    }

    pub fn note(&mut self, msg: impl Into<String>) {
        self.notes.push(msg.into());
    }

    pub fn manual_step(&mut self, step: impl Into<String>) {
        self.manual_steps.push(step.into());
    }
}

/// Builds the plan. Pure: reads nothing but its arguments.
pub fn plan(facts: &HostFacts, opts: &Options, state: &HostState) -> Result<Plan, Refusal> {
    let (sel, gpu_errors, excluded) = select_gpus(facts, opts);
    let mut p = Planner {
        facts,
        opts,
        state,
        sel,
        actions: Vec::new(),
        warnings: Vec::new(),
        problems: Vec::new(),
        reboot_reasons: Vec::new(),
        manual_steps: Vec::new(),
        notes: Vec::new(),
    };
    // The boot VGA device always stayed with the host; a GPU in a shared group is news.
    for r in excluded
        .iter()
        .filter(|r| !matches!(r, passthrough::Refusal::BootVga { .. }))
    {
        p.warn(format!(
            "left on the host (not passed through by default): {}",
            r.reason()
        ));
    }
    let names_ok = check_options(&mut p, &gpu_errors);
    phases::preflight::plan(&mut p);
    if !opts.skip.nvidia {
        phases::nvidia::plan(&mut p);
    }
    if !opts.skip.kvm {
        phases::kvm::plan(&mut p);
    }
    if !opts.skip.iommu {
        phases::iommu::plan(&mut p);
    }
    // Invalid interface names are already refused; the phases that use them would only add
    // follow-on noise.
    if !opts.skip.bridge && names_ok {
        phases::bridge::plan(&mut p);
    }
    if !opts.skip.vmctl && names_ok {
        phases::vmctl::plan(&mut p);
    }
    finish(p)
}

/// Combinations of options that contradict each other, `--gpu` values that name no GPU, and
/// values that cannot go into a file safely. Returns whether the interface names are valid.
fn check_options(p: &mut Planner<'_>, gpu_errors: &[passthrough::Error]) -> bool {
    let mut names_ok = true;
    let o = p.opts;
    for e in gpu_errors {
        let (message, help) = match e {
            passthrough::Error::UnknownSelector { selector, .. } => {
                let known: Vec<&str> = p.facts.gpus.iter().map(|g| g.bdf.as_str()).collect();
                let known = if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                };
                let what = if selector.contains('.') {
                    "no NVIDIA GPU at that address"
                } else {
                    "no NVIDIA GPU matches it"
                };
                (
                    format!("--gpu {selector}: {what} (NVIDIA GPUs here: {known})"),
                    "run `gpu-vm-bootstrap detect` to list the GPUs and pass one of their BDFs"
                        .to_string(),
                )
            }
            other => (
                format!("--gpu: {other}"),
                "a --gpu selector is a BDF (0000:01:00.0 or 01:00.0), an index from \
                 `vmctl gpu status`, `all`, or `group:N`"
                    .to_string(),
            ),
        };
        p.problem(Phase::Preflight, false, message, help);
    }
    if !o.gpus.is_empty() && o.gpu_mode != GpuMode::Passthrough {
        p.problem(
            Phase::Preflight,
            false,
            "--gpu selects GPUs for passthrough, but --gpu-mode is not passthrough".into(),
            "use `--gpu-mode passthrough --gpu BDF`, or drop --gpu".into(),
        );
    }
    if o.host_driver && (o.gpu_mode == GpuMode::None || o.skip.nvidia) {
        p.problem(
            Phase::Preflight,
            false,
            "--host-driver asks for the NVIDIA driver, but --gpu-mode none / --skip-nvidia rule it out".into(),
            "drop --host-driver, or use --gpu-mode passthrough without --skip-nvidia".into(),
        );
    }
    // The names reach netplan's YAML, vmctl's TOML and `ip` argv: check them before any of it.
    for (flag, name) in [
        ("--bridge-name", Some(&o.bridge_name)),
        ("--bridge-iface", o.bridge_iface.as_ref()),
    ] {
        if let Some(name) = name
            && let Err(why) = check_ifname(name)
        {
            names_ok = false;
            p.problem(
                Phase::Preflight,
                false,
                format!("{flag} {name:?} is not a valid interface name: {why}"),
                format!(
                    "pass {flag} a name of 1 to 15 bytes without `/`, `:` or whitespace (the kernel's rules; `ip -br link` lists the interfaces)"
                ),
            );
        }
    }
    // The repository URL becomes a line of an apt sources file: it must stay one line and one
    // field (sources.list(5)).
    if o.urls.container_repo.is_empty()
        || o.urls
            .container_repo
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        p.problem(
            Phase::Preflight,
            false,
            format!(
                "the container toolkit repository URL {:?} is empty or contains whitespace",
                o.urls.container_repo
            ),
            "unset GVB_CONTAINER_REPO_URL, or set it to a URL without spaces".into(),
        );
    }
    if o.bridge_iface.is_some() && o.skip.bridge {
        p.problem(
            Phase::Preflight,
            false,
            "--bridge-iface was given together with --skip-bridge".into(),
            "drop one of --bridge-iface and --skip-bridge".into(),
        );
    }
    names_ok
}

fn finish(mut p: Planner<'_>) -> Result<Plan, Refusal> {
    let force = p.opts.force;
    let (blocking, forced): (Vec<Problem>, Vec<Problem>) = p
        .problems
        .drain(..)
        .partition(|pr| !(force && pr.forceable));
    if !blocking.is_empty() {
        return Err(Refusal { problems: blocking });
    }
    for pr in forced {
        p.warnings.push(format!("forced: {}", pr.message));
    }
    // Package installs need fresh lists; `apt-get update` is also the repo reachability check.
    if p.actions
        .iter()
        .any(|a| matches!(a.kind, ActionKind::InstallPackages { .. }))
    {
        p.actions.insert(
            0,
            Action {
                phase: Phase::Preflight,
                kind: ActionKind::RunCommand {
                    argv: vec!["apt-get".into(), "update".into()],
                },
                reason:
                    "refresh the package lists (also checks that the repositories are reachable)"
                        .into(),
            },
        );
    }
    p.actions.sort_by_key(|a| a.phase);
    let reboot_required = !p.reboot_reasons.is_empty();
    if reboot_required && p.opts.reboot {
        let phase = p.actions.last().map_or(Phase::Iommu, |a| a.phase);
        p.push(
            phase,
            ActionKind::Reboot {
                argv: vec!["systemctl".into(), "reboot".into()],
            },
            "--reboot: activate the new kernel command line, initramfs and drivers",
        );
    }
    Ok(Plan {
        actions: p.actions,
        reboot_required,
        reboot_reasons: p.reboot_reasons,
        warnings: p.warnings,
        manual_steps: p.manual_steps,
        notes: p.notes,
    })
}
