//! [`Options`]: what the user asked for, already validated by the binary's argument parser.

use std::path::PathBuf;

use serde::Serialize;

/// What happens to the NVIDIA GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuMode {
    /// The selected GPUs are reserved for VMs (vfio-pci at boot).
    Passthrough,
    /// Driver, CUDA and container toolkit on the host; IOMMU still enabled for later attach.
    Host,
    /// No GPU work at all.
    None,
}

/// A hugepage size the kernel command line can reserve on x86-64 (hugetlbpage.rst).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HugepageSize {
    #[serde(rename = "2M")]
    M2,
    #[serde(rename = "1G")]
    G1,
}

impl HugepageSize {
    pub fn kib(self) -> u64 {
        match self {
            Self::M2 => 2048,
            Self::G1 => 1024 * 1024,
        }
    }

    /// As the kernel parameters spell it (`hugepagesz=1G`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::M2 => "2M",
            Self::G1 => "1G",
        }
    }
}

/// `--hugepages SIZE:N`: N pages of SIZE reserved at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hugepages {
    pub size: HugepageSize,
    pub count: u64,
}

impl Hugepages {
    /// Parses `1G:8` or `2M:1024`. Returns why not.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (size, n) = s
            .split_once(':')
            .ok_or_else(|| "expected SIZE:N, e.g. 1G:8".to_string())?;
        let size = match size {
            "1G" | "1g" => HugepageSize::G1,
            "2M" | "2m" => HugepageSize::M2,
            _ => return Err(format!("size `{size}`: expected 1G or 2M")),
        };
        let count: u64 = n
            .parse()
            .map_err(|_| format!("`{n}` is not a number of pages"))?;
        if count == 0 {
            return Err("the number of pages must be at least 1".into());
        }
        Ok(Self { size, count })
    }

    /// The memory they take, in KiB.
    pub fn total_kib(&self) -> u64 {
        self.size.kib().saturating_mul(self.count)
    }

    /// The kernel arguments that reserve them (kernel-parameters.txt, hugetlbpage.rst): the
    /// size becomes the default, so `hugepages=` and the `HugePages_*` counters mean it.
    pub fn kernel_args(&self) -> Vec<String> {
        let s = self.size.as_str();
        vec![
            format!("default_hugepagesz={s}"),
            format!("hugepagesz={s}"),
            format!("hugepages={}", self.count),
        ]
    }
}

/// Phases the user asked to skip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skips {
    pub nvidia: bool,
    pub kvm: bool,
    pub iommu: bool,
    pub bridge: bool,
    pub vmctl: bool,
}

/// Where the vmctl phase takes vmctl from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmctlSource {
    /// A `vmctl` binary (normally next to our own binary).
    Binary(PathBuf),
    /// A `vmctl_*.deb` package.
    Deb(PathBuf),
    /// Neither was found.
    Missing,
}

impl VmctlSource {
    /// Looks next to `dir` (the directory of the running `gpu-vm-bootstrap`): the
    /// `vmctl_<version>_<arch>.deb` with the highest version first (a release directory holds
    /// both; the package also brings completions, man pages, the config file and the
    /// dependencies), then a `vmctl` binary.
    pub fn find_in(dir: &std::path::Path) -> Self {
        let debs = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter_map(|p| {
                let name = p.file_name()?.to_str()?;
                let version = crate::debversion::from_file_name(name, "vmctl")?.to_string();
                Some((version, p))
            });
        if let Some((_, deb)) =
            debs.max_by(|(a, pa), (b, pb)| crate::debversion::compare(a, b).then(pa.cmp(pb)))
        {
            return VmctlSource::Deb(deb);
        }
        let bin = dir.join("vmctl");
        if bin.is_file() {
            return VmctlSource::Binary(bin);
        }
        VmctlSource::Missing
    }
}

