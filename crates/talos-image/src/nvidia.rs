//! NVIDIA system-extension presets for GPU nodes (siderolabs/extensions `nvidia-gpu/`).
//!
//! Kernel modules and the container toolkit must share a flavour (`production` or `lts`); the open
//! kernel modules only support Turing and newer, older chips need the proprietary build
//! (`nonfree-kmod-nvidia-*`). The fabric manager is only for NVSwitch/NVLink systems.

use serde::{Deserialize, Serialize};

use crate::schematic::Schematic;

/// Extension shipped by default on VMs (the guest agent lets libvirt see the address and shut down cleanly).
pub const QEMU_GUEST_AGENT: &str = "siderolabs/qemu-guest-agent";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    #[default]
    Production,
    Lts,
}

impl Flavour {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavour::Production => "production",
            Flavour::Lts => "lts",
        }
    }
}

impl std::str::FromStr for Flavour {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "production" => Ok(Flavour::Production),
            "lts" => Ok(Flavour::Lts),
            _ => Err(format!(
                "unknown NVIDIA flavour {s:?} (expected production or lts)"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// `nvidia-open-gpu-kernel-modules-<flavour>`: Turing (TU) and newer.
    Open,
    /// `nonfree-kmod-nvidia-<flavour>`: everything, required before Turing.
    Proprietary,
}

impl std::str::FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "open" => Ok(Driver::Open),
            "proprietary" => Ok(Driver::Proprietary),
            _ => Err(format!(
                "unknown NVIDIA driver {s:?} (expected open or proprietary)"
            )),
        }
    }
}

/// Why a driver was chosen; `Unknown` is the caller's cue to print a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    Turing,
    PreTuring,
    Unknown,
}

impl Driver {
    /// Pick the driver from a chip code such as `TU104`, `GA102`, `AD102`, `GH100`, `GB202`.
    ///
    /// The open modules need a GSP, present from Turing on (NVIDIA open-gpu-kernel-modules README).
    /// Unknown codes fall back to the proprietary driver, which supports every generation.
    pub fn for_chip(chip: &str) -> (Driver, DriverChoice) {
        let code = chip.trim().to_ascii_uppercase();
        let prefix: String = code
            .chars()
            .take_while(|c| c.is_ascii_alphabetic())
            .collect();
        match prefix.as_str() {
            // Turing, Ampere, Ada, Hopper, Blackwell (datacenter GB1xx and consumer GB2xx).
            "TU" | "GA" | "AD" | "GH" | "GB" => (Driver::Open, DriverChoice::Turing),
            // Kepler, Maxwell, Pascal, Volta.
            "GK" | "GM" | "GP" | "GV" => (Driver::Proprietary, DriverChoice::PreTuring),
            _ => (Driver::Proprietary, DriverChoice::Unknown),
        }
    }
}

/// The extension set for a GPU node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NvidiaPreset {
    pub flavour: Flavour,
    pub driver: Driver,
    /// Add `nvidia-fabricmanager-<flavour>` (NVSwitch present, or asked for).
    pub fabric_manager: bool,
    /// Further extensions, full names; VMs default to [`QEMU_GUEST_AGENT`].
    pub extras: Vec<String>,
}

impl NvidiaPreset {
    /// Production flavour, the given driver, no fabric manager, the guest agent.
    pub fn for_vm(driver: Driver) -> Self {
        NvidiaPreset {
            flavour: Flavour::Production,
            driver,
            fabric_manager: false,
            extras: vec![QEMU_GUEST_AGENT.to_string()],
        }
    }

