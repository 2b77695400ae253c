//! Per-VM disks: a qcow2 overlay on a cached base image, made with `qemu-img` through the runner.
//! An overlay only records the backing file, so its creation time does not depend on the
//! base's size (qemu-img(1), "create -b").

use std::path::{Path, PathBuf};

use hostio::{Cmd, CommandRunner};
use serde::Deserialize;

use crate::error::{Error, Result};

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
/// (the base's virtual size when `None`).
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
    tracing::info!(argv = ?argv, "creating overlay");
    runner
        .run(&Cmd::new(argv))
        .map(|_| ())
        .map_err(|source| Error::CreateOverlay {
            path: overlay.to_path_buf(),
            source,
        })
}

/// The per-VM directory in the storage dir.
pub fn vm_dir(storage_dir: &Path, name: &str) -> PathBuf {
    storage_dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hostio::{Output, RecordingRunner, SystemRunner};

    #[test]
    fn overlay_argv() {
        let r = RecordingRunner::new();
        create_overlay(
            &r,
            Path::new("/c/base"),
            "qcow2",
            Path::new("/v/disk.qcow2"),
            Some(20 << 30),
        )
        .unwrap();
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
                "/v/disk.qcow2",
                "21474836480"
            ]
        );
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
    }
}
