//! Shared folders (virtiofs) as `create --share` and `vmctl share` both need them: the
//! `HOST_DIR:TAG[,ro]` value, the check that virtiofsd is installed before libvirt is asked,
//! and the errors of shares.
//!
//! virtiofsd is libvirt's to find: it reads qemu's vhost-user descriptors (`"type": "fs"`,
//! `"binary": PATH` in `/usr/share/qemu/vhost-user/*.json`, `/etc/qemu/vhost-user/*.json`)
//! unless the `<filesystem>` names a `<binary path>`. Without one, libvirt 9.0 defines the
//! domain and fails only at start; vmctl looks first and says which package to install.
//! - Debian 12: `/usr/lib/qemu/virtiofsd` (qemu 7.2's C daemon) and
//!   `/usr/share/qemu/vhost-user/50-qemu-virtiofsd.json`, both from `qemu-system-common`
//!   (checked with `dpkg -S` on the lab host, qemu-system-common 1:7.2+dfsg-7+deb12u18).
//! - Ubuntu 24.04, Debian 13: qemu no longer ships the C daemon (removed in qemu 8.0); the
//!   Rust daemon comes in package `virtiofsd` as `/usr/libexec/virtiofsd`.
//!
//! Read-only shares: libvirt 9.0 refuses `<readonly/>` on a virtiofs filesystem ("virtiofs does
//! not yet support read-only mode", measured in the lab), so `,ro` is a read-only mount in the
//! guest (fstab option `ro`). It keeps the guest's programs from writing by mistake; a guest
//! root that remounts it read-write can write, so it is not a security boundary.

use std::path::{Path, PathBuf};

use guest_media::mounts::{GuestMount, TAG_MAX, valid_tag};
use hypervisor::domain::Filesystem;
use serde::Serialize;

use crate::ctx::Ctx;
use crate::error::{CommandFailure, Error, ExitKind, Failure, Result};

/// Errors of shared folders (`create --share`, `vmctl share`).
#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("invalid share {value:?}: {reason}")]
    Invalid { value: String, reason: String },
    #[error("tag {tag:?} is given twice")]
    DuplicateTag { tag: String },
    #[error("VM {vm:?} already has a share tagged {tag:?}")]
    TagTaken { vm: String, tag: String },
    #[error("VM {vm:?} has no share tagged {tag:?}")]
    NoSuchShare { vm: String, tag: String },
    #[error("virtiofsd is not installed: no vhost-user \"fs\" descriptor in {} and none of {}", searched_dirs.join(", "), searched_paths.join(", "))]
    VirtiofsdMissing {
        searched_dirs: Vec<String>,
        searched_paths: Vec<String>,
    },
}

impl CommandFailure for ShareError {
    fn exit_kind(&self) -> ExitKind {
        ExitKind::Usage
    }

    fn help(&self) -> Vec<String> {
        match self {
            Self::Invalid { .. } => vec![format!(
                "give --share HOST_DIR:TAG or HOST_DIR:TAG,ro: HOST_DIR an existing directory, TAG 1-{TAG_MAX} letters, digits, '_' or '-' (the guest mounts it at /mnt/TAG)"
            )],
            Self::DuplicateTag { .. } => vec!["give each share its own tag".into()],
            Self::TagTaken { vm, .. } => vec![format!(
                "`vmctl share list {vm}` shows its shares; pick another tag or `vmctl share remove {vm} TAG` first"
            )],
            Self::NoSuchShare { vm, .. } => {
                vec![format!("`vmctl share list {vm}` shows its shares")]
            }
            Self::VirtiofsdMissing { .. } => vec![
                "install package virtiofsd (Ubuntu 24.04, Debian 13: /usr/libexec/virtiofsd): `sudo apt-get install virtiofsd`".into(),
                "on Debian 12 it is in package qemu-system-common (/usr/lib/qemu/virtiofsd)".into(),
            ],
        }
    }
}

impl From<ShareError> for Error {
    fn from(e: ShareError) -> Self {
        Error::Command(Failure::new(e))
    }
}

