//! `verify`: after the reboot, one check per expected outcome of each phase, with a fix hint.
//! Checks that need a running system (nvidia-smi, libvirt, vmctl) are skipped without a runner.

use std::fmt::Write as _;

use hostio::{Cmd, CommandRunner, paths};
use hwdetect::HostFacts;
use serde::Serialize;

use crate::options::{GpuMode, Options};
use crate::phases::iommu::iommu_args;
use crate::plan::Phase;
use crate::planner::select_gpus;
use crate::state::HostState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub phase: Phase,
    pub status: CheckStatus,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub checks: Vec<Check>,
}

impl VerifyReport {
    fn check(&mut self, phase: Phase, ok: bool, detail: impl Into<String>, hint: &str) {
        self.checks.push(Check {
            phase,
            status: if ok {
                CheckStatus::Ok
            } else {
                CheckStatus::Fail
            },
            detail: detail.into(),
            hint: (!ok).then(|| hint.to_string()),
        });
    }

    fn skipped(&mut self, phase: Phase, detail: impl Into<String>) {
        self.checks.push(Check {
            phase,
            status: CheckStatus::Skipped,
            detail: detail.into(),
            hint: None,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                CheckStatus::Ok => "✓",
                CheckStatus::Fail => "✗",
                CheckStatus::Skipped => "-",
            };
            let _ = writeln!(out, "{mark} [{}] {}", c.phase.name(), c.detail);
            if let Some(h) = &c.hint {
                let _ = writeln!(out, "    fix: {h}");
            }
        }
        let _ = writeln!(
            out,
            "{}",
            if self.ok {
                "all checks passed"
            } else {
                "some checks failed"
            }
        );
        out
    }
}

/// The libvirt connection the kvm check asks (the one vmctl uses by default).
const KVM_URI: &str = "qemu:///system";

