//! NVIDIA drivers already on the host and what apt offers: dpkg's status (installed packages
//! and their versions), apt's package lists (`/var/lib/apt/lists/*_Packages`: which source
//! offers which version, so an installed version tells its origin, as `apt-cache policy` does),
//! `/usr/bin/nvidia-uninstall` and `nvidia*.ko` files dpkg does not own (NVIDIA's `.run`
//! installer puts its modules in `/lib/modules/<release>/kernel/drivers/video/`), and DKMS
//! builds (`updates/dkms/`).

use std::io::{self, BufRead};

use hostio::paths::{
    APT_LISTS, DPKG_INFO, DPKG_STATUS, LIB_MODULES, SYS_MODULE_NVIDIA_VERSION,
    USR_BIN_NVIDIA_UNINSTALL,
};

use crate::facts::{AptPackage, DriverPackage, DriverSource, KernelInfo, NvidiaDriverInfo};
use crate::probe::Probe;

/// Package names that are (part of) an NVIDIA kernel driver.
const DRIVER_PREFIXES: &[&str] = &[
    "nvidia-driver-",
    "nvidia-headless-",
    "nvidia-utils-",
    "nvidia-dkms-",
    "nvidia-kernel-source-",
    "nvidia-kernel-open-",
    "cuda-drivers",
    "nvidia-open",
    "linux-modules-nvidia-",
];

pub fn is_driver_package(name: &str) -> bool {
    DRIVER_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// `linux-modules-nvidia-<branch>[-server][-open]-<kernel>` split into the driver flavour
/// (`550`, `550-server-open`) and the kernel part (`generic-hwe-24.04`, `6.8.0-48-generic`).
pub fn split_linux_modules(name: &str) -> Option<(String, &str)> {
    let rest = name.strip_prefix("linux-modules-nvidia-")?;
    let mut flavour = String::new();
    let mut tail = rest;
    let (branch, t) = tail.split_once('-')?;
    if branch.is_empty() || !branch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    flavour.push_str(branch);
    tail = t;
    for word in ["server", "open"] {
        if let Some(t) = tail.strip_prefix(word).and_then(|t| t.strip_prefix('-')) {
            flavour.push('-');
            flavour.push_str(word);
            tail = t;
        }
    }
    (!tail.is_empty()).then_some((flavour, tail))
}

/// Whether apt's lists should keep this package for detection: driver packages, and of the
/// many `linux-modules-nvidia-*` only the metapackages (a kernel flavour, not a version) and
/// the ones built for the running kernel.
fn wanted_available(name: &str, release: &str) -> bool {
    if let Some((_, kernel)) = split_linux_modules(name) {
        let abi = kernel.starts_with(|c: char| c.is_ascii_digit());
        return !abi || kernel == release;
    }
    is_driver_package(name) && !name.starts_with("linux-modules-nvidia-")
}

/// The branch of a driver package: the number after the prefix (`nvidia-driver-550-open` →
/// 550), else the version's major (`cuda-drivers` 560.35.03-1 → 560).
pub fn branch_of(name: &str, version: &str) -> Option<u32> {
    let digits: String = name
        .split('-')
        .find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .unwrap_or("")
        .to_string();
    if let Ok(b) = digits.parse::<u32>()
        && b >= 100
    {
        return Some(b);
    }
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split('.').next()?.parse().ok().filter(|b| *b >= 100)
}

/// The source an apt list file belongs to, from its name (apt names each list after its URL:
/// `developer.download.nvidia.com_compute_cuda_repos_ubuntu2404_x86%5f64_Packages`,
/// `ppa.launchpadcontent.net_graphics-drivers_ppa_ubuntu_dists_noble_main_binary-amd64_Packages`,
/// `archive.ubuntu.com_ubuntu_dists_noble-updates_restricted_binary-amd64_Packages`).
pub fn source_of_list(file: &str) -> DriverSource {
    if file.contains("developer.download.nvidia.com") {
        DriverSource::CudaRepo
    } else if file.contains("graphics-drivers") {
        DriverSource::GraphicsDriversPpa
    } else if file.contains("ubuntu") {
        DriverSource::UbuntuArchive
    } else {
        DriverSource::Unknown
    }
}

/// The source of an installed version no list offers (any more): the graphics-drivers PPA
/// versions its builds `…-0ubuntu0~gpu24.04.1` (or `+gpu`), Ubuntu's archive
/// `…-0ubuntu0.24.04.1`; `cuda-drivers` exists only in NVIDIA's repository.
pub fn source_of_version(name: &str, version: &str) -> DriverSource {
    if version.contains("~gpu") || version.contains("+gpu") {
        DriverSource::GraphicsDriversPpa
    } else if name.starts_with("cuda-drivers") {
        DriverSource::CudaRepo
    } else if version.contains("ubuntu0.") || name.starts_with("linux-modules-nvidia-") {
        DriverSource::UbuntuArchive
    } else {
        DriverSource::Unknown
    }
}

/// Copies the stanzas (blank-line separated paragraphs) of a Debian control file whose
/// `Package:` `keep` accepts. Works on dpkg's status and on apt's `Packages` lists.
pub fn filter_stanzas(r: &mut dyn BufRead, keep: &dyn Fn(&str) -> bool) -> io::Result<String> {
    let mut out = String::new();
    let mut stanza = String::new();
    let mut wanted = false;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line)?;
        let blank = line.trim().is_empty();
        if n == 0 || blank {
            if wanted {
                out.push_str(&stanza);
                out.push('\n');
            }
            stanza.clear();
            wanted = false;
            if n == 0 {
                return Ok(out);
            }
            continue;
        }
        if let Some(name) = line.strip_prefix("Package:") {
            wanted = keep(name.trim());
        }
        stanza.push_str(&line);
        if !line.ends_with('\n') {
            stanza.push('\n');
        }
    }
}

