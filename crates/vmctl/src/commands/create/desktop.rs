//! `vmctl create ubuntu NAME --desktop`: an unattended Ubuntu Desktop install from the release
//! ISO. Two phases of one domain: the install phase boots the ISO's own kernel and initrd
//! (direct kernel boot, `autoinstall` on the command line) with the ISO as a SATA cdrom and a
//! `cidata` seed; when the installer powers off, the definition is rewritten to boot from disk
//! with nothing else attached ([`crate::desktop::switch_to_final`]) and started.
//!
//! Validation is `create ubuntu`'s own ([`ubuntu::plan`]: name, bridge, IP, key, GPUs…) plus the
//! desktop's (release, disk minimum, locale…); nothing is created on bad input.

use std::path::PathBuf;

use guest_media::autoinstall::{self, AutoinstallSpec, Flavour, Keyboard};
use guest_media::cache::Progress;
use guest_media::iso::{self, IsoRequest, IsoSources, ResolvedIso};
use guest_media::releases::SignaturePolicy;
use guest_media::releases::{self, Release};
use guest_media::seed::{GuestNetwork, SeedSpec};
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{DirectBoot, Disk, DomainSpec, Graphics, Metadata};
use serde::Serialize;

use super::ubuntu::{self, UbuntuPlan, UbuntuRequest};
use crate::build::{now_rfc3339, overlay_and_seed};
use crate::ctx::Ctx;
use crate::desktop::{
    DEFAULT_DISK, DEFAULT_MEMORY, DesktopError, INSTALL_CMDLINE, Layout, MIN_DISK_BYTES, OS,
};
use crate::error::{Error, Result};
use crate::transaction::Transaction;

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
    // The plan is shown before the create claims anything: without a name it proposes the next
    // free `ubuntu-N`, which the create then claims like a given name.
    let named;
    let req = if req.base.name.is_empty() {
        let mut r = req.clone();
        r.base.name = crate::build::next_free_name(ctx, "ubuntu")?;
        named = r;
        &named
    } else {
        req
    };
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
    // The desktop installs its own NVIDIA driver (autoinstall's `drivers`): no cloud-init
    // guest stack, and no refusal of it.
    request.gpu_stack = Some(ubuntu::GpuStack::None);
    let mut base = ubuntu::plan(ctx, &request)?;
    base.guest_stack = None;
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

/// Hashes a password with SHA-512-crypt in process (RustCrypto `sha-crypt`: the `$6$` format of
/// glibc's crypt(3), which the installer's `identity.password` takes), with a random 16-character
/// salt and the standard 5000 rounds. No child process ever sees the password.
pub fn hash_password(password: &str) -> Result<String> {
    use sha_crypt::{PasswordHasher, ShaCrypt};
    // 12 random bytes are the 16 salt characters crypt(3) allows at most.
    let salt: [u8; 12] = rand::random();
    let hash = ShaCrypt::SHA512
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| DesktopError::HashPassword {
            reason: e.to_string(),
        })?;
    Ok(hash.to_string())
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
/// Plain UEFI states Secure Boot off (the shared renderer does for every EFI domain): libvirt's
/// autoselection otherwise prefers the Secure Boot build with Microsoft keys enrolled, where OVMF
/// refuses the directly booted installer kernel (signed for shim, not by a key in db) and the
/// installed system could not load the unsigned NVIDIA DKMS module.
pub fn phase_specs(p: &PhaseInputs) -> (DomainSpec, DomainSpec) {
    let plan = p.plan;
    let l = p.layout;
    let mut common = plan.bridged_vm(&l.console_log).spec();
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
        readonly_shares: Vec::new(),
        vgpus: Vec::new(),
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
    install.disks = overlay_and_seed(&l.disk, &l.seed);
    install.disks.push(Disk::cdrom(&p.iso, "sda"));
    let mut md = metadata;
    md.disks.push(l.seed.clone());
    md.files
        .extend([l.kernel.clone(), l.initrd.clone(), l.final_xml.clone()]);
    install.metadata = Some(md);
    (install, fin)
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
            reset_machine_id: false,
            runcmd: Vec::new(),
            mounts: Vec::new(),
            driver: None,
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
    rb: &mut Transaction,
    progress: &dyn Progress,
) -> Result<DesktopCreated> {
    let req = &plan.request;
    let b = &plan.base;
    let cache = crate::media::image_cache(ctx);
    // No `vmctl image remove|prune` between the fetch and the define that uses the ISO.
    let _cache_lease = cache.use_lease(progress)?;
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
        uuid: uuid::Uuid::new_v4().to_string(),
        created: now_rfc3339(),
        release: plan.release.version.into(),
        iso: iso.path.clone(),
        iso_sha256: iso.sha256.clone(),
    });
    guest_media::disk::write_private(&layout.final_xml, to_xml(&fin)?.as_bytes())?;
    let started = rb.define_and_start(
        ctx.cancelled,
        &b.name,
        &to_xml(&install)?,
        !req.no_start,
        !req.no_autostart,
    )?;
    rb.commit();
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
    let mut rb = Transaction::new(ctx.hv);
    rb.claim_dir(&plan.base.vm_dir, &plan.base.name)?;
    let claim = ubuntu::claim(ctx, &plan.request, &mut plan.base)?;
    let created = apply(ctx, &plan, &mut rb, progress);
    claim.settle(created.is_ok());
    created
}

#[cfg(test)]
mod tests;
