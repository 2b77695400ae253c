//! `vmctl create ubuntu NAME`: validate everything first (nothing is created on bad input), then
//! fetch the base image, make the overlay and the seed, define and start the domain. Anything
//! made before a failure is rolled back. The desktop install builds on this plan.

mod base;

use std::path::{Path, PathBuf};

use guest_media::cache::Progress;
use guest_media::seed::{self, GuestNetwork, SeedSpec};
use guest_media::{disk, releases};
use hypervisor::domain::render::to_xml;
use hypervisor::domain::{CpuMode, DirectBoot, DomainType, Firmware, Metadata};
use serde::Serialize;

use crate::build::{
    BridgedVm, bridge_and_address, check_name_and_size, now_rfc3339, overlay_and_seed,
};
use crate::ctx::Ctx;
use crate::error::{Error, Result};
pub use crate::gpu::guest_stack::GpuStack;
use crate::gpu::guest_stack::{self, GuestStack};
use crate::names;
pub use crate::net::NetworkRequest;
use crate::net::StaticIp;
use crate::transaction::Transaction;
pub use base::BaseVerification;
use base::fetch_base;

/// `vmctl create ubuntu` options, as given (unvalidated).
#[derive(Debug, Clone)]
pub struct UbuntuRequest {
    /// Empty: the next free `ubuntu-N`.
    pub name: String,
    pub release: Option<String>,
    /// Local path or http(s) URL of a base image instead of the release's cloud image.
    pub image: Option<String>,
    pub cpus: u32,
    pub memory: String,
    pub disk: Option<String>,
    pub bridge: Option<String>,
    pub network: NetworkRequest,
    pub mac: Option<String>,
    pub ssh_key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_hash: Option<String>,
    pub packages: Vec<String>,
    pub firmware: Option<String>,
    pub cpu_mode: Option<String>,
    pub domain_type: Option<String>,
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    pub kernel_args: Option<String>,
    pub kvm_hidden: bool,
    /// GPU selectors (`--gpu`): passthrough through `commands::gpu`, which implies q35 + UEFI.
    pub gpus: Vec<String>,
    /// Override the GPU isolation, boot VGA and host-use refusals.
    pub gpu_force: bool,
    pub no_start: bool,
    /// Leave libvirt's autostart off (by default the VM starts with the host).
    pub no_autostart: bool,
    /// `--data-disk SIZE[,name=NAME]` values: blank qcow2 disks after the seed.
    pub data_disks: Vec<String>,
    /// With `gpus` empty: pass this many whole GPUs, picked like `--gpu` alone (a template's
    /// `gpus = N`).
    pub gpu_count: Option<usize>,
    /// cloud-init commands run once at the first boot (a template's `runcmd`).
    pub runcmd: Vec<Vec<String>>,
    /// The base image carries another VM's machine-id (a saved template): make a new one.
    pub reset_machine_id: bool,
    /// Only write the seed into the VM's directory (for inspection or other tools).
    pub seed_only: bool,
    /// `--cpu-pinning`, `--hugepages`.
    pub tuning: crate::tuning::TuningRequest,
    /// `--share HOST_DIR:TAG[,ro]` values (virtiofs, [`crate::share`]).
    pub shares: Vec<String>,
    /// `--gpu-stack`: what the guest installs for the passed GPUs (default: the driver).
    pub gpu_stack: Option<GpuStack>,
}

impl UbuntuRequest {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            release: None,
            image: None,
            cpus: 2,
            memory: "2048".into(),
            disk: None,
            bridge: None,
            network: NetworkRequest::Dhcp,
            mac: None,
            ssh_key: None,
            user: None,
            password_hash: None,
            packages: Vec::new(),
            firmware: None,
            cpu_mode: None,
            domain_type: None,
            kernel: None,
            initrd: None,
            kernel_args: None,
            kvm_hidden: false,
            gpus: Vec::new(),
            gpu_force: false,
            no_start: false,
            no_autostart: false,
            data_disks: Vec::new(),
            gpu_count: None,
            runcmd: Vec::new(),
            reset_machine_id: false,
            seed_only: false,
            tuning: Default::default(),
            shares: Vec::new(),
            gpu_stack: None,
        }
    }
}