/// Runs every check. `runner` is `None` under `--host-root` (live checks are then skipped).
pub fn verify(
    facts: &HostFacts,
    opts: &Options,
    state: &HostState,
    runner: Option<&dyn CommandRunner>,
) -> VerifyReport {
    let mut r = VerifyReport::default();
    let live = |argv: &[&str]| -> Option<Result<String, String>> {
        runner.map(|run| {
            run.run(&Cmd::new(argv.iter().copied()))
                .map(|o| o.stdout_str())
                .map_err(|e| e.to_string())
        })
    };

    let os = &facts.os;
    r.check(
        Phase::Preflight,
        os.id == "ubuntu" && os.version_id == "24.04",
        format!(
            "distribution: {} {}",
            if os.id.is_empty() { "unknown" } else { &os.id },
            os.version_id
        ),
        "gpu-vm-bootstrap targets Ubuntu 24.04; other releases may need manual steps",
    );
    boot_check(&mut r, facts);
    if !opts.skip.kvm {
        r.check(
            Phase::Kvm,
            facts.kvm.available,
            "/dev/kvm exists",
            "enable VT-x/AMD-V in the firmware and `modprobe kvm_intel` (or kvm_amd)",
        );
        // libvirt's capabilities through `virsh` (installed by this phase), parsed by the
        // hypervisor crate: gpu-vm-bootstrap does not link libvirt, because it must start on a
        // host that has none yet.
        match live(&["virsh", "-c", KVM_URI, "capabilities"]) {
            None => r.skipped(
                Phase::Kvm,
                "libvirt reports a kvm domain type (needs the live host)",
            ),
            Some(res) => {
                let caps = res.and_then(|xml| {
                    hypervisor::Capabilities::from_xml(KVM_URI, &xml).map_err(|e| e.to_string())
                });
                r.check(
                    Phase::Kvm,
                    caps.as_ref().is_ok_and(hypervisor::Capabilities::kvm),
                    match &caps {
                        Err(e) => format!("libvirt reachable at {KVM_URI}: {e}"),
                        Ok(_) => format!("libvirt at {KVM_URI} reports a kvm domain type"),
                    },
                    "`sudo systemctl enable --now libvirtd`, then `virt-host-validate qemu`",
                );
            }
        }
    }

    if let (Some(h), false) = (&opts.hugepages, opts.skip.iommu) {
        let args = h.kernel_args();
        let missing: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| !facts.kernel_cmdline.iter().any(|c| c == a))
            .collect();
        r.check(
            Phase::Iommu,
            missing.is_empty(),
            if missing.is_empty() {
                format!("kernel command line has `{}`", args.join(" "))
            } else {
                format!("kernel command line lacks `{}`", missing.join(" "))
            },
            &cmdline_hint(facts),
        );
        let have = state.hugepages_reserved.unwrap_or(0);
        r.check(
            Phase::Iommu,
            have >= h.count,
            format!(
                "{have} of {} {} hugepages reserved",
                h.count,
                h.size.as_str()
            ),
            "the kernel could not find that much contiguous memory at boot: reserve fewer, or check `dmesg | grep -i huge`",
        );
    }
    let (sel, _, _) = select_gpus(facts, opts);
    if opts.gpu_mode != GpuMode::None && !opts.skip.iommu {
        let args = iommu_args(facts.cpu.vendor);
        let missing: Vec<&str> = args
            .iter()
            .copied()
            .filter(|a| !facts.kernel_cmdline.iter().any(|c| c == a))
            .collect();
        r.check(
            Phase::Iommu,
            missing.is_empty(),
            if missing.is_empty() {
                format!("kernel command line has `{}`", args.join(" "))
            } else {
                format!("kernel command line lacks `{}`", missing.join(" "))
            },
            &cmdline_hint(facts),
        );
        r.check(
            Phase::Iommu,
            facts.iommu.enabled,
            format!("{} IOMMU groups exist", facts.iommu.group_count),
            "enable VT-d / AMD-Vi in the firmware setup and reboot",
        );
        if opts.gpu_mode == GpuMode::Passthrough {
            for g in &sel.passthrough {
                let bad: Vec<String> = g
                    .functions
                    .iter()
                    .zip(&g.function_drivers)
                    .filter(|(_, d)| d.as_deref() != Some("vfio-pci"))
                    .map(|(f, d)| format!("{f} → {}", d.as_deref().unwrap_or("no driver")))
                    .collect();
                r.check(
                    Phase::Iommu,
                    bad.is_empty(),
                    if bad.is_empty() {
                        format!("GPU {} ({}) is bound to vfio-pci", g.bdf, g.name)
                    } else {
                        format!("GPU {} not on vfio-pci: {}", g.bdf, bad.join(", "))
                    },
                    &format!(
                        "check {} and run `sudo update-initramfs -u -k all`, then reboot",
                        paths::ETC_MODPROBE_VFIO
                    ),
                );
            }
        }
    }

    let host_driver = !opts.skip.nvidia
        && match opts.gpu_mode {
            GpuMode::None => false,
            GpuMode::Host => !facts.gpus.is_empty(),
            GpuMode::Passthrough => !sel.host.is_empty() || opts.host_driver,
        };
    if host_driver {
        nvidia_module_check(&mut r, facts, runner);
        match live(&["nvidia-smi", "-L"]) {
            None => r.skipped(Phase::Nvidia, "nvidia-smi works (needs the live host)"),
            Some(res) => r.check(
                Phase::Nvidia,
                res.is_ok(),
                match &res {
                    Ok(s) => format!("nvidia-smi sees {} GPU(s)", s.lines().count()),
                    Err(e) => format!("nvidia-smi failed: {e}"),
                },
                "reinstall the driver (`sudo gpu-vm-bootstrap apply`) and reboot",
            ),
        }
    }

    if !opts.skip.bridge {
        let br = facts.nics.iter().find(|n| n.name == opts.bridge_name);
        let addrs = br.map(|n| n.addresses.join(", ")).unwrap_or_default();
        r.check(
            Phase::Bridge,
            br.is_some_and(|n| n.is_bridge && !n.addresses.is_empty()),
            match br {
                Some(_) if !addrs.is_empty() => format!("{} holds {addrs}", opts.bridge_name),
                Some(_) => format!("{} exists but has no address", opts.bridge_name),
                None => format!("{} does not exist", opts.bridge_name),
            },
            &format!(
                "check {} and run `sudo netplan apply` from a console",
                paths::NETPLAN_BRIDGE_FILE
            ),
        );
        let via = facts.default_route.as_ref().map(|d| d.interface.as_str());
        r.check(
            Phase::Bridge,
            via == Some(opts.bridge_name.as_str()),
            format!("default route via {}", via.unwrap_or("nothing")),
            &format!(
                "the default route should use {}; see `ip route`",
                opts.bridge_name
            ),
        );
    }

    if !opts.skip.vmctl {
        // The package installs /usr/bin/vmctl; a bare binary goes to /usr/local/bin.
        let (installed, bin) = if state.has_package("vmctl") {
            (true, paths::USR_BIN_VMCTL)
        } else {
            (
                state.existing.contains(paths::USR_LOCAL_BIN_VMCTL),
                paths::USR_LOCAL_BIN_VMCTL,
            )
        };
        r.check(
            Phase::Vmctl,
            installed,
            format!("{bin} is installed"),
            "run `sudo gpu-vm-bootstrap apply` from a directory holding vmctl or vmctl_*.deb",
        );
        if let Some(res) = live(&[bin, "--version"]) {
            r.check(
                Phase::Vmctl,
                res.is_ok(),
                "vmctl runs",
                "reinstall vmctl (`sudo gpu-vm-bootstrap apply`)",
            );
        }
    }
    r.ok = r.checks.iter().all(|c| c.status != CheckStatus::Fail);
    r
}

