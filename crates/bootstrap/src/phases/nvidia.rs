//! NVIDIA phase: CUDA keyring repo, the driver flavour from the GPU architecture, `cuda-toolkit`
//! with a PATH snippet, and the nvidia-container-toolkit repo and package (host-setup.md).
//! In passthrough mode this runs only for GPUs the host keeps, or with `--host-driver`.

use hostio::paths;
use hwdetect::Gpu;

use crate::options::GpuMode;
use crate::plan::Phase;
use crate::planner::Planner;

/// Which kernel modules a GPU generation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// Open kernel modules (`nvidia-open`): Turing and newer, the default since the 560 branch.
    Open,
    /// Proprietary modules (`cuda-drivers`): required for Maxwell, Pascal and Volta.
    Proprietary,
}

/// The flavour for a chip name from pci.ids (`GA102`, `TU104`, `GP102`, …); `None` when unknown.
pub fn flavour_for_chip(chip: &str) -> Option<Flavour> {
    let c = chip.to_ascii_uppercase();
    // Turing (TU), Ampere (GA), Ada (AD), Hopper (GH), Blackwell (GB): open modules supported.
    if ["TU", "GA", "AD", "GH", "GB"]
        .iter()
        .any(|p| c.starts_with(p))
    {
        return Some(Flavour::Open);
    }
    // Kepler (GK), Maxwell (GM), Pascal (GP), Volta (GV): open modules do not support them.
    if ["GK", "GM", "GP", "GV", "GF"]
        .iter()
        .any(|p| c.starts_with(p))
    {
        return Some(Flavour::Proprietary);
    }
    None
}

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

    let (pkg, warns) = driver_package(&host_gpus);
    for w in warns {
        p.warn(w);
    }
    let why = if pkg == "nvidia-open" {
        "open kernel modules: every host GPU is Turing or newer"
    } else {
        "proprietary kernel modules: a host GPU predates Turing (or is unknown)"
    };
    p.install_packages(ph, &[pkg], format!("NVIDIA driver for {names} ({why})"));
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
    if !p.facts.nvidia_module_loaded {
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
}
