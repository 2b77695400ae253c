//! IOMMU/VFIO phase: IOMMU args on the kernel command line where the host's boot loader keeps
//! it (`/etc/default/grub`, `/etc/kernel/cmdline` for systemd-boot, kernelstub's
//! configuration; an unknown loader is refused), the VFIO modules, `vfio-pci` ids (or a
//! per-device `driver_override` hook when the IDs are shared with a host GPU), then update-grub
//! and update-initramfs. Facts from host-setup.md and the kernel's vfio.rst.

use hostio::paths;
use hwdetect::{BootLoader, CpuVendor, Gpu};

use crate::bootloader;
use crate::grubcfg::{self, Fix};
use crate::options::{GpuMode, Hugepages};
use crate::plan::{ActionKind, Phase};
use crate::planner::Planner;

/// IOMMU kernel args per CPU vendor. AMD's IOMMU is on by default and there is no
/// `amd_iommu=on` value (kernel-parameters.txt), so AMD only gets passthrough mode `iommu=pt`.
pub fn iommu_args(vendor: CpuVendor) -> &'static [&'static str] {
    match vendor {
        CpuVendor::Intel => &["intel_iommu=on", "iommu=pt"],
        CpuVendor::Amd | CpuVendor::Unknown => &["iommu=pt"],
    }
}

/// What passthrough does with an argument already on the command line that keeps the IOMMU
/// off (kernel-parameters.txt): `intel_iommu=off` becomes `intel_iommu=on`, `iommu=off` becomes
/// `iommu=pt`, and `amd_iommu=off` goes (AMD's IOMMU is on by default; there is no `on`).
pub fn passthrough_fix(vendor: CpuVendor, word: &str) -> Option<Fix> {
    let (key, value) = word.split_once('=')?;
    let off = value.trim_matches('"').split(',').any(|v| v == "off");
    if !off {
        return None;
    }
    match (key, vendor) {
        ("intel_iommu", CpuVendor::Intel | CpuVendor::Unknown) => {
            Some(Fix::Replace("intel_iommu=on".into()))
        }
        ("amd_iommu", CpuVendor::Amd | CpuVendor::Unknown) => Some(Fix::Remove),
        ("iommu", _) => Some(Fix::Replace("iommu=pt".into())),
        _ => None,
    }
}

/// What the command-line edit is for, in the plan's reasons: the IOMMU, the hugepages or both.
fn purpose(p: &Planner<'_>) -> String {
    let iommu = (p.opts.gpu_mode != GpuMode::None)
        .then(|| "enable the IOMMU in passthrough mode".to_string());
    let huge = p
        .opts
        .hugepages
        .map(|h| format!("reserve {} {} hugepages at boot", h.count, h.size.as_str()));
    match (iommu, huge) {
        (Some(i), Some(h)) => format!("{i} and {h}"),
        (Some(i), None) => i,
        (None, Some(h)) => h,
        (None, None) => String::new(),
    }
}

/// `--hugepages`: another value for one of its keys already on the command line gives way to
/// ours (a second `hugepagesz=`/`hugepages=` pair would reserve a second pool).
pub fn hugepages_fix(h: &Hugepages, word: &str) -> Option<Fix> {
    let (key, _) = word.split_once('=')?;
    h.kernel_args()
        .into_iter()
        .find(|a| a.split('=').next() == Some(key) && a != word)
        .map(Fix::Replace)
}

