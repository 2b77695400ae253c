//! [`HostState`]: the current content of every file the planner may change, read once through
//! [`HostRoot`] so the planner itself stays pure.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;

use hostio::{HostRoot, paths};

use crate::options::{Options, VmctlSource};

/// An existing file: its text and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileState {
    pub content: String,
    pub mode: u32,
}

/// What the planner needs to know about the host besides [`hwdetect::HostFacts`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// Existing files by host path.
    pub files: BTreeMap<String, FileState>,
    /// Host paths of `/etc/netplan/*.yaml`, sorted (netplan's lexical order).
    pub netplan_files: Vec<String>,
    /// Host paths of `/etc/default/grub.d/*.cfg`, sorted (the order update-grub sources them).
    pub grub_d_files: Vec<String>,
    /// Packages dpkg reports as installed, with their versions.
    pub installed_packages: BTreeMap<String, String>,
    /// `/etc/group`: group → members.
    pub groups: BTreeMap<String, Vec<String>>,
    /// Paths (keyrings, service links) that merely need to exist.
    pub existing: BTreeSet<String>,
    /// `/usr/local/bin/vmctl` is byte-identical to the vmctl we would install.
    pub vmctl_up_to_date: bool,
    /// `MemTotal` of `/proc/meminfo` in KiB, for the `--hugepages` limit.
    pub mem_total_kib: Option<u64>,
    /// With `--hugepages`: the pages of that size the kernel holds now (`nr_hugepages`), for
    /// `verify`.
    pub hugepages_reserved: Option<u64>,
}

/// Files whose content the planner compares against what it wants.
const WATCHED: &[&str] = &[
    paths::ETC_DEFAULT_GRUB,
    paths::ETC_MODULES_LOAD_VFIO,
    paths::ETC_MODPROBE_VFIO,
    paths::VFIO_OVERRIDE_SCRIPT,
    paths::INITRAMFS_HOOK_VFIO,
    paths::CLOUD_INIT_NETWORK_OFF,
    paths::PROFILE_CUDA,
    paths::APT_CONTAINER_TOOLKIT_LIST,
    paths::ETC_VMCTL_CONFIG,
    paths::ETC_KERNEL_CMDLINE,
    paths::ETC_KERNELSTUB_CONFIG,
];

/// Paths whose existence alone matters.
const PRESENCE: &[&str] = &[
    paths::CONTAINER_TOOLKIT_KEYRING,
    paths::CUDA_KEYRING,
    paths::LIBVIRTD_WANTS,
    paths::USR_LOCAL_BIN_VMCTL,
    paths::SHIM_MOK_DER,
];

impl HostState {
    /// Reads the current state. Missing files are simply absent; this never fails.
    pub fn read(root: &HostRoot, opts: &Options) -> Self {
        let mut st = HostState::default();
        for p in WATCHED {
            st.load(root, p);
        }
        let in_root = |p: &str| root.resolve(p).unwrap_or_else(|_| p.into());
        if let Ok(names) = root.read_dir_names(in_root(paths::ETC_NETPLAN)) {
            for n in names.iter().filter(|n| n.ends_with(".yaml")) {
                let p = format!("{}/{n}", paths::ETC_NETPLAN);
                if st.load(root, &p) {
                    st.netplan_files.push(p);
                }
            }
        }
        if let Ok(names) = root.read_dir_names(in_root(paths::ETC_DEFAULT_GRUB_D)) {
            for n in names.iter().filter(|n| n.ends_with(".cfg")) {
                let p = format!("{}/{n}", paths::ETC_DEFAULT_GRUB_D);
                if st.load(root, &p) {
                    st.grub_d_files.push(p);
                }
            }
        }
        // A link counts as present even when its target is missing under the root (a service
        // enabled in a fixture tree without the unit file).
        for p in PRESENCE {
            if root.read_link(p).is_ok() || root.exists(in_root(p)) {
                st.existing.insert((*p).to_string());
            }
        }
        if let Ok(s) = root.read_to_string(paths::DPKG_STATUS) {
            st.installed_packages = parse_dpkg_status(&s);
        }
        if let Ok(s) = root.read_to_string(paths::ETC_GROUP) {
            st.groups = parse_group(&s);
        }
        if let VmctlSource::Binary(src) = &opts.vmctl_source {
            st.vmctl_up_to_date = same_bytes(src, root, &in_root(paths::USR_LOCAL_BIN_VMCTL));
        }
        if let Ok(s) = root.read_to_string(paths::PROC_MEMINFO) {
            st.mem_total_kib = hwdetect::parse::meminfo_kib(&s, "MemTotal");
        }
        if let Some(h) = &opts.hugepages {
            st.hugepages_reserved = hwdetect::numa::numa(root)
                .hugepages
                .iter()
                .find(|p| p.size_kib == h.size.kib())
                .map(|p| p.total);
        }
        st
    }

