//! NVIDIA GPU architectures from the chip name (pci.ids' `GA102`, `TU104`, `GP102`, …) and the
//! kernel-module flavour each needs: the one rule the host's driver phase (gpu-vm-bootstrap)
//! and a guest's driver (`vmctl create ubuntu --gpu-stack`) share. Pure: no I/O.
//!
//! Sources: NVIDIA's open GPU kernel modules support Turing and newer only (README of
//! NVIDIA/open-gpu-kernel-modules, "Supported GPUs"); the 580 series is the last to support
//! Maxwell, Pascal and Volta and 470 was the last for Kepler (NVIDIA's "Unix Graphics Feature
//! Deprecation Schedule", forums.developer.nvidia.com/t/60588); Fermi's last was 390.

use serde::Serialize;

use crate::Gpu;

/// Which kernel modules a GPU generation needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// Open kernel modules (`nvidia-open`): Turing and newer, the default since the 560 branch.
    Open,
    /// Proprietary modules (`cuda-drivers`): required for Maxwell, Pascal and Volta.
    Proprietary,
}

/// A GPU generation, by the chip name's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Fermi,
    Kepler,
    Maxwell,
    Pascal,
    Volta,
    Turing,
    Ampere,
    Ada,
    Hopper,
    Blackwell,
}

impl Arch {
    /// The architecture of a chip name from pci.ids; `None` when unknown.
    pub fn of_chip(chip: &str) -> Option<Arch> {
        let c = chip.to_ascii_uppercase();
        [
            ("GF", Arch::Fermi),
            ("GK", Arch::Kepler),
            ("GM", Arch::Maxwell),
            ("GP", Arch::Pascal),
            ("GV", Arch::Volta),
            ("TU", Arch::Turing),
            ("GA", Arch::Ampere),
            ("AD", Arch::Ada),
            ("GH", Arch::Hopper),
            ("GB", Arch::Blackwell),
        ]
        .iter()
        .find(|(p, _)| c.starts_with(p))
        .map(|(_, a)| *a)
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Fermi => "Fermi",
            Arch::Kepler => "Kepler",
            Arch::Maxwell => "Maxwell",
            Arch::Pascal => "Pascal",
            Arch::Volta => "Volta",
            Arch::Turing => "Turing",
            Arch::Ampere => "Ampere",
            Arch::Ada => "Ada",
            Arch::Hopper => "Hopper",
            Arch::Blackwell => "Blackwell",
        }
    }

    /// Open kernel modules drive Turing and newer (they need the GSP firmware processor).
    pub fn flavour(self) -> Flavour {
        match self {
            Arch::Turing | Arch::Ampere | Arch::Ada | Arch::Hopper | Arch::Blackwell => {
                Flavour::Open
            }
            _ => Flavour::Proprietary,
        }
    }

    /// The last driver branch that supports it, for the generations current drivers dropped
    /// or will drop (Kepler 470, Fermi 390; Maxwell, Pascal and Volta 580).
    pub fn last_branch(self) -> Option<u32> {
        match self {
            Arch::Fermi => Some(390),
            Arch::Kepler => Some(470),
            Arch::Maxwell | Arch::Pascal | Arch::Volta => Some(580),
            _ => None,
        }
    }

    /// Kepler and Fermi: their last drivers (470 and 390 legacy) are not in NVIDIA's current
    /// repositories, so nothing installable drives them.
    pub fn legacy_only(self) -> bool {
        matches!(self, Arch::Fermi | Arch::Kepler)
    }
}

/// The flavour for a chip name from pci.ids (`GA102`, `TU104`, `GP102`, …); `None` when unknown.
pub fn flavour_for_chip(chip: &str) -> Option<Flavour> {
    Arch::of_chip(chip).map(Arch::flavour)
}

/// The flavour a set of GPUs needs: open only when every GPU supports it; an unknown
/// architecture (or no GPU) takes the proprietary modules, which drive every generation the
/// branch supports.
pub fn flavour_for_gpus(gpus: &[&Gpu]) -> Flavour {
    let all_open = !gpus.is_empty()
        && gpus
            .iter()
            .all(|g| g.chip.as_deref().and_then(flavour_for_chip) == Some(Flavour::Open));
    if all_open {
        Flavour::Open
    } else {
        Flavour::Proprietary
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chips_map_to_their_generation_and_flavour() {
        assert_eq!(flavour_for_chip("GA102"), Some(Flavour::Open));
        assert_eq!(flavour_for_chip("TU104"), Some(Flavour::Open));
        assert_eq!(flavour_for_chip("gh100"), Some(Flavour::Open));
        assert_eq!(flavour_for_chip("GP102"), Some(Flavour::Proprietary));
        assert_eq!(flavour_for_chip("GV100"), Some(Flavour::Proprietary));
        assert_eq!(flavour_for_chip("GK208B"), Some(Flavour::Proprietary));
        assert_eq!(flavour_for_chip("XY1"), None);
        assert_eq!(Arch::of_chip("GK208B"), Some(Arch::Kepler));
        assert!(Arch::Kepler.legacy_only() && Arch::Fermi.legacy_only());
        assert!(!Arch::Pascal.legacy_only());
        assert_eq!(Arch::Volta.last_branch(), Some(580));
    }

    #[test]
    fn one_pre_turing_or_unknown_gpu_makes_the_set_proprietary() {
        let g = |chip: Option<&str>| Gpu {
            chip: chip.map(String::from),
            ..Default::default()
        };
        let (tu, ga, gp, unknown) = (
            g(Some("TU104")),
            g(Some("GA100")),
            g(Some("GP102")),
            g(None),
        );
        assert_eq!(flavour_for_gpus(&[&tu, &ga]), Flavour::Open);
        assert_eq!(flavour_for_gpus(&[&tu, &gp]), Flavour::Proprietary);
        assert_eq!(flavour_for_gpus(&[&tu, &unknown]), Flavour::Proprietary);
        assert_eq!(flavour_for_gpus(&[]), Flavour::Proprietary);
    }
}