/// The boot facts the plan relied on: firmware, Secure Boot, lockdown and the boot loader.
fn boot_check(r: &mut VerifyReport, facts: &HostFacts) {
    use hwdetect::{BootLoader, Firmware};
    let b = &facts.boot;
    let sb = match (b.firmware, b.secure_boot) {
        (Firmware::Bios, _) => "BIOS boot".to_string(),
        (Firmware::Unknown, _) => "firmware unknown".to_string(),
        (Firmware::Uefi, Some(on)) => {
            format!("UEFI, Secure Boot {}", if on { "on" } else { "off" })
        }
        (Firmware::Uefi, None) => "UEFI, Secure Boot state unknown".to_string(),
    };
    let lockdown = b
        .lockdown
        .as_deref()
        .map(|l| format!(", lockdown {l}"))
        .unwrap_or_default();
    let detail = format!("boot: {sb}{lockdown}; boot loader {}", b.loader.name());
    if b.loader == BootLoader::Unknown {
        // Not a failure by itself: the command-line check below says whether it matters.
        r.skipped(
            Phase::Preflight,
            format!("{detail} (`gpu-vm-bootstrap detect` shows what was found)"),
        );
    } else {
        r.check(Phase::Preflight, true, detail, "");
    }
}

/// Where the boot loader keeps the command line, for the fix hint of a missing argument.
fn cmdline_hint(facts: &HostFacts) -> String {
    use hwdetect::BootLoader;
    match facts.boot.loader {
        // The GRUB hint as it always was.
        BootLoader::Grub | BootLoader::Unknown => {
            "run `sudo gpu-vm-bootstrap apply`, then reboot (update-grub must have run)".into()
        }
        l => format!(
            "run `sudo gpu-vm-bootstrap apply`, then reboot; {} boots this host and reads the command line from {}",
            l.name(),
            crate::bootloader::where_cmdline_lives(l)
        ),
    }
}