    /// Reads `p`, following symlinks inside the root only (an absolute link target is taken
    /// under the root, never from the machine running us).
    fn load(&mut self, root: &HostRoot, p: &str) -> bool {
        let Ok(real) = root.resolve(p) else {
            return false;
        };
        let Ok(content) = root.read_to_string(&real) else {
            return false;
        };
        let mode = root
            .stat(&real)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        self.files
            .insert(p.to_string(), FileState { content, mode });
        true
    }

    pub fn file(&self, path: &str) -> Option<&FileState> {
        self.files.get(path)
    }

    pub fn content(&self, path: &str) -> Option<&str> {
        self.files.get(path).map(|f| f.content.as_str())
    }

    pub fn has_package(&self, name: &str) -> bool {
        self.installed_packages.contains_key(name)
    }

    /// The installed version of a package, if dpkg lists it as installed.
    pub fn package_version(&self, name: &str) -> Option<&str> {
        self.installed_packages.get(name).map(String::as_str)
    }

    pub fn in_group(&self, user: &str, group: &str) -> bool {
        self.groups
            .get(group)
            .is_some_and(|m| m.iter().any(|u| u == user))
    }
}

/// Installed packages and their versions from dpkg's status file (`Status: install ok installed`).
pub fn parse_dpkg_status(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for para in s.split("\n\n") {
        let (mut name, mut version) = (None, String::new());
        let mut installed = false;
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version:") {
                version = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("Status:") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), true) = (name, installed) {
            out.insert(n, version);
        }
    }
    out
}

/// `/etc/group` lines `name:x:gid:user1,user2`.
pub fn parse_group(s: &str) -> BTreeMap<String, Vec<String>> {
    s.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                (
                    f[0].to_string(),
                    f[3].split(',')
                        .filter(|u| !u.is_empty())
                        .map(str::to_string)
                        .collect(),
                )
            })
        })
        .collect()
}

/// Whether `installed` (a host path under `root`) holds the same bytes as the build's `src`. The
/// sizes are compared first: the binary is ~16 MiB, and reading it when the installed copy is
/// missing or of another size made half of a plan's time.
fn same_bytes(src: &std::path::Path, root: &HostRoot, installed: &std::path::Path) -> bool {
    match (std::fs::metadata(src), root.stat(installed)) {
        (Ok(a), Ok(b)) if a.len() == b.len() => {
            matches!((std::fs::read(src), root.read(installed)), (Ok(a), Ok(b)) if a == b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_lists_only_installed() {
        let s = "Package: a\nStatus: install ok installed\nVersion: 1.2-3\n\nPackage: b\nStatus: deinstall ok config-files\nVersion: 1\n";
        assert_eq!(
            parse_dpkg_status(s),
            BTreeMap::from([("a".to_string(), "1.2-3".to_string())])
        );
    }

    #[test]
    fn group_members_are_split() {
        let g = parse_group("kvm:x:993:alice,bob\nlibvirt:x:120:\n");
        assert_eq!(g["kvm"], vec!["alice", "bob"]);
        assert!(g["libvirt"].is_empty());
    }
}
