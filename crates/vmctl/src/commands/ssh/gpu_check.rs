//! `vmctl gpu check VM`: over SSH, asks the guest's `nvidia-smi` for each GPU it drives and
//! compares them with the GPUs passed in the domain XML. The parsing is pure
//! ([`parse_query`], [`missing`]); the SSH login is [`super::ssh_argv`]'s (batch mode).
//!
//! Query fields from `nvidia-smi --help-query-gpu`: `index`, `pci.bus_id` (the guest's
//! domain:bus:device.function), `pci.device_id` ("PCI vendor device id, in
//! 0xdeviceidvendorid format"), `name`, `driver_version`, `memory.total` (MiB with
//! `nounits`), `ecc.mode.current` (`Enabled`, `Disabled`, or `[N/A]` on GPUs without ECC).

use hwdetect::HostFacts;
use hypervisor::domain::PciAddress;
use hypervisor::domain::parse::parse_domain;
use serde::Serialize;

use crate::commands::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// The fields asked, in this order.
pub const QUERY: &str =
    "index,pci.bus_id,pci.device_id,name,driver_version,memory.total,ecc.mode.current";

/// The remote command (ssh joins it into one line for the guest's shell; no user text in it).
pub fn query_argv() -> Vec<String> {
    [
        "nvidia-smi",
        &format!("--query-gpu={QUERY}"),
        "--format=csv,noheader,nounits",
    ]
    .map(String::from)
    .to_vec()
}

/// One GPU as the guest's driver reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GuestGpu {
    pub index: u32,
    /// The guest's PCI address (not the host's).
    pub bus_id: String,
    /// `10de:2335`, from `pci.device_id`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
    pub name: String,
    pub driver_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    /// `enabled`, `disabled` or `unsupported`.
    pub ecc: String,
}

/// A GPU the domain XML passes through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PassedGpu {
    /// The host's PCI address.
    pub bdf: String,
    pub name: String,
    /// `10de:2335`.
    pub pci_id: String,
}

/// `vmctl gpu check` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuCheck {
    pub vm: String,
    pub passed: Vec<PassedGpu>,
    pub gpus: Vec<GuestGpu>,
    /// Passed GPUs the guest's driver does not see.
    pub missing: Vec<PassedGpu>,
    pub ok: bool,
}

/// Refusals and failures of `gpu check`; carried by [`Error::Command`].
#[derive(Debug, thiserror::Error)]
pub enum GpuCheckError {
    #[error(
        "`vmctl gpu check` does not support Talos nodes yet ({vm} runs Talos, which has no SSH)"
    )]
    Talos { vm: String },
    #[error("nvidia-smi is not installed in {vm}: the NVIDIA driver is not installed")]
    NoDriver { vm: String },
    #[error("nvidia-smi failed in {vm} (exit status {status}): {message}")]
    SmiFailed {
        vm: String,
        status: i32,
        message: String,
    },
    #[error("ssh to {vm} failed: {message}")]
    Ssh { vm: String, message: String },
    #[error("nvidia-smi's output in {vm} is not what was asked for: {reason}")]
    BadOutput { vm: String, reason: String },
    #[error("{vm}: {} of {passed} passed GPU(s) not seen by the guest's driver: {}", missing.len(), missing.join(", "))]
    Missing {
        vm: String,
        passed: usize,
        missing: Vec<String>,
    },
}

impl CommandFailure for GpuCheckError {
    fn exit_kind(&self) -> ExitKind {
        match self {
            Self::Talos { .. } => ExitKind::Usage,
            _ => ExitKind::Failure,
        }
    }
    fn help(&self) -> Vec<String> {
        match self {
            Self::Talos { vm } => vec![format!(
                "on Talos the NVIDIA driver is a system extension: check the node with `talosctl -n <NODE-IP> get extensions` and `talosctl -n <NODE-IP> dmesg | grep -i nvidia` (`vmctl ssh {vm}` prints its talosctl command)"
            )],
            Self::NoDriver { vm } => vec![
                "create the VM with `vmctl create ubuntu NAME --gpu … --gpu-stack driver` (the default with --gpu), which installs it through cloud-init".into(),
                format!("or install it by hand: `vmctl ssh {vm}`, add NVIDIA's CUDA repository and `sudo apt-get install nvidia-open-580` (or cuda-drivers-580 before Turing)"),
            ],
            Self::SmiFailed { vm, .. } => vec![
                format!("a driver installed by cloud-init may still need its reboot: `vmctl ssh {vm} -- cloud-init status --long`, then `vmctl ssh {vm} -- sudo dmesg | grep -i nvidia`"),
            ],
            Self::Ssh { vm, .. } => vec![format!(
                "is the VM up and answering? `vmctl info {vm}`, then `vmctl ssh {vm}`"
            )],
            Self::BadOutput { vm, .. } => vec![format!("run `vmctl ssh {vm} -- nvidia-smi` and look")],
            Self::Missing { vm, .. } => vec![format!(
                "a missing GPU is passed but not driven: `vmctl ssh {vm} -- sudo dmesg | grep -i -e nvrm -e nvidia` shows why (often an unsupported GPU for the installed branch, or a GPU that failed its reset)"
            )],
        }
    }
}