/// Plans the kernel command-line edit in update-grub's files. Returns whether a file changes
/// and the arguments the next boot will carry.
fn plan_grub<'a>(p: &mut Planner<'_>, args: &[&'a str]) -> Option<(bool, Vec<&'a str>)> {
    let ph = Phase::Iommu;
    // update-grub sources /etc/default/grub, then /etc/default/grub.d/*.cfg in order (Ubuntu
    // cloud images set the command line in 50-cloudimg-settings.cfg).
    let mut files = vec![paths::ETC_DEFAULT_GRUB.to_string()];
    files.extend(p.state.grub_d_files.iter().cloned());
    let texts: Vec<&str> = files
        .iter()
        .map(|f| p.state.content(f).unwrap_or(""))
        .collect();
    let fix = iommu_fix(p);
    let edit = match grubcfg::edit_cmdline(&texts, args, &fix) {
        Ok(e) => e,
        Err(r) => {
            let file = &files[r.file];
            let at = r.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            let help = match &r.conflict {
                Some(w) => format!(
                    "remove `{w}` from {file} (a reboot with it keeps the IOMMU off and passthrough cannot work), then run again"
                ),
                None => format!(
                    "write {} in {file} as one plain assignment, e.g. {}=\"quiet splash\", then run again; or add `{}` yourself, run `sudo update-grub` and pass --skip-iommu",
                    grubcfg::CMDLINE_DEFAULT,
                    grubcfg::CMDLINE_DEFAULT,
                    args.join(" ")
                ),
            };
            p.problem(
                ph,
                false,
                format!("cannot edit {file}{at} safely: {}", r.why),
                help,
            );
            return None;
        }
    };
    let mut effective: Vec<&'a str> = args.to_vec();
    for (other, arg) in &edit.kept {
        effective.retain(|a| a != arg);
        p.warn(format!(
            "the kernel command line already sets `{other}`; kept it instead of adding `{arg}`"
        ));
    }
    let Some((i, text)) = edit.write else {
        return Some((false, effective));
    };
    let path = &files[i];
    let mut reason = format!(
        "{}: add `{}` to the kernel command line",
        purpose(p),
        edit.added.join(" ")
    );
    if edit.added.is_empty() {
        reason = purpose(p);
    }
    for f in &edit.fixed {
        reason += &match &f.new {
            Some(n) => format!("; `{}` becomes `{n}`", f.old),
            None => format!("; `{}` is removed", f.old),
        };
    }
    let mode = p.state.file(path).map_or(0o644, |f| f.mode);
    let changed = p.write_file(ph, path, mode, text, reason);
    Some((changed, effective))
}

/// A planned command-line change: the commands that make the loader use it (empty when no
/// file changes) and the arguments the next boot will carry.
type LoaderPlan<'a> = (Vec<(Vec<String>, String)>, Vec<&'a str>);

