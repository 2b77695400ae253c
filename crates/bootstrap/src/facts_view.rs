//! The human view of `detect` ([`HostFacts`]): a GPU table (GPU → group → isolation and blockers
//! → driver → boot VGA, laid out by [`clikit::table`]) followed by one summary line per topic.
//! Built from the same structs as `--json`.

use std::fmt::Write as _;

use hwdetect::{CpuVendor, Firmware, HostFacts, Virtualization};

/// Renders the facts as a readable table. Returns the text; the caller prints it.
pub fn render(facts: &HostFacts) -> String {
    let mut out = String::new();
    if facts.gpus.is_empty() {
        out.push_str("GPUs: no NVIDIA GPU (vendor 10de, class 0300/0302) found\n");
    } else {
        let header = [
            "GPU", "NAME", "GROUP", "ISOLATED", "BLOCKERS", "DRIVER", "BOOT VGA",
        ]
        .map(String::from)
        .to_vec();
        let rows: Vec<Vec<String>> = std::iter::once(header)
            .chain(facts.gpus.iter().map(|g| {
                vec![
                    g.bdf.clone(),
                    g.name.clone(),
                    g.iommu_group.map_or("-".into(), |n| n.to_string()),
                    match g.isolated {
                        Some(true) => "yes".into(),
                        Some(false) => "NO".into(),
                        None => "unknown".into(),
                    },
                    if g.group_blockers.is_empty() {
                        "-".into()
                    } else {
                        g.group_blockers.join(",")
                    },
                    g.driver.clone().unwrap_or_else(|| "(none)".into()),
                    if g.boot_vga { "yes" } else { "no" }.into(),
                ]
            }))
            .collect();
        let table = clikit::table(&rows);
        let mut lines = table.lines();
        let _ = writeln!(out, "{}", lines.next().unwrap_or_default());
        // Each GPU's row, then its functions under it.
        for (g, row) in facts.gpus.iter().zip(lines) {
            let _ = writeln!(out, "{row}");
            let funcs: Vec<String> = g
                .functions
                .iter()
                .zip(&g.function_drivers)
                .map(|(f, d)| format!("{f} ({})", d.as_deref().unwrap_or("no driver")))
                .collect();
            let _ = writeln!(out, "  functions: {}", funcs.join(", "));
            if g.isolated.is_none() {
                out.push_str("  isolation unknown: no IOMMU groups (IOMMU off or unsupported)\n");
            }
        }
    }
    if !facts.nvswitches.is_empty() {
        let _ = writeln!(
            out,
            "NVSwitches: {} (class 0680 bridges, not GPUs)",
            facts.nvswitches.join(", ")
        );
        out.push_str(&nvswitch_lines(facts));
    }
    out.push('\n');

    let vendor = match facts.cpu.vendor {
        CpuVendor::Intel => "intel",
        CpuVendor::Amd => "amd",
        CpuVendor::Unknown => "unknown vendor",
    };
    let virt = match facts.cpu.virtualization {
        Some(Virtualization::Vmx) => "vmx",
        Some(Virtualization::Svm) => "svm",
        None => "no vmx/svm flag",
    };
    let _ = writeln!(
        out,
        "CPU:    {vendor}, {virt}{}",
        facts
            .cpu
            .model_name
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    let os = if facts.os.id.is_empty() {
        "unknown".to_string()
    } else {
        format!("{} {}", facts.os.id, facts.os.version_id)
    };
    let _ = writeln!(out, "OS:     {}", os.trim_end());
    let _ = writeln!(
        out,
        "KVM:    {}",
        if facts.kvm.available {
            "/dev/kvm present"
        } else {
            "/dev/kvm missing"
        }
    );
    let _ = writeln!(
        out,
        "IOMMU:  {}; cmdline: {}",
        if facts.iommu.enabled {
            format!("enabled, {} groups", facts.iommu.group_count)
        } else {
            "no IOMMU groups".to_string()
        },
        if facts.iommu.cmdline.is_empty() {
            "(no iommu args)".to_string()
        } else {
            facts.iommu.cmdline.join(" ")
        }
    );
    let _ = writeln!(
        out,
        "NVIDIA: kernel module {}",
        if facts.nvidia_module_loaded {
            "loaded"
        } else {
            "not loaded"
        }
    );
    boot_lines(&mut out, facts);
    for n in &facts.nics {
        let mut s = format!(
            "NIC:    {} {} {}",
            n.name,
            n.state,
            n.mac.as_deref().unwrap_or("-")
        );
        if !n.addresses.is_empty() {
            let _ = write!(s, " {}", n.addresses.join(" "));
        }
        if n.is_bridge {
            s.push_str(" [bridge]");
        }
        if let Some(b) = &n.bridge {
            let _ = write!(s, " [in bridge {b}]");
        }
        if n.default_route
            && let Some(d) = &facts.default_route
        {
            let _ = write!(s, " [default route via {}]", d.gateway);
        }
        out.push_str(&s);
        out.push('\n');
    }
    if facts.nics.is_empty() {
        out.push_str("NIC:    none found\n");
    }
    if !facts.warnings.is_empty() {
        let _ = writeln!(out, "Warnings: {} (listed on stderr)", facts.warnings.len());
    }
    out
}

/// Firmware, Secure Boot, lockdown, boot loader, kernel, and the NVIDIA driver already there.
fn boot_lines(out: &mut String, facts: &HostFacts) {
    let b = &facts.boot;
    let firmware = match b.firmware {
        Firmware::Uefi => "UEFI",
        Firmware::Bios => "BIOS (no /sys/firmware/efi)",
        Firmware::Unknown => "unknown",
    };
    let sb = match (b.firmware, b.secure_boot) {
        (Firmware::Bios, _) => "n/a",
        (_, Some(true)) => "on",
        (_, Some(false)) => "off",
        (_, None) => "unknown",
    };
    let _ = writeln!(
        out,
        "Boot:   {firmware}; Secure Boot {sb}; lockdown {}",
        b.lockdown.as_deref().unwrap_or("unknown")
    );
    let _ = writeln!(
        out,
        "Loader: {} ({})",
        b.loader.name(),
        if b.loader_evidence.is_empty() {
            "nothing found".to_string()
        } else {
            b.loader_evidence.join("; ")
        }
    );
    if !facts.kernel.release.is_empty() {
        let _ = writeln!(
            out,
            "Kernel: {}{}",
            facts.kernel.release,
            if facts.kernel.metapackages.is_empty() {
                String::new()
            } else {
                format!(
                    " (metapackages: {})",
                    facts
                        .kernel
                        .metapackages
                        .iter()
                        .map(|m| format!("linux-image-{m}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    let d = &facts.nvidia_driver;
    let mut parts: Vec<String> = d
        .packages
        .iter()
        .map(|p| {
            format!(
                "{} {} ({})",
                p.name,
                p.version,
                p.source.map_or("unknown source", |s| s.describe())
            )
        })
        .collect();
    if d.run_uninstaller {
        parts.push("/usr/bin/nvidia-uninstall (.run installer)".into());
    }
    for m in &d.unowned_modules {
        parts.push(format!("{m} (not from a package)"));
    }
    if !parts.is_empty() {
        let _ = writeln!(out, "Driver: {}", parts.join(", "));
    }
    if let Some(v) = &d.loaded_version {
        let _ = writeln!(out, "Driver: loaded module version {v}");
    }
    let signed: std::collections::BTreeSet<String> = d
        .available
        .iter()
        .filter_map(|p| {
            let (flavour, kernel) = hwdetect::driver::split_linux_modules(&p.name)?;
            (kernel == facts.kernel.release).then_some(flavour)
        })
        .collect();
    if !signed.is_empty() {
        let _ = writeln!(
            out,
            "Driver: signed prebuilt modules for {} in apt: {}",
            facts.kernel.release,
            signed.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
}

/// Each NVSwitch with its group and driver, then Fabric Manager's mode on this host.
fn nvswitch_lines(facts: &HostFacts) -> String {
    let mut out = String::new();
    for s in &facts.nvswitch_devices {
        let _ = writeln!(
            out,
            "  {}  {}  group {}{}, driver {}",
            s.bdf,
            s.name,
            s.iommu_group.map_or("-".into(), |g| g.to_string()),
            match s.isolated {
                Some(true) => String::new(),
                Some(false) => format!(" (shared with {})", s.group_blockers.join(",")),
                None => " (isolation unknown)".into(),
            },
            s.driver.as_deref().unwrap_or("(none)")
        );
    }
    let fm = &facts.fabric_manager;
    let _ = writeln!(
        out,
        "  fabric manager: {}, FABRIC_MODE {}{}",
        fm.pid
            .map_or("not running".to_string(), |p| format!("running (pid {p})")),
        fm.fabric_mode
            .map_or("unknown".to_string(), |m| m.to_string()),
        if fm.shared_nvswitch {
            ": Shared NVSwitch multitenancy (VMs get GPUs without the switches)"
        } else {
            ": full passthrough (`vmctl create --gpu all` takes every GPU and NVSwitch)"
        }
    );
    out
}
