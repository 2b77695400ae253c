//! A desktop VM (`create ubuntu --desktop`): its files, and its two phases of one domain. The
//! install phase boots the ISO's own kernel and initrd with the ISO and a `cidata` seed
//! attached; once the installer has powered off with its marker on the console
//! ([`install_status`]), the definition is rewritten to boot from disk with nothing else
//! attached ([`switch_to_final`]). The create, its `--wait` and `vmctl start` all need this.

use std::path::{Path, PathBuf};

use guest_media::autoinstall::{DONE_MARKER, FAILED_MARKER};
use hypervisor::domain::parse::parse_domain;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// `metadata.os` of a desktop VM.
pub const OS: &str = "ubuntu-desktop";
/// Ubuntu Desktop's documented minimum storage (https://ubuntu.com/download/desktop: "25 GB").
pub const MIN_DISK_BYTES: u64 = 25 << 30;
pub const DEFAULT_DISK: &str = "40G";
pub const DEFAULT_MEMORY: &str = "4G";
/// The installer kernel's command line: `autoinstall` skips the confirmation prompt,
/// `ds=nocloud` points cloud-init at the `cidata` seed, the serial console carries the
/// installer's progress events (reporting type `print`) for `--wait`.
pub const INSTALL_CMDLINE: &str = "autoinstall ds=nocloud console=tty0 console=ttyS0,115200n8 ---";
/// The installed system's definition, kept in the VM directory until the switch.
pub const FINAL_XML: &str = "final-domain.xml";

/// What can go wrong only on the desktop path (its create, its install, its switch).
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("--disk {given}: smaller than the Ubuntu Desktop minimum of {} GiB", MIN_DISK_BYTES >> 30)]
    DiskTooSmall { given: String },
    #[error("a plaintext password on the command line is refused")]
    PlaintextPassword,
    #[error("hash the password with SHA-512-crypt: {reason}")]
    HashPassword { reason: String },
    #[error("{name} is not a desktop VM in its install phase")]
    NotInstalling { name: String },
    #[error("read the final definition of {name} from {path}")]
    ReadFinal {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the installer of {name} failed")]
    InstallFailed { name: String, log: PathBuf },
    #[error("{name} powered off before the installer said it finished")]
    StoppedEarly { name: String, log: PathBuf },
}

impl CommandFailure for DesktopError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::DiskTooSmall { .. } | Self::PlaintextPassword | Self::NotInstalling { .. } => {
                ExitKind::Usage
            }
            _ => ExitKind::Failure,
        }
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::DiskTooSmall { .. } => vec![format!(
                "give --disk {} GiB or more (default {DEFAULT_DISK})",
                MIN_DISK_BYTES >> 30
            )],
            Self::PlaintextPassword => vec![
                "use --password-prompt (asks, hashes with SHA-512-crypt locally), or --password-hash \"$(openssl passwd -6)\"".into(),
            ],
            Self::HashPassword { .. } => vec![
                "pass a hash instead: --password-hash \"$(openssl passwd -6)\"".into(),
            ],
            Self::NotInstalling { .. } => vec!["`vmctl info NAME` shows how it boots".into()],
            Self::ReadFinal { .. } => vec![
                "recreate the VM: `vmctl delete NAME --yes`, then `vmctl create ubuntu NAME --desktop …`".into(),
            ],
            Self::InstallFailed { log, .. } | Self::StoppedEarly { log, .. } => vec![
                format!("the installer's output is in {}", log.display()),
                "the VM is left in its install phase; `vmctl delete NAME --yes` removes it".into(),
            ],
        }
    }
}

impl From<DesktopError> for Error {
    fn from(e: DesktopError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// The files of one desktop VM, all in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub dir: PathBuf,
    pub disk: PathBuf,
    pub seed: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub console_log: PathBuf,
    pub known_hosts: PathBuf,
    pub final_xml: PathBuf,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            disk: dir.join("disk.qcow2"),
            seed: dir.join("seed.iso"),
            kernel: dir.join("installer-vmlinuz"),
            initrd: dir.join("installer-initrd"),
            console_log: dir.join("console.log"),
            known_hosts: dir.join("known_hosts"),
            final_xml: dir.join(FINAL_XML),
        }
    }
}

/// Where the installer is, as far as the serial console shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstallPhase {
    Booting,
    Installer,
    Partitioning,
    Copying,
    Configuring,
    LateCommands,
    Finished,
}

impl InstallPhase {
    pub fn describe(self) -> &'static str {
        match self {
            Self::Booting => "booting the installer (kernel and initrd from the ISO)",
            Self::Installer => "installer running (autoinstall seed found)",
            Self::Partitioning => "partitioning the disk",
            Self::Copying => "copying the system onto the disk",
            Self::Configuring => "configuring the system (packages, bootloader, user, network)",
            Self::LateCommands => "late commands (qemu-guest-agent, NVIDIA driver with --gpu)",
            Self::Finished => "install finished; the installer powers off",
        }
    }
}