/// Where the base image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ImageSource {
    Local { path: PathBuf },
    Url { url: String },
    Release { version: String, codename: String },
}

/// The validated request: everything checked, nothing created yet.
#[derive(Debug, Clone, Serialize)]
pub struct UbuntuPlan {
    pub name: String,
    pub image: ImageSource,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_bytes: Option<u64>,
    pub bridge: String,
    pub mac: String,
    pub static_ip: Option<StaticIp>,
    pub ssh_key: PathBuf,
    pub ssh_public_key: String,
    pub user: String,
    pub domain_type: DomainType,
    pub cpu: CpuMode,
    pub firmware: Firmware,
    pub direct_boot: Option<DirectBoot>,
    pub vm_dir: PathBuf,
    /// Each passed-through GPU's functions (`--gpu`), checked like `vmctl gpu attach`.
    pub gpus: Vec<Vec<hypervisor::domain::PciAddress>>,
    /// CPU pinning and hugepages (`--cpu-pinning`, `--hugepages`), as planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::tuning::Placement>,
    /// `--data-disk`: blank disks made with the VM.
    pub data_disks: Vec<crate::data_disks::DataDisk>,
    /// virtiofs shares (`--share`), mounted by the guest at `/mnt/TAG`.
    pub shares: Vec<crate::share::ShareSpec>,
    /// The NVIDIA stack the guest installs for its GPUs (`--gpu-stack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_stack: Option<GuestStack>,
}

impl UbuntuPlan {
    /// The shared part of the domain (`create ubuntu` and `create desktop`).
    pub(crate) fn bridged_vm<'a>(&'a self, console_log: &'a Path) -> BridgedVm<'a> {
        let plan = self;
        BridgedVm {
            name: &plan.name,
            domain_type: plan.domain_type,
            cpu: &plan.cpu,
            firmware: plan.firmware,
            memory_mib: plan.memory_mib,
            vcpus: plan.vcpus,
            gpus: &plan.gpus,
            bridge: &plan.bridge,
            mac: &plan.mac,
            console_log,
            placement: plan.placement.as_ref(),
        }
    }
}

/// What `create` made.
#[derive(Debug, Clone, Serialize)]
pub struct Created {
    pub name: String,
    pub defined: bool,
    pub started: bool,
    pub mac: String,
    pub ip: Option<String>,
    pub user: String,
    pub disk: Option<PathBuf>,
    pub seed: PathBuf,
    pub console_log: PathBuf,
    pub base_image: Option<PathBuf>,
    pub base_sha256: Option<String>,
    /// How the base image was verified in this run (in words through `Display`).
    pub verification: BaseVerification,
    /// Where the vCPUs, emulator threads and memory went (`--cpu-pinning`, `--hugepages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<crate::tuning::Placement>,
    /// The NVIDIA stack the guest installs at its first boot (`--gpu-stack`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guest_stack: Option<GuestStack>,
}

