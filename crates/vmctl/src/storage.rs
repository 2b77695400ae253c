//! A VM's own directory in the storage dir (`storage_dir/NAME`): where it is, and its claim by
//! one create. What goes into it (disks, seeds, private files) is `guest_media::disk`'s; the
//! modes are explained there.

use std::path::{Path, PathBuf};

use guest_media::disk;

use crate::error::{Error, Result};

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The per-VM directory in the storage dir.
pub fn vm_dir(storage_dir: &Path, name: &str) -> PathBuf {
    storage_dir.join(name)
}

/// Claims `dir` (`storage_dir/NAME`) for one create: makes the missing storage directories
/// above it ([`disk::DIR_MODE`]), then `dir` itself with mkdir(2), which fails if it exists. Of two
/// creates of one name exactly one gets it; the other gets [`Error::StorageExists`] (exit 2)
/// before it has made or downloaded anything. Only a directory claimed here is ever removed by
/// a rollback. Its mode is [`disk::DIR_MODE`] ([`disk::dir_mode_in`] a shared storage directory).
pub fn claim_vm_dir(dir: &Path, name: &str) -> Result<()> {
    let mut mode = disk::DIR_MODE;
    if let Some(parent) = dir.parent() {
        hostio::create_dir_all_mode(parent, disk::DIR_MODE)
            .map_err(io_err("create storage directory", parent))?;
        mode = disk::dir_mode_in(parent, disk::DIR_MODE);
    }
    // Private while empty, then exactly `mode` (hostio::file::make_dir).
    match hostio::file::make_dir(dir, mode) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::StorageExists {
            name: name.to_string(),
            path: dir.to_path_buf(),
        }),
        Err(e) => Err(io_err("create VM directory", dir)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn claimed_dir_is_exclusive_and_searchable_not_listable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("lib/vms/vm1");
        claim_vm_dir(&dir, "vm1").unwrap();
        assert_eq!(mode(&dir), disk::DIR_MODE);
        assert_eq!(mode(&tmp.path().join("lib/vms")), disk::DIR_MODE);
        assert_eq!(mode(&tmp.path().join("lib")), disk::DIR_MODE);
        std::fs::write(dir.join("disk.qcow2"), "first").unwrap();
        let err = claim_vm_dir(&dir, "vm1").unwrap_err();
        assert!(matches!(err, Error::StorageExists { .. }), "{err}");
        assert_eq!(err.exit_kind(), crate::ExitKind::Usage);
        assert_eq!(std::fs::read(dir.join("disk.qcow2")).unwrap(), b"first");
    }

    #[test]
    fn a_shared_storage_directory_keeps_its_group_in_the_vm_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let vms = tmp.path().join("vms");
        std::fs::create_dir(&vms).unwrap();
        std::fs::set_permissions(&vms, std::fs::Permissions::from_mode(0o2775)).unwrap();
        claim_vm_dir(&vms.join("vm1"), "vm1").unwrap();
        assert_eq!(
            mode(&vms.join("vm1")),
            0o2771,
            "group rwx, others search only"
        );
    }
}
