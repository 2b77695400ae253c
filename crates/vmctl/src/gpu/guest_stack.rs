//! The NVIDIA stack an Ubuntu guest installs at its first boot (`vmctl create ubuntu --gpu
//! --gpu-stack driver|container|none`): a pure plan from the passed GPUs and the settings, the
//! repositories' signing keys dearmored on the host, and the cloud-init part it becomes
//! ([`guest_media::seed::GuestPackages`]).
//!
//! The module flavour follows the host's rule ([`hwdetect::nvidia_arch`]): open kernel modules
//! when every passed GPU is Turing or newer, the proprietary ones otherwise. Packages come from
//! NVIDIA's CUDA repository, one driver branch (setting `guest_driver_branch`, default 580:
//! "The 580 release series will be the last to support GPUs based on the Maxwell, Pascal, and
//! Volta architectures", NVIDIA's Unix Graphics Feature Deprecation Schedule). Up to 580 the
//! Ubuntu packages carry the branch in their names (`nvidia-open-580`, `cuda-drivers-580`);
//! from 590 on the names lose it and a branch is held by NVIDIA's pinning package
//! `nvidia-driver-pinning-<branch>` (NVIDIA Driver Installation Guide, "Recent updates:
//! Version locking packages for Ubuntu / Debian" and its "Ubuntu 590 package renames" table).

use hwdetect::nvidia_arch::{Arch, Flavour};
use hwdetect::{Gpu, HostFacts};
use hypervisor::domain::PciAddress;
use serde::Serialize;

use crate::error::{CommandFailure, Error, ExitKind, Failure};

/// `--gpu-stack`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuStack {
    /// The NVIDIA driver.
    Driver,
    /// The driver and the NVIDIA container toolkit.
    Container,
    /// Nothing: the GPUs are passed through, the guest brings its own driver.
    None,
}

impl std::str::FromStr for GpuStack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "driver" => Ok(Self::Driver),
            "container" => Ok(Self::Container),
            "none" => Ok(Self::None),
            _ => Err("one of driver, container, none".into()),
        }
    }
}

/// The settings the plan reads (vmctl's config: `guest_driver_branch`, `guest_cuda_repo`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackSettings {
    pub branch: u32,
    pub cuda_repo: String,
    pub cuda_key: String,
    pub container_repo: String,
    pub container_key: String,
}

impl StackSettings {
    /// From vmctl's settings; a branch that is not a number is refused.
    pub fn from_config(c: &crate::config::Config) -> Result<Self, GuestStackError> {
        let raw = c.value("guest_driver_branch");
        let branch = raw
            .trim()
            .parse()
            .map_err(|_| GuestStackError::BadBranch { value: raw.into() })?;
        Ok(Self {
            branch,
            cuda_repo: c.value("guest_cuda_repo").trim_end_matches('/').into(),
            cuda_key: c.value("guest_cuda_key").into(),
            container_repo: c.value("guest_container_repo").trim_end_matches('/').into(),
            container_key: c.value("guest_container_key").into(),
        })
    }
}

/// A repository the guest adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RepoPlan {
    pub name: String,
    pub uri: String,
    pub key_url: String,
    pub keyring_path: String,
}

/// The guest stack chosen for the passed GPUs (shown by `create --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestStack {
    pub stack: GpuStack,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flavour: Option<Flavour>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<u32>,
    pub packages: Vec<String>,
    pub repos: Vec<RepoPlan>,
    pub services: Vec<String>,
    /// Why this flavour (or why nothing is installed).
    pub reason: String,
    /// The guest reboots once after the install when this module does not load.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reboot_unless_module: Option<String>,
}

