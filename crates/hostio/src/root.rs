//! [`HostRoot`]: host paths resolved under a root directory, with reads and atomic writes.
//! It also owns the name of [`HostRoot::write_atomic`]'s temp files (`.NAME.tmp-PID`), so the
//! leftovers of a killed writer can be found and cleared ([`HostRoot::remove_stale_temps`]).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

/// A view of the host filesystem rooted at `root` (`/` for the real host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRoot {
    root: PathBuf,
}

impl Default for HostRoot {
    fn default() -> Self {
        Self::system()
    }
}

impl HostRoot {
    /// The real host.
    pub fn system() -> Self {
        Self {
            root: PathBuf::from("/"),
        }
    }

    /// A tree that stands in for the host (a fixture, a capture, or a scratch root).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when this is the real host (`/`), so commands may really run.
    pub fn is_system(&self) -> bool {
        self.root == Path::new("/")
    }

    /// Maps an absolute host path (e.g. `/sys/bus/pci/devices`) to the path under the root.
    /// `..` components are dropped so a host path can never escape the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.root.clone();
        for c in host_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    /// The host path of a path that lies under the root (the inverse of [`HostRoot::path`]).
    pub fn host_path_of(&self, real: &Path) -> Option<PathBuf> {
        real.strip_prefix(&self.root)
            .ok()
            .map(|rel| Path::new("/").join(rel))
    }

    pub fn exists(&self, host_path: impl AsRef<Path>) -> bool {
        self.path(host_path).exists()
    }

    pub fn read_to_string(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        fs::read_to_string(self.path(host_path))
    }

    pub fn read(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
        fs::read(self.path(host_path))
    }

    /// The target of a symlink, exactly as stored (sysfs links are relative).
    pub fn read_link(&self, host_path: impl AsRef<Path>) -> io::Result<PathBuf> {
        fs::read_link(self.path(host_path))
    }