fn invalid(option: &str, value: &str, reason: &str) -> Error {
    Error::InvalidOption {
        option: option.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

/// The invoking user's home: the sudo caller's when run through sudo (passwd(5) field 6).
fn invoking_home(ctx: &Ctx) -> Option<PathBuf> {
    if let Some(user) = (ctx.env)("SUDO_USER").filter(|u| !u.is_empty() && u != "root")
        && let Ok(passwd) = ctx.host.read_to_string(hostio::paths::ETC_PASSWD)
    {
        for line in passwd.lines() {
            let f: Vec<_> = line.split(':').collect();
            if f.len() >= 6 && f[0] == user {
                return Some(PathBuf::from(f[5]));
            }
        }
    }
    (ctx.env)("HOME").map(PathBuf::from)
}

/// Finds and reads the SSH public key: `--ssh-key`, else the setting, else `~/.ssh/id_*.pub`.
fn resolve_ssh_key(ctx: &Ctx, given: Option<&Path>) -> Result<(PathBuf, String)> {
    let configured = ctx.config.get("ssh_key").map(PathBuf::from);
    let path = match given.map(Path::to_path_buf).or(configured) {
        Some(p) => p,
        None => {
            let home = invoking_home(ctx).ok_or_else(|| Error::MissingSshKey {
                path: None,
                reason: "no --ssh-key and no home directory to search".into(),
            })?;
            let ssh = home.join(".ssh");
            let mut found = None;
            for name in ["id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"] {
                if ssh.join(name).is_file() {
                    found = Some(ssh.join(name));
                    break;
                }
            }
            if found.is_none() {
                let mut others: Vec<_> = std::fs::read_dir(&ssh)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        let n = p.file_name().unwrap_or_default().to_string_lossy();
                        n.starts_with("id_") && n.ends_with(".pub")
                    })
                    .collect();
                others.sort();
                found = others.into_iter().next();
            }
            found.ok_or_else(|| Error::MissingSshKey {
                path: None,
                reason: format!("no --ssh-key and no {}/id_*.pub", ssh.display()),
            })?
        }
    };
    // A small regular file only (not /dev/zero, not a FIFO), and no error quotes it: the path
    // may point at anything (a symlink to /etc/shadow).
    let text = crate::input::read_text(&path, crate::input::SSH_KEY_MAX).map_err(|e| {
        if matches!(e, crate::input::InputError::NotFound) {
            Error::MissingSshKey {
                path: Some(path.clone()),
                reason: e.to_string(),
            }
        } else {
            Error::BadSshKey {
                path: path.clone(),
                reason: e.to_string(),
            }
        }
    })?;
    let bad = |reason: String| Error::BadSshKey {
        path: path.clone(),
        reason,
    };
    if text.contains("PRIVATE KEY") {
        return Err(bad("this is a private key; pass the .pub file".into()));
    }
    // The first line that is not blank or a comment, as in authorized_keys (sshd(8)).
    let (number, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .ok_or_else(|| bad("no public key in the file".into()))?;
    let key = names::parse_ssh_public_key(line)
        .map_err(|reason| bad(format!("line {}: {reason}", number + 1)))?;
    Ok((path, key))
}

/// A file vmctl hands to libvirt or qemu-img (kernel, initrd, base image): it must be a
/// regular file (symlinks followed), not a device or FIFO that would hang or feed them garbage.
fn require_file(option: &str, p: &Path) -> Result<()> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => Err(invalid(
            option,
            &p.display().to_string(),
            "not a regular file",
        )),
        Err(_) => Err(invalid(option, &p.display().to_string(), "no such file")),
    }
}

/// Claims the plan's address (`--ip auto` or a probed static one), as
/// [`crate::address::claim_address`] says; called after validation, before anything is made.
pub fn claim(
    ctx: &Ctx,
    req: &UbuntuRequest,
    plan: &mut UbuntuPlan,
) -> Result<crate::address::Claim> {
    crate::address::claim_address(
        ctx,
        &req.name,
        &req.network,
        &plan.bridge,
        &mut plan.static_ip,
    )
}

/// Validates the request against the host and libvirt. Creates nothing.
pub fn plan(ctx: &Ctx, req: &UbuntuRequest) -> Result<UbuntuPlan> {
    plan_claimed(ctx, req, false)
}

