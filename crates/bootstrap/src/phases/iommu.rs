//! IOMMU/VFIO phase: IOMMU args in `/etc/default/grub`, the VFIO modules, `vfio-pci` ids (or a
//! per-device `driver_override` hook when the IDs are shared with a host GPU), then update-grub
//! and update-initramfs. Facts from host-setup.md and the kernel's vfio.rst.

use hostio::paths;
use hwdetect::{CpuVendor, Gpu};

use crate::options::GpuMode;
use crate::plan::Phase;
use crate::planner::Planner;

/// IOMMU kernel args per CPU vendor. AMD's IOMMU is on by default and there is no
/// `amd_iommu=on` value (kernel-parameters.txt), so AMD only gets passthrough mode `iommu=pt`.
pub fn iommu_args(vendor: CpuVendor) -> &'static [&'static str] {
    match vendor {
        CpuVendor::Intel => &["intel_iommu=on", "iommu=pt"],
        CpuVendor::Amd | CpuVendor::Unknown => &["iommu=pt"],
    }
}

const GRUB_KEY: &str = "GRUB_CMDLINE_LINUX_DEFAULT=";

/// Adds `args` to the last `GRUB_CMDLINE_LINUX_DEFAULT=` line (the one the shell keeps), keeping
/// every existing arg and its spacing, never adding an arg twice. An arg whose key is already set
/// to another value (`intel_iommu=off`) is left alone and reported. Returns (new text, warnings).
pub fn grub_with_args(grub: &str, args: &[&str]) -> (String, Vec<String>) {
    let mut warnings = Vec::new();
    let mut lines: Vec<String> = grub.lines().map(str::to_string).collect();
    let idx = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with(GRUB_KEY));
    let Some(idx) = idx else {
        let mut out = grub.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("{GRUB_KEY}\"{}\"\n", args.join(" ")));
        return (out, warnings);
    };
    let line = &lines[idx];
    let start = line.find(GRUB_KEY).unwrap_or(0) + GRUB_KEY.len();
    let (prefix, value) = line.split_at(start);
    // Quoted ("..." or '...') or a bare word; whatever follows the value is kept as is.
    let (quote, inner, rest) = match value.chars().next() {
        Some(q @ ('"' | '\'')) => match value[1..].find(q) {
            Some(end) => (Some(q), &value[1..1 + end], &value[2 + end..]),
            None => (Some(q), &value[1..], ""),
        },
        _ => {
            let end = value.find(char::is_whitespace).unwrap_or(value.len());
            (None, &value[..end], &value[end..])
        }
    };
    let tokens: Vec<&str> = inner.split_whitespace().collect();
    let mut added = Vec::new();
    for arg in args {
        let key = arg.split('=').next().unwrap_or(arg);
        if tokens.contains(arg) {
            continue;
        }
        if let Some(other) = tokens
            .iter()
            .find(|t| t.split('=').next() == Some(key) && t.contains('='))
        {
            warnings.push(format!(
                "{} already sets `{other}`; kept it instead of adding `{arg}`",
                paths::ETC_DEFAULT_GRUB
            ));
            continue;
        }
        added.push(*arg);
    }
    if added.is_empty() {
        return (grub.to_string(), warnings);
    }
    let mut new_inner = inner.to_string();
    for a in added {
        if !new_inner.trim().is_empty() {
            new_inner.push(' ');
        }
        new_inner.push_str(a);
    }
    let q = quote.unwrap_or('"');
    lines[idx] = format!("{prefix}{q}{new_inner}{q}{rest}");
    let mut out = lines.join("\n");
    if grub.ends_with('\n') {
        out.push('\n');
    }
    (out, warnings)
}

/// A `vendor:device` ID as sysfs shows it (`10de:2204`).
fn is_pci_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 9
        && b[4] == b':'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || c.is_ascii_hexdigit())
}