/// The nvidia module is loaded; when it is not and the kernel enforces module signatures,
/// says that Secure Boot refused it and how to get it loaded (the MOK to enrol for a DKMS
/// build, checked with `mokutil --test-key` on the live host).
fn nvidia_module_check(
    r: &mut VerifyReport,
    facts: &HostFacts,
    runner: Option<&dyn CommandRunner>,
) {
    if facts.nvidia_module_loaded {
        let v = facts
            .nvidia_driver
            .loaded_version
            .as_deref()
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        r.check(
            Phase::Nvidia,
            true,
            format!("the nvidia kernel module is loaded{v}"),
            "",
        );
        return;
    }
    if !facts.boot.module_signatures_enforced() {
        r.check(
            Phase::Nvidia,
            false,
            "the nvidia kernel module is loaded",
            "reboot after the driver install; `sudo dmesg | grep -i nvidia` shows why it did not load",
        );
        return;
    }
    let why = crate::phases::nvidia::enforcement(facts);
    let d = &facts.nvidia_driver;
    let run_installer = d.run_uninstaller || !d.unowned_modules.is_empty();
    if !d.dkms_modules.is_empty() {
        // mokutil(1): `--test-key` says whether a key is already enrolled.
        let enrolled = runner.map(|run| {
            run.run(&Cmd::new(["mokutil", "--test-key", paths::SHIM_MOK_DER]))
                .map(|o| o.stdout_str())
                .map_err(|e| e.to_string())
        });
        // mokutil prints "… is already enrolled" or "… is not enrolled" (its exit status differs
        // between versions), and fails outright without EFI variables.
        let text = enrolled.as_ref().map(|r| match r {
            Ok(o) | Err(o) => o.as_str(),
        });
        let key = match text {
            Some(t) if t.contains("already enrolled") => format!(
                "; its key {} is enrolled, so the module itself is not signed with it (`sudo dkms status`, then `sudo dkms autoinstall` re-signs)",
                paths::SHIM_MOK_DER
            ),
            Some(t) if t.contains("not enrolled") => format!(
                "; mokutil says its key {} is not enrolled",
                paths::SHIM_MOK_DER
            ),
            Some(t) => format!(
                "; mokutil could not tell whether its key {} is enrolled: {}",
                paths::SHIM_MOK_DER,
                t.trim()
            ),
            None => String::new(),
        };
        r.check(
            Phase::Nvidia,
            false,
            format!(
                "the nvidia kernel module is not loaded: {why}, and the kernel refuses a module not signed by an enrolled key; this one was built by DKMS ({}){key}",
                d.dkms_modules.join(", ")
            ),
            &format!(
                "enrol the key DKMS signs with: `sudo mokutil --import {}`, reboot and choose Enroll MOK in MokManager; or remove the DKMS driver and run `sudo gpu-vm-bootstrap apply` to install Ubuntu's signed prebuilt modules",
                paths::SHIM_MOK_DER
            ),
        );
    } else if run_installer {
        r.check(
            Phase::Nvidia,
            false,
            format!(
                "the nvidia kernel module is not loaded: {why}, and the module of NVIDIA's .run installer is not signed by a key the kernel trusts"
            ),
            "remove it (`sudo nvidia-uninstall`) and run `sudo gpu-vm-bootstrap apply` to install Ubuntu's signed prebuilt modules",
        );
    } else {
        r.check(
            Phase::Nvidia,
            false,
            format!(
                "the nvidia kernel module is not loaded ({why}: only signed modules load)"
            ),
            "reboot after the driver install; `sudo dmesg | grep -i -e nvidia -e 'key was rejected'` shows whether the kernel refused the module",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostio::{Output, RecordingRunner};
    use hwdetect::{Gpu, OsInfo};

    #[test]
    fn live_checks_use_the_runner_and_give_fix_hints() {
        let facts = HostFacts {
            os: OsInfo {
                id: "ubuntu".into(),
                version_id: "24.04".into(),
                ..OsInfo::default()
            },
            gpus: vec![Gpu {
                bdf: "0000:01:00.0".into(),
                boot_vga: true,
                ..Gpu::default()
            }],
            ..HostFacts::default()
        };
        let runner = RecordingRunner::new()
            .answer(["virsh"], Output::ok("<capabilities><guest><arch name='x86_64'><domain type='kvm'/></arch></guest></capabilities>"))
            .answer(["nvidia-smi"], Output::failed(9, "NVIDIA-SMI has failed"));
        let opts = Options::default();
        let r = verify(&facts, &opts, &HostState::default(), Some(&runner));
        assert!(!r.ok);
        let text = r.render();
        assert!(
            text.contains("✓ [preflight] distribution: ubuntu 24.04"),
            "{text}"
        );
        assert!(
            text.contains("✓ [kvm] libvirt at qemu:///system reports a kvm domain type"),
            "{text}"
        );
        assert!(text.contains("✗ [nvidia] nvidia-smi failed"), "{text}");
        assert!(
            text.contains("✗ [kvm] /dev/kvm exists\n    fix: "),
            "{text}"
        );
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["checks"][0]["status"], "ok");
    }

    /// The kvm check parses libvirt's capabilities (the hypervisor crate's parser) instead of
    /// looking for one spelling: double quotes count, a TCG-only host does not.
    #[test]
    fn kvm_check_parses_the_capabilities_xml() {
        let kvm_line = |answer: &str| {
            let runner = RecordingRunner::new().answer(["virsh"], Output::ok(answer));
            let r = verify(
                &HostFacts::default(),
                &Options::default(),
                &HostState::default(),
                Some(&runner),
            );
            r.render()
                .lines()
                .find(|l| l.contains("[kvm] libvirt"))
                .unwrap_or_default()
                .to_string()
        };
        let caps = |domains: &str| {
            format!(
                "<capabilities><guest><os_type>hvm</os_type><arch name=\"x86_64\">{domains}</arch></guest></capabilities>"
            )
        };
        assert!(kvm_line(&caps(r#"<domain type="qemu"/><domain type="kvm"/>"#)).starts_with('✓'));
        assert!(kvm_line(&caps(r#"<domain type="qemu"/>"#)).starts_with('✗'));
        let broken = kvm_line("<capabilities><guest></arch>");
        assert!(
            broken.starts_with("✗ [kvm] libvirt reachable at qemu:///system: "),
            "{broken}"
        );
    }
}