/// Plans the kernel command-line edit the way the host's boot loader expects it.
fn plan_cmdline<'a>(p: &mut Planner<'_>, args: &[&'a str]) -> Option<LoaderPlan<'a>> {
    match p.facts.boot.loader {
        BootLoader::Grub => plan_grub(p, args).map(|(changed, effective)| {
            let cmds = if changed {
                vec![(
                    vec!["update-grub".to_string()],
                    "regenerate /boot/grub/grub.cfg with the new kernel command line".to_string(),
                )]
            } else {
                Vec::new()
            };
            (cmds, effective)
        }),
        BootLoader::SystemdBoot => plan_systemd_boot(p, args),
        BootLoader::Kernelstub => plan_kernelstub(p, args),
        BootLoader::Unknown => {
            let missing: Vec<&str> = args
                .iter()
                .copied()
                .filter(|a| !p.facts.kernel_cmdline.iter().any(|c| c == a))
                .collect();
            if missing.is_empty() {
                // The running kernel has every argument: nothing to edit, whatever the loader.
                return Some((Vec::new(), args.to_vec()));
            }
            let evidence = &p.facts.boot.loader_evidence;
            p.problem(
                Phase::Iommu,
                false,
                format!(
                    "cannot tell which boot loader starts this host ({}), so the kernel command line cannot be edited safely; {} is never written on a host that does not boot through GRUB",
                    if evidence.is_empty() {
                        "nothing found".to_string()
                    } else {
                        evidence.join("; ")
                    },
                    paths::ETC_DEFAULT_GRUB
                ),
                format!(
                    "add `{}` to the kernel command line with your boot loader's own tool, reboot, and run again (a running kernel that has them needs no edit)",
                    missing.join(" ")
                ),
            );
            None
        }
    }
}

/// The loader's evidence, for the reasons: `systemd-boot (LoaderInfo EFI variable: "…")`.
fn loader_reason(p: &Planner<'_>) -> String {
    let b = &p.facts.boot;
    match b.loader_evidence.first() {
        Some(e) => format!("{} ({e})", b.loader.name()),
        None => b.loader.name().to_string(),
    }
}

/// The arguments that must go or change: IOMMU off switches (passthrough), other hugepage
/// values (`--hugepages`).
fn iommu_fix(p: &Planner<'_>) -> impl Fn(&str) -> Option<Fix> + use<> {
    let vendor = p.facts.cpu.vendor;
    let passthrough = p.opts.gpu_mode == GpuMode::Passthrough;
    let huge = p.opts.hugepages;
    move |w: &str| {
        let iommu = if passthrough {
            passthrough_fix(vendor, w)
        } else {
            None
        };
        iommu.or_else(|| huge.as_ref().and_then(|h| hugepages_fix(h, w)))
    }
}

/// Warnings for kept arguments and the reason text of an edit.
fn edit_reason<'a>(
    p: &mut Planner<'_>,
    e: &bootloader::WordEdit,
    args: &[&'a str],
) -> (String, Vec<&'a str>) {
    let mut effective: Vec<&'a str> = args.to_vec();
    for (other, arg) in &e.kept {
        effective.retain(|a| a != arg);
        p.warn(format!(
            "the kernel command line already sets `{other}`; kept it instead of adding `{arg}`"
        ));
    }
    let mut reason = if e.added.is_empty() {
        purpose(p)
    } else {
        format!(
            "{}: add `{}` to the kernel command line",
            purpose(p),
            e.added.join(" ")
        )
    };
    for f in &e.fixed {
        reason += &match &f.new {
            Some(n) => format!("; `{}` becomes `{n}`", f.old),
            None => format!("; `{}` is removed", f.old),
        };
    }
    (reason, effective)
}

/// systemd-boot: `/etc/kernel/cmdline`, then `kernel-install add` for every installed kernel.
fn plan_systemd_boot<'a>(p: &mut Planner<'_>, args: &[&'a str]) -> Option<LoaderPlan<'a>> {
    let ph = Phase::Iommu;
    let path = paths::ETC_KERNEL_CMDLINE;
    let file = p.state.content(path).map(str::to_string);
    let words = bootloader::systemd_boot_words(file.as_deref(), &p.facts.kernel_cmdline);
    let fix = iommu_fix(p);
    let e = bootloader::edit_words(&words, args, &fix);
    let (mut reason, effective) = edit_reason(p, &e, args);
    if !e.changed() {
        return Some((Vec::new(), effective));
    }
    reason += &format!(
        " (boot loader: {}; kernel-install copies {path} into each loader entry)",
        loader_reason(p)
    );
    if file.is_none() {
        reason += &format!(
            "; {path} does not exist yet, so it starts from the running command line without BOOT_IMAGE= and initrd=, which is what kernel-install uses without it"
        );
    }
    let mode = p.state.file(path).map_or(0o644, |f| f.mode);
    let content = format!("{}\n", e.words.join(" "));
    if !p.write_file(ph, path, mode, content, reason) {
        return Some((Vec::new(), effective));
    }
    let kernels = p.facts.boot.kernels.clone();
    if kernels.is_empty() {
        p.warn(format!(
            "no /boot/vmlinuz-* found: after apply, run `sudo kernel-install add VERSION /boot/vmlinuz-VERSION /boot/initrd.img-VERSION` for each kernel so its loader entry carries {path}"
        ));
    }
    let cmds = bootloader::kernel_install_commands(&kernels)
        .into_iter()
        .map(|argv| {
            let why = format!(
                "systemd-boot: rewrite the loader entry of kernel {} with the new {path}",
                argv[2]
            );
            (argv, why)
        })
        .collect();
    Some((cmds, effective))
}

/// kernelstub: `user.kernel_options` in its configuration, then `kernelstub` writes the entry.
fn plan_kernelstub<'a>(p: &mut Planner<'_>, args: &[&'a str]) -> Option<LoaderPlan<'a>> {
    let ph = Phase::Iommu;
    let path = paths::ETC_KERNELSTUB_CONFIG;
    let Some(text) = p.state.content(path).map(str::to_string) else {
        p.problem(
            ph,
            false,
            format!("kernelstub boots this host, but {path} cannot be read"),
            format!(
                "run `sudo kernelstub -a \"{}\"` yourself, reboot, and run again",
                args.join(" ")
            ),
        );
        return None;
    };
    let opts = match bootloader::kernelstub_options(&text) {
        Ok(o) => o,
        Err(bootloader::KernelstubUnreadable(why)) => {
            p.problem(
                ph,
                false,
                format!("cannot edit {path} safely: {why}"),
                format!("fix {path} (`sudo kernelstub --print-config` shows what kernelstub reads), or run `sudo kernelstub -a \"{}\"` yourself, then run again", args.join(" ")),
            );
            return None;
        }
    };
    let words: Vec<&str> = opts.iter().map(String::as_str).collect();
    let fix = iommu_fix(p);
    let e = bootloader::edit_words(&words, args, &fix);
    let (mut reason, effective) = edit_reason(p, &e, args);
    if !e.changed() {
        return Some((Vec::new(), effective));
    }
    let content = match bootloader::kernelstub_with_options(&text, &e.words) {
        Ok(c) => c,
        Err(bootloader::KernelstubUnreadable(why)) => {
            p.problem(
                ph,
                false,
                format!("cannot edit {path} safely: {why}"),
                format!(
                    "run `sudo kernelstub -a \"{}\"` yourself, then run again",
                    args.join(" ")
                ),
            );
            return None;
        }
    };
    reason += &format!(
        " (boot loader: {}; kernelstub writes `user.kernel_options` into the loader entry)",
        loader_reason(p)
    );
    let mode = p.state.file(path).map_or(0o644, |f| f.mode);
    if !p.write_file(ph, path, mode, content, reason) {
        return Some((Vec::new(), effective));
    }
    Some((
        vec![(
            bootloader::kernelstub_command(),
            format!("kernelstub: rewrite the loader entry from {path}"),
        )],
        effective,
    ))
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

/// Percent of `MemTotal` that `--hugepages` may take without `--force`: the host keeps the rest
/// for itself, QEMU's own memory and the page cache.
pub const HUGEPAGES_MAX_PERCENT: u64 = 90;

/// Checks `--hugepages` against `MemTotal`; a refusal `--force` overrides.
fn check_hugepages(p: &mut Planner<'_>, h: &Hugepages) {
    let gib = |kib: u64| kib as f64 / (1024.0 * 1024.0);
    let Some(total) = p.state.mem_total_kib else {
        p.warn(format!(
            "{}: no MemTotal, so --hugepages {}:{} is not checked against the host's memory",
            paths::PROC_MEMINFO,
            h.size.as_str(),
            h.count
        ));
        return;
    };
    let want = h.total_kib();
    if want.saturating_mul(100) > total.saturating_mul(HUGEPAGES_MAX_PERCENT) {
        let max = total * HUGEPAGES_MAX_PERCENT / 100 / h.size.kib();
        p.problem(
            Phase::Iommu,
            true,
            format!(
                "--hugepages {}:{} reserves {:.1} GiB, {}% of this host's {:.1} GiB (MemTotal): more than {HUGEPAGES_MAX_PERCENT}%, which leaves the host too little to run",
                h.size.as_str(),
                h.count,
                gib(want),
                want * 100 / total.max(1),
                gib(total)
            ),
            format!(
                "reserve at most {max} pages (--hugepages {}:{max}), or pass --force",
                h.size.as_str()
            ),
        );
    }
}

pub fn plan(p: &mut Planner<'_>) {
    let huge = p.opts.hugepages;
    if p.opts.gpu_mode == GpuMode::None && huge.is_none() {
        return;
    }
    let ph = Phase::Iommu;
    let huge_args: Vec<String> = huge.map(|h| h.kernel_args()).unwrap_or_default();
    let mut args: Vec<&str> = Vec::new();
    if p.opts.gpu_mode != GpuMode::None {
        args.extend(iommu_args(p.facts.cpu.vendor));
        if p.facts.cpu.vendor == CpuVendor::Unknown {
            p.warn(
                "unknown CPU vendor: adding only `iommu=pt`; Intel hosts also need `intel_iommu=on`",
            );
        }
    }
    if let Some(h) = &huge {
        check_hugepages(p, h);
        args.extend(huge_args.iter().map(String::as_str));
    }
    let (loader_cmds, args) = plan_cmdline(p, &args).unwrap_or((Vec::new(), Vec::new()));
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
        if p.facts.boot.module_signatures_enforced() {
            p.note(format!(
                "{}: passthrough is not affected, because vfio-pci, the only driver it needs, is part of Ubuntu's signed kernel; no key enrolment is needed for {bdfs}",
                crate::phases::nvidia::enforcement(p.facts)
            ));
        }
    } else if p.opts.gpu_mode == GpuMode::Passthrough {
        p.warn("no GPU selected for passthrough (the only NVIDIA GPU may be the boot VGA device): pass --gpu BDF");
    }
    for (argv, why) in loader_cmds {
        p.push(ph, ActionKind::RunCommand { argv }, why);
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
mod tests;