    /// The last component of a symlink's target, e.g. `iommu_group` → `14`, `driver` → `nvidia`.
    pub fn link_name(&self, host_path: impl AsRef<Path>) -> io::Result<String> {
        let target = self.read_link(host_path)?;
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "symlink has no file name"))
    }

    /// Sorted entry names of a directory.
    pub fn read_dir_names(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(self.path(host_path))? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    /// Mode and owner of an existing file, if any.
    pub fn stat(&self, host_path: impl AsRef<Path>) -> io::Result<fs::Metadata> {
        fs::metadata(self.path(host_path))
    }

    /// Writes a file atomically: a temp file in the same directory, fsync, rename, fsync of the
    /// directory. An existing file's owner is kept; `mode` is applied to the new file.
    /// A reader (or a crash) sees either the old or the new content, never a mix.
    pub fn write_atomic(
        &self,
        host_path: impl AsRef<Path>,
        content: &[u8],
        mode: u32,
    ) -> io::Result<()> {
        let target = self.path(host_path);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
        fs::create_dir_all(dir)?;
        crate::file::write_atomic_keeping_owner(&target, content, mode)
    }

    /// Writes a kernel attribute (sysfs): a single plain write, no temp file, no truncation
    /// semantics beyond what the kernel gives. Used for `driver_override`, `unbind`, `drivers_probe`.
    pub fn write_attribute(&self, host_path: impl AsRef<Path>, value: &str) -> io::Result<()> {
        let mut f = OpenOptions::new().write(true).open(self.path(host_path))?;
        f.write_all(value.as_bytes())
    }

    /// Removes a file; a missing file is not an error.
    pub fn remove_file(&self, host_path: impl AsRef<Path>) -> io::Result<()> {
        crate::file::remove_file(&self.path(host_path)).map(|_| ())
    }

    /// Removes a directory if it is empty; a missing or non-empty directory is left alone.
    /// Returns whether it was removed.
    pub fn remove_dir_if_empty(&self, host_path: impl AsRef<Path>) -> io::Result<bool> {
        let p = self.path(host_path);
        match fs::read_dir(&p) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Ok(false);
                }
                fs::remove_dir(&p).map(|()| true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn create_dir_all(&self, host_path: impl AsRef<Path>) -> io::Result<()> {
        fs::create_dir_all(self.path(host_path))
    }

    /// Creates a file that must not exist yet (`O_EXCL`), with its final `mode`, and syncs it.
    /// Fails with `AlreadyExists` when the name is taken, so a caller can claim a fresh name.
    pub fn write_new(
        &self,
        host_path: impl AsRef<Path>,
        content: &[u8],
        mode: u32,
    ) -> io::Result<()> {
        crate::file::write_new(&self.path(host_path), content, mode)
    }

    /// Removes the temp files [`HostRoot::write_atomic`] left next to `host_path` when a writer
    /// was killed (`.NAME.tmp-PID` with another process's PID; this process's own are never
    /// left behind). Returns the host paths removed. A missing directory is not an error.
    pub fn remove_stale_temps(&self, host_path: impl AsRef<Path>) -> io::Result<Vec<PathBuf>> {
        let host_path = host_path.as_ref();
        let (Some(dir), Some(name)) = (host_path.parent(), host_path.file_name()) else {
            return Ok(Vec::new());
        };
        let prefix = temp_prefix(&name.to_string_lossy());
        let own = std::process::id().to_string();
        let entries = match fs::read_dir(self.path(dir)) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut removed = Vec::new();
        for entry in entries {
            let entry = entry?;
            let n = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = n.strip_prefix(&prefix) else {
                continue;
            };
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) || pid == own {
                continue;
            }
            let p = dir.join(&n);
            self.remove_file(&p)?;
            removed.push(p);
        }
        Ok(removed)
    }

    /// Resolves the symlinks in `host_path` inside the root, like `realpath -m` with the root as
    /// `/`: an absolute link target starts again at the root, and `..` stops at the root (as at
    /// `/`), so the result never leaves the tree. Components that do not exist are kept as
    /// they are. More than 40 links in a row is `ELOOP`, as for the kernel (path_resolution(7)).
    pub fn resolve(&self, host_path: impl AsRef<Path>) -> io::Result<PathBuf> {
        const MAX_LINKS: u32 = 40;
        let mut todo: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut todo, host_path.as_ref());
        let mut out = PathBuf::from("/");
        let mut links = 0;
        while let Some(c) = todo.pop() {
            if c == ".." {
                out.pop();
                continue;
            }
            let next = out.join(&c);
            match fs::symlink_metadata(self.path(&next)) {
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::other(format!(
                            "{}: more than {MAX_LINKS} symbolic links",
                            host_path.as_ref().display()
                        )));
                    }
                    let target = fs::read_link(self.path(&next))?;
                    if target.is_absolute() {
                        out = PathBuf::from("/");
                    }
                    push_components(&mut todo, &target);
                }
                Ok(_) => out = next,
                Err(e) if e.kind() == io::ErrorKind::NotFound => out = next,
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// [`crate::create_dir_all_mode`] for a host path.
    pub fn create_dir_all_mode(&self, host_path: impl AsRef<Path>, mode: u32) -> io::Result<()> {
        crate::file::create_dir_all_mode(&self.path(host_path), mode)
    }
}

/// `.NAME.tmp-`: the start of [`HostRoot::write_atomic`]'s temp file names for `NAME`.
pub fn temp_prefix(name: &str) -> String {
    format!(".{name}.tmp-")
}

