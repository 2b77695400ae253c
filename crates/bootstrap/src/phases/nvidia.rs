//! NVIDIA phase: CUDA keyring repo, the driver flavour from the GPU architecture, `cuda-toolkit`
//! with a PATH snippet, and the nvidia-container-toolkit repo and package (host-setup.md).
//! In passthrough mode this runs only for GPUs the host keeps, or with `--host-driver`.
//!
//! A driver already installed (from Ubuntu's archive, NVIDIA's CUDA repository, the
//! graphics-drivers PPA or NVIDIA's `.run` installer) is kept when its branch drives the GPUs;
//! two sources at once are refused. With Secure Boot on (or a locked-down kernel) a module
//! built by DKMS loads only once its key is enrolled, so Ubuntu's prebuilt modules, signed by
//! Canonical's key, are preferred: `linux-modules-nvidia-<flavour>-<kernel flavour>` with the
//! headless userspace without DKMS, as `ubuntu-drivers install --gpgpu` picks them
//! (ubuntu-drivers-common, UbuntuDrivers/detect.py: `get_linux_modules_metapackage`,
//! `_get_headless_no_dkms_metapackage`). Which branches have them is read from apt's lists.

use hostio::paths;
use hwdetect::{DriverSource, Gpu, HostFacts};

use crate::options::GpuMode;
use crate::plan::Phase;
use crate::planner::Planner;

// The chip -> flavour rule lives in hwdetect, shared with vmctl's guest driver.
pub use hwdetect::nvidia_arch::{Flavour, flavour_for_chip};

/// The driver package for a set of host GPUs: open only when every GPU supports it.
pub fn driver_package(gpus: &[&Gpu]) -> (&'static str, Vec<String>) {
    let mut warnings = Vec::new();
    let mut all_open = !gpus.is_empty();
    for g in gpus {
        match g.chip.as_deref().and_then(flavour_for_chip) {
            Some(Flavour::Open) => {}
            Some(Flavour::Proprietary) => {
                all_open = false;
                let chip = g.chip.as_deref().unwrap_or("").to_ascii_uppercase();
                if chip.starts_with("GK") || chip.starts_with("GF") {
                    warnings.push(format!(
                        "GPU {} ({}): Kepler/Fermi GPUs are not supported by current NVIDIA drivers (the last was the 470 legacy branch); cuda-drivers will not drive it",
                        g.bdf, g.name
                    ));
                }
            }
            None => {
                all_open = false;
                warnings.push(format!(
                    "GPU {} ({}): unknown architecture, choosing the proprietary driver (cuda-drivers) to be safe",
                    g.bdf, g.name
                ));
            }
        }
    }
    (
        if all_open {
            "nvidia-open"
        } else {
            "cuda-drivers"
        },
        warnings,
    )
}

pub const CUDA_PROFILE: &str = "\
# Written by gpu-vm-bootstrap: put the CUDA toolkit on PATH (NVIDIA CUDA install guide, post-install).
export PATH=/usr/local/cuda/bin${PATH:+:${PATH}}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}
";

/// Why unsigned modules are refused here, for reasons and notes.
pub fn enforcement(facts: &HostFacts) -> String {
    let b = &facts.boot;
    match (b.secure_boot, b.lockdown.as_deref()) {
        (Some(true), Some(l @ ("integrity" | "confidentiality"))) => {
            format!("Secure Boot is on (kernel lockdown: {l})")
        }
        (Some(true), _) => "Secure Boot is on".to_string(),
        (_, Some(l)) => format!("the kernel is locked down ({l})"),
        _ => "module signatures are not enforced".to_string(),
    }
}

/// The first NVIDIA driver branch that supports each architecture (NVIDIA's driver release
/// notes: Turing R410; the A100's GA100 R450, but the GeForce/RTX Ampere chips GA10x only from
/// R455 (455.23.04 added the RTX 3080/3090); Ada and Hopper R525; Blackwell R570). A longer
/// prefix is listed before the shorter one it refines.
pub fn min_branch(chip: &str) -> u32 {
    let c = chip.to_ascii_uppercase();
    [
        ("GB", 570),
        ("GH", 525),
        ("AD", 525),
        ("GA100", 450),
        ("GA", 455),
        ("TU", 410),
    ]
    .iter()
    .find(|(p, _)| c.starts_with(p))
    .map_or(0, |(_, b)| *b)
}

/// Ubuntu's signed prebuilt driver for the running kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedDriver {
    /// `570-open`, `550`, `550-server`.
    pub flavour: String,
    pub packages: Vec<String>,
    /// The modules come from the per-ABI package only (no kernel metapackage matched).
    pub abi_only: bool,
}