/// A validated share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShareSpec {
    /// Absolute, symlinks resolved.
    pub host_dir: PathBuf,
    pub tag: String,
    pub readonly: bool,
}

impl ShareSpec {
    /// Parses `HOST_DIR:TAG[,ro]`: HOST_DIR must be an existing directory (it is canonicalised:
    /// qemu's virtiofsd shares the directory itself, not a symlink's name), TAG a safe
    /// identifier. The last `:` splits, so HOST_DIR may hold one.
    pub fn parse(value: &str) -> std::result::Result<Self, ShareError> {
        let invalid = |reason: &str| ShareError::Invalid {
            value: value.into(),
            reason: reason.into(),
        };
        let (dir, rest) = value
            .rsplit_once(':')
            .ok_or_else(|| invalid("expected HOST_DIR:TAG"))?;
        let (tag, readonly) = match rest.split_once(',') {
            None => (rest, false),
            Some((tag, "ro")) => (tag, true),
            Some((_, opt)) => {
                return Err(invalid(&format!(
                    "unknown option {opt:?} (only \"ro\" is known)"
                )));
            }
        };
        if !valid_tag(tag) {
            return Err(invalid(&format!(
                "tag {tag:?} is not 1-{TAG_MAX} letters, digits, '_' or '-' starting with a letter or digit"
            )));
        }
        if dir.is_empty() {
            return Err(invalid("no HOST_DIR"));
        }
        let host_dir =
            std::fs::canonicalize(Path::new(dir)).map_err(|e| invalid(&format!("{dir}: {e}")))?;
        if !host_dir.is_dir() {
            return Err(invalid(&format!("{dir} is not a directory")));
        }
        Ok(Self {
            host_dir,
            tag: tag.into(),
            readonly,
        })
    }

    pub fn filesystem(&self) -> Filesystem {
        Filesystem {
            source_dir: self.host_dir.clone(),
            tag: self.tag.clone(),
        }
    }

    pub fn guest_mount(&self) -> GuestMount {
        GuestMount {
            tag: self.tag.clone(),
            readonly: self.readonly,
        }
    }

    /// The command that mounts it in a running guest (what cloud-init does at first boot).
    pub fn mount_command(&self) -> String {
        let ro = if self.readonly { "-o ro " } else { "" };
        format!(
            "sudo mkdir -p /mnt/{tag} && sudo mount -t virtiofs {ro}{tag} /mnt/{tag}",
            tag = self.tag
        )
    }
}

/// Parses every `--share`, refusing a tag given twice.
pub fn parse_all(values: &[String]) -> Result<Vec<ShareSpec>> {
    let mut out: Vec<ShareSpec> = Vec::new();
    for v in values {
        let s = ShareSpec::parse(v)?;
        if out.iter().any(|o| o.tag == s.tag) {
            return Err(ShareError::DuplicateTag { tag: s.tag }.into());
        }
        out.push(s);
    }
    Ok(out)
}

/// The tags of the read-only shares (vmctl's metadata records them: the domain XML cannot).
pub fn readonly_tags(shares: &[ShareSpec]) -> Vec<String> {
    shares
        .iter()
        .filter(|s| s.readonly)
        .map(|s| s.tag.clone())
        .collect()
}

/// virtiofsd as libvirt would find it on `host`: the binary of the first vhost-user `"fs"`
/// descriptor that exists, else a known install path.
pub fn find_virtiofsd(host: &hostio::HostRoot) -> Option<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Descriptor {
        #[serde(rename = "type")]
        kind: String,
        binary: PathBuf,
    }
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        host.stat(p)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    for dir in hostio::paths::QEMU_VHOST_USER_DIRS {
        let mut names = host.read_dir_names(dir).unwrap_or_default();
        names.sort();
        for name in names.iter().filter(|n| n.ends_with(".json")) {
            let d = host
                .read_to_string(Path::new(dir).join(name))
                .ok()
                .and_then(|t| serde_json::from_str::<Descriptor>(&t).ok());
            if let Some(d) = d
                && d.kind == "fs"
                && executable(&d.binary)
            {
                return Some(d.binary);
            }
        }
    }
    hostio::paths::VIRTIOFSD_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| executable(p))
}