/// [`plan`]; `claimed`: this create already holds the VM directory (an automatic name).
fn plan_claimed(ctx: &Ctx, req: &UbuntuRequest, claimed: bool) -> Result<UbuntuPlan> {
    let memory_mib = check_name_and_size(ctx, &req.name, !req.seed_only, req.cpus, &req.memory)?;
    let data_disks = crate::data_disks::parse_data_disks(&req.data_disks)?;
    let disk_bytes = req
        .disk
        .as_deref()
        .map(|d| names::parse_size("--disk", d))
        .transpose()?;
    let domain_type: DomainType = req
        .domain_type
        .as_deref()
        .unwrap_or(ctx.config.value("domain_type"))
        .parse()?;
    let cpu: CpuMode = req
        .cpu_mode
        .as_deref()
        .unwrap_or(ctx.config.value("cpu_mode"))
        .parse()?;
    let mut firmware: Firmware = req
        .firmware
        .as_deref()
        .unwrap_or(ctx.config.value("firmware"))
        .parse()?;
    let count = req.gpu_count.filter(|n| *n > 0 && req.gpus.is_empty());
    let (gpus, nvswitches) = if req.gpus.is_empty() && count.is_none() {
        (Vec::new(), false)
    } else {
        // Passthrough implies UEFI: a BIOS default gives way, an explicit --firmware bios is refused.
        if req.firmware.is_none() && firmware == Firmware::Bios {
            firmware = Firmware::Efi { secure_boot: false };
        }
        let selectors = crate::gpu::parse_selectors(&req.gpus)?;
        let mut gpus =
            crate::gpu::hostdevs_for_create(ctx, &req.name, &selectors, firmware, req.gpu_force)?;
        if let Some(n) = count {
            if gpus.len() < n {
                return Err(invalid(
                    "gpus",
                    &n.to_string(),
                    &format!(
                        "the template asks for {n} GPU(s) and {} can be passed (`vmctl gpu status` says why the others cannot)",
                        gpus.len()
                    ),
                ));
            }
            gpus.truncate(n);
        }
        // HGX: every GPU takes the NVSwitches along; fewer are checked (`gpu::nvswitch`).
        let switches =
            crate::gpu::nvswitch::switches_for_create(ctx, &req.name, &gpus, req.gpu_force)?;
        let nvswitches = !switches.is_empty();
        gpus.extend(switches.into_iter().map(|s| vec![s]));
        (gpus, nvswitches)
    };
    let guest_stack = if gpus.is_empty() && req.gpu_stack.is_none() {
        None
    } else {
        let facts = hwdetect::detect(ctx.host);
        let settings = guest_stack::StackSettings::from_config(ctx.config)?;
        guest_stack::plan(
            &guest_stack::gpus_of(&facts, &gpus),
            req.gpu_stack,
            // The guest manages an NVLink fabric only when it holds the NVSwitches.
            nvswitches,
            &settings,
        )?
    };
    let user = req
        .user
        .clone()
        .unwrap_or_else(|| ctx.config.value("ssh_user").to_string());
    // The guest user gets NOPASSWD sudo: never a system account. The guest's are a fixed list;
    // this host's /etc/passwd adds the ones its packages made (the guest may install the same).
    let passwd = ctx
        .host
        .read_to_string(hostio::paths::ETC_PASSWD)
        .unwrap_or_default();
    names::validate_user(&user, &names::system_accounts(&passwd))?;
    if let Some(h) = &req.password_hash {
        names::validate_password_hash(h)?;
    }
    for p in &req.packages {
        if p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.:=~".contains(c))
        {
            return Err(invalid("--packages", p, "not a package name"));
        }
    }
    let (bridge, static_ip) = bridge_and_address(ctx, req.bridge.as_deref(), &req.network)?;
    let mac = match &req.mac {
        Some(m) => names::parse_mac(m)?,
        None => names::random_mac(),
    };
    let (ssh_key, ssh_public_key) = resolve_ssh_key(ctx, req.ssh_key.as_deref())?;
    let direct_boot = match (&req.kernel, &req.initrd, &req.kernel_args) {
        (None, None, None) => None,
        (None, _, _) => {
            return Err(invalid(
                "--initrd/--kernel-args",
                "",
                "need --kernel for direct kernel boot",
            ));
        }
        (Some(k), initrd, args) => {
            require_file("--kernel", k)?;
            if let Some(i) = initrd {
                require_file("--initrd", i)?;
            }
            Some(DirectBoot {
                kernel: k.clone(),
                initrd: initrd.clone(),
                cmdline: Some(args.clone().unwrap_or_else(|| "console=ttyS0".into())),
            })
        }
    };
    let image = match (&req.image, &req.release) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "--image",
                "",
                "give either --image or --release, not both",
            ));
        }
        (Some(i), None) if i.starts_with("http://") || i.starts_with("https://") => {
            ImageSource::Url { url: i.clone() }
        }
        (Some(i), None) => {
            let p = PathBuf::from(i);
            require_file("--image", &p)?;
            ImageSource::Local {
                path: std::fs::canonicalize(&p).unwrap_or(p),
            }
        }
        (None, r) => {
            let rel = releases::find(r.as_deref().unwrap_or(releases::DEFAULT_RELEASE))?;
            ImageSource::Release {
                version: rel.version.into(),
                codename: rel.codename.into(),
            }
        }
    };
    let shares = crate::share::parse_all(&req.shares)?;
    if !shares.is_empty() && !req.seed_only {
        crate::share::require_virtiofsd(ctx)?;
    }
    let vm_dir = crate::storage::vm_dir(&ctx.config.storage_dir(ctx.host), &req.name);
    // An early refusal only: the claim at the start of the create is what holds the name.
    if !claimed && vm_dir.exists() {
        return Err(Error::StorageExists {
            name: req.name.clone(),
            path: vm_dir,
        });
    }
    let placement = if req.seed_only {
        None
    } else {
        crate::tuning::place(ctx, &req.name, req.tuning, &gpus, req.cpus, memory_mib)?
    };
    Ok(UbuntuPlan {
        name: req.name.clone(),
        image,
        vcpus: req.cpus,
        memory_mib,
        disk_bytes,
        bridge,
        mac,
        static_ip,
        ssh_key,
        ssh_public_key,
        user,
        domain_type,
        cpu,
        firmware,
        direct_boot,
        vm_dir,
        gpus,
        placement,
        data_disks,
        shares,
        guest_stack,
    })
}