/// Refusals and failures of the guest stack; carried by [`Error::Command`].
#[derive(Debug, thiserror::Error)]
pub enum GuestStackError {
    #[error("--gpu-stack {stack} needs GPUs to drive: no --gpu was given")]
    NeedsGpu { stack: String },
    #[error(
        "cannot install an NVIDIA driver in the guest for GPU {bdf} ({name}): it is a {arch} GPU, whose last driver was the {last} legacy branch, which NVIDIA's current repositories no longer carry"
    )]
    LegacyGpu {
        bdf: String,
        name: String,
        arch: &'static str,
        last: u32,
    },
    #[error(
        "guest driver branch {branch} does not support GPU {bdf} ({name}): {arch} GPUs are supported up to branch {last}"
    )]
    BranchTooNew {
        bdf: String,
        name: String,
        arch: &'static str,
        branch: u32,
        last: u32,
    },
    #[error("setting guest_driver_branch {value:?} is not a driver branch number (e.g. 580)")]
    BadBranch { value: String },
    #[error("fetch the apt signing key {url} for the guest")]
    FetchKey {
        url: String,
        #[source]
        source: Box<guest_media::Error>,
    },
    #[error("the apt signing key from {url} is not usable: {reason}")]
    BadKey { url: String, reason: String },
}

impl CommandFailure for GuestStackError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::FetchKey { .. } | Self::BadKey { .. } => ExitKind::Failure,
            _ => ExitKind::Usage,
        }
    }
    fn help(&self) -> Vec<String> {
        match self {
            Self::NeedsGpu { .. } => vec![
                "pass the GPUs with --gpu SELECTOR (or --gpu alone for the default set), or leave --gpu-stack out".into(),
            ],
            Self::LegacyGpu { last, .. } => vec![
                format!("pass it through without a guest driver with `--gpu-stack none`, then install the {last} legacy driver in the guest by hand"),
            ],
            Self::BranchTooNew { last, .. } => vec![format!(
                "set guest_driver_branch = \"{last}\" in /etc/vmctl/config.toml (or VMCTL_GUEST_DRIVER_BRANCH={last}), or pass the GPU with `--gpu-stack none`"
            )],
            Self::BadBranch { .. } => vec![
                "set guest_driver_branch to a number such as \"580\" in /etc/vmctl/config.toml or VMCTL_GUEST_DRIVER_BRANCH".into(),
            ],
            Self::FetchKey { .. } | Self::BadKey { .. } => vec![
                "check the key URL settings guest_cuda_key and guest_container_key (`vmctl config show`), or create the VM with `--gpu-stack none`".into(),
            ],
        }
    }
}

impl From<GuestStackError> for Error {
    fn from(e: GuestStackError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// Where the keyrings go in the guest (apt's `signed-by`; /etc/apt/keyrings is the place
/// for keys an administrator adds, apt 2.4 and later).
const CUDA_KEYRING: &str = "/etc/apt/keyrings/cuda-archive-keyring.gpg";
const CONTAINER_KEYRING: &str = "/etc/apt/keyrings/nvidia-container-toolkit-keyring.gpg";

/// The GPUs of the host facts whose functions are among `hostdevs` (one entry per passed GPU).
pub fn gpus_of<'a>(facts: &'a HostFacts, hostdevs: &[Vec<PciAddress>]) -> Vec<&'a Gpu> {
    hostdevs
        .iter()
        .filter_map(|fns| {
            let first = fns.first()?;
            facts
                .gpus
                .iter()
                .find(|g| g.bdf.parse::<PciAddress>().ok().as_ref() == Some(first))
        })
        .collect()
}