/// Checks a network interface name by the kernel's rules (net/core/dev.c, `dev_valid_name`):
/// 1 to 15 bytes (`IFNAMSIZ` is 16 with the NUL), not `.` or `..`, and no `/`, `:` or
/// whitespace, where whitespace is the kernel's `isspace()` (lib/ctype.c: space, `\t`, `\n`,
/// `\v`, `\f`, `\r` and the Latin-1 no-break space byte 0xA0). Control characters are refused
/// too: systemd-networkd, which applies netplan's config, rejects them (`ifname_valid_full`).
/// Returns why the name is invalid.
pub fn check_ifname(name: &str) -> Result<(), String> {
    const IFNAMSIZ: usize = 16;
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() >= IFNAMSIZ {
        return Err(format!(
            "it is {} bytes long; the kernel allows at most {}",
            name.len(),
            IFNAMSIZ - 1
        ));
    }
    if name == "." || name == ".." {
        return Err("`.` and `..` are not interface names".into());
    }
    for b in name.bytes() {
        let why = match b {
            b'/' => "a `/`",
            b':' => "a `:`",
            b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0 => "whitespace",
            0..=0x1f | 0x7f => "a control character",
            _ => continue,
        };
        return Err(format!("it contains {why}"));
    }
    Ok(())
}

/// Base URLs of the NVIDIA repositories, overridable so tests never touch the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrls {
    /// The CUDA keyring package (host-setup.md: 1.1-1 for ubuntu2404; 1.0-1 is 404 there).
    pub cuda_keyring_deb: String,
    /// The libnvidia-container signing key (ASCII armoured).
    pub container_gpgkey: String,
    /// The libnvidia-container apt repository (without the `$(ARCH)` suffix).
    pub container_repo: String,
}

impl Default for RepoUrls {
    fn default() -> Self {
        Self {
            cuda_keyring_deb: "https://developer.download.nvidia.com/compute/cuda/repos/ubuntu2404/x86_64/cuda-keyring_1.1-1_all.deb".into(),
            container_gpgkey: "https://nvidia.github.io/libnvidia-container/gpgkey".into(),
            container_repo: "https://nvidia.github.io/libnvidia-container/stable/deb".into(),
        }
    }
}

/// Everything the planner needs besides the host facts and current file contents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub gpu_mode: GpuMode,
    /// `--gpu SELECTOR` values as given; empty means [`passthrough::default_set`].
    pub gpus: Vec<String>,
    /// Install the host NVIDIA driver even when every GPU goes to VMs.
    pub host_driver: bool,
    pub skip: Skips,
    pub bridge_name: String,
    /// Default: the default-route NIC.
    pub bridge_iface: Option<String>,
    /// Turn the overridable refusals into warnings.
    pub force: bool,
    /// `--hugepages SIZE:N`: reserve hugepages through the kernel command line (IOMMU phase).
    pub hugepages: Option<Hugepages>,
    /// Append a reboot action when one is needed.
    pub reboot: bool,
    /// The user to add to the `libvirt` and `kvm` groups (`SUDO_USER`).
    pub invoking_user: Option<String>,
    pub vmctl_source: VmctlSource,
    pub urls: RepoUrls,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gpu_mode: GpuMode::Passthrough,
            gpus: Vec::new(),
            host_driver: false,
            skip: Skips::default(),
            bridge_name: "br0".into(),
            bridge_iface: None,
            force: false,
            hugepages: None,
            reboot: false,
            invoking_user: None,
            vmctl_source: VmctlSource::Missing,
            urls: RepoUrls::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_by_the_kernel_rules() {
        for ok in [
            "br0",
            "a",
            "fifteen-bytes-x",
            "eno1.100",
            "br#\"x\\",
            "vm-bridge",
        ] {
            assert_eq!(check_ifname(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "sixteen-bytes-xx",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "a\nb",
            "a\u{0b}b",
            "a\u{0c}b",
            "a\rb",
            "a\u{1}b",
            // U+00E0 is C3 A0 in UTF-8: the kernel's isspace() takes the 0xA0 byte as a space.
            "\u{e0}",
        ] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn find_in_prefers_the_newest_deb_over_the_binary() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(VmctlSource::find_in(dir.path()), VmctlSource::Missing);
        std::fs::write(dir.path().join("vmctl"), b"\x7fELF").expect("write");
        assert_eq!(
            VmctlSource::find_in(dir.path()),
            VmctlSource::Binary(dir.path().join("vmctl"))
        );
        for n in [
            "vmctl_0.9.0_amd64.deb",
            "vmctl_0.10.0_amd64.deb",
            "vmctl_0.10.0~rc1_amd64.deb",
            "vmctl-dbg.deb",
        ] {
            std::fs::write(dir.path().join(n), b"!<arch>").expect("write");
        }
        // By version, not by name: 0.10.0 > 0.10.0~rc1 > 0.9.0.
        assert_eq!(
            VmctlSource::find_in(dir.path()),
            VmctlSource::Deb(dir.path().join("vmctl_0.10.0_amd64.deb"))
        );
    }
}
