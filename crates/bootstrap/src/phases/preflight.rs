//! Preflight: the distribution, firmware virtualisation/IOMMU hints, and GPU safety refusals
//! (boot VGA, non-isolated IOMMU groups, IOMMU groups absent after the reboot meant to add them).

use hwdetect::CpuVendor;

use crate::options::GpuMode;
use crate::phases::iommu::iommu_args;
use crate::plan::Phase;
use crate::planner::Planner;

/// Releases we plan for. 24.04 is the target; 26.04 is the next LTS and uses the same layout.
const SUPPORTED: &[&str] = &["24.04", "26.04"];

pub fn plan(p: &mut Planner<'_>) {
    let os = &p.facts.os;
    if os.id != "ubuntu" || !SUPPORTED.contains(&os.version_id.as_str()) {
        let what = match (os.id.as_str(), os.version_id.as_str()) {
            ("", _) => "an unknown distribution (no ID in /etc/os-release)".to_string(),
            (id, v) => format!("{id} {v}"),
        };
        p.problem(
            Phase::Preflight,
            true,
            format!("this host runs {what}; gpu-vm-bootstrap supports Ubuntu 24.04"),
            "run it on Ubuntu 24.04, or pass --force to plan anyway (package names and paths may differ)"
                .into(),
        );
    }
    if p.facts.cpu.virtualization.is_none() {
        p.warn("the CPU shows neither vmx nor svm: enable VT-x/AMD-V (SVM) in the firmware setup, or KVM will not work");
    }
    if p.opts.gpu_mode == GpuMode::None || p.opts.skip.iommu {
        return;
    }
    let args = iommu_args(p.facts.cpu.vendor);
    let booted_with_args = args
        .iter()
        .all(|a| p.facts.kernel_cmdline.iter().any(|c| c == a));
    if booted_with_args && !p.facts.iommu.enabled {
        let fw = match p.facts.cpu.vendor {
            CpuVendor::Amd => "AMD-Vi/IOMMU",
            _ => "VT-d",
        };
        p.problem(
            Phase::Preflight,
            p.opts.gpu_mode != GpuMode::Passthrough,
            format!(
                "the kernel booted with `{}` but there are no IOMMU groups: the IOMMU is off in the firmware",
                args.join(" ")
            ),
            format!("enable {fw} in the firmware setup (often also \"Above 4G decoding\"), reboot, and run again"),
        );
    } else if !p.facts.iommu.enabled {
        p.warn("no IOMMU groups yet: GPU isolation is checked again after the reboot (`gpu-vm-bootstrap verify`)");
    }
    // The same rules `vmctl gpu attach` applies (crates/passthrough): boot VGA and groups shared
    // with unrelated devices are refused unless forced; GPUs passed together may share a group.
    // Missing groups are expected before the reboot that enables the IOMMU (handled above).
    let sel = p.sel.passthrough.clone();
    for r in passthrough::check(p.facts, &sel, None, &[], &[]) {
        if matches!(r, passthrough::Refusal::NoIommu { .. }) {
            continue;
        }
        // gpu-vm-bootstrap's own override is --force too.
        p.problem(
            Phase::Preflight,
            r.forceable(),
            r.reason(),
            r.help("--force"),
        );
    }
}