/// The guest stack for the passed GPUs. `stack` is `--gpu-stack` (`None`: the default, the
/// driver when GPUs are passed). `fabric_manager`: add NVIDIA Fabric Manager (NVSwitch systems).
pub fn plan(
    gpus: &[&Gpu],
    stack: Option<GpuStack>,
    fabric_manager: bool,
    s: &StackSettings,
) -> Result<Option<GuestStack>, GuestStackError> {
    let stack = match (stack, gpus.is_empty()) {
        (Some(GpuStack::None), _) => {
            return Ok(Some(GuestStack {
                stack: GpuStack::None,
                flavour: None,
                branch: None,
                packages: Vec::new(),
                repos: Vec::new(),
                services: Vec::new(),
                reason: "--gpu-stack none: the GPUs are passed through, no driver is installed in the guest".into(),
                reboot_unless_module: None,
            }));
        }
        (Some(st), true) => {
            return Err(GuestStackError::NeedsGpu {
                stack: if st == GpuStack::Container {
                    "container"
                } else {
                    "driver"
                }
                .into(),
            });
        }
        (None, true) => return Ok(None),
        (Some(st), false) => st,
        (None, false) => GpuStack::Driver,
    };
    let mut pre_turing = Vec::new();
    let mut unknown = Vec::new();
    for g in gpus {
        match g.chip.as_deref().and_then(Arch::of_chip) {
            Some(a) if a.legacy_only() => {
                return Err(GuestStackError::LegacyGpu {
                    bdf: g.bdf.clone(),
                    name: g.name.clone(),
                    arch: a.name(),
                    last: a.last_branch().unwrap_or(470),
                });
            }
            Some(a) if a.flavour() == Flavour::Proprietary => {
                if let Some(last) = a.last_branch()
                    && s.branch > last
                {
                    return Err(GuestStackError::BranchTooNew {
                        bdf: g.bdf.clone(),
                        name: g.name.clone(),
                        arch: a.name(),
                        branch: s.branch,
                        last,
                    });
                }
                pre_turing.push(format!("{} ({}, {})", g.bdf, g.name, a.name()));
            }
            Some(_) => {}
            None => unknown.push(format!("{} ({})", g.bdf, g.name)),
        }
    }
    let flavour = hwdetect::nvidia_arch::flavour_for_gpus(gpus);
    let reason = if flavour == Flavour::Open {
        "every passed GPU is Turing or newer: NVIDIA's open kernel modules".to_string()
    } else if !pre_turing.is_empty() {
        format!(
            "{} predate Turing, which the open kernel modules do not drive: the proprietary modules",
            pre_turing.join(", ")
        )
    } else {
        format!(
            "the architecture of {} is unknown: the proprietary modules, which drive every generation the branch supports",
            unknown.join(", ")
        )
    };
    let b = s.branch;
    // Up to 580 the branch is in the package names; from 590 the pinning package holds it.
    let named = |base: &str| {
        if b <= 580 {
            format!("{base}-{b}")
        } else {
            base.to_string()
        }
    };
    let mut packages = Vec::new();
    if b > 580 {
        packages.push(format!("nvidia-driver-pinning-{b}"));
    }
    packages.push(named(match flavour {
        Flavour::Open => "nvidia-open",
        Flavour::Proprietary => "cuda-drivers",
    }));
    let mut repos = vec![RepoPlan {
        name: "cuda".into(),
        uri: s.cuda_repo.clone(),
        key_url: s.cuda_key.clone(),
        keyring_path: CUDA_KEYRING.into(),
    }];
    let mut services = Vec::new();
    if fabric_manager {
        packages.push(named("nvidia-fabricmanager"));
        services.push("nvidia-fabricmanager".to_string());
    }
    if stack == GpuStack::Container {
        packages.push("nvidia-container-toolkit".into());
        // NVIDIA's list file uses apt's own `$(ARCH)` substitution (container toolkit install
        // guide, nvidia-container-toolkit.list).
        repos.push(RepoPlan {
            name: "nvidia-container-toolkit".into(),
            uri: format!("{}/$(ARCH)", s.container_repo),
            key_url: s.container_key.clone(),
            keyring_path: CONTAINER_KEYRING.into(),
        });
    }
    Ok(Some(GuestStack {
        stack,
        flavour: Some(flavour),
        branch: Some(b),
        packages,
        repos,
        services,
        reason,
        reboot_unless_module: Some("nvidia".into()),
    }))
}