/// A PCI address `domain:bus:device.function` as sysfs names it (`0000:01:00.0`).
fn is_bdf(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

pub const MODULES_LOAD: &str = "\
# Written by gpu-vm-bootstrap: load VFIO early so vfio-pci can claim the reserved GPUs.
# vfio_virqfd is part of vfio since Linux 6.2 and must not be listed (modprobe would fail).
vfio
vfio_iommu_type1
vfio_pci
";

/// The drivers that must wait for vfio-pci so it claims the reserved functions first.
const SOFTDEPS: &[&str] = &[
    "nvidia",
    "nouveau",
    "nvidia_drm",
    "nvidiafb",
    "snd_hda_intel",
];

/// Vendor:device IDs of every function of `gpus`, first-seen order, without duplicates, and
/// without IDs that are not in `vendor:device` form.
pub fn function_ids(gpus: &[&Gpu]) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for g in gpus {
        for id in &g.function_ids {
            if is_pci_id(id) && !ids.contains(id) {
                ids.push(id.clone());
            }
        }
    }
    ids
}

fn softdeps() -> String {
    SOFTDEPS
        .iter()
        .map(|m| format!("softdep {m} pre: vfio-pci\n"))
        .collect()
}

pub fn modprobe_ids_conf(bdfs: &str, ids: &[String]) -> String {
    format!(
        "# Written by gpu-vm-bootstrap: reserve {bdfs} for VMs.\n\
         options vfio-pci ids={}\n{}",
        ids.join(","),
        softdeps()
    )
}

pub fn modprobe_override_conf(bdfs: &str, host: &str) -> String {
    format!(
        "# Written by gpu-vm-bootstrap: reserve {bdfs} for VMs by address (driver_override),\n\
         # because their vendor:device IDs are shared with GPUs the host keeps ({host}).\n\
         install vfio-pci {} $CMDLINE_OPTS\n{}",
        paths::VFIO_OVERRIDE_SCRIPT,
        softdeps()
    )
}

pub fn override_script(functions: &[String]) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by gpu-vm-bootstrap. modprobe runs this instead of loading vfio-pci (install hook in\n\
         # {}). It marks only these functions for vfio-pci, then loads vfio-pci, which claims them\n\
         # (Documentation/ABI/testing/sysfs-bus-pci: driver_override).\n\
         for dev in {}; do\n\
         \x20   if [ -e \"/sys/bus/pci/devices/$dev/driver_override\" ]; then\n\
         \x20       echo vfio-pci > \"/sys/bus/pci/devices/$dev/driver_override\"\n\
         \x20   fi\n\
         done\n\
         exec /sbin/modprobe --ignore-install vfio-pci \"$@\"\n",
        paths::ETC_MODPROBE_VFIO,
        functions.join(" ")
    )
}

pub fn initramfs_hook() -> String {
    format!(
        "#!/bin/sh\n\
         # Written by gpu-vm-bootstrap: vfio-pci may load from the initramfs, so the override script\n\
         # its modprobe install hook runs must be there too (initramfs-tools(7), HOOK SCRIPTS).\n\
         PREREQ=\"\"\n\
         prereqs() {{ echo \"$PREREQ\"; }}\n\
         case \"$1\" in prereqs) prereqs; exit 0;; esac\n\
         . /usr/share/initramfs-tools/hook-functions\n\
         copy_exec {} /usr/local/sbin\n",
        paths::VFIO_OVERRIDE_SCRIPT
    )
}

