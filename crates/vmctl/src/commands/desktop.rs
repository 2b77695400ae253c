//! `vmctl create ubuntu NAME --desktop`: an unattended Ubuntu Desktop install from the release
//! ISO. Two phases of one domain: the install phase boots the ISO's own kernel and initrd
//! (direct kernel boot, `autoinstall` on the command line) with the ISO as a SATA cdrom and a
//! `cidata` seed; when the installer powers off, the definition is rewritten to boot from disk
//! with nothing else attached ([`switch_to_final`]) and started.
//!
//! Validation is `create ubuntu`'s own ([`create::plan`]: name, bridge, IP, key, GPUs…) plus the
//! desktop's (release, disk minimum, locale…); nothing is created on bad input.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hostio::{Cmd, CommandError, CommandRunner};
use serde::Serialize;

use super::Ctx;
use super::create::{self, BridgedVm, Rollback, UbuntuPlan, UbuntuRequest};
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};
use guest_media::autoinstall::{
    self, AutoinstallSpec, DONE_MARKER, FAILED_MARKER, Flavour, Keyboard,
};
use guest_media::cache::Progress;
use guest_media::iso::{self, IsoRequest, IsoSources, ResolvedIso};
use guest_media::releases::SignaturePolicy;
use guest_media::releases::{self, Release};
use guest_media::seed::{GuestNetwork, SeedSpec};
use hypervisor::domain::parse::parse_domain;
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{DirectBoot, Disk, DomainSpec, Graphics, Metadata};

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
const FINAL_XML: &str = "final-domain.xml";

/// What can go wrong only on the desktop path.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    #[error("--disk {given}: smaller than the Ubuntu Desktop minimum of {} GiB", MIN_DISK_BYTES >> 30)]
    DiskTooSmall { given: String },
    #[error("a plaintext password on the command line is refused")]
    PlaintextPassword,
    #[error("hash the password with openssl")]
    HashPassword {
        #[source]
        source: CommandError,
    },
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
            Self::HashPassword { .. } => vec!["is openssl installed?".into()],
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

/// `create ubuntu --desktop` options, as given. `base` carries the options shared with the
/// cloud-image path (`base.image`, kernel options and `seed_only` must be unset).
#[derive(Debug, Clone)]
pub struct DesktopRequest {
    pub base: UbuntuRequest,
    /// `--iso PATH|URL`.
    pub iso: Option<String>,
    pub minimal: bool,
    pub locale: Option<String>,
    pub keyboard: Option<String>,
    pub timezone: Option<String>,
}

impl DesktopRequest {
    pub fn new(name: &str) -> Self {
        let mut base = UbuntuRequest::new(name);
        base.memory = DEFAULT_MEMORY.into();
        Self {
            base,
            iso: None,
            minimal: false,
            locale: None,
            keyboard: None,
            timezone: None,
        }
    }
}

/// The validated request.
#[derive(Debug, Clone, Serialize)]
pub struct DesktopPlan {
    pub base: UbuntuPlan,
    pub release: Release,
    /// The month (`YYYY-MM`) support was judged against.
    pub month: String,
    pub iso: IsoRequest,
    pub flavour: Flavour,
    pub disk_bytes: u64,
    pub locale: String,
    pub keyboard: Keyboard,
    pub timezone: String,
    #[serde(skip)]
    request: UbuntuRequest,
}

/// What `create ubuntu --desktop` made.
#[derive(Debug, Clone, Serialize)]
pub struct DesktopCreated {
    pub name: String,
    pub release: String,
    pub flavour: Flavour,
    pub defined: bool,
    pub started: bool,
    pub mac: String,
    pub ip: Option<String>,
    pub user: String,
    pub disk: PathBuf,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    pub iso: ResolvedIso,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// `install` until the switch to disk boot.
    pub phase: String,
}

