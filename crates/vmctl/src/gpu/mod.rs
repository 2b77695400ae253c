//! GPU passthrough as `vmctl gpu attach` and `vmctl create --gpu` both do it: the facts
//! (`hwdetect`), the host users and every domain's hostdevs, the selection of GPUs and the
//! group-aware checks (`passthrough`) before libvirt is asked, and the errors of passthrough,
//! with libvirt's own explained in the words of `gpu status` ([`explain`]).

mod explain;
pub mod guest_stack;
pub mod nvswitch;
pub mod vgpu;

use std::collections::BTreeMap;

use hwdetect::{Gpu, HostFacts};
use hypervisor::Hypervisor;
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::{Firmware, PciAddress};
use passthrough::{Attachment, GpuUser, Refusal, Selector};

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
pub use explain::{Explanation, explain};

/// Errors of GPU passthrough (`vmctl gpu`, `create --gpu`); carried by [`Error::Command`].
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("refusing to pass {} to VM `{vm}`:\n{}", plural_gpus(gpus), bullet(refusals.iter().map(Refusal::reason)))]
    Refused {
        vm: String,
        gpus: Vec<String>,
        refusals: Vec<Refusal>,
        /// The flag that overrides a forceable refusal where it was met: `--force` (`gpu
        /// attach`) or `--gpu-force` (`create`).
        force_flag: &'static str,
    },
    #[error("{0}")]
    Select(passthrough::Error),
    #[error("VM `{vm}` has no {} attached", if gpus.is_empty() { "GPU".to_string() } else { plural_gpus(gpus) })]
    NotAttached { vm: String, gpus: Vec<String> },
    #[error("libvirt could not {op} VM `{vm}`:\n{}", bullet(explanation.reasons.iter().cloned()))]
    Explained {
        op: &'static str,
        vm: String,
        explanation: Explanation,
        #[source]
        source: hypervisor::LibvirtError,
    },
    #[error("VM `{vm}` is not running, so nothing can be hot-plugged (--live)")]
    NotRunning { vm: String },
    #[error("VM `{vm}` is transient: it has no persistent config to change (--persistent)")]
    Transient { vm: String },
    #[error("GPU passthrough needs UEFI firmware and a q35 machine; --firmware bios was asked")]
    NeedsUefi,
    #[error("VM `{vm}` has machine type `{machine}`: a GPU's functions need a PCIe (q35) slot")]
    NotQ35 { vm: String, machine: String },
    #[error("rebinding {gpu} to the {target} driver")]
    Rebind {
        gpu: String,
        target: &'static str,
        #[source]
        source: passthrough::Error,
    },
}

fn plural_gpus(gpus: &[String]) -> String {
    match gpus {
        [one] => format!("GPU {one}"),
        many => format!("GPUs {}", many.join(", ")),
    }
}

fn bullet(lines: impl Iterator<Item = String>) -> String {
    lines
        .map(|l| format!("  - {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl CommandFailure for GpuError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Refused { .. }
            | Self::Select(_)
            | Self::NotAttached { .. }
            | Self::NotRunning { .. }
            | Self::Transient { .. }
            | Self::NeedsUefi
            | Self::NotQ35 { .. } => ExitKind::Usage,
            Self::Explained { .. } | Self::Rebind { .. } => ExitKind::Failure,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::Refused {
                refusals,
                force_flag,
                ..
            } => {
                let mut out: Vec<String> = Vec::new();
                for r in refusals {
                    let h = r.help(force_flag);
                    if !out.contains(&h) {
                        out.push(h);
                    }
                }
                if refusals.iter().any(|r| !r.forceable()) {
                    out.push(format!(
                        "{force_flag} overrides only isolation, boot VGA, host-use and NVLink \
                         fabric checks"
                    ));
                }
                out
            }
            Self::Select(passthrough::Error::UnknownSelector { available, .. }) => {
                if available.is_empty() {
                    vec!["this host has no NVIDIA GPU (`vmctl gpu status`)".into()]
                } else {
                    vec![format!(
                        "the GPUs here (`vmctl gpu status`): {}",
                        available.join("; ")
                    )]
                }
            }
            Self::Select(passthrough::Error::NothingQualifies { excluded }) => {
                let mut out = vec![
                    "name the GPUs with `--gpu SELECTOR` (`vmctl gpu status` lists them); the \
                     boot VGA and shared-group refusals can then be overridden with --gpu-force \
                     (create) or --force (gpu attach)"
                        .to_string(),
                ];
                for r in excluded {
                    if matches!(r, Refusal::AttachedElsewhere { .. }) {
                        let h = r.help("--force"); // AttachedElsewhere: no override flag in it
                        if !out.contains(&h) {
                            out.push(h);
                        }
                    }
                }
                out
            }
            Self::Select(_) => vec![
                "a selector is a BDF (0000:01:00.0 or 01:00.0), an index from `vmctl gpu status`, \
                 `all`, or `group:N`"
                    .into(),
            ],
            Self::NotAttached { .. } => {
                vec!["`vmctl gpu status` shows which VM each GPU is attached to".into()]
            }
            Self::Explained { explanation, .. } => explanation.help.clone(),
            Self::NotRunning { vm } => vec![format!(
                "drop --live to change the config for the next boot, or start it: `vmctl start {vm}`"
            )],
            Self::Transient { .. } => vec!["use --live".into()],
            Self::NeedsUefi => vec!["drop --firmware bios: --gpu uses q35 with OVMF".into()],
            Self::NotQ35 { .. } => vec![
                "create the VM with `vmctl create … --gpu` (q35 + UEFI), or use --live for a hot-plug"
                    .into(),
            ],
            Self::Rebind { gpu, .. } => vec![format!(
                "the GPU is detached from the VM but its driver is unchanged; `vmctl gpu status` \
                 shows it, and `echo {gpu} > /sys/bus/pci/drivers_probe` retries the probe"
            )],
        }
    }
}

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// Every PCI function a domain holds, live and in its persistent config.
pub fn attachments(hv: &dyn Hypervisor) -> Result<Vec<Attachment>> {
    let mut map: BTreeMap<(String, String), (bool, bool)> = BTreeMap::new();
    for rec in hv.list()? {
        let live: Vec<PciAddress> = if rec.state.is_active() {
            parse_domain(&rec.xml)?.hostdevs
        } else {
            Vec::new()
        };
        let config: Vec<PciAddress> = if !rec.persistent {
            Vec::new()
        } else if rec.state.is_active() {
            parse_domain(&hv.inactive_xml(&rec.name)?)?.hostdevs
        } else {
            parse_domain(&rec.xml)?.hostdevs
        };
        for a in live {
            map.entry((a.to_string(), rec.name.clone())).or_default().0 = true;
        }
        for a in config {
            map.entry((a.to_string(), rec.name.clone())).or_default().1 = true;
        }
    }
    Ok(map
        .into_iter()
        .map(|((bdf, vm), (live, config))| Attachment {
            bdf,
            vm,
            live,
            config,
        })
        .collect())
}