/// `(Package, Version, installed)` of each stanza.
pub fn stanzas(text: &str) -> Vec<(String, String, bool)> {
    text.split("\n\n")
        .filter_map(|para| {
            let mut name = None;
            let mut version = String::new();
            let mut installed = true;
            for l in para.lines() {
                if let Some(v) = l.strip_prefix("Package:") {
                    name = Some(v.trim().to_string());
                } else if let Some(v) = l.strip_prefix("Version:") {
                    version = v.trim().to_string();
                } else if let Some(v) = l.strip_prefix("Status:") {
                    installed = v.trim().ends_with(" installed");
                }
            }
            name.map(|n| (n, version, installed))
        })
        .collect()
}

/// A kernel image metapackage (`linux-image-generic-hwe-24.04`) → its flavour.
fn kernel_meta(name: &str) -> Option<&str> {
    let f = name.strip_prefix("linux-image-")?;
    (!f.starts_with(|c: char| c.is_ascii_digit()) && !f.starts_with("unsigned")).then_some(f)
}

pub(crate) fn detect(
    probe: &Probe,
    kernel: &mut KernelInfo,
    warn: &mut Vec<String>,
) -> NvidiaDriverInfo {
    let mut info = NvidiaDriverInfo::default();
    let release = kernel.release.clone();

    // apt's lists first: an installed version found in one of them has that list's source.
    let mut compressed = Vec::new();
    for file in probe.list(APT_LISTS).unwrap_or_default() {
        if file.contains("_Packages.") {
            compressed.push(file);
            continue;
        }
        if !file.ends_with("_Packages") {
            continue;
        }
        let path = format!("{APT_LISTS}/{file}");
        let keep = |n: &str| wanted_available(n, &release);
        match probe.read_filtered(&path, |r| filter_stanzas(r, &keep)) {
            Ok(Some(text)) => {
                let source = source_of_list(&file);
                for (name, version, _) in stanzas(&text) {
                    info.available.push(AptPackage {
                        name,
                        version,
                        source: Some(source),
                    });
                }
            }
            Ok(None) => {}
            Err(e) => warn.push(format!("{path}: cannot read: {e}")),
        }
    }
    if !compressed.is_empty() && info.available.is_empty() {
        warn.push(format!(
            "{APT_LISTS}: the package lists are compressed ({}); apt's offer of NVIDIA drivers was not read",
            compressed.join(", ")
        ));
    }
    info.available.sort_by(|a, b| {
        (a.name.as_str(), a.version.as_str(), a.source).cmp(&(
            b.name.as_str(),
            b.version.as_str(),
            b.source,
        ))
    });
    info.available.dedup();

    let keep = |n: &str| is_driver_package(n) || kernel_meta(n).is_some();
    match probe.read_filtered(DPKG_STATUS, |r| filter_stanzas(r, &keep)) {
        Ok(Some(text)) => {
            for (name, version, installed) in stanzas(&text) {
                if !installed {
                    continue;
                }
                if let Some(f) = kernel_meta(&name) {
                    kernel.metapackages.push(f.to_string());
                    continue;
                }
                let source = info
                    .available
                    .iter()
                    .find(|a| a.name == name && a.version == version)
                    .and_then(|a| a.source)
                    .unwrap_or_else(|| source_of_version(&name, &version));
                info.packages.push(DriverPackage {
                    branch: branch_of(&name, &version),
                    name,
                    version,
                    source: Some(source),
                });
            }
        }
        Ok(None) => {}
        Err(e) => warn.push(format!("{DPKG_STATUS}: cannot read: {e}")),
    }
    info.packages.sort_by(|a, b| a.name.cmp(&b.name));
    kernel.metapackages.sort();
    kernel.metapackages.dedup();

    info.run_uninstaller = probe.exists(USR_BIN_NVIDIA_UNINSTALL);
    match probe.read_optional(SYS_MODULE_NVIDIA_VERSION) {
        Ok(v) => info.loaded_version = v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty()),
        Err(e) => warn.push(format!("{SYS_MODULE_NVIDIA_VERSION}: cannot read: {e}")),
    }
    if release.is_empty() {
        return info;
    }
    let nvidia_ko = |dir: &str| -> Vec<String> {
        probe
            .list(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with("nvidia") && n.contains(".ko"))
            .map(|n| format!("{dir}/{n}"))
            .collect()
    };
    let video = nvidia_ko(&format!("{LIB_MODULES}/{release}/kernel/drivers/video"));
    if !video.is_empty() {
        // What dpkg installed is listed in the packages' file lists (dpkg(1), /var/lib/dpkg/info).
        let mut owned: Vec<String> = Vec::new();
        for p in &info.packages {
            for list in [format!("{}.list", p.name), format!("{}:amd64.list", p.name)] {
                if let Ok(Some(t)) = probe.read_optional(format!("{DPKG_INFO}/{list}")) {
                    owned.extend(t.lines().map(str::to_string));
                }
            }
        }
        info.unowned_modules = video.into_iter().filter(|m| !owned.contains(m)).collect();
    }
    info.dkms_modules = nvidia_ko(&format!("{LIB_MODULES}/{release}/updates/dkms"));
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_modules_names_split_into_flavour_and_kernel() {
        assert_eq!(
            split_linux_modules("linux-modules-nvidia-550-generic-hwe-24.04"),
            Some(("550".into(), "generic-hwe-24.04"))
        );
        assert_eq!(
            split_linux_modules("linux-modules-nvidia-570-server-open-6.8.0-48-generic"),
            Some(("570-server-open".into(), "6.8.0-48-generic"))
        );
        assert_eq!(split_linux_modules("linux-modules-nvidia-x-generic"), None);
        assert!(wanted_available(
            "linux-modules-nvidia-550-6.8.0-48-generic",
            "6.8.0-48-generic"
        ));
        assert!(!wanted_available(
            "linux-modules-nvidia-550-6.8.0-31-generic",
            "6.8.0-48-generic"
        ));
        assert!(wanted_available("linux-modules-nvidia-550-generic", ""));
        assert!(!wanted_available("libnvidia-gl-550", ""));
    }

    #[test]
    fn branches_and_sources() {
        assert_eq!(branch_of("nvidia-driver-550-open", "550.120-0"), Some(550));
        assert_eq!(branch_of("cuda-drivers", "560.35.03-1"), Some(560));
        assert_eq!(branch_of("nvidia-open", "1:570.86.15-1"), Some(570));
        assert_eq!(
            source_of_version("nvidia-driver-555", "555.52.04-0ubuntu0~gpu24.04.1"),
            DriverSource::GraphicsDriversPpa
        );
        assert_eq!(
            source_of_version("nvidia-driver-550", "550.120-0ubuntu0.24.04.1"),
            DriverSource::UbuntuArchive
        );
        assert_eq!(
            source_of_list(
                "developer.download.nvidia.com_compute_cuda_repos_ubuntu2404_x86%5f64_Packages"
            ),
            DriverSource::CudaRepo
        );
    }

    #[test]
    fn stanza_filter_keeps_whole_paragraphs() {
        let text = "Package: a\nVersion: 1\n\nPackage: nvidia-driver-550\nStatus: install ok installed\nVersion: 2\n\nPackage: b\n";
        let out = filter_stanzas(&mut text.as_bytes(), &|n| n.starts_with("nvidia")).unwrap();
        assert_eq!(
            out,
            "Package: nvidia-driver-550\nStatus: install ok installed\nVersion: 2\n\n"
        );
        // Filtering its own output changes nothing (a capture replays the same facts).
        let again = filter_stanzas(&mut out.as_bytes(), &|n| n.starts_with("nvidia")).unwrap();
        assert_eq!(again, out);
    }
}