/// Picks the newest branch with signed modules for the running kernel (`open` or not, as the
/// GPUs need), preferring the desktop branches over `-server`. `Err` says why there is none.
pub fn signed_driver(facts: &HostFacts, open: bool) -> Result<SignedDriver, String> {
    let release = &facts.kernel.release;
    if release.is_empty() {
        return Err("the running kernel's release is unknown".into());
    }
    let d = &facts.nvidia_driver;
    let mut flavours: Vec<String> = d
        .available
        .iter()
        .filter_map(|a| hwdetect::driver::split_linux_modules(&a.name))
        .filter(|(f, k)| k == release && f.ends_with("-open") == open)
        .map(|(f, _)| f)
        .collect();
    flavours.sort_by_key(|f| {
        let branch: u32 = f
            .split('-')
            .next()
            .and_then(|b| b.parse().ok())
            .unwrap_or(0);
        (f.contains("-server"), std::cmp::Reverse(branch))
    });
    flavours.dedup();
    let kflavour = facts.kernel.flavour().unwrap_or("");
    for f in &flavours {
        let headless = format!("nvidia-headless-no-dkms-{f}");
        let utils = format!("nvidia-utils-{}", f.trim_end_matches("-open"));
        if !d.can_install(&headless) || !d.can_install(&utils) {
            continue;
        }
        // The metapackage for the installed kernel flavour follows kernel updates; without
        // one, the modules of this exact kernel.
        let meta = facts
            .kernel
            .metapackages
            .iter()
            .filter(|m| m.starts_with(kflavour))
            .map(|m| format!("linux-modules-nvidia-{f}-{m}"))
            .filter(|n| d.can_install(n))
            .max_by_key(|n| n.len());
        let (modules, abi_only) = match meta {
            Some(m) => (m, false),
            None => (format!("linux-modules-nvidia-{f}-{release}"), true),
        };
        return Ok(SignedDriver {
            flavour: f.clone(),
            packages: vec![modules, headless, utils],
            abi_only,
        });
    }
    Err(if flavours.is_empty() {
        format!(
            "apt offers no signed prebuilt {}NVIDIA modules for kernel {release} (`linux-modules-nvidia-*{}-{release}`)",
            if open { "open " } else { "" },
            if open { "-open" } else { "" }
        )
    } else {
        format!(
            "apt has signed modules for kernel {release} ({}), but not the headless userspace without DKMS for them",
            flavours.join(", ")
        )
    })
}

/// The command that removes a driver source's files.
fn removal(facts: &HostFacts, source: DriverSource) -> String {
    let d = &facts.nvidia_driver;
    if source == DriverSource::RunInstaller {
        return if d.run_uninstaller {
            format!("sudo {}", paths::USR_BIN_NVIDIA_UNINSTALL)
        } else {
            format!("sudo rm {} && sudo depmod -a", d.unowned_modules.join(" "))
        };
    }
    let names: Vec<&str> = d
        .packages
        .iter()
        .filter(|p| p.source == Some(source))
        .map(|p| p.name.as_str())
        .collect();
    format!("sudo apt-get purge {}", names.join(" "))
}

fn what_of(facts: &HostFacts, source: DriverSource) -> String {
    let d = &facts.nvidia_driver;
    let mut items: Vec<String> = d
        .packages
        .iter()
        .filter(|p| p.source == Some(source))
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    if source == DriverSource::RunInstaller {
        if d.run_uninstaller {
            items.push(paths::USR_BIN_NVIDIA_UNINSTALL.to_string());
        }
        items.extend(d.unowned_modules.iter().cloned());
    }
    format!("{} ({})", source.describe(), items.join(", "))
}

