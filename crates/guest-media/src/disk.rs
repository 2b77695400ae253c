//! The private files in a VM's directory; disks are qcow2 overlays on a cached base image (or
//! blank qcow2 for an installer), made with `qemu-img` through the runner. An overlay only
//! records the backing file, so its creation time does not depend on the base's size
//! (qemu-img(1), "create -b").
//!
//! Modes. A VM's disk and seed hold secrets (the seed: a password hash, or a Talos node's cluster
//! CA keys and bootstrap token; the disk: the guest's data), so every file vmctl writes into a
//! VM's directory is created 0600, root only, with that mode from the start. qemu under
//! `qemu:///system` runs as its own user (`libvirt-qemu` on Debian and Ubuntu, qemu.conf `user`);
//! libvirt's DAC driver, with `dynamic_ownership = 1` (the default), chowns the disk, seed,
//! kernel and initrd to that user while the VM runs and back afterwards (qemu.conf(5);
//! libvirt.org/drvqemu.html, "POSIX users/groups"). qemu opens them by path, so it needs
//! search permission on each directory on the way: the VM's directory and the directories vmctl
//! makes above it are 0711, searchable but not listable by others, and the files' names reveal
//! nothing a listing would not. With `dynamic_ownership = 0` the files must be given to the qemu
//! user by hand.

use std::fs::File;
use std::path::{Path, PathBuf};

use hostio::{Cmd, CommandRunner};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The VM's directory and the storage directories vmctl creates above it: searchable by the
/// qemu user, listable by root only.
pub const DIR_MODE: u32 = 0o711;
/// Every file in a VM's directory: root only (libvirt hands the images to qemu).
pub const FILE_MODE: u32 = 0o600;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The mode for a directory vmctl makes in `parent`: `base`, and when `parent` is setgid, full
/// access for its group plus the setgid bit. The package hands `/var/lib/vmctl` and `vms/` to
/// the `libvirt` group (mode 2775) so that every libvirt user can manage every VM (delete its
/// files, remove its directory); members of that group can already make libvirt open any host
/// file, so this trusts them with nothing new. Others never get more than `base` gives them.
pub fn dir_mode_in(parent: &Path, base: u32) -> u32 {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(parent) {
        Ok(m) if m.mode() & 0o2000 != 0 => base | 0o2070,
        _ => base,
    }
}

/// Creates `path` empty with [`FILE_MODE`] (`O_CREAT|O_EXCL`: never an existing file, never a
/// symlink's target). For output a tool then writes into: `qemu-img create` and `genisoimage
/// -output` truncate an existing file and keep its mode, so the file never exists with a wider
/// one.
pub fn create_private(path: &Path) -> Result<File> {
    hostio::file::create_new(path, FILE_MODE).map_err(io_err("create", path))
}

/// Writes `content` to a new file `path` with [`FILE_MODE`].
pub fn write_private(path: &Path, content: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut f = create_private(path)?;
    f.write_all(content).map_err(io_err("write", path))
}

/// For a tool that sets the mode of what it writes itself (`xorriso -extract` restores the
/// ISO's): `produce` writes at a path in a fresh 0700 staging directory next to `out`, then the
/// file gets [`FILE_MODE`] and is renamed to `out`. Nobody but root can open it on the way.
pub fn produce_private(out: &Path, produce: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stage = out.with_file_name(format!(".{name}.d"));
    hostio::file::make_dir(&stage, 0o700).map_err(io_err("create", &stage))?;
    let staged = stage.join(&name);
    let result = produce(&staged).and_then(|()| {
        let file = File::open(&staged).map_err(io_err("open", &staged))?;
        hostio::file::persist_with_mode(&file, &staged, out, FILE_MODE)
            .map_err(io_err("rename", &staged))
    });
    let _ = hostio::file::remove_tree(&stage);
    result
}

/// What `qemu-img info` says about an image.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ImageInfo {
    pub format: String,
    #[serde(rename = "virtual-size")]
    pub virtual_size: u64,
    #[serde(rename = "full-backing-filename", default)]
    pub backing_file: Option<String>,
}

