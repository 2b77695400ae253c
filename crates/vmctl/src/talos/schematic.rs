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
    /// Add `nvidia-fabricmanager-<flavour>` (also added when the node gets NVSwitches).
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

/// A GPU being passed to a node: its BDF and chip code (`TU104`), when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuChip {
    pub bdf: String,
    pub chip: Option<String>,
}

/// Chip generations no driver Talos ships supports: Kepler (`GK`) ended with the 470 branch,
/// Fermi (`GF`) and Tesla (`GT`) before it (NVIDIA's legacy GPU list); the Image Factory's
/// `nonfree-kmod-nvidia` and open modules are 535 and newer.
fn unsupported(chip: &str) -> bool {
    let c = chip.trim().to_ascii_uppercase();
    ["GK", "GF", "GT"].iter().any(|p| {
        c.strip_prefix(p)
            .is_some_and(|rest| rest.starts_with(|ch: char| ch.is_ascii_digit()))
    })
}

/// Picks the NVIDIA driver: the flag, else from the chips of the GPUs being passed (never the
/// host's other GPUs). GPUs no current driver supports do not count; when every GPU is one of
/// them, that is [`TalosError::NoSupportedGpu`]. The open modules only when every counted GPU is
/// Turing or newer. Returns the driver and a note for the user.
pub fn pick_driver(given: Option<Driver>, gpus: &[GpuChip]) -> Result<(Driver, Option<String>)> {
    if let Some(d) = given {
        return Ok((d, None));
    }
    if gpus.is_empty() {
        return Ok((
            Driver::Open,
            Some("no NVIDIA GPU detected: open kernel modules (Turing and newer); use --driver proprietary for older GPUs".into()),
        ));
    }
    let (old, usable): (Vec<&GpuChip>, Vec<&GpuChip>) = gpus
        .iter()
        .partition(|g| g.chip.as_deref().is_some_and(unsupported));
    if usable.is_empty() {
        return Err(TalosError::NoSupportedGpu {
            gpus: old
                .iter()
                .map(|g| format!("{} ({})", g.bdf, g.chip.as_deref().unwrap_or("?")))
                .collect(),
        }
        .into());
    }
    let mut choice: Option<(Driver, String)> = None;
    for g in &usable {
        let note = match g.chip.as_deref() {
            None => (
                Driver::Proprietary,
                format!(
                    "warning: unknown GPU architecture of {}: proprietary kernel modules (they support every generation); pass --driver open for Turing and newer",
                    g.bdf
                ),
            ),
            Some(c) => match Driver::for_chip(c) {
                (d, DriverChoice::Turing) => {
                    (d, format!("{c} is Turing or newer: open kernel modules"))
                }
                (d, DriverChoice::PreTuring) => (
                    d,
                    format!("{c} is older than Turing: proprietary kernel modules"),
                ),
                (d, DriverChoice::Unknown) => (
                    d,
                    format!(
                        "warning: unknown GPU architecture {c:?}: proprietary kernel modules (they support every generation); pass --driver open for Turing and newer"
                    ),
                ),
            },
        };
        // One GPU that needs the proprietary modules decides for the node.
        if choice.as_ref().is_none_or(|(d, _)| *d == Driver::Open) {
            choice = Some(note);
        }
    }
    let (driver, mut note) = choice.unwrap_or((Driver::Open, String::new()));
    for g in &old {
        note += &format!(
            "; {} ({}) is not supported by current drivers",
            g.bdf,
            g.chip.as_deref().unwrap_or("?")
        );
    }
    Ok((driver, Some(note)))
}

/// The chips of `gpus` from the host's facts.
pub fn chips_of(gpus: &[&hwdetect::Gpu]) -> Vec<GpuChip> {
    gpus.iter()
        .map(|g| GpuChip {
            bdf: g.bdf.clone(),
            chip: g.chip.clone(),
        })
        .collect()
}