/// What to do about a driver already installed: `Some(true)` keep it, `Some(false)` there is
/// none, `None` refused.
fn existing_driver(p: &mut Planner<'_>, gpus: &[&Gpu]) -> Option<bool> {
    let ph = Phase::Nvidia;
    let facts = p.facts;
    let d = &facts.nvidia_driver;
    let sources = d.sources();
    if sources.is_empty() {
        return Some(false);
    }
    if sources.len() > 1 {
        let what: Vec<String> = sources.iter().map(|s| what_of(facts, *s)).collect();
        let fixes: Vec<String> = sources
            .iter()
            .map(|s| format!("remove {} with `{}`", s.describe(), removal(facts, *s)))
            .collect();
        p.problem(
            ph,
            false,
            format!(
                "NVIDIA drivers from {} sources are installed: {}; they overwrite each other's libraries and kernel modules, and a second driver is never installed on top",
                sources.len(),
                what.join(" and ")
            ),
            format!("keep one of them: {}; then run again", fixes.join(", or ")),
        );
        return None;
    }
    let source = sources[0];
    let branch = d
        .packages
        .iter()
        .filter_map(|p| p.branch)
        .max()
        .or_else(|| {
            d.loaded_version
                .as_deref()
                .and_then(|v| v.split('.').next()?.parse().ok())
        });
    let need = gpus
        .iter()
        .filter_map(|g| g.chip.as_deref())
        .map(min_branch)
        .max()
        .unwrap_or(0);
    let names: Vec<&str> = gpus.iter().map(|g| g.bdf.as_str()).collect();
    if let Some(b) = branch
        && b < need
    {
        p.problem(
            ph,
            false,
            format!(
                "the installed NVIDIA driver {b} from {} is too old for {} (needs branch {need} or newer)",
                what_of(facts, source),
                names.join(", ")
            ),
            format!(
                "remove it with `{}`, then run again to install a current driver",
                removal(facts, source)
            ),
        );
        return None;
    }
    p.note(format!(
        "keeping the NVIDIA driver{} already installed from {}: no second driver is installed on top",
        branch.map(|b| format!(" {b}")).unwrap_or_default(),
        what_of(facts, source)
    ));
    if !facts.nvidia_module_loaded {
        p.needs_reboot("the installed nvidia kernel module is not loaded yet");
        if facts.boot.module_signatures_enforced() {
            if source == DriverSource::RunInstaller {
                p.warn(format!(
                    "{}: the module of NVIDIA's .run installer loads only if it was signed with a key the firmware trusts (its --module-signing-secret-key option); Ubuntu's signed driver avoids this: remove it with `{}` and run again",
                    enforcement(facts),
                    removal(facts, source)
                ));
            } else if !d.dkms_modules.is_empty() {
                mok_steps(p);
            }
        }
    }
    Some(true)
}

/// The steps that enrol the key DKMS signs its modules with, at the next boot (mokutil(1):
/// `--import` queues the key and asks for a one-time password; shim's MokManager asks for it
/// before the kernel starts).
fn mok_steps(p: &mut Planner<'_>) {
    p.manual_step(format!(
        "enrol the key DKMS signs the NVIDIA module with: `sudo mokutil --import {}` (choose a one-time password)",
        paths::SHIM_MOK_DER
    ));
    p.manual_step(
        "reboot; before Ubuntu starts, MokManager (blue screen) asks: Enroll MOK → Continue → Yes → the password → Reboot",
    );
    p.manual_step(
        "after the reboot, `gpu-vm-bootstrap verify` checks that the nvidia module loaded",
    );
}