/// Pushes the components of `p` (without `/` and `.`) onto `stack` so they pop in order.
fn push_components(stack: &mut Vec<std::ffi::OsString>, p: &Path) {
    let parts: Vec<std::ffi::OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    stack.extend(parts.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn create_dir_all_mode_sets_new_dirs_only() {
        let tmp = tempfile::tempdir().unwrap();
        let existing = tmp.path().join("a");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o750)).unwrap();
        let r = HostRoot::new(tmp.path());
        r.create_dir_all_mode("/a/b/c", 0o711).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode(&existing),
            0o750,
            "an existing directory keeps its mode"
        );
        assert_eq!(mode(&existing.join("b")), 0o711);
        assert_eq!(mode(&existing.join("b/c")), 0o711);
        r.create_dir_all_mode("/a/b/c", 0o700).unwrap();
        assert_eq!(mode(&existing.join("b/c")), 0o711, "idempotent");
    }

    #[test]
    fn path_is_kept_under_root() {
        let r = HostRoot::new("/tmp/x");
        assert_eq!(
            r.path("/sys/bus/pci/devices"),
            PathBuf::from("/tmp/x/sys/bus/pci/devices")
        );
        assert_eq!(
            r.path("/../../etc/passwd"),
            PathBuf::from("/tmp/x/etc/passwd")
        );
        assert_eq!(
            HostRoot::system().path("/etc/os-release"),
            PathBuf::from("/etc/os-release")
        );
    }

    #[test]
    fn remove_dir_if_empty_leaves_full_and_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.write_atomic("/etc/vmctl/config.toml", b"x", 0o644)
            .unwrap();
        assert!(!r.remove_dir_if_empty("/etc/vmctl").unwrap());
        r.remove_file("/etc/vmctl/config.toml").unwrap();
        assert!(r.remove_dir_if_empty("/etc/vmctl").unwrap());
        assert!(!r.exists("/etc/vmctl"));
        assert!(!r.remove_dir_if_empty("/etc/vmctl").unwrap());
    }

    #[test]
    fn resolve_follows_links_inside_the_root_only() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.write_atomic("/etc/managed/grub", b"x", 0o644).unwrap();
        r.create_dir_all("/etc/default").unwrap();
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, r.path(at)).unwrap();
        };
        link("/etc/managed/grub", "/etc/default/grub");
        assert_eq!(
            r.resolve("/etc/default/grub").unwrap(),
            Path::new("/etc/managed/grub")
        );
        // `..` past the root stays at the root.
        link("../../../../../../etc/managed/grub", "/etc/default/up");
        assert_eq!(
            r.resolve("/etc/default/up").unwrap(),
            Path::new("/etc/managed/grub")
        );
        // A link in a directory component, and a missing tail.
        link("/etc/managed", "/etc/m");
        assert_eq!(
            r.resolve("/etc/m/new/file").unwrap(),
            Path::new("/etc/managed/new/file")
        );
        // A loop is an error, not a hang.
        link("/etc/loop-b", "/etc/loop-a");
        link("/etc/loop-a", "/etc/loop-b");
        assert!(r.resolve("/etc/loop-a").is_err());
        assert_eq!(
            r.resolve("/etc/managed/grub").unwrap(),
            Path::new("/etc/managed/grub")
        );
    }

    #[test]
    fn stale_temps_of_other_writers_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.write_atomic("/usr/local/bin/vmctl", b"new", 0o755)
            .unwrap();
        for n in [
            ".vmctl.tmp-4242",
            ".vmctl.tmp-x",
            ".vmctl.tmp-",
            ".other.tmp-4242",
        ] {
            r.write_atomic(format!("/usr/local/bin/{n}"), b"partial", 0o600)
                .unwrap();
        }
        let removed = r.remove_stale_temps("/usr/local/bin/vmctl").unwrap();
        assert_eq!(
            removed,
            vec![PathBuf::from("/usr/local/bin/.vmctl.tmp-4242")]
        );
        assert_eq!(
            r.read_dir_names("/usr/local/bin").unwrap(),
            vec![".other.tmp-4242", ".vmctl.tmp-", ".vmctl.tmp-x", "vmctl"]
        );
        assert!(
            r.remove_stale_temps("/no/such/dir/file")
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn write_new_claims_a_name_once() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.create_dir_all("/etc").unwrap();
        r.write_new("/etc/copy", b"one", 0o600).unwrap();
        let e = r.write_new("/etc/copy", b"two", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(r.read_to_string("/etc/copy").unwrap(), "one");
        assert_eq!(
            r.stat("/etc/copy").unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let r = HostRoot::new(dir.path());
        r.write_atomic("/etc/netplan/60-br0.yaml", b"one", 0o600)
            .unwrap();
        r.write_atomic("/etc/netplan/60-br0.yaml", b"two", 0o600)
            .unwrap();
        assert_eq!(r.read_to_string("/etc/netplan/60-br0.yaml").unwrap(), "two");
        let mode = r
            .stat("/etc/netplan/60-br0.yaml")
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            r.read_dir_names("/etc/netplan").unwrap(),
            vec!["60-br0.yaml"]
        );
    }
}