pub fn plan(p: &mut Planner<'_>) {
    if p.opts.gpu_mode == GpuMode::None {
        return;
    }
    let ph = Phase::Iommu;
    let args = iommu_args(p.facts.cpu.vendor);
    if p.facts.cpu.vendor == CpuVendor::Unknown {
        p.warn(
            "unknown CPU vendor: adding only `iommu=pt`; Intel hosts also need `intel_iommu=on`",
        );
    }
    // update-grub sources /etc/default/grub.d/*.cfg after /etc/default/grub, and Ubuntu cloud
    // images set GRUB_CMDLINE_LINUX_DEFAULT there (50-cloudimg-settings.cfg): edit the file whose
    // assignment wins.
    let grub_path = p
        .state
        .grub_d_files
        .iter()
        .rev()
        .find(|f| {
            p.state
                .content(f)
                .is_some_and(|c| c.lines().any(|l| l.trim_start().starts_with(GRUB_KEY)))
        })
        .cloned()
        .unwrap_or_else(|| paths::ETC_DEFAULT_GRUB.to_string());
    let old_grub = p.state.content(&grub_path).unwrap_or("");
    let (grub, warns) = grub_with_args(old_grub, args);
    for w in warns {
        p.warn(w.replace(paths::ETC_DEFAULT_GRUB, &grub_path));
    }
    let mode = p.state.file(&grub_path).map_or(0o644, |f| f.mode);
    let grub_changed = p.write_file(
        ph,
        &grub_path,
        mode,
        grub,
        format!(
            "enable the IOMMU in passthrough mode: add `{}` to the kernel command line",
            args.join(" ")
        ),
    );
    let mut initramfs_changed = false;
    let sel = p.sel.passthrough.clone();
    let host = p.sel.host.clone();
    if p.opts.gpu_mode == GpuMode::Passthrough && !sel.is_empty() {
        // The IDs and addresses become modprobe.d lines and a shell script; anything but the
        // sysfs forms (`10de:2204`, `0000:01:00.0`) could add lines to them. An unreadable
        // `vendor` file gives an ID like `:1aef`, which vfio-pci would reject anyway: it is
        // left out. A malformed address cannot come from sysfs (only from --facts): refused.
        let odd_ids: Vec<&str> = sel
            .iter()
            .chain(host.iter())
            .flat_map(|g| g.function_ids.iter().filter(|i| !is_pci_id(i)))
            .map(String::as_str)
            .collect();
        if !odd_ids.is_empty() {
            p.warn(format!(
                "left out PCI IDs that are not in `vendor:device` form: {odd_ids:?}"
            ));
        }
        let odd_bdfs: Vec<&str> = sel
            .iter()
            .chain(host.iter())
            .flat_map(|g| g.functions.iter().chain(std::iter::once(&g.bdf)))
            .filter(|b| !is_bdf(b))
            .map(String::as_str)
            .collect();
        if !odd_bdfs.is_empty() {
            p.problem(
                ph,
                false,
                format!("the host facts hold PCI addresses in an unexpected form: {odd_bdfs:?}"),
                "run `gpu-vm-bootstrap detect` to see what was read; with --facts, fix that file"
                    .into(),
            );
            return;
        }
        let bdfs: Vec<&str> = sel.iter().map(|g| g.bdf.as_str()).collect();
        let bdfs = bdfs.join(", ");
        initramfs_changed |= p.write_file(
            ph,
            paths::ETC_MODULES_LOAD_VFIO,
            0o644,
            MODULES_LOAD.to_string(),
            "load vfio, vfio_iommu_type1 and vfio_pci at boot",
        );
        let ids = function_ids(&sel);
        let host_ids = function_ids(&host);
        let shared: Vec<&String> = ids.iter().filter(|i| host_ids.contains(i)).collect();
        if shared.is_empty() {
            initramfs_changed |= p.write_file(
                ph,
                paths::ETC_MODPROBE_VFIO,
                0o644,
                modprobe_ids_conf(&bdfs, &ids),
                format!("vfio-pci claims every function of {bdfs} (ids {}); the NVIDIA, nouveau and HDA audio drivers load after it", ids.join(",")),
            );
        } else {
            let host_bdfs: Vec<&str> = host.iter().map(|g| g.bdf.as_str()).collect();
            let host_bdfs = host_bdfs.join(", ");
            let shared: Vec<&str> = shared.iter().map(|s| s.as_str()).collect();
            p.warn(format!(
                "IDs {} of {bdfs} are shared with {host_bdfs}, which stays on the host: `vfio-pci.ids` would grab both, so {bdfs} are bound by address with driver_override instead",
                shared.join(",")
            ));
            let functions: Vec<String> = sel.iter().flat_map(|g| g.functions.clone()).collect();
            initramfs_changed |= p.write_file(
                ph,
                paths::VFIO_OVERRIDE_SCRIPT,
                0o755,
                override_script(&functions),
                format!(
                    "set driver_override=vfio-pci on {} only, before vfio-pci loads",
                    functions.join(" ")
                ),
            );
            initramfs_changed |= p.write_file(
                ph,
                paths::INITRAMFS_HOOK_VFIO,
                0o755,
                initramfs_hook(),
                "put the override script into the initramfs",
            );
            initramfs_changed |= p.write_file(
                ph,
                paths::ETC_MODPROBE_VFIO,
                0o644,
                modprobe_override_conf(&bdfs, &host_bdfs),
                format!("bind {bdfs} by address: the IDs are shared with {host_bdfs}; the NVIDIA, nouveau and HDA audio drivers load after vfio-pci"),
            );
        }
        let unbound: Vec<&str> = sel
            .iter()
            .filter(|g| {
                g.function_drivers
                    .iter()
                    .any(|d| d.as_deref() != Some("vfio-pci"))
            })
            .map(|g| g.bdf.as_str())
            .collect();
        if !unbound.is_empty() {
            p.needs_reboot(format!("{} not bound to vfio-pci yet", unbound.join(", ")));
        }
    } else if p.opts.gpu_mode == GpuMode::Passthrough {
        p.warn("no GPU selected for passthrough (the only NVIDIA GPU may be the boot VGA device): pass --gpu BDF");
    }
    if grub_changed {
        p.run(
            ph,
            &["update-grub"],
            "regenerate /boot/grub/grub.cfg with the new kernel command line",
        );
    }
    if initramfs_changed {
        p.run(
            ph,
            &["update-initramfs", "-u", "-k", "all"],
            "rebuild the initramfs so vfio-pci claims the GPUs before any other driver",
        );
    }
    let missing: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| !p.facts.kernel_cmdline.iter().any(|c| c == a))
        .collect();
    if !missing.is_empty() {
        p.needs_reboot(format!("the running kernel lacks `{}`", missing.join(" ")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU: &str = "GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\nGRUB_CMDLINE_LINUX=\"\"\n";

    #[test]
    fn only_sysfs_forms_of_ids_and_addresses_pass() {
        assert!(is_pci_id("10de:2204") && is_pci_id("10DE:1aef"));
        for bad in ["10de:220", "10de-2204", "10de:2204\nx", "10de:22g4", ""] {
            assert!(!is_pci_id(bad), "{bad:?}");
        }
        assert!(is_bdf("0000:01:00.0") && is_bdf("0000:c3:1f.7"));
        for bad in [
            "01:00.0",
            "0000:01:00.0\n",
            "0000:01:00:0",
            "0000:01:00.0 x",
        ] {
            assert!(!is_bdf(bad), "{bad:?}");
        }
    }

    #[test]
    fn intel_args_are_appended_once() {
        let (g, w) = grub_with_args(UBUNTU, iommu_args(CpuVendor::Intel));
        assert!(
            g.contains("GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash intel_iommu=on iommu=pt\"\n")
        );
        assert!(w.is_empty());
        let (again, _) = grub_with_args(&g, iommu_args(CpuVendor::Intel));
        assert_eq!(again, g);
    }

    #[test]
    fn amd_gets_only_iommu_pt() {
        let (g, _) = grub_with_args(UBUNTU, iommu_args(CpuVendor::Amd));
        assert!(g.contains("\"quiet splash iommu=pt\""));
        assert!(!g.contains("amd_iommu"));
    }

    #[test]
    fn existing_args_are_kept_and_conflicts_reported() {
        let src = "GRUB_CMDLINE_LINUX_DEFAULT='iommu=pt intel_iommu=off'  # keep\n";
        let (g, w) = grub_with_args(src, iommu_args(CpuVendor::Intel));
        assert_eq!(g, src);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn last_assignment_is_edited_and_missing_line_added() {
        let src = "GRUB_CMDLINE_LINUX_DEFAULT=\"a\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\n";
        let (g, _) = grub_with_args(src, &["iommu=pt"]);
        assert_eq!(
            g,
            "GRUB_CMDLINE_LINUX_DEFAULT=\"a\"\nGRUB_CMDLINE_LINUX_DEFAULT=\"iommu=pt\"\n"
        );
        let (g, _) = grub_with_args("GRUB_DEFAULT=0", &["iommu=pt"]);
        assert_eq!(
            g,
            "GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"iommu=pt\"\n"
        );
    }
}
