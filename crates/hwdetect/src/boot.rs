//! Firmware, Secure Boot, kernel lockdown, the boot loader and the installed kernels.
//!
//! Sources: efivarfs shows each EFI variable as a file whose first 4 bytes are the variable's
//! attributes, followed by its data (Documentation/filesystems/efivarfs.rst); `SecureBoot`'s
//! data is one byte, 1 when enabled (UEFI spec 2.10, 3.3 "Globally Defined Variables").
//! `/sys/kernel/security/lockdown` reads `[none] integrity confidentiality` with the active
//! mode in brackets (security/lockdown/lockdown.c, `lockdown_read`). systemd-boot sets the
//! `LoaderInfo` variable (UTF-16LE) in every boot it starts (systemd's Boot Loader Interface).

use hostio::paths::{
    BOOT, BOOT_EFI_LOADER_ENTRIES, BOOT_EFI_SYSTEMD_BOOT, BOOT_GRUB_CFG, EFIVAR_LOADER_INFO,
    EFIVAR_SECURE_BOOT, ETC_DEFAULT_GRUB, ETC_KERNEL_CMDLINE, ETC_KERNELSTUB_CONFIG,
    SYS_FIRMWARE_EFI, SYS_KERNEL_SECURITY_LOCKDOWN,
};

use crate::facts::{BootInfo, BootLoader, Firmware};
use crate::probe::Probe;

/// The data of an efivarfs file: everything after the 4 attribute bytes.
pub fn efivar_data(raw: &[u8]) -> Option<&[u8]> {
    raw.get(4..)
}

/// `SecureBoot`'s state from its efivarfs file; `Err` names what is wrong with the file.
pub fn secure_boot_from_efivar(raw: &[u8]) -> Result<bool, String> {
    match efivar_data(raw) {
        Some([b]) => Ok(*b == 1),
        _ => Err(format!(
            "expected 4 attribute bytes and 1 data byte, found {} bytes",
            raw.len()
        )),
    }
}

/// The active lockdown mode: the bracketed word.
pub fn parse_lockdown(text: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .map(str::to_string)
}

/// A UTF-16LE EFI string variable's text, without the trailing NUL.
pub fn efivar_string(raw: &[u8]) -> Option<String> {
    let data = efivar_data(raw)?;
    let units: Vec<u16> = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    Some(String::from_utf16_lossy(&units))
}

pub(crate) fn boot(probe: &Probe, warn: &mut Vec<String>) -> BootInfo {
    let uefi = probe.is_dir(SYS_FIRMWARE_EFI);
    let mut info = BootInfo {
        firmware: if uefi { Firmware::Uefi } else { Firmware::Bios },
        ..BootInfo::default()
    };
    let mut loader_info = None;
    if uefi {
        match probe.read_bytes(EFIVAR_SECURE_BOOT) {
            Ok(Some(raw)) => match secure_boot_from_efivar(&raw) {
                Ok(on) => info.secure_boot = Some(on),
                Err(why) => warn.push(format!("{EFIVAR_SECURE_BOOT}: {why}")),
            },
            Ok(None) => {}
            Err(e) => warn.push(format!("{EFIVAR_SECURE_BOOT}: cannot read: {e}")),
        }
        match probe.read_bytes(EFIVAR_LOADER_INFO) {
            Ok(Some(raw)) => loader_info = efivar_string(&raw),
            Ok(None) => {}
            Err(e) => warn.push(format!("{EFIVAR_LOADER_INFO}: cannot read: {e}")),
        }
    }
    match probe.read_optional(SYS_KERNEL_SECURITY_LOCKDOWN) {
        Ok(Some(t)) => {
            info.lockdown = parse_lockdown(&t);
            if info.lockdown.is_none() {
                warn.push(format!(
                    "{SYS_KERNEL_SECURITY_LOCKDOWN}: no mode in brackets in {:?}",
                    t.trim()
                ));
            }
        }
        Ok(None) => {}
        Err(e) => warn.push(format!("{SYS_KERNEL_SECURITY_LOCKDOWN}: cannot read: {e}")),
    }
    let (loader, evidence) = loader(probe, uefi, loader_info.as_deref());
    info.loader = loader;
    info.loader_evidence = evidence;
    info.kernels = probe
        .list(BOOT)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_string)
        .collect();
    info
}

