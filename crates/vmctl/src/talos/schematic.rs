//! The Image Factory schematic of a Talos node (`vmctl talos schematic` and `create talos`): the
//! NVIDIA preset with the driver picked from the GPU's chip, further extensions and kernel
//! arguments, and its ID, computed offline or by the factory.

use std::path::PathBuf;

use hwdetect::HostFacts;
use talos_image::nvidia::{self, Driver, DriverChoice, Flavour, NvidiaPreset};
use talos_image::{Schematic, TalosVersion};

use super::{TalosError, client};
use crate::config::Config;
use crate::error::Result;

/// What goes into a schematic (`vmctl talos schematic` and `create talos`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchematicRequest {
    /// `--nvidia FLAVOUR`: the NVIDIA preset (kernel modules + container toolkit).
    pub nvidia: Option<Flavour>,
    /// `--driver`: otherwise chosen from the detected GPU's chip.
    pub driver: Option<Driver>,
    /// Add `nvidia-fabricmanager-<flavour>` (also added when an NVSwitch is detected).
    pub fabric_manager: bool,
    /// Further extensions (`qemu-guest-agent` or `siderolabs/qemu-guest-agent`).
    pub extensions: Vec<String>,
    pub kernel_args: Vec<String>,
    /// A schematic YAML to start from.
    pub file: Option<PathBuf>,
    /// Check extensions against the factory and let it compute (and confirm) the ID.
    pub online: bool,
    /// The version whose extension list `online` checks against (default: latest stable).
    pub version: Option<String>,
}

/// Picks the NVIDIA driver: the flag, else from the chip of `chip` (the GPU being passed
/// through, or the host's first GPU). Returns the driver and a note for the user.
pub fn pick_driver(given: Option<Driver>, chip: Option<&str>) -> (Driver, Option<String>) {
    if let Some(d) = given {
        return (d, None);
    }
    match chip {
        None => (
            Driver::Open,
            Some("no NVIDIA GPU detected: open kernel modules (Turing and newer); use --driver proprietary for older GPUs".into()),
        ),
        Some(c) => match Driver::for_chip(c) {
            (d, DriverChoice::Turing) => (d, Some(format!("{c} is Turing or newer: open kernel modules"))),
            (d, DriverChoice::PreTuring) => (d, Some(format!("{c} is older than Turing: proprietary kernel modules"))),
            (d, DriverChoice::Unknown) => (d, Some(format!("warning: unknown GPU architecture {c:?}: proprietary kernel modules (they support every generation); pass --driver open for Turing and newer"))),
        },
    }
}

/// The schematic for `req` (pure apart from reading `req.file`). `chip`: the GPU whose
/// architecture picks the driver; `nvswitch`: the host has an NVSwitch (adds the fabric manager).
pub fn build_schematic(
    req: &SchematicRequest,
    chip: Option<&str>,
    nvswitch: bool,
) -> Result<(Schematic, Option<String>)> {
    let mut schematic = match &req.file {
        Some(p) => {
            let bad = |reason: String| TalosError::SchematicFile {
                path: p.clone(),
                reason,
            };
            // A small regular file only, and errors by position: the file may be anything (a
            // symlink to /etc/shadow), so neither its text nor the parser's quotes of it are shown.
            let text =
                crate::input::read_text(p, crate::input::CONFIG_MAX).map_err(|e| match e {
                    crate::input::InputError::Io(source) => TalosError::ReadFile {
                        path: p.clone(),
                        source,
                    },
                    other => bad(other.to_string()),
                })?;
            Schematic::from_yaml(&text).map_err(|e| match e {
                talos_image::Error::ParseSchematic { source } => {
                    let (line, column) =
                        source.location().map_or((1, 1), |l| (l.line(), l.column()));
                    let message = source.to_string();
                    let message = message
                        .rsplit_once(" at line ")
                        .map_or(message.as_str(), |(m, _)| m);
                    bad(format!(
                        "line {line}, column {column}: not a schematic ({})",
                        crate::input::scrub(message)
                    ))
                }
                other => other.into(),
            })?
        }
        None => Schematic::default(),
    };
    let mut note = None;
    let mut wanted: Vec<String> = Vec::new();
    if let Some(flavour) = req.nvidia {
        let (driver, n) = pick_driver(req.driver, chip);
        note = n;
        let preset = NvidiaPreset {
            flavour,
            driver,
            fabric_manager: req.fabric_manager || nvswitch,
            extras: Vec::new(),
        };
        wanted.extend(preset.extensions());
    }
    wanted.extend(req.extensions.iter().map(|e| nvidia::qualify(e)));
    let list = &mut schematic
        .customization
        .system_extensions
        .official_extensions;
    for e in wanted {
        if !list.contains(&e) {
            list.push(e);
        }
    }
    schematic
        .customization
        .extra_kernel_args
        .extend(req.kernel_args.iter().cloned());
    Ok((schematic, note))
}