/// The schematic for `req` (pure apart from reading `req.file`). `chip`: the GPU whose
/// architecture picks the driver; `nvswitch`: the node gets NVSwitches (full passthrough,
/// `gpu::nvswitch::switches_for`), which adds the fabric manager: never for a node without them.
pub fn build_schematic(
    req: &SchematicRequest,
    gpus: &[GpuChip],
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
        let (driver, n) = pick_driver(req.driver, gpus)?;
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

/// The GPUs a node on this host would get (`--gpu` alone: [`passthrough::default_set`]) and
/// whether it would get NVSwitches with them: what `vmctl talos schematic --nvidia` decides the
/// driver and the fabric manager by. A host-level preview: it assumes the full passthrough of
/// an NVSwitch host (not under Shared NVSwitch multitenancy, where nodes never get switches).
pub fn host_gpus(facts: &HostFacts) -> (Vec<GpuChip>, bool) {
    let (gpus, _) = passthrough::default_set(facts, None, &[]);
    let switches = !facts.nvswitch_devices.is_empty() && !facts.fabric_manager.shared_nvswitch;
    (chips_of(&gpus), switches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpus(chips: &[&str]) -> Vec<GpuChip> {
        chips
            .iter()
            .enumerate()
            .map(|(i, c)| GpuChip {
                bdf: format!("0000:0{i}:00.0"),
                chip: Some(c.to_string()),
            })
            .collect()
    }

    fn pick(given: Option<Driver>, chips: &[&str]) -> (Driver, Option<String>) {
        pick_driver(given, &gpus(chips)).unwrap()
    }

    #[test]
    fn driver_comes_from_the_flag_then_the_chip() {
        assert_eq!(
            pick(Some(Driver::Proprietary), &["AD102"]),
            (Driver::Proprietary, None)
        );
        let (d, note) = pick(None, &["AD102"]);
        assert_eq!(d, Driver::Open);
        assert!(note.unwrap().contains("Turing or newer"));
        let (d, note) = pick(None, &["GP102"]);
        assert_eq!(d, Driver::Proprietary);
        assert!(note.unwrap().contains("older than Turing"));
        let (d, note) = pick(None, &["XY999"]);
        assert_eq!(d, Driver::Proprietary);
        assert!(
            note.unwrap()
                .starts_with("warning: unknown GPU architecture")
        );
        assert_eq!(pick(None, &[]).0, Driver::Open);
        // Every GPU being passed counts: one older than Turing needs the proprietary modules.
        assert_eq!(pick(None, &["TU104", "GP102"]).0, Driver::Proprietary);
    }

    #[test]
    fn a_kepler_gpu_never_decides_the_driver_and_alone_is_refused() {
        let (d, note) = pick(None, &["GK208B", "TU104"]);
        assert_eq!(d, Driver::Open);
        assert!(
            note.unwrap()
                .contains("(GK208B) is not supported by current drivers")
        );
        let err = pick_driver(None, &gpus(&["GK208B"])).unwrap_err();
        assert!(
            err.to_string()
                .contains("no GPU to pass is supported by current NVIDIA drivers"),
            "{err}"
        );
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
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
        let (s, _) = build_schematic(&req, &gpus(&["GH100"]), true).unwrap();
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
        let (s, note) =
            build_schematic(&SchematicRequest::default(), &gpus(&["GH100"]), true).unwrap();
        assert!(
            s.customization
                .system_extensions
                .official_extensions
                .is_empty()
        );
        assert!(note.is_none());
    }

    #[test]
    fn host_preview_adds_the_fabric_manager_only_where_nodes_would_get_switches() {
        let facts = |name: &str| {
            let tree = fixture_builder::build_host(name);
            hwdetect::detect(&hostio::HostRoot::new(tree.path()))
        };
        assert!(host_gpus(&facts("hgx-h200x8-nvswitch")).1);
        assert!(!host_gpus(&facts("synthetic-hgx-shared-nvswitch")).1);
        assert!(!host_gpus(&facts("intel-z170-gtx960")).1);
    }
}