/// Substrings of the console output, per phase: subiquity's progress events (reporting type
/// `print`: `start:`/`finish:` lines named after the controller and curtin stage), cloud-init's
/// banner, and vmctl's own marker from the last late-command.
const PHASE_MARKS: &[(InstallPhase, &[&str])] = &[
    (InstallPhase::Booting, &["Linux version", "Booting"]),
    (
        InstallPhase::Installer,
        &[
            "Cloud-init v.",
            "subiquity/Early",
            "subiquity/Meta",
            "subiquity/",
        ],
    ),
    (
        InstallPhase::Partitioning,
        &[
            "stage-partitioning",
            "block-meta",
            "subiquity/Install/install/partitioning",
        ],
    ),
    (InstallPhase::Copying, &["stage-extract", "cmd-extract"]),
    (
        InstallPhase::Configuring,
        &[
            "stage-curthooks",
            "curthooks",
            "subiquity/Install/install/postinstall",
        ],
    ),
    (InstallPhase::LateCommands, &["subiquity/Late"]),
    (InstallPhase::Finished, &[DONE_MARKER]),
];

/// The furthest phase the console output shows.
pub fn phase_of(console: &str) -> Option<InstallPhase> {
    PHASE_MARKS
        .iter()
        .rev()
        .find(|(_, marks)| marks.iter().any(|m| console.contains(m)))
        .map(|(p, _)| *p)
}

/// The install's state from the console output and whether the domain runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum InstallStatus {
    Running {
        phase: Option<InstallPhase>,
    },
    /// Powered off after the marker: switch to the final phase.
    Finished,
    Failed,
    StoppedEarly,
}

/// The "install finished" signal: the domain is off and the last late-command's marker is on
/// the console; the installer's `error-commands` marker means failure.
pub fn install_status(console: &str, active: bool) -> InstallStatus {
    if console.contains(FAILED_MARKER) && !console.contains(DONE_MARKER) {
        return if active {
            InstallStatus::Running {
                phase: phase_of(console),
            }
        } else {
            InstallStatus::Failed
        };
    }
    match (active, console.contains(DONE_MARKER)) {
        (true, _) => InstallStatus::Running {
            phase: phase_of(console),
        },
        (false, true) => InstallStatus::Finished,
        (false, false) => InstallStatus::StoppedEarly,
    }
}

/// What [`switch_to_final`] did.
#[derive(Debug, Clone, Serialize)]
pub struct Switched {
    pub name: String,
    pub destroyed: bool,
    pub started: bool,
    pub removed: Vec<PathBuf>,
}

/// The layout of `name` if it is a desktop VM in its install phase, and whether it runs.
pub fn install_layout(ctx: &Ctx, name: &str) -> Result<(Layout, bool)> {
    let rec = ctx.hv.require(name)?;
    let facts = parse_domain(&rec.xml)?;
    let not = || {
        Error::from(DesktopError::NotInstalling {
            name: name.to_string(),
        })
    };
    let md = facts.metadata.ok_or_else(not)?;
    if md.os != OS || facts.kernel.is_none() {
        return Err(not());
    }
    let dir = md.dir.ok_or_else(not)?;
    Ok((Layout::new(&dir), rec.state.is_active()))
}

/// The phase switch: powers the domain off if it still runs, redefines it from the final
/// definition written at create (disk boot; no kernel, initrd, ISO or seed), removes the
/// installer files (kernel, initrd, the seed with the password hash) and starts it unless
/// `start` is false. Called by `--wait` when [`install_status`] says finished, and by tests
/// with a simulated signal.
pub fn switch_to_final(ctx: &Ctx, name: &str, start: bool) -> Result<Switched> {
    let (layout, active) = install_layout(ctx, name)?;
    let xml = std::fs::read_to_string(&layout.final_xml).map_err(|source| {
        Error::from(DesktopError::ReadFinal {
            name: name.into(),
            path: layout.final_xml.clone(),
            source,
        })
    })?;
    if active {
        ctx.hv.destroy(name)?;
    }
    ctx.hv.define(name, &xml)?;
    let mut removed = Vec::new();
    for f in [
        &layout.kernel,
        &layout.initrd,
        &layout.seed,
        &layout.final_xml,
    ] {
        if let Ok(true) = hostio::file::remove_file(f) {
            removed.push(f.clone());
        }
    }
    if start {
        ctx.hv.start(name)?;
    }
    Ok(Switched {
        name: name.into(),
        destroyed: active,
        started: start,
        removed,
    })
}

/// If `name` is a desktop VM whose install finished (off, marker on the console), switches it
/// to the final phase without starting it; `None` when there is nothing to switch. For
/// `vmctl start` after a create without `--wait`.
pub fn switch_if_installed(ctx: &Ctx, name: &str) -> Result<Option<Switched>> {
    let Ok((layout, active)) = install_layout(ctx, name) else {
        return Ok(None);
    };
    let console = std::fs::read(&layout.console_log).unwrap_or_default();
    if install_status(&String::from_utf8_lossy(&console), active) != InstallStatus::Finished {
        return Ok(None);
    }
    switch_to_final(ctx, name, false).map(Some)
}