/// The ID: offline, or with `online` checked against the factory's extension list and
/// computed by the factory (which must agree with the offline ID when there is one).
pub fn schematic_id(
    config: &Config,
    schematic: &Schematic,
    online: bool,
    version: Option<&TalosVersion>,
) -> Result<(String, String, &'static str)> {
    if !online {
        let id = schematic.id()?;
        return Ok((id.id, id.yaml, "offline"));
    }
    let c = client(config)?;
    let v = match version {
        Some(v) => v.clone(),
        None => super::latest_version(config)?,
    };
    c.check_extensions(
        &v,
        &schematic
            .customization
            .system_extensions
            .official_extensions,
    )?;
    let o = c.create_schematic(schematic)?;
    let how = if o.verified_offline {
        "online-verified"
    } else {
        "online"
    };
    Ok((o.id, o.yaml, how))
}

/// The first GPU's chip code and whether an NVSwitch is present.
pub fn host_gpu(facts: &HostFacts) -> (Option<String>, bool) {
    (
        facts.gpus.iter().find_map(|g| g.chip.clone()),
        !facts.nvswitches.is_empty(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_comes_from_the_flag_then_the_chip() {
        assert_eq!(
            pick_driver(Some(Driver::Proprietary), Some("AD102")),
            (Driver::Proprietary, None)
        );
        let (d, note) = pick_driver(None, Some("AD102"));
        assert_eq!(d, Driver::Open);
        assert!(note.unwrap().contains("Turing or newer"));
        let (d, note) = pick_driver(None, Some("GP102"));
        assert_eq!(d, Driver::Proprietary);
        assert!(note.unwrap().contains("older than Turing"));
        let (d, note) = pick_driver(None, Some("XY999"));
        assert_eq!(d, Driver::Proprietary);
        assert!(
            note.unwrap()
                .starts_with("warning: unknown GPU architecture")
        );
        assert_eq!(pick_driver(None, None).0, Driver::Open);
    }

    #[test]
    fn schematic_keeps_order_drops_duplicates_and_adds_fabric_manager_for_nvswitch() {
        let req = SchematicRequest {
            nvidia: Some(Flavour::Lts),
            extensions: vec![
                "qemu-guest-agent".into(),
                "siderolabs/nvidia-container-toolkit-lts".into(),
            ],
            kernel_args: vec!["console=ttyS0".into()],
            ..Default::default()
        };
        let (s, _) = build_schematic(&req, Some("GH100"), true).unwrap();
        assert_eq!(
            s.customization.system_extensions.official_extensions,
            [
                "siderolabs/nvidia-open-gpu-kernel-modules-lts",
                "siderolabs/nvidia-container-toolkit-lts",
                "siderolabs/nvidia-fabricmanager-lts",
                "siderolabs/qemu-guest-agent",
            ]
        );
        assert_eq!(s.customization.extra_kernel_args, ["console=ttyS0"]);
        // Without the preset, the chip and NVSwitch do not matter.
        let (s, note) = build_schematic(&SchematicRequest::default(), Some("GH100"), true).unwrap();
        assert!(
            s.customization
                .system_extensions
                .official_extensions
                .is_empty()
        );
        assert!(note.is_none());
    }
}