pub fn plan(p: &mut Planner<'_>) {
    let opts = p.opts;
    let host_gpus: Vec<&Gpu> = match opts.gpu_mode {
        GpuMode::None => return,
        GpuMode::Host => p.sel.host.clone(),
        GpuMode::Passthrough if !p.sel.host.is_empty() => p.sel.host.clone(),
        GpuMode::Passthrough if opts.host_driver => p.sel.passthrough.clone(),
        GpuMode::Passthrough => return,
    };
    if host_gpus.is_empty() {
        if !p.facts.gpus.is_empty() || opts.host_driver {
            p.warn("no NVIDIA GPU stays with the host: skipping the NVIDIA driver");
        } else {
            p.warn("no NVIDIA GPU found: skipping the NVIDIA driver and CUDA");
        }
        return;
    }
    let ph = Phase::Nvidia;
    let names: Vec<&str> = host_gpus.iter().map(|g| g.bdf.as_str()).collect();
    let names = names.join(", ");
    let Some(keep) = existing_driver(p, &host_gpus) else {
        return;
    };
    let (pkg, warns) = driver_package(&host_gpus);
    let enforced = p.facts.boot.module_signatures_enforced();
    let mut signed = false;
    if !keep && enforced {
        match signed_driver(p.facts, pkg == "nvidia-open") {
            Ok(s) => {
                signed = true;
                let release = &p.facts.kernel.release;
                if s.abi_only {
                    p.warn(format!(
                        "no linux-modules-nvidia-{}-<flavour> metapackage matches the installed kernel metapackages: installing the modules for {release} only; after a kernel update, run gpu-vm-bootstrap again",
                        s.flavour
                    ));
                }
                let pkgs: Vec<&str> = s.packages.iter().map(String::as_str).collect();
                p.install_packages(
                    ph,
                    &pkgs,
                    format!(
                        "NVIDIA driver {} for {names} from Ubuntu's archive: {}, and these prebuilt modules for kernel {release} are signed by Canonical's key, which the kernel trusts, so no key enrolment is needed (the newest branch with signed modules for this kernel in apt's lists)",
                        s.flavour,
                        enforcement(p.facts)
                    ),
                );
            }
            Err(why) => {
                p.warn(format!(
                    "{}, and {why}: only a DKMS-built driver fits; DKMS signs the module with the machine owner key (MOK), which must be enrolled at the next boot or the kernel refuses the module",
                    enforcement(p.facts)
                ));
                if !p.state.existing.contains(paths::SHIM_MOK_DER) {
                    p.run(
                        ph,
                        &["update-secureboot-policy", "--new-key"],
                        format!(
                            "create the machine owner key DKMS signs modules with ({})",
                            paths::SHIM_MOK_DER
                        ),
                    );
                }
                mok_steps(p);
            }
        }
    }

    let keyring_deb = format!("{}/cuda-keyring.deb", paths::BOOTSTRAP_STATE_DIR);
    if !p.state.existing.contains(paths::CUDA_KEYRING) && !p.state.has_package("cuda-keyring") {
        p.run(
            ph,
            &[
                "curl",
                "-fsSL",
                "-o",
                &keyring_deb,
                &opts.urls.cuda_keyring_deb,
            ],
            "download NVIDIA's CUDA repository keyring package",
        );
        p.run(
            ph,
            &["dpkg", "-i", &keyring_deb],
            "add the CUDA apt repository and its signing key",
        );
        p.run(ph, &["apt-get", "update"], "read the CUDA repository");
    }

    for w in warns {
        p.warn(w);
    }
    let why = if pkg == "nvidia-open" {
        "open kernel modules: every host GPU is Turing or newer"
    } else {
        "proprietary kernel modules: a host GPU predates Turing (or is unknown)"
    };
    if !keep && !signed {
        p.install_packages(ph, &[pkg], format!("NVIDIA driver for {names} ({why})"));
    }
    p.install_packages(ph, &["cuda-toolkit"], "the CUDA toolkit");
    p.write_file(
        ph,
        paths::PROFILE_CUDA,
        0o644,
        CUDA_PROFILE.to_string(),
        "put /usr/local/cuda/bin on PATH and /usr/local/cuda/lib64 on LD_LIBRARY_PATH for login shells",
    );

    let key_asc = format!(
        "{}/nvidia-container-toolkit.asc",
        paths::BOOTSTRAP_STATE_DIR
    );
    let new_key = !p.state.existing.contains(paths::CONTAINER_TOOLKIT_KEYRING);
    if new_key {
        p.run(
            ph,
            &["curl", "-fsSL", "-o", &key_asc, &opts.urls.container_gpgkey],
            "download the libnvidia-container signing key",
        );
        p.run(
            ph,
            &[
                "gpg",
                "--batch",
                "--yes",
                "--dearmor",
                "-o",
                paths::CONTAINER_TOOLKIT_KEYRING,
                &key_asc,
            ],
            "store the key dearmored where the apt source's signed-by points",
        );
    }
    let list = format!(
        "# Written by gpu-vm-bootstrap: NVIDIA's nvidia-container-toolkit.list with signed-by added.\n\
         deb [signed-by={}] {}/$(ARCH) /\n",
        paths::CONTAINER_TOOLKIT_KEYRING,
        opts.urls.container_repo
    );
    let list_changed = p.write_file(
        ph,
        paths::APT_CONTAINER_TOOLKIT_LIST,
        0o644,
        list,
        "the nvidia-container-toolkit apt repository",
    );
    if list_changed || new_key {
        p.run(
            ph,
            &["apt-get", "update"],
            "read the nvidia-container-toolkit repository",
        );
    }
    p.install_packages(
        ph,
        &["nvidia-container-toolkit"],
        "GPU access for containers (`nvidia-ctk runtime configure`, CDI)",
    );
    if !p.facts.nvidia_module_loaded && !keep {
        p.needs_reboot(
            "the nvidia kernel module is not loaded: the driver is active after a reboot",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_follows_architecture() {
        assert_eq!(flavour_for_chip("GA102"), Some(Flavour::Open));
        assert_eq!(flavour_for_chip("TU104"), Some(Flavour::Open));
        assert_eq!(flavour_for_chip("GP102"), Some(Flavour::Proprietary));
        assert_eq!(flavour_for_chip("GK208B"), Some(Flavour::Proprietary));
        assert_eq!(flavour_for_chip("XY1"), None);
    }

    #[test]
    fn the_first_branch_of_each_architecture() {
        assert_eq!(min_branch("TU104"), 410);
        assert_eq!(min_branch("GA100"), 450);
        // The RTX 30 series needs 455: a 450 driver is not adequate for a GA102.
        assert_eq!(min_branch("GA102"), 455);
        assert_eq!(min_branch("AD102"), 525);
        assert_eq!(min_branch("GH100"), 525);
        assert_eq!(min_branch("GB202"), 570);
        assert_eq!(min_branch("GP102"), 0);
    }
}