fn invalid(option: &str, value: &str, reason: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn check_chars(option: &str, value: &str, extra: &str, example: &str) -> Result<()> {
    if value.is_empty()
        || !value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
    {
        return Err(invalid(option, value, &format!("expected e.g. {example}")));
    }
    Ok(())
}

/// Validates everything; creates nothing. `month` (`YYYY-MM`) decides which releases are
/// supported ([`iso::this_month`] in the binary).
pub fn plan(ctx: &Ctx, req: &DesktopRequest, month: &str) -> Result<DesktopPlan> {
    let b = &req.base;
    for (set, option) in [
        (b.image.is_some(), "--image"),
        (b.kernel.is_some(), "--kernel"),
        (b.initrd.is_some(), "--initrd"),
        (b.kernel_args.is_some(), "--kernel-args"),
        (b.seed_only, "--seed-only"),
        (!b.packages.is_empty(), "--packages"),
        // Only pre-R465 GeForce drivers on Windows need it; Ubuntu's drivers do not.
        (b.kvm_hidden, "--kvm-hidden"),
    ] {
        if set {
            return Err(invalid(
                option,
                "",
                "not with --desktop: the desktop boots the ISO's installer",
            ));
        }
    }
    let release = match &b.release {
        Some(r) => releases::find(r)?,
        None => iso::default_release(month),
    };
    let disk_given = b.disk.clone().unwrap_or_else(|| DEFAULT_DISK.into());
    let disk_bytes = crate::names::parse_size("--disk", &disk_given)?;
    if disk_bytes < MIN_DISK_BYTES {
        return Err(DesktopError::DiskTooSmall { given: disk_given }.into());
    }
    let locale = req.locale.clone().unwrap_or_else(|| "en_US.UTF-8".into());
    check_chars("--locale", &locale, "_.-@", "en_US.UTF-8")?;
    let keyboard = Keyboard::parse(req.keyboard.as_deref().unwrap_or("us"))?;
    let timezone = req.timezone.clone().unwrap_or_else(|| "Etc/UTC".into());
    check_chars("--timezone", &timezone, "/_+-", "Europe/Berlin or Etc/UTC")?;
    let iso = IsoRequest::parse(req.iso.as_deref())?;

    // The shared checks: name, sizes, bridge, address, key, user, password hash, GPUs.
    let mut request = b.clone();
    request.release = Some(release.version.into());
    request.disk = Some(disk_given);
    let base = create::plan(ctx, &request)?;
    Ok(DesktopPlan {
        base,
        release: *release,
        month: month.into(),
        iso,
        flavour: if req.minimal {
            Flavour::Minimal
        } else {
            Flavour::Full
        },
        disk_bytes,
        locale,
        keyboard,
        timezone,
        request,
    })
}

impl DesktopPlan {
    /// The user's password hash (`--password-prompt` asks after validation).
    pub fn set_password_hash(&mut self, hash: String) {
        self.request.password_hash = Some(hash);
    }
}

/// Hashes a password with SHA-512-crypt (`openssl passwd -6 -stdin`, the password on stdin so
/// it never appears in an argv).
pub fn hash_password(runner: &dyn CommandRunner, password: &str) -> Result<String> {
    let out = runner
        .run(&Cmd::new(["openssl", "passwd", "-6", "-stdin"]).stdin(format!("{password}\n")))
        .map_err(|source| DesktopError::HashPassword { source })?;
    let hash = out.stdout_str().trim().to_string();
    if !hash.starts_with("$6$") {
        return Err(DesktopError::HashPassword {
            source: CommandError::Failed {
                argv: "openssl passwd -6 -stdin".into(),
                status: 0,
                stderr: "output is not a $6$ hash".into(),
            },
        }
        .into());
    }
    Ok(hash)
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

/// What the two phases are built from (pure data, so tests give fixed values).
#[derive(Debug, Clone)]
pub struct PhaseInputs<'a> {
    pub plan: &'a UbuntuPlan,
    pub layout: &'a Layout,
    pub uuid: String,
    pub created: String,
    pub release: String,
    pub iso: PathBuf,
    pub iso_sha256: String,
}

/// The install-phase and final-phase domains. Same name and UUID, so the switch is a redefine.
pub fn phase_specs(p: &PhaseInputs) -> (DomainSpec, DomainSpec) {
    let plan = p.plan;
    let l = p.layout;
    let mut common = BridgedVm::of(plan, &l.console_log).spec();
    common.uuid = Some(p.uuid.clone());
    // A desktop wants a screen: SPICE on localhost (virt-viewer / virt-manager).
    common.graphics = Some(Graphics::Spice);
    let metadata = Metadata {
        os: OS.into(),
        release: Some(p.release.clone()),
        user: Some(plan.user.clone()),
        ssh_key: Some(plan.ssh_key.clone()),
        ip: plan.static_ip.as_ref().map(|s| s.address.to_string()),
        base_image: Some(p.iso.clone()),
        base_sha256: Some(p.iso_sha256.clone()),
        created: p.created.clone(),
        version: crate::VERSION.into(),
        disks: vec![l.disk.clone()],
        files: vec![l.console_log.clone(), l.known_hosts.clone()],
        dir: Some(l.dir.clone()),
    };

    let mut fin = common.clone();
    fin.disks = vec![Disk::virtio(&l.disk, "qcow2", "vda")];
    fin.metadata = Some(metadata.clone());

    let mut install = common;
    install.direct_boot = Some(DirectBoot {
        kernel: l.kernel.clone(),
        initrd: Some(l.initrd.clone()),
        cmdline: Some(INSTALL_CMDLINE.into()),
    });
    install.disks = create::overlay_and_seed(&l.disk, &l.seed);
    install.disks.push(Disk::cdrom(&p.iso, "sda"));
    let mut md = metadata;
    md.disks.push(l.seed.clone());
    md.files
        .extend([l.kernel.clone(), l.initrd.clone(), l.final_xml.clone()]);
    install.metadata = Some(md);
    (install, fin)
}

/// The domain XML of either phase. Plain UEFI asks libvirt for firmware without Secure Boot
/// (libvirt formatdomain, "firmware feature"): its autoselection otherwise prefers the
/// Secure Boot build with Microsoft keys enrolled, where OVMF refuses the directly booted
/// installer kernel (it is signed for shim, not by a key in db) and the installed system could
/// not load the unsigned NVIDIA DKMS module. `--firmware efi-secure` keeps Secure Boot.
pub fn domain_xml(spec: &DomainSpec) -> Result<String> {
    let xml = to_xml(spec)?;
    // Once the shared renderer states the feature itself, there is nothing to add.
    if spec.firmware != (hypervisor::domain::Firmware::Efi { secure_boot: false })
        || xml.contains("name=\"secure-boot\"")
    {
        return Ok(xml);
    }
    Ok(xml.replacen(
        "hvm</type>\n",
        "hvm</type>\n    <firmware>\n      <feature enabled=\"no\" name=\"secure-boot\"/>\n    </firmware>\n",
        1,
    ))
}

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    // RFC 9562 version 4, variant 10.
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// The seed for this plan.
pub fn autoinstall_spec(plan: &DesktopPlan, password_hash: Option<String>) -> AutoinstallSpec {
    let b = &plan.base;
    let network = match &b.static_ip {
        Some(s) => GuestNetwork::Static {
            mac: b.mac.clone(),
            address: s.address.to_string(),
            gateway: s.gateway.map(|g| g.to_string()),
            dns: s.dns.iter().map(ToString::to_string).collect(),
        },
        None => GuestNetwork::Dhcp { mac: b.mac.clone() },
    };
    AutoinstallSpec {
        seed: SeedSpec {
            hostname: b.name.clone(),
            instance_id: format!("{}-{:08x}", b.name, rand::random::<u32>()),
            user: b.user.clone(),
            ssh_authorized_keys: vec![b.ssh_public_key.clone()],
            password_hash,
            packages: Vec::new(),
            network,
        },
        flavour: plan.flavour,
        nvidia: !b.gpus.is_empty(),
        locale: plan.locale.clone(),
        keyboard: plan.keyboard.clone(),
        timezone: plan.timezone.clone(),
    }
}

/// Runs `f` with the ISO mirrors and the signature policy of the settings
/// (`ubuntu_releases_url`, `ubuntu_old_releases_url`, `ubuntu_iso_keyring`, `require_signature`).
pub(crate) fn with_iso_sources<T>(ctx: &Ctx, f: impl FnOnce(&IsoSources<'_, Error>) -> T) -> T {
    let keyring = ctx.config.get("ubuntu_iso_keyring").map(PathBuf::from);
    let policy = || -> Result<SignaturePolicy<'_>> {
        Ok(SignaturePolicy {
            keyring: keyring.as_deref(),
            keyring_setting: "ubuntu_iso_keyring",
            require: ctx.config.require_signature()?,
        })
    };
    f(&IsoSources {
        releases_url: ctx.config.value("ubuntu_releases_url"),
        old_releases_url: ctx.config.value("ubuntu_old_releases_url"),
        policy: &policy,
    })
}

/// Fetches the ISO, makes disk, seed and installer files in the VM directory `rb` has claimed,
/// defines the install phase and starts it. Everything made is removed again on failure (the
/// cached ISO stays). Every file is root's alone (0600, [`guest_media::disk`] says why).
pub(crate) fn apply(
    ctx: &Ctx,
    plan: &DesktopPlan,
    rb: &mut Rollback,
    progress: &dyn Progress,
) -> Result<DesktopCreated> {
    let req = &plan.request;
    let b = &plan.base;
    let cache = crate::media::image_cache(ctx.config);
    let iso = with_iso_sources(ctx, |sources| {
        iso::resolve(
            &cache,
            ctx.runner,
            sources,
            &plan.release,
            &plan.month,
            &plan.iso,
            progress,
        )
    })?;
    let layout = Layout::new(&b.vm_dir);
    // xorriso restores the ISO's file modes: staged, then made private.
    for (inside, out) in [
        ("/casper/vmlinuz", &layout.kernel),
        ("/casper/initrd", &layout.initrd),
    ] {
        guest_media::disk::produce_private(out, |staged| {
            iso::extract(ctx.runner, &iso.path, inside, staged)
        })?;
    }
    guest_media::disk::create_blank(ctx.runner, &layout.disk, plan.disk_bytes)?;
    let files = autoinstall::render(&autoinstall_spec(plan, req.password_hash.clone()))?;
    guest_media::seed::write_iso(ctx.runner, &files, &layout.seed)?;
    guest_media::disk::write_private(&layout.known_hosts, b"")?;

    let (install, fin) = phase_specs(&PhaseInputs {
        plan: b,
        layout: &layout,
        uuid: random_uuid(),
        created: create::now_rfc3339(),
        release: plan.release.version.into(),
        iso: iso.path.clone(),
        iso_sha256: iso.sha256.clone(),
    });
    guest_media::disk::write_private(&layout.final_xml, domain_xml(&fin)?.as_bytes())?;
    let started = rb.define_and_start(&b.name, &domain_xml(&install)?, !req.no_start)?;
    rb.committed = true;
    Ok(DesktopCreated {
        name: b.name.clone(),
        release: plan.release.version.into(),
        flavour: plan.flavour,
        defined: true,
        started,
        mac: b.mac.clone(),
        ip: b.static_ip.as_ref().map(|s| s.address.to_string()),
        user: b.user.clone(),
        disk: layout.disk,
        seed: layout.seed,
        console_log: layout.console_log,
        iso,
        kernel: layout.kernel,
        initrd: layout.initrd,
        phase: "install".into(),
    })
}

/// Validates, claims the address, creates.
pub fn create_desktop(
    ctx: &Ctx,
    req: &DesktopRequest,
    month: &str,
    progress: &dyn Progress,
) -> Result<DesktopCreated> {
    create_planned(ctx, plan(ctx, req, month)?, progress)
}

/// Claims the name's storage, then the address (`--ip auto` or a probed static one), then
/// creates.
pub fn create_planned(
    ctx: &Ctx,
    mut plan: DesktopPlan,
    progress: &dyn Progress,
) -> Result<DesktopCreated> {
    // The name first: a concurrent create of the same name stops here, before its download.
    let mut rb = Rollback::new(ctx.hv);
    rb.claim_dir(&plan.base.vm_dir, &plan.base.name)?;
    let claim = create::claim(ctx, &plan.request, &mut plan.base)?;
    let created = apply(ctx, &plan, &mut rb, progress);
    claim.settle(created.is_ok());
    created
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

fn install_layout(ctx: &Ctx, name: &str) -> Result<(Layout, bool)> {
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
        if std::fs::remove_file(f).is_ok() {
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

/// Progress while waiting for the install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitEvent {
    /// A new phase, with the time since the wait began.
    Phase(InstallPhase, Duration),
    /// The last line of console output (for a spinner).
    Line(String),
}

/// Waits until the installer powers off, reporting phases from the console log, then switches
/// to the final phase and starts it.
pub fn wait_install(
    ctx: &Ctx,
    name: &str,
    timeout: Duration,
    report: &dyn Fn(&WaitEvent),
) -> Result<Switched> {
    let (layout, _) = install_layout(ctx, name)?;
    let began = Instant::now();
    let mut shown: Option<InstallPhase> = None;
    loop {
        crate::interrupt::check(
            || format!("the wait for the desktop install of {name}"),
            || {
                format!(
                    "the install goes on unwatched; once {name} powers off, `vmctl start {name}` boots the installed system (or `vmctl delete {name} --yes`)"
                )
            },
        )?;
        let active = ctx.hv.state(name)?.is_active();
        let bytes = std::fs::read(&layout.console_log).unwrap_or_default();
        let console = String::from_utf8_lossy(&bytes);
        let phase = phase_of(&console);
        if phase > shown
            && let Some(p) = phase
        {
            report(&WaitEvent::Phase(p, began.elapsed()));
            shown = phase;
        }
        if let Some(last) = console.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
            report(&WaitEvent::Line(last.chars().take(100).collect()));
        }
        match install_status(&console, active) {
            InstallStatus::Running { .. } => {}
            InstallStatus::Finished => return switch_to_final(ctx, name, true),
            InstallStatus::Failed => {
                return Err(DesktopError::InstallFailed {
                    name: name.into(),
                    log: layout.console_log,
                }
                .into());
            }
            InstallStatus::StoppedEarly => {
                return Err(DesktopError::StoppedEarly {
                    name: name.into(),
                    log: layout.console_log,
                }
                .into());
            }
        }
        if began.elapsed() >= timeout {
            return Err(Error::Timeout {
                what: format!("the desktop install of {name}"),
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests;