/// The facts, the host users and the attachments: what every GPU command starts from.
pub fn gather(ctx: &Ctx) -> Result<(HostFacts, Vec<GpuUser>, Vec<Attachment>)> {
    let facts = hwdetect::detect(ctx.host);
    let users = passthrough::host_gpu_users(ctx.host, ctx.runner, &facts);
    let atts = attachments(ctx.hv)?;
    Ok((facts, users, atts))
}

/// Parses `--gpu` values (comma-separated lists allowed) with [`passthrough::parse_selectors`],
/// the grammar `gpu-vm-bootstrap --gpu` shares. An empty value (`--gpu` given alone) adds no
/// selector: the GPUs are then [`passthrough::default_set`]'s.
pub fn parse_selectors(raw: &[String]) -> Result<Vec<Selector>> {
    let raw: Vec<String> = raw
        .iter()
        .filter(|s| !s.trim().is_empty())
        .cloned()
        .collect();
    passthrough::parse_selectors(&raw).map_err(|e| GpuError::Select(e).into())
}

/// The selected GPUs for `vm`; with no selector, the default set of `gpu-vm-bootstrap
/// --gpu-mode passthrough` ([`passthrough::select`]): isolated, not the boot VGA device, not
/// attached to another VM.
pub fn select<'a>(
    facts: &'a HostFacts,
    selectors: &[Selector],
    vm: &str,
    atts: &[Attachment],
) -> Result<Vec<&'a Gpu>> {
    passthrough::select(facts, selectors, Some(vm), atts).map_err(|e| GpuError::Select(e).into())
}

/// A GPU's functions as PCI addresses.
pub fn addresses(gpu: &Gpu) -> Vec<PciAddress> {
    gpu.functions
        .iter()
        .filter_map(|f| f.parse().ok())
        .collect()
}

/// Checks the selection for `vm` and returns the refusals `force` overrode; every other
/// refusal is an error, whose help names `force_flag` (the command's override flag).
pub fn check_selection(
    facts: &HostFacts,
    vm: &str,
    selected: &[&Gpu],
    atts: &[Attachment],
    users: &[GpuUser],
    force: bool,
    force_flag: &'static str,
) -> Result<Vec<String>> {
    let refusals = passthrough::check(facts, selected, Some(vm), atts, users);
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
    Ok(forced.iter().map(Refusal::reason).collect())
}

/// The GPUs' hostdevs for a new domain (`vmctl create --gpu`), one entry per GPU with all its
/// functions, after the same checks as `gpu attach`. Pass each entry to
/// [`hypervisor::domain::DomainSpec::add_pci_device`].
pub fn hostdevs_for_create(
    ctx: &Ctx,
    vm: &str,
    selectors: &[Selector],
    firmware: Firmware,
    force: bool,
) -> Result<Vec<Vec<PciAddress>>> {
    if firmware == Firmware::Bios {
        return Err(GpuError::NeedsUefi.into());
    }
    let (facts, users, atts) = gather(ctx)?;
    let selected = select(&facts, selectors, vm, &atts)?;
    vgpu::check_whole(&facts, &selected)?;
    for f in check_selection(&facts, vm, &selected, &atts, &users, force, "--gpu-force")? {
        tracing::warn!("--gpu-force: {f}");
    }
    Ok(selected.iter().map(|g| addresses(g)).collect())
}