/// Decides the boot loader. The `LoaderInfo` variable names the loader that started this boot
/// and wins; without it (BIOS, GRUB, or efivars not readable) the files decide, and
/// contradicting files decide nothing.
fn loader(probe: &Probe, uefi: bool, loader_info: Option<&str>) -> (BootLoader, Vec<String>) {
    let mut grub = Vec::new();
    // The link itself counts: an absolute link is resolved against the real `/`, not the host
    // root, by the plain filesystem calls detection makes.
    for p in [ETC_DEFAULT_GRUB, BOOT_GRUB_CFG] {
        if probe.lexists(p) {
            grub.push(format!("{p} exists"));
        }
    }
    let mut sdboot = Vec::new();
    let entries: Vec<String> = probe
        .list(BOOT_EFI_LOADER_ENTRIES)
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.ends_with(".conf"))
        .collect();
    if !entries.is_empty() {
        sdboot.push(format!(
            "{} loader entries in {BOOT_EFI_LOADER_ENTRIES}",
            entries.len()
        ));
    }
    if probe.exists(BOOT_EFI_SYSTEMD_BOOT) {
        sdboot.push(format!("{BOOT_EFI_SYSTEMD_BOOT} exists"));
    }
    let cmdline = probe.exists(ETC_KERNEL_CMDLINE);
    let kernelstub = probe.exists(ETC_KERNELSTUB_CONFIG);
    let stub_ev = format!("{ETC_KERNELSTUB_CONFIG} exists");
    if let Some(li) = loader_info {
        let ev = format!("LoaderInfo EFI variable: {li:?}");
        if li.starts_with("systemd-boot") {
            if kernelstub {
                return (BootLoader::Kernelstub, vec![ev, stub_ev]);
            }
            let mut e = vec![ev];
            e.extend(sdboot);
            return (BootLoader::SystemdBoot, e);
        }
        if li.starts_with("GRUB") {
            let mut e = vec![ev];
            e.extend(grub);
            return (BootLoader::Grub, e);
        }
        return (BootLoader::Unknown, vec![ev]);
    }
    if !uefi {
        // systemd-boot and kernelstub are UEFI-only: a BIOS host boots through GRUB or
        // through something we do not know.
        return if grub.is_empty() {
            (
                BootLoader::Unknown,
                vec!["BIOS boot without /etc/default/grub or /boot/grub/grub.cfg".into()],
            )
        } else {
            (BootLoader::Grub, grub)
        };
    }
    let has_sd = !sdboot.is_empty();
    match (!grub.is_empty(), has_sd || kernelstub) {
        (true, false) => (BootLoader::Grub, grub),
        (false, true) if kernelstub => (BootLoader::Kernelstub, vec![stub_ev]),
        (false, true) => {
            if cmdline {
                sdboot.push(format!("{ETC_KERNEL_CMDLINE} exists"));
            }
            (BootLoader::SystemdBoot, sdboot)
        }
        (true, true) => {
            let mut e = grub;
            e.extend(sdboot);
            if kernelstub {
                e.push(stub_ev);
            }
            e.push("no LoaderInfo EFI variable says which one booted".into());
            (BootLoader::Unknown, e)
        }
        (false, false) => (
            BootLoader::Unknown,
            vec!["no GRUB, systemd-boot or kernelstub files found".into()],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_boot_variable_shape() {
        // Attributes NV|BS|RT (0x06) little-endian, then the data byte.
        assert_eq!(secure_boot_from_efivar(&[6, 0, 0, 0, 1]), Ok(true));
        assert_eq!(secure_boot_from_efivar(&[6, 0, 0, 0, 0]), Ok(false));
        assert!(secure_boot_from_efivar(&[1]).is_err());
        assert!(secure_boot_from_efivar(&[6, 0, 0, 0, 1, 0]).is_err());
    }

    #[test]
    fn lockdown_mode_is_the_bracketed_word() {
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality\n").as_deref(),
            Some("none")
        );
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n").as_deref(),
            Some("integrity")
        );
        assert_eq!(parse_lockdown("none integrity"), None);
    }

    #[test]
    fn loader_info_is_utf16() {
        let mut raw = vec![6, 0, 0, 0];
        for u in "systemd-boot 255".encode_utf16().chain([0]) {
            raw.extend(u.to_le_bytes());
        }
        assert_eq!(efivar_string(&raw).as_deref(), Some("systemd-boot 255"));
    }
}