/// Refuses shares when the connection is this host's qemu and virtiofsd is not installed.
/// Another URI (a remote host, the test driver) is not checked: its virtiofsd is not here.
pub fn require_virtiofsd(ctx: &Ctx) -> Result<()> {
    let uri = ctx.hv.uri();
    let local_qemu = uri.starts_with("qemu:///") || uri.starts_with("qemu+unix:///");
    if !local_qemu || find_virtiofsd(ctx.host).is_some() {
        return Ok(());
    }
    Err(ShareError::VirtiofsdMissing {
        searched_dirs: hostio::paths::QEMU_VHOST_USER_DIRS
            .iter()
            .map(|s| s.to_string())
            .collect(),
        searched_paths: hostio::paths::VIRTIOFSD_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
    .into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_values() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let s = ShareSpec::parse(&format!("{d}:models")).unwrap();
        assert_eq!(s.tag, "models");
        assert!(!s.readonly);
        assert_eq!(s.host_dir, std::fs::canonicalize(dir.path()).unwrap());
        let r = ShareSpec::parse(&format!("{d}/.:data_1,ro")).unwrap();
        assert!(r.readonly);
        assert_eq!(r.host_dir, s.host_dir);
        assert_eq!(
            r.mount_command(),
            "sudo mkdir -p /mnt/data_1 && sudo mount -t virtiofs -o ro data_1 /mnt/data_1"
        );
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        for bad in [
            "models".to_string(),
            format!("{d}:"),
            format!("{d}:a b"),
            format!("{d}:../x"),
            format!("{d}:m,rw"),
            format!("{d}/missing:m"),
            format!("{}:m", file.display()),
            ":m".into(),
        ] {
            let e = ShareSpec::parse(&bad).unwrap_err();
            assert!(matches!(e, ShareError::Invalid { .. }), "{bad}: {e}");
        }
        let err = parse_all(&[format!("{d}:m"), format!("{d}:m,ro")]).unwrap_err();
        assert!(matches!(
            err.command::<ShareError>(),
            Some(ShareError::DuplicateTag { .. })
        ));
        assert_eq!(err.exit_kind(), ExitKind::Usage);
        let two = parse_all(&[format!("{d}:a"), format!("{d}:b,ro")]).unwrap();
        assert_eq!(readonly_tags(&two), ["b"]);
    }

    #[test]
    fn virtiofsd_is_found_through_descriptors_then_known_paths() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let host = hostio::HostRoot::new(dir.path());
        assert_eq!(find_virtiofsd(&host), None);
        let exe = |p: &str| {
            host.create_dir_all(Path::new(p).parent().unwrap()).unwrap();
            std::fs::write(host.path(p), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(host.path(p), std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        // Debian 12's layout (qemu-system-common).
        exe("/usr/lib/qemu/virtiofsd");
        assert_eq!(
            find_virtiofsd(&host),
            Some(PathBuf::from("/usr/lib/qemu/virtiofsd"))
        );
        // A descriptor wins, when its binary exists.
        host.create_dir_all("/usr/share/qemu/vhost-user").unwrap();
        std::fs::write(
            host.path("/usr/share/qemu/vhost-user/50-virtiofsd.json"),
            r#"{"description": "virtiofsd", "type": "fs", "binary": "/opt/v/virtiofsd"}"#,
        )
        .unwrap();
        std::fs::write(
            host.path("/usr/share/qemu/vhost-user/40-gpu.json"),
            r#"{"description": "gpu", "type": "gpu", "binary": "/usr/lib/qemu/virtiofsd"}"#,
        )
        .unwrap();
        assert_eq!(
            find_virtiofsd(&host),
            Some(PathBuf::from("/usr/lib/qemu/virtiofsd")),
            "a descriptor whose binary is missing is skipped"
        );
        exe("/opt/v/virtiofsd");
        assert_eq!(
            find_virtiofsd(&host),
            Some(PathBuf::from("/opt/v/virtiofsd"))
        );
    }
}