/// The OpenPGP binary form of an ASCII-armoured key (RFC 4880 §6.2: armour header lines, a
/// blank line, the base64 body, `=` and the CRC-24 of the data in base64, the tail line), as
/// `gpg --dearmor` writes it. Binary input (a packet tag byte, bit 7 set) is returned as is.
pub fn dearmor(data: &[u8]) -> Result<Vec<u8>, String> {
    use base64::Engine;
    if data.first().is_some_and(|b| b & 0x80 != 0) {
        return Ok(data.to_vec());
    }
    let text =
        std::str::from_utf8(data).map_err(|_| "neither ASCII armour nor binary".to_string())?;
    let mut lines = text.lines().map(str::trim_end);
    lines
        .by_ref()
        .find(|l| l.starts_with("-----BEGIN PGP PUBLIC KEY BLOCK-----"))
        .ok_or("no `-----BEGIN PGP PUBLIC KEY BLOCK-----` line")?;
    // Armour headers (`Version: …`, `Comment: …`) end at the first blank line.
    let mut body = String::new();
    let mut crc = None;
    let mut in_headers = true;
    let mut ended = false;
    for l in lines {
        if l.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
            ended = true;
            break;
        }
        if in_headers {
            if l.trim().is_empty() {
                in_headers = false;
                continue;
            }
            if l.contains(": ") {
                continue;
            }
            in_headers = false;
        }
        if let Some(c) = l.strip_prefix('=')
            && c.len() == 4
        {
            crc = Some(c.to_string());
            continue;
        }
        body.push_str(l.trim());
    }
    if !ended {
        return Err("no `-----END PGP PUBLIC KEY BLOCK-----` line".into());
    }
    let bin = base64::engine::general_purpose::STANDARD
        .decode(body.as_bytes())
        .map_err(|e| format!("the armour's body is not base64: {e}"))?;
    if bin.is_empty() || bin[0] & 0x80 == 0 {
        return Err("the armour holds no OpenPGP packet".into());
    }
    if let Some(c) = crc {
        let want = base64::engine::general_purpose::STANDARD
            .decode(c.as_bytes())
            .map_err(|_| "the armour's checksum line is not base64".to_string())?;
        let got = crc24(&bin).to_be_bytes();
        if want != got[1..] {
            return Err("the armour's CRC-24 does not match its body (a damaged download?)".into());
        }
    }
    Ok(bin)
}

/// RFC 4880 §6.1 CRC-24.
fn crc24(data: &[u8]) -> u32 {
    let mut crc: u32 = 0xB7_04CE;
    for &b in data {
        crc ^= u32::from(b) << 16;
        for _ in 0..8 {
            crc <<= 1;
            if crc & 0x100_0000 != 0 {
                crc ^= 0x186_4CFB;
            }
        }
    }
    crc & 0xFF_FFFF
}

/// Fetches and dearmors each repository's key (a few KiB, never cached: a rotated key is
/// picked up at the next create) and returns the seed's part.
pub fn seed_part(
    stack: &GuestStack,
    get: &dyn Fn(&str) -> Result<Vec<u8>, guest_media::Error>,
) -> Result<Option<guest_media::seed::GuestPackages>, GuestStackError> {
    if stack.packages.is_empty() {
        return Ok(None);
    }
    let mut repos = Vec::new();
    for r in &stack.repos {
        let raw = get(&r.key_url).map_err(|source| GuestStackError::FetchKey {
            url: r.key_url.clone(),
            source: Box::new(source),
        })?;
        let keyring = dearmor(&raw).map_err(|reason| GuestStackError::BadKey {
            url: r.key_url.clone(),
            reason,
        })?;
        repos.push(guest_media::seed::AptRepo {
            name: r.name.clone(),
            uri: r.uri.clone(),
            keyring_path: r.keyring_path.clone(),
            keyring,
        });
    }
    Ok(Some(guest_media::seed::GuestPackages {
        repos,
        packages: stack.packages.clone(),
        enable_services: stack.services.clone(),
        reboot_unless_module: stack.reboot_unless_module.clone(),
    }))
}

#[cfg(test)]
mod tests;