/// `qemu-img info --output=json -U PATH` (`-U`: the base may be open by running VMs).
pub fn image_info(runner: &dyn CommandRunner, path: &Path) -> Result<ImageInfo> {
    let cmd = Cmd::new([
        "qemu-img".to_string(),
        "info".into(),
        "--output=json".into(),
        "-U".into(),
        path.display().to_string(),
    ]);
    let out = runner.run(&cmd).map_err(|source| Error::ImageInfo {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&out.stdout).map_err(|e| Error::ImageInfo {
        path: path.to_path_buf(),
        source: hostio::CommandError::Failed {
            argv: cmd.display(),
            status: 0,
            stderr: format!("unreadable JSON: {e}"),
        },
    })
}

/// Creates `overlay` as qcow2 backed by `base` (format `base_format`), sized `size` bytes
/// (the base's virtual size when `None`). The file is created here first ([`create_private`]):
/// `overlay` must not exist.
pub fn create_overlay(
    runner: &dyn CommandRunner,
    base: &Path,
    base_format: &str,
    overlay: &Path,
    size: Option<u64>,
) -> Result<()> {
    let mut argv = vec![
        "qemu-img".to_string(),
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        "-b".into(),
        base.display().to_string(),
        "-F".into(),
        base_format.into(),
        overlay.display().to_string(),
    ];
    if let Some(size) = size {
        argv.push(size.to_string());
    }
    create_private(overlay)?;
    tracing::info!(argv = ?argv, "creating overlay");
    runner
        .run(&Cmd::new(argv))
        .map(|_| ())
        .map_err(|source| Error::CreateOverlay {
            path: overlay.to_path_buf(),
            source,
        })
}

/// A blank qcow2 of `size` bytes (the target of an installer), created 0600
/// ([`create_private`]) before `qemu-img` writes into it; `path` must not exist.
pub fn create_blank(runner: &dyn CommandRunner, path: &Path, size: u64) -> Result<()> {
    let argv = vec![
        "qemu-img".to_string(),
        "create".into(),
        "-q".into(),
        "-f".into(),
        "qcow2".into(),
        path.display().to_string(),
        size.to_string(),
    ];
    create_private(path)?;
    tracing::info!(argv = ?argv, "creating blank disk");
    runner
        .run(&Cmd::new(argv))
        .map(|_| ())
        .map_err(|source| Error::CreateOverlay {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostio::{Output, RecordingRunner, SystemRunner};
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn overlay_argv() {
        let dir = tempfile::tempdir().unwrap();
        let ov = dir.path().join("disk.qcow2");
        let r = RecordingRunner::new();
        create_overlay(&r, Path::new("/c/base"), "qcow2", &ov, Some(20 << 30)).unwrap();
        assert_eq!(
            r.calls()[0],
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "/c/base",
                "-F",
                "qcow2",
                &ov.display().to_string(),
                "21474836480"
            ]
        );
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn private_files_never_replace_or_follow_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("seed.iso");
        write_private(&p, b"secret").unwrap();
        assert_eq!(mode(&p), FILE_MODE);
        assert!(write_private(&p, b"other").is_err());
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        std::os::unix::fs::symlink(&outside, tmp.path().join("link")).unwrap();
        assert!(create_private(&tmp.path().join("link")).is_err());
        assert_eq!(std::fs::read(&outside).unwrap(), b"keep");
    }

    #[test]
    fn produced_files_appear_with_the_private_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("installer-vmlinuz");
        produce_private(&out, |staged| {
            assert_eq!(mode(staged.parent().unwrap()), 0o700);
            std::fs::write(staged, "kernel").unwrap();
            std::fs::set_permissions(staged, std::fs::Permissions::from_mode(0o644)).unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(mode(&out), FILE_MODE);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the staging directory is gone");
    }

    #[test]
    fn info_parses_json() {
        let r = RecordingRunner::new().answer(
            ["qemu-img", "info"],
            Output::ok(r#"{"virtual-size": 2147483648, "filename": "b", "format": "qcow2", "actual-size": 1}"#),
        );
        let i = image_info(&r, Path::new("/b")).unwrap();
        assert_eq!(
            i,
            ImageInfo {
                format: "qcow2".into(),
                virtual_size: 2 << 30,
                backing_file: None
            }
        );
    }

    #[test]
    fn real_overlay_on_real_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        SystemRunner
            .run(&Cmd::new([
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                &base.display().to_string(),
                "1G",
            ]))
            .unwrap();
        let info = image_info(&SystemRunner, &base).unwrap();
        assert_eq!(info.format, "qcow2");
        let ov = dir.path().join("ov.qcow2");
        create_overlay(&SystemRunner, &base, &info.format, &ov, Some(3 << 30)).unwrap();
        let ov_info = image_info(&SystemRunner, &ov).unwrap();
        assert_eq!(ov_info.virtual_size, 3 << 30);
        assert_eq!(
            mode(&ov),
            FILE_MODE,
            "qemu-img kept the mode it was created with"
        );
    }
}

/// Every file in `path`'s backing chain, `path` first (`qemu-img info --backing-chain -U
/// --output=json`: an array, one object per image, each with its `filename`). `-U` (no lock)
/// reads the disks of running VMs too.
pub fn backing_chain(runner: &dyn CommandRunner, path: &Path) -> Result<Vec<PathBuf>> {
    #[derive(Deserialize)]
    struct Image {
        filename: PathBuf,
    }
    let cmd = Cmd::new([
        "qemu-img".to_string(),
        "info".into(),
        "--backing-chain".into(),
        "-U".into(),
        "--output=json".into(),
        path.display().to_string(),
    ]);
    let out = runner.run(&cmd).map_err(|source| Error::ImageInfo {
        path: path.to_path_buf(),
        source,
    })?;
    let chain: Vec<Image> = serde_json::from_slice(&out.stdout).map_err(|e| Error::ImageInfo {
        path: path.to_path_buf(),
        source: hostio::CommandError::Failed {
            argv: cmd.display(),
            status: 0,
            stderr: format!("unreadable JSON: {e}"),
        },
    })?;
    Ok(chain.into_iter().map(|i| i.filename).collect())
}

#[cfg(test)]
mod backing_chain_tests {
    use super::*;

    /// A real chain made by qemu-img (package qemu-utils): overlay → base.
    #[test]
    fn backing_chain_lists_the_overlay_then_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.qcow2");
        let top = dir.path().join("top.qcow2");
        let run = |args: &[&str]| {
            assert!(
                std::process::Command::new("qemu-img")
                    .args(args)
                    .status()
                    .unwrap()
                    .success()
            )
        };
        run(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
        run(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base.to_str().unwrap(),
            top.to_str().unwrap(),
        ]);
        let chain = backing_chain(&hostio::SystemRunner, &top).unwrap();
        assert_eq!(chain, vec![top.clone(), base.clone()]);
        assert!(backing_chain(&hostio::SystemRunner, &dir.path().join("nope")).is_err());
    }
}