/// Runs the plan in the VM directory `rb` has claimed. On failure everything made so far is
/// removed again (when `rb` is dropped uncommitted).
pub(crate) fn apply(
    ctx: &Ctx,
    req: &UbuntuRequest,
    plan: &UbuntuPlan,
    rb: &mut Transaction,
    progress: &dyn Progress,
) -> Result<Created> {
    let dir = &plan.vm_dir;
    let seed_path = dir.join("seed.iso");
    let disk_path = dir.join("disk.qcow2");
    let console_log = dir.join("console.log");
    let known_hosts = dir.join("known_hosts");
    let instance_id = format!("{}-{:08x}", plan.name, rand::random::<u32>());
    let network = match &plan.static_ip {
        Some(s) => GuestNetwork::Static {
            mac: plan.mac.clone(),
            address: s.address.to_string(),
            gateway: s.gateway.map(|g| g.to_string()),
            dns: s.dns.iter().map(ToString::to_string).collect(),
        },
        None => GuestNetwork::Dhcp {
            mac: plan.mac.clone(),
        },
    };
    let seed_spec = SeedSpec {
        hostname: plan.name.clone(),
        instance_id,
        user: plan.user.clone(),
        ssh_authorized_keys: vec![plan.ssh_public_key.clone()],
        password_hash: req.password_hash.clone(),
        packages: req.packages.clone(),
        network,
        reset_machine_id: req.reset_machine_id,
        runcmd: req.runcmd.clone(),
        mounts: plan.shares.iter().map(|s| s.guest_mount()).collect(),
        driver: match &plan.guest_stack {
            Some(st) => {
                let cache = crate::media::image_cache(ctx);
                guest_stack::seed_part(st, &|url| {
                    progress.note(&format!("fetching the apt signing key {url}"));
                    cache.get_bytes(url)
                })?
            }
            None => None,
        },
    };
    let seed_files = seed::render(&seed_spec)?;

    // From before the base image is fetched until the domain that uses it is defined, no
    // `vmctl image remove|prune` runs ([`guest_media::cache::ImageCache::use_lease`]).
    let _cache_lease = if req.seed_only {
        None
    } else {
        Some(crate::media::image_cache(ctx).use_lease(progress)?)
    };
    let (base, base_sha, verification, info) = if req.seed_only {
        (None, None, BaseVerification::NoImage, None)
    } else {
        let (base, sha, how) = fetch_base(ctx, plan, progress)?;
        let info = disk::image_info(ctx.runner, &base)?;
        if let Some(size) = plan.disk_bytes
            && size < info.virtual_size
        {
            return Err(invalid(
                "--disk",
                req.disk.as_deref().unwrap_or_default(),
                &format!(
                    "smaller than the image's virtual size of {} bytes",
                    info.virtual_size
                ),
            ));
        }
        (Some(base), sha, how, Some(info))
    };

    if let (Some(base), Some(info)) = (&base, &info) {
        rb.record_file(&disk_path);
        disk::create_overlay(ctx.runner, base, &info.format, &disk_path, plan.disk_bytes)?;
    }
    rb.record_file(&seed_path);
    seed::write_iso(ctx.runner, &seed_files, &seed_path)?;
    if !req.seed_only {
        // ssh(1) appends to an existing known_hosts and keeps its mode; one it creates itself
        // follows the umask.
        rb.record_file(&known_hosts);
        disk::write_private(&known_hosts, b"")?;
    }

    let mut created = Created {
        name: plan.name.clone(),
        defined: false,
        started: false,
        mac: plan.mac.clone(),
        ip: plan.static_ip.as_ref().map(|s| s.address.to_string()),
        user: plan.user.clone(),
        disk: base.as_ref().map(|_| disk_path.clone()),
        seed: seed_path.clone(),
        console_log: console_log.clone(),
        base_image: base.clone(),
        base_sha256: base_sha.clone(),
        verification,
        placement: None,
        guest_stack: plan.guest_stack.clone(),
    };
    if req.seed_only {
        rb.commit();
        return Ok(created);
    }

    let release = match &plan.image {
        ImageSource::Release { version, .. } => Some(version.clone()),
        _ => None,
    };
    let mut spec = plan.bridged_vm(&console_log).spec();
    spec.direct_boot = plan.direct_boot.clone();
    spec.kvm_hidden = req.kvm_hidden;
    spec.disks = overlay_and_seed(&disk_path, &seed_path);
    let data = crate::data_disks::create_data_disks(
        ctx,
        rb,
        dir,
        &plan.data_disks,
        &spec
            .disks
            .iter()
            .map(|d| d.target.as_str())
            .collect::<Vec<_>>(),
    )?;
    let mut vmctl_disks = vec![disk_path.clone(), seed_path.clone()];
    vmctl_disks.extend(data.iter().map(|d| d.path.clone()));
    spec.disks.extend(data);
    for s in &plan.shares {
        spec.add_filesystem(s.filesystem());
    }
    spec.metadata = Some(Metadata {
        os: "ubuntu".into(),
        release,
        user: Some(plan.user.clone()),
        ssh_key: Some(plan.ssh_key.clone()),
        ip: created.ip.clone(),
        base_image: base.clone(),
        base_sha256: base_sha,
        created: now_rfc3339(),
        version: crate::VERSION.into(),
        disks: vmctl_disks,
        files: vec![console_log, known_hosts],
        dir: Some(dir.clone()),
        readonly_shares: crate::share::readonly_tags(&plan.shares),
        vgpus: Vec::new(),
    });
    // Held until the domain is defined: its pins are then what the next create sees.
    let (_pin_lock, placement) = crate::build::final_placement(
        ctx,
        &plan.name,
        req.tuning,
        plan.placement.as_ref(),
        &plan.gpus,
        plan.vcpus,
        plan.memory_mib,
    )?;
    if let Some(p) = &placement {
        p.apply_to(&mut spec);
    }
    created.placement = placement;
    created.started = rb.define_and_start(
        ctx.cancelled,
        &plan.name,
        &to_xml(&spec)?,
        !req.no_start,
        !req.no_autostart,
    )?;
    created.defined = true;
    rb.commit();
    Ok(created)
}

/// Validates, claims the name's storage, then the address, then creates.
pub fn create_ubuntu(ctx: &Ctx, req: &UbuntuRequest, progress: &dyn Progress) -> Result<Created> {
    // The name first: a concurrent create of the same name stops here, before its download.
    // Without a name, the claim picks the next free `ubuntu-N` (and a failed plan gives it back).
    let mut rb = Transaction::new(ctx.hv);
    let named;
    let req = if req.name.is_empty() {
        let mut r = req.clone();
        r.name = rb.claim_next_name(ctx, "ubuntu", &|_| false)?;
        tracing::info!("no name given: {}", r.name);
        named = r;
        &named
    } else {
        req
    };
    let mut plan = plan_claimed(ctx, req, rb.has_dir())?;
    if !rb.has_dir() {
        rb.claim_dir(&plan.vm_dir, &plan.name)?;
    }
    // Probe/pick the static address and hold it in the reservation store (issue 6).
    let claim = claim(ctx, req, &mut plan)?;
    let created = apply(ctx, req, &plan, &mut rb, progress);
    claim.settle(created.is_ok());
    created
}

#[cfg(test)]
mod tests;