impl From<GpuCheckError> for Error {
    fn from(e: GpuCheckError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// `0x233510DE` → `10de:2335`.
fn pci_id(device_id: &str) -> Option<String> {
    let hex = device_id
        .trim()
        .strip_prefix("0x")
        .or_else(|| device_id.trim().strip_prefix("0X"))?;
    if hex.len() != 8 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let hex = hex.to_ascii_lowercase();
    Some(format!("{}:{}", &hex[4..], &hex[..4]))
}

/// Parses `nvidia-smi --query-gpu=QUERY --format=csv,noheader,nounits` output.
pub fn parse_query(out: &str) -> std::result::Result<Vec<GuestGpu>, String> {
    let mut gpus = Vec::new();
    for (n, line) in out.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        // Names have no commas (nvidia-smi's CSV does not quote): exactly seven fields.
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != 7 {
            return Err(format!(
                "line {}: {} field(s), expected 7 ({QUERY})",
                n + 1,
                f.len()
            ));
        }
        let index = f[0]
            .parse()
            .map_err(|_| format!("line {}: index {:?} is not a number", n + 1, f[0]))?;
        let ecc = match f[6] {
            "Enabled" => "enabled",
            "Disabled" => "disabled",
            "[N/A]" | "N/A" | "[Not Supported]" => "unsupported",
            other => other,
        };
        gpus.push(GuestGpu {
            index,
            bus_id: f[1].to_string(),
            pci_id: pci_id(f[2]),
            name: f[3].to_string(),
            driver_version: f[4].to_string(),
            memory_mib: f[5].parse().ok(),
            ecc: ecc.to_string(),
        });
    }
    Ok(gpus)
}

/// The passed GPUs the guest does not report, matched by PCI ID (the guest sees its own PCI
/// addresses, not the host's); a guest GPU of unknown ID stands for any one.
pub fn missing(passed: &[PassedGpu], seen: &[GuestGpu]) -> Vec<PassedGpu> {
    let mut left: Vec<Option<&str>> = seen.iter().map(|g| g.pci_id.as_deref()).collect();
    let mut out = Vec::new();
    for p in passed {
        let pos = left
            .iter()
            .position(|s| *s == Some(p.pci_id.as_str()))
            .or_else(|| left.iter().position(Option::is_none));
        match pos {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(p.clone()),
        }
    }
    out
}

/// The GPUs among the domain's hostdevs, named from the host facts.
pub fn passed_gpus(facts: &HostFacts, hostdevs: &[PciAddress]) -> Vec<PassedGpu> {
    facts
        .gpus
        .iter()
        .filter(|g| {
            g.bdf
                .parse::<PciAddress>()
                .is_ok_and(|a| hostdevs.contains(&a))
        })
        .map(|g| PassedGpu {
            bdf: g.bdf.clone(),
            name: g.name.clone(),
            pci_id: format!("{}:{}", g.vendor_id, g.device_id),
        })
        .collect()
}

/// Runs the check. `Ok` with `ok: false` when GPUs are missing (the binary prints the report,
/// then [`GpuCheckError::Missing`]).
pub fn check(ctx: &Ctx, vm: &str) -> Result<GpuCheck> {
    let rec = ctx.hv.require(vm)?;
    let f = parse_domain(&rec.xml)?;
    let md = f.metadata.clone().unwrap_or_default();
    if md.os == "talos" {
        return Err(GpuCheckError::Talos { vm: vm.into() }.into());
    }
    if !rec.state.is_active() {
        return Err(Error::NotRunning { name: vm.into() });
    }
    let facts = hwdetect::detect(ctx.host);
    // A VM without hostdevs is still asked: a GPU may reach it another way (a vGPU, a guest
    // of another tool), and what its driver reports is the answer.
    let passed = passed_gpus(&facts, &f.hostdevs);
    let (ip, _) = super::address(ctx, vm)?;
    let argv = super::ssh_argv(&md, ip, true, &query_argv());
    let out = ctx
        .runner
        .output(&hostio::Cmd::new(argv))
        .map_err(|source| Error::RunSsh {
            name: vm.into(),
            source,
        })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = out.stdout_str();
    match out.status {
        0 => {}
        // The guest's shell: command not found (bash, dash).
        127 => return Err(GpuCheckError::NoDriver { vm: vm.into() }.into()),
        // ssh's own failure (ssh(1): "exits with 255 if an error occurred").
        255 => {
            return Err(GpuCheckError::Ssh {
                vm: vm.into(),
                message: stderr,
            }
            .into());
        }
        status => {
            // nvidia-smi prints its reason on stdout ("NVIDIA-SMI has failed because it
            // couldn't communicate with the NVIDIA driver…", "No devices were found").
            let message = [stdout.trim(), stderr.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join("; ");
            return Err(GpuCheckError::SmiFailed {
                vm: vm.into(),
                status,
                message,
            }
            .into());
        }
    }
    let gpus = parse_query(&stdout).map_err(|reason| GpuCheckError::BadOutput {
        vm: vm.into(),
        reason,
    })?;
    let missing = missing(&passed, &gpus);
    Ok(GpuCheck {
        vm: vm.into(),
        ok: missing.is_empty() && !gpus.is_empty(),
        passed,
        gpus,
        missing,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like nvidia-smi 580 on an HGX H200 guest given two GPUs (one line per GPU, ", "
    /// between fields, `nounits`).
    const TWO_H200: &str = "0, 00000000:06:00.0, 0x233510DE, NVIDIA H200, 580.95.05, 143771, Enabled\n\
1, 00000000:07:00.0, 0x233510DE, NVIDIA H200, 580.95.05, 143771, Enabled\n";
    /// A GeForce card: no ECC.
    const RTX: &str =
        "0, 00000000:01:00.0, 0x1E8410DE, NVIDIA GeForce RTX 2070 SUPER, 580.95.05, 8192, [N/A]\n";

    fn passed(bdf: &str, id: &str) -> PassedGpu {
        PassedGpu {
            bdf: bdf.into(),
            name: "x".into(),
            pci_id: id.into(),
        }
    }

    #[test]
    fn parses_real_shaped_output() {
        let g = parse_query(TWO_H200).unwrap();
        assert_eq!(g.len(), 2);
        assert_eq!(g[1].index, 1);
        assert_eq!(g[1].bus_id, "00000000:07:00.0");
        assert_eq!(g[0].pci_id.as_deref(), Some("10de:2335"));
        assert_eq!(g[0].name, "NVIDIA H200");
        assert_eq!(g[0].driver_version, "580.95.05");
        assert_eq!(g[0].memory_mib, Some(143_771));
        assert_eq!(g[0].ecc, "enabled");
        let r = parse_query(RTX).unwrap();
        assert_eq!(r[0].ecc, "unsupported");
        assert_eq!(r[0].pci_id.as_deref(), Some("10de:1e84"));
        assert!(parse_query("").unwrap().is_empty());
        assert!(parse_query("No devices were found\n").is_err());
        assert!(parse_query("x, a, b, c, d, e, f\n").is_err());
    }

    #[test]
    fn missing_gpus_are_matched_by_pci_id() {
        let seen = parse_query(TWO_H200).unwrap();
        let h = |b| passed(b, "10de:2335");
        assert!(missing(&[h("0000:18:00.0"), h("0000:2a:00.0")], &seen).is_empty());
        let three = [h("0000:18:00.0"), h("0000:2a:00.0"), h("0000:3a:00.0")];
        assert_eq!(missing(&three, &seen), vec![h("0000:3a:00.0")]);
        // Another model's GPU is not stood in for by an H200.
        let other = [h("0000:18:00.0"), passed("0000:2b:00.0", "10de:1e84")];
        assert_eq!(missing(&other, &seen[..1]), vec![other[1].clone()]);
    }

    #[test]
    fn the_remote_command_is_the_documented_query() {
        assert_eq!(
            query_argv(),
            [
                "nvidia-smi",
                "--query-gpu=index,pci.bus_id,pci.device_id,name,driver_version,memory.total,ecc.mode.current",
                "--format=csv,noheader,nounits"
            ]
        );
    }
}