    /// Extension names in schematic order: kernel modules, toolkit, fabric manager, extras
    /// (duplicates of earlier entries dropped, order otherwise kept since it changes the ID).
    pub fn extensions(&self) -> Vec<String> {
        let f = self.flavour.as_str();
        let mut out = vec![
            match self.driver {
                Driver::Open => format!("siderolabs/nvidia-open-gpu-kernel-modules-{f}"),
                Driver::Proprietary => format!("siderolabs/nonfree-kmod-nvidia-{f}"),
            },
            format!("siderolabs/nvidia-container-toolkit-{f}"),
        ];
        if self.fabric_manager {
            out.push(format!("siderolabs/nvidia-fabricmanager-{f}"));
        }
        for e in &self.extras {
            let name = qualify(e);
            if !out.contains(&name) {
                out.push(name);
            }
        }
        out
    }

    pub fn schematic(&self) -> Schematic {
        Schematic::with_extensions(self.extensions())
    }
}

/// `qemu-guest-agent` → `siderolabs/qemu-guest-agent`; names with an owner are kept.
pub fn qualify(name: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        format!("siderolabs/{name}")
    }
}

/// Kernel modules a GPU node loads (siderolabs NVIDIA guide).
pub const GPU_KERNEL_MODULES: [&str; 4] = ["nvidia", "nvidia_uvm", "nvidia_drm", "nvidia_modeset"];

/// The sysctl the NVIDIA container toolkit needs.
pub const GPU_SYSCTL: (&str, &str) = ("net.core.bpf_jit_harden", "1");

/// The `RuntimeClass` pods use to get a GPU (`runtimeClassName: nvidia`).
pub const RUNTIME_CLASS_MANIFEST: &str =
    "apiVersion: node.k8s.io/v1\nkind: RuntimeClass\nmetadata:\n  name: nvidia\nhandler: nvidia\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chip_codes_choose_the_driver() {
        for chip in ["TU104", "GA102", "ad102", "GH100", "GB202", "GA100"] {
            assert_eq!(
                Driver::for_chip(chip),
                (Driver::Open, DriverChoice::Turing),
                "{chip}"
            );
        }
        for chip in ["GM204", "GP102", "GV100", "GK210"] {
            assert_eq!(
                Driver::for_chip(chip),
                (Driver::Proprietary, DriverChoice::PreTuring),
                "{chip}"
            );
        }
        assert_eq!(
            Driver::for_chip("XYZ1"),
            (Driver::Proprietary, DriverChoice::Unknown)
        );
        assert_eq!(
            Driver::for_chip(""),
            (Driver::Proprietary, DriverChoice::Unknown)
        );
    }

    #[test]
    fn vm_preset_production_open() {
        let p = NvidiaPreset::for_vm(Driver::Open);
        assert_eq!(
            p.extensions(),
            [
                "siderolabs/nvidia-open-gpu-kernel-modules-production",
                "siderolabs/nvidia-container-toolkit-production",
                "siderolabs/qemu-guest-agent"
            ]
        );
        assert_eq!(
            p.schematic().id().expect("plain").id,
            "d8f2337e57a0899a5a20429fdc5d52c41bbb1f8166bcfa8d6bb221104bb416fc"
        );
    }

    #[test]
    fn lts_proprietary_with_fabric_manager() {
        let p = NvidiaPreset {
            flavour: Flavour::Lts,
            driver: Driver::Proprietary,
            fabric_manager: true,
            extras: vec![
                "iscsi-tools".into(),
                "siderolabs/nvidia-container-toolkit-lts".into(),
            ],
        };
        assert_eq!(
            p.extensions(),
            [
                "siderolabs/nonfree-kmod-nvidia-lts",
                "siderolabs/nvidia-container-toolkit-lts",
                "siderolabs/nvidia-fabricmanager-lts",
                "siderolabs/iscsi-tools"
            ]
        );
    }

    #[test]
    fn flavour_and_driver_parse() {
        assert_eq!("lts".parse::<Flavour>(), Ok(Flavour::Lts));
        assert!("beta".parse::<Flavour>().is_err());
        assert_eq!("open".parse::<Driver>(), Ok(Driver::Open));
        assert!("nouveau".parse::<Driver>().is_err());
    }
}
